//! Wall-clock time as the engine's files and APIs write it: RFC 3339,
//! UTC, nanoseconds (`2026-12-04T14:05:06.123456789Z`), the form of
//! runc's `created`, Docker's json-file logs and its API's timestamps.
//! Hand-written: two small functions do not warrant a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` in RFC 3339 form, UTC, with nanoseconds:
/// `2026-12-04T14:05:06.123456789Z` (what runc prints for `created`).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, public-domain date algorithms).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// `civil_from_days`, from the same public-domain algorithms).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 time (`2026-12-04T14:05:06.123Z`, `…+01:00`), or a
/// number of seconds since the epoch with an optional fraction
/// (`1796393106.5`, as `docker logs --since` sends it). `None` if it is
/// neither, or before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    use std::time::Duration;
    let nanos_of = |fraction: &str| -> Option<u32> {
        if fraction.is_empty() {
            return Some(0);
        }
        if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{fraction:0<9}").parse().ok()
    };
    if let Some((secs, fraction)) = text.split_once('.').or(Some((text, "")))
        && !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
    {
        let secs: u64 = secs.parse().ok()?;
        return UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos_of(fraction)?));
    }
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) =
        (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0;
    if let Some(after) = rest.strip_prefix('.') {
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        nanos = nanos_of(&after[..end])?;
        rest = &after[end..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_across_leap_years_and_centuries() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(at(1_796_393_106), "2026-12-04T14:05:06.000000000Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.000000000Z");
    }

    #[test]
    fn times_parse_back_in_every_form() {
        let at = |secs, nanos| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(
            parse_rfc3339("2026-12-04T14:05:06.000000000Z"),
            at(1_796_393_106, 0)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5Z"),
            at(951_782_400, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-04T15:05:06+01:00"),
            at(1_796_393_106, 0)
        );
        assert_eq!(
            parse_rfc3339("1796393106.25"),
            at(1_796_393_106, 250_000_000)
        );
        assert_eq!(parse_rfc3339("1796393106"), at(1_796_393_106, 0));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-04T14:05:06",
            "1.2.3",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let now = SystemTime::now();
        let back = parse_rfc3339(&rfc3339(now)).unwrap();
        assert_eq!(back, now);
    }
}
