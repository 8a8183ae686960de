//! SQL functions of the profile layer: `in_segment(profile_id, 'name')`
//! and `now()` on the database's clock.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::{Clock, Profiles};
use crate::error::to_df;

/// `in_segment(profile_id, 'segment')`: true when the profile is a member
/// now. Reads the segment's bitmap, never its definition.
#[derive(Debug)]
pub(crate) struct InSegment {
    profiles: Arc<Profiles>,
    signature: Signature,
}

impl PartialEq for InSegment {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.profiles, &other.profiles)
    }
}
impl Eq for InSegment {}
impl std::hash::Hash for InSegment {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "in_segment".hash(state)
    }
}

pub(crate) fn in_segment_udf(profiles: Arc<Profiles>) -> ScalarUDF {
    let strings = [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8];
    let signature = Signature::one_of(
        strings.iter().map(|s| TypeSignature::Exact(vec![DataType::Int64, s.clone()])).collect(),
        Volatility::Stable,
    );
    ScalarUDF::new_from_impl(InSegment { profiles, signature })
}

/// The segment name of a call, when it is a literal.
pub(crate) fn segment_name(args: &[Expr]) -> Option<String> {
    match args.get(1)? {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => Some(s.clone()),
        _ => None,
    }
}

impl ScalarUDFImpl for InSegment {
    fn name(&self) -> &str {
        "in_segment"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => s.clone(),
            _ => return exec_err!("in_segment needs the segment name as a constant string, e.g. in_segment(profile_id, 'high_value')"),
        };
        let members = self.profiles.members(&name).map_err(to_df)?;
        match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(v.map(|p| p > 0 && members.contains(p as u64)))))
            }
            ColumnarValue::Scalar(other) => exec_err!("in_segment needs a BIGINT profile id, got {other}"),
            ColumnarValue::Array(a) => {
                let ids = a.as_primitive::<Int64Type>();
                let out: BooleanArray =
                    (0..ids.len()).map(|i| (!ids.is_null(i)).then(|| ids.value(i) > 0 && members.contains(ids.value(i) as u64))).collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

/// `now()` (and `current_timestamp`) reading an injected clock; installed
/// only when the database was opened with one.
#[derive(Debug)]
pub(crate) struct ClockNow {
    clock: Arc<dyn Clock>,
    signature: Signature,
    aliases: Vec<String>,
    timezone: Option<Arc<str>>,
}

impl PartialEq for ClockNow {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.clock, &other.clock) && self.timezone == other.timezone
    }
}
impl Eq for ClockNow {}
impl std::hash::Hash for ClockNow {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.timezone.hash(state)
    }
}

pub(crate) fn clock_now_udf(clock: Arc<dyn Clock>) -> ScalarUDF {
    ScalarUDF::new_from_impl(ClockNow {
        clock,
        signature: Signature::nullary(Volatility::Stable),
        aliases: vec!["current_timestamp".to_string()],
        timezone: None,
    })
}

impl ClockNow {
    fn value(&self) -> ScalarValue {
        ScalarValue::TimestampNanosecond(Some(self.clock.now_micros().saturating_mul(1000)), self.timezone.clone())
    }
}

impl ScalarUDFImpl for ClockNow {
    fn name(&self) -> &str {
        "now"
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn with_updated_config(&self, config: &datafusion::config::ConfigOptions) -> Option<ScalarUDF> {
        Some(ScalarUDF::new_from_impl(ClockNow {
            clock: self.clock.clone(),
            signature: self.signature.clone(),
            aliases: self.aliases.clone(),
            timezone: config.execution.time_zone.as_ref().map(|tz| Arc::from(tz.as_str())),
        }))
    }
    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> DfResult<FieldRef> {
        Ok(Arc::new(Field::new("now", DataType::Timestamp(TimeUnit::Nanosecond, self.timezone.clone()), false)))
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, self.timezone.clone()))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value()))
    }
    fn simplify(&self, _args: Vec<Expr>, _info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(Expr::Literal(self.value(), None)))
    }
}
