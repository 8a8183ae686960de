//! Packed integer pages (format version 3): the valid values of an
//! integer, date, time or timestamp page as fixed-width bit fields, after
//! the cheapest of three transforms, each with a common factor taken out:
//! a frame of reference (value minus the page's smallest), deltas of a
//! sorted page, or runs of one value. zstd spends its time per byte and
//! found little to take out of such pages (node ids, event times); bit
//! fields cost a few instructions a value, and with the factor (whole
//! seconds in nanosecond timestamps) and the deltas they take less space
//! than zstd did. FORMAT.md has the bytes.
//!
//! Values are handled as order-preserving unsigned keys: an unsigned
//! value is its own key, a signed one its two's complement bits with the
//! sign bit flipped, so that every transform is unsigned arithmetic.

use arrow::array::{make_array, Array, ArrayData, ArrayRef};
use arrow::buffer::Buffer;
use arrow::datatypes::DataType;

use super::{ChunkStats, StatValue};

const SIGN: u64 = 1 << 63;
/// Flag: a validity bitmap follows the header (the page has NULLs).
const HAS_NULLS: u8 = 1;
const FRAME: u8 = 0;
const DELTA: u8 = 1;
const RUNS: u8 = 2;
/// Form byte, flags byte, u32 rows, u32 count of values.
const HEADER_BYTES: usize = 10;
/// Leading values whose common factor is taken as the page's candidate
/// (then checked on every value): a gcd per value would cost a division
/// per value.
const FACTOR_SAMPLE: usize = 64;
/// Most rows a packed page may claim (a row group's; counts are u32).
const MAX_ROWS: u64 = u32::MAX as u64;

/// How a column type's values are stored: bytes per value and whether
/// they are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    width: usize,
    signed: bool,
}

/// The layout of a packed type; None for types that are not packed.
fn layout(t: &DataType) -> Option<Layout> {
    use DataType::*;
    let (width, signed) = match t {
        Int8 => (1, true),
        Int16 => (2, true),
        Int32 | Date32 | Time32(_) => (4, true),
        Int64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => (8, true),
        UInt8 => (1, false),
        UInt16 => (2, false),
        UInt32 => (4, false),
        UInt64 => (8, false),
        _ => return None,
    };
    Some(Layout { width, signed })
}

/// A packed page: its bytes, its decoded size (values and validity, as
/// Arrow holds them) and its statistics.
pub(super) struct Packed {
    pub bytes: Vec<u8>,
    pub raw_len: u64,
    pub stats: ChunkStats,
}

/// A page packed; None for types that are not packed.
pub(super) fn pack(column: &ArrayRef) -> Option<Packed> {
    let layout = layout(column.data_type())?;
    let rows = column.len();
    if rows as u64 > MAX_ROWS {
        return None;
    }
    let keys = valid_keys(column, layout)?;
    let nulls = column.nulls().filter(|n| n.null_count() > 0);
    let validity_len = rows.div_ceil(8);
    let mut out = Vec::with_capacity(HEADER_BYTES + validity_len + 32 + keys.len() * layout.width);
    let shape = Shape::of(&keys);
    let form = shape.as_ref().map_or(FRAME, |s| s.cheapest(&keys));
    out.push(form);
    out.push(if nulls.is_some() { HAS_NULLS } else { 0 });
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    if let Some(nulls) = nulls {
        let bits = nulls.inner().sliced();
        let start = out.len();
        out.extend_from_slice(bits.as_slice().get(..validity_len)?);
        // Bits past the last row are zero, so equal pages are equal bytes.
        if rows % 8 != 0 {
            if let Some(last) = out.last_mut() {
                *last &= (1u8 << (rows % 8)) - 1;
            }
        }
        debug_assert_eq!(out.len() - start, validity_len);
    }
    match &shape {
        None => write_frame(&mut out, &keys, 0, 0),
        Some(shape) => match form {
            DELTA => write_delta(&mut out, &keys, shape),
            RUNS => write_runs(&mut out, &keys, shape),
            _ => write_frame(&mut out, &keys, shape.min, shape.max - shape.min),
        },
    }
    let stats = ChunkStats {
        null_count: column.null_count() as u64,
        min: shape.as_ref().map(|s| stat_value(s.min, layout)),
        max: shape.as_ref().map(|s| stat_value(s.max, layout)),
    };
    let raw_len = (rows * layout.width + if nulls.is_some() { validity_len } else { 0 }) as u64;
    // The pair of the reader's checks: what was written reads back.
    debug_assert!(
        unpack(&out, rows as u64, column.data_type()).is_ok_and(|back| back.as_ref() == column.as_ref()),
        "a packed page does not read back"
    );
    Some(Packed { bytes: out, raw_len, stats })
}

/// A key as the statistic `compute_stats` keeps for the column's type.
fn stat_value(key: u64, layout: Layout) -> StatValue {
    if layout.signed {
        StatValue::Int((key ^ SIGN) as i64)
    } else {
        StatValue::UInt(key)
    }
}

/// The keys of a page's valid values, in row order.
fn valid_keys(column: &ArrayRef, layout: Layout) -> Option<Vec<u64>> {
    let data = column.to_data();
    let len = data.len();
    let nulls = column.nulls().filter(|n| n.null_count() > 0);
    macro_rules! keys_of {
        ($t:ty, $key:expr) => {{
            let values: &[$t] = data.buffer::<$t>(0).get(..len)?;
            let key = $key;
            match nulls {
                None => values.iter().map(|&v| key(v)).collect(),
                Some(n) => n.valid_indices().map(|i| key(values[i])).collect(),
            }
        }};
    }
    Some(match (layout.width, layout.signed) {
        (1, true) => keys_of!(i8, |v: i8| (i64::from(v) as u64) ^ SIGN),
        (2, true) => keys_of!(i16, |v: i16| (i64::from(v) as u64) ^ SIGN),
        (4, true) => keys_of!(i32, |v: i32| (i64::from(v) as u64) ^ SIGN),
        (8, true) => keys_of!(i64, |v: i64| (v as u64) ^ SIGN),
        (1, false) => keys_of!(u8, u64::from),
        (2, false) => keys_of!(u16, u64::from),
        (4, false) => keys_of!(u32, u64::from),
        (8, false) => keys_of!(u64, |v: u64| v),
        _ => return None,
    })
}

/// What a page's keys look like, to choose their form.
struct Shape {
    min: u64,
    max: u64,
    /// Every key at least the one before.
    sorted: bool,
    /// Smallest and largest step between neighbours (when sorted; 0
    /// otherwise).
    step_min: u64,
    step_max: u64,
    runs: usize,
}

impl Shape {
    /// None for a page without values. One pass: the steps are followed
    /// while the keys rise (a sorted page may be stored as deltas); past
    /// the first fall only the bounds and the runs are, with no branch
    /// per key (most pages of node ids and dictionary keys fall at once).
    fn of(keys: &[u64]) -> Option<Shape> {
        let (&first, rest) = keys.split_first()?;
        let (mut step_min, mut step_max, mut changes) = (u64::MAX, 0, 0usize);
        let mut previous = first;
        let mut rising = 0;
        for &key in rest {
            if key < previous {
                break;
            }
            let step = key - previous;
            step_min = step_min.min(step);
            step_max = step_max.max(step);
            changes += usize::from(step != 0);
            previous = key;
            rising += 1;
        }
        if rising == rest.len() {
            return Some(Shape { min: first, max: previous, sorted: true, step_min, step_max, runs: changes + 1 });
        }
        // The rising prefix's bounds are its ends.
        let (mut min, mut max) = (first, previous);
        for &key in &rest[rising..] {
            min = min.min(key);
            max = max.max(key);
            changes += usize::from(key != previous);
            previous = key;
        }
        Some(Shape { min, max, sorted: false, step_min: 0, step_max: 0, runs: changes + 1 })
    }

    /// The form that takes the fewest bits, by the factors of the leading
    /// values (a frame on ties, the simplest to read).
    fn cheapest(&self, keys: &[u64]) -> u8 {
        self.cheapest_by(keys, false)
    }

    /// [`Shape::cheapest`], measuring the longest run whenever runs could
    /// win (`exact`) rather than only when the bounds on it cannot decide.
    fn cheapest_by(&self, keys: &[u64], exact: bool) -> u8 {
        let n = keys.len() as u64;
        let frame_factor = sampled_factor(keys.iter().map(|&k| k - self.min));
        let frame_width = bits((self.max - self.min) / frame_factor);
        let mut best = (n * frame_width, FRAME);
        if self.sorted && keys.len() > 1 {
            let factor = sampled_factor(keys.windows(2).map(|p| p[1] - p[0] - self.step_min));
            let cost = (n - 1) * bits((self.step_max - self.step_min) / factor) + 64;
            if cost < best.0 {
                best = (cost, DELTA);
            }
        }
        // The run lengths' width takes a pass to know; it is at least
        // what the average run needs (the longest is at least as long)
        // and at most what the longest possible run needs (every repeat
        // in one run), and often those bounds decide alone: a page of
        // keys that seldom repeat is not worth the pass.
        let runs = self.runs as u64;
        if exact || runs * (frame_width + bits(n.div_ceil(runs) - 1)) + 32 < best.0 {
            let at_most = runs * (frame_width + bits(n - runs)) + 32;
            let cost = if at_most < best.0 && !exact { at_most } else { runs * (frame_width + bits(longest_run(keys) as u64 - 1)) + 32 };
            if cost < best.0 {
                best = (cost, RUNS);
            }
        }
        best.1
    }
}

/// The length of the longest run of one key (at least 1; `keys` is not
/// empty). Branch-free per key: whether a key starts a run is a coin
/// toss in a page of session cookies.
fn longest_run(keys: &[u64]) -> usize {
    let (mut longest, mut run_start) = (0, 0);
    for (i, pair) in keys.windows(2).enumerate() {
        let starts_run = pair[1] != pair[0];
        let at = i + 1;
        longest = longest.max(if starts_run { at - run_start } else { 0 });
        run_start = if starts_run { at } else { run_start };
    }
    longest.max(keys.len() - run_start)
}

/// Bits needed to hold `x`.
fn bits(x: u64) -> u64 {
    u64::from(64 - x.leading_zeros())
}

/// Stein's binary gcd: shifts and subtractions, no division.
fn gcd(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        return a | b;
    }
    let shift = (a | b).trailing_zeros();
    let (mut a, mut b) = (a >> a.trailing_zeros(), b);
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// The common factor of the leading residuals (at least 1).
fn sampled_factor(residuals: impl Iterator<Item = u64>) -> u64 {
    residuals.take(FACTOR_SAMPLE).fold(0, gcd).max(1)
}

/// Exact division by a fixed factor with a multiply: a factor `2^s * m`
/// (`m` odd) divides `x` exactly when the low `s` bits of `x` are zero and
/// `(x >> s) * m⁻¹ mod 2^64` is at most `u64::MAX / m`, and that product
/// is then the quotient (Hacker's Delight, 10-17).
struct ExactDivider {
    shift: u32,
    inverse: u64,
    limit: u64,
}

impl ExactDivider {
    fn new(factor: u64) -> ExactDivider {
        debug_assert!(factor >= 1);
        let shift = factor.trailing_zeros();
        let odd = factor >> shift;
        // Newton's iteration doubles the correct low bits: 3, 6, ..., 96.
        let mut inverse = odd;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        debug_assert_eq!(odd.wrapping_mul(inverse), 1);
        ExactDivider { shift, inverse, limit: u64::MAX / odd }
    }

    fn divide(&self, x: u64) -> Option<u64> {
        if x & ((1u64 << self.shift) - 1) != 0 {
            return None;
        }
        let quotient = (x >> self.shift).wrapping_mul(self.inverse);
        (quotient <= self.limit).then_some(quotient)
    }
}

/// The residuals divided by the factor of their leading values, packed at
/// the width their largest (`most`) needs; with a factor of 1 when one of
/// them is not a multiple. Appends factor, width and fields to `out`.
fn write_scaled(out: &mut Vec<u8>, residuals: impl Iterator<Item = u64> + Clone, most: u64) {
    let factor = sampled_factor(residuals.clone());
    let start = out.len();
    if factor > 1 {
        let divider = ExactDivider::new(factor);
        out.extend_from_slice(&factor.to_le_bytes());
        let mut writer = BitWriter::new(out, bits(most / factor) as u32);
        let mut all = true;
        writer.put_all(residuals.clone().map(|r| {
            let quotient = divider.divide(r);
            all &= quotient.is_some();
            quotient.unwrap_or(0)
        }));
        writer.finish();
        if all {
            return;
        }
        out.truncate(start);
    }
    out.extend_from_slice(&1u64.to_le_bytes());
    let mut writer = BitWriter::new(out, bits(most) as u32);
    writer.put_all(residuals);
    writer.finish();
}

fn write_frame(out: &mut Vec<u8>, keys: &[u64], min: u64, most: u64) {
    out.extend_from_slice(&min.to_le_bytes());
    write_scaled(out, keys.iter().map(move |&k| k - min), most);
}

fn write_delta(out: &mut Vec<u8>, keys: &[u64], shape: &Shape) {
    out.extend_from_slice(&keys[0].to_le_bytes());
    out.extend_from_slice(&shape.step_min.to_le_bytes());
    let step_min = shape.step_min;
    write_scaled(out, keys.windows(2).map(move |p| p[1] - p[0] - step_min), shape.step_max - shape.step_min);
}

fn write_runs(out: &mut Vec<u8>, keys: &[u64], shape: &Shape) {
    // Where each run starts, and the end as the last entry: every row is
    // written as the next start and counted only if its key differs from
    // the one before (no branch per row; a row continuing its run is
    // overwritten by the next).
    let mut starts = vec![0u32; shape.runs + 1];
    let mut run = 1;
    let mut previous = keys[0];
    for (i, &key) in keys.iter().enumerate().skip(1) {
        starts[run] = i as u32;
        run += usize::from(key != previous);
        previous = key;
    }
    debug_assert_eq!(run, shape.runs);
    starts[shape.runs] = keys.len() as u32;
    out.extend_from_slice(&(shape.runs as u32).to_le_bytes());
    out.extend_from_slice(&shape.min.to_le_bytes());
    let min = shape.min;
    write_scaled(out, starts[..shape.runs].iter().map(move |&s| keys[s as usize] - min), shape.max - shape.min);
    // Each run's length less one.
    let lengths = starts.windows(2).map(|w| u64::from(w[1] - w[0] - 1));
    let most = lengths.clone().max().unwrap_or(0);
    let mut writer = BitWriter::new(out, bits(most) as u32);
    writer.put_all(lengths);
    writer.finish();
}

/// Appends `width` (u8) and then fields of `width` bits, least
/// significant bit first, the last byte padded with zeros.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    width: u32,
    pending: u64,
    pending_bits: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>, width: u32) -> BitWriter<'a> {
        debug_assert!(width <= 64);
        out.push(width as u8);
        BitWriter { out, width, pending: 0, pending_bits: 0 }
    }

    /// Append `fields`, each less than `2^width`.
    #[inline]
    fn put_all(&mut self, fields: impl Iterator<Item = u64>) {
        let width = self.width;
        if width == 0 {
            return;
        }
        // In locals, not in `self`: the compiler cannot keep fields of
        // `self` in registers across the pushes to `out`.
        let (mut pending, mut pending_bits) = (self.pending, self.pending_bits);
        for field in fields {
            debug_assert!(width == 64 || field >> width == 0, "field {field} wider than {width}");
            pending |= field << pending_bits;
            pending_bits += width;
            if pending_bits >= 64 {
                self.out.extend_from_slice(&pending.to_le_bytes());
                pending_bits -= 64;
                // The field's bits that did not fit (none when it ended the word).
                pending = if pending_bits == 0 { 0 } else { field >> (width - pending_bits) };
            }
        }
        self.pending = pending;
        self.pending_bits = pending_bits;
    }

    /// Flush the last bits.
    fn finish(self) {
        let bytes = self.pending_bits.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.pending.to_le_bytes()[..bytes]);
    }
}

/// Reads a packed page's bytes in order; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("packed page ends inside its {what}"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A factor (at least 1).
    fn factor(&mut self, what: &str) -> Result<u64, String> {
        match self.u64(what)? {
            0 => Err(format!("packed page has a zero factor in its {what}")),
            factor => Ok(factor),
        }
    }

    /// A width and `count` fields of that many bits, appended to `out`
    /// through `map`.
    fn fields_into(&mut self, count: usize, what: &str, out: &mut Vec<u64>, map: impl Fn(u64) -> u64) -> Result<(), String> {
        let width = u32::from(self.u8(what)?);
        if width > 64 {
            return Err(format!("packed page has {width}-bit fields in its {what}"));
        }
        let len = (count as u64 * u64::from(width)).div_ceil(8) as usize;
        let bytes = self.take(len, what)?;
        read_fields(bytes, width, count, out, map);
        Ok(())
    }
}

/// Append `count` fields of `width` bits from `bytes` (exactly long
/// enough) to `out`, each through `map`.
#[inline]
fn read_fields(bytes: &[u8], width: u32, count: usize, out: &mut Vec<u64>, map: impl Fn(u64) -> u64) {
    if width == 0 {
        out.extend(std::iter::repeat_n(map(0), count));
        return;
    }
    let w = width as usize;
    let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
    // A field starts in its first byte, so up to 56 bits lie in the 8
    // bytes from there, and any width in 16. The fields whose bytes lie
    // inside `bytes` are read without a check; the last few through a
    // zero-padded copy.
    let span = if width <= 56 { 8 } else { 16 };
    let inside = if bytes.len() >= span { (((bytes.len() - span) * 8 + 7) / w + 1).min(count) } else { 0 };
    if width <= 56 {
        out.extend((0..inside).map(|i| {
            let bit = i * w;
            let word: [u8; 8] = bytes[bit >> 3..(bit >> 3) + 8].try_into().unwrap_or([0; 8]);
            map((u64::from_le_bytes(word) >> (bit & 7)) & mask)
        }));
    } else {
        out.extend((0..inside).map(|i| {
            let bit = i * w;
            let word: [u8; 16] = bytes[bit >> 3..(bit >> 3) + 16].try_into().unwrap_or([0; 16]);
            map(((u128::from_le_bytes(word) >> (bit & 7)) as u64) & mask)
        }));
    }
    out.extend((inside..count).map(|i| {
        let bit = i * w;
        let word = u128::from_le_bytes(padded(bytes, bit >> 3));
        map(((word >> (bit & 7)) as u64) & mask)
    }));
}

/// The bytes of `bytes` from `at` (fewer than `N`), zero-padded to `N`.
fn padded<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut word = [0u8; N];
    let tail = bytes.get(at..).unwrap_or(&[]);
    let n = tail.len().min(N);
    word[..n].copy_from_slice(&tail[..n]);
    word
}

/// The column a packed page holds: `rows` rows of type `want`.
pub(super) fn unpack(bytes: &[u8], rows: u64, want: &DataType) -> Result<ArrayRef, String> {
    let layout = layout(want).ok_or_else(|| format!("a packed page in a column of type {want}"))?;
    if rows > MAX_ROWS {
        return Err(format!("a packed page of {rows} rows"));
    }
    let rows = rows as usize;
    let mut cursor = Cursor { bytes };
    let form = cursor.u8("header")?;
    let flags = cursor.u8("header")?;
    let page_rows = cursor.u32("header")? as usize;
    let count = cursor.u32("header")? as usize;
    if page_rows != rows {
        return Err(format!("packed page holds {page_rows} rows, its footer says {rows}"));
    }
    if flags & !HAS_NULLS != 0 {
        return Err(format!("packed page has unknown flags {flags:#04x}"));
    }
    if count > rows || (flags & HAS_NULLS == 0 && count != rows) {
        return Err(format!("packed page holds {count} values for {rows} rows"));
    }
    let validity = if flags & HAS_NULLS != 0 {
        let bitmap = cursor.take(rows.div_ceil(8), "validity")?;
        let valid = Buffer::from_slice_ref(bitmap).count_set_bits_offset(0, rows);
        if valid != count {
            return Err(format!("packed page's validity marks {valid} rows valid, not {count}"));
        }
        Some(bitmap)
    } else {
        None
    };
    let mut keys = Vec::with_capacity(count);
    match form {
        FRAME => {
            let base = cursor.u64("frame")?;
            let factor = cursor.factor("frame")?;
            cursor.fields_into(count, "frame", &mut keys, |f| base.wrapping_add(f.wrapping_mul(factor)))?;
        }
        DELTA => {
            let first = cursor.u64("deltas")?;
            let step_min = cursor.u64("deltas")?;
            let factor = cursor.factor("deltas")?;
            if count > 0 {
                keys.push(first);
                cursor.fields_into(count - 1, "deltas", &mut keys, |f| step_min.wrapping_add(f.wrapping_mul(factor)))?;
                // Steps to keys, in place.
                let mut key = first;
                for step in &mut keys[1..] {
                    key = key.wrapping_add(*step);
                    *step = key;
                }
            } else {
                cursor.fields_into(0, "deltas", &mut keys, |f| f)?;
            }
        }
        RUNS => {
            let runs = cursor.u32("runs")? as usize;
            if runs > count || (runs == 0) != (count == 0) {
                return Err(format!("packed page has {runs} runs of {count} values"));
            }
            let base = cursor.u64("runs")?;
            let factor = cursor.factor("run values")?;
            let mut values = Vec::with_capacity(runs);
            cursor.fields_into(runs, "run values", &mut values, |f| base.wrapping_add(f.wrapping_mul(factor)))?;
            let mut lengths = Vec::with_capacity(runs);
            cursor.fields_into(runs, "run lengths", &mut lengths, |f| f)?;
            for (value, extra) in values.into_iter().zip(lengths) {
                let length = extra.saturating_add(1);
                if length > (count - keys.len()) as u64 {
                    return Err(format!("packed page's runs hold more than its {count} values"));
                }
                keys.extend(std::iter::repeat_n(value, length as usize));
            }
        }
        other => return Err(format!("packed page has unknown form {other}")),
    }
    if keys.len() != count {
        return Err(format!("packed page decodes to {} values, not {count}", keys.len()));
    }
    if !cursor.bytes.is_empty() {
        return Err(format!("packed page has {} bytes past its values", cursor.bytes.len()));
    }
    let values = native_values(keys, validity, rows, layout)?;
    let data = ArrayData::try_new(want.clone(), rows, validity.map(Buffer::from_slice_ref), 0, vec![values], vec![])
        .map_err(|e| format!("packed page: {e}"))?;
    Ok(make_array(data))
}

/// The values buffer of `rows` rows: each key, in the column's native
/// type, at its valid row (0 at NULL rows).
fn native_values(mut keys: Vec<u64>, validity: Option<&[u8]>, rows: usize, layout: Layout) -> Result<Buffer, String> {
    // A 64-bit page without NULLs is its keys (a signed value's bits are
    // its key with the top bit flipped back), in the same allocation.
    if layout.width == 8 && validity.is_none() && keys.len() == rows {
        if layout.signed {
            keys.iter_mut().for_each(|k| *k ^= SIGN);
        }
        return Ok(Buffer::from_vec(keys));
    }
    let keys = keys.as_slice();
    macro_rules! place {
        ($t:ty, $from:expr) => {{
            let from = $from;
            let mut out: Vec<$t> = vec![<$t>::default(); rows];
            let out_of_range = |k: u64| format!("packed page holds {k:#x}, out of its column's range");
            match validity {
                None => {
                    for (slot, &k) in out.iter_mut().zip(keys) {
                        *slot = from(k).ok_or_else(|| out_of_range(k))?;
                    }
                }
                Some(bitmap) => {
                    let rows_valid = arrow::util::bit_iterator::BitIndexIterator::new(bitmap, 0, rows);
                    for (row, &k) in rows_valid.zip(keys) {
                        out[row] = from(k).ok_or_else(|| out_of_range(k))?;
                    }
                }
            }
            Buffer::from_vec(out)
        }};
    }
    let signed = |k: u64| (k ^ SIGN) as i64;
    Ok(match (layout.width, layout.signed) {
        (1, true) => place!(i8, |k| i8::try_from(signed(k)).ok()),
        (2, true) => place!(i16, |k| i16::try_from(signed(k)).ok()),
        (4, true) => place!(i32, |k| i32::try_from(signed(k)).ok()),
        (8, true) => place!(i64, |k| Some(signed(k))),
        (1, false) => place!(u8, |k| u8::try_from(k).ok()),
        (2, false) => place!(u16, |k| u16::try_from(k).ok()),
        (4, false) => place!(u32, |k| u32::try_from(k).ok()),
        (8, false) => place!(u64, Some),
        _ => return Err(format!("no packed layout of {} bytes", layout.width)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int16Array, Int32Array, Int64Array, Int8Array, TimestampNanosecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array};
    use std::sync::Arc;

    fn form(column: &ArrayRef) -> u8 {
        pack(column).expect("packs").bytes[0]
    }

    fn round_trip(column: &ArrayRef) -> Packed {
        let packed = pack(column).expect("packs");
        let back = unpack(&packed.bytes, column.len() as u64, column.data_type()).expect("unpacks");
        assert_eq!(back.as_ref(), column.as_ref());
        assert_eq!(packed.stats, super::super::page::compute_stats(column));
        packed
    }

    #[test]
    fn exact_division_finds_multiples_and_only_them() {
        for factor in [1u64, 2, 3, 10, 1_000, 1_000_000_000, 3 << 40, u64::MAX] {
            let d = ExactDivider::new(factor);
            for q in [0u64, 1, 2, 7, 1 << 20, u64::MAX / factor].into_iter().filter(|&q| q <= u64::MAX / factor) {
                let x = q * factor;
                assert_eq!(d.divide(x), Some(q), "{x} / {factor}");
                if factor > 1 && x < u64::MAX {
                    assert_eq!(d.divide(x + 1), None, "{} / {factor}", x + 1);
                }
            }
        }
    }

    /// Each form is chosen where it is the smallest, and reads back: node
    /// ids (a frame), whole-second timestamps in order (deltas, the factor
    /// of a second taken out), session runs (runs).
    #[test]
    fn each_form_where_it_is_smallest() {
        let scattered = |i: u64| i.wrapping_mul(2_654_435_761) % 1_000_003;
        let nodes: ArrayRef = Arc::new(UInt64Array::from_iter_values((0..8192).map(|i| 4_000_000 + scattered(i))));
        let times: ArrayRef = Arc::new(TimestampNanosecondArray::from_iter_values(
            (0..8192i64).map(|i| 1_730_421_364_000_000_000 + (i * 50 + (i * 7919) % 40) * 1_000_000_000),
        ));
        let sessions: ArrayRef = Arc::new((0..8192u64).map(|i| (i % 97 != 0).then(|| 9_000_000 + scattered(i / 4))).collect::<UInt64Array>());
        for (column, expected, most_bytes) in [(nodes, FRAME, 8192 * 20 / 8), (times, DELTA, 8192 * 7 / 8), (sessions, RUNS, 2048 * 23 / 8 + 1024)] {
            assert_eq!(form(&column), expected, "{column:?}");
            let packed = round_trip(&column);
            assert!(packed.bytes.len() <= most_bytes + 64, "{} bytes, expected at most {most_bytes}", packed.bytes.len());
        }
    }

    #[test]
    fn every_type_and_extreme_reads_back() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from(vec![Some(i8::MIN), None, Some(i8::MAX), Some(0)])),
            Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(i16::MAX), None])),
            Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(-1), Some(i32::MAX)])),
            Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None, Some(0)])),
            Arc::new(UInt8Array::from(vec![Some(0), Some(u8::MAX)])),
            Arc::new(UInt16Array::from(vec![None, Some(u16::MAX)])),
            Arc::new(UInt32Array::from(vec![Some(u32::MAX), Some(0), Some(u32::MAX)])),
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), Some(0), Some(u64::MAX - 1)])),
            Arc::new(UInt64Array::from(vec![None, None, None])),
            Arc::new(Int64Array::from(vec![Some(5); 100])),
            Arc::new(arrow::array::Date32Array::from(vec![Some(19_000), None, Some(-3)])),
        ];
        for column in columns {
            round_trip(&column);
            // And as a slice, whose validity starts inside a byte.
            if column.len() > 1 {
                round_trip(&column.slice(1, column.len() - 1));
            }
        }
    }

    /// Damaged bytes are an error naming the problem, never a panic nor
    /// values made up: cut short, a bad form or flag, lying counts.
    #[test]
    fn damaged_pages_are_errors() {
        let column: ArrayRef = Arc::new((0..100u64).map(|i| (i % 9 != 0).then_some(i * 3 % 17)).collect::<UInt64Array>());
        let good = pack(&column).expect("packs").bytes;
        let ty = DataType::UInt64;
        for cut in 0..good.len() {
            assert!(unpack(&good[..cut], 100, &ty).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(unpack(&longer, 100, &ty).expect_err("trailing").contains("past its values"));
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(unpack(&bad, 100, &ty).expect_err("form").contains("unknown form"));
        let mut bad = good.clone();
        bad[1] = 0x80 | HAS_NULLS;
        assert!(unpack(&bad, 100, &ty).expect_err("flags").contains("flags"));
        let mut bad = good.clone();
        bad[6] = bad[6].wrapping_add(1);
        assert!(unpack(&bad, 100, &ty).expect_err("count").contains("validity marks"));
        assert!(unpack(&good, 101, &ty).expect_err("rows").contains("footer says 101"));
        assert!(unpack(&good, 100, &DataType::Utf8).expect_err("type").contains("Utf8"));
        // A value too wide for a narrower column is reported.
        let wide: ArrayRef = Arc::new(UInt64Array::from(vec![1u64 << 40, 3]));
        let bytes = pack(&wide).expect("packs").bytes;
        assert!(unpack(&bytes, 2, &DataType::UInt32).expect_err("range").contains("out of its column's range"));
    }

    proptest::proptest! {
        /// Any page of any packed type reads back exactly, with the
        /// statistics `compute_stats` gives, whatever its shape: scattered
        /// values, runs, sorted steps, a common factor, NULLs.
        #[test]
        fn any_page_reads_back(
            raw in proptest::collection::vec(proptest::option::weighted(0.9, proptest::num::i64::ANY), 0..400),
            shape in 0u8..4,
            factor in proptest::sample::select(vec![1i64, 2, 1000, 1_000_000_000, 7]),
            shift in 0u32..63,
        ) {
            let mut values: Vec<Option<i64>> = raw.iter().map(|v| v.map(|v| (v >> shift).wrapping_mul(factor))).collect();
            match shape {
                1 => values.sort(),
                2 => { let mut acc = 0i64; for v in values.iter_mut() { if let Some(x) = v { acc = acc.wrapping_add(*x & 0xff); *x = acc; } } }
                3 => { for i in 1..values.len() { if i % 5 != 0 { values[i] = values[i - 1]; } } }
                _ => {}
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(values.iter().copied().collect::<Int64Array>()),
                Arc::new(values.iter().map(|v| v.map(|v| v as u64)).collect::<UInt64Array>()),
                Arc::new(values.iter().map(|v| v.map(|v| v as i32)).collect::<Int32Array>()),
                Arc::new(values.iter().map(|v| v.map(|v| v as u32)).collect::<UInt32Array>()),
                Arc::new(values.iter().map(|v| v.map(|v| v as i16)).collect::<Int16Array>()),
                Arc::new(values.iter().map(|v| v.map(|v| v as u8)).collect::<UInt8Array>()),
                Arc::new(values.iter().copied().collect::<TimestampNanosecondArray>()),
            ];
            for column in columns {
                let packed = pack(&column).expect("packs");
                let back = unpack(&packed.bytes, column.len() as u64, column.data_type()).expect("unpacks");
                proptest::prop_assert_eq!(back.as_ref(), column.as_ref());
                proptest::prop_assert_eq!(&packed.stats, &super::super::page::compute_stats(&column));
                let layout = layout(column.data_type()).expect("layout");
                // Never more than the values themselves, a bitmap and the header.
                proptest::prop_assert!(packed.bytes.len() <= column.len() * layout.width + column.len().div_ceil(8) + 64);
            }
        }

        /// The bounds that spare the pass over run lengths never change
        /// the form chosen: it is the one whose exact size is smallest.
        #[test]
        fn bounds_on_run_lengths_never_change_the_form(
            pieces in proptest::collection::vec(
                (0u64..1 << 20, proptest::prop_oneof![3 => proptest::strategy::Just(1usize), 2 => proptest::strategy::Just(2usize), 1 => 1usize..9]),
                1..300,
            ),
            width in 1u32..21,
            sorted in proptest::bool::ANY,
        ) {
            // Runs of random lengths (mostly short, where the bounds on
            // their lengths' width are closest to deciding).
            let mut keys: Vec<u64> = pieces.iter().flat_map(|&(v, n)| std::iter::repeat_n(v & ((1 << width) - 1), n)).collect();
            if sorted {
                keys.sort_unstable();
            }
            let shape = Shape::of(&keys).expect("values");
            proptest::prop_assert_eq!(shape.cheapest(&keys), shape.cheapest_by(&keys, true));
        }

        /// Arbitrary bytes never panic the reader.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), rows in 0u64..100) {
            let _ = unpack(&bytes, rows, &DataType::Int64);
            let _ = unpack(&bytes, rows, &DataType::UInt16);
        }
    }
}

