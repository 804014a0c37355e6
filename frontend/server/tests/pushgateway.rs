//! The Pushgateway API through the `lookout-server` binary: what PromQL returns after a PUT,
//! a replacing PUT, a merging POST and a DELETE of one group (stale markers end the series
//! that leave the group at once, not after the lookback window).

mod support;

use std::process::{Command, Stdio};

use support::{free_port, wait_ready, Killed};

#[test]
fn promql_follows_the_groups() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let (api_port, gateway_port) = (free_port(), free_port());
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_lookout-server"))
            .arg("--storage.tsdb.path")
            .arg(dir.path().join("data"))
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--gateway.listen-address")
            .arg(format!("127.0.0.1:{gateway_port}"))
            .arg("--opentsdb.listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--management.listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&client, &format!("http://127.0.0.1:{api_port}/-/ready"));
    let group = format!("http://127.0.0.1:{gateway_port}/metrics/job/backup/db/orders");
    wait_ready(&client, &format!("http://127.0.0.1:{gateway_port}/datas"));
    let push = |method: reqwest::Method, body: &str| {
        let response = client
            .request(method, &group)
            .body(body.to_owned())
            .send()
            .unwrap();
        response.status().as_u16()
    };
    // `{__name__=~"backup_.*"}` as "name{x} value" lines, sorted.
    let query = || {
        let answer: serde_json::Value = client
            .get(format!("http://127.0.0.1:{api_port}/api/v1/query"))
            .query(&[("query", r#"{__name__=~"backup_.*", job="backup"}"#)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mut lines: Vec<String> = answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let metric = &series["metric"];
                assert_eq!(metric["db"], "orders", "{metric}");
                let table = metric["table"].as_str().unwrap_or("");
                let name = metric["__name__"].as_str().unwrap();
                format!("{name}{{{table}}} {}", series["value"][1].as_str().unwrap())
            })
            .collect();
        lines.sort();
        lines
    };

    let body = "# TYPE backup_rows gauge\nbackup_rows{table=\"a\"} 10\nbackup_rows{table=\"b\"} 20\nbackup_ok 1\n";
    assert_eq!(push(reqwest::Method::PUT, body), 200);
    assert_eq!(
        query(),
        ["backup_ok{} 1", "backup_rows{a} 10", "backup_rows{b} 20"]
    );
    assert_eq!(
        push(reqwest::Method::POST, "backup_rows{table=\"c\"} 30\n"),
        200
    );
    assert_eq!(query(), ["backup_ok{} 1", "backup_rows{c} 30"]);
    assert_eq!(push(reqwest::Method::PUT, "backup_ok 0\n"), 200);
    assert_eq!(query(), ["backup_ok{} 0"]);
    assert_eq!(push(reqwest::Method::DELETE, ""), 202);
    assert!(query().is_empty());
}
