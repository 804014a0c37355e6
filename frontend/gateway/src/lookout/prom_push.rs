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
}
