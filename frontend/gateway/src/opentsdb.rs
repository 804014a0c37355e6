//! OpenTSDB's put protocols as pure decoders (spec §3.6, with OpenTSDB's own rules where
//! SOFALookout's are bugs, §13.5): the JSON body of HTTP `/api/put` (one data point object or
//! an array of them) and the telnet `put <metric> <timestamp> <value> <k=v>...` line.
//!
//! A data point becomes one sample named by its metric (not normalised), its tags normalised
//! with `norm_tag_key` / `norm_tag_value` and completed by the request's [`Enrichment`]
//! (`ip`, then the `app`/`step` headers). Timestamps follow OpenTSDB: up to 10 digits are
//! seconds, more (up to 13) milliseconds; a fraction of a second is kept to the millisecond.
//! When the extra tags hold a `step`, timestamps are floored to it and `step` is consumed
//! (§4.4); without one they are kept as sent.
//!
//! A bad data point is not a request error: it is skipped, counted by [`SkipReason`] and
//! reported with OpenTSDB's message in [`PutDecoded::errors`] (what `?details` returns).

use serde_json::Value;

use crate::lookout::normalise::{norm_tag_key, norm_tag_value};
use crate::lookout::{
    align, read_body, take_alignment_step, Collector, Decoded, Enrichment, Limits, LookoutError,
    SkipReason, Tags,
};

/// Largest timestamp read as seconds (10 digits).
const MAX_SECONDS: i64 = 9_999_999_999;
/// Largest timestamp read as milliseconds (13 digits).
const MAX_MILLISECONDS: i64 = 9_999_999_999_999;

/// One data point, parsed but not yet normalised or enriched.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    /// The metric name as sent.
    pub metric: String,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The value.
    pub value: f64,
    /// Tags as sent.
    pub tags: Vec<(String, String)>,
}

/// A data point of a JSON body that was not stored, as `?details` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointError {
    /// The data point as sent.
    pub datapoint: Value,
    /// OpenTSDB's explanation.
    pub error: String,
}

/// A decoded JSON put body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutDecoded {
    /// The samples and the skip counts.
    pub decoded: Decoded,
    /// Every data point skipped, in body order.
    pub errors: Vec<PointError>,
}

/// Decodes the body of `POST /api/put`: a data point object or an array of them.
/// `enrichment.extra_tags` are the request's `app`, `step` and `ip` headers, if any.
pub fn decode_json(
    body: &[u8],
    enrichment: &Enrichment,
    limits: &Limits,
) -> Result<PutDecoded, LookoutError> {
    let bytes = read_body(body, false, &limits.decode)?;
    let document: Value = serde_json::from_slice(&bytes).map_err(|error| LookoutError::Json {
        reason: error.to_string(),
    })?;
    let points = match document {
        Value::Array(points) => points,
        single => vec![single],
    };
    let mut writer = PointWriter::new(enrichment, limits);
    let mut errors = Vec::new();
    for point in points {
        let parsed = json_point(&point);
        let outcome = match parsed {
            Ok(parsed) => writer.add(parsed)?,
            Err((reason, error)) => {
                writer.collector.skip(reason, || error.clone());
                Err(error)
            }
        };
        if let Err(error) = outcome {
            errors.push(PointError {
                datapoint: point,
                error,
            });
        }
    }
    Ok(PutDecoded {
        decoded: writer.finish(),
        errors,
    })
}

/// Turns data points into samples of one batch: normalised tags, enrichment, alignment.
#[derive(Debug)]
pub struct PointWriter<'a> {
    collector: Collector<'a>,
    enrichment: Enrichment,
    step_ms: Option<i64>,
}

impl<'a> PointWriter<'a> {
    /// A writer for the points of one request (or one telnet read).
    pub fn new(enrichment: &Enrichment, limits: &'a Limits) -> PointWriter<'a> {
        let mut enrichment = enrichment.clone();
        let step_ms = if enrichment.extra_tags.contains_key("step") {
            take_alignment_step(&mut enrichment.extra_tags)
        } else {
            None
        };
        PointWriter {
            collector: Collector::new(limits),
            enrichment,
            step_ms,
        }
    }

    /// Adds one point: `Ok(Err(message))` when its labels are invalid (skipped and
    /// counted), `Err` when the request holds more samples than allowed.
    pub fn add(&mut self, point: DataPoint) -> Result<Result<(), String>, LookoutError> {
        self.collector.count_one()?;
        let mut tags: Tags = point
            .tags
            .iter()
            .map(|(key, value)| (norm_tag_key(key), norm_tag_value(value)))
            .collect();
        self.enrichment.apply(&mut tags);
        let labels = match self.collector.checked_labels(&point.metric, &tags) {
            Ok(labels) => labels,
            Err(error) => {
                let message = format!("invalid labels: {error}");
                self.collector
                    .skip(SkipReason::InvalidLabels, || message.clone());
                return Ok(Err(message));
            }
        };
        let timestamp = align(point.timestamp_ms, self.step_ms);
        self.collector.decoded.batch.push(
            labels,
            vec![lookout_model::Sample::new(timestamp, point.value)],
        );
        Ok(Ok(()))
    }

    /// Counts a point that did not parse.
    pub fn skip(&mut self, reason: SkipReason, message: impl FnOnce() -> String) {
        self.collector.skip(reason, message);
    }

    /// The batch and the skip counts.
    pub fn finish(self) -> Decoded {
        self.collector.decoded
    }
}

/// A JSON data point, or why it is refused (OpenTSDB's messages).
fn json_point(point: &Value) -> Result<DataPoint, (SkipReason, String)> {
    let Value::Object(fields) = point else {
        return Err((
            SkipReason::MalformedJson,
            "data point is not a JSON object".to_owned(),
        ));
    };
    let metric = match fields.get("metric") {
        Some(Value::String(metric)) if !metric.is_empty() => metric.clone(),
        _ => {
            return Err((SkipReason::MissingName, "Metric name was empty".to_owned()));
        }
    };
    let timestamp_ms = fields
        .get("timestamp")
        .and_then(json_timestamp)
        .ok_or_else(|| (SkipReason::InvalidTime, "Invalid timestamp".to_owned()))??;
    let value = match fields.get("value") {
        None | Some(Value::Null) => {
            return Err((SkipReason::NonNumericValue, "Empty value".to_owned()));
        }
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) if text.trim().is_empty() => {
            return Err((SkipReason::NonNumericValue, "Empty value".to_owned()));
        }
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let value = value.ok_or_else(|| {
        (
            SkipReason::NonNumericValue,
            "Unable to parse value to a number".to_owned(),
        )
    })?;
    finite(value).map_err(|error| (SkipReason::NonNumericValue, error))?;
    let tags = match fields.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(tags)) => tags
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                Value::Number(_) | Value::Bool(_) => Ok((key.clone(), value.to_string())),
                _ => Err((
                    SkipReason::InvalidTags,
                    format!("Invalid tag value for tag key {key:?}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err((SkipReason::InvalidTags, "Invalid tags".to_owned()));
        }
    };
    Ok(DataPoint {
        metric,
        timestamp_ms,
        value,
        tags,
    })
}

/// `Some(Err)` when the timestamp is a number out of range, `None` when it is not a number.
fn json_timestamp(value: &Value) -> Option<Result<i64, (SkipReason, String)>> {
    let parsed = match value {
        Value::Number(number) => match number.as_i64() {
            Some(integer) => timestamp_from_integer(integer),
            None => timestamp_from_decimal(&number.to_string())?,
        },
        Value::String(text) => parse_timestamp(text.trim())?,
        _ => return None,
    };
    Some(parsed.map_err(|error| (SkipReason::InvalidTime, error)))
}

/// A timestamp as OpenTSDB reads it: seconds up to 10 digits, milliseconds up to 13; a
/// decimal fraction of a second is kept to the millisecond. `None` when it is not a number.
pub fn parse_timestamp(text: &str) -> Option<Result<i64, String>> {
    if let Ok(integer) = text.parse::<i64>() {
        return Some(timestamp_from_integer(integer));
    }
    timestamp_from_decimal(text)
}

fn timestamp_from_integer(raw: i64) -> Result<i64, String> {
    match raw {
        i64::MIN..=0 => Err(format!("invalid timestamp: {raw}")),
        1..=MAX_SECONDS => Ok(raw * 1000),
        _ if raw <= MAX_MILLISECONDS => Ok(raw),
        _ => Err(format!("timestamp too large: {raw}")),
    }
}

/// `<digits>.<digits>`: seconds (or milliseconds when the whole part has more than 10
/// digits) with a fraction, cut to whole milliseconds.
fn timestamp_from_decimal(text: &str) -> Option<Result<i64, String>> {
    let (whole, fraction) = text.split_once('.')?;
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let Ok(whole_value) = whole.parse::<i64>() else {
        return Some(Err(format!("timestamp too large: {text}")));
    };
    if whole_value > MAX_SECONDS {
        return Some(timestamp_from_integer(whole_value));
    }
    let millis_text: String = fraction.chars().chain("000".chars()).take(3).collect();
    let millis: i64 = millis_text.parse().unwrap_or(0);
    let timestamp = whole_value * 1000 + millis;
    if timestamp <= 0 {
        return Some(Err(format!("invalid timestamp: {text}")));
    }
    Some(Ok(timestamp))
}

/// OpenTSDB refuses values that are not finite.
fn finite(value: f64) -> Result<(), String> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(format!("value is NaN or Infinite: {value}"))
    }
}

/// A command of the telnet protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum TelnetCommand {
    /// `put <metric> <timestamp> <value> <k=v>...`
    Put(DataPoint),
    /// `version`: answer a version line.
    Version,
    /// `help`: answer the list of commands.
    Help,
    /// `exit`: close the connection.
    Exit,
    /// A blank line.
    Nothing,
}

/// A telnet line that was refused; `Display` is the line OpenTSDB answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelnetError {
    /// A `put` that does not parse (OpenTSDB: `put: illegal argument: ...` or
    /// `put: invalid value: ...`).
    #[error("put: {message}")]
    Put {
        /// Why, in OpenTSDB's words.
        message: String,
        /// How it is counted.
        reason: SkipReason,
    },
    /// A command other than put, version, help and exit.
    #[error("unknown command: {0}.  Try `help'.")]
    UnknownCommand(String),
}

/// The commands the telnet listener knows, as `help` lists them.
pub const TELNET_COMMANDS: &str = "available commands: put version help exit";

/// Parses one telnet line (without its line ending). Words are separated by spaces or tabs.
pub fn parse_telnet_line(line: &str) -> Result<TelnetCommand, TelnetError> {
    let mut words = line.split_ascii_whitespace();
    let Some(command) = words.next() else {
        return Ok(TelnetCommand::Nothing);
    };
    match command {
        "put" => telnet_put(words.collect()).map(TelnetCommand::Put),
        "version" => Ok(TelnetCommand::Version),
        "help" => Ok(TelnetCommand::Help),
        "exit" => Ok(TelnetCommand::Exit),
        other => Err(TelnetError::UnknownCommand(other.to_owned())),
    }
}

/// `put`'s arguments: metric, timestamp, value, then at least one `k=v`.
fn telnet_put(words: Vec<&str>) -> Result<DataPoint, TelnetError> {
    let illegal = |reason: SkipReason, message: String| TelnetError::Put {
        message: format!("illegal argument: {message}"),
        reason,
    };
    if words.len() < 4 {
        return Err(illegal(
            SkipReason::MalformedLine,
            format!("not enough arguments (need least 4, got {})", words.len()),
        ));
    }
    let metric = words[0].to_owned();
    let timestamp_ms = match parse_timestamp(words[1]) {
        Some(Ok(timestamp)) => timestamp,
        Some(Err(message)) => return Err(illegal(SkipReason::InvalidTime, message)),
        None => {
            return Err(illegal(
                SkipReason::InvalidTime,
                format!("invalid timestamp: {}", words[1]),
            ))
        }
    };
    let value = words[2].parse::<f64>().map_err(|_| TelnetError::Put {
        message: format!("invalid value: Invalid value: {}", words[2]),
        reason: SkipReason::NonNumericValue,
    })?;
    finite(value).map_err(|message| illegal(SkipReason::NonNumericValue, message))?;
    let mut tags: Vec<(String, String)> = Vec::with_capacity(words.len() - 3);
    for word in &words[3..] {
        let pair = word
            .split_once('=')
            .filter(|(key, value)| !key.is_empty() && !value.is_empty() && !value.contains('='));
        let Some((key, value)) = pair else {
            return Err(illegal(
                SkipReason::InvalidTags,
                format!("invalid tag: {word}"),
            ));
        };
        if tags.iter().any(|(existing, _)| existing == key) {
            return Err(illegal(
                SkipReason::InvalidTags,
                format!("duplicate tag: {word}"),
            ));
        }
        tags.push((key.to_owned(), value.to_owned()));
    }
    Ok(DataPoint {
        metric,
        timestamp_ms,
        value,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn peer() -> Enrichment {
        Enrichment {
            client_ip: Some("192.0.2.5".into()),
            extra_tags: Tags::new(),
        }
    }

    #[test]
    fn timestamps_seconds_milliseconds_and_fractions() {
        let parse = |text: &str| parse_timestamp(text).unwrap();
        assert_eq!(parse("1530624430"), Ok(1_530_624_430_000));
        assert_eq!(parse("1530624430123"), Ok(1_530_624_430_123));
        assert_eq!(parse("1530624430.5"), Ok(1_530_624_430_500));
        assert_eq!(parse("1530624430.123456"), Ok(1_530_624_430_123));
        assert_eq!(parse("1530624430123.9"), Ok(1_530_624_430_123));
        assert_eq!(parse("9999999999"), Ok(9_999_999_999_000));
        assert_eq!(parse("10000000000"), Ok(10_000_000_000));
        assert_eq!(parse("0"), Err("invalid timestamp: 0".into()));
        assert_eq!(parse("-5"), Err("invalid timestamp: -5".into()));
        assert_eq!(
            parse("15306244301234"),
            Err("timestamp too large: 15306244301234".into())
        );
        assert_eq!(parse_timestamp("soon"), None);
        assert_eq!(parse_timestamp("1.2.3"), None);
        assert_eq!(parse_timestamp(".5"), None);
    }

    #[test]
    fn json_single_and_array_with_per_point_errors() {
        let body = json!([
            {"metric": "sys.cpu", "timestamp": 1530624430, "value": 30, "tags": {"host": "a", "disk path": "/dev/sda 1"}},
            {"metric": "sys.cpu", "timestamp": "1530624430123", "value": "42.5", "tags": {"host": "b", "core": 3}},
            {"metric": "", "timestamp": 1530624430, "value": 1},
            {"metric": "m", "timestamp": "later", "value": 1},
            {"metric": "m", "timestamp": 1530624430, "value": "many"},
            {"metric": "m", "timestamp": 1530624430, "value": "NaN"},
            {"metric": "m", "timestamp": 1530624430},
            {"metric": "m", "timestamp": 1530624430, "value": 1, "tags": {"k": {"deep": 1}}},
            7
        ]);
        let decoded =
            decode_json(body.to_string().as_bytes(), &peer(), &Limits::default()).unwrap();
        let series = &decoded.decoded.batch.series;
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels.to_string(),
            r#"sys.cpu{disk_path="/dev/sda_1", host="a", ip="192.0.2.5"}"#
        );
        assert_eq!(series[0].samples[0].timestamp.0, 1_530_624_430_000);
        assert_eq!(series[1].labels.get("core"), Some("3"));
        assert_eq!(series[1].samples[0].timestamp.0, 1_530_624_430_123);
        assert_eq!(series[1].samples[0].value, 42.5);
        let errors: Vec<&str> = decoded
            .errors
            .iter()
            .map(|error| error.error.as_str())
            .collect();
        assert_eq!(
            errors,
            [
                "Metric name was empty",
                "Invalid timestamp",
                "Unable to parse value to a number",
                "value is NaN or Infinite: NaN",
                "Empty value",
                "Invalid tag value for tag key \"k\"",
                "data point is not a JSON object",
            ]
        );
        assert_eq!(decoded.errors[0].datapoint["metric"], "");
        assert_eq!(decoded.decoded.skipped_total(), 7);
        assert_eq!(decoded.decoded.skipped[&SkipReason::NonNumericValue], 3);

        let single = br#"{"metric":"one","timestamp":1530624430,"value":1,"tags":{"h":"x"}}"#;
        let decoded = decode_json(single, &peer(), &Limits::default()).unwrap();
        assert_eq!(decoded.decoded.batch.series.len(), 1);
        assert!(decoded.errors.is_empty());
    }

    #[test]
    fn step_header_aligns_and_is_consumed() {
        let enrichment = Enrichment {
            client_ip: None,
            extra_tags: tags(&[("app", "xx"), ("step", "60")]),
        };
        let body = br#"{"metric":"m","timestamp":1530624430,"value":1,"tags":{"h":"x"}}"#;
        let decoded = decode_json(body, &enrichment, &Limits::default()).unwrap();
        let series = &decoded.decoded.batch.series[0];
        assert_eq!(series.samples[0].timestamp.0, 1_530_624_420_000);
        assert_eq!(series.labels.to_string(), r#"m{app="xx", h="x"}"#);
    }

    #[test]
    fn whole_body_errors() {
        assert!(matches!(
            decode_json(b"[{", &peer(), &Limits::default()),
            Err(LookoutError::Json { .. })
        ));
        let mut limits = Limits::default();
        limits.decode.max_series_per_request = 1;
        let body =
            br#"[{"metric":"a","timestamp":1,"value":1},{"metric":"b","timestamp":1,"value":1}]"#;
        assert_eq!(
            decode_json(body, &peer(), &limits),
            Err(LookoutError::TooManySamples { limit: 1 })
        );
    }

    #[test]
    fn telnet_lines() {
        let put = parse_telnet_line("put sys.load 1530624430 0.5 host=a source=collectd").unwrap();
        assert_eq!(
            put,
            TelnetCommand::Put(DataPoint {
                metric: "sys.load".into(),
                timestamp_ms: 1_530_624_430_000,
                value: 0.5,
                tags: vec![
                    ("host".into(), "a".into()),
                    ("source".into(), "collectd".into())
                ],
            })
        );
        assert_eq!(parse_telnet_line("  \t").unwrap(), TelnetCommand::Nothing);
        assert_eq!(
            parse_telnet_line("version").unwrap(),
            TelnetCommand::Version
        );
        assert_eq!(parse_telnet_line("exit").unwrap(), TelnetCommand::Exit);
        let refused = |line: &str| parse_telnet_line(line).unwrap_err().to_string();
        assert_eq!(refused("stats now"), "unknown command: stats.  Try `help'.");
        assert_eq!(
            refused("put m 1530624430 1"),
            "put: illegal argument: not enough arguments (need least 4, got 3)"
        );
        assert_eq!(
            refused("put m yesterday 1 h=a"),
            "put: illegal argument: invalid timestamp: yesterday"
        );
        assert_eq!(
            refused("put m 1530624430 x h=a"),
            "put: invalid value: Invalid value: x"
        );
        assert_eq!(
            refused("put m 1530624430 1 h"),
            "put: illegal argument: invalid tag: h"
        );
        assert_eq!(
            refused("put m 1530624430 1 h=a h=b"),
            "put: illegal argument: duplicate tag: h=b"
        );
    }

    #[test]
    fn writer_counts_invalid_labels() {
        let limits = Limits::default();
        let mut writer = PointWriter::new(&peer(), &limits);
        let point = DataPoint {
            metric: "m".into(),
            timestamp_ms: 1000,
            value: 1.0,
            tags: vec![("ok".into(), "v".into())],
        };
        assert_eq!(writer.add(point.clone()).unwrap(), Ok(()));
        let mut bad = point;
        bad.tags.push((String::new(), "v".into()));
        // The empty key normalises to the empty key, which a label set refuses.
        assert!(writer.add(bad).unwrap().is_err());
        let decoded = writer.finish();
        assert_eq!(decoded.batch.series.len(), 1);
        assert_eq!(decoded.skipped[&SkipReason::InvalidLabels], 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_telnet_lines_never_panic(line in "[a-z =.0-9\t-]{0,40}") {
            let _ = parse_telnet_line(&line);
        }
    }
}
