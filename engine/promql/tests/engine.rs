//! The evaluator end to end over the native store: result shapes, a few semantics that the
//! upstream scripts do not pin down, guard rails and errors.

use std::time::Duration;

use lookout_model::{Labels, Sample};
use lookout_promql::{Engine, EngineOptions, QueryError, QueryValue};
use lookout_storage::{Storage, WriteBatch};
use lookout_tsdb::{HeadOptions, Tsdb};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).expect("valid labels")
}

/// `http_requests{job, instance}` counters every 15 s for an hour: instance i grows by i+1
/// per sample.
async fn store() -> Tsdb {
    let tsdb = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .expect("store");
    let mut batch = WriteBatch::new();
    for (job, instances) in [("api", 2), ("web", 3)] {
        for i in 0..instances {
            let samples = (0..=240)
                .map(|k| Sample::new(k * 15_000, (k * (i + 1)) as f64))
                .collect();
            let instance = i.to_string();
            batch.push(
                labels(&[
                    ("__name__", "http_requests"),
                    ("job", job),
                    ("instance", &instance),
                ]),
                samples,
            );
        }
    }
    let outcome = tsdb.write(batch).await.expect("write");
    assert_eq!(outcome.rejected_total(), 0);
    tsdb
}

fn vector(value: &QueryValue) -> Vec<(String, f64)> {
    let QueryValue::Vector(samples) = value else {
        panic!("expected a vector, got {value:?}");
    };
    let mut out: Vec<(String, f64)> = samples
        .iter()
        .map(|s| (s.labels.to_string(), s.v))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn instant_aggregation_of_rates() {
    let tsdb = store().await;
    let engine = Engine::default();
    let out = engine
        .instant_query(&tsdb, "sum by (job) (rate(http_requests[5m]))", 3_600_000)
        .await
        .expect("query");
    // Instance i grows by (i+1) every 15 s: rate (i+1)/15 per second.
    let got = vector(&out.value);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, r#"{job="api"}"#);
    assert!((got[0].1 - 3.0 / 15.0).abs() < 1e-12, "{got:?}");
    assert!((got[1].1 - 6.0 / 15.0).abs() < 1e-12, "{got:?}");
}

#[tokio::test]
async fn range_query_is_a_matrix_sorted_by_labels() {
    let tsdb = store().await;
    let engine = Engine::default();
    let out = engine
        .range_query(&tsdb, "http_requests{job=\"web\"} * 2", 0, 600_000, 60_000)
        .await
        .expect("query");
    let QueryValue::Matrix(series) = out.value else {
        panic!("expected a matrix");
    };
    assert_eq!(series.len(), 3);
    assert!(series.windows(2).all(|w| w[0].labels < w[1].labels));
    assert_eq!(series[0].points.len(), 11);
    assert_eq!(series[2].points[10].v, 2.0 * 40.0 * 3.0);
    assert!(series[0].labels.get("__name__").is_none());
}

#[tokio::test]
async fn scalar_and_string_results() {
    let tsdb = store().await;
    let engine = Engine::default();
    let out = engine
        .instant_query(&tsdb, "1 + 2 * 3", 1000)
        .await
        .expect("query");
    assert_eq!(out.value, QueryValue::Scalar { t: 1000, v: 7.0 });
    let out = engine
        .instant_query(&tsdb, "\"hello\"", 1000)
        .await
        .expect("query");
    assert_eq!(
        out.value,
        QueryValue::String {
            t: 1000,
            v: "hello".into()
        }
    );
    let error = engine
        .range_query(&tsdb, "\"hello\"", 0, 1000, 1000)
        .await
        .expect_err("strings are not range results");
    assert_eq!(error.error_type(), "bad_data");
}

#[tokio::test]
async fn many_to_many_matching_is_an_execution_error() {
    let tsdb = store().await;
    let engine = Engine::default();
    let error = engine
        .instant_query(&tsdb, "http_requests + on(job) http_requests", 60_000)
        .await
        .expect_err("duplicate series on the one side");
    assert_eq!(error.error_type(), "execution");
    assert!(
        error
            .to_string()
            .contains("many-to-many matching not allowed"),
        "{error}"
    );
}

#[tokio::test]
async fn sample_limit_memory_budget_and_timeout_are_enforced() {
    let tsdb = store().await;
    let engine = Engine::new(EngineOptions {
        max_samples: 100,
        ..EngineOptions::default()
    });
    let error = engine
        .instant_query(&tsdb, "count_over_time(http_requests[1h])", 3_600_000)
        .await
        .expect_err("over the sample limit");
    assert!(matches!(error, QueryError::TooManySamples(_)), "{error}");

    let engine = Engine::new(EngineOptions {
        max_memory_bytes: 16 * 1000,
        ..EngineOptions::default()
    });
    let error = engine
        .range_query(&tsdb, "http_requests", 0, 3_600_000, 15_000)
        .await
        .expect_err("over the memory budget");
    assert!(matches!(error, QueryError::MemoryBudget(_)), "{error}");
    assert_eq!(error.error_type(), "execution");

    let engine = Engine::new(EngineOptions {
        timeout: Duration::ZERO,
        ..EngineOptions::default()
    });
    let error = engine
        .instant_query(&tsdb, "http_requests", 3_600_000)
        .await
        .expect_err("no time at all");
    assert_eq!(error.error_type(), "timeout");
}

#[tokio::test]
async fn parse_errors_are_bad_data() {
    let tsdb = store().await;
    let error = Engine::default()
        .instant_query(&tsdb, "sum(", 0)
        .await
        .expect_err("does not parse");
    assert_eq!(error.error_type(), "bad_data");
}

/// Enough series that range functions split the work across threads: every series' result
/// must equal the same function over that series alone (which stays on one thread).
#[tokio::test]
async fn threaded_range_functions_agree_with_single_series_queries() {
    let tsdb = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .expect("store");
    let mut batch = WriteBatch::new();
    for s in 0..300 {
        let samples = (0..=1000)
            .map(|k| {
                // Counters with a reset every 97 samples, different slopes.
                let v = ((k % 97) * (s % 7 + 1)) as f64;
                Sample::new(k * 15_000, v)
            })
            .collect();
        batch.push(labels(&[("__name__", "c"), ("s", &s.to_string())]), samples);
    }
    tsdb.write(batch).await.expect("write");
    let engine = Engine::default();
    let whole = engine
        .range_query(&tsdb, "rate(c[5m])", 600_000, 15_000_000, 60_000)
        .await
        .expect("query");
    let QueryValue::Matrix(all) = whole.value else {
        panic!("a matrix");
    };
    assert_eq!(all.len(), 300);
    for s in [0, 1, 150, 299] {
        let one = engine
            .range_query(
                &tsdb,
                &format!("rate(c{{s=\"{s}\"}}[5m])"),
                600_000,
                15_000_000,
                60_000,
            )
            .await
            .expect("query");
        let QueryValue::Matrix(one) = one.value else {
            panic!("a matrix");
        };
        let mine = all
            .iter()
            .find(|series| series.labels.get("s") == Some(s.to_string().as_str()))
            .expect("the series");
        assert_eq!(one[0].points, mine.points, "series {s}");
    }
}

/// A query whose caller goes away is counted as canceled at once and its evaluation stops.
#[tokio::test]
async fn dropped_queries_are_canceled() {
    let tsdb = store().await;
    let engine = Engine::default();
    // Heavy enough to still be running after a millisecond: a day of 1 s subquery steps.
    let query = "sum(sum_over_time(rate(http_requests[5m])[1d:1s]))";
    let outcome = tokio::time::timeout(
        Duration::from_millis(1),
        engine.instant_query(&tsdb, query, 3_600_000),
    )
    .await;
    assert!(outcome.is_err(), "the query finished within a millisecond");
    assert_eq!(engine.canceled_queries(), 1);
    let mut metrics = String::new();
    engine.render_metrics(&mut metrics);
    assert!(
        metrics.contains("lookout_promql_queries_canceled_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lookout_promql_queries_in_flight 0"),
        "{metrics}"
    );
}

/// An aggregation of a range function takes the function's output batch by batch: the result
/// equals the same aggregation of a materialized input (`* 1` stops the folding), across
/// batches, for every reducing operator; the input never counts against the sample limit as
/// a whole; and two inputs that end up with the same labels are still an error.
#[tokio::test]
async fn aggregations_fold_range_functions_batch_by_batch() {
    let tsdb = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .expect("store");
    let mut batch = WriteBatch::new();
    // More series than one fold batch (4096), in 7 groups.
    for s in 0..5000 {
        let samples = (0..=80)
            .map(|k| Sample::new(k * 15_000, ((k % 53) * (s % 11 + 1)) as f64 * 0.1))
            .collect();
        let group = (s % 7).to_string();
        batch.push(
            labels(&[("__name__", "c"), ("g", &group), ("s", &s.to_string())]),
            samples,
        );
    }
    tsdb.write(batch).await.expect("write");
    let engine = Engine::default();
    let matrix = |value: QueryValue| -> Vec<(String, Vec<(i64, u64)>)> {
        let QueryValue::Matrix(series) = value else {
            panic!("a matrix");
        };
        series
            .into_iter()
            .map(|s| {
                let points = s.points.iter().map(|p| (p.t, p.v.to_bits())).collect();
                (s.labels.to_string(), points)
            })
            .collect()
    };
    for aggregation in [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ] {
        for function in ["rate", "max_over_time", "last_over_time"] {
            let folded = format!("{aggregation} by (g) ({function}(c[2m]))");
            let materialized = format!("{aggregation} by (g) ({function}(c[2m]) * 1)");
            let run = |query: String| {
                let engine = &engine;
                let tsdb = &tsdb;
                async move {
                    engine
                        .range_query(tsdb, &query, 300_000, 1_200_000, 30_000)
                        .await
                        .unwrap_or_else(|error| panic!("{query}: {error}"))
                }
            };
            let folded_value = matrix(run(folded.clone()).await.value);
            assert_eq!(folded_value.len(), 7, "{folded}");
            assert_eq!(
                folded_value,
                matrix(run(materialized).await.value),
                "{folded}"
            );
        }
    }
    // The rates (5000 series × 31 steps) are never all held: at most one batch of them; and
    // the read of `c`, which nothing else uses, is never all held either: it is computed
    // batch by batch as it arrives.
    let peak = |query: &'static str| {
        let engine = &engine;
        let tsdb = &tsdb;
        async move {
            engine
                .range_query(tsdb, query, 300_000, 1_200_000, 30_000)
                .await
                .expect("query")
                .stats
        }
    };
    let folded = peak("sum by (g) (rate(c[2m]))").await;
    assert!(
        folded.peak_samples < folded.samples_loaded,
        "the read was held whole: {folded:?}"
    );
    assert!(
        folded.peak_samples <= 4096 * 31 + 7 * 31 + 2 * 512 * 81,
        "{folded:?}"
    );
    let materialized = peak("sum by (g) (rate(c[2m]) * 1)").await;
    assert!(materialized.peak_samples > folded.peak_samples);
    let limited = Engine::new(EngineOptions {
        max_samples: folded.peak_samples,
        ..EngineOptions::default()
    });
    limited
        .range_query(
            &tsdb,
            "sum by (g) (rate(c[2m]))",
            300_000,
            1_200_000,
            30_000,
        )
        .await
        .expect("folded: within the limit");
    let error = limited
        .range_query(
            &tsdb,
            "sum by (g) (rate(c[2m]) * 1)",
            300_000,
            1_200_000,
            30_000,
        )
        .await
        .expect_err("materialized: over the limit");
    assert!(matches!(error, QueryError::TooManySamples(_)), "{error}");
    // `rate` drops the name: c and d with the same other labels collide.
    let mut batch = WriteBatch::new();
    for name in ["d", "e"] {
        let samples = (0..=80)
            .map(|k| Sample::new(k * 15_000, k as f64))
            .collect();
        batch.push(labels(&[("__name__", name), ("g", "x")]), samples);
    }
    tsdb.write(batch).await.expect("write");
    let error = engine
        .range_query(
            &tsdb,
            "sum(rate({__name__=~\"d|e\"}[2m]))",
            300_000,
            1_200_000,
            30_000,
        )
        .await
        .expect_err("same labelset");
    assert!(error.to_string().contains("same labelset"), "{error}");
}
