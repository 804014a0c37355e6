//! One scrape's body to samples, and what a scrape writes besides them: the report series
//! and stale markers.
//!
//! A body is parsed whole ([`crate::exposition::parse_body`], text 0.0.4 or OpenMetrics by
//! `Content-Type`); as in Prometheus, a line that does not parse, a sample whose labels are
//! invalid and a `sample_limit` overrun fail the scrape (`up` 0), and what earlier scrapes
//! stored stays. Each sample gets the target's labels: with `honor_labels` the scraped
//! labels win, otherwise the target's win and a scraped label of the same name is kept as
//! `exported_<name>`. Then `metric_relabel_configs` run. Explicit timestamps are kept with
//! `honor_timestamps` (such series are not tracked for staleness, as in Prometheus); other
//! samples are stamped with the scrape time.
//!
//! [`ScrapeCache`] remembers the series of a target's last successful scrape: a series
//! missing from the next scrape gets a stale marker ([`STALE_NAN`]) at that scrape's time,
//! a failed scrape marks every series stale, and so does the end of a target ([`ScrapeCache::end`],
//! report series included). PromQL then stops returning them at once instead of after the
//! lookback window.

use std::collections::HashSet;

use lookout_model::{LabelLimits, Labels, Sample, TimestampMs, METRIC_NAME_LABEL, STALE_NAN};
use lookout_storage::WriteBatch;

use super::relabel::{process, RelabelConfig};
use crate::exposition::{parse_body, BodyError, Format};
use crate::lookout::Tags;

/// The series every scrape writes about itself.
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Why a scrape's body was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// A line does not parse.
    #[error("{0}")]
    Parse(#[from] BodyError),
    /// More samples than `sample_limit` after metric relabelling.
    #[error("sample limit exceeded: more than {limit} samples")]
    SampleLimit {
        /// The configured limit.
        limit: u64,
    },
    /// A sample's labels are not a valid set.
    #[error("invalid labels for {series}: {reason}")]
    InvalidLabels {
        /// The sample's name and labels as scraped.
        series: String,
        /// What is wrong.
        reason: String,
    },
}

/// How a target's samples are labelled and filtered.
#[derive(Debug, Clone, Copy)]
pub struct SampleRules<'a> {
    /// The target's labels.
    pub target_labels: &'a Tags,
    /// Scraped labels win over the target's.
    pub honor_labels: bool,
    /// Explicit timestamps are kept.
    pub honor_timestamps: bool,
    /// Applied to every sample.
    pub metric_relabel_configs: &'a [RelabelConfig],
    /// Most samples after relabelling (0: no limit).
    pub sample_limit: u64,
    /// Checked on every sample's labels.
    pub label_limits: &'a LabelLimits,
}

/// One sample of a scrape.
#[derive(Debug, Clone)]
pub struct ScrapedSample {
    /// Its labels after relabelling.
    pub labels: Labels,
    /// Its timestamp and value.
    pub sample: Sample,
    /// Whether staleness is tracked for it (no explicit timestamp kept).
    pub tracked: bool,
}

/// What a scrape's body held.
#[derive(Debug, Clone, Default)]
pub struct Scraped {
    /// The samples to store, one per series.
    pub samples: Vec<ScrapedSample>,
    /// Samples in the body (`scrape_samples_scraped`).
    pub samples_scraped: u64,
    /// Samples a second time for a series already in this scrape, left out.
    pub duplicates: u64,
}

impl Scraped {
    /// Samples after metric relabelling (`scrape_samples_post_metric_relabeling`).
    pub fn samples_post_relabeling(&self) -> u64 {
        self.samples.len() as u64 + self.duplicates
    }
}

/// The samples of a scraped body taken at `scrape_time`.
pub fn scraped_samples(
    body: &[u8],
    format: Format,
    rules: &SampleRules<'_>,
    scrape_time: TimestampMs,
) -> Result<Scraped, ScrapeError> {
    let text = crate::lookout::body_text(body.to_vec());
    let parsed = parse_body(&text, format)?;
    let mut scraped = Scraped {
        samples_scraped: parsed.len() as u64,
        ..Scraped::default()
    };
    let mut seen = HashSet::with_capacity(parsed.len());
    for sample in parsed {
        let mut tags: Tags = sample
            .labels
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        tags.insert(METRIC_NAME_LABEL.to_owned(), sample.name);
        apply_target_labels(&mut tags, rules.target_labels, rules.honor_labels);
        if !process(rules.metric_relabel_configs, &mut tags) {
            continue;
        }
        if !tags.contains_key(METRIC_NAME_LABEL) {
            continue;
        }
        if rules.sample_limit > 0
            && scraped.samples.len() as u64 + scraped.duplicates >= rules.sample_limit
        {
            return Err(ScrapeError::SampleLimit {
                limit: rules.sample_limit,
            });
        }
        let labels = Labels::from_pairs(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .and_then(|labels| {
                labels.validate(rules.label_limits)?;
                Ok(labels)
            })
            .map_err(|error| ScrapeError::InvalidLabels {
                series: format!("{tags:?}"),
                reason: error.to_string(),
            })?;
        if !seen.insert(labels.clone()) {
            scraped.duplicates += 1;
            continue;
        }
        let explicit = sample.timestamp.filter(|_| rules.honor_timestamps);
        scraped.samples.push(ScrapedSample {
            labels,
            sample: Sample::new(explicit.unwrap_or(scrape_time.0), sample.value),
            tracked: explicit.is_none(),
        });
    }
    Ok(scraped)
}

/// Sets the target's labels on a scraped sample's.
fn apply_target_labels(tags: &mut Tags, target_labels: &Tags, honor_labels: bool) {
    for (name, value) in target_labels {
        if honor_labels {
            tags.entry(name.clone()).or_insert_with(|| value.clone());
            continue;
        }
        if let Some(scraped_value) = tags.insert(name.clone(), value.clone()) {
            let mut exported = format!("exported_{name}");
            while tags.contains_key(&exported) {
                exported = format!("exported_{exported}");
            }
            tags.insert(exported, scraped_value);
        }
    }
}

/// The figures of one scrape, written as the report series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Whether the scrape succeeded (`up`).
    pub up: bool,
    /// How long it took (`scrape_duration_seconds`).
    pub duration_seconds: f64,
    /// `scrape_samples_scraped`
    pub samples_scraped: u64,
    /// `scrape_samples_post_metric_relabeling`
    pub samples_post_relabeling: u64,
    /// `scrape_series_added`
    pub series_added: u64,
}

/// The label set of a report series of a target.
pub fn report_labels(name: &str, target_labels: &Tags) -> Labels {
    let mut builder = lookout_model::LabelsBuilder::new();
    for (label, value) in target_labels {
        builder.set(label.as_str(), value.as_str());
    }
    builder.set(METRIC_NAME_LABEL, name);
    builder.build()
}

/// Adds the report series of one scrape at `at`.
pub fn push_report(batch: &mut WriteBatch, target_labels: &Tags, at: TimestampMs, report: &Report) {
    let values = [
        if report.up { 1.0 } else { 0.0 },
        report.duration_seconds,
        report.samples_scraped as f64,
        report.samples_post_relabeling as f64,
        report.series_added as f64,
    ];
    for (name, value) in REPORT_SERIES.iter().zip(values) {
        batch.push(
            report_labels(name, target_labels),
            vec![Sample::new(at.0, value)],
        );
    }
}

/// The series of a target's last successful scrape, for staleness.
#[derive(Debug, Default, Clone)]
pub struct ScrapeCache {
    tracked: HashSet<Labels>,
}

impl ScrapeCache {
    /// An empty cache (a new target).
    pub fn new() -> ScrapeCache {
        ScrapeCache::default()
    }

    /// Series tracked now.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// The batch of a successful scrape at `at`: its samples, and stale markers for the
    /// tracked series it no longer has. Returns the batch and how many series are new.
    pub fn success(&mut self, scraped: Scraped, at: TimestampMs) -> (WriteBatch, u64) {
        let mut batch = WriteBatch::new();
        let mut now_tracked = HashSet::with_capacity(scraped.samples.len());
        let mut added = 0;
        for sample in scraped.samples {
            if !self.tracked.contains(&sample.labels) {
                added += 1;
            }
            if sample.tracked {
                now_tracked.insert(sample.labels.clone());
            }
            batch.push(sample.labels, vec![sample.sample]);
        }
        for gone in self.tracked.difference(&now_tracked) {
            batch.push(gone.clone(), vec![Sample::new(at.0, STALE_NAN)]);
        }
        self.tracked = now_tracked;
        (batch, added)
    }

    /// Stale markers at `at` for every tracked series (a failed scrape); forgets them.
    pub fn failure(&mut self, at: TimestampMs) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for gone in self.tracked.drain() {
            batch.push(gone, vec![Sample::new(at.0, STALE_NAN)]);
        }
        batch
    }

    /// Stale markers at `at` for every tracked series and the target's report series: the
    /// target went away.
    pub fn end(&mut self, target_labels: &Tags, at: TimestampMs) -> WriteBatch {
        let mut batch = self.failure(at);
        for name in REPORT_SERIES {
            batch.push(
                report_labels(name, target_labels),
                vec![Sample::new(at.0, STALE_NAN)],
            );
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::relabel::RawRelabelConfig;
    use lookout_model::is_stale_nan;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn relabel(yaml: &str) -> Vec<RelabelConfig> {
        let raws: Vec<RawRelabelConfig> = serde_yaml_ng::from_str(yaml).unwrap();
        raws.into_iter()
            .map(|raw| RelabelConfig::from_raw(raw).unwrap())
            .collect()
    }

    struct Fixture {
        target: Tags,
        relabel: Vec<RelabelConfig>,
        limits: LabelLimits,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                target: tags(&[("instance", "127.0.0.1:9100"), ("job", "node")]),
                relabel: Vec::new(),
                limits: LabelLimits::default(),
            }
        }

        fn rules(&self, honor_labels: bool, honor_timestamps: bool, limit: u64) -> SampleRules<'_> {
            SampleRules {
                target_labels: &self.target,
                honor_labels,
                honor_timestamps,
                metric_relabel_configs: &self.relabel,
                sample_limit: limit,
                label_limits: &self.limits,
            }
        }

        fn scrape(&self, body: &str) -> Scraped {
            scraped_samples(
                body.as_bytes(),
                Format::Text,
                &self.rules(false, true, 0),
                TimestampMs(1_000),
            )
            .unwrap()
        }
    }

    fn rendered(scraped: &Scraped) -> Vec<String> {
        scraped
            .samples
            .iter()
            .map(|s| format!("{} {} @{}", s.labels, s.sample.value, s.sample.timestamp.0))
            .collect()
    }

    #[test]
    fn target_labels_win_unless_honored() {
        let fixture = Fixture::new();
        let body = "m{job=\"inner\",exported_job=\"x\",code=\"200\"} 1\n";
        let scraped = fixture.scrape(body);
        assert_eq!(
            rendered(&scraped),
            [
                r#"m{code="200", exported_exported_job="inner", exported_job="x", instance="127.0.0.1:9100", job="node"} 1 @1000"#
            ]
        );
        let honored = scraped_samples(
            body.as_bytes(),
            Format::Text,
            &fixture.rules(true, true, 0),
            TimestampMs(1_000),
        )
        .unwrap();
        assert_eq!(
            rendered(&honored),
            [r#"m{code="200", exported_job="x", instance="127.0.0.1:9100", job="inner"} 1 @1000"#]
        );
    }

    #[test]
    fn timestamps_honored_or_not() {
        let fixture = Fixture::new();
        let body = "a 1 500\nb 2\n";
        let honored = fixture.scrape(body);
        assert_eq!(honored.samples[0].sample.timestamp.0, 500);
        assert!(!honored.samples[0].tracked);
        assert_eq!(honored.samples[1].sample.timestamp.0, 1_000);
        assert!(honored.samples[1].tracked);
        let ignored = scraped_samples(
            body.as_bytes(),
            Format::Text,
            &fixture.rules(false, false, 0),
            TimestampMs(1_000),
        )
        .unwrap();
        assert_eq!(ignored.samples[0].sample.timestamp.0, 1_000);
        assert!(ignored.samples[0].tracked);
    }

    #[test]
    fn metric_relabelling_and_counts() {
        let mut fixture = Fixture::new();
        fixture.relabel = relabel(
            "- {source_labels: [__name__], regex: 'go_.*', action: drop}\n\
             - {source_labels: [__name__], regex: 'node_(.*)', target_label: short, replacement: '$1'}",
        );
        let scraped =
            fixture.scrape("go_goroutines 5\nnode_load1 0.5\nnode_load1 0.6\n# HELP x y\n");
        assert_eq!(scraped.samples_scraped, 3);
        assert_eq!(scraped.samples.len(), 1, "dropped and duplicate left out");
        assert_eq!(scraped.duplicates, 1);
        assert_eq!(scraped.samples_post_relabeling(), 2);
        assert_eq!(scraped.samples[0].labels.get("short"), Some("load1"));
        assert_eq!(
            scraped.samples[0].sample.value, 0.5,
            "the first of duplicates"
        );
    }

    #[test]
    fn failures_fail_the_scrape() {
        let fixture = Fixture::new();
        let rules = fixture.rules(false, true, 2);
        let at = TimestampMs(1_000);
        let limit = scraped_samples(b"a 1\nb 2\nc 3\n", Format::Text, &rules, at).unwrap_err();
        assert_eq!(limit, ScrapeError::SampleLimit { limit: 2 });
        assert!(scraped_samples(b"a 1\nb 2\n", Format::Text, &rules, at).is_ok());
        let parse = scraped_samples(b"a 1\nb{ 2\n", Format::Text, &rules, at).unwrap_err();
        assert!(parse.to_string().starts_with("line 2:"), "{parse}");
        let open_metrics = scraped_samples(b"a 1\n", Format::OpenMetrics, &rules, at).unwrap_err();
        assert!(open_metrics.to_string().contains("# EOF"));
    }

    #[test]
    fn staleness_for_disappearing_series_failures_and_the_end() {
        let fixture = Fixture::new();
        let mut cache = ScrapeCache::new();
        let stale = |batch: &WriteBatch| -> Vec<String> {
            let mut names: Vec<String> = batch
                .series
                .iter()
                .filter(|series| is_stale_nan(series.samples[0].value))
                .map(|series| series.labels.metric_name().unwrap_or("").to_owned())
                .collect();
            names.sort();
            names
        };
        let first = fixture.scrape("a 1\nb 2\nexplicit 3 900\n");
        let (batch, added) = cache.success(first, TimestampMs(1_000));
        assert_eq!(added, 3);
        assert!(stale(&batch).is_empty());
        assert_eq!(
            cache.len(),
            2,
            "the explicit-timestamp series is not tracked"
        );
        // `b` disappears: one stale marker at the scrape time.
        let second = fixture.scrape("a 1\nc 4\n");
        let (batch, added) = cache.success(second, TimestampMs(2_000));
        assert_eq!(added, 1);
        assert_eq!(stale(&batch), ["b"]);
        let marker = batch
            .series
            .iter()
            .find(|series| series.labels.metric_name() == Some("b"))
            .unwrap();
        assert_eq!(marker.samples[0].timestamp.0, 2_000);
        assert_eq!(marker.labels.get("job"), Some("node"));
        // A failed scrape: everything tracked goes stale, once.
        assert_eq!(stale(&cache.failure(TimestampMs(3_000))), ["a", "c"]);
        assert!(cache.failure(TimestampMs(4_000)).is_empty());
        // The target goes away: its series and its report series.
        let (_, _) = cache.success(fixture.scrape("a 1\n"), TimestampMs(5_000));
        let end = cache.end(&fixture.target, TimestampMs(6_000));
        assert_eq!(
            stale(&end),
            [
                "a",
                "scrape_duration_seconds",
                "scrape_samples_post_metric_relabeling",
                "scrape_samples_scraped",
                "scrape_series_added",
                "up"
            ]
        );
    }

    #[test]
    fn report_series() {
        let fixture = Fixture::new();
        let mut batch = WriteBatch::new();
        let report = Report {
            up: true,
            duration_seconds: 0.25,
            samples_scraped: 10,
            samples_post_relabeling: 8,
            series_added: 2,
        };
        push_report(&mut batch, &fixture.target, TimestampMs(7), &report);
        let lines: Vec<String> = batch
            .series
            .iter()
            .map(|s| format!("{} {}", s.labels, s.samples[0].value))
            .collect();
        assert_eq!(
            lines,
            [
                r#"up{instance="127.0.0.1:9100", job="node"} 1"#,
                r#"scrape_duration_seconds{instance="127.0.0.1:9100", job="node"} 0.25"#,
                r#"scrape_samples_scraped{instance="127.0.0.1:9100", job="node"} 10"#,
                r#"scrape_samples_post_metric_relabeling{instance="127.0.0.1:9100", job="node"} 8"#,
                r#"scrape_series_added{instance="127.0.0.1:9100", job="node"} 2"#,
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_give_samples_or_an_error(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            open_metrics: bool,
        ) {
            let fixture = Fixture::new();
            let format = if open_metrics { Format::OpenMetrics } else { Format::Text };
            let _ = scraped_samples(&bytes, format, &fixture.rules(false, true, 0), TimestampMs(0));
        }
    }
}
