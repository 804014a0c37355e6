//! `GET /api/v1/targets`: the scrape targets in Prometheus' shape, from a [`TargetsSource`]
//! the server implements (its scrape manager). Without one both lists are empty.
//!
//! `state=active|dropped|any` (default any) and `scrapePool=<job>` filter as in Prometheus.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::status::format_rfc3339;
use crate::{success, AppState};

/// The health of a target as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHealth {
    /// Not scraped yet.
    Unknown,
    /// The last scrape succeeded.
    Up,
    /// The last scrape failed.
    Down,
}

impl TargetHealth {
    /// `unknown`, `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetHealth::Unknown => "unknown",
            TargetHealth::Up => "up",
            TargetHealth::Down => "down",
        }
    }
}

/// A target being scraped.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveTarget {
    /// Labels before relabelling.
    pub discovered_labels: BTreeMap<String, String>,
    /// Labels its samples get.
    pub labels: BTreeMap<String, String>,
    /// The job.
    pub scrape_pool: String,
    /// The URL scraped.
    pub scrape_url: String,
    /// The last scrape's error, empty when it succeeded.
    pub last_error: String,
    /// When the last scrape started; `None` before the first.
    pub last_scrape: Option<SystemTime>,
    /// How long the last scrape took.
    pub last_scrape_duration_seconds: f64,
    /// Up, down or unknown.
    pub health: TargetHealth,
    /// As Prometheus prints durations (`15s`).
    pub scrape_interval: String,
    /// As Prometheus prints durations (`10s`).
    pub scrape_timeout: String,
}

/// A target relabelling dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedTarget {
    /// Labels before relabelling.
    pub discovered_labels: BTreeMap<String, String>,
    /// The job.
    pub scrape_pool: String,
}

/// The targets at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetsSnapshot {
    /// Targets being scraped.
    pub active: Vec<ActiveTarget>,
    /// Targets dropped by relabelling.
    pub dropped: Vec<DroppedTarget>,
}

/// Where the targets come from (the server's scrape manager).
pub trait TargetsSource: Send + Sync {
    /// The targets now.
    fn targets(&self) -> TargetsSnapshot;
}

/// A shared [`TargetsSource`].
pub type SharedTargets = Arc<dyn TargetsSource>;

fn labels_object(labels: &BTreeMap<String, String>) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect::<Map<String, Value>>(),
    )
}

/// Go's zero `time.Time`, what Prometheus shows before the first scrape.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The scrape URL as other hosts reach it: a loopback host (`localhost`, `127.x.y.z`,
/// `[::1]`) replaced by `hostname`, as Prometheus' `globalUrl`.
pub fn global_url(scrape_url: &str, hostname: &str) -> String {
    let Some((scheme, rest)) = scrape_url.split_once("://") else {
        return scrape_url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => authority.split_at(end + 1),
            None => (authority, ""),
        }
    } else {
        match authority.rfind(':') {
            Some(colon) => authority.split_at(colon),
            None => (authority, ""),
        }
    };
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|address| address.is_loopback());
    if !loopback || hostname.is_empty() {
        return scrape_url.to_owned();
    }
    format!("{scheme}://{hostname}{port}{tail}")
}

/// This machine's name, as Prometheus' `os.Hostname`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The `data` of `/api/v1/targets` for a snapshot and the filters.
pub fn targets_json(snapshot: &TargetsSnapshot, state: &str, pool: Option<&str>) -> Value {
    let hostname = hostname();
    let in_pool = |name: &str| pool.is_none_or(|pool| pool == name);
    let show_active = state == "active" || state == "any" || state.is_empty();
    let show_dropped = state == "dropped" || state == "any" || state.is_empty();
    let active: Vec<Value> = snapshot
        .active
        .iter()
        .filter(|target| show_active && in_pool(&target.scrape_pool))
        .map(|target| {
            json!({
                "discoveredLabels": labels_object(&target.discovered_labels),
                "labels": labels_object(&target.labels),
                "scrapePool": target.scrape_pool,
                "scrapeUrl": target.scrape_url,
                "globalUrl": global_url(&target.scrape_url, &hostname),
                "lastError": target.last_error,
                "lastScrape": target.last_scrape.map_or_else(|| ZERO_TIME.to_owned(), format_rfc3339),
                "lastScrapeDuration": target.last_scrape_duration_seconds,
                "health": target.health.as_str(),
                "scrapeInterval": target.scrape_interval,
                "scrapeTimeout": target.scrape_timeout,
            })
        })
        .collect();
    let dropped: Vec<Value> = snapshot
        .dropped
        .iter()
        .filter(|target| show_dropped && in_pool(&target.scrape_pool))
        .map(|target| {
            json!({
                "discoveredLabels": labels_object(&target.discovered_labels),
                "scrapePool": target.scrape_pool,
            })
        })
        .collect();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for target in &snapshot.dropped {
        *counts.entry(target.scrape_pool.as_str()).or_default() += 1;
    }
    for target in &snapshot.active {
        counts.entry(target.scrape_pool.as_str()).or_default();
    }
    json!({
        "activeTargets": active,
        "droppedTargets": dropped,
        "droppedTargetCounts": counts,
    })
}

/// `GET /api/v1/targets`
pub(crate) async fn targets(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut filter_state = String::new();
    let mut pool = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "state" => filter_state = value.to_ascii_lowercase(),
            "scrapePool" => pool = Some(value.into_owned()),
            _ => {}
        }
    }
    let snapshot = state
        .options
        .targets
        .as_ref()
        .map(|source| source.targets())
        .unwrap_or_default();
    success(targets_json(&snapshot, &filter_state, pool.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn global_urls_name_the_host() {
        assert_eq!(
            global_url("http://127.0.0.1:9100/metrics?a=b", "vm"),
            "http://vm:9100/metrics?a=b"
        );
        assert_eq!(
            global_url("http://localhost/metrics", "vm"),
            "http://vm/metrics"
        );
        assert_eq!(global_url("http://[::1]:9100/m", "vm"), "http://vm:9100/m");
        assert_eq!(
            global_url("http://10.1.2.3:9100/metrics", "vm"),
            "http://10.1.2.3:9100/metrics"
        );
        assert_eq!(
            global_url("http://127.0.0.1:1/m", ""),
            "http://127.0.0.1:1/m"
        );
    }

    #[test]
    fn prometheus_shape_and_filters() {
        let snapshot = TargetsSnapshot {
            active: vec![ActiveTarget {
                discovered_labels: labels(&[("__address__", "127.0.0.1:9100"), ("job", "node")]),
                labels: labels(&[("instance", "127.0.0.1:9100"), ("job", "node")]),
                scrape_pool: "node".into(),
                scrape_url: "http://127.0.0.1:9100/metrics".into(),
                last_error: String::new(),
                last_scrape: None,
                last_scrape_duration_seconds: 0.0,
                health: TargetHealth::Unknown,
                scrape_interval: "15s".into(),
                scrape_timeout: "10s".into(),
            }],
            dropped: vec![DroppedTarget {
                discovered_labels: labels(&[("__address__", "x:1")]),
                scrape_pool: "other".into(),
            }],
        };
        let all = targets_json(&snapshot, "", None);
        let active = &all["activeTargets"][0];
        for key in [
            "discoveredLabels",
            "labels",
            "scrapePool",
            "scrapeUrl",
            "globalUrl",
            "lastError",
            "lastScrape",
            "lastScrapeDuration",
            "health",
            "scrapeInterval",
            "scrapeTimeout",
        ] {
            assert!(active.get(key).is_some(), "{key} missing: {active}");
        }
        assert_eq!(active["lastScrape"], ZERO_TIME);
        assert_eq!(active["health"], "unknown");
        assert_eq!(all["droppedTargets"][0]["scrapePool"], "other");
        assert_eq!(all["droppedTargetCounts"]["other"], 1);
        assert_eq!(all["droppedTargetCounts"]["node"], 0);
        let active_only = targets_json(&snapshot, "active", None);
        assert_eq!(active_only["droppedTargets"].as_array().unwrap().len(), 0);
        let dropped_only = targets_json(&snapshot, "dropped", None);
        assert_eq!(dropped_only["activeTargets"].as_array().unwrap().len(), 0);
        let pool = targets_json(&snapshot, "any", Some("other"));
        assert_eq!(pool["activeTargets"].as_array().unwrap().len(), 0);
        assert_eq!(pool["droppedTargets"].as_array().unwrap().len(), 1);
    }
}
