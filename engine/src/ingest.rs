//! Getting rows in: the bulk append API and `COPY ... FROM` files and
//! streams. Every path commits its input as one transaction, so a bad row
//! anywhere means nothing is written. Sources are read a batch at a time
//! and appended as they are parsed; a large transaction's rows go to
//! segment files before the commit names them (storage's `spill_rows`), so
//! memory stays bounded whatever the size of the input.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use tessera_sql::{CopyFrom, CopySource, FileFormat};
use tessera_storage::{Store, TableMeta};

use crate::database::blocking;
use crate::identity::PreparedBatch;
use crate::error::{Error, Result};
use crate::identity::{Identity, RESERVED_NAMES};

/// Rows per batch when reading files.
const FILE_BATCH_ROWS: usize = 64 * 1024;

/// Commit batches (full storage rows) as one transaction.
pub(crate) async fn commit_batches(store: Store, identity: Arc<Identity>, meta: Arc<TableMeta>, batches: Vec<RecordBatch>) -> Result<u64> {
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    blocking(move || commit_stream(&store, &identity, &meta, Some(rows), batches.into_iter().map(|b| Ok((b, None))))).await
}

/// Commit a stream of full storage rows as one transaction, resolving
/// identities batch by batch (blocking). The first error abandons the
/// transaction: nothing of it becomes visible. `expected_rows`, when the
/// source knows it, lets the identity dictionary make room for the whole
/// load at once.
fn commit_stream(
    store: &Store,
    identity: &Arc<Identity>,
    meta: &Arc<TableMeta>,
    expected_rows: Option<u64>,
    batches: impl Iterator<Item = Result<(RecordBatch, Option<PreparedBatch>)>> + Send,
) -> Result<u64> {
    if RESERVED_NAMES.contains(&meta.name.as_str()) {
        return Err(Error::user(format!("system table '{}' cannot be changed directly", meta.name)));
    }
    let mut txn = store.begin_write()?;
    let mut writer = identity.writer_for(&txn, meta)?;
    if let (Some(w), Some(rows)) = (writer.as_mut(), expected_rows) {
        w.expect_rows(rows);
    }
    // Interning beside linking pays for its thread from the second batch
    // on; a few rows (an INSERT) are resolved on this thread alone.
    let beside = expected_rows.is_none_or(|rows| rows > FILE_BATCH_ROWS as u64);
    match writer.as_mut() {
        Some(w) => w.resolve_stream(meta, &mut txn, batches, beside)?,
        None => {
            for batch in batches {
                txn.append(&meta.name, batch?.0)?;
            }
        }
    }
    Ok(crate::identity::commit(store, txn, writer)?.rows_appended)
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
            (false, None) => new_null_array(&c.data_type, batch.num_rows()),
            (true, _) => shared_nulls(&c.data_type, batch.num_rows()),
        };
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(meta.append_schema(), arrays, &options)?)
}

/// NULLs for a hidden column until the writer fills it (identity
/// resolution replaces every hidden column of a batch): a slice of one
/// array per type and thread instead of zeroed buffers per batch, which a
/// load of 18 million events spent half a gigabyte of memory writes on.
fn shared_nulls(data_type: &arrow::datatypes::DataType, rows: usize) -> ArrayRef {
    thread_local! {
        static NULLS: std::cell::RefCell<Vec<ArrayRef>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    NULLS.with(|cell| {
        let mut arrays = cell.borrow_mut();
        let position = arrays.iter().position(|a| a.data_type() == data_type);
        match position {
            Some(i) if arrays[i].len() >= rows => arrays[i].slice(0, rows),
            _ => {
                let array = new_null_array(data_type, rows.max(FILE_BATCH_ROWS));
                let slice = array.slice(0, rows);
                match position {
                    Some(i) => arrays[i] = array,
                    None => arrays.push(array),
                }
                slice
            }
        }
    })
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

/// `COPY ... FROM STDIN`: the client's data, read as it is parsed.
pub(crate) async fn copy_from_reader(
    store: &Store,
    identity: &Arc<Identity>,
    copy: &CopyFrom,
    data: Box<dyn std::io::Read + Send>,
) -> Result<u64> {
    copy_from_source(store, identity, copy, Source::Stream(data)).await
}

enum Source {
    File(String),
    Stream(Box<dyn std::io::Read + Send>),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => format!("'{p}'"),
            Source::Stream(_) => "STDIN".to_string(),
        }
    }

    fn into_reader(self) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(match self {
            Source::File(p) => Box::new(open(&p)?),
            Source::Stream(r) => r,
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
        (None, Source::Stream(_)) => FileFormat::Text,
    };
    let copy = copy.clone();
    let (store, identity) = (store.clone(), identity.clone());
    let meta_for_reader = meta.clone();
    blocking(move || {
        let (batches, expected_rows) = read_source(&meta, source, format, &file_columns, &copy)?;
        // Identifier values are normalized and hashed ahead of the writer,
        // on as many threads as there are cores, leaving the writer the
        // dictionary and the links.
        let preparer = identity.preparer(&meta)?;
        let workers = if preparer.is_some() { prepare_workers() } else { 1 };
        let prepare = move |b: RecordBatch| -> Result<(RecordBatch, Option<PreparedBatch>)> {
            let b = conform_by_name(&meta_for_reader, &b)?;
            let prepared = preparer.as_ref().map(|p| p.prepare(&b)).transpose()?;
            Ok((b, prepared))
        };
        read_ahead(batches, prepare, workers, |batches| commit_stream(&store, &identity, &meta, expected_rows, batches))
    })
    .await
}

/// Batches each preparing thread keeps ready ahead of the writer. With the
/// one it is preparing and the one being read, a load holds at most
/// `workers * (1 + READ_AHEAD_BATCHES) + 1` batches beyond the writer's.
const READ_AHEAD_BATCHES: usize = 1;

/// Most threads preparing batches of one load.
const MAX_PREPARE_WORKERS: usize = 4;

fn prepare_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_PREPARE_WORKERS)
}

/// Drive `source` on a thread of its own and `map` its items on `workers`
/// more threads (item i on thread i mod workers), delivering the mapped
/// items to `consume` in source order: parsing and preparing the next
/// batches overlaps with resolving and appending this one. When `consume`
/// stops early (an error), the threads stop at their next item. A panic
/// while reading or mapping ends the stream with an error item, never
/// like its end: `consume` would otherwise commit the rows read so far.
fn read_ahead<T: Send, U: Send, R>(
    source: impl Iterator<Item = Result<T>> + Send,
    map: impl Fn(T) -> Result<U> + Sync,
    workers: usize,
    consume: impl FnOnce(&mut (dyn Iterator<Item = Result<U>> + Send)) -> R,
) -> R {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::mpsc::sync_channel;
    let workers = workers.clamp(1, MAX_PREPARE_WORKERS);
    std::thread::scope(|scope| {
        let mut inputs = Vec::with_capacity(workers);
        let mut outputs = Vec::with_capacity(workers);
        for _ in 0..workers {
            // A hand-over, not a queue: the worker's output is the queue.
            let (to_worker, from_reader) = sync_channel::<Result<T>>(0);
            let (to_consumer, from_worker) = sync_channel::<Result<U>>(READ_AHEAD_BATCHES);
            let map = &map;
            scope.spawn(move || {
                for item in from_reader {
                    let mapped = item.and_then(|t| {
                        catch_unwind(AssertUnwindSafe(|| map(t)))
                            .unwrap_or_else(|_| Err(Error::Internal("preparing a batch panicked".into())))
                    });
                    if to_consumer.send(mapped).is_err() {
                        break;
                    }
                }
            });
            inputs.push(to_worker);
            outputs.push(from_worker);
        }
        scope.spawn(move || {
            let mut source = source;
            for i in 0.. {
                let worker = &inputs[i % workers];
                let item = match catch_unwind(AssertUnwindSafe(|| source.next())) {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(_) => {
                        let _ = worker.send(Err(Error::Internal("reading the source panicked".into())));
                        break;
                    }
                };
                if worker.send(item).is_err() {
                    break;
                }
            }
        });
        let mut next = 0;
        // Owns the receivers: the consumer may hand it to a thread.
        let mut received = std::iter::from_fn(move || {
            // Item i comes from worker i mod workers; a worker that hung
            // up has delivered everything before the source's end.
            let item = outputs[next % workers].recv().ok();
            next += 1;
            item
        });
        // `received` and the receivers are dropped before the scope joins
        // the threads, so a thread blocked on a full channel wakes and stops.
        consume(&mut received)
    })
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

type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// The rows of a source as batches of the file's columns, parsed one batch
/// at a time as the iterator is driven, and how many rows there are when
/// the source says (a Parquet file's footer).
fn read_source(meta: &TableMeta, source: Source, format: FileFormat, columns: &SchemaRef, copy: &CopyFrom) -> Result<(Batches, Option<u64>)> {
    // Errors name the statement and the source (the closure is cloned into
    // each parser's iterator).
    let prefix: Arc<str> = format!("COPY {} from {}", meta.name, source.name()).into();
    let in_file = move |e: String| Error::user(format!("{prefix}: {e}"));
    let mut rows = None;
    let batches: Batches = match format {
        FileFormat::Text => {
            let (meta, columns) = (meta.clone(), columns.clone());
            let delimiter = copy.delimiter.unwrap_or(b'\t');
            let null = copy.null_string.clone().unwrap_or_else(|| "\\N".to_string());
            let reader = BufReader::new(source.into_reader()?);
            Box::new(TextChunks { reader, next_line: 1, done: false }.flat_map(move |chunk| {
                let parsed = chunk
                    .map_err(|e| e.to_string())
                    .and_then(|(first_line, bytes)| crate::text_format::read(&meta, &bytes, &columns, delimiter, &null, first_line));
                let out: Vec<Result<RecordBatch>> = match parsed {
                    Ok(batches) => batches.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(in_file(e))],
                };
                out
            }))
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
            let reader = builder.build(BufReader::new(source.into_reader()?)).map_err(|e| in_file(e.to_string()))?;
            Box::new(reader.map(move |b| b.map_err(|e| in_file(file_line_numbers(&e.to_string())))))
        }
        FileFormat::Json => {
            let reader = arrow::json::ReaderBuilder::new(columns.clone())
                .with_batch_size(FILE_BATCH_ROWS)
                .with_strict_mode(true)
                .build(BufReader::new(source.into_reader()?))
                .map_err(|e| in_file(e.to_string()))?;
            Box::new(reader.map(move |b| b.map_err(|e| in_file(e.to_string()))))
        }
        FileFormat::Parquet => {
            use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let Source::File(file) = source else {
                return Err(Error::Unsupported("Parquet from STDIN".into()));
            };
            let builder = ParquetRecordBatchReaderBuilder::try_new(open(&file)?).map_err(|e| in_file(e.to_string()))?;
            rows = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
            let builder = decode_strings_as_views(builder, &file, columns)?;
            let reader = builder.with_batch_size(FILE_BATCH_ROWS).build().map_err(|e| in_file(e.to_string()))?;
            let (meta, columns) = (meta.clone(), columns.clone());
            Box::new(reader.map(move |b| {
                let b = b.map_err(|e| in_file(e.to_string()))?;
                pick_columns(&meta, &b, &columns)
            }))
        }
    };
    Ok((batches, rows))
}

/// A Parquet reader that decodes the file's string and binary columns
/// straight into the view types the table stores them as (decoding to
/// offsets and converting afterwards copies every value twice), when the
/// file's schema allows it; the reader as given otherwise.
fn decode_strings_as_views(
    builder: datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<std::fs::File>,
    file: &str,
    columns: &SchemaRef,
) -> Result<datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<std::fs::File>> {
    use arrow::datatypes::DataType;
    use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let wanted = |name: &str| columns.field_with_name(name).ok().map(|f| f.data_type().clone());
    let mut changed = false;
    let fields: Vec<Field> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let view = match (f.data_type(), wanted(f.name())) {
                (DataType::Utf8 | DataType::LargeUtf8, Some(DataType::Utf8View)) => Some(DataType::Utf8View),
                (DataType::Binary | DataType::LargeBinary, Some(DataType::BinaryView)) => Some(DataType::BinaryView),
                _ => None,
            };
            changed |= view.is_some();
            f.as_ref().clone().with_data_type(view.unwrap_or_else(|| f.data_type().clone()))
        })
        .collect();
    if !changed {
        return Ok(builder);
    }
    let hinted = Arc::new(Schema::new_with_metadata(fields, builder.schema().metadata().clone()));
    let options = ArrowReaderOptions::new().with_schema(hinted);
    match ArrowReaderMetadata::try_new(builder.metadata().clone(), options) {
        Ok(metadata) => Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(open(file)?, metadata)),
        // A schema the reader cannot decode to: the plain decode and a cast.
        Err(_) => Ok(builder),
    }
}

/// Lines of a COPY text stream in chunks of at most one batch of rows, each
/// chunk ending at a line end, with the number of its first line; stops
/// after the `\.` end-of-data line.
struct TextChunks<R> {
    reader: R,
    next_line: usize,
    done: bool,
}

impl<R: std::io::BufRead> Iterator for TextChunks<R> {
    type Item = std::io::Result<(usize, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let first_line = self.next_line;
        let mut chunk = Vec::new();
        let mut lines = 0;
        while lines < crate::text_format::BATCH_ROWS {
            let start = chunk.len();
            match self.reader.read_until(b'\n', &mut chunk) {
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(_) => lines += 1,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let line = &chunk[start..];
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            if line.strip_suffix(b"\r").unwrap_or(line) == b"\\." {
                self.done = true;
                break;
            }
        }
        self.next_line += lines;
        (!chunk.is_empty()).then_some(Ok((first_line, chunk)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Result<RecordBatch> {
        Ok(RecordBatch::new_empty(Arc::new(Schema::empty())))
    }

    #[test]
    fn read_ahead_delivers_every_batch_in_order() {
        let source = (0..10).map(|i| if i == 7 { Err(Error::user("bad row 7")) } else { batch() });
        let seen: Vec<bool> = read_ahead(source, Ok, 1, |items| items.map(|b| b.is_ok()).collect());
        assert_eq!(seen, (0..10).map(|i| i != 7).collect::<Vec<_>>());
    }

    /// Items mapped on several threads, each taking its own time, arrive
    /// in source order; a failing or panicking map is an error item in
    /// its place.
    #[test]
    fn mapped_items_arrive_in_order_from_every_worker() {
        let source = (0..200u64).map(Ok);
        let map = |i: u64| -> Result<u64> {
            std::thread::sleep(std::time::Duration::from_micros((i * 7919) % 300));
            match i {
                50 => Err(Error::user("bad batch 50")),
                120 => panic!("preparer bug"),
                _ => Ok(i * 2),
            }
        };
        for workers in [1, 2, 3] {
            let seen: Vec<Result<u64>> = read_ahead(source.clone(), map, workers, |items| items.collect());
            assert_eq!(seen.len(), 200, "{workers} workers");
            for (i, item) in seen.iter().enumerate() {
                match (i, item) {
                    (50, Err(e)) => assert!(e.to_string().contains("bad batch 50")),
                    (120, Err(e)) => assert!(e.to_string().contains("panicked")),
                    (_, Ok(v)) => assert_eq!(*v, i as u64 * 2),
                    (_, Err(e)) => panic!("item {i}: {e}"),
                }
            }
        }
    }

    #[test]
    fn a_panicking_reader_ends_the_stream_with_an_error() {
        let source = (0..5).map(|i| if i == 3 { panic!("parser bug") } else { batch() });
        let seen: Vec<Result<RecordBatch>> = read_ahead(source, Ok, 2, |items| items.collect());
        assert_eq!(seen.len(), 4);
        assert!(seen[..3].iter().all(|b| b.is_ok()));
        assert!(matches!(&seen[3], Err(e) if e.to_string().contains("panicked")));
    }

    #[test]
    fn a_consumer_that_stops_early_stops_the_reader() {
        let source = (0..1_000_000).map(|_| batch());
        let taken = read_ahead(source, Ok, 2, |items| items.take(3).count());
        assert_eq!(taken, 3);
    }
}
