//! The identity system tables: the durable event and rejection logs, and
//! the relations users query (`profiles`, `profile_identifiers`,
//! `profile_merges`, `identity_rejections`, `profile_lookup(...)`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType, UInt32Type, UInt64Type};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;
use tessera_storage::{ColumnDef, Snapshot, Store, ROW_ID_COLUMN};

use super::graph::{Graph, NodeId, ProfileEvent, ProfileId};
use super::normalize::{key_of, Normalized};
use super::resolve::{filter_targets, target_nodes, unit_may_hold};
use super::spec::{self, TableIdentity, PROFILE_ID_COLUMN};
use super::{timestamp_type, LoggedEvent, Rejections, State, EVENTS_TABLE, REJECTIONS_TABLE};
use crate::error::{to_df, Error, Result};

fn col(name: &str, data_type: DataType, hidden: bool) -> ColumnDef {
    ColumnDef { name: name.into(), data_type, nullable: true, hidden }
}

pub(crate) fn event_columns() -> Vec<ColumnDef> {
    vec![
        col("profile_id", DataType::Int64, false),
        col("event", DataType::Utf8, false),
        col("other_profile_id", DataType::Int64, false),
        col("node", DataType::Int64, true),
        col("via", DataType::Utf8, true),
        col("at", timestamp_type(), false),
        col("source_table", DataType::Utf8, false),
        col("source_row", DataType::Int64, false),
    ]
}

pub(crate) fn rejection_columns() -> Vec<ColumnDef> {
    vec![
        col("at", timestamp_type(), false),
        col("source_table", DataType::Utf8, false),
        col("source_row", DataType::Int64, false),
        col("column_name", DataType::Utf8, false),
        col("identifier_type", DataType::Utf8, false),
        col("value", DataType::Utf8, false),
        col("reason", DataType::Utf8, false),
        col("detail", DataType::Utf8, false),
        col("node", DataType::Int64, true),
    ]
}

fn append_schema(snap: &Snapshot, table: &str) -> Result<SchemaRef> {
    snap.table(table)
        .map(|t| t.meta.append_schema())
        .ok_or_else(|| Error::Internal(format!("system table '{table}' is missing")))
}

pub(crate) fn events_batch(snap: &Snapshot, events: &[LoggedEvent], now: i64) -> Result<RecordBatch> {
    // Column by column rather than row by row through builders: a load
    // logs millions of events (one per new profile), and this runs while
    // the commit waits.
    let fields = |e: &LoggedEvent| -> (u64, &'static str, Option<u64>, Option<NodeId>) {
        match &e.event {
            ProfileEvent::Created { pid, anchor } => (*pid, "created", None, Some(*anchor)),
            ProfileEvent::Merged { retired, survivor, .. } => (*retired, "merged", Some(*survivor), None),
            ProfileEvent::Split { pid, from, anchor } => (*pid, "split", Some(*from), Some(*anchor)),
            ProfileEvent::Moved { pid, anchor } => (*pid, "moved", None, Some(*anchor)),
            ProfileEvent::Deleted { pid } => (*pid, "deleted", None, None),
        }
    };
    let via = |e: &LoggedEvent| -> Option<String> {
        match &e.event {
            ProfileEvent::Merged { via, .. } => Some(via.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")),
            _ => None,
        }
    };
    let n = events.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| fields(e).0 as i64))),
        Arc::new(StringArray::from_iter_values(events.iter().map(|e| fields(e).1))),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| fields(e).2.map(|o| o as i64)))),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| fields(e).3.map(i64::from)))),
        Arc::new(StringArray::from_iter(events.iter().map(via))),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n])),
        Arc::new(StringArray::from_iter(events.iter().map(|e| e.table.as_deref()))),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.row.map(|r| r as i64)))),
    ];
    Ok(RecordBatch::try_new(append_schema(snap, EVENTS_TABLE)?, columns)?)
}

pub(crate) fn rejections_batch(snap: &Snapshot, r: &mut Rejections, now: i64) -> Result<RecordBatch> {
    let strings = |b: &mut arrow::array::StringBuilder| -> ArrayRef { Arc::new(b.finish()) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![now; r.len()])),
        strings(&mut r.table),
        Arc::new(Int64Array::from_iter_values(r.row.iter().map(|x| *x as i64))),
        strings(&mut r.column),
        strings(&mut r.type_name),
        strings(&mut r.value),
        Arc::new(StringArray::from_iter_values(r.reason.iter())),
        strings(&mut r.detail),
        Arc::new(Int64Array::from_iter(r.node.iter().map(|n| n.map(|n| n as i64)))),
    ];
    Ok(RecordBatch::try_new(append_schema(snap, REJECTIONS_TABLE)?, columns)?)
}

/// Read whole columns of a storage table, rows in row-id order.
fn read_table(snap: &Snapshot, table: &str, columns: &[&str]) -> Result<Option<RecordBatch>> {
    let Some(t) = snap.table(table) else { return Ok(None) };
    let mut names = vec![ROW_ID_COLUMN.to_string()];
    names.extend(columns.iter().map(|c| c.to_string()));
    let mut batches = Vec::new();
    for unit in t.scan_units() {
        batches.push(unit.read(&names)?);
    }
    let Some(first) = batches.first() else { return Ok(None) };
    let all = arrow::compute::concat_batches(&first.schema(), &batches)?;
    // Units come in row-id order as a rule; sorting is for when they do not.
    let ordered = all
        .column(0)
        .as_primitive_opt::<arrow::datatypes::UInt64Type>()
        .is_some_and(|ids| ids.null_count() == 0 && ids.values().windows(2).all(|w| w[0] <= w[1]));
    if ordered {
        return Ok(Some(all));
    }
    let order = arrow::compute::sort_to_indices(all.column(0), None, None)?;
    Ok(Some(arrow::compute::take_record_batch(&all, &order)?))
}

/// The event log as `replay_events` reads it (rows in log order).
pub(crate) fn read_events(snap: &Snapshot) -> Result<Option<RecordBatch>> {
    read_table(snap, EVENTS_TABLE, &["profile_id", "event", "other_profile_id", "node", "via", "at"])
}

/// Replay the event log (`read_events`) into a graph whose rows are
/// already linked.
pub(crate) fn replay_events(events: Option<RecordBatch>, graph: &mut Graph) -> Result<()> {
    let Some(b) = events else {
        return Ok(());
    };
    let pid = b.column(1).as_primitive::<Int64Type>();
    let kind = b.column(2).as_string::<i32>();
    let other = b.column(3).as_primitive::<Int64Type>();
    let node = b.column(4).as_primitive::<Int64Type>();
    let via = b.column(5).as_string::<i32>();
    let at = b.column(6).as_primitive::<TimestampMicrosecondType>();
    let bad = |row: usize| Error::Internal(format!("profile event {row} of {EVENTS_TABLE} is malformed"));
    for row in 0..b.num_rows() {
        let p = pid.value(row) as ProfileId;
        let anchor = || -> Result<NodeId> {
            if node.is_null(row) {
                return Err(bad(row));
            }
            u32::try_from(node.value(row)).map_err(|_| bad(row))
        };
        let event = match kind.value(row) {
            "created" => ProfileEvent::Created { pid: p, anchor: anchor()? },
            "merged" => ProfileEvent::Merged {
                retired: p,
                survivor: other.value(row) as ProfileId,
                via: via.value(row).split(',').filter_map(|n| n.parse().ok()).collect(),
            },
            "split" => ProfileEvent::Split { pid: p, from: other.value(row) as ProfileId, anchor: anchor()? },
            "moved" => ProfileEvent::Moved { pid: p, anchor: anchor()? },
            "deleted" => ProfileEvent::Deleted { pid: p },
            _ => return Err(bad(row)),
        };
        let secs = (at.value(row) / 1_000_000).clamp(1, u32::MAX as i64) as u32;
        graph.replay(&event, secs).map_err(|e| Error::Internal(format!("{EVENTS_TABLE} row {row}: {e}")))?;
    }
    Ok(())
}

/// Generic values stay generic across restarts; nodes named by refusals
/// keep their ids.
pub(crate) fn replay_rejections(snap: &Snapshot, state: &mut State) -> Result<()> {
    let Some(b) = read_table(snap, REJECTIONS_TABLE, &["identifier_type", "value", "reason", "node"])? else {
        return Ok(());
    };
    let types = b.column(1).as_string::<i32>();
    let values = b.column(2).as_string::<i32>();
    let reasons = b.column(3).as_string::<i32>();
    let nodes = b.column(4).as_primitive::<Int64Type>();
    for row in 0..b.num_rows() {
        if nodes.is_null(row) {
            continue;
        }
        let Ok(node) = u32::try_from(nodes.value(row)) else { continue };
        let Some(info) = state.types.get(types.value(row)).cloned() else { continue };
        let Normalized::Value(v) = info.normalizer.normalize(values.value(row), &info.spec.blocked) else { continue };
        state
            .graph
            .insert_at(node, info.spec.id, key_of(info.spec.id, &v))
            .map_err(|e| Error::Internal(format!("identity rejections disagree with the rows: {e}")))?;
        match reasons.value(row) {
            "generic" => state.graph.mark_generic(node),
            // Limit conflicts count toward the generic limit (see Graph::link).
            "limit" => state.graph.add_merges(node, 1),
            _ => {}
        }
    }
    Ok(())
}

// ----- relations users query ---------------------------------------------------

/// Which system relation a provider computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SystemRelation {
    Profiles,
    ProfileIdentifiers,
    ProfileMerges,
}

impl SystemRelation {
    pub fn named(name: &str) -> Option<SystemRelation> {
        match name {
            "profiles" => Some(SystemRelation::Profiles),
            "profile_identifiers" => Some(SystemRelation::ProfileIdentifiers),
            "profile_merges" => Some(SystemRelation::ProfileMerges),
            _ => None,
        }
    }

    pub const NAMES: &'static [&'static str] = &["profiles", "profile_identifiers", "profile_merges"];
}

fn ts_field(name: &str) -> Field {
    Field::new(name, timestamp_type(), true)
}

/// A system relation computed from the graph and the rows when scanned.
#[derive(Debug)]
pub(crate) struct SystemTable {
    store: Store,
    state: Arc<RwLock<State>>,
    /// Computed columns of `profiles` and segments for `in_segment`.
    profiles: Option<Arc<crate::profiles::Profiles>>,
    relation: SystemRelation,
    schema: SchemaRef,
    /// The profile a `profile_lookup` call asks for; `None` for all.
    fixed: Option<Lookup>,
}

/// `profile_lookup(type, raw value)`: resolved when the relation is
/// scanned, not when it is planned, so a prepared lookup answers from the
/// graph of each execution (read-your-writes, merges since).
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    pub type_name: String,
    pub raw: String,
}

impl Lookup {
    /// The live profile the identifier (or retired profile id) belongs to.
    fn resolve(&self, state: &State) -> Result<Option<ProfileId>> {
        state.check_usable()?;
        if self.type_name == PROFILE_ID_COLUMN {
            let id: i64 = self
                .raw
                .trim()
                .parse()
                .map_err(|_| Error::user(format!("profile_lookup: '{}' is not a profile id", self.raw)))?;
            return Ok(u64::try_from(id).ok().and_then(|id| state.graph.resolve_alias(id)));
        }
        Ok(state.node_for(&self.type_name, &self.raw)?.and_then(|n| state.graph.profile_of_identifier(n)))
    }
}

/// Identifier source tables and their layouts.
fn identity_tables(snap: &Snapshot) -> Result<Vec<(Arc<tessera_storage::TableSnapshot>, TableIdentity)>> {
    let mut out = Vec::new();
    for t in snap.tables() {
        if let Some(ti) = TableIdentity::of(&t.meta)? {
            out.push((t.clone(), ti));
        }
    }
    Ok(out)
}

impl SystemTable {
    pub fn new(
        store: Store,
        state: Arc<RwLock<State>>,
        profiles: Option<Arc<crate::profiles::Profiles>>,
        relation: SystemRelation,
        fixed: Option<Lookup>,
    ) -> Result<SystemTable> {
        let snap = store.snapshot();
        let schema = match relation {
            SystemRelation::Profiles => {
                let mut fields = vec![
                    Field::new(PROFILE_ID_COLUMN, DataType::Int64, false),
                    ts_field("created_at"),
                    ts_field("last_seen"),
                    Field::new("identifiers", DataType::Int64, false),
                ];
                for name in state.read().types.keys() {
                    fields.push(Field::new(format!("{name}_count"), DataType::Int64, false));
                }
                for (t, _) in identity_tables(&snap)? {
                    fields.push(Field::new(format!("{}_rows", t.name()), DataType::Int64, false));
                }
                if let Some(p) = &profiles {
                    for (name, c) in p.columns.read().iter() {
                        fields.push(Field::new(name, c.compiled.data_type.clone(), true));
                    }
                }
                Schema::new(fields)
            }
            SystemRelation::ProfileIdentifiers => Schema::new(vec![
                Field::new(PROFILE_ID_COLUMN, DataType::Int64, false),
                Field::new("identifier_type", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
                Field::new("sources", DataType::Utf8, true),
                Field::new("rows", DataType::Int64, false),
                ts_field("first_seen"),
                ts_field("last_seen"),
            ]),
            SystemRelation::ProfileMerges => Schema::new(vec![
                Field::new("event", DataType::Utf8, false),
                Field::new(PROFILE_ID_COLUMN, DataType::Int64, false),
                Field::new("other_profile_id", DataType::Int64, true),
                ts_field("at"),
                Field::new("source_table", DataType::Utf8, true),
                Field::new("source_row", DataType::Int64, true),
            ]),
        };
        Ok(SystemTable { store, state, profiles, relation, schema: Arc::new(schema), fixed })
    }

    /// The profiles the filters restrict the relation to (sorted), from
    /// `profile_id = / IN` filters and `in_segment` bitmaps.
    fn targets(&self, filters: &[Expr]) -> Result<Option<roaring::RoaringTreemap>> {
        if self.relation == SystemRelation::ProfileMerges {
            return Ok(None);
        }
        let mut set: Option<roaring::RoaringTreemap> = match &self.fixed {
            Some(lookup) => Some(lookup.resolve(&self.state.read())?.into_iter().collect()),
            None => None,
        };
        let mut narrow = |s: roaring::RoaringTreemap| {
            set = Some(match set.take() {
                Some(old) => old & s,
                None => s,
            });
        };
        if let Some(asked) = filter_targets(filters) {
            narrow(asked.into_iter().collect());
        }
        if let Some(profiles) = &self.profiles {
            for f in filters {
                if let Some(members) = crate::profiles::segment_filter(profiles, f, &|| self.state.read().graph.live_profiles().clone())? {
                    narrow(members);
                }
            }
        }
        Ok(set)
    }

    fn compute(&self, targets: Option<&roaring::RoaringTreemap>, projection: Option<&Vec<usize>>) -> Result<RecordBatch> {
        let snap = self.store.snapshot();
        match self.relation {
            SystemRelation::Profiles => self.profiles(&snap, targets, projection),
            SystemRelation::ProfileIdentifiers => {
                let set: Option<BTreeSet<ProfileId>> = targets.map(|t| t.iter().collect());
                self.identifiers(&snap, set.as_ref())
            }
            SystemRelation::ProfileMerges => self.merges(&snap),
        }
    }

    /// The `profiles` relation, only the projected columns (computing
    /// identifier counts walks each profile's members, and row counts scan
    /// the source tables: skipped unless asked for).
    fn profiles(&self, snap: &Snapshot, targets: Option<&roaring::RoaringTreemap>, projection: Option<&Vec<usize>>) -> Result<RecordBatch> {
        let state = self.state.read();
        state.check_usable()?;
        let graph = &state.graph;
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let wanted = projection.unwrap_or(&all);
        if wanted.is_empty() {
            // count(*): the number of live profiles among the targets.
            let n = match targets {
                Some(t) => t.intersection_len(graph.live_profiles()),
                None => graph.live_profiles().len(),
            };
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n as usize));
            return Ok(RecordBatch::try_new_with_options(Arc::new(self.schema.project(wanted)?), Vec::new(), &options)?);
        }
        // Live profiles (among the targets), ascending: bitmap work only.
        let pids: Vec<ProfileId> = match targets {
            Some(t) => (t & graph.live_profiles()).iter().collect(),
            None => graph.live_profiles().iter().collect(),
        };
        let type_names: Vec<(String, u16)> = state.types.values().map(|t| (t.spec.name.clone(), t.spec.id)).collect();
        let first_rows_column = 4 + type_names.len();
        let tables = identity_tables(snap)?;
        let first_computed = first_rows_column + tables.len();
        let needs_members = wanted.iter().any(|i| (2..first_rows_column).contains(i));
        let members: Vec<Vec<NodeId>> = if needs_members { pids.iter().map(|p| graph.members(*p)).collect() } else { Vec::new() };
        let index: HashMap<ProfileId, usize> =
            if wanted.iter().any(|i| (first_rows_column..first_computed).contains(i)) { pids.iter().enumerate().map(|(i, p)| (*p, i)).collect() } else { HashMap::new() };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(wanted.len());
        for &i in wanted {
            let column: ArrayRef = match i {
                0 => Arc::new(Int64Array::from_iter_values(pids.iter().map(|p| *p as i64))),
                1 => Arc::new(TimestampMicrosecondArray::from_iter_values(
                    pids.iter().map(|p| i64::from(graph.anchor(*p).map(|a| a.created).unwrap_or(0)) * 1_000_000),
                )),
                2 => Arc::new(TimestampMicrosecondArray::from_iter_values(
                    members.iter().map(|m| m.iter().map(|n| i64::from(graph.last_seen(*n))).max().unwrap_or(0) * 1_000_000),
                )),
                3 => Arc::new(Int64Array::from_iter_values(members.iter().map(|m| m.len() as i64))),
                i if i < first_rows_column => {
                    let id = type_names[i - 4].1;
                    Arc::new(Int64Array::from_iter_values(members.iter().map(|m| m.iter().filter(|n| graph.type_of(**n) == id).count() as i64)))
                }
                i if i < first_computed => {
                    let (table, ti) = &tables[i - first_rows_column];
                    let mut counts = vec![0i64; pids.len()];
                    if !pids.is_empty() {
                        let set: Option<BTreeSet<ProfileId>> = targets.map(|t| t.iter().collect());
                        let nodes = set.as_ref().map(|t| target_nodes(&state, t));
                        for_each_row_profile(table, ti, &state, nodes.as_deref(), |pid| {
                            if let Some(i) = index.get(&pid) {
                                counts[*i] += 1;
                            }
                        })?;
                    }
                    Arc::new(Int64Array::from(counts))
                }
                i => {
                    let name = self.schema.field(i).name();
                    let profiles = self.profiles.as_ref().ok_or_else(|| Error::internal("computed profile column without its state"))?;
                    let columns = profiles.columns.read();
                    let state = columns.get(name).ok_or_else(|| Error::user(format!("profile column '{name}' was dropped; run the query again")))?;
                    match targets {
                        None => crate::profiles::columns::values_for_all(state, &pids, graph.live_version())?,
                        Some(_) => crate::profiles::columns::values_for(state, &pids)?,
                    }
                }
            };
            columns.push(column);
        }
        let schema = Arc::new(self.schema.project(wanted)?);
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(pids.len()));
        Ok(RecordBatch::try_new_with_options(schema, columns, &options)?)
    }

    fn identifiers(&self, snap: &Snapshot, targets: Option<&BTreeSet<ProfileId>>) -> Result<RecordBatch> {
        let state = self.state.read();
        state.check_usable()?;
        let graph = &state.graph;
        let pids: Vec<ProfileId> = match targets {
            Some(t) => t.iter().copied().filter(|p| graph.anchor(*p).is_some()).collect(),
            None => {
                let mut v: Vec<ProfileId> = graph.anchors().map(|(p, _)| p).collect();
                v.sort_unstable();
                v
            }
        };
        let mut rows: Vec<(ProfileId, NodeId)> = Vec::new();
        for p in &pids {
            let mut members = graph.members(*p);
            members.sort_unstable();
            rows.extend(members.into_iter().map(|m| (*p, m)));
        }
        let wanted: BTreeSet<NodeId> = rows.iter().map(|(_, n)| *n).collect();
        let sorted: Vec<NodeId> = wanted.iter().copied().collect();
        // Values, sources and first/last seen (commit times of the live
        // rows that linked the value) come from the rows that carry each
        // node.
        let mut values: HashMap<NodeId, String> = HashMap::new();
        let mut sources: HashMap<NodeId, BTreeSet<String>> = HashMap::new();
        let mut seen: HashMap<NodeId, (i64, i64)> = HashMap::new();
        for (table, ti) in identity_tables(snap)? {
            let mut columns = vec![tessera_storage::ROW_ID_COLUMN.to_string()];
            for s in &ti.slots {
                columns.push(s.column.clone());
                columns.push(s.node_column());
            }
            let link_at = columns.len();
            columns.push(spec::LINK_COLUMN.to_string());
            columns.push(spec::SEEN_COLUMN.to_string());
            for unit in table.scan_units() {
                if !unit_may_hold(&unit, &ti, &sorted) {
                    continue;
                }
                let b = unit.read(&columns)?;
                let link = b.column(link_at).as_primitive::<UInt32Type>();
                let at = b.column(link_at + 1).as_primitive::<Int64Type>();
                for (i, s) in ti.slots.iter().enumerate() {
                    let raw = super::strings(b.column(1 + 2 * i))?;
                    let nodes = b.column(2 + 2 * i).as_primitive::<UInt64Type>();
                    let info = state.type_named(&s.type_name)?;
                    for row in 0..b.num_rows() {
                        if nodes.is_null(row) {
                            continue;
                        }
                        let n = nodes.value(row) as NodeId;
                        if !wanted.contains(&n) {
                            continue;
                        }
                        sources.entry(n).or_default().insert(table.name().to_string());
                        if link.is_valid(row) && link.value(row) & (1 << i) != 0 && at.is_valid(row) {
                            // Whole seconds, as `profiles.last_seen` keeps them.
                            let t = at.value(row) - at.value(row).rem_euclid(1_000_000);
                            let e = seen.entry(n).or_insert((t, t));
                            *e = (e.0.min(t), e.1.max(t));
                        }
                        if let std::collections::hash_map::Entry::Vacant(slot) = values.entry(n) {
                            if let Normalized::Value(v) = info.normalizer.normalize(raw.value(row), &info.spec.blocked) {
                                slot.insert(v);
                            }
                        }
                    }
                }
            }
        }
        let type_name: HashMap<u16, String> = state.types.values().map(|t| (t.spec.id, t.spec.name.clone())).collect();
        let mut pid_col = Int64Builder::new();
        let mut type_col = StringBuilder::new();
        let mut value_col = StringBuilder::new();
        let mut source_col = StringBuilder::new();
        let mut rows_col = Int64Builder::new();
        let mut first = Vec::new();
        let mut last = Vec::new();
        for (p, n) in rows {
            pid_col.append_value(p as i64);
            type_col.append_value(type_name.get(&graph.type_of(n)).map(String::as_str).unwrap_or("(dropped)"));
            value_col.append_option(values.get(&n));
            source_col.append_option(sources.get(&n).map(|s| s.iter().cloned().collect::<Vec<_>>().join(",")));
            rows_col.append_value(i64::from(graph.occurrences(n)));
            let (f, l) = seen.get(&n).copied().unwrap_or((0, 0));
            first.push(f);
            last.push(l);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(pid_col.finish()),
            Arc::new(type_col.finish()),
            Arc::new(value_col.finish()),
            Arc::new(source_col.finish()),
            Arc::new(rows_col.finish()),
            Arc::new(TimestampMicrosecondArray::from(first)),
            Arc::new(TimestampMicrosecondArray::from(last)),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn merges(&self, snap: &Snapshot) -> Result<RecordBatch> {
        let Some(b) = read_table(snap, EVENTS_TABLE, &["event", "profile_id", "other_profile_id", "at", "source_table", "source_row"])? else {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        };
        let kind = b.column(1).as_string::<i32>();
        let keep: arrow::array::BooleanArray =
            (0..b.num_rows()).map(|i| Some(matches!(kind.value(i), "merged" | "split" | "deleted"))).collect();
        let kept = arrow::compute::filter_record_batch(&b, &keep)?;
        Ok(RecordBatch::try_new(self.schema.clone(), kept.columns()[1..].to_vec())?)
    }
}

/// Call `f` with the profile of every live row of a table (rows without
/// one are skipped); only units that may hold `nodes` when given.
fn for_each_row_profile(
    table: &tessera_storage::TableSnapshot,
    ti: &TableIdentity,
    state: &State,
    nodes: Option<&[NodeId]>,
    mut f: impl FnMut(ProfileId),
) -> Result<()> {
    let mut columns: Vec<String> = ti.slots.iter().map(|s| s.node_column()).collect();
    columns.push(super::spec::LINK_COLUMN.into());
    for unit in table.scan_units() {
        if let Some(n) = nodes {
            if !unit_may_hold(&unit, ti, n) {
                continue;
            }
        }
        let b = unit.read(&columns)?;
        let ids = super::resolve::profile_ids(state, &b, 0, ti.slots.len()).map_err(|e| Error::Internal(e.to_string()))?;
        for id in ids.iter().flatten() {
            f(id as ProfileId);
        }
    }
    Ok(())
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Segment filters on `profiles` are answered exactly from the
        // bitmaps; the rest are narrowed here and checked again above.
        Ok(filters
            .iter()
            .map(|f| {
                if self.relation == SystemRelation::Profiles && self.profiles.is_some() && crate::profiles::is_segment_filter(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut targets = self.targets(filters).map_err(to_df)?;
        if self.relation == SystemRelation::Profiles {
            // Maintenance re-evaluating a segment for some profiles only.
            if let Some(only) = state.config().get_extension::<crate::profiles::OnlyProfiles>() {
                targets = Some(match targets {
                    Some(t) => t & only.0.as_ref(),
                    None => (*only.0).clone(),
                });
            }
        }
        let batch = self.compute(targets.as_ref(), projection).map_err(to_df)?;
        if self.relation == SystemRelation::Profiles {
            // Already projected.
            let mem = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            return mem.scan(state, None, &[], limit).await;
        }
        let mem = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        mem.scan(state, projection, &[], limit).await
    }
}

/// `profile_lookup('type', 'raw value')`: the `profiles` row of the
/// profile holding that identifier (type `profile_id` takes any id ever
/// issued and finds the surviving profile).
#[derive(Debug)]
pub(crate) struct ProfileLookup {
    pub store: Store,
    pub state: Arc<RwLock<State>>,
    pub profiles: Arc<crate::profiles::Profiles>,
}

fn string_arg(e: &Expr, what: &str) -> DfResult<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => Ok(s.clone()),
        Expr::Literal(ScalarValue::Int64(Some(i)), _) => Ok(i.to_string()),
        Expr::Literal(ScalarValue::Int32(Some(i)), _) => Ok(i.to_string()),
        other => Err(to_df(Error::user(format!("profile_lookup: {what} must be a constant string, got {other}")))),
    }
}

impl TableFunctionImpl for ProfileLookup {
    fn call(&self, args: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        if args.len() != 2 {
            return Err(to_df(Error::user(format!(
                "profile_lookup takes 2 arguments (identifier type, value), got {}",
                args.len()
            ))));
        }
        let lookup = Lookup { type_name: string_arg(&args[0], "the identifier type")?, raw: string_arg(&args[1], "the value")? };
        // Resolved now only to report a bad type or id at planning; the
        // scan resolves it again against the graph it runs with.
        lookup.resolve(&self.state.read()).map_err(to_df)?;
        let fixed = lookup;
        let table = SystemTable::new(self.store.clone(), self.state.clone(), Some(self.profiles.clone()), SystemRelation::Profiles, Some(fixed)).map_err(to_df)?;
        Ok(Arc::new(table))
    }
}

/// `profile_link_path('type', 'value', 'type', 'value')`: why two
/// identifiers belong to one profile: the shortest chain of identifiers
/// between them, each step with a source row that links the pair. Empty
/// when they are not in one profile.
#[derive(Debug)]
pub(crate) struct LinkPath {
    pub store: Store,
    pub state: Arc<RwLock<State>>,
}

/// Most steps a path may have (a limit on everything).
const MAX_PATH_NODES: usize = 100_000;

fn link_path_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("step", DataType::Int64, false),
        Field::new("from_type", DataType::Utf8, false),
        Field::new("from_value", DataType::Utf8, true),
        Field::new("to_type", DataType::Utf8, false),
        Field::new("to_value", DataType::Utf8, true),
        Field::new("source_table", DataType::Utf8, true),
        Field::new("source_row", DataType::Int64, true),
    ]))
}

/// Shortest path between two nodes over live edges (breadth first).
fn shortest_path(graph: &Graph, from: NodeId, to: NodeId) -> Option<Vec<NodeId>> {
    let mut previous: HashMap<NodeId, NodeId> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    previous.insert(from, from);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![to];
            let mut at = to;
            while at != from {
                at = previous[&at];
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        if previous.len() > MAX_PATH_NODES {
            return None;
        }
        for m in graph.neighbours(n) {
            if let std::collections::hash_map::Entry::Vacant(e) = previous.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    None
}

/// A row that links two identifiers: its table, its row id and the
/// normalized values it holds for both.
type LinkingRow = (String, u64, Option<String>, Option<String>);

/// A live row that links nodes `a` and `b`, with the normalized values it
/// holds for both.
fn row_linking(snap: &Snapshot, state: &State, a: NodeId, b: NodeId) -> Result<Option<LinkingRow>> {
    let mut pair = [a, b];
    pair.sort_unstable();
    for (table, ti) in identity_tables(snap)? {
        let mut columns = vec![ROW_ID_COLUMN.to_string(), super::spec::LINK_COLUMN.to_string()];
        for s in &ti.slots {
            columns.push(s.column.clone());
            columns.push(s.node_column());
        }
        for unit in table.scan_units() {
            if !unit_may_hold(&unit, &ti, &pair) {
                continue;
            }
            let batch = unit.read(&columns)?;
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let link = batch.column(1).as_primitive::<UInt32Type>();
            for row in 0..batch.num_rows() {
                if link.is_null(row) {
                    continue;
                }
                let mask = link.value(row);
                let mut found: [Option<String>; 2] = [None, None];
                let mut hits = [false, false];
                for (i, s) in ti.slots.iter().enumerate() {
                    let nodes = batch.column(3 + 2 * i).as_primitive::<UInt64Type>();
                    if mask & (1 << i) == 0 || nodes.is_null(row) {
                        continue;
                    }
                    let n = nodes.value(row) as NodeId;
                    for (k, want) in [a, b].iter().enumerate() {
                        if n == *want && !hits[k] {
                            hits[k] = true;
                            let raw = super::strings(batch.column(2 + 2 * i))?;
                            let info = state.type_named(&s.type_name)?;
                            if let Normalized::Value(v) = info.normalizer.normalize(raw.value(row), &info.spec.blocked) {
                                found[k] = Some(v);
                            }
                        }
                    }
                }
                if hits[0] && hits[1] {
                    let [va, vb] = found;
                    return Ok(Some((table.name().to_string(), ids.value(row), va, vb)));
                }
            }
        }
    }
    Ok(None)
}

impl TableFunctionImpl for LinkPath {
    fn call(&self, args: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        if args.len() != 4 {
            return Err(to_df(Error::user(format!(
                "profile_link_path takes 4 arguments (type, value, type, value), got {}",
                args.len()
            ))));
        }
        let ends = [
            (string_arg(&args[0], "the first identifier type")?, string_arg(&args[1], "the first value")?),
            (string_arg(&args[2], "the second identifier type")?, string_arg(&args[3], "the second value")?),
        ];
        {
            // Unknown types are reported at planning; the path itself is
            // found when the relation is scanned, in the graph of that
            // moment (a prepared statement sees later rows).
            let state = self.state.read();
            state.check_usable().map_err(to_df)?;
            for (t, v) in &ends {
                state.node_for(t, v).map_err(to_df)?;
            }
        }
        Ok(Arc::new(LinkPathTable { store: self.store.clone(), state: self.state.clone(), ends, schema: link_path_schema() }))
    }
}

/// The relation `profile_link_path(...)` returns, computed at scan time.
#[derive(Debug)]
struct LinkPathTable {
    store: Store,
    state: Arc<RwLock<State>>,
    ends: [(String, String); 2],
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for LinkPathTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.path_batch()?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?.scan(state, projection, filters, limit).await
    }
}

impl LinkPathTable {
    fn path_batch(&self) -> DfResult<RecordBatch> {
        let [(ta, va), (tb, vb)] = &self.ends;
        let schema = self.schema.clone();
        let state = self.state.read();
        state.check_usable().map_err(to_df)?;
        let a = state.node_for(ta, va).map_err(to_df)?;
        let b = state.node_for(tb, vb).map_err(to_df)?;
        let type_name: HashMap<u16, String> = state.types.values().map(|t| (t.spec.id, t.spec.name.clone())).collect();
        let mut step = Int64Builder::new();
        let (mut from_t, mut from_v, mut to_t, mut to_v, mut table) =
            (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
        let mut row_id = Int64Builder::new();
        let path = match (a, b) {
            (Some(a), Some(b)) if state.graph.profile_of(a).is_some() && state.graph.profile_of(a) == state.graph.profile_of(b) => {
                shortest_path(&state.graph, a, b)
            }
            _ => None,
        };
        let snap = self.store.snapshot();
        for (i, pair) in path.unwrap_or_default().windows(2).enumerate() {
            let found = row_linking(&snap, &state, pair[0], pair[1]).map_err(to_df)?;
            let name = |n: NodeId| type_name.get(&state.graph.type_of(n)).cloned().unwrap_or_default();
            step.append_value(i as i64 + 1);
            from_t.append_value(name(pair[0]));
            to_t.append_value(name(pair[1]));
            match found {
                Some((t, r, x, y)) => {
                    from_v.append_option(x);
                    to_v.append_option(y);
                    table.append_value(t);
                    row_id.append_value(r as i64);
                }
                None => {
                    from_v.append_null();
                    to_v.append_null();
                    table.append_null();
                    row_id.append_null();
                }
            }
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(step.finish()),
                Arc::new(from_t.finish()),
                Arc::new(from_v.finish()),
                Arc::new(to_t.finish()),
                Arc::new(to_v.finish()),
                Arc::new(table.finish()),
                Arc::new(row_id.finish()),
            ],
        )?;
        Ok(batch)
    }
}

/// `profile_of('type', 'raw value')`: the profile id holding that
/// identifier, or NULL (type `profile_id` maps any id ever issued to the
/// surviving one). A scalar function, so drivers can bind its arguments
/// as parameters: `WHERE profile_id = profile_of($1, $2)` is folded to a
/// constant before planning and becomes a profile lookup.
pub(crate) fn profile_of_udf(state: Arc<RwLock<State>>) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let fun = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let rows = args
            .iter()
            .find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                ColumnarValue::Scalar(_) => None,
            })
            .unwrap_or(1);
        let columns: Vec<ArrayRef> = args.iter().map(|a| a.to_array(rows)).collect::<DfResult<_>>()?;
        let types = arrow::compute::cast(&columns[0], &DataType::Utf8)?;
        let values = arrow::compute::cast(&columns[1], &DataType::Utf8)?;
        let (types, values) = (types.as_string::<i32>(), values.as_string::<i32>());
        let state = state.read();
        state.check_usable().map_err(to_df)?;
        let mut out = Int64Builder::with_capacity(rows);
        for i in 0..rows {
            if types.is_null(i) || values.is_null(i) {
                out.append_null();
                continue;
            }
            let (t, v) = (types.value(i), values.value(i));
            let pid = if t == PROFILE_ID_COLUMN {
                v.trim().parse::<u64>().ok().and_then(|id| state.graph.resolve_alias(id))
            } else {
                state.node_for(t, v).map_err(to_df)?.and_then(|n| state.graph.profile_of_identifier(n))
            };
            out.append_option(pid.map(|p| p as i64));
        }
        let result: ArrayRef = Arc::new(out.finish());
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?));
        }
        Ok(ColumnarValue::Array(result))
    };
    datafusion::logical_expr::create_udf(
        "profile_of",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Int64,
        Volatility::Stable,
        Arc::new(fun),
    )
}
