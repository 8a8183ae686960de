//! Tessera: an embedded analytical database for customer profiles.
//!
//! ```no_run
//! # async fn demo() -> tessera::Result<()> {
//! let db = tessera::Database::open("./tessera-data")?;
//! let session = db.session();
//! session.sql("CREATE TABLE events (customer TEXT, amount DOUBLE)").await?;
//! session.sql("INSERT INTO events VALUES ('anna', 12.5)").await?;
//! let batches = session.sql("SELECT customer, sum(amount) FROM events GROUP BY customer").await?;
//! # Ok(()) }
//! ```

mod catalog;
mod database;
mod error;
mod identity;
mod ingest;
mod prepared;
mod pruning;
mod profiles;
mod provider;
mod text_format;

pub use database::{Database, Options, Output, Session, CATALOG, DEFAULT_REFRESH_INTERVAL, SCHEMA};
pub use prepared::Prepared;
pub use profiles::{Cause, Change, Clock, ManualClock, SegmentChange, SegmentSubscription, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use tessera_sql::{parse, Statement};
/// The SQL dialect's types (statements, COPY options).
pub use tessera_sql as sql;
pub use tessera_storage::StoreOptions;

/// Building blocks exposed only for the micro-benchmarks in `benches/`
/// (normalizers, the identity graph's union-find). Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::identity::graph::{Graph, NodeId, ProfileEvent, Rules, TypeRules};
    pub use crate::identity::normalize::{key_of, Normalized, Normalizer};
    pub use tessera_storage::internals::{pack_page, unpack_page};
}

/// Re-exported so users build batches with the same Arrow version.
pub use arrow;
pub use datafusion;
