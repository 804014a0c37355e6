//! Lookout scraping targets itself, through the `lookout-server` binary: a real
//! node_exporter (from PATH; skipped with a reason when missing), also scraped by a real
//! Prometheus with the same relabelling to compare the stored series, the server's own `/metrics`,
//! SIGHUP reloads, SOFALookout's `metric_scrape/` directory, and stale markers when a series
//! or a target goes away (PromQL stops returning it at once, not after the 5 m lookback).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    free_port, node_exporter_binary, start_node_exporter, wait_ready, Killed, LookoutServer,
};

/// How long a condition may take to hold (scrapes run every second).
const WAIT: Duration = Duration::from_secs(30);

/// The instant query's result vector.
fn query(
    client: &reqwest::blocking::Client,
    server: &LookoutServer,
    expr: &str,
) -> Vec<serde_json::Value> {
    support::instant_query(client, &server.api(), expr)
}

/// Polls `check` every 200 ms until it holds; panics with `what` after [`WAIT`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not happen within {WAIT:?}");
}

fn value_of(series: &serde_json::Value) -> String {
    series["value"][1].as_str().unwrap().to_owned()
}

fn targets(client: &reqwest::blocking::Client, server: &LookoutServer) -> serde_json::Value {
    client
        .get(format!("{}/api/v1/targets", server.api()))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn hangup(server: &LookoutServer) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(server.process.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn lookout_scrapes_node_exporter() {
    let Some(binary) = node_exporter_binary() else {
        println!("SKIPPED: prometheus-node-exporter (or node_exporter) is not on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let textfile_dir = dir.path().join("textfile");
    std::fs::create_dir(&textfile_dir).unwrap();
    let probe_file = textfile_dir.join("probe.prom");
    write(&probe_file, "lookout_probe{kind=\"a\"} 42\n");
    let (_exporter, exporter_port) = start_node_exporter(&client, binary, &textfile_dir);
    let config = dir.path().join("scrape.yml");
    write(
        &config,
        &format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: node\n  \
             static_configs: [{{targets: ['127.0.0.1:{exporter_port}'], labels: {{env: test}}}}]\n  \
             metric_relabel_configs:\n  - {{source_labels: [__name__], regex: 'go_.*', action: drop}}\n"
        ),
    );
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--scrape.config-file", config.to_str().unwrap()],
    );
    wait_until("up{job=\"node\"} == 1", || {
        query(&client, &server, r#"up{job="node"}"#)
            .first()
            .is_some_and(|series| value_of(series) == "1")
    });
    let up = &query(&client, &server, r#"up{job="node"}"#)[0];
    assert_eq!(
        up["metric"]["instance"],
        format!("127.0.0.1:{exporter_port}")
    );
    assert_eq!(up["metric"]["env"], "test");
    // A node metric and the textfile probe, with the target's labels.
    wait_until("node_exporter's own metrics", || {
        !query(&client, &server, r#"node_exporter_build_info{job="node"}"#).is_empty()
    });
    let probe = query(&client, &server, r#"lookout_probe{job="node"}"#);
    assert_eq!(value_of(&probe[0]), "42");
    assert_eq!(probe[0]["metric"]["kind"], "a");
    // metric_relabel_configs dropped the Go runtime metrics.
    assert!(query(&client, &server, r#"{__name__=~"go_.*",job="node"}"#).is_empty());
    let scraped = query(&client, &server, r#"scrape_samples_scraped{job="node"}"#);
    let post = query(
        &client,
        &server,
        r#"scrape_samples_post_metric_relabeling{job="node"}"#,
    );
    let scraped: f64 = value_of(&scraped[0]).parse().unwrap();
    let post: f64 = value_of(&post[0]).parse().unwrap();
    assert!(
        scraped > post && post > 100.0,
        "scraped {scraped}, kept {post}"
    );
    // /api/v1/targets in Prometheus' shape.
    let answer = targets(&client, &server);
    let target = &answer["data"]["activeTargets"][0];
    assert_eq!(target["scrapePool"], "node");
    assert_eq!(target["health"], "up");
    assert_eq!(target["lastError"], "");
    assert_eq!(
        target["scrapeUrl"],
        format!("http://127.0.0.1:{exporter_port}/metrics")
    );
    assert_eq!(target["scrapeInterval"], "1s");
    assert_eq!(
        target["discoveredLabels"]["__address__"],
        format!("127.0.0.1:{exporter_port}")
    );
    // The probe leaves the textfile: a stale marker ends it at the next scrape.
    std::fs::remove_file(&probe_file).unwrap();
    wait_until("lookout_probe to go stale", || {
        query(&client, &server, r#"lookout_probe{job="node"}"#).is_empty()
    });
    // Self-metrics count the scrapes.
    let metrics = client
        .get(format!("{}/metrics", server.api()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let accepted = metrics
        .lines()
        .find(|line| {
            line.starts_with("lookout_gateway_samples_accepted_total{protocol=\"scrape\"}")
        })
        .unwrap();
    let count: f64 = accepted.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count > 100.0, "{accepted}");
}

#[test]
fn sighup_reloads_and_a_removed_target_goes_stale() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let config = dir.path().join("scrape.yml");
    // No targets at first; the server's own API port is the target added by the reload.
    write(&config, "scrape_configs: []\n");
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--scrape.config-file", config.to_str().unwrap()],
    );
    assert_eq!(
        targets(&client, &server)["data"]["activeTargets"],
        serde_json::json!([])
    );
    write(
        &config,
        &format!(
            "scrape_configs:\n- job_name: self\n  scrape_interval: 1s\n  \
             static_configs: [{{targets: ['127.0.0.1:{}']}}]\n- job_name: missing\n  \
             scrape_interval: 1s\n  static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            server.api_port,
            free_port()
        ),
    );
    hangup(&server);
    wait_until("up{job=\"self\"} == 1 after SIGHUP", || {
        query(&client, &server, r#"up{job="self"}"#)
            .first()
            .is_some_and(|series| value_of(series) == "1")
    });
    wait_until("up{job=\"missing\"} == 0", || {
        query(&client, &server, r#"up{job="missing"}"#)
            .first()
            .is_some_and(|series| value_of(series) == "0")
    });
    let answer = targets(&client, &server);
    let down = answer["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|target| target["scrapePool"] == "missing")
        .unwrap()
        .clone();
    assert_eq!(down["health"], "down");
    assert!(!down["lastError"].as_str().unwrap().is_empty());
    // A configuration that does not load keeps the running one.
    write(&config, "scrape_configs: [{job_name: self, scheme: ftp}]\n");
    hangup(&server);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        targets(&client, &server)["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Both targets leave: their series end with stale markers, not after the lookback.
    write(&config, "scrape_configs: []\n");
    hangup(&server);
    wait_until("up of both jobs to go stale", || {
        query(&client, &server, "up").is_empty()
    });
    assert!(query(
        &client,
        &server,
        r#"lookout_gateway_requests_total{job="self"}"#
    )
    .is_empty());
    assert_eq!(
        targets(&client, &server)["data"]["activeTargets"],
        serde_json::json!([])
    );
}

#[test]
fn sofalookout_metric_scrape_directory() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let jobs = dir.path().join("metric_scrape");
    std::fs::create_dir(&jobs).unwrap();
    // The port is only known once the server runs: start it on the empty directory, write
    // the job file, then SIGHUP (the 60 s rescan would find it too).
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--scrape.sofalookout-dir", jobs.to_str().unwrap()],
    );
    write(
        &jobs.join("lookout.yml"),
        &format!(
            "metric_scrape_configs:\n  - job_name: lookout-self\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            server.api_port
        ),
    );
    write(
        &jobs.join("broken.yml"),
        "metric_scrape_configs: [{job_name: x}]\n",
    );
    hangup(&server);
    wait_until("up{app=\"lookout-self\"} == 1", || {
        query(
            &client,
            &server,
            r#"up{job="lookout-self",app="lookout-self"}"#,
        )
        .first()
        .is_some_and(|series| value_of(series) == "1")
    });
    let prom_targets: serde_json::Value = client
        .get(format!("{}/prom/targets", server.gateway()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entry = &prom_targets["lookout-self"][0];
    assert_eq!(
        entry["endpoint"],
        format!("http://127.0.0.1:{}/metrics", server.api_port)
    );
    assert_eq!(entry["successful"], true);
    assert_eq!(entry["error"], serde_json::Value::Null);
    assert!(entry["lastScrapedTime"].as_str().unwrap().ends_with('Z'));
    assert!(
        prom_targets.get("x").is_none(),
        "the broken file is left out"
    );
}

/// The series of `matcher` in `/api/v1/series` of `base`, as sorted JSON texts.
fn series_set(client: &reqwest::blocking::Client, base: &str, matcher: &str) -> Vec<String> {
    let answer: serde_json::Value = client
        .get(format!("{base}/api/v1/series"))
        .query(&[("match[]", matcher)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut series: Vec<String> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|labels| labels.to_string())
        .collect();
    series.sort();
    series
}

#[test]
fn relabelling_matches_prometheus_on_the_same_target() {
    let Some(binary) = node_exporter_binary() else {
        println!("SKIPPED: prometheus-node-exporter (or node_exporter) is not on PATH");
        return;
    };
    if !support::prometheus_installed() {
        println!("SKIPPED: prometheus is not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let textfile_dir = dir.path().join("textfile");
    std::fs::create_dir(&textfile_dir).unwrap();
    write(
        &textfile_dir.join("probe.prom"),
        "probe_a{kind=\"x\",secret=\"s\",job=\"inner\"} 1\nprobe_b{kind=\"drop\"} 2\n\
         probe_c{kind=\"Y\",instance=\"other\"} 3\n",
    );
    let (_exporter, exporter_port) = start_node_exporter(&client, binary, &textfile_dir);
    // One file for both: Prometheus' syntax is Lookout's.
    let config_text = format!(
        r#"global: {{scrape_interval: 1s}}
scrape_configs:
- job_name: node
  static_configs: [{{targets: ['127.0.0.1:{exporter_port}'], labels: {{team: Infra, __meta_zone: eu-1}}}}]
  relabel_configs:
  - {{regex: '__meta_(.*)', action: labelmap, replacement: 'meta_$1'}}
  - {{source_labels: [__address__], modulus: 7, target_label: shard, action: hashmod}}
  - {{source_labels: [team], target_label: team_lower, action: lowercase}}
  - {{source_labels: [__address__], regex: '([^:]+):(\d+)', target_label: port, replacement: 'p$2'}}
  metric_relabel_configs:
  - {{source_labels: [__name__], regex: 'probe_.*', action: keep}}
  - {{source_labels: [kind], regex: drop, action: drop}}
  - {{regex: secret, action: labeldrop}}
  - {{source_labels: [kind, team], separator: '-', target_label: combo}}
  - {{source_labels: [kind], target_label: kind_upper, action: uppercase}}
"#
    );
    let config = dir.path().join("scrape.yml");
    write(&config, &config_text);
    let prometheus_port = free_port();
    let prometheus_dir = dir.path().join("prometheus-dir");
    std::fs::create_dir(&prometheus_dir).unwrap();
    let _prometheus =
        support::start_prometheus(&client, &prometheus_dir, prometheus_port, &config_text, &[]);
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--scrape.config-file", config.to_str().unwrap()],
    );
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let matcher = r#"{__name__=~"probe_.*|up"}"#;
    wait_until("both to have scraped the probes", || {
        series_set(&client, &prometheus, matcher).len() == 3
            && series_set(&client, &server.api(), matcher).len() == 3
    });
    let expected = series_set(&client, &prometheus, matcher);
    assert_eq!(series_set(&client, &server.api(), matcher), expected);
    // Spot checks that the comparison covers the actions.
    let joined = expected.join("\n");
    for needle in [
        "\"exported_job\":\"inner\"",
        "\"exported_instance\":\"other\"",
        "\"meta_zone\":\"eu-1\"",
        "\"team_lower\":\"infra\"",
        "\"combo\":\"x-Infra\"",
        "\"kind_upper\":\"Y\"",
        &format!("\"port\":\"p{exporter_port}\""),
        "\"shard\":",
    ] {
        assert!(joined.contains(needle), "{needle} not in {joined}");
    }
    assert!(!joined.contains("secret"));
}

/// A Python with the official `prometheus_client` (Debian's python3-prometheus-client).
fn python_with_prometheus_client() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import prometheus_client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// The official Python client serves OpenMetrics to a scraper that asks for it (Lookout does,
/// with Prometheus' `Accept`): counters' `_created` series are creation times, not samples.
#[test]
fn scrapes_openmetrics_from_the_python_client() {
    let Some(python) = python_with_prometheus_client() else {
        println!("SKIPPED: python3 with prometheus_client (python3-prometheus-client) not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let port = free_port();
    let script = "import sys, time\n\
        from prometheus_client import start_http_server, Counter, Gauge, Histogram\n\
        Counter('demo_requests', 'Requests.', ['code']).labels('200').inc(3)\n\
        Histogram('demo_latency_seconds', 'Latency.').observe(0.2)\n\
        Gauge('demo_temperature_celsius', 'Temperature.').set(21.5)\n\
        start_http_server(int(sys.argv[1]), addr='127.0.0.1')\n\
        time.sleep(120)\n";
    let _target = Killed(
        Command::new(python)
            .args(["-c", script, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&client, &format!("http://127.0.0.1:{port}/metrics"));
    let served = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .unwrap();
    let content_type = served.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let config = dir.path().join("scrape.yml");
    write(
        &config,
        &format!(
            "scrape_configs:\n- job_name: py\n  scrape_interval: 1s\n  \
             static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        ),
    );
    let server = LookoutServer::start(
        &dir.path().join("data"),
        &["--scrape.config-file", config.to_str().unwrap()],
    );
    wait_until("demo_requests_total", || {
        !query(&client, &server, r#"demo_requests_total{job="py"}"#).is_empty()
    });
    let requests = query(&client, &server, r#"demo_requests_total{job="py"}"#);
    assert_eq!(value_of(&requests[0]), "3");
    assert_eq!(requests[0]["metric"]["code"], "200");
    let bucket = query(
        &client,
        &server,
        r#"demo_latency_seconds_bucket{job="py",le="+Inf"}"#,
    );
    assert_eq!(value_of(&bucket[0]), "1");
    let gauge = query(&client, &server, r#"demo_temperature_celsius{job="py"}"#);
    assert_eq!(value_of(&gauge[0]), "21.5");
    assert!(query(&client, &server, r#"{__name__=~".*_created",job="py"}"#).is_empty());
    assert_eq!(
        value_of(&query(&client, &server, r#"up{job="py"}"#)[0]),
        "1"
    );
}
