//! A table's committed rows not yet flushed to segments.
//!
//! Every commit publishes a new snapshot, so the buffer is copied on every
//! commit: it must be cheap to clone, and a stream of single-row inserts
//! must not leave one tiny batch per row behind. Tiny batches cost twice:
//! a batch built by a query engine often holds buffers sized for thousands
//! of rows (tens of kilobytes pinned for one row, counted against the
//! flush threshold), and every batch is a scan unit of its own.
//!
//! So the buffer coalesces as it grows, like a binary counter: a batch is
//! merged with the batches before it while they hold no more rows than it
//! does, up to [`COALESCED_ROWS`] rows. A stream of single rows leaves full
//! batches of that size followed by at most a logarithmic tail of smaller
//! ones; each row is copied a logarithmic number of times; a large append
//! is kept as it is. Batches are merged only when their row ids follow on
//! (one writer's commits), so each batch keeps a contiguous id range.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, UInt64Type};

use crate::error::{Result, StorageError};
use crate::RowId;

/// Rows up to which buffered batches are merged (a segment page's worth).
pub(crate) const COALESCED_ROWS: usize = 8_192;

#[derive(Clone, Debug, Default)]
pub(crate) struct RowBuffer {
    /// Oldest first; shared between snapshots until one of them appends.
    batches: Arc<Vec<RecordBatch>>,
    rows: usize,
    /// Arrow memory of the batches (what the flush threshold counts).
    bytes: usize,
}

impl RowBuffer {
    /// A buffer holding `batches` as they are (no merging).
    pub(crate) fn of(batches: Vec<RecordBatch>) -> RowBuffer {
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
        RowBuffer { batches: Arc::new(batches), rows, bytes }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, RecordBatch> {
        self.batches.iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Batches held (each is one scan unit).
    pub(crate) fn batch_count(&self) -> usize {
        self.batches.len()
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn clear(&mut self) {
        *self = RowBuffer::default();
    }

    /// Append a batch of stored rows (`_row_id` first, ids ascending),
    /// merging the tail as described in the module documentation. Merging
    /// is only an optimization: a batch it cannot handle (a type the Arrow
    /// kernels cannot concatenate) is kept as it came.
    pub(crate) fn push(&mut self, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let rows_before = self.rows;
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        let batches = Arc::make_mut(&mut self.batches);
        batches.push(batch);
        let last = batches.len() - 1;
        let first = merge_start(batches).unwrap_or(last);
        if first < last || batches[last].num_rows() < COALESCED_ROWS {
            // A small batch alone is copied too: its buffers may be sized
            // for far more rows than it holds.
            if let Ok(merged) = merge(&batches[first..]) {
                for b in batches.drain(first..) {
                    self.bytes = self.bytes.saturating_sub(b.get_array_memory_size());
                }
                self.bytes += merged.get_array_memory_size();
                batches.push(merged);
            }
        }
        debug_assert_eq!(self.rows, batches.iter().map(|b| b.num_rows()).sum::<usize>());
        debug_assert!(self.rows > rows_before);
    }
}

/// Index of the first batch the last one merges with (itself when none).
fn merge_start(batches: &[RecordBatch]) -> Result<usize> {
    let Some(last) = batches.last() else { return Err(StorageError::Internal("merging an empty buffer".into())) };
    let mut first = batches.len() - 1;
    let mut rows = last.num_rows();
    let mut range = contiguous_ids(last)?;
    while first > 0 {
        let prev = &batches[first - 1];
        let Some((lo, _)) = range else { break };
        let prev_range = contiguous_ids(prev)?;
        let follows = matches!(prev_range, Some((_, prev_hi)) if prev_hi.checked_add(1) == Some(lo));
        let fits = prev.num_rows() <= rows && prev.num_rows() + rows <= COALESCED_ROWS;
        if !(follows && fits && prev.schema() == last.schema()) {
            break;
        }
        first -= 1;
        rows += prev.num_rows();
        range = prev_range;
    }
    Ok(first)
}

/// The batch's row-id range when its ids are ascending without gaps.
fn contiguous_ids(batch: &RecordBatch) -> Result<Option<(RowId, RowId)>> {
    let ids = batch
        .column(0)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| StorageError::Internal("row id column is not UInt64".into()))?;
    let n = ids.len();
    if n == 0 || ids.null_count() > 0 {
        return Ok(None);
    }
    let (lo, hi) = (ids.value(0), ids.value(n - 1));
    // Ids of a batch are ascending by construction; equal ends and length
    // then prove there is no gap.
    Ok((hi >= lo && hi - lo + 1 == n as u64).then_some((lo, hi)))
}

/// One batch holding the rows of `batches` (same schema) in compact
/// buffers of their own.
fn merge(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let Some(first) = batches.first() else { return Err(StorageError::Internal("merging no batches".into())) };
    let schema = first.schema();
    let joined = if batches.len() == 1 {
        // Concatenating one batch would keep its buffers; `take` copies.
        let all = UInt32Array::from_iter_values(0..first.num_rows() as u32);
        arrow::compute::take_record_batch(first, &all)?
    } else {
        arrow::compute::concat_batches(&schema, batches)?
    };
    let columns: Vec<ArrayRef> = joined.columns().iter().map(own_view_data).collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// View arrays keep the data buffers of every array they were built from;
/// copy the values they use into one buffer.
fn own_view_data(column: &ArrayRef) -> ArrayRef {
    match column.data_type() {
        DataType::Utf8View if !column.as_string_view().data_buffers().is_empty() => Arc::new(column.as_string_view().gc()),
        DataType::BinaryView if !column.as_binary_view().data_buffers().is_empty() => Arc::new(column.as_binary_view().gc()),
        _ => column.clone(),
    }
}

impl<'a> IntoIterator for &'a RowBuffer {
    type Item = &'a RecordBatch;
    type IntoIter = std::slice::Iter<'a, RecordBatch>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringViewArray, UInt64Array};
    use arrow::datatypes::{Field, Schema, SchemaRef};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("_row_id", DataType::UInt64, false), Field::new("s", DataType::Utf8View, true)]))
    }

    fn batch(ids: std::ops::Range<u64>) -> RecordBatch {
        let strings: StringViewArray = ids.clone().map(|i| Some(format!("a value longer than a view {i}"))).collect();
        RecordBatch::try_new(schema(), vec![Arc::new(UInt64Array::from_iter_values(ids)), Arc::new(strings)]).expect("batch")
    }

    fn ids(buffer: &RowBuffer) -> Vec<u64> {
        buffer.iter().flat_map(|b| b.column(0).as_primitive::<UInt64Type>().values().to_vec()).collect()
    }

    /// Single rows coalesce into full batches plus a short tail, keep
    /// their order and values, and hold their own view data.
    #[test]
    fn single_rows_coalesce_into_few_batches() {
        let mut buffer = RowBuffer::default();
        for i in 0..20_000u64 {
            buffer.push(batch(i..i + 1));
            assert!(buffer.batch_count() <= 2 + (i + 1).ilog2() as usize + (i as usize + 1) / COALESCED_ROWS);
        }
        assert_eq!(ids(&buffer), (0..20_000).collect::<Vec<_>>());
        assert_eq!(buffer.rows(), 20_000);
        let full = buffer.iter().filter(|b| b.num_rows() == COALESCED_ROWS).count();
        assert_eq!(full, 2);
        let last = buffer.iter().last().expect("batches");
        let s = last.column(1).as_string_view();
        assert_eq!(s.value(s.len() - 1), "a value longer than a view 19999");
        for b in buffer.iter() {
            assert!(b.column(1).as_string_view().data_buffers().len() <= 1);
        }
        let bytes: usize = buffer.iter().map(|b| b.get_array_memory_size()).sum();
        assert_eq!(buffer.bytes(), bytes);
    }

    /// Batches whose ids do not follow on, or that are large, stay apart;
    /// a clone taken earlier never sees later appends.
    #[test]
    fn gaps_large_batches_and_old_clones_are_respected() {
        let mut buffer = RowBuffer::default();
        buffer.push(batch(0..1));
        let before = buffer.clone();
        buffer.push(batch(5..6));
        assert_eq!(buffer.batch_count(), 2, "ids 1..5 missing: no merge");
        buffer.push(batch(6..6 + COALESCED_ROWS as u64));
        assert_eq!(buffer.batch_count(), 3, "a full batch stays as it is");
        buffer.push(batch(3..4));
        assert_eq!(ids(&buffer).len(), 3 + COALESCED_ROWS);
        assert_eq!(ids(&before), vec![0]);
        assert_eq!(before.rows(), 1);
    }
}
