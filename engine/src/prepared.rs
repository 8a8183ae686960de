//! Prepared statements: a plan made once and run many times with
//! different parameter values, and the optimized plan a query keeps
//! between its executions.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, TableReference};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use tessera_sql::Statement;

use crate::error::{Error, Result};

/// A planned statement, ready to run (possibly many times, with different
/// parameter values).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(crate) plan: LogicalPlan,
    pub(crate) references: Vec<TableReference>,
    /// Statements Tessera runs itself (COPY FROM, VACUUM, ...) are kept
    /// as parsed.
    pub(crate) own: Option<Statement>,
    /// For queries whose optimization does not depend on when they run:
    /// the logical optimizer's result, made once (with the parameters
    /// still open) and shared by every execution. `Some(None)` inside
    /// when DataFusion could not optimize the open plan.
    pub(crate) optimized: Option<Arc<OnceLock<Option<Arc<OptimizedQuery>>>>>,
}

/// A query after DataFusion's logical optimizer, its parameters still
/// open, with the type the optimizer gave each of them.
#[derive(Debug)]
pub(crate) struct OptimizedQuery {
    pub(crate) plan: LogicalPlan,
    parameter_types: HashMap<String, DataType>,
}

impl OptimizedQuery {
    /// `None` when the plan cannot be optimized before its values are
    /// known, or a parameter's type is left open (the optimizer's type
    /// coercion ran without it, so a value could not be fitted in).
    pub(crate) fn new(state: &SessionState, plan: &LogicalPlan) -> Option<Arc<OptimizedQuery>> {
        let plan = state.optimize(plan).ok()?;
        let mut parameter_types = HashMap::new();
        for (name, data_type) in plan.get_parameter_types().ok()? {
            parameter_types.insert(name, data_type?);
        }
        Some(Arc::new(OptimizedQuery { plan, parameter_types }))
    }

    /// The values cast to the parameters' planned types: the optimizer
    /// already coerced the expressions around each parameter, so a value
    /// of another type (a string for a `Utf8View` column) must take the
    /// planned type itself.
    pub(crate) fn typed(&self, values: ParamValues) -> Result<ParamValues> {
        let fit = |name: String, mut value: ScalarAndMetadata| -> Result<ScalarAndMetadata> {
            if let Some(want) = self.parameter_types.get(&name) {
                if value.value.data_type() != *want {
                    value.value = value.value.cast_to(want).map_err(|e| {
                        Error::user(format!("parameter {name} cannot be read as {want}: {e}"))
                    })?;
                }
            }
            Ok(value)
        };
        Ok(match values {
            ParamValues::List(list) => ParamValues::List(
                list.into_iter().enumerate().map(|(i, v)| fit(format!("${}", i + 1), v)).collect::<Result<_>>()?,
            ),
            ParamValues::Map(map) => ParamValues::Map(
                map.into_iter().map(|(k, v)| Ok((k.clone(), fit(format!("${k}"), v)?))).collect::<Result<_>>()?,
            ),
        })
    }
}

/// Whether a plan holds DML, DDL, COPY or a transaction statement (or
/// could not be inspected).
fn may_write(plan: &LogicalPlan) -> bool {
    let writes = plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) | LogicalPlan::Statement(_)))
    });
    !matches!(writes, Ok(false))
}

/// Whether a statement's optimized plan can be reused by later
/// executions: a query that returns rows, changes nothing, and calls no
/// function whose value depends on when or where it runs (`now()`,
/// `random()`, `in_segment`, ...), which the optimizer could fold into a
/// constant. Table contents are read at physical planning, so a reused
/// plan still sees each execution's snapshot.
pub(crate) fn optimization_reusable(plan: &LogicalPlan) -> bool {
    let query = returns_rows(plan) && !matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_));
    if !query || may_write(plan) {
        return false;
    }
    let mut reusable = true;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        reusable = false;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    walked.is_ok() && reusable
}

impl Prepared {
    /// True when executing it changes nothing (see
    /// [`Statement::only_reads`]): a plan without DML, DDL or COPY.
    pub fn only_reads(&self) -> bool {
        if let Some(own) = &self.own {
            return own.only_reads();
        }
        !may_write(&self.plan)
    }

    /// The columns the statement returns (empty for statements without
    /// rows).
    pub fn output_schema(&self) -> SchemaRef {
        match &self.own {
            Some(Statement::ShowIdentifiers) => return crate::identity::show_identifiers_schema(),
            Some(Statement::ResolveIdentities) => return crate::identity::report_schema(),
            _ => {}
        }
        if self.own.is_some() || !returns_rows(&self.plan) {
            return Arc::new(arrow::datatypes::Schema::empty());
        }
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    /// Types of the parameters `$1..$n` DataFusion inferred (`None` where
    /// it could not).
    pub fn parameter_types(&self) -> Result<Vec<Option<arrow::datatypes::DataType>>> {
        let types = self.plan.get_parameter_types()?;
        let mut out: Vec<(usize, Option<arrow::datatypes::DataType>)> = types
            .into_iter()
            .filter_map(|(name, ty)| name.trim_start_matches('$').parse::<usize>().ok().map(|i| (i, ty)))
            .collect();
        out.sort_by_key(|(i, _)| *i);
        let n = out.last().map(|(i, _)| *i).unwrap_or(0);
        let mut result = vec![None; n];
        for (i, ty) in out {
            if i >= 1 {
                result[i - 1] = ty;
            }
        }
        Ok(result)
    }

    /// The plan, for EXPLAIN-like inspection.
    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }
}

pub(crate) fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) | LogicalPlan::Statement(_))
}
