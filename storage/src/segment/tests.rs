//! Tests of segment files: pages of every form, written and read back,
//! and damaged ones reported.

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

/// Column `column` of row group 0 reads back as `want`, whole and page by
/// page (of `page_rows` rows), with each page's statistics, and the file
/// verifies.
fn assert_reads_back(reader: &SegmentReader, column: usize, want: &ArrayRef, page_rows: usize) {
    assert_eq!(reader.read_column(0, column).expect("read").as_ref(), want.as_ref());
    for page in 0..want.len().div_ceil(page_rows) {
        let slice = want.slice(page * page_rows, page_rows.min(want.len() - page * page_rows));
        assert_eq!(reader.read_page(0, page, column).expect("page").as_ref(), slice.as_ref());
        assert_eq!(reader.row_groups()[0].page_stats(page, column), Some(&compute_stats(&slice)));
    }
    reader.verify().expect("verify");
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
        assert_reads_back(&reader, 1, &column, 1000);
    }
}

/// A packed page that contradicts its footer is reported as corruption
/// naming its column.
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
        assert_reads_back(&reader, c, batch.column(c), 1000);
    }
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
        assert_reads_back(&reader, 1, &column, 1000);
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
