//! Lookout's PromQL: lexer, parser with Prometheus' type checks, syntax tree, printer, and
//! the evaluator.
//!
//! The language half ([`parse`], [`parse_matchers`], `Display` printing canonical PromQL)
//! covers every Prometheus 3.x construct for float data plus SOFALookout's dotted metric
//! names, `=~|`/`!~|` in-list matchers and extra functions; it does no I/O. The evaluator
//! ([`Engine`]) runs parsed queries against any [`lookout_storage::Storage`]; see the
//! `engine` module docs for its design. The HTTP layer depends on this crate, never the
//! other way round.

mod ast;
mod duration;
mod engine;
mod error;
mod functions;
mod lexer;
mod parser;
mod printer;

pub use ast::{
    Aggregate, AggregateOp, AtModifier, Binary, BinaryOp, Call, DurationExpr, DurationOp, Expr,
    ExtendedRange, MatrixSelector, Positions, Subquery, Unary, UnaryOp, ValueType,
    VectorMatchCardinality, VectorMatching, VectorSelector,
};
pub use duration::{format_duration, parse_duration};
pub use engine::{
    go_format_float, Engine, EngineOptions, InstantSample, Point, QueryError, QueryOutput,
    QueryStats, QueryValue, RangeSeries,
};
pub use error::{DurationError, ParseError};
pub use functions::{functions, lookup_function, FunctionInfo};
pub use parser::ParseOptions;

use lookout_model::Matcher;

/// Parses and type-checks a PromQL expression, accepting every experimental Prometheus 3.x
/// feature (see [`ParseOptions::default`]).
///
/// ```
/// let expr = lookout_promql::parse(r#"sum by (job) (rate(http_requests_total{job="api"}[5m]))"#)?;
/// assert_eq!(expr.value_type(), lookout_promql::ValueType::Vector);
/// assert_eq!(
///     expr.to_string(),
///     r#"sum by (job) (rate(http_requests_total{job="api"}[5m]))"#
/// );
/// # Ok::<(), lookout_promql::ParseError>(())
/// ```
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    parser::parse_expr(input, ParseOptions::default())
}

/// Parses and type-checks a PromQL expression with the given feature switches.
pub fn parse_with(input: &str, options: ParseOptions) -> Result<Expr, ParseError> {
    parser::parse_expr(input, options)
}

/// Parses a series selector such as `up{job="x"}` or `{__name__=~"a.*"}` (the HTTP API's
/// `match[]`) into its matchers, the metric-name matcher first when the name is written
/// before the braces. Like a selector in a query, it must have at least one matcher that
/// does not match the empty string.
///
/// ```
/// let matchers = lookout_promql::parse_matchers(r#"up{job=~"api|web"}"#)?;
/// assert_eq!(matchers.len(), 2);
/// assert_eq!(matchers[0].name(), "__name__");
/// # Ok::<(), lookout_promql::ParseError>(())
/// ```
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, ParseError> {
    parser::parse_selector_matchers(input)
}
