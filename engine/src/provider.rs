//! The DataFusion `TableProvider` over a storage table: scans with
//! projection, statistics pruning and limit pushdown; INSERT, DELETE,
//! UPDATE and TRUNCATE as transactions.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::compute::{and, cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::DFSchema;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::common::stats::Precision;
use datafusion::common::Statistics;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, StatisticsArgs};
use futures::StreamExt;
use tessera_storage::{RowIdSet, ScanUnit, Snapshot, Store, TableMeta, TableSnapshot, ROW_ID_COLUMN};

use crate::error::{to_df, Error};
use crate::identity::resolve::{filter_targets, target_nodes, unit_may_hold, ResolveExec};
use crate::identity::spec::{TableIdentity, PROFILE_ID_COLUMN};
use crate::identity::{Identity, RESERVED_NAMES};

/// The snapshot a statement reads, pinned in the session config when the
/// statement starts, so every scan of one statement sees the same state.
#[derive(Debug)]
pub(crate) struct PinnedSnapshot(pub Arc<Snapshot>);

/// A storage table as DataFusion sees it: only its visible columns.
#[derive(Debug)]
pub(crate) struct TesseraTable {
    store: Store,
    meta: Arc<TableMeta>,
    /// The visible columns, plus `profile_id` for a table with identifiers.
    schema: SchemaRef,
    /// The visible stored columns only.
    stored: SchemaRef,
    identity: Arc<Identity>,
    layout: Option<TableIdentity>,
}

impl TesseraTable {
    pub(crate) fn new(store: Store, meta: Arc<TableMeta>, identity: Arc<Identity>) -> Self {
        let stored = visible_schema(&meta);
        // A declaration that no longer parses shows as a table without
        // profiles rather than hiding the table.
        let layout = TableIdentity::of(&meta).ok().flatten();
        let schema = match &layout {
            Some(_) => {
                let mut fields: Vec<Field> = stored.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(PROFILE_ID_COLUMN, DataType::Int64, true));
                Arc::new(Schema::new(fields))
            }
            None => stored.clone(),
        };
        TesseraTable { store, meta, schema, stored, identity, layout }
    }

    /// Writes to system tables are the engine's alone.
    fn check_writable(&self) -> DfResult<()> {
        if RESERVED_NAMES.contains(&self.meta.name.as_str()) {
            return Err(to_df(Error::user(format!("system table '{}' cannot be changed directly", self.meta.name))));
        }
        Ok(())
    }

    fn snapshot_table(&self, state: &dyn Session) -> DfResult<Arc<TableSnapshot>> {
        let snap = state
            .config()
            .get_extension::<PinnedSnapshot>()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| self.store.snapshot());
        snap.table_by_id(self.meta.id).cloned().ok_or_else(|| {
            to_df(Error::user(format!("table '{}' was dropped while the statement ran", self.meta.name)))
        })
    }

    /// Whether the scan applies `filter` to the rows it returns: a filter
    /// that reads stored columns only (and at least one).
    fn applies_exactly(&self, filter: &Expr) -> bool {
        let columns = filter.column_refs();
        !columns.is_empty() && columns.iter().all(|c| self.stored.field_with_name(&c.name).is_ok())
    }

    fn physical_filters(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        if filters.iter().any(|f| f.column_refs().iter().any(|c| c.name == PROFILE_ID_COLUMN) && self.layout.is_some()) {
            return Err(to_df(Error::Unsupported(
                "DELETE and UPDATE cannot filter on profile_id; filter on the identifier columns".into(),
            )));
        }
        let df_schema = DFSchema::try_from(self.stored.clone())?;
        filters.iter().map(|f| state.create_physical_expr(f.clone(), &df_schema)).collect()
    }
}

/// The columns users see: every column that is not hidden.
pub(crate) fn visible_schema(meta: &TableMeta) -> SchemaRef {
    let fields: Vec<Field> = meta
        .columns
        .iter()
        .filter(|c| !c.hidden)
        .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl TableProvider for TesseraTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters prune pages by their statistics. Those on stored columns
        // are then applied to the rows by the scan itself (`LateFilter`),
        // so DataFusion adds no filter of its own; a filter on
        // `profile_id` or on no column at all is left for DataFusion to
        // apply to what the scan returns.
        Ok(filters
            .iter()
            .map(|f| match self.applies_exactly(f) {
                true => TableProviderFilterPushDown::Exact,
                false => TableProviderFilterPushDown::Inexact,
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
        let table = self.snapshot_table(state)?;
        let mut units = table.scan_units();
        let total = units.len();
        let pid_index = self.layout.as_ref().map(|_| self.stored.fields().len());
        let (pid_filters, stored_filters): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|f| pid_index.is_some() && f.column_refs().iter().any(|c| c.name == PROFILE_ID_COLUMN));
        let exact: Vec<Expr> = stored_filters.iter().filter(|f| self.applies_exactly(f)).cloned().collect();
        let keep = crate::pruning::units_to_read(state, &self.stored, &stored_filters, &units)?;
        units = units.into_iter().zip(keep).filter_map(|(u, k)| k.then_some(u)).collect();
        // DataFusion relies on the scan for these: failing to set them up
        // must be an error, never rows left unfiltered.
        let late = match conjunction(exact) {
            Some(predicate) => Some(LateFilter::new(state, &self.stored, predicate)?),
            None => None,
        };
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let projected = Arc::new(self.schema.project(&projection)?);
        // Profiles are resolved only when profile_id is read or filtered on.
        // Maintenance re-evaluating a segment for some profiles only.
        let only = state.config().get_extension::<crate::profiles::OnlyProfiles>();
        let wants_profiles = pid_index.is_some_and(|p| projection.contains(&p)) || !pid_filters.is_empty() || only.is_some();
        let (Some(layout), Some(pid_index), true) = (&self.layout, pid_index, wants_profiles) else {
            let columns: Vec<String> = projected.fields().iter().map(|f| f.name().clone()).collect();
            let partitions = split_contiguous(units, state.config().target_partitions());
            return Ok(Arc::new(ScanExec::new(self.meta.name.clone(), partitions, columns, projected, limit, total, late)));
        };
        // Profile lookups: `profile_id = X` keeps only X's rows and skips
        // units whose node ids cannot hold X's identifiers.
        let targets = filter_targets(&pid_filters).map(|t| {
            let state = self.identity.read();
            t.into_iter().filter(|p| state.graph.anchor(*p).is_some()).collect::<std::collections::BTreeSet<u64>>()
        });
        let targets = match (targets, only) {
            (t, None) => t,
            (Some(t), Some(only)) => Some(t.into_iter().filter(|p| only.0.contains(*p)).collect()),
            (None, Some(only)) => {
                let state = self.identity.read();
                Some((only.0.as_ref() & state.graph.live_profiles()).iter().collect())
            }
        };
        if let Some(t) = &targets {
            let nodes = target_nodes(&self.identity.read(), t);
            units.retain(|u| unit_may_hold(u, layout, &nodes));
        }
        let pid_position = projection.iter().position(|i| *i == pid_index);
        let user: Vec<usize> = projection.iter().copied().filter(|i| *i != pid_index).collect();
        let mut fields: Vec<Field> = user.iter().map(|i| self.stored.field(*i).clone()).collect();
        let user_columns = fields.len();
        for s in &layout.slots {
            fields.push(Field::new(s.node_column(), DataType::UInt64, true));
        }
        fields.push(Field::new(crate::identity::spec::LINK_COLUMN, DataType::UInt32, true));
        let columns: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let inner_schema = Arc::new(Schema::new(fields));
        let partitions = split_contiguous(units, state.config().target_partitions());
        // A limit below a profile filter would cut rows before filtering.
        let inner_limit = if targets.is_some() { None } else { limit };
        let scan = Arc::new(ScanExec::new(self.meta.name.clone(), partitions, columns, inner_schema, inner_limit, total, late));
        Ok(Arc::new(ResolveExec::new(
            scan,
            self.identity.state().clone(),
            projected,
            pid_position,
            user_columns,
            layout.slots.len(),
            targets,
        )))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.check_writable()?;
        let replace = match insert_op {
            InsertOp::Append => false,
            InsertOp::Overwrite | InsertOp::Replace => true,
        };
        let sink = InsertSink {
            store: self.store.clone(),
            meta: self.meta.clone(),
            schema: self.schema.clone(),
            replace,
            identity: self.identity.clone(),
            computed_pid: self.layout.is_some(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(&self, state: &dyn Session, filters: Vec<Expr>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.check_writable()?;
        let filters = self.physical_filters(state, &filters)?;
        Ok(Arc::new(DmlExec::new(self.store.clone(), self.meta.clone(), self.stored.clone(), self.identity.clone(), DmlKind::Delete { filters })))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.check_writable()?;
        let df_schema = DFSchema::try_from(self.stored.clone())?;
        let mut physical = Vec::with_capacity(assignments.len());
        for (name, expr) in assignments {
            if name == PROFILE_ID_COLUMN && self.layout.is_some() {
                return Err(to_df(Error::user("profile_id is computed from the identifiers; it cannot be assigned")));
            }
            let index = self.stored.index_of(&name).map_err(|_| {
                to_df(Error::user(format!("column '{name}' of table '{}' does not exist", self.meta.name)))
            })?;
            physical.push((index, state.create_physical_expr(expr, &df_schema)?));
        }
        let filters = self.physical_filters(state, &filters)?;
        Ok(Arc::new(DmlExec::new(
            self.store.clone(),
            self.meta.clone(),
            self.stored.clone(),
            self.identity.clone(),
            DmlKind::Update { filters, assignments: physical },
        )))
    }

    async fn truncate(&self, _state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.check_writable()?;
        Ok(Arc::new(DmlExec::new(
            self.store.clone(),
            self.meta.clone(),
            self.stored.clone(),
            self.identity.clone(),
            DmlKind::Delete { filters: Vec::new() },
        )))
    }
}

/// Split units into at most `n` contiguous runs of similar row counts.
fn split_contiguous(units: Vec<ScanUnit>, n: usize) -> Vec<Vec<ScanUnit>> {
    let n = n.max(1).min(units.len().max(1));
    let total: usize = units.iter().map(|u| u.num_rows()).sum();
    let per = total.div_ceil(n).max(1);
    let mut out: Vec<Vec<ScanUnit>> = vec![Vec::new()];
    let mut rows = 0;
    for u in units {
        if rows >= per && out.len() < n {
            out.push(Vec::new());
            rows = 0;
        }
        rows += u.num_rows();
        if let Some(last) = out.last_mut() {
            last.push(u);
        }
    }
    out
}

/// The methods every leaf execution plan of ours has in common.
macro_rules! leaf_plan_methods {
    () => {
        fn properties(&self) -> &Arc<PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            vec![]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
        ) -> DfResult<TreeNodeRecursion> {
            Ok(TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: Arc<Self>,
            _children: Vec<Arc<dyn ExecutionPlan>>,
        ) -> DfResult<Arc<dyn ExecutionPlan>> {
            Ok(self)
        }
    };
}

/// Reads scan units, a partition at a time, decoding lazily.
#[derive(Debug)]
pub(crate) struct ScanExec {
    table: String,
    partitions: Vec<Vec<ScanUnit>>,
    columns: Vec<String>,
    schema: SchemaRef,
    limit: Option<usize>,
    total_units: usize,
    late: Option<Arc<LateFilter>>,
    properties: Arc<PlanProperties>,
}

impl ScanExec {
    fn new(
        table: String,
        partitions: Vec<Vec<ScanUnit>>,
        columns: Vec<String>,
        schema: SchemaRef,
        limit: Option<usize>,
        total_units: usize,
        late: Option<LateFilter>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        let late = late.map(Arc::new);
        ScanExec { table, partitions, columns, schema, limit, total_units, late, properties: Arc::new(properties) }
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kept: usize = self.partitions.iter().map(|p| p.len()).sum();
        write!(
            f,
            "TesseraScan: table={}, projection=[{}], units={kept} of {}",
            self.table,
            self.columns.join(", "),
            self.total_units
        )?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        if let Some(late) = &self.late {
            write!(f, ", filter_first=[{}]", late.columns.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "TesseraScan"
    }

    leaf_plan_methods!();

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let units = self.partitions.get(partition).cloned().unwrap_or_default();
        let reader = UnitReader {
            units: units.into_iter(),
            columns: self.columns.clone(),
            schema: self.schema.clone(),
            remaining: self.limit,
            late: self.late.clone(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(reader))))
    }

    /// An upper bound on the rows (deletes and the early filter only
    /// remove some), so the planner does not spread a scan of a few pages
    /// over threads: handing one small batch to another task costs more
    /// than reading it.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let units: Vec<&ScanUnit> = match args.partition() {
            Some(p) => self.partitions.get(p).map(|units| units.iter().collect()).unwrap_or_default(),
            None => self.partitions.iter().flatten().collect(),
        };
        let mut rows: usize = units.iter().map(|u| u.num_rows()).sum();
        if let Some(limit) = self.limit {
            rows = rows.min(limit);
        }
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Inexact(rows);
        Ok(Arc::new(stats))
    }
}

/// Decodes one unit per `next`, skipping units left empty by deletes and
/// stopping at the limit.
struct UnitReader {
    units: std::vec::IntoIter<ScanUnit>,
    columns: Vec<String>,
    schema: SchemaRef,
    remaining: Option<usize>,
    late: Option<Arc<LateFilter>>,
}

/// The filters the scan applies (see `applies_exactly`), with late
/// materialization: read the columns the filter needs, evaluate it, and
/// decode the other projected columns only for units with matches.
#[derive(Debug)]
struct LateFilter {
    columns: Vec<String>,
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
}

impl LateFilter {
    fn new(state: &dyn Session, table: &SchemaRef, predicate: Expr) -> DfResult<Self> {
        let wanted: std::collections::BTreeSet<String> = predicate.column_refs().into_iter().map(|c| c.name.clone()).collect();
        let fields: Vec<Field> = table.fields().iter().filter(|f| wanted.contains(f.name())).map(|f| f.as_ref().clone()).collect();
        if fields.is_empty() || fields.len() != wanted.len() {
            return Err(to_df(Error::internal(format!("scan filter {predicate} reads columns the table does not store"))));
        }
        let schema = Arc::new(Schema::new(fields));
        let df_schema = DFSchema::try_from(schema.clone())?;
        let predicate = state.create_physical_expr(predicate, &df_schema)?;
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(LateFilter { columns, schema, predicate })
    }

    /// The unit's projected rows that pass the filter; `None` when none do.
    fn read(&self, unit: &ScanUnit, projected: &[String]) -> DfResult<Option<RecordBatch>> {
        let pre = unit.read(&self.columns).map_err(to_df)?;
        if pre.num_rows() == 0 {
            return Ok(None);
        }
        let pre = RecordBatch::try_new(self.schema.clone(), pre.columns().to_vec())?;
        let mask = self.predicate.evaluate(&pre)?.into_array(pre.num_rows())?;
        let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
            return Err(to_df(Error::internal(format!("scan filter returned {}, not booleans", mask.data_type()))));
        };
        if mask.true_count() == 0 {
            return Ok(None);
        }
        let rest: Vec<String> = projected.iter().filter(|c| !self.columns.contains(c)).cloned().collect();
        let others = unit.read(&rest).map_err(to_df)?;
        let mut arrays = Vec::with_capacity(projected.len());
        let mut fields = Vec::with_capacity(projected.len());
        for name in projected {
            let (batch, i) = match pre.schema().index_of(name) {
                Ok(i) => (&pre, i),
                Err(_) => (&others, others.schema().index_of(name)?),
            };
            arrays.push(batch.column(i).clone());
            fields.push(batch.schema().field(i).clone());
        }
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(pre.num_rows()));
        let full = RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)?;
        Ok(Some(filter_record_batch(&full, mask)?))
    }
}

impl Iterator for UnitReader {
    type Item = DfResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.remaining == Some(0) {
                return None;
            }
            let unit = self.units.next()?;
            let batch = match &self.late {
                Some(late) => match late.read(&unit, &self.columns) {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                },
                None => match unit.read(&self.columns) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(to_df(e))),
                },
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            let mut batch = match RecordBatch::try_new_with_options(self.schema.clone(), batch.columns().to_vec(), &options) {
                Ok(b) => b,
                Err(e) => return Some(Err(e.into())),
            };
            if let Some(left) = self.remaining.as_mut() {
                if batch.num_rows() > *left {
                    batch = batch.slice(0, *left);
                }
                *left -= batch.num_rows();
            }
            return Some(Ok(batch));
        }
    }
}

/// Commits INSERT's rows as one transaction once the input is complete.
#[derive(Debug)]
struct InsertSink {
    store: Store,
    meta: Arc<TableMeta>,
    schema: SchemaRef,
    replace: bool,
    identity: Arc<Identity>,
    /// The last column is the computed profile_id, dropped before storing.
    computed_pid: bool,
}

impl DisplayAs for InsertSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TesseraInsert: table={}", self.meta.name)
    }
}

#[async_trait]
impl DataSink for InsertSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(&self, mut data: SendableRecordBatchStream, _context: &Arc<TaskContext>) -> DfResult<u64> {
        let mut batches = Vec::new();
        while let Some(batch) = data.next().await {
            let batch = batch?;
            // The computed profile_id arrives as a column of NULLs.
            let batch = match batch.schema().index_of(PROFILE_ID_COLUMN) {
                Ok(i) if self.computed_pid => {
                    if batch.column(i).null_count() != batch.num_rows() {
                        return Err(to_df(Error::user("profile_id is computed from the identifiers; it cannot be inserted")));
                    }
                    let keep: Vec<usize> = (0..batch.num_columns()).filter(|c| *c != i).collect();
                    batch.project(&keep)?
                }
                _ => batch,
            };
            batches.push(batch);
        }
        let store = self.store.clone();
        let meta = self.meta.clone();
        let replace = self.replace;
        let identity = self.identity.clone();
        let rows = tokio::task::spawn_blocking(move || -> crate::Result<u64> {
            let mut txn = store.begin_write()?;
            let mut writer = identity.writer_for(&txn, &meta)?;
            if replace {
                let all = all_row_ids(txn.snapshot(), &meta)?;
                if let Some(w) = writer.as_mut() {
                    w.unlink_ids(&meta, &all)?;
                }
                txn.delete(&meta.name, &all)?;
            }
            for batch in batches {
                let mut full = with_hidden_columns(&meta, &batch)?;
                if let Some(w) = writer.as_mut() {
                    full = w.resolve(&meta, full, txn.next_row_id(&meta.name)?)?;
                }
                txn.append(&meta.name, full)?;
            }
            Ok(crate::identity::commit(&store, txn, writer)?.rows_appended)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(to_df)?;
        Ok(rows)
    }
}

/// Build a full storage row batch from a batch of the visible columns
/// (hidden columns NULL), renaming fields to the table's names.
pub(crate) fn with_hidden_columns(meta: &TableMeta, visible: &RecordBatch) -> crate::Result<RecordBatch> {
    let visible_count = meta.columns.iter().filter(|c| !c.hidden).count();
    if visible.num_columns() != visible_count {
        return Err(Error::user(format!(
            "table '{}' has {visible_count} columns, the rows given have {}",
            meta.name,
            visible.num_columns()
        )));
    }
    let mut arrays = Vec::with_capacity(meta.columns.len());
    let mut next = 0;
    for c in &meta.columns {
        if c.hidden {
            arrays.push(arrow::array::new_null_array(&c.data_type, visible.num_rows()));
        } else {
            // Bound parameters can arrive in a sibling type (Utf8 for a
            // Utf8View column); convert strictly, never silently to NULL.
            let column = visible.column(next);
            let column = if column.data_type() == &c.data_type {
                column.clone()
            } else {
                let strict = CastOptions { safe: false, ..Default::default() };
                cast_with_options(column, &c.data_type, &strict).map_err(|e| {
                    Error::user(format!("value for column '{}' does not fit type {}: {e}", c.name, c.data_type))
                })?
            };
            arrays.push(column);
            next += 1;
        }
    }
    let schema = meta.append_schema();
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(visible.num_rows()));
    RecordBatch::try_new_with_options(schema, arrays, &options).map_err(|e| {
        Error::user(format!("rows do not fit table '{}': {e}", meta.name))
    })
}

/// Every live row id of a table in a snapshot.
fn all_row_ids(snap: &Snapshot, meta: &TableMeta) -> crate::Result<RowIdSet> {
    let table = snap
        .table_by_id(meta.id)
        .ok_or_else(|| Error::user(format!("table '{}' was dropped", meta.name)))?;
    let mut ids = RowIdSet::new();
    for unit in table.scan_units() {
        let batch = unit.read(&[ROW_ID_COLUMN.to_string()])?;
        ids.extend(batch.column(0).as_primitive::<UInt64Type>().values().iter().copied());
    }
    Ok(ids)
}

#[derive(Debug)]
enum DmlKind {
    Delete { filters: Vec<Arc<dyn PhysicalExpr>> },
    Update { filters: Vec<Arc<dyn PhysicalExpr>>, assignments: Vec<(usize, Arc<dyn PhysicalExpr>)> },
}

/// Runs a DELETE or UPDATE as one transaction when executed (not when
/// planned, so EXPLAIN changes nothing).
#[derive(Debug)]
struct DmlExec {
    store: Store,
    meta: Arc<TableMeta>,
    visible: SchemaRef,
    identity: Arc<Identity>,
    kind: Arc<DmlKind>,
    properties: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

impl DmlExec {
    fn new(store: Store, meta: Arc<TableMeta>, visible: SchemaRef, identity: Arc<Identity>, kind: DmlKind) -> Self {
        let schema = count_schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DmlExec { store, meta, visible, identity, kind: Arc::new(kind), properties: Arc::new(properties) }
    }
}

impl DisplayAs for DmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let what = match self.kind.as_ref() {
            DmlKind::Delete { .. } => "Delete",
            DmlKind::Update { .. } => "Update",
        };
        write!(f, "Tessera{what}: table={}", self.meta.name)
    }
}

impl ExecutionPlan for DmlExec {
    fn name(&self) -> &str {
        "TesseraDml"
    }

    leaf_plan_methods!();

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let store = self.store.clone();
        let meta = self.meta.clone();
        let visible = self.visible.clone();
        let kind = self.kind.clone();
        let identity = self.identity.clone();
        let schema = count_schema();
        let out_schema = schema.clone();
        let fut = async move {
            let count = tokio::task::spawn_blocking(move || run_dml(&store, &meta, &visible, &identity, &kind))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .map_err(to_df)?;
            let batch = RecordBatch::try_new(out_schema, vec![Arc::new(UInt64Array::from(vec![count]))])?;
            Ok(batch)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::once(fut))))
    }
}

/// Evaluate the filters against every live row of the latest state and
/// apply the change, all under the writer lock.
fn run_dml(store: &Store, meta: &TableMeta, visible: &SchemaRef, identity: &Identity, kind: &DmlKind) -> crate::Result<u64> {
    let mut txn = store.begin_write()?;
    let mut writer = identity.writer_for(&txn, meta)?;
    let snap = txn.snapshot().clone();
    let table = snap
        .table_by_id(meta.id)
        .ok_or_else(|| Error::user(format!("table '{}' was dropped", meta.name)))?;
    let mut columns = vec![ROW_ID_COLUMN.to_string()];
    columns.extend(table.meta.columns.iter().map(|c| c.name.clone()));
    let visible_idx: Vec<usize> = table
        .meta
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.hidden)
        .map(|(i, _)| i + 1)
        .collect();
    let (filters, assignments) = match kind {
        DmlKind::Delete { filters } => (filters, None),
        DmlKind::Update { filters, assignments } => (filters, Some(assignments)),
    };
    let mut doomed = RowIdSet::new();
    let mut replacements = Vec::new();
    for unit in table.scan_units() {
        let batch = unit.read(&columns)?;
        if batch.num_rows() == 0 {
            continue;
        }
        let user = RecordBatch::try_new(visible.clone(), visible_idx.iter().map(|i| batch.column(*i).clone()).collect())?;
        let mask = match filter_mask(filters, &user)? {
            Some(m) => m,
            None => BooleanArray::from(vec![true; batch.num_rows()]),
        };
        let matched = filter_record_batch(&batch, &mask)?;
        if matched.num_rows() == 0 {
            continue;
        }
        doomed.extend(matched.column(0).as_primitive::<UInt64Type>().values().iter().copied());
        if let Some(w) = writer.as_mut() {
            w.unlink(&table.meta, &matched)?;
        }
        if let Some(assignments) = assignments {
            let matched_user = filter_record_batch(&user, &mask)?;
            replacements.push(updated_rows(&table.meta, &matched, &matched_user, &visible_idx, assignments)?);
        }
    }
    let count = txn.delete(&meta.name, &doomed)?;
    for mut rows in replacements {
        if let Some(w) = writer.as_mut() {
            rows = w.resolve(&table.meta, rows, txn.next_row_id(&meta.name)?)?;
        }
        txn.append(&meta.name, rows)?;
    }
    crate::identity::commit(store, txn, writer)?;
    Ok(count)
}

/// AND of all filters, NULL counting as false.
fn filter_mask(filters: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> crate::Result<Option<BooleanArray>> {
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        let value = f.evaluate(batch)?.into_array(batch.num_rows())?;
        let value = value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| Error::user("WHERE condition is not a boolean"))?
            .clone();
        mask = Some(match mask {
            Some(m) => and(&m, &value)?,
            None => value,
        });
    }
    Ok(mask.map(|m| m.iter().map(|v| Some(v == Some(true))).collect()))
}

/// The new versions of matched rows: assigned columns evaluated and cast
/// to the column type (an overflow or bad value is an error, never a
/// silent NULL); others copied, hidden ones included.
fn updated_rows(
    meta: &TableMeta,
    matched: &RecordBatch,
    matched_user: &RecordBatch,
    visible_idx: &[usize],
    assignments: &[(usize, Arc<dyn PhysicalExpr>)],
) -> crate::Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = (1..matched.num_columns()).map(|i| matched.column(i).clone()).collect();
    let strict = CastOptions { safe: false, ..Default::default() };
    for (visible_pos, expr) in assignments {
        let storage_col = visible_idx[*visible_pos] - 1;
        let column = &meta.columns[storage_col];
        let value = expr.evaluate(matched_user)?.into_array(matched_user.num_rows())?;
        let value = if value.data_type() == &column.data_type {
            value
        } else {
            cast_with_options(&value, &column.data_type, &strict).map_err(|e| {
                Error::user(format!("value for column '{}' does not fit type {}: {e}", column.name, column.data_type))
            })?
        };
        arrays[storage_col] = value;
    }
    RecordBatch::try_new(meta.append_schema(), arrays).map_err(|e| Error::user(e.to_string()))
}

