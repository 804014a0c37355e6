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
