//! Immutable, consistent views of the database. A reader holds an
//! `Arc<Snapshot>` for as long as it scans; writers publish new snapshots
//! and never change an old one.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef, UInt64Type};
use roaring::RoaringTreemap;

use crate::buffer::RowBuffer;
use crate::error::{Result, StorageError};
use crate::manifest::{SegmentRef, TableMeta};
use crate::segment::{ChunkStats, SegmentReader};
use crate::{Lsn, RowId, TableId, ROW_ID_COLUMN};

/// A live segment: what the manifest says of it and its open reader.
#[derive(Debug)]
pub(crate) struct Segment {
    pub sref: SegmentRef,
    pub reader: Arc<SegmentReader>,
}

/// The state of one table at one moment.
#[derive(Clone, Debug)]
pub struct TableSnapshot {
    pub meta: Arc<TableMeta>,
    pub(crate) segments: Vec<Arc<Segment>>,
    /// Committed rows not yet flushed, in the storage schema (`_row_id`
    /// first).
    pub(crate) buffer: RowBuffer,
    /// Deleted row ids whose bytes are still in a segment or the buffer.
    pub(crate) deleted: Arc<RoaringTreemap>,
    pub(crate) next_row_id: RowId,
}

impl TableSnapshot {
    pub(crate) fn new(meta: TableMeta, next_row_id: RowId) -> Self {
        TableSnapshot {
            meta: Arc::new(meta),
            segments: Vec::new(),
            buffer: RowBuffer::default(),
            deleted: Arc::new(RoaringTreemap::new()),
            next_row_id,
        }
    }

    /// The id the next appended row will get: rows with smaller ids are
    /// in this snapshot (or were deleted before it).
    pub fn next_row_id(&self) -> RowId {
        self.next_row_id
    }

    pub fn id(&self) -> TableId {
        self.meta.id
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Rows visible in this snapshot.
    pub fn row_count(&self) -> u64 {
        let stored: u64 = self.segments.iter().map(|s| s.sref.rows).sum::<u64>()
            + self.buffer.rows() as u64;
        stored.saturating_sub(self.deleted.len())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Rows stored in each segment, in order (deleted ones included).
    pub fn segment_rows(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.sref.rows).collect()
    }

    pub fn buffered_rows(&self) -> usize {
        self.buffer.rows()
    }

    pub fn deleted_count(&self) -> u64 {
        self.deleted.len()
    }

    /// Bytes of the table's segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.sref.bytes).sum()
    }

    /// The units a scan reads: every page of every row group of every
    /// segment, then every buffered batch. Each can be pruned by its
    /// statistics and read independently.
    pub fn scan_units(&self) -> Vec<ScanUnit> {
        let mut units = Vec::new();
        for seg in &self.segments {
            for (group, meta) in seg.reader.row_groups().iter().enumerate() {
                for page in 0..meta.page_count() {
                    // Row ids of one page need not be contiguous (concurrent
                    // commits interleave), so the count of deleted ids in its
                    // range proves "all deleted" only for a contiguous page.
                    let (lo, hi) = meta.page_row_ids(page);
                    let rows = meta.page_rows(page);
                    if hi - lo + 1 == rows && self.deleted.range_cardinality(lo..=hi) >= rows {
                        continue;
                    }
                    units.push(ScanUnit {
                        table: self.meta.clone(),
                        deleted: self.deleted.clone(),
                        source: UnitSource::Page { segment: seg.reader.clone(), group, page },
                    });
                }
            }
        }
        for batch in &self.buffer {
            units.push(ScanUnit {
                table: self.meta.clone(),
                deleted: self.deleted.clone(),
                source: UnitSource::Buffer(batch.clone()),
            });
        }
        units
    }
}

#[derive(Clone, Debug)]
enum UnitSource {
    /// One page of one row group of a segment.
    Page { segment: Arc<SegmentReader>, group: usize, page: usize },
    Buffer(RecordBatch),
}

/// One independently readable piece of a table.
#[derive(Clone, Debug)]
pub struct ScanUnit {
    table: Arc<TableMeta>,
    deleted: Arc<RoaringTreemap>,
    source: UnitSource,
}

impl ScanUnit {
    pub fn num_rows(&self) -> usize {
        match &self.source {
            UnitSource::Page { segment, group, page } => segment.row_groups()[*group].page_rows(*page) as usize,
            UnitSource::Buffer(b) => b.num_rows(),
        }
    }

    /// Statistics of a column, when the unit is a segment page that kept
    /// them. `None` means "unknown" (a scan must read the unit).
    pub fn stats(&self, column: &str) -> Option<&ChunkStats> {
        match &self.source {
            UnitSource::Page { segment, group, page } => {
                let col = segment.column_index(column)?;
                segment.row_groups()[*group].page_stats(*page, col)
            }
            UnitSource::Buffer(_) => None,
        }
    }

    /// Read `columns` (names from the table, `_row_id` allowed), without
    /// deleted rows. A column the unit predates comes back as nulls.
    pub fn read(&self, columns: &[String]) -> Result<RecordBatch> {
        let (rows, row_ids, mut arrays) = match &self.source {
            UnitSource::Page { segment, group, page } => self.read_page(segment, *group, *page, columns)?,
            UnitSource::Buffer(batch) => self.read_buffer(batch, columns)?,
        };
        let fields = columns
            .iter()
            .map(|name| self.field(name))
            .collect::<Result<Vec<_>>>()?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        let mut batch = RecordBatch::try_new_with_options(schema, std::mem::take(&mut arrays), &options)?;
        if let Some(ids) = row_ids {
            let keep: BooleanArray = ids
                .as_primitive::<UInt64Type>()
                .iter()
                .map(|id| Some(!id.is_some_and(|id| self.deleted.contains(id))))
                .collect();
            batch = arrow::compute::filter_record_batch(&batch, &keep)?;
        }
        Ok(batch)
    }

    fn field(&self, name: &str) -> Result<Field> {
        if name == ROW_ID_COLUMN {
            return Ok(Field::new(ROW_ID_COLUMN, arrow::datatypes::DataType::UInt64, false));
        }
        let c = self
            .table
            .columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| StorageError::NotFound { kind: "column", name: name.to_string() })?;
        Ok(Field::new(&c.name, c.data_type.clone(), c.nullable))
    }

    /// Returns (row count, row ids if deletes touch the unit, arrays).
    fn read_page(
        &self,
        segment: &SegmentReader,
        group: usize,
        page: usize,
        columns: &[String],
    ) -> Result<(usize, Option<ArrayRef>, Vec<ArrayRef>)> {
        let meta = &segment.row_groups()[group];
        let rows = meta.page_rows(page) as usize;
        let (lo, hi) = meta.page_row_ids(page);
        let touched = self.deleted.range_cardinality(lo..=hi) > 0;
        let row_ids = if touched { Some(segment.read_page(group, page, 0)?) } else { None };
        let mut arrays = Vec::with_capacity(columns.len());
        for name in columns {
            let array = match (name == ROW_ID_COLUMN, &row_ids, segment.column_index(name)) {
                (true, Some(ids), _) => ids.clone(),
                (_, _, Some(col)) => segment.read_page(group, page, col)?,
                (_, _, None) => new_null_array(&self.field(name)?.data_type().clone(), rows),
            };
            arrays.push(array);
        }
        Ok((rows, row_ids, arrays))
    }

    fn read_buffer(&self, batch: &RecordBatch, columns: &[String]) -> Result<(usize, Option<ArrayRef>, Vec<ArrayRef>)> {
        let ids = batch.column(0).clone();
        let touched = match (ids.as_primitive::<UInt64Type>().iter().flatten().min(), ids.as_primitive::<UInt64Type>().iter().flatten().max()) {
            (Some(lo), Some(hi)) => self.deleted.range_cardinality(lo..=hi) > 0,
            _ => false,
        };
        let mut arrays = Vec::with_capacity(columns.len());
        for name in columns {
            let array = match batch.schema().index_of(name) {
                Ok(i) => batch.column(i).clone(),
                Err(_) => new_null_array(self.field(name)?.data_type(), batch.num_rows()),
            };
            arrays.push(array);
        }
        Ok((batch.num_rows(), touched.then_some(ids), arrays))
    }
}

/// The whole database at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) lsn: Lsn,
    pub(crate) tables: BTreeMap<TableId, Arc<TableSnapshot>>,
    pub(crate) metadata: Arc<BTreeMap<String, String>>,
}

impl Snapshot {
    pub(crate) fn empty() -> Self {
        Snapshot { lsn: 0, tables: BTreeMap::new(), metadata: Arc::new(BTreeMap::new()) }
    }

    /// The LSN of the last transaction this snapshot includes.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    pub fn table(&self, name: &str) -> Option<&Arc<TableSnapshot>> {
        self.tables.values().find(|t| t.meta.name == name)
    }

    pub fn table_by_id(&self, id: TableId) -> Option<&Arc<TableSnapshot>> {
        self.tables.get(&id)
    }

    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableSnapshot>> {
        self.tables.values()
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}
