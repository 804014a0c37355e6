//! Crash test: a child process appends with acknowledgements (and truncates the head now and
//! then, which checkpoints the WAL) and is killed with SIGKILL at random points. After each
//! kill the parent reopens the store: every acknowledged sample must be there exactly once.
//!
//! The child is this test binary itself, running the ignored test `child_writer`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_model::{Labels, Matcher, Sample};
use lookout_storage::WriteBatch;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

const SERIES: usize = 20;
const DIR_VARIABLE: &str = "LOOKOUT_CRASH_TEST_DIR";
/// In the blocks mode, samples are this far apart and blocks this long, so the child cuts a
/// block every 40 batches and kills land in the middle of cuts.
const BLOCK_MODE_STEP: i64 = 15_000;
const BLOCK_MODE_DURATION: i64 = 600_000;

fn options(dir: &std::path::Path) -> TsdbOptions {
    TsdbOptions::new(dir)
        .fsync(FsyncPolicy::Never)
        .wal_segment_bytes(16 * 1024)
        .chunk_samples(30)
        .block_duration_ms(BLOCK_MODE_DURATION)
}

fn blocks_mode() -> bool {
    std::env::var("LOOKOUT_CRASH_MODE").as_deref() == Ok("blocks")
}

fn series_labels(series: usize) -> Labels {
    Labels::from_pairs([("__name__", "crash"), ("s", series.to_string().as_str())]).unwrap()
}

fn read_all(tsdb: &Tsdb) -> BTreeMap<String, Vec<Sample>> {
    tsdb.select_blocking(&[Matcher::equal("__name__", "crash")], i64::MIN, i64::MAX)
        .into_iter()
        .map(|series| (series.labels.get("s").unwrap().to_owned(), series.samples))
        .collect()
}

/// The child: appends one sample per series per batch, printing `ACK t` after each
/// acknowledged batch, and `TRUNCATING mint` before each head truncation.
#[test]
#[ignore = "run by crash_test as a child process"]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VARIABLE) else {
        return;
    };
    let tsdb = Tsdb::open(options(std::path::Path::new(&dir))).unwrap();
    let step = if blocks_mode() { BLOCK_MODE_STEP } else { 1 };
    let next = read_all(&tsdb)
        .values()
        .filter_map(|samples| samples.last())
        .map(|sample| sample.timestamp.0 / step + 1)
        .max()
        .unwrap_or(0);
    let stdout = std::io::stdout();
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in next..next + 1_000_000 {
        if Instant::now() > deadline {
            break;
        }
        if !blocks_mode() && t % 400 == 399 {
            let mint = t - 200;
            writeln!(stdout.lock(), "TRUNCATING {mint}").unwrap();
            tsdb.truncate_head(mint).unwrap();
        }
        let mut batch = WriteBatch::new();
        for series in 0..SERIES {
            batch.push(
                series_labels(series),
                vec![Sample::new(t * step, (t * step) as f64)],
            );
        }
        let outcome = tsdb.append(&batch).unwrap();
        assert_eq!(outcome.accepted, SERIES as u64);
        writeln!(stdout.lock(), "ACK {}", t * step).unwrap();
    }
}

/// A small deterministic generator so a failing seed can be replayed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_sample() {
    crash_rounds("wal");
}

/// The same with block cuts every few hundred milliseconds: kills land while blocks are being
/// written, renamed and the WAL checkpointed.
#[test]
fn sigkill_during_block_cuts_loses_and_duplicates_nothing() {
    crash_rounds("blocks");
}

fn crash_rounds(mode: &str) {
    let seed = std::env::var("LOOKOUT_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test seed {seed} (set LOOKOUT_CRASH_SEED to repeat)");
    let mut random = seed;
    let dir = tempfile::tempdir().unwrap();
    let executable = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut truncated_before = i64::MIN;

    for round in 0..6 {
        let mut child = Command::new(&executable)
            .args([
                "--ignored",
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VARIABLE, dir.path())
            .env("LOOKOUT_CRASH_MODE", mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => lines.push(line),
                    Err(_) => break,
                }
            }
            lines
        });
        let delay = Duration::from_millis(150 + next_random(&mut random) % 1200);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must die by the signal"
        );
        let lines = reader.join().unwrap();
        let mut acked_this_round = 0;
        for line in lines {
            if let Some(t) = line.strip_prefix("ACK ") {
                acknowledged.push(t.parse().unwrap());
                acked_this_round += 1;
            } else if let Some(mint) = line.strip_prefix("TRUNCATING ") {
                truncated_before = truncated_before.max(mint.parse().unwrap());
            }
        }
        println!("round {round} ({mode}): killed after {delay:?}, {acked_this_round} batches acknowledged");

        let tsdb = Tsdb::open(options(dir.path())).unwrap();
        let report = tsdb.replay_report();
        assert!(report.corruption.is_none(), "round {round}: {report:?}");
        assert!(
            tsdb.quarantined().is_empty(),
            "round {round}: {:?}",
            tsdb.quarantined()
        );
        // No sample is stored twice: blocks do not overlap and the head starts after them.
        let blocks = tsdb.blocks();
        for pair in blocks.windows(2) {
            assert!(
                pair[0].meta().max_time <= pair[1].meta().min_time,
                "round {round}: blocks overlap"
            );
        }
        let per_source: usize = blocks
            .iter()
            .map(|block| {
                block
                    .select(&[Matcher::equal("__name__", "crash")], i64::MIN, i64::MAX)
                    .unwrap()
                    .iter()
                    .map(|series| series.samples.len())
                    .sum::<usize>()
            })
            .sum::<usize>()
            + tsdb
                .head()
                .select(&[Matcher::equal("__name__", "crash")], i64::MIN, i64::MAX)
                .iter()
                .map(|series| series.samples.len())
                .sum::<usize>();
        let merged: usize = read_all(&tsdb).values().map(Vec::len).sum();
        assert_eq!(
            per_source, merged,
            "round {round}: a sample is stored twice"
        );
        let stored = read_all(&tsdb);
        for series in 0..SERIES {
            let samples = stored.get(&series.to_string()).cloned().unwrap_or_default();
            assert!(
                samples
                    .windows(2)
                    .all(|pair| pair[0].timestamp < pair[1].timestamp),
                "round {round}: series {series} holds a timestamp twice"
            );
            for sample in &samples {
                assert_eq!(
                    sample.value, sample.timestamp.0 as f64,
                    "round {round}: wrong value"
                );
            }
            let present: std::collections::HashSet<i64> =
                samples.iter().map(|sample| sample.timestamp.0).collect();
            for &t in acknowledged.iter().filter(|t| **t >= truncated_before) {
                assert!(
                    present.contains(&t),
                    "round {round}: acknowledged sample {t} of series {series} lost (seed {seed})"
                );
            }
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "the child acknowledged nothing: the test did not run"
    );
}
