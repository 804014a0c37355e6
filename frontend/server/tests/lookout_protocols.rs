//! SOFALookout's push protocols through the `lookout-server` binary: an SDK report to
//! `/datas` and a Prometheus push to `/prom/metrics/...` on the gateway port, read back
//! through the query API on the API port, and counted in its `/metrics`.

mod support;

use support::{wait_ready, LookoutServer};

fn query(client: &reqwest::blocking::Client, port: u16, promql: &str) -> serde_json::Value {
    client
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn sdk_reports_and_prometheus_pushes_are_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(&dir.path().join("data"), &[]);
    let api_port = server.api_port;
    let gateway = server.gateway();
    wait_ready(&client, &format!("{gateway}/datas"));

    // What the Java SDK sends: TAB-joined measurements, time with an offset.
    let now_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let measurement = |service: &str, count: u32| {
        format!(
            r#"{{"time":{},"tags":{{"app":"demo","_type_":"c","service":"{service}"}},"http_requests_total":{{"count":{count},"rate":0.4}}}}"#,
            now_seconds * 1000
        )
    };
    let body = format!("{}\t{}", measurement("order", 12), measurement("pay", 5));
    let response = client
        .post(format!("{gateway}/datas"))
        .header("app", "demo")
        .header("Client-Ip", "10.0.0.1")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let answer = query(
        &client,
        api_port,
        r#"http_requests_total.count{service="order"}"#,
    );
    let result = &answer["data"]["result"];
    assert_eq!(result.as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(result[0]["metric"]["ip"], "10.0.0.1");
    assert_eq!(result[0]["metric"]["app"], "demo");
    assert_eq!(result[0]["value"][1], "12");

    let pushed = client
        .post(format!("{gateway}/prom/metrics/job/batch/app/demo/step/10"))
        .header("X-Lookout-Token", "t")
        .body("# TYPE jobs_done counter\njobs_done{queue=\"a b\",} 7\n")
        .send()
        .unwrap();
    assert_eq!(pushed.status().as_u16(), 202);
    let answer = query(&client, api_port, "jobs_done");
    let result = &answer["data"]["result"];
    assert_eq!(result.as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(result[0]["metric"]["queue"], "a_b");
    assert_eq!(result[0]["metric"]["job"], "batch");
    assert_eq!(result[0]["metric"]["ip"], "127.0.0.1");
    assert_eq!(result[0]["value"][1], "7");

    let metrics = client
        .get(format!("http://127.0.0.1:{api_port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "lookout_gateway_requests_total{protocol=\"lookout_sdk\"} 1",
        "lookout_gateway_samples_accepted_total{protocol=\"lookout_sdk\"} 4",
        "lookout_gateway_samples_accepted_total{protocol=\"prometheus_push\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}
