//! Shared helpers for the end-to-end tests.

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};
use tessera::{Database, Output, Session};

/// Statement text the test harness (not the engine) understands: close the
/// database and open it again from its directory, as after a restart.
pub const REOPEN: &str = "reopen database";

/// A database under test: on disk in a temporary directory.
pub struct SltDb {
    dir: PathBuf,
    db: Option<Database>,
    session: Option<Session>,
}

impl SltDb {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let db = Database::open(dir)?;
        let session = db.session();
        Ok(SltDb { dir: dir.to_path_buf(), db: Some(db), session: Some(session) })
    }

    async fn reopen(&mut self) -> Result<(), tessera::Error> {
        self.session = None;
        if let Some(db) = self.db.take() {
            db.close().await?;
        }
        let db = Database::open(&self.dir)?;
        self.session = Some(db.session());
        self.db = Some(db);
        Ok(())
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for SltDb {
    type Error = tessera::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, tessera::Error> {
        if sql.trim().eq_ignore_ascii_case(REOPEN) {
            self.reopen().await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let Some(session) = &self.session else {
            return Err(tessera::Error::Internal("no session".into()));
        };
        let mut last = DBOutput::StatementComplete(0);
        for statement in tessera::parse(sql)? {
            last = match session.execute(statement).await? {
                Output::Rows(stream) => {
                    let schema = stream.schema();
                    let batches = Output::Rows(stream).collect().await?;
                    let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
                    DBOutput::Rows { types, rows: format_rows(&batches)? }
                }
                Output::Affected { rows, .. } => DBOutput::StatementComplete(rows),
                Output::Done { .. } => DBOutput::StatementComplete(0),
                Output::Subscription(s) => {
                    return Err(tessera::Error::Unsupported(format!("SUBSCRIBE TO SEGMENT {} in a .slt file", s.segment())))
                }
            };
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tessera"
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16
        | DataType::UInt32 | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// Rows as strings: NULL for nulls, `(empty)` for empty strings.
pub fn format_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, tessera::Error> {
    let options = FormatOptions::default().with_display_error(true);
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let mut row = Vec::with_capacity(batch.num_columns());
            for (c, f) in batch.columns().iter().zip(&formatters) {
                let s = if c.is_null(r) { "NULL".to_string() } else { f.value(r).to_string().trim_end().to_string() };
                row.push(if s.is_empty() { "(empty)".to_string() } else { s });
            }
            rows.push(row);
        }
    }
    Ok(rows)
}
