//! The scrape manager: Lookout pulling Prometheus targets itself.
//!
//! Configurations come from `--scrape.config-file` (Prometheus-style YAML) and
//! `--scrape.sofalookout-dir` (SOFALookout's `metric_scrape/` jobs, spec §3.4); both are
//! read at start, again on SIGHUP ([`ScrapeManager::reload`]), and the directory and the
//! `file_sd_configs` files also every refresh ([`ScrapeManager::refresh`]: every 60 s, or
//! the shortest `refresh_interval`). A configuration file that does not load stops the
//! start; on reload it is logged and the running configuration kept, as Prometheus does. A
//! SOFALookout file that does not load is logged and left out; a job name the Prometheus file
//! already has is left out of the directory's jobs.
//!
//! Each target runs its own loop on the runtime: every interval (first at an offset derived
//! from the target, to spread the load) it GETs the URL with Prometheus' `Accept` header and
//! the configured authentication, turns the body into samples on the blocking pool
//! (`lookout_gateway::scrape::samples`), and writes samples, stale markers and the report
//! series (`up`, `scrape_duration_seconds`, ...) in one batch through the same `Storage` as
//! the push gateways, counted under `protocol="scrape"` in the gateway self-metrics. A
//! target that leaves the configuration writes stale markers for all its series; a target
//! whose pool's configuration changes is restarted with the series it had (as Prometheus
//! hands its scrape cache over), so only what the new settings no longer scrape goes stale;
//! stopping the server writes no markers, so series carry on across a restart, as in
//! Prometheus.
//!
//! Targets are listed at `/api/v1/targets` (the API's [`TargetsSource`]) and, in
//! SOFALookout's shape, at `/prom/targets` on the gateway port ([`router`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lookout_api::{ActiveTarget, TargetHealth, TargetsSnapshot, TargetsSource};
use lookout_gateway::exposition::Format;
use lookout_gateway::scrape::config::{
    glob_match, parse_file_sd, parse_prometheus, parse_sofalookout, Auth, ScrapeConfig, Secret,
    TargetGroup,
};
use lookout_gateway::scrape::samples::{
    push_report, scraped_samples, Report, SampleRules, ScrapeCache,
};
use lookout_gateway::scrape::target::{targets, DroppedTarget, Target};
use lookout_model::{LabelLimits, TimestampMs};
use lookout_storage::{Storage, WriteBatch};
use tokio::sync::watch;

use crate::gateway::{GatewayStats, Protocol};

/// What Prometheus 2.x asks targets for: OpenMetrics first, then the text format.
const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// How often the SOFALookout directory is rescanned (spec §3.4).
const SOFALOOKOUT_RESCAN: Duration = Duration::from_secs(60);

/// How long shutdown waits for the loops to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Where scrape configurations come from.
#[derive(Debug, Clone, Default)]
pub struct ScrapeSources {
    /// `--scrape.config-file`
    pub config_file: Option<PathBuf>,
    /// `--scrape.sofalookout-dir`
    pub sofalookout_dir: Option<PathBuf>,
}

/// How a loop is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// The target went away: stale markers for its series.
    WithStaleness,
    /// The server stops: no markers.
    Quietly,
}

/// What the loops share.
struct LoopContext {
    storage: Arc<dyn Storage>,
    stats: Arc<GatewayStats>,
    client: reqwest::Client,
    label_limits: LabelLimits,
    max_body_bytes: usize,
}

/// The last scrape of a target.
#[derive(Debug, Clone)]
struct Health {
    health: TargetHealth,
    last_error: String,
    last_scrape: Option<SystemTime>,
    duration_seconds: f64,
}

/// A target's series for staleness, handed to the target's next loop when a reload
/// restarts it (as Prometheus hands its scrape cache over).
type SharedCache = Arc<Mutex<ScrapeCache>>;

struct RunningTarget {
    target: Target,
    health: Arc<Mutex<Health>>,
    cache: SharedCache,
    stop: watch::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
}

struct Pool {
    config: Arc<ScrapeConfig>,
    running: Vec<RunningTarget>,
    dropped: Vec<DroppedTarget>,
}

#[derive(Default)]
struct ManagerState {
    /// The last configuration file that loaded.
    prometheus: Vec<ScrapeConfig>,
    /// The SOFALookout jobs of the last directory scan.
    sofalookout: Vec<ScrapeConfig>,
    pools: BTreeMap<String, Pool>,
    stopped: bool,
}

/// Runs the scrape loops of the configured targets.
pub struct ScrapeManager {
    sources: ScrapeSources,
    context: Arc<LoopContext>,
    state: Mutex<ManagerState>,
}

impl std::fmt::Debug for ScrapeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeManager")
            .field("sources", &self.sources)
            .finish()
    }
}

impl ScrapeManager {
    /// Loads the configurations and starts the loops; a configuration file that does not
    /// load is an error. Call inside the runtime.
    pub fn start(
        sources: ScrapeSources,
        storage: Arc<dyn Storage>,
        stats: Arc<GatewayStats>,
        max_body_bytes: usize,
    ) -> anyhow::Result<Arc<ScrapeManager>> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("Lookout/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the scrape HTTP client")?;
        let manager = Arc::new(ScrapeManager {
            sources,
            context: Arc::new(LoopContext {
                storage,
                stats,
                client,
                label_limits: LabelLimits::default(),
                max_body_bytes,
            }),
            state: Mutex::new(ManagerState::default()),
        });
        let prometheus = manager.load_config_file().map_err(anyhow::Error::msg)?;
        let sofalookout = manager.load_sofalookout_dir();
        {
            let mut state = manager.lock();
            state.prometheus = prometheus;
            state.sofalookout = sofalookout;
        }
        manager.sync();
        Ok(manager)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManagerState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// SIGHUP: reads every source again and applies what changed. A configuration file that
    /// does not load keeps the running configuration and is the error.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = self.load_config_file();
        let sofalookout = self.load_sofalookout_dir();
        {
            let mut state = self.lock();
            if let Ok(prometheus) = &loaded {
                state.prometheus = prometheus.clone();
            }
            state.sofalookout = sofalookout;
        }
        self.sync();
        loaded.map(|_| ())
    }

    /// The periodic refresh: the SOFALookout directory and the `file_sd` files.
    pub fn refresh(&self) {
        let sofalookout = self.load_sofalookout_dir();
        self.lock().sofalookout = sofalookout;
        self.sync();
    }

    /// How long until the next [`ScrapeManager::refresh`]: 60 s, or the shortest
    /// `file_sd` refresh interval.
    pub fn refresh_interval(&self) -> Duration {
        let state = self.lock();
        state
            .pools
            .values()
            .flat_map(|pool| pool.config.file_sd_configs.iter())
            .map(|file_sd| Duration::from_millis(file_sd.refresh_interval_ms))
            .chain([SOFALOOKOUT_RESCAN])
            .min()
            .unwrap_or(SOFALOOKOUT_RESCAN)
    }

    /// Stops every loop without stale markers and waits (bounded) for them.
    pub async fn shutdown(&self) {
        let tasks: Vec<tokio::task::JoinHandle<()>> = {
            let mut state = self.lock();
            state.stopped = true;
            let pools = std::mem::take(&mut state.pools);
            pools
                .into_values()
                .flat_map(|pool| pool.running)
                .map(|running| {
                    let _ = running.stop.send(Stop::Quietly);
                    running.task
                })
                .collect()
        };
        let all = futures_join_all(tasks);
        if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
            tracing::warn!("scrape loops did not stop within {SHUTDOWN_WAIT:?}");
        }
    }

    fn load_config_file(&self) -> Result<Vec<ScrapeConfig>, String> {
        let Some(path) = &self.sources.config_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!(
                "reading the scrape configuration {}: {error}",
                path.display()
            )
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        parse_prometheus(&text, &path.display().to_string(), base_dir)
            .map_err(|error| format!("in the scrape configuration {error}"))
    }

    /// Every regular file of the directory, oldest modification first so that a newer
    /// file's job replaces an older one of the same name (spec §3.4).
    fn load_sofalookout_dir(&self) -> Vec<ScrapeConfig> {
        let Some(dir) = &self.sources.sofalookout_dir else {
            return Vec::new();
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot read the SOFALookout scrape directory");
                return Vec::new();
            }
        };
        let mut files: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let metadata = entry.metadata().ok()?;
                metadata
                    .is_file()
                    .then(|| (metadata.modified().unwrap_or(UNIX_EPOCH), entry.path()))
            })
            .collect();
        files.sort();
        let mut jobs: Vec<ScrapeConfig> = Vec::new();
        for (_, path) in files {
            let parsed = std::fs::read_to_string(&path)
                .map_err(|error| format!("{}: {error}", path.display()))
                .and_then(|text| {
                    parse_sofalookout(&text, &path.display().to_string())
                        .map_err(|error| error.to_string())
                });
            match parsed {
                Ok(configs) => {
                    for config in configs {
                        jobs.retain(|job| job.job_name != config.job_name);
                        jobs.push(config);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "a SOFALookout scrape file was left out");
                }
            }
        }
        jobs
    }

    /// Brings the running loops in line with the configurations.
    fn sync(&self) {
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        let mut desired: Vec<ScrapeConfig> = state.prometheus.clone();
        for job in &state.sofalookout {
            if desired.iter().any(|config| config.job_name == job.job_name) {
                tracing::warn!(job = %job.job_name, "a SOFALookout job has the name of a job of the scrape configuration file; left out");
                continue;
            }
            desired.push(job.clone());
        }
        let mut old_pools = std::mem::take(&mut state.pools);
        for config in desired {
            let groups = target_groups(&config);
            let (active, dropped) = targets(&config, &groups);
            for target in &dropped {
                if let Some(error) = &target.error {
                    tracing::warn!(job = %config.job_name, %error, "a target was dropped");
                }
            }
            let mut running = Vec::new();
            // Loops restarted for a target that stays (same labels and URL, new settings):
            // stopped without markers, their caches handed to the new loops.
            let mut handed_over: Vec<(Target, SharedCache)> = Vec::new();
            let old = old_pools.remove(&config.job_name);
            let unchanged = old.as_ref().is_some_and(|old| *old.config == config);
            let config = match &old {
                Some(old) if unchanged => old.config.clone(),
                _ => Arc::new(config),
            };
            for loop_ in old.into_iter().flat_map(|old| old.running) {
                if unchanged && active.contains(&loop_.target) {
                    running.push(loop_);
                    continue;
                }
                let stays = active.iter().any(|target| {
                    target.labels == loop_.target.labels && target.url == loop_.target.url
                });
                if stays {
                    let _ = loop_.stop.send(Stop::Quietly);
                    handed_over.push((loop_.target, loop_.cache));
                } else {
                    let _ = loop_.stop.send(Stop::WithStaleness);
                }
            }
            for target in active {
                if running.iter().any(|loop_| loop_.target == target) {
                    continue;
                }
                let cache = handed_over
                    .iter()
                    .position(|(old, _)| old.labels == target.labels && old.url == target.url)
                    .map(|index| handed_over.swap_remove(index).1);
                running.push(self.spawn(config.clone(), target, cache));
            }
            state.pools.insert(
                config.job_name.clone(),
                Pool {
                    config,
                    running,
                    dropped,
                },
            );
        }
        for (_, pool) in old_pools {
            stop_pool(pool);
        }
    }

    fn spawn(
        &self,
        config: Arc<ScrapeConfig>,
        target: Target,
        cache: Option<SharedCache>,
    ) -> RunningTarget {
        let cache = cache.unwrap_or_default();
        let health = Arc::new(Mutex::new(Health {
            health: TargetHealth::Unknown,
            last_error: String::new(),
            last_scrape: None,
            duration_seconds: 0.0,
        }));
        let (stop, stopped) = watch::channel(Stop::Running);
        let task = tokio::spawn(scrape_loop(
            self.context.clone(),
            config,
            target.clone(),
            health.clone(),
            cache.clone(),
            stopped,
        ));
        RunningTarget {
            target,
            health,
            cache,
            stop,
            task,
        }
    }

    /// `/prom/targets`: job → the last run of each target, SOFALookout's shape (spec §3.4).
    fn prom_targets(&self) -> serde_json::Value {
        let state = self.lock();
        let mut jobs = serde_json::Map::new();
        for (name, pool) in &state.pools {
            let entries: Vec<serde_json::Value> = pool
                .running
                .iter()
                .map(|running| {
                    let health = lock_health(&running.health);
                    serde_json::json!({
                        "endpoint": running.target.url,
                        "lastScrapedTime": health.last_scrape.map(lookout_api::format_rfc3339),
                        "successful": health.health == TargetHealth::Up,
                        "error": (!health.last_error.is_empty()).then(|| health.last_error.clone()),
                        "duration": (health.duration_seconds * 1000.0).round() as u64,
                    })
                })
                .collect();
            jobs.insert(name.clone(), serde_json::Value::Array(entries));
        }
        serde_json::Value::Object(jobs)
    }
}

fn lock_cache(cache: &Mutex<ScrapeCache>) -> std::sync::MutexGuard<'_, ScrapeCache> {
    cache.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn lock_health(health: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    health.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn stop_pool(pool: Pool) {
    for running in pool.running {
        let _ = running.stop.send(Stop::WithStaleness);
    }
}

/// Waits for every task (a panicked loop is logged).
async fn futures_join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        if let Err(error) = task.await {
            if error.is_panic() {
                tracing::error!(%error, "a scrape loop panicked");
            }
        }
    }
}

impl TargetsSource for ScrapeManager {
    fn targets(&self) -> TargetsSnapshot {
        let state = self.lock();
        let mut snapshot = TargetsSnapshot::default();
        for (name, pool) in &state.pools {
            for running in &pool.running {
                let health = lock_health(&running.health).clone();
                snapshot.active.push(ActiveTarget {
                    discovered_labels: running.target.discovered_labels.clone(),
                    labels: running.target.labels.clone(),
                    scrape_pool: name.clone(),
                    scrape_url: running.target.url.clone(),
                    last_error: health.last_error,
                    last_scrape: health.last_scrape,
                    last_scrape_duration_seconds: health.duration_seconds,
                    health: health.health,
                    scrape_interval: lookout_gateway::scrape::format_duration(
                        running.target.interval_ms,
                    ),
                    scrape_timeout: lookout_gateway::scrape::format_duration(
                        running.target.timeout_ms,
                    ),
                });
            }
            for dropped in &pool.dropped {
                snapshot.dropped.push(lookout_api::DroppedTarget {
                    discovered_labels: dropped.discovered_labels.clone(),
                    scrape_pool: name.clone(),
                });
            }
        }
        snapshot
    }
}

/// The static groups and the groups of the `file_sd` files (read now; a file that does not
/// load is logged and left out).
fn target_groups(config: &ScrapeConfig) -> Vec<TargetGroup> {
    let mut groups = config.static_configs.clone();
    for file_sd in &config.file_sd_configs {
        for pattern in &file_sd.files {
            for path in matching_files(pattern) {
                let name = path.display().to_string();
                let loaded = std::fs::read_to_string(&path)
                    .map_err(|error| format!("{name}: {error}"))
                    .and_then(|text| parse_file_sd(&text, &name).map_err(|e| e.to_string()));
                match loaded {
                    Ok(file_groups) => groups.extend(file_groups),
                    Err(error) => {
                        tracing::error!(job = %config.job_name, %error, "a file_sd file was left out")
                    }
                }
            }
        }
    }
    groups
}

/// The files a `file_sd` pattern names (`*` and `?` in the last element), sorted.
fn matching_files(pattern: &Path) -> Vec<PathBuf> {
    let Some(file_pattern) = pattern.file_name().and_then(|name| name.to_str()) else {
        return Vec::new();
    };
    if !file_pattern.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| glob_match(file_pattern, name))
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

/// A stable offset within the interval for a target, so that targets do not all scrape at
/// once.
fn start_offset(target: &Target, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    target.url.hash(&mut hasher);
    target.labels.hash(&mut hasher);
    let interval_ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(hasher.finish() % interval_ms)
}

async fn scrape_loop(
    context: Arc<LoopContext>,
    config: Arc<ScrapeConfig>,
    target: Target,
    health: Arc<Mutex<Health>>,
    cache: SharedCache,
    mut stopped: watch::Receiver<Stop>,
) {
    let interval = Duration::from_millis(target.interval_ms);
    let first = tokio::time::Instant::now() + start_offset(&target, interval);
    let mut ticker = tokio::time::interval_at(first, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => break *stopped.borrow(),
        }
        tokio::select! {
            _ = scrape_once(&context, &config, &target, &health, &cache) => {}
            _ = stopped.changed() => break *stopped.borrow(),
        }
    };
    if stop == Stop::WithStaleness {
        let batch = lock_cache(&cache).end(&target.labels, TimestampMs(now_ms()));
        write(&context, &target, batch).await;
    }
}

async fn scrape_once(
    context: &Arc<LoopContext>,
    config: &Arc<ScrapeConfig>,
    target: &Target,
    health: &Mutex<Health>,
    cache: &Mutex<ScrapeCache>,
) {
    let started_wall = SystemTime::now();
    let started = Instant::now();
    let at = TimestampMs(millis_since_epoch(started_wall));
    context.stats.request(Protocol::Scrape);
    let result = match fetch(context, config, target).await {
        Ok((body, content_type)) => {
            let format = Format::from_content_type(content_type.as_deref());
            let config = config.clone();
            let target_labels = target.labels.clone();
            let label_limits = context.label_limits;
            let parsed = tokio::task::spawn_blocking(move || {
                let rules = SampleRules {
                    target_labels: &target_labels,
                    honor_labels: config.honor_labels,
                    honor_timestamps: config.honor_timestamps,
                    metric_relabel_configs: &config.metric_relabel_configs,
                    sample_limit: config.sample_limit,
                    label_limits: &label_limits,
                };
                scraped_samples(&body, format, &rules, at)
            })
            .await;
            match parsed {
                Ok(result) => result.map_err(|error| error.to_string()),
                Err(error) => Err(format!("parsing the scrape failed: {error}")),
            }
        }
        Err(error) => Err(error),
    };
    let duration_seconds = started.elapsed().as_secs_f64();
    let (mut batch, report, error) = match result {
        Ok(scraped) => {
            let samples_scraped = scraped.samples_scraped;
            let samples_post_relabeling = scraped.samples_post_relabeling();
            let (batch, series_added) = lock_cache(cache).success(scraped, at);
            let report = Report {
                up: true,
                duration_seconds,
                samples_scraped,
                samples_post_relabeling,
                series_added,
            };
            (batch, report, None)
        }
        Err(error) => {
            let report = Report {
                up: false,
                duration_seconds,
                samples_scraped: 0,
                samples_post_relabeling: 0,
                series_added: 0,
            };
            let batch = lock_cache(cache).failure(at);
            (batch, report, Some(error))
        }
    };
    push_report(&mut batch, &target.labels, at, &report);
    if let Some(error) = &error {
        context.stats.refused(Protocol::Scrape, "scrape_failed");
        tracing::debug!(url = %target.url, %error, "scrape failed");
    }
    write(context, target, batch).await;
    let mut health = lock_health(health);
    health.health = if error.is_some() {
        TargetHealth::Down
    } else {
        TargetHealth::Up
    };
    health.last_error = error.unwrap_or_default();
    health.last_scrape = Some(started_wall);
    health.duration_seconds = duration_seconds;
}

async fn write(context: &LoopContext, target: &Target, batch: WriteBatch) {
    if batch.is_empty() {
        return;
    }
    match context.storage.write(batch).await {
        Ok(outcome) => context.stats.stored(Protocol::Scrape, &outcome),
        Err(error) => {
            context
                .stats
                .refused(Protocol::Scrape, "storage_unavailable");
            tracing::warn!(url = %target.url, %error, "scraped samples could not be stored");
        }
    }
}

/// GETs the target; the body (at most `max_body_bytes`) and its `Content-Type`.
async fn fetch(
    context: &LoopContext,
    config: &ScrapeConfig,
    target: &Target,
) -> Result<(Vec<u8>, Option<String>), String> {
    let timeout = Duration::from_millis(target.timeout_ms);
    let mut request = context
        .client
        .get(&target.url)
        .header(reqwest::header::ACCEPT, ACCEPT_HEADER)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", timeout.as_secs_f64()),
        )
        .timeout(timeout);
    match &config.auth {
        Auth::None => {}
        Auth::Basic { username, password } => {
            let password = match password {
                Some(secret) => Some(read_secret(secret).await?),
                None => None,
            };
            request = request.basic_auth(username, password);
        }
        Auth::Credentials {
            scheme,
            credentials,
        } => {
            let credentials = read_secret(credentials).await?;
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("{scheme} {credentials}"),
            );
        }
    }
    let exchange = async {
        let mut response = request.send().await.map_err(|error| error_text(&error))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| error_text(&error))? {
            if body.len() + chunk.len() > context.max_body_bytes {
                return Err(format!(
                    "body size limit exceeded: more than {} bytes",
                    context.max_body_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, content_type))
    };
    // reqwest's own timeout covers the exchange; this one also bounds a slow secret file.
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("context deadline exceeded (timeout {timeout:?})"))?
}

/// An error with its causes, as one line.
fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn read_secret(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Inline(value) => Ok(value.clone()),
        Secret::File(path) => tokio::fs::read_to_string(path)
            .await
            .map(|text| text.trim_end().to_owned())
            .map_err(|error| format!("reading {}: {error}", path.display())),
    }
}

fn millis_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn now_ms() -> i64 {
    millis_since_epoch(SystemTime::now())
}

/// `GET /prom/targets` on the gateway port.
pub fn router(manager: Arc<ScrapeManager>) -> Router {
    Router::new()
        .route("/prom/targets", get(prom_targets))
        .with_state(manager)
}

async fn prom_targets(State(manager): State<Arc<ScrapeManager>>) -> Response {
    axum::Json(manager.prom_targets()).into_response()
}

/// Reloads on every SIGHUP until the process stops.
pub fn reload_on_hangup(manager: Arc<ScrapeManager>) -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match manager.reload() {
                Ok(()) => tracing::info!("scrape configuration reloaded"),
                Err(error) => {
                    tracing::error!(%error, "scrape configuration not reloaded; the previous one keeps running")
                }
            }
        }
    });
    Ok(())
}

/// Refreshes the SOFALookout directory and `file_sd` files until `stopped`.
pub fn refresh_periodically(manager: Arc<ScrapeManager>, mut stopped: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let wait = manager.refresh_interval();
            tokio::select! {
                _ = tokio::time::sleep(wait) => manager.refresh(),
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        }
    });
}

/// Counts of running targets by pool, for tests.
#[cfg(test)]
fn running_counts(manager: &ScrapeManager) -> std::collections::HashMap<String, usize> {
    manager
        .lock()
        .pools
        .iter()
        .map(|(name, pool)| (name.clone(), pool.running.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::{is_stale_nan, MatchKind, Matcher};
    use lookout_storage::{collect_series, SelectRequest};
    use lookout_tsdb::{Tsdb, TsdbOptions};

    /// A loopback HTTP target whose body the test changes.
    async fn serve_target(body: Arc<Mutex<String>>) -> String {
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let body = body.clone();
                async move { body.lock().unwrap().clone() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    async fn series_values(storage: &Arc<dyn Storage>, name: &str) -> Vec<Vec<f64>> {
        let matcher = Matcher::new(MatchKind::Equal, "__name__", name).unwrap();
        let request = SelectRequest::new(vec![matcher], i64::MIN, i64::MAX);
        collect_series(storage.select(request).await.unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|series| series.samples.iter().map(|s| s.value).collect())
            .collect()
    }

    /// Polls `check` every 50 ms for at most 10 s.
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn series_and_targets_that_go_away_get_stale_markers() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb =
            Tsdb::open(TsdbOptions::new(dir.path().join("data")).retention_ms(None)).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(tsdb);
        let body = Arc::new(Mutex::new("kept 1\nleaving 2\n".to_owned()));
        let address = serve_target(body.clone()).await;
        let config_path = dir.path().join("scrape.yml");
        let config = |targets: &str| {
            format!(
                "scrape_configs:\n- job_name: t\n  scrape_interval: 100ms\n  static_configs: [{{targets: [{targets}]}}]\n"
            )
        };
        std::fs::write(&config_path, config(&format!("'{address}'"))).unwrap();
        let stats = Arc::new(GatewayStats::default());
        let manager = ScrapeManager::start(
            ScrapeSources {
                config_file: Some(config_path.clone()),
                sofalookout_dir: None,
            },
            storage.clone(),
            stats.clone(),
            1 << 20,
        )
        .unwrap();
        assert_eq!(running_counts(&manager)["t"], 1);
        eventually("two scrapes of `leaving`", || async {
            series_values(&storage, "leaving")
                .await
                .first()
                .is_some_and(|values| values.len() >= 2)
        })
        .await;
        // Reloading an unchanged file keeps the loop: no stale markers.
        let scrapes_before = series_values(&storage, "kept").await[0].len();
        manager.reload().unwrap();
        eventually("two more scrapes after the reload", || async {
            series_values(&storage, "kept").await[0].len() >= scrapes_before + 2
        })
        .await;
        assert!(!series_values(&storage, "kept").await[0]
            .iter()
            .any(|value| is_stale_nan(*value)));
        // A changed pool configuration restarts the loop with its series: `kept` carries on,
        // and `leaving`, which the new metric_relabel_configs drop, goes stale.
        std::fs::write(
            &config_path,
            config(&format!("'{address}'")).replace("100ms", "150ms")
                + "  metric_relabel_configs: [{source_labels: [__name__], regex: leaving, action: drop}]\n",
        )
        .unwrap();
        manager.reload().unwrap();
        eventually("a stale marker for the dropped `leaving`", || async {
            series_values(&storage, "leaving")
                .await
                .first()
                .and_then(|values| values.last().copied())
                .is_some_and(is_stale_nan)
        })
        .await;
        let scrapes_before = series_values(&storage, "kept").await[0].len();
        eventually("two more scrapes after the change", || async {
            series_values(&storage, "kept").await[0].len() >= scrapes_before + 2
        })
        .await;
        assert!(!series_values(&storage, "kept").await[0]
            .iter()
            .any(|value| is_stale_nan(*value)));
        // Back to the first configuration: `leaving` is scraped again.
        std::fs::write(&config_path, config(&format!("'{address}'"))).unwrap();
        manager.reload().unwrap();
        eventually("`leaving` scraped again", || async {
            series_values(&storage, "leaving")
                .await
                .first()
                .and_then(|values| values.last().copied())
                == Some(2.0)
        })
        .await;
        // The series disappears from the target: a stale marker follows its samples.
        *body.lock().unwrap() = "kept 1\n".to_owned();
        eventually("a stale marker for `leaving`", || async {
            series_values(&storage, "leaving")
                .await
                .first()
                .and_then(|values| values.last().copied())
                .is_some_and(is_stale_nan)
        })
        .await;
        let up = series_values(&storage, "up").await;
        assert!(up[0].iter().all(|value| *value == 1.0), "{up:?}");
        // The target leaves the configuration: its series and `up` end with stale markers.
        std::fs::write(&config_path, config("")).unwrap();
        manager.reload().unwrap();
        assert_eq!(running_counts(&manager)["t"], 0);
        eventually("stale markers for `kept` and `up`", || async {
            let kept = series_values(&storage, "kept").await;
            let up = series_values(&storage, "up").await;
            let last_stale =
                |values: &Vec<Vec<f64>>| values[0].last().copied().is_some_and(is_stale_nan);
            last_stale(&kept) && last_stale(&up)
        })
        .await;
        // A configuration that does not load keeps the running one.
        std::fs::write(&config_path, "scrape_configs: [{job_name: t, scheme: ftp}]").unwrap();
        let error = manager.reload().unwrap_err();
        assert!(error.contains("invalid scheme"), "{error}");
        assert!(running_counts(&manager).contains_key("t"));
        let mut metrics = String::new();
        stats.render(&mut metrics);
        assert!(
            metrics.contains("lookout_gateway_requests_total{protocol=\"scrape\"}"),
            "{metrics}"
        );
        manager.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_target_is_down_and_its_series_stale() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb =
            Tsdb::open(TsdbOptions::new(dir.path().join("data")).retention_ms(None)).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(tsdb);
        let body = Arc::new(Mutex::new("m 1\n".to_owned()));
        let address = serve_target(body.clone()).await;
        let config_path = dir.path().join("scrape.yml");
        std::fs::write(
            &config_path,
            format!(
                "scrape_configs:\n- job_name: t\n  scrape_interval: 100ms\n  \
                 static_configs: [{{targets: ['{address}'], labels: {{team: a}}}}]\n"
            ),
        )
        .unwrap();
        let manager = ScrapeManager::start(
            ScrapeSources {
                config_file: Some(config_path),
                sofalookout_dir: None,
            },
            storage.clone(),
            Arc::new(GatewayStats::default()),
            1 << 20,
        )
        .unwrap();
        eventually("a sample of m", || async {
            !series_values(&storage, "m").await.is_empty()
        })
        .await;
        *body.lock().unwrap() = "m{ broken\n".to_owned();
        eventually("up 0 after a stale marker of m", || async {
            let m_stale = series_values(&storage, "m")
                .await
                .first()
                .and_then(|values| values.last().copied())
                .is_some_and(is_stale_nan);
            let down = series_values(&storage, "up")
                .await
                .first()
                .and_then(|values| values.last().copied())
                == Some(0.0);
            m_stale && down
        })
        .await;
        let snapshot = manager.targets();
        let target = &snapshot.active[0];
        assert_eq!(target.health, TargetHealth::Down);
        assert!(
            target.last_error.contains("line 1"),
            "{}",
            target.last_error
        );
        assert_eq!(target.labels["team"], "a");
        assert_eq!(target.scrape_interval, "100ms");
        let prom = manager.prom_targets();
        assert_eq!(prom["t"][0]["successful"], false);
        assert!(prom["t"][0]["error"].as_str().unwrap().contains("line 1"));
        manager.shutdown().await;
    }

    /// A target that answers `m 1` only with `Authorization: <expected>`, after `delay`.
    async fn serve_guarded(expected: &'static str, delay: Duration) -> String {
        let app = Router::new().route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| async move {
                tokio::time::sleep(delay).await;
                let given = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                if given == expected {
                    (axum::http::StatusCode::OK, "m 1\n")
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, "")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_file_sd_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb =
            Tsdb::open(TsdbOptions::new(dir.path().join("data")).retention_ms(None)).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(tsdb);
        // base64("user:secret") = dXNlcjpzZWNyZXQ=
        let basic = serve_guarded("Basic dXNlcjpzZWNyZXQ=", Duration::ZERO).await;
        let bearer = serve_guarded("Bearer from-file", Duration::ZERO).await;
        let wrong = serve_guarded("Bearer other", Duration::ZERO).await;
        let slow = serve_guarded("", Duration::from_secs(2)).await;
        std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
        std::fs::create_dir(dir.path().join("sd")).unwrap();
        std::fs::write(
            dir.path().join("sd/a.json"),
            format!(r#"[{{"targets": ["{bearer}"], "labels": {{"from": "file"}}}}]"#),
        )
        .unwrap();
        std::fs::write(dir.path().join("sd/ignored.txt"), "not a target file").unwrap();
        let config_path = dir.path().join("scrape.yml");
        std::fs::write(
            &config_path,
            format!(
                "global: {{scrape_interval: 200ms}}\nscrape_configs:\n\
                 - job_name: basic\n  basic_auth: {{username: user, password: secret}}\n  \
                   static_configs: [{{targets: ['{basic}']}}]\n\
                 - job_name: bearer\n  bearer_token_file: token\n  \
                   file_sd_configs: [{{files: ['sd/*.json'], refresh_interval: 100ms}}]\n  \
                   static_configs: [{{targets: ['{wrong}']}}]\n\
                 - job_name: slow\n  scrape_timeout: 100ms\n  static_configs: [{{targets: ['{slow}']}}]\n"
            ),
        )
        .unwrap();
        let manager = ScrapeManager::start(
            ScrapeSources {
                config_file: Some(config_path),
                sofalookout_dir: None,
            },
            storage.clone(),
            Arc::new(GatewayStats::default()),
            1 << 20,
        )
        .unwrap();
        assert_eq!(running_counts(&manager)["bearer"], 2, "static + file_sd");
        let health = |pool: &str, from_file: bool| {
            manager
                .targets()
                .active
                .into_iter()
                .find(|target| {
                    target.scrape_pool == pool && target.labels.contains_key("from") == from_file
                })
                .map(|target| (target.health, target.last_error))
        };
        eventually("every target scraped once", || async {
            [
                ("basic", false),
                ("bearer", true),
                ("bearer", false),
                ("slow", false),
            ]
            .into_iter()
            .all(|(pool, from_file)| {
                health(pool, from_file).is_some_and(|(health, _)| health != TargetHealth::Unknown)
            })
        })
        .await;
        assert_eq!(health("basic", false).unwrap().0, TargetHealth::Up);
        assert_eq!(health("bearer", true).unwrap().0, TargetHealth::Up);
        let (down, error) = health("bearer", false).unwrap();
        assert_eq!(down, TargetHealth::Down);
        assert_eq!(error, "server returned HTTP status 401 Unauthorized");
        let (down, error) = health("slow", false).unwrap();
        assert_eq!(down, TargetHealth::Down);
        assert!(!error.is_empty());
        // The file_sd file changes: the next refresh picks the new groups up.
        std::fs::write(dir.path().join("sd/a.json"), "[]").unwrap();
        assert_eq!(manager.refresh_interval(), Duration::from_millis(100));
        manager.refresh();
        assert_eq!(running_counts(&manager)["bearer"], 1);
        manager.shutdown().await;
    }

    #[tokio::test]
    async fn a_configuration_that_does_not_load_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb =
            Tsdb::open(TsdbOptions::new(dir.path().join("data")).retention_ms(None)).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(tsdb);
        let start = |path: PathBuf| {
            ScrapeManager::start(
                ScrapeSources {
                    config_file: Some(path),
                    sofalookout_dir: None,
                },
                storage.clone(),
                Arc::new(GatewayStats::default()),
                1 << 20,
            )
        };
        let missing = start(dir.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.yml"), "{missing}");
        let path = dir.path().join("bad.yml");
        std::fs::write(
            &path,
            "scrape_configs: [{job_name: a, consul_sd_configs: []}]",
        )
        .unwrap();
        let bad = start(path).unwrap_err().to_string();
        assert!(
            bad.contains("consul_sd_configs is not supported (not implemented)"),
            "{bad}"
        );
    }
}
