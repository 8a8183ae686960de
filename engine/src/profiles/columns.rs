//! Computed columns of `profiles`: traits (an aggregate over one event
//! table) and attributes (one value chosen among several source columns by
//! a survivorship rule).
//!
//! Each column compiles to one SQL query returning, per profile, the value
//! `v` and an ordering key (`r` the source rank, `t` the row time in
//! nanoseconds). The same query runs over all rows (full computation),
//! over the rows of some profiles (after deletes, merges and splits) and
//! over just-inserted rows (a delta that is combined with the kept value
//! when the aggregate allows it).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use tessera_sql::{ProfileColumnDef, ProfileColumnKind};
use tessera_storage::{Snapshot, TableMeta};

use crate::error::{Error, Result};
use crate::identity::graph::ProfileId;
use crate::identity::spec::{IDENTIFIERS_OPTION, PROFILE_ID_COLUMN};

/// Metadata key prefix of persisted profile column definitions.
pub(crate) const COLUMN_KEY_PREFIX: &str = "profile_column/";
/// Table option naming the column that says when a row's facts were true.
pub(crate) const TIME_COLUMN_OPTION: &str = "time_column";

/// How a delta over new rows folds into the kept value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Combine {
    Add,
    Min,
    Max,
    /// Keep the row that sorts first by this order.
    Pick(PickOrder),
    /// The value cannot be updated from new rows alone: recompute the
    /// profile from all its rows.
    Recompute,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PickOrder {
    /// Earliest time, then smallest value.
    First,
    /// Latest time, then largest value.
    Last,
    /// Best rank, then latest time, then largest value.
    SourcePriority,
    /// Latest time, then best rank, then largest value.
    MostRecent,
    /// Earliest time, then best rank, then largest value.
    Oldest,
}

/// One source of a column: a table and the expression read from it.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub table: String,
    /// SQL expression of the value (`None`: count rows).
    pub value: Option<String>,
    /// SQL expression of the row time in nanoseconds, if the table
    /// declares a time column.
    pub time: Option<String>,
    /// The time column's name (for windows).
    pub time_column: Option<String>,
}

/// A column definition checked against the catalog and turned into SQL.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    pub def: ProfileColumnDef,
    pub sources: Vec<Source>,
    pub combine: Combine,
    /// Output type (known once the query has been planned).
    pub data_type: DataType,
}

/// A profile's value with the key that decides between values.
#[derive(Clone, Debug)]
pub(crate) struct Cell {
    pub value: ScalarValue,
    pub rank: i64,
    pub time: Option<i64>,
    /// Per source: rows with ids below this are already counted in the
    /// value (it was computed from a snapshot holding them).
    pub as_of: Box<[u64]>,
}

/// (column version, sorted profile ids, their values).
type SortedValues = (u64, Arc<Vec<ProfileId>>, ArrayRef);

/// A computed column and its values.
#[derive(Debug)]
pub(crate) struct ColumnState {
    pub compiled: Compiled,
    pub cells: HashMap<ProfileId, Cell>,
    /// Per source: row id boundary of the last full computation.
    pub full_as_of: Box<[u64]>,
    /// Set when the values must be computed from scratch before use.
    pub stale: bool,
    /// Bumped at every change of `cells`.
    pub version: u64,
    /// The values as one array over the sorted profile ids, for the
    /// version it was built at.
    pub cache: parking_lot::Mutex<Option<SortedValues>>,
    /// The values aligned with every live profile: (column version, live
    /// set version, array). Whole-table scans of `profiles` reuse it.
    pub aligned: parking_lot::Mutex<Option<(u64, u64, ArrayRef)>>,
}

impl ColumnState {
    pub fn new(compiled: Compiled) -> ColumnState {
        let n = compiled.sources.len();
        ColumnState {
            compiled,
            cells: HashMap::new(),
            full_as_of: vec![0; n].into(),
            stale: true,
            version: 0,
            cache: parking_lot::Mutex::new(None),
            aligned: parking_lot::Mutex::new(None),
        }
    }

    /// Record that `cells` changed.
    pub fn touched(&mut self) {
        self.version += 1;
    }

    /// Sorted profile ids with values, and the values in that order.
    fn sorted(&self) -> Result<(Arc<Vec<ProfileId>>, ArrayRef)> {
        let mut cache = self.cache.lock();
        if let Some((v, keys, values)) = cache.as_ref() {
            if *v == self.version {
                return Ok((keys.clone(), values.clone()));
            }
        }
        let mut keys: Vec<ProfileId> = self.cells.keys().copied().collect();
        keys.sort_unstable();
        let values = if keys.is_empty() {
            arrow::array::new_empty_array(&self.compiled.data_type)
        } else {
            let array = ScalarValue::iter_to_array(keys.iter().map(|k| self.cells[k].value.clone()))?;
            if array.data_type() == &self.compiled.data_type { array } else { cast(&array, &self.compiled.data_type)? }
        };
        let keys = Arc::new(keys);
        *cache = Some((self.version, keys.clone(), values.clone()));
        Ok((keys, values))
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn table_meta<'a>(snap: &'a Snapshot, table: &str) -> Result<&'a TableMeta> {
    let t = snap.table(table).ok_or_else(|| Error::user(format!("table '{table}' does not exist")))?;
    if !t.meta.options.contains_key(IDENTIFIERS_OPTION) {
        return Err(Error::user(format!(
            "table '{table}' has no identifiers, so its rows belong to no profile; declare them with ALTER TABLE {table} SET (identifiers = 'column AS type, ...')"
        )));
    }
    Ok(&t.meta)
}

fn time_of(meta: &TableMeta) -> (Option<String>, Option<String>) {
    match meta.options.get(TIME_COLUMN_OPTION) {
        Some(c) => (Some(format!("CAST(CAST({} AS TIMESTAMP) AS BIGINT)", quote(c))), Some(c.clone())),
        None => (None, None),
    }
}

impl Compiled {
    /// Check a definition against the tables of a snapshot.
    pub fn new(def: ProfileColumnDef, snap: &Snapshot) -> Result<Compiled> {
        let f = def.function.as_str();
        let mut sources = Vec::new();
        match def.kind {
            ProfileColumnKind::Trait => {
                let table = &def.sources[0].table;
                let meta = table_meta(snap, table)?;
                let (time, time_column) = time_of(meta);
                let value = match (f, &def.argument) {
                    ("count", None) => None,
                    (_, Some(a)) => Some(a.clone()),
                    (_, None) => return Err(Error::user(format!("{f} needs an argument"))),
                };
                sources.push(Source { table: table.clone(), value, time, time_column });
            }
            ProfileColumnKind::Attribute => {
                for s in &def.sources {
                    let meta = table_meta(snap, &s.table)?;
                    if !meta.columns.iter().any(|c| !c.hidden && c.name == s.column) {
                        return Err(Error::user(format!("table '{}' has no column '{}'", s.table, s.column)));
                    }
                    let (time, time_column) = time_of(meta);
                    sources.push(Source { table: s.table.clone(), value: Some(quote(&s.column)), time, time_column });
                }
            }
        }
        let needs_time = matches!(f, "first" | "last" | "most_recent" | "oldest") || def.window.is_some();
        if needs_time {
            if let Some(s) = sources.iter().find(|s| s.time.is_none()) {
                return Err(Error::user(format!(
                    "{} needs to know when each row happened, and table '{}' declares no time column; declare one with ALTER TABLE {} SET (time_column = 'column')",
                    if def.window.is_some() { "a window".to_string() } else { format!("'{f}'") },
                    s.table,
                    s.table
                )));
            }
        }
        let combine = match f {
            "count" | "sum" => Combine::Add,
            "min" => Combine::Min,
            "max" => Combine::Max,
            "first" => Combine::Pick(PickOrder::First),
            "last" => Combine::Pick(PickOrder::Last),
            "source_priority" => Combine::Pick(PickOrder::SourcePriority),
            "most_recent" => Combine::Pick(PickOrder::MostRecent),
            "oldest" => Combine::Pick(PickOrder::Oldest),
            _ => Combine::Recompute,
        };
        Ok(Compiled { def, sources, combine, data_type: DataType::Null })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.table.as_str())
    }

    /// Values change with the clock alone (a window).
    pub fn time_relative(&self) -> bool {
        self.def.window.is_some()
    }

    /// Profiles with no rows get this (0 for counts, NULL otherwise).
    pub fn empty_value(&self) -> Result<ScalarValue> {
        match self.def.function.as_str() {
            "count" | "count_distinct" => Ok(ScalarValue::Int64(Some(0))),
            _ => Ok(ScalarValue::try_from(&self.data_type)?),
        }
    }

    /// The query computing `(profile_id, v, r, t)` from the given sources
    /// (`table_names[i]` replaces source i's table; `None` skips it).
    pub fn sql(&self, table_names: &[Option<String>]) -> String {
        let f = self.def.function.as_str();
        let skip_nulls = !matches!(f, "count" | "sum" | "avg");
        let mut parts = Vec::new();
        for (rank, (source, name)) in self.sources.iter().zip(table_names).enumerate() {
            let Some(name) = name else { continue };
            let value = source.value.clone().unwrap_or_else(|| "1".to_string());
            let time = source.time.clone().unwrap_or_else(|| "CAST(NULL AS BIGINT)".to_string());
            let mut conditions = vec![format!("{PROFILE_ID_COLUMN} IS NOT NULL")];
            if skip_nulls {
                conditions.push(format!("({value}) IS NOT NULL"));
            }
            if matches!(f, "first" | "last") {
                conditions.push(format!("({time}) IS NOT NULL"));
            }
            if let Some(filter) = &self.def.filter {
                conditions.push(format!("({filter})"));
            }
            if let (Some(window), Some(col)) = (&self.def.window, &source.time_column) {
                conditions.push(format!("{} >= now() - {window}", quote(col)));
            }
            parts.push(format!(
                "SELECT {PROFILE_ID_COLUMN}, {value} AS v, CAST({rank} AS BIGINT) AS r, {time} AS t FROM {} WHERE {}",
                quote(name),
                conditions.join(" AND ")
            ));
        }
        let union = parts.join(" UNION ALL ");
        let grouped = |aggregate: &str, time: &str| {
            format!("WITH u AS ({union}) SELECT {PROFILE_ID_COLUMN}, {aggregate} AS v, CAST(0 AS BIGINT) AS r, {time} AS t FROM u GROUP BY {PROFILE_ID_COLUMN}")
        };
        let pick = |order: &str| {
            format!(
                "WITH u AS ({union}) SELECT {PROFILE_ID_COLUMN}, v, r, t FROM (SELECT {PROFILE_ID_COLUMN}, v, r, t, row_number() OVER (PARTITION BY {PROFILE_ID_COLUMN} ORDER BY {order}) AS rn FROM u) WHERE rn = 1"
            )
        };
        let no_time = "CAST(NULL AS BIGINT)";
        let cap = self.def.cap.unwrap_or(tessera_sql::DEFAULT_LIST_CAP);
        match f {
            "count" => grouped("count(v)", no_time),
            "sum" | "avg" | "min" | "max" => grouped(&format!("{f}(v)"), no_time),
            "count_distinct" => grouped("count(DISTINCT v)", no_time),
            "first" => grouped("first_value(v ORDER BY t ASC, v ASC)", "min(t)"),
            "last" => grouped("last_value(v ORDER BY t ASC, v ASC)", "max(t)"),
            "unique_list" => grouped(&format!("array_slice(array_sort(array_agg(DISTINCT v)), 1, {cap})"), no_time),
            "most_frequent" => format!(
                "WITH u AS ({union}), c AS (SELECT {PROFILE_ID_COLUMN}, v, count(*) AS n FROM u GROUP BY {PROFILE_ID_COLUMN}, v) \
                 SELECT {PROFILE_ID_COLUMN}, v, CAST(0 AS BIGINT) AS r, {no_time} AS t FROM \
                 (SELECT {PROFILE_ID_COLUMN}, v, row_number() OVER (PARTITION BY {PROFILE_ID_COLUMN} ORDER BY n DESC, CAST(v AS VARCHAR) ASC) AS rn FROM c) WHERE rn = 1"
            ),
            "source_priority" => pick("r ASC, t DESC NULLS LAST, v DESC"),
            "most_recent" => pick("t DESC NULLS LAST, r ASC, v DESC"),
            "oldest" => pick("t ASC NULLS LAST, r ASC, v DESC"),
            // Parsing admits no other function.
            _ => grouped("count(v)", no_time),
        }
    }

    /// Every source under its own name.
    pub fn own_tables(&self) -> Vec<Option<String>> {
        self.sources.iter().map(|s| Some(s.table.clone())).collect()
    }

    /// Row id boundaries of the sources in a snapshot.
    pub fn as_of(&self, snap: &Snapshot) -> Box<[u64]> {
        self.sources.iter().map(|s| snap.table(&s.table).map(|t| t.next_row_id()).unwrap_or(0)).collect()
    }
}

/// The rows of a result as `(profile, cell)`, values cast to `data_type`.
pub(crate) fn cells_of(batches: &[RecordBatch], data_type: &DataType, as_of: &[u64]) -> Result<Vec<(ProfileId, Cell)>> {
    let mut out = Vec::new();
    for b in batches {
        if b.num_columns() != 4 {
            return Err(Error::internal("profile column query returned an unexpected shape"));
        }
        let pids = cast(b.column(0), &DataType::Int64)?;
        let pids = pids.as_primitive::<Int64Type>();
        let values: ArrayRef = if b.column(1).data_type() == data_type { b.column(1).clone() } else { cast(b.column(1), data_type)? };
        let ranks = cast(b.column(2), &DataType::Int64)?;
        let ranks = ranks.as_primitive::<Int64Type>();
        let times = cast(b.column(3), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        for row in 0..b.num_rows() {
            if pids.is_null(row) || pids.value(row) <= 0 {
                continue;
            }
            let cell = Cell {
                value: ScalarValue::try_from_array(&values, row)?,
                rank: if ranks.is_null(row) { 0 } else { ranks.value(row) },
                time: (!times.is_null(row)).then(|| times.value(row)),
                as_of: as_of.into(),
            };
            out.push((pids.value(row) as ProfileId, cell));
        }
    }
    Ok(out)
}

/// Sort key comparison: `Less` means `a` wins.
fn pick_order(order: PickOrder, a: &Cell, b: &Cell) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    // NULL times sort last in both directions.
    let time_asc = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let time_desc = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (Some(x), Some(y)) => y.cmp(&x),
        other => time_asc(other.0, other.1),
    };
    let value_asc = a.value.partial_cmp(&b.value).unwrap_or(Ordering::Equal);
    let value_desc = value_asc.reverse();
    match order {
        PickOrder::First => time_asc(a.time, b.time).then(value_asc),
        PickOrder::Last => time_desc(a.time, b.time).then(value_desc),
        PickOrder::SourcePriority => a.rank.cmp(&b.rank).then(time_desc(a.time, b.time)).then(value_desc),
        PickOrder::MostRecent => time_desc(a.time, b.time).then(a.rank.cmp(&b.rank)).then(value_desc),
        PickOrder::Oldest => time_asc(a.time, b.time).then(a.rank.cmp(&b.rank)).then(value_desc),
    }
}

/// Fold a delta cell into a kept one.
pub(crate) fn combine(how: Combine, kept: &mut Cell, new: Cell) -> Result<()> {
    use std::cmp::Ordering;
    match how {
        Combine::Add => {
            if kept.value.is_null() {
                kept.value = new.value;
            } else if !new.value.is_null() {
                kept.value = kept.value.add(&new.value)?;
            }
        }
        Combine::Min | Combine::Max => {
            let wanted = if how == Combine::Min { Ordering::Less } else { Ordering::Greater };
            if kept.value.is_null() || new.value.partial_cmp(&kept.value) == Some(wanted) {
                kept.value = new.value;
            }
        }
        Combine::Pick(order) => {
            if pick_order(order, &new, kept) == Ordering::Less {
                kept.value = new.value;
                kept.rank = new.rank;
                kept.time = new.time;
            }
        }
        Combine::Recompute => return Err(Error::internal("combine called on a column that must be recomputed")),
    }
    Ok(())
}

/// The column's values for every live profile (`pids`, of live-set
/// version `live_version`), cached until either changes.
pub(crate) fn values_for_all(state: &ColumnState, pids: &[ProfileId], live_version: u64) -> Result<ArrayRef> {
    if let Some((v, l, array)) = state.aligned.lock().as_ref() {
        if *v == state.version && *l == live_version && array.len() == pids.len() {
            return Ok(array.clone());
        }
    }
    let array = values_for(state, pids)?;
    *state.aligned.lock() = Some((state.version, live_version, array.clone()));
    Ok(array)
}

/// The column's values for `pids` (sorted ascending), in order: a merge
/// of the sorted ids with the cached sorted values, then one `take`.
pub(crate) fn values_for(state: &ColumnState, pids: &[ProfileId]) -> Result<ArrayRef> {
    debug_assert!(pids.windows(2).all(|w| w[0] < w[1]), "profile ids must be sorted and distinct");
    let cached = state.cache.lock().as_ref().is_some_and(|(v, _, _)| *v == state.version);
    if !cached && pids.len() < state.cells.len() / 16 {
        // A few profiles (a lookup, a segment re-evaluated for changed
        // profiles): read them directly rather than rebuild the array.
        let empty = state.compiled.empty_value()?;
        if pids.is_empty() {
            return Ok(arrow::array::new_empty_array(&state.compiled.data_type));
        }
        let array = ScalarValue::iter_to_array(pids.iter().map(|p| state.cells.get(p).map(|c| c.value.clone()).unwrap_or_else(|| empty.clone())))?;
        return if array.data_type() == &state.compiled.data_type { Ok(array) } else { Ok(cast(&array, &state.compiled.data_type)?) };
    }
    let (keys, values) = state.sorted()?;
    let mut indices = arrow::array::UInt32Builder::with_capacity(pids.len());
    let mut k = 0usize;
    for p in pids {
        while k < keys.len() && keys[k] < *p {
            k += 1;
        }
        if k < keys.len() && keys[k] == *p {
            indices.append_value(k as u32);
        } else {
            indices.append_null();
        }
    }
    let taken = arrow::compute::take(values.as_ref(), &indices.finish(), None)?;
    let empty = state.compiled.empty_value()?;
    if empty.is_null() || taken.null_count() == 0 {
        return Ok(taken);
    }
    // Counts are 0, not NULL, for profiles without rows.
    let missing = arrow::compute::is_null(&taken)?;
    let fill = empty.to_scalar()?;
    Ok(arrow::compute::kernels::zip::zip(&missing, &fill, &taken)?)
}
