//! PromQL over the Elasticsearch backend agrees with PromQL over the native engine: the same
//! generated data is written to both, and every query of a fixed list (selectors with every
//! matcher kind, range functions, aggregations, binary operators; instant and range) must
//! give the identical result on both stores. Runs against `noida` and `osmem`.
//!
//! Every query runs on the Elasticsearch store twice: with aggregation pushdown (the
//! default) and with it switched off (`EngineOptions::pushdown = false`), and both must
//! agree with the native engine. A separate test shows pushdown is really used: the store's
//! counters and the samples the engine loaded.

mod support;

use lookout_es::EsStorage;
use lookout_model::{Labels, Sample, STALE_NAN};
use lookout_promql::{Engine, EngineOptions, QueryOutput};
use lookout_storage::{Storage, WriteBatch};
use lookout_tsdb::{HeadOptions, Tsdb};
use support::EsPeer;

/// Start of the data: 2023-11-14T22:13:20Z.
const BASE_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 15_000;
const POINTS: i64 = 240;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).expect("valid labels")
}

/// A small deterministic generator (no external randomness: both stores get the same data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn data() -> WriteBatch {
    let mut random = Lcg(42);
    let mut batch = WriteBatch::new();
    for job in ["api", "apiserver", "db"] {
        for instance in 0..3 {
            for code in ["200", "500", ""] {
                let instance = format!("10.0.0.{instance}:9100");
                let mut pairs = vec![
                    ("__name__", "http_requests_total"),
                    ("job", job),
                    ("instance", instance.as_str()),
                ];
                if !code.is_empty() {
                    pairs.push(("code", code));
                }
                let mut value = 0.0;
                let samples = (0..POINTS)
                    .map(|index| {
                        // A counter with a reset two thirds of the way.
                        value = if index == POINTS * 2 / 3 {
                            0.0
                        } else {
                            value + (random.next() * 10.0).floor()
                        };
                        Sample::new(BASE_MS + index * STEP_MS, value)
                    })
                    .collect();
                batch.push(labels(&pairs), samples);
            }
        }
    }
    for host in ["a", "b", "c", "d"] {
        let mut pairs = vec![("__name__", "node_temperature_celsius"), ("host", host)];
        if host != "d" {
            pairs.push(("zone", if host == "a" { "eu" } else { "us" }));
        }
        let samples = (0..POINTS)
            .filter(|index| index % 4 != 3) // gaps
            .map(|index| Sample::new(BASE_MS + index * STEP_MS, 20.0 + random.next() * 15.0))
            .collect();
        batch.push(labels(&pairs), samples);
    }
    // Irregular samples: jitter, bursts within one step, stale markers ending the series
    // for a while, and a second series starting late.
    for (shard, start) in [("1", 0), ("2", 97)] {
        let mut samples = Vec::new();
        let mut time = BASE_MS + start * 1_000;
        let mut index = 0;
        while time < BASE_MS + POINTS * STEP_MS {
            let value = if index % 37 == 20 {
                STALE_NAN
            } else {
                (random.next() * 100.0).round()
            };
            samples.push(Sample::new(time, value));
            // 1 s to 90 s apart: several samples in one step, or steps with none.
            time += 1_000 + (random.next() * 89_000.0) as i64;
            index += 1;
        }
        batch.push(
            labels(&[("__name__", "queue_depth"), ("shard", shard)]),
            samples,
        );
    }
    for bucket in ["0-10", "10-100", "100-1000"] {
        for method in ["sayHi", "sayBye"] {
            let samples = (0..POINTS)
                .map(|index| Sample::new(BASE_MS + index * STEP_MS, index as f64 * 1.5))
                .collect();
            batch.push(
                labels(&[
                    ("__name__", "rpc.latency.buckets"),
                    ("_bucket", bucket),
                    ("method", method),
                ]),
                samples,
            );
        }
    }
    batch
}

const QUERIES: &[&str] = &[
    "http_requests_total",
    r#"http_requests_total{job="api"}"#,
    r#"http_requests_total{job!="api"}"#,
    r#"http_requests_total{job=~"api.*"}"#,
    r#"http_requests_total{job!~"api|db"}"#,
    r#"http_requests_total{code=""}"#,
    r#"http_requests_total{code!=""}"#,
    r#"http_requests_total{code=~"5..|"}"#,
    r#"http_requests_total{instance=~"10\\.0\\.0\\.[12]:.*"}"#,
    r#"http_requests_total{job=~"(?i)API"}"#,
    r#"http_requests_total{job=~|"api|db"}"#,
    r#"http_requests_total{job!~|"api|db"}"#,
    r#"{__name__=~"http_.*|node_.*", job=~"db|"}"#,
    r#"{__name__=~"rpc\\..*"}"#,
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (http_requests_total)",
    "avg by (zone) (node_temperature_celsius)",
    "max_over_time(node_temperature_celsius[10m])",
    "count by (code) (http_requests_total)",
    "topk(3, http_requests_total)",
    r#"sum by (_bucket) (rpc.latency.buckets{method=~"say.*"})"#,
    "node_temperature_celsius > 30",
    r#"http_requests_total{code="500"} / ignoring(code) http_requests_total{code="200"}"#,
    "absent(nonexistent_metric)",
    "resets(http_requests_total[1h])",
    "quantile_over_time(0.9, node_temperature_celsius[15m])",
    // Aggregations the Elasticsearch store answers by pushdown.
    "min by (job) (http_requests_total)",
    "max(node_temperature_celsius)",
    "count(node_temperature_celsius)",
    "avg by (host) (node_temperature_celsius)",
    "sum(queue_depth)",
    "count by (shard) (queue_depth)",
    "max without (shard) (queue_depth)",
    "sum(http_requests_total offset 3m)",
    r#"sum by (job) ({__name__=~"http_.*", job=~"api.*"})"#,
    r#"avg(http_requests_total{job=~"(?i)API"})"#,
    "sum by (job) (http_requests_total) / count by (job) (http_requests_total)",
    // ...and ones it must not push down (a parameter, `@`, a subquery).
    "topk(2, sum by (job) (http_requests_total))",
    "sum(http_requests_total @ 1700001000)",
    "max_over_time(sum(queue_depth)[10m:1m])",
];

/// Range queries as (start after `BASE_MS`, step): the usual minute with evaluation times on
/// sample times (and an end that is not on the grid), a step shorter than the sampling
/// interval, one longer than the lookback, and an odd one.
const STEPS: &[(i64, i64)] = &[(0, 60_000), (2_333, 7_000), (0, 600_000), (15_166, 45_500)];

fn render(output: Result<QueryOutput, lookout_promql::QueryError>) -> String {
    match output {
        Ok(output) => format!("{:?}", output.value),
        Err(error) => format!("error: {error}"),
    }
}

async fn agrees_with_native(kind: &'static str) {
    let Some(peer) = EsPeer::start(kind) else {
        return;
    };
    let es = peer.open("diff").await;
    let native = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .expect("native store");
    let batch = data();
    let expected = batch.sample_count() as u64;
    let outcome = native.write(batch.clone()).await.unwrap();
    assert_eq!(outcome.accepted, expected);
    let outcome = es.write(batch).await.unwrap();
    assert_eq!(outcome.accepted, expected, "{:?}", outcome.messages);

    let engine = Engine::default();
    let raw_engine = Engine::new(EngineOptions {
        pushdown: false,
        ..EngineOptions::default()
    });
    let end = BASE_MS + (POINTS - 1) * STEP_MS;
    let mut checked = 0;
    for query in QUERIES {
        for time in [BASE_MS + 2_400_000, BASE_MS + 1_234_567, end] {
            let want = render(engine.instant_query(&native, query, time).await);
            assert!(!want.starts_with("error"), "{query}: {want}");
            let got = render(engine.instant_query(&es, query, time).await);
            assert_eq!(got, want, "instant {query} at {time}, pushdown on");
            let got = render(raw_engine.instant_query(&es, query, time).await);
            assert_eq!(got, want, "instant {query} at {time}, pushdown off");
            checked += 1;
        }
        for &(start, step) in STEPS {
            let start = BASE_MS + start;
            let want = render(engine.range_query(&native, query, start, end, step).await);
            assert!(!want.starts_with("error"), "{query}: {want}");
            let got = render(engine.range_query(&es, query, start, end, step).await);
            assert_eq!(got, want, "range {query} step {step}, pushdown on");
            let got = render(raw_engine.range_query(&es, query, start, end, step).await);
            assert_eq!(got, want, "range {query} step {step}, pushdown off");
            checked += 1;
        }
    }
    assert_eq!(checked, QUERIES.len() * (3 + STEPS.len()));
    let stats = es.stats();
    assert!(
        stats.pushed_down_selects > 0 && stats.raw_selects > 0,
        "{stats:?}"
    );
    assert_eq!(stats.pushdown_fallbacks, 0, "{stats:?}");
}

/// Pushdown is really used for `sum by (job) (x)`: the store counts a pushed-down select
/// and no raw one, and the engine loads one sample per series and step instead of every
/// sample; with pushdown off the same query reads raw samples. Legacy documents without the
/// `series` key in the selection make the store fall back to a raw read, still exact.
async fn pushdown_is_used(kind: &'static str) {
    let Some(peer) = EsPeer::start(kind) else {
        return;
    };
    let es = peer.open("used").await;
    let batch = data();
    let outcome = es.write(batch).await.unwrap();
    assert_eq!(outcome.rejected_total(), 0, "{:?}", outcome.messages);
    let end = BASE_MS + (POINTS - 1) * STEP_MS;
    let query = "sum by (job) (http_requests_total)";
    let step = 300_000;

    let before = es.stats();
    let pushed = Engine::default()
        .range_query(&es, query, BASE_MS, end, step)
        .await
        .unwrap();
    let after_pushed = es.stats();
    assert_eq!(
        after_pushed.pushed_down_selects,
        before.pushed_down_selects + 1,
        "{after_pushed:?}"
    );
    assert_eq!(after_pushed.raw_selects, before.raw_selects);
    assert!(after_pushed.aggregation_requests > before.aggregation_requests);

    let raw_engine = Engine::new(EngineOptions {
        pushdown: false,
        ..EngineOptions::default()
    });
    let raw = raw_engine
        .range_query(&es, query, BASE_MS, end, step)
        .await
        .unwrap();
    let after_raw = es.stats();
    assert_eq!(after_raw.raw_selects, after_pushed.raw_selects + 1);
    assert_eq!(
        after_raw.pushed_down_selects,
        after_pushed.pushed_down_selects
    );
    assert_eq!(format!("{:?}", pushed.value), format!("{:?}", raw.value));
    // 27 series; the steps of 5 minutes from BASE_MS to `end` (12 of them) each take the
    // latest sample of their interval, plus the interval before the first step.
    let steps = ((end - BASE_MS) / step + 1) as u64;
    assert!(
        pushed.stats.samples_loaded <= 27 * (steps + 1),
        "pushed down: {} samples",
        pushed.stats.samples_loaded
    );
    assert!(
        raw.stats.samples_loaded >= 27 * POINTS as u64,
        "raw: {} samples",
        raw.stats.samples_loaded
    );
    eprintln!(
        "{kind}: {query} over {steps} steps loaded {} samples pushed down in {:?}, {} raw in {:?}",
        pushed.stats.samples_loaded,
        std::time::Duration::from_nanos(pushed.stats.fetch_nanos),
        raw.stats.samples_loaded,
        std::time::Duration::from_nanos(raw.stats.fetch_nanos),
    );

    // Small aggregation budgets: 50 buckets hold 3 series of 13 intervals (plus their terms
    // bucket) per request, so the 27 series take 9 or more requests; 10 buckets cannot hold
    // one series, so the read falls back to raw samples. Same answer either way.
    for (buckets, pushed_down) in [(50, true), (10, false)] {
        let small = EsStorage::open(
            peer.options("used")
                .max_buckets(buckets)
                .auto_operations(false),
        )
        .await
        .unwrap();
        let answer = Engine::default()
            .range_query(&small, query, BASE_MS, end, step)
            .await
            .unwrap();
        assert_eq!(format!("{:?}", answer.value), format!("{:?}", raw.value));
        let stats = small.stats();
        if pushed_down {
            assert_eq!(stats.pushed_down_selects, 1, "{stats:?}");
            assert!(stats.aggregation_requests >= 9, "{stats:?}");
        } else {
            assert_eq!(
                (stats.pushdown_fallbacks, stats.raw_selects),
                (1, 1),
                "{stats:?}"
            );
        }
    }

    // A SOFALookout document (no `series` key) in the selection: read raw, same answer
    // as the native engine.
    let legacy = format!(
        "{{\"index\":{{}}}}\n{{\"id\":\"http_requests_total\",\"tags\":[\"job=legacy\"],\
         \"time\":{},\"value\":5}}\n",
        BASE_MS + 60_000
    );
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{}/_bulk?refresh=true",
            peer.url,
            es.write_alias()
        ))
        .header("content-type", "application/x-ndjson")
        .body(legacy)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let before = es.stats();
    let with_legacy = Engine::default()
        .instant_query(&es, query, BASE_MS + 120_000)
        .await
        .unwrap();
    let after = es.stats();
    assert_eq!(after.pushdown_fallbacks, before.pushdown_fallbacks + 1);
    assert_eq!(after.raw_selects, before.raw_selects + 1);
    let native = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .expect("native store");
    let mut batch = data();
    batch.push(
        labels(&[("__name__", "http_requests_total"), ("job", "legacy")]),
        vec![Sample::new(BASE_MS + 60_000, 5.0)],
    );
    native.write(batch).await.unwrap();
    let want = Engine::default()
        .instant_query(&native, query, BASE_MS + 120_000)
        .await
        .unwrap();
    assert_eq!(
        format!("{:?}", with_legacy.value),
        format!("{:?}", want.value)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_on_noida_agrees_with_native() {
    agrees_with_native("noida").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_on_osmem_agrees_with_native() {
    agrees_with_native("osmem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushdown_is_used_on_noida() {
    pushdown_is_used("noida").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushdown_is_used_on_osmem() {
    pushdown_is_used("osmem").await;
}
