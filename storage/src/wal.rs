//! The write-ahead log.
//!
//! A log file is `"TESWAL01"` followed by frames. A frame is
//! `payload_len u32 | crc32(payload_len bytes ++ payload) u32 | payload`,
//! and its payload is one or more transaction records, each
//! `record_len u32 | record`. One frame is what one group commit writes
//! and fsyncs, so at most the last frame of the newest log file can be torn
//! by a crash.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};
use roaring::RoaringTreemap;

use crate::codec::{Decoder, Encoder};
use crate::error::{Result, StorageError};
use crate::io;
use crate::{Lsn, RowId, TableId};

pub(crate) const WAL_MAGIC: &[u8; 8] = b"TESWAL01";
const FRAME_HEADER: usize = 8;
/// Largest frame a group commit writes; larger transactions are refused
/// (bulk appends bypass the log, see `Store::commit`).
pub(crate) const MAX_FRAME_BYTES: usize = 512 << 20;

const OP_APPEND: u8 = 1;
const OP_DELETE: u8 = 2;

pub(crate) fn wal_file_name(first_lsn: Lsn) -> String {
    format!("wal-{first_lsn:020}.log")
}

pub(crate) fn parse_wal_file_name(name: &str) -> Option<Lsn> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

/// One change inside a transaction.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Rows appended with consecutive row ids from `first_row_id`; `ipc` is
    /// the batch (without the row id column) as an Arrow IPC stream.
    Append { table: TableId, first_row_id: RowId, ipc: Vec<u8> },
    Delete { table: TableId, rows: RoaringTreemap },
}

#[derive(Clone, Debug)]
pub(crate) struct TxnRecord {
    pub lsn: Lsn,
    pub ops: Vec<Op>,
}

impl TxnRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut e = Encoder::new();
        e.u64(self.lsn);
        e.u32(self.ops.len() as u32);
        for op in &self.ops {
            match op {
                Op::Append { table, first_row_id, ipc } => {
                    e.u8(OP_APPEND);
                    e.u64(*table);
                    e.u64(*first_row_id);
                    e.bytes(ipc)?;
                }
                Op::Delete { table, rows } => {
                    e.u8(OP_DELETE);
                    e.u64(*table);
                    let mut bytes = Vec::with_capacity(rows.serialized_size());
                    rows.serialize_into(&mut bytes)
                        .map_err(|e| StorageError::Internal(format!("serializing a bitmap: {e}")))?;
                    e.bytes(&bytes)?;
                }
            }
        }
        Ok(e.buf)
    }

    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<TxnRecord, String> {
        let mut d = Decoder::new(bytes);
        let lsn = d.u64()?;
        let count = d.u32()?;
        let mut ops = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            match d.u8()? {
                OP_APPEND => {
                    let table = d.u64()?;
                    let first_row_id = d.u64()?;
                    let ipc = d.bytes()?.to_vec();
                    ops.push(Op::Append { table, first_row_id, ipc });
                }
                OP_DELETE => {
                    let table = d.u64()?;
                    let raw = d.bytes()?;
                    let rows = RoaringTreemap::deserialize_from(raw).map_err(|e| e.to_string())?;
                    ops.push(Op::Delete { table, rows });
                }
                other => return Err(format!("unknown operation code {other} at {}", d.pos())),
            }
        }
        if !d.is_empty() {
            return Err("trailing bytes after transaction record".into());
        }
        Ok(TxnRecord { lsn, ops })
    }
}

/// Encode a frame around already-encoded records.
fn encode_frame(records: &[Vec<u8>]) -> Result<Vec<u8>> {
    let payload_len: usize = records.iter().map(|r| 4 + r.len()).sum();
    if payload_len > MAX_FRAME_BYTES {
        return Err(StorageError::LimitExceeded(format!(
            "a log frame of {payload_len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"
        )));
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload_len);
    frame.extend_from_slice(&(payload_len as u32).to_le_bytes());
    frame.extend_from_slice(&[0u8; 4]);
    for r in records {
        frame.extend_from_slice(&(r.len() as u32).to_le_bytes());
        frame.extend_from_slice(r);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..4]);
    hasher.update(&frame[FRAME_HEADER..]);
    let crc = hasher.finalize();
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// What reading one log file found.
pub(crate) struct LogScan {
    pub records: Vec<TxnRecord>,
    /// Length of the valid prefix; a torn tail starts here.
    pub valid_len: u64,
}

/// Read every frame of a log file. A damaged last frame of the newest file
/// is a torn tail (cut); a damaged frame anywhere else is corruption.
pub(crate) fn read_log(path: &Path, is_newest: bool) -> Result<LogScan> {
    let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
    if bytes.len() < WAL_MAGIC.len() {
        if is_newest && bytes.iter().zip(WAL_MAGIC.iter()).all(|(a, b)| a == b) {
            // Created but its magic not fully written: an empty torn log.
            return Ok(LogScan { records: Vec::new(), valid_len: 0 });
        }
        return Err(StorageError::corruption(path, 0, "log file shorter than its magic"));
    }
    if &bytes[..8] != WAL_MAGIC {
        return Err(StorageError::corruption(path, 0, "not a Tessera log file (bad magic)"));
    }
    let mut pos = WAL_MAGIC.len();
    let mut records = Vec::new();
    while pos < bytes.len() {
        match check_frame(&bytes, pos) {
            Ok((payload, next)) => {
                decode_payload(payload, &mut records)
                    .map_err(|d| StorageError::corruption(path, pos as u64, d))?;
                pos = next;
            }
            Err(detail) => {
                // Only the newest file's last frame can be mid-write at a
                // crash: it runs past the end of the file, or ends exactly
                // at it, or only zeros follow (a file extended but not
                // filled). A bad frame with data after it is corruption.
                let torn = frame_runs_past_end(&bytes, pos)
                    || frame_end(&bytes, pos).is_some_and(|end| bytes[end..].iter().all(|b| *b == 0))
                    || bytes[pos..].iter().all(|b| *b == 0);
                if is_newest && torn {
                    return Ok(LogScan { records, valid_len: pos as u64 });
                }
                return Err(StorageError::corruption(path, pos as u64, detail));
            }
        }
    }
    Ok(LogScan { records, valid_len: pos as u64 })
}

fn frame_runs_past_end(bytes: &[u8], pos: usize) -> bool {
    if bytes.len() - pos < FRAME_HEADER {
        return true;
    }
    let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
    pos + FRAME_HEADER + len > bytes.len()
}

fn frame_end(bytes: &[u8], pos: usize) -> Option<usize> {
    if bytes.len() - pos < FRAME_HEADER {
        return None;
    }
    let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
    Some(pos + FRAME_HEADER + len).filter(|end| *end <= bytes.len())
}

/// Returns the frame's payload and the offset of the next frame.
fn check_frame(bytes: &[u8], pos: usize) -> std::result::Result<(&[u8], usize), String> {
    if bytes.len() - pos < FRAME_HEADER {
        return Err("frame header cut short".into());
    }
    let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
    let crc = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
    if len == 0 || len > MAX_FRAME_BYTES {
        return Err(format!("impossible frame length {len}"));
    }
    let end = pos + FRAME_HEADER + len;
    if end > bytes.len() {
        return Err(format!("frame of {len} bytes runs past the end of the file"));
    }
    let payload = &bytes[pos + FRAME_HEADER..end];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[pos..pos + 4]);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Err("frame checksum mismatch".into());
    }
    Ok((payload, end))
}

fn decode_payload(payload: &[u8], out: &mut Vec<TxnRecord>) -> std::result::Result<(), String> {
    let mut d = Decoder::new(payload);
    while !d.is_empty() {
        let rec = d.bytes()?;
        out.push(TxnRecord::decode(rec)?);
    }
    Ok(())
}

/// State shared by committers; see `Wal::commit_and_wait`.
struct GroupState {
    /// Encoded records waiting for the next group write, in LSN order.
    queued: Vec<Vec<u8>>,
    queued_last_lsn: Lsn,
    durable_lsn: Lsn,
    leader_active: bool,
    failure: Option<String>,
}

struct LogFile {
    path: PathBuf,
    file: File,
}

/// The open log with group commit: committers queue their records; one of
/// them (the leader) writes everything queued as one frame and fsyncs once,
/// then wakes the others.
pub(crate) struct Wal {
    dir: PathBuf,
    group: Mutex<GroupState>,
    wake: Condvar,
    file: Mutex<LogFile>,
}

impl Wal {
    /// Open (or create) the log file to append to.
    pub(crate) fn open(dir: &Path, file_name: &str, valid_len: Option<u64>, durable_lsn: Lsn) -> Result<Wal> {
        let path = dir.join(file_name);
        let file = match valid_len {
            Some(len) => {
                let mut f = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| StorageError::io(&path, e))?;
                // Cut a torn tail so new frames follow the last valid one.
                f.set_len(len).map_err(|e| StorageError::io(&path, e))?;
                f.seek(SeekFrom::End(0)).map_err(|e| StorageError::io(&path, e))?;
                io::sync_file(&f, &path)?;
                f
            }
            None => Self::create_file(dir, &path)?,
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            group: Mutex::new(GroupState {
                queued: Vec::new(),
                queued_last_lsn: durable_lsn,
                durable_lsn,
                leader_active: false,
                failure: None,
            }),
            wake: Condvar::new(),
            file: Mutex::new(LogFile { path, file }),
        })
    }

    fn create_file(dir: &Path, path: &Path) -> Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        io::write_all(&mut f, path, WAL_MAGIC)?;
        io::sync_file(&f, path)?;
        io::sync_dir(dir)?;
        Ok(f)
    }

    /// Queue a record. Must be called in LSN order (the store's writer
    /// lock guarantees it).
    pub(crate) fn enqueue(&self, lsn: Lsn, record: Vec<u8>) -> Result<()> {
        let mut g = self.group.lock();
        if let Some(f) = &g.failure {
            return Err(StorageError::Poisoned(f.clone()));
        }
        debug_assert!(lsn > g.queued_last_lsn);
        g.queued.push(record);
        g.queued_last_lsn = lsn;
        Ok(())
    }

    /// Block until `lsn` is durable, leading a group write if nobody is.
    pub(crate) fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let mut g = self.group.lock();
        loop {
            if let Some(f) = &g.failure {
                return Err(StorageError::Poisoned(f.clone()));
            }
            if g.durable_lsn >= lsn {
                return Ok(());
            }
            if !g.leader_active && !g.queued.is_empty() {
                let batch = std::mem::take(&mut g.queued);
                let last = g.queued_last_lsn;
                g.leader_active = true;
                drop(g);
                let outcome = self.write_group(&batch);
                g = self.group.lock();
                g.leader_active = false;
                match outcome {
                    Ok(()) => g.durable_lsn = last,
                    Err(e) => g.failure = Some(e.to_string()),
                }
                self.wake.notify_all();
                continue;
            }
            self.wake.wait(&mut g);
        }
    }

    fn write_group(&self, records: &[Vec<u8>]) -> Result<()> {
        let frame = encode_frame(records)?;
        let mut log = self.file.lock();
        let LogFile { path, file } = &mut *log;
        let before = file.metadata().map_err(|e| StorageError::io(&*path, e))?.len();
        let outcome = io::write_all(file, path, &frame).and_then(|_| io::sync_file(file, path));
        if outcome.is_err() {
            // Best effort: take the refused frame back out of the file so a
            // reopen does not find it. (After a failed fsync the kernel may
            // still have written it; FORMAT.md calls such a commit in doubt.)
            let _ = file.set_len(before).and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()));
        }
        outcome
    }

    pub(crate) fn durable_lsn(&self) -> Lsn {
        self.group.lock().durable_lsn
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.group.lock().failure.clone()
    }

    /// Mark the log failed (a later write after this one cannot be trusted).
    pub(crate) fn poison(&self, why: String) {
        let mut g = self.group.lock();
        if g.failure.is_none() {
            g.failure = Some(why);
        }
        self.wake.notify_all();
    }

    /// Start a new log file whose records all have LSNs above `flushed_lsn`.
    /// The caller guarantees nothing is queued.
    pub(crate) fn rotate(&self, flushed_lsn: Lsn) -> Result<PathBuf> {
        let name = wal_file_name(flushed_lsn + 1);
        let path = self.dir.join(&name);
        let mut log = self.file.lock();
        if log.path == path {
            return Ok(path);
        }
        io::remove_file_if_exists(&path)?;
        let file = Self::create_file(&self.dir, &path)?;
        *log = LogFile { path: path.clone(), file };
        Ok(path)
    }

}
