//! `compare`: Lookout side by side with Prometheus and VictoriaMetrics on one machine, in one
//! run, on identical data.
//!
//! It generates one deterministic data set (before any timing), starts every target on
//! loopback with a fresh data directory (the peers through `../shared/peers/peers.sh`,
//! Lookout from the release build), sends each the same remote-write requests (targets take
//! turns segment by segment, so that a noisy machine hurts all of them alike), then measures
//! memory, a fixed query set (targets interleaved run by run), a restart after SIGKILL (crash
//! recovery), bytes on disk after a graceful stop, and a cold start. It prints a table with Lookout/peer ratios and can write JSON.
//! Every server it starts is stopped when it ends, fails, panics or is interrupted.
//!
//! ```sh
//! cargo build --release -p lookout-server
//! cargo run --release -p lookout-benches --bin compare -- --scale small --json compare.json
//! ```

mod data;
mod ingest;
mod process;
mod procfs;
mod queries;
mod report;
mod targets;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use data::{Dataset, Scale};
use queries::QueryCase;
use report::{QueryFigures, Report, TargetFigures};
use targets::{Programs, Target, TargetKind};

/// Answers of a peer may differ from Lookout's by this much (relative) before a warning:
/// `rate` extrapolation and quantile interpolation differ slightly between the systems.
const AGREEMENT_TOLERANCE: f64 = 0.02;
/// How long the targets rest after ingestion before the settled RSS is read, at least.
const SETTLE_TIME: Duration = Duration::from_secs(15);
/// After [`SETTLE_TIME`], the settled RSS is read once each target is idle (work it does after
/// ingestion, such as writing blocks or merging parts, is not what "settled" means), but no
/// later than this after ingestion.
const SETTLE_MAX: Duration = Duration::from_secs(180);
/// A target using less than this share of one core over a second is idle.
const IDLE_CPU_SHARE: f64 = 0.05;
/// Longest wait for the probe query to see the last samples.
const QUERYABLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Timed runs of one query on one target stop early once they have taken this long together.
const QUERY_BUDGET: Duration = Duration::from_secs(20);
/// Longest one HTTP call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(300);

/// Lookout side by side with Prometheus and VictoriaMetrics.
#[derive(Debug, Parser)]
#[command(name = "compare", about)]
struct Args {
    /// The systems to compare (comma-separated); one that is not installed is skipped.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lookout,prometheus,victoria-metrics"
    )]
    targets: Vec<TargetKind>,
    /// Data set size: small = 10k series × 6 h, medium = 100k × 6 h, large = 1M × 1 h
    /// (15 s scrapes).
    #[arg(long, value_enum, default_value = "small")]
    scale: Scale,
    /// Override the scale's number of series.
    #[arg(long)]
    series: Option<usize>,
    /// Override the scale's hours of data (fractions allowed: `0.25` is 15 minutes).
    #[arg(long)]
    hours: Option<f64>,
    /// Remote-write connections per target.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Timed runs per query and target (after one untimed run).
    #[arg(long, default_value_t = 5)]
    query_runs: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `lookout-server` binary [default: $CARGO_TARGET_DIR or <repo>/target, then
    /// release/lookout-server].
    #[arg(long)]
    lookout_bin: Option<PathBuf>,
    /// `peers.sh` [default: <repo>/../shared/peers/peers.sh].
    #[arg(long)]
    peers_script: Option<PathBuf>,
    /// Directory for the targets' data directories (a fresh temporary directory inside it is
    /// used and removed at the end) [default: the system's temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the data directories (their path is printed).
    #[arg(long)]
    keep_data: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    process::stop_servers_on_signal()?;
    let programs = programs(&args);
    let client = reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .pool_max_idle_per_host(args.connections.max(1) * 2)
        .build()?;
    let started = Instant::now();
    let date = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let machine = machine_description();
    eprintln!("compare: {machine}");

    let (scale_series, scale_hours) = args.scale.size();
    let series = args.series.unwrap_or(scale_series);
    let hours = args.hours.unwrap_or(scale_hours as f64).max(0.01);
    let connections = args.connections.max(1);
    eprintln!("compare: generating {series} series × {hours} h at 15 s ...");
    let generating = Instant::now();
    let dataset = Dataset::generate(series, hours, connections);
    let generate_seconds = generating.elapsed().as_secs_f64();
    eprintln!(
        "compare: {} samples in {} requests, {:.1} MiB of payload, in {generate_seconds:.1} s",
        dataset.samples,
        dataset
            .segments
            .iter()
            .map(|s| s.per_connection.iter().map(Vec::len).sum::<usize>())
            .sum::<usize>(),
        dataset.payload_bytes as f64 / (1024.0 * 1024.0),
    );

    let mut builder = tempfile::Builder::new();
    builder.prefix("lookout-compare-");
    let mut work = match &args.work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .context("creating the work directory")?;
    work.disable_cleanup(args.keep_data);
    if !args.keep_data {
        process::remove_on_signal(work.path());
    }
    eprintln!(
        "compare: samples from {} to {} ms since the epoch; data directories under {}",
        dataset.first_ms,
        dataset.last_ms,
        work.path().display()
    );

    let mut figures = Vec::new();
    let mut live = Vec::new();
    for &kind in &args.targets {
        let mut target_figures = TargetFigures::new(kind, version(kind));
        match start_fresh(kind, &programs, &client, work.path()) {
            Ok(target) => live.push((target, figures.len())),
            Err(reason) => {
                eprintln!("compare: skipping {}: {reason:#}", kind.name());
                target_figures.skipped = Some(format!("{reason:#}"));
            }
        }
        figures.push(target_figures);
    }

    ingest_all(&dataset, &client, &mut live, &mut figures);
    settle(&dataset, &client, &live, &mut figures);
    let warnings = query_all(&dataset, &client, &live, &mut figures, args.query_runs);
    for (target, index) in &mut live {
        figures[*index].peak_rss_overall_bytes = target.pid().and_then(procfs::peak_rss_bytes);
        // A crash first: what the target keeps only in memory must come back from its log.
        eprintln!("compare: killing {}", target.kind.name());
        target.kill();
        match cold_start(target, &programs, &client, &dataset) {
            Ok(elapsed) => figures[*index].restart_after_kill_seconds = Some(elapsed.as_secs_f64()),
            Err(error) => eprintln!(
                "compare: restart after kill of {}: {error:#}",
                target.kind.name()
            ),
        }
        eprintln!("compare: stopping {}", target.kind.name());
        target.stop();
        let bytes = procfs::dir_bytes(&target.data_dir());
        figures[*index].disk_bytes = Some(bytes);
        figures[*index].disk_bytes_per_sample = Some(bytes as f64 / dataset.samples as f64);
    }
    for (target, index) in &mut live {
        match cold_start(target, &programs, &client, &dataset) {
            Ok(elapsed) => figures[*index].cold_start_seconds = Some(elapsed.as_secs_f64()),
            Err(error) => eprintln!("compare: cold start of {}: {error:#}", target.kind.name()),
        }
        target.stop();
    }

    let report = Report {
        date,
        machine,
        scale: match (args.series, args.hours) {
            (None, None) => format!("{:?}", args.scale).to_lowercase(),
            _ => "custom".to_owned(),
        },
        series: dataset.series,
        samples: dataset.samples,
        connections,
        generate_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        warnings,
        targets: figures,
    };
    println!(
        "{} series × {hours} h ({} samples), {connections} connections, {}; {}",
        report.series, report.samples, report.date, report.machine
    );
    println!("↑ higher is better, ↓ lower is better; ratios are Lookout ÷ peer");
    print!("{}", report::table(&report));
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    for target in &report.targets {
        if let Some(error) = &target.first_error {
            println!(
                "{}: {} requests refused, first: {error}",
                target.target.name(),
                target.failed_requests
            );
        }
        if let Some(reason) = &target.skipped {
            println!("{}: skipped: {reason}", target.target.name());
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("compare: wrote {}", path.display());
    }
    eprintln!("compare: done in {:.0} s", report.total_seconds);
    Ok(())
}

/// Where the programs are, from the flags or next to this source tree.
fn programs(args: &Args) -> Programs {
    let repository = targets::repository_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repository.join("target"), PathBuf::from);
    Programs {
        lookout: args
            .lookout_bin
            .clone()
            .unwrap_or_else(|| target_dir.join("release").join("lookout-server")),
        peers_script: args
            .peers_script
            .clone()
            .unwrap_or_else(|| repository.join("../shared/peers/peers.sh")),
    }
}

/// A started target with a fresh data directory, or why there is none.
fn start_fresh(
    kind: TargetKind,
    programs: &Programs,
    client: &reqwest::blocking::Client,
    work: &std::path::Path,
) -> anyhow::Result<Target> {
    if let Some(reason) = programs.missing(kind) {
        anyhow::bail!(reason);
    }
    let mut target = Target::new(kind, work.join(kind.name()))?;
    target.start(programs, client)?;
    eprintln!(
        "compare: {} ready at {} (pid {})",
        kind.name(),
        target.base_url(),
        target.pid().unwrap_or_default()
    );
    Ok(target)
}

/// Sends the data set to every live target, segment by segment, rotating which target goes
/// first; then waits for each to make the last samples queryable.
fn ingest_all(
    dataset: &Dataset,
    client: &reqwest::blocking::Client,
    live: &mut [(Target, usize)],
    figures: &mut [TargetFigures],
) {
    let cpu_before: Vec<Option<f64>> = live
        .iter()
        .map(|(target, _)| target.pid().and_then(procfs::cpu_seconds))
        .collect();
    let mut busy = vec![Duration::ZERO; live.len()];
    let mut queryable_after = vec![None; live.len()];
    let last_segment = dataset.segments.len().saturating_sub(1);
    for (number, segment) in dataset.segments.iter().enumerate() {
        for turn in 0..live.len() {
            let slot = (number + turn) % live.len();
            let (target, index) = &live[slot];
            let outcome = ingest::send_segment(client, &target.write_url(), segment);
            busy[slot] += outcome.elapsed;
            let target_figures = &mut figures[*index];
            target_figures.failed_requests += outcome.failed_requests;
            if target_figures.first_error.is_none() {
                target_figures.first_error = outcome.first_error;
            }
            if number == last_segment {
                // Before the next target's turn, so that nothing else runs meanwhile.
                match wait_queryable(client, target, dataset, Instant::now()) {
                    Ok(elapsed) => queryable_after[slot] = Some(elapsed.as_secs_f64()),
                    Err(error) => {
                        eprintln!("compare: {} never queryable: {error:#}", target.kind.name())
                    }
                }
            }
        }
        eprintln!(
            "compare: segment {}/{} sent to every target",
            number + 1,
            dataset.segments.len()
        );
    }
    for (slot, (target, index)) in live.iter().enumerate() {
        let target_figures = &mut figures[*index];
        let pid = target.pid();
        let cpu_after = pid.and_then(procfs::cpu_seconds);
        let busy_seconds = busy[slot].as_secs_f64();
        target_figures.queryable_after_seconds = queryable_after[slot];
        target_figures.ingest_seconds = Some(busy_seconds);
        target_figures.samples_per_second = Some(dataset.samples as f64 / busy_seconds);
        if let (Some(before), Some(after)) = (cpu_before[slot], cpu_after) {
            target_figures.ingest_cpu_seconds = Some(after - before);
            target_figures.samples_per_cpu_second = Some(dataset.samples as f64 / (after - before));
        }
        target_figures.peak_rss_ingest_bytes = pid.and_then(procfs::peak_rss_bytes);
    }
}

/// Polls the probe query until it counts every probe series at the last scrape.
fn wait_queryable(
    client: &reqwest::blocking::Client,
    target: &Target,
    dataset: &Dataset,
    since: Instant,
) -> anyhow::Result<Duration> {
    let query = dataset.probe_query();
    let expected = dataset.probe_series as f64;
    let mut last_seen = None;
    while since.elapsed() < QUERYABLE_TIMEOUT {
        match queries::instant_value(client, &target.base_url(), &query, dataset.probe_time_ms()) {
            Ok(Some(count)) if count == expected => return Ok(since.elapsed()),
            Ok(seen) => last_seen = seen,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!(
        "after {QUERYABLE_TIMEOUT:?} the probe counts {last_seen:?} series, not {expected}"
    )
}

/// Waits until process `pid` uses less than [`IDLE_CPU_SHARE`] of a core over a second, or
/// until `deadline`.
fn wait_until_idle(pid: u32, deadline: std::time::Instant) {
    while std::time::Instant::now() < deadline {
        let Some(before) = procfs::cpu_seconds(pid) else {
            return;
        };
        std::thread::sleep(Duration::from_secs(1));
        let Some(after) = procfs::cpu_seconds(pid) else {
            return;
        };
        if after - before < IDLE_CPU_SHARE {
            return;
        }
    }
}

/// Flushes (where a target has an endpoint for it), rests until each target is idle, and
/// reads each target's RSS.
fn settle(
    dataset: &Dataset,
    client: &reqwest::blocking::Client,
    live: &[(Target, usize)],
    figures: &mut [TargetFigures],
) {
    for (target, _) in live {
        if let Err(error) = target.flush(client) {
            eprintln!("compare: flushing {}: {error:#}", target.kind.name());
        }
    }
    let rested = std::time::Instant::now();
    std::thread::sleep(SETTLE_TIME);
    for (target, index) in live {
        if let Some(pid) = target.pid() {
            wait_until_idle(pid, rested + SETTLE_MAX);
            eprintln!(
                "compare: {} settled {:.0} s after ingestion",
                target.kind.name(),
                rested.elapsed().as_secs_f64()
            );
        }
        let rss = target.pid().and_then(procfs::rss_bytes);
        figures[*index].settled_rss_bytes = rss;
        figures[*index].settled_rss_bytes_per_series =
            rss.map(|bytes| bytes as f64 / dataset.series as f64);
    }
}

/// Runs the query set: once on every target to compare the answers, then `runs` timed rounds
/// in which each query goes to every target in turn (rotating who goes first). Returns the
/// disagreements.
fn query_all(
    dataset: &Dataset,
    client: &reqwest::blocking::Client,
    live: &[(Target, usize)],
    figures: &mut [TargetFigures],
    runs: usize,
) -> Vec<String> {
    let cases = queries::query_set(dataset);
    for (_, index) in live {
        figures[*index].queries = cases
            .iter()
            .map(|case| QueryFigures {
                name: case.name.clone(),
                ..QueryFigures::default()
            })
            .collect();
    }
    eprintln!(
        "compare: {} queries, first run (answers compared)",
        cases.len()
    );
    for (number, case) in cases.iter().enumerate() {
        for (target, index) in live {
            let query_figures = &mut figures[*index].queries[number];
            match queries::run(client, &target.base_url(), case) {
                Ok((_, summary)) => query_figures.summary = Some(summary),
                Err(error) => query_figures.error = Some(format!("{error:#}")),
            }
        }
    }
    let warnings = disagreements(&cases, live, figures);
    for warning in &warnings {
        eprintln!("compare: warning: {warning}");
    }
    let mut spent = vec![vec![Duration::ZERO; live.len()]; cases.len()];
    for run in 0..runs {
        eprintln!("compare: timed run {}/{runs}", run + 1);
        for (number, case) in cases.iter().enumerate() {
            for turn in 0..live.len() {
                let slot = (run + number + turn) % live.len();
                let (target, index) = &live[slot];
                let query_figures = &mut figures[*index].queries[number];
                if query_figures.error.is_some() || spent[number][slot] > QUERY_BUDGET {
                    continue;
                }
                match queries::run(client, &target.base_url(), case) {
                    Ok((elapsed, _)) => {
                        spent[number][slot] += elapsed;
                        query_figures.seconds.push(elapsed.as_secs_f64());
                    }
                    Err(error) => query_figures.error = Some(format!("{error:#}")),
                }
            }
        }
    }
    warnings
}

/// Queries whose answers differ between Lookout (or the first target) and another target.
fn disagreements(
    cases: &[QueryCase],
    live: &[(Target, usize)],
    figures: &[TargetFigures],
) -> Vec<String> {
    let Some(&(_, reference)) = live
        .iter()
        .find(|(target, _)| target.kind == TargetKind::Lookout)
        .or(live.first())
    else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for (number, case) in cases.iter().enumerate() {
        let ours = &figures[reference].queries[number];
        for (target, index) in live {
            if *index == reference {
                continue;
            }
            let theirs = &figures[*index].queries[number];
            let agree = match (&ours.summary, &theirs.summary) {
                (Some(a), Some(b)) => a.agrees_with(b, AGREEMENT_TOLERANCE),
                _ => false,
            };
            if !agree {
                warnings.push(format!(
                    "{}: {} answered {:?}{}, {} answered {:?}{}",
                    case.name,
                    figures[reference].target.name(),
                    ours.summary,
                    ours.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    target.kind.name(),
                    theirs.summary,
                    theirs
                        .error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                ));
            }
        }
    }
    warnings
}

/// Restarts `target` on its data and times it until the probe query sees the last scrape.
fn cold_start(
    target: &mut Target,
    programs: &Programs,
    client: &reqwest::blocking::Client,
    dataset: &Dataset,
) -> anyhow::Result<Duration> {
    eprintln!("compare: cold start of {}", target.kind.name());
    let started = Instant::now();
    target.start(programs, client)?;
    wait_queryable(client, target, dataset, started)
}

/// The first line a program prints, or "" (for the record in the table's header).
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|output| {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn version(kind: TargetKind) -> String {
    match kind {
        TargetKind::Lookout => {
            let repository = targets::repository_root();
            let commit = command_line(
                "git",
                &[
                    "-C",
                    &repository.display().to_string(),
                    "rev-parse",
                    "--short",
                    "HEAD",
                ],
            );
            format!("lookout-server at {commit}")
        }
        TargetKind::Prometheus => command_line("prometheus", &["--version"]),
        // The Debian build's `-version` prints nothing.
        TargetKind::VictoriaMetrics => command_line("dpkg-query", &["-W", "victoria-metrics"]),
    }
}

/// CPU count and model, memory, kernel.
fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {memory_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}
