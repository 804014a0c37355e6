//! generate -> `import` -> `dump` gives back the input, for each input format; `verify`
//! names a bit flip injected in each file type; the offline commands refuse a locked
//! directory and the read-only ones work beside it.

mod support;

use std::fmt::Write as _;
use std::path::Path;

use lookout_model::Labels;
use lookout_storage::WriteBatch;
use lookout_tsdb::{Tsdb, TsdbOptions};
use support::{copy_tree, files, path_str, run, run_ok};

const BASE_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 15_000;
/// 7 h 30 min: four 2-hour block ranges.
const POINTS: i64 = 1_800;

/// Label pairs, `__name__` first, then the others by name.
type LabelPairs = Vec<(&'static str, String)>;

/// Deterministic series in label order: labels and (time, value) samples.
fn generated() -> Vec<(LabelPairs, Vec<(i64, f64)>)> {
    let mut out = Vec::new();
    for (metric, count) in [
        ("http_requests_total", 4),
        ("node_load1", 2),
        ("temperature", 3),
    ] {
        for instance in 0..count {
            let labels = vec![
                ("__name__", metric.to_owned()),
                ("instance", format!("host-{instance}")),
                ("job", "node".to_owned()),
            ];
            // Jittered times; some series start late and end early (churn).
            let first = instance * 40;
            let last = POINTS - instance * 30;
            let samples = (first..last)
                .map(|point| {
                    let t = BASE_MS + point * STEP_MS + (point * 7 + instance) % 5;
                    let v = match metric {
                        "http_requests_total" => (point * (instance + 1)) as f64,
                        "node_load1" => ((point % 97) as f64) / 4.0 + 0.125,
                        _ => match point {
                            100 => f64::NAN,
                            101 => f64::INFINITY,
                            102 => f64::NEG_INFINITY,
                            _ => 20.0 + ((point * 13) % 50) as f64 / 10.0 - 0.05,
                        },
                    };
                    (t, v)
                })
                .collect();
            out.push((labels, samples));
        }
    }
    out.sort_by(|a, b| {
        let key = |labels: &[(&str, String)]| {
            Labels::from_pairs(labels.iter().map(|(n, v)| (*n, v.clone()))).unwrap()
        };
        key(&a.0).cmp(&key(&b.0))
    });
    out
}

/// The generated data as `dump` writes OpenMetrics (the canonical form).
fn openmetrics_text() -> String {
    let mut out = String::new();
    for (labels, samples) in generated() {
        let series = format!(
            "{}{{{}}}",
            labels[0].1,
            labels[1..]
                .iter()
                .map(|(name, value)| format!("{name}=\"{value}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        for (t, v) in samples {
            let value = if v.is_nan() {
                "NaN".to_owned()
            } else if v == f64::INFINITY {
                "+Inf".to_owned()
            } else if v == f64::NEG_INFINITY {
                "-Inf".to_owned()
            } else if v.fract() == 0.0 {
                format!("{}", v as i64)
            } else {
                format!("{v:?}")
            };
            let seconds = if t % 1000 == 0 {
                format!("{}", t / 1000)
            } else {
                format!(
                    "{}.{}",
                    t / 1000,
                    format!("{:03}", t % 1000).trim_end_matches('0')
                )
            };
            writeln!(out, "{series} {value} {seconds}").unwrap();
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The generated data as CSV, rows shuffled deterministically (import must sort).
fn csv_text() -> String {
    let mut rows = Vec::new();
    for (labels, samples) in generated() {
        for (t, v) in samples {
            let value = if v.is_nan() {
                "NaN".to_owned()
            } else if v.is_infinite() {
                if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
            } else {
                format!("{v:?}")
            };
            rows.push(format!(
                "{t},{value},{},{},{}",
                labels[0].1, labels[1].1, labels[2].1
            ));
        }
    }
    // A fixed permutation: stride through the rows.
    let stride = 7919;
    let count = rows.len();
    let mut shuffled = String::from("timestamp,value,__name__,instance,job\n");
    for position in 0..count {
        shuffled.push_str(&rows[(position * stride) % count]);
        shuffled.push('\n');
    }
    assert!(count % stride != 0);
    shuffled
}

/// The generated data as JSON lines, newest series first and split in two lines each.
fn jsonl_text() -> String {
    let mut out = String::new();
    for (labels, samples) in generated().into_iter().rev() {
        let metric: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone().into()))
            .collect();
        let half = samples.len() / 2;
        for part in [&samples[half..], &samples[..half]] {
            let values: Vec<serde_json::Value> = part
                .iter()
                .map(|(_, v)| match serde_json::Number::from_f64(*v) {
                    Some(number) => number.into(),
                    None if v.is_nan() => "NaN".into(),
                    None if *v > 0.0 => "+Inf".into(),
                    None => "-Inf".into(),
                })
                .collect();
            let timestamps: Vec<i64> = part.iter().map(|(t, _)| *t).collect();
            let line =
                serde_json::json!({"metric": metric, "values": values, "timestamps": timestamps});
            writeln!(out, "{line}").unwrap();
        }
    }
    out
}

/// Equal texts, or a failure naming the first line that differs.
fn assert_same(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let mut expected_lines = expected.lines();
    for (number, line) in actual.lines().enumerate() {
        let wanted = expected_lines.next();
        assert_eq!(Some(line), wanted, "{what}: line {} differs", number + 1);
    }
    panic!(
        "{what}: output ends early after {} lines, {} more expected",
        actual.lines().count(),
        expected_lines.count()
    );
}

fn import(format: &str, text: &str, buffer_samples: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(format!("input.{format}"));
    std::fs::write(&input, text).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let result = run(&[
        "import",
        format,
        path_str(&input),
        path_str(&data),
        "--buffer-samples",
        buffer_samples,
    ]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(result.stdout.starts_with("imported "), "{}", result.stdout);
    assert_eq!(
        result.stderr, "",
        "no progress output when not on a terminal"
    );
    dir
}

#[test]
fn openmetrics_import_dumps_back_identical() {
    let expected = openmetrics_text();
    // A small buffer: many spilled runs to merge.
    let dir = import("openmetrics", &expected, "997");
    let data = dir.path().join("data");
    assert_same(
        &run_ok(&["dump", path_str(&data)]),
        &expected,
        "openmetrics",
    );
    // The blocks are compacted: fewer than the four 2-hour ranges, above level 1.
    let list = run_ok(&["list", path_str(&data)]);
    let levels: Vec<&str> = list
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with("head"))
        .map(|line| line.split_whitespace().last().unwrap())
        .collect();
    assert!(levels.len() < 4, "{list}");
    assert!(levels.iter().all(|level| *level != "1"), "{list}");
    let verify = run(&["verify", path_str(&data)]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);

    // The store opens the imported blocks as a server would and serves every sample.
    let tsdb = Tsdb::open(TsdbOptions::new(&data).max_future_ms(None)).unwrap();
    assert!(tsdb.quarantined().is_empty());
    let served: usize = tsdb
        .select_blocking(&[], i64::MIN, i64::MAX)
        .iter()
        .map(|series| series.samples.len())
        .sum();
    let generated: usize = generated().iter().map(|(_, samples)| samples.len()).sum();
    assert_eq!(served, generated);
}

#[test]
fn csv_and_jsonl_imports_dump_back_the_same_samples() {
    let expected = openmetrics_text();
    for (format, text) in [("csv", csv_text()), ("jsonl", jsonl_text())] {
        let dir = import(format, &text, "5000");
        let data = dir.path().join("data");
        assert_same(&run_ok(&["dump", path_str(&data)]), &expected, format);
    }
    // And jsonl output reads back as jsonl input.
    let dir = import("openmetrics", &expected, "100000");
    let dumped = run_ok(&[
        "dump",
        path_str(&dir.path().join("data")),
        "--format",
        "jsonl",
    ]);
    let again = import("jsonl", &dumped, "100000");
    assert_eq!(
        run_ok(&["dump", path_str(&again.path().join("data"))]),
        expected
    );
}

#[test]
fn bad_input_is_refused_with_its_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.om");
    std::fs::write(&input, "up{job=\"a\"} 1 1700000000\nup{job=\"a\"} 2\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let result = run(&["import", "openmetrics", path_str(&input), path_str(&data)]);
    assert_eq!(result.code, 2);
    assert_eq!(result.stderr.lines().count(), 1, "{}", result.stderr);
    assert!(result.stderr.contains("line 2"), "{}", result.stderr);
    assert!(result.stderr.contains("no timestamp"), "{}", result.stderr);
    assert!(
        result.stderr.contains("nothing was imported"),
        "{}",
        result.stderr
    );
    let blocks: Vec<_> = std::fs::read_dir(data.join("blocks")).unwrap().collect();
    assert!(blocks.is_empty(), "no block written");
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".import"))
        .collect();
    assert!(leftovers.is_empty(), "spill files removed: {leftovers:?}");
}

/// A data directory with every file type: blocks (meta.json, index, chunks, tombstones), a
/// WAL checkpoint and a WAL segment with several records.
fn store_with_every_file_type() -> tempfile::TempDir {
    let dir = import("openmetrics", &openmetrics_text(), "100000");
    let data = dir.path().join("data");
    run_ok(&[
        "delete",
        path_str(&data),
        "--match",
        "node_load1",
        "--max-time",
        &(BASE_MS + 600_000).to_string(),
    ]);
    let tsdb = Tsdb::open(TsdbOptions::new(&data).max_future_ms(None)).unwrap();
    let head_start = BASE_MS + POINTS * STEP_MS + 3_600_000;
    for step in 0..20 {
        let labels = Labels::from_pairs([("__name__", "head_metric"), ("step", "x")]).unwrap();
        let mut batch = WriteBatch::default();
        batch.push(
            labels,
            vec![lookout_model::Sample::new(
                head_start + step * STEP_MS,
                step as f64,
            )],
        );
        tsdb.append(&batch).unwrap();
        if step == 10 {
            tsdb.truncate_head(head_start).unwrap();
        }
    }
    tsdb.close().unwrap();
    drop(tsdb);
    dir
}

/// Flips one bit of `file` at `offset` (from the end when negative).
fn flip(file: &Path, offset: i64) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = if offset < 0 {
        bytes.len() as i64 + offset
    } else {
        offset
    } as usize;
    bytes[at] ^= 0x10;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn verify_names_a_bit_flip_in_each_file_type() {
    let original = store_with_every_file_type();
    let data = original.path().join("data");
    let clean = run(&["verify", path_str(&data)]);
    assert_eq!(clean.code, 0, "{}", clean.stdout);

    let all = files(&data);
    let block_file = |suffix: &str| {
        all.keys()
            .find(|path| path.starts_with("blocks") && path.ends_with(suffix))
            .unwrap_or_else(|| panic!("a block {suffix} in {:?}", all.keys().collect::<Vec<_>>()))
            .clone()
    };
    let checkpoint = all
        .keys()
        .find(|path| path.to_string_lossy().contains("checkpoint."))
        .expect("a checkpoint")
        .clone();
    let segment = all
        .keys()
        .filter(|path| path.starts_with("wal") && path.components().count() == 2)
        .filter(|path| all[*path].len() > 200)
        .max()
        .expect("a WAL segment with records")
        .clone();
    let cases = [
        (block_file("meta.json"), 20),
        (block_file("index"), 10),
        (block_file("chunks/000001"), 30),
        (block_file("tombstones"), -10),
        (checkpoint, 20),
        // Inside the first frame of the segment, so not a torn tail.
        (segment, 14),
    ];
    for (file, offset) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(&data, copy.path());
        flip(&copy.path().join(&file), offset);
        let result = run(&["verify", path_str(copy.path())]);
        assert_eq!(
            result.code,
            1,
            "{} not caught:\n{}",
            file.display(),
            result.stdout
        );
        let named = format!("CORRUPT {}", file.display());
        assert!(
            result.stdout.lines().any(|line| line.starts_with(&named)),
            "{} not named:\n{}",
            file.display(),
            result.stdout
        );
    }
}

#[test]
fn read_only_commands_work_beside_a_running_store_and_writers_are_refused() {
    let original = store_with_every_file_type();
    let data = original.path().join("data");
    let tsdb = Tsdb::open(TsdbOptions::new(&data).max_future_ms(None)).unwrap();
    let before = files(&data);
    let list = run_ok(&["list", path_str(&data)]);
    assert!(list.contains("head (from the WAL)"), "{list}");
    run_ok(&["analyze", path_str(&data), "--json"]);
    let dumped = run_ok(&["dump", path_str(&data), "--match", "head_metric"]);
    assert_eq!(
        dumped.lines().count(),
        21,
        "20 head samples and # EOF:\n{dumped}"
    );
    assert_eq!(run(&["verify", path_str(&data)]).code, 0);
    assert_eq!(files(&data), before, "read-only commands changed nothing");

    for args in [
        vec!["compact", path_str(&data)],
        vec!["delete", path_str(&data), "--match", "head_metric"],
    ] {
        let result = run(&args);
        assert_eq!(result.code, 2, "{args:?}");
        assert_eq!(result.stderr.lines().count(), 1, "{}", result.stderr);
        assert!(
            result.stderr.contains("is locked by another process"),
            "{}",
            result.stderr
        );
        assert!(
            result.stderr.contains("stop the server"),
            "{}",
            result.stderr
        );
    }
    drop(tsdb);
    let result = run(&["compact", path_str(&data)]);
    assert_eq!(result.code, 0, "{}", result.stderr);
}

#[test]
fn delete_removes_the_range_offline() {
    let dir = import("openmetrics", &openmetrics_text(), "100000");
    let data = dir.path().join("data");
    let cut = BASE_MS + 3_600_000;
    let stdout = run_ok(&[
        "delete",
        path_str(&data),
        "--match",
        r#"http_requests_total{instance="host-1"}"#,
        "--max-time",
        &cut.to_string(),
    ]);
    assert!(stdout.starts_with("deleted:"), "{stdout}");
    let dumped = run_ok(&["dump", path_str(&data), "--match", r#"{instance="host-1"}"#]);
    let mut deleted_kept = 0;
    let mut other_early = 0;
    for line in dumped.lines().filter(|line| !line.starts_with('#')) {
        let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let early = (seconds * 1000.0) as i64 <= cut;
        if line.starts_with("http_requests_total") && early {
            deleted_kept += 1;
        }
        if !line.starts_with("http_requests_total") && early {
            other_early += 1;
        }
    }
    assert_eq!(deleted_kept, 0, "deleted range gone");
    assert!(other_early > 0, "other metrics of the instance kept");
    let compacted = run_ok(&[
        "delete",
        path_str(&data),
        "--match",
        "node_load1",
        "--clean-tombstones",
    ]);
    assert!(compacted.contains("blocks rewritten"), "{compacted}");
    assert!(!run_ok(&["dump", path_str(&data)]).contains("node_load1"));
}

#[test]
fn offline_compaction_merges_imported_blocks_and_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.om");
    let expected = openmetrics_text();
    std::fs::write(&input, &expected).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    run_ok(&[
        "import",
        "openmetrics",
        path_str(&input),
        path_str(&data),
        "--no-compact",
    ]);
    let block_count = |data: &Path| std::fs::read_dir(data.join("blocks")).unwrap().count();
    assert_eq!(block_count(&data), 4, "one block per 2 h range");
    let stdout = run_ok(&["compact", path_str(&data)]);
    assert!(stdout.contains("4 blocks before"), "{stdout}");
    assert!(block_count(&data) < 4, "{stdout}");
    assert_same(
        &run_ok(&["dump", path_str(&data)]),
        &expected,
        "after compact",
    );
    assert_eq!(run(&["verify", path_str(&data)]).code, 0);
}
