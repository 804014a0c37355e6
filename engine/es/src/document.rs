//! SOFALookout's sample document (spec §5.1): `{"id", "tags": ["k=v", ...], "time", "value"}`.
//!
//! We write `time` as an RFC 3339 UTC string with milliseconds (SOFALookout truncates to
//! seconds; ES's default date format reads both) and add `vbits`, the hexadecimal bits of the
//! value, only when the value is not a finite JSON number (NaN payloads, ±Inf) or needs all
//! 17 significant digits (some servers re-render `_source` numbers with 16), so every value
//! round-trips exactly while ordinary documents keep SOFALookout's shape. We also add
//! `series`, the series' stable label hash as 16 hexadecimal digits: the key aggregation
//! pushdown groups by (SOFALookout's documents have no single field identifying a series;
//! documents without it are read sample by sample). Document ids are derived from the same
//! hash and the timestamp, which makes a repeated write idempotent.

use lookout_model::time::{civil_from_days, parse_iso8601};
use lookout_model::{Label, LabelLimits, Labels, Sample, METRIC_NAME_LABEL};
use serde_json::{json, Value};

use crate::query::{ID_FIELD, SERIES_FIELD, TAGS_FIELD, TIME_FIELD};

/// Field with the value's bits, for values JSON cannot carry.
pub(crate) const VBITS_FIELD: &str = "vbits";
/// Field with the value.
pub(crate) const VALUE_FIELD: &str = "value";

/// Lucene refuses terms longer than this many bytes.
const MAX_TERM_BYTES: usize = 32_766;

/// Earliest and latest timestamps a document can carry (years 0000 to 9999).
const MIN_TIME_MS: i64 = -62_167_219_200_000;
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Why a series cannot be stored as documents.
pub(crate) fn check_series(labels: &Labels) -> Result<(), String> {
    labels
        .validate(&LabelLimits::default())
        .map_err(|error| error.to_string())?;
    let Some(name) = labels.metric_name() else {
        return Err("a series needs a metric name (__name__) to be stored in the id field".into());
    };
    if name.len() > MAX_TERM_BYTES {
        return Err(format!("metric name longer than {MAX_TERM_BYTES} bytes"));
    }
    for label in labels.iter() {
        if label.name == METRIC_NAME_LABEL {
            continue;
        }
        if label.name.contains('=') {
            return Err(format!(
                "label name {:?} contains '=', which the tags field uses as separator",
                label.name
            ));
        }
        if label.name.len() + 1 + label.value.len() > MAX_TERM_BYTES {
            return Err(format!(
                "label {} is longer than {MAX_TERM_BYTES} bytes as a tag",
                label.name
            ));
        }
    }
    Ok(())
}

/// Whether the timestamp fits a document.
pub(crate) fn time_in_bounds(timestamp_ms: i64) -> bool {
    (MIN_TIME_MS..=MAX_TIME_MS).contains(&timestamp_ms)
}

/// The series' `id` and `tags` (tags sorted, as the labels are).
pub(crate) fn id_and_tags(labels: &Labels) -> (String, Vec<String>) {
    let id = labels.metric_name().unwrap_or_default().to_owned();
    let tags = labels
        .iter()
        .filter(|label| label.name != METRIC_NAME_LABEL)
        .map(|label| format!("{}={}", label.name, label.value))
        .collect();
    (id, tags)
}

/// The document id of one sample: series hash and timestamp.
pub(crate) fn document_id(labels: &Labels, timestamp_ms: i64) -> String {
    format!("{}{:016x}", series_key(labels), timestamp_ms as u64)
}

/// The `series` field of a series' documents: its stable label hash. Two series whose
/// hashes collide would already overwrite each other's documents (same document ids), so
/// grouping by it adds no failure mode of its own.
pub(crate) fn series_key(labels: &Labels) -> String {
    format!("{:016x}", labels.stable_hash())
}

/// The source document of one sample of the series with key `series` (see [`series_key`]).
pub(crate) fn source(id: &str, tags: &[String], series: &str, sample: &Sample) -> Value {
    let value = sample.value;
    let mut document = json!({
        ID_FIELD: id,
        TIME_FIELD: format_time(sample.timestamp.0),
        SERIES_FIELD: series,
    });
    if !tags.is_empty() {
        document[TAGS_FIELD] = json!(tags);
    }
    if value.is_finite() {
        document[VALUE_FIELD] = json!(value);
    } else {
        document[VALUE_FIELD] = Value::Null;
    }
    if needs_bits(value) {
        document[VBITS_FIELD] = json!(format!("{:016x}", value.to_bits()));
    }
    document
}

/// Whether the value cannot be carried exactly by a JSON number of at most 16 significant
/// digits.
fn needs_bits(value: f64) -> bool {
    if !value.is_finite() {
        return true;
    }
    let sixteen_digits = format!("{value:.15e}");
    sixteen_digits.parse::<f64>().map(f64::to_bits) != Ok(value.to_bits())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn format_time(timestamp_ms: i64) -> String {
    let days = timestamp_ms.div_euclid(86_400_000);
    let in_day = timestamp_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let hours = in_day / 3_600_000;
    let minutes = in_day / 60_000 % 60;
    let seconds = in_day / 1000 % 60;
    let millis = in_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

/// One hit decoded: its series labels and sample. `Err` names what is wrong.
pub(crate) fn decode(source: &Value) -> Result<(Labels, Sample), String> {
    let id = source
        .get(ID_FIELD)
        .and_then(Value::as_str)
        .ok_or("no string id")?;
    let mut labels = vec![Label::new(METRIC_NAME_LABEL, id)];
    match source.get(TAGS_FIELD) {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) => {
            for tag in tags {
                let tag = tag.as_str().ok_or("a tag is not a string")?;
                labels.extend(split_tag(tag));
            }
        }
        Some(Value::String(tag)) => labels.extend(split_tag(tag)),
        Some(_) => return Err("tags is neither a list nor a string".into()),
    }
    let labels = Labels::from_vec(labels).map_err(|error| error.to_string())?;
    let time = source.get(TIME_FIELD).ok_or("no time")?;
    let timestamp = parse_time(time).ok_or_else(|| format!("unreadable time {time}"))?;
    let value = match source.get(VBITS_FIELD).and_then(Value::as_str) {
        Some(bits) => f64::from_bits(
            u64::from_str_radix(bits, 16).map_err(|_| format!("unreadable vbits {bits:?}"))?,
        ),
        None => match source.get(VALUE_FIELD) {
            Some(Value::Number(number)) => number.as_f64().ok_or("unreadable value")?,
            Some(Value::String(text)) => text
                .parse()
                .map_err(|_| format!("unreadable value {text:?}"))?,
            _ => return Err("no value".into()),
        },
    };
    Ok((labels, Sample::new(timestamp, value)))
}

/// `name=value` → a label; tags without `=` or with an empty value carry no label.
pub(crate) fn split_tag(tag: &str) -> Option<Label> {
    let (name, value) = tag.split_once('=')?;
    (!name.is_empty() && !value.is_empty()).then(|| Label::new(name, value))
}

fn parse_time(time: &Value) -> Option<i64> {
    match time {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.parse::<i64>().ok().or_else(|| parse_iso8601(text)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sofalookout_documents_decode() {
        let source = json!({"id":"http_requests_total.count","tags":["app=demo","host=demo-host"],
            "time":"2019-05-30T15:04:30+08:00","value":12.0});
        let (labels, sample) = decode(&source).unwrap();
        assert_eq!(labels.get("app"), Some("demo"));
        assert_eq!(labels.metric_name(), Some("http_requests_total.count"));
        assert_eq!(sample, Sample::new(1_559_199_870_000, 12.0));
    }

    #[test]
    fn written_documents_round_trip() {
        let labels = Labels::from_pairs([("__name__", "x"), ("a", "b=c")]).unwrap();
        let (id, tags) = id_and_tags(&labels);
        assert!(!needs_bits(0.4) && !needs_bits(-0.0) && !needs_bits(12.0));
        assert!(needs_bits(21.937789571673594) && needs_bits(f64::NAN));
        for value in [1.5, f64::NAN, f64::NEG_INFINITY, -0.0, 21.937789571673594] {
            let sample = Sample::new(1_559_199_870_123, value);
            let document = source(&id, &tags, &series_key(&labels), &sample);
            let text = serde_json::to_string(&document).unwrap();
            let (decoded_labels, decoded) = decode(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(decoded_labels, labels);
            assert_eq!(decoded.timestamp, sample.timestamp);
            assert_eq!(decoded.value.to_bits(), value.to_bits());
        }
        assert_eq!(format_time(1_559_199_870_123), "2019-05-30T07:04:30.123Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
    }
}
