//! Errors a backend reports for a whole request.

use std::sync::Arc;

use lookout_model::{Classify, ErrorClass, ModelError};

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// A failure of a whole storage request (single bad samples are counted in
/// [`crate::WriteOutcome`] instead).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The request itself is invalid (bad matcher, inverted time range, ...).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The request is malformed in a way the model does not describe.
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    /// The backend does not support the operation.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        operation: &'static str,
        backend: &'static str,
    },
    /// A configured limit stopped the request.
    #[error("limit exceeded: {what}")]
    Limit { what: String },
    /// The backend cannot serve right now (remote down, shutting down, disk full).
    #[error("storage unavailable: {reason}")]
    Unavailable { reason: String },
    /// An I/O operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Stored data failed a check.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: String,
        offset: u64,
        reason: String,
    },
    /// A bug: an invariant did not hold.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl StorageError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_string(),
            source: Arc::new(source),
        }
    }
}

impl Classify for StorageError {
    fn class(&self) -> ErrorClass {
        match self {
            StorageError::Model(error) => error.class(),
            StorageError::BadRequest { .. } | StorageError::Unsupported { .. } => {
                ErrorClass::BadData
            }
            StorageError::Limit { .. } => ErrorClass::Limit,
            StorageError::Unavailable { .. } | StorageError::Io { .. } => ErrorClass::Unavailable,
            StorageError::Corruption { .. } | StorageError::Internal { .. } => ErrorClass::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let corruption = StorageError::Corruption {
            file: "wal/00000001".into(),
            offset: 42,
            reason: "crc mismatch".into(),
        };
        assert_eq!(corruption.class(), ErrorClass::Internal);
        assert_eq!(
            corruption.to_string(),
            "corruption in wal/00000001 at offset 42: crc mismatch"
        );
        let io = StorageError::io("wal", std::io::Error::other("disk full"));
        assert_eq!(io.class(), ErrorClass::Unavailable);
        assert_eq!(
            StorageError::Limit { what: "x".into() }.class(),
            ErrorClass::Limit
        );
    }
}
