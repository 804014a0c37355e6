//! Judging a query result against an expectation (README section 1.11), and the compact
//! renderings used in failure messages.

use std::fmt::Write as _;

use lookout_model::{is_stale_nan, Labels};
use lookout_promql::{InstantSample, QueryValue, RangeSeries};

use super::values::{Slot, Value};
use super::{
    AnnotationExpectation, AnnotationKind, Expected, ExpectedSeries, RangeSpec, TextPattern,
};

/// Relative tolerance of float comparisons.
const EPSILON: f64 = 1e-6;

/// Longest rendering of an expected or actual result in a failure message.
const MAX_RENDERED_CHARS: usize = 400;

/// Whether `got` equals `expected` within Prometheus' test tolerance: both NaN (a stale
/// marker only equals a stale marker), exactly equal, or a relative difference below 1e-6
/// (in effect exact when either is 0 or both are subnormal).
pub fn almost_equal(got: f64, expected: f64) -> bool {
    if is_stale_nan(got) || is_stale_nan(expected) {
        return is_stale_nan(got) && is_stale_nan(expected);
    }
    if got.is_nan() && expected.is_nan() {
        return true;
    }
    if got == expected {
        return true;
    }
    let smallest_normal = f64::MIN_POSITIVE;
    let absolute_sum = got.abs() + expected.abs();
    let difference = (got - expected).abs();
    if got == 0.0 || expected == 0.0 || absolute_sum < smallest_normal {
        return difference < EPSILON * smallest_normal;
    }
    difference / absolute_sum.min(f64::MAX) < EPSILON
}

/// Judges a successful result. `grid` is the time grid of expected matrices: the query's for
/// range queries, the `expect range vector` one for instant queries (`None`: a vector).
pub fn judge_value(
    expected: &Expected,
    grid: Option<RangeSpec>,
    ordered: bool,
    value: &QueryValue,
) -> Result<(), String> {
    let mismatch = |detail: &str| {
        Err(format!(
            "expected {}, got {} ({detail})",
            render_expected(expected, grid),
            render_value(value, grid)
        ))
    };
    match (expected, value) {
        (Expected::String(want), QueryValue::String { v, .. }) => {
            if v == want {
                Ok(())
            } else {
                mismatch("different string")
            }
        }
        (Expected::Scalar(want), QueryValue::Scalar { v, .. }) => {
            if almost_equal(*v, *want) {
                Ok(())
            } else {
                mismatch("different value")
            }
        }
        (Expected::Series { series, .. }, QueryValue::Vector(samples)) if grid.is_none() => {
            judge_vector(series, samples, ordered).or_else(|detail| mismatch(&detail))
        }
        (Expected::Series { series, .. }, QueryValue::Matrix(matrix)) => match grid {
            Some(grid) => judge_matrix(series, matrix, grid).or_else(|detail| mismatch(&detail)),
            None => mismatch("a range vector, but the case does not `expect range vector`"),
        },
        _ => mismatch(&format!("a {} result", value.result_type())),
    }
}

/// The expected float of a one-slot (instant) expectation.
fn instant_value(series: &ExpectedSeries) -> Slot<Value> {
    series.values.first().copied().flatten()
}

fn judge_float(got: f64, want: Slot<Value>) -> Result<(), String> {
    match want {
        Some(Value::Float(want)) if almost_equal(got, want) => Ok(()),
        Some(Value::Float(want)) => Err(format!(
            "{} instead of {}",
            render_float(got),
            render_float(want)
        )),
        Some(Value::Histogram) => Err("a native histogram was expected".to_owned()),
        None => Err(format!("{} where no value was expected", render_float(got))),
    }
}

/// Finds the first label set that appears twice.
fn duplicate<'a>(labels: impl Iterator<Item = &'a Labels>) -> Option<&'a Labels> {
    let mut seen = std::collections::HashSet::new();
    labels.into_iter().find(|labels| !seen.insert(*labels))
}

/// Checks that both sides have exactly the same label sets.
fn same_label_sets<'a>(
    expected: &[ExpectedSeries],
    got: impl Iterator<Item = &'a Labels> + Clone,
) -> Result<(), String> {
    if let Some(labels) = duplicate(got.clone()) {
        return Err(format!("{labels} appears twice in the result"));
    }
    if let Some(missing) = expected
        .iter()
        .find(|series| !got.clone().any(|labels| *labels == series.labels))
    {
        return Err(format!("{} is missing", missing.labels));
    }
    if let Some(extra) = got
        .clone()
        .find(|labels| !expected.iter().any(|series| series.labels == **labels))
    {
        return Err(format!("{extra} was not expected"));
    }
    Ok(())
}

fn judge_vector(
    expected: &[ExpectedSeries],
    got: &[InstantSample],
    ordered: bool,
) -> Result<(), String> {
    same_label_sets(expected, got.iter().map(|sample| &sample.labels))?;
    for (position, want) in expected.iter().enumerate() {
        let index = got
            .iter()
            .position(|sample| sample.labels == want.labels)
            .expect("label sets were checked");
        if ordered && index != position {
            return Err(format!(
                "{} is at position {} instead of {}",
                want.labels,
                index + 1,
                position + 1
            ));
        }
        judge_float(got[index].v, instant_value(want))
            .map_err(|detail| format!("{}: {detail}", want.labels))?;
    }
    Ok(())
}

fn judge_matrix(
    expected: &[ExpectedSeries],
    got: &[RangeSeries],
    grid: RangeSpec,
) -> Result<(), String> {
    same_label_sets(expected, got.iter().map(|series| &series.labels))?;
    if let Some(pair) = got.windows(2).find(|pair| pair[0].labels > pair[1].labels) {
        return Err(format!(
            "series are not sorted: {} comes before {}",
            pair[0].labels, pair[1].labels
        ));
    }
    for want in expected {
        let series = got
            .iter()
            .find(|series| series.labels == want.labels)
            .expect("label sets were checked");
        let wanted_points: Vec<(i64, Value)> = want
            .values
            .iter()
            .enumerate()
            .filter_map(|(step, slot)| {
                slot.map(|value| (grid.start_ms + step as i64 * grid.step_ms, value))
            })
            .collect();
        for (index, point) in series.points.iter().enumerate() {
            let Some(&(want_t, want_value)) = wanted_points.get(index) else {
                return Err(format!(
                    "{}: unexpected point {}@{}",
                    want.labels,
                    render_float(point.v),
                    render_time(point.t)
                ));
            };
            if point.t != want_t {
                return Err(format!(
                    "{}: point {}@{} where {}@{} was expected",
                    want.labels,
                    render_float(point.v),
                    render_time(point.t),
                    render_slot(Some(want_value)),
                    render_time(want_t)
                ));
            }
            judge_float(point.v, Some(want_value)).map_err(|detail| {
                format!("{} at {}: {detail}", want.labels, render_time(want_t))
            })?;
        }
        if let Some(&(want_t, _)) = wanted_points.get(series.points.len()) {
            return Err(format!(
                "{}: no point at {}",
                want.labels,
                render_time(want_t)
            ));
        }
    }
    Ok(())
}

impl TextPattern {
    /// Whether `text` satisfies the pattern; an invalid regular expression is an error.
    pub fn matches(&self, text: &str) -> Result<bool, String> {
        match self {
            TextPattern::Any => Ok(true),
            TextPattern::Exact(exact) => Ok(text == exact),
            TextPattern::Regex(pattern) => regex::Regex::new(pattern)
                .map(|regex| regex.is_match(text))
                .map_err(|error| format!("invalid regex {pattern:?}: {error}")),
        }
    }
}

impl std::fmt::Display for TextPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextPattern::Any => f.write_str("anything"),
            TextPattern::Exact(exact) => write!(f, "{exact:?}"),
            TextPattern::Regex(pattern) => write!(f, "/{pattern}/"),
        }
    }
}

/// Checks `expect warn/info/no_warn/no_info`: an `Absent` kind must have no annotation; a
/// kind with `Present` lines must have at least one annotation, every pattern must match one
/// of them, and every annotation must match one of the patterns.
pub fn judge_annotations(
    expectations: &[AnnotationExpectation],
    warnings: &[String],
    infos: &[String],
) -> Result<(), String> {
    for (kind, got, noun) in [
        (AnnotationKind::Warning, warnings, "warning"),
        (AnnotationKind::Info, infos, "info annotation"),
    ] {
        let absent = expectations.iter().any(
            |expectation| matches!(expectation, AnnotationExpectation::Absent(k) if *k == kind),
        );
        if absent && !got.is_empty() {
            return Err(format!("expected no {noun}, got {got:?}"));
        }
        let patterns: Vec<&TextPattern> = expectations
            .iter()
            .filter_map(|expectation| match expectation {
                AnnotationExpectation::Present(k, pattern) if *k == kind => Some(pattern),
                _ => None,
            })
            .collect();
        if patterns.is_empty() {
            continue;
        }
        if got.is_empty() {
            return Err(format!("expected a {noun}, got none"));
        }
        for pattern in &patterns {
            if !any_matches(pattern, got)? {
                return Err(format!("expected a {noun} matching {pattern}, got {got:?}"));
            }
        }
        for text in got {
            let mut matched = false;
            for pattern in &patterns {
                matched = matched || pattern.matches(text)?;
            }
            if !matched {
                return Err(format!("unexpected {noun} {text:?}"));
            }
        }
    }
    Ok(())
}

fn any_matches(pattern: &TextPattern, texts: &[String]) -> Result<bool, String> {
    for text in texts {
        if pattern.matches(text)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A float as the test files write it (`Inf`, `-Inf`, `NaN`, `stale`).
pub fn render_float(value: f64) -> String {
    if is_stale_nan(value) {
        "stale".to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

fn render_slot(slot: Slot<Value>) -> String {
    match slot {
        None => "_".to_owned(),
        Some(Value::Float(value)) => render_float(value),
        Some(Value::Histogram) => "{{histogram}}".to_owned(),
    }
}

fn render_time(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Cuts a rendering down to [`MAX_RENDERED_CHARS`].
fn bounded(mut text: String) -> String {
    if text.len() > MAX_RENDERED_CHARS {
        let mut cut = MAX_RENDERED_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    text
}

/// The expectation in the notation of the test files.
pub fn render_expected(expected: &Expected, grid: Option<RangeSpec>) -> String {
    let text = match expected {
        Expected::String(string) => format!("string {string:?}"),
        Expected::Scalar(value) => format!("scalar {}", render_float(*value)),
        Expected::Series { series, .. } if series.is_empty() => {
            if grid.is_some() {
                "empty matrix".to_owned()
            } else {
                "empty vector".to_owned()
            }
        }
        Expected::Series { series, .. } => {
            let mut text = String::from("[");
            for (index, series) in series.iter().enumerate() {
                if index > 0 {
                    text.push_str(", ");
                }
                let values: Vec<String> = series
                    .values
                    .iter()
                    .map(|slot| render_slot(*slot))
                    .collect();
                let _ = write!(text, "{} {}", series.labels, values.join(" "));
            }
            text.push(']');
            text
        }
    };
    bounded(text)
}

/// A result in the notation of the test files; matrix points are laid on `grid` when given
/// (`_` for a missing step), with points off the grid listed as `value@time`.
pub fn render_value(value: &QueryValue, grid: Option<RangeSpec>) -> String {
    let text = match value {
        QueryValue::String { v, .. } => format!("string {v:?}"),
        QueryValue::Scalar { v, .. } => format!("scalar {}", render_float(*v)),
        QueryValue::Vector(samples) if samples.is_empty() => "empty vector".to_owned(),
        QueryValue::Matrix(matrix) if matrix.is_empty() => "empty matrix".to_owned(),
        QueryValue::Vector(samples) => {
            let rendered: Vec<String> = samples
                .iter()
                .map(|sample| format!("{} {}", sample.labels, render_float(sample.v)))
                .collect();
            format!("[{}]", rendered.join(", "))
        }
        QueryValue::Matrix(matrix) => {
            let rendered: Vec<String> = matrix
                .iter()
                .map(|series| format!("{} {}", series.labels, render_points(series, grid)))
                .collect();
            format!("matrix [{}]", rendered.join(", "))
        }
    };
    bounded(text)
}

fn render_points(series: &RangeSeries, grid: Option<RangeSpec>) -> String {
    let on_grid = |t: i64| {
        grid.filter(|grid| {
            t >= grid.start_ms && t <= grid.end_ms && (t - grid.start_ms) % grid.step_ms == 0
        })
    };
    let mut slots: Vec<String> = Vec::new();
    let mut off_grid: Vec<String> = Vec::new();
    for point in &series.points {
        match on_grid(point.t) {
            Some(grid) => {
                let step = ((point.t - grid.start_ms) / grid.step_ms) as usize;
                if slots.len() < step {
                    slots.resize(step, "_".to_owned());
                }
                slots.push(render_float(point.v));
            }
            None => off_grid.push(format!(
                "{}@{}",
                render_float(point.v),
                render_time(point.t)
            )),
        }
    }
    slots.extend(off_grid);
    slots.join(" ")
}

#[cfg(test)]
mod tests {
    use lookout_model::STALE_NAN;
    use lookout_promql::Point;

    use super::*;

    #[test]
    fn tolerance() {
        assert!(almost_equal(1.0, 1.0));
        assert!(almost_equal(1.833333333, 1.8333333333333333));
        assert!(almost_equal(1e6 + 0.5, 1e6));
        assert!(!almost_equal(1.0, 1.00001));
        assert!(almost_equal(f64::INFINITY, f64::INFINITY));
        assert!(!almost_equal(f64::INFINITY, f64::NEG_INFINITY));
        assert!(!almost_equal(f64::INFINITY, f64::MAX));
        assert!(!almost_equal(1.0, f64::NAN));
        assert!(almost_equal(f64::NAN, -f64::NAN));
        // Zero is compared (in effect) exactly.
        assert!(!almost_equal(0.0, 1e-300));
        assert!(almost_equal(0.0, -0.0));
        assert!(!almost_equal(1e-310, 2e-310));
        // Close to MaxFloat64 the sum overflows; the comparison must still work.
        assert!(almost_equal(f64::MAX, f64::MAX * (1.0 - 1e-9)));
    }

    #[test]
    fn stale_markers_only_equal_stale_markers() {
        assert!(almost_equal(STALE_NAN, STALE_NAN));
        assert!(!almost_equal(STALE_NAN, f64::NAN));
        assert!(!almost_equal(f64::NAN, STALE_NAN));
    }

    fn labels(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name)]).unwrap()
    }

    fn expected_series(name: &str, values: &[Option<f64>]) -> ExpectedSeries {
        ExpectedSeries {
            line: 1,
            labels: labels(name),
            values: values.iter().map(|value| value.map(Value::Float)).collect(),
        }
    }

    fn sample(name: &str, v: f64) -> InstantSample {
        InstantSample {
            labels: labels(name),
            t: 0,
            v,
        }
    }

    #[test]
    fn vectors_ignore_order_unless_ordered() {
        let expected = Expected::Series {
            range: None,
            series: vec![
                expected_series("a", &[Some(1.0)]),
                expected_series("b", &[Some(2.0)]),
            ],
        };
        let reversed = QueryValue::Vector(vec![sample("b", 2.0), sample("a", 1.0)]);
        assert_eq!(judge_value(&expected, None, false, &reversed), Ok(()));
        assert!(judge_value(&expected, None, true, &reversed).is_err());
        let wrong = QueryValue::Vector(vec![sample("a", 1.0), sample("b", 2.1)]);
        let message = judge_value(&expected, None, false, &wrong).unwrap_err();
        assert!(message.contains("2.1 instead of 2"), "{message}");
        let missing = QueryValue::Vector(vec![sample("a", 1.0)]);
        assert!(judge_value(&expected, None, false, &missing).is_err());
        let extra = QueryValue::Vector(vec![sample("a", 1.0), sample("b", 2.0), sample("c", 3.0)]);
        assert!(judge_value(&expected, None, false, &extra).is_err());
        let twice = QueryValue::Vector(vec![sample("a", 1.0), sample("a", 1.0)]);
        assert!(judge_value(&expected, None, false, &twice).is_err());
    }

    #[test]
    fn empty_expectation_wants_an_empty_result() {
        let expected = Expected::Series {
            range: None,
            series: Vec::new(),
        };
        assert_eq!(
            judge_value(&expected, None, false, &QueryValue::Vector(Vec::new())),
            Ok(())
        );
        assert!(judge_value(
            &expected,
            None,
            false,
            &QueryValue::Vector(vec![sample("a", 1.0)])
        )
        .is_err());
        assert!(judge_value(&expected, None, false, &QueryValue::Scalar { t: 0, v: 1.0 }).is_err());
    }

    fn range_series(name: &str, points: &[(i64, f64)]) -> RangeSeries {
        RangeSeries {
            labels: labels(name),
            points: points.iter().map(|&(t, v)| Point { t, v }).collect(),
        }
    }

    #[test]
    fn matrices_need_exact_points_and_sorted_series() {
        let grid = RangeSpec {
            start_ms: 0,
            end_ms: 20_000,
            step_ms: 10_000,
        };
        let expected = Expected::Series {
            range: None,
            series: vec![
                expected_series("a", &[Some(1.0), None, Some(3.0)]),
                expected_series("b", &[None, Some(2.0)]),
            ],
        };
        let good = || {
            vec![
                range_series("a", &[(0, 1.0), (20_000, 3.0)]),
                range_series("b", &[(10_000, 2.0)]),
            ]
        };
        assert_eq!(
            judge_value(&expected, Some(grid), false, &QueryValue::Matrix(good())),
            Ok(())
        );

        let mut unsorted = good();
        unsorted.reverse();
        let message =
            judge_value(&expected, Some(grid), false, &QueryValue::Matrix(unsorted)).unwrap_err();
        assert!(message.contains("not sorted"), "{message}");

        let mut extra_point = good();
        extra_point[1].points.push(Point { t: 20_000, v: 2.0 });
        assert!(judge_value(
            &expected,
            Some(grid),
            false,
            &QueryValue::Matrix(extra_point)
        )
        .is_err());

        let mut missing_point = good();
        missing_point[0].points.pop();
        assert!(judge_value(
            &expected,
            Some(grid),
            false,
            &QueryValue::Matrix(missing_point)
        )
        .is_err());

        let mut shifted = good();
        shifted[1].points[0].t = 5_000;
        let message =
            judge_value(&expected, Some(grid), false, &QueryValue::Matrix(shifted)).unwrap_err();
        assert!(message.contains("2@5s"), "{message}");

        // A matrix where a vector is expected is a mismatch.
        assert!(judge_value(&expected, None, false, &QueryValue::Matrix(good())).is_err());
    }

    #[test]
    fn scalars_and_strings() {
        let scalar = Expected::Scalar(f64::NAN);
        assert_eq!(
            judge_value(
                &scalar,
                None,
                false,
                &QueryValue::Scalar { t: 0, v: f64::NAN }
            ),
            Ok(())
        );
        assert!(judge_value(&scalar, None, false, &QueryValue::Scalar { t: 0, v: 1.0 }).is_err());
        let string = Expected::String("Foo".to_owned());
        let got = |v: &str| QueryValue::String {
            t: 0,
            v: v.to_owned(),
        };
        assert_eq!(judge_value(&string, None, false, &got("Foo")), Ok(()));
        assert!(judge_value(&string, None, false, &got("foo")).is_err());
        assert!(judge_value(&string, None, false, &QueryValue::Vector(Vec::new())).is_err());
    }

    #[test]
    fn annotations() {
        let warn_msg = AnnotationExpectation::Present(
            AnnotationKind::Warning,
            TextPattern::Exact("PromQL warning: x (1:1)".to_owned()),
        );
        let warn_any = AnnotationExpectation::Present(AnnotationKind::Warning, TextPattern::Any);
        let no_info = AnnotationExpectation::Absent(AnnotationKind::Info);
        let warning = vec!["PromQL warning: x (1:1)".to_owned()];
        let other = vec!["PromQL warning: y (1:1)".to_owned()];
        assert_eq!(
            judge_annotations(std::slice::from_ref(&warn_msg), &warning, &[]),
            Ok(())
        );
        assert!(judge_annotations(std::slice::from_ref(&warn_msg), &other, &[]).is_err());
        assert!(judge_annotations(std::slice::from_ref(&warn_msg), &[], &[]).is_err());
        assert_eq!(judge_annotations(&[warn_any], &other, &[]), Ok(()));
        assert!(judge_annotations(std::slice::from_ref(&no_info), &[], &warning).is_err());
        assert_eq!(judge_annotations(&[no_info], &warning, &[]), Ok(()));
        let regex = AnnotationExpectation::Present(
            AnnotationKind::Info,
            TextPattern::Regex(r"fixed .* \(1:25\)".to_owned()),
        );
        let info = vec!["PromQL info: fixed for monotonicity (1:25)".to_owned()];
        assert_eq!(judge_annotations(&[regex], &[], &info), Ok(()));
    }
}
