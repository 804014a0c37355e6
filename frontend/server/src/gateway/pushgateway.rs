//! The standard Pushgateway API on the gateway port: `PUT|POST|DELETE
//! /metrics/job/<job>{/<label>/<value>}` (values `@base64` encoded where needed), as a
//! Pushgateway 1.x answers it: 200 for a push, 202 for a delete, 400 with the reason as text
//! (and `Err`) for a bad path or body. What a push does to its group, and why the groups are
//! only in memory, is told in `lookout_gateway::pushgateway`. Samples get no `ip` tag here:
//! the grouping key says where they come from.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lookout_gateway::lookout::Decoded;
use lookout_gateway::pushgateway::{self as decoder, PushError, PushMethod, PushPlan};
use lookout_model::TimestampMs;
use lookout_storage::WriteBatch;

use super::{
    decode_off_runtime, incoming, now_ms, refusal, refuse_body, write, GatewayState, Protocol,
};

/// `PUT`, `POST` and `DELETE /metrics/job/...`.
pub(super) async fn push(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let protocol = Protocol::Pushgateway;
    let method = match *request.method() {
        Method::PUT => PushMethod::Put,
        Method::POST => PushMethod::Post,
        _ => PushMethod::Delete,
    };
    let incoming = match incoming(&state, protocol, request).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    let rest = incoming.path.strip_prefix("/metrics/").unwrap_or("");
    let grouping = match decoder::grouping_key(rest) {
        Ok(grouping) => grouping,
        Err(error) => {
            state.stats.refused(protocol, "bad_path");
            return refusal(StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    // Pushes are applied one at a time, decoded under the lock so that their times increase.
    let mut groups = state.push_groups.lock().await;
    let now = groups.push_time(TimestampMs(now_ms()));
    let pushed = if method == PushMethod::Delete {
        Ok(WriteBatch::new())
    } else {
        let limits = state.limits;
        let body = incoming.body;
        let key = grouping.clone();
        decode_off_runtime(move || decoder::decode(&body, &key, now, &limits)).await
    };
    let pushed = match pushed {
        Ok(pushed) => pushed,
        Err(PushError::Body(error)) => return refuse_body(&state, protocol, &error),
        Err(error) => {
            state.stats.refused(protocol, "malformed_body");
            let plan = groups.plan_failure(&grouping, now);
            // The failure time is best effort: the answer is the 400 either way.
            if let Ok(plan) = store_plan(&state, plan).await {
                groups.commit(plan);
            }
            return refusal(StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    let plan = groups.plan(method, &grouping, pushed, now);
    match store_plan(&state, plan).await {
        Ok(plan) => {
            groups.commit(plan);
            if method == PushMethod::Delete {
                StatusCode::ACCEPTED.into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }
        Err(message) => refusal(StatusCode::SERVICE_UNAVAILABLE, &message),
    }
}

/// Writes a plan's batch; the plan (without its batch) to commit, or the failure.
async fn store_plan(state: &GatewayState, mut plan: PushPlan) -> Result<PushPlan, String> {
    let decoded = Decoded {
        batch: std::mem::take(&mut plan.batch),
        ..Decoded::default()
    };
    write(state, Protocol::Pushgateway, decoded).await?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err_header, harness, Harness};
    use lookout_model::is_stale_nan;
    use lookout_storage::Series;

    impl Harness {
        async fn push(&self, method: reqwest::Method, path: &str, body: &str) -> reqwest::Response {
            self.client
                .request(method, format!("{}{path}", self.base))
                .body(body.to_owned())
                .send()
                .await
                .unwrap()
        }
    }

    /// `labels -> last value`, "stale" for a stale marker.
    fn last_values(series: &[Series]) -> Vec<String> {
        series
            .iter()
            .map(|series| {
                let last = series.samples.last().unwrap().value;
                let value = if is_stale_nan(last) {
                    "stale".to_owned()
                } else {
                    last.to_string()
                };
                format!("{} {value}", series.labels)
            })
            .collect()
    }

    #[tokio::test]
    async fn put_post_delete_over_http() {
        let gateway = harness().await;
        let group = "/metrics/job/batch/instance@base64/aG9zdC8x";
        let put = gateway
            .push(
                reqwest::Method::PUT,
                group,
                "# TYPE a gauge\na{x=\"1\",instance=\"body\"} 1\na{x=\"2\"} 2\nb 3\n",
            )
            .await;
        assert_eq!(put.status(), 200);
        assert_eq!(put.text().await.unwrap(), "");
        let post = gateway
            .push(reqwest::Method::POST, group, "a{x=\"1\"} 10\n")
            .await;
        assert_eq!(post.status(), 200);
        let series = gateway.all_series().await;
        let values = last_values(&series);
        assert_eq!(
            values[..3],
            [
                r#"a{instance="host/1", job="batch", x="1"} 10"#,
                r#"a{instance="host/1", job="batch", x="2"} stale"#,
                r#"b{instance="host/1", job="batch"} 3"#,
            ]
        );
        let push_time = series
            .iter()
            .find(|series| series.labels.metric_name() == Some("push_time_seconds"))
            .unwrap();
        assert_eq!(push_time.samples.len(), 2);
        let seconds = push_time.samples[1].value;
        assert_eq!(
            (seconds * 1000.0).round() as i64,
            push_time.samples[1].timestamp.0
        );

        let put = gateway.push(reqwest::Method::PUT, group, "c 4\n").await;
        assert_eq!(put.status(), 200);
        let delete = gateway.push(reqwest::Method::DELETE, group, "").await;
        assert_eq!(delete.status(), 202);
        let values = last_values(&gateway.all_series().await);
        assert!(
            values.iter().all(|value| value.ends_with(" stale")),
            "{values:?}"
        );
        assert_eq!(values.len(), 6, "a x2, b, c, push_time, push_failure_time");
        assert!(gateway
            .metrics()
            .contains("lookout_gateway_requests_total{protocol=\"pushgateway\"} 4"));
    }

    #[tokio::test]
    async fn refusals_as_the_pushgateway_answers_them() {
        let gateway = harness().await;
        for (path, message) in [
            ("/metrics/job/j/9bad/x", "improper label name \"9bad\""),
            (
                "/metrics/job/j/k",
                "odd number of components in label string \"job/j/k\"",
            ),
            (
                "/metrics/instance/i",
                "the path must start with /metrics/job/<job>",
            ),
        ] {
            let refused = gateway.push(reqwest::Method::PUT, path, "a 1\n").await;
            assert_eq!(refused.status(), 400, "{path}");
            assert_eq!(err_header(&refused), message);
            assert_eq!(refused.text().await.unwrap(), message);
        }
        let refused = gateway
            .push(reqwest::Method::POST, "/metrics/job/t", "a 1\nb 1 1000\n")
            .await;
        assert_eq!(refused.status(), 400);
        assert_eq!(
            refused.text().await.unwrap(),
            "pushed metrics are invalid: pushed metrics must not have timestamps"
        );
        // Nothing of the body is stored; the failure time is.
        let values = last_values(&gateway.all_series().await);
        assert_eq!(values.len(), 2, "{values:?}");
        assert!(values[0].starts_with(r#"push_failure_time_seconds{job="t"} 1"#));
        assert_eq!(values[1], r#"push_time_seconds{job="t"} 0"#);
    }
}
