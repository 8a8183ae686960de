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

#[cfg(test)]
mod tests {
    use super::page::*;
    use super::*;
    use arrow::array::{Int64Array, StringArray, UInt64Array};

    fn no_cache() -> Arc<PageCache> {
        Arc::new(PageCache::new(0))
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(ROW_ID_COLUMN, DataType::UInt64, false),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    fn batch(rows: u64) -> RecordBatch {
        let ids = UInt64Array::from_iter_values(0..rows);
        let n: Int64Array = (0..rows).map(|i| (i % 11 != 0).then_some(i as i64 * 3)).collect();
        let s: StringArray = (0..rows).map(|i| Some(format!("value {i:08}"))).collect();
        RecordBatch::try_new(schema(), vec![Arc::new(ids), Arc::new(n), Arc::new(s)]).expect("batch")
    }

    fn write(dir: &Path, rows: u64, page_rows: usize) -> PathBuf {
        let path = dir.join("seg");
        let mut w = SegmentWriter::create(&path, schema(), SegmentFormat { zstd_level: 1, page_rows }).expect("create");
        w.write(batch(rows)).expect("write");
        w.finish().expect("finish");
        path
    }

    #[test]
    fn pages_split_every_chunk_and_read_back_alone_or_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = ROW_GROUP_ROWS as u64 + 2500;
        let path = write(dir.path(), rows, 1000);
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let expected = batch(rows);
        let groups = reader.row_groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].page_count(), ROW_GROUP_ROWS.div_ceil(1000));
        assert_eq!(groups[1].page_count(), 3);
        let mut start = 0u64;
        for (g, group) in groups.iter().enumerate() {
            for col in 0..3 {
                let whole = reader.read_column(g, col).expect("column");
                assert_eq!(whole.as_ref(), expected.column(col).slice(start as usize, group.rows as usize).as_ref());
            }
            let mut at = start;
            for page in 0..group.page_count() {
                let rows = group.page_rows(page);
                assert_eq!(group.page_row_ids(page), (at, at + rows - 1));
                for col in 0..3 {
                    let got = reader.read_page(g, page, col).expect("page");
                    assert_eq!(got.as_ref(), expected.column(col).slice(at as usize, rows as usize).as_ref());
                }
                let stats = group.page_stats(page, 1).expect("stats");
                let first = (at..at + rows).find(|i| i % 11 != 0).expect("a value");
                assert_eq!(stats.min, Some(StatValue::Int(first as i64 * 3)));
                at += rows;
            }
            assert_eq!(at, start + group.rows);
            start += group.rows;
        }
        reader.verify().expect("verify");
    }

    /// A segment written before pages existed: each chunk one IPC stream
    /// and no `pages` in the footer. It reads as one page per group.
    #[test]
    fn segments_without_pages_read_as_one_page_per_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = 5000;
        let path = write(dir.path(), rows, ROW_GROUP_ROWS);
        let bytes = std::fs::read(&path).expect("read");
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let mut footer = reader.footer.clone();
        let data_end = footer.row_groups.iter().flat_map(|g| &g.chunks).map(|c| c.offset + c.len).max().expect("chunks");
        for chunk in footer.row_groups.iter_mut().flat_map(|g| g.chunks.iter_mut()) {
            assert_eq!(chunk.pages.len(), 1);
            chunk.pages.clear();
        }
        let json = serde_json::to_vec(&footer).expect("json");
        assert!(!String::from_utf8_lossy(&json).contains("pages"));
        let mut old = bytes[..data_end as usize].to_vec();
        old.extend_from_slice(&json);
        old.extend_from_slice(&(json.len() as u64).to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        old.extend_from_slice(TRAILER_MAGIC);
        let old_path = dir.path().join("old");
        std::fs::write(&old_path, old).expect("write");
        let reader = SegmentReader::open(&old_path, no_cache()).expect("open old");
        let group = &reader.row_groups()[0];
        assert_eq!(group.page_count(), 1);
        assert_eq!(group.page_rows(0), rows);
        assert_eq!(group.page_row_ids(0), (0, rows - 1));
        assert_eq!(group.page_stats(0, 1), group.stats(1));
        assert_eq!(reader.read_page(0, 0, 2).expect("page").as_ref(), batch(rows).column(2).as_ref());
    }

    /// Pages of a view column hold their own strings, not every string of
    /// the batch they were cut from.
    #[test]
    fn view_pages_hold_only_their_strings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = Arc::new(Schema::new(vec![
            Field::new(ROW_ID_COLUMN, DataType::UInt64, false),
            Field::new("v", DataType::Utf8View, true),
        ]));
        let rows = 20_000u64;
        let ids = UInt64Array::from_iter_values(0..rows);
        let v: arrow::array::StringViewArray = (0..rows).map(|i| Some(format!("a longer string value {i:012}"))).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(v.clone())]).expect("batch");
        let path = dir.path().join("seg");
        let mut w = SegmentWriter::create(&path, schema, SegmentFormat { zstd_level: 0, page_rows: 1000 }).expect("create");
        w.write(batch).expect("write");
        w.finish().expect("finish");
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let group = &reader.row_groups()[0];
        let raw: Vec<u64> = group.chunks[1].pages.iter().map(|p| p.raw_len).collect();
        // 1,000 strings of 34 bytes plus their 16-byte views, and headers.
        assert!(raw.iter().all(|len| *len < 60_000), "{raw:?}");
        let page = reader.read_page(0, 7, 1).expect("page");
        assert_eq!(page.as_ref(), &v.slice(7000, 1000) as &dyn Array);
    }

    /// zstd's fast levels are negative: a chunk written at any level other
    /// than 0 says it is compressed, and every level reads back.
    #[test]
    fn every_compression_level_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        for level in [-5, -1, 0, 1, 3] {
            let path = dir.path().join(format!("seg{level}"));
            let mut w = SegmentWriter::create(&path, schema(), SegmentFormat { zstd_level: level, page_rows: 500 }).expect("create");
            w.write(batch(2000)).expect("write");
            w.finish().expect("finish");
            let reader = SegmentReader::open(&path, no_cache()).expect("open");
            let want = if level == 0 { COMPRESSION_NONE } else { COMPRESSION_ZSTD };
            assert!(reader.row_groups()[0].chunks.iter().all(|c| c.compression == want), "level {level}");
            assert_eq!(reader.read_column(0, 2).expect("read").as_ref(), batch(2000).column(2).as_ref(), "level {level}");
            reader.verify().expect("verify");
        }
    }

    /// A chunk's statistics merged from its pages equal those computed over
    /// the whole column, whatever the pages hold (all-null pages, strings
    /// too long to keep, NaN).
    #[test]
    fn chunk_stats_merged_from_pages_equal_whole_column_stats() {
        use arrow::array::{Float64Array, StringViewArray};
        let long = "x".repeat(MAX_STAT_STRING_BYTES + 1);
        let columns: Vec<ArrayRef> = vec![
            Arc::new((0..40).map(|i| (i >= 10 && i % 3 != 0).then_some(100 - i as i64)).collect::<Int64Array>()),
            Arc::new((0..40).map(|_| None::<i64>).collect::<Int64Array>()),
            Arc::new((0..40).map(|i| Some(if i == 25 { long.clone() } else { format!("v{i}") })).collect::<StringViewArray>()),
            Arc::new((0..40).map(|i| (i % 7 != 0).then(|| format!("value number {i}"))).collect::<StringViewArray>()),
            Arc::new((0..40).map(|i| Some(if i == 33 { f64::NAN } else { i as f64 })).collect::<Float64Array>()),
            Arc::new((0..40).map(|i| Some(-(i as f64))).collect::<Float64Array>()),
        ];
        for column in columns {
            let pages: Vec<PageMeta> = (0..4)
                .map(|p| {
                    let slice = column.slice(p * 10, 10);
                    PageMeta { rows: 10, len: 0, raw_len: 0, crc: 0, stats: compute_stats(&slice), encoding: PageEncoding::Ipc }
                })
                .collect();
            assert_eq!(merge_stats(&pages), compute_stats(&column), "{column:?}");
        }
    }

    /// Short varied strings keep their views (they compress better so);
    /// longer ones are stored as plain strings; both read back as views.
    #[test]
    fn short_view_pages_stay_views_and_long_ones_become_plain() {
        use arrow::array::StringViewArray;
        let short: ArrayRef = Arc::new((0..100).map(|i| Some(format!("twelve_ch{i:03}"))).collect::<StringViewArray>());
        let long: ArrayRef = Arc::new((0..100).map(|i| Some(format!("thirteen char{i}"))).collect::<StringViewArray>());
        assert_eq!(stored_form(&short).data_type(), &DataType::Utf8View);
        assert_eq!(stored_form(&long).data_type(), &DataType::Utf8);
        assert_eq!(stored_form(&short.slice(10, 20)).as_ref(), short.slice(10, 20).as_ref());
    }

    /// Pages encoded by several threads come back in column and page
    /// order, byte for byte what encoding them one by one gives.
    #[test]
    fn pages_encoded_on_threads_are_in_order_and_identical() {
        let format = SegmentFormat { zstd_level: 1, page_rows: 100 };
        let fields = vec![
            Arc::new(Field::new("n", DataType::Int64, true)),
            Arc::new(Field::new("s", DataType::Utf8, true)),
            Arc::new(Field::new("empty_text", DataType::Utf8, true)),
        ];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..1_050)),
            Arc::new((0..1_050).map(|i| Some(format!("value {}", i * 7919 % 1_000))).collect::<StringArray>()),
            Arc::new((0..1_050).map(|_| None::<&str>).collect::<StringArray>()),
        ];
        let chunks = encode_columns(format, Path::new("test"), &fields, &columns).expect("encode");
        assert_eq!(chunks.len(), 3);
        for (c, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.pages.len(), 11);
            for (p, (bytes, meta)) in chunk.bytes.iter().zip(&chunk.pages).enumerate() {
                let rows = if p == 10 { 50 } else { 100 };
                let (alone, raw_len, stats, encoding) =
                    encode_page(format, Path::new("test"), &fields[c], &columns[c].slice(p * 100, rows)).expect("page");
                assert_eq!(bytes, &alone, "column {c} page {p}");
                assert_eq!((meta.rows, meta.raw_len, &meta.stats, meta.encoding), (rows as u64, raw_len, &stats, encoding));
                assert_eq!(meta.crc, crc32fast::hash(bytes));
            }
        }
    }

    #[test]
    fn a_damaged_page_is_reported_and_its_neighbours_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), 4000, 1000);
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let at = reader.row_groups()[0].page_location(2, 2).expect("page");
        drop(reader);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[(at.offset + at.len / 2) as usize] ^= 0x55;
        std::fs::write(&path, bytes).expect("write");
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let err = reader.read_page(0, 2, 2).expect_err("damaged page");
        assert!(matches!(err, StorageError::Corruption { .. }), "{err}");
        assert!(err.to_string().contains("column 's'"), "{err}");
        reader.read_page(0, 1, 2).expect("neighbour page");
        reader.read_page(0, 2, 1).expect("other column");
        assert!(reader.read_column(0, 2).is_err());
        assert!(reader.verify().is_err());
    }

    #[test]
    fn footers_with_inconsistent_pages_are_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), 3000, 1000);
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let mut group = reader.row_groups()[0].clone();
        assert!(check_pages(&group).is_ok());
        group.chunks[1].pages[0].rows += 1;
        assert!(check_pages(&group).is_err());
        let mut group = reader.row_groups()[0].clone();
        for chunk in &mut group.chunks {
            chunk.pages[2].rows += 1;
        }
        assert!(check_pages(&group).expect_err("inconsistent").contains("rows"));
        let mut group = reader.row_groups()[0].clone();
        group.chunks[0].pages[1].stats.min = None;
        assert!(check_pages(&group).expect_err("inconsistent").contains("row ids"));
    }

    /// A segment of one column beside the row ids, written with `page_rows`
    /// rows per page, and its reader.
    fn one_column(dir: &Path, column: ArrayRef, page_rows: usize) -> SegmentReader {
        let schema = Arc::new(Schema::new(vec![
            Field::new(ROW_ID_COLUMN, DataType::UInt64, false),
            Field::new("c", column.data_type().clone(), true),
        ]));
        let ids = UInt64Array::from_iter_values(0..column.len() as u64);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), column]).expect("batch");
        let path = dir.join("one");
        let _ = std::fs::remove_file(&path);
        let mut w = SegmentWriter::create(&path, schema, SegmentFormat { zstd_level: 1, page_rows }).expect("create");
        w.write(batch).expect("write");
        w.finish().expect("finish");
        SegmentReader::open(&path, no_cache()).expect("open")
    }

    /// The Arrow type page `page` of column `column` (row group 0) is
    /// stored as.
    fn stored_type(reader: &SegmentReader, page: usize, column: usize) -> DataType {
        let group = &reader.row_groups()[0];
        let at = reader.locate(group, page, column).expect("locate");
        let bytes = &reader.mmap[at.offset as usize..(at.offset + at.len) as usize];
        let raw = decompress(bytes, at.raw_len).expect("decompress");
        crate::codec::decode_batch(&raw).expect("decode").column(0).data_type().clone()
    }

    /// Integer, date, time and timestamp pages are packed (`packed.rs`),
    /// page by page, and read back as the column's own type with their
    /// nulls and statistics, smaller than their values.
    #[test]
    fn integer_pages_are_packed_and_read_back_exactly() {
        use arrow::array::{Int16Array, TimestampNanosecondArray, UInt32Array};
        let dir = tempfile::tempdir().expect("tempdir");
        // Not evenly stepping (those are sequences), some nulls.
        let scattered = |i: u64| i.wrapping_mul(2_654_435_761) % 1009;
        let cases: Vec<ArrayRef> = vec![
            Arc::new((0..3000u64).map(|i| (i % 13 != 0).then(|| scattered(i) << (i / 1000 * 20))).collect::<UInt64Array>()),
            Arc::new((0..3000u64).map(|i| (i / 1000 != 1).then(|| scattered(i) as i64 - 500)).collect::<Int64Array>()),
            Arc::new((0..3000u64).map(|i| Some(scattered(i) as u32 % 7)).collect::<UInt32Array>()),
            Arc::new((0..3000u64).map(|i| Some(-(scattered(i) as i16))).collect::<Int16Array>()),
            Arc::new(TimestampNanosecondArray::from_iter_values((0..3000i64).map(|i| 1_730_000_000_000_000_000 + (i * 60 + i % 7) * 1_000_000_000))),
        ];
        for column in cases {
            let reader = one_column(dir.path(), column.clone(), 1000);
            let group = &reader.row_groups()[0];
            assert!(group.chunks[1].pages.iter().all(|p| p.encoding == PageEncoding::Packed), "{column:?}");
            let values_bytes = column.len() * column.data_type().primitive_width().expect("primitive");
            assert!(group.chunks[1].len < values_bytes as u64 * 3 / 4, "{} bytes for {values_bytes} of values", group.chunks[1].len);
            assert_eq!(reader.read_column(0, 1).expect("read").as_ref(), column.as_ref());
            for page in 0..3 {
                let want = column.slice(page * 1000, 1000);
                assert_eq!(reader.read_page(0, page, 1).expect("page").as_ref(), want.as_ref());
                assert_eq!(group.page_stats(page, 1), Some(&compute_stats(&want)));
            }
            reader.verify().expect("verify");
        }
    }

    /// A damaged packed page is reported as corruption of its column; its
    /// neighbours still read.
    #[test]
    fn damaged_packed_pages_are_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let column: ArrayRef = Arc::new(UInt64Array::from_iter_values((0..300u64).map(|i| i * i % 1013)));
        let reader = one_column(dir.path(), column, 100);
        let mut at = reader.row_groups()[0].page_location(1, 1).expect("page");
        assert_eq!(at.encoding, PageEncoding::Packed);
        at.rows += 1;
        let err = reader.decode_at(&at, COMPRESSION_ZSTD, 1).expect_err("rows");
        assert!(matches!(err, StorageError::Corruption { .. }) && err.to_string().contains("column 'c'"), "{err}");
    }

    /// Segments of format version 2 (a file written by that build, kept
    /// in `testdata/`): integer pages narrowed to the smallest type of
    /// their signedness, then IPC and zstd, read back as their column's
    /// type with their statistics.
    #[test]
    fn version_2_narrowed_integer_pages_read_back() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/segment/testdata/version2-narrow-integers.tseg");
        let reader = SegmentReader::open(&path, no_cache()).expect("open");
        let batch = version2_batch();
        let expected_stored = [
            ("u", [DataType::UInt8, DataType::UInt16, DataType::UInt64]),
            ("i", [DataType::Int16, DataType::Int8, DataType::Int32]),
            ("w", [DataType::UInt8, DataType::UInt8, DataType::UInt8]),
            ("h", [DataType::Int16, DataType::Int16, DataType::Int16]),
        ];
        for (name, stored) in expected_stored {
            let c = reader.column_index(name).expect("column");
            let got: Vec<DataType> = (0..3).map(|page| stored_type(&reader, page, c)).collect();
            assert_eq!(got, stored, "{name}");
        }
        for c in 1..batch.num_columns() {
            let want = batch.column(c);
            assert_eq!(reader.read_column(0, c).expect("read").as_ref(), want.as_ref(), "{}", batch.schema().field(c).name());
            for page in 0..3 {
                let slice = want.slice(page * 1000, 1000);
                assert_eq!(reader.read_page(0, page, c).expect("page").as_ref(), slice.as_ref());
                assert_eq!(reader.row_groups()[0].page_stats(page, c), Some(&compute_stats(&slice)));
            }
        }
        reader.verify().expect("verify");
    }

    /// Only a narrower integer of the same signedness widens back to an
    /// integer column; anything else found there is left to be reported.
    #[test]
    fn only_narrower_integers_of_the_same_signedness_widen() {
        use arrow::array::{Int32Array, UInt8Array};
        let small: ArrayRef = Arc::new(UInt8Array::from(vec![Some(1), None, Some(255)]));
        let signed: ArrayRef = Arc::new(Int32Array::from(vec![Some(-1), None, Some(7)]));
        assert_eq!(widened(&small, &DataType::UInt64).expect("widens").as_ref(), &UInt64Array::from(vec![Some(1), None, Some(255)]) as &dyn Array);
        assert_eq!(widened(&signed, &DataType::Int64).expect("widens").as_ref(), &Int64Array::from(vec![Some(-1), None, Some(7)]) as &dyn Array);
        assert!(widened(&small, &DataType::Int64).is_none(), "other signedness");
        assert!(widened(&signed, &DataType::UInt64).is_none(), "other signedness");
        assert!(widened(&signed, &DataType::Int16).is_none(), "wider than the column");
        assert!(widened(&signed, &DataType::Utf8).is_none(), "not an integer column");
    }

    proptest::proptest! {
        /// Any 64-bit integer column, of any magnitude, with nulls, reads
        /// back exactly, with the statistics of its own values.
        #[test]
        fn any_integer_column_reads_back(values in proptest::collection::vec(proptest::option::of(proptest::num::i64::ANY), 1..600), shift in 0u32..64, rows in 1usize..200) {
            let dir = tempfile::tempdir().expect("tempdir");
            let signed: ArrayRef = Arc::new(values.iter().map(|v| v.map(|v| v >> shift)).collect::<Int64Array>());
            let unsigned: ArrayRef = Arc::new(values.iter().map(|v| v.map(|v| (v as u64) >> shift)).collect::<UInt64Array>());
            for column in [signed, unsigned] {
                let reader = one_column(dir.path(), column.clone(), rows);
                let read = reader.read_column(0, 1).expect("read");
                proptest::prop_assert_eq!(read.as_ref(), column.as_ref());
                let group = &reader.row_groups()[0];
                for page in 0..group.page_count() {
                    let want = column.slice(page * rows, (column.len() - page * rows).min(rows));
                    proptest::prop_assert_eq!(group.page_stats(page, 1), Some(&compute_stats(&want)));
                }
            }
        }
    }

    /// Row ids, and any 64-bit integer page without nulls that steps
    /// evenly (down, by zero, wrapping), take no bytes and read back
    /// exactly; an uneven or nullable page stays an IPC page.
    #[test]
    fn evenly_stepping_integer_pages_are_sequences_without_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: Vec<(ArrayRef, [bool; 3])> = vec![
            (Arc::new(Int64Array::from_iter_values((0..3000).map(|i| 1000 - 7 * i))), [true; 3]),
            (Arc::new(Int64Array::from_iter_values((0..3000).map(|_| -5))), [true; 3]),
            (Arc::new(Int64Array::from_iter_values((0..3000i64).map(|i| i64::MAX.wrapping_add(i * 1_000_000_007)))), [true; 3]),
            (Arc::new(UInt64Array::from_iter_values((0..3000u64).map(|i| u64::MAX - i))), [true; 3]),
            // Only the page holding the break, or the null, is not one.
            (Arc::new(Int64Array::from_iter_values((0..3000).map(|i| if i == 2500 { 0 } else { i }))), [true, true, false]),
            (Arc::new((0..3000).map(|i| (i != 10).then_some(i)).collect::<Int64Array>()), [false, true, true]),
        ];
        for (column, expected) in cases {
            let reader = one_column(dir.path(), column.clone(), 1000);
            let group = &reader.row_groups()[0];
            assert!(group.chunks[0].pages.iter().all(|p| matches!(p.encoding, PageEncoding::Sequence { .. }) && p.len == 0));
            let sequences: Vec<bool> = group.chunks[1].pages.iter().map(|p| matches!(p.encoding, PageEncoding::Sequence { .. })).collect();
            assert_eq!(sequences, expected, "{column:?}");
            assert_eq!(reader.read_column(0, 1).expect("read").as_ref(), column.as_ref());
            for page in 0..3 {
                let want = column.slice(page * 1000, 1000);
                assert_eq!(reader.read_page(0, page, 1).expect("page").as_ref(), want.as_ref());
                assert_eq!(group.page_stats(page, 1), Some(&compute_stats(&want)));
            }
            reader.verify().expect("verify");
        }
    }

    /// String pages with few distinct values are stored as dictionaries
    /// (1-byte keys up to 256 values, 2-byte beyond) and read back as the
    /// column's own type, nulls included, with the statistics of the
    /// values; varied pages are not.
    #[test]
    fn repetitive_string_pages_are_dictionaries_and_read_back_exactly() {
        use arrow::array::StringViewArray;
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = 4096;
        let few: ArrayRef = Arc::new(
            (0..rows).map(|i| (i % 13 != 0).then(|| ["click", "view", "a rather long page address /x/y/z"][i % 3])).collect::<StringViewArray>(),
        );
        let runs: ArrayRef = Arc::new((0..rows).map(|i| Some(format!("cookie-{:016}", i / 9))).collect::<StringViewArray>());
        let varied: ArrayRef = Arc::new((0..rows).map(|i| Some(format!("user{i}@example.com"))).collect::<StringViewArray>());
        let plain_text: ArrayRef = Arc::new((0..rows).map(|i| Some(format!("city {}", i % 40))).collect::<StringArray>());
        for (column, key) in [(few, Some(DataType::UInt8)), (runs, Some(DataType::UInt16)), (varied, None), (plain_text, Some(DataType::UInt8))] {
            let stored = stored_form(&column);
            match (&key, stored.data_type()) {
                (Some(k), DataType::Dictionary(got, values)) => assert_eq!((got.as_ref(), values.as_ref()), (k, &DataType::Utf8)),
                (None, other) => assert!(!matches!(other, DataType::Dictionary(..)), "{other}"),
                (_, other) => panic!("expected a dictionary page, got {other}"),
            }
            assert_eq!(compute_stats(&stored), compute_stats(&column));
            if let Some(dictionary) = stored.as_any_dictionary_opt() {
                let text = arrow::compute::cast(&column, &DataType::Utf8).expect("cast");
                let distinct: std::collections::HashSet<&str> = text.as_string::<i32>().iter().flatten().collect();
                assert_eq!(dictionary.values().len(), distinct.len(), "each distinct value once");
            }
            let reader = one_column(dir.path(), column.clone(), 1024);
            let encodings: Vec<PageEncoding> = reader.row_groups()[0].chunks[1].pages.iter().map(|p| p.encoding).collect();
            let expected = if key.is_some() { PageEncoding::Dictionary } else { PageEncoding::Ipc };
            assert!(encodings.iter().all(|e| *e == expected), "{encodings:?}");
            assert_eq!(reader.read_column(0, 1).expect("read").as_ref(), column.as_ref());
            let page = reader.read_page(0, 3, 1).expect("page");
            assert_eq!(page.as_ref(), column.slice(3072, 1024).as_ref());
            assert_eq!(reader.row_groups()[0].page_stats(3, 1), Some(&compute_stats(&column.slice(3072, 1024))));
        }
    }

    /// A damaged dictionary page is an error naming the problem, never a
    /// panic: cut anywhere, or with keys past its values.
    #[test]
    fn damaged_dictionary_pages_are_errors() {
        use arrow::array::{StringViewArray, UInt8Array};
        let dir = tempfile::tempdir().expect("tempdir");
        let column: ArrayRef = Arc::new((0..1000).map(|i| (i % 7 != 0).then(|| format!("category {}", i % 9))).collect::<StringViewArray>());
        let reader = one_column(dir.path(), column, 1000);
        let at = reader.row_groups()[0].page_location(0, 1).expect("page");
        assert_eq!(at.encoding, PageEncoding::Dictionary);
        let bytes = &reader.mmap[at.offset as usize..(at.offset + at.len) as usize];
        assert!(decode_dictionary_page(bytes, 1000, true).is_ok());
        for cut in 0..bytes.len() {
            assert!(decode_dictionary_page(&bytes[..cut], 1000, true).is_err(), "cut at {cut}");
        }
        assert!(decode_dictionary_page(bytes, 1001, true).is_err(), "rows");
        // Keys 0 and 5 over two values, written by hand.
        let keys: ArrayRef = Arc::new(UInt8Array::from(vec![0u8, 5]));
        let keys = super::packed::pack(&keys).expect("packs").bytes;
        let values = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("values", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["a", "b"]))],
        )
        .expect("batch");
        let values = crate::codec::encode_batch(&values).expect("ipc");
        let mut page = vec![1u8];
        page.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        page.extend_from_slice(&keys);
        page.extend_from_slice(&(values.len() as u32).to_le_bytes());
        page.extend_from_slice(&values);
        let err = decode_dictionary_page(&page, 2, false).expect_err("key past the values");
        assert!(err.contains("dictionary page"), "{err}");
        page[0] = 7;
        assert!(decode_dictionary_page(&page, 2, false).expect_err("code").contains("key width code 7"));
    }

    /// A sequence page that claims bytes, or sits in a column that is not a
    /// 64-bit integer, is corruption, not a panic or made-up values.
    #[test]
    fn impossible_sequence_pages_are_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reader = one_column(dir.path(), Arc::new(StringArray::from_iter_values((0..100).map(|i| format!("{i}")))), 100);
        let mut at = reader.row_groups()[0].page_location(0, 1).expect("page");
        at.encoding = PageEncoding::Sequence { start: 1, step: 1 };
        let err = reader.decode_at(&at, COMPRESSION_ZSTD, 1).expect_err("bytes");
        assert!(err.to_string().contains("sequence page has bytes"), "{err}");
        at.len = 0;
        let err = reader.decode_at(&at, COMPRESSION_ZSTD, 1).expect_err("type");
        assert!(matches!(err, StorageError::Corruption { .. }) && err.to_string().contains("Utf8"), "{err}");
    }

    /// The rows of `testdata/version2-narrow-integers.tseg`, a segment
    /// written by a version-2 build (integer pages narrowed, then IPC and
    /// zstd), page_rows 1000.
    fn version2_batch() -> RecordBatch {
        use arrow::array::{Int16Array, TimestampNanosecondArray, UInt32Array};
        let scattered = |i: u64| i.wrapping_mul(2_654_435_761) % 1009;
        let unsigned = |i: u64| match i / 1000 {
            0 => scattered(i) % 256,
            1 => scattered(i) * 60,
            _ => scattered(i) << 40,
        };
        let signed = |i: u64| match i / 1000 {
            0 => Some(scattered(i) as i64 - 500),
            1 => None,
            _ => Some(((scattered(i) as i64) << 20) - 500),
        };
        let rows = 0..3000u64;
        let schema = Arc::new(Schema::new(vec![
            Field::new(ROW_ID_COLUMN, DataType::UInt64, false),
            Field::new("u", DataType::UInt64, true),
            Field::new("i", DataType::Int64, true),
            Field::new("w", DataType::UInt32, true),
            Field::new("h", DataType::Int16, true),
            Field::new("t", DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None), true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(rows.clone())),
            Arc::new(rows.clone().map(|i| (i % 13 != 0).then(|| unsigned(i))).collect::<UInt64Array>()),
            Arc::new(rows.clone().map(signed).collect::<Int64Array>()),
            Arc::new(rows.clone().map(|i| Some(scattered(i) as u32 % 7)).collect::<UInt32Array>()),
            Arc::new(rows.clone().map(|i| Some(-(scattered(i) as i16))).collect::<Int16Array>()),
            Arc::new(rows.clone().map(|i| (i % 7 != 0).then(|| 1_730_000_000_000_000_000 + (i * 37 % 1000) as i64 * 1_000_000_000)).collect::<TimestampNanosecondArray>()),
            Arc::new(rows.clone().map(|i| (i % 5 != 0).then(|| format!("row {i}"))).collect::<StringArray>()),
        ];
        RecordBatch::try_new(schema, columns).expect("batch")
    }
}
