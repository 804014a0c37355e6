//! Prometheus remote write 2.0: a snappy-compressed (block format) protobuf
//! `io.prometheus.write.v2.Request`, every string interned once in a symbols table and
//! referenced by index.
//!
//! Field numbers are those of the 2.0 specification's message
//! (`prompb/io/prometheus/write/v2/types.proto`, spec 2.0-rc.3):
//!
//! | message | field | number |
//! | --- | --- | --- |
//! | `Request` | `repeated string symbols` | 4 (1 to 3 reserved, so a 1.0 body decodes as empty) |
//! | `Request` | `repeated TimeSeries timeseries` | 5 |
//! | `TimeSeries` | `repeated uint32 labels_refs` | 1 |
//! | `TimeSeries` | `repeated Sample samples` | 2 |
//! | `TimeSeries` | `repeated Histogram histograms` | 3 (counted only) |
//! | `TimeSeries` | `repeated Exemplar exemplars` | 4 (counted only) |
//! | `TimeSeries` | `Metadata metadata` | 5 |
//! | `TimeSeries` | `int64 created_timestamp` | 6 (rc drafts) |
//! | `Sample` | `double value`, `int64 timestamp` | 1, 2 |
//! | `Sample` | `int64 start_timestamp` | 3 (later drafts, replacing field 6 above) |
//! | `Metadata` | `MetricType type`, `uint32 help_ref`, `uint32 unit_ref` | 1, 3, 4 |
//!
//! Both places of the created (start) timestamp are read, neither is stored: Lookout has no
//! start-timestamp storage yet, and the spec leaves it to the receiver what to do with it
//! (Prometheus' optional zero-sample injection is a receiver feature, not a requirement).
//!
//! As in 1.0, a body that is not valid snappy or protobuf, exceeds a limit, or whose symbols
//! table does not start with the empty string is an error for the whole request. Inside a
//! valid request, a series with a reference outside the symbols table, an odd number of label
//! references or a label name twice is left out and reported in
//! [`Decoded::invalid_series`]; the rest is written. Metadata is reported once per distinct
//! (metric name, type, help, unit), keyed by the series' `__name__`.

use std::collections::HashSet;

use lookout_model::{Labels, ModelError, Sample};
use lookout_storage::WriteBatch;
use prost::Message;

use crate::remote_write::{
    check_series_count, decompress, metric_type_code, metric_type_name, DecodeError, Decoded,
    MetricMetadata,
};
use crate::DecodeLimits;

/// `io.prometheus.write.v2.Request`; only the fields Lookout reads.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// The strings every reference points into; the first is the empty string.
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    /// The series.
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

/// `io.prometheus.write.v2.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Label name and value references, in pairs, into [`Request::symbols`].
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
    /// Native histograms, kept only to count them.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub histograms: Vec<Vec<u8>>,
    /// Exemplars, kept only to count them.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub exemplars: Vec<Vec<u8>>,
    /// Type, help and unit of the series' metric.
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<ProtoMetadata>,
    /// When the counter started counting, in milliseconds; 0 when not set (rc drafts; later
    /// drafts moved it to [`ProtoSample::start_timestamp`]). Read, not stored.
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    /// The created (start) timestamp of this sample's counter, in milliseconds; 0 when not set.
    /// Read, not stored.
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoMetadata {
    /// `MetricType`: 0 unspecified, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram,
    /// 5 summary, 6 info, 7 stateset (the numbering of 1.0).
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// Help text, as a reference into [`Request::symbols`] (0: none).
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    /// Unit, as a reference into [`Request::symbols`] (0: none).
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// Why one series of a valid request is left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SeriesError {
    /// `labels_refs` does not hold whole name/value pairs.
    #[error("labels_refs has an odd length ({0})")]
    OddLabelRefs(usize),
    /// A reference past the end of the symbols table.
    #[error(
        "{field} reference {reference} is out of range: the symbols table has {symbols} entries"
    )]
    RefOutOfRange {
        field: &'static str,
        reference: u32,
        symbols: usize,
    },
    /// The labels are not a valid set.
    #[error(transparent)]
    Labels(#[from] ModelError),
}

/// The string `reference` points to.
fn symbol<'a>(
    symbols: &'a [String],
    reference: u32,
    field: &'static str,
) -> Result<&'a str, SeriesError> {
    usize::try_from(reference)
        .ok()
        .and_then(|index| symbols.get(index))
        .map(String::as_str)
        .ok_or(SeriesError::RefOutOfRange {
            field,
            reference,
            symbols: symbols.len(),
        })
}

/// The labels of a series, resolved through the symbols table.
fn resolve_labels(symbols: &[String], labels_refs: &[u32]) -> Result<Labels, SeriesError> {
    if !labels_refs.len().is_multiple_of(2) {
        return Err(SeriesError::OddLabelRefs(labels_refs.len()));
    }
    let pairs = labels_refs
        .chunks_exact(2)
        .map(|pair| {
            let name = symbol(symbols, pair[0], "label name")?;
            let value = symbol(symbols, pair[1], "label value")?;
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, SeriesError>>()?;
    Ok(Labels::from_pairs(pairs)?)
}

/// The metadata a series carries, `None` when it says nothing (type unspecified, no help, no
/// unit) or the series has no metric name.
fn resolve_metadata(
    symbols: &[String],
    labels: &Labels,
    metadata: Option<&ProtoMetadata>,
) -> Result<Option<MetricMetadata>, SeriesError> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let help = symbol(symbols, metadata.help_ref, "metadata help")?;
    let unit = symbol(symbols, metadata.unit_ref, "metadata unit")?;
    let says_nothing = metadata.kind == 0 && help.is_empty() && unit.is_empty();
    let Some(metric) = labels.metric_name().filter(|_| !says_nothing) else {
        return Ok(None);
    };
    Ok(Some(MetricMetadata {
        metric: metric.to_owned(),
        kind: metric_type_name(metadata.kind),
        help: help.to_owned(),
        unit: unit.to_owned(),
    }))
}

/// Decodes a remote write 2.0 body.
pub fn decode(body: &[u8], limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    let raw = decompress(body, limits)?;
    let request = Request::decode(raw.as_slice())
        .map_err(|error| DecodeError::Protobuf(error.to_string()))?;
    check_series_count(request.timeseries.len(), limits)?;
    let symbols = request.symbols;
    if let Some(first) = symbols.first().filter(|first| !first.is_empty()) {
        return Err(DecodeError::FirstSymbolNotEmpty {
            first: first.clone(),
        });
    }
    let mut decoded = Decoded::default();
    let mut metadata_seen = HashSet::new();
    for series in request.timeseries {
        decoded.skipped_histograms += series.histograms.len();
        decoded.skipped_exemplars += series.exemplars.len();
        let resolved = resolve_labels(&symbols, &series.labels_refs).and_then(|labels| {
            let metadata = resolve_metadata(&symbols, &labels, series.metadata.as_ref())?;
            Ok((labels, metadata))
        });
        let (labels, metadata) = match resolved {
            Ok(resolved) => resolved,
            Err(error) => {
                decoded.invalid_series.push(error.to_string());
                decoded.invalid_series_samples += series.samples.len() as u64;
                continue;
            }
        };
        if let Some(metadata) = metadata {
            if metadata_seen.insert(metadata.clone()) {
                decoded.metadata.push(metadata);
            }
        }
        if series.samples.is_empty() {
            continue;
        }
        let samples = series
            .samples
            .iter()
            .map(|sample| Sample::new(sample.timestamp, sample.value))
            .collect();
        decoded.batch.push(labels, samples);
    }
    Ok(decoded)
}

/// Interns strings for [`encode`]: the empty string is symbol 0.
struct SymbolTable {
    symbols: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl SymbolTable {
    fn new() -> SymbolTable {
        SymbolTable {
            symbols: vec![String::new()],
            index: [(String::new(), 0)].into_iter().collect(),
        }
    }

    fn reference(&mut self, text: &str) -> u32 {
        if let Some(&reference) = self.index.get(text) {
            return reference;
        }
        let reference =
            u32::try_from(self.symbols.len()).expect("more than u32::MAX symbols in one request");
        self.symbols.push(text.to_owned());
        self.index.insert(text.to_owned(), reference);
        reference
    }
}

/// Encodes a batch as a remote write 2.0 body (for tests and for forwarding); each series
/// carries the entry of `metadata` named like its `__name__`, if any.
pub fn encode(batch: &WriteBatch, metadata: &[MetricMetadata]) -> Vec<u8> {
    let mut table = SymbolTable::new();
    let timeseries = batch
        .series
        .iter()
        .map(|series| {
            let labels_refs = series
                .labels
                .iter()
                .flat_map(|label| [table.reference(&label.name), table.reference(&label.value)])
                .collect();
            let metadata = series.labels.metric_name().and_then(|name| {
                metadata
                    .iter()
                    .find(|entry| entry.metric == name)
                    .map(|entry| ProtoMetadata {
                        kind: metric_type_code(entry.kind),
                        help_ref: table.reference(&entry.help),
                        unit_ref: table.reference(&entry.unit),
                    })
            });
            TimeSeries {
                labels_refs,
                samples: series
                    .samples
                    .iter()
                    .map(|sample| ProtoSample {
                        value: sample.value,
                        timestamp: sample.timestamp.0,
                        start_timestamp: 0,
                    })
                    .collect(),
                histograms: Vec::new(),
                exemplars: Vec::new(),
                metadata,
                created_timestamp: 0,
            }
        })
        .collect();
    encode_request(&Request {
        symbols: table.symbols,
        timeseries,
    })
}

/// Serializes and snappy-compresses a request as it is (for tests that need a malformed one).
pub fn encode_request(request: &Request) -> Vec<u8> {
    crate::compress_snappy_block(&request.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::STALE_NAN;
    use proptest::prelude::*;

    fn batch() -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", "api")]).unwrap(),
            vec![Sample::new(1000, 1.0), Sample::new(2000, STALE_NAN)],
        );
        batch.push(
            Labels::from_pairs([("__name__", "http_requests_total"), ("job", "api")]).unwrap(),
            vec![Sample::new(1000, 7.0)],
        );
        batch
    }

    fn counter_metadata() -> MetricMetadata {
        MetricMetadata {
            metric: "http_requests_total".into(),
            kind: "counter",
            help: "Requests.".into(),
            unit: String::new(),
        }
    }

    /// A request over a fixed symbols table, one series per `labels_refs`, one sample each.
    fn request(symbols: &[&str], series: Vec<Vec<u32>>) -> Request {
        Request {
            symbols: symbols.iter().map(|symbol| symbol.to_string()).collect(),
            timeseries: series
                .into_iter()
                .map(|labels_refs| TimeSeries {
                    labels_refs,
                    samples: vec![ProtoSample {
                        value: 1.0,
                        timestamp: 1,
                        start_timestamp: 0,
                    }],
                    histograms: vec![],
                    exemplars: vec![],
                    metadata: None,
                    created_timestamp: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_bit_exactly_with_interned_symbols() {
        let body = encode(&batch(), &[counter_metadata()]);
        let decoded = decode(&body, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.batch, batch());
        assert!(decoded.batch.series[0].samples[1].is_stale());
        assert_eq!(decoded.metadata, vec![counter_metadata()]);
        assert!(decoded.invalid_series.is_empty());

        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = Request::decode(raw.as_slice()).unwrap();
        assert_eq!(request.symbols[0], "");
        let jobs = request.symbols.iter().filter(|symbol| *symbol == "job");
        assert_eq!(jobs.count(), 1, "each string is in the table once");
    }

    #[test]
    fn metadata_is_reported_once_per_metric_and_empty_metadata_not_at_all() {
        let mut request = request(
            &["", "__name__", "up", "job", "a", "b", "Help."],
            vec![vec![1, 2, 3, 4], vec![1, 2, 3, 5], vec![3, 4]],
        );
        let gauge = ProtoMetadata {
            kind: 2,
            help_ref: 6,
            unit_ref: 0,
        };
        request.timeseries[0].metadata = Some(gauge.clone());
        request.timeseries[1].metadata = Some(gauge.clone());
        // No metric name: nothing to key the metadata by.
        request.timeseries[2].metadata = Some(gauge);
        let decoded = decode(&encode_request(&request), &DecodeLimits::default()).unwrap();
        assert_eq!(
            decoded.metadata,
            vec![MetricMetadata {
                metric: "up".into(),
                kind: "gauge",
                help: "Help.".into(),
                unit: String::new(),
            }]
        );
        assert_eq!(decoded.batch.series.len(), 3);

        let mut silent = request_with_one_series();
        silent.timeseries[0].metadata = Some(ProtoMetadata {
            kind: 0,
            help_ref: 0,
            unit_ref: 0,
        });
        let decoded = decode(&encode_request(&silent), &DecodeLimits::default()).unwrap();
        assert!(decoded.metadata.is_empty());
    }

    fn request_with_one_series() -> Request {
        request(&["", "__name__", "up"], vec![vec![1, 2]])
    }

    #[test]
    fn a_series_with_a_bad_reference_is_left_out_alone() {
        let mut bad = request(
            &["", "__name__", "up", "job", "api"],
            vec![
                vec![1, 2, 3, 4],  // fine
                vec![1, 2, 3, 99], // value out of range
                vec![1, 2, 3],     // odd
                vec![1, 2, 1, 4],  // __name__ twice
                vec![1, 2],        // fine labels, bad help reference
            ],
        );
        bad.timeseries[4].metadata = Some(ProtoMetadata {
            kind: 1,
            help_ref: 5,
            unit_ref: 0,
        });
        let decoded = decode(&encode_request(&bad), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.batch.series.len(), 1);
        assert_eq!(
            decoded.batch.series[0].labels,
            Labels::from_pairs([("__name__", "up"), ("job", "api")]).unwrap()
        );
        assert_eq!(
            decoded.invalid_series,
            vec![
                "label value reference 99 is out of range: the symbols table has 5 entries"
                    .to_owned(),
                "labels_refs has an odd length (3)".to_owned(),
                ModelError::DuplicateLabelName {
                    name: "__name__".into()
                }
                .to_string(),
                "metadata help reference 5 is out of range: the symbols table has 5 entries"
                    .to_owned(),
            ]
        );
        assert!(decoded.metadata.is_empty());
    }

    #[test]
    fn a_first_symbol_that_is_not_empty_refuses_the_request() {
        let bad = request(&["__name__", "up"], vec![vec![0, 1]]);
        assert_eq!(
            decode(&encode_request(&bad), &DecodeLimits::default()),
            Err(DecodeError::FirstSymbolNotEmpty {
                first: "__name__".into()
            })
        );
        let empty = Request {
            symbols: vec![],
            timeseries: vec![],
        };
        let decoded = decode(&encode_request(&empty), &DecodeLimits::default()).unwrap();
        assert!(decoded.batch.series.is_empty());
    }

    #[test]
    fn histograms_and_exemplars_are_counted_created_timestamps_ignored() {
        let mut request = request_with_one_series();
        request.timeseries[0].exemplars = vec![vec![0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]];
        request.timeseries[0].created_timestamp = 500;
        request.timeseries[0].samples[0].start_timestamp = 500;
        let mut histogram_only = request.timeseries[0].clone();
        histogram_only.samples.clear();
        histogram_only.histograms = vec![vec![0x08, 0x01], vec![0x08, 0x02]];
        request.timeseries.push(histogram_only);
        let decoded = decode(&encode_request(&request), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.skipped_histograms, 2);
        assert_eq!(decoded.skipped_exemplars, 2);
        assert_eq!(decoded.batch.series.len(), 1);
        assert_eq!(
            decoded.batch.series[0].samples,
            vec![Sample::new(1, 1.0)],
            "no sample is made up at the created timestamp"
        );
    }

    #[test]
    fn a_remote_write_1_body_decodes_as_an_empty_request() {
        let body = crate::remote_write::encode(&batch());
        let decoded = decode(&body, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded, Decoded::default());
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let body = encode(&batch(), &[]);
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
        let one_series = DecodeLimits {
            max_series_per_request: 1,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode(&body, &one_series),
            Err(DecodeError::TooManySeries { count: 2, limit: 1 })
        );
        assert!(matches!(
            decode(b"not snappy at all", &DecodeLimits::default()),
            Err(DecodeError::Snappy(_))
        ));
        let garbage = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            decode(&garbage, &DecodeLimits::default()),
            Err(DecodeError::Protobuf(_))
        ));
    }

    fn arbitrary_batch() -> impl Strategy<Value = WriteBatch> {
        let series = (
            "[a-z_]{1,8}",
            proptest::collection::btree_map("[a-z]{1,4}", "[ -~]{1,6}", 0..4),
            proptest::collection::vec((any::<i64>(), any::<f64>()), 1..4),
        );
        proptest::collection::vec(series, 0..6).prop_map(|all| {
            let mut batch = WriteBatch::new();
            for (name, labels, samples) in all {
                let labels = Labels::from_pairs(
                    labels
                        .into_iter()
                        .chain([("__name__".to_owned(), name)])
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
                .unwrap();
                let samples = samples
                    .into_iter()
                    .map(|(timestamp, value)| Sample::new(timestamp, value))
                    .collect();
                batch.push(labels, samples);
            }
            batch
        })
    }

    proptest! {
        #[test]
        fn arbitrary_batches_round_trip(batch in arbitrary_batch()) {
            let decoded = decode(&encode(&batch, &[]), &DecodeLimits::default()).unwrap();
            // prost leaves out a proto3 double equal to its default, and -0.0 == 0.0: our
            // encoder sends -0.0 as 0.0 (a Go sender keeps the sign; decoding keeps it too).
            let bits = |batch: &WriteBatch| -> Vec<(Labels, Vec<(i64, u64)>)> {
                batch
                    .series
                    .iter()
                    .map(|series| {
                        let samples = series
                            .samples
                            .iter()
                            .map(|sample| {
                                let value = if sample.value == 0.0 { 0.0 } else { sample.value };
                                (sample.timestamp.0, value.to_bits())
                            })
                            .collect();
                        (series.labels.clone(), samples)
                    })
                    .collect()
            };
            prop_assert_eq!(bits(&decoded.batch), bits(&batch));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &DecodeLimits::default());
            let wrapped = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
            let _ = decode(&wrapped, &DecodeLimits::default());
        }
    }
}
