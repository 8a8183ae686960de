//! Traits, attributes and segments maintained incrementally, checked
//! against a model computed from scratch from the rows after every step:
//! random inserts, deletes, updates (which merge and split profiles),
//! clock advances, checkpoints and reopens. Plus the clock-driven exit and
//! the Rust subscription API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use proptest::prelude::*;
use tessera::{Clock, Database, ManualClock, Options, StoreOptions};

const DAY: i64 = 86_400_000_000;
/// 2026-01-01 00:00:00 UTC in microseconds.
const START: i64 = 1_767_225_600_000_000;

#[derive(Clone, Debug)]
enum Op {
    Person { a: u8, b: Option<u8>, name: Option<u8>, age_days: u8 },
    Order { c: u8, amount: u8, sku: u8, age_days: u8 },
    DeleteOrders { c: u8 },
    DeletePeople { a: u8 },
    UpdateOrders { c: u8, amount: u8 },
    Advance { days: u8 },
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..8, proptest::option::of(0u8..8), proptest::option::of(0u8..3), 0u8..60)
            .prop_map(|(a, b, name, age_days)| Op::Person { a, b, name, age_days }),
        6 => (0u8..8, 1u8..120, 0u8..4, 0u8..60).prop_map(|(c, amount, sku, age_days)| Op::Order { c, amount, sku, age_days }),
        1 => (0u8..8).prop_map(|c| Op::DeleteOrders { c }),
        1 => (0u8..8).prop_map(|a| Op::DeletePeople { a }),
        1 => (0u8..8, 1u8..120).prop_map(|(c, amount)| Op::UpdateOrders { c, amount }),
        1 => (1u8..40).prop_map(|days| Op::Advance { days }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

fn options(clock: &Arc<ManualClock>) -> Options {
    Options {
        storage: StoreOptions { flush_threshold_bytes: 8 * 1024, direct_segment_rows: 40, page_rows: 16, ..Default::default() },
        target_partitions: 2,
        clock: Some(clock.clone()),
        refresh_interval: Some(Duration::from_secs(1)),
    }
}

fn ts(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let dt = arrow::temporal_conversions::timestamp_s_to_datetime(secs).map(|d| d.to_string()).unwrap_or_default();
    format!("TIMESTAMP '{dt}'")
}

const SETUP: &[&str] = &[
    "CREATE IDENTIFIER v (max_per_profile = 1000, generic_limit = 100000)",
    "CREATE TABLE people (k BIGINT, a TEXT, b TEXT, name TEXT, ts TIMESTAMP) WITH (identifiers = 'a AS v, b AS v', time_column = 'ts')",
    "CREATE TABLE orders (k BIGINT, c TEXT, amount BIGINT, sku TEXT, ts TIMESTAMP) WITH (identifiers = 'c AS v', time_column = 'ts')",
    "CREATE TRAIT n AS count(*) FROM orders",
    "CREATE TRAIT total AS sum(amount) FROM orders",
    "CREATE TRAIT lo AS min(amount) FROM orders",
    "CREATE TRAIT hi AS max(amount) FROM orders",
    "CREATE TRAIT last_sku AS last(sku) FROM orders",
    "CREATE TRAIT first_sku AS first(sku) FROM orders",
    "CREATE TRAIT fav AS most_frequent(sku) FROM orders",
    "CREATE TRAIT skus AS count(DISTINCT sku) FROM orders",
    "CREATE TRAIT recent AS count(*) FROM orders WITHIN '30 days'",
    "CREATE PROFILE ATTRIBUTE label FROM people.name, orders.sku",
    "CREATE PROFILE ATTRIBUTE latest FROM people.name, orders.sku USING most_recent",
    "CREATE SEGMENT big AS SELECT profile_id FROM profiles WHERE total > 100",
    "CREATE SEGMENT repeat AS SELECT profile_id FROM orders GROUP BY profile_id HAVING count(*) >= 2",
    "CREATE SEGMENT big_once AS SELECT profile_id FROM profiles WHERE in_segment(profile_id, 'big') AND NOT in_segment(profile_id, 'repeat')",
    "CREATE SEGMENT active AS SELECT profile_id FROM profiles WHERE recent > 0",
    "CREATE SEGMENT above_average AS SELECT profile_id FROM profiles WHERE total >= (SELECT avg(total) FROM profiles)",
];

/// Expected per-profile values, computed from the rows.
#[derive(Debug, PartialEq, Default, Clone)]
struct Expected {
    n: i64,
    total: Option<i64>,
    lo: Option<i64>,
    hi: Option<i64>,
    last_sku: Option<String>,
    first_sku: Option<String>,
    fav: Option<String>,
    skus: i64,
    recent: i64,
    label: Option<String>,
    latest: Option<String>,
}

struct OrderRow {
    pid: i64,
    amount: i64,
    sku: String,
    ts: i64,
}

struct PersonRow {
    pid: i64,
    name: Option<String>,
    ts: i64,
}

async fn rows(db: &Database, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    Ok(db.session().sql(sql).await?)
}

async fn model(db: &Database, now: i64) -> anyhow::Result<BTreeMap<i64, Expected>> {
    let mut orders = Vec::new();
    for b in rows(db, "SELECT profile_id, amount, sku, ts FROM orders WHERE profile_id IS NOT NULL").await? {
        for i in 0..b.num_rows() {
            orders.push(OrderRow {
                pid: b.column(0).as_primitive::<Int64Type>().value(i),
                amount: b.column(1).as_primitive::<Int64Type>().value(i),
                sku: b.column(2).as_string_view_or_string(i),
                ts: micros(b.column(3), i),
            });
        }
    }
    let mut people = Vec::new();
    for b in rows(db, "SELECT profile_id, name, ts FROM people WHERE profile_id IS NOT NULL").await? {
        for i in 0..b.num_rows() {
            people.push(PersonRow {
                pid: b.column(0).as_primitive::<Int64Type>().value(i),
                name: (!b.column(1).is_null(i)).then(|| b.column(1).as_string_view_or_string(i)),
                ts: micros(b.column(2), i),
            });
        }
    }
    let mut out: BTreeMap<i64, Expected> = BTreeMap::new();
    for b in rows(db, "SELECT profile_id FROM profiles").await? {
        for p in b.column(0).as_primitive::<Int64Type>().values() {
            out.insert(*p, Expected::default());
        }
    }
    for (pid, e) in out.iter_mut() {
        let mine: Vec<&OrderRow> = orders.iter().filter(|o| o.pid == *pid).collect();
        e.n = mine.len() as i64;
        e.total = (!mine.is_empty()).then(|| mine.iter().map(|o| o.amount).sum());
        e.lo = mine.iter().map(|o| o.amount).min();
        e.hi = mine.iter().map(|o| o.amount).max();
        e.last_sku = mine.iter().max_by(|x, y| (x.ts, &x.sku).cmp(&(y.ts, &y.sku))).map(|o| o.sku.clone());
        e.first_sku = mine.iter().min_by(|x, y| (x.ts, &x.sku).cmp(&(y.ts, &y.sku))).map(|o| o.sku.clone());
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for o in &mine {
            *counts.entry(&o.sku).or_default() += 1;
        }
        // Most frequent, ties alphabetical (the map iterates in order).
        e.fav = counts.iter().fold(None::<(&str, i64)>, |best, (s, c)| match best {
            Some((_, bc)) if bc >= *c => best,
            _ => Some((s, *c)),
        }).map(|(s, _)| s.to_string());
        e.skus = counts.len() as i64;
        e.recent = mine.iter().filter(|o| o.ts >= now - 30 * DAY).count() as i64;
        // Candidates (rank, time, value) from both sources.
        let mut candidates: Vec<(i64, i64, String)> = Vec::new();
        for p in people.iter().filter(|p| p.pid == *pid) {
            if let Some(n) = &p.name {
                candidates.push((0, p.ts, n.clone()));
            }
        }
        for o in &mine {
            candidates.push((1, o.ts, o.sku.clone()));
        }
        // Source priority: best rank, then latest, then largest value.
        e.label = candidates.iter().min_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)).then(y.2.cmp(&x.2))).map(|c| c.2.clone());
        // Most recent: latest, then best rank, then largest value.
        e.latest = candidates.iter().min_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)).then(y.2.cmp(&x.2))).map(|c| c.2.clone());
    }
    Ok(out)
}

fn micros(a: &arrow::array::ArrayRef, i: usize) -> i64 {
    let t = arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None);
    let c = arrow::compute::cast(a, &t).unwrap_or_else(|_| a.clone());
    c.as_primitive::<TimestampMicrosecondType>().value(i)
}

trait TextAt {
    fn as_string_view_or_string(&self, i: usize) -> String;
}

impl TextAt for arrow::array::ArrayRef {
    fn as_string_view_or_string(&self, i: usize) -> String {
        let c = arrow::compute::cast(self, &arrow::datatypes::DataType::Utf8).unwrap_or_else(|_| self.clone());
        c.as_string::<i32>().value(i).to_string()
    }
}

fn expected_members(e: &BTreeMap<i64, Expected>) -> BTreeMap<&'static str, BTreeSet<i64>> {
    let totals: Vec<i64> = e.values().filter_map(|x| x.total).collect();
    let avg = (!totals.is_empty()).then(|| totals.iter().sum::<i64>() as f64 / totals.len() as f64);
    let pick = |f: &dyn Fn(&Expected) -> bool| -> BTreeSet<i64> { e.iter().filter(|(_, x)| f(x)).map(|(p, _)| *p).collect() };
    let mut out = BTreeMap::new();
    out.insert("big", pick(&|x| x.total.is_some_and(|t| t > 100)));
    out.insert("repeat", pick(&|x| x.n >= 2));
    out.insert("big_once", pick(&|x| x.total.is_some_and(|t| t > 100) && x.n < 2));
    out.insert("active", pick(&|x| x.recent > 0));
    out.insert("above_average", pick(&|x| matches!((x.total, avg), (Some(t), Some(a)) if t as f64 >= a)));
    out
}

async fn actual(db: &Database) -> anyhow::Result<BTreeMap<i64, Expected>> {
    let mut out = BTreeMap::new();
    let sql = "SELECT profile_id, n, total, lo, hi, last_sku, first_sku, fav, skus, recent, label, latest FROM profiles";
    for b in rows(db, sql).await? {
        let int = |c: usize, i: usize| (!b.column(c).is_null(i)).then(|| b.column(c).as_primitive::<Int64Type>().value(i));
        let text = |c: usize, i: usize| (!b.column(c).is_null(i)).then(|| b.column(c).as_string_view_or_string(i));
        for i in 0..b.num_rows() {
            out.insert(
                int(0, i).unwrap_or(0),
                Expected {
                    n: int(1, i).unwrap_or(-1),
                    total: int(2, i),
                    lo: int(3, i),
                    hi: int(4, i),
                    last_sku: text(5, i),
                    first_sku: text(6, i),
                    fav: text(7, i),
                    skus: int(8, i).unwrap_or(-1),
                    recent: int(9, i).unwrap_or(-1),
                    label: text(10, i),
                    latest: text(11, i),
                },
            );
        }
    }
    Ok(out)
}

/// The change log nets to the members: per segment and profile, entries
/// minus exits is 1 for members and 0 for the rest.
async fn check_log(db: &Database, segment: &str, members: &BTreeSet<i64>) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT profile_id, sum(CASE WHEN change = 'entered' THEN 1 ELSE -1 END) FROM segment_changes WHERE segment = '{segment}' GROUP BY profile_id"
    );
    let mut net = BTreeSet::new();
    for b in rows(db, &sql).await? {
        for i in 0..b.num_rows() {
            let (p, n) = (b.column(0).as_primitive::<Int64Type>().value(i), b.column(1).as_primitive::<Int64Type>().value(i));
            anyhow::ensure!(n == 0 || n == 1, "segment {segment}: profile {p} has net {n} entries in the log");
            if n == 1 {
                net.insert(p);
            }
        }
    }
    anyhow::ensure!(&net == members, "segment {segment}: log says {net:?}, members are {members:?}");
    Ok(())
}

async fn check(db: &Database, now: i64) -> anyhow::Result<()> {
    let expected = model(db, now).await?;
    let got = actual(db).await?;
    for (pid, e) in &expected {
        let g = got.get(pid);
        anyhow::ensure!(g == Some(e), "profile {pid}: expected {e:?}, maintained {g:?}");
    }
    anyhow::ensure!(got.len() == expected.len(), "profiles differ: {:?} vs {:?}", got.keys(), expected.keys());
    for (segment, members) in expected_members(&expected) {
        let found: BTreeSet<i64> = db.segment_members(segment)?.into_iter().collect();
        anyhow::ensure!(found == members, "segment {segment}: expected {members:?}, maintained {found:?}");
        check_log(db, segment, &members).await?;
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(START));
    let mut db = Database::open_with(dir.path(), options(&clock))?;
    for s in SETUP {
        db.session().sql(s).await?;
    }
    let mut next = 0i64;
    for op in ops {
        let now = clock.now_micros();
        let s = db.session();
        match op {
            Op::Person { a, b, name, age_days } => {
                next += 1;
                let b = b.map(|b| format!("'V{b}'")).unwrap_or_else(|| "NULL".into());
                let name = name.map(|n| format!("'N{n}'")).unwrap_or_else(|| "NULL".into());
                s.sql(&format!("INSERT INTO people VALUES ({next}, 'V{a}', {b}, {name}, {})", ts(now - i64::from(age_days) * DAY))).await?;
            }
            Op::Order { c, amount, sku, age_days } => {
                next += 1;
                s.sql(&format!("INSERT INTO orders VALUES ({next}, 'V{c}', {amount}, 'S{sku}', {})", ts(now - i64::from(age_days) * DAY)))
                    .await?;
            }
            Op::DeleteOrders { c } => {
                s.sql(&format!("DELETE FROM orders WHERE c = 'V{c}'")).await?;
            }
            Op::DeletePeople { a } => {
                s.sql(&format!("DELETE FROM people WHERE a = 'V{a}'")).await?;
            }
            Op::UpdateOrders { c, amount } => {
                s.sql(&format!("UPDATE orders SET amount = {amount} WHERE c = 'V{c}'")).await?;
            }
            Op::Advance { days } => {
                clock.advance(Duration::from_secs(u64::from(days) * 86_400));
            }
            Op::Checkpoint => {
                s.sql("CHECKPOINT").await?;
            }
            Op::Reopen => {
                drop(s);
                db.close().await?;
                db = Database::open_with(dir.path(), options(&clock))?;
            }
        }
        db.maintain().await?;
        check(&db, clock.now_micros()).await?;
    }
    // A full re-evaluation finds nothing to change.
    let before = rows(&db, "SELECT count(*) FROM segment_changes").await?;
    db.session().sql("REFRESH SEGMENTS").await?;
    let after = rows(&db, "SELECT count(*) FROM segment_changes").await?;
    anyhow::ensure!(before == after, "REFRESH SEGMENTS changed memberships the maintenance had kept");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
    ))]

    #[test]
    fn maintained_profiles_match_recomputation(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}

/// Time passing alone takes people out of a segment (no event), and a
/// subscriber sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_moves_people_out_and_subscribers_see_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(START));
    let db = Database::open_with(dir.path(), options(&clock))?;
    let s = db.session();
    for sql in [
        "CREATE IDENTIFIER email (normalize = 'email')",
        "CREATE TABLE orders (email TEXT, amount DOUBLE, ordered_at TIMESTAMP) WITH (identifiers = 'email AS email', time_column = 'ordered_at')",
        "CREATE TRAIT ltv AS sum(amount) FROM orders",
        "CREATE TRAIT last_order AS max(ordered_at) FROM orders",
        "CREATE SEGMENT high_value AS SELECT profile_id FROM profiles WHERE ltv > 500 AND last_order >= now() - INTERVAL '90 days'",
    ] {
        s.sql(sql).await?;
    }
    let mut feed = db.subscribe_segment("high_value", true)?;
    s.sql(&format!("INSERT INTO orders VALUES ('a@x.com', 600, {}), ('b@x.com', 100, {})", ts(START - DAY), ts(START - DAY))).await?;
    let entered = feed.next().await?.ok_or_else(|| anyhow::anyhow!("feed ended"))?;
    assert_eq!((entered.change, entered.cause), (tessera::Change::Entered, tessera::Cause::Data));
    let anna = entered.profile_id;
    assert_eq!(db.segment_members("high_value")?, vec![anna]);

    // 89 days later she is still in; 91 days later she is out, with no
    // new row, cause clock.
    clock.advance(Duration::from_secs(88 * 86_400));
    db.maintain().await?;
    assert_eq!(db.segment_members("high_value")?, vec![anna]);
    clock.advance(Duration::from_secs(3 * 86_400));
    db.maintain().await?;
    assert!(db.segment_members("high_value")?.is_empty());
    let exited = feed.next().await?.ok_or_else(|| anyhow::anyhow!("feed ended"))?;
    assert_eq!((exited.profile_id, exited.change, exited.cause), (anna, tessera::Change::Exited, tessera::Cause::Clock));
    let logged = s.sql("SELECT change, cause FROM segment_changes ORDER BY at").await?;
    let formatted = arrow::util::pretty::pretty_format_batches(&logged)?.to_string();
    assert!(formatted.contains("exited") && formatted.contains("clock"), "{formatted}");

    // Dropping the segment ends the feed after the exits.
    s.sql(&format!("INSERT INTO orders VALUES ('b@x.com', 900, {})", ts(clock.now_micros()))).await?;
    let b = feed.next().await?.ok_or_else(|| anyhow::anyhow!("feed ended"))?;
    assert_eq!(b.change, tessera::Change::Entered);
    s.sql("DROP SEGMENT high_value").await?;
    let gone = feed.next().await?.ok_or_else(|| anyhow::anyhow!("feed ended before the exit"))?;
    assert_eq!((gone.profile_id, gone.change, gone.cause), (b.profile_id, tessera::Change::Exited, tessera::Cause::Definition));
    assert!(feed.next().await?.is_none());
    Ok(())
}
