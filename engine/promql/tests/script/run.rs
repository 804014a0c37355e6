//! Runs a [`Script`]: loads go through [`Storage::write`] of an in-memory [`Tsdb`], queries
//! through [`Engine`], and every case is judged by [`super::judge`].

use lookout_promql::{Engine, EngineOptions, InstantSample, QueryOutput, QueryValue};
use lookout_storage::{Storage, WriteBatch};
use lookout_tsdb::{HeadOptions, Tsdb};

use super::at_modifier::{calls_any, pin_to, RANGE_DEPENDENT_FUNCTIONS};
use super::judge::{judge_annotations, judge_value, render_expected, render_value};
use super::{Command, EvalCase, EvalKind, Expected, Load, RangeSpec, Script};

/// Lookback delta the scripts assume (README 1.13).
const LOOKBACK_DELTA_MS: i64 = 5 * 60_000;
/// Step of subqueries written without one (README 1.13).
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;
/// Distance of the extra steps of the range-mode check around the case's time.
const RANGE_CHECK_STEP_MS: i64 = 60_000;

/// How strictly cases are judged.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Also check error messages and annotations, and re-run instant cases in range mode and
    /// with `@` pinned selectors (README 1.12).
    pub strict: bool,
}

/// What happened to one case.
#[derive(Debug)]
pub enum Outcome {
    /// The result matched.
    Passed,
    /// The result did not match; the message says how.
    Failed(String),
    /// The case was not selected to run.
    NotRun,
}

/// One case's outcome.
#[derive(Debug)]
pub struct CaseOutcome {
    /// 1-based line of the `eval` command.
    pub line: usize,
    /// The query.
    pub query: String,
    /// What happened.
    pub outcome: Outcome,
}

/// The outcome of running one script.
#[derive(Debug, Default)]
pub struct ScriptReport {
    /// Every case, in file order.
    pub cases: Vec<CaseOutcome>,
    /// Problems of the runner or the file rather than of a query: unparsable commands,
    /// rejected samples. Each names its line.
    pub errors: Vec<String>,
    /// Series not loaded because they hold native histograms.
    pub histogram_series: usize,
    /// `load_with_nhcb` blocks, loaded without the native conversion.
    pub nhcb_loads: usize,
    /// Series whose start timestamps (`@st`) were dropped.
    pub start_timestamp_series: usize,
}

/// Runs scripts against fresh in-memory databases.
#[derive(Debug)]
pub struct Runner {
    engine: Engine,
    options: RunOptions,
}

impl Runner {
    /// A runner with the engine settings of README 1.13.
    pub fn new(options: RunOptions) -> Runner {
        let engine = Engine::new(EngineOptions {
            lookback_delta_ms: LOOKBACK_DELTA_MS,
            default_subquery_step_ms: DEFAULT_SUBQUERY_STEP_MS,
            ..EngineOptions::default()
        });
        Runner { engine, options }
    }

    /// Runs the commands of `script` in order; only cases for which `selected` is true are
    /// evaluated, the others are reported as [`Outcome::NotRun`].
    pub async fn run(&self, script: &Script, selected: impl Fn(&EvalCase) -> bool) -> ScriptReport {
        let mut report = ScriptReport::default();
        let mut tsdb = fresh_tsdb();
        for command in &script.commands {
            match command {
                Command::Load(load) => {
                    if let Err(error) = apply_load(&tsdb, load, &mut report).await {
                        report.errors.push(format!("line {}: {error}", load.line));
                    }
                }
                Command::Clear => tsdb = fresh_tsdb(),
                Command::Invalid { line, message } => {
                    report.errors.push(format!("line {line}: {message}"));
                }
                Command::Eval(case) => {
                    let outcome = if !selected(case) {
                        Outcome::NotRun
                    } else if !case.errors.is_empty() {
                        Outcome::Failed(format!("bad case: {}", case.errors.join("; ")))
                    } else {
                        match self.run_case(&tsdb, case).await {
                            Ok(()) => Outcome::Passed,
                            Err(message) => Outcome::Failed(message),
                        }
                    };
                    report.cases.push(CaseOutcome {
                        line: case.line,
                        query: case.query.clone(),
                        outcome,
                    });
                }
            }
        }
        report
    }

    async fn query(
        &self,
        storage: &dyn Storage,
        query: &str,
        kind: EvalKind,
    ) -> Result<QueryOutput, lookout_promql::QueryError> {
        match kind {
            EvalKind::Instant { at_ms } => self.engine.instant_query(storage, query, at_ms).await,
            EvalKind::Range(range) => {
                self.engine
                    .range_query(storage, query, range.start_ms, range.end_ms, range.step_ms)
                    .await
            }
        }
    }

    async fn run_case(&self, storage: &dyn Storage, case: &EvalCase) -> Result<(), String> {
        let result = self.query(storage, &case.query, case.kind).await;
        let output = match (&case.fail, result) {
            (Some(pattern), Err(error)) => {
                let text = error.to_string();
                if self.options.strict && !pattern.matches(&text)? {
                    return Err(format!(
                        "expected an error matching {pattern}, got error: {text}"
                    ));
                }
                return Ok(());
            }
            (Some(pattern), Ok(output)) => {
                return Err(format!(
                    "expected an error matching {pattern}, got {}",
                    render_value(&output.value, self.grid(case))
                ));
            }
            (None, Err(error)) => {
                return Err(format!(
                    "expected {}, got error: {error}",
                    render_expected(&case.expected, self.grid(case))
                ));
            }
            (None, Ok(output)) => output,
        };
        judge_value(&case.expected, self.grid(case), case.ordered, &output.value)?;
        if self.options.strict {
            judge_annotations(&case.annotations, &output.warnings, &output.infos)?;
            self.check_range_mode(storage, case).await?;
            self.check_step_invariance(storage, case).await?;
        }
        Ok(())
    }

    /// The grid of an expected matrix: the query's for range queries, the
    /// `expect range vector` one for instant queries.
    fn grid(&self, case: &EvalCase) -> Option<RangeSpec> {
        match (&case.kind, &case.expected) {
            (EvalKind::Range(range), _) => Some(*range),
            (EvalKind::Instant { .. }, Expected::Series { range, .. }) => *range,
            (EvalKind::Instant { .. }, _) => None,
        }
    }

    /// README 1.12.1: an instant case, re-run as a range query from `t - 1m` to `t + 1m`, must
    /// give the same values at `t`.
    async fn check_range_mode(&self, storage: &dyn Storage, case: &EvalCase) -> Result<(), String> {
        let EvalKind::Instant { at_ms } = case.kind else {
            return Ok(());
        };
        let excluded = case.ordered
            || calls_any(&case.query, RANGE_DEPENDENT_FUNCTIONS)
            || matches!(
                case.expected,
                Expected::String(_) | Expected::Series { range: Some(_), .. }
            );
        if excluded {
            return Ok(());
        }
        let range = RangeSpec {
            start_ms: at_ms - RANGE_CHECK_STEP_MS,
            end_ms: at_ms + RANGE_CHECK_STEP_MS,
            step_ms: RANGE_CHECK_STEP_MS,
        };
        let output = self
            .query(storage, &case.query, EvalKind::Range(range))
            .await
            .map_err(|error| format!("range-mode check: error: {error}"))?;
        let QueryValue::Matrix(matrix) = output.value else {
            return Err(format!(
                "range-mode check: a range query returned a {}",
                output.value.result_type()
            ));
        };
        let at_t: Vec<InstantSample> = matrix
            .into_iter()
            .filter_map(|series| {
                let point = series.points.iter().find(|point| point.t == at_ms)?;
                Some(InstantSample {
                    labels: series.labels,
                    t: at_ms,
                    v: point.v,
                })
            })
            .collect();
        // A scalar comes back from a range query as one series without labels.
        let value = match case.expected {
            Expected::Scalar(_) => match &at_t[..] {
                [only] if only.labels.is_empty() => QueryValue::Scalar {
                    t: at_ms,
                    v: only.v,
                },
                _ => QueryValue::Vector(at_t),
            },
            _ => QueryValue::Vector(at_t),
        };
        judge_value(&case.expected, None, false, &value)
            .map_err(|message| format!("range-mode check at t: {message}"))
    }

    /// README 1.12.2: with every selector pinned to `@ t`, the query must give the same result
    /// at other evaluation times.
    async fn check_step_invariance(
        &self,
        storage: &dyn Storage,
        case: &EvalCase,
    ) -> Result<(), String> {
        let EvalKind::Instant { at_ms } = case.kind else {
            return Ok(());
        };
        let Some(pinned) = pin_to(&case.query, at_ms) else {
            return Ok(());
        };
        let times = if at_ms == 0 {
            vec![-1_000, 0, 1_000]
        } else {
            vec![-10 * at_ms, 0, at_ms / 5, at_ms, 10 * at_ms]
        };
        for time in times {
            let output = self
                .engine
                .instant_query(storage, &pinned, time)
                .await
                .map_err(|error| format!("@ check: {pinned} at {time}ms: error: {error}"))?;
            judge_value(&case.expected, self.grid(case), case.ordered, &output.value)
                .map_err(|message| format!("@ check: {pinned} at {time}ms: {message}"))?;
        }
        Ok(())
    }
}

fn fresh_tsdb() -> Tsdb {
    let options = HeadOptions {
        // Loads are additive and may go back in time; nothing is in the future of a clock.
        out_of_order_window_ms: i64::MAX,
        max_future_ms: None,
        ..HeadOptions::default()
    };
    Tsdb::in_memory(options).expect("valid head options")
}

/// Writes a load block's series; every rejected sample is an error.
async fn apply_load(tsdb: &Tsdb, load: &Load, report: &mut ScriptReport) -> Result<(), String> {
    for (line, message) in &load.errors {
        report.errors.push(format!("line {line}: {message}"));
    }
    report.histogram_series += load.histogram_series;
    report.start_timestamp_series += load.start_timestamp_series;
    report.nhcb_loads += usize::from(load.nhcb);

    let mut batch = WriteBatch::new();
    for series in &load.series {
        if !series.samples.is_empty() {
            batch.push(series.labels.clone(), series.samples.clone());
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    let expected = batch.sample_count() as u64;
    let outcome = tsdb
        .write(batch)
        .await
        .map_err(|error| format!("write failed: {error}"))?;
    if outcome.rejected_total() > 0 || outcome.accepted != expected {
        return Err(format!(
            "{} of {expected} samples accepted, rejected: {:?}; {}",
            outcome.accepted,
            outcome.rejected,
            outcome.messages.join("; ")
        ));
    }
    Ok(())
}
