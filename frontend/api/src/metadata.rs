//! Metric metadata (type, help, unit) from remote-write requests, served at
//! `/api/v1/metadata`.
//!
//! Prometheus sends each metric family's metadata about once a minute beside its samples. It is
//! kept in memory only (it comes again after a restart within a minute), per metric name with
//! each distinct entry once, newest last; a bounded number of names and entries per name keeps
//! a sender that makes up names from growing it without end.

use std::collections::BTreeMap;
use std::sync::Arc;

use lookout_gateway::remote_write::MetricMetadata;
use parking_lot::RwLock;
use serde_json::{json, Map, Value};

/// Most metric names kept; metadata of further names is dropped.
const MAX_METRICS: usize = 100_000;
/// Most distinct entries kept per metric name; the oldest goes first.
const MAX_PER_METRIC: usize = 10;

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    help: String,
    unit: String,
}

/// The metadata received so far, shared by the query and the write listeners.
#[derive(Debug, Clone, Default)]
pub struct MetadataStore {
    metrics: Arc<RwLock<BTreeMap<String, Vec<Entry>>>>,
}

impl MetadataStore {
    /// Records the metadata of one request.
    pub fn record(&self, metadata: Vec<MetricMetadata>) {
        if metadata.is_empty() {
            return;
        }
        let mut metrics = self.metrics.write();
        for item in metadata {
            let entry = Entry {
                kind: item.kind,
                help: item.help,
                unit: item.unit,
            };
            if !metrics.contains_key(&item.metric) && metrics.len() >= MAX_METRICS {
                continue;
            }
            let entries = metrics.entry(item.metric).or_default();
            if entries.last() == Some(&entry) {
                continue;
            }
            entries.retain(|known| *known != entry);
            entries.push(entry);
            if entries.len() > MAX_PER_METRIC {
                entries.remove(0);
            }
        }
    }

    /// The API's `data`: metric name to its entries, at most `limit` names (`None`: all)
    /// and `limit_per_metric` entries each, only `metric` when given.
    pub fn query(
        &self,
        metric: Option<&str>,
        limit: Option<usize>,
        limit_per_metric: Option<usize>,
    ) -> Value {
        let metrics = self.metrics.read();
        let mut data = Map::new();
        let selected: Box<dyn Iterator<Item = (&String, &Vec<Entry>)>> = match metric {
            Some(name) => Box::new(metrics.get_key_value(name).into_iter()),
            None => Box::new(metrics.iter()),
        };
        for (name, entries) in selected {
            if limit.is_some_and(|limit| data.len() >= limit) {
                break;
            }
            let shown = limit_per_metric.unwrap_or(usize::MAX);
            let list: Vec<Value> = entries
                .iter()
                .take(shown)
                .map(|entry| json!({"type": entry.kind, "help": entry.help, "unit": entry.unit}))
                .collect();
            data.insert(name.clone(), Value::Array(list));
        }
        Value::Object(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(metric: &str, kind: &'static str, help: &str) -> MetricMetadata {
        MetricMetadata {
            metric: metric.into(),
            kind,
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn entries_are_distinct_bounded_and_filtered() {
        let store = MetadataStore::default();
        store.record(vec![
            item("b_total", "counter", "B."),
            item("a", "gauge", "A."),
        ]);
        store.record(vec![item("a", "gauge", "A.")]);
        store.record(vec![item("a", "gauge", "A, reworded.")]);
        let all = store.query(None, None, None);
        assert_eq!(
            all,
            json!({
                "a": [
                    {"type": "gauge", "help": "A.", "unit": ""},
                    {"type": "gauge", "help": "A, reworded.", "unit": ""}
                ],
                "b_total": [{"type": "counter", "help": "B.", "unit": ""}]
            })
        );
        assert_eq!(
            store.query(None, Some(1), Some(1)),
            json!({"a": [{"type": "gauge", "help": "A.", "unit": ""}]})
        );
        assert_eq!(
            store.query(Some("b_total"), None, None)["b_total"][0]["type"],
            "counter"
        );
        assert_eq!(store.query(Some("missing"), None, None), json!({}));
        assert_eq!(store.query(None, Some(0), None), json!({}));
        for round in 0..20 {
            store.record(vec![item("a", "gauge", &format!("help {round}"))]);
        }
        assert_eq!(
            store.query(Some("a"), None, None)["a"]
                .as_array()
                .unwrap()
                .len(),
            MAX_PER_METRIC
        );
    }
}
