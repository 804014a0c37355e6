//! Every released on-disk format stays readable: `testdata/tsdb-compat/v1/` is a tiny data
//! directory written by format version 1 (a compacted block with columnar chunks and a
//! tombstone, a block of Gorilla chunks, a WAL with a checkpoint and a live segment). This test opens a copy of it on every build and checks every sample.
//!
//! To regenerate after an intentional format change (a new version gets a new directory; v1
//! must never change): `LOOKOUT_WRITE_COMPAT=1 cargo test -p lookout-tsdb --test compat
//! -- --ignored write_v1_fixture`.

use std::fs;
use std::path::{Path, PathBuf};

use lookout_model::{Labels, Matcher, Sample, STALE_NAN};
use lookout_storage::WriteBatch;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

#[path = "support/copy_dir.rs"]
mod support;
use support::copy_dir;

const HOUR: i64 = 3_600_000;
/// Five hours at one sample a minute: three 1 h blocks compacted into one 3 h block of
/// columnar chunks, one 1 h block of Gorilla chunks, and the rest in the head and WAL.
const MINUTES: i64 = 300;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tsdb-compat/v1")
}

fn options(dir: &Path) -> TsdbOptions {
    TsdbOptions::new(dir)
        .fsync(FsyncPolicy::Never)
        .block_duration_ms(HOUR)
}

fn series(index: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "compat_metric"),
        ("series", index.to_string().as_str()),
        ("unit", "µs"),
    ])
    .unwrap()
}

/// The fixture's contents: 3 series, a sample every minute for five hours, with special
/// values, and a deletion.
fn expected() -> Vec<(Labels, Vec<Sample>)> {
    (0..3)
        .map(|index| {
            let samples = (0..MINUTES)
                .map(|minute| {
                    let t = minute * 60_000;
                    let value = match minute {
                        10 => STALE_NAN,
                        11 => f64::INFINITY,
                        _ => minute as f64 * 1.5 + index as f64,
                    };
                    Sample::new(t, value)
                })
                .filter(|sample| {
                    !(index == 1 && (20 * 60_000..=29 * 60_000).contains(&sample.timestamp.0))
                })
                .collect();
            (series(index), samples)
        })
        .collect()
}

#[test]
fn format_v1_directory_opens_with_every_sample() {
    let fixture = fixture_dir();
    assert!(
        fixture.join("blocks").exists(),
        "fixture missing at {}",
        fixture.display()
    );
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let tsdb = Tsdb::open(options(dir.path())).unwrap();
    assert!(tsdb.quarantined().is_empty(), "{:?}", tsdb.quarantined());
    assert!(tsdb.replay_report().corruption.is_none());
    let levels: Vec<u32> = tsdb
        .blocks()
        .iter()
        .map(|block| block.meta().compaction.level)
        .collect();
    assert_eq!(
        levels,
        [2, 1],
        "a compacted (columnar) block and a Gorilla one"
    );
    assert!(
        tsdb.replay_report().checkpoint.is_some(),
        "the fixture holds a checkpoint"
    );
    let got = tsdb.select_blocking(
        &[Matcher::equal("__name__", "compat_metric")],
        i64::MIN,
        i64::MAX,
    );
    let bits = |samples: &[Sample]| -> Vec<(i64, u64)> {
        samples
            .iter()
            .map(|s| (s.timestamp.0, s.value.to_bits()))
            .collect()
    };
    let want = expected();
    assert_eq!(got.len(), want.len());
    for (series, (labels, samples)) in got.iter().zip(&want) {
        assert_eq!(&series.labels, labels);
        assert_eq!(bits(&series.samples), bits(samples), "{labels}");
    }
}

#[test]
#[ignore = "writes the fixture; run by hand after an intentional new format version"]
fn write_v1_fixture() {
    if std::env::var("LOOKOUT_WRITE_COMPAT").is_err() {
        return;
    }
    let fixture = fixture_dir();
    let _ = fs::remove_dir_all(&fixture);
    let tsdb = Tsdb::open(options(&fixture).wal_segment_bytes(4096)).unwrap();
    for minute in 0..MINUTES as usize {
        let mut batch = WriteBatch::new();
        for (labels, samples) in expected_without_deletion() {
            batch.push(labels, vec![samples[minute]]);
        }
        tsdb.append(&batch).unwrap();
    }
    tsdb.delete_blocking(&[Matcher::equal("series", "1")], 20 * 60_000, 29 * 60_000)
        .unwrap();
    tsdb.close().unwrap();
    drop(tsdb);
    fs::remove_file(fixture.join("lock")).unwrap();
}

fn expected_without_deletion() -> Vec<(Labels, Vec<Sample>)> {
    (0..3)
        .map(|index| {
            let samples = (0..MINUTES)
                .map(|minute| {
                    let value = match minute {
                        10 => STALE_NAN,
                        11 => f64::INFINITY,
                        _ => minute as f64 * 1.5 + index as f64,
                    };
                    Sample::new(minute * 60_000, value)
                })
                .collect();
            (series(index), samples)
        })
        .collect()
}
