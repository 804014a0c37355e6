//! `/api/v1/status/*`: build, flags, runtime, head cardinality, WAL replay and configuration,
//! in the shapes of Prometheus' status endpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::response::Response;
use lookout_model::MatchKind;
use lookout_storage::{collect_series, SelectRequest};
use serde_json::{json, Map, Value};

use crate::params::Params;
use crate::{success, ApiError, AppState};

/// What the status endpoints report about the process; the server fills it in.
#[derive(Clone, Default)]
pub struct StatusInfo {
    /// `status/flags`: every flag's name (as on the command line, without `--`) and
    /// effective value.
    pub flags: Vec<(String, String)>,
    /// `status/config`: the effective configuration as text (Prometheus puts its YAML in the
    /// `yaml` field; Lookout's configuration is TOML).
    pub config: String,
    /// `runtimeinfo.storageRetention`, e.g. `15d` or `15d or 10GiB`.
    pub storage_retention: String,
    /// Head statistics and WAL replay state of the native store, when there is one.
    pub store: Option<Arc<dyn StoreStatus>>,
}

impl std::fmt::Debug for StatusInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusInfo")
            .field("flags", &self.flags)
            .field("config", &self.config)
            .field("storage_retention", &self.storage_retention)
            .field("store", &self.store.is_some())
            .finish()
    }
}

/// Figures only the storage engine knows (implemented by the server over its engine, so that
/// this crate does not depend on one).
pub trait StoreStatus: Send + Sync + 'static {
    /// Size and time range of the in-memory head.
    fn head(&self) -> HeadStatus;
    /// Progress of the WAL replay at startup.
    fn wal_replay(&self) -> WalReplayStatus;
    /// Corruptions found (damaged blocks set aside, WAL damage).
    fn corruption_count(&self) -> i64 {
        0
    }
}

/// `headStats` of `status/tsdb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadStatus {
    /// Live series in the head.
    pub num_series: u64,
    /// Chunks in the head.
    pub chunk_count: u64,
    /// Oldest sample time in milliseconds (`i64::MAX` when empty, as Prometheus).
    pub min_time: i64,
    /// Newest sample time in milliseconds (`i64::MIN` when empty).
    pub max_time: i64,
}

impl Default for HeadStatus {
    fn default() -> Self {
        HeadStatus {
            num_series: 0,
            chunk_count: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
        }
    }
}

/// `status/walreplay`: the first and last WAL segment and the one being replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalReplayStatus {
    /// First segment.
    pub min: i64,
    /// Last segment.
    pub max: i64,
    /// Segment being replayed (`max` once replay is done).
    pub current: i64,
}

pub(crate) async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "lookout",
    }))
}

pub(crate) async fn flags(State(state): State<Arc<AppState>>) -> Response {
    // Go writes maps with sorted keys.
    let sorted: BTreeMap<&str, &str> = state
        .options
        .status
        .flags
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let map: Map<String, Value> = sorted
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
        .collect();
    success(Value::Object(map))
}

pub(crate) async fn config(State(state): State<Arc<AppState>>) -> Response {
    success(json!({"yaml": state.options.status.config}))
}

pub(crate) async fn walreplay(State(state): State<Arc<AppState>>) -> Response {
    let replay = state
        .options
        .status
        .store
        .as_ref()
        .map(|store| store.wal_replay())
        .unwrap_or_default();
    success(json!({"min": replay.min, "max": replay.max, "current": replay.current}))
}

pub(crate) async fn runtimeinfo(State(state): State<Arc<AppState>>) -> Response {
    let status = &state.options.status;
    let cwd = std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let workers = tokio::runtime::Handle::try_current()
        .map(|runtime| runtime.metrics().num_workers())
        .unwrap_or(0);
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    let started = format_rfc3339(state.started);
    success(json!({
        "startTime": started,
        "CWD": cwd,
        "hostname": hostname,
        "serverTime": format_rfc3339(SystemTime::now()),
        "reloadConfigSuccess": true,
        "lastConfigTime": started,
        "corruptionCount": status.store.as_ref().map_or(0, |store| store.corruption_count()),
        "goroutineCount": workers,
        "GOMAXPROCS": parallelism,
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": status.storage_retention,
    }))
}

/// `status/tsdb?limit=N`: head statistics and the top `N` (default 10) of each cardinality
/// list, computed over the head's time range through the storage's own read path.
pub(crate) async fn tsdb(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref().unwrap_or_default().as_bytes());
    let limit = match params.get("limit") {
        None | Some("") => 10,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if limit >= 1 => limit,
            _ => return Err(ApiError::bad_data("limit must be a positive number")),
        },
    };
    let head = state
        .options
        .status
        .store
        .as_ref()
        .map(|store| store.head());
    let (mint, maxt) = head.map_or((i64::MIN, i64::MAX), |head| (head.min_time, head.max_time));
    let mut cardinality = Cardinality::default();
    if mint <= maxt {
        let every_series = lookout_model::Matcher::new(MatchKind::Regex, "__name__", ".+")
            .map_err(|error| ApiError::internal(error.to_string()))?;
        let mut request = SelectRequest::new(vec![every_series], mint, maxt);
        request.hints.labels_only = true;
        for series in collect_series(state.storage.select(request).await?).await? {
            cardinality.add(&series.labels);
        }
    }
    let head = head.unwrap_or(HeadStatus {
        num_series: cardinality.series,
        ..HeadStatus::default()
    });
    let pairs_by_name = cardinality.values_by_name();
    let value_counts: HashMap<&str, u64> = pairs_by_name
        .iter()
        .map(|(name, values)| (*name, values.len() as u64))
        .collect();
    let value_bytes: HashMap<&str, u64> = pairs_by_name
        .iter()
        .map(|(name, values)| (*name, values.iter().map(|value| value.len() as u64).sum()))
        .collect();
    let pair_counts: HashMap<String, u64> = cardinality
        .series_by_pair
        .iter()
        .map(|((name, value), count)| (format!("{name}={value}"), *count))
        .collect();
    let by_metric: HashMap<&str, u64> = cardinality
        .series_by_pair
        .iter()
        .filter(|((name, _), _)| name == "__name__")
        .map(|((_, value), count)| (value.as_str(), *count))
        .collect();
    Ok(success(json!({
        "headStats": {
            "numSeries": head.num_series,
            "numLabelPairs": cardinality.series_by_pair.len(),
            "chunkCount": head.chunk_count,
            "minTime": head.min_time,
            "maxTime": head.max_time,
        },
        "seriesCountByMetricName": top(by_metric, limit),
        "labelValueCountByLabelName": top(value_counts, limit),
        "memoryInBytesByLabelName": top(value_bytes, limit),
        "seriesCountByLabelValuePair": top(pair_counts, limit),
    })))
}

/// Series counts per label pair over a set of series.
#[derive(Default)]
struct Cardinality {
    series: u64,
    series_by_pair: HashMap<(String, String), u64>,
}

impl Cardinality {
    fn add(&mut self, labels: &lookout_model::Labels) {
        self.series += 1;
        for label in labels.iter() {
            *self
                .series_by_pair
                .entry((label.name.to_string(), label.value.to_string()))
                .or_default() += 1;
        }
    }

    fn values_by_name(&self) -> HashMap<&str, BTreeSet<&str>> {
        let mut out: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for (name, value) in self.series_by_pair.keys() {
            out.entry(name.as_str()).or_default().insert(value.as_str());
        }
        out
    }
}

/// `[{"name":...,"value":...}]`, largest first, ties by name, at most `limit`.
fn top<K: AsRef<str>>(counts: HashMap<K, u64>, limit: usize) -> Value {
    let mut entries: Vec<(K, u64)> = counts.into_iter().collect();
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_ref().cmp(b.0.as_ref())));
    entries.truncate(limit);
    Value::Array(
        entries
            .into_iter()
            .map(|(name, value)| json!({"name": name.as_ref(), "value": value}))
            .collect(),
    )
}

/// A time as Go's `time.Time` marshals to JSON (RFC 3339 with nanoseconds, trailing zeros
/// of the fraction dropped), in UTC.
pub fn format_rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs() as i64;
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = lookout_model::time::civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    );
    let nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_format_like_go() {
        let at = |seconds: u64, nanos: u32| UNIX_EPOCH + Duration::new(seconds, nanos);
        assert_eq!(format_rfc3339(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(at(1_700_000_000, 250_000_000)),
            "2023-11-14T22:13:20.25Z"
        );
        assert_eq!(
            format_rfc3339(at(951_782_400, 1)),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn top_sorts_by_count_then_name() {
        let counts: HashMap<&str, u64> = [("b", 2), ("a", 2), ("c", 5), ("d", 1)].into();
        assert_eq!(
            top(counts, 3),
            json!([{"name": "c", "value": 5}, {"name": "a", "value": 2}, {"name": "b", "value": 2}])
        );
    }
}
