//! A thin JSON-over-HTTP client for the few Elasticsearch APIs the backend uses.

use std::time::Duration;

use lookout_storage::{StorageError, StorageResult};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The answer of one request: its status and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Response {
    pub status: StatusCode,
    pub body: Value,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// `error.type` of an error answer.
    pub fn error_type(&self) -> &str {
        self.body
            .pointer("/error/type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A short description of an error answer.
    pub fn error_text(&self) -> String {
        match self.body.get("error") {
            Some(Value::Object(error)) => format!(
                "{}: {}",
                error.get("type").and_then(Value::as_str).unwrap_or("error"),
                error
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            ),
            Some(other) => other.to_string(),
            None => format!("HTTP {}", self.status),
        }
    }

    /// Turns an error answer into a storage error: 5xx and 429 are `Unavailable`, other
    /// statuses `BadRequest` (the request or the data is at fault).
    pub fn into_result(self, what: &str) -> StorageResult<Value> {
        if self.is_success() {
            return Ok(self.body);
        }
        let reason = format!("{what}: Elasticsearch answered {}", self.error_text());
        if self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS {
            Err(StorageError::Unavailable { reason })
        } else {
            Err(StorageError::BadRequest { reason })
        }
    }
}

/// Connection to one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
}

impl Client {
    pub fn new(
        base: &str,
        timeout: Duration,
        credentials: Option<(String, String)>,
    ) -> StorageResult<Client> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|error| StorageError::Internal {
                reason: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credentials,
        })
    }

    /// Sends a request; `Err` only when no HTTP answer came (the cluster is unreachable).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> StorageResult<Response> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let mut request = self.http.request(method.clone(), &url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        request = match body {
            Some(Body::Json(value)) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Some(Body::NdJson(text)) => request
                .header("content-type", "application/x-ndjson")
                .body(text),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|error| StorageError::Unavailable {
                reason: format!("{method} {url}: {error}"),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| StorageError::Unavailable {
                reason: format!("{method} {url}: reading the answer: {error}"),
            })?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Response { status, body })
    }

    /// A JSON request whose error answers become errors.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> StorageResult<Value> {
        self.send(method, path, body.map(Body::Json))
            .await?
            .into_result(what)
    }
}

/// A request body.
#[derive(Debug)]
pub(crate) enum Body {
    Json(Value),
    NdJson(String),
}
