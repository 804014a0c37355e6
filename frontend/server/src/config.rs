//! The server's settings: a TOML file (`--config.file`) overridden by command-line flags
//! (and their environment variables), every one with a default so that no file is needed.
//!
//! ```toml
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
//!
//! [gateway.common_tags]        # added to every series the gateway receives, sender's win
//! dc = "gz"
//!
//! [opentsdb]
//! listen_address = "0.0.0.0:4242"
//!
//! [scrape]
//! config_file = "scrape.yml"       # Prometheus-style YAML (global, scrape_configs); unset: none
//! sofalookout_dir = "metric_scrape" # SOFALookout's directory of metric_scrape_configs files
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
    /// Address of the OpenTSDB telnet listener (`put` lines) [default: 0.0.0.0:4242].
    #[arg(long = "opentsdb.listen-address", env = "LOOKOUT_OPENTSDB_LISTEN")]
    pub opentsdb_listen: Option<SocketAddr>,
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
    /// Most samples a query may load into memory [default: 50000000].
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
}

/// The effective configuration; also the layout of the TOML file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The native store.
    pub storage: StorageConfig,
    /// The query API port.
    pub web: WebConfig,
    /// The gateway port.
    pub gateway: GatewayConfig,
    /// The OpenTSDB telnet port.
    pub opentsdb: OpenTsdbConfig,
    /// Scraping (pull).
    pub scrape: ScrapeConfig,
    /// The PromQL evaluator.
    pub query: QueryConfig,
    /// Logging.
    pub log: LogConfig,
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
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen_address: SocketAddr::from(([0, 0, 0, 0], 9090)),
            enable_admin_api: false,
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
    /// `--gateway.common-tag name=value` (repeatable): tags added to every series the
    /// gateway port, the telnet listener and the scrape loops write, where the series does
    /// not set them.
    pub common_tags: BTreeMap<String, String>,
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
            common_tags: BTreeMap::new(),
        }
    }
}

/// `[opentsdb]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenTsdbConfig {
    /// `--opentsdb.listen-address`
    pub listen_address: SocketAddr,
}

impl Default for OpenTsdbConfig {
    fn default() -> Self {
        OpenTsdbConfig {
            listen_address: SocketAddr::from(([0, 0, 0, 0], 4242)),
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
        Ok(())
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
                "gateway.listen-address",
                self.gateway.listen_address.to_string(),
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
