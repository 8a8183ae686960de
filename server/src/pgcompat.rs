//! What PostgreSQL clients expect beyond DataFusion: `pg_catalog`, the
//! functions they call on connect, and rewrites of their SQL.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use tessera::Database;

/// The PostgreSQL version we tell clients we speak like.
pub const SERVER_VERSION: &str = "16.6";

pub fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Tessera {}) on {}-linux, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// Build the session template every connection starts from: pg_catalog,
/// PostgreSQL functions, and ours on top.
pub fn install(db: &Database) -> anyhow::Result<()> {
    let ctx = SessionContext::new_with_state(db.new_session_state());
    datafusion_pg_catalog::setup_pg_catalog(&ctx, tessera::CATALOG, EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("installing pg_catalog: {e}"))?;
    ctx.register_udf(ScalarUDF::from(ConstText::new("version", 0, version_string())));
    ctx.register_udf(ScalarUDF::from(CurrentSetting::new()));
    ctx.register_udf(ScalarUDF::from(NullText::new("obj_description", 2)));
    ctx.register_udf(ScalarUDF::from(NullText::new("col_description", 2)));
    ctx.register_udf(ScalarUDF::from(NullText::new("shobj_description", 2)));
    db.set_session_template(ctx.state());
    Ok(())
}

/// A function returning one fixed text (`version()`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConstText {
    name: &'static str,
    value: String,
    signature: Signature,
}

impl ConstText {
    fn new(name: &'static str, args: usize, value: String) -> Self {
        let signature = Signature::new(TypeSignature::Any(args), Volatility::Stable);
        let signature = if args == 0 { Signature::nullary(Volatility::Stable) } else { signature };
        ConstText { name, value, signature }
    }
}

impl ScalarUDFImpl for ConstText {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(self.value.clone()))))
    }
}

/// A function that always returns NULL text (descriptions: Tessera keeps
/// no comments).
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullText {
    name: &'static str,
    signature: Signature,
}

impl NullText {
    fn new(name: &'static str, args: usize) -> Self {
        let signature = Signature::one_of(
            (1..=args).map(TypeSignature::Any).collect(),
            Volatility::Stable,
        );
        NullText { name, signature }
    }
}

impl ScalarUDFImpl for NullText {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))
    }
}

/// `current_setting(name)`: the server-wide values clients ask for.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> Self {
        CurrentSetting {
            signature: Signature::one_of(vec![TypeSignature::Any(1), TypeSignature::Any(2)], Volatility::Stable),
        }
    }
}

pub fn setting_default(name: &str) -> Option<String> {
    let v = match name.to_ascii_lowercase().as_str() {
        "server_version" => SERVER_VERSION.to_string(),
        "server_version_num" => "160006".to_string(),
        "server_encoding" | "client_encoding" => "UTF8".to_string(),
        "search_path" => "\"$user\", public".to_string(),
        "standard_conforming_strings" => "on".to_string(),
        "datestyle" => "ISO, MDY".to_string(),
        "intervalstyle" => "postgres".to_string(),
        "timezone" | "time zone" => "UTC".to_string(),
        "transaction_isolation" | "transaction isolation level" | "default_transaction_isolation" => "read committed".to_string(),
        "transaction_read_only" | "default_transaction_read_only" => "off".to_string(),
        "integer_datetimes" => "on".to_string(),
        "max_identifier_length" => "63".to_string(),
        "lc_collate" | "lc_ctype" => "C.UTF-8".to_string(),
        "is_superuser" => "on".to_string(),
        "statement_timeout" => "0".to_string(),
        "extra_float_digits" => "1".to_string(),
        "application_name" => String::new(),
        "bytea_output" => "hex".to_string(),
        _ => return None,
    };
    Some(v)
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let name = args.args.first().cloned().ok_or_else(|| datafusion::error::DataFusionError::Plan("current_setting needs a name".into()))?;
        let missing_ok = matches!(args.args.get(1), Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))));
        let lookup = |n: Option<&str>| -> datafusion::error::Result<Option<String>> {
            match n {
                None => Ok(None),
                Some(n) => match setting_default(n) {
                    Some(v) => Ok(Some(v)),
                    None if missing_ok => Ok(None),
                    None => Err(datafusion::error::DataFusionError::Plan(format!("unrecognized configuration parameter \"{n}\""))),
                },
            }
        };
        match name {
            ColumnarValue::Scalar(s) => {
                let text = match s {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v,
                    other => Some(other.to_string()),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(lookup(text.as_deref())?)))
            }
            ColumnarValue::Array(a) => {
                let a = arrow::compute::cast(&a, &DataType::Utf8)?;
                let a = a.as_any().downcast_ref::<StringArray>().ok_or_else(|| datafusion::error::DataFusionError::Internal("cast to text".into()))?;
                let out: StringArray = a.iter().map(lookup).collect::<datafusion::error::Result<_>>()?;
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
        }
    }
}

fn compat() -> &'static datafusion_pg_catalog::sql::PostgresCompatibilityParser {
    static PARSER: std::sync::OnceLock<datafusion_pg_catalog::sql::PostgresCompatibilityParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(datafusion_pg_catalog::sql::PostgresCompatibilityParser::new)
}

/// Apply the client-compatibility rewrites to one statement.
pub fn rewrite(statement: datafusion::sql::sqlparser::ast::Statement) -> datafusion::sql::sqlparser::ast::Statement {
    compat().rewrite(statement)
}

/// Read-only queries (`SELECT`, `WITH`, `SHOW`, ...) parsed and rewritten
/// by the compatibility parser; `None` for anything else or when it cannot
/// parse them (our own parser then reports the error).
pub fn parse_query(sql: &str) -> Option<Vec<datafusion::sql::sqlparser::ast::Statement>> {
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next()?.to_ascii_uppercase();
    if !matches!(first.as_str(), "SELECT" | "WITH" | "VALUES" | "ABORT") {
        return None;
    }
    compat().parse(sql).ok()
}
