//! The steps every gateway protocol shares after decoding (spec §4.4–§4.5, with their bugs
//! fixed): common tags added to every series without overriding what the sender set, then
//! the label limits (labels per series, name and value length), which refuse a series with
//! a reason rather than truncating it as SOFALookout's post-filter did.
//!
//! Pure functions over a [`WriteBatch`]: the server applies them between a decoder and the
//! store, so every protocol of the gateway port (push, remote write, telnet, scrape) gets
//! the same treatment.

use lookout_model::{LabelLimits, Labels, ModelError, NameValidation, METRIC_NAME_LABEL};
use lookout_storage::{RejectReason, WriteBatch, WriteOutcome};

/// Why a common tag was refused at configuration time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommonTagError {
    /// `__name__` (or another reserved name) cannot be a common tag.
    #[error("common tag {name:?} is reserved")]
    Reserved { name: String },
    /// An empty value would be the same as no tag.
    #[error("common tag {name:?} has an empty value")]
    EmptyValue { name: String },
    /// The name is not a valid label name.
    #[error("common tag {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    /// `name=value` was expected.
    #[error("common tag {text:?} is not name=value")]
    NotAPair { text: String },
}

/// Labels added to every series a gateway receives, where the series does not set the name
/// itself (the sender's value wins, as path tags do in spec §4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonTags {
    /// Sorted by name, each name once.
    tags: Vec<(String, String)>,
}

impl CommonTags {
    /// Checks the tags: names in the classic label character set (`[a-zA-Z_][a-zA-Z0-9_]*`,
    /// which every protocol can carry), not starting with `__`, values not empty.
    pub fn new(
        tags: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CommonTags, CommonTagError> {
        let mut checked: Vec<(String, String)> = Vec::new();
        for (name, value) in tags {
            if name == METRIC_NAME_LABEL || name.starts_with("__") {
                return Err(CommonTagError::Reserved { name });
            }
            if value.is_empty() {
                return Err(CommonTagError::EmptyValue { name });
            }
            let limits = LabelLimits {
                validation: NameValidation::Legacy,
                ..LabelLimits::default()
            };
            Labels::from_pairs([(name.as_str(), value.as_str())])
                .and_then(|labels| labels.validate(&limits))
                .map_err(|error: ModelError| CommonTagError::Invalid {
                    name: name.clone(),
                    reason: error.to_string(),
                })?;
            checked.retain(|(existing, _)| *existing != name);
            checked.push((name, value));
        }
        checked.sort();
        Ok(CommonTags { tags: checked })
    }

    /// Parses `name=value` (a flag's form).
    pub fn parse_pair(text: &str) -> Result<(String, String), CommonTagError> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| CommonTagError::NotAPair {
                text: text.to_owned(),
            })?;
        Ok((name.trim().to_owned(), value.trim().to_owned()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tags, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// `labels` with every common tag it lacks.
    pub fn apply_to(&self, labels: &Labels) -> Labels {
        let missing = self
            .tags
            .iter()
            .filter(|(name, _)| labels.get(name).is_none());
        let mut builder = None;
        for (name, value) in missing {
            builder
                .get_or_insert_with(|| labels.to_builder())
                .set(name.as_str(), value.as_str());
        }
        match builder {
            Some(builder) => builder.build(),
            None => labels.clone(),
        }
    }

    /// Adds the common tags to every series of `batch`.
    pub fn apply(&self, batch: &mut WriteBatch) {
        if self.tags.is_empty() {
            return;
        }
        for series in &mut batch.series {
            series.labels = self.apply_to(&series.labels);
        }
    }
}

/// What every series a gateway writes goes through before the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline {
    /// Added where the series lacks them.
    pub common_tags: CommonTags,
    /// Checked after the common tags are added.
    pub label_limits: LabelLimits,
}

impl Pipeline {
    /// Adds the common tags to every series of `batch` and takes out the series whose labels
    /// break the limits; their samples are counted in the returned outcome as
    /// [`RejectReason::InvalidLabels`], with the series named in its messages.
    pub fn prepare(&self, batch: &mut WriteBatch) -> WriteOutcome {
        self.common_tags.apply(batch);
        let mut refused = WriteOutcome::default();
        batch
            .series
            .retain(|series| match series.labels.validate(&self.label_limits) {
                Ok(()) => true,
                Err(error) => {
                    refused.reject(
                        RejectReason::InvalidLabels,
                        series.samples.len() as u64,
                        || format!("{}: {error}", series.labels),
                    );
                    false
                }
            });
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::Sample;

    fn tags(pairs: &[(&str, &str)]) -> Result<CommonTags, CommonTagError> {
        CommonTags::new(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
    }

    #[test]
    fn common_tags_fill_only_what_the_sender_left_out() {
        let common = tags(&[("env", "prod"), ("dc", "gz")]).unwrap();
        let mut batch = WriteBatch::new();
        batch.push(
            Labels::from_pairs([("__name__", "up"), ("env", "dev")]).unwrap(),
            vec![Sample::new(1, 1.0)],
        );
        batch.push(
            Labels::from_pairs([("__name__", "jobs")]).unwrap(),
            vec![Sample::new(1, 2.0)],
        );
        common.apply(&mut batch);
        assert_eq!(
            batch.series[0].labels.to_string(),
            r#"up{dc="gz", env="dev"}"#
        );
        assert_eq!(
            batch.series[1].labels.to_string(),
            r#"jobs{dc="gz", env="prod"}"#
        );
        // Built labels hash like labels parsed from the same pairs.
        let expected =
            Labels::from_pairs([("__name__", "jobs"), ("env", "prod"), ("dc", "gz")]).unwrap();
        assert_eq!(batch.series[1].labels, expected);
        assert_eq!(batch.series[1].labels.stable_hash(), expected.stable_hash());
    }

    #[test]
    fn the_pipeline_refuses_series_beyond_the_label_limits_after_adding_common_tags() {
        let pipeline = Pipeline {
            common_tags: tags(&[("dc", "gz")]).unwrap(),
            label_limits: LabelLimits {
                max_labels: 3,
                max_value_bytes: 8,
                ..LabelLimits::default()
            },
        };
        let mut batch = WriteBatch::new();
        let push = |batch: &mut WriteBatch, pairs: &[(&str, &str)]| {
            batch.push(
                Labels::from_pairs(pairs.iter().copied()).unwrap(),
                vec![Sample::new(1, 1.0), Sample::new(2, 2.0)],
            );
        };
        push(&mut batch, &[("__name__", "ok"), ("a", "1")]);
        // Two labels of its own plus dc: one too many.
        push(&mut batch, &[("__name__", "wide"), ("a", "1"), ("b", "2")]);
        push(&mut batch, &[("__name__", "long"), ("a", "123456789")]);
        let refused = pipeline.prepare(&mut batch);
        assert_eq!(batch.series.len(), 1);
        assert_eq!(batch.series[0].labels.to_string(), r#"ok{a="1", dc="gz"}"#);
        assert_eq!(refused.rejected_for(RejectReason::InvalidLabels), 4);
        assert_eq!(refused.accepted, 0);
        assert!(
            refused.messages[0].starts_with("invalid_labels: wide{"),
            "{:?}",
            refused.messages
        );
        assert!(
            refused.messages[1].contains("long"),
            "{:?}",
            refused.messages
        );
    }

    proptest::proptest! {
        /// Whatever the sender sent stays as sent; every common tag the sender lacks is
        /// added; the result is the label set the union would parse to (same hash).
        #[test]
        fn common_tags_never_override_the_sender(
            sender in proptest::collection::btree_map("[a-d]", "[x-z]{1,2}", 0..4),
            common in proptest::collection::btree_map("[b-f]", "[p-r]{1,2}", 0..4),
        ) {
            let common_tags = CommonTags::new(common.clone()).unwrap();
            let labels = Labels::from_pairs(
                std::iter::once(("__name__".to_owned(), "m".to_owned())).chain(sender.clone()),
            )
            .unwrap();
            let result = common_tags.apply_to(&labels);
            for (name, value) in &sender {
                proptest::prop_assert_eq!(result.get(name), Some(value.as_str()));
            }
            let mut union = common.clone();
            union.extend(sender.clone());
            for (name, value) in &union {
                proptest::prop_assert_eq!(result.get(name), Some(value.as_str()));
            }
            let expected = Labels::from_pairs(
                std::iter::once(("__name__".to_owned(), "m".to_owned())).chain(union),
            )
            .unwrap();
            proptest::prop_assert_eq!(result.stable_hash(), expected.stable_hash());
            proptest::prop_assert_eq!(result, expected);
        }
    }

    #[test]
    fn bad_common_tags_are_refused() {
        assert!(matches!(
            tags(&[("__name__", "x")]),
            Err(CommonTagError::Reserved { .. })
        ));
        assert!(matches!(
            tags(&[("__tenant", "x")]),
            Err(CommonTagError::Reserved { .. })
        ));
        assert!(matches!(
            tags(&[("env", "")]),
            Err(CommonTagError::EmptyValue { .. })
        ));
        assert!(matches!(
            tags(&[("9env", "x")]),
            Err(CommonTagError::Invalid { .. })
        ));
        assert!(matches!(
            tags(&[("a.b", "x")]),
            Err(CommonTagError::Invalid { .. })
        ));
        assert_eq!(
            CommonTags::parse_pair("env = prod").unwrap(),
            ("env".to_owned(), "prod".to_owned())
        );
        assert!(CommonTags::parse_pair("env").is_err());
        let later_wins = tags(&[("env", "a"), ("env", "b")]).unwrap();
        assert_eq!(later_wins.iter().collect::<Vec<_>>(), [("env", "b")]);
    }
}
