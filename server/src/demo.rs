//! The demo data set: the generated multi-source customer data (see
//! docs/generator.md) loaded into a database with its identifiers
//! declared, so profiles resolve as it loads.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use tessera::Database;
use tessera_datagen::{Config, TableSpec};

/// People in the demo data set unless told otherwise.
pub const DEFAULT_DEMO_PEOPLE: u64 = 10_000;
pub const DEMO_SEED: u64 = 42;

/// Identifier types of the generated sources, in priority order: when a
/// row would break a limit, the identifier with the largest number stops
/// linking first (a shared store phone or a family cookie before an
/// email).
pub const IDENTIFIER_TYPES: &[(&str, &str)] = &[
    ("email", "normalize = 'email', priority = 1"),
    ("loyalty_id", "priority = 2"),
    ("user_id", "priority = 2"),
    ("crm_id", "priority = 3"),
    ("esp_id", "priority = 3"),
    ("phone", "normalize = 'phone', region = 'US', priority = 4"),
    ("cookie", "max_per_profile = 20, priority = 5"),
];

/// The statements that declare the identifier types and create the source
/// tables with their identifier columns.
pub fn setup_statements() -> Vec<String> {
    let mut out: Vec<String> =
        IDENTIFIER_TYPES.iter().map(|(name, options)| format!("CREATE IDENTIFIER IF NOT EXISTS {name} ({options})")).collect();
    for spec in tessera_datagen::tables() {
        out.push(create_table(spec));
    }
    out
}

/// `CREATE TABLE` for a generated table, declaring its identifiers.
pub fn create_table(spec: &TableSpec) -> String {
    let create = tessera_datagen::create_table_sql(spec);
    let ids: Vec<String> = spec.identifier_columns().map(|(c, t)| format!("{c} AS {}", t.as_str())).collect();
    if ids.is_empty() {
        create
    } else {
        format!("{create} WITH (identifiers = '{}')", ids.join(", "))
    }
}

/// Generate `people` persons and load them; returns rows loaded per table.
pub async fn load(db: &Database, people: u64, seed: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let session = db.session();
    for statement in setup_statements() {
        session.sql(&statement).await?;
    }
    let config = Config::new(people, seed);
    let batches = tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<&'static str, Vec<RecordBatch>>> {
        let mut by_table: BTreeMap<&'static str, Vec<RecordBatch>> = BTreeMap::new();
        tessera_datagen::generate_batches(&config, |spec, batch, _persons| {
            by_table.entry(spec.name).or_default().push(batch);
            Ok(())
        })?;
        Ok(by_table)
    })
    .await??;
    let mut loaded = BTreeMap::new();
    for (table, batches) in batches {
        let rows = db.append(table, batches).await?;
        loaded.insert(table.to_string(), rows);
    }
    Ok(loaded)
}
