//! [`ReadOnlyStore`]: a data directory opened for reading only, without its lock, for tools
//! that inspect a store a server may be running on.
//!
//! Nothing on disk is changed: no lock file is taken or created, the WAL is read with
//! [`wal::replay_read_only`] (no repair, no end marker), blocks that fail verification are
//! reported rather than quarantined, and leftovers (`.tmp`, `.deleting`, blocks a compaction
//! already merged) are skipped rather than deleted. Blocks are immutable and memory-mapped,
//! so a server compacting meanwhile does not disturb a reader that already opened them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lookout_model::Matcher;
use lookout_storage::Series;

use crate::block::Block;
use crate::compact;
use crate::db::{
    is_superseded, remove_samples_in_blocks, BLOCKS_DIR, DELETING_SUFFIX, QUARANTINE_DIR,
};
use crate::error::{Result, TsdbError};
use crate::head::{Head, HeadOptions};
use crate::wal::record::Record;
use crate::wal::{self, ReplayReport};

/// How often [`ReadOnlyStore::open`] starts over when a file vanished under it (a server
/// compacting or checkpointing meanwhile).
const OPEN_ATTEMPTS: usize = 5;

/// A block directory that could not be opened.
#[derive(Debug)]
pub struct UnreadableBlock {
    /// The block's directory name.
    pub id: String,
    /// Why, naming file and offset.
    pub error: TsdbError,
}

/// A data directory opened read-only: its blocks and a head rebuilt from its WAL.
#[derive(Debug)]
pub struct ReadOnlyStore {
    dir: PathBuf,
    blocks: Vec<Arc<Block>>,
    unreadable: Vec<UnreadableBlock>,
    quarantined: Vec<String>,
    head: Head,
    replay: ReplayReport,
}

impl ReadOnlyStore {
    /// Opens `dir` for reading. Fails if `dir` is not a directory; a missing `blocks/` or
    /// `wal/` reads as empty.
    pub fn open(dir: &Path) -> Result<ReadOnlyStore> {
        let metadata = fs::metadata(dir).map_err(|error| TsdbError::io(dir, error))?;
        if !metadata.is_dir() {
            return Err(TsdbError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let mut attempt = 1;
        loop {
            match ReadOnlyStore::open_once(dir, attempt == OPEN_ATTEMPTS) {
                Err(TsdbError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempt < OPEN_ATTEMPTS =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One try; a block file that vanished makes it start over unless it is the `last` try.
    fn open_once(dir: &Path, last: bool) -> Result<ReadOnlyStore> {
        let blocks_dir = dir.join(BLOCKS_DIR);
        let mut names = list_names(&blocks_dir)?;
        names.sort();
        let mut blocks = Vec::new();
        let mut unreadable = Vec::new();
        for name in names {
            if name.ends_with(".tmp") || name.ends_with(DELETING_SUFFIX) {
                continue;
            }
            let path = blocks_dir.join(&name);
            if !path.is_dir() {
                continue;
            }
            match Block::open(&path) {
                Ok(block) => blocks.push(Arc::new(block)),
                Err(TsdbError::Io { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound && !last =>
                {
                    // Deleted meanwhile (compaction or retention): start over.
                    return Err(TsdbError::Io { path, source });
                }
                Err(error) => unreadable.push(UnreadableBlock { id: name, error }),
            }
        }
        blocks.sort_by_key(|block| (block.meta().min_time, block.meta().id.clone()));
        let all = blocks.clone();
        blocks.retain(|block| !is_superseded(block, &all));
        let mut quarantined = list_names(&dir.join(QUARANTINE_DIR))?;
        quarantined.sort();

        let options = HeadOptions {
            max_future_ms: None,
            ..HeadOptions::default()
        };
        let head = Head::new(options, None)?;
        let replay = wal::replay_read_only(&dir.join("wal"), |record| match record {
            Record::Series(entries) => {
                for entry in entries {
                    head.replay_series(entry.id, &entry.labels);
                }
            }
            Record::Samples(samples) => head.replay_samples(&samples),
            Record::Tombstones(tombstones) => head.replay_tombstones(&tombstones),
        })?;
        head.remove_empty_series();
        remove_samples_in_blocks(&head, &blocks)?;
        Ok(ReadOnlyStore {
            dir: dir.to_path_buf(),
            blocks,
            unreadable,
            quarantined,
            head,
            replay,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blocks, oldest first.
    pub fn blocks(&self) -> &[Arc<Block>] {
        &self.blocks
    }

    /// Blocks that failed to open (a server would quarantine them).
    pub fn unreadable(&self) -> &[UnreadableBlock] {
        &self.unreadable
    }

    /// Names of the entries of `quarantine/`.
    pub fn quarantined(&self) -> &[String] {
        &self.quarantined
    }

    /// The head as the WAL describes it.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// What reading the WAL found.
    pub fn replay_report(&self) -> &ReplayReport {
        &self.replay
    }

    /// Matching series with samples in `[mint, maxt]` from the blocks and the head, merged
    /// by labels and in label order (where sources share a timestamp the newest wins). Block
    /// series are decoded one at a time; the head's matching series are read up front.
    pub fn select_iter<'a>(
        &'a self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = Result<Series>> + 'a {
        let mut sources: Vec<Box<dyn Iterator<Item = Result<Series>> + 'a>> = self
            .blocks
            .iter()
            .filter(|block| block.overlaps(mint, maxt))
            .map(|block| {
                Box::new(block.select_iter(matchers, mint, maxt))
                    as Box<dyn Iterator<Item = Result<Series>> + 'a>
            })
            .collect();
        let head_series = self.head.select(matchers, mint, maxt);
        sources.push(Box::new(head_series.into_iter().map(Ok)));
        compact::merge_series(sources)
            .map(|item| item.map(|(labels, samples)| Series { labels, samples }))
    }
}

/// Entry names of `dir`; none when it does not exist.
fn list_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(TsdbError::io(dir, error)),
    };
    Ok(entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect())
}
