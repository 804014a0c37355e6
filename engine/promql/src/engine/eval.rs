//! Planning, fetching and the evaluator core: selectors, subqueries, operators and
//! aggregations. Function calls live in `functions.rs`.
//!
//! Every operator works on whole series across all steps of its grid: a [`Column`] holds one
//! optional value per step. Label sets are computed once per series (grouping keys, matching
//! signatures, dropped metric names), never per step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::future::try_join_all;
use lookout_model::{is_stale_nan, Labels, Matcher, Sample, METRIC_NAME_LABEL};
use lookout_storage::{collect_series, SelectHints, SelectRequest, Series, Storage};

use super::functions::{self, GroupFold};
use super::value::{InstantSample, Point, QueryOutput, QueryStats, QueryValue, RangeSeries};
use super::{EngineOptions, QueryError};
use crate::ast::{
    Aggregate, AggregateOp, AtModifier, Binary, BinaryOp, Expr, ExtendedRange, MatrixSelector,
    Subquery, UnaryOp, VectorMatchCardinality, VectorMatching, VectorSelector,
};

/// What one loaded sample or computed point costs against the memory budget: a timestamp and
/// a value, or an optional value per step.
const BYTES_PER_POINT: u64 = 16;

/// One optional value per step of a grid.
pub(crate) type Column = Vec<Option<f64>>;

/// The evaluation times of an operator: `start`, `start + step`, ... up to `end` inclusive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl Grid {
    pub(crate) fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    pub(crate) fn time(&self, index: usize) -> i64 {
        self.start + index as i64 * self.step
    }
}

/// One series of an instant-vector result over a grid.
///
/// Dropping the metric name is lazy: an operator that drops it sets `drop_name` and keeps
/// `labels` as they were, so a chain like `sum by (job) (rate(x[5m]))` never builds the
/// name-less label sets it only groups by. [`VSeries::effective_labels`] and
/// [`EffectiveKey`] see the labels with the name dropped; results and the operators that
/// rewrite labels work on materialised series ([`materialize`]).
#[derive(Debug, Clone)]
pub(crate) struct VSeries {
    pub(crate) labels: Labels,
    /// `labels` still hold a metric name (and `__type__`/`__unit__`) that is dropped.
    pub(crate) drop_name: bool,
    pub(crate) values: Column,
}

impl VSeries {
    /// A series with exactly these labels.
    pub(crate) fn new(labels: Labels, values: Column) -> VSeries {
        VSeries {
            labels,
            drop_name: false,
            values,
        }
    }

    /// The labels with the name dropped if it is.
    pub(crate) fn effective_labels(&self) -> Labels {
        drop_metric_name_if(&self.labels, self.drop_name)
    }

    /// The value of label `name`, seen through a dropped name.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        if self.drop_name && NAME_LABELS.contains(&name) {
            None
        } else {
            self.labels.get(name)
        }
    }

    /// The effective labels in order.
    pub(crate) fn label_iter(&self) -> impl Iterator<Item = &lookout_model::Label> {
        let drop = self.drop_name;
        self.labels
            .iter()
            .filter(move |l| !drop || !NAME_LABELS.contains(&l.name.as_str()))
    }
}

/// Applies every pending name drop.
pub(crate) fn materialize(series: &mut [VSeries]) {
    for s in series {
        if s.drop_name {
            s.labels = drop_metric_name(&s.labels);
            s.drop_name = false;
        }
    }
}

/// A series' effective label set as a hash key, without building it.
#[derive(Debug)]
pub(crate) struct EffectiveKey<'a> {
    series: &'a VSeries,
    hash: u64,
}

impl<'a> EffectiveKey<'a> {
    pub(crate) fn new(series: &'a VSeries) -> EffectiveKey<'a> {
        EffectiveKey {
            series,
            hash: effective_labels_hasher(series).digest(),
        }
    }
}

/// A hasher fed a series' effective labels (seen through a pending name drop).
pub(crate) fn effective_labels_hasher(series: &VSeries) -> xxhash_rust::xxh3::Xxh3 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for label in series.label_iter() {
        hasher.update(label.name.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(label.value.as_bytes());
        hasher.update(&[0xff]);
    }
    hasher
}

impl PartialEq for EffectiveKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.series.label_iter().eq(other.series.label_iter())
    }
}

impl Eq for EffectiveKey<'_> {}

impl std::hash::Hash for EffectiveKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A range vector: raw points per series, and per step the end of the window `(end - range,
/// end]` (offset and `@` applied).
#[derive(Debug)]
pub(crate) struct RangeVal {
    /// The series with their points; empty while `pending` is set.
    pub(crate) series: Vec<(Labels, Vec<Point>)>,
    /// The read still arriving, for a function that takes it batch by batch
    /// ([`Evaluator::eval_range_pending`]); everything else sees it collected.
    pub(crate) pending: Option<PendingRead>,
    pub(crate) range: i64,
    pub(crate) ends: Vec<i64>,
    /// `anchored` / `smoothed`: the points also reach one sample past each edge of the
    /// window (within the lookback), which the functions that allow it use.
    pub(crate) extended: Option<ExtendedRange>,
    /// How far past an edge that sample may be.
    pub(crate) lookback: i64,
}

/// What an operator produces.
#[derive(Debug)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<VSeries>),
    Range(RangeVal),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::String(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Range(_) => "range vector",
        }
    }
}

/// The selectors of a query with the time range each needs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Boxed: fetched series are keyed by selector addresses, which must not move when the
    /// plan does.
    expr: Box<Expr>,
    /// The query text, for the positions in annotations.
    query: String,
    start: i64,
    end: i64,
    step: i64,
    fetches: Vec<Fetch>,
}

#[derive(Debug)]
struct Fetch {
    key: usize,
    matchers: Vec<Matcher>,
    mint: i64,
    maxt: i64,
    /// A range-vector selector's read: its samples can be handed over to the evaluator.
    matrix: bool,
    /// Set when the selector is the direct input of an aggregation the backend may reduce
    /// (see [`Pushdown`]).
    pushdown: Option<Pushdown>,
}

/// Aggregations whose plain instant-selector input may be reduced by the backend to the
/// latest sample per series and step (`SelectHints::latest_per_step`). The reduction keeps
/// exactly the samples the selector reads, so any aggregation over it would do; these are the
/// ones a backend can declare in `Capabilities::pushdown_aggregations`.
const PUSHDOWN_AGGREGATIONS: [AggregateOp; 5] = [
    AggregateOp::Sum,
    AggregateOp::Min,
    AggregateOp::Max,
    AggregateOp::Count,
    AggregateOp::Avg,
];

/// The hints of a pushed-down selector read.
#[derive(Debug, Clone)]
struct Pushdown {
    /// The aggregation operator, as `Capabilities::pushdown_aggregations` names it.
    op: &'static str,
    /// The query's step; `None` for an instant query (one evaluation time, `maxt`).
    step_ms: Option<i64>,
    grouping: Vec<String>,
    grouping_by: bool,
}

impl Fetch {
    /// The select request, with the pushdown hints when the backend declares the
    /// aggregation.
    fn request(&self, pushed_down: &[&str]) -> SelectRequest {
        let mut request = SelectRequest::new(self.matchers.clone(), self.mint, self.maxt);
        if let Some(pushdown) = &self.pushdown {
            if pushed_down.contains(&pushdown.op) {
                request.hints = SelectHints {
                    step_ms: pushdown.step_ms,
                    function: Some(pushdown.op.to_owned()),
                    grouping: pushdown.grouping.clone(),
                    grouping_by: pushdown.grouping_by,
                    latest_per_step: true,
                    ..SelectHints::default()
                };
            }
        }
        request
    }
}

/// Series read for each selector, keyed by the selector's address in the plan's tree.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    series: HashMap<usize, Vec<Series>>,
    /// Reads of range-vector selectors that nothing else uses: they arrive batch by batch
    /// while the evaluator works, which takes their samples over instead of copying them.
    owned: HashMap<usize, PendingRead>,
    /// The runtime the pending reads are pumped on.
    handle: Option<tokio::runtime::Handle>,
    samples: u64,
    series_count: u64,
}

/// Work (samples read plus series × steps) below which a query is evaluated on the async
/// worker that fetched it: handing it to the blocking pool and back costs more (a thread
/// wake-up each way) than evaluating it.
const INLINE_WORK: u64 = 50_000;

impl Fetched {
    /// Whether evaluating `plan` on this data is small enough to do without leaving the async
    /// worker: everything read already (no read still arriving, which the evaluator would wait
    /// for), little of it, and no subquery (which evaluates its expression at every step of
    /// its own).
    pub(crate) fn is_small_for(&self, plan: &Plan) -> bool {
        fn has_subquery(expr: &Expr) -> bool {
            matches!(expr, Expr::Subquery(_)) || expr.children().into_iter().any(has_subquery)
        }
        let steps = match plan.step {
            0 => 1,
            step => ((plan.end - plan.start) / step).unsigned_abs() + 1,
        };
        self.owned.is_empty()
            && self
                .samples
                .saturating_add(self.series_count.saturating_mul(steps))
                <= INLINE_WORK
            && !has_subquery(&plan.expr)
    }
}

/// A read whose batches of series (sorted by labels, as the store streams them) are still
/// arriving; a task of the query's runtime pulls them from the store, at most two batches
/// ahead of the evaluator.
#[derive(Debug)]
pub(crate) struct PendingRead {
    receiver: tokio::sync::mpsc::Receiver<lookout_storage::StorageResult<Vec<Series>>>,
}

/// Batches a pending read may run ahead of the evaluator.
const PENDING_BATCHES: usize = 2;

fn selector_key(selector: &VectorSelector) -> usize {
    std::ptr::from_ref(selector) as usize
}

impl Plan {
    pub(crate) fn new(
        expr: Expr,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        options: &EngineOptions,
    ) -> Plan {
        let mut plan = Plan {
            expr: Box::new(expr),
            query: query.to_owned(),
            start,
            end,
            step,
            fetches: Vec::new(),
        };
        let mut fetches = Vec::new();
        collect_fetches(
            &plan.expr,
            start,
            end,
            start,
            end,
            Some(step),
            options,
            &mut fetches,
        );
        plan.fetches = fetches;
        plan
    }

    /// Reads every selector's series, all at once.
    pub(crate) async fn fetch(
        &self,
        storage: &dyn Storage,
        options: &EngineOptions,
    ) -> Result<Fetched, QueryError> {
        let pushed_down = if options.pushdown {
            storage.capabilities().pushdown_aggregations
        } else {
            &[]
        };
        let mut uses: HashMap<usize, (usize, bool)> = HashMap::new();
        for fetch in &self.fetches {
            let entry = uses.entry(fetch.key).or_insert((0, true));
            entry.0 += 1;
            entry.1 &= fetch.matrix;
        }
        let uses = &uses;
        let reads = self.fetches.iter().map(|fetch| async move {
            let request = fetch.request(pushed_down);
            let stream = storage.select(request).await?;
            if uses.get(&fetch.key) == Some(&(1, true)) {
                let (sender, receiver) = tokio::sync::mpsc::channel(PENDING_BATCHES);
                tokio::spawn(async move {
                    use futures::StreamExt;
                    let mut stream = stream;
                    while let Some(batch) = stream.next().await {
                        let failed = batch.is_err();
                        if sender.send(batch).await.is_err() || failed {
                            break;
                        }
                    }
                });
                return Ok::<_, QueryError>((fetch.key, Err(PendingRead { receiver })));
            }
            Ok((fetch.key, Ok(collect_series(stream).await?)))
        });
        let mut fetched = Fetched {
            handle: Some(tokio::runtime::Handle::current()),
            ..Fetched::default()
        };
        for (key, read) in try_join_all(reads).await? {
            let series = match read {
                Ok(series) => series,
                Err(pending) => {
                    fetched.owned.insert(key, pending);
                    continue;
                }
            };
            fetched.series_count += series.len() as u64;
            fetched.samples += series.iter().map(|s| s.samples.len() as u64).sum::<u64>();
            if fetched.samples > options.max_samples {
                return Err(QueryError::TooManySamples("query execution"));
            }
            if fetched.samples.saturating_mul(BYTES_PER_POINT) > options.max_memory_bytes {
                return Err(QueryError::MemoryBudget(options.max_memory_bytes));
            }
            fetched.series.insert(key, series);
        }
        Ok(fetched)
    }

    /// Evaluates the query on the fetched data.
    pub(crate) fn evaluate(
        self,
        data: Fetched,
        options: &EngineOptions,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<QueryOutput, QueryError> {
        let instant = self.step == 0;
        let grid = Grid {
            start: self.start,
            end: self.end,
            step: self.step.max(1),
        };
        let mut ev = Evaluator {
            data: &data.series,
            owned: data.owned,
            handle: data.handle,
            streamed_samples: 0,
            streamed_series: 0,
            options,
            query_start: self.start,
            query_end: self.end,
            query_step: self.step,
            deadline,
            cancel,
            held: data.samples,
            peak: data.samples,
            warnings: Vec::new(),
            infos: Vec::new(),
            query: &self.query,
            fold: None,
        };
        let value = ev.eval(&self.expr, grid)?;
        let value = if instant {
            instant_value(value, grid)
        } else {
            range_value(value, grid)?
        };
        let stats = QueryStats {
            samples_loaded: data.samples + ev.streamed_samples,
            peak_samples: ev.peak,
            series_loaded: data.series_count + ev.streamed_series,
            ..QueryStats::default()
        };
        Ok(QueryOutput {
            value,
            warnings: ev.warnings,
            infos: ev.infos,
            stats,
        })
    }
}

/// A read series as points, its stale markers left out.
pub(crate) fn points_of(series: Series) -> (Labels, Vec<Point>) {
    // Same size and alignment, so the collect reuses the sample vector's allocation. The
    // stale markers (usually none) are looked for in the same pass, and only then removed:
    // the samples come from another core's cache, and a second pass over them would cost as
    // much as the first.
    let mut stale = false;
    let mut points: Vec<Point> = series
        .samples
        .into_iter()
        .map(|sample| {
            stale |= is_stale_nan(sample.value);
            point(&sample)
        })
        .collect();
    if stale {
        points.retain(|point| !is_stale_nan(point.v));
    }
    (series.labels, points)
}

/// A sample as a point, unless it is a stale marker.
fn live_point(sample: &Sample) -> Option<Point> {
    (!is_stale_nan(sample.value)).then(|| point(sample))
}

/// A sample as a point.
fn point(sample: &Sample) -> Point {
    Point {
        t: sample.timestamp.0,
        v: sample.value,
    }
}

/// Resolves an `@` modifier to milliseconds.
fn at_time(at: Option<AtModifier>, query_start: i64, query_end: i64) -> Option<i64> {
    match at? {
        AtModifier::Timestamp(ms) => Some(ms),
        AtModifier::Start => Some(query_start),
        AtModifier::End => Some(query_end),
    }
}

/// Walks the tree and records, for every selector, the time range it reads. `start`/`end`
/// are the evaluation times of the current node; `grid_step` is the query's step (0 for an
/// instant query) while the node is evaluated on the query's own grid, `None` inside a
/// subquery.
#[allow(clippy::too_many_arguments)]
fn collect_fetches(
    expr: &Expr,
    start: i64,
    end: i64,
    query_start: i64,
    query_end: i64,
    grid_step: Option<i64>,
    options: &EngineOptions,
    out: &mut Vec<Fetch>,
) {
    if let Expr::Aggregate(aggregate) = expr {
        let pushed = options
            .pushdown
            .then(|| pushdown_fetch(aggregate, start, end, grid_step, options))
            .flatten();
        if let Some(fetch) = pushed {
            out.push(fetch);
            return;
        }
    }
    match expr {
        Expr::VectorSelector(selector) => {
            let mut fetch = selector_fetch(
                selector,
                start,
                end,
                query_start,
                query_end,
                options.lookback_delta_ms,
            );
            if selector.extended_range == Some(ExtendedRange::Smoothed) {
                fetch.maxt += options.lookback_delta_ms;
            }
            out.push(fetch);
        }
        Expr::MatrixSelector(matrix) => {
            let mut fetch = selector_fetch(
                &matrix.vector,
                start,
                end,
                query_start,
                query_end,
                matrix.range_ms,
            );
            // anchored/smoothed read one sample past the window's edges, within the lookback.
            match matrix.vector.extended_range {
                Some(ExtendedRange::Anchored) => fetch.mint -= options.lookback_delta_ms,
                Some(ExtendedRange::Smoothed) => {
                    fetch.mint -= options.lookback_delta_ms;
                    fetch.maxt += options.lookback_delta_ms;
                }
                None => {}
            }
            fetch.matrix = true;
            out.push(fetch);
        }
        Expr::Subquery(subquery) => {
            let (s, e) = match at_time(subquery.at, query_start, query_end) {
                Some(at) => (at, at),
                None => (start, end),
            };
            let offset = subquery.offset.unwrap_or(0);
            collect_fetches(
                &subquery.expr,
                s - offset - subquery.range_ms,
                e - offset,
                query_start,
                query_end,
                None,
                options,
                out,
            );
        }
        Expr::Call(call) if call.func.name == "info" => {
            // The info series are read over every time the base expression reads.
            let mut base = Vec::new();
            collect_fetches(
                &call.args[0],
                start,
                end,
                query_start,
                query_end,
                grid_step,
                options,
                &mut base,
            );
            if let (Some(mint), Some(maxt)) = (
                base.iter().map(|f| f.mint).min(),
                base.iter().map(|f| f.maxt).max(),
            ) {
                out.push(Fetch {
                    key: info_key(call),
                    matchers: super::functions::info_matchers(call.args.get(1)),
                    mint,
                    maxt,
                    matrix: false,
                    pushdown: None,
                });
            }
            out.extend(base);
        }
        other => {
            for child in other.children() {
                collect_fetches(
                    child,
                    start,
                    end,
                    query_start,
                    query_end,
                    grid_step,
                    options,
                    out,
                );
            }
        }
    }
}

/// The read of an aggregation's input when it can be pushed down: the aggregation is one of
/// [`PUSHDOWN_AGGREGATIONS`] without a parameter, evaluated on the query's grid (not inside
/// a subquery), over a plain instant selector (no `@`, no `anchored`/`smoothed`). Such a
/// selector reads, at each evaluation time `t`, only the latest sample in
/// `(t - offset - lookback, t - offset]`; the read's `maxt` is the last evaluation time
/// (minus the offset) so the backend's step intervals line up with the evaluation times.
fn pushdown_fetch(
    aggregate: &Aggregate,
    start: i64,
    end: i64,
    grid_step: Option<i64>,
    options: &EngineOptions,
) -> Option<Fetch> {
    let step = grid_step?;
    if !PUSHDOWN_AGGREGATIONS.contains(&aggregate.op) || aggregate.param.is_some() {
        return None;
    }
    let Expr::VectorSelector(selector) = aggregate.expr.unwrap_parens() else {
        return None;
    };
    if selector.at.is_some() || selector.extended_range.is_some() || selector.offset_expr.is_some()
    {
        return None;
    }
    let (last, step_ms) = if step > 0 {
        (start + (end - start) / step * step, Some(step))
    } else {
        (end, None)
    };
    let offset = selector.offset.unwrap_or(0);
    Some(Fetch {
        key: selector_key(selector),
        matchers: selector.matchers.clone(),
        mint: start
            .saturating_sub(offset)
            .saturating_sub(options.lookback_delta_ms),
        maxt: last.saturating_sub(offset),
        matrix: false,
        pushdown: Some(Pushdown {
            op: aggregate.op.name(),
            step_ms,
            grouping: aggregate.grouping.clone(),
            grouping_by: !aggregate.without,
        }),
    })
}

/// Where the info series of an `info()` call are kept among the fetched series.
pub(crate) fn info_key(call: &crate::ast::Call) -> usize {
    std::ptr::from_ref(call) as usize
}

/// The read of one selector evaluated over `[start, end]`, reaching `before` milliseconds
/// further back (the lookback or the range).
fn selector_fetch(
    selector: &VectorSelector,
    start: i64,
    end: i64,
    query_start: i64,
    query_end: i64,
    before: i64,
) -> Fetch {
    let (s, e) = match at_time(selector.at, query_start, query_end) {
        Some(at) => (at, at),
        None => (start, end),
    };
    let offset = selector.offset.unwrap_or(0);
    Fetch {
        key: selector_key(selector),
        matchers: selector.matchers.clone(),
        mint: s.saturating_sub(offset).saturating_sub(before),
        maxt: e.saturating_sub(offset),
        matrix: false,
        pushdown: None,
    }
}

/// Turns the value of an instant query into the API's shape.
fn instant_value(value: Val, grid: Grid) -> QueryValue {
    let t = grid.start;
    match value {
        Val::Scalar(values) => QueryValue::Scalar { t, v: values[0] },
        Val::String(v) => QueryValue::String { t, v },
        Val::Vector(mut series) => QueryValue::Vector({
            materialize(&mut series);
            series
                .into_iter()
                .filter_map(|s| {
                    s.values[0].map(|v| InstantSample {
                        labels: s.labels,
                        t,
                        v,
                    })
                })
                .collect()
        }),
        Val::Range(range) => {
            let end = range.ends[0];
            let mut out: Vec<RangeSeries> = range
                .series
                .into_iter()
                .filter_map(|(labels, points)| {
                    let points: Vec<Point> = points
                        .into_iter()
                        .filter(|p| p.t > end - range.range && p.t <= end)
                        .collect();
                    (!points.is_empty()).then_some(RangeSeries { labels, points })
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryValue::Matrix(out)
        }
    }
}

/// Turns the value of a range query into a matrix sorted by labels.
fn range_value(value: Val, grid: Grid) -> Result<QueryValue, QueryError> {
    let to_points = |values: &[Option<f64>]| -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| Point { t: grid.time(i), v }))
            .collect()
    };
    match value {
        Val::Scalar(values) => Ok(QueryValue::Matrix(vec![RangeSeries {
            labels: Labels::empty(),
            points: values
                .iter()
                .enumerate()
                .map(|(i, v)| Point {
                    t: grid.time(i),
                    v: *v,
                })
                .collect(),
        }])),
        Val::Vector(mut series) => {
            materialize(&mut series);
            let mut out: Vec<RangeSeries> = series
                .iter()
                .map(|s| RangeSeries {
                    labels: s.labels.clone(),
                    points: to_points(&s.values),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(QueryValue::Matrix(out))
        }
        other => Err(QueryError::BadRequest(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            other.type_name()
        ))),
    }
}

/// Stops work when the query ran out of time or its caller went away.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard<'a> {
    deadline: Instant,
    cancel: &'a AtomicBool,
}

impl Guard<'_> {
    pub(crate) fn check(&self) -> Result<(), QueryError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(QueryError::Canceled("query execution"));
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout("query execution"));
        }
        Ok(())
    }
}

/// The evaluator of one query.
pub(crate) struct Evaluator<'a> {
    data: &'a HashMap<usize, Vec<Series>>,
    /// Reads only one range-vector selector uses, taken over when it is evaluated.
    owned: HashMap<usize, PendingRead>,
    handle: Option<tokio::runtime::Handle>,
    /// Samples and series that arrived through pending reads.
    streamed_samples: u64,
    streamed_series: u64,
    pub(crate) options: &'a EngineOptions,
    pub(crate) query_start: i64,
    pub(crate) query_end: i64,
    /// The query's step in milliseconds; 0 for instant queries.
    pub(crate) query_step: i64,
    deadline: Instant,
    cancel: &'a AtomicBool,
    held: u64,
    peak: u64,
    pub(crate) warnings: Vec<String>,
    pub(crate) infos: Vec<String>,
    query: &'a str,
    /// An aggregation waiting for its argument's series (see [`GroupFold`]).
    pub(crate) fold: Option<GroupFold>,
}

impl<'a> Evaluator<'a> {
    /// Stops the query when it ran out of time or its caller went away.
    pub(crate) fn check(&mut self) -> Result<(), QueryError> {
        self.guard().check()
    }

    /// Accounts for `points` computed values against `max_samples`.
    /// ` (line:column)` of a byte offset into the query, as Prometheus ends annotations.
    fn position(&self, offset: usize) -> String {
        let before = self.query.get(..offset).unwrap_or(self.query);
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
        format!(" ({line}:{column})")
    }

    /// Adds a `PromQL warning:` annotation about the expression at `offset` (once).
    pub(crate) fn warn(&mut self, text: &str, offset: usize) {
        let annotation = format!("PromQL warning: {text}{}", self.position(offset));
        if !self.warnings.contains(&annotation) {
            self.warnings.push(annotation);
        }
    }

    /// Adds a `PromQL info:` annotation about the expression at `offset` (once).
    pub(crate) fn info(&mut self, text: &str, offset: usize) {
        let annotation = format!("PromQL info: {text}{}", self.position(offset));
        if !self.infos.contains(&annotation) {
            self.infos.push(annotation);
        }
    }

    /// Warns once when a quantile parameter leaves `[0, 1]` at some step.
    pub(crate) fn check_quantile(&mut self, q: &[f64], offset: usize) {
        if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            let text = format!(
                "quantile value should be between 0 and 1, got {}",
                super::math::go_format_float(*bad)
            );
            self.warn(&text, offset);
        }
    }

    /// The timeout and cancellation checks, shareable with worker threads.
    pub(crate) fn guard(&self) -> Guard<'a> {
        Guard {
            deadline: self.deadline,
            cancel: self.cancel,
        }
    }

    /// [`Evaluator::check`] every 1024 items of a loop.
    pub(crate) fn check_every(&mut self, index: usize) -> Result<(), QueryError> {
        if index.is_multiple_of(1024) {
            self.check()?;
        }
        Ok(())
    }

    /// Gives back points accounted by [`Evaluator::hold`] that are no longer kept.
    pub(crate) fn release(&mut self, points: usize) {
        self.held = self.held.saturating_sub(points as u64);
    }

    pub(crate) fn hold(&mut self, points: usize) -> Result<(), QueryError> {
        self.held += points as u64;
        self.peak = self.peak.max(self.held);
        if self.held > self.options.max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
        if self.held.saturating_mul(BYTES_PER_POINT) > self.options.max_memory_bytes {
            return Err(QueryError::MemoryBudget(self.options.max_memory_bytes));
        }
        Ok(())
    }

    pub(crate) fn eval(&mut self, expr: &Expr, grid: Grid) -> Result<Val, QueryError> {
        self.check()?;
        match expr {
            Expr::NumberLiteral(v) => Ok(Val::Scalar(vec![*v; grid.len()])),
            Expr::StringLiteral(s) => Ok(Val::String(s.clone())),
            Expr::Paren(inner) => self.eval(inner, grid),
            Expr::VectorSelector(selector) => {
                Ok(Val::Vector(self.select_vector(selector, grid, false)?))
            }
            Expr::MatrixSelector(matrix) => Ok(Val::Range(self.select_matrix(matrix, grid)?)),
            Expr::Subquery(subquery) => Ok(Val::Range(self.subquery(subquery, grid)?)),
            Expr::Unary(unary) => {
                let value = self.eval(&unary.expr, grid)?;
                match (unary.op, value) {
                    (UnaryOp::Plus, value) => Ok(value),
                    (UnaryOp::Neg, Val::Scalar(values)) => {
                        Ok(Val::Scalar(values.into_iter().map(|v| -v).collect()))
                    }
                    (UnaryOp::Neg, Val::Vector(series)) => {
                        let series = series
                            .into_iter()
                            .map(|s| VSeries {
                                labels: s.labels,
                                drop_name: true,
                                values: s.values.into_iter().map(|v| v.map(|v| -v)).collect(),
                            })
                            .collect();
                        Ok(Val::Vector(merge_same_labels(series)?))
                    }
                    (_, other) => Err(QueryError::Execution(format!(
                        "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                        other.type_name()
                    ))),
                }
            }
            Expr::Call(call) => functions::call(self, call, grid),
            Expr::Aggregate(aggregate) => self.aggregate(aggregate, grid),
            Expr::Binary(binary) => self.binary(binary, grid),
        }
    }

    pub(crate) fn eval_scalar(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr, grid)? {
            Val::Scalar(values) => Ok(values),
            other => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// An instant vector with its labels as they are (names dropped).
    pub(crate) fn eval_vector(
        &mut self,
        expr: &Expr,
        grid: Grid,
    ) -> Result<Vec<VSeries>, QueryError> {
        let mut series = self.eval_vector_lazy(expr, grid)?;
        materialize(&mut series);
        Ok(series)
    }

    /// An instant vector whose series may still carry a name to drop (see [`VSeries`]).
    pub(crate) fn eval_vector_lazy(
        &mut self,
        expr: &Expr,
        grid: Grid,
    ) -> Result<Vec<VSeries>, QueryError> {
        match self.eval(expr, grid)? {
            Val::Vector(series) => Ok(series),
            other => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// [`Evaluator::eval_range`], leaving a plain range selector's read pending when nothing
    /// else uses it (see [`RangeVal::pending`]).
    pub(crate) fn eval_range_pending(
        &mut self,
        expr: &Expr,
        grid: Grid,
    ) -> Result<RangeVal, QueryError> {
        match expr {
            Expr::MatrixSelector(matrix) => {
                self.check()?;
                Ok(self.select_matrix_pending(matrix, grid))
            }
            Expr::Paren(inner) => self.eval_range_pending(inner, grid),
            _ => self.eval_range(expr, grid),
        }
    }

    pub(crate) fn eval_range(&mut self, expr: &Expr, grid: Grid) -> Result<RangeVal, QueryError> {
        match self.eval(expr, grid)? {
            Val::Range(range) => Ok(range),
            other => Err(QueryError::Execution(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    fn fetched(&self, selector: &VectorSelector) -> &[Series] {
        self.fetched_by_key(selector_key(selector))
    }

    pub(crate) fn fetched_by_key(&self, key: usize) -> &'a [Series] {
        self.data.get(&key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// An instant selector: per step the latest sample in `(t - lookback, t]` unless it is a
    /// stale marker. With `timestamps` the values are the samples' timestamps in seconds
    /// (what `timestamp()` returns).
    pub(crate) fn select_vector(
        &mut self,
        selector: &VectorSelector,
        grid: Grid,
        timestamps: bool,
    ) -> Result<Vec<VSeries>, QueryError> {
        let at = at_time(selector.at, self.query_start, self.query_end);
        let offset = selector.offset.unwrap_or(0);
        let lookback = self.options.lookback_delta_ms;
        let steps = grid.len();
        let mut out = Vec::new();
        let data = self.data;
        let fetched = data
            .get(&selector_key(selector))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for series in fetched {
            let samples = &series.samples;
            let pick = |index: usize| -> Option<f64> {
                let sample = samples[index];
                if is_stale_nan(sample.value) {
                    None
                } else if timestamps {
                    Some(sample.timestamp.0 as f64 / 1000.0)
                } else {
                    Some(sample.value)
                }
            };
            let smoothed = selector.extended_range == Some(ExtendedRange::Smoothed) && !timestamps;
            // smoothed: the value between the samples around t, linearly interpolated.
            let pick_at = |before: usize, ts: i64| -> Option<f64> {
                let value = pick(before)?;
                match samples.get(before + 1) {
                    Some(next)
                        if smoothed
                            && samples[before].timestamp.0 < ts
                            && next.timestamp.0 <= ts + lookback
                            && !is_stale_nan(next.value) =>
                    {
                        let (t1, t2) = (samples[before].timestamp.0, next.timestamp.0);
                        Some(value + (next.value - value) * (ts - t1) as f64 / (t2 - t1) as f64)
                    }
                    _ => Some(value),
                }
            };
            let mut values: Column = vec![None; steps];
            if let Some(at) = at {
                let ts = at - offset;
                let after = samples.partition_point(|s| s.timestamp.0 <= ts);
                if after > 0 && samples[after - 1].timestamp.0 > ts - lookback {
                    values.fill(pick_at(after - 1, ts));
                }
            } else {
                let mut next = 0;
                for (i, value) in values.iter_mut().enumerate() {
                    let ts = grid.time(i) - offset;
                    while next < samples.len() && samples[next].timestamp.0 <= ts {
                        next += 1;
                    }
                    if next > 0 && samples[next - 1].timestamp.0 > ts - lookback {
                        *value = pick_at(next - 1, ts);
                    }
                }
            }
            if values.iter().any(Option::is_some) {
                out.push(VSeries::new(series.labels.clone(), values));
            }
        }
        self.hold(out.len() * steps)?;
        Ok(out)
    }

    fn select_matrix(
        &mut self,
        matrix: &MatrixSelector,
        grid: Grid,
    ) -> Result<RangeVal, QueryError> {
        let mut range = self.select_matrix_pending(matrix, grid);
        self.collect_pending(&mut range)?;
        Ok(range)
    }

    /// Waits for the rest of `range`'s read, if any, and keeps all of it.
    pub(crate) fn collect_pending(&mut self, range: &mut RangeVal) -> Result<(), QueryError> {
        if let Some(mut pending) = range.pending.take() {
            while let Some(batch) = self.next_batch(&mut pending)? {
                self.hold(batch.iter().map(|series| series.samples.len()).sum())?;
                range.series.extend(batch.into_iter().map(points_of));
            }
        }
        Ok(())
    }

    /// A range selector whose read may still be arriving ([`RangeVal::pending`]); only
    /// [`functions`]' window functions take such a range, batch by batch.
    fn select_matrix_pending(&mut self, matrix: &MatrixSelector, grid: Grid) -> RangeVal {
        let selector = &matrix.vector;
        let at = at_time(selector.at, self.query_start, self.query_end);
        let offset = selector.offset.unwrap_or(0);
        let pending = self.owned.remove(&selector_key(selector));
        let series = match pending {
            Some(_) => Vec::new(),
            None => {
                debug_assert!(
                    self.data.contains_key(&selector_key(selector)),
                    "a range selector's read was taken over by an earlier evaluation"
                );
                self.fetched(selector)
                    .iter()
                    .map(|series| {
                        let mut points = Vec::with_capacity(series.samples.len());
                        points.extend(series.samples.iter().filter_map(live_point));
                        (series.labels.clone(), points)
                    })
                    .collect()
            }
        };
        let ends = (0..grid.len())
            .map(|i| at.unwrap_or(grid.time(i)) - offset)
            .collect();
        RangeVal {
            series,
            range: matrix.range_ms,
            ends,
            extended: selector.extended_range,
            lookback: self.options.lookback_delta_ms,
            pending,
        }
    }

    /// The next batch of a pending read, `None` once it is complete. Waits no longer than
    /// the query's deadline; the caller accounts for the samples it keeps.
    pub(crate) fn next_batch(
        &mut self,
        pending: &mut PendingRead,
    ) -> Result<Option<Vec<Series>>, QueryError> {
        self.check()?;
        let handle = self
            .handle
            .clone()
            .ok_or_else(|| QueryError::Execution("a pending read without a runtime".into()))?;
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let received = handle
            .block_on(async { tokio::time::timeout_at(deadline, pending.receiver.recv()).await })
            .map_err(|_| QueryError::Timeout("query execution"))?;
        match received {
            None => Ok(None),
            Some(Err(error)) => Err(error.into()),
            Some(Ok(batch)) => {
                self.streamed_series += batch.len() as u64;
                self.streamed_samples += batch
                    .iter()
                    .map(|series| series.samples.len() as u64)
                    .sum::<u64>();
                Ok(Some(batch))
            }
        }
    }

    /// A subquery: the inner expression evaluated at the subquery's own step, aligned to
    /// multiples of it, over `(t - offset - range, t - offset]` for every outer step.
    fn subquery(&mut self, subquery: &Subquery, grid: Grid) -> Result<RangeVal, QueryError> {
        let at = at_time(subquery.at, self.query_start, self.query_end);
        let offset = subquery.offset.unwrap_or(0);
        let step = subquery
            .step_ms
            .unwrap_or(self.options.default_subquery_step_ms)
            .max(1);
        let (outer_start, outer_end) = match at {
            Some(at) => (at, at),
            None => (grid.start, grid.end),
        };
        let earliest = outer_start - offset - subquery.range_ms;
        let mut start = step * earliest.div_euclid(step);
        if start <= earliest {
            start += step;
        }
        let end = outer_end - offset;
        let ends: Vec<i64> = (0..grid.len())
            .map(|i| at.unwrap_or(grid.time(i)) - offset)
            .collect();
        if start > end {
            return Ok(RangeVal {
                series: Vec::new(),
                range: subquery.range_ms,
                ends,
                extended: None,
                lookback: 0,
                pending: None,
            });
        }
        let inner = Grid { start, end, step };
        let series = match self.eval(&subquery.expr, inner)? {
            Val::Vector(mut series) => {
                materialize(&mut series);
                series
                    .into_iter()
                    .map(|s| {
                        let points = s
                            .values
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| {
                                v.map(|v| Point {
                                    t: inner.time(i),
                                    v,
                                })
                            })
                            .collect();
                        (s.labels, points)
                    })
                    .collect()
            }
            Val::Scalar(values) => vec![(
                Labels::empty(),
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Point {
                        t: inner.time(i),
                        v: *v,
                    })
                    .collect(),
            )],
            other => {
                return Err(QueryError::Execution(format!(
                    "subquery is only allowed on instant vector, got {}",
                    other.type_name()
                )))
            }
        };
        Ok(RangeVal {
            series,
            range: subquery.range_ms,
            ends,
            extended: None,
            lookback: 0,
            pending: None,
        })
    }

    fn binary(&mut self, binary: &Binary, grid: Grid) -> Result<Val, QueryError> {
        let lhs = self.eval(&binary.lhs, grid)?;
        let rhs = self.eval(&binary.rhs, grid)?;
        let op = binary.op;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(a, b)| {
                        let (value, keep) = scalar_op(op, *a, *b);
                        if op.is_comparison() {
                            f64::from(u8::from(keep))
                        } else {
                            value
                        }
                    })
                    .collect(),
            )),
            (Val::Vector(v), Val::Scalar(s)) => {
                self.vector_scalar(op, binary.return_bool, v, &s, false)
            }
            (Val::Scalar(s), Val::Vector(v)) => {
                self.vector_scalar(op, binary.return_bool, v, &s, true)
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let one_to_one = VectorMatching::one_to_one();
                let matching = binary.matching.as_ref().unwrap_or(&one_to_one);
                if (matching.fill_lhs.is_some() || matching.fill_rhs.is_some())
                    && op.is_set_operator()
                {
                    return Err(QueryError::Execution(
                        "fill modifiers are not allowed on set operators".into(),
                    ));
                }
                let steps = grid.len();
                let out = match op {
                    BinaryOp::And | BinaryOp::Unless => {
                        set_and_unless(op == BinaryOp::And, l, &r, matching, steps)
                    }
                    BinaryOp::Or => merge_same_labels(set_or(l, r, matching, steps))?,
                    BinaryOp::TrimUpper | BinaryOp::TrimLower => {
                        return Err(QueryError::Execution(format!(
                            "the {} operator is not supported yet",
                            op.symbol()
                        )))
                    }
                    _ => vector_vector(op, binary.return_bool, l, r, matching, steps)?,
                };
                self.hold(out.len() * steps)?;
                Ok(Val::Vector(out))
            }
            (l, r) => Err(QueryError::Execution(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }

    fn vector_scalar(
        &mut self,
        op: BinaryOp,
        return_bool: bool,
        vector: Vec<VSeries>,
        scalar: &[f64],
        scalar_first: bool,
    ) -> Result<Val, QueryError> {
        let comparison = op.is_comparison();
        let drop_name = !comparison || return_bool;
        let out: Vec<VSeries> = vector
            .into_iter()
            .map(|s| {
                let values = s
                    .values
                    .iter()
                    .zip(scalar)
                    .map(|(v, s)| {
                        let v = (*v)?;
                        let (l, r) = if scalar_first { (*s, v) } else { (v, *s) };
                        let (value, keep) = scalar_op(op, l, r);
                        if return_bool {
                            Some(f64::from(u8::from(keep)))
                        } else if comparison {
                            keep.then_some(v)
                        } else {
                            Some(value)
                        }
                    })
                    .collect();
                VSeries {
                    labels: s.labels,
                    drop_name: s.drop_name || drop_name,
                    values,
                }
            })
            .collect();
        Ok(Val::Vector(if drop_name {
            merge_same_labels(out)?
        } else {
            out
        }))
    }

    fn aggregate(&mut self, aggregate: &Aggregate, grid: Grid) -> Result<Val, QueryError> {
        let steps = grid.len();
        let param = match &aggregate.param {
            Some(param) if aggregate.op == AggregateOp::CountValues => {
                match self.eval(param, grid)? {
                    Val::String(s) => Param::String(s),
                    other => {
                        return Err(QueryError::Execution(format!(
                            "expected string parameter, got {}",
                            other.type_name()
                        )))
                    }
                }
            }
            Some(param) => Param::Scalar(self.eval_scalar(param, grid)?),
            None => Param::None,
        };
        let input = if super::functions::is_reducing(aggregate.op)
            && folds_into_aggregation(&aggregate.expr)
        {
            // The argument's series go straight into the groups as they are computed.
            self.fold = Some(GroupFold::new(aggregate, steps));
            let value = self.eval(&aggregate.expr, grid);
            let fold = self.fold.take().expect("the fold is put back after use");
            match value? {
                Val::Vector(_) if fold.fed => {
                    let out = fold.finish();
                    self.hold(out.len() * steps)?;
                    return Ok(Val::Vector(out));
                }
                Val::Vector(series) => series,
                other => {
                    return Err(QueryError::Execution(format!(
                        "expected instant vector, got {}",
                        other.type_name()
                    )))
                }
            }
        } else {
            self.eval_vector_lazy(&aggregate.expr, grid)?
        };
        let out = super::functions::aggregate(self, aggregate, param, input, steps)?;
        self.hold(out.len() * steps)?;
        Ok(Val::Vector(out))
    }
}

/// Whether an aggregation's argument is a range function of a matrix selector and nothing
/// else (`rate(x[5m])`, `max_over_time(x[1h])`): then that function is the only one evaluated
/// before it hands its output to the aggregation's [`GroupFold`].
fn folds_into_aggregation(expr: &Expr) -> bool {
    let Expr::Call(call) = expr.unwrap_parens() else {
        return false;
    };
    matches!(
        call.args.as_slice(),
        [arg] if matches!(arg.unwrap_parens(), Expr::MatrixSelector(m) if m.vector.extended_range.is_none())
    ) && super::functions::is_range_reducer(call.func.name)
}

/// The parameter of an aggregation.
#[derive(Debug)]
pub(crate) enum Param {
    None,
    Scalar(Vec<f64>),
    String(String),
}

/// A label set as Prometheus prints one in error messages: `{__name__="x", a="b"}`.
fn go_labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Labels that describe the metric name and go with it: `__type__` and `__unit__` (Prometheus'
/// type-and-unit labels) say what the *named* metric is, which a computed value no longer is.
const NAME_LABELS: [&str; 3] = [METRIC_NAME_LABEL, "__type__", "__unit__"];

/// The labels without `__name__` (and the `__type__`/`__unit__` labels that describe it).
pub(crate) fn drop_metric_name(labels: &Labels) -> Labels {
    if !labels
        .iter()
        .any(|l| NAME_LABELS.contains(&l.name.as_str()))
    {
        return labels.clone();
    }
    Labels::from_sorted_unchecked(
        labels
            .iter()
            .filter(|l| !NAME_LABELS.contains(&l.name.as_str()))
            .cloned()
            .collect(),
    )
}

fn drop_metric_name_if(labels: &Labels, drop: bool) -> Labels {
    if drop {
        drop_metric_name(labels)
    } else {
        labels.clone()
    }
}

/// Joins series that ended up with the same labels (after a metric name was dropped, a label
/// rewritten): fine while they never have a value at the same step, Prometheus' error
/// otherwise. Keeps the order of first appearance.
pub(crate) fn merge_same_labels(series: Vec<VSeries>) -> Result<Vec<VSeries>, QueryError> {
    // First occurrence of each effective label set, by index.
    let mut first: HashMap<EffectiveKey<'_>, usize> = HashMap::with_capacity(series.len());
    let mut target: Vec<usize> = Vec::with_capacity(series.len());
    for (index, s) in series.iter().enumerate() {
        target.push(*first.entry(EffectiveKey::new(s)).or_insert(index));
    }
    drop(first);
    if target.iter().enumerate().all(|(index, t)| *t == index) {
        return Ok(series);
    }
    let mut out: Vec<VSeries> = Vec::with_capacity(series.len());
    let mut position: Vec<usize> = vec![usize::MAX; series.len()];
    for (index, s) in series.into_iter().enumerate() {
        let owner = target[index];
        if owner == index {
            position[index] = out.len();
            out.push(s);
            continue;
        }
        let merged = &mut out[position[owner]];
        // Label sets equal only with the name dropped: the merged series is name-less.
        if merged.drop_name {
            merged.labels = drop_metric_name(&merged.labels);
            merged.drop_name = false;
        }
        for (slot, value) in merged.values.iter_mut().zip(s.values) {
            if value.is_some() {
                if slot.is_some() {
                    return Err(QueryError::Execution(
                        "vector cannot contain metrics with the same labelset".into(),
                    ));
                }
                *slot = value;
            }
        }
    }
    Ok(out)
}

/// The arithmetic or comparison of two floats: the value and whether a comparison holds.
pub(crate) fn scalar_op(op: BinaryOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinaryOp::Add => (l + r, true),
        BinaryOp::Sub => (l - r, true),
        BinaryOp::Mul => (l * r, true),
        BinaryOp::Div => (l / r, true),
        BinaryOp::Mod => (l % r, true),
        BinaryOp::Pow => (l.powf(r), true),
        BinaryOp::Atan2 => (l.atan2(r), true),
        BinaryOp::Eql => (l, l == r),
        BinaryOp::Neq => (l, l != r),
        BinaryOp::Gtr => (l, l > r),
        BinaryOp::Lss => (l, l < r),
        BinaryOp::Gte => (l, l >= r),
        BinaryOp::Lte => (l, l <= r),
        BinaryOp::TrimUpper
        | BinaryOp::TrimLower
        | BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Unless => (f64::NAN, false),
    }
}

/// The matching signature of a series: the `on` labels, or all but the `ignoring` labels and
/// the metric name. Set operators also ignore `__type__`/`__unit__` (an operand whose name was
/// dropped still matches its source); arithmetic and comparisons keep them, so a counter does
/// not match a gauge of the same name.
fn signature(series: &VSeries, matching: &VectorMatching) -> Labels {
    let dropped: &[&str] = if series.drop_name {
        &NAME_LABELS
    } else {
        &NAME_LABELS[..1]
    };
    signature_with(&series.labels, matching, dropped, series.drop_name)
}

fn set_signature(series: &VSeries, matching: &VectorMatching) -> Labels {
    signature_with(&series.labels, matching, &NAME_LABELS, series.drop_name)
}

/// `dropped` names never count unless `on(...)` names them and `name_dropped` is false.
fn signature_with(
    labels: &Labels,
    matching: &VectorMatching,
    dropped: &[&str],
    name_dropped: bool,
) -> Labels {
    let kept = labels
        .iter()
        .filter(|l| {
            if matching.on {
                matching.labels.iter().any(|m| *m == l.name)
                    && !(name_dropped && NAME_LABELS.contains(&l.name.as_str()))
            } else {
                !dropped.contains(&l.name.as_str()) && !matching.labels.iter().any(|m| *m == l.name)
            }
        })
        .cloned()
        .collect();
    Labels::from_sorted_unchecked(kept)
}

/// Groups series by signature: the signature of every series as an index into the groups.
fn signature_ids(
    series: &[VSeries],
    matching: &VectorMatching,
    sig: fn(&VSeries, &VectorMatching) -> Labels,
    ids: &mut HashMap<Labels, usize>,
) -> Vec<usize> {
    series
        .iter()
        .map(|s| {
            let sig = sig(s, matching);
            let next = ids.len();
            *ids.entry(sig).or_insert(next)
        })
        .collect()
}

/// `and` / `unless`: left series at the steps where some right series with the same signature
/// has (`and`) or has no (`unless`) value.
fn set_and_unless(
    and: bool,
    lhs: Vec<VSeries>,
    rhs: &[VSeries],
    matching: &VectorMatching,
    steps: usize,
) -> Vec<VSeries> {
    let mut ids = HashMap::new();
    let rhs_ids = signature_ids(rhs, matching, set_signature, &mut ids);
    let mut present = vec![vec![false; steps]; ids.len()];
    for (s, id) in rhs.iter().zip(&rhs_ids) {
        for (slot, v) in present[*id].iter_mut().zip(&s.values) {
            *slot |= v.is_some();
        }
    }
    lhs.into_iter()
        .filter_map(|mut s| {
            let sig = set_signature(&s, matching);
            let row = ids.get(&sig).map(|id| &present[*id]);
            for (i, value) in s.values.iter_mut().enumerate() {
                let matched = row.is_some_and(|row| row[i]);
                if matched != and {
                    *value = None;
                }
            }
            s.values.iter().any(Option::is_some).then_some(s)
        })
        .collect()
}

/// `or`: every left series, and the right series at the steps where no left series with the
/// same signature has a value.
fn set_or(
    lhs: Vec<VSeries>,
    rhs: Vec<VSeries>,
    matching: &VectorMatching,
    steps: usize,
) -> Vec<VSeries> {
    let mut ids = HashMap::new();
    let lhs_ids = signature_ids(&lhs, matching, set_signature, &mut ids);
    let mut present = vec![vec![false; steps]; ids.len()];
    for (s, id) in lhs.iter().zip(&lhs_ids) {
        for (slot, v) in present[*id].iter_mut().zip(&s.values) {
            *slot |= v.is_some();
        }
    }
    let mut out = lhs;
    for mut s in rhs {
        let sig = set_signature(&s, matching);
        if let Some(row) = ids.get(&sig).map(|id| &present[*id]) {
            for (value, taken) in s.values.iter_mut().zip(row) {
                if *taken {
                    *value = None;
                }
            }
        }
        if s.values.iter().any(Option::is_some) {
            out.push(s);
        }
    }
    out
}

/// Arithmetic and comparisons between two vectors with one-to-one or many-to-one matching.
fn vector_vector(
    op: BinaryOp,
    return_bool: bool,
    lhs: Vec<VSeries>,
    rhs: Vec<VSeries>,
    matching: &VectorMatching,
    steps: usize,
) -> Result<Vec<VSeries>, QueryError> {
    let card = matching.card;
    // Work with the "many" side on the left; the "one" side must be unique per signature.
    let swapped = card == VectorMatchCardinality::OneToMany;
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let mut ids = HashMap::new();
    let one_ids = signature_ids(&one, matching, signature, &mut ids);
    let groups = ids.len();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (index, id) in one_ids.iter().enumerate() {
        members[*id].push(index);
    }
    let many_groups: Vec<Option<usize>> = many
        .iter()
        .map(|s| ids.get(&signature(s, matching)).copied())
        .collect();

    // The one side's series at each step of each group (an error when two have a value).
    let mut one_at: Vec<Vec<Option<u32>>> = vec![vec![None; steps]; groups];
    for (group, list) in members.iter().enumerate() {
        for &index in list {
            for (i, v) in one[index].values.iter().enumerate() {
                if v.is_some() {
                    if let Some(previous) = one_at[group][i] {
                        let side = if swapped { "left" } else { "right" };
                        let sig = signature(&one[index], matching);
                        return Err(QueryError::Execution(format!(
                            "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                            go_labels(&sig),
                            go_labels(&one[previous as usize].effective_labels()),
                            go_labels(&one[index].effective_labels())
                        )));
                    }
                    one_at[group][i] = Some(index as u32);
                }
            }
        }
    }

    let drop_name = !op.is_comparison() || return_bool;
    let mut out: Vec<VSeries> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    let mut pair_out: HashMap<(usize, u32), usize> = HashMap::new();
    // For one-to-one: which many-side series produced a value for a group at a step.
    let mut group_filled: Vec<Vec<bool>> = if card == VectorMatchCardinality::OneToOne {
        vec![vec![false; steps]; groups]
    } else {
        Vec::new()
    };
    for (m, series) in many.iter().enumerate() {
        let Some(group) = many_groups[m] else {
            continue;
        };
        for i in 0..steps {
            let Some(lv) = series.values[i] else { continue };
            let Some(o) = one_at[group][i] else { continue };
            let Some(rv) = one[o as usize].values[i] else {
                continue;
            };
            // Checked before a comparison filters: the matching is wrong whatever survives.
            if card == VectorMatchCardinality::OneToOne {
                if group_filled[group][i] {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                group_filled[group][i] = true;
            }
            let (l, r) = if swapped { (rv, lv) } else { (lv, rv) };
            let (value, keep) = scalar_op(op, l, r);
            let value = if return_bool {
                f64::from(u8::from(keep))
            } else if !keep {
                continue;
            } else {
                value
            };
            let target = match pair_out.get(&(m, o)) {
                Some(&target) => target,
                None => {
                    let labels = result_labels(series, &one[o as usize], matching, drop_name);
                    let target = *out_index.entry(labels.clone()).or_insert_with(|| {
                        out.push(VSeries {
                            drop_name: false,
                            labels,
                            values: vec![None; steps],
                        });
                        out.len() - 1
                    });
                    pair_out.insert((m, o), target);
                    target
                }
            };
            let slot = &mut out[target].values[i];
            if slot.is_some() {
                return Err(QueryError::Execution(
                    if card == VectorMatchCardinality::OneToOne {
                        "vector cannot contain metrics with the same labelset".into()
                    } else {
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into()
                    },
                ));
            }
            *slot = Some(value);
        }
    }

    // fill(...): a side with no match at a step takes the fill value. As in Prometheus,
    // `fill_left` stands in for the many side and `fill_right` for the one side, also with
    // `group_right` (where the many side is on the right).
    let (fill_many, fill_one) = (matching.fill_lhs, matching.fill_rhs);
    let mut emit = |labels: Labels,
                    i: usize,
                    many_value: f64,
                    one_value: f64,
                    out: &mut Vec<VSeries>|
     -> Result<(), QueryError> {
        let (l, r) = if swapped {
            (one_value, many_value)
        } else {
            (many_value, one_value)
        };
        let (value, keep) = scalar_op(op, l, r);
        let value = if return_bool {
            f64::from(u8::from(keep))
        } else if !keep {
            return Ok(());
        } else {
            value
        };
        let target = *out_index.entry(labels.clone()).or_insert_with(|| {
            out.push(VSeries {
                drop_name: false,
                labels,
                values: vec![None; steps],
            });
            out.len() - 1
        });
        let slot = &mut out[target].values[i];
        if slot.is_some() {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        *slot = Some(value);
        Ok(())
    };
    if let Some(fill) = fill_one {
        let none = VSeries::new(Labels::empty(), Vec::new());
        for (m, series) in many.iter().enumerate() {
            let mut labels = None;
            for (i, v) in series.values.iter().enumerate() {
                let Some(v) = *v else { continue };
                if many_groups[m].is_some_and(|g| one_at[g][i].is_some()) {
                    continue;
                }
                let labels = labels
                    .get_or_insert_with(|| result_labels(series, &none, matching, drop_name))
                    .clone();
                emit(labels, i, v, fill, &mut out)?;
            }
        }
    }
    if let Some(fill) = fill_many {
        let mut many_present = vec![vec![false; steps]; groups];
        for (m, series) in many.iter().enumerate() {
            if let Some(g) = many_groups[m] {
                for (slot, v) in many_present[g].iter_mut().zip(&series.values) {
                    *slot |= v.is_some();
                }
            }
        }
        for (o, series) in one.iter().enumerate() {
            let group = one_ids[o];
            let labels = signature(series, matching);
            for (i, (v, taken)) in series.values.iter().zip(&many_present[group]).enumerate() {
                let Some(v) = *v else { continue };
                if *taken {
                    continue;
                }
                emit(labels.clone(), i, fill, v, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The labels of a vector-vector result: the many side's labels, reduced to the matching
/// labels for one-to-one matching, plus the `group_x(...)` labels taken from the one side.
fn result_labels(
    many: &VSeries,
    one: &VSeries,
    matching: &VectorMatching,
    drop_name: bool,
) -> Labels {
    let base = drop_metric_name_if(&many.labels, drop_name || many.drop_name);
    let mut builder = base.to_builder();
    if matching.card == VectorMatchCardinality::OneToOne {
        if matching.on {
            for label in base.iter() {
                if !matching.labels.iter().any(|m| *m == label.name) {
                    builder.remove(&label.name);
                }
            }
        } else {
            for name in &matching.labels {
                builder.remove(name);
            }
        }
    }
    for name in &matching.include {
        match one.label(name) {
            Some(value) => {
                builder.set(name.clone(), value.to_string());
            }
            None => {
                builder.remove(name);
            }
        }
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The select requests a query plans, for a backend declaring pushdown of `sum`, `avg`
    /// and `count`.
    fn requests(
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        pushdown: bool,
    ) -> Vec<SelectRequest> {
        let options = EngineOptions {
            pushdown,
            ..EngineOptions::default()
        };
        let expr = crate::parse(query).unwrap();
        let plan = Plan::new(expr, query, start, end, step, &options);
        plan.fetches
            .iter()
            .map(|fetch| fetch.request(&["sum", "avg", "count"]))
            .collect()
    }

    #[test]
    fn pushdown_hints_only_where_exact() {
        let hinted = |query: &str| {
            requests(query, 1_000_000, 1_950_000, 60_000, true)
                .iter()
                .map(|request| request.hints.latest_per_step)
                .collect::<Vec<_>>()
        };
        assert_eq!(hinted("sum by (a) (m)"), [true]);
        assert_eq!(hinted("avg(m offset 1m) + count((m))"), [true, true]);
        // Not declared by the backend, a parameter, `@`, a range function, a subquery.
        assert_eq!(hinted("max(m)"), [false]);
        assert_eq!(hinted("topk(1, m)"), [false]);
        assert_eq!(hinted("sum(m @ 100)"), [false]);
        assert_eq!(hinted("sum(rate(m[5m]))"), [false]);
        assert_eq!(hinted("max_over_time(sum(m)[10m:1m])"), [false]);
        assert_eq!(hinted("sum(sum(m))"), [true]);

        let request = &requests(
            "sum by (a) (m offset 1m)",
            1_000_000,
            1_950_000,
            60_000,
            true,
        )[0];
        // The last evaluation time is 1_900_000 (the end is not on the grid), minus the offset.
        assert_eq!(request.maxt.0, 1_840_000);
        assert_eq!(request.mint.0, 1_000_000 - 60_000 - 300_000);
        assert_eq!(request.hints.step_ms, Some(60_000));
        assert_eq!(request.hints.function.as_deref(), Some("sum"));
        assert_eq!(request.hints.grouping, ["a"]);
        assert!(request.hints.grouping_by);

        let instant = &requests("count without (b) (m)", 5_000_000, 5_000_000, 0, true)[0];
        assert!(instant.hints.latest_per_step);
        assert_eq!(instant.hints.step_ms, None);
        assert_eq!(instant.maxt.0, 5_000_000);
        assert!(!instant.hints.grouping_by);

        // Switched off: plain reads.
        let off = &requests("sum by (a) (m)", 1_000_000, 1_950_000, 60_000, false)[0];
        assert_eq!(off.hints, SelectHints::default());
        assert_eq!(off.maxt.0, 1_950_000);
    }
}
