//! Running the generation pipeline and writing files.
//!
//! Worker threads generate chunks of persons (each from its own random
//! stream); the calling thread takes them in chunk order, numbers rows and
//! sequential ids, and writes CSV and ground truth; a separate thread encodes
//! Parquet. Memory use is bounded by a few chunks in flight.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::buffer::{arrow_schema, csv_header, push_u64, Bases, Seq, SEQ_COUNT};
use crate::config::{Config, Formats};
use crate::gen::{chunk_count, generate_chunk, Chunk, Derived, PEOPLE_HEADER};
use crate::schema::{tables, TableSpec, CRM, LOYALTY, POS, SUBSCRIBERS, TABLE_COUNT};
use crate::Error;

/// Ground truth: one line `table,row,person_id` per generated row.
pub const TRUTH_FILE: &str = "truth.csv";
/// Ground truth per person: identifiers and purchase-model parameters.
pub const PEOPLE_FILE: &str = "truth_people.csv";

/// What a generation run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Persons generated (known + anonymous).
    pub people: u64,
    /// Persons known to at least one source through a personal identifier.
    pub known_people: u64,
    /// Anonymous web visitors.
    pub anonymous_people: u64,
    /// `(table name, row count)` in [`tables`] order.
    pub rows: Vec<(&'static str, u64)>,
    /// Lines in `truth.csv` (the sum of all row counts).
    pub truth_rows: u64,
    /// Files written, in creation order.
    pub files: Vec<PathBuf>,
}

impl Summary {
    /// Row count of a table (0 for an unknown name).
    pub fn rows_of(&self, table: &str) -> u64 {
        self.rows
            .iter()
            .find(|(n, _)| *n == table)
            .map_or(0, |(_, c)| *c)
    }

    /// Total rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().map(|(_, c)| c).sum()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the generator and hands each chunk, in order, to `sink` along with
/// where its rows start. Returns the final bases (= totals).
fn drive<F>(config: &Config, mut sink: F) -> Result<(Bases, u64, u64), Error>
where
    F: FnMut(Arc<(Chunk, Bases)>) -> Result<(), Error>,
{
    config.validate()?;
    let derived = Derived::new(config);
    let chunks = chunk_count(config.people);
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
    .clamp(1, 64)
    .min(chunks.max(1) as usize);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<(u64, Chunk)>(threads * 2);
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, derived) = (&next, &stop, &derived);
            s.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= chunks {
                    break;
                }
                let c = generate_chunk(config, derived, i);
                if tx.send((i, c)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let result = consume(rx, chunks, &mut sink);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        result
    })
}

fn consume<F>(
    rx: Receiver<(u64, Chunk)>,
    chunks: u64,
    sink: &mut F,
) -> Result<(Bases, u64, u64), Error>
where
    F: FnMut(Arc<(Chunk, Bases)>) -> Result<(), Error>,
{
    let mut pending: BTreeMap<u64, Chunk> = BTreeMap::new();
    let mut next = 0u64;
    let mut bases = Bases::default();
    let (mut known, mut anonymous) = (0u64, 0u64);
    while next < chunks {
        let (i, c) = rx
            .recv()
            .map_err(|_| Error::Internal("generator thread stopped".into()))?;
        pending.insert(i, c);
        while let Some(c) = pending.remove(&next) {
            let mut after = bases;
            for t in 0..TABLE_COUNT {
                after.rows[t] += c.tables[t].len() as u64;
            }
            after.seq[Seq::Contact as usize] += c.tables[CRM].len() as u64;
            after.seq[Seq::Subscriber as usize] += c.tables[SUBSCRIBERS].len() as u64;
            after.seq[Seq::Member as usize] += c.tables[LOYALTY].len() as u64;
            after.seq[Seq::Order as usize] += c.tables[POS].len() as u64;
            after.seq[Seq::User as usize] += u64::from(c.users);
            known += c.known;
            anonymous += c.anonymous;
            sink(Arc::new((c, bases)))?;
            bases = after;
            next += 1;
        }
    }
    debug_assert_eq!(SEQ_COUNT, 5);
    Ok((bases, known, anonymous))
}

fn summary(people: u64, bases: &Bases, known: u64, anonymous: u64, files: Vec<PathBuf>) -> Summary {
    let rows: Vec<(&'static str, u64)> = tables()
        .iter()
        .zip(bases.rows)
        .map(|(t, n)| (t.name, n))
        .collect();
    Summary {
        people,
        known_people: known,
        anonymous_people: anonymous,
        truth_rows: rows.iter().map(|r| r.1).sum(),
        rows,
        files,
    }
}

/// Generates the data set described by `config` into `out_dir` (created if
/// missing): `<table>.csv` and/or `<table>.parquet` for every table, plus
/// `truth.csv` and `truth_people.csv`. Existing files are overwritten.
pub fn generate(config: &Config, out_dir: &Path, formats: Formats) -> Result<Summary, Error> {
    config.validate()?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let specs = tables();
    let mut files = Vec::new();
    let create = |name: String, files: &mut Vec<PathBuf>| -> Result<(File, PathBuf), Error> {
        let path = out_dir.join(name);
        let f = File::create(&path).map_err(io_err(&path))?;
        files.push(path.clone());
        Ok((f, path))
    };

    let mut csv: Vec<(File, PathBuf)> = Vec::new();
    if formats.csv {
        for spec in specs {
            let (mut f, path) = create(format!("{}.csv", spec.name), &mut files)?;
            let mut header = Vec::new();
            csv_header(spec, &mut header);
            f.write_all(&header).map_err(io_err(&path))?;
            csv.push((f, path));
        }
    }
    let mut parquet: Vec<(ArrowWriter<File>, SchemaRef, PathBuf)> = Vec::new();
    if formats.parquet {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        for spec in specs {
            let (f, path) = create(format!("{}.parquet", spec.name), &mut files)?;
            let schema = arrow_schema(spec);
            let w = ArrowWriter::try_new(f, schema.clone(), Some(props.clone()))?;
            parquet.push((w, schema, path));
        }
    }
    let (mut truth, truth_path) = create(TRUTH_FILE.to_string(), &mut files)?;
    truth
        .write_all(b"table,row,person_id\n")
        .map_err(io_err(&truth_path))?;
    let (mut people, people_path) = create(PEOPLE_FILE.to_string(), &mut files)?;
    people
        .write_all(PEOPLE_HEADER.as_bytes())
        .map_err(io_err(&people_path))?;

    let result = std::thread::scope(|s| {
        // Parquet encoding runs on its own thread.
        let (ptx, prx) = sync_channel::<Arc<(Chunk, Bases)>>(2);
        let pq_handle = if parquet.is_empty() {
            drop(prx);
            None
        } else {
            let writers = std::mem::take(&mut parquet);
            Some(s.spawn(move || parquet_thread(prx, writers)))
        };
        let mut buf: Vec<u8> = Vec::with_capacity(16 << 20);
        let ptx = pq_handle.as_ref().map(|_| ptx);
        let driven = drive(config, |msg| {
            if let Some(ptx) = &ptx {
                if ptx.send(msg.clone()).is_err() {
                    // The Parquet thread failed; its error is reported below.
                    return Err(Error::Internal("parquet writer stopped".into()));
                }
            }
            let (chunk, bases) = &*msg;
            for (t, (f, path)) in csv.iter_mut().enumerate() {
                buf.clear();
                chunk.tables[t].write_csv(bases, &mut buf);
                f.write_all(&buf).map_err(io_err(path))?;
            }
            buf.clear();
            for (t, spec) in specs.iter().enumerate() {
                let table = &chunk.tables[t];
                let base = bases.rows[t];
                for (r, &person) in table.persons.iter().enumerate() {
                    buf.extend_from_slice(spec.name.as_bytes());
                    buf.push(b',');
                    push_u64(&mut buf, base + r as u64);
                    buf.push(b',');
                    push_u64(&mut buf, person);
                    buf.push(b'\n');
                }
            }
            truth.write_all(&buf).map_err(io_err(&truth_path))?;
            people
                .write_all(&chunk.people_csv)
                .map_err(io_err(&people_path))?;
            Ok(())
        });
        drop(ptx);
        let pq_result = match pq_handle {
            Some(h) => h
                .join()
                .map_err(|_| Error::Internal("parquet thread panicked".into()))?,
            None => Ok(()),
        };
        // A Parquet error explains a failed send, so report it first.
        pq_result?;
        driven
    });
    let (bases, known, anonymous) = result?;
    for (f, path) in &mut csv {
        f.flush().map_err(io_err(path))?;
    }
    truth.flush().map_err(io_err(&truth_path))?;
    people.flush().map_err(io_err(&people_path))?;
    Ok(summary(config.people, &bases, known, anonymous, files))
}

fn parquet_thread(
    rx: Receiver<Arc<(Chunk, Bases)>>,
    mut writers: Vec<(ArrowWriter<File>, SchemaRef, PathBuf)>,
) -> Result<(), Error> {
    for msg in rx {
        let (chunk, bases) = &*msg;
        for (t, (w, schema, _)) in writers.iter_mut().enumerate() {
            if chunk.tables[t].len() == 0 {
                continue;
            }
            let batch = chunk.tables[t].to_record_batch(bases, schema)?;
            w.write(&batch)?;
        }
    }
    for (w, _, _) in writers {
        w.close()?;
    }
    Ok(())
}

/// Generates the data set in memory: calls `f(table, batch, persons)` for
/// each table of each chunk of persons, in order, where `persons[i]` is the
/// true person id of row `i` of `batch`. Rows arrive in the same order as in
/// the files [`generate`] writes. Returning an error from `f` stops the run.
pub fn generate_batches<F>(config: &Config, mut f: F) -> Result<Summary, Error>
where
    F: FnMut(&'static TableSpec, RecordBatch, &[u64]) -> Result<(), Error>,
{
    let specs = tables();
    let schemas: Vec<SchemaRef> = specs.iter().map(arrow_schema).collect();
    let (bases, known, anonymous) = drive(config, |msg| {
        let (chunk, bases) = &*msg;
        for (t, spec) in specs.iter().enumerate() {
            let table = &chunk.tables[t];
            if table.len() == 0 {
                continue;
            }
            let batch = table.to_record_batch(bases, &schemas[t])?;
            f(spec, batch, &table.persons)?;
        }
        Ok(())
    })?;
    Ok(summary(config.people, &bases, known, anonymous, Vec::new()))
}
