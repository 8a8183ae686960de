//! How sources record values: e-mail, phone and name variations, junk values,
//! identifier permutations.

use crate::config::Noise;
use crate::names::{FirstName, JUNK_EMAILS, JUNK_PHONES};
use crate::rng::{derive, mix64, Rng};

/// A keyed pseudo-random permutation of `[0, limit)`: a 4-round Feistel
/// network over the smallest even-bit power of two >= `limit`, with
/// cycle-walking. Used to turn unique counters into unique, unrelated-looking
/// numbers (phone numbers, e-mail suffixes).
#[derive(Clone, Debug)]
pub(crate) struct Perm {
    half: u32,
    mask: u64,
    keys: [u64; 4],
    limit: u64,
}

impl Perm {
    pub(crate) fn new(limit: u64, seed: u64, stream: u64) -> Perm {
        let limit = limit.max(1);
        let mut bits = 2u32;
        while bits < 64 && (1u64 << bits) < limit {
            bits += 2;
        }
        let half = bits / 2;
        let mut keys = [0u64; 4];
        for (i, k) in keys.iter_mut().enumerate() {
            *k = derive(seed, &[stream, i as u64]);
        }
        Perm {
            half,
            mask: (1u64 << half) - 1,
            keys,
            limit,
        }
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask);
        for k in self.keys {
            let f = mix64(r ^ k) & self.mask;
            let nl = r;
            r = l ^ f;
            l = nl;
        }
        (l << self.half) | r
    }

    /// The image of `x`; `x` must be below the limit (it is reduced modulo
    /// the limit otherwise).
    pub(crate) fn apply(&self, x: u64) -> u64 {
        let x = x % self.limit;
        let mut y = self.encrypt(x);
        while y >= self.limit {
            y = self.encrypt(y);
        }
        y
    }
}

/// Lower-cases and keeps only ASCII letters.
pub(crate) fn email_token(name: &str, out: &mut String) {
    for c in name.chars() {
        if c.is_ascii_alphabetic() {
            out.push(c.to_ascii_lowercase());
        }
    }
}

/// Writes an e-mail address as a source records it: usually verbatim,
/// sometimes with changed case or surrounding whitespace, rarely junk.
/// Returns false if a junk value was written.
pub(crate) fn email_text(rng: &mut Rng, noise: &Noise, canonical: &str, out: &mut String) -> bool {
    out.clear();
    if rng.chance(noise.junk_rate) {
        out.push_str(rng.pick(JUNK_EMAILS));
        return false;
    }
    let lead = rng.chance(noise.email_whitespace_rate);
    let (leading, trailing) = if lead {
        match rng.below(3) {
            0 => (" ", ""),
            1 => ("", " "),
            _ => (" ", "  "),
        }
    } else {
        ("", "")
    };
    out.push_str(leading);
    if rng.chance(noise.email_case_rate) {
        let (local, domain) = canonical.split_once('@').unwrap_or((canonical, ""));
        match rng.below(3) {
            0 => {
                // Title-case each alphabetic run of the local part; capitalise
                // the domain's first letter half of the time.
                let mut start = true;
                for c in local.chars() {
                    if c.is_ascii_alphabetic() {
                        out.push(if start { c.to_ascii_uppercase() } else { c });
                        start = false;
                    } else {
                        out.push(c);
                        start = true;
                    }
                }
                out.push('@');
                if rng.chance(0.5) {
                    let mut cs = domain.chars();
                    if let Some(c) = cs.next() {
                        out.push(c.to_ascii_uppercase());
                    }
                    out.push_str(cs.as_str());
                } else {
                    out.push_str(domain);
                }
            }
            1 => {
                out.push_str(local);
                out.push('@');
                // Example.COM style: capitalised name, upper-case TLD.
                let (name, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
                let mut cs = name.chars();
                if let Some(c) = cs.next() {
                    out.push(c.to_ascii_uppercase());
                }
                out.push_str(cs.as_str());
                if !tld.is_empty() {
                    out.push('.');
                    out.push_str(&tld.to_ascii_uppercase());
                }
            }
            _ => out.push_str(&canonical.to_ascii_uppercase()),
        }
    } else {
        out.push_str(canonical);
    }
    out.push_str(trailing);
    true
}

/// Phone formats, in the order of `Noise::phone_format_weights`.
pub const PHONE_FORMATS: [&str; 6] = [
    "(650) 555-1212",
    "650-555-1212",
    "650.555.1212",
    "+1 650 555 1212",
    "6505551212",
    "+16505551212",
];

/// Writes a 10-digit US number in format `fmt` (index into
/// [`PHONE_FORMATS`]).
pub(crate) fn format_phone(number: u64, fmt: usize, out: &mut String) {
    let d = |i: u32| (b'0' + ((number / 10u64.pow(9 - i)) % 10) as u8) as char;
    let area = |out: &mut String| (0..3).for_each(|i| out.push(d(i)));
    let exch = |out: &mut String| (3..6).for_each(|i| out.push(d(i)));
    let line = |out: &mut String| (6..10).for_each(|i| out.push(d(i)));
    match fmt {
        0 => {
            out.push('(');
            area(out);
            out.push_str(") ");
            exch(out);
            out.push('-');
            line(out);
        }
        1 | 2 => {
            let sep = if fmt == 1 { '-' } else { '.' };
            area(out);
            out.push(sep);
            exch(out);
            out.push(sep);
            line(out);
        }
        3 => {
            out.push_str("+1 ");
            area(out);
            out.push(' ');
            exch(out);
            out.push(' ');
            line(out);
        }
        5 => {
            out.push_str("+1");
            area(out);
            exch(out);
            line(out);
        }
        _ => {
            area(out);
            exch(out);
            line(out);
        }
    }
}

/// Writes a phone number as a source records it (random format, rarely
/// junk). Returns false if a junk value was written.
pub(crate) fn phone_text(rng: &mut Rng, noise: &Noise, number: u64, out: &mut String) -> bool {
    out.clear();
    if rng.chance(noise.junk_rate) {
        out.push_str(rng.pick(JUNK_PHONES));
        return false;
    }
    let fmt = rng.weighted(&noise.phone_format_weights);
    format_phone(number, fmt, out);
    true
}

const KEYBOARD_NEIGHBOURS: [&str; 26] = [
    "qwsz", "vghn", "xdfv", "serfcx", "wsdr", "drtgvc", "ftyhbv", "gyujnb", "ujko", "huikmn",
    "jiolm", "kop", "njk", "bhjm", "iklp", "ol", "wa", "edft", "awedxz", "rfgy", "yhji", "cfgb",
    "qase", "zsdc", "tghu", "asx",
];

/// Applies one random single-character typo to an ASCII name.
pub(crate) fn typo(rng: &mut Rng, s: &mut String) {
    let mut b: Vec<u8> = s.bytes().collect();
    if b.len() < 3 || !b.iter().all(|c| c.is_ascii()) {
        return;
    }
    // Never touch the first letter: people rarely mistype it.
    let i = 1 + rng.index(b.len() - 1);
    match rng.below(4) {
        0 => {
            let c = b[i].to_ascii_lowercase();
            if c.is_ascii_lowercase() {
                let nb = KEYBOARD_NEIGHBOURS[(c - b'a') as usize].as_bytes();
                let r = nb[rng.index(nb.len())];
                b[i] = if b[i].is_ascii_uppercase() {
                    r.to_ascii_uppercase()
                } else {
                    r
                };
            }
        }
        1 => {
            b.remove(i);
        }
        2 => {
            let c = b[i];
            b.insert(i, c);
        }
        _ => {
            if i + 1 < b.len() {
                b.swap(i, i + 1);
            } else {
                b.swap(i - 1, i);
                if i - 1 == 0 {
                    // Keep the capital at the front.
                    b[0] = b[0].to_ascii_uppercase();
                    b[1] = b[1].to_ascii_lowercase();
                }
            }
        }
    }
    s.clear();
    s.push_str(&String::from_utf8_lossy(&b));
}

/// Writes a name as a source records it: sometimes a typo, sometimes upper
/// or lower case.
pub(crate) fn name_text(rng: &mut Rng, noise: &Noise, name: &str, out: &mut String) {
    out.clear();
    out.push_str(name);
    if rng.chance(noise.name_typo_rate) {
        typo(rng, out);
    }
    if rng.chance(noise.name_case_rate) {
        *out = if rng.chance(0.7) {
            out.to_ascii_uppercase()
        } else {
            out.to_ascii_lowercase()
        };
    }
}

/// Writes a first name as recorded: sometimes a nickname, then name noise.
pub(crate) fn first_name_text(rng: &mut Rng, noise: &Noise, first: &FirstName, out: &mut String) {
    let base = if !first.nicknames.is_empty() && rng.chance(noise.nickname_rate) {
        rng.pick(first.nicknames)
    } else {
        first.name
    };
    name_text(rng, noise, base, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perm_is_a_permutation() {
        for limit in [1u64, 7, 100, 1000, 4097] {
            let p = Perm::new(limit, 5, 1);
            let mut seen = vec![false; limit as usize];
            for x in 0..limit {
                let y = p.apply(x);
                assert!(y < limit);
                assert!(!seen[y as usize]);
                seen[y as usize] = true;
            }
        }
    }

    #[test]
    fn phone_formats() {
        let mut s = String::new();
        let expect = PHONE_FORMATS;
        for (i, e) in expect.iter().enumerate() {
            s.clear();
            format_phone(6_505_551_212, i, &mut s);
            assert_eq!(&s, e);
        }
    }

    #[test]
    fn typos_change_one_character() {
        let mut rng = Rng::new(3, &[]);
        for _ in 0..1000 {
            let mut s = "Katherine".to_string();
            typo(&mut rng, &mut s);
            assert!(s.starts_with('K'), "{s}");
            assert!((8..=10).contains(&s.len()), "{s}");
        }
    }
}
