//! PostgreSQL's COPY text format: one row per line, fields separated by a
//! delimiter (tab), `\N` for NULL, backslash escapes. Errors name the line.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::SchemaRef;
use tessera_storage::TableMeta;

/// Rows per batch.
pub(crate) const BATCH_ROWS: usize = 64 * 1024;

/// Parse rows; `first_line_no` is the number of the first line of `bytes`
/// in the whole input (errors name lines by it).
pub(crate) fn read(
    meta: &TableMeta,
    bytes: &[u8],
    columns: &SchemaRef,
    delimiter: u8,
    null: &str,
    first_line_no: usize,
) -> Result<Vec<RecordBatch>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not valid UTF-8: {e}"))?;
    let mut batches = Vec::new();
    let mut rows: Vec<Vec<Option<String>>> = Vec::with_capacity(BATCH_ROWS);
    let mut first_line = first_line_no;
    let total_lines = text.split('\n').count();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = first_line_no + i;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break; // end-of-data marker
        }
        if line.is_empty() && i + 1 == total_lines {
            break; // the newline after the last row
        }
        let fields = split_fields(line, delimiter as char, null).map_err(|e| format!("line {line_no}: {e}"))?;
        if fields.len() != columns.fields().len() {
            return Err(format!(
                "line {line_no}: expected {} fields, found {} (table '{}')",
                columns.fields().len(),
                fields.len(),
                meta.name
            ));
        }
        rows.push(fields);
        if rows.len() == BATCH_ROWS {
            batches.push(to_batch(&rows, columns, first_line)?);
            rows.clear();
            first_line = line_no + 1;
        }
    }
    if !rows.is_empty() {
        batches.push(to_batch(&rows, columns, first_line)?);
    }
    Ok(batches)
}

fn split_fields(line: &str, delimiter: char, null: &str) -> Result<Vec<Option<String>>, String> {
    let mut out = Vec::new();
    for raw in line.split(delimiter) {
        if raw == null {
            out.push(None);
            continue;
        }
        out.push(Some(unescape(raw)?));
    }
    Ok(out)
}

fn unescape(raw: &str) -> Result<String, String> {
    if !raw.contains('\\') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some('\\') => out.push('\\'),
            Some(other) => out.push(other),
            None => return Err("a backslash ends the field".into()),
        }
    }
    Ok(out)
}

fn to_batch(rows: &[Vec<Option<String>>], columns: &SchemaRef, first_line: usize) -> Result<RecordBatch, String> {
    let strict = CastOptions { safe: false, ..Default::default() };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.fields().len());
    for (c, field) in columns.fields().iter().enumerate() {
        let text: StringArray = rows.iter().map(|r| r[c].as_deref()).collect();
        let array = match cast_with_options(&text, field.data_type(), &strict) {
            Ok(a) => a,
            Err(e) => return Err(first_bad_value(&text, field, first_line).unwrap_or_else(|| e.to_string())),
        };
        arrays.push(array);
    }
    RecordBatch::try_new(columns.clone(), arrays).map_err(|e| e.to_string())
}

/// Find the first value of a column that does not convert, to name its line.
fn first_bad_value(text: &StringArray, field: &arrow::datatypes::Field, first_line: usize) -> Option<String> {
    let strict = CastOptions { safe: false, ..Default::default() };
    for i in 0..text.len() {
        if text.is_null(i) {
            continue;
        }
        let one: ArrayRef = Arc::new(text.slice(i, 1));
        if let Err(e) = cast_with_options(&one, field.data_type(), &strict) {
            return Some(format!(
                "line {}: value '{}' of column '{}' is not a valid {}: {e}",
                first_line + i,
                text.value(i),
                field.name(),
                field.data_type()
            ));
        }
    }
    None
}
