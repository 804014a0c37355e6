//! Prometheus duration literals (`1h30m`, `250ms`, `2w`) and duration expressions
//! (`[5m + step()]`, `offset min_of(range(), 1h)`).
//!
//! Durations are kept in milliseconds. The conversions from seconds follow Prometheus exactly:
//! a plain number or literal is rounded to whole nanoseconds and then truncated to
//! milliseconds, the result of arithmetic is truncated to milliseconds.

use crate::ast::{DurationExpr, DurationOp};
use crate::error::DurationError;

const MS_PER_SECOND: i64 = 1000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;
const MS_PER_WEEK: i64 = 7 * MS_PER_DAY;
const MS_PER_YEAR: i64 = 365 * MS_PER_DAY;

/// Ranges and steps are kept in whole milliseconds, so a positive duration below 1ms (which
/// Prometheus would accept as a useless zero-length window) is rejected.
pub(crate) const SUB_MILLISECOND: &str = "duration must be at least 1ms";

/// Largest duration in milliseconds: Prometheus keeps durations as signed 64-bit nanoseconds.
const MAX_MS: i64 = i64::MAX / 1_000_000;

/// Largest magnitude of a duration in seconds (2^63 ns), as Prometheus checks it.
const MAX_SECONDS: f64 = 9_223_372_036.854_776;

/// Units in the only order they may appear in, biggest first.
const UNITS: [(&str, i64); 7] = [
    ("y", MS_PER_YEAR),
    ("w", MS_PER_WEEK),
    ("d", MS_PER_DAY),
    ("h", MS_PER_HOUR),
    ("m", MS_PER_MINUTE),
    ("s", MS_PER_SECOND),
    ("ms", 1),
];

/// Parses a duration literal such as `5m`, `1h30m`, `10s53ms` or `0` into milliseconds.
///
/// Units are `y` (365 days), `w`, `d`, `h`, `m`, `s` and `ms`; each may appear once, in that
/// order, with a non-negative integer count. The error text follows Prometheus.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    if text == "0" {
        return Ok(0);
    }
    if text.is_empty() {
        return Err("empty duration string".to_owned());
    }
    let invalid = || format!("not a valid duration string: {text:?}");
    let bytes = text.as_bytes();
    let mut index = 0;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while index < bytes.len() {
        let digits_start = index;
        while index < bytes.len() && bytes[index].is_ascii_digit() {
            index += 1;
        }
        if index == digits_start {
            return Err(invalid());
        }
        let count: u64 = text[digits_start..index].parse().map_err(|_| invalid())?;
        let unit_start = index;
        while index < bytes.len() && !bytes[index].is_ascii_digit() {
            index += 1;
        }
        let unit = &text[unit_start..index];
        if unit.is_empty() {
            return Err(invalid());
        }
        let Some(position) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} in duration {text:?}"));
        };
        if position < next_unit {
            return Err(invalid());
        }
        next_unit = position + 1;
        let multiplier = UNITS[position].1;
        let out_of_range = || "duration out of range".to_owned();
        let count = i64::try_from(count).map_err(|_| out_of_range())?;
        let part = count.checked_mul(multiplier).ok_or_else(out_of_range)?;
        total = total.checked_add(part).ok_or_else(out_of_range)?;
        if total > MAX_MS {
            return Err(out_of_range());
        }
    }
    Ok(total)
}

/// Formats milliseconds the way Prometheus prints durations: `1h30m`, `90d` (years and
/// weeks only when they divide exactly), `0s` for zero, a leading `-` for negative values.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut rest = ms.unsigned_abs();
    for (index, (unit, multiplier)) in UNITS.iter().enumerate() {
        let multiplier = multiplier.unsigned_abs();
        let exact_only = index < 2;
        if exact_only && !rest.is_multiple_of(multiplier) {
            continue;
        }
        let count = rest / multiplier;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            rest -= count * multiplier;
        }
    }
    out
}

/// Whether `seconds` is too large in magnitude to be a Prometheus duration.
pub(crate) fn seconds_out_of_range(seconds: f64) -> bool {
    !(-MAX_SECONDS..=MAX_SECONDS).contains(&seconds)
}

/// Converts the seconds of a plain number or duration literal to milliseconds the way
/// Prometheus does: round to whole nanoseconds, then truncate to milliseconds.
pub(crate) fn literal_seconds_to_ms(seconds: f64) -> i64 {
    let nanos = (seconds * 1e9).round() as i64;
    nanos / 1_000_000
}

/// Converts the seconds produced by duration arithmetic to milliseconds the way Prometheus
/// does: truncate towards zero.
pub(crate) fn computed_seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0) as i64
}

/// The query-dependent inputs of a duration expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationContext {
    /// `step()`: the query step in milliseconds (0 for instant queries).
    pub step_ms: i64,
    /// `range()`: end minus start in milliseconds (0 for instant queries).
    pub range_ms: i64,
}

impl DurationExpr {
    /// Whether the expression uses `step()` or `range()` and so can only be evaluated once the
    /// query is known.
    pub fn depends_on_query(&self) -> bool {
        match self {
            DurationExpr::Number(_) | DurationExpr::Duration(_) => false,
            DurationExpr::Step | DurationExpr::Range => true,
            DurationExpr::Neg(inner) | DurationExpr::Paren(inner) => inner.depends_on_query(),
            DurationExpr::Binary { lhs, rhs, .. }
            | DurationExpr::MinOf(lhs, rhs)
            | DurationExpr::MaxOf(lhs, rhs) => lhs.depends_on_query() || rhs.depends_on_query(),
        }
    }

    /// The value in seconds for the given step and query range (both in milliseconds).
    pub fn evaluate_seconds(&self, step_ms: i64, range_ms: i64) -> Result<f64, DurationError> {
        self.eval(DurationContext { step_ms, range_ms })
    }

    pub(crate) fn eval(&self, context: DurationContext) -> Result<f64, DurationError> {
        Ok(match self {
            DurationExpr::Number(seconds) => *seconds,
            DurationExpr::Duration(ms) => *ms as f64 / 1000.0,
            DurationExpr::Step => context.step_ms as f64 / 1000.0,
            DurationExpr::Range => context.range_ms as f64 / 1000.0,
            DurationExpr::Neg(inner) => -inner.eval(context)?,
            DurationExpr::Paren(inner) => inner.eval(context)?,
            DurationExpr::MinOf(lhs, rhs) => go_min(lhs.eval(context)?, rhs.eval(context)?),
            DurationExpr::MaxOf(lhs, rhs) => go_max(lhs.eval(context)?, rhs.eval(context)?),
            DurationExpr::Binary { op, lhs, rhs } => {
                let (lhs, rhs) = (lhs.eval(context)?, rhs.eval(context)?);
                match op {
                    DurationOp::Add => lhs + rhs,
                    DurationOp::Sub => lhs - rhs,
                    DurationOp::Mul => lhs * rhs,
                    DurationOp::Div => {
                        if rhs == 0.0 {
                            return Err(duration_error("division by zero"));
                        }
                        lhs / rhs
                    }
                    DurationOp::Mod => {
                        if rhs == 0.0 {
                            return Err(duration_error("modulo by zero"));
                        }
                        lhs % rhs
                    }
                    DurationOp::Pow => lhs.powf(rhs),
                }
            }
        })
    }

    /// Evaluates to milliseconds, with Prometheus' checks: the value must be finite, within
    /// range, and (unless `allow_negative`, as for offsets) greater than zero.
    pub(crate) fn to_ms(
        &self,
        context: DurationContext,
        allow_negative: bool,
    ) -> Result<i64, DurationError> {
        let seconds = self.eval(context)?;
        if !seconds.is_finite() {
            return Err(duration_error("duration is NaN or infinite"));
        }
        if seconds <= 0.0 && !allow_negative {
            return Err(duration_error("duration must be greater than 0"));
        }
        if seconds_out_of_range(seconds) {
            return Err(duration_error("duration is out of range"));
        }
        let ms = computed_seconds_to_ms(seconds);
        if ms == 0 && !allow_negative {
            return Err(duration_error(SUB_MILLISECOND));
        }
        Ok(ms)
    }
}

fn duration_error(message: &str) -> DurationError {
    DurationError {
        message: message.to_owned(),
    }
}

/// `math.Min` as Go defines it: NaN wins, -0 is smaller than +0.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == b {
        return if a.is_sign_negative() { a } else { b };
    }
    a.min(b)
}

/// `math.Max` as Go defines it: NaN wins, +0 is larger than -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == b {
        return if a.is_sign_positive() { a } else { b };
    }
    a.max(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_in_order() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("10s53ms"), Ok(10_053));
        assert_eq!(parse_duration("1y"), Ok(MS_PER_YEAR));
        assert_eq!(parse_duration("2w1d"), Ok(15 * MS_PER_DAY));
        assert_eq!(parse_duration("1111111s"), Ok(1_111_111_000));
        assert_eq!(parse_duration("0s"), Ok(0));
    }

    #[test]
    fn rejects_bad_durations() {
        assert_eq!(
            parse_duration("5m1h"),
            Err("not a valid duration string: \"5m1h\"".to_owned())
        );
        assert_eq!(
            parse_duration("5m1m"),
            Err("not a valid duration string: \"5m1m\"".to_owned())
        );
        assert_eq!(
            parse_duration("5y1hs"),
            Err("unknown unit \"hs\" in duration \"5y1hs\"".to_owned())
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5").is_err());
        assert_eq!(
            parse_duration("300y"),
            Err("duration out of range".to_owned())
        );
    }

    #[test]
    fn formats_like_prometheus() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(300_000), "5m");
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(90 * MS_PER_DAY), "90d");
        assert_eq!(format_duration(14 * MS_PER_DAY), "2w");
        assert_eq!(format_duration(MS_PER_YEAR), "1y");
        assert_eq!(format_duration(MS_PER_YEAR + MS_PER_DAY), "366d");
        assert_eq!(format_duration(1_001), "1s1ms");
        assert_eq!(format_duration(-60_000), "-1m");
    }

    #[test]
    fn format_then_parse_is_identity() {
        for ms in [
            1,
            999,
            1000,
            61_001,
            3_600_000,
            86_400_000,
            7 * 86_400_000,
            123_456_789,
        ] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
        }
    }

    #[test]
    fn conversions_follow_prometheus() {
        assert_eq!(literal_seconds_to_ms(4.18), 4180);
        assert_eq!(literal_seconds_to_ms(-50.0), -50_000);
        assert_eq!(computed_seconds_to_ms(1.9999), 1999);
        assert!(seconds_out_of_range(9.5e10));
        assert!(!seconds_out_of_range(9.2e9));
    }

    #[test]
    fn evaluates_expressions() {
        let context = DurationContext {
            step_ms: 5000,
            range_ms: 10_000,
        };
        let expr = DurationExpr::MinOf(
            Box::new(DurationExpr::Binary {
                op: DurationOp::Add,
                lhs: Box::new(DurationExpr::Step),
                rhs: Box::new(DurationExpr::Number(1.0)),
            }),
            Box::new(DurationExpr::Range),
        );
        assert!(expr.depends_on_query());
        assert_eq!(expr.to_ms(context, false), Ok(6000));
        let zero = DurationExpr::Binary {
            op: DurationOp::Div,
            lhs: Box::new(DurationExpr::Step),
            rhs: Box::new(DurationExpr::Number(0.0)),
        };
        assert_eq!(
            zero.to_ms(context, false).unwrap_err().message,
            "division by zero"
        );
        let negative = DurationExpr::Neg(Box::new(DurationExpr::Step));
        assert_eq!(negative.to_ms(context, true), Ok(-5000));
        assert!(negative.to_ms(context, false).is_err());
    }
}
