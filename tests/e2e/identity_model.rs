//! Property test: identity resolution through the SQL surface against a
//! brute-force connected-components model, with random inserts, deletes,
//! updates, checkpoints and reopens; profile ids must survive reopen.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use proptest::prelude::*;
use tessera::{Database, Options, StoreOptions};

#[derive(Clone, Debug)]
enum Op {
    InsertPair { a: Option<u8>, b: Option<u8> },
    InsertSingle { c: Option<u8> },
    DeletePairs { a: u8 },
    DeleteSingles { c: u8 },
    UpdatePairs { a: u8, b: Option<u8> },
    Checkpoint,
    Reopen,
}

/// 12 real values; 12 and 13 are junk the rules refuse.
fn value(v: Option<u8>) -> String {
    match v {
        None => "NULL".into(),
        Some(12) => "'null'".into(),
        Some(13) => "'   '".into(),
        Some(x) => format!("' V{x} '"),
    }
}

fn real(v: Option<u8>) -> Option<u8> {
    v.filter(|x| *x < 12)
}

fn op() -> impl Strategy<Value = Op> {
    let v = proptest::option::weighted(0.9, 0u8..14);
    prop_oneof![
        6 => (v.clone(), v.clone()).prop_map(|(a, b)| Op::InsertPair { a, b }),
        3 => v.clone().prop_map(|c| Op::InsertSingle { c }),
        2 => (0u8..12).prop_map(|a| Op::DeletePairs { a }),
        1 => (0u8..12).prop_map(|c| Op::DeleteSingles { c }),
        1 => (0u8..12, v).prop_map(|(a, b)| Op::UpdatePairs { a, b }),
        1 => Just(Op::Checkpoint),
        2 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// key -> (a, b) of live pair rows, and key -> c of live single rows.
    pairs: BTreeMap<i64, (Option<u8>, Option<u8>)>,
    singles: BTreeMap<i64, Option<u8>>,
}

impl Model {
    /// Component label of each value (brute-force union-find).
    fn components(&self) -> HashMap<u8, u8> {
        let mut parent: Vec<u8> = (0..12).collect();
        fn find(p: &mut Vec<u8>, mut x: u8) -> u8 {
            while p[x as usize] != x {
                x = p[x as usize];
            }
            x
        }
        for (a, b) in self.pairs.values() {
            if let (Some(a), Some(b)) = (real(*a), real(*b)) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra as usize] = rb;
            }
        }
        (0..12).map(|v| (v, find(&mut parent, v))).collect()
    }

    /// Which model component each row belongs to (None: no identifier).
    fn row_components(&self) -> BTreeMap<(u8, i64), Option<u8>> {
        let comp = self.components();
        let mut out = BTreeMap::new();
        for (k, (a, b)) in &self.pairs {
            out.insert((0, *k), real(*a).or(real(*b)).map(|v| comp[&v]));
        }
        for (k, c) in &self.singles {
            out.insert((1, *k), real(*c).map(|v| comp[&v]));
        }
        out
    }
}

fn options() -> Options {
    Options {
        storage: StoreOptions { flush_threshold_bytes: 8 * 1024, direct_segment_rows: 40, page_rows: 16, ..Default::default() },
        target_partitions: 2,
        ..Default::default()
    }
}

async fn profile_ids(db: &Database) -> anyhow::Result<BTreeMap<(u8, i64), Option<i64>>> {
    let s = db.session();
    let mut out = BTreeMap::new();
    for (t, table) in [(0u8, "pairs"), (1u8, "singles")] {
        for b in s.sql(&format!("SELECT k, profile_id FROM {table}")).await? {
            let k = b.column(0).as_primitive::<Int64Type>();
            let p = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.insert((t, k.value(i)), (!p.is_null(i)).then(|| p.value(i)));
            }
        }
    }
    Ok(out)
}

/// Rows share a profile exactly when they share a model component.
fn check(model: &Model, actual: &BTreeMap<(u8, i64), Option<i64>>) -> Result<(), String> {
    let expected = model.row_components();
    let keys: Vec<_> = expected.keys().collect();
    if keys != actual.keys().collect::<Vec<_>>() {
        return Err(format!("rows differ: model {keys:?}, database {:?}", actual.keys().collect::<Vec<_>>()));
    }
    let mut by_component: HashMap<u8, i64> = HashMap::new();
    let mut by_profile: HashMap<i64, u8> = HashMap::new();
    for (key, comp) in &expected {
        let pid = actual[key];
        match (comp, pid) {
            (None, None) => {}
            (Some(c), Some(p)) => {
                if *by_component.entry(*c).or_insert(p) != p || *by_profile.entry(p).or_insert(*c) != *c {
                    return Err(format!("row {key:?}: component {c} and profile {p} do not correspond"));
                }
            }
            _ => return Err(format!("row {key:?}: model component {comp:?}, profile {pid:?}")),
        }
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut db = Database::open_with(dir.path(), options())?;
    let s = db.session();
    s.sql("CREATE IDENTIFIER v (max_per_profile = 1000, generic_limit = 100000)").await?;
    s.sql("CREATE TABLE pairs (k BIGINT, a TEXT, b TEXT) WITH (identifiers = 'a AS v, b AS v')").await?;
    s.sql("CREATE TABLE singles (k BIGINT, c TEXT) WITH (identifiers = 'c AS v')").await?;
    drop(s);
    let mut model = Model::default();
    let mut next = 0i64;
    for op in ops {
        let s = db.session();
        match op {
            Op::InsertPair { a, b } => {
                next += 1;
                s.sql(&format!("INSERT INTO pairs VALUES ({next}, {}, {})", value(a), value(b))).await?;
                model.pairs.insert(next, (a, b));
            }
            Op::InsertSingle { c } => {
                next += 1;
                s.sql(&format!("INSERT INTO singles VALUES ({next}, {})", value(c))).await?;
                model.singles.insert(next, c);
            }
            Op::DeletePairs { a } => {
                s.sql(&format!("DELETE FROM pairs WHERE a = {}", value(Some(a)))).await?;
                model.pairs.retain(|_, (x, _)| *x != Some(a));
            }
            Op::DeleteSingles { c } => {
                s.sql(&format!("DELETE FROM singles WHERE c = {}", value(Some(c)))).await?;
                model.singles.retain(|_, x| *x != Some(c));
            }
            Op::UpdatePairs { a, b } => {
                s.sql(&format!("UPDATE pairs SET b = {} WHERE a = {}", value(b), value(Some(a)))).await?;
                for (x, y) in model.pairs.values_mut() {
                    if *x == Some(a) {
                        *y = b;
                    }
                }
            }
            Op::Checkpoint => {
                s.sql("CHECKPOINT").await?;
            }
            Op::Reopen => {
                let before = profile_ids(&db).await?;
                drop(s);
                db.close().await?;
                db = Database::open_with(dir.path(), options())?;
                let after = profile_ids(&db).await?;
                anyhow::ensure!(before == after, "profile ids changed across reopen: {before:?} vs {after:?}");
            }
        }
        let actual = profile_ids(&db).await?;
        check(&model, &actual).map_err(|e| anyhow::anyhow!(e))?;
    }
    db.session().sql("RESOLVE IDENTITIES").await?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
    ))]

    #[test]
    fn identity_matches_connected_components(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
