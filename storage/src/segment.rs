//! Immutable columnar segment files.
//!
//! Layout (all integers little-endian; see FORMAT.md):
//! ```text
//! "TESSEG01"                         8 bytes
//! chunk, chunk, ...                  one per (row group, column)
//! footer                             JSON, `footer_len` bytes
//! footer_len u64 | footer_crc u32 | "TSG1"     16-byte trailer
//! ```
//! A chunk is one column of one row group, stored as consecutive pages of
//! at most `page_rows` rows; a page is an Arrow IPC stream holding a
//! single-column batch, optionally zstd-compressed. The footer records
//! each chunk's and each page's offset or length, CRC32 and
//! min/max/null-count statistics, so a reader can decode one page of a
//! column without the rest of its row group.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::kernels::aggregate;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::cache::{next_reader_id, PageCache};
use crate::codec::decode_batch;
use crate::error::{Result, StorageError};
use crate::io;
use crate::{RowId, ROW_ID_COLUMN};

mod packed;
mod page;
pub use page::same_view_value;
use page::{decode_dictionary_page, decode_sequence, decompress, encode_page, merge_stats, widened};

const MAGIC: &[u8; 8] = b"TESSEG01";
const TRAILER_MAGIC: &[u8; 4] = b"TSG1";
const TRAILER_LEN: usize = 16;
/// Rows per row group: the unit of file layout (one chunk per column).
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per page, by default: the unit of statistics pruning and of
/// decoding. DataFusion's batch size, so a page is one batch of a scan,
/// and small enough that a point query decodes little.
pub const DEFAULT_PAGE_ROWS: usize = 8 * 1024;
/// Pages per chunk allowed in a footer (a limit on everything).
const MAX_PAGES_PER_CHUNK: usize = ROW_GROUP_ROWS;
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
    /// Decoded bytes of the chunk (of its only page when `pages` is
    /// empty; the sum over the pages otherwise).
    pub raw_len: u64,
    pub compression: u8,
    /// CRC32 of all the chunk's bytes.
    pub crc: u32,
    pub stats: ChunkStats,
    /// The chunk's pages in order, laid out back to back from `offset`.
    /// Empty in segments written before pages existed: the chunk is then
    /// one IPC stream, a single page of the whole row group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<PageMeta>,
}

/// One page of a chunk: `rows` rows of one column.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PageMeta {
    pub rows: u64,
    pub len: u64,
    pub raw_len: u64,
    pub crc: u32,
    pub stats: ChunkStats,
    #[serde(default, skip_serializing_if = "PageEncoding::is_ipc")]
    pub encoding: PageEncoding,
}

/// How a page's bytes hold its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PageEncoding {
    /// An Arrow IPC stream of a single-column batch, compressed as its
    /// chunk says.
    #[default]
    Ipc,
    /// No bytes at all: value `i` of the page is `start + i * step`
    /// (wrapping, in the column's own 64-bit integer type; `start` holds
    /// its bits). Integer pages without nulls whose values step evenly,
    /// such as row ids, which every page has.
    Sequence { start: u64, step: u64 },
    /// An integer, date, time or timestamp page as bit fields
    /// (`packed.rs`), whatever its chunk's compression.
    Packed,
    /// A string page as a dictionary: its keys packed, its distinct
    /// values an IPC stream compressed as its chunk says (`page.rs`).
    Dictionary,
}

impl PageEncoding {
    fn is_ipc(&self) -> bool {
        *self == PageEncoding::Ipc
    }
}

/// Where a page lies and how to check and decode it.
struct PageLocation {
    offset: u64,
    len: u64,
    raw_len: u64,
    crc: u32,
    rows: u64,
    encoding: PageEncoding,
}

/// How segments are written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentFormat {
    /// zstd level; 0 stores pages uncompressed.
    pub zstd_level: i32,
    /// Rows per page (at least 1; at most a row group).
    pub page_rows: usize,
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

    /// Pages per chunk (every chunk of a group has the same split; 1 for
    /// segments without pages).
    pub fn page_count(&self) -> usize {
        self.chunks.first().map_or(1, |c| c.pages.len().max(1))
    }

    /// Rows of page `page`.
    pub fn page_rows(&self, page: usize) -> u64 {
        match self.chunks.first().map(|c| c.pages.as_slice()) {
            Some([]) | None => self.rows,
            Some(pages) => pages.get(page).map_or(0, |p| p.rows),
        }
    }

    /// Statistics of column `column` within page `page`.
    pub fn page_stats(&self, page: usize, column: usize) -> Option<&ChunkStats> {
        let chunk = self.chunks.get(column)?;
        if chunk.pages.is_empty() {
            return (page == 0).then_some(&chunk.stats);
        }
        chunk.pages.get(page).map(|p| &p.stats)
    }

    /// The smallest and largest row id of page `page` (bounds, as for the
    /// group: ids need not be contiguous).
    pub fn page_row_ids(&self, page: usize) -> (RowId, RowId) {
        match self.page_stats(page, 0) {
            Some(ChunkStats { min: Some(StatValue::UInt(lo)), max: Some(StatValue::UInt(hi)), .. }) => (*lo, *hi),
            _ => (self.min_row_id, self.max_row_id),
        }
    }

    fn page_location(&self, page: usize, column: usize) -> Option<PageLocation> {
        let chunk = self.chunks.get(column)?;
        if chunk.pages.is_empty() {
            return (page == 0).then_some(PageLocation {
                offset: chunk.offset,
                len: chunk.len,
                raw_len: chunk.raw_len,
                crc: chunk.crc,
                rows: self.rows,
                encoding: PageEncoding::Ipc,
            });
        }
        let p = chunk.pages.get(page)?;
        let before: u64 = chunk.pages[..page].iter().map(|p| p.len).sum();
        Some(PageLocation {
            offset: chunk.offset + before,
            len: p.len,
            raw_len: p.raw_len,
            crc: p.crc,
            rows: p.rows,
            encoding: p.encoding,
        })
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
    format: SegmentFormat,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    row_groups: Vec<RowGroupMeta>,
}

impl SegmentWriter {
    /// `schema` must start with the `_row_id` column.
    pub(crate) fn create(path: &Path, schema: SchemaRef, format: SegmentFormat) -> Result<Self> {
        if schema.fields().first().map(|f| f.name().as_str()) != Some(ROW_ID_COLUMN) {
            return Err(StorageError::Internal("segment schema must start with _row_id".into()));
        }
        if format.page_rows == 0 || format.page_rows > ROW_GROUP_ROWS {
            return Err(StorageError::Internal(format!("page_rows {} is not in 1..={ROW_GROUP_ROWS}", format.page_rows)));
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
            format,
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
        let encoded = encode_columns(self.format, &self.path, self.schema.fields(), group.columns())?;
        let mut chunks = Vec::with_capacity(encoded.len());
        for chunk in encoded {
            chunks.push(self.write_chunk(chunk)?);
        }
        self.row_groups.push(RowGroupMeta {
            rows: group.num_rows() as u64,
            min_row_id,
            max_row_id,
            chunks,
        });
        Ok(())
    }

    /// Append one encoded chunk to the file.
    fn write_chunk(&mut self, chunk: EncodedChunk) -> Result<ChunkMeta> {
        let offset = self.offset;
        let mut crc = crc32fast::Hasher::new();
        for bytes in &chunk.bytes {
            crc.update(bytes);
            io::write_all(&mut self.file, &self.path, bytes)?;
            self.offset += bytes.len() as u64;
        }
        Ok(ChunkMeta {
            offset,
            len: self.offset - offset,
            raw_len: chunk.pages.iter().map(|p| p.raw_len).sum(),
            compression: if self.format.zstd_level != 0 { COMPRESSION_ZSTD } else { COMPRESSION_NONE },
            crc: crc.finalize(),
            stats: merge_stats(&chunk.pages),
            pages: chunk.pages,
        })
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

/// One column of a row group, encoded: its pages' bytes and metadata.
struct EncodedChunk {
    bytes: Vec<Vec<u8>>,
    pages: Vec<PageMeta>,
}

/// A page's stored bytes and what the footer says of it.
type EncodedPage = (Vec<u8>, PageMeta);

/// Most threads one row group's columns are encoded on.
const MAX_ENCODE_THREADS: usize = 4;

/// Encode every column of a row group. Every page is a task, taken by
/// whichever of a few threads is free (compression is most of a load's
/// work, pages are independent, and columns differ tenfold in cost: a
/// fixed share of columns per thread left one thread idle while the
/// other compressed the text). The result is in column order and the same
/// bytes as encoding the pages one after the other.
fn encode_columns(format: SegmentFormat, path: &Path, fields: &[Arc<Field>], columns: &[ArrayRef]) -> Result<Vec<EncodedChunk>> {
    // (column, first row, rows) of every page, column by column.
    let tasks: Vec<(usize, usize, usize)> = columns
        .iter()
        .enumerate()
        .flat_map(|(c, column)| {
            let len = column.len();
            (0..len).step_by(format.page_rows.max(1)).map(move |start| (c, start, format.page_rows.min(len - start)))
        })
        .collect();
    let encode = |&(c, start, rows): &(usize, usize, usize)| -> Result<EncodedPage> {
        let (page, raw_len, stats, encoding) = encode_page(format, path, &fields[c], &columns[c].slice(start, rows))?;
        let meta = PageMeta { rows: rows as u64, len: page.len() as u64, raw_len, crc: crc32fast::hash(&page), stats, encoding };
        Ok((page, meta))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_ENCODE_THREADS).min(tasks.len().max(1));
    let encoded: Vec<Result<EncodedPage>> = if threads <= 1 {
        tasks.iter().map(encode).collect()
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut slots: Vec<Option<Result<EncodedPage>>> = (0..tasks.len()).map(|_| None).collect();
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(task) = tasks.get(i) else { break };
                            done.push((i, encode(task)));
                        }
                        done
                    })
                })
                .collect();
            for handle in handles {
                let done = handle.join().map_err(|_| StorageError::Internal("a page encoding thread panicked".into()))?;
                for (i, result) in done {
                    slots[i] = Some(result);
                }
            }
            Ok(())
        })?;
        slots
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| Err(StorageError::Internal("a page was left unencoded".into()))))
            .collect()
    };
    let mut chunks: Vec<EncodedChunk> = columns.iter().map(|_| EncodedChunk { bytes: Vec::new(), pages: Vec::new() }).collect();
    for (&(c, _, _), result) in tasks.iter().zip(encoded) {
        let (page, meta) = result?;
        chunks[c].bytes.push(page);
        chunks[c].pages.push(meta);
    }
    Ok(chunks)
}

/// Pages must split every chunk of a group the same way, cover the group's
/// rows and the chunk's bytes, and bound the row ids of each page.
fn check_pages(group: &RowGroupMeta) -> std::result::Result<(), String> {
    let Some(first) = group.chunks.first() else { return Ok(()) };
    let split: Vec<u64> = first.pages.iter().map(|p| p.rows).collect();
    if split.len() > MAX_PAGES_PER_CHUNK {
        return Err(format!("a chunk has {} pages (at most {MAX_PAGES_PER_CHUNK})", split.len()));
    }
    for chunk in &group.chunks {
        if !chunk.pages.iter().map(|p| p.rows).eq(split.iter().copied()) {
            return Err("the chunks of a row group are split into pages differently".into());
        }
        if !chunk.pages.is_empty() && chunk.pages.iter().map(|p| p.len).sum::<u64>() != chunk.len {
            return Err("a chunk's pages do not add up to its length".into());
        }
    }
    if split.is_empty() {
        return Ok(());
    }
    if split.contains(&0) || split.iter().sum::<u64>() != group.rows {
        return Err("a row group's pages do not add up to its rows".into());
    }
    for page in &first.pages {
        let bounds = matches!(&page.stats, ChunkStats { min: Some(StatValue::UInt(lo)), max: Some(StatValue::UInt(hi)), .. }
            if *lo <= *hi && *lo >= group.min_row_id && *hi <= group.max_row_id);
        if !bounds {
            return Err("a page lacks the bounds of its row ids".into());
        }
    }
    Ok(())
}

/// Read access to one segment file through a memory map.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    mmap: Mmap,
    footer: Footer,
    schema: SchemaRef,
    /// Unique in the process: the key of this reader's pages in `cache`.
    id: u64,
    cache: Arc<PageCache>,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path, cache: Arc<PageCache>) -> Result<Self> {
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
            id: next_reader_id(),
            cache,
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
            check_pages(group).map_err(|detail| StorageError::corruption(path, footer_at, detail))?;
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
        let group = self.group(row_group)?;
        let chunk = group.chunks.get(column).ok_or_else(|| {
            StorageError::Internal(format!("column {column} out of range in {}", self.path.display()))
        })?;
        self.check_crc(chunk.offset, chunk.len, chunk.crc, row_group, column)?;
        let pages = (0..group.page_count())
            .map(|page| self.decode_page(group, page, column))
            .collect::<Result<Vec<_>>>()?;
        match pages.as_slice() {
            [one] => Ok(one.clone()),
            many => {
                let parts: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
                Ok(arrow::compute::concat(&parts)?)
            }
        }
    }

    /// One page of one column of one row group: from the page cache, or
    /// decoded after checking its checksum (and then cached).
    pub fn read_page(&self, row_group: usize, page: usize, column: usize) -> Result<ArrayRef> {
        let key = (self.id, row_group as u32, page as u32, column as u32);
        if let Some(cached) = self.cache.get(&key) {
            return Ok(cached);
        }
        let group = self.group(row_group)?;
        let at = self.locate(group, page, column)?;
        self.check_crc(at.offset, at.len, at.crc, row_group, column)?;
        let decoded = self.decode_at(&at, group.chunks[column].compression, column)?;
        self.cache.insert(key, decoded.clone());
        Ok(decoded)
    }

    fn group(&self, row_group: usize) -> Result<&RowGroupMeta> {
        self.footer.row_groups.get(row_group).ok_or_else(|| {
            StorageError::Internal(format!("row group {row_group} out of range in {}", self.path.display()))
        })
    }

    fn check_crc(&self, offset: u64, len: u64, crc: u32, row_group: usize, column: usize) -> Result<()> {
        let bytes = &self.mmap[offset as usize..(offset + len) as usize];
        if crc32fast::hash(bytes) != crc {
            return Err(StorageError::corruption(
                &self.path,
                offset,
                format!("checksum mismatch in chunk of column '{}' (row group {row_group})", self.footer.columns[column].0),
            ));
        }
        Ok(())
    }

    /// Where page `page` of `column` lies (`page_location` found it, so
    /// the chunk exists too).
    fn locate(&self, group: &RowGroupMeta, page: usize, column: usize) -> Result<PageLocation> {
        group.page_location(page, column).ok_or_else(|| {
            StorageError::Internal(format!("page {page} of column {column} out of range in {}", self.path.display()))
        })
    }

    /// Decode a page whose bytes were checked as part of their chunk.
    fn decode_page(&self, group: &RowGroupMeta, page: usize, column: usize) -> Result<ArrayRef> {
        let at = self.locate(group, page, column)?;
        self.decode_at(&at, group.chunks[column].compression, column)
    }

    /// Decode the page at `at`, whose bytes were checked.
    fn decode_at(&self, at: &PageLocation, compression: u8, column: usize) -> Result<ArrayRef> {
        // The page was located, and the footer was checked to have one
        // chunk per column.
        let (name, want) = &self.footer.columns[column];
        if let PageEncoding::Sequence { start, step } = at.encoding {
            if at.len != 0 {
                return Err(StorageError::corruption(&self.path, at.offset, "a sequence page has bytes"));
            }
            return decode_sequence(start, step, at.rows, want).map_err(|detail| StorageError::corruption(&self.path, at.offset, detail));
        }
        let bytes = &self.mmap[at.offset as usize..(at.offset + at.len) as usize];
        if at.encoding == PageEncoding::Packed {
            return packed::unpack(bytes, at.rows, want).map_err(|detail| {
                StorageError::corruption(&self.path, at.offset, format!("page of column '{name}': {detail}"))
            });
        }
        let compressed = match compression {
            COMPRESSION_NONE => false,
            COMPRESSION_ZSTD => true,
            other => return Err(StorageError::corruption(&self.path, at.offset, format!("unknown compression code {other}"))),
        };
        let decoded = if at.encoding == PageEncoding::Dictionary {
            decode_dictionary_page(bytes, at.rows, compressed)
        } else if compressed {
            decompress(bytes, at.raw_len).and_then(|raw| decode_batch(&raw)).and_then(single_column)
        } else {
            decode_batch(bytes).and_then(single_column)
        };
        let array = &decoded.map_err(|detail| StorageError::corruption(&self.path, at.offset, detail))?;
        if array.len() as u64 != at.rows {
            return Err(StorageError::corruption(&self.path, at.offset, "page holds the wrong number of rows"));
        }
        if array.data_type() == want {
            return Ok(array.clone());
        }
        match (array.data_type(), want) {
            (DataType::Utf8, DataType::Utf8View) | (DataType::Binary, DataType::BinaryView) => {
                Ok(arrow::compute::cast(array, want)?)
            }
            (DataType::Dictionary(_, values), DataType::Utf8View | DataType::Utf8) if **values == DataType::Utf8 => {
                Ok(arrow::compute::cast(array, want)?)
            }
            (got, _) => widened(array, want).ok_or_else(|| StorageError::corruption(
                &self.path,
                at.offset,
                format!("page of column '{name}' holds {got}, expected {want}"),
            )),
        }
    }

    /// Check every chunk's checksum (used by verification; reads the file,
    /// not the page cache).
    pub fn verify(&self) -> Result<()> {
        for (g, group) in self.footer.row_groups.iter().enumerate() {
            for c in 0..group.chunks.len() {
                self.read_column(g, c)?;
            }
        }
        Ok(())
    }
}

/// The only column of a page's IPC batch.
fn single_column(batch: RecordBatch) -> std::result::Result<ArrayRef, String> {
    match batch.columns() {
        [column] => Ok(column.clone()),
        columns => Err(format!("page holds {} columns", columns.len())),
    }
}

/// One page packed and read back, for the micro-benchmarks
/// (`benches/benches/micro.rs`); not part of the storage API.
#[doc(hidden)]
pub mod internals {
    use arrow::array::ArrayRef;
    use arrow::datatypes::DataType;

    /// The bytes of a packed page; None for types that are not packed.
    pub fn pack_page(column: &ArrayRef) -> Option<Vec<u8>> {
        super::packed::pack(column).map(|packed| packed.bytes)
    }

    /// The column a packed page of `rows` rows holds.
    pub fn unpack_page(bytes: &[u8], rows: u64, ty: &DataType) -> Result<ArrayRef, String> {
        super::packed::unpack(bytes, rows, ty)
    }
}

#[cfg(test)]
mod tests;
