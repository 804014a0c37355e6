//! The gateway's pipeline around the store (spec §4, with its bugs fixed): common tags and
//! label limits on every series the gateway port, the telnet listener and the scrape loops
//! write ([`GatewayStore`] over [`Pipeline`]), and what is decided before a write request's
//! body is read ([`Admission`], in this order): refuse mode (spec §3.0 step 1), tokens when
//! asked for everywhere, per-app rate limits ([`super::ratelimit`]), back-pressure on the
//! gateway port and on the query API port's remote-write receiver.
//!
//! SOFALookout queued every body and answered at once, dropping what did not fit (spec
//! §13.23). Here a write request holds a permit from the moment it arrives until its samples
//! are stored; when every permit is taken (the store lags behind the senders), a further
//! write is answered at once with 503 and `Retry-After` instead of being queued without
//! bound. Every 503 of the port carries `Retry-After`. 503 rather than 429: remote-write
//! senders retry every 5xx, while Prometheus versions with `retry_on_http_429` off drop a
//! batch answered 429.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use lookout_gateway::pipeline::Pipeline;
use lookout_storage::{
    Capabilities, DeleteRequest, LabelRequest, SelectRequest, SeriesStream, Storage, StorageResult,
    WriteBatch, WriteOutcome,
};
use tokio::sync::Semaphore;

use super::ratelimit::RateLimits;
use super::{checked_token, refusal, request_refusal, GatewayStats, Protocol};
use lookout_gateway::lookout::request::Tokens;

/// The store as the gateway writes to it: [`Pipeline::prepare`] on every batch (series it
/// refuses are in the outcome, as the store's own rejections are); with
/// [`GatewayStore::counting`], what the store did counted for one protocol (for receivers
/// whose handlers do not count, such as remote write). Reads pass through unchanged.
pub struct GatewayStore {
    inner: Arc<dyn Storage>,
    /// `None`: batches are written as sent (the query API port's receiver).
    pipeline: Option<Arc<Pipeline>>,
    counting: Option<(Protocol, Arc<GatewayStats>)>,
    /// Seconds since the epoch of the last warning about refused samples (the log's rate
    /// limit: the counters have every one).
    last_rejection_log: std::sync::atomic::AtomicI64,
}

/// At most one warning about refused samples per this many seconds.
const REJECTION_LOG_INTERVAL_SECONDS: i64 = 10;

impl GatewayStore {
    /// `inner` behind `pipeline`.
    pub fn new(inner: Arc<dyn Storage>, pipeline: Arc<Pipeline>) -> GatewayStore {
        GatewayStore {
            inner,
            pipeline: Some(pipeline),
            counting: None,
            last_rejection_log: Default::default(),
        }
    }

    /// `inner` unchanged, counting stored and rejected samples as `protocol`'s.
    pub fn counting_only(
        inner: Arc<dyn Storage>,
        protocol: Protocol,
        stats: Arc<GatewayStats>,
    ) -> GatewayStore {
        GatewayStore {
            inner,
            pipeline: None,
            counting: Some((protocol, stats)),
            last_rejection_log: Default::default(),
        }
    }

    /// The same, also counting stored and rejected samples as `protocol`'s.
    pub fn counting(
        inner: Arc<dyn Storage>,
        pipeline: Arc<Pipeline>,
        protocol: Protocol,
        stats: Arc<GatewayStats>,
    ) -> GatewayStore {
        GatewayStore {
            inner,
            pipeline: Some(pipeline),
            counting: Some((protocol, stats)),
            last_rejection_log: Default::default(),
        }
    }
}

impl GatewayStore {
    /// Warns about refused samples (the cardinality budget, limits, the store's own rules)
    /// at most every 10 s.
    fn log_rejections(&self, outcome: &WriteOutcome) {
        use std::sync::atomic::Ordering::Relaxed;
        if outcome.rejected_total() == 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
        let last = self.last_rejection_log.load(Relaxed);
        let due = now - last >= REJECTION_LOG_INTERVAL_SECONDS
            && self
                .last_rejection_log
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok();
        if due {
            tracing::warn!(
                rejected = outcome.rejected_total(),
                accepted = outcome.accepted,
                first = outcome.messages.first().map(String::as_str).unwrap_or(""),
                "samples of a gateway write were refused (logged at most every 10 s)"
            );
        }
    }
}

#[async_trait::async_trait]
impl Storage for GatewayStore {
    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        Capabilities {
            // The pipeline rewrites labels, which a series named by identity does not carry.
            appends_known_series: inner.appends_known_series && self.pipeline.is_none(),
            ..inner
        }
    }

    async fn write(&self, mut batch: WriteBatch) -> StorageResult<WriteOutcome> {
        let refused = match &self.pipeline {
            Some(pipeline) => pipeline.prepare(&mut batch),
            None => WriteOutcome::default(),
        };
        let result = if batch.is_empty() {
            Ok(WriteOutcome::default())
        } else {
            self.inner.write(batch).await
        };
        let result = result.map(|mut outcome| {
            outcome.merge(refused);
            outcome
        });
        if let Ok(outcome) = &result {
            self.log_rejections(outcome);
        }
        if let Some((protocol, stats)) = &self.counting {
            match &result {
                Ok(outcome) => stats.stored(*protocol, outcome),
                Err(_) => stats.refused(*protocol, "storage_unavailable"),
            }
        }
        result
    }

    async fn select(&self, request: SelectRequest) -> StorageResult<SeriesStream> {
        self.inner.select(request).await
    }

    async fn label_names(&self, request: LabelRequest) -> StorageResult<Vec<String>> {
        self.inner.label_names(request).await
    }

    async fn label_values(&self, name: &str, request: LabelRequest) -> StorageResult<Vec<String>> {
        self.inner.label_values(name, request).await
    }

    async fn delete(&self, request: DeleteRequest) -> StorageResult<()> {
        self.inner.delete(request).await
    }
}

/// Which listener an [`Admission`] guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// The gateway port: every push route.
    Gateway,
    /// The query API port: only its remote-write receiver, and only the in-flight bound.
    Api,
}

/// What is checked before a write request's body is read: refuse mode, tokens (with
/// [`Admission::tokens_everywhere`]), per-app rate limits ([`Admission::rate_limits`]) and
/// at most `max_in_flight` write requests at once.
pub struct Admission {
    port: Port,
    /// `None`: no limit.
    permits: Option<Arc<Semaphore>>,
    max_in_flight: usize,
    retry_after: HeaderValue,
    stats: Arc<GatewayStats>,
    /// Tokens every write request must carry, also on the routes where SOFALookout asked
    /// for none; `None`: only those routes check (in their handlers).
    tokens_everywhere: Option<Tokens>,
    /// The tokens checked before a rate limit is charged, where SOFALookout asks for one.
    route_tokens: Option<Tokens>,
    /// `None`: no request is rate limited.
    rate_limits: Option<RateLimits>,
}

impl Admission {
    /// The gateway port's: `max_in_flight` 0 admits every request; refusals ask to retry
    /// after `retry_after_seconds`.
    pub fn new(
        max_in_flight: usize,
        retry_after_seconds: u64,
        stats: Arc<GatewayStats>,
    ) -> Admission {
        stats
            .in_flight_limit
            .store(max_in_flight as i64, std::sync::atomic::Ordering::Relaxed);
        Admission {
            port: Port::Gateway,
            permits: (max_in_flight > 0).then(|| Arc::new(Semaphore::new(max_in_flight))),
            max_in_flight,
            retry_after: HeaderValue::from(retry_after_seconds),
            stats,
            tokens_everywhere: None,
            route_tokens: None,
            rate_limits: None,
        }
    }

    /// The query API port's: at most `max_in_flight` remote-write requests at once (0:
    /// unlimited), counted as protocol `api_remote_write`. No refuse mode, tokens or rate
    /// limits: the port is Prometheus' API, not the gateway.
    pub fn api(
        max_in_flight: usize,
        retry_after_seconds: u64,
        stats: Arc<GatewayStats>,
    ) -> Admission {
        stats
            .api_in_flight_limit
            .store(max_in_flight as i64, std::sync::atomic::Ordering::Relaxed);
        Admission {
            port: Port::Api,
            permits: (max_in_flight > 0).then(|| Arc::new(Semaphore::new(max_in_flight))),
            max_in_flight,
            retry_after: HeaderValue::from(retry_after_seconds),
            stats,
            tokens_everywhere: None,
            route_tokens: None,
            rate_limits: None,
        }
    }

    /// Also asks every write request for a token `tokens` accepts.
    pub fn tokens_everywhere(mut self, tokens: Tokens) -> Admission {
        self.tokens_everywhere = Some(tokens);
        self
    }

    /// The gateway's tokens: on the routes where SOFALookout asks for a token
    /// ([`sofalookout_token_route`]) they are checked before a rate limit is charged, as spec
    /// §4.1 orders the pre-filters, so that a refused request does not use up its app's
    /// allowance. The handlers check them again (and answer the same way).
    pub fn route_tokens(mut self, tokens: Tokens) -> Admission {
        self.route_tokens = Some(tokens);
        self
    }

    /// Also limits the requests of each app (when any app is limited).
    pub fn rate_limits(mut self, limits: RateLimits) -> Admission {
        self.rate_limits = limits.is_active().then_some(limits);
        self
    }

    /// The in-flight gauge of the port.
    fn in_flight(&self) -> &std::sync::atomic::AtomicI64 {
        match self.port {
            Port::Gateway => &self.stats.in_flight,
            Port::Api => &self.stats.api_in_flight,
        }
    }
}

/// One write request counted in an in-flight gauge while it lives (also when the handler
/// panics or the client goes away).
struct InFlight<'a>(&'a std::sync::atomic::AtomicI64);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a std::sync::atomic::AtomicI64) -> InFlight<'a> {
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The app a request belongs to, for rate limits (spec §4.1 step 5): the `app` header, else
/// the app its token is mapped to, else the `app` tag of the path (`/lookout/metrics/...`,
/// `/prom/metrics/...`).
fn request_app(request: &Request, protocol: Protocol, limits: &RateLimits) -> Option<String> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    if let Some(app) = header("app") {
        return Some(app.to_owned());
    }
    let token = lookout_gateway::lookout::request::token(
        header("X-Lookout-Token"),
        header(axum::http::header::AUTHORIZATION.as_str()),
    );
    if let Some(app) = token.ok().and_then(|token| limits.token_app(&token)) {
        return Some(app.to_owned());
    }
    let prefix = match protocol {
        Protocol::LookoutMetrics => "/lookout/metrics",
        Protocol::PrometheusPush => "/prom/metrics",
        _ => return None,
    };
    let rest = request.uri().path().strip_prefix(prefix)?;
    let tags = lookout_gateway::lookout::request::path_tags(rest).ok()?;
    tags.get("app").filter(|app| !app.is_empty()).cloned()
}

/// Whether SOFALookout asks for a token on this write route: Prometheus push
/// (`/prom/metrics/...`), OpenTSDB under `/opentsdb/` and Metricbeat under `/beat/` (the
/// handlers of those routes check it).
fn sofalookout_token_route(path: &str) -> bool {
    path.starts_with("/prom/metrics")
        || path.starts_with("/opentsdb/")
        || path.starts_with("/beat/")
}

/// The protocol a write request of the gateway port belongs to, by its path.
fn protocol_of(path: &str) -> Option<Protocol> {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if path == "/datas" {
        Some(Protocol::LookoutSdk)
    } else if under("/lookout/metrics") {
        Some(Protocol::LookoutMetrics)
    } else if under("/prom/metrics") {
        Some(Protocol::PrometheusPush)
    } else if under("/metrics") {
        Some(Protocol::Pushgateway)
    } else if path == "/_bulk" || path == "/beat/_bulk" {
        Some(Protocol::Metricbeat)
    } else if path == "/api/put" || path == "/opentsdb/api/put" {
        Some(Protocol::OpenTsdbHttp)
    } else if path == "/api/v1/write" {
        Some(Protocol::RemoteWrite)
    } else {
        None
    }
}

fn is_write(method: &Method) -> bool {
    method == Method::POST || method == Method::PUT || method == Method::DELETE
}

/// The middleware. On the gateway port, for a write request: refuse mode answers 400 (the
/// SDK's `GET /datas` probe too, so that SDKs stop choosing this gateway); then the token
/// when asked for everywhere; then the app's rate limit: 400 `Err: RATE_LIMITED` (spec
/// §3.8), except remote write, which gets 503 + `Retry-After` (Prometheus retries a 5xx
/// after `Retry-After`, but drops a batch answered 4xx, 429 included unless
/// `retry_on_http_429`); then a free permit, else 503 + `Retry-After`. The permit is held
/// until the answer is ready. Counts remote-write requests (the other protocols count their
/// own) and every refusal; adds `Retry-After` to every 503.
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    let write = is_write(request.method());
    let path = request.uri().path();
    let protocol = match admission.port {
        Port::Gateway => write.then(|| protocol_of(path)).flatten(),
        Port::Api => (write && path == "/api/v1/write").then_some(Protocol::ApiRemoteWrite),
    };
    let counts_itself =
        |protocol| !matches!(protocol, Protocol::RemoteWrite | Protocol::ApiRemoteWrite);
    if let Some(protocol) = protocol.filter(|protocol| !counts_itself(*protocol)) {
        admission.stats.request(protocol);
    }
    let refuse = |protocol: Protocol, reason: &'static str, response: Response| {
        if counts_itself(protocol) {
            admission.stats.request(protocol);
        }
        admission.stats.refused(protocol, reason);
        response
    };
    if admission.port == Port::Gateway && admission.stats.refusing() {
        if let Some(protocol) = protocol {
            let response = refusal(StatusCode::BAD_REQUEST, super::REFUSE_MODE_MESSAGE);
            return refuse(protocol, "refuse_mode", response);
        }
        if request.method() == Method::GET && path == "/datas" {
            return refusal(StatusCode::BAD_REQUEST, super::REFUSE_MODE_MESSAGE);
        }
    }
    let Some(protocol) = protocol else {
        let mut response = next.run(request).await;
        if admission.port == Port::Gateway {
            add_retry_after(&admission, &mut response);
        }
        return response;
    };
    if let Some(tokens) = &admission.tokens_everywhere {
        if let Err(error) = checked_token(tokens, request.headers()) {
            let (reason, response) = request_refusal(&error);
            return refuse(protocol, reason, response);
        }
    }
    if let Some(limits) = &admission.rate_limits {
        if let Some(tokens) = admission
            .route_tokens
            .as_ref()
            .filter(|_| sofalookout_token_route(path))
        {
            if let Err(error) = checked_token(tokens, request.headers()) {
                let (reason, response) = request_refusal(&error);
                return refuse(protocol, reason, response);
            }
        }
        if let Some(app) = request_app(&request, protocol, limits) {
            if let Err(wait) = limits.try_acquire(&app, std::time::Instant::now()) {
                let response = if protocol == Protocol::RemoteWrite {
                    let mut response = refusal(StatusCode::SERVICE_UNAVAILABLE, "RATE_LIMITED");
                    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                    response
                        .headers_mut()
                        .insert("Retry-After", HeaderValue::from(seconds));
                    response
                } else {
                    refusal(StatusCode::BAD_REQUEST, "RATE_LIMITED")
                };
                return refuse(protocol, "rate_limited", response);
            }
        }
    }
    let permit = match &admission.permits {
        Some(permits) => match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let message = format!(
                    "the store is behind: {} write requests are in flight; retry later",
                    admission.max_in_flight
                );
                let mut response = refusal(StatusCode::SERVICE_UNAVAILABLE, &message);
                response
                    .headers_mut()
                    .insert("Retry-After", admission.retry_after.clone());
                return refuse(protocol, "overloaded", response);
            }
        },
        None => None,
    };
    let counted = InFlight::enter(admission.in_flight());
    let mut response = next.run(request).await;
    drop(counted);
    drop(permit);
    add_retry_after(&admission, &mut response);
    response
}

/// `Retry-After` on a 503 that has none.
fn add_retry_after(admission: &Admission, response: &mut Response) {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key("Retry-After")
    {
        response
            .headers_mut()
            .insert("Retry-After", admission.retry_after.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::tests::Unavailable;
    use crate::gateway::{router, GatewayStats};
    use lookout_gateway::lookout::Limits;
    use lookout_tsdb::{Tsdb, TsdbOptions};
    use std::net::SocketAddr;
    use std::time::Duration;

    /// A real store whose writes wait until the test lets them through: a store that lags.
    struct Lagging {
        inner: Arc<dyn Storage>,
        entered: Arc<tokio::sync::Notify>,
        release: Arc<Semaphore>,
    }

    #[async_trait::async_trait]
    impl Storage for Lagging {
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn write(&self, batch: WriteBatch) -> StorageResult<WriteOutcome> {
            self.entered.notify_one();
            self.release.acquire().await.unwrap().forget();
            self.inner.write(batch).await
        }
        async fn select(&self, request: SelectRequest) -> StorageResult<SeriesStream> {
            self.inner.select(request).await
        }
        async fn label_names(&self, request: LabelRequest) -> StorageResult<Vec<String>> {
            self.inner.label_names(request).await
        }
        async fn label_values(
            &self,
            name: &str,
            request: LabelRequest,
        ) -> StorageResult<Vec<String>> {
            self.inner.label_values(name, request).await
        }
        async fn delete(&self, request: DeleteRequest) -> StorageResult<()> {
            self.inner.delete(request).await
        }
    }

    /// The gateway routes behind the admission layer on a loopback port.
    async fn serve_admitted(
        storage: Arc<dyn Storage>,
        max_in_flight: usize,
    ) -> (String, Arc<GatewayStats>) {
        let stats = Arc::new(GatewayStats::default());
        let admission = Arc::new(Admission::new(max_in_flight, 7, stats.clone()));
        let app = router(
            storage,
            Limits::default(),
            None,
            Tokens::any(),
            stats.clone(),
        )
        .layer(axum::middleware::from_fn_with_state(admission, admit))
        .into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, stats)
    }

    const REPORT: &str = r#"{"time":1000,"tags":{},"m":{"v":1}}"#;

    #[tokio::test]
    async fn a_lagging_store_gets_503_with_retry_after_instead_of_a_queue() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb = Tsdb::open(TsdbOptions::new(dir.path()).retention_ms(None)).unwrap();
        let entered = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(Semaphore::new(0));
        let store = Arc::new(Lagging {
            inner: Arc::new(tsdb),
            entered: entered.clone(),
            release: release.clone(),
        });
        let (base, stats) = serve_admitted(store.clone(), 1).await;
        let client = reqwest::Client::new();
        let post = || {
            client
                .post(format!("{base}/datas"))
                .header("app", "demo")
                .body(REPORT)
                .send()
        };
        let first = tokio::spawn(post());
        tokio::time::timeout(Duration::from_secs(10), entered.notified())
            .await
            .expect("the first write reached the store");

        let mut metrics = String::new();
        stats.render(&mut metrics);
        assert!(
            metrics.contains("lookout_gateway_in_flight_requests 1\n"),
            "{metrics}"
        );
        assert!(metrics.contains("lookout_gateway_in_flight_requests_limit 1\n"));
        let refused = post().await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["Retry-After"], "7");
        assert_eq!(
            refused.headers()["Err"],
            "the store is behind: 1 write requests are in flight; retry later"
        );
        // Probes are not writes: answered while the write is stuck.
        let probe = client.get(format!("{base}/datas")).send().await.unwrap();
        assert_eq!(probe.status(), 200);

        release.add_permits(2);
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), 200, "the admitted write completes");
        let again = post().await.unwrap();
        assert_eq!(again.status(), 200, "room again once the store caught up");

        let mut metrics = String::new();
        stats.render(&mut metrics);
        for line in [
            "lookout_gateway_requests_refused_total{protocol=\"lookout_sdk\",reason=\"overloaded\"} 1",
            "lookout_gateway_requests_total{protocol=\"lookout_sdk\"} 3",
            "lookout_gateway_samples_accepted_total{protocol=\"lookout_sdk\"} 2",
            "lookout_gateway_in_flight_requests 0\n",
        ] {
            assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
        }
    }

    #[tokio::test]
    async fn tokens_on_every_route_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb = Arc::new(Tsdb::open(TsdbOptions::new(dir.path()).retention_ms(None)).unwrap());
        let stats = Arc::new(GatewayStats::default());
        let tokens = Tokens::only(["t1".to_owned()]);
        let admission =
            Arc::new(Admission::new(0, 5, stats.clone()).tokens_everywhere(tokens.clone()));
        let app = crate::gateway::router(tsdb, Limits::default(), None, tokens, stats.clone())
            .layer(axum::middleware::from_fn_with_state(admission, admit))
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let post = |token: Option<&'static str>| {
            let mut request = client
                .post(format!("{base}/datas"))
                .header("app", "demo")
                .body(REPORT);
            if let Some(token) = token {
                request = request.header("X-Lookout-Token", token);
            }
            request.send()
        };
        let missing = post(None).await.unwrap();
        assert_eq!(missing.status(), 400);
        assert_eq!(missing.headers()["Err"], "token is empty");
        let wrong = post(Some("t2")).await.unwrap();
        assert_eq!(wrong.status(), 400);
        assert_eq!(wrong.headers()["Err"], "TOKEN_IS_INVALID");
        assert_eq!(post(Some("t1")).await.unwrap().status(), 200);
        // The probe is not a write.
        let probe = client.get(format!("{base}/datas")).send().await.unwrap();
        assert_eq!(probe.status(), 200);
        // Where SOFALookout asks for a token, the configured ones apply too.
        let push = client
            .put(format!("{base}/prom/metrics/job/j/app/demo/step/10"))
            .header("X-Lookout-Token", "t2")
            .body("x 1\n")
            .send()
            .await
            .unwrap();
        assert_eq!(push.status(), 400);
        assert_eq!(push.headers()["Err"], "TOKEN_IS_INVALID");
        let mut metrics = String::new();
        stats.render(&mut metrics);
        for line in [
            "lookout_gateway_requests_refused_total{protocol=\"lookout_sdk\",reason=\"token_missing\"} 1",
            "lookout_gateway_requests_refused_total{protocol=\"lookout_sdk\",reason=\"token_invalid\"} 1",
            "lookout_gateway_requests_refused_total{protocol=\"prometheus_push\",reason=\"token_invalid\"} 1",
            "lookout_gateway_samples_accepted_total{protocol=\"lookout_sdk\"} 1",
        ] {
            assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
        }
    }

    #[tokio::test]
    async fn configured_tokens_apply_where_sofalookout_asks_for_one_only() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb = Arc::new(Tsdb::open(TsdbOptions::new(dir.path()).retention_ms(None)).unwrap());
        let stats = Arc::new(GatewayStats::default());
        let tokens = Tokens::only(["t1".to_owned()]);
        let app = crate::gateway::router(tsdb, Limits::default(), None, tokens, stats)
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let push = |token: &'static str| {
            client
                .put(format!("{base}/prom/metrics/job/j/app/demo/step/10"))
                .header("X-Lookout-Token", token)
                .body("x 1\n")
                .send()
        };
        let wrong = push("t2").await.unwrap();
        assert_eq!(wrong.status(), 400);
        assert_eq!(wrong.headers()["Err"], "TOKEN_IS_INVALID");
        assert_eq!(push("t1").await.unwrap().status(), 202);
        let sdk = client
            .post(format!("{base}/datas"))
            .header("app", "demo")
            .body(REPORT)
            .send()
            .await
            .unwrap();
        assert_eq!(
            sdk.status(),
            200,
            "no token where SOFALookout asked for none"
        );
    }

    #[tokio::test]
    async fn every_503_carries_retry_after() {
        let (base, _stats) = serve_admitted(Arc::new(Unavailable), 0).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/datas"))
            .header("app", "demo")
            .body(REPORT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["Retry-After"], "7");
    }

    #[tokio::test]
    async fn the_gateway_store_adds_common_tags_checks_limits_and_counts_for_its_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb: Arc<dyn Storage> =
            Arc::new(Tsdb::open(TsdbOptions::new(dir.path()).retention_ms(None)).unwrap());
        let pipeline = Pipeline {
            common_tags: lookout_gateway::pipeline::CommonTags::new([(
                "dc".to_owned(),
                "gz".to_owned(),
            )])
            .unwrap(),
            label_limits: lookout_model::LabelLimits {
                max_labels: 2,
                ..lookout_model::LabelLimits::default()
            },
        };
        let stats = Arc::new(GatewayStats::default());
        let store = GatewayStore::counting(
            tsdb.clone(),
            Arc::new(pipeline),
            Protocol::RemoteWrite,
            stats.clone(),
        );
        let mut batch = WriteBatch::new();
        batch.push(
            lookout_model::Labels::from_pairs([("__name__", "up")]).unwrap(),
            vec![lookout_model::Sample::new(1_000, 1.0)],
        );
        batch.push(
            lookout_model::Labels::from_pairs([("__name__", "wide"), ("job", "x")]).unwrap(),
            vec![lookout_model::Sample::new(1_000, 1.0)],
        );
        let outcome = store.write(batch).await.unwrap();
        assert_eq!(outcome.accepted, 1);
        assert_eq!(
            outcome.rejected_for(lookout_storage::RejectReason::InvalidLabels),
            1
        );
        assert!(
            outcome.messages[0].contains("wide"),
            "{:?}",
            outcome.messages
        );
        let matcher = lookout_model::Matcher::equal("__name__", "up");
        let series = lookout_storage::collect_series(
            tsdb.select(SelectRequest::new(vec![matcher], i64::MIN, i64::MAX))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(series[0].labels.to_string(), r#"up{dc="gz"}"#);
        let mut metrics = String::new();
        stats.render(&mut metrics);
        assert!(
            metrics.contains("lookout_gateway_samples_accepted_total{protocol=\"remote_write\"} 1")
        );
        assert!(metrics.contains(
            "lookout_gateway_samples_rejected_total{protocol=\"remote_write\",reason=\"invalid_labels\"} 1"
        ));
    }

    #[test]
    fn write_paths_map_to_their_protocol() {
        for (path, protocol) in [
            ("/datas", Some(Protocol::LookoutSdk)),
            (
                "/lookout/metrics/app/a/step/1",
                Some(Protocol::LookoutMetrics),
            ),
            ("/prom/metrics/job/j", Some(Protocol::PrometheusPush)),
            ("/metrics/job/j", Some(Protocol::Pushgateway)),
            ("/beat/_bulk", Some(Protocol::Metricbeat)),
            ("/_bulk", Some(Protocol::Metricbeat)),
            ("/api/put", Some(Protocol::OpenTsdbHttp)),
            ("/opentsdb/api/put", Some(Protocol::OpenTsdbHttp)),
            ("/api/v1/write", Some(Protocol::RemoteWrite)),
            ("/beat/_template/x", None),
            ("/prom/targets", None),
            ("/metricsx", None),
        ] {
            assert_eq!(protocol_of(path), protocol, "{path}");
        }
    }
}
