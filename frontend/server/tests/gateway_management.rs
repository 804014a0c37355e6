//! The management port and what it switches (refuse mode), per-app rate limits, the
//! "too old" post-filter and back-pressure on the query port's remote-write receiver and
//! the telnet listener, through the `lookout-server` binary over real HTTP and TCP.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;
use support::{instant_query, poll, wait_ready, LookoutServer};

const REFUSED: &str = "lookout gateway is in refuse requests mode";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A remote-write 1.0 body: one sample at `t` for each metric name.
fn remote_write_body(names: &[&str], t: i64) -> Vec<u8> {
    let mut batch = WriteBatch::new();
    for name in names {
        batch.push(
            Labels::from_pairs([("__name__", *name), ("job", "mgmt")]).unwrap(),
            vec![Sample::new(t, 1.0)],
        );
    }
    lookout_gateway::remote_write::encode(&batch)
}

fn remote_write(
    client: &reqwest::blocking::Client,
    url: &str,
    body: Vec<u8>,
    app: Option<&str>,
) -> reqwest::blocking::Response {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(body);
    if let Some(app) = app {
        request = request.header("app", app);
    }
    request.send().unwrap()
}

fn metrics(client: &reqwest::blocking::Client, server: &LookoutServer) -> String {
    client
        .get(format!("{}/metrics", server.api()))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The value of the series `series` (name and labels exactly as rendered) in `metrics`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn counter(metrics: &str, name: &str, protocol: &str, reason: Option<&str>) -> f64 {
    let series = match reason {
        Some(reason) => format!("{name}{{protocol=\"{protocol}\",reason=\"{reason}\"}}"),
        None => format!("{name}{{protocol=\"{protocol}\"}}"),
    };
    value(metrics, &series).unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"))
}

/// One push of every protocol of the gateway port, each with its own metric name
/// `<prefix>_<protocol>`; the statuses by protocol name.
fn push_every_protocol(
    client: &reqwest::blocking::Client,
    server: &LookoutServer,
    prefix: &str,
) -> Vec<(&'static str, u16, Option<String>)> {
    let gateway = server.gateway();
    let now = now_ms();
    let seconds = now / 1000;
    let answer = |name: &'static str, response: reqwest::blocking::Response| {
        let err = response
            .headers()
            .get("Err")
            .map(|value| value.to_str().unwrap().to_owned());
        (name, response.status().as_u16(), err)
    };
    let sdk = format!(r#"{{"time":{now},"tags":{{"k":"v"}},"{prefix}_sdk":{{"v":1}}}}"#);
    let lookout = format!(r#"{{"time":{now},"tags":{{"k":"v"}},"{prefix}_lookout":{{"v":1}}}}"#);
    let timestamp = lookout_api::format_rfc3339(std::time::SystemTime::now());
    let bulk = format!(
        "{{\"index\":{{}}}}\n{{\"@timestamp\":\"{timestamp}\",\"metricset\":{{\"name\":\"m\"}},\
         \"{prefix}_beat\":{{\"v\":1}}}}\n"
    );
    let mut telnet = TcpStream::connect(("127.0.0.1", server.telnet_port)).unwrap();
    let lines = format!("put {prefix}_telnet {seconds} 1 host=a\nexit\n");
    telnet.write_all(lines.as_bytes()).unwrap();
    let mut telnet_answer = String::new();
    telnet.read_to_string(&mut telnet_answer).unwrap();
    let telnet_status = if telnet_answer.is_empty() { 200 } else { 400 };
    let telnet_err = (!telnet_answer.is_empty()).then(|| telnet_answer.trim_end().to_owned());
    vec![
        answer(
            "lookout_sdk",
            client
                .post(format!("{gateway}/datas"))
                .header("app", "demo")
                .body(sdk)
                .send()
                .unwrap(),
        ),
        answer(
            "lookout_metrics",
            client
                .post(format!("{gateway}/lookout/metrics/app/demo/step/10"))
                .body(lookout)
                .send()
                .unwrap(),
        ),
        answer(
            "prometheus_push",
            client
                .put(format!("{gateway}/prom/metrics/job/j/app/demo/step/10"))
                .header("X-Lookout-Token", "t")
                .body(format!("{prefix}_prom 1\n"))
                .send()
                .unwrap(),
        ),
        answer(
            "pushgateway",
            client
                .put(format!("{gateway}/metrics/job/{prefix}"))
                .body(format!("{prefix}_pushgateway 1\n"))
                .send()
                .unwrap(),
        ),
        answer(
            "metricbeat",
            client
                .post(format!("{gateway}/beat/_bulk"))
                .basic_auth("lookout", Some("t"))
                .body(bulk)
                .send()
                .unwrap(),
        ),
        answer(
            "opentsdb_http",
            client
                .post(format!("{gateway}/opentsdb/api/put"))
                .header("app", "demo")
                .header("step", "10")
                .header("X-Lookout-Token", "t")
                .body(format!(
                    r#"{{"metric":"{prefix}_opentsdb","timestamp":{seconds},"value":1,"tags":{{"h":"a"}}}}"#
                ))
                .send()
                .unwrap(),
        ),
        answer(
            "remote_write",
            remote_write(
                client,
                &format!("{gateway}/api/v1/write"),
                remote_write_body(&[&format!("{prefix}_rw")], now),
                None,
            ),
        ),
        ("opentsdb_telnet", telnet_status, telnet_err),
    ]
}

#[test]
fn refuse_mode_round_trip_over_the_management_port() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(&dir.path().join("data"), &[]);
    let management = server.management();
    wait_ready(&client, &format!("{}/datas", server.gateway()));
    let get = |path: &str| {
        let response = client.get(format!("{management}{path}")).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(get("/ok"), (200, "online".to_owned()));
    assert!(metrics(&client, &server).contains("lookout_gateway_refuse_mode 0\n"));

    assert_eq!(get("/cmd/down"), (200, "ok".to_owned()));
    assert_eq!(
        get("/ok"),
        (200, "online".to_owned()),
        "the port still answers"
    );
    for (protocol, status, err) in push_every_protocol(&client, &server, "down") {
        assert_eq!(status, 400, "{protocol} in refuse mode");
        let expected = if protocol == "opentsdb_telnet" {
            format!("put: {REFUSED}")
        } else {
            REFUSED.to_owned()
        };
        assert_eq!(err.as_deref(), Some(expected.as_str()), "{protocol}");
    }
    // The body carries the message too, and the SDK's liveness probe fails.
    let probe = client
        .get(format!("{}/datas", server.gateway()))
        .send()
        .unwrap();
    assert_eq!(probe.status(), 400);
    assert_eq!(probe.text().unwrap(), REFUSED);
    // The query port's receiver is not the gateway: it keeps accepting.
    let now = now_ms();
    let api_write = remote_write(
        &client,
        &format!("{}/api/v1/write", server.api()),
        remote_write_body(&["down_api"], now),
        None,
    );
    assert_eq!(api_write.status(), 204);
    let stored = instant_query(&client, &server.api(), r#"{__name__=~"down_.*"}"#);
    let names: Vec<&str> = stored
        .iter()
        .map(|series| series["metric"]["__name__"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["down_api"], "nothing of the gateway port stored");
    let text = metrics(&client, &server);
    assert!(text.contains("lookout_gateway_refuse_mode 1\n"), "{text}");
    for protocol in [
        "lookout_sdk",
        "lookout_metrics",
        "prometheus_push",
        "pushgateway",
        "metricbeat",
        "opentsdb_http",
        "remote_write",
        "opentsdb_telnet",
    ] {
        let name = "lookout_gateway_requests_refused_total";
        assert_eq!(
            counter(&text, name, protocol, Some("refuse_mode")),
            1.0,
            "{protocol}"
        );
        assert_eq!(
            counter(&text, "lookout_gateway_requests_total", protocol, None),
            1.0,
            "{protocol}"
        );
    }

    // Unknown commands change nothing; up leaves the mode.
    assert_eq!(get("/cmd/restart"), (200, "ok".to_owned()));
    assert!(metrics(&client, &server).contains("lookout_gateway_refuse_mode 1\n"));
    assert_eq!(get("/cmd/up"), (200, "ok".to_owned()));
    for (protocol, status, err) in push_every_protocol(&client, &server, "up") {
        assert!(
            (200..300).contains(&status),
            "{protocol} after up: {status} {err:?}"
        );
    }
    let stored = instant_query(&client, &server.api(), r#"count({__name__=~"up_.*"})"#);
    assert_eq!(stored[0]["value"][1], "8", "one series per protocol");
    assert!(metrics(&client, &server).contains("lookout_gateway_refuse_mode 0\n"));
}

#[test]
fn the_management_port_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(&dir.path().join("data"), &["--management.disable"]);
    let flags: serde_json::Value = client
        .get(format!("{}/api/v1/status/flags", server.api()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(flags["data"]["management.disable"], "true");
    assert_eq!(flags["data"]["management.listen-address"], "");
    assert!(
        client
            .get(format!("{}/ok", server.management()))
            .send()
            .is_err(),
        "nothing listens on the management port"
    );
}

#[test]
fn rate_limits_per_app() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    // One request per 100 s after a burst of one: the loops below cannot earn a second.
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &[
            "--gateway.rate-limit",
            "*=0.01",
            "--gateway.rate-limit",
            "free=0",
            "--gateway.token-app",
            "rwtok=mapped",
        ],
    );
    let gateway = server.gateway();
    wait_ready(&client, &format!("{gateway}/datas"));
    let now = now_ms();
    let send = |path: &str, app: Option<&str>, name: &str| {
        let mut request = client.post(format!("{gateway}{path}")).body(format!(
            r#"{{"time":{now},"tags":{{}},"{name}":{{"v":1}}}}"#
        ));
        if let Some(app) = app {
            request = request.header("app", app);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let err = response
            .headers()
            .get("Err")
            .map(|value| value.to_str().unwrap().to_owned());
        (status, err)
    };
    let mut accepted = [0u32; 3];
    for round in 0..5 {
        // The app from the `app` header.
        match send("/datas", Some("demo"), &format!("rl_demo_{round}")) {
            (200, _) => accepted[0] += 1,
            (400, Some(err)) => assert_eq!(err, "RATE_LIMITED"),
            other => panic!("{other:?}"),
        }
        // The app from the path; its own bucket.
        match send(
            "/lookout/metrics/app/other/step/10",
            None,
            &format!("rl_other_{round}"),
        ) {
            (200, _) => accepted[1] += 1,
            (400, Some(err)) => assert_eq!(err, "RATE_LIMITED"),
            other => panic!("{other:?}"),
        }
        // A rate of 0 is unlimited.
        match send("/datas", Some("free"), &format!("rl_free_{round}")) {
            (200, _) => accepted[2] += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, [1, 1, 5]);
    // A request refused for its token does not use up its app's allowance (the token is
    // checked before the rate limit, spec §4.1): the next one with a token is written.
    let push = |token: Option<&str>| {
        let mut request = client
            .post(format!("{gateway}/prom/metrics/job/j/app/tokenapp/step/10"))
            .body(format!("rl_token_order 1 {now}\n"));
        if let Some(token) = token {
            request = request.header("X-Lookout-Token", token);
        }
        let response = request.send().unwrap();
        let err = response
            .headers()
            .get("Err")
            .map(|value| value.to_str().unwrap().to_owned());
        (response.status().as_u16(), err)
    };
    assert_eq!(push(None), (400, Some("token is empty".to_owned())));
    assert_eq!(push(Some("t")).0, 202);
    assert_eq!(push(Some("t")), (400, Some("RATE_LIMITED".to_owned())));
    // Remote write with an `app` header: 503 + Retry-After, which Prometheus retries.
    let url = format!("{gateway}/api/v1/write");
    let first = remote_write(
        &client,
        &url,
        remote_write_body(&["rl_rw"], now),
        Some("rw"),
    );
    assert_eq!(first.status(), 204);
    let second = remote_write(
        &client,
        &url,
        remote_write_body(&["rl_rw2"], now),
        Some("rw"),
    );
    assert_eq!(second.status(), 503);
    let retry_after: u64 = second.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    // Without an app header, the app its token is mapped to.
    let with_token = |name: &str| {
        client
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Lookout-Token", "rwtok")
            .body(remote_write_body(&[name], now))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with_token("rl_tok"), 204);
    assert_eq!(with_token("rl_tok2"), 503);
    // Without an app (no header, no mapped token, no path tag) a request is not limited.
    for round in 0..3 {
        let name = format!("rl_anon_{round}");
        let response = remote_write(&client, &url, remote_write_body(&[&name], now), None);
        assert_eq!(response.status(), 204);
    }

    let stored = instant_query(&client, &server.api(), r#"{__name__=~"rl_.*"}"#);
    let mut names: Vec<String> = stored
        .iter()
        .map(|series| series["metric"]["__name__"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    let text = metrics(&client, &server);
    let refused = |protocol| {
        counter(
            &text,
            "lookout_gateway_requests_refused_total",
            protocol,
            Some("rate_limited"),
        )
    };
    assert_eq!(refused("lookout_sdk"), 4.0);
    assert_eq!(refused("lookout_metrics"), 4.0);
    assert_eq!(refused("remote_write"), 2.0);
    // What was stored is what the self-metrics count as accepted.
    let accepted_samples = |protocol| {
        counter(
            &text,
            "lookout_gateway_samples_accepted_total",
            protocol,
            None,
        )
    };
    let sdk_stored = names
        .iter()
        .filter(|name| name.starts_with("rl_demo") || name.starts_with("rl_free"))
        .count();
    assert_eq!(sdk_stored, 6, "{names:?}");
    assert_eq!(accepted_samples("lookout_sdk"), sdk_stored as f64);
    let other_stored = names
        .iter()
        .filter(|name| name.starts_with("rl_other"))
        .count();
    assert_eq!(other_stored, 1, "{names:?}");
    assert_eq!(accepted_samples("lookout_metrics"), 1.0);
    assert_eq!(accepted_samples("remote_write"), 5.0);
    for refused in ["rl_rw2", "rl_tok2"] {
        assert!(!names.contains(&refused.to_owned()), "{names:?}");
    }
    assert!(names.contains(&"rl_tok".to_owned()), "{names:?}");
}

#[test]
fn too_old_samples_are_refused_and_the_rest_of_the_batch_written() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--gateway.max-sample-age", "1h"],
    );
    let gateway = server.gateway();
    wait_ready(&client, &format!("{gateway}/datas"));
    let now = now_ms();
    let old = now - 2 * 3_600_000;
    // Remote write is not filtered: its senders backfill after outages, and the store
    // applies its own time bounds.
    let response = remote_write(
        &client,
        &format!("{gateway}/api/v1/write"),
        remote_write_body(&["old_rw"], old),
        None,
    );
    assert_eq!(response.status(), 204);
    // One SDK report: a fresh measurement and an old one.
    let report = format!(
        "{{\"time\":{now},\"tags\":{{}},\"fresh_sdk\":{{\"v\":1}}}}\t\
         {{\"time\":{old},\"tags\":{{}},\"old_sdk\":{{\"v\":1}}}}"
    );
    let response = client
        .post(format!("{gateway}/datas"))
        .header("app", "demo")
        .body(report)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // OpenTSDB reports the refused point as failed.
    let points = serde_json::json!([
        {"metric": "fresh_tsdb", "timestamp": now / 1000, "value": 1, "tags": {"h": "a"}},
        {"metric": "old_tsdb", "timestamp": old / 1000, "value": 1, "tags": {"h": "a"}},
    ]);
    let response = client
        .post(format!("{gateway}/api/put?summary"))
        .json(&points)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().unwrap(),
        serde_json::json!({"failed": 1, "success": 1})
    );
    // Telnet answers the refusal in a line.
    let mut telnet = TcpStream::connect(("127.0.0.1", server.telnet_port)).unwrap();
    let lines = format!(
        "put fresh_telnet {} 1 h=a\nput old_telnet {} 1 h=a\nexit\n",
        now / 1000,
        old / 1000
    );
    telnet.write_all(lines.as_bytes()).unwrap();
    let mut answer = String::new();
    telnet.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer,
        "put: 1 data points older than max_sample_age refused (too_old)\n"
    );

    let fresh = instant_query(&client, &server.api(), r#"{__name__=~"fresh_.*"}"#);
    assert_eq!(fresh.len(), 3, "{fresh:?}");
    let old_series = instant_query(
        &client,
        &server.api(),
        r#"count_over_time({__name__=~"old_.*"}[3h])"#,
    );
    assert_eq!(old_series.len(), 1, "only remote write's: {old_series:?}");
    assert_eq!(old_series[0]["metric"]["job"], "mgmt");
    let text = metrics(&client, &server);
    for protocol in ["lookout_sdk", "opentsdb_http", "opentsdb_telnet"] {
        let name = "lookout_gateway_samples_rejected_total";
        assert_eq!(
            counter(&text, name, protocol, Some("too_old")),
            1.0,
            "{protocol}"
        );
        let accepted = counter(
            &text,
            "lookout_gateway_samples_accepted_total",
            protocol,
            None,
        );
        assert_eq!(accepted, 1.0, "{protocol}");
    }
    let name = "lookout_gateway_samples_rejected_total";
    assert_eq!(counter(&text, name, "remote_write", Some("too_old")), 0.0);
}

/// Sends the headers and the first half of a remote-write request on a raw connection, and
/// leaves the rest for later: a slow sender whose request holds its in-flight place.
fn start_slow_write(port: u16, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    stream.flush().unwrap();
    stream
}

/// Sends the rest of the body and reads the status line of the answer.
fn finish_slow_write(mut stream: TcpStream, body: &[u8]) -> String {
    stream.write_all(&body[body.len() / 2..]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).unwrap();
    status.trim_end().to_owned()
}

#[test]
fn in_flight_bounds_answer_503_on_both_remote_write_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &[
            "--web.max-in-flight-remote-writes",
            "1",
            "--gateway.max-in-flight-requests",
            "1",
            "--gateway.retry-after-seconds",
            "3",
        ],
    );
    wait_ready(&client, &format!("{}/datas", server.gateway()));
    let now = now_ms();
    for (port, url, gauge, protocol) in [
        (
            server.api_port,
            format!("{}/api/v1/write", server.api()),
            "lookout_api_remote_write_in_flight_requests",
            "api_remote_write",
        ),
        (
            server.gateway_port,
            format!("{}/api/v1/write", server.gateway()),
            "lookout_gateway_in_flight_requests",
            "remote_write",
        ),
    ] {
        let slow_body = remote_write_body(&[&format!("slow_{protocol}")], now);
        let slow = start_slow_write(port, &slow_body);
        // The slow request holds the only place as soon as its headers are in.
        let held = poll(Duration::from_secs(30), || {
            (value(&metrics(&client, &server), gauge) == Some(1.0)).then_some(())
        });
        assert!(held.is_some(), "{gauge} never reached 1");
        let refused = remote_write(
            &client,
            &url,
            remote_write_body(&[&format!("refused_{protocol}")], now),
            None,
        );
        assert_eq!(refused.status(), 503, "{protocol}");
        assert_eq!(refused.headers()["Retry-After"], "3");
        assert_eq!(
            finish_slow_write(slow, &slow_body),
            "HTTP/1.1 204 No Content",
            "{protocol}: the admitted write completes"
        );
        let again = remote_write(
            &client,
            &url,
            remote_write_body(&[&format!("again_{protocol}")], now),
            None,
        );
        assert_eq!(again.status(), 204, "{protocol}: room again");
        let text = metrics(&client, &server);
        let count = |name, reason| counter(&text, name, protocol, reason);
        assert_eq!(
            count("lookout_gateway_requests_refused_total", Some("overloaded")),
            1.0
        );
        assert_eq!(count("lookout_gateway_requests_total", None), 3.0);
        assert_eq!(count("lookout_gateway_samples_accepted_total", None), 2.0);
        assert_eq!(value(&text, gauge), Some(0.0));
        assert_eq!(value(&text, &format!("{gauge}_limit")), Some(1.0));
    }
    let stored = instant_query(
        &client,
        &server.api(),
        r#"{__name__=~"(slow|refused|again)_.*"}"#,
    );
    let mut names: Vec<&str> = stored
        .iter()
        .map(|series| series["metric"]["__name__"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "again_api_remote_write",
            "again_remote_write",
            "slow_api_remote_write",
            "slow_remote_write"
        ]
    );
}

#[test]
fn telnet_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--opentsdb.max-connections", "1"],
    );
    let port = server.telnet_port;
    // The first answer line to `version`, if the connection is served.
    let version = |stream: &mut TcpStream| -> Option<String> {
        stream.write_all(b"version\n").ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let mut line = String::new();
        BufReader::new(stream.try_clone().ok()?)
            .read_line(&mut line)
            .ok()?;
        line.starts_with("lookout-server").then_some(line)
    };
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(version(&mut first).is_some());
    // The first connection is being served: the second is told and closed.
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut answer = String::new();
    second.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "put: too many connections (1 open); retry later\n");
    let text = metrics(&client, &server);
    let name = "lookout_gateway_requests_refused_total";
    assert_eq!(
        counter(&text, name, "opentsdb_telnet", Some("overloaded")),
        1.0
    );
    // Once the first one is gone, a new connection is served.
    first.write_all(b"exit\n").unwrap();
    drop(first);
    let served = poll(Duration::from_secs(30), || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        version(&mut stream)
    });
    assert!(
        served.is_some(),
        "no connection served after the first closed"
    );
}
