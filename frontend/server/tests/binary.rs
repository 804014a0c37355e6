//! The `lookout-server` binary: starts on the default store layout, takes remote writes on
//! both ports, reads its configuration file, stops cleanly on SIGTERM and finds its data
//! again after a restart.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;
use support::free_port;

fn start(data: &std::path::Path, port: u16) -> Child {
    start_with(&start_args(data, port))
}

fn start_args(data: &std::path::Path, port: u16) -> Vec<String> {
    vec![
        "--storage.tsdb.path".into(),
        data.display().to_string(),
        "--web.listen-address".into(),
        format!("127.0.0.1:{port}"),
        "--gateway.listen-address".into(),
        format!("127.0.0.1:{}", free_port()),
        "--opentsdb.listen-address".into(),
        format!("127.0.0.1:{}", free_port()),
        "--management.listen-address".into(),
        format!("127.0.0.1:{}", free_port()),
    ]
}

fn start_with(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lookout-server"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_ready(client: &reqwest::blocking::Client, port: u16) {
    support::wait_ready(client, &format!("http://127.0.0.1:{port}/-/ready"));
}

fn terminate(mut child: Child) {
    // The pid is our own child's.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "graceful shutdown exits 0, got {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serves_writes_stops_on_sigterm_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::blocking::Client::new();
    let port = free_port();
    let server = start(&data, port);
    wait_ready(&client, port);

    let mut batch = WriteBatch::new();
    batch.push(
        Labels::from_pairs([("__name__", "lookout_test"), ("job", "binary")]).unwrap(),
        vec![Sample::new(1_700_000_000_000, 42.0)],
    );
    let response = client
        .post(format!("http://127.0.0.1:{port}/api/v1/write"))
        .body(lookout_gateway::remote_write::encode(&batch))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let metrics = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("lookout_api_remote_write_requests_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lookout_tsdb_head_series 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lookout_tsdb_samples_rejected_total{reason=\"out_of_order\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lookout_tsdb_quarantined_blocks 0\n"),
        "{metrics}"
    );
    terminate(server);
    // A graceful stop wrote the head into a block (the default).
    assert_eq!(block_count(&data), 1, "one block after a graceful stop");

    let port = free_port();
    let server = start(&data, port);
    wait_ready(&client, port);
    let series = |port: u16| -> serde_json::Value {
        client
            .get(format!(
                "http://127.0.0.1:{port}/api/v1/series?match[]=lookout_test&start=0"
            ))
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap()["data"]
            .clone()
    };
    assert_eq!(
        series(port),
        serde_json::json!([{"__name__": "lookout_test", "job": "binary"}])
    );
    assert!(
        metric_text(&client, port).contains("lookout_tsdb_head_series 0\n"),
        "nothing replayed into the head"
    );
    terminate(server);

    // With persisting off, a stop leaves the head in the WAL and the next start replays it.
    let keep_wal = |port: u16| {
        let mut args = start_args(&data, port);
        args.extend([
            "--storage.tsdb.persist-head-on-shutdown".into(),
            "false".into(),
        ]);
        start_with(&args)
    };
    let port = free_port();
    let server = keep_wal(port);
    wait_ready(&client, port);
    let mut batch = WriteBatch::new();
    batch.push(
        Labels::from_pairs([("__name__", "lookout_test"), ("job", "wal")]).unwrap(),
        vec![Sample::new(1_700_000_060_000, 43.0)],
    );
    let response = client
        .post(format!("http://127.0.0.1:{port}/api/v1/write"))
        .body(lookout_gateway::remote_write::encode(&batch))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    terminate(server);
    assert_eq!(block_count(&data), 1, "the new sample stayed in the WAL");
    let port = free_port();
    let server = keep_wal(port);
    wait_ready(&client, port);
    assert_eq!(
        series(port),
        serde_json::json!([
            {"__name__": "lookout_test", "job": "binary"},
            {"__name__": "lookout_test", "job": "wal"}
        ])
    );
    assert!(metric_text(&client, port).contains("lookout_tsdb_head_series 1\n"));
    terminate(server);
}

fn block_count(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("blocks")).unwrap().count()
}

fn metric_text(client: &reqwest::blocking::Client, port: u16) -> String {
    client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn one_sample_batch(name: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.push(
        Labels::from_pairs([("__name__", name), ("job", "gateway")]).unwrap(),
        vec![Sample::new(1_700_000_000_000, 7.0)],
    );
    batch
}

#[test]
fn config_file_flags_override_and_gateway_port() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let (port, gateway_port) = (free_port(), free_port());
    let config = dir.path().join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {data:?}\n\n[web]\nlisten_address = \"127.0.0.1:{port}\"\n\
             enable_admin_api = true\n\n[gateway]\nlisten_address = \"127.0.0.1:{gateway_port}\"\n\n\
             [query]\ntimeout = \"1m\"\nmax_samples = 1000\n"
        ),
    )
    .unwrap();
    let client = reqwest::blocking::Client::new();
    let server = start_with(&[
        "--config.file".into(),
        config.display().to_string(),
        "--query.timeout".into(),
        "30s".into(),
        // Not the default 4242, which another process on the machine may hold.
        "--opentsdb.listen-address".into(),
        format!("127.0.0.1:{}", free_port()),
        "--management.listen-address".into(),
        format!("127.0.0.1:{}", free_port()),
    ]);
    wait_ready(&client, port);

    // The file's values, the flag's override, the defaults for the rest.
    let flags: serde_json::Value = client
        .get(format!("http://127.0.0.1:{port}/api/v1/status/flags"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let flags = &flags["data"];
    assert_eq!(flags["storage.tsdb.path"], data.display().to_string());
    assert_eq!(flags["query.timeout"], "30s");
    assert_eq!(flags["query.max-samples"], "1000");
    assert_eq!(flags["query.lookback-delta"], "5m");
    assert_eq!(flags["web.enable-admin-api"], "true");
    assert_eq!(
        flags["gateway.listen-address"],
        format!("127.0.0.1:{gateway_port}")
    );
    let config_body: serde_json::Value = client
        .get(format!("http://127.0.0.1:{port}/api/v1/status/config"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let effective = config_body["data"]["yaml"].as_str().unwrap();
    assert!(effective.contains("timeout = \"30s\""), "{effective}");

    // Remote write on the gateway port lands in the same store.
    let response = client
        .post(format!("http://127.0.0.1:{gateway_port}/api/v1/write"))
        .body(lookout_gateway::remote_write::encode(&one_sample_batch(
            "via_gateway",
        )))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let response = client
        .post(format!("http://127.0.0.1:{gateway_port}/api/v1/write"))
        .body("not a remote write body")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/series?match[]=via_gateway"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        body["data"],
        serde_json::json!([{"__name__": "via_gateway", "job": "gateway"}])
    );
    // The gateway port serves only the gateway routes.
    let response = client
        .get(format!("http://127.0.0.1:{gateway_port}/api/v1/labels"))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    // The admin API is on (from the file): a snapshot lands under the data directory.
    let snapshot: serde_json::Value = client
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let name = snapshot["data"]["name"].as_str().unwrap();
    assert!(
        data.join("snapshots").join(name).join("blocks").is_dir(),
        "{snapshot}"
    );
    let response = client
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/admin/tsdb/delete_series?match[]=via_gateway"
        ))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    terminate(server);
}

#[test]
fn admin_api_is_off_by_default_and_bad_config_fails_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let port = free_port();
    let server = start(&dir.path().join("data"), port);
    wait_ready(&client, port);
    let response = client
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot"
        ))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    terminate(server);

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[web]\nlisten = \"x\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lookout-server"))
        .arg("--config.file")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `listen`"), "{stderr}");
}

/// A client that hangs up on a long query stops it: the server counts it as canceled and it
/// no longer runs.
#[test]
fn a_query_whose_client_disconnects_is_canceled() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start(data.path(), port);
    let client = reqwest::blocking::Client::new();
    wait_ready(&client, port);

    // 11,000 steps, each a one-day window of one-second subquery points: minutes of work.
    let query = "sum_over_time(vector(1)[1d:1s])";
    let mut body = String::new();
    body.push_str("query=");
    body.push_str(
        &query
            .replace('[', "%5B")
            .replace(']', "%5D")
            .replace(':', "%3A"),
    );
    body.push_str("&start=0&end=660000&step=60");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/v1/query_range HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    let metric = |name: &str| -> Option<f64> {
        let text = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("lookout_promql_queries_in_flight ") != Some(1.0) {
        assert!(Instant::now() < deadline, "the query never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    while metric("lookout_promql_queries_canceled_total ") != Some(1.0)
        || metric("lookout_promql_queries_in_flight ") != Some(0.0)
    {
        assert!(
            Instant::now() < deadline,
            "the query was not canceled after its client went away"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(child);
}
