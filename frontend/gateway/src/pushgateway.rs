//! The standard Pushgateway API (`PUT|POST|DELETE /metrics/job/<job>{/<label>/<value>}`) over a
//! store: the grouping key of the path, the pushed text body, and the groups' state.
//!
//! A store keeps samples, not a "current value" the way a Pushgateway exposes one, so a push
//! is written as samples at the push time, and replacing or deleting a group writes stale
//! markers ([`STALE_NAN`]) for the series that leave it, which PromQL stops returning
//! at once. [`PushGroups`] remembers which series each group holds: it lives in memory and is
//! lost on restart (the samples themselves are in the store), so a replace after a restart
//! only writes stale markers for series pushed since.
//!
//! Semantics follow Pushgateway 1.x: grouping-key labels are set on every pushed series
//! (overriding body labels of the same name); `PUT` replaces the whole group, `POST` only the
//! series whose metric name is pushed again, `DELETE` removes the group; every push updates
//! the group's `push_time_seconds`, a refused one its `push_failure_time_seconds`. A body that
//! does not parse, or a sample with a timestamp, refuses the whole push. Names are compared
//! per sample name (`x_bucket`, `x_sum`, `x_count` of a histogram are pushed together by
//! every client, so this is the family rule in practice).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lookout_model::{Labels, Sample, TimestampMs, METRIC_NAME_LABEL, STALE_NAN};
use lookout_storage::WriteBatch;

use crate::exposition::parse_line;
use crate::lookout::request::{decode_base64, path_tags, RequestError};
use crate::lookout::{body_text, read_body, Collector, Limits, LookoutError, Tags};

/// The gauge set to the last successful push time, in seconds.
pub const PUSH_TIME_METRIC: &str = "push_time_seconds";
/// The gauge set to the last refused push time, in seconds (0 when none).
pub const PUSH_FAILURE_TIME_METRIC: &str = "push_failure_time_seconds";

/// Why a push was refused; `Display` is the answer's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The path is not `job/<job>{/<label>/<value>}`.
    #[error("{0}")]
    Path(String),
    /// A line of the body does not parse.
    #[error("text format parsing error in line {line}: {reason}")]
    Line { line: usize, reason: String },
    /// The body breaks a rule of the Pushgateway or a limit.
    #[error("pushed metrics are invalid: {0}")]
    Invalid(String),
    /// Size limits.
    #[error(transparent)]
    Body(#[from] LookoutError),
}

/// The grouping key of the path after `/metrics/`: `job/<job>` (or `job@base64/<b64>`)
/// followed by `<label>/<value>` pairs, a label name ending in `@base64` meaning its value is
/// URL-safe base64 (`=` alone being the empty value). Labels with an empty value are left out,
/// as Prometheus does.
pub fn grouping_key(rest: &str) -> Result<Tags, PushError> {
    let rest = rest.trim_start_matches('/');
    if !(rest.starts_with("job/") || rest.starts_with("job@base64/")) {
        return Err(PushError::Path(
            "the path must start with /metrics/job/<job>".into(),
        ));
    }
    let pairs = path_tags(rest).map_err(|error| match error {
        RequestError::OddPathSegments { .. } => {
            PushError::Path(format!("odd number of components in label string {rest:?}"))
        }
        other => PushError::Path(other.to_string()),
    })?;
    let mut key = Tags::new();
    for (name, value) in pairs {
        let (name, value) = match name.strip_suffix("@base64") {
            Some(name) => {
                let decoded = decode_base64(&value)
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        PushError::Path(format!("invalid base64 encoding in label value {value:?}"))
                    })?;
                (name.to_owned(), decoded)
            }
            None => (name, value),
        };
        if !is_label_name(&name) {
            return Err(PushError::Path(format!("improper label name {name:?}")));
        }
        if value.is_empty() {
            continue;
        }
        key.insert(name, value);
    }
    if !key.contains_key("job") {
        return Err(PushError::Path("job name is required".into()));
    }
    Ok(key)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not reserved (`__` prefix).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Decodes a pushed text body: every sample at `push_time`, the grouping labels set on each.
pub fn decode(
    body: &[u8],
    grouping: &Tags,
    push_time: TimestampMs,
    limits: &Limits,
) -> Result<WriteBatch, PushError> {
    let text = body_text(read_body(body, false, &limits.decode)?);
    let mut collector = Collector::new(limits);
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let sample = match parse_line(line) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(error) => {
                return Err(PushError::Line {
                    line: index + 1,
                    reason: error.to_string(),
                })
            }
        };
        if sample.timestamp.is_some() {
            return Err(PushError::Invalid(
                "pushed metrics must not have timestamps".into(),
            ));
        }
        let mut tags: Tags = sample
            .labels
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        tags.extend(grouping.iter().map(|(k, v)| (k.clone(), v.clone())));
        collector.sample(&sample.name, &tags, push_time.0, sample.value)?;
    }
    let decoded = collector.decoded;
    if let Some(message) = decoded.messages.first() {
        return Err(PushError::Invalid(message.clone()));
    }
    Ok(decoded.batch)
}

/// What a push does to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMethod {
    /// Replace the whole group.
    Put,
    /// Replace the series of the pushed metric names.
    Post,
    /// Remove the group.
    Delete,
}

/// What one group holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupState {
    /// Series by metric name.
    pub series: BTreeMap<String, BTreeSet<Labels>>,
    /// Last successful push, seconds since the epoch (0: none).
    pub push_time_seconds: f64,
    /// Last refused push, seconds since the epoch (0: none).
    pub push_failure_time_seconds: f64,
}

/// A push worked out against the groups: the batch to write, then [`PushGroups::commit`]
/// once it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PushPlan {
    /// Pushed samples, stale markers and the group's time gauges.
    pub batch: WriteBatch,
    key: Tags,
    group: Option<GroupState>,
}

impl PushPlan {
    /// Stale markers in the batch.
    pub fn stale_markers(&self) -> usize {
        self.batch
            .series
            .iter()
            .filter(|series| {
                series
                    .samples
                    .iter()
                    .any(|s| lookout_model::is_stale_nan(s.value))
            })
            .count()
    }
}

/// The groups pushed since start: which series each holds and its push times.
#[derive(Debug, Default)]
pub struct PushGroups {
    groups: HashMap<Tags, GroupState>,
    /// The last push time handed out.
    last_push_ms: i64,
}

impl PushGroups {
    /// No groups.
    pub fn new() -> PushGroups {
        PushGroups::default()
    }

    /// The time to stamp a push arriving at `now`: strictly after the previous push, so that
    /// two pushes in one millisecond (a PUT then a DELETE) do not write two values at one
    /// timestamp, which a store refuses as a conflicting duplicate.
    pub fn push_time(&mut self, now: TimestampMs) -> TimestampMs {
        self.last_push_ms = now.0.max(self.last_push_ms + 1);
        TimestampMs(self.last_push_ms)
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// A group's state.
    pub fn get(&self, grouping: &Tags) -> Option<&GroupState> {
        self.groups.get(grouping)
    }

    /// Works out a push of `pushed` (from [`decode`]; empty for `DELETE`) to `grouping` at
    /// `now`.
    pub fn plan(
        &self,
        method: PushMethod,
        grouping: &Tags,
        pushed: WriteBatch,
        now: TimestampMs,
    ) -> PushPlan {
        let existing = self.groups.get(grouping);
        let old = existing.cloned().unwrap_or_default();
        let mut group = match method {
            PushMethod::Put | PushMethod::Delete => GroupState::default(),
            PushMethod::Post => {
                let mut kept = old.clone();
                for series in &pushed.series {
                    if let Some(name) = series.labels.metric_name() {
                        kept.series.remove(name);
                    }
                }
                kept
            }
        };
        for series in &pushed.series {
            let name = series.labels.metric_name().unwrap_or_default().to_owned();
            group
                .series
                .entry(name)
                .or_default()
                .insert(series.labels.clone());
        }
        let mut batch = pushed;
        let stale = |labels: &Labels| (labels.clone(), vec![Sample::new(now.0, STALE_NAN)]);
        for labels in old.series.values().flatten() {
            let still_there = group
                .series
                .get(labels.metric_name().unwrap_or_default())
                .is_some_and(|series| series.contains(labels));
            if !still_there {
                let (labels, samples) = stale(labels);
                batch.push(labels, samples);
            }
        }
        if method == PushMethod::Delete {
            if existing.is_some() {
                for name in [PUSH_TIME_METRIC, PUSH_FAILURE_TIME_METRIC] {
                    let (labels, samples) = stale(&gauge_labels(name, grouping));
                    batch.push(labels, samples);
                }
            }
            return PushPlan {
                batch,
                key: grouping.clone(),
                group: None,
            };
        }
        group.push_time_seconds = now.0 as f64 / 1000.0;
        group.push_failure_time_seconds = old.push_failure_time_seconds;
        push_gauges(&mut batch, grouping, &group, now);
        PushPlan {
            batch,
            key: grouping.clone(),
            group: Some(group),
        }
    }

    /// Works out a refused push to `grouping` at `now`: its `push_failure_time_seconds`
    /// (the group is created if it did not exist, as the Pushgateway does).
    pub fn plan_failure(&self, grouping: &Tags, now: TimestampMs) -> PushPlan {
        let mut group = self.groups.get(grouping).cloned().unwrap_or_default();
        group.push_failure_time_seconds = now.0 as f64 / 1000.0;
        let mut batch = WriteBatch::new();
        push_gauges(&mut batch, grouping, &group, now);
        PushPlan {
            batch,
            key: grouping.clone(),
            group: Some(group),
        }
    }

    /// Makes a planned push the groups' state (after its batch was stored).
    pub fn commit(&mut self, plan: PushPlan) {
        match plan.group {
            Some(group) => {
                self.groups.insert(plan.key, group);
            }
            None => {
                self.groups.remove(&plan.key);
            }
        }
    }
}

fn gauge_labels(name: &str, grouping: &Tags) -> Labels {
    let pairs = std::iter::once((METRIC_NAME_LABEL, name))
        .chain(grouping.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // The grouping key's names were checked and cannot repeat `__name__`.
    Labels::from_pairs(pairs).unwrap_or_default()
}

fn push_gauges(batch: &mut WriteBatch, grouping: &Tags, group: &GroupState, now: TimestampMs) {
    for (name, value) in [
        (PUSH_TIME_METRIC, group.push_time_seconds),
        (PUSH_FAILURE_TIME_METRIC, group.push_failure_time_seconds),
    ] {
        batch.push(
            gauge_labels(name, grouping),
            vec![Sample::new(now.0, value)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::is_stale_nan;

    fn key(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grouping_keys_with_base64() {
        assert_eq!(
            grouping_key("job/j/instance/i1").unwrap(),
            key(&[("job", "j"), ("instance", "i1")])
        );
        assert_eq!(
            grouping_key("job@base64/L3Zhci90bXA/path@base64/=").unwrap(),
            key(&[("job", "/var/tmp")])
        );
        assert_eq!(
            grouping_key("job/a%20b/dir@base64/L3Zhci90bXA=").unwrap(),
            key(&[("job", "a b"), ("dir", "/var/tmp")])
        );
        let refused = |path: &str| grouping_key(path).unwrap_err().to_string();
        assert_eq!(refused("job/j/9bad/x"), "improper label name \"9bad\"");
        assert_eq!(
            refused("job/j/k"),
            "odd number of components in label string \"job/j/k\""
        );
        assert_eq!(
            refused("instance/i"),
            "the path must start with /metrics/job/<job>"
        );
        assert_eq!(refused("job@base64/="), "job name is required");
        assert_eq!(refused("job/j/__x/y"), "improper label name \"__x\"");
        assert!(refused("job@base64/!!").starts_with("invalid base64"));
    }

    #[test]
    fn grouping_labels_win_and_the_body_is_all_or_nothing() {
        let grouping = key(&[("job", "j"), ("instance", "i1")]);
        let body = "# TYPE a gauge\na{instance=\"other\",x=\"1\",empty=\"\"} 1\nb 2\n";
        let batch = decode(
            body.as_bytes(),
            &grouping,
            TimestampMs(5000),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            batch.series[0].labels.to_string(),
            r#"a{instance="i1", job="j", x="1"}"#
        );
        assert_eq!(batch.series[1].samples[0].timestamp, TimestampMs(5000));
        let refused = |body: &str| {
            decode(
                body.as_bytes(),
                &grouping,
                TimestampMs(0),
                &Limits::default(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(refused("a 1\nb{ 2\n").starts_with("text format parsing error in line 2"));
        assert_eq!(
            refused("a 1 1000\n"),
            "pushed metrics are invalid: pushed metrics must not have timestamps"
        );
    }

    fn push(groups: &mut PushGroups, method: PushMethod, body: &str, now: i64) -> PushPlan {
        let grouping = key(&[("job", "j")]);
        let pushed = decode(
            body.as_bytes(),
            &grouping,
            TimestampMs(now),
            &Limits::default(),
        )
        .unwrap();
        let plan = groups.plan(method, &grouping, pushed, TimestampMs(now));
        groups.commit(plan.clone());
        plan
    }

    fn stale_names(plan: &PushPlan) -> Vec<String> {
        plan.batch
            .series
            .iter()
            .filter(|series| is_stale_nan(series.samples[0].value))
            .map(|series| series.labels.to_string())
            .collect()
    }

    #[test]
    fn put_replaces_post_merges_delete_removes() {
        let mut groups = PushGroups::new();
        let first = push(
            &mut groups,
            PushMethod::Put,
            "a{x=\"1\"} 1\na{x=\"2\"} 1\nb 2\n",
            1000,
        );
        assert!(stale_names(&first).is_empty());
        let gauges: Vec<String> = first.batch.series[3..]
            .iter()
            .map(|series| format!("{} {}", series.labels, series.samples[0].value))
            .collect();
        assert_eq!(
            gauges,
            [
                r#"push_time_seconds{job="j"} 1"#,
                r#"push_failure_time_seconds{job="j"} 0"#
            ]
        );

        // POST: a{x="2"} leaves (same name pushed), b stays.
        let post = push(&mut groups, PushMethod::Post, "a{x=\"1\"} 3\nc 4\n", 2000);
        assert_eq!(stale_names(&post), [r#"a{job="j", x="2"}"#]);
        let group = groups.get(&key(&[("job", "j")])).unwrap();
        assert_eq!(group.series.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(group.push_time_seconds, 2.0);

        // PUT: everything not pushed again leaves.
        let put = push(&mut groups, PushMethod::Put, "c 5\n", 3000);
        assert_eq!(stale_names(&put), [r#"a{job="j", x="1"}"#, r#"b{job="j"}"#]);

        let failure = groups.plan_failure(&key(&[("job", "j")]), TimestampMs(3500));
        groups.commit(failure);
        assert_eq!(
            groups
                .get(&key(&[("job", "j")]))
                .unwrap()
                .push_failure_time_seconds,
            3.5
        );

        let delete = push(&mut groups, PushMethod::Delete, "", 4000);
        assert_eq!(
            stale_names(&delete),
            [
                r#"c{job="j"}"#,
                r#"push_time_seconds{job="j"}"#,
                r#"push_failure_time_seconds{job="j"}"#
            ]
        );
        assert!(groups.is_empty());
        assert_eq!(groups.push_time(TimestampMs(10)), TimestampMs(10));
        assert_eq!(groups.push_time(TimestampMs(10)), TimestampMs(11));
        assert_eq!(groups.push_time(TimestampMs(5)), TimestampMs(12));
        assert_eq!(groups.push_time(TimestampMs(20)), TimestampMs(20));
        // Deleting a group that does not exist writes nothing.
        let again = push(&mut groups, PushMethod::Delete, "", 5000);
        assert!(again.batch.is_empty());
    }

    /// A generated sample of a pushed body: name, labels (values any text), value.
    type PushedSample = (String, BTreeMap<String, String>, (String, f64));

    fn pushed_sample() -> impl proptest::strategy::Strategy<Value = PushedSample> {
        use proptest::prelude::*;
        let value = prop_oneof![
            any::<f64>()
                .prop_filter("finite", |value| value.is_finite())
                .prop_map(|value| (format!("{value:?}"), value)),
            any::<i64>().prop_map(|value| (value.to_string(), value as f64)),
            Just(("+Inf".to_owned(), f64::INFINITY)),
            Just(("NaN".to_owned(), f64::NAN)),
        ];
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,8}",
            proptest::collection::btree_map(
                "[a-c]|instance",
                "\\PC{0,6}|[\"\\\\\n{},=]{1,3}",
                0..4,
            ),
            value,
        )
    }

    /// The text format of generated samples, `# TYPE` before each name's first sample.
    fn body_of(samples: &[PushedSample]) -> String {
        let mut typed = BTreeSet::new();
        let mut body = String::new();
        for (name, labels, value) in samples {
            if typed.insert(name.clone()) {
                body.push_str(&format!("# HELP {name} generated\n# TYPE {name} untyped\n"));
            }
            let labels: Vec<String> = labels
                .iter()
                .map(|(key, value)| {
                    let escaped = value
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{key}=\"{escaped}\"")
                })
                .collect();
            body.push_str(&format!("{name}{{{}}} {}\n", labels.join(","), value.0));
        }
        body
    }

    fn grouping_strategy() -> impl proptest::strategy::Strategy<Value = Tags> {
        use proptest::strategy::Strategy;
        (
            "[a-z0-9]{1,6}",
            proptest::option::of("\\PC{1,6}"),
            proptest::option::of("[a-z]{1,3}"),
        )
            .prop_map(|(job, instance, a)| {
                let mut grouping = Tags::from([("job".to_owned(), job)]);
                if let Some(instance) = instance {
                    grouping.insert("instance".into(), instance);
                }
                if let Some(a) = a {
                    grouping.insert("a".into(), a);
                }
                grouping
            })
    }

    proptest::proptest! {
        /// A grouping key written in the path (percent-encoded or `@base64`, URL-safe,
        /// padded or not; `=` for an empty value) reads back as written, empty values left
        /// out.
        #[test]
        fn grouping_keys_round_trip(
            job in "\\PC{1,8}",
            job_base64: bool,
            labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,5}", ("\\PC{0,8}", proptest::prelude::any::<bool>()), 0..4),
            padded: bool,
        ) {
            use crate::lookout::request::{encode_base64, percent_encode};
            let segment = |name: &str, value: &str, base64: bool| {
                if base64 || value.is_empty() {
                    let encoded = encode_base64(value.as_bytes(), true, padded);
                    let encoded = if encoded.is_empty() { "=".to_owned() } else { encoded };
                    format!("{name}@base64/{encoded}")
                } else {
                    format!("{name}/{}", percent_encode(value, false))
                }
            };
            let mut path = segment("job", &job, job_base64);
            let mut expected = Tags::from([("job".to_owned(), job.clone())]);
            for (name, (value, base64)) in &labels {
                if name == "job" || name.starts_with("__") {
                    continue;
                }
                path.push('/');
                path.push_str(&segment(name, value, *base64));
                if !value.is_empty() {
                    expected.insert(name.clone(), value.clone());
                }
            }
            proptest::prop_assert_eq!(grouping_key(&path).unwrap(), expected, "path {}", path);
        }

        #[test]
        fn arbitrary_grouping_paths_never_panic(path in "(job(@base64)?/)?[a-zA-Z0-9_@=%/+-]{0,30}|\\PC{0,20}") {
            match grouping_key(&path) {
                Ok(key) => proptest::prop_assert!(key.get("job").is_some_and(|job| !job.is_empty())),
                Err(error) => proptest::prop_assert!(!error.to_string().is_empty()),
            }
        }

        /// A generated body decodes to exactly its samples at the push time, the grouping
        /// labels set on each (over body labels of the same name), empty values left out.
        #[test]
        fn pushed_bodies_round_trip(
            samples in proptest::collection::vec(pushed_sample(), 0..10),
            grouping in grouping_strategy(),
            push_time in 0i64..4_000_000_000_000,
        ) {
            let body = body_of(&samples);
            let batch = decode(body.as_bytes(), &grouping, TimestampMs(push_time), &Limits::default()).unwrap();
            let expected: Vec<(Labels, u64)> = samples
                .iter()
                .map(|(name, labels, value)| {
                    let mut pairs = labels.clone();
                    pairs.extend(grouping.clone());
                    pairs.insert(METRIC_NAME_LABEL.to_owned(), name.clone());
                    (Labels::from_pairs(pairs).unwrap(), value.1.to_bits())
                })
                .collect();
            let decoded: Vec<(Labels, u64)> = batch
                .series
                .iter()
                .map(|series| {
                    assert_eq!(series.samples.len(), 1);
                    assert_eq!(series.samples[0].timestamp, TimestampMs(push_time));
                    (series.labels.clone(), series.samples[0].value.to_bits())
                })
                .collect();
            proptest::prop_assert_eq!(decoded, expected, "body {:?}", body);
        }

        /// One bad part refuses the whole push with a message naming it: a broken line (by
        /// its number), a timestamp, a label set over the limit, too many samples. Nothing
        /// is half-accepted.
        #[test]
        fn one_bad_part_refuses_the_whole_push(
            samples in proptest::collection::vec(pushed_sample(), 1..8),
            grouping in grouping_strategy(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            bad in 0..4usize,
        ) {
            let good = body_of(&samples);
            let mut lines: Vec<&str> = good.lines().collect();
            let position = at.index(lines.len() + 1);
            let bad_line = match bad {
                0 => "broken{ 1",
                1 => "stamped 1 1000",
                _ => "wide{a1=\"1\",a2=\"2\",a3=\"3\",a4=\"4\",a5=\"5\",a6=\"6\",a7=\"7\",a8=\"8\"} 1",
            };
            lines.insert(position, bad_line);
            let body = lines.join("\n");
            let mut limits = Limits::default();
            limits.labels.max_labels = 8;
            if bad == 3 {
                // A good body, one sample over the limit.
                limits.decode.max_series_per_request = samples.len() - 1;
            }
            let body = if bad == 3 { good.clone() } else { body };
            let error = decode(body.as_bytes(), &grouping, TimestampMs(0), &limits).unwrap_err();
            match bad {
                0 => proptest::prop_assert!(
                    matches!(&error, PushError::Line { line, reason } if *line == position + 1 && !reason.is_empty()),
                    "{:?} at line {}", error, position + 1
                ),
                1 => proptest::prop_assert_eq!(
                    &error,
                    &PushError::Invalid("pushed metrics must not have timestamps".into())
                ),
                2 => proptest::prop_assert!(matches!(&error, PushError::Invalid(message) if message.starts_with("invalid_labels: wide"))),
                _ => proptest::prop_assert_eq!(
                    &error,
                    &PushError::Body(LookoutError::TooManySamples { limit: samples.len() - 1 })
                ),
            }
            proptest::prop_assert!(!error.to_string().is_empty());
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            text in "[a-z_{}=\",\\\\ #0-9.+\n-]{0,120}",
        ) {
            let grouping = Tags::from([("job".to_owned(), "j".to_owned())]);
            for body in [bytes.as_slice(), text.as_bytes()] {
                match decode(body, &grouping, TimestampMs(0), &Limits::default()) {
                    Ok(batch) => {
                        for series in &batch.series {
                            proptest::prop_assert_eq!(series.labels.get("job"), Some("j"));
                        }
                    }
                    Err(error) => proptest::prop_assert!(!error.to_string().is_empty()),
                }
            }
        }
    }

    /// One request of a generated sequence: method, which of two groups, the pushed
    /// `(name, x)` series.
    type Request = (PushMethod, usize, BTreeSet<(String, u8)>);

    fn request_strategy() -> impl proptest::strategy::Strategy<Value = Request> {
        (
            proptest::sample::select(vec![PushMethod::Put, PushMethod::Post, PushMethod::Delete]),
            0..2usize,
            proptest::collection::btree_set(("[a-c]", 1..4u8), 0..5),
        )
    }

    proptest::proptest! {
        /// Any sequence of PUT, POST and DELETE on two groups, against a model of what each
        /// group holds: every pushed sample is in the batch, every series that leaves its
        /// group gets exactly one stale marker (and nothing else does), a deleted group's
        /// time gauges go stale, and the groups end as the model says.
        #[test]
        fn push_sequences_match_the_model(requests in proptest::collection::vec(request_strategy(), 1..10)) {
            let groupings = [
                Tags::from([("job".to_owned(), "j".to_owned())]),
                Tags::from([("job".to_owned(), "j".to_owned()), ("instance".to_owned(), "i".to_owned())]),
            ];
            let labels_of = |grouping: &Tags, name: &str, x: u8| {
                let mut pairs = grouping.clone();
                pairs.insert(METRIC_NAME_LABEL.to_owned(), name.to_owned());
                pairs.insert("x".to_owned(), x.to_string());
                Labels::from_pairs(pairs).unwrap()
            };
            let mut groups = PushGroups::new();
            let mut model: [Option<BTreeSet<Labels>>; 2] = [None, None];
            for (step, (method, group, pushed)) in requests.iter().enumerate() {
                let grouping = &groupings[*group];
                let now = TimestampMs(1_000 * (step as i64 + 1));
                let body: String = if *method == PushMethod::Delete {
                    String::new()
                } else {
                    pushed.iter().map(|(name, x)| format!("{name}{{x=\"{x}\"}} {x}\n")).collect()
                };
                let batch = decode(body.as_bytes(), grouping, now, &Limits::default()).unwrap();
                let plan = groups.plan(*method, grouping, batch, now);
                let pushed_labels: BTreeSet<Labels> = if *method == PushMethod::Delete {
                    BTreeSet::new()
                } else {
                    pushed.iter().map(|(name, x)| labels_of(grouping, name, *x)).collect()
                };
                let old = model[*group].clone();
                let new = match method {
                    PushMethod::Put => Some(pushed_labels.clone()),
                    PushMethod::Delete => None,
                    PushMethod::Post => {
                        let names: BTreeSet<&str> = pushed.iter().map(|(name, _)| name.as_str()).collect();
                        let mut kept: BTreeSet<Labels> = old
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|labels| !names.contains(labels.metric_name().unwrap()))
                            .collect();
                        kept.extend(pushed_labels.iter().cloned());
                        Some(kept)
                    }
                };
                let mut expected_stale: BTreeSet<Labels> = old
                    .clone()
                    .unwrap_or_default()
                    .difference(&new.clone().unwrap_or_default())
                    .cloned()
                    .collect();
                if *method == PushMethod::Delete && old.is_some() {
                    for name in [PUSH_TIME_METRIC, PUSH_FAILURE_TIME_METRIC] {
                        expected_stale.insert(gauge_labels(name, grouping));
                    }
                }
                let stale: Vec<Labels> = plan
                    .batch
                    .series
                    .iter()
                    .filter(|series| lookout_model::is_stale_nan(series.samples[0].value))
                    .map(|series| series.labels.clone())
                    .collect();
                proptest::prop_assert_eq!(stale.len(), expected_stale.len(), "request {}", step);
                proptest::prop_assert_eq!(stale.into_iter().collect::<BTreeSet<_>>(), expected_stale);
                let written: BTreeSet<Labels> = plan
                    .batch
                    .series
                    .iter()
                    .filter(|series| !lookout_model::is_stale_nan(series.samples[0].value))
                    .map(|series| series.labels.clone())
                    .collect();
                let mut expected_written = pushed_labels.clone();
                if *method != PushMethod::Delete {
                    expected_written.insert(gauge_labels(PUSH_TIME_METRIC, grouping));
                    expected_written.insert(gauge_labels(PUSH_FAILURE_TIME_METRIC, grouping));
                }
                proptest::prop_assert_eq!(written, expected_written);
                groups.commit(plan);
                model[*group] = new;
                let held = groups
                    .get(grouping)
                    .map(|state| state.series.values().flatten().cloned().collect::<BTreeSet<_>>());
                proptest::prop_assert_eq!(&held, &model[*group]);
                if *method != PushMethod::Delete {
                    let state = groups.get(grouping).unwrap();
                    proptest::prop_assert_eq!(state.push_time_seconds, now.0 as f64 / 1000.0);
                }
            }
            proptest::prop_assert_eq!(groups.len(), model.iter().filter(|group| group.is_some()).count());
        }
    }
}
