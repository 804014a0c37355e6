//! The `lookout-server` binary: starts on the default store layout, takes remote writes,
//! stops cleanly on SIGTERM and finds its data again after a restart.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lookout-server"))
        .arg("--storage.tsdb.path")
        .arg(data)
        .arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_ready(client: &reqwest::blocking::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/-/ready"))
            .send()
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "server not ready within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
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

    let port = free_port();
    let server = start(&data, port);
    wait_ready(&client, port);
    let body: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/series?match[]=lookout_test"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        body["data"],
        serde_json::json!([{"__name__": "lookout_test", "job": "binary"}])
    );
    terminate(server);
}
