//! Calendar helpers: Unix seconds <-> civil date/time (proleptic Gregorian,
//! UTC), without a dependency on the wall clock or a date library.

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Days since 1970-01-01 of the civil date `y-m-d` (Howard Hinnant's
/// algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date `(y, m, d)` of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds (UTC) of a civil date at midnight.
pub fn timestamp(y: i32, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d) * DAY
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` (UTC) into Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut it = date.split('-');
    let y: i32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = timestamp(y, m, d);
    if let Some(t) = time {
        let mut it = t.split(':');
        let h: i64 = it.next()?.parse().ok()?;
        let mi: i64 = it.next()?.parse().ok()?;
        let se: i64 = it.next().unwrap_or("0").parse().ok()?;
        if it.next().is_some()
            || !(0..24).contains(&h)
            || !(0..60).contains(&mi)
            || !(0..60).contains(&se)
        {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
    }
    // Reject dates like 2026-02-31 that do not round-trip.
    let (yy, mm, dd) = civil_from_days(secs.div_euclid(DAY));
    if yy != i64::from(y) || mm != m || dd != d {
        return None;
    }
    Some(secs)
}

/// Appends `YYYY-MM-DD HH:MM:SS` for Unix seconds `t` to `out`.
pub fn push_timestamp(out: &mut Vec<u8>, t: i64) {
    let days = t.div_euclid(DAY);
    let secs = t.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let y = y as u32;
        out.extend_from_slice(&[
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
        ]);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
    let h = (secs / 3600) as u32;
    let mi = (secs / 60 % 60) as u32;
    let s = (secs % 60) as u32;
    out.extend_from_slice(&[
        b'-',
        b'0' + (m / 10) as u8,
        b'0' + (m % 10) as u8,
        b'-',
        b'0' + (d / 10) as u8,
        b'0' + (d % 10) as u8,
        b' ',
        b'0' + (h / 10) as u8,
        b'0' + (h % 10) as u8,
        b':',
        b'0' + (mi / 10) as u8,
        b'0' + (mi % 10) as u8,
        b':',
        b'0' + (s / 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// `YYYY-MM-DD HH:MM:SS` for Unix seconds `t`.
pub fn format_timestamp(t: i64) -> String {
    let mut v = Vec::with_capacity(19);
    push_timestamp(&mut v, t);
    String::from_utf8_lossy(&v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
        let t = timestamp(2026, 11, 1);
        assert_eq!(t, 1_793_491_200);
        assert_eq!(
            format_timestamp(t + 3 * 3600 + 4 * 60 + 5),
            "2026-11-01 03:04:05"
        );
        for z in [-800_000i64, -1, 0, 59, 60, 365, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y as i32, m, d), z);
        }
        assert_eq!(parse_timestamp("2024-02-29"), Some(timestamp(2024, 2, 29)));
        assert_eq!(parse_timestamp("2023-02-29"), None);
        assert_eq!(
            parse_timestamp("2026-01-02 03:04:05"),
            Some(timestamp(2026, 1, 2) + 11_045)
        );
        assert_eq!(parse_timestamp("garbage"), None);
    }
}
