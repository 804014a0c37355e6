//! Golden files of every endpoint's JSON, byte for byte (status code first), including the
//! error shapes. The snapshots live in `tests/snapshots/`; a changed response fails the test
//! and `cargo insta review` shows the difference.
//!
//! The tests of query results need the PromQL evaluator; until it lands they are ignored and
//! their expected bodies, written from Prometheus' behaviour, are inline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use insta::assert_snapshot;
use lookout_api::{
    router, ActiveTarget, Admin, AdminError, ApiOptions, DroppedTarget, HeadStatus, StatusInfo,
    StoreStatus, TargetHealth, TargetsSnapshot, TargetsSource, WalReplayStatus,
};
use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

/// The head figures of the test's store, as the server reports them.
struct TsdbStatus(Tsdb);

impl StoreStatus for TsdbStatus {
    fn head(&self) -> HeadStatus {
        let stats = self.0.head().stats();
        HeadStatus {
            num_series: stats.series,
            chunk_count: stats.chunks,
            min_time: stats.min_time,
            max_time: stats.max_time,
        }
    }

    fn wal_replay(&self) -> WalReplayStatus {
        WalReplayStatus {
            min: 0,
            max: 2,
            current: 2,
        }
    }
}

/// Records what the admin endpoints asked for.
#[derive(Default)]
struct RecordingAdmin {
    calls: Mutex<Vec<String>>,
}

impl Admin for RecordingAdmin {
    fn snapshot(&self, skip_head: bool) -> Result<String, AdminError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("snapshot skip_head={skip_head}"));
        Ok("20231114T221320Z-00000000000000ff".to_owned())
    }

    fn clean_tombstones(&self) -> Result<(), AdminError> {
        self.calls.lock().unwrap().push("clean_tombstones".into());
        Ok(())
    }
}

struct Server {
    address: SocketAddr,
    client: reqwest::Client,
    admin: Arc<RecordingAdmin>,
    _dir: tempfile::TempDir,
}

/// Two scraped targets (one up, one down) and one dropped, at fixed times; documentation
/// addresses (never contacted), so that `globalUrl` does not depend on the host name.
struct FixedTargets;

impl TargetsSource for FixedTargets {
    fn targets(&self) -> TargetsSnapshot {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let target = |instance: &str, health, error: &str| ActiveTarget {
            discovered_labels: labels(&[
                ("__address__", instance),
                ("__metrics_path__", "/metrics"),
                ("__scheme__", "http"),
                ("__scrape_interval__", "15s"),
                ("__scrape_timeout__", "10s"),
                ("job", "node"),
            ]),
            labels: labels(&[("instance", instance), ("job", "node")]),
            scrape_pool: "node".into(),
            scrape_url: format!("http://{instance}/metrics"),
            last_error: error.into(),
            last_scrape: Some(at),
            last_scrape_duration_seconds: 0.0125,
            health,
            scrape_interval: "15s".into(),
            scrape_timeout: "10s".into(),
        };
        TargetsSnapshot {
            active: vec![
                target("192.0.2.10:9100", TargetHealth::Up, ""),
                target(
                    "192.0.2.11:9100",
                    TargetHealth::Down,
                    "server returned HTTP status 500 Internal Server Error",
                ),
            ],
            dropped: vec![DroppedTarget {
                discovered_labels: labels(&[("__address__", "192.0.2.12:9100"), ("job", "node")]),
                scrape_pool: "node".into(),
            }],
        }
    }
}

impl Server {
    async fn start(admin_enabled: bool) -> Server {
        Server::start_with(admin_enabled, None).await
    }

    async fn start_with(admin_enabled: bool, targets: Option<Arc<dyn TargetsSource>>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let tsdb = Tsdb::open(TsdbOptions::new(dir.path()).fsync(FsyncPolicy::Never)).unwrap();
        let admin = Arc::new(RecordingAdmin::default());
        let options = ApiOptions {
            admin: admin_enabled.then(|| admin.clone() as Arc<dyn Admin>),
            status: StatusInfo {
                flags: vec![
                    ("web.listen-address".into(), "0.0.0.0:9090".into()),
                    ("query.timeout".into(), "2m".into()),
                    ("storage.tsdb.path".into(), "data".into()),
                ],
                config: "[web]\nlisten_address = \"0.0.0.0:9090\"\n".into(),
                storage_retention: "15d".into(),
                store: Some(Arc::new(TsdbStatus(tsdb.clone()))),
            },
            targets,
            ..ApiOptions::default()
        };
        let app = router(Arc::new(tsdb), options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let server = Server {
            address,
            client: reqwest::Client::new(),
            admin,
            _dir: dir,
        };
        let response = server
            .client
            .post(server.url("/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(lookout_gateway::remote_write::encode(&sample_batch()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `<status>\n<body>` of a GET.
    async fn get(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        Self::render(response).await
    }

    /// `<status>\n<body>` of a form POST.
    async fn post(&self, path: &str, form: &str) -> String {
        let response = self
            .client
            .post(self.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .unwrap();
        Self::render(response).await
    }

    async fn render(response: reqwest::Response) -> String {
        let status = response.status().as_u16();
        if let Some(kind) = response.headers().get("content-type") {
            if status != 204 && kind.to_str().unwrap().starts_with("application/json") {
                return format!("{status}\n{}", response.text().await.unwrap());
            }
        }
        format!("{status} (not JSON)\n{}", response.text().await.unwrap())
    }
}

/// Three `up` series, a counter `x` every 15 s, a metric whose label needs escaping.
fn sample_batch() -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (job, instance, value) in [("api", "a:1", 1.0), ("api", "b:1", 1.0), ("db", "c:1", 0.0)] {
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", job), ("instance", instance)]).unwrap(),
            vec![
                Sample::new(1_700_000_000_000, value),
                Sample::new(1_700_000_015_000, value),
                Sample::new(1_700_000_030_000, value),
            ],
        );
    }
    batch.push(
        Labels::from_pairs([("__name__", "x"), ("path", "/a&b<c>")]).unwrap(),
        vec![
            Sample::new(1_700_000_000_000, 1.5),
            Sample::new(1_700_000_015_000, 3.0),
            Sample::new(1_700_000_030_500, 1e-7),
        ],
    );
    batch
}

#[tokio::test]
async fn series_labels_and_label_values() {
    let server = Server::start(false).await;
    assert_snapshot!(
        "series",
        server.get("/api/v1/series?match[]=up&match[]=x").await
    );
    assert_snapshot!(
        "series_post_limit",
        server
            .post("/api/v1/series", "match%5B%5D=up&limit=2")
            .await
    );
    assert_snapshot!("series_no_match", server.get("/api/v1/series").await);
    assert_snapshot!(
        "series_bad_match",
        server.get("/api/v1/series?match[]=up{").await
    );
    assert_snapshot!(
        "series_bad_start",
        server
            .get("/api/v1/series?match[]=up&start=yesterday")
            .await
    );
    assert_snapshot!("labels", server.get("/api/v1/labels").await);
    assert_snapshot!(
        "labels_matched_limit",
        server.get("/api/v1/labels?match[]=x&limit=2").await
    );
    assert_snapshot!(
        "labels_bad_limit",
        server.get("/api/v1/labels?limit=many").await
    );
    assert_snapshot!(
        "label_values",
        server.get("/api/v1/label/instance/values").await
    );
    assert_snapshot!(
        "label_values_matched",
        server
            .get("/api/v1/label/path/values?match[]=x&start=1700000000&end=1700000100")
            .await
    );
}

#[tokio::test]
async fn small_endpoints() {
    let server = Server::start(false).await;
    assert_snapshot!("metadata", server.get("/api/v1/metadata").await);
    assert_snapshot!(
        "query_exemplars",
        server.get("/api/v1/query_exemplars?query=up").await
    );
    assert_snapshot!(
        "query_exemplars_bad_query",
        server.get("/api/v1/query_exemplars?query=up{").await
    );
    assert_snapshot!(
        "format_query",
        server
            .get("/api/v1/format_query?query=sum(rate(x%5B5m%5D))by(job)")
            .await
    );
    assert_snapshot!(
        "format_query_bad",
        server.get("/api/v1/format_query?query=sum(").await
    );
    assert_snapshot!(
        "parse_query",
        server
            .post(
                "/api/v1/parse_query",
                "query=sum+by+%28job%29+%28rate%28http_requests_total%7Bjob%3D%22api%22%7D%5B5m%5D+offset+1m%29%29+%3E+bool+on%28job%29+group_left+topk%282%2C+up%29",
            )
            .await
    );
    assert_snapshot!(
        "parse_query_subquery",
        server
            .get("/api/v1/parse_query?query=-max_over_time(x%5B1h:5m%5D%20@%20end())")
            .await
    );
    assert_snapshot!(
        "parse_query_bad",
        server.get("/api/v1/parse_query?query=up%0A%2B%2B").await
    );
    assert_snapshot!("healthy", server.get("/-/healthy").await);
    assert_snapshot!("ready", server.get("/-/ready").await);
    let metrics = server.get("/metrics").await;
    assert!(
        metrics.contains("lookout_api_remote_write_requests_total 1\n"),
        "{metrics}"
    );
}

/// Metadata arrives with remote writes and is served with Prometheus' filters.
#[tokio::test]
async fn metadata_from_remote_write() {
    use lookout_gateway::remote_write::{encode_with_metadata, MetricMetadata};
    let server = Server::start(false).await;
    let metadata = [
        ("x", "counter", "Things counted.", ""),
        ("up", "gauge", "Whether the target is up.", ""),
        ("node_memory_bytes", "gauge", "Memory.", "bytes"),
    ]
    .map(|(metric, kind, help, unit)| MetricMetadata {
        metric: metric.into(),
        kind,
        help: help.into(),
        unit: unit.into(),
    });
    let response = server
        .client
        .post(server.url("/api/v1/write"))
        .body(encode_with_metadata(&WriteBatch::new(), &metadata))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_snapshot!("metadata_received", server.get("/api/v1/metadata").await);
    assert_snapshot!(
        "metadata_one_metric",
        server.get("/api/v1/metadata?metric=up").await
    );
    assert_snapshot!(
        "metadata_limited",
        server
            .get("/api/v1/metadata?limit=1&limit_per_metric=1")
            .await
    );
    assert_snapshot!(
        "metadata_bad_limit",
        server.get("/api/v1/metadata?limit=x").await
    );
}

#[tokio::test]
async fn remote_write_errors() {
    let server = Server::start(false).await;
    let response = server
        .client
        .post(server.url("/api/v1/write"))
        .body("definitely not snappy")
        .send()
        .await
        .unwrap();
    assert_snapshot!("write_malformed", Server::render(response).await);
}

#[tokio::test]
async fn status_endpoints() {
    let server = Server::start(false).await;
    let buildinfo = server.get("/api/v1/status/buildinfo").await;
    assert_snapshot!(
        "status_buildinfo",
        buildinfo.replace(env!("CARGO_PKG_VERSION"), "<version>")
    );
    assert_snapshot!("status_flags", server.get("/api/v1/status/flags").await);
    assert_snapshot!("status_config", server.get("/api/v1/status/config").await);
    assert_snapshot!(
        "status_walreplay",
        server.get("/api/v1/status/walreplay").await
    );
    assert_snapshot!("status_tsdb", server.get("/api/v1/status/tsdb").await);
    assert_snapshot!(
        "status_tsdb_limit",
        server.get("/api/v1/status/tsdb?limit=1").await
    );
    assert_snapshot!(
        "status_tsdb_bad_limit",
        server.get("/api/v1/status/tsdb?limit=0").await
    );

    // Runtime figures differ from run to run: the field order and the fixed ones are golden.
    let runtime = server.get("/api/v1/status/runtimeinfo").await;
    let body: serde_json::Value =
        serde_json::from_str(runtime.split_once('\n').unwrap().1).unwrap();
    let data = body["data"].as_object().unwrap();
    let shape: Vec<String> = data
        .iter()
        .map(|(key, value)| match key.as_str() {
            "reloadConfigSuccess"
            | "corruptionCount"
            | "GOGC"
            | "GODEBUG"
            | "storageRetention"
            | "GOMEMLIMIT" => format!("{key}: {value}"),
            _ => format!("{key}: <{}>", kind(value)),
        })
        .collect();
    assert_snapshot!("status_runtimeinfo", shape.join("\n"));
    let start = data["startTime"].as_str().unwrap();
    assert!(start.ends_with('Z') && start.len() >= 20, "{start}");
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Bool(_) => "bool",
        _ => "other",
    }
}

#[tokio::test]
async fn admin_endpoints() {
    let disabled = Server::start(false).await;
    assert_snapshot!(
        "admin_disabled",
        disabled.post("/api/v1/admin/tsdb/snapshot", "").await
    );
    assert_eq!(
        disabled
            .post("/api/v1/admin/tsdb/delete_series", "match[]=up")
            .await,
        disabled.post("/api/v1/admin/tsdb/snapshot", "").await
    );

    let server = Server::start(true).await;
    assert_snapshot!(
        "admin_delete_series_no_match",
        server.post("/api/v1/admin/tsdb/delete_series", "").await
    );
    assert_snapshot!(
        "admin_delete_series",
        server
            .post(
                "/api/v1/admin/tsdb/delete_series",
                "match%5B%5D=up%7Bjob%3D%22db%22%7D&start=1700000000&end=1700000100",
            )
            .await
    );
    assert_snapshot!(
        "admin_after_delete",
        server.get("/api/v1/label/job/values").await
    );
    assert_snapshot!(
        "admin_clean_tombstones",
        server.post("/api/v1/admin/tsdb/clean_tombstones", "").await
    );
    assert_snapshot!(
        "admin_snapshot",
        server
            .post("/api/v1/admin/tsdb/snapshot", "skip_head=true")
            .await
    );
    assert_snapshot!(
        "admin_snapshot_bad_flag",
        server
            .post("/api/v1/admin/tsdb/snapshot", "skip_head=maybe")
            .await
    );
    assert_eq!(
        *server.admin.calls.lock().unwrap(),
        ["clean_tombstones", "snapshot skip_head=true"]
    );
}

/// Parameter errors are found before evaluation, in Prometheus' order and wording.
#[tokio::test]
async fn query_parameter_errors() {
    let server = Server::start(false).await;
    assert_snapshot!(
        "query_bad_query",
        server
            .get("/api/v1/query?query=sum(up&time=1700000030")
            .await
    );
    assert_snapshot!(
        "query_empty_query",
        server.get("/api/v1/query?time=1700000030").await
    );
    assert_snapshot!(
        "query_bad_time",
        server.get("/api/v1/query?query=up&time=noon").await
    );
    assert_snapshot!(
        "query_bad_timeout",
        server.get("/api/v1/query?query=up&timeout=soon").await
    );
    assert_snapshot!(
        "query_bad_limit",
        server.get("/api/v1/query?query=up&limit=-1").await
    );
    assert_snapshot!(
        "query_range_missing_start",
        server
            .get("/api/v1/query_range?query=up&end=1700000030&step=15")
            .await
    );
    assert_snapshot!(
        "query_range_bad_end",
        server
            .get("/api/v1/query_range?query=up&start=1700000000&end=later&step=15")
            .await
    );
    assert_snapshot!(
        "query_range_end_before_start",
        server
            .get("/api/v1/query_range?query=up&start=1700000030&end=1700000000&step=15")
            .await
    );
    assert_snapshot!(
        "query_range_bad_step",
        server
            .get("/api/v1/query_range?query=up&start=1700000000&end=1700000030&step=often")
            .await
    );
    assert_snapshot!(
        "query_range_zero_step",
        server
            .get("/api/v1/query_range?query=up&start=1700000000&end=1700000030&step=0")
            .await
    );
    assert_snapshot!(
        "query_range_too_many_points",
        server
            .post("/api/v1/query_range", "query=up&start=0&end=11001&step=1",)
            .await
    );
    assert_snapshot!(
        "query_range_bad_query",
        server
            .post(
                "/api/v1/query_range",
                "query=rate(up)&start=1700000000&end=1700000030&step=15s",
            )
            .await
    );
}

#[tokio::test]
async fn instant_queries() {
    let server = Server::start(false).await;
    assert_snapshot!(
        server.get("/api/v1/query?query=up&time=1700000030").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"a:1","job":"api"},"value":[1700000030,"1"]},{"metric":{"__name__":"up","instance":"b:1","job":"api"},"value":[1700000030,"1"]},{"metric":{"__name__":"up","instance":"c:1","job":"db"},"value":[1700000030,"0"]}]}}
    "#
    );
    assert_snapshot!(
        server.post("/api/v1/query", "query=sum(up)&time=1700000030.5").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000030.500,"2"]}]}}
    "#
    );
    assert_snapshot!(
        server.get("/api/v1/query?query=1%2B1&time=1700000030").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"scalar","result":[1700000030,"2"]}}
    "#
    );
    assert_snapshot!(
        server.get("/api/v1/query?query=%22str%22&time=1700000030").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"string","result":[1700000030,"str"]}}
    "#
    );
    assert_snapshot!(
        server.get("/api/v1/query?query=x%5B5m%5D&time=1700000031").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"x","path":"/a\u0026b\u003cc\u003e"},"values":[[1700000000,"1.5"],[1700000015,"3"],[1700000030.500,"1e-07"]]}]}}
    "#
    );
    assert_snapshot!(
        server.get("/api/v1/query?query=up&time=1700000030&limit=2").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"a:1","job":"api"},"value":[1700000030,"1"]},{"metric":{"__name__":"up","instance":"b:1","job":"api"},"value":[1700000030,"1"]}]},"warnings":["results truncated due to limit"]}
    "#
    );
    assert_snapshot!(
        server.get("/api/v1/query?query=1%2Fx&time=1700000031").await,
        @r#"
    200
    {"status":"success","data":{"resultType":"vector","result":[{"metric":{"path":"/a\u0026b\u003cc\u003e"},"value":[1700000031,"10000000"]}]}}
    "#
    );
    // Statistics: the figures depend on the run and the engine; the shape is golden.
    let with_stats = server
        .get("/api/v1/query?query=sum(up)&time=1700000030&stats=all")
        .await;
    assert_snapshot!(
        zero_numbers(&zero_numbers(&with_stats, "\"timings\":{"), "\"samples\":{"),
        @r#"
    200
    {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000030,"2"]}],"stats":{"timings":{"evalTotalTime":0,"resultSortTime":0,"queryPreparationTime":0,"innerEvalTime":0,"execQueueTime":0,"execTotalTime":0},"samples":{"totalQueryableSamples":0,"peakSamples":0}}}}
    "#
    );
}

#[tokio::test]
async fn range_queries() {
    let server = Server::start(false).await;
    assert_snapshot!(
        server
            .get("/api/v1/query_range?query=up%7Bjob%3D%22db%22%7D&start=1700000000&end=1700000030&step=15s")
            .await,
        @r#"
    200
    {"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"c:1","job":"db"},"values":[[1700000000,"0"],[1700000015,"0"],[1700000030,"0"]]}]}}
    "#
    );
    assert_snapshot!(
        server
            .post(
                "/api/v1/query_range",
                "query=sum+by+%28job%29+%28up%29&start=1700000000&end=1700000020&step=10",
            )
            .await,
        @r#"
    200
    {"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"api"},"values":[[1700000000,"2"],[1700000010,"2"],[1700000020,"2"]]},{"metric":{"job":"db"},"values":[[1700000000,"0"],[1700000010,"0"],[1700000020,"0"]]}]}}
    "#
    );
    assert_snapshot!(
        server
            .get("/api/v1/query_range?query=1&start=1700000000&end=1700000001&step=0.5")
            .await,
        @r#"
    200
    {"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"],[1700000000.500,"1"],[1700000001,"1"]]}]}}
    "#
    );
    // 11,000 steps (11,001 points) is Prometheus' largest accepted range.
    let largest = server
        .get("/api/v1/query_range?query=1&start=0&end=11000&step=1")
        .await;
    assert!(largest.starts_with("200\n"), "{largest}");
}

#[tokio::test]
async fn query_timeout() {
    let server = Server::start(false).await;
    let response = server
        .get("/api/v1/query_range?query=count_over_time(up%5B1h%5D)&start=1700000000&end=1700100000&step=10&timeout=0.000000001")
        .await;
    assert!(
        response.starts_with(
            "503\n{\"status\":\"error\",\"errorType\":\"timeout\",\"error\":\"query timed out in "
        ),
        "{response}"
    );
}

/// Replaces the numbers of the flat object that starts with `opening` by 0.
fn zero_numbers(response: &str, opening: &str) -> String {
    let Some(start) = response.find(opening) else {
        return response.to_owned();
    };
    let body_start = start + opening.len();
    let end = body_start + response[body_start..].find('}').unwrap();
    let zeroed: Vec<String> = response[body_start..end]
        .split(',')
        .map(|field| {
            let (name, _) = field.split_once(':').unwrap();
            format!("{name}:0")
        })
        .collect();
    format!(
        "{}{}{}",
        &response[..body_start],
        zeroed.join(","),
        &response[end..]
    )
}

#[tokio::test]
async fn targets() {
    let without_scraping = Server::start(false).await;
    assert_snapshot!(
        "targets_none",
        without_scraping.get("/api/v1/targets").await
    );
    let server = Server::start_with(false, Some(Arc::new(FixedTargets))).await;
    assert_snapshot!("targets", server.get("/api/v1/targets").await);
    assert_snapshot!(
        "targets_dropped_only",
        server.get("/api/v1/targets?state=dropped").await
    );
    assert_snapshot!(
        "targets_other_pool",
        server.get("/api/v1/targets?scrapePool=other").await
    );
}
