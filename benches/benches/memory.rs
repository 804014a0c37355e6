//! `memory/200k_series/{1_sample,120_samples}`: resident memory of the head per active series,
//! labels included. Not a criterion bench: it measures bytes, not time.
//!
//! Each variant runs in a child process of its own (this binary re-executed), so memory freed
//! by one variant cannot hide the next one's. In a child:
//! 1. generate the input (labels and write requests) and touch it;
//! 2. read RSS (`before`);
//! 3. create the store and append 1 or 120 scrapes of every series, reusing the input's
//!    requests in place (no allocation outside the store);
//! 4. read RSS (`after`). The store's memory is `after - before`: the input was allocated
//!    before `before` and is still alive, so none of it is counted, and the store holds no
//!    reference to it (it interns its own copies of the label strings).
//!
//! Run: `cargo bench -p lookout-benches --bench memory`. Without `--bench` (as under
//! `cargo test --benches`) it runs a small smoke variant of 2,000 series.

use std::process::Command;

use lookout_benches::{
    average_label_bytes, node_exporter_series, peak_rss_bytes, rss_bytes, set_round, write_batches,
};
use lookout_tsdb::{HeadOptions, Tsdb};

const SERIES: usize = 200_000;
const SMOKE_SERIES: usize = 2_000;
const PER_BATCH: usize = 1_000;
const TARGET_BYTES_PER_SERIES: f64 = 1024.0;
const VARIANT_ENV: &str = "LOOKOUT_BENCH_MEMORY_VARIANT";

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Ok(variant) = std::env::var(VARIANT_ENV) {
        let (series, samples) = variant
            .split_once(':')
            .and_then(|(series, samples)| Some((series.parse().ok()?, samples.parse().ok()?)))
            .expect("variant is SERIES:SAMPLES");
        run_variant(series, samples);
        return;
    }
    let bench_mode = args.iter().any(|arg| arg == "--bench");
    let series = if bench_mode { SERIES } else { SMOKE_SERIES };
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    for samples in [1u64, 120] {
        let name = format!(
            "memory/{}k_series/{samples}_sample{}",
            series / 1000,
            if samples == 1 { "" } else { "s" }
        );
        if !filters.is_empty() && !filters.iter().any(|filter| name.contains(filter.as_str())) {
            continue;
        }
        println!("{name}");
        let exe = std::env::current_exe().expect("own executable path");
        let status = Command::new(exe)
            .env(VARIANT_ENV, format!("{series}:{samples}"))
            .status()
            .expect("child starts");
        assert!(status.success(), "{name} failed: {status}");
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn run_variant(count: usize, samples: u64) {
    let start = rss_bytes().expect("/proc/self/status is readable");
    let series = node_exporter_series(count);
    let mut batches = write_batches(&series, PER_BATCH);
    set_round(&mut batches, &series, 0, 0);
    let before = rss_bytes().expect("/proc/self/status is readable");

    let tsdb = Tsdb::in_memory(HeadOptions::default()).expect("store opens");
    for round in 0..samples {
        set_round(&mut batches, &series, 0, round);
        for batch in &batches {
            let outcome = tsdb.append(batch).expect("append succeeds");
            assert_eq!(outcome.accepted, batch.series.len() as u64, "{outcome:?}");
        }
    }
    let after = rss_bytes().expect("/proc/self/status is readable");
    let peak = peak_rss_bytes().unwrap_or(0);
    let stats = tsdb.head().stats();
    assert_eq!(stats.series, count as u64);

    let store = after.saturating_sub(before);
    let per_series = store as f64 / count as f64;
    let verdict = if per_series <= TARGET_BYTES_PER_SERIES {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "  store RSS:          {:>8.1} MiB = {per_series:>6.0} bytes/series \
         (target <= {TARGET_BYTES_PER_SERIES:.0}: {verdict})",
        mib(store)
    );
    println!(
        "  input (not counted): {:>7.1} MiB for {count} series, {:.0} bytes of label text/series",
        mib(before.saturating_sub(start)),
        average_label_bytes(&series)
    );
    println!(
        "  RSS: start {:.1} MiB, input {:.1} MiB, after appends {:.1} MiB, peak {:.1} MiB",
        mib(start),
        mib(before),
        mib(after),
        mib(peak)
    );
    let per = |bytes: u64| bytes as f64 / count as f64;
    println!(
        "  head().stats(): series {}, chunks {}, symbols {}, series_heap_bytes {:.1} MiB \
         ({:.0}/series), index_heap_bytes {:.1} MiB ({:.0}/series); \
         stats cover {:.0}/series of the {per_series:.0} measured",
        stats.series,
        stats.chunks,
        stats.symbols,
        mib(stats.series_heap_bytes),
        per(stats.series_heap_bytes),
        mib(stats.index_heap_bytes),
        per(stats.index_heap_bytes),
        per(stats.series_heap_bytes + stats.index_heap_bytes),
    );
    drop(batches);
    drop(series);
    drop(tsdb);
}
