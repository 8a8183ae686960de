//! Tessera's SQL dialect.
//!
//! The single entry point is [`parse`]: it parses a string of one or more
//! statements with DataFusion's parser (PostgreSQL dialect) and returns
//! [`Statement`]s. Statements DataFusion understands pass through as
//! [`Statement::DataFusion`]; Tessera's own forms get their own variants.
//! This crate parses and never executes.

mod profiles;

use std::collections::BTreeMap;

pub use datafusion_sql::parser::Statement as DFStatement;
pub use datafusion_sql::sqlparser;
pub use profiles::{ATTRIBUTE_RULES, DEFAULT_LIST_CAP, MAX_LIST_CAP, TRAIT_FUNCTIONS};
use datafusion_sql::parser::DFParserBuilder;
use datafusion_sql::sqlparser::ast::{
    CreateTableOptions, Expr, SqlOption, Statement as SqlStatement, Value,
};
use datafusion_sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion_sql::sqlparser::keywords::Keyword;
use datafusion_sql::sqlparser::tokenizer::Token;

/// Longest statement text accepted (a limit on everything).
pub const MAX_SQL_BYTES: usize = 16 << 20;
const RECURSION_LIMIT: usize = 128;

/// A parse error with the position where the parser stopped (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        let message = clean_message(&message.into());
        let (line, column) = location_in(&message);
        ParseError { message, line, column }
    }

    /// An error found at the end of the input carries the position just
    /// past the last character.
    fn at_end_of(mut self, sql: &str) -> Self {
        if self.line.is_none() {
            let line = sql.lines().count().max(1) as u64;
            let column = sql.lines().last().map(|l| l.chars().count() as u64 + 1).unwrap_or(1);
            self.line = Some(line);
            self.column = Some(column);
            self.message = format!("{} at Line: {line}, Column: {column}", self.message);
        }
        self
    }
}

/// Strip the wrappers DataFusion and sqlparser put around the message.
fn clean_message(message: &str) -> String {
    let mut m = message.trim();
    for prefix in ["SQL error: ", "ParserError(\"", "TokenizerError(\"", "sql parser error: "] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest;
        }
    }
    let m = m.strip_suffix("\")").unwrap_or(m);
    m.replace("\\\"", "\"")
}

/// Pull "Line: L, Column: C" out of a sqlparser message.
pub fn location_in(message: &str) -> (Option<u64>, Option<u64>) {
    let number_after = |key: &str| -> Option<u64> {
        let at = message.rfind(key)? + key.len();
        let digits: String = message[at..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    (number_after("Line:"), number_after("Column:"))
}

/// File formats `COPY ... FROM` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    /// PostgreSQL's text format: tab-separated, `\N` for NULL, backslash
    /// escapes.
    Text,
    Parquet,
    Json,
}

/// Where `COPY ... FROM` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    File(String),
    Stdin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFrom {
    pub table: String,
    /// Columns named in the statement, empty for "all, in table order".
    pub columns: Vec<String>,
    pub source: CopySource,
    /// `None`: from the file name's extension (CSV for STDIN).
    pub format: Option<FileFormat>,
    pub header: Option<bool>,
    pub delimiter: Option<u8>,
    pub null_string: Option<String>,
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// Planned by DataFusion (queries, INSERT, UPDATE, DELETE, views,
    /// EXPLAIN, COPY ... TO, SET, SHOW, ...).
    DataFusion(Box<DFStatement>),
    /// `CREATE TABLE` with its `WITH (...)` options lifted out; `statement`
    /// is the same CREATE TABLE without them.
    CreateTable {
        statement: Box<DFStatement>,
        options: BTreeMap<String, String>,
    },
    CopyFrom(CopyFrom),
    /// `VACUUM [table]`: flush and rewrite segments without deleted rows.
    Vacuum { table: Option<String> },
    /// `CHECKPOINT`: flush buffered rows to segments.
    Checkpoint,
    /// `CREATE IDENTIFIER [IF NOT EXISTS] name [(option = value, ...)]`.
    CreateIdentifier {
        name: String,
        if_not_exists: bool,
        options: BTreeMap<String, String>,
    },
    /// `DROP IDENTIFIER [IF EXISTS] name`.
    DropIdentifier { name: String, if_exists: bool },
    /// `SHOW IDENTIFIERS`.
    ShowIdentifiers,
    /// `RESOLVE IDENTITIES`: rebuild the identity graph from the tables
    /// and check it against the live one.
    ResolveIdentities,
    /// `ALTER TABLE name SET (identifiers = '...')`: declare (or replace)
    /// the identifier columns of an existing table.
    SetTableIdentifiers { table: String, identifiers: String },
    /// `ALTER TABLE name SET (time_column = 'column')`: the column that
    /// says when a row's facts were true (its update or event time).
    SetTableTimeColumn { table: String, column: String },
    /// `CREATE [OR REPLACE] SEGMENT [IF NOT EXISTS] name AS query`.
    CreateSegment(CreateSegment),
    /// `DROP SEGMENT [IF EXISTS] name`.
    DropSegment { name: String, if_exists: bool },
    /// `SHOW SEGMENTS`.
    ShowSegments,
    /// `REFRESH SEGMENT name` (`None`: `REFRESH SEGMENTS`, every one).
    RefreshSegment { name: Option<String> },
    /// `SUBSCRIBE [TO] SEGMENT name [WITH (snapshot = false)]`.
    SubscribeSegment { name: String, snapshot: bool },
    /// `CREATE [OR REPLACE] TRAIT ...` and `CREATE [OR REPLACE] PROFILE
    /// ATTRIBUTE ...`: a computed column of `profiles`.
    CreateProfileColumn(ProfileColumnDef),
    /// `DROP TRAIT [IF EXISTS] name` / `DROP PROFILE ATTRIBUTE [IF EXISTS] name`.
    DropProfileColumn { name: String, if_exists: bool, kind: ProfileColumnKind },
    /// `SHOW TRAITS`: traits and profile attributes.
    ShowTraits,
}

impl Statement {
    /// True when running the statement changes nothing: a query or a SHOW.
    /// Such a statement may be stopped anywhere (statement timeout, cancel
    /// request); one that writes may not, once its commit has begun.
    pub fn only_reads(&self) -> bool {
        use datafusion_sql::sqlparser::ast::Statement as Sql;
        match self {
            Statement::DataFusion(s) => match s.as_ref() {
                DFStatement::Statement(s) => matches!(s.as_ref(), Sql::Query(_) | Sql::ShowVariable { .. } | Sql::ShowTables { .. } | Sql::ShowColumns { .. }),
                DFStatement::Explain(e) => !e.options.analyze,
                _ => false,
            },
            Statement::ShowIdentifiers | Statement::ShowSegments | Statement::ShowTraits => true,
            _ => false,
        }
    }
}

/// `CREATE SEGMENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSegment {
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    /// The query, as SQL text.
    pub query: String,
}

/// Trait or attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProfileColumnKind {
    Trait,
    Attribute,
}

/// One source column of a profile attribute (`table.column`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceColumn {
    pub table: String,
    pub column: String,
}

/// A computed column of `profiles`.
///
/// Traits: `CREATE TRAIT name AS function([DISTINCT] argument [, cap])
/// FROM table [WHERE filter] [WITHIN interval]`.
/// Attributes: `CREATE PROFILE ATTRIBUTE name FROM t.c [, t.c ...]
/// [USING rule]`, where `function` holds the rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProfileColumnDef {
    pub name: String,
    pub kind: ProfileColumnKind,
    #[serde(default)]
    pub or_replace: bool,
    /// Aggregate (traits) or survivorship rule (attributes), lower case.
    pub function: String,
    /// The aggregated expression as SQL text (`None` for `count(*)`).
    pub argument: Option<String>,
    #[serde(default)]
    pub distinct: bool,
    /// Cap on list sizes (`unique_list(x, 10)`).
    pub cap: Option<u64>,
    /// Trait: its one source table; attribute: the ranked source columns.
    pub sources: Vec<SourceColumn>,
    /// Row filter as SQL text.
    pub filter: Option<String>,
    /// Window as SQL interval text (`INTERVAL '90 days'`).
    pub window: Option<String>,
}

/// Parse one or more `;`-separated statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>, ParseError> {
    parse_statements(sql).map_err(|e| e.at_end_of(sql))
}

fn parse_statements(sql: &str) -> Result<Vec<Statement>, ParseError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(ParseError::new(format!(
            "statement text of {} bytes exceeds the limit of {MAX_SQL_BYTES} bytes",
            sql.len()
        )));
    }
    let dialect = PostgreSqlDialect {};
    let mut parser = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .build()
        .map_err(|e| ParseError::new(e.strip_backtrace()))?;
    let mut out = Vec::new();
    loop {
        while parser.parser.consume_token(&Token::SemiColon) {}
        if parser.parser.peek_token().token == Token::EOF {
            break;
        }
        let statement = match own_statement_kind(&parser.parser) {
            Some(Own::CopyFrom) => Statement::CopyFrom(parse_copy_from(&mut parser.parser)?),
            Some(Own::Vacuum) => {
                parser.parser.next_token();
                let table = match parser.parser.peek_token().token {
                    Token::Word(_) => Some(object_name(&mut parser.parser)?),
                    _ => None,
                };
                Statement::Vacuum { table }
            }
            Some(Own::Checkpoint) => {
                parser.parser.next_token();
                Statement::Checkpoint
            }
            Some(Own::CreateIdentifier) => parse_create_identifier(&mut parser.parser)?,
            Some(Own::DropIdentifier) => {
                parser.parser.next_token();
                parser.parser.next_token();
                let if_exists = parser.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
                Statement::DropIdentifier { name: identifier_name(&mut parser.parser)?, if_exists }
            }
            Some(Own::ShowIdentifiers) => {
                parser.parser.next_token();
                parser.parser.next_token();
                Statement::ShowIdentifiers
            }
            Some(Own::ResolveIdentities) => {
                parser.parser.next_token();
                parser.parser.next_token();
                Statement::ResolveIdentities
            }
            Some(Own::SetTableIdentifiers) => parse_set_table_identifiers(&mut parser.parser)?,
            Some(Own::Profiles) => profiles::parse_profile_statement(&mut parser.parser)?,
            None => {
                let parsed = parser.parse_statement().map_err(|e| ParseError::new(e.strip_backtrace()))?;
                lift_create_table_options(parsed)?
            }
        };
        out.push(statement);
        let next = parser.parser.peek_token();
        if next.token != Token::EOF && next.token != Token::SemiColon {
            return Err(ParseError::new(format!("Expected: end of statement, found: {next} at {}", next.span.start)));
        }
    }
    Ok(out)
}

enum Own {
    CopyFrom,
    Vacuum,
    Checkpoint,
    CreateIdentifier,
    DropIdentifier,
    ShowIdentifiers,
    ResolveIdentities,
    SetTableIdentifiers,
    /// Segment, trait and attribute statements.
    Profiles,
}

fn word_at(parser: &datafusion_sql::sqlparser::parser::Parser, n: usize) -> Option<String> {
    match parser.peek_nth_token(n).token {
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn own_statement_kind(parser: &datafusion_sql::sqlparser::parser::Parser) -> Option<Own> {
    let second = word_at(parser, 1);
    match word_at(parser, 0)?.as_str() {
        "VACUUM" => Some(Own::Vacuum),
        "CHECKPOINT" => Some(Own::Checkpoint),
        "CREATE" if second.as_deref() == Some("IDENTIFIER") => Some(Own::CreateIdentifier),
        "DROP" if second.as_deref() == Some("IDENTIFIER") => Some(Own::DropIdentifier),
        "SHOW" if second.as_deref() == Some("IDENTIFIERS") => Some(Own::ShowIdentifiers),
        "RESOLVE" if second.as_deref() == Some("IDENTITIES") => Some(Own::ResolveIdentities),
        "ALTER" if second.as_deref() == Some("TABLE") && sets_identifiers(parser) => Some(Own::SetTableIdentifiers),
        "CREATE" | "DROP" | "SHOW" | "REFRESH" | "SUBSCRIBE" => profiles::is_profile_statement(parser).then_some(Own::Profiles),
        "COPY" => {
            // COPY name [(cols)] FROM ... is ours; COPY ... TO is DataFusion's.
            if parser.peek_nth_token(1).token == Token::LParen {
                return None;
            }
            let mut depth = 0usize;
            for n in 1..4096 {
                match parser.peek_nth_token(n).token {
                    Token::LParen => depth += 1,
                    Token::RParen => depth = depth.saturating_sub(1),
                    Token::EOF | Token::SemiColon => return None,
                    Token::Word(w) if depth == 0 && w.keyword == Keyword::FROM => return Some(Own::CopyFrom),
                    Token::Word(w) if depth == 0 && w.keyword == Keyword::TO => return None,
                    _ => {}
                }
            }
            None
        }
        _ => None,
    }
}

fn perr(e: datafusion_sql::sqlparser::parser::ParserError) -> ParseError {
    ParseError::new(e.to_string())
}

/// A possibly qualified name, each part normalized the way DataFusion does
/// (unquoted parts lower-cased).
fn object_name(parser: &mut datafusion_sql::sqlparser::parser::Parser) -> Result<String, ParseError> {
    let name = parser.parse_object_name(false).map_err(perr)?;
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() })
        .collect();
    Ok(parts.join("."))
}

/// `COPY table [(col, ...)] FROM 'path' | STDIN [[WITH] (option [value], ...)]`
fn parse_copy_from(parser: &mut datafusion_sql::sqlparser::parser::Parser) -> Result<CopyFrom, ParseError> {
    parser.expect_keyword(Keyword::COPY).map_err(perr)?;
    let table = object_name(parser)?;
    let mut columns = Vec::new();
    if parser.consume_token(&Token::LParen) {
        loop {
            let ident = parser.parse_identifier().map_err(perr)?;
            columns.push(if ident.quote_style.is_some() { ident.value } else { ident.value.to_lowercase() });
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen).map_err(perr)?;
    }
    parser.expect_keyword(Keyword::FROM).map_err(perr)?;
    let source = if parser.parse_keyword(Keyword::STDIN) {
        CopySource::Stdin
    } else {
        CopySource::File(parser.parse_literal_string().map_err(perr)?)
    };
    let mut copy = CopyFrom { table, columns, source, format: None, header: None, delimiter: None, null_string: None };
    let _ = parser.parse_keyword(Keyword::WITH);
    parse_legacy_copy_options(parser, &mut copy)?;
    if parser.consume_token(&Token::LParen) {
        loop {
            parse_copy_option(parser, &mut copy)?;
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen).map_err(perr)?;
    }
    Ok(copy)
}

/// The pre-9.0 option syntax psql's `\copy` still sends:
/// `CSV`, `HEADER`, `DELIMITER [AS] 'c'`, `NULL [AS] 's'`, `BINARY`.
fn parse_legacy_copy_options(
    parser: &mut datafusion_sql::sqlparser::parser::Parser,
    copy: &mut CopyFrom,
) -> Result<(), ParseError> {
    loop {
        let at = parser.peek_token().span.start;
        match word_at(parser, 0).as_deref() {
            Some("CSV") => {
                parser.next_token();
                copy.format = Some(FileFormat::Csv);
            }
            Some("HEADER") => {
                parser.next_token();
                copy.header = Some(true);
            }
            Some("BINARY") => {
                return Err(ParseError::new(format!("COPY in binary format is not supported; use csv or text at {at}")));
            }
            Some("DELIMITER") | Some("NULL") => {
                let key = word_at(parser, 0).unwrap_or_default();
                parser.next_token();
                let _ = parser.parse_keyword(Keyword::AS);
                let value = parser.parse_literal_string().map_err(perr)?;
                if key == "DELIMITER" {
                    if value.len() != 1 {
                        return Err(ParseError::new(format!("COPY DELIMITER must be a single one-byte character at {at}")));
                    }
                    copy.delimiter = value.bytes().next();
                } else {
                    copy.null_string = Some(value);
                }
            }
            _ => return Ok(()),
        }
    }
}

fn parse_copy_option(
    parser: &mut datafusion_sql::sqlparser::parser::Parser,
    copy: &mut CopyFrom,
) -> Result<(), ParseError> {
    let at = parser.peek_token().span.start;
    let key = parser.parse_identifier().map_err(perr)?.value.to_ascii_lowercase();
    let value = match parser.peek_token().token {
        Token::Comma | Token::RParen => None,
        Token::SingleQuotedString(s) => {
            parser.next_token();
            Some(s)
        }
        Token::Word(w) => {
            parser.next_token();
            Some(w.value)
        }
        Token::Number(n, _) => {
            parser.next_token();
            Some(n)
        }
        other => return Err(ParseError::new(format!("Expected: a value for COPY option {key}, found: {other} at {at}"))),
    };
    let bool_value = |v: &Option<String>| -> Result<bool, ParseError> {
        match v.as_deref().map(|s| s.to_ascii_lowercase()) {
            None => Ok(true),
            Some(s) if ["true", "on", "1", "yes"].contains(&s.as_str()) => Ok(true),
            Some(s) if ["false", "off", "0", "no"].contains(&s.as_str()) => Ok(false),
            Some(s) => Err(ParseError::new(format!("COPY option {key} expects a boolean, got '{s}' at {at}"))),
        }
    };
    match key.as_str() {
        "format" => {
            copy.format = Some(match value.as_deref().map(|s| s.to_ascii_lowercase()).as_deref() {
                Some("csv") => FileFormat::Csv,
                Some("text") => FileFormat::Text,
                Some("parquet") => FileFormat::Parquet,
                Some("json") | Some("ndjson") => FileFormat::Json,
                other => {
                    return Err(ParseError::new(format!(
                        "COPY FORMAT must be csv, parquet or json, got {} at {at}",
                        other.unwrap_or("nothing")
                    )))
                }
            })
        }
        "header" => copy.header = Some(bool_value(&value)?),
        "delimiter" => {
            let v = value.unwrap_or_default();
            if v.len() != 1 {
                return Err(ParseError::new(format!("COPY DELIMITER must be a single one-byte character, got '{v}' at {at}")));
            }
            copy.delimiter = v.bytes().next();
        }
        "null" => copy.null_string = value,
        other => return Err(ParseError::new(format!("unknown COPY option '{other}' at {at}"))),
    }
    Ok(())
}

/// Does `ALTER TABLE name SET (identifiers ...` follow?
fn sets_identifiers(parser: &datafusion_sql::sqlparser::parser::Parser) -> bool {
    // ALTER TABLE [IF EXISTS] a[.b] SET ( identifiers
    for n in 3..8 {
        if word_at(parser, n).as_deref() == Some("SET") {
            return parser.peek_nth_token(n + 1).token == Token::LParen
                && matches!(word_at(parser, n + 2).as_deref(), Some("IDENTIFIERS") | Some("TIME_COLUMN"));
        }
    }
    false
}

/// An identifier type's name: one unquoted or quoted word, lower-cased
/// when unquoted.
fn identifier_name(parser: &mut datafusion_sql::sqlparser::parser::Parser) -> Result<String, ParseError> {
    let ident = parser.parse_identifier().map_err(perr)?;
    Ok(if ident.quote_style.is_some() { ident.value } else { ident.value.to_lowercase() })
}

/// `CREATE IDENTIFIER [IF NOT EXISTS] name [(option = value, ...)]`
fn parse_create_identifier(parser: &mut datafusion_sql::sqlparser::parser::Parser) -> Result<Statement, ParseError> {
    parser.next_token();
    parser.next_token();
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = identifier_name(parser)?;
    let mut options = BTreeMap::new();
    if parser.consume_token(&Token::LParen) {
        loop {
            let key = identifier_name(parser)?;
            parser.expect_token(&Token::Eq).map_err(perr)?;
            let value = match parser.next_token().token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
                Token::Number(n, _) => n,
                Token::Word(w) => w.value,
                other => {
                    return Err(ParseError::new(format!(
                        "identifier option '{key}' needs a value (a number or a quoted string), found: {other}"
                    )))
                }
            };
            if options.insert(key.clone(), value).is_some() {
                return Err(ParseError::new(format!("identifier option '{key}' is given twice")));
            }
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser.expect_token(&Token::RParen).map_err(perr)?;
            break;
        }
    }
    Ok(Statement::CreateIdentifier { name, if_not_exists, options })
}

/// `ALTER TABLE name SET (identifiers = '...')`
fn parse_set_table_identifiers(parser: &mut datafusion_sql::sqlparser::parser::Parser) -> Result<Statement, ParseError> {
    parser.next_token();
    parser.next_token();
    let table = object_name(parser)?;
    parser.expect_keyword(Keyword::SET).map_err(perr)?;
    parser.expect_token(&Token::LParen).map_err(perr)?;
    let key = identifier_name(parser)?;
    parser.expect_token(&Token::Eq).map_err(perr)?;
    let value = parser.parse_literal_string().map_err(perr)?;
    parser.expect_token(&Token::RParen).map_err(perr)?;
    match key.as_str() {
        "identifiers" => Ok(Statement::SetTableIdentifiers { table, identifiers: value }),
        _ => Ok(Statement::SetTableTimeColumn { table, column: value.trim().to_string() }),
    }
}

/// Move `CREATE TABLE ... WITH (k = v, ...)` options out of the statement.
fn lift_create_table_options(parsed: DFStatement) -> Result<Statement, ParseError> {
    let DFStatement::Statement(inner) = parsed else {
        return Ok(Statement::DataFusion(Box::new(parsed)));
    };
    let SqlStatement::CreateTable(mut create) = *inner else {
        return Ok(Statement::DataFusion(Box::new(DFStatement::Statement(inner))));
    };
    let mut options = BTreeMap::new();
    if let CreateTableOptions::With(list) = &create.table_options {
        for option in list {
            let (key, value) = option_pair(option)?;
            if options.insert(key.clone(), value).is_some() {
                return Err(ParseError::new(format!("table option '{key}' is given twice")));
            }
        }
        create.table_options = CreateTableOptions::None;
    }
    Ok(Statement::CreateTable {
        statement: Box::new(DFStatement::Statement(Box::new(SqlStatement::CreateTable(create)))),
        options,
    })
}

fn option_pair(option: &SqlOption) -> Result<(String, String), ParseError> {
    let SqlOption::KeyValue { key, value } = option else {
        return Err(ParseError::new(format!("table option '{option}' must have the form key = value")));
    };
    let value = match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    };
    Ok((key.value.to_lowercase(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_line_and_column() {
        let err = parse("SELECT 1;\nSELEC 2").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert_eq!(err.column, Some(1), "{err}");
    }

    #[test]
    fn create_table_options_are_lifted() {
        let parsed = parse("CREATE TABLE t (a INT) WITH (identifiers = 'email AS email', retention = 30)").unwrap();
        let Statement::CreateTable { options, statement } = &parsed[0] else { panic!("{parsed:?}") };
        assert_eq!(options.get("identifiers").map(String::as_str), Some("email AS email"));
        assert_eq!(options.get("retention").map(String::as_str), Some("30"));
        assert!(!statement.to_string().contains("WITH"), "{statement}");
    }

    #[test]
    fn copy_from_and_to_are_told_apart() {
        let parsed = parse("COPY t (a, B) FROM '/x.csv' WITH (FORMAT csv, HEADER true, DELIMITER ';'); COPY t TO '/y.parquet'").unwrap();
        let Statement::CopyFrom(c) = &parsed[0] else { panic!("{parsed:?}") };
        assert_eq!(c.columns, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(c.format, Some(FileFormat::Csv));
        assert_eq!(c.header, Some(true));
        assert_eq!(c.delimiter, Some(b';'));
        assert!(matches!(parsed[1], Statement::DataFusion(_)));
    }

    #[test]
    fn own_statements() {
        let parsed = parse("VACUUM; vacuum events; CHECKPOINT").unwrap();
        assert!(matches!(&parsed[0], Statement::Vacuum { table: None }));
        assert!(matches!(&parsed[1], Statement::Vacuum { table: Some(t) } if t == "events"));
        assert!(matches!(&parsed[2], Statement::Checkpoint));
    }

    #[test]
    fn identifier_statements() {
        let parsed = parse(
            "CREATE IDENTIFIER email (normalize = 'email', max_per_profile = 5, priority = 2); \
             create identifier if not exists Cookie; DROP IDENTIFIER IF EXISTS phone; SHOW IDENTIFIERS; \
             RESOLVE IDENTITIES; ALTER TABLE crm SET (identifiers = 'mail AS email')",
        )
        .unwrap();
        let Statement::CreateIdentifier { name, if_not_exists, options } = &parsed[0] else { panic!("{parsed:?}") };
        assert_eq!((name.as_str(), *if_not_exists), ("email", false));
        assert_eq!(options.get("normalize").map(String::as_str), Some("email"));
        assert_eq!(options.get("max_per_profile").map(String::as_str), Some("5"));
        assert!(matches!(&parsed[1], Statement::CreateIdentifier { name, if_not_exists: true, options } if name == "cookie" && options.is_empty()));
        assert!(matches!(&parsed[2], Statement::DropIdentifier { name, if_exists: true } if name == "phone"));
        assert!(matches!(&parsed[3], Statement::ShowIdentifiers));
        assert!(matches!(&parsed[4], Statement::ResolveIdentities));
        assert!(matches!(&parsed[5], Statement::SetTableIdentifiers { table, identifiers } if table == "crm" && identifiers == "mail AS email"));
        assert!(parse("CREATE IDENTIFIER email (normalize 'email')").is_err());
        assert!(parse("CREATE IDENTIFIER email (a = 1, a = 2)").is_err());
        // Other ALTER TABLE forms stay DataFusion's.
        assert!(matches!(&parse("ALTER TABLE t ADD COLUMN x INT").unwrap()[0], Statement::DataFusion(_)));
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        assert!(parse("CHECKPOINT now").is_err());
        assert!(parse("COPY t FROM '/x' WITH (FORMAT xml)").is_err());
    }
}
