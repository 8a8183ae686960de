//! Identifier normalizers and the blocked-value rule.
//!
//! Normalization decides what an identifier *is*: two raw values that
//! normalize to the same string are the same node. A value that
//! normalizes to nothing is not an identifier at all (nothing recorded);
//! a blocked or unparseable value is refused and recorded.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use super::graph::{Key, TypeId};

/// Longest raw identifier value considered (a limit on everything);
/// longer values are refused as invalid.
pub const MAX_VALUE_BYTES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalizer {
    /// Trim, lower-case.
    Email,
    /// To E.164 with a default region for numbers written nationally.
    Phone { region: rlibphonenumber::Region },
    /// Trim, optionally lower-case.
    Text { fold_case: bool },
}

/// The outcome of normalizing one raw value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized {
    /// Not an identifier (NULL, empty, only whitespace).
    Absent,
    Value(String),
    /// On the blocked list of the type.
    Blocked,
    /// Cannot be an identifier of this type.
    Invalid(String),
}

/// Values never used to link, whatever the type (compared after trimming
/// and lower-casing).
pub const DEFAULT_BLOCKED: &[&str] =
    &["null", "undefined", "anonymous", "none", "n/a", "-1", "0", "test@test.com", "abc123", "void", "nil", "unknown"];

/// Only zeros, dashes, dots, brackets, plus signs and spaces
/// (`0000000000`, `(000) 000-0000`).
fn zeros_and_dashes(value: &str) -> bool {
    value.chars().all(|c| matches!(c, '0' | '-' | '.' | '(' | ')' | '+') || c.is_whitespace())
}

/// The cache key of a raw phone number: its digits with their count and a
/// marker for a leading `+`, packed into 64 bits, when the rest is only
/// punctuation (the number's meaning is then its digits); `None` when it
/// holds anything else (letters, extensions) or more digits than fit.
/// Packed rather than a string, the key costs no allocation, and hashing
/// and comparing it cost one word.
pub fn phone_cache_key(raw: &str) -> Option<u64> {
    /// 10^17 < 2^57: the digits take bits 0..57, the `+` bit 57, the count
    /// (leading zeros matter) bits 58..63.
    const MAX_DIGITS: u64 = 17;
    let trimmed = raw.trim();
    let (mut number, mut count) = (0u64, 0u64);
    for c in trimmed.bytes() {
        match c {
            b'0'..=b'9' => {
                if count == MAX_DIGITS {
                    return None;
                }
                number = number * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'+' | b'-' | b'.' | b'(' | b')' | b' ' => {}
            _ => return None,
        }
    }
    let plus = u64::from(trimmed.starts_with('+'));
    debug_assert!(number < 1 << 57 && count < 1 << 5);
    Some(count << 58 | plus << 57 | number)
}

impl Normalizer {
    pub fn parse(kind: &str, region: Option<&str>, fold_case: bool) -> Result<Normalizer, String> {
        match kind.to_ascii_lowercase().as_str() {
            "email" => Ok(Normalizer::Email),
            "phone" => {
                let region = region.unwrap_or("US").to_ascii_uppercase();
                let unknown = || format!("unknown region '{region}' (expected a two-letter country code such as 'US')");
                let id = region.parse::<rlibphonenumber::Region>().map_err(|_| unknown())?;
                // Some codes parse but have no numbering metadata (`XX`,
                // `ZZ`): no number could ever be valid there.
                if rlibphonenumber::PHONE_NUMBER_UTIL.get_country_code_for_region(id).is_none() {
                    return Err(unknown());
                }
                Ok(Normalizer::Phone { region: id })
            }
            "text" => Ok(Normalizer::Text { fold_case }),
            other => Err(format!("unknown normalizer '{other}' (expected 'email', 'phone' or 'text')")),
        }
    }

    /// Normalize `raw`, refusing blocked values (`extra_blocked` are the
    /// type's own, already lower-cased).
    pub fn normalize(&self, raw: &str, extra_blocked: &[String]) -> Normalized {
        match self.normalize_borrowed(raw, extra_blocked) {
            Ok(value) => Normalized::Value(value.into_owned()),
            Err(refused) => refused,
        }
    }

    /// [`Normalizer::normalize`] with the value borrowed from `raw` when it
    /// is `raw` trimmed (emails and text without upper case, nearly all):
    /// preparing a load hashes the value and drops it, so copying it was
    /// an allocation per distinct value for nothing. `Err` holds every
    /// outcome other than a value.
    pub fn normalize_borrowed<'a>(&self, raw: &'a str, extra_blocked: &[String]) -> Result<Cow<'a, str>, Normalized> {
        let trimmed = raw.trim();
        if let Some(refused) = refused_by_length(trimmed) {
            return Err(refused);
        }
        // One pass over the bytes answers what lower-casing and the
        // email's shape ask of plain values.
        let scan = PlainScan::of(trimmed);
        // Lower-cased once, for the blocked list and as the value.
        let lower = lowercase_scanned(trimmed, scan);
        if is_blocked(&lower, extra_blocked) {
            return Err(Normalized::Blocked);
        }
        let value = match self {
            Normalizer::Email => {
                let shaped = match scan {
                    // Lower-casing ASCII moves no `@`.
                    Some(scan) => scan.ats == 1 && !lower.starts_with('@') && !lower.ends_with('@'),
                    None => is_email_shaped(&lower),
                };
                if !shaped {
                    return Err(Normalized::Invalid("not an email address".into()));
                }
                lower
            }
            Normalizer::Phone { region } => Cow::Owned(match north_american(*region, trimmed) {
                Some(e164) => e164,
                None => match parse_phone(*region, trimmed) {
                    Ok(n) if rlibphonenumber::PHONE_NUMBER_UTIL.is_valid_number(&n) => {
                        rlibphonenumber::PHONE_NUMBER_UTIL.format(&n, rlibphonenumber::PhoneNumberFormat::E164).into_owned()
                    }
                    Ok(_) => return Err(Normalized::Invalid("not a valid phone number".into())),
                    Err(_) => return Err(Normalized::Invalid("not a phone number".into())),
                },
            }),
            Normalizer::Text { fold_case: true } => lower,
            Normalizer::Text { fold_case: false } => Cow::Borrowed(trimmed),
        };
        // Emails and text were checked above (as `lower`); a phone number
        // is checked again in its E.164 form (digits, no case).
        if matches!(self, Normalizer::Phone { .. }) && is_blocked(&value, extra_blocked) {
            return Err(Normalized::Blocked);
        }
        Ok(value)
    }
}

/// What one pass over a plain value's bytes (ASCII, no control
/// characters or spaces: nearly every identifier) tells: whether it has
/// upper case, and how many `@` it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PlainScan {
    upper: bool,
    ats: usize,
}

impl PlainScan {
    /// None when `text` is not plain (then the general paths decide).
    /// Eight bytes at a time, as bit fields of a word: a value takes a
    /// handful of words rather than a loop iteration per byte.
    fn of(text: &str) -> Option<PlainScan> {
        let bytes = text.as_bytes();
        let mut words = bytes.chunks_exact(8);
        let (mut not_plain, mut upper, mut ats) = (0u64, 0u64, 0u32);
        let mut take = |word: u64| {
            let flags = plain_word(word);
            not_plain |= flags.not_plain;
            upper |= flags.upper;
            ats += flags.ats.count_ones();
        };
        for chunk in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            take(u64::from_le_bytes(word));
        }
        // The last bytes padded with a plain byte that is neither upper
        // case nor `@`.
        let mut last = [b'a'; 8];
        let rest = words.remainder();
        last[..rest.len()].copy_from_slice(rest);
        take(u64::from_le_bytes(last));
        (not_plain == 0).then_some(PlainScan { upper: upper != 0, ats: ats as usize })
    }
}

/// Per byte of a word, the high bit of the byte's lane set when: the
/// byte is not plain (a space or control character, or beyond ASCII), is
/// upper case, or is `@`. The upper-case and `@` lanes are exact only
/// where every byte is ASCII (a word that is not is not plain anyway).
struct WordFlags {
    not_plain: u64,
    upper: u64,
    ats: u64,
}

fn plain_word(x: u64) -> WordFlags {
    const LANES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = x & !HIGH;
    // Lane high bit set when the (7-bit) byte is at least `b`: adding
    // 0x80 - b carries into the high bit exactly then, never further.
    let at_least = |b: u8| (low7 + LANES * u64::from(0x80 - b)) & HIGH;
    // Lane high bit set when the byte equals `b`: the exact zero-byte
    // test on x ^ b.
    let equals = |b: u8| {
        let y = x ^ (LANES * u64::from(b));
        !(((y & !HIGH) + !HIGH) | y) & HIGH
    };
    WordFlags {
        not_plain: (x & HIGH) | (!at_least(b'!') & HIGH) | equals(0x7f),
        upper: at_least(b'A') & !at_least(b'[') & HIGH,
        ats: equals(b'@'),
    }
}

/// Exactly one `@`, neither first nor last, and no white space: one pass
/// over the bytes when the text is ASCII (nearly always).
fn is_email_shaped(lower: &str) -> bool {
    let bytes = lower.as_bytes();
    if bytes.first() == Some(&b'@') || bytes.last() == Some(&b'@') {
        return false;
    }
    if lower.is_ascii() {
        let mut at = 0;
        for &b in bytes {
            at += usize::from(b == b'@');
            if b.is_ascii_whitespace() || b == 0x0b {
                return false;
            }
        }
        return at == 1;
    }
    lower.matches('@').count() == 1 && !lower.contains(char::is_whitespace)
}

/// What a value comes to from its text alone, before any normalizer
/// reads it (`trimmed` is the raw value trimmed): absent when empty,
/// invalid when too long, blocked when its lower-cased text is on the
/// blocked list. The phone cache, keyed by digits, asks this first, since
/// two spellings of one number can differ here.
pub fn refused_as_typed(trimmed: &str, extra_blocked: &[String]) -> Option<Normalized> {
    refused_by_length(trimmed).or_else(|| is_blocked(&lowercase(trimmed), extra_blocked).then_some(Normalized::Blocked))
}

/// Absent when empty, invalid when too long.
fn refused_by_length(trimmed: &str) -> Option<Normalized> {
    if trimmed.is_empty() {
        return Some(Normalized::Absent);
    }
    (trimmed.len() > MAX_VALUE_BYTES).then(|| Normalized::Invalid(format!("longer than {MAX_VALUE_BYTES} bytes")))
}

/// Lower case, without Unicode tables for ASCII text (nearly all values).
/// Borrowed when there is nothing to lower (phone numbers, most ids): no
/// allocation for a value only compared against the blocked list.
fn lowercase(s: &str) -> Cow<'_, str> {
    lowercase_scanned(s, PlainScan::of(s))
}

/// [`lowercase`] of a value already scanned.
fn lowercase_scanned(s: &str, scan: Option<PlainScan>) -> Cow<'_, str> {
    match scan {
        Some(PlainScan { upper: false, .. }) => Cow::Borrowed(s),
        Some(PlainScan { upper: true, .. }) => Cow::Owned(s.to_ascii_lowercase()),
        None if !s.is_ascii() => Cow::Owned(s.to_lowercase()),
        None if s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(s.to_ascii_lowercase()),
        None => Cow::Borrowed(s),
    }
}

/// libphonenumber's parse of a number, national ones in `region`
/// (`rlibphonenumber`, a port of Google's library with its metadata; about
/// three times faster than the `phonenumber` crate used before, whose
/// shared regular-expression cache dominated the resolution of a load).
fn parse_phone(region: rlibphonenumber::Region, raw: &str) -> Result<rlibphonenumber::PhoneNumber, rlibphonenumber::ParseError> {
    rlibphonenumber::PHONE_NUMBER_UTIL.parse(raw, Some(region))
}

/// The E.164 form of a valid North American number written the common
/// way (ten digits, optionally after `1` or `+1`, with only spaces,
/// dashes, dots and brackets between them) in a region of country code 1,
/// without libphonenumber's parse, which took most of a load's phone
/// normalizing. None for anything else, valid or not: the full parse then
/// decides (and says why a number is refused). A property test holds it
/// to the full parse's answer.
fn north_american(region: rlibphonenumber::Region, trimmed: &str) -> Option<String> {
    let national = north_american_national(region, trimmed)?;
    let number = rlibphonenumber::PhoneNumber { country_code: 1, national_number: national, ..Default::default() };
    is_valid_north_american(&number).then(|| e164_north_american(national))
}

/// `+1` and the ten national digits, written without the formatting
/// machinery (it showed in load profiles).
fn e164_north_american(national: u64) -> String {
    debug_assert!(national < NATIONAL_RANGE, "ten national digits");
    let mut digits = [b'0'; NATIONAL_DIGITS];
    let mut rest = national;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut e164 = String::with_capacity(2 + NATIONAL_DIGITS);
    e164.push_str("+1");
    e164.extend(digits.iter().map(|&d| char::from(d)));
    e164
}

/// The ten national digits of a number written the way [`north_american`]
/// reads, as a number, when `region` has country code 1.
fn north_american_national(region: rlibphonenumber::Region, trimmed: &str) -> Option<u64> {
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let (mut digits, mut count) = (0u64, 0usize);
    for c in rest.bytes() {
        match c {
            b'0'..=b'9' if count <= NATIONAL_DIGITS => {
                digits = digits * 10 + u64::from(c - b'0');
                count += 1;
            }
            b' ' | b'-' | b'.' | b'(' | b')' => {}
            _ => return None,
        }
    }
    let national = match (plus, count) {
        (false, NATIONAL_DIGITS) => digits,
        // A leading 1 is the country code: the first of eleven digits.
        (_, 11) if digits / NATIONAL_RANGE == 1 => digits % NATIONAL_RANGE,
        _ => return None,
    };
    if rlibphonenumber::PHONE_NUMBER_UTIL.get_country_code_for_region(region) != Some(1) {
        return None;
    }
    Some(national)
}

/// Digits of a North American national number, and how many such numbers
/// there are.
const NATIONAL_DIGITS: usize = 10;
const NATIONAL_RANGE: u64 = 10_000_000_000;

/// What [`Normalizer::normalize_borrowed`] makes of `trimmed` when it is a
/// North American number [`north_american`] finds valid from its table of
/// area codes and exchanges alone (None otherwise): its E.164 form, or
/// blocked when that form is on the blocked list. The refusals decided by
/// the text as typed ([`refused_as_typed`]) are the caller's. Loads take
/// it before the phone cache, which is not worth consulting for such a
/// number: a lookup in a cache of a million numbers misses the
/// processor's caches and cost more than this.
pub fn known_north_american(region: rlibphonenumber::Region, trimmed: &str, extra_blocked: &[String]) -> Option<Normalized> {
    let national = north_american_national(region, trimmed)?;
    if first_region_prefix(national) != Some(true) {
        return None;
    }
    let e164 = e164_north_american(national);
    Some(if is_blocked(&e164, extra_blocked) { Normalized::Blocked } else { Normalized::Value(e164) })
}

/// libphonenumber's `is_valid_number` for a +1 number, in one check for
/// most. It finds the number's region by trying the calling code's regions
/// in order, stopping at the first for which the number is valid, then
/// checks it there: so a number valid for the first of them (the United
/// States) is valid, known after one check instead of two. Any other
/// number takes the whole search. Checking phone numbers was a fifth of
/// the identity work of loading contacts. The first region's answer is
/// remembered by the number's first six digits ([`FIRST_REGION_BY_PREFIX`]).
fn is_valid_north_american(number: &rlibphonenumber::PhoneNumber) -> bool {
    let util = &*rlibphonenumber::PHONE_NUMBER_UTIL;
    debug_assert_eq!(number.country_code, 1);
    let in_first_region = match first_region_prefix(number.national_number) {
        Some(known) => known,
        None => {
            let valid = util.get_region_for_country_code(1).is_some_and(|first| util.is_valid_number_for_region(number, first));
            remember_first_region_prefix(number.national_number, valid);
            valid
        }
    };
    in_first_region || util.is_valid_number(number)
}

/// Whether North American numbers are valid in the calling code's first
/// region (the United States), by their first six national digits (area
/// code and exchange), two bits each: unknown, valid, not valid. Filled
/// as numbers are checked; 250 KB, so a lookup stays in the processor's
/// cache. This holds because libphonenumber's patterns for the United
/// States constrain at most the first six of the ten digits (every one
/// ends in four or more free digits): a unit test checks every prefix
/// against libphonenumber itself.
static FIRST_REGION_BY_PREFIX: [AtomicU64; PREFIXES / PREFIXES_PER_WORD] = [const { AtomicU64::new(0) }; PREFIXES / PREFIXES_PER_WORD];
const PREFIXES: usize = 1_000_000;
const PREFIXES_PER_WORD: usize = 32;
const PREFIX_SUFFIX_RANGE: u64 = 10_000;
const PREFIX_VALID: u64 = 1;
const PREFIX_NOT_VALID: u64 = 2;

/// The word and shift of a ten-digit national number's prefix; None
/// beyond ten digits.
fn prefix_slot(national: u64) -> Option<(&'static AtomicU64, u32)> {
    let prefix = usize::try_from(national / PREFIX_SUFFIX_RANGE).ok().filter(|&p| p < PREFIXES)?;
    let word = FIRST_REGION_BY_PREFIX.get(prefix / PREFIXES_PER_WORD)?;
    Some((word, (prefix % PREFIXES_PER_WORD) as u32 * 2))
}

fn first_region_prefix(national: u64) -> Option<bool> {
    let (word, shift) = prefix_slot(national)?;
    match word.load(Ordering::Relaxed) >> shift & 3 {
        PREFIX_VALID => Some(true),
        PREFIX_NOT_VALID => Some(false),
        _ => None,
    }
}

fn remember_first_region_prefix(national: u64, valid: bool) {
    if let Some((word, shift)) = prefix_slot(national) {
        // Idempotent: every thread that checks a prefix finds the same.
        word.fetch_or((if valid { PREFIX_VALID } else { PREFIX_NOT_VALID }) << shift, Ordering::Relaxed);
    }
}

fn is_blocked(lower: &str, extra: &[String]) -> bool {
    DEFAULT_BLOCKED.contains(&lower) || extra.iter().any(|b| b == lower) || zeros_and_dashes(lower)
}

/// The dictionary key of a normalized value of a type.
pub fn key_of(t: TypeId, normalized: &str) -> Key {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(normalized.as_bytes(), u64::from(t));
    [(h >> 64) as u64, h as u64]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us_phone() -> Normalizer {
        Normalizer::parse("phone", Some("US"), false).unwrap()
    }

    proptest::proptest! {
        /// The one-pass check of an email's shape says what the plain
        /// definition says, white space of every kind included.
        #[test]
        fn email_shape_is_the_plain_definition(chars in proptest::collection::vec(proptest::sample::select(vec!['a', 'B', '.', '@', ' ', '\t', '\u{0b}', '\u{0c}', '\u{a0}', '\u{2003}', '\u{e9}', '-']), 0..12)) {
            let text: String = chars.into_iter().collect();
            let plain = text.matches('@').count() == 1 && !text.starts_with('@') && !text.ends_with('@') && !text.contains(char::is_whitespace);
            proptest::prop_assert_eq!(is_email_shaped(&text), plain, "{:?}", text);
        }
    }

    proptest::proptest! {
        /// For plain values, the one-pass scan agrees with lower-casing
        /// and with the email shape; values it does not call plain hold
        /// a space, a control character or a byte beyond ASCII.
        #[test]
        fn the_plain_scan_agrees_with_the_general_paths(chars in proptest::collection::vec(proptest::sample::select(vec!['a', 'z', 'A', 'Z', '@', '[', '`', '{', '~', '.', '0', '!', ' ', '\t', '\u{1f}', '\u{7f}', '\u{e9}', '\u{c9}']), 0..40)) {
            let text: String = chars.into_iter().collect();
            match PlainScan::of(&text) {
                Some(scan) => {
                    proptest::prop_assert_eq!(scan.upper, text != text.to_lowercase(), "{:?}", text);
                    let shaped = scan.ats == 1 && !text.starts_with('@') && !text.ends_with('@');
                    proptest::prop_assert_eq!(shaped, is_email_shaped(&text.to_lowercase()), "{:?}", text);
                }
                None => proptest::prop_assert!(text.chars().any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()), "{:?}", text),
            }
        }

        /// Every text of plain bytes is scanned, exactly, whatever its
        /// length against the scan's blocks.
        #[test]
        fn plain_texts_are_scanned(text in "[!-~]{0,70}") {
            let scan = PlainScan::of(&text);
            proptest::prop_assert_eq!(scan, Some(PlainScan { upper: text.bytes().any(|b| b.is_ascii_uppercase()), ats: text.matches('@').count() }), "{:?}", text);
        }
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let n = Normalizer::Email;
        assert_eq!(n.normalize(" Anna@Example.COM ", &[]), Normalized::Value("anna@example.com".into()));
        assert_eq!(n.normalize("   ", &[]), Normalized::Absent);
        assert_eq!(n.normalize("TEST@test.com", &[]), Normalized::Blocked);
        assert_eq!(n.normalize("undefined", &[]), Normalized::Blocked);
        assert!(matches!(n.normalize("no-at-sign", &[]), Normalized::Invalid(_)));
    }

    #[test]
    fn phones_become_e164() {
        let n = us_phone();
        for raw in ["(650) 253-0000", "650.253.0000", "+1 650 253 0000", "6502530000", "650-253-0000"] {
            assert_eq!(n.normalize(raw, &[]), Normalized::Value("+16502530000".into()), "{raw}");
        }
        assert_eq!(n.normalize("0000000000", &[]), Normalized::Blocked);
        assert_eq!(n.normalize("-1", &[]), Normalized::Blocked);
        assert!(matches!(n.normalize("call me", &[]), Normalized::Invalid(_)));
        assert!(matches!(n.normalize("123", &[]), Normalized::Invalid(_)));
        let gb = Normalizer::parse("phone", Some("gb"), false).unwrap();
        assert_eq!(gb.normalize("020 7946 0000", &[]), Normalized::Value("+442079460000".into()));
        assert!(Normalizer::parse("phone", Some("XX"), false).is_err());
        // An area code opened in 2025 (libphonenumber's metadata knows it).
        assert_eq!(n.normalize("273.230.6085", &[]), Normalized::Value("+12732306085".into()));
        // A number no region of +1 has.
        assert!(matches!(n.normalize("(123) 456-7890", &[]), Normalized::Invalid(_)));
    }

    #[test]
    fn text_and_extra_blocked_values() {
        let plain = Normalizer::Text { fold_case: false };
        let folded = Normalizer::Text { fold_case: true };
        assert_eq!(plain.normalize(" Ab1 ", &[]), Normalized::Value("Ab1".into()));
        assert_eq!(folded.normalize(" Ab1 ", &[]), Normalized::Value("ab1".into()));
        assert_eq!(plain.normalize("guest", &["guest".into()]), Normalized::Blocked);
        assert_eq!(plain.normalize("---", &[]), Normalized::Blocked);
        assert!(Normalizer::parse("soundex", None, false).is_err());
    }

    #[test]
    fn phone_cache_keys_keep_what_matters() {
        assert_eq!(phone_cache_key("(650) 253-0000"), phone_cache_key("650.253.0000"));
        assert_ne!(phone_cache_key("+44 20 7946 0000"), phone_cache_key("44 20 7946 0000"));
        assert_eq!(phone_cache_key("650 253 0000 ext 5"), None);
        // Leading zeros and the count of digits are part of the number.
        assert_ne!(phone_cache_key("0650 253 0000"), phone_cache_key("650 253 0000"));
        assert_ne!(phone_cache_key("00"), phone_cache_key("0"));
        assert_ne!(phone_cache_key("+1"), phone_cache_key("1"));
        assert_eq!(phone_cache_key("12345678901234567").map(|k| k & ((1 << 57) - 1)), Some(12_345_678_901_234_567));
        assert_eq!(phone_cache_key("123456789012345678"), None, "beyond 17 digits");
    }

    #[test]
    fn keys_differ_by_type() {
        assert_ne!(key_of(1, "x"), key_of(2, "x"));
        assert_eq!(key_of(1, "x"), key_of(1, "x"));
    }

    /// The one-check validity of +1 numbers is libphonenumber's own, for
    /// every area code of every North American region (valid or not),
    /// with exchanges and line numbers spread over their range.
    #[test]
    fn north_american_validity_is_libphonenumbers() {
        let util = &*rlibphonenumber::PHONE_NUMBER_UTIL;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut valid, mut checked) = (0, 0);
        for area in 100..1000u64 {
            for _ in 0..6 {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let number = rlibphonenumber::PhoneNumber { country_code: 1, national_number: area * 10_000_000 + (state >> 33) % 10_000_000, ..Default::default() };
                let expected = util.is_valid_number(&number);
                assert_eq!(is_valid_north_american(&number), expected, "{}", number.national_number);
                valid += usize::from(expected);
                checked += 1;
            }
        }
        // Both answers occur, so the comparison means something.
        assert!(valid > checked / 10 && valid < checked, "{valid} valid of {checked}");
    }

    /// The table of prefixes rests on libphonenumber's patterns for the
    /// United States deciding a ten-digit number by its first six digits.
    /// Checked for every prefix with three endings (lowest, highest and
    /// one that varies): a pattern that looked further would almost surely
    /// split some prefix. Then the table's answers are libphonenumber's.
    #[test]
    fn first_region_validity_is_decided_by_six_digits() {
        let util = &*rlibphonenumber::PHONE_NUMBER_UTIL;
        let first = util.get_region_for_country_code(1).expect("country code 1 has regions");
        let valid_here = |national: u64| {
            let number = rlibphonenumber::PhoneNumber { country_code: 1, national_number: national, ..Default::default() };
            util.is_valid_number_for_region(&number, first)
        };
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut valid_prefixes = 0;
        for prefix in 0..PREFIXES as u64 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let base = prefix * PREFIX_SUFFIX_RANGE;
            let answer = valid_here(base);
            for ending in [PREFIX_SUFFIX_RANGE - 1, (state >> 33) % PREFIX_SUFFIX_RANGE] {
                assert_eq!(valid_here(base + ending), answer, "{:010} and {:010} differ", base, base + ending);
            }
            valid_prefixes += usize::from(answer);
        }
        assert!(valid_prefixes > PREFIXES / 10 && valid_prefixes < PREFIXES / 2, "{valid_prefixes} valid prefixes");
        for national in [2_015_550_123, 9_832_123_456, 5_235_201_234, 8_002_345_678, 1_234_567_890, 6_502_530_000] {
            let number = rlibphonenumber::PhoneNumber { country_code: 1, national_number: national, ..Default::default() };
            // Twice: the first fills the table, the second reads it.
            for _ in 0..2 {
                assert_eq!(is_valid_north_american(&number), util.is_valid_number(&number), "{national}");
            }
            assert_eq!(first_region_prefix(national), Some(valid_here(national)), "{national}");
        }
    }

    /// For a number of a known valid area code and exchange, the answer
    /// without the phone cache is the normalizer's, blocked E.164 forms
    /// included; for any other, there is none.
    #[test]
    fn known_north_american_numbers_normalize_alike() {
        let phone = us_phone();
        let blocked = vec!["+12015550123".to_string()];
        // Checking fills the table of prefixes.
        for raw in ["(201) 555-0123", "650.253.0000", "+1 415 555 2671"] {
            assert!(matches!(phone.normalize(raw, &[]), Normalized::Value(_)), "{raw}");
        }
        for raw in ["(201) 555-0123", "201-555-0123", "+1 650 253 0000", "1 (415) 555-2671", "6502530000"] {
            for extra in [&[][..], &blocked[..]] {
                assert_eq!(known_north_american(rlibphonenumber::Region::US, raw, extra), Some(phone.normalize(raw, extra)), "{raw}");
            }
        }
        assert_eq!(known_north_american(rlibphonenumber::Region::US, "(201) 555-0123", &blocked), Some(Normalized::Blocked));
        for raw in ["+44 20 7946 0000", "123-456-7890", "650 253 0000 ext 5", "555-0123"] {
            assert_eq!(known_north_american(rlibphonenumber::Region::US, raw, &[]), None, "{raw}");
        }
        assert_eq!(known_north_american(rlibphonenumber::Region::GB, "(201) 555-0123", &[]), None, "a region outside +1");
    }

    #[test]
    fn e164_north_american_form_keeps_every_digit() {
        assert_eq!(e164_north_american(2_015_550_123), "+12015550123");
        assert_eq!(e164_north_american(123), "+10000000123");
        assert_eq!(e164_north_american(9_999_999_999), "+19999999999");
    }

    /// The full parse of a phone number, without the shortcut.
    fn parsed(region: rlibphonenumber::Region, raw: &str) -> Option<String> {
        let n = parse_phone(region, raw).ok()?;
        rlibphonenumber::PHONE_NUMBER_UTIL
            .is_valid_number(&n)
            .then(|| rlibphonenumber::PHONE_NUMBER_UTIL.format(&n, rlibphonenumber::PhoneNumberFormat::E164).into_owned())
    }

    proptest::proptest! {
        /// The North American shortcut answers only for numbers the full
        /// parse finds valid, and then with the same E.164 form; it
        /// answers for the common spellings of valid numbers.
        #[test]
        fn the_north_american_shortcut_agrees_with_the_full_parse(
            prefix in proptest::sample::select(vec!["", "1", "+1", "+", "+44", "01", "001"]),
            area in proptest::sample::select(vec!["650", "212", "415", "273", "123", "911", "555", "800", "049", "416", "604", "876", "44"]),
            rest in "[0-9]{6,8}",
            separators in proptest::collection::vec(proptest::sample::select(vec!["", " ", "-", ".", "(", ")", "  ", "/", "x"]), 5),
            region in proptest::sample::select(vec!["US", "CA", "JM", "GB", "DE"]),
        ) {
            let raw = format!("{}{}{}{}{}{}{}{}", prefix, separators[0], area, separators[1], &rest[..3], separators[2], &rest[3..], separators[3]);
            let region: rlibphonenumber::Region = region.parse().expect("region");
            let shortcut = north_american(region, raw.trim());
            let full = parsed(region, raw.trim());
            if let Some(e164) = &shortcut {
                proptest::prop_assert_eq!(Some(e164), full.as_ref(), "{:?}", raw);
            }
            let common = separators[..4].iter().all(|s| !matches!(*s, "/" | "x")) && rest.len() == 7 && matches!(prefix, "" | "1" | "+1");
            if common && full.is_some() && region.to_string() != "GB" && region.to_string() != "DE" {
                proptest::prop_assert!(shortcut.is_some(), "{:?} is valid ({:?}) but took the long way", raw, full);
            }
        }
    }
}
