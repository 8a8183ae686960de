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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, UInt32Type, UInt64Type};
use parking_lot::{ArcRwLockWriteGuard, RawRwLock, RwLock};
use tessera_storage::{ColumnDef, PendingCommit, Snapshot, Store, TableMeta, WriteTxn, ROW_ID_COLUMN};

use crate::error::{Error, Result};
use graph::{Dictionary, Graph, NodeId, ProfileEvent, ProfileId, RepeatMemo, Rules, TypeId};
use normalize::{key_of, Normalized, Normalizer};
pub(crate) use prepare::{PreparedBatch, Preparer};
use prepare::{intern_distinct, prepare_batch, prepare_cached, Prepared, SharedPhoneCache, NULL_VALUE};
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
        Ok(IdWriter {
            state,
            base: txn.snapshot().clone(),
            now: now_micros(),
            events: Vec::new(),
            events_flushed: 0,
            rejections: Rejections::default(),
            touched: false,
            finished: false,
            notice: CommitNotice::default(),
            kept_rows: 0,
            notices: self.notices.clone(),
            repeats: RepeatMemo::default(),
            expected_rows: None,
            rows_resolved: 0,
        })
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

/// Refusals of one transaction, column by column: text goes straight into
/// Arrow builders (one buffer per column), not a string per value, since a
/// load can refuse millions of values.
#[derive(Default)]
pub(crate) struct Rejections {
    pub table: arrow::array::StringBuilder,
    pub row: Vec<u64>,
    pub column: arrow::array::StringBuilder,
    pub type_name: arrow::array::StringBuilder,
    pub value: arrow::array::StringBuilder,
    pub reason: Vec<&'static str>,
    pub detail: arrow::array::StringBuilder,
    pub node: Vec<Option<u64>>,
}

impl Rejections {
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, table: &str, row: u64, column: &str, type_name: &str, value: &str, reason: &'static str, detail: &str, node: Option<NodeId>) {
        self.table.append_value(table);
        self.row.push(row);
        self.column.append_value(column);
        self.type_name.append_value(type_name);
        self.value.append_value(value);
        self.reason.push(reason);
        self.detail.append_value(detail);
        self.node.push(node.map(u64::from));
    }

    fn len(&self) -> usize {
        self.row.len()
    }
}

/// A profile event with the row that caused it.
pub(crate) struct LoggedEvent {
    pub event: ProfileEvent,
    pub table: Option<Arc<str>>,
    pub row: Option<u64>,
}

/// Resolves one transaction's rows while holding the identity lock.
/// Dropped without [`IdWriter::commit`] after changing the graph, it
/// rebuilds the graph from the rows (the transaction never happened).
pub(crate) struct IdWriter {
    state: ArcRwLockWriteGuard<RawRwLock, State>,
    base: Arc<Snapshot>,
    now: i64,
    events: Vec<LoggedEvent>,
    /// Events already appended to the transaction ([`IdWriter::flush_events`]).
    events_flushed: u64,
    rejections: Rejections,
    touched: bool,
    finished: bool,
    notice: CommitNotice,
    kept_rows: usize,
    notices: Arc<parking_lot::Mutex<Vec<CommitNotice>>>,
    /// Kept across batches for its memory; flushed after each.
    repeats: RepeatMemo,
    /// Rows the transaction is expected to resolve in all (a load that
    /// knows its source's size), and those resolved so far.
    expected_rows: Option<u64>,
    rows_resolved: u64,
}

impl IdWriter {
    /// The transaction will resolve about `rows` rows in all: from the
    /// share of new identifiers among the rows resolved so far, the
    /// dictionary makes room for the rest of them at once.
    pub(crate) fn expect_rows(&mut self, rows: u64) {
        self.expected_rows = Some(rows);
    }

    /// Fill the hidden identity columns of rows about to be appended to a
    /// table with identifiers (`batch` in the table's append schema; rows
    /// get ids from `first_row_id`). Other tables pass through.
    pub fn resolve(&mut self, meta: &TableMeta, batch: RecordBatch, first_row_id: u64) -> Result<RecordBatch> {
        self.resolve_prepared(meta, batch, first_row_id, None)
    }

    /// [`IdWriter::resolve`] with the batch's values possibly normalized
    /// already; `prepared` is ignored unless it was made for this batch
    /// with the identifier types in force now.
    pub(crate) fn resolve_prepared(
        &mut self,
        meta: &TableMeta,
        batch: RecordBatch,
        first_row_id: u64,
        prepared: Option<PreparedBatch>,
    ) -> Result<RecordBatch> {
        let Some(ti) = TableIdentity::of(meta)? else { return Ok(batch) };
        self.touched = true;
        let mut interner = self.interner(&ti)?;
        let mut dictionary = self.state.graph.take_dictionary();
        let interned = interner.intern(&mut dictionary, batch, prepared);
        match &interned {
            Ok(interned) => self.adopt(interned),
            // Nodes added before the failure stay as placeholders: the
            // transaction fails, and its writer rebuilds the state.
            Err(_) => self.state.graph.adopt_nodes(dictionary.len(), TypeId::MAX),
        }
        self.state.graph.restore_dictionary(dictionary).map_err(Error::Internal)?;
        self.rows_resolved = interner.rows_resolved;
        self.link_interned(meta, &ti, interned?, first_row_id)
    }

    /// Resolve a load's batches (as [`IdWriter::resolve_prepared`]) and
    /// append them to `txn`: interning each batch's values on a thread of
    /// its own while this one links the batch before. On a new source
    /// (contacts, members) interning is a third to half of resolving, and
    /// with both on one thread the preparing threads and a core sat idle.
    /// Tables without identifiers are appended as they come.
    pub(crate) fn resolve_stream(
        &mut self,
        meta: &TableMeta,
        txn: &mut WriteTxn,
        batches: impl Iterator<Item = Result<(RecordBatch, Option<PreparedBatch>)>> + Send,
    ) -> Result<()> {
        let Some(ti) = TableIdentity::of(meta)? else {
            for batch in batches {
                txn.append(&meta.name, batch?.0)?;
            }
            return Ok(());
        };
        self.touched = true;
        let mut interner = self.interner(&ti)?;
        let mut dictionary = self.state.graph.take_dictionary();
        let (result, returned) = std::thread::scope(|scope| {
            let (to_linker, interned) = std::sync::mpsc::sync_channel::<Result<Interned>>(INTERNED_AHEAD);
            let interning = std::thread::Builder::new().name("tessera-intern".into()).spawn_scoped(scope, move || {
                for item in batches {
                    let done = item.and_then(|(batch, prepared)| interner.intern(&mut dictionary, batch, prepared));
                    let failed = done.is_err();
                    // A closed channel: the linker stopped (an error).
                    if to_linker.send(done).is_err() || failed {
                        break;
                    }
                }
                (dictionary, interner.rows_resolved)
            });
            let interning = match interning {
                Ok(handle) => handle,
                Err(e) => return (Err(Error::Internal(format!("starting the interning thread: {e}"))), None),
            };
            let mut result = Ok(());
            for batch in interned.iter() {
                result = batch.and_then(|batch| {
                    self.adopt(&batch);
                    let first_row_id = txn.next_row_id(&meta.name)?;
                    let resolved = self.link_interned(meta, &ti, batch, first_row_id)?;
                    self.flush_events(txn)?;
                    txn.append(&meta.name, resolved)?;
                    Ok(())
                });
                if result.is_err() {
                    break;
                }
            }
            // Wakes the interning thread if it waits to hand over a batch.
            drop(interned);
            match interning.join() {
                Ok(returned) => (result, Some(returned)),
                Err(_) => (result.and(Err(Error::Internal("interning a batch panicked".into()))), None),
            }
        });
        // On failure the dictionary may hold nodes the graph never adopted
        // (or be gone): the writer is then dropped without committing,
        // which rebuilds the whole state.
        result?;
        let (dictionary, rows_resolved) = returned.ok_or_else(|| Error::Internal("the interned dictionary was lost".into()))?;
        self.state.graph.restore_dictionary(dictionary).map_err(Error::Internal)?;
        self.rows_resolved = rows_resolved;
        Ok(())
    }

    /// What interning needs for a table's batches, carrying the load's
    /// expectation along.
    fn interner(&self, ti: &TableIdentity) -> Result<Interner> {
        let infos: Vec<Arc<TypeInfo>> = ti.slots.iter().map(|s| self.state.type_named(&s.type_name).cloned()).collect::<Result<_>>()?;
        Ok(Interner {
            value_columns: ti.slots.iter().map(|s| s.value_index).collect(),
            infos,
            phone_cache: self.state.phone_cache.clone(),
            expected_rows: self.expected_rows,
            rows_resolved: self.rows_resolved,
        })
    }

    /// Give the nodes a batch's interning added their place in the graph,
    /// slot by slot, sized by what the load expects still.
    fn adopt(&mut self, interned: &Interned) {
        self.state.graph.expect_more_nodes(interned.expected_nodes);
        for &(upto, t) in &interned.added {
            self.state.graph.adopt_nodes(upto, t);
        }
    }

    /// Link an interned batch's rows (their ids from `first_row_id`) and
    /// fill its hidden identity columns.
    fn link_interned(&mut self, meta: &TableMeta, ti: &TableIdentity, interned: Interned, first_row_id: u64) -> Result<RecordBatch> {
        let Interned { batch, prepared, distinct_nodes, nodes, .. } = interned;
        let mut settle_events = Vec::new();
        self.state.graph.settle(secs(self.now), &mut settle_events).map_err(Error::ResourcesExhausted)?;
        self.log(&mut settle_events, None, None);
        let n = batch.num_rows();
        let values: Vec<Texts> = ti.slots.iter().map(|s| strings(batch.column(s.value_index))).collect::<Result<_>>()?;
        self.state.graph.check_headroom(n, ti.slots.len()).map_err(Error::ResourcesExhausted)?;
        let mut masks: Vec<u32> = Vec::with_capacity(n);
        let mut row_nodes: Vec<(u8, NodeId)> = Vec::with_capacity(ti.slots.len());
        let mut events = Vec::new();
        let now_secs = secs(self.now);
        let mut repeats = std::mem::take(&mut self.repeats);
        // Shared by the events of the batch's rows.
        let table_name: Arc<str> = meta.name.as_str().into();
        // Whether the previous row linked cleanly with nothing refused
        // before linking either: a row with the same values in every slot
        // is then just one more repeat (sessions and campaigns are runs).
        let mut previous_clean = false;
        let mut row = 0;
        while row < n {
            if previous_clean && prepared.repeats_previous[row] {
                // The whole run at once: its rows are repeats of this one.
                let run = prepared.repeats_previous[row..].iter().take_while(|same| **same).count();
                if let Some(mask) = self.state.graph.repeat_previous(&mut repeats, now_secs, run as u32) {
                    masks.extend(std::iter::repeat_n(mask, run));
                    row += run;
                    continue;
                }
            }
            row_nodes.clear();
            let row_id = first_row_id + row as u64;
            let mut refused_before_linking = false;
            for (i, (rows, outcomes)) in prepared.slots.iter().enumerate() {
                let d = rows[row];
                if d == NULL_VALUE {
                    continue;
                }
                if let Some(node) = distinct_nodes[i][d as usize] {
                    row_nodes.push((i as u8, node));
                } else if let Prepared::Refused(reason, detail) = &outcomes[d as usize] {
                    // A refused value is recorded for every row carrying it.
                    let slot = &ti.slots[i];
                    self.rejections.push(&meta.name, row_id, &slot.column, &slot.type_name, values[i].value(row), reason, detail, None);
                    refused_before_linking = true;
                }
            }
            let outcome = {
                let State { graph, rules, .. } = &mut *self.state;
                graph.link_repeating(&mut repeats, &row_nodes, now_secs, rules, &mut events).map_err(Error::Internal)?
            };
            for r in &outcome.refused {
                let i = r.slot as usize;
                let slot = &ti.slots[i];
                self.rejections.push(&meta.name, row_id, &slot.column, &slot.type_name, values[i].value(row), r.reason.as_str(), &r.detail, Some(r.node));
            }
            if !events.is_empty() {
                self.log(&mut events, Some(&table_name), Some(row_id));
            }
            previous_clean = !refused_before_linking && outcome.refused.is_empty() && outcome.mask != 0;
            masks.push(outcome.mask);
            row += 1;
        }
        self.state.graph.flush_repeats(&mut repeats).map_err(Error::Internal)?;
        self.repeats = repeats;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (slot, column) in ti.slots.iter().zip(nodes) {
            columns[slot.node_index] = Arc::new(column);
        }
        columns[ti.link_index] = Arc::new(UInt32Array::from(masks));
        columns[ti.seen_index] = Arc::new(Int64Array::from(vec![self.now; n]));
        let resolved = RecordBatch::try_new(batch.schema(), columns)?;
        self.kept_rows += n;
        let keep = self.kept_rows <= NOTICE_ROWS_LIMIT;
        self.notice.appended.push(AppendedRows {
            meta: Arc::new(meta.clone()),
            first_row_id,
            batch: keep.then(|| resolved.clone()),
        });
        Ok(resolved)
    }

    /// Take back the links of rows being deleted from a table (`rows`
    /// holds at least the table's hidden identity columns, by name).
    pub fn unlink(&mut self, meta: &TableMeta, rows: &RecordBatch) -> Result<()> {
        let Some(ti) = TableIdentity::of(meta)? else { return Ok(()) };
        self.touched = true;
        let column = |name: &str| -> Result<ArrayRef> {
            rows.column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("deleted rows lack column '{name}'")))
        };
        let link = column(spec::LINK_COLUMN)?;
        let link = link.as_primitive::<UInt32Type>();
        let node_arrays: Vec<ArrayRef> =
            ti.slots.iter().map(|s| column(&s.node_column())).collect::<Result<_>>()?;
        let nodes: Vec<&UInt64Array> = node_arrays.iter().map(|a| a.as_primitive::<UInt64Type>()).collect();
        let mut linked = Vec::with_capacity(ti.slots.len());
        for row in 0..rows.num_rows() {
            if link.is_null(row) {
                continue;
            }
            let mask = link.value(row);
            linked.clear();
            for (i, n) in nodes.iter().enumerate() {
                if mask & (1 << i) != 0 && !n.is_null(row) {
                    let node = n.value(row) as NodeId;
                    if !linked.contains(&node) {
                        linked.push(node);
                    }
                    // The row's profile before it goes: its values change.
                    if let Some(pid) = self.state.graph.profile_of(node) {
                        self.notice.affected.push(pid);
                    }
                }
            }
            self.state.graph.unlink(&linked);
        }
        let mut events = Vec::new();
        self.state.graph.settle(secs(self.now), &mut events).map_err(Error::ResourcesExhausted)?;
        self.log(&mut events, Some(&meta.name.as_str().into()), None);
        Ok(())
    }

    /// Read the identity columns of rows `ids` of a table from the base
    /// snapshot and unlink them.
    pub fn unlink_ids(&mut self, meta: &TableMeta, ids: &tessera_storage::RowIdSet) -> Result<()> {
        let Some(ti) = TableIdentity::of(meta)? else { return Ok(()) };
        let Some(table) = self.base.table_by_id(meta.id).cloned() else { return Ok(()) };
        let mut columns = vec![ROW_ID_COLUMN.to_string(), spec::LINK_COLUMN.to_string()];
        columns.extend(ti.slots.iter().map(|s| s.node_column()));
        for unit in table.scan_units() {
            let batch = unit.read(&columns)?;
            let keep: BooleanArray =
                batch.column(0).as_primitive::<UInt64Type>().iter().map(|id| Some(id.is_some_and(|id| ids.contains(id)))).collect();
            let doomed = arrow::compute::filter_record_batch(&batch, &keep)?;
            if doomed.num_rows() > 0 {
                self.unlink(meta, &doomed)?;
            }
        }
        Ok(())
    }

    /// Record `events` (drained, so a caller's vector keeps its capacity
    /// from row to row).
    fn log(&mut self, events: &mut Vec<ProfileEvent>, table: Option<&Arc<str>>, row: Option<u64>) {
        for event in events.iter() {
            let n = &mut self.notice;
            match event {
                ProfileEvent::Merged { retired, survivor, .. } => {
                    n.merged.extend([*retired, *survivor]);
                    n.affected.extend([*retired, *survivor]);
                }
                ProfileEvent::Split { pid, from, .. } => {
                    n.split.extend([*pid, *from]);
                    n.affected.extend([*pid, *from]);
                }
                ProfileEvent::Deleted { pid } => {
                    n.affected.push(*pid);
                }
                ProfileEvent::Created { .. } | ProfileEvent::Moved { .. } => {}
            }
        }
        for event in events.drain(..) {
            self.events.push(LoggedEvent { event, table: table.cloned(), row });
        }
    }

    /// Append the events logged so far to the transaction once there are
    /// many (a load logs one per new profile): they are then encoded with
    /// the rows as the load goes, and not all at the commit while it waits.
    pub(crate) fn flush_events(&mut self, txn: &mut WriteTxn) -> Result<()> {
        if self.events.len() < EVENTS_FLUSH_ROWS {
            return Ok(());
        }
        let batch = system::events_batch(&self.base, &self.events, self.now)?;
        txn.append(EVENTS_TABLE, batch)?;
        self.events_flushed += self.events.len() as u64;
        self.events.clear();
        Ok(())
    }

    /// Identity log rows this writer appends (events and refusals), not
    /// the user's.
    fn logged_rows(&self) -> u64 {
        self.events_flushed + (self.events.len() + self.rejections.len()) as u64
    }

    /// Append the commit's events and refusals to their tables, then queue
    /// the commit. The identity lock is released only after the commit is
    /// queued, so the graph and the log advance together.
    pub fn commit(mut self, mut txn: WriteTxn) -> Result<PendingCommit> {
        if !self.events.is_empty() {
            let batch = system::events_batch(&self.base, &self.events, self.now)?;
            txn.append(EVENTS_TABLE, batch)?;
        }
        if self.rejections.len() > 0 {
            let batch = system::rejections_batch(&self.base, &mut self.rejections, self.now)?;
            txn.append(REJECTIONS_TABLE, batch)?;
        }
        // Finished as soon as the storage commit is: a panic while
        // trimming must not make `Drop` rebuild the state from before it.
        let finished = &mut self.finished;
        let graph = &mut self.state.graph;
        let outcome = if graph.trimming_rebuilds() {
            // After a large load, giving the graph's growth room back
            // rebuilds the dictionary index (a tenth of a second at four
            // million identifiers): it runs beside the storage commit,
            // which waits for the load's last segments, rather than after
            // it. A failed commit leaves the trimmed graph to `Drop`,
            // which rebuilds the state anyway.
            std::thread::scope(|scope| {
                let trimming = scope.spawn(|| graph.trim_slack());
                let outcome = txn.prepare();
                *finished = outcome.is_ok();
                if let Err(panic) = trimming.join() {
                    std::panic::resume_unwind(panic);
                }
                outcome
            })
        } else {
            let outcome = txn.prepare();
            *finished = outcome.is_ok();
            if outcome.is_ok() {
                graph.trim_slack();
            }
            outcome
        };
        Ok(outcome?)
    }
}

/// Batches interned ahead of the linker, beyond the one it links.
const INTERNED_AHEAD: usize = 1;

/// One batch interned: its values' nodes (new ones added to the
/// dictionary, not yet adopted by the graph) and node columns.
struct Interned {
    batch: RecordBatch,
    prepared: PreparedBatch,
    /// Per slot, the node of each distinct prepared value (None when
    /// absent or refused before linking).
    distinct_nodes: Vec<Vec<Option<NodeId>>>,
    /// Per slot in order, the dictionary's length after interning it and
    /// the slot's type: the nodes the graph adopts, with their types.
    added: Vec<(usize, TypeId)>,
    /// Per slot, every row's node, linked or not.
    nodes: Vec<UInt64Array>,
    /// Nodes the load expected to add still when the batch was interned.
    expected_nodes: usize,
}

/// Interns one table's batches with a dictionary lent by the graph.
struct Interner {
    value_columns: Vec<usize>,
    infos: Vec<Arc<TypeInfo>>,
    phone_cache: SharedPhoneCache,
    /// Rows the transaction is expected to resolve in all, and those
    /// interned so far ([`IdWriter::expect_rows`]).
    expected_rows: Option<u64>,
    rows_resolved: u64,
}

impl Interner {
    fn intern(&mut self, dictionary: &mut Dictionary, batch: RecordBatch, prepared: Option<PreparedBatch>) -> Result<Interned> {
        let n = batch.num_rows();
        let infos = &self.infos;
        let current = |p: &PreparedBatch| {
            p.rows == n && p.infos.len() == infos.len() && p.infos.iter().zip(infos).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        let prepared = match prepared.filter(current) {
            Some(p) => p,
            None => prepare_batch(&self.infos, &self.value_columns, &batch, &self.phone_cache)?,
        };
        self.project_growth(dictionary);
        self.rows_resolved += n as u64;
        let mut distinct_nodes: Vec<Vec<Option<NodeId>>> = Vec::with_capacity(prepared.slots.len());
        let mut added = Vec::with_capacity(prepared.slots.len());
        for (info, (_, outcomes)) in self.infos.iter().zip(&prepared.slots) {
            distinct_nodes.push(intern_distinct(dictionary, outcomes)?);
            added.push((dictionary.len(), info.spec.id));
        }
        // Every row keeps the node of each value it carries, linked or not.
        let nodes = prepared.slots.iter().zip(&distinct_nodes).map(|((rows, _), of)| node_column(rows, of)).collect();
        Ok(Interned { batch, prepared, distinct_nodes, added, nodes, expected_nodes: dictionary.expected() })
    }

    /// Project the nodes the rest of the expected rows will add, from the
    /// rows interned so far.
    fn project_growth(&self, dictionary: &mut Dictionary) {
        let Some(expected) = self.expected_rows else { return };
        if self.rows_resolved == 0 {
            return;
        }
        let left = expected.saturating_sub(self.rows_resolved);
        let added = dictionary.added() as u128;
        let more = added * u128::from(left) / u128::from(self.rows_resolved);
        dictionary.expect(usize::try_from(more).unwrap_or(usize::MAX));
    }
}

impl Drop for IdWriter {
    fn drop(&mut self) {
        if self.touched && !self.finished {
            // The transaction did not happen: rebuild from the rows of the
            // state it started from (the caller still holds the writer
            // lock, so nothing newer exists).
            match build_state(&self.base, None) {
                Ok(s) => *self.state = s,
                Err(e) => self.state.broken = Some(e.to_string()),
            }
        }
    }
}

/// The node column of one slot: each row's node through its distinct
/// value (`rows` indexes `of`; `NULL_VALUE` and values without a node are
/// NULL). Built as a values buffer and a validity bitmap directly: through
/// an iterator of options it cost twice as much.
fn node_column(rows: &[u32], of: &[Option<NodeId>]) -> UInt64Array {
    // Each distinct value's node, and one more entry that every index
    // past them (`NULL_VALUE`) maps to: a row is one lookup, without a
    // branch. No node is `NO_NODE` (node ids are 32-bit).
    const NO_NODE: u64 = u64::MAX;
    let nodes: Vec<u64> = of.iter().map(|n| n.map_or(NO_NODE, u64::from)).chain([NO_NODE]).collect();
    let past_the_values = of.len();
    let mut values: Vec<u64> = Vec::with_capacity(rows.len());
    // The validity packed 64 rows at a time, in the same pass: most slots
    // have a node on every row.
    let mut words: Vec<u64> = Vec::with_capacity(rows.len().div_ceil(64));
    for chunk in rows.chunks(64) {
        let mut word = 0u64;
        values.extend(chunk.iter().enumerate().map(|(bit, &d)| {
            let node = nodes[(d as usize).min(past_the_values)];
            let valid = node != NO_NODE;
            word |= u64::from(valid) << bit;
            // NULL rows hold 0, which compresses best.
            node & u64::from(valid).wrapping_neg()
        }));
        words.push(word);
    }
    let valid = arrow::buffer::BooleanBuffer::new(arrow::buffer::Buffer::from_vec(words), 0, rows.len());
    let nulls = arrow::buffer::NullBuffer::new(valid);
    UInt64Array::new(values.into(), (nulls.null_count() > 0).then_some(nulls))
}

/// Commit a transaction, resolving identities when a writer is given.
/// `rows_appended` counts the user's rows only, not the identity logs'.
/// Once durable, the commit's notice is queued for profile maintenance.
pub(crate) fn commit(store: &Store, txn: WriteTxn, writer: Option<IdWriter>) -> Result<tessera_storage::CommitInfo> {
    let logged = writer.as_ref().map(IdWriter::logged_rows).unwrap_or(0);
    let (pending, notice) = match writer {
        Some(mut w) => {
            let notice = std::mem::take(&mut w.notice);
            let queue = w.notices.clone();
            (w.commit(txn)?, Some((notice, queue)))
        }
        None => (txn.prepare()?, None),
    };
    let mut info = pending.wait()?;
    if let Some((notice, queue)) = notice {
        if !notice.appended.is_empty() || !notice.affected.is_empty() {
            queue.lock().push(notice);
        }
    }
    info.rows_appended -= logged.min(info.rows_appended);
    // The commit is durable whatever the flush does. A failed flush
    // poisons the store (the next write is refused until reopen), but it
    // must not report this statement's rows as lost: a client would
    // retry and insert them twice.
    if let Err(e) = store.maybe_flush() {
        eprintln!(
            "tessera: writing buffered rows to segments failed; they are safe in the log, and writes are refused until the database is reopened: {e}"
        );
    }
    Ok(info)
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

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    proptest::proptest! {
        /// Each row's node, or NULL for a row without a value or whose
        /// value has no node, over lengths that end inside and on a word
        /// of the validity bitmap.
        #[test]
        fn node_columns_hold_each_rows_node(
            of in proptest::collection::vec(proptest::option::of(0u32..1_000_000), 1..20),
            picks in proptest::collection::vec(0usize..24, 0..200),
        ) {
            let rows: Vec<u32> = picks.iter().map(|&p| if p < of.len() { p as u32 } else { NULL_VALUE }).collect();
            let column = node_column(&rows, &of);
            proptest::prop_assert_eq!(column.len(), rows.len());
            for (i, &d) in rows.iter().enumerate() {
                let want = of.get(d as usize).copied().flatten().map(u64::from);
                let got = column.is_valid(i).then(|| column.value(i));
                proptest::prop_assert_eq!(got, want, "row {}", i);
            }
        }
    }
}
