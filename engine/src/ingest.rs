//! Getting rows in: the bulk append API and `COPY ... FROM` files. Every
//! path validates all input first and commits it as one transaction, so a
//! bad row anywhere means nothing is written.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use tessera_sql::{CopyFrom, CopySource, FileFormat};
use tessera_storage::{Store, TableMeta};

use crate::database::blocking;
use crate::error::{Error, Result};
use crate::identity::{Identity, RESERVED_NAMES};

/// Rows per batch when reading files.
const FILE_BATCH_ROWS: usize = 64 * 1024;

/// Commit batches (full storage rows) as one transaction.
pub(crate) async fn commit_batches(store: Store, identity: Arc<Identity>, meta: Arc<TableMeta>, batches: Vec<RecordBatch>) -> Result<u64> {
    if RESERVED_NAMES.contains(&meta.name.as_str()) {
        return Err(Error::user(format!("system table '{}' cannot be changed directly", meta.name)));
    }
    blocking(move || {
        let mut txn = store.begin_write()?;
        let mut writer = identity.writer_for(&txn, &meta)?;
        for mut b in batches {
            if let Some(w) = writer.as_mut() {
                b = w.resolve(&meta, b, txn.next_row_id(&meta.name)?)?;
            }
            txn.append(&meta.name, b)?;
        }
        Ok(crate::identity::commit(&store, txn, writer)?.rows_appended)
    })
    .await
}

fn strict() -> CastOptions<'static> {
    CastOptions { safe: false, ..Default::default() }
}

fn cast_column(meta: &TableMeta, column: &str, array: &ArrayRef, to: &arrow::datatypes::DataType) -> Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    cast_with_options(array, to, &strict()).map_err(|e| {
        Error::user(format!(
            "column '{column}' of table '{}': cannot convert {} to {to}: {e}",
            meta.name,
            array.data_type()
        ))
    })
}

/// Build full storage rows from a batch whose columns are matched to the
/// table's visible columns by name. Missing nullable columns become NULL;
/// unknown columns are an error.
pub(crate) fn conform_by_name(meta: &TableMeta, batch: &RecordBatch) -> Result<RecordBatch> {
    for f in batch.schema().fields() {
        if !meta.columns.iter().any(|c| !c.hidden && &c.name == f.name()) {
            return Err(Error::user(format!("table '{}' has no column '{}'", meta.name, f.name())));
        }
    }
    let mut arrays = Vec::with_capacity(meta.columns.len());
    for c in &meta.columns {
        let array = match (c.hidden, batch.column_by_name(&c.name)) {
            (false, Some(a)) => cast_column(meta, &c.name, a, &c.data_type)?,
            (false, None) if !c.nullable => {
                return Err(Error::user(format!(
                    "column '{}' of table '{}' is NOT NULL and no value was given",
                    c.name, meta.name
                )))
            }
            _ => new_null_array(&c.data_type, batch.num_rows()),
        };
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(meta.append_schema(), arrays, &options)?)
}

/// Like [`conform_by_name`] but matching visible columns by position.
pub(crate) fn conform_by_position(meta: &TableMeta, batch: &RecordBatch) -> Result<RecordBatch> {
    let visible: Vec<_> = meta.columns.iter().filter(|c| !c.hidden).collect();
    if visible.len() != batch.num_columns() {
        return Err(Error::user(format!(
            "table '{}' has {} columns, the rows given have {}",
            meta.name,
            visible.len(),
            batch.num_columns()
        )));
    }
    let fields: Vec<Field> = visible
        .iter()
        .zip(batch.columns())
        .map(|(c, a)| Field::new(&c.name, a.data_type().clone(), true))
        .collect();
    let renamed = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        batch.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?;
    conform_by_name(meta, &renamed)
}

/// `COPY table [(columns)] FROM 'file'`: read the whole file, check every
/// row, then commit once.
pub(crate) async fn copy_from(store: &Store, identity: &Arc<Identity>, copy: &CopyFrom) -> Result<u64> {
    let path = match &copy.source {
        CopySource::File(p) => p.clone(),
        CopySource::Stdin => {
            return Err(Error::Unsupported("COPY FROM STDIN needs a client connection (use the server)".into()))
        }
    };
    copy_from_source(store, identity, copy, Source::File(path)).await
}

/// `COPY ... FROM STDIN`: the client's bytes, already received.
pub(crate) async fn copy_from_data(store: &Store, identity: &Arc<Identity>, copy: &CopyFrom, data: Vec<u8>) -> Result<u64> {
    copy_from_source(store, identity, copy, Source::Bytes(data)).await
}

enum Source {
    File(String),
    Bytes(Vec<u8>),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => format!("'{p}'"),
            Source::Bytes(_) => "STDIN".to_string(),
        }
    }

    fn reader(&self) -> Result<Box<dyn std::io::Read + Send + '_>> {
        Ok(match self {
            Source::File(p) => Box::new(BufReader::new(open(p)?)),
            Source::Bytes(b) => Box::new(std::io::Cursor::new(b.as_slice())),
        })
    }
}

async fn copy_from_source(store: &Store, identity: &Arc<Identity>, copy: &CopyFrom, source: Source) -> Result<u64> {
    let meta = store
        .snapshot()
        .table(&copy.table)
        .map(|t| t.meta.clone())
        .ok_or_else(|| Error::user(format!("table '{}' does not exist", copy.table)))?;
    let file_columns = file_columns(&meta, &copy.columns)?;
    let format = match (copy.format, &source) {
        (Some(f), _) => f,
        (None, Source::File(path)) => format_from_extension(path)?,
        (None, Source::Bytes(_)) => FileFormat::Text,
    };
    let copy = copy.clone();
    let batches = {
        let meta = meta.clone();
        blocking(move || read_source(&meta, &source, format, &file_columns, &copy)).await?
    };
    let mut full = Vec::with_capacity(batches.len());
    for b in &batches {
        full.push(conform_by_name(&meta, b)?);
    }
    commit_batches(store.clone(), identity.clone(), meta, full).await
}

/// The columns the file holds, in file order.
fn file_columns(meta: &TableMeta, named: &[String]) -> Result<SchemaRef> {
    let visible: Vec<_> = meta.columns.iter().filter(|c| !c.hidden).collect();
    let chosen: Vec<Field> = if named.is_empty() {
        visible.iter().map(|c| Field::new(&c.name, c.data_type.clone(), true)).collect()
    } else {
        let mut out = Vec::with_capacity(named.len());
        for n in named {
            let c = visible
                .iter()
                .find(|c| &c.name == n)
                .ok_or_else(|| Error::user(format!("table '{}' has no column '{n}'", meta.name)))?;
            if out.iter().any(|f: &Field| f.name() == n) {
                return Err(Error::user(format!("column '{n}' is named twice in COPY")));
            }
            out.push(Field::new(&c.name, c.data_type.clone(), true));
        }
        out
    };
    Ok(Arc::new(Schema::new(chosen)))
}

fn format_from_extension(path: &str) -> Result<FileFormat> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".csv") || lower.ends_with(".tsv") || lower.ends_with(".txt") {
        Ok(FileFormat::Csv)
    } else if lower.ends_with(".parquet") {
        Ok(FileFormat::Parquet)
    } else if lower.ends_with(".json") || lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        Ok(FileFormat::Json)
    } else {
        Err(Error::user(format!(
            "cannot tell the format of '{path}' from its name; add WITH (FORMAT csv | parquet | json)"
        )))
    }
}

fn open(path: &str) -> Result<File> {
    File::open(path).map_err(|e| Error::user(format!("cannot open '{path}': {e}")))
}

fn read_source(meta: &TableMeta, source: &Source, format: FileFormat, columns: &SchemaRef, copy: &CopyFrom) -> Result<Vec<RecordBatch>> {
    let path = source.name();
    let in_file = |e: arrow::error::ArrowError| Error::user(format!("COPY {} from {path}: {e}", meta.name));
    match format {
        FileFormat::Text => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut source.reader()?, &mut bytes)
                .map_err(|e| Error::user(format!("COPY {} from {path}: {e}", meta.name)))?;
            crate::text_format::read(meta, &bytes, columns, copy.delimiter.unwrap_or(b'\t'), copy.null_string.as_deref().unwrap_or("\\N"))
                .map_err(|e| Error::user(format!("COPY {} from {path}: {e}", meta.name)))
        }
        FileFormat::Csv => {
            let mut builder = arrow::csv::ReaderBuilder::new(columns.clone())
                .with_header(copy.header.unwrap_or(false))
                .with_batch_size(FILE_BATCH_ROWS);
            if let Some(d) = copy.delimiter {
                builder = builder.with_delimiter(d);
            }
            if let Some(null) = &copy.null_string {
                let pattern = format!("^{}$", regex_escape(null));
                let regex = regex_lite_compile(&pattern)?;
                builder = builder.with_null_regex(regex);
            }
            let reader = builder.build(source.reader()?).map_err(in_file)?;
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::user(format!("COPY {} from {path}: {}", meta.name, file_line_numbers(&e.to_string()))))
        }
        FileFormat::Json => {
            let reader = arrow::json::ReaderBuilder::new(columns.clone())
                .with_batch_size(FILE_BATCH_ROWS)
                .with_strict_mode(true)
                .build(BufReader::new(source.reader()?))
                .map_err(in_file)?;
            reader.collect::<std::result::Result<Vec<_>, _>>().map_err(in_file)
        }
        FileFormat::Parquet => {
            use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let Source::File(file) = source else {
                return Err(Error::Unsupported("Parquet from STDIN".into()));
            };
            let builder = ParquetRecordBatchReaderBuilder::try_new(open(file)?)
                .map_err(|e| Error::user(format!("COPY {} from {path}: {e}", meta.name)))?;
            let reader = builder
                .with_batch_size(FILE_BATCH_ROWS)
                .build()
                .map_err(|e| Error::user(format!("COPY {} from {path}: {e}", meta.name)))?;
            let mut out = Vec::new();
            for batch in reader {
                let batch = batch.map_err(in_file)?;
                out.push(pick_columns(meta, &batch, columns)?);
            }
            Ok(out)
        }
    }
}

/// Take the wanted columns out of a Parquet batch by name.
fn pick_columns(meta: &TableMeta, batch: &RecordBatch, columns: &SchemaRef) -> Result<RecordBatch> {
    let mut arrays = Vec::with_capacity(columns.fields().len());
    for f in columns.fields() {
        let a = batch
            .column_by_name(f.name())
            .ok_or_else(|| Error::user(format!("the file has no column '{}' for table '{}'", f.name(), meta.name)))?;
        arrays.push(cast_column(meta, f.name(), a, f.data_type())?);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(columns.clone(), arrays, &options)?)
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn regex_lite_compile(pattern: &str) -> Result<regex::Regex> {
    regex::Regex::new(pattern).map_err(|e| Error::user(format!("bad NULL string: {e}")))
}

/// The CSV reader counts lines from 0; people and editors count from 1.
fn file_line_numbers(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (head, tail) = rest.split_at(at + "line ".len());
        out.push_str(head);
        let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
        match digits.parse::<u64>() {
            Ok(n) => out.push_str(&(n + 1).to_string()),
            Err(_) => out.push_str(&digits),
        }
        rest = &tail[digits.len()..];
    }
    out.push_str(rest);
    out
}
