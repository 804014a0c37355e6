//! Compaction, retention, deletion with space reclaim, clean-tombstones and snapshots.

use std::fs;
use std::path::Path;

use lookout_model::{Labels, Matcher, Sample};
use lookout_storage::WriteBatch;
use lookout_tsdb::block::{Block, BlockMeta, Compaction};
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

#[path = "support/copy_dir.rs"]
mod support;
use support::copy_dir;

const HOUR: i64 = 3_600_000;
const STEP: i64 = 15_000;

fn options(dir: &Path) -> TsdbOptions {
    TsdbOptions::new(dir)
        .fsync(FsyncPolicy::Never)
        .block_duration_ms(HOUR)
}

fn labels(index: usize) -> Labels {
    Labels::from_pairs([("__name__", "m"), ("s", index.to_string().as_str())]).unwrap()
}

fn fill(tsdb: &Tsdb, series: usize, from_hour: i64, to_hour: i64) {
    for t in (from_hour * HOUR..to_hour * HOUR).step_by(STEP as usize) {
        let mut batch = WriteBatch::new();
        for index in 0..series {
            // Irregular values so chunks are not trivially small.
            let value = ((t / STEP) as f64 * 1.37 + index as f64).sin() * 1000.0;
            batch.push(labels(index), vec![Sample::new(t, value)]);
        }
        tsdb.append(&batch).unwrap();
    }
}

fn sample_count(tsdb: &Tsdb) -> usize {
    tsdb.select_blocking(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX)
        .iter()
        .map(|series| series.samples.len())
        .sum()
}

fn blocks_bytes(dir: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        fs::read_dir(path)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path())
                } else {
                    entry.metadata().unwrap().len()
                }
            })
            .sum()
    }
    walk(&dir.join("blocks"))
}

#[test]
fn retention_by_time_deletes_whole_blocks_older_than_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path()).retention_ms(Some(5 * HOUR))).unwrap();
    fill(&tsdb, 2, 0, 12);
    let blocks = tsdb.blocks();
    let newest = tsdb.head().time_range().unwrap().1;
    assert!(!blocks.is_empty());
    for block in &blocks {
        assert!(
            block.meta().max_time > newest - 5 * HOUR,
            "{:?} should have been deleted",
            block.meta()
        );
    }
    // What is older than the window is gone, what is inside it is all there.
    let series = tsdb.select_blocking(&[Matcher::equal("s", "0")], i64::MIN, i64::MAX);
    let oldest = series[0].samples[0].timestamp.0;
    assert!(
        oldest >= newest - 5 * HOUR - HOUR && oldest <= newest - 5 * HOUR + HOUR,
        "oldest {oldest}"
    );
    let expected = ((newest - oldest) / STEP + 1) as usize;
    assert_eq!(
        series[0].samples.len(),
        expected,
        "no gap inside the window"
    );
}

#[test]
fn retention_by_size_deletes_the_oldest_blocks_first() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tsdb = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
        fill(&tsdb, 20, 0, 10);
    }
    let all_bytes = blocks_bytes(dir.path());
    let limit = all_bytes / 2;
    let tsdb = Tsdb::open(
        options(dir.path())
            .retention_ms(None)
            .retention_bytes(Some(limit)),
    )
    .unwrap();
    let before: Vec<(i64, i64)> = tsdb
        .blocks()
        .iter()
        .map(|b| (b.meta().min_time, b.meta().max_time))
        .collect();
    let deleted = tsdb.apply_retention().unwrap();
    assert!(!deleted.is_empty());
    let after: Vec<(i64, i64)> = tsdb
        .blocks()
        .iter()
        .map(|b| (b.meta().min_time, b.meta().max_time))
        .collect();
    assert!(
        blocks_bytes(dir.path()) <= limit,
        "{} > {limit}",
        blocks_bytes(dir.path())
    );
    // The survivors are the newest blocks.
    assert_eq!(after[..], before[before.len() - after.len()..]);
}

#[test]
fn delete_then_compaction_reclaims_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
    fill(&tsdb, 10, 0, 8);
    let before = blocks_bytes(dir.path());
    let samples_before = sample_count(&tsdb);
    // Delete half of the series everywhere: tombstones first, bytes stay.
    tsdb.delete_blocking(
        &[Matcher::new(lookout_model::MatchKind::Regex, "s", "[0-4]").unwrap()],
        i64::MIN,
        i64::MAX,
    )
    .unwrap();
    assert_eq!(sample_count(&tsdb), samples_before / 2);
    assert!(blocks_bytes(dir.path()) >= before);
    let rewritten = tsdb.clean_tombstones().unwrap();
    assert!(rewritten > 0);
    let after = blocks_bytes(dir.path());
    assert!(
        after < before * 6 / 10,
        "{after} bytes after, {before} before"
    );
    assert_eq!(sample_count(&tsdb), samples_before / 2);
    for block in tsdb.blocks() {
        assert!(!block.has_tombstones());
    }
    drop(tsdb);
    let reopened = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
    assert_eq!(sample_count(&reopened), samples_before / 2);
}

#[test]
fn compaction_merges_levels_without_changing_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
    fill(&tsdb, 3, 0, 30);
    let levels: Vec<u32> = tsdb
        .blocks()
        .iter()
        .map(|b| b.meta().compaction.level)
        .collect();
    assert!(
        levels.iter().any(|level| *level >= 3),
        "blocks of 9 h or more exist: {levels:?}"
    );
    let blocks = tsdb.blocks();
    for pair in blocks.windows(2) {
        assert!(
            pair[0].meta().max_time <= pair[1].meta().min_time,
            "no overlaps"
        );
    }
    assert_eq!(sample_count(&tsdb), 3 * (30 * HOUR / STEP) as usize);
    let series = tsdb.select_blocking(&[Matcher::equal("s", "1")], i64::MIN, i64::MAX);
    let times: Vec<i64> = series[0].samples.iter().map(|s| s.timestamp.0).collect();
    assert_eq!(
        times,
        (0..30 * HOUR).step_by(STEP as usize).collect::<Vec<_>>()
    );
}

#[test]
fn a_block_left_behind_by_an_interrupted_compaction_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tsdb = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
        fill(&tsdb, 2, 0, 4);
        let blocks = tsdb.blocks();
        assert_eq!(blocks[0].meta().compaction.level, 2);
        // Recreate one of its sources as if the compaction had stopped before deleting it.
        let source_id = &blocks[0].meta().compaction.sources[0];
        let fake_source = dir.path().join("blocks").join(source_id);
        let snapshot = tempfile::tempdir().unwrap();
        tsdb.snapshot(snapshot.path(), false).unwrap();
        copy_dir(
            &snapshot.path().join("blocks").join(&blocks[0].meta().id),
            &fake_source,
        );
        // Make the copy the level-1 source block itself.
        let meta_path = fake_source.join("meta.json");
        let mut meta = BlockMeta::decode(&meta_path, &fs::read(&meta_path).unwrap()).unwrap();
        meta.id = source_id.clone();
        meta.compaction = Compaction {
            level: 1,
            sources: Vec::new(),
        };
        fs::write(&meta_path, meta.encode()).unwrap();
        assert_eq!(Block::open(&fake_source).unwrap().meta().id, *source_id);
    }
    let tsdb = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
    assert!(tsdb.quarantined().is_empty());
    let ids: Vec<String> = tsdb.blocks().iter().map(|b| b.meta().id.clone()).collect();
    assert_eq!(
        tsdb.blocks().len(),
        1,
        "the superseded source was deleted: {ids:?}"
    );
    assert_eq!(tsdb.blocks()[0].meta().compaction.level, 2);
    assert_eq!(sample_count(&tsdb), 2 * (4 * HOUR / STEP) as usize);
}

#[test]
fn a_snapshot_opens_as_a_store_with_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path()).retention_ms(None)).unwrap();
    fill(&tsdb, 4, 0, 5);
    let expected = tsdb.select_blocking(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX);
    let snapshot = tempfile::tempdir().unwrap();
    let ids = tsdb.snapshot(snapshot.path(), true).unwrap();
    assert_eq!(ids.len(), tsdb.blocks().len() + 1, "blocks plus the head");
    // The live store goes on; the snapshot is independent of it.
    fill(&tsdb, 4, 5, 6);
    let copy = Tsdb::open(options(snapshot.path()).retention_ms(None)).unwrap();
    let got = copy.select_blocking(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX);
    assert_eq!(got, expected);
}

/// With background maintenance, appends only wake the maintenance thread: blocks are cut and
/// compacted there while writes go on, nothing is lost, and close waits for it.
#[test]
fn background_maintenance_cuts_and_compacts_off_the_writers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path()).background_maintenance(true)).unwrap();
    fill(&tsdb, 20, 0, 12);
    let expected = 20 * 12 * (HOUR / STEP) as usize;
    // The thread catches up: the head ends up spanning less than 1.5 block durations.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (min, max) = tsdb.head().time_range().unwrap();
        if max - min < HOUR / 2 * 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "background maintenance did not cut the head within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tsdb.close().unwrap();
    assert!(!tsdb.blocks().is_empty());
    assert!(
        tsdb.blocks().iter().any(|b| b.meta().compaction.level > 1),
        "the thread also compacts"
    );
    assert_eq!(sample_count(&tsdb), expected);
    drop(tsdb);
    // Reopened (the thread let go of the directory lock), everything is there.
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    assert_eq!(sample_count(&tsdb), expected);
}
