//! [`Tsdb`]: the engine as one object — data directory, lock, WAL replay, head — and its
//! [`Storage`] implementation.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lookout_model::{LabelLimits, Matcher};
use lookout_storage::{
    Capabilities, DeleteRequest, LabelRequest, OutOfOrderPolicy, SelectRequest, Series,
    SeriesStream, Storage, StorageError, StorageResult, WriteBatch, WriteOutcome,
};

use crate::error::{Result, TsdbError};
use crate::head::{Head, HeadOptions, SeriesRef};
use crate::wal::record::Record;
use crate::wal::{self, CheckpointReport, FsyncPolicy, ReplayReport, Wal, WalOptions};

/// Series per batch of a [`SeriesStream`].
const SERIES_PER_BATCH: usize = 512;

/// How to open a [`Tsdb`]. Build with [`TsdbOptions::new`] and the setters; validated by
/// [`Tsdb::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsdbOptions {
    dir: PathBuf,
    wal: Option<WalOptions>,
    head: HeadOptions,
}

impl TsdbOptions {
    /// Defaults for a data directory: WAL on, 64 MiB segments, fsync every second.
    pub fn new(dir: impl Into<PathBuf>) -> TsdbOptions {
        TsdbOptions {
            dir: dir.into(),
            wal: Some(WalOptions::default()),
            head: HeadOptions::default(),
        }
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

#[derive(Debug)]
struct Inner {
    head: Head,
    dir: Option<PathBuf>,
    replay: ReplayReport,
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
        let mut head = Head::new(options.head, None)?;
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
        Ok(Tsdb {
            inner: Arc::new(Inner {
                head,
                dir: Some(dir),
                replay,
                _lock: Some(lock),
            }),
        })
    }

    /// A store with no directory and no WAL: everything is lost when it is dropped.
    pub fn in_memory(options: HeadOptions) -> Result<Tsdb> {
        Ok(Tsdb {
            inner: Arc::new(Inner {
                head: Head::new(options, None)?,
                dir: None,
                replay: ReplayReport::default(),
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

    /// Writes a batch and waits for the WAL (blocking; see [`Storage::write`] for async).
    pub fn append(&self, batch: &WriteBatch) -> Result<WriteOutcome> {
        self.inner.head.append(batch)
    }

    /// Reads matching series (blocking).
    pub fn select_blocking(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Series> {
        self.inner.head.select(matchers, mint, maxt)
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

    /// Flushes and syncs the WAL. Dropping without closing is a crash as far as durability is
    /// concerned, which the WAL handles.
    pub fn close(&self) -> Result<()> {
        match self.inner.head.wal() {
            Some(wal) => wal.close(),
            None => Ok(()),
        }
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
            out_of_order: OutOfOrderPolicy::Rejected,
            delete: true,
            rejects_conflicting_duplicates: true,
            pushdown_functions: &[],
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
        let series = self
            .blocking(move |tsdb| {
                let head = tsdb.head();
                let refs = head.postings(&request.matchers);
                let mut sorted = head.sorted_labels(&refs, mint, maxt);
                if let Some(limit) = limit {
                    sorted.truncate(limit);
                }
                Ok(sorted)
            })
            .await?;
        let tsdb = self.clone();
        let batches: Vec<Vec<_>> = chunk_owned(series, SERIES_PER_BATCH);
        let stream = futures::stream::iter(batches).then(move |batch| {
            let tsdb = tsdb.clone();
            async move {
                tsdb.blocking(move |tsdb| {
                    Ok(read_batch(tsdb.head(), batch, mint, maxt, labels_only))
                })
                .await
            }
        });
        Ok(stream.boxed())
    }

    async fn label_names(&self, request: LabelRequest) -> StorageResult<Vec<String>> {
        request.validate()?;
        self.blocking(move |tsdb| {
            Ok(tsdb.head().label_names(
                &request.matchers,
                request.mint.0,
                request.maxt.0,
                request.limit,
            ))
        })
        .await
    }

    async fn label_values(&self, name: &str, request: LabelRequest) -> StorageResult<Vec<String>> {
        request.validate()?;
        let name = name.to_owned();
        self.blocking(move |tsdb| {
            Ok(tsdb.head().label_values(
                &name,
                &request.matchers,
                request.mint.0,
                request.maxt.0,
                request.limit,
            ))
        })
        .await
    }

    async fn delete(&self, request: DeleteRequest) -> StorageResult<()> {
        request.validate()?;
        self.blocking(move |tsdb| {
            tsdb.head()
                .delete(&request.matchers, request.mint.0, request.maxt.0)
                .map(|_| ())
                .map_err(StorageError::from)
        })
        .await
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

/// Default interval of [`FsyncPolicy::Interval`].
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);
