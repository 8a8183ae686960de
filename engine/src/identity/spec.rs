//! Identifier types (`CREATE IDENTIFIER`) and the identifier columns a
//! table declares (`WITH (identifiers = 'column AS type, ...')`).

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};
use tessera_storage::{ColumnDef, TableMeta};

use super::graph::{TypeId, TypeRules, MAX_ROW_IDENTIFIERS};
use super::normalize::Normalizer;
use crate::error::{Error, Result};

/// Metadata key prefix of identifier types.
pub const TYPE_KEY_PREFIX: &str = "identifier/";
/// Metadata key of the next identifier type id (ids are never reused).
pub const NEXT_TYPE_ID_KEY: &str = "identifier_next_id";
/// The table option that declares identifier columns.
pub const IDENTIFIERS_OPTION: &str = "identifiers";
/// The virtual column every table with identifiers gets.
pub const PROFILE_ID_COLUMN: &str = "profile_id";
/// Hidden columns of a table with identifiers.
pub const NODE_COLUMN_PREFIX: &str = "_idnode_";
pub const LINK_COLUMN: &str = "_idlink";
pub const SEEN_COLUMN: &str = "_idseen";

/// Default generic-value limit: a value linking more profiles than this
/// stops linking.
pub const DEFAULT_GENERIC_LIMIT: u32 = 25;
pub const DEFAULT_MAX_PER_PROFILE: u32 = 5;
/// For a system's own user or customer id (type names ending in `_id`).
pub const DEFAULT_MAX_PER_PROFILE_ID: u32 = 1;
/// Hard cap on identifiers in one profile, whatever their types.
pub const MAX_IDENTIFIERS_PER_PROFILE: u32 = 1000;
pub const MAX_IDENTIFIER_TYPES: usize = 1024;

/// One identifier type, as stored in the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierSpec {
    pub name: String,
    pub id: TypeId,
    pub normalize: String,
    pub region: Option<String>,
    pub fold_case: bool,
    pub max_per_profile: u32,
    pub priority: Option<i64>,
    pub generic_limit: u32,
    /// Extra blocked values, lower-cased.
    pub blocked: Vec<String>,
}

impl IdentifierSpec {
    /// Build from `CREATE IDENTIFIER` options, checking each.
    pub fn from_options(name: &str, id: TypeId, options: &BTreeMap<String, String>) -> Result<IdentifierSpec> {
        check_name(name)?;
        let mut spec = IdentifierSpec {
            name: name.to_string(),
            id,
            normalize: "text".into(),
            region: None,
            fold_case: false,
            max_per_profile: if name.ends_with("_id") { DEFAULT_MAX_PER_PROFILE_ID } else { DEFAULT_MAX_PER_PROFILE },
            priority: None,
            generic_limit: DEFAULT_GENERIC_LIMIT,
            blocked: Vec::new(),
        };
        for (key, value) in options {
            match key.as_str() {
                "normalize" => spec.normalize = value.to_ascii_lowercase(),
                "region" => spec.region = Some(value.to_ascii_uppercase()),
                "fold_case" => spec.fold_case = parse_bool(key, value)?,
                "max_per_profile" => spec.max_per_profile = parse_count(key, value, MAX_IDENTIFIERS_PER_PROFILE)?,
                "priority" => {
                    spec.priority = Some(value.parse::<i64>().map_err(|_| {
                        Error::user(format!("identifier option priority must be an integer, got '{value}'"))
                    })?)
                }
                "generic_limit" => spec.generic_limit = parse_count(key, value, u32::MAX)?,
                "blocked" => {
                    spec.blocked = value
                        .split(',')
                        .map(|v| v.trim().to_lowercase())
                        .filter(|v| !v.is_empty())
                        .collect()
                }
                other => {
                    return Err(Error::user(format!(
                        "unknown identifier option '{other}' (expected normalize, region, fold_case, max_per_profile, priority, generic_limit or blocked)"
                    )))
                }
            }
        }
        if spec.region.is_some() && spec.normalize != "phone" {
            return Err(Error::user("identifier option region applies only to normalize = 'phone'"));
        }
        spec.normalizer()?;
        Ok(spec)
    }

    pub fn normalizer(&self) -> Result<Normalizer> {
        Normalizer::parse(&self.normalize, self.region.as_deref(), self.fold_case).map_err(Error::User)
    }

    pub fn rules(&self) -> TypeRules {
        TypeRules {
            max_per_profile: self.max_per_profile,
            priority: self.priority.unwrap_or(i64::MAX),
            generic_limit: self.generic_limit,
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::user(format!(
            "identifier type name '{name}' must be 1 to 63 letters, digits or underscores, not starting with a digit"
        )))
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(Error::user(format!("identifier option {key} must be true or false, got '{value}'"))),
    }
}

fn parse_count(key: &str, value: &str, max: u32) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(Error::user(format!("identifier option {key} must be an integer from 1 to {max}, got '{value}'"))),
    }
}

/// One declared identifier column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub column: String,
    pub type_name: String,
    /// Index of the value column in the table's storage columns (without
    /// the row id).
    pub value_index: usize,
    /// Index of its hidden node-id column.
    pub node_index: usize,
}

impl Slot {
    /// Name of the hidden column holding this identifier's node ids.
    pub fn node_column(&self) -> String {
        format!("{NODE_COLUMN_PREFIX}{}", self.column)
    }
}

/// The identifier layout of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableIdentity {
    pub slots: Vec<Slot>,
    pub link_index: usize,
    pub seen_index: usize,
}

/// Parse `column AS type, column AS type` (case-insensitive `AS`).
pub fn parse_declaration(text: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in text.split(',') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (column, type_name) = match words.as_slice() {
            [c, as_kw, t] if as_kw.eq_ignore_ascii_case("as") => (unquote(c), unquote(t)),
            [c] => (unquote(c), unquote(c)),
            _ => {
                return Err(Error::user(format!(
                    "identifiers must be a list of 'column AS type', got '{}'",
                    part.trim()
                )))
            }
        };
        if out.iter().any(|(c, _)| *c == column) {
            return Err(Error::user(format!("identifier column '{column}' is declared twice")));
        }
        out.push((column, type_name));
    }
    if out.len() > MAX_ROW_IDENTIFIERS {
        return Err(Error::user(format!("a table may declare at most {MAX_ROW_IDENTIFIERS} identifier columns")));
    }
    Ok(out)
}

fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => word.to_lowercase(),
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// Check a declaration against a table's columns and the known types;
/// returns the hidden columns it needs.
pub fn hidden_columns_for(
    table: &str,
    columns: &[ColumnDef],
    declaration: &[(String, String)],
    type_exists: impl Fn(&str) -> bool,
) -> Result<Vec<ColumnDef>> {
    if columns.iter().any(|c| !c.hidden && c.name == PROFILE_ID_COLUMN) {
        return Err(Error::user(format!(
            "table '{table}' has a column named {PROFILE_ID_COLUMN}, which a table with identifiers computes itself"
        )));
    }
    let mut hidden = Vec::new();
    for (column, type_name) in declaration {
        let Some(c) = columns.iter().find(|c| !c.hidden && &c.name == column) else {
            return Err(Error::user(format!("identifier column '{column}' does not exist in table '{table}'")));
        };
        if !is_text(&c.data_type) {
            return Err(Error::user(format!(
                "identifier column '{column}' of table '{table}' has type {}; identifiers must be text",
                c.data_type
            )));
        }
        if !type_exists(type_name) {
            return Err(Error::user(format!(
                "unknown identifier type '{type_name}' for column '{column}' (create it with CREATE IDENTIFIER {type_name})"
            )));
        }
        hidden.push(ColumnDef { name: format!("{NODE_COLUMN_PREFIX}{column}"), data_type: DataType::UInt64, nullable: true, hidden: true });
    }
    hidden.push(ColumnDef { name: LINK_COLUMN.into(), data_type: DataType::UInt32, nullable: true, hidden: true });
    hidden.push(ColumnDef { name: SEEN_COLUMN.into(), data_type: DataType::Int64, nullable: true, hidden: true });
    for h in &hidden {
        if columns.iter().any(|c| c.name == h.name) {
            return Err(Error::user(format!("table '{table}' already has a column named '{}'", h.name)));
        }
    }
    Ok(hidden)
}

impl TableIdentity {
    /// The identifier layout of a table, if it declares identifiers.
    pub fn of(meta: &TableMeta) -> Result<Option<TableIdentity>> {
        let Some(text) = meta.options.get(IDENTIFIERS_OPTION) else { return Ok(None) };
        let declaration = parse_declaration(text)?;
        let index = |name: &str| -> Result<usize> {
            meta.columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| Error::Internal(format!("table '{}' lacks column '{name}'", meta.name)))
        };
        let mut slots = Vec::with_capacity(declaration.len());
        for (column, type_name) in declaration {
            let value_index = index(&column)?;
            let node_index = index(&format!("{NODE_COLUMN_PREFIX}{column}"))?;
            slots.push(Slot { column, type_name, value_index, node_index });
        }
        Ok(Some(TableIdentity { slots, link_index: index(LINK_COLUMN)?, seen_index: index(SEEN_COLUMN)? }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_parse() {
        assert_eq!(
            parse_declaration("email AS email, Phone as phone,contact_id AS crm_id").unwrap(),
            vec![("email".into(), "email".into()), ("phone".into(), "phone".into()), ("contact_id".into(), "crm_id".into())]
        );
        assert!(parse_declaration("email email").is_err());
        assert!(parse_declaration("a AS x, a AS y").is_err());
    }

    #[test]
    fn options_are_checked() {
        let mut o = BTreeMap::new();
        o.insert("normalize".to_string(), "phone".to_string());
        o.insert("region".to_string(), "gb".to_string());
        let s = IdentifierSpec::from_options("phone", 1, &o).unwrap();
        assert_eq!(s.region.as_deref(), Some("GB"));
        assert_eq!(s.max_per_profile, DEFAULT_MAX_PER_PROFILE);
        assert_eq!(IdentifierSpec::from_options("user_id", 2, &BTreeMap::new()).unwrap().max_per_profile, 1);
        o.insert("max_per_profile".to_string(), "0".to_string());
        assert!(IdentifierSpec::from_options("phone", 1, &o).is_err());
        let mut bad = BTreeMap::new();
        bad.insert("colour".to_string(), "red".to_string());
        assert!(IdentifierSpec::from_options("x", 1, &bad).is_err());
        assert!(IdentifierSpec::from_options("1x", 1, &BTreeMap::new()).is_err());
    }
}
