//! Blocks through the public API: cuts from the head, reads across head and blocks, restart,
//! quarantine of damaged blocks, leftovers of interrupted writes.

use std::fs;
use std::path::{Path, PathBuf};

use lookout_model::{Labels, Matcher, Sample};
use lookout_storage::{RejectReason, WriteBatch};
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

const HOUR: i64 = 3_600_000;
const STEP: i64 = 15_000;

fn options(dir: &Path) -> TsdbOptions {
    TsdbOptions::new(dir)
        .fsync(FsyncPolicy::Never)
        .block_duration_ms(HOUR)
}

fn series_labels(index: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "node_cpu_seconds_total"),
        ("cpu", index.to_string().as_str()),
        ("instance", "host-1:9100"),
    ])
    .unwrap()
}

/// Writes `hours` of samples every 15 s for `series` series; value = t / 1000 + series.
fn fill(tsdb: &Tsdb, series: usize, hours: i64) {
    for t in (0..hours * HOUR).step_by(STEP as usize) {
        let mut batch = WriteBatch::new();
        for index in 0..series {
            batch.push(
                series_labels(index),
                vec![Sample::new(t, (t / 1000) as f64 + index as f64)],
            );
        }
        let outcome = tsdb.append(&batch).unwrap();
        assert_eq!(outcome.accepted, series as u64, "{:?}", outcome.messages);
    }
}

fn expected(series: usize, hours: i64) -> Vec<(String, Vec<Sample>)> {
    (0..series)
        .map(|index| {
            let samples = (0..hours * HOUR)
                .step_by(STEP as usize)
                .map(|t| Sample::new(t, (t / 1000) as f64 + index as f64))
                .collect();
            (series_labels(index).to_string(), samples)
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

fn read_all(tsdb: &Tsdb) -> Vec<(String, Vec<Sample>)> {
    tsdb.select_blocking(
        &[Matcher::equal("__name__", "node_cpu_seconds_total")],
        i64::MIN,
        i64::MAX,
    )
    .into_iter()
    .map(|series| (series.labels.to_string(), series.samples))
    .collect()
}

fn block_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn the_head_is_cut_into_blocks_and_every_sample_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tsdb = Tsdb::open(options(dir.path())).unwrap();
        fill(&tsdb, 5, 6);
        let blocks = tsdb.blocks();
        // The head keeps between half an hour and one and a half; everything older is in
        // blocks: the first three hours already compacted into one 3 h block (level 2), then
        // two 1 h blocks.
        let ranges: Vec<(i64, i64, u32)> = blocks
            .iter()
            .map(|b| {
                (
                    b.meta().min_time,
                    b.meta().max_time,
                    b.meta().compaction.level,
                )
            })
            .collect();
        assert_eq!(
            ranges,
            [
                (0, 3 * HOUR, 2),
                (3 * HOUR, 4 * HOUR, 1),
                (4 * HOUR, 5 * HOUR, 1)
            ]
        );
        assert_eq!(blocks[0].meta().compaction.sources.len(), 3);
        for block in &blocks {
            assert_eq!(block.meta().stats.series, 5);
            let hours = (block.meta().max_time - block.meta().min_time) / HOUR;
            assert_eq!(block.meta().stats.samples, 5 * 240 * hours as u64);
        }
        let (head_min, head_max) = tsdb.head().time_range().unwrap();
        assert_eq!(head_min, 5 * HOUR);
        assert_eq!(head_max, 6 * HOUR - STEP);
        assert_eq!(read_all(&tsdb), expected(5, 6));
        // Samples older than the out-of-order window are refused.
        let mut batch = WriteBatch::new();
        batch.push(series_labels(99), vec![Sample::new(HOUR, 1.0)]);
        let outcome = tsdb.append(&batch).unwrap();
        assert_eq!(outcome.rejected_for(RejectReason::OutOfWindow), 1);
    }
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    assert_eq!(tsdb.blocks().len(), 3);
    assert!(tsdb.quarantined().is_empty());
    assert_eq!(read_all(&tsdb), expected(5, 6));
    // Partial ranges and matchers across the head/block boundary.
    let cpu_3 = tsdb.select_blocking(
        &[Matcher::equal("cpu", "3")],
        4 * HOUR - 2 * STEP,
        4 * HOUR + STEP,
    );
    assert_eq!(cpu_3.len(), 1);
    let times: Vec<i64> = cpu_3[0].samples.iter().map(|s| s.timestamp.0).collect();
    assert_eq!(
        times,
        [
            4 * HOUR - 2 * STEP,
            4 * HOUR - STEP,
            4 * HOUR,
            4 * HOUR + STEP
        ]
    );
}

#[test]
fn without_an_out_of_order_window_old_samples_are_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path()).out_of_order_window_ms(0)).unwrap();
    fill(&tsdb, 1, 3);
    let mut batch = WriteBatch::new();
    batch.push(series_labels(99), vec![Sample::new(HOUR, 1.0)]);
    batch.push(
        series_labels(0),
        vec![Sample::new(3 * HOUR - 2 * STEP, 1.0)],
    );
    let outcome = tsdb.append(&batch).unwrap();
    assert_eq!(outcome.rejected_for(RejectReason::OutOfBounds), 1);
    assert_eq!(outcome.rejected_for(RejectReason::OutOfOrder), 1);
}

/// Late samples inside the window land in the head's out-of-order store, are cut into blocks
/// that overlap older ones, and vertical compaction merges those; nothing is lost on restart.
#[test]
fn out_of_order_samples_inside_the_window_are_kept_through_cuts_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let late_labels = series_labels(7);
    {
        let tsdb = Tsdb::open(options(dir.path()).out_of_order_window_ms(2 * HOUR)).unwrap();
        fill(&tsdb, 2, 2);
        // Samples of a new series, 90 min behind the newest: inside the window, in a range
        // already written to a block.
        for minute in 0..30 {
            let mut batch = WriteBatch::new();
            batch.push(
                late_labels.clone(),
                vec![Sample::new(minute * 60_000 + 7, minute as f64)],
            );
            let outcome = tsdb.append(&batch).unwrap();
            assert_eq!(outcome.accepted, 1, "{:?}", outcome.messages);
        }
        let late = tsdb.select_blocking(&[Matcher::equal("cpu", "7")], i64::MIN, i64::MAX);
        assert_eq!(late[0].samples.len(), 30);
        // More in-order data: cuts take the late samples into a block of their own, which
        // overlaps the first one until compaction merges them.
        fill_range(&tsdb, 2, 2 * HOUR, 4 * HOUR);
        let blocks = tsdb.blocks();
        for pair in blocks.windows(2) {
            assert!(
                pair[0].meta().max_time <= pair[1].meta().min_time,
                "overlaps were compacted"
            );
        }
    }
    let tsdb = Tsdb::open(options(dir.path()).out_of_order_window_ms(2 * HOUR)).unwrap();
    let late = tsdb.select_blocking(&[Matcher::equal("cpu", "7")], i64::MIN, i64::MAX);
    assert_eq!(late.len(), 1);
    let times: Vec<i64> = late[0].samples.iter().map(|s| s.timestamp.0).collect();
    assert_eq!(
        times,
        (0..30)
            .map(|minute| minute * 60_000 + 7)
            .collect::<Vec<_>>()
    );
    let mut wanted = expected(2, 4);
    wanted.push((late_labels.to_string(), late[0].samples.clone()));
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(read_all(&tsdb), wanted);
}

fn fill_range(tsdb: &Tsdb, series: usize, from: i64, to: i64) {
    for t in (from..to).step_by(STEP as usize) {
        let mut batch = WriteBatch::new();
        for index in 0..series {
            batch.push(
                series_labels(index),
                vec![Sample::new(t, (t / 1000) as f64 + index as f64)],
            );
        }
        tsdb.append(&batch).unwrap();
    }
}

#[test]
fn deletes_reach_blocks_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tsdb = Tsdb::open(options(dir.path())).unwrap();
        fill(&tsdb, 2, 3);
        assert!(!tsdb.blocks().is_empty());
        tsdb.delete_blocking(&[Matcher::equal("cpu", "0")], HOUR / 2, 2 * HOUR + HOUR / 2)
            .unwrap();
    }
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    let all = read_all(&tsdb);
    let mut wanted = expected(2, 3);
    wanted[0]
        .1
        .retain(|s| !(HOUR / 2..=2 * HOUR + HOUR / 2).contains(&s.timestamp.0));
    assert_eq!(all, wanted);
}

fn flip_byte(path: &Path, position: usize) {
    let mut bytes = fs::read(path).unwrap();
    let position = position.min(bytes.len() - 1);
    bytes[position] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_block_is_quarantined_and_the_rest_keeps_serving() {
    for target in ["chunks/000001", "index", "meta.json"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let tsdb = Tsdb::open(options(dir.path())).unwrap();
            fill(&tsdb, 3, 5);
            assert_eq!(tsdb.blocks().len(), 2);
        }
        let damaged = block_dirs(dir.path())[0].clone();
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(damaged.join("meta.json")).unwrap()).unwrap();
        let lost = meta["min_time"].as_i64().unwrap()..meta["max_time"].as_i64().unwrap();
        let file = damaged.join(target);
        let size = fs::metadata(&file).unwrap().len() as usize;
        flip_byte(&file, size / 3);

        let tsdb = Tsdb::open(options(dir.path())).unwrap();
        let quarantined = tsdb.quarantined();
        assert_eq!(quarantined.len(), 1, "{target}");
        let id = damaged.file_name().unwrap().to_str().unwrap();
        assert_eq!(quarantined[0].id, id);
        assert!(quarantined[0].moved_to.exists());
        assert!(
            quarantined[0].error.contains(target),
            "{target}: {}",
            quarantined[0].error
        );
        assert!(
            quarantined[0].error.contains("offset"),
            "{}",
            quarantined[0].error
        );
        assert!(!damaged.exists());
        assert_eq!(tsdb.blocks().len(), 1);
        // Everything outside the quarantined block's range is still served.
        let all = read_all(&tsdb);
        let mut wanted = expected(3, 5);
        for (_, samples) in &mut wanted {
            samples.retain(|s| !lost.contains(&s.timestamp.0));
        }
        assert_eq!(all, wanted, "{target}");
    }
}

#[test]
fn an_interrupted_block_write_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tsdb = Tsdb::open(options(dir.path())).unwrap();
        fill(&tsdb, 1, 1);
    }
    let leftover = dir.path().join("blocks").join("0123456789abcdef0123.tmp");
    fs::create_dir_all(leftover.join("chunks")).unwrap();
    fs::write(leftover.join("index"), b"partial").unwrap();
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    assert!(!leftover.exists());
    assert!(tsdb.quarantined().is_empty());
    assert_eq!(read_all(&tsdb), expected(1, 1));
}

/// A labels-only select (the `series` API) over blocks and the head answers the same label
/// sets as a full select, for windows inside blocks, across a cut and in the head.
#[tokio::test]
async fn labels_only_selects_agree_with_full_selects_across_blocks() {
    use lookout_storage::{collect_series, SelectRequest, Storage};
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    // A series that only lives in the first hour, then four that go on for five.
    let mut batch = WriteBatch::new();
    batch.push(series_labels(99), vec![Sample::new(60_000, 1.0)]);
    assert_eq!(tsdb.append(&batch).unwrap().accepted, 1);
    fill(&tsdb, 4, 5);
    assert!(!tsdb.blocks().is_empty(), "the head was cut into blocks");
    for (mint, maxt) in [
        (0, HOUR / 2),
        (HOUR / 2, 3 * HOUR + 7),
        (4 * HOUR, 5 * HOUR),
        (0, 5 * HOUR),
    ] {
        let full = collect_series(
            tsdb.select(SelectRequest::new(vec![], mint, maxt))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        let mut request = SelectRequest::new(vec![], mint, maxt);
        request.hints.labels_only = true;
        let labels_only = collect_series(tsdb.select(request).await.unwrap())
            .await
            .unwrap();
        let names = |series: &[lookout_storage::Series]| -> Vec<Labels> {
            series.iter().map(|s| s.labels.clone()).collect()
        };
        assert_eq!(names(&labels_only), names(&full), "window {mint}..{maxt}");
        assert!(labels_only.iter().all(|s| s.samples.is_empty()));
    }
}

fn dir_bytes(path: &Path) -> u64 {
    fs::read_dir(path)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn close_can_persist_the_head_into_blocks_and_the_next_cut_merges_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let persisting = |dir: &Path| options(dir).persist_head_on_close(true);
    {
        let tsdb = Tsdb::open(persisting(dir.path())).unwrap();
        // 2 h 15 min: one 1 h block cut while writing, then a head of 1 h 15 min.
        fill_range(&tsdb, 5, 0, 2 * HOUR + 15 * 60_000);
        assert_eq!(tsdb.blocks().len(), 1);
        tsdb.close().unwrap();
        // The head went into two columnar blocks, the last ending just after its newest
        // sample, and the blocks of the open 3 h window were merged with them, so that no
        // Gorilla chunks are left; the WAL holds nothing of it any more.
        let ranges: Vec<(i64, i64, u32)> = tsdb
            .blocks()
            .iter()
            .map(|b| {
                let meta = b.meta();
                (meta.min_time, meta.max_time, meta.compaction.level)
            })
            .collect();
        let last = 2 * HOUR + 15 * 60_000 - STEP;
        assert_eq!(ranges, [(0, last + 1, 3)], "blocks after close");
        assert!(tsdb.head().time_range().is_none());
        assert!(
            dir_bytes(&dir.path().join("wal")) < 1024,
            "WAL after close: {} bytes",
            dir_bytes(&dir.path().join("wal"))
        );
    }
    let tsdb = Tsdb::open(persisting(dir.path())).unwrap();
    assert_eq!(tsdb.replay_report().records, 0, "nothing to replay");
    let read = read_all;
    let before = read(&tsdb);
    assert_eq!(before.len(), 5);
    assert!(before.iter().all(|(_, samples)| samples.len() == 540));
    // Writing goes on in order right after the newest persisted sample; the next cut of the
    // window [2 h, 3 h) overlaps the persisted block and compaction merges them.
    fill_range(&tsdb, 5, 2 * HOUR + 15 * 60_000, 4 * HOUR);
    tsdb.compact().unwrap();
    let after = read(&tsdb);
    assert!(after.iter().all(|(_, samples)| samples.len() == 960
        && samples
            .windows(2)
            .all(|pair| pair[1].timestamp.0 - pair[0].timestamp.0 == STEP)));
    let metas: Vec<(i64, i64)> = tsdb
        .blocks()
        .iter()
        .map(|b| (b.meta().min_time, b.meta().max_time))
        .collect();
    for pair in metas.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "no overlapping blocks left: {metas:?}"
        );
    }
    drop(tsdb);
    // And a crash (drop without close) after that still replays the WAL as before.
    let tsdb = Tsdb::open(persisting(dir.path())).unwrap();
    assert_eq!(read(&tsdb), after);
}

#[test]
fn a_failed_head_write_at_close_still_closes_the_wal_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let persisting = |dir: &Path| options(dir).persist_head_on_close(true);
    {
        let tsdb = Tsdb::open(persisting(dir.path())).unwrap();
        fill_range(&tsdb, 5, 0, 30 * 60_000);
        // A file where the blocks directory was: writing a block fails.
        fs::remove_dir_all(dir.path().join("blocks")).unwrap();
        fs::write(dir.path().join("blocks"), b"in the way").unwrap();
        assert!(tsdb.close().is_err(), "the block write failed");
    }
    fs::remove_file(dir.path().join("blocks")).unwrap();
    let tsdb = Tsdb::open(persisting(dir.path())).unwrap();
    assert!(
        tsdb.replay_report().records > 0,
        "the head came back from the WAL"
    );
    let series = read_all(&tsdb);
    assert_eq!(series.len(), 5);
    assert!(series.iter().all(|(_, samples)| samples.len() == 120));
}

/// The streamed read across blocks and the head (planned, then decoded in parallel batches)
/// returns exactly what was written, honours limits and ranges that cut through blocks, and
/// lets the newest source win a timestamp that two sources hold.
#[tokio::test]
async fn streamed_selects_across_blocks_and_the_head_merge_newest_first() {
    use lookout_storage::{collect_series, SelectRequest, Storage};
    let dir = tempfile::tempdir().unwrap();
    let select = |tsdb: Tsdb,
                  matchers: Vec<Matcher>,
                  mint: i64,
                  maxt: i64,
                  limit: Option<usize>| async move {
        let mut request = SelectRequest::new(matchers, mint, maxt);
        request.hints.limit = limit;
        collect_series(tsdb.select(request).await.unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|series| (series.labels.to_string(), series.samples))
            .collect::<Vec<_>>()
    };
    let name = || vec![Matcher::equal("__name__", "node_cpu_seconds_total")];
    {
        // More series than one decoded batch, so several batches are in flight at once.
        let tsdb = Tsdb::open(
            options(dir.path())
                .persist_head_on_close(true)
                .auto_compaction(false),
        )
        .unwrap();
        fill(&tsdb, 600, 2);
        tsdb.close().unwrap();
    }
    let tsdb = Tsdb::open(
        options(dir.path())
            .out_of_order_window_ms(2 * HOUR)
            .auto_compaction(false),
    )
    .unwrap();
    assert!(tsdb.blocks().len() >= 2, "{} blocks", tsdb.blocks().len());
    assert_eq!(tsdb.head().series_count(), 0);
    // Another hour in the head, then a sample at a timestamp a block already holds.
    fill_range(&tsdb, 600, 2 * HOUR, 3 * HOUR);
    let mut batch = WriteBatch::new();
    batch.push(series_labels(5), vec![Sample::new(HOUR, -1.0)]);
    assert_eq!(tsdb.append(&batch).unwrap().accepted, 1);

    let mut wanted = expected(600, 3);
    let five = wanted
        .iter_mut()
        .find(|(labels, _)| *labels == series_labels(5).to_string())
        .unwrap();
    five.1
        .iter_mut()
        .find(|s| s.timestamp.0 == HOUR)
        .unwrap()
        .value = -1.0;
    assert_eq!(
        select(tsdb.clone(), name(), i64::MIN, i64::MAX, None).await,
        wanted
    );
    assert_eq!(
        select(tsdb.clone(), name(), i64::MIN, i64::MAX, Some(517)).await,
        wanted[..517].to_vec()
    );
    // A window that starts inside the first block and ends inside the head.
    let (mint, maxt) = (HOUR / 2 + 1, 2 * HOUR + HOUR / 4);
    let cut: Vec<_> = wanted
        .iter()
        .map(|(labels, samples)| {
            let kept = samples
                .iter()
                .filter(|s| (mint..=maxt).contains(&s.timestamp.0))
                .copied()
                .collect::<Vec<_>>();
            (labels.clone(), kept)
        })
        .collect();
    assert_eq!(select(tsdb.clone(), name(), mint, maxt, None).await, cut);
    assert_eq!(
        select(
            tsdb.clone(),
            vec![Matcher::equal("cpu", "5")],
            mint,
            maxt,
            None
        )
        .await,
        cut.iter()
            .filter(|(labels, _)| *labels == series_labels(5).to_string())
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(read_all(&tsdb), wanted);
}

/// Label values, label names and the `series` API over blocks and the head answer exactly
/// what a full select implies (the values, names and label sets of the series with a sample
/// in the window), for windows that cover whole blocks, cut blocks at either edge, fall
/// between a sparse series' samples, or lie in the head, with deletions in a block and in the
/// head, with and without matchers.
#[tokio::test]
async fn label_queries_agree_with_full_selects_across_blocks() {
    use lookout_model::MatchKind;
    use lookout_storage::{collect_series, LabelRequest, SelectRequest, Storage};
    const MINUTE: i64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(
        options(dir.path())
            .background_maintenance(false)
            .auto_compaction(false),
    )
    .unwrap();
    let labels = |name: &str, host: &str, extra: Option<(&str, &str)>| {
        let mut pairs = vec![("__name__", name), ("host", host)];
        pairs.extend(extra);
        Labels::from_pairs(pairs).unwrap()
    };
    // (labels, first sample, last sample, interval)
    let layout = [
        (labels("m_a", "h0", None), 0, 5 * HOUR - STEP, STEP),
        (
            labels("m_a", "h1", Some(("early", "yes"))),
            0,
            30 * MINUTE,
            STEP,
        ),
        (
            labels("m_a", "h2", Some(("zone", "z"))),
            70 * MINUTE,
            80 * MINUTE,
            STEP,
        ),
        (labels("m_a", "h3", None), 2 * HOUR, 5 * HOUR - STEP, STEP),
        // One sample every 40 minutes: windows fall between its samples inside a chunk.
        (
            labels("m_a", "h4", Some(("sparse", "yes"))),
            0,
            5 * HOUR - STEP,
            40 * MINUTE,
        ),
        (
            labels("m_b", "h5", None),
            270 * MINUTE,
            5 * HOUR - STEP,
            STEP,
        ),
    ];
    for t in (0..5 * HOUR).step_by(STEP as usize) {
        let mut batch = WriteBatch::new();
        for (labels, first, last, interval) in &layout {
            if (*first..=*last).contains(&t) && (t - first) % interval == 0 {
                batch.push(labels.clone(), vec![Sample::new(t, t as f64)]);
            }
        }
        if !batch.is_empty() {
            tsdb.append(&batch).unwrap();
        }
    }
    while tsdb.cut_block().unwrap().is_some() {}
    assert!(tsdb.blocks().len() >= 2, "blocks were cut");
    // h2 deleted in its block (tombstones), h3's last 40 minutes deleted in the head.
    tsdb.delete_blocking(&[Matcher::equal("host", "h2")], i64::MIN, i64::MAX)
        .unwrap();
    tsdb.delete_blocking(&[Matcher::equal("host", "h3")], 260 * MINUTE, i64::MAX)
        .unwrap();

    let matcher_sets = [
        vec![],
        vec![Matcher::equal("__name__", "m_a")],
        vec![Matcher::new(MatchKind::Regex, "host", "h[0-2]|h4").unwrap()],
        vec![Matcher::not_equal("sparse", "yes")],
    ];
    let points = [
        i64::MIN,
        0,
        10 * MINUTE,
        31 * MINUTE,
        HOUR - 1,
        HOUR,
        75 * MINUTE,
        2 * HOUR - 1,
        2 * HOUR,
        130 * MINUTE,
        3 * HOUR,
        245 * MINUTE,
        265 * MINUTE,
        5 * HOUR,
        i64::MAX,
    ];
    for matchers in &matcher_sets {
        for (position, &mint) in points.iter().enumerate() {
            for &maxt in &points[position..] {
                let context = format!("{matchers:?} over {mint}..={maxt}");
                let full = tsdb.select_blocking(matchers, mint, maxt);
                let label_sets: Vec<Labels> = full.iter().map(|s| s.labels.clone()).collect();
                let mut hosts: Vec<String> = label_sets
                    .iter()
                    .filter_map(|labels| labels.get("host").map(str::to_owned))
                    .collect();
                hosts.sort();
                hosts.dedup();
                let mut names: Vec<String> = label_sets
                    .iter()
                    .flat_map(|labels| labels.iter().map(|label| label.name.to_string()))
                    .collect();
                names.sort();
                names.dedup();

                let request = LabelRequest::new(matchers.clone(), mint, maxt);
                let values = tsdb.label_values("host", request.clone()).await.unwrap();
                assert_eq!(values, hosts, "host values, {context}");
                assert_eq!(
                    tsdb.label_names(request).await.unwrap(),
                    names,
                    "names, {context}"
                );
                let mut series_request = SelectRequest::new(matchers.clone(), mint, maxt);
                series_request.hints.labels_only = true;
                let series = collect_series(tsdb.select(series_request).await.unwrap())
                    .await
                    .unwrap();
                let listed: Vec<Labels> = series.into_iter().map(|s| s.labels).collect();
                assert_eq!(listed, label_sets, "series, {context}");
            }
        }
    }
}

/// A select wide enough that the head's label sets are built on two cores, beside the
/// blocks' listing: still one series per label set, in label order, each with every sample
/// of the blocks and the head.
#[test]
fn a_wide_select_across_blocks_and_the_head_lists_every_series_once_in_order() {
    const SERIES: usize = 5000;
    const EVERY: i64 = 10 * 60_000;
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    let labels: Vec<Labels> = (0..SERIES).map(series_labels).collect();
    for t in (0..3 * HOUR).step_by(EVERY as usize) {
        let mut batch = WriteBatch::new();
        for (index, labels) in labels.iter().enumerate() {
            batch.push(
                labels.clone(),
                vec![Sample::new(t, (t + index as i64) as f64)],
            );
        }
        tsdb.append(&batch).unwrap();
    }
    while tsdb.cut_block().unwrap().is_some() {}
    assert!(!tsdb.blocks().is_empty(), "blocks were cut");
    assert!(
        tsdb.head().time_range().is_some(),
        "the head still holds samples"
    );

    let read = read_all(&tsdb);
    let mut expected: Vec<(String, Vec<Sample>)> = labels
        .iter()
        .enumerate()
        .map(|(index, labels)| {
            let samples = (0..3 * HOUR)
                .step_by(EVERY as usize)
                .map(|t| Sample::new(t, (t + index as i64) as f64))
                .collect();
            (labels.to_string(), samples)
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(read.len(), SERIES);
    assert_eq!(read, expected);
}
