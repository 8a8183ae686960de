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
    /// [`MAX_SPILLS_IN_FLIGHT`]). The newest of a table may still be open:
    /// the table's further appends stream into it. Their files are
    /// already in `spilled_files`.
    pub(super) in_flight: std::collections::VecDeque<SpillInFlight>,
    /// Some spill reached `spill_rows`: the transaction is too large to
    /// hold in memory, so it can no longer take its spills back to delete.
    pub(super) spilled_for_memory: bool,
}

/// Spills written at once. A closed spill has little left to write (its
/// queue and a row group), so a table moving on to its next spill, or
/// another table's spill opening, rarely waits for one; together they
/// bound the rows a transaction holds in memory to a few row groups each.
const MAX_SPILLS_IN_FLIGHT: usize = 4;

/// Batches queued for a spill's writer before an append waits for it.
/// Few: what is queued when the last row is appended is encoded after it,
/// while the commit waits, and a load whose encoding is slower than its
/// other steps keeps the queue full.
const SPILL_QUEUE_BATCHES: usize = 2;

pub(super) struct SpillInFlight {
    table: TableId,
    /// Rows sent to the writer so far.
    rows: u64,
    /// Open while the table's appends still stream into this spill.
    feed: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    writer: std::thread::JoinHandle<Result<Arc<Segment>>>,
}

impl SpillInFlight {
    /// Close the spill's feed and wait for its segment.
    fn finish(mut self) -> Result<(TableId, u64, Arc<Segment>)> {
        // Closing the feed ends the writer's loop; joining first would wait
        // forever.
        self.feed = None;
        let segment = self
            .writer
            .join()
            .map_err(|_| StorageError::Internal("the thread writing a spilled segment panicked".into()))??;
        Ok((self.table, self.rows, segment))
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        // The writer thread must be done with its file before the file is
        // removed, or it could create it again afterwards.
        for spill in self.in_flight.drain(..) {
            let _ = spill.finish();
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

    /// Rows of this transaction sent to segment files so far (written or
    /// being written), over all tables.
    pub fn spilled_rows(&self) -> u64 {
        self.spilled.iter().map(|(_, s)| s.sref.rows).sum::<u64>() + self.in_flight.iter().map(|s| s.rows).sum::<u64>()
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
        self.finish_spill_at(0)
    }

    /// Make room for one more spill in flight: wait for the oldest closed
    /// one (an open one would be cut short), or else the oldest. A table's
    /// spills still finish in the order they started: only its newest can
    /// be open.
    fn finish_a_spill(&mut self) -> Result<()> {
        let closed = self.in_flight.iter().position(|s| s.feed.is_none()).unwrap_or(0);
        self.finish_spill_at(closed)
    }

    fn finish_spill_at(&mut self, position: usize) -> Result<()> {
        let Some(spill) = self.in_flight.remove(position) else { return Ok(()) };
        let (table, rows, segment) = spill.finish()?;
        debug_assert_eq!(segment.sref.rows, rows);
        if segment.sref.rows != rows {
            return Err(StorageError::Internal(format!("a spilled segment holds {} rows, {rows} were sent", segment.sref.rows)));
        }
        self.spilled.push((table, segment));
        Ok(())
    }

    /// Rows appended to a table that this transaction still holds in memory.
    fn held_rows(&self, table: TableId) -> u64 {
        self.appends.iter().filter(|(id, _, _)| *id == table).map(|(_, _, b)| b.num_rows() as u64).sum()
    }

    /// Start writing a table's held appends to a segment file once they
    /// reach `direct_segment_rows` (or `spill_rows`, if smaller): the commit would
    /// write them to segments anyway, and this way they are encoded while
    /// the caller produces the next rows, not after the last. Only for
    /// on-disk stores and transactions without deletes (their commit then
    /// goes the direct way).
    fn maybe_spill(&mut self, table: TableId, schema: SchemaRef) -> Result<()> {
        let Some(dir) = self.store.inner.dir.clone() else { return Ok(()) };
        let held = self.held_rows(table);
        let options = &self.store.inner.options;
        let start_at = options.direct_segment_rows.min(options.spill_rows).max(1) as u64;
        if !self.deletes.is_empty() || held < start_at {
            return Ok(());
        }
        self.start_spill(dir, table, schema)
    }

    /// The open spill of a table, if its appends stream into one.
    fn open_spill(&mut self, table: TableId) -> Option<&mut SpillInFlight> {
        self.in_flight.iter_mut().rev().find(|s| s.table == table && s.feed.is_some())
    }

    /// Send rows to a table's open spill; one reaching `spill_rows` is
    /// closed (the rest of the batch goes to the table's next spill).
    /// Returns the rows the spill did not take.
    fn stream(&mut self, table: TableId, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let limit = self.store.inner.options.spill_rows.max(1) as u64;
        let Some(spill) = self.open_spill(table) else { return Ok(Some(batch)) };
        let room = limit.saturating_sub(spill.rows) as usize;
        let (now, rest) = if batch.num_rows() > room {
            (batch.slice(0, room), Some(batch.slice(room, batch.num_rows() - room)))
        } else {
            (batch, None)
        };
        let n = now.num_rows() as u64;
        // An open spill has a feed and room, so `now` holds rows.
        let sent = spill.feed.as_ref().is_some_and(|feed| feed.send(now).is_ok());
        if sent {
            spill.rows += n;
        }
        if spill.rows >= limit {
            spill.feed = None;
            self.spilled_for_memory = true;
        }
        if !sent {
            // The writer stopped: its error says why.
            let position = self.in_flight.iter().rposition(|s| s.table == table).unwrap_or(0);
            if let Some(failed) = self.in_flight.remove(position) {
                failed.finish()?;
            }
            return Err(StorageError::Internal("a spill writer stopped without an error".into()));
        }
        Ok(rest)
    }

    /// Move a table's held appends into spills. Segments of a table stay
    /// in row-id order: spills are taken back oldest first.
    fn start_spill(&mut self, dir: PathBuf, table: TableId, schema: SchemaRef) -> Result<()> {
        let (batches, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.appends).into_iter().partition(|(id, _, _)| *id == table);
        self.appends = rest;
        for (_, _, batch) in batches {
            self.stream_into_spills(&dir, table, &schema, batch)?;
        }
        Ok(())
    }

    /// Send rows to the table's open spill, opening one when there is none
    /// (spills close at `spill_rows`).
    fn stream_into_spills(&mut self, dir: &Path, table: TableId, schema: &SchemaRef, mut batch: RecordBatch) -> Result<()> {
        loop {
            if self.open_spill(table).is_none() {
                self.open_new_spill(dir, table, schema)?;
            }
            match self.stream(table, batch)? {
                None => return Ok(()),
                Some(rest) => batch = rest,
            }
        }
    }

    /// A new spill of a table, written by a thread of its own, open for
    /// the table's appends.
    fn open_new_spill(&mut self, dir: &Path, table: TableId, schema: &SchemaRef) -> Result<()> {
        while self.in_flight.len() >= MAX_SPILLS_IN_FLIGHT {
            self.finish_a_spill()?;
        }
        // The id is taken from the writer's manifest now (ids are never
        // reused; one burnt by an abandoned transaction is harmless).
        let id = self.guard.manifest.next_segment_id;
        self.guard.manifest.next_segment_id += 1;
        self.spilled_files.push(dir.join(segment_file_name(id)));
        let (format, cache) = (self.store.inner.options.segment_format(), self.store.inner.cache.clone());
        let (feed, batches) = std::sync::mpsc::sync_channel::<RecordBatch>(SPILL_QUEUE_BATCHES);
        let (dir, schema) = (dir.to_path_buf(), schema.clone());
        // Encoding and compressing the segment overlaps with the caller
        // producing the next rows (identity resolution runs on its thread).
        let writer = std::thread::Builder::new()
            .name("tessera-spill".into())
            .spawn(move || write_segment(&dir, id, &schema, batches, format, &cache, &mut Vec::new()))
            .map_err(|source| StorageError::Io { path: PathBuf::from("(spill writer thread)"), source })?;
        self.in_flight.push_back(SpillInFlight { table, rows: 0, feed: Some(feed), writer });
        Ok(())
    }

    /// Read every spill back into the held appends (a transaction that
    /// spilled early, below `spill_rows`, then deletes) and remove their
    /// files.
    fn take_back_spills(&mut self) -> Result<()> {
        if self.in_flight.is_empty() && self.spilled.is_empty() {
            return Ok(());
        }
        self.finish_spills()?;
        let mut taken = Vec::new();
        for (table, segment) in &self.spilled {
            let schema = self.schema_of(*table)?;
            let reader = &segment.reader;
            for group in 0..reader.row_groups().len() {
                let columns = (0..schema.fields().len()).map(|c| reader.read_column(group, c)).collect::<Result<Vec<_>>>()?;
                let batch = RecordBatch::try_new(schema.clone(), columns)?;
                let (first, _) = row_id_range(&batch)?;
                taken.push((*table, first, batch));
            }
        }
        // Spilled rows are each table's first in the transaction.
        taken.append(&mut self.appends);
        self.appends = taken;
        self.spilled.clear();
        for path in self.spilled_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn schema_of(&self, table: TableId) -> Result<SchemaRef> {
        self.base
            .tables
            .get(&table)
            .map(|t| t.meta.storage_schema())
            .ok_or_else(|| StorageError::Internal("a spilled table vanished".into()))
    }

    /// Whether a table's appends go to spills now: it has an open one, or
    /// has filled one before (a table that large keeps spilling).
    fn streams(&self, table: TableId) -> bool {
        self.in_flight.iter().any(|s| s.table == table) || self.spilled.iter().any(|(t, _)| *t == table)
    }

    /// Once a transaction has spilled, spill what it still holds too
    /// before it commits (it commits by naming segments): the last rows
    /// are then encoded while the spills before them finish, not after.
    fn spill_the_rest(&mut self) -> Result<()> {
        let Some(dir) = self.store.inner.dir.clone() else { return Ok(()) };
        if (self.in_flight.is_empty() && self.spilled.is_empty()) || !self.deletes.is_empty() {
            return Ok(());
        }
        let mut tables: Vec<TableId> = self.appends.iter().map(|(id, _, _)| *id).collect();
        tables.sort_unstable();
        tables.dedup();
        for table in tables {
            let schema = self.schema_of(table)?;
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
        let schema = t.meta.storage_schema();
        let stored = RecordBatch::try_new(schema.clone(), columns)?;
        if n == 0 {
            return Ok(first);
        }
        match self.store.inner.dir.clone() {
            Some(dir) if self.streams(t.id()) => self.stream_into_spills(&dir, t.id(), &schema, stored)?,
            _ => {
                self.appends.push((t.id(), first, stored));
                self.maybe_spill(t.id(), schema)?;
            }
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
        if self.spilled_for_memory {
            // A limit of the bulk path, not a bug: such a transaction
            // commits by naming segments, which carry no deletes.
            return Err(StorageError::LimitExceeded(format!(
                "a transaction that has written more than {} appended rows to segment files cannot also delete; \
                 delete first, or in a transaction of its own",
                self.store.inner.options.spill_rows
            )));
        }
        // A transaction with deletes commits through the log, which needs
        // its appended rows in memory.
        self.take_back_spills()?;
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
