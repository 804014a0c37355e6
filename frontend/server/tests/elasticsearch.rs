//! `lookout-server --storage es` against the real Elasticsearch stand-ins (`noida`: ES 8
//! dialect, `osmem`: OpenSearch), started by `../shared/peers/peers.sh` on free loopback
//! ports: SOFALookout's own bulk body (`../shared/testdata/lookout/es-bulk-request.ndjson`)
//! written straight into the cluster is queryable through PromQL; the gateway answers 503
//! while the cluster is down (never a 2xx for samples it could not store) and resumes when it
//! is back; a gateway-only process writes to the cluster another server reads from;
//! `--es-no-pushdown` switches aggregation pushdown off (same answers, `/metrics` tells).
//! Each test skips with a printed reason when ../shared or the stand-ins are missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{free_port, LookoutServer};

/// A stand-in started with `peers.sh`, stopped when dropped.
struct EsPeer {
    kind: &'static str,
    port: u16,
    pid: String,
    script: PathBuf,
    dir: tempfile::TempDir,
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

impl EsPeer {
    fn start(kind: &'static str) -> Option<EsPeer> {
        let script = shared().join("peers/peers.sh");
        if !script.is_file() {
            eprintln!("SKIPPED: ../shared/peers/peers.sh is absent");
            return None;
        }
        let mut peer = EsPeer {
            kind,
            port: 0,
            pid: String::new(),
            script,
            dir: tempfile::tempdir().unwrap(),
        };
        for _attempt in 0..3 {
            peer.port = free_port();
            match peer.launch() {
                Ok(()) => return Some(peer),
                Err(stderr) if stderr.contains("not installed") => {
                    eprintln!("SKIPPED: the {kind} stand-in is not installed: {stderr}");
                    return None;
                }
                Err(stderr) => eprintln!("{kind} did not start, trying another port: {stderr}"),
            }
        }
        panic!("{kind} is installed but did not start");
    }

    fn launch(&mut self) -> Result<(), String> {
        let output = Command::new("bash")
            .arg(&self.script)
            .args(["start", self.kind, &self.port.to_string()])
            .arg(self.dir.path())
            .output()
            .unwrap();
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        self.pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(())
    }

    fn stop(&mut self) {
        if !self.pid.is_empty() {
            let _ = Command::new("bash")
                .arg(&self.script)
                .args(["stop", &self.pid])
                .output();
            self.pid.clear();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.launch().expect("the stand-in restarts on its port");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for EsPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server in ES mode with a short retry budget and immediate refresh.
fn start_server(peer: &EsPeer, dir: &Path, extra: &[&str]) -> LookoutServer {
    let config = dir.join("lookout.toml");
    std::fs::write(
        &config,
        "[storage]\nbackend = \"es\"\n[storage.es]\nretry_budget = \"1s\"\nrefresh = \"true\"\n\
         shards = 1\n",
    )
    .unwrap();
    let url = peer.url();
    let mut args = vec!["--config.file", config.to_str().unwrap(), "--es-url", &url];
    args.extend_from_slice(extra);
    LookoutServer::start(&dir.join("data"), &args)
}

fn query(server: &LookoutServer, promql: &str, time_s: f64) -> Vec<serde_json::Value> {
    let answer: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/query", server.api()))
        .query(&[("query", promql), ("time", &time_s.to_string())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    answer["data"]["result"].as_array().unwrap().clone()
}

fn sofalookout_fixture_is_queryable(kind: &'static str) {
    let fixture = shared().join("testdata/lookout/es-bulk-request.ndjson");
    let Ok(text) = std::fs::read_to_string(&fixture) else {
        eprintln!("SKIPPED: {} is absent", fixture.display());
        return;
    };
    let Some(peer) = EsPeer::start(kind) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&peer, dir.path(), &[]);
    // SOFALookout's gateway body, made typeless (§6.4: ES 7+ refuses `_type`), sent straight
    // to the cluster: the documents land through the write alias exactly as SOFALookout's
    // exporter writes them.
    let mut body = String::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(action) = value.get_mut("index").and_then(|a| a.as_object_mut()) {
            action.remove("_type");
        }
        body.push_str(&value.to_string());
        body.push('\n');
    }
    let answer: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/_bulk?refresh=true", peer.url()))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["errors"], false, "{answer}");

    // 2019-05-30T15:04:30+08:00, queried a minute later (inside the 5 m lookback).
    let at_s: i64 = 1_559_199_870 + 60;
    let at = at_s as f64;
    let result = query(&server, r#"http_requests_total.count{app="demo"}"#, at);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(
        result[0]["metric"],
        serde_json::json!({"__name__": "http_requests_total.count", "app": "demo",
            "host": "demo-host", "ip": "10.0.0.1", "service": "orderService"})
    );
    assert_eq!(result[0]["value"][1], "12");
    let result = query(
        &server,
        r#"http_requests_total.rate{service=~"order.*"}"#,
        at,
    );
    assert_eq!(result[0]["value"][1], "0.4");
    let result = query(&server, r#"sum by (_bucket) (rpc.latency.buckets)"#, at);
    assert_eq!(
        result,
        vec![serde_json::json!({"metric": {"_bucket": "10-100"}, "value": [at_s, "37"]})]
    );
    let result = query(
        &server,
        r#"http_requests_total.count{host!="demo-host"}"#,
        at,
    );
    assert!(result.is_empty(), "{result:?}");
    let names: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/label/__name__/values", server.api()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        names["data"],
        serde_json::json!([
            "http_requests_total.count",
            "http_requests_total.rate",
            "rpc.latency.buckets"
        ])
    );
}

#[test]
fn sofalookout_fixture_is_queryable_on_noida() {
    sofalookout_fixture_is_queryable("noida");
}

#[test]
fn sofalookout_fixture_is_queryable_on_osmem() {
    sofalookout_fixture_is_queryable("osmem");
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs one OpenTSDB sample to the gateway; returns the status.
fn put(server: &LookoutServer, metric: &str, time_s: i64, value: f64) -> u16 {
    let body = serde_json::json!([{"metric": metric, "timestamp": time_s, "value": value,
        "tags": {"host": "a"}}]);
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{}/api/put", server.gateway()))
        .body(body.to_string())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn gateway_answers_503_while_down(kind: &'static str) {
    let Some(mut peer) = EsPeer::start(kind) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&peer, dir.path(), &[]);
    let start = now_s() - 30;
    let stored = put(&server, "es.outage", start, 1.0);
    assert!((200..300).contains(&stored), "status {stored}");

    peer.stop();
    assert_eq!(
        put(&server, "es.outage", start + 1, 2.0),
        503,
        "a write the cluster did not take is not acknowledged"
    );
    peer.restart();
    let stored = put(&server, "es.outage", start + 2, 3.0);
    assert!(
        (200..300).contains(&stored),
        "writing resumes: status {stored}"
    );
    let result = query(&server, "es.outage", (start + 2) as f64);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["value"][1], "3");
}

#[test]
fn gateway_answers_503_while_noida_is_down() {
    gateway_answers_503_while_down("noida");
}

#[test]
fn gateway_answers_503_while_osmem_is_down() {
    gateway_answers_503_while_down("osmem");
}

/// A gateway-only process (no maintenance) feeds the cluster; another server reads it.
#[test]
fn gateway_only_process_feeds_the_query_server() {
    let Some(peer) = EsPeer::start("noida") else {
        return;
    };
    let reader_dir = tempfile::tempdir().unwrap();
    let reader = start_server(&peer, reader_dir.path(), &[]);
    let gateway_dir = tempfile::tempdir().unwrap();
    let gateway = start_server(&peer, gateway_dir.path(), &["--es-no-maintenance"]);
    let time_s = now_s() - 10;
    let stored = put(&gateway, "fed.by.gateway", time_s, 7.0);
    assert!((200..300).contains(&stored), "status {stored}");
    let result = query(&reader, "fed.by.gateway", time_s as f64);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["value"][1], "7");
}

/// A counter's value in the server's `/metrics`.
fn metric(server: &LookoutServer, series: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", server.api()))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} is not in /metrics"))
}

/// `sum by (host)` is answered by pushdown by default and from raw samples with
/// `--es-no-pushdown`; both servers give the same answer, and their `/metrics` say which way
/// each read.
fn pushdown_switch(kind: &'static str) {
    let Some(peer) = EsPeer::start(kind) else {
        return;
    };
    let pushed_dir = tempfile::tempdir().unwrap();
    let pushed = start_server(&peer, pushed_dir.path(), &[]);
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = start_server(
        &peer,
        raw_dir.path(),
        &["--es-no-maintenance", "--es-no-pushdown"],
    );
    let start = now_s() - 600;
    let mut body = Vec::new();
    for host in ["a", "b", "c"] {
        for i in 0..40 {
            body.push(
                serde_json::json!({"metric": "es.pushdown", "timestamp": start + i * 15,
                "value": i as f64 + host.len() as f64 * 0.5, "tags": {"host": host, "dc": "x"}}),
            );
        }
    }
    let status = reqwest::blocking::Client::new()
        .post(format!("{}/api/put", pushed.gateway()))
        .body(serde_json::Value::Array(body).to_string())
        .send()
        .unwrap()
        .status();
    assert!(status.is_success(), "status {status}");

    let promql = "sum by (dc) (es.pushdown)";
    let time = (start + 500) as f64;
    let selects = r#"lookout_es_selects_total{kind="pushdown"}"#;
    let raw_selects = r#"lookout_es_selects_total{kind="raw"}"#;
    let want = query(&pushed, promql, time);
    assert_eq!(want.len(), 1, "{want:?}");
    // The latest sample of each host at start + 495 s: i = 33, values 33.5 * 3.
    assert_eq!(want[0]["value"][1], "100.5");
    assert_eq!(metric(&pushed, selects), 1.0);
    assert_eq!(metric(&pushed, raw_selects), 0.0);
    assert_eq!(query(&raw, promql, time), want);
    assert_eq!(metric(&raw, selects), 0.0);
    assert_eq!(metric(&raw, raw_selects), 1.0);
}

#[test]
fn pushdown_switch_on_noida() {
    pushdown_switch("noida");
}

#[test]
fn pushdown_switch_on_osmem() {
    pushdown_switch("osmem");
}
