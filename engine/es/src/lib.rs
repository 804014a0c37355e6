//! The Elasticsearch backend: Lookout's [`Storage`] trait over a real Elasticsearch (or
//! OpenSearch) cluster, reading and writing SOFALookout's index layout (spec §6 with the
//! §6.4 corrections), so years of SOFALookout data stay queryable and a cluster can take over
//! when one machine is not enough.
//!
//! Owns: the document format ([`document`]), matcher translation ([`query`], [`regexp`]), the
//! layout and its automated operations ([`layout`]), bulk writes checked item by item, and
//! reads streamed as series batches. Depends on `lookout-model` and `lookout-storage` only
//! (plus an HTTP client); it must not depend on the native engine or any frontend.
//!
//! # Reads
//!
//! A raw read pages through the matching documents sorted by metric name and time with
//! `search_after` (see [`ReadPaging`]: over a point in time, with a tie-breaker unique per
//! document in each dialect; a sorted scroll is the fallback for an Elasticsearch without
//! point-in-time support) and groups them into series per metric name.
//!
//! # Aggregation pushdown
//!
//! [`Capabilities::pushdown_aggregations`] lists `sum`, `min`, `max`, `count` and `avg`. For
//! those the PromQL planner marks the input selector's read with
//! [`SelectHints::latest_per_step`](lookout_storage::SelectHints::latest_per_step): at each
//! evaluation time `t` an instant selector uses only the latest sample of each series in
//! `(t - lookback, t]`, and that sample is always the latest one of its step interval
//! `(t' - step, t']` (`t' <= t` an evaluation time). So the cluster computes, per series
//! (`terms` on the `series` key, paged by key), per step interval (`date_histogram` with
//! `fixed_interval` = step and an `offset` that makes the buckets end on the evaluation
//! times), the latest document (`top_hits` of size 1 sorted by time), and the engine
//! aggregates those across series exactly as it would the raw samples: results are
//! identical, the data moved shrinks from every sample to one per series and step. The sum
//! itself is not computed by the cluster: a bucket sum over overlapping lookback windows is
//! not PromQL's answer, and `*_over_time` pushdown (`sum`, `avg` in the cluster's summation
//! order rather than PromQL's compensated one) would not be bit-identical, so neither is done.
//!
//! Pushdown falls back to a raw read, still exact, when a matching document has no `series`
//! key (documents written by SOFALookout itself), when one series would need more buckets
//! than [`EsOptions::max_buckets`], or when the server refuses the aggregation. Only
//! `terms`, `date_histogram` (`fixed_interval`, `offset`, `min_doc_count`), `top_hits` and a
//! `range` on a keyword are used: the subset Elasticsearch 8 and OpenSearch both support
//! (`composite` is missing from some servers). [`EsStorage::stats`] counts what was done.

mod client;
mod document;
mod layout;
mod query;
mod regexp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lookout_model::{Labels, Sample, METRIC_NAME_LABEL};
use lookout_storage::{
    Capabilities, DeleteRequest, LabelRequest, OutOfOrderPolicy, RejectReason, SelectRequest,
    Series, SeriesStream, Storage, StorageError, StorageResult, WriteBatch, WriteOutcome,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use client::{Body, Client};
pub use layout::parse_time_zone;
use layout::Names;

/// When a write becomes visible to searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshPolicy {
    /// The bulk request waits until its documents are searchable (`refresh=wait_for`).
    #[default]
    WaitFor,
    /// Every bulk request refreshes at once (`refresh=true`; for tests, costly on a cluster).
    Immediate,
    /// Searchable after the index's next periodic refresh.
    None,
}

impl RefreshPolicy {
    fn parameter(self) -> &'static str {
        match self {
            RefreshPolicy::WaitFor => "wait_for",
            RefreshPolicy::Immediate => "true",
            RefreshPolicy::None => "false",
        }
    }
}

/// How a raw read (one that needs the samples themselves) pages through the hits, sorted by
/// metric name and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPaging {
    /// `search_after` over a point in time: Elasticsearch's `_pit` API with its `_shard_doc`
    /// tie-breaker, or OpenSearch's `_search/point_in_time` API with `_index`, `_id` as
    /// tie-breakers (sorting by `_id` is allowed there; OpenSearch without point-in-time
    /// support pages without one, the sort being unique anyway). An Elasticsearch that cannot
    /// open a point in time (before 7.10) is read with a scroll instead.
    #[default]
    SearchAfter,
    /// A sorted scroll (the fallback; also selectable, e.g. to compare).
    Scroll,
}

/// The server's API dialect, detected from `GET /` on the first read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Elasticsearch,
    OpenSearch,
}

/// Counters of a store's reads, for tests and self-metrics. See [`EsStorage::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EsStats {
    /// Selects answered by aggregation pushdown (latest sample per series and step computed
    /// by the cluster).
    pub pushed_down_selects: u64,
    /// Selects that asked for pushdown but were read raw (documents without the `series`
    /// field in the selection, too many steps, or an aggregation the server refused).
    pub pushdown_fallbacks: u64,
    /// Aggregation requests sent by pushed-down selects.
    pub aggregation_requests: u64,
    /// Selects read sample by sample.
    pub raw_selects: u64,
    /// Pages of raw reads fetched with `search_after`.
    pub search_after_pages: u64,
    /// Pages of raw reads fetched with a scroll.
    pub scroll_pages: u64,
    /// Documents (hits) read by raw reads.
    pub raw_hits: u64,
}

#[derive(Debug, Default)]
struct Counters {
    pushed_down_selects: AtomicU64,
    pushdown_fallbacks: AtomicU64,
    aggregation_requests: AtomicU64,
    raw_selects: AtomicU64,
    search_after_pages: AtomicU64,
    scroll_pages: AtomicU64,
    raw_hits: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How to reach the cluster and run the layout. Build with [`EsOptions::new`] and the
/// setters; checked once by [`EsStorage::open`].
#[derive(Debug, Clone)]
pub struct EsOptions {
    url: String,
    credentials: Option<(String, String)>,
    index: String,
    auto_operations: bool,
    shards: u32,
    replicas: u32,
    refresh: RefreshPolicy,
    request_timeout: Duration,
    retry_budget: Duration,
    bulk_max_docs: usize,
    scroll_page: usize,
    read_paging: ReadPaging,
    max_select_samples: usize,
    max_buckets: usize,
    rollover_max_age: Option<String>,
    rollover_max_docs: Option<u64>,
    rollover_max_size: Option<String>,
    retention_days: Option<u32>,
    time_zone_offset_minutes: i64,
    maintenance_interval: Duration,
}

impl EsOptions {
    /// Defaults of SOFALookout (index `metrics`, rollover at 1 day or 100M documents, 7 days
    /// of retention in Asia/Shanghai time, operations every 10 minutes).
    pub fn new(url: impl Into<String>) -> EsOptions {
        EsOptions {
            url: url.into(),
            credentials: None,
            index: "metrics".into(),
            auto_operations: true,
            shards: 3,
            replicas: 0,
            refresh: RefreshPolicy::WaitFor,
            request_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(10),
            bulk_max_docs: 5_000,
            scroll_page: 5_000,
            read_paging: ReadPaging::SearchAfter,
            max_select_samples: 20_000_000,
            max_buckets: 10_000,
            rollover_max_age: Some("1d".into()),
            rollover_max_docs: Some(100_000_000),
            rollover_max_size: None,
            retention_days: Some(7),
            time_zone_offset_minutes: 480,
            maintenance_interval: Duration::from_secs(600),
        }
    }

    /// Basic-auth credentials.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Base index name (`metrics`): indices `<base>-YYYY.MM.DD-N`, alias `lookout-active-<base>`.
    pub fn index(mut self, base: impl Into<String>) -> Self {
        self.index = base.into();
        self
    }

    /// Whether to create the template, first index and alias at open (SOFALookout's
    /// `operation.auto`); when off they must exist.
    pub fn auto_operations(mut self, on: bool) -> Self {
        self.auto_operations = on;
        self
    }

    /// Primary shards and replicas of new indices.
    pub fn shards(mut self, shards: u32, replicas: u32) -> Self {
        self.shards = shards;
        self.replicas = replicas;
        self
    }

    /// When writes become searchable.
    pub fn refresh(mut self, policy: RefreshPolicy) -> Self {
        self.refresh = policy;
        self
    }

    /// Timeout of one HTTP request.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a write keeps retrying an unreachable cluster or retryable items before it
    /// fails as unavailable.
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Documents per `_bulk` request.
    pub fn bulk_max_docs(mut self, docs: usize) -> Self {
        self.bulk_max_docs = docs;
        self
    }

    /// Hits per page of a raw read (a `search_after` page or a scroll page).
    pub fn scroll_page(mut self, hits: usize) -> Self {
        self.scroll_page = hits;
        self
    }

    /// How raw reads page through the hits (default [`ReadPaging::SearchAfter`]).
    pub fn read_paging(mut self, paging: ReadPaging) -> Self {
        self.read_paging = paging;
        self
    }

    /// Most samples one select may read before it fails with a limit error.
    pub fn max_select_samples(mut self, samples: usize) -> Self {
        self.max_select_samples = samples;
        self
    }

    /// Most buckets one aggregation asks for: label names and values, and the series ×
    /// step buckets of one pushdown request (one series needing more makes pushdown fall
    /// back to a raw read). Keep it under the cluster's `search.max_buckets`.
    pub fn max_buckets(mut self, buckets: usize) -> Self {
        self.max_buckets = buckets;
        self
    }

    /// Rollover conditions; `None` disables a condition.
    pub fn rollover(
        mut self,
        max_age: Option<String>,
        max_docs: Option<u64>,
        max_size: Option<String>,
    ) -> Self {
        self.rollover_max_age = max_age;
        self.rollover_max_docs = max_docs;
        self.rollover_max_size = max_size;
        self
    }

    /// Days of indices kept (`None`: keep everything) and the time zone, in minutes east of
    /// UTC, whose calendar decides what "today" is.
    pub fn retention(mut self, days: Option<u32>, time_zone_offset_minutes: i64) -> Self {
        self.retention_days = days;
        self.time_zone_offset_minutes = time_zone_offset_minutes;
        self
    }

    /// Period of the rollover and retention task.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    fn validate(&self) -> StorageResult<()> {
        let bad = |reason: String| Err(StorageError::BadRequest { reason });
        if self.url.starts_with("https://") {
            return bad(format!(
                "Elasticsearch URL {:?}: https is not implemented yet (this build has no TLS \
                 client); use http://, for example through a TLS-terminating proxy on loopback",
                self.url
            ));
        }
        if !self.url.starts_with("http://") {
            return bad(format!(
                "Elasticsearch URL {:?} must start with http://",
                self.url
            ));
        }
        let index_ok = !self.index.is_empty()
            && self
                .index
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !index_ok {
            return bad(format!(
                "index base {:?} must be lowercase letters, digits, '_' or '-'",
                self.index
            ));
        }
        if self.bulk_max_docs == 0 || self.scroll_page == 0 || self.max_buckets == 0 {
            return bad("bulk, scroll page and bucket sizes must be positive".into());
        }
        if self.shards == 0 {
            return bad("an index needs at least one shard".into());
        }
        Ok(())
    }
}

/// A store in an Elasticsearch cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EsStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    names: Names,
    options: EsOptions,
    /// Whether bulk requests carry `require_alias=true` (so a lost alias is not replaced by an
    /// auto-created index). Turned off for servers that apply it to the alias' own index.
    require_alias: AtomicBool,
    /// Detected on the first read.
    dialect: OnceLock<Dialect>,
    counters: Counters,
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// The new write index, when the alias rolled over.
    pub rolled_over_to: Option<String>,
    /// Indices deleted by retention.
    pub deleted: Vec<String>,
}

/// One document waiting for the cluster's acknowledgement.
struct PendingDoc {
    lines: String,
    series: String,
    timestamp_ms: i64,
}

impl EsStorage {
    /// Connects and, with automated operations on, sets the layout up (template with
    /// mapping, first index, write alias). Fails when the cluster cannot be reached.
    pub async fn open(options: EsOptions) -> StorageResult<EsStorage> {
        options.validate()?;
        let client = Client::new(
            &options.url,
            options.request_timeout,
            options.credentials.clone(),
        )?;
        let names = Names::new(&options.index);
        let storage = EsStorage {
            inner: Arc::new(Inner {
                client,
                names,
                options,
                require_alias: AtomicBool::new(true),
                dialect: OnceLock::new(),
                counters: Counters::default(),
            }),
        };
        if storage.inner.options.auto_operations {
            storage.ensure_layout().await?;
        } else {
            storage
                .inner
                .client
                .json(Method::GET, "/", None, "checking the cluster")
                .await?;
        }
        Ok(storage)
    }

    /// What the reads did so far.
    pub fn stats(&self) -> EsStats {
        let c = &self.inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EsStats {
            pushed_down_selects: get(&c.pushed_down_selects),
            pushdown_fallbacks: get(&c.pushdown_fallbacks),
            aggregation_requests: get(&c.aggregation_requests),
            raw_selects: get(&c.raw_selects),
            search_after_pages: get(&c.search_after_pages),
            scroll_pages: get(&c.scroll_pages),
            raw_hits: get(&c.raw_hits),
        }
    }

    /// Appends the read counters ([`EsStorage::stats`]) in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let stats = self.stats();
        let _ = write!(
            out,
            "# HELP lookout_es_selects_total Selects answered by the Elasticsearch backend, by how: pushdown (latest sample per series and step aggregated by the cluster) or raw (every sample).\n\
             # TYPE lookout_es_selects_total counter\n\
             lookout_es_selects_total{{kind=\"pushdown\"}} {}\n\
             lookout_es_selects_total{{kind=\"raw\"}} {}\n\
             # HELP lookout_es_pushdown_fallbacks_total Selects that asked for pushdown but were read raw.\n\
             # TYPE lookout_es_pushdown_fallbacks_total counter\n\
             lookout_es_pushdown_fallbacks_total {}\n\
             # HELP lookout_es_aggregation_requests_total Aggregation requests sent by pushed-down selects.\n\
             # TYPE lookout_es_aggregation_requests_total counter\n\
             lookout_es_aggregation_requests_total {}\n\
             # HELP lookout_es_read_pages_total Pages of raw reads, by paging method.\n\
             # TYPE lookout_es_read_pages_total counter\n\
             lookout_es_read_pages_total{{paging=\"search_after\"}} {}\n\
             lookout_es_read_pages_total{{paging=\"scroll\"}} {}\n\
             # HELP lookout_es_read_documents_total Documents read by raw reads.\n\
             # TYPE lookout_es_read_documents_total counter\n\
             lookout_es_read_documents_total {}\n",
            stats.pushed_down_selects,
            stats.raw_selects,
            stats.pushdown_fallbacks,
            stats.aggregation_requests,
            stats.search_after_pages,
            stats.scroll_pages,
            stats.raw_hits,
        );
    }

    /// Name of the write alias.
    pub fn write_alias(&self) -> &str {
        &self.inner.names.write_alias
    }

    /// The pattern reads go through (covers every physical index).
    pub fn read_pattern(&self) -> &str {
        &self.inner.names.pattern
    }

    async fn ensure_layout(&self) -> StorageResult<()> {
        let inner = &self.inner;
        layout::ensure(&inner.client, &inner.names, &inner.options).await
    }

    /// One round of SOFALookout's periodic operations: rollover by age, documents or size,
    /// then deletion of every expired index.
    pub async fn run_maintenance(&self) -> StorageResult<MaintenanceReport> {
        let inner = &self.inner;
        self.ensure_layout().await?;
        let rolled_over_to = layout::rollover(&inner.client, &inner.names, &inner.options).await?;
        let deleted = layout::apply_retention(&inner.client, &inner.names, &inner.options).await?;
        Ok(MaintenanceReport {
            rolled_over_to,
            deleted,
        })
    }

    /// Runs [`EsStorage::run_maintenance`] now and then every maintenance interval until the
    /// returned handle is aborted. Failures are logged and retried at the next tick.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let storage = self.clone();
        let period = self.inner.options.maintenance_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match storage.run_maintenance().await {
                    Ok(report) => tracing::debug!(?report, "elasticsearch maintenance done"),
                    Err(error) => tracing::warn!(%error, "elasticsearch maintenance failed"),
                }
            }
        })
    }

    /// Sends documents in one `_bulk` per chunk, retrying retryable failures with back-off
    /// within the retry budget. Accepted and rejected items are counted in `outcome`; an
    /// error means some documents are in an unknown state (the caller retries the batch,
    /// which is idempotent because document ids derive from series and time).
    async fn bulk(&self, docs: Vec<PendingDoc>, outcome: &mut WriteOutcome) -> StorageResult<()> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut pending = docs;
        let mut last_problem;
        loop {
            let path = format!(
                "/{}/_bulk?refresh={}{}",
                inner.names.write_alias,
                inner.options.refresh.parameter(),
                if inner.require_alias.load(Ordering::Relaxed) {
                    "&require_alias=true"
                } else {
                    ""
                }
            );
            let body: String = pending.iter().map(|doc| doc.lines.as_str()).collect();
            let mut retry = Vec::new();
            let mut layout_missing = false;
            match inner
                .client
                .send(Method::POST, &path, Some(Body::NdJson(body)))
                .await
            {
                Err(error) => {
                    last_problem = error.to_string();
                    retry = pending;
                }
                Ok(response) if !response.is_success() => {
                    let status = response.status;
                    last_problem = format!("bulk request: {}", response.error_text());
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                        retry = pending;
                    } else {
                        // The whole request was refused: nothing was stored.
                        return Err(StorageError::BadRequest {
                            reason: last_problem,
                        });
                    }
                }
                Ok(response) => {
                    let items = response
                        .body
                        .get("items")
                        .and_then(Value::as_array)
                        .filter(|items| items.len() == pending.len())
                        .ok_or_else(|| StorageError::Internal {
                            reason: format!(
                                "bulk answer does not list one item per document: {}",
                                truncate(&response.body.to_string(), 300)
                            ),
                        })?;
                    last_problem = String::new();
                    for (doc, item) in pending.into_iter().zip(items) {
                        let result = item.get("index").unwrap_or(item);
                        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
                        if (200..300).contains(&status) {
                            outcome.accepted += 1;
                            continue;
                        }
                        let index = result.get("_index").and_then(Value::as_str).unwrap_or("?");
                        let kind = result
                            .pointer("/error/type")
                            .and_then(Value::as_str)
                            .unwrap_or("error");
                        let reason = result
                            .pointer("/error/reason")
                            .and_then(Value::as_str)
                            .unwrap_or("no reason given");
                        let retryable = matches!(status, 429 | 502 | 503 | 504)
                            || kind == "index_not_found_exception"
                            || kind == "es_rejected_execution_exception";
                        if kind == "index_not_found_exception" {
                            if index != inner.names.write_alias
                                && inner.names.parse_index_name(index).is_some()
                            {
                                // The alias resolved to its index, then the server refused
                                // that index for not being an alias: it misapplies the flag.
                                if inner.require_alias.swap(false, Ordering::Relaxed) {
                                    tracing::warn!(
                                        index,
                                        "the server applies require_alias to the alias' index; \
                                         bulk requests go without it"
                                    );
                                }
                            } else {
                                layout_missing = true;
                            }
                        }
                        if retryable {
                            last_problem = format!("index {index}: {kind}: {reason}");
                            retry.push(doc);
                        } else {
                            outcome.reject(RejectReason::BackendRejected, 1, || {
                                format!(
                                    "{} at {}: index {index}: {kind}: {reason}",
                                    doc.series, doc.timestamp_ms
                                )
                            });
                        }
                    }
                }
            }
            if retry.is_empty() {
                return Ok(());
            }
            if started.elapsed() + backoff > inner.options.retry_budget {
                return Err(StorageError::Unavailable {
                    reason: format!(
                        "Elasticsearch did not accept {} documents within {:?}: {last_problem}",
                        retry.len(),
                        inner.options.retry_budget
                    ),
                });
            }
            tracing::debug!(documents = retry.len(), problem = %last_problem, "retrying bulk");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            if layout_missing && inner.options.auto_operations {
                // The cluster lost the alias (restarted empty, or deleted by hand).
                if let Err(error) = self.ensure_layout().await {
                    tracing::warn!(%error, "re-creating the layout failed");
                }
            }
            pending = retry;
        }
    }

    /// The search API path over every index.
    fn search_path(&self, suffix: &str) -> String {
        format!(
            "/{}/{suffix}{}ignore_unavailable=true&allow_no_indices=true",
            self.inner.names.pattern,
            if suffix.contains('?') { "&" } else { "?" }
        )
    }

    /// Answers a select: by aggregation pushdown when the request asks for the latest
    /// sample per step and the selection allows it, else by reading every matching
    /// document. Sends whole series, sorted by labels, to `sender` in batches.
    async fn read_series(
        &self,
        request: SelectRequest,
        sender: tokio::sync::mpsc::Sender<StorageResult<Vec<Series>>>,
    ) {
        let counters = &self.inner.counters;
        if request.hints.latest_per_step {
            match self.pushdown_series(&request).await {
                Ok(Some(series)) => {
                    Counters::bump(&counters.pushed_down_selects);
                    let limit = request.hints.limit.unwrap_or(usize::MAX);
                    send_group(series, &sender, &mut 0, limit).await;
                    return;
                }
                Ok(None) => Counters::bump(&counters.pushdown_fallbacks),
                Err(StorageError::BadRequest { reason }) => {
                    // E.g. `series` typed as text by dynamic mapping in an old index.
                    tracing::warn!(%reason, "aggregation pushdown refused; reading raw samples");
                    Counters::bump(&counters.pushdown_fallbacks);
                }
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            }
        }
        Counters::bump(&counters.raw_selects);
        if let Err(error) = self.raw_series(&request, &sender).await {
            let _ = sender.send(Err(error)).await;
        }
    }

    /// The server's dialect, asked once.
    async fn dialect(&self) -> StorageResult<Dialect> {
        if let Some(dialect) = self.inner.dialect.get() {
            return Ok(*dialect);
        }
        let answer = self
            .inner
            .client
            .json(Method::GET, "/", None, "asking the server's version")
            .await?;
        let dialect = match answer
            .pointer("/version/distribution")
            .and_then(Value::as_str)
        {
            Some("opensearch") => Dialect::OpenSearch,
            _ => Dialect::Elasticsearch,
        };
        Ok(*self.inner.dialect.get_or_init(|| dialect))
    }

    /// Aggregation pushdown of a select carrying [`SelectHints::latest_per_step`]
    /// (see the crate docs): per series (`terms` on `series`, paged by key), per step interval
    /// (`date_histogram` whose buckets end at `maxt`, `maxt - step`, ...), the latest document
    /// (`top_hits` sorted by time). `None` when the selection cannot be answered exactly this
    /// way: some matching document lacks the `series` key (SOFALookout's own documents), or
    /// one series would need more buckets than `max_buckets`.
    ///
    /// [`SelectHints::latest_per_step`]: lookout_storage::SelectHints::latest_per_step
    async fn pushdown_series(
        &self,
        request: &SelectRequest,
    ) -> StorageResult<Option<BTreeMap<Labels, Vec<Sample>>>> {
        let inner = &self.inner;
        let options = &inner.options;
        let translated = query::translate(&request.matchers, request.mint, request.maxt);
        let (mint, maxt) = (request.mint.0, request.maxt.0);
        let step = request.hints.step_ms.filter(|step| *step > 0);
        // Buckets per series: the step intervals from `maxt` back past `mint`.
        let per_series = match step {
            Some(step) => ((maxt as i128 - mint as i128) / step as i128 + 2) as u128,
            None => 1,
        };
        if per_series + 1 > options.max_buckets as u128 {
            return Ok(None);
        }
        let keyless = json!({"bool": {
            "filter": [translated.query],
            "must_not": [{"exists": {"field": query::SERIES_FIELD}}]
        }});
        if self.any_match(&keyless).await? {
            return Ok(None);
        }
        let series_per_page = (options.max_buckets / (per_series as usize + 1)).max(1);
        let latest = json!({"top_hits": {
            "size": 1,
            "sort": [{query::TIME_FIELD: {"order": "desc"}}],
            "_source": [query::ID_FIELD, query::TAGS_FIELD, query::TIME_FIELD,
                        document::VALUE_FIELD, document::VBITS_FIELD],
        }});
        let per_series_aggs = match step {
            // Buckets [k * step + offset, (k + 1) * step + offset), i.e. the intervals
            // (maxt - (j + 1) * step, maxt - j * step] for whole j.
            Some(step) => json!({"steps": {
                "date_histogram": {
                    "field": query::TIME_FIELD,
                    "fixed_interval": format!("{step}ms"),
                    "offset": format!("{}ms", (maxt as i128 + 1).rem_euclid(step as i128)),
                    "min_doc_count": 1,
                },
                "aggs": {"latest": latest},
            }}),
            None => json!({"latest": latest}),
        };
        let mut out: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        let mut samples_read = 0usize;
        let mut after: Option<String> = None;
        // Each round moves past at least one series key: bounded by the series count.
        for _round in 0..10_000_000u64 {
            let mut filter = vec![translated.query.clone()];
            if let Some(after) = &after {
                filter.push(json!({"range": {query::SERIES_FIELD: {"gt": after}}}));
            }
            let body = json!({
                "size": 0,
                "query": {"bool": {"filter": filter}},
                "aggs": {"series": {
                    "terms": {
                        "field": query::SERIES_FIELD,
                        "size": series_per_page,
                        "order": {"_key": "asc"},
                    },
                    "aggs": per_series_aggs,
                }},
            });
            Counters::bump(&inner.counters.aggregation_requests);
            let answer = inner
                .client
                .json(
                    Method::POST,
                    &self.search_path("_search"),
                    Some(body),
                    "aggregating the latest samples",
                )
                .await?;
            let buckets = answer
                .pointer("/aggregations/series/buckets")
                .and_then(Value::as_array)
                .ok_or_else(|| StorageError::Internal {
                    reason: format!(
                        "pushdown answer has no series buckets: {}",
                        truncate(&answer.to_string(), 300)
                    ),
                })?;
            for bucket in buckets {
                let hits: Vec<&Value> = match step {
                    Some(_) => bucket
                        .pointer("/steps/buckets")
                        .and_then(Value::as_array)
                        .map(|steps| {
                            steps
                                .iter()
                                .filter_map(|s| s.pointer("/latest/hits/hits/0"))
                                .collect()
                        })
                        .unwrap_or_default(),
                    None => bucket.pointer("/latest/hits/hits/0").into_iter().collect(),
                };
                for hit in hits {
                    let source = hit.get("_source").unwrap_or(&Value::Null);
                    let (labels, sample) = match document::decode(source) {
                        Ok(decoded) => decoded,
                        Err(reason) => {
                            tracing::warn!(%reason, "skipping an unreadable document");
                            continue;
                        }
                    };
                    if !translated.exact && !query::matches_all(&request.matchers, &labels) {
                        continue;
                    }
                    samples_read += 1;
                    if samples_read > options.max_select_samples {
                        return Err(StorageError::Limit {
                            what: format!(
                                "the selection reads more than {} samples",
                                options.max_select_samples
                            ),
                        });
                    }
                    out.entry(labels).or_default().push(sample);
                }
            }
            let last = buckets
                .last()
                .and_then(|bucket| bucket.get("key"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            match last {
                Some(last) if buckets.len() >= series_per_page => after = Some(last),
                _ => return Ok(Some(out)),
            }
        }
        Err(StorageError::Limit {
            what: "pushdown did not finish within its round limit".into(),
        })
    }

    /// Reads every matching document sorted by metric name and time (paged as
    /// [`ReadPaging`] says) and sends whole series, sorted by labels, to `sender` in batches.
    async fn raw_series(
        &self,
        request: &SelectRequest,
        sender: &tokio::sync::mpsc::Sender<StorageResult<Vec<Series>>>,
    ) -> StorageResult<()> {
        let inner = &self.inner;
        let translated = query::translate(&request.matchers, request.mint, request.maxt);
        // Series are sorted by labels. When `__name__` is the smallest label name of every
        // matching series, metric-name order is label order and series can be sent as each
        // name completes; otherwise everything is sorted at the end.
        let streaming = !self.any_label_before_name(&translated.query).await?;
        let mut pager = self.open_pager(&translated.query).await?;
        let mut group: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        let mut group_name: Option<String> = None;
        let mut samples_read = 0usize;
        let mut series_sent = 0usize;
        let series_limit = request.hints.limit.unwrap_or(usize::MAX);
        let outcome: StorageResult<()> = async {
            // Each page holds at least one hit or ends the loop: bounded by the hit count.
            loop {
                let hits = pager.next_page(self).await?;
                if hits.is_empty() {
                    break;
                }
                inner
                    .counters
                    .raw_hits
                    .fetch_add(hits.len() as u64, Ordering::Relaxed);
                for hit in &hits {
                    let source = hit.get("_source").unwrap_or(&Value::Null);
                    let (labels, sample) = match document::decode(source) {
                        Ok(decoded) => decoded,
                        Err(reason) => {
                            let index = hit.get("_index").and_then(Value::as_str);
                            let id = hit.get("_id").and_then(Value::as_str);
                            tracing::warn!(
                                index = index.unwrap_or("?"),
                                id = id.unwrap_or("?"),
                                %reason,
                                "skipping an unreadable document"
                            );
                            continue;
                        }
                    };
                    if !translated.exact && !query::matches_all(&request.matchers, &labels) {
                        continue;
                    }
                    samples_read += 1;
                    if samples_read > inner.options.max_select_samples {
                        return Err(StorageError::Limit {
                            what: format!(
                                "the selection reads more than {} samples",
                                inner.options.max_select_samples
                            ),
                        });
                    }
                    let name = labels.metric_name().unwrap_or_default();
                    if streaming && group_name.as_deref() != Some(name) {
                        let finished = std::mem::take(&mut group);
                        if !send_group(finished, sender, &mut series_sent, series_limit).await {
                            return Ok(());
                        }
                        group_name = Some(name.to_owned());
                    }
                    group.entry(labels).or_default().push(sample);
                }
            }
            send_group(
                std::mem::take(&mut group),
                sender,
                &mut series_sent,
                series_limit,
            )
            .await;
            Ok(())
        }
        .await;
        pager.close(self).await;
        outcome
    }

    /// Starts a raw read of the documents matching `query`.
    async fn open_pager(&self, query: &Value) -> StorageResult<Pager> {
        let inner = &self.inner;
        let mut body = json!({
            "size": inner.options.scroll_page,
            "query": query,
            "_source": [query::ID_FIELD, query::TAGS_FIELD, query::TIME_FIELD,
                        document::VALUE_FIELD, document::VBITS_FIELD],
        });
        let scroll = |mut body: Value| {
            body["sort"] = json!([{query::ID_FIELD: "asc"}, {query::TIME_FIELD: "asc"}]);
            // Elasticsearch refuses `track_total_hits: false` in a scroll.
            if let Some(fields) = body.as_object_mut() {
                fields.remove("track_total_hits");
            }
            Pager::Scroll {
                first: Some(body),
                scroll_id: None,
                ids: BTreeSet::new(),
            }
        };
        if inner.options.read_paging == ReadPaging::Scroll {
            return Ok(scroll(body));
        }
        let dialect = self.dialect().await?;
        let keep_alive = "2m";
        let pit = match dialect {
            Dialect::Elasticsearch => {
                let path = format!("/{}/_pit?keep_alive={keep_alive}", inner.names.pattern);
                let answer = inner.client.send(Method::POST, &path, None).await?;
                answer
                    .is_success()
                    .then(|| {
                        answer
                            .body
                            .get("id")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .flatten()
            }
            Dialect::OpenSearch => {
                let path = format!(
                    "/{}/_search/point_in_time?keep_alive={keep_alive}",
                    inner.names.pattern
                );
                let answer = inner.client.send(Method::POST, &path, None).await?;
                answer
                    .is_success()
                    .then(|| {
                        answer
                            .body
                            .get("pit_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .flatten()
            }
        };
        // Sorted by metric name and time, then a tie-breaker unique per document, so that
        // `search_after` neither skips nor repeats documents with equal name and time
        // (SOFALookout writes duplicates; a rollover can hold a sample twice).
        body["sort"] = match dialect {
            Dialect::Elasticsearch => json!([
                {query::ID_FIELD: "asc"}, {query::TIME_FIELD: "asc"}, {"_shard_doc": "asc"}
            ]),
            Dialect::OpenSearch => json!([
                {query::ID_FIELD: "asc"}, {query::TIME_FIELD: "asc"},
                {"_index": "asc"}, {"_id": "asc"}
            ]),
        };
        // Pages end on a short page, so the total is never needed.
        body["track_total_hits"] = json!(false);
        match (dialect, pit) {
            (Dialect::Elasticsearch, None) => {
                tracing::debug!("no point in time: reading with a scroll");
                Ok(scroll(body))
            }
            (_, pit) => Ok(Pager::SearchAfter {
                body,
                dialect,
                pit,
                after: None,
                done: false,
            }),
        }
    }

    /// Whether a matching document has a label name that sorts before `__name__`.
    async fn any_label_before_name(&self, query: &Value) -> StorageResult<bool> {
        let body = json!({"query": {"bool": {"filter": [
            query,
            {"range": {query::TAGS_FIELD: {"lt": format!("{METRIC_NAME_LABEL}=")}}}
        ]}}});
        let answer = self
            .inner
            .client
            .json(
                Method::POST,
                &self.search_path("_count"),
                Some(body),
                "counting",
            )
            .await?;
        Ok(answer.get("count").and_then(Value::as_u64).unwrap_or(1) > 0)
    }

    /// A terms aggregation over `field` of the documents matching `query`, keys in byte
    /// order. Returns the keys and whether more exist than were returned.
    async fn terms(
        &self,
        query: &Value,
        field: &str,
        include: Option<String>,
        exclude: Option<String>,
        size: usize,
    ) -> StorageResult<(Vec<String>, bool)> {
        let mut terms = json!({"field": field, "size": size, "order": {"_key": "asc"}});
        if let Some(include) = include {
            terms["include"] = json!(include);
        }
        if let Some(exclude) = exclude {
            terms["exclude"] = json!(exclude);
        }
        let body = json!({"size": 0, "query": query, "aggs": {"keys": {"terms": terms}}});
        let answer = self
            .inner
            .client
            .json(
                Method::POST,
                &self.search_path("_search"),
                Some(body),
                "aggregating",
            )
            .await?;
        let aggregation = answer.pointer("/aggregations/keys");
        let keys = aggregation
            .and_then(|agg| agg.get("buckets"))
            .and_then(Value::as_array)
            .map(|buckets| {
                buckets
                    .iter()
                    .filter_map(|bucket| bucket.get("key").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let more = aggregation
            .and_then(|agg| agg.get("sum_other_doc_count"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            > 0;
        Ok((keys, more))
    }

    /// Whether any document matches.
    async fn any_match(&self, query: &Value) -> StorageResult<bool> {
        let answer = self
            .inner
            .client
            .json(
                Method::POST,
                &self.search_path("_count"),
                Some(json!({"query": query})),
                "counting",
            )
            .await?;
        Ok(answer.get("count").and_then(Value::as_u64).unwrap_or(0) > 0)
    }

    /// Label names of the selection, read document by document.
    async fn label_names_by_scan(&self, request: &LabelRequest) -> StorageResult<Vec<String>> {
        let mut names = BTreeSet::new();
        for labels in self.label_sets(request).await? {
            names.extend(labels.iter().map(|label| label.name.to_string()));
        }
        Ok(apply_limit(names.into_iter().collect(), request.limit))
    }

    /// Values of label `name` in the selection, read document by document.
    async fn label_values_by_scan(
        &self,
        name: &str,
        request: &LabelRequest,
    ) -> StorageResult<Vec<String>> {
        let values: BTreeSet<String> = self
            .label_sets(request)
            .await?
            .iter()
            .filter_map(|labels| labels.get(name).map(str::to_owned))
            .collect();
        Ok(apply_limit(values.into_iter().collect(), request.limit))
    }

    /// Label sets of the selection, read document by document (for matchers the cluster
    /// cannot evaluate exactly, and servers that ignore `include`/`exclude`).
    async fn label_sets(&self, request: &LabelRequest) -> StorageResult<Vec<Labels>> {
        let select = SelectRequest::new(request.matchers.clone(), request.mint.0, request.maxt.0);
        let stream = self.select(select).await?;
        let series = lookout_storage::collect_series(stream).await?;
        Ok(series.into_iter().map(|series| series.labels).collect())
    }
}

/// The paging state of one raw read.
enum Pager {
    Scroll {
        /// The opening search, until sent.
        first: Option<Value>,
        scroll_id: Option<String>,
        /// Every scroll id seen, cleared at the end.
        ids: BTreeSet<String>,
    },
    SearchAfter {
        body: Value,
        dialect: Dialect,
        /// The point in time searched, when the server has one.
        pit: Option<String>,
        /// The sort values of the last hit read.
        after: Option<Value>,
        done: bool,
    },
}

impl Pager {
    /// The next page's hits; empty at the end.
    async fn next_page(&mut self, storage: &EsStorage) -> StorageResult<Vec<Value>> {
        let inner = &storage.inner;
        let hits = |answer: &Value| {
            answer
                .pointer("/hits/hits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        match self {
            Pager::Scroll {
                first,
                scroll_id,
                ids,
            } => {
                let answer = match (first.take(), scroll_id.as_ref()) {
                    (Some(body), _) => {
                        inner
                            .client
                            .json(
                                Method::POST,
                                &storage.search_path("_search?scroll=2m"),
                                Some(body),
                                "searching",
                            )
                            .await?
                    }
                    (None, Some(id)) => {
                        inner
                            .client
                            .json(
                                Method::POST,
                                "/_search/scroll",
                                Some(json!({"scroll": "2m", "scroll_id": id})),
                                "scrolling",
                            )
                            .await?
                    }
                    (None, None) => return Ok(Vec::new()),
                };
                Counters::bump(&inner.counters.scroll_pages);
                let id = answer
                    .get("_scroll_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| StorageError::Internal {
                        reason: "search answer has no scroll id".into(),
                    })?;
                ids.insert(id.to_owned());
                *scroll_id = Some(id.to_owned());
                Ok(hits(&answer))
            }
            Pager::SearchAfter {
                body,
                pit,
                after,
                done,
                ..
            } => {
                if *done {
                    return Ok(Vec::new());
                }
                let mut request = body.clone();
                if let Some(after) = after.as_ref() {
                    request["search_after"] = after.clone();
                }
                let path = match pit.as_ref() {
                    Some(id) => {
                        request["pit"] = json!({"id": id, "keep_alive": "2m"});
                        "/_search".to_owned()
                    }
                    None => storage.search_path("_search"),
                };
                let answer = inner
                    .client
                    .json(Method::POST, &path, Some(request), "searching")
                    .await?;
                Counters::bump(&inner.counters.search_after_pages);
                if let (Some(id), Some(new)) = (pit.as_mut(), answer.get("pit_id")) {
                    if let Some(new) = new.as_str() {
                        *id = new.to_owned();
                    }
                }
                let page = hits(&answer);
                if page.len() < inner.options.scroll_page {
                    *done = true;
                }
                if let Some(last) = page.last() {
                    let sort = last.get("sort").ok_or_else(|| StorageError::Internal {
                        reason: "a sorted hit has no sort values".into(),
                    })?;
                    *after = Some(sort.clone());
                }
                Ok(page)
            }
        }
    }

    /// Releases the server's resources (best effort).
    async fn close(self, storage: &EsStorage) {
        let client = &storage.inner.client;
        match self {
            Pager::Scroll { ids, .. } if !ids.is_empty() => {
                let ids: Vec<String> = ids.into_iter().collect();
                let _ = client
                    .send(
                        Method::DELETE,
                        "/_search/scroll",
                        Some(Body::Json(json!({"scroll_id": ids}))),
                    )
                    .await;
            }
            Pager::SearchAfter {
                pit: Some(id),
                dialect,
                ..
            } => {
                let (path, body) = match dialect {
                    Dialect::Elasticsearch => ("/_pit", json!({"id": id})),
                    Dialect::OpenSearch => ("/_search/point_in_time", json!({"pit_id": [id]})),
                };
                let _ = client
                    .send(Method::DELETE, path, Some(Body::Json(body)))
                    .await;
            }
            _ => {}
        }
    }
}

/// Sends one metric name's series, sorted, in batches. `false` when the receiver is gone or
/// the series limit is reached.
async fn send_group(
    group: BTreeMap<Labels, Vec<Sample>>,
    sender: &tokio::sync::mpsc::Sender<StorageResult<Vec<Series>>>,
    series_sent: &mut usize,
    series_limit: usize,
) -> bool {
    const BATCH: usize = 256;
    let mut batch = Vec::with_capacity(BATCH.min(group.len()));
    for (labels, mut samples) in group {
        if *series_sent >= series_limit {
            break;
        }
        // Sorted by time already; the same timestamp may come from two indices (a rewrite
        // after a rollover) or from SOFALookout's own duplicates: keep the last.
        samples.sort_by_key(|sample| sample.timestamp);
        samples.dedup_by(|later, earlier| {
            if later.timestamp == earlier.timestamp {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        batch.push(Series { labels, samples });
        *series_sent += 1;
        if batch.len() == BATCH && sender.send(Ok(std::mem::take(&mut batch))).await.is_err() {
            return false;
        }
    }
    if !batch.is_empty() && sender.send(Ok(batch)).await.is_err() {
        return false;
    }
    *series_sent < series_limit
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Lucene regexp matching any of `names` followed by `=` and anything.
fn names_regex(names: &BTreeSet<String>) -> String {
    let alternatives: Vec<String> = names
        .iter()
        .map(|name| format!("({})", regexp::escape_literal(name)))
        .collect();
    format!("({})\\=.*", alternatives.join("|"))
}

fn apply_limit(mut values: Vec<String>, limit: Option<usize>) -> Vec<String> {
    if let Some(limit) = limit {
        values.truncate(limit);
    }
    values
}

#[async_trait]
impl Storage for EsStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "elasticsearch",
            out_of_order: OutOfOrderPolicy::Unlimited,
            delete: true,
            rejects_conflicting_duplicates: false,
            pushdown_functions: &[],
            pushdown_aggregations: &["sum", "min", "max", "count", "avg"],
            appends_known_series: false,
        }
    }

    async fn write(&self, batch: WriteBatch) -> StorageResult<WriteOutcome> {
        if let Some(error) = batch.refuse_known("elasticsearch") {
            return Err(error);
        }
        let mut outcome = WriteOutcome::default();
        let mut docs: Vec<PendingDoc> = Vec::with_capacity(batch.sample_count());
        for series in &batch.series {
            if let Err(reason) = document::check_series(&series.labels) {
                outcome.reject(
                    RejectReason::InvalidLabels,
                    series.samples.len() as u64,
                    || format!("{}: {reason}", truncate(&series.labels.to_string(), 200)),
                );
                continue;
            }
            let (id, tags) = document::id_and_tags(&series.labels);
            let series_key = document::series_key(&series.labels);
            for sample in &series.samples {
                let timestamp_ms = sample.timestamp.0;
                if !document::time_in_bounds(timestamp_ms) {
                    outcome.reject(RejectReason::OutOfBounds, 1, || {
                        format!(
                            "{} at {timestamp_ms}: outside years 0000-9999",
                            series.labels
                        )
                    });
                    continue;
                }
                let action = json!({"index": {
                    "_id": document::document_id(&series.labels, timestamp_ms)
                }});
                let source = document::source(&id, &tags, &series_key, sample);
                docs.push(PendingDoc {
                    lines: format!("{action}\n{source}\n"),
                    series: truncate(&series.labels.to_string(), 200).to_owned(),
                    timestamp_ms,
                });
            }
        }
        // Requests of at most `bulk_max_docs` documents and about BULK_MAX_BYTES (ES refuses
        // bodies over 100 MB by default).
        const BULK_MAX_BYTES: usize = 8 << 20;
        let max_docs = self.inner.options.bulk_max_docs;
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for doc in docs {
            if !chunk.is_empty()
                && (chunk.len() == max_docs || chunk_bytes + doc.lines.len() > BULK_MAX_BYTES)
            {
                self.bulk(std::mem::take(&mut chunk), &mut outcome).await?;
                chunk_bytes = 0;
            }
            chunk_bytes += doc.lines.len();
            chunk.push(doc);
        }
        if !chunk.is_empty() {
            self.bulk(chunk, &mut outcome).await?;
        }
        Ok(outcome)
    }

    async fn select(&self, request: SelectRequest) -> StorageResult<SeriesStream> {
        request.validate()?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel(2);
        let storage = self.clone();
        tokio::spawn(async move { storage.read_series(request, sender).await });
        let stream = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
        Ok(stream.boxed())
    }

    async fn label_names(&self, request: LabelRequest) -> StorageResult<Vec<String>> {
        request.validate()?;
        let translated = query::translate(&request.matchers, request.mint, request.maxt);
        if !translated.exact {
            return self.label_names_by_scan(&request).await;
        }
        let mut names = BTreeSet::new();
        if self.any_match(&translated.query).await? {
            names.insert(METRIC_NAME_LABEL.to_owned());
        }
        // Tags sort by name first, so each round of buckets holds whole names except maybe
        // the last; every name seen is excluded from the next round.
        let size = self.inner.options.max_buckets;
        for _round in 0..1_000 {
            let exclude = (!names.is_empty()).then(|| names_regex(&names));
            let before = names.len();
            let (keys, more) = self
                .terms(&translated.query, query::TAGS_FIELD, None, exclude, size)
                .await?;
            let exclusion_ignored = before > 1
                && keys.iter().any(|key| {
                    document::split_tag(key)
                        .is_some_and(|label| names.contains(label.name.as_str()))
                });
            if exclusion_ignored {
                // The server ignores `exclude`: paging cannot progress; read the documents.
                return self.label_names_by_scan(&request).await;
            }
            for key in &keys {
                if let Some(label) = document::split_tag(key) {
                    names.insert(label.name.to_string());
                }
            }
            let enough = request.limit.is_some_and(|limit| names.len() > limit);
            if !more || enough {
                return Ok(apply_limit(names.into_iter().collect(), request.limit));
            }
            if names.len() == before {
                break;
            }
        }
        Err(StorageError::Limit {
            what: "label names could not be collected within 1000 aggregation rounds".into(),
        })
    }

    async fn label_values(&self, name: &str, request: LabelRequest) -> StorageResult<Vec<String>> {
        request.validate()?;
        let translated = query::translate(&request.matchers, request.mint, request.maxt);
        if !translated.exact {
            return self.label_values_by_scan(name, &request).await;
        }
        let size = request
            .limit
            .unwrap_or(self.inner.options.max_buckets)
            .min(self.inner.options.max_buckets);
        let (values, more) = if name == METRIC_NAME_LABEL {
            self.terms(&translated.query, query::ID_FIELD, None, None, size)
                .await?
        } else {
            let prefix = format!("{name}=");
            let include = format!("{}.+", regexp::escape_literal(&prefix));
            let (keys, more) = self
                .terms(
                    &translated.query,
                    query::TAGS_FIELD,
                    Some(include),
                    None,
                    size,
                )
                .await?;
            if more && keys.iter().any(|key| !key.starts_with(&prefix)) {
                // The server ignores `include`: the buckets are not this label's values.
                return self.label_values_by_scan(name, &request).await;
            }
            let values = keys
                .iter()
                .filter_map(|key| key.strip_prefix(&prefix))
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .collect();
            (values, more)
        };
        if more && request.limit.is_none_or(|limit| values.len() < limit) {
            return Err(StorageError::Limit {
                what: format!(
                    "label {name} has more than {size} values in the selection; narrow it"
                ),
            });
        }
        Ok(apply_limit(values, request.limit))
    }

    async fn delete(&self, request: DeleteRequest) -> StorageResult<()> {
        request.validate()?;
        let translated = query::translate(&request.matchers, request.mint, request.maxt);
        if !translated.exact {
            return Err(StorageError::BadRequest {
                reason: "a matcher of this delete cannot be evaluated exactly by Elasticsearch \
                         (regex with assertions or byte classes); refusing to delete a superset"
                    .into(),
            });
        }
        let answer = self
            .inner
            .client
            .json(
                Method::POST,
                &self.search_path("_delete_by_query?conflicts=proceed&refresh=true"),
                Some(json!({"query": translated.query})),
                "deleting",
            )
            .await?;
        let failures = answer
            .get("failures")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if failures > 0 {
            return Err(StorageError::Unavailable {
                reason: format!(
                    "delete by query reported {failures} failures: {}",
                    truncate(&answer["failures"].to_string(), 300)
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_and_https_says_it_is_not_implemented() {
        assert!(EsOptions::new("http://127.0.0.1:9200").validate().is_ok());
        let https = EsOptions::new("https://es.example:9200")
            .validate()
            .unwrap_err();
        assert!(https.to_string().contains("not implemented"), "{https}");
        let other = EsOptions::new("es.example:9200").validate().unwrap_err();
        assert!(
            other.to_string().contains("must start with http://"),
            "{other}"
        );
    }
}
