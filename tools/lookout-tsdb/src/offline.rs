//! `compact` and `delete`: offline maintenance through the engine, with the directory's lock
//! held (so never beside a running server).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context};

use crate::common::{
    format_bytes, format_time, offline_options, open_for_writing, resolve_range, spinner,
};
use crate::{hours_to_ms, retention_ms, RangeArgs, StoreArgs};

pub fn compact(dir: &Path, store: &StoreArgs, clean_tombstones: bool) -> anyhow::Result<ExitCode> {
    require_data_dir(dir)?;
    let tsdb = open_for_writing(offline_options(
        dir,
        hours_to_ms(store.block_duration_hours),
        retention_ms(store),
    ))?;
    let before = tsdb.blocks().len();
    let spinner = spinner("compacting");
    let written = tsdb.compact().context("compaction failed")?;
    let cleaned = if clean_tombstones {
        tsdb.clean_tombstones()
            .context("rewriting blocks with deletions failed")?
    } else {
        0
    };
    spinner.finish_and_clear();
    tsdb.close().context("closing the store failed")?;
    for meta in &written {
        println!(
            "wrote block {} {} .. {} level {}: {} series, {} samples",
            meta.id,
            format_time(meta.min_time),
            format_time(meta.max_time),
            meta.compaction.level,
            meta.stats.series,
            meta.stats.samples
        );
    }
    let after = tsdb.blocks();
    println!(
        "{} blocks before, {} after ({}); {} compactions, {} blocks rewritten to drop deletions",
        before,
        after.len(),
        format_bytes(after.iter().map(|block| block.size_bytes()).sum()),
        written.len(),
        cleaned
    );
    Ok(ExitCode::SUCCESS)
}

pub fn delete(dir: &Path, range: &RangeArgs, clean_tombstones: bool) -> anyhow::Result<ExitCode> {
    if range.selector.is_none() {
        return Err(anyhow!(
            "delete needs --match SELECTOR (to delete everything, give --match '{{__name__=~\".+\"}}')"
        ));
    }
    let (matchers, mint, maxt) = resolve_range(range)?;
    require_data_dir(dir)?;
    let tsdb = open_for_writing(offline_options(dir, hours_to_ms(2), None))?;
    let head_series = tsdb
        .head()
        .delete(&matchers, mint, maxt)
        .context("deleting from the head failed")?;
    let mut block_series = 0;
    let mut blocks_touched = 0;
    for block in tsdb.blocks() {
        let affected = block
            .delete(&matchers, mint, maxt)
            .with_context(|| format!("recording deletions in block {}", block.meta().id))?;
        if affected > 0 {
            blocks_touched += 1;
            block_series += affected;
        }
    }
    let cleaned = if clean_tombstones {
        let spinner = spinner("rewriting blocks");
        let cleaned = tsdb
            .clean_tombstones()
            .context("rewriting blocks with deletions failed")?;
        spinner.finish_and_clear();
        cleaned
    } else {
        0
    };
    tsdb.close().context("closing the store failed")?;
    println!(
        "deleted: {head_series} series in the head (logged to the WAL), {block_series} series \
         in {blocks_touched} blocks (tombstones); {cleaned} blocks rewritten"
    );
    Ok(ExitCode::SUCCESS)
}

/// Refuses a path that is not an existing directory, so a typo does not create a store.
pub fn require_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(anyhow!(
            "{} is not a directory; give the server's data directory (--storage.tsdb.path)",
            dir.display()
        ));
    }
    Ok(())
}
