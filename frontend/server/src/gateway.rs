//! The push endpoints on the gateway port (spec §3.0–§3.3, §3.6, §3.8): the HTTP edge around
//! the pure decoders of `lookout_gateway`, plus the OpenTSDB telnet listener ([`opentsdb`]).
//!
//! | route | protocol | success |
//! |---|---|---|
//! | `GET /datas` | SDK liveness probe | 200 `OK` |
//! | `POST /datas` | SDK report (`app` header required, else 403 + `Wait-Minutes: 5` + `Err: APP_NAME_NULL`) | 200 |
//! | `GET`, `POST /lookout/metrics/{k}/{v}/...` | SDK body, tags from the path (`app`, `step` required) | 200 |
//! | `POST`, `PUT /prom/metrics/job/{job}/{k}/{v}/...` | Prometheus text, token required | 202 |
//! | `PUT`, `POST`, `DELETE /metrics/job/{job}/{label}/{value}...` | Pushgateway API ([`pushgateway`]) | 200, DELETE 202 |
//! | `GET /beat`, `.../_template/...`, `.../_cat/health`, `POST /beat/_bulk`, `/_bulk` | Metricbeat 6 ES emulation ([`metricbeat`]; token required under `/beat`) | 200 + ES JSON |
//! | `POST /api/put`, `/opentsdb/api/put` | OpenTSDB JSON (the second with SOFALookout's `app`/`step` headers and token required) | 204, or OpenTSDB's `?summary` / `?details` JSON |
//!
//! Refusals have the original's shape: a status, header `Err: <msg>` and `<msg>` as a
//! text/plain body (OpenTSDB's body errors have OpenTSDB's JSON shape instead). Unlike the
//! original, which queued the body and answered at once, a request is decoded and written
//! before the answer: a storage failure is a 503 the sender can retry, not a silent loss. A
//! bad measurement or line is not a client error: the rest is written, the answer is the
//! protocol's success, and the skip is counted in `lookout_gateway_samples_rejected_total` and
//! logged (at most every 10 s). An empty body answers 200 before any check, as the original
//! does (§3.0), except on OpenTSDB's routes, which answer as OpenTSDB does.
//!
//! [`pipeline`] holds what every protocol shares around the store: common tags and label
//! limits on every write, the cardinality budget's refusals reported like any other, and
//! back-pressure (503 + `Retry-After` when too many writes are in flight).

pub mod management;
mod metricbeat;
pub mod opentsdb;
pub mod pipeline;
mod pushgateway;
pub mod ratelimit;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lookout_gateway::lookout::request::{path_tags, require_app_step, RequestError, Tokens};
use lookout_gateway::lookout::{
    prom_push, sdk, Decoded, Enrichment, Limits, LookoutError, SkipReason, Tags,
};
use lookout_gateway::pushgateway::PushGroups;
use lookout_model::TimestampMs;
use lookout_storage::{RejectReason, Storage, WriteOutcome};

/// The SOFALookout protocols served, as named in self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `POST /datas`
    LookoutSdk,
    /// `/lookout/metrics/...`
    LookoutMetrics,
    /// `/prom/metrics/...`
    PrometheusPush,
    /// `/api/put`, `/opentsdb/api/put`
    OpenTsdbHttp,
    /// telnet `put` lines (one request: the lines of one read)
    OpenTsdbTelnet,
    /// `/metrics/job/...`
    Pushgateway,
    /// `/beat/_bulk`, `/_bulk`
    Metricbeat,
    /// Lookout scraping targets itself (one request: one scrape)
    Scrape,
    /// `/api/v1/write` on the gateway port (counted by [`pipeline`]: requests, stored and
    /// store-rejected samples, refusals)
    RemoteWrite,
    /// `/api/v1/write` on the query API port (counted the same way; no common tags, label
    /// limits, refuse mode or rate limits there)
    ApiRemoteWrite,
}

impl Protocol {
    const ALL: [Protocol; 10] = [
        Protocol::LookoutSdk,
        Protocol::LookoutMetrics,
        Protocol::PrometheusPush,
        Protocol::OpenTsdbHttp,
        Protocol::OpenTsdbTelnet,
        Protocol::Pushgateway,
        Protocol::Metricbeat,
        Protocol::Scrape,
        Protocol::RemoteWrite,
        Protocol::ApiRemoteWrite,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Protocol::LookoutSdk => "lookout_sdk",
            Protocol::LookoutMetrics => "lookout_metrics",
            Protocol::PrometheusPush => "prometheus_push",
            Protocol::OpenTsdbHttp => "opentsdb_http",
            Protocol::OpenTsdbTelnet => "opentsdb_telnet",
            Protocol::Pushgateway => "pushgateway",
            Protocol::Metricbeat => "metricbeat",
            Protocol::Scrape => "scrape",
            Protocol::RemoteWrite => "remote_write",
            Protocol::ApiRemoteWrite => "api_remote_write",
        }
    }
}

/// Why a whole request was refused, as named in self-metrics.
const REFUSAL_REASONS: [&str; 12] = [
    "app_missing",
    "bad_path",
    "token_missing",
    "token_invalid",
    "body_too_large",
    "malformed_body",
    "storage_unavailable",
    "scrape_failed",
    "overloaded",
    "unsupported_media_type",
    "refuse_mode",
    "rate_limited",
];

/// Samples not stored although the request succeeded: info samples (never stored, spec
/// §4.6), decode skips and storage rejections.
const INFO_NOT_STORED: &str = "info_not_stored";

/// Remote write 2.0 native histogram samples, which are not stored yet.
const NATIVE_HISTOGRAM_UNSUPPORTED: &str = "native_histogram_unsupported";

/// Samples older than `[gateway] max_sample_age` (spec §4.5's "metric is too old").
const TOO_OLD: &str = "too_old";

#[derive(Debug, Default)]
struct ProtocolCounters {
    requests: u64,
    refused: BTreeMap<&'static str, u64>,
    accepted: u64,
    rejected: BTreeMap<&'static str, u64>,
}

/// Counters of the SOFALookout endpoints, rendered into the server's `/metrics`.
#[derive(Debug, Default)]
pub struct GatewayStats {
    counters: Mutex<BTreeMap<Protocol, ProtocolCounters>>,
    /// Seconds since the epoch of the last skip warning (the log's rate limit).
    last_skip_log: AtomicI64,
    /// Write requests of the gateway port being served ([`pipeline::admit`]).
    pub(crate) in_flight: AtomicI64,
    /// Most write requests served at once (0: unlimited).
    pub(crate) in_flight_limit: AtomicI64,
    /// Remote-write requests of the query API port being served.
    pub(crate) api_in_flight: AtomicI64,
    /// Most of them served at once (0: unlimited).
    pub(crate) api_in_flight_limit: AtomicI64,
    /// Refuse mode (`GET /cmd/down` on the management port, spec §3.7): every push to the
    /// gateway port and telnet `put` lines are refused.
    refusing: std::sync::atomic::AtomicBool,
}

/// At most one warning about skipped items per this many seconds.
const SKIP_LOG_INTERVAL_SECONDS: i64 = 10;

impl GatewayStats {
    /// Whether the gateway is in refuse mode.
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Enters (`true`) or leaves refuse mode; whether the mode changed.
    pub fn set_refusing(&self, refusing: bool) -> bool {
        self.refusing.swap(refusing, Ordering::Relaxed) != refusing
    }

    fn update(&self, protocol: Protocol, change: impl FnOnce(&mut ProtocolCounters)) {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        change(counters.entry(protocol).or_default());
    }

    /// Counts one request (a scrape) of `protocol`.
    pub(crate) fn request(&self, protocol: Protocol) {
        self.update(protocol, |counters| counters.requests += 1);
    }

    /// Counts what the store did with a batch of `protocol`.
    pub(crate) fn stored(&self, protocol: Protocol, outcome: &WriteOutcome) {
        self.update(protocol, |counters| {
            counters.accepted += outcome.accepted;
            for (reason, count) in &outcome.rejected {
                if *count > 0 {
                    *counters.rejected.entry(reason.as_str()).or_default() += count;
                }
            }
        });
    }

    /// Counts `count` samples of `protocol` not stored, for `reason`.
    pub(crate) fn rejected(&self, protocol: Protocol, reason: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        self.update(protocol, |counters| {
            *counters.rejected.entry(reason).or_default() += count;
        });
    }

    pub(crate) fn refused(&self, protocol: Protocol, reason: &'static str) {
        self.update(protocol, |counters| {
            *counters.refused.entry(reason).or_default() += 1;
        });
    }

    /// Appends the counters in the Prometheus text format, every protocol and reason
    /// present (zero when nothing happened).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let empty = ProtocolCounters::default();
        let of = |protocol| counters.get(&protocol).unwrap_or(&empty);
        let header = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        let name = "lookout_gateway_requests_total";
        header(
            out,
            name,
            "SOFALookout push requests received, by protocol.",
        );
        for protocol in Protocol::ALL {
            let _ = writeln!(
                out,
                "{name}{{protocol=\"{}\"}} {}",
                protocol.as_str(),
                of(protocol).requests
            );
        }
        let name = "lookout_gateway_requests_refused_total";
        header(
            out,
            name,
            "SOFALookout push requests refused whole, by reason.",
        );
        for protocol in Protocol::ALL {
            for reason in REFUSAL_REASONS {
                let count = of(protocol).refused.get(reason).copied().unwrap_or(0);
                let protocol = protocol.as_str();
                let _ = writeln!(
                    out,
                    "{name}{{protocol=\"{protocol}\",reason=\"{reason}\"}} {count}"
                );
            }
        }
        for (name, help, value) in [
            (
                "lookout_gateway_in_flight_requests",
                "Write requests of the gateway port being served.",
                self.in_flight.load(Ordering::Relaxed),
            ),
            (
                "lookout_gateway_in_flight_requests_limit",
                "Most write requests the gateway port serves at once before answering 503 (0: unlimited).",
                self.in_flight_limit.load(Ordering::Relaxed),
            ),
            (
                "lookout_api_remote_write_in_flight_requests",
                "Remote-write requests of the query API port being served.",
                self.api_in_flight.load(Ordering::Relaxed),
            ),
            (
                "lookout_api_remote_write_in_flight_requests_limit",
                "Most remote-write requests the query API port serves at once before answering 503 (0: unlimited).",
                self.api_in_flight_limit.load(Ordering::Relaxed),
            ),
            (
                "lookout_gateway_refuse_mode",
                "1 while the gateway refuses every push (management GET /cmd/down), else 0.",
                i64::from(self.refusing()),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let name = "lookout_gateway_samples_accepted_total";
        header(out, name, "Samples of SOFALookout pushes stored.");
        for protocol in Protocol::ALL {
            let _ = writeln!(
                out,
                "{name}{{protocol=\"{}\"}} {}",
                protocol.as_str(),
                of(protocol).accepted
            );
        }
        let name = "lookout_gateway_samples_rejected_total";
        header(
            out,
            name,
            "Samples, measurements or lines of accepted SOFALookout pushes not stored, by reason.",
        );
        // `invalid_labels` is both a decode and a storage reason: one series.
        let reasons: std::collections::BTreeSet<&str> = SkipReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .chain(RejectReason::ALL.iter().map(|reason| reason.as_str()))
            .chain([INFO_NOT_STORED, NATIVE_HISTOGRAM_UNSUPPORTED, TOO_OLD])
            .collect();
        for reason in reasons {
            for protocol in Protocol::ALL {
                let count = of(protocol).rejected.get(reason).copied().unwrap_or(0);
                let protocol = protocol.as_str();
                let _ = writeln!(
                    out,
                    "{name}{{protocol=\"{protocol}\",reason=\"{reason}\"}} {count}"
                );
            }
        }
    }

    /// Whether a skip warning may be logged now.
    fn may_log_skip(&self) -> bool {
        let now = now_ms() / 1000;
        let last = self.last_skip_log.load(Ordering::Relaxed);
        now - last >= SKIP_LOG_INTERVAL_SECONDS
            && self
                .last_skip_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The answer to every push in refuse mode (spec §3.0 step 1), as header `Err` and body.
pub const REFUSE_MODE_MESSAGE: &str = "lookout gateway is in refuse requests mode";

struct GatewayState {
    storage: Arc<dyn Storage>,
    limits: Limits,
    /// Samples older than this many milliseconds are refused as `too_old` (`None`: no check).
    max_sample_age_ms: Option<i64>,
    /// Checked where SOFALookout asks for a token.
    tokens: Tokens,
    stats: Arc<GatewayStats>,
    /// The Pushgateway API's groups; held across a push's write so that pushes to the
    /// gateway are applied one at a time.
    push_groups: tokio::sync::Mutex<PushGroups>,
}

impl GatewayState {
    fn new(
        storage: Arc<dyn Storage>,
        limits: Limits,
        max_sample_age_ms: Option<i64>,
        tokens: Tokens,
        stats: Arc<GatewayStats>,
    ) -> Arc<Self> {
        Arc::new(GatewayState {
            storage,
            limits,
            max_sample_age_ms,
            tokens,
            stats,
            push_groups: tokio::sync::Mutex::new(PushGroups::new()),
        })
    }
}

/// The SOFALookout routes over `storage`; `tokens` are checked where SOFALookout asks for a
/// token; samples older than `max_sample_age_ms` (if any) are refused as `too_old`. Serve
/// with `into_make_service_with_connect_info::<SocketAddr>()` so samples get the peer's `ip`.
pub fn router(
    storage: Arc<dyn Storage>,
    limits: Limits,
    max_sample_age_ms: Option<i64>,
    tokens: Tokens,
    stats: Arc<GatewayStats>,
) -> Router {
    let state = GatewayState::new(storage, limits, max_sample_age_ms, tokens, stats);
    Router::new()
        .route("/datas", get(datas_probe).post(datas))
        .route(
            "/lookout/metrics",
            get(lookout_metrics).post(lookout_metrics),
        )
        .route(
            "/lookout/metrics/{*tags}",
            get(lookout_metrics).post(lookout_metrics),
        )
        .route(
            "/prom/metrics",
            axum::routing::post(prom_push).put(prom_push),
        )
        .route(
            "/prom/metrics/{*tags}",
            axum::routing::post(prom_push).put(prom_push),
        )
        .route(
            "/metrics/{*grouping}",
            axum::routing::put(pushgateway::push)
                .post(pushgateway::push)
                .delete(pushgateway::push),
        )
        .route("/", get(metricbeat::info))
        .route("/beat", get(metricbeat::info))
        .route("/beat/", get(metricbeat::info))
        .route(
            "/beat/_template/{name}",
            get(metricbeat::template_exists).put(metricbeat::template_put),
        )
        .route(
            "/_template/{name}",
            get(metricbeat::template_exists).put(metricbeat::template_put),
        )
        .route("/_cat/health", get(metricbeat::cat_health))
        .route("/beat/_cat/health", get(metricbeat::cat_health))
        .route(
            "/beat/_bulk",
            axum::routing::post(metricbeat::bulk).put(metricbeat::bulk),
        )
        .route(
            "/_bulk",
            axum::routing::post(metricbeat::bulk).put(metricbeat::bulk),
        )
        .route("/api/put", axum::routing::post(opentsdb::put))
        .route("/opentsdb/api/put", axum::routing::post(opentsdb::put))
        .with_state(state)
}

/// A refusal in the original's shape: `Err: <msg>` header and `<msg>` as the body.
fn refusal(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_owned(),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(message) {
        response.headers_mut().insert("Err", value);
    }
    response
}

fn request_refusal(error: &RequestError) -> (&'static str, Response) {
    let reason = match error {
        RequestError::OddPathSegments { .. }
        | RequestError::AppRequired
        | RequestError::StepRequired
        | RequestError::StepInvalid => "bad_path",
        RequestError::TokenEmpty => "token_missing",
        RequestError::TokenInvalid => "token_invalid",
    };
    (reason, refusal(StatusCode::BAD_REQUEST, &error.to_string()))
}

fn decode_refusal(error: &LookoutError) -> (&'static str, Response) {
    match error {
        LookoutError::Snappy { .. } | LookoutError::Json { .. } => (
            "malformed_body",
            refusal(StatusCode::BAD_REQUEST, &error.to_string()),
        ),
        LookoutError::BodyTooLarge { .. }
        | LookoutError::DecompressedTooLarge { .. }
        | LookoutError::TooManySamples { .. } => (
            "body_too_large",
            refusal(StatusCode::PAYLOAD_TOO_LARGE, &error.to_string()),
        ),
    }
}

/// A request's parts the handlers need.
struct Incoming {
    headers: HeaderMap,
    path: String,
    query: Option<String>,
    peer_ip: Option<String>,
    body: Bytes,
}

/// Counts the request for `protocol` and reads its body up to the limit; a larger one is a
/// 413, counted as refused.
async fn incoming(
    state: &GatewayState,
    protocol: Protocol,
    request: Request,
) -> Result<Incoming, Response> {
    state
        .stats
        .update(protocol, |counters| counters.requests += 1);
    let incoming = read_incoming(request, &state.limits).await;
    if incoming.is_err() {
        state.stats.refused(protocol, "body_too_large");
    }
    incoming
}

/// Reads the body up to the limit; a larger one is a 413.
async fn read_incoming(request: Request, limits: &Limits) -> Result<Incoming, Response> {
    let (parts, body) = request.into_parts();
    let peer_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_canonical().to_string());
    let limit = limits.decode.max_body_bytes;
    let body = axum::body::to_bytes(Body::new(body), limit)
        .await
        .map_err(|_| {
            let message = format!("request body is larger than {limit} bytes");
            refusal(StatusCode::PAYLOAD_TOO_LARGE, &message)
        })?;
    Ok(Incoming {
        headers: parts.headers,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        peer_ip,
        body,
    })
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// The request's token (`X-Lookout-Token` or basic auth) when `tokens` accepts it.
fn checked_token(tokens: &Tokens, headers: &HeaderMap) -> Result<String, RequestError> {
    tokens.check(
        header_text(headers, "X-Lookout-Token"),
        header_text(headers, header::AUTHORIZATION.as_str()),
    )
}

/// The SDK's `ip` fallback: the `Client-Ip` header, else the peer address.
fn sdk_client_ip(incoming: &Incoming) -> Option<String> {
    header_text(&incoming.headers, "Client-Ip")
        .map(str::to_owned)
        .or_else(|| incoming.peer_ip.clone())
}

fn is_snappy(headers: &HeaderMap) -> bool {
    header_text(headers, header::CONTENT_ENCODING.as_str())
        .is_some_and(|encoding| encoding.eq_ignore_ascii_case("snappy"))
}

/// `GET /datas`: the SDK's liveness probe.
async fn datas_probe() -> &'static str {
    "OK"
}

/// `POST /datas`: an SDK report.
async fn datas(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let protocol = Protocol::LookoutSdk;
    let incoming = match incoming(&state, protocol, request).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if incoming.body.is_empty() {
        return StatusCode::OK.into_response();
    }
    if header_text(&incoming.headers, "app").is_none() {
        state.stats.refused(protocol, "app_missing");
        return (
            StatusCode::FORBIDDEN,
            [("Wait-Minutes", "5"), ("Err", "APP_NAME_NULL")],
        )
            .into_response();
    }
    store_sdk_body(&state, protocol, incoming, Tags::new()).await
}

/// `/lookout/metrics/{k}/{v}/...`: the SDK body with tags from the path.
async fn lookout_metrics(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let protocol = Protocol::LookoutMetrics;
    let incoming = match incoming(&state, protocol, request).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if incoming.body.is_empty() {
        return StatusCode::OK.into_response();
    }
    let rest = incoming.path.strip_prefix("/lookout/metrics").unwrap_or("");
    let extra_tags = match path_tags(rest).and_then(|tags| require_app_step(&tags).map(|()| tags)) {
        Ok(tags) => tags,
        Err(error) => {
            let (reason, response) = request_refusal(&error);
            state.stats.refused(protocol, reason);
            return response;
        }
    };
    store_sdk_body(&state, protocol, incoming, extra_tags).await
}

/// Decodes an SDK body (`/datas`, `/lookout/metrics`) off the async workers and stores it.
async fn store_sdk_body(
    state: &GatewayState,
    protocol: Protocol,
    incoming: Incoming,
    extra_tags: Tags,
) -> Response {
    let enrichment = Enrichment {
        client_ip: sdk_client_ip(&incoming),
        extra_tags,
    };
    let snappy = is_snappy(&incoming.headers);
    let limits = state.limits;
    let body = incoming.body;
    let decoded = decode_off_runtime(move || sdk::decode(&body, snappy, &enrichment, &limits));
    store(state, protocol, decoded.await, StatusCode::OK).await
}

/// `POST|PUT /prom/metrics/job/{job}/...`: a Prometheus text push.
async fn prom_push(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    let protocol = Protocol::PrometheusPush;
    let arrival = TimestampMs(now_ms());
    let incoming = match incoming(&state, protocol, request).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if incoming.body.is_empty() {
        return StatusCode::OK.into_response();
    }
    let rest = incoming.path.strip_prefix("/prom/metrics").unwrap_or("");
    let checked = path_tags(rest).and_then(|tags| {
        require_app_step(&tags)?;
        checked_token(&state.tokens, &incoming.headers)?;
        Ok(tags)
    });
    let extra_tags = match checked {
        Ok(tags) => tags,
        Err(error) => {
            let (reason, response) = request_refusal(&error);
            state.stats.refused(protocol, reason);
            return response;
        }
    };
    let enrichment = Enrichment {
        client_ip: incoming.peer_ip.clone(),
        extra_tags,
    };
    let limits = state.limits;
    let body = incoming.body;
    let decoded =
        decode_off_runtime(move || prom_push::decode(&body, arrival, &enrichment, &limits));
    store(&state, protocol, decoded.await, StatusCode::ACCEPTED).await
}

/// Runs a decoder on the blocking pool: a 32 MiB body is a long CPU stretch.
async fn decode_off_runtime<T: Send + 'static>(decode: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(decode).await {
        Ok(decoded) => decoded,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Writes what was decoded and answers `success`, or the refusal.
async fn store(
    state: &GatewayState,
    protocol: Protocol,
    decoded: Result<Decoded, LookoutError>,
    success: StatusCode,
) -> Response {
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(error) => return refuse_body(state, protocol, &error),
    };
    match write(state, protocol, decoded).await {
        Ok(_) => success.into_response(),
        Err(message) => refusal(StatusCode::SERVICE_UNAVAILABLE, &message),
    }
}

/// Counts and answers a body refused whole.
fn refuse_body(state: &GatewayState, protocol: Protocol, error: &LookoutError) -> Response {
    let (reason, response) = decode_refusal(error);
    state.stats.refused(protocol, reason);
    tracing::debug!(protocol = protocol.as_str(), %error, "body refused");
    response
}

/// What [`write`] stored and refused.
#[derive(Debug, Default)]
struct Written {
    /// The store's outcome.
    outcome: WriteOutcome,
    /// Samples refused before the store as older than `max_sample_age`.
    too_old: u64,
}

/// Removes the samples older than `max_age_ms` before `now_ms` (spec §4.5: `timestamp +
/// max_age < now`) and the series left without samples; how many were removed.
fn drop_too_old(batch: &mut lookout_storage::WriteBatch, max_age_ms: i64, now_ms: i64) -> u64 {
    let oldest = now_ms.saturating_sub(max_age_ms);
    let mut removed = 0u64;
    for series in &mut batch.series {
        let before = series.samples.len();
        series.samples.retain(|sample| sample.timestamp.0 >= oldest);
        removed += (before - series.samples.len()) as u64;
    }
    if removed > 0 {
        batch.series.retain(|series| !series.samples.is_empty());
    }
    removed
}

/// Writes the batch of what was decoded, less the samples older than `max_sample_age`, and
/// counts what was stored and what not: the storage's outcome, or the failure in words
/// (counted as `storage_unavailable`).
async fn write(
    state: &GatewayState,
    protocol: Protocol,
    mut decoded: Decoded,
) -> Result<Written, String> {
    let too_old = match state.max_sample_age_ms {
        Some(max_age) => drop_too_old(&mut decoded.batch, max_age, now_ms()),
        None => 0,
    };
    if decoded.skipped_total() > 0 && state.stats.may_log_skip() {
        tracing::warn!(
            protocol = protocol.as_str(),
            skipped = decoded.skipped_total(),
            first = decoded.messages.first().map(String::as_str).unwrap_or(""),
            "parts of a push were skipped (logged at most every 10 s)"
        );
    }
    let infos = decoded.infos.len() as u64;
    let skipped = decoded.skipped.clone();
    let outcome = if decoded.batch.is_empty() {
        WriteOutcome::default()
    } else {
        match state.storage.write(decoded.batch).await {
            Ok(outcome) => outcome,
            Err(error) => {
                state.stats.refused(protocol, "storage_unavailable");
                tracing::warn!(protocol = protocol.as_str(), %error, "a push could not be stored");
                return Err(format!("storage write failed: {error}"));
            }
        }
    };
    state.stats.update(protocol, |counters| {
        counters.accepted += outcome.accepted;
        let mut reject = |reason: &'static str, count: u64| {
            if count > 0 {
                *counters.rejected.entry(reason).or_default() += count;
            }
        };
        for (reason, count) in &skipped {
            reject(reason.as_str(), *count);
        }
        for (reason, count) in &outcome.rejected {
            reject(reason.as_str(), *count);
        }
        reject(INFO_NOT_STORED, infos);
        reject(TOO_OLD, too_old);
    });
    if too_old > 0 && state.stats.may_log_skip() {
        tracing::warn!(
            protocol = protocol.as_str(),
            too_old,
            "samples older than max_sample_age were refused (logged at most every 10 s)"
        );
    }
    Ok(Written { outcome, too_old })
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::{MatchKind, Matcher};
    use lookout_storage::{
        collect_series, Capabilities, DeleteRequest, LabelRequest, SelectRequest, Series,
        SeriesStream, StorageError, StorageResult, WriteBatch, WriteOutcome,
    };
    use lookout_tsdb::{Tsdb, TsdbOptions};

    /// A gateway over a fresh store (no retention: the fixtures are from 2019) on a loopback
    /// port.
    pub(super) struct Harness {
        pub(super) base: String,
        pub(super) storage: Arc<dyn Storage>,
        pub(super) stats: Arc<GatewayStats>,
        pub(super) client: reqwest::Client,
        _dir: tempfile::TempDir,
    }

    pub(super) async fn serve(
        storage: Arc<dyn Storage>,
        limits: Limits,
    ) -> (String, Arc<GatewayStats>) {
        let stats = Arc::new(GatewayStats::default());
        let app = router(storage, limits, None, Tokens::any(), stats.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, stats)
    }

    pub(super) async fn harness_with(limits: Limits) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let options = TsdbOptions::new(dir.path()).retention_ms(None);
        let tsdb = Tsdb::open(options).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(tsdb);
        let (base, stats) = serve(storage.clone(), limits).await;
        Harness {
            base,
            storage,
            stats,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub(super) async fn harness() -> Harness {
        harness_with(Limits::default()).await
    }

    impl Harness {
        pub(super) async fn all_series(&self) -> Vec<Series> {
            let everything = Matcher::new(MatchKind::Regex, "__name__", ".+").unwrap();
            let request = SelectRequest::new(vec![everything], i64::MIN, i64::MAX);
            collect_series(self.storage.select(request).await.unwrap())
                .await
                .unwrap()
        }

        pub(super) fn metrics(&self) -> String {
            let mut out = String::new();
            self.stats.render(&mut out);
            out
        }
    }

    pub(super) fn fixtures() -> Option<std::path::PathBuf> {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/lookout");
        if dir.is_dir() {
            Some(dir)
        } else {
            println!("SKIPPED: {} not found (the shared fixtures)", dir.display());
            None
        }
    }

    pub(super) fn err_header(response: &reqwest::Response) -> &str {
        response.headers()["Err"].to_str().unwrap()
    }

    #[tokio::test]
    async fn datas_probe_and_app_rule() {
        let gateway = harness().await;
        let url = format!("{}/datas", gateway.base);
        let probe = gateway.client.get(&url).send().await.unwrap();
        assert_eq!(probe.status(), 200);
        assert_eq!(probe.text().await.unwrap(), "OK");

        let body = r#"{"time":1000,"tags":{},"m":{"v":1}}"#;
        let no_app = gateway.client.post(&url).body(body).send().await.unwrap();
        assert_eq!(no_app.status(), 403);
        assert_eq!(no_app.headers()["Wait-Minutes"], "5");
        assert_eq!(err_header(&no_app), "APP_NAME_NULL");
        assert_eq!(no_app.text().await.unwrap(), "");

        // The original's empty-body short-circuit answers before any check.
        let empty = gateway.client.post(&url).send().await.unwrap();
        assert_eq!(empty.status(), 200);
        assert!(gateway.all_series().await.is_empty());
        assert!(gateway.metrics().contains(
            "lookout_gateway_requests_refused_total{protocol=\"lookout_sdk\",reason=\"app_missing\"} 1"
        ));
    }

    #[tokio::test]
    async fn datas_writes_the_sdk_report_plain_and_snappy() {
        let Some(dir) = fixtures() else { return };
        for (file, snappy) in [
            ("lookout-report.txt", false),
            ("lookout-report.snappy", true),
        ] {
            let gateway = harness().await;
            let mut request = gateway
                .client
                .post(format!("{}/datas", gateway.base))
                .header("app", "demo")
                .body(std::fs::read(dir.join(file)).unwrap());
            if snappy {
                request = request
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Encoding", "snappy");
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{file}");
            assert_eq!(response.text().await.unwrap(), "");
            let series = gateway.all_series().await;
            assert_eq!(series.len(), 16, "{file}");
            // No Client-Ip header: the custom line, which has no ip tag, gets the peer's.
            let custom = series
                .iter()
                .find(|series| series.labels.metric_name() == Some("custom.v"))
                .unwrap();
            assert_eq!(custom.labels.get("ip"), Some("127.0.0.1"));
            assert_eq!(custom.labels.get("m_9zone"), Some("gz_00"));
            let metrics = gateway.metrics();
            assert!(metrics
                .contains("lookout_gateway_samples_accepted_total{protocol=\"lookout_sdk\"} 16"));
            assert!(metrics.contains(
                "lookout_gateway_samples_rejected_total{protocol=\"lookout_sdk\",reason=\"info_not_stored\"} 1"
            ));
        }
    }

    #[tokio::test]
    async fn a_bad_segment_is_skipped_the_rest_written() {
        let gateway = harness().await;
        let body =
            "{\"time\":1000,\"tags\":{},\"m\":{\"v\":1}}\t{broken\t{\"time\":\"x\",\"tags\":{}}";
        let response = gateway
            .client
            .post(format!("{}/datas", gateway.base))
            .header("app", "demo")
            .header("Client-Ip", "10.9.9.9")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let series = gateway.all_series().await;
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels.get("ip"), Some("10.9.9.9"));
        let metrics = gateway.metrics();
        for reason in ["malformed_json", "invalid_time"] {
            assert!(
                metrics.contains(&format!(
                    "lookout_gateway_samples_rejected_total{{protocol=\"lookout_sdk\",reason=\"{reason}\"}} 1"
                )),
                "{metrics}"
            );
        }
    }

    #[tokio::test]
    async fn lookout_metrics_takes_tags_from_the_path() {
        let gateway = harness().await;
        let body = r#"{"time":"2019-05-30T15:04:30+08:00","tags":{"k1":"v1"},"m_name":{"count":0,"rate":0.0}}"#;
        let post = |path: &str| {
            gateway
                .client
                .post(format!("{}{path}", gateway.base))
                .body(body)
                .send()
        };
        let response = post("/lookout/metrics/app/demo/step/30/zone/gz%2000")
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let series = gateway.all_series().await;
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels.to_string(),
            r#"m_name.count{app="demo", ip="127.0.0.1", k1="v1", step="30", zone="gz 00"}"#
        );
        assert_eq!(
            series[0].samples[0].timestamp,
            TimestampMs(1_559_199_870_000)
        );

        for (path, message) in [
            ("/lookout/metrics/app/demo", "step tag in url is required"),
            ("/lookout/metrics/step/30", "app tag in url is required"),
            ("/lookout/metrics", "app tag in url is required"),
            (
                "/lookout/metrics/app/demo/step",
                "url path tags must be key/value pairs, got 3 segments",
            ),
        ] {
            let refused = post(path).await.unwrap();
            assert_eq!(refused.status(), 400, "{path}");
            assert_eq!(err_header(&refused), message);
            assert_eq!(refused.text().await.unwrap(), message);
        }
    }

    #[tokio::test]
    async fn prometheus_push_needs_a_token_and_floors_time_to_step() {
        let gateway = harness().await;
        let url = format!("{}/prom/metrics/job/j/app/demo/step/10", gateway.base);
        let body = "# TYPE x counter\nx{method=\"get\",} 1.0\nbroken{ 2\ny 3\n";
        let missing = gateway.client.put(&url).body(body).send().await.unwrap();
        assert_eq!(missing.status(), 400);
        assert_eq!(err_header(&missing), "token is empty");

        let before = now_ms();
        let pushed = gateway
            .client
            .put(&url)
            // lookout:>??~ in the standard alphabet, which the original answered with a 500.
            .header("Authorization", "Basic bG9va291dDo+Pz9+")
            .body(body)
            .send()
            .await
            .unwrap();
        let after = now_ms();
        assert_eq!(pushed.status(), 202);
        assert_eq!(pushed.text().await.unwrap(), "");
        let series = gateway.all_series().await;
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels.to_string(),
            r#"x{app="demo", ip="127.0.0.1", job="j", method="get"}"#
        );
        let timestamp = series[0].samples[0].timestamp.0;
        assert_eq!(timestamp % 10_000, 0);
        assert!((before / 10_000 * 10_000..=after).contains(&timestamp));
        assert!(gateway.metrics().contains(
            "lookout_gateway_samples_rejected_total{protocol=\"prometheus_push\",reason=\"malformed_line\"} 1"
        ));
    }

    #[test]
    fn too_old_samples_and_emptied_series_are_dropped() {
        use lookout_model::{Labels, Sample};
        let mut batch = lookout_storage::WriteBatch::new();
        batch.push(
            Labels::from_pairs([("__name__", "mixed")]).unwrap(),
            vec![
                Sample::new(899, 1.0),
                Sample::new(900, 2.0),
                Sample::new(1_000, 3.0),
            ],
        );
        batch.push(
            Labels::from_pairs([("__name__", "old")]).unwrap(),
            vec![Sample::new(10, 1.0)],
        );
        // max age 100 at now 1000: 900 is exactly at the edge and kept.
        assert_eq!(drop_too_old(&mut batch, 100, 1_000), 2);
        assert_eq!(batch.series.len(), 1);
        let kept: Vec<i64> = batch.series[0]
            .samples
            .iter()
            .map(|sample| sample.timestamp.0)
            .collect();
        assert_eq!(kept, [900, 1_000]);
        assert_eq!(drop_too_old(&mut batch, 100, 1_000), 0);
    }

    #[tokio::test]
    async fn limits_are_413() {
        let mut limits = Limits::default();
        limits.decode.max_body_bytes = 16;
        let gateway = harness_with(limits).await;
        let response = gateway
            .client
            .post(format!("{}/datas", gateway.base))
            .header("app", "demo")
            .body(r#"{"time":1000,"tags":{},"m":{"v":1}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        assert_eq!(
            err_header(&response),
            "request body is larger than 16 bytes"
        );
    }

    /// A store that is down.
    pub(super) struct Unavailable;

    #[async_trait::async_trait]
    impl Storage for Unavailable {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                backend: "down",
                out_of_order: lookout_storage::OutOfOrderPolicy::Rejected,
                delete: false,
                rejects_conflicting_duplicates: true,
                pushdown_functions: &[],
                pushdown_aggregations: &[],
                appends_known_series: false,
            }
        }
        async fn write(&self, _batch: WriteBatch) -> StorageResult<WriteOutcome> {
            Err(StorageError::Unavailable {
                reason: "disk full".into(),
            })
        }
        async fn select(&self, _request: SelectRequest) -> StorageResult<SeriesStream> {
            Err(StorageError::Unavailable {
                reason: "down".into(),
            })
        }
        async fn label_names(&self, _request: LabelRequest) -> StorageResult<Vec<String>> {
            Ok(Vec::new())
        }
        async fn label_values(
            &self,
            _name: &str,
            _request: LabelRequest,
        ) -> StorageResult<Vec<String>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _request: DeleteRequest) -> StorageResult<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_storage_failure_is_a_503() {
        let (base, stats) = serve(Arc::new(Unavailable), Limits::default()).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/datas"))
            .header("app", "demo")
            .body(r#"{"time":1000,"tags":{},"m":{"v":1}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(
            err_header(&response),
            "storage write failed: storage unavailable: disk full"
        );
        let mut metrics = String::new();
        stats.render(&mut metrics);
        assert!(metrics.contains(
            "lookout_gateway_requests_refused_total{protocol=\"lookout_sdk\",reason=\"storage_unavailable\"} 1"
        ));
    }
}
