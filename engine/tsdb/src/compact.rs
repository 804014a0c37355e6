//! Compaction planning and the series merge it runs on.
//!
//! Levels: blocks cut from the head span one block duration `d`; compaction merges the blocks
//! of one aligned window of `3d`, then `9d`, ... (each level three times the previous), up to a
//! maximum range (a tenth of the time retention by default). Blocks that overlap in time (left
//! by out-of-order data or an interrupted compaction) are merged first, whatever their level
//! ("vertical" compaction). Deleted ranges are dropped while rewriting, so compaction reclaims
//! their bytes.
//!
//! Only compaction writes the compact columnar chunks; blocks cut from the head keep the
//! head's Gorilla chunks (level 1). So that data does not stay in Gorilla chunks because its
//! window never filled (the store started or stopped in the middle of it, or was down for a
//! while), a level-1 block alone in a closed window of the smallest range is rewritten on its
//! own, and at a graceful stop the blocks of the still open windows of the smallest range
//! are merged with the head written at the stop ([`Closing::Yes`]). A block written from the
//! head at a stop is columnar already and counts as level 2.

use std::collections::BTreeSet;

use lookout_model::{Labels, Sample};
use lookout_storage::Series;

use crate::block::BlockMeta;
use crate::error::Result;

/// The ranges of compaction levels: `block_duration × 3^k` for k ≥ 1, up to `max_range`.
pub fn level_ranges(block_duration: i64, max_range: i64) -> Vec<i64> {
    let mut ranges = Vec::new();
    let mut range = block_duration.saturating_mul(3);
    while range <= max_range && range > block_duration {
        ranges.push(range);
        range = range.saturating_mul(3);
    }
    ranges
}

/// Whether the store is stopping: then the open windows of the smallest range are compacted
/// as if closed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The store is stopping.
    Yes,
    /// The store is running.
    No,
}

/// The next group of blocks to merge (positions in `metas`, which are sorted by min time), or
/// `None` when there is nothing to do.
pub fn plan(metas: &[&BlockMeta], ranges: &[i64], closing: Closing) -> Option<Vec<usize>> {
    // Vertical: any blocks that overlap in time.
    let mut group: Vec<usize> = Vec::new();
    let mut group_end = i64::MIN;
    for (position, meta) in metas.iter().enumerate() {
        if !group.is_empty() && meta.min_time < group_end {
            group.push(position);
            group_end = group_end.max(meta.max_time);
            continue;
        }
        if group.len() >= 2 {
            return Some(group);
        }
        group = vec![position];
        group_end = meta.max_time;
    }
    if group.len() >= 2 {
        return Some(group);
    }
    // Leveled: the blocks of one aligned window, once newer data exists past the window.
    let newest = metas.iter().map(|meta| meta.max_time).max()?;
    for (level, &range) in ranges.iter().enumerate() {
        let smallest = level == 0;
        let mut position = 0;
        while position < metas.len() {
            let window_start = metas[position]
                .min_time
                .div_euclid(range)
                .saturating_mul(range);
            let window_end = window_start.saturating_add(range);
            let members: Vec<usize> = (position..metas.len())
                .take_while(|&index| metas[index].min_time < window_end)
                .collect();
            position += members.len().max(1);
            let fits = members
                .iter()
                .all(|&index| metas[index].max_time <= window_end);
            let closed = window_end <= newest || (smallest && closing == Closing::Yes);
            // A lone block is rewritten only to leave the head's Gorilla chunks.
            let worth = members.len() >= 2 || (smallest && metas[members[0]].compaction.level <= 1);
            if worth && fits && closed {
                return Some(members);
            }
        }
    }
    None
}

/// The union of the sources of the merged blocks, sorted.
pub fn merged_sources(sources: impl IntoIterator<Item = Vec<String>>) -> Vec<String> {
    sources
        .into_iter()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Merges iterators of series, each sorted by labels, into one sorted by labels. Series with
/// the same labels are combined into one with samples in time order; where two sources hold
/// the same timestamp the later source (newer block) wins.
pub fn merge_series<'a>(
    sources: Vec<Box<dyn Iterator<Item = Result<Series>> + 'a>>,
) -> impl Iterator<Item = Result<(Labels, Vec<Sample>)>> + 'a {
    let mut sources: Vec<std::iter::Peekable<Box<dyn Iterator<Item = Result<Series>> + 'a>>> =
        sources.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        // Surface an error from any source first.
        for source in sources.iter_mut() {
            if matches!(source.peek(), Some(Err(_))) {
                return source
                    .next()
                    .map(|item| item.map(|series| (series.labels, series.samples)));
            }
        }
        let smallest = sources
            .iter_mut()
            .filter_map(|source| match source.peek() {
                Some(Ok(series)) => Some(series.labels.clone()),
                _ => None,
            })
            .min()?;
        let mut samples: Vec<Sample> = Vec::new();
        for source in sources.iter_mut() {
            if matches!(source.peek(), Some(Ok(series)) if series.labels == smallest) {
                if let Some(Ok(series)) = source.next() {
                    samples.extend(series.samples);
                }
            }
        }
        Some(Ok((smallest, deduplicate(samples))))
    })
}

/// Sorts by time and keeps the last of samples sharing a timestamp.
pub fn deduplicate(mut samples: Vec<Sample>) -> Vec<Sample> {
    samples.sort_by_key(|sample| sample.timestamp);
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for sample in samples {
        match out.last_mut() {
            Some(last) if last.timestamp == sample.timestamp => *last = sample,
            _ => out.push(sample),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockStats, Compaction};

    const H: i64 = 3_600_000;

    /// A block cut from the head (level 1) when it spans at most 2 h, else a compacted one.
    fn meta(min_time: i64, max_time: i64) -> BlockMeta {
        let level = if max_time - min_time <= 2 * H { 1 } else { 2 };
        meta_at(min_time, max_time, level)
    }

    fn meta_at(min_time: i64, max_time: i64, level: u32) -> BlockMeta {
        BlockMeta {
            version: 1,
            id: format!("{min_time}-{max_time}"),
            min_time,
            max_time,
            stats: BlockStats::default(),
            compaction: Compaction {
                level,
                sources: Vec::new(),
            },
        }
    }

    fn plan_of(blocks: &[BlockMeta]) -> Option<Vec<usize>> {
        plan_closing(blocks, Closing::No)
    }

    fn plan_closing(blocks: &[BlockMeta], closing: Closing) -> Option<Vec<usize>> {
        let refs: Vec<&BlockMeta> = blocks.iter().collect();
        plan(&refs, &level_ranges(2 * H, 36 * H), closing)
    }

    #[test]
    fn a_lone_head_block_in_a_closed_window_leaves_gorilla_alone() {
        // The store started at 4 h: the 0-6 h window holds one block cut from the head.
        let blocks = [meta(4 * H, 6 * H), meta(6 * H, 8 * H)];
        assert_eq!(plan_of(&blocks), Some(vec![0]));
        // Not while its window is open, and never a compacted block alone.
        assert_eq!(plan_of(&[meta(6 * H, 8 * H)]), None);
        let blocks = [meta_at(4 * H, 6 * H, 2), meta(6 * H, 8 * H)];
        assert_eq!(plan_of(&blocks), None);
        // Nor in a larger range: an 18 h window with one 6 h block stays as it is.
        let blocks = [meta(0, 6 * H), meta(18 * H, 20 * H)];
        assert_eq!(plan_of(&blocks), None);
    }

    #[test]
    fn at_a_stop_the_open_windows_of_the_smallest_range_are_compacted() {
        // A block cut at 8 h and the head written at the stop (level 2, columnar).
        let blocks = [meta(6 * H, 8 * H), meta_at(8 * H, 10 * H, 2)];
        assert_eq!(plan_of(&blocks), None);
        assert_eq!(plan_closing(&blocks, Closing::Yes), Some(vec![0, 1]));
        // Nothing to gain from a lone block written at the stop.
        let blocks = [meta_at(6 * H, 10 * H, 2)];
        assert_eq!(plan_closing(&blocks, Closing::Yes), None);
        // Larger windows still wait until they are closed.
        let blocks = [meta(0, 6 * H), meta(6 * H, 12 * H)];
        assert_eq!(plan_closing(&blocks, Closing::Yes), None);
    }

    #[test]
    fn ranges_grow_by_three_up_to_the_maximum() {
        assert_eq!(level_ranges(2 * H, 36 * H), [6 * H, 18 * H]);
        assert!(level_ranges(2 * H, 5 * H).is_empty());
    }

    #[test]
    fn a_closed_window_of_three_blocks_is_merged() {
        let blocks = [
            meta(0, 2 * H),
            meta(2 * H, 4 * H),
            meta(4 * H, 6 * H),
            meta(6 * H, 8 * H),
        ];
        assert_eq!(plan_of(&blocks), Some(vec![0, 1, 2]));
    }

    #[test]
    fn the_newest_window_waits_until_it_is_closed() {
        let blocks = [meta(0, 2 * H), meta(2 * H, 4 * H)];
        assert_eq!(plan_of(&blocks), None);
        let blocks = [meta(0, 6 * H), meta(6 * H, 8 * H), meta(8 * H, 10 * H)];
        assert_eq!(plan_of(&blocks), None, "6h window 6-12h still open");
        let blocks = [
            meta(0, 6 * H),
            meta(6 * H, 8 * H),
            meta(8 * H, 10 * H),
            meta(12 * H, 14 * H),
        ];
        assert_eq!(
            plan_of(&blocks),
            Some(vec![1, 2]),
            "closed by newer data, even with a gap"
        );
        let blocks = [
            meta(0, 6 * H),
            meta(6 * H, 12 * H),
            meta(12 * H, 18 * H),
            meta(18 * H, 20 * H),
        ];
        assert_eq!(plan_of(&blocks), Some(vec![0, 1, 2]), "18h window closed");
    }

    #[test]
    fn overlapping_blocks_are_merged_first() {
        let blocks = [meta(0, 2 * H), meta(H, 3 * H), meta(4 * H, 6 * H)];
        assert_eq!(plan_of(&blocks), Some(vec![0, 1]));
    }

    #[test]
    fn series_merge_by_labels_and_newest_wins() {
        let labels = |v: &str| Labels::from_pairs([("a", v)]).unwrap();
        let older: Vec<Result<Series>> = vec![
            Ok(Series {
                labels: labels("1"),
                samples: vec![Sample::new(1, 1.0), Sample::new(2, 1.0)],
            }),
            Ok(Series {
                labels: labels("3"),
                samples: vec![Sample::new(1, 3.0)],
            }),
        ];
        let newer: Vec<Result<Series>> = vec![
            Ok(Series {
                labels: labels("1"),
                samples: vec![Sample::new(2, 9.0), Sample::new(3, 1.0)],
            }),
            Ok(Series {
                labels: labels("2"),
                samples: vec![Sample::new(5, 2.0)],
            }),
        ];
        let merged: Vec<(Labels, Vec<Sample>)> = merge_series(vec![
            Box::new(older.into_iter()),
            Box::new(newer.into_iter()),
        ])
        .collect::<Result<_>>()
        .unwrap();
        assert_eq!(merged.len(), 3);
        assert_eq!(
            merged[0].1,
            [
                Sample::new(1, 1.0),
                Sample::new(2, 9.0),
                Sample::new(3, 1.0)
            ]
        );
        assert_eq!(merged[1].0, labels("2"));
        assert_eq!(merged[2].0, labels("3"));
    }
}
