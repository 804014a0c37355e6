//! `disk`: bytes per sample on disk before and after compaction, compaction throughput, and
//! the time to open a data directory (not criterion: one measured run, figures printed).
//!
//! Data: 10k node_exporter-like series (see `src/lib.rs`) scraped every 15 s. Seven hours are
//! written with 2 h blocks and automatic compaction off, which cuts three level-1 blocks
//! (Gorilla chunks) covering six hours; then `compact()` merges them into one 6 h level-2 block
//! (columnar zstd chunks), the cold format. Open time: the same directory reopened, and a
//! second one holding 1M series (`--open-series N` changes that count).
//!
//! Run: `cargo bench -p lookout-benches --bench disk` (about a minute).

use std::path::Path;
use std::time::Instant;

use lookout_benches::{
    node_exporter_series, set_round, value_at, write_batches, SeriesSpec, SCRAPE_INTERVAL_MS,
};
use lookout_model::Sample;
use lookout_storage::WriteBatch;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

const SERIES: usize = 10_000;
const HOUR: i64 = 3_600_000;
const BLOCK: i64 = 2 * HOUR;
/// 2023-11-14 04:00 UTC: a multiple of 6 h, so three 2 h blocks fill one compaction window.
const ALIGNED_START_MS: i64 = 1_699_920_000_000;

/// Like `set_round`, from an aligned start.
fn set_aligned_round(batches: &mut [WriteBatch], series: &[SeriesSpec], round: u64) {
    let t = ALIGNED_START_MS + round as i64 * SCRAPE_INTERVAL_MS;
    let mut index = 0;
    for batch in batches {
        for entry in &mut batch.series {
            let kind = series[index].kind;
            for sample in &mut entry.samples {
                *sample = Sample::new(t, value_at(kind, index, round));
            }
            index += 1;
        }
    }
}

fn options(dir: &Path) -> TsdbOptions {
    TsdbOptions::new(dir)
        .fsync(FsyncPolicy::Never)
        .block_duration_ms(BLOCK)
        .retention_ms(None)
        .auto_compaction(false)
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.file_type() {
                    Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
                    _ => entry.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let series_count = if quick { 200 } else { SERIES };
    let open_series: usize = std::env::args()
        .skip_while(|arg| arg != "--open-series")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(if quick { 1_000 } else { 1_000_000 });

    let series = node_exporter_series(series_count);
    let dir = tempfile::tempdir().expect("temporary directory");
    let tsdb = Tsdb::open(options(dir.path())).expect("store opens");
    let mut batches = write_batches(&series, 1_000);
    // Seven hours and a quarter: the head reaches 1.5 block durations past 4 h, so the third
    // level-1 block is cut.
    let rounds = ((7 * HOUR + HOUR / 4) / SCRAPE_INTERVAL_MS) as u64;
    let started = Instant::now();
    for round in 0..rounds {
        set_aligned_round(&mut batches, &series, round);
        for batch in &batches {
            tsdb.append(batch).expect("append");
        }
    }
    let ingest = started.elapsed();
    let level1 = tsdb.blocks();
    let level1_samples: u64 = level1.iter().map(|b| b.meta().stats.samples).sum();
    let level1_bytes: u64 = level1.iter().map(|b| b.size_bytes()).sum();

    let started = Instant::now();
    let compacted = tsdb.compact().expect("compaction");
    let compaction = started.elapsed();
    let level2 = tsdb.blocks();
    let cold: Vec<_> = level2
        .iter()
        .filter(|b| b.meta().compaction.level >= 2)
        .collect();
    let cold_samples: u64 = cold.iter().map(|b| b.meta().stats.samples).sum();
    let cold_bytes: u64 = cold.iter().map(|b| b.size_bytes()).sum();
    let cold_chunk_bytes: u64 = cold
        .iter()
        .map(|b| dir_bytes(&b.dir().join("chunks")))
        .sum();
    let cold_index_bytes: u64 = cold
        .iter()
        .map(|b| {
            std::fs::metadata(b.dir().join("index"))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    tsdb.close().expect("close");
    drop(tsdb);

    let started = Instant::now();
    let reopened = Tsdb::open(options(dir.path())).expect("reopen");
    let reopen = started.elapsed();
    let head_series = reopened.head().stats().series;
    drop(reopened);

    println!(
        "disk/10k_series_7.25h_15s ({} series, {} samples written)",
        series_count,
        rounds * series_count as u64
    );
    println!(
        "  ingest: {:.2} M samples/s (one thread, WAL on, fsync never)",
        (rounds * series_count as u64) as f64 / ingest.as_secs_f64() / 1e6
    );
    println!(
        "  level-1 blocks (Gorilla): {} blocks, {} samples, {} bytes = {:.3} bytes/sample",
        level1.len(),
        level1_samples,
        level1_bytes,
        level1_bytes as f64 / level1_samples.max(1) as f64
    );
    println!(
        "  compaction: {} block(s) written in {:.2} s = {:.2} M samples/s",
        compacted.len(),
        compaction.as_secs_f64(),
        cold_samples as f64 / compaction.as_secs_f64() / 1e6
    );
    println!(
        "  level-2 block (columnar zstd): {} samples, {} bytes = {:.3} bytes/sample (chunks {:.3}, index {:.3}; target <= 0.7: {})",
        cold_samples,
        cold_bytes,
        cold_bytes as f64 / cold_samples.max(1) as f64,
        cold_chunk_bytes as f64 / cold_samples.max(1) as f64,
        cold_index_bytes as f64 / cold_samples.max(1) as f64,
        if (cold_bytes as f64 / cold_samples.max(1) as f64) <= 0.7 { "met" } else { "MISSED" }
    );
    println!(
        "  reopen (blocks + WAL replay of {head_series} head series): {:.0} ms",
        reopen.as_secs_f64() * 1e3
    );

    // Open time with many series: one scrape of `open_series` series, in the WAL, then as a
    // block (snapshot of the head).
    let many = node_exporter_series(open_series);
    let wal_dir = tempfile::tempdir().expect("temporary directory");
    {
        let tsdb = Tsdb::open(options(wal_dir.path())).expect("store opens");
        let mut batches = write_batches(&many, 1_000);
        set_round(&mut batches, &many, 0, 0);
        for batch in &batches {
            tsdb.append(batch).expect("append");
        }
        let snapshot = wal_dir.path().join("snapshot");
        tsdb.snapshot(&snapshot, true).expect("snapshot");
        tsdb.close().expect("close");
    }
    drop(many);
    let started = Instant::now();
    let from_wal = Tsdb::open(options(wal_dir.path())).expect("open");
    let wal_open = started.elapsed();
    assert_eq!(from_wal.head().stats().series, open_series as u64);
    drop(from_wal);
    let started = Instant::now();
    let from_block = Tsdb::open(options(&wal_dir.path().join("snapshot"))).expect("open");
    let block_open = started.elapsed();
    assert_eq!(
        from_block.blocks()[0].meta().stats.series,
        open_series as u64
    );
    println!("open/{open_series}_series");
    println!(
        "  from the WAL (replay): {:.0} ms",
        wal_open.as_secs_f64() * 1e3
    );
    println!("  from one block: {:.0} ms", block_open.as_secs_f64() * 1e3);
}
