//! Crash safety: a child process ingests (with concurrent commits,
//! deletes, checkpoints and compactions) and is killed with SIGKILL at
//! random moments; after each reopen every acknowledged commit is there in
//! full and nothing partial is visible. Flipped bytes are reported as
//! corruption.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use tessera::{Database, ErrorKind};

use crate::child;

const WRITERS: i64 = 3;

/// Rows in batch `i`: small mostly, sometimes large enough to take the
/// direct-to-segment path.
fn rows_in(i: i64) -> i64 {
    if i % 53 == 0 {
        100_500
    } else {
        (i * 37 % 300) + 1
    }
}

fn batch(i: i64) -> anyhow::Result<RecordBatch> {
    let n = rows_in(i);
    let schema = Arc::new(Schema::new(vec![
        Field::new("batch", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, true),
    ]));
    let b = Int64Array::from(vec![i; n as usize]);
    let k = Int64Array::from_iter_values(0..n);
    let p: StringArray = (0..n).map(|j| Some(format!("batch {i} row {j}"))).collect();
    Ok(RecordBatch::try_new(schema, vec![Arc::new(b), Arc::new(k), Arc::new(p)])?)
}

/// The child: ingest until killed, printing `A i` after batch i is
/// acknowledged, `d i` before deleting it and `D i` after the deletion is
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by crash_kill_and_recover as a child process"]
async fn crash_child() -> anyhow::Result<()> {
    let Some((scenario, dir)) = child::scenario() else { return Ok(()) };
    anyhow::ensure!(scenario == "ingest", "unknown scenario {scenario}");
    let db = Database::open(&dir)?;
    let session = db.session();
    session
        .sql("CREATE TABLE IF NOT EXISTS t (batch BIGINT NOT NULL, k BIGINT NOT NULL, payload TEXT)")
        .await?;
    // Identity resolution runs beside: its graph must agree with the rows
    // after every kill.
    session.sql("CREATE IDENTIFIER IF NOT EXISTS cid (max_per_profile = 1000, generic_limit = 1000000)").await?;
    session.sql("CREATE IDENTIFIER IF NOT EXISTS dev (max_per_profile = 1000, generic_limit = 1000000)").await?;
    session
        .sql("CREATE TABLE IF NOT EXISTS contacts (batch BIGINT, c TEXT, d TEXT) WITH (identifiers = 'c AS cid, d AS dev')")
        .await?;
    let start = session.sql("SELECT coalesce(max(batch), 0) + 1 FROM t").await?;
    let start = start[0].column(0).as_primitive::<Int64Type>().value(0);
    let start = start + (WRITERS - start % WRITERS);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let session = db.session();
            let mut n = 0u64;
            let mut i = start + w;
            loop {
                db.append("t", vec![batch(i)?]).await?;
                println!("A {i}");
                n += 1;
                if n % 7 == 0 && i - 21 > 0 {
                    let j = i - 21;
                    println!("d {j}");
                    session.sql(&format!("DELETE FROM t WHERE batch = {j}")).await?;
                    println!("D {j}");
                }
                if w == 2 {
                    // Rows that link contacts into shared profiles (merges),
                    // and deletes of older ones (splits).
                    let rows: Vec<String> = (0..(i % 5 + 1))
                        .map(|r| {
                            let d = if (i + r) % 3 == 0 { format!("'d{}'", (i + r) % 150) } else { "NULL".into() };
                            format!("({i}, 'c{}', {d})", (i * 5 + r) % 400)
                        })
                        .collect();
                    session.sql(&format!("INSERT INTO contacts VALUES {}", rows.join(", "))).await?;
                    if n % 5 == 0 {
                        session.sql(&format!("DELETE FROM contacts WHERE batch = {}", i - 30)).await?;
                    }
                    // Sometimes a bulk load (the direct-to-segment path).
                    if n == 1 && start % 4 == 0 {
                        let bulk = format!(
                            "INSERT INTO contacts SELECT {i}, 'b' || (value % 5000), 'e' || (value % 3000) FROM generate_series(1, 100500)"
                        );
                        session.sql(&bulk).await?;
                    }
                }
                if w == 0 && n % 40 == 0 {
                    session.sql("CHECKPOINT").await?;
                }
                if w == 1 && n % 90 == 0 {
                    session.sql("VACUUM t").await?;
                }
                i += WRITERS;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill_and_recover() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("TESSERA_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut deleted: BTreeSet<i64> = BTreeSet::new();
    let mut deleting: BTreeSet<i64> = BTreeSet::new();
    let mut total_acks = 0usize;
    for round in 0..iterations {
        let mut child = child::spawn("crash::crash_child", "ingest", &data)?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            })
        };
        // Wait for the first acknowledgement, then a random while more.
        let started = Instant::now();
        while lines.lock().map(|l| l.is_empty()).unwrap_or(true) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 600));
        child.kill()?; // SIGKILL
        let status = child.wait()?;
        let _ = reader.join();
        let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
        anyhow::ensure!(!lines.is_empty(), "round {round}: the child acknowledged nothing (status {status})");
        for line in &lines {
            match line.split_once(' ') {
                Some(("A", i)) => {
                    acked.insert(i.parse()?);
                    total_acks += 1;
                }
                Some(("D", i)) => {
                    deleted.insert(i.parse()?);
                }
                Some(("d", i)) => {
                    deleting.insert(i.parse()?);
                }
                _ => {}
            }
        }
        verify(&data, &acked, &deleted, &deleting, round).await?;
    }
    eprintln!("crash test: {iterations} kills, {total_acks} acknowledged batches checked");
    Ok(())
}

async fn verify(
    data: &std::path::Path,
    acked: &BTreeSet<i64>,
    deleted: &BTreeSet<i64>,
    deleting: &BTreeSet<i64>,
    round: usize,
) -> anyhow::Result<()> {
    let db = Database::open(data)?;
    let session = db.session();
    let batches = session.sql("SELECT batch, count(*) AS n, count(DISTINCT k) AS d FROM t GROUP BY batch").await?;
    let mut present = BTreeMap::new();
    for b in &batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let d = b.column(2).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            present.insert(ids.value(r), (n.value(r), d.value(r)));
        }
    }
    for (i, (n, d)) in &present {
        anyhow::ensure!(*n == rows_in(*i) && *d == *n, "round {round}: batch {i} is partial: {n} rows ({d} distinct), expected {}", rows_in(*i));
        anyhow::ensure!(!deleted.contains(i), "round {round}: batch {i} was deleted (acknowledged) but is present");
    }
    for i in acked {
        // A deletion that was issued may have committed without its
        // acknowledgement reaching us.
        if !deleting.contains(i) {
            anyhow::ensure!(present.contains_key(i), "round {round}: acknowledged batch {i} is missing");
        }
    }
    // The identity graph (rebuilt on open) agrees with the rows, and every
    // contact row resolves to a profile.
    let report = session.sql("RESOLVE IDENTITIES").await?;
    let contacts = session.sql("SELECT count(*) FROM contacts").await?;
    eprintln!(
        "round {round}: {} contact rows, {} profiles agree with the rows",
        contacts[0].column(0).as_primitive::<Int64Type>().value(0),
        report[0].column(0).as_primitive::<Int64Type>().value(0)
    );
    let unresolved = session.sql("SELECT count(*) FROM contacts WHERE profile_id IS NULL").await?;
    anyhow::ensure!(
        unresolved[0].column(0).as_primitive::<Int64Type>().value(0) == 0,
        "round {round}: contact rows without a profile"
    );
    db.store().verify()?;
    drop(session);
    drop(db);
    Ok(())
}

fn files_with_prefix(dir: &std::path::Path, prefix: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    out.sort();
    Ok(out)
}

fn flip_byte(path: &std::path::Path, offset: u64) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(path)?;
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[tokio::test]
async fn flipped_byte_in_a_segment_is_reported() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = Database::open(dir.path())?;
        let s = db.session();
        s.sql("CREATE TABLE t (a BIGINT, b TEXT)").await?;
        s.sql("INSERT INTO t SELECT value, 'row ' || value FROM generate_series(1, 5000)").await?;
        db.close().await?;
    }
    let segment = files_with_prefix(dir.path(), "seg-")?.pop().ok_or_else(|| anyhow::anyhow!("no segment"))?;
    // Middle of the file: inside the chunk of one of the columns.
    let len = std::fs::metadata(&segment)?.len();
    flip_byte(&segment, len / 2)?;
    let db = Database::open(dir.path())?;
    let err = db.session().sql("SELECT * FROM t").await.expect_err("corrupt data was returned");
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("seg-") && msg.contains("offset"), "message names file and offset: {msg}");
    let err = db.store().verify().expect_err("verify missed the damage");
    assert!(err.to_string().contains("checksum"), "{err}");
    Ok(())
}

async fn three_commits(dir: &std::path::Path) -> anyhow::Result<()> {
    let db = Database::open(dir)?;
    let s = db.session();
    s.sql("CREATE TABLE t (a BIGINT)").await?;
    for i in 1..=3 {
        s.sql(&format!("INSERT INTO t VALUES ({i})")).await?;
    }
    // Dropped without close: the rows stay in the log only.
    Ok(())
}

#[tokio::test]
async fn flipped_byte_in_the_log_is_reported() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    three_commits(dir.path()).await?;
    let wal = files_with_prefix(dir.path(), "wal-")?.pop().ok_or_else(|| anyhow::anyhow!("no log"))?;
    flip_byte(&wal, 8 + 8 + 10)?; // inside the first frame's payload
    let err = Database::open(dir.path()).expect_err("a corrupt log was accepted");
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains("wal-"), "{err}");
    Ok(())
}

#[tokio::test]
async fn torn_log_tail_is_cut() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    three_commits(dir.path()).await?;
    let wal = files_with_prefix(dir.path(), "wal-")?.pop().ok_or_else(|| anyhow::anyhow!("no log"))?;
    let len = std::fs::metadata(&wal)?.len();
    std::fs::OpenOptions::new().write(true).open(&wal)?.set_len(len - 3)?;
    let db = Database::open(dir.path())?;
    let rows = db.session().sql("SELECT a FROM t ORDER BY a").await?;
    let values: Vec<i64> = rows.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert_eq!(values, vec![1, 2]);
    // And the log accepts new commits after the cut.
    db.session().sql("INSERT INTO t VALUES (4)").await?;
    drop(db);
    let db = Database::open(dir.path())?;
    let rows = db.session().sql("SELECT count(*) FROM t").await?;
    assert_eq!(rows[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    Ok(())
}

/// The identity dictionary file is a cache of what the rows say: opening
/// uses it, a damaged one is detected by its checksum and the graph is
/// rebuilt from the rows instead, never from bad bytes.
#[tokio::test]
async fn identity_dictionary_is_used_and_damage_is_detected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let expected = {
        let db = Database::open(dir.path())?;
        let s = db.session();
        s.sql("CREATE IDENTIFIER email (normalize = 'email')").await?;
        s.sql("CREATE TABLE c (a TEXT, b TEXT) WITH (identifiers = 'a AS email, b AS email')").await?;
        s.sql("INSERT INTO c VALUES ('x@a.com', 'y@a.com'), ('y@a.com', 'z@a.com'), ('q@a.com', NULL)").await?;
        let r = s.sql("SELECT a, profile_id FROM c ORDER BY a").await?;
        drop(s);
        db.close().await?;
        arrow::util::pretty::pretty_format_batches(&r)?.to_string()
    };
    let dict = dir.path().join(tessera_storage::DICTIONARY_FILE);
    anyhow::ensure!(dict.exists(), "close did not save the identity dictionary");
    let check = |db: Database| async move {
        let s = db.session();
        let r = s.sql("SELECT a, profile_id FROM c ORDER BY a").await?;
        anyhow::ensure!(arrow::util::pretty::pretty_format_batches(&r)?.to_string() == expected, "profiles changed");
        s.sql("RESOLVE IDENTITIES").await?;
        // Rows after the save are resolved on top of the saved dictionary.
        s.sql("INSERT INTO c VALUES ('z@a.com', 'w@a.com')").await?;
        drop(s);
        db.close().await?;
        Ok::<(), anyhow::Error>(())
    };
    check(Database::open(dir.path())?).await?;
    let len = std::fs::metadata(&dict)?.len();
    flip_byte(&dict, len - 3)?;
    let db = Database::open(dir.path())?;
    let s = db.session();
    let r = s.sql("SELECT count(DISTINCT profile_id) FROM c").await?;
    assert_eq!(r[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    s.sql("RESOLVE IDENTITIES").await?;
    Ok(())
}
