//! `/api/v1/query` and `/api/v1/query_range`: parameters checked in Prometheus' order and
//! wording, evaluation by [`lookout_promql::Engine`], results written as Prometheus writes
//! them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use lookout_model::{Classify, TimestampMs};
use lookout_promql::{Engine, EngineOptions, QueryError, QueryOutput, QueryStats, QueryValue};

use crate::params::{self, Params};
use crate::{encode, ApiError, AppState};

/// Prometheus answers at most this many points per series in a range query.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Prometheus lists at most this many warnings and as many infos, then says how many more.
const MAX_ANNOTATIONS: usize = 10;

/// Status code of a query stopped because the client went away (nginx' convention, which
/// Prometheus uses).
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// `GET|POST /api/v1/query`: `query`, `time` (default now), `timeout`, `limit`,
/// `lookback_delta`, `stats`.
pub(crate) async fn instant(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = crate::request_params(&method, &headers, raw_query, &body);
    let limit = crate::limit_param(&params)?;
    let time = crate::time_param(&params, "time", TimestampMs(crate::now_ms()))?;
    let engine = request_engine(&state.engine, &params)?;
    let query = params.get("query").unwrap_or_default();
    let output = engine
        .instant_query(state.storage.as_ref(), query, time.0)
        .await
        .map_err(|error| query_error(error, query))?;
    Ok(respond(output, limit, &params))
}

/// `GET|POST /api/v1/query_range`: `query`, `start`, `end`, `step`, `timeout`, `limit`,
/// `lookback_delta`, `stats`.
pub(crate) async fn range(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = crate::request_params(&method, &headers, raw_query, &body);
    let limit = crate::limit_param(&params)?;
    let start = required_time(&params, "start")?;
    let end = required_time(&params, "end")?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    let step_text = params.get("step").unwrap_or_default();
    let step_nanos = params::parse_duration_nanos(step_text)
        .map_err(|error| ApiError::invalid_param("step", error))?;
    if step_nanos <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // As Prometheus: the number of whole steps in the range, compared in nanoseconds.
    let range_nanos = i128::from(end.0 - start.0) * 1_000_000;
    if range_nanos / i128::from(step_nanos) > i128::from(MAX_POINTS_PER_SERIES) {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    // The store counts milliseconds: a step below one millisecond is one millisecond.
    let step_ms = (step_nanos / 1_000_000).max(1);
    let engine = request_engine(&state.engine, &params)?;
    let query = params.get("query").unwrap_or_default();
    let output = engine
        .range_query(state.storage.as_ref(), query, start.0, end.0, step_ms)
        .await
        .map_err(|error| query_error(error, query))?;
    Ok(respond(output, limit, &params))
}

/// A time that must be given (`start`, `end` of a range query), worded as Prometheus'
/// `parseTime`.
fn required_time(params: &Params, name: &str) -> Result<TimestampMs, ApiError> {
    let text = params.get(name).unwrap_or_default();
    params::parse_time(text).map_err(|error| ApiError::invalid_param(name, error))
}

/// The server's engine, or one with this request's `timeout` (never beyond the server's
/// own) and `lookback_delta`.
fn request_engine(engine: &Engine, params: &Params) -> Result<Engine, ApiError> {
    let timeout = match params.get("timeout") {
        None | Some("") => None,
        Some(text) => {
            let nanos = params::parse_duration_nanos(text)
                .map_err(|error| ApiError::invalid_param("timeout", error))?;
            Some(std::time::Duration::from_nanos(nanos.max(0) as u64))
        }
    };
    let lookback_delta_ms = match params.get("lookback_delta") {
        None | Some("") => None,
        Some(text) => {
            let nanos = params::parse_duration_nanos(text)
                .map_err(|error| ApiError::invalid_param("lookback_delta", error))?;
            // Zero or negative keeps the default, as in Prometheus.
            (nanos > 0).then(|| (nanos / 1_000_000).max(1))
        }
    };
    if timeout.is_none() && lookback_delta_ms.is_none() {
        return Ok(engine.clone());
    }
    let defaults = engine.options();
    Ok(Engine::new(EngineOptions {
        timeout: timeout.map_or(defaults.timeout, |timeout| timeout.min(defaults.timeout)),
        lookback_delta_ms: lookback_delta_ms.unwrap_or(defaults.lookback_delta_ms),
        ..defaults.clone()
    }))
}

/// Maps an evaluator error to Prometheus' `errorType`, status and wording.
fn query_error(error: QueryError, query: &str) -> ApiError {
    let status =
        |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match error {
        QueryError::Parse(parse) => {
            ApiError::invalid_param("query", crate::parse_error_text(query, &parse))
        }
        QueryError::BadRequest(message) => ApiError::invalid_param("query", message),
        QueryError::Canceled(_) => ApiError {
            status: status(CLIENT_CLOSED_REQUEST),
            error_type: error.error_type(),
            message: error.to_string(),
        },
        other => ApiError {
            status: status(other.class().http_status()),
            error_type: other.error_type(),
            message: other.to_string(),
        },
    }
}

/// The success envelope of a query: `resultType`, `result`, `stats` when asked for, then the
/// annotations.
fn respond(output: QueryOutput, limit: Option<usize>, params: &Params) -> Response {
    let QueryOutput {
        mut value,
        mut warnings,
        infos,
        stats,
    } = output;
    let truncated = match &mut value {
        QueryValue::Vector(samples) => crate::truncate_to_limit(samples, limit),
        QueryValue::Matrix(series) => crate::truncate_to_limit(series, limit),
        QueryValue::Scalar { .. } | QueryValue::String { .. } => Vec::new(),
    };
    warnings.extend(truncated);
    let mut data = String::with_capacity(crate::SUCCESS_START.len() + encoded_size(&value));
    data.push_str(crate::SUCCESS_START);
    data.push_str("{\"resultType\":\"");
    data.push_str(value.result_type());
    data.push_str("\",\"result\":");
    push_result(&mut data, &value);
    // Prometheus reports statistics for any non-empty `stats` (`stats=all` by convention).
    if params.get("stats").is_some_and(|stats| !stats.is_empty()) {
        data.push_str(",\"stats\":");
        push_stats(&mut data, &stats);
    }
    data.push('}');
    crate::success_started(
        data,
        &cap_annotations(warnings, "warning"),
        &cap_annotations(infos, "info"),
    )
}

/// About how many bytes [`push_result`] writes for `value`: room reserved at once instead of
/// a large body growing (and being copied) a dozen times.
fn encoded_size(value: &QueryValue) -> usize {
    match value {
        QueryValue::Scalar { .. } => POINT_SIZE,
        QueryValue::String { v, .. } => POINT_SIZE + v.len(),
        QueryValue::Vector(samples) => samples
            .iter()
            .map(|s| encoded_labels_size(&s.labels) + POINT_SIZE)
            .sum(),
        QueryValue::Matrix(series) => encoded_series_size(series),
    }
}

/// About how many bytes [`push_series_list`] writes for `series`.
fn encoded_series_size(series: &[lookout_promql::RangeSeries]) -> usize {
    series
        .iter()
        .map(|one| encoded_labels_size(&one.labels) + POINT_SIZE * one.points.len())
        .sum()
}

/// About how many bytes a label set takes in JSON.
pub(crate) fn encoded_labels_size(labels: &lookout_model::Labels) -> usize {
    labels
        .iter()
        .map(|label| label.name.len() + label.value.len() + 6)
        .sum::<usize>()
        + 32
}

/// About how many bytes one point takes: `[1435781451.781,"0.5432123456789012"]`, with its
/// comma (values of ratios and rates carry up to 17 digits).
const POINT_SIZE: usize = 40;

/// The first ten annotations of a kind, then `N more <kind> annotations omitted`.
fn cap_annotations(mut annotations: Vec<String>, kind: &str) -> Vec<String> {
    if annotations.len() > MAX_ANNOTATIONS {
        let omitted = annotations.len() - MAX_ANNOTATIONS;
        annotations.truncate(MAX_ANNOTATIONS);
        annotations.push(format!("{omitted} more {kind} annotations omitted"));
    }
    annotations
}

/// The `result` field: `[t,"v"]` for scalars and strings, a list of
/// `{"metric":{...},"value":[t,"v"]}` for vectors and of `{"metric":{...},"values":[...]}`
/// for matrices.
fn push_result(out: &mut String, value: &QueryValue) {
    match value {
        QueryValue::Scalar { t, v } => encode::push_scalar_point(out, *t, *v),
        QueryValue::String { t, v } => {
            out.push('[');
            encode::push_timestamp(out, *t);
            out.push(',');
            encode::push_string(out, v);
            out.push(']');
        }
        QueryValue::Vector(samples) => {
            out.push('[');
            for (index, sample) in samples.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                encode::push_labels(out, &sample.labels);
                out.push_str(",\"value\":");
                encode::push_point(out, sample.t, sample.v);
                out.push('}');
            }
            out.push(']');
        }
        QueryValue::Matrix(series) => {
            out.push('[');
            let points: usize = series.iter().map(|one| one.points.len()).sum();
            if points < PARALLEL_POINTS || series.len() < 2 {
                push_series_list(out, series);
            } else {
                // A large matrix is written in two halves at once, joined with a comma.
                let (first, second) = series.split_at(series.len() / 2);
                let ((), second) = lookout_storage::join(
                    || push_series_list(out, first),
                    || {
                        let mut text = String::with_capacity(encoded_series_size(second));
                        push_series_list(&mut text, second);
                        text
                    },
                );
                out.push(',');
                out.push_str(&second);
            }
            out.push(']');
        }
    }
}

/// Points of a matrix from which its text is written on two cores (about 40 ms of work on
/// one; a thread costs tens of microseconds).
const PARALLEL_POINTS: usize = 500_000;

/// `{"metric":{...},"values":[...]}` for each series, separated by commas.
fn push_series_list(out: &mut String, series: &[lookout_promql::RangeSeries]) {
    for (index, one) in series.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        encode::push_labels(out, &one.labels);
        out.push_str(",\"values\":[");
        for (point_index, point) in one.points.iter().enumerate() {
            if point_index > 0 {
                out.push(',');
            }
            encode::push_point(out, point.t, point.v);
        }
        out.push_str("]}");
    }
}

/// `stats` as Prometheus' `stats.BuiltinStats`: timings in seconds, then sample counts.
fn push_stats(out: &mut String, stats: &QueryStats) {
    let seconds = |nanos: u64| nanos as f64 / 1e9;
    let total = stats.prepare_nanos + stats.fetch_nanos + stats.eval_nanos;
    // Prometheus counts fetching series into the preparation phase.
    let timings = [
        ("evalTotalTime", seconds(total)),
        ("resultSortTime", 0.0),
        (
            "queryPreparationTime",
            seconds(stats.prepare_nanos + stats.fetch_nanos),
        ),
        ("innerEvalTime", seconds(stats.eval_nanos)),
        ("execQueueTime", 0.0),
        ("execTotalTime", seconds(total)),
    ];
    out.push_str("{\"timings\":{");
    for (index, (name, value)) in timings.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        encode::push_go_number(out, *value);
    }
    out.push_str("},\"samples\":{\"totalQueryableSamples\":");
    out.push_str(&stats.samples_loaded.to_string());
    out.push_str(",\"peakSamples\":");
    out.push_str(&stats.peak_samples.to_string());
    out.push_str("}}");
}

#[cfg(test)]
mod tests {
    use lookout_model::Labels;
    use lookout_promql::{InstantSample, Point, RangeSeries};

    use super::*;

    fn result(value: &QueryValue) -> String {
        let mut out = String::new();
        push_result(&mut out, value);
        out
    }

    #[test]
    fn results_are_written_as_prometheus_writes_them() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a<b")]).unwrap();
        assert_eq!(
            result(&QueryValue::Scalar {
                t: 1_435_781_451_781,
                v: 1.0
            }),
            r#"[1435781451.781,"1"]"#
        );
        assert_eq!(
            result(&QueryValue::String {
                t: 1_000,
                v: "a\"b".into()
            }),
            r#"[1,"a\"b"]"#
        );
        assert_eq!(
            result(&QueryValue::Vector(vec![InstantSample {
                labels: labels.clone(),
                t: 1_500,
                v: f64::NAN
            }])),
            r#"[{"metric":{"__name__":"up","job":"a\u003cb"},"value":[1.500,"NaN"]}]"#
        );
        assert_eq!(
            result(&QueryValue::Matrix(vec![RangeSeries {
                labels,
                points: vec![
                    Point { t: 0, v: 1e-9 },
                    Point {
                        t: 15_000,
                        v: -0.25
                    }
                ]
            }])),
            r#"[{"metric":{"__name__":"up","job":"a\u003cb"},"values":[[0,"1e-09"],[15,"-0.25"]]}]"#
        );
        assert_eq!(result(&QueryValue::Vector(Vec::new())), "[]");
    }

    #[test]
    fn stats_have_prometheus_shape() {
        let mut out = String::new();
        push_stats(
            &mut out,
            &QueryStats {
                samples_loaded: 12,
                peak_samples: 4,
                series_loaded: 3,
                prepare_nanos: 1_000,
                fetch_nanos: 2_000,
                eval_nanos: 500_000_000,
            },
        );
        assert_eq!(
            out,
            "{\"timings\":{\"evalTotalTime\":0.500003,\"resultSortTime\":0,\
             \"queryPreparationTime\":0.000003,\"innerEvalTime\":0.5,\"execQueueTime\":0,\
             \"execTotalTime\":0.500003},\"samples\":{\"totalQueryableSamples\":12,\
             \"peakSamples\":4}}"
        );
    }

    #[test]
    fn annotations_are_capped_at_ten() {
        let many: Vec<String> = (0..13).map(|n| format!("w{n}")).collect();
        let capped = cap_annotations(many, "warning");
        assert_eq!(capped.len(), 11);
        assert_eq!(capped[10], "3 more warning annotations omitted");
        assert_eq!(cap_annotations(vec!["x".into()], "info"), ["x"]);
    }

    #[test]
    fn errors_map_to_prometheus_types_and_statuses() {
        let error = query_error(
            QueryError::Parse(lookout_promql::ParseError::new(
                4,
                "unexpected end of input",
            )),
            "sum(",
        );
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "invalid parameter \"query\": 1:5: parse error: unexpected end of input"
        );
        let error = query_error(QueryError::Execution("boom".into()), "x");
        assert_eq!(
            (error.status.as_u16(), error.error_type),
            (422, "execution")
        );
        let error = query_error(QueryError::Timeout("query execution"), "x");
        assert_eq!((error.status.as_u16(), error.error_type), (503, "timeout"));
        let error = query_error(QueryError::Canceled("query execution"), "x");
        assert_eq!((error.status.as_u16(), error.error_type), (499, "canceled"));
    }
}
