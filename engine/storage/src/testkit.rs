//! The conformance suite every [`Storage`] backend must pass.
//!
//! A backend's test file provides an async factory returning a fresh, empty [`Fixture`] and
//! expands [`storage_conformance_tests!`](crate::storage_conformance_tests) with it:
//!
//! ```ignore
//! async fn fixture() -> lookout_storage::testkit::Fixture { /* open an empty store */ }
//! lookout_storage::storage_conformance_tests!(fixture);
//! ```
//!
//! That generates one `#[test]` per case below, each on its own fresh store. Cases adapt to
//! [`Storage::capabilities`] where the trait allows different behaviour (out-of-order,
//! deletion), and assert exact results everywhere else.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lookout_model::{
    Labels, MatchKind, Matcher, Sample, TimestampMs, METRIC_NAME_LABEL, STALE_NAN,
};

use crate::{
    collect_series, DeleteRequest, LabelRequest, OutOfOrderPolicy, RejectReason, SelectRequest,
    Series, Storage, StorageError, WriteBatch,
};

/// A store under test plus whatever must live as long as it (a temporary directory, a server
/// handle).
pub struct Fixture {
    /// The store under test.
    pub storage: Arc<dyn Storage>,
    _guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("backend", &self.storage.capabilities().backend)
            .finish()
    }
}

impl Fixture {
    /// Wraps a store and a guard dropped after it.
    pub fn new(storage: impl Storage, guard: impl Any + Send) -> Fixture {
        Fixture {
            storage: Arc::new(storage),
            _guard: Box::new(guard),
        }
    }
}

/// What a factory returns: a [`Fixture`], or `Option<Fixture>` for backends that need a peer
/// program and skip (the factory prints why) when it is missing.
pub trait IntoFixture {
    /// The fixture, or `None` to skip the case.
    fn into_fixture(self) -> Option<Fixture>;
}

impl IntoFixture for Fixture {
    fn into_fixture(self) -> Option<Fixture> {
        Some(self)
    }
}

impl IntoFixture for Option<Fixture> {
    fn into_fixture(self) -> Option<Fixture> {
        self
    }
}

/// Runs one case on a fresh multi-threaded runtime (used by the generated tests).
pub fn run<F, Fut, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: IntoFixture,
    C: FnOnce(Arc<dyn Storage>) -> CFut,
    CFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a test runtime starts");
    runtime.block_on(async move {
        let Some(fixture) = factory().await.into_fixture() else {
            return;
        };
        case(fixture.storage.clone()).await;
        drop(fixture);
    });
}

/// Generates one `#[test]` per conformance case for the given async factory.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($factory:path) => {
        $crate::storage_conformance_tests!(@cases $factory;
            round_trip_keeps_every_sample,
            time_range_bounds_are_inclusive,
            equality_matchers,
            regex_matchers_are_anchored,
            in_list_matchers,
            empty_value_matchers,
            label_names_and_values_filtered_by_matchers_and_time,
            label_queries_honour_limit,
            delete_removes_only_the_range,
            duplicate_timestamps,
            special_float_values_are_bit_exact,
            out_of_order_per_capabilities,
            invalid_labels_are_rejected_alone,
            many_series_stream_sorted_and_unique,
            inverted_time_range_is_a_bad_request
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::run($factory, $crate::testkit::$case);
            }
        )*
    };
}

/// A base timestamp a little in the past, on a whole minute, so stores that keep a retention
/// window relative to now accept the samples.
fn base_time() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    (now - 2 * 3_600_000) / 60_000 * 60_000
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).expect("valid test labels")
}

fn name_is(name: &str) -> Matcher {
    Matcher::equal(METRIC_NAME_LABEL, name)
}

fn matcher(kind: MatchKind, name: &str, value: &str) -> Matcher {
    Matcher::new(kind, name, value).expect("valid test matcher")
}

/// Samples every 15 s starting at `start`, values `first, first+1, ...`.
fn regular_samples(start: i64, count: usize, first: f64) -> Vec<Sample> {
    (0..count)
        .map(|index| Sample::new(start + 15_000 * index as i64, first + index as f64))
        .collect()
}

async fn write_all(storage: &dyn Storage, batch: WriteBatch) {
    let expected = batch.sample_count() as u64;
    let outcome = storage.write(batch).await.expect("write succeeds");
    assert_eq!(
        outcome.rejected_total(),
        0,
        "unexpected rejections: {:?}",
        outcome.messages
    );
    assert_eq!(outcome.accepted, expected);
}

async fn select(
    storage: &dyn Storage,
    matchers: Vec<Matcher>,
    mint: i64,
    maxt: i64,
) -> Vec<Series> {
    let stream = storage
        .select(SelectRequest::new(matchers, mint, maxt))
        .await
        .expect("select succeeds");
    collect_series(stream).await.expect("stream succeeds")
}

async fn select_all_time(storage: &dyn Storage, matchers: Vec<Matcher>) -> Vec<Series> {
    select(storage, matchers, i64::MIN, i64::MAX).await
}

fn label_sets(series: &[Series]) -> Vec<Labels> {
    series.iter().map(|s| s.labels.clone()).collect()
}

/// Writes `up{job, instance}` for a fixed set of series and returns their labels.
async fn write_fleet(storage: &dyn Storage, base: i64) -> Vec<Labels> {
    let fleet = vec![
        labels(&[("__name__", "up"), ("job", "api"), ("instance", "a:1")]),
        labels(&[("__name__", "up"), ("job", "api"), ("instance", "b:1")]),
        labels(&[("__name__", "up"), ("job", "db"), ("instance", "a:2")]),
        labels(&[
            ("__name__", "up"),
            ("job", "db"),
            ("instance", "c:3"),
            ("zone", "eu"),
        ]),
        labels(&[
            ("__name__", "up"),
            ("job", "apiserver"),
            ("instance", "d:4"),
        ]),
        labels(&[
            ("__name__", "http.requests"),
            ("job", "api"),
            ("path", "/x"),
        ]),
    ];
    let mut batch = WriteBatch::new();
    for (index, set) in fleet.iter().enumerate() {
        batch.push(set.clone(), regular_samples(base, 4, index as f64));
    }
    write_all(storage, batch).await;
    let mut sorted = fleet;
    sorted.sort();
    sorted
}

fn pick(fleet: &[Labels], predicate: impl Fn(&Labels) -> bool) -> Vec<Labels> {
    fleet.iter().filter(|set| predicate(set)).cloned().collect()
}

/// Every written sample comes back, in order, under the same labels.
pub async fn round_trip_keeps_every_sample(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let first = labels(&[("__name__", "rt"), ("k", "1")]);
    let second = labels(&[("__name__", "rt"), ("k", "2")]);
    let mut batch = WriteBatch::new();
    batch.push(first.clone(), regular_samples(base, 300, 0.0));
    batch.push(second.clone(), vec![Sample::new(base + 7, -1.5)]);
    write_all(storage, batch).await;
    // A second write continues the first series.
    let mut batch = WriteBatch::new();
    batch.push(
        first.clone(),
        regular_samples(base + 300 * 15_000, 10, 300.0),
    );
    write_all(storage, batch).await;

    let series = select_all_time(storage, vec![name_is("rt")]).await;
    assert_eq!(label_sets(&series), vec![first, second]);
    assert_eq!(series[0].samples, regular_samples(base, 310, 0.0));
    assert_eq!(series[1].samples, vec![Sample::new(base + 7, -1.5)]);
}

/// `[mint, maxt]` includes both ends; series without samples in range are not returned.
pub async fn time_range_bounds_are_inclusive(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let early = labels(&[("__name__", "tr"), ("k", "early")]);
    let late = labels(&[("__name__", "tr"), ("k", "late")]);
    let mut batch = WriteBatch::new();
    batch.push(early.clone(), regular_samples(base, 10, 0.0));
    batch.push(late.clone(), regular_samples(base + 3_600_000, 10, 0.0));
    write_all(storage, batch).await;

    let series = select(storage, vec![name_is("tr")], base + 15_000, base + 45_000).await;
    assert_eq!(label_sets(&series), vec![early.clone()]);
    assert_eq!(
        series[0].samples,
        vec![
            Sample::new(base + 15_000, 1.0),
            Sample::new(base + 30_000, 2.0),
            Sample::new(base + 45_000, 3.0),
        ]
    );
    let series = select(storage, vec![name_is("tr")], base + 3_600_000, i64::MAX).await;
    assert_eq!(label_sets(&series), vec![late]);
    let gap = select(
        storage,
        vec![name_is("tr")],
        base + 200_000,
        base + 3_599_999,
    )
    .await;
    assert!(gap.is_empty(), "no samples in the gap, got {gap:?}");
}

/// `=` and `!=`, alone and combined; all matchers must hold.
pub async fn equality_matchers(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let fleet = write_fleet(storage, base_time()).await;
    let got = select_all_time(storage, vec![name_is("up"), Matcher::equal("job", "api")]).await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.metric_name() == Some("up")
            && l.get("job") == Some("api"))
    );
    let got = select_all_time(
        storage,
        vec![name_is("up"), Matcher::not_equal("job", "api")],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.metric_name() == Some("up")
            && l.get("job") != Some("api"))
    );
    let got = select_all_time(storage, vec![Matcher::equal("job", "api")]).await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.get("job") == Some("api"))
    );
    let got = select_all_time(storage, vec![name_is("up"), Matcher::equal("job", "nope")]).await;
    assert!(got.is_empty());
    let got = select_all_time(storage, vec![name_is("http.requests")]).await;
    assert_eq!(got.len(), 1, "dotted metric names are ordinary values");
}

/// `=~` and `!~` are fully anchored; alternations, prefixes and classes all work.
pub async fn regex_matchers_are_anchored(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let fleet = write_fleet(storage, base_time()).await;
    let up = name_is("up");
    let got = select_all_time(
        storage,
        vec![up.clone(), matcher(MatchKind::Regex, "job", "api")],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.metric_name() == Some("up")
            && l.get("job") == Some("api")),
        "=~\"api\" must not match \"apiserver\""
    );
    let got = select_all_time(
        storage,
        vec![up.clone(), matcher(MatchKind::Regex, "job", "api.*")],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.metric_name() == Some("up")
            && l.get("job").is_some_and(|job| job.starts_with("api")))
    );
    let got = select_all_time(
        storage,
        vec![up.clone(), matcher(MatchKind::Regex, "job", "db|apiserver")],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| matches!(l.get("job"), Some("db" | "apiserver")))
    );
    let got = select_all_time(
        storage,
        vec![
            up.clone(),
            matcher(MatchKind::Regex, "instance", "[ab]:[0-9]"),
        ],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| {
            l.metric_name() == Some("up")
                && l.get("instance")
                    .is_some_and(|i| i.starts_with('a') || i.starts_with('b'))
        })
    );
    let got = select_all_time(
        storage,
        vec![up.clone(), matcher(MatchKind::NotRegex, "job", "api.*")],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.metric_name() == Some("up")
            && l.get("job") == Some("db"))
    );
    let got = select_all_time(
        storage,
        vec![matcher(MatchKind::Regex, METRIC_NAME_LABEL, "http\\..*")],
    )
    .await;
    assert_eq!(got.len(), 1);
    let got = select_all_time(
        storage,
        vec![up, matcher(MatchKind::Regex, "job", "(?i)API")],
    )
    .await;
    assert_eq!(got.len(), 2, "case-insensitive flag is honoured");
}

/// SOFALookout's `=~|` / `!~|`: exact membership in a `|`-separated list.
pub async fn in_list_matchers(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let fleet = write_fleet(storage, base_time()).await;
    let up = name_is("up");
    let got = select_all_time(
        storage,
        vec![
            up.clone(),
            matcher(MatchKind::InList, "instance", "a:1|c:3|zz"),
        ],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| matches!(l.get("instance"), Some("a:1" | "c:3")))
    );
    let got = select_all_time(
        storage,
        vec![up.clone(), matcher(MatchKind::InList, "job", "ap")],
    )
    .await;
    assert!(
        got.is_empty(),
        "membership is exact, not substring: {got:?}"
    );
    let got = select_all_time(
        storage,
        vec![up, matcher(MatchKind::NotInList, "job", "api|db")],
    )
    .await;
    assert_eq!(
        label_sets(&got),
        pick(&fleet, |l| l.get("job") == Some("apiserver"))
    );
}

/// An absent label equals the empty value, as in Prometheus.
pub async fn empty_value_matchers(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let fleet = write_fleet(storage, base_time()).await;
    let up = name_is("up");
    let is_up = |l: &Labels| l.metric_name() == Some("up");
    let cases: Vec<(Matcher, Vec<Labels>)> = vec![
        (
            Matcher::equal("zone", ""),
            pick(&fleet, |l| is_up(l) && l.get("zone").is_none()),
        ),
        (
            Matcher::not_equal("zone", ""),
            pick(&fleet, |l| is_up(l) && l.get("zone").is_some()),
        ),
        (
            matcher(MatchKind::Regex, "zone", ""),
            pick(&fleet, |l| is_up(l) && l.get("zone").is_none()),
        ),
        (matcher(MatchKind::Regex, "zone", ".*"), pick(&fleet, is_up)),
        (
            matcher(MatchKind::Regex, "zone", ".+"),
            pick(&fleet, |l| is_up(l) && l.get("zone").is_some()),
        ),
        (
            matcher(MatchKind::Regex, "zone", "eu|"),
            pick(&fleet, is_up),
        ),
        (
            matcher(MatchKind::NotRegex, "zone", ".+"),
            pick(&fleet, |l| is_up(l) && l.get("zone").is_none()),
        ),
        (Matcher::not_equal("nonexistent", "x"), pick(&fleet, is_up)),
        (Matcher::equal("nonexistent", "x"), vec![]),
        (
            matcher(MatchKind::Regex, "nonexistent", "x|"),
            pick(&fleet, is_up),
        ),
    ];
    for (extra, expected) in cases {
        let got = select_all_time(storage, vec![up.clone(), extra.clone()]).await;
        assert_eq!(label_sets(&got), expected, "matcher {extra}");
    }
}

/// Label names and values come only from matching series with samples in the range.
pub async fn label_names_and_values_filtered_by_matchers_and_time(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let mut batch = WriteBatch::new();
    batch.push(
        labels(&[("__name__", "a"), ("x", "1"), ("early", "yes")]),
        regular_samples(base, 2, 0.0),
    );
    batch.push(
        labels(&[("__name__", "b"), ("x", "2"), ("late", "yes")]),
        regular_samples(base + 3_600_000, 2, 0.0),
    );
    batch.push(
        labels(&[("__name__", "b"), ("x", "3")]),
        regular_samples(base + 3_600_000, 2, 0.0),
    );
    write_all(storage, batch).await;

    let names = storage.label_names(LabelRequest::all()).await.unwrap();
    assert_eq!(names, ["__name__", "early", "late", "x"]);
    let values = storage
        .label_values("x", LabelRequest::all())
        .await
        .unwrap();
    assert_eq!(values, ["1", "2", "3"]);
    let values = storage
        .label_values(METRIC_NAME_LABEL, LabelRequest::all())
        .await
        .unwrap();
    assert_eq!(values, ["a", "b"]);

    let only_b = LabelRequest::new(vec![name_is("b")], i64::MIN, i64::MAX);
    assert_eq!(
        storage.label_names(only_b.clone()).await.unwrap(),
        ["__name__", "late", "x"]
    );
    assert_eq!(storage.label_values("x", only_b).await.unwrap(), ["2", "3"]);

    let early_window = LabelRequest::new(vec![], base, base + 60_000);
    assert_eq!(
        storage.label_names(early_window.clone()).await.unwrap(),
        ["__name__", "early", "x"]
    );
    assert_eq!(
        storage.label_values("x", early_window).await.unwrap(),
        ["1"]
    );

    let regex = LabelRequest::new(
        vec![matcher(MatchKind::Regex, "x", "[23]")],
        i64::MIN,
        i64::MAX,
    );
    assert_eq!(
        storage
            .label_values(METRIC_NAME_LABEL, regex)
            .await
            .unwrap(),
        ["b"]
    );
    let missing = storage
        .label_values("nope", LabelRequest::all())
        .await
        .unwrap();
    assert!(missing.is_empty());
}

/// `limit` returns the first names or values in sort order.
pub async fn label_queries_honour_limit(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let mut batch = WriteBatch::new();
    for index in 0..5 {
        batch.push(
            labels(&[("__name__", "lim"), ("v", &format!("val{index}"))]),
            regular_samples(base, 1, 0.0),
        );
    }
    write_all(storage, batch).await;
    let mut request = LabelRequest::all();
    request.limit = Some(2);
    assert_eq!(
        storage.label_values("v", request.clone()).await.unwrap(),
        ["val0", "val1"]
    );
    assert_eq!(
        storage.label_names(request).await.unwrap(),
        ["__name__", "v"]
    );
}

/// Deleting a range removes exactly those samples; series fully deleted disappear.
pub async fn delete_removes_only_the_range(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let keep = labels(&[("__name__", "del"), ("k", "keep")]);
    let partial = labels(&[("__name__", "del"), ("k", "partial")]);
    let gone = labels(&[("__name__", "del"), ("k", "gone")]);
    let mut batch = WriteBatch::new();
    batch.push(keep.clone(), regular_samples(base, 10, 0.0));
    batch.push(partial.clone(), regular_samples(base, 10, 0.0));
    batch.push(gone.clone(), regular_samples(base, 10, 0.0));
    write_all(storage, batch).await;

    let request = DeleteRequest::new(
        vec![matcher(MatchKind::Regex, "k", "partial")],
        base + 30_000,
        base + 60_000,
    );
    if !storage.capabilities().delete {
        let error = storage.delete(request).await.unwrap_err();
        assert!(matches!(error, StorageError::Unsupported { .. }), "{error}");
        return;
    }
    storage.delete(request).await.expect("delete succeeds");
    storage
        .delete(DeleteRequest::new(
            vec![Matcher::equal("k", "gone")],
            i64::MIN,
            i64::MAX,
        ))
        .await
        .expect("delete succeeds");

    let series = select_all_time(storage, vec![name_is("del")]).await;
    assert_eq!(label_sets(&series), vec![keep, partial]);
    assert_eq!(series[0].samples, regular_samples(base, 10, 0.0));
    let expected: Vec<Sample> = regular_samples(base, 10, 0.0)
        .into_iter()
        .filter(|s| !(base + 30_000..=base + 60_000).contains(&s.timestamp.0))
        .collect();
    assert_eq!(series[1].samples, expected);
    let values = storage
        .label_values("k", LabelRequest::all())
        .await
        .unwrap();
    assert_eq!(
        values,
        ["keep", "partial"],
        "fully deleted series leave the label index"
    );

    // New samples after a deletion are stored again.
    let mut batch = WriteBatch::new();
    batch.push(gone.clone(), vec![Sample::new(base + 10 * 15_000, 1.0)]);
    write_all(storage, batch).await;
    let series = select_all_time(storage, vec![Matcher::equal("k", "gone")]).await;
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0].samples,
        vec![Sample::new(base + 10 * 15_000, 1.0)]
    );

    let error = storage
        .delete(DeleteRequest::new(vec![], 0, 1))
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::BadRequest { .. }), "{error}");
}

/// The same sample twice is accepted once; a different value at a stored timestamp is
/// rejected with a reason (or overwrites, where the backend says so).
pub async fn duplicate_timestamps(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let series = labels(&[("__name__", "dup")]);
    let mut batch = WriteBatch::new();
    batch.push(
        series.clone(),
        vec![Sample::new(base, 1.0), Sample::new(base + 1000, 2.0)],
    );
    write_all(storage, batch).await;

    let mut batch = WriteBatch::new();
    batch.push(series.clone(), vec![Sample::new(base + 1000, 2.0)]);
    let outcome = storage.write(batch).await.unwrap();
    assert_eq!(
        outcome.rejected_total(),
        0,
        "an identical sample is not an error"
    );

    let mut batch = WriteBatch::new();
    batch.push(
        series.clone(),
        vec![Sample::new(base + 1000, 3.0), Sample::new(base + 2000, 4.0)],
    );
    let outcome = storage.write(batch).await.unwrap();
    let stored = select_all_time(storage, vec![name_is("dup")]).await;
    if storage.capabilities().rejects_conflicting_duplicates {
        assert_eq!(
            outcome.rejected_for(RejectReason::DuplicateSampleForTimestamp),
            1
        );
        assert_eq!(outcome.accepted, 1);
        assert!(outcome.messages[0].contains("duplicate_sample_for_timestamp"));
        assert_eq!(
            stored[0].samples,
            vec![
                Sample::new(base, 1.0),
                Sample::new(base + 1000, 2.0),
                Sample::new(base + 2000, 4.0)
            ]
        );
    } else {
        assert_eq!(outcome.accepted, 2);
        assert_eq!(stored[0].samples[1], Sample::new(base + 1000, 3.0));
    }
    assert_eq!(stored.len(), 1);
}

/// NaN payloads, ±Inf, -0.0 and the stale marker survive bit-exactly.
pub async fn special_float_values_are_bit_exact(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let values = [
        f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001),
        f64::from_bits(0xfff0_0000_0000_0001),
        STALE_NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        5e-324,
        1.0,
    ];
    let samples: Vec<Sample> = values
        .iter()
        .enumerate()
        .map(|(index, value)| Sample::new(base + index as i64 * 1000, *value))
        .collect();
    let mut batch = WriteBatch::new();
    batch.push(labels(&[("__name__", "special")]), samples.clone());
    write_all(storage, batch).await;
    let got = select_all_time(storage, vec![name_is("special")]).await;
    assert_eq!(got.len(), 1);
    let bits = |samples: &[Sample]| -> Vec<(TimestampMs, u64)> {
        samples
            .iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect()
    };
    assert_eq!(bits(&got[0].samples), bits(&samples));
}

/// Older samples are rejected or accepted exactly as the capabilities say.
pub async fn out_of_order_per_capabilities(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let series = labels(&[("__name__", "ooo")]);
    let mut batch = WriteBatch::new();
    batch.push(series.clone(), vec![Sample::new(base + 600_000, 10.0)]);
    write_all(storage, batch).await;

    let mut batch = WriteBatch::new();
    batch.push(
        series.clone(),
        vec![
            Sample::new(base + 300_000, 5.0),
            Sample::new(base + 900_000, 15.0),
        ],
    );
    let outcome = storage.write(batch).await.unwrap();
    let stored = select_all_time(storage, vec![name_is("ooo")]).await;
    let times: Vec<i64> = stored[0].samples.iter().map(|s| s.timestamp.0).collect();
    match storage.capabilities().out_of_order {
        OutOfOrderPolicy::Rejected => {
            assert_eq!(outcome.accepted, 1);
            assert_eq!(outcome.rejected_for(RejectReason::OutOfOrder), 1);
            assert_eq!(times, [base + 600_000, base + 900_000]);
        }
        OutOfOrderPolicy::Window { millis } => {
            assert!(millis >= 0);
            let in_window = 900_000 - 300_000 <= millis;
            if in_window {
                assert_eq!(outcome.accepted, 2);
                assert_eq!(times, [base + 300_000, base + 600_000, base + 900_000]);
            } else {
                assert_eq!(outcome.rejected_for(RejectReason::OutOfWindow), 1);
                assert_eq!(times, [base + 600_000, base + 900_000]);
            }
        }
        OutOfOrderPolicy::Unlimited => {
            assert_eq!(outcome.accepted, 2);
            assert_eq!(times, [base + 300_000, base + 600_000, base + 900_000]);
        }
    }
}

/// A series with invalid labels is rejected and counted; the rest of the batch is stored.
pub async fn invalid_labels_are_rejected_alone(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let good = labels(&[("__name__", "inv"), ("k", "good")]);
    let bad = labels(&[("__name__", "inv"), ("", "empty name")]);
    let huge = labels(&[("__name__", "inv"), ("k", &"x".repeat(1 << 20))]);
    let mut batch = WriteBatch::new();
    batch.push(bad, regular_samples(base, 3, 0.0));
    batch.push(good.clone(), regular_samples(base, 2, 0.0));
    batch.push(huge, regular_samples(base, 1, 0.0));
    let outcome = storage.write(batch).await.unwrap();
    assert_eq!(outcome.accepted, 2);
    assert_eq!(outcome.rejected_for(RejectReason::InvalidLabels), 4);
    assert!(!outcome.messages.is_empty());
    let stored = select_all_time(storage, vec![name_is("inv")]).await;
    assert_eq!(label_sets(&stored), vec![good]);
}

/// Thousands of series come back sorted, each once, across however many batches.
pub async fn many_series_stream_sorted_and_unique(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let base = base_time();
    let count = 2_500;
    let mut batch = WriteBatch::new();
    for index in 0..count {
        batch.push(
            labels(&[
                ("__name__", "many"),
                ("id", &format!("{index}")),
                ("mod", &format!("{}", index % 7)),
            ]),
            regular_samples(base, 3, index as f64),
        );
    }
    write_all(storage, batch).await;
    let got = select_all_time(storage, vec![name_is("many")]).await;
    assert_eq!(got.len(), count);
    assert!(
        got.windows(2).all(|pair| pair[0].labels < pair[1].labels),
        "sorted and unique"
    );
    for series in &got {
        let id: f64 = series.labels.get("id").unwrap().parse().unwrap();
        assert_eq!(series.samples, regular_samples(base, 3, id));
    }
    let got = select_all_time(storage, vec![name_is("many"), Matcher::equal("mod", "3")]).await;
    assert_eq!(got.len(), (0..count).filter(|i| i % 7 == 3).count());
}

/// `mint > maxt` is a bad request for every read.
pub async fn inverted_time_range_is_a_bad_request(storage: Arc<dyn Storage>) {
    let storage = &*storage;
    let result = storage
        .select(SelectRequest::new(vec![name_is("x")], 10, 5))
        .await;
    assert!(matches!(result, Err(StorageError::BadRequest { .. })));
    let result = storage.label_names(LabelRequest::new(vec![], 10, 5)).await;
    assert!(matches!(result, Err(StorageError::BadRequest { .. })));
}
