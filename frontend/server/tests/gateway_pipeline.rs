//! The gateway pipeline through the `lookout-server` binary: the cardinality budget
//! (`--gateway.max-active-series`) refuses new series with a reason in each protocol's answer
//! and in the self-metrics while existing series keep flowing, and common tags
//! (`--gateway.common-tag`) are added where the sender did not set them, telnet lines
//! included.

mod support;

use std::io::{Read, Write};

use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;
use std::time::{Duration, Instant};

use support::{free_port, prometheus_installed, start_prometheus, wait_ready, LookoutServer};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn remote_write(
    client: &reqwest::blocking::Client,
    url: &str,
    series: &[&[(&str, &str)]],
    t: i64,
) -> (u16, String) {
    let mut batch = WriteBatch::new();
    for pairs in series {
        batch.push(
            Labels::from_pairs(pairs.iter().copied()).unwrap(),
            vec![Sample::new(t, 1.0)],
        );
    }
    let body = lookout_gateway::remote_write::encode(&batch);
    let response = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
fn the_cardinality_budget_refuses_new_series_with_a_reason_and_common_tags_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &[
            "--gateway.max-active-series",
            "3",
            "--gateway.common-tag",
            "dc=gz",
            "--gateway.max-labels-per-series",
            "4",
        ],
    );
    let gateway = server.gateway();
    wait_ready(&client, &format!("{gateway}/datas"));
    let seconds = now_ms() / 1000;
    let put = |points: serde_json::Value| {
        let response = client
            .post(format!("{gateway}/api/put?details"))
            .json(&points)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().unwrap())
    };

    // Two new series; the sender's dc wins over the common tag.
    let (status, answer) = put(serde_json::json!([
        {"metric": "pipeline_a", "timestamp": seconds, "value": 1, "tags": {"host": "h1"}},
        {"metric": "pipeline_b", "timestamp": seconds, "value": 1, "tags": {"dc": "sender"}},
    ]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], 2, "{answer}");

    // Remote write on the gateway port: the third series fits, the fourth is refused and
    // the answer says why.
    let write_url = format!("{gateway}/api/v1/write");
    let (status, text) = remote_write(
        &client,
        &write_url,
        &[&[("__name__", "pipeline_c")], &[("__name__", "pipeline_d")]],
        now_ms(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("pipeline_d") && text.contains("cardinality budget of 3"),
        "{text}"
    );

    // Full: an existing series is written, a new one refused with the reason in the details.
    let (status, answer) = put(serde_json::json!([
        {"metric": "pipeline_a", "timestamp": seconds + 1, "value": 2, "tags": {"host": "h1"}},
        {"metric": "pipeline_e", "timestamp": seconds + 1, "value": 2, "tags": {"host": "h1"}},
    ]));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["success"], 1, "{answer}");
    assert_eq!(answer["failed"], 1, "{answer}");
    let error = answer["errors"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("series_limit") && error.contains("pipeline_e"),
        "{answer}"
    );

    // Telnet lines go through the same pipeline: with the common tag this is the existing
    // series pipeline_a (without it, it would be a new series and refused).
    let mut telnet = std::net::TcpStream::connect(("127.0.0.1", server.telnet_port)).unwrap();
    write!(telnet, "put pipeline_a {} 3 host=h1\nexit\n", seconds + 2).unwrap();
    let mut answer = String::new();
    telnet.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "", "telnet answers only errors");

    // The budget is the store's: the query port's receiver is held to it too.
    let (status, text) = remote_write(
        &client,
        &format!("{}/api/v1/write", server.api()),
        &[&[("__name__", "pipeline_f")]],
        now_ms(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("cardinality budget of 3"), "{text}");

    let series: serde_json::Value = client
        .get(format!("{}/api/v1/series", server.api()))
        .query(&[("match[]", "{__name__=~\"pipeline_.+\"}")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let series = series["data"].as_array().unwrap().clone();
    let names: Vec<&str> = series
        .iter()
        .map(|labels| labels["__name__"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pipeline_a", "pipeline_b", "pipeline_c"]);
    assert_eq!(series[0]["dc"], "gz");
    assert_eq!(series[0]["host"], "h1");
    assert_eq!(series[1]["dc"], "sender", "the sender's tag wins");
    assert_eq!(
        series[2]["dc"], "gz",
        "remote write gets the common tags too"
    );
    let answer: serde_json::Value = client
        .get(format!("{}/api/v1/query", server.api()))
        .query(&[
            ("query", "pipeline_a"),
            ("time", &(seconds + 2).to_string()),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "3", "{answer}");

    // Labels beyond the limit (common tags count): refused with the reason, before the budget.
    let wide: &[(&str, &str)] = &[
        ("__name__", "pipeline_wide"),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
    ];
    let (status, text) = remote_write(&client, &write_url, &[wide], now_ms());
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("invalid_labels") && text.contains("pipeline_wide"),
        "{text}"
    );

    // Requests the receiver refuses whole are counted for the protocol too.
    let unsupported = client
        .post(&write_url)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(unsupported.status().as_u16(), 415);
    let malformed = client
        .post(&write_url)
        .header("Content-Type", "application/x-protobuf")
        .body("not snappy")
        .send()
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);

    let metrics = client
        .get(format!("{}/metrics", server.api()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "lookout_gateway_samples_rejected_total{protocol=\"opentsdb_http\",reason=\"series_limit\"} 1",
        "lookout_gateway_samples_accepted_total{protocol=\"opentsdb_http\"} 3",
        "lookout_gateway_samples_rejected_total{protocol=\"remote_write\",reason=\"series_limit\"} 1",
        "lookout_gateway_samples_accepted_total{protocol=\"remote_write\"} 1",
        "lookout_gateway_requests_total{protocol=\"remote_write\"} 4",
        "lookout_gateway_requests_refused_total{protocol=\"remote_write\",reason=\"unsupported_media_type\"} 1",
        "lookout_gateway_requests_refused_total{protocol=\"remote_write\",reason=\"malformed_body\"} 1",
        "lookout_gateway_samples_rejected_total{protocol=\"remote_write\",reason=\"invalid_labels\"} 1",
        "lookout_gateway_samples_accepted_total{protocol=\"opentsdb_telnet\"} 1",
        "lookout_tsdb_samples_rejected_total{reason=\"series_limit\"} 3",
        "lookout_tsdb_head_series_limit 3",
        "lookout_tsdb_head_series 3",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

/// The value of the sample line starting with `series ` in a text exposition.
fn sample_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn a_real_prometheus_keeps_writing_its_existing_series_under_the_budget() {
    if !prometheus_installed() {
        println!("SKIPPED: `prometheus` is not on PATH (apt-get install prometheus; .ci/run does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let lookout = LookoutServer::start(
        &dir.path().join("lookout"),
        &[
            "--gateway.max-active-series",
            "40",
            "--gateway.common-tag",
            "dc=gz",
        ],
    );
    let prometheus_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prometheus_port}']\n\
         remote_write:\n  - url: {}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
        lookout.gateway()
    );
    let _prometheus = start_prometheus(
        &client,
        dir.path(),
        prometheus_port,
        &config,
        &["--storage.remote.flush-deadline=5s"],
    );
    let metrics = || {
        client
            .get(format!("{}/metrics", lookout.api()))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let refused_series =
        "lookout_gateway_samples_rejected_total{protocol=\"remote_write\",reason=\"series_limit\"}";
    let accepted = "lookout_gateway_samples_accepted_total{protocol=\"remote_write\"}";
    // Prometheus' own metrics are hundreds of series: the budget fills and refuses the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    let accepted_when_full = loop {
        let text = metrics();
        let full = sample_value(&text, "lookout_tsdb_head_series") == Some(40.0)
            && sample_value(&text, refused_series).unwrap_or(0.0) > 0.0;
        if full {
            break sample_value(&text, accepted).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the budget did not fill within 60 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // The series held keep receiving samples; no new series gets in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics();
        assert_eq!(sample_value(&text, "lookout_tsdb_head_series"), Some(40.0));
        if sample_value(&text, accepted).unwrap() >= accepted_when_full + 80.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "existing series stopped flowing (accepted {accepted_when_full} when full):\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let series: serde_json::Value = client
        .get(format!("{}/api/v1/series", lookout.api()))
        .query(&[("match[]", "{__name__=~\".+\"}")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let series = series["data"].as_array().unwrap();
    assert_eq!(series.len(), 40);
    assert!(
        series.iter().all(|labels| labels["dc"] == "gz"),
        "every series has the common tag: {series:?}"
    );
}
