//! Gateway-only mode (`--mode gateway`) through the binary, with real receivers on loopback:
//! 1. relaying (SOFALookout relay format) to a second, full `lookout-server`: what arrives is
//!    exactly what a third server stores when the same requests go to it directly;
//! 2. remote-writing into a real Prometheus (skipped with a printed reason when `prometheus`
//!    is not on PATH) what the gateway receives and what it scrapes, a sample Prometheus
//!    refuses for good (400) dropped and counted while the others arrive;
//! 3. a receiver outage spanning a gateway restart: every sample arrives once the receiver is
//!    back, none twice.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    free_port, instant_query, poll, prometheus_installed, start_prometheus, LookoutServer,
};

/// How long a forwarded sample may take to show up at the receiver.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Fast retries, so a receiver coming back is noticed within a second.
const FAST_RETRIES: [&str; 4] = [
    "--forward.min-backoff",
    "100ms",
    "--forward.max-backoff",
    "1s",
];

fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/lookout");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED: {} not found (the shared fixtures)", dir.display());
        None
    }
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every sample `api` holds, by series (its labels as canonical JSON): `(time, value)`.
fn everything(
    client: &reqwest::blocking::Client,
    api: &str,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut all = BTreeMap::new();
    for series in instant_query(client, api, r#"{__name__=~".+"}[4000d]"#) {
        let values = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].to_string(), pair[1].as_str().unwrap().to_owned()))
            .collect();
        all.insert(series["metric"].to_string(), values);
    }
    all
}

/// The gateway port's forwarding self-metrics as `name{labels}` -> value.
fn gateway_metrics(client: &reqwest::blocking::Client, gateway: &str) -> BTreeMap<String, f64> {
    let text = client
        .get(format!("{gateway}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("lookout_forward_"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    *metrics
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from {metrics:?}"))
}

/// Sends the same mix of SOFALookout, OpenTSDB (HTTP and telnet) and Prometheus push requests
/// to a gateway; every request must succeed.
fn send_mix(client: &reqwest::blocking::Client, fixtures: &Path, gateway: &str, telnet_port: u16) {
    let now = now_seconds();
    let report = std::fs::read(fixtures.join("lookout-report.txt")).unwrap();
    let response = client
        .post(format!("{gateway}/datas"))
        .header("app", "demo")
        .body(report)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let snappy = std::fs::read(fixtures.join("lookout-report.snappy")).unwrap();
    let response = client
        .post(format!("{gateway}/datas"))
        .header("app", "demo")
        .header("Client-Ip", "10.1.1.1")
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "snappy")
        .body(snappy)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = client
        .post(format!("{gateway}/opentsdb/api/put"))
        .header("app", "xx")
        .header("step", "10")
        .header("X-Lookout-Token", "my-token")
        .body(std::fs::read(fixtures.join("opentsdb-put.json")).unwrap())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    // Names without a dot, odd characters in names and tags.
    let body = format!(
        r#"[{{"metric":"relay_plain","timestamp":{now},"value":1.25,"tags":{{"host":"a b","k.x":"v"}}}},
            {{"metric":"relay.odd-name/x","timestamp":{now},"value":-3,"tags":{{"host":"b"}}}}]"#
    );
    let response = client
        .post(format!("{gateway}/api/put"))
        .body(body)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let response = client
        .post(format!("{gateway}/prom/metrics/job/batch/app/demo/step/10"))
        .header("X-Lookout-Token", "t")
        .body(format!(
            "# TYPE jobs_done counter\njobs_done{{queue=\"a b\"}} 7 {}\n",
            now * 1000
        ))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut telnet = std::net::TcpStream::connect(("127.0.0.1", telnet_port)).unwrap();
    write!(
        telnet,
        "put telnet.jobs {now} 5 queue=q1\nput telnet_plain {now} 6 queue=q2\nexit\n"
    )
    .unwrap();
    // The listener closes the connection after `exit`, once the lines are written.
    let mut answer = String::new();
    telnet
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = telnet.read_to_string(&mut answer);
    assert!(!answer.contains("error"), "{answer}");
}

#[test]
fn relaying_to_a_second_lookout_stores_what_a_direct_send_stores() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    // The fixtures are from 2018 and 2019: keep everything (no retention, no "too old" cut).
    let keep = [
        "--storage.tsdb.retention.hours",
        "0",
        "--gateway.max-sample-age",
        "0",
    ];
    let receiver = LookoutServer::start(&dir.path().join("receiver"), &keep);
    let direct = LookoutServer::start(&dir.path().join("direct"), &keep);
    let relay_url = format!("{}/datas", receiver.gateway());
    let mut flags = vec![
        "--forward.relay-url",
        relay_url.as_str(),
        "--gateway.max-sample-age",
        "0",
    ];
    flags.extend(FAST_RETRIES);
    let gateway = LookoutServer::start_gateway_only(
        &dir.path().join("gateway"),
        (free_port(), free_port()),
        &flags,
    );

    send_mix(&client, &fixtures, &gateway.gateway(), gateway.telnet_port);
    send_mix(&client, &fixtures, &direct.gateway(), direct.telnet_port);

    let names = [
        "\"__name__\":\"rpc.latency.max\"",
        "\"__name__\":\"custom.v\"",
        "\"__name__\":\"relay_plain\"",
        "\"__name__\":\"relay.odd-name/x\"",
        "\"__name__\":\"jobs_done\"",
        "\"__name__\":\"telnet.jobs\"",
        "\"__name__\":\"telnet_plain\"",
        "\"__name__\":\"sys.cpu.user\"",
    ];
    let holds_all = |stored: &BTreeMap<String, Vec<(String, String)>>| {
        names
            .iter()
            .all(|name| stored.keys().any(|key| key.contains(name)))
    };
    // The telnet lines are written after their answer: wait for everything.
    let expected = poll(ARRIVAL_TIMEOUT, || {
        let expected = everything(&client, &direct.api());
        holds_all(&expected).then_some(expected)
    })
    .expect("the direct sends are stored");
    let relayed = poll(ARRIVAL_TIMEOUT, || {
        let relayed = everything(&client, &receiver.api());
        (relayed == expected).then_some(relayed)
    });
    let Some(relayed) = relayed else {
        let relayed = everything(&client, &receiver.api());
        let missing: Vec<_> = expected
            .keys()
            .filter(|key| !relayed.contains_key(*key))
            .collect();
        let extra: Vec<_> = relayed
            .keys()
            .filter(|key| !expected.contains_key(*key))
            .collect();
        panic!(
            "relayed != direct\nmissing: {missing:#?}\nextra: {extra:#?}\nrelayed: {relayed:#?}"
        );
    };
    assert!(holds_all(&relayed));
    assert!(relayed.len() >= names.len(), "{relayed:#?}");

    let metrics = gateway_metrics(&client, &gateway.gateway());
    let enqueued = metric(
        &metrics,
        "lookout_forward_samples_enqueued_total{exporter=\"relay-0\"}",
    );
    let stored: usize = expected.values().map(Vec::len).sum();
    assert!(
        enqueued >= stored as f64,
        "{enqueued} queued, {stored} stored"
    );
    assert_eq!(
        metric(
            &metrics,
            "lookout_forward_samples_sent_total{exporter=\"relay-0\"}"
        ),
        enqueued
    );
    assert_eq!(
        metric(
            &metrics,
            "lookout_forward_queue_records{exporter=\"relay-0\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "lookout_forward_samples_failed_total{exporter=\"relay-0\"}"
        ),
        0.0
    );
    // Gateway-only mode has no query API on the gateway port.
    let query = client
        .get(format!("{}/api/v1/query?query=up", gateway.gateway()))
        .send()
        .unwrap();
    assert_eq!(query.status().as_u16(), 404);
}

#[test]
fn remote_writing_into_a_real_prometheus() {
    if !prometheus_installed() {
        println!("SKIPPED: `prometheus` is not on PATH (apt-get install prometheus; .ci/run does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let prometheus_port = free_port();
    let _prometheus = start_prometheus(
        &client,
        dir.path(),
        prometheus_port,
        "global:\n  scrape_interval: 15s\n",
        &["--web.enable-remote-write-receiver"],
    );
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let url = format!("{prometheus}/api/v1/write");
    // The gateway also scrapes (Prometheus' own /metrics) and forwards what it scrapes.
    let scrape = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: via_gateway\n    scrape_interval: 1s\n    \
             static_configs: [{{targets: ['127.0.0.1:{prometheus_port}']}}]\n"
        ),
    )
    .unwrap();
    let scrape = scrape.display().to_string();
    let mut flags = vec![
        "--forward.remote-write-url",
        url.as_str(),
        "--scrape.config-file",
        scrape.as_str(),
        // The 2018 sample below must reach Prometheus (which refuses it), not be cut here.
        "--gateway.max-sample-age",
        "0",
    ];
    flags.extend(FAST_RETRIES);
    let gateway = LookoutServer::start_gateway_only(
        &dir.path().join("gateway"),
        (free_port(), free_port()),
        &flags,
    );
    let base = gateway.gateway();

    let now = now_seconds();
    let body = format!(
        r#"[{{"metric":"relay_rw_probe","timestamp":{},"value":42,"tags":{{"host":"a"}}}},
            {{"metric":"relay_rw_probe","timestamp":{},"value":43,"tags":{{"host":"b"}}}}]"#,
        now - 2,
        now - 2
    );
    let response = client
        .post(format!("{base}/api/put"))
        .body(body)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let report = format!(
        r#"{{"time":{},"tags":{{"app":"demo"}},"relay_rw_sdk":{{"count":12}}}}"#,
        (now - 2) * 1000
    );
    let response = client
        .post(format!("{base}/datas"))
        .header("app", "demo")
        .body(report)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let result = poll(ARRIVAL_TIMEOUT, || {
        let result = instant_query(&client, &prometheus, "relay_rw_probe");
        (result.len() == 2).then_some(result)
    })
    .expect("the samples reach Prometheus");
    let mut values: Vec<(String, String)> = result
        .iter()
        .map(|series| {
            (
                series["metric"]["host"].as_str().unwrap().to_owned(),
                series["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            ("a".to_owned(), "42".to_owned()),
            ("b".to_owned(), "43".to_owned())
        ]
    );
    // The dotted SOFALookout name goes as it is (Prometheus 2.42 stores it; query it by
    // __name__).
    let sdk = poll(ARRIVAL_TIMEOUT, || {
        let result = instant_query(&client, &prometheus, r#"{__name__="relay_rw_sdk.count"}"#);
        (!result.is_empty()).then_some(result)
    })
    .expect("the SDK sample reaches Prometheus");
    assert_eq!(sdk[0]["value"][1], "12");
    assert_eq!(sdk[0]["metric"]["app"], "demo");

    // Far older than Prometheus' head now holds: it answers 400 (out of bounds), for good.
    // Sent with a good sample after it, which must still arrive.
    let old = r#"{"metric":"relay_rw_old","timestamp":1530624430,"value":1,"tags":{"host":"a"}}"#;
    let response = client
        .post(format!("{base}/api/put"))
        .body(old)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let after = format!(
        r#"{{"metric":"relay_rw_after","timestamp":{},"value":7,"tags":{{"host":"a"}}}}"#,
        now - 1
    );
    let response = client
        .post(format!("{base}/api/put"))
        .body(after)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let after = poll(ARRIVAL_TIMEOUT, || {
        let result = instant_query(&client, &prometheus, "relay_rw_after");
        (!result.is_empty()).then_some(result)
    })
    .expect("a sample sent after the refused one reaches Prometheus");
    assert_eq!(after[0]["value"][1], "7");

    let up = poll(ARRIVAL_TIMEOUT, || {
        let result = instant_query(&client, &prometheus, r#"up{job="via_gateway"}"#);
        (!result.is_empty()).then_some(result)
    })
    .expect("what the gateway scrapes reaches Prometheus");
    assert_eq!(up[0]["value"][1], "1");

    let exporter = "{exporter=\"remote_write-0\"}";
    let metrics = gateway_metrics(&client, &base);
    assert_eq!(
        metric(
            &metrics,
            &format!("lookout_forward_samples_failed_total{exporter}")
        ),
        1.0,
        "the out-of-bounds sample is refused for good: {metrics:?}"
    );
    assert!(
        metric(
            &metrics,
            &format!("lookout_forward_samples_sent_total{exporter}")
        ) > 4.0,
        "{metrics:?}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("lookout_forward_requests_retried_total{exporter}")
        ),
        0.0
    );
    let query = format!("{prometheus}/api/v1/query_range?query=relay_rw_old&start=1530624000&end=1530625000&step=60");
    let old: serde_json::Value = client.get(query).send().unwrap().json().unwrap();
    assert_eq!(old["data"]["result"], serde_json::json!([]), "{old}");
}

#[test]
fn an_outage_across_a_gateway_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let receiver_data = dir.path().join("receiver");
    let receiver_ports = (free_port(), free_port(), free_port());
    let receiver = LookoutServer::start_on(&receiver_data, receiver_ports, &[]);
    let relay_url = format!("{}/datas", receiver.gateway());
    let mut flags = vec!["--forward.relay-url", relay_url.as_str()];
    flags.extend(FAST_RETRIES);
    let gateway_data = dir.path().join("gateway");
    let gateway_ports = (free_port(), free_port());
    let gateway = LookoutServer::start_gateway_only(&gateway_data, gateway_ports, &flags);

    let base = now_seconds() - 600;
    let batches = 20u64;
    let per_batch = 5u64;
    let value = |index: u64| index as f64 * 1.5 + 1.0;
    let send = |gateway: &LookoutServer, batch: u64| {
        let points: Vec<String> = (0..per_batch)
            .map(|at| {
                let index = batch * per_batch + at;
                format!(
                    r#"{{"metric":"outage.probe","timestamp":{},"value":{},"tags":{{"host":"h1"}}}}"#,
                    base + index,
                    value(index)
                )
            })
            .collect();
        let response = client
            .post(format!("{}/api/put", gateway.gateway()))
            .body(format!("[{}]", points.join(",")))
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    };
    let count = |receiver: &LookoutServer| {
        instant_query(
            &client,
            &receiver.api(),
            "count_over_time(outage.probe[1h])",
        )
        .first()
        .map_or(0.0, |series| {
            series["value"][1].as_str().unwrap().parse::<f64>().unwrap()
        })
    };

    for batch in 0..5 {
        send(&gateway, batch);
    }
    poll(ARRIVAL_TIMEOUT, || (count(&receiver) == 25.0).then_some(()))
        .expect("the first batches arrive while the receiver is up");

    drop(receiver);
    for batch in 5..15 {
        send(&gateway, batch);
    }
    let exporter = "{exporter=\"relay-0\"}";
    poll(ARRIVAL_TIMEOUT, || {
        let metrics = gateway_metrics(&client, &gateway.gateway());
        (metric(
            &metrics,
            &format!("lookout_forward_requests_retried_total{exporter}"),
        ) > 0.0)
            .then_some(())
    })
    .expect("the gateway retries while the receiver is down");

    drop(gateway);
    let gateway = LookoutServer::start_gateway_only(&gateway_data, gateway_ports, &flags);
    for batch in 15..batches {
        send(&gateway, batch);
    }
    let metrics = gateway_metrics(&client, &gateway.gateway());
    assert_eq!(
        metric(
            &metrics,
            &format!("lookout_forward_queue_samples{exporter}")
        ),
        ((batches - 5) * per_batch) as f64,
        "everything sent during the outage is queued, across the restart: {metrics:?}"
    );

    let receiver = LookoutServer::start_on(&receiver_data, receiver_ports, &[]);
    let total = (batches * per_batch) as f64;
    poll(ARRIVAL_TIMEOUT, || {
        (count(&receiver) >= total).then_some(())
    })
    .expect("every queued sample arrives once the receiver is back");
    assert_eq!(count(&receiver), total, "no sample twice");
    let sum = instant_query(&client, &receiver.api(), "sum_over_time(outage.probe[1h])");
    let expected: f64 = (0..batches * per_batch).map(value).sum();
    assert_eq!(sum[0]["value"][1], format!("{expected}"));
    let metrics = poll(ARRIVAL_TIMEOUT, || {
        let metrics = gateway_metrics(&client, &gateway.gateway());
        (metric(
            &metrics,
            &format!("lookout_forward_queue_records{exporter}"),
        ) == 0.0)
            .then_some(metrics)
    })
    .expect("the queue empties");
    assert_eq!(
        metric(
            &metrics,
            &format!("lookout_forward_samples_sent_total{exporter}")
        ),
        ((batches - 5) * per_batch) as f64
    );
}
