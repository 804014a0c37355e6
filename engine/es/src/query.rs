//! Matchers and time ranges as Elasticsearch bool filters over SOFALookout's documents.
//!
//! The metric name lives in `id` and every other label in the multi-valued keyword `tags` as
//! `name=value`, so a matcher on label `n` is a query on the terms that start with `n=`. An
//! absent label equals the empty value (Prometheus): a matcher that accepts the empty value
//! also selects documents with no `n=` term at all.

use lookout_model::{MatchKind, Matcher, TimestampMs, METRIC_NAME_LABEL};
use serde_json::{json, Value};

use crate::regexp::{self, escape_literal};

/// Field holding the metric name.
pub(crate) const ID_FIELD: &str = "id";
/// Field holding `name=value` for every other label.
pub(crate) const TAGS_FIELD: &str = "tags";
/// Field holding the series key (see `document::series_key`); absent in SOFALookout's own
/// documents.
pub(crate) const SERIES_FIELD: &str = "series";
/// Field holding the sample time.
pub(crate) const TIME_FIELD: &str = "time";

/// A bool query and whether it selects exactly what the matchers select (otherwise it selects
/// a superset and results must be re-checked).
#[derive(Debug, Clone)]
pub(crate) struct Translated {
    pub query: Value,
    pub exact: bool,
}

/// The positive form of a matcher (`=`, `=~`, `=~|`) over the values of one field.
enum Positive {
    /// No non-empty value satisfies it.
    Nothing,
    /// A query matching documents holding a satisfying non-empty value.
    Clause(Value),
    /// Cannot be expressed; documents must be re-checked.
    Unknown,
}

fn match_none() -> Value {
    json!({"bool": {"must_not": [{"match_all": {}}]}})
}

/// The bool query selecting documents whose series satisfy every matcher and whose time is in
/// `[mint, maxt]`.
pub(crate) fn translate(matchers: &[Matcher], mint: TimestampMs, maxt: TimestampMs) -> Translated {
    let mut filter: Vec<Value> = Vec::new();
    let mut must_not: Vec<Value> = Vec::new();
    let mut exact = true;
    if mint != TimestampMs::MIN || maxt != TimestampMs::MAX {
        filter.push(json!({"range": {TIME_FIELD: {
            "gte": mint.0, "lte": maxt.0, "format": "epoch_millis"
        }}}));
    }
    for matcher in matchers {
        add_matcher(matcher, &mut filter, &mut must_not, &mut exact);
    }
    let query = json!({"bool": {"filter": filter, "must_not": must_not}});
    Translated { query, exact }
}

fn add_matcher(
    matcher: &Matcher,
    filter: &mut Vec<Value>,
    must_not: &mut Vec<Value>,
    exact: &mut bool,
) {
    let is_name = matcher.name() == METRIC_NAME_LABEL;
    let positive = positive_clause(matcher, is_name);
    if let Positive::Unknown = positive {
        *exact = false;
    }
    let negative = matcher.kind().is_negative();
    // Whether the positive form accepts the empty value (an absent label).
    let positive_accepts_empty = matcher.matches_empty() != negative;
    if is_name {
        // Every document has a non-empty `id`: only the value decides.
        match (negative, positive) {
            (false, Positive::Nothing) => filter.push(match_none()),
            (false, Positive::Clause(clause)) => filter.push(clause),
            (true, Positive::Clause(clause)) => must_not.push(clause),
            (_, Positive::Unknown) | (true, Positive::Nothing) => {}
        }
        return;
    }
    let has_label = json!({"prefix": {TAGS_FIELD: format!("{}=", matcher.name())}});
    match (negative, positive_accepts_empty, positive) {
        // value in P, "" not in P: the label must be present with a matching value.
        (false, false, Positive::Nothing) => filter.push(match_none()),
        (false, false, Positive::Clause(clause)) => filter.push(clause),
        (false, false, Positive::Unknown) => filter.push(has_label),
        // value in P, "" in P: absent, or present with a matching value.
        (false, true, Positive::Nothing) => must_not.push(has_label),
        (false, true, Positive::Clause(clause)) => filter.push(json!({"bool": {
            "should": [clause, {"bool": {"must_not": [has_label]}}],
            "minimum_should_match": 1
        }})),
        (false, true, Positive::Unknown) => {}
        // value not in P, "" in P: present, and the value does not match.
        (true, true, Positive::Nothing) => filter.push(has_label),
        (true, true, Positive::Clause(clause)) => {
            filter.push(has_label);
            must_not.push(clause);
        }
        (true, true, Positive::Unknown) => filter.push(has_label),
        // value not in P, "" not in P: absent labels qualify.
        (true, false, Positive::Nothing) | (true, false, Positive::Unknown) => {}
        (true, false, Positive::Clause(clause)) => must_not.push(clause),
    }
}

fn positive_clause(matcher: &Matcher, is_name: bool) -> Positive {
    let field = if is_name { ID_FIELD } else { TAGS_FIELD };
    let term_of = |value: &str| -> String {
        if is_name {
            value.to_owned()
        } else {
            format!("{}={value}", matcher.name())
        }
    };
    match matcher.kind() {
        MatchKind::Equal | MatchKind::NotEqual => {
            if matcher.value().is_empty() {
                Positive::Nothing
            } else {
                Positive::Clause(json!({"term": {field: term_of(matcher.value())}}))
            }
        }
        MatchKind::InList | MatchKind::NotInList => {
            let members: Vec<String> = matcher
                .value()
                .split('|')
                .filter(|member| !member.is_empty())
                .map(term_of)
                .collect();
            if members.is_empty() {
                Positive::Nothing
            } else {
                Positive::Clause(json!({"terms": {field: members}}))
            }
        }
        MatchKind::Regex | MatchKind::NotRegex => match regexp::translate(matcher.value()) {
            Some(lucene) if lucene.exact => {
                let prefix = if is_name {
                    String::new()
                } else {
                    escape_literal(&format!("{}=", matcher.name()))
                };
                let pattern = format!("{prefix}({})", lucene.pattern);
                Positive::Clause(json!({"regexp": {field: {"value": pattern}}}))
            }
            // A widened regex cannot be negated safely; a positive one could pre-filter,
            // but re-checking is needed either way.
            _ => Positive::Unknown,
        },
    }
}

/// Whether `labels` satisfies every matcher (the exact re-check of an inexact query).
pub(crate) fn matches_all(matchers: &[Matcher], labels: &lookout_model::Labels) -> bool {
    matchers
        .iter()
        .all(|matcher| matcher.matches(labels.get(matcher.name()).unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_and_empty_value_rules() {
        let up = Matcher::equal(METRIC_NAME_LABEL, "up");
        let translated = translate(
            &[up.clone(), Matcher::equal("zone", "")],
            TimestampMs(1),
            TimestampMs(2),
        );
        assert!(translated.exact);
        assert_eq!(
            translated.query,
            json!({"bool": {
                "filter": [
                    {"range": {"time": {"gte": 1, "lte": 2, "format": "epoch_millis"}}},
                    {"term": {"id": "up"}}
                ],
                "must_not": [{"prefix": {"tags": "zone="}}]
            }})
        );
        let in_list = Matcher::new(MatchKind::InList, "job", "a|b").unwrap();
        let translated = translate(&[in_list], TimestampMs::MIN, TimestampMs::MAX);
        assert_eq!(
            translated.query,
            json!({"bool": {"filter": [{"terms": {"tags": ["job=a", "job=b"]}}], "must_not": []}})
        );
    }

    #[test]
    fn untranslatable_regex_is_rechecked() {
        let matcher = Matcher::new(MatchKind::Regex, "job", "\\bapi").unwrap();
        let translated = translate(&[matcher], TimestampMs::MIN, TimestampMs::MAX);
        assert!(!translated.exact);
    }
}
