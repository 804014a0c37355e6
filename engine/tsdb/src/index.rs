//! The in-memory inverted index: label pair -> roaring bitmap of series references.
//!
//! Values of one label name are kept sorted, so regular expressions with a literal prefix scan
//! only the matching range, and alternations of literals are answered by direct lookups (see
//! [`RegexFastPath`]). Matchers combine as in Prometheus: matchers that cannot match the empty
//! value intersect, matchers that can (such as `a!="x"` or `a=~".*"`) subtract the series whose
//! value they reject, starting from all series when no matcher intersects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lookout_model::{MatchKind, Matcher, RegexFastPath};
use roaring::RoaringBitmap;

pub(crate) type ValuePostings = BTreeMap<Arc<str>, RoaringBitmap>;

/// Postings for every label pair of the head's series.
#[derive(Debug, Default)]
pub struct MemIndex {
    by_name: HashMap<Arc<str>, ValuePostings, foldhash::fast::RandomState>,
    all: RoaringBitmap,
}

impl MemIndex {
    /// An empty index.
    pub fn new() -> MemIndex {
        MemIndex::default()
    }

    /// Adds series `id` with its labels.
    pub fn add<'a>(
        &mut self,
        id: u32,
        labels: impl IntoIterator<Item = (&'a Arc<str>, &'a Arc<str>)>,
    ) {
        for (name, value) in labels {
            self.by_name
                .entry(name.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .insert(id);
        }
        self.all.insert(id);
    }

    /// Removes series `id`, which was added with these labels.
    pub fn remove<'a>(
        &mut self,
        id: u32,
        labels: impl IntoIterator<Item = (&'a Arc<str>, &'a Arc<str>)>,
    ) {
        for (name, value) in labels {
            let Some(values) = self.by_name.get_mut(&**name) else {
                continue;
            };
            if let Some(postings) = values.get_mut(&**value) {
                postings.remove(id);
                if postings.is_empty() {
                    values.remove(&**value);
                }
            }
            if values.is_empty() {
                self.by_name.remove(&**name);
            }
        }
        self.all.remove(id);
    }

    /// Every series.
    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// Number of series indexed.
    pub fn series_count(&self) -> u64 {
        self.all.len()
    }

    /// Series matching every matcher.
    pub fn postings_for_matchers(&self, matchers: &[Matcher]) -> RoaringBitmap {
        postings_for_matchers(self, matchers)
    }

    /// Names that have at least one series.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().map(|name| name.to_string()).collect();
        names.sort_unstable();
        names
    }

    /// Values of `name` that have at least one series, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.by_name
            .get(name)
            .map(|values| values.keys().map(|value| value.to_string()).collect())
            .unwrap_or_default()
    }

    /// The values of `name` with their postings, sorted by value.
    pub fn values_with_postings<'a>(
        &'a self,
        name: &str,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a RoaringBitmap)> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flat_map(|values| values.iter())
    }

    /// The series with label `name` set to `value`.
    pub fn value_postings(&self, name: &str, value: &str) -> Option<&RoaringBitmap> {
        self.by_name.get(name)?.get(value)
    }

    /// Names with at least one series, sorted, with their values' postings.
    pub fn names_with_values(&self) -> Vec<(&Arc<str>, &ValuePostings)> {
        let mut names: Vec<_> = self.by_name.iter().collect();
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        names
    }

    /// Rough heap size in bytes (postings serialised size plus map overhead).
    pub fn heap_bytes(&self) -> usize {
        let mut bytes = self.all.serialized_size();
        for values in self.by_name.values() {
            bytes += 64;
            for postings in values.values() {
                bytes += 48 + postings.serialized_size();
            }
        }
        bytes
    }
}

impl PostingsIndex for MemIndex {
    fn all_series(&self) -> RoaringBitmap {
        self.all.clone()
    }

    fn sorted_values(&self, name: &str) -> Vec<&str> {
        self.by_name
            .get(name)
            .map(|values| values.keys().map(|value| &**value).collect())
            .unwrap_or_default()
    }

    fn with_postings(&self, name: &str, value: &str, visit: &mut dyn FnMut(&RoaringBitmap)) {
        if let Some(postings) = self.by_name.get(name).and_then(|values| values.get(value)) {
            visit(postings);
        }
    }
}

/// What matcher evaluation needs from an index: the in-memory one and a block's on-disk one
/// answer the same way.
pub trait PostingsIndex {
    /// Every series.
    fn all_series(&self) -> RoaringBitmap;
    /// The values of label `name`, sorted.
    fn sorted_values(&self, name: &str) -> Vec<&str>;
    /// Calls `visit` with the postings of `name=value`, if any series has it.
    fn with_postings(&self, name: &str, value: &str, visit: &mut dyn FnMut(&RoaringBitmap));
}

/// The items of `incoming` (sorted by key, distinct) whose key `known` (sorted, distinct)
/// lacks, in order; keys compare as bytes, which is string order. Label queries merge their sources with it: once one source has listed
/// its values, the others are asked only about the values still missing.
pub(crate) fn missing_from<'v, K: AsRef<[u8]>, T>(
    known: &[K],
    incoming: impl IntoIterator<Item = (&'v [u8], T)>,
) -> Vec<(&'v [u8], T)> {
    let mut position = 0;
    let mut missing = Vec::new();
    for (key, item) in incoming {
        while known
            .get(position)
            .is_some_and(|known| known.as_ref() < key)
        {
            position += 1;
        }
        if known
            .get(position)
            .is_none_or(|known| known.as_ref() != key)
        {
            missing.push((key, item));
        }
    }
    missing
}

/// Merges `added` (sorted, distinct, none of them in `known`) into `known` (sorted, distinct).
pub(crate) fn insert_sorted<T: Ord>(known: &mut Vec<T>, added: Vec<T>) {
    if added.is_empty() {
        return;
    }
    if known.last().is_none_or(|last| *last < added[0]) {
        known.extend(added);
        return;
    }
    let old = std::mem::take(known);
    known.reserve(old.len() + added.len());
    let mut old = old.into_iter().peekable();
    let mut added = added.into_iter().peekable();
    while let (Some(a), Some(b)) = (old.peek(), added.peek()) {
        debug_assert!(a != b, "insert_sorted: an added item is already known");
        let next = if a < b { old.next() } else { added.next() };
        known.extend(next);
    }
    known.extend(old);
    known.extend(added);
}

/// Series of `index` matching every matcher.
pub fn postings_for_matchers(
    index: &(impl PostingsIndex + ?Sized),
    matchers: &[Matcher],
) -> RoaringBitmap {
    let (intersecting, subtracting): (Vec<&Matcher>, Vec<&Matcher>) = matchers
        .iter()
        .partition(|matcher| !matcher.matches_empty());
    let mut result: Option<RoaringBitmap> = None;
    for matcher in intersecting {
        let selected = values_where(index, matcher, true);
        result = Some(match result {
            None => selected,
            Some(current) => current & selected,
        });
        if result.as_ref().is_some_and(RoaringBitmap::is_empty) {
            return RoaringBitmap::new();
        }
    }
    let mut result = result.unwrap_or_else(|| index.all_series());
    for matcher in subtracting {
        result -= values_where(index, matcher, false);
    }
    result
}

/// Union of the postings of the values `v` of `matcher`'s label with
/// `matcher.matches(v) == wanted`.
fn values_where(
    index: &(impl PostingsIndex + ?Sized),
    matcher: &Matcher,
    wanted: bool,
) -> RoaringBitmap {
    let name = matcher.name();
    let mut union = RoaringBitmap::new();
    let mut add = |postings: &RoaringBitmap| union |= postings;
    // Whether we look for values the positive form accepts (fast paths apply) or rejects.
    let positive_target = wanted != matcher.kind().is_negative();
    if positive_target && matches!(matcher.kind(), MatchKind::Equal | MatchKind::NotEqual) {
        index.with_postings(name, matcher.value(), &mut add);
        return union;
    }
    let fast_path = match positive_target {
        true => matcher.fast_path().unwrap_or(RegexFastPath::None),
        false => RegexFastPath::None,
    };
    if let RegexFastPath::Literals(literals) = &fast_path {
        for literal in literals {
            index.with_postings(name, literal, &mut add);
        }
        return union;
    }
    let values = index.sorted_values(name);
    match &fast_path {
        RegexFastPath::Prefix(prefix) | RegexFastPath::PrefixThenRegex(prefix) => {
            let verify = matches!(fast_path, RegexFastPath::PrefixThenRegex(_));
            let start = values.partition_point(|value| *value < prefix.as_str());
            for value in values[start..]
                .iter()
                .take_while(|value| value.starts_with(prefix.as_str()))
            {
                if !verify || matcher.matches(value) == wanted {
                    index.with_postings(name, value, &mut add);
                }
            }
        }
        // Every stored value is non-empty, so both accept all of them.
        RegexFastPath::Any | RegexFastPath::NonEmpty => {
            for value in &values {
                index.with_postings(name, value, &mut add);
            }
        }
        RegexFastPath::Literals(_) | RegexFastPath::None => {
            for value in &values {
                if matcher.matches(value) == wanted {
                    index.with_postings(name, value, &mut add);
                }
            }
        }
    }
    union
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::{MatchKind, Matcher};
    use proptest::prelude::*;

    fn index_of(series: &[&[(&str, &str)]]) -> MemIndex {
        let mut index = MemIndex::new();
        for (id, labels) in series.iter().enumerate() {
            let pairs: Vec<(Arc<str>, Arc<str>)> = labels
                .iter()
                .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
                .collect();
            index.add(id as u32, pairs.iter().map(|(n, v)| (n, v)));
        }
        index
    }

    fn ids(bitmap: RoaringBitmap) -> Vec<u32> {
        bitmap.into_iter().collect()
    }

    fn m(kind: MatchKind, name: &str, value: &str) -> Matcher {
        Matcher::new(kind, name, value).unwrap()
    }

    #[test]
    fn matchers_intersect_and_subtract() {
        let index = index_of(&[
            &[("job", "api"), ("env", "prod")],
            &[("job", "api")],
            &[("job", "db"), ("env", "dev")],
            &[("job", "apiserver")],
        ]);
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::Equal, "job", "api")])),
            [0, 1]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::Regex, "job", "api.*")])),
            [0, 1, 3]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::Regex, "job", "a.i")])),
            [0, 1]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::Equal, "env", "")])),
            [1, 3]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::NotEqual, "env", "prod")])),
            [1, 2, 3]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[
                m(MatchKind::Regex, "job", "api|db"),
                m(MatchKind::NotRegex, "env", "d.*"),
            ])),
            [0, 1]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::NotInList, "job", "api|db")])),
            [3]
        );
        assert_eq!(
            ids(index.postings_for_matchers(&[m(MatchKind::Equal, "nope", "x")])),
            Vec::<u32>::new()
        );
        assert_eq!(ids(index.postings_for_matchers(&[])), [0, 1, 2, 3]);
    }

    #[test]
    fn removal_drops_empty_values_and_names() {
        let mut index = index_of(&[&[("job", "api"), ("only", "here")], &[("job", "api")]]);
        let (name, value) = (Arc::from("only"), Arc::from("here"));
        let job = (Arc::from("job"), Arc::from("api"));
        index.remove(0, [(&name, &value), (&job.0, &job.1)]);
        assert_eq!(index.label_names(), ["job"]);
        assert_eq!(index.label_values("job"), ["api"]);
        assert_eq!(ids(index.all().clone()), [1]);
    }

    proptest! {
        /// The index agrees with checking every matcher against every series.
        #[test]
        fn index_agrees_with_brute_force(
            series in prop::collection::vec(
                prop::collection::btree_map("[ab]", "[xyz]{1,2}", 0..3), 1..20),
            matchers in prop::collection::vec(
                (0..6usize, "[ab]", prop::sample::select(vec!["", "x", "xy", "x.*", "y|z", ".+", "x|", "[xz]y?"])),
                1..3),
        ) {
            let kinds = [MatchKind::Equal, MatchKind::NotEqual, MatchKind::Regex, MatchKind::NotRegex, MatchKind::InList, MatchKind::NotInList];
            let matchers: Vec<Matcher> = matchers.into_iter()
                .map(|(kind, name, value)| m(kinds[kind], &name, value)).collect();
            let mut index = MemIndex::new();
            for (id, labels) in series.iter().enumerate() {
                let pairs: Vec<(Arc<str>, Arc<str>)> = labels.iter()
                    .map(|(n, v)| (Arc::from(n.as_str()), Arc::from(v.as_str()))).collect();
                index.add(id as u32, pairs.iter().map(|(n, v)| (n, v)));
            }
            let expected: Vec<u32> = series.iter().enumerate()
                .filter(|(_, labels)| matchers.iter().all(|matcher| {
                    matcher.matches(labels.get(matcher.name()).map(String::as_str).unwrap_or(""))
                }))
                .map(|(id, _)| id as u32)
                .collect();
            prop_assert_eq!(ids(index.postings_for_matchers(&matchers)), expected);
        }
    }
}
