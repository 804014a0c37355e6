//! Parses every query of the upstream Prometheus PromQL test scripts
//! (`../shared/conformance/promql/upstream/*.test`, relative to the workspace root) and checks
//! that printing and re-parsing each one gives the same tree.
//!
//! Cases marked as expected failures (`eval_fail`, `expect fail`) may fail to parse or parse
//! (most are evaluation errors). Every other case must parse.
//!
//! Set `LOOKOUT_PROMQL_CONFORMANCE_DIR` to read the scripts from elsewhere. Without the
//! directory the test prints why and passes.

use std::path::{Path, PathBuf};

use lookout_promql::parse;

/// One `eval` command of a test script.
struct Case {
    file: String,
    line: usize,
    query: String,
    expect_fail: bool,
}

fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LOOKOUT_PROMQL_CONFORMANCE_DIR") {
        return Some(PathBuf::from(dir));
    }
    // engine/promql -> workspace root -> ../shared/...
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../../../shared/conformance/promql/upstream");
    dir.is_dir().then_some(dir)
}

/// The rest of `line` after skipping `count` whitespace-separated words.
fn after_words(line: &str, count: usize) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..count {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

/// The query of an `eval` line: `eval[_x] instant at <t> <query>` or
/// `eval[_x] range from <a> to <b> step <s> <query>`.
fn query_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.next()?;
    match words.next()? {
        "instant" => after_words(line, 4),
        "range" => after_words(line, 8),
        _ => None,
    }
}

fn read_cases(dir: &Path) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable corpus directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "test"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("readable test script");
        let mut current: Option<Case> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                cases.extend(current.take());
                continue;
            }
            let first = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if first.starts_with("eval") {
                cases.extend(current.take());
                let query = query_of(line)
                    .unwrap_or_else(|| panic!("{file}:{}: malformed eval line", index + 1));
                current = Some(Case {
                    file: file.clone(),
                    line: index + 1,
                    query: query.to_owned(),
                    expect_fail: first == "eval_fail",
                });
            } else if first == "load" || first.starts_with("load") || first == "clear" {
                cases.extend(current.take());
            } else if let Some(case) = current.as_mut() {
                if line.starts_with("expect fail")
                    || line.starts_with("expected_fail_message")
                    || line.starts_with("expected_fail_regexp")
                {
                    case.expect_fail = true;
                }
            }
        }
        cases.extend(current.take());
    }
    cases
}

#[test]
fn upstream_corpus_parses_and_round_trips() {
    let Some(dir) = corpus_dir() else {
        println!(
            "skipped: conformance scripts not found (../shared/conformance/promql/upstream \
             relative to the workspace root; set LOOKOUT_PROMQL_CONFORMANCE_DIR to override)"
        );
        return;
    };
    let cases = read_cases(&dir);
    assert!(
        !cases.is_empty(),
        "no eval cases found in {}",
        dir.display()
    );

    let mut per_file: Vec<(String, usize, usize)> = Vec::new();
    let mut unexpected_failures = Vec::new();
    let mut round_trip_failures = Vec::new();
    let (mut fail_cases, mut fail_cases_rejected) = (0, 0);
    let mut parsed = 0;
    for case in &cases {
        if per_file
            .last()
            .is_none_or(|(file, _, _)| *file != case.file)
        {
            per_file.push((case.file.clone(), 0, 0));
        }
        let entry = per_file.last_mut().unwrap();
        entry.1 += 1;
        let result = parse(&case.query);
        if case.expect_fail {
            fail_cases += 1;
            if let Err(error) = &result {
                fail_cases_rejected += 1;
                println!(
                    "expected failure rejected by the parser: {}:{}: {}  =>  {error}",
                    case.file, case.line, case.query
                );
            }
        }
        match result {
            Ok(expr) => {
                parsed += 1;
                entry.2 += 1;
                let printed = expr.to_string();
                match parse(&printed) {
                    Ok(again) if again == expr => {}
                    Ok(again) => round_trip_failures.push(format!(
                        "{}:{}: {}  printed as  {printed}  re-parsed differently: {again:?}",
                        case.file, case.line, case.query
                    )),
                    Err(error) => round_trip_failures.push(format!(
                        "{}:{}: {}  printed as  {printed}  fails: {error}",
                        case.file, case.line, case.query
                    )),
                }
            }
            Err(error) if !case.expect_fail => unexpected_failures.push(format!(
                "{}:{}: {}  =>  {error}",
                case.file, case.line, case.query
            )),
            Err(_) => {}
        }
    }

    println!("per file (cases / parsed):");
    for (file, total, ok) in &per_file {
        println!("  {file:32} {total:5} {ok:5}");
    }
    println!(
        "parsed {parsed} of {} eval cases; {fail_cases} are expected failures, of which the \
         parser rejects {fail_cases_rejected} (the others fail at evaluation time)",
        cases.len()
    );
    for failure in &unexpected_failures {
        println!("FAILED TO PARSE: {failure}");
    }
    for failure in &round_trip_failures {
        println!("ROUND TRIP: {failure}");
    }
    assert!(
        unexpected_failures.is_empty(),
        "{} queries that should parse did not",
        unexpected_failures.len()
    );
    assert!(
        round_trip_failures.is_empty(),
        "{} queries did not survive printing",
        round_trip_failures.len()
    );
}

#[test]
fn eval_line_parsing() {
    assert_eq!(
        query_of("eval instant at 50m sum by (job) (x)"),
        Some("sum by (job) (x)")
    );
    assert_eq!(
        query_of("eval range from 0 to 10m step 5m   rate(x[5m])"),
        Some("rate(x[5m])")
    );
    assert_eq!(
        query_of("eval_fail instant at 0 -{job=\"api\"}"),
        Some("-{job=\"api\"}")
    );
    assert_eq!(query_of("eval nonsense"), None);
}
