//! `list`: the blocks and the head of a data directory, one row each.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use lookout_tsdb::ReadOnlyStore;

use crate::common::{dir_bytes, format_bytes, format_duration, format_time, spinner, table};

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let store = open_read_only(dir)?;
    print!("{}", render(&store));
    Ok(ExitCode::SUCCESS)
}

/// Opens `dir` read-only (no lock, nothing changed), with a spinner while the WAL is read.
pub fn open_read_only(dir: &Path) -> anyhow::Result<ReadOnlyStore> {
    require_store_dir(dir)?;
    let spinner = spinner("reading blocks and WAL");
    let store = ReadOnlyStore::open(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?;
    spinner.finish_and_clear();
    Ok(store)
}

/// Refuses a directory with neither `blocks/` nor `wal/`: a mistyped path would otherwise
/// read as an empty store.
pub fn require_store_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() && !dir.join("blocks").is_dir() && !dir.join("wal").is_dir() {
        anyhow::bail!(
            "{} has neither blocks/ nor wal/: not a Lookout data directory; give the server's \
             --storage.tsdb.path",
            dir.display()
        );
    }
    Ok(())
}

/// The `list` output.
pub fn render(store: &ReadOnlyStore) -> String {
    let mut rows = Vec::new();
    let (mut series, mut samples, mut chunks, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for block in store.blocks() {
        let meta = block.meta();
        rows.push(vec![
            meta.id.clone(),
            format_time(meta.min_time),
            format_time(meta.max_time),
            format_duration(meta.max_time.saturating_sub(meta.min_time)),
            meta.stats.series.to_string(),
            meta.stats.samples.to_string(),
            meta.stats.chunks.to_string(),
            format_bytes(block.size_bytes()),
            meta.compaction.level.to_string(),
        ]);
        series += meta.stats.series;
        samples += meta.stats.samples;
        chunks += meta.stats.chunks;
        bytes += block.size_bytes();
    }
    let head = store.head();
    let stats = head.stats();
    let head_samples: u64 = head
        .select(&[], i64::MIN, i64::MAX)
        .iter()
        .map(|series| series.samples.len() as u64)
        .sum();
    let wal_bytes = dir_bytes(&store.dir().join("wal"));
    let (min, max, span) = match head.time_range() {
        Some((min_time, max_time)) => (
            format_time(min_time),
            // The head's range is inclusive; blocks show an exclusive end.
            format_time(max_time.saturating_add(1)),
            format_duration(max_time.saturating_sub(min_time).saturating_add(1)),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    rows.push(vec![
        "head (from the WAL)".into(),
        min,
        max,
        span,
        stats.series.to_string(),
        head_samples.to_string(),
        stats.chunks.to_string(),
        format_bytes(wal_bytes),
        "-".into(),
    ]);
    rows.push(vec![
        "total".into(),
        String::new(),
        String::new(),
        String::new(),
        (series + stats.series).to_string(),
        (samples + head_samples).to_string(),
        (chunks + stats.chunks).to_string(),
        format_bytes(bytes + wal_bytes),
        String::new(),
    ]);
    let mut out = table(
        &[
            "BLOCK", "MIN TIME", "MAX TIME", "SPAN", "SERIES", "SAMPLES", "CHUNKS", "BYTES",
            "LEVEL",
        ],
        &rows,
    );
    out.push_str(
        "\nTimes are UTC; MAX TIME is exclusive. Head bytes are the WAL's on disk. Series \
         present in several blocks count once per block.\n",
    );
    out.push_str(&notes(store));
    out
}

/// Lines about anything unusual: unreadable or quarantined blocks, WAL damage.
pub fn notes(store: &ReadOnlyStore) -> String {
    let mut out = String::new();
    for block in store.unreadable() {
        out.push_str(&format!(
            "warning: block {} cannot be read (a server would quarantine it): {}\n",
            block.id, block.error
        ));
    }
    for name in store.quarantined() {
        out.push_str(&format!(
            "warning: quarantine/{name} holds a block set aside at an earlier open\n"
        ));
    }
    let replay = store.replay_report();
    if let Some(torn) = &replay.torn_tail {
        out.push_str(&format!(
            "note: the WAL ends in an incomplete record ({} at offset {}): a crash or a write \
             in progress; the head above stops before it\n",
            file_name(&torn.file),
            torn.offset
        ));
    }
    if let Some(damage) = &replay.corruption {
        out.push_str(&format!(
            "warning: the WAL is damaged at {} offset {} ({}); the head above stops there; \
             run `lookout-tsdb verify`\n",
            file_name(&damage.file),
            damage.offset,
            damage.reason
        ));
    }
    out
}

/// A WAL file named relative to the data directory: `wal/00000003`.
fn file_name(path: &Path) -> String {
    let mut parts: Vec<String> = path
        .iter()
        .rev()
        .take(3)
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    parts.reverse();
    match parts.iter().position(|part| part == "wal") {
        Some(start) => parts[start..].join("/"),
        None => path.display().to_string(),
    }
}
