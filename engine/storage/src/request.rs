//! Read and delete requests.

use lookout_model::{Matcher, TimestampMs};

use crate::{StorageError, StorageResult};

/// Hints a backend may use to do less work; a backend that ignores them is still correct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// Evaluation step of a range query, in milliseconds.
    pub step_ms: Option<i64>,
    /// Range of the enclosing range-vector selector (`[5m]`), in milliseconds.
    pub range_ms: Option<i64>,
    /// The function the samples feed (`rate`, `sum_over_time`, ...), for pushdown; with
    /// `latest_per_step`, the aggregation operator (`sum`, `avg`, ...) over the selector.
    pub function: Option<String>,
    /// Labels of an enclosing `by (...)` / `without (...)` aggregation (informational: the
    /// aggregation itself is still evaluated by the engine).
    pub grouping: Vec<String>,
    /// Whether `grouping` is a `by` list (else `without`).
    pub grouping_by: bool,
    /// Only series labels are needed, no samples (the `series` API).
    pub labels_only: bool,
    /// Stop after this many series.
    pub limit: Option<usize>,
    /// Only the latest sample of each series in every step interval is needed: the
    /// intervals are `(maxt - (k + 1) * step, maxt - k * step]` for `k = 0, 1, ...` when
    /// `step_ms` is set, else the whole `[mint, maxt]`. That is exactly what an instant-vector
    /// selector evaluated at `maxt`, `maxt - step`, ... reads (the latest sample within the
    /// lookback window), so a backend may return just those samples (one per series and
    /// interval at most) and the evaluation is unchanged. Ignoring the hint and returning
    /// every sample is also correct. Set by the planner only for backends that list the
    /// enclosing aggregation in [`crate::Capabilities::pushdown_aggregations`].
    pub latest_per_step: bool,
}

/// Which series and samples to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectRequest {
    /// Every matcher must match.
    pub matchers: Vec<Matcher>,
    /// Inclusive lower time bound.
    pub mint: TimestampMs,
    /// Inclusive upper time bound.
    pub maxt: TimestampMs,
    /// Optional hints.
    pub hints: SelectHints,
}

impl SelectRequest {
    /// Series matching `matchers` with samples in `[mint, maxt]`.
    pub fn new(matchers: Vec<Matcher>, mint: i64, maxt: i64) -> SelectRequest {
        SelectRequest {
            matchers,
            mint: TimestampMs(mint),
            maxt: TimestampMs(maxt),
            hints: SelectHints::default(),
        }
    }

    /// Checks the time range; backends call this first.
    pub fn validate(&self) -> StorageResult<()> {
        validate_range(self.mint, self.maxt)
    }
}

/// Which series label names and values are collected from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequest {
    /// Every matcher must match; empty means all series.
    pub matchers: Vec<Matcher>,
    /// Inclusive lower time bound.
    pub mint: TimestampMs,
    /// Inclusive upper time bound.
    pub maxt: TimestampMs,
    /// Return at most this many names or values (the first ones in sort order).
    pub limit: Option<usize>,
}

impl LabelRequest {
    /// All series over all time.
    pub fn all() -> LabelRequest {
        LabelRequest {
            matchers: Vec::new(),
            mint: TimestampMs::MIN,
            maxt: TimestampMs::MAX,
            limit: None,
        }
    }

    /// Series matching `matchers` with samples in `[mint, maxt]`.
    pub fn new(matchers: Vec<Matcher>, mint: i64, maxt: i64) -> LabelRequest {
        LabelRequest {
            matchers,
            mint: TimestampMs(mint),
            maxt: TimestampMs(maxt),
            limit: None,
        }
    }

    /// Checks the time range; backends call this first.
    pub fn validate(&self) -> StorageResult<()> {
        validate_range(self.mint, self.maxt)
    }
}

/// Which samples to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// Every matcher must match. At least one is required.
    pub matchers: Vec<Matcher>,
    /// Inclusive lower time bound.
    pub mint: TimestampMs,
    /// Inclusive upper time bound.
    pub maxt: TimestampMs,
}

impl DeleteRequest {
    /// Samples in `[mint, maxt]` of the series matching `matchers`.
    pub fn new(matchers: Vec<Matcher>, mint: i64, maxt: i64) -> DeleteRequest {
        DeleteRequest {
            matchers,
            mint: TimestampMs(mint),
            maxt: TimestampMs(maxt),
        }
    }

    /// Checks the time range and that some matcher is given (deleting everything by accident
    /// must not be one request away).
    pub fn validate(&self) -> StorageResult<()> {
        if self.matchers.is_empty() {
            return Err(StorageError::BadRequest {
                reason: "delete needs at least one matcher".into(),
            });
        }
        validate_range(self.mint, self.maxt)
    }
}

fn validate_range(mint: TimestampMs, maxt: TimestampMs) -> StorageResult<()> {
    if mint > maxt {
        return Err(StorageError::BadRequest {
            reason: format!("start time {mint} is after end time {maxt}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverted_ranges_and_matcherless_deletes_are_rejected() {
        assert!(SelectRequest::new(vec![], 10, 5).validate().is_err());
        assert!(SelectRequest::new(vec![], 5, 5).validate().is_ok());
        assert!(DeleteRequest::new(vec![], 0, 1).validate().is_err());
        assert!(DeleteRequest::new(vec![Matcher::equal("a", "b")], 0, 1)
            .validate()
            .is_ok());
        assert!(LabelRequest::all().validate().is_ok());
    }
}
