//! Function calls and aggregations.

use std::collections::HashMap;

use lookout_model::{Labels, MatchKind, Matcher, METRIC_NAME_LABEL};
use regex::Regex;

use super::eval::{
    drop_metric_name, materialize, merge_same_labels, points_of, Column, EffectiveKey, Evaluator,
    Grid, Param, RangeVal, VSeries, Val,
};
use super::math::{
    calendar, go_format_float, go_max, go_min, kahan_add, linear_regression, quantile, Mean,
};
use super::value::Point;
use super::QueryError;
use crate::ast::{Aggregate, AggregateOp, AtModifier, Call, Expr, ExtendedRange};
use crate::ValueType;

/// Evaluates a function call.
pub(crate) fn call(ev: &mut Evaluator<'_>, call: &Call, grid: Grid) -> Result<Val, QueryError> {
    let name = call.func.name;
    let args = &call.args;
    let steps = grid.len();
    for arg in args {
        if let Expr::MatrixSelector(matrix) = arg.unwrap_parens() {
            if let Some(mode) = matrix.vector.extended_range {
                check_extended_range(name, mode)?;
            }
        }
    }
    match name {
        "time" => Ok(Val::Scalar(
            (0..steps).map(|i| grid.time(i) as f64 / 1000.0).collect(),
        )),
        "step" => Ok(Val::Scalar(vec![ev.query_step as f64 / 1000.0; steps])),
        "range" => Ok(Val::Scalar(vec![
            (ev.query_end - ev.query_start) as f64
                / 1000.0;
            steps
        ])),
        "start" => Ok(Val::Scalar(vec![ev.query_start as f64 / 1000.0; steps])),
        "end" => Ok(Val::Scalar(vec![ev.query_end as f64 / 1000.0; steps])),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(&args[0], grid)?;
            let b = ev.eval_scalar(&args[1], grid)?;
            let pick = if name == "min_of" { go_min } else { go_max };
            Ok(Val::Scalar(
                a.iter().zip(&b).map(|(a, b)| pick(*a, *b)).collect(),
            ))
        }
        "info" => info(ev, call, grid),
        // Functions of native histograms: float samples have none of them, so (as
        // Prometheus does for float input) the result is empty.
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            ev.eval_vector(&args[0], grid)?;
            Ok(Val::Vector(Vec::new()))
        }
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; steps])),
        "vector" => {
            let values = ev.eval_scalar(&args[0], grid)?;
            Ok(Val::Vector(vec![VSeries {
                drop_name: false,
                labels: Labels::empty(),
                values: values.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let series = ev.eval_vector(&args[0], grid)?;
            let mut out = vec![f64::NAN; steps];
            let mut counts = vec![0u32; steps];
            for s in &series {
                for (i, v) in s.values.iter().enumerate() {
                    if let Some(v) = v {
                        counts[i] += 1;
                        out[i] = *v;
                    }
                }
            }
            for (value, count) in out.iter_mut().zip(counts) {
                if count != 1 {
                    *value = f64::NAN;
                }
            }
            Ok(Val::Scalar(out))
        }
        "timestamp" => {
            let series = match args[0].unwrap_parens() {
                Expr::VectorSelector(selector) => ev.select_vector(selector, grid, true)?,
                other => {
                    let mut series = ev.eval_vector(other, grid)?;
                    for s in &mut series {
                        for (i, v) in s.values.iter_mut().enumerate() {
                            if v.is_some() {
                                *v = Some(grid.time(i) as f64 / 1000.0);
                            }
                        }
                    }
                    series
                }
            };
            map_vector(series, true, Some)
        }
        "abs" => simple(ev, args, grid, f64::abs),
        "ceil" => simple(ev, args, grid, f64::ceil),
        "floor" => simple(ev, args, grid, f64::floor),
        "exp" => simple(ev, args, grid, f64::exp),
        "sqrt" => simple(ev, args, grid, f64::sqrt),
        "ln" => simple(ev, args, grid, f64::ln),
        "log2" => simple(ev, args, grid, f64::log2),
        "log10" => simple(ev, args, grid, f64::log10),
        "sin" => simple(ev, args, grid, f64::sin),
        "cos" => simple(ev, args, grid, f64::cos),
        "tan" => simple(ev, args, grid, f64::tan),
        "asin" => simple(ev, args, grid, f64::asin),
        "acos" => simple(ev, args, grid, f64::acos),
        "atan" => simple(ev, args, grid, f64::atan),
        "sinh" => simple(ev, args, grid, f64::sinh),
        "cosh" => simple(ev, args, grid, f64::cosh),
        "tanh" => simple(ev, args, grid, f64::tanh),
        "asinh" => simple(ev, args, grid, f64::asinh),
        "acosh" => simple(ev, args, grid, f64::acosh),
        "atanh" => simple(ev, args, grid, f64::atanh),
        "deg" => simple(ev, args, grid, |v| v * 180.0 / std::f64::consts::PI),
        "rad" => simple(ev, args, grid, |v| v * std::f64::consts::PI / 180.0),
        "sgn" => simple(ev, args, grid, |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        }),
        "round" => {
            let to_nearest = match args.get(1) {
                Some(arg) => ev.eval_scalar(arg, grid)?,
                None => vec![1.0; steps],
            };
            let series = ev.eval_vector(&args[0], grid)?;
            map_vector_steps(series, true, |i, v| {
                let inverse = 1.0 / to_nearest[i];
                Some((v * inverse + 0.5).floor() / inverse)
            })
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let series = ev.eval_vector(&args[0], grid)?;
            let (low, high) = match name {
                "clamp" => (
                    ev.eval_scalar(&args[1], grid)?,
                    ev.eval_scalar(&args[2], grid)?,
                ),
                "clamp_min" => (ev.eval_scalar(&args[1], grid)?, vec![f64::INFINITY; steps]),
                _ => (
                    vec![f64::NEG_INFINITY; steps],
                    ev.eval_scalar(&args[1], grid)?,
                ),
            };
            map_vector_steps(series, true, |i, v| {
                if name == "clamp" && high[i] < low[i] {
                    return None;
                }
                Some(go_max(low[i], go_min(high[i], v)))
            })
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let series = match args.first() {
                Some(arg) => ev.eval_vector(arg, grid)?,
                None => vec![VSeries {
                    drop_name: false,
                    labels: Labels::empty(),
                    values: (0..steps)
                        .map(|i| Some(grid.time(i) as f64 / 1000.0))
                        .collect(),
                }],
            };
            map_vector(series, true, |v| {
                if v.is_nan() || v.is_infinite() {
                    return Some(f64::NAN);
                }
                let date = calendar(v.trunc() as i64);
                Some(match name {
                    "day_of_month" => date.day,
                    "day_of_week" => date.weekday,
                    "day_of_year" => date.day_of_year,
                    "days_in_month" => date.days_in_month,
                    "hour" => date.hour,
                    "minute" => date.minute,
                    "month" => date.month,
                    _ => date.year,
                } as f64)
            })
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" if ev.query_step != 0 => {
            ev.warn(
                "sort is ineffective for range queries since results are always ordered by labels",
                call.positions.get(0),
            );
            Ok(Val::Vector(ev.eval_vector_lazy(&args[0], grid)?))
        }
        "sort" | "sort_desc" => {
            let mut series = ev.eval_vector(&args[0], grid)?;
            if steps == 1 {
                let key = |s: &VSeries| s.values[0].unwrap_or(f64::NAN);
                if name == "sort" {
                    series.sort_by(|a, b| cmp_nan_first(key(a), key(b)));
                } else {
                    series.sort_by(|a, b| cmp_desc_nan_last(key(a), key(b)));
                }
            }
            Ok(Val::Vector(series))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut series = ev.eval_vector(&args[0], grid)?;
            let mut names = Vec::new();
            for arg in &args[1..] {
                match ev.eval(arg, grid)? {
                    Val::String(s) => names.push(s),
                    _ => return Err(QueryError::Execution("expected label name".into())),
                }
            }
            series.sort_by(|a, b| {
                for name in &names {
                    let ordering = natural_cmp(
                        a.labels.get(name).unwrap_or(""),
                        b.labels.get(name).unwrap_or(""),
                    );
                    if ordering != std::cmp::Ordering::Equal {
                        return ordering;
                    }
                }
                a.labels.cmp(&b.labels)
            });
            if name == "sort_by_label_desc" {
                series.reverse();
            }
            Ok(Val::Vector(series))
        }
        "label_replace" => {
            let series = ev.eval_vector(&args[0], grid)?;
            let dst = string_arg(ev, &args[1], grid)?;
            let replacement = string_arg(ev, &args[2], grid)?;
            let src = string_arg(ev, &args[3], grid)?;
            let pattern = string_arg(ev, &args[4], grid)?;
            let regex = Regex::new(&format!("^(?s:{pattern})$")).map_err(|error| {
                QueryError::Execution(format!(
                    "invalid regular expression in label_replace(): {pattern}: {error}"
                ))
            })?;
            if !valid_label_name(&dst) {
                return Err(QueryError::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out = series
                .into_iter()
                .map(|s| {
                    let value = s.labels.get(&src).unwrap_or("");
                    let labels = match regex.captures(value) {
                        Some(captures) => {
                            let mut expanded = String::new();
                            captures.expand(&replacement, &mut expanded);
                            let mut builder = s.labels.to_builder();
                            builder.set(dst.clone(), expanded);
                            builder.build()
                        }
                        None => s.labels.clone(),
                    };
                    VSeries {
                        drop_name: false,
                        labels,
                        values: s.values,
                    }
                })
                .collect();
            Ok(Val::Vector(merge_same_labels(out)?))
        }
        "label_join" => {
            let series = ev.eval_vector(&args[0], grid)?;
            let dst = string_arg(ev, &args[1], grid)?;
            let separator = string_arg(ev, &args[2], grid)?;
            let mut sources = Vec::new();
            for arg in &args[3..] {
                let source = string_arg(ev, arg, grid)?;
                if !valid_label_name(&source) {
                    return Err(QueryError::Execution(format!(
                        "invalid source label name in label_join(): {source}"
                    )));
                }
                sources.push(source);
            }
            if !valid_label_name(&dst) {
                return Err(QueryError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let out = series
                .into_iter()
                .map(|s| {
                    let joined = sources
                        .iter()
                        .map(|name| s.labels.get(name).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join(&separator);
                    let mut builder = s.labels.to_builder();
                    builder.set(dst.clone(), joined);
                    VSeries {
                        drop_name: false,
                        labels: builder.build(),
                        values: s.values,
                    }
                })
                .collect();
            Ok(Val::Vector(merge_same_labels(out)?))
        }
        "absent" => {
            let series = ev.eval_vector(&args[0], grid)?;
            let labels = absent_labels(&args[0]);
            let values: Column = (0..steps)
                .map(|i| (!series.iter().any(|s| s.values[i].is_some())).then_some(1.0))
                .collect();
            Ok(Val::Vector(vec![VSeries {
                drop_name: false,
                labels,
                values,
            }]))
        }
        "absent_over_time" => {
            let range = ev.eval_range(&args[0], grid)?;
            let labels = match args[0].unwrap_parens() {
                Expr::MatrixSelector(matrix) => {
                    absent_labels(&Expr::VectorSelector(matrix.vector.clone()))
                }
                _ => Labels::empty(),
            };
            let mut present = vec![false; steps];
            for (_, points) in &range.series {
                for_each_window(&range, points, |i, window| {
                    present[i] |= !window.is_empty();
                });
            }
            let values = present.iter().map(|p| (!p).then_some(1.0)).collect();
            Ok(Val::Vector(vec![VSeries {
                drop_name: false,
                labels,
                values,
            }]))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(&args[0], grid)?;
            ev.check_quantile(&q, call.positions.get(1));
            let series = ev.eval_vector(&args[1], grid)?;
            let out = classic_buckets(ev, &series, steps, call.positions.get(2), |i, buckets| {
                bucket_quantile(q[i], buckets)
            })?;
            Ok(Val::Vector(out))
        }
        "histogram_quantiles" => {
            let series = ev.eval_vector(&args[0], grid)?;
            let label = string_arg(ev, &args[1], grid)?;
            let mut out = Vec::new();
            for (k, arg) in args.iter().enumerate().skip(2) {
                let q = ev.eval_scalar(arg, grid)?;
                ev.check_quantile(&q, call.positions.get(k + 1));
                for s in
                    classic_buckets(ev, &series, steps, call.positions.get(1), |i, buckets| {
                        bucket_quantile(q[i], buckets)
                    })?
                {
                    let mut builder = s.labels.to_builder();
                    // Per step the quantile may differ; the label carries the first step's.
                    builder.set(label.clone(), quantile_label(q[0]));
                    out.push(VSeries {
                        drop_name: false,
                        labels: builder.build(),
                        values: s.values,
                    });
                }
            }
            Ok(Val::Vector(merge_same_labels(out)?))
        }
        "histogram_fraction" => {
            let lower = ev.eval_scalar(&args[0], grid)?;
            let upper = ev.eval_scalar(&args[1], grid)?;
            let series = ev.eval_vector(&args[2], grid)?;
            let out = classic_buckets(ev, &series, steps, call.positions.get(3), |i, buckets| {
                (bucket_fraction(lower[i], upper[i], buckets), false)
            })?;
            Ok(Val::Vector(out))
        }
        "zhistogram_quantile" => {
            let q = ev.eval_scalar(&args[0], grid)?;
            let series = ev.eval_vector(&args[1], grid)?;
            zhistogram_quantile(&q, series, steps)
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(&args[0], grid)?;
            ev.check_quantile(&q, call.positions.get(1));
            let mut range = ev.eval_range(&args[1], grid)?;
            range_function(ev, &mut range, grid, false, true, None, |i, window, _| {
                let mut values: Vec<f64> = window.iter().map(|p| p.v).collect();
                Some(quantile(q[i], &mut values))
            })
        }
        "predict_linear" => {
            let mut range = ev.eval_range(&args[0], grid)?;
            let duration = ev.eval_scalar(&args[1], grid)?;
            range_function(ev, &mut range, grid, false, true, None, |i, window, _| {
                if window.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(window, grid.time(i));
                Some(slope * duration[i] + intercept)
            })
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let mut range = ev.eval_range(&args[0], grid)?;
            let sf = ev.eval_scalar(&args[1], grid)?;
            let tf = ev.eval_scalar(&args[2], grid)?;
            for i in 0..steps {
                if sf[i] <= 0.0 || sf[i] >= 1.0 || sf[i].is_nan() {
                    return Err(QueryError::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        sf[i]
                    )));
                }
                if tf[i] <= 0.0 || tf[i] >= 1.0 || tf[i].is_nan() {
                    return Err(QueryError::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        tf[i]
                    )));
                }
            }
            range_function(ev, &mut range, grid, false, true, None, |i, window, _| {
                double_exponential_smoothing(window, sf[i], tf[i])
            })
        }
        _ => {
            if let Some(f) = range_reducer(name) {
                let counters_at =
                    matches!(name, "rate" | "increase").then(|| call.positions.get(1));
                let mut range = ev.eval_range_pending(&args[0], grid)?;
                if let Some(mode) = range.extended {
                    ev.collect_pending(&mut range)?;
                    if let Some(offset) = counters_at {
                        warn_non_counters(
                            ev,
                            range.series.iter().map(|(labels, _)| labels),
                            offset,
                        );
                    }
                    return extended_range_function(ev, name, mode, &range, grid);
                }
                let keep_name = matches!(
                    name,
                    "last_over_time" | "first_over_time" | "sum2_over_time"
                );
                return range_function(
                    ev,
                    &mut range,
                    grid,
                    keep_name,
                    false,
                    counters_at,
                    |_, window, bounds| f(window, bounds),
                );
            }
            Err(QueryError::Execution(format!(
                "function {name}() is not supported yet"
            )))
        }
    }
}

/// The labels that tie a series to its info series.
const IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// The matchers that select an `info()` call's info series: the second argument's, with the
/// metric name `target_info` when it names none, or any `*_info` name when it only excludes
/// some.
pub(crate) fn info_matchers(selector: Option<&Expr>) -> Vec<Matcher> {
    let mut matchers = match selector.map(Expr::unwrap_parens) {
        Some(Expr::VectorSelector(selector)) => selector.matchers.clone(),
        _ => Vec::new(),
    };
    let names: Vec<&Matcher> = matchers
        .iter()
        .filter(|m| m.name() == METRIC_NAME_LABEL)
        .collect();
    if names.is_empty() {
        matchers.push(Matcher::equal(METRIC_NAME_LABEL, "target_info"));
    } else if names.iter().all(|m| m.kind().is_negative()) {
        if let Ok(any_info) = Matcher::new(MatchKind::Regex, METRIC_NAME_LABEL, ".+_info") {
            matchers.push(any_info);
        }
    }
    matchers
}

/// `info(v, selector)`: each series of `v` gains the data labels of the info series (by
/// default `target_info`) that share its identifying labels (`instance`, `job`), as they are
/// at the time the series' sample was read (offsets and `@` followed). With data-label
/// matchers only those labels are added, and a series with no matching info series is
/// dropped unless every such matcher accepts the empty value. Among info series of one name
/// the one with the latest sample wins; two names disagreeing on a label is an error.
fn info(ev: &mut Evaluator<'_>, call: &Call, grid: Grid) -> Result<Val, QueryError> {
    let steps = grid.len();
    let base = ev.eval_vector(&call.args[0], grid)?;
    let matchers = info_matchers(call.args.get(1));
    let name_matchers: Vec<&Matcher> = matchers
        .iter()
        .filter(|m| m.name() == METRIC_NAME_LABEL)
        .collect();
    let data_matchers: Vec<&Matcher> = matchers
        .iter()
        .filter(|m| m.name() != METRIC_NAME_LABEL)
        .collect();
    let drop_unmatched = data_matchers.iter().any(|m| !m.matches(""));
    let infos = ev.fetched_by_key(super::eval::info_key(call));
    let lookback = ev.options.lookback_delta_ms;
    let shifts = time_shifts(&call.args[0], ev.query_start, ev.query_end);
    let reference: Vec<i64> = (0..steps)
        .map(|i| {
            shifts
                .iter()
                .fold(grid.time(i), |t, (at, offset)| at.unwrap_or(t) - offset)
        })
        .collect();

    let mut out = Vec::with_capacity(base.len());
    for series in base {
        ev.check()?;
        let is_info = series
            .labels
            .metric_name()
            .is_some_and(|name| name_matchers.iter().all(|m| m.matches(name)));
        let identifying: Vec<(&str, &str)> = IDENTIFYING_LABELS
            .iter()
            .filter_map(|name| series.labels.get(name).map(|value| (*name, value)))
            .collect();
        if is_info || identifying.is_empty() {
            out.push(series);
            continue;
        }
        let candidates: Vec<&lookout_storage::Series> = infos
            .iter()
            .filter(|info| {
                identifying
                    .iter()
                    .all(|(name, value)| info.labels.get(name) == Some(*value))
            })
            .collect();
        let mut by_labels: HashMap<Labels, usize> = HashMap::new();
        let mut outputs: Vec<VSeries> = Vec::new();
        for (i, value) in series.values.iter().enumerate() {
            let Some(value) = *value else { continue };
            let at = reference[i];
            // The latest sample per info metric name.
            let mut chosen: Vec<(&str, i64, &Labels)> = Vec::new();
            for info in &candidates {
                let after = info.samples.partition_point(|s| s.timestamp.0 <= at);
                let Some(sample) = after.checked_sub(1).map(|k| info.samples[k]) else {
                    continue;
                };
                if sample.timestamp.0 <= at - lookback || sample.is_stale() {
                    continue;
                }
                let name = info.labels.metric_name().unwrap_or("");
                match chosen.iter_mut().find(|c| c.0 == name) {
                    Some(entry) if entry.1 < sample.timestamp.0 => {
                        *entry = (name, sample.timestamp.0, &info.labels)
                    }
                    Some(_) => {}
                    None => chosen.push((name, sample.timestamp.0, &info.labels)),
                }
            }
            if chosen.is_empty() && drop_unmatched {
                continue;
            }
            let mut builder = series.labels.to_builder();
            let mut added: Vec<(&str, &str)> = Vec::new();
            for (_, _, labels) in &chosen {
                for label in labels.iter() {
                    let name = label.name.as_str();
                    if name == METRIC_NAME_LABEL
                        || series.labels.get(name).is_some()
                        || (!data_matchers.is_empty()
                            && !data_matchers.iter().any(|m| m.name() == name))
                    {
                        continue;
                    }
                    match added.iter().find(|(n, _)| *n == name) {
                        Some((_, v)) if *v != label.value => {
                            return Err(QueryError::Execution(format!(
                                "conflicting label: {name} has the values {v:?} and {:?} in different info metrics",
                                label.value
                            )));
                        }
                        Some(_) => {}
                        None => {
                            added.push((name, &label.value));
                            builder.set(name, label.value.clone());
                        }
                    }
                }
            }
            let labels = builder.build();
            let target = *by_labels.entry(labels.clone()).or_insert_with(|| {
                outputs.push(VSeries {
                    drop_name: false,
                    labels,
                    values: vec![None; steps],
                });
                outputs.len() - 1
            });
            outputs[target].values[i] = Some(value);
        }
        out.extend(outputs);
    }
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// The `@` and offsets on the way from `expr` down to its first selector, outermost first:
/// the times `info()` reads the info series at.
fn time_shifts(expr: &Expr, query_start: i64, query_end: i64) -> Vec<(Option<i64>, i64)> {
    let at = |at: Option<AtModifier>| {
        at.map(|at| match at {
            AtModifier::Timestamp(ms) => ms,
            AtModifier::Start => query_start,
            AtModifier::End => query_end,
        })
    };
    let mut shifts = Vec::new();
    let mut node = expr;
    loop {
        match node {
            Expr::VectorSelector(selector) => {
                shifts.push((at(selector.at), selector.offset.unwrap_or(0)));
                return shifts;
            }
            Expr::MatrixSelector(matrix) => {
                shifts.push((at(matrix.vector.at), matrix.vector.offset.unwrap_or(0)));
                return shifts;
            }
            Expr::Subquery(subquery) => {
                shifts.push((at(subquery.at), subquery.offset.unwrap_or(0)));
                node = &subquery.expr;
            }
            Expr::Paren(inner) => node = inner,
            Expr::Unary(unary) => node = &unary.expr,
            Expr::Aggregate(aggregate) => node = &aggregate.expr,
            Expr::Binary(binary) => node = &binary.lhs,
            Expr::Call(call) => {
                let vector_arg = call
                    .args
                    .iter()
                    .find(|arg| matches!(arg.value_type(), ValueType::Vector | ValueType::Matrix));
                match vector_arg {
                    Some(arg) => node = arg,
                    None => return shifts,
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => return shifts,
        }
    }
}

/// `rate` and `increase` of a metric whose name says it is no counter: Prometheus' info.
fn warn_non_counters<'l>(
    ev: &mut Evaluator<'_>,
    series: impl Iterator<Item = &'l Labels>,
    offset: usize,
) {
    const COUNTER_SUFFIXES: [&str; 4] = ["_total", "_sum", "_count", "_bucket"];
    let mut names: Vec<&str> = Vec::new();
    for labels in series {
        let Some(name) = labels.metric_name() else {
            continue;
        };
        // The suffix first: it settles almost every series without a label lookup.
        if COUNTER_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
            || labels.get("__type__").is_some()
            || names.contains(&name)
        {
            continue;
        }
        names.push(name);
    }
    for name in names {
        let text = format!(
            "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
        );
        ev.info(&text, offset);
    }
}

/// The window `(start, end]` a range function sees, with the range it was written with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds<'a> {
    start: i64,
    end: i64,
    range: i64,
    /// The counter resets in the window, when known; `None`: look for them.
    resets: Option<Resets<'a>>,
    /// The extrapolation worked out for an earlier window of the same series, when kept.
    extrapolation: Option<&'a ExtrapolationCache>,
}

/// The part of `rate`'s extrapolation that depends only on where a window's samples lie, kept
/// for the next window: on regular scrapes, consecutive windows of a series lie alike, and
/// the divisions that work it out would otherwise be most of `rate`'s time.
#[derive(Debug, Default)]
pub(crate) struct ExtrapolationCache {
    entry: std::cell::Cell<Option<(Placement, Extrapolation)>>,
}

/// Where a window's samples lie: milliseconds from the window's start to the first sample,
/// from the last sample to the window's end, from the first to the last, and the count; with
/// the window's range and whether the result is per second, which the factor also holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    to_start: i64,
    to_end: i64,
    sampled: i64,
    count: usize,
    range: i64,
    per_second: bool,
}

/// [`extrapolated_rate`]'s intermediate values for a [`Placement`]: the seconds to extrapolate
/// at each end (before the counter's zero point is considered), the sampled seconds, and the
/// factor those give.
#[derive(Debug, Clone, Copy)]
struct Extrapolation {
    to_start: f64,
    to_end: f64,
    sampled: f64,
    factor: f64,
}

/// Where a window's counter resets are: the positions, in the whole series, of the samples
/// lower than the one before them, for the resets whose both samples lie in the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resets<'a> {
    /// Positions in the series, ascending.
    positions: &'a [usize],
    /// The position in the series of the window's first sample.
    window_start: usize,
}

type Reducer = fn(&[Point], Bounds<'_>) -> Option<f64>;

/// The functions that reduce one window of one series to a value.
/// Whether `name` is a function of one range vector computed window by window.
pub(crate) fn is_range_reducer(name: &str) -> bool {
    range_reducer(name).is_some()
}

fn range_reducer(name: &str) -> Option<Reducer> {
    let f: Reducer = match name {
        "rate" => |w, b| extrapolated_rate(w, b, true, true),
        "increase" => |w, b| extrapolated_rate(w, b, true, false),
        "delta" => |w, b| extrapolated_rate(w, b, false, false),
        "irate" => |w, _| instant_value(w, true),
        "idelta" => |w, _| instant_value(w, false),
        "increase2" => |w, _| {
            if w.len() < 2 {
                return None;
            }
            let mut total = w[w.len() - 1].v - w[0].v;
            for pair in w.windows(2) {
                if pair[1].v < pair[0].v {
                    total += pair[0].v;
                }
            }
            Some(total)
        },
        "changes" => |w, _| {
            let changes = w
                .windows(2)
                .filter(|p| p[1].v != p[0].v && !(p[1].v.is_nan() && p[0].v.is_nan()))
                .count();
            Some(changes as f64)
        },
        "resets" => |w, _| Some(w.windows(2).filter(|p| p[1].v < p[0].v).count() as f64),
        "deriv" => |w, _| {
            if w.len() < 2 {
                return None;
            }
            Some(linear_regression(w, w[0].t).0)
        },
        "avg_over_time" => |w, _| {
            let mut mean = Mean::default();
            for p in w {
                mean.add(p.v);
            }
            Some(mean.value())
        },
        "count_over_time" => |w, _| Some(w.len() as f64),
        "sum_over_time" | "sum2_over_time" => |w, _| {
            let (mut sum, mut c) = (0.0, 0.0);
            for p in w {
                (sum, c) = kahan_add(p.v, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        },
        "min_over_time" => |w, _| {
            let mut min = w[0].v;
            for p in &w[1..] {
                if p.v < min || min.is_nan() {
                    min = p.v;
                }
            }
            Some(min)
        },
        "max_over_time" => |w, _| {
            let mut max = w[0].v;
            for p in &w[1..] {
                if p.v > max || max.is_nan() {
                    max = p.v;
                }
            }
            Some(max)
        },
        "stddev_over_time" => |w, _| Some(variance(w).sqrt()),
        "stdvar_over_time" => |w, _| Some(variance(w)),
        "last_over_time" => |w, _| Some(w[w.len() - 1].v),
        "first_over_time" => |w, _| Some(w[0].v),
        "present_over_time" => |_, _| Some(1.0),
        "mad_over_time" => |w, _| {
            if w.iter().any(|p| p.v.is_nan()) {
                return Some(f64::NAN);
            }
            let mut values: Vec<f64> = w.iter().map(|p| p.v).collect();
            let median = quantile(0.5, &mut values);
            let mut deviations: Vec<f64> = w.iter().map(|p| (p.v - median).abs()).collect();
            Some(quantile(0.5, &mut deviations))
        },
        "ts_of_first_over_time" => |w, _| Some(w[0].t as f64 / 1000.0),
        "ts_of_last_over_time" => |w, _| Some(w[w.len() - 1].t as f64 / 1000.0),
        "ts_of_min_over_time" => |w, _| {
            let mut best = w[0];
            for p in &w[1..] {
                if p.v <= best.v || best.v.is_nan() {
                    best = *p;
                }
            }
            Some(best.t as f64 / 1000.0)
        },
        "ts_of_max_over_time" => |w, _| {
            let mut best = w[0];
            for p in &w[1..] {
                if p.v >= best.v || best.v.is_nan() {
                    best = *p;
                }
            }
            Some(best.t as f64 / 1000.0)
        },
        _ => return None,
    };
    Some(f)
}

fn variance(window: &[Point]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in window {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_add(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_add(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated towards its
/// boundaries as Prometheus does (at most half an average interval past the first and last
/// sample, never below a counter's zero point).
#[inline(always)]
fn extrapolated_rate(
    window: &[Point],
    bounds: Bounds<'_>,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let first = window[0];
    let last = window[window.len() - 1];
    let mut result = last.v - first.v;
    if counter {
        // The same additions in the same order whether the resets are known or looked for.
        match bounds.resets {
            Some(resets) => {
                for &position in resets.positions {
                    result += window[position - resets.window_start - 1].v;
                }
            }
            None => {
                let mut previous = first.v;
                for p in &window[1..] {
                    if p.v < previous {
                        result += previous;
                    }
                    previous = p.v;
                }
            }
        }
    }
    let placement = Placement {
        to_start: first.t - bounds.start,
        to_end: bounds.end - last.t,
        sampled: last.t - first.t,
        count: window.len(),
        range: bounds.range,
        per_second: rate,
    };
    let cached = bounds
        .extrapolation
        .and_then(|cache| cache.entry.get())
        .filter(|(kept, _)| *kept == placement);
    let extrapolation = match cached {
        Some((_, extrapolation)) => extrapolation,
        None => {
            let extrapolation = extrapolation(placement);
            if let Some(cache) = bounds.extrapolation {
                cache.entry.set(Some((placement, extrapolation)));
            }
            extrapolation
        }
    };
    let Extrapolation {
        to_start,
        sampled,
        factor,
        ..
    } = extrapolation;
    if counter && result > 0.0 && first.v >= 0.0 {
        // A counter is not extrapolated below zero: `to_start` shrinks to the time the
        // counter would take to fall to zero. When that time is certainly longer (twice is far
        // beyond any rounding), the division that works it out is skipped.
        let certainly_longer = (first.v * sampled).is_finite()
            && (2.0 * to_start * result).is_finite()
            && first.v * sampled >= 2.0 * to_start * result;
        if !certainly_longer {
            let to_zero = sampled * (first.v / result);
            if to_zero < to_start {
                let shortened = Extrapolation {
                    to_start: to_zero,
                    ..extrapolation
                };
                return Some(result * shortened.factor_for(bounds.range, rate));
            }
        }
    }
    Some(result * factor)
}

/// The extrapolation of a window whose samples lie as `placement` says (see
/// [`extrapolated_rate`]), before the counter's zero point is considered.
fn extrapolation(placement: Placement) -> Extrapolation {
    let mut to_start = placement.to_start as f64 / 1000.0;
    let mut to_end = placement.to_end as f64 / 1000.0;
    let sampled = placement.sampled as f64 / 1000.0;
    let average = sampled / (placement.count - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut extrapolation = Extrapolation {
        to_start,
        to_end,
        sampled,
        factor: 0.0,
    };
    extrapolation.factor = extrapolation.factor_for(placement.range, placement.per_second);
    extrapolation
}

impl Extrapolation {
    /// What the change over the sampled span is multiplied by: the extrapolated span over
    /// the sampled one, per second of the range when `per_second`.
    fn factor_for(&self, range: i64, per_second: bool) -> f64 {
        let mut factor = (self.sampled + self.to_start + self.to_end) / self.sampled;
        if per_second {
            factor /= range as f64 / 1000.0;
        }
        factor
    }
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(window: &[Point], rate: bool) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let last = window[window.len() - 1];
    let previous = window[window.len() - 2];
    let mut result = if rate && last.v < previous.v {
        last.v
    } else {
        last.v - previous.v
    };
    let interval = last.t - previous.t;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

fn double_exponential_smoothing(window: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = window[0].v;
    let mut b = window[1].v - window[0].v;
    for (i, p) in window.iter().enumerate().skip(1) {
        let x = sf * p.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// The functions `anchored` and `smoothed` ranges may be used with.
const ANCHORED_FUNCTIONS: &str = "changes, delta, increase, rate, resets";
const SMOOTHED_FUNCTIONS: &str = "delta, increase, rate";

fn check_extended_range(name: &str, mode: ExtendedRange) -> Result<(), QueryError> {
    let allowed = match mode {
        ExtendedRange::Smoothed => SMOOTHED_FUNCTIONS,
        ExtendedRange::Anchored => ANCHORED_FUNCTIONS,
    };
    if allowed.split(", ").any(|f| f == name) {
        return Ok(());
    }
    Err(QueryError::Execution(format!(
        "{} modifier can only be used with: {allowed} - not with {name}",
        mode.keyword()
    )))
}

/// `rate`, `increase`, `delta`, `changes` and `resets` over `anchored` or `smoothed` ranges:
/// the window is extended by the last sample at or before its start (and, smoothed, the first
/// one after its end), each within the lookback; smoothed values are interpolated at the
/// edges. A step whose window itself holds no sample has no value.
fn extended_range_function(
    ev: &mut Evaluator<'_>,
    name: &str,
    mode: ExtendedRange,
    range: &RangeVal,
    grid: Grid,
) -> Result<Val, QueryError> {
    let smoothed = mode == ExtendedRange::Smoothed;
    check_extended_range(name, mode)?;
    let steps = grid.len();
    let mut out = Vec::with_capacity(range.series.len());
    for (labels, points) in &range.series {
        ev.check()?;
        let mut values: Column = vec![None; steps];
        for (i, &end) in range.ends.iter().enumerate() {
            let start = end - range.range;
            let first_in = points.partition_point(|p| p.t <= start);
            let after = points.partition_point(|p| p.t <= end);
            if !smoothed && first_in == after {
                continue;
            }
            let from = if first_in > 0 && points[first_in - 1].t > start - range.lookback {
                first_in - 1
            } else {
                first_in
            };
            let to = if smoothed && after < points.len() && points[after].t <= end + range.lookback
            {
                after + 1
            } else {
                after
            };
            let window = &points[from..to];
            // Smoothed needs two samples around the window, at least one after its start.
            if smoothed && (window.len() < 2 || window[window.len() - 1].t <= start) {
                continue;
            }
            let bounds = Bounds {
                start,
                end,
                range: range.range,
                resets: None,
                extrapolation: None,
            };
            values[i] = match name {
                "rate" => Some(extended_rate(window, bounds, smoothed, true, true)),
                "increase" => Some(extended_rate(window, bounds, smoothed, true, false)),
                "delta" => Some(extended_rate(window, bounds, smoothed, false, false)),
                _ => range_reducer(name).and_then(|f| f(window, bounds)),
            };
        }
        if values.iter().any(Option::is_some) {
            out.push(VSeries {
                labels: labels.clone(),
                drop_name: true,
                values,
            });
        }
    }
    ev.hold(out.len() * steps)?;
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// The change over an extended window (see [`extended_range_function`]): last minus first
/// value, each interpolated at the window's edge when smoothed, plus counter resets.
fn extended_rate(
    points: &[Point],
    bounds: Bounds<'_>,
    smoothed: bool,
    counter: bool,
    rate: bool,
) -> f64 {
    // Across a counter reset the counter restarted from zero.
    let interpolate = |a: Point, b: Point, t: i64| -> f64 {
        let y1 = if counter && b.v < a.v { 0.0 } else { a.v };
        y1 + (b.v - y1) * (t - a.t) as f64 / (b.t - a.t) as f64
    };
    let last_index = points.len() - 1;
    let left = if smoothed && points[0].t < bounds.start && points.len() > 1 {
        interpolate(points[0], points[1], bounds.start)
    } else {
        points[0].v
    };
    let right = if smoothed && last_index > 0 && points[last_index].t > bounds.end {
        interpolate(points[last_index - 1], points[last_index], bounds.end)
    } else {
        points[last_index].v
    };
    let mut result = right - left;
    if counter {
        // Resets strictly inside the window; the edges are handled by the interpolation.
        let from = usize::from(points[0].t <= bounds.start);
        let to = if points[last_index].t >= bounds.end {
            last_index
        } else {
            last_index + 1
        };
        let mut previous = left;
        for p in points.get(from..to).unwrap_or(&[]) {
            if p.v < previous {
                result += previous;
            }
            previous = p.v;
        }
        if right < previous {
            result += previous;
        }
    }
    if rate {
        result /= bounds.range as f64 / 1000.0;
    }
    result
}

/// A series' counter resets, handed out window by window.
struct ResetCursor {
    /// Positions of the samples lower than the one before them.
    positions: Vec<usize>,
    /// The first reset not before the last window asked for.
    next: usize,
}

impl ResetCursor {
    fn new(points: &[Point]) -> Self {
        // Most counters never reset: one pass that allocates nothing finds that out.
        let positions = if points.windows(2).all(|pair| pair[1].v >= pair[0].v) {
            Vec::new()
        } else {
            points
                .windows(2)
                .enumerate()
                .filter(|(_, pair)| pair[1].v < pair[0].v)
                .map(|(position, _)| position + 1)
                .collect()
        };
        Self { positions, next: 0 }
    }

    /// The resets of the window of `len` points from position `from`: both samples of each
    /// lie in it. Windows usually move forward; one that goes back is searched from the start.
    #[inline]
    fn window(&mut self, from: usize, len: usize) -> Resets<'_> {
        if self.positions.is_empty() {
            return Resets {
                positions: &[],
                window_start: from,
            };
        }
        if self.next > 0 && self.positions[self.next - 1] > from {
            self.next = 0;
        }
        while self.positions.get(self.next).is_some_and(|&p| p <= from) {
            self.next += 1;
        }
        let rest = &self.positions[self.next..];
        let inside = rest.partition_point(|&p| p < from + len);
        Resets {
            positions: &rest[..inside],
            window_start: from,
        }
    }
}

/// Calls `f(step, window)` for every step with the points of `(end - range, end]`.
fn for_each_window(range: &RangeVal, points: &[Point], mut f: impl FnMut(usize, &[Point])) {
    for_each_window_at(range, points, |step, _, window| f(step, window));
}

/// As [`for_each_window`], also passing the position of the window's first point.
fn for_each_window_at(
    range: &RangeVal,
    points: &[Point],
    mut f: impl FnMut(usize, usize, &[Point]),
) {
    let (mut lo, mut hi) = (0, 0);
    for (i, &end) in range.ends.iter().enumerate() {
        let start = end - range.range;
        if hi > 0 && end < points.get(hi - 1).map_or(i64::MIN, |p| p.t) {
            // Window ends went backwards (never with a fixed grid); restart the scan.
            lo = 0;
            hi = 0;
        }
        while hi < points.len() && points[hi].t <= end {
            hi += 1;
        }
        while lo < hi && points[lo].t <= start {
            lo += 1;
        }
        let from = lo.min(hi);
        f(i, from, &points[from..hi]);
    }
}

/// Applies a window function to every series of a range vector at every step, the series
/// split across cores when there is enough work.
///
/// With `@` every step sees the same window; unless the function takes other arguments that
/// vary per step (`per_step`), it is then computed once.
#[allow(clippy::too_many_arguments)]
fn range_function(
    ev: &mut Evaluator<'_>,
    range: &mut RangeVal,
    grid: Grid,
    keep_name: bool,
    per_step: bool,
    counters_at: Option<usize>,
    f: impl Fn(usize, &[Point], Bounds<'_>) -> Option<f64> + Sync,
) -> Result<Val, QueryError> {
    let steps = grid.len();
    let fixed = !per_step && steps > 1 && range.ends.first() == range.ends.last();
    let pending = range.pending.take();
    let range = &*range;
    let guard = ev.guard();
    let one = |(labels, points): &(Labels, Vec<Point>)| -> Result<Option<VSeries>, QueryError> {
        guard.check()?;
        // Counter resets are found once per series, not once per window holding them.
        let mut resets = ResetCursor::new(points);
        let extrapolation = ExtrapolationCache::default();
        let mut values: Column = vec![None; steps];
        // Long series over many steps check the guard as they go, not only per series.
        let mut stopped = None;
        for_each_window_at(range, points, |i, from, window| {
            if stopped.is_some() || window.is_empty() || (fixed && i > 0) {
                return;
            }
            if i % 1024 == 1023 {
                if let Err(error) = guard.check() {
                    stopped = Some(error);
                    return;
                }
            }
            let end = range.ends[i];
            let bounds = Bounds {
                start: end - range.range,
                end,
                range: range.range,
                resets: Some(resets.window(from, window.len())),
                extrapolation: Some(&extrapolation),
            };
            values[i] = f(i, window, bounds);
        });
        if let Some(error) = stopped {
            return Err(error);
        }
        if fixed {
            let first = values[0];
            values.fill(first);
        }
        Ok(values.iter().any(Option::is_some).then(|| VSeries {
            labels: labels.clone(),
            drop_name: !keep_name,
            values,
        }))
    };
    let mut fold = ev.fold.take();
    if let Some(fold) = &mut fold {
        // An aggregation takes the output batch by batch (see `GroupFold`).
        fold.fed = true;
    }
    let folding = fold.is_some();
    let mut out = Vec::new();
    // Computes the window function over a part of the series, split across the cores when
    // `split` and the part is large enough.
    let compute =
        |part: &[(Labels, Vec<Point>)], split: bool| -> Result<Vec<VSeries>, QueryError> {
            let work = match split {
                true => part.iter().map(|(_, points)| points.len() + steps).sum(),
                false => 0,
            };
            let mut computed = Vec::with_capacity(part.len());
            for result in parallel_map(part, work, one) {
                if let Some(series) = result? {
                    computed.push(series);
                }
            }
            Ok(computed)
        };
    // Takes computed series: an aggregation folds them in, else they are kept.
    let mut absorb = |ev: &mut Evaluator<'_>, computed: Vec<VSeries>| {
        match &mut fold {
            Some(fold) => {
                ev.hold(computed.len() * steps)?;
                fold.add(&computed, !keep_name)?;
                ev.release(computed.len() * steps);
            }
            None => out.extend(computed),
        }
        Ok::<(), QueryError>(())
    };
    let result = match pending {
        None => (|| {
            if let Some(offset) = counters_at {
                warn_non_counters(ev, range.series.iter().map(|(labels, _)| labels), offset);
            }
            for part in range.series.chunks(FOLD_BATCH_SERIES) {
                absorb(ev, compute(part, true)?)?;
            }
            Ok(())
        })(),
        // The read arrives batch by batch. Each batch is turned into points and computed on
        // one of the cores while the next ones arrive, then folded in (or kept) in the order
        // of the read; its samples are dropped once computed, so the samples of the whole
        // read never sit in memory at once.
        Some(mut pending) => pipeline(
            ev,
            |ev| {
                let Some(batch) = ev.next_batch(&mut pending)? else {
                    return Ok(None);
                };
                let samples: usize = batch.iter().map(|series| series.samples.len()).sum();
                ev.hold(samples)?;
                if let Some(offset) = counters_at {
                    warn_non_counters(ev, batch.iter().map(|series| &series.labels), offset);
                }
                Ok(Some((batch, samples)))
            },
            |(batch, samples): (Vec<lookout_storage::Series>, usize)| {
                let part: Vec<(Labels, Vec<Point>)> = batch.into_iter().map(points_of).collect();
                (compute(&part, false), samples)
            },
            |ev, (computed, samples)| {
                ev.release(samples);
                absorb(ev, computed?)
            },
        ),
    };
    ev.fold = fold;
    result?;
    if folding {
        return Ok(Val::Vector(Vec::new()));
    }
    ev.hold(out.len() * steps)?;
    if !keep_name {
        let mut seen = std::collections::HashSet::with_capacity(out.len());
        if !out.iter().all(|s| seen.insert(EffectiveKey::new(s))) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(Val::Vector(out))
}

/// Series per batch a range function hands to an aggregation folding its output.
const FOLD_BATCH_SERIES: usize = 4096;

/// Work (points plus steps) below which splitting across threads costs more than it saves.
const PARALLEL_WORK: usize = 200_000;

/// `items.map(f)` in order, on all cores when `work` is large enough.
fn parallel_map<T: Sync, R: Send>(items: &[T], work: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = lookout_storage::cores();
    if threads < 2 || work < PARALLEL_WORK || items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Hands the items `next` produces to `work` on every core, and the results to `take` in the
/// order of the items. `next` and `take` run on the calling thread, with `state`; at most two
/// items per core are handed out and not yet taken. On one core, it is a plain loop.
fn pipeline<S, I: Send, R: Send>(
    state: &mut S,
    mut next: impl FnMut(&mut S) -> Result<Option<I>, QueryError>,
    work: impl Fn(I) -> R + Sync,
    mut take: impl FnMut(&mut S, R) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let workers = lookout_storage::cores();
    if workers < 2 {
        while let Some(item) = next(state)? {
            take(state, work(item))?;
        }
        return Ok(());
    }
    let (jobs, queue) = std::sync::mpsc::sync_channel::<(usize, I)>(workers);
    let queue = std::sync::Mutex::new(queue);
    let (results, done) = std::sync::mpsc::channel::<(usize, std::thread::Result<R>)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let results = results.clone();
            let (queue, work) = (&queue, &work);
            scope.spawn(move || loop {
                // A worker waits for the next item holding the lock; the others wait for it.
                let job = queue.lock().map(|queue| queue.recv());
                let Ok(Ok((index, item))) = job else {
                    return;
                };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)));
                if results.send((index, result)).is_err() {
                    return;
                }
            });
        }
        drop(results);
        // Dropped when `next` has no more: the workers stop once the queue is empty.
        let mut jobs = Some(jobs);
        let (mut sent, mut taken) = (0, 0);
        let mut ready = std::collections::BTreeMap::new();
        loop {
            if let Some(sender) = jobs.as_ref().filter(|_| sent - taken < 2 * workers) {
                match next(state)? {
                    Some(item) => {
                        if sender.send((sent, item)).is_err() {
                            return Err(QueryError::Execution("query workers stopped".into()));
                        }
                        sent += 1;
                    }
                    None => jobs = None,
                }
                continue;
            }
            if taken == sent {
                return Ok(());
            }
            let Ok((index, result)) = done.recv() else {
                return Err(QueryError::Execution("query workers stopped".into()));
            };
            ready.insert(index, result);
            while let Some(result) = ready.remove(&taken) {
                taken += 1;
                match result {
                    Ok(result) => take(state, result)?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    })
}

fn simple(
    ev: &mut Evaluator<'_>,
    args: &[Expr],
    grid: Grid,
    f: impl Fn(f64) -> f64,
) -> Result<Val, QueryError> {
    let series = ev.eval_vector_lazy(&args[0], grid)?;
    map_vector(series, true, |v| Some(f(v)))
}

fn map_vector(
    series: Vec<VSeries>,
    drop_name: bool,
    f: impl Fn(f64) -> Option<f64>,
) -> Result<Val, QueryError> {
    map_vector_steps(series, drop_name, |_, v| f(v))
}

fn map_vector_steps(
    series: Vec<VSeries>,
    drop_name: bool,
    f: impl Fn(usize, f64) -> Option<f64>,
) -> Result<Val, QueryError> {
    let out = series
        .into_iter()
        .map(|s| VSeries {
            labels: s.labels,
            drop_name: s.drop_name || drop_name,
            values: s
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| v.and_then(|v| f(i, v)))
                .collect(),
        })
        .collect();
    Ok(Val::Vector(merge_same_labels(out)?))
}

fn string_arg(ev: &mut Evaluator<'_>, arg: &Expr, grid: Grid) -> Result<String, QueryError> {
    match ev.eval(arg, grid)? {
        Val::String(s) => Ok(s),
        _ => Err(QueryError::Execution("expected a string argument".into())),
    }
}

fn valid_label_name(name: &str) -> bool {
    !name.is_empty() && std::str::from_utf8(name.as_bytes()).is_ok()
}

/// The labels `absent(sel)` reports: those of the selector's equality matchers, except the
/// metric name; a label that also has another matcher is left out (Prometheus' historic rule:
/// `absent(x{job="a",job=~"b"})` has no `job`).
fn absent_labels(expr: &Expr) -> Labels {
    let Expr::VectorSelector(selector) = expr.unwrap_parens() else {
        return Labels::empty();
    };
    let mut builder = Labels::empty().to_builder();
    let mut seen: Vec<&str> = Vec::new();
    for matcher in &selector.matchers {
        if matcher.name() == METRIC_NAME_LABEL {
            continue;
        }
        if matcher.kind() == MatchKind::Equal && !seen.contains(&matcher.name()) {
            builder.set(matcher.name(), matcher.value());
            seen.push(matcher.name());
        } else {
            builder.remove(matcher.name());
        }
    }
    builder.build()
}

fn cmp_nan_first(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn cmp_desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn cmp_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Compares strings with runs of digits compared as numbers ("a2" < "a10").
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = std::str::from_utf8(&a[..da])
                    .unwrap_or("0")
                    .trim_start_matches('0');
                let nb = std::str::from_utf8(&b[..db])
                    .unwrap_or("0")
                    .trim_start_matches('0');
                let ordering = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ordering != std::cmp::Ordering::Equal {
                    return ordering;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Classic histograms: the input's `le` bucket series grouped by their other labels (the
/// name included, so two bucket sets differing only by name collide in the output), and
/// `compute(step, buckets)` applied at each step to the present buckets.
///
/// `compute` also says whether it had to force the counts monotonic; the annotations (a
/// malformed `le`, a monotonicity fix) name the expression at `offset`.
fn classic_buckets(
    ev: &mut Evaluator<'_>,
    series: &[VSeries],
    steps: usize,
    offset: usize,
    compute: impl Fn(usize, &mut Vec<(f64, f64)>) -> (f64, bool),
) -> Result<Vec<VSeries>, QueryError> {
    let mut groups: HashMap<Labels, usize> = HashMap::new();
    let mut members: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    for (index, s) in series.iter().enumerate() {
        let le = s.labels.get("le");
        let Some(upper) = le.and_then(parse_le) else {
            let text = format!(
                "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}",
                le.unwrap_or(""),
                s.labels.metric_name().unwrap_or("")
            );
            ev.warn(&text, offset);
            continue;
        };
        let mut builder = s.labels.to_builder();
        builder.remove("le");
        let key = builder.build();
        let next = members.len();
        let group = *groups.entry(key.clone()).or_insert(next);
        if group == next {
            members.push((key, Vec::new()));
        }
        members[group].1.push((upper, index));
    }
    let mut out = Vec::with_capacity(members.len());
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (labels, list) in members {
        let mut forced = false;
        let values = (0..steps)
            .map(|i| {
                buckets.clear();
                buckets
                    .extend(list.iter().filter_map(|(upper, index)| {
                        series[*index].values[i].map(|v| (*upper, v))
                    }));
                (!buckets.is_empty()).then(|| {
                    let (value, fixed) = compute(i, &mut buckets);
                    forced |= fixed;
                    value
                })
            })
            .collect();
        if forced {
            let text = format!(
                "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                labels.metric_name().unwrap_or("")
            );
            ev.info(&text, offset);
        }
        out.push(VSeries {
            drop_name: false,
            labels: drop_metric_name(&labels),
            values,
        });
    }
    merge_same_labels(out)
}

/// A quantile as a label value: Go's shortest form, with `.0` on whole numbers (`0.0`,
/// `1.0`, `0.25`), as Prometheus writes `histogram_quantiles`' label.
fn quantile_label(q: f64) -> String {
    let text = go_format_float(q);
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        format!("{text}.0")
    } else {
        text
    }
}

fn parse_le(value: &str) -> Option<f64> {
    match value.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Sorts cumulative `(upper bound, count)` buckets, merges equal bounds and forces the counts
/// to be monotonic (ignoring floating-point noise), as Prometheus does before using them.
/// False when the buckets do not end with `+Inf`.
fn prepare_buckets(buckets: &mut Vec<(f64, f64)>) -> (bool, bool) {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (false, false);
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(upper, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    *buckets = merged;
    let mut previous = buckets[0].1;
    let mut forced = false;
    for bucket in buckets.iter_mut().skip(1) {
        let current = bucket.1;
        if current == previous {
            continue;
        }
        if almost_equal(previous, current, 1e-12) {
            bucket.1 = previous;
            continue;
        }
        if current < previous {
            bucket.1 = previous;
            forced = true;
            continue;
        }
        previous = current;
    }
    (true, forced)
}

/// The quantile of cumulative `(upper bound, count)` buckets, as Prometheus computes it, and
/// whether the counts had to be forced monotonic.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    let (valid, forced) = prepare_buckets(buckets);
    (bucket_quantile_prepared(q, buckets, valid), forced)
}

fn bucket_quantile_prepared(q: f64, buckets: &[(f64, f64)], valid: bool) -> f64 {
    if !valid || buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|bucket| bucket.1 < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// The share of observations between `lower` and `upper` in cumulative buckets: linear
/// inside finite buckets; the first bucket starts at 0 when its bound is positive; buckets
/// reaching to -Inf or +Inf hold their observations at the infinite end.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if !prepare_buckets(buckets).0 {
        return f64::NAN;
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let cumulative = |x: f64| -> f64 {
        if x == f64::NEG_INFINITY {
            return 0.0;
        }
        if x == f64::INFINITY {
            return total;
        }
        let mut below = 0.0;
        let mut low = if buckets[0].0 > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        for &(high, count) in buckets.iter() {
            if x <= high {
                if x <= low {
                    return below;
                }
                if low.is_infinite() {
                    return count;
                }
                if high.is_infinite() {
                    return below;
                }
                return below + (count - below) * (x - low) / (high - low);
            }
            below = count;
            low = high;
        }
        total
    };
    (cumulative(upper) - cumulative(lower)) / total
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / sum.min(f64::MAX) < epsilon
}

/// SOFALookout's `zhistogram_quantile`: per-bucket (not cumulative) counts labelled
/// `_bucket="lo-hi"` or `"lo-"`, grouped by every other label (the metric name included).
fn zhistogram_quantile(q: &[f64], series: Vec<VSeries>, steps: usize) -> Result<Val, QueryError> {
    if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        return Err(QueryError::Execution(format!(
            "zhistogram_quantile: quantile must be between 0 and 1, got {bad}"
        )));
    }
    let mut groups: HashMap<Labels, usize> = HashMap::new();
    let mut members: Vec<(Labels, Vec<ZBucket>)> = Vec::new();
    for (index, s) in series.iter().enumerate() {
        let Some((low, high)) = s.labels.get("_bucket").and_then(parse_zbucket) else {
            continue;
        };
        let mut builder = s.labels.to_builder();
        builder.remove("_bucket");
        let key = builder.build();
        let next = members.len();
        let group = *groups.entry(key.clone()).or_insert(next);
        if group == next {
            members.push((key, Vec::new()));
        }
        members[group].1.push((low, high, index));
    }
    let mut out = Vec::with_capacity(members.len());
    for (labels, mut list) in members {
        list.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let values = (0..steps)
            .map(|i| {
                let buckets: Vec<(f64, Option<f64>, f64)> = list
                    .iter()
                    .filter_map(|(low, high, index)| {
                        series[*index].values[i].map(|c| (*low, *high, c))
                    })
                    .collect();
                if buckets.is_empty() {
                    return None;
                }
                let total: f64 = buckets.iter().map(|b| b.2).sum();
                let rank = q[i] * total;
                let mut running = 0.0;
                for (low, high, count) in &buckets {
                    let before = running;
                    running += count;
                    if running >= rank {
                        return Some(match high {
                            Some(high) if *count > 0.0 => {
                                low + (high - low) * (rank - before) / count
                            }
                            _ => *low,
                        });
                    }
                }
                Some(f64::NAN)
            })
            .collect();
        out.push(VSeries {
            drop_name: false,
            labels,
            values,
        });
    }
    Ok(Val::Vector(out))
}

/// A SOFALookout bucket: lower bound, upper bound (none when open), input series index.
type ZBucket = (f64, Option<f64>, usize);

/// `"lo-hi"` or `"lo-"`; `lo` may itself be negative (`"-5-0"`).
fn parse_zbucket(value: &str) -> Option<(f64, Option<f64>)> {
    let split = value
        .char_indices()
        .skip(1)
        .find(|(i, c)| *c == '-' && !matches!(value.as_bytes()[i - 1], b'e' | b'E'))
        .map(|(i, _)| i)?;
    let low: f64 = value[..split].trim().parse().ok()?;
    let rest = value[split + 1..].trim();
    if rest.is_empty() {
        Some((low, None))
    } else {
        Some((low, Some(rest.parse().ok()?)))
    }
}

/// Evaluates an aggregation over its input series.
pub(crate) fn aggregate(
    ev: &mut Evaluator<'_>,
    aggregate: &Aggregate,
    param: Param,
    input: Vec<VSeries>,
    steps: usize,
) -> Result<Vec<VSeries>, QueryError> {
    let op = aggregate.op;
    // Group keys, computed once per input series.
    let mut ids: HashMap<Labels, usize> = HashMap::new();
    let mut keys: Vec<Labels> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (index, s) in input.iter().enumerate() {
        ev.check_every(index)?;
        let key = group_key(s, &aggregate.grouping, aggregate.without);
        let next = keys.len();
        let id = *ids.entry(key.clone()).or_insert(next);
        if id == next {
            keys.push(key);
            members.push(Vec::new());
        }
        members[id].push(index);
    }
    let scalar = |param: &Param| -> Vec<f64> {
        match param {
            Param::Scalar(values) => values.clone(),
            _ => vec![f64::NAN; steps],
        }
    };
    match op {
        AggregateOp::Topk | AggregateOp::Bottomk | AggregateOp::Limitk => {
            let k = scalar(&param);
            for value in &k {
                if value.is_nan() {
                    return Err(QueryError::Execution("Parameter value is NaN".into()));
                }
                if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(value) {
                    return Err(QueryError::Execution(format!(
                        "Scalar value {} overflows int64",
                        go_format_float(*value)
                    )));
                }
            }
            select_k(op, &k, input, &members, steps)
        }
        AggregateOp::LimitRatio => {
            let mut input = input;
            materialize(&mut input);
            let ratio = scalar(&param);
            if ratio.iter().any(|r| r.is_nan()) {
                return Err(QueryError::Execution("Ratio value is NaN".into()));
            }
            if ratio.iter().any(|r| !(-1.0..=1.0).contains(r)) {
                ev.warnings
                    .push("PromQL warning: ratio value should be between -1 and 1".into());
            }
            let mut out = input;
            for s in &mut out {
                let offset = s.labels.stable_hash() as f64 / u64::MAX as f64;
                for (i, value) in s.values.iter_mut().enumerate() {
                    let r = ratio[i].clamp(-1.0, 1.0);
                    let keep = (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r);
                    if !keep {
                        *value = None;
                    }
                }
            }
            out.retain(|s| s.values.iter().any(Option::is_some));
            Ok(out)
        }
        AggregateOp::CountValues => {
            let Param::String(label) = param else {
                return Err(QueryError::Execution(
                    "count_values needs a label name".into(),
                ));
            };
            if label.is_empty() {
                return Err(QueryError::Execution(format!(
                    "invalid label name {label:?}"
                )));
            }
            let mut out: Vec<VSeries> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::new();
            for (id, list) in members.iter().enumerate() {
                for &m in list {
                    for (i, value) in input[m].values.iter().enumerate() {
                        let Some(value) = value else { continue };
                        let mut builder = keys[id].to_builder();
                        builder.set(label.clone(), go_format_float(*value));
                        let labels = builder.build();
                        let target = *index.entry(labels.clone()).or_insert_with(|| {
                            out.push(VSeries {
                                drop_name: false,
                                labels,
                                values: vec![None; steps],
                            });
                            out.len() - 1
                        });
                        let slot = &mut out[target].values[i];
                        *slot = Some(slot.unwrap_or(0.0) + 1.0);
                    }
                }
            }
            Ok(out)
        }
        AggregateOp::Quantile => {
            let q = scalar(&param);
            ev.check_quantile(&q, aggregate.positions.get(1));
            let mut out = Vec::with_capacity(keys.len());
            let mut values = Vec::new();
            for (key, list) in keys.into_iter().zip(&members) {
                let column = (0..steps)
                    .map(|i| {
                        values.clear();
                        values.extend(list.iter().filter_map(|m| input[*m].values[i]));
                        (!values.is_empty()).then(|| quantile(q[i], &mut values))
                    })
                    .collect();
                out.push(VSeries {
                    drop_name: false,
                    labels: key,
                    values: column,
                });
            }
            Ok(out)
        }
        _ => {
            let mut out = Vec::with_capacity(keys.len());
            for (key, list) in keys.into_iter().zip(&members) {
                ev.check()?;
                let values = reduce_group(op, list.iter().map(|m| &input[*m].values), steps);
                out.push(VSeries {
                    drop_name: false,
                    labels: key,
                    values,
                });
            }
            Ok(out)
        }
    }
}

/// The group of a series: the `by` labels, or all but the `without` labels and the name
/// (labels seen through a pending name drop).
fn group_key(series: &VSeries, grouping: &[String], without: bool) -> Labels {
    let kept = series
        .label_iter()
        .filter(|l| {
            if without {
                l.name != METRIC_NAME_LABEL && !grouping.iter().any(|g| *g == l.name)
            } else {
                grouping.iter().any(|g| *g == l.name)
            }
        })
        .cloned()
        .collect();
    Labels::from_sorted_unchecked(kept)
}

/// `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar` of one group, step by step.
fn reduce_group<'a>(
    op: AggregateOp,
    columns: impl Iterator<Item = &'a Column>,
    steps: usize,
) -> Column {
    let mut group = GroupReducer::new(op, steps);
    for column in columns {
        group.add(column);
    }
    group.finish()
}

/// Whether [`reduce_group`] (and so [`GroupFold`]) computes `op`.
pub(crate) fn is_reducing(op: AggregateOp) -> bool {
    matches!(
        op,
        AggregateOp::Sum
            | AggregateOp::Avg
            | AggregateOp::Min
            | AggregateOp::Max
            | AggregateOp::Count
            | AggregateOp::Group
            | AggregateOp::Stddev
            | AggregateOp::Stdvar
    )
}

/// The running state of one group of a reducing aggregation: member columns are added one at
/// a time, in input order.
#[derive(Debug)]
struct GroupReducer {
    op: AggregateOp,
    count: Vec<u32>,
    state: ReducerState,
}

#[derive(Debug)]
enum ReducerState {
    /// Kahan sum and compensation.
    Sum(Vec<(f64, f64)>),
    Avg(Vec<Mean>),
    /// Min or max so far.
    Extreme(Column),
    /// `count` and `group` need only the counts.
    Count,
    /// stddev / stdvar: Welford's online algorithm (mean, M2).
    Variance(Vec<(f64, f64)>),
}

impl GroupReducer {
    fn new(op: AggregateOp, steps: usize) -> GroupReducer {
        let state = match op {
            AggregateOp::Sum => ReducerState::Sum(vec![(0.0, 0.0); steps]),
            AggregateOp::Avg => ReducerState::Avg(vec![Mean::default(); steps]),
            AggregateOp::Min | AggregateOp::Max => ReducerState::Extreme(vec![None; steps]),
            AggregateOp::Count | AggregateOp::Group => ReducerState::Count,
            _ => ReducerState::Variance(vec![(0.0, 0.0); steps]),
        };
        GroupReducer {
            op,
            count: vec![0; steps],
            state,
        }
    }

    fn add(&mut self, column: &Column) {
        let count = &mut self.count;
        match &mut self.state {
            ReducerState::Sum(sum) => {
                for (i, v) in column.iter().enumerate() {
                    if let Some(v) = v {
                        count[i] += 1;
                        sum[i] = kahan_add(*v, sum[i].0, sum[i].1);
                    }
                }
            }
            ReducerState::Avg(mean) => {
                for (i, v) in column.iter().enumerate() {
                    if let Some(v) = v {
                        count[i] += 1;
                        mean[i].add(*v);
                    }
                }
            }
            ReducerState::Extreme(out) => {
                let max = self.op == AggregateOp::Max;
                for (slot, v) in out.iter_mut().zip(column) {
                    let Some(v) = *v else { continue };
                    *slot = Some(match *slot {
                        None => v,
                        Some(current) if current.is_nan() => v,
                        Some(current) if (max && v > current) || (!max && v < current) => v,
                        Some(current) => current,
                    });
                }
            }
            ReducerState::Count => {
                for (i, v) in column.iter().enumerate() {
                    count[i] += u32::from(v.is_some());
                }
            }
            ReducerState::Variance(state) => {
                for (i, v) in column.iter().enumerate() {
                    if let Some(v) = v {
                        count[i] += 1;
                        let n = f64::from(count[i]);
                        let (mean, m2) = &mut state[i];
                        let delta = v - *mean;
                        *mean += delta / n;
                        *m2 += delta * (v - *mean);
                    }
                }
            }
        }
    }

    fn finish(self) -> Column {
        let count = self.count;
        match self.state {
            ReducerState::Sum(sum) => sum
                .iter()
                .zip(&count)
                .map(|((s, c), n)| (*n > 0).then(|| if s.is_infinite() { *s } else { s + c }))
                .collect(),
            ReducerState::Avg(mean) => mean
                .iter()
                .zip(&count)
                .map(|(m, n)| (*n > 0).then(|| m.value()))
                .collect(),
            ReducerState::Extreme(out) => out,
            ReducerState::Count => count
                .iter()
                .map(|n| {
                    (*n > 0).then(|| {
                        if self.op == AggregateOp::Count {
                            f64::from(*n)
                        } else {
                            1.0
                        }
                    })
                })
                .collect(),
            ReducerState::Variance(state) => state
                .iter()
                .zip(&count)
                .map(|((_, m2), n)| {
                    (*n > 0).then(|| {
                        let variance = m2 / f64::from(*n);
                        if self.op == AggregateOp::Stddev {
                            variance.sqrt()
                        } else {
                            variance
                        }
                    })
                })
                .collect(),
        }
    }
}

/// A reducing aggregation (`sum by (...)`, `avg`, `max`, ...) that takes its input series as
/// they are computed, a batch at a time, so that the whole input never exists at once.
/// [`range_function`] feeds it when the aggregation's argument is a range function of a
/// matrix selector (`sum by (mode) (rate(x[5m]))`): over many series and steps that input
/// is the largest value of the query. Groups, their order and every sum come out exactly as
/// from [`aggregate`]: members are added in input order.
#[derive(Debug)]
pub(crate) struct GroupFold {
    op: AggregateOp,
    grouping: Vec<String>,
    without: bool,
    steps: usize,
    ids: HashMap<Labels, usize>,
    groups: Vec<(Labels, GroupReducer)>,
    /// 128-bit hashes of the input series' labels as seen through a pending name drop, to
    /// report two inputs that end up with the same labels (as the unfused path does).
    seen: std::collections::HashSet<u128>,
    /// Whether a range function fed it (otherwise the argument was evaluated normally).
    pub(crate) fed: bool,
}

impl GroupFold {
    pub(crate) fn new(aggregate: &Aggregate, steps: usize) -> GroupFold {
        GroupFold {
            op: aggregate.op,
            grouping: aggregate.grouping.clone(),
            without: aggregate.without,
            steps,
            ids: HashMap::new(),
            groups: Vec::new(),
            seen: std::collections::HashSet::new(),
            fed: false,
        }
    }

    /// Adds a batch of input series, in input order. `check_duplicates`: fail as the range
    /// function would when two of its outputs have the same labels.
    fn add(&mut self, batch: &[VSeries], check_duplicates: bool) -> Result<(), QueryError> {
        for series in batch {
            if check_duplicates
                && !self
                    .seen
                    .insert(super::eval::effective_labels_hasher(series).digest128())
            {
                return Err(QueryError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
            let key = group_key(series, &self.grouping, self.without);
            let id = match self.ids.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.groups.len();
                    self.ids.insert(key.clone(), id);
                    self.groups
                        .push((key, GroupReducer::new(self.op, self.steps)));
                    id
                }
            };
            self.groups[id].1.add(&series.values);
        }
        Ok(())
    }

    /// The aggregation's output, one series per group in order of first appearance.
    pub(crate) fn finish(self) -> Vec<VSeries> {
        self.groups
            .into_iter()
            .map(|(labels, group)| VSeries {
                drop_name: false,
                labels,
                values: group.finish(),
            })
            .collect()
    }
}

/// The k candidates (series index, value) that Prometheus keeps for `topk` (`bottomk` when
/// `bottom`): it walks the series in input order with a heap of k holding the worst kept
/// value on top, and a series replaces the top only when strictly better. Among equal values
/// the one evicted is the one on top of the heap, so the heap moves exactly as Go's
/// `container/heap` does (same sift-up and sift-down, NaN counted as the worst value).
/// Users comparing answers with Prometheus then get the same series when values tie.
fn heap_select(candidates: &[(usize, f64)], k: usize, bottom: bool) -> Vec<(usize, f64)> {
    // Go's `Less`: whether a is worse than b.
    let less = |a: f64, b: f64| a.is_nan() || if bottom { a > b } else { a < b };
    let mut heap: Vec<(usize, f64)> = Vec::with_capacity(k);
    if k == 0 {
        return heap;
    }
    for &(m, v) in candidates {
        if heap.len() < k {
            heap.push((m, v));
            let mut j = heap.len() - 1;
            while j > 0 {
                let parent = (j - 1) / 2;
                if !less(heap[j].1, heap[parent].1) {
                    break;
                }
                heap.swap(parent, j);
                j = parent;
            }
            continue;
        }
        let top = heap[0].1;
        let better = if bottom { top > v } else { top < v };
        if better || (top.is_nan() && !v.is_nan()) {
            heap[0] = (m, v);
            let mut i = 0;
            loop {
                let left = 2 * i + 1;
                if left >= heap.len() {
                    break;
                }
                let mut child = left;
                if left + 1 < heap.len() && less(heap[left + 1].1, heap[left].1) {
                    child = left + 1;
                }
                if !less(heap[child].1, heap[i].1) {
                    break;
                }
                heap.swap(i, child);
                i = child;
            }
        }
    }
    heap
}

/// `topk`, `bottomk` and `limitk`: per group and step, the k series with the highest
/// (lowest, first) values keep their value at that step. For an instant query the result
/// comes out in the order Prometheus returns: group by group, best first.
fn select_k(
    op: AggregateOp,
    k: &[f64],
    input: Vec<VSeries>,
    members: &[Vec<usize>],
    steps: usize,
) -> Result<Vec<VSeries>, QueryError> {
    let mut keep: Vec<Column> = vec![vec![None; steps]; input.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    for list in members {
        for i in 0..steps {
            let k = k[i] as i64;
            if k < 1 {
                continue;
            }
            candidates.clear();
            candidates.extend(
                list.iter()
                    .filter_map(|m| input[*m].values[i].map(|v| (*m, v))),
            );
            let k = k.min(candidates.len() as i64) as usize;
            match op {
                AggregateOp::Topk | AggregateOp::Bottomk => {
                    let bottom = op == AggregateOp::Bottomk;
                    let mut chosen = heap_select(&candidates, k, bottom);
                    // Best first (an instant query lists them so), ties in input order.
                    chosen.sort_by(|a, b| {
                        let by_value = match bottom {
                            true => cmp_asc_nan_last(a.1, b.1),
                            false => cmp_desc_nan_last(a.1, b.1),
                        };
                        by_value.then(a.0.cmp(&b.0))
                    });
                    candidates = chosen;
                }
                _ => candidates.truncate(k),
            }
            for (m, v) in &candidates {
                keep[*m][i] = Some(*v);
                if steps == 1 {
                    order.push(*m);
                }
            }
        }
    }
    let mut input: Vec<Option<VSeries>> = input.into_iter().map(Some).collect();
    if steps == 1 {
        return Ok(order
            .into_iter()
            .filter_map(|m| {
                input[m].take().map(|s| VSeries {
                    drop_name: s.drop_name,
                    labels: s.labels,
                    values: keep[m].clone(),
                })
            })
            .collect());
    }
    Ok(input
        .iter_mut()
        .zip(keep)
        .filter_map(|(s, values)| {
            let s = s.take()?;
            values.iter().any(Option::is_some).then_some(VSeries {
                drop_name: s.drop_name,
                labels: s.labels,
                values,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ties are settled as Prometheus settles them. Both cases were checked with Prometheus
    /// 2.42 (`promtool test rules`): `topk(2, m)` over a=2, b=2, c=3 keeps b and c (the
    /// heap's top, a, is evicted by c), and `bottomk(2, n)` over a=1, b=1, c=0, d=1 keeps b
    /// and c.
    #[test]
    fn topk_and_bottomk_settle_ties_as_prometheus_does() {
        let keep = |values: &[f64], k: usize, bottom: bool| {
            let candidates: Vec<(usize, f64)> = values.iter().copied().enumerate().collect();
            let mut kept: Vec<usize> = heap_select(&candidates, k, bottom)
                .into_iter()
                .map(|(index, _)| index)
                .collect();
            kept.sort_unstable();
            kept
        };
        assert_eq!(keep(&[2.0, 2.0, 3.0], 2, false), [1, 2]);
        assert_eq!(keep(&[1.0, 1.0, 0.0, 1.0], 2, true), [1, 2]);
        // Without ties: the k best, NaN only when nothing else is left.
        assert_eq!(keep(&[5.0, f64::NAN, 1.0, 7.0, 3.0], 3, false), [0, 3, 4]);
        assert_eq!(keep(&[5.0, f64::NAN, 1.0, 7.0, 3.0], 2, true), [2, 4]);
        assert_eq!(keep(&[f64::NAN, 1.0], 2, false), [0, 1]);
        assert_eq!(keep(&[1.0, 2.0], 0, false), Vec::<usize>::new());
    }

    /// Items finish out of order (some take longer), yet `take` sees every result once, in
    /// the order `next` handed the items out.
    #[test]
    fn the_pipeline_hands_results_over_in_order() {
        let mut state = (0u64, Vec::new());
        pipeline(
            &mut state,
            |(handed, _)| {
                *handed += 1;
                Ok((*handed <= 300).then_some(*handed))
            },
            |item: u64| {
                if item.is_multiple_of(3) {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                item * item
            },
            |(_, taken), result| {
                taken.push(result);
                Ok(())
            },
        )
        .unwrap();
        let expected: Vec<u64> = (1..=300).map(|item| item * item).collect();
        assert_eq!(state.1, expected);
    }

    /// An error from either side stops the pipeline and is its answer.
    #[test]
    fn the_pipeline_stops_at_the_first_error() {
        let mut handed = 0;
        let error = pipeline(
            &mut handed,
            |handed| {
                *handed += 1;
                match *handed {
                    50 => Err(QueryError::Execution("read failed".into())),
                    n => Ok(Some(n)),
                }
            },
            |item: u32| item,
            |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(error.to_string().contains("read failed"), "{error}");
        assert_eq!(handed, 50);

        let mut taken = Vec::new();
        let error = pipeline(
            &mut taken,
            |taken| Ok((taken.len() < 1000).then_some(())),
            |()| 1,
            |taken: &mut Vec<i32>, result| {
                taken.push(result);
                match taken.len() {
                    10 => Err(QueryError::Execution("fold failed".into())),
                    _ => Ok(()),
                }
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("fold failed"), "{error}");
        assert_eq!(taken.len(), 10);
    }

    /// A panic in the work reaches the caller instead of leaving it waiting.
    #[test]
    #[should_panic(expected = "work failed")]
    fn a_panic_in_the_pipeline_work_reaches_the_caller() {
        let mut handed = 0;
        let _ = pipeline(
            &mut handed,
            |handed| {
                *handed += 1;
                Ok((*handed <= 20).then_some(*handed))
            },
            |item: u32| {
                assert!(item != 7, "work failed");
                item
            },
            |_, _| Ok(()),
        );
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
        assert_eq!(natural_cmp("x01", "x1"), std::cmp::Ordering::Equal);
    }

    #[test]
    fn lookout_buckets_parse_with_negative_and_open_bounds() {
        assert_eq!(parse_zbucket("0-10"), Some((0.0, Some(10.0))));
        assert_eq!(parse_zbucket("100-"), Some((100.0, None)));
        assert_eq!(parse_zbucket("-5-0"), Some((-5.0, Some(0.0))));
        assert_eq!(parse_zbucket("x"), None);
    }

    #[test]
    fn bucket_quantile_interpolates_and_handles_edges() {
        let mut buckets = vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.5, &mut buckets).0, 1.0);
        let mut buckets = vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.75, &mut buckets).0, 1.5);
        let mut buckets = vec![(1.0, 10.0)];
        assert!(bucket_quantile(0.5, &mut buckets).0.is_nan());
        let mut buckets = vec![(1.0, 1.0), (f64::INFINITY, 1.0)];
        assert_eq!(bucket_quantile(-1.0, &mut buckets).0, f64::NEG_INFINITY);
    }

    proptest::proptest! {
        /// `rate` and `increase` over windows handed out by [`ResetCursor`], with the
        /// extrapolation kept from window to window, give the same bits as looking for the
        /// resets in each window and working everything out afresh, windows moving forward
        /// or back, counters near zero or far from it.
        #[test]
        fn known_resets_and_kept_extrapolations_give_the_scanned_result(
            values in proptest::collection::vec(0u16..200, 2..80),
            offset in proptest::prop_oneof![proptest::strategy::Just(0.0), 0.0..1e6f64],
            windows in proptest::collection::vec((0usize..80, 0usize..30, 0i64..20_000), 1..40),
        ) {
            let points: Vec<Point> = values
                .iter()
                .enumerate()
                .map(|(i, v)| Point { t: i as i64 * 15_000, v: offset + f64::from(*v) / 4.0 })
                .collect();
            let mut cursor = ResetCursor::new(&points);
            let kept = ExtrapolationCache::default();
            for (from, len, past_last) in windows {
                let from = from.min(points.len() - 1);
                let len = len.min(points.len() - from);
                let window = &points[from..from + len];
                let end = window.last().map_or(0, |p| p.t) + past_last;
                fn bounds<'a>(
                    end: i64,
                    resets: Option<Resets<'a>>,
                    extrapolation: Option<&'a ExtrapolationCache>,
                ) -> Bounds<'a> {
                    Bounds { start: end - 300_000, end, range: 300_000, resets, extrapolation }
                }
                for rate in [true, false] {
                    let scanned = extrapolated_rate(window, bounds(end, None, None), true, rate);
                    let known = extrapolated_rate(
                        window,
                        bounds(end, Some(cursor.window(from, len)), Some(&kept)),
                        true,
                        rate,
                    );
                    proptest::prop_assert_eq!(scanned.map(f64::to_bits), known.map(f64::to_bits));
                }
            }
        }
    }
}
