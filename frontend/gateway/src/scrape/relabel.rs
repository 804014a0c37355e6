//! Relabelling with Prometheus' semantics (`relabel_configs`, `metric_relabel_configs`).
//!
//! Every step joins the values of `source_labels` with `separator` (a missing label is the
//! empty string) and matches the fully anchored `regex` against the result, then:
//!
//! | action | effect |
//! |---|---|
//! | `replace` (default) | on a match, `target_label` (expanded) = `replacement` (expanded with the groups); an empty result removes the label |
//! | `keep` / `drop` | the set is dropped unless / if the value matches |
//! | `hashmod` | `target_label` = md5(value) mod `modulus` (the low 64 bits, as Prometheus) |
//! | `labelmap` | every label whose *name* matches is copied to the name `replacement` expands to |
//! | `labeldrop` / `labelkeep` | labels whose name matches are removed / kept |
//! | `lowercase` / `uppercase` | `target_label` = the value in lower / upper case |
//! | `keepequal` / `dropequal` | the set is dropped unless / if the value equals `target_label`'s value |
//!
//! Labels are a [`Tags`] map during relabelling: an empty value is an absent label.

use serde::Deserialize;

use crate::lookout::Tags;

/// A relabel action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sets `target_label` from the match.
    Replace,
    /// Drops the set unless the value matches.
    Keep,
    /// Drops the set if the value matches.
    Drop,
    /// `target_label` = hash of the value mod `modulus`.
    HashMod,
    /// Copies matching label names to new names.
    LabelMap,
    /// Removes matching label names.
    LabelDrop,
    /// Keeps only matching label names.
    LabelKeep,
    /// `target_label` = the value lowercased.
    Lowercase,
    /// `target_label` = the value uppercased.
    Uppercase,
    /// Drops the set unless the value equals `target_label`'s.
    KeepEqual,
    /// Drops the set if the value equals `target_label`'s.
    DropEqual,
}

impl Action {
    fn parse(text: &str) -> Result<Action, String> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            _ => return Err(format!("unknown relabel action {text:?}")),
        })
    }

    /// The name as written in a configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
        }
    }
}

/// A relabel step as written in YAML.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelabelConfig {
    source_labels: Option<Vec<String>>,
    separator: Option<String>,
    target_label: Option<String>,
    regex: Option<String>,
    modulus: Option<u64>,
    replacement: Option<String>,
    action: Option<String>,
}

/// A validated relabel step.
#[derive(Debug, Clone)]
pub struct RelabelConfig {
    /// The labels whose values are joined.
    pub source_labels: Vec<String>,
    /// Joins the source values.
    pub separator: String,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`, compared by
    /// `keepequal` and `dropequal`.
    pub target_label: String,
    /// The pattern as written (unanchored).
    pub regex_text: String,
    /// `^(?:regex)$`
    regex: regex::Regex,
    /// `hashmod`'s divisor.
    pub modulus: u64,
    /// `replace` and `labelmap`'s template.
    pub replacement: String,
    /// What the step does.
    pub action: Action,
}

impl PartialEq for RelabelConfig {
    fn eq(&self, other: &Self) -> bool {
        self.source_labels == other.source_labels
            && self.separator == other.separator
            && self.target_label == other.target_label
            && self.regex_text == other.regex_text
            && self.modulus == other.modulus
            && self.replacement == other.replacement
            && self.action == other.action
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RelabelConfig {
    /// Defaults applied and the step checked as Prometheus checks it at load.
    pub fn from_raw(raw: RawRelabelConfig) -> Result<RelabelConfig, String> {
        let action = Action::parse(raw.action.as_deref().unwrap_or("replace"))?;
        let regex_text = raw.regex.unwrap_or_else(|| "(.*)".to_owned());
        let regex = regex::Regex::new(&format!("^(?:{regex_text})$"))
            .map_err(|error| format!("invalid regex {regex_text:?}: {error}"))?;
        let config = RelabelConfig {
            source_labels: raw.source_labels.unwrap_or_default(),
            separator: raw.separator.unwrap_or_else(|| ";".to_owned()),
            target_label: raw.target_label.unwrap_or_default(),
            regex_text,
            regex,
            modulus: raw.modulus.unwrap_or(0),
            replacement: raw.replacement.unwrap_or_else(|| "$1".to_owned()),
            action,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let action = self.action.as_str();
        let needs_target = matches!(
            self.action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {action} action requires 'target_label' value"
            ));
        }
        let templated_target = self.action == Action::Replace && self.target_label.contains('$');
        if needs_target && !templated_target && !is_label_name(&self.target_label) {
            return Err(format!(
                "{:?} is invalid 'target_label' for {action} action",
                self.target_label
            ));
        }
        if self.action == Action::HashMod && self.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(self.action, Action::LabelDrop | Action::LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != ";"
                || self.replacement != "$1")
        {
            return Err(format!(
                "{action} action requires only 'regex', and no other fields"
            ));
        }
        if matches!(self.action, Action::KeepEqual | Action::DropEqual) && self.regex_text != "(.*)"
        {
            return Err(format!("{action} action requires only 'source_labels' and 'target_label', and no other fields"));
        }
        for name in &self.source_labels {
            if !is_label_name(name) {
                return Err(format!(
                    "{name:?} is not a valid label name in source_labels"
                ));
            }
        }
        Ok(())
    }

    /// Applies this step; `false` when the label set is dropped.
    pub fn apply(&self, labels: &mut Tags) -> bool {
        let value = self
            .source_labels
            .iter()
            .map(|name| labels.get(name).map_or("", String::as_str))
            .collect::<Vec<_>>()
            .join(&self.separator);
        match self.action {
            Action::Keep => return self.regex.is_match(&value),
            Action::Drop => return !self.regex.is_match(&value),
            Action::KeepEqual => {
                return labels.get(&self.target_label).map_or("", String::as_str) == value
            }
            Action::DropEqual => {
                return labels.get(&self.target_label).map_or("", String::as_str) != value
            }
            Action::Replace => {
                let Some(captures) = self.regex.captures(&value) else {
                    return true;
                };
                let mut target = String::new();
                captures.expand(&self.target_label, &mut target);
                if !is_label_name(&target) {
                    return true;
                }
                let mut replaced = String::new();
                captures.expand(&self.replacement, &mut replaced);
                set(labels, target, replaced);
            }
            Action::Lowercase => set(labels, self.target_label.clone(), value.to_lowercase()),
            Action::Uppercase => set(labels, self.target_label.clone(), value.to_uppercase()),
            Action::HashMod => {
                let digest = md5::compute(value.as_bytes()).0;
                let low = u64::from_be_bytes(digest[8..].try_into().expect("8 bytes"));
                set(
                    labels,
                    self.target_label.clone(),
                    (low % self.modulus).to_string(),
                );
            }
            Action::LabelMap => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter_map(|(name, value)| {
                        let captures = self.regex.captures(name)?;
                        let mut new_name = String::new();
                        captures.expand(&self.replacement, &mut new_name);
                        Some((new_name, value.clone()))
                    })
                    .collect();
                for (name, value) in mapped {
                    set(labels, name, value);
                }
            }
            Action::LabelDrop => labels.retain(|name, _| !self.regex.is_match(name)),
            Action::LabelKeep => labels.retain(|name, _| self.regex.is_match(name)),
        }
        true
    }
}

/// Sets a label; an empty value removes it.
fn set(labels: &mut Tags, name: String, value: String) {
    if value.is_empty() {
        labels.remove(&name);
    } else {
        labels.insert(name, value);
    }
}

/// Applies every step in order; `false` as soon as one drops the set.
pub fn process(configs: &[RelabelConfig], labels: &mut Tags) -> bool {
    configs.iter().all(|config| config.apply(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(yaml: &str) -> RelabelConfig {
        let raw: RawRelabelConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RelabelConfig::from_raw(raw).unwrap()
    }

    fn step_error(yaml: &str) -> String {
        let raw: RawRelabelConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RelabelConfig::from_raw(raw).unwrap_err()
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn run(yaml: &str, input: &[(&str, &str)]) -> Option<Tags> {
        let mut labels = tags(input);
        step(yaml).apply(&mut labels).then_some(labels)
    }

    #[test]
    fn replace_uses_anchored_regex_groups_and_templates() {
        // Prometheus documentation: `__address__` host and a port label into a new address.
        let yaml = "source_labels: [__address__, port]\nregex: '([^:]+)(?::\\d+)?;(\\d+)'\n\
                    replacement: '${1}:$2'\ntarget_label: __address__";
        let out = run(yaml, &[("__address__", "10.0.0.1:80"), ("port", "9100")]).unwrap();
        assert_eq!(out["__address__"], "10.0.0.1:9100");
        // The regex is anchored: a partial match does nothing.
        let out = run(
            "source_labels: [a]\nregex: 'b'\ntarget_label: c",
            &[("a", "abc")],
        )
        .unwrap();
        assert!(!out.contains_key("c"));
        // Defaults: regex (.*), replacement $1; a missing source is the empty string, and an
        // empty result removes the target.
        let out = run("source_labels: [missing]\ntarget_label: a", &[("a", "x")]).unwrap();
        assert!(!out.contains_key("a"));
        let out = run(
            "source_labels: [a, b]\ntarget_label: c",
            &[("a", "1"), ("b", "2")],
        )
        .unwrap();
        assert_eq!(out["c"], "1;2");
        // A templated target label; an invalid expanded name leaves the set alone.
        let out = run(
            "source_labels: [k]\nregex: '(.+)'\ntarget_label: 'x_$1'\nreplacement: v",
            &[("k", "name")],
        )
        .unwrap();
        assert_eq!(out["x_name"], "v");
        let out = run(
            "source_labels: [k]\nregex: '(.+)'\ntarget_label: '$1'\nreplacement: v",
            &[("k", "9bad")],
        )
        .unwrap();
        assert_eq!(out, tags(&[("k", "9bad")]));
        // A literal replacement with no groups.
        let out = run("target_label: env\nreplacement: prod", &[]).unwrap();
        assert_eq!(out["env"], "prod");
    }

    #[test]
    fn keep_and_drop_and_the_equal_variants() {
        let keep = "source_labels: [job]\nregex: 'node|api'\naction: keep";
        assert!(run(keep, &[("job", "node")]).is_some());
        assert!(run(keep, &[("job", "nodes")]).is_none());
        assert!(run(keep, &[]).is_none());
        let drop = "source_labels: [__name__]\nregex: 'go_.*'\naction: drop";
        assert!(run(drop, &[("__name__", "go_goroutines")]).is_none());
        assert!(run(drop, &[("__name__", "up")]).is_some());
        // Actions are case-insensitive, as Prometheus reads them.
        assert!(run("source_labels: [a]\nregex: x\naction: DROP", &[("a", "x")]).is_none());
        let keep_equal = "source_labels: [a]\ntarget_label: b\naction: keepequal";
        assert!(run(keep_equal, &[("a", "1"), ("b", "1")]).is_some());
        assert!(run(keep_equal, &[("a", "1"), ("b", "2")]).is_none());
        let drop_equal = "source_labels: [a]\ntarget_label: b\naction: dropequal";
        assert!(run(drop_equal, &[("a", "1"), ("b", "1")]).is_none());
        assert!(run(drop_equal, &[("a", "1")]).is_some());
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Expected shards from Prometheus' own relabel tests (md5, low 64 bits, mod).
        let yaml = "source_labels: [c]\nmodulus: 1000\ntarget_label: d\naction: hashmod";
        let out = run(yaml, &[("a", "foo"), ("b", "bar"), ("c", "baz")]).unwrap();
        assert_eq!(out["d"], "976");
        let yaml = "source_labels: [a]\nmodulus: 1000\ntarget_label: b\naction: hashmod";
        assert_eq!(run(yaml, &[("a", "foo\nbar")]).unwrap()["b"], "734");
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let map = "regex: '__meta_kubernetes_node_label_(.+)'\naction: labelmap";
        let out = run(
            map,
            &[
                ("__meta_kubernetes_node_label_zone", "a"),
                ("__meta_kubernetes_node_label_rack", "r1"),
                ("job", "n"),
            ],
        )
        .unwrap();
        assert_eq!(out["zone"], "a");
        assert_eq!(out["rack"], "r1");
        assert_eq!(
            out["__meta_kubernetes_node_label_zone"], "a",
            "labelmap copies"
        );
        let out = run(
            "regex: 'tmp_.*'\naction: labeldrop",
            &[("tmp_a", "1"), ("tmp_b", "2"), ("keep", "3")],
        )
        .unwrap();
        assert_eq!(out, tags(&[("keep", "3")]));
        let out = run(
            "regex: '__name__|job'\naction: labelkeep",
            &[("__name__", "up"), ("job", "j"), ("other", "x")],
        )
        .unwrap();
        assert_eq!(out, tags(&[("__name__", "up"), ("job", "j")]));
    }

    #[test]
    fn lowercase_uppercase() {
        let out = run(
            "source_labels: [a]\ntarget_label: b\naction: lowercase",
            &[("a", "MiXed")],
        )
        .unwrap();
        assert_eq!(out["b"], "mixed");
        let out = run(
            "source_labels: [a]\ntarget_label: b\naction: uppercase",
            &[("a", "MiXed")],
        )
        .unwrap();
        assert_eq!(out["b"], "MIXED");
    }

    #[test]
    fn steps_run_in_order_and_stop_at_a_drop() {
        let configs = vec![
            step("target_label: stage\nreplacement: one"),
            step("source_labels: [stage]\nregex: one\naction: drop"),
            step("target_label: never\nreplacement: set"),
        ];
        let mut labels = Tags::new();
        assert!(!process(&configs, &mut labels));
        assert!(!labels.contains_key("never"));
    }

    #[test]
    fn invalid_steps_are_load_errors() {
        assert!(step_error("action: replace").contains("requires 'target_label'"));
        assert!(step_error("action: frobnicate").contains("unknown relabel action"));
        assert!(step_error("target_label: a\nregex: '('").contains("invalid regex"));
        assert!(step_error("target_label: b\naction: hashmod").contains("non-zero modulus"));
        assert!(step_error("regex: a\ntarget_label: b\naction: labeldrop").contains("only 'regex'"));
        assert!(step_error("target_label: 'bad-name'").contains("invalid 'target_label'"));
        assert!(step_error("source_labels: ['a-b']\ntarget_label: c").contains("source_labels"));
        let raw: Result<RawRelabelConfig, _> = serde_yaml_ng::from_str("action: keep\nregexp: x");
        assert!(raw.unwrap_err().to_string().contains("unknown field"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_steps_and_labels_never_panic(
            regex in "[a-z().*+|$1_]{0,12}",
            replacement in "[a-z$1{}_]{0,8}",
            target in "[a-z$1_]{0,6}",
            action in proptest::sample::select(vec![
                "replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                "lowercase", "uppercase", "keepequal", "dropequal", "bogus",
            ]),
            value in "\\PC{0,10}",
        ) {
            let raw = RawRelabelConfig {
                source_labels: Some(vec!["a".into()]),
                separator: None,
                target_label: Some(target),
                regex: Some(regex),
                modulus: Some(3),
                replacement: Some(replacement),
                action: Some(action.into()),
            };
            if let Ok(config) = RelabelConfig::from_raw(raw) {
                let mut labels = tags(&[("a", &value), ("b", "x")]);
                let _ = config.apply(&mut labels);
            }
        }
    }
}
