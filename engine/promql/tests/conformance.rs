//! PromQL conformance: runs Prometheus' own test scripts
//! (`../shared/conformance/promql/upstream/*.test`, beside the repository) and our scripts for
//! SOFALookout's extensions (`testdata/promql/*.test`) through the engine, over a real
//! in-memory TSDB, and judges every case.
//!
//! Cases are split into tiers by `classify_cases.py --tsv` (run with `python3`): `core` cases
//! must all pass; of the `extended` ones at least [`EXTENDED_MIN_PASS_RATIO`] must, and never
//! fewer than [`EXTENDED_MIN_PASSED`] (a ratchet raised as features land), `native`
//! ones (native histograms) are not run, and our own `lookout` cases must all pass. Cases listed
//! in `testdata/promql/SKIPS.md` are run but counted as skipped; one that passes fails the test
//! until its row is removed. Without `../shared` or `python3` the upstream part is skipped.
//!
//! Environment:
//! * `LOOKOUT_PROMQL_ONLY=<file.test>[:<line>]` runs one file or one case (loads still run).
//! * `LOOKOUT_PROMQL_STRICT=1` also checks error texts and annotations, and re-runs instant
//!   cases in range mode and with `@`-pinned selectors (README 1.12).
//! * `LOOKOUT_PROMQL_CONFORMANCE_DIR` reads the upstream scripts from another directory (its
//!   parent must hold `classify_cases.py`).

mod script;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use script::{parse_script, EvalCase, Outcome, RunOptions, Runner, Script, ScriptReport};

/// Non-skipped core cases that may fail.
const CORE_MAX_FAILURES: usize = 0;
/// The share of non-skipped extended cases that must pass.
const EXTENDED_MIN_PASS_RATIO: f64 = 0.95;
/// Extended cases that must pass: what passed when this was last raised. Raise it whenever
/// more pass; the test fails when fewer do (a regression).
const EXTENDED_MIN_PASSED: usize = 464;
/// Non-skipped cases of our own scripts that may fail.
const LOOKOUT_MAX_FAILURES: usize = 0;
/// Failing cases printed one per line; the rest are only counted.
const MAX_PRINTED_FAILURES: usize = 200;

/// Which group of cases a case counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Tier {
    Core,
    Extended,
    Native,
    Lookout,
}

impl Tier {
    fn parse(text: &str) -> Option<Tier> {
        match text {
            "core" => Some(Tier::Core),
            "extended" => Some(Tier::Extended),
            "native" => Some(Tier::Native),
            "lookout" => Some(Tier::Lookout),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Core => "core",
            Tier::Extended => "extended",
            Tier::Native => "native",
            Tier::Lookout => "lookout",
        })
    }
}

/// `file.test` and the line of its `eval` command.
type CaseId = (String, usize);

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn upstream_dir() -> PathBuf {
    match std::env::var_os("LOOKOUT_PROMQL_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repository_root().join("../shared/conformance/promql/upstream"),
    }
}

/// `LOOKOUT_PROMQL_ONLY`: one file, or one case of it.
#[derive(Debug)]
struct CaseFilter {
    file: String,
    line: Option<usize>,
}

impl CaseFilter {
    /// The filter set by `LOOKOUT_PROMQL_ONLY`, if any.
    fn from_env() -> Option<CaseFilter> {
        let spec = std::env::var("LOOKOUT_PROMQL_ONLY").ok()?;
        if spec.trim().is_empty() {
            return None;
        }
        Some(CaseFilter::parse(spec.trim()).unwrap_or_else(|error| panic!("{error}")))
    }

    /// Parses `<file.test>` or `<file.test>:<line>`.
    fn parse(spec: &str) -> Result<CaseFilter, String> {
        let Some((file, line)) = spec.rsplit_once(':') else {
            return Ok(CaseFilter {
                file: spec.to_owned(),
                line: None,
            });
        };
        let line_number = line
            .parse()
            .map_err(|_| format!("LOOKOUT_PROMQL_ONLY={spec:?}: expected <file.test>[:<line>]"))?;
        Ok(CaseFilter {
            file: file.to_owned(),
            line: Some(line_number),
        })
    }

    fn selects_file(&self, file: &str) -> bool {
        self.file == file
    }

    fn selects(&self, file: &str, line: usize) -> bool {
        self.selects_file(file) && self.line.is_none_or(|only| only == line)
    }
}

/// One row of `testdata/promql/SKIPS.md`.
#[derive(Debug)]
struct SkipEntry {
    tier: Tier,
}

/// Reads the skip list file (see [`parse_skip_list`]).
fn read_skip_list(path: &Path) -> Result<HashMap<CaseId, SkipEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    parse_skip_list(&text, &path.display().to_string())
}

/// Parses the rows `| file.test:LINE | tier | reason |` of the markdown table in `text`;
/// `origin` names the file in errors.
fn parse_skip_list(text: &str, origin: &str) -> Result<HashMap<CaseId, SkipEntry>, String> {
    let mut entries = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let cells: Vec<&str> = row
            .trim_end_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let is_header =
            cells[0] == "case" || cells[0].starts_with("---") || cells[0].starts_with(":-");
        if is_header {
            continue;
        }
        let malformed =
            || format!("{origin}:{line_number}: expected `| file.test:LINE | tier | reason |`");
        let [case, tier, reason] = cells[..] else {
            return Err(malformed());
        };
        let (file, case_line_text) = case.rsplit_once(':').ok_or_else(malformed)?;
        let case_line: usize = case_line_text.parse().map_err(|_| malformed())?;
        let case_tier = Tier::parse(tier).ok_or_else(malformed)?;
        if !file.ends_with(".test") || reason.is_empty() {
            return Err(malformed());
        }
        let id = (file.to_owned(), case_line);
        if entries.insert(id, SkipEntry { tier: case_tier }).is_some() {
            return Err(format!("{origin}:{line_number}: {case} is listed twice"));
        }
    }
    Ok(entries)
}

/// The upstream scripts with the tier of every case.
struct Upstream {
    scripts: Vec<Script>,
    tiers: HashMap<CaseId, Tier>,
}

/// Reads the upstream scripts and classifies their cases, or says why it cannot.
fn read_upstream() -> Result<Upstream, String> {
    let dir = upstream_dir();
    if !dir.is_dir() {
        return Err(format!("{} not found", dir.display()));
    }
    let classifier = dir.join("../classify_cases.py");
    let output = std::process::Command::new("python3")
        .arg(&classifier)
        .arg("--tsv")
        .output()
        .map_err(|error| format!("cannot run python3: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 {} --tsv failed ({}): {}",
            classifier.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let mut tiers = HashMap::new();
    for row in String::from_utf8_lossy(&output.stdout).lines().skip(1) {
        let columns: Vec<&str> = row.split('\t').collect();
        let parsed = match columns[..] {
            [file, line, _kind, tier, ..] => line
                .parse::<usize>()
                .ok()
                .zip(Tier::parse(tier))
                .map(|(line, tier)| ((file.to_owned(), line), tier)),
            _ => None,
        };
        let (id, tier) = parsed.ok_or_else(|| format!("unexpected classifier row {row:?}"))?;
        tiers.insert(id, tier);
    }
    Ok(Upstream {
        scripts: read_scripts(&dir)?,
        tiers,
    })
}

/// Parses every `*.test` file of `dir`, in name order.
fn read_scripts(dir: &Path) -> Result<Vec<Script>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "test")
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            let file = path.file_name().expect("a file name").to_string_lossy();
            Ok(parse_script(&file, &text))
        })
        .collect()
}

/// Pass counts of one tier.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    passed: usize,
    failed: usize,
    skipped: usize,
    not_run: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }

    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.not_run += other.not_run;
    }
}

/// Everything the run found, gathered for the report.
struct Tally {
    skips: HashMap<CaseId, SkipEntry>,
    filter: Option<CaseFilter>,
    tiers: BTreeMap<Tier, Counts>,
    file_lines: Vec<String>,
    failures: Vec<String>,
    problems: Vec<String>,
    cases_seen: usize,
    files_seen: BTreeSet<String>,
}

impl Tally {
    fn new(skips: HashMap<CaseId, SkipEntry>, filter: Option<CaseFilter>) -> Tally {
        Tally {
            skips,
            filter,
            tiers: BTreeMap::new(),
            file_lines: Vec::new(),
            failures: Vec::new(),
            problems: Vec::new(),
            cases_seen: 0,
            files_seen: BTreeSet::new(),
        }
    }

    fn in_scope(&self, file: &str, line: usize) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.selects(file, line))
    }

    /// Counts the outcomes of one script; `tier_of` gives each case's tier.
    fn record(&mut self, script: &Script, report: &ScriptReport, tier_of: impl Fn(usize) -> Tier) {
        let file = script.file.as_str();
        self.files_seen.insert(file.to_owned());
        let mut counts: BTreeMap<Tier, Counts> = BTreeMap::new();
        for case in &report.cases {
            if !self.in_scope(file, case.line) {
                continue;
            }
            self.cases_seen += 1;
            let tier = tier_of(case.line);
            let tier_counts = counts.entry(tier).or_default();
            let skip = self.skips.get(&(file.to_owned(), case.line));
            if let Some(entry) = skip {
                if entry.tier != tier {
                    self.problems.push(format!(
                        "{file}:{}: the skip list says tier {}, the case is {tier}",
                        case.line, entry.tier
                    ));
                }
            }
            match (&case.outcome, skip) {
                (Outcome::NotRun, Some(_)) => {
                    tier_counts.not_run += 1;
                    self.problems.push(format!(
                        "{file}:{}: skip list entry for a case that is never run: remove it",
                        case.line
                    ));
                }
                (Outcome::NotRun, None) => tier_counts.not_run += 1,
                (Outcome::Passed, Some(_)) => {
                    tier_counts.skipped += 1;
                    self.problems.push(format!(
                        "{file}:{}: skip list entry now passes: remove it",
                        case.line
                    ));
                }
                (Outcome::Failed(_), Some(_)) => tier_counts.skipped += 1,
                (Outcome::Passed, None) => tier_counts.passed += 1,
                (Outcome::Failed(message), None) => {
                    tier_counts.failed += 1;
                    self.failures
                        .push(format!("{file}:{}: {} — {message}", case.line, case.query));
                }
            }
        }
        if self.filter.is_none() {
            let case_lines: BTreeSet<usize> = report.cases.iter().map(|case| case.line).collect();
            for (skipped_file, line) in self.skips.keys() {
                if skipped_file == file && !case_lines.contains(line) {
                    self.problems
                        .push(format!("{file}:{line}: skip list entry names no eval case"));
                }
            }
        }
        for error in &report.errors {
            self.problems.push(format!("{file}: {error}"));
        }
        if !counts.is_empty() {
            self.file_lines.push(file_line(file, &counts, report));
        }
        for (tier, tier_counts) in counts {
            self.tiers.entry(tier).or_default().add(tier_counts);
        }
    }

    /// Prints the report, the tier counts last, and returns why the test fails (if it does).
    fn finish(mut self, upstream_skipped: Option<&str>) -> Vec<String> {
        if self.filter.is_none() && upstream_skipped.is_none() {
            for (file, line) in self.skips.keys() {
                if !self.files_seen.contains(file) {
                    self.problems.push(format!(
                        "{file}:{line}: skip list entry names an unknown file"
                    ));
                }
            }
        }
        for failure in self.failures.iter().take(MAX_PRINTED_FAILURES) {
            println!("{failure}");
        }
        if self.failures.len() > MAX_PRINTED_FAILURES {
            println!(
                "... and {} more failing cases",
                self.failures.len() - MAX_PRINTED_FAILURES
            );
        }
        println!();
        for problem in &self.problems {
            println!("problem: {problem}");
        }
        println!();
        for line in &self.file_lines {
            println!("{line}");
        }
        println!();

        let mut verdict = Vec::new();
        if self.filter.is_some() && self.cases_seen == 0 {
            verdict.push("LOOKOUT_PROMQL_ONLY matched no case".to_owned());
        }
        if !self.problems.is_empty() {
            verdict.push(format!(
                "{} runner or skip-list problems (see `problem:` lines)",
                self.problems.len()
            ));
        }
        let counts = |tier| self.tiers.get(&tier).copied().unwrap_or_default();
        let core = counts(Tier::Core);
        if core.failed > CORE_MAX_FAILURES {
            verdict.push(format!("{} core cases failed", core.failed));
        }
        let extended = counts(Tier::Extended);
        let extended_run = extended.passed + extended.failed;
        if extended_run > 0 {
            if extended.passed < EXTENDED_MIN_PASSED {
                verdict.push(format!(
                    "{} of {extended_run} extended cases passed, {EXTENDED_MIN_PASSED} did before (a regression)",
                    extended.passed
                ));
            }
            if (extended.passed as f64) < EXTENDED_MIN_PASS_RATIO * extended_run as f64 {
                verdict.push(format!(
                    "{} of {extended_run} extended cases passed, {:.0}% needed",
                    extended.passed,
                    EXTENDED_MIN_PASS_RATIO * 100.0
                ));
            }
        }
        let lookout = counts(Tier::Lookout);
        if lookout.failed > LOOKOUT_MAX_FAILURES {
            verdict.push(format!("{} lookout cases failed", lookout.failed));
        }

        match upstream_skipped {
            Some(reason) => {
                for tier in [Tier::Core, Tier::Extended, Tier::Native] {
                    println!("{tier}: not run ({reason})");
                }
            }
            None => {
                println!("{}", tier_line(Tier::Core, core));
                println!("{}", tier_line(Tier::Extended, extended));
                println!(
                    "native: {} not run (native histograms not supported)",
                    counts(Tier::Native).not_run
                );
            }
        }
        println!("{}", tier_line(Tier::Lookout, lookout));
        verdict
    }
}

fn tier_line(tier: Tier, counts: Counts) -> String {
    format!(
        "{tier}: {}/{} passed, {} skipped, {} failed",
        counts.passed,
        counts.total(),
        counts.skipped,
        counts.failed
    )
}

/// `functions.test: core 250/250, extended 60/73 (1 skipped), native 108 not run`, plus what
/// could not be loaded.
fn file_line(file: &str, counts: &BTreeMap<Tier, Counts>, report: &ScriptReport) -> String {
    let mut parts = Vec::new();
    for (tier, tier_counts) in counts {
        if *tier == Tier::Native {
            parts.push(format!("native {} not run", tier_counts.not_run));
            continue;
        }
        let mut part = format!("{tier} {}/{}", tier_counts.passed, tier_counts.total());
        if tier_counts.skipped > 0 {
            part.push_str(&format!(" ({} skipped)", tier_counts.skipped));
        }
        parts.push(part);
    }
    let mut notes = Vec::new();
    if report.histogram_series > 0 {
        notes.push(format!(
            "{} native-histogram series not loaded",
            report.histogram_series
        ));
    }
    if report.nhcb_loads > 0 {
        notes.push(format!(
            "{} load_with_nhcb loaded without conversion",
            report.nhcb_loads
        ));
    }
    if report.start_timestamp_series > 0 {
        notes.push(format!(
            "{} series' start timestamps dropped",
            report.start_timestamp_series
        ));
    }
    let mut line = format!("{file}: {}", parts.join(", "));
    if !notes.is_empty() {
        line.push_str(&format!(" [{}]", notes.join("; ")));
    }
    line
}

/// Runs scripts and records their outcomes in a [`Tally`].
struct Conformance {
    runtime: tokio::runtime::Runtime,
    runner: Runner,
    tally: Tally,
}

impl Conformance {
    fn selects_file(&self, file: &str) -> bool {
        self.tally
            .filter
            .as_ref()
            .is_none_or(|filter| filter.selects_file(file))
    }

    /// Runs the upstream scripts, tiers from the classifier; native cases are not run.
    fn run_upstream(&mut self, upstream: &Upstream) {
        for script in &upstream.scripts {
            if !self.selects_file(&script.file) {
                continue;
            }
            self.check_classification(script, &upstream.tiers);
            let tier_of = |line: usize| {
                let id = (script.file.clone(), line);
                upstream.tiers.get(&id).copied().unwrap_or(Tier::Core)
            };
            let tally = &self.tally;
            let selected = |case: &EvalCase| {
                tally.in_scope(&script.file, case.line) && tier_of(case.line) != Tier::Native
            };
            let report = self.runtime.block_on(self.runner.run(script, selected));
            self.tally.record(script, &report, tier_of);
        }
    }

    /// The runner and `classify_cases.py` must find the same cases.
    fn check_classification(&mut self, script: &Script, tiers: &HashMap<CaseId, Tier>) {
        for case in script.cases() {
            if !tiers.contains_key(&(script.file.clone(), case.line)) {
                self.tally.problems.push(format!(
                    "{}:{}: classify_cases.py gives this case no tier (counted as core)",
                    script.file, case.line
                ));
            }
        }
        for (file, line) in tiers.keys() {
            if *file == script.file && !script.cases().any(|case| case.line == *line) {
                self.tally.problems.push(format!(
                    "{file}:{line}: classify_cases.py lists a case the runner did not find"
                ));
            }
        }
    }

    /// Runs our own scripts, all of tier `lookout`.
    fn run_lookout(&mut self, scripts: &[Script]) {
        for script in scripts {
            if !self.selects_file(&script.file) {
                continue;
            }
            let tally = &self.tally;
            let selected = |case: &EvalCase| tally.in_scope(&script.file, case.line);
            let report = self.runtime.block_on(self.runner.run(script, selected));
            self.tally.record(script, &report, |_| Tier::Lookout);
        }
    }
}

#[test]
fn promql_test_scripts() {
    let strict = std::env::var("LOOKOUT_PROMQL_STRICT").is_ok_and(|value| value == "1");
    let skips = read_skip_list(&repository_root().join("testdata/promql/SKIPS.md"))
        .unwrap_or_else(|error| panic!("{error}"));
    let lookout_dir = repository_root().join("testdata/promql");
    let lookout_scripts = read_scripts(&lookout_dir).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        !lookout_scripts.is_empty(),
        "no scripts in {}",
        lookout_dir.display()
    );
    let mut conformance = Conformance {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
        runner: Runner::new(RunOptions { strict }),
        tally: Tally::new(skips, CaseFilter::from_env()),
    };
    let strictness = if strict {
        "on"
    } else {
        "off (set LOOKOUT_PROMQL_STRICT=1)"
    };
    println!("strict mode: {strictness}");

    let upstream_skipped = match read_upstream() {
        Ok(upstream) => {
            conformance.run_upstream(&upstream);
            None
        }
        Err(reason) => {
            println!("upstream PromQL scripts skipped: {reason}");
            Some(reason)
        }
    };
    conformance.run_lookout(&lookout_scripts);

    let verdict = conformance.tally.finish(upstream_skipped.as_deref());
    assert!(
        verdict.is_empty(),
        "PromQL conformance: {}",
        verdict.join("; ")
    );
}

#[test]
fn skip_list_rows() {
    let header = "# title\n\n| case | tier | reason |\n|---|---|---|\n";
    let good = format!("{header}| functions.test:12 | core | left-closed window |\n");
    let entries = parse_skip_list(&good, "SKIPS.md").unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[&("functions.test".to_owned(), 12)].tier, Tier::Core);
    for bad_rows in [
        "| functions.test | core | no line |",
        "| functions.test:x | core | bad line |",
        "| functions.test:12 | fancy | bad tier |",
        "| functions.test:12 | core | |",
        "| functions.test:12 | core |",
        "| functions.test:12 | core | a |\n| functions.test:12 | core | twice |",
    ] {
        let text = format!("{header}{bad_rows}\n");
        assert!(parse_skip_list(&text, "SKIPS.md").is_err(), "{bad_rows}");
    }
}

#[test]
fn the_committed_skip_list_parses() {
    let path = repository_root().join("testdata/promql/SKIPS.md");
    read_skip_list(&path).unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn case_filter_spec() {
    let filter = CaseFilter::parse("functions.test:120").unwrap();
    assert!(filter.selects("functions.test", 120));
    assert!(!filter.selects("functions.test", 121));
    assert!(filter.selects_file("functions.test"));
    let whole_file = CaseFilter::parse("functions.test").unwrap();
    assert!(whole_file.selects("functions.test", 7));
    assert!(!whole_file.selects("other.test", 7));
    assert!(CaseFilter::parse("functions.test:x").is_err());
}

/// Every command and case of the upstream scripts (native ones included) must parse, so that
/// a case never fails because of the runner's reading of the format.
#[test]
fn upstream_scripts_parse_cleanly() {
    let dir = upstream_dir();
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return;
    }
    let scripts = read_scripts(&dir).unwrap_or_else(|error| panic!("{error}"));
    let mut problems = Vec::new();
    for script in &scripts {
        for command in &script.commands {
            match command {
                script::Command::Invalid { line, message } => {
                    problems.push(format!("{}:{line}: {message}", script.file));
                }
                script::Command::Load(load) => {
                    for (line, message) in &load.errors {
                        problems.push(format!("{}:{line}: {message}", script.file));
                    }
                }
                script::Command::Eval(case) => {
                    for message in &case.errors {
                        problems.push(format!("{}:{}: {message}", script.file, case.line));
                    }
                }
                script::Command::Clear => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let cases: usize = scripts.iter().map(|script| script.cases().count()).sum();
    assert!(cases > 0, "no eval cases in {}", dir.display());
}
