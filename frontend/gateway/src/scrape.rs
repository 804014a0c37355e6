//! Pull: Lookout scraping Prometheus targets itself, as the pure parts of a scrape manager.
//!
//! - [`config`]: the Prometheus-style YAML (`global`, `scrape_configs`: static and file
//!   service discovery, relabelling, `honor_labels`, `honor_timestamps`, interval, timeout,
//!   path, params, basic/bearer auth) and SOFALookout's `metric_scrape/*.yml` jobs
//!   (spec §3.4), both read into one validated [`config::ScrapeConfig`] list;
//! - [`relabel`]: the relabel actions (`replace`, `keep`, `drop`, `labelmap`, `labeldrop`,
//!   `labelkeep`, `hashmod`, `lowercase`, `uppercase`, `keepequal`, `dropequal`) with
//!   Prometheus' semantics;
//! - [`target`]: target groups to targets: discovered labels, relabelling, the final labels
//!   and the scrape URL;
//! - [`samples`]: a scraped body to samples (text 0.0.4 or OpenMetrics through
//!   [`crate::exposition`]), `honor_labels`, `metric_relabel_configs`, the report series
//!   (`up`, `scrape_duration_seconds`, ...) and staleness markers for series that disappear,
//!   for a failing target and for a target that goes away ([`samples::ScrapeCache`]).
//!
//! No HTTP client, no timers and no file reads here: the server runs the loops, fetches the
//! bodies and reads the files, and calls these functions.

pub mod config;
pub mod relabel;
pub mod samples;
pub mod target;

/// A duration as Prometheus writes them: `1h30m`, `15s`, `500ms`, units `ms`, `s`, `m`, `h`,
/// `d`, `w`, `y`, largest first, each at most once. `0` alone is zero. Milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let invalid = || format!("not a valid duration string: {text:?}");
    if text == "0" {
        return Ok(0);
    }
    if text.is_empty() {
        return Err(invalid());
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_length = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_length];
        rest = &rest[unit_length..];
        let index = UNITS
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(invalid)?;
        if last_unit.is_some_and(|last| index <= last) {
            return Err(invalid());
        }
        last_unit = Some(index);
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(|| format!("duration out of range: {text:?}"))?;
    }
    Ok(total)
}

/// Milliseconds as Prometheus prints a duration: `1m`, `1h30m`, `15s`, `500ms`, `0s`.
pub fn format_duration(millis: u64) -> String {
    if millis == 0 {
        return "0s".into();
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut out = String::new();
    let mut rest = millis;
    for (name, size) in UNITS {
        let count = rest / size;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            rest -= count * size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_prometheus_does() {
        assert_eq!(parse_duration("15s"), Ok(15_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "15", "s", "1x", "30s1m", "1s1s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(60_000), "1m");
        assert_eq!(format_duration(90_000), "1m30s");
        assert_eq!(format_duration(10_000), "10s");
        assert_eq!(format_duration(1_500), "1s500ms");
        assert_eq!(format_duration(0), "0s");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_durations_never_panic(text in "[0-9a-z.]{0,12}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn printed_durations_read_back(millis in 0u64..10_000_000_000) {
            proptest::prop_assert_eq!(parse_duration(&format_duration(millis)), Ok(millis));
        }
    }
}
