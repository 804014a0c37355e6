//! Gateway-only mode: the gateways write into a [`Forwarder`] instead of a store. It is a
//! [`Storage`] whose `write` encodes the batch for every configured exporter and appends it to
//! that exporter's on-disk [`queue`] (durable before the gateway answers); one task per
//! exporter sends the queued records to its receiver and removes them only once the receiver
//! answered 2xx.
//!
//! Exporters ([`ExporterKind`]):
//! * `relay` — SOFALookout's relay format (spec §5.2) to another Lookout or SOFALookout
//!   gateway's `POST /datas`; see [`encode::relay`] for the name and tag rules.
//! * `remote_write` — Prometheus remote write 1.0 (snappy protobuf) to any receiver, with
//!   optional basic or bearer authentication.
//!
//! Delivery is at-least-once. Several consecutive queued records go in one request (up to
//! [`ForwardOptions::max_request_bytes`] uncompressed). Answers:
//! * 2xx: delivered, removed from the queue;
//! * 429, 5xx, a connection error or a timeout: kept, retried after an exponential back-off
//!   (`min_backoff` doubling up to `max_backoff`; a `Retry-After` in seconds is honoured up
//!   to `max_backoff`);
//! * any other 4xx: the receiver will never take it. A request of several records is split
//!   and each record sent alone, so one bad record does not take good ones with it; a record
//!   refused alone is dropped, counted in `lookout_forward_samples_failed_total` and logged.

pub mod encode;
pub mod queue;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout_storage::{
    Capabilities, DeleteRequest, LabelRequest, OutOfOrderPolicy, SelectRequest, SeriesStream,
    Storage, StorageError, StorageResult, WriteBatch, WriteOutcome,
};
use queue::{DiskQueue, QueueOptions, Record};

/// The protocol an exporter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExporterKind {
    /// SOFALookout relay format to a gateway's `/datas`; `compress`: raw snappy bodies.
    Relay { compress: bool },
    /// Prometheus remote write 1.0.
    RemoteWrite,
}

impl ExporterKind {
    /// `relay` or `remote_write`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExporterKind::Relay { .. } => "relay",
            ExporterKind::RemoteWrite => "remote_write",
        }
    }
}

/// Credentials sent with every request of an exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// `Authorization: Basic ...`
    Basic { username: String, password: String },
    /// `Authorization: Bearer <token>`
    Bearer(String),
}

/// One receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterConfig {
    /// Names the exporter in self-metrics and logs, and its queue directory
    /// (`<queue dir>/<name>`).
    pub name: String,
    /// The protocol.
    pub kind: ExporterKind,
    /// Where to `POST`.
    pub url: String,
    /// Credentials.
    pub auth: Auth,
}

/// Settings shared by the exporters.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Parent of the exporters' queue directories.
    pub queue_dir: PathBuf,
    /// Bound of each exporter's queue, in bytes on disk.
    pub queue_max_bytes: u64,
    /// `fdatasync` every queued batch before the gateway answers.
    pub fsync: bool,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Longest a request to a receiver may take.
    pub request_timeout: Duration,
    /// Most uncompressed bytes of queued records sent in one request (a larger single record
    /// is sent alone).
    pub max_request_bytes: usize,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            queue_dir: PathBuf::from("queue"),
            queue_max_bytes: 1 << 30,
            fsync: true,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_request_bytes: 4 << 20,
        }
    }
}

/// Most records in one request.
const MAX_RECORDS_PER_REQUEST: usize = 1000;
/// How long an idle exporter sleeps before looking at its queue again (appends wake it
/// earlier).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Samples dropped because the queue was full.
pub const QUEUE_FULL: &str = "queue_full";
/// Samples dropped because their record was damaged on disk (counted as records too).
pub const CORRUPT_RECORD: &str = "corrupt_record";

#[derive(Debug, Default)]
struct Counters {
    enqueued_samples: AtomicU64,
    sent_samples: AtomicU64,
    sent_requests: AtomicU64,
    retried_requests: AtomicU64,
    failed_samples: AtomicU64,
    failed_requests: AtomicU64,
    /// Samples left out when encoding, by reason.
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Debug)]
struct Exporter {
    config: ExporterConfig,
    queue: Arc<DiskQueue>,
    wake: tokio::sync::Notify,
    counters: Counters,
}

/// What a receiver made of a request.
#[derive(Debug)]
enum Answer {
    Delivered,
    /// A 4xx other than 429: sending it again will not help.
    Permanent(String),
    /// Worth retrying; the receiver's `Retry-After`, if any.
    Retry(String, Option<Duration>),
}

/// The store of gateway-only mode: queues what the gateways write for every exporter.
#[derive(Debug, Clone)]
pub struct Forwarder {
    exporters: Arc<Vec<Arc<Exporter>>>,
    options: ForwardOptions,
    client: reqwest::Client,
}

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A queue could not be opened.
    #[error("exporter {name}: {source}")]
    Queue {
        name: String,
        #[source]
        source: queue::QueueError,
    },
    /// Two exporters with one name would share a queue.
    #[error("two exporters are named {0:?}")]
    DuplicateName(String),
    /// No exporter configured.
    #[error("gateway-only mode needs at least one exporter")]
    NoExporter,
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
}

impl Forwarder {
    /// Opens every exporter's queue (delivering what a previous run left, once
    /// [`Forwarder::spawn`] runs).
    pub fn open(
        options: ForwardOptions,
        exporters: Vec<ExporterConfig>,
    ) -> Result<Forwarder, ForwardError> {
        if exporters.is_empty() {
            return Err(ForwardError::NoExporter);
        }
        let mut opened = Vec::new();
        for config in exporters {
            if opened
                .iter()
                .any(|known: &Arc<Exporter>| known.config.name == config.name)
            {
                return Err(ForwardError::DuplicateName(config.name));
            }
            let mut queue_options = QueueOptions::new(
                options.queue_dir.join(&config.name),
                options.queue_max_bytes,
            );
            queue_options.fsync = options.fsync;
            let queue = DiskQueue::open(queue_options).map_err(|source| ForwardError::Queue {
                name: config.name.clone(),
                source,
            })?;
            opened.push(Arc::new(Exporter {
                config,
                queue: Arc::new(queue),
                wake: tokio::sync::Notify::new(),
                counters: Counters::default(),
            }));
        }
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|error| ForwardError::Client(error.to_string()))?;
        Ok(Forwarder {
            exporters: Arc::new(opened),
            options,
            client,
        })
    }

    /// Starts one delivery task per exporter; they stop when `stop` turns true, leaving
    /// what is undelivered in the queues.
    pub fn spawn(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.exporters
            .iter()
            .map(|exporter| {
                let exporter = exporter.clone();
                let client = self.client.clone();
                let options = self.options.clone();
                let stop = stop.clone();
                tokio::spawn(async move { deliver(exporter, client, options, stop).await })
            })
            .collect()
    }

    /// Appends the exporters' self-metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let stats: Vec<_> = self
            .exporters
            .iter()
            .map(|exporter| (exporter, exporter.queue.stats()))
            .collect();
        let mut family =
            |name: &str,
             kind: &str,
             help: &str,
             value: &dyn Fn(&Exporter, &queue::QueueStats) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (exporter, queue) in &stats {
                    let _ = writeln!(
                        out,
                        "{name}{{exporter=\"{}\"}} {}",
                        exporter.config.name,
                        value(exporter, queue)
                    );
                }
            };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        family(
            "lookout_forward_queue_bytes",
            "gauge",
            "Bytes of the exporter's queue segments on disk.",
            &|_, queue| queue.bytes,
        );
        family(
            "lookout_forward_queue_records",
            "gauge",
            "Queued batches not yet delivered.",
            &|_, queue| queue.records,
        );
        family(
            "lookout_forward_queue_samples",
            "gauge",
            "Samples in the queued batches not yet delivered.",
            &|_, queue| queue.samples,
        );
        family(
            "lookout_forward_samples_enqueued_total",
            "counter",
            "Samples queued for the exporter.",
            &|exporter, _| load(&exporter.counters.enqueued_samples),
        );
        family(
            "lookout_forward_samples_sent_total",
            "counter",
            "Samples the receiver acknowledged with 2xx.",
            &|exporter, _| load(&exporter.counters.sent_samples),
        );
        family(
            "lookout_forward_requests_sent_total",
            "counter",
            "Requests the receiver acknowledged with 2xx.",
            &|exporter, _| load(&exporter.counters.sent_requests),
        );
        family(
            "lookout_forward_requests_retried_total",
            "counter",
            "Requests that failed with 429, 5xx, a connection error or a timeout and are retried.",
            &|exporter, _| load(&exporter.counters.retried_requests),
        );
        family(
            "lookout_forward_requests_failed_total",
            "counter",
            "Requests the receiver refused for good (4xx other than 429).",
            &|exporter, _| load(&exporter.counters.failed_requests),
        );
        family(
            "lookout_forward_samples_failed_total",
            "counter",
            "Samples the receiver refused for good (4xx other than 429); dropped.",
            &|exporter, _| load(&exporter.counters.failed_samples),
        );
        family(
            "lookout_forward_records_corrupt_total",
            "counter",
            "Queued batches skipped because they were damaged on disk.",
            &|_, queue| queue.corrupt_records,
        );
        let name = "lookout_forward_samples_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Samples not forwarded, by reason: queue_full (the oldest queued when the queue was full), stale_marker, non_finite_value, no_metric_name (what the relay format cannot carry).\n# TYPE {name} counter"
        );
        for (exporter, queue) in &stats {
            let dropped = exporter
                .counters
                .dropped
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone();
            for reason in [
                QUEUE_FULL,
                encode::STALE_MARKER,
                encode::NON_FINITE_VALUE,
                encode::NO_METRIC_NAME,
            ] {
                let count = if reason == QUEUE_FULL {
                    queue.dropped_samples
                } else {
                    dropped.get(reason).copied().unwrap_or(0)
                };
                let _ = writeln!(
                    out,
                    "{name}{{exporter=\"{}\",reason=\"{reason}\"}} {count}",
                    exporter.config.name
                );
            }
        }
        let name = "lookout_forward_exporter_info";
        let _ = writeln!(
            out,
            "# HELP {name} The configured exporters.\n# TYPE {name} gauge"
        );
        for (exporter, _) in &stats {
            let url = exporter
                .config
                .url
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            let _ = writeln!(
                out,
                "{name}{{exporter=\"{}\",kind=\"{}\",url=\"{url}\"}} 1",
                exporter.config.name,
                exporter.config.kind.as_str()
            );
        }
    }

    /// The queue figures of exporter `name`.
    pub fn queue_stats(&self, name: &str) -> Option<queue::QueueStats> {
        self.exporters
            .iter()
            .find(|exporter| exporter.config.name == name)
            .map(|exporter| exporter.queue.stats())
    }
}

#[async_trait::async_trait]
impl Storage for Forwarder {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "forward",
            out_of_order: OutOfOrderPolicy::Unlimited,
            delete: false,
            rejects_conflicting_duplicates: false,
            pushdown_functions: &[],
            pushdown_aggregations: &[],
            appends_known_series: false,
        }
    }

    /// Queues the batch for every exporter; returns once it is durable in each queue. Every
    /// sample counts as accepted: what an exporter's format cannot carry is counted in that
    /// exporter's `lookout_forward_samples_dropped_total`.
    async fn write(&self, batch: WriteBatch) -> StorageResult<WriteOutcome> {
        if let Some(error) = batch.refuse_known("forward") {
            return Err(error);
        }
        let total = batch.sample_count() as u64;
        let batch = Arc::new(batch);
        for exporter in self.exporters.iter() {
            let exporter = exporter.clone();
            let batch = batch.clone();
            let queued = tokio::task::spawn_blocking(move || {
                let encoded = match exporter.config.kind {
                    ExporterKind::Relay { .. } => encode::relay(&batch),
                    ExporterKind::RemoteWrite => encode::remote_write(&batch),
                };
                if !encoded.dropped.is_empty() {
                    let mut dropped = exporter
                        .counters
                        .dropped
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner());
                    for (reason, count) in &encoded.dropped {
                        *dropped.entry(reason).or_default() += count;
                    }
                }
                if encoded.samples == 0 {
                    return Ok(());
                }
                let samples = u32::try_from(encoded.samples).unwrap_or(u32::MAX);
                exporter
                    .queue
                    .append(&encoded.payload, samples)
                    .map_err(|error| format!("exporter {}: {error}", exporter.config.name))?;
                exporter
                    .counters
                    .enqueued_samples
                    .fetch_add(encoded.samples, Ordering::Relaxed);
                exporter.wake.notify_one();
                Ok(())
            })
            .await
            .map_err(|error| error.to_string())
            .and_then(|queued: Result<(), String>| queued);
            if let Err(reason) = queued {
                tracing::error!(%reason, "a batch could not be queued");
                return Err(StorageError::Unavailable { reason });
            }
        }
        Ok(WriteOutcome {
            accepted: total,
            ..WriteOutcome::default()
        })
    }

    async fn select(&self, _request: SelectRequest) -> StorageResult<SeriesStream> {
        Err(StorageError::Unsupported {
            operation: "select",
            backend: "forward",
        })
    }

    async fn label_names(&self, _request: LabelRequest) -> StorageResult<Vec<String>> {
        Ok(Vec::new())
    }

    async fn label_values(
        &self,
        _name: &str,
        _request: LabelRequest,
    ) -> StorageResult<Vec<String>> {
        Ok(Vec::new())
    }

    async fn delete(&self, _request: DeleteRequest) -> StorageResult<()> {
        Err(StorageError::Unsupported {
            operation: "delete",
            backend: "forward",
        })
    }
}

/// Runs a blocking queue operation off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, queue::QueueError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// The delivery loop of one exporter.
async fn deliver(
    exporter: Arc<Exporter>,
    client: reqwest::Client,
    options: ForwardOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = exporter.config.name.clone();
    let mut backoff = options.min_backoff;
    let mut failing = false;
    while !*stop.borrow() {
        let queue = exporter.queue.clone();
        let max_bytes = options.max_request_bytes;
        let records = match blocking(move || queue.peek(MAX_RECORDS_PER_REQUEST, max_bytes)).await {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(exporter = %name, %error, "cannot read the queue");
                if sleep_or_stop(&mut stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(options.max_backoff);
                continue;
            }
        };
        if records.is_empty() {
            tokio::select! {
                _ = exporter.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            continue;
        }
        // A stop abandons a request in flight: its records stay queued for the next start.
        let answer = tokio::select! {
            answer = post(&exporter, &client, &records) => answer,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let retry = match answer {
            Answer::Delivered => {
                delivered(&exporter, &records);
                ack(&exporter, records.last().map(|record| record.seq)).await;
                None
            }
            Answer::Permanent(reason) if records.len() == 1 => {
                refused(&exporter, &records[0], &reason);
                ack(&exporter, Some(records[0].seq)).await;
                None
            }
            Answer::Permanent(reason) => {
                tracing::warn!(exporter = %name, records = records.len(), %reason,
                    "the receiver refused a request of several batches; sending them one by one");
                let mut retry = None;
                for record in &records {
                    match post(&exporter, &client, std::slice::from_ref(record)).await {
                        Answer::Delivered => delivered(&exporter, std::slice::from_ref(record)),
                        Answer::Permanent(reason) => refused(&exporter, record, &reason),
                        Answer::Retry(reason, after) => {
                            retry = Some((reason, after));
                            break;
                        }
                    }
                    ack(&exporter, Some(record.seq)).await;
                }
                retry
            }
            Answer::Retry(reason, after) => Some((reason, after)),
        };
        match retry {
            None => {
                if failing {
                    tracing::info!(exporter = %name, "the receiver takes data again");
                }
                failing = false;
                backoff = options.min_backoff;
            }
            Some((reason, after)) => {
                exporter
                    .counters
                    .retried_requests
                    .fetch_add(1, Ordering::Relaxed);
                let delay = after
                    .map_or(backoff, |after| after.max(backoff))
                    .min(options.max_backoff);
                if !failing {
                    tracing::warn!(exporter = %name, %reason, ?delay,
                        "the receiver is not taking data; retrying with back-off (logged again once it recovers)");
                } else {
                    tracing::debug!(exporter = %name, %reason, ?delay, "retrying");
                }
                failing = true;
                if sleep_or_stop(&mut stop, delay).await {
                    break;
                }
                backoff = (backoff * 2).min(options.max_backoff);
            }
        }
    }
}

/// Sleeps `delay`; true when stopped meanwhile.
async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|stop| *stop) => true,
    }
}

fn delivered(exporter: &Exporter, records: &[Record]) {
    let samples: u64 = records.iter().map(|record| record.samples as u64).sum();
    let counters = &exporter.counters;
    counters.sent_samples.fetch_add(samples, Ordering::Relaxed);
    counters.sent_requests.fetch_add(1, Ordering::Relaxed);
}

fn refused(exporter: &Exporter, record: &Record, reason: &str) {
    let counters = &exporter.counters;
    counters
        .failed_samples
        .fetch_add(record.samples as u64, Ordering::Relaxed);
    counters.failed_requests.fetch_add(1, Ordering::Relaxed);
    tracing::error!(exporter = %exporter.config.name, samples = record.samples, %reason,
        "the receiver refused a batch for good; dropped");
}

async fn ack(exporter: &Arc<Exporter>, seq: Option<u64>) {
    let Some(seq) = seq else { return };
    let queue = exporter.queue.clone();
    if let Err(error) = blocking(move || queue.ack(seq)).await {
        // The records stay queued and are sent again: at-least-once.
        tracing::error!(exporter = %exporter.config.name, %error, "cannot move the queue cursor");
    }
}

/// Sends `records` as one request.
async fn post(exporter: &Exporter, client: &reqwest::Client, records: &[Record]) -> Answer {
    let size = records.iter().map(|record| record.payload.len()).sum();
    let mut body = Vec::with_capacity(size);
    for record in records {
        body.extend_from_slice(&record.payload);
    }
    let config = &exporter.config;
    let mut request = client.post(&config.url);
    match config.kind {
        ExporterKind::Relay { compress } => {
            request = request
                .header("app", "lookoutgateway")
                .header("X-Lookout-Gateway", "1")
                .header("Content-Type", "application/json");
            if compress {
                body = lookout_gateway::compress_snappy_block(&body);
                request = request.header("Content-Encoding", "snappy");
            }
        }
        ExporterKind::RemoteWrite => {
            body = lookout_gateway::compress_snappy_block(&body);
            request = request
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .header("User-Agent", concat!("lookout/", env!("CARGO_PKG_VERSION")));
        }
    }
    request = match &config.auth {
        Auth::None => request,
        Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(error) => return Answer::Retry(error.to_string(), None),
    };
    let status = response.status();
    if status.is_success() {
        return Answer::Delivered;
    }
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let reason = format!("{status}: {}", text.chars().take(300).collect::<String>());
    if status.as_u16() == 429 || status.is_server_error() || !status.is_client_error() {
        Answer::Retry(reason, retry_after)
    } else {
        Answer::Permanent(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::{Labels, Sample, TimestampMs};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A scripted HTTP receiver on loopback: answers every request with the status `decide`
    /// gives for its body and the number of requests before it; keeps the bodies it answered
    /// with 2xx.
    struct Receiver {
        url: String,
        accepted: Arc<Mutex<Vec<String>>>,
    }

    async fn receiver(decide: impl Fn(&str, u64) -> u16 + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/datas", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let kept = accepted.clone();
        let decide = Arc::new(decide);
        let seen = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (decide, kept, seen) = (decide.clone(), kept.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let (head_end, length) = loop {
                        let read = stream.read(&mut buffer).await.unwrap();
                        assert!(read > 0, "the request ended early");
                        bytes.extend_from_slice(&buffer[..read]);
                        let text = String::from_utf8_lossy(&bytes).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|line| {
                                    let (name, value) = line.split_once(':')?;
                                    name.eq_ignore_ascii_case("content-length")
                                        .then(|| value.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            break (end + 4, length);
                        }
                    };
                    while bytes.len() < head_end + length {
                        let read = stream.read(&mut buffer).await.unwrap();
                        bytes.extend_from_slice(&buffer[..read]);
                    }
                    let body = String::from_utf8_lossy(&bytes[head_end..]).into_owned();
                    let status = decide(&body, seen.fetch_add(1, Ordering::SeqCst));
                    if (200..300).contains(&status) {
                        kept.lock().unwrap().push(body);
                    }
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver { url, accepted }
    }

    fn open_forwarder(dir: &std::path::Path, url: &str) -> Forwarder {
        let options = ForwardOptions {
            queue_dir: dir.to_path_buf(),
            queue_max_bytes: 1 << 20,
            fsync: false,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            request_timeout: Duration::from_secs(10),
            max_request_bytes: 1 << 20,
        };
        let exporter = ExporterConfig {
            name: "relay-0".into(),
            kind: ExporterKind::Relay { compress: false },
            url: url.into(),
            auth: Auth::None,
        };
        Forwarder::open(options, vec![exporter]).unwrap()
    }

    fn batch(name: &str) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.push(
            Labels::from_pairs([("__name__", name), ("host", "h")]).unwrap(),
            vec![Sample {
                timestamp: TimestampMs(1_000),
                value: 1.0,
            }],
        );
        batch
    }

    /// Waits (at most 10 s) until the queue is empty.
    async fn drained(forwarder: &Forwarder) {
        for _ in 0..500 {
            if forwarder.queue_stats("relay-0").unwrap().records == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the queue did not drain");
    }

    fn counter(forwarder: &Forwarder, pick: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        pick(&forwarder.exporters[0].counters).load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_refusal_drops_only_the_refused_batch() {
        let receiver = receiver(|body, _| if body.contains("bad") { 400 } else { 200 }).await;
        let dir = tempfile::tempdir().unwrap();
        let forwarder = open_forwarder(dir.path(), &receiver.url);
        // Queued before delivery starts: the first request carries all three.
        for name in ["good.one", "bad.one", "good.two"] {
            let outcome = forwarder.write(batch(name)).await.unwrap();
            assert_eq!(outcome.accepted, 1);
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = forwarder.spawn(stopped);
        drained(&forwarder).await;
        let accepted = receiver.accepted.lock().unwrap().clone();
        assert_eq!(accepted.len(), 2, "{accepted:?}");
        assert!(accepted[0].contains("\"good\":{\"one\""), "{accepted:?}");
        assert!(accepted[1].contains("\"good\":{\"two\""), "{accepted:?}");
        assert_eq!(counter(&forwarder, |c| &c.sent_samples), 2);
        assert_eq!(counter(&forwarder, |c| &c.failed_samples), 1);
        assert_eq!(counter(&forwarder, |c| &c.failed_requests), 1);
        assert_eq!(counter(&forwarder, |c| &c.retried_requests), 0);
        let mut metrics = String::new();
        forwarder.render_metrics(&mut metrics);
        assert!(
            metrics.contains("lookout_forward_samples_failed_total{exporter=\"relay-0\"} 1"),
            "{metrics}"
        );
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_receivers_are_retried_until_they_take_it() {
        // 503, 429, 500, then success.
        let receiver = receiver(|_, before| match before {
            0 => 503,
            1 => 429,
            2 => 500,
            _ => 204,
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let forwarder = open_forwarder(dir.path(), &receiver.url);
        forwarder.write(batch("m.v")).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = forwarder.spawn(stopped);
        drained(&forwarder).await;
        assert_eq!(receiver.accepted.lock().unwrap().len(), 1);
        assert_eq!(counter(&forwarder, |c| &c.retried_requests), 3);
        assert_eq!(counter(&forwarder, |c| &c.sent_samples), 1);
        assert_eq!(counter(&forwarder, |c| &c.failed_samples), 0);
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_exporter_has_its_own_queue() {
        let up = receiver(|_, _| 200).await;
        let down = receiver(|_, _| 503).await;
        let dir = tempfile::tempdir().unwrap();
        let exporter = |name: &str, url: &str| ExporterConfig {
            name: name.into(),
            kind: ExporterKind::Relay { compress: true },
            url: url.into(),
            auth: Auth::None,
        };
        let options = ForwardOptions {
            queue_dir: dir.path().to_path_buf(),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..ForwardOptions::default()
        };
        let duplicate = Forwarder::open(
            options.clone(),
            vec![exporter("a", &up.url), exporter("a", &down.url)],
        );
        assert!(matches!(duplicate, Err(ForwardError::DuplicateName(_))));
        let forwarder = Forwarder::open(
            options,
            vec![exporter("up", &up.url), exporter("down", &down.url)],
        )
        .unwrap();
        forwarder.write(batch("a.v")).await.unwrap();
        forwarder.write(batch("b.v")).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = forwarder.spawn(stopped);
        for _ in 0..500 {
            let retried = forwarder.exporters[1]
                .counters
                .retried_requests
                .load(Ordering::SeqCst);
            if forwarder.queue_stats("up").unwrap().records == 0 && retried > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(forwarder.queue_stats("up").unwrap().records, 0);
        assert_eq!(
            up.accepted.lock().unwrap().len(),
            1,
            "both batches in one request"
        );
        assert_eq!(forwarder.queue_stats("down").unwrap().records, 2);
        assert!(dir.path().join("up").is_dir() && dir.path().join("down").is_dir());
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_is_undelivered_at_a_stop_is_delivered_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on this port (bound, then closed).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nowhere = format!("http://{}/datas", closed.local_addr().unwrap());
        drop(closed);
        let forwarder = open_forwarder(dir.path(), &nowhere);
        forwarder.write(batch("a.v")).await.unwrap();
        forwarder.write(batch("b.v")).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = forwarder.spawn(stopped);
        for _ in 0..500 {
            if counter(&forwarder, |c| &c.retried_requests) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(counter(&forwarder, |c| &c.retried_requests) > 0);
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        drop(forwarder);

        let receiver = receiver(|_, _| 200).await;
        let forwarder = open_forwarder(dir.path(), &receiver.url);
        assert_eq!(forwarder.queue_stats("relay-0").unwrap().samples, 2);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = forwarder.spawn(stopped);
        drained(&forwarder).await;
        let accepted = receiver.accepted.lock().unwrap().concat();
        assert!(accepted.contains("\"a\":{\"v\"") && accepted.contains("\"b\":{\"v\""));
        assert_eq!(counter(&forwarder, |c| &c.sent_samples), 2);
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
    }
}
