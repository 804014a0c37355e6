//! `analyze`: what the data costs and why: cardinality by metric and by label, label-value
//! churn between time ranges, bytes per sample per metric, index size, series created per
//! hour. Read-only; tables or `--json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use lookout_model::Labels;
use lookout_tsdb::block::IndexSizes;
use lookout_tsdb::ReadOnlyStore;
use serde::Serialize;

use crate::common::{count_bar, format_bytes, format_time, table};
use crate::list::{notes, open_read_only};

pub fn run(dir: &Path, top: usize, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_read_only(dir)?;
    let analysis = analyze(&store, top)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&analysis).expect("the analysis serialises")
        );
    } else {
        print!("{}", render(&analysis));
        print!("{}", notes(&store));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
pub struct Analysis {
    pub summary: Summary,
    /// Metrics with the most series.
    pub metrics_by_series: Vec<MetricRow>,
    /// Metrics that cost the most bytes per sample on disk (blocks only).
    pub metrics_by_bytes_per_sample: Vec<MetricRow>,
    /// Label names with the most distinct values.
    pub labels_by_values: Vec<LabelRow>,
    /// Label pairs on the most series.
    pub label_pairs_by_series: Vec<PairRow>,
    /// Label names whose values change most between consecutive time ranges.
    pub label_churn: Vec<ChurnRow>,
    pub index: IndexReport,
    /// Series by the hour of their first sample.
    pub series_created_per_hour: Vec<HourRow>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// Time ranges read: each block, then the head if it has samples.
    pub ranges: usize,
    pub blocks: usize,
    pub series: u64,
    pub metrics: u64,
    pub label_names: u64,
    pub samples: u64,
    pub block_samples: u64,
    pub chunk_bytes: u64,
    pub block_bytes: u64,
    pub bytes_per_sample: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub metric: String,
    pub series: u64,
    /// Samples in blocks and head (deleted ranges not subtracted).
    pub samples: u64,
    /// Samples in blocks: what `chunk_bytes` holds.
    pub block_samples: u64,
    pub chunk_bytes: u64,
    pub bytes_per_sample: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct LabelRow {
    pub label: String,
    pub values: u64,
    pub series: u64,
}

#[derive(Debug, Serialize)]
pub struct PairRow {
    pub label: String,
    pub value: String,
    pub series: u64,
}

#[derive(Debug, Serialize)]
pub struct ChurnRow {
    pub label: String,
    /// Distinct values over all ranges.
    pub values: u64,
    /// Values present in a range but not in the range before it, summed over ranges.
    pub added: u64,
    /// Values present in a range but gone in the next, summed over ranges.
    pub removed: u64,
}

#[derive(Debug, Serialize)]
pub struct IndexReport {
    pub total: IndexSizes,
    pub blocks: Vec<BlockIndex>,
}

#[derive(Debug, Serialize)]
pub struct BlockIndex {
    pub block: String,
    pub series: u32,
    pub sizes: IndexSizes,
}

#[derive(Debug, Serialize)]
pub struct HourRow {
    pub hour: String,
    pub hour_ms: i64,
    pub series: u64,
}

#[derive(Debug, Default)]
struct SeriesFacts {
    samples: u64,
    block_samples: u64,
    chunk_bytes: u64,
    first_t: i64,
}

/// Label values seen in one time range, by label name.
type RangeValues = HashMap<String, HashSet<String>>;

pub fn analyze(store: &ReadOnlyStore, top: usize) -> anyhow::Result<Analysis> {
    let mut series: HashMap<Labels, SeriesFacts> = HashMap::new();
    let mut churn: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut previous: Option<RangeValues> = None;
    let mut ranges = 0;
    let mut index_rows = Vec::new();
    let mut block_bytes = 0;

    let total_series: u64 = store
        .blocks()
        .iter()
        .map(|block| u64::from(block.series_count()))
        .sum();
    let bar = count_bar(total_series, "reading indexes", "series");
    for block in store.blocks() {
        let mut values = RangeValues::new();
        for id in 0..block.series_count() {
            let (labels, chunks) = block
                .series_chunks(id)
                .with_context(|| format!("reading block {}", block.meta().id))?;
            note_values(&mut values, &labels);
            let samples: u64 = chunks.iter().map(|chunk| chunk.samples).sum();
            let bytes: u64 = chunks.iter().map(|chunk| chunk.bytes).sum();
            let first_t = chunks.first().map_or(i64::MAX, |chunk| chunk.min_t);
            let facts = series.entry(labels).or_insert_with(|| SeriesFacts {
                first_t: i64::MAX,
                ..SeriesFacts::default()
            });
            facts.samples += samples;
            facts.block_samples += samples;
            facts.chunk_bytes += bytes;
            facts.first_t = facts.first_t.min(first_t);
            bar.inc(1);
        }
        compare_ranges(&mut churn, previous.as_ref(), &values);
        previous = Some(values);
        ranges += 1;
        block_bytes += block.size_bytes();
        index_rows.push(BlockIndex {
            block: block.meta().id.clone(),
            series: block.series_count(),
            sizes: block.index_sizes(),
        });
    }
    bar.finish_and_clear();
    let head_series = store.head().select(&[], i64::MIN, i64::MAX);
    if !head_series.is_empty() {
        let mut values = RangeValues::new();
        for head in head_series {
            note_values(&mut values, &head.labels);
            let first_t = head.samples.first().map_or(i64::MAX, |s| s.timestamp.0);
            let facts = series.entry(head.labels).or_insert_with(|| SeriesFacts {
                first_t: i64::MAX,
                ..SeriesFacts::default()
            });
            facts.samples += head.samples.len() as u64;
            facts.first_t = facts.first_t.min(first_t);
        }
        compare_ranges(&mut churn, previous.as_ref(), &values);
        ranges += 1;
    }

    // Per metric, per label name, per pair, per hour.
    let mut metrics: HashMap<String, MetricRow> = HashMap::new();
    let mut names: HashMap<String, (HashSet<&str>, u64)> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), u64> = HashMap::new();
    let mut hours: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut samples, mut block_samples, mut chunk_bytes) = (0, 0, 0);
    for (labels, facts) in &series {
        let metric = labels.metric_name().unwrap_or("").to_owned();
        let row = metrics.entry(metric.clone()).or_insert_with(|| MetricRow {
            metric,
            series: 0,
            samples: 0,
            block_samples: 0,
            chunk_bytes: 0,
            bytes_per_sample: None,
        });
        row.series += 1;
        row.samples += facts.samples;
        row.block_samples += facts.block_samples;
        row.chunk_bytes += facts.chunk_bytes;
        for label in labels.iter() {
            let entry = names.entry(label.name.to_string()).or_default();
            entry.0.insert(&label.value);
            entry.1 += 1;
            *pairs.entry((&label.name, &label.value)).or_default() += 1;
        }
        if facts.first_t != i64::MAX {
            *hours
                .entry(facts.first_t.div_euclid(3_600_000))
                .or_default() += 1;
        }
        samples += facts.samples;
        block_samples += facts.block_samples;
        chunk_bytes += facts.chunk_bytes;
    }
    let mut metric_rows: Vec<MetricRow> = metrics
        .into_values()
        .map(|mut row| {
            // Blocks only: the head's chunks are in memory, not on disk.
            row.bytes_per_sample =
                (row.block_samples > 0).then(|| row.chunk_bytes as f64 / row.block_samples as f64);
            row
        })
        .collect();
    metric_rows.sort_by(|a, b| {
        b.series
            .cmp(&a.series)
            .then_with(|| a.metric.cmp(&b.metric))
    });
    let metric_count = metric_rows.len() as u64;
    let mut by_cost: Vec<MetricRow> = metric_rows
        .iter()
        .filter(|row| row.bytes_per_sample.is_some())
        .cloned()
        .collect();
    by_cost.sort_by(|a, b| {
        b.bytes_per_sample
            .partial_cmp(&a.bytes_per_sample)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.metric.cmp(&b.metric))
    });
    by_cost.truncate(top);
    metric_rows.truncate(top);

    let label_name_count = names.len() as u64;
    let distinct_values: HashMap<&str, u64> = names
        .iter()
        .map(|(name, (values, _))| (name.as_str(), values.len() as u64))
        .collect();
    let mut label_rows: Vec<LabelRow> = names
        .iter()
        .map(|(name, (values, series))| LabelRow {
            label: name.clone(),
            values: values.len() as u64,
            series: *series,
        })
        .collect();
    label_rows.sort_by(|a, b| b.values.cmp(&a.values).then_with(|| a.label.cmp(&b.label)));
    label_rows.truncate(top);

    let mut pair_rows: Vec<PairRow> = pairs
        .iter()
        .map(|((name, value), series)| PairRow {
            label: (*name).to_owned(),
            value: (*value).to_owned(),
            series: *series,
        })
        .collect();
    pair_rows.sort_by(|a, b| {
        b.series
            .cmp(&a.series)
            .then_with(|| a.label.cmp(&b.label))
            .then_with(|| a.value.cmp(&b.value))
    });
    pair_rows.truncate(top);

    let mut churn_rows: Vec<ChurnRow> = churn
        .into_iter()
        .filter(|(_, (added, removed))| added + removed > 0)
        .map(|(label, (added, removed))| ChurnRow {
            values: distinct_values.get(label.as_str()).copied().unwrap_or(0),
            label,
            added,
            removed,
        })
        .collect();
    churn_rows.sort_by(|a, b| {
        (b.added + b.removed)
            .cmp(&(a.added + a.removed))
            .then_with(|| a.label.cmp(&b.label))
    });
    churn_rows.truncate(top);

    let mut total = IndexSizes::default();
    for row in &index_rows {
        total.total += row.sizes.total;
        total.symbols += row.sizes.symbols;
        total.series += row.sizes.series;
        total.series_offsets += row.sizes.series_offsets;
        total.postings += row.sizes.postings;
        total.postings_table += row.sizes.postings_table;
    }
    Ok(Analysis {
        summary: Summary {
            ranges,
            blocks: store.blocks().len(),
            series: series.len() as u64,
            metrics: metric_count,
            label_names: label_name_count,
            samples,
            block_samples,
            chunk_bytes,
            block_bytes,
            bytes_per_sample: (block_samples > 0)
                .then(|| chunk_bytes as f64 / block_samples as f64),
        },
        metrics_by_series: metric_rows,
        metrics_by_bytes_per_sample: by_cost,
        labels_by_values: label_rows,
        label_pairs_by_series: pair_rows,
        label_churn: churn_rows,
        index: IndexReport {
            total,
            blocks: index_rows,
        },
        series_created_per_hour: hours
            .into_iter()
            .map(|(hour, series)| HourRow {
                hour: format_time(hour * 3_600_000),
                hour_ms: hour * 3_600_000,
                series,
            })
            .collect(),
    })
}

fn note_values(values: &mut RangeValues, labels: &Labels) {
    for label in labels.iter() {
        if let Some(set) = values.get_mut(label.name.as_str()) {
            if !set.contains(label.value.as_str()) {
                set.insert(label.value.to_string());
            }
        } else {
            values.insert(
                label.name.to_string(),
                HashSet::from([label.value.to_string()]),
            );
        }
    }
}

/// Adds to each label name's churn the values `current` gained and lost against `previous`.
fn compare_ranges(
    churn: &mut BTreeMap<String, (u64, u64)>,
    previous: Option<&RangeValues>,
    current: &RangeValues,
) {
    let Some(previous) = previous else {
        for name in current.keys() {
            churn.entry(name.clone()).or_default();
        }
        return;
    };
    let empty = HashSet::new();
    for (name, values) in current {
        let before = previous.get(name).unwrap_or(&empty);
        let entry = churn.entry(name.clone()).or_default();
        entry.0 += values.difference(before).count() as u64;
    }
    for (name, values) in previous {
        let after = current.get(name).unwrap_or(&empty);
        let entry = churn.entry(name.clone()).or_default();
        entry.1 += values.difference(after).count() as u64;
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.2}"))
}

pub fn render(analysis: &Analysis) -> String {
    let summary = &analysis.summary;
    let mut out = String::new();
    out.push_str(&format!(
        "{} series of {} metrics, {} label names, {} samples in {} time ranges ({} blocks + head)\n\
         blocks: {} on disk, chunks {} for {} samples = {} bytes/sample\n",
        summary.series,
        summary.metrics,
        summary.label_names,
        summary.samples,
        summary.ranges,
        summary.blocks,
        format_bytes(summary.block_bytes),
        format_bytes(summary.chunk_bytes),
        summary.block_samples,
        ratio(summary.bytes_per_sample),
    ));

    out.push_str("\nMetrics by series\n");
    let rows: Vec<Vec<String>> = analysis
        .metrics_by_series
        .iter()
        .map(|row| {
            vec![
                row.series.to_string(),
                row.samples.to_string(),
                ratio(row.bytes_per_sample),
                row.metric.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SERIES", "SAMPLES", "BYTES/SAMPLE", "METRIC"],
        &rows,
    ));

    out.push_str("\nMetrics by bytes per sample (blocks)\n");
    let rows: Vec<Vec<String>> = analysis
        .metrics_by_bytes_per_sample
        .iter()
        .map(|row| {
            vec![
                ratio(row.bytes_per_sample),
                format_bytes(row.chunk_bytes),
                row.series.to_string(),
                row.metric.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["BYTES/SAMPLE", "CHUNK BYTES", "SERIES", "METRIC"],
        &rows,
    ));

    out.push_str("\nLabel names by distinct values\n");
    let rows: Vec<Vec<String>> = analysis
        .labels_by_values
        .iter()
        .map(|row| {
            vec![
                row.values.to_string(),
                row.series.to_string(),
                row.label.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["VALUES", "SERIES", "LABEL"], &rows));

    out.push_str("\nLabel pairs by series\n");
    let rows: Vec<Vec<String>> = analysis
        .label_pairs_by_series
        .iter()
        .map(|row| {
            vec![
                row.series.to_string(),
                format!("{}={:?}", row.label, row.value),
            ]
        })
        .collect();
    out.push_str(&table(&["SERIES", "PAIR"], &rows));

    out.push_str("\nLabel value churn between consecutive time ranges\n");
    let rows: Vec<Vec<String>> = analysis
        .label_churn
        .iter()
        .map(|row| {
            vec![
                row.added.to_string(),
                row.removed.to_string(),
                row.values.to_string(),
                row.label.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["ADDED", "REMOVED", "VALUES", "LABEL"], &rows));

    out.push_str("\nIndex size\n");
    let size_row = |name: String, series: String, sizes: &IndexSizes| {
        vec![
            name,
            series,
            format_bytes(sizes.total),
            format_bytes(sizes.symbols),
            format_bytes(sizes.series),
            format_bytes(sizes.series_offsets),
            format_bytes(sizes.postings),
            format_bytes(sizes.postings_table),
        ]
    };
    let mut rows: Vec<Vec<String>> = analysis
        .index
        .blocks
        .iter()
        .map(|row| size_row(row.block.clone(), row.series.to_string(), &row.sizes))
        .collect();
    rows.push(size_row(
        "total".into(),
        String::new(),
        &analysis.index.total,
    ));
    out.push_str(&table(
        &[
            "BLOCK", "SERIES", "INDEX", "SYMBOLS", "SERIES", "OFFSETS", "POSTINGS", "TABLE",
        ],
        &rows,
    ));

    out.push_str("\nSeries created per hour (by first sample)\n");
    let rows: Vec<Vec<String>> = analysis
        .series_created_per_hour
        .iter()
        .map(|row| vec![row.hour.clone(), row.series.to_string()])
        .collect();
    out.push_str(&table(&["HOUR", "SERIES"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(pairs: &[(&str, &[&str])]) -> RangeValues {
        pairs
            .iter()
            .map(|(name, values)| {
                (
                    (*name).to_owned(),
                    values.iter().map(|value| (*value).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn churn_counts_values_gained_and_lost_between_ranges() {
        let mut churn = BTreeMap::new();
        let first = range(&[("pod", &["a", "b"]), ("job", &["api"])]);
        let second = range(&[("pod", &["b", "c", "d"]), ("job", &["api"])]);
        let third = range(&[("job", &["api", "web"])]);
        compare_ranges(&mut churn, None, &first);
        compare_ranges(&mut churn, Some(&first), &second);
        compare_ranges(&mut churn, Some(&second), &third);
        // pod: +c +d -a, then -b -c -d; job: +web.
        assert_eq!(churn["pod"], (2, 4));
        assert_eq!(churn["job"], (1, 0));
    }
}
