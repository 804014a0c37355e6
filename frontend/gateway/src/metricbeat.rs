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

    use std::collections::BTreeMap;

    use lookout_model::Labels;
    use proptest::prelude::*;

    use crate::lookout::time::format_utc;

    /// A value inside a generated document.
    #[derive(Debug, Clone)]
    enum Node {
        /// A number (exactly representable): one sample when it is inside an object.
        Number(f64),
        /// A string, boolean, null or array: never a sample.
        Other(String),
        Object(BTreeMap<String, Node>),
    }

    impl Node {
        fn json(&self) -> String {
            match self {
                Node::Number(value) => serde_json::to_string(value).unwrap(),
                Node::Other(text) => text.clone(),
                Node::Object(children) => {
                    let members: Vec<String> = children
                        .iter()
                        .map(|(key, child)| {
                            format!("{}:{}", serde_json::to_string(key).unwrap(), child.json())
                        })
                        .collect();
                    format!("{{{}}}", members.join(","))
                }
            }
        }

        /// `(dotted path, value)` of every number under this object reached by `path`.
        fn samples(&self, path: &str, out: &mut Vec<(String, f64)>) {
            match self {
                Node::Number(value) => out.push((path.to_owned(), *value)),
                Node::Other(_) => {}
                Node::Object(children) => {
                    for (key, child) in children {
                        child.samples(&format!("{path}.{key}"), out);
                    }
                }
            }
        }
    }

    fn node_strategy() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            3 => (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| Node::Number(n as f64)),
            3 => any::<i32>().prop_map(|n| Node::Number(f64::from(n) / 8.0)),
            2 => prop_oneof![
                "[a-z0-9 ]{0,5}".prop_map(|text| serde_json::to_string(&text).unwrap()),
                Just("true".to_owned()),
                Just("null".to_owned()),
                Just("[1,2.5]".to_owned()),
            ]
            .prop_map(Node::Other),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            proptest::collection::btree_map("[n-z]{1,3}", inner, 0..4).prop_map(Node::Object)
        })
    }

    /// One line (or action and document) of a generated bulk body.
    #[derive(Debug, Clone)]
    enum Item {
        /// An action line: `index`, `create` or `delete`.
        Action(&'static str),
        /// A metric document; `too_many_tags` ones break the label limit.
        Metric {
            timestamp_ms: i64,
            metricset: BTreeMap<String, String>,
            beat: BTreeMap<String, String>,
            too_many_tags: bool,
            body: BTreeMap<String, Node>,
        },
        /// A document without a usable `@timestamp` (the JSON text of the one it has).
        NoTimestamp(Option<&'static str>, BTreeMap<String, Node>),
        /// A line that is not a JSON object.
        Junk(String),
        /// Only blanks.
        Blank(&'static str),
    }

    /// Keys of a `too_many_tags` document's `metricset`: with `__name__` and `ip`, 10
    /// labels, beyond [`MAX_LABELS`].
    const MANY_TAG_KEYS: [&str; 8] = ["f", "g", "h", "i", "j", "k", "l", "m"];
    /// `__name__`, tags `a`-`e`, `ip`.
    const MAX_LABELS: usize = 7;

    fn tag_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 .]{1,5}".prop_map(|text| serde_json::to_string(&text).unwrap()),
            any::<i16>().prop_map(|n| n.to_string()),
        ]
    }

    fn item_strategy() -> impl Strategy<Value = Item> {
        let body = || proptest::collection::btree_map("[n-z]{1,3}", node_strategy(), 0..4);
        let metric = (
            0i64..4_000_000_000_000,
            proptest::collection::btree_map("[a-d]|rtt", tag_value(), 0..4),
            proptest::collection::btree_map("[b-e]", tag_value(), 0..3),
            prop_oneof![4 => Just(false), 1 => Just(true)],
            body(),
        )
            .prop_map(|(timestamp_ms, metricset, beat, too_many_tags, body)| {
                let metricset = if too_many_tags {
                    MANY_TAG_KEYS
                        .iter()
                        .map(|key| ((*key).to_owned(), "\"v\"".to_owned()))
                        .collect()
                } else {
                    metricset
                };
                Item::Metric {
                    timestamp_ms,
                    metricset,
                    beat,
                    too_many_tags,
                    body,
                }
            });
        prop_oneof![
            3 => proptest::sample::select(vec!["index", "create", "delete"]).prop_map(Item::Action),
            4 => metric,
            1 => (
                proptest::option::of(proptest::sample::select(vec!["\"yesterday\"", "1704067207000", "null", "\"2024-02-30T00:00:00Z\""])),
                body(),
            )
                .prop_map(|(timestamp, body)| Item::NoTimestamp(timestamp, body)),
            1 => prop_oneof![
                "x[a-z {}:,\"]{0,12}",
                "\\[[0-9,]{0,6}\\]",
                Just("42".to_owned()),
                Just("\"text\"".to_owned()),
                Just("{\"@timestamp\": oops}".to_owned()),
                Just("{\"@timestamp\":\"2024-01-01T00:00:00Z\",\"system\":{\"x\":1}".to_owned()),
            ]
            .prop_map(Item::Junk),
            1 => proptest::sample::select(vec!["", " ", "\t\r"]).prop_map(Item::Blank),
        ]
    }

    fn object(members: &[(String, String)]) -> String {
        let members: Vec<String> = members
            .iter()
            .map(|(key, value)| format!("{}:{value}", serde_json::to_string(key).unwrap()))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// What a generated body must decode to.
    #[derive(Debug, Default)]
    struct Expected {
        /// `(labels, value bits, timestamp)` of every stored sample.
        samples: Vec<(String, u64, i64)>,
        skipped: BTreeMap<SkipReason, u64>,
        /// Per action line: whether its document was skipped as a whole.
        action_errors: Vec<(&'static str, bool)>,
    }

    fn render(items: &[Item]) -> (String, Expected) {
        let mut expected = Expected::default();
        let mut lines = Vec::new();
        // The action (by position) waiting for its document.
        let mut awaiting: Option<usize> = None;
        for item in items {
            let (line, skipped) = match item {
                Item::Blank(text) => {
                    lines.push((*text).to_owned());
                    continue;
                }
                Item::Action(action) => {
                    awaiting = (*action != "delete").then_some(expected.action_errors.len());
                    expected.action_errors.push((action, false));
                    lines.push(format!(
                        "{{\"{action}\":{{\"_index\":\"metricbeat-6.8.23\",\"_type\":\"doc\"}}}}"
                    ));
                    continue;
                }
                Item::Metric {
                    timestamp_ms,
                    metricset,
                    beat,
                    too_many_tags,
                    body,
                } => {
                    let mut members = vec![
                        (
                            "@timestamp".to_owned(),
                            serde_json::to_string(&format_utc(*timestamp_ms)).unwrap(),
                        ),
                        (
                            "metricset".to_owned(),
                            object(&metricset.clone().into_iter().collect::<Vec<_>>()),
                        ),
                        (
                            "beat".to_owned(),
                            object(&beat.clone().into_iter().collect::<Vec<_>>()),
                        ),
                        ("type".to_owned(), "{\"n\":1}".to_owned()),
                    ];
                    members.extend(body.iter().map(|(key, node)| (key.clone(), node.json())));
                    let mut tags: BTreeMap<String, String> = BTreeMap::new();
                    for (key, value) in metricset.iter().chain(beat) {
                        if key != "rtt" {
                            let value = serde_json::from_str::<String>(value)
                                .unwrap_or_else(|_| value.clone());
                            tags.insert(key.clone(), value);
                        }
                    }
                    tags.insert("ip".into(), "192.0.2.8".into());
                    let mut samples = Vec::new();
                    for (key, node) in body {
                        if let Node::Object(_) = node {
                            node.samples(key, &mut samples);
                        }
                    }
                    let timestamp = timestamp_ms - timestamp_ms % 10_000;
                    for (name, value) in samples {
                        if *too_many_tags {
                            *expected
                                .skipped
                                .entry(SkipReason::InvalidLabels)
                                .or_default() += 1;
                        } else {
                            let pairs = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                            let labels =
                                Labels::from_pairs(pairs.chain([("__name__", name.as_str())]))
                                    .unwrap();
                            expected
                                .samples
                                .push((labels.to_string(), value.to_bits(), timestamp));
                        }
                    }
                    (object(&members), None)
                }
                Item::NoTimestamp(timestamp, body) => {
                    let mut members: Vec<(String, String)> = timestamp
                        .map(|timestamp| ("@timestamp".to_owned(), timestamp.to_owned()))
                        .into_iter()
                        .collect();
                    members.extend(body.iter().map(|(key, node)| (key.clone(), node.json())));
                    (object(&members), Some(SkipReason::InvalidTime))
                }
                Item::Junk(text) => (text.clone(), Some(SkipReason::MalformedJson)),
            };
            lines.push(line);
            if let Some(reason) = skipped {
                *expected.skipped.entry(reason).or_default() += 1;
                if let Some(position) = awaiting {
                    expected.action_errors[position].1 = true;
                }
            }
            awaiting = None;
        }
        (lines.join("\n") + "\n", expected)
    }

    proptest! {
        /// Generated bulk bodies mixing actions, Metricbeat documents (tags in `metricset`
        /// and `beat`, numbers at any depth beside strings, booleans, nulls and arrays),
        /// documents without a usable `@timestamp`, broken lines, blank lines and label sets
        /// over the limit: every number the generator put in an object is stored (dotted
        /// name, tags, value, time floored to 10 s) or counted as `invalid_labels`; every
        /// skipped line is counted and reported on the action it belongs to.
        #[test]
        fn every_number_is_stored_or_counted(items in proptest::collection::vec(item_strategy(), 0..12)) {
            let (body, expected) = render(&items);
            let mut limits = Limits::default();
            limits.labels.max_labels = MAX_LABELS;
            let decoded = decode_bulk(body.as_bytes(), &peer(), &limits).unwrap();
            let mut stored: Vec<(String, u64, i64)> = decoded
                .decoded
                .batch
                .series
                .iter()
                .map(|series| (series.labels.to_string(), series.samples[0].value.to_bits(), series.samples[0].timestamp.0))
                .collect();
            stored.sort();
            let mut wanted = expected.samples.clone();
            wanted.sort();
            prop_assert_eq!(stored, wanted, "body:\n{}", body);
            prop_assert_eq!(&decoded.decoded.skipped, &expected.skipped, "body:\n{}", body);
            let actions: Vec<(&str, bool)> = decoded
                .actions
                .iter()
                .map(|action| (action.action.as_str(), action.error.is_some()))
                .collect();
            prop_assert_eq!(actions, expected.action_errors, "body:\n{}", body);
            for action in &decoded.actions {
                prop_assert!(action.error.as_ref().is_none_or(|error| !error.is_empty()));
            }
        }

        /// Arbitrary bytes never panic; a refusal (only a size limit) says why.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut limits = Limits::default();
            limits.decode.max_body_bytes = 200;
            match decode_bulk(&bytes, &peer(), &limits) {
                Ok(decoded) => prop_assert!(decoded.decoded.messages.iter().all(|message| !message.is_empty())),
                Err(error) => {
                    prop_assert!(bytes.len() > 200);
                    prop_assert!(!error.to_string().is_empty());
                }
            }
        }

        /// NDJSON-looking text never panics, and every line is an action, a document or a
        /// skip: no more actions plus skips than lines.
        #[test]
        fn json_like_lines_never_panic(text in "[{}\\[\\]\":,0-9a-z@. \n-]{0,200}") {
            let decoded = decode_bulk(text.as_bytes(), &peer(), &Limits::default()).unwrap();
            let lines = text.lines().filter(|line| !line.trim().is_empty()).count() as u64;
            prop_assert!(decoded.actions.len() as u64 + decoded.decoded.skipped_total() <= lines);
        }
    }
}
