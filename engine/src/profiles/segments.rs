//! Segments: audiences defined by a query returning `profile_id`, kept as
//! a bitmap of member profiles, with every entry and exit recorded in
//! `segment_changes`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Int64Type};
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};
use tessera_sql::sqlparser::ast::{
    self as sql, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem, SetExpr,
    TableFactor, Value,
};
use tessera_sql::{DFStatement, Statement};
use tessera_storage::{ColumnDef, Snapshot};

use crate::error::{Error, Result};
use crate::identity::spec::{IDENTIFIERS_OPTION, PROFILE_ID_COLUMN};

/// Metadata key prefix of persisted segment definitions.
pub(crate) const SEGMENT_KEY_PREFIX: &str = "segment/";
/// The table of membership changes.
pub const CHANGES_TABLE: &str = "segment_changes";
/// Most segments one database may define.
pub(crate) const MAX_SEGMENTS: usize = 1_000;
/// Longest segment name.
pub(crate) const MAX_NAME_BYTES: usize = 63;

/// A segment as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SegmentDef {
    pub name: String,
    pub query: String,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
}

/// Entered or exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    Entered,
    Exited,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Entered => "entered",
            Change::Exited => "exited",
        }
    }
}

/// Why a membership changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Rows were inserted, updated or deleted.
    Data,
    /// Time passed (a condition relative to now).
    Clock,
    /// Profiles merged.
    Merge,
    /// A profile split.
    Split,
    /// The segment was created, replaced or dropped.
    Definition,
    /// `REFRESH SEGMENT` found a difference.
    Refresh,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Data => "data",
            Cause::Clock => "clock",
            Cause::Merge => "merge",
            Cause::Split => "split",
            Cause::Definition => "definition",
            Cause::Refresh => "refresh",
        }
    }
}

/// One entry into or exit from a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentChange {
    pub segment: String,
    pub profile_id: i64,
    pub change: Change,
    /// Microseconds since the epoch.
    pub at: i64,
    pub cause: Cause,
}

impl SegmentChange {
    /// The change as SUBSCRIBE sends it: one tab-separated line of
    /// segment, profile id, change, time (UTC) and cause.
    pub fn text_line(&self) -> String {
        let at = arrow::temporal_conversions::timestamp_us_to_datetime(self.at)
            .map(|t| t.to_string())
            .unwrap_or_else(|| self.at.to_string());
        format!("{}\t{}\t{}\t{}\t{}\n", self.segment, self.profile_id, self.change.as_str(), at, self.cause.as_str())
    }
}

/// What the maintenance needs to know about a definition.
#[derive(Clone, Debug, Default)]
pub(crate) struct Analysis {
    /// Relations the query names (tables, views, system relations).
    pub relations: BTreeSet<String>,
    /// Segments named in `in_segment(...)` calls.
    pub segments: BTreeSet<String>,
    /// A profile's membership depends only on that profile's rows, so a
    /// change can be evaluated for the changed profiles alone.
    pub per_profile: bool,
    /// The query reads the clock (`now()` and friends).
    pub reads_clock: bool,
}

/// A segment with its members.
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub def: SegmentDef,
    pub analysis: Analysis,
    pub members: Arc<RoaringTreemap>,
    /// Evaluate from scratch at the next maintenance.
    pub stale: bool,
    /// When it was last evaluated in full (micros).
    pub evaluated_at: i64,
}

/// Parse a definition and learn what it reads.
pub(crate) fn analyze(query: &str, snap: &Snapshot) -> Result<Analysis> {
    let statements = tessera_sql::parse(query)?;
    let [Statement::DataFusion(statement)] = statements.as_slice() else {
        return Err(Error::user("a segment is defined by one query"));
    };
    let DFStatement::Statement(inner) = statement.as_ref() else {
        return Err(Error::user("a segment is defined by a query (SELECT ...)"));
    };
    let sql::Statement::Query(q) = inner.as_ref() else {
        return Err(Error::user("a segment is defined by a query (SELECT ...)"));
    };
    let mut analysis = Analysis::default();
    let mut problem = None;
    let mut nested = false;
    let _ = sql::visit_expressions(q, |e: &SqlExpr| {
        match e {
            SqlExpr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                if f.over.is_some() {
                    nested = true;
                }
                match name.as_str() {
                    "in_segment" => match segment_argument(&f.args) {
                        Some(s) => {
                            analysis.segments.insert(s);
                        }
                        None => problem = Some("in_segment needs the segment name as a string literal, e.g. in_segment(profile_id, 'high_value')".to_string()),
                    },
                    "now" | "current_timestamp" | "current_date" | "current_time" | "localtimestamp" | "localtime" | "to_timestamp" => {
                        analysis.reads_clock |= name != "to_timestamp";
                    }
                    _ => {}
                }
            }
            SqlExpr::Subquery(_) | SqlExpr::InSubquery { .. } | SqlExpr::Exists { .. } => nested = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    let lowered = query.to_ascii_lowercase();
    analysis.reads_clock |= ["current_timestamp", "current_date", "current_time", "localtimestamp"].iter().any(|k| lowered.contains(k));
    if let Some(p) = problem {
        return Err(Error::user(p));
    }
    let _ = sql::visit_relations(q, |r: &sql::ObjectName| {
        if let Some(last) = r.0.last().and_then(|p| p.as_ident()) {
            let name = if last.quote_style.is_some() { last.value.clone() } else { last.value.to_lowercase() };
            analysis.relations.insert(name);
        }
        ControlFlow::<()>::Continue(())
    });
    analysis.per_profile = !nested && per_profile(q, snap);
    Ok(analysis)
}

fn segment_argument(args: &FunctionArguments) -> Option<String> {
    let FunctionArguments::List(list) = args else { return None };
    match list.args.get(1)? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `SELECT [DISTINCT] profile_id FROM <profiles or one source table>
/// [WHERE ...] [GROUP BY profile_id [HAVING ...]]`, with no joins, set
/// operations, ordering, limits, subqueries or window functions: then a
/// profile's membership depends on its own rows only.
fn per_profile(q: &sql::Query, snap: &Snapshot) -> bool {
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return false;
    }
    let SetExpr::Select(s) = q.body.as_ref() else { return false };
    let [from] = s.from.as_slice() else { return false };
    if !from.joins.is_empty() {
        return false;
    }
    let TableFactor::Table { name, args: None, .. } = &from.relation else { return false };
    let Some(table) = name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()) else { return false };
    let profile_relation = table == "profiles"
        || snap.table(&table).is_some_and(|t| t.meta.options.contains_key(IDENTIFIERS_OPTION));
    if !profile_relation {
        return false;
    }
    let is_pid = |e: &SqlExpr| match e {
        SqlExpr::Identifier(i) => i.value.eq_ignore_ascii_case(PROFILE_ID_COLUMN),
        SqlExpr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| i.value.eq_ignore_ascii_case(PROFILE_ID_COLUMN)),
        _ => false,
    };
    let projection_ok = match s.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] => is_pid(e),
        [SelectItem::ExprWithAlias { expr, alias }] => is_pid(expr) && alias.value.eq_ignore_ascii_case(PROFILE_ID_COLUMN),
        _ => false,
    };
    let grouping_ok = match &s.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => {
            modifiers.is_empty() && (exprs.is_empty() && s.having.is_none() || matches!(exprs.as_slice(), [e] if is_pid(e)))
        }
        GroupByExpr::All(_) => false,
    };
    projection_ok && grouping_ok && s.qualify.is_none() && s.named_window.is_empty()
}

/// Columns of the changes table.
pub(crate) fn change_columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new("segment", DataType::Utf8, false),
        ColumnDef::new(PROFILE_ID_COLUMN, DataType::Int64, false),
        ColumnDef::new("change", DataType::Utf8, false),
        ColumnDef::new("at", crate::identity::timestamp_type(), false),
        ColumnDef::new("cause", DataType::Utf8, false),
    ]
}

/// Changes as a batch in the table's append schema.
pub(crate) fn changes_batch(snap: &Snapshot, changes: &[SegmentChange]) -> Result<RecordBatch> {
    let schema = snap
        .table(CHANGES_TABLE)
        .map(|t| t.meta.append_schema())
        .ok_or_else(|| Error::internal("segment_changes table is missing"))?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.segment.as_str()))),
        Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.profile_id))),
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.change.as_str()))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(changes.iter().map(|c| c.at))),
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.cause.as_str()))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Membership as the changes table records it, per segment.
pub(crate) fn replay_changes(snap: &Snapshot) -> Result<BTreeMap<String, RoaringTreemap>> {
    let mut out: BTreeMap<String, RoaringTreemap> = BTreeMap::new();
    let Some(table) = snap.table(CHANGES_TABLE) else { return Ok(out) };
    let columns = vec!["segment".to_string(), PROFILE_ID_COLUMN.to_string(), "change".to_string()];
    for unit in table.scan_units() {
        let b = unit.read(&columns)?;
        let segments = b.column(0).as_string::<i32>();
        let pids = b.column(1).as_primitive::<Int64Type>();
        let changes = b.column(2).as_string::<i32>();
        for row in 0..b.num_rows() {
            if segments.is_null(row) || pids.is_null(row) || pids.value(row) < 0 {
                continue;
            }
            let members = out.entry(segments.value(row).to_string()).or_default();
            let pid = pids.value(row) as u64;
            if changes.value(row) == Change::Entered.as_str() {
                members.insert(pid);
            } else {
                members.remove(pid);
            }
        }
    }
    Ok(out)
}

/// Segments in an order where each comes after those it reads.
pub(crate) fn evaluation_order(segments: &BTreeMap<String, SegmentState>) -> Vec<String> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(name: &str, segments: &BTreeMap<String, SegmentState>, done: &mut BTreeSet<String>, order: &mut Vec<String>, depth: usize) {
        if depth > MAX_SEGMENTS || done.contains(name) {
            return;
        }
        let Some(s) = segments.get(name) else { return };
        for dep in &s.analysis.segments {
            visit(dep, segments, done, order, depth + 1);
        }
        if done.insert(name.to_string()) {
            order.push(name.to_string());
        }
    }
    for name in segments.keys() {
        visit(name, segments, &mut done, &mut order, 0);
    }
    order
}

/// True when `from` reads `to`, directly or through other segments.
pub(crate) fn reaches(segments: &BTreeMap<String, SegmentState>, from: &BTreeSet<String>, to: &str) -> bool {
    let mut stack: Vec<String> = from.iter().cloned().collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = stack.pop() {
        if name == to {
            return true;
        }
        if seen.insert(name.clone()) {
            if let Some(s) = segments.get(&name) {
                stack.extend(s.analysis.segments.iter().cloned());
            }
        }
    }
    false
}

/// Members of a result: distinct positive ids of its first column.
pub(crate) fn members_of(batches: &[RecordBatch]) -> Result<RoaringTreemap> {
    let mut out = RoaringTreemap::new();
    for b in batches {
        let ids = arrow::compute::cast(b.column(0), &DataType::Int64)?;
        let ids = ids.as_primitive::<Int64Type>();
        for id in ids.iter().flatten() {
            if id > 0 {
                out.insert(id as u64);
            }
        }
    }
    Ok(out)
}
