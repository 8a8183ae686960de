//! Pages: how one page of one column is encoded (its stored form:
//! dictionary, plain or view strings, a byte-less sequence; the Arrow IPC
//! stream and its zstd frame), decoded back, and summarized by statistics.
//! The segment file around pages is `segment.rs`'s.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, MAX_INLINE_VIEW_LEN};
use arrow::compute::kernels::aggregate;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, UInt16Type, UInt64Type, UInt8Type};

use super::{ChunkStats, PageEncoding, PageMeta, SegmentFormat, StatValue, MAX_STAT_STRING_BYTES};
use crate::codec::encode_batch;
use crate::error::{Result, StorageError};

/// The stored bytes of one page, its decoded length, its statistics and
/// how the bytes hold the values.
pub(super) fn encode_page(format: SegmentFormat, path: &Path, field: &Field, column: &ArrayRef) -> Result<(Vec<u8>, u64, ChunkStats, PageEncoding)> {
    if let Some(encoding) = sequence_form(column) {
        let stats = sequence_stats(column).unwrap_or_else(|| compute_stats(column));
        return Ok((Vec::new(), 0, stats, encoding));
    }
    if let Some(packed) = super::packed::pack(column) {
        return Ok((packed.bytes, packed.raw_len, packed.stats, PageEncoding::Packed));
    }
    if let Some(dictionary) = dictionary_form(column) {
        if let Some((bytes, raw_len)) = dictionary_page(format, path, &dictionary)? {
            return Ok((bytes, raw_len, dictionary.stats(), PageEncoding::Dictionary));
        }
    }
    let stored = plain_form(column);
    // From the stored form: comparing plain strings is cheaper than
    // comparing views, and it holds the same values.
    let stats = compute_stats(&stored);
    let field = field.clone().with_data_type(stored.data_type().clone());
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![stored])?;
    let raw = encode_batch(&batch)?;
    let raw_len = raw.len() as u64;
    Ok((compressed(format, path, raw)?, raw_len, stats, PageEncoding::Ipc))
}

/// An IPC stream as its chunk stores it: zstd-compressed at the format's
/// level, or as is at level 0.
fn compressed(format: SegmentFormat, path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if format.zstd_level == 0 {
        return Ok(raw);
    }
    compress(&raw, format.zstd_level).map_err(|e| StorageError::io(path, e))
}

/// Key widths of a dictionary page, as its first byte says.
const DICTIONARY_KEYS_U8: u8 = 1;
const DICTIONARY_KEYS_U16: u8 = 2;

/// A dictionary page's bytes (FORMAT.md): its keys packed, its distinct
/// values an IPC stream through zstd. zstd took longer over the keys,
/// one or two bytes a row, than over the values themselves, and found
/// less in them than packing does (runs of a session's cookie, a few bits
/// for a handful of event types). None when the keys cannot be packed
/// (the page is then stored plain).
fn dictionary_page(format: SegmentFormat, path: &Path, dictionary: &PageDictionary) -> Result<Option<(Vec<u8>, u64)>> {
    let code = match dictionary.keys.data_type() {
        DataType::UInt8 => DICTIONARY_KEYS_U8,
        DataType::UInt16 => DICTIONARY_KEYS_U16,
        _ => return Ok(None),
    };
    let Some(keys) = super::packed::pack(&dictionary.keys) else { return Ok(None) };
    let values = dictionary.values.clone();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("values", DataType::Utf8, false)])), vec![values])?;
    let raw = encode_batch(&batch)?;
    let values_raw_len = raw.len() as u64;
    let values_bytes = compressed(format, path, raw)?;
    let (Ok(keys_len), Ok(values_len)) = (u32::try_from(keys.bytes.len()), u32::try_from(values_raw_len)) else { return Ok(None) };
    let mut out = Vec::with_capacity(9 + keys.bytes.len() + values_bytes.len());
    out.push(code);
    out.extend_from_slice(&keys_len.to_le_bytes());
    out.extend_from_slice(&keys.bytes);
    out.extend_from_slice(&values_len.to_le_bytes());
    out.extend_from_slice(&values_bytes);
    // The pair of the reader's checks: what was written reads back.
    debug_assert!(
        dictionary.to_array().is_some_and(|stored| {
            decode_dictionary_page(&out, stored.len() as u64, format.zstd_level != 0).is_ok_and(|back| back.as_ref() == stored.as_ref())
        }),
        "a dictionary page does not read back"
    );
    Ok(Some((out, keys.raw_len + values_raw_len)))
}

/// The dictionary array a dictionary page holds (`rows` rows; its values
/// compressed as its chunk says).
pub(super) fn decode_dictionary_page(bytes: &[u8], rows: u64, compressed: bool) -> std::result::Result<ArrayRef, String> {
    use arrow::array::{DictionaryArray, UInt16Array, UInt8Array};
    let u32_at = |b: &[u8], what: &str| -> std::result::Result<u32, String> {
        let word: [u8; 4] = b.get(..4).and_then(|w| w.try_into().ok()).ok_or_else(|| format!("dictionary page ends inside its {what}"))?;
        Ok(u32::from_le_bytes(word))
    };
    let (&code, rest) = bytes.split_first().ok_or("empty dictionary page")?;
    let keys_len = u32_at(rest, "keys length")? as usize;
    let rest = &rest[4..];
    if keys_len > rest.len() {
        return Err("dictionary page ends inside its keys".into());
    }
    let (keys_bytes, rest) = rest.split_at(keys_len);
    let values_raw_len = u32_at(rest, "values length")?;
    let values_bytes = &rest[4..];
    let values = if compressed { decompress(values_bytes, u64::from(values_raw_len))? } else { values_bytes.to_vec() };
    if values.len() != values_raw_len as usize {
        return Err(format!("dictionary page's values take {} bytes, not {values_raw_len}", values.len()));
    }
    let batch = crate::codec::decode_batch(&values)?;
    let values = match batch.columns() {
        [values] if values.data_type() == &DataType::Utf8 && values.null_count() == 0 => values.clone(),
        _ => return Err("dictionary page's values are not one column of strings".into()),
    };
    let array: ArrayRef = match code {
        DICTIONARY_KEYS_U8 => {
            let keys = super::packed::unpack(keys_bytes, rows, &DataType::UInt8)?;
            let keys = keys.as_any().downcast_ref::<UInt8Array>().ok_or("dictionary page's keys are not bytes")?;
            Arc::new(DictionaryArray::try_new(keys.clone(), values).map_err(|e| format!("dictionary page: {e}"))?)
        }
        DICTIONARY_KEYS_U16 => {
            let keys = super::packed::unpack(keys_bytes, rows, &DataType::UInt16)?;
            let keys = keys.as_any().downcast_ref::<UInt16Array>().ok_or("dictionary page's keys are not 16-bit")?;
            Arc::new(DictionaryArray::try_new(keys.clone(), values).map_err(|e| format!("dictionary page: {e}"))?)
        }
        other => return Err(format!("dictionary page has unknown key width code {other}")),
    };
    Ok(array)
}

/// The sequence a 64-bit integer page without nulls steps through, if its
/// values step evenly (row ids always do within a commit; compressing
/// them cost a tenth of a load's compression).
pub(super) fn sequence_form(column: &ArrayRef) -> Option<PageEncoding> {
    fn evenly<T: Copy + PartialEq>(values: &[T], as_bits: impl Fn(T) -> u64) -> Option<PageEncoding> {
        let start = as_bits(*values.first()?);
        let step = values.get(1).map_or(0, |&second| as_bits(second).wrapping_sub(start));
        let fits = values.iter().enumerate().all(|(i, &v)| as_bits(v) == sequence_value(start, step, i));
        fits.then_some(PageEncoding::Sequence { start, step })
    }
    if column.null_count() > 0 {
        return None;
    }
    match column.data_type() {
        DataType::UInt64 => evenly(column.as_primitive::<UInt64Type>().values(), |v| v),
        DataType::Int64 => evenly(column.as_primitive::<Int64Type>().values(), |v| v as u64),
        _ => None,
    }
}

/// The statistics of a sequence page from its ends, when it does not
/// wrap around (row ids and commit times never do): its first and last
/// values are then its bounds, and no pass over the rows is needed.
fn sequence_stats(column: &ArrayRef) -> Option<ChunkStats> {
    fn ends<T: Copy + Into<i128>>(values: &[T]) -> Option<(i128, i128)> {
        let (first, last) = ((*values.first()?).into(), (*values.last()?).into());
        let step = values.get(1).map_or(0, |&second| second.into() - first);
        // Exact in 128 bits: equal to the last value only without wrapping.
        (first + step * (values.len() as i128 - 1) == last).then_some((first.min(last), first.max(last)))
    }
    if column.null_count() > 0 {
        return None;
    }
    let (min, max) = match column.data_type() {
        DataType::UInt64 => {
            let (lo, hi) = ends(column.as_primitive::<UInt64Type>().values())?;
            (StatValue::UInt(u64::try_from(lo).ok()?), StatValue::UInt(u64::try_from(hi).ok()?))
        }
        DataType::Int64 => {
            let (lo, hi) = ends(column.as_primitive::<Int64Type>().values())?;
            (StatValue::Int(i64::try_from(lo).ok()?), StatValue::Int(i64::try_from(hi).ok()?))
        }
        _ => return None,
    };
    Some(ChunkStats { null_count: 0, min: Some(min), max: Some(max) })
}

/// Value `i` of a sequence page, as the bits of the column's type (the
/// same wrapping arithmetic for signed and unsigned: two's complement).
pub(super) fn sequence_value(start: u64, step: u64, i: usize) -> u64 {
    start.wrapping_add(step.wrapping_mul(i as u64))
}

/// The values of a sequence page of `rows` rows, in the column's type.
pub(super) fn decode_sequence(start: u64, step: u64, rows: u64, ty: &DataType) -> std::result::Result<ArrayRef, String> {
    let values = (0..rows as usize).map(|i| sequence_value(start, step, i));
    match ty {
        DataType::UInt64 => Ok(Arc::new(arrow::array::UInt64Array::from_iter_values(values))),
        DataType::Int64 => Ok(Arc::new(arrow::array::Int64Array::from_iter_values(values.map(|v| v as i64)))),
        other => Err(format!("a sequence page in a column of type {other}")),
    }
}

thread_local! {
    /// One compression context per thread and level: creating one per
    /// page (tens of thousands per large load) showed in profiles.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

pub(super) fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, compressor)) => compressor.compress(raw),
            None => zstd::bulk::compress(raw, level),
        }
    })
}

/// How a page stores a column, as one array: its dictionary form, or
/// its plain form (tests look at it whole).
#[cfg(test)]
pub(super) fn stored_form(column: &ArrayRef) -> ArrayRef {
    dictionary_form(column).and_then(|d| d.to_array()).unwrap_or_else(|| plain_form(column))
}

/// How a page that is not a dictionary stores a column. String and
/// binary views with values longer than a view holds are stored as plain
/// strings and binaries (offsets and bytes): a view costs 16 bytes per
/// value to decompress against 4 for an offset, and repeats each value's
/// first bytes. Readers cast back to the column's type. Pages of short
/// values, and pages too large for 32-bit offsets, keep their views,
/// compacted: a slice of a view array references every data buffer of
/// the array it was cut from, and the IPC writer would write them all.
fn plain_form(column: &ArrayRef) -> ArrayRef {
    let plain = match column.data_type() {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        _ => return column.clone(),
    };
    if views_all_inline(column) {
        return compact_views(column);
    }
    if let Ok(cast) = arrow::compute::cast(column, &plain) {
        return cast;
    }
    compact_views(column)
}

/// Bytes per value of an integer type (0 for other types).
fn integer_width(t: &DataType) -> usize {
    match t {
        DataType::Int8 | DataType::UInt8 => 1,
        DataType::Int16 | DataType::UInt16 => 2,
        DataType::Int32 | DataType::UInt32 => 4,
        DataType::Int64 | DataType::UInt64 => 8,
        _ => 0,
    }
}

/// A narrowed integer page widened back to its column's type `want`:
/// None unless `page` is a narrower integer of the same signedness
/// (anything else in an integer column is corruption).
pub(super) fn widened(page: &ArrayRef, want: &DataType) -> Option<ArrayRef> {
    let signed = |t: &DataType| matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64);
    let (got, wanted) = (integer_width(page.data_type()), integer_width(want));
    if got == 0 || wanted == 0 || got >= wanted || signed(page.data_type()) != signed(want) {
        return None;
    }
    arrow::compute::cast(page, want).ok()
}

/// Rows sampled before a string page is judged too varied for a
/// dictionary, and the distinct values among them that judge it so.
const DICTIONARY_SAMPLE_ROWS: usize = 256;
const DICTIONARY_SAMPLE_MAX_DISTINCT: usize = 224;

/// A string page as a dictionary of its distinct values (in order of
/// first appearance) and one key per row, when it has few enough distinct
/// values: at most half its rows, and clearly fewer than its first rows
/// among the first rows. Categories, URLs and session cookies repeat: a
/// page of 1- or 2-byte keys and each value once takes a fraction of the
/// space, and of zstd's time (building the dictionary costs about what
/// that saves). A page of unique values (emails of contacts) is given up
/// on after its first rows.
pub(super) fn dictionary_form(column: &ArrayRef) -> Option<PageDictionary> {
    match column.data_type() {
        DataType::Utf8View => dictionary_of_views(column.as_string_view()),
        DataType::Utf8 => dictionary_of(column.as_string::<i32>(), column.nulls()),
        _ => None,
    }
}

pub(super) fn dictionary_of<'a>(values: impl arrow::array::ArrayAccessor<Item = &'a str>, nulls: Option<&arrow::buffer::NullBuffer>) -> Option<PageDictionary> {
    let rows = values.len();
    let most = (rows / 2).min(usize::from(u16::MAX));
    let mut index: hashbrown::HashMap<&str, u16> = hashbrown::HashMap::with_capacity(256);
    let mut distinct: Vec<&str> = Vec::new();
    let mut keys: Vec<u16> = Vec::with_capacity(rows);
    let mut previous: Option<(&str, u16)> = None;
    for row in 0..rows {
        if row == DICTIONARY_SAMPLE_ROWS && distinct.len() > DICTIONARY_SAMPLE_MAX_DISTINCT {
            return None;
        }
        if nulls.is_some_and(|n| n.is_null(row)) {
            keys.push(0);
            continue;
        }
        let value = values.value(row);
        // Runs of one value (a session's cookie) skip the hashing.
        if let Some((_, key)) = previous.filter(|(last, _)| *last == value) {
            keys.push(key);
            continue;
        }
        let key = match index.entry(value) {
            hashbrown::hash_map::Entry::Occupied(found) => *found.get(),
            hashbrown::hash_map::Entry::Vacant(slot) => {
                if distinct.len() >= most {
                    return None;
                }
                distinct.push(value);
                // `most` keeps every key within u16.
                *slot.insert((distinct.len() - 1) as u16)
            }
        };
        keys.push(key);
        previous = Some((value, key));
    }
    dictionary_array(&distinct, keys, nulls)
}

/// [`dictionary_of`] for a view column, keyed by the views themselves
/// where they hold the whole value (at most 12 bytes: categories, codes),
/// which hashes a 16-byte integer instead of text and never compares
/// bytes. Longer values are keyed by their text. Runs of one value are
/// noticed by [`same_view_value`].
pub(super) fn dictionary_of_views(array: &arrow::array::StringViewArray) -> Option<PageDictionary> {
    let (views, nulls) = (array.views(), array.nulls());
    let rows = views.len();
    let most = (rows / 2).min(usize::from(u16::MAX));
    let mut inline: hashbrown::HashMap<u128, u16> = hashbrown::HashMap::with_capacity(256);
    // Sized for a page of session cookies (a few rows each) from the
    // start: growing it step by step showed in load profiles.
    let long_values = (rows / 4).min(usize::from(u16::MAX));
    let mut long: hashbrown::HashMap<&str, u16> =
        hashbrown::HashMap::with_capacity(if views.first().is_some_and(|&v| (v as u32) > MAX_INLINE_VIEW_LEN) { long_values } else { 0 });
    let mut distinct: Vec<&str> = Vec::new();
    let mut keys: Vec<u16> = Vec::with_capacity(rows);
    // The previous non-NULL row's view and key: runs of one value (a
    // session's cookie, a campaign) skip the hashing.
    let mut previous: Option<(usize, u16)> = None;
    for (row, &view) in views.iter().enumerate() {
        if row == DICTIONARY_SAMPLE_ROWS && distinct.len() > DICTIONARY_SAMPLE_MAX_DISTINCT {
            return None;
        }
        if nulls.is_some_and(|n| n.is_null(row)) {
            keys.push(0);
            continue;
        }
        if let Some((last_row, key)) = previous {
            if same_view_value(array, last_row, row) {
                keys.push(key);
                continue;
            }
        }
        // `most` keeps every key within u16.
        let next = distinct.len() as u16;
        let (key, new) = if (view as u32) <= MAX_INLINE_VIEW_LEN {
            match inline.entry(view) {
                hashbrown::hash_map::Entry::Occupied(found) => (*found.get(), None),
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    slot.insert(next);
                    (next, Some(array.value(row)))
                }
            }
        } else {
            match long.entry(array.value(row)) {
                hashbrown::hash_map::Entry::Occupied(found) => (*found.get(), None),
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    let value = *slot.key();
                    slot.insert(next);
                    (next, Some(value))
                }
            }
        };
        if let Some(value) = new {
            if distinct.len() >= most {
                return None;
            }
            distinct.push(value);
        }
        keys.push(key);
        previous = Some((row, key));
    }
    dictionary_array(&distinct, keys, nulls)
}

/// Whether rows `a` and `b` of a view array (neither NULL) hold the same
/// value, reading text only when the views cannot tell: equal views are
/// equal values (a short value is its view; a long one the same bytes),
/// and views differing in length or first four bytes (their low 64 bits),
/// or holding short values, are different ones. Long values decoded one by
/// one sit at different offsets, so a run of one needs the text compared.
#[inline]
pub fn same_view_value(array: &arrow::array::StringViewArray, a: usize, b: usize) -> bool {
    let (x, y) = (array.views()[a], array.views()[b]);
    x == y || (x as u64 == y as u64 && (y as u32) > MAX_INLINE_VIEW_LEN && array.value(a) == array.value(b))
}

/// A page's values as a dictionary: each distinct value once, and a key
/// per row (1-byte keys up to 256 values, 2-byte beyond) carrying the
/// page's validity. Kept apart rather than as an Arrow dictionary array,
/// whose constructor checks every key again (0.9% of a load's
/// instructions): the keys index the values by construction.
pub(super) struct PageDictionary {
    keys: ArrayRef,
    values: ArrayRef,
}

impl PageDictionary {
    /// The page's statistics: its NULLs, and the bounds of its distinct
    /// values (exactly the page's values).
    fn stats(&self) -> ChunkStats {
        let (min, max) = min_max(&self.values).unwrap_or((None, None));
        ChunkStats { null_count: self.keys.null_count() as u64, min, max }
    }

    /// As an Arrow dictionary array (its keys checked), for the checks
    /// that compare it with what a page reads back.
    pub(super) fn to_array(&self) -> Option<ArrayRef> {
        use arrow::array::DictionaryArray;
        Some(match self.keys.data_type() {
            DataType::UInt8 => Arc::new(DictionaryArray::try_new(self.keys.as_primitive::<UInt8Type>().clone(), self.values.clone()).ok()?),
            DataType::UInt16 => Arc::new(DictionaryArray::try_new(self.keys.as_primitive::<UInt16Type>().clone(), self.values.clone()).ok()?),
            _ => return None,
        })
    }
}

/// The dictionary of `distinct` values and a key per row. None when
/// there are no values.
fn dictionary_array(distinct: &[&str], keys: Vec<u16>, nulls: Option<&arrow::buffer::NullBuffer>) -> Option<PageDictionary> {
    use arrow::array::{PrimitiveArray, StringArray};
    if distinct.is_empty() {
        return None;
    }
    let values: ArrayRef = Arc::new(StringArray::from_iter_values(distinct.iter()));
    let nulls = nulls.cloned();
    let keys: ArrayRef = if distinct.len() <= usize::from(u8::MAX) + 1 {
        Arc::new(PrimitiveArray::<UInt8Type>::new(keys.iter().map(|&k| k as u8).collect(), nulls))
    } else {
        Arc::new(PrimitiveArray::<UInt16Type>::new(keys.into(), nulls))
    };
    Some(PageDictionary { keys, values })
}

/// Whether every value of a view column sits inside its view: then the
/// views are the whole data, and short repeated values (categories,
/// codes) make repeated 16-byte views that compress far better than
/// offsets.
pub(super) fn views_all_inline(column: &ArrayRef) -> bool {
    let views = match column.data_type() {
        DataType::Utf8View => column.as_string_view().views(),
        DataType::BinaryView => column.as_binary_view().views(),
        _ => return false,
    };
    views.iter().all(|view| (*view as u32) <= MAX_INLINE_VIEW_LEN)
}

/// A view column holding only its own values' bytes.
pub(super) fn compact_views(column: &ArrayRef) -> ArrayRef {
    match column.data_type() {
        DataType::Utf8View => Arc::new(column.as_string_view().gc()),
        DataType::BinaryView => Arc::new(column.as_binary_view().gc()),
        _ => column.clone(),
    }
}

/// A chunk's statistics from its pages'. A page without a bound although
/// it holds values (a long string, a NaN, an unsupported type) leaves the
/// chunk without that bound too, as computing over the whole chunk would.
pub(super) fn merge_stats(pages: &[PageMeta]) -> ChunkStats {
    let null_count = pages.iter().map(|p| p.stats.null_count).sum();
    let with_values: Vec<&ChunkStats> = pages.iter().filter(|p| p.stats.null_count < p.rows).map(|p| &p.stats).collect();
    let bound = |pick: fn(&ChunkStats) -> Option<&StatValue>, better: fn(&StatValue, &StatValue) -> bool| {
        let mut best: Option<&StatValue> = None;
        for stats in &with_values {
            let value = pick(stats)?;
            best = match best {
                Some(b) if !better(value, b) => Some(b),
                _ => Some(value),
            };
        }
        best.cloned()
    };
    let min = bound(|s| s.min.as_ref(), stat_less);
    let max = bound(|s| s.max.as_ref(), |a, b| stat_less(b, a));
    match (min, max) {
        (Some(min), Some(max)) => ChunkStats { null_count, min: Some(min), max: Some(max) },
        _ => ChunkStats { null_count, min: None, max: None },
    }
}

/// Order of two bounds of the same family (pages of one column always
/// agree); bounds of different families never replace each other.
pub(super) fn stat_less(a: &StatValue, b: &StatValue) -> bool {
    match (a, b) {
        (StatValue::Int(a), StatValue::Int(b)) => a < b,
        (StatValue::UInt(a), StatValue::UInt(b)) => a < b,
        (StatValue::Float(a), StatValue::Float(b)) => a < b,
        (StatValue::Str(a), StatValue::Str(b)) => a < b,
        (StatValue::Bool(a), StatValue::Bool(b)) => !a & b,
        _ => false,
    }
}

pub(super) fn compute_stats(column: &ArrayRef) -> ChunkStats {
    let null_count = column.null_count() as u64;
    // A dictionary page's dictionary holds exactly its distinct values.
    let values = column.as_any_dictionary_opt().map_or(column, |d| d.values());
    let (min, max) = min_max(values).unwrap_or((None, None));
    ChunkStats { null_count, min, max }
}

type MinMax = (Option<StatValue>, Option<StatValue>);

pub(super) fn min_max(column: &ArrayRef) -> Option<MinMax> {
    use DataType::*;
    match column.data_type() {
        // 64-bit values are read in place, both bounds in one pass: a cast
        // would copy the page first (timestamps, node ids).
        Int64 | Date64 | Timestamp(_, _) | Time64(_) | Duration(_) => {
            let data = column.to_data();
            let values = data.buffer::<i64>(0).get(..data.len())?;
            let (min, max) = bounds(values, column.nulls()).unzip();
            Some((min.map(StatValue::Int), max.map(StatValue::Int)))
        }
        UInt64 => {
            let (min, max) = bounds(column.as_primitive::<UInt64Type>().values(), column.nulls()).unzip();
            Some((min.map(StatValue::UInt), max.map(StatValue::UInt)))
        }
        Int8 | Int16 | Int32 | Date32 | Time32(_) => {
            let c = arrow::compute::cast(column, &Int64).ok()?;
            let c = c.as_primitive::<Int64Type>();
            Some((aggregate::min(c).map(StatValue::Int), aggregate::max(c).map(StatValue::Int)))
        }
        UInt8 | UInt16 | UInt32 => {
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
            let keep = |s: &str| (s.len() <= MAX_STAT_STRING_BYTES).then(|| StatValue::Str(s.to_string()));
            let (min, max) = match column.data_type() {
                Utf8View => {
                    let c = column.as_string_view();
                    (aggregate::min_string_view(c).and_then(keep), aggregate::max_string_view(c).and_then(keep))
                }
                _ => {
                    let c = arrow::compute::cast(column, &Utf8).ok()?;
                    let c = c.as_string::<i32>();
                    (aggregate::min_string(c).and_then(keep), aggregate::max_string(c).and_then(keep))
                }
            };
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

/// The smallest and largest non-NULL value of a slice (`nulls` its
/// validity), in one pass; None when every value is NULL. With NULLs the
/// validity is read 64 rows at a time: a word of valid rows folds its
/// slice like a page without NULLs, an empty one is skipped, and only the
/// others go bit by bit. Integer pages take their statistics from packing
/// (`packed.rs`); this serves sequences that wrap around, and tests as the
/// reference packing's statistics are checked against.
fn bounds<T: Copy + PartialOrd>(values: &[T], nulls: Option<&arrow::buffer::NullBuffer>) -> Option<(T, T)> {
    fn fold<T: Copy + PartialOrd>(mut values: impl Iterator<Item = T>) -> Option<(T, T)> {
        let first = values.next()?;
        Some(values.fold((first, first), |(lo, hi), v| (if v < lo { v } else { lo }, if v > hi { v } else { hi })))
    }
    fn widen<T: Copy + PartialOrd>(acc: Option<(T, T)>, part: Option<(T, T)>) -> Option<(T, T)> {
        match (acc, part) {
            (Some((lo, hi)), Some((l, h))) => Some((if l < lo { l } else { lo }, if h > hi { h } else { hi })),
            (acc, None) => acc,
            (None, part) => part,
        }
    }
    let Some(nulls) = nulls.filter(|n| n.null_count() > 0) else {
        return fold(values.iter().copied());
    };
    let mut acc = None;
    for (i, word) in nulls.inner().bit_chunks().iter_padded().enumerate() {
        let base = i * 64;
        let part = match word {
            0 => None,
            u64::MAX => fold(values.get(base..base + 64)?.iter().copied()),
            mut bits => {
                let mut part = None;
                while bits != 0 {
                    let v = *values.get(base + bits.trailing_zeros() as usize)?;
                    part = widen(part, Some((v, v)));
                    bits &= bits - 1;
                }
                part
            }
        };
        acc = widen(acc, part);
    }
    acc
}

thread_local! {
    /// A decompression context per thread: creating one per page costs
    /// as much as decompressing a small page.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Decompress a zstd page of `raw_len` decoded bytes.
pub(super) fn decompress(bytes: &[u8], raw_len: u64) -> std::result::Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let Some(decompressor) = cell.as_mut() else { return Err("no zstd decompressor".to_string()) };
        decompressor.decompress(bytes, raw_len as usize).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray, UInt32Array, UInt64Array};
    use arrow::datatypes::UInt32Type;
    use proptest::strategy::Strategy;
    proptest::proptest! {
        /// A view page's dictionary is the one its text gives: the same
        /// values in the same order and the same keys, or none alike
        /// (too varied, too many values), whether its values are short or
        /// long, repeated in runs, decoded one by one or sharing bytes
        /// (taken from one array), NULL or sliced.
        #[test]
        fn view_dictionaries_are_those_of_the_text(
            picks in proptest::collection::vec(proptest::option::weighted(0.85, 0usize..40), 1..700),
            run in 1usize..6,
            pool_size in 1usize..40,
            shared in proptest::bool::ANY,
            offset in 0usize..3,
        ) {
            use arrow::array::{StringArray, StringViewArray};
            let words: Vec<String> = (0..40)
                .map(|i| if i % 3 == 0 { format!("w{i}") } else { format!("a value longer than a view, number {i:04}") })
                .collect();
            let rows: Vec<Option<usize>> = picks.iter().flat_map(|p| std::iter::repeat_n(p.map(|p| p % pool_size), run)).collect();
            let views: StringViewArray = if shared {
                let pool: StringViewArray = words.iter().map(|w| Some(w.as_str())).collect();
                let indices = UInt32Array::from(rows.iter().map(|r| r.map(|r| r as u32)).collect::<Vec<_>>());
                arrow::compute::take(&pool, &indices, None).expect("take").as_string_view().clone()
            } else {
                rows.iter().map(|r| r.map(|r| words[r].as_str())).collect()
            };
            let views = views.slice(offset.min(views.len() - 1), views.len() - offset.min(views.len() - 1));
            let text: StringArray = views.iter().collect();
            let got = dictionary_of_views(&views).map(|d| (d.keys, d.values));
            let want = dictionary_of(&text, text.nulls()).map(|d| (d.keys, d.values));
            proptest::prop_assert_eq!(got, want);
        }
    }


    /// A sequence page's statistics from its ends equal those of a pass
    /// over its rows, wrapping sequences left to the pass.
    #[test]
    fn sequence_statistics_are_its_ends() {
        // (page, whether its ends are its bounds: false when it wraps)
        let pages: Vec<(ArrayRef, bool)> = vec![
            (Arc::new(UInt64Array::from_iter_values((0..1000u64).map(|i| 7 + 3 * i))), true),
            (Arc::new(UInt64Array::from_iter_values((0..1000u64).map(|i| 5000 - 5 * i))), true),
            (Arc::new(UInt64Array::from_iter_values((0..1000u64).map(|i| (u64::MAX - 10).wrapping_add(i)))), false),
            (Arc::new(Int64Array::from_iter_values((0..1000i64).map(|i| -400 + i))), true),
            (Arc::new(Int64Array::from_iter_values((0..1000i64).map(|_| 1_764_000_000_000_000))), true),
            (Arc::new(Int64Array::from_iter_values((0..1000i64).map(|i| (i64::MAX - 500).wrapping_add(i)))), false),
            (Arc::new(UInt64Array::from_iter_values([42u64])), true),
        ];
        for (page, from_ends) in pages {
            assert!(sequence_form(&page).is_some(), "{page:?} is a sequence");
            assert_eq!(sequence_stats(&page).is_some(), from_ends, "{page:?}");
            if let Some(stats) = sequence_stats(&page) {
                assert_eq!(stats, compute_stats(&page), "{page:?}");
            }
        }
    }

    /// Every row can hold a page's bound, whichever word of the validity
    /// it falls in (all valid, mostly valid, mostly NULL, the last and
    /// partial one) and wherever the slice starts: random values rarely
    /// put a bound on a given row.
    #[test]
    fn bounds_see_every_row() {
        const ROWS: usize = 230;
        // Mostly valid words (one NULL, in several words) and mostly NULL
        // ones (every 16th row valid, besides the two bounds).
        for (null_at, sparse) in [(3, false), (70, false), (130, false), (215, false), (0, true)] {
            for extreme in 0..ROWS {
                let other = (extreme + 101) % ROWS;
                let valid = |i: usize| if sparse { i % 16 == 5 || i == extreme || i == other } else { i != null_at };
                let values: Vec<Option<i64>> = (0..ROWS)
                    .map(|i| match i {
                        _ if !valid(i) => None,
                        _ if i == extreme => Some(1_000),
                        _ if i == other => Some(-1_000),
                        _ => Some(i as i64),
                    })
                    .collect();
                let column: ArrayRef = Arc::new(Int64Array::from(values));
                for start in [0, 1, 64] {
                    let page = column.slice(start, ROWS - start);
                    let in_page = |row: usize| row >= start && valid(row);
                    let (lo, hi) = min_max(&page).expect("an integer page has bounds");
                    assert_eq!(hi == Some(StatValue::Int(1_000)), in_page(extreme), "max at {extreme}, start {start}, null at {null_at}, sparse {sparse}");
                    assert_eq!(lo == Some(StatValue::Int(-1_000)), in_page(other), "min at {other}, start {start}, null at {null_at}, sparse {sparse}");
                    // The other rows' values are bounds when the extremes are not in the page.
                    let (Some(StatValue::Int(lo)), Some(StatValue::Int(hi))) = (lo, hi) else { panic!("integer bounds") };
                    let rows: Vec<i64> = (start..ROWS).filter(|r| valid(*r)).map(|r| match r {
                        _ if r == extreme => 1_000,
                        _ if r == other => -1_000,
                        _ => r as i64,
                    }).collect();
                    assert_eq!((lo, hi), (*rows.iter().min().expect("rows"), *rows.iter().max().expect("rows")));
                }
            }
        }
    }

    proptest::proptest! {
        /// The one-pass bounds of 64-bit pages are what Arrow's min and max
        /// kernels give, for slices starting anywhere (pages are slices of
        /// a row group) and with NULLs (from none to all, so that words of
        /// 64 valid rows, of none and of some all occur), timestamps
        /// included.
        #[test]
        fn bounds_match_the_kernels(
            values in proptest::sample::select(vec![0.001, 0.02, 0.5, 0.98, 0.999])
                .prop_flat_map(|valid| proptest::collection::vec(proptest::option::weighted(valid, proptest::num::i64::ANY), 1..300)),
            start in 0usize..300,
            len in 0usize..300,
        ) {
            let start = start % values.len();
            let len = len.min(values.len() - start);
            let signed: ArrayRef = Arc::new(Int64Array::from(values.clone()));
            let stamps: ArrayRef = Arc::new(TimestampMicrosecondArray::from(values.clone()).with_timezone("UTC"));
            let unsigned: ArrayRef = Arc::new(values.iter().map(|v| v.map(|v| v as u64)).collect::<UInt64Array>());
            for column in [signed, stamps] {
                let page = column.slice(start, len);
                let plain = arrow::compute::cast(&page, &DataType::Int64).expect("cast");
                let plain = plain.as_primitive::<Int64Type>();
                let want = (aggregate::min(plain).map(StatValue::Int), aggregate::max(plain).map(StatValue::Int));
                proptest::prop_assert_eq!(min_max(&page), Some(want));
            }
            let page = unsigned.slice(start, len);
            let typed = page.as_primitive::<UInt64Type>();
            let want = (aggregate::min(typed).map(StatValue::UInt), aggregate::max(typed).map(StatValue::UInt));
            proptest::prop_assert_eq!(min_max(&page), Some(want));
            // Narrower unsigned pages (dictionary keys, link masks) too.
            let narrow: ArrayRef = Arc::new(values.iter().map(|v| v.map(|v| v as u32)).collect::<UInt32Array>());
            let page = narrow.slice(start, len);
            let typed = page.as_primitive::<UInt32Type>();
            let want = (aggregate::min(typed).map(|v| StatValue::UInt(v.into())), aggregate::max(typed).map(|v| StatValue::UInt(v.into())));
            proptest::prop_assert_eq!(min_max(&page), Some(want));
            for ty in [DataType::UInt16, DataType::UInt8] {
                let page = arrow::compute::cast(&narrow, &ty).expect("narrowing cast").slice(start, len);
                let wide = arrow::compute::cast(&page, &DataType::UInt64).expect("widening cast");
                let wide = wide.as_primitive::<UInt64Type>();
                let want = (aggregate::min(wide).map(StatValue::UInt), aggregate::max(wide).map(StatValue::UInt));
                proptest::prop_assert_eq!(min_max(&page), Some(want), "{}", ty);
            }
        }
    }
}
