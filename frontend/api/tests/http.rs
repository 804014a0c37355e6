//! The HTTP API end to end over loopback, on the native store.

use std::net::SocketAddr;
use std::sync::Arc;

use lookout_api::{router, ApiOptions};
use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};
use serde_json::{json, Value};

struct Server {
    address: SocketAddr,
    client: reqwest::Client,
    tsdb: Tsdb,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let tsdb = Tsdb::open(TsdbOptions::new(dir.path()).fsync(FsyncPolicy::Never)).unwrap();
        let app = router(Arc::new(tsdb.clone()), ApiOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            address,
            client: reqwest::Client::new(),
            tsdb,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn write(&self, batch: &WriteBatch) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(lookout_gateway::remote_write::encode(batch))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

fn sample_batch() -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (job, instance) in [("api", "a:1"), ("api", "b:1"), ("db", "c:1")] {
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", job), ("instance", instance)]).unwrap(),
            vec![
                Sample::new(1_700_000_000_000, 1.0),
                Sample::new(1_700_000_015_000, 1.0),
            ],
        );
    }
    batch.push(
        Labels::from_pairs([("__name__", "jvm.memory.used"), ("app", "shop")]).unwrap(),
        vec![Sample::new(1_700_000_000_000, 512.0)],
    );
    batch
}

#[tokio::test]
async fn remote_write_then_series_labels_and_values() {
    let server = Server::start().await;
    let response = server.write(&sample_batch()).await;
    assert_eq!(response.status().as_u16(), 204);

    let (status, body) = server.get("/api/v1/series?match[]=up{job=\"api\"}").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "success", "data": [
            {"__name__": "up", "instance": "a:1", "job": "api"},
            {"__name__": "up", "instance": "b:1", "job": "api"},
        ]})
    );
    let (_, body) = server.get("/api/v1/labels").await;
    assert_eq!(
        body,
        json!({"status": "success", "data": ["__name__", "app", "instance", "job"]})
    );
    let (_, body) = server.get("/api/v1/label/__name__/values").await;
    assert_eq!(
        body,
        json!({"status": "success", "data": ["jvm.memory.used", "up"]})
    );
    let (_, body) = server
        .get("/api/v1/label/instance/values?match[]=up{job=~\"a.*\"}&limit=1")
        .await;
    assert_eq!(
        body,
        json!({"status": "success", "data": ["a:1"], "warnings": ["results truncated due to limit"]})
    );
    // Several selectors: their answers merge, sorted, each value once.
    let (_, body) = server
        .get("/api/v1/label/instance/values?match[]=up{instance=\"b:1\"}&match[]=up&match[]=up{instance=\"a:1\"}")
        .await;
    assert_eq!(
        body,
        json!({"status": "success", "data": ["a:1", "b:1", "c:1"]})
    );
    let (_, body) = server
        .get("/api/v1/labels?match[]=jvm.memory.used&match[]=up")
        .await;
    assert_eq!(
        body,
        json!({"status": "success", "data": ["__name__", "app", "instance", "job"]})
    );
    // Time range: nothing before the data.
    let (_, body) = server
        .get("/api/v1/series?match[]=up&start=0&end=1000")
        .await;
    assert_eq!(body, json!({"status": "success", "data": []}));
    // RFC 3339 times work too.
    let (_, body) = server
        .get("/api/v1/series?match[]=jvm.memory.used&start=2023-11-14T22:00:00Z&end=2023-11-14T23:00:00Z")
        .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn form_posts_are_read_like_query_strings() {
    let server = Server::start().await;
    server.write(&sample_batch()).await;
    let response = server
        .client
        .post(server.url("/api/v1/series"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("match%5B%5D=up%7Bjob%3D%22db%22%7D")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"],
        json!([{"__name__": "up", "instance": "c:1", "job": "db"}])
    );
}

#[tokio::test]
async fn errors_have_prometheus_shape() {
    let server = Server::start().await;
    let (status, body) = server.get("/api/v1/series").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"status": "error", "errorType": "bad_data", "error": "no match[] parameter provided"})
    );
    let (status, body) = server.get("/api/v1/series?match[]=up{").await;
    assert_eq!(status, 400);
    assert_eq!(body["errorType"], "bad_data");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid parameter \"match[]\""),
        "{body}"
    );
    let (status, body) = server.get("/api/v1/labels?start=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("\"start\""),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_and_refused_writes_are_400_and_keep_what_was_accepted() {
    let server = Server::start().await;
    let response = server
        .client
        .post(server.url("/api/v1/write"))
        .body("definitely not snappy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("malformed remote write request"));

    server.write(&sample_batch()).await;
    // One conflicting duplicate and one new sample: 400 for the conflict, the new one stored.
    let mut batch = WriteBatch::new();
    batch.push(
        Labels::from_pairs([("__name__", "up"), ("job", "db"), ("instance", "c:1")]).unwrap(),
        vec![
            Sample::new(1_700_000_015_000, 0.0),
            Sample::new(1_700_000_030_000, 1.0),
        ],
    );
    let response = server.write(&batch).await;
    assert_eq!(response.status().as_u16(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("duplicate_sample_for_timestamp"));
    let (_, body) = server
        .get("/api/v1/series?match[]=up{job=\"db\"}&start=1700000030&end=1700000030")
        .await;
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        1,
        "the accepted sample is stored"
    );
}

#[tokio::test]
async fn format_query_prints_canonical_promql() {
    let server = Server::start().await;
    let (status, body) = server
        .get("/api/v1/format_query?query=sum(rate(http_requests_total%7Bjob%3D%22api%22%7D%5B5m%5D))by(job)")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "success", "data": "sum by (job) (rate(http_requests_total{job=\"api\"}[5m]))"})
    );
    let (status, body) = server.get("/api/v1/format_query?query=sum(").await;
    assert_eq!(status, 400);
    assert_eq!(body["errorType"], "bad_data");
}

#[tokio::test]
async fn health_readiness_and_buildinfo() {
    let server = Server::start().await;
    let healthy = server
        .client
        .get(server.url("/-/healthy"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status().as_u16(), 200);
    let ready = server
        .client
        .get(server.url("/-/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let (_, body) = server.get("/api/v1/status/buildinfo").await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["application"], "lookout");
}

const RW2_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

impl Server {
    async fn post_write(&self, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", content_type)
            .header("X-Prometheus-Remote-Write-Version", "2.0.0")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// The three written-count headers of a 2.0 answer: samples, histograms, exemplars.
fn written(response: &reqwest::Response) -> [Option<&str>; 3] {
    ["samples", "histograms", "exemplars"].map(|kind| {
        response
            .headers()
            .get(format!("X-Prometheus-Remote-Write-{kind}-Written"))
            .map(|value| value.to_str().unwrap())
    })
}

#[tokio::test]
async fn remote_write_2_is_chosen_by_content_type_and_answers_written_counts() {
    use lookout_gateway::remote_write::MetricMetadata;
    use lookout_gateway::remote_write2;

    let server = Server::start().await;
    let metadata = [MetricMetadata {
        metric: "up".into(),
        kind: "gauge",
        help: "Whether the target is up.".into(),
        unit: String::new(),
    }];
    let body = remote_write2::encode(&sample_batch(), &metadata);
    let response = server.post_write(RW2_CONTENT_TYPE, body).await;
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(written(&response), [Some("7"), Some("0"), Some("0")]);

    let (status, body) = server
        .get("/api/v1/query?query=sum%20by%20(job)%20(up)&time=1700000015")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"job": "api"}, "value": [1700000015, "2"]},
            {"metric": {"job": "db"}, "value": [1700000015, "1"]},
        ])
    );
    let (_, body) = server.get("/api/v1/metadata?metric=up").await;
    assert_eq!(
        body["data"],
        json!({"up": [{"type": "gauge", "help": "Whether the target is up.", "unit": ""}]})
    );

    // 1.0, named explicitly, is still served, without the written-count headers.
    let response = server
        .post_write(
            "application/x-protobuf;proto=prometheus.WriteRequest",
            lookout_gateway::remote_write::encode(&sample_batch()),
        )
        .await;
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(written(&response), [None, None, None]);
}

#[tokio::test]
async fn remote_write_unknown_proto_or_encoding_is_415() {
    let server = Server::start().await;
    let body = lookout_gateway::remote_write::encode(&sample_batch());
    for content_type in [
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/json",
    ] {
        let response = server.post_write(content_type, body.clone()).await;
        assert_eq!(response.status().as_u16(), 415, "{content_type}");
        let text = response.text().await.unwrap();
        assert!(text.contains("io.prometheus.write.v2.Request"), "{text}");
    }
    let response = server
        .client
        .post(server.url("/api/v1/write"))
        .header("Content-Encoding", "zstd")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    assert!(response.text().await.unwrap().contains("only snappy"));
    let (_, body) = server.get("/api/v1/series?match[]=up").await;
    assert_eq!(body["data"], json!([]), "nothing was written");
}

#[tokio::test]
async fn remote_write_2_partial_writes_are_400_with_what_was_written() {
    use lookout_gateway::remote_write2::{encode_request, ProtoSample, Request, TimeSeries};

    let server = Server::start().await;
    let series = |labels_refs: Vec<u32>, timestamp: i64| TimeSeries {
        labels_refs,
        samples: vec![ProtoSample {
            value: 1.0,
            timestamp,
            start_timestamp: 0,
        }],
        histograms: vec![],
        exemplars: vec![],
        metadata: None,
        created_timestamp: 0,
    };
    let mut histogram = series(vec![1, 2, 3, 4], 0);
    histogram.samples.clear();
    histogram.histograms = vec![vec![0x08, 0x01]];
    let request = Request {
        symbols: ["", "__name__", "up", "job", "rw2"]
            .map(String::from)
            .to_vec(),
        timeseries: vec![
            series(vec![1, 2, 3, 4], 1_700_000_000_000),
            series(vec![1, 2, 3, 9], 1_700_000_000_000),
            histogram,
        ],
    };
    let response = server
        .post_write(RW2_CONTENT_TYPE, encode_request(&request))
        .await;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(written(&response), [Some("1"), Some("0"), Some("0")]);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("label value reference 9 is out of range"),
        "{text}"
    );
    assert!(
        text.contains("1 native histogram samples not written"),
        "{text}"
    );
    let (_, body) = server.get("/api/v1/query?query=up&time=1700000000").await;
    assert_eq!(
        body["data"]["result"],
        json!([{"metric": {"__name__": "up", "job": "rw2"}, "value": [1700000000, "1"]}])
    );

    let response = server
        .post_write(RW2_CONTENT_TYPE, b"not snappy".to_vec())
        .await;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(written(&response), [Some("0"), Some("0"), Some("0")]);
}

/// The receiver sends series it decoded before by identity only; one the store no longer
/// holds (dropped from the head while its sender was quiet) is decoded again and stored.
#[tokio::test]
async fn a_series_the_store_dropped_is_written_again_in_full() {
    let server = Server::start().await;
    let series = |t: i64| {
        let mut batch = WriteBatch::new();
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", "quiet")]).unwrap(),
            vec![Sample::new(t, 1.0)],
        );
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("job", "busy")]).unwrap(),
            vec![Sample::new(t, 2.0)],
        );
        batch
    };
    assert_eq!(server.write(&series(1_700_000_000_000)).await.status(), 204);
    let mut busy = WriteBatch::new();
    busy.push(
        Labels::from_pairs([("__name__", "up"), ("job", "busy")]).unwrap(),
        vec![Sample::new(1_700_000_600_000, 2.0)],
    );
    assert_eq!(server.write(&busy).await.status(), 204);
    let report = server.tsdb.truncate_head(1_700_000_300_000).unwrap();
    assert_eq!(report.series_removed, 1, "the quiet series left the head");
    let response = server.write(&series(1_700_000_615_000)).await;
    assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    let (_, body) = server.get("/api/v1/query?query=up&time=1700000615").await;
    let mut values: Vec<(String, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            (
                series["metric"]["job"].as_str().unwrap().to_owned(),
                series["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            ("busy".to_owned(), "2".to_owned()),
            ("quiet".to_owned(), "1".to_owned())
        ]
    );
}
