//! The engine's one error type. Its [`ErrorKind`] separates what the user
//! got wrong from what the machine failed to do, corruption, resource
//! exhaustion and bugs, so the server can map each to the right SQLSTATE.

use datafusion::error::DataFusionError;
use tessera_storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The SQL text does not parse.
    Syntax,
    /// A well-formed request that cannot be done: unknown table or
    /// column, type mismatch, bad value, constraint violated.
    User,
    /// A feature Tessera does not have.
    Unsupported,
    /// An object that already exists / does not exist.
    Duplicate,
    NotFound,
    /// A limit was hit (memory, size).
    ResourcesExhausted,
    /// The operating system failed a read or write.
    Io,
    /// Bytes on disk failed a checksum or structural check.
    Corruption,
    /// An earlier write failure makes the database refuse writes until it
    /// is reopened.
    ReadOnlyAfterFailure,
    /// A bug in Tessera or DataFusion.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("syntax error: {message}")]
    Syntax {
        /// Ends with "at Line: L, Column: C" when the position is known.
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    #[error("{0}")]
    User(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("internal error (a bug): {0}")]
    Internal(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Syntax { .. } => ErrorKind::Syntax,
            Error::User(_) => ErrorKind::User,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::ResourcesExhausted(_) => ErrorKind::ResourcesExhausted,
            Error::Io(_) => ErrorKind::Io,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Storage(s) => match s {
                StorageError::Io { .. } => ErrorKind::Io,
                StorageError::Corruption { .. } => ErrorKind::Corruption,
                StorageError::Poisoned(_) => ErrorKind::ReadOnlyAfterFailure,
                StorageError::InvalidArgument(_) | StorageError::Arrow(_) => ErrorKind::User,
                StorageError::NotFound { .. } => ErrorKind::NotFound,
                StorageError::AlreadyExists { .. } => ErrorKind::Duplicate,
                StorageError::LimitExceeded(_) => ErrorKind::ResourcesExhausted,
                StorageError::Internal(_) => ErrorKind::Internal,
            },
        }
    }

    pub(crate) fn user(msg: impl Into<String>) -> Self {
        Error::User(msg.into())
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
}

impl From<tessera_sql::ParseError> for Error {
    fn from(e: tessera_sql::ParseError) -> Self {
        Error::Syntax { message: e.message, line: e.line, column: e.column }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        use arrow::error::ArrowError as A;
        match e {
            A::IoError(m, _) => Error::Io(m),
            A::MemoryError(m) => Error::ResourcesExhausted(m),
            A::ExternalError(inner) => match inner.downcast::<StorageError>() {
                Ok(s) => Error::Storage(*s),
                Err(other) => Error::User(other.to_string()),
            },
            other => Error::User(other.to_string()),
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        match unwrap_df(e) {
            DataFusionError::SQL(p, _) => syntax_error(p.to_string()),
            DataFusionError::ArrowError(a, _) => Error::from(*a),
            DataFusionError::NotImplemented(m) => Error::Unsupported(m),
            DataFusionError::ResourcesExhausted(m) => Error::ResourcesExhausted(m),
            DataFusionError::IoError(io) => Error::Io(io.to_string()),
            DataFusionError::Internal(m) => Error::Internal(m),
            DataFusionError::External(inner) => match inner.downcast::<StorageError>() {
                Ok(s) => Error::Storage(*s),
                Err(inner) => match inner.downcast::<Error>() {
                    Ok(engine) => *engine,
                    Err(other) => Error::User(other.to_string()),
                },
            },
            DataFusionError::Shared(shared) => Error::User(shared.strip_backtrace()),
            other => Error::User(other.strip_backtrace()),
        }
    }
}

/// Peel context wrappers off a DataFusion error to reach its cause.
fn unwrap_df(mut e: DataFusionError) -> DataFusionError {
    loop {
        e = match e {
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => *inner,
            DataFusionError::Collection(mut v) if !v.is_empty() => v.swap_remove(0),
            DataFusionError::Shared(arc) => match std::sync::Arc::try_unwrap(arc) {
                Ok(inner) => inner,
                Err(arc) => return DataFusionError::Shared(arc),
            },
            other => return other,
        }
    }
}

fn syntax_error(message: String) -> Error {
    let (line, column) = tessera_sql::location_in(&message);
    Error::Syntax { message, line, column }
}

/// Engine errors travel through DataFusion as external errors and come back
/// out intact.
pub(crate) fn to_df(e: impl Into<Error>) -> DataFusionError {
    match e.into() {
        Error::Storage(s) => DataFusionError::External(Box::new(s)),
        other => DataFusionError::External(Box::new(other)),
    }
}
