//! Helpers shared by the commands: time and size formatting, selectors, progress bars, the
//! store opened for writing, and one-line errors.

use std::io::IsTerminal;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};
use lookout_model::Matcher;
use lookout_tsdb::{Tsdb, TsdbError, TsdbOptions};

use crate::RangeArgs;

/// A time given on the command line: milliseconds since the epoch or RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeArg(pub i64);

impl FromStr for TimeArg {
    type Err = String;

    fn from_str(text: &str) -> Result<TimeArg, String> {
        if let Ok(millis) = text.parse::<i64>() {
            return Ok(TimeArg(millis));
        }
        lookout_model::time::parse_rfc3339(text)
            .map(TimeArg)
            .ok_or_else(|| {
                format!(
                    "{text:?} is neither milliseconds since the epoch nor an RFC 3339 time \
                     (e.g. 2024-05-01T00:00:00Z)"
                )
            })
    }
}

/// The selector's matchers (none: every series) and the inclusive range.
pub fn resolve_range(range: &RangeArgs) -> anyhow::Result<(Vec<Matcher>, i64, i64)> {
    let matchers = match &range.selector {
        Some(selector) => parse_selector(selector)?,
        None => Vec::new(),
    };
    let mint = range.min_time.map_or(i64::MIN, |time| time.0);
    let maxt = range.max_time.map_or(i64::MAX, |time| time.0);
    if mint > maxt {
        return Err(anyhow!(
            "--min-time is after --max-time; give a range whose start is not after its end"
        ));
    }
    Ok((matchers, mint, maxt))
}

/// Parses a series selector such as `up{job="api"}`.
pub fn parse_selector(selector: &str) -> anyhow::Result<Vec<Matcher>> {
    lookout_promql::parse_matchers(selector).map_err(|error| {
        anyhow!(
            "bad selector {selector:?}: {error}; write it as in PromQL, e.g. 'up{{job=\"api\"}}'"
        )
    })
}

/// Opens the store for writing, as the server does. A held lock becomes one clear line.
pub fn open_for_writing(options: TsdbOptions) -> anyhow::Result<Tsdb> {
    let dir = options.dir().to_path_buf();
    match Tsdb::open(options) {
        Ok(tsdb) => Ok(tsdb),
        Err(TsdbError::Locked { .. }) => Err(anyhow!(
            "data directory {} is locked by another process (its `lock` file is held, most \
             likely by a running server); stop the server first, or use the read-only \
             commands (list, analyze, dump, verify)",
            dir.display()
        )),
        Err(error) => Err(error).with_context(|| format!("cannot open {}", dir.display())),
    }
}

/// Store options for the offline commands: maintenance only when asked for.
pub fn offline_options(
    dir: &Path,
    block_duration_ms: i64,
    retention_ms: Option<i64>,
) -> TsdbOptions {
    TsdbOptions::new(dir)
        .auto_compaction(false)
        .block_duration_ms(block_duration_ms)
        .retention_ms(retention_ms)
        .max_future_ms(None)
}

/// An error chain as one line: the outermost message, then its causes.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Whether progress may be drawn: standard error is a terminal.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar over `total` bytes with rate and ETA; hidden when not on a terminal.
pub fn bytes_bar(total: u64, message: &str) -> ProgressBar {
    bar(
        total,
        message,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
}

/// A progress bar over `total` items with rate and ETA; hidden when not on a terminal.
pub fn count_bar(total: u64, message: &str, unit: &str) -> ProgressBar {
    let template =
        format!("{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} eta {{eta}}");
    bar(total, message, &template)
}

/// A spinner for work without a known size; hidden when not on a terminal.
pub fn spinner(message: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner().with_message(message.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

fn bar(total: u64, message: &str, template: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ");
    ProgressBar::new(total)
        .with_style(style)
        .with_message(message.to_owned())
}

/// `2024-05-01T00:00:00.000Z` for a time in ms.
pub fn format_time(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = lookout_model::time::civil_from_days(days);
    let (hours, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, millis) = (rest / 1000, rest % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

/// A duration in ms as `2h`, `1d12h`, `90s`, `250ms`.
pub fn format_duration(millis: i64) -> String {
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let mut seconds = millis / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// A byte count as `512B`, `1.5KiB`, `20.0MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Bytes under `path`, recursively (0 when it does not exist).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Rows of cells as left-aligned columns separated by two spaces (numbers right-aligned).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate().take(columns) {
            widths[column] = widths[column].max(cell.len());
        }
    }
    let numeric: Vec<bool> = (0..columns)
        .map(|column| {
            !rows.is_empty()
                && rows.iter().all(|row| {
                    row.get(column).is_some_and(|cell| {
                        cell == "-"
                            || cell
                                .chars()
                                .next()
                                .is_some_and(|first| first.is_ascii_digit())
                                && !cell.contains('T')
                    })
                })
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (column, cell) in cells.iter().enumerate() {
            if column > 0 {
                text.push_str("  ");
            }
            let width = widths[column];
            if numeric[column] {
                text.push_str(&format!("{cell:>width$}"));
            } else {
                text.push_str(&format!("{cell:<width$}"));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_in_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_714_521_600_123), "2024-05-01T00:00:00.123Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(format_duration(7_200_000), "2h");
        assert_eq!(format_duration(129_600_000), "1d12h");
        assert_eq!(format_duration(250), "250ms");
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(1536), "1.5KiB");
    }

    #[test]
    fn time_arguments_take_millis_and_rfc3339() {
        assert_eq!("1000".parse::<TimeArg>().unwrap(), TimeArg(1000));
        assert_eq!(
            "1970-01-01T00:00:01Z".parse::<TimeArg>().unwrap(),
            TimeArg(1000)
        );
        assert!("yesterday".parse::<TimeArg>().is_err());
    }
}
