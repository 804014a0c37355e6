//! The SDK protocol body (spec §3.1, §3.2, §11.5): measurement objects joined by TAB, raw
//! snappy when the request says `Content-Encoding: snappy`.
//!
//! ```text
//! {"time":"2019-05-30T15:04:30+08:00","tags":{"app":"demo","_type_":"c"},"http_requests_total":{"count":12,"rate":0.4}}
//! ```
//!
//! Each object yields one sample per entry of each metric object, named
//! `norm_name(<metric>.<entry>)`, with the object's time (no step alignment for this
//! protocol) and its normalised tags (`_type_` and `priority` dropped; `_type_` `i` makes the
//! object an info object whose entries are strings). A metric whose value is a plain number
//! yields one sample named by the key as is.
//!
//! Errors are isolated (the recommended behaviour, not the original's): a segment that is
//! not a JSON object, has no valid `time` or no `tags` is skipped; inside an object, an entry
//! that is not a number is skipped alone. Java's `NaN` / `Infinity` / `-Infinity` tokens,
//! which are not JSON, are read as the float values.

use serde_json::{Map, Value};

use super::normalise::{norm_name, norm_tag_key, norm_tag_value};
use super::time::parse_time;
use super::{
    body_text, read_body, Collector, Decoded, Enrichment, Limits, LookoutError, SkipReason, Tags,
};

/// Decodes an SDK report body. `snappy` is whether the request carried
/// `Content-Encoding: snappy`.
pub fn decode(
    body: &[u8],
    snappy: bool,
    enrichment: &Enrichment,
    limits: &Limits,
) -> Result<Decoded, LookoutError> {
    let text = body_text(read_body(body, snappy, &limits.decode)?);
    let mut collector = Collector::new(limits);
    for segment in text.split('\t') {
        if segment.trim().is_empty() {
            continue;
        }
        let Some(object) = parse_segment(segment) else {
            collector.skip(SkipReason::MalformedJson, || excerpt(segment));
            continue;
        };
        decode_measurement(&object, enrichment, &mut collector)?;
    }
    Ok(collector.decoded)
}

fn decode_measurement(
    object: &Map<String, Value>,
    enrichment: &Enrichment,
    collector: &mut Collector<'_>,
) -> Result<(), LookoutError> {
    let Some(timestamp) = object.get("time").and_then(parse_time) else {
        let time = object
            .get("time")
            .map_or("none".to_owned(), Value::to_string);
        collector.skip(SkipReason::InvalidTime, || format!("time {time}"));
        return Ok(());
    };
    let Some(Value::Object(raw_tags)) = object.get("tags") else {
        collector.skip(SkipReason::InvalidTags, || {
            "measurement has no tags object".to_owned()
        });
        return Ok(());
    };
    let mut is_info = false;
    let mut tags = Tags::new();
    for (key, value) in raw_tags {
        match key.as_str() {
            "_type_" => is_info |= value.as_str() == Some("i"),
            "priority" => {}
            _ if value.is_null() => {}
            _ => {
                tags.insert(norm_tag_key(key), norm_tag_value(&text_of(value)));
            }
        }
    }
    enrichment.apply(&mut tags);
    for (metric, value) in object {
        if metric == "time" || metric == "tags" {
            continue;
        }
        match value {
            Value::Object(entries) => {
                for (entry, entry_value) in entries {
                    let name = norm_name(&format!("{metric}.{entry}"));
                    if is_info {
                        collector.info(&name, &tags, timestamp, text_of(entry_value))?;
                    } else if let Some(number) = number_of(entry_value) {
                        collector.sample(&name, &tags, timestamp, number)?;
                    } else {
                        collector.skip(SkipReason::NonNumericValue, || {
                            format!("{name} = {}", excerpt(&entry_value.to_string()))
                        });
                    }
                }
            }
            Value::Number(_) if is_info => {
                collector.info(metric, &tags, timestamp, text_of(value))?;
            }
            Value::Number(_) => {
                let number = number_of(value).unwrap_or(f64::NAN);
                collector.sample(metric, &tags, timestamp, number)?;
            }
            // Anything else is ignored, as in the original.
            _ => {}
        }
    }
    Ok(())
}

/// The JSON object of one segment, reading Java's non-finite tokens when plain JSON fails.
fn parse_segment(segment: &str) -> Option<Map<String, Value>> {
    let parsed = serde_json::from_str::<Value>(segment).ok().or_else(|| {
        let rewritten = rewrite_non_finite_tokens(segment)?;
        serde_json::from_str::<Value>(&rewritten).ok()
    });
    match parsed? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Strings that stand for Java's bare `NaN`, `Infinity` and `-Infinity` after
/// [`rewrite_non_finite_tokens`]; a NUL cannot start a real SDK tag or value.
const NON_FINITE: [(&str, &str, f64); 3] = [
    ("NaN", "\u{0}NaN", f64::NAN),
    ("-Infinity", "\u{0}-Infinity", f64::NEG_INFINITY),
    ("Infinity", "\u{0}Infinity", f64::INFINITY),
];

/// Replaces bare `NaN` / `Infinity` / `-Infinity` outside strings by marker strings, or
/// `None` when there are none.
fn rewrite_non_finite_tokens(segment: &str) -> Option<String> {
    let mut rewritten = String::with_capacity(segment.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut replaced = false;
    let mut rest = segment;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some((token, marker, _)) = NON_FINITE
            .iter()
            .find(|(token, _, _)| is_token_at(rest, token))
        {
            rewritten.push('"');
            rewritten.push_str(&marker.replace('\u{0}', "\\u0000"));
            rewritten.push('"');
            rest = &rest[token.len()..];
            replaced = true;
            continue;
        }
        rewritten.push(c);
        rest = &rest[c.len_utf8()..];
    }
    replaced.then_some(rewritten)
}

/// Whether `text` starts with `token` followed by something that ends a JSON value.
fn is_token_at(text: &str, token: &str) -> bool {
    text.strip_prefix(token).is_some_and(|after| {
        after
            .chars()
            .next()
            .is_none_or(|next| !next.is_alphanumeric())
    })
}

/// A sample value: a JSON number or a non-finite marker.
fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => NON_FINITE
            .iter()
            .find(|(_, marker, _)| marker == text)
            .map(|(_, _, number)| *number),
        _ => None,
    }
}

/// Java's `toString` of a parsed value: strings as they are, the rest as JSON text.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => NON_FINITE
            .iter()
            .find(|(_, marker, _)| marker == text)
            .map_or_else(|| text.clone(), |(token, _, _)| (*token).to_owned()),
        other => other.to_string(),
    }
}

/// The start of a segment, for log messages.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut short: String = text.chars().take(MAX_CHARS).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::{Labels, Sample};

    fn decode_text(body: &str, enrichment: &Enrichment) -> Decoded {
        decode(body.as_bytes(), false, enrichment, &Limits::default()).unwrap()
    }

    fn series(decoded: &Decoded) -> Vec<(String, f64)> {
        decoded
            .batch
            .series
            .iter()
            .map(|series| (series.labels.to_string(), series.samples[0].value))
            .collect()
    }

    #[test]
    fn flattens_names_and_normalises_tags() {
        let body = r#"{"time":"2019-05-30T15:04:30+08:00","tags":{"app":"demo","_type_":"c","priority":"high","user.name":"a=b"},"http_requests_total":{"count":12,"rate":0.4}}"#;
        let decoded = decode_text(body, &Enrichment::default());
        assert_eq!(
            series(&decoded),
            [
                (
                    r#"http_requests_total.count{app="demo", user_name="a_b"}"#.to_owned(),
                    12.0
                ),
                (
                    r#"http_requests_total.rate{app="demo", user_name="a_b"}"#.to_owned(),
                    0.4
                ),
            ]
        );
        assert_eq!(
            decoded.batch.series[0].samples,
            [Sample::new(1_559_199_870_000, 12.0)]
        );
        assert!(decoded.skipped.is_empty());
    }

    #[test]
    fn a_bad_segment_or_entry_is_skipped_alone() {
        let good = r#"{"time":1000,"tags":{"a":"1"},"m":{"v":1}}"#;
        let body = [
            good,
            "{not json",
            r#"{"time":"never","tags":{},"m":{"v":1}}"#,
            r#"{"time":1000,"m":{"v":1}}"#,
            r#"{"time":1000,"tags":{},"m":{"bad":"x","good":2}}"#,
            r#"[1,2]"#,
            "",
            good,
        ]
        .join("\t");
        let decoded = decode_text(&body, &Enrichment::default());
        assert_eq!(
            series(&decoded),
            [
                (r#"m.v{a="1"}"#.to_owned(), 1.0),
                (r#"m.good{}"#.to_owned(), 2.0),
                (r#"m.v{a="1"}"#.to_owned(), 1.0),
            ]
        );
        let skipped = |reason| decoded.skipped.get(&reason).copied().unwrap_or(0);
        assert_eq!(skipped(SkipReason::MalformedJson), 2);
        assert_eq!(skipped(SkipReason::InvalidTime), 1);
        assert_eq!(skipped(SkipReason::InvalidTags), 1);
        assert_eq!(skipped(SkipReason::NonNumericValue), 1);
        assert_eq!(decoded.messages.len(), 5);
    }

    #[test]
    fn java_non_finite_tokens_are_read() {
        let body = r#"{"time":1000,"tags":{"s":"NaN Infinity"},"m":{"a":NaN,"b":Infinity,"c":-Infinity,"d":"NaN"}}"#;
        let decoded = decode_text(body, &Enrichment::default());
        let values: Vec<f64> = decoded
            .batch
            .series
            .iter()
            .map(|series| series.samples[0].value)
            .collect();
        assert_eq!(values.len(), 3, "the string \"NaN\" is not a number");
        assert!(values[0].is_nan() && !decoded.batch.series[0].samples[0].is_stale());
        assert_eq!(values[1..], [f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(
            decoded.batch.series[0].labels.get("s"),
            Some("NaN_Infinity")
        );
        assert_eq!(decoded.skipped[&SkipReason::NonNumericValue], 1);
    }

    #[test]
    fn info_objects_are_not_samples() {
        let body = r#"{"time":1000,"tags":{"_type_":"i"},"lookout":{"config.value":"{\"x\":true}","n":3}}"#;
        let decoded = decode_text(body, &Enrichment::default());
        assert!(decoded.batch.is_empty());
        assert_eq!(decoded.infos.len(), 2);
        assert_eq!(
            decoded.infos[0].labels.metric_name(),
            Some("lookout.config.value")
        );
        assert_eq!(decoded.infos[0].info, r#"{"x":true}"#);
        assert_eq!(decoded.infos[1].info, "3");
    }

    #[test]
    fn a_plain_number_metric_keeps_its_name() {
        let body = r#"{"time":1000,"tags":{},"my metric":5,"ignored":"text"}"#;
        let decoded = decode_text(body, &Enrichment::default());
        assert_eq!(series(&decoded), [("my metric{}".to_owned(), 5.0)]);
    }

    #[test]
    fn enrichment_adds_ip_and_path_tags_without_overriding() {
        let enrichment = Enrichment {
            client_ip: Some("10.1.1.1".into()),
            extra_tags: Tags::from([
                ("app".to_owned(), "path".to_owned()),
                ("step".to_owned(), "30".to_owned()),
            ]),
        };
        let body = r#"{"time":1000,"tags":{"app":"body"},"m":{"v":1}}"#;
        let decoded = decode_text(body, &enrichment);
        let expected = Labels::from_pairs([
            ("__name__", "m.v"),
            ("app", "body"),
            ("ip", "10.1.1.1"),
            ("step", "30"),
        ])
        .unwrap();
        assert_eq!(decoded.batch.series[0].labels, expected);
    }

    #[test]
    fn snappy_bodies_and_limits() {
        let body = r#"{"time":1000,"tags":{},"m":{"v":1}}"#;
        let compressed = snap::raw::Encoder::new()
            .compress_vec(body.as_bytes())
            .unwrap();
        let decoded = decode(
            &compressed,
            true,
            &Enrichment::default(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(decoded.batch.sample_count(), 1);
        assert!(matches!(
            decode(
                body.as_bytes(),
                true,
                &Enrichment::default(),
                &Limits::default()
            ),
            Err(LookoutError::Snappy { .. })
        ));
        let mut limits = Limits::default();
        limits.decode.max_decompressed_bytes = 8;
        assert!(matches!(
            decode(&compressed, true, &Enrichment::default(), &limits),
            Err(LookoutError::DecompressedTooLarge { .. })
        ));
        limits = Limits::default();
        limits.decode.max_body_bytes = 8;
        assert!(matches!(
            decode(body.as_bytes(), false, &Enrichment::default(), &limits),
            Err(LookoutError::BodyTooLarge { .. })
        ));
        limits = Limits::default();
        limits.decode.max_series_per_request = 1;
        let two = format!("{body}\t{body}");
        assert!(matches!(
            decode(two.as_bytes(), false, &Enrichment::default(), &limits),
            Err(LookoutError::TooManySamples { limit: 1 })
        ));
    }

    #[test]
    fn label_limits_skip_the_sample() {
        let mut limits = Limits::default();
        limits.labels.max_labels = 2;
        let body = r#"{"time":1000,"tags":{"a":"1","b":"2"},"m":{"v":1}}	{"time":1000,"tags":{"a":"1"},"m":{"v":1}}"#;
        let decoded = decode(body.as_bytes(), false, &Enrichment::default(), &limits).unwrap();
        assert_eq!(decoded.batch.sample_count(), 1);
        assert_eq!(decoded.skipped[&SkipReason::InvalidLabels], 1);
        assert!(
            decoded.messages[0].contains("3 labels"),
            "{:?}",
            decoded.messages
        );
    }

    /// Found by `lookout_metrics_bodies_store_or_count_every_sample`: without serde_json's
    /// `float_roundtrip` this decoded one ulp off (7659174110764654) when the crate was
    /// built on its own.
    #[test]
    fn json_numbers_decode_to_the_exact_value() {
        let body = r#"{"time":0,"tags":{},"x":{"0":7659174110764655.0,"1":0.30000000000000004}}"#;
        let decoded = decode_text(body, &Enrichment::default());
        let values: Vec<f64> = decoded
            .batch
            .series
            .iter()
            .map(|series| series.samples[0].value)
            .collect();
        assert_eq!(values, [7_659_174_110_764_655.0, 0.300_000_000_000_000_04]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(text in "[{}\\[\\]\":,\\tNaIfinty0-9a-z. -]{0,200}") {
            let _ = decode(text.as_bytes(), false, &Enrichment::default(), &Limits::default());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode(&bytes, false, &Enrichment::default(), &Limits::default());
            let _ = decode(&bytes, true, &Enrichment::default(), &Limits::default());
        }
    }
}
