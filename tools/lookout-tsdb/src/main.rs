//! `lookout-tsdb`: the operator's tool for Lookout's native store.
//!
//! Read-only commands (`list`, `analyze`, `dump`, `verify`) open a data directory without its
//! lock and change nothing, so they work beside a running server. `compact`, `import` and
//! `delete` open the store as the server does and refuse while a server holds its lock.
//!
//! Depends on the engine (`lookout-tsdb`) and on `lookout-promql` for series selectors only;
//! nothing of HTTP.

mod analyze;
mod common;
mod dump;
mod import;
mod list;
mod offline;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::common::TimeArg;

#[derive(Debug, Parser)]
#[command(
    name = "lookout-tsdb",
    version,
    about = "Inspect, verify, back-fill and maintain a Lookout native data directory",
    long_about = "Inspect, verify, back-fill and maintain a Lookout native data directory.\n\n\
        list, analyze, dump and verify only read (no lock, nothing changed) and work while a \
        server runs on the directory; compact, import and delete need the server stopped."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Blocks and head: time ranges, series, samples, chunks, bytes, compaction level.
    List {
        /// The data directory (the server's --storage.tsdb.path).
        dir: PathBuf,
    },
    /// Where the data's cost comes from: cardinality by metric and label, label-value churn,
    /// bytes per sample per metric, index size, series created per hour.
    Analyze {
        /// The data directory.
        dir: PathBuf,
        /// Rows per table.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Samples of the series a selector matches, as OpenMetrics text or JSON lines.
    Dump {
        /// The data directory.
        dir: PathBuf,
        #[command(flatten)]
        range: RangeArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DumpFormat::Openmetrics)]
        format: DumpFormat,
    },
    /// Checks every checksum and footer of the blocks and the WAL; exit code 1 on corruption.
    Verify {
        /// The data directory.
        dir: PathBuf,
    },
    /// Offline compaction: merges blocks as the server would (needs the server stopped).
    Compact {
        /// The data directory.
        dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Also rewrite blocks that have deletions recorded, reclaiming their bytes now.
        #[arg(long)]
        clean_tombstones: bool,
    },
    /// Back-fills history from a file into sorted, compacted blocks (needs the server
    /// stopped; it serves the blocks at its next start).
    Import {
        /// The input format.
        #[arg(value_enum)]
        format: import::Format,
        /// The input file (`-` for standard input).
        file: PathBuf,
        /// The data directory.
        dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Samples held in memory before a sorted run is spilled to disk; memory use is
        /// about 40 bytes per sample of this, whatever the input size.
        #[arg(long, default_value_t = 1_000_000)]
        buffer_samples: usize,
        /// Where spilled runs go (default: a temporary directory inside the data directory).
        #[arg(long)]
        tmp_dir: Option<PathBuf>,
        /// Leave the imported blocks as written (one per block duration) instead of
        /// compacting them.
        #[arg(long)]
        no_compact: bool,
    },
    /// Deletes the samples a selector matches in a time range (needs the server stopped).
    Delete {
        /// The data directory.
        dir: PathBuf,
        #[command(flatten)]
        range: RangeArgs,
        /// Rewrite the affected blocks now instead of leaving tombstones for compaction.
        #[arg(long)]
        clean_tombstones: bool,
    },
}

#[derive(Debug, Args)]
struct RangeArgs {
    /// Series selector, e.g. 'up{job="api"}' (all series when absent; required by delete).
    #[arg(long = "match", value_name = "SELECTOR")]
    selector: Option<String>,
    /// Start of the range: milliseconds since the epoch or RFC 3339 (inclusive).
    #[arg(long, value_name = "TIME")]
    min_time: Option<TimeArg>,
    /// End of the range: milliseconds since the epoch or RFC 3339 (inclusive).
    #[arg(long, value_name = "TIME")]
    max_time: Option<TimeArg>,
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Time range of the blocks cut from the head (as the server's setting).
    #[arg(long, default_value_t = 2)]
    block_duration_hours: u64,
    /// Time retention of the server (compaction merges up to a tenth of it); 0 for none.
    #[arg(long, default_value_t = 360)]
    retention_hours: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DumpFormat {
    /// OpenMetrics text: `name{labels} value timestamp-in-seconds`, then `# EOF`.
    Openmetrics,
    /// One JSON object per line: `{"metric":{..},"values":[..],"timestamps":[..]}` (ms).
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List { dir } => list::run(&dir),
        Command::Analyze { dir, top, json } => analyze::run(&dir, top, json),
        Command::Dump { dir, range, format } => dump::run(&dir, &range, format),
        Command::Verify { dir } => verify::run(&dir),
        Command::Compact {
            dir,
            store,
            clean_tombstones,
        } => offline::compact(&dir, &store, clean_tombstones),
        Command::Import {
            format,
            file,
            dir,
            store,
            buffer_samples,
            tmp_dir,
            no_compact,
        } => import::run(&import::ImportOptions {
            format,
            file,
            dir,
            block_duration_ms: hours_to_ms(store.block_duration_hours),
            retention_ms: retention_ms(&store),
            buffer_samples,
            tmp_dir,
            compact: !no_compact,
        }),
        Command::Delete {
            dir,
            range,
            clean_tombstones,
        } => offline::delete(&dir, &range, clean_tombstones),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", common::one_line(&error));
            ExitCode::from(2)
        }
    }
}

fn hours_to_ms(hours: u64) -> i64 {
    i64::try_from(hours)
        .unwrap_or(i64::MAX)
        .saturating_mul(3_600_000)
}

fn retention_ms(store: &StoreArgs) -> Option<i64> {
    (store.retention_hours > 0).then(|| hours_to_ms(store.retention_hours))
}
