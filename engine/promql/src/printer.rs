//! Prints syntax trees back as canonical PromQL, in the style of Prometheus' `String()` /
//! `format_query`: `sum by (job) (rate(http_requests_total{job="api"}[5m]))`.
//!
//! For every tree the parser produces, parsing the printed text gives the same tree.
//! Differences from Prometheus' output, all deliberate:
//! - matchers are printed in the order they were written (Prometheus sorts them), so the
//!   round trip is exact;
//! - duration arithmetic without `step()`/`range()` was evaluated by the parser and prints
//!   as its value (`[5m+1m]` prints as `[6m]`);
//! - for hand-built trees, parentheses are added where operator precedence would otherwise
//!   change the meaning.

use std::fmt::{self, Display, Formatter, Write};

use lookout_model::{Matcher, METRIC_NAME_LABEL};

use crate::ast::{
    Aggregate, AtModifier, Binary, BinaryOp, DurationExpr, Expr, MatrixSelector, Subquery,
    VectorMatchCardinality, VectorMatching, VectorSelector,
};
use crate::duration::format_duration;
use crate::lexer::{tokenize, Keyword, TokenKind};

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::NumberLiteral(value) => f.write_str(&format_number(*value)),
            Expr::StringLiteral(value) => f.write_str(&quote(value)),
            Expr::VectorSelector(selector) => write_vector_selector(f, selector),
            Expr::MatrixSelector(matrix) => write_matrix_selector(f, matrix),
            Expr::Subquery(subquery) => write_subquery(f, subquery),
            Expr::Call(call) => {
                f.write_str(call.func.name)?;
                f.write_char('(')?;
                write_list(f, &call.args)?;
                f.write_char(')')
            }
            Expr::Aggregate(aggregate) => write_aggregate(f, aggregate),
            Expr::Binary(binary) => write_binary(f, binary),
            Expr::Unary(unary) => {
                f.write_str(unary.op.symbol())?;
                let needs_parens = match &*unary.expr {
                    Expr::Binary(binary) => binary.op != BinaryOp::Pow,
                    Expr::NumberLiteral(value) => value.is_sign_negative(),
                    _ => false,
                };
                write_maybe_parenthesized(f, &unary.expr, needs_parens)
            }
            Expr::Paren(inner) => write!(f, "({inner})"),
        }
    }
}

impl Display for DurationExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            DurationExpr::Number(seconds) => f.write_str(&format_number(*seconds)),
            DurationExpr::Duration(ms) => f.write_str(&format_duration(*ms)),
            DurationExpr::Step => f.write_str("step()"),
            DurationExpr::Range => f.write_str("range()"),
            DurationExpr::Neg(inner) => {
                f.write_char('-')?;
                let needs_parens = match &**inner {
                    DurationExpr::Binary { op, .. } => *op != crate::ast::DurationOp::Pow,
                    DurationExpr::Number(value) => value.is_sign_negative(),
                    DurationExpr::Duration(ms) => *ms < 0,
                    _ => false,
                };
                if needs_parens {
                    write!(f, "({inner})")
                } else {
                    write!(f, "{inner}")
                }
            }
            DurationExpr::Binary { op, lhs, rhs } => {
                let precedence = op.precedence();
                let right_assoc = *op == crate::ast::DurationOp::Pow;
                let lhs_parens = match &**lhs {
                    DurationExpr::Binary { op: inner, .. } => {
                        inner.precedence() < precedence
                            || (inner.precedence() == precedence && right_assoc)
                    }
                    DurationExpr::Neg(_) => right_assoc,
                    DurationExpr::Number(value) => right_assoc && value.is_sign_negative(),
                    DurationExpr::Duration(ms) => right_assoc && *ms < 0,
                    _ => false,
                };
                let rhs_parens = match &**rhs {
                    DurationExpr::Binary { op: inner, .. } => {
                        inner.precedence() < precedence
                            || (inner.precedence() == precedence && !right_assoc)
                    }
                    _ => false,
                };
                write_duration_operand(f, lhs, lhs_parens)?;
                write!(f, " {} ", op.symbol())?;
                write_duration_operand(f, rhs, rhs_parens)
            }
            DurationExpr::MinOf(a, b) => write!(f, "min_of({a}, {b})"),
            DurationExpr::MaxOf(a, b) => write!(f, "max_of({a}, {b})"),
            DurationExpr::Paren(inner) => write!(f, "({inner})"),
        }
    }
}

fn write_duration_operand(f: &mut Formatter<'_>, expr: &DurationExpr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

fn write_maybe_parenthesized(f: &mut Formatter<'_>, expr: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

fn write_list(f: &mut Formatter<'_>, exprs: &[Expr]) -> fmt::Result {
    for (index, expr) in exprs.iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{expr}")?;
    }
    Ok(())
}

/// A float as PromQL reads it back: shortest round-trip decimal, `Inf`, `-Inf`, `NaN`.
pub(crate) fn format_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// A string literal in Go syntax (double quotes), readable by the lexer.
pub(crate) fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if c.is_control() => {
                let code = u32::from(c);
                if code < 0x80 {
                    let _ = write!(out, "\\x{code:02x}");
                } else {
                    let _ = write!(out, "\\u{code:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `name` is a classic label name (`[a-zA-Z_][a-zA-Z0-9_]*`) that can be written
/// without quotes.
fn is_bare_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A label name inside braces.
fn format_label_name(name: &str) -> String {
    if is_bare_label_name(name) {
        name.to_owned()
    } else {
        quote(name)
    }
}

/// A label name in `by (...)`, `on (...)`, `group_left (...)`, where `inf`/`nan` would read
/// as numbers.
fn format_grouping_label(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if is_bare_label_name(name) && lower != "inf" && lower != "nan" {
        name.to_owned()
    } else {
        quote(name)
    }
}

fn write_labels(f: &mut Formatter<'_>, labels: &[String]) -> fmt::Result {
    for (index, label) in labels.iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        f.write_str(&format_grouping_label(label))?;
    }
    Ok(())
}

/// Whether a metric name can be written bare in front of the braces and reads back as the
/// same name.
fn is_bare_metric_name(name: &str) -> bool {
    let tokens = tokenize(name);
    if tokens.len() != 2 || tokens[0].end != name.len() || tokens[1].kind != TokenKind::Eof {
        return false;
    }
    match tokens[0].kind {
        TokenKind::Identifier | TokenKind::MetricIdentifier => true,
        TokenKind::Keyword(keyword) => !matches!(
            keyword,
            Keyword::Bool
                | Keyword::On
                | Keyword::Ignoring
                | Keyword::GroupLeft
                | Keyword::GroupRight
                | Keyword::Atan2
        ),
        _ => false,
    }
}

fn format_matcher(matcher: &Matcher) -> String {
    format!(
        "{}{}{}",
        format_label_name(matcher.name()),
        matcher.kind().operator(),
        quote(matcher.value())
    )
}

/// `name{matchers}` without any modifiers.
fn write_selector_body(f: &mut Formatter<'_>, selector: &VectorSelector) -> fmt::Result {
    let mut matchers: Vec<&Matcher> = selector.matchers.iter().collect();
    if let Some(name) = selector
        .name
        .as_deref()
        .filter(|name| is_bare_metric_name(name))
    {
        f.write_str(name)?;
        let position = matchers.iter().position(|matcher| {
            matcher.name() == METRIC_NAME_LABEL
                && matcher.kind() == lookout_model::MatchKind::Equal
                && matcher.value() == name
        });
        if let Some(position) = position {
            matchers.remove(position);
        }
        if matchers.is_empty() {
            return Ok(());
        }
    }
    f.write_char('{')?;
    for (index, matcher) in matchers.iter().enumerate() {
        if index > 0 {
            f.write_char(',')?;
        }
        f.write_str(&format_matcher(matcher))?;
    }
    f.write_char('}')
}

fn write_at(f: &mut Formatter<'_>, at: Option<AtModifier>) -> fmt::Result {
    match at {
        None => Ok(()),
        Some(AtModifier::Start) => f.write_str(" @ start()"),
        Some(AtModifier::End) => f.write_str(" @ end()"),
        Some(AtModifier::Timestamp(ms)) => {
            let sign = if ms < 0 { "-" } else { "" };
            let abs = ms.unsigned_abs();
            write!(f, " @ {sign}{}.{:03}", abs / 1000, abs % 1000)
        }
    }
}

fn write_offset(
    f: &mut Formatter<'_>,
    offset: Option<i64>,
    offset_expr: Option<&DurationExpr>,
) -> fmt::Result {
    if let Some(expr) = offset_expr {
        return match expr {
            DurationExpr::Binary { .. } => write!(f, " offset ({expr})"),
            _ => write!(f, " offset {expr}"),
        };
    }
    match offset {
        Some(ms) if ms != 0 => write!(f, " offset {}", format_duration(ms)),
        _ => Ok(()),
    }
}

fn write_vector_selector(f: &mut Formatter<'_>, selector: &VectorSelector) -> fmt::Result {
    write_selector_body(f, selector)?;
    write_at(f, selector.at)?;
    if let Some(kind) = selector.extended_range {
        write!(f, " {}", kind.keyword())?;
    }
    write_offset(f, selector.offset, selector.offset_expr.as_ref())
}

fn write_range(
    f: &mut Formatter<'_>,
    range_ms: i64,
    range_expr: Option<&DurationExpr>,
) -> fmt::Result {
    match range_expr {
        Some(expr) => write!(f, "{expr}"),
        None => f.write_str(&format_duration(range_ms)),
    }
}

fn write_matrix_selector(f: &mut Formatter<'_>, matrix: &MatrixSelector) -> fmt::Result {
    let selector = &matrix.vector;
    write_selector_body(f, selector)?;
    f.write_char('[')?;
    write_range(f, matrix.range_ms, matrix.range_expr.as_ref())?;
    f.write_char(']')?;
    if let Some(kind) = selector.extended_range {
        write!(f, " {}", kind.keyword())?;
    }
    write_at(f, selector.at)?;
    write_offset(f, selector.offset, selector.offset_expr.as_ref())
}

fn write_subquery(f: &mut Formatter<'_>, subquery: &Subquery) -> fmt::Result {
    let needs_parens = matches!(
        &*subquery.expr,
        Expr::Binary(_) | Expr::Unary(_) | Expr::NumberLiteral(_)
    );
    write_maybe_parenthesized(f, &subquery.expr, needs_parens)?;
    f.write_char('[')?;
    write_range(f, subquery.range_ms, subquery.range_expr.as_ref())?;
    f.write_char(':')?;
    if let Some(expr) = &subquery.step_expr {
        write!(f, "{expr}")?;
    } else if let Some(step) = subquery.step_ms {
        f.write_str(&format_duration(step))?;
    }
    f.write_char(']')?;
    write_at(f, subquery.at)?;
    write_offset(f, subquery.offset, subquery.offset_expr.as_ref())
}

fn write_aggregate(f: &mut Formatter<'_>, aggregate: &Aggregate) -> fmt::Result {
    f.write_str(aggregate.op.name())?;
    if aggregate.without {
        f.write_str(" without (")?;
        write_labels(f, &aggregate.grouping)?;
        f.write_str(") ")?;
    } else if !aggregate.grouping.is_empty() {
        f.write_str(" by (")?;
        write_labels(f, &aggregate.grouping)?;
        f.write_str(") ")?;
    }
    f.write_char('(')?;
    if let Some(param) = &aggregate.param {
        write!(f, "{param}, ")?;
    }
    write!(f, "{})", aggregate.expr)
}

fn write_matching(f: &mut Formatter<'_>, matching: &VectorMatching) -> fmt::Result {
    let grouped = matches!(
        matching.card,
        VectorMatchCardinality::ManyToOne | VectorMatchCardinality::OneToMany
    );
    if !matching.labels.is_empty() || matching.on || grouped {
        f.write_str(if matching.on { " on (" } else { " ignoring (" })?;
        write_labels(f, &matching.labels)?;
        f.write_char(')')?;
    }
    if grouped {
        f.write_str(if matching.card == VectorMatchCardinality::ManyToOne {
            " group_left ("
        } else {
            " group_right ("
        })?;
        write_labels(f, &matching.include)?;
        f.write_char(')')?;
    }
    match (matching.fill_lhs, matching.fill_rhs) {
        (Some(lhs), Some(rhs))
            if lhs.to_bits() == rhs.to_bits() || (lhs.is_nan() && rhs.is_nan()) =>
        {
            write!(f, " fill ({})", format_number(lhs))
        }
        (lhs, rhs) => {
            if let Some(lhs) = lhs {
                write!(f, " fill_left ({})", format_number(lhs))?;
            }
            if let Some(rhs) = rhs {
                write!(f, " fill_right ({})", format_number(rhs))?;
            }
            Ok(())
        }
    }
}

fn write_binary(f: &mut Formatter<'_>, binary: &Binary) -> fmt::Result {
    let precedence = binary.op.precedence();
    let right_assoc = binary.op.is_right_associative();
    let lhs_parens = match &*binary.lhs {
        Expr::Binary(inner) => {
            inner.op.precedence() < precedence
                || (inner.op.precedence() == precedence && right_assoc)
        }
        Expr::Unary(_) => binary.op == BinaryOp::Pow,
        Expr::NumberLiteral(value) => binary.op == BinaryOp::Pow && value.is_sign_negative(),
        _ => false,
    };
    let rhs_parens = match &*binary.rhs {
        Expr::Binary(inner) => {
            inner.op.precedence() < precedence
                || (inner.op.precedence() == precedence && !right_assoc)
        }
        _ => false,
    };
    write_maybe_parenthesized(f, &binary.lhs, lhs_parens)?;
    write!(f, " {}", binary.op.symbol())?;
    if binary.return_bool {
        f.write_str(" bool")?;
    }
    if let Some(matching) = &binary.matching {
        write_matching(f, matching)?;
    }
    f.write_char(' ')?;
    write_maybe_parenthesized(f, &binary.rhs, rhs_parens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(-0.5), "-0.5");
        assert_eq!(format_number(1e21), "1000000000000000000000");
        assert_eq!(format_number(f64::INFINITY), "Inf");
        assert_eq!(format_number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_number(f64::NAN), "NaN");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quote("\u{1}é"), "\"\\x01é\"");
        assert_eq!(quote("\u{85}"), "\"\\u0085\"");
    }

    #[test]
    fn bare_names() {
        assert!(is_bare_metric_name("up"));
        assert!(is_bare_metric_name("a:b"));
        assert!(is_bare_metric_name("jvm.memory.used"));
        assert!(is_bare_metric_name("sum"));
        assert!(!is_bare_metric_name("bool"));
        assert!(!is_bare_metric_name("Inf"));
        assert!(!is_bare_metric_name("my-metric"));
        assert!(!is_bare_metric_name("a b"));
        assert!(!is_bare_metric_name(""));
        assert!(!is_bare_metric_name("1a"));
    }
}
