//! The `time` field of an SDK measurement (spec §3.1): a 25-character ISO-8601 string with an
//! offset (what the Java SDK sends), epoch milliseconds as a number or a string (what the relay
//! exporter sends), or any other ISO-8601 date-time.

use serde_json::Value;

/// Milliseconds since the epoch for a `time` value, or `None` when it is none of the accepted
/// forms.
pub fn parse_time(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => {
            if let Some(millis) = number.as_i64() {
                return Some(millis);
            }
            // `1.5592E12` style: accepted when it is a whole number of milliseconds.
            let float = number.as_f64()?;
            let whole = float.fract() == 0.0 && float.abs() < 9.0e18;
            whole.then_some(float as i64)
        }
        Value::String(text) => {
            let text = text.trim();
            if let Ok(millis) = text.parse::<i64>() {
                return Some(millis);
            }
            parse_iso8601(text)
        }
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM[:SS[.fraction]][Z|±HH:MM|±HHMM|±HH]`; a date-time without an offset is
/// read as UTC. Fractions beyond milliseconds are cut.
pub fn parse_iso8601(text: &str) -> Option<i64> {
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
    if bytes.get(position) == Some(&b':') {
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
    let offset_minutes = parse_offset(text.get(position..)?)?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
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

fn days_in_month(year: i64, month: i64) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REPORT_MS: i64 = 1_559_199_870_000;

    #[test]
    fn the_sdk_format_with_an_offset() {
        assert_eq!(
            parse_time(&json!("2019-05-30T15:04:30+08:00")),
            Some(REPORT_MS)
        );
        assert_eq!(
            parse_time(&json!("2019-05-30T01:04:30-06:00")),
            Some(REPORT_MS)
        );
    }

    #[test]
    fn epoch_milliseconds_as_number_or_string() {
        assert_eq!(parse_time(&json!(REPORT_MS)), Some(REPORT_MS));
        assert_eq!(parse_time(&json!("1559199870000")), Some(REPORT_MS));
        assert_eq!(parse_time(&json!(1.55919987e12)), Some(REPORT_MS));
        assert_eq!(parse_time(&json!(1.5)), None);
    }

    #[test]
    fn other_iso8601_forms() {
        assert_eq!(parse_time(&json!("2019-05-30T07:04:30Z")), Some(REPORT_MS));
        assert_eq!(
            parse_time(&json!("2019-05-30T07:04:30.123Z")),
            Some(REPORT_MS + 123)
        );
        assert_eq!(
            parse_time(&json!("2019-05-30T07:04:30.5")),
            Some(REPORT_MS + 500)
        );
        assert_eq!(
            parse_time(&json!("2019-05-30T15:04:30+0800")),
            Some(REPORT_MS)
        );
        assert_eq!(
            parse_time(&json!("2019-05-30T07:04Z")),
            Some(REPORT_MS - 30_000)
        );
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00Z")), Some(0));
        assert_eq!(
            parse_time(&json!("2020-02-29T00:00:00Z")),
            Some(1_582_934_400_000)
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            json!("yesterday"),
            json!("2019-02-29T00:00:00Z"),
            json!("2019-05-30T25:04:30Z"),
            json!("2019-05-30T07:04:30+8"),
            json!("2019-05-30"),
            json!(null),
            json!(true),
            json!({}),
        ] {
            assert_eq!(parse_time(&bad), None, "{bad}");
        }
    }
}
