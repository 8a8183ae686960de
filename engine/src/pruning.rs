//! Which scan units (pages) a scan must read, judged by their statistics.
//!
//! Most filters are conjunctions of `column op constant`; those are
//! tested against each page's minimum and maximum directly. The rest go
//! to DataFusion's `PruningPredicate` over the same statistics, whose
//! rewritten predicate and statistic arrays cost a point query about as
//! much as reading its page.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_optimizer::pruning::PruningPredicate;
use tessera_storage::{ScanUnit, StatValue};

/// For each unit, whether it may hold rows passing all `filters` (false
/// only when its statistics prove it holds none).
pub(crate) fn units_to_read(state: &dyn Session, schema: &SchemaRef, filters: &[Expr], units: &[ScanUnit]) -> DfResult<Vec<bool>> {
    let mut keep = vec![true; units.len()];
    let mut rest = Vec::new();
    for filter in filters.iter().flat_map(|f| split_conjunction(f)) {
        match Bound::of(filter, schema) {
            Some(bound) => {
                for (k, unit) in keep.iter_mut().zip(units) {
                    *k = *k && bound.may_match(unit);
                }
            }
            None => rest.push(filter.clone()),
        }
    }
    if let Some(predicate) = conjunction(rest) {
        let df_schema = DFSchema::try_from(schema.clone())?;
        let physical = state.create_physical_expr(predicate, &df_schema)?;
        // A predicate DataFusion's pruner cannot use just prunes nothing.
        #[allow(deprecated)] // the builder needs a file schema we do not have
        if let Ok(pruner) = PruningPredicate::try_new(physical, schema.clone()) {
            let verdict = pruner.prune(&UnitStatistics { units, schema })?;
            for (k, v) in keep.iter_mut().zip(verdict) {
                *k = *k && v;
            }
        }
    }
    Ok(keep)
}

/// `column op constant`, with the constant in the form the column's
/// statistics are stored in.
#[derive(Debug)]
struct Bound<'e> {
    column: &'e str,
    op: Operator,
    value: Key<'e>,
}

#[derive(Debug)]
enum Key<'e> {
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'e str),
}

impl<'e> Bound<'e> {
    /// `None` for any other shape, a null or NaN constant, or a constant
    /// whose type is not the column's (the optimizer coerces both sides
    /// to one type; anything else is left to DataFusion's pruner).
    fn of(filter: &'e Expr, schema: &SchemaRef) -> Option<Bound<'e>> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else { return None };
        let (column, op, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
            _ => return None,
        };
        if !matches!(op, Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq) {
            return None;
        }
        let field = schema.field_with_name(&column.name).ok()?;
        if field.data_type() != &value.data_type() {
            return None;
        }
        Some(Bound { column: &column.name, op, value: Key::of(value)? })
    }

    /// False only when the unit's statistics prove no row passes.
    fn may_match(&self, unit: &ScanUnit) -> bool {
        let Some(stats) = unit.stats(self.column) else { return true };
        let (Some(min), Some(max)) = (&stats.min, &stats.max) else {
            // No bounds: every value is null (no comparison is true), or
            // the bounds were not kept.
            return stats.null_count < unit.num_rows() as u64;
        };
        let (Some(low), Some(high)) = (self.value.compare(min), self.value.compare(max)) else { return true };
        // `low` is the constant against the minimum, `high` against the maximum.
        match self.op {
            Operator::Eq => low != Ordering::Less && high != Ordering::Greater,
            Operator::Lt => low == Ordering::Greater,
            Operator::LtEq => low != Ordering::Less,
            Operator::Gt => high == Ordering::Less,
            Operator::GtEq => high != Ordering::Greater,
            _ => true,
        }
    }
}

impl<'e> Key<'e> {
    /// The constant as the storage layer keeps statistics of its type:
    /// integers, dates and timestamps as `i64`, strings by their bytes.
    fn of(value: &'e ScalarValue) -> Option<Key<'e>> {
        use ScalarValue as S;
        Some(match value {
            S::Int8(v) => Key::Int(i64::from((*v)?)),
            S::Int16(v) => Key::Int(i64::from((*v)?)),
            S::Int32(v) | S::Date32(v) => Key::Int(i64::from((*v)?)),
            S::Int64(v)
            | S::Date64(v)
            | S::TimestampSecond(v, _)
            | S::TimestampMillisecond(v, _)
            | S::TimestampMicrosecond(v, _)
            | S::TimestampNanosecond(v, _) => Key::Int((*v)?),
            S::UInt8(v) => Key::UInt(u64::from((*v)?)),
            S::UInt16(v) => Key::UInt(u64::from((*v)?)),
            S::UInt32(v) => Key::UInt(u64::from((*v)?)),
            S::UInt64(v) => Key::UInt((*v)?),
            S::Float32(v) => Key::Float(f64::from((*v)?)).finite()?,
            S::Float64(v) => Key::Float((*v)?).finite()?,
            S::Utf8(v) | S::Utf8View(v) | S::LargeUtf8(v) => Key::Str(v.as_deref()?),
            _ => return None,
        })
    }

    fn finite(self) -> Option<Self> {
        match self {
            Key::Float(f) if !f.is_finite() => None,
            other => Some(other),
        }
    }

    /// The constant against a statistic; `None` when they are of different
    /// kinds (the unit is then read).
    fn compare(&self, stat: &StatValue) -> Option<Ordering> {
        match (self, stat) {
            (Key::Int(a), StatValue::Int(b)) => Some(a.cmp(b)),
            (Key::UInt(a), StatValue::UInt(b)) => Some(a.cmp(b)),
            // Partial order: -0.0 equals 0.0 here, which only keeps more.
            (Key::Float(a), StatValue::Float(b)) => a.partial_cmp(b),
            (Key::Str(a), StatValue::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            _ => None,
        }
    }
}

/// Row-group statistics in the shape DataFusion's pruner asks for.
struct UnitStatistics<'a> {
    units: &'a [ScanUnit],
    schema: &'a SchemaRef,
}

impl UnitStatistics<'_> {
    /// Each unit's minimum (or maximum) of a column, as an array of the
    /// column's type; null where a unit has no statistic or one that does
    /// not fit the type (that unit is then not pruned on this column).
    fn bounds(&self, column: &Column, min: bool) -> Option<ArrayRef> {
        let data_type = self.schema.field_with_name(&column.name).ok()?.data_type();
        fn pick<'u>(u: &'u ScanUnit, column: &str, min: bool) -> Option<&'u StatValue> {
            u.stats(column).and_then(|s| if min { s.min.as_ref() } else { s.max.as_ref() })
        }
        let bound = |u| pick(u, &column.name, min);
        use DataType as D;
        let array: ArrayRef = match data_type {
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::Date32 | D::Date64 | D::Timestamp(..) => {
                let values: arrow::array::Int64Array =
                    self.units.iter().map(|u| bound(u).and_then(|v| if let StatValue::Int(i) = v { Some(*i) } else { None })).collect();
                Arc::new(values)
            }
            D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
                let values: UInt64Array =
                    self.units.iter().map(|u| bound(u).and_then(|v| if let StatValue::UInt(i) = v { Some(*i) } else { None })).collect();
                Arc::new(values)
            }
            D::Float32 | D::Float64 => {
                let values: arrow::array::Float64Array =
                    self.units.iter().map(|u| bound(u).and_then(|v| if let StatValue::Float(f) = v { Some(*f) } else { None })).collect();
                Arc::new(values)
            }
            D::Utf8 | D::LargeUtf8 | D::Utf8View => {
                let values: arrow::array::StringArray = self
                    .units
                    .iter()
                    .map(|u| bound(u).and_then(|v| if let StatValue::Str(s) = v { Some(s.as_str()) } else { None }))
                    .collect();
                Arc::new(values)
            }
            D::Boolean => {
                let values: BooleanArray =
                    self.units.iter().map(|u| bound(u).and_then(|v| if let StatValue::Bool(b) = v { Some(*b) } else { None })).collect();
                Arc::new(values)
            }
            _ => return None,
        };
        if array.data_type() == data_type {
            return Some(array);
        }
        // Safe casts turn a value out of the type's range into null.
        arrow::compute::cast(&array, data_type).ok()
    }
}

impl PruningStatistics for UnitStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, true)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, false)
    }

    fn num_containers(&self) -> usize {
        self.units.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let counts: UInt64Array = self.units.iter().map(|u| u.stats(&column.name).map(|s| s.null_count)).collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self.units.iter().map(|u| Some(u.num_rows() as u64)).collect();
        Some(Arc::new(counts))
    }

    fn contained(&self, _column: &Column, _values: &std::collections::HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

