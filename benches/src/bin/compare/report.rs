//! The figures of one run, the plain-text table with Lookout/peer ratios, and the JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::queries::Summary;
use crate::targets::TargetKind;

/// Timings of one query case on one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryFigures {
    /// The case's name.
    pub name: String,
    /// Timed runs, in seconds (the untimed first run is not among them).
    pub seconds: Vec<f64>,
    /// The first run's answer.
    pub summary: Option<Summary>,
    /// Why the case failed on this target, if it did.
    pub error: Option<String>,
}

impl QueryFigures {
    /// Median, min and max of the timed runs.
    pub fn spread(&self) -> Option<(f64, f64, f64)> {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => return None,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some((median, sorted[0], sorted[sorted.len() - 1]))
    }
}

/// Everything measured on one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetFigures {
    /// Which system.
    pub target: TargetKind,
    /// The program's version, as far as it tells.
    pub version: String,
    /// Why it was not measured (not installed, failed to start).
    pub skipped: Option<String>,
    /// Wall time of the target's own segments (the other targets' turns excluded).
    pub ingest_seconds: Option<f64>,
    /// Samples sent ÷ `ingest_seconds`.
    pub samples_per_second: Option<f64>,
    /// The server's user + system CPU from its first request until everything was queryable.
    pub ingest_cpu_seconds: Option<f64>,
    /// Samples sent ÷ `ingest_cpu_seconds`.
    pub samples_per_cpu_second: Option<f64>,
    /// Remote-write requests refused or failed.
    pub failed_requests: u64,
    /// The first refusal's message.
    pub first_error: Option<String>,
    /// From the last acknowledged request until the probe query saw every last sample.
    pub queryable_after_seconds: Option<f64>,
    /// `VmHWM` at the end of ingestion.
    pub peak_rss_ingest_bytes: Option<u64>,
    /// `VmRSS` after ingestion, a flush and a pause.
    pub settled_rss_bytes: Option<u64>,
    /// `settled_rss_bytes` ÷ series.
    pub settled_rss_bytes_per_series: Option<f64>,
    /// `VmHWM` after the queries, just before the stop.
    pub peak_rss_overall_bytes: Option<u64>,
    /// Apparent size of the data directory after a graceful stop.
    pub disk_bytes: Option<u64>,
    /// `disk_bytes` ÷ samples sent.
    pub disk_bytes_per_sample: Option<f64>,
    /// Restart on the same data until the probe query saw every last sample.
    pub cold_start_seconds: Option<f64>,
    /// After the queries, SIGKILL (a crash: nothing flushed) and a restart, until the probe
    /// query saw every last sample (before the graceful stop and the cold start).
    pub restart_after_kill_seconds: Option<f64>,
    /// The query set.
    pub queries: Vec<QueryFigures>,
}

impl TargetFigures {
    /// Figures not measured yet.
    pub fn new(target: TargetKind, version: String) -> TargetFigures {
        TargetFigures {
            target,
            version,
            skipped: None,
            ingest_seconds: None,
            samples_per_second: None,
            ingest_cpu_seconds: None,
            samples_per_cpu_second: None,
            failed_requests: 0,
            first_error: None,
            queryable_after_seconds: None,
            peak_rss_ingest_bytes: None,
            settled_rss_bytes: None,
            settled_rss_bytes_per_series: None,
            peak_rss_overall_bytes: None,
            disk_bytes: None,
            disk_bytes_per_sample: None,
            cold_start_seconds: None,
            restart_after_kill_seconds: None,
            queries: Vec::new(),
        }
    }
}

/// The run as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// Machine and commit.
    pub machine: String,
    /// `small`, `medium`, `large` (or custom).
    pub scale: String,
    /// Series written.
    pub series: usize,
    /// Samples written to each target.
    pub samples: u64,
    /// Remote-write connections per target.
    pub connections: usize,
    /// Seconds to generate and encode the data set (before any timing).
    pub generate_seconds: f64,
    /// Total wall time of the run.
    pub total_seconds: f64,
    /// Agreement warnings: queries whose answers differ between targets.
    pub warnings: Vec<String>,
    /// Per target.
    pub targets: Vec<TargetFigures>,
}

/// Whether a larger figure is better; decides nothing in the table but is printed with it.
#[derive(Debug, Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

impl Better {
    fn arrow(self) -> &'static str {
        match self {
            Better::Higher => "↑",
            Better::Lower => "↓",
        }
    }
}

/// One row: a name, which way is better, and a value and its text per target.
struct Row {
    name: String,
    better: Better,
    cells: Vec<Option<(f64, String)>>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rows(report: &Report) -> Vec<Row> {
    let targets = &report.targets;
    let row = |name: &str, better, cell: &dyn Fn(&TargetFigures) -> Option<(f64, String)>| Row {
        name: name.to_owned(),
        better,
        cells: targets.iter().map(cell).collect(),
    };
    let float = |value: Option<f64>, digits: usize| value.map(|v| (v, format!("{v:.digits$}")));
    let mut out = vec![
        row("ingest samples/s", Better::Higher, &|t| {
            t.samples_per_second
                .map(|v| (v, format!("{:.0}k", v / 1e3)))
        }),
        row("ingest samples/CPU-s", Better::Higher, &|t| {
            t.samples_per_cpu_second
                .map(|v| (v, format!("{:.0}k", v / 1e3)))
        }),
        row("ingest CPU s", Better::Lower, &|t| {
            float(t.ingest_cpu_seconds, 1)
        }),
        row("refused requests", Better::Lower, &|t| {
            t.ingest_seconds
                .map(|_| (t.failed_requests as f64, t.failed_requests.to_string()))
        }),
        row("queryable after s", Better::Lower, &|t| {
            float(t.queryable_after_seconds, 2)
        }),
        row("peak RSS ingest MiB", Better::Lower, &|t| {
            float(t.peak_rss_ingest_bytes.map(mib), 0)
        }),
        row("settled RSS MiB", Better::Lower, &|t| {
            float(t.settled_rss_bytes.map(mib), 0)
        }),
        row("settled RSS B/series", Better::Lower, &|t| {
            float(t.settled_rss_bytes_per_series, 0)
        }),
        row("peak RSS overall MiB", Better::Lower, &|t| {
            float(t.peak_rss_overall_bytes.map(mib), 0)
        }),
        row("disk MiB after stop", Better::Lower, &|t| {
            float(t.disk_bytes.map(mib), 1)
        }),
        row("disk B/sample", Better::Lower, &|t| {
            float(t.disk_bytes_per_sample, 3)
        }),
        row("cold start s", Better::Lower, &|t| {
            float(t.cold_start_seconds, 2)
        }),
        row("restart after kill s", Better::Lower, &|t| {
            float(t.restart_after_kill_seconds, 2)
        }),
    ];
    let case_names: Vec<String> = targets
        .iter()
        .find(|t| !t.queries.is_empty())
        .map(|t| t.queries.iter().map(|q| q.name.clone()).collect())
        .unwrap_or_default();
    for (index, name) in case_names.iter().enumerate() {
        out.push(row(&format!("{name} ms"), Better::Lower, &|t| {
            let figures = t.queries.get(index)?;
            if figures.error.is_some() {
                return Some((f64::NAN, "error".to_owned()));
            }
            let (median, min, max) = figures.spread()?;
            let ms = |s: f64| s * 1e3;
            Some((
                median,
                format!("{:.1} [{:.1}–{:.1}]", ms(median), ms(min), ms(max)),
            ))
        }));
    }
    out
}

/// The table: one column per target, then Lookout ÷ each peer (when Lookout was measured).
pub fn table(report: &Report) -> String {
    let rows = rows(report);
    let lookout = report
        .targets
        .iter()
        .position(|t| t.target == TargetKind::Lookout && t.skipped.is_none());
    let peers: Vec<usize> = (0..report.targets.len())
        .filter(|&index| Some(index) != lookout && report.targets[index].skipped.is_none())
        .collect();
    let mut header = vec!["figure".to_owned(), "".to_owned()];
    header.extend(report.targets.iter().map(|t| t.target.name().to_owned()));
    if lookout.is_some() {
        header.extend(
            peers
                .iter()
                .map(|&peer| format!("lookout/{}", short_name(report.targets[peer].target))),
        );
    }
    let mut lines = vec![header];
    for row in &rows {
        let mut line = vec![row.name.clone(), row.better.arrow().to_owned()];
        line.extend(row.cells.iter().map(|cell| {
            cell.as_ref()
                .map_or_else(|| "—".to_owned(), |(_, text)| text.clone())
        }));
        if let Some(lookout) = lookout {
            for &peer in &peers {
                line.push(ratio(&row.cells[lookout], &row.cells[peer]));
            }
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (number, line) in lines.iter().enumerate() {
        out.push('|');
        for (cell, width) in line.iter().zip(&widths) {
            let pad = width - cell.chars().count();
            if number == 0 || !cell.starts_with(|c: char| c.is_ascii_digit() || c == '—') {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
        if number == 0 {
            out.push('|');
            for width in &widths {
                let _ = write!(out, "{}|", "-".repeat(width + 2));
            }
            out.push('\n');
        }
    }
    out
}

fn short_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Lookout => "lookout",
        TargetKind::Prometheus => "prom",
        TargetKind::VictoriaMetrics => "vm",
    }
}

fn ratio(lookout: &Option<(f64, String)>, peer: &Option<(f64, String)>) -> String {
    match (lookout, peer) {
        (Some((ours, _)), Some((theirs, _)))
            if ours.is_finite() && theirs.is_finite() && *theirs != 0.0 =>
        {
            format!("{:.2}", ours / theirs)
        }
        (Some((ours, _)), Some((theirs, _))) if *ours == 0.0 && *theirs == 0.0 => "=".to_owned(),
        _ => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let figures = QueryFigures {
            seconds: vec![0.3, 0.1, 0.2, 0.9],
            ..QueryFigures::default()
        };
        assert_eq!(figures.spread(), Some((0.25, 0.1, 0.9)));
        assert_eq!(QueryFigures::default().spread(), None);
    }

    #[test]
    fn table_has_ratio_columns_for_each_measured_peer() {
        let mut lookout = TargetFigures::new(TargetKind::Lookout, String::new());
        lookout.samples_per_second = Some(2_000_000.0);
        let mut prometheus = TargetFigures::new(TargetKind::Prometheus, String::new());
        prometheus.samples_per_second = Some(500_000.0);
        let mut vm = TargetFigures::new(TargetKind::VictoriaMetrics, String::new());
        vm.skipped = Some("not installed".to_owned());
        let report = Report {
            date: String::new(),
            machine: String::new(),
            scale: "small".to_owned(),
            series: 1,
            samples: 1,
            connections: 1,
            generate_seconds: 0.0,
            total_seconds: 0.0,
            warnings: Vec::new(),
            targets: vec![lookout, prometheus, vm],
        };
        let text = table(&report);
        let header = text.lines().next().unwrap();
        assert!(header.contains("lookout/prom") && !header.contains("lookout/vm"));
        let ingest = text
            .lines()
            .find(|l| l.contains("ingest samples/s"))
            .unwrap();
        let cells: Vec<&str> = ingest.split('|').map(str::trim).collect();
        assert_eq!(cells[3..7], ["2000k", "500k", "—", "4.00"], "{ingest}");
    }
}
