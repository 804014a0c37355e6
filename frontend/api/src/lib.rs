//! The Prometheus HTTP API v1 over any [`Storage`]: what Grafana's Prometheus datasource,
//! `promtool` and remote-write senders talk to.
//!
//! Served here now: `/api/v1/write` (remote write 1.0), `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`, `/api/v1/metadata`, `/api/v1/query_exemplars`,
//! `/api/v1/format_query`, `/api/v1/status/buildinfo`, `/-/healthy`, `/-/ready`. `/api/v1/query` and `/api/v1/query_range` answer 501 with a clear error until
//! the PromQL engine lands (issue 4).
//!
//! Responses follow Prometheus byte for byte where it matters to clients: the
//! `{"status":"success","data":...}` envelope, `errorType` names and status codes, times as
//! float seconds or RFC 3339. This crate depends on the storage trait only, never on an engine.

mod params;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lookout_gateway::{remote_write, DecodeLimits};
use lookout_model::{Classify, ErrorClass, Matcher, TimestampMs};
use lookout_storage::{collect_series, LabelRequest, SelectRequest, Storage, StorageError};
use serde_json::{json, Value};

use params::Params;

/// Appends self-metrics in the Prometheus text format (supplied by the server, which knows
/// the engine behind the `Storage`).
pub type MetricsRenderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Options of the API.
#[derive(Clone, Default)]
pub struct ApiOptions {
    /// Limits applied to write bodies.
    pub decode_limits: DecodeLimits,
    /// What `/metrics` shows besides the API's own counters.
    pub metrics: Option<MetricsRenderer>,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("decode_limits", &self.decode_limits)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

struct AppState {
    storage: Arc<dyn Storage>,
    options: ApiOptions,
    remote_write_requests: std::sync::atomic::AtomicU64,
    remote_write_refused: std::sync::atomic::AtomicU64,
}

/// The API's routes over `storage`.
pub fn router(storage: Arc<dyn Storage>, options: ApiOptions) -> Router {
    let body_limit = options.decode_limits.max_body_bytes;
    let state = Arc::new(AppState {
        storage,
        options,
        remote_write_requests: Default::default(),
        remote_write_refused: Default::default(),
    });
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route(
            "/api/v1/query",
            get(not_implemented_query).post(not_implemented_query),
        )
        .route(
            "/api/v1/query_range",
            get(not_implemented_query).post(not_implemented_query),
        )
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Lookout is Healthy.\n" }))
        .route("/-/ready", get(|| async { "Lookout is Ready.\n" }))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
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
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

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
                ApiError::bad_data(format!("invalid parameter \"match[]\": {error}"))
            })
        })
        .collect()
}

fn time_param(params: &Params, name: &str, default: TimestampMs) -> Result<TimestampMs, ApiError> {
    match params.get(name) {
        None | Some("") => Ok(default),
        Some(text) => params::parse_time(text)
            .map_err(|error| ApiError::bad_data(format!("invalid parameter \"{name}\": {error}"))),
    }
}

fn limit_param(params: &Params) -> Result<Option<usize>, ApiError> {
    match params.get("limit") {
        None | Some("") | Some("0") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_data(format!(
                "invalid parameter \"limit\": cannot parse {text:?} to a valid limit"
            ))
        }),
    }
}

async fn write(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    state.remote_write_requests.fetch_add(1, Relaxed);
    let decoded = remote_write::decode(&body, &state.options.decode_limits).map_err(|error| {
        state.remote_write_refused.fetch_add(1, Relaxed);
        ApiError::bad_data(format!("malformed remote write request: {error}"))
    })?;
    let outcome = state.storage.write(decoded.batch).await?;
    let mut problems: Vec<String> = decoded
        .invalid_series
        .iter()
        .map(|reason| format!("invalid series: {reason}"))
        .collect();
    problems.extend(outcome.messages.iter().cloned());
    if !problems.is_empty() {
        // As Prometheus: a 400 tells the sender not to retry what was refused; the accepted
        // samples are stored.
        tracing::debug!(
            accepted = outcome.accepted,
            rejected = outcome.rejected_total(),
            "remote write partly refused"
        );
        return Ok((StatusCode::BAD_REQUEST, problems.join("\n")).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
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
    let mut all = std::collections::BTreeSet::new();
    for matchers in selectors {
        let mut request = SelectRequest::new(matchers, start.0, end.0);
        request.hints.labels_only = true;
        for series in collect_series(state.storage.select(request).await?).await? {
            all.insert(series.labels);
        }
    }
    let data: Vec<Value> = all
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|labels| {
            let map: serde_json::Map<String, Value> = labels
                .iter()
                .map(|label| (label.name.clone(), Value::String(label.value.clone())))
                .collect();
            Value::Object(map)
        })
        .collect();
    Ok(success(Value::Array(data)))
}

/// Runs a label query once per selector (or once without matchers) and merges the answers.
async fn label_query<F, Fut>(params: &Params, query: F) -> Result<Vec<String>, ApiError>
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
    let mut merged = std::collections::BTreeSet::new();
    for matchers in selectors {
        let mut request = LabelRequest::new(matchers, start.0, end.0);
        request.limit = limit;
        merged.extend(query(request).await?);
    }
    Ok(merged
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect())
}

async fn labels(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = request_params(&method, &headers, query, &body);
    let names = label_query(&params, |request| state.storage.label_names(request)).await?;
    Ok(success(json!(names)))
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
    let values = label_query(&params, |request| {
        let storage = state.storage.clone();
        let name = name.clone();
        async move { storage.label_values(&name, request).await }
    })
    .await?;
    Ok(success(json!(values)))
}

async fn not_implemented_query() -> ApiError {
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        error_type: ErrorClass::Unavailable.prometheus_error_type(),
        message: "PromQL evaluation is not implemented yet in this version of Lookout (issue 4); \
                  series, labels and label values are served"
            .into(),
    }
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
        .map_err(|error| ApiError::bad_data(format!("invalid parameter \"query\": {error}")))?;
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
         lookout_api_remote_write_malformed_total {}",
        state.remote_write_requests.load(Relaxed),
        state.remote_write_refused.load(Relaxed),
    );
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

async fn metadata() -> Response {
    success(json!({}))
}

async fn exemplars() -> Response {
    success(json!([]))
}

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "lookout",
    }))
}
