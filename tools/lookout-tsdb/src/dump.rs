//! `dump`: samples of matching series, streamed as OpenMetrics text or JSON lines. Both are
//! formats `import` reads back.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use lookout_model::{Labels, Sample};

use crate::common::resolve_range;
use crate::list::{notes, open_read_only};
use crate::{DumpFormat, RangeArgs};

/// Most samples on one JSON line (longer series take several lines, as VictoriaMetrics'
/// export does).
pub const JSONL_SAMPLES_PER_LINE: usize = 10_000;

pub fn run(dir: &Path, range: &RangeArgs, format: DumpFormat) -> anyhow::Result<ExitCode> {
    let (matchers, mint, maxt) = resolve_range(range)?;
    let store = open_read_only(dir)?;
    let notes = notes(&store);
    if !notes.is_empty() {
        eprint!("{notes}");
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = (|| -> anyhow::Result<()> {
        for series in store.select_iter(&matchers, mint, maxt) {
            let series = series.context("reading the blocks failed")?;
            match format {
                DumpFormat::Openmetrics => {
                    write_openmetrics(&mut out, &series.labels, &series.samples)?
                }
                DumpFormat::Jsonl => write_jsonl(&mut out, &series.labels, &series.samples)?,
            }
        }
        if format == DumpFormat::Openmetrics {
            writeln!(out, "# EOF")?;
        }
        out.flush()?;
        Ok(())
    })();
    match written {
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

/// One line per sample: `name{label="value",...} value seconds`.
pub fn write_openmetrics(
    out: &mut impl Write,
    labels: &Labels,
    samples: &[Sample],
) -> std::io::Result<()> {
    let mut prefix = String::new();
    prefix.push_str(labels.metric_name().unwrap_or_default());
    let others: Vec<_> = labels
        .iter()
        .filter(|label| label.name != lookout_model::METRIC_NAME_LABEL)
        .collect();
    if !others.is_empty() || labels.metric_name().is_none() {
        prefix.push('{');
        for (position, label) in others.iter().enumerate() {
            if position > 0 {
                prefix.push(',');
            }
            prefix.push_str(&label.name);
            prefix.push_str("=\"");
            escape_label_value(&label.value, &mut prefix);
            prefix.push('"');
        }
        prefix.push('}');
    }
    for sample in samples {
        writeln!(
            out,
            "{prefix} {} {}",
            format_value(sample.value),
            format_seconds(sample.timestamp.0)
        )?;
    }
    Ok(())
}

/// `{"metric":{...},"values":[...],"timestamps":[...]}` lines of at most
/// [`JSONL_SAMPLES_PER_LINE`] samples; non-finite values as the strings `NaN`, `+Inf`, `-Inf`.
pub fn write_jsonl(
    out: &mut impl Write,
    labels: &Labels,
    samples: &[Sample],
) -> std::io::Result<()> {
    let metric: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|label| (label.name.to_string(), label.value.to_string().into()))
        .collect();
    let metric = serde_json::Value::Object(metric).to_string();
    for group in samples.chunks(JSONL_SAMPLES_PER_LINE) {
        let values: Vec<serde_json::Value> = group
            .iter()
            .map(|sample| match serde_json::Number::from_f64(sample.value) {
                Some(number) => serde_json::Value::Number(number),
                None => serde_json::Value::String(format_value(sample.value)),
            })
            .collect();
        let timestamps: Vec<i64> = group.iter().map(|sample| sample.timestamp.0).collect();
        writeln!(
            out,
            "{{\"metric\":{metric},\"values\":{},\"timestamps\":{}}}",
            serde_json::Value::Array(values),
            serde_json::to_string(&timestamps).expect("integers serialise")
        )?;
    }
    Ok(())
}

fn escape_label_value(value: &str, out: &mut String) {
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// A value as OpenMetrics writes it: `NaN`, `+Inf`, `-Inf`, integers without a fraction,
/// otherwise the shortest text that reads back to the same `f64`.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else if value.fract() == 0.0
        && value.abs() < 1e15
        && !(value == 0.0 && value.is_sign_negative())
    {
        format!("{}", value as i64)
    } else {
        format!("{value:?}")
    }
}

/// Milliseconds as seconds with up to three decimals: `1714521600`, `1714521600.5`.
pub fn format_seconds(millis: i64) -> String {
    let sign = if millis < 0 { "-" } else { "" };
    let magnitude = millis.unsigned_abs();
    let (seconds, fraction) = (magnitude / 1000, magnitude % 1000);
    if fraction == 0 {
        return format!("{sign}{seconds}");
    }
    let digits = format!("{fraction:03}");
    format!("{sign}{seconds}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_times_format_as_openmetrics() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(-0.0), "-0.0");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e300), "1e300");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_seconds(1_714_521_600_000), "1714521600");
        assert_eq!(format_seconds(1_714_521_600_500), "1714521600.5");
        assert_eq!(format_seconds(-1_500), "-1.5");
        assert_eq!(format_seconds(7), "0.007");
    }

    #[test]
    fn label_values_are_escaped() {
        let labels = Labels::from_pairs([("__name__", "m"), ("path", "a\"b\\c\nd")]).unwrap();
        let mut out = Vec::new();
        write_openmetrics(&mut out, &labels, &[Sample::new(1000, 2.0)]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "m{path=\"a\\\"b\\\\c\\nd\"} 2 1\n"
        );
    }
}
