//! Numeric building blocks shared by functions and aggregations, matching Prometheus'
//! results to the last bit where its tests depend on it.

use super::value::Point;

/// One step of Kahan-Babuska (Neumaier) compensated summation: returns the new sum and
/// compensation. The result is `sum + c` (or `sum` alone once it is infinite).
pub(crate) fn kahan_add(increment: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + increment;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= increment.abs() {
        c + ((sum - t) + increment)
    } else {
        c + ((increment - t) + sum)
    };
    (t, c)
}

/// A mean that sums directly (compensated) while the sum stays finite and switches to an
/// incremental mean when it would overflow, as Prometheus' `avg` and `avg_over_time`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mean {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    incremental: bool,
}

impl Mean {
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        if self.count == 1.0 {
            self.sum = v;
            return;
        }
        if !self.incremental {
            let (sum, c) = kahan_add(v, self.sum, self.c);
            if !sum.is_infinite() {
                self.sum = sum;
                self.c = c;
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        let corrected = self.mean + self.c;
        (self.mean, self.c) = kahan_add(v / self.count - corrected / self.count, self.mean, self.c);
    }

    pub(crate) fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else if self.count == 1.0 {
            self.sum
        } else {
            (self.sum + self.c) / self.count
        }
    }
}

/// The φ-quantile of `values` (sorted in place, NaN first) with linear interpolation between
/// neighbours; -Inf / +Inf for φ below 0 / above 1, NaN for no values or a NaN φ.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Least-squares fit of the points with time measured in seconds from `intercept_ms`:
/// `(slope, intercept)`. A constant series gives slope 0 exactly.
pub(crate) fn linear_regression(points: &[Point], intercept_ms: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let first = points[0].v;
    let mut constant = true;
    for (i, p) in points.iter().enumerate() {
        if constant && i > 0 && p.v != first {
            constant = false;
        }
        n += 1.0;
        let x = (p.t - intercept_ms) as f64 / 1000.0;
        (sum_x, c_x) = kahan_add(x, sum_x, c_x);
        (sum_y, c_y) = kahan_add(p.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_add(x * p.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_add(x * x, sum_x2, c_x2);
    }
    if constant {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// Go's `math.Max`: NaN wins.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it (shortest exact decimal,
/// no exponent), with Prometheus' `+Inf`, `-Inf` and `NaN`.
pub fn go_format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A UTC calendar date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Calendar {
    pub(crate) year: i64,
    pub(crate) month: i64,
    pub(crate) day: i64,
    pub(crate) hour: i64,
    pub(crate) minute: i64,
    /// 0 is Sunday.
    pub(crate) weekday: i64,
    /// 1-based.
    pub(crate) day_of_year: i64,
    pub(crate) days_in_month: i64,
}

/// The UTC calendar fields of a Unix time in seconds (proleptic Gregorian calendar).
pub(crate) fn calendar(seconds: i64) -> Calendar {
    use lookout_model::time::{civil_from_days, days_from_civil, days_in_month};
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (month, day) = (i64::from(month), i64::from(day));
    Calendar {
        year,
        month,
        day,
        hour: second_of_day / 3600,
        minute: second_of_day % 3600 / 60,
        weekday: (days + 4).rem_euclid(7),
        day_of_year: days - days_from_civil(year, 1, 1) + 1,
        days_in_month: days_in_month(year, month).unwrap_or(31),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fields() {
        let epoch = calendar(0);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday),
            (1970, 1, 1, 4)
        );
        // 2024-02-29T13:45:00Z
        let leap = calendar(1_709_214_300);
        assert_eq!((leap.year, leap.month, leap.day), (2024, 2, 29));
        assert_eq!(
            (leap.hour, leap.minute, leap.day_of_year, leap.days_in_month),
            (13, 45, 60, 29)
        );
        let before = calendar(-1);
        assert_eq!(
            (before.year, before.month, before.day, before.hour),
            (1969, 12, 31, 23)
        );
    }

    #[test]
    fn compensated_sum_keeps_small_terms() {
        let (mut sum, mut c) = (0.0, 0.0);
        for v in [1e100, 1.0, -1e100] {
            (sum, c) = kahan_add(v, sum, c);
        }
        assert_eq!(sum + c, 1.0);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, &mut [1.0, 2.0]), 1.25);
        assert!(quantile(0.5, &mut []).is_nan());
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
    }

    #[test]
    fn floats_format_like_go() {
        assert_eq!(go_format_float(1.0), "1");
        assert_eq!(go_format_float(0.1), "0.1");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(f64::NEG_INFINITY), "-Inf");
    }
}
