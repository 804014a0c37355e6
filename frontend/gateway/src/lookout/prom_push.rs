//! The Prometheus push body of `POST|PUT /prom/metrics/job/...` with SOFALookout's semantics
//! (spec §3.3, §4.4): text exposition lines, every sample timestamped with the arrival time
//! floored to the path's `step` (explicit line timestamps are ignored, as in the original),
//! label values normalised with `norm_tag_value` (names and label names are not), tags
//! completed with `ip` and then the path tags (`step` consumed).
//!
//! Unlike the original's naive splitter, the lines are read by a real exposition parser
//! ([`crate::exposition`]): escapes, commas and braces inside label values work, and a line
//! that does not parse is skipped and counted rather than ending the body.

use lookout_model::TimestampMs;

use super::normalise::norm_tag_value;
use super::{
    align, body_text, read_body, take_alignment_step, Collector, Decoded, Enrichment, Limits,
    LookoutError, SkipReason, Tags,
};
use crate::exposition::parse_line;

/// Decodes a push body that arrived at `arrival`. `enrichment.extra_tags` are the path tags,
/// `step` among them.
pub fn decode(
    body: &[u8],
    arrival: TimestampMs,
    enrichment: &Enrichment,
    limits: &Limits,
) -> Result<Decoded, LookoutError> {
    let text = body_text(read_body(body, false, &limits.decode)?);
    let mut enrichment = enrichment.clone();
    let step = take_alignment_step(&mut enrichment.extra_tags);
    let timestamp = align(arrival.0, step);
    let mut collector = Collector::new(limits);
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let sample = match parse_line(line) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(error) => {
                collector.skip(SkipReason::MalformedLine, || {
                    format!("line {}: {error}", index + 1)
                });
                continue;
            }
        };
        let mut tags: Tags = sample
            .labels
            .into_iter()
            .map(|(key, value)| (key, norm_tag_value(&value)))
            .collect();
        enrichment.apply(&mut tags);
        collector.sample(&sample.name, &tags, timestamp, sample.value)?;
    }
    Ok(collector.decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_tags(pairs: &[(&str, &str)]) -> Enrichment {
        Enrichment {
            client_ip: Some("192.0.2.7".into()),
            extra_tags: pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        }
    }

    #[test]
    fn timestamps_are_arrival_floored_to_step_and_step_is_consumed() {
        let body = "a 1 1395066363000\nb{job=\"body\"} 2\n";
        let enrichment = path_tags(&[("job", "j"), ("app", "demo"), ("step", "30")]);
        let decoded = decode(
            body.as_bytes(),
            TimestampMs(1_700_000_012_345),
            &enrichment,
            &Limits::default(),
        )
        .unwrap();
        let series = &decoded.batch.series;
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].samples[0].timestamp,
            TimestampMs(1_700_000_010_000)
        );
        assert_eq!(
            series[1].samples[0].timestamp,
            TimestampMs(1_700_000_010_000)
        );
        assert_eq!(
            series[0].labels.to_string(),
            r#"a{app="demo", ip="192.0.2.7", job="j"}"#
        );
        assert_eq!(series[1].labels.get("job"), Some("body"), "body labels win");
    }

    #[test]
    fn a_bad_line_is_skipped_and_the_rest_kept() {
        let body = "good 1\nbad{ 2\n\r\n# comment\nalso_good{v=\"x y\"} +Inf\r\n";
        let decoded = decode(
            body.as_bytes(),
            TimestampMs(0),
            &path_tags(&[("step", "10")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(decoded.batch.sample_count(), 2);
        assert_eq!(decoded.batch.series[1].labels.get("v"), Some("x_y"));
        assert_eq!(decoded.batch.series[1].samples[0].value, f64::INFINITY);
        assert_eq!(decoded.skipped[&SkipReason::MalformedLine], 1);
        assert!(decoded.messages[0].starts_with("malformed_line: line 2"));
    }

    /// One line of a generated push body.
    #[derive(Debug, Clone)]
    enum Line {
        /// A sample within the label limit; its explicit timestamp, if any, is ignored.
        Sample {
            name: String,
            labels: Vec<(String, String)>,
            value: (String, f64),
            timestamp: Option<i64>,
        },
        /// A sample with more labels than [`MAX_LABELS`] allows.
        TooManyLabels(String),
        /// A comment or blank line: nothing.
        Nothing(String),
        /// A line that cannot parse.
        Junk(String),
    }

    /// `__name__`, up to 3 body labels (`b`-`d`), `ip` and `app`.
    const MAX_LABELS: usize = 6;

    fn escape(value: &str) -> String {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    fn line_strategy() -> impl proptest::strategy::Strategy<Value = Line> {
        use proptest::prelude::*;
        let name = "[a-zA-Z_:][a-zA-Z0-9_:]{0,8}";
        let value = prop_oneof![
            any::<f64>()
                .prop_filter("finite", |value| value.is_finite())
                .prop_map(|value| (format!("{value:?}"), value)),
            any::<i32>().prop_map(|value| (value.to_string(), f64::from(value))),
            Just(("+Inf".to_owned(), f64::INFINITY)),
            Just(("-Inf".to_owned(), f64::NEG_INFINITY)),
            Just(("NaN".to_owned(), f64::NAN)),
        ];
        let sample = (
            name,
            proptest::collection::btree_map("[b-d]", "[a-z0-9 ,=\"\\\\/+é\n]{1,6}", 0..4),
            value,
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(name, labels, value, timestamp)| Line::Sample {
                name,
                labels: labels.into_iter().collect(),
                value,
                timestamp,
            });
        let junk = (name, 0..7usize).prop_map(|(name, form)| {
            Line::Junk(match form {
                0 => format!("{name}{{ 1"),
                1 => format!("{name} one"),
                2 => format!("{name}{{b=\"x\"}} 1 2 3"),
                3 => format!("{name}{{b=x}} 1"),
                4 => "{} 1".to_owned(),
                5 => name,
                _ => format!("{name} 1 soon"),
            })
        });
        prop_oneof![
            6 => sample,
            1 => name.prop_map(Line::TooManyLabels),
            1 => prop_oneof![
                Just(String::new()),
                Just(" \t".to_owned()),
                "# (HELP|TYPE) [a-z]{1,4} [a-z ]{0,6}",
                Just("#".to_owned()),
            ]
            .prop_map(Line::Nothing),
            2 => junk,
        ]
    }

    /// A line of the body as text.
    fn line_text(line: &Line) -> String {
        match line {
            Line::Sample {
                name,
                labels,
                value,
                timestamp,
            } => {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
                    .collect();
                let mut text = format!("{name}{{{}}} {}", labels.join(","), value.0);
                if let Some(timestamp) = timestamp {
                    text.push_str(&format!(" {timestamp}"));
                }
                text
            }
            Line::TooManyLabels(name) => {
                let labels: Vec<String> = ["e", "f", "g", "h", "i", "j", "k"]
                    .iter()
                    .map(|key| format!("{key}=\"v\""))
                    .collect();
                format!("{name}{{{}}} 1", labels.join(","))
            }
            Line::Nothing(text) | Line::Junk(text) => text.clone(),
        }
    }

    /// Lines of `bytes` with something on them that is not a comment: each must become a
    /// sample or a skip.
    fn content_lines(bytes: &[u8]) -> u64 {
        bytes
            .split(|&byte| byte == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| {
                let start = line.iter().position(|&byte| byte != b' ' && byte != b'\t');
                start.is_some_and(|start| line[start] != b'#')
            })
            .count() as u64
    }

    proptest::proptest! {
        /// Generated bodies mixing samples, comments, blank lines, broken lines and label
        /// sets over the limit: every sample line is stored (name, normalised labels, value,
        /// arrival floored to the step) or counted as `invalid_labels`, every broken line as
        /// `malformed_line`; over the sample limit the body is refused whole.
        #[test]
        fn every_line_is_stored_or_counted(
            lines in proptest::collection::vec((line_strategy(), proptest::prelude::any::<bool>()), 0..12),
            arrival in 0i64..4_000_000_000_000,
            step in proptest::prop_oneof![proptest::strategy::Just(-1i64), 1..=i64::from(i32::MAX)],
            app in "[a-z]{1,5}",
        ) {
            let body: String = lines
                .iter()
                .map(|(line, crlf)| format!("{}{}", line_text(line), if *crlf { "\r\n" } else { "\n" }))
                .collect();
            let enrichment = path_tags(&[("app", &app), ("step", &step.to_string())]);
            let mut limits = Limits::default();
            limits.labels.max_labels = MAX_LABELS;
            let decoded = decode(body.as_bytes(), TimestampMs(arrival), &enrichment, &limits).unwrap();
            let timestamp = if step == -1 { arrival } else { arrival - arrival % (step * 1000) };
            let mut expected_series = Vec::new();
            let mut expected_skips = std::collections::BTreeMap::new();
            let mut counted = 0;
            for (line, _) in &lines {
                match line {
                    Line::Sample { name, labels, value, .. } => {
                        counted += 1;
                        let mut pairs = vec![
                            ("__name__".to_owned(), name.clone()),
                            ("app".to_owned(), app.clone()),
                            ("ip".to_owned(), "192.0.2.7".to_owned()),
                        ];
                        pairs.extend(labels.iter().map(|(key, value)| (key.clone(), norm_tag_value(value))));
                        let labels = lookout_model::Labels::from_pairs(pairs).unwrap();
                        expected_series.push((labels, value.1.to_bits(), timestamp));
                    }
                    Line::TooManyLabels(_) => {
                        counted += 1;
                        *expected_skips.entry(SkipReason::InvalidLabels).or_insert(0u64) += 1;
                    }
                    Line::Junk(_) => {
                        *expected_skips.entry(SkipReason::MalformedLine).or_insert(0u64) += 1;
                    }
                    Line::Nothing(_) => {}
                }
            }
            let series: Vec<_> = decoded
                .batch
                .series
                .iter()
                .map(|series| (series.labels.clone(), series.samples[0].value.to_bits(), series.samples[0].timestamp.0))
                .collect();
            proptest::prop_assert_eq!(series, expected_series, "body: {:?}", body);
            proptest::prop_assert_eq!(&decoded.skipped, &expected_skips, "body: {:?}", body);
            if counted > 0 {
                limits.decode.max_series_per_request = counted - 1;
                let error = decode(body.as_bytes(), TimestampMs(arrival), &enrichment, &limits).unwrap_err();
                proptest::prop_assert_eq!(error, LookoutError::TooManySamples { limit: counted - 1 });
            }
        }

        /// Arbitrary bytes never panic, and every line with content is a sample or a skip.
        #[test]
        fn arbitrary_bytes_are_stored_or_counted(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            step in "[0-9-]{0,21}",
        ) {
            let enrichment = path_tags(&[("step", &step)]);
            let decoded = decode(&bytes, TimestampMs(1_700_000_000_000), &enrichment, &Limits::default()).unwrap();
            let stored = decoded.batch.sample_count() as u64;
            proptest::prop_assert_eq!(stored + decoded.skipped_total(), content_lines(&bytes));
            proptest::prop_assert!(decoded.messages.iter().all(|message| !message.is_empty()));
        }

        /// Text made of the exposition format's own characters, the same.
        #[test]
        fn exposition_like_text_is_stored_or_counted(text in "[a-z_{}=\",\\\\ #0-9.+\n\r\té-]{0,160}") {
            let decoded = decode(text.as_bytes(), TimestampMs(0), &Enrichment::default(), &Limits::default()).unwrap();
            let stored = decoded.batch.sample_count() as u64;
            proptest::prop_assert_eq!(stored + decoded.skipped_total(), content_lines(text.as_bytes()));
        }
    }
}
