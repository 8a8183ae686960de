//! The resolution operator: computes the virtual `profile_id` column of a
//! table with identifiers at scan time, by a gather from each row's stored
//! node id through the union-find to the component's stable profile id.
//! No join and no normalization at query time, so a merge shows in every
//! query at once without rewriting rows.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, UInt32Type, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use parking_lot::RwLock;
use tessera_storage::{ScanUnit, StatValue};

use super::graph::{NodeId, ProfileId};
use super::spec::{TableIdentity, PROFILE_ID_COLUMN};
use super::State;
use crate::error::to_df;

/// The profile ids a filter on `profile_id` asks for (`=` or `IN` with
/// literals), if it is such a filter.
pub(crate) fn profile_targets(filter: &Expr) -> Option<Vec<i64>> {
    let literal = |e: &Expr| -> Option<i64> {
        match e {
            Expr::Literal(v, _) => match v {
                ScalarValue::Int64(Some(x)) => Some(*x),
                ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
                ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
                ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
                ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
                _ => None,
            },
            _ => None,
        }
    };
    let is_pid = |e: &Expr| matches!(e, Expr::Column(c) if c.name == PROFILE_ID_COLUMN);
    match filter {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            if is_pid(&b.left) {
                literal(&b.right).map(|v| vec![v])
            } else if is_pid(&b.right) {
                literal(&b.left).map(|v| vec![v])
            } else {
                None
            }
        }
        Expr::InList(l) if !l.negated && is_pid(&l.expr) => l.list.iter().map(literal).collect(),
        _ => None,
    }
}

/// The profiles a conjunction of filters restricts `profile_id` to
/// (`None`: no such filter).
pub(crate) fn filter_targets(filters: &[Expr]) -> Option<BTreeSet<ProfileId>> {
    let mut targets: Option<BTreeSet<ProfileId>> = None;
    for f in filters {
        if let Some(ids) = profile_targets(f) {
            let set: BTreeSet<ProfileId> = ids.into_iter().filter_map(|i| u64::try_from(i).ok()).filter(|i| *i > 0).collect();
            targets = Some(match targets {
                Some(t) => t.intersection(&set).copied().collect(),
                None => set,
            });
        }
    }
    targets
}

/// Adds `profile_id` to the rows of its input (the scan, which also
/// reads the hidden node and link columns) and drops those columns.
#[derive(Debug)]
pub(crate) struct ResolveExec {
    input: Arc<dyn ExecutionPlan>,
    state: Arc<RwLock<State>>,
    /// Output: the projected columns with `profile_id` at `pid_position`
    /// (or not at all when only a filter needed it).
    schema: SchemaRef,
    pid_position: Option<usize>,
    /// How many leading input columns are user columns.
    user_columns: usize,
    slots: usize,
    /// Keep only rows of these profiles (a `profile_id = ...` filter).
    targets: Option<Arc<BTreeSet<ProfileId>>>,
    properties: Arc<PlanProperties>,
}

impl ResolveExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        state: Arc<RwLock<State>>,
        schema: SchemaRef,
        pid_position: Option<usize>,
        user_columns: usize,
        slots: usize,
        targets: Option<BTreeSet<ProfileId>>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.properties().partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ResolveExec {
            input,
            state,
            schema,
            pid_position,
            user_columns,
            slots,
            targets: targets.map(Arc::new),
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for ResolveExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ResolveProfiles: identifiers={}", self.slots)?;
        if let Some(t) = &self.targets {
            let shown: Vec<String> = t.iter().take(8).map(|p| p.to_string()).collect();
            write!(f, ", profile_lookup=[{}]", shown.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ResolveExec {
    fn name(&self) -> &str {
        "ResolveProfiles"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.into_iter().next().unwrap_or_else(|| self.input.clone());
        // The optimizer may hand a child with more partitions (a
        // repartition below us): the properties follow the new child.
        Ok(Arc::new(ResolveExec::new(
            input,
            self.state.clone(),
            self.schema.clone(),
            self.pid_position,
            self.user_columns,
            self.slots,
            self.targets.as_deref().cloned(),
        )))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let state = self.state.clone();
        let schema = self.schema.clone();
        let (pid_position, user_columns, slots, targets) =
            (self.pid_position, self.user_columns, self.slots, self.targets.clone());
        let stream = input.map(move |batch| {
            let batch = batch?;
            resolve_batch(&state, &batch, &schema, pid_position, user_columns, slots, targets.as_deref())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}

/// Profile id of each row: the profile of its first linked identifier.
pub(crate) fn profile_ids(state: &State, batch: &RecordBatch, first_node: usize, slots: usize) -> DfResult<Int64Array> {
    state.check_usable().map_err(to_df)?;
    let link = batch.column(first_node + slots).as_primitive::<UInt32Type>();
    let nodes: Vec<_> = (0..slots).map(|i| batch.column(first_node + i).as_primitive::<UInt64Type>()).collect();
    let graph = &state.graph;
    let ids: Int64Array = (0..batch.num_rows())
        .map(|row| {
            if link.is_null(row) {
                return None;
            }
            // The first linked identifier that is not flagged generic: a
            // row carrying only a shared value (a store's phone) belongs to
            // no one, even if it linked before the value was flagged.
            let mut mask = link.value(row);
            while mask != 0 {
                let slot = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let column = nodes.get(slot)?;
                if column.is_null(row) {
                    continue;
                }
                let node = column.value(row) as NodeId;
                if !graph.is_generic(node) {
                    return graph.profile_of(node).map(|p| p as i64);
                }
            }
            None
        })
        .collect();
    Ok(ids)
}

fn resolve_batch(
    state: &RwLock<State>,
    batch: &RecordBatch,
    schema: &SchemaRef,
    pid_position: Option<usize>,
    user_columns: usize,
    slots: usize,
    targets: Option<&BTreeSet<ProfileId>>,
) -> DfResult<RecordBatch> {
    let ids = {
        let state = state.read();
        profile_ids(&state, batch, user_columns, slots)?
    };
    let mut columns: Vec<ArrayRef> = batch.columns()[..user_columns].to_vec();
    if let Some(p) = pid_position {
        columns.insert(p, Arc::new(ids.clone()));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    let out = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
    match targets {
        Some(t) => {
            let keep: BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| t.contains(&(id as u64))))).collect();
            Ok(filter_record_batch(&out, &keep)?)
        }
        None => Ok(out),
    }
}

/// The sorted node ids of the given profiles (for pruning scan units).
pub(crate) fn target_nodes(state: &State, targets: &BTreeSet<ProfileId>) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = targets.iter().flat_map(|p| state.graph.members(*p)).collect();
    nodes.sort_unstable();
    nodes
}

/// Does any of the sorted `nodes` fall in [min, max]?
fn any_in_range(nodes: &[NodeId], min: u64, max: u64) -> bool {
    let start = nodes.partition_point(|n| u64::from(*n) < min);
    nodes.get(start).is_some_and(|n| u64::from(*n) <= max)
}

/// Could a scan unit hold rows carrying any of the sorted nodes? Decided by
/// the node-id ranges of its identifier columns; unknown means yes.
pub(crate) fn unit_may_hold(unit: &ScanUnit, layout: &TableIdentity, nodes: &[NodeId]) -> bool {
    layout.slots.iter().any(|s| match unit.stats(&s.node_column()) {
        Some(st) => match (&st.min, &st.max) {
            (Some(StatValue::UInt(lo)), Some(StatValue::UInt(hi))) => any_in_range(nodes, *lo, *hi),
            (None, None) => false,
            _ => true,
        },
        None => true,
    })
}
