//! OpenTSDB on the gateway: HTTP `POST /api/put` and `/opentsdb/api/put` (spec §3.6), and
//! the telnet listener (`--opentsdb.listen-address`, default port 4242) for `put` lines.
//!
//! HTTP answers as OpenTSDB 2.x does: 204 when every data point was stored; with `?summary`
//! `{"failed":F,"success":S}`, with `?details` the same plus `errors` (each data point as sent
//! and why), status 200 when nothing failed and 400 otherwise; without either, a failure is a
//! 400 with OpenTSDB's error object. `/opentsdb/api/put` is SOFALookout's route and keeps its
//! request rules (headers `app` and `step` required, token required: 400 with `Err`); on
//! `/api/put` those headers are optional. `app`, `step` and `ip` headers become extra tags
//! when present, and `step` aligns timestamps.
//!
//! Telnet: one command per line (`put`, `version`, `help`, `exit`); a successful `put` is
//! silent, a bad one answers `put: <reason>`, an unknown command answers `unknown command: x.
//! Try `help'.` as OpenTSDB does. The complete lines of each read are decoded and written as
//! one batch before their answers are sent. A line longer than [`MAX_LINE_BYTES`] is answered
//! with an error and dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lookout_gateway::lookout::request::{require_app_step, Tokens};
use lookout_gateway::lookout::{Enrichment, Limits, LookoutError, Tags};
use lookout_gateway::opentsdb::{
    self as decoder, parse_telnet_line, PointError, PointWriter, PutDecoded, TelnetCommand,
    TelnetError, TELNET_COMMANDS,
};
use lookout_storage::Storage;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{
    checked_token, decode_off_runtime, header_text, incoming, refusal, request_refusal, write,
    GatewayState, GatewayStats, Protocol, Written,
};

/// Longest telnet line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The headers that become extra tags.
const TAG_HEADERS: [&str; 3] = ["app", "step", "ip"];

/// `POST /api/put` and `POST /opentsdb/api/put`.
pub(super) async fn put(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let protocol = Protocol::OpenTsdbHttp;
    let incoming = match incoming(&state, protocol, request).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    let extra_tags: Tags = TAG_HEADERS
        .iter()
        .filter_map(|name| {
            let value = header_text(&incoming.headers, name)?;
            Some((name.to_string(), value.to_owned()))
        })
        .collect();
    if incoming.path.starts_with("/opentsdb/") {
        let checked = require_app_step(&extra_tags)
            .and_then(|()| checked_token(&state.tokens, &incoming.headers));
        if let Err(error) = checked {
            let (reason, response) = request_refusal(&error);
            state.stats.refused(protocol, reason);
            return response;
        }
    }
    if incoming.body.is_empty() {
        state.stats.refused(protocol, "malformed_body");
        return error_response(StatusCode::BAD_REQUEST, "Missing request content", None);
    }
    let enrichment = Enrichment {
        client_ip: incoming.peer_ip.clone(),
        extra_tags,
    };
    let limits = state.limits;
    let body = incoming.body;
    let decoded =
        decode_off_runtime(move || decoder::decode_json(&body, &enrichment, &limits)).await;
    let PutDecoded { decoded, errors } = match decoded {
        Ok(decoded) => decoded,
        Err(error @ LookoutError::Json { .. }) => {
            state.stats.refused(protocol, "malformed_body");
            let details = error.to_string();
            return error_response(
                StatusCode::BAD_REQUEST,
                "Unable to parse the given JSON",
                Some(&details),
            );
        }
        Err(error) => return super::refuse_body(&state, protocol, &error),
    };
    match write(&state, protocol, decoded).await {
        Ok(written) => put_answer(incoming.query.as_deref(), errors, &written),
        Err(message) => refusal(StatusCode::SERVICE_UNAVAILABLE, &message),
    }
}

/// OpenTSDB's answer to a put: 204, or the summary with or without details.
fn put_answer(query: Option<&str>, errors: Vec<PointError>, written: &Written) -> Response {
    let outcome = &written.outcome;
    let flag = |name: &str| {
        query.is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(name))
        })
    };
    let (summary, details) = (flag("summary"), flag("details"));
    let rejected_by_storage: u64 = outcome.rejected.values().sum();
    let failed = errors.len() as u64 + rejected_by_storage + written.too_old;
    let status = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    if !summary && !details {
        if failed == 0 {
            return StatusCode::NO_CONTENT.into_response();
        }
        return error_response(
            StatusCode::BAD_REQUEST,
            "One or more data points had errors",
            Some("Please see the TSD logs or append \"details\" to the put request"),
        );
    }
    let mut answer = json!({"failed": failed, "success": outcome.accepted});
    if details {
        let mut listed: Vec<Value> = errors
            .into_iter()
            .map(|error| json!({"datapoint": error.datapoint, "error": error.error}))
            .collect();
        if written.too_old > 0 {
            listed.push(json!({
                "datapoint": null,
                "error": format!(
                    "{} data points older than max_sample_age refused (too_old)",
                    written.too_old
                ),
            }));
        }
        // The store does not say which data point it refused; its messages name the series.
        listed.extend(
            outcome
                .messages
                .iter()
                .map(|message| json!({"datapoint": null, "error": message})),
        );
        answer["errors"] = Value::Array(listed);
    }
    json_response(status, &answer)
}

/// OpenTSDB's error object: `{"error":{"code":400,"message":...,"details":...}}`.
fn error_response(status: StatusCode, message: &str, details: Option<&str>) -> Response {
    let mut error = json!({"code": status.as_u16(), "message": message});
    if let Some(details) = details {
        error["details"] = Value::from(details);
    }
    json_response(status, &json!({ "error": error }))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// How the telnet listener runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TelnetOptions {
    /// Data points older than this many milliseconds are refused as `too_old` (`None`: no
    /// check).
    pub max_sample_age_ms: Option<i64>,
    /// Most connections served at once; a further one is answered with an error line and
    /// closed, counted as `overloaded` (0: unlimited).
    pub max_connections: usize,
}

/// The line a connection over `--opentsdb.max-connections` gets before it is closed.
fn too_many_connections(limit: usize) -> String {
    format!("put: too many connections ({limit} open); retry later\n")
}

/// Serves telnet `put` lines on `listener` until `stopped` turns true; connections end after
/// the read in progress.
///
/// Back-pressure: a connection reads its next chunk only once the lines of the previous one
/// are stored and answered, so a store that lags stops the reading and the sender's TCP
/// window fills (nothing is buffered beyond one chunk per connection), and at most
/// `max_connections` connections are served at once.
pub async fn serve_telnet(
    listener: TcpListener,
    storage: Arc<dyn Storage>,
    limits: Limits,
    options: TelnetOptions,
    stats: Arc<GatewayStats>,
    mut stopped: watch::Receiver<bool>,
) {
    // Telnet `put` lines carry no token (neither SOFALookout nor OpenTSDB asks for one).
    let state = GatewayState::new(
        storage,
        limits,
        options.max_sample_age_ms,
        Tokens::any(),
        stats,
    );
    let permits = (options.max_connections > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(options.max_connections)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((mut stream, peer)) => {
                let permit = match &permits {
                    Some(permits) => match permits.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            state.stats.request(Protocol::OpenTsdbTelnet);
                            state.stats.refused(Protocol::OpenTsdbTelnet, "overloaded");
                            let line = too_many_connections(options.max_connections);
                            tokio::spawn(async move {
                                let _ = stream.write_all(line.as_bytes()).await;
                                let _ = stream.shutdown().await;
                            });
                            continue;
                        }
                    },
                    None => None,
                };
                let state = state.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection(stream, peer, &state, stopped).await {
                        tracing::debug!(%peer, %error, "opentsdb telnet connection ended");
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "opentsdb telnet accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One telnet connection: reads, answers, until EOF, `exit` or shutdown.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &GatewayState,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let enrichment = Enrichment {
        client_ip: Some(peer.ip().to_canonical().to_string()),
        extra_tags: Tags::new(),
    };
    let mut lines = LineBuffer::default();
    let mut chunk = vec![0u8; MAX_LINE_BYTES];
    loop {
        let read = tokio::select! {
            read = stream.read(&mut chunk) => read?,
            _ = stopped.wait_for(|stop| *stop) => return Ok(()),
        };
        let at_end = read == 0;
        let (complete, mut replies) = if at_end {
            (lines.finish(), String::new())
        } else {
            lines.push(&chunk[..read])
        };
        let exit = answer_lines(state, &enrichment, &complete, &mut replies).await;
        if !replies.is_empty() {
            stream.write_all(replies.as_bytes()).await?;
        }
        if at_end || exit {
            return Ok(());
        }
    }
}

/// Decodes and writes `lines`, appending the answers to `replies`; whether `exit` was asked.
async fn answer_lines(
    state: &GatewayState,
    enrichment: &Enrichment,
    lines: &[String],
    replies: &mut String,
) -> bool {
    if lines.is_empty() {
        return false;
    }
    let protocol = Protocol::OpenTsdbTelnet;
    let mut writer = PointWriter::new(enrichment, &state.limits);
    let mut exit = false;
    let mut puts = 0;
    // Read once for the whole chunk, so that its lines are all refused or all taken.
    let refusing = state.stats.refusing();
    for line in lines {
        let parsed = parse_telnet_line(line);
        if refusing
            && matches!(
                parsed,
                Ok(TelnetCommand::Put(_)) | Err(TelnetError::Put { .. })
            )
        {
            puts += 1;
            replies.push_str(&format!("put: {}\n", super::REFUSE_MODE_MESSAGE));
            continue;
        }
        let answer = match parsed {
            Ok(TelnetCommand::Put(point)) => {
                puts += 1;
                match writer.add(point) {
                    Ok(Ok(())) => None,
                    Ok(Err(message)) => Some(format!("put: illegal argument: {message}")),
                    Err(error) => Some(format!("put: {error}")),
                }
            }
            Ok(TelnetCommand::Nothing) => None,
            Ok(TelnetCommand::Version) => Some(version_line()),
            Ok(TelnetCommand::Help) => Some(TELNET_COMMANDS.to_owned()),
            Ok(TelnetCommand::Exit) => {
                exit = true;
                None
            }
            Err(error) => {
                if let TelnetError::Put { reason, message } = &error {
                    puts += 1;
                    writer.skip(*reason, || message.clone());
                }
                Some(error.to_string())
            }
        };
        if let Some(answer) = answer {
            replies.push_str(&answer);
            replies.push('\n');
        }
        if exit {
            break;
        }
    }
    if puts > 0 {
        state
            .stats
            .update(protocol, |counters| counters.requests += 1);
        if refusing {
            state.stats.refused(protocol, "refuse_mode");
            return exit;
        }
        match write(state, protocol, writer.finish()).await {
            Ok(written) if written.too_old > 0 => replies.push_str(&format!(
                "put: {} data points older than max_sample_age refused (too_old)\n",
                written.too_old
            )),
            Ok(_) => {}
            Err(message) => replies.push_str(&format!("put: {message}\n")),
        }
    }
    exit
}

fn version_line() -> String {
    format!(
        "lookout-server {} (OpenTSDB telnet put compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`], `\n` or `\r\n` ended.
#[derive(Debug, Default)]
struct LineBuffer {
    partial: Vec<u8>,
    /// The rest of a line that was too long is being dropped.
    discarding: bool,
}

impl LineBuffer {
    /// Adds bytes; returns the lines they complete and the answers to overlong lines.
    fn push(&mut self, bytes: &[u8]) -> (Vec<String>, String) {
        let mut lines = Vec::new();
        let mut replies = String::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            let piece = &rest[..end];
            rest = &rest[end + 1..];
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            if self.partial.len() + piece.len() > MAX_LINE_BYTES {
                self.partial.clear();
                replies.push_str(&too_long());
                continue;
            }
            self.partial.extend_from_slice(piece);
            lines.push(line_text(&std::mem::take(&mut self.partial)));
        }
        if !self.discarding {
            if self.partial.len() + rest.len() > MAX_LINE_BYTES {
                self.partial.clear();
                self.discarding = true;
                replies.push_str(&too_long());
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        (lines, replies)
    }

    /// The last line when the stream ends without a line ending.
    fn finish(&mut self) -> Vec<String> {
        let partial = std::mem::take(&mut self.partial);
        if partial.is_empty() || self.discarding {
            return Vec::new();
        }
        vec![line_text(&partial)]
    }
}

fn too_long() -> String {
    format!("error: line longer than {MAX_LINE_BYTES} bytes dropped\n")
}

fn line_text(bytes: &[u8]) -> String {
    let line = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_reads_and_overlong_lines() {
        let mut buffer = LineBuffer::default();
        let (lines, replies) = buffer.push(b"put a 1 1 h=x\r\nput b");
        assert_eq!(lines, ["put a 1 1 h=x"]);
        assert!(replies.is_empty());
        let (lines, _) = buffer.push(b" 1 1 h=x\nversion\n");
        assert_eq!(lines, ["put b 1 1 h=x", "version"]);

        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        let (lines, replies) = buffer.push(&long);
        assert!(lines.is_empty());
        assert!(replies.starts_with("error: line longer than"));
        let (lines, replies) = buffer.push(b"xxxx\nhelp\n");
        assert_eq!(lines, ["help"], "the overlong line's tail is dropped");
        assert!(replies.is_empty());

        let (lines, _) = buffer.push(b"exit");
        assert!(lines.is_empty());
        assert_eq!(buffer.finish(), ["exit"]);
    }
}

#[cfg(test)]
mod http_tests {
    use super::super::tests::{err_header, fixtures, harness, Harness};
    use super::*;
    use lookout_model::TimestampMs;

    impl Harness {
        async fn put(&self, path: &str, body: &str) -> reqwest::Response {
            self.client
                .post(format!("{}{path}", self.base))
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap()
        }
    }

    const GOOD: &str =
        r#"{"metric":"sys.cpu.user","timestamp":1530624430,"value":30,"tags":{"host":"web02"}}"#;
    const BAD: &str =
        r#"{"metric":"sys.cpu.user","timestamp":1530624430,"value":"x","tags":{"host":"web03"}}"#;

    #[tokio::test]
    async fn the_sofalookout_route_with_the_fixture() {
        let Some(dir) = fixtures() else { return };
        let expected: Value = serde_json::from_slice(
            &std::fs::read(dir.join("opentsdb-put-expected-metrics.json")).unwrap(),
        )
        .unwrap();
        let gateway = harness().await;
        let url = format!("{}/opentsdb/api/put", gateway.base);
        let body = std::fs::read(dir.join("opentsdb-put.json")).unwrap();
        let mut request = gateway.client.post(&url).body(body.clone());
        for (name, value) in expected["request"]["headers"].as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        let response = request.send().await.unwrap();
        // OpenTSDB's 204 where the original answered 202.
        assert_eq!(response.status(), 204);
        let series = gateway.all_series().await;
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels.to_string(),
            r#"sys.cpu.user{app="xx", dc="lga", disk_path="/dev/sda_1", host="web01", ip="127.0.0.1"}"#
        );
        assert_eq!(series[0].samples[0].value, 42.5);
        assert_eq!(
            series[0].samples[0].timestamp,
            TimestampMs(1_530_624_430_000)
        );

        for case in expected["errors"].as_array().unwrap() {
            let mut request = gateway.client.post(&url).body(body.clone());
            for (name, value) in case["headers"].as_object().unwrap() {
                request = request.header(name.as_str(), value.as_str().unwrap());
            }
            let refused = request.send().await.unwrap();
            assert_eq!(refused.status(), 400);
            assert_eq!(err_header(&refused), case["Err"].as_str().unwrap());
        }
        assert!(gateway
            .metrics()
            .contains("lookout_gateway_samples_accepted_total{protocol=\"opentsdb_http\"} 2"));
    }

    #[tokio::test]
    async fn api_put_answers_as_opentsdb() {
        let gateway = harness().await;
        let ok = gateway.put("/api/put", GOOD).await;
        assert_eq!(ok.status(), 204);
        assert_eq!(ok.text().await.unwrap(), "");
        let series = gateway.all_series().await;
        assert_eq!(
            series[0].labels.to_string(),
            r#"sys.cpu.user{host="web02", ip="127.0.0.1"}"#,
            "no app, step or token needed on /api/put"
        );

        let both = format!("[{GOOD},{BAD}]");
        let plain = gateway.put("/api/put", &both).await;
        assert_eq!(plain.status(), 400);
        let answer: Value = plain.json().await.unwrap();
        assert_eq!(
            answer["error"]["message"],
            "One or more data points had errors"
        );

        let summary = gateway.put("/api/put?summary", &both).await;
        assert_eq!(summary.status(), 400);
        let answer: Value = summary.json().await.unwrap();
        assert_eq!(answer, json!({"failed": 1, "success": 1}));

        let details = gateway.put("/api/put?details=true&sync", &both).await;
        assert_eq!(details.status(), 400);
        let answer: Value = details.json().await.unwrap();
        assert_eq!(answer["failed"], 1);
        assert_eq!(answer["success"], 1);
        assert_eq!(
            answer["errors"],
            json!([{
                "datapoint": serde_json::from_str::<Value>(BAD).unwrap(),
                "error": "Unable to parse value to a number"
            }])
        );

        let all_good = gateway.put("/api/put?summary", GOOD).await;
        assert_eq!(all_good.status(), 200);
        let answer: Value = all_good.json().await.unwrap();
        assert_eq!(answer, json!({"failed": 0, "success": 1}));

        let not_json = gateway.put("/api/put", "[{").await;
        assert_eq!(not_json.status(), 400);
        let answer: Value = not_json.json().await.unwrap();
        assert_eq!(answer["error"]["message"], "Unable to parse the given JSON");
        let empty = gateway.put("/api/put", "").await;
        assert_eq!(empty.status(), 400);

        let metrics = gateway.metrics();
        for line in [
            "lookout_gateway_requests_total{protocol=\"opentsdb_http\"} 7",
            "lookout_gateway_samples_rejected_total{protocol=\"opentsdb_http\",reason=\"non_numeric_value\"} 3",
            "lookout_gateway_requests_refused_total{protocol=\"opentsdb_http\",reason=\"malformed_body\"} 2",
        ] {
            assert!(metrics.contains(line), "{line} missing from\n{metrics}");
        }
    }

    #[tokio::test]
    async fn the_step_header_aligns_on_api_put() {
        let gateway = harness().await;
        let response = gateway
            .client
            .post(format!("{}/api/put", gateway.base))
            .header("step", "60")
            .header("app", "demo")
            .body(GOOD)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let series = gateway.all_series().await;
        assert_eq!(series[0].labels.get("app"), Some("demo"));
        assert_eq!(series[0].labels.get("step"), None);
        assert_eq!(
            series[0].samples[0].timestamp,
            TimestampMs(1_530_624_420_000)
        );
    }

    #[tokio::test]
    async fn telnet_put_lines_over_tcp() {
        let gateway = harness().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve_telnet(
            listener,
            gateway.storage.clone(),
            Limits::default(),
            TelnetOptions::default(),
            gateway.stats.clone(),
            stopped,
        ));
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                b"put sys.load 1530624430 0.5 host=a source=collectd\r\n\
                  put sys.load 1530624430123 7 host=b\n\
                  put sys.load 1530624430 1\n\
                  put sys.load 1530624430 x host=c\n\
                  version\n\
                  stats\n\
                  \n\
                  exit\n\
                  put never 1530624430 1 host=z\n",
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(
            answer,
            format!(
                "put: illegal argument: not enough arguments (need least 4, got 3)\n\
                 put: invalid value: Invalid value: x\n\
                 {}\n\
                 unknown command: stats.  Try `help'.\n",
                version_line()
            )
        );
        let series = gateway.all_series().await;
        let written: Vec<String> = series
            .iter()
            .map(|series| format!("{} {:?}", series.labels, series.samples))
            .collect();
        assert_eq!(series.len(), 2, "{written:?}");
        assert_eq!(
            series[0].labels.to_string(),
            r#"sys.load{host="a", ip="127.0.0.1", source="collectd"}"#
        );
        assert_eq!(
            series[1].samples[0].timestamp,
            TimestampMs(1_530_624_430_123)
        );
        let metrics = gateway.metrics();
        assert!(metrics
            .contains("lookout_gateway_samples_accepted_total{protocol=\"opentsdb_telnet\"} 2"));
        assert!(metrics.contains(
            "lookout_gateway_samples_rejected_total{protocol=\"opentsdb_telnet\",reason=\"malformed_line\"} 1"
        ));
        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
