//! The CLI's own fixture data directory, `testdata/tsdb-cli/v1`: three metrics whose pods
//! come and go over four hours (label churn), 1-hour blocks, a deletion, and a head in the
//! WAL. Golden outputs of `list`, `analyze` and `dump` on it.
//!
//! Regenerate (only when the format or the generator changes, then review the snapshots):
//! `cargo test -p lookout-tsdb-cli --test fixture -- --ignored regenerate`.

mod support;

use std::path::{Path, PathBuf};

use lookout_model::{Labels, Matcher, Sample};
use lookout_storage::WriteBatch;
use lookout_tsdb::block::Block;
use lookout_tsdb::{Tsdb, TsdbOptions};
use support::{files, path_str, run, run_ok};

/// 2023-11-14T22:00:00Z.
const BASE_MS: i64 = 1_699_999_200_000;
const STEP_MS: i64 = 60_000;
const MINUTES: i64 = 240;

fn cli_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tsdb-cli/v1")
}

/// Pods alive in `hour`: a rolling deployment.
fn pods(hour: i64) -> &'static [&'static str] {
    match hour {
        0 => &["pod-a", "pod-b"],
        1 => &["pod-b", "pod-c"],
        2 => &["pod-c", "pod-d", "pod-e"],
        _ => &["pod-e"],
    }
}

fn batch_at(minute: i64) -> WriteBatch {
    let t = BASE_MS + minute * STEP_MS;
    let mut batch = WriteBatch::default();
    let mut push = |pairs: &[(&str, &str)], value: f64| {
        batch.push(
            Labels::from_pairs(pairs.iter().copied()).unwrap(),
            vec![Sample::new(t, value)],
        );
    };
    for pod in pods(minute / 60) {
        for code in ["200", "500"] {
            let rate = if code == "200" { 20 } else { 1 };
            push(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("pod", pod),
                    ("code", code),
                ],
                (minute * rate) as f64,
            );
        }
        push(
            &[
                ("__name__", "process_cpu_seconds_total"),
                ("job", "api"),
                ("pod", pod),
            ],
            minute as f64 * 0.37,
        );
    }
    for (job, instance) in [("api", "10.0.0.1:9100"), ("db", "10.0.0.2:9100")] {
        push(
            &[("__name__", "up"), ("job", job), ("instance", instance)],
            1.0,
        );
    }
    batch
}

#[test]
#[ignore = "rewrites the committed fixture"]
fn regenerate() {
    let dir = cli_fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let tsdb = Tsdb::open(
        TsdbOptions::new(&dir)
            .block_duration_ms(3_600_000)
            .auto_compaction(false)
            .retention_ms(None)
            .max_future_ms(None),
    )
    .unwrap();
    for minute in 0..MINUTES {
        tsdb.append(&batch_at(minute)).unwrap();
    }
    // A deletion recorded in a block (tombstones) and in the head (WAL).
    let pod_b = [Matcher::equal("pod", "pod-b")];
    tsdb.delete_blocking(&pod_b, BASE_MS + 30 * STEP_MS, BASE_MS + 40 * STEP_MS)
        .unwrap();
    tsdb.close().unwrap();
    drop(tsdb);
    // Block ids hold their creation time and random bits: give them fixed ones.
    let blocks_dir = dir.join("blocks");
    let mut metas: Vec<_> = std::fs::read_dir(&blocks_dir)
        .unwrap()
        .map(|entry| Block::open(&entry.unwrap().path()).unwrap().meta().clone())
        .collect();
    metas.sort_by_key(|meta| meta.min_time);
    for (position, meta) in metas.iter_mut().enumerate() {
        assert!(
            meta.compaction.sources.is_empty(),
            "no compaction in the fixture"
        );
        let old = blocks_dir.join(&meta.id);
        meta.id = format!("{:012x}{:08x}", meta.min_time, position + 1);
        std::fs::write(old.join("meta.json"), meta.encode()).unwrap();
        std::fs::rename(&old, blocks_dir.join(&meta.id)).unwrap();
    }
    // The lock file and the head chunk cache are not part of the data.
    let _ = std::fs::remove_file(dir.join("lock"));
    let _ = std::fs::remove_dir_all(dir.join("chunks_head"));
}

#[test]
fn list_analyze_and_dump_the_cli_fixture() {
    let dir = cli_fixture();
    let before = files(&dir);
    insta::assert_snapshot!("cli_fixture_list", run_ok(&["list", path_str(&dir)]));
    insta::assert_snapshot!(
        "cli_fixture_analyze",
        run_ok(&["analyze", path_str(&dir), "--top", "6"])
    );
    insta::assert_snapshot!(
        "cli_fixture_dump",
        run_ok(&[
            "dump",
            path_str(&dir),
            "--match",
            r#"http_requests_total{pod="pod-b",code="500"}"#,
            "--min-time",
            "2023-11-14T22:25:00Z",
            "--max-time",
            "2023-11-14T22:45:00Z",
        ])
    );
    let verify = run(&["verify", path_str(&dir)]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    assert_eq!(files(&dir), before, "read-only commands change nothing");
}
