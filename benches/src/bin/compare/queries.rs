//! The fixed query set, one HTTP call of it against one target, and a summary of the answer
//! that lets the tool check that the targets agree before comparing their speed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::data::Dataset;

/// Range-query lengths with their steps: about 240-360 points each, as a dashboard asks.
const RANGES: [(&str, i64, i64); 3] = [("1h", 3_600, 15), ("6h", 21_600, 60), ("24h", 86_400, 300)];

/// One HTTP call of the query set.
#[derive(Debug, Clone)]
pub enum Call {
    /// `/api/v1/query_range`.
    Range {
        query: String,
        start_s: i64,
        end_s: i64,
        step_s: i64,
    },
    /// `/api/v1/series` with one `match[]`.
    Series {
        matcher: String,
        start_s: i64,
        end_s: i64,
    },
    /// `/api/v1/label/<name>/values`.
    LabelValues {
        name: String,
        start_s: i64,
        end_s: i64,
    },
}

/// A named call of the query set.
#[derive(Debug, Clone)]
pub struct QueryCase {
    /// Short name for the table, e.g. `range/sum_by_rate/6h`.
    pub name: String,
    /// What to send.
    pub call: Call,
}

/// The query set over `dataset`: each PromQL query as a range query over the last 1 h, 6 h and
/// 24 h (ending at the last whole minute of the data), then `series` and label-values calls.
pub fn query_set(dataset: &Dataset) -> Vec<QueryCase> {
    let end_s = dataset.last_ms.div_euclid(60_000) * 60;
    let instance = &dataset.first_instance;
    let promql = [
        (
            "single_series",
            format!("node_cpu_seconds_total{{instance=\"{instance}\",cpu=\"0\",mode=\"idle\"}}"),
        ),
        (
            "sum_by_rate",
            "sum by (mode) (rate(node_cpu_seconds_total[5m]))".to_owned(),
        ),
        (
            "regex_sum_by",
            "sum by (instance) (rate(node_network_receive_bytes_total{device=~\"eth.*\"}[5m]))"
                .to_owned(),
        ),
        (
            "topk",
            "topk(5, rate(node_network_receive_bytes_total[5m]))".to_owned(),
        ),
        (
            "histogram_quantile",
            "histogram_quantile(0.99, sum by (le, handler) \
             (rate(http_request_duration_seconds_bucket[5m])))"
                .to_owned(),
        ),
        (
            "ratio",
            "node_filesystem_avail_bytes / node_filesystem_size_bytes".to_owned(),
        ),
    ];
    let mut cases = Vec::new();
    for (name, query) in &promql {
        for (range_name, range_s, step_s) in RANGES {
            cases.push(QueryCase {
                name: format!("range/{name}/{range_name}"),
                call: Call::Range {
                    query: query.clone(),
                    start_s: end_s - range_s,
                    end_s,
                    step_s,
                },
            });
        }
    }
    let six_hours_ago = end_s - 21_600;
    cases.push(QueryCase {
        name: "series/one_cluster_cpu/6h".to_owned(),
        call: Call::Series {
            matcher: format!(
                "node_cpu_seconds_total{{cluster=\"{}\"}}",
                dataset.first_cluster
            ),
            start_s: six_hours_ago,
            end_s,
        },
    });
    cases.push(QueryCase {
        name: "series/regex_name/6h".to_owned(),
        call: Call::Series {
            matcher: "{__name__=~\"http_request_duration_seconds_(sum|count)\"}".to_owned(),
            start_s: six_hours_ago,
            end_s,
        },
    });
    for label in ["instance", "__name__"] {
        cases.push(QueryCase {
            name: format!("label_values/{label}/6h"),
            call: Call::LabelValues {
                name: label.to_owned(),
                start_s: six_hours_ago,
                end_s,
            },
        });
    }
    cases
}

/// The shape of an answer, enough to tell whether two targets answered the same thing.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Series (or label values) in the answer.
    pub series: usize,
    /// Points over all series.
    pub points: usize,
    /// Sum of all finite values.
    pub value_sum: f64,
}

impl Summary {
    /// Whether `other` is the same answer up to `tolerance` (relative) in points and values:
    /// the systems' `rate` extrapolation and quantile interpolation differ slightly.
    pub fn agrees_with(&self, other: &Summary, tolerance: f64) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1e-9);
        self.series == other.series
            && close(self.points as f64, other.points as f64)
            && close(self.value_sum, other.value_sum)
    }
}

/// Runs `case` once against the target at `base_url`; the time is the whole HTTP exchange,
/// body included.
pub fn run(
    client: &reqwest::blocking::Client,
    base_url: &str,
    case: &QueryCase,
) -> anyhow::Result<(Duration, Summary)> {
    let request = match &case.call {
        Call::Range {
            query,
            start_s,
            end_s,
            step_s,
        } => client
            .post(format!("{base_url}/api/v1/query_range"))
            .form(&[
                ("query", query.clone()),
                ("start", start_s.to_string()),
                ("end", end_s.to_string()),
                ("step", step_s.to_string()),
            ]),
        Call::Series {
            matcher,
            start_s,
            end_s,
        } => client.post(format!("{base_url}/api/v1/series")).form(&[
            ("match[]", matcher.clone()),
            ("start", start_s.to_string()),
            ("end", end_s.to_string()),
        ]),
        Call::LabelValues {
            name,
            start_s,
            end_s,
        } => client
            .get(format!("{base_url}/api/v1/label/{name}/values"))
            .query(&[("start", start_s.to_string()), ("end", end_s.to_string())]),
    };
    let started = Instant::now();
    let response = request
        .send()
        .with_context(|| format!("{}: sending", case.name))?;
    let status = response.status();
    let body = response
        .bytes()
        .with_context(|| format!("{}: reading the answer", case.name))?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!(
            "{}: {status}: {}",
            case.name,
            String::from_utf8_lossy(&body).trim()
        );
    }
    let json: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{}: the answer is not JSON", case.name))?;
    Ok((elapsed, summarize(&json["data"])))
}

/// Runs an instant query and returns its single value (e.g. a `count(...)`), or `None` when
/// the answer is empty.
pub fn instant_value(
    client: &reqwest::blocking::Client,
    base_url: &str,
    query: &str,
    time_ms: i64,
) -> anyhow::Result<Option<f64>> {
    let time = format!(
        "{}.{:03}",
        time_ms.div_euclid(1000),
        time_ms.rem_euclid(1000)
    );
    let response = client
        .post(format!("{base_url}/api/v1/query"))
        .form(&[("query", query), ("time", time.as_str())])
        .send()?;
    let status = response.status();
    let json: Value = response.json()?;
    if !status.is_success() {
        bail!("{status}: {json}");
    }
    let value = json["data"]["result"]
        .get(0)
        .and_then(|series| series["value"].get(1))
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok());
    Ok(value)
}

fn summarize(data: &Value) -> Summary {
    let parse = |point: &Value| {
        point
            .get(1)
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|value| value.is_finite())
            .unwrap_or(0.0)
    };
    if let Some(items) = data.as_array() {
        // `series` (label sets) or label values.
        return Summary {
            series: items.len(),
            points: items.len(),
            value_sum: 0.0,
        };
    }
    let result = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut summary = Summary {
        series: result.len(),
        points: 0,
        value_sum: 0.0,
    };
    for series in result {
        if let Some(points) = series["values"].as_array() {
            summary.points += points.len();
            summary.value_sum += points.iter().map(parse).sum::<f64>();
        } else if series.get("value").is_some() {
            summary.points += 1;
            summary.value_sum += parse(&series["value"]);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_matrices_and_lists() {
        let matrix = serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1, "1.5"], [2, "NaN"], [3, "2"]]},
            {"metric": {}, "values": [[1, "4"]]}
        ]});
        let summary = summarize(&matrix);
        assert_eq!((summary.series, summary.points), (2, 4));
        assert_eq!(summary.value_sum, 7.5);
        let list = serde_json::json!(["a", "b"]);
        assert_eq!(summarize(&list).series, 2);
    }

    #[test]
    fn agreement_allows_small_relative_differences_only() {
        let a = Summary {
            series: 3,
            points: 100,
            value_sum: 1000.0,
        };
        let close = Summary {
            value_sum: 1005.0,
            ..a
        };
        let far = Summary {
            value_sum: 1100.0,
            ..a
        };
        let fewer = Summary { series: 2, ..a };
        assert!(a.agrees_with(&close, 0.01));
        assert!(!a.agrees_with(&far, 0.01));
        assert!(!a.agrees_with(&fewer, 0.01));
    }
}
