//! The PromQL test-script format of Prometheus' `promqltest` (described in
//! `../shared/conformance/promql/README.md`): a parser for `.test` files, a runner that loads
//! their data into a real in-memory [`lookout_tsdb::Tsdb`] and evaluates their queries with
//! [`lookout_promql::Engine`], and the rules that judge a result against an expectation.

mod at_modifier;
mod judge;
mod parse;
mod run;
mod series;
mod values;

use lookout_model::{Labels, Sample};

pub use parse::parse_script;
pub use run::{Outcome, RunOptions, Runner, ScriptReport};

/// A parsed test file: its commands in file order.
#[derive(Debug)]
pub struct Script {
    /// The file name, e.g. `functions.test`.
    pub file: String,
    /// The commands, in file order.
    pub commands: Vec<Command>,
}

impl Script {
    /// The `eval` cases of the file, in file order.
    pub fn cases(&self) -> impl Iterator<Item = &EvalCase> {
        self.commands.iter().filter_map(|command| match command {
            Command::Eval(case) => Some(case.as_ref()),
            _ => None,
        })
    }
}

/// One command of a script.
#[derive(Debug)]
pub enum Command {
    /// `load <step>` or `load_with_nhcb <step>` and its series.
    Load(Load),
    /// `clear`: drop all data.
    Clear,
    /// `eval ...`: one case.
    Eval(Box<EvalCase>),
    /// A command that could not be parsed at all; reported as a runner error.
    Invalid {
        /// 1-based line of the command.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A `load` block.
#[derive(Debug)]
pub struct Load {
    /// 1-based line of the `load` command.
    pub line: usize,
    /// `load_with_nhcb`: classic histograms should also become native ones (not supported:
    /// only the lines as written are loaded).
    pub nhcb: bool,
    /// The series to write, each label set once.
    pub series: Vec<LoadSeries>,
    /// Series lines that hold native histograms and therefore were not loaded.
    pub histogram_series: usize,
    /// Series lines that came with start timestamps (`@st`), which storage does not keep.
    pub start_timestamp_series: usize,
    /// Lines of the block that could not be parsed: `(line, message)`.
    pub errors: Vec<(usize, String)>,
}

/// The float samples of one loaded series.
#[derive(Debug)]
pub struct LoadSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Samples in time order; stale markers included.
    pub samples: Vec<Sample>,
}

/// When and how a case's query is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    /// `eval instant at <t>`.
    Instant {
        /// Evaluation time in ms.
        at_ms: i64,
    },
    /// `eval range from <start> to <end> step <step>`.
    Range(RangeSpec),
}

/// The time grid of a range query or of an expected range vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSpec {
    /// First step, in ms.
    pub start_ms: i64,
    /// Last step (inclusive), in ms.
    pub end_ms: i64,
    /// Step width, in ms.
    pub step_ms: i64,
}

/// One `eval` command: a query with what its result must be.
#[derive(Debug)]
pub struct EvalCase {
    /// 1-based line of the `eval` command (the case's identity in reports and the skip list).
    pub line: usize,
    /// The PromQL query, verbatim.
    pub query: String,
    /// Instant or range evaluation.
    pub kind: EvalKind,
    /// The expected result (ignored when a failure is expected).
    pub expected: Expected,
    /// `Some` when the query must fail.
    pub fail: Option<TextPattern>,
    /// `expect ordered`: vector results must come in the order of the expected series.
    pub ordered: bool,
    /// `expect warn/info/no_warn/no_info` lines (checked in strict mode only).
    pub annotations: Vec<AnnotationExpectation>,
    /// Problems in the case's body; a case with any fails without being run.
    pub errors: Vec<String>,
}

/// What a successful query must return.
#[derive(Debug)]
pub enum Expected {
    /// Series lines (none: an empty vector or matrix). For an instant query with
    /// `expect range vector`, `range` is the grid of the expected matrix.
    Series {
        /// The time grid of an instant query's expected range vector.
        range: Option<RangeSpec>,
        /// The expected series.
        series: Vec<ExpectedSeries>,
    },
    /// A plain number line: a scalar.
    Scalar(f64),
    /// `expect string`.
    String(String),
}

/// One expected series: labels and one slot per step (one slot for instant vectors).
#[derive(Debug)]
pub struct ExpectedSeries {
    /// 1-based line of the expectation.
    pub line: usize,
    /// The series' labels.
    pub labels: Labels,
    /// The expected values; `None` means no point at that step.
    pub values: Vec<values::Slot<values::Value>>,
}

/// How an error or annotation text must look.
#[derive(Debug, Clone)]
pub enum TextPattern {
    /// Any text.
    Any,
    /// Exactly this text.
    Exact(String),
    /// Text matching this (RE2-syntax) regular expression.
    Regex(String),
}

/// Which kind of annotation an expectation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    /// `PromQL warning: ...`.
    Warning,
    /// `PromQL info: ...`.
    Info,
}

/// An `expect warn`, `expect info`, `expect no_warn` or `expect no_info` line.
#[derive(Debug, Clone)]
pub enum AnnotationExpectation {
    /// At least one annotation of this kind, matching the pattern.
    Present(AnnotationKind, TextPattern),
    /// No annotation of this kind.
    Absent(AnnotationKind),
}
