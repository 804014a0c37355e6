//! Calendar arithmetic and ISO-8601 / RFC 3339 parsing in UTC, shared by the HTTP API (query
//! times), the gateways (SDK timestamps) and PromQL's date functions. Proleptic Gregorian
//! calendar, days counted from 1970-01-01.

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `year` has a 29 February.
pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1–12) of `year`; `None` for a month out of range.
pub fn days_in_month(year: i64, month: i64) -> Option<i64> {
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => return None,
    })
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM[:SS[.fraction]][Z|±HH:MM|±HHMM|±HH]`
/// (`T`, `t` or a space between date and time). Without an offset the time is UTC; digits
/// beyond milliseconds are cut.
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let parsed = parse_parts(text)?;
    Some(parsed.millis)
}

/// Milliseconds since the epoch of an RFC 3339 date-time: like [`parse_iso8601`] but seconds
/// and an offset (`Z` or `±HH:MM`) are required.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let parsed = parse_parts(text)?;
    (parsed.has_seconds && parsed.rfc3339_offset).then_some(parsed.millis)
}

struct Parsed {
    millis: i64,
    has_seconds: bool,
    rfc3339_offset: bool,
}

fn parse_parts(text: &str) -> Option<Parsed> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if bytes.len() < 16 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute) = (digits(11..13)?, digits(14..16)?);
    let mut position = 16;
    let mut second = 0;
    let mut millis = 0;
    let has_seconds = bytes.get(position) == Some(&b':');
    if has_seconds {
        second = digits(position + 1..position + 3)?;
        position += 3;
        if matches!(bytes.get(position), Some(b'.' | b',')) {
            let start = position + 1;
            let count = bytes[start..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            if count == 0 {
                return None;
            }
            let kept = &text[start..start + count.min(3)];
            millis = kept.parse::<i64>().ok()? * 10i64.pow(3 - kept.len() as u32);
            position = start + count;
        }
    }
    let valid_day = (1..=days_in_month(year, month)?).contains(&day);
    if !valid_day || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset = text.get(position..)?;
    let rfc3339_offset =
        matches!(offset, "Z" | "z") || (offset.len() == 6 && offset.as_bytes()[3] == b':');
    let offset_minutes = parse_offset(offset)?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(Parsed {
        millis: seconds * 1000 + millis,
        has_seconds,
        rfc3339_offset,
    })
}

/// Minutes east of UTC for `""`, `Z`, `±HH:MM`, `±HHMM` or `±HH`.
fn parse_offset(text: &str) -> Option<i64> {
    if text.is_empty() || text == "Z" || text == "z" {
        return Some(0);
    }
    let sign = match text.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = &text[1..];
    let (hours, minutes) = match rest.len() {
        2 => (rest, "00"),
        4 => (rest.get(..2)?, rest.get(2..)?),
        5 if rest.as_bytes()[2] == b':' => (rest.get(..2)?, rest.get(3..)?),
        _ => return None,
    };
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits(hours) || !all_digits(minutes) {
        return None;
    }
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours <= 18 && minutes <= 59).then_some(sign * (hours * 60 + minutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_across_eras_and_leap_days() {
        for days in [-719_468, -1, 0, 59, 60, 11_016, 19_782, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, i64::from(month), i64::from(day)),
                days
            );
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(days_in_month(2100, 2), Some(28));
        assert_eq!(days_in_month(2000, 2), Some(29));
        assert_eq!(days_in_month(2000, 13), None);
    }

    #[test]
    fn iso8601_and_rfc3339() {
        assert_eq!(parse_iso8601("1970-01-01T00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2019-05-30T15:04:30+08:00"),
            Some(1_559_199_870_000)
        );
        assert_eq!(
            parse_iso8601("2019-05-30 07:04:30.5"),
            Some(1_559_199_870_500)
        );
        assert_eq!(
            parse_iso8601("2019-05-30T07:04:30.123456+0000"),
            Some(1_559_199_870_123)
        );
        assert_eq!(
            parse_rfc3339("2019-05-30T07:04:30.123Z"),
            Some(1_559_199_870_123)
        );
        assert_eq!(
            parse_rfc3339("2019-05-30T07:04Z"),
            None,
            "seconds are required"
        );
        assert_eq!(
            parse_rfc3339("2019-05-30T07:04:30"),
            None,
            "an offset is required"
        );
        assert_eq!(parse_rfc3339("2019-05-30T07:04:30+0800"), None);
        assert_eq!(parse_iso8601("2019-02-30T00:00:00Z"), None);
        assert_eq!(parse_iso8601("not a date"), None);
    }
}
