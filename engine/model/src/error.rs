//! One error classification for the whole project.
//!
//! Every library error type implements [`Classify`]. The HTTP edge maps the class to a Prometheus
//! `errorType` and status code, the gateways to 4xx/5xx with or without a retry hint.

use std::fmt;

/// What kind of failure an error is, independent of where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The caller sent something invalid; retrying the same request fails again.
    BadData,
    /// The thing asked for does not exist.
    NotFound,
    /// A configured limit was hit (size, cardinality, samples); the caller may retry with less.
    Limit,
    /// The work took longer than allowed.
    Timeout,
    /// A dependency or resource is unavailable right now; retrying later may succeed.
    Unavailable,
    /// A bug or corruption on our side.
    Internal,
}

impl ErrorClass {
    /// The Prometheus API `errorType` for this class.
    pub fn prometheus_error_type(self) -> &'static str {
        match self {
            ErrorClass::BadData => "bad_data",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Limit => "execution",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        }
    }

    /// The HTTP status code the edge answers with for this class.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::BadData => 400,
            ErrorClass::NotFound => 404,
            ErrorClass::Limit => 422,
            ErrorClass::Timeout => 503,
            ErrorClass::Unavailable => 503,
            ErrorClass::Internal => 500,
        }
    }

    /// Whether a client should retry the same request later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Timeout | ErrorClass::Unavailable)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prometheus_error_type())
    }
}

/// Implemented by every error type of the project.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// Errors of the data model: invalid labels, matchers or timestamps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A label name is empty or has characters outside the allowed set.
    #[error("invalid label name {name:?}: {reason}")]
    InvalidLabelName { name: String, reason: &'static str },
    /// A metric name (the `__name__` value) has characters outside the allowed set.
    #[error("invalid metric name {name:?}: {reason}")]
    InvalidMetricName { name: String, reason: &'static str },
    /// The same label name appears twice in one series.
    #[error("duplicate label name {name:?}")]
    DuplicateLabelName { name: String },
    /// A series has more labels than allowed.
    #[error("series has {count} labels, the limit is {limit}")]
    TooManyLabels { count: usize, limit: usize },
    /// A label name is longer than allowed.
    #[error("label name {name:?} is {len} bytes long, the limit is {limit}")]
    LabelNameTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
    /// A label value is longer than allowed.
    #[error("value of label {name:?} is {len} bytes long, the limit is {limit}")]
    LabelValueTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
    /// All labels of a series together are larger than allowed.
    #[error("labels are {size} bytes in total, the limit is {limit}")]
    LabelsTooLarge { size: usize, limit: usize },
    /// A regular expression in a matcher does not compile.
    #[error("invalid regular expression {pattern:?} for label {name:?}: {reason}")]
    InvalidRegex {
        name: String,
        pattern: String,
        reason: String,
    },
    /// A timestamp is outside the representable range or not a number.
    #[error("invalid timestamp: {reason}")]
    InvalidTimestamp { reason: String },
}

impl Classify for ModelError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadData
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_prometheus_error_types_and_statuses() {
        assert_eq!(ErrorClass::BadData.prometheus_error_type(), "bad_data");
        assert_eq!(ErrorClass::BadData.http_status(), 400);
        assert_eq!(ErrorClass::Timeout.prometheus_error_type(), "timeout");
        assert_eq!(ErrorClass::Internal.http_status(), 500);
        assert!(ErrorClass::Unavailable.is_retryable());
        assert!(!ErrorClass::BadData.is_retryable());
    }

    #[test]
    fn model_errors_are_bad_data_and_name_the_culprit() {
        let error = ModelError::InvalidLabelName {
            name: "1abc".into(),
            reason: "must not start with a digit",
        };
        assert_eq!(error.class(), ErrorClass::BadData);
        assert!(error.to_string().contains("1abc"));
    }
}
