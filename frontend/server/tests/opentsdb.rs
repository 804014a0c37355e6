//! OpenTSDB through the `lookout-server` binary: a JSON `/api/put` on the gateway port and
//! telnet `put` lines on `--opentsdb.listen-address`, read back through the query API; then a
//! real sender, collectd's `write_tsdb` plugin, when `collectd` is on PATH (skipped with a
//! printed reason otherwise).

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{instant_query, log_tail, poll, wait_ready, Killed, LookoutServer};

struct Server {
    _process: LookoutServer,
    api: String,
    gateway: String,
    telnet_port: u16,
    client: reqwest::blocking::Client,
}

fn start(dir: &std::path::Path) -> Server {
    let client = reqwest::blocking::Client::new();
    let process = LookoutServer::start(&dir.join("data"), &[]);
    let api = process.api();
    let gateway = process.gateway();
    let telnet_port = process.telnet_port;
    wait_ready(&client, &format!("{gateway}/datas"));
    Server {
        _process: process,
        api,
        gateway,
        telnet_port,
        client,
    }
}

impl Server {
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        instant_query(&self.client, &self.api, promql)
    }
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn http_and_telnet_puts_are_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let now = now_seconds();
    let body = format!(
        r#"[{{"metric":"sys.cpu.user","timestamp":{now},"value":30,"tags":{{"host":"web02"}}}},
            {{"metric":"sys.cpu.user","timestamp":{},"value":"42.5","tags":{{"host":"web01"}}}}]"#,
        // Milliseconds, in the past: a query at "now" must already see the sample.
        (now - 1) * 1000 + 250
    );
    let response = server
        .client
        .post(format!("{}/api/put?summary", server.gateway))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().unwrap(),
        serde_json::json!({"failed": 0, "success": 2})
    );
    let result = server.query(r#"sys.cpu.user{host="web01"}"#);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["value"][1], "42.5");

    let mut telnet = std::net::TcpStream::connect(("127.0.0.1", server.telnet_port)).unwrap();
    write!(
        telnet,
        "put jobs.done {now} 7 queue=a\nput jobs.done {now} x queue=b\nexit\n"
    )
    .unwrap();
    let mut answer = String::new();
    telnet.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "put: invalid value: Invalid value: x\n");
    let result = server.query("jobs.done");
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["metric"]["ip"], "127.0.0.1");
    assert_eq!(result[0]["value"][1], "7");

    let metrics = server
        .client
        .get(format!("{}/metrics", server.api))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "lookout_gateway_samples_accepted_total{protocol=\"opentsdb_http\"} 2",
        "lookout_gateway_samples_accepted_total{protocol=\"opentsdb_telnet\"} 1",
        "lookout_gateway_samples_rejected_total{protocol=\"opentsdb_telnet\",reason=\"non_numeric_value\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

/// collectd's `write_tsdb` plugin (the configuration verified in ../shared/peers) sends its
/// `load` and `memory` values as telnet `put` lines.
#[test]
fn collectd_write_tsdb_is_a_real_sender() {
    if Command::new("collectd").arg("-h").output().is_err() {
        println!("SKIPPED: collectd not found on PATH (apt-get install collectd-core)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let config = dir.path().join("collectd.conf");
    let base = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "Hostname \"peerhost\"\nFQDNLookup false\nInterval 1\n\
             BaseDir \"{base}\"\nPIDFile \"{base}/collectd.pid\"\n\
             LoadPlugin logfile\n<Plugin logfile>\n  LogLevel info\n  File \"{base}/collectd.log\"\n</Plugin>\n\
             LoadPlugin load\nLoadPlugin memory\n\
             LoadPlugin write_tsdb\n<Plugin write_tsdb>\n  <Node \"lookout\">\n    Host \"127.0.0.1\"\n\
             \x20   Port \"{}\"\n    HostTags \"source=collectd\"\n  </Node>\n</Plugin>\n",
            server.telnet_port
        ),
    )
    .unwrap();
    let _collectd = Killed(
        Command::new("collectd")
            .arg("-f")
            .arg("-C")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let result = poll(Duration::from_secs(30), || {
        let result = server.query(r#"{source="collectd", __name__=~"load\\..*"}"#);
        (!result.is_empty()).then_some(result)
    });
    let Some(result) = result else {
        panic!(
            "no load.* series from collectd; its log:\n{}",
            log_tail(&dir.path().join("collectd.log"), 30)
        );
    };
    for series in &result {
        assert_eq!(series["metric"]["fqdn"], "peerhost", "{series}");
        assert_eq!(series["metric"]["ip"], "127.0.0.1", "{series}");
    }
    let names: Vec<&str> = result
        .iter()
        .map(|series| series["metric"]["__name__"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"load.load.shortterm"), "{names:?}");
}
