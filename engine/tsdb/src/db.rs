//! [`Tsdb`]: the engine as one object — data directory, lock, WAL replay, head — and its
//! [`Storage`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lookout_model::{LabelLimits, Labels, Matcher};
use lookout_storage::{
    Capabilities, DeleteRequest, LabelRequest, OutOfOrderPolicy, RejectReason, SelectRequest,
    Series, SeriesStream, Storage, StorageError, StorageResult, WriteBatch, WriteOutcome,
};
use parking_lot::{Mutex, RwLock};

use crate::block::writer::write_block;
use crate::block::{Block, BlockMeta, ChunkEncoding, Compaction};
use crate::compact;
use crate::error::{Result, TsdbError};
use crate::head::{Head, HeadOptions, SeriesRef, PARALLEL_LABELS};
use crate::wal::record::Record;
use crate::wal::{self, CheckpointReport, FsyncPolicy, ReplayReport, Wal, WalOptions};

/// Series per batch of a [`SeriesStream`].
const SERIES_PER_BATCH: usize = 64;

/// How to open a [`Tsdb`]. Build with [`TsdbOptions::new`] and the setters; validated by
/// [`Tsdb::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsdbOptions {
    dir: PathBuf,
    wal: Option<WalOptions>,
    head: HeadOptions,
    block_duration_ms: i64,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    auto_compaction: bool,
    background_maintenance: bool,
    persist_head_on_close: bool,
}

/// Default time retention: 15 days, as Prometheus.
pub const DEFAULT_RETENTION_MS: i64 = 15 * 24 * 3_600_000;

/// Default time range of a block cut from the head: 2 hours.
pub const DEFAULT_BLOCK_DURATION_MS: i64 = 2 * 3_600_000;

impl TsdbOptions {
    /// Defaults for a data directory: WAL on, 64 MiB segments, fsync every second.
    pub fn new(dir: impl Into<PathBuf>) -> TsdbOptions {
        TsdbOptions {
            dir: dir.into(),
            wal: Some(WalOptions::default()),
            head: HeadOptions::default(),
            block_duration_ms: DEFAULT_BLOCK_DURATION_MS,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            auto_compaction: true,
            background_maintenance: false,
            persist_head_on_close: false,
        }
    }

    /// Whether [`Tsdb::close`] writes the head's samples into blocks and empties the WAL
    /// (off by default; `lookout-server` turns it on). On: a graceful stop leaves only
    /// compact columnar blocks on disk, and the next open reads no WAL, at the price of
    /// encoding the head at stop (about a second per ten million samples on two cores). The
    /// last block then ends just after the newest sample, not on a block boundary, so that the
    /// head accepts the following samples in order after a restart; the next cut overlaps it
    /// and compaction merges the two. Off: the WAL and head chunks stay and are replayed.
    pub fn persist_head_on_close(mut self, enabled: bool) -> TsdbOptions {
        self.persist_head_on_close = enabled;
        self
    }

    /// Where block cuts, compaction and retention run. Off (the default): on the thread of
    /// the append that finds the head has grown past one and a half block durations, which
    /// then waits for them; simple and deterministic. On: on a maintenance thread of the
    /// store, which that append only wakes, so no write waits for a block to be written (what
    /// a server wants). [`Tsdb::close`] waits for running maintenance.
    pub fn background_maintenance(mut self, enabled: bool) -> TsdbOptions {
        self.background_maintenance = enabled;
        self
    }

    /// Whether appends that cut a block also run compaction and retention (on by default);
    /// when off, [`Tsdb::compact`] and [`Tsdb::apply_retention`] run them.
    pub fn auto_compaction(mut self, enabled: bool) -> TsdbOptions {
        self.auto_compaction = enabled;
        self
    }

    /// Blocks whose whole range is older than this (measured from the newest sample stored)
    /// are deleted; `None` keeps everything. 15 days by default. Compaction merges blocks up
    /// to a tenth of it.
    pub fn retention_ms(mut self, millis: Option<i64>) -> TsdbOptions {
        self.retention_ms = millis;
        self
    }

    /// The oldest blocks are deleted while all blocks together take more than this many bytes
    /// (blocks only; the WAL and the head are not counted). Off by default.
    pub fn retention_bytes(mut self, bytes: Option<u64>) -> TsdbOptions {
        self.retention_bytes = bytes;
        self
    }

    /// Time range of each block cut from the head (2 h by default). The head is cut once it
    /// spans one and a half of these.
    pub fn block_duration_ms(mut self, millis: i64) -> TsdbOptions {
        self.block_duration_ms = millis;
        self
    }

    /// Turns the WAL off: nothing survives a restart (for benchmarks and throwaway stores).
    pub fn without_wal(mut self) -> TsdbOptions {
        self.wal = None;
        self
    }

    /// The WAL sync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> TsdbOptions {
        if let Some(wal) = &mut self.wal {
            wal.fsync = policy;
        }
        self
    }

    /// The WAL segment size in bytes.
    pub fn wal_segment_bytes(mut self, bytes: u64) -> TsdbOptions {
        if let Some(wal) = &mut self.wal {
            wal.segment_bytes = bytes;
        }
        self
    }

    /// Label validation and size limits for writes.
    pub fn label_limits(mut self, limits: LabelLimits) -> TsdbOptions {
        self.head.label_limits = limits;
        self
    }

    /// How far behind the newest sample a sample may arrive and still be stored (1 h by
    /// default, 0 to refuse out-of-order samples).
    pub fn out_of_order_window_ms(mut self, millis: i64) -> TsdbOptions {
        self.head.out_of_order_window_ms = millis;
        self
    }

    /// How far ahead of the wall clock a sample may be (1 day by default; `None` accepts any
    /// timestamp).
    pub fn max_future_ms(mut self, millis: Option<i64>) -> TsdbOptions {
        self.head.max_future_ms = millis;
        self
    }

    /// The cardinality budget: most series the head may hold (`None`, the default: no
    /// limit). Beyond it samples of new series are refused as `series_limit`; series the
    /// head holds keep being written.
    pub fn max_series(mut self, series: Option<u64>) -> TsdbOptions {
        self.head.max_series = series;
        self
    }

    /// Samples per chunk before it is cut.
    pub fn chunk_samples(mut self, samples: usize) -> TsdbOptions {
        self.head.chunk_samples = samples;
        self
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A block set aside at open because it failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedBlock {
    /// The block's directory name.
    pub id: String,
    /// Where it was moved.
    pub moved_to: PathBuf,
    /// What was wrong, naming file and offset.
    pub error: String,
}

#[derive(Debug)]
struct Inner {
    head: Head,
    dir: Option<PathBuf>,
    replay: ReplayReport,
    block_duration_ms: i64,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    auto_compaction: bool,
    persist_head_on_close: bool,
    /// Open blocks, oldest first.
    blocks: RwLock<Vec<Arc<Block>>>,
    quarantined: Vec<QuarantinedBlock>,
    /// Serialises block cuts, compaction and retention.
    cutting: Mutex<()>,
    /// Wakes the maintenance thread, when maintenance runs in the background.
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    /// Set by [`Tsdb::close`]: no more background maintenance.
    closed: std::sync::atomic::AtomicBool,
    /// The maintenance thread, joined by [`Tsdb::close`].
    maintenance: Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: Option<File>,
}

/// The native engine. Cheap to clone; all clones share one store.
#[derive(Debug, Clone)]
pub struct Tsdb {
    inner: Arc<Inner>,
}

/// What a head truncation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncateReport {
    /// Series removed because no samples were left.
    pub series_removed: u64,
    /// The WAL checkpoint written, if the store has a WAL.
    pub checkpoint: Option<CheckpointReport>,
}

impl Tsdb {
    /// Opens (creating if needed) the store in `options.dir`: takes the directory lock,
    /// replays the WAL into the head and starts a new WAL segment.
    pub fn open(options: TsdbOptions) -> Result<Tsdb> {
        options.head.validate()?;
        validate_block_duration(options.block_duration_ms)?;
        let dir = options.dir.clone();
        fs::create_dir_all(&dir).map_err(|error| TsdbError::io(&dir, error))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|error| TsdbError::io(&lock_path, error))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(TsdbError::Locked { dir }),
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(TsdbError::io(&lock_path, error))
            }
        }
        let (blocks, quarantined) = open_blocks(&dir)?;
        let mut head = Head::new(options.head, None)?;
        head.use_chunk_files(&dir.join(HEAD_CHUNKS_DIR))?;
        let mut replay = ReplayReport::default();
        if let Some(wal_options) = options.wal {
            let wal_dir = dir.join("wal");
            replay = wal::replay(&wal_dir, |record| match record {
                Record::Series(entries) => {
                    for entry in entries {
                        head.replay_series(entry.id, &entry.labels);
                    }
                }
                Record::Samples(samples) => head.replay_samples(&samples),
                Record::Tombstones(tombstones) => head.replay_tombstones(&tombstones),
            })?;
            head.remove_empty_series();
            // If the process stopped between writing a block and checkpointing the WAL, the
            // head now holds samples the blocks hold too: drop those from the head.
            remove_samples_in_blocks(&head, &blocks)?;
            tracing::info!(
                records = replay.records,
                segments = replay.segments.len(),
                checkpoint = ?replay.checkpoint,
                torn_tail = replay.torn_tail.is_some(),
                corruption = replay.corruption.is_some(),
                "wal replayed"
            );
            head.set_wal(Wal::open(&wal_dir, wal_options, replay.next_segment)?);
        }
        if let Some(last) = blocks.last() {
            head.set_min_valid_time(last.meta().max_time);
        }
        let (wake, woken) = if options.background_maintenance {
            let (wake, woken) = std::sync::mpsc::sync_channel(1);
            (Some(wake), Some(woken))
        } else {
            (None, None)
        };
        let tsdb = Tsdb {
            inner: Arc::new(Inner {
                head,
                dir: Some(dir),
                replay,
                block_duration_ms: options.block_duration_ms,
                retention_ms: options.retention_ms,
                retention_bytes: options.retention_bytes,
                auto_compaction: options.auto_compaction,
                persist_head_on_close: options.persist_head_on_close,
                blocks: RwLock::new(blocks),
                quarantined,
                cutting: Mutex::new(()),
                wake,
                closed: Default::default(),
                maintenance: Mutex::new(None),
                _lock: Some(lock),
            }),
        };
        if let Some(woken) = woken {
            let store = Arc::downgrade(&tsdb.inner);
            let thread = std::thread::Builder::new()
                .name("lookout-tsdb-maintenance".into())
                .spawn(move || maintenance_thread(store, woken))
                .map_err(|error| TsdbError::io(tsdb.dir().unwrap_or(Path::new(".")), error))?;
            *tsdb.inner.maintenance.lock() = Some(thread);
            // Data replayed from the WAL may already need a cut.
            tsdb.wake_maintenance();
        }
        Ok(tsdb)
    }

    /// A store with no directory and no WAL: everything is lost when it is dropped.
    pub fn in_memory(options: HeadOptions) -> Result<Tsdb> {
        Ok(Tsdb {
            inner: Arc::new(Inner {
                head: Head::new(options, None)?,
                dir: None,
                replay: ReplayReport::default(),
                block_duration_ms: DEFAULT_BLOCK_DURATION_MS,
                retention_ms: None,
                retention_bytes: None,
                auto_compaction: false,
                persist_head_on_close: false,
                blocks: RwLock::new(Vec::new()),
                quarantined: Vec::new(),
                cutting: Mutex::new(()),
                wake: None,
                closed: Default::default(),
                maintenance: Mutex::new(None),
                _lock: None,
            }),
        })
    }

    /// The head.
    pub fn head(&self) -> &Head {
        &self.inner.head
    }

    /// The data directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// What the WAL replay at open found.
    pub fn replay_report(&self) -> &ReplayReport {
        &self.inner.replay
    }

    /// Writes the engine's self-metrics in the Prometheus text format (cheap counters only,
    /// safe to scrape often).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let head = &self.inner.head;
        let counters = head.counters();
        metric(
            out,
            "lookout_tsdb_head_series",
            "gauge",
            "Series in the head.",
            head.series_count(),
        );
        metric(
            out,
            "lookout_tsdb_head_samples_appended_total",
            "counter",
            "Samples stored in the head.",
            counters.samples_appended.load(Relaxed),
        );
        metric(
            out,
            "lookout_tsdb_head_series_created_total",
            "counter",
            "Series created in the head.",
            counters.series_created.load(Relaxed),
        );
        metric(
            out,
            "lookout_tsdb_head_series_limit",
            "gauge",
            "The cardinality budget: most series the head may hold (0: no limit).",
            head.options().max_series.unwrap_or(0),
        );
        metric(
            out,
            "lookout_tsdb_head_series_removed_total",
            "counter",
            "Series removed from the head (deleted or truncated).",
            counters.series_removed.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP lookout_tsdb_samples_rejected_total Samples refused, by reason."
        );
        let _ = writeln!(out, "# TYPE lookout_tsdb_samples_rejected_total counter");
        for (reason, count) in RejectReason::ALL.iter().zip(&counters.rejected) {
            let _ = writeln!(
                out,
                "lookout_tsdb_samples_rejected_total{{reason=\"{reason}\"}} {}",
                count.load(Relaxed)
            );
        }
        let blocks = self.blocks();
        metric(
            out,
            "lookout_tsdb_blocks",
            "gauge",
            "Blocks open.",
            blocks.len() as u64,
        );
        metric(
            out,
            "lookout_tsdb_blocks_bytes",
            "gauge",
            "Bytes of the open blocks on disk.",
            blocks.iter().map(|block| block.size_bytes()).sum(),
        );
        metric(
            out,
            "lookout_tsdb_quarantined_blocks",
            "gauge",
            "Blocks moved to quarantine/ at open because they failed verification.",
            self.inner.quarantined.len() as u64,
        );
        if let Some(wal) = head.wal() {
            let wal_metrics = wal.metrics();
            metric(
                out,
                "lookout_wal_bytes_written_total",
                "counter",
                "Bytes written to WAL segments.",
                wal_metrics.bytes_written.load(Relaxed),
            );
            metric(
                out,
                "lookout_wal_group_commits_total",
                "counter",
                "WAL group commits.",
                wal_metrics.flushes.load(Relaxed),
            );
            metric(
                out,
                "lookout_wal_fsyncs_total",
                "counter",
                "WAL fdatasync calls.",
                wal_metrics.fsyncs.load(Relaxed),
            );
            metric(
                out,
                "lookout_wal_segments_created_total",
                "counter",
                "WAL segments created.",
                wal_metrics.segments_created.load(Relaxed),
            );
        }
        let replay = &self.inner.replay;
        metric(
            out,
            "lookout_wal_replay_torn_tails_repaired",
            "gauge",
            "Torn WAL tails cut off at the last open (0 or 1).",
            u64::from(replay.torn_tail.is_some()),
        );
        metric(
            out,
            "lookout_wal_replay_corruptions",
            "gauge",
            "WAL corruptions that stopped the last replay early (0 or 1).",
            u64::from(replay.corruption.is_some()),
        );
    }

    /// Blocks set aside at open.
    pub fn quarantined(&self) -> &[QuarantinedBlock] {
        &self.inner.quarantined
    }

    /// The open blocks, oldest first.
    pub fn blocks(&self) -> Vec<Arc<Block>> {
        self.inner.blocks.read().clone()
    }

    /// Writes a batch and waits for the WAL (blocking; see [`Storage::write`] for async).
    /// Cuts a block when the head has grown past one and a half block durations (in this
    /// call, on the writer's thread, for now).
    pub fn append(&self, batch: &WriteBatch) -> Result<WriteOutcome> {
        let outcome = self.inner.head.append(batch)?;
        if self.head_needs_cut() {
            if self.inner.wake.is_some() {
                self.wake_maintenance();
            } else if let Some(_cutting) = self.inner.cutting.try_lock() {
                self.maintain_locked()?;
            }
        }
        Ok(outcome)
    }

    /// Cuts blocks while the head needs it, then compacts and applies retention (with auto
    /// compaction). The caller holds `cutting`.
    fn maintain_locked(&self) -> Result<()> {
        while self.head_needs_cut() {
            if self.cut_block_locked()?.is_none() {
                break;
            }
        }
        if self.inner.auto_compaction {
            self.compact_locked()?;
            self.apply_retention_locked()?;
        }
        Ok(())
    }

    /// Asks the maintenance thread for a round (a no-op when one is already pending).
    fn wake_maintenance(&self) {
        if let Some(wake) = &self.inner.wake {
            let _ = wake.try_send(());
        }
    }

    fn head_needs_cut(&self) -> bool {
        if self.inner.dir.is_none() {
            return false;
        }
        let duration = self.inner.block_duration_ms;
        self.inner
            .head
            .time_range()
            .is_some_and(|(min_time, max_time)| {
                max_time.saturating_sub(min_time) >= duration / 2 * 3
            })
    }

    /// Cuts the oldest block-aligned range of the head into a block, if the head spans one
    /// and a half block durations. Returns the new block's metadata.
    pub fn cut_block(&self) -> Result<Option<BlockMeta>> {
        let _cutting = self.inner.cutting.lock();
        if !self.head_needs_cut() {
            return Ok(None);
        }
        self.cut_block_locked()
    }

    /// Cuts the block holding the head's oldest sample; `None` when no block can make
    /// progress (the oldest sample sits at the very end of the time axis).
    fn cut_block_locked(&self) -> Result<Option<BlockMeta>> {
        let head = &self.inner.head;
        let duration = self.inner.block_duration_ms;
        let (head_min, _) = head
            .time_range()
            .expect("a head that needs a cut has samples");
        // Aligned to the duration; saturating at the ends of the i64 time axis.
        let block_min = head_min.saturating_sub(head_min.rem_euclid(duration));
        let block_max = block_min.saturating_add(duration);
        if block_max <= head_min {
            return Ok(None);
        }
        self.write_head_range(block_min, block_max, ChunkEncoding::Xor)
            .map(Some)
    }

    /// Writes the head's samples in `[block_min, block_max)` as a level-1 block, opens it and
    /// drops those samples from the head and the WAL.
    fn write_head_range(
        &self,
        block_min: i64,
        block_max: i64,
        encoding: ChunkEncoding,
    ) -> Result<BlockMeta> {
        let head = &self.inner.head;
        let dir = self
            .inner
            .dir
            .as_ref()
            .expect("only stores with a directory cut blocks");
        // From now on the head refuses samples the new block would have had to hold.
        head.set_min_valid_time(block_max);
        let meta = write_block(
            &dir.join(BLOCKS_DIR),
            head.select_iter(&[], block_min, block_max - 1)
                .map(|series| Ok((series.labels, series.samples))),
            block_min,
            block_max,
            Compaction {
                // Columnar chunks (the head written at a stop) count as compacted.
                level: if encoding == ChunkEncoding::Xor { 1 } else { 2 },
                sources: Vec::new(),
            },
            encoding,
            head.options().chunk_samples,
        )?;
        let block = Arc::new(Block::open(&dir.join(BLOCKS_DIR).join(&meta.id))?);
        {
            let mut blocks = self.inner.blocks.write();
            blocks.push(block);
            blocks.sort_by_key(|block| (block.meta().min_time, block.meta().id.clone()));
        }
        // Until this truncation the samples are in both; reads de-duplicate them.
        self.truncate_head(block_max)?;
        tracing::info!(id = %meta.id, min_time = block_min, max_time = block_max, samples = meta.stats.samples, ?encoding, "block written from the head");
        Ok(meta)
    }

    /// Writes every sample of the head into columnar blocks (one per block-aligned window, the
    /// last ending just after the newest sample) and empties the head and the WAL. What
    /// [`Tsdb::close`] does with [`TsdbOptions::persist_head_on_close`].
    fn persist_head_locked(&self) -> Result<Vec<BlockMeta>> {
        let duration = self.inner.block_duration_ms;
        let mut written = Vec::new();
        while let Some((head_min, head_max)) = self.inner.head.time_range() {
            let block_min = head_min.saturating_sub(head_min.rem_euclid(duration));
            let block_max = block_min
                .saturating_add(duration)
                .min(head_max.saturating_add(1));
            if block_max <= head_min {
                // The newest sample sits at the very end of the time axis.
                break;
            }
            written.push(self.write_head_range(
                block_min,
                block_max,
                ChunkEncoding::ColumnarFast,
            )?);
        }
        Ok(written)
    }

    /// Opens the block `blocks/<id>` written next to the store (by an offline import) and
    /// serves it from now on. Reads de-duplicate where it overlaps other blocks or the head;
    /// compaction merges overlapping blocks first.
    pub fn add_block(&self, id: &str) -> Result<BlockMeta> {
        let dir = self
            .inner
            .dir
            .as_ref()
            .ok_or_else(|| TsdbError::InvalidOptions {
                reason: "a store without a directory has no blocks".into(),
            })?;
        let _cutting = self.inner.cutting.lock();
        let block = Arc::new(Block::open(&dir.join(BLOCKS_DIR).join(id))?);
        let meta = block.meta().clone();
        let mut blocks = self.inner.blocks.write();
        blocks.push(block);
        blocks.sort_by_key(|block| (block.meta().min_time, block.meta().id.clone()));
        Ok(meta)
    }

    /// Merges blocks as the compaction plan says until nothing is left to do; returns the
    /// blocks written.
    pub fn compact(&self) -> Result<Vec<BlockMeta>> {
        let _maintenance = self.inner.cutting.lock();
        self.compact_locked()
    }

    fn max_compaction_range(&self) -> i64 {
        let duration = self.inner.block_duration_ms;
        match self.inner.retention_ms {
            Some(retention) => retention / 10,
            None => duration.saturating_mul(81),
        }
    }

    fn compact_locked(&self) -> Result<Vec<BlockMeta>> {
        self.compact_planned(compact::Closing::No)
    }

    fn compact_planned(&self, closing: compact::Closing) -> Result<Vec<BlockMeta>> {
        let ranges =
            compact::level_ranges(self.inner.block_duration_ms, self.max_compaction_range());
        let mut written = Vec::new();
        loop {
            let blocks = self.blocks();
            let metas: Vec<&BlockMeta> = blocks.iter().map(|block| block.meta()).collect();
            let Some(group) = compact::plan(&metas, &ranges, closing) else {
                return Ok(written);
            };
            let group: Vec<Arc<Block>> = group
                .into_iter()
                .map(|position| blocks[position].clone())
                .collect();
            let level = group
                .iter()
                .map(|block| block.meta().compaction.level)
                .max()
                .unwrap_or(1)
                + 1;
            let encoding = match closing {
                compact::Closing::Yes => ChunkEncoding::ColumnarFast,
                compact::Closing::No => ChunkEncoding::Columnar,
            };
            written.push(self.rewrite_blocks(&group, level, encoding)?);
        }
    }

    /// Writes the merged contents of `group` as one block at `level` (tombstones applied),
    /// swaps it in and deletes the sources. Crash-safe: the sources are deleted only after the
    /// new block is durable, and a block whose sources another block covers is deleted at open.
    fn rewrite_blocks(
        &self,
        group: &[Arc<Block>],
        level: u32,
        encoding: ChunkEncoding,
    ) -> Result<BlockMeta> {
        let dir = self
            .inner
            .dir
            .as_ref()
            .expect("only stores with a directory have blocks");
        let min_time = group
            .iter()
            .map(|block| block.meta().min_time)
            .min()
            .expect("a group");
        let max_time = group
            .iter()
            .map(|block| block.meta().max_time)
            .max()
            .expect("a group");
        let sources = compact::merged_sources(group.iter().map(|block| block.effective_sources()));
        let inputs: Vec<Box<dyn Iterator<Item = Result<Series>> + '_>> = group
            .iter()
            .map(|block| Box::new(block.series_iter()) as Box<dyn Iterator<Item = Result<Series>>>)
            .collect();
        let meta = write_block(
            &dir.join(BLOCKS_DIR),
            compact::merge_series(inputs),
            min_time,
            max_time,
            Compaction { level, sources },
            encoding,
            self.inner.head.options().chunk_samples,
        )?;
        let block = Arc::new(Block::open(&dir.join(BLOCKS_DIR).join(&meta.id))?);
        {
            let mut blocks = self.inner.blocks.write();
            blocks.retain(|open| !group.iter().any(|old| Arc::ptr_eq(open, old)));
            blocks.push(block);
            blocks.sort_by_key(|block| (block.meta().min_time, block.meta().id.clone()));
        }
        for old in group {
            // Readers holding the old block keep their maps; the files go when they drop them.
            delete_block_dir(old.dir())?;
        }
        tracing::info!(id = %meta.id, level, inputs = group.len(), samples = meta.stats.samples, "blocks compacted");
        Ok(meta)
    }

    /// Rewrites every block with deletions recorded, so their bytes are reclaimed now rather
    /// than at the next compaction. Returns how many blocks were rewritten.
    pub fn clean_tombstones(&self) -> Result<usize> {
        let _maintenance = self.inner.cutting.lock();
        let dirty: Vec<Arc<Block>> = self
            .blocks()
            .into_iter()
            .filter(|block| block.has_tombstones())
            .collect();
        for block in &dirty {
            // Rewritten blocks are columnar, which is level 2 at least.
            self.rewrite_blocks(
                std::slice::from_ref(block),
                block.meta().compaction.level.max(2),
                ChunkEncoding::Columnar,
            )?;
        }
        Ok(dirty.len())
    }

    /// Deletes blocks beyond the time and size retention; returns their ids.
    pub fn apply_retention(&self) -> Result<Vec<String>> {
        let _maintenance = self.inner.cutting.lock();
        self.apply_retention_locked()
    }

    fn apply_retention_locked(&self) -> Result<Vec<String>> {
        let blocks = self.blocks();
        let newest = blocks
            .iter()
            .map(|block| block.meta().max_time)
            .chain(self.inner.head.time_range().map(|(_, max_time)| max_time))
            .max();
        let mut doomed: Vec<Arc<Block>> = Vec::new();
        if let (Some(retention), Some(newest)) = (self.inner.retention_ms, newest) {
            let cutoff = newest.saturating_sub(retention);
            doomed.extend(
                blocks
                    .iter()
                    .filter(|block| block.meta().max_time <= cutoff)
                    .cloned(),
            );
        }
        if let Some(limit) = self.inner.retention_bytes {
            let mut total: u64 = blocks
                .iter()
                .filter(|block| !doomed.iter().any(|d| Arc::ptr_eq(d, block)))
                .map(|block| block.size_bytes())
                .sum();
            for block in &blocks {
                if total <= limit {
                    break;
                }
                if !doomed.iter().any(|d| Arc::ptr_eq(d, block)) {
                    total -= block.size_bytes();
                    doomed.push(block.clone());
                }
            }
        }
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .blocks
            .write()
            .retain(|open| !doomed.iter().any(|d| Arc::ptr_eq(open, d)));
        let mut ids = Vec::with_capacity(doomed.len());
        for block in doomed {
            delete_block_dir(block.dir())?;
            tracing::info!(id = %block.meta().id, max_time = block.meta().max_time, "block deleted by retention");
            ids.push(block.meta().id.clone());
        }
        Ok(ids)
    }

    /// Writes a consistent copy of the store to `destination/blocks/`: every block hard-linked
    /// (no data copied), plus, with `with_head`, the head's current samples as one more block.
    /// The copy opens as a data directory of its own.
    pub fn snapshot(&self, destination: &Path, with_head: bool) -> Result<Vec<String>> {
        let _maintenance = self.inner.cutting.lock();
        let blocks_dir = destination.join(BLOCKS_DIR);
        fs::create_dir_all(&blocks_dir).map_err(|error| TsdbError::io(&blocks_dir, error))?;
        let mut ids = Vec::new();
        for block in self.blocks() {
            let target = blocks_dir.join(&block.meta().id);
            link_tree(block.dir(), &target)?;
            ids.push(block.meta().id.clone());
        }
        if with_head {
            if let Some((min_time, max_time)) = self.inner.head.time_range() {
                let meta = write_block(
                    &blocks_dir,
                    self.inner
                        .head
                        .select_iter(&[], min_time, max_time)
                        .map(|series| Ok((series.labels, series.samples))),
                    min_time,
                    max_time.saturating_add(1),
                    Compaction {
                        level: 1,
                        sources: Vec::new(),
                    },
                    ChunkEncoding::Xor,
                    self.inner.head.options().chunk_samples,
                )?;
                ids.push(meta.id);
            }
        }
        crate::wal::sync_dir(&blocks_dir)?;
        Ok(ids)
    }

    /// Reads matching series from the blocks and the head (blocking), merged by labels.
    pub fn select_blocking(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Series> {
        self.select_merged(matchers, mint, maxt)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "block read failed; serving the head only");
                self.inner.head.select(matchers, mint, maxt)
            })
    }

    /// Blocks overlapping `[mint, maxt]`, oldest first.
    fn blocks_in(&self, mint: i64, maxt: i64) -> Vec<Arc<Block>> {
        self.inner
            .blocks
            .read()
            .iter()
            .filter(|block| block.overlaps(mint, maxt))
            .cloned()
            .collect()
    }

    /// Series from every block overlapping the range and the head, merged: one series per
    /// label set, samples in time order; where sources share a timestamp the newest source
    /// (the head, then the most recent block) wins.
    pub fn select_merged(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>> {
        let blocks = self.blocks_in(mint, maxt);
        let plan = self.merged_plan(&blocks, matchers, mint, maxt)?;
        read_merged_batch(&blocks, &self.inner.head, plan, mint, maxt)
    }

    /// Which sources hold each matching series, in label order: the first half of a merged
    /// read, cheap next to decoding, so that decoding can be split into batches.
    fn merged_plan(
        &self,
        blocks: &[Arc<Block>],
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<PlannedSeries>> {
        let head = &self.inner.head;
        let head_refs = head.postings(matchers);
        let list_blocks = || {
            let mut plan = Vec::new();
            for (index, block) in blocks.iter().enumerate() {
                let listed = block.matching_series(matchers, mint, maxt)?;
                plan = merge_plans(
                    plan,
                    listed
                        .into_iter()
                        .map(|(labels, id)| (labels, Source::Block(index, id))),
                );
            }
            Ok::<_, TsdbError>(plan)
        };
        // The head and the blocks are listed side by side when the head has many series.
        let (plan, listed) = if head_refs.len() < PARALLEL_LABELS || blocks.is_empty() {
            (list_blocks()?, head.sorted_labels(&head_refs, mint, maxt))
        } else {
            let (plan, listed) =
                lookout_storage::join(list_blocks, || head.sorted_labels(&head_refs, mint, maxt));
            (plan?, listed)
        };
        Ok(merge_plans(
            plan,
            listed
                .into_iter()
                .map(|(labels, series_ref)| (labels, Source::Head(series_ref))),
        ))
    }

    /// The label sets [`Tsdb::select_merged`] would return, without reading samples: the
    /// `series` API's question. The head's label sets come first; each block, newest first,
    /// then adds the ones still missing, comparing on labels borrowed from its index.
    fn select_labels_merged(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Series>> {
        let head = &self.inner.head;
        let mut merged: Vec<Labels> = head
            .sorted_labels(&head.postings(matchers), mint, maxt)
            .into_iter()
            .map(|(labels, _)| labels)
            .collect();
        for block in self.blocks_in(mint, maxt).iter().rev() {
            block.add_live_labels(matchers, mint, maxt, &mut merged)?;
        }
        Ok(merged
            .into_iter()
            .map(|labels| Series {
                labels,
                samples: Vec::new(),
            })
            .collect())
    }

    fn label_names_merged(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        self.merge_label_answers(
            (mint, maxt),
            limit,
            |known| self.inner.head.add_label_names(matchers, mint, maxt, known),
            |block, known| block.add_label_names(matchers, mint, maxt, known),
        )
    }

    fn label_values_merged(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        self.merge_label_answers(
            (mint, maxt),
            limit,
            |known| {
                self.inner
                    .head
                    .add_label_values(name, matchers, mint, maxt, known)
            },
            |block, known| block.add_label_values(name, matchers, mint, maxt, known),
        )
    }

    /// A label query (names or values) over the head and every overlapping block, sorted and
    /// cut to `limit`. Each source adds to one sorted list only what the list lacks, and
    /// only what it adds needs a live series. The blocks that lie inside the range go first
    /// (their index alone answers), then the head, then the blocks the range cuts, newest
    /// first: once the list holds a value, no other source checks a series for it.
    fn merge_label_answers(
        &self,
        (mint, maxt): (i64, i64),
        limit: Option<usize>,
        head: impl FnOnce(&mut Vec<String>),
        block_answer: impl Fn(&Block, &mut Vec<String>) -> Result<()>,
    ) -> Result<Vec<String>> {
        let (covered, cut): (Vec<Arc<Block>>, Vec<Arc<Block>>) = self
            .blocks_in(mint, maxt)
            .into_iter()
            .partition(|block| block.covered_by(mint, maxt));
        let mut known = Vec::new();
        for block in &covered {
            block_answer(block, &mut known)?;
        }
        head(&mut known);
        for block in cut.iter().rev() {
            block_answer(block, &mut known)?;
        }
        known.truncate(limit.unwrap_or(usize::MAX));
        Ok(known)
    }

    /// Deletes `[mint, maxt]` of matching series in the head (logged to the WAL) and in every
    /// overlapping block (tombstones).
    pub fn delete_blocking(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<()> {
        self.inner.head.delete(matchers, mint, maxt)?;
        for block in self.blocks_in(mint, maxt) {
            block.delete(matchers, mint, maxt)?;
        }
        Ok(())
    }

    /// Drops samples older than `mint` from the head and condenses the WAL into a checkpoint
    /// that no longer holds them.
    pub fn truncate_head(&self, mint: i64) -> Result<TruncateReport> {
        let head = &self.inner.head;
        // Cut first: every record in the closed segments was applied before the truncation,
        // so the checkpoint's filter drops exactly what the head drops.
        let upto = head.wal().map(Wal::cut_segment).transpose()?;
        let series_removed = head.truncate(mint);
        let checkpoint = match (head.wal(), upto) {
            (Some(wal), Some(upto)) => Some(wal::checkpoint(
                wal.dir(),
                upto,
                |id| head.is_live_ref(id),
                mint,
            )?),
            _ => None,
        };
        Ok(TruncateReport {
            series_removed,
            checkpoint,
        })
    }

    /// Stops background maintenance, writes the head into blocks if
    /// [`TsdbOptions::persist_head_on_close`] says so, then flushes and syncs the WAL.
    /// Dropping without closing is a crash as far as durability is concerned, which the WAL
    /// handles.
    pub fn close(&self) -> Result<()> {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        // Stops the maintenance thread after the step it may be in, and waits for it.
        if let Some(thread) = self.inner.maintenance.lock().take() {
            self.wake_maintenance();
            let _ = thread.join();
        }
        let persisted = {
            let _cutting = self.inner.cutting.lock();
            if self.inner.persist_head_on_close
                && self.inner.dir.is_some()
                && self.inner.head.wal().is_some()
            {
                self.persist_head_locked().and_then(|written| {
                    if !written.is_empty() {
                        tracing::info!(blocks = written.len(), "head written into blocks at close");
                    }
                    if self.inner.auto_compaction {
                        // The blocks of open windows leave Gorilla chunks now rather than
                        // when the next run closes their window (if it ever does).
                        self.compact_planned(compact::Closing::Yes)?;
                    }
                    Ok(())
                })
            } else {
                Ok(())
            }
        };
        // Whatever writing the head did, the WAL is flushed and synced: what it still holds
        // is replayed at the next open, so a failed block write loses nothing.
        let closed = match self.inner.head.wal() {
            Some(wal) => wal.close(),
            None => Ok(()),
        };
        persisted.and(closed)
    }

    async fn blocking<T, F>(&self, work: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Tsdb) -> StorageResult<T> + Send + 'static,
    {
        let tsdb = self.clone();
        tokio::task::spawn_blocking(move || work(tsdb))
            .await
            .map_err(|error| StorageError::Internal {
                reason: format!("storage task failed: {error}"),
            })?
    }
}

#[async_trait]
impl Storage for Tsdb {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "native",
            out_of_order: match self.inner.head.options().out_of_order_window_ms {
                0 => OutOfOrderPolicy::Rejected,
                millis => OutOfOrderPolicy::Window { millis },
            },
            delete: true,
            rejects_conflicting_duplicates: true,
            pushdown_functions: &[],
            pushdown_aggregations: &[],
            appends_known_series: true,
        }
    }

    async fn write(&self, batch: WriteBatch) -> StorageResult<WriteOutcome> {
        self.blocking(move |tsdb| Ok(tsdb.append(&batch)?)).await
    }

    async fn select(&self, request: SelectRequest) -> StorageResult<SeriesStream> {
        request.validate()?;
        let (mint, maxt) = (request.mint.0, request.maxt.0);
        let limit = request.hints.limit;
        let labels_only = request.hints.labels_only;
        let blocks = self.blocks_in(mint, maxt);
        if !blocks.is_empty() && labels_only {
            let matchers = request.matchers;
            let mut merged = self
                .blocking(move |tsdb| Ok(tsdb.select_labels_merged(&matchers, mint, maxt)?))
                .await?;
            if let Some(limit) = limit {
                merged.truncate(limit);
            }
            let batches = chunk_owned(merged, SERIES_PER_BATCH);
            return Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed());
        }
        if !blocks.is_empty() {
            // Plan which sources hold each series, then decode and merge batches of series on
            // the blocking pool, as many at once as there are cores, handed out in order.
            let matchers = request.matchers;
            let blocks = Arc::new(blocks);
            let planned = Arc::clone(&blocks);
            // A read of one batch is done in the same hand-over to the blocking pool as its
            // plan: small queries would otherwise pay a thread wake-up for each.
            let plan = self
                .blocking(move |tsdb| {
                    let plan = tsdb.merged_plan(&planned, &matchers, mint, maxt)?;
                    if plan.len() > SERIES_PER_BATCH {
                        return Ok(Err(plan));
                    }
                    Ok(Ok(read_merged_batch(
                        &planned,
                        tsdb.head(),
                        plan,
                        mint,
                        maxt,
                    )?))
                })
                .await?;
            let plan = match plan {
                Ok(series) => {
                    let series = match limit {
                        Some(limit) => series.into_iter().take(limit).collect(),
                        None => series,
                    };
                    return Ok(one_batch(series));
                }
                Err(plan) => plan,
            };
            let tsdb = self.clone();
            let parallel = lookout_storage::cores();
            let stream = futures::stream::iter(chunk_owned(plan, SERIES_PER_BATCH))
                .map(move |batch| {
                    let tsdb = tsdb.clone();
                    let blocks = Arc::clone(&blocks);
                    async move {
                        tsdb.blocking(move |tsdb| {
                            Ok(read_merged_batch(&blocks, tsdb.head(), batch, mint, maxt)?)
                        })
                        .await
                    }
                })
                .buffered(parallel);
            return Ok(match limit {
                Some(limit) => limit_series(stream.boxed(), limit),
                None => stream.boxed(),
            });
        }
        let series = self
            .blocking(move |tsdb| {
                let head = tsdb.head();
                let refs = head.postings(&request.matchers);
                let mut sorted = head.sorted_labels(&refs, mint, maxt);
                if let Some(limit) = limit {
                    sorted.truncate(limit);
                }
                // One batch is read in the same hand-over to the blocking pool.
                if sorted.len() <= SERIES_PER_BATCH {
                    return Ok(Ok(read_batch(head, sorted, mint, maxt, labels_only)));
                }
                Ok(Err(sorted))
            })
            .await?;
        let series = match series {
            Ok(series) => return Ok(one_batch(series)),
            Err(sorted) => sorted,
        };
        let tsdb = self.clone();
        let batches: Vec<Vec<_>> = chunk_owned(series, SERIES_PER_BATCH);
        // Batches are decoded on the blocking pool, as many at once as there are cores, and
        // handed out in order.
        let parallel = lookout_storage::cores();
        let stream = futures::stream::iter(batches)
            .map(move |batch| {
                let tsdb = tsdb.clone();
                async move {
                    tsdb.blocking(move |tsdb| {
                        Ok(read_batch(tsdb.head(), batch, mint, maxt, labels_only))
                    })
                    .await
                }
            })
            .buffered(parallel);
        Ok(stream.boxed())
    }

    async fn label_names(&self, request: LabelRequest) -> StorageResult<Vec<String>> {
        request.validate()?;
        self.blocking(move |tsdb| {
            Ok(tsdb.label_names_merged(
                &request.matchers,
                request.mint.0,
                request.maxt.0,
                request.limit,
            )?)
        })
        .await
    }

    async fn label_values(&self, name: &str, request: LabelRequest) -> StorageResult<Vec<String>> {
        request.validate()?;
        let name = name.to_owned();
        self.blocking(move |tsdb| {
            Ok(tsdb.label_values_merged(
                &name,
                &request.matchers,
                request.mint.0,
                request.maxt.0,
                request.limit,
            )?)
        })
        .await
    }

    async fn delete(&self, request: DeleteRequest) -> StorageResult<()> {
        request.validate()?;
        self.blocking(move |tsdb| {
            tsdb.delete_blocking(&request.matchers, request.mint.0, request.maxt.0)
                .map_err(StorageError::from)
        })
        .await
    }
}

/// The store's maintenance thread: a round of block cuts, compaction and retention each time
/// an append wakes it; ends when the store is dropped or closed. It holds the store only
/// while it works, so dropping the last handle ends it.
fn maintenance_thread(store: std::sync::Weak<Inner>, woken: std::sync::mpsc::Receiver<()>) {
    while woken.recv().is_ok() {
        let Some(inner) = store.upgrade() else {
            return;
        };
        if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let tsdb = Tsdb { inner };
        let _cutting = tsdb.inner.cutting.lock();
        if tsdb.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Err(error) = tsdb.maintain_locked() {
            tracing::error!(%error, "background maintenance failed; retrying at the next append");
        }
    }
}

fn chunk_owned<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut batches = Vec::with_capacity(items.len().div_ceil(size));
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        batches.push(iter.by_ref().take(size).collect());
    }
    batches
}

/// Where a merged read finds samples of a series: block number (in the read's block list,
/// oldest first) and series id, or the head.
#[derive(Debug, Clone, Copy)]
enum Source {
    Block(usize, u32),
    Head(SeriesRef),
}

/// One series of a merged read and its sources, oldest first.
type PlannedSeries = (Labels, Vec<Source>);

/// Merges a plan with the next (newer) source's sorted listing.
fn merge_plans(
    plan: Vec<PlannedSeries>,
    listed: impl ExactSizeIterator<Item = (Labels, Source)>,
) -> Vec<PlannedSeries> {
    if plan.is_empty() {
        return listed
            .map(|(labels, source)| (labels, vec![source]))
            .collect();
    }
    let mut out = Vec::with_capacity(plan.len().max(listed.len()));
    let mut plan = plan.into_iter().peekable();
    let mut listed = listed.peekable();
    loop {
        let order = match (plan.peek(), listed.peek()) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return out,
        };
        match order {
            std::cmp::Ordering::Less => out.extend(plan.next()),
            std::cmp::Ordering::Greater => {
                out.extend(listed.next().map(|(labels, source)| (labels, vec![source])));
            }
            std::cmp::Ordering::Equal => {
                if let (Some((labels, mut sources)), Some((_, source))) =
                    (plan.next(), listed.next())
                {
                    sources.push(source);
                    out.push((labels, sources));
                }
            }
        }
    }
}

/// Decodes planned series: each source's samples in turn, merged by time where sources
/// overlap, the newest source winning a shared timestamp. Series left without samples are
/// dropped.
fn read_merged_batch(
    blocks: &[Arc<Block>],
    head: &Head,
    batch: Vec<PlannedSeries>,
    mint: i64,
    maxt: i64,
) -> Result<Vec<Series>> {
    let mut out = Vec::with_capacity(batch.len());
    // Series of a batch are alike (one metric, one time range): room for as many samples as
    // the previous one had saves regrowing (and copying) the vector source after source. The
    // slack covers the sources' own reservations, which round partly read chunks up: one
    // sample short, and the vector would double.
    let mut expected = 0;
    for (labels, sources) in batch {
        let mut samples = Vec::with_capacity(expected + expected / 8 + 16);
        let mut in_order = true;
        for source in sources {
            let before = samples.len();
            match source {
                Source::Block(block, id) => {
                    blocks[block].read_samples(id, mint, maxt, &mut samples)?
                }
                Source::Head(series_ref) => {
                    head.read_samples(series_ref, mint, maxt, &mut samples);
                }
            }
            if before > 0
                && samples.len() > before
                && samples[before].timestamp <= samples[before - 1].timestamp
            {
                in_order = false;
            }
        }
        if !in_order {
            // Overlapping sources: a stable sort keeps them oldest first per timestamp, and
            // deduplication keeps the last.
            samples = compact::deduplicate(samples);
        }
        expected = samples.len();
        if !samples.is_empty() {
            out.push(Series { labels, samples });
        }
    }
    Ok(out)
}

/// A stream of the one batch `series` (of none when it is empty).
fn one_batch(series: Vec<Series>) -> SeriesStream {
    let batches = (!series.is_empty()).then_some(Ok(series));
    futures::stream::iter(batches).boxed()
}

/// Ends a stream of series batches after `limit` series.
fn limit_series(stream: SeriesStream, limit: usize) -> SeriesStream {
    stream
        .scan(limit, |left, batch| {
            let item = if *left == 0 {
                None
            } else {
                Some(batch.map(|mut series| {
                    series.truncate(*left);
                    *left -= series.len();
                    series
                }))
            };
            futures::future::ready(item)
        })
        .boxed()
}

fn read_batch(
    head: &Head,
    batch: Vec<(lookout_model::Labels, SeriesRef)>,
    mint: i64,
    maxt: i64,
    labels_only: bool,
) -> Vec<Series> {
    let mut out = Vec::with_capacity(batch.len());
    for (labels, series_ref) in batch {
        let mut samples = Vec::new();
        if labels_only {
            out.push(Series { labels, samples });
            continue;
        }
        head.read_samples(series_ref, mint, maxt, &mut samples);
        // A series deleted between listing and reading has no samples left: skip it.
        if !samples.is_empty() {
            out.push(Series { labels, samples });
        }
    }
    out
}

pub(crate) const BLOCKS_DIR: &str = "blocks";
const HEAD_CHUNKS_DIR: &str = "chunks_head";
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

fn validate_block_duration(millis: i64) -> Result<()> {
    if millis < 1000 {
        return Err(TsdbError::InvalidOptions {
            reason: format!("block duration must be at least 1 s, got {millis} ms"),
        });
    }
    Ok(())
}

/// Opens every block under `dir/blocks`, removing leftovers of interrupted writes and moving
/// blocks that fail verification to `dir/quarantine`.
fn open_blocks(dir: &Path) -> Result<(Vec<Arc<Block>>, Vec<QuarantinedBlock>)> {
    let blocks_dir = dir.join(BLOCKS_DIR);
    fs::create_dir_all(&blocks_dir).map_err(|error| TsdbError::io(&blocks_dir, error))?;
    let mut blocks = Vec::new();
    let mut quarantined = Vec::new();
    let entries = fs::read_dir(&blocks_dir).map_err(|error| TsdbError::io(&blocks_dir, error))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let path = blocks_dir.join(&name);
        if name.ends_with(".tmp") || name.ends_with(DELETING_SUFFIX) {
            // A block whose write did not finish (its data is still in the head and WAL), or
            // one whose deletion did not.
            fs::remove_dir_all(&path).map_err(|error| TsdbError::io(&path, error))?;
            continue;
        }
        match Block::open(&path) {
            Ok(block) => blocks.push(Arc::new(block)),
            Err(error @ (TsdbError::Corruption { .. } | TsdbError::Io { .. })) => {
                let quarantine = dir.join(QUARANTINE_DIR);
                fs::create_dir_all(&quarantine)
                    .map_err(|error| TsdbError::io(&quarantine, error))?;
                let moved_to = quarantine.join(&name);
                fs::rename(&path, &moved_to).map_err(|error| TsdbError::io(&path, error))?;
                tracing::error!(block = %name, %error, moved_to = %moved_to.display(),
                    "block failed verification and was quarantined; the other blocks keep serving");
                quarantined.push(QuarantinedBlock {
                    id: name,
                    moved_to,
                    error: error.to_string(),
                });
            }
            Err(error) => return Err(error),
        }
    }
    blocks.sort_by_key(|block| (block.meta().min_time, block.meta().id.clone()));
    let blocks = remove_superseded(blocks)?;
    Ok((blocks, quarantined))
}

/// Deletes blocks whose data another block of a higher level already holds: what a compaction
/// interrupted after its new block was renamed into place leaves behind.
fn remove_superseded(blocks: Vec<Arc<Block>>) -> Result<Vec<Arc<Block>>> {
    let mut kept = Vec::with_capacity(blocks.len());
    for block in &blocks {
        if is_superseded(block, &blocks) {
            tracing::warn!(id = %block.meta().id, "block already compacted into another; deleting it");
            delete_block_dir(block.dir())?;
        } else {
            kept.push(block.clone());
        }
    }
    Ok(kept)
}

/// Whether another block of a higher level already holds all of `block`'s data.
pub(crate) fn is_superseded(block: &Block, blocks: &[Arc<Block>]) -> bool {
    let sources: BTreeSet<String> = block.effective_sources().into_iter().collect();
    blocks.iter().any(|other| {
        other.meta().compaction.level > block.meta().compaction.level
            && sources
                .iter()
                .all(|source| other.meta().compaction.sources.contains(source))
    })
}

pub(crate) const DELETING_SUFFIX: &str = ".deleting";

/// Removes from the head every sample some block already holds (same series, same
/// timestamp). Only the head's range below the newest block's end is looked at.
pub(crate) fn remove_samples_in_blocks(head: &Head, blocks: &[Arc<Block>]) -> Result<()> {
    let Some(blocks_end) = blocks.iter().map(|block| block.meta().max_time).max() else {
        return Ok(());
    };
    let overlap = head.select(&[], i64::MIN, blocks_end - 1);
    let Some(overlap_start) = overlap
        .iter()
        .filter_map(|series| series.samples.first())
        .map(|s| s.timestamp.0)
        .min()
    else {
        return Ok(());
    };
    let mut in_blocks: BTreeMap<Labels, BTreeSet<i64>> = BTreeMap::new();
    for block in blocks
        .iter()
        .filter(|block| block.overlaps(overlap_start, blocks_end - 1))
    {
        for series in block.select(&[], overlap_start, blocks_end - 1)? {
            in_blocks
                .entry(series.labels)
                .or_default()
                .extend(series.samples.iter().map(|sample| sample.timestamp.0));
        }
    }
    let mut removed = 0;
    for series in overlap {
        if let Some(times) = in_blocks.get(&series.labels) {
            removed += head.remove_timestamps(&series.labels, times);
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "samples already in blocks dropped from the replayed head"
        );
    }
    Ok(())
}

/// Deletes a block directory so that a crash midway leaves no half block behind: it is
/// renamed out of the way first (atomic), then removed; open removes leftovers.
fn delete_block_dir(dir: &Path) -> Result<()> {
    let mut doomed = dir.as_os_str().to_owned();
    doomed.push(DELETING_SUFFIX);
    let doomed = PathBuf::from(doomed);
    fs::rename(dir, &doomed).map_err(|error| TsdbError::io(dir, error))?;
    if let Some(parent) = dir.parent() {
        crate::wal::sync_dir(parent)?;
    }
    fs::remove_dir_all(&doomed).map_err(|error| TsdbError::io(&doomed, error))
}

/// Hard-links every file of `from` into a new tree at `to`.
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|error| TsdbError::io(to, error))?;
    for entry in fs::read_dir(from).map_err(|error| TsdbError::io(from, error))? {
        let entry = entry.map_err(|error| TsdbError::io(from, error))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if source.is_dir() {
            link_tree(&source, &target)?;
        } else {
            fs::hard_link(&source, &target).map_err(|error| TsdbError::io(&target, error))?;
        }
    }
    Ok(())
}

/// Default interval of [`FsyncPolicy::Interval`].
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);
