//! Tests of the WAL writer, replay, repair and checkpoints.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use lookout_model::Labels;

use super::record::{encode_record, SampleEntry, SeriesEntry, TombstoneEntry};
use super::*;

fn options(segment_bytes: u64, fsync: FsyncPolicy) -> WalOptions {
    WalOptions {
        segment_bytes,
        fsync,
    }
}

fn samples_record(id: u32, t: i64) -> Record {
    Record::Samples(vec![SampleEntry { id, t, v: t as f64 }])
}

fn series_record(id: u32, name: &str) -> Record {
    Record::Series(vec![SeriesEntry {
        id,
        labels: Labels::from_pairs([("__name__", name)]).unwrap(),
    }])
}

fn log(wal: &Wal, record: &Record) {
    let mut framed = Vec::new();
    encode_record(&mut framed, record);
    wal.log_and_wait(&framed).unwrap();
}

fn replay_all(dir: &Path) -> (Vec<Record>, ReplayReport) {
    let mut records = Vec::new();
    let report = replay(dir, |record| records.push(record)).unwrap();
    (records, report)
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn records_survive_reopen_across_rotated_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1024, FsyncPolicy::Never), 1).unwrap();
    let mut written = vec![series_record(1, "a")];
    log(&wal, &written[0]);
    for t in 0..200 {
        let record = samples_record(1, t);
        log(&wal, &record);
        written.push(record);
    }
    wal.close().unwrap();
    drop(wal);
    assert!(segment_files(dir.path()).len() > 2, "small segments rotate");
    let (records, report) = replay_all(dir.path());
    assert_eq!(records, written);
    assert!(report.torn_tail.is_none() && report.corruption.is_none());
    assert_eq!(report.next_segment, *report.segments.last().unwrap() + 1);
}

#[test]
fn concurrent_writers_share_group_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), options(64 << 10, FsyncPolicy::Always), 1).unwrap());
    let threads: Vec<_> = (0..4u32)
        .map(|thread| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for t in 0..250 {
                    log(&wal, &samples_record(thread, t));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let flushes = wal.metrics().flushes.load(Ordering::Relaxed);
    assert!(flushes <= 1000, "at most one flush per record");
    drop(wal);
    let (records, _) = replay_all(dir.path());
    assert_eq!(records.len(), 1000);
    for thread in 0..4u32 {
        let times: Vec<i64> = records
            .iter()
            .filter_map(|record| match record {
                Record::Samples(samples) if samples[0].id == thread => Some(samples[0].t),
                _ => None,
            })
            .collect();
        assert_eq!(times, (0..250).collect::<Vec<_>>(), "per-writer order kept");
    }
}

#[test]
fn torn_tail_is_truncated_and_counted_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1 << 20, FsyncPolicy::Never), 1).unwrap();
    for t in 0..10 {
        log(&wal, &samples_record(1, t));
    }
    drop(wal);
    let segment = dir.path().join(segment_name(1));
    let full = fs::metadata(&segment).unwrap().len();
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(full - 5).unwrap();
    drop(file);

    let (records, report) = replay_all(dir.path());
    assert_eq!(
        records.len(),
        9,
        "the torn record is dropped, the rest kept"
    );
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(torn.file, segment);
    assert!(report.corruption.is_none());
    assert!(
        fs::metadata(&segment).unwrap().len() < full - 5,
        "tail cut off"
    );

    let wal = Wal::open(
        dir.path(),
        options(1 << 20, FsyncPolicy::Never),
        report.next_segment,
    )
    .unwrap();
    log(&wal, &samples_record(1, 100));
    drop(wal);
    let (records, report) = replay_all(dir.path());
    assert_eq!(records.len(), 10);
    assert!(report.torn_tail.is_none(), "repair is permanent");
}

#[test]
fn zero_filled_tail_is_torn_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1 << 20, FsyncPolicy::Never), 1).unwrap();
    log(&wal, &samples_record(1, 1));
    drop(wal);
    let segment = dir.path().join(segment_name(1));
    let mut bytes = fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&segment, bytes).unwrap();
    let (records, report) = replay_all(dir.path());
    assert_eq!(records.len(), 1);
    assert!(report.torn_tail.is_some());
    assert!(report.corruption.is_none());
}

#[test]
fn corruption_in_the_middle_stops_replay_keeps_the_prefix_and_sets_the_rest_aside() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1024, FsyncPolicy::Never), 1).unwrap();
    for t in 0..100 {
        log(&wal, &samples_record(7, t));
    }
    drop(wal);
    let before = segment_files(dir.path());
    assert!(before.len() >= 3);
    // Flip a bit inside the third record of segment 2.
    let segment = dir.path().join(segment_name(2));
    let mut bytes = fs::read(&segment).unwrap();
    let (_, report_before) = replay_all_readonly(dir.path());
    let frame_len = (bytes.len() - SEGMENT_HEADER_LEN) / records_in(&bytes);
    let offset = SEGMENT_HEADER_LEN + 2 * frame_len;
    bytes[offset + 12] ^= 0x04;
    fs::write(&segment, &bytes).unwrap();

    let (records, report) = replay_all(dir.path());
    let corruption = report.corruption.expect("corruption reported");
    assert_eq!(corruption.file, segment);
    assert_eq!(corruption.offset, offset as u64);
    assert!(
        corruption.reason.contains("checksum"),
        "{}",
        corruption.reason
    );
    let in_first = report_before;
    assert_eq!(
        records.len(),
        in_first + 2,
        "everything before the damaged record is kept"
    );
    let times: Vec<i64> = records
        .iter()
        .map(|record| match record {
            Record::Samples(samples) => samples[0].t,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(times, (0..times.len() as i64).collect::<Vec<_>>());
    let after = segment_files(dir.path());
    assert!(after.iter().any(|name| name == "00000002.corrupt"));
    assert!(after.iter().any(|name| name == "00000003.corrupt"));
    // A second replay is clean and agrees.
    let (again, report) = replay_all(dir.path());
    assert!(report.corruption.is_none());
    assert_eq!(again, records);
}

/// Records in segment 1 only, without repairing anything.
fn replay_all_readonly(dir: &Path) -> ((), usize) {
    let bytes = fs::read(dir.join(segment_name(1))).unwrap();
    ((), records_in(&bytes))
}

fn records_in(segment: &[u8]) -> usize {
    record::FrameReader::new(segment, SEGMENT_HEADER_LEN)
        .filter(Result::is_ok)
        .count()
}

#[test]
fn bad_segment_header_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1 << 20, FsyncPolicy::Never), 1).unwrap();
    log(&wal, &samples_record(1, 1));
    drop(wal);
    let wal = Wal::open(dir.path(), options(1 << 20, FsyncPolicy::Never), 2).unwrap();
    log(&wal, &samples_record(1, 2));
    drop(wal);
    let segment = dir.path().join(segment_name(1));
    let mut bytes = fs::read(&segment).unwrap();
    bytes[0] = b'X';
    fs::write(&segment, bytes).unwrap();
    let (records, report) = replay_all(dir.path());
    assert!(records.is_empty());
    let corruption = report.corruption.unwrap();
    assert_eq!(corruption.offset, 0);
    assert!(corruption.reason.contains("header"));
}

#[test]
fn checkpoint_keeps_live_series_and_recent_samples_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1024, FsyncPolicy::Never), 1).unwrap();
    log(&wal, &series_record(1, "kept"));
    log(&wal, &series_record(2, "dropped"));
    for t in 0..40 {
        log(&wal, &samples_record(1, t));
        log(&wal, &samples_record(2, t));
    }
    log(
        &wal,
        &Record::Tombstones(vec![TombstoneEntry {
            id: 1,
            mint: 30,
            maxt: 31,
        }]),
    );
    let upto = wal.cut_segment().unwrap();
    log(&wal, &samples_record(1, 40));
    drop(wal);

    let report = checkpoint(dir.path(), upto, |id| id == 1, 20).unwrap();
    assert_eq!(report.number, upto);
    assert!(report.segments_removed >= 2);
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(replayed.checkpoint, Some(upto));
    let mut expected = vec![series_record(1, "kept")];
    expected.extend((20..40).map(|t| samples_record(1, t)));
    expected.push(Record::Tombstones(vec![TombstoneEntry {
        id: 1,
        mint: 30,
        maxt: 31,
    }]));
    expected.push(samples_record(1, 40));
    assert_eq!(records, expected);

    // A second checkpoint builds on the first.
    let report = checkpoint(dir.path(), upto + 1, |_| true, 35).unwrap();
    assert_eq!(report.number, upto + 1);
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(replayed.checkpoint, Some(upto + 1));
    assert_eq!(records.first(), Some(&series_record(1, "kept")));
    assert_eq!(records.last(), Some(&samples_record(1, 40)));
    // Series, samples 35..=39, sample 40; the tombstone ended before mint and is dropped.
    assert_eq!(records.len(), 1 + 5 + 1);
    assert!(!records
        .iter()
        .any(|record| matches!(record, Record::Tombstones(_))));
    assert!(!dir
        .path()
        .join(format!("checkpoint.{}", segment_name(upto)))
        .exists());
}

/// A checkpoint that keeps more than one file's worth of records is written as several
/// segment files; replay and the next checkpoint read them in order.
#[test]
fn large_checkpoints_are_split_into_several_files() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(64 << 10, FsyncPolicy::Never), 1).unwrap();
    log(&wal, &series_record(1, "kept"));
    for t in 0..2000 {
        log(&wal, &samples_record(1, t));
    }
    let upto = wal.cut_segment().unwrap();
    log(&wal, &samples_record(1, 2000));
    drop(wal);

    checkpoint(dir.path(), upto, |_| true, 100).unwrap();
    let checkpoint_files = segment_files(
        &dir.path()
            .join(format!("checkpoint.{}", segment_name(upto))),
    );
    assert!(checkpoint_files.len() > 2, "{checkpoint_files:?}");
    let mut expected = vec![series_record(1, "kept")];
    expected.extend((100..=2000).map(|t| samples_record(1, t)));
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(replayed.checkpoint, Some(upto));
    assert!(replayed.corruption.is_none());
    assert_eq!(records, expected);

    // The next checkpoint reads every file of this one.
    checkpoint(dir.path(), upto + 1, |_| true, 1500).unwrap();
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(replayed.checkpoint, Some(upto + 1));
    assert_eq!(
        records,
        expected[..1]
            .iter()
            .cloned()
            .chain(expected[1401..].iter().cloned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn interrupted_checkpoint_is_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1 << 20, FsyncPolicy::Never), 1).unwrap();
    log(&wal, &samples_record(1, 1));
    drop(wal);
    let leftover = dir.path().join("checkpoint.00000001.tmp");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("00000000"), b"garbage").unwrap();
    let (records, report) = replay_all(dir.path());
    assert_eq!(records.len(), 1);
    assert_eq!(report.checkpoint, None);
    assert!(!leftover.exists());
}

#[test]
fn tiny_segments_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let error = Wal::open(dir.path(), options(10, FsyncPolicy::Never), 1).unwrap_err();
    assert!(matches!(error, TsdbError::InvalidOptions { .. }));
}

#[test]
fn interval_policy_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        options(1 << 20, FsyncPolicy::Interval(Duration::from_millis(5))),
        1,
    )
    .unwrap();
    log(&wal, &samples_record(1, 1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wal.metrics().fsyncs.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(wal.metrics().fsyncs.load(Ordering::Relaxed) > 0);
    wal.close().unwrap();
}

/// Every file under `dir` with its bytes, to compare before and after a read.
fn snapshot_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn read_only_replay_reads_what_replay_reads_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options(1024, FsyncPolicy::Never), 1).unwrap();
    for t in 0..60 {
        log(&wal, &samples_record(3, t));
    }
    drop(wal);
    // An open last segment with a torn tail, a stale checkpoint temporary and damage in the
    // middle segment: everything replay would repair.
    let segments: Vec<String> = segment_files(dir.path());
    let last = dir.path().join(segments.last().unwrap());
    let mut bytes = fs::read(&last).unwrap();
    bytes.truncate(bytes.len() - 3);
    fs::write(&last, &bytes).unwrap();
    fs::create_dir(dir.path().join("checkpoint.00000001.tmp")).unwrap();
    let before = snapshot_files(dir.path());

    let mut read_only = Vec::new();
    let report = replay_read_only(dir.path(), |record| read_only.push(record)).unwrap();
    assert_eq!(
        snapshot_files(dir.path()),
        before,
        "nothing changed on disk"
    );
    assert!(dir.path().join("checkpoint.00000001.tmp").exists());
    assert!(report.torn_tail.is_some());

    let (repaired, repair_report) = replay_all(dir.path());
    assert_eq!(
        read_only, repaired,
        "the same records as a repairing replay"
    );
    assert_eq!(report.torn_tail, repair_report.torn_tail);
    assert_ne!(snapshot_files(dir.path()), before, "replay does repair");
}
