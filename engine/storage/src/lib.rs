//! The [`Storage`] trait every Lookout backend implements, and its request and response types.
//!
//! The trait is the seam between the frontends (gateways, PromQL engine, HTTP API) and the
//! stores (the native TSDB, Elasticsearch). It is async because a backend may be remote, and
//! batch-oriented: writes carry many series, reads stream batches of whole series. Nothing here
//! names a type of a particular engine, so a remote backend implements it as easily as the
//! native one.
//!
//! With the `testkit` feature, [`testkit`] holds the conformance suite every backend must pass.
//!
//! Depends only on `lookout-model`.

mod error;
mod request;
mod write;

#[cfg(feature = "testkit")]
pub mod testkit;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;

pub use error::{StorageError, StorageResult};
pub use request::{DeleteRequest, LabelRequest, SelectHints, SelectRequest};
pub use write::{KnownSeriesSamples, RejectReason, SeriesSamples, WriteBatch, WriteOutcome};

use lookout_model::{Labels, Sample};

/// How a backend treats samples older than the newest one of their series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfOrderPolicy {
    /// Rejected with [`RejectReason::OutOfOrder`].
    Rejected,
    /// Accepted when at most this many milliseconds older than the newest sample of the
    /// backend; older ones are rejected with [`RejectReason::OutOfWindow`].
    Window {
        /// Width of the window in milliseconds.
        millis: i64,
    },
    /// Accepted regardless of age (remote stores that index by timestamp).
    Unlimited,
}

/// What a backend can do; the planner and the gateways ask before relying on a feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Short name of the backend for messages and metrics, e.g. `native`, `elasticsearch`.
    pub backend: &'static str,
    /// Out-of-order handling.
    pub out_of_order: OutOfOrderPolicy,
    /// Whether [`Storage::delete`] is supported.
    pub delete: bool,
    /// Whether a second sample at an existing timestamp with a different value is rejected
    /// with [`RejectReason::DuplicateSampleForTimestamp`] (as Prometheus does) rather than
    /// overwriting.
    pub rejects_conflicting_duplicates: bool,
    /// Range functions (`rate`, `sum_over_time`, ...) the backend can evaluate itself when
    /// [`SelectHints::function`] names them. Empty when nothing is pushed down.
    pub pushdown_functions: &'static [&'static str],
    /// Aggregation operators (`sum`, `min`, `max`, `count`, `avg`) over a plain instant
    /// selector for which the backend answers a select carrying
    /// [`SelectHints::latest_per_step`] with only the samples that hint asks for, computed by
    /// the backend itself. The planner sets the hint only for these operators. Empty when
    /// nothing is pushed down.
    pub pushdown_aggregations: &'static [&'static str],
    /// Whether [`Storage::write`] accepts [`WriteBatch::known`] entries (series named by
    /// [`lookout_model::SeriesIdentity`] only, for series the backend already holds).
    pub appends_known_series: bool,
}

/// One series with its samples, sorted by time, as a read returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series identity.
    pub labels: Labels,
    /// Samples in increasing time order, each timestamp once.
    pub samples: Vec<Sample>,
}

/// A stream of series batches. Across the whole stream series are sorted by labels and each
/// appears once.
pub type SeriesStream = BoxStream<'static, StorageResult<Vec<Series>>>;

/// A metrics store.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Writes a batch. Returns once every accepted sample is durable by the backend's own
    /// standard (in the WAL for the native engine). Individual bad samples or series are
    /// rejected and counted in the outcome; an `Err` means nothing can be said about the
    /// batch and the caller should retry later.
    async fn write(&self, batch: WriteBatch) -> StorageResult<WriteOutcome>;

    /// Streams the series matching every matcher that have samples in `[mint, maxt]`, with
    /// only those samples.
    async fn select(&self, request: SelectRequest) -> StorageResult<SeriesStream>;

    /// Sorted label names of the series matching the request's matchers (all series when
    /// there are none) that have samples in the time range.
    async fn label_names(&self, request: LabelRequest) -> StorageResult<Vec<String>>;

    /// Sorted values of label `name` over the same series as [`Storage::label_names`].
    async fn label_values(&self, name: &str, request: LabelRequest) -> StorageResult<Vec<String>>;

    /// Deletes the samples in `[mint, maxt]` of every series matching all matchers. Space may
    /// be reclaimed later; reads stop returning the samples at once.
    async fn delete(&self, request: DeleteRequest) -> StorageResult<()>;
}

/// Drains a [`SeriesStream`] into one vector.
pub async fn collect_series(stream: SeriesStream) -> StorageResult<Vec<Series>> {
    let batches: Vec<Vec<Series>> = stream.try_collect().await?;
    Ok(batches.into_iter().flatten().collect())
}

/// The cores a read or a query evaluation may spread its work over.
///
/// Asked of the system once: std's answer reads the cgroup's CPU quota from files on every
/// call, which cost a query with many batches an open, a read and a close per batch.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `first` on the calling thread and `second` beside it on another core (on the calling
/// thread after `first` when there is one core), and returns both answers. A panic in either
/// reaches the caller.
pub fn join<A, B: Send>(first: impl FnOnce() -> A, second: impl FnOnce() -> B + Send) -> (A, B) {
    if cores() < 2 {
        let a = first();
        return (a, second());
    }
    std::thread::scope(|scope| {
        let second = scope.spawn(second);
        let a = first();
        let b = second
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn join_returns_both_answers_and_passes_a_panic_on() {
        assert_eq!(super::join(|| 1 + 1, || "two"), (2, "two"));
        let panicked = std::panic::catch_unwind(|| super::join(|| 1, || panic!("second failed")));
        assert!(panicked.is_err());
    }
}
