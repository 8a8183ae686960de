//! Benchmarks against peers. `tessera-bench foundation` generates a table
//! of customer events, loads it into Tessera, runs the reference queries
//! and prints one JSON object of timings; `benches/run_foundation.sh` runs
//! DuckDB on the same file in the same run and prints the ratios.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use tessera::Database;

mod identity;
mod rng;
mod segments;

use rng::Rng;

const EVENT_TYPES: [&str; 8] = ["page_view", "product_view", "add_to_cart", "checkout", "purchase", "email_open", "email_click", "app_open"];
const CHANNELS: [&str; 5] = ["web", "ios", "android", "email", "store"];
const CUSTOMERS: u64 = 1_000_000;
/// 2025-01-01 as days since the epoch.
const FIRST_DAY: i32 = 20089;
const DAYS: u64 = 730;
const BATCH: usize = 128 * 1024;

/// The reference queries, also run by the DuckDB side (same text).
pub const QUERIES: [(&str, &str); 2] = [
    (
        "filtered_aggregate",
        "SELECT event_type, count(*) AS n, sum(amount) AS total FROM events \
         WHERE event_date >= DATE '2025-06-01' AND event_date < DATE '2025-09-01' GROUP BY event_type ORDER BY event_type",
    ),
    ("point_filter", "SELECT * FROM events WHERE customer_id = 424242 ORDER BY event_id"),
];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("event_date", DataType::Date32, false),
    ]))
}

fn batch(rng: &mut Rng, first: u64, n: usize) -> anyhow::Result<RecordBatch> {
    let mut ids = Vec::with_capacity(n);
    let mut customers = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut amounts = Vec::with_capacity(n);
    let mut dates = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let r = rng.next();
        let kind = EVENT_TYPES[(r % 8) as usize];
        ids.push((first + i) as i64);
        customers.push(((r >> 8) % CUSTOMERS) as i64 + 1);
        types.push(kind);
        channels.push(CHANNELS[((r >> 32) % 5) as usize]);
        amounts.push((kind == "purchase").then(|| ((r >> 40) % 50_000) as f64 / 100.0));
        // Events arrive roughly in time order, as an event log does.
        let day = ((first + i) * DAYS / 10_000_000).min(DAYS - 1) as i32;
        dates.push(FIRST_DAY + day);
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(customers)),
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(channels)),
            Arc::new(Float64Array::from(amounts)),
            Arc::new(Date32Array::from(dates)),
        ],
    )?)
}

fn generate(path: &Path, rows: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props))?;
    let mut rng = Rng(42);
    let mut done = 0u64;
    while done < rows {
        let n = BATCH.min((rows - done) as usize);
        writer.write(&batch(&mut rng, done, n)?)?;
        done += n as u64;
    }
    writer.close()?;
    Ok(())
}

pub(crate) fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() { dir_size(&e.path())? } else { m.len() };
    }
    Ok(total)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn foundation(work: &Path, rows: u64, repeat: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let parquet = work.join(format!("events-{rows}.parquet"));
    if !parquet.exists() {
        let t = Instant::now();
        generate(&parquet, rows)?;
        eprintln!("generated {} in {:.1}s", parquet.display(), t.elapsed().as_secs_f64());
    }
    let data = work.join("tessera-db");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let db = Database::open(&data)?;
    let s = db.session();
    s.sql("CREATE TABLE events (event_id BIGINT NOT NULL, customer_id BIGINT NOT NULL, event_type TEXT NOT NULL, channel TEXT NOT NULL, amount DOUBLE, event_date DATE NOT NULL)").await?;
    let t = Instant::now();
    s.sql(&format!("COPY events FROM '{}'", parquet.display())).await?;
    s.sql("CHECKPOINT").await?;
    let load = t.elapsed().as_secs_f64();
    let mut out = serde_like::Obj::new();
    out.num("rows", rows as f64);
    out.num("load_s", load);
    for (name, sql) in QUERIES {
        let mut times = Vec::with_capacity(repeat);
        let mut result_rows = 0;
        for _ in 0..repeat {
            let t = Instant::now();
            let batches = s.sql(sql).await?;
            times.push(t.elapsed().as_secs_f64());
            result_rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        out.num(&format!("{name}_s"), median(times));
        out.num(&format!("{name}_rows"), result_rows as f64);
    }
    drop(s);
    db.close().await?;
    out.num("disk_bytes", dir_size(&data)? as f64);
    println!("{}", out.finish());
    Ok(())
}

/// A tiny JSON object writer (numbers only), to keep the bench free of
/// serialization dependencies.
mod serde_like {
    pub struct Obj(Vec<String>);
    impl Obj {
        pub fn new() -> Self {
            Obj(Vec::new())
        }
        pub fn num(&mut self, k: &str, v: f64) {
            self.0.push(format!("\"{k}\": {v}"));
        }
        pub fn finish(self) -> String {
            format!("{{{}}}", self.0.join(", "))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tessera-bench foundation WORK_DIR [ROWS] [REPEAT] | tessera-bench generate FILE ROWS | tessera-bench identity WORK_DIR PEOPLE [LOADS] | tessera-bench identity-load WORK_DIR PEOPLE [plain] | tessera-bench identity-insert DB_DIR [COUNT] | tessera-bench segments WORK_DIR PEOPLE";
    match args.get(1).map(String::as_str) {
        Some("foundation") => {
            let work = PathBuf::from(args.get(2).context(usage)?);
            let rows = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(10_000_000);
            let repeat = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(5);
            foundation(&work, rows, repeat).await
        }
        Some("identity") => {
            let work = PathBuf::from(args.get(2).context(usage)?);
            let people = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(100_000);
            let loads = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(3);
            println!("{}", identity::run(&work, people, loads).await?);
            Ok(())
        }
        // The identity benchmark's timed load alone (with identifiers, or
        // `plain` without), for profiling and repeated runs.
        Some("identity-load") => {
            let work = PathBuf::from(args.get(2).context(usage)?);
            let people: u64 = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(100_000);
            let with_identifiers = args.get(4).map(String::as_str) != Some("plain");
            println!("{}", identity::load_once(&work, people, with_identifiers).await?);
            Ok(())
        }
        // Single-row inserts, each followed by a lookup of its email, on a
        // copy of a database: one line per pair, for latency outliers.
        Some("identity-insert") => {
            let dir = PathBuf::from(args.get(2).context(usage)?);
            let count: usize = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(600);
            identity::insert_series(&dir, count).await
        }
        Some("segments") => {
            let work = PathBuf::from(args.get(2).context(usage)?);
            let people = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(100_000);
            println!("{}", segments::run(&work, people).await?);
            Ok(())
        }
        Some("generate") => {
            let file = PathBuf::from(args.get(2).context(usage)?);
            let rows = args.get(3).context(usage)?.parse()?;
            generate(&file, rows)
        }
        _ => anyhow::bail!(usage),
    }
}
