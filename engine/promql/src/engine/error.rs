//! Errors of query evaluation.

use lookout_model::{Classify, ErrorClass};
use lookout_storage::StorageError;

use crate::ParseError;

/// Why a query failed. The HTTP layer maps [`Classify::class`] to Prometheus' `errorType` and
/// status: parse errors are `bad_data` (400), evaluation errors `execution` (422), timeouts
/// and cancellations `timeout`/`canceled` (503).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse or type-check.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A request parameter is invalid (e.g. end before start, step too small).
    #[error("{0}")]
    BadRequest(String),
    /// The query is valid but cannot be evaluated on this data, e.g. many-to-many matching or
    /// duplicate output series. The message is Prometheus' wording.
    #[error("{0}")]
    Execution(String),
    /// The query would load more samples than `max_samples`.
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The query would take more memory than its budget (`max_memory_bytes`).
    #[error("query processing would use more than {0} bytes of memory (the per-query memory budget) in query execution")]
    MemoryBudget(u64),
    /// The query ran longer than the timeout.
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The caller went away (HTTP client disconnected) and the query was stopped.
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// Storage failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl QueryError {
    /// The Prometheus API `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::Canceled(_) => "canceled",
            other => other.class().prometheus_error_type(),
        }
    }
}

impl Classify for QueryError {
    fn class(&self) -> ErrorClass {
        match self {
            QueryError::Parse(_) | QueryError::BadRequest(_) => ErrorClass::BadData,
            QueryError::Execution(_)
            | QueryError::TooManySamples(_)
            | QueryError::MemoryBudget(_) => ErrorClass::Limit,
            QueryError::Timeout(_) | QueryError::Canceled(_) => ErrorClass::Timeout,
            QueryError::Storage(error) => error.class(),
        }
    }
}
