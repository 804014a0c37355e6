//! Golden output of the read-only commands on the committed fixture data directory
//! (`testdata/tsdb-compat/v1`), which they must leave unchanged.

mod support;

use support::{files, fixture_dir, path_str, run, run_ok};

#[test]
fn list_shows_blocks_and_head() {
    let dir = fixture_dir();
    let before = files(&dir);
    insta::assert_snapshot!("list", run_ok(&["list", path_str(&dir)]));
    assert_eq!(files(&dir), before, "list changes nothing");
}

#[test]
fn analyze_tables_and_json() {
    let dir = fixture_dir();
    let before = files(&dir);
    insta::assert_snapshot!(
        "analyze",
        run_ok(&["analyze", path_str(&dir), "--top", "5"])
    );
    let json = run_ok(&["analyze", path_str(&dir), "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["summary"]["series"], 3);
    insta::assert_snapshot!("analyze_json", json);
    assert_eq!(files(&dir), before, "analyze changes nothing");
}

#[test]
fn dump_openmetrics_and_jsonl() {
    let dir = fixture_dir();
    let before = files(&dir);
    // Series 1 around its deleted range (1 200 000 ..= 1 740 000 ms), with the NaN and +Inf
    // samples at 600 000 and 660 000 ms.
    let range = [
        "--match",
        r#"compat_metric{series=~"1|2"}"#,
        "--min-time",
        "540000",
        "--max-time",
        "1860000",
    ];
    let mut args = vec!["dump", path_str(&dir)];
    args.extend(range);
    insta::assert_snapshot!("dump_openmetrics", run_ok(&args));
    args.extend(["--format", "jsonl"]);
    insta::assert_snapshot!("dump_jsonl", run_ok(&args));
    // The head's samples too (after the last block).
    let head = run_ok(&[
        "dump",
        path_str(&dir),
        "--match",
        r#"{series="0"}"#,
        "--min-time",
        "1970-01-01T04:57:00Z",
    ]);
    insta::assert_snapshot!("dump_head", head);
    assert_eq!(files(&dir), before, "dump changes nothing");
}

#[test]
fn verify_passes_the_fixture() {
    let dir = fixture_dir();
    let result = run(&["verify", path_str(&dir)]);
    assert_eq!(result.code, 0, "{}{}", result.stdout, result.stderr);
    insta::assert_snapshot!("verify", result.stdout);
}

#[test]
fn bad_arguments_are_one_clear_line() {
    let dir = fixture_dir();
    let result = run(&["dump", path_str(&dir), "--match", "up{"]);
    assert_eq!(result.code, 2);
    assert_eq!(result.stderr.lines().count(), 1, "{}", result.stderr);
    assert!(
        result.stderr.starts_with("error: bad selector"),
        "{}",
        result.stderr
    );
    let result = run(&["list", "/nonexistent/lookout-data"]);
    assert_eq!(result.code, 2);
    assert_eq!(result.stderr.lines().count(), 1, "{}", result.stderr);
    assert!(
        result.stderr.contains("cannot read data directory"),
        "{}",
        result.stderr
    );
}

#[test]
fn a_directory_that_is_not_a_store_is_refused() {
    let empty = tempfile::tempdir().unwrap();
    for command in ["list", "analyze", "dump", "verify"] {
        let result = run(&[command, path_str(empty.path())]);
        assert_eq!(result.code, 2, "{command}");
        assert!(
            result.stderr.contains("not a Lookout data directory"),
            "{command}: {}",
            result.stderr
        );
    }
}
