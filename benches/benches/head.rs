//! `head/append/100k_series/{wal,no_wal}/threads_{1,2}` and
//! `head/select/{1,1k,100k}_series`: the head's steady-state ingest and its reads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use lookout_benches::{
    cluster_name, instance_name, node_exporter_series, set_round, write_batches, SeriesSpec, JOB,
    SERIES_PER_CLUSTER,
};
use lookout_model::Matcher;
use lookout_storage::WriteBatch;
use lookout_tsdb::{FsyncPolicy, HeadOptions, Tsdb, TsdbOptions};

/// Series in the store.
const SERIES: usize = 100_000;
/// Series per write request (a remote-write request of 1000 series).
const PER_BATCH: usize = 1_000;
/// Samples per series in the store that `head/select` reads (one full chunk).
const SELECT_SAMPLES: u64 = 120;

fn append_all(tsdb: &Tsdb, batches: &[WriteBatch]) {
    for batch in batches {
        let outcome = tsdb.append(batch).expect("append succeeds");
        assert_eq!(outcome.accepted, batch.series.len() as u64, "{outcome:?}");
    }
}

/// The series split into `threads` contiguous parts, each as (first series index, requests).
fn split(series: &[SeriesSpec], threads: usize) -> Vec<(usize, Vec<WriteBatch>)> {
    let per_thread = series.len().div_ceil(threads);
    series
        .chunks(per_thread)
        .enumerate()
        .map(|(part, chunk)| (part * per_thread, write_batches(chunk, PER_BATCH)))
        .collect()
}

/// A store under steady-state ingest: every series exists, `round` is the last scrape written.
struct AppendState {
    tsdb: Tsdb,
    /// The series split between the appending threads.
    parts: Vec<(usize, Vec<WriteBatch>)>,
    round: u64,
    _dir: tempfile::TempDir,
}

impl AppendState {
    fn new(series: &[SeriesSpec], wal: bool, threads: usize) -> AppendState {
        let dir = tempfile::tempdir().expect("temporary directory");
        let tsdb = if wal {
            Tsdb::open(TsdbOptions::new(dir.path()).fsync(FsyncPolicy::Never))
        } else {
            Tsdb::in_memory(HeadOptions::default())
        }
        .expect("store opens");
        let mut parts = split(series, threads);
        // Create every series before timing: the bench measures the steady state.
        for (first, batches) in &mut parts {
            set_round(batches, series, *first, 0);
            append_all(&tsdb, batches);
        }
        assert_eq!(tsdb.head().stats().series, series.len() as u64);
        AppendState {
            tsdb,
            parts,
            round: 0,
            _dir: dir,
        }
    }

    /// Appends the next scrape of every series; returns the time the appends took.
    fn append_round(&mut self, series: &[SeriesSpec]) -> Duration {
        // Fill in the next scrape's samples outside the timed part.
        self.round += 1;
        for (first, batches) in &mut self.parts {
            set_round(batches, series, *first, self.round);
        }
        let tsdb = &self.tsdb;
        let start = Instant::now();
        if let [(_, batches)] = self.parts.as_slice() {
            append_all(tsdb, batches);
        } else {
            std::thread::scope(|scope| {
                for (_, batches) in &self.parts {
                    scope.spawn(move || append_all(tsdb, batches));
                }
            });
        }
        start.elapsed()
    }
}

fn append(c: &mut Criterion) {
    let series = node_exporter_series(SERIES);
    let mut group = c.benchmark_group("head/append");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(SERIES as u64));
    for wal in [false, true] {
        for threads in [1, 2] {
            // Built on first use, so a filtered-out variant costs nothing.
            let mut state: Option<AppendState> = None;
            let name = format!("{}/threads_{threads}", if wal { "wal" } else { "no_wal" });
            group.bench_function(BenchmarkId::new("100k_series", name), |b| {
                let state = state.get_or_insert_with(|| AppendState::new(&series, wal, threads));
                b.iter_custom(|iters| (0..iters).map(|_| state.append_round(&series)).sum())
            });
            if let Some(state) = state {
                state.tsdb.close().expect("wal closes");
            }
        }
    }
    group.finish();
}

/// A store of 100k series × 120 samples.
fn select_store() -> Tsdb {
    let series = node_exporter_series(SERIES);
    let tsdb = Tsdb::in_memory(HeadOptions::default()).expect("store opens");
    let mut batches = write_batches(&series, PER_BATCH);
    for round in 0..SELECT_SAMPLES {
        set_round(&mut batches, &series, 0, round);
        append_all(&tsdb, &batches);
    }
    tsdb
}

fn select(c: &mut Criterion) {
    let cases = [
        (
            "1_series",
            vec![
                Matcher::equal("__name__", "node_cpu_seconds_total"),
                Matcher::equal("instance", instance_name(0)),
                Matcher::equal("cpu", "0"),
                Matcher::equal("mode", "idle"),
            ],
            1,
        ),
        (
            "1k_series",
            vec![Matcher::equal("cluster", cluster_name(0))],
            SERIES_PER_CLUSTER,
        ),
        ("100k_series", vec![Matcher::equal("job", JOB)], SERIES),
    ];

    let mut group = c.benchmark_group("head/select");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // Built on first use, so filtering out every select costs nothing.
    let mut store: Option<Tsdb> = None;
    for (name, matchers, expected) in &cases {
        let samples = *expected as u64 * SELECT_SAMPLES;
        group.throughput(Throughput::Elements(samples));
        let mut checked = false;
        group.bench_function(*name, |b| {
            let tsdb = store.get_or_insert_with(select_store);
            if !checked {
                let result = tsdb.select_blocking(matchers, i64::MIN, i64::MAX);
                assert_eq!(result.len(), *expected, "{name} selects {expected} series");
                let got: usize = result.iter().map(|series| series.samples.len()).sum();
                assert_eq!(got as u64, samples, "{name} reads every sample");
                checked = true;
            }
            b.iter(|| black_box(tsdb.select_blocking(black_box(matchers), i64::MIN, i64::MAX)))
        });
    }
    group.finish();
}

criterion_group!(benches, append, select);
criterion_main!(benches);
