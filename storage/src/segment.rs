//! Immutable columnar segment files.
//!
//! Layout (all integers little-endian; see FORMAT.md):
//! ```text
//! "TESSEG01"                         8 bytes
//! chunk, chunk, ...                  one per (row group, column)
//! footer                             JSON, `footer_len` bytes
//! footer_len u64 | footer_crc u32 | "TSG1"     16-byte trailer
//! ```
//! A chunk is one column of one row group as an Arrow IPC stream holding a
//! single-column batch, optionally zstd-compressed; the footer records its
//! offset, length, CRC32 and min/max/null-count statistics.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::kernels::aggregate;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_batch, encode_batch};
use crate::error::{Result, StorageError};
use crate::io;
use crate::{RowId, ROW_ID_COLUMN};

const MAGIC: &[u8; 8] = b"TESSEG01";
const TRAILER_MAGIC: &[u8; 4] = b"TSG1";
const TRAILER_LEN: usize = 16;
/// Rows per row group: the unit of statistics pruning and of decoding.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Longest string value kept as a min/max statistic.
const MAX_STAT_STRING_BYTES: usize = 256;
const MAX_FOOTER_BYTES: u64 = 256 << 20;

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;

/// A min or max value, in the widest type of its family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StatValue {
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkStats {
    pub null_count: u64,
    pub min: Option<StatValue>,
    pub max: Option<StatValue>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChunkMeta {
    pub offset: u64,
    pub len: u64,
    pub raw_len: u64,
    pub compression: u8,
    pub crc: u32,
    pub stats: ChunkStats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowGroupMeta {
    pub rows: u64,
    pub min_row_id: RowId,
    pub max_row_id: RowId,
    pub(crate) chunks: Vec<ChunkMeta>,
}

impl RowGroupMeta {
    /// Statistics of column `column` (index in the segment's schema, where
    /// 0 is the row id).
    pub fn stats(&self, column: usize) -> Option<&ChunkStats> {
        self.chunks.get(column).map(|c| &c.stats)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Footer {
    pub columns: Vec<(String, DataType)>,
    pub row_groups: Vec<RowGroupMeta>,
}

/// Writes one segment file, a row group at a time.
pub(crate) struct SegmentWriter {
    path: PathBuf,
    file: File,
    offset: u64,
    schema: SchemaRef,
    zstd_level: i32,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    row_groups: Vec<RowGroupMeta>,
}

impl SegmentWriter {
    /// `schema` must start with the `_row_id` column; `zstd_level` 0 means
    /// no compression.
    pub(crate) fn create(path: &Path, schema: SchemaRef, zstd_level: i32) -> Result<Self> {
        if schema.fields().first().map(|f| f.name().as_str()) != Some(ROW_ID_COLUMN) {
            return Err(StorageError::Internal("segment schema must start with _row_id".into()));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        io::write_all(&mut file, path, MAGIC)?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            file,
            offset: MAGIC.len() as u64,
            schema,
            zstd_level,
            pending: Vec::new(),
            pending_rows: 0,
            row_groups: Vec::new(),
        })
    }

    pub(crate) fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(StorageError::Internal(format!(
                "segment writer got schema {:?}, expected {:?}",
                batch.schema(),
                self.schema
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        while self.pending_rows >= ROW_GROUP_ROWS {
            self.write_row_group(ROW_GROUP_ROWS)?;
        }
        Ok(())
    }

    pub(crate) fn rows(&self) -> u64 {
        self.row_groups.iter().map(|g| g.rows).sum::<u64>() + self.pending_rows as u64
    }

    fn write_row_group(&mut self, rows: usize) -> Result<()> {
        let all = arrow::compute::concat_batches(&self.schema, &self.pending)?;
        let group = all.slice(0, rows);
        let rest = all.slice(rows, all.num_rows() - rows);
        self.pending_rows = rest.num_rows();
        self.pending = if rest.num_rows() > 0 { vec![rest] } else { Vec::new() };

        let row_ids = group.column(0).as_primitive::<UInt64Type>();
        let (min_row_id, max_row_id) = match (aggregate::min(row_ids), aggregate::max(row_ids)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(StorageError::Internal("row group without row ids".into())),
        };
        let mut chunks = Vec::with_capacity(group.num_columns());
        let schema = self.schema.clone();
        for (field, column) in schema.fields().iter().zip(group.columns()) {
            chunks.push(self.write_chunk(field, column)?);
        }
        self.row_groups.push(RowGroupMeta {
            rows: group.num_rows() as u64,
            min_row_id,
            max_row_id,
            chunks,
        });
        Ok(())
    }

    fn write_chunk(&mut self, field: &Arc<Field>, column: &ArrayRef) -> Result<ChunkMeta> {
        let one = Schema::new(vec![field.as_ref().clone()]);
        let batch = RecordBatch::try_new(Arc::new(one), vec![column.clone()])?;
        let raw = encode_batch(&batch)?;
        let (bytes, compression) = if self.zstd_level > 0 {
            let c = zstd::bulk::compress(&raw, self.zstd_level)
                .map_err(|e| StorageError::io(&self.path, e))?;
            (c, COMPRESSION_ZSTD)
        } else {
            (raw.clone(), COMPRESSION_NONE)
        };
        let meta = ChunkMeta {
            offset: self.offset,
            len: bytes.len() as u64,
            raw_len: raw.len() as u64,
            compression,
            crc: crc32fast::hash(&bytes),
            stats: compute_stats(column),
        };
        io::write_all(&mut self.file, &self.path, &bytes)?;
        self.offset += bytes.len() as u64;
        Ok(meta)
    }

    /// Write the last row group and the footer, fsync, and return the file
    /// size.
    pub(crate) fn finish(mut self) -> Result<(u64, Vec<RowGroupMeta>)> {
        if self.pending_rows > 0 {
            self.write_row_group(self.pending_rows)?;
        }
        let footer = Footer {
            columns: self
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect(),
            row_groups: self.row_groups.clone(),
        };
        let footer_bytes = serde_json::to_vec(&footer)
            .map_err(|e| StorageError::Internal(format!("serializing a segment footer: {e}")))?;
        let mut tail = footer_bytes;
        let footer_len = tail.len() as u64;
        let footer_crc = crc32fast::hash(&tail);
        tail.extend_from_slice(&footer_len.to_le_bytes());
        tail.extend_from_slice(&footer_crc.to_le_bytes());
        tail.extend_from_slice(TRAILER_MAGIC);
        io::write_all(&mut self.file, &self.path, &tail)?;
        io::sync_file(&self.file, &self.path)?;
        Ok((self.offset + tail.len() as u64, self.row_groups))
    }

    pub(crate) fn abandon(self) {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(path);
    }
}

fn compute_stats(column: &ArrayRef) -> ChunkStats {
    let null_count = column.null_count() as u64;
    let (min, max) = min_max(column).unwrap_or((None, None));
    ChunkStats { null_count, min, max }
}

type MinMax = (Option<StatValue>, Option<StatValue>);

fn min_max(column: &ArrayRef) -> Option<MinMax> {
    use DataType::*;
    match column.data_type() {
        Int8 | Int16 | Int32 | Int64 | Date32 | Date64 | Timestamp(_, _) | Time32(_) | Time64(_)
        | Duration(_) => {
            let c = arrow::compute::cast(column, &Int64).ok()?;
            let c = c.as_primitive::<Int64Type>();
            Some((aggregate::min(c).map(StatValue::Int), aggregate::max(c).map(StatValue::Int)))
        }
        UInt8 | UInt16 | UInt32 | UInt64 => {
            let c = arrow::compute::cast(column, &UInt64).ok()?;
            let c = c.as_primitive::<UInt64Type>();
            Some((aggregate::min(c).map(StatValue::UInt), aggregate::max(c).map(StatValue::UInt)))
        }
        Float32 | Float64 => {
            let c = arrow::compute::cast(column, &Float64).ok()?;
            let c = c.as_primitive::<Float64Type>();
            if c.iter().flatten().any(|v| !v.is_finite()) {
                return None;
            }
            Some((aggregate::min(c).map(StatValue::Float), aggregate::max(c).map(StatValue::Float)))
        }
        Utf8 | LargeUtf8 | Utf8View => {
            let c = arrow::compute::cast(column, &Utf8).ok()?;
            let c = c.as_string::<i32>();
            let keep = |s: &str| (s.len() <= MAX_STAT_STRING_BYTES).then(|| StatValue::Str(s.to_string()));
            let min = aggregate::min_string(c).and_then(keep);
            let max = aggregate::max_string(c).and_then(keep);
            // A truncated bound would be wrong; keep both or neither.
            if min.is_none() || max.is_none() {
                return Some((None, None));
            }
            Some((min, max))
        }
        Boolean => {
            let c = column.as_boolean();
            Some((aggregate::min_boolean(c).map(StatValue::Bool), aggregate::max_boolean(c).map(StatValue::Bool)))
        }
        _ => None,
    }
}

/// Read access to one segment file through a memory map.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    mmap: Mmap,
    footer: Footer,
    schema: SchemaRef,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        // SAFETY: segment files are immutable once named by the manifest;
        // Tessera never writes to, truncates or renames a live segment, and
        // the data directory belongs to one process (see FORMAT.md, "Lock").
        #[allow(unsafe_code)]
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| StorageError::io(path, e))?;
        let footer = Self::read_footer(path, &mmap)?;
        let schema = Arc::new(Schema::new(
            footer
                .columns
                .iter()
                .map(|(name, ty)| Field::new(name, ty.clone(), name != ROW_ID_COLUMN))
                .collect::<Vec<_>>(),
        ));
        Ok(SegmentReader {
            path: path.to_path_buf(),
            mmap,
            footer,
            schema,
        })
    }

    fn read_footer(path: &Path, bytes: &[u8]) -> Result<Footer> {
        let size = bytes.len();
        if size < MAGIC.len() + TRAILER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StorageError::corruption(path, 0, "not a Tessera segment (bad magic or too short)"));
        }
        let trailer = &bytes[size - TRAILER_LEN..];
        if &trailer[12..16] != TRAILER_MAGIC {
            return Err(StorageError::corruption(path, (size - 4) as u64, "segment trailer magic missing (file truncated?)"));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&trailer[..8]);
        let footer_len = u64::from_le_bytes(len8);
        let footer_crc = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
        let trailer_at = (size - TRAILER_LEN) as u64;
        if footer_len > MAX_FOOTER_BYTES || footer_len + (MAGIC.len() as u64) > trailer_at {
            return Err(StorageError::corruption(path, trailer_at, format!("segment footer length {footer_len} is impossible")));
        }
        let footer_at = trailer_at - footer_len;
        let footer_bytes = &bytes[footer_at as usize..trailer_at as usize];
        if crc32fast::hash(footer_bytes) != footer_crc {
            return Err(StorageError::corruption(path, footer_at, "segment footer checksum mismatch"));
        }
        let footer: Footer = serde_json::from_slice(footer_bytes)
            .map_err(|e| StorageError::corruption(path, footer_at, format!("segment footer does not parse: {e}")))?;
        for group in &footer.row_groups {
            if group.chunks.len() != footer.columns.len() {
                return Err(StorageError::corruption(path, footer_at, "row group has the wrong number of chunks"));
            }
            for chunk in &group.chunks {
                let end = chunk.offset.checked_add(chunk.len);
                if chunk.offset < MAGIC.len() as u64 || end.is_none_or(|e| e > footer_at) {
                    return Err(StorageError::corruption(path, footer_at, "chunk lies outside the data region"));
                }
            }
        }
        Ok(footer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema of the segment: `_row_id`, then the table's columns as they
    /// were when the segment was written.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn row_groups(&self) -> &[RowGroupMeta] {
        &self.footer.row_groups
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.footer.columns.iter().position(|(n, _)| n == name)
    }

    /// Decode one column of one row group, after checking its checksum.
    pub fn read_column(&self, row_group: usize, column: usize) -> Result<ArrayRef> {
        let group = self.footer.row_groups.get(row_group).ok_or_else(|| {
            StorageError::Internal(format!("row group {row_group} out of range in {}", self.path.display()))
        })?;
        let chunk = group.chunks.get(column).ok_or_else(|| {
            StorageError::Internal(format!("column {column} out of range in {}", self.path.display()))
        })?;
        let start = chunk.offset as usize;
        let bytes = &self.mmap[start..start + chunk.len as usize];
        if crc32fast::hash(bytes) != chunk.crc {
            return Err(StorageError::corruption(
                &self.path,
                chunk.offset,
                format!("checksum mismatch in chunk of column '{}' (row group {row_group})", self.footer.columns[column].0),
            ));
        }
        let decoded = match chunk.compression {
            COMPRESSION_NONE => decode_batch(bytes),
            COMPRESSION_ZSTD => zstd::bulk::decompress(bytes, chunk.raw_len as usize)
                .map_err(|e| e.to_string())
                .and_then(|raw| decode_batch(&raw)),
            other => Err(format!("unknown compression code {other}")),
        };
        let batch = decoded.map_err(|detail| StorageError::corruption(&self.path, chunk.offset, detail))?;
        if batch.num_columns() != 1 || batch.num_rows() as u64 != group.rows {
            return Err(StorageError::corruption(&self.path, chunk.offset, "chunk holds the wrong number of rows"));
        }
        Ok(batch.column(0).clone())
    }

    /// Check every chunk's checksum (used by verification).
    pub fn verify(&self) -> Result<()> {
        for (g, group) in self.footer.row_groups.iter().enumerate() {
            for c in 0..group.chunks.len() {
                self.read_column(g, c)?;
            }
        }
        Ok(())
    }
}
