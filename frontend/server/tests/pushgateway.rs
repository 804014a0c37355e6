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

/// One series as both sides show it: name and non-empty labels, sorted.
type SeriesKey = (String, Vec<(String, String)>);

/// The groups' series as a real Pushgateway exposes them on `/metrics` (only the families of
/// this test and the push-time gauges of its job), with labels whose value is empty dropped as
/// Prometheus drops them when it scrapes. Values: `None` for the push-time gauges, which differ
/// between the two by construction.
fn pushgateway_state(
    client: &reqwest::blocking::Client,
    base: &str,
    job: &str,
) -> std::collections::BTreeMap<SeriesKey, Option<String>> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let timed = name == "push_time_seconds" || name == "push_failure_time_seconds";
        if !(name.starts_with("pgd_") || timed) {
            continue;
        }
        let mut pairs: Vec<(String, String)> = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (label, value) = pair.split_once("=\"")?;
                let value = value.trim_end_matches('"');
                (!value.is_empty()).then(|| (label.to_owned(), value.to_owned()))
            })
            .collect();
        pairs.sort();
        if !pairs
            .iter()
            .any(|(label, value)| label == "job" && value == job)
        {
            continue;
        }
        let value = (!timed).then(|| normalize_number(value));
        out.insert((name.to_owned(), pairs), value);
    }
    out
}

/// The same view from Lookout: the latest sample of every series of the job.
fn lookout_state(
    client: &reqwest::blocking::Client,
    api: &str,
    job: &str,
) -> std::collections::BTreeMap<SeriesKey, Option<String>> {
    let selector = format!(
        r#"{{__name__=~"pgd_.*|push_time_seconds|push_failure_time_seconds", job="{job}"}}"#
    );
    let answer: serde_json::Value = client
        .get(format!("{api}/api/v1/query"))
        .query(&[("query", selector.as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for series in answer["data"]["result"].as_array().unwrap() {
        let metric = series["metric"].as_object().unwrap();
        let name = metric["__name__"].as_str().unwrap().to_owned();
        let mut pairs: Vec<(String, String)> = metric
            .iter()
            .filter(|(label, _)| *label != "__name__")
            .map(|(label, value)| (label.clone(), value.as_str().unwrap().to_owned()))
            .collect();
        pairs.sort();
        let timed = name == "push_time_seconds" || name == "push_failure_time_seconds";
        let value = (!timed).then(|| normalize_number(series["value"][1].as_str().unwrap()));
        out.insert((name, pairs), value);
    }
    out
}

fn normalize_number(text: &str) -> String {
    text.parse::<f64>()
        .map(|value| format!("{value:?}"))
        .unwrap_or_else(|_| text.to_owned())
}

/// The same PUT / POST / DELETE sequence against a real Pushgateway and against Lookout's
/// Pushgateway API: every answer's status and, after every step, the set of series with their
/// values (the push-time gauges by presence) must be the same.
#[test]
fn the_same_sequence_gives_what_the_real_pushgateway_gives() {
    let Some(program) = ["prometheus-pushgateway", "pushgateway"]
        .into_iter()
        .find(|program| support::on_path(program, "--version"))
    else {
        eprintln!("SKIPPED: prometheus-pushgateway not found on PATH (apt-get install prometheus-pushgateway)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let pg_port = free_port();
    let _pushgateway = Killed(
        Command::new(program)
            .arg(format!("--web.listen-address=127.0.0.1:{pg_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pg = format!("http://127.0.0.1:{pg_port}");
    wait_ready(&client, &format!("{pg}/-/ready"));
    let lookout = support::LookoutServer::start(&dir.path().join("data"), &[]);
    wait_ready(&client, &format!("{}/datas", lookout.gateway()));

    let job = "pgdiff";
    // (method, grouping path after /metrics/job/<job>, body)
    let steps: [(reqwest::Method, &str, &str); 9] = [
        (
            reqwest::Method::PUT,
            "/db/orders",
            "# TYPE pgd_rows gauge\npgd_rows{table=\"a\"} 10\npgd_rows{table=\"b\"} 20\npgd_ok 1\n",
        ),
        // Another group of the same job; a value that needs base64 in the path ("a/b").
        (
            reqwest::Method::PUT,
            "/db@base64/YS9i",
            "pgd_ok 1\npgd_size 3.5\n",
        ),
        // POST replaces the pushed families only.
        (
            reqwest::Method::POST,
            "/db/orders",
            "pgd_rows{table=\"c\"} 30\n",
        ),
        // PUT replaces the whole group.
        (reqwest::Method::PUT, "/db/orders", "pgd_ok 0\n"),
        // A body that does not parse: refused, the group unchanged.
        (reqwest::Method::PUT, "/db/orders", "pgd_ok{ 1\n"),
        // A sample carrying a grouping label with another value (the grouping key wins).
        (
            reqwest::Method::POST,
            "/db/orders",
            "pgd_ok{db=\"other\"} 1\n",
        ),
        // An empty POST keeps the group and only refreshes its push time.
        (reqwest::Method::POST, "/db/orders", ""),
        (reqwest::Method::DELETE, "/db/orders", ""),
        (reqwest::Method::DELETE, "/db@base64/YS9i", ""),
    ];
    for (index, (method, grouping, body)) in steps.iter().enumerate() {
        let send = |base: &str| {
            client
                .request(
                    method.clone(),
                    format!("{base}/metrics/job/{job}{grouping}"),
                )
                .body(body.to_string())
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        let theirs = send(&pg);
        let ours = send(&lookout.gateway());
        assert_eq!(ours, theirs, "step {index}: {method} {grouping} {body:?}");
        let expected = pushgateway_state(&client, &pg, job);
        let same = support::poll(std::time::Duration::from_secs(10), || {
            let got = lookout_state(&client, &lookout.api(), job);
            (got == expected).then_some(())
        });
        assert!(
            same.is_some(),
            "step {index}: {method} {grouping} {body:?}\npushgateway: {expected:#?}\nlookout: {:#?}",
            lookout_state(&client, &lookout.api(), job)
        );
    }
}
