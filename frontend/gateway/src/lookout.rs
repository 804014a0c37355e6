//! SOFALookout's push protocols on the gateway port, as pure decoders (spec §2, §3.0–§3.3,
//! §4.4): the SDK body of `POST /datas` and `/lookout/metrics/...` ([`sdk`]), the Prometheus
//! text body of `/prom/metrics/job/...` ([`prom_push`]), the request-level rules every push
//! endpoint shares (path tags, `require_app_step`, tokens: [`request`]), and the normalisers
//! ([`normalise`]).
//!
//! A decoder takes the body and what the request adds to every sample ([`Enrichment`]) and
//! returns a [`Decoded`]: a `WriteBatch`, the info samples (never stored, spec §4.6) and the
//! count of what was skipped, by [`SkipReason`]. Only what makes the whole body unusable
//! (size limits, broken snappy) is an error; a bad measurement, entry or line is skipped and
//! counted, and the rest is kept.

pub mod normalise;
pub mod prom_push;
pub mod request;
pub mod sdk;
pub mod time;

use std::collections::BTreeMap;
use std::fmt;

use lookout_model::{
    Classify, ErrorClass, LabelLimits, Labels, Sample, TimestampMs, METRIC_NAME_LABEL,
};
use lookout_storage::WriteBatch;

use crate::DecodeLimits;

/// Limits of the SOFALookout decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Body size, decompressed size and samples per request (`max_series_per_request`: every
    /// sample of these protocols is its own series).
    pub decode: DecodeLimits,
    /// Checked on every sample's labels; a sample that fails is skipped as
    /// [`SkipReason::InvalidLabels`].
    pub labels: LabelLimits,
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookoutError {
    /// The body as sent is larger than allowed.
    #[error("request body is {size} bytes, the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    /// The body is not snappy block format.
    #[error("body is not raw snappy: {reason}")]
    Snappy { reason: String },
    /// The body decompresses to more than allowed.
    #[error("request decompresses to {size} bytes, the limit is {limit}")]
    DecompressedTooLarge { size: usize, limit: usize },
    /// The body holds more samples than allowed.
    #[error("request holds more than {limit} samples")]
    TooManySamples { limit: usize },
    /// A body that must be one JSON document is not (OpenTSDB's `/api/put`).
    #[error("body is not JSON: {reason}")]
    Json { reason: String },
}

impl Classify for LookoutError {
    fn class(&self) -> ErrorClass {
        match self {
            LookoutError::Snappy { .. } | LookoutError::Json { .. } => ErrorClass::BadData,
            LookoutError::BodyTooLarge { .. }
            | LookoutError::DecompressedTooLarge { .. }
            | LookoutError::TooManySamples { .. } => ErrorClass::Limit,
        }
    }
}

/// Why part of a body was skipped. The names are stable: they appear in self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// An SDK segment is not a JSON object.
    MalformedJson,
    /// An SDK measurement has no `time`, or one that does not parse.
    InvalidTime,
    /// An SDK measurement has no `tags` object.
    InvalidTags,
    /// An entry of a (non-info) SDK measurement is not a number; only that entry is skipped.
    NonNumericValue,
    /// A line of a Prometheus text body does not parse.
    MalformedLine,
    /// A sample's labels are not a valid set (a name twice) or break the label limits.
    InvalidLabels,
    /// A data point has no metric name (OpenTSDB).
    MissingName,
}

impl SkipReason {
    /// Every reason, for metrics exported with zero counts.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::MalformedJson,
        SkipReason::InvalidTime,
        SkipReason::InvalidTags,
        SkipReason::NonNumericValue,
        SkipReason::MalformedLine,
        SkipReason::InvalidLabels,
        SkipReason::MissingName,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MalformedJson => "malformed_json",
            SkipReason::InvalidTime => "invalid_time",
            SkipReason::InvalidTags => "invalid_tags",
            SkipReason::NonNumericValue => "non_numeric_value",
            SkipReason::MalformedLine => "malformed_line",
            SkipReason::InvalidLabels => "invalid_labels",
            SkipReason::MissingName => "missing_name",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An info sample (SDK `_type_` `i`): a string payload. Never stored (spec §4.6), kept for
/// callers that relay or log them.
#[derive(Debug, Clone, PartialEq)]
pub struct InfoSample {
    /// Name and tags.
    pub labels: Labels,
    /// When it was reported.
    pub timestamp: TimestampMs,
    /// The payload (JSON text of the reported value when it is not a string).
    pub info: String,
}

/// How many explanations of skipped items a [`Decoded`] keeps.
const MAX_SKIP_MESSAGES: usize = 8;

/// A decoded body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// The samples to write, one series entry per sample.
    pub batch: WriteBatch,
    /// Info samples, not part of the batch.
    pub infos: Vec<InfoSample>,
    /// Items skipped, by reason: SDK segments, entries or samples, text lines.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// The first few skipped items in words, for logs.
    pub messages: Vec<String>,
}

impl Decoded {
    /// Counts one skipped item and keeps its explanation if there is room.
    pub fn skip(&mut self, reason: SkipReason, message: impl FnOnce() -> String) {
        *self.skipped.entry(reason).or_default() += 1;
        if self.messages.len() < MAX_SKIP_MESSAGES {
            self.messages.push(format!("{reason}: {}", message()));
        }
    }

    /// All skipped items.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Tags of one sample as the gateway builds them: later `insert`s replace (Java `put`),
/// enrichment only fills what is absent.
pub type Tags = BTreeMap<String, String>;

/// What a request adds to every sample it carries (spec §4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    /// The sender's address: the `Client-Ip` header (SDK protocol) or the TCP peer. Becomes
    /// the `ip` tag of samples that have none.
    pub client_ip: Option<String>,
    /// Tags from the URL path (or headers), added where the body did not set them.
    pub extra_tags: Tags,
}

impl Enrichment {
    /// Adds `ip`, then the extra tags, where absent (body tags win, and the peer `ip` wins
    /// over an `ip` path tag, as in the original).
    pub fn apply(&self, tags: &mut Tags) {
        if let Some(ip) = &self.client_ip {
            tags.entry("ip".to_owned()).or_insert_with(|| ip.clone());
        }
        for (key, value) in &self.extra_tags {
            tags.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
}

/// The default alignment step when `step` is missing, 0 or negative (other than -1).
const DEFAULT_STEP_SECONDS: i64 = 10;

/// Removes `step` from the extra tags and returns the alignment step in milliseconds (spec
/// §4.4 step 2): the tag's value in seconds when positive (at most `i64::MAX` ms), none for
/// `-1`, 10 s otherwise.
pub fn take_alignment_step(extra_tags: &mut Tags) -> Option<i64> {
    let step = extra_tags
        .remove("step")
        .and_then(|text| text.trim().parse::<i64>().ok());
    match step {
        Some(-1) => None,
        // A step too large for milliseconds in an i64 floors like the largest one: to 0.
        Some(seconds) if seconds > 0 => Some(seconds.saturating_mul(1000)),
        _ => Some(DEFAULT_STEP_SECONDS * 1000),
    }
}

/// `timestamp` floored to a multiple of `step_ms`.
pub fn align(timestamp: i64, step_ms: Option<i64>) -> i64 {
    match step_ms {
        Some(step) if step > 0 => timestamp.div_euclid(step) * step,
        _ => timestamp,
    }
}

/// Collects samples into a [`Decoded`], checking labels and the sample limit.
#[derive(Debug)]
pub(crate) struct Collector<'a> {
    pub(crate) decoded: Decoded,
    limits: &'a Limits,
    samples: usize,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(limits: &'a Limits) -> Collector<'a> {
        Collector {
            decoded: Decoded::default(),
            limits,
            samples: 0,
        }
    }

    /// The label set of `name` + `tags`, or why it is invalid.
    pub(crate) fn checked_labels(
        &self,
        name: &str,
        tags: &Tags,
    ) -> Result<Labels, lookout_model::ModelError> {
        let pairs = std::iter::once((METRIC_NAME_LABEL, name)).chain(
            tags.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        Labels::from_pairs(pairs).and_then(|labels| {
            labels.validate(&self.limits.labels)?;
            Ok(labels)
        })
    }

    /// The label set of `name` + `tags`, or `None` (counted) when it is invalid.
    fn labels(&mut self, name: &str, tags: &Tags) -> Option<Labels> {
        match self.checked_labels(name, tags) {
            Ok(labels) => Some(labels),
            Err(error) => {
                self.decoded
                    .skip(SkipReason::InvalidLabels, || format!("{name}: {error}"));
                None
            }
        }
    }

    /// Counts one sample against `max_series_per_request`.
    pub(crate) fn count_one(&mut self) -> Result<(), LookoutError> {
        self.samples += 1;
        let limit = self.limits.decode.max_series_per_request;
        if self.samples > limit {
            return Err(LookoutError::TooManySamples { limit });
        }
        Ok(())
    }

    pub(crate) fn sample(
        &mut self,
        name: &str,
        tags: &Tags,
        timestamp: i64,
        value: f64,
    ) -> Result<(), LookoutError> {
        self.count_one()?;
        if let Some(labels) = self.labels(name, tags) {
            self.decoded
                .batch
                .push(labels, vec![Sample::new(timestamp, value)]);
        }
        Ok(())
    }

    fn info(
        &mut self,
        name: &str,
        tags: &Tags,
        timestamp: i64,
        info: String,
    ) -> Result<(), LookoutError> {
        self.count_one()?;
        if let Some(labels) = self.labels(name, tags) {
            self.decoded.infos.push(InfoSample {
                labels,
                timestamp: TimestampMs(timestamp),
                info,
            });
        }
        Ok(())
    }

    pub(crate) fn skip(&mut self, reason: SkipReason, message: impl FnOnce() -> String) {
        self.decoded.skip(reason, message);
    }
}

/// Checks the body size, then undoes raw snappy when `snappy` is set.
pub(crate) fn read_body(
    body: &[u8],
    snappy: bool,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, LookoutError> {
    if body.len() > limits.max_body_bytes {
        return Err(LookoutError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    if !snappy {
        return Ok(body.to_vec());
    }
    crate::decompress_snappy_block(body, limits.max_decompressed_bytes).map_err(|error| match error
    {
        crate::SnappyError::Invalid(reason) => LookoutError::Snappy { reason },
        crate::SnappyError::TooLarge { size, limit } => {
            LookoutError::DecompressedTooLarge { size, limit }
        }
    })
}

/// UTF-8 text of a body; bytes that are not UTF-8 are read as ISO-8859-1, the encoding the
/// Java SDK uses for uncompressed reports (spec §13.28).
pub(crate) fn body_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => error
            .into_bytes()
            .iter()
            .map(|&byte| byte as char)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrichment_fills_only_absent_tags_ip_first() {
        let enrichment = Enrichment {
            client_ip: Some("10.0.0.9".into()),
            extra_tags: Tags::from([
                ("ip".to_owned(), "1.1.1.1".to_owned()),
                ("app".to_owned(), "path-app".to_owned()),
                ("zone".to_owned(), "gz".to_owned()),
            ]),
        };
        let mut tags = Tags::from([("app".to_owned(), "body-app".to_owned())]);
        enrichment.apply(&mut tags);
        assert_eq!(tags["app"], "body-app");
        assert_eq!(tags["ip"], "10.0.0.9");
        assert_eq!(tags["zone"], "gz");
    }

    #[test]
    fn alignment_step_follows_section_4_4() {
        let step = |value: Option<&str>| {
            let mut tags = Tags::new();
            if let Some(value) = value {
                tags.insert("step".into(), value.into());
            }
            let step = take_alignment_step(&mut tags);
            assert!(!tags.contains_key("step"));
            step
        };
        assert_eq!(step(Some("30")), Some(30_000));
        assert_eq!(step(Some("-1")), None);
        assert_eq!(
            step(Some("-01")),
            None,
            "-1 by value, as SOFALookout's parseInt"
        );
        assert_eq!(step(Some("0")), Some(10_000));
        assert_eq!(step(Some("-5")), Some(10_000));
        assert_eq!(step(Some("x")), Some(10_000));
        assert_eq!(step(None), Some(10_000));
        assert_eq!(align(1_559_199_875_123, Some(10_000)), 1_559_199_870_000);
        assert_eq!(align(1_559_199_875_123, None), 1_559_199_875_123);
    }

    #[test]
    fn latin1_fallback_for_invalid_utf8() {
        assert_eq!(body_text(b"caf\xe9".to_vec()), "café");
        assert_eq!(body_text("café".as_bytes().to_vec()), "café");
    }

    /// Found by `alignment_steps_are_positive_or_absent`: a step whose milliseconds do not
    /// fit an i64 overflowed (a panic in debug builds, a wrapped negative step in release).
    /// The HTTP edge refuses such a step (`require_app_step`), but the decoders are public.
    #[test]
    fn a_huge_step_saturates_instead_of_overflowing() {
        let mut tags = Tags::from([("step".to_owned(), "9223372036854776".to_owned())]);
        assert_eq!(take_alignment_step(&mut tags), Some(i64::MAX));
        assert_eq!(align(1_700_000_000_000, Some(i64::MAX)), 0);
        let enrichment = Enrichment {
            client_ip: None,
            extra_tags: Tags::from([("step".to_owned(), i64::MAX.to_string())]),
        };
        let decoded = prom_push::decode(
            b"m 1\n",
            TimestampMs(1_700_000_000_000),
            &enrichment,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(decoded.batch.series[0].samples[0].timestamp, TimestampMs(0));
    }

    /// One entry of a generated SDK metric object.
    #[derive(Debug, Clone)]
    enum Entry {
        /// A JSON number, exactly representable so the decoded value can be compared.
        Number(f64),
        /// Java's bare `NaN`, `Infinity` or `-Infinity`.
        NonFinite(&'static str, f64),
        /// Any other JSON value, as text: skipped alone as `non_numeric_value`.
        NotANumber(String),
    }

    impl Entry {
        fn text(&self) -> String {
            match self {
                Entry::Number(value) => serde_json::to_string(value).unwrap(),
                Entry::NonFinite(token, _) => (*token).to_owned(),
                Entry::NotANumber(text) => text.clone(),
            }
        }

        fn value(&self) -> Option<f64> {
            match self {
                Entry::Number(value) | Entry::NonFinite(_, value) => Some(*value),
                Entry::NotANumber(_) => None,
            }
        }
    }

    /// A metric of a measurement: an object of entries, or a plain number.
    #[derive(Debug, Clone)]
    enum Metric {
        Entries(BTreeMap<String, Entry>),
        Plain(f64),
    }

    /// One TAB-separated segment of a generated SDK body.
    #[derive(Debug, Clone)]
    enum Segment {
        /// A measurement with a valid time; `too_many_tags` ones break the label limit.
        Good {
            time_ms: i64,
            iso_time: bool,
            tags: BTreeMap<String, String>,
            too_many_tags: bool,
            metrics: BTreeMap<String, Metric>,
        },
        /// A measurement whose `time` is missing or unreadable (the JSON text, if any).
        BadTime(Option<String>),
        /// A measurement with a valid time and no `tags` object.
        NoTags,
        /// Not a JSON object.
        Junk(String),
    }

    /// Tags the body of a `too_many_tags` measurement carries: with `__name__`, `ip` and the
    /// path's `app` and `step` that is 12 labels, beyond [`MAX_LABELS`].
    const MANY_TAG_KEYS: [&str; 8] = ["e", "f", "g", "h", "i", "j", "k", "l"];
    /// At most `__name__`, 4 body tags (`a`-`d`), `ip`, `app`, `step` and `zone`.
    const MAX_LABELS: usize = 9;

    fn entry_strategy() -> impl proptest::strategy::Strategy<Value = Entry> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| Entry::Number(n as f64)),
            4 => any::<i32>().prop_map(|n| Entry::Number(f64::from(n) / 8.0)),
            1 => proptest::sample::select(vec![
                ("NaN", f64::NAN),
                ("Infinity", f64::INFINITY),
                ("-Infinity", f64::NEG_INFINITY),
            ])
            .prop_map(|(token, value)| Entry::NonFinite(token, value)),
            2 => prop_oneof![
                "[a-zA-Z0-9 .]{0,6}".prop_map(|text| serde_json::to_string(&text).unwrap()),
                Just("\"NaN\"".to_owned()),
                Just("true".to_owned()),
                Just("null".to_owned()),
                Just("[1,2]".to_owned()),
                Just("{\"v\":1}".to_owned()),
            ]
            .prop_map(Entry::NotANumber),
        ]
    }

    fn segment_strategy() -> impl proptest::strategy::Strategy<Value = Segment> {
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;
        let metric = prop_oneof![
            4 => btree_map("[a-z0-9]{1,3}", entry_strategy(), 0..4).prop_map(Metric::Entries),
            1 => any::<i16>().prop_map(|n| Metric::Plain(f64::from(n))),
        ];
        let good = (
            0i64..4_000_000_000_000,
            any::<bool>(),
            btree_map("[a-d]", "[a-z0-9]{1,4}", 0..4),
            vec("[a-z0-9]{1,4}", MANY_TAG_KEYS.len()),
            prop_oneof![4 => Just(false), 1 => Just(true)],
            btree_map("x[a-z]{0,3}", metric, 0..4),
        )
            .prop_map(|(time_ms, iso_time, tags, many, too_many_tags, metrics)| {
                let tags = if too_many_tags {
                    MANY_TAG_KEYS
                        .iter()
                        .map(|key| (*key).to_owned())
                        .zip(many)
                        .collect()
                } else {
                    tags
                };
                // ISO times have whole seconds here.
                let time_ms = if iso_time {
                    time_ms / 1000 * 1000
                } else {
                    time_ms
                };
                Segment::Good {
                    time_ms,
                    iso_time,
                    tags,
                    too_many_tags,
                    metrics,
                }
            });
        prop_oneof![
            6 => good,
            1 => proptest::option::of(proptest::sample::select(vec![
                "\"never\"",
                "true",
                "null",
                "\"2019-02-30T00:00:00Z\"",
                "1.5",
                "{}",
            ]))
            .prop_map(|time| Segment::BadTime(time.map(str::to_owned))),
            1 => Just(Segment::NoTags),
            1 => prop_oneof![
                "x[a-z {}:,\"]{0,12}",
                "\\[[0-9,]{0,6}\\]",
                Just("NaN".to_owned()),
                Just("\"text\"".to_owned()),
                Just("{\"time\":1000,\"tags\":{}".to_owned()),
            ]
            .prop_map(Segment::Junk),
        ]
    }

    /// An ISO-8601 text of `millis` (whole seconds) at UTC+08:00, as the Java SDK writes it.
    fn sdk_time(millis: i64) -> String {
        let shifted = millis / 1000 + 8 * 3600;
        let (days, seconds) = (shifted.div_euclid(86_400), shifted.rem_euclid(86_400));
        // Civil date of a day count (days since 1970-01-01), year by year.
        let is_leap = |year: i64| year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let (mut year, mut days) = (1970, days);
        while days >= if is_leap(year) { 366 } else { 365 } {
            days -= if is_leap(year) { 366 } else { 365 };
            year += 1;
        }
        let lengths = [
            31,
            if is_leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while days >= lengths[month] {
            days -= lengths[month];
            month += 1;
        }
        format!(
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}+08:00",
            month + 1,
            days + 1,
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }

    fn json_object(members: &[(String, String)]) -> String {
        let members: Vec<String> = members
            .iter()
            .map(|(key, value)| format!("{}:{value}", serde_json::to_string(key).unwrap()))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// What a body built from `segments` must decode to, counted from the generator.
    #[derive(Debug, Default)]
    struct Expected {
        /// `(name, value, time)` of every stored sample, in body order.
        samples: Vec<(String, f64, i64)>,
        skipped: BTreeMap<SkipReason, u64>,
        /// Samples counted against `max_series_per_request` (stored or refused by labels).
        counted: usize,
    }

    impl Expected {
        fn skip(&mut self, reason: SkipReason) {
            *self.skipped.entry(reason).or_default() += 1;
        }

        /// A numeric sample of a good measurement: stored, or refused by the label limit.
        fn sample(&mut self, name: String, value: f64, time_ms: i64, too_many_tags: bool) {
            self.counted += 1;
            if too_many_tags {
                self.skip(SkipReason::InvalidLabels);
            } else {
                self.samples.push((name, value, time_ms));
            }
        }
    }

    fn render(segments: &[Segment]) -> (String, Expected) {
        let mut expected = Expected::default();
        let mut texts = Vec::new();
        for segment in segments {
            let text = match segment {
                Segment::Good {
                    time_ms,
                    iso_time,
                    tags,
                    too_many_tags,
                    metrics,
                } => {
                    let time = if *iso_time {
                        serde_json::to_string(&sdk_time(*time_ms)).unwrap()
                    } else {
                        time_ms.to_string()
                    };
                    let tags: Vec<(String, String)> = tags
                        .iter()
                        .map(|(key, value)| (key.clone(), serde_json::to_string(value).unwrap()))
                        .collect();
                    let mut members = vec![
                        ("time".to_owned(), time),
                        ("tags".to_owned(), json_object(&tags)),
                    ];
                    for (metric, value) in metrics {
                        let text = match value {
                            Metric::Plain(number) => {
                                expected.sample(metric.clone(), *number, *time_ms, *too_many_tags);
                                number.to_string()
                            }
                            Metric::Entries(entries) => {
                                let mut rendered = Vec::new();
                                for (key, entry) in entries {
                                    match entry.value() {
                                        Some(value) => expected.sample(
                                            format!("{metric}.{key}"),
                                            value,
                                            *time_ms,
                                            *too_many_tags,
                                        ),
                                        None => expected.skip(SkipReason::NonNumericValue),
                                    }
                                    rendered.push((key.clone(), entry.text()));
                                }
                                json_object(&rendered)
                            }
                        };
                        members.push((metric.clone(), text));
                    }
                    json_object(&members)
                }
                Segment::BadTime(time) => {
                    expected.skip(SkipReason::InvalidTime);
                    let mut members = vec![("tags".to_owned(), "{}".to_owned())];
                    if let Some(time) = time {
                        members.push(("time".to_owned(), time.clone()));
                    }
                    members.push(("xm".to_owned(), "{\"v\":1}".to_owned()));
                    json_object(&members)
                }
                Segment::NoTags => {
                    expected.skip(SkipReason::InvalidTags);
                    "{\"time\":1000,\"xm\":{\"v\":1}}".to_owned()
                }
                Segment::Junk(text) => {
                    expected.skip(SkipReason::MalformedJson);
                    text.clone()
                }
            };
            texts.push(text);
        }
        (texts.join("\t"), expected)
    }

    proptest::proptest! {
        #[test]
        fn alignment_steps_are_positive_or_absent(text in "-?[0-9]{1,20}|\\PC{0,6}| ?-1 ?") {
            let mut tags = Tags::from([("step".to_owned(), text.clone()), ("a".to_owned(), "b".to_owned())]);
            let step = take_alignment_step(&mut tags);
            proptest::prop_assert_eq!(tags.len(), 1);
            match step {
                // -1 by value ("-01" too, as Java's parseInt reads it) turns alignment off.
                None => proptest::prop_assert_eq!(text.trim().parse::<i64>(), Ok(-1)),
                Some(step) => proptest::prop_assert!(step > 0),
            }
        }

        #[test]
        fn steps_are_read_as_seconds(seconds in 1..=i64::from(i32::MAX)) {
            let mut tags = Tags::from([("step".to_owned(), seconds.to_string())]);
            proptest::prop_assert_eq!(take_alignment_step(&mut tags), Some(seconds * 1000));
        }

        /// The floor of any timestamp a decoder produces to any step the edge lets through.
        #[test]
        fn alignment_floors_to_a_multiple(
            timestamp in -(1i64 << 50)..(1i64 << 50),
            step in 1..=i64::from(i32::MAX) * 1000,
        ) {
            let aligned = align(timestamp, Some(step));
            proptest::prop_assert!(aligned <= timestamp && timestamp - aligned < step);
            proptest::prop_assert_eq!(aligned.rem_euclid(step), 0);
            proptest::prop_assert_eq!(align(timestamp, None), timestamp);
        }

        /// Valid UTF-8 is kept; anything else is read byte for byte as ISO-8859-1.
        #[test]
        fn body_text_is_utf8_or_latin1(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let text = body_text(bytes.clone());
            match std::str::from_utf8(&bytes) {
                Ok(utf8) => proptest::prop_assert_eq!(text, utf8),
                Err(_) => {
                    let latin1: Vec<u32> = text.chars().map(u32::from).collect();
                    let expected: Vec<u32> = bytes.iter().map(|&byte| u32::from(byte)).collect();
                    proptest::prop_assert_eq!(latin1, expected);
                }
            }
        }

        /// Size limits before anything else; snappy bodies round trip; a refusal says why.
        #[test]
        fn read_body_applies_the_limits(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            max_body_bytes in 0usize..256,
            max_decompressed_bytes in 0usize..256,
        ) {
            let limits = DecodeLimits { max_body_bytes, max_decompressed_bytes, ..DecodeLimits::default() };
            let compressed = crate::compress_snappy_block(&raw);
            match read_body(&compressed, true, &limits) {
                Ok(body) => {
                    proptest::prop_assert!(compressed.len() <= max_body_bytes && raw.len() <= max_decompressed_bytes);
                    proptest::prop_assert_eq!(body, raw.clone());
                }
                Err(error) => {
                    proptest::prop_assert!(!error.to_string().is_empty());
                    proptest::prop_assert!(compressed.len() > max_body_bytes || raw.len() > max_decompressed_bytes);
                }
            }
            match read_body(&raw, false, &limits) {
                Ok(body) => proptest::prop_assert_eq!(body, raw),
                Err(error) => proptest::prop_assert_eq!(
                    error,
                    LookoutError::BodyTooLarge { size: raw.len(), limit: max_body_bytes }
                ),
            }
        }

        /// `/lookout/metrics/app/<a>/step/<s>[/zone/<z>]` with an SDK body mixing good
        /// measurements, entries that are not numbers, bad times, missing tags, broken JSON
        /// and label sets over the limit: every sample the generator wrote is stored (same
        /// name, value and time, path tags added) or counted under the reason the generator
        /// expects, and a body over the sample limit is refused whole with a message.
        #[test]
        fn lookout_metrics_bodies_store_or_count_every_sample(
            segments in proptest::collection::vec(segment_strategy(), 0..8),
            app in "[a-z]{1,6}",
            step in prop_oneof_steps(),
            zone in proptest::option::of("[a-z0-9]{1,4}"),
            snappy: bool,
        ) {
            let mut path = format!("/app/{app}/step/{step}");
            if let Some(zone) = &zone {
                path.push_str(&format!("/zone/{zone}"));
            }
            let extra_tags = request::path_tags(&path).unwrap();
            request::require_app_step(&extra_tags).unwrap();
            let enrichment = Enrichment { client_ip: Some("192.0.2.1".into()), extra_tags };
            let mut limits = Limits::default();
            limits.labels.max_labels = MAX_LABELS;
            let (text, expected) = render(&segments);
            let body = if snappy { crate::compress_snappy_block(text.as_bytes()) } else { text.clone().into_bytes() };
            let decoded = sdk::decode(&body, snappy, &enrichment, &limits).unwrap();
            let stored: Vec<(String, u64, i64)> = decoded
                .batch
                .series
                .iter()
                .map(|series| {
                    let sample = series.samples[0];
                    (
                        series.labels.metric_name().unwrap_or_default().to_owned(),
                        sample.value.to_bits(),
                        sample.timestamp.0,
                    )
                })
                .collect();
            let wanted: Vec<(String, u64, i64)> = expected
                .samples
                .iter()
                .map(|(name, value, time)| (name.clone(), value.to_bits(), *time))
                .collect();
            proptest::prop_assert_eq!(stored, wanted, "body: {}", text);
            proptest::prop_assert_eq!(&decoded.skipped, &expected.skipped, "body: {}", text);
            proptest::prop_assert!(decoded.infos.is_empty());
            for series in &decoded.batch.series {
                proptest::prop_assert_eq!(series.labels.get("app"), Some(app.as_str()));
                proptest::prop_assert_eq!(series.labels.get("ip"), Some("192.0.2.1"));
                proptest::prop_assert_eq!(series.labels.get("zone"), zone.as_deref());
            }
            if expected.counted > 0 {
                limits.decode.max_series_per_request = expected.counted - 1;
                let error = sdk::decode(&body, snappy, &enrichment, &limits).unwrap_err();
                proptest::prop_assert_eq!(
                    &error,
                    &LookoutError::TooManySamples { limit: expected.counted - 1 }
                );
                proptest::prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    /// Steps `require_app_step` accepts: -1 (no alignment) or a positive number of seconds.
    fn prop_oneof_steps() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![Just(-1i64), 1..=i64::from(i32::MAX)]
    }
}
