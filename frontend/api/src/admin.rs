//! `/api/v1/admin/tsdb/*`: series deletion, tombstone cleaning and snapshots, served only when
//! the server hands in an [`Admin`] (Prometheus' `--web.enable-admin-api`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lookout_model::TimestampMs;
use lookout_storage::DeleteRequest;
use serde_json::json;

use crate::{success, ApiError, AppState};

/// Maintenance the storage engine offers beyond the `Storage` trait. Methods block (they
/// write files); the API calls them off the async workers.
pub trait Admin: Send + Sync + 'static {
    /// Writes a snapshot of the store (with the head's samples unless `skip_head`) and
    /// returns its name (the directory under `<data>/snapshots/`).
    fn snapshot(&self, skip_head: bool) -> Result<String, AdminError>;
    /// Rewrites data with deletions recorded so that their space is freed now.
    fn clean_tombstones(&self) -> Result<(), AdminError>;
}

/// A failed admin operation; reported as an `internal` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdminError(pub String);

fn enabled(state: &AppState) -> Result<Arc<dyn Admin>, ApiError> {
    state.options.admin.clone().ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error_type: "unavailable",
        message: "admin APIs disabled".into(),
    })
}

/// Runs blocking admin work on the blocking pool.
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(AdminError(format!("admin task failed: {error}"))))
}

/// `POST|PUT delete_series?match[]=...&start=...&end=...`: 204 when done.
pub(crate) async fn delete_series(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let params = crate::request_params(&method, &headers, query, &body);
    let selectors = crate::selectors(&params)?;
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = crate::time_param(&params, "start", TimestampMs::MIN)?;
    let end = crate::time_param(&params, "end", TimestampMs::MAX)?;
    for matchers in selectors {
        let request = DeleteRequest::new(matchers, start.0, end.0);
        state.storage.delete(request).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST|PUT clean_tombstones`: 204 when done.
pub(crate) async fn clean_tombstones(
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let admin = enabled(&state)?;
    off_the_runtime(move || admin.clean_tombstones())
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST|PUT snapshot?skip_head=<bool>`: `{"name":"<snapshot directory>"}`.
pub(crate) async fn snapshot(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let admin = enabled(&state)?;
    let params = crate::request_params(&method, &headers, query, &body);
    let skip_head = match params.get("skip_head") {
        None | Some("") => false,
        Some(text) => parse_go_bool(text).ok_or_else(|| {
            ApiError::bad_data(format!(
                "unable to parse boolean 'skip_head' argument: strconv.ParseBool: parsing {text:?}: invalid syntax"
            ))
        })?,
    };
    let name = off_the_runtime(move || admin.snapshot(skip_head))
        .await
        .map_err(|error| ApiError::internal(format!("create snapshot: {error}")))?;
    Ok(success(json!({"name": name})))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
