//! Request bodies of the two exporters, built from a [`WriteBatch`] when it is queued. Both
//! are uncompressed here and concatenate cleanly, so the exporter can send several queued
//! records in one request: TAB-terminated JSON objects for the relay, and protobuf
//! `WriteRequest` messages (concatenating two messages appends their repeated `timeseries`).

use std::fmt::Write as _;

use lookout_gateway::lookout::normalise::{norm_name, norm_tag_key, norm_tag_value};
use lookout_model::{is_stale_nan, METRIC_NAME_LABEL};
use lookout_storage::WriteBatch;

/// Samples the relay format cannot carry: Prometheus stale markers (a receiver would store
/// a plain NaN).
pub const STALE_MARKER: &str = "stale_marker";
/// Samples the relay format cannot carry: NaN or ±Inf values of metrics whose name must be
/// sent whole (SOFALookout's reader ignores non-numbers there).
pub const NON_FINITE_VALUE: &str = "non_finite_value";
/// Series without a metric name.
pub const NO_METRIC_NAME: &str = "no_metric_name";

/// One batch encoded for one exporter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// The uncompressed body part.
    pub payload: Vec<u8>,
    /// Samples in it.
    pub samples: u64,
    /// Samples left out, by reason.
    pub dropped: Vec<(&'static str, u64)>,
}

impl Encoded {
    fn drop_samples(&mut self, reason: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(known, _)| *known == reason) {
            Some((_, total)) => *total += count,
            None => self.dropped.push((reason, count)),
        }
    }
}

/// How the relay writes a metric name: `{"<prefix>":{"<rest>":v}}` split at the first `.`
/// (spec §5.2) when the receiver's reader gives back exactly the same name from that
/// (`norm_name(prefix + "." + rest)`), else the whole name as a top-level number
/// `{"<name>":v}`, which SOFALookout's reader takes as it is (spec §3.1). SOFALookout's own
/// relay skipped names without a dot; here nothing is lost.
fn split_name(name: &str) -> Option<(&str, &str)> {
    let dot = name.find('.')?;
    (dot >= 1 && norm_name(name) == name).then(|| (&name[..dot], &name[dot + 1..]))
}

fn json_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a string serialises"));
}

/// Java's spelling of a double, which SOFALookout's reader (and Lookout's) understand,
/// including the bare `NaN` / `Infinity` tokens.
fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// SOFALookout relay body (spec §5.2): for every sample
/// `{"time":<ms>,"tags":{...},"<prefix>":{"<rest>":<value>}}` followed by a TAB. Tags are
/// every label but `__name__`; the receiver normalises tag keys and values (spec §3.1), so a
/// label outside that character set arrives normalised, and labels named `priority` or
/// `_type_` are dropped by it.
pub fn relay(batch: &WriteBatch) -> Encoded {
    let mut encoded = Encoded::default();
    let mut out = String::new();
    for series in &batch.series {
        let Some(name) = series.labels.metric_name() else {
            encoded.drop_samples(NO_METRIC_NAME, series.samples.len() as u64);
            continue;
        };
        let mut tags = String::from("{");
        for label in series.labels.iter() {
            if label.name == METRIC_NAME_LABEL {
                continue;
            }
            if tags.len() > 1 {
                tags.push(',');
            }
            json_string(&mut tags, &label.name);
            tags.push(':');
            json_string(&mut tags, &label.value);
        }
        tags.push('}');
        let split = split_name(name);
        for sample in &series.samples {
            if is_stale_nan(sample.value) {
                encoded.drop_samples(STALE_MARKER, 1);
                continue;
            }
            if split.is_none() && !sample.value.is_finite() {
                encoded.drop_samples(NON_FINITE_VALUE, 1);
                continue;
            }
            let _ = write!(
                out,
                "{{\"time\":{},\"tags\":{tags},",
                sample.timestamp.millis()
            );
            match split {
                Some((prefix, rest)) => {
                    json_string(&mut out, prefix);
                    out.push_str(":{");
                    json_string(&mut out, rest);
                    out.push(':');
                    push_value(&mut out, sample.value);
                    out.push('}');
                }
                None => {
                    json_string(&mut out, name);
                    out.push(':');
                    push_value(&mut out, sample.value);
                }
            }
            out.push_str("}\t");
            encoded.samples += 1;
        }
    }
    encoded.payload = out.into_bytes();
    encoded
}

/// Whether the receiver's reader keeps a tag as sent (else it arrives normalised).
pub fn relay_keeps_tag(name: &str, value: &str) -> bool {
    norm_tag_key(name) == name && norm_tag_value(value) == value
}

/// Prometheus remote write 1.0 `WriteRequest`, uncompressed. Labels go as they are (sorted,
/// `__name__` among them); stale markers keep their bits.
pub fn remote_write(batch: &WriteBatch) -> Encoded {
    Encoded {
        samples: batch.sample_count() as u64,
        payload: lookout_gateway::remote_write::encode_request(batch, &[]),
        ..Encoded::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_gateway::lookout::{sdk, Enrichment, Limits};
    use lookout_gateway::remote_write::WriteRequest;
    use lookout_model::{Labels, Sample, TimestampMs, STALE_NAN};
    use prost::Message;

    fn batch(series: &[(&[(&str, &str)], f64)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (labels, value) in series {
            batch.push(
                Labels::from_pairs(labels.iter().copied()).unwrap(),
                vec![Sample {
                    timestamp: TimestampMs(1_559_199_870_000),
                    value: *value,
                }],
            );
        }
        batch
    }

    #[test]
    fn relay_matches_the_spec_example() {
        let encoded = relay(&batch(&[(
            &[
                ("__name__", "http_requests_total.count"),
                ("app", "demo"),
                ("host", "demo-host"),
                ("ip", "10.0.0.1"),
                ("service", "orderService"),
            ],
            12.0,
        )]));
        assert_eq!(
            String::from_utf8(encoded.payload).unwrap(),
            "{\"time\":1559199870000,\"tags\":{\"app\":\"demo\",\"host\":\"demo-host\",\"ip\":\"10.0.0.1\",\"service\":\"orderService\"},\"http_requests_total\":{\"count\":12.0}}\t"
        );
        assert_eq!(encoded.samples, 1);
    }

    /// What the receiver's reader makes of the relay body is the batch sent, names exactly.
    #[test]
    fn the_receivers_reader_gives_back_the_names() {
        let sent = batch(&[
            (&[("__name__", "rpc.latency.max"), ("app", "a")], 1.5),
            (&[("__name__", "up"), ("job", "j")], 1.0),
            (&[("__name__", "sys.cpu-user"), ("host", "h")], 2.0),
            (&[("__name__", "_hidden"), ("host", "h")], 3.0),
            (&[("__name__", "nan.metric")], f64::NAN),
            (&[("__name__", "inf.metric")], f64::INFINITY),
            (&[("__name__", "whole_inf")], f64::NEG_INFINITY),
            (&[("__name__", "stale.m")], STALE_NAN),
        ]);
        let encoded = relay(&sent);
        assert_eq!(encoded.samples, 6);
        assert_eq!(
            encoded.dropped,
            vec![(NON_FINITE_VALUE, 1), (STALE_MARKER, 1)]
        );
        let decoded = sdk::decode(
            &encoded.payload,
            false,
            &Enrichment::default(),
            &Limits::default(),
        )
        .unwrap();
        let mut got: Vec<(String, String)> = decoded
            .batch
            .series
            .iter()
            .map(|series| {
                let value = series.samples[0].value;
                (series.labels.to_string(), format!("{value}"))
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("_hidden{host=\"h\"}".to_owned(), "3".to_owned()),
                ("inf.metric{}".to_owned(), "inf".to_owned()),
                ("nan.metric{}".to_owned(), "NaN".to_owned()),
                ("rpc.latency.max{app=\"a\"}".to_owned(), "1.5".to_owned()),
                ("sys.cpu-user{host=\"h\"}".to_owned(), "2".to_owned()),
                ("up{job=\"j\"}".to_owned(), "1".to_owned()),
            ]
        );
        assert!(decoded
            .batch
            .series
            .iter()
            .all(|series| series.samples[0].timestamp == TimestampMs(1_559_199_870_000)));
    }

    #[test]
    fn remote_write_round_trips_through_the_decoder() {
        let sent = batch(&[
            (&[("__name__", "up"), ("job", "j")], 1.0),
            (&[("__name__", "x"), ("a", "b c")], STALE_NAN),
        ]);
        let first = remote_write(&sent);
        assert_eq!(first.samples, 2);
        // Two queued records sent as one request: the concatenation is one valid message.
        let mut body = first.payload.clone();
        body.extend_from_slice(&remote_write(&batch(&[(&[("__name__", "y")], 2.0)])).payload);
        let decoded = WriteRequest::decode(body.as_slice()).unwrap();
        assert_eq!(decoded.timeseries.len(), 3);
        assert!(is_stale_nan(decoded.timeseries[1].samples[0].value));
        assert_eq!(decoded.timeseries[1].labels[1].value, "b c");
    }

    #[test]
    fn tags_the_receiver_normalises() {
        assert!(relay_keeps_tag("host", "a-b/c"));
        assert!(!relay_keeps_tag("host", "a b"));
        assert!(!relay_keeps_tag("_x", "v"));
    }
}
