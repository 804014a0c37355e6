//! Targets from target groups, as Prometheus builds them: the discovered labels (group
//! labels, `__address__`, then the pool's defaults `job`, `__scheme__`, `__metrics_path__`,
//! `__scrape_interval__`, `__scrape_timeout__`, `__param_<name>`), `relabel_configs`, then
//! the scrape URL and interval from the `__` labels, which are removed; `instance` defaults
//! to `__address__`.

use super::config::{ScrapeConfig, TargetGroup};
use super::parse_duration;
use super::relabel::process;
use crate::lookout::Tags;

/// A target to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The labels before relabelling.
    pub discovered_labels: Tags,
    /// The labels every scraped sample gets (no `__` labels).
    pub labels: Tags,
    /// `scheme://address/path?params`
    pub url: String,
    /// Between scrapes.
    pub interval_ms: u64,
    /// Longest a scrape may take.
    pub timeout_ms: u64,
}

/// A target `relabel_configs` dropped, or that could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTarget {
    /// The labels before relabelling.
    pub discovered_labels: Tags,
    /// Why it is not scraped when it is not a relabel `drop`/`keep`.
    pub error: Option<String>,
}

/// The pool's targets from its groups: active ones (duplicates once) and dropped ones.
pub fn targets(config: &ScrapeConfig, groups: &[TargetGroup]) -> (Vec<Target>, Vec<DroppedTarget>) {
    let mut active: Vec<Target> = Vec::new();
    let mut dropped = Vec::new();
    for group in groups {
        for address in &group.targets {
            let discovered = discovered_labels(config, group, address);
            match target(config, discovered.clone()) {
                Ok(Some(target)) => {
                    let duplicate = active
                        .iter()
                        .any(|known| known.labels == target.labels && known.url == target.url);
                    if !duplicate {
                        active.push(target);
                    }
                }
                Ok(None) => dropped.push(DroppedTarget {
                    discovered_labels: discovered,
                    error: None,
                }),
                Err(error) => dropped.push(DroppedTarget {
                    discovered_labels: discovered,
                    error: Some(error),
                }),
            }
        }
    }
    (active, dropped)
}

fn discovered_labels(config: &ScrapeConfig, group: &TargetGroup, address: &str) -> Tags {
    let mut labels = group.labels.clone();
    labels.insert("__address__".into(), address.to_owned());
    let mut default = |name: &str, value: String| {
        labels.entry(name.to_owned()).or_insert(value);
    };
    default("job", config.job_name.clone());
    default("__scrape_interval__", config.interval_text());
    default("__scrape_timeout__", config.timeout_text());
    default("__metrics_path__", config.metrics_path.clone());
    default("__scheme__", config.scheme.clone());
    for (name, values) in &config.params {
        if let Some(first) = values.first() {
            default(&format!("__param_{name}"), first.clone());
        }
    }
    labels
}

/// The target of one set of discovered labels; `None` when relabelling dropped it.
pub fn target(config: &ScrapeConfig, discovered: Tags) -> Result<Option<Target>, String> {
    let mut labels = discovered.clone();
    if !process(&config.relabel_configs, &mut labels) {
        return Ok(None);
    }
    let address = labels
        .get("__address__")
        .filter(|address| !address.is_empty())
        .cloned()
        .ok_or("no address")?;
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    let label_or = |name: &str, default: &str| {
        labels
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let interval_text = label_or("__scrape_interval__", &config.interval_text());
    let timeout_text = label_or("__scrape_timeout__", &config.timeout_text());
    let interval_ms = parse_duration(&interval_text)
        .ok()
        .filter(|millis| *millis > 0)
        .ok_or_else(|| format!("error parsing interval label {interval_text:?}"))?;
    let timeout_ms = parse_duration(&timeout_text)
        .ok()
        .filter(|millis| *millis > 0)
        .ok_or_else(|| format!("error parsing timeout label {timeout_text:?}"))?;
    if timeout_ms > interval_ms {
        return Err(format!(
            "scrape timeout {timeout_text} greater than scrape interval {interval_text}"
        ));
    }
    let scheme = label_or("__scheme__", &config.scheme);
    if scheme != "http" {
        return Err(format!("scheme {scheme:?} is not supported (only http)"));
    }
    let mut path = label_or("__metrics_path__", &config.metrics_path);
    if !path.starts_with('/') {
        // As Go's URL prints a relative path after a host.
        path.insert(0, '/');
    }
    let mut params = config.params.clone();
    for (name, value) in &labels {
        if let Some(param) = name.strip_prefix("__param_") {
            match params.get_mut(param).and_then(|values| values.first_mut()) {
                Some(first) => *first = value.clone(),
                None => {
                    params.insert(param.to_owned(), vec![value.clone()]);
                }
            }
        }
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, values) in &params {
        for value in values {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    let url = if query.is_empty() {
        format!("{scheme}://{address}{path}")
    } else {
        format!("{scheme}://{address}{path}?{query}")
    };
    labels.retain(|name, _| !name.starts_with("__"));
    labels.entry("instance".into()).or_insert(address);
    Ok(Some(Target {
        discovered_labels: discovered,
        labels,
        url,
        interval_ms,
        timeout_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::config::parse_prometheus;

    fn config(yaml: &str) -> ScrapeConfig {
        parse_prometheus(yaml, "t.yml", std::path::Path::new("/"))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn labels_url_and_defaults() {
        let config = config(
            "scrape_configs:\n- job_name: node\n  scrape_interval: 15s\n  metrics_path: /m\n  \
             params: {'collect[]': [cpu, mem], format: [x]}\n  \
             static_configs: [{targets: ['127.0.0.1:9100'], labels: {group: canary}}]",
        );
        let (active, dropped) = targets(&config, &config.static_configs);
        assert!(dropped.is_empty());
        let target = &active[0];
        assert_eq!(
            target.url,
            "http://127.0.0.1:9100/m?collect%5B%5D=cpu&collect%5B%5D=mem&format=x"
        );
        assert_eq!((target.interval_ms, target.timeout_ms), (15_000, 10_000));
        let labels: Vec<(&str, &str)> = target
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("group", "canary"),
                ("instance", "127.0.0.1:9100"),
                ("job", "node")
            ]
        );
        assert_eq!(target.discovered_labels["__metrics_path__"], "/m");
        assert_eq!(target.discovered_labels["__scrape_interval__"], "15s");
        assert_eq!(target.discovered_labels["__param_collect[]"], "cpu");
        assert_eq!(target.discovered_labels["__scheme__"], "http");
    }

    #[test]
    fn relabelling_rewrites_and_drops_targets() {
        let config = config(
            r#"
scrape_configs:
- job_name: j
  static_configs: [{targets: ['a:1', 'b:2', 'c:3']}]
  relabel_configs:
  - {source_labels: [__address__], regex: 'c:.*', action: drop}
  - {source_labels: [__address__], regex: '([^:]+):.*', target_label: instance, replacement: 'host-$1'}
  - {source_labels: [__address__], regex: 'b:.*', target_label: __metrics_path__, replacement: /other}
  - {target_label: __param_module, replacement: http_2xx}
  - {target_label: __scrape_interval__, replacement: 30s}
  - {target_label: __tmp_x, replacement: gone}
  - {source_labels: [__address__], regex: 'a:.*', target_label: __metrics_path__, replacement: relative}
"#,
        );
        let (active, dropped) = targets(&config, &config.static_configs);
        assert_eq!(active.len(), 2);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].discovered_labels["__address__"], "c:3");
        assert_eq!(dropped[0].error, None);
        assert_eq!(active[0].labels["instance"], "host-a");
        assert_eq!(active[0].url, "http://a:1/relative?module=http_2xx");
        assert_eq!(active[1].url, "http://b:2/other?module=http_2xx");
        assert_eq!(active[0].interval_ms, 30_000);
        assert!(!active[0].labels.contains_key("__tmp_x"));
    }

    #[test]
    fn broken_targets_are_dropped_with_a_reason() {
        let config = config(
            r#"
scrape_configs:
- job_name: j
  scrape_interval: 10s
  static_configs: [{targets: ['a:1']}]
  relabel_configs:
  - {target_label: __scrape_timeout__, replacement: 1m}
"#,
        );
        let (active, dropped) = targets(&config, &config.static_configs);
        assert!(active.is_empty());
        assert!(dropped[0]
            .error
            .as_deref()
            .unwrap()
            .contains("greater than scrape interval"));
        let config = self::config(
            "scrape_configs:\n- job_name: j\n  static_configs: [{targets: ['a:1']}]\n  \
             relabel_configs: [{target_label: __address__, replacement: ''}]",
        );
        let (_, dropped) = targets(&config, &config.static_configs);
        assert_eq!(dropped[0].error.as_deref(), Some("no address"));
    }

    #[test]
    fn duplicates_are_scraped_once() {
        let config = config(
            "scrape_configs:\n- job_name: j\n  static_configs: [{targets: ['a:1', 'a:1']}, {targets: ['a:1']}]",
        );
        let (active, _) = targets(&config, &config.static_configs);
        assert_eq!(active.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_groups_give_targets_or_reasons(
            addresses in proptest::collection::vec("[a-z0-9:/?.\\[\\]-]{0,12}", 0..4),
            label_values in proptest::collection::vec("\\PC{0,8}", 0..3),
            interval in "[0-9a-z]{0,4}",
        ) {
            let config = config(
                "scrape_configs:\n- job_name: j\n  relabel_configs:\n  \
                 - {source_labels: [v0], target_label: __scrape_interval__}\n  \
                 - {source_labels: [v1], target_label: __metrics_path__}\n  \
                 - {source_labels: [v2], target_label: __param_x}",
            );
            let mut labels = Tags::new();
            for (index, value) in label_values.iter().enumerate() {
                labels.insert(format!("v{index}"), value.clone());
            }
            if !interval.is_empty() {
                labels.insert("v0".into(), interval);
            }
            let group = TargetGroup {
                targets: addresses,
                labels,
                source: "prop".into(),
            };
            let (active, dropped) = targets(&config, std::slice::from_ref(&group));
            proptest::prop_assert!(active.len() + dropped.len() <= group.targets.len());
            for target in active {
                proptest::prop_assert!(target.interval_ms > 0);
                proptest::prop_assert!(target.timeout_ms <= target.interval_ms);
                proptest::prop_assert!(target.labels.keys().all(|name| !name.starts_with("__")));
            }
        }
    }
}
