//! Samples, millisecond timestamps and the Prometheus stale marker.

use std::fmt;

use crate::ModelError;

/// Milliseconds since the Unix epoch, as Prometheus counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// The smallest timestamp; used as an open lower bound.
    pub const MIN: TimestampMs = TimestampMs(i64::MIN);
    /// The largest timestamp; used as an open upper bound.
    pub const MAX: TimestampMs = TimestampMs(i64::MAX);

    /// The raw number of milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Converts float seconds (as the Prometheus HTTP API and OpenTSDB send them) to
    /// milliseconds, rejecting NaN, infinities and values outside the i64 millisecond range.
    pub fn from_seconds_f64(seconds: f64) -> Result<TimestampMs, ModelError> {
        if !seconds.is_finite() {
            return Err(ModelError::InvalidTimestamp {
                reason: format!("{seconds} is not a finite number of seconds"),
            });
        }
        let millis = (seconds * 1000.0).round();
        // i64::MAX as f64 rounds up to 2^63, so compare against that exclusive bound.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if !(-LIMIT..LIMIT).contains(&millis) {
            return Err(ModelError::InvalidTimestamp {
                reason: format!("{seconds} seconds is outside the representable range"),
            });
        }
        Ok(TimestampMs(millis as i64))
    }

    /// Adds a signed number of milliseconds, or `None` on overflow.
    pub fn checked_add(self, millis: i64) -> Option<TimestampMs> {
        self.0.checked_add(millis).map(TimestampMs)
    }
}

impl fmt::Display for TimestampMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i64> for TimestampMs {
    fn from(millis: i64) -> Self {
        TimestampMs(millis)
    }
}

/// The bit pattern Prometheus writes to mark a series as stale. It is a NaN, so it must be
/// compared by bits, never by value, and every layer must keep it bit-exact.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The stale marker as a float (a NaN with the payload [`STALE_NAN_BITS`]).
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// Whether `value` is the Prometheus stale marker (bit comparison; other NaNs are not).
pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// One float sample of one series.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the value was observed.
    pub timestamp: TimestampMs,
    /// The value; NaN payloads (the stale marker among them) are kept bit-exact.
    pub value: f64,
}

impl Sample {
    /// A sample at `timestamp_ms` with `value`.
    pub fn new(timestamp_ms: i64, value: f64) -> Sample {
        Sample {
            timestamp: TimestampMs(timestamp_ms),
            value,
        }
    }

    /// Whether this sample is the stale marker.
    pub fn is_stale(&self) -> bool {
        is_stale_nan(self.value)
    }
}

/// Samples are equal when timestamps match and values are bit-identical, so NaN == NaN with the
/// same payload and 0.0 != -0.0. This is the equality storage round trips must keep.
impl PartialEq for Sample {
    fn eq(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp && self.value.to_bits() == other.value.to_bits()
    }
}

impl Eq for Sample {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_a_nan_recognised_by_bits_only() {
        assert!(STALE_NAN.is_nan());
        assert!(is_stale_nan(STALE_NAN));
        assert!(!is_stale_nan(f64::NAN));
        assert_eq!(STALE_NAN.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn sample_equality_is_bitwise() {
        assert_eq!(Sample::new(1, f64::NAN), Sample::new(1, f64::NAN));
        assert_ne!(Sample::new(1, f64::NAN), Sample::new(1, STALE_NAN));
        assert_ne!(Sample::new(1, 0.0), Sample::new(1, -0.0));
        assert_ne!(Sample::new(1, 1.0), Sample::new(2, 1.0));
    }

    #[test]
    fn seconds_convert_to_millis_and_reject_nan_and_overflow() {
        assert_eq!(
            TimestampMs::from_seconds_f64(1.5).unwrap(),
            TimestampMs(1500)
        );
        assert_eq!(
            TimestampMs::from_seconds_f64(-2.0).unwrap(),
            TimestampMs(-2000)
        );
        assert!(TimestampMs::from_seconds_f64(f64::NAN).is_err());
        assert!(TimestampMs::from_seconds_f64(f64::INFINITY).is_err());
        assert!(TimestampMs::from_seconds_f64(1e300).is_err());
        assert!(TimestampMs::from_seconds_f64(9.3e15).is_err());
        assert!(TimestampMs::MAX.checked_add(1).is_none());
    }
}
