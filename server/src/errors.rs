//! Engine errors as PostgreSQL error responses with the SQLSTATE that
//! PostgreSQL uses for the same failure.

use pgwire::error::{ErrorInfo, PgWireError};
use tessera::{Error, ErrorKind};

/// The SQLSTATE for an engine error.
pub fn sqlstate(e: &Error) -> &'static str {
    let message = e.to_string();
    let m = message.to_ascii_lowercase();
    match e.kind() {
        ErrorKind::Syntax => "42601",
        ErrorKind::Unsupported => "0A000",
        ErrorKind::ResourcesExhausted => "53000",
        ErrorKind::Io => "58030",
        ErrorKind::Corruption => "XX001",
        ErrorKind::ReadOnlyAfterFailure => "25006",
        ErrorKind::Internal => "XX000",
        ErrorKind::Duplicate => "42P07",
        ErrorKind::NotFound if m.contains("column") => "42703",
        ErrorKind::NotFound => "42P01",
        ErrorKind::User => user_sqlstate(&m),
    }
}

fn user_sqlstate(m: &str) -> &'static str {
    if m.contains("statement timeout") {
        "57014"
    } else if m.contains("no field named") || (m.contains("column") && m.contains("does not exist")) || m.contains("has no column") {
        "42703"
    } else if (m.contains("table") || m.contains("view") || m.contains("relation")) && (m.contains("does not exist") || m.contains("not found")) {
        "42P01"
    } else if m.contains("already exists") {
        "42P07"
    } else if m.contains("not null") || m.contains("does not accept null") || m.contains("non-nullable") {
        "23502"
    } else if m.contains("divide by zero") || m.contains("division by zero") {
        "22012"
    } else if m.contains("overflow") {
        "22003"
    } else if m.contains("cast") || m.contains("convert") || m.contains("parse") || m.contains("parsing") {
        "22P02"
    } else if m.contains("cannot drop") {
        "2BP01"
    } else if m.contains("copy") && m.contains("line") {
        "22P04"
    } else {
        "42000"
    }
}

/// An `ERROR` response carrying the engine's message.
pub fn to_pg(e: Error) -> PgWireError {
    let code = sqlstate(&e);
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_string(), code.to_string(), e.to_string())))
}

pub fn pg_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_string(), code.to_string(), message.into())))
}
