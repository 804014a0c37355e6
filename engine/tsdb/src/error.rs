//! Errors of the native engine.

use std::path::{Path, PathBuf};

use lookout_model::{Classify, ErrorClass};
use lookout_storage::StorageError;

/// Result alias for the engine.
pub type Result<T, E = TsdbError> = std::result::Result<T, E>;

/// A failure of the native engine.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// An I/O call failed.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk failed a check; names the file and the byte offset.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier WAL write failed; the engine accepts no more writes until reopened (replay
    /// then repairs the tail).
    #[error("the write-ahead log failed earlier and accepts no writes until restart: {reason}")]
    WalFailed { reason: String },
    /// Another process holds the data directory.
    #[error("data directory {} is locked by another process", dir.display())]
    Locked { dir: PathBuf },
    /// Options were rejected at open.
    #[error("invalid option: {reason}")]
    InvalidOptions { reason: String },
}

impl TsdbError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> TsdbError {
        TsdbError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

impl Classify for TsdbError {
    fn class(&self) -> ErrorClass {
        match self {
            TsdbError::Io { .. } | TsdbError::WalFailed { .. } | TsdbError::Locked { .. } => {
                ErrorClass::Unavailable
            }
            TsdbError::Corruption { .. } => ErrorClass::Internal,
            TsdbError::InvalidOptions { .. } => ErrorClass::BadData,
        }
    }
}

impl From<TsdbError> for StorageError {
    fn from(error: TsdbError) -> StorageError {
        match error {
            TsdbError::Io { path, source } => StorageError::io(path.display(), source),
            TsdbError::Corruption {
                file,
                offset,
                reason,
            } => StorageError::Corruption {
                file: file.display().to_string(),
                offset,
                reason,
            },
            TsdbError::WalFailed { .. } | TsdbError::Locked { .. } => StorageError::Unavailable {
                reason: error.to_string(),
            },
            TsdbError::InvalidOptions { reason } => StorageError::BadRequest { reason },
        }
    }
}
