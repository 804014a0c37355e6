//! What a query returns: the Prometheus result types, annotations and statistics.

use lookout_model::Labels;

/// One point of a range-query or range-vector result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Milliseconds since the epoch.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation time in milliseconds.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// One series of a matrix: a range query's result or an instant query of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Points in time order.
    pub points: Vec<Point>,
}

/// The value of a query, shaped as the Prometheus API's `resultType`s.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// `"scalar"`: one number at the evaluation time.
    Scalar {
        /// Evaluation time in milliseconds.
        t: i64,
        /// The number.
        v: f64,
    },
    /// `"string"`: a string literal at the evaluation time.
    String {
        /// Evaluation time in milliseconds.
        t: i64,
        /// The string.
        v: String,
    },
    /// `"vector"`: an instant vector (instant queries).
    Vector(Vec<InstantSample>),
    /// `"matrix"`: series with points (range queries, and instant queries of range vectors),
    /// sorted by labels.
    Matrix(Vec<RangeSeries>),
}

impl QueryValue {
    /// The Prometheus API `resultType`.
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryValue::Scalar { .. } => "scalar",
            QueryValue::String { .. } => "string",
            QueryValue::Vector(_) => "vector",
            QueryValue::Matrix(_) => "matrix",
        }
    }
}

/// Counters of one query, reported with `stats=all`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Samples read from storage.
    pub samples_loaded: u64,
    /// The most samples (loaded plus computed points) held at once.
    pub peak_samples: u64,
    /// Series read from storage.
    pub series_loaded: u64,
    /// Nanoseconds spent parsing and planning.
    pub prepare_nanos: u64,
    /// Nanoseconds spent fetching from storage.
    pub fetch_nanos: u64,
    /// Nanoseconds spent evaluating.
    pub eval_nanos: u64,
}

/// A query's value with its annotations and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    /// The result.
    pub value: QueryValue,
    /// Warnings (`PromQL warning: ...`), e.g. a `rate` over a metric that is not a counter.
    pub warnings: Vec<String>,
    /// Informational annotations (`PromQL info: ...`).
    pub infos: Vec<String>,
    /// Counters.
    pub stats: QueryStats,
}
