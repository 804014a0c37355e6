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
/// §4.4 step 2): the tag's value in seconds when positive, none for `-1`, 10 s otherwise.
pub fn take_alignment_step(extra_tags: &mut Tags) -> Option<i64> {
    let step = extra_tags
        .remove("step")
        .and_then(|text| text.trim().parse::<i64>().ok());
    match step {
        Some(-1) => None,
        Some(seconds) if seconds > 0 => Some(seconds * 1000),
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
}
