//! A recursive-descent (precedence climbing) parser for PromQL with Prometheus' type checks.
//!
//! Binary operators, lowest to highest precedence: `or`; `and unless`; `== != <= < >= >`
//! (and the native-histogram trims `</ >/`); `+ -`; `* / % atan2`; `^` (right-associative).
//! A unary sign binds like `*`: `-a ^ b` is `-(a ^ b)`, `-a * b` is `(-a) * b`. The postfix
//! modifiers `[range]`, `[range:step]`, `offset`, `@` and `anchored`/`smoothed` bind tighter
//! than any operator and apply to the expression right before them.
//!
//! Errors are reported like Prometheus does: syntax errors as soon as they are found, type
//! errors (what Prometheus' `checkAST` finds) only when the whole input parsed.

use lookout_model::{MatchKind, Matcher, METRIC_NAME_LABEL};

use crate::ast::{
    Aggregate, AggregateOp, AtModifier, Binary, BinaryOp, Call, DurationExpr, DurationOp, Expr,
    ExtendedRange, MatrixSelector, Positions, Subquery, Unary, UnaryOp, ValueType,
    VectorMatchCardinality, VectorMatching, VectorSelector,
};
use crate::duration::{
    literal_seconds_to_ms, seconds_out_of_range, DurationContext, SUB_MILLISECOND,
};
use crate::error::ParseError;
use crate::functions::lookup_function;
use crate::lexer::{tokenize, Keyword, Token, TokenKind};

/// Which experimental Prometheus 3.x features the parser accepts.
///
/// [`ParseOptions::default`] accepts everything (the Lookout engine runs the upstream
/// conformance suite, which enables all of them); [`ParseOptions::prometheus_defaults`]
/// rejects what a stock Prometheus rejects without feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Functions and aggregations Prometheus marks experimental (`info`, `limitk`,
    /// `limit_ratio`, `sort_by_label`, `double_exponential_smoothing`, `mad_over_time`,
    /// `ts_of_*_over_time`, `histogram_quantiles`, `start()`, `step()`, ...).
    pub experimental_functions: bool,
    /// Arithmetic in durations (`[5m + 1m]`, `offset (1h / 2)`) and `step()`, `range()`,
    /// `min_of()`, `max_of()` in durations.
    pub duration_expressions: bool,
    /// The `anchored` and `smoothed` range selector modifiers.
    pub extended_range_selectors: bool,
    /// `fill(...)`, `fill_left(...)`, `fill_right(...)` on binary operators.
    pub binop_fill_modifiers: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            experimental_functions: true,
            duration_expressions: true,
            extended_range_selectors: true,
            binop_fill_modifiers: true,
        }
    }
}

impl ParseOptions {
    /// What Prometheus 3.x accepts without feature flags.
    pub fn prometheus_defaults() -> Self {
        ParseOptions {
            experimental_functions: false,
            duration_expressions: false,
            extended_range_selectors: false,
            binop_fill_modifiers: false,
        }
    }
}

type PResult<T> = Result<T, ParseError>;

/// Precedence of `^`, the operand level of unary signs.
const POW_PRECEDENCE: u8 = 6;

/// An expression with the byte offset it starts at (for error positions).
struct Node {
    expr: Expr,
    start: usize,
}

/// A duration expression with the position it starts at, and whether it is a plain number
/// or duration literal (possibly signed), which Prometheus treats specially.
struct DurationNode {
    expr: DurationExpr,
    start: usize,
    literal: bool,
}

/// A type error found while parsing, reported only if the whole input parses.
struct Deferred {
    error: ParseError,
    /// Set for "vector selector must contain at least one non-empty matcher": the selector's
    /// start, so that `info()` can lift the rule for its second argument.
    empty_selector_at: Option<usize>,
}

/// The modifiers between a binary operator and its right operand.
#[derive(Default)]
struct BinaryModifiers {
    return_bool: bool,
    on: bool,
    labels: Vec<String>,
    group: Option<(VectorMatchCardinality, Vec<String>)>,
    fill_lhs: Option<f64>,
    fill_rhs: Option<f64>,
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    index: usize,
    options: ParseOptions,
    deferred: Vec<Deferred>,
}

/// Parses a PromQL expression.
pub(crate) fn parse_expr(input: &str, options: ParseOptions) -> PResult<Expr> {
    let mut parser = Parser::new(input, options);
    if parser.peek().kind == TokenKind::Eof {
        return Err(ParseError::new(0, "no expression found in input"));
    }
    let node = parser.parse_expr(0)?;
    parser.expect_eof()?;
    parser.finish()?;
    Ok(node.expr)
}

/// Parses a series selector (`up{job="x"}`, `{__name__=~"a.*"}`) into its matchers.
pub(crate) fn parse_selector_matchers(input: &str) -> PResult<Vec<Matcher>> {
    let mut parser = Parser::new(input, ParseOptions::default());
    let token = parser.peek().clone();
    let node = match &token.kind {
        TokenKind::Eof => return Err(ParseError::new(0, "no expression found in input")),
        TokenKind::LeftBrace => parser.parse_selector(None, token.start)?,
        TokenKind::Identifier | TokenKind::MetricIdentifier => {
            parser.advance();
            parser.parse_selector(Some(parser.text(&token).to_owned()), token.start)?
        }
        TokenKind::Keyword(keyword) if keyword_can_be_metric_name(*keyword) => {
            parser.advance();
            parser.parse_selector(Some(parser.text(&token).to_owned()), token.start)?
        }
        _ => return Err(parser.unexpected("", "")),
    };
    parser.expect_eof()?;
    parser.finish()?;
    match node.expr {
        Expr::VectorSelector(selector) => Ok(selector.matchers),
        _ => Err(ParseError::new(0, "expected a series selector")),
    }
}

fn keyword_can_be_metric_name(keyword: Keyword) -> bool {
    !matches!(
        keyword,
        Keyword::Bool
            | Keyword::On
            | Keyword::Ignoring
            | Keyword::GroupLeft
            | Keyword::GroupRight
            | Keyword::Atan2
    )
}

fn aggregate_op(keyword: Keyword) -> Option<AggregateOp> {
    Some(match keyword {
        Keyword::Sum => AggregateOp::Sum,
        Keyword::Avg => AggregateOp::Avg,
        Keyword::Count => AggregateOp::Count,
        Keyword::Min => AggregateOp::Min,
        Keyword::Max => AggregateOp::Max,
        Keyword::Group => AggregateOp::Group,
        Keyword::Stddev => AggregateOp::Stddev,
        Keyword::Stdvar => AggregateOp::Stdvar,
        Keyword::Topk => AggregateOp::Topk,
        Keyword::Bottomk => AggregateOp::Bottomk,
        Keyword::CountValues => AggregateOp::CountValues,
        Keyword::Quantile => AggregateOp::Quantile,
        Keyword::Limitk => AggregateOp::Limitk,
        Keyword::LimitRatio => AggregateOp::LimitRatio,
        _ => return None,
    })
}

fn binary_op(kind: &TokenKind) -> Option<BinaryOp> {
    Some(match kind {
        TokenKind::Add => BinaryOp::Add,
        TokenKind::Sub => BinaryOp::Sub,
        TokenKind::Mul => BinaryOp::Mul,
        TokenKind::Div => BinaryOp::Div,
        TokenKind::Mod => BinaryOp::Mod,
        TokenKind::Pow => BinaryOp::Pow,
        TokenKind::EqlC => BinaryOp::Eql,
        TokenKind::Neq => BinaryOp::Neq,
        TokenKind::Gtr => BinaryOp::Gtr,
        TokenKind::Lss => BinaryOp::Lss,
        TokenKind::Gte => BinaryOp::Gte,
        TokenKind::Lte => BinaryOp::Lte,
        TokenKind::TrimUpper => BinaryOp::TrimUpper,
        TokenKind::TrimLower => BinaryOp::TrimLower,
        TokenKind::Keyword(Keyword::And) => BinaryOp::And,
        TokenKind::Keyword(Keyword::Or) => BinaryOp::Or,
        TokenKind::Keyword(Keyword::Unless) => BinaryOp::Unless,
        TokenKind::Keyword(Keyword::Atan2) => BinaryOp::Atan2,
        _ => return None,
    })
}

fn duration_op(kind: &TokenKind) -> Option<DurationOp> {
    Some(match kind {
        TokenKind::Add => DurationOp::Add,
        TokenKind::Sub => DurationOp::Sub,
        TokenKind::Mul => DurationOp::Mul,
        TokenKind::Div => DurationOp::Div,
        TokenKind::Mod => DurationOp::Mod,
        TokenKind::Pow => DurationOp::Pow,
        _ => return None,
    })
}

fn match_kind(kind: &TokenKind) -> Option<MatchKind> {
    Some(match kind {
        TokenKind::Assign => MatchKind::Equal,
        TokenKind::Neq => MatchKind::NotEqual,
        TokenKind::RegexMatch => MatchKind::Regex,
        TokenKind::RegexNoMatch => MatchKind::NotRegex,
        TokenKind::InList => MatchKind::InList,
        TokenKind::NotInList => MatchKind::NotInList,
        _ => return None,
    })
}

/// Go's `%f` for the values the `@` bound check reports.
fn go_float_f(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value:.6}")
    }
}

impl<'a> Parser<'a> {
    fn new(input: &'a str, options: ParseOptions) -> Parser<'a> {
        Parser {
            input,
            tokens: tokenize(input),
            index: 0,
            options,
            deferred: Vec::new(),
        }
    }

    // ----- token access -----

    fn peek(&self) -> &Token {
        &self.tokens[self.index]
    }

    fn peek_kind(&self) -> &TokenKind {
        &self.tokens[self.index].kind
    }

    fn peek_nth_kind(&self, n: usize) -> &TokenKind {
        let index = (self.index + n).min(self.tokens.len() - 1);
        &self.tokens[index].kind
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.index].clone();
        if self.index + 1 < self.tokens.len() {
            self.index += 1;
        }
        token
    }

    fn text(&self, token: &Token) -> &'a str {
        &self.input[token.start..token.end.min(self.input.len())]
    }

    /// "unexpected <token>[ in <context>][, expected <expected>]" for the next token, or the
    /// lexer's own error when the next token is one.
    fn unexpected(&self, context: &str, expected: &str) -> ParseError {
        let token = self.peek();
        if let TokenKind::Error(message) = &token.kind {
            return ParseError::new(token.start, message.clone());
        }
        let mut message = format!("unexpected {}", token.describe(self.input));
        if !context.is_empty() {
            message.push_str(" in ");
            message.push_str(context);
        }
        if !expected.is_empty() {
            message.push_str(", expected ");
            message.push_str(expected);
        }
        ParseError::new(token.start, message)
    }

    fn expect(&mut self, kind: &TokenKind, context: &str, expected: &str) -> PResult<Token> {
        if self.peek_kind() == kind {
            Ok(self.advance())
        } else {
            Err(self.unexpected(context, expected))
        }
    }

    fn expect_eof(&self) -> PResult<()> {
        match self.peek_kind() {
            TokenKind::Eof => Ok(()),
            _ => Err(self.unexpected("", "")),
        }
    }

    fn defer(&mut self, position: usize, message: impl Into<String>) {
        self.deferred.push(Deferred {
            error: ParseError::new(position, message),
            empty_selector_at: None,
        });
    }

    fn finish(&mut self) -> PResult<()> {
        match self.deferred.first() {
            Some(deferred) => Err(deferred.error.clone()),
            None => Ok(()),
        }
    }

    // ----- expressions -----

    fn parse_expr(&mut self, min_precedence: u8) -> PResult<Node> {
        let mut lhs = self.parse_unary()?;
        while let Some(op) = binary_op(self.peek_kind()) {
            let precedence = op.precedence();
            if precedence < min_precedence {
                break;
            }
            let op_token = self.advance();
            let modifiers = self.parse_binary_modifiers()?;
            let next_min = if op.is_right_associative() {
                precedence
            } else {
                precedence + 1
            };
            let rhs = self.parse_expr(next_min)?;
            lhs = self.make_binary(lhs, op, op_token.start, modifiers, rhs);
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self) -> PResult<Node> {
        let op = match self.peek_kind() {
            TokenKind::Add => UnaryOp::Plus,
            TokenKind::Sub => UnaryOp::Neg,
            _ => return self.parse_postfix_primary(),
        };
        let start = self.advance().start;
        let operand = self.parse_expr(POW_PRECEDENCE)?;
        if let Expr::NumberLiteral(value) = operand.expr {
            let value = if op == UnaryOp::Neg { -value } else { value };
            return Ok(Node {
                expr: Expr::NumberLiteral(value),
                start,
            });
        }
        let operand_type = operand.expr.value_type();
        if operand_type != ValueType::Scalar && operand_type != ValueType::Vector {
            self.defer(
                start,
                format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {:?}",
                    operand_type.documented_name()
                ),
            );
        }
        Ok(Node {
            expr: Expr::Unary(Unary {
                op,
                expr: Box::new(operand.expr),
            }),
            start,
        })
    }

    fn parse_postfix_primary(&mut self) -> PResult<Node> {
        let mut node = self.parse_primary()?;
        loop {
            node = match self.peek_kind() {
                TokenKind::LeftBracket => self.parse_range_or_subquery(node)?,
                TokenKind::Keyword(Keyword::Offset) => self.parse_offset(node)?,
                TokenKind::At => self.parse_at(node)?,
                TokenKind::Keyword(Keyword::Anchored) => {
                    self.parse_extended_range(node, ExtendedRange::Anchored)?
                }
                TokenKind::Keyword(Keyword::Smoothed) => {
                    self.parse_extended_range(node, ExtendedRange::Smoothed)?
                }
                _ => return Ok(node),
            };
        }
    }

    fn parse_primary(&mut self) -> PResult<Node> {
        let token = self.peek().clone();
        let start = token.start;
        match &token.kind {
            TokenKind::Number(value) => {
                self.advance();
                Ok(Node {
                    expr: Expr::NumberLiteral(*value),
                    start,
                })
            }
            TokenKind::Duration(ms) => {
                self.advance();
                Ok(Node {
                    expr: Expr::NumberLiteral(*ms as f64 / 1000.0),
                    start,
                })
            }
            TokenKind::String(value) => {
                self.advance();
                Ok(Node {
                    expr: Expr::StringLiteral(value.clone()),
                    start,
                })
            }
            TokenKind::LeftParen => {
                self.advance();
                let inner = self.parse_expr(0)?;
                self.expect(&TokenKind::RightParen, "", "")?;
                Ok(Node {
                    expr: Expr::Paren(Box::new(inner.expr)),
                    start,
                })
            }
            TokenKind::LeftBrace => self.parse_selector(None, start),
            TokenKind::Identifier => {
                self.advance();
                let name = self.text(&token);
                if self.peek_kind() == &TokenKind::LeftParen {
                    self.parse_call(name.to_owned(), start)
                } else {
                    self.parse_selector(Some(name.to_owned()), start)
                }
            }
            TokenKind::MetricIdentifier => {
                self.advance();
                self.parse_selector(Some(self.text(&token).to_owned()), start)
            }
            TokenKind::Keyword(keyword) => {
                let keyword = *keyword;
                if let Some(op) = aggregate_op(keyword) {
                    if matches!(
                        self.peek_nth_kind(1),
                        TokenKind::LeftParen
                            | TokenKind::Keyword(Keyword::By)
                            | TokenKind::Keyword(Keyword::Without)
                    ) {
                        return self.parse_aggregate(op);
                    }
                }
                if matches!(
                    keyword,
                    Keyword::Start
                        | Keyword::End
                        | Keyword::Step
                        | Keyword::Range
                        | Keyword::MaxOf
                        | Keyword::MinOf
                ) && self.peek_nth_kind(1) == &TokenKind::LeftParen
                {
                    self.advance();
                    let name = self.text(&token).to_ascii_lowercase();
                    return self.parse_call(name, start);
                }
                if !keyword_can_be_metric_name(keyword) {
                    return Err(self.unexpected("", ""));
                }
                self.advance();
                self.parse_selector(Some(self.text(&token).to_owned()), start)
            }
            _ => Err(self.unexpected("", "")),
        }
    }

    // ----- selectors -----

    /// Parses the optional `{...}` after a metric name (or the braces of a nameless
    /// selector; then the next token is `{`).
    fn parse_selector(&mut self, name: Option<String>, start: usize) -> PResult<Node> {
        let mut matchers = Vec::new();
        if let Some(name) = &name {
            matchers.push(Matcher::equal(METRIC_NAME_LABEL, name.clone()));
        }
        if self.peek_kind() == &TokenKind::LeftBrace {
            self.advance();
            self.parse_label_matchers(&mut matchers)?;
        }
        if let Some(name) = &name {
            if let Some(other) = matchers[1..]
                .iter()
                .find(|matcher| matcher.name() == METRIC_NAME_LABEL)
            {
                self.defer(
                    start,
                    format!(
                        "metric name must not be set twice: {name:?} or {:?}",
                        other.value()
                    ),
                );
            }
        } else if matchers.iter().all(Matcher::matches_empty) {
            self.deferred.push(Deferred {
                error: ParseError::new(
                    start,
                    "vector selector must contain at least one non-empty matcher",
                ),
                empty_selector_at: Some(start),
            });
        }
        Ok(Node {
            expr: Expr::VectorSelector(VectorSelector {
                name,
                matchers,
                offset: None,
                offset_expr: None,
                at: None,
                extended_range: None,
            }),
            start,
        })
    }

    /// The matchers after `{` up to and including `}`.
    fn parse_label_matchers(&mut self, matchers: &mut Vec<Matcher>) -> PResult<()> {
        loop {
            let token = self.peek().clone();
            let label = match &token.kind {
                TokenKind::RightBrace => {
                    self.advance();
                    return Ok(());
                }
                TokenKind::Identifier => {
                    self.advance();
                    if match_kind(self.peek_kind()).is_none() {
                        return Err(self.unexpected("label matching", "label matching operator"));
                    }
                    self.text(&token).to_owned()
                }
                TokenKind::String(value) => {
                    self.advance();
                    if match_kind(self.peek_kind()).is_none() {
                        // A quoted metric name: `{"my.metric", job="x"}`.
                        matchers.push(Matcher::equal(METRIC_NAME_LABEL, value.clone()));
                        self.after_matcher()?;
                        continue;
                    }
                    value.clone()
                }
                _ => return Err(self.unexpected("label matching", "identifier or \"}\"")),
            };
            let kind = match_kind(self.peek_kind()).unwrap_or(MatchKind::Equal);
            self.advance();
            let value = match self.peek_kind() {
                TokenKind::String(value) => value.clone(),
                _ => return Err(self.unexpected("label matching", "string")),
            };
            self.advance();
            let matcher = Matcher::new(kind, label, value)
                .map_err(|error| ParseError::new(token.start, error.to_string()))?;
            matchers.push(matcher);
            self.after_matcher()?;
        }
    }

    /// After a matcher: `,` (then more matchers or `}`) or `}` (not consumed).
    fn after_matcher(&mut self) -> PResult<()> {
        match self.peek_kind() {
            TokenKind::Comma => {
                self.advance();
                Ok(())
            }
            TokenKind::RightBrace => Ok(()),
            _ => Err(self.unexpected("label matching", "\",\" or \"}\"")),
        }
    }

    // ----- calls and aggregations -----

    /// The arguments of a call or aggregation: `(` already next.
    fn parse_call_args(&mut self) -> PResult<Vec<Node>> {
        self.expect(&TokenKind::LeftParen, "", "\"(\"")?;
        let mut args = Vec::new();
        if self.peek_kind() == &TokenKind::RightParen {
            self.advance();
            return Ok(args);
        }
        loop {
            args.push(self.parse_expr(0)?);
            match self.peek_kind() {
                TokenKind::Comma => {
                    let comma = self.advance();
                    if self.peek_kind() == &TokenKind::RightParen {
                        return Err(ParseError::new(
                            comma.start,
                            "trailing commas not allowed in function call args",
                        ));
                    }
                }
                TokenKind::RightParen => {
                    self.advance();
                    return Ok(args);
                }
                _ => return Err(self.unexpected("", "")),
            }
        }
    }

    fn parse_call(&mut self, name: String, start: usize) -> PResult<Node> {
        let args = self.parse_call_args()?;
        let Some(func) = lookup_function(&name) else {
            return Err(ParseError::new(
                start,
                format!("unknown function with name {name:?}"),
            ));
        };
        if func.experimental && !self.options.experimental_functions {
            return Err(ParseError::new(
                start,
                format!("function {name:?} is not enabled"),
            ));
        }
        let count = args.len();
        if func.variadic == 0 {
            if count != func.arg_types.len() {
                self.defer(
                    start,
                    format!(
                        "expected {} argument(s) in call to {:?}, got {count}",
                        func.arg_types.len(),
                        func.name
                    ),
                );
            }
        } else if count < func.min_args() {
            self.defer(
                start,
                format!(
                    "expected at least {} argument(s) in call to {:?}, got {count}",
                    func.min_args(),
                    func.name
                ),
            );
        } else if let Some(max) = func.max_args().filter(|max| count > *max) {
            self.defer(
                start,
                format!(
                    "expected at most {max} argument(s) in call to {:?}, got {count}",
                    func.name
                ),
            );
        }
        if func.name == "info" && args.len() > 1 {
            self.check_info_selector(&args[1], start);
        }
        for (index, arg) in args.iter().enumerate() {
            let Some(expected) = func.arg_type(index) else {
                break;
            };
            let actual = arg.expr.value_type();
            if actual != expected {
                self.defer(
                    arg.start,
                    format!(
                        "expected type {} in call to function {:?}, got {}",
                        expected.documented_name(),
                        func.name,
                        actual.documented_name()
                    ),
                );
            }
        }
        Ok(Node {
            expr: Expr::Call(Call {
                func,
                positions: Positions(
                    std::iter::once(start)
                        .chain(args.iter().map(|arg| arg.start))
                        .collect(),
                ),
                args: args.into_iter().map(|arg| arg.expr).collect(),
            }),
            start,
        })
    }

    /// `info(v, {label selectors})`: the second argument must be a selector without a metric
    /// name, and it may consist of empty matchers only.
    fn check_info_selector(&mut self, arg: &Node, call_start: usize) {
        let actual = arg.expr.value_type();
        if actual != ValueType::Vector {
            self.defer(
                call_start,
                format!(
                    "expected type instant vector in call to function \"info\", got {}",
                    actual.documented_name()
                ),
            );
        }
        match &arg.expr {
            Expr::VectorSelector(selector) if selector.name.is_some() => self.defer(
                arg.start,
                "expected label selectors only, got vector selector instead",
            ),
            Expr::VectorSelector(_) => self
                .deferred
                .retain(|deferred| deferred.empty_selector_at != Some(arg.start)),
            _ => self.defer(arg.start, "expected label selectors only"),
        }
    }

    fn parse_aggregate(&mut self, op: AggregateOp) -> PResult<Node> {
        let start = self.advance().start;
        let mut grouping = None;
        if matches!(
            self.peek_kind(),
            TokenKind::Keyword(Keyword::By | Keyword::Without)
        ) {
            grouping = Some(self.parse_aggregate_modifier()?);
        }
        if self.peek_kind() != &TokenKind::LeftParen {
            return Err(self.unexpected("aggregation", ""));
        }
        let mut args = self.parse_call_args()?;
        if grouping.is_none()
            && matches!(
                self.peek_kind(),
                TokenKind::Keyword(Keyword::By | Keyword::Without)
            )
        {
            grouping = Some(self.parse_aggregate_modifier()?);
        }
        let (without, grouping) = grouping.unwrap_or((false, Vec::new()));
        if op.is_experimental() && !self.options.experimental_functions {
            return Err(ParseError::new(
                start,
                format!(
                    "{}() is experimental and must be enabled with --enable-feature=promql-experimental-functions",
                    op.name()
                ),
            ));
        }
        let Some(expr) = args.pop() else {
            return Err(ParseError::new(
                start,
                "no arguments for aggregate expression provided",
            ));
        };
        let wanted = if op.param_type().is_some() { 2 } else { 1 };
        let count = args.len() + 1;
        if count != wanted {
            return Err(ParseError::new(
                start,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {wanted}, got {count}"
                ),
            ));
        }
        let param = args.pop();
        let expr_type = expr.expr.value_type();
        if expr_type != ValueType::Vector {
            self.defer(
                expr.start,
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    expr_type.documented_name()
                ),
            );
        }
        if let (Some(param), Some(wanted)) = (&param, op.param_type()) {
            let actual = param.expr.value_type();
            if actual != wanted {
                self.defer(
                    param.start,
                    format!(
                        "expected type {} in aggregation parameter, got {}",
                        wanted.documented_name(),
                        actual.documented_name()
                    ),
                );
            }
        }
        Ok(Node {
            expr: Expr::Aggregate(Aggregate {
                op,
                positions: Positions(
                    std::iter::once(start)
                        .chain(param.iter().map(|param| param.start))
                        .chain(std::iter::once(expr.start))
                        .collect(),
                ),
                expr: Box::new(expr.expr),
                param: param.map(|param| Box::new(param.expr)),
                grouping,
                without,
            }),
            start,
        })
    }

    /// `by (labels)` or `without (labels)`; returns whether it was `without`.
    fn parse_aggregate_modifier(&mut self) -> PResult<(bool, Vec<String>)> {
        let without = self.advance().kind == TokenKind::Keyword(Keyword::Without);
        let labels = self.parse_grouping_labels()?;
        Ok((without, labels))
    }

    /// `(label, "quoted label", ...)` with an optional trailing comma.
    fn parse_grouping_labels(&mut self) -> PResult<Vec<String>> {
        self.expect(&TokenKind::LeftParen, "grouping opts", "\"(\"")?;
        let mut labels = Vec::new();
        if self.peek_kind() == &TokenKind::RightParen {
            self.advance();
            return Ok(labels);
        }
        loop {
            let token = self.peek().clone();
            let label = match &token.kind {
                TokenKind::Identifier | TokenKind::MetricIdentifier | TokenKind::Keyword(_) => {
                    self.text(&token).to_owned()
                }
                TokenKind::String(value) => value.clone(),
                _ => return Err(self.unexpected("grouping opts", "label")),
            };
            if label.is_empty() {
                return Err(ParseError::new(
                    token.start,
                    format!("invalid label name for grouping: {label:?}"),
                ));
            }
            self.advance();
            labels.push(label);
            match self.peek_kind() {
                TokenKind::Comma => {
                    self.advance();
                    if self.peek_kind() == &TokenKind::RightParen {
                        self.advance();
                        return Ok(labels);
                    }
                }
                TokenKind::RightParen => {
                    self.advance();
                    return Ok(labels);
                }
                _ => return Err(self.unexpected("grouping opts", "\",\" or \")\"")),
            }
        }
    }

    // ----- binary operators -----

    fn parse_binary_modifiers(&mut self) -> PResult<BinaryModifiers> {
        let mut modifiers = BinaryModifiers::default();
        if self.peek_kind() == &TokenKind::Keyword(Keyword::Bool) {
            self.advance();
            modifiers.return_bool = true;
        }
        if matches!(
            self.peek_kind(),
            TokenKind::Keyword(Keyword::On | Keyword::Ignoring)
        ) {
            modifiers.on = self.advance().kind == TokenKind::Keyword(Keyword::On);
            modifiers.labels = self.parse_grouping_labels()?;
            let card = match self.peek_kind() {
                TokenKind::Keyword(Keyword::GroupLeft) => Some(VectorMatchCardinality::ManyToOne),
                TokenKind::Keyword(Keyword::GroupRight) => Some(VectorMatchCardinality::OneToMany),
                _ => None,
            };
            if let Some(card) = card {
                self.advance();
                let include = if self.peek_kind() == &TokenKind::LeftParen {
                    self.parse_grouping_labels()?
                } else {
                    Vec::new()
                };
                modifiers.group = Some((card, include));
            }
        }
        self.parse_fill_modifiers(&mut modifiers)?;
        Ok(modifiers)
    }

    /// `fill(v)`, `fill_left(v)`, `fill_right(v)`, `fill_left(v) fill_right(w)` and the reverse.
    fn parse_fill_modifiers(&mut self, modifiers: &mut BinaryModifiers) -> PResult<()> {
        let TokenKind::Keyword(first @ (Keyword::Fill | Keyword::FillLeft | Keyword::FillRight)) =
            *self.peek_kind()
        else {
            return Ok(());
        };
        if !self.options.binop_fill_modifiers {
            return Err(ParseError::new(
                self.peek().start,
                "binop fill modifiers are experimental and not enabled",
            ));
        }
        self.advance();
        let value = self.parse_fill_value()?;
        let second = match first {
            Keyword::Fill => {
                modifiers.fill_lhs = Some(value);
                modifiers.fill_rhs = Some(value);
                return Ok(());
            }
            Keyword::FillLeft => {
                modifiers.fill_lhs = Some(value);
                Keyword::FillRight
            }
            _ => {
                modifiers.fill_rhs = Some(value);
                Keyword::FillLeft
            }
        };
        if self.peek_kind() == &TokenKind::Keyword(second) {
            self.advance();
            let value = self.parse_fill_value()?;
            if second == Keyword::FillLeft {
                modifiers.fill_lhs = Some(value);
            } else {
                modifiers.fill_rhs = Some(value);
            }
        }
        Ok(())
    }

    /// `( [+|-] number )`.
    fn parse_fill_value(&mut self) -> PResult<f64> {
        self.expect(&TokenKind::LeftParen, "fill modifier", "\"(\"")?;
        let mut negate = false;
        if let TokenKind::Add | TokenKind::Sub = self.peek_kind() {
            negate = self.advance().kind == TokenKind::Sub;
        }
        let value = match self.peek_kind() {
            TokenKind::Number(value) => *value,
            TokenKind::Duration(ms) => *ms as f64 / 1000.0,
            _ => return Err(self.unexpected("fill modifier", "number")),
        };
        self.advance();
        self.expect(&TokenKind::RightParen, "fill modifier", "\")\"")?;
        Ok(if negate { -value } else { value })
    }

    fn make_binary(
        &mut self,
        lhs: Node,
        op: BinaryOp,
        op_start: usize,
        modifiers: BinaryModifiers,
        rhs: Node,
    ) -> Node {
        let start = lhs.start;
        let lhs_type = lhs.expr.value_type();
        let rhs_type = rhs.expr.value_type();
        let op_name = op.symbol();
        if modifiers.return_bool && !op.is_comparison() {
            self.defer(
                op_start,
                "bool modifier can only be used on comparison operators",
            );
        }
        if op.is_comparison()
            && !modifiers.return_bool
            && lhs_type == ValueType::Scalar
            && rhs_type == ValueType::Scalar
        {
            self.defer(
                op_start,
                "comparisons between scalars must use BOOL modifier",
            );
        }
        let (mut card, include) = modifiers
            .group
            .unwrap_or((VectorMatchCardinality::OneToOne, Vec::new()));
        if op.is_set_operator() && card == VectorMatchCardinality::OneToOne {
            card = VectorMatchCardinality::ManyToMany;
        }
        if modifiers.on {
            if let Some(label) = modifiers
                .labels
                .iter()
                .find(|label| include.contains(label))
            {
                self.defer(
                    op_start,
                    format!("label {label:?} must not occur in ON and GROUP clause at once"),
                );
            }
        }
        if lhs_type != ValueType::Scalar && lhs_type != ValueType::Vector {
            self.defer(
                lhs.start,
                "binary expression must contain only scalar and instant vector types",
            );
        }
        if rhs_type != ValueType::Scalar && rhs_type != ValueType::Vector {
            self.defer(
                rhs.start,
                "binary expression must contain only scalar and instant vector types",
            );
        }
        let has_fill = modifiers.fill_lhs.is_some() || modifiers.fill_rhs.is_some();
        let both_vectors = lhs_type == ValueType::Vector && rhs_type == ValueType::Vector;
        let matching = if !both_vectors {
            if !modifiers.labels.is_empty() {
                self.defer(
                    start,
                    "vector matching only allowed between instant vectors",
                );
            }
            if has_fill {
                self.defer(
                    start,
                    "filling in missing series only allowed between instant vectors",
                );
            }
            None
        } else {
            if op.is_set_operator() {
                if matches!(
                    card,
                    VectorMatchCardinality::OneToMany | VectorMatchCardinality::ManyToOne
                ) {
                    self.defer(
                        start,
                        format!("no grouping allowed for {op_name:?} operation"),
                    );
                }
                if card != VectorMatchCardinality::ManyToMany {
                    self.defer(start, "set operations must always be many-to-many");
                }
                if has_fill {
                    self.defer(
                        start,
                        "filling in missing series not allowed for set operators",
                    );
                }
            }
            Some(VectorMatching {
                card,
                on: modifiers.on,
                labels: modifiers.labels,
                include,
                fill_lhs: modifiers.fill_lhs,
                fill_rhs: modifiers.fill_rhs,
            })
        };
        if (lhs_type == ValueType::Scalar || rhs_type == ValueType::Scalar) && op.is_set_operator()
        {
            self.defer(
                start,
                format!("set operator {op_name:?} not allowed in binary scalar expression"),
            );
        }
        Node {
            expr: Expr::Binary(Binary {
                op,
                lhs: Box::new(lhs.expr),
                rhs: Box::new(rhs.expr),
                return_bool: modifiers.return_bool,
                matching,
            }),
            start,
        }
    }

    // ----- postfix modifiers -----

    fn parse_range_or_subquery(&mut self, node: Node) -> PResult<Node> {
        let open = self.advance();
        const EXPECTED: &str = "number, duration, step(), or range()";
        let range = self.parse_duration_expr(0, "subquery or range selector", EXPECTED)?;
        match self.peek_kind() {
            TokenKind::RightBracket => {
                self.advance();
                let (range_ms, range_expr) = self.positive_duration(range)?;
                let Expr::VectorSelector(vector) = node.expr else {
                    return Err(ParseError::new(
                        open.start,
                        "ranges only allowed for vector selectors",
                    ));
                };
                if vector.offset.is_some() || vector.offset_expr.is_some() {
                    return Err(ParseError::new(
                        open.start,
                        "no offset modifiers allowed before range",
                    ));
                }
                if vector.at.is_some() {
                    return Err(ParseError::new(
                        open.start,
                        "no @ modifiers allowed before range",
                    ));
                }
                Ok(Node {
                    expr: Expr::MatrixSelector(MatrixSelector {
                        vector,
                        range_ms,
                        range_expr,
                    }),
                    start: node.start,
                })
            }
            TokenKind::Colon => {
                self.advance();
                let step = if self.peek_kind() == &TokenKind::RightBracket {
                    None
                } else {
                    Some(self.parse_duration_expr(
                        0,
                        "subquery selector",
                        "number, duration, step(), range(), or \"]\"",
                    )?)
                };
                self.expect(&TokenKind::RightBracket, "subquery selector", "\"]\"")?;
                let (range_ms, range_expr) = self.positive_duration(range)?;
                let (step_ms, step_expr) = match step {
                    Some(step) => {
                        let (ms, expr) = self.positive_duration(step)?;
                        (if expr.is_some() { None } else { Some(ms) }, expr)
                    }
                    None => (None, None),
                };
                let base_type = node.expr.value_type();
                if base_type != ValueType::Vector {
                    self.defer(
                        node.start,
                        format!(
                            "subquery is only allowed on instant vector, got {} instead",
                            base_type.name()
                        ),
                    );
                }
                Ok(Node {
                    expr: Expr::Subquery(Subquery {
                        expr: Box::new(node.expr),
                        range_ms,
                        range_expr,
                        step_ms,
                        step_expr,
                        offset: None,
                        offset_expr: None,
                        at: None,
                    }),
                    start: node.start,
                })
            }
            _ => Err(self.unexpected("subquery or range", "\":\" or \"]\"")),
        }
    }

    fn parse_offset(&mut self, mut node: Node) -> PResult<Node> {
        self.advance();
        let duration = self.parse_offset_duration()?;
        let (offset, offset_expr) = self.offset_duration(duration)?;
        let target = match &mut node.expr {
            Expr::VectorSelector(selector) => {
                Some((&mut selector.offset, &mut selector.offset_expr))
            }
            Expr::MatrixSelector(matrix) => {
                Some((&mut matrix.vector.offset, &mut matrix.vector.offset_expr))
            }
            Expr::Subquery(subquery) => Some((&mut subquery.offset, &mut subquery.offset_expr)),
            _ => None,
        };
        let Some((slot, slot_expr)) = target else {
            return Err(ParseError::new(
                node.start,
                "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
            ));
        };
        if slot.is_some() || slot_expr.is_some() {
            return Err(ParseError::new(
                node.start,
                "offset may not be set multiple times",
            ));
        }
        *slot = offset;
        *slot_expr = offset_expr;
        Ok(node)
    }

    fn parse_at(&mut self, mut node: Node) -> PResult<Node> {
        self.advance();
        let at = match self.peek_kind() {
            TokenKind::Keyword(keyword @ (Keyword::Start | Keyword::End)) => {
                let at = if *keyword == Keyword::Start {
                    AtModifier::Start
                } else {
                    AtModifier::End
                };
                self.advance();
                self.expect(&TokenKind::LeftParen, "@", "\"(\"")?;
                self.expect(&TokenKind::RightParen, "@", "\")\"")?;
                at
            }
            _ => {
                let mut negate = false;
                if let TokenKind::Add | TokenKind::Sub = self.peek_kind() {
                    negate = self.advance().kind == TokenKind::Sub;
                }
                let seconds = match self.peek_kind() {
                    TokenKind::Number(value) => *value,
                    TokenKind::Duration(ms) => *ms as f64 / 1000.0,
                    _ => return Err(self.unexpected("@", "timestamp")),
                };
                self.advance();
                let seconds = if negate { -seconds } else { seconds };
                // 2^63, the bound Prometheus checks against (as float64(math.MaxInt64)).
                const LIMIT: f64 = 9_223_372_036_854_775_808.0;
                if !seconds.is_finite() || seconds >= LIMIT || seconds <= -LIMIT {
                    return Err(ParseError::new(
                        node.start,
                        format!(
                            "timestamp out of bounds for @ modifier: {}",
                            go_float_f(seconds)
                        ),
                    ));
                }
                AtModifier::Timestamp((seconds * 1000.0).round() as i64)
            }
        };
        let slot = match &mut node.expr {
            Expr::VectorSelector(selector) => &mut selector.at,
            Expr::MatrixSelector(matrix) => &mut matrix.vector.at,
            Expr::Subquery(subquery) => &mut subquery.at,
            _ => {
                return Err(ParseError::new(
                    node.start,
                    "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                ))
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(
                node.start,
                "@ <timestamp> may not be set multiple times",
            ));
        }
        *slot = Some(at);
        Ok(node)
    }

    fn parse_extended_range(&mut self, mut node: Node, kind: ExtendedRange) -> PResult<Node> {
        self.advance();
        let name = kind.keyword();
        if !self.options.extended_range_selectors {
            return Err(ParseError::new(
                node.start,
                format!("{name} modifier is experimental and not enabled"),
            ));
        }
        let slot = match &mut node.expr {
            Expr::VectorSelector(selector) => &mut selector.extended_range,
            Expr::MatrixSelector(matrix) => &mut matrix.vector.extended_range,
            Expr::Subquery(_) => {
                return Err(ParseError::new(
                    node.start,
                    format!("{name} modifier is not supported for subqueries"),
                ))
            }
            _ => {
                return Err(ParseError::new(
                    node.start,
                    format!("{name} modifier not implemented"),
                ))
            }
        };
        if slot.is_some_and(|existing| existing != kind) {
            return Err(ParseError::new(
                node.start,
                "anchored and smoothed modifiers cannot be used together",
            ));
        }
        *slot = Some(kind);
        Ok(node)
    }

    // ----- durations -----

    /// A full duration expression (inside brackets, or inside `min_of`/`max_of`/parens).
    fn parse_duration_expr(
        &mut self,
        min_precedence: u8,
        context: &str,
        expected: &str,
    ) -> PResult<DurationNode> {
        let mut lhs = self.parse_duration_unary(context, expected)?;
        while let Some(op) = duration_op(self.peek_kind()) {
            let precedence = op.precedence();
            if precedence < min_precedence {
                break;
            }
            let op_start = self.advance().start;
            let next_min = if op == DurationOp::Pow {
                precedence
            } else {
                precedence + 1
            };
            let rhs = self.parse_duration_expr(next_min, context, expected)?;
            let zero_literal = rhs.literal
                && matches!(rhs.expr, DurationExpr::Number(v) if v == 0.0)
                || matches!(rhs.expr, DurationExpr::Duration(0));
            if zero_literal && matches!(op, DurationOp::Div | DurationOp::Mod) {
                let message = if op == DurationOp::Div {
                    "division by zero"
                } else {
                    "modulo by zero"
                };
                return Err(ParseError::new(op_start, message));
            }
            lhs = DurationNode {
                expr: DurationExpr::Binary {
                    op,
                    lhs: Box::new(lhs.expr),
                    rhs: Box::new(rhs.expr),
                },
                start: lhs.start,
                literal: false,
            };
        }
        Ok(lhs)
    }

    fn parse_duration_unary(&mut self, context: &str, expected: &str) -> PResult<DurationNode> {
        let negate = match self.peek_kind() {
            TokenKind::Add => false,
            TokenKind::Sub => true,
            _ => return self.parse_duration_atom(context, expected),
        };
        let start = self.advance().start;
        let operand = self.parse_duration_expr(POW_PRECEDENCE, context, expected)?;
        Ok(apply_duration_sign(negate, operand, start))
    }

    /// A number, duration, `step()`, `range()`, `min_of(a, b)`, `max_of(a, b)` or `(expr)`.
    fn parse_duration_atom(&mut self, context: &str, expected: &str) -> PResult<DurationNode> {
        let token = self.peek().clone();
        let start = token.start;
        let literal = |seconds| DurationNode {
            expr: DurationExpr::Number(seconds),
            start,
            literal: true,
        };
        match &token.kind {
            TokenKind::Number(value) => {
                self.advance();
                Ok(literal(*value))
            }
            TokenKind::Duration(ms) => {
                self.advance();
                Ok(DurationNode {
                    expr: DurationExpr::Duration(*ms),
                    start,
                    literal: true,
                })
            }
            TokenKind::Keyword(keyword @ (Keyword::Step | Keyword::Range)) => {
                let expr = if *keyword == Keyword::Step {
                    DurationExpr::Step
                } else {
                    DurationExpr::Range
                };
                self.advance();
                self.expect(&TokenKind::LeftParen, context, expected)?;
                self.expect(&TokenKind::RightParen, context, "\")\"")?;
                Ok(DurationNode {
                    expr,
                    start,
                    literal: false,
                })
            }
            TokenKind::Keyword(keyword @ (Keyword::MinOf | Keyword::MaxOf)) => {
                let is_min = *keyword == Keyword::MinOf;
                self.advance();
                self.expect(&TokenKind::LeftParen, context, "\"(\"")?;
                let first = self.parse_duration_expr(0, context, expected)?;
                self.expect(&TokenKind::Comma, context, "\",\"")?;
                let second = self.parse_duration_expr(0, context, expected)?;
                self.expect(&TokenKind::RightParen, context, "\")\"")?;
                let (a, b) = (Box::new(first.expr), Box::new(second.expr));
                Ok(DurationNode {
                    expr: if is_min {
                        DurationExpr::MinOf(a, b)
                    } else {
                        DurationExpr::MaxOf(a, b)
                    },
                    start,
                    literal: false,
                })
            }
            TokenKind::LeftParen => {
                self.advance();
                let inner = self.parse_duration_expr(0, context, expected)?;
                self.expect(&TokenKind::RightParen, context, "\")\"")?;
                Ok(DurationNode {
                    expr: DurationExpr::Paren(Box::new(inner.expr)),
                    start,
                    literal: false,
                })
            }
            _ => Err(self.unexpected(context, expected)),
        }
    }

    /// The duration after `offset`: a signed atom only, so that `x offset 1m + 1` adds 1 to
    /// `x offset 1m` and `x offset -2 ^ 2` squares `x offset -2`, as in Prometheus.
    fn parse_offset_duration(&mut self) -> PResult<DurationNode> {
        const CONTEXT: &str = "offset";
        const EXPECTED: &str = "number, duration, step(), or range()";
        let mut signs = Vec::new();
        while let TokenKind::Add | TokenKind::Sub = self.peek_kind() {
            let token = self.advance();
            signs.push((token.kind == TokenKind::Sub, token.start));
        }
        let mut node = self.parse_duration_atom(CONTEXT, EXPECTED)?;
        for (negate, start) in signs.into_iter().rev() {
            node = apply_duration_sign(negate, node, start);
        }
        Ok(node)
    }

    fn check_duration_feature(&self, node: &DurationNode) -> PResult<()> {
        if !node.literal && !self.options.duration_expressions {
            return Err(ParseError::new(
                node.start,
                "experimental duration expression is not enabled",
            ));
        }
        Ok(())
    }

    /// A range or subquery step: milliseconds, or the expression when it depends on the
    /// query. Must be greater than zero.
    fn positive_duration(&self, node: DurationNode) -> PResult<(i64, Option<DurationExpr>)> {
        self.check_duration_feature(&node)?;
        if node.expr.depends_on_query() {
            return Ok((0, Some(node.expr)));
        }
        if node.literal {
            let seconds = match node.expr {
                DurationExpr::Duration(ms) => {
                    if ms <= 0 {
                        return Err(ParseError::new(
                            node.start,
                            "duration must be greater than 0",
                        ));
                    }
                    return Ok((ms, None));
                }
                DurationExpr::Number(seconds) => seconds,
                _ => return Err(ParseError::new(node.start, "expected a duration")),
            };
            if seconds_out_of_range(seconds) {
                return Err(ParseError::new(node.start, "duration out of range"));
            }
            if seconds.is_nan() || seconds <= 0.0 {
                return Err(ParseError::new(
                    node.start,
                    "duration must be greater than 0",
                ));
            }
            let ms = literal_seconds_to_ms(seconds);
            if ms == 0 {
                return Err(ParseError::new(node.start, SUB_MILLISECOND));
            }
            return Ok((ms, None));
        }
        let ms = node
            .expr
            .to_ms(ZERO_CONTEXT, false)
            .map_err(|error| ParseError::new(node.start, error.message))?;
        Ok((ms, None))
    }

    /// An offset: milliseconds (`None` for zero), or the expression when it depends on the
    /// query. May be negative.
    fn offset_duration(&self, node: DurationNode) -> PResult<(Option<i64>, Option<DurationExpr>)> {
        self.check_duration_feature(&node)?;
        if node.expr.depends_on_query() {
            return Ok((None, Some(node.expr)));
        }
        let ms = if node.literal {
            match node.expr {
                DurationExpr::Duration(ms) => ms,
                DurationExpr::Number(seconds) => {
                    if seconds.is_nan() || seconds_out_of_range(seconds) {
                        return Err(ParseError::new(node.start, "duration out of range"));
                    }
                    literal_seconds_to_ms(seconds)
                }
                _ => return Err(ParseError::new(node.start, "expected a duration")),
            }
        } else {
            node.expr
                .to_ms(ZERO_CONTEXT, true)
                .map_err(|error| ParseError::new(node.start, error.message))?
        };
        Ok((Some(ms).filter(|ms| *ms != 0), None))
    }
}

/// Used for expressions without `step()`/`range()`, where the context is never read.
const ZERO_CONTEXT: DurationContext = DurationContext {
    step_ms: 0,
    range_ms: 0,
};

/// A sign in front of a duration: folded into a literal, kept as `Neg` otherwise (`+` is
/// dropped), as Prometheus does.
fn apply_duration_sign(negate: bool, operand: DurationNode, start: usize) -> DurationNode {
    match operand.expr {
        DurationExpr::Number(seconds) if operand.literal => DurationNode {
            expr: DurationExpr::Number(if negate { -seconds } else { seconds }),
            start,
            literal: true,
        },
        DurationExpr::Duration(ms) if operand.literal => DurationNode {
            expr: DurationExpr::Duration(if negate { -ms } else { ms }),
            start,
            literal: true,
        },
        expr => DurationNode {
            expr: if negate {
                DurationExpr::Neg(Box::new(expr))
            } else {
                expr
            },
            start,
            literal: false,
        },
    }
}

#[cfg(test)]
mod tests;
