//! Metricbeat 6 on the gateway: enough of Elasticsearch for `output.elasticsearch` (spec §3.5),
//! under SOFALookout's base path `/beat` and at the root.
//!
//! | route | answer |
//! |---|---|
//! | `GET /beat`, `GET /` | the fake cluster info of the original (`lookout-gateway`, version 5.3.2) |
//! | `GET`, `HEAD /beat/_template/{name}`, `/_template/{name}` | 200 `{}`: the template "exists", so beats do not upload one (the original's 202 made them fail, §13.3) |
//! | `PUT /beat/_template/{name}`, `/_template/{name}` | 200 `{"acknowledged":true}` |
//! | `POST`, `PUT /beat/_bulk`, `/_bulk` | 200 `{"took":..,"errors":false,"items":[...]}` with one item per action |
//!
//! `/beat/_bulk` keeps the original's token rule (`Authorization: Basic` with user `lookout`
//! and the token as password, or `X-Lookout-Token`); `/_bulk` needs none. Documents that do
//! not decode are skipped and counted, not reported as item errors, so a beat never retries
//! them forever; a storage failure is a 503, which beats retry.

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
        "errors": false,
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
    let mut outcome = json!({"status": status, "result": result, "_version": 1});
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
}
