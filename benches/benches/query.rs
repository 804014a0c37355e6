//! `query/instant/*` and `query/range/*`: PromQL over an in-memory store of node_exporter-like
//! series (10k series, 6 h at 15 s: 14.4M samples), queries as a Grafana dashboard sends them.
//! Each iteration is one whole query: fetch from the store, evaluate, build the result.
//! `query/range_blocks/*` asks the same range queries of an on-disk store whose older hours
//! were cut into 2 h blocks as ingestion went (what a running server holds), so reads merge
//! blocks and the head.
//! `query/labels_blocks/*` asks the `series` and label-values questions of the side-by-side
//! harness (`compare`, medium scale) of such a store built from [`mixed_series`]: 100k series
//! (node_exporter plus an application's histograms) × 6 h, through the `Storage` calls the
//! HTTP handlers make.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use lookout_benches::{
    cluster_name, mixed_series, node_exporter_series, set_round, write_batches, SeriesSpec,
    BASE_TIMESTAMP_MS,
};
use lookout_model::{MatchKind, Matcher};
use lookout_promql::{Engine, QueryStats, QueryValue};
use lookout_storage::{collect_series, LabelRequest, SelectRequest, Storage};
use lookout_tsdb::{FsyncPolicy, HeadOptions, Tsdb, TsdbOptions};

/// The allocator `lookout-server` runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Series in the store.
const SERIES: usize = 10_000;
/// Scrapes per series: 6 h at 15 s.
const SCRAPES: u64 = 6 * 240;
/// The end of the data.
const END_MS: i64 = BASE_TIMESTAMP_MS + (SCRAPES as i64 - 1) * 15_000;

fn store() -> Tsdb {
    let tsdb = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .expect("store");
    let series = node_exporter_series(SERIES);
    let mut batches = write_batches(&series, 1_000);
    for round in 0..SCRAPES {
        set_round(&mut batches, &series, 0, round);
        for batch in &batches {
            tsdb.append(batch).expect("append");
        }
    }
    tsdb
}

/// `series` × 6 h at 15 s in a store on disk: appended with blocks cut as the head grows,
/// compaction off, so the older hours sit in level-1 blocks and the newest in the head.
fn store_on_disk(dir: &std::path::Path, series: &[SeriesSpec]) -> Tsdb {
    let tsdb = Tsdb::open(
        TsdbOptions::new(dir)
            .fsync(FsyncPolicy::Never)
            .max_future_ms(None)
            .background_maintenance(false)
            .auto_compaction(false),
    )
    .expect("store");
    let mut batches = write_batches(series, 1_000);
    for round in 0..SCRAPES {
        set_round(&mut batches, series, 0, round);
        for batch in &batches {
            tsdb.append(batch).expect("append");
        }
        if round % 240 == 0 {
            while tsdb.cut_block().expect("cut").is_some() {}
        }
    }
    tsdb
}

fn result_size(value: &QueryValue) -> usize {
    match value {
        QueryValue::Vector(samples) => samples.len(),
        QueryValue::Matrix(series) => series.iter().map(|s| s.points.len()).sum(),
        _ => 1,
    }
}

/// What `LOOKOUT_QUERY_BENCH_STATS=1` prints for each query before the timings.
fn print_stats(name: &str, stats: &QueryStats) {
    eprintln!(
        "{name}: {} series, {} samples loaded; fetch {:.1} ms, eval {:.1} ms",
        stats.series_loaded,
        stats.samples_loaded,
        stats.fetch_nanos as f64 / 1e6,
        stats.eval_nanos as f64 / 1e6
    );
}

fn bench(c: &mut Criterion) {
    let tsdb = store();
    let engine = Engine::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let instant = [
        ("selector", r#"node_cpu_seconds_total{mode="idle"}"#),
        (
            "sum_by_rate",
            "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
        ),
        (
            "topk",
            "topk(5, rate(node_network_receive_bytes_total[5m]))",
        ),
        (
            "regex_sum_by",
            r#"sum by (instance) (rate(node_network_receive_bytes_total{device=~"eth.*"}[5m]))"#,
        ),
        (
            "ratio",
            "node_filesystem_avail_bytes / node_filesystem_free_bytes",
        ),
    ];
    if std::env::var_os("LOOKOUT_QUERY_BENCH_STATS").is_some() {
        for (name, query) in &instant {
            let out = runtime
                .block_on(engine.instant_query(&tsdb, query, END_MS))
                .expect("query");
            print_stats(name, &out.stats);
        }
    }
    let mut group = c.benchmark_group("query/instant");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for (name, query) in instant {
        group.bench_function(name, |b| {
            b.iter(|| {
                let out = runtime
                    .block_on(engine.instant_query(&tsdb, query, END_MS))
                    .expect("query");
                black_box(result_size(&out.value))
            })
        });
    }
    group.finish();

    // (name, query, range, step) as a dashboard panel asks.
    let range = [
        (
            "sum_by_rate/1h",
            "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
            3_600_000,
            15_000,
        ),
        (
            "sum_by_rate/6h",
            "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
            21_600_000,
            60_000,
        ),
        (
            "regex_sum_by/6h",
            r#"sum by (instance) (rate(node_network_receive_bytes_total{device=~"eth.*"}[5m]))"#,
            21_600_000,
            60_000,
        ),
        (
            "ratio/6h",
            "node_filesystem_avail_bytes / node_filesystem_free_bytes",
            21_600_000,
            60_000,
        ),
        (
            "topk/1h",
            "topk(5, rate(node_network_receive_bytes_total[5m]))",
            3_600_000,
            15_000,
        ),
    ];
    range_group(c, "query/range", &tsdb, &engine, &runtime, &range);
}

/// Benches range queries `(name, query, span, step)` ending at the end of the data, as group
/// `group`; with `LOOKOUT_QUERY_BENCH_STATS` set, prints each one's fetch/eval split first.
fn range_group(
    c: &mut Criterion,
    group: &str,
    tsdb: &Tsdb,
    engine: &Engine,
    runtime: &tokio::runtime::Runtime,
    range: &[(&str, &str, i64, i64)],
) {
    let run = |query: &str, span: i64, step: i64| {
        runtime
            .block_on(engine.range_query(tsdb, query, END_MS - span, END_MS, step))
            .expect("query")
    };
    if std::env::var_os("LOOKOUT_QUERY_BENCH_STATS").is_some() {
        for (name, query, span, step) in range {
            print_stats(name, &run(query, *span, *step).stats);
        }
    }
    let mut group = c.benchmark_group(group);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, query, span, step) in range {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(result_size(&run(query, *span, *step).value)))
        });
    }
    group.finish();
}

fn bench_blocks(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tsdb = store_on_disk(dir.path(), &node_exporter_series(SERIES));
    let engine = Engine::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let range = [
        (
            "sum_by_rate/6h",
            "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
        ),
        (
            "regex_sum_by/6h",
            r#"sum by (instance) (rate(node_network_receive_bytes_total{device=~"eth.*"}[5m]))"#,
        ),
        (
            "ratio/6h",
            "node_filesystem_avail_bytes / node_filesystem_free_bytes",
        ),
    ];
    let (span, step) = (21_600_000, 60_000);
    if std::env::var_os("LOOKOUT_QUERY_BENCH_STATS").is_some() {
        eprintln!("{} blocks", tsdb.blocks().len());
    }
    let range: Vec<(&str, &str, i64, i64)> = range
        .iter()
        .map(|(name, query)| (*name, *query, span, step))
        .collect();
    range_group(c, "query/range_blocks", &tsdb, &engine, &runtime, &range);
}

/// Series of the `query/labels_blocks` store: the harness's medium scale, or 10 hosts when the
/// binary runs without `--bench` (the `cargo test --benches` smoke run).
fn labels_series_count() -> usize {
    if std::env::args().any(|arg| arg == "--bench") {
        100_000
    } else {
        10 * lookout_benches::MIXED_SERIES_PER_HOST
    }
}

/// One call of the `labels_blocks` group, as the HTTP handler makes it.
enum LabelsCall {
    /// `/api/v1/label/<name>/values` without matchers.
    Values(&'static str),
    /// `/api/v1/series?match[]=...`: labels-only select.
    Series(Vec<Matcher>),
}

/// Runs `call` over `[mint, maxt]`; the number of values or series answered.
fn run_labels_call(
    runtime: &tokio::runtime::Runtime,
    tsdb: &Tsdb,
    call: &LabelsCall,
    (mint, maxt): (i64, i64),
) -> usize {
    runtime.block_on(async {
        match call {
            LabelsCall::Values(name) => tsdb
                .label_values(name, LabelRequest::new(Vec::new(), mint, maxt))
                .await
                .expect("label values")
                .len(),
            LabelsCall::Series(matchers) => {
                let mut request = SelectRequest::new(matchers.clone(), mint, maxt);
                request.hints.labels_only = true;
                let stream = tsdb.select(request).await.expect("series");
                collect_series(stream).await.expect("series").len()
            }
        }
    })
}

fn bench_labels(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let regex_name = Matcher::new(
        MatchKind::Regex,
        "__name__",
        "http_request_duration_seconds_(sum|count)",
    )
    .expect("regex compiles");
    let calls = [
        ("label_values/instance/6h", LabelsCall::Values("instance")),
        ("label_values/__name__/6h", LabelsCall::Values("__name__")),
        (
            "series/one_cluster_cpu/6h",
            LabelsCall::Series(vec![
                Matcher::equal("__name__", "node_cpu_seconds_total"),
                Matcher::equal("cluster", cluster_name(0)),
            ]),
        ),
        ("series/regex_name/6h", LabelsCall::Series(vec![regex_name])),
    ];
    // As the harness asks: 6 h ending at the last whole minute of the data, so the range
    // cuts the head (and the oldest block) instead of covering them.
    let maxt = END_MS - END_MS.rem_euclid(60_000);
    let range = (maxt - 21_600_000, maxt);
    let dir = tempfile::tempdir().expect("temporary directory");
    // Built on first use, so filtering the group out costs nothing.
    let mut store: Option<Tsdb> = None;
    let mut group = c.benchmark_group("query/labels_blocks");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, call) in &calls {
        let mut printed = false;
        group.bench_function(*name, |b| {
            let tsdb = store.get_or_insert_with(|| {
                let tsdb = store_on_disk(dir.path(), &mixed_series(labels_series_count()));
                if std::env::var_os("LOOKOUT_QUERY_BENCH_STATS").is_some() {
                    eprintln!(
                        "{} blocks, {} head series",
                        tsdb.blocks().len(),
                        tsdb.head().series_count()
                    );
                }
                tsdb
            });
            if !printed && std::env::var_os("LOOKOUT_QUERY_BENCH_STATS").is_some() {
                eprintln!(
                    "{name}: {} answered",
                    run_labels_call(&runtime, tsdb, call, range)
                );
                printed = true;
            }
            b.iter(|| black_box(run_labels_call(&runtime, tsdb, call, range)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_blocks, bench_labels);
criterion_main!(benches);
