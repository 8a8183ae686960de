//! Identity benchmark, Tessera's side: load the generated sources from
//! Parquet files with their identifiers declared (resolution happens as
//! rows commit), load the same files into tables without identifiers (the
//! load alone), time single-row read-your-writes lookups, and score the
//! profiles against the ground truth (pairwise precision and recall).
//! Prints one JSON object.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use tessera::{Database, Options};

/// First value of a column as an integer (counts come back as Int64 or
/// UInt64).
pub(crate) fn int(batches: &[arrow::array::RecordBatch], col: usize) -> i64 {
    batches
        .first()
        .and_then(|b| arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Int64).ok())
        .map(|a| a.as_primitive::<Int64Type>().value(0))
        .unwrap_or(0)
}

/// Count identifier values present (non-empty) in the loaded rows: the
/// links resolution processed.
async fn identifier_values(db: &Database) -> anyhow::Result<i64> {
    let s = db.session();
    let mut total = 0;
    for spec in tessera_datagen::tables() {
        for (column, _) in spec.identifier_columns() {
            let r = s.sql(&format!("SELECT count({column}) FROM {}", spec.name)).await?;
            total += int(&r, 0);
        }
    }
    Ok(total)
}

/// Pairwise precision and recall of row clusters (profiles) against the
/// true persons. Rows without a profile are clusters of one.
fn pairwise(pairs: &[(i64, u64)]) -> (f64, f64) {
    let choose2 = |n: u64| n * n.saturating_sub(1) / 2;
    let mut cell: HashMap<(i64, u64), u64> = HashMap::new();
    let mut predicted: HashMap<i64, u64> = HashMap::new();
    let mut truth: HashMap<u64, u64> = HashMap::new();
    for &(p, t) in pairs {
        if p >= 0 {
            *cell.entry((p, t)).or_default() += 1;
            *predicted.entry(p).or_default() += 1;
        }
        *truth.entry(t).or_default() += 1;
    }
    let tp: u64 = cell.values().map(|n| choose2(*n)).sum();
    let pp: u64 = predicted.values().map(|n| choose2(*n)).sum();
    let tt: u64 = truth.values().map(|n| choose2(*n)).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    (ratio(tp, pp), ratio(tp, tt))
}

/// (profile or -1, true person) for every row of every table, in file order.
async fn labelled_rows(dir: &Path, data: &Path) -> anyhow::Result<Vec<(i64, u64)>> {
    // One partition: a scan returns rows in row-id (= file) order.
    let db = Database::open_with(dir, Options { target_partitions: 1, ..Default::default() })?;
    let mut truth: HashMap<String, Vec<u64>> = HashMap::new();
    let text = std::fs::read_to_string(data.join(tessera_datagen::TRUTH_FILE)).context("reading truth.csv")?;
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let (Some(table), Some(row), Some(person)) = (f.next(), f.next(), f.next()) else { continue };
        let rows = truth.entry(table.to_string()).or_default();
        let row: usize = row.parse()?;
        if rows.len() <= row {
            rows.resize(row + 1, 0);
        }
        rows[row] = person.parse()?;
    }
    let mut out = Vec::new();
    let s = db.session();
    for spec in tessera_datagen::tables() {
        if spec.identifier_columns().next().is_none() {
            continue;
        }
        let persons = truth.get(spec.name).context("table missing from truth.csv")?;
        let batches = s.sql(&format!("SELECT profile_id FROM {}", spec.name)).await?;
        let mut i = 0;
        for b in &batches {
            let p = b.column(0).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                let person = *persons.get(i).context("more rows than truth")?;
                out.push((if p.is_null(r) { -1 } else { p.value(r) }, person));
                i += 1;
            }
        }
        anyhow::ensure!(i == persons.len(), "{}: {} rows loaded, {} in truth", spec.name, i, persons.len());
    }
    drop(s);
    db.close().await?;
    Ok(out)
}

pub(crate) async fn load_all(db: &Database, data: &Path, with_identifiers: bool) -> anyhow::Result<u64> {
    Ok(load_tables(db, data, with_identifiers).await?.iter().map(|(_, rows, _)| rows).sum())
}

/// Create the tables and `COPY` each file: (table, rows, seconds) per table.
async fn load_tables(db: &Database, data: &Path, with_identifiers: bool) -> anyhow::Result<Vec<(&'static str, u64, f64)>> {
    let s = db.session();
    if with_identifiers {
        for statement in tessera_server::demo::setup_statements() {
            s.sql(&statement).await?;
        }
    } else {
        for spec in tessera_datagen::tables() {
            s.sql(&tessera_datagen::create_table_sql(spec)).await?;
        }
    }
    let mut loaded = Vec::new();
    for spec in tessera_datagen::tables() {
        let file = data.join(format!("{}.parquet", spec.name));
        let started = Instant::now();
        let r = s.sql(&format!("COPY {} FROM '{}'", spec.name, file.display())).await?;
        loaded.push((spec.name, int(&r, 0) as u64, started.elapsed().as_secs_f64()));
    }
    Ok(loaded)
}

/// A new, empty database in `dir` (whatever was there is removed).
fn fresh_database(dir: &Path) -> anyhow::Result<Database> {
    let _ = std::fs::remove_dir_all(dir);
    Ok(Database::open(dir)?)
}

/// CPU time (user and system) this process has used so far, in seconds:
/// a steadier measure of work done than the wall clock on a busy machine.
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// The identifier columns of each table, for the DuckDB side.
pub(crate) fn write_identity_spec(work: &Path) -> anyhow::Result<()> {
    let spec: Vec<String> = tessera_datagen::tables()
        .iter()
        .map(|t| {
            let cols: Vec<String> = t.identifier_columns().map(|(c, ty)| format!("[\"{c}\", \"{}\"]", ty.as_str())).collect();
            format!("\"{}\": [{}]", t.name, cols.join(", "))
        })
        .collect();
    std::fs::write(work.join("identity_spec.json"), format!("{{{}}}", spec.join(", ")))?;
    Ok(())
}

/// The identity benchmark. The timed loads (without identifiers, then
/// with them) alternate `loads` times, each into a new database, and their
/// medians are reported, with every run's times: on a shared machine one
/// run of each moved the ratios by several percent between runs minutes
/// apart. The rest is measured on the last database loaded.
pub async fn run(work: &Path, people: u64, loads: usize) -> anyhow::Result<String> {
    anyhow::ensure!(loads >= 1, "at least one load");
    let data = work.join(format!("data-{people}"));
    if !data.join("web_events.parquet").exists() {
        tessera_datagen::generate(&tessera_datagen::Config::new(people, 42), &data, tessera_datagen::Formats::BOTH)?;
    }
    write_identity_spec(work)?;
    let mut out = super::serde_like::Obj::new();
    out.num("people", people as f64);
    out.num("loads", loads as f64);
    let dir = work.join("tessera-identity");
    let (mut plain_s, mut plain_cpu, mut both_s, mut both_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last: Option<(Database, u64, i64)> = None;
    for run in 1..=loads {
        // The load alone (no identifiers declared).
        let plain = work.join("tessera-plain");
        let db = fresh_database(&plain)?;
        quiesce(&data)?;
        let started = Instant::now();
        let cpu = cpu_seconds();
        load_all(&db, &data, false).await?;
        plain_s.push(started.elapsed().as_secs_f64());
        plain_cpu.push(cpu_seconds() - cpu);
        db.close().await?;
        // Load and resolve: files to queryable profiles.
        let db = fresh_database(&dir)?;
        quiesce(&data)?;
        let started = Instant::now();
        let cpu = cpu_seconds();
        let rows = load_all(&db, &data, true).await?;
        let profiles = int(&db.session().sql("SELECT count(*) FROM profiles").await?, 0);
        both_s.push(started.elapsed().as_secs_f64());
        both_cpu.push(cpu_seconds() - cpu);
        out.num(&format!("load_only_s_{run}"), plain_s[run - 1]);
        out.num(&format!("end_to_end_s_{run}"), both_s[run - 1]);
        if run < loads {
            db.close().await?;
        } else {
            last = Some((db, rows, profiles));
        }
    }
    let (db, rows, profiles) = last.context("no load ran")?;
    out.num("load_only_s", super::median(plain_s));
    out.num("load_only_cpu_s", super::median(plain_cpu));
    out.num("end_to_end_s", super::median(both_s));
    out.num("end_to_end_cpu_s", super::median(both_cpu));
    out.num("rows", rows as f64);
    out.num("profiles", profiles as f64);
    let links = identifier_values(&db).await?;
    out.num("identifier_values", links as f64);
    let report = db.session().sql("RESOLVE IDENTITIES").await?;
    let nodes = int(&report, 3);
    let bytes = int(&report, 4);
    out.num("graph_nodes", nodes as f64);
    out.num("graph_bytes_per_identifier", bytes as f64 / nodes.max(1) as f64);

    // Profile lookups as an application asks them: a raw email in, the
    // profile out. The same 200 raw values on both sides (the first
    // crm_contacts emails that look like one, in sorted order).
    let s = db.session();
    let mut latencies = Vec::new();
    let mut found_profiles = 0;
    for email in lookup_emails(&s).await? {
        let t = Instant::now();
        let found = s.sql(&format!("SELECT profile_id FROM profile_lookup('email', '{}')", email.replace('\'', "''"))).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        found_profiles += found.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    latencies.sort_by(f64::total_cmp);
    out.num("lookup_p50_ms", percentile(&latencies, 0.5));
    out.num("lookup_p99_ms", percentile(&latencies, 0.99));
    out.num("lookup_found", found_profiles as f64);

    // Read-your-writes: a single-row insert, then a lookup of its new email.
    let mut latencies = Vec::new();
    for i in 0..1_000 {
        let email = format!("bench{i}@example.com");
        let t = Instant::now();
        s.sql(&format!(
            "INSERT INTO crm_contacts (contact_id, first_name, email, phone, created_at, updated_at) VALUES ('B{i}', 'Bench', '{email}', '+1 415 555 {:04}', now(), now())",
            1000 + i
        ))
        .await?;
        let found = s.sql(&format!("SELECT profile_id FROM profile_lookup('email', '{email}')")).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(found.iter().map(|b| b.num_rows()).sum::<usize>() == 1, "inserted identifier not found");
    }
    latencies.sort_by(f64::total_cmp);
    out.num("insert_then_lookup_p50_ms", percentile(&latencies, 0.5));
    out.num("insert_then_lookup_p99_ms", percentile(&latencies, 0.99));
    // Opening the database rebuilds the graph from the rows.
    drop(s);
    db.close().await?;
    let t = Instant::now();
    let db = Database::open(&dir)?;
    out.num("open_s", t.elapsed().as_secs_f64());
    db.close().await?;

    // Quality against the ground truth (the 200 bench rows excluded: they
    // are not in truth.csv, so delete them first).
    let db = Database::open(&dir)?;
    db.session().sql("DELETE FROM crm_contacts WHERE first_name = 'Bench'").await?;
    db.close().await?;
    let labelled = labelled_rows(&dir, &data).await?;
    let (precision, recall) = pairwise(&labelled);
    out.num("pairwise_precision", precision);
    out.num("pairwise_recall", recall);
    Ok(out.finish())
}

/// Before a timed load: the dirty pages of the databases written before
/// it go to disk first, so that their writeback is not timed with it, and
/// the input files are read once, so that a load reads them from memory
/// whatever ran before (the first of a run's loads read them from disk
/// after DuckDB's database of the run before had pushed them out).
/// DuckDB's side does the same.
fn quiesce(data: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    for spec in tessera_datagen::tables() {
        std::hint::black_box(std::fs::read(data.join(format!("{}.parquet", spec.name)))?);
    }
    Ok(())
}

/// One load of the generated files (already generated) into a new
/// database, timed: wall and CPU seconds.
pub async fn load_once(work: &Path, people: u64, with_identifiers: bool) -> anyhow::Result<String> {
    let data = work.join(format!("data-{people}"));
    anyhow::ensure!(data.join("web_events.parquet").exists(), "no data set in {}; run the identity benchmark once", data.display());
    let dir = work.join("tessera-load-once");
    let db = fresh_database(&dir)?;
    quiesce(&data)?;
    let started = Instant::now();
    let cpu = cpu_seconds();
    let tables = load_tables(&db, &data, with_identifiers).await?;
    let mut out = super::serde_like::Obj::new();
    out.num("rows", tables.iter().map(|(_, rows, _)| *rows).sum::<u64>() as f64);
    out.num("load_s", started.elapsed().as_secs_f64());
    out.num("load_cpu_s", cpu_seconds() - cpu);
    if with_identifiers {
        // The rest of the end-to-end measure: the first query of profiles.
        let counted = Instant::now();
        db.session().sql("SELECT count(*) FROM profiles").await?;
        out.num("profiles_count_s", counted.elapsed().as_secs_f64());
    }
    for (table, _, seconds) in &tables {
        out.num(&format!("{table}_s"), *seconds);
    }
    db.close().await?;
    out.num("disk_bytes", super::dir_size(&dir)? as f64);
    std::fs::remove_dir_all(&dir)?;
    Ok(out.finish())
}

/// `count` single-row inserts into `crm_contacts` of the database in
/// `dir`, each followed by a lookup of its email; prints each pair's
/// times (milliseconds since the first, insert, lookup) and percentiles.
pub async fn insert_series(dir: &Path, count: usize) -> anyhow::Result<()> {
    let db = Database::open(dir)?;
    let s = db.session();
    let (mut inserts, mut lookups) = (Vec::new(), Vec::new());
    let first = Instant::now();
    let tag = std::process::id();
    for i in 0..count {
        let email = format!("series{tag}x{i}@example.com");
        let t = Instant::now();
        s.sql(&format!(
            "INSERT INTO crm_contacts (contact_id, first_name, email, phone, created_at, updated_at) VALUES ('S{tag}x{i}', 'Series', '{email}', '+1 415 555 {:04}', now(), now())",
            i % 10_000
        ))
        .await?;
        let inserted = t.elapsed().as_secs_f64() * 1000.0;
        let found = s.sql(&format!("SELECT profile_id FROM profile_lookup('email', '{email}')")).await?;
        let looked = t.elapsed().as_secs_f64() * 1000.0 - inserted;
        anyhow::ensure!(found.iter().map(|b| b.num_rows()).sum::<usize>() == 1, "inserted identifier not found");
        println!("{i} {:.1} {inserted:.3} {looked:.3}", t.duration_since(first).as_secs_f64() * 1000.0);
        inserts.push(inserted);
        lookups.push(looked);
    }
    inserts.sort_by(f64::total_cmp);
    lookups.sort_by(f64::total_cmp);
    println!(
        "insert p50 {:.2} p99 {:.2} max {:.2}; lookup p50 {:.2} p99 {:.2} max {:.2} (ms)",
        percentile(&inserts, 0.5),
        percentile(&inserts, 0.99),
        inserts.last().copied().unwrap_or(0.0),
        percentile(&lookups, 0.5),
        percentile(&lookups, 0.99),
        lookups.last().copied().unwrap_or(0.0)
    );
    drop(s);
    db.close().await?;
    Ok(())
}

/// The raw emails both sides look up (`duckdb_identity.py` asks the same).
async fn lookup_emails(s: &tessera::Session) -> anyhow::Result<Vec<String>> {
    let batches = s.sql("SELECT email FROM crm_contacts WHERE email LIKE '%_@_%.%' ORDER BY email LIMIT 200").await?;
    let mut out = Vec::new();
    for b in &batches {
        let column = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let strings = column
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .context("email column is not text")?;
        out.extend(strings.iter().flatten().map(str::to_string));
    }
    Ok(out)
}
