//! The PromQL evaluator.
//!
//! A query runs in three phases:
//!
//! 1. **Plan**: parse, resolve `step()`/`range()` durations, and walk the tree once to find
//!    every selector with the time range it needs (offsets, `@`, ranges, lookback and
//!    subquery windows included).
//! 2. **Fetch**: every selector's series are read from [`Storage`] up front (one `select` per
//!    selector), counted against `max_samples`. A plain instant selector that is the direct
//!    input of `sum`/`min`/`max`/`count`/`avg` on the query's grid (not in a subquery, no `@`,
//!    no `anchored`/`smoothed`) is read with `SelectHints::latest_per_step` when the backend
//!    lists the operator in `Capabilities::pushdown_aggregations` and
//!    [`EngineOptions::pushdown`] is on: the backend may return only the latest sample per
//!    series and step interval, which are exactly the samples the selector uses, so the
//!    result is unchanged.
//! 3. **Evaluate** (on a blocking thread, so the async runtime keeps serving): each operator
//!    first settles its *output series* — label sets computed once per series, never per step
//!    — and then fills one dense column of values per series across all steps. Aggregations
//!    and vector matching hash label signatures once per input series and then run tight loops
//!    over steps; range functions slide a window over each series' samples. Instant queries
//!    are range queries of one step.
//!
//! Semantics are Prometheus 3.x's for float data: left-open windows `(t - range, t]`, a
//! configurable lookback (5 minutes by default), stale markers ending a series, extrapolated
//! `rate`, Kahan-compensated sums, and Prometheus' error texts.

mod error;
mod eval;
mod functions;
mod math;
mod value;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_storage::Storage;

pub use error::QueryError;
pub use math::go_format_float;
pub use value::{InstantSample, Point, QueryOutput, QueryStats, QueryValue, RangeSeries};

use crate::{parse_with, ParseOptions};

/// Limits and defaults of the evaluator. `Default` gives Prometheus' defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample (default 5 minutes).
    pub lookback_delta_ms: i64,
    /// The most samples a query may load and hold (default 50 million, as Prometheus).
    pub max_samples: u64,
    /// The most memory a query's samples and computed values may take, in bytes (default
    /// 1 GiB), estimated at 16 bytes per loaded sample or computed point. Whichever of this
    /// and `max_samples` is hit first stops the query.
    pub max_memory_bytes: u64,
    /// Queries running longer are stopped with a `timeout` error (default 2 minutes).
    pub timeout: Duration,
    /// The step of a subquery written without one, `x[1h:]` (default 1 minute).
    pub default_subquery_step_ms: i64,
    /// A range query may have at most this many steps after its start (default 11,000, as
    /// Prometheus; so 11,001 points).
    pub max_points_per_series: u64,
    /// Parser feature switches.
    pub parse: ParseOptions,
    /// Whether the planner asks the backend to reduce the input of simple aggregations
    /// (`sum`, `min`, `max`, `count`, `avg` directly over an instant selector) to the latest
    /// sample per series and step, when the backend declares it in
    /// `Capabilities::pushdown_aggregations` (default on). Results are identical either way;
    /// only the amount of data read changes.
    pub pushdown: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60_000,
            max_samples: 50_000_000,
            max_memory_bytes: 1 << 30,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
            max_points_per_series: 11_000,
            parse: ParseOptions::default(),
            pushdown: true,
        }
    }
}

/// Counters of an engine's queries, for self-metrics.
#[derive(Debug, Default)]
struct Counters {
    instant: AtomicU64,
    range: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    canceled: AtomicU64,
    in_flight: AtomicU64,
    samples_loaded: AtomicU64,
    nanos: AtomicU64,
}

/// Runs PromQL queries against a [`Storage`].
///
/// Queries run on a tokio runtime with its time driver enabled (the timeout covers the fetch)
/// and evaluate on its blocking pool.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    options: Arc<EngineOptions>,
    counters: Arc<Counters>,
}

impl Engine {
    /// An engine with these options.
    pub fn new(options: EngineOptions) -> Engine {
        Engine {
            options: Arc::new(options),
            counters: Arc::default(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Queries whose caller went away before they finished (the HTTP client disconnected).
    pub fn canceled_queries(&self) -> u64 {
        self.counters.canceled.load(Ordering::Relaxed)
    }

    /// Appends the engine's counters in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP lookout_promql_queries_total PromQL queries run, by kind.\n\
             # TYPE lookout_promql_queries_total counter\n\
             lookout_promql_queries_total{{kind=\"instant\"}} {}\n\
             lookout_promql_queries_total{{kind=\"range\"}} {}\n\
             # HELP lookout_promql_queries_failed_total PromQL queries that ended in an error (timeouts and cancellations included).\n\
             # TYPE lookout_promql_queries_failed_total counter\n\
             lookout_promql_queries_failed_total {}\n\
             # HELP lookout_promql_queries_timed_out_total PromQL queries stopped by the query timeout.\n\
             # TYPE lookout_promql_queries_timed_out_total counter\n\
             lookout_promql_queries_timed_out_total {}\n\
             # HELP lookout_promql_queries_canceled_total PromQL queries stopped because their caller went away.\n\
             # TYPE lookout_promql_queries_canceled_total counter\n\
             lookout_promql_queries_canceled_total {}\n\
             # HELP lookout_promql_queries_in_flight PromQL queries running now.\n\
             # TYPE lookout_promql_queries_in_flight gauge\n\
             lookout_promql_queries_in_flight {}\n\
             # HELP lookout_promql_samples_loaded_total Samples read from storage by PromQL queries.\n\
             # TYPE lookout_promql_samples_loaded_total counter\n\
             lookout_promql_samples_loaded_total {}\n\
             # HELP lookout_promql_query_seconds_total Time spent in PromQL queries.\n\
             # TYPE lookout_promql_query_seconds_total counter\n\
             lookout_promql_query_seconds_total {}\n",
            get(&c.instant),
            get(&c.range),
            get(&c.failed),
            get(&c.timed_out),
            get(&c.canceled),
            get(&c.in_flight),
            get(&c.samples_loaded),
            get(&c.nanos) as f64 / 1e9,
        );
    }

    /// Evaluates `query` at `time_ms` (an instant query).
    pub async fn instant_query(
        &self,
        storage: &dyn Storage,
        query: &str,
        time_ms: i64,
    ) -> Result<QueryOutput, QueryError> {
        self.run(storage, query, time_ms, time_ms, 0).await
    }

    /// Evaluates `query` at every `step_ms` from `start_ms` to `end_ms` inclusive (a range
    /// query). The result is always a matrix.
    pub async fn range_query(
        &self,
        storage: &dyn Storage,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryOutput, QueryError> {
        if end_ms < start_ms {
            return Err(QueryError::BadRequest(
                "end timestamp must not be before start time".into(),
            ));
        }
        if step_ms <= 0 {
            return Err(QueryError::BadRequest(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        // Prometheus' rule: at most 11,000 steps after the start (11,001 points).
        let steps = (end_ms - start_ms) / step_ms;
        if steps as u64 > self.options.max_points_per_series {
            return Err(QueryError::BadRequest(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        self.run(storage, query, start_ms, end_ms, step_ms).await
    }

    async fn run(
        &self,
        storage: &dyn Storage,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryOutput, QueryError> {
        let counters = &self.counters;
        let kind = if step_ms == 0 {
            &counters.instant
        } else {
            &counters.range
        };
        kind.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let begun = Instant::now();
        // Dropped before the query finishes (the caller went away): counted as canceled,
        // and the evaluation, if running, stops at its next check.
        let cancel = Arc::new(AtomicBool::new(false));
        let mut guard = InFlight {
            cancel: cancel.clone(),
            counters: counters.clone(),
            begun,
            finished: false,
        };
        let result = self
            .execute(storage, query, start_ms, end_ms, step_ms, begun, cancel)
            .await;
        guard.finished = true;
        match &result {
            Ok(output) => {
                counters
                    .samples_loaded
                    .fetch_add(output.stats.samples_loaded, Ordering::Relaxed);
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if matches!(error, QueryError::Timeout(_)) {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        storage: &dyn Storage,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        begun: Instant,
        cancel: Arc<AtomicBool>,
    ) -> Result<QueryOutput, QueryError> {
        let deadline = begun + self.options.timeout;
        let mut expr = parse_with(query, self.options.parse)?;
        let range_ms = end_ms - start_ms;
        expr.resolve_durations(step_ms, range_ms)
            .map_err(|error| QueryError::BadRequest(error.message))?;
        let plan = eval::Plan::new(expr, query, start_ms, end_ms, step_ms, &self.options);
        let prepare_nanos = begun.elapsed().as_nanos() as u64;

        let fetch_begun = Instant::now();
        let data = tokio::time::timeout_at(deadline.into(), plan.fetch(storage, &self.options))
            .await
            .map_err(|_| QueryError::Timeout("query execution"))??;
        let fetch_nanos = fetch_begun.elapsed().as_nanos() as u64;

        // Evaluation is CPU work: run it off the async workers, unless it is so small that
        // the hand-over would cost more.
        let options = self.options.clone();
        let eval_begun = Instant::now();
        let mut output = if data.is_small_for(&plan) {
            plan.evaluate(data, &options, deadline, &cancel)?
        } else {
            let task = tokio::task::spawn_blocking(move || {
                plan.evaluate(data, &options, deadline, &cancel)
            });
            task.await.map_err(|error| {
                QueryError::Execution(format!("query evaluation panicked: {error}"))
            })??
        };
        output.stats.prepare_nanos = prepare_nanos;
        output.stats.fetch_nanos = fetch_nanos;
        output.stats.eval_nanos = eval_begun.elapsed().as_nanos() as u64;
        Ok(output)
    }
}

/// Accounts for a running query; when dropped before the query finished, the query was
/// canceled: the flag stops its evaluation.
struct InFlight {
    cancel: Arc<AtomicBool>,
    counters: Arc<Counters>,
    begun: Instant,
    finished: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counters = &self.counters;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        counters
            .nanos
            .fetch_add(self.begun.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if !self.finished {
            self.cancel.store(true, Ordering::Relaxed);
            counters.canceled.fetch_add(1, Ordering::Relaxed);
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
