//! The storage error type. It separates what the caller did wrong
//! (`InvalidArgument`, `NotFound`, `AlreadyExists`), what the machine failed
//! to do (`Io`, `Poisoned`), what was found broken on disk (`Corruption`),
//! what exceeded a limit (`LimitExceeded`), and bugs (`Internal`).

use std::path::PathBuf;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checksum or structural check failed: the bytes on disk are not what
    /// was written. Never returned as data.
    #[error("corruption detected in {file} at offset {offset}: {detail}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        detail: String,
    },
    /// An earlier write failed to become durable (for example a failed
    /// fsync). The database refuses all writes until it is reopened, because
    /// the state of the log on disk is no longer known.
    #[error("the database refuses writes until it is reopened: an earlier write failed: {0}")]
    Poisoned(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A broken invariant inside storage: a bug, not a user error.
    #[error("internal error (a bug in tessera-storage): {0}")]
    Internal(String),
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        StorageError::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }
}
