//! `lookout-server --storage es` against the real Elasticsearch stand-ins (`noida`: ES 8
//! dialect, `osmem`: OpenSearch), started by `../shared/peers/peers.sh` on free loopback
//! ports: SOFALookout's own bulk body (`../shared/testdata/lookout/es-bulk-request.ndjson`)
//! written straight into the cluster is queryable through PromQL; the gateway answers 503
//! while the cluster is down (never a 2xx for samples it could not store) and resumes when it
//! is back; a second ES-mode server without maintenance writes to the cluster another server
//! reads from; a gateway-only process (`--mode gateway`) remote-writes SOFALookout SDK and
//! OpenTSDB fixtures into an ES-backed server, queryable there exactly as expected;
//! `--es-no-pushdown` switches aggregation pushdown off (same answers, `/metrics` tells).
//! Each test skips with a printed reason when ../shared or the stand-ins are missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{free_port, poll, LookoutServer};

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

/// A writer in ES mode without maintenance (`--es-no-maintenance`) feeds the cluster;
/// another server reads it. (`--mode gateway` feeding an ES-backed server: below.)
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

/// A fixture request of ../shared/testdata/lookout (`<name>-expected-metrics.json`: method,
/// path, headers, body file) and the samples it must produce: labels (`__name__` included,
/// `<remote peer address>` as loopback), time in seconds, value.
struct FixtureRequest {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
    samples: Vec<(serde_json::Value, f64, f64)>,
}

fn fixture_request(dir: &Path, expected_file: &str) -> FixtureRequest {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(expected_file)).unwrap()).unwrap();
    let request = &expected["request"];
    assert_eq!(request["method"], "POST", "{expected_file}");
    let samples = expected["exported_to_metric_chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| {
            let mut labels = serde_json::Map::new();
            labels.insert("__name__".into(), sample["name"].clone());
            for (key, value) in sample["tags"].as_object().unwrap() {
                let value = match value.as_str().unwrap() {
                    "<remote peer address>" => "127.0.0.1",
                    value => value,
                };
                labels.insert(key.clone(), value.into());
            }
            (
                serde_json::Value::Object(labels),
                sample["timestamp"].as_f64().unwrap() / 1000.0,
                sample["value"].as_f64().unwrap(),
            )
        })
        .collect();
    FixtureRequest {
        path: request["path"].as_str().unwrap().to_owned(),
        headers: request["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
            .collect(),
        body: std::fs::read(dir.join(request["body_file"].as_str().unwrap())).unwrap(),
        status: expected["response"]["status"].as_u64().unwrap() as u16,
        samples,
    }
}

/// The non-zero lines of `text` (a `/metrics` page) starting with `prefix`.
fn nonzero_lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.starts_with(prefix) && !line.ends_with(" 0"))
        .collect()
}

/// Issue 7's "a gateway-only process can feed it": `lookout-server --mode gateway` forwards
/// (remote write 1.0) into the query port of a server on `--storage es`. SOFALookout SDK
/// (`POST /datas`) and OpenTSDB (`POST /opentsdb/api/put`) fixture requests and an OpenTSDB
/// telnet `put` sent to the gateway-only process are queryable through the ES-backed
/// server's PromQL API, each sample with exactly its expected labels and value; the gateway
/// sent everything it queued and the ES server refused nothing.
fn gateway_only_mode_feeds_the_es_backend(kind: &'static str) {
    let fixtures = shared().join("testdata/lookout");
    if !fixtures.is_dir() {
        eprintln!("SKIPPED: {} is absent", fixtures.display());
        return;
    }
    let Some(peer) = EsPeer::start(kind) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("es-server");
    std::fs::create_dir(&server_dir).unwrap();
    let server = start_server(&peer, &server_dir, &[]);
    let url = format!("{}/api/v1/write", server.api());
    let gateway = LookoutServer::start_gateway_only(
        &dir.path().join("gateway"),
        (free_port(), free_port()),
        &[
            "--forward.remote-write-url",
            &url,
            // The fixtures are from 2018 and 2019.
            "--gateway.max-sample-age",
            "0",
            "--forward.min-backoff",
            "100ms",
            "--forward.max-backoff",
            "1s",
        ],
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut expected = Vec::new();
    for file in [
        "lookout-report-expected-metrics.json",
        "opentsdb-put-expected-metrics.json",
    ] {
        let request = fixture_request(&fixtures, file);
        let mut post = client.post(format!("{}{}", gateway.gateway(), request.path));
        for (name, value) in &request.headers {
            post = post.header(name, value);
        }
        let status = post.body(request.body).send().unwrap().status().as_u16();
        // The fixture's answer, except OpenTSDB's 204 where SOFALookout answered 202.
        assert!(
            status == request.status || (request.status, status) == (202, 204),
            "{file}: {status}"
        );
        expected.extend(request.samples);
    }
    let now = now_s();
    {
        use std::io::{Read, Write};
        let mut telnet = std::net::TcpStream::connect(("127.0.0.1", gateway.telnet_port)).unwrap();
        write!(telnet, "put es.fed.telnet {now} 5 host=a\nexit\n").unwrap();
        // The listener closes the connection after `exit`, once the line is taken.
        telnet
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answer = String::new();
        let _ = telnet.read_to_string(&mut answer);
        assert!(!answer.contains("error"), "{answer}");
    }
    expected.push((
        serde_json::json!({"__name__": "es.fed.telnet", "host": "a", "ip": "127.0.0.1"}),
        now as f64,
        5.0,
    ));

    // Every sample, at its own time, through the ES-backed server's PromQL API.
    let missing = |expected: &[(serde_json::Value, f64, f64)]| -> Vec<String> {
        expected
            .iter()
            .filter(|(labels, time, value)| {
                let name = labels["__name__"].as_str().unwrap();
                let result = query(&server, &format!(r#"{{__name__="{name}"}}"#), *time);
                !result.iter().any(|series| {
                    series["metric"] == *labels
                        && series["value"][0].as_f64() == Some(*time)
                        && series["value"][1].as_str().and_then(|v| v.parse().ok()) == Some(*value)
                })
            })
            .map(|(labels, time, value)| format!("{labels} {value} @ {time}"))
            .collect()
    };
    let arrived = poll(Duration::from_secs(60), || {
        missing(&expected).is_empty().then_some(())
    });
    if arrived.is_none() {
        panic!(
            "not queryable on the ES backend within 60 s: {:#?}",
            missing(&expected)
        );
    }
    // Nothing else arrived under those names: one series per expected sample.
    let names: std::collections::BTreeSet<&str> = expected
        .iter()
        .map(|(labels, _, _)| labels["__name__"].as_str().unwrap())
        .collect();
    let stored: usize = names
        .iter()
        .map(|name| {
            let time = expected
                .iter()
                .find(|(labels, _, _)| labels["__name__"] == *name)
                .unwrap()
                .1;
            query(&server, &format!(r#"{{__name__="{name}"}}"#), time).len()
        })
        .sum();
    assert_eq!(stored, expected.len());

    // The gateway delivered everything it queued; the ES server refused nothing.
    let gateway_metrics = client
        .get(format!("{}/metrics", gateway.gateway()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let exporter = "{exporter=\"remote_write-0\"}";
    let forward = |name: &str| -> f64 {
        let series = format!("{name}{exporter} ");
        gateway_metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing: {gateway_metrics}"))
    };
    let sent = poll(Duration::from_secs(30), || {
        let sent = forward("lookout_forward_samples_sent_total");
        (sent >= expected.len() as f64).then_some(sent)
    });
    assert_eq!(
        sent,
        Some(forward("lookout_forward_samples_enqueued_total"))
    );
    assert_eq!(forward("lookout_forward_samples_failed_total"), 0.0);
    assert_eq!(forward("lookout_forward_queue_records"), 0.0);
    let server_metrics = client
        .get(format!("{}/metrics", server.api()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        server_metrics
            .lines()
            .filter_map(|line| line.strip_prefix(
                "lookout_gateway_samples_accepted_total{protocol=\"api_remote_write\"} "
            ))
            .any(|value| value.parse::<f64>().unwrap() >= expected.len() as f64),
        "{server_metrics}"
    );
    for counter in [
        "lookout_gateway_samples_rejected_total{protocol=\"api_remote_write\"",
        "lookout_gateway_requests_refused_total{protocol=\"api_remote_write\"",
    ] {
        assert_eq!(nonzero_lines(&server_metrics, counter), Vec::<&str>::new());
    }
}

#[test]
fn gateway_only_mode_feeds_the_es_backend_on_noida() {
    gateway_only_mode_feeds_the_es_backend("noida");
}

#[test]
fn gateway_only_mode_feeds_the_es_backend_on_osmem() {
    gateway_only_mode_feeds_the_es_backend("osmem");
}
