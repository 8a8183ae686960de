//! Durable columnar storage for Tessera.
//!
//! A database directory holds a write-ahead log (`wal-*.log`), immutable
//! columnar segment files (`seg-*.tseg`) and a `MANIFEST` naming the live
//! segments and the catalog. Commits go to the log (group commit: one fsync
//! for many concurrent commits) and to an in-memory buffer of Arrow batches;
//! a flush turns the buffer into segments and rotates the log. Every byte
//! on disk is described in `FORMAT.md`.
//!
//! This crate knows nothing of SQL: tables are named lists of typed columns
//! with string options, and the engine keeps whatever else it needs in the
//! manifest's metadata map.

mod buffer;
mod cache;
mod codec;
mod dictionary;
mod error;
mod io;
mod manifest;
mod segment;
mod snapshot;
mod store;
mod wal;

pub use cache::{PageCache, PageCacheStats};
pub use dictionary::{DictionaryEntry, DICTIONARY_FILE};
pub use error::{Result, StorageError};
pub use manifest::{ColumnDef, TableMeta};
pub use segment::{same_view_value, ChunkStats, RowGroupMeta, SegmentReader, StatValue};
#[doc(hidden)]
pub use segment::internals;
pub use snapshot::{ScanUnit, Snapshot, TableSnapshot};
pub use store::{CommitInfo, PendingCommit, Store, StoreOptions, WriteTxn};

/// Name of the hidden column that carries every row's stable id.
pub const ROW_ID_COLUMN: &str = "_row_id";

/// Table identifiers are never reused, so a log record naming a dropped
/// table can be recognised and skipped during replay.
pub type TableId = u64;
/// Stable row id: assigned at append, kept through flush and compaction.
pub type RowId = u64;
/// Log sequence number: one per committed transaction.
pub type Lsn = u64;
/// A set of row ids (a roaring bitmap of 64-bit ids).
pub use roaring::RoaringTreemap as RowIdSet;
