//! The server's settings: a TOML file (`--config.file`) overridden by command-line flags
//! (and their environment variables), every one with a default so that no file is needed.
//!
//! ```toml
//! mode = "all"                # or "gateway": gateways only, forwarding to [forward]
//!
//! [storage]
//! path = "data"
//! retention_hours = 360
//! retention_bytes = 0
//! wal_fsync_always = false
//! out_of_order_window_minutes = 60
//! persist_head_on_shutdown = true
//! backend = "tsdb"            # or "es": Elasticsearch, settings in [storage.es]
//!
//! [storage.es]                 # only read with backend = "es"
//! url = "http://127.0.0.1:9200"
//! index = "metrics"            # indices metrics-YYYY.MM.DD-N, alias lookout-active-metrics
//! username = ""                # basic auth when non-empty
//! password = ""
//! auto_operations = true       # create template, first index and alias at start
//! maintenance = true           # rollover and retention every maintenance_interval
//! maintenance_interval = "10m"
//! shards = 3
//! replicas = 0
//! refresh = "wait_for"         # or "true", "false"
//! retry_budget = "10s"
//! rollover_max_age = "1d"      # "" disables a condition
//! rollover_max_docs = 100000000
//! rollover_max_size = ""
//! retention_days = 7           # 0 keeps every index
//! time_zone = "Asia/Shanghai"  # or "UTC", "+08:00"
//! pushdown = true              # sum/min/max/count/avg over a selector: latest sample per
//!                              # series and step computed by Elasticsearch
//!
//! [web]
//! listen_address = "0.0.0.0:9090"
//! enable_admin_api = false
//! max_in_flight_remote_writes = 256 # more remote writes at once get 503 + Retry-After; 0: unlimited
//!
//! [gateway]
//! listen_address = "0.0.0.0:7200"
//! max_active_series = 0        # cardinality budget (native store head series); 0: unlimited
//! max_in_flight_requests = 256 # more write requests at once get 503 + Retry-After; 0: unlimited
//! retry_after_seconds = 5
//! max_body_bytes = 33554432    # as sent
//! max_decompressed_bytes = 268435456
//! max_series_per_request = 1000000
//! max_labels_per_series = 64   # __name__ and common tags included
//! max_label_name_bytes = 256
//! max_label_value_bytes = 4096
//! tokens = []                  # valid tokens where one is asked for; empty: any non-empty one
//! require_token_everywhere = false # also on /datas, /lookout/metrics, /api/put, /_bulk, remote write, ...
//! max_sample_age = "2d"        # older samples of the push protocols are refused (too_old); "0": off
//!
//! [gateway.common_tags]        # added to every series the gateway receives, sender's win
//! dc = "gz"
//!
//! [gateway.rate_limits]        # push requests per second by app; "*": every other app; <= 0: unlimited
//! "*" = 0
//! demo = 50
//!
//! [gateway.token_apps]         # the app of a token, for rate limits of requests without an app header
//! s3cret = "demo"
//!
//! [management]                 # GET /ok, /cmd/down (refuse mode), /cmd/up
//! enabled = true
//! listen_address = "127.0.0.1:6200" # default: loopback, gateway port - 1000
//!
//! [opentsdb]
//! listen_address = "0.0.0.0:4242"
//! max_connections = 1024       # more telnet connections at once are refused; 0: unlimited
//!
//! [scrape]
//! config_file = "scrape.yml"       # Prometheus-style YAML (global, scrape_configs); unset: none
//! sofalookout_dir = "metric_scrape" # SOFALookout's directory of metric_scrape_configs files
//!
//! [forward]                  # gateway-only mode (mode = "gateway")
//! queue_dir = ""              # "": <storage.path>/forward-queue; one directory per exporter
//! queue_max_bytes = 1073741824 # per exporter; when full the oldest queued batches are dropped
//! queue_fsync = true          # fdatasync every batch before the gateway answers 200
//! min_backoff = "500ms"       # retry delay, doubling up to max_backoff
//! max_backoff = "30s"
//! request_timeout = "30s"
//! max_request_bytes = 4194304 # queued batches sent together, uncompressed
//!
//! [[forward.relay]]           # SOFALookout relay format to another gateway's /datas
//! url = "http://gw2:7200/datas"
//! compress = true
//! name = ""                   # "": relay-<n>; names the metrics and the queue directory
//!
//! [[forward.remote_write]]    # Prometheus remote write 1.0
//! url = "http://prometheus:9090/api/v1/write"
//! username = ""               # basic auth when non-empty
//! password = ""
//! bearer_token = ""
//! name = ""                   # "": remote_write-<n>
//!
//! [query]
//! timeout = "2m"
//! max_samples = 50000000
//! max_memory_bytes = 1073741824
//! lookback_delta = "5m"
//!
//! [log]
//! level = "info"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lookout_gateway::lookout::request::Tokens;
use lookout_gateway::pipeline::{CommonTags, Pipeline};
use lookout_gateway::DecodeLimits;
use lookout_model::LabelLimits;
use serde::{Deserialize, Serialize};

/// Command-line flags, named like Prometheus' where they mean the same thing. Each one left
/// out keeps the value of the configuration file, or the default.
#[derive(Debug, Default, Parser)]
#[command(name = "lookout-server", version, about = "Lookout metrics server")]
pub struct Args {
    /// TOML configuration file; flags given on the command line override its values.
    #[arg(long = "config.file", env = "LOOKOUT_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Data directory of the native store [default: data].
    #[arg(long = "storage.tsdb.path", env = "LOOKOUT_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Address of the query API and the remote-write receiver [default: 0.0.0.0:9090].
    #[arg(long = "web.listen-address", env = "LOOKOUT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve the admin endpoints (`/api/v1/admin/tsdb/...`): series deletion, snapshots.
    #[arg(long = "web.enable-admin-api")]
    pub enable_admin_api: bool,
    /// Remote-write requests the query API port serves at once; more are answered 503 with
    /// `Retry-After` (0: unlimited) [default: 256].
    #[arg(long = "web.max-in-flight-remote-writes")]
    pub max_in_flight_remote_writes: Option<usize>,
    /// Address of the gateway port (remote write at `/api/v1/write`, SOFALookout's `/datas`,
    /// `/lookout/metrics/...` and `/prom/metrics/...`) [default: 0.0.0.0:7200].
    #[arg(long = "gateway.listen-address", env = "LOOKOUT_GATEWAY_LISTEN")]
    pub gateway_listen: Option<SocketAddr>,
    /// The cardinality budget: most active series (series in the native store's head);
    /// beyond it samples of new series are refused as `series_limit`, samples of existing
    /// series are stored (0: unlimited) [default: 0].
    #[arg(long = "gateway.max-active-series")]
    pub max_active_series: Option<u64>,
    /// Write requests the gateway port serves at once; more are answered 503 with
    /// `Retry-After` (0: unlimited) [default: 256].
    #[arg(long = "gateway.max-in-flight-requests")]
    pub max_in_flight_requests: Option<usize>,
    /// `Retry-After` of the gateway port's 503 answers, in seconds [default: 5].
    #[arg(long = "gateway.retry-after-seconds")]
    pub retry_after_seconds: Option<u64>,
    /// Largest request body as sent, in bytes [default: 33554432].
    #[arg(long = "gateway.max-body-bytes")]
    pub max_body_bytes: Option<usize>,
    /// Largest request body after decompression, in bytes [default: 268435456].
    #[arg(long = "gateway.max-decompressed-bytes")]
    pub max_decompressed_bytes: Option<usize>,
    /// Most series in one request [default: 1000000].
    #[arg(long = "gateway.max-series-per-request")]
    pub max_series_per_request: Option<usize>,
    /// Most labels per series, `__name__` and common tags included [default: 64].
    #[arg(long = "gateway.max-labels-per-series")]
    pub max_labels_per_series: Option<usize>,
    /// Longest label name in bytes [default: 256].
    #[arg(long = "gateway.max-label-name-bytes")]
    pub max_label_name_bytes: Option<usize>,
    /// Longest label value in bytes [default: 4096].
    #[arg(long = "gateway.max-label-value-bytes")]
    pub max_label_value_bytes: Option<usize>,
    /// A valid token where the gateway asks for one; repeat for more (adds to the file's
    /// `[gateway] tokens`). None: any non-empty token is accepted.
    #[arg(
        long = "gateway.token",
        env = "LOOKOUT_GATEWAY_TOKENS",
        value_delimiter = ','
    )]
    pub tokens: Vec<String>,
    /// Ask every write request of the gateway port for a valid token, also on the routes
    /// where SOFALookout asked for none.
    #[arg(long = "gateway.require-token-everywhere")]
    pub require_token_everywhere: bool,
    /// A tag added to every series the gateway receives where the sender did not set it,
    /// as `name=value`; repeat for more (adds to the file's `[gateway.common_tags]`).
    #[arg(long = "gateway.common-tag", value_name = "NAME=VALUE")]
    pub common_tags: Vec<String>,
    /// Push requests per second an app may send to the gateway port, as `app=rate`; `*`
    /// is every app not listed, a rate <= 0 is unlimited; repeat for more (adds to the
    /// file's `[gateway.rate_limits]`).
    #[arg(long = "gateway.rate-limit", value_name = "APP=RATE")]
    pub rate_limits: Vec<String>,
    /// The app a token belongs to, as `token=app`, for the rate limits of requests without
    /// an `app` header; repeat for more (adds to the file's `[gateway.token_apps]`).
    #[arg(long = "gateway.token-app", value_name = "TOKEN=APP")]
    pub token_apps: Vec<String>,
    /// Samples of the push protocols older than this are refused as `too_old`, e.g. `2d`;
    /// `0` turns the check off [default: 2d].
    #[arg(long = "gateway.max-sample-age")]
    pub max_sample_age: Option<String>,
    /// Address of the management port (`/ok`, `/cmd/down`, `/cmd/up`)
    /// [default: 127.0.0.1 and the gateway port - 1000].
    #[arg(long = "management.listen-address", env = "LOOKOUT_MANAGEMENT_LISTEN")]
    pub management_listen: Option<SocketAddr>,
    /// Do not open the management port.
    #[arg(long = "management.disable")]
    pub management_disable: bool,
    /// Address of the OpenTSDB telnet listener (`put` lines) [default: 0.0.0.0:4242].
    #[arg(long = "opentsdb.listen-address", env = "LOOKOUT_OPENTSDB_LISTEN")]
    pub opentsdb_listen: Option<SocketAddr>,
    /// Telnet connections served at once; a further one gets an error line and is closed
    /// (0: unlimited) [default: 1024].
    #[arg(long = "opentsdb.max-connections")]
    pub opentsdb_max_connections: Option<usize>,
    /// Scrape configuration: Prometheus-style YAML with `global` and `scrape_configs`;
    /// re-read on SIGHUP.
    #[arg(long = "scrape.config-file", env = "LOOKOUT_SCRAPE_CONFIG")]
    pub scrape_config_file: Option<PathBuf>,
    /// SOFALookout's `metric_scrape/` directory: every file in it holds
    /// `metric_scrape_configs` jobs; rescanned every 60 s and on SIGHUP.
    #[arg(
        long = "scrape.sofalookout-dir",
        env = "LOOKOUT_SCRAPE_SOFALOOKOUT_DIR"
    )]
    pub scrape_sofalookout_dir: Option<PathBuf>,
    /// How long to keep data, in hours (0 keeps everything) [default: 360].
    #[arg(long = "storage.tsdb.retention.hours")]
    pub retention_hours: Option<u64>,
    /// Keep at most this many bytes of blocks (0: no size limit) [default: 0].
    #[arg(long = "storage.tsdb.retention.bytes")]
    pub retention_bytes: Option<u64>,
    /// Sync the WAL on every write (durable against power loss) instead of once a second.
    #[arg(long = "storage.wal.fsync-always")]
    pub fsync_always: bool,
    /// Accept samples up to this many minutes older than the newest one (0: in order only)
    /// [default: 60].
    #[arg(long = "storage.tsdb.out-of-order-window-minutes")]
    pub out_of_order_minutes: Option<i64>,
    /// At a graceful stop, write the in-memory head into compact blocks and empty the WAL, so
    /// the data takes less disk and the next start replays nothing (`false`: keep the WAL and
    /// replay it at start, as Prometheus does) [default: true].
    #[arg(long = "storage.tsdb.persist-head-on-shutdown", value_name = "BOOL")]
    pub persist_head_on_shutdown: Option<bool>,
    /// Longest a query may run, e.g. `2m` [default: 2m].
    #[arg(long = "query.timeout")]
    pub query_timeout: Option<String>,
    /// Most samples a query may hold in memory at once (a window function over a selector
    /// nothing else uses computes its read batch by batch, so only the batch counts)
    /// [default: 50000000].
    #[arg(long = "query.max-samples")]
    pub query_max_samples: Option<u64>,
    /// Most memory one query may use for samples and computed points, in bytes
    /// [default: 1073741824].
    #[arg(long = "query.max-memory-bytes")]
    pub query_max_memory_bytes: Option<u64>,
    /// How far back an instant selector looks for a sample, e.g. `5m` [default: 5m].
    #[arg(long = "query.lookback-delta")]
    pub query_lookback_delta: Option<String>,
    /// Storage backend: `tsdb` (the embedded native store) or `es` (Elasticsearch)
    /// [default: tsdb].
    #[arg(long = "storage", env = "LOOKOUT_STORAGE")]
    pub storage_backend: Option<String>,
    /// Elasticsearch URL for `--storage es` [default: http://127.0.0.1:9200].
    #[arg(long = "es-url", env = "LOOKOUT_ES_URL")]
    pub es_url: Option<String>,
    /// Base index name for `--storage es` [default: metrics].
    #[arg(long = "es-index")]
    pub es_index: Option<String>,
    /// Run no Elasticsearch rollover or retention in this process (a gateway-only process
    /// beside a server that does).
    #[arg(long = "es-no-maintenance")]
    pub es_no_maintenance: bool,
    /// Read raw samples for every query instead of letting Elasticsearch reduce the input of
    /// `sum`/`min`/`max`/`count`/`avg` to the latest sample per series and step (results are
    /// the same; for comparison and troubleshooting).
    #[arg(long = "es-no-pushdown")]
    pub es_no_pushdown: bool,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long = "log.level")]
    pub log_level: Option<tracing::Level>,
    /// `all` (gateways, store and query API in one process) or `gateway` (only the
    /// gateways, forwarding everything through an on-disk queue to the `--forward.*`
    /// exporters; no query API, no local store) [default: all].
    #[arg(long = "mode", env = "LOOKOUT_MODE")]
    pub mode: Option<String>,
    /// Gateway-only mode: relay to this SOFALookout/Lookout gateway URL (`.../datas`) in the
    /// SOFALookout relay format; repeat for more (adds to the file's `[[forward.relay]]`).
    #[arg(long = "forward.relay-url", value_delimiter = ',')]
    pub forward_relay_urls: Vec<String>,
    /// Snappy-compress the bodies of the `--forward.relay-url` exporters [default: true].
    #[arg(long = "forward.relay-compress", value_name = "BOOL")]
    pub forward_relay_compress: Option<bool>,
    /// Gateway-only mode: Prometheus remote write 1.0 to this URL; repeat for more (adds to
    /// the file's `[[forward.remote_write]]`).
    #[arg(long = "forward.remote-write-url", value_delimiter = ',')]
    pub forward_remote_write_urls: Vec<String>,
    /// Basic-auth user of the `--forward.remote-write-url` exporters.
    #[arg(long = "forward.remote-write-username")]
    pub forward_remote_write_username: Option<String>,
    /// Basic-auth password of the `--forward.remote-write-url` exporters.
    #[arg(
        long = "forward.remote-write-password",
        env = "LOOKOUT_FORWARD_REMOTE_WRITE_PASSWORD"
    )]
    pub forward_remote_write_password: Option<String>,
    /// Bearer token of the `--forward.remote-write-url` exporters.
    #[arg(
        long = "forward.remote-write-bearer-token",
        env = "LOOKOUT_FORWARD_REMOTE_WRITE_BEARER_TOKEN"
    )]
    pub forward_remote_write_bearer_token: Option<String>,
    /// Directory of the forwarding queues, one subdirectory per exporter
    /// [default: <storage.tsdb.path>/forward-queue].
    #[arg(long = "forward.queue-dir")]
    pub forward_queue_dir: Option<PathBuf>,
    /// Most bytes each exporter's queue may take on disk; when full the oldest queued
    /// batches are dropped (counted, logged) [default: 1073741824].
    #[arg(long = "forward.queue-max-bytes")]
    pub forward_queue_max_bytes: Option<u64>,
    /// fdatasync every queued batch before the gateway answers (`false`: survives a crash of
    /// the process, not of the machine) [default: true].
    #[arg(long = "forward.queue-fsync", value_name = "BOOL")]
    pub forward_queue_fsync: Option<bool>,
    /// First retry delay after a failed delivery, doubling up to `--forward.max-backoff`
    /// [default: 500ms].
    #[arg(long = "forward.min-backoff")]
    pub forward_min_backoff: Option<String>,
    /// Longest retry delay [default: 30s].
    #[arg(long = "forward.max-backoff")]
    pub forward_max_backoff: Option<String>,
}

/// The effective configuration; also the layout of the TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `--mode`: `all` or `gateway`.
    pub mode: String,
    /// The native store.
    pub storage: StorageConfig,
    /// The query API port.
    pub web: WebConfig,
    /// The gateway port.
    pub gateway: GatewayConfig,
    /// The management port.
    pub management: ManagementConfig,
    /// The OpenTSDB telnet port.
    pub opentsdb: OpenTsdbConfig,
    /// Scraping (pull).
    pub scrape: ScrapeConfig,
    /// The PromQL evaluator.
    pub query: QueryConfig,
    /// Logging.
    pub log: LogConfig,
    /// Gateway-only mode's exporters and queue.
    pub forward: ForwardConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: "all".into(),
            storage: StorageConfig::default(),
            web: WebConfig::default(),
            gateway: GatewayConfig::default(),
            management: ManagementConfig::default(),
            opentsdb: OpenTsdbConfig::default(),
            scrape: ScrapeConfig::default(),
            query: QueryConfig::default(),
            log: LogConfig::default(),
            forward: ForwardConfig::default(),
        }
    }
}

/// `[forward]`: where gateway-only mode sends what it receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// `--forward.queue-dir`; `None`: `<storage.path>/forward-queue`.
    pub queue_dir: Option<PathBuf>,
    /// `--forward.queue-max-bytes`, per exporter.
    pub queue_max_bytes: u64,
    /// `--forward.queue-fsync`
    pub queue_fsync: bool,
    /// `--forward.min-backoff`
    pub min_backoff: String,
    /// `--forward.max-backoff`
    pub max_backoff: String,
    /// Longest one request to a receiver may take.
    pub request_timeout: String,
    /// Most uncompressed bytes of queued batches sent in one request.
    pub max_request_bytes: usize,
    /// `[[forward.relay]]`, plus `--forward.relay-url`.
    pub relay: Vec<RelayExporterConfig>,
    /// `[[forward.remote_write]]`, plus `--forward.remote-write-url`.
    pub remote_write: Vec<RemoteWriteExporterConfig>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        let defaults = lookout_relay::ForwardOptions::default();
        ForwardConfig {
            queue_dir: None,
            queue_max_bytes: defaults.queue_max_bytes,
            queue_fsync: defaults.fsync,
            min_backoff: "500ms".into(),
            max_backoff: "30s".into(),
            request_timeout: "30s".into(),
            max_request_bytes: defaults.max_request_bytes,
            relay: Vec::new(),
            remote_write: Vec::new(),
        }
    }
}

/// `[[forward.relay]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayExporterConfig {
    /// The receiving gateway's `/datas` URL.
    pub url: String,
    /// Raw snappy bodies.
    pub compress: bool,
    /// Metrics label and queue directory; empty: `relay-<n>`.
    pub name: String,
}

impl Default for RelayExporterConfig {
    fn default() -> Self {
        RelayExporterConfig {
            url: String::new(),
            compress: true,
            name: String::new(),
        }
    }
}

/// `[[forward.remote_write]]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteWriteExporterConfig {
    /// The receiver's URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Basic auth when non-empty.
    pub username: String,
    pub password: String,
    /// `Authorization: Bearer` when non-empty.
    pub bearer_token: String,
    /// Metrics label and queue directory; empty: `remote_write-<n>`.
    pub name: String,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `--storage.tsdb.path`
    pub path: PathBuf,
    /// `--storage.tsdb.retention.hours`
    pub retention_hours: u64,
    /// `--storage.tsdb.retention.bytes`
    pub retention_bytes: u64,
    /// `--storage.wal.fsync-always`
    pub wal_fsync_always: bool,
    /// `--storage.tsdb.out-of-order-window-minutes`
    pub out_of_order_window_minutes: i64,
    /// `--storage.tsdb.persist-head-on-shutdown`
    pub persist_head_on_shutdown: bool,
    /// `--storage`: `tsdb` or `es`.
    pub backend: String,
    /// `[storage.es]`
    pub es: EsConfig,
}

/// `[storage.es]`: the Elasticsearch backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EsConfig {
    /// `--es-url`
    pub url: String,
    /// `--es-index`
    pub index: String,
    pub username: String,
    pub password: String,
    pub auto_operations: bool,
    /// `--es-no-maintenance` turns it off.
    pub maintenance: bool,
    pub maintenance_interval: String,
    pub shards: u32,
    pub replicas: u32,
    pub refresh: String,
    pub retry_budget: String,
    pub rollover_max_age: String,
    pub rollover_max_docs: u64,
    pub rollover_max_size: String,
    pub retention_days: u32,
    pub time_zone: String,
    /// Aggregation pushdown; `--es-no-pushdown` turns it off.
    pub pushdown: bool,
}

impl Default for EsConfig {
    fn default() -> Self {
        EsConfig {
            url: "http://127.0.0.1:9200".into(),
            index: "metrics".into(),
            username: String::new(),
            password: String::new(),
            auto_operations: true,
            maintenance: true,
            maintenance_interval: "10m".into(),
            shards: 3,
            replicas: 0,
            refresh: "wait_for".into(),
            retry_budget: "10s".into(),
            rollover_max_age: "1d".into(),
            rollover_max_docs: 100_000_000,
            rollover_max_size: String::new(),
            retention_days: 7,
            time_zone: "Asia/Shanghai".into(),
            pushdown: true,
        }
    }
}

impl EsConfig {
    /// The backend's options.
    pub fn options(&self) -> anyhow::Result<lookout_es::EsOptions> {
        let refresh = match self.refresh.as_str() {
            "wait_for" => lookout_es::RefreshPolicy::WaitFor,
            "true" => lookout_es::RefreshPolicy::Immediate,
            "false" => lookout_es::RefreshPolicy::None,
            other => {
                anyhow::bail!("invalid storage.es.refresh {other:?}: use wait_for, true or false")
            }
        };
        let time_zone = lookout_es::parse_time_zone(&self.time_zone).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid storage.es.time_zone {:?}: use UTC, Asia/Shanghai or an offset like +08:00",
                self.time_zone
            )
        })?;
        let retry_budget = positive_duration_ms("storage.es.retry_budget", &self.retry_budget)?;
        let interval = positive_duration_ms(
            "storage.es.maintenance_interval",
            &self.maintenance_interval,
        )?;
        let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        let mut options = lookout_es::EsOptions::new(self.url.clone())
            .index(self.index.clone())
            .auto_operations(self.auto_operations)
            .shards(self.shards, self.replicas)
            .refresh(refresh)
            .retry_budget(std::time::Duration::from_millis(retry_budget as u64))
            .maintenance_interval(std::time::Duration::from_millis(interval as u64))
            .rollover(
                non_empty(&self.rollover_max_age),
                (self.rollover_max_docs > 0).then_some(self.rollover_max_docs),
                non_empty(&self.rollover_max_size),
            )
            .retention(
                (self.retention_days > 0).then_some(self.retention_days),
                time_zone,
            );
        if !self.username.is_empty() {
            options = options.credentials(self.username.clone(), self.password.clone());
        }
        Ok(options)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("data"),
            retention_hours: 15 * 24,
            retention_bytes: 0,
            wal_fsync_always: false,
            out_of_order_window_minutes: 60,
            persist_head_on_shutdown: true,
            backend: "tsdb".into(),
            es: EsConfig::default(),
        }
    }
}

/// `[web]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// `--web.listen-address`
    pub listen_address: SocketAddr,
    /// `--web.enable-admin-api`
    pub enable_admin_api: bool,
    /// `--web.max-in-flight-remote-writes`: remote-write requests the port serves at once
    /// before answering 503 + `Retry-After` (`[gateway] retry_after_seconds`); 0 is
    /// unlimited.
    pub max_in_flight_remote_writes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen_address: SocketAddr::from(([0, 0, 0, 0], 9090)),
            enable_admin_api: false,
            max_in_flight_remote_writes: 256,
        }
    }
}

/// `[management]`: the management port (spec §3.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagementConfig {
    /// `--management.disable` turns it off.
    pub enabled: bool,
    /// `--management.listen-address`; unset: loopback on the gateway port − 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<SocketAddr>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            enabled: true,
            listen_address: None,
        }
    }
}

/// `[gateway]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// `--gateway.listen-address`
    pub listen_address: SocketAddr,
    /// `--gateway.max-active-series`: the cardinality budget of the native store (series in
    /// its head); 0 is unlimited.
    pub max_active_series: u64,
    /// `--gateway.max-in-flight-requests`: write requests the gateway port serves at once
    /// before answering 503 + `Retry-After`; 0 is unlimited.
    pub max_in_flight_requests: usize,
    /// `--gateway.retry-after-seconds`: the `Retry-After` of the port's 503 answers.
    pub retry_after_seconds: u64,
    /// `--gateway.max-body-bytes`: largest request body as sent (also the remote-write
    /// receiver of the query port and scraped bodies).
    pub max_body_bytes: usize,
    /// `--gateway.max-decompressed-bytes`: largest body after decompression.
    pub max_decompressed_bytes: usize,
    /// `--gateway.max-series-per-request`: most series (samples, for SOFALookout's
    /// protocols) in one request; more refuse the request whole (413 / 400).
    pub max_series_per_request: usize,
    /// `--gateway.max-labels-per-series`: labels per series, `__name__` and common tags
    /// included; a series with more is refused as `invalid_labels`.
    pub max_labels_per_series: usize,
    /// `--gateway.max-label-name-bytes`
    pub max_label_name_bytes: usize,
    /// `--gateway.max-label-value-bytes`: a longer value refuses the series (SOFALookout
    /// truncated it, changing the series' identity).
    pub max_label_value_bytes: usize,
    /// `--gateway.token` (repeatable): the valid tokens where a token is asked for; empty:
    /// any non-empty token (SOFALookout's default token service).
    pub tokens: Vec<String>,
    /// `--gateway.require-token-everywhere`: ask every write request of the gateway port
    /// for a valid token, also where SOFALookout asked for none (`/datas`, remote write,
    /// ...). Off by default.
    pub require_token_everywhere: bool,
    /// `--gateway.max-sample-age`: samples of the push protocols (not remote write, not
    /// scrapes) older than this are refused as `too_old` (spec §4.5); `"0"` is off.
    pub max_sample_age: String,
    /// `--gateway.common-tag name=value` (repeatable): tags added to every series the
    /// gateway port, the telnet listener and the scrape loops write, where the series does
    /// not set them.
    pub common_tags: BTreeMap<String, String>,
    /// `--gateway.rate-limit app=rate` (repeatable): push requests per second by app (`"*"`:
    /// every app not listed; <= 0: unlimited).
    pub rate_limits: BTreeMap<String, f64>,
    /// `--gateway.token-app token=app` (repeatable): the app of each token, for the rate
    /// limits of requests without an `app` header (it does not make a token valid).
    pub token_apps: BTreeMap<String, String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen_address: SocketAddr::from(([0, 0, 0, 0], 7200)),
            max_active_series: 0,
            max_in_flight_requests: 256,
            retry_after_seconds: 5,
            max_body_bytes: DecodeLimits::default().max_body_bytes,
            max_decompressed_bytes: DecodeLimits::default().max_decompressed_bytes,
            max_series_per_request: DecodeLimits::default().max_series_per_request,
            max_labels_per_series: LabelLimits::default().max_labels,
            max_label_name_bytes: LabelLimits::default().max_name_bytes,
            max_label_value_bytes: LabelLimits::default().max_value_bytes,
            tokens: Vec::new(),
            require_token_everywhere: false,
            max_sample_age: "2d".into(),
            common_tags: BTreeMap::new(),
            rate_limits: BTreeMap::new(),
            token_apps: BTreeMap::new(),
        }
    }
}

/// `[opentsdb]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenTsdbConfig {
    /// `--opentsdb.listen-address`
    pub listen_address: SocketAddr,
    /// `--opentsdb.max-connections`: connections served at once; 0 is unlimited.
    pub max_connections: usize,
}

impl Default for OpenTsdbConfig {
    fn default() -> Self {
        OpenTsdbConfig {
            listen_address: SocketAddr::from(([0, 0, 0, 0], 4242)),
            max_connections: 1024,
        }
    }
}

/// `[scrape]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeConfig {
    /// `--scrape.config-file`; `None`: no Prometheus-style scrape configuration.
    pub config_file: Option<PathBuf>,
    /// `--scrape.sofalookout-dir`; `None`: no SOFALookout jobs.
    pub sofalookout_dir: Option<PathBuf>,
}

/// `[query]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// `--query.timeout`, a duration such as `2m`.
    pub timeout: String,
    /// `--query.max-samples`
    pub max_samples: u64,
    /// `--query.max-memory-bytes`
    pub max_memory_bytes: u64,
    /// `--query.lookback-delta`, a duration such as `5m`.
    pub lookback_delta: String,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: "2m".into(),
            max_samples: 50_000_000,
            max_memory_bytes: 1 << 30,
            lookback_delta: "5m".into(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `--log.level`
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Config {
    /// The file named by `--config.file` (defaults when none), then the flags given.
    pub fn load(args: &Args) -> anyhow::Result<Config> {
        let mut config = match &args.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("in the configuration {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_flags(args);
        for text in &args.common_tags {
            let (name, value) = CommonTags::parse_pair(text)
                .with_context(|| "in --gateway.common-tag".to_owned())?;
            config.gateway.common_tags.insert(name, value);
        }
        for text in &args.rate_limits {
            let (app, rate) = parse_rate_limit(text)?;
            config.gateway.rate_limits.insert(app, rate);
        }
        for text in &args.token_apps {
            let pair = text
                .split_once('=')
                .map(|(token, app)| (token.trim(), app.trim()))
                .filter(|(token, app)| !token.is_empty() && !app.is_empty());
            let Some((token, app)) = pair else {
                anyhow::bail!("invalid --gateway.token-app: expected token=app");
            };
            config
                .gateway
                .token_apps
                .insert(token.to_owned(), app.to_owned());
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_flags(&mut self, args: &Args) {
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *target = value.clone();
            }
        }
        set(&mut self.storage.path, &args.data_dir);
        set(&mut self.storage.retention_hours, &args.retention_hours);
        set(&mut self.storage.retention_bytes, &args.retention_bytes);
        set(
            &mut self.storage.out_of_order_window_minutes,
            &args.out_of_order_minutes,
        );
        set(
            &mut self.storage.persist_head_on_shutdown,
            &args.persist_head_on_shutdown,
        );
        self.storage.wal_fsync_always |= args.fsync_always;
        set(&mut self.storage.backend, &args.storage_backend);
        set(&mut self.storage.es.url, &args.es_url);
        set(&mut self.storage.es.index, &args.es_index);
        if args.es_no_maintenance {
            self.storage.es.maintenance = false;
        }
        if args.es_no_pushdown {
            self.storage.es.pushdown = false;
        }
        set(&mut self.web.listen_address, &args.listen);
        self.web.enable_admin_api |= args.enable_admin_api;
        set(
            &mut self.web.max_in_flight_remote_writes,
            &args.max_in_flight_remote_writes,
        );
        if args.management_listen.is_some() {
            self.management.listen_address = args.management_listen;
        }
        if args.management_disable {
            self.management.enabled = false;
        }
        set(
            &mut self.opentsdb.max_connections,
            &args.opentsdb_max_connections,
        );
        set(&mut self.gateway.max_sample_age, &args.max_sample_age);
        set(&mut self.gateway.listen_address, &args.gateway_listen);
        set(&mut self.gateway.max_active_series, &args.max_active_series);
        set(
            &mut self.gateway.max_in_flight_requests,
            &args.max_in_flight_requests,
        );
        set(
            &mut self.gateway.retry_after_seconds,
            &args.retry_after_seconds,
        );
        let gateway = &mut self.gateway;
        gateway.tokens.extend(args.tokens.iter().cloned());
        gateway.require_token_everywhere |= args.require_token_everywhere;
        set(&mut gateway.max_body_bytes, &args.max_body_bytes);
        set(
            &mut gateway.max_decompressed_bytes,
            &args.max_decompressed_bytes,
        );
        set(
            &mut gateway.max_series_per_request,
            &args.max_series_per_request,
        );
        set(
            &mut gateway.max_labels_per_series,
            &args.max_labels_per_series,
        );
        set(
            &mut gateway.max_label_name_bytes,
            &args.max_label_name_bytes,
        );
        set(
            &mut gateway.max_label_value_bytes,
            &args.max_label_value_bytes,
        );
        set(&mut self.opentsdb.listen_address, &args.opentsdb_listen);
        if args.scrape_config_file.is_some() {
            self.scrape.config_file = args.scrape_config_file.clone();
        }
        if args.scrape_sofalookout_dir.is_some() {
            self.scrape.sofalookout_dir = args.scrape_sofalookout_dir.clone();
        }
        set(&mut self.query.timeout, &args.query_timeout);
        set(&mut self.query.max_samples, &args.query_max_samples);
        set(
            &mut self.query.max_memory_bytes,
            &args.query_max_memory_bytes,
        );
        set(&mut self.query.lookback_delta, &args.query_lookback_delta);
        if let Some(level) = args.log_level {
            self.log.level = level.to_string().to_lowercase();
        }
        set(&mut self.mode, &args.mode);
        let forward = &mut self.forward;
        for url in &args.forward_relay_urls {
            forward.relay.push(RelayExporterConfig {
                url: url.clone(),
                compress: args.forward_relay_compress.unwrap_or(true),
                name: String::new(),
            });
        }
        for url in &args.forward_remote_write_urls {
            forward.remote_write.push(RemoteWriteExporterConfig {
                url: url.clone(),
                username: args
                    .forward_remote_write_username
                    .clone()
                    .unwrap_or_default(),
                password: args
                    .forward_remote_write_password
                    .clone()
                    .unwrap_or_default(),
                bearer_token: args
                    .forward_remote_write_bearer_token
                    .clone()
                    .unwrap_or_default(),
                name: String::new(),
            });
        }
        if args.forward_queue_dir.is_some() {
            forward.queue_dir = args.forward_queue_dir.clone();
        }
        set(&mut forward.queue_max_bytes, &args.forward_queue_max_bytes);
        set(&mut forward.queue_fsync, &args.forward_queue_fsync);
        set(&mut forward.min_backoff, &args.forward_min_backoff);
        set(&mut forward.max_backoff, &args.forward_max_backoff);
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.log_level()?;
        self.query_timeout()?;
        self.lookback_delta_ms()?;
        anyhow::ensure!(
            self.storage.out_of_order_window_minutes >= 0,
            "storage.out_of_order_window_minutes must not be negative"
        );
        self.common_tags()?;
        let gateway = &self.gateway;
        for (name, value) in [
            ("max_body_bytes", gateway.max_body_bytes),
            ("max_decompressed_bytes", gateway.max_decompressed_bytes),
            ("max_series_per_request", gateway.max_series_per_request),
            ("max_labels_per_series", gateway.max_labels_per_series),
            ("max_label_name_bytes", gateway.max_label_name_bytes),
            ("max_label_value_bytes", gateway.max_label_value_bytes),
        ] {
            anyhow::ensure!(value > 0, "gateway.{name} must be greater than zero");
        }
        anyhow::ensure!(
            self.gateway
                .tokens
                .iter()
                .all(|token| !token.trim().is_empty()),
            "gateway.tokens must not hold an empty token"
        );
        self.max_sample_age_ms()?;
        for (app, rate) in &self.gateway.rate_limits {
            anyhow::ensure!(
                !app.trim().is_empty() && rate.is_finite(),
                "gateway.rate_limits: {app:?} = {rate} is not an app and a rate in requests per second"
            );
        }
        self.management_address()?;
        anyhow::ensure!(
            self.gateway
                .token_apps
                .iter()
                .all(|(token, app)| !token.trim().is_empty() && !app.trim().is_empty()),
            "gateway.token_apps must map non-empty tokens to non-empty apps"
        );
        match self.storage.backend.as_str() {
            "tsdb" => {}
            "es" => {
                self.storage.es.options()?;
                anyhow::ensure!(
                    self.gateway.max_active_series == 0,
                    "gateway.max_active_series is not implemented for the es backend \
                     (the budget counts the native store's head series)"
                );
            }
            other => anyhow::bail!("unknown storage backend {other:?}: use tsdb or es"),
        }
        match self.mode.as_str() {
            "all" => anyhow::ensure!(
                self.forward.relay.is_empty() && self.forward.remote_write.is_empty(),
                "forward exporters are only used with mode = \"gateway\" (--mode gateway)"
            ),
            "gateway" => {
                self.forward_setup()?;
            }
            other => anyhow::bail!("unknown mode {other:?}: use all or gateway"),
        }
        Ok(())
    }

    /// Whether this process runs only the gateways (`--mode gateway`).
    pub fn gateway_only(&self) -> bool {
        self.mode == "gateway"
    }

    /// Gateway-only mode's queue settings and exporters, checked.
    pub fn forward_setup(
        &self,
    ) -> anyhow::Result<(
        lookout_relay::ForwardOptions,
        Vec<lookout_relay::ExporterConfig>,
    )> {
        let forward = &self.forward;
        let duration = |name: &str, text: &str| -> anyhow::Result<std::time::Duration> {
            let millis = positive_duration_ms(name, text)?;
            Ok(std::time::Duration::from_millis(millis as u64))
        };
        let options = lookout_relay::ForwardOptions {
            queue_dir: forward
                .queue_dir
                .clone()
                .unwrap_or_else(|| self.storage.path.join("forward-queue")),
            queue_max_bytes: forward.queue_max_bytes,
            fsync: forward.queue_fsync,
            min_backoff: duration("forward.min_backoff", &forward.min_backoff)?,
            max_backoff: duration("forward.max_backoff", &forward.max_backoff)?,
            request_timeout: duration("forward.request_timeout", &forward.request_timeout)?,
            max_request_bytes: forward.max_request_bytes,
        };
        anyhow::ensure!(
            options.min_backoff <= options.max_backoff,
            "forward.min_backoff must not be longer than forward.max_backoff"
        );
        anyhow::ensure!(
            forward.queue_max_bytes >= 1 << 20,
            "forward.queue_max_bytes must be at least 1 MiB, got {}",
            forward.queue_max_bytes
        );
        anyhow::ensure!(
            forward.max_request_bytes > 0,
            "forward.max_request_bytes must be greater than zero"
        );
        let check_url = |kind: &str, url: &str| -> anyhow::Result<()> {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("invalid forward.{kind} url {url:?}"))?;
            anyhow::ensure!(
                parsed.scheme() == "http",
                "forward.{kind} url {url:?} must be http:// (no TLS client is built in)"
            );
            Ok(())
        };
        let name_of = |name: &str, kind: &str, index: usize| -> anyhow::Result<String> {
            if name.is_empty() {
                return Ok(format!("{kind}-{index}"));
            }
            anyhow::ensure!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                    && !name.starts_with('.'),
                "forward.{kind} name {name:?}: use letters, digits, '_', '-' and '.'"
            );
            Ok(name.to_owned())
        };
        let mut exporters = Vec::new();
        for (index, relay) in forward.relay.iter().enumerate() {
            check_url("relay", &relay.url)?;
            exporters.push(lookout_relay::ExporterConfig {
                name: name_of(&relay.name, "relay", index)?,
                kind: lookout_relay::ExporterKind::Relay {
                    compress: relay.compress,
                },
                url: relay.url.clone(),
                auth: lookout_relay::Auth::None,
            });
        }
        for (index, remote) in forward.remote_write.iter().enumerate() {
            check_url("remote_write", &remote.url)?;
            anyhow::ensure!(
                remote.username.is_empty() || remote.bearer_token.is_empty(),
                "forward.remote_write {}: set username/password or bearer_token, not both",
                remote.url
            );
            let auth = if !remote.bearer_token.is_empty() {
                lookout_relay::Auth::Bearer(remote.bearer_token.clone())
            } else if !remote.username.is_empty() {
                lookout_relay::Auth::Basic {
                    username: remote.username.clone(),
                    password: remote.password.clone(),
                }
            } else {
                lookout_relay::Auth::None
            };
            exporters.push(lookout_relay::ExporterConfig {
                name: name_of(&remote.name, "remote_write", index)?,
                kind: lookout_relay::ExporterKind::RemoteWrite,
                url: remote.url.clone(),
                auth,
            });
        }
        anyhow::ensure!(
            !exporters.is_empty(),
            "mode = \"gateway\" needs an exporter: --forward.relay-url, \
             --forward.remote-write-url or [[forward.relay]] / [[forward.remote_write]]"
        );
        for (at, exporter) in exporters.iter().enumerate() {
            anyhow::ensure!(
                exporters[..at]
                    .iter()
                    .all(|other| other.name != exporter.name),
                "two forward exporters are named {:?}",
                exporter.name
            );
        }
        Ok((options, exporters))
    }

    /// `[gateway] common_tags` checked.
    pub fn common_tags(&self) -> anyhow::Result<CommonTags> {
        CommonTags::new(self.gateway.common_tags.clone()).context("in gateway.common_tags")
    }

    /// The decoders' size limits from `[gateway]`.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_body_bytes: self.gateway.max_body_bytes,
            max_decompressed_bytes: self.gateway.max_decompressed_bytes,
            max_series_per_request: self.gateway.max_series_per_request,
        }
    }

    /// The label limits from `[gateway]`.
    pub fn label_limits(&self) -> LabelLimits {
        LabelLimits {
            max_labels: self.gateway.max_labels_per_series,
            max_name_bytes: self.gateway.max_label_name_bytes,
            max_value_bytes: self.gateway.max_label_value_bytes,
            ..LabelLimits::default()
        }
    }

    /// What every gateway write goes through: common tags, then the label limits.
    pub fn pipeline(&self) -> anyhow::Result<Pipeline> {
        Ok(Pipeline {
            common_tags: self.common_tags()?,
            label_limits: self.label_limits(),
        })
    }

    /// `[gateway] max_sample_age` in milliseconds (`None`: off).
    pub fn max_sample_age_ms(&self) -> anyhow::Result<Option<i64>> {
        let text = self.gateway.max_sample_age.trim();
        let millis = lookout_promql::parse_duration(text)
            .map_err(|error| anyhow::anyhow!("invalid gateway.max_sample_age {text:?}: {error}"))?;
        Ok((millis > 0).then_some(millis))
    }

    /// `[gateway.rate_limits]` as the limiters.
    pub fn rate_limits(&self) -> crate::gateway::ratelimit::RateLimits {
        let token_apps = self
            .gateway
            .token_apps
            .iter()
            .map(|(token, app)| (token.trim().to_owned(), app.trim().to_owned()))
            .collect();
        crate::gateway::ratelimit::RateLimits::new(&self.gateway.rate_limits)
            .with_token_apps(token_apps)
    }

    /// Where the management port listens (`None`: disabled): the configured address, else
    /// loopback on the gateway port − 1000 (SOFALookout's rule; it listened on every
    /// interface).
    pub fn management_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        if !self.management.enabled {
            return Ok(None);
        }
        if let Some(address) = self.management.listen_address {
            return Ok(Some(address));
        }
        let port = self.gateway.listen_address.port();
        anyhow::ensure!(
            port > 1000,
            "the management port defaults to the gateway port - 1000, which gateway port \
             {port} does not allow: set management.listen_address or disable the port"
        );
        Ok(Some(SocketAddr::from(([127, 0, 0, 1], port - 1000))))
    }

    /// `[gateway] tokens` as the token service.
    pub fn tokens(&self) -> Tokens {
        Tokens::only(
            self.gateway
                .tokens
                .iter()
                .map(|token| token.trim().to_owned()),
        )
    }

    /// `[gateway] max_active_series` as the store's option (`None`: unlimited).
    pub fn max_active_series(&self) -> Option<u64> {
        (self.gateway.max_active_series > 0).then_some(self.gateway.max_active_series)
    }

    /// `[log] level` parsed.
    pub fn log_level(&self) -> anyhow::Result<tracing::Level> {
        self.log
            .level
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid log level {:?}", self.log.level))
    }

    /// `[query] timeout` parsed.
    pub fn query_timeout(&self) -> anyhow::Result<std::time::Duration> {
        let millis = positive_duration_ms("query.timeout", &self.query.timeout)?;
        Ok(std::time::Duration::from_millis(millis as u64))
    }

    /// `[query] lookback_delta` parsed, in milliseconds.
    pub fn lookback_delta_ms(&self) -> anyhow::Result<i64> {
        positive_duration_ms("query.lookback_delta", &self.query.lookback_delta)
    }

    /// The engine's options from `[query]`.
    pub fn engine_options(&self) -> anyhow::Result<lookout_promql::EngineOptions> {
        Ok(lookout_promql::EngineOptions {
            timeout: self.query_timeout()?,
            max_samples: self.query.max_samples,
            max_memory_bytes: self.query.max_memory_bytes,
            lookback_delta_ms: self.lookback_delta_ms()?,
            // Only the Elasticsearch backend declares pushdown; the switch lives with it.
            pushdown: self.storage.es.pushdown,
            ..lookout_promql::EngineOptions::default()
        })
    }

    /// Every flag with its effective value, for `/api/v1/status/flags`.
    pub fn flags(&self, config_file: Option<&std::path::Path>) -> Vec<(String, String)> {
        let flag = |name: &str, value: String| (name.to_owned(), value);
        vec![
            flag(
                "config.file",
                config_file.map_or(String::new(), |path| path.display().to_string()),
            ),
            flag("storage", self.storage.backend.clone()),
            flag("es-url", self.storage.es.url.clone()),
            flag("es-no-pushdown", (!self.storage.es.pushdown).to_string()),
            flag("storage.tsdb.path", self.storage.path.display().to_string()),
            flag("web.listen-address", self.web.listen_address.to_string()),
            flag(
                "web.enable-admin-api",
                self.web.enable_admin_api.to_string(),
            ),
            flag(
                "web.max-in-flight-remote-writes",
                self.web.max_in_flight_remote_writes.to_string(),
            ),
            flag(
                "gateway.listen-address",
                self.gateway.listen_address.to_string(),
            ),
            flag(
                "gateway.max-sample-age",
                self.gateway.max_sample_age.clone(),
            ),
            flag(
                "gateway.rate-limit",
                self.gateway
                    .rate_limits
                    .iter()
                    .map(|(app, rate)| format!("{app}={rate}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            flag(
                "gateway.token-app",
                self.gateway
                    .token_apps
                    .values()
                    .map(|app| format!("<secret>={app}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            flag(
                "management.listen-address",
                self.management_address()
                    .ok()
                    .flatten()
                    .map_or(String::new(), |address| address.to_string()),
            ),
            flag("management.disable", (!self.management.enabled).to_string()),
            flag(
                "opentsdb.max-connections",
                self.opentsdb.max_connections.to_string(),
            ),
            flag(
                "gateway.max-active-series",
                self.gateway.max_active_series.to_string(),
            ),
            flag(
                "gateway.max-in-flight-requests",
                self.gateway.max_in_flight_requests.to_string(),
            ),
            flag(
                "gateway.retry-after-seconds",
                self.gateway.retry_after_seconds.to_string(),
            ),
            flag(
                "gateway.max-body-bytes",
                self.gateway.max_body_bytes.to_string(),
            ),
            flag(
                "gateway.max-decompressed-bytes",
                self.gateway.max_decompressed_bytes.to_string(),
            ),
            flag(
                "gateway.max-series-per-request",
                self.gateway.max_series_per_request.to_string(),
            ),
            flag(
                "gateway.max-labels-per-series",
                self.gateway.max_labels_per_series.to_string(),
            ),
            flag(
                "gateway.max-label-name-bytes",
                self.gateway.max_label_name_bytes.to_string(),
            ),
            flag(
                "gateway.max-label-value-bytes",
                self.gateway.max_label_value_bytes.to_string(),
            ),
            flag(
                "gateway.token",
                if self.gateway.tokens.is_empty() {
                    String::new()
                } else {
                    "<secret>".to_owned()
                },
            ),
            flag(
                "gateway.require-token-everywhere",
                self.gateway.require_token_everywhere.to_string(),
            ),
            flag(
                "gateway.common-tag",
                self.gateway
                    .common_tags
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            flag(
                "opentsdb.listen-address",
                self.opentsdb.listen_address.to_string(),
            ),
            flag(
                "scrape.config-file",
                self.scrape
                    .config_file
                    .as_ref()
                    .map_or(String::new(), |path| path.display().to_string()),
            ),
            flag(
                "scrape.sofalookout-dir",
                self.scrape
                    .sofalookout_dir
                    .as_ref()
                    .map_or(String::new(), |path| path.display().to_string()),
            ),
            flag(
                "storage.tsdb.retention.hours",
                self.storage.retention_hours.to_string(),
            ),
            flag(
                "storage.tsdb.retention.bytes",
                self.storage.retention_bytes.to_string(),
            ),
            flag(
                "storage.wal.fsync-always",
                self.storage.wal_fsync_always.to_string(),
            ),
            flag(
                "storage.tsdb.out-of-order-window-minutes",
                self.storage.out_of_order_window_minutes.to_string(),
            ),
            flag(
                "storage.tsdb.persist-head-on-shutdown",
                self.storage.persist_head_on_shutdown.to_string(),
            ),
            flag("query.timeout", self.query.timeout.clone()),
            flag("query.max-samples", self.query.max_samples.to_string()),
            flag(
                "query.max-memory-bytes",
                self.query.max_memory_bytes.to_string(),
            ),
            flag("query.lookback-delta", self.query.lookback_delta.clone()),
            flag("log.level", self.log.level.clone()),
            flag("mode", self.mode.clone()),
            flag(
                "forward.relay-url",
                self.forward
                    .relay
                    .iter()
                    .map(|relay| relay.url.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            flag(
                "forward.remote-write-url",
                self.forward
                    .remote_write
                    .iter()
                    .map(|remote| remote.url.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            flag(
                "forward.queue-dir",
                self.forward
                    .queue_dir
                    .as_ref()
                    .map_or(String::new(), |path| path.display().to_string()),
            ),
            flag(
                "forward.queue-max-bytes",
                self.forward.queue_max_bytes.to_string(),
            ),
            flag("forward.queue-fsync", self.forward.queue_fsync.to_string()),
            flag("forward.min-backoff", self.forward.min_backoff.clone()),
            flag("forward.max-backoff", self.forward.max_backoff.clone()),
        ]
    }

    /// The effective configuration as TOML, for `/api/v1/status/config`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.storage.es.password.is_empty() {
            shown.storage.es.password = "<secret>".into();
        }
        for token in &mut shown.gateway.tokens {
            *token = "<secret>".into();
        }
        shown.gateway.token_apps = shown
            .gateway
            .token_apps
            .values()
            .enumerate()
            .map(|(index, app)| (format!("<secret {}>", index + 1), app.clone()))
            .collect();
        for remote in &mut shown.forward.remote_write {
            for secret in [&mut remote.password, &mut remote.bearer_token] {
                if !secret.is_empty() {
                    *secret = "<secret>".into();
                }
            }
        }
        toml::to_string(&shown).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }

    /// Retention as Prometheus' runtime info shows it: `15d`, `512MiB`, `15d or 512MiB`.
    pub fn retention_text(&self) -> String {
        let mut parts = Vec::new();
        if self.storage.retention_hours > 0 {
            let millis = (self.storage.retention_hours as i64).saturating_mul(3_600_000);
            parts.push(lookout_promql::format_duration(millis));
        }
        if self.storage.retention_bytes > 0 {
            parts.push(format_bytes(self.storage.retention_bytes));
        }
        parts.join(" or ")
    }
}

/// `app=rate` of `--gateway.rate-limit`.
fn parse_rate_limit(text: &str) -> anyhow::Result<(String, f64)> {
    let parsed = text.split_once('=').and_then(|(app, rate)| {
        let rate: f64 = rate.trim().parse().ok()?;
        let app = app.trim();
        (!app.is_empty() && rate.is_finite()).then(|| (app.to_owned(), rate))
    });
    parsed.ok_or_else(|| {
        anyhow::anyhow!(
            "invalid --gateway.rate-limit {text:?}: expected app=requests-per-second, e.g. demo=50 or '*=10'"
        )
    })
}

fn positive_duration_ms(name: &str, text: &str) -> anyhow::Result<i64> {
    let millis = lookout_promql::parse_duration(text)
        .map_err(|error| anyhow::anyhow!("invalid {name} {text:?}: {error}"))?;
    anyhow::ensure!(millis > 0, "{name} must be greater than zero, got {text:?}");
    Ok(millis)
}

/// Bytes in the largest binary unit that divides them exactly (`512MiB`, `1000B`).
fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(&Args::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.storage.path, PathBuf::from("data"));
        assert_eq!(config.web.listen_address.port(), 9090);
        assert_eq!(config.gateway.listen_address.port(), 7200);
        assert_eq!(config.opentsdb.listen_address.port(), 4242);
        assert_eq!(config.retention_text(), "15d");
        let engine = config.engine_options().unwrap();
        assert_eq!(engine.timeout, std::time::Duration::from_secs(120));
        assert_eq!(engine.lookback_delta_ms, 300_000);
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(
            &path,
            "[web]\nenable_admin_api = true\n[query]\ntimeout = \"1m\"\nmax_samples = 10\n\
             [storage]\nretention_bytes = 536870912\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "lookout-server",
            "--config.file",
            path.to_str().unwrap(),
            "--query.timeout",
            "30s",
            "--scrape.config-file",
            "scrape.yml",
        ])
        .unwrap();
        let config = Config::load(&args).unwrap();
        assert!(config.web.enable_admin_api);
        assert_eq!(config.query.timeout, "30s", "the flag wins");
        assert_eq!(
            config.query.max_samples, 10,
            "the file wins over the default"
        );
        assert_eq!(config.retention_text(), "15d or 512MiB");
        assert_eq!(
            config.scrape.config_file.as_deref(),
            Some(std::path::Path::new("scrape.yml"))
        );
        assert_eq!(config.scrape.sofalookout_dir, None);
        // The rendered configuration reads back as the same configuration.
        let again: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn gateway_pipeline_settings_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(
            &path,
            "[gateway]\nmax_active_series = 1000\n[gateway.common_tags]\ndc = \"gz\"\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "lookout-server",
            "--config.file",
            path.to_str().unwrap(),
            "--gateway.common-tag",
            "env=prod",
            "--gateway.max-in-flight-requests",
            "8",
            "--gateway.max-labels-per-series",
            "20",
            "--gateway.token",
            "t1,t2",
        ])
        .unwrap();
        let config = Config::load(&args).unwrap();
        assert_eq!(config.max_active_series(), Some(1000));
        assert_eq!(config.gateway.max_in_flight_requests, 8);
        assert_eq!(config.gateway.retry_after_seconds, 5);
        assert_eq!(config.label_limits().max_labels, 20);
        assert_eq!(config.tokens(), Tokens::only(["t1".into(), "t2".into()]));
        assert!(!config.to_toml().contains("t1"), "tokens are not shown");
        assert!(!config.gateway.require_token_everywhere);
        assert_eq!(config.decode_limits(), DecodeLimits::default());
        let tags = config.common_tags().unwrap();
        assert_eq!(config.pipeline().unwrap().common_tags, tags);
        assert_eq!(
            tags.iter().collect::<Vec<_>>(),
            [("dc", "gz"), ("env", "prod")]
        );
        let again: Config = toml::from_str(&config.to_toml()).unwrap();
        let mut shown = config.clone();
        shown.gateway.tokens = vec!["<secret>".into(), "<secret>".into()];
        assert_eq!(again, shown, "everything but the tokens reads back");
        assert_eq!(Config::default().max_active_series(), None);

        for bad in ["env", "__name__=x", "9x=y"] {
            let args = Args {
                common_tags: vec![bad.into()],
                ..Args::default()
            };
            assert!(Config::load(&args).is_err(), "{bad}");
        }
        let args = Args {
            max_labels_per_series: Some(0),
            ..Args::default()
        };
        assert!(Config::load(&args).is_err());
        let args = Args {
            storage_backend: Some("es".into()),
            max_active_series: Some(10),
            ..Args::default()
        };
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("not implemented"), "{error}");
    }

    #[test]
    fn management_rate_limits_age_and_bounds_from_file_and_flags() {
        let config = Config::default();
        assert_eq!(
            config.management_address().unwrap(),
            Some("127.0.0.1:6200".parse().unwrap()),
            "loopback, gateway port - 1000"
        );
        assert_eq!(config.max_sample_age_ms().unwrap(), Some(2 * 86_400_000));
        assert!(!config.rate_limits().is_active());
        assert_eq!(config.web.max_in_flight_remote_writes, 256);
        assert_eq!(config.opentsdb.max_connections, 1024);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(
            &path,
            "[gateway]\nlisten_address = \"0.0.0.0:7300\"\nmax_sample_age = \"0\"\n\
             [gateway.rate_limits]\n\"*\" = 10\ndemo = 0.5\n[opentsdb]\nmax_connections = 8\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "lookout-server",
            "--config.file",
            path.to_str().unwrap(),
            "--gateway.rate-limit",
            "demo=2",
            "--gateway.rate-limit",
            "free=-1",
            "--web.max-in-flight-remote-writes",
            "4",
            "--gateway.token-app",
            "tok=demo",
        ])
        .unwrap();
        let config = Config::load(&args).unwrap();
        assert_eq!(config.rate_limits().token_app("tok"), Some("demo"));
        let shown = config.to_toml();
        assert!(
            !shown.contains("\"tok\"") && shown.contains("\"<secret 1>\" = \"demo\""),
            "{shown}"
        );
        assert_eq!(
            config.management_address().unwrap(),
            Some("127.0.0.1:6300".parse().unwrap())
        );
        assert_eq!(config.max_sample_age_ms().unwrap(), None, "0 is off");
        assert_eq!(
            config.gateway.rate_limits,
            BTreeMap::from([
                ("*".into(), 10.0),
                ("demo".into(), 2.0),
                ("free".into(), -1.0)
            ]),
            "the flag wins for demo"
        );
        assert!(config.rate_limits().is_active());
        assert_eq!(config.web.max_in_flight_remote_writes, 4);
        assert_eq!(config.opentsdb.max_connections, 8);
        let mut again: Config = toml::from_str(&config.to_toml()).unwrap();
        again.gateway.token_apps = config.gateway.token_apps.clone();
        assert_eq!(again, config, "everything but the tokens reads back");

        let args = Args::try_parse_from([
            "lookout-server",
            "--management.listen-address",
            "0.0.0.0:1234",
        ])
        .unwrap();
        let config = Config::load(&args).unwrap();
        assert_eq!(
            config.management_address().unwrap(),
            Some("0.0.0.0:1234".parse().unwrap())
        );
        let again: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(again, config);
        let args = Args::try_parse_from(["lookout-server", "--management.disable"]).unwrap();
        assert_eq!(
            Config::load(&args).unwrap().management_address().unwrap(),
            None
        );

        for bad in ["demo", "demo=x", "=3", "demo=inf"] {
            let args = Args {
                rate_limits: vec![bad.into()],
                ..Args::default()
            };
            let error = format!("{:#}", Config::load(&args).unwrap_err());
            assert!(error.contains("--gateway.rate-limit"), "{bad}: {error}");
        }
        let args = Args {
            max_sample_age: Some("two days".into()),
            ..Args::default()
        };
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("max_sample_age"), "{error}");
        let args = Args {
            gateway_listen: Some("127.0.0.1:80".parse().unwrap()),
            ..Args::default()
        };
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("management.listen_address"), "{error}");
    }

    #[test]
    fn gateway_only_mode_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(
            &path,
            "mode = \"gateway\"\n[forward]\nqueue_max_bytes = 2097152\nmax_backoff = \"10s\"\n\
             [[forward.relay]]\nurl = \"http://gw2:7200/datas\"\ncompress = false\nname = \"gw2\"\n\
             [[forward.remote_write]]\nurl = \"http://prom:9090/api/v1/write\"\n\
             bearer_token = \"s3cret\"\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "lookout-server",
            "--config.file",
            path.to_str().unwrap(),
            "--forward.remote-write-url",
            "http://vm:8428/api/v1/write",
            "--forward.remote-write-username",
            "u",
            "--forward.remote-write-password",
            "p4ss",
            "--forward.queue-fsync",
            "false",
        ])
        .unwrap();
        let config = Config::load(&args).unwrap();
        assert!(config.gateway_only());
        let (options, exporters) = config.forward_setup().unwrap();
        assert_eq!(options.queue_dir, PathBuf::from("data/forward-queue"));
        assert_eq!(options.queue_max_bytes, 2 << 20);
        assert!(!options.fsync);
        assert_eq!(options.min_backoff, std::time::Duration::from_millis(500));
        assert_eq!(options.max_backoff, std::time::Duration::from_secs(10));
        let summary: Vec<(&str, &str, &str)> = exporters
            .iter()
            .map(|exporter| {
                (
                    exporter.name.as_str(),
                    exporter.kind.as_str(),
                    exporter.url.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("gw2", "relay", "http://gw2:7200/datas"),
                (
                    "remote_write-0",
                    "remote_write",
                    "http://prom:9090/api/v1/write"
                ),
                (
                    "remote_write-1",
                    "remote_write",
                    "http://vm:8428/api/v1/write"
                ),
            ]
        );
        assert_eq!(
            exporters[0].kind,
            lookout_relay::ExporterKind::Relay { compress: false }
        );
        assert_eq!(
            exporters[1].auth,
            lookout_relay::Auth::Bearer("s3cret".into())
        );
        assert_eq!(
            exporters[2].auth,
            lookout_relay::Auth::Basic {
                username: "u".into(),
                password: "p4ss".into()
            }
        );
        let shown = config.to_toml();
        assert!(
            !shown.contains("s3cret") && !shown.contains("p4ss"),
            "{shown}"
        );
        let again: Config = toml::from_str(&shown).unwrap();
        assert_eq!(again.forward.relay, config.forward.relay);

        for (flags, message) in [
            (vec!["--mode", "gateway"], "needs an exporter"),
            (vec!["--mode", "relay"], "unknown mode"),
            (
                vec!["--forward.relay-url", "http://gw2:7200/datas"],
                "only used with mode = \"gateway\"",
            ),
            (
                vec!["--mode", "gateway", "--forward.relay-url", "gw2:7200"],
                "must be http://",
            ),
            (
                vec![
                    "--mode",
                    "gateway",
                    "--forward.remote-write-url",
                    "http://a/w",
                    "--forward.remote-write-username",
                    "u",
                    "--forward.remote-write-bearer-token",
                    "t",
                ],
                "not both",
            ),
            (
                vec![
                    "--mode",
                    "gateway",
                    "--forward.relay-url",
                    "http://a/datas",
                    "--forward.min-backoff",
                    "1m",
                    "--forward.max-backoff",
                    "1s",
                ],
                "min_backoff",
            ),
        ] {
            let mut argv = vec!["lookout-server"];
            argv.extend(flags.iter().copied());
            let args = Args::try_parse_from(argv).unwrap();
            let error = format!("{:#}", Config::load(&args).unwrap_err());
            assert!(error.contains(message), "{flags:?}: {error}");
        }
    }

    #[test]
    fn mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(&path, "[web]\nlisten_adress = \"0.0.0.0:1\"\n").unwrap();
        let args = Args {
            config_file: Some(path),
            ..Args::default()
        };
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("listen_adress"), "{error}");
        let args = Args {
            query_timeout: Some("0s".into()),
            ..Args::default()
        };
        assert!(Config::load(&args).is_err());
    }

    #[test]
    fn elasticsearch_backend_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(
            &path,
            "[storage]\nbackend = \"es\"\n[storage.es]\nurl = \"http://127.0.0.1:1\"\n\
             password = \"hunter2\"\nusername = \"lookout\"\ntime_zone = \"+08:00\"\n",
        )
        .unwrap();
        let args = Args {
            config_file: Some(path.clone()),
            es_index: Some("lk".into()),
            ..Args::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.storage.backend, "es");
        assert_eq!(config.storage.es.url, "http://127.0.0.1:1");
        assert_eq!(config.storage.es.index, "lk");
        assert!(
            !config.to_toml().contains("hunter2"),
            "the password is not shown"
        );
        let args = Args {
            storage_backend: Some("cassandra".into()),
            ..Args::default()
        };
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("cassandra"), "{error}");
        std::fs::write(
            &path,
            "[storage]\nbackend = \"es\"\n[storage.es]\ntime_zone = \"Mars\"\n",
        )
        .unwrap();
        let args = Args {
            config_file: Some(path),
            ..Args::default()
        };
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("time_zone"), "{error}");
    }

    #[test]
    fn elasticsearch_pushdown_switch_from_file_and_flag() {
        let config = Config::load(&Args::default()).unwrap();
        assert!(config.storage.es.pushdown);
        assert!(config.engine_options().unwrap().pushdown);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookout.toml");
        std::fs::write(&path, "[storage.es]\npushdown = false\n").unwrap();
        let args = Args {
            config_file: Some(path),
            ..Args::default()
        };
        let config = Config::load(&args).unwrap();
        assert!(!config.engine_options().unwrap().pushdown);
        let args = Args {
            es_no_pushdown: true,
            ..Args::default()
        };
        let config = Config::load(&args).unwrap();
        assert!(!config.storage.es.pushdown);
        assert!(!config.engine_options().unwrap().pushdown);
        let flags = config.flags(None);
        assert!(flags.contains(&("es-no-pushdown".to_owned(), "true".to_owned())));
    }
}
