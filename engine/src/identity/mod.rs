//! Identity resolution: identifier types, the identity graph kept current
//! at every commit, and its durable form.
//!
//! Durability without a file of its own: every decision is stored in the
//! rows of the same transaction. A source row carries, in hidden columns,
//! the node id of each identifier (`_idnode_<column>`), which of them it
//! linked (`_idlink`, a bit mask) and when (`_idseen`); every profile
//! event (created, merged, split, moved, deleted) is a row of the hidden
//! table `_cdp_profile_events`, and every refusal a row of
//! `identity_rejections`. So after a crash the graph is exactly what the
//! surviving rows say: it is rebuilt from them on open (components do not
//! depend on the order rows are read in; profile ids come from the event
//! log in order).

pub(crate) mod dict;
pub(crate) mod graph;
pub(crate) mod normalize;
mod prepare;
pub(crate) mod resolve;
pub(crate) mod spec;
pub(crate) mod system;
mod writer;
pub(crate) use writer::{commit, IdWriter, LoggedEvent, Rejections};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, UInt32Type, UInt64Type};
use parking_lot::RwLock;
use tessera_storage::{ColumnDef, Snapshot, Store, TableMeta, WriteTxn, ROW_ID_COLUMN};

use crate::error::{Error, Result};
use graph::{Graph, NodeId, ProfileId, Rules, TypeId};
use normalize::{key_of, Normalized, Normalizer};
pub(crate) use prepare::{PreparedBatch, Preparer};
use prepare::{prepare_cached, Prepared, SharedPhoneCache};
use spec::{IdentifierSpec, TableIdentity, MAX_IDENTIFIERS_PER_PROFILE, NEXT_TYPE_ID_KEY, TYPE_KEY_PREFIX};

/// Hidden table of profile events (the merge log and the anchors).
pub const EVENTS_TABLE: &str = "_cdp_profile_events";
/// Table of refused identifier values.
pub const REJECTIONS_TABLE: &str = "identity_rejections";
/// Names users cannot take for their own tables.
pub const RESERVED_NAMES: &[&str] =
    &[EVENTS_TABLE, REJECTIONS_TABLE, "profiles", "profile_identifiers", "profile_merges", crate::profiles::CHANGES_TABLE, "profile_segments", "profile_traits"];

/// A compiled identifier type.
pub(crate) struct TypeInfo {
    pub spec: IdentifierSpec,
    pub normalizer: Normalizer,
}

/// Everything identity resolution knows, behind one lock.
pub(crate) struct State {
    pub graph: Graph,
    pub types: BTreeMap<String, Arc<TypeInfo>>,
    pub by_id: HashMap<TypeId, Arc<TypeInfo>>,
    pub rules: Rules,
    /// Set when the graph could not be rebuilt after a failed commit;
    /// queries that need it fail until the database is reopened.
    pub broken: Option<String>,
    /// Normalized phone numbers by type, keyed by their digits; shared
    /// with the preparers of loads (each table of a multi-source load
    /// mostly repeats the phones of the others). Replaced, not cleared,
    /// when the types change: a preparer still holding the old one
    /// prepares batches the writer will not use.
    phone_cache: SharedPhoneCache,
}


impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityState")
            .field("identifiers", &self.graph.node_count())
            .field("profiles", &self.graph.profile_count())
            .finish()
    }
}

impl State {
    fn empty() -> State {
        State {
            graph: Graph::new(),
            types: BTreeMap::new(),
            by_id: HashMap::new(),
            rules: Rules { types: Vec::new(), max_identifiers: MAX_IDENTIFIERS_PER_PROFILE },
            broken: None,
            phone_cache: SharedPhoneCache::default(),
        }
    }

    pub fn check_usable(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::Internal(format!("identity graph unavailable until the database is reopened: {why}"))),
            None => Ok(()),
        }
    }

    fn set_types(&mut self, specs: Vec<IdentifierSpec>) -> Result<()> {
        self.phone_cache = SharedPhoneCache::default();
        self.types.clear();
        self.by_id.clear();
        self.rules.types.clear();
        for spec in specs {
            let info = Arc::new(TypeInfo { normalizer: spec.normalizer()?, spec });
            let id = info.spec.id as usize;
            if self.rules.types.len() <= id {
                self.rules.types.resize(id + 1, None);
            }
            self.rules.types[id] = Some(info.spec.rules());
            self.by_id.insert(info.spec.id, info.clone());
            self.types.insert(info.spec.name.clone(), info);
        }
        Ok(())
    }

    pub fn type_named(&self, name: &str) -> Result<&Arc<TypeInfo>> {
        self.types
            .get(name)
            .ok_or_else(|| Error::user(format!("unknown identifier type '{name}'")))
    }

    /// Normalize and hash a raw value; phone numbers go through a cache
    /// of their digits, since checking one is far slower than a lookup.
    fn prepare(&self, info: &TypeInfo, raw: &str) -> Prepared {
        prepare_cached(&self.phone_cache, info, raw)
    }

    /// Normalize a raw value of a type to its node, if the graph has it.
    pub fn node_for(&self, type_name: &str, raw: &str) -> Result<Option<NodeId>> {
        let info = self.type_named(type_name)?;
        match info.normalizer.normalize(raw, &info.spec.blocked) {
            Normalized::Value(v) => Ok(self.graph.lookup(&key_of(info.spec.id, &v))),
            _ => Ok(None),
        }
    }
}

/// Rows appended to a table with identifiers by one commit.
#[derive(Debug)]
pub(crate) struct AppendedRows {
    pub meta: Arc<TableMeta>,
    pub first_row_id: u64,
    /// The rows with their hidden identity columns; `None` when the commit
    /// was too large to keep (consumers then recompute from the table).
    pub batch: Option<RecordBatch>,
}

/// What one commit changed about profiles, for the maintenance of
/// computed columns and segments (which runs after the commit). The ids
/// are as gathered, unsorted and with repeats: a load merges profiles
/// millions of times, and a database without computed columns or
/// segments drops its notices unread, so ordering them (once, by
/// maintenance) is left to whoever reads them, off the commit's path.
#[derive(Debug, Default)]
pub(crate) struct CommitNotice {
    pub appended: Vec<AppendedRows>,
    /// Profiles whose rows were deleted, merged, split, or otherwise
    /// changed in a way new rows alone do not describe.
    pub affected: Vec<ProfileId>,
    pub merged: Vec<ProfileId>,
    pub split: Vec<ProfileId>,
}

/// Rows of one commit kept for delta maintenance, at most.
const NOTICE_ROWS_LIMIT: usize = 200_000;
/// Events a writer logs before appending them to its transaction (a
/// row group's worth).
const EVENTS_FLUSH_ROWS: usize = 64 * 1024;

/// The identity subsystem of one database.
pub(crate) struct Identity {
    store: Store,
    state: Arc<RwLock<State>>,
    /// Commits not yet seen by profile maintenance.
    notices: Arc<parking_lot::Mutex<Vec<CommitNotice>>>,
    /// Nodes in the saved dictionary file.
    saved_nodes: parking_lot::Mutex<usize>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish()
    }
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn secs(micros: i64) -> u32 {
    (micros / 1_000_000).clamp(1, u32::MAX as i64) as u32
}

impl Identity {
    /// Load the identity state from the rows of a store.
    pub fn open(store: Store) -> Result<Identity> {
        let dictionary = match store.read_identity_dictionary() {
            Ok(d) => d,
            // A cache: when damaged, rebuild from the rows (slower) and say so.
            Err(e) => {
                eprintln!("tessera: identity dictionary unusable ({e}); rebuilding it from the rows");
                None
            }
        };
        let saved = dictionary.as_ref().map(|d| d.len()).unwrap_or(0);
        let state = build_state(&store.snapshot(), dictionary)?;
        Ok(Identity {
            store,
            state: Arc::new(RwLock::new(state)),
            notices: Arc::new(parking_lot::Mutex::new(Vec::new())),
            saved_nodes: parking_lot::Mutex::new(saved),
        })
    }

    /// Save the dictionary when it grew since the last save (checkpoint
    /// and close), so the next open skips normalizing what it holds.
    pub fn save_dictionary(&self) -> Result<()> {
        let mut saved = self.saved_nodes.lock();
        let entries = {
            let state = self.state.read();
            if state.broken.is_some() || state.graph.node_count() == *saved {
                return Ok(());
            }
            state.graph.dictionary()
        };
        self.store.write_identity_dictionary(&entries)?;
        *saved = entries.len();
        Ok(())
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, State> {
        self.state.read()
    }

    pub fn state(&self) -> &Arc<RwLock<State>> {
        &self.state
    }

    /// Start resolving the changes of a write transaction (the store's
    /// writer lock is held by `txn`, so writers are serialized).
    pub fn writer(&self, txn: &WriteTxn) -> Result<IdWriter> {
        let state = self.state.write_arc();
        state.check_usable()?;
        Ok(IdWriter::new(state, txn.snapshot().clone(), self.notices.clone()))
    }

    /// Take the notices of commits so far.
    pub fn take_notices(&self) -> Vec<CommitNotice> {
        std::mem::take(&mut *self.notices.lock())
    }

    pub fn has_notices(&self) -> bool {
        !self.notices.lock().is_empty()
    }

    /// A writer when the table has identifiers (`None` otherwise).
    /// A preparer for rows of a table with identifiers (none otherwise).
    pub(crate) fn preparer(&self, meta: &TableMeta) -> Result<Option<Preparer>> {
        let Some(ti) = TableIdentity::of(meta)? else { return Ok(None) };
        let state = self.state.read();
        let infos = ti.slots.iter().map(|s| state.type_named(&s.type_name).cloned()).collect::<Result<_>>()?;
        Ok(Some(Preparer { value_columns: ti.slots.iter().map(|s| s.value_index).collect(), infos, phone_cache: state.phone_cache.clone() }))
    }

    pub fn writer_for(&self, txn: &WriteTxn, meta: &TableMeta) -> Result<Option<IdWriter>> {
        if meta.options.contains_key(spec::IDENTIFIERS_OPTION) {
            Ok(Some(self.writer(txn)?))
        } else {
            Ok(None)
        }
    }

    /// Reload types after a catalog change.
    pub fn reload_types(&self) -> Result<()> {
        let specs = stored_specs(&self.store.snapshot())?;
        self.state.write().set_types(specs)
    }

    /// `RESOLVE IDENTITIES`: rebuild from the tables and compare.
    pub fn verify(&self) -> Result<VerifyReport> {
        let txn = self.store.begin_write()?;
        let rebuilt = build_state(txn.snapshot(), None)?;
        let live = self.state.read();
        live.check_usable()?;
        live.graph.check().map_err(|e| Error::Internal(format!("identity graph invariant broken: {e}")))?;
        let a = live.graph.partition();
        let b = rebuilt.graph.partition();
        let report = VerifyReport {
            profiles: a.len() as u64,
            identifiers: a.iter().map(|(_, k)| k.len() as u64).sum(),
            nodes: live.graph.node_count() as u64,
            memory_bytes: live.graph.memory_bytes() as u64,
            agrees: a == b,
        };
        drop(txn);
        if !report.agrees {
            let differing = a.iter().filter(|p| !b.contains(p)).count() + b.iter().filter(|p| !a.contains(p)).count();
            return Err(Error::Internal(format!(
                "the identity graph disagrees with a rebuild from the tables in {differing} profiles"
            )));
        }
        Ok(report)
    }

    /// Create an identifier type.
    pub fn create_type(&self, name: &str, if_not_exists: bool, options: &BTreeMap<String, String>) -> Result<bool> {
        let snap = self.store.snapshot();
        if snap.metadata().contains_key(&format!("{TYPE_KEY_PREFIX}{name}")) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(tessera_storage::StorageError::AlreadyExists { kind: "identifier type", name: name.to_string() }.into());
        }
        let id: u64 = snap.metadata().get(NEXT_TYPE_ID_KEY).and_then(|v| v.parse().ok()).unwrap_or(1);
        if id as usize >= spec::MAX_IDENTIFIER_TYPES {
            return Err(Error::ResourcesExhausted(format!(
                "at most {} identifier types can ever be created", spec::MAX_IDENTIFIER_TYPES
            )));
        }
        let spec = IdentifierSpec::from_options(name, id as TypeId, options)?;
        self.ensure_system_tables()?;
        let json = serde_json::to_string(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.set_metadata(NEXT_TYPE_ID_KEY, Some((id + 1).to_string()))?;
        self.store.set_metadata(&format!("{TYPE_KEY_PREFIX}{name}"), Some(json))?;
        self.reload_types()?;
        Ok(true)
    }

    /// Drop an identifier type no table uses.
    pub fn drop_type(&self, name: &str, if_exists: bool) -> Result<bool> {
        let snap = self.store.snapshot();
        if !snap.metadata().contains_key(&format!("{TYPE_KEY_PREFIX}{name}")) {
            if if_exists {
                return Ok(false);
            }
            return Err(tessera_storage::StorageError::NotFound { kind: "identifier type", name: name.to_string() }.into());
        }
        for t in snap.tables() {
            if let Some(ti) = TableIdentity::of(&t.meta)? {
                if let Some(slot) = ti.slots.iter().find(|s| s.type_name == name) {
                    return Err(Error::user(format!(
                        "identifier type '{name}' is used by column '{}' of table '{}'",
                        slot.column,
                        t.name()
                    )));
                }
            }
        }
        self.store.set_metadata(&format!("{TYPE_KEY_PREFIX}{name}"), None)?;
        self.reload_types()?;
        Ok(true)
    }

    fn ensure_system_tables(&self) -> Result<()> {
        let snap = self.store.snapshot();
        if snap.table(EVENTS_TABLE).is_none() {
            self.store.create_table(EVENTS_TABLE, system::event_columns(), BTreeMap::new())?;
        }
        if snap.table(REJECTIONS_TABLE).is_none() {
            self.store.create_table(REJECTIONS_TABLE, system::rejection_columns(), BTreeMap::new())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct VerifyReport {
    pub profiles: u64,
    /// Identifiers in profiles (linked by live rows).
    pub identifiers: u64,
    /// Identifiers the graph knows (dictionary size).
    pub nodes: u64,
    pub memory_bytes: u64,
    pub agrees: bool,
}

fn stored_specs(snap: &Snapshot) -> Result<Vec<IdentifierSpec>> {
    snap.metadata()
        .iter()
        .filter(|(k, _)| k.starts_with(TYPE_KEY_PREFIX))
        .map(|(k, v)| {
            serde_json::from_str::<IdentifierSpec>(v)
                .map_err(|e| Error::Internal(format!("catalog entry '{k}' does not parse: {e}")))
        })
        .collect()
}

/// A text column as a plain string array.
fn strings(array: &ArrayRef) -> Result<Texts> {
    Ok(match array.data_type() {
        DataType::Utf8View => Texts::View(array.as_string_view().clone()),
        DataType::Utf8 => Texts::Utf8(array.as_string::<i32>().clone()),
        _ => Texts::Utf8(cast(array, &DataType::Utf8)?.as_string::<i32>().clone()),
    })
}

/// A text column read without copying (TEXT columns are string views).
pub(crate) enum Texts {
    Utf8(StringArray),
    View(arrow::array::StringViewArray),
}

impl Texts {
    pub fn value(&self, i: usize) -> &str {
        match self {
            Texts::Utf8(a) => a.value(i),
            Texts::View(a) => a.value(i),
        }
    }
}

/// Rebuild the whole identity state from the rows of a snapshot. With a
/// saved dictionary, identifiers it already knows are not normalized again
/// (and their values are not even read).
fn build_state(snap: &Snapshot, dictionary: Option<Vec<(TypeId, graph::Key)>>) -> Result<State> {
    // The event log is read and decoded while the rows are relinked (it is
    // replayed after them).
    std::thread::scope(|scope| {
        let events = scope.spawn(|| system::read_events(snap));
        let state = link_rows(snap, dictionary)?;
        let events = events.join().map_err(|_| Error::Internal("reading the profile event log panicked".into()))??;
        let mut state = replay(snap, state, events)?;
        state.graph.trim_slack();
        Ok(state)
    })
}

/// The graph's own data contradicts itself (a bug or a damaged file).
fn corrupt(what: String) -> Error {
    Error::Internal(format!("identity data disagrees with itself: {what}"))
}

/// The graph of a snapshot's rows: dictionary and links, before the logs.
fn link_rows(snap: &Snapshot, dictionary: Option<Vec<(TypeId, graph::Key)>>) -> Result<State> {
    let mut state = State::empty();
    state.set_types(stored_specs(snap)?)?;
    let mut known: Vec<bool> = Vec::new();
    if let Some(entries) = dictionary {
        known = vec![false; entries.len()];
        state.graph.reserve_nodes(entries.len());
        for (node, (t, key)) in entries.into_iter().enumerate() {
            if t != TypeId::MAX {
                state.graph.insert_at(node as NodeId, t, key).map_err(corrupt)?;
                known[node] = true;
            }
        }
    }
    for table in snap.tables() {
        let Some(ti) = TableIdentity::of(&table.meta)? else { continue };
        let n = ti.slots.len();
        let mut hidden: Vec<String> = ti.slots.iter().map(|s| s.node_column()).collect();
        hidden.push(spec::LINK_COLUMN.into());
        hidden.push(spec::SEEN_COLUMN.into());
        let value_columns: Vec<String> = ti.slots.iter().map(|s| s.column.clone()).collect();
        let infos: Vec<Arc<TypeInfo>> =
            ti.slots.iter().map(|s| state.type_named(&s.type_name).cloned()).collect::<Result<_>>()?;
        let mut linked: Vec<NodeId> = Vec::with_capacity(n);
        for unit in table.scan_units() {
            let batch = unit.read(&hidden)?;
            let nodes: Vec<&UInt64Array> = (0..n).map(|i| batch.column(i).as_primitive::<UInt64Type>()).collect();
            let link = batch.column(n).as_primitive::<UInt32Type>();
            let seen = batch.column(n + 1).as_primitive::<arrow::datatypes::Int64Type>();
            let unknown = nodes.iter().any(|c| {
                c.iter().flatten().any(|node| known.get(node as usize).is_none_or(|k| !k))
            });
            // Values are read only when some identifier must be normalized.
            let values: Option<Vec<Texts>> = if unknown {
                let v = unit.read(&value_columns)?;
                Some((0..n).map(|i| strings(v.column(i))).collect::<Result<_>>()?)
            } else {
                None
            };
            for row in 0..batch.num_rows() {
                linked.clear();
                let mask = if link.is_null(row) { 0 } else { link.value(row) };
                for i in 0..n {
                    if nodes[i].is_null(row) {
                        continue;
                    }
                    let node = u32::try_from(nodes[i].value(row)).map_err(|_| corrupt("node id out of range".into()))?;
                    if known.len() <= node as usize {
                        known.resize(node as usize + 1, false);
                    }
                    if !known[node as usize] {
                        let info = &infos[i];
                        let raw = values.as_ref().map(|v| v[i].value(row)).unwrap_or_default();
                        let key = match state.prepare(info, raw) {
                            Prepared::Key(key) => key,
                            // Linked under rules that have changed since
                            // (new phone metadata can retire a number):
                            // the node keeps its links under a key no
                            // normalized value has (they never start with
                            // NUL), so the graph still matches the rows.
                            _ if values.is_some() => key_of(info.spec.id, &format!("\0stale:{}", raw.trim())),
                            _ => {
                                return Err(corrupt(format!(
                                    "table '{}' column '{}' holds a node without its value",
                                    table.name(),
                                    ti.slots[i].column
                                )))
                            }
                        };
                        state.graph.insert_at(node, info.spec.id, key).map_err(corrupt)?;
                        known[node as usize] = true;
                    }
                    if mask & (1 << i) != 0 {
                        linked.push(node);
                    }
                }
                let at = if seen.is_null(row) { 1 } else { secs(seen.value(row)) };
                state.graph.relink(&linked, at).map_err(Error::ResourcesExhausted)?;
            }
        }
    }
    Ok(state)
}

/// Replay the refusals and the profile events (`events`, read by
/// `system::read_events`) into the linked graph of `link_rows`.
fn replay(snap: &Snapshot, mut state: State, events: Option<RecordBatch>) -> Result<State> {
    system::replay_rejections(snap, &mut state)?;
    system::replay_events(events, &mut state.graph)?;
    state.graph.finish_rebuild().map_err(corrupt)?;
    Ok(state)
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

pub(crate) fn hidden_identity_columns(
    state: &State,
    table: &str,
    columns: &[ColumnDef],
    declaration: &str,
) -> Result<Vec<ColumnDef>> {
    let parsed = spec::parse_declaration(declaration)?;
    spec::hidden_columns_for(table, columns, &parsed, |t| state.types.contains_key(t))
}

/// `SHOW IDENTIFIERS`: one row per identifier type.
pub(crate) fn show_identifiers(identity: &Identity) -> Result<RecordBatch> {
    let state = identity.read();
    let types: Vec<&IdentifierSpec> = state.types.values().map(|t| &t.spec).collect();
    let text = |f: &dyn Fn(&IdentifierSpec) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(types.iter().map(|s| f(s)).collect::<Vec<_>>()))
    };
    let int = |f: &dyn Fn(&IdentifierSpec) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(types.iter().map(|s| f(s)).collect::<Vec<_>>()))
    };
    let schema = show_identifiers_schema();
    let columns = vec![
        text(&|s| Some(s.name.clone())),
        text(&|s| Some(s.normalize.clone())),
        text(&|s| s.region.clone()),
        int(&|s| Some(i64::from(s.max_per_profile))),
        int(&|s| s.priority),
        int(&|s| Some(i64::from(s.generic_limit))),
        text(&|s| (!s.blocked.is_empty()).then(|| s.blocked.join(","))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Columns of `SHOW IDENTIFIERS`.
pub(crate) fn show_identifiers_schema() -> arrow::datatypes::SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("name", DataType::Utf8, false),
        arrow::datatypes::Field::new("normalize", DataType::Utf8, false),
        arrow::datatypes::Field::new("region", DataType::Utf8, true),
        arrow::datatypes::Field::new("max_per_profile", DataType::Int64, false),
        arrow::datatypes::Field::new("priority", DataType::Int64, true),
        arrow::datatypes::Field::new("generic_limit", DataType::Int64, false),
        arrow::datatypes::Field::new("blocked", DataType::Utf8, true),
    ]))
}

/// Columns of `RESOLVE IDENTITIES`.
pub(crate) fn report_schema() -> arrow::datatypes::SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("profiles", DataType::Int64, false),
        arrow::datatypes::Field::new("identifiers", DataType::Int64, false),
        arrow::datatypes::Field::new("status", DataType::Utf8, false),
        arrow::datatypes::Field::new("graph_nodes", DataType::Int64, false),
        arrow::datatypes::Field::new("graph_bytes", DataType::Int64, false),
    ]))
}

/// The result row of `RESOLVE IDENTITIES`.
pub(crate) fn report_batch(report: &VerifyReport) -> Result<RecordBatch> {
    let schema = report_schema();
    let status = if report.agrees { "graph agrees with the tables" } else { "graph disagrees with the tables" };
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![report.profiles as i64])),
            Arc::new(Int64Array::from(vec![report.identifiers as i64])),
            Arc::new(StringArray::from(vec![status])),
            Arc::new(Int64Array::from(vec![report.nodes as i64])),
            Arc::new(Int64Array::from(vec![report.memory_bytes as i64])),
        ],
    )?)
}

/// Delete every row of a table with identifiers, taking its links out of
/// the graph, in one transaction (before the table is dropped).
pub(crate) fn delete_all_rows(store: &Store, identity: &Identity, table: &str) -> Result<()> {
    let mut txn = store.begin_write()?;
    let Some(meta) = txn.snapshot().table(table).map(|t| t.meta.clone()) else { return Ok(()) };
    let Some(mut writer) = identity.writer_for(&txn, &meta)? else { return Ok(()) };
    let all = all_row_ids(txn.snapshot(), &meta)?;
    writer.unlink_ids(&meta, &all)?;
    txn.delete(table, &all)?;
    commit(store, txn, Some(writer))?;
    Ok(())
}

fn all_row_ids(snap: &Snapshot, meta: &TableMeta) -> Result<tessera_storage::RowIdSet> {
    let mut ids = tessera_storage::RowIdSet::new();
    if let Some(t) = snap.table_by_id(meta.id) {
        for unit in t.scan_units() {
            let b = unit.read(&[ROW_ID_COLUMN.to_string()])?;
            ids.extend(b.column(0).as_primitive::<UInt64Type>().values().iter().copied());
        }
    }
    Ok(ids)
}

/// `ALTER TABLE t SET (identifiers = '...')`: add the hidden columns, then
/// resolve the existing rows (rewritten in one transaction, with new row
/// ids). Running the same statement again finishes an interrupted one.
pub(crate) fn declare_on_existing(store: &Store, identity: &Identity, table: &str, declaration: &str) -> Result<()> {
    let snap = store.snapshot();
    let meta = snap
        .table(table)
        .map(|t| t.meta.clone())
        .ok_or_else(|| Error::user(format!("table '{table}' does not exist")))?;
    if RESERVED_NAMES.contains(&table) {
        return Err(Error::user(format!("system table '{table}' cannot declare identifiers")));
    }
    match meta.options.get(spec::IDENTIFIERS_OPTION) {
        Some(existing) if existing == declaration => {}
        Some(existing) => {
            return Err(Error::Unsupported(format!(
                "table '{table}' already declares identifiers '{existing}'; changing them is not supported (create a new table)"
            )))
        }
        None => {
            let hidden = {
                let state = identity.read();
                hidden_identity_columns(&state, table, &meta.columns, declaration)?
            };
            let mut options = meta.options.clone();
            options.insert(spec::IDENTIFIERS_OPTION.to_string(), declaration.to_string());
            store.alter_table(table, hidden, Some(options))?;
        }
    }
    // Resolve every row not resolved yet.
    let mut txn = store.begin_write()?;
    let table_snap = txn
        .snapshot()
        .table(table)
        .cloned()
        .ok_or_else(|| Error::user(format!("table '{table}' was dropped")))?;
    let meta = table_snap.meta.clone();
    let Some(mut writer) = identity.writer_for(&txn, &meta)? else { return Ok(()) };
    let mut columns = vec![ROW_ID_COLUMN.to_string()];
    columns.extend(meta.columns.iter().map(|c| c.name.clone()));
    let mut stale = tessera_storage::RowIdSet::new();
    let mut rewritten = Vec::new();
    for unit in table_snap.scan_units() {
        let b = unit.read(&columns)?;
        let link = b.column_by_name(spec::LINK_COLUMN).ok_or_else(|| Error::Internal("link column missing".into()))?;
        let keep: BooleanArray = (0..b.num_rows()).map(|i| Some(link.is_null(i))).collect();
        let todo = arrow::compute::filter_record_batch(&b, &keep)?;
        if todo.num_rows() == 0 {
            continue;
        }
        stale.extend(todo.column(0).as_primitive::<UInt64Type>().values().iter().copied());
        let rows = RecordBatch::try_new(meta.append_schema(), todo.columns()[1..].to_vec())?;
        rewritten.push(rows);
    }
    txn.delete(table, &stale)?;
    for rows in rewritten {
        let first = txn.next_row_id(table)?;
        let resolved = writer.resolve(&meta, rows, first)?;
        txn.append(table, resolved)?;
    }
    commit(store, txn, Some(writer))?;
    Ok(())
}
