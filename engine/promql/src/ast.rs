//! The syntax tree of a PromQL expression.
//!
//! The tree is what the parser checked: every node is well typed (see [`Expr::value_type`]),
//! selectors carry compiled [`Matcher`]s, durations are milliseconds. Nodes carry no source
//! positions, so two parses of equivalent text compare equal (`parse(print(e)) == e`).
//!
//! Number literals compare equal when both are NaN, so that trees holding `NaN` compare equal
//! to themselves.

use lookout_model::Matcher;

use crate::functions::FunctionInfo;

/// The type of value an expression evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A single float (`1`, `scalar(x)`, `time()`).
    Scalar,
    /// An instant vector: one sample per series.
    Vector,
    /// A range vector: a window of samples per series (`x[5m]`, subqueries).
    Matrix,
    /// A string literal.
    String,
}

impl ValueType {
    /// The name Prometheus uses in type errors: `scalar`, `instant vector`, `range vector`,
    /// `string`.
    pub fn documented_name(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::String => "string",
        }
    }

    /// The short name Prometheus uses internally and in the API's `resultType`: `scalar`,
    /// `vector`, `matrix`, `string`.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "vector",
            ValueType::Matrix => "matrix",
            ValueType::String => "string",
        }
    }
}

/// A PromQL expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A number: `1`, `0x1f`, `1e-3`, `Inf`, `NaN`, and durations used as numbers (`5m` is 300).
    /// A minus sign directly in front of a number is folded into it (`-1`).
    NumberLiteral(f64),
    /// A string literal, unescaped.
    StringLiteral(String),
    /// `metric{label="value"}`, optionally with `offset`, `@`, `anchored`/`smoothed`.
    VectorSelector(VectorSelector),
    /// `metric{...}[5m]`.
    MatrixSelector(MatrixSelector),
    /// `expr[range:step]`.
    Subquery(Subquery),
    /// A function call.
    Call(Call),
    /// An aggregation such as `sum by (job) (x)`.
    Aggregate(Aggregate),
    /// A binary operation.
    Binary(Binary),
    /// `-x` or `+x` (a sign in front of a number literal is folded into the literal).
    Unary(Unary),
    /// `(expr)`.
    Paren(Box<Expr>),
}

/// Where an `@` modifier pins the evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtModifier {
    /// `@ <timestamp>`, in milliseconds since the epoch.
    Timestamp(i64),
    /// `@ start()`: the start of the query range.
    Start,
    /// `@ end()`: the end of the query range.
    End,
}

/// The experimental `anchored` / `smoothed` range selector modifiers of Prometheus 3.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtendedRange {
    /// `anchored`: windows include the last sample before the range start.
    Anchored,
    /// `smoothed`: values at the window edges are interpolated.
    Smoothed,
}

impl ExtendedRange {
    /// The keyword as written.
    pub fn keyword(self) -> &'static str {
        match self {
            ExtendedRange::Anchored => "anchored",
            ExtendedRange::Smoothed => "smoothed",
        }
    }
}

/// An instant vector selector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSelector {
    /// The metric name when written in front of the braces (`up{...}`); `None` for
    /// `{__name__="up"}` or `{"up"}`, whose name is only in `matchers`.
    pub name: Option<String>,
    /// All matchers. When `name` is set, the first one is `__name__="<name>"`.
    pub matchers: Vec<Matcher>,
    /// `offset` in milliseconds (negative: into the future). `None` when absent or zero.
    pub offset: Option<i64>,
    /// An offset that depends on the query (`offset step()`); resolved by
    /// [`Expr::resolve_durations`]. `offset` is `None` while this is set.
    pub offset_expr: Option<DurationExpr>,
    /// The `@` modifier.
    pub at: Option<AtModifier>,
    /// `anchored` or `smoothed`.
    pub extended_range: Option<ExtendedRange>,
}

/// A range vector selector: `selector[range]`. Offset, `@` and `anchored`/`smoothed` are kept
/// on the inner selector, as in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixSelector {
    /// The selector the range applies to.
    pub vector: VectorSelector,
    /// The range in milliseconds (always > 0 unless `range_expr` is set).
    pub range_ms: i64,
    /// A range that depends on the query (`[step()]`, `[range() * 2]`); resolved by
    /// [`Expr::resolve_durations`]. `range_ms` is 0 while this is set.
    pub range_expr: Option<DurationExpr>,
}

/// A subquery: `expr[range:step]` or `expr[range:]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subquery {
    /// The instant-vector expression evaluated at each step.
    pub expr: Box<Expr>,
    /// The range in milliseconds (> 0 unless `range_expr` is set).
    pub range_ms: i64,
    /// A range that depends on the query; see [`MatrixSelector::range_expr`].
    pub range_expr: Option<DurationExpr>,
    /// The resolution in milliseconds; `None` means the engine's default resolution.
    pub step_ms: Option<i64>,
    /// A resolution that depends on the query (`[1h:step()]`).
    pub step_expr: Option<DurationExpr>,
    /// `offset` in milliseconds; `None` when absent or zero.
    pub offset: Option<i64>,
    /// An offset that depends on the query.
    pub offset_expr: Option<DurationExpr>,
    /// The `@` modifier.
    pub at: Option<AtModifier>,
}

/// Byte offsets into the query text, for the `(line:column)` of annotations. They take no part
/// in comparisons: two trees are equal when they mean the same, wherever they were written.
#[derive(Debug, Clone, Default)]
pub struct Positions(pub Vec<usize>);

impl PartialEq for Positions {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Positions {
    /// The offset at `index`, 0 when unknown (trees built by hand).
    pub fn get(&self, index: usize) -> usize {
        self.0.get(index).copied().unwrap_or(0)
    }
}

/// A function call with checked arity and argument types.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function (aliases such as `holt_winters` resolve to their target).
    pub func: &'static FunctionInfo,
    /// The arguments in order.
    pub args: Vec<Expr>,
    /// Where the call starts, then where each argument starts.
    pub positions: Positions,
}

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `group`
    Group,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk(k, v)`
    Topk,
    /// `bottomk(k, v)`
    Bottomk,
    /// `quantile(q, v)`
    Quantile,
    /// `count_values("label", v)`
    CountValues,
    /// `limitk(k, v)` (experimental in Prometheus)
    Limitk,
    /// `limit_ratio(r, v)` (experimental in Prometheus)
    LimitRatio,
}

impl AggregateOp {
    /// Every aggregation operator.
    pub const ALL: [AggregateOp; 14] = [
        AggregateOp::Sum,
        AggregateOp::Avg,
        AggregateOp::Count,
        AggregateOp::Min,
        AggregateOp::Max,
        AggregateOp::Group,
        AggregateOp::Stddev,
        AggregateOp::Stdvar,
        AggregateOp::Topk,
        AggregateOp::Bottomk,
        AggregateOp::Quantile,
        AggregateOp::CountValues,
        AggregateOp::Limitk,
        AggregateOp::LimitRatio,
    ];

    /// The operator as written (lower case).
    pub fn name(self) -> &'static str {
        match self {
            AggregateOp::Sum => "sum",
            AggregateOp::Avg => "avg",
            AggregateOp::Count => "count",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Group => "group",
            AggregateOp::Stddev => "stddev",
            AggregateOp::Stdvar => "stdvar",
            AggregateOp::Topk => "topk",
            AggregateOp::Bottomk => "bottomk",
            AggregateOp::Quantile => "quantile",
            AggregateOp::CountValues => "count_values",
            AggregateOp::Limitk => "limitk",
            AggregateOp::LimitRatio => "limit_ratio",
        }
    }

    /// The type of the leading parameter, for the operators that take one.
    pub fn param_type(self) -> Option<ValueType> {
        match self {
            AggregateOp::Topk
            | AggregateOp::Bottomk
            | AggregateOp::Quantile
            | AggregateOp::Limitk
            | AggregateOp::LimitRatio => Some(ValueType::Scalar),
            AggregateOp::CountValues => Some(ValueType::String),
            _ => None,
        }
    }

    /// Whether Prometheus only accepts the operator with experimental functions enabled.
    pub fn is_experimental(self) -> bool {
        matches!(self, AggregateOp::Limitk | AggregateOp::LimitRatio)
    }
}

/// An aggregation: `op [by|without (labels)] ([param,] expr)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The operator.
    pub op: AggregateOp,
    /// The aggregated instant vector.
    pub expr: Box<Expr>,
    /// The parameter of `topk`, `bottomk`, `quantile`, `count_values`, `limitk`,
    /// `limit_ratio`.
    pub param: Option<Box<Expr>>,
    /// The `by` or `without` labels, as written.
    pub grouping: Vec<String>,
    /// `without` rather than `by`.
    pub without: bool,
    /// Where the aggregation starts, then where its parameter (if any) and its expression
    /// start.
    pub positions: Positions,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `atan2`
    Atan2,
    /// `==`
    Eql,
    /// `!=`
    Neq,
    /// `>`
    Gtr,
    /// `<`
    Lss,
    /// `>=`
    Gte,
    /// `<=`
    Lte,
    /// `</` (Prometheus 3.x: trim native histogram buckets above a bound)
    TrimUpper,
    /// `>/` (Prometheus 3.x: trim native histogram buckets below a bound)
    TrimLower,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Atan2 => "atan2",
            BinaryOp::Eql => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::Gtr => ">",
            BinaryOp::Lss => "<",
            BinaryOp::Gte => ">=",
            BinaryOp::Lte => "<=",
            BinaryOp::TrimUpper => "</",
            BinaryOp::TrimLower => ">/",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
        }
    }

    /// Binding strength: 1 (`or`) to 6 (`^`).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And | BinaryOp::Unless => 2,
            BinaryOp::Eql
            | BinaryOp::Neq
            | BinaryOp::Gtr
            | BinaryOp::Lss
            | BinaryOp::Gte
            | BinaryOp::Lte
            | BinaryOp::TrimUpper
            | BinaryOp::TrimLower => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Atan2 => 5,
            BinaryOp::Pow => 6,
        }
    }

    /// Only `^` groups from the right.
    pub fn is_right_associative(self) -> bool {
        self == BinaryOp::Pow
    }

    /// `== != > < >= <=`: the operators that filter (or, with `bool`, return 0/1).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eql
                | BinaryOp::Neq
                | BinaryOp::Gtr
                | BinaryOp::Lss
                | BinaryOp::Gte
                | BinaryOp::Lte
        )
    }

    /// `and or unless`.
    pub fn is_set_operator(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }
}

/// How series on the two sides of a vector/vector operation are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorMatchCardinality {
    /// Each side has at most one series per matching label set.
    OneToOne,
    /// `group_left`: many left series per right series.
    ManyToOne,
    /// `group_right`: many right series per left series.
    OneToMany,
    /// Set operators.
    ManyToMany,
}

/// The vector matching of a binary operation between two instant vectors.
#[derive(Debug, Clone)]
pub struct VectorMatching {
    /// Cardinality: one-to-one unless `group_left`/`group_right`; set operators are
    /// many-to-many.
    pub card: VectorMatchCardinality,
    /// `on(labels)` rather than `ignoring(labels)`.
    pub on: bool,
    /// The `on`/`ignoring` labels.
    pub labels: Vec<String>,
    /// The extra labels of `group_left(...)`/`group_right(...)`.
    pub include: Vec<String>,
    /// `fill(v)`/`fill_left(v)`: the value used for a missing left-hand series
    /// (experimental Prometheus 3.x fill modifiers).
    pub fill_lhs: Option<f64>,
    /// `fill(v)`/`fill_right(v)`: the value used for a missing right-hand series.
    pub fill_rhs: Option<f64>,
}

impl VectorMatching {
    /// Plain one-to-one matching on all labels.
    pub fn one_to_one() -> VectorMatching {
        VectorMatching {
            card: VectorMatchCardinality::OneToOne,
            on: false,
            labels: Vec::new(),
            include: Vec::new(),
            fill_lhs: None,
            fill_rhs: None,
        }
    }
}

impl PartialEq for VectorMatching {
    fn eq(&self, other: &Self) -> bool {
        self.card == other.card
            && self.on == other.on
            && self.labels == other.labels
            && self.include == other.include
            && option_float_eq(self.fill_lhs, other.fill_lhs)
            && option_float_eq(self.fill_rhs, other.fill_rhs)
    }
}

/// A binary operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// The operator.
    pub op: BinaryOp,
    /// Left operand.
    pub lhs: Box<Expr>,
    /// Right operand.
    pub rhs: Box<Expr>,
    /// The `bool` modifier (comparisons only).
    pub return_bool: bool,
    /// Vector matching; `Some` exactly when both operands are instant vectors.
    pub matching: Option<VectorMatching>,
}

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-`
    Neg,
    /// `+`
    Plus,
}

impl UnaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Plus => "+",
        }
    }
}

/// `-expr` or `+expr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Unary {
    /// The operator.
    pub op: UnaryOp,
    /// The operand (scalar or instant vector).
    pub expr: Box<Expr>,
}

/// An arithmetic operator inside a duration expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

impl DurationOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            DurationOp::Add => "+",
            DurationOp::Sub => "-",
            DurationOp::Mul => "*",
            DurationOp::Div => "/",
            DurationOp::Mod => "%",
            DurationOp::Pow => "^",
        }
    }

    /// Binding strength, as for [`BinaryOp::precedence`].
    pub fn precedence(self) -> u8 {
        match self {
            DurationOp::Add | DurationOp::Sub => 4,
            DurationOp::Mul | DurationOp::Div | DurationOp::Mod => 5,
            DurationOp::Pow => 6,
        }
    }
}

/// A duration expression that uses `step()` or `range()` (Prometheus 3.x experimental
/// duration expressions). Expressions without them are evaluated by the parser and stored as
/// plain milliseconds, so the engine only meets this type for query-dependent durations.
/// Values are in seconds.
#[derive(Debug, Clone)]
pub enum DurationExpr {
    /// A plain number of seconds (`[100]`, the `2` of `step() * 2`).
    Number(f64),
    /// A duration literal (`5m`), in milliseconds; negative when a minus sign was folded in.
    Duration(i64),
    /// `step()`: the query step (0 for instant queries).
    Step,
    /// `range()`: end minus start of the query (0 for instant queries).
    Range,
    /// `-expr`.
    Neg(Box<DurationExpr>),
    /// `lhs op rhs`.
    Binary {
        /// The operator.
        op: DurationOp,
        /// Left operand.
        lhs: Box<DurationExpr>,
        /// Right operand.
        rhs: Box<DurationExpr>,
    },
    /// `min_of(a, b)`.
    MinOf(Box<DurationExpr>, Box<DurationExpr>),
    /// `max_of(a, b)`.
    MaxOf(Box<DurationExpr>, Box<DurationExpr>),
    /// `(expr)`.
    Paren(Box<DurationExpr>),
}

impl PartialEq for DurationExpr {
    fn eq(&self, other: &Self) -> bool {
        use DurationExpr as D;
        match (self, other) {
            (D::Number(a), D::Number(b)) => float_eq(*a, *b),
            (D::Duration(a), D::Duration(b)) => a == b,
            (D::Step, D::Step) | (D::Range, D::Range) => true,
            (D::Neg(a), D::Neg(b)) | (D::Paren(a), D::Paren(b)) => a == b,
            (
                D::Binary {
                    op: op_a,
                    lhs: lhs_a,
                    rhs: rhs_a,
                },
                D::Binary {
                    op: op_b,
                    lhs: lhs_b,
                    rhs: rhs_b,
                },
            ) => op_a == op_b && lhs_a == lhs_b && rhs_a == rhs_b,
            (D::MinOf(a1, a2), D::MinOf(b1, b2)) | (D::MaxOf(a1, a2), D::MaxOf(b1, b2)) => {
                a1 == b1 && a2 == b2
            }
            _ => false,
        }
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Expr::NumberLiteral(a), Expr::NumberLiteral(b)) => float_eq(*a, *b),
            (Expr::StringLiteral(a), Expr::StringLiteral(b)) => a == b,
            (Expr::VectorSelector(a), Expr::VectorSelector(b)) => a == b,
            (Expr::MatrixSelector(a), Expr::MatrixSelector(b)) => a == b,
            (Expr::Subquery(a), Expr::Subquery(b)) => a == b,
            (Expr::Call(a), Expr::Call(b)) => a == b,
            (Expr::Aggregate(a), Expr::Aggregate(b)) => a == b,
            (Expr::Binary(a), Expr::Binary(b)) => a == b,
            (Expr::Unary(a), Expr::Unary(b)) => a == b,
            (Expr::Paren(a), Expr::Paren(b)) => a == b,
            _ => false,
        }
    }
}

/// Float equality for syntax trees: NaN equals NaN.
fn float_eq(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn option_float_eq(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => float_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Expr {
    /// The type of value the expression evaluates to.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::NumberLiteral(_) => ValueType::Scalar,
            Expr::StringLiteral(_) => ValueType::String,
            Expr::VectorSelector(_) | Expr::Aggregate(_) => ValueType::Vector,
            Expr::MatrixSelector(_) | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Call(call) => call.func.return_type,
            Expr::Binary(binary) => {
                if binary.lhs.value_type() == ValueType::Scalar
                    && binary.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Unary(unary) => unary.expr.value_type(),
            Expr::Paren(inner) => inner.value_type(),
        }
    }

    /// The expression without any enclosing parentheses.
    pub fn unwrap_parens(&self) -> &Expr {
        let mut expr = self;
        while let Expr::Paren(inner) = expr {
            expr = inner;
        }
        expr
    }

    /// The direct sub-expressions, in source order.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::VectorSelector(_)
            | Expr::MatrixSelector(_) => Vec::new(),
            Expr::Subquery(subquery) => vec![&subquery.expr],
            Expr::Call(call) => call.args.iter().collect(),
            Expr::Aggregate(aggregate) => aggregate
                .param
                .iter()
                .map(|param| &**param)
                .chain(std::iter::once(&*aggregate.expr))
                .collect(),
            Expr::Binary(binary) => vec![&binary.lhs, &binary.rhs],
            Expr::Unary(unary) => vec![&unary.expr],
            Expr::Paren(inner) => vec![inner],
        }
    }

    /// Whether any range, subquery step or offset still depends on `step()` or `range()`.
    pub fn has_query_dependent_durations(&self) -> bool {
        let own = match self {
            Expr::VectorSelector(selector) => selector.offset_expr.is_some(),
            Expr::MatrixSelector(matrix) => {
                matrix.range_expr.is_some() || matrix.vector.offset_expr.is_some()
            }
            Expr::Subquery(subquery) => {
                subquery.range_expr.is_some()
                    || subquery.step_expr.is_some()
                    || subquery.offset_expr.is_some()
            }
            _ => false,
        };
        own || self
            .children()
            .into_iter()
            .any(Expr::has_query_dependent_durations)
    }

    /// Replaces every duration that depends on `step()`/`range()` by its value for a query
    /// with the given step and range (both milliseconds; 0 for instant queries), as Prometheus
    /// does before evaluation. Ranges and steps must come out greater than zero.
    pub fn resolve_durations(
        &mut self,
        step_ms: i64,
        range_ms: i64,
    ) -> Result<(), crate::DurationError> {
        let context = crate::duration::DurationContext { step_ms, range_ms };
        match self {
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
            Expr::VectorSelector(selector) => resolve_selector(selector, context),
            Expr::MatrixSelector(matrix) => {
                resolve_selector(&mut matrix.vector, context)?;
                if let Some(expr) = matrix.range_expr.take() {
                    matrix.range_ms = expr.to_ms(context, false)?;
                }
                Ok(())
            }
            Expr::Subquery(subquery) => {
                if let Some(expr) = subquery.range_expr.take() {
                    subquery.range_ms = expr.to_ms(context, false)?;
                }
                if let Some(expr) = subquery.step_expr.take() {
                    subquery.step_ms = Some(expr.to_ms(context, false)?);
                }
                if let Some(expr) = subquery.offset_expr.take() {
                    subquery.offset = Some(expr.to_ms(context, true)?).filter(|ms| *ms != 0);
                }
                subquery.expr.resolve_durations(step_ms, range_ms)
            }
            Expr::Call(call) => call
                .args
                .iter_mut()
                .try_for_each(|arg| arg.resolve_durations(step_ms, range_ms)),
            Expr::Aggregate(aggregate) => {
                if let Some(param) = &mut aggregate.param {
                    param.resolve_durations(step_ms, range_ms)?;
                }
                aggregate.expr.resolve_durations(step_ms, range_ms)
            }
            Expr::Binary(binary) => {
                binary.lhs.resolve_durations(step_ms, range_ms)?;
                binary.rhs.resolve_durations(step_ms, range_ms)
            }
            Expr::Unary(unary) => unary.expr.resolve_durations(step_ms, range_ms),
            Expr::Paren(inner) => inner.resolve_durations(step_ms, range_ms),
        }
    }
}

fn resolve_selector(
    selector: &mut VectorSelector,
    context: crate::duration::DurationContext,
) -> Result<(), crate::DurationError> {
    if let Some(expr) = selector.offset_expr.take() {
        selector.offset = Some(expr.to_ms(context, true)?).filter(|ms| *ms != 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_literals_compare_equal() {
        assert_eq!(Expr::NumberLiteral(f64::NAN), Expr::NumberLiteral(f64::NAN));
        assert_ne!(Expr::NumberLiteral(1.0), Expr::NumberLiteral(2.0));
        assert_ne!(
            Expr::NumberLiteral(1.0),
            Expr::StringLiteral("1".to_owned())
        );
    }

    #[test]
    fn precedence_table() {
        assert!(BinaryOp::Pow.precedence() > BinaryOp::Mul.precedence());
        assert!(BinaryOp::Atan2.precedence() == BinaryOp::Mul.precedence());
        assert!(BinaryOp::Add.precedence() > BinaryOp::Eql.precedence());
        assert!(BinaryOp::Eql.precedence() > BinaryOp::And.precedence());
        assert!(BinaryOp::Unless.precedence() > BinaryOp::Or.precedence());
        assert!(BinaryOp::Pow.is_right_associative());
        assert!(!BinaryOp::Sub.is_right_associative());
    }

    #[test]
    fn value_types() {
        let scalar = Expr::NumberLiteral(1.0);
        let binary = Expr::Binary(Binary {
            op: BinaryOp::Add,
            lhs: Box::new(scalar.clone()),
            rhs: Box::new(scalar.clone()),
            return_bool: false,
            matching: None,
        });
        assert_eq!(binary.value_type(), ValueType::Scalar);
        assert_eq!(
            Expr::Paren(Box::new(Expr::StringLiteral("x".into()))).value_type(),
            ValueType::String
        );
        assert_eq!(ValueType::Matrix.documented_name(), "range vector");
        assert_eq!(ValueType::Matrix.name(), "matrix");
    }
}
