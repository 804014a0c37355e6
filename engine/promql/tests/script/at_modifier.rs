//! The step-invariance check of README section 1.12: pin every selector and subquery of a
//! query to the case's evaluation time with `@`, so that evaluating it at any other time must
//! give the same result.

use lookout_promql::{parse, AtModifier, Expr};

/// Functions whose result depends on the evaluation time itself (or on the query range),
/// which `@` cannot pin. Queries calling them are excluded from the re-runs.
pub const STEP_VARIANT_FUNCTIONS: &[&str] = &[
    "time",
    "timestamp",
    "predict_linear",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "start",
    "end",
    "range",
    "step",
];

/// The functions that make a query depend on the range of a range query.
pub const RANGE_DEPENDENT_FUNCTIONS: &[&str] = &["start", "end", "range", "step"];

/// Whether the query text calls one of `functions` (`name(`, spaces allowed before the
/// parenthesis). Textual, so that it also sees `step()` inside durations.
pub fn calls_any(query: &str, functions: &[&str]) -> bool {
    let bytes = query.as_bytes();
    functions.iter().any(|function| {
        query.match_indices(function).any(|(start, _)| {
            let is_name_byte = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
            let starts_word = start == 0 || !is_name_byte(bytes[start - 1]);
            let after = query[start + function.len()..].trim_start();
            starts_word && after.starts_with('(')
        })
    })
}

/// The query with `@ <at_ms>` added to every selector and subquery that has no `@`, or `None`
/// when the query is not step-invariant (calls a function of [`STEP_VARIANT_FUNCTIONS`]) or
/// does not parse. Selectors inside a subquery are left alone: the subquery's own `@` pins
/// them.
pub fn pin_to(query: &str, at_ms: i64) -> Option<String> {
    if calls_any(query, STEP_VARIANT_FUNCTIONS) {
        return None;
    }
    let mut expr = parse(query).ok()?;
    pin(&mut expr, at_ms);
    Some(expr.to_string())
}

fn pin(expr: &mut Expr, at_ms: i64) {
    let at = AtModifier::Timestamp(at_ms);
    match expr {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::VectorSelector(selector) => {
            selector.at.get_or_insert(at);
        }
        Expr::MatrixSelector(matrix) => {
            matrix.vector.at.get_or_insert(at);
        }
        Expr::Subquery(subquery) => {
            subquery.at.get_or_insert(at);
        }
        Expr::Call(call) => call.args.iter_mut().for_each(|arg| pin(arg, at_ms)),
        Expr::Aggregate(aggregate) => {
            pin(&mut aggregate.expr, at_ms);
            if let Some(param) = aggregate.param.as_deref_mut() {
                pin(param, at_ms);
            }
        }
        Expr::Binary(binary) => {
            pin(&mut binary.lhs, at_ms);
            pin(&mut binary.rhs, at_ms);
        }
        Expr::Unary(unary) => pin(&mut unary.expr, at_ms),
        Expr::Paren(inner) => pin(inner, at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(query: &str, at_ms: i64) -> String {
        pin_to(query, at_ms).unwrap_or_else(|| panic!("{query:?} was not pinned"))
    }

    #[test]
    fn selectors_and_subqueries_get_pinned() {
        let query = pinned(r#"sum by (job) (rate(x{a="b"}[5m])) + y offset 1m"#, 60_000);
        assert_eq!(
            query,
            parse(r#"sum by (job) (rate(x{a="b"}[5m] @ 60)) + y @ 60 offset 1m"#)
                .unwrap()
                .to_string()
        );
        let query = pinned("max_over_time(rate(x[1m])[5m:1m]) * z @ 10", 3_000);
        assert_eq!(
            query,
            parse("max_over_time(rate(x[1m])[5m:1m] @ 3) * z @ 10")
                .unwrap()
                .to_string()
        );
    }

    #[test]
    fn step_variant_queries_are_excluded() {
        assert_eq!(pin_to("time() - x", 1_000), None);
        assert_eq!(pin_to("timestamp (x)", 1_000), None);
        assert_eq!(pin_to("x[step()]", 1_000), None);
        assert!(pin_to("x_time + hour_total", 1_000).is_some());
        assert!(calls_any("rate(x[1m]) @ end ()", RANGE_DEPENDENT_FUNCTIONS));
        assert!(!calls_any(
            "x{a=\"weekend\"} + appendix",
            RANGE_DEPENDENT_FUNCTIONS
        ));
    }
}
