//! What PostgreSQL clients expect beyond DataFusion: `pg_catalog`, the
//! functions they call on connect, and rewrites of their SQL.


use arrow::array::StringArray;
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
    ctx.register_udf(ScalarUDF::from(ToRegtype::new()));
    // Tessera has no sequences, collations or JSON objects in its catalog:
    // these answer "none" where clients ask.
    ctx.register_udf(ScalarUDF::from(NullText::new("pg_get_serial_sequence", 2)));
    ctx.register_udf(ScalarUDF::from(NullText::variadic("json_build_object")));
    ctx.register_udf(ScalarUDF::from(NullText::variadic("pg_collation_is_visible")));
    ctx.register_udf(ScalarUDF::from(NullText::variadic("pg_get_indexdef")));
    ctx.register_udf(ScalarUDF::from(NullText::variadic("pg_get_triggerdef")));
    ctx.register_udf(ScalarUDF::from(NullText::variadic("pg_get_viewdef")));
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

    fn variadic(name: &'static str) -> Self {
        NullText { name, signature: Signature::variadic_any(Volatility::Stable) }
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
        let name = args.args.first().ok_or_else(|| datafusion::error::DataFusionError::Plan("current_setting needs a name".into()))?;
        let missing_ok = matches!(args.args.get(1), Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))));
        map_text(name, args.number_rows, &DataType::Utf8, |n| match n {
            None => Ok(ScalarValue::Utf8(None)),
            Some(n) => match setting_default(n) {
                Some(v) => Ok(ScalarValue::Utf8(Some(v))),
                None if missing_ok => Ok(ScalarValue::Utf8(None)),
                None => Err(datafusion::error::DataFusionError::Plan(format!("unrecognized configuration parameter \"{n}\""))),
            },
        })
    }
}

fn compat() -> &'static datafusion_pg_catalog::sql::PostgresCompatibilityParser {
    static PARSER: std::sync::OnceLock<datafusion_pg_catalog::sql::PostgresCompatibilityParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(datafusion_pg_catalog::sql::PostgresCompatibilityParser::new)
}

/// Apply the client-compatibility rewrites to one statement.
pub fn rewrite(statement: datafusion::sql::sqlparser::ast::Statement) -> datafusion::sql::sqlparser::ast::Statement {
    rewrite_tessera(compat().rewrite(statement))
}

/// Only Tessera's own rewrites (for statements the compatibility parser
/// already rewrote).
pub fn rewrite_tessera(statement: datafusion::sql::sqlparser::ast::Statement) -> datafusion::sql::sqlparser::ast::Statement {
    let mut statement = statement;
    aggregate_scalar_subqueries(&mut statement);
    if statement.to_string().contains("pg_catalog.") {
        null_subqueries_in_case(&mut statement);
        null_index_key_arrays(&mut statement);
    }
    statement
}

/// `pg_index.indkey` is an int2vector that clients unnest; Tessera has no
/// indexes (pg_index holds no row for its tables), so the expressions
/// become typed NULLs and the queries plan and return nothing.
fn null_index_key_arrays(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr};
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Function(f) = expr {
            let name = f.name.to_string().to_ascii_lowercase();
            let text = f.to_string().to_ascii_lowercase();
            let vector_column = ["indkey", "indclass", "indoption", "indcollation", "conkey", "confkey"]
                .iter()
                .any(|c| text.contains(c));
            let replacement = if name.ends_with("generate_subscripts") && vector_column {
                parse_expr("CAST(NULL AS INTEGER)")
            } else if name.ends_with("unnest") && vector_column {
                parse_expr("CAST(NULL AS SMALLINT)")
            } else {
                None
            };
            if let Some(r) = replacement {
                *expr = r;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// DataFusion cannot run a correlated subquery inside CASE. In catalog
/// queries those look up defaults, identity sequences and collations,
/// which Tessera's catalog does not have, so their answer is NULL anyway.
fn null_subqueries_in_case(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr};
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Case { conditions, else_result, .. } = expr {
            for branch in conditions.iter_mut() {
                if matches!(branch.result, Expr::Subquery(_)) {
                    if let Some(null) = parse_expr("NULL") {
                        branch.result = null;
                    }
                }
            }
            if let Some(e) = else_result.as_mut() {
                if matches!(**e, Expr::Subquery(_)) {
                    if let Some(null) = parse_expr("NULL") {
                        **e = null;
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

const AGGREGATES: [&str; 10] = ["count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or", "first_value"];

/// Catalog queries use correlated scalar subqueries that return at most one
/// row by construction (`(SELECT x FROM pg_attrdef WHERE adrelid = ...)`).
/// DataFusion only decorrelates aggregated ones, so wrap the single
/// projected expression in `max(...)`, which keeps the value of a one-row
/// result and gives NULL for none.
fn aggregate_scalar_subqueries(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr, GroupByExpr, SelectItem, SetExpr};
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Subquery(query) = expr {
            if let SetExpr::Select(select) = query.body.as_mut() {
                let grouped = match &select.group_by {
                    GroupByExpr::Expressions(e, _) => !e.is_empty(),
                    GroupByExpr::All(_) => true,
                };
                if select.projection.len() == 1 && !grouped && select.having.is_none() {
                    let inner = match &mut select.projection[0] {
                        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
                        _ => None,
                    };
                    if let Some(e) = inner {
                        if !is_aggregate(e) {
                            if let Some(wrapped) = parse_expr(&format!("max({e})")) {
                                *e = wrapped;
                            }
                        }
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

fn is_aggregate(e: &datafusion::sql::sqlparser::ast::Expr) -> bool {
    match e {
        datafusion::sql::sqlparser::ast::Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let last = name.rsplit('.').next().unwrap_or(&name).to_string();
            AGGREGATES.contains(&last.as_str())
        }
        _ => false,
    }
}

fn parse_expr(text: &str) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(text).ok()?.parse_expr().ok()
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

/// Apply `f` to every value of a text argument (a scalar or a column),
/// giving a result of type `returns` in the same shape.
fn map_text(
    arg: &ColumnarValue,
    rows: usize,
    returns: &DataType,
    f: impl Fn(Option<&str>) -> datafusion::error::Result<ScalarValue>,
) -> datafusion::error::Result<ColumnarValue> {
    let text = arrow::compute::cast(&arg.to_array(rows.max(1))?, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("cast to text".into()))?;
    let values = text.iter().map(f).collect::<datafusion::error::Result<Vec<_>>>()?;
    match (arg, values.first()) {
        (ColumnarValue::Scalar(_), Some(v)) => Ok(ColumnarValue::Scalar(v.clone())),
        (_, None) => Ok(ColumnarValue::Array(arrow::array::new_empty_array(returns))),
        (ColumnarValue::Array(_), Some(_)) => Ok(ColumnarValue::Array(ScalarValue::iter_to_array(values)?)),
    }
}

/// OIDs of PostgreSQL's built-in types, by every name clients use.
fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_start_matches("pg_catalog.").trim_matches('"').to_ascii_lowercase();
    let oid = match name.as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "char" => 18,
        "name" => 19,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" | "time without time zone" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    };
    Some(oid)
}

/// `to_regtype(name)`: the type's OID, or NULL for a type that does not
/// exist (extension types such as hstore are not installed).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
}

impl ToRegtype {
    fn new() -> Self {
        ToRegtype { signature: Signature::new(TypeSignature::Any(1), Volatility::Stable) }
    }
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let arg = args.args.first().ok_or_else(|| datafusion::error::DataFusionError::Plan("to_regtype needs a name".into()))?;
        map_text(arg, args.number_rows, &DataType::Int32, |n| Ok(ScalarValue::Int32(n.and_then(builtin_type_oid))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let statements = parse_query(sql).expect("parses");
        statements.into_iter().map(|s| rewrite(s).to_string()).collect::<Vec<_>>().join(";")
    }

    #[test]
    fn regproc_literals_stay_names() {
        assert_eq!(
            preprocess("SELECT typinput='pg_catalog.array_in'::regproc AS is_array FROM pg_type"),
            "SELECT typinput='array_in' AS is_array FROM pg_type"
        );
        assert_eq!(preprocess("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn index_key_arrays_become_nulls() {
        let out = rewritten(
            "SELECT c.conname, unnest(pg_catalog.pg_index.indkey) AS attnum, generate_subscripts(pg_catalog.pg_index.indkey, 1) AS ord \
             FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_index ON c.conindid = pg_catalog.pg_index.indexrelid",
        );
        assert!(!out.contains("unnest"), "{out}");
        assert!(!out.contains("generate_subscripts"), "{out}");
    }

    #[test]
    fn correlated_subqueries_are_aggregated() {
        let out = rewritten("SELECT (SELECT t.typname FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) FROM pg_catalog.pg_attribute a");
        // Either aggregated here or replaced by the compatibility parser.
        let lower = out.to_lowercase();
        assert!(lower.contains("max(t.typname)") || lower.starts_with("select null"), "{out}");
    }
}

/// Text-level fixes applied before parsing. `'pg_catalog.array_in'::regproc`
/// compares with `pg_type.typinput`, which the catalog keeps as the
/// function's name: keep the literal a name instead of turning it into an
/// OID lookup.
pub fn preprocess(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains("::regproc") {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("'::regproc") {
        let (head, tail) = rest.split_at(at);
        // head ends with the literal's text; find its opening quote.
        match head.rfind('\'') {
            Some(open) => {
                let literal = &head[open + 1..];
                let name = literal.rsplit('.').next().unwrap_or(literal);
                out.push_str(&head[..open]);
                out.push('\'');
                out.push_str(name);
                out.push('\'');
            }
            None => out.push_str(head),
        }
        rest = &tail["'::regproc".len()..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}
