//! Deterministic, realistic multi-source customer data.
//!
//! [`generate`] simulates `Config::people` persons (the ground-truth
//! identities) and writes what a mid-sized retailer's source systems would
//! hold about them: CRM contacts, newsletter subscribers and their e-mail
//! events, web-site events, loyalty members, point-of-sale orders and consent
//! events, with realistic noise. It also writes the ground truth: which person
//! every row belongs to (`truth.csv`) and each person's true identifiers and
//! purchase-model parameters (`truth_people.csv`).
//!
//! The same [`Config`] always produces byte-identical files, whatever the
//! number of threads. See `docs/generator.md` for the data model.

mod buffer;
mod config;
mod gen;
mod names;
mod noise;
mod output;
mod rng;
mod schema;
pub mod time;

use std::path::PathBuf;

pub use buffer::arrow_schema;
pub use config::{Btyd, Config, Formats, Noise};
pub use names::{JUNK_EMAILS, JUNK_PHONES};
pub use noise::PHONE_FORMATS;
pub use output::{generate, generate_batches, Summary, PEOPLE_FILE, TRUTH_FILE};
pub use schema::{create_table_sql, table, tables, ColumnSpec, IdType, SqlType, TableSpec};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Building Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A consumer callback asked to stop.
    #[error("{0}")]
    Callback(String),
    /// A bug in the generator.
    #[error("internal error: {0}")]
    Internal(String),
}
