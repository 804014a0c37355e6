//! Metricbeat 6 (or any Elasticsearch `_bulk` sender of Metricbeat-shaped documents) as a
//! pure decoder (spec §3.5): an NDJSON body of action lines (`{"index":{...}}`) and
//! documents, each document flattened into samples.
//!
//! Per document: the timestamp is `@timestamp` (ISO-8601) floored to 10 s; the tags are the
//! entries of the `metricset` object, then of `beat` (so `beat.name` overwrites
//! `metricset.name` under `name`), minus `rtt`, keys and values as sent (strings as they are,
//! other values as JSON text); `type` is dropped; every other top-level object is walked depth
//! first and each numeric leaf becomes a sample named by its dotted path
//! (`system.cpu.user.pct`). Strings, booleans and arrays elsewhere are ignored: they are not
//! tags (§13.4). The request's [`Enrichment`] adds `ip`.
//!
//! A line that is not a JSON object, or a document without a usable `@timestamp` (a log
//! record rather than a metric document, say), is skipped and counted; the rest is kept. The
//! actions are returned so the answer can list one item per action, as Elasticsearch does,
//! each with the reason its document was skipped, if it was ([`BulkAction::error`]).

use serde_json::{Map, Value};

use crate::lookout::time::parse_iso8601;
use crate::lookout::{
    align, read_body, Collector, Decoded, Enrichment, Limits, LookoutError, SkipReason, Tags,
};

/// Every document's timestamp is floored to this (no `step` is ever given, §3.5).
const STEP_MS: i64 = 10_000;

/// The bulk actions that name an index.
const ACTIONS: [&str; 4] = ["index", "create", "update", "delete"];

/// One action line of a bulk body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkAction {
    /// `index`, `create`, `update` or `delete`.
    pub action: String,
    /// Its `_index`, if given.
    pub index: Option<String>,
    /// Its `_type` (Elasticsearch 6), if given.
    pub doc_type: Option<String>,
    /// Why the document that followed it was skipped as a whole (not a JSON object, no
    /// usable `@timestamp`); `None` when it was flattened (or there was none: `delete`).
    pub error: Option<String>,
}

/// A decoded bulk body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkDecoded {
    /// The samples and the skip counts.
    pub decoded: Decoded,
    /// The action lines, in order.
    pub actions: Vec<BulkAction>,
}

/// Decodes a `_bulk` body.
pub fn decode_bulk(
    body: &[u8],
    enrichment: &Enrichment,
    limits: &Limits,
) -> Result<BulkDecoded, LookoutError> {
    let bytes = read_body(body, false, &limits.decode)?;
    let mut collector = Collector::new(limits);
    let mut actions: Vec<BulkAction> = Vec::new();
    // The action whose document line comes next, if one does (`delete` has none).
    let mut awaiting: Option<usize> = None;
    for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let skipped = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(document)) => {
                if let Some(action) = action(&document) {
                    awaiting = (action.action != "delete").then_some(actions.len());
                    actions.push(action);
                    continue;
                }
                flatten_document(document, enrichment, &mut collector)?
            }
            Ok(_) => Some((SkipReason::MalformedJson, "not a JSON object".to_owned())),
            Err(error) => Some((SkipReason::MalformedJson, error.to_string())),
        };
        if let Some((reason, message)) = skipped {
            collector.skip(reason, || format!("line {}: {message}", index + 1));
            if let Some(action) = awaiting.and_then(|position| actions.get_mut(position)) {
                action.error = Some(message);
            }
        }
        awaiting = None;
    }
    Ok(BulkDecoded {
        decoded: collector.decoded,
        actions,
    })
}

/// `{"index":{"_index":...}}` and the like: one key, an action name, over an object.
fn action(line: &Map<String, Value>) -> Option<BulkAction> {
    if line.len() != 1 {
        return None;
    }
    let (name, Value::Object(meta)) = line.iter().next()? else {
        return None;
    };
    if !ACTIONS.contains(&name.as_str()) {
        return None;
    }
    let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(BulkAction {
        action: name.clone(),
        index: text("_index"),
        doc_type: text("_type"),
        error: None,
    })
}

/// Flattens one document into samples; `Ok(Some(..))` when it has no usable `@timestamp`
/// and is skipped as a whole.
fn flatten_document(
    mut document: Map<String, Value>,
    enrichment: &Enrichment,
    collector: &mut Collector<'_>,
) -> Result<Option<(SkipReason, String)>, LookoutError> {
    let timestamp = document
        .get("@timestamp")
        .and_then(Value::as_str)
        .and_then(parse_iso8601);
    let Some(timestamp) = timestamp else {
        return Ok(Some((
            SkipReason::InvalidTime,
            "no @timestamp in ISO-8601: not a metric document".to_owned(),
        )));
    };
    let timestamp = align(timestamp, Some(STEP_MS));
    let mut tags = Tags::new();
    for key in ["metricset", "beat"] {
        if let Some(Value::Object(entries)) = document.remove(key) {
            for (name, value) in entries {
                if name == "rtt" {
                    continue;
                }
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                tags.insert(name, text);
            }
        }
    }
    enrichment.apply(&mut tags);
    document.remove("type");
    let mut path = String::new();
    for (key, value) in &document {
        if value.is_object() {
            walk(key, value, &mut path, &tags, timestamp, collector)?;
        }
    }
    Ok(None)
}

/// Depth first through `value` (reached by `key`), one sample per numeric leaf.
fn walk(
    key: &str,
    value: &Value,
    path: &mut String,
    tags: &Tags,
    timestamp: i64,
    collector: &mut Collector<'_>,
) -> Result<(), LookoutError> {
    let parent_length = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    match value {
        Value::Object(children) => {
            for (child_key, child) in children {
                walk(child_key, child, path, tags, timestamp, collector)?;
            }
        }
        Value::Number(number) => {
            if let Some(sample) = number.as_f64() {
                collector.sample(path, tags, timestamp, sample)?;
            }
        }
        _ => {}
    }
    path.truncate(parent_length);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Enrichment {
        Enrichment {
            client_ip: Some("192.0.2.8".into()),
            extra_tags: Tags::new(),
        }
    }

    #[test]
    fn documents_flatten_and_actions_are_listed() {
        let body = concat!(
            "{\"index\":{\"_index\":\"metricbeat-6.8.23-2024.01.01\",\"_type\":\"doc\"}}\n",
            "{\"@timestamp\":\"2024-01-01T00:00:07.5Z\",\"metricset\":{\"name\":\"load\",\"module\":\"system\",\"rtt\":9},",
            "\"system\":{\"load\":{\"1\":0.5,\"norm\":{\"1\":0.25},\"flag\":true,\"list\":[1,2]},\"label\":\"x\"},",
            "\"beat\":{\"hostname\":\"h\",\"version\":6},\"type\":{\"n\":1},\"tags\":[\"a\"]}\r\n",
            "not json\n",
            "{\"index\":{}}\n",
            "{\"system\":{\"x\":1}}\n",
            "\n",
        );
        let decoded = decode_bulk(body.as_bytes(), &peer(), &Limits::default()).unwrap();
        assert_eq!(
            decoded.actions,
            [
                BulkAction {
                    action: "index".into(),
                    index: Some("metricbeat-6.8.23-2024.01.01".into()),
                    doc_type: Some("doc".into()),
                    error: None,
                },
                BulkAction {
                    action: "index".into(),
                    index: None,
                    doc_type: None,
                    error: Some("no @timestamp in ISO-8601: not a metric document".into()),
                },
            ]
        );
        let series: Vec<String> = decoded
            .decoded
            .batch
            .series
            .iter()
            .map(|series| format!("{} @{}", series.labels, series.samples[0].timestamp.0))
            .collect();
        let tags = r#"hostname="h", ip="192.0.2.8", module="system", name="load", version="6""#;
        assert_eq!(
            series,
            [
                format!("system.load.1{{{tags}}} @1704067200000"),
                format!("system.load.norm.1{{{tags}}} @1704067200000"),
            ]
        );
        assert_eq!(decoded.decoded.skipped[&SkipReason::MalformedJson], 1);
        assert_eq!(decoded.decoded.skipped[&SkipReason::InvalidTime], 1);
    }

    /// Each action learns what became of its document: rsyslog's default template (a log
    /// record without `@timestamp`), a broken line, a `delete` (no document), a metric
    /// document without numbers (nothing to store, nothing lost).
    #[test]
    fn skipped_documents_are_attributed_to_their_actions() {
        let body = concat!(
            "{\"index\":{\"_index\":\"logs\",\"_type\":\"doc\"}}\n",
            "{\"message\":\"hello\",\"timereported\":\"2024-01-01T00:00:07Z\"}\n",
            "{\"delete\":{\"_index\":\"logs\",\"_id\":\"1\"}}\n",
            "{\"create\":{\"_index\":\"m\"}}\n",
            "{\"@timestamp\":\"2024-01-01T00:00:07Z\",\"rsyslog\":{\"name\":\"global\",\"values\":{}}}\n",
            "{\"index\":{\"_index\":\"m\"}}\n",
            "{\"@timestamp\": oops}\n",
            "{\"index\":{\"_index\":\"m\"}}\n",
            "{\"@timestamp\":\"2024-01-01T00:00:07Z\",\"rsyslog\":{\"size\":3}}\n",
        );
        let decoded = decode_bulk(body.as_bytes(), &peer(), &Limits::default()).unwrap();
        let errors: Vec<(&str, Option<&str>)> = decoded
            .actions
            .iter()
            .map(|action| (action.action.as_str(), action.error.as_deref()))
            .collect();
        assert_eq!(errors.len(), 5);
        assert_eq!(
            errors[0],
            (
                "index",
                Some("no @timestamp in ISO-8601: not a metric document")
            )
        );
        assert_eq!(errors[1], ("delete", None));
        assert_eq!(errors[2], ("create", None));
        assert_eq!(errors[3].0, "index");
        assert!(
            errors[3]
                .1
                .is_some_and(|error| error.contains("expected value")),
            "{errors:?}"
        );
        assert_eq!(errors[4], ("index", None));
        assert_eq!(decoded.decoded.batch.series.len(), 1);
        assert_eq!(decoded.decoded.skipped[&SkipReason::InvalidTime], 1);
        assert_eq!(decoded.decoded.skipped[&SkipReason::MalformedJson], 1);
    }
}
