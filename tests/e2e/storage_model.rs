//! Property test: the storage layer against a simple in-memory model,
//! through random appends, deletes, flushes, compactions and reopens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt64Type};
use proptest::prelude::*;
use tessera_storage::{ColumnDef, RowIdSet, Store, StoreOptions, ROW_ID_COLUMN};

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` rows (values derived from a counter) to table `t`.
    Append { t: usize, n: usize, with_null: bool },
    /// Delete rows of table `t` whose value is ≡ `r` mod `m`.
    Delete { t: usize, m: i64, r: i64 },
    /// Two appends and a delete in one transaction.
    Mixed { t: usize, n: usize, m: i64 },
    /// `parts` appends of `n` rows to table `t` in one transaction, enough
    /// to spill some to segment files before the commit; `commit: false`
    /// abandons it (nothing may stay, on disk or visible).
    Load { t: usize, n: usize, parts: usize, commit: bool },
    Flush,
    Compact { t: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 1..120usize, any::<bool>()).prop_map(|(t, n, with_null)| Op::Append { t, n, with_null }),
        3 => (0..2usize, 2..6i64, 0..2i64).prop_map(|(t, m, r)| Op::Delete { t, m, r }),
        // Two appends of up to 59 rows: past `direct_segment_rows` they start
        // streaming to a segment file, which the delete then takes back.
        2 => (0..2usize, 1..60usize, 3..7i64).prop_map(|(t, n, m)| Op::Mixed { t, n, m }),
        2 => (0..2usize, 20..90usize, 2..6usize, any::<bool>()).prop_map(|(t, n, parts, commit)| Op::Load { t, n, parts, commit }),
        2 => Just(Op::Flush),
        1 => (0..2usize).prop_map(|t| Op::Compact { t }),
        2 => Just(Op::Reopen),
    ]
}

const TABLES: [&str; 2] = ["a", "b"];

fn options() -> StoreOptions {
    StoreOptions {
        flush_threshold_bytes: 16 * 1024,
        direct_segment_rows: 100,
        spill_rows: 120,
        zstd_level: 1,
        page_rows: 7,
        page_cache_bytes: 16 * 1024,
        small_segment_rows: 200,
        max_small_segments: 3,
    }
}

/// Model: per table, row id → (value, label).
type Model = Vec<BTreeMap<u64, (i64, Option<String>)>>;

struct Harness {
    dir: Option<tempfile::TempDir>,
    store: Store,
    model: Model,
    counter: i64,
}

impl Harness {
    fn new(on_disk: bool) -> anyhow::Result<Self> {
        let (dir, store) = if on_disk {
            let dir = tempfile::tempdir()?;
            let store = Store::open(dir.path(), options())?;
            (Some(dir), store)
        } else {
            (None, Store::in_memory(options()))
        };
        for name in TABLES {
            let columns = vec![
                ColumnDef::new("v", DataType::Int64, false),
                ColumnDef::new("label", DataType::Utf8, true),
            ];
            store.create_table(name, columns, BTreeMap::new())?;
        }
        Ok(Harness { dir, store, model: vec![BTreeMap::new(), BTreeMap::new()], counter: 0 })
    }

    fn batch(&mut self, n: usize, with_null: bool) -> anyhow::Result<(RecordBatch, Vec<(i64, Option<String>)>)> {
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            self.counter += 1;
            let label = if with_null && i % 3 == 0 { None } else { Some(format!("row-{}", self.counter)) };
            rows.push((self.counter, label));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("label", DataType::Utf8, true),
        ]));
        let v = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
        let l: StringArray = rows.iter().map(|r| r.1.clone()).collect();
        Ok((RecordBatch::try_new(schema, vec![Arc::new(v), Arc::new(l)])?, rows))
    }

    fn doomed(&self, t: usize, m: i64, r: i64) -> RowIdSet {
        self.model[t].iter().filter(|(_, (v, _))| v % m == r).map(|(id, _)| *id).collect()
    }

    fn apply(&mut self, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::Append { t, n, with_null } => {
                let (batch, rows) = self.batch(*n, *with_null)?;
                let mut txn = self.store.begin_write()?;
                let first = txn.append(TABLES[*t], batch)?;
                txn.commit()?;
                for (i, row) in rows.into_iter().enumerate() {
                    self.model[*t].insert(first + i as u64, row);
                }
            }
            Op::Delete { t, m, r } => {
                let ids = self.doomed(*t, *m, *r);
                let mut txn = self.store.begin_write()?;
                let n = txn.delete(TABLES[*t], &ids)?;
                txn.commit()?;
                assert_eq!(n, ids.len(), "delete count");
                for id in ids {
                    self.model[*t].remove(&id);
                }
            }
            Op::Mixed { t, n, m } => {
                let (b1, r1) = self.batch(*n, false)?;
                let (b2, r2) = self.batch(*n, true)?;
                let ids = self.doomed(*t, *m, 0);
                let mut txn = self.store.begin_write()?;
                let f1 = txn.append(TABLES[*t], b1)?;
                let f2 = txn.append(TABLES[*t], b2)?;
                txn.delete(TABLES[*t], &ids)?;
                txn.commit()?;
                for id in ids {
                    self.model[*t].remove(&id);
                }
                for (i, row) in r1.into_iter().enumerate() {
                    self.model[*t].insert(f1 + i as u64, row);
                }
                for (i, row) in r2.into_iter().enumerate() {
                    self.model[*t].insert(f2 + i as u64, row);
                }
            }
            Op::Load { t, n, parts, commit } => {
                let files_before = self.segment_files();
                let mut txn = self.store.begin_write()?;
                let mut added = Vec::new();
                for _ in 0..*parts {
                    let (batch, rows) = self.batch(*n, true)?;
                    let first = txn.append(TABLES[*t], batch)?;
                    added.extend(rows.into_iter().enumerate().map(|(i, row)| (first + i as u64, row)));
                }
                if *commit {
                    let info = txn.commit()?;
                    assert_eq!(info.rows_appended, (*n * *parts) as u64, "rows appended");
                    self.model[*t].extend(added);
                } else {
                    drop(txn);
                    assert_eq!(self.segment_files(), files_before, "an abandoned transaction left segment files");
                }
            }
            Op::Flush => self.store.flush()?,
            Op::Compact { t } => self.store.compact(TABLES[*t])?,
            Op::Reopen => {
                if let Some(dir) = &self.dir {
                    let path = dir.path().to_path_buf();
                    // Drop without flushing: the next open replays the log.
                    let old = std::mem::replace(&mut self.store, Store::in_memory(options()));
                    drop(old);
                    self.store = Store::open(&path, options())?;
                }
            }
        }
        Ok(())
    }

    /// The segment files in the database directory (none in memory).
    fn segment_files(&self) -> BTreeSet<String> {
        let Some(dir) = &self.dir else { return BTreeSet::new() };
        std::fs::read_dir(dir.path())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".tseg"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check(&self) -> anyhow::Result<()> {
        let snap = self.store.snapshot();
        let columns = vec![ROW_ID_COLUMN.to_string(), "v".to_string(), "label".to_string()];
        for (t, name) in TABLES.iter().enumerate() {
            let table = snap.table(name).ok_or_else(|| anyhow::anyhow!("table {name} missing"))?;
            let mut seen = BTreeMap::new();
            for unit in table.scan_units() {
                let batch = unit.read(&columns)?;
                let ids = batch.column(0).as_primitive::<UInt64Type>();
                let vs = batch.column(1).as_primitive::<Int64Type>();
                let ls = batch.column(2).as_string::<i32>();
                for i in 0..batch.num_rows() {
                    let label = (!ls.is_null(i)).then(|| ls.value(i).to_string());
                    let dup = seen.insert(ids.value(i), (vs.value(i), label));
                    assert!(dup.is_none(), "row id {} returned twice", ids.value(i));
                }
            }
            assert_eq!(seen, self.model[t], "table {name} differs from the model");
            assert_eq!(table.row_count(), self.model[t].len() as u64, "row count of {name}");
        }
        Ok(())
    }
}

fn run(ops: &[Op], on_disk: bool) -> anyhow::Result<()> {
    let mut h = Harness::new(on_disk)?;
    for op in ops {
        h.apply(op)?;
        h.check()?;
    }
    // Deleted rows are physically gone after compaction.
    if on_disk {
        for name in TABLES {
            h.store.compact(name)?;
        }
        let snap = h.store.snapshot();
        for name in TABLES {
            let t = snap.table(name).ok_or_else(|| anyhow::anyhow!("table {name} missing"))?;
            assert_eq!(t.deleted_count(), 0, "deleted ids left after compaction of {name}");
            assert!(t.segment_count() <= 1);
        }
        h.check()?;
    }
    Ok(())
}

proptest! {
    // 24 cases in CI; PROPTEST_CASES=N for a deeper run by hand.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn storage_matches_model_on_disk(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, true).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }

    #[test]
    fn storage_matches_model_in_memory(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, false).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}

/// A transaction that has spilled appended rows to segment files cannot
/// also delete: the refusal names the limit (not a bug), and the
/// transaction, abandoned, leaves nothing behind.
#[test]
fn deleting_after_a_spill_is_refused_as_a_limit() -> anyhow::Result<()> {
    let mut h = Harness::new(true)?;
    h.apply(&Op::Append { t: 0, n: 10, with_null: false })?;
    let files_before = h.segment_files();
    let ids = h.doomed(0, 2, 0);
    let mut txn = h.store.begin_write()?;
    for _ in 0..3 {
        let (batch, _) = h.batch(60, false)?;
        txn.append(TABLES[0], batch)?;
    }
    let err = txn.delete(TABLES[0], &ids).expect_err("refused");
    assert!(matches!(err, tessera_storage::StorageError::LimitExceeded(_)), "{err}");
    assert!(err.to_string().contains("cannot also delete; delete first"), "{err}");
    drop(txn);
    assert_eq!(h.segment_files(), files_before, "the abandoned transaction left segment files");
    h.check()?;
    Ok(())
}

/// A transaction whose appends started streaming to a segment file
/// (past `direct_segment_rows`) but never filled one (`spill_rows`) can
/// still delete: its file is read back, removed, and the transaction
/// commits through the log with every row.
#[test]
fn deleting_after_an_early_spill_takes_it_back() -> anyhow::Result<()> {
    let mut h = Harness::new(true)?;
    h.apply(&Op::Append { t: 0, n: 10, with_null: false })?;
    let files_before = h.segment_files();
    let ids = h.doomed(0, 2, 0);
    let mut txn = h.store.begin_write()?;
    let mut added = Vec::new();
    for _ in 0..2 {
        let (batch, rows) = h.batch(55, true)?;
        let first = txn.append(TABLES[0], batch)?;
        added.push((first, rows));
    }
    assert_eq!(txn.spilled_rows(), 110, "past direct_segment_rows, appends stream to a segment file");
    assert_eq!(txn.delete(TABLES[0], &ids)?, ids.len());
    assert_eq!(txn.spilled_rows(), 0, "the delete took the rows back");
    assert_eq!(h.segment_files(), files_before, "and removed the file");
    txn.commit()?;
    for id in ids {
        h.model[0].remove(&id);
    }
    for (first, rows) in added {
        for (i, row) in rows.into_iter().enumerate() {
            h.model[0].insert(first + i as u64, row);
        }
    }
    h.check()?;
    h.apply(&Op::Reopen)?;
    h.check()?;
    Ok(())
}

/// A load streams into segment files of at most `spill_rows` rows each,
/// in row-id order, whatever the sizes of the batches appended.
#[test]
fn streamed_segments_hold_at_most_spill_rows() -> anyhow::Result<()> {
    let mut h = Harness::new(true)?;
    let files_before = h.segment_files();
    let mut txn = h.store.begin_write()?;
    let mut added = Vec::new();
    for n in [30, 250, 7, 119] {
        let (batch, rows) = h.batch(n, false)?;
        let first = txn.append(TABLES[1], batch)?;
        added.push((first, rows));
    }
    txn.commit()?;
    for (first, rows) in added {
        for (i, row) in rows.into_iter().enumerate() {
            h.model[1].insert(first + i as u64, row);
        }
    }
    h.check()?;
    let snap = h.store.snapshot();
    let table = snap.table(TABLES[1]).expect("table");
    let sizes: Vec<u64> = table.segment_rows();
    assert_eq!(sizes.iter().sum::<u64>(), 406, "{sizes:?}");
    assert!(sizes.iter().all(|&rows| rows <= 120), "{sizes:?}");
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    assert_eq!(h.segment_files().len(), files_before.len() + 4);
    Ok(())
}

/// Row ids survive flush and compaction unchanged.
#[test]
fn row_ids_are_stable() -> anyhow::Result<()> {
    let mut h = Harness::new(true)?;
    h.apply(&Op::Append { t: 0, n: 50, with_null: false })?;
    let before: BTreeSet<u64> = h.model[0].keys().copied().collect();
    h.apply(&Op::Flush)?;
    h.apply(&Op::Delete { t: 0, m: 2, r: 0 })?;
    h.apply(&Op::Compact { t: 0 })?;
    h.check()?;
    let after: BTreeSet<u64> = h.model[0].keys().copied().collect();
    assert!(after.is_subset(&before));
    assert_eq!(after.len(), 25);
    Ok(())
}
