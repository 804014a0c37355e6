//! Label sets: the identity of a series.
//!
//! A [`Labels`] value is a sorted list of name/value pairs with unique names and no empty values
//! (an empty value means "label absent", as in Prometheus). The metric name is the value of
//! [`METRIC_NAME_LABEL`]. The hash is computed once at construction, so hashing and inequality
//! checks are O(1) and clones share one allocation.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use compact_str::CompactString;

use crate::ModelError;

/// The label that holds the metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// One name/value pair.
///
/// Names and values are [`CompactString`]s: up to 24 bytes are kept inline, without an
/// allocation of their own, which most label names and values are (`instance`, `job`,
/// `10.1.2.3:9100`, ...). Building the label set of every series of every write request was
/// the largest allocator cost of ingestion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// The label name.
    pub name: CompactString,
    /// The label value; never empty inside a [`Labels`].
    pub value: CompactString,
}

impl Label {
    /// A label from anything string-like.
    pub fn new(name: impl Into<CompactString>, value: impl Into<CompactString>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Which characters names may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameValidation {
    /// Any non-empty UTF-8 string, as Prometheus 3.x accepts by default (OpenTelemetry names
    /// such as `service.name` need it).
    #[default]
    Utf8,
    /// The classic Prometheus character set: label names `[a-zA-Z_][a-zA-Z0-9_]*`, metric names
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`, plus `.` in metric names as SOFALookout's dotted names need.
    Legacy,
}

/// Limits applied by [`Labels::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    /// The character set names must use.
    pub validation: NameValidation,
    /// Largest number of labels per series, `__name__` included.
    pub max_labels: usize,
    /// Longest label name in bytes.
    pub max_name_bytes: usize,
    /// Longest label value in bytes.
    pub max_value_bytes: usize,
    /// Largest sum of all names and values of one series, in bytes.
    pub max_total_bytes: usize,
}

impl Default for LabelLimits {
    /// Generous defaults in line with VictoriaMetrics-class systems: 64 labels, 256-byte names,
    /// 4 KiB values, 16 KiB in total.
    fn default() -> Self {
        LabelLimits {
            validation: NameValidation::default(),
            max_labels: 64,
            max_name_bytes: 256,
            max_value_bytes: 4096,
            max_total_bytes: 16 * 1024,
        }
    }
}

/// A validated-on-demand, sorted, de-duplicated label set with a precomputed hash.
#[derive(Clone)]
pub struct Labels {
    labels: Arc<[Label]>,
    hash: u64,
    identity_hash: u64,
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Labels {
        Labels::from_sorted_unchecked(Vec::new())
    }

    /// Builds a label set from pairs in any order. Pairs with an empty value are dropped (an
    /// empty value is the same as an absent label); two pairs with the same name are an error.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Labels, ModelError>
    where
        N: Into<CompactString>,
        V: Into<CompactString>,
    {
        let labels: Vec<Label> = pairs
            .into_iter()
            .map(|(name, value)| Label::new(name, value))
            .collect();
        Labels::from_vec(labels)
    }

    /// Builds a label set from labels in any order; see [`Labels::from_pairs`].
    pub fn from_vec(mut labels: Vec<Label>) -> Result<Labels, ModelError> {
        labels.retain(|label| !label.value.is_empty());
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = labels.windows(2).find(|pair| pair[0].name == pair[1].name) {
            return Err(ModelError::DuplicateLabelName {
                name: pair[0].name.to_string(),
            });
        }
        Ok(Labels::from_sorted_unchecked(labels))
    }

    /// Builds from labels that are already sorted by name, unique and non-empty. Callers that
    /// decode a format which guarantees this (our own WAL and index) skip the sort.
    pub fn from_sorted_unchecked(labels: Vec<Label>) -> Labels {
        Labels::from_sorted_iter_unchecked(labels.into_iter())
    }

    /// Like [`Labels::from_sorted_unchecked`], from an iterator of known length: the labels
    /// go straight into their shared allocation, with no vector to copy them from.
    pub fn from_sorted_iter_unchecked(labels: impl ExactSizeIterator<Item = Label>) -> Labels {
        let labels: Arc<[Label]> = labels.collect();
        debug_assert!(labels.windows(2).all(|pair| pair[0].name < pair[1].name));
        debug_assert!(labels.iter().all(|label| !label.value.is_empty()));
        let (hash, identity_hash) = hash_labels(&labels);
        Labels {
            labels,
            hash,
            identity_hash,
        }
    }

    /// A builder that starts from these labels.
    pub fn to_builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            labels: self.labels.to_vec(),
        }
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|label| label.name.as_str().cmp(name))
            .ok()
            .map(|index| self.labels[index].value.as_str())
    }

    /// The metric name, if the series has one.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME_LABEL)
    }

    /// The labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.labels.iter()
    }

    /// The labels as a slice, in name order.
    pub fn as_slice(&self) -> &[Label] {
        &self.labels
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A hash of names and values that is stable across processes, versions and machines
    /// (xxh3 over the pairs with a separator no UTF-8 string contains). Safe to persist and to
    /// shard by.
    pub fn stable_hash(&self) -> u64 {
        self.hash
    }

    /// A second 64-bit hash, keyed with a secret seed chosen at random once per process.
    /// Together with [`Labels::stable_hash`] it identifies a label set in memory without
    /// comparing strings: a false match needs both to collide (about 2^-128), and crafted input
    /// cannot aim at the secret seed. Differs between processes: never persist it.
    pub fn identity_hash(&self) -> u64 {
        self.identity_hash
    }

    /// What identifies this label set in memory without its strings: both hashes and the
    /// number of labels (see [`Labels::identity_hash`]).
    pub fn identity(&self) -> SeriesIdentity {
        SeriesIdentity {
            hash: self.hash,
            check: self.identity_hash,
            len: self.labels.len() as u32,
        }
    }

    /// Sum of the byte lengths of all names and values.
    pub fn byte_size(&self) -> usize {
        self.labels
            .iter()
            .map(|label| label.name.len() + label.value.len())
            .sum()
    }

    /// Checks names, sizes and counts against `limits`.
    pub fn validate(&self, limits: &LabelLimits) -> Result<(), ModelError> {
        if self.labels.len() > limits.max_labels {
            return Err(ModelError::TooManyLabels {
                count: self.labels.len(),
                limit: limits.max_labels,
            });
        }
        let total = self.byte_size();
        if total > limits.max_total_bytes {
            return Err(ModelError::LabelsTooLarge {
                size: total,
                limit: limits.max_total_bytes,
            });
        }
        for label in self.labels.iter() {
            if label.name.len() > limits.max_name_bytes {
                return Err(ModelError::LabelNameTooLong {
                    name: label.name.to_string(),
                    len: label.name.len(),
                    limit: limits.max_name_bytes,
                });
            }
            if label.value.len() > limits.max_value_bytes {
                return Err(ModelError::LabelValueTooLong {
                    name: label.name.to_string(),
                    len: label.value.len(),
                    limit: limits.max_value_bytes,
                });
            }
            validate_label_name(&label.name, limits.validation)?;
            if label.name == METRIC_NAME_LABEL {
                validate_metric_name(&label.value, limits.validation)?;
            }
        }
        Ok(())
    }
}

/// Checks one label name against the character set of `validation`.
pub(crate) fn validate_label_name(
    name: &str,
    validation: NameValidation,
) -> Result<(), ModelError> {
    let invalid = |reason| ModelError::InvalidLabelName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if validation == NameValidation::Legacy {
        let mut chars = name.chars();
        let first = chars.next().unwrap_or('_');
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(invalid("must start with a letter or '_'"));
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid("may only contain letters, digits and '_'"));
        }
    }
    Ok(())
}

fn validate_metric_name(name: &str, validation: NameValidation) -> Result<(), ModelError> {
    if validation == NameValidation::Utf8 {
        return Ok(());
    }
    let invalid = |reason| ModelError::InvalidMetricName {
        name: name.to_owned(),
        reason,
    };
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('_');
    if !(first.is_ascii_alphabetic() || first == '_' || first == ':') {
        return Err(invalid("must start with a letter, '_' or ':'"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.')) {
        return Err(invalid(
            "may only contain letters, digits, '_', ':' and '.'",
        ));
    }
    Ok(())
}

/// A label set's identity without its strings: [`Labels::stable_hash`],
/// [`Labels::identity_hash`] and the number of labels. A store that keeps the same three
/// figures per series can find a series from it as surely as from the labels (a false match
/// needs both hashes to collide); it lets a decoder that has seen a series' exact bytes before
/// skip building its labels. Differs between processes: never persist it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesIdentity {
    /// [`Labels::stable_hash`].
    pub hash: u64,
    /// [`Labels::identity_hash`].
    pub check: u64,
    /// Number of labels.
    pub len: u32,
}

/// A 128-bit digest of `bytes` keyed with the process's secret seed (the seed of
/// [`Labels::identity_hash`]): input crafted to collide cannot aim at it, and two different
/// inputs share a digest with a probability of about 2^-128. For caches keyed by raw bytes
/// that must never confuse two keys. Differs between processes: never persist it.
pub fn secret_digest(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(bytes, identity_seed())
}

/// The process's secret seed for [`Labels::identity_hash`].
fn identity_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x006c_6f6f_6b6f_7574_u64)
    })
}

/// The stable and the identity hash: xxh3 over `name 0xff value 0xff ...` (0xff never occurs
/// in UTF-8, so "a"+"bc" and "ab"+"c" differ), unseeded and with the secret seed. The pairs are
/// copied into one reusable buffer and hashed in one shot, much faster than feeding a
/// streaming hasher two dozen small pieces.
fn hash_labels(labels: &[Label]) -> (u64, u64) {
    const SEPARATOR: u8 = 0xff;
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        for label in labels {
            buffer.extend_from_slice(label.name.as_bytes());
            buffer.push(SEPARATOR);
            buffer.extend_from_slice(label.value.as_bytes());
            buffer.push(SEPARATOR);
        }
        let stable = xxhash_rust::xxh3::xxh3_64(&buffer);
        let identity = xxhash_rust::xxh3::xxh3_64_with_seed(&buffer, identity_seed());
        if buffer.capacity() > 64 * 1024 {
            *buffer = Vec::new();
        }
        (stable, identity)
    })
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.labels == other.labels
    }
}

impl Eq for Labels {}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Ordered pair by pair (name, then value), as Prometheus sorts series.
impl Ord for Labels {
    fn cmp(&self, other: &Self) -> Ordering {
        self.labels.cmp(&other.labels)
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Default for Labels {
    fn default() -> Self {
        Labels::empty()
    }
}

/// Prometheus notation: `metric{a="x", b="y"}`, values escaped like Go's `%q`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for label in self.iter().filter(|label| label.name != METRIC_NAME_LABEL) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Edits a label set and produces a new [`Labels`].
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    /// An empty builder.
    pub fn new() -> LabelsBuilder {
        LabelsBuilder::default()
    }

    /// Sets `name` to `value`, replacing an existing value; an empty value removes the label.
    pub fn set(
        &mut self,
        name: impl Into<CompactString>,
        value: impl Into<CompactString>,
    ) -> &mut Self {
        let name: CompactString = name.into();
        let value: CompactString = value.into();
        self.labels.retain(|label| label.name != name);
        if !value.is_empty() {
            self.labels.push(Label::new(name, value));
        }
        self
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.labels.retain(|label| label.name != name);
        self
    }

    /// The finished label set.
    pub fn build(&self) -> Labels {
        let mut labels = self.labels.clone();
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Labels::from_sorted_unchecked(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn pairs_are_sorted_and_empty_values_dropped() {
        let set = labels(&[("job", "api"), ("__name__", "up"), ("zone", "")]);
        let names: Vec<&str> = set.iter().map(|label| label.name.as_str()).collect();
        assert_eq!(names, ["__name__", "job"]);
        assert_eq!(set.metric_name(), Some("up"));
        assert_eq!(set.get("zone"), None);
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let error = Labels::from_pairs([("a", "1"), ("a", "2")]).unwrap_err();
        assert_eq!(error, ModelError::DuplicateLabelName { name: "a".into() });
    }

    #[test]
    fn equal_sets_hash_equal_regardless_of_input_order() {
        let first = labels(&[("a", "1"), ("b", "2")]);
        let second = labels(&[("b", "2"), ("a", "1")]);
        assert_eq!(first, second);
        assert_eq!(first.stable_hash(), second.stable_hash());
        assert_eq!(first.identity_hash(), second.identity_hash());
        assert_ne!(first.identity_hash(), first.stable_hash());
        assert_ne!(first.stable_hash(), labels(&[("a", "12")]).stable_hash());
        // The separator keeps concatenations apart.
        assert_ne!(
            labels(&[("a", "bc")]).stable_hash(),
            labels(&[("ab", "c")]).stable_hash()
        );
    }

    #[test]
    fn display_uses_prometheus_notation() {
        let set = labels(&[("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(set.to_string(), r#"up{job="a\"b"}"#);
    }

    #[test]
    fn legacy_validation_checks_charsets() {
        let limits = LabelLimits {
            validation: NameValidation::Legacy,
            ..LabelLimits::default()
        };
        assert!(labels(&[("__name__", "jvm.memory.used"), ("a_1", "x")])
            .validate(&limits)
            .is_ok());
        assert!(matches!(
            labels(&[("1a", "x")]).validate(&limits),
            Err(ModelError::InvalidLabelName { .. })
        ));
        assert!(matches!(
            labels(&[("a-b", "x")]).validate(&limits),
            Err(ModelError::InvalidLabelName { .. })
        ));
        assert!(matches!(
            labels(&[("__name__", "9lives")]).validate(&limits),
            Err(ModelError::InvalidMetricName { .. })
        ));
        // UTF-8 mode accepts OpenTelemetry-style names.
        assert!(labels(&[("service.name", "x")])
            .validate(&LabelLimits::default())
            .is_ok());
    }

    #[test]
    fn empty_label_names_are_rejected_in_every_mode() {
        let set = Labels::from_sorted_unchecked(vec![Label::new("", "x")]);
        assert!(set.validate(&LabelLimits::default()).is_err());
    }

    #[test]
    fn size_limits_are_enforced() {
        let limits = LabelLimits {
            max_labels: 2,
            max_name_bytes: 4,
            max_value_bytes: 3,
            max_total_bytes: 8,
            ..LabelLimits::default()
        };
        assert!(matches!(
            labels(&[("a", "1"), ("b", "2"), ("c", "3")]).validate(&limits),
            Err(ModelError::TooManyLabels { count: 3, limit: 2 })
        ));
        assert!(matches!(
            labels(&[("abcde", "1")]).validate(&limits),
            Err(ModelError::LabelNameTooLong { .. })
        ));
        assert!(matches!(
            labels(&[("a", "1234")]).validate(&limits),
            Err(ModelError::LabelValueTooLong { .. })
        ));
        assert!(matches!(
            labels(&[("abcd", "123"), ("b", "1")]).validate(&limits),
            Err(ModelError::LabelsTooLarge { .. })
        ));
    }

    #[test]
    fn builder_sets_and_removes() {
        let base = labels(&[("a", "1"), ("b", "2")]);
        let edited = base
            .to_builder()
            .set("c", "3")
            .set("a", "")
            .remove("b")
            .build();
        assert_eq!(edited, labels(&[("c", "3")]));
    }
}
