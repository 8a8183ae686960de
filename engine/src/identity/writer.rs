//! The identity writer: resolving one transaction's rows under the
//! identity lock (interning their values, linking them, filling their
//! hidden columns), the profile events and refusals it appends to the
//! same transaction, and the commit that publishes both.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{UInt32Type, UInt64Type};
use parking_lot::{ArcRwLockWriteGuard, RawRwLock};
use tessera_storage::{PendingCommit, Snapshot, Store, TableMeta, WriteTxn, ROW_ID_COLUMN};

use super::graph::{Dictionary, NodeId, ProfileEvent, RepeatMemo, TypeId};
use super::prepare::{intern_distinct, prepare_batch, Prepared, SharedPhoneCache, NULL_VALUE};
use super::spec::{self, TableIdentity};
use super::{
    build_state, now_micros, secs, strings, system, AppendedRows, CommitNotice, PreparedBatch, State, Texts, TypeInfo, EVENTS_FLUSH_ROWS,
    EVENTS_TABLE, NOTICE_ROWS_LIMIT, REJECTIONS_TABLE,
};
use crate::error::{Error, Result};

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

    pub(super) fn len(&self) -> usize {
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
    /// A writer holding the identity state for one transaction on `base`.
    pub(super) fn new(state: ArcRwLockWriteGuard<RawRwLock, State>, base: Arc<Snapshot>, notices: Arc<parking_lot::Mutex<Vec<CommitNotice>>>) -> IdWriter {
        IdWriter {
            state,
            base,
            now: now_micros(),
            events: Vec::new(),
            events_flushed: 0,
            rejections: Rejections::default(),
            touched: false,
            finished: false,
            notice: CommitNotice::default(),
            kept_rows: 0,
            notices,
            repeats: RepeatMemo::default(),
            expected_rows: None,
            rows_resolved: 0,
        }
    }

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
        let Some(ti) = TableIdentity::of(meta)? else { return Ok(batch) };
        self.touched = true;
        let mut interner = self.interner(&ti)?;
        let mut dictionary = self.state.graph.take_dictionary();
        let interned = interner.intern(&mut dictionary, batch, None);
        match &interned {
            Ok(interned) => self.adopt(interned),
            // Nodes added before the failure are adopted without a type: the
            // transaction fails, and its writer rebuilds the state.
            Err(_) => self.state.graph.adopt_nodes(dictionary.len(), TypeId::MAX),
        }
        self.state.graph.restore_dictionary(dictionary).map_err(Error::Internal)?;
        self.rows_resolved = interner.rows_resolved;
        self.link_interned(meta, &ti, interned?, first_row_id)
    }

    /// Resolve a load's batches (as [`IdWriter::resolve`], their values
    /// possibly normalized already: a prepared batch is used only if it was
    /// made for its batch with the identifier types in force now) and
    /// append them to `txn`. With `beside`, each batch's values are
    /// interned on a thread of their own while this one links the batch
    /// before: on a new source (contacts, members) interning is a third to
    /// half of resolving, and with both on one thread the preparing
    /// threads and a core sat idle. Without it (a few rows, which would not
    /// pay for the thread), both happen here. Tables without identifiers
    /// are appended as they come.
    pub(crate) fn resolve_stream(
        &mut self,
        meta: &TableMeta,
        txn: &mut WriteTxn,
        batches: impl Iterator<Item = Result<(RecordBatch, Option<PreparedBatch>)>> + Send,
        beside: bool,
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
        let (result, returned) = if beside {
            std::thread::scope(|scope| {
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
                    result = batch.and_then(|batch| self.append_interned(meta, &ti, txn, batch));
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
            })
        } else {
            let mut result = Ok(());
            for item in batches {
                result = item
                    .and_then(|(batch, prepared)| interner.intern(&mut dictionary, batch, prepared))
                    .and_then(|batch| self.append_interned(meta, &ti, txn, batch));
                if result.is_err() {
                    break;
                }
            }
            (result, Some((dictionary, interner.rows_resolved)))
        };
        // On failure the dictionary may hold nodes the graph never adopted
        // (or be gone): the writer is then dropped without committing,
        // which rebuilds the whole state.
        result?;
        let (dictionary, rows_resolved) = returned.ok_or_else(|| Error::Internal("the interned dictionary was lost".into()))?;
        self.state.graph.restore_dictionary(dictionary).map_err(Error::Internal)?;
        self.rows_resolved = rows_resolved;
        Ok(())
    }

    /// Link an interned batch of a load and append it to `txn`, with the
    /// profile events it caused.
    fn append_interned(&mut self, meta: &TableMeta, ti: &TableIdentity, txn: &mut WriteTxn, interned: Interned) -> Result<()> {
        self.adopt(&interned);
        let first_row_id = txn.next_row_id(&meta.name)?;
        let resolved = self.link_interned(meta, ti, interned, first_row_id)?;
        self.flush_events(txn)?;
        txn.append(&meta.name, resolved)?;
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
        self.state.graph.expect_nodes(interned.expected_nodes);
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
        let mut ahead = Lookahead::new(prepared.slots.len());
        let mut row = 0;
        while row < n {
            ahead.advance(&self.state.graph, &prepared, &distinct_nodes, row);
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

/// Rows ahead of the one being linked whose new values' graph entries
/// are loaded early ([`Lookahead`]); their parents' half as far ahead.
const PREFETCH_ROWS: usize = 8;

/// Loads the graph entries of values that appear for the first time in a
/// batch, a few rows before the writer links them. The graph's arrays are
/// far larger than the caches, and a row with a value new to the batch is
/// the one that misses them (a value seen earlier in the batch was just
/// linked, and a repeat is answered by the memo): loading them one row at
/// a time left the writer waiting on memory most of the time it spent in
/// `link_known`. Rows repeating the row before carry no new value and are
/// passed over. A value's index in its slot's prepared values is new
/// exactly when it is the next one: they are numbered in order of first
/// appearance.
struct Lookahead {
    values: NewValues,
    /// Nodes whose entries were asked for, with their rows, waiting for
    /// the second step.
    asked: std::collections::VecDeque<(usize, NodeId)>,
}

impl Lookahead {
    fn new(slots: usize) -> Lookahead {
        Lookahead { values: NewValues::new(slots), asked: std::collections::VecDeque::with_capacity(PREFETCH_ROWS * 4) }
    }

    /// Prepare for linking `row`: ask for the entries of new values up to
    /// `PREFETCH_ROWS` rows ahead, and for the parents of those half as
    /// far ahead. Rows passed over in a run repeat the row before them, so
    /// skipping them loses no new value.
    fn advance(&mut self, graph: &super::graph::Graph, prepared: &PreparedBatch, distinct_nodes: &[Vec<Option<NodeId>>], row: usize) {
        self.values.new_values(prepared, distinct_nodes, row, |r, node| {
            graph.prefetch_entries(node);
            self.asked.push_back((r, node));
        });
        while let Some(&(r, node)) = self.asked.front() {
            if r >= row + PREFETCH_ROWS / 2 {
                break;
            }
            graph.prefetch_parent(node);
            self.asked.pop_front();
        }
    }
}

/// Where [`Lookahead`] stands in a batch: the rows it looked at and the
/// values it met.
struct NewValues {
    /// The next row to look at.
    next_row: usize,
    /// Per slot, the first value index not seen yet.
    next_new: Vec<u32>,
}

impl NewValues {
    fn new(slots: usize) -> NewValues {
        NewValues { next_row: 0, next_new: vec![0; slots] }
    }

    /// Call `new` with each row up to `PREFETCH_ROWS` past `row` not
    /// looked at yet, and the node of each value that appears in it for
    /// the first time in the batch.
    fn new_values(&mut self, prepared: &PreparedBatch, distinct_nodes: &[Vec<Option<NodeId>>], row: usize, mut new: impl FnMut(usize, NodeId)) {
        self.next_row = self.next_row.max(row);
        let end = (row + PREFETCH_ROWS).min(prepared.rows);
        while self.next_row < end {
            let r = self.next_row;
            self.next_row += 1;
            if prepared.repeats_previous[r] {
                continue;
            }
            for (i, (rows, _)) in prepared.slots.iter().enumerate() {
                let d = rows[r];
                if d == NULL_VALUE || d < self.next_new[i] {
                    continue;
                }
                self.next_new[i] = d + 1;
                if let Some(Some(node)) = distinct_nodes[i].get(d as usize) {
                    new(r, *node);
                }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    proptest::proptest! {
        /// The lookahead names each value's node once, at the first row
        /// carrying it (NULLs and values without a node never), whichever
        /// runs of repeated rows the writer skips, and never a row more
        /// than `PREFETCH_ROWS` past the one being linked.
        #[test]
        fn lookahead_names_each_new_value_at_its_first_row(
            picks in proptest::collection::vec(proptest::collection::vec(0usize..8, 2), 1..120),
            skip_runs in proptest::collection::vec(proptest::bool::ANY, 1..40),
        ) {
            // Two slots; value 7 is NULL, value 6 has no node (refused).
            let mut slots: Vec<(Vec<u32>, Vec<Prepared>)> = Vec::new();
            let mut distinct: Vec<Vec<Option<NodeId>>> = Vec::new();
            let mut firsts: Vec<(usize, NodeId)> = Vec::new();
            for slot in 0..2 {
                let mut index_of: Vec<Option<u32>> = vec![None; 8];
                let (mut rows, mut nodes) = (Vec::new(), Vec::new());
                for pick in picks.iter().map(|p| p[slot]) {
                    if pick == 7 {
                        rows.push(NULL_VALUE);
                        continue;
                    }
                    let d = *index_of[pick].get_or_insert_with(|| {
                        nodes.push((pick != 6).then_some((slot * 100 + pick) as NodeId));
                        (nodes.len() - 1) as u32
                    });
                    rows.push(d);
                }
                slots.push((rows, Vec::new()));
                distinct.push(nodes);
            }
            let repeats_previous = super::super::prepare::repeats_previous(&slots, picks.len());
            for slot in 0..2 {
                let mut seen = vec![false; distinct[slot].len()];
                for (r, &d) in slots[slot].0.iter().enumerate() {
                    if d != NULL_VALUE && !seen[d as usize] {
                        seen[d as usize] = true;
                        if let Some(node) = distinct[slot][d as usize] {
                            firsts.push((r, node));
                        }
                    }
                }
            }
            firsts.sort_unstable();
            let prepared = PreparedBatch { infos: Vec::new(), rows: picks.len(), slots, repeats_previous };
            let mut ahead = NewValues::new(2);
            let mut named = Vec::new();
            let mut row = 0;
            for &skip in skip_runs.iter().cycle() {
                if row >= picks.len() {
                    break;
                }
                ahead.new_values(&prepared, &distinct, row, |r, node| named.push((row, r, node)));
                // As the writer does: a run of rows repeating the row
                // before at once, or one row.
                let run = prepared.repeats_previous[row..].iter().take_while(|same| **same).count();
                row += if skip && run > 0 { run } else { 1 };
            }
            for &(at, r, _) in &named {
                proptest::prop_assert!(r < at + PREFETCH_ROWS, "row {} named while linking row {}", r, at);
            }
            let mut named: Vec<(usize, NodeId)> = named.into_iter().map(|(_, r, n)| (r, n)).collect();
            named.sort_unstable();
            proptest::prop_assert_eq!(named, firsts);
        }

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
