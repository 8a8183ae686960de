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

/// The column saying when each generated table's facts were true.
fn time_column(table: &str) -> Option<&'static str> {
    match table {
        "crm_contacts" | "loyalty_members" => Some("updated_at"),
        "pos_orders" => Some("ordered_at"),
        "email_events" | "web_events" | "consent_events" => Some("occurred_at"),
        "email_subscribers" => Some("subscribed_at"),
        _ => None,
    }
}

/// `CREATE TABLE` for a generated table, declaring its identifiers and
/// time column.
pub fn create_table(spec: &TableSpec) -> String {
    let create = tessera_datagen::create_table_sql(spec);
    let ids: Vec<String> = spec.identifier_columns().map(|(c, t)| format!("{c} AS {}", t.as_str())).collect();
    let mut options = Vec::new();
    if !ids.is_empty() {
        options.push(format!("identifiers = '{}'", ids.join(", ")));
    }
    if let Some(t) = time_column(spec.name) {
        options.push(format!("time_column = '{t}'"));
    }
    if options.is_empty() {
        create
    } else {
        format!("{create} WITH ({})", options.join(", "))
    }
}

/// Attributes, traits and segments of the demo, including the headline
/// segment: purchased in the past 90 days with a lifetime value above $500.
pub const PROFILE_STATEMENTS: &[&str] = &[
    "CREATE PROFILE ATTRIBUTE first_name FROM crm_contacts.first_name, loyalty_members.first_name USING most_recent",
    "CREATE PROFILE ATTRIBUTE last_name FROM crm_contacts.last_name, loyalty_members.last_name USING most_recent",
    "CREATE PROFILE ATTRIBUTE city FROM crm_contacts.city",
    "CREATE PROFILE ATTRIBUTE tier FROM loyalty_members.tier",
    "CREATE TRAIT ltv AS sum(amount) FROM pos_orders",
    "CREATE TRAIT orders AS count(*) FROM pos_orders",
    "CREATE TRAIT last_purchase AS max(ordered_at) FROM pos_orders",
    "CREATE TRAIT orders_90d AS count(*) FROM pos_orders WITHIN '90 days'",
    "CREATE TRAIT web_visits_30d AS count(*) FROM web_events WITHIN '30 days'",
    "CREATE TRAIT email_clicks AS count(*) FROM email_events WHERE event_type = 'click'",
    "CREATE SEGMENT high_value AS SELECT profile_id FROM profiles WHERE ltv > 500 AND last_purchase >= now() - INTERVAL '90 days'",
    "CREATE SEGMENT lapsed AS SELECT profile_id FROM profiles WHERE orders > 0 AND last_purchase < now() - INTERVAL '180 days'",
    "CREATE SEGMENT engaged_browsers AS SELECT profile_id FROM profiles WHERE web_visits_30d >= 5 AND NOT in_segment(profile_id, 'high_value')",
];

/// Generate `people` persons and load them; returns rows loaded per table.
pub async fn load(db: &Database, people: u64, seed: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let session = db.session();
    for statement in setup_statements() {
        session.sql(&statement).await?;
    }
    // The demo's history ends today, so "the past 90 days" has people in it.
    let mut config = Config::new(people, seed);
    // (The generator counts in seconds.)
    let day = 86_400i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    config.window_end = now - now.rem_euclid(day);
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
    for statement in PROFILE_STATEMENTS {
        session.sql(statement).await?;
    }
    Ok(loaded)
}
