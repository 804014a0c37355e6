//! PromQL over the Elasticsearch backend agrees with PromQL over the native engine: the same
//! generated data is written to both, and every query of a fixed list (selectors with every
//! matcher kind, range functions, aggregations, binary operators; instant and range) must
//! give the identical result on both stores. Runs against `noida` and `osmem`.

mod support;

use lookout_model::{Labels, Sample};
use lookout_promql::{Engine, QueryOutput};
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
];

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
    let end = BASE_MS + (POINTS - 1) * STEP_MS;
    let mut checked = 0;
    for query in QUERIES {
        for time in [BASE_MS + 2_400_000, end] {
            let want = render(engine.instant_query(&native, query, time).await);
            let got = render(engine.instant_query(&es, query, time).await);
            assert_eq!(got, want, "instant {query} at {time}");
            assert!(!want.starts_with("error"), "{query}: {want}");
            checked += 1;
        }
        let want = render(
            engine
                .range_query(&native, query, BASE_MS, end, 60_000)
                .await,
        );
        let got = render(engine.range_query(&es, query, BASE_MS, end, 60_000).await);
        assert_eq!(got, want, "range {query}");
        checked += 1;
    }
    assert_eq!(checked, QUERIES.len() * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_on_noida_agrees_with_native() {
    agrees_with_native("noida").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_on_osmem_agrees_with_native() {
    agrees_with_native("osmem").await;
}
