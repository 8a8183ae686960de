//! Segments benchmark, Tessera's side: load the generated sources with
//! identifiers (as the identity benchmark does), define traits and five
//! segments, then time
//! - three segment questions asked ad hoc, from the raw event rows (the
//!   resolution operator gives `profile_id`; no join with a mapping) and
//!   from the maintained traits;
//! - the incremental refresh of the five segments after a 1,000-row insert;
//! - `in_segment` filters over a bitmap of every profile.
//!
//! The clock is fixed at the end of the generated history so "the past 90
//! days" means the same for DuckDB. Prints one JSON object.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tessera::{Database, ManualClock, Options};

use super::identity::{int, load_all};

/// The generated history ends here (datagen's default window end).
pub const REFERENCE_TIME: &str = "2026-11-01 00:00:00";
const REFERENCE_MICROS: i64 = 1_793_491_200_000_000;

/// The three questions, asked of the raw rows.
pub const RAW_QUERIES: [(&str, &str); 3] = [
    (
        "high_value",
        "SELECT count(*) FROM (SELECT profile_id FROM pos_orders WHERE profile_id IS NOT NULL GROUP BY profile_id \
         HAVING sum(amount) > 500 AND max(ordered_at) >= now() - INTERVAL '90 days')",
    ),
    (
        "web_engaged",
        "SELECT count(*) FROM (SELECT profile_id FROM web_events WHERE profile_id IS NOT NULL \
         AND occurred_at >= now() - INTERVAL '30 days' GROUP BY profile_id HAVING count(*) >= 5)",
    ),
    (
        "clicked_not_bought",
        "SELECT count(*) FROM (SELECT DISTINCT profile_id FROM email_events WHERE event_type = 'click' AND profile_id IS NOT NULL) c \
         WHERE profile_id NOT IN (SELECT profile_id FROM pos_orders WHERE profile_id IS NOT NULL AND ordered_at >= now() - INTERVAL '180 days')",
    ),
];

/// The same questions over the maintained traits.
const TRAIT_QUERIES: [&str; 3] = [
    "SELECT count(*) FROM profiles WHERE ltv > 500 AND last_purchase >= now() - INTERVAL '90 days'",
    "SELECT count(*) FROM profiles WHERE web_visits_30d >= 5",
    "SELECT count(*) FROM profiles WHERE email_clicks >= 1 AND orders_180d = 0",
];

const DEFINITIONS: &[&str] = &[
    "CREATE TRAIT ltv AS sum(amount) FROM pos_orders",
    "CREATE TRAIT orders AS count(*) FROM pos_orders",
    "CREATE TRAIT last_purchase AS max(ordered_at) FROM pos_orders",
    "CREATE TRAIT orders_180d AS count(*) FROM pos_orders WITHIN '180 days'",
    "CREATE TRAIT web_visits_30d AS count(*) FROM web_events WITHIN '30 days'",
    "CREATE TRAIT email_clicks AS count(*) FROM email_events WHERE event_type = 'click'",
];

/// Five segments refreshed after each insert.
const SEGMENTS: &[&str] = &[
    "CREATE SEGMENT high_value AS SELECT profile_id FROM profiles WHERE ltv > 500 AND last_purchase >= now() - INTERVAL '90 days'",
    "CREATE SEGMENT web_engaged AS SELECT profile_id FROM profiles WHERE web_visits_30d >= 5",
    "CREATE SEGMENT clicked_not_bought AS SELECT profile_id FROM profiles WHERE email_clicks >= 1 AND orders_180d = 0",
    "CREATE SEGMENT big_spenders AS SELECT profile_id FROM pos_orders GROUP BY profile_id HAVING sum(amount) > 1000",
    "CREATE SEGMENT loyal AS SELECT profile_id FROM profiles WHERE orders >= 5",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn timed(db: &Database, sql: &str, runs: usize) -> anyhow::Result<(f64, i64)> {
    let mut times = Vec::new();
    let mut answer = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = db.session().sql(sql).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        answer = int(&r, 0);
    }
    Ok((median(times), answer))
}

/// Append 1,000 orders of existing members (no maintenance), then time the
/// maintenance alone; the median of five rounds.
async fn refresh_after_inserts(db: &Database, ids: &[String], first_round: usize) -> anyhow::Result<f64> {
    let mut refresh = Vec::new();
    for round in first_round..first_round + 5 {
        let values: Vec<String> = (0..1000)
            .map(|i| {
                let id = &ids[(round * 1000 + i) % ids.len()];
                format!("('BENCH{round}-{i}', '{id}', NULL, 'S1', {}.0, TIMESTAMP '{REFERENCE_TIME}')", 50 + (i % 700))
            })
            .collect();
        let sql = format!(
            "SELECT * FROM (VALUES {}) AS v(order_id, loyalty_id, phone, store_id, amount, ordered_at)",
            values.join(", ")
        );
        let batches = db.session().sql(&sql).await?;
        db.append("pos_orders", batches).await?;
        let t = Instant::now();
        db.maintain().await?;
        refresh.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(refresh))
}

pub async fn run(work: &Path, people: u64) -> anyhow::Result<String> {
    let data = work.join(format!("data-{people}"));
    if !data.join("web_events.parquet").exists() {
        tessera_datagen::generate(&tessera_datagen::Config::new(people, 42), &data, tessera_datagen::Formats::BOTH)?;
    }
    super::identity::write_identity_spec(work)?;
    let clock = Arc::new(ManualClock::new(REFERENCE_MICROS));
    let options = Options { clock: Some(clock), ..Default::default() };
    let dir = work.join("tessera-segments");
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open_with(&dir, options)?;
    let mut out = super::serde_like::Obj::new();
    out.num("people", people as f64);
    let started = Instant::now();
    let rows = load_all(&db, &data, true).await?;
    out.num("rows", rows as f64);
    out.num("load_s", started.elapsed().as_secs_f64());
    out.num("profiles", int(&db.session().sql("SELECT count(*) FROM profiles").await?, 0) as f64);

    for (name, sql) in RAW_QUERIES {
        let (ms, count) = timed(&db, sql, 3).await?;
        out.num(&format!("raw_{name}_ms"), ms);
        out.num(&format!("raw_{name}_count"), count as f64);
    }
    let t = Instant::now();
    for sql in DEFINITIONS {
        db.session().sql(sql).await?;
    }
    out.num("traits_define_s", t.elapsed().as_secs_f64());
    for ((name, _), sql) in RAW_QUERIES.iter().zip(TRAIT_QUERIES) {
        let (ms, count) = timed(&db, sql, 5).await?;
        out.num(&format!("traits_{name}_ms"), ms);
        out.num(&format!("traits_{name}_count"), count as f64);
    }
    let t = Instant::now();
    for sql in SEGMENTS {
        db.session().sql(sql).await?;
    }
    out.num("segments_define_s", t.elapsed().as_secs_f64());

    // Incremental refresh: 1,000 new orders of existing loyalty members
    // appended (no maintenance), then the maintenance alone is timed.
    let members = db
        .session()
        .sql("SELECT member_id FROM loyalty_members WHERE member_id IS NOT NULL LIMIT 5000")
        .await?;
    let ids: Vec<String> = members
        .iter()
        .flat_map(|b| {
            let a = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).ok();
            a.map(|a| (0..a.len()).map(|i| arrow::array::AsArray::as_string::<i32>(&a).value(i).to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    anyhow::ensure!(ids.len() >= 1000, "not enough loyalty members");
    let refresh = refresh_after_inserts(&db, &ids, 0).await?;
    out.num("refresh_five_segments_after_1000_rows_ms", refresh);
    // The same with the fifth segment over traits too: a segment over a raw
    // event table re-reads the changed profiles' rows, which costs a scan
    // of most of the table's row groups.
    db.session().sql("DROP SEGMENT big_spenders").await?;
    db.session().sql("CREATE SEGMENT big_spenders AS SELECT profile_id FROM profiles WHERE ltv > 1000").await?;
    let refresh = refresh_after_inserts(&db, &ids, 5).await?;
    out.num("refresh_five_trait_segments_after_1000_rows_ms", refresh);

    // in_segment over a bitmap of every profile.
    db.session().sql("CREATE SEGMENT everyone AS SELECT profile_id FROM profiles").await?;
    let (ms, count) = timed(&db, "SELECT count(*) FROM profiles WHERE in_segment(profile_id, 'everyone')", 10).await?;
    out.num("in_segment_everyone_ms", ms);
    out.num("everyone_members", count as f64);
    let (ms, _) = timed(
        &db,
        "SELECT count(*) FROM profiles WHERE in_segment(profile_id, 'high_value') AND NOT in_segment(profile_id, 'loyal')",
        10,
    )
    .await?;
    out.num("in_segment_combination_ms", ms);
    let (ms, _) = timed(&db, "SELECT count(*) FROM profiles", 10).await?;
    out.num("profiles_count_ms", ms);
    db.close().await?;
    Ok(out.finish())
}
