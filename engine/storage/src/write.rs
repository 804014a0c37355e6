//! Write batches and their outcomes.

use std::collections::BTreeMap;
use std::fmt;

use lookout_model::{Labels, Sample, SeriesIdentity};

/// Samples of one series in a write.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series identity.
    pub labels: Labels,
    /// Samples in the order they should be appended (normally increasing time).
    pub samples: Vec<Sample>,
}

/// Samples of a series named only by its [`SeriesIdentity`]: a decoder that has seen the
/// series' exact bytes before sends this instead of building its labels again.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownSeriesSamples {
    /// The identity of the series' labels.
    pub identity: SeriesIdentity,
    /// Samples in the order they should be appended.
    pub samples: Vec<Sample>,
}

/// A batch of samples for many series; the unit of every write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// The series, each with its samples. A series may appear more than once.
    pub series: Vec<SeriesSamples>,
    /// Series named by identity only. Only a backend whose
    /// [`Capabilities::appends_known_series`](crate::Capabilities::appends_known_series) is
    /// set is sent any; it stores those it holds and lists the others in
    /// [`WriteOutcome::unresolved`], for the caller to send again with their labels. Any other
    /// backend refuses a batch that has some.
    pub known: Vec<KnownSeriesSamples>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds samples for one series.
    pub fn push(&mut self, labels: Labels, samples: Vec<Sample>) -> &mut Self {
        self.series.push(SeriesSamples { labels, samples });
        self
    }

    /// Total number of samples.
    pub fn sample_count(&self) -> usize {
        let known: usize = self.known.iter().map(|series| series.samples.len()).sum();
        self.series
            .iter()
            .map(|series| series.samples.len())
            .sum::<usize>()
            + known
    }

    /// The error a backend without
    /// [`Capabilities::appends_known_series`](crate::Capabilities::appends_known_series)
    /// returns for a batch with [`WriteBatch::known`] entries, `None` when it has none.
    pub fn refuse_known(&self, backend: &'static str) -> Option<crate::StorageError> {
        (!self.known.is_empty()).then_some(crate::StorageError::Unsupported {
            operation: "writing series by identity",
            backend,
        })
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.sample_count() == 0
    }
}

/// Why a sample was not stored. The names are stable: they appear in self-metrics and
/// responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The series' labels failed validation (charset, sizes, duplicates).
    InvalidLabels,
    /// Another sample with a different value exists at the same timestamp.
    DuplicateSampleForTimestamp,
    /// Older than the newest sample of the series, and the backend accepts no out-of-order.
    OutOfOrder,
    /// Older than the out-of-order window allows.
    OutOfWindow,
    /// Outside the time range the backend keeps (e.g. beyond retention).
    OutOfBounds,
    /// A per-tenant or global series limit refused a new series.
    SeriesLimit,
    /// A remote backend refused the sample (e.g. an Elasticsearch mapping conflict); the
    /// message names the index and the backend's reason.
    BackendRejected,
}

impl RejectReason {
    /// Every reason, for metrics that are exported with zero counts.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::InvalidLabels,
        RejectReason::DuplicateSampleForTimestamp,
        RejectReason::OutOfOrder,
        RejectReason::OutOfWindow,
        RejectReason::OutOfBounds,
        RejectReason::SeriesLimit,
        RejectReason::BackendRejected,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidLabels => "invalid_labels",
            RejectReason::DuplicateSampleForTimestamp => "duplicate_sample_for_timestamp",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::OutOfWindow => "out_of_window",
            RejectReason::OutOfBounds => "out_of_bounds",
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::BackendRejected => "backend_rejected",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many messages about individual rejections an outcome keeps.
const MAX_REJECTION_MESSAGES: usize = 8;

/// What happened to each sample of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Samples stored (including exact duplicates of stored samples, which are no-ops).
    pub accepted: u64,
    /// Samples not stored, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// The first few rejections in words, naming series and timestamp, for responses and logs.
    pub messages: Vec<String>,
    /// Positions in [`WriteBatch::known`] of the series the backend does not hold (new, or
    /// dropped since): none of their samples were stored or counted; the caller sends them
    /// again with their labels.
    pub unresolved: Vec<usize>,
}

impl WriteOutcome {
    /// Counts `count` rejected samples and keeps `message` if there is room.
    pub fn reject(&mut self, reason: RejectReason, count: u64, message: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        self.count_rejected(reason, count);
        self.add_message(reason, message);
    }

    /// Counts `count` rejected samples without a message; see [`WriteOutcome::add_message`].
    pub fn count_rejected(&mut self, reason: RejectReason, count: u64) {
        if count > 0 {
            *self.rejected.entry(reason).or_default() += count;
        }
    }

    /// Keeps a message about a rejection for `reason` if there is room.
    pub fn add_message(&mut self, reason: RejectReason, message: impl FnOnce() -> String) {
        if self.messages.len() < MAX_REJECTION_MESSAGES {
            self.messages.push(format!("{reason}: {}", message()));
        }
    }

    /// How many more messages the outcome keeps.
    pub fn message_room(&self) -> usize {
        MAX_REJECTION_MESSAGES.saturating_sub(self.messages.len())
    }

    /// Samples rejected for `reason`.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// All rejected samples.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Adds another outcome's counts to this one.
    pub fn merge(&mut self, other: WriteOutcome) {
        self.accepted += other.accepted;
        for (reason, count) in other.rejected {
            *self.rejected.entry(reason).or_default() += count;
        }
        let room = MAX_REJECTION_MESSAGES.saturating_sub(self.messages.len());
        self.messages.extend(other.messages.into_iter().take(room));
        self.unresolved.extend(other.unresolved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_and_caps_messages() {
        let mut outcome = WriteOutcome::default();
        for index in 0..20 {
            outcome.reject(RejectReason::OutOfOrder, 2, || format!("sample {index}"));
        }
        outcome.reject(RejectReason::InvalidLabels, 0, || unreachable!());
        assert_eq!(outcome.rejected_for(RejectReason::OutOfOrder), 40);
        assert_eq!(outcome.rejected_for(RejectReason::InvalidLabels), 0);
        assert_eq!(outcome.messages.len(), MAX_REJECTION_MESSAGES);
        assert_eq!(outcome.messages[0], "out_of_order: sample 0");

        let mut total = WriteOutcome {
            accepted: 5,
            ..WriteOutcome::default()
        };
        total.merge(outcome);
        assert_eq!(total.accepted, 5);
        assert_eq!(total.rejected_total(), 40);
    }
}
