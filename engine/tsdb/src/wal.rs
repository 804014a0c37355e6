//! The write-ahead log: segmented files of framed, checksummed records.
//!
//! Layout and bytes are specified in `docs/format/wal.md`. In short: `wal/NNNNNNNN` segment
//! files, each an 8-byte header followed by frames (see [`record`]); `wal/checkpoint.NNNNNNNN/`
//! holds the records of segments up to `NNNNNNNN` that are still needed after the head was
//! truncated.
//!
//! # Group commit
//! Writers frame their records while holding the head's shard lock ([`Wal::log`], which only
//! copies bytes into a shared buffer, so the log order equals the order the head applied them),
//! then wait outside the lock ([`Wal::wait`]). The first waiter becomes the leader: it writes
//! the whole buffer with one `write` call (and one `fdatasync` under [`FsyncPolicy::Always`]),
//! then wakes every writer whose records it covered.
//!
//! # Durability
//! - [`FsyncPolicy::Never`] and [`FsyncPolicy::Interval`]: an acknowledged write has been handed
//!   to the kernel. It survives the process crashing or being killed (SIGKILL), but not a power
//!   loss or kernel crash within the sync interval (`Never` leaves it to the kernel's writeback,
//!   typically 30 s).
//! - [`FsyncPolicy::Always`]: an acknowledged write has been `fdatasync`ed; it survives power
//!   loss too. Costs one sync per group commit.
//!
//! # Replay and repair
//! [`replay`] reads the newest checkpoint, then every later segment. A torn record at the end of
//! the last segment (what a crash mid-append leaves) is cut off with a logged warning and
//! counted in the report. A damaged record anywhere else stops replay there: everything before
//! it is kept, the damaged bytes and every later segment are moved aside with a `.corrupt`
//! suffix (never deleted), and the report names the segment and offset.
//!
//! Once a write or sync fails, the log refuses further writes ([`TsdbError::WalFailed`]): the
//! file's tail is unknown until replay repairs it on the next open.

pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, TsdbError};
use record::{encode_record, encode_segment_end, FrameError, FrameReader, Record};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: &[u8; 5] = b"LKWAL";
/// Current segment format version.
pub const SEGMENT_VERSION: u8 = 1;
/// Size of the segment header: magic, version, two reserved zero bytes.
pub const SEGMENT_HEADER_LEN: usize = 8;

pub(crate) const CHECKPOINT_PREFIX: &str = "checkpoint.";
pub(crate) const CORRUPT_SUFFIX: &str = ".corrupt";

/// When the log calls `fdatasync`; see the module docs for what each policy makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never explicitly; the kernel writes back on its own schedule. Segments are still synced
    /// when they are closed.
    Never,
    /// A background thread syncs the open segment at this interval.
    Interval(Duration),
    /// Every group commit is synced before it is acknowledged.
    Always,
}

/// WAL options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed once it would grow beyond this many bytes (a single larger record
    /// gets a segment of its own).
    pub segment_bytes: u64,
    /// Sync policy.
    pub fsync: FsyncPolicy,
}

impl Default for WalOptions {
    /// 64 MiB segments, synced every second.
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        }
    }
}

/// Identifies buffered records; [`Wal::wait`] returns once they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug, Default)]
struct Pending {
    buffer: Vec<u8>,
    /// Offsets in `buffer` where a new segment must start.
    rotations: Vec<usize>,
    /// Bytes the open segment will have once `buffer` is written.
    planned_segment_bytes: u64,
    last_ticket: u64,
    flushed_ticket: u64,
    flushing: bool,
    failure: Option<String>,
}

#[derive(Debug)]
struct SegmentWriter {
    number: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes in the file, header included.
    size: u64,
}

/// Counters of the log, for self-metrics.
#[derive(Debug, Default)]
pub struct WalMetrics {
    /// Bytes written to segments.
    pub bytes_written: AtomicU64,
    /// Group commits (leader writes).
    pub flushes: AtomicU64,
    /// `fdatasync` calls.
    pub fsyncs: AtomicU64,
    /// Segments created.
    pub segments_created: AtomicU64,
}

/// The log writer.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    pending: Mutex<Pending>,
    flushed: Condvar,
    writer: Arc<Mutex<SegmentWriter>>,
    metrics: Arc<WalMetrics>,
    stop_syncer: Arc<AtomicBool>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Opens the log for writing in `dir`, starting segment `first_segment` (one past the last
    /// one replay saw).
    pub fn open(dir: &Path, options: WalOptions, first_segment: u64) -> Result<Wal> {
        if options.segment_bytes < 1024 {
            return Err(TsdbError::InvalidOptions {
                reason: format!("WAL segment size {} is below 1 KiB", options.segment_bytes),
            });
        }
        fs::create_dir_all(dir).map_err(|error| TsdbError::io(dir, error))?;
        let metrics = Arc::new(WalMetrics::default());
        let writer = create_segment(dir, first_segment, options.fsync, &metrics)?;
        let writer = Arc::new(Mutex::new(writer));
        let stop_syncer = Arc::new(AtomicBool::new(false));
        let syncer = match options.fsync {
            FsyncPolicy::Interval(interval) => Some(spawn_syncer(
                writer.clone(),
                metrics.clone(),
                stop_syncer.clone(),
                interval,
            )),
            FsyncPolicy::Never | FsyncPolicy::Always => None,
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            options,
            pending: Mutex::new(Pending {
                planned_segment_bytes: SEGMENT_HEADER_LEN as u64,
                ..Pending::default()
            }),
            flushed: Condvar::new(),
            writer,
            metrics,
            stop_syncer,
            syncer: Mutex::new(syncer),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters.
    pub fn metrics(&self) -> &WalMetrics {
        &self.metrics
    }

    /// Buffers already framed records (see [`record`]); cheap, never blocks on I/O.
    pub fn log(&self, framed: &[u8]) -> Ticket {
        let mut pending = self.pending.lock();
        let len = framed.len() as u64;
        let header = SEGMENT_HEADER_LEN as u64;
        if pending.planned_segment_bytes > header
            && pending.planned_segment_bytes + len > self.options.segment_bytes
        {
            let at = pending.buffer.len();
            pending.rotations.push(at);
            pending.planned_segment_bytes = header;
        }
        pending.buffer.extend_from_slice(framed);
        pending.planned_segment_bytes += len;
        pending.last_ticket += 1;
        Ticket(pending.last_ticket)
    }

    /// Waits until the records of `ticket` are written (and synced, under
    /// [`FsyncPolicy::Always`]).
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        let mut pending = self.pending.lock();
        loop {
            if let Some(reason) = &pending.failure {
                return Err(TsdbError::WalFailed {
                    reason: reason.clone(),
                });
            }
            if pending.flushed_ticket >= ticket.0 {
                return Ok(());
            }
            if pending.flushing {
                self.flushed.wait(&mut pending);
                continue;
            }
            pending.flushing = true;
            let mut buffer = std::mem::take(&mut pending.buffer);
            let rotations = std::mem::take(&mut pending.rotations);
            let covered = pending.last_ticket;
            drop(pending);

            let result = self.write_out(&buffer, &rotations);

            pending = self.pending.lock();
            pending.flushing = false;
            match result {
                Ok(()) => pending.flushed_ticket = covered,
                Err(error) => {
                    tracing::error!(%error, "wal write failed; refusing further writes");
                    pending.failure = Some(error.to_string());
                }
            }
            if pending.buffer.is_empty() {
                buffer.clear();
                pending.buffer = buffer;
            }
            self.flushed.notify_all();
        }
    }

    /// Buffers and waits in one call.
    pub fn log_and_wait(&self, framed: &[u8]) -> Result<()> {
        let ticket = self.log(framed);
        self.wait(ticket)
    }

    /// Closes the open segment and starts a new one; returns the number of the closed one.
    /// Everything logged before the call is in segments up to that number.
    pub fn cut_segment(&self) -> Result<u64> {
        let ticket = {
            let mut pending = self.pending.lock();
            let at = pending.buffer.len();
            pending.rotations.push(at);
            pending.planned_segment_bytes = SEGMENT_HEADER_LEN as u64;
            pending.last_ticket += 1;
            Ticket(pending.last_ticket)
        };
        self.wait(ticket)?;
        let current = self.writer.lock().number;
        Ok(current - 1)
    }

    /// Number of the segment being written.
    pub fn current_segment(&self) -> u64 {
        self.writer.lock().number
    }

    /// Writes what is buffered and syncs the open segment.
    pub fn sync(&self) -> Result<()> {
        let ticket = Ticket(self.pending.lock().last_ticket);
        self.wait(ticket)?;
        let writer = self.writer.lock();
        writer
            .file
            .sync_data()
            .map_err(|error| TsdbError::io(&writer.path, error))?;
        self.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes, syncs and stops the background syncer.
    pub fn close(&self) -> Result<()> {
        self.stop_syncer_thread();
        self.sync()
    }

    fn stop_syncer_thread(&self) {
        self.stop_syncer.store(true, Ordering::Release);
        if let Some(handle) = self.syncer.lock().take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    fn write_out(&self, buffer: &[u8], rotations: &[usize]) -> Result<()> {
        let mut writer = self.writer.lock();
        let mut start = 0;
        for &rotation in rotations {
            self.write_piece(&mut writer, &buffer[start..rotation])?;
            start = rotation;
            let mut marker = Vec::new();
            encode_segment_end(&mut marker, writer.size);
            self.write_piece(&mut writer, &marker)?;
            let next = writer.number + 1;
            // A closed segment is always synced, so at most the open one can be torn.
            writer
                .file
                .sync_data()
                .map_err(|error| TsdbError::io(&writer.path, error))?;
            self.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
            *writer = create_segment(&self.dir, next, self.options.fsync, &self.metrics)?;
        }
        self.write_piece(&mut writer, &buffer[start..])?;
        if self.options.fsync == FsyncPolicy::Always && !buffer.is_empty() {
            writer
                .file
                .sync_data()
                .map_err(|error| TsdbError::io(&writer.path, error))?;
            self.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write_piece(&self, writer: &mut SegmentWriter, piece: &[u8]) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        (&*writer.file)
            .write_all(piece)
            .map_err(|error| TsdbError::io(&writer.path, error))?;
        writer.size += piece.len() as u64;
        self.metrics
            .bytes_written
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_syncer_thread();
    }
}

fn spawn_syncer(
    writer: Arc<Mutex<SegmentWriter>>,
    metrics: Arc<WalMetrics>,
    stop: Arc<AtomicBool>,
    interval: Duration,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("lookout-wal-sync".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::park_timeout(interval);
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (file, path) = {
                    let writer = writer.lock();
                    (writer.file.clone(), writer.path.clone())
                };
                match file.sync_data() {
                    Ok(()) => {
                        metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "periodic wal sync failed");
                    }
                }
            }
        })
        .expect("the wal sync thread starts")
}

/// The file name of segment `number`.
pub fn segment_name(number: u64) -> String {
    format!("{number:08}")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() == 8 && name.bytes().all(|byte| byte.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..5].copy_from_slice(SEGMENT_MAGIC);
    header[5] = SEGMENT_VERSION;
    header
}

fn create_segment(
    dir: &Path,
    number: u64,
    fsync: FsyncPolicy,
    metrics: &WalMetrics,
) -> Result<SegmentWriter> {
    let path = dir.join(segment_name(number));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|error| TsdbError::io(&path, error))?;
    file.write_all(&segment_header())
        .map_err(|error| TsdbError::io(&path, error))?;
    if fsync != FsyncPolicy::Never {
        sync_dir(dir)?;
    }
    metrics.segments_created.fetch_add(1, Ordering::Relaxed);
    Ok(SegmentWriter {
        number,
        path,
        file: Arc::new(file),
        size: SEGMENT_HEADER_LEN as u64,
    })
}

/// Syncs a directory so that created, renamed and removed entries are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| TsdbError::io(dir, error))
}

/// Where a damaged record was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCorruption {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the damaged frame within the file.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// The checkpoint replayed first, if any.
    pub checkpoint: Option<u64>,
    /// Segments replayed, in order.
    pub segments: Vec<u64>,
    /// Records handed to the handler.
    pub records: u64,
    /// A torn tail cut off the last segment.
    pub torn_tail: Option<WalCorruption>,
    /// Damage that stopped replay early.
    pub corruption: Option<WalCorruption>,
    /// The segment number new writes should use.
    pub next_segment: u64,
}

#[derive(Debug, Default)]
struct DirListing {
    segments: Vec<u64>,
    checkpoints: Vec<u64>,
}

fn list_dir(dir: &Path, repair: bool) -> Result<DirListing> {
    let mut listing = DirListing::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(error) => return Err(TsdbError::io(dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| TsdbError::io(dir, error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = parse_segment_name(name) {
            listing.segments.push(number);
        } else if let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX) {
            if let Some(number) = parse_segment_name(rest) {
                listing.checkpoints.push(number);
            } else if repair && rest.ends_with(".tmp") {
                // An interrupted checkpoint; its sources are all still present.
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|error| TsdbError::io(&path, error))?;
            }
        }
    }
    listing.segments.sort_unstable();
    listing.checkpoints.sort_unstable();
    Ok(listing)
}

fn checkpoint_dir(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{CHECKPOINT_PREFIX}{}", segment_name(number)))
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|error| TsdbError::io(path, error))
}

/// How a segment's frames ended.
pub(crate) enum SegmentEnd {
    /// At its end marker: the segment was closed.
    Closed,
    /// At the end of the file without a marker: the open segment, or one that lost its tail.
    Open { len: u64 },
    /// At a damaged or torn frame.
    Failed(FrameError),
}

/// Feeds every record of one segment file to `handler`.
pub(crate) fn read_segment(
    path: &Path,
    handler: &mut dyn FnMut(Record),
) -> Result<(u64, SegmentEnd)> {
    let bytes = read_file(path)?;
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Ok((
            0,
            SegmentEnd::Failed(FrameError::Torn {
                offset: 0,
                reason: "incomplete segment header",
            }),
        ));
    }
    if bytes[..SEGMENT_HEADER_LEN] != segment_header() {
        return Ok((
            0,
            SegmentEnd::Failed(FrameError::Corrupt {
                offset: 0,
                reason: "bad segment header (magic, version or reserved bytes)".into(),
            }),
        ));
    }
    let mut records = 0;
    let mut reader = FrameReader::new(&bytes, SEGMENT_HEADER_LEN);
    for result in reader.by_ref() {
        match result {
            Ok((_, record)) => {
                records += 1;
                handler(record);
            }
            Err(error) => return Ok((records, SegmentEnd::Failed(error))),
        }
    }
    let end = match reader.end_marker() {
        Some(_) => SegmentEnd::Closed,
        None => SegmentEnd::Open {
            len: bytes.len() as u64,
        },
    };
    Ok((records, end))
}

/// Replays the log in `dir`: newest checkpoint first, then the segments after it. Repairs a
/// torn tail and sets aside damaged data as described in the module docs.
pub fn replay(dir: &Path, handler: impl FnMut(Record)) -> Result<ReplayReport> {
    replay_with(dir, handler, true)
}

/// Reads the log in `dir` as [`replay`] does, but changes nothing on disk: no repair, no
/// end marker added, nothing deleted or set aside. For tools that read a data directory a
/// server may be writing: a torn tail (or a record still being written) ends the read and is
/// reported in `torn_tail`; damage ends it and is reported in `corruption`.
pub fn replay_read_only(dir: &Path, handler: impl FnMut(Record)) -> Result<ReplayReport> {
    replay_with(dir, handler, false)
}

fn replay_with(dir: &Path, mut handler: impl FnMut(Record), repair: bool) -> Result<ReplayReport> {
    let listing = list_dir(dir, repair)?;
    let mut report = ReplayReport::default();
    let checkpoint = listing.checkpoints.last().copied();
    if let Some(number) = checkpoint {
        let path = checkpoint_dir(dir, number);
        let mut files: Vec<u64> = list_dir(&path, repair)?.segments;
        files.sort_unstable();
        for file in files {
            let file_path = path.join(segment_name(file));
            let (records, end) = read_segment(&file_path, &mut handler)?;
            report.records += records;
            let damage = match end {
                SegmentEnd::Closed => None,
                SegmentEnd::Open { len } => Some((len, "checkpoint file lost its end".to_owned())),
                SegmentEnd::Failed(error) => Some((error.offset() as u64, error.reason())),
            };
            if let Some((offset, reason)) = damage {
                let corruption = WalCorruption {
                    file: file_path,
                    offset,
                    reason,
                };
                tracing::error!(file = %corruption.file.display(), offset = corruption.offset,
                    reason = %corruption.reason, "wal checkpoint is damaged; replay stops here");
                report.corruption = Some(corruption);
                report.next_segment = listing.segments.last().map_or(number + 1, |last| last + 1);
                return Ok(report);
            }
        }
        report.checkpoint = Some(number);
    }
    let first_live = checkpoint.map_or(0, |number| number + 1);
    for &stale in listing
        .segments
        .iter()
        .filter(|number| repair && **number < first_live)
    {
        // Left behind by a crash between writing a checkpoint and deleting its sources.
        let path = dir.join(segment_name(stale));
        fs::remove_file(&path).map_err(|error| TsdbError::io(&path, error))?;
    }
    let live: Vec<u64> = listing
        .segments
        .iter()
        .copied()
        .filter(|number| *number >= first_live)
        .collect();
    report.next_segment = live.last().map_or(first_live.max(1), |last| last + 1);
    for (position, &number) in live.iter().enumerate() {
        let path = dir.join(segment_name(number));
        if position > 0 && live[position - 1] + 1 != number {
            let corruption = WalCorruption {
                file: dir.join(segment_name(live[position - 1] + 1)),
                offset: 0,
                reason: format!(
                    "segment missing between {} and {number}",
                    live[position - 1]
                ),
            };
            if repair {
                set_aside(dir, &live[position..], None)?;
            }
            // The previous segment was read as closed (it is not the last one), so it has
            // its end marker already.
            report.next_segment = live[position - 1] + 1;
            if repair {
                log_corruption(&corruption);
            }
            report.corruption = Some(corruption);
            return Ok(report);
        }
        let (records, end) = read_segment(&path, &mut handler)?;
        report.records += records;
        report.segments.push(number);
        let is_last = position + 1 == live.len();
        let error = match end {
            SegmentEnd::Closed => continue,
            SegmentEnd::Open { .. } if is_last => {
                // The segment a previous process was writing: close it, a new one follows.
                if repair {
                    close_segment_file(&path)?;
                }
                continue;
            }
            SegmentEnd::Open { len } => FrameError::Corrupt {
                offset: len as usize,
                reason: "segment lost its tail: it ends without its end marker".into(),
            },
            SegmentEnd::Failed(error) => error,
        };
        let offset = error.offset() as u64;
        let corruption = WalCorruption {
            file: path.clone(),
            offset,
            reason: error.reason(),
        };
        match error {
            FrameError::Torn { .. } if is_last => {
                if repair {
                    tracing::warn!(file = %path.display(), offset, reason = %corruption.reason,
                        "wal ends with a torn record; truncating it");
                    truncate_file(&path, offset.max(SEGMENT_HEADER_LEN as u64), offset == 0)?;
                    close_segment_file(&path)?;
                }
                report.torn_tail = Some(corruption);
            }
            _ => {
                if repair {
                    set_aside(dir, &live[position + 1..], Some((&path, offset)))?;
                    close_segment_file(&path)?;
                }
                report.next_segment = number + 1;
                if repair {
                    log_corruption(&corruption);
                }
                report.corruption = Some(corruption);
                return Ok(report);
            }
        }
    }
    Ok(report)
}

fn log_corruption(corruption: &WalCorruption) {
    tracing::error!(
        file = %corruption.file.display(),
        offset = corruption.offset,
        reason = %corruption.reason,
        "wal is damaged; replay stopped there and the rest was moved aside with a .corrupt suffix"
    );
}

/// Appends the end marker to a segment file whose frames were all read.
fn close_segment_file(path: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|error| TsdbError::io(path, error))?;
    let len = file
        .metadata()
        .map_err(|error| TsdbError::io(path, error))?
        .len();
    let mut marker = Vec::new();
    encode_segment_end(&mut marker, len);
    file.write_all(&marker)
        .and_then(|()| file.sync_all())
        .map_err(|error| TsdbError::io(path, error))
}

/// Cuts `path` to `len` bytes (rewriting the header if it was incomplete).
fn truncate_file(path: &Path, len: u64, rewrite_header: bool) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| TsdbError::io(path, error))?;
    if rewrite_header {
        file.set_len(0)
            .map_err(|error| TsdbError::io(path, error))?;
        file.write_all(&segment_header())
            .map_err(|error| TsdbError::io(path, error))?;
    } else {
        file.set_len(len)
            .map_err(|error| TsdbError::io(path, error))?;
    }
    file.sync_all().map_err(|error| TsdbError::io(path, error))
}

/// Moves damaged data out of replay's way without deleting it: the tail of `damaged` from
/// `offset` goes to `<segment>.corrupt`, and every segment in `later` is renamed with the
/// suffix.
fn set_aside(dir: &Path, later: &[u64], damaged: Option<(&Path, u64)>) -> Result<()> {
    if let Some((path, offset)) = damaged {
        let bytes = read_file(path)?;
        let start = (offset as usize).min(bytes.len());
        let aside = path.with_file_name(format!(
            "{}{CORRUPT_SUFFIX}",
            path.file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("segment")
        ));
        fs::write(&aside, &bytes[start..]).map_err(|error| TsdbError::io(&aside, error))?;
        truncate_file(path, offset.max(SEGMENT_HEADER_LEN as u64), offset == 0)?;
    }
    for &number in later {
        let from = dir.join(segment_name(number));
        let to = dir.join(format!("{}{CORRUPT_SUFFIX}", segment_name(number)));
        fs::rename(&from, &to).map_err(|error| TsdbError::io(&from, error))?;
    }
    sync_dir(dir)
}

/// What [`checkpoint`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The checkpoint's number (the last segment it covers).
    pub number: u64,
    /// Records read from the sources.
    pub records_read: u64,
    /// Records written (after filtering).
    pub records_written: u64,
    /// Segments deleted.
    pub segments_removed: usize,
}

/// Condenses the previous checkpoint and segments `..=upto` into `checkpoint.<upto>`, keeping
/// series for which `keep` is true, their samples at or after `mint`, and their tombstones,
/// in the original order. Then deletes the sources. Crash-safe: the checkpoint is written to a
/// temporary directory, synced and renamed before anything is deleted.
pub fn checkpoint(
    dir: &Path,
    upto: u64,
    keep: impl Fn(u32) -> bool,
    mint: i64,
) -> Result<CheckpointReport> {
    let listing = list_dir(dir, true)?;
    let previous = listing
        .checkpoints
        .iter()
        .copied()
        .filter(|n| *n <= upto)
        .max();
    let mut sources: Vec<PathBuf> = Vec::new();
    if let Some(number) = previous {
        let path = checkpoint_dir(dir, number);
        for file in list_dir(&path, true)?.segments {
            sources.push(path.join(segment_name(file)));
        }
    }
    let first_segment = previous.map_or(0, |number| number + 1);
    sources.extend(
        listing
            .segments
            .iter()
            .filter(|number| (first_segment..=upto).contains(*number))
            .map(|number| dir.join(segment_name(*number))),
    );

    let temporary = dir.join(format!("{CHECKPOINT_PREFIX}{}.tmp", segment_name(upto)));
    if temporary.exists() {
        fs::remove_dir_all(&temporary).map_err(|error| TsdbError::io(&temporary, error))?;
    }
    fs::create_dir_all(&temporary).map_err(|error| TsdbError::io(&temporary, error))?;
    // Written as it is filtered, into segment files of at most CHECKPOINT_SEGMENT_BYTES: the
    // records kept can be most of the head's samples (everything newer than `mint`), far too
    // much to assemble in memory, and the next checkpoint and the replay read one file at once.
    let mut output = CheckpointWriter::create(&temporary)?;
    let mut report = CheckpointReport {
        number: upto,
        ..CheckpointReport::default()
    };
    for source in &sources {
        let mut write_error = None;
        let (records, end) = read_segment(source, &mut |record| {
            if write_error.is_some() {
                return;
            }
            if let Some(filtered) = filter_record(record, &keep, mint) {
                report.records_written += 1;
                if let Err(error) = output.write(&filtered) {
                    write_error = Some(error);
                }
            }
        })?;
        let damage = match (write_error, end) {
            (Some(error), _) => Some(Err(error)),
            // Every source is closed (the caller cut the log past `upto`), so it must end
            // with its marker.
            (None, SegmentEnd::Closed) => None,
            (None, SegmentEnd::Open { len }) => {
                Some(Ok((len, "segment ends without its end marker".to_owned())))
            }
            (None, SegmentEnd::Failed(error)) => Some(Ok((error.offset() as u64, error.reason()))),
        };
        report.records_read += records;
        if let Some(damage) = damage {
            drop(output);
            fs::remove_dir_all(&temporary).map_err(|error| TsdbError::io(&temporary, error))?;
            let (offset, reason) = damage?;
            return Err(TsdbError::Corruption {
                file: source.clone(),
                offset,
                reason,
            });
        }
    }
    output.finish()?;
    sync_dir(&temporary)?;
    let final_path = checkpoint_dir(dir, upto);
    fs::rename(&temporary, &final_path).map_err(|error| TsdbError::io(&temporary, error))?;
    sync_dir(dir)?;

    for number in listing.segments.iter().filter(|number| **number <= upto) {
        let path = dir.join(segment_name(*number));
        fs::remove_file(&path).map_err(|error| TsdbError::io(&path, error))?;
        report.segments_removed += 1;
    }
    for number in listing.checkpoints.iter().filter(|number| **number < upto) {
        let path = checkpoint_dir(dir, *number);
        fs::remove_dir_all(&path).map_err(|error| TsdbError::io(&path, error))?;
    }
    sync_dir(dir)?;
    Ok(report)
}

/// Largest segment file a checkpoint writes (more records go on in the next file).
#[cfg(not(test))]
const CHECKPOINT_SEGMENT_BYTES: u64 = 64 << 20;
/// Small in unit tests, so that their checkpoints span several files.
#[cfg(test)]
const CHECKPOINT_SEGMENT_BYTES: u64 = 4096;

/// Writes a checkpoint's records into numbered segment files of its temporary directory,
/// each with the segment header and end marker, synced when finished.
struct CheckpointWriter {
    dir: PathBuf,
    number: u64,
    path: PathBuf,
    file: std::io::BufWriter<File>,
    /// Bytes of the current file so far (header and frames).
    len: u64,
    frame: Vec<u8>,
}

impl CheckpointWriter {
    fn create(dir: &Path) -> Result<CheckpointWriter> {
        let (path, file) = CheckpointWriter::open(dir, 0)?;
        Ok(CheckpointWriter {
            dir: dir.to_path_buf(),
            number: 0,
            path,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            frame: Vec::new(),
        })
    }

    fn open(dir: &Path, number: u64) -> Result<(PathBuf, std::io::BufWriter<File>)> {
        let path = dir.join(segment_name(number));
        let file = File::create(&path).map_err(|error| TsdbError::io(&path, error))?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(&segment_header())
            .map_err(|error| TsdbError::io(&path, error))?;
        Ok((path, file))
    }

    fn write(&mut self, record: &Record) -> Result<()> {
        self.frame.clear();
        encode_record(&mut self.frame, record);
        if self.len > SEGMENT_HEADER_LEN as u64
            && self.len + self.frame.len() as u64 > CHECKPOINT_SEGMENT_BYTES
        {
            self.finish_file()?;
            self.number += 1;
            let (path, file) = CheckpointWriter::open(&self.dir, self.number)?;
            self.path = path;
            self.file = file;
            self.len = SEGMENT_HEADER_LEN as u64;
            self.frame.clear();
            encode_record(&mut self.frame, record);
        }
        self.file
            .write_all(&self.frame)
            .map_err(|error| TsdbError::io(&self.path, error))?;
        self.len += self.frame.len() as u64;
        Ok(())
    }

    /// Ends the current file with its end marker and syncs it.
    fn finish_file(&mut self) -> Result<()> {
        let mut end = Vec::new();
        encode_segment_end(&mut end, self.len);
        let io_error = |error: std::io::Error| TsdbError::io(&self.path, error);
        self.file.write_all(&end).map_err(io_error)?;
        self.file.flush().map_err(io_error)?;
        self.file.get_ref().sync_all().map_err(io_error)
    }

    fn finish(mut self) -> Result<()> {
        self.finish_file()
    }
}

fn filter_record(record: Record, keep: &impl Fn(u32) -> bool, mint: i64) -> Option<Record> {
    match record {
        Record::Series(mut entries) => {
            entries.retain(|entry| keep(entry.id));
            (!entries.is_empty()).then_some(Record::Series(entries))
        }
        Record::Samples(mut samples) => {
            samples.retain(|sample| sample.t >= mint && keep(sample.id));
            (!samples.is_empty()).then_some(Record::Samples(samples))
        }
        Record::Tombstones(mut tombstones) => {
            tombstones.retain(|tombstone| tombstone.maxt >= mint && keep(tombstone.id));
            (!tombstones.is_empty()).then_some(Record::Tombstones(tombstones))
        }
    }
}

#[cfg(test)]
mod tests;
