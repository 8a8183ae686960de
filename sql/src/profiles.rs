//! Statements about profiles: segments, traits and profile attributes.

use datafusion_sql::sqlparser::ast::{
    DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};
use datafusion_sql::sqlparser::keywords::Keyword;
use datafusion_sql::sqlparser::parser::Parser;
use datafusion_sql::sqlparser::tokenizer::Token;

use crate::{identifier_name, perr, word_at, CreateSegment, ParseError, ProfileColumnDef, ProfileColumnKind, SourceColumn, Statement};

/// Aggregates a trait may use.
pub const TRAIT_FUNCTIONS: &[&str] =
    &["count", "sum", "avg", "min", "max", "first", "last", "most_frequent", "count_distinct", "unique_list"];
/// Survivorship rules of a profile attribute.
pub const ATTRIBUTE_RULES: &[&str] = &["source_priority", "most_recent", "oldest", "most_frequent", "sum", "unique_list"];
/// Longest list a `unique_list` may keep.
pub const MAX_LIST_CAP: u64 = 10_000;
/// Default cap of a `unique_list`.
pub const DEFAULT_LIST_CAP: u64 = 100;
/// Most source columns one attribute may draw from.
pub const MAX_ATTRIBUTE_SOURCES: usize = 32;

/// The statement's leading words, when they name one of ours.
pub(crate) fn is_profile_statement(parser: &Parser) -> bool {
    let w = |n| word_at(parser, n);
    let (first, second) = (w(0), w(1));
    let after_or_replace = |n: usize| {
        if second.as_deref() == Some("OR") && w(2).as_deref() == Some("REPLACE") {
            w(n + 2)
        } else {
            w(n)
        }
    };
    match first.as_deref() {
        Some("CREATE") => match after_or_replace(1).as_deref() {
            Some("SEGMENT") | Some("TRAIT") => true,
            Some("PROFILE") => after_or_replace(2).as_deref() == Some("ATTRIBUTE"),
            _ => false,
        },
        Some("DROP") => match second.as_deref() {
            Some("SEGMENT") | Some("TRAIT") => true,
            Some("PROFILE") => w(2).as_deref() == Some("ATTRIBUTE"),
            _ => false,
        },
        Some("SHOW") => matches!(second.as_deref(), Some("SEGMENTS") | Some("TRAITS")),
        Some("REFRESH") => matches!(second.as_deref(), Some("SEGMENT") | Some("SEGMENTS")),
        Some("SUBSCRIBE") => true,
        _ => false,
    }
}

fn next_word(parser: &mut Parser) -> String {
    match parser.next_token().token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    }
}

pub(crate) fn parse_profile_statement(parser: &mut Parser) -> Result<Statement, ParseError> {
    match next_word(parser).as_str() {
        "CREATE" => {
            let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
            match next_word(parser).as_str() {
                "SEGMENT" => parse_create_segment(parser, or_replace),
                "TRAIT" => parse_create_trait(parser, or_replace),
                _ => {
                    next_word(parser); // ATTRIBUTE
                    parse_create_attribute(parser, or_replace)
                }
            }
        }
        "DROP" => {
            let kind = match next_word(parser).as_str() {
                "SEGMENT" => None,
                "TRAIT" => Some(ProfileColumnKind::Trait),
                _ => {
                    next_word(parser); // ATTRIBUTE
                    Some(ProfileColumnKind::Attribute)
                }
            };
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = identifier_name(parser)?;
            Ok(match kind {
                None => Statement::DropSegment { name, if_exists },
                Some(kind) => Statement::DropProfileColumn { name, if_exists, kind },
            })
        }
        "SHOW" => Ok(match next_word(parser).as_str() {
            "SEGMENTS" => Statement::ShowSegments,
            _ => Statement::ShowTraits,
        }),
        "REFRESH" => Ok(match next_word(parser).as_str() {
            "SEGMENTS" => Statement::RefreshSegment { name: None },
            _ => Statement::RefreshSegment { name: Some(identifier_name(parser)?) },
        }),
        _ => parse_subscribe(parser),
    }
}

fn parse_create_segment(parser: &mut Parser, or_replace: bool) -> Result<Statement, ParseError> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    if or_replace && if_not_exists {
        return Err(ParseError::new("CREATE OR REPLACE SEGMENT cannot also say IF NOT EXISTS"));
    }
    let name = identifier_name(parser)?;
    parser.expect_keyword(Keyword::AS).map_err(perr)?;
    let query = parser.parse_query().map_err(perr)?;
    Ok(Statement::CreateSegment(CreateSegment { name, or_replace, if_not_exists, query: query.to_string() }))
}

/// `SUBSCRIBE [TO] SEGMENT name [WITH (snapshot = true|false)]`
fn parse_subscribe(parser: &mut Parser) -> Result<Statement, ParseError> {
    let _ = parser.parse_keyword(Keyword::TO);
    if next_word(parser) != "SEGMENT" {
        return Err(ParseError::new("Expected: SUBSCRIBE TO SEGMENT name"));
    }
    let name = identifier_name(parser)?;
    let mut snapshot = true;
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen).map_err(perr)?;
        loop {
            let key = identifier_name(parser)?;
            parser.expect_token(&Token::Eq).map_err(perr)?;
            let value = match parser.next_token().token {
                Token::Word(w) => w.value.to_ascii_lowercase(),
                Token::SingleQuotedString(s) => s.to_ascii_lowercase(),
                other => return Err(ParseError::new(format!("subscription option '{key}' needs true or false, found: {other}"))),
            };
            match (key.as_str(), value.as_str()) {
                ("snapshot", "true" | "on") => snapshot = true,
                ("snapshot", "false" | "off") => snapshot = false,
                ("snapshot", other) => return Err(ParseError::new(format!("subscription option snapshot needs true or false, found: {other}"))),
                (other, _) => return Err(ParseError::new(format!("unknown subscription option '{other}' (known: snapshot)"))),
            }
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen).map_err(perr)?;
    }
    Ok(Statement::SubscribeSegment { name, snapshot })
}

/// `CREATE [OR REPLACE] TRAIT name AS function([DISTINCT] argument [, cap])
/// FROM table [WHERE filter] [WITHIN interval]`
fn parse_create_trait(parser: &mut Parser, or_replace: bool) -> Result<Statement, ParseError> {
    let name = identifier_name(parser)?;
    parser.expect_keyword(Keyword::AS).map_err(perr)?;
    let aggregate = parser.parse_expr().map_err(perr)?;
    let (function, argument, distinct, cap) = trait_aggregate(&aggregate)?;
    parser.expect_keyword(Keyword::FROM).map_err(perr)?;
    let table = crate::object_name(parser)?;
    let filter = if parser.parse_keyword(Keyword::WHERE) { Some(parser.parse_expr().map_err(perr)?.to_string()) } else { None };
    let window = if parser.parse_keyword(Keyword::WITHIN) { Some(window_text(parser.parse_expr().map_err(perr)?)?) } else { None };
    Ok(Statement::CreateProfileColumn(ProfileColumnDef {
        name,
        kind: ProfileColumnKind::Trait,
        or_replace,
        function,
        argument,
        distinct,
        cap,
        sources: vec![SourceColumn { table, column: String::new() }],
        filter,
        window,
    }))
}

/// A window: `INTERVAL '90 days'` or just `'90 days'`.
fn window_text(e: Expr) -> Result<String, ParseError> {
    match e {
        Expr::Interval(_) => Ok(e.to_string()),
        Expr::Value(v) => match v.value {
            Value::SingleQuotedString(s) => Ok(format!("INTERVAL '{}'", s.replace('\'', "''"))),
            other => Err(ParseError::new(format!("WITHIN needs an interval such as '90 days', found: {other}"))),
        },
        other => Err(ParseError::new(format!("WITHIN needs an interval such as '90 days', found: {other}"))),
    }
}

type Aggregate = (String, Option<String>, bool, Option<u64>);

/// Split `function([DISTINCT] argument [, cap])` into its parts.
fn trait_aggregate(e: &Expr) -> Result<Aggregate, ParseError> {
    let Expr::Function(f) = e else {
        return Err(ParseError::new(format!(
            "a trait is an aggregate such as sum(amount) or count(*), found: {e} (known: {})",
            TRAIT_FUNCTIONS.join(", ")
        )));
    };
    let mut function = f.name.to_string().to_ascii_lowercase();
    if !TRAIT_FUNCTIONS.contains(&function.as_str()) {
        return Err(ParseError::new(format!("unknown trait function '{function}' (known: {})", TRAIT_FUNCTIONS.join(", "))));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(ParseError::new(format!("{function} needs an argument in parentheses")));
    };
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    let mut args = Vec::new();
    for a in &list.args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => args.push(Some(x.clone())),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => args.push(None),
            other => return Err(ParseError::new(format!("unsupported argument {other} of {function}"))),
        }
    }
    if distinct && function == "count" {
        function = "count_distinct".into();
    } else if distinct {
        return Err(ParseError::new(format!("DISTINCT is only allowed in count(DISTINCT x), not in {function}")));
    }
    let argument = match (function.as_str(), args.as_slice()) {
        ("count", [None]) | ("count", []) => None,
        (_, [Some(x)]) | ("unique_list", [Some(x), Some(_)]) => Some(x.to_string()),
        _ => {
            return Err(ParseError::new(format!(
                "{function} takes one argument{}",
                if function == "unique_list" { " and an optional cap (unique_list(x, 10))" } else { "" }
            )))
        }
    };
    let cap = match args.get(1) {
        Some(Some(Expr::Value(v))) => match &v.value {
            Value::Number(n, _) => Some(n.parse::<u64>().ok().filter(|c| (1..=MAX_LIST_CAP).contains(c)).ok_or_else(|| {
                ParseError::new(format!("the cap of unique_list must be between 1 and {MAX_LIST_CAP}, found: {n}"))
            })?),
            other => return Err(ParseError::new(format!("the cap of unique_list must be a number, found: {other}"))),
        },
        Some(other) => return Err(ParseError::new(format!("the cap of unique_list must be a number, found: {other:?}"))),
        None if function == "unique_list" => Some(DEFAULT_LIST_CAP),
        None => None,
    };
    Ok((function, argument, false, cap))
}

/// `CREATE [OR REPLACE] PROFILE ATTRIBUTE name FROM t.c [, t.c ...] [USING rule]`
fn parse_create_attribute(parser: &mut Parser, or_replace: bool) -> Result<Statement, ParseError> {
    let name = identifier_name(parser)?;
    parser.expect_keyword(Keyword::FROM).map_err(perr)?;
    let mut sources = Vec::new();
    loop {
        let qualified = crate::object_name(parser)?;
        let Some((table, column)) = qualified.rsplit_once('.') else {
            return Err(ParseError::new(format!("attribute source '{qualified}' must be table.column")));
        };
        sources.push(SourceColumn { table: table.to_string(), column: column.to_string() });
        if sources.len() > MAX_ATTRIBUTE_SOURCES {
            return Err(ParseError::new(format!("an attribute draws from at most {MAX_ATTRIBUTE_SOURCES} columns")));
        }
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    let rule = if parser.parse_keyword(Keyword::USING) { identifier_name(parser)? } else { "source_priority".to_string() };
    if !ATTRIBUTE_RULES.contains(&rule.as_str()) {
        return Err(ParseError::new(format!("unknown survivorship rule '{rule}' (known: {})", ATTRIBUTE_RULES.join(", "))));
    }
    let cap = (rule == "unique_list").then_some(DEFAULT_LIST_CAP);
    Ok(Statement::CreateProfileColumn(ProfileColumnDef {
        name,
        kind: ProfileColumnKind::Attribute,
        or_replace,
        function: rule,
        argument: None,
        distinct: false,
        cap,
        sources,
        filter: None,
        window: None,
    }))
}

#[cfg(test)]
mod tests {
    use crate::{parse, ProfileColumnKind, Statement};

    #[test]
    fn segment_statements() {
        let parsed = parse(
            "CREATE SEGMENT High_Value AS SELECT profile_id FROM profiles WHERE ltv > 500; \
             CREATE OR REPLACE SEGMENT b AS (SELECT profile_id FROM t); DROP SEGMENT IF EXISTS b; SHOW SEGMENTS; \
             REFRESH SEGMENT b; REFRESH SEGMENTS; SUBSCRIBE TO SEGMENT b; SUBSCRIBE SEGMENT b WITH (snapshot = false)",
        )
        .unwrap();
        let Statement::CreateSegment(c) = &parsed[0] else { panic!("{parsed:?}") };
        assert_eq!(c.name, "high_value");
        assert_eq!(c.query, "SELECT profile_id FROM profiles WHERE ltv > 500");
        assert!(matches!(&parsed[1], Statement::CreateSegment(c) if c.or_replace));
        assert!(matches!(&parsed[2], Statement::DropSegment { name, if_exists: true } if name == "b"));
        assert!(matches!(&parsed[3], Statement::ShowSegments));
        assert!(matches!(&parsed[4], Statement::RefreshSegment { name: Some(n) } if n == "b"));
        assert!(matches!(&parsed[5], Statement::RefreshSegment { name: None }));
        assert!(matches!(&parsed[6], Statement::SubscribeSegment { snapshot: true, .. }));
        assert!(matches!(&parsed[7], Statement::SubscribeSegment { snapshot: false, .. }));
        assert!(parse("CREATE SEGMENT x AS").is_err());
        assert!(parse("SUBSCRIBE TO SEGMENT x WITH (snapshot = maybe)").is_err());
        // Ordinary statements stay DataFusion's.
        assert!(matches!(&parse("CREATE TABLE segment (a INT)").unwrap()[0], Statement::CreateTable { .. }));
        assert!(matches!(&parse("CREATE OR REPLACE VIEW v AS SELECT 1").unwrap()[0], Statement::DataFusion(_)));
    }

    #[test]
    fn trait_statements() {
        let parsed = parse(
            "CREATE TRAIT ltv AS sum(amount) FROM pos_orders; \
             CREATE OR REPLACE TRAIT orders_90d AS count(*) FROM pos_orders WHERE amount > 0 WITHIN INTERVAL '90 days'; \
             CREATE TRAIT products AS unique_list(sku, 5) FROM pos_orders WITHIN '30 days'; \
             CREATE TRAIT n AS count(DISTINCT sku) FROM pos_orders; DROP TRAIT IF EXISTS n; SHOW TRAITS",
        )
        .unwrap();
        let Statement::CreateProfileColumn(t) = &parsed[0] else { panic!("{parsed:?}") };
        assert_eq!((t.function.as_str(), t.argument.as_deref(), t.sources[0].table.as_str()), ("sum", Some("amount"), "pos_orders"));
        let Statement::CreateProfileColumn(t) = &parsed[1] else { panic!() };
        assert!(t.or_replace && t.argument.is_none());
        assert_eq!(t.filter.as_deref(), Some("amount > 0"));
        assert_eq!(t.window.as_deref(), Some("INTERVAL '90 days'"));
        let Statement::CreateProfileColumn(t) = &parsed[2] else { panic!() };
        assert_eq!((t.cap, t.window.as_deref()), (Some(5), Some("INTERVAL '30 days'")));
        let Statement::CreateProfileColumn(t) = &parsed[3] else { panic!() };
        assert_eq!(t.function, "count_distinct");
        assert!(matches!(&parsed[4], Statement::DropProfileColumn { kind: ProfileColumnKind::Trait, if_exists: true, .. }));
        assert!(matches!(&parsed[5], Statement::ShowTraits));
        assert!(parse("CREATE TRAIT x AS median(a) FROM t").is_err());
        assert!(parse("CREATE TRAIT x AS amount FROM t").is_err());
        assert!(parse("CREATE TRAIT x AS sum(DISTINCT a) FROM t").is_err());
        assert!(parse("CREATE TRAIT x AS unique_list(a, 0) FROM t").is_err());
        assert!(parse("CREATE TRAIT x AS sum(a) FROM t WITHIN 90").is_err());
    }

    #[test]
    fn attribute_statements() {
        let parsed = parse(
            "CREATE PROFILE ATTRIBUTE first_name FROM crm_contacts.first_name, loyalty_members.first_name USING most_recent; \
             CREATE OR REPLACE PROFILE ATTRIBUTE tier FROM loyalty_members.tier; DROP PROFILE ATTRIBUTE tier",
        )
        .unwrap();
        let Statement::CreateProfileColumn(a) = &parsed[0] else { panic!("{parsed:?}") };
        assert_eq!(a.kind, ProfileColumnKind::Attribute);
        assert_eq!(a.sources.len(), 2);
        assert_eq!((a.sources[1].table.as_str(), a.sources[1].column.as_str()), ("loyalty_members", "first_name"));
        assert_eq!(a.function, "most_recent");
        let Statement::CreateProfileColumn(a) = &parsed[1] else { panic!() };
        assert_eq!(a.function, "source_priority");
        assert!(matches!(&parsed[2], Statement::DropProfileColumn { kind: ProfileColumnKind::Attribute, .. }));
        assert!(parse("CREATE PROFILE ATTRIBUTE x FROM first_name").is_err());
        assert!(parse("CREATE PROFILE ATTRIBUTE x FROM t.a USING newest").is_err());
    }
}
