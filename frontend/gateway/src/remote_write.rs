//! Prometheus remote write 1.0: a snappy-compressed (block format) protobuf `WriteRequest`.
//! The result type, [`Decoded`], and [`DecodeError`] are shared with
//! [`remote_write2`](crate::remote_write2).
//!
//! A body that is not valid snappy or protobuf, or exceeds a limit, is an error for the whole
//! request (nothing is written). Inside a valid request, a series whose labels cannot form a
//! label set (a name twice) is left out and reported in [`Decoded::invalid_series`]; the rest
//! is written. Native histograms and exemplars are not stored yet: they are counted in
//! [`Decoded::skipped_histograms`] / [`Decoded::skipped_exemplars`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Mutex;

use lookout_model::{secret_digest, Labels, Sample, SeriesIdentity};
use lookout_storage::{KnownSeriesSamples, WriteBatch};
use prost::Message;

use crate::DecodeLimits;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The compressed body is larger than allowed.
    #[error("request body is {size} bytes, the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    /// The body is not snappy block format, or decompresses beyond the limit.
    #[error("snappy: {0}")]
    Snappy(String),
    /// The decompressed body would exceed the limit.
    #[error("request decompresses to {size} bytes, the limit is {limit}")]
    DecompressedTooLarge { size: usize, limit: usize },
    /// The protobuf message is malformed.
    #[error("protobuf: {0}")]
    Protobuf(String),
    /// More series than allowed in one request.
    #[error("request has {count} series, the limit is {limit}")]
    TooManySeries { count: usize, limit: usize },
    /// A remote write 2.0 symbols table whose first entry is not the empty string.
    #[error("the symbols table must start with an empty string, it starts with {first:?}")]
    FirstSymbolNotEmpty { first: String },
}

/// `prometheus.WriteRequest` (remote write 1.0); only the fields Lookout reads.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (type, help, unit), sent by Prometheus every minute.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<ProtoMetadata>,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoMetadata {
    /// `MetricType`: 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram, 5 summary,
    /// 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// The metric family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Metadata of one metric family, as the Prometheus API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricMetadata {
    /// The metric family name.
    pub metric: String,
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or
    /// `unknown`.
    pub kind: &'static str,
    /// Help text.
    pub help: String,
    /// Unit.
    pub unit: String,
}

impl MetricMetadata {
    fn from_proto(proto: ProtoMetadata) -> MetricMetadata {
        MetricMetadata {
            metric: proto.metric_family_name,
            kind: metric_type_name(proto.kind),
            help: proto.help,
            unit: proto.unit,
        }
    }

    fn to_proto(&self) -> ProtoMetadata {
        ProtoMetadata {
            kind: metric_type_code(self.kind),
            metric_family_name: self.metric.clone(),
            help: self.help.clone(),
            unit: self.unit.clone(),
        }
    }
}

/// The name of a metric type code; 1.0's `MetricType` and 2.0's `Metadata.MetricType` number
/// the types alike (0 is unknown, resp. unspecified).
pub(crate) fn metric_type_name(code: i32) -> &'static str {
    match code {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// The code of a metric type name; the inverse of [`metric_type_name`].
pub(crate) fn metric_type_code(name: &str) -> i32 {
    match name {
        "counter" => 1,
        "gauge" => 2,
        "histogram" => 3,
        "gaugehistogram" => 4,
        "summary" => 5,
        "info" => 6,
        "stateset" => 7,
        _ => 0,
    }
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Label pairs.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
    /// Exemplars (field 3), kept only to count them.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub exemplars: Vec<Vec<u8>>,
    /// Native histograms (field 4), kept only to count them.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A decoded request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// What to write.
    pub batch: WriteBatch,
    /// Series left out because their labels are not a valid set, with the reason.
    pub invalid_series: Vec<String>,
    /// Samples of the series in `invalid_series`.
    pub invalid_series_samples: u64,
    /// Native histogram samples not stored.
    pub skipped_histograms: usize,
    /// Exemplars not stored.
    pub skipped_exemplars: usize,
    /// Metric metadata the request carried.
    pub metadata: Vec<MetricMetadata>,
    /// Where in [`Decoded::raw`] the `TimeSeries` message of each of `batch.known` lies, for
    /// [`Decoded::unresolved`].
    pub known_messages: Vec<Range<usize>>,
    /// The decompressed body, kept when `batch.known` has entries.
    pub raw: Vec<u8>,
}

impl Decoded {
    /// The series at `positions` of `batch.known` (the ones a store answered as
    /// [`WriteOutcome::unresolved`](lookout_storage::WriteOutcome::unresolved)) decoded again,
    /// with their labels.
    pub fn unresolved(&self, positions: &[usize]) -> Result<Decoded, DecodeError> {
        let mut decoded = Decoded::default();
        let mut scratch = SeriesScratch::default();
        for &position in positions {
            let range = self.known_messages.get(position).cloned().ok_or_else(|| {
                DecodeError::Protobuf(format!("no known series at position {position}"))
            })?;
            decode_series(&self.raw[range], 0, &mut scratch, &mut decoded, None)?;
        }
        Ok(decoded)
    }
}

/// Identities of the series a decoder has seen, by the secret digest
/// ([`secret_digest`]) of their label bytes as sent. A series seen before skips UTF-8 checks,
/// building its labels and hashing them: it goes to the store as a
/// [`KnownSeriesSamples`].
///
/// Memory follows the series that are being sent: each shard keeps two generations and
/// starts a new one every [`KnownSeriesCache::GENERATION`]; a series found in the older one
/// moves to the newer, so a series not sent for two generations is forgotten (and built in
/// full once, should it come back). A generation that reaches its share of `capacity` is
/// emptied.
pub struct KnownSeriesCache {
    shards: Box<[Mutex<CacheShard>]>,
    shard_capacity: usize,
    started: std::time::Instant,
}

/// One shard: the current and the previous generation, and the current one's number.
#[derive(Default)]
struct CacheShard {
    current: DigestMap,
    previous: DigestMap,
    generation: u64,
}

type DigestMap = HashMap<[u64; 2], SeriesIdentity, BuildHasherDefault<DigestHasher>>;

/// Hashes a key that is already a uniform digest.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u64; 2]` hashes as its length, then its words' bytes in one piece: the first
        // word is uniform already.
        let mut word = [0u8; 8];
        let take = bytes.len().min(8);
        word[..take].copy_from_slice(&bytes[..take]);
        self.0 ^= u64::from_le_bytes(word);
    }

    fn write_usize(&mut self, _length: usize) {}
}

const CACHE_SHARDS: usize = 64;

impl KnownSeriesCache {
    /// How long a generation lasts.
    pub const GENERATION: std::time::Duration = std::time::Duration::from_secs(600);

    /// A cache of at most about `capacity` series per generation.
    pub fn new(capacity: usize) -> KnownSeriesCache {
        KnownSeriesCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(CacheShard::default()))
                .collect(),
            shard_capacity: capacity.div_ceil(CACHE_SHARDS).max(1),
            started: std::time::Instant::now(),
        }
    }

    /// The number of the current generation.
    fn generation(&self) -> u64 {
        (self.started.elapsed().as_secs() / Self::GENERATION.as_secs()) + 1
    }

    fn shard(&self, key: [u64; 2], generation: u64) -> std::sync::MutexGuard<'_, CacheShard> {
        let shard = &self.shards[(key[1] % CACHE_SHARDS as u64) as usize];
        let mut shard = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.generation != generation {
            shard.previous = if shard.generation + 1 == generation {
                std::mem::take(&mut shard.current)
            } else {
                DigestMap::default()
            };
            shard.current.clear();
            shard.generation = generation;
        }
        shard
    }

    fn get(&self, key: [u64; 2], generation: u64) -> Option<SeriesIdentity> {
        let mut shard = self.shard(key, generation);
        if let Some(identity) = shard.current.get(&key) {
            return Some(*identity);
        }
        let identity = shard.previous.remove(&key)?;
        self.insert_into(&mut shard, key, identity);
        Some(identity)
    }

    fn insert(&self, key: [u64; 2], identity: SeriesIdentity, generation: u64) {
        let mut shard = self.shard(key, generation);
        self.insert_into(&mut shard, key, identity);
    }

    fn insert_into(&self, shard: &mut CacheShard, key: [u64; 2], identity: SeriesIdentity) {
        if shard.current.len() >= self.shard_capacity {
            shard.current.clear();
        }
        shard.current.insert(key, identity);
    }

    /// Series held, in both generations.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                shard.current.len() + shard.previous.len()
            })
            .sum()
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for KnownSeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownSeriesCache")
            .field("series", &self.len())
            .finish()
    }
}

/// Checks the body size and decompresses the snappy block, within `limits`; the first step of
/// both remote write versions.
pub(crate) fn decompress(body: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>, DecodeError> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    crate::decompress_snappy_block(body, limits.max_decompressed_bytes).map_err(|error| match error
    {
        crate::SnappyError::Invalid(reason) => DecodeError::Snappy(reason),
        crate::SnappyError::TooLarge { size, limit } => {
            DecodeError::DecompressedTooLarge { size, limit }
        }
    })
}

/// Refuses a request with more series than `limits` allow.
pub(crate) fn check_series_count(count: usize, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if count > limits.max_series_per_request {
        return Err(DecodeError::TooManySeries {
            count,
            limit: limits.max_series_per_request,
        });
    }
    Ok(())
}

/// Decodes a remote write 1.0 body.
///
/// The protobuf is walked by hand rather than through the generated [`WriteRequest`]: label
/// names and values are borrowed from the decompressed body until they become the series'
/// [`Labels`], and each series' samples go straight into a vector of the right size, so a
/// request costs no intermediate messages. The rules are prost's: strings must be UTF-8,
/// fields of a known number must have their declared wire type, unknown fields are skipped,
/// and the last occurrence of a scalar field wins. Metadata entries (rare) are decoded with
/// prost.
pub fn decode(body: &[u8], limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    decode_with_cache(body, limits, None)
}

/// [`decode`], sending the series `cache` has seen before as `batch.known` (see
/// [`KnownSeriesCache`]); only for a store whose capabilities say it appends known series.
/// Series whose labels are not all at the start of their message, one after the other (no
/// sender does that), are always decoded in full.
pub fn decode_with_cache(
    body: &[u8],
    limits: &DecodeLimits,
    cache: Option<&KnownSeriesCache>,
) -> Result<Decoded, DecodeError> {
    let raw = decompress(body, limits)?;
    // The top level first: it settles the series count before anything is built.
    let mut series_count = 0;
    let mut wire = Wire::new(&raw);
    while !wire.is_done() {
        match wire.key()? {
            (1, LEN) => {
                wire.bytes()?;
                series_count += 1;
            }
            (3, LEN) => {
                wire.bytes()?;
            }
            (field @ (1 | 3), kind) => return Err(wrong_wire_type("WriteRequest", field, kind)),
            (_, kind) => wire.skip(kind)?,
        }
    }
    check_series_count(series_count, limits)?;
    let mut decoded = Decoded::default();
    decoded.batch.series.reserve(series_count);
    let mut scratch = SeriesScratch::default();
    let cache = cache.map(|cache| (cache, cache.generation()));
    let mut wire = Wire::new(&raw);
    while !wire.is_done() {
        match wire.key()? {
            (1, LEN) => {
                let message = wire.bytes()?;
                let offset = message.as_ptr() as usize - raw.as_ptr() as usize;
                decode_series(message, offset, &mut scratch, &mut decoded, cache)?;
            }
            (3, LEN) => {
                let entry = ProtoMetadata::decode(wire.bytes()?)
                    .map_err(|error| DecodeError::Protobuf(error.to_string()))?;
                if !entry.metric_family_name.is_empty() {
                    decoded.metadata.push(MetricMetadata::from_proto(entry));
                }
            }
            (_, kind) => wire.skip(kind)?,
        }
    }
    if !decoded.batch.known.is_empty() {
        decoded.raw = raw;
    }
    Ok(decoded)
}

/// Buffers reused from one series to the next.
#[derive(Default)]
struct SeriesScratch<'a> {
    labels: Vec<(&'a str, &'a str)>,
    label_messages: Vec<&'a [u8]>,
    samples: Vec<&'a [u8]>,
}

/// One `TimeSeries` message (at `offset` in the decompressed body) into `decoded`.
fn decode_series<'a>(
    message: &'a [u8],
    offset: usize,
    scratch: &mut SeriesScratch<'a>,
    decoded: &mut Decoded,
    cache: Option<(&KnownSeriesCache, u64)>,
) -> Result<(), DecodeError> {
    scratch.labels.clear();
    scratch.label_messages.clear();
    scratch.samples.clear();
    // The label fields' bytes, while they come first and one after the other.
    let mut label_bytes = Some(0..0);
    let mut wire = Wire::new(message);
    while !wire.is_done() {
        let start = wire.at;
        match wire.key()? {
            (1, LEN) => {
                scratch.label_messages.push(wire.bytes()?);
                label_bytes = label_bytes
                    .filter(|span| span.end == start)
                    .map(|_| 0..wire.at);
            }
            (2, LEN) => scratch.samples.push(wire.bytes()?),
            (3, LEN) => {
                wire.bytes()?;
                decoded.skipped_exemplars += 1;
            }
            (4, LEN) => {
                wire.bytes()?;
                decoded.skipped_histograms += 1;
            }
            (field @ 1..=4, kind) => return Err(wrong_wire_type("TimeSeries", field, kind)),
            (_, kind) => wire.skip(kind)?,
        }
    }
    let key = match (cache, label_bytes) {
        (Some(_), Some(span)) if !span.is_empty() && !scratch.samples.is_empty() => {
            let digest = secret_digest(&message[span]);
            Some([digest as u64, (digest >> 64) as u64])
        }
        _ => None,
    };
    if let (Some((cache, generation)), Some(key)) = (cache, key) {
        if let Some(identity) = cache.get(key, generation) {
            // The same bytes decoded into a valid label set before: only the samples are new.
            let samples = decode_samples(&scratch.samples)?;
            decoded
                .batch
                .known
                .push(KnownSeriesSamples { identity, samples });
            decoded.known_messages.push(offset..offset + message.len());
            return Ok(());
        }
    }
    for label in &scratch.label_messages {
        scratch.labels.push(decode_label(label)?);
    }
    if scratch.samples.is_empty() {
        return Ok(());
    }
    let samples = decode_samples(&scratch.samples)?;
    match Labels::from_pairs(scratch.labels.iter().copied()) {
        Ok(labels) => {
            if let (Some((cache, generation)), Some(key)) = (cache, key) {
                cache.insert(key, labels.identity(), generation);
            }
            decoded.batch.push(labels, samples);
        }
        Err(error) => {
            decoded.invalid_series.push(error.to_string());
            decoded.invalid_series_samples += samples.len() as u64;
        }
    }
    Ok(())
}

fn decode_samples(messages: &[&[u8]]) -> Result<Vec<Sample>, DecodeError> {
    let mut samples = Vec::with_capacity(messages.len());
    for message in messages {
        samples.push(decode_sample(message)?);
    }
    Ok(samples)
}

/// One `Label` message: name and value, borrowed.
fn decode_label(message: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (mut name, mut value) = ("", "");
    let mut wire = Wire::new(message);
    while !wire.is_done() {
        match wire.key()? {
            (1, LEN) => name = wire.string()?,
            (2, LEN) => value = wire.string()?,
            (field @ (1 | 2), kind) => return Err(wrong_wire_type("Label", field, kind)),
            (_, kind) => wire.skip(kind)?,
        }
    }
    Ok((name, value))
}

/// One `Sample` message.
fn decode_sample(message: &[u8]) -> Result<Sample, DecodeError> {
    let (mut value, mut timestamp) = (0.0, 0);
    let mut wire = Wire::new(message);
    while !wire.is_done() {
        match wire.key()? {
            (1, FIXED64) => value = f64::from_bits(wire.fixed64()?),
            // int64: the varint's bits, two's complement.
            (2, VARINT) => timestamp = wire.varint()? as i64,
            (field @ (1 | 2), kind) => return Err(wrong_wire_type("Sample", field, kind)),
            (_, kind) => wire.skip(kind)?,
        }
    }
    Ok(Sample::new(timestamp, value))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn wrong_wire_type(message: &str, field: u32, kind: u8) -> DecodeError {
    DecodeError::Protobuf(format!(
        "{message} field {field} has wire type {kind}, which its declaration does not allow"
    ))
}

/// A cursor over protobuf wire-format bytes; every read is bounds-checked.
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Wire<'a> {
        Wire { bytes, at: 0 }
    }

    fn is_done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn error(&self, reason: &str) -> DecodeError {
        DecodeError::Protobuf(format!("{reason} at byte {}", self.at))
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Keys, lengths and most label lengths are one byte.
        if let Some(&byte) = self.bytes.get(self.at) {
            if byte < 0x80 {
                self.at += 1;
                return Ok(u64::from(byte));
            }
        }
        self.varint_long()
    }

    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let mut rest = &self.bytes[self.at..];
        let before = rest.len();
        let value = prost::encoding::decode_varint(&mut rest)
            .map_err(|error| self.error(&format!("varint: {error}")))?;
        self.at += before - rest.len();
        Ok(value)
    }

    /// A field key: field number and wire type.
    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(self.error("invalid field number"));
        }
        Ok((field as u32, (key & 7) as u8))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("field runs past the end of its message"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    /// A length-delimited field's bytes.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.error("length out of range"))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.error("string is not UTF-8"))
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// Skips an unknown field's value.
    fn skip(&mut self, kind: u8) -> Result<(), DecodeError> {
        match kind {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => Err(self.error(&format!("unsupported wire type {kind}"))),
        }
    }
}

/// Encodes a batch as a remote write 1.0 body (for tests and for forwarding).
pub fn encode(batch: &WriteBatch) -> Vec<u8> {
    encode_with_metadata(batch, &[])
}

/// Encodes a batch and metric metadata as a remote write 1.0 body.
pub fn encode_with_metadata(batch: &WriteBatch, metadata: &[MetricMetadata]) -> Vec<u8> {
    crate::compress_snappy_block(&encode_request(batch, metadata))
}

/// The uncompressed `WriteRequest` of a batch and metric metadata; series without samples
/// are left out. Two such messages concatenated are one request with both sets of series.
pub fn encode_request(batch: &WriteBatch, metadata: &[MetricMetadata]) -> Vec<u8> {
    let request = WriteRequest {
        metadata: metadata.iter().map(MetricMetadata::to_proto).collect(),
        timeseries: batch
            .series
            .iter()
            .filter(|series| !series.samples.is_empty())
            .map(|series| TimeSeries {
                labels: series
                    .labels
                    .iter()
                    .map(|label| Label {
                        name: label.name.to_string(),
                        value: label.value.to_string(),
                    })
                    .collect(),
                samples: series
                    .samples
                    .iter()
                    .map(|sample| ProtoSample {
                        value: sample.value,
                        timestamp: sample.timestamp.0,
                    })
                    .collect(),
                exemplars: Vec::new(),
                histograms: Vec::new(),
            })
            .collect(),
    };
    request.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::STALE_NAN;

    fn batch() -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", "api")]).unwrap(),
            vec![Sample::new(1000, 1.0), Sample::new(2000, STALE_NAN)],
        );
        batch
    }

    #[test]
    fn metadata_round_trips() {
        let metadata = vec![MetricMetadata {
            metric: "http_requests_total".into(),
            kind: "counter",
            help: "Requests.".into(),
            unit: String::new(),
        }];
        let body = encode_with_metadata(&batch(), &metadata);
        let decoded = decode(&body, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.metadata, metadata);
        assert_eq!(decoded.batch, batch());
    }

    #[test]
    fn round_trips_bit_exactly() {
        let decoded = decode(&encode(&batch()), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.batch, batch());
        assert!(decoded.batch.series[0].samples[1].is_stale());
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let body = encode(&batch());
        let tight = DecodeLimits {
            max_body_bytes: 4,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode(&body, &tight),
            Err(DecodeError::BodyTooLarge { .. })
        ));
        let small = DecodeLimits {
            max_decompressed_bytes: 4,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode(&body, &small),
            Err(DecodeError::DecompressedTooLarge { .. })
        ));
        assert!(decode(b"not snappy at all", &DecodeLimits::default()).is_err());
        let garbage = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            decode(&garbage, &DecodeLimits::default()),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn a_series_with_a_duplicate_label_is_left_out_alone() {
        let request = WriteRequest {
            metadata: Vec::new(),
            timeseries: vec![
                TimeSeries {
                    labels: vec![
                        Label {
                            name: "a".into(),
                            value: "1".into(),
                        },
                        Label {
                            name: "a".into(),
                            value: "2".into(),
                        },
                    ],
                    samples: vec![ProtoSample {
                        value: 1.0,
                        timestamp: 1,
                    }],
                    exemplars: vec![],
                    histograms: vec![],
                },
                TimeSeries {
                    labels: vec![Label {
                        name: "b".into(),
                        value: "1".into(),
                    }],
                    samples: vec![ProtoSample {
                        value: 1.0,
                        timestamp: 1,
                    }],
                    exemplars: vec![],
                    histograms: vec![vec![1, 2]],
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let decoded = decode(&body, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.batch.series.len(), 1);
        assert_eq!(decoded.invalid_series.len(), 1);
        assert!(decoded.invalid_series_samples > 0);
        assert_eq!(decoded.skipped_histograms, 1);
    }

    /// The decoding through prost's generated messages that [`decode`] replaced: the
    /// reference the hand-written walk must agree with.
    fn decode_with_prost(body: &[u8]) -> Result<Decoded, DecodeError> {
        let raw = decompress(body, &DecodeLimits::default())?;
        let request = WriteRequest::decode(raw.as_slice())
            .map_err(|error| DecodeError::Protobuf(error.to_string()))?;
        let mut decoded = Decoded {
            metadata: request
                .metadata
                .into_iter()
                .filter(|entry| !entry.metric_family_name.is_empty())
                .map(MetricMetadata::from_proto)
                .collect(),
            ..Decoded::default()
        };
        for series in request.timeseries {
            decoded.skipped_histograms += series.histograms.len();
            decoded.skipped_exemplars += series.exemplars.len();
            if series.samples.is_empty() {
                continue;
            }
            let pairs = series.labels.into_iter().map(|l| (l.name, l.value));
            match Labels::from_pairs(pairs) {
                Ok(labels) => {
                    let samples = series
                        .samples
                        .iter()
                        .map(|s| Sample::new(s.timestamp, s.value))
                        .collect();
                    decoded.batch.push(labels, samples);
                }
                Err(error) => {
                    decoded.invalid_series.push(error.to_string());
                    decoded.invalid_series_samples += series.samples.len() as u64;
                }
            }
        }
        Ok(decoded)
    }

    /// Same answer, NaN payloads compared by bits.
    fn same(a: &Decoded, b: &Decoded) -> bool {
        let bits = |d: &Decoded| -> Vec<(String, Vec<(i64, u64)>)> {
            d.batch
                .series
                .iter()
                .map(|s| {
                    let samples = s
                        .samples
                        .iter()
                        .map(|x| (x.timestamp.0, x.value.to_bits()))
                        .collect();
                    (s.labels.to_string(), samples)
                })
                .collect()
        };
        bits(a) == bits(b)
            && a.invalid_series == b.invalid_series
            && a.invalid_series_samples == b.invalid_series_samples
            && a.skipped_histograms == b.skipped_histograms
            && a.skipped_exemplars == b.skipped_exemplars
            && a.metadata == b.metadata
    }

    fn request_strategy() -> impl proptest::strategy::Strategy<Value = WriteRequest> {
        use proptest::prelude::*;
        let label = (
            prop::sample::select(vec!["__name__", "job", "instance", "a", "", "ü"]),
            prop::sample::select(vec!["up", "x", "", "10.0.0.1:9100", "ünï"]),
        )
            .prop_map(|(name, value)| Label {
                name: name.into(),
                value: value.into(),
            });
        let sample = (any::<f64>(), any::<i64>())
            .prop_map(|(value, timestamp)| ProtoSample { value, timestamp });
        let series = (
            prop::collection::vec(label, 0..6),
            prop::collection::vec(sample, 0..4),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..2),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..2),
        )
            .prop_map(|(labels, samples, exemplars, histograms)| TimeSeries {
                labels,
                samples,
                exemplars,
                histograms,
            });
        let metadata =
            (0..8i32, prop::sample::select(vec!["", "m", "up"])).prop_map(|(kind, name)| {
                ProtoMetadata {
                    kind,
                    metric_family_name: name.into(),
                    help: "h".into(),
                    unit: String::new(),
                }
            });
        (
            prop::collection::vec(series, 0..6),
            prop::collection::vec(metadata, 0..3),
        )
            .prop_map(|(timeseries, metadata)| WriteRequest {
                timeseries,
                metadata,
            })
    }

    /// `decoded` with its known series given back their labels, through the identities of
    /// the labeled series `seen` (an earlier decode of the same series), in message order.
    fn with_known_resolved(decoded: &Decoded, seen: &[Labels]) -> Vec<(Labels, Vec<Sample>)> {
        let by_identity: std::collections::HashMap<SeriesIdentity, &Labels> = seen
            .iter()
            .map(|labels| (labels.identity(), labels))
            .collect();
        let mut out: Vec<(usize, Labels, Vec<Sample>)> = Vec::new();
        for (known, range) in decoded.batch.known.iter().zip(&decoded.known_messages) {
            out.push((
                range.start,
                by_identity[&known.identity].clone(),
                known.samples.clone(),
            ));
        }
        out.sort_by_key(|(start, _, _)| *start);
        let mut labeled = decoded
            .batch
            .series
            .iter()
            .map(|series| (series.labels.clone(), series.samples.clone()));
        let mut all: Vec<(Labels, Vec<Sample>)> = labeled.by_ref().collect();
        all.extend(
            out.into_iter()
                .map(|(_, labels, samples)| (labels, samples)),
        );
        all
    }

    #[test]
    fn a_series_seen_before_is_sent_by_identity_and_decodes_again_on_demand() {
        let mut batch = WriteBatch::new();
        for job in ["api", "db", "web"] {
            batch.push(
                Labels::from_pairs([("__name__", "up"), ("job", job)]).unwrap(),
                vec![Sample::new(1000, 1.0)],
            );
        }
        let body = encode(&batch);
        let cache = KnownSeriesCache::new(1000);
        let limits = DecodeLimits::default();
        let first = decode_with_cache(&body, &limits, Some(&cache)).unwrap();
        assert_eq!(first.batch, batch, "new series are decoded in full");
        assert!(first.raw.is_empty());
        assert_eq!(cache.len(), 3);

        let second = decode_with_cache(&body, &limits, Some(&cache)).unwrap();
        assert!(second.batch.series.is_empty());
        let identities: Vec<SeriesIdentity> = second
            .batch
            .known
            .iter()
            .map(|known| known.identity)
            .collect();
        let expected: Vec<SeriesIdentity> = batch
            .series
            .iter()
            .map(|series| series.labels.identity())
            .collect();
        assert_eq!(identities, expected);
        assert!(second
            .batch
            .known
            .iter()
            .all(|known| known.samples == vec![Sample::new(1000, 1.0)]));

        // What a store did not hold comes back with its labels, in the order asked.
        let again = second.unresolved(&[2, 0]).unwrap();
        assert_eq!(again.batch.series.len(), 2);
        assert_eq!(again.batch.series[0], batch.series[2]);
        assert_eq!(again.batch.series[1], batch.series[0]);
        assert!(again.batch.known.is_empty());
        assert!(second.unresolved(&[3]).is_err());

        // Without a cache nothing is sent by identity.
        assert_eq!(decode(&body, &limits).unwrap().batch, batch);
    }

    #[test]
    fn labels_that_do_not_come_first_and_together_are_always_decoded_in_full() {
        // A TimeSeries with its sample between two labels, written by hand.
        let label = |name: &str, value: &str| {
            Label {
                name: name.into(),
                value: value.into(),
            }
            .encode_to_vec()
        };
        let field = |number: u8, bytes: &[u8]| {
            let mut out = vec![(number << 3) | LEN, bytes.len() as u8];
            out.extend_from_slice(bytes);
            out
        };
        let sample = ProtoSample {
            value: 2.0,
            timestamp: 5,
        }
        .encode_to_vec();
        let mut series = field(1, &label("__name__", "up"));
        series.extend(field(2, &sample));
        series.extend(field(1, &label("job", "api")));
        let body = crate::compress_snappy_block(&field(1, &series));
        let cache = KnownSeriesCache::new(1000);
        for _ in 0..3 {
            let decoded = decode_with_cache(&body, &DecodeLimits::default(), Some(&cache)).unwrap();
            assert!(decoded.batch.known.is_empty());
            assert_eq!(decoded.batch.series.len(), 1);
            assert_eq!(
                decoded.batch.series[0].labels,
                Labels::from_pairs([("__name__", "up"), ("job", "api")]).unwrap()
            );
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_generation_starts_again() {
        let cache = KnownSeriesCache::new(1);
        let limits = DecodeLimits::default();
        for round in 0..3 {
            let mut batch = WriteBatch::new();
            for index in 0..200 {
                batch.push(
                    Labels::from_pairs([("__name__", "up"), ("i", &*format!("{index}"))]).unwrap(),
                    vec![Sample::new(round, 1.0)],
                );
            }
            let decoded = decode_with_cache(&encode(&batch), &limits, Some(&cache)).unwrap();
            assert_eq!(
                decoded.batch.series.len() + decoded.batch.known.len(),
                200,
                "every series is written, by labels or by identity"
            );
            // One series per shard at most, in each of two generations.
            assert!(cache.len() <= 2 * CACHE_SHARDS, "{}", cache.len());
        }
    }

    proptest::proptest! {
        #[test]
        fn the_hand_written_walk_agrees_with_prost(request in request_strategy()) {
            let body = crate::compress_snappy_block(&request.encode_to_vec());
            let walked = decode(&body, &DecodeLimits::default()).unwrap();
            let reference = decode_with_prost(&body).unwrap();
            proptest::prop_assert!(same(&walked, &reference), "{walked:?} != {reference:?}");
        }

        #[test]
        fn on_arbitrary_protobuf_bytes_both_decoders_agree_when_both_accept(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let body = crate::compress_snappy_block(&bytes);
            if let (Ok(walked), Ok(reference)) = (decode(&body, &DecodeLimits::default()), decode_with_prost(&body)) {
                proptest::prop_assert!(same(&walked, &reference));
            }
        }

        #[test]
        fn decoding_with_the_cache_gives_the_same_series(request in request_strategy()) {
            let body = crate::compress_snappy_block(&request.encode_to_vec());
            let limits = DecodeLimits::default();
            let plain = decode(&body, &limits).unwrap();
            let cache = KnownSeriesCache::new(1000);
            let first = decode_with_cache(&body, &limits, Some(&cache)).unwrap();
            let second = decode_with_cache(&body, &limits, Some(&cache)).unwrap();
            let seen: Vec<Labels> = first.batch.series.iter().map(|s| s.labels.clone()).collect();
            let expected: Vec<(Labels, Vec<Sample>)> = plain
                .batch
                .series
                .iter()
                .map(|series| (series.labels.clone(), series.samples.clone()))
                .collect();
            let bits = |all: Vec<(Labels, Vec<Sample>)>| -> Vec<(String, Vec<(i64, u64)>)> {
                let mut all: Vec<_> = all
                    .into_iter()
                    .map(|(labels, samples)| {
                        (labels.to_string(), samples.iter().map(|x| (x.timestamp.0, x.value.to_bits())).collect())
                    })
                    .collect();
                all.sort();
                all
            };
            proptest::prop_assert_eq!(bits(with_known_resolved(&first, &seen)), bits(expected.clone()));
            proptest::prop_assert_eq!(bits(with_known_resolved(&second, &seen)), bits(expected));
            proptest::prop_assert_eq!(&second.invalid_series, &plain.invalid_series);
            let all: Vec<usize> = (0..second.batch.known.len()).collect();
            let again = second.unresolved(&all).unwrap();
            proptest::prop_assert_eq!(again.batch.series.len(), second.batch.known.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &DecodeLimits::default());
            let wrapped = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
            let _ = decode(&wrapped, &DecodeLimits::default());
        }
    }
}
