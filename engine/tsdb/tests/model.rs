//! Model-based test of WAL + head: random appends, deletions, truncations, clean reopens and
//! crashes (drop without close) against a plain in-memory model. After every step the store
//! must hold exactly what the model holds, and every write outcome must match the model's.

use std::collections::BTreeMap;
use std::path::Path;

use lookout_model::{Labels, MatchKind, Matcher, Sample, STALE_NAN};
use lookout_storage::{RejectReason, WriteBatch};
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};
use proptest::prelude::*;

const SERIES: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Append {
        series: usize,
        start: i64,
        steps: Vec<(i64, usize)>,
    },
    Delete {
        series: Option<usize>,
        mint: i64,
        maxt: i64,
    },
    Truncate {
        mint: i64,
    },
    Reopen,
    Crash,
}

fn value(choice: usize, t: i64) -> f64 {
    match choice {
        0 => 1.0,
        1 => f64::NAN,
        2 => STALE_NAN,
        3 => -0.0,
        _ => t as f64 * 0.5,
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SERIES, 0i64..400, prop::collection::vec((0i64..6, 0usize..6), 1..12))
            .prop_map(|(series, start, steps)| Op::Append { series, start, steps }),
        1 => (prop::option::of(0..SERIES), 0i64..400, 0i64..100)
            .prop_map(|(series, mint, width)| Op::Delete { series, mint, maxt: mint + width }),
        1 => (0i64..400).prop_map(|mint| Op::Truncate { mint }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Debug, Default)]
struct Model {
    series: BTreeMap<usize, BTreeMap<i64, u64>>,
    /// Whether the store under test accepts out-of-order samples (with a window wider than
    /// any timestamp the test uses).
    out_of_order: bool,
}

impl Model {
    fn append(&mut self, series: usize, t: i64, v: f64) -> Result<(), RejectReason> {
        let samples = self.series.entry(series).or_default();
        if self.out_of_order {
            return match samples.get(&t) {
                Some(bits) if *bits == v.to_bits() => Ok(()),
                Some(_) => Err(RejectReason::DuplicateSampleForTimestamp),
                None => {
                    samples.insert(t, v.to_bits());
                    Ok(())
                }
            };
        }
        if let Some((&last_t, &last_bits)) = samples.last_key_value() {
            if t == last_t {
                return if last_bits == v.to_bits() {
                    Ok(())
                } else {
                    Err(RejectReason::DuplicateSampleForTimestamp)
                };
            }
            if t < last_t {
                return Err(RejectReason::OutOfOrder);
            }
        }
        samples.insert(t, v.to_bits());
        Ok(())
    }

    fn retain(&mut self, keep: impl Fn(usize, i64) -> bool) {
        for (series, samples) in self.series.iter_mut() {
            samples.retain(|t, _| keep(*series, *t));
        }
        self.series.retain(|_, samples| !samples.is_empty());
    }
}

fn series_labels(series: usize) -> Labels {
    Labels::from_pairs([("__name__", "model"), ("s", series.to_string().as_str())]).unwrap()
}

fn open(dir: &Path, out_of_order: bool) -> Tsdb {
    let window = if out_of_order { 1 << 40 } else { 0 };
    let options = TsdbOptions::new(dir)
        .fsync(FsyncPolicy::Never)
        .wal_segment_bytes(1024)
        .chunk_samples(4)
        .out_of_order_window_ms(window);
    let tsdb = Tsdb::open(options).expect("store opens");
    let report = tsdb.replay_report();
    assert!(report.corruption.is_none(), "{report:?}");
    assert!(report.torn_tail.is_none(), "{report:?}");
    tsdb
}

fn check(tsdb: &Tsdb, model: &Model) -> Result<(), TestCaseError> {
    let got = tsdb.select_blocking(&[Matcher::equal("__name__", "model")], i64::MIN, i64::MAX);
    let got: BTreeMap<String, Vec<(i64, u64)>> = got
        .into_iter()
        .map(|series| {
            let samples = series
                .samples
                .iter()
                .map(|s| (s.timestamp.0, s.value.to_bits()))
                .collect();
            (series.labels.get("s").unwrap().to_owned(), samples)
        })
        .collect();
    let expected: BTreeMap<String, Vec<(i64, u64)>> = model
        .series
        .iter()
        .map(|(series, samples)| {
            (
                series.to_string(),
                samples.iter().map(|(t, v)| (*t, *v)).collect(),
            )
        })
        .collect();
    prop_assert_eq!(got, expected);
    Ok(())
}

fn run(ops: Vec<Op>, out_of_order: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut tsdb = Some(open(dir.path(), out_of_order));
    let mut model = Model {
        out_of_order,
        ..Model::default()
    };
    for op in ops {
        let store = tsdb.as_ref().unwrap();
        match op {
            Op::Append {
                series,
                start,
                steps,
            } => {
                let mut t = start;
                let mut samples = Vec::new();
                let mut expected_accepted = 0;
                let mut expected_rejected: BTreeMap<RejectReason, u64> = BTreeMap::new();
                for (step, choice) in steps {
                    t += step;
                    let v = value(choice, t);
                    samples.push(Sample::new(t, v));
                    match model.append(series, t, v) {
                        Ok(()) => expected_accepted += 1,
                        Err(reason) => *expected_rejected.entry(reason).or_default() += 1,
                    }
                }
                if model.series.get(&series).is_some_and(BTreeMap::is_empty) {
                    model.series.remove(&series);
                }
                let mut batch = WriteBatch::new();
                batch.push(series_labels(series), samples);
                let outcome = store.append(&batch).unwrap();
                prop_assert_eq!(outcome.accepted, expected_accepted);
                prop_assert_eq!(outcome.rejected, expected_rejected);
            }
            Op::Delete { series, mint, maxt } => {
                let matcher = match series {
                    Some(series) => Matcher::equal("s", series.to_string()),
                    None => Matcher::new(MatchKind::Regex, "s", ".+").unwrap(),
                };
                store.head().delete(&[matcher], mint, maxt).unwrap();
                model.retain(|s, t| {
                    !(series.is_none_or(|only| only == s) && (mint..=maxt).contains(&t))
                });
            }
            Op::Truncate { mint } => {
                store.truncate_head(mint).unwrap();
                model.retain(|_, t| t >= mint);
            }
            Op::Reopen => {
                let store = tsdb.take().unwrap();
                store.close().unwrap();
                drop(store);
                tsdb = Some(open(dir.path(), out_of_order));
            }
            Op::Crash => {
                drop(tsdb.take());
                tsdb = Some(open(dir.path(), out_of_order));
            }
        }
        check(tsdb.as_ref().unwrap(), &model)?;
    }
    drop(tsdb);
    check(&open(dir.path(), out_of_order), &model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run(ops, false)?;
    }

    #[test]
    fn store_with_out_of_order_window_agrees_with_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run(ops, true)?;
    }
}
