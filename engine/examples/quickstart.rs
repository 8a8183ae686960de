//! The README's example: `cargo run -p tessera --example quickstart`.

use tessera::arrow::util::pretty::pretty_format_batches;
use tessera::Database;

#[tokio::main]
async fn main() -> tessera::Result<()> {
    let dir = std::env::temp_dir().join("tessera-quickstart");
    let db = Database::open(&dir)?;
    let session = db.session();
    session
        .sql("CREATE TABLE IF NOT EXISTS events (customer TEXT NOT NULL, kind TEXT, amount DOUBLE)")
        .await?;
    session
        .sql("INSERT INTO events VALUES ('anna', 'purchase', 120.0), ('ben', 'view', NULL)")
        .await?;
    let batches = session
        .sql("SELECT customer, sum(amount) AS spent FROM events GROUP BY customer ORDER BY customer")
        .await?;
    println!("{}", pretty_format_batches(&batches)?);
    drop(session);
    db.close().await
}
