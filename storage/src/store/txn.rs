//! Write transactions: appends and deletes held (or spilled to segment
//! files) until one commit applies them atomically, through the log or
//! directly as segments.

use super::*;

/// A write transaction: appends and deletes applied atomically at commit.
pub struct WriteTxn {
    pub(super) store: Store,
    pub(super) guard: parking_lot::ArcMutexGuard<RawMutex, WriterState>,
    pub(super) base: Arc<Snapshot>,
    /// (table, first row id, batch in the storage schema)
    pub(super) appends: Vec<(TableId, RowId, RecordBatch)>,
    pub(super) deletes: BTreeMap<TableId, RoaringTreemap>,
    /// Appends already written to segment files (see
    /// `StoreOptions::spill_rows`), in row-id order per table.
    pub(super) spilled: Vec<(TableId, Arc<Segment>)>,
    /// Their files: removed if the transaction does not commit.
    pub(super) spilled_files: Vec<PathBuf>,
    /// Spills still being written, each by a thread of its own, while the
    /// caller goes on appending, oldest first (at most
    /// [`MAX_SPILLS_IN_FLIGHT`]: memory stays bounded by that many spills'
    /// worth of rows plus the ones held). Their files are already in
    /// `spilled_files`.
    pub(super) in_flight: std::collections::VecDeque<SpillInFlight>,
}

/// Spills written at once. Two: encoding a spill alternates between
/// compressing pages on every core and steps of one thread (assembling a
/// row group, writing it), and a second spill fills those gaps instead
/// of the load waiting for the first.
const MAX_SPILLS_IN_FLIGHT: usize = 2;

pub(super) struct SpillInFlight {
    table: TableId,
    rows: u64,
    writer: std::thread::JoinHandle<Result<Arc<Segment>>>,
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        // The writer thread must be done with its file before the file is
        // removed, or it could create it again afterwards.
        for spill in self.in_flight.drain(..) {
            let _ = spill.writer.join();
        }
        // Committed transactions have emptied the list; anything left was
        // never named by the manifest (a crash leaves it to the orphan
        // sweep at the next open).
        for path in self.spilled_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl WriteTxn {
    /// The state this transaction builds on: every commit before it,
    /// including those whose fsync is still in flight. Its own changes are
    /// not included.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.base
    }

    /// The row id the next row appended to `table` in this transaction
    /// will get.
    pub fn next_row_id(&self, table: &str) -> Result<RowId> {
        let t = self
            .base
            .table(table)
            .ok_or_else(|| StorageError::NotFound { kind: "table", name: table.to_string() })?;
        Ok(t.next_row_id + self.rows_in_txn(t.id()))
    }

    /// Rows this transaction appended to a table so far, spilled or not.
    fn rows_in_txn(&self, table: TableId) -> u64 {
        let spilled: u64 = self.spilled.iter().filter(|(id, _)| *id == table).map(|(_, s)| s.sref.rows).sum();
        let in_flight: u64 = self.in_flight.iter().filter(|s| s.table == table).map(|s| s.rows).sum();
        self.held_rows(table) + spilled + in_flight
    }

    /// Wait for every spill in flight and take their segments, in order.
    fn finish_spills(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.finish_oldest_spill()?;
        }
        Ok(())
    }

    /// Wait for the oldest spill in flight, if any, and take its segment.
    fn finish_oldest_spill(&mut self) -> Result<()> {
        let Some(spill) = self.in_flight.pop_front() else { return Ok(()) };
        let segment = spill
            .writer
            .join()
            .map_err(|_| StorageError::Internal("the thread writing a spilled segment panicked".into()))??;
        debug_assert_eq!(segment.sref.rows, spill.rows);
        self.spilled.push((spill.table, segment));
        Ok(())
    }

    /// Rows appended to a table that this transaction still holds in memory.
    fn held_rows(&self, table: TableId) -> u64 {
        self.appends.iter().filter(|(id, _, _)| *id == table).map(|(_, _, b)| b.num_rows() as u64).sum()
    }

    /// Write a table's held appends to a new segment file once they reach
    /// `spill_rows`. Only for on-disk stores and transactions without
    /// deletes (their commit then goes the direct way).
    fn maybe_spill(&mut self, table: TableId, schema: SchemaRef) -> Result<()> {
        let Some(dir) = self.store.inner.dir.clone() else { return Ok(()) };
        let held = self.held_rows(table);
        if !self.deletes.is_empty() || held < self.store.inner.options.spill_rows as u64 {
            return Ok(());
        }
        while self.in_flight.len() >= MAX_SPILLS_IN_FLIGHT {
            self.finish_oldest_spill()?;
        }
        self.start_spill(dir, table, schema)
    }

    /// Write a table's held appends to a new segment file on a thread of
    /// its own. Segments of a table stay in row-id order: spills are
    /// taken back oldest first.
    fn start_spill(&mut self, dir: PathBuf, table: TableId, schema: SchemaRef) -> Result<()> {
        let held = self.held_rows(table);
        let (batches, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.appends).into_iter().partition(|(id, _, _)| *id == table);
        self.appends = rest;
        // The id is taken from the writer's manifest now (ids are never
        // reused; one burnt by an abandoned transaction is harmless).
        let id = self.guard.manifest.next_segment_id;
        self.guard.manifest.next_segment_id += 1;
        let batches: Vec<RecordBatch> = batches.into_iter().map(|(_, _, b)| b).collect();
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        debug_assert_eq!(rows, held);
        self.spilled_files.push(dir.join(segment_file_name(id)));
        let (format, cache) = (self.store.inner.options.segment_format(), self.store.inner.cache.clone());
        // Encoding and compressing the segment overlaps with the caller
        // producing the next rows (identity resolution runs on its thread).
        let writer = std::thread::Builder::new()
            .name("tessera-spill".into())
            .spawn(move || write_segment(&dir, id, &schema, batches, format, &cache, &mut Vec::new()))
            .map_err(|source| StorageError::Io { path: PathBuf::from("(spill writer thread)"), source })?;
        self.in_flight.push_back(SpillInFlight { table, rows, writer });
        Ok(())
    }

    /// Once a transaction has spilled, spill what it still holds too
    /// before it commits (it commits by naming segments): the last rows
    /// are then encoded while the spills before them finish, not after.
    fn spill_the_rest(&mut self) -> Result<()> {
        let Some(dir) = self.store.inner.dir.clone() else { return Ok(()) };
        if self.in_flight.is_empty() || !self.deletes.is_empty() {
            return Ok(());
        }
        let mut tables: Vec<TableId> = self.appends.iter().map(|(id, _, _)| *id).collect();
        tables.sort_unstable();
        tables.dedup();
        for table in tables {
            let schema = self
                .base
                .tables
                .get(&table)
                .map(|t| t.meta.storage_schema())
                .ok_or_else(|| StorageError::Internal("a spilled table vanished".into()))?;
            self.start_spill(dir.clone(), table, schema)?;
        }
        Ok(())
    }

    /// Append rows to `table`. The batch holds every column of the table
    /// (hidden ones included) in order; returns the first assigned row id.
    pub fn append(&mut self, table: &str, batch: RecordBatch) -> Result<RowId> {
        let t = self
            .base
            .table(table)
            .cloned()
            .ok_or_else(|| StorageError::NotFound { kind: "table", name: table.to_string() })?;
        validate_batch(&t.meta, &batch)?;
        let first = t.next_row_id + self.rows_in_txn(t.id());
        let n = batch.num_rows() as u64;
        let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(first..first + n));
        let mut columns = Vec::with_capacity(batch.num_columns() + 1);
        columns.push(ids);
        columns.extend(batch.columns().iter().cloned());
        let stored = RecordBatch::try_new(t.meta.storage_schema(), columns)?;
        if n > 0 {
            self.appends.push((t.id(), first, stored));
            self.maybe_spill(t.id(), t.meta.storage_schema())?;
        }
        Ok(first)
    }

    /// Delete rows by id; ids that are not live are ignored. Returns how
    /// many live rows this marks deleted.
    pub fn delete(&mut self, table: &str, rows: &RoaringTreemap) -> Result<u64> {
        let t = self
            .base
            .table(table)
            .cloned()
            .ok_or_else(|| StorageError::NotFound { kind: "table", name: table.to_string() })?;
        if !self.spilled.is_empty() || !self.in_flight.is_empty() {
            // A limit of the bulk path, not a bug: such a transaction
            // commits by naming segments, which carry no deletes.
            return Err(StorageError::LimitExceeded(format!(
                "a transaction that has written more than {} appended rows to segment files cannot also delete; \
                 delete first, or in a transaction of its own",
                self.store.inner.options.spill_rows
            )));
        }
        let mut fresh = rows.clone();
        fresh -= &*t.deleted;
        fresh.remove_range(t.next_row_id..);
        let entry = self.deletes.entry(t.id()).or_default();
        fresh -= &*entry;
        let n = fresh.len();
        *entry |= fresh;
        Ok(n)
    }

    /// Commit and wait until durable. On error nothing of the transaction
    /// is visible; a failure to reach the disk also refuses every later
    /// write until the database is reopened.
    pub fn commit(self) -> Result<CommitInfo> {
        let store = self.store.clone();
        let pending = self.prepare()?;
        let info = pending.wait()?;
        store.maybe_flush()?;
        Ok(info)
    }

    /// Queue the commit and release the writer lock; `wait` blocks until it
    /// is durable. Lets callers wait outside their async executor threads.
    pub fn prepare(mut self) -> Result<PendingCommit> {
        let store = self.store.clone();
        store.check_poisoned()?;
        self.spill_the_rest()?;
        self.finish_spills()?;
        let spilled_rows: u64 = self.spilled.iter().map(|(_, s)| s.sref.rows).sum();
        let rows_appended: u64 = self.appends.iter().map(|(_, _, b)| b.num_rows() as u64).sum::<u64>() + spilled_rows;
        let rows_deleted: u64 = self.deletes.values().map(|d| d.len()).sum();
        let info = CommitInfo { lsn: 0, rows_appended, rows_deleted };
        if rows_appended == 0 && rows_deleted == 0 {
            return Ok(PendingCommit { store, lsn: None, info });
        }
        // Spilled segments exist only on disk: such a transaction must be
        // committed by naming segments in the manifest (deletes were refused
        // once it spilled).
        debug_assert!(self.spilled.is_empty() || rows_deleted == 0);
        let direct = store.inner.dir.is_some()
            && rows_deleted == 0
            && (rows_appended >= store.inner.options.direct_segment_rows as u64 || !self.spilled.is_empty());
        if direct {
            self.commit_direct()?;
            return Ok(PendingCommit { store, lsn: None, info });
        }
        let snap = self.apply()?;
        let lsn = self.guard.next_lsn;
        let record = match &store.inner.wal {
            Some(_) => Some(TxnRecord { lsn, ops: self.ops()? }.encode()?),
            None => None,
        };
        let w = &mut *self.guard;
        let (Some(wal), Some(record)) = (&store.inner.wal, record) else {
            // In memory: visible at once.
            w.next_lsn += 1;
            store.install(w, snap);
            return Ok(PendingCommit { store, lsn: None, info: CommitInfo { lsn, ..info } });
        };
        wal.enqueue(lsn, record)?;
        w.next_lsn += 1;
        let mut snap = snap;
        snap.lsn = lsn;
        let version = w.next_version;
        w.next_version += 1;
        let snap = Arc::new(snap);
        w.latest = snap.clone();
        store.inner.pending.lock().insert(lsn, (version, snap));
        drop(self);
        Ok(PendingCommit { store, lsn: Some(lsn), info: CommitInfo { lsn, ..info } })
    }

    fn ops(&self) -> Result<Vec<Op>> {
        let mut ops = Vec::new();
        for (table, rows) in &self.deletes {
            ops.push(Op::Delete { table: *table, rows: rows.clone() });
        }
        for (table, first, batch) in &self.appends {
            let user = batch.project(&(1..batch.num_columns()).collect::<Vec<_>>())?;
            ops.push(Op::Append { table: *table, first_row_id: *first, ipc: encode_batch(&user)? });
        }
        Ok(ops)
    }

    /// The base snapshot with this transaction's changes.
    fn apply(&self) -> Result<Snapshot> {
        let mut snap = (*self.base).clone();
        for (table, rows) in &self.deletes {
            let t = snap.tables.get_mut(table).ok_or_else(|| StorageError::Internal("table vanished".into()))?;
            let mut nt = (**t).clone();
            let mut d = (*nt.deleted).clone();
            d |= rows;
            nt.deleted = Arc::new(d);
            *t = Arc::new(nt);
        }
        for (table, first, batch) in &self.appends {
            let t = snap.tables.get_mut(table).ok_or_else(|| StorageError::Internal("table vanished".into()))?;
            let mut nt = (**t).clone();
            nt.buffer.push(batch.clone());
            nt.next_row_id = nt.next_row_id.max(first + batch.num_rows() as u64);
            *t = Arc::new(nt);
        }
        Ok(snap)
    }

    /// Bulk path: write the rows straight to new segments and name them in
    /// the manifest, skipping the log.
    fn commit_direct(&mut self) -> Result<()> {
        let store = self.store.clone();
        let dir = store.inner.dir.clone().ok_or_else(|| StorageError::Internal("direct commit in memory".into()))?;
        let w = &mut *self.guard;
        store.drain(w)?;
        let mut manifest = w.manifest.clone();
        let mut snap = (*w.latest).clone();
        let mut written = Vec::new();
        let mut by_table: BTreeMap<TableId, Vec<RecordBatch>> = BTreeMap::new();
        for (table, _, batch) in &self.appends {
            by_table.entry(*table).or_default().push(batch.clone());
        }
        let mut spilled_by_table: BTreeMap<TableId, Vec<Arc<Segment>>> = BTreeMap::new();
        for (table, segment) in &self.spilled {
            spilled_by_table.entry(*table).or_default().push(segment.clone());
            by_table.entry(*table).or_default();
        }
        let outcome = (|| -> Result<()> {
            for (table, batches) in by_table {
                let t = snap.tables.get_mut(&table).ok_or_else(|| StorageError::Internal("table vanished".into()))?;
                let mut nt = (**t).clone();
                // Spilled segments hold the transaction's first rows.
                for seg in spilled_by_table.remove(&table).unwrap_or_default() {
                    nt.next_row_id = nt.next_row_id.max(seg.sref.max_row_id + 1);
                    nt.segments.push(seg);
                }
                if !batches.is_empty() {
                    let schema = nt.meta.storage_schema();
                    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                    let id = manifest.next_segment_id;
                    manifest.next_segment_id += 1;
                    let seg = write_segment(&dir, id, &schema, batches, store.inner.options.segment_format(), &store.inner.cache, &mut written)?;
                    nt.next_row_id = nt.next_row_id.max(seg.sref.max_row_id + 1);
                    debug_assert_eq!(seg.sref.rows, rows);
                    nt.segments.push(seg);
                }
                let entry = manifest
                    .tables
                    .get_mut(&table)
                    .ok_or_else(|| StorageError::Internal(format!("table {table} missing from the manifest")))?;
                entry.segments = nt.segments.iter().map(|s| s.sref.clone()).collect();
                entry.next_row_id = entry.next_row_id.max(nt.next_row_id);
                *t = Arc::new(nt);
            }
            io::sync_dir(&dir)?;
            manifest.write(&dir)
        })();
        if let Err(e) = outcome {
            return Err(store.abandon_write(written, e));
        }
        // Named by the manifest now: no longer this transaction's to remove.
        self.spilled_files.clear();
        w.manifest = manifest;
        store.install(w, snap);
        Ok(())
    }
}

/// A commit queued in the log, not yet known durable.
pub struct PendingCommit {
    pub(super) store: Store,
    pub(super) lsn: Option<Lsn>,
    pub(super) info: CommitInfo,
}

impl PendingCommit {
    pub fn wait(self) -> Result<CommitInfo> {
        if let (Some(lsn), Some(wal)) = (self.lsn, &self.store.inner.wal) {
            wal.wait_durable(lsn)?;
            self.store.publish_durable(wal.durable_lsn());
        }
        Ok(self.info)
    }
}
