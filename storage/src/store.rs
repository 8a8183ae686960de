//! The store: opening and recovering a database directory, transactions
//! with group commit, flushes, compaction and catalog changes.
//!
//! Concurrency: one writer at a time holds the writer lock while it builds
//! its changes on top of the latest state; it queues its log record and
//! releases the lock before waiting for the fsync, so the next writer can
//! start and many commits share one fsync. Readers take the latest
//! *durable* snapshot and never wait for writers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;
use parking_lot::{Mutex, RawMutex, RwLock};
use roaring::RoaringTreemap;

use crate::buffer::RowBuffer;
use crate::codec::{decode_batch, encode_batch};
use crate::error::{Result, StorageError};
use crate::io;
use crate::manifest::{segment_file_name, ColumnDef, Manifest, SegmentRef, TableEntry, TableMeta};
use crate::cache::PageCache;
use crate::segment::{SegmentFormat, SegmentReader, SegmentWriter};
use crate::snapshot::{Segment, Snapshot, TableSnapshot};
use crate::wal::{parse_wal_file_name, read_log, wal_file_name, Op, TxnRecord, Wal};
use crate::{Lsn, RowId, TableId, ROW_ID_COLUMN};

mod catalog;
mod txn;

pub use txn::{PendingCommit, WriteTxn};

const LOCK_FILE: &str = "LOCK";
/// Limits on names and shapes (a limit on everything).
const MAX_NAME_BYTES: usize = 128;
const MAX_COLUMNS: usize = 4096;
const MAX_OPTION_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Flush the in-memory buffer to segments once it holds this many bytes.
    pub flush_threshold_bytes: usize,
    /// A transaction that only appends at least this many rows writes
    /// segments directly instead of the log (the data is written once).
    pub direct_segment_rows: usize,
    /// Most rows of one segment file a transaction writes as it goes. A
    /// transaction's appends to a table stream to segment files (named by
    /// the manifest only at commit) once they reach `direct_segment_rows`,
    /// so they are encoded while the next rows are produced and a large
    /// load never holds all its rows in memory. Until a file reaches this
    /// many rows the transaction can still delete (its files are read back
    /// and it commits through the log); after, it cannot.
    pub spill_rows: usize,
    /// zstd level for segment pages; 0 stores them uncompressed.
    pub zstd_level: i32,
    /// Rows per segment page, the unit a scan prunes and decodes (a value
    /// outside 1..=65,536 is clamped to that range).
    pub page_rows: usize,
    /// Memory for decoded pages, so repeated reads skip decompression and
    /// decoding (0 disables the cache).
    pub page_cache_bytes: u64,
    /// Segments smaller than this many rows are merged once there are more
    /// than `max_small_segments` of them in a table.
    pub small_segment_rows: u64,
    pub max_small_segments: usize,
}

impl StoreOptions {
    fn segment_format(&self) -> SegmentFormat {
        SegmentFormat { zstd_level: self.zstd_level, page_rows: self.page_rows.clamp(1, crate::segment::ROW_GROUP_ROWS) }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_threshold_bytes: 64 << 20,
            direct_segment_rows: 100_000,
            spill_rows: 1 << 20,
            zstd_level: 1,
            page_rows: crate::segment::DEFAULT_PAGE_ROWS,
            page_cache_bytes: 256 << 20,
            small_segment_rows: 1 << 20,
            max_small_segments: 8,
        }
    }
}

/// What a commit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// LSN of the commit's log record (0 when nothing was logged).
    pub lsn: Lsn,
    pub rows_appended: u64,
    pub rows_deleted: u64,
}

struct WriterState {
    /// Latest state, including commits whose fsync is still in flight.
    latest: Arc<Snapshot>,
    /// The manifest as it is on disk.
    manifest: Manifest,
    next_lsn: Lsn,
    next_version: u64,
}

struct Inner {
    dir: Option<PathBuf>,
    options: StoreOptions,
    /// Decoded pages of every segment reader of this store.
    cache: Arc<PageCache>,
    writer: Arc<Mutex<WriterState>>,
    visible: RwLock<(u64, Arc<Snapshot>)>,
    /// Snapshots of commits waiting for their fsync, by LSN, with their
    /// version.
    pending: Mutex<BTreeMap<Lsn, (u64, Arc<Snapshot>)>>,
    wal: Option<Wal>,
    /// In-memory mode has no log; a failure there still poisons.
    poisoned: Mutex<Option<String>>,
    _lock: Option<File>,
}

/// A handle to an open database directory (or an in-memory database).
/// Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.dir).finish()
    }
}

impl Store {
    /// How the cache of decoded pages is used.
    pub fn page_cache_stats(&self) -> crate::PageCacheStats {
        self.inner.cache.stats()
    }

    /// A database that lives only in memory: same semantics, no files.
    pub fn in_memory(options: StoreOptions) -> Store {
        let cache = Arc::new(PageCache::new(options.page_cache_bytes));
        Store::from_parts(None, options, cache, Manifest::empty(), Snapshot::empty(), 1, None, None)
    }

    /// Open or create the database in `dir`, recovering from the log.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let lock = acquire_lock(dir)?;
        let manifest = match Manifest::read(dir)? {
            Some(m) => m,
            None => {
                let m = Manifest::empty();
                m.write(dir)?;
                m
            }
        };
        remove_garbage(dir, &manifest)?;
        let cache = Arc::new(PageCache::new(options.page_cache_bytes));
        let mut snapshot = snapshot_from_manifest(dir, &manifest, &cache)?;
        let (last_lsn, newest_log) = replay_logs(dir, &manifest, &mut snapshot)?;
        let wal = match newest_log {
            Some((name, valid_len)) => Wal::open(dir, &name, Some(valid_len), last_lsn)?,
            None => Wal::open(dir, &wal_file_name(manifest.flushed_lsn + 1), None, last_lsn)?,
        };
        snapshot.lsn = last_lsn;
        Ok(Store::from_parts(Some(dir.to_path_buf()), options, cache, manifest, snapshot, last_lsn + 1, Some(wal), Some(lock)))
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        dir: Option<PathBuf>,
        options: StoreOptions,
        cache: Arc<PageCache>,
        manifest: Manifest,
        snapshot: Snapshot,
        next_lsn: Lsn,
        wal: Option<Wal>,
        lock: Option<File>,
    ) -> Store {
        let snapshot = Arc::new(snapshot);
        Store {
            inner: Arc::new(Inner {
                dir,
                options,
                cache,
                writer: Arc::new(Mutex::new(WriterState {
                    latest: snapshot.clone(),
                    manifest,
                    next_lsn,
                    next_version: 1,
                })),
                visible: RwLock::new((0, snapshot)),
                pending: Mutex::new(BTreeMap::new()),
                wal,
                poisoned: Mutex::new(None),
                _lock: lock,
            }),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The latest durable state. Cheap; never waits for writers.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.visible.read().1.clone()
    }

    /// Start a write transaction. Blocks while another writer is preparing
    /// (not while it waits for its fsync).
    pub fn begin_write(&self) -> Result<WriteTxn> {
        self.check_poisoned()?;
        let guard = self.inner.writer.lock_arc();
        let base = guard.latest.clone();
        Ok(WriteTxn {
            store: self.clone(),
            guard,
            base,
            appends: Vec::new(),
            deletes: BTreeMap::new(),
            spilled: Vec::new(),
            spilled_files: Vec::new(),
            in_flight: Default::default(),
            spilled_for_memory: false,
        })
    }

    /// Refuse writes after a failed write, until reopen.
    fn check_poisoned(&self) -> Result<()> {
        if let Some(why) = self.inner.poisoned.lock().clone() {
            return Err(StorageError::Poisoned(why));
        }
        if let Some(why) = self.inner.wal.as_ref().and_then(|w| w.failure()) {
            return Err(StorageError::Poisoned(why));
        }
        Ok(())
    }

    /// A write that failed before its manifest named what it wrote: remove
    /// those files and refuse writes until reopened.
    fn abandon_write(&self, written: Vec<PathBuf>, err: StorageError) -> StorageError {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
        self.poison(&err);
        err
    }

    fn poison(&self, err: &StorageError) {
        let why = err.to_string();
        if let Some(wal) = &self.inner.wal {
            wal.poison(why.clone());
        }
        let mut p = self.inner.poisoned.lock();
        if p.is_none() {
            *p = Some(why);
        }
    }

    /// Run a fallible durable step; any failure poisons the store, because
    /// what reached the disk is no longer known.
    fn durable<T>(&self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        step().inspect_err(|e| self.poison(e))
    }

    fn publish(&self, version: u64, snapshot: Arc<Snapshot>) {
        let mut visible = self.inner.visible.write();
        if version > visible.0 {
            *visible = (version, snapshot);
        }
    }

    /// Make visible the newest pending snapshot whose LSN is durable.
    fn publish_durable(&self, durable: Lsn) {
        let newest = {
            let mut pending = self.inner.pending.lock();
            let later = pending.split_off(&(durable + 1));
            let done = std::mem::replace(&mut *pending, later);
            done.into_iter().next_back()
        };
        if let Some((_, (version, snap))) = newest {
            self.publish(version, snap);
        }
    }

    /// Wait until every queued commit is durable and visible (writer lock
    /// held by the caller).
    fn drain(&self, w: &WriterState) -> Result<()> {
        if let Some(wal) = &self.inner.wal {
            let last = w.next_lsn - 1;
            wal.wait_durable(last)?;
            self.publish_durable(last);
        }
        Ok(())
    }

    fn install(&self, w: &mut WriterState, mut snapshot: Snapshot) {
        snapshot.lsn = w.next_lsn - 1;
        let version = w.next_version;
        w.next_version += 1;
        let snapshot = Arc::new(snapshot);
        w.latest = snapshot.clone();
        self.publish(version, snapshot);
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        match &self.inner.dir {
            Some(dir) => self.durable(|| manifest.write(dir)),
            None => Ok(()),
        }
    }

    // ----- flush and compaction -------------------------------------------

    /// Write every buffered row to segments, record them in the manifest
    /// and start a new log file.
    pub fn flush(&self) -> Result<()> {
        self.check_poisoned()?;
        let mut w = self.inner.writer.lock();
        self.flush_locked(&mut w)?;
        self.auto_compact_locked(&mut w)
    }

    fn flush_locked(&self, w: &mut WriterState) -> Result<()> {
        let Some(dir) = self.inner.dir.clone() else {
            return Ok(());
        };
        self.drain(w)?;
        let flushed_lsn = w.next_lsn - 1;
        let mut manifest = w.manifest.clone();
        let mut snap = (*w.latest).clone();
        let mut written = Vec::new();
        let outcome = (|| -> Result<()> {
            for (id, table) in snap.tables.iter_mut() {
                // Every table's deleted set goes into the manifest, also
                // for tables with nothing buffered: the log records of its
                // deletes are about to be skipped by replay.
                let mut t = (**table).clone();
                if !t.buffer.is_empty() {
                    if let Some(seg) = self.flush_table(&dir, &mut manifest, &mut t, &mut written)? {
                        t.segments.push(seg);
                    }
                }
                let entry = manifest
                    .tables
                    .get_mut(id)
                    .ok_or_else(|| StorageError::Internal(format!("table {id} missing from the manifest")))?;
                entry.segments = t.segments.iter().map(|s| s.sref.clone()).collect();
                entry.next_row_id = t.next_row_id;
                entry.set_deleted(&t.deleted)?;
                *table = Arc::new(t);
            }
            manifest.flushed_lsn = flushed_lsn;
            fail::fail_point!("storage::flush_before_manifest", |_| Err(StorageError::io(
                &dir,
                std::io::Error::other("injected failure before the flush's manifest")
            )));
            io::sync_dir(&dir)?;
            manifest.write(&dir)
        })();
        if let Err(e) = outcome {
            return Err(self.abandon_write(written, e));
        }
        w.manifest = manifest;
        self.install(w, snap);
        if let Some(wal) = &self.inner.wal {
            let current = self.durable(|| wal.rotate(flushed_lsn))?;
            remove_old_logs(&dir, &current)?;
        }
        Ok(())
    }

    /// Turn one table's buffer into a segment (dropping deleted rows, whose
    /// ids then leave the deleted set).
    fn flush_table(
        &self,
        dir: &Path,
        manifest: &mut Manifest,
        t: &mut TableSnapshot,
        written: &mut Vec<PathBuf>,
    ) -> Result<Option<Arc<Segment>>> {
        let schema = t.meta.storage_schema();
        let mut deleted = (*t.deleted).clone();
        let mut live = Vec::with_capacity(t.buffer.batch_count());
        for batch in &t.buffer {
            let batch = conform(batch, &schema)?;
            let (lo, hi) = row_id_range(&batch)?;
            let kept = drop_deleted(&batch, &deleted)?;
            deleted.remove_range(lo..=hi);
            if kept.num_rows() > 0 {
                live.push(kept);
            }
        }
        t.buffer.clear();
        t.deleted = Arc::new(deleted);
        if live.is_empty() {
            return Ok(None);
        }
        let id = manifest.next_segment_id;
        manifest.next_segment_id += 1;
        let seg = write_segment(dir, id, &schema, live, self.inner.options.segment_format(), &self.inner.cache, written)?;
        Ok(Some(seg))
    }

    /// Rewrite all of a table's segments into one, without deleted rows:
    /// afterwards their bytes are gone from the data directory.
    pub fn compact(&self, table: &str) -> Result<()> {
        self.check_poisoned()?;
        let mut w = self.inner.writer.lock();
        self.flush_locked(&mut w)?;
        let t = w
            .latest
            .table(table)
            .cloned()
            .ok_or_else(|| StorageError::NotFound { kind: "table", name: table.to_string() })?;
        let all: BTreeSet<u64> = t.segments.iter().map(|s| s.sref.id).collect();
        self.compact_locked(&mut w, t.id(), &all)
    }

    /// The automatic policy: merge small segments once there are too many,
    /// and rewrite segments where deletes have piled up.
    fn auto_compact_locked(&self, w: &mut WriterState) -> Result<()> {
        if self.inner.dir.is_none() {
            return self.compact_in_memory(w);
        }
        let opts = &self.inner.options;
        let plans: Vec<(TableId, BTreeSet<u64>)> = w
            .latest
            .tables()
            .filter_map(|t| {
                let small: BTreeSet<u64> = t
                    .segments
                    .iter()
                    .filter(|s| s.sref.rows < opts.small_segment_rows)
                    .map(|s| s.sref.id)
                    .collect();
                let mut chosen = if small.len() > opts.max_small_segments { small } else { BTreeSet::new() };
                for s in &t.segments {
                    let dead = t.deleted.range_cardinality(s.sref.min_row_id..=s.sref.max_row_id);
                    if dead * 5 > s.sref.rows {
                        chosen.insert(s.sref.id);
                    }
                }
                (!chosen.is_empty()).then(|| (t.id(), chosen))
            })
            .collect();
        for (table, segments) in plans {
            self.compact_locked(w, table, &segments)?;
        }
        Ok(())
    }

    /// In memory, compaction drops deleted rows from the buffer.
    fn compact_in_memory(&self, w: &mut WriterState) -> Result<()> {
        let mut snap = (*w.latest).clone();
        for table in snap.tables.values_mut() {
            if table.deleted.is_empty() {
                continue;
            }
            let mut t = (**table).clone();
            let schema = t.meta.storage_schema();
            let mut kept = Vec::new();
            for b in &t.buffer {
                let b = drop_deleted(&conform(b, &schema)?, &t.deleted)?;
                if b.num_rows() > 0 {
                    kept.push(b);
                }
            }
            t.buffer = RowBuffer::of(kept);
            t.deleted = Arc::new(RoaringTreemap::new());
            *table = Arc::new(t);
        }
        self.install(w, snap);
        Ok(())
    }

    /// Rewrite `which` segments of a table into one (writer lock held,
    /// buffer already flushed).
    fn compact_locked(&self, w: &mut WriterState, table: TableId, which: &BTreeSet<u64>) -> Result<()> {
        let Some(dir) = self.inner.dir.clone() else {
            return self.compact_in_memory(w);
        };
        let Some(t) = w.latest.table_by_id(table).cloned() else {
            return Ok(());
        };
        let (old, keep): (Vec<_>, Vec<_>) = t.segments.iter().cloned().partition(|s| which.contains(&s.sref.id));
        if old.is_empty() {
            return Ok(());
        }
        let schema = t.meta.storage_schema();
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut manifest = w.manifest.clone();
        let id = manifest.next_segment_id;
        manifest.next_segment_id += 1;
        let path = dir.join(segment_file_name(id));
        let mut deleted = (*t.deleted).clone();
        let mut writer = SegmentWriter::create(&path, schema.clone(), self.inner.options.segment_format())?;
        let copied = (|| -> Result<()> {
            for seg in &old {
                for unit in t.scan_units_of(seg) {
                    let batch = unit.read(&columns)?;
                    writer.write(RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?)?;
                }
                forget_rows_of(&seg.reader, &mut deleted)?;
            }
            Ok(())
        })();
        if let Err(e) = copied {
            writer.abandon();
            return Err(e);
        }
        let mut segments = keep;
        let mut new_files = Vec::new();
        if writer.rows() == 0 {
            writer.abandon();
        } else {
            let (bytes, groups) = writer.finish().inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })?;
            new_files.push(path.clone());
            let reader = Arc::new(SegmentReader::open(&path, self.inner.cache.clone())?);
            segments.push(Arc::new(Segment { sref: segment_ref(id, &groups, bytes), reader }));
        }
        segments.sort_by_key(|s| s.sref.min_row_id);
        let entry = manifest
            .tables
            .get_mut(&table)
            .ok_or_else(|| StorageError::Internal(format!("table {table} missing from the manifest")))?;
        entry.segments = segments.iter().map(|s| s.sref.clone()).collect();
        entry.set_deleted(&deleted)?;
        fail::fail_point!("storage::compact_before_manifest", |_| {
            let _ = std::fs::remove_file(&path);
            Err(StorageError::io(&dir, std::io::Error::other("injected failure before the compaction's manifest")))
        });
        if let Err(e) = io::sync_dir(&dir).and_then(|_| manifest.write(&dir)) {
            for f in new_files {
                let _ = std::fs::remove_file(f);
            }
            self.poison(&e);
            return Err(e);
        }
        w.manifest = manifest;
        let mut snap = (*w.latest).clone();
        let mut nt = (*t).clone();
        nt.segments = segments;
        nt.deleted = Arc::new(deleted);
        snap.tables.insert(table, Arc::new(nt));
        self.install(w, snap);
        for s in old {
            io::remove_file_if_exists(&dir.join(s.sref.file_name()))?;
        }
        Ok(())
    }

    /// Check every checksum of every live segment.
    pub fn verify(&self) -> Result<()> {
        let snap = self.snapshot();
        for t in snap.tables() {
            for s in &t.segments {
                s.reader.verify()?;
            }
        }
        Ok(())
    }

    /// Flush the buffer so the next open replays nothing.
    pub fn close(&self) -> Result<()> {
        if self.check_poisoned().is_err() {
            return Ok(());
        }
        self.flush()
    }
}

impl TableSnapshot {
    fn scan_units_of(&self, seg: &Segment) -> Vec<crate::ScanUnit> {
        let mut only = self.clone();
        only.segments = self.segments.iter().filter(|s| s.sref.id == seg.sref.id).cloned().collect();
        only.buffer.clear();
        only.scan_units()
    }
}

impl Store {
    /// Flush when the buffer has grown past the threshold (after a commit
    /// made with `prepare` and `wait`).
    pub fn maybe_flush(&self) -> Result<()> {
        if self.inner.dir.is_none() {
            return Ok(());
        }
        let buffered: usize = self.inner.writer.lock().latest.tables().map(|t| t.buffer.bytes()).sum();
        if buffered >= self.inner.options.flush_threshold_bytes {
            self.flush()?;
        }
        Ok(())
    }
}

// ----- helpers ---------------------------------------------------------------

/// Remove the ids of every row stored in a segment from a deleted set
/// (once the segment is rewritten, those ids are no longer stored there).
fn forget_rows_of(segment: &SegmentReader, deleted: &mut RoaringTreemap) -> Result<()> {
    for (g, group) in segment.row_groups().iter().enumerate() {
        if group.max_row_id - group.min_row_id + 1 == group.rows {
            deleted.remove_range(group.min_row_id..=group.max_row_id);
            continue;
        }
        let ids = segment.read_column(g, 0)?;
        let ids = ids
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| StorageError::Internal("row id column is not UInt64".into()))?;
        for id in ids.values().iter() {
            deleted.remove(*id);
        }
    }
    Ok(())
}

fn segment_ref(id: u64, groups: &[crate::segment::RowGroupMeta], bytes: u64) -> SegmentRef {
    SegmentRef {
        id,
        rows: groups.iter().map(|g| g.rows).sum(),
        min_row_id: groups.iter().map(|g| g.min_row_id).min().unwrap_or(0),
        max_row_id: groups.iter().map(|g| g.max_row_id).max().unwrap_or(0),
        bytes,
    }
}

fn write_segment(
    dir: &Path,
    id: u64,
    schema: &SchemaRef,
    batches: impl IntoIterator<Item = RecordBatch>,
    format: SegmentFormat,
    cache: &Arc<PageCache>,
    written: &mut Vec<PathBuf>,
) -> Result<Arc<Segment>> {
    let path = dir.join(segment_file_name(id));
    let mut writer = SegmentWriter::create(&path, schema.clone(), format)?;
    written.push(path.clone());
    for b in batches {
        writer.write(b)?;
    }
    let (bytes, groups) = writer.finish()?;
    let reader = Arc::new(SegmentReader::open(&path, cache.clone())?);
    Ok(Arc::new(Segment { sref: segment_ref(id, &groups, bytes), reader }))
}

fn row_id_range(batch: &RecordBatch) -> Result<(RowId, RowId)> {
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| StorageError::Internal("row id column is not UInt64".into()))?;
    let lo = arrow::compute::min(ids).ok_or_else(|| StorageError::Internal("empty buffered batch".into()))?;
    let hi = arrow::compute::max(ids).ok_or_else(|| StorageError::Internal("empty buffered batch".into()))?;
    Ok((lo, hi))
}

fn drop_deleted(batch: &RecordBatch, deleted: &RoaringTreemap) -> Result<RecordBatch> {
    if deleted.is_empty() {
        return Ok(batch.clone());
    }
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| StorageError::Internal("row id column is not UInt64".into()))?;
    let keep: arrow::array::BooleanArray = ids.iter().map(|id| Some(!id.is_some_and(|id| deleted.contains(id)))).collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// Bring a batch written under an older table schema to the current one
/// (columns added since read as NULL).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) => batch.column(i).clone(),
            Err(_) => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(StorageError::InvalidArgument(format!(
            "{kind} name '{name}' must have between 1 and {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

fn validate_table(name: &str, columns: &[ColumnDef], options: &BTreeMap<String, String>) -> Result<()> {
    validate_name("table", name)?;
    if columns.is_empty() {
        return Err(StorageError::InvalidArgument(format!("table '{name}' must have at least one column")));
    }
    if columns.len() > MAX_COLUMNS {
        return Err(StorageError::LimitExceeded(format!("table '{name}' has more than {MAX_COLUMNS} columns")));
    }
    let mut seen = BTreeSet::new();
    for c in columns {
        validate_name("column", &c.name)?;
        if c.name == ROW_ID_COLUMN {
            return Err(StorageError::InvalidArgument(format!("column name '{ROW_ID_COLUMN}' is reserved")));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(StorageError::InvalidArgument(format!("column '{}' appears twice in table '{name}'", c.name)));
        }
    }
    let option_bytes: usize = options.iter().map(|(k, v)| k.len() + v.len()).sum();
    if option_bytes > MAX_OPTION_BYTES {
        return Err(StorageError::LimitExceeded(format!("options of table '{name}' exceed {MAX_OPTION_BYTES} bytes")));
    }
    Ok(())
}

/// A batch must have exactly the table's columns, in order, with the same
/// types, and no NULL in a NOT NULL column.
fn validate_batch(meta: &TableMeta, batch: &RecordBatch) -> Result<()> {
    if batch.num_columns() != meta.columns.len() {
        return Err(StorageError::InvalidArgument(format!(
            "table '{}' has {} columns, the rows given have {}",
            meta.name,
            meta.columns.len(),
            batch.num_columns()
        )));
    }
    for (c, (field, array)) in meta.columns.iter().zip(batch.schema().fields().iter().zip(batch.columns())) {
        if field.name() != &c.name {
            return Err(StorageError::InvalidArgument(format!(
                "table '{}': expected column '{}', got '{}'",
                meta.name,
                c.name,
                field.name()
            )));
        }
        if array.data_type() != &c.data_type {
            return Err(StorageError::InvalidArgument(format!(
                "column '{}' of table '{}' has type {}, the rows given have {}",
                c.name,
                meta.name,
                c.data_type,
                array.data_type()
            )));
        }
        if !c.nullable && array.null_count() > 0 {
            return Err(StorageError::InvalidArgument(format!(
                "column '{}' of table '{}' does not accept NULL",
                c.name, meta.name
            )));
        }
    }
    Ok(())
}

fn acquire_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io(&path, e))?;
    // A lock can outlive its holder for a moment: a process forked by this
    // one shares the lock until it execs. Retry briefly before giving up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::InvalidArgument(format!(
                    "the database in {} is in use by another process",
                    dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::io(&path, e)),
        }
    }
}

/// Remove what an interrupted step left behind: temporary files and
/// segments the manifest does not name.
fn remove_garbage(dir: &Path, manifest: &Manifest) -> Result<()> {
    let live: BTreeSet<String> = manifest
        .tables
        .values()
        .flat_map(|t| t.segments.iter().map(|s| s.file_name()))
        .collect();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let orphan_segment = name.starts_with("seg-") && name.ends_with(".tseg") && !live.contains(&name);
        if name.ends_with(".tmp") || orphan_segment {
            io::remove_file_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

fn snapshot_from_manifest(dir: &Path, manifest: &Manifest, cache: &Arc<PageCache>) -> Result<Snapshot> {
    let mut snap = Snapshot::empty();
    snap.lsn = manifest.flushed_lsn;
    snap.metadata = Arc::new(manifest.metadata.clone());
    for (id, entry) in &manifest.tables {
        let mut t = TableSnapshot::new(entry.meta.clone(), entry.next_row_id);
        for sref in &entry.segments {
            let reader = Arc::new(SegmentReader::open(&dir.join(sref.file_name()), cache.clone())?);
            t.segments.push(Arc::new(Segment { sref: sref.clone(), reader }));
        }
        let deleted = entry
            .deleted_bitmap()
            .map_err(|d| StorageError::corruption(dir.join(crate::manifest::MANIFEST_FILE), 0, d))?;
        t.deleted = Arc::new(deleted);
        snap.tables.insert(*id, Arc::new(t));
    }
    Ok(snap)
}

/// Replay every log record after the manifest's flushed LSN. Returns the
/// last LSN seen and the newest log file with its valid length.
fn replay_logs(dir: &Path, manifest: &Manifest, snap: &mut Snapshot) -> Result<(Lsn, Option<(String, u64)>)> {
    let mut logs: Vec<(Lsn, String)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(first) = parse_wal_file_name(&name) {
            logs.push((first, name));
        }
    }
    logs.sort();
    let mut last = manifest.flushed_lsn;
    let mut newest = None;
    let count = logs.len();
    for (i, (_, name)) in logs.into_iter().enumerate() {
        let path = dir.join(&name);
        let is_newest = i + 1 == count;
        let scan = read_log(&path, is_newest)?;
        let mut prev = 0;
        for record in scan.records {
            if record.lsn <= prev {
                return Err(StorageError::corruption(&path, 0, format!("log LSNs out of order ({} after {prev})", record.lsn)));
            }
            prev = record.lsn;
            if record.lsn <= manifest.flushed_lsn {
                continue;
            }
            apply_record(snap, &record).map_err(|d| StorageError::corruption(&path, 0, d))?;
            last = last.max(record.lsn);
        }
        if is_newest {
            newest = Some((name, scan.valid_len));
        }
    }
    Ok((last, newest))
}

fn apply_record(snap: &mut Snapshot, record: &TxnRecord) -> std::result::Result<(), String> {
    for op in &record.ops {
        match op {
            Op::Append { table, first_row_id, ipc } => {
                let Some(t) = snap.tables.get_mut(table) else { continue };
                let user = decode_batch(ipc)?;
                let mut nt = (**t).clone();
                let n = user.num_rows() as u64;
                let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(*first_row_id..first_row_id + n));
                let mut columns = vec![ids];
                columns.extend(user.columns().iter().cloned());
                let mut fields = vec![Arc::new(arrow::datatypes::Field::new(ROW_ID_COLUMN, arrow::datatypes::DataType::UInt64, false))];
                fields.extend(user.schema().fields().iter().cloned());
                let stored = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
                    .map_err(|e| e.to_string())?;
                let stored = conform(&stored, &nt.meta.storage_schema()).map_err(|e| e.to_string())?;
                nt.buffer.push(stored);
                nt.next_row_id = nt.next_row_id.max(first_row_id + n);
                *t = Arc::new(nt);
            }
            Op::Delete { table, rows } => {
                let Some(t) = snap.tables.get_mut(table) else { continue };
                let mut nt = (**t).clone();
                let mut d = (*nt.deleted).clone();
                d |= rows;
                nt.deleted = Arc::new(d);
                *t = Arc::new(nt);
            }
        }
    }
    Ok(())
}

fn remove_old_logs(dir: &Path, current: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if parse_wal_file_name(&name).is_some() && entry.path() != current {
            io::remove_file_if_exists(&entry.path())?;
        }
    }
    Ok(())
}
