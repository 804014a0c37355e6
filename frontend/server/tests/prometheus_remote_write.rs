//! A real Prometheus (from PATH; `.ci/run` installs Debian's `prometheus`) scrapes itself and
//! remote-writes what it scrapes to `lookout-server`; the series must arrive. Skips with a
//! printed reason when `prometheus` is not installed.

mod support;

use std::time::{Duration, Instant};

use support::{free_port, prometheus_installed, start_prometheus, LookoutServer};

#[test]
fn a_real_prometheus_remote_writes_into_lookout() {
    if !prometheus_installed() {
        println!("SKIPPED: `prometheus` is not on PATH (apt-get install prometheus; .ci/run does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let lookout = LookoutServer::start(&dir.path().join("lookout"), &[]);
    let lookout_port = lookout.api_port;

    let prometheus_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prometheus_port}']\n\
         remote_write:\n  - url: http://127.0.0.1:{lookout_port}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n"
    );
    let _prometheus = start_prometheus(
        &client,
        dir.path(),
        prometheus_port,
        &config,
        &["--storage.remote.flush-deadline=5s"],
    );

    let series_url =
        format!("http://127.0.0.1:{lookout_port}/api/v1/series?match[]=up{{job=\"prometheus\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: serde_json::Value = client.get(&series_url).send().unwrap().json().unwrap();
        if body["data"]
            .as_array()
            .is_some_and(|series| !series.is_empty())
        {
            assert_eq!(
                body["data"][0]["instance"],
                format!("127.0.0.1:{prometheus_port}")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no remote-written series arrived within 60 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Prometheus' own metrics arrived too: hundreds of series.
    let names: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{lookout_port}/api/v1/label/__name__/values"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let count = names["data"].as_array().map_or(0, Vec::len);
    assert!(count > 50, "only {count} metric names arrived");
}
