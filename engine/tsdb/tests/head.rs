//! Head behaviour through the public API: concurrency, restart, truncation, bad input.

use std::sync::Arc;

use lookout_model::{LabelLimits, Labels, Matcher, NameValidation, Sample, STALE_NAN};
use lookout_storage::{RejectReason, WriteBatch};
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbError, TsdbOptions};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

fn open(dir: &std::path::Path) -> Tsdb {
    Tsdb::open(TsdbOptions::new(dir).fsync(FsyncPolicy::Never)).unwrap()
}

fn all(tsdb: &Tsdb) -> Vec<lookout_storage::Series> {
    tsdb.select_blocking(&[Matcher::not_equal("__name__", "")], i64::MIN, i64::MAX)
}

#[test]
fn concurrent_appends_from_several_threads_keep_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let tsdb = tsdb.clone();
            std::thread::spawn(move || {
                for round in 0..50i64 {
                    let mut batch = WriteBatch::new();
                    for series in 0..40 {
                        // Each thread owns its series; all threads also share "shared" series
                        // but at distinct timestamps per thread, so nothing conflicts.
                        batch.push(
                            labels(&[
                                ("__name__", "own"),
                                ("thread", &thread.to_string()),
                                ("s", &series.to_string()),
                            ]),
                            vec![Sample::new(round * 1000, round as f64)],
                        );
                    }
                    let outcome = tsdb.append(&batch).unwrap();
                    assert_eq!(outcome.accepted, 40);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let series = all(&tsdb);
    assert_eq!(series.len(), 160);
    for s in &series {
        let expected: Vec<Sample> = (0..50)
            .map(|round| Sample::new(round * 1000, round as f64))
            .collect();
        assert_eq!(s.samples, expected, "{}", s.labels);
    }
    assert_eq!(tsdb.head().stats().series, 160);
    drop(tsdb);
    let reopened = open(dir.path());
    assert_eq!(all(&reopened).len(), 160);
}

#[test]
fn restart_replays_samples_deletions_and_special_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels(&[("__name__", "a")]);
    let b = labels(&[("__name__", "b")]);
    {
        let tsdb = open(dir.path());
        let mut batch = WriteBatch::new();
        batch.push(
            a.clone(),
            (0..300)
                .map(|t| Sample::new(t * 15_000, t as f64))
                .collect(),
        );
        batch.push(
            b.clone(),
            vec![Sample::new(5, STALE_NAN), Sample::new(6, -0.0)],
        );
        tsdb.append(&batch).unwrap();
        tsdb.head()
            .delete(&[Matcher::equal("__name__", "a")], 15_000, 30_000)
            .unwrap();
        tsdb.head()
            .delete(&[Matcher::equal("__name__", "b")], i64::MIN, i64::MAX)
            .unwrap();
        // b is gone; writing it again creates a fresh series with a new reference.
        let mut batch = WriteBatch::new();
        batch.push(b.clone(), vec![Sample::new(1, 1.0)]);
        tsdb.append(&batch).unwrap();
        tsdb.close().unwrap();
    }
    for _ in 0..2 {
        let tsdb = open(dir.path());
        let series = all(&tsdb);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].labels, a);
        assert_eq!(series[0].samples.len(), 298);
        assert!(!series[0]
            .samples
            .iter()
            .any(|s| (15_000..=30_000).contains(&s.timestamp.0)));
        assert_eq!(series[1].samples, vec![Sample::new(1, 1.0)]);
        assert!(tsdb.replay_report().corruption.is_none());
    }
}

#[test]
fn truncation_checkpoints_the_wal_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = labels(&[("__name__", "old")]);
    let live = labels(&[("__name__", "live")]);
    {
        let tsdb = Tsdb::open(
            TsdbOptions::new(dir.path())
                .fsync(FsyncPolicy::Never)
                .wal_segment_bytes(4096),
        )
        .unwrap();
        for t in 0..200 {
            let mut batch = WriteBatch::new();
            batch.push(live.clone(), vec![Sample::new(t * 1000, t as f64)]);
            if t < 50 {
                batch.push(old.clone(), vec![Sample::new(t * 1000, t as f64)]);
            }
            tsdb.append(&batch).unwrap();
        }
        let report = tsdb.truncate_head(100_000).unwrap();
        assert_eq!(report.series_removed, 1);
        let checkpoint = report.checkpoint.unwrap();
        assert!(checkpoint.segments_removed > 1);
        // Old series comes back after truncation as a new series.
        let mut batch = WriteBatch::new();
        batch.push(old.clone(), vec![Sample::new(500_000, 1.0)]);
        batch.push(live.clone(), vec![Sample::new(500_000, 1.0)]);
        tsdb.append(&batch).unwrap();
    }
    let tsdb = open(dir.path());
    assert!(tsdb.replay_report().checkpoint.is_some());
    let series = all(&tsdb);
    assert_eq!(series.len(), 2);
    let live_series = series.iter().find(|s| s.labels == live).unwrap();
    assert_eq!(live_series.samples.len(), 101);
    assert_eq!(live_series.samples[0].timestamp.0, 100_000);
    let old_series = series.iter().find(|s| s.labels == old).unwrap();
    assert_eq!(old_series.samples, vec![Sample::new(500_000, 1.0)]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let error = Tsdb::open(TsdbOptions::new(dir.path())).unwrap_err();
    assert!(matches!(error, TsdbError::Locked { .. }), "{error}");
    drop(first);
    open(dir.path());
}

#[test]
fn invalid_and_oversized_labels_are_rejected_with_reasons() {
    let limits = LabelLimits {
        validation: NameValidation::Legacy,
        max_labels: 4,
        max_value_bytes: 16,
        ..LabelLimits::default()
    };
    let tsdb = Tsdb::in_memory(lookout_tsdb::HeadOptions {
        label_limits: limits,
        ..Default::default()
    })
    .unwrap();
    let mut batch = WriteBatch::new();
    batch.push(
        labels(&[("__name__", "ok"), ("a", "1")]),
        vec![Sample::new(1, 1.0)],
    );
    batch.push(
        labels(&[("__name__", "bad"), ("1a", "1")]),
        vec![Sample::new(1, 1.0)],
    );
    batch.push(
        labels(&[("__name__", "bad"), ("a", &"x".repeat(17))]),
        vec![Sample::new(1, 1.0)],
    );
    batch.push(
        labels(&[
            ("__name__", "bad"),
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
        ]),
        vec![Sample::new(1, 1.0), Sample::new(2, 1.0)],
    );
    batch.push(labels(&[("__name__", "9bad")]), vec![Sample::new(1, 1.0)]);
    let outcome = tsdb.append(&batch).unwrap();
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.rejected_for(RejectReason::InvalidLabels), 5);
    assert!(
        outcome.messages.iter().any(|m| m.contains("\"1a\"")),
        "{:?}",
        outcome.messages
    );
    assert!(
        outcome.messages.iter().any(|m| m.contains("17 bytes")),
        "{:?}",
        outcome.messages
    );
    assert_eq!(all(&tsdb).len(), 1);
}

#[test]
fn extreme_timestamps_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let series = labels(&[("__name__", "extreme")]);
    let samples = vec![
        Sample::new(i64::MIN, 1.0),
        Sample::new(-1, 2.0),
        Sample::new(0, 3.0),
        Sample::new(i64::MAX - 1, 4.0),
        Sample::new(i64::MAX, 5.0),
    ];
    {
        let tsdb = open_keeping_everything(dir.path());
        let mut batch = WriteBatch::new();
        batch.push(series.clone(), samples.clone());
        assert_eq!(tsdb.append(&batch).unwrap().accepted, 5);
        assert_eq!(all(&tsdb)[0].samples, samples);
    }
    let tsdb = open_keeping_everything(dir.path());
    assert_eq!(all(&tsdb)[0].samples, samples);
}

#[test]
fn samples_far_in_the_future_are_refused() {
    let tsdb = Tsdb::in_memory(Default::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut batch = WriteBatch::new();
    // Seconds mistaken for microseconds: thousands of years ahead.
    batch.push(
        labels(&[("__name__", "future")]),
        vec![Sample::new(now * 1000, 1.0)],
    );
    batch.push(
        labels(&[("__name__", "soon")]),
        vec![Sample::new(now + 3_600_000, 1.0)],
    );
    let outcome = tsdb.append(&batch).unwrap();
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.rejected_for(RejectReason::OutOfBounds), 1);
    assert!(
        outcome.messages[0].contains("ahead of the clock"),
        "{:?}",
        outcome.messages
    );
    assert_eq!(tsdb.head().time_range().unwrap().1, now + 3_600_000);
}

#[test]
fn label_queries_see_only_the_time_range_asked_for() {
    let tsdb = Tsdb::in_memory(Default::default()).unwrap();
    let mut batch = WriteBatch::new();
    batch.push(
        labels(&[("__name__", "m"), ("v", "early")]),
        vec![Sample::new(0, 1.0), Sample::new(100, 1.0)],
    );
    batch.push(
        labels(&[("__name__", "m"), ("v", "late")]),
        vec![Sample::new(1000, 1.0)],
    );
    tsdb.append(&batch).unwrap();
    let head = tsdb.head();
    // Between the two samples of "early": it has none there.
    assert_eq!(
        head.label_values("v", &[], 10, 90, None),
        Vec::<String>::new()
    );
    assert_eq!(
        head.label_values("v", &[], 50, 1000, None),
        ["early", "late"]
    );
    assert_eq!(
        head.label_values("v", &[], i64::MIN, i64::MAX, Some(1)),
        ["early"]
    );
}

/// A label value or name whose first series has no sample in the range, but a later one
/// has, is still in the answer (the head looks at a value's first series, then at all).
#[test]
fn label_queries_find_the_one_live_series_among_many_dead() {
    let tsdb = Tsdb::in_memory(Default::default()).unwrap();
    let mut batch = WriteBatch::new();
    // 200 series for v="x" and as many values of k, all with samples only at t = 0 except
    // the one written last, which has one at 1000 too.
    for index in 0..200 {
        let mut samples = vec![Sample::new(0, 1.0)];
        if index == 199 {
            samples.push(Sample::new(1000, 1.0));
        }
        let k = format!("k{index}");
        batch.push(
            labels(&[("__name__", "m"), ("v", "x"), ("k", k.as_str())]),
            samples,
        );
    }
    batch.push(
        labels(&[("__name__", "m"), ("v", "dead")]),
        vec![Sample::new(0, 1.0)],
    );
    tsdb.append(&batch).unwrap();
    let head = tsdb.head();
    let named_m = [Matcher::equal("__name__", "m")];
    for matchers in [&[][..], &named_m[..]] {
        assert_eq!(head.label_values("v", matchers, 500, 2000, None), ["x"]);
        assert_eq!(head.label_values("k", matchers, 500, 2000, None), ["k199"]);
        assert_eq!(
            head.label_names(matchers, 500, 2000, None),
            ["__name__", "k", "v"]
        );
        assert_eq!(head.label_values("v", matchers, 0, 0, None), ["dead", "x"]);
    }
}

/// Retention measures from the newest sample and far-future samples are refused; the
/// extreme-timestamp test turns both off.
fn open_keeping_everything(dir: &std::path::Path) -> Tsdb {
    Tsdb::open(
        TsdbOptions::new(dir)
            .fsync(FsyncPolicy::Never)
            .retention_ms(None)
            .max_future_ms(None),
    )
    .unwrap()
}

#[test]
fn full_chunks_leave_the_heap_for_mapped_files_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let write = |tsdb: &Tsdb| {
        for t in 0..600 {
            let mut batch = WriteBatch::new();
            for series in 0..10 {
                batch.push(
                    labels(&[("__name__", "mapped"), ("s", &series.to_string())]),
                    vec![Sample::new(t * 1000, (t * series) as f64 * 0.25)],
                );
            }
            tsdb.append(&batch).unwrap();
        }
    };
    let in_memory = Tsdb::in_memory(Default::default()).unwrap();
    write(&in_memory);
    let expected = all(&in_memory);
    {
        let tsdb = open(dir.path());
        write(&tsdb);
        let stats = tsdb.head().stats();
        // 600 samples in chunks of 120: four full chunks per series are mapped, one is open.
        assert_eq!(stats.mapped_chunks, 40);
        assert_eq!(stats.chunk_files, 1);
        let heap_stats = in_memory.head().stats();
        assert!(
            stats.series_heap_bytes * 2 < heap_stats.series_heap_bytes,
            "{} mapped vs {} on the heap",
            stats.series_heap_bytes,
            heap_stats.series_heap_bytes
        );
        assert_eq!(all(&tsdb), expected);
    }
    let tsdb = open(dir.path());
    assert_eq!(all(&tsdb), expected);
    assert_eq!(
        tsdb.head().stats().mapped_chunks,
        40,
        "replay maps full chunks again"
    );
}

fn one_sample(name: &str, t: i64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.push(labels(&[("__name__", name)]), vec![Sample::new(t, 1.0)]);
    batch
}

#[test]
fn the_cardinality_budget_refuses_new_series_and_keeps_existing_ones_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let options = |budget: u64| {
        TsdbOptions::new(dir.path())
            .fsync(FsyncPolicy::Never)
            .max_series(Some(budget))
    };
    {
        let tsdb = Tsdb::open(options(3)).unwrap();
        for name in ["a", "b", "c"] {
            assert_eq!(tsdb.append(&one_sample(name, 1_000)).unwrap().accepted, 1);
        }
        let mut batch = one_sample("a", 2_000);
        batch.push(
            labels(&[("__name__", "d")]),
            vec![Sample::new(2_000, 1.0), Sample::new(3_000, 2.0)],
        );
        let outcome = tsdb.append(&batch).unwrap();
        assert_eq!(outcome.accepted, 1, "the existing series is written");
        assert_eq!(outcome.rejected_for(RejectReason::SeriesLimit), 2);
        assert!(
            outcome.messages[0].contains("d")
                && outcome.messages[0].contains("cardinality budget of 3"),
            "{:?}",
            outcome.messages
        );
        assert_eq!(tsdb.head().series_count(), 3);
        tsdb.close().unwrap();
    }
    // A smaller budget after a restart: replay keeps every series it accepted before, the
    // existing ones are written, new ones refused.
    let tsdb = Tsdb::open(options(2)).unwrap();
    assert_eq!(tsdb.head().series_count(), 3);
    assert_eq!(tsdb.append(&one_sample("c", 5_000)).unwrap().accepted, 1);
    let refused = tsdb.append(&one_sample("e", 5_000)).unwrap();
    assert_eq!(refused.rejected_for(RejectReason::SeriesLimit), 1);
    // Series leaving the head (truncated away) make room again.
    let report = tsdb.truncate_head(4_000).unwrap();
    assert_eq!(report.series_removed, 2, "a and b had nothing after 4 s");
    assert_eq!(tsdb.append(&one_sample("e", 6_000)).unwrap().accepted, 1);
    let full = tsdb.append(&one_sample("f", 6_000)).unwrap();
    assert_eq!(full.rejected_for(RejectReason::SeriesLimit), 1);
    let names: Vec<String> = all(&tsdb)
        .iter()
        .map(|series| series.labels.metric_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["c", "e"]);
}

#[test]
fn the_cardinality_budget_holds_under_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Arc::new(
        Tsdb::open(
            TsdbOptions::new(dir.path())
                .fsync(FsyncPolicy::Never)
                .max_series(Some(50)),
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let tsdb = tsdb.clone();
            std::thread::spawn(move || {
                let mut batch = WriteBatch::new();
                for series in 0..40 {
                    batch.push(
                        labels(&[
                            ("__name__", "m"),
                            ("thread", &thread.to_string()),
                            ("s", &series.to_string()),
                        ]),
                        vec![Sample::new(1_000, 1.0)],
                    );
                }
                tsdb.append(&batch).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<_> = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    let accepted: u64 = outcomes.iter().map(|outcome| outcome.accepted).sum();
    let refused: u64 = outcomes
        .iter()
        .map(|outcome| outcome.rejected_for(RejectReason::SeriesLimit))
        .sum();
    assert_eq!(accepted, 50);
    assert_eq!(refused, 110);
    assert_eq!(tsdb.head().series_count(), 50);
    assert_eq!(all(&tsdb).len(), 50);
}

#[test]
fn a_zero_cardinality_budget_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let error = Tsdb::open(TsdbOptions::new(dir.path()).max_series(Some(0))).unwrap_err();
    assert!(error.to_string().contains("max_series"), "{error}");
}

fn known(labels: &Labels, samples: Vec<Sample>) -> lookout_storage::KnownSeriesSamples {
    lookout_storage::KnownSeriesSamples {
        identity: labels.identity(),
        samples,
    }
}

#[test]
fn series_named_by_identity_append_when_held_and_come_back_unresolved_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let held = labels(&[("__name__", "held"), ("job", "a")]);
    let dropped = labels(&[("__name__", "dropped"), ("job", "a")]);
    let never = labels(&[("__name__", "never"), ("job", "a")]);
    {
        let tsdb = open(dir.path());
        let mut batch = WriteBatch::new();
        batch.push(held.clone(), vec![Sample::new(1_000, 1.0)]);
        batch.push(dropped.clone(), vec![Sample::new(1_000, 1.0)]);
        tsdb.append(&batch).unwrap();
        // `dropped` has no sample after 50 s: truncation removes it from the head.
        let mut batch = WriteBatch::new();
        batch.push(held.clone(), vec![Sample::new(60_000, 2.0)]);
        tsdb.append(&batch).unwrap();
        assert_eq!(tsdb.truncate_head(50_000).unwrap().series_removed, 1);

        let batch = WriteBatch {
            series: Vec::new(),
            known: vec![
                known(&never, vec![Sample::new(70_000, 9.0)]),
                known(
                    &held,
                    vec![Sample::new(70_000, 3.0), Sample::new(80_000, 4.0)],
                ),
                known(&dropped, vec![Sample::new(70_000, 9.0)]),
            ],
        };
        let outcome = tsdb.append(&batch).unwrap();
        assert_eq!(outcome.rejected_total(), 0, "{:?}", outcome.messages);
        assert_eq!(outcome.accepted, 2);
        let mut unresolved = outcome.unresolved.clone();
        unresolved.sort_unstable();
        assert_eq!(unresolved, vec![0, 2], "neither stored nor counted");

        // Refusals of a series named by identity still name it.
        let batch = WriteBatch {
            series: Vec::new(),
            known: vec![known(&held, vec![Sample::new(70_000, 5.0)])],
        };
        let outcome = tsdb.append(&batch).unwrap();
        assert_eq!(outcome.accepted, 0);
        assert_eq!(outcome.rejected_total(), 1);
        assert!(
            outcome.messages[0].contains("held") && outcome.messages[0].contains("70000"),
            "{:?}",
            outcome.messages
        );
    }
    // What was appended by identity is in the WAL like anything else.
    let tsdb = open(dir.path());
    let series = all(&tsdb);
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].labels, held);
    let times: Vec<i64> = series[0].samples.iter().map(|s| s.timestamp.0).collect();
    assert_eq!(times, vec![60_000, 70_000, 80_000]);
}

/// The head sorts series by their label strings, not by the order their labels were first
/// seen (which is the order of their interned symbols): label sets that share a prefix, that
/// differ in a name or only in a value, and that are prefixes of others, appended in
/// scrambled order, come back in `Labels` order.
#[test]
fn selects_are_in_label_order_whatever_order_labels_were_interned() {
    let tsdb = Tsdb::in_memory(lookout_tsdb::HeadOptions::default()).unwrap();
    let sets: Vec<Labels> = [
        &[("__name__", "zz"), ("b", "1")][..],
        &[("__name__", "a"), ("b", "2")],
        &[("__name__", "a")],
        &[("__name__", "a"), ("b", "10")],
        &[("__name__", "a"), ("a", "9")],
        &[("__name__", "a"), ("b", "1"), ("c", "x")],
        &[("__name__", "a"), ("b", "1")],
        &[("__name__", "ab"), ("b", "0")],
    ]
    .iter()
    .map(|pairs| labels(pairs))
    .collect();
    for set in &sets {
        let mut batch = WriteBatch::new();
        batch.push(set.clone(), vec![Sample::new(1000, 1.0)]);
        tsdb.append(&batch).unwrap();
    }
    let mut expected = sets.clone();
    expected.sort();
    let got: Vec<Labels> = all(&tsdb).into_iter().map(|series| series.labels).collect();
    assert_eq!(got, expected);
}

/// What was appended, deleted and appended again, series by series and across many shards,
/// comes back exactly from the log (the order of samples and deletions of a series matters).
#[test]
fn replay_keeps_the_order_of_samples_and_deletions_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let series: Vec<Labels> = (0..400)
        .map(|i| labels(&[("__name__", "m"), ("i", &i.to_string())]))
        .collect();
    let before = {
        let tsdb = open(dir.path());
        for round in 0..30i64 {
            let mut batch = WriteBatch::new();
            for (i, labels) in series.iter().enumerate() {
                // Every third series skips some rounds, so records differ in their series.
                if i % 3 == 0 && round % 4 == 1 {
                    continue;
                }
                batch.push(
                    labels.clone(),
                    vec![Sample::new(round * 15_000, (round * 7 + i as i64) as f64)],
                );
            }
            tsdb.append(&batch).unwrap();
            if round % 10 == 9 {
                // Part of a time range of some series, then all of a few (which later rounds
                // create again under new references).
                for (i, labels) in series.iter().enumerate().filter(|(i, _)| i % 7 == 0) {
                    let matchers: Vec<Matcher> = labels
                        .iter()
                        .map(|label| Matcher::equal(label.name.as_str(), label.value.as_str()))
                        .collect();
                    let (from, to) = if i % 2 == 0 {
                        ((round - 5) * 15_000, (round - 2) * 15_000)
                    } else {
                        (i64::MIN, i64::MAX)
                    };
                    tsdb.head().delete(&matchers, from, to).unwrap();
                }
            }
        }
        let before = all(&tsdb);
        tsdb.close().unwrap();
        before
    };
    assert!(before.len() > 300, "{} series", before.len());
    let reopened = open(dir.path());
    let after = all(&reopened);
    assert_eq!(after.len(), before.len());
    for (want, got) in before.iter().zip(&after) {
        assert_eq!(got.labels, want.labels);
        assert_eq!(got.samples, want.samples, "{}", want.labels);
    }
}
