//! `verify`: every checksum and footer of a data directory; exit code 0 when clean, 1 on
//! corruption. Read-only.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use lookout_tsdb::verify::{bytes_to_verify, verify_dir, Finding, Severity, VerifyReport};

use crate::common::{bytes_bar, format_bytes};

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    crate::list::require_store_dir(dir)?;
    let bar = bytes_bar(bytes_to_verify(dir), "verifying");
    let report = verify_dir(dir, &mut |bytes| bar.inc(bytes))
        .with_context(|| format!("cannot verify {}", dir.display()))?;
    bar.finish_and_clear();
    print!("{}", render(dir, &report));
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line per finding (`CORRUPT file offset N: reason`), then a summary.
pub fn render(dir: &Path, report: &VerifyReport) -> String {
    let mut out = String::new();
    for finding in &report.findings {
        out.push_str(&finding_line(dir, finding));
        out.push('\n');
    }
    let corruptions = report
        .findings
        .iter()
        .filter(|finding| finding.severity == Severity::Corruption)
        .count();
    let warnings = report.findings.len() - corruptions;
    out.push_str(&format!(
        "checked {} blocks and {} WAL files ({}): {}, {} warning{}\n",
        report.blocks,
        report.wal_files,
        format_bytes(report.bytes),
        if corruptions == 0 {
            "no corruption".to_owned()
        } else {
            format!("{corruptions} corrupt")
        },
        warnings,
        if warnings == 1 { "" } else { "s" },
    ));
    out
}

fn finding_line(dir: &Path, finding: &Finding) -> String {
    let file = finding
        .file
        .strip_prefix(dir)
        .unwrap_or(&finding.file)
        .display();
    let label = match finding.severity {
        Severity::Corruption => "CORRUPT",
        Severity::Warning => "warning",
    };
    match finding.offset {
        Some(offset) => format!("{label} {file} offset {offset}: {}", finding.reason),
        None => format!("{label} {file}: {}", finding.reason),
    }
}
