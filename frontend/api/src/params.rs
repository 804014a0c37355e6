//! Request parameters as Prometheus reads them: repeated keys (`match[]`), query string and
//! form body alike, times as float seconds or RFC 3339.

use lookout_model::TimestampMs;

/// Decoded `key=value` pairs in request order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes (also the query string syntax).
    pub fn parse(input: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(input)
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// Appends another set.
    pub fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// What Go's time package prints for the smallest and largest times Prometheus uses as open
/// bounds; clients such as `promtool` and Grafana send them back.
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// Parses a Prometheus API time: float seconds since the epoch, or RFC 3339.
pub fn parse_time(text: &str) -> Result<TimestampMs, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return TimestampMs::from_seconds_f64(seconds).map_err(|error| error.to_string());
    }
    match text {
        MIN_TIME_FORMATTED => return Ok(TimestampMs::MIN),
        MAX_TIME_FORMATTED => return Ok(TimestampMs::MAX),
        _ => {}
    }
    parse_rfc3339(text).ok_or_else(|| format!("cannot parse {text:?} to a valid timestamp"))
}

/// Parses a Prometheus API duration into nanoseconds: float seconds (`15`, `0.5`) or a
/// duration string (`1m30s`, `2h`, `100ms`).
pub fn parse_duration_nanos(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        let nanos = seconds * 1e9;
        // i64::MAX as f64 rounds up to 2^63: compare against that exclusive bound.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if !(-LIMIT..LIMIT).contains(&nanos) {
            return Err(format!(
                "cannot parse {text:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(nanos as i64);
    }
    lookout_promql::parse_duration(text)
        .ok()
        .and_then(|millis| millis.checked_mul(1_000_000))
        .ok_or_else(|| format!("cannot parse {text:?} to a valid duration"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<TimestampMs> {
    lookout_model::time::parse_rfc3339(text).map(TimestampMs)
}

/// Prometheus 3 lets clients send UTF-8 label names in URL paths escaped as `U__` followed
/// by the name with `_` written `__` and other characters outside `[a-zA-Z0-9]` written
/// `_<hex code point>_`. Names without the prefix are returned unchanged.
pub fn unescape_label_name(name: &str) -> String {
    let Some(escaped) = name.strip_prefix("U__") else {
        return name.to_owned();
    };
    let mut out = String::new();
    let mut chars = escaped.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let hex: String = chars.by_ref().take_while(|c| *c != '_').collect();
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(decoded) => out.push(decoded),
            None => return name.to_owned(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_percent_encoding() {
        let params = Params::parse(b"match%5B%5D=up%7Bjob%3D%22a%22%7D&match[]=x&start=1.5&q=a+b");
        assert_eq!(
            params.all("match[]").collect::<Vec<_>>(),
            ["up{job=\"a\"}", "x"]
        );
        assert_eq!(params.get("q"), Some("a b"));
        assert_eq!(
            parse_time(params.get("start").unwrap()).unwrap(),
            TimestampMs(1500)
        );
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), TimestampMs(0));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            TimestampMs(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.25Z").unwrap(),
            TimestampMs(1_700_000_000_250)
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20+02:00").unwrap(),
            TimestampMs(1_700_000_000_000)
        );
        assert!(parse_time("2023-13-01T00:00:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
    }

    #[test]
    fn durations_as_seconds_or_strings() {
        assert_eq!(parse_duration_nanos("15").unwrap(), 15_000_000_000);
        assert_eq!(parse_duration_nanos("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_duration_nanos("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration_nanos("100ms").unwrap(), 100_000_000);
        assert_eq!(parse_duration_nanos("-1").unwrap(), -1_000_000_000);
        assert_eq!(
            parse_duration_nanos("soon").unwrap_err(),
            "cannot parse \"soon\" to a valid duration"
        );
        assert!(parse_duration_nanos("1e300")
            .unwrap_err()
            .contains("overflows"));
    }

    #[test]
    fn go_boundary_times() {
        assert_eq!(parse_time(MIN_TIME_FORMATTED).unwrap(), TimestampMs::MIN);
        assert_eq!(parse_time(MAX_TIME_FORMATTED).unwrap(), TimestampMs::MAX);
    }

    #[test]
    fn escaped_label_names() {
        assert_eq!(unescape_label_name("job"), "job");
        assert_eq!(unescape_label_name("U__service_2e_name"), "service.name");
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
    }
}
