//! The SOFALookout decoders against the shared fixtures (`../shared/testdata/lookout/`,
//! spec §12): every expected sample, and nothing else, comes out of the example requests.
//! Prints a reason and passes when the fixtures are not there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lookout_gateway::lookout::request::{path_tags, require_app_step, token};
use lookout_gateway::lookout::{prom_push, sdk, Decoded, Enrichment, Limits, Tags};
use lookout_gateway::{metricbeat, opentsdb};
use lookout_model::TimestampMs;
use serde_json::Value;

/// The peer address the fixtures leave as a placeholder.
const PEER: &str = "192.0.2.1";
const PEER_PLACEHOLDER: &str = "<remote peer address>";

fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/lookout");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED: {} not found (the shared fixtures)", dir.display());
        None
    }
}

fn read_json(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// (name, tags) -> (timestamp, value or info text), comparable across both sides.
type Samples = BTreeMap<(String, BTreeMap<String, String>), (Option<i64>, String)>;

fn expected_samples(list: &Value, with_timestamp: bool) -> Samples {
    let mut samples = Samples::new();
    for sample in list.as_array().unwrap() {
        let tags = sample["tags"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| {
                let value = value.as_str().unwrap();
                let value = if value == PEER_PLACEHOLDER {
                    PEER
                } else {
                    value
                };
                (key.clone(), value.to_owned())
            })
            .collect();
        let name = sample["name"].as_str().unwrap().to_owned();
        let payload = match sample.get("info") {
            Some(info) => info.as_str().unwrap().to_owned(),
            None => sample["value"].as_f64().unwrap().to_string(),
        };
        let timestamp = with_timestamp.then(|| sample["timestamp"].as_i64().unwrap());
        let previous = samples.insert((name, tags), (timestamp, payload));
        assert!(previous.is_none(), "a fixture lists a series twice");
    }
    samples
}

fn labels_key(labels: &lookout_model::Labels) -> (String, BTreeMap<String, String>) {
    let tags = labels
        .iter()
        .filter(|label| label.name != "__name__")
        .map(|label| (label.name.to_string(), label.value.to_string()))
        .collect();
    (labels.metric_name().unwrap().to_owned(), tags)
}

fn decoded_samples(decoded: &Decoded, with_timestamp: bool) -> Samples {
    let mut samples = Samples::new();
    for series in &decoded.batch.series {
        assert_eq!(series.samples.len(), 1);
        let sample = series.samples[0];
        let timestamp = with_timestamp.then_some(sample.timestamp.0);
        let previous = samples.insert(
            labels_key(&series.labels),
            (timestamp, sample.value.to_string()),
        );
        assert!(previous.is_none(), "decoded {} twice", series.labels);
    }
    samples
}

fn decoded_infos(decoded: &Decoded) -> Samples {
    decoded
        .infos
        .iter()
        .map(|info| {
            (
                labels_key(&info.labels),
                (Some(info.timestamp.0), info.info.clone()),
            )
        })
        .collect()
}

#[test]
fn sdk_report_plain_and_snappy() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "lookout-report-expected-metrics.json");
    let request = &expected["request"];
    assert_eq!(request["path"], "/datas");
    let enrichment = Enrichment {
        client_ip: Some(request["headers"]["Client-Ip"].as_str().unwrap().to_owned()),
        ..Enrichment::default()
    };
    let metrics = expected_samples(&expected["exported_to_metric_chains"], true);
    let infos = expected_samples(&expected["exported_to_info_chains_only"], true);
    let plain = std::fs::read(dir.join("lookout-report.txt")).unwrap();
    let compressed = std::fs::read(dir.join("lookout-report.snappy")).unwrap();
    for (body, snappy) in [(&plain, false), (&compressed, true)] {
        let decoded = sdk::decode(body, snappy, &enrichment, &Limits::default()).unwrap();
        assert_eq!(decoded_samples(&decoded, true), metrics, "snappy: {snappy}");
        assert_eq!(decoded_infos(&decoded), infos, "snappy: {snappy}");
        assert_eq!(decoded.skipped_total(), 0, "{:?}", decoded.messages);
    }
}

#[test]
fn lookout_metrics_path_protocol() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "lookout-v2-expected-metrics.json");
    let path = expected["request"]["path"].as_str().unwrap();
    let extra_tags = path_tags(path.strip_prefix("/lookout/metrics/").unwrap()).unwrap();
    require_app_step(&extra_tags).unwrap();
    let enrichment = Enrichment {
        client_ip: Some(PEER.to_owned()),
        extra_tags,
    };
    let body = expected["request"]["body"].as_str().unwrap();
    let decoded = sdk::decode(body.as_bytes(), false, &enrichment, &Limits::default()).unwrap();
    assert_eq!(
        decoded_samples(&decoded, true),
        expected_samples(&expected["exported_to_metric_chains"], true)
    );
}

#[test]
fn relay_exporter_body() {
    let Some(dir) = fixtures() else { return };
    let body = std::fs::read(dir.join("relay-export.txt")).unwrap();
    assert!(body.ends_with(b"\t"), "the relay sends a trailing TAB");
    let decoded = sdk::decode(&body, false, &Enrichment::default(), &Limits::default()).unwrap();
    assert_eq!(decoded.skipped_total(), 0, "{:?}", decoded.messages);
    assert_eq!(decoded.batch.series.len(), 1);
    let series = &decoded.batch.series[0];
    assert_eq!(
        series.labels.metric_name(),
        Some("http_requests_total.count")
    );
    assert_eq!(series.samples[0].timestamp, TimestampMs(1_559_199_870_000));
    assert_eq!(series.samples[0].value, 12.0);
    assert_eq!(decoded.infos.len(), 1);
    assert_eq!(
        decoded.infos[0].labels.metric_name(),
        Some("lookout.config.value")
    );
    assert_eq!(decoded.infos[0].info, r#"{"lookout.enable":true}"#);
}

#[test]
fn prometheus_push() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "prometheus-push-expected-metrics.json");
    let path = expected["request"]["path"].as_str().unwrap();
    let extra_tags = path_tags(path.strip_prefix("/prom/metrics/").unwrap()).unwrap();
    require_app_step(&extra_tags).unwrap();
    let headers = &expected["request"]["headers"];
    token(headers["X-Lookout-Token"].as_str(), None).unwrap();
    let enrichment = Enrichment {
        client_ip: Some(PEER.to_owned()),
        extra_tags,
    };
    let body = std::fs::read(dir.join("prometheus-push.txt")).unwrap();
    let arrival = TimestampMs(1_700_000_017_654);
    let decoded = prom_push::decode(&body, arrival, &enrichment, &Limits::default()).unwrap();
    assert_eq!(decoded.skipped_total(), 0, "{:?}", decoded.messages);
    // step=10 in the path: arrival floored to 10 s.
    for series in &decoded.batch.series {
        assert_eq!(series.samples[0].timestamp, TimestampMs(1_700_000_010_000));
    }

    let mut wanted = expected_samples(&expected["exported_to_metric_chains"], false);
    // The fixture's tags list `sensor` as "s,1" while its own note (and §3.3: label values go
    // through norm_tag_value, ',' included) says a correct parser yields "s_1"; we follow the
    // note.
    let tricky = wanted
        .keys()
        .find(|(name, _)| name == "temperature_celsius")
        .cloned()
        .unwrap();
    let value = wanted.remove(&tricky).unwrap();
    assert_eq!(
        tricky.1["sensor"], "s,1",
        "the fixture changed: revisit this override"
    );
    let mut fixed_tags = tricky.1.clone();
    fixed_tags.insert("sensor".into(), "s_1".into());
    wanted.insert((tricky.0, fixed_tags), value);
    assert_eq!(decoded_samples(&decoded, false), wanted);
}

#[test]
fn prometheus_push_request_errors() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "prometheus-push-expected-metrics.json");
    let default_headers = &expected["request"]["headers"];
    for case in expected["errors"].as_array().unwrap() {
        assert_eq!(case["status"], 400);
        let path = case["path"].as_str().unwrap();
        let headers = case.get("headers").unwrap_or(default_headers);
        let refused = path_tags(path.strip_prefix("/prom/metrics/").unwrap())
            .and_then(|tags| require_app_step(&tags))
            .and_then(|()| token(headers["X-Lookout-Token"].as_str(), None).map(|_| ()))
            .unwrap_err();
        assert_eq!(refused.to_string(), case["Err"].as_str().unwrap(), "{path}");
    }
}

/// The request's `app`, `step` and `ip` headers, as the HTTP edge turns them into extra tags.
fn opentsdb_header_tags(headers: &Value) -> Tags {
    ["app", "step", "ip"]
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.as_str()?;
            Some((name.to_string(), value.to_owned()))
        })
        .collect()
}

#[test]
fn opentsdb_put_array_and_single() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "opentsdb-put-expected-metrics.json");
    let request = &expected["request"];
    assert_eq!(request["path"], "/opentsdb/api/put");
    let extra_tags = opentsdb_header_tags(&request["headers"]);
    require_app_step(&extra_tags).unwrap();
    let enrichment = Enrichment {
        client_ip: Some(PEER.to_owned()),
        extra_tags,
    };
    let wanted = expected_samples(&expected["exported_to_metric_chains"], true);

    let body = std::fs::read(dir.join(request["body_file"].as_str().unwrap())).unwrap();
    let decoded = opentsdb::decode_json(&body, &enrichment, &Limits::default()).unwrap();
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    assert_eq!(decoded_samples(&decoded.decoded, true), wanted);

    // The single-object body is the array's first data point.
    let single = std::fs::read(dir.join("opentsdb-put-single.json")).unwrap();
    let decoded = opentsdb::decode_json(&single, &enrichment, &Limits::default()).unwrap();
    let first: Samples = wanted
        .into_iter()
        .filter(|((_, tags), _)| tags["host"] == "web02")
        .collect();
    assert_eq!(first.len(), 1);
    assert_eq!(decoded_samples(&decoded.decoded, true), first);
}

#[test]
fn opentsdb_put_request_errors() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "opentsdb-put-expected-metrics.json");
    for case in expected["errors"].as_array().unwrap() {
        assert_eq!(case["status"], 400);
        let headers = &case["headers"];
        let refused = require_app_step(&opentsdb_header_tags(headers))
            .and_then(|()| token(headers["X-Lookout-Token"].as_str(), None).map(|_| ()))
            .unwrap_err();
        assert_eq!(refused.to_string(), case["Err"].as_str().unwrap());
    }
}

#[test]
fn metricbeat_bulk() {
    let Some(dir) = fixtures() else { return };
    let expected = read_json(&dir, "metricbeat-bulk-expected-metrics.json");
    assert_eq!(expected["request"]["path"], "/beat/_bulk");
    let body = std::fs::read(dir.join("metricbeat-bulk.ndjson")).unwrap();
    let enrichment = Enrichment {
        client_ip: Some(PEER.to_owned()),
        ..Enrichment::default()
    };
    let decoded = metricbeat::decode_bulk(&body, &enrichment, &Limits::default()).unwrap();
    assert_eq!(
        decoded.decoded.skipped_total(),
        0,
        "{:?}",
        decoded.decoded.messages
    );
    assert_eq!(decoded.actions.len(), 2);
    assert_eq!(
        decoded_samples(&decoded.decoded, true),
        expected_samples(&expected["exported_to_metric_chains"], true)
    );
}
