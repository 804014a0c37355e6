//! The real `promtool` (Debian's `prometheus` package ships it) queries Lookout: `query
//! series`, `query labels`, `query instant` and `query range`. Skipped with a reason when
//! `promtool` is not on PATH.

mod support;

use std::process::Command;

use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;
use support::LookoutServer;

/// A server holding three `up` series at 1700000000, 1700000015 and 1700000030; returns it
/// with its base URL, or `None` (after printing why) when promtool is missing.
fn server_with_data(dir: &std::path::Path) -> Option<(LookoutServer, String)> {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("skipped: promtool not found on PATH (apt-get install prometheus)");
        return None;
    }
    let server = LookoutServer::start(&dir.join("data"), &[]);
    let url = server.api();
    let client = reqwest::blocking::Client::new();
    let mut batch = WriteBatch::new();
    for (job, instance, value) in [("api", "a:1", 1.0), ("api", "b:1", 1.0), ("db", "c:1", 0.0)] {
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", job), ("instance", instance)]).unwrap(),
            [0, 15_000, 30_000]
                .iter()
                .map(|offset| Sample::new(1_700_000_000_000 + offset, value))
                .collect(),
        );
    }
    let response = client
        .post(format!("{url}/api/v1/write"))
        .body(lookout_gateway::remote_write::encode(&batch))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    Some((server, url))
}

/// Runs `promtool query <args>`; returns stdout, failing the test on a non-zero exit.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .arg("query")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "promtool query {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn promtool_query_series_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_server, url)) = server_with_data(dir.path()) else {
        return;
    };
    let range = ["--start=1699999000", "--end=1700001000"];
    let series = promtool(&[
        "series",
        "--match=up{job=\"api\"}",
        range[0],
        range[1],
        &url,
    ]);
    assert_eq!(
        series,
        "{__name__=\"up\", instance=\"a:1\", job=\"api\"}\n\
         {__name__=\"up\", instance=\"b:1\", job=\"api\"}\n"
    );
    let values = promtool(&["labels", range[0], range[1], &url, "instance"]);
    assert_eq!(values, "a:1\nb:1\nc:1\n");
    let names = promtool(&["labels", range[0], range[1], &url, "__name__"]);
    assert_eq!(names, "up\n");
}

#[test]
fn promtool_query_instant_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_server, url)) = server_with_data(dir.path()) else {
        return;
    };
    let instant = promtool(&["instant", "--time=1700000030", &url, "sum by (job) (up)"]);
    assert!(
        instant.contains("{job=\"api\"} => 2 @[1700000030]"),
        "{instant}"
    );
    assert!(
        instant.contains("{job=\"db\"} => 0 @[1700000030]"),
        "{instant}"
    );
    let range = promtool(&[
        "range",
        "--start=1700000000",
        "--end=1700000030",
        "--step=15s",
        &url,
        "up{job=\"db\"}",
    ]);
    assert!(
        range.contains("up{instance=\"c:1\", job=\"db\"} =>\n0 @[1700000000]\n0 @[1700000015]\n0 @[1700000030]"),
        "{range}"
    );
}
