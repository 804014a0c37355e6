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
    lookout_model::time::parse_iso8601(text)
}

/// Year, month, day, hour, minute, second and millisecond of `millis` after the epoch,
/// counted out day by day from 1970: the oracle the property tests check parsers against.
#[cfg(test)]
pub(crate) fn civil(millis: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let is_leap = |year: i64| year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let mut days = millis.div_euclid(86_400_000);
    let rest = millis.rem_euclid(86_400_000);
    let mut year = 1970;
    loop {
        let length = if is_leap(year) { 366 } else { 365 };
        if days < length {
            break;
        }
        days -= length;
        year += 1;
    }
    let mut month = 1;
    loop {
        let length = match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if days < length {
            break;
        }
        days -= length;
        month += 1;
    }
    (
        year,
        month,
        days + 1,
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    )
}

/// `millis` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[cfg(test)]
pub(crate) fn format_utc(millis: i64) -> String {
    let (year, month, day, hour, minute, second, millis) = civil(millis);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
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

    /// How the offset of a generated date-time is written.
    #[derive(Debug, Clone, Copy)]
    enum OffsetForm {
        Colon,
        Compact,
        HoursOnly,
        Zulu,
        Absent,
    }

    proptest::proptest! {
        /// Any instant from 1970 to 9999, written at any offset in any accepted form, with
        /// or without fraction digits beyond milliseconds, reads back as that instant.
        #[test]
        fn iso8601_round_trips(
            instant in 86_400_000i64..253_402_214_400_000,
            offset_minutes in -(18 * 60 + 59)..=(18i64 * 60 + 59),
            form in proptest::sample::select(vec![
                OffsetForm::Colon,
                OffsetForm::Compact,
                OffsetForm::HoursOnly,
                OffsetForm::Zulu,
                OffsetForm::Absent,
            ]),
            extra_digits in "[0-9]{0,4}",
            separator in proptest::sample::select(vec!['T', 't', ' ']),
            as_time_field: bool,
        ) {
            let offset_minutes = match form {
                OffsetForm::Zulu | OffsetForm::Absent => 0,
                OffsetForm::HoursOnly => offset_minutes / 60 * 60,
                OffsetForm::Colon | OffsetForm::Compact => offset_minutes,
            };
            let (year, month, day, hour, minute, second, millis) =
                civil(instant + offset_minutes * 60_000);
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let (hours, minutes) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
            let offset = match form {
                OffsetForm::Colon => format!("{sign}{hours:02}:{minutes:02}"),
                OffsetForm::Compact => format!("{sign}{hours:02}{minutes:02}"),
                OffsetForm::HoursOnly => format!("{sign}{hours:02}"),
                OffsetForm::Zulu => "Z".to_owned(),
                OffsetForm::Absent => String::new(),
            };
            let text = format!(
                "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}.{millis:03}{extra_digits}{offset}"
            );
            let parsed = if as_time_field {
                parse_time(&Value::String(text.clone()))
            } else {
                parse_iso8601(&text)
            };
            proptest::prop_assert_eq!(parsed, Some(instant), "{}", text);
        }

        /// Epoch milliseconds as a JSON integer, a string, or a whole float.
        #[test]
        fn epoch_milliseconds_round_trip(millis: i64, small in -(1i64 << 52)..(1i64 << 52)) {
            proptest::prop_assert_eq!(parse_time(&serde_json::json!(millis)), Some(millis));
            proptest::prop_assert_eq!(parse_time(&Value::String(format!(" {millis} "))), Some(millis));
            proptest::prop_assert_eq!(parse_time(&serde_json::json!(small as f64 + 0.0)), Some(small));
        }

        /// Arbitrary text, and text shaped like a date-time with junk in it, never panics.
        #[test]
        fn arbitrary_text_never_panics(
            text in "\\PC{0,32}|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.,é+Zz-]{0,20}",
        ) {
            let _ = parse_time(&Value::String(text.clone()));
            let _ = parse_iso8601(&text);
        }

        #[test]
        fn arbitrary_floats_never_panic(value: f64) {
            let parsed = parse_time(&serde_json::json!(value));
            if let Some(millis) = parsed {
                proptest::prop_assert_eq!(millis as f64, value);
            }
        }
    }
}
