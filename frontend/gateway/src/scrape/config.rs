//! Scrape configuration: the subset of Prometheus' `scrape_configs` Lookout runs, and
//! SOFALookout's `metric_scrape/*.yml` jobs (spec §3.4), both read into [`ScrapeConfig`].
//!
//! Prometheus file (`--scrape.config-file`):
//!
//! ```yaml
//! global: {scrape_interval: 1m, scrape_timeout: 10s}     # Prometheus' defaults
//! scrape_configs:
//!   - job_name: node                                       # required, unique
//!     scrape_interval: 15s
//!     scrape_timeout: 5s                                   # at most the interval
//!     metrics_path: /metrics
//!     scheme: http                                         # https: not implemented (no TLS)
//!     params: {'collect[]': [cpu]}
//!     honor_labels: false
//!     honor_timestamps: true
//!     sample_limit: 0                                      # 0: none
//!     basic_auth: {username: u, password: p}               # or password_file
//!     # bearer_token / bearer_token_file / authorization: {type: Bearer, credentials[_file]}
//!     static_configs: [{targets: ['127.0.0.1:9100'], labels: {group: a}}]
//!     file_sd_configs: [{files: ['targets/*.json'], refresh_interval: 5m}]
//!     relabel_configs: [...]
//!     metric_relabel_configs: [...]
//! ```
//!
//! Other top-level sections of a `prometheus.yml` (`rule_files`, `alerting`, `remote_write`,
//! `remote_read`, `storage`, `tracing`) are accepted and ignored, and `global.external_labels`
//! too (Prometheus does not store them either: they label data leaving it). Settings of a
//! scrape config Lookout does not implement (TLS, proxies, OAuth2, service discovery other
//! than static and file, ...) are load errors naming the setting, never silently ignored.
//! Relative paths (`file_sd_configs` files, password and token files) are relative to the
//! configuration file's directory, as in Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::relabel::{is_label_name, RawRelabelConfig, RelabelConfig};
use super::{format_duration, parse_duration};
use crate::lookout::Tags;

/// Prometheus' default scrape interval.
pub const DEFAULT_SCRAPE_INTERVAL_MS: u64 = 60_000;
/// Prometheus' default scrape timeout.
pub const DEFAULT_SCRAPE_TIMEOUT_MS: u64 = 10_000;
/// Prometheus' default `file_sd_configs` refresh interval.
pub const DEFAULT_FILE_SD_REFRESH_MS: u64 = 300_000;
/// The SOFALookout jobs' read timeout (spec §3.4), capped at the interval.
const SOFALOOKOUT_TIMEOUT_MS: u64 = 5_000;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML, or not the expected shape (serde's message with line and column).
    #[error("{source_name}: {message}")]
    Syntax {
        /// The file or `"<text>"`.
        source_name: String,
        /// What was wrong.
        message: String,
    },
    /// A rule of the configuration is broken.
    #[error("{source_name}: {message}")]
    Invalid {
        /// The file or `"<text>"`.
        source_name: String,
        /// What was wrong, naming the job.
        message: String,
    },
}

/// A secret given inline or as a file read at every scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// The value itself.
    Inline(String),
    /// A file holding the value (trailing whitespace trimmed when read).
    File(PathBuf),
}

/// How requests to the targets authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user.
        username: String,
        /// The password, if any.
        password: Option<Secret>,
    },
    /// `Authorization: <scheme> <credentials>` (`bearer_token` is scheme `Bearer`).
    Credentials {
        /// `Bearer` unless `authorization.type` says otherwise.
        scheme: String,
        /// The token.
        credentials: Secret,
    },
}

/// Targets sharing labels: a `static_configs` entry or one group of a `file_sd` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetGroup {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    /// Labels every target of the group gets.
    pub labels: Tags,
    /// Where the group comes from (`static/0`, a file name and index), for messages.
    pub source: String,
}

/// A `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSdConfig {
    /// Files or patterns (`*` and `?` in the last path element), resolved against the
    /// configuration's directory.
    pub files: Vec<PathBuf>,
    /// How often the files are read again.
    pub refresh_interval_ms: u64,
}

/// Where a scrape configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--scrape.config-file` (Prometheus' format).
    Prometheus,
    /// SOFALookout's `metric_scrape/` directory.
    SofaLookout,
}

/// One validated scrape configuration (a scrape pool).
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    /// The pool's name and the `job` label's default.
    pub job_name: String,
    /// Between scrapes of one target.
    pub scrape_interval_ms: u64,
    /// Longest a scrape may take; at most the interval.
    pub scrape_timeout_ms: u64,
    /// `__metrics_path__`'s default.
    pub metrics_path: String,
    /// `__scheme__`'s default; only `http`.
    pub scheme: String,
    /// Query parameters of the scrape URL.
    pub params: BTreeMap<String, Vec<String>>,
    /// Labels of the scraped data win over the target's.
    pub honor_labels: bool,
    /// Timestamps of the scraped data are kept.
    pub honor_timestamps: bool,
    /// Most samples a scrape may hold after metric relabelling (0: no limit); above it the
    /// scrape fails.
    pub sample_limit: u64,
    /// Authentication.
    pub auth: Auth,
    /// `static_configs`.
    pub static_configs: Vec<TargetGroup>,
    /// `file_sd_configs`.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Applied to every target's discovered labels.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Applied to every scraped sample.
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Where it was configured.
    pub origin: Origin,
}

impl ScrapeConfig {
    /// `scrape_interval` as Prometheus prints it.
    pub fn interval_text(&self) -> String {
        format_duration(self.scrape_interval_ms)
    }

    /// `scrape_timeout` as Prometheus prints it.
    pub fn timeout_text(&self) -> String {
        format_duration(self.scrape_timeout_ms)
    }
}

// The sections Lookout ignores are fields only so that `deny_unknown_fields` accepts them.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    global: RawGlobal,
    #[serde(default)]
    scrape_configs: Vec<RawScrapeConfig>,
    #[serde(default)]
    scrape_config_files: Option<Value>,
    // Sections of a prometheus.yml that have nothing to do with scraping.
    #[serde(default)]
    rule_files: Option<Value>,
    #[serde(default)]
    alerting: Option<Value>,
    #[serde(default)]
    remote_write: Option<Value>,
    #[serde(default)]
    remote_read: Option<Value>,
    #[serde(default)]
    storage: Option<Value>,
    #[serde(default)]
    tracing: Option<Value>,
    #[serde(default)]
    otlp: Option<Value>,
    #[serde(default)]
    runtime: Option<Value>,
}

#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    scrape_interval: Option<String>,
    scrape_timeout: Option<String>,
    #[serde(default)]
    evaluation_interval: Option<Value>,
    #[serde(default)]
    external_labels: Option<Value>,
    #[serde(default)]
    rule_query_offset: Option<Value>,
    #[serde(default)]
    query_log_file: Option<Value>,
    #[serde(default)]
    scrape_protocols: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawScrapeConfig {
    job_name: Option<String>,
    scrape_interval: Option<String>,
    scrape_timeout: Option<String>,
    metrics_path: Option<String>,
    scheme: Option<String>,
    params: Option<BTreeMap<String, Vec<String>>>,
    honor_labels: Option<bool>,
    honor_timestamps: Option<bool>,
    sample_limit: Option<u64>,
    basic_auth: Option<RawBasicAuth>,
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    authorization: Option<RawAuthorization>,
    static_configs: Option<Vec<RawStaticConfig>>,
    file_sd_configs: Option<Vec<RawFileSdConfig>>,
    relabel_configs: Option<Vec<RawRelabelConfig>>,
    metric_relabel_configs: Option<Vec<RawRelabelConfig>>,
    /// Everything else: refused by name.
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticConfig {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSdConfig {
    files: Vec<String>,
    refresh_interval: Option<String>,
}

/// Settings of Prometheus' scrape configs that Lookout accepts and ignores: they change
/// nothing Lookout does.
const IGNORED_SETTINGS: [&str; 4] = [
    "enable_compression",
    "follow_redirects",
    "enable_http2",
    "scrape_protocols",
];

/// The Prometheus file's `scrape_configs`, validated; `base_dir` resolves relative paths.
pub fn parse_prometheus(
    text: &str,
    source_name: &str,
    base_dir: &Path,
) -> Result<Vec<ScrapeConfig>, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        source_name: source_name.to_owned(),
        message,
    };
    let invalid = |message: String| ConfigError::Invalid {
        source_name: source_name.to_owned(),
        message,
    };
    let raw: RawFile = if text.trim().is_empty() {
        RawFile::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|error| syntax(error.to_string()))?
    };
    if raw.scrape_config_files.is_some() {
        return Err(invalid(
            "scrape_config_files is not supported (not implemented)".into(),
        ));
    }
    let global_interval = match &raw.global.scrape_interval {
        Some(text) => positive_duration("global scrape_interval", text).map_err(invalid)?,
        None => DEFAULT_SCRAPE_INTERVAL_MS,
    };
    let global_timeout = match &raw.global.scrape_timeout {
        Some(text) => positive_duration("global scrape_timeout", text).map_err(invalid)?,
        // Prometheus: an unset timeout longer than the interval becomes the interval.
        None => DEFAULT_SCRAPE_TIMEOUT_MS.min(global_interval),
    };
    if global_timeout > global_interval {
        return Err(invalid(
            "global scrape timeout greater than scrape interval".into(),
        ));
    }
    let mut configs = Vec::new();
    let mut names = BTreeSet::new();
    for (index, raw_config) in raw.scrape_configs.into_iter().enumerate() {
        let config = scrape_config(raw_config, global_interval, global_timeout, base_dir)
            .map_err(|message| invalid(format!("scrape_configs[{index}]: {message}")))?;
        if !names.insert(config.job_name.clone()) {
            return Err(invalid(format!(
                "found multiple scrape configs with job name {:?}",
                config.job_name
            )));
        }
        configs.push(config);
    }
    Ok(configs)
}

fn positive_duration(what: &str, text: &str) -> Result<u64, String> {
    let millis = parse_duration(text).map_err(|error| format!("{what}: {error}"))?;
    if millis == 0 {
        return Err(format!("{what} must be greater than zero"));
    }
    Ok(millis)
}

fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base_dir.join(path)
    }
}

fn scrape_config(
    raw: RawScrapeConfig,
    global_interval: u64,
    global_timeout: u64,
    base_dir: &Path,
) -> Result<ScrapeConfig, String> {
    let job_name = raw
        .job_name
        .filter(|name| !name.is_empty())
        .ok_or("job_name is empty or missing")?;
    let in_job = |message: String| format!("job {job_name:?}: {message}");
    for key in raw.other.keys() {
        if IGNORED_SETTINGS.contains(&key.as_str()) {
            continue;
        }
        let known_unsupported = key.ends_with("_sd_configs")
            || matches!(
                key.as_str(),
                "tls_config"
                    | "proxy_url"
                    | "no_proxy"
                    | "proxy_from_environment"
                    | "proxy_connect_header"
                    | "oauth2"
                    | "label_limit"
                    | "label_name_length_limit"
                    | "label_value_length_limit"
                    | "target_limit"
                    | "body_size_limit"
                    | "native_histogram_bucket_limit"
                    | "native_histogram_min_bucket_factor"
                    | "scrape_classic_histograms"
                    | "always_scrape_classic_histograms"
                    | "convert_classic_histograms_to_nhcb"
                    | "track_timestamps_staleness"
                    | "keep_dropped_targets"
                    | "metric_name_validation_scheme"
                    | "metric_name_escaping_scheme"
                    | "scrape_failure_log_file"
                    | "http_headers"
                    | "fallback_scrape_protocol"
                    | "enable_http2_support"
                    | "scrape_fallback_protocol"
            );
        return Err(in_job(if known_unsupported {
            format!("{key} is not supported (not implemented)")
        } else {
            format!("unknown setting {key:?}")
        }));
    }
    let scrape_interval_ms = match &raw.scrape_interval {
        Some(text) => positive_duration("scrape_interval", text).map_err(in_job)?,
        None => global_interval,
    };
    let scrape_timeout_ms = match &raw.scrape_timeout {
        Some(text) => positive_duration("scrape_timeout", text).map_err(in_job)?,
        // Prometheus: an unset timeout longer than the job's interval becomes the interval.
        None => global_timeout.min(scrape_interval_ms),
    };
    if scrape_timeout_ms > scrape_interval_ms {
        return Err(in_job(format!(
            "scrape timeout {} greater than scrape interval {}",
            format_duration(scrape_timeout_ms),
            format_duration(scrape_interval_ms)
        )));
    }
    let scheme = raw.scheme.unwrap_or_else(|| "http".to_owned());
    match scheme.as_str() {
        "http" => {}
        "https" => {
            return Err(in_job(
                "scheme \"https\" is not supported: this build has no TLS (not implemented)".into(),
            ))
        }
        other => return Err(in_job(format!("invalid scheme {other:?}"))),
    }
    let metrics_path = raw.metrics_path.unwrap_or_else(|| "/metrics".to_owned());
    if !metrics_path.starts_with('/') {
        return Err(in_job(format!(
            "metrics_path {metrics_path:?} must start with '/'"
        )));
    }
    let auth = auth(
        raw.basic_auth,
        raw.bearer_token,
        raw.bearer_token_file,
        raw.authorization,
        base_dir,
    )
    .map_err(in_job)?;
    let static_configs = raw
        .static_configs
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, group)| target_group(group.targets, group.labels, format!("static/{index}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(in_job)?;
    let file_sd_configs = raw
        .file_sd_configs
        .unwrap_or_default()
        .into_iter()
        .map(|file_sd| {
            let refresh_interval_ms = match &file_sd.refresh_interval {
                Some(text) => positive_duration("refresh_interval", text)?,
                None => DEFAULT_FILE_SD_REFRESH_MS,
            };
            for pattern in &file_sd.files {
                let file_name = Path::new(pattern)
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("");
                let pattern_dir = Path::new(pattern).parent().and_then(|dir| dir.to_str());
                if pattern_dir.is_some_and(|dir| dir.contains(['*', '?', '[']))
                    || file_name.contains('[')
                {
                    return Err(format!(
                        "file_sd pattern {pattern:?}: only '*' and '?' in the last path element are supported"
                    ));
                }
                let known_format = [".json", ".yml", ".yaml"]
                    .iter()
                    .any(|extension| file_name.ends_with(extension));
                if !known_format {
                    return Err(format!(
                        "file_sd file {pattern:?} must end in .json, .yml or .yaml"
                    ));
                }
            }
            Ok(FileSdConfig {
                files: file_sd
                    .files
                    .iter()
                    .map(|file| resolve(base_dir, file))
                    .collect(),
                refresh_interval_ms,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(in_job)?;
    let relabel = |raws: Option<Vec<RawRelabelConfig>>, what: &str| {
        raws.unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                RelabelConfig::from_raw(raw).map_err(|error| format!("{what}[{index}]: {error}"))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let relabel_configs = relabel(raw.relabel_configs, "relabel_configs").map_err(in_job)?;
    let metric_relabel_configs =
        relabel(raw.metric_relabel_configs, "metric_relabel_configs").map_err(in_job)?;
    Ok(ScrapeConfig {
        job_name,
        scrape_interval_ms,
        scrape_timeout_ms,
        metrics_path,
        scheme,
        params: raw.params.unwrap_or_default(),
        honor_labels: raw.honor_labels.unwrap_or(false),
        honor_timestamps: raw.honor_timestamps.unwrap_or(true),
        sample_limit: raw.sample_limit.unwrap_or(0),
        auth,
        static_configs,
        file_sd_configs,
        relabel_configs,
        metric_relabel_configs,
        origin: Origin::Prometheus,
    })
}

fn auth(
    basic: Option<RawBasicAuth>,
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    authorization: Option<RawAuthorization>,
    base_dir: &Path,
) -> Result<Auth, String> {
    let given = [
        basic.is_some(),
        bearer_token.is_some() || bearer_token_file.is_some(),
        authorization.is_some(),
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err(
            "at most one of basic_auth, bearer_token & bearer_token_file, authorization must be configured"
                .into(),
        );
    }
    let secret = |inline: Option<String>, file: Option<String>, what: &str| match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "at most one of {what} & {what}_file must be configured"
        )),
        (Some(value), None) => Ok(Some(Secret::Inline(value))),
        (None, Some(file)) => Ok(Some(Secret::File(resolve(base_dir, &file)))),
        (None, None) => Ok(None),
    };
    if let Some(basic) = basic {
        let username = basic.username.unwrap_or_default();
        if username.is_empty() {
            return Err("basic_auth requires a username".into());
        }
        let password = secret(basic.password, basic.password_file, "password")?;
        return Ok(Auth::Basic { username, password });
    }
    if bearer_token.is_some() || bearer_token_file.is_some() {
        let credentials =
            secret(bearer_token, bearer_token_file, "bearer_token")?.expect("one of them is set");
        return Ok(Auth::Credentials {
            scheme: "Bearer".into(),
            credentials,
        });
    }
    if let Some(authorization) = authorization {
        let scheme = authorization.kind.unwrap_or_else(|| "Bearer".to_owned());
        if scheme.eq_ignore_ascii_case("basic") {
            return Err(
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead".into(),
            );
        }
        let credentials = secret(
            authorization.credentials,
            authorization.credentials_file,
            "credentials",
        )?
        .ok_or("authorization requires credentials or credentials_file")?;
        return Ok(Auth::Credentials {
            scheme,
            credentials,
        });
    }
    Ok(Auth::None)
}

fn target_group(
    targets: Vec<String>,
    labels: BTreeMap<String, String>,
    source: String,
) -> Result<TargetGroup, String> {
    for target in &targets {
        if target.is_empty() || target.contains('/') || target.contains(char::is_whitespace) {
            return Err(format!(
                "{source}: {target:?} is not a valid host:port target"
            ));
        }
    }
    for name in labels.keys() {
        if !is_label_name(name) {
            return Err(format!("{source}: {name:?} is not a valid label name"));
        }
    }
    Ok(TargetGroup {
        targets,
        labels,
        source,
    })
}

/// The target groups of a `file_sd` file: a JSON or YAML list of `{targets, labels}`.
pub fn parse_file_sd(text: &str, file_name: &str) -> Result<Vec<TargetGroup>, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        source_name: file_name.to_owned(),
        message,
    };
    let groups: Vec<RawStaticConfig> = if file_name.ends_with(".json") {
        serde_json::from_str(text).map_err(|error| syntax(error.to_string()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml_ng::from_str(text).map_err(|error| syntax(error.to_string()))?
    };
    groups
        .into_iter()
        .enumerate()
        .map(|(index, group)| {
            target_group(group.targets, group.labels, format!("{file_name}:{index}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| ConfigError::Invalid {
            source_name: file_name.to_owned(),
            message,
        })
}

/// Whether `name` matches a file name pattern with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Classic two-pointer match with backtracking to the last star.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSofaFile {
    metric_scrape_configs: Option<Vec<RawSofaJob>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSofaJob {
    job_name: Option<String>,
    scrape_interval: Option<String>,
    metrics_path: Option<String>,
    scheme: Option<String>,
    params: Option<BTreeMap<String, Vec<String>>>,
    static_configs: Option<Vec<RawStaticConfig>>,
}

/// A SOFALookout `metric_scrape/*.yml` file (spec §3.4): exactly one top-level key,
/// `metric_scrape_configs`, a list of jobs with `job_name` and `scrape_interval` required,
/// `metrics_path` (default `/metrics`), `scheme`, `params` and a non-empty `static_configs`.
///
/// Each job becomes a scrape configuration with Prometheus semantics, with these choices
/// where the original differs or is unclear (spec §13.9): the default path is kept, the
/// group `labels` are applied, every target also gets `app=<job_name>` (the original's
/// `app` tag), the timeout is the original's 5 s read timeout capped at the interval, and
/// samples are stored at scrape time (not floored to the interval, no `ip`/`step` tags).
pub fn parse_sofalookout(text: &str, source_name: &str) -> Result<Vec<ScrapeConfig>, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        source_name: source_name.to_owned(),
        message,
    };
    let invalid = |message: String| ConfigError::Invalid {
        source_name: source_name.to_owned(),
        message,
    };
    let raw: RawSofaFile =
        serde_yaml_ng::from_str(text).map_err(|error| syntax(error.to_string()))?;
    let jobs = raw
        .metric_scrape_configs
        .ok_or_else(|| invalid("the top-level key must be metric_scrape_configs".into()))?;
    let mut configs = Vec::new();
    for (index, job) in jobs.into_iter().enumerate() {
        let config = sofalookout_job(job)
            .map_err(|message| invalid(format!("metric_scrape_configs[{index}]: {message}")))?;
        configs.push(config);
    }
    Ok(configs)
}

fn sofalookout_job(job: RawSofaJob) -> Result<ScrapeConfig, String> {
    let job_name = job
        .job_name
        .filter(|name| !name.is_empty())
        .ok_or("job_name is required")?;
    let in_job = |message: String| format!("job {job_name:?}: {message}");
    let interval_text = job
        .scrape_interval
        .ok_or_else(|| in_job("scrape_interval is required".into()))?;
    let scrape_interval_ms =
        positive_duration("scrape_interval", &interval_text).map_err(in_job)?;
    let scheme = job.scheme.unwrap_or_else(|| "http".to_owned());
    if scheme != "http" {
        return Err(in_job(format!(
            "scheme {scheme:?} is not supported (only http; not implemented)"
        )));
    }
    let metrics_path = job
        .metrics_path
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| "/metrics".to_owned());
    if !metrics_path.starts_with('/') {
        return Err(in_job(format!(
            "metrics_path {metrics_path:?} must start with '/'"
        )));
    }
    let groups = job.static_configs.unwrap_or_default();
    if groups.is_empty() {
        return Err(in_job(
            "static_configs is required and must not be empty".into(),
        ));
    }
    let static_configs = groups
        .into_iter()
        .enumerate()
        .map(|(index, group)| {
            let mut labels = group.labels;
            labels
                .entry("app".to_owned())
                .or_insert_with(|| job_name.clone());
            target_group(group.targets, labels, format!("static/{index}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(in_job)?;
    Ok(ScrapeConfig {
        scrape_timeout_ms: SOFALOOKOUT_TIMEOUT_MS.min(scrape_interval_ms),
        job_name,
        scrape_interval_ms,
        metrics_path,
        scheme,
        params: job.params.unwrap_or_default(),
        honor_labels: false,
        honor_timestamps: true,
        sample_limit: 0,
        auth: Auth::None,
        static_configs,
        file_sd_configs: Vec::new(),
        relabel_configs: Vec::new(),
        metric_relabel_configs: Vec::new(),
        origin: Origin::SofaLookout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ScrapeConfig>, ConfigError> {
        parse_prometheus(text, "test.yml", Path::new("/etc/lookout"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_scrape_config() {
        let configs = parse(
            r#"
global:
  scrape_interval: 30s
  external_labels: {dc: x}
rule_files: [a.yml]
scrape_configs:
  - job_name: node
    scrape_interval: 15s
    scrape_timeout: 5s
    metrics_path: /m
    params: {'collect[]': [cpu, meminfo]}
    honor_labels: true
    honor_timestamps: false
    sample_limit: 100
    basic_auth: {username: u, password_file: secret.txt}
    static_configs:
      - targets: ['127.0.0.1:9100', 'localhost:9101']
        labels: {group: canary}
    file_sd_configs:
      - files: ['sd/*.json']
        refresh_interval: 1m
    relabel_configs:
      - source_labels: [__address__]
        target_label: host
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'go_.*'
        action: drop
  - job_name: defaults
    static_configs: [{targets: ['127.0.0.1:1']}]
"#,
        )
        .unwrap();
        assert_eq!(configs.len(), 2);
        let node = &configs[0];
        assert_eq!(node.job_name, "node");
        assert_eq!(
            (node.scrape_interval_ms, node.scrape_timeout_ms),
            (15_000, 5_000)
        );
        assert_eq!(node.metrics_path, "/m");
        assert_eq!(node.params["collect[]"], vec!["cpu", "meminfo"]);
        assert!(node.honor_labels);
        assert!(!node.honor_timestamps);
        assert_eq!(node.sample_limit, 100);
        assert_eq!(
            node.auth,
            Auth::Basic {
                username: "u".into(),
                password: Some(Secret::File("/etc/lookout/secret.txt".into()))
            }
        );
        assert_eq!(node.static_configs[0].targets.len(), 2);
        assert_eq!(node.static_configs[0].labels["group"], "canary");
        assert_eq!(
            node.file_sd_configs[0].files,
            vec![PathBuf::from("/etc/lookout/sd/*.json")]
        );
        assert_eq!(node.file_sd_configs[0].refresh_interval_ms, 60_000);
        assert_eq!(node.relabel_configs.len(), 1);
        assert_eq!(node.metric_relabel_configs.len(), 1);
        let defaults = &configs[1];
        assert_eq!(defaults.scrape_interval_ms, 30_000, "the global interval");
        assert_eq!(defaults.scrape_timeout_ms, 10_000);
        assert_eq!(defaults.metrics_path, "/metrics");
        assert_eq!(defaults.scheme, "http");
        assert!(!defaults.honor_labels);
        assert!(defaults.honor_timestamps);
        assert_eq!(defaults.auth, Auth::None);
        assert_eq!(defaults.interval_text(), "30s");
    }

    #[test]
    fn timeout_defaults_to_the_interval_when_shorter() {
        let configs =
            parse("scrape_configs: [{job_name: a, scrape_interval: 2s, static_configs: []}]")
                .unwrap();
        assert_eq!(configs[0].scrape_timeout_ms, 2_000);
        let configs =
            parse("global: {scrape_interval: 1s}\nscrape_configs: [{job_name: a}]").unwrap();
        assert_eq!(configs[0].scrape_timeout_ms, 1_000);
        assert!(parse("global: {scrape_interval: 1s, scrape_timeout: 2s}")
            .unwrap_err()
            .to_string()
            .contains("global scrape timeout greater than scrape interval"));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bearer_and_authorization() {
        let configs = parse(
            "scrape_configs:\n - {job_name: a, bearer_token: t}\n \
             - {job_name: b, authorization: {type: Token, credentials_file: /run/t}}",
        )
        .unwrap();
        assert_eq!(
            configs[0].auth,
            Auth::Credentials {
                scheme: "Bearer".into(),
                credentials: Secret::Inline("t".into())
            }
        );
        assert_eq!(
            configs[1].auth,
            Auth::Credentials {
                scheme: "Token".into(),
                credentials: Secret::File("/run/t".into())
            }
        );
    }

    #[test]
    fn mistakes_are_errors_that_say_what_is_wrong() {
        let cases = [
            ("scrape_configs: [{scrape_interval: 1s}]", "job_name"),
            (
                "scrape_configs: [{job_name: a}, {job_name: a}]",
                "multiple scrape configs with job name \"a\"",
            ),
            (
                "scrape_configs: [{job_name: a, scrape_interval: 5s, scrape_timeout: 10s}]",
                "greater than scrape interval",
            ),
            ("scrape_configs: [{job_name: a, scrape_interval: 5}]", "duration"),
            ("scrape_configs: [{job_name: a, scrape_interval: 0s}]", "greater than zero"),
            ("scrape_configs: [{job_name: a, scheme: https}]", "no TLS"),
            ("scrape_configs: [{job_name: a, scheme: ftp}]", "invalid scheme"),
            ("scrape_configs: [{job_name: a, metrics_path: m}]", "must start with '/'"),
            (
                "scrape_configs: [{job_name: a, kubernetes_sd_configs: []}]",
                "kubernetes_sd_configs is not supported (not implemented)",
            ),
            ("scrape_configs: [{job_name: a, tls_config: {}}]", "tls_config is not supported"),
            ("scrape_configs: [{job_name: a, scrap_interval: 1s}]", "unknown setting \"scrap_interval\""),
            (
                "scrape_configs: [{job_name: a, bearer_token: t, basic_auth: {username: u}}]",
                "at most one of",
            ),
            (
                "scrape_configs: [{job_name: a, basic_auth: {password: p}}]",
                "requires a username",
            ),
            (
                "scrape_configs: [{job_name: a, static_configs: [{targets: ['http://x:1']}]}]",
                "not a valid host:port",
            ),
            (
                "scrape_configs: [{job_name: a, static_configs: [{targets: [a], labels: {'a-b': x}}]}]",
                "not a valid label name",
            ),
            (
                "scrape_configs: [{job_name: a, relabel_configs: [{action: hashmod, target_label: x}]}]",
                "relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus",
            ),
            (
                "scrape_configs: [{job_name: a, file_sd_configs: [{files: [x.txt]}]}]",
                "must end in .json",
            ),
            ("scrape_configs: [{job_name: a, file_sd_configs: [{files: ['d*/x.json']}]}]", "last path element"),
            ("alertmanagers: []", "unknown field"),
            ("scrape_configs: {job_name: a}", "invalid type"),
            ("scrape_configs: [job_name: a", "test.yml"),
            ("scrape_config_files: [a.yml]", "not implemented"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn file_sd_files_and_patterns() {
        let groups = parse_file_sd(
            r#"[{"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"env": "prod"}}, {"targets": []}]"#,
            "sd.json",
        )
        .unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].labels["env"], "prod");
        assert_eq!(groups[0].source, "sd.json:0");
        let groups = parse_file_sd("- targets: ['127.0.0.1:3']\n", "sd.yml").unwrap();
        assert_eq!(groups[0].targets, vec!["127.0.0.1:3"]);
        assert!(parse_file_sd("{", "sd.json").is_err());
        assert!(parse_file_sd("[{\"targets\": 1}]", "sd.json").is_err());
        assert!(parse_file_sd("- targets: [a]\n  labelz: {}\n", "sd.yml").is_err());
        assert!(glob_match("*.json", "a.json"));
        assert!(glob_match("node-?.yml", "node-1.yml"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("*.json", "a.yml"));
        assert!(!glob_match("node-?.yml", "node-12.yml"));
        assert!(glob_match("exact.json", "exact.json"));
    }

    #[test]
    fn sofalookout_jobs() {
        let configs = parse_sofalookout(
            r#"
metric_scrape_configs:
  - job_name: node
    scrape_interval: 15s
    params: {'collect[]': [cpu]}
    static_configs:
      - targets: ['127.0.0.1:9100']
        labels: {group: canary}
  - job_name: client
    metrics_path: ''
    scrape_interval: 1m
    static_configs: [{targets: ['127.0.0.1:9494']}]
"#,
            "jobs.yml",
        )
        .unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[0].origin, Origin::SofaLookout);
        assert_eq!(configs[0].scrape_timeout_ms, 5_000);
        assert_eq!(configs[0].static_configs[0].labels["app"], "node");
        assert_eq!(configs[0].static_configs[0].labels["group"], "canary");
        assert_eq!(configs[1].metrics_path, "/metrics", "the default is kept");
        for (text, expected) in [
            ("other: []", "unknown field"),
            ("{}", "metric_scrape_configs"),
            (
                "metric_scrape_configs: [{job_name: a, static_configs: [{targets: [x]}]}]",
                "scrape_interval is required",
            ),
            (
                "metric_scrape_configs: [{job_name: a, scrape_interval: 1s}]",
                "static_configs is required",
            ),
            (
                "metric_scrape_configs: [{job_name: a, scrape_interval: 1s, scrape_timeout: 1s, static_configs: [{targets: [x]}]}]",
                "unknown field",
            ),
        ] {
            let message = parse_sofalookout(text, "jobs.yml").unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn the_shared_sofalookout_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/lookout/prometheus-scrape-config.yml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            println!(
                "SKIPPED: {} not found (the shared fixtures)",
                path.display()
            );
            return;
        };
        let configs = parse_sofalookout(&text, "prometheus-scrape-config.yml").unwrap();
        let names: Vec<&str> = configs.iter().map(|c| c.job_name.as_str()).collect();
        assert_eq!(names, ["node", "lookout-client"]);
        assert_eq!(configs[0].static_configs[0].targets.len(), 2);
        assert_eq!(configs[0].params["collect[]"], vec!["cpu", "meminfo"]);
        assert_eq!(configs[1].scrape_interval_ms, 60_000);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_is_an_error_or_a_config(text in "[a-z_:{}\\[\\], \\n'0-9-]{0,80}") {
            let _ = parse(&text);
            let _ = parse_sofalookout(&text, "x.yml");
            let _ = parse_file_sd(&text, "x.yml");
            let _ = parse_file_sd(&text, "x.json");
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
            let _ = parse_sofalookout(&text, "x.yml");
        }
    }
}
