//! Column buffers for one chunk of generated rows, and their conversion to
//! CSV text and Arrow record batches.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::schema::{SqlType, TableSpec, CRM, LOYALTY, POS, SUBSCRIBERS, TABLE_COUNT, WEB};
use crate::time::push_timestamp;
use crate::Error;

/// Sequentially numbered identifier spaces. Numbers are assigned in file
/// order when a chunk is written, so they are dense and start at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seq {
    Contact = 0,
    Subscriber = 1,
    Member = 2,
    Order = 3,
    User = 4,
}

pub(crate) const SEQ_COUNT: usize = 5;

impl Seq {
    fn prefix(self) -> &'static [u8] {
        match self {
            Seq::Contact => b"C",
            Seq::Subscriber => b"S",
            Seq::Member => b"L",
            Seq::Order => b"O",
            Seq::User => b"U",
        }
    }

    fn width(self) -> usize {
        match self {
            Seq::Order => 9,
            _ => 7,
        }
    }
}

/// NULL marker for [`Col::Ref`] values.
pub(crate) const NULL_REF: u32 = u32::MAX;
/// NULL marker for nullable timestamps.
pub(crate) const NULL_TS: i64 = i64::MIN;

#[derive(Default)]
pub(crate) struct TextCol {
    data: Vec<u8>,
    ends: Vec<u32>,
    valid: Vec<bool>,
}

impl TextCol {
    fn push(&mut self, s: &str) {
        self.data.extend_from_slice(s.as_bytes());
        self.ends.push(self.data.len() as u32);
        self.valid.push(true);
    }

    fn push_null(&mut self) {
        self.ends.push(self.data.len() as u32);
        self.valid.push(false);
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        if !self.valid[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.data[start..self.ends[i] as usize])
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// One column's values for a chunk.
pub(crate) enum Col {
    Text(TextCol),
    /// The row's own sequential id: `base + row + 1`.
    RowId(Seq),
    /// A reference to a chunk-local sequential id (`NULL_REF` = NULL).
    Ref(Seq, Vec<u32>),
    Int(Vec<i64>),
    /// A DOUBLE holding an amount of money, stored as cents.
    Cents(Vec<i64>),
    Bool(Vec<bool>),
    /// Unix seconds (`NULL_TS` = NULL).
    Ts(Vec<i64>),
}

impl Col {
    fn len(&self) -> Option<usize> {
        match self {
            Col::Text(c) => Some(c.len()),
            Col::RowId(_) => None,
            Col::Ref(_, v) => Some(v.len()),
            Col::Int(v) | Col::Cents(v) | Col::Ts(v) => Some(v.len()),
            Col::Bool(v) => Some(v.len()),
        }
    }
}

/// The rows of one table generated for one chunk, with each row's true
/// person id.
pub(crate) struct TableBuf {
    pub(crate) cols: Vec<Col>,
    pub(crate) persons: Vec<u64>,
}

/// Columns whose values are sequential ids (their own or references).
fn seq_column(table: usize, col: usize) -> Option<Col> {
    Some(match (table, col) {
        (CRM, 0) => Col::RowId(Seq::Contact),
        (SUBSCRIBERS, 0) => Col::RowId(Seq::Subscriber),
        (LOYALTY, 0) => Col::RowId(Seq::Member),
        (POS, 0) => Col::RowId(Seq::Order),
        (POS, 1) => Col::Ref(Seq::Member, Vec::new()),
        (WEB, 1) => Col::Ref(Seq::User, Vec::new()),
        _ => return None,
    })
}

impl TableBuf {
    pub(crate) fn new(table: usize, spec: &TableSpec) -> TableBuf {
        let cols = spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                seq_column(table, i).unwrap_or_else(|| match c.sql_type {
                    SqlType::Text => Col::Text(TextCol::default()),
                    SqlType::BigInt => Col::Int(Vec::new()),
                    SqlType::Double => Col::Cents(Vec::new()),
                    SqlType::Boolean => Col::Bool(Vec::new()),
                    SqlType::Timestamp => Col::Ts(Vec::new()),
                })
            })
            .collect();
        TableBuf {
            cols,
            persons: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.persons.len()
    }

    /// Starts a row for `person`; the caller then pushes every column once,
    /// in order.
    #[inline]
    pub(crate) fn row(&mut self, person: u64) -> RowWriter<'_> {
        self.persons.push(person);
        RowWriter {
            cols: &mut self.cols,
            next: 0,
        }
    }

    /// Checks that every column has one value per row.
    pub(crate) fn check(&self) -> bool {
        self.cols
            .iter()
            .all(|c| c.len().is_none_or(|n| n == self.persons.len()))
    }

    /// Appends all rows of `other` (same table).
    pub(crate) fn append(&mut self, other: TableBuf) {
        for (a, b) in self.cols.iter_mut().zip(other.cols) {
            match (a, b) {
                (Col::Text(a), Col::Text(b)) => {
                    let off = a.data.len() as u32;
                    a.data.extend_from_slice(&b.data);
                    a.ends.extend(b.ends.iter().map(|e| e + off));
                    a.valid.extend_from_slice(&b.valid);
                }
                (Col::RowId(_), Col::RowId(_)) => {}
                (Col::Ref(_, a), Col::Ref(_, b)) => a.extend_from_slice(&b),
                (Col::Int(a), Col::Int(b))
                | (Col::Cents(a), Col::Cents(b))
                | (Col::Ts(a), Col::Ts(b)) => a.extend_from_slice(&b),
                (Col::Bool(a), Col::Bool(b)) => a.extend_from_slice(&b),
                _ => debug_assert!(false, "column kind mismatch in append"),
            }
        }
        self.persons.extend_from_slice(&other.persons);
    }

    /// Stable-sorts the rows by the timestamp column `ts_col`.
    pub(crate) fn sort_by_time(&mut self, ts_col: usize) {
        let keys = match &self.cols[ts_col] {
            Col::Ts(v) => v.clone(),
            _ => return,
        };
        let mut perm: Vec<u32> = (0..keys.len() as u32).collect();
        perm.sort_by_key(|&i| keys[i as usize]);
        if perm.iter().enumerate().all(|(i, &p)| i as u32 == p) {
            return;
        }
        fn gather<T: Copy>(v: &[T], perm: &[u32]) -> Vec<T> {
            perm.iter().map(|&i| v[i as usize]).collect()
        }
        for c in &mut self.cols {
            match c {
                Col::Text(t) => {
                    let mut n = TextCol {
                        data: Vec::with_capacity(t.data.len()),
                        ends: Vec::with_capacity(t.ends.len()),
                        valid: Vec::with_capacity(t.valid.len()),
                    };
                    for &i in &perm {
                        match t.get(i as usize) {
                            Some(s) => {
                                n.data.extend_from_slice(s);
                                n.ends.push(n.data.len() as u32);
                                n.valid.push(true);
                            }
                            None => n.push_null(),
                        }
                    }
                    *t = n;
                }
                Col::RowId(_) => {}
                Col::Ref(_, v) => *v = gather(v, &perm),
                Col::Int(v) | Col::Cents(v) | Col::Ts(v) => *v = gather(v, &perm),
                Col::Bool(v) => *v = gather(v, &perm),
            }
        }
        self.persons = gather(&self.persons, &perm);
    }
}

/// Pushes the values of one row, column by column.
pub(crate) struct RowWriter<'a> {
    cols: &'a mut [Col],
    next: usize,
}

impl RowWriter<'_> {
    #[inline]
    fn col(&mut self) -> &mut Col {
        let i = self.next;
        self.next += 1;
        &mut self.cols[i]
    }

    /// A text value.
    #[inline]
    pub(crate) fn text(mut self, s: &str) -> Self {
        match self.col() {
            Col::Text(c) => c.push(s),
            _ => debug_assert!(false, "text pushed into a non-text column"),
        }
        self
    }

    /// A nullable text value.
    #[inline]
    pub(crate) fn opt_text(mut self, s: Option<&str>) -> Self {
        match self.col() {
            Col::Text(c) => match s {
                Some(s) => c.push(s),
                None => c.push_null(),
            },
            _ => debug_assert!(false, "text pushed into a non-text column"),
        }
        self
    }

    /// The row's own sequential id (no value is stored).
    #[inline]
    pub(crate) fn row_id(mut self) -> Self {
        let is_row_id = matches!(self.col(), Col::RowId(_));
        debug_assert!(is_row_id, "row id pushed into a value column");
        self
    }

    /// A reference to a chunk-local sequential id.
    #[inline]
    pub(crate) fn reference(mut self, r: Option<u32>) -> Self {
        match self.col() {
            Col::Ref(_, v) => v.push(r.unwrap_or(NULL_REF)),
            _ => debug_assert!(false, "reference pushed into a non-reference column"),
        }
        self
    }

    #[inline]
    pub(crate) fn int(mut self, x: i64) -> Self {
        match self.col() {
            Col::Int(v) | Col::Cents(v) => v.push(x),
            _ => debug_assert!(false, "int pushed into a non-int column"),
        }
        self
    }

    #[inline]
    pub(crate) fn boolean(mut self, b: bool) -> Self {
        match self.col() {
            Col::Bool(v) => v.push(b),
            _ => debug_assert!(false, "bool pushed into a non-bool column"),
        }
        self
    }

    /// A timestamp (Unix seconds) or `NULL_TS`.
    #[inline]
    pub(crate) fn ts(mut self, t: i64) -> Self {
        match self.col() {
            Col::Ts(v) => v.push(t),
            _ => debug_assert!(false, "timestamp pushed into a non-timestamp column"),
        }
        self
    }

    /// Ends the row.
    #[inline]
    pub(crate) fn done(self) {
        debug_assert_eq!(
            self.next,
            self.cols.len(),
            "row has the wrong number of values"
        );
    }
}

/// Where a chunk's rows start in each table and each sequential id space.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bases {
    pub(crate) rows: [u64; TABLE_COUNT],
    pub(crate) seq: [u64; SEQ_COUNT],
}

/// Appends the decimal digits of `x`.
#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, mut x: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[inline]
pub(crate) fn push_i64(out: &mut Vec<u8>, x: i64) {
    if x < 0 {
        out.push(b'-');
    }
    push_u64(out, x.unsigned_abs());
}

/// Appends a sequential id: prefix and zero-padded number.
#[inline]
fn push_seq(out: &mut Vec<u8>, seq: Seq, n: u64) {
    out.extend_from_slice(seq.prefix());
    let start = out.len();
    push_u64(out, n);
    let digits = out.len() - start;
    let width = seq.width();
    if digits < width {
        let pad = width - digits;
        out.splice(start..start, std::iter::repeat_n(b'0', pad));
    }
}

/// Appends an amount in cents as `d.dd`.
#[inline]
pub(crate) fn push_cents(out: &mut Vec<u8>, cents: i64) {
    if cents < 0 {
        out.push(b'-');
    }
    let c = cents.unsigned_abs();
    push_u64(out, c / 100);
    out.push(b'.');
    out.push(b'0' + (c % 100 / 10) as u8);
    out.push(b'0' + (c % 10) as u8);
}

/// Appends a CSV text field, quoting it (RFC 4180) if it contains a comma,
/// quote, CR or LF, has leading or trailing whitespace, or is empty (an
/// unquoted empty field means NULL).
#[inline]
pub(crate) fn push_csv_text(out: &mut Vec<u8>, s: &[u8]) {
    let needs_quotes = s.is_empty()
        || s[0] == b' '
        || s[0] == b'\t'
        || s[s.len() - 1] == b' '
        || s[s.len() - 1] == b'\t'
        || s.iter().any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs_quotes {
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Appends the CSV header line of a table.
pub(crate) fn csv_header(spec: &TableSpec, out: &mut Vec<u8>) {
    for (i, c) in spec.columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(c.name.as_bytes());
    }
    out.push(b'\n');
}

impl TableBuf {
    /// Appends the rows as CSV lines.
    pub(crate) fn write_csv(&self, bases: &Bases, out: &mut Vec<u8>) {
        for r in 0..self.len() {
            for (i, c) in self.cols.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match c {
                    Col::Text(t) => {
                        if let Some(s) = t.get(r) {
                            push_csv_text(out, s);
                        }
                    }
                    Col::RowId(seq) => push_seq(out, *seq, bases.seq[*seq as usize] + r as u64 + 1),
                    Col::Ref(seq, v) => {
                        if v[r] != NULL_REF {
                            push_seq(out, *seq, bases.seq[*seq as usize] + u64::from(v[r]) + 1)
                        }
                    }
                    Col::Int(v) => push_i64(out, v[r]),
                    Col::Cents(v) => push_cents(out, v[r]),
                    Col::Bool(v) => out.extend_from_slice(if v[r] { b"true" } else { b"false" }),
                    Col::Ts(v) => {
                        if v[r] != NULL_TS {
                            push_timestamp(out, v[r])
                        }
                    }
                }
            }
            out.push(b'\n');
        }
    }

    /// Converts the rows to an Arrow record batch with `schema`.
    pub(crate) fn to_record_batch(
        &self,
        bases: &Bases,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, Error> {
        let n = self.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.cols.len());
        for c in &self.cols {
            let a: ArrayRef = match c {
                Col::Text(t) => {
                    let mut offsets = Vec::with_capacity(n + 1);
                    offsets.push(0i32);
                    for &e in &t.ends {
                        let e = i32::try_from(e)
                            .map_err(|_| Error::Internal("text column too large".into()))?;
                        offsets.push(e);
                    }
                    let nulls = if t.valid.iter().all(|v| *v) {
                        None
                    } else {
                        Some(NullBuffer::from(t.valid.clone()))
                    };
                    Arc::new(StringArray::try_new(
                        OffsetBuffer::new(ScalarBuffer::from(offsets)),
                        t.data.clone().into(),
                        nulls,
                    )?)
                }
                Col::RowId(seq) => {
                    let mut b = StringBuilder::with_capacity(n, n * (seq.width() + 1));
                    let mut tmp = Vec::with_capacity(16);
                    for r in 0..n {
                        tmp.clear();
                        push_seq(&mut tmp, *seq, bases.seq[*seq as usize] + r as u64 + 1);
                        b.append_value(
                            std::str::from_utf8(&tmp)
                                .map_err(|e| Error::Internal(e.to_string()))?,
                        );
                    }
                    Arc::new(b.finish())
                }
                Col::Ref(seq, v) => {
                    let mut b = StringBuilder::with_capacity(n, n * (seq.width() + 1));
                    let mut tmp = Vec::with_capacity(16);
                    for &x in v {
                        if x == NULL_REF {
                            b.append_null();
                        } else {
                            tmp.clear();
                            push_seq(&mut tmp, *seq, bases.seq[*seq as usize] + u64::from(x) + 1);
                            b.append_value(
                                std::str::from_utf8(&tmp)
                                    .map_err(|e| Error::Internal(e.to_string()))?,
                            );
                        }
                    }
                    Arc::new(b.finish())
                }
                Col::Int(v) => Arc::new(Int64Array::from(v.clone())),
                Col::Cents(v) => Arc::new(Float64Array::from_iter_values(
                    v.iter().map(|&c| c as f64 / 100.0),
                )),
                Col::Bool(v) => Arc::new(BooleanArray::from(v.clone())),
                Col::Ts(v) => Arc::new(TimestampMicrosecondArray::from_iter(v.iter().map(|&t| {
                    if t == NULL_TS {
                        None
                    } else {
                        Some(t * 1_000_000)
                    }
                }))),
            };
            arrays.push(a);
        }
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }
}

/// The Arrow schema of a table.
pub fn arrow_schema(spec: &TableSpec) -> SchemaRef {
    let fields: Vec<Field> = spec
        .columns
        .iter()
        .map(|c| {
            let dt = match c.sql_type {
                SqlType::Text => DataType::Utf8,
                SqlType::BigInt => DataType::Int64,
                SqlType::Double => DataType::Float64,
                SqlType::Boolean => DataType::Boolean,
                SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            };
            Field::new(c.name, dt, c.nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let mut v = Vec::new();
        push_csv_text(&mut v, b"plain");
        v.push(b'|');
        push_csv_text(&mut v, b" Anna@X.com ");
        v.push(b'|');
        push_csv_text(&mut v, b"O'Brien, \"Jr\"");
        v.push(b'|');
        push_csv_text(&mut v, b"");
        assert_eq!(
            String::from_utf8_lossy(&v),
            "plain|\" Anna@X.com \"|\"O'Brien, \"\"Jr\"\"\"|\"\""
        );
        let mut v = Vec::new();
        push_seq(&mut v, Seq::Contact, 123);
        v.push(b' ');
        push_seq(&mut v, Seq::Order, 12_345_678_901);
        v.push(b' ');
        push_cents(&mut v, 1205);
        v.push(b' ');
        push_cents(&mut v, 7);
        assert_eq!(
            String::from_utf8_lossy(&v),
            "C0000123 O12345678901 12.05 0.07"
        );
    }
}
