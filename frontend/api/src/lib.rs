//! The Prometheus HTTP API v1 over any [`Storage`]: what Grafana's Prometheus datasource,
//! `promtool` and remote-write senders talk to.
//!
//! Served: `/api/v1/query` and `/api/v1/query_range` (through the [`lookout_promql`]
//! evaluator), `/api/v1/write` (remote write 1.0 and 2.0, by `Content-Type`), `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`, `/api/v1/metadata`, `/api/v1/query_exemplars`,
//! `/api/v1/format_query`, `/api/v1/parse_query`, `/api/v1/status/{buildinfo,flags,
//! runtimeinfo,tsdb,walreplay,config}`, `/api/v1/admin/tsdb/{delete_series,clean_tombstones,
//! snapshot}` (when an [`Admin`] is given), `/api/v1/targets` (from a [`TargetsSource`]),
//! `/-/healthy`, `/-/ready` and `/metrics`.
//!
//! Responses follow Prometheus byte for byte where it matters to clients: the
//! `{"status":"success","data":...}` envelope in Go's field order and string escaping,
//! values as strings in Go's float format, times as seconds with millisecond digits,
//! `errorType` names and status codes (see the `encode` module).
//!
//! Depends on the storage trait and on the PromQL crate (parser and evaluator), never on a
//! storage engine: what only an engine knows (head statistics, snapshots) comes in through
//! the [`StoreStatus`] and [`Admin`] traits the server implements.

mod admin;
mod ast;
mod encode;
mod metadata;
mod params;
mod query;
mod remote_write;
mod status;
mod targets;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lookout_gateway::DecodeLimits;
use lookout_model::{Classify, Matcher, TimestampMs};
use lookout_promql::{Engine, EngineOptions, ParseError};
use lookout_storage::{collect_series, LabelRequest, SelectRequest, Storage, StorageError};
use serde_json::{json, Value};

pub use metadata::MetadataStore;
use params::Params;

pub use admin::{Admin, AdminError};
pub use status::{format_rfc3339, HeadStatus, StatusInfo, StoreStatus, WalReplayStatus};
pub use targets::{
    targets_json, ActiveTarget, DroppedTarget, SharedTargets, TargetHealth, TargetsSnapshot,
    TargetsSource,
};

/// Appends self-metrics in the Prometheus text format (supplied by the server, which knows
/// the engine behind the `Storage`).
pub type MetricsRenderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// What the remote-write receiver refused, for a listener's self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteWriteRefusal {
    /// The whole request, for this reason (`unsupported_media_type`, `malformed_body`).
    Request(&'static str),
    /// This many samples of an otherwise written request, for this reason
    /// (`invalid_labels`: series with an invalid label set; `native_histogram_unsupported`).
    Samples(&'static str, u64),
}

/// Told about every [`RemoteWriteRefusal`] (supplied by the server for the gateway port).
pub type RemoteWriteObserver = Arc<dyn Fn(RemoteWriteRefusal) + Send + Sync>;

/// Options of the API.
#[derive(Clone, Default)]
pub struct ApiOptions {
    /// Limits applied to write bodies.
    pub decode_limits: DecodeLimits,
    /// What `/metrics` shows besides the API's own counters.
    pub metrics: Option<MetricsRenderer>,
    /// Limits and defaults of the PromQL evaluator (`--query.*` flags).
    pub engine: EngineOptions,
    /// The admin endpoints' capabilities; `None` answers them with 503 "admin APIs
    /// disabled", as Prometheus does without `--web.enable-admin-api`.
    pub admin: Option<Arc<dyn Admin>>,
    /// What the `status` endpoints report.
    pub status: StatusInfo,
    /// Metric metadata received with remote writes; clones of the options share it, so the
    /// query and write listeners see the same.
    pub metadata: MetadataStore,
    /// The scrape targets `/api/v1/targets` lists; `None`: no scraping, empty lists.
    pub targets: Option<SharedTargets>,
    /// Told what the remote-write receiver refuses (besides the store's own rejections,
    /// which the `Storage` reports).
    pub remote_write_observer: Option<RemoteWriteObserver>,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("decode_limits", &self.decode_limits)
            .field("metrics", &self.metrics.is_some())
            .field("engine", &self.engine)
            .field("admin", &self.admin.is_some())
            .field("status", &self.status)
            .field("targets", &self.targets.is_some())
            .field(
                "remote_write_observer",
                &self.remote_write_observer.is_some(),
            )
            .finish()
    }
}

struct AppState {
    storage: Arc<dyn Storage>,
    options: ApiOptions,
    engine: Engine,
    started: std::time::SystemTime,
    remote_write_requests: std::sync::atomic::AtomicU64,
    remote_write_refused: std::sync::atomic::AtomicU64,
    remote_write_unsupported: std::sync::atomic::AtomicU64,
    /// Series the remote-write receiver has decoded before, when the store appends series by
    /// identity.
    known_series: Option<lookout_gateway::remote_write::KnownSeriesCache>,
}

/// Most series the remote-write receiver remembers per generation of
/// [`KnownSeriesCache`](lookout_gateway::remote_write::KnownSeriesCache) (about 40 bytes
/// each); series beyond are decoded in full.
const KNOWN_SERIES_CAPACITY: usize = 4 << 20;

/// The API's routes over `storage`.
pub fn router(storage: Arc<dyn Storage>, options: ApiOptions) -> Router {
    let body_limit = options.decode_limits.max_body_bytes;
    let state = new_state(storage, options);
    Router::new()
        .route("/api/v1/write", post(remote_write::write))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route(
            "/api/v1/parse_query",
            get(ast::parse_query).post(ast::parse_query),
        )
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/api/v1/targets", get(targets::targets))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/status/runtimeinfo", get(status::runtimeinfo))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .route("/api/v1/status/walreplay", get(status::walreplay))
        .route("/api/v1/status/config", get(status::config))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(admin::delete_series).put(admin::delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(admin::clean_tombstones).put(admin::clean_tombstones),
        )
        .route(
            "/api/v1/admin/tsdb/snapshot",
            post(admin::snapshot).put(admin::snapshot),
        )
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Lookout is Healthy.\n" }))
        .route("/-/ready", get(|| async { "Lookout is Ready.\n" }))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Only the remote-write receiver, `/api/v1/write`: what the gateway port serves until the
/// other gateway protocols land.
pub fn write_router(storage: Arc<dyn Storage>, options: ApiOptions) -> Router {
    let body_limit = options.decode_limits.max_body_bytes;
    Router::new()
        .route("/api/v1/write", post(remote_write::write))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(new_state(storage, options))
}

fn new_state(storage: Arc<dyn Storage>, options: ApiOptions) -> Arc<AppState> {
    Arc::new(AppState {
        engine: Engine::new(options.engine.clone()),
        options,
        started: std::time::SystemTime::now(),
        remote_write_requests: Default::default(),
        remote_write_refused: Default::default(),
        remote_write_unsupported: Default::default(),
        known_series: storage
            .capabilities()
            .appends_known_series
            .then(|| lookout_gateway::remote_write::KnownSeriesCache::new(KNOWN_SERIES_CAPACITY)),
        storage,
    })
}

/// An API error in Prometheus' shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: message.into(),
        }
    }

    /// `invalid parameter "<name>": <reason>`, Prometheus' wording for a bad parameter.
    fn invalid_param(name: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::bad_data(format!("invalid parameter \"{name}\": {reason}"))
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: message.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> ApiError {
        let class = error.class();
        ApiError {
            status: StatusCode::from_u16(class.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_type: class.prometheus_error_type(),
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = String::from("{\"status\":\"error\",\"errorType\":");
        encode::push_string(&mut body, self.error_type);
        body.push_str(",\"error\":");
        encode::push_string(&mut body, &self.message);
        body.push('}');
        json_response(self.status, body)
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"status":"success","data":<data>}` with `data` already encoded, then the warnings and
/// infos when there are any (Prometheus omits empty lists).
/// What every success body starts with; the data follows.
const SUCCESS_START: &str = "{\"status\":\"success\",\"data\":";

fn success_raw(data: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut body = String::with_capacity(SUCCESS_START.len() + data.len() + 64);
    body.push_str(SUCCESS_START);
    body.push_str(data);
    success_started(body, warnings, infos)
}

/// Ends a success body that holds [`SUCCESS_START`] and the data (large results are written
/// straight after the start, not copied there).
fn success_started(mut body: String, warnings: &[String], infos: &[String]) -> Response {
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if list.is_empty() {
            continue;
        }
        body.push_str(",\"");
        body.push_str(key);
        body.push_str("\":");
        encode::push_string_list(&mut body, list);
    }
    body.push('}');
    json_response(StatusCode::OK, body)
}

fn success(data: Value) -> Response {
    success_with_warnings(data, &[])
}

fn success_with_warnings(data: Value, warnings: &[String]) -> Response {
    let mut encoded = String::new();
    encode::push_value(&mut encoded, &data);
    success_raw(&encoded, warnings, &[])
}

/// A parse error as Prometheus prints it: `<line>:<column>: parse error: <message>`, the
/// column counted in bytes from 1.
fn parse_error_text(query: &str, error: &ParseError) -> String {
    let position = error.position.min(query.len());
    let before = query.get(..position).unwrap_or(query);
    let line = 1 + before.matches('\n').count();
    let column = position - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    format!("{line}:{column}: parse error: {}", error.message)
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

const TRUNCATED_WARNING: &str = "results truncated due to limit";

/// Query-string parameters, plus the form body of a POST.
fn request_params(
    method: &Method,
    headers: &HeaderMap,
    query: Option<String>,
    body: &[u8],
) -> Params {
    let mut params = Params::parse(query.as_deref().unwrap_or_default().as_bytes());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if method == Method::POST && is_form {
        params.extend(Params::parse(body));
    }
    params
}

/// The `match[]` selectors, each a list of matchers.
fn selectors(params: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    params
        .all("match[]")
        .map(|selector| {
            lookout_promql::parse_matchers(selector).map_err(|error| {
                ApiError::invalid_param("match[]", parse_error_text(selector, &error))
            })
        })
        .collect()
}

/// An optional time parameter, worded as Prometheus' `parseTimeParam`.
fn time_param(params: &Params, name: &str, default: TimestampMs) -> Result<TimestampMs, ApiError> {
    match params.get(name) {
        None | Some("") => Ok(default),
        Some(text) => params::parse_time(text).map_err(|error| {
            ApiError::invalid_param(name, format!("invalid time value for '{name}': {error}"))
        }),
    }
}

/// `limit`: absent or 0 for no limit, else a positive count.
fn limit_param(params: &Params) -> Result<Option<usize>, ApiError> {
    match params.get("limit") {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<i64>() {
            Ok(0) => Ok(None),
            Ok(limit) if limit < 0 => Err(ApiError::invalid_param(
                "limit",
                "limit must be non-negative",
            )),
            Ok(limit) => Ok(Some(usize::try_from(limit).unwrap_or(usize::MAX))),
            Err(_) => Err(ApiError::invalid_param(
                "limit",
                format!("strconv.Atoi: parsing {text:?}: invalid syntax"),
            )),
        },
    }
}

/// Cuts `items` to `limit`, returning the warning Prometheus adds when something was cut.
fn truncate_to_limit<T>(items: &mut Vec<T>, limit: Option<usize>) -> Vec<String> {
    match limit {
        Some(limit) if items.len() > limit => {
            items.truncate(limit);
            vec![TRUNCATED_WARNING.to_owned()]
        }
        _ => Vec::new(),
    }
}

async fn series(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = request_params(&method, &headers, query, &body);
    let selectors = selectors(&params)?;
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = time_param(&params, "start", TimestampMs::MIN)?;
    let end = time_param(&params, "end", TimestampMs::MAX)?;
    let limit = limit_param(&params)?;
    let mut all = Vec::new();
    let several = selectors.len() > 1;
    for matchers in selectors {
        let mut request = SelectRequest::new(matchers, start.0, end.0);
        request.hints.labels_only = true;
        request.hints.limit = limit.map(|limit| limit.saturating_add(1));
        let answer = collect_series(state.storage.select(request).await?).await?;
        all.extend(answer.into_iter().map(|series| series.labels));
    }
    // One selector's answer comes sorted and distinct from the store (the `Storage`
    // contract); several selectors' answers are merged here.
    if several {
        all.sort_unstable();
        all.dedup();
    }
    let warnings = truncate_to_limit(&mut all, limit);
    let size: usize = all.iter().map(query::encoded_labels_size).sum();
    let mut body = String::with_capacity(SUCCESS_START.len() + 2 + size);
    body.push_str(SUCCESS_START);
    body.push('[');
    for (index, labels) in all.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        encode::push_labels(&mut body, labels);
    }
    body.push(']');
    Ok(success_started(body, &warnings, &[]))
}

/// Runs a label query once per selector (or once without matchers) and merges the answers,
/// cut to `limit` (with Prometheus' warning when something was cut).
async fn label_query<F, Fut>(
    params: &Params,
    query: F,
) -> Result<(Vec<String>, Vec<String>), ApiError>
where
    F: Fn(LabelRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, StorageError>>,
{
    let start = time_param(params, "start", TimestampMs::MIN)?;
    let end = time_param(params, "end", TimestampMs::MAX)?;
    let limit = limit_param(params)?;
    let mut selectors = selectors(params)?;
    if selectors.is_empty() {
        selectors.push(Vec::new());
    }
    let mut answers = Vec::with_capacity(selectors.len());
    for matchers in selectors {
        let mut request = LabelRequest::new(matchers, start.0, end.0);
        // One more than asked, to know whether the answer was cut.
        request.limit = limit.map(|limit| limit.saturating_add(1));
        answers.push(query(request).await?);
    }
    // One answer already sorted without repeats (what the stores return) is taken as it is.
    let mut merged: Vec<String> = match <[_; 1]>::try_from(answers) {
        Ok([answer]) if answer.windows(2).all(|pair| pair[0] < pair[1]) => answer,
        Ok(answers) => sorted_distinct(answers.into_iter().flatten()),
        Err(answers) => sorted_distinct(answers.into_iter().flatten()),
    };
    let warnings = truncate_to_limit(&mut merged, limit);
    Ok((merged, warnings))
}

/// The distinct strings of `values`, sorted.
fn sorted_distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut values: Vec<String> = values.collect();
    values.sort_unstable();
    values.dedup();
    values
}

/// A success body whose data is a list of strings, written straight (not through a JSON
/// value, which would copy every string once more).
fn success_strings(strings: &[String], warnings: &[String]) -> Response {
    let mut data =
        String::with_capacity(strings.iter().map(|text| text.len() + 3).sum::<usize>() + 2);
    encode::push_string_list(&mut data, strings);
    success_raw(&data, warnings, &[])
}

async fn labels(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = request_params(&method, &headers, query, &body);
    let (names, warnings) =
        label_query(&params, |request| state.storage.label_names(request)).await?;
    Ok(success_strings(&names, &warnings))
}

async fn label_values(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref().unwrap_or_default().as_bytes());
    // Prometheus 3 accepts UTF-8 names written as `U__` + escaped bytes; plain names pass as is.
    let name = params::unescape_label_name(&name);
    if name.is_empty() {
        return Err(ApiError::bad_data("invalid label name: \"\""));
    }
    let (values, warnings) = label_query(&params, |request| {
        let storage = state.storage.clone();
        let name = name.clone();
        async move { storage.label_values(&name, request).await }
    })
    .await?;
    Ok(success_strings(&values, &warnings))
}

async fn format_query(
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = request_params(&method, &headers, query, &body);
    let text = params.get("query").unwrap_or_default();
    let expr = lookout_promql::parse(text)
        .map_err(|error| ApiError::invalid_param("query", parse_error_text(text, &error)))?;
    Ok(success(Value::String(expr.to_string())))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP lookout_api_remote_write_requests_total Remote write requests received.\n\
         # TYPE lookout_api_remote_write_requests_total counter\n\
         lookout_api_remote_write_requests_total {}\n\
         # HELP lookout_api_remote_write_malformed_total Remote write requests refused as malformed.\n\
         # TYPE lookout_api_remote_write_malformed_total counter\n\
         lookout_api_remote_write_malformed_total {}\n\
         # HELP lookout_api_remote_write_unsupported_total Remote write requests refused for their content type or encoding (415).\n\
         # TYPE lookout_api_remote_write_unsupported_total counter\n\
         lookout_api_remote_write_unsupported_total {}",
        state.remote_write_requests.load(Relaxed),
        state.remote_write_refused.load(Relaxed),
        state.remote_write_unsupported.load(Relaxed),
    );
    state.engine.render_metrics(&mut out);
    if let Some(render) = &state.options.metrics {
        render(&mut out);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// `/api/v1/metadata`: what remote-write senders said about their metrics, with
/// Prometheus' `metric`, `limit` and `limit_per_metric` (negative: no limit).
async fn metadata(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = request_params(&method, &headers, query, &Bytes::new());
    let count = |name: &str| -> Result<Option<usize>, ApiError> {
        match params.get(name) {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<i64>() {
                Ok(value) if value < 0 => Ok(None),
                Ok(value) => Ok(Some(usize::try_from(value).unwrap_or(usize::MAX))),
                Err(_) => Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    error_type: "bad_data",
                    message: format!("{name} must be a number"),
                }),
            },
        }
    };
    let limit = count("limit")?;
    let limit_per_metric = count("limit_per_metric")?;
    let metric = params.get("metric").filter(|name| !name.is_empty());
    Ok(success(state.options.metadata.query(
        metric,
        limit,
        limit_per_metric,
    )))
}

/// No exemplars are stored yet: the parameters are checked as Prometheus does, the answer is
/// empty.
async fn exemplars(
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = request_params(&method, &headers, query, &body);
    time_param(&params, "start", TimestampMs::MIN)?;
    time_param(&params, "end", TimestampMs::MAX)?;
    let text = params.get("query").unwrap_or_default();
    lookout_promql::parse(text)
        .map_err(|error| ApiError::invalid_param("query", parse_error_text(text, &error)))?;
    Ok(success(json!([])))
}
