//! Metricbeat 6 on the gateway: enough of Elasticsearch for `output.elasticsearch` (spec §3.5),
//! under SOFALookout's base path `/beat` and at the root.
//!
//! | route | answer |
//! |---|---|
//! | `GET /beat`, `GET /` | the fake cluster info of the original (`lookout-gateway`, version 5.3.2) |
//! | `GET`, `HEAD /beat/_template/{name}`, `/_template/{name}` | 200 `{}`: the template "exists", so beats do not upload one (the original's 202 made them fail, §13.3) |
//! | `PUT /beat/_template/{name}`, `/_template/{name}` | 200 `{"acknowledged":true}` |
//! | `GET`, `HEAD /beat/_cat/health`, `/_cat/health` | 200, one green single-node line (rsyslog's omelasticsearch probes it before it resumes after a failure) |
//! | `POST`, `PUT /beat/_bulk`, `/_bulk` | 200 `{"took":..,"errors":..,"items":[...]}` with one item per action |
//!
//! `/beat/_bulk` keeps the original's token rule (`Authorization: Basic` with user `lookout`
//! and the token as password, or `X-Lookout-Token`); `/_bulk` needs none. A document that is
//! skipped as a whole (not a JSON object, or no usable `@timestamp`: a log record, not a
//! metric document) is counted and answered as Elasticsearch answers a document it cannot
//! index: that item has status 400 and a `mapper_parsing_exception`, and `errors` is true, so
//! the sender knows it was not stored (Metricbeat and rsyslog drop such items rather than
//! retry them; rsyslog can write them to its error file). A storage failure is a 503, which
//! senders retry. Samples the storage rejects (a second value for a series and 10 s slot, for
//! one) are counted in `lookout_gateway_samples_rejected_total`, not reported per item: the
//! storage does not say which document they came from.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lookout_gateway::lookout::{Enrichment, Tags};
use lookout_gateway::metricbeat::{self as decoder, BulkAction, BulkDecoded};
use serde_json::{json, Value};

use super::{
    checked_token, decode_off_runtime, incoming, refusal, refuse_body, request_refusal, write,
    GatewayState, Protocol,
};

/// The original's constant cluster info.
const ES_INFO: &str = r#"{"name":"lookout","cluster_name":"lookout-gateway","cluster_uuid":"lKdNC-gqS-meA2ALMl0_4w","version":{"number":"5.3.2","build_hash":"3068195","build_date":"2017-04-24T16:15:59.481Z","build_snapshot":false,"lucene_version":"6.4.2"},"tagline":"You Know, for Search"}"#;

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /beat`, `GET /`.
pub(super) async fn info() -> Response {
    json_response(StatusCode::OK, ES_INFO.to_owned())
}

/// `GET`/`HEAD .../_template/{name}`.
pub(super) async fn template_exists() -> Response {
    json_response(StatusCode::OK, "{}".to_owned())
}

/// `PUT .../_template/{name}`.
pub(super) async fn template_put() -> Response {
    json_response(StatusCode::OK, r#"{"acknowledged":true}"#.to_owned())
}

/// `GET`/`HEAD .../_cat/health`: what `_cat/health` of a healthy one-node cluster prints.
pub(super) async fn cat_health() -> Response {
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let (hours, minutes, seconds) = ((epoch / 3600) % 24, (epoch / 60) % 60, epoch % 60);
    let line = format!(
        "{epoch} {hours:02}:{minutes:02}:{seconds:02} lookout-gateway green 1 1 0 0 0 0 0 0 - 100.0%\n"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        line,
    )
        .into_response()
}

/// `POST`/`PUT /beat/_bulk` and `/_bulk`.
pub(super) async fn bulk(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let protocol = Protocol::Metricbeat;
    let started = Instant::now();
    let incoming = match incoming(&state, protocol, request).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if incoming.path.starts_with("/beat/") {
        let checked = checked_token(&state.tokens, &incoming.headers);
        if let Err(error) = checked {
            let (reason, response) = request_refusal(&error);
            state.stats.refused(protocol, reason);
            return response;
        }
    }
    let enrichment = Enrichment {
        client_ip: incoming.peer_ip.clone(),
        extra_tags: Tags::new(),
    };
    let limits = state.limits;
    let body = incoming.body;
    let decoded =
        decode_off_runtime(move || decoder::decode_bulk(&body, &enrichment, &limits)).await;
    let BulkDecoded { decoded, actions } = match decoded {
        Ok(decoded) => decoded,
        Err(error) => return refuse_body(&state, protocol, &error),
    };
    if let Err(message) = write(&state, protocol, decoded).await {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, &message);
    }
    let items: Vec<Value> = actions.iter().map(item).collect();
    let answer = json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": actions.iter().any(|action| action.error.is_some()),
        "items": items,
    });
    json_response(StatusCode::OK, answer.to_string())
}

/// An Elasticsearch bulk item for one action.
fn item(action: &BulkAction) -> Value {
    let (status, result) = match action.action.as_str() {
        "index" | "create" => (201, "created"),
        "update" => (200, "updated"),
        _ => (200, "deleted"),
    };
    let mut outcome = match &action.error {
        None => json!({"status": status, "result": result, "_version": 1}),
        Some(reason) => json!({
            "status": 400,
            "error": {
                "type": "mapper_parsing_exception",
                "reason": format!("document not stored by Lookout: {reason}"),
            },
        }),
    };
    if let Some(index) = &action.index {
        outcome["_index"] = Value::from(index.as_str());
    }
    if let Some(doc_type) = &action.doc_type {
        outcome["_type"] = Value::from(doc_type.as_str());
    }
    json!({ action.action.as_str(): outcome })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err_header, fixtures, harness};
    use super::*;

    #[tokio::test]
    async fn es_emulation_routes() {
        let gateway = harness().await;
        for path in ["/beat", "/"] {
            let info = gateway
                .client
                .get(format!("{}{path}", gateway.base))
                .send()
                .await
                .unwrap();
            assert_eq!(info.status(), 200);
            let answer: Value = info.json().await.unwrap();
            assert_eq!(answer["cluster_name"], "lookout-gateway");
            assert_eq!(answer["version"]["number"], "5.3.2");
            if let Some(dir) = fixtures() {
                let expected: Value = serde_json::from_slice(
                    &std::fs::read(dir.join("metricbeat-es-info-response.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(answer, expected);
            }
        }
        for path in ["/beat/_template/metricbeat-6.2.3", "/_template/metricbeat"] {
            let url = format!("{}{path}", gateway.base);
            let head = gateway.client.head(&url).send().await.unwrap();
            assert_eq!(head.status(), 200);
            let put = gateway.client.put(&url).body("{}").send().await.unwrap();
            assert_eq!(put.status(), 200);
            assert_eq!(put.text().await.unwrap(), r#"{"acknowledged":true}"#);
        }
    }

    #[tokio::test]
    async fn bulk_with_the_fixture() {
        let Some(dir) = fixtures() else { return };
        let gateway = harness().await;
        let body = std::fs::read(dir.join("metricbeat-bulk.ndjson")).unwrap();
        let url = format!("{}/beat/_bulk", gateway.base);
        let refused = gateway
            .client
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        assert_eq!(err_header(&refused), "token is empty");

        let response = gateway
            .client
            .post(&url)
            .header("Content-Type", "application/x-ndjson")
            // lookout:my-token
            .header("Authorization", "Basic bG9va291dDpteS10b2tlbg==")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        // The fixture's shape, with one item per action instead of none.
        let constant: Value = serde_json::from_slice(
            &std::fs::read(dir.join("metricbeat-bulk-response.json")).unwrap(),
        )
        .unwrap();
        for key in constant.as_object().unwrap().keys() {
            assert!(answer.get(key).is_some(), "{key} missing from {answer}");
        }
        assert_eq!(answer["errors"], false);
        assert_eq!(
            answer["items"][0],
            json!({"index": {"_index": "metricbeat-6.2.3-2018.03.29", "_type": "doc",
                             "status": 201, "result": "created", "_version": 1}})
        );
        assert_eq!(answer["items"].as_array().unwrap().len(), 2);
        let series = gateway.all_series().await;
        assert_eq!(series.len(), 12);
        let idle = series
            .iter()
            .find(|series| series.labels.metric_name() == Some("system.cpu.idle.pct"))
            .unwrap();
        assert_eq!(
            idle.labels.to_string(),
            r#"system.cpu.idle.pct{hostname="moby", ip="127.0.0.1", module="system", name="moby", version="6.2.3"}"#
        );
        assert_eq!(idle.samples[0].timestamp.0, 1_522_312_050_000);
        assert!(gateway
            .metrics()
            .contains("lookout_gateway_samples_accepted_total{protocol=\"metricbeat\"} 12"));

        // The root route needs no token.
        let root = gateway
            .client
            .post(format!("{}/_bulk", gateway.base))
            .body("{\"index\":{}}\n{\"@timestamp\":\"2018-03-29T08:27:41Z\",\"m\":{\"v\":1}}\n")
            .send()
            .await
            .unwrap();
        assert_eq!(root.status(), 200);
        assert_eq!(gateway.all_series().await.len(), 13);
    }

    /// rsyslog's omelasticsearch: `_cat/health` before it resumes, and its default template
    /// (a log record, no `@timestamp`) answered as an item Elasticsearch could not index.
    #[tokio::test]
    async fn log_records_are_item_errors_and_cat_health_answers() {
        let gateway = harness().await;
        for path in ["/_cat/health", "/beat/_cat/health"] {
            let url = format!("{}{path}", gateway.base);
            let health = gateway.client.get(&url).send().await.unwrap();
            assert_eq!(health.status(), 200);
            assert!(health.text().await.unwrap().contains(" green "));
            assert_eq!(
                gateway.client.head(&url).send().await.unwrap().status(),
                200
            );
        }
        let body = concat!(
            "{\"index\":{\"_index\":\"system-2024.01.01\",\"_type\":\"events\"}}\n",
            "{\"message\":\"hello\",\"fromhost\":\"h\",\"timereported\":\"2024-01-01T00:00:07Z\"}\n",
            "{\"index\":{\"_index\":\"metricbeat-6.8.23-2018.03.29\",\"_type\":\"doc\"}}\n",
            "{\"@timestamp\":\"2018-03-29T08:27:41Z\",\"rsyslog\":{\"size\":2}}\n",
        );
        let response = gateway
            .client
            .post(format!("{}/_bulk", gateway.base))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["errors"], true, "{answer}");
        let items = answer["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{answer}");
        assert_eq!(items[0]["index"]["status"], 400, "{answer}");
        assert_eq!(items[0]["index"]["_type"], "events", "{answer}");
        assert_eq!(
            items[0]["index"]["error"]["type"], "mapper_parsing_exception",
            "{answer}"
        );
        assert_eq!(items[1]["index"]["status"], 201, "{answer}");
        // The metric document is stored even though the log record beside it is not.
        assert_eq!(gateway.all_series().await.len(), 1);
        assert!(gateway.metrics().contains(
            "lookout_gateway_samples_rejected_total{protocol=\"metricbeat\",reason=\"invalid_time\"} 1"
        ));
    }
}
