//! The on-disk queue between the gateways and one exporter: an append-only log of records in
//! numbered segment files, plus a cursor file naming the first record not yet delivered.
//!
//! Layout of the queue directory:
//!
//! ```text
//! 0000000000000001.seg   segment: 8-byte magic `LKRELAY1`, then records
//! 0000000000000002.seg   the segment being appended to (a new one at every open)
//! cursor                 segment id (u64 LE), offset (u64 LE), crc32 of those 16 bytes
//! lock                   locked (flock) while a process has the queue open
//! ```
//!
//! A record is a 12-byte header — payload length (u32 LE), sample count (u32 LE), crc32 of
//! the length, the count and the payload (u32 LE) — then the payload (an exporter's
//! uncompressed request body for one batch).
//!
//! Guarantees:
//! * **Durability**: with `fsync` on (the default) [`DiskQueue::append`] returns only after
//!   `fdatasync` of the segment, so an acknowledged batch survives a crash or power loss.
//!   With it off the record is in the OS page cache: it survives the process dying, not the
//!   machine.
//! * **Restart**: records after the cursor are delivered again after a restart; the cursor
//!   moves only when the receiver acknowledged (at-least-once: a crash between delivery and
//!   the cursor update sends a record twice).
//! * **Torn tail**: a record cut short at the end of the last segment (a crash mid-append) is
//!   cut off at open; it was never acknowledged to the sender.
//! * **Corruption**: a record whose crc does not match is skipped, counted in
//!   [`QueueStats::corrupt_records`] and logged; the records after it are delivered. A length
//!   field that cannot be right (zero, or past the end of the file) ends the segment there.
//! * **Bound**: the segment files never take more than `max_bytes`. When an append would
//!   exceed it the oldest segment is deleted with its undelivered records, which are counted
//!   in [`QueueStats::dropped_records`] / [`QueueStats::dropped_samples`] and logged — the
//!   newest data wins, as a receiver that comes back wants the recent past first. A single
//!   record larger than the whole bound is refused ([`QueueError::RecordTooLarge`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The first bytes of every segment.
const SEGMENT_MAGIC: &[u8; 8] = b"LKRELAY1";
/// Bytes of the segment header.
const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;
/// Bytes of a record header: length, sample count, crc.
pub const RECORD_HEADER: u64 = 12;
/// Longest payload a record may have; a longer length field is damage.
const MAX_PAYLOAD: u64 = 1 << 30;
const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "lock";
/// When every record is delivered and the current segment holds at least this much, a new
/// segment is started and the old one deleted.
const RECLAIM_WHEN_IDLE: u64 = 1 << 20;

/// Settings of one queue.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The directory holding the segments and the cursor; created if missing.
    pub dir: PathBuf,
    /// Most bytes the segment files may take together.
    pub max_bytes: u64,
    /// Size at which the segment being appended to is closed and a new one started.
    pub segment_bytes: u64,
    /// `fdatasync` every append before it returns.
    pub fsync: bool,
}

impl QueueOptions {
    /// A queue in `dir` bounded to `max_bytes`, segments of a sixteenth of that (between 64 KiB
    /// and 64 MiB), fsync on.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> QueueOptions {
        QueueOptions {
            dir: dir.into(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 64 << 20),
            fsync: true,
        }
    }
}

/// Why the queue could not do something.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A file operation failed.
    #[error("queue {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Another process has the queue open.
    #[error("queue {dir} is in use by another process")]
    Locked { dir: String },
    /// One record is larger than the whole queue may be.
    #[error("a batch of {size} bytes is larger than the queue bound of {max} bytes")]
    RecordTooLarge { size: u64, max: u64 },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One record read back for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the queue; pass the last delivered one to [`DiskQueue::ack`].
    pub seq: u64,
    /// Samples the payload holds.
    pub samples: u32,
    /// The payload as appended.
    pub payload: Vec<u8>,
}

/// Figures of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Bytes of the segment files.
    pub bytes: u64,
    /// Records not yet delivered.
    pub records: u64,
    /// Samples in those records.
    pub samples: u64,
    /// Records deleted undelivered because the queue was full.
    pub dropped_records: u64,
    /// Samples in those records.
    pub dropped_samples: u64,
    /// Records skipped because their crc did not match (or their segment was unreadable).
    pub corrupt_records: u64,
    /// Torn tails cut off at open.
    pub torn_tails: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
    samples: u32,
}

#[derive(Debug)]
struct Writer {
    id: u64,
    file: Arc<File>,
    size: u64,
}

#[derive(Debug)]
struct Inner {
    options: QueueOptions,
    /// Segment id to its size in bytes.
    segments: BTreeMap<u64, u64>,
    pending: VecDeque<Entry>,
    pending_samples: u64,
    next_seq: u64,
    writer: Writer,
    /// With `fsync`: every byte before this position (segment id, offset) is synced (the
    /// segments closed by a rotation).
    durable_before: (u64, u64),
    stats: QueueStats,
}

/// The queue; every method takes `&self` and may block on file I/O.
#[derive(Debug)]
pub struct DiskQueue {
    /// `lock` in the directory, locked while the queue is open.
    _lock: File,
    inner: Mutex<Inner>,
    /// Position (segment id, offset) up to which appends are known synced. Held while
    /// syncing, so concurrent appends share one `fdatasync` (group commit); always taken
    /// before `inner`, never while holding it.
    synced: Mutex<(u64, u64)>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

fn record_crc(len: u32, samples: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&samples.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

impl DiskQueue {
    /// Opens (or creates) the queue in `options.dir`: reads the cursor, scans the segments
    /// after it (cutting off a torn tail, skipping corrupt records) and starts a new segment.
    pub fn open(options: QueueOptions) -> Result<DiskQueue, QueueError> {
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(QueueError::Locked {
                    dir: dir.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(&lock_path)(error)),
        }
        let cursor = read_cursor(&dir);
        let mut ids = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let item = item.map_err(io_error(&dir))?;
            let name = item.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(".seg"))
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();
        let mut stats = QueueStats::default();
        let mut segments = BTreeMap::new();
        let mut pending = VecDeque::new();
        let mut next_seq = 0u64;
        let last = ids.last().copied();
        for &id in &ids {
            let path = segment_path(&dir, id);
            if let Some((cursor_segment, _)) = cursor {
                if id < cursor_segment {
                    std::fs::remove_file(&path).map_err(io_error(&path))?;
                    continue;
                }
            }
            let start = match cursor {
                Some((cursor_segment, offset)) if cursor_segment == id => offset,
                _ => SEGMENT_HEADER,
            };
            let size = scan_segment(
                &path,
                id,
                start,
                Some(id) == last,
                &mut pending,
                &mut next_seq,
                &mut stats,
            )?;
            match size {
                Some(0) => {}
                Some(size) => {
                    segments.insert(id, size);
                }
                None => {
                    // Unreadable header: set aside, not deleted, so nothing is lost silently.
                    let aside = path.with_extension("seg.corrupt");
                    std::fs::rename(&path, &aside).map_err(io_error(&path))?;
                }
            }
        }
        let writer_id = last.map_or(1, |id| id + 1);
        let writer = create_segment(&dir, writer_id, options.fsync)?;
        segments.insert(writer_id, SEGMENT_HEADER);
        let pending_samples = pending.iter().map(|entry| entry.samples as u64).sum();
        let mut inner = Inner {
            options,
            segments,
            pending,
            pending_samples,
            next_seq,
            durable_before: (writer_id, SEGMENT_HEADER),
            writer,
            stats,
        };
        inner.collect_garbage(true)?;
        inner.write_cursor()?;
        if !inner.pending.is_empty() {
            tracing::info!(dir = %dir.display(), records = inner.pending.len(),
                samples = inner.pending_samples, "queue opened with undelivered records");
        }
        Ok(DiskQueue {
            _lock: lock,
            inner: Mutex::new(inner),
            synced: Mutex::new((writer_id, SEGMENT_HEADER)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends one record; with `fsync` it is on disk when this returns. Makes room by
    /// deleting the oldest segments when the bound would be passed. Concurrent appends share
    /// their `fdatasync`: the first to sync covers every record written before it.
    pub fn append(&self, payload: &[u8], samples: u32) -> Result<(), QueueError> {
        let written = {
            let mut inner = self.lock();
            inner.append(payload, samples)?;
            if !inner.options.fsync {
                return Ok(());
            }
            (inner.writer.id, inner.writer.size)
        };
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *synced >= written {
            return Ok(());
        }
        let (latest, file, durable_before, path) = {
            let inner = self.lock();
            (
                (inner.writer.id, inner.writer.size),
                inner.writer.file.clone(),
                inner.durable_before,
                segment_path(inner.dir(), inner.writer.id),
            )
        };
        if written < durable_before {
            // A rotation closed (and synced) the record's segment meanwhile.
            *synced = (*synced).max(durable_before);
            return Ok(());
        }
        file.sync_data().map_err(io_error(&path))?;
        *synced = (*synced).max(latest);
        Ok(())
    }

    /// Up to `max_records` records from the oldest undelivered one on, stopping before
    /// `max_bytes` of payload (but at least one record). Records found corrupt now are
    /// skipped and counted.
    pub fn peek(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, QueueError> {
        self.lock().peek(max_records, max_bytes)
    }

    /// Marks every record up to `seq` (inclusive) delivered: moves the cursor and deletes
    /// segments no longer needed.
    pub fn ack(&self, seq: u64) -> Result<(), QueueError> {
        self.lock().ack(seq)
    }

    /// The queue's figures now.
    pub fn stats(&self) -> QueueStats {
        let inner = self.lock();
        QueueStats {
            bytes: inner.segments.values().sum(),
            records: inner.pending.len() as u64,
            samples: inner.pending_samples,
            ..inner.stats
        }
    }
}

/// Reads the records of one segment from `start`, appending them to `pending`. Returns the
/// segment's size after any truncation (0: it was empty and is deleted), or `None` when its
/// header is not a queue segment's.
fn scan_segment(
    path: &Path,
    id: u64,
    start: u64,
    is_last: bool,
    pending: &mut VecDeque<Entry>,
    next_seq: &mut u64,
    stats: &mut QueueStats,
) -> Result<Option<u64>, QueueError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    if bytes.len() < SEGMENT_HEADER as usize || &bytes[..SEGMENT_HEADER as usize] != SEGMENT_MAGIC {
        if is_last && bytes.len() < SEGMENT_HEADER as usize && SEGMENT_MAGIC.starts_with(&bytes) {
            // Created but its header never fully written: nothing in it.
            std::fs::remove_file(path).map_err(io_error(path))?;
            return Ok(Some(0));
        }
        stats.corrupt_records += 1;
        tracing::error!(segment = %path.display(), "not a queue segment; set aside as .seg.corrupt");
        return Ok(None);
    }
    let len = bytes.len() as u64;
    let mut pos = start.max(SEGMENT_HEADER).min(len);
    while pos < len {
        let rest = len - pos;
        let header_ok = rest >= RECORD_HEADER;
        let payload_len = if header_ok {
            read_u32(&bytes, pos as usize) as u64
        } else {
            0
        };
        if !header_ok
            || payload_len == 0
            || payload_len > MAX_PAYLOAD
            || RECORD_HEADER + payload_len > rest
        {
            if is_last {
                stats.torn_tails += 1;
                tracing::warn!(segment = %path.display(), offset = pos, bytes = rest,
                    "cutting off a torn tail (a record cut short by a crash; never acknowledged)");
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|file| {
                        file.set_len(pos)?;
                        file.sync_all()
                    })
                    .map_err(io_error(path))?;
                return Ok(Some(pos));
            }
            stats.corrupt_records += 1;
            tracing::error!(segment = %path.display(), offset = pos, bytes = rest,
                "damaged record length; the rest of this segment is skipped");
            return Ok(Some(len));
        }
        let samples = read_u32(&bytes, pos as usize + 4);
        let crc = read_u32(&bytes, pos as usize + 8);
        let body_start = (pos + RECORD_HEADER) as usize;
        let payload = &bytes[body_start..body_start + payload_len as usize];
        if record_crc(payload_len as u32, samples, payload) == crc {
            pending.push_back(Entry {
                seq: *next_seq,
                segment: id,
                offset: pos,
                len: payload_len as u32,
                samples,
            });
            *next_seq += 1;
        } else {
            stats.corrupt_records += 1;
            tracing::error!(segment = %path.display(), offset = pos, samples,
                "queue record fails its crc; skipped, the records after it are kept");
        }
        pos += RECORD_HEADER + payload_len;
    }
    Ok(Some(len))
}

fn create_segment(dir: &Path, id: u64, fsync: bool) -> Result<Writer, QueueError> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(SEGMENT_MAGIC).map_err(io_error(&path))?;
    let file = Arc::new(file);
    if fsync {
        file.sync_data().map_err(io_error(&path))?;
        sync_dir(dir)?;
    }
    Ok(Writer {
        id,
        file,
        size: SEGMENT_HEADER,
    })
}

fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(dir.join(CURSOR_FILE)).ok()?;
    if bytes.len() != 20 || crc32fast::hash(&bytes[..16]) != read_u32(&bytes, 16) {
        tracing::warn!(dir = %dir.display(),
            "the queue cursor is damaged; every record still on disk is delivered again");
        return None;
    }
    let segment = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Some((segment, offset))
}

impl Inner {
    fn dir(&self) -> &Path {
        &self.options.dir
    }

    fn total_bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    fn append(&mut self, payload: &[u8], samples: u32) -> Result<(), QueueError> {
        let size = RECORD_HEADER + payload.len() as u64;
        let max = self.options.max_bytes;
        if size + SEGMENT_HEADER > max || payload.len() as u64 > MAX_PAYLOAD {
            return Err(QueueError::RecordTooLarge { size, max });
        }
        if self.writer.size > SEGMENT_HEADER && self.writer.size + size > self.options.segment_bytes
        {
            self.rotate()?;
        }
        while self.total_bytes() + size > max {
            let oldest = *self.segments.keys().next().expect("the writer's segment");
            if oldest == self.writer.id {
                // Only the current segment is left and it is too full: start a new one, then
                // the loop drops this one.
                self.rotate()?;
                continue;
            }
            self.drop_segment(oldest)?;
        }
        let len = payload.len() as u32;
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&samples.to_le_bytes());
        record.extend_from_slice(&record_crc(len, samples, payload).to_le_bytes());
        record.extend_from_slice(payload);
        let path = segment_path(&self.options.dir, self.writer.id);
        // The sync, with `fsync`, is done by `DiskQueue::append` outside the lock.
        if let Err(error) = (&*self.writer.file).write_all(&record) {
            // Leave no half record behind for the next append to follow.
            let _ = self.writer.file.set_len(self.writer.size);
            return Err(io_error(&path)(error));
        }
        self.pending.push_back(Entry {
            seq: self.next_seq,
            segment: self.writer.id,
            offset: self.writer.size,
            len,
            samples,
        });
        self.next_seq += 1;
        self.pending_samples += samples as u64;
        self.writer.size += size;
        self.segments.insert(self.writer.id, self.writer.size);
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), QueueError> {
        if self.options.fsync {
            let path = segment_path(self.dir(), self.writer.id);
            self.writer.file.sync_data().map_err(io_error(&path))?;
        }
        let id = self.writer.id + 1;
        self.writer = create_segment(&self.options.dir, id, self.options.fsync)?;
        self.segments.insert(id, SEGMENT_HEADER);
        self.durable_before = (id, SEGMENT_HEADER);
        Ok(())
    }

    /// Deletes a segment that is not the writer's, counting its undelivered records dropped.
    fn drop_segment(&mut self, id: u64) -> Result<(), QueueError> {
        let mut records = 0u64;
        let mut samples = 0u64;
        self.pending.retain(|entry| {
            let inside = entry.segment == id;
            if inside {
                records += 1;
                samples += entry.samples as u64;
            }
            !inside
        });
        self.pending_samples -= samples;
        self.stats.dropped_records += records;
        self.stats.dropped_samples += samples;
        self.segments.remove(&id);
        let path = segment_path(self.dir(), id);
        std::fs::remove_file(&path).map_err(io_error(&path))?;
        if records > 0 {
            tracing::warn!(queue = %self.dir().display(), records, samples,
                max_bytes = self.options.max_bytes,
                "queue full: dropped the oldest undelivered records");
        }
        Ok(())
    }

    fn peek(&mut self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, QueueError> {
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut corrupt = BTreeSet::new();
        let mut files: BTreeMap<u64, File> = BTreeMap::new();
        for entry in self.pending.iter() {
            if records.len() >= max_records
                || (!records.is_empty() && bytes + entry.len as usize > max_bytes)
            {
                break;
            }
            let path = segment_path(&self.options.dir, entry.segment);
            if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(entry.segment) {
                slot.insert(File::open(&path).map_err(io_error(&path))?);
            }
            let file = &files[&entry.segment];
            let mut buffer = vec![0u8; RECORD_HEADER as usize + entry.len as usize];
            file.read_exact_at(&mut buffer, entry.offset)
                .map_err(io_error(&path))?;
            let payload = buffer.split_off(RECORD_HEADER as usize);
            let crc = read_u32(&buffer, 8);
            if read_u32(&buffer, 0) != entry.len
                || record_crc(entry.len, entry.samples, &payload) != crc
            {
                tracing::error!(segment = %path.display(), offset = entry.offset,
                    "queue record fails its crc when read back; skipped");
                corrupt.insert(entry.seq);
                continue;
            }
            bytes += payload.len();
            records.push(Record {
                seq: entry.seq,
                samples: entry.samples,
                payload,
            });
        }
        if !corrupt.is_empty() {
            let mut samples = 0;
            self.pending.retain(|entry| {
                let bad = corrupt.contains(&entry.seq);
                if bad {
                    samples += entry.samples as u64;
                }
                !bad
            });
            self.pending_samples -= samples;
            self.stats.corrupt_records += corrupt.len() as u64;
            if records.is_empty() {
                self.write_cursor()?;
                self.collect_garbage(false)?;
            }
        }
        Ok(records)
    }

    fn ack(&mut self, seq: u64) -> Result<(), QueueError> {
        let mut moved = false;
        while let Some(front) = self.pending.front() {
            if front.seq > seq {
                break;
            }
            self.pending_samples -= front.samples as u64;
            self.pending.pop_front();
            moved = true;
        }
        if moved {
            // Everything delivered: start a fresh segment so the delivered bytes of the
            // current one can go (else they stay until the segment fills).
            if self.pending.is_empty()
                && self.writer.size >= RECLAIM_WHEN_IDLE.min(self.options.segment_bytes)
            {
                self.rotate()?;
            }
            self.write_cursor()?;
            self.collect_garbage(false)?;
        }
        Ok(())
    }

    /// Deletes segments holding no undelivered record (never the writer's): all such ones
    /// when `thorough`, else only those before the first undelivered record.
    fn collect_garbage(&mut self, thorough: bool) -> Result<(), QueueError> {
        let first = self
            .pending
            .front()
            .map_or(self.writer.id, |entry| entry.segment);
        let needed: BTreeSet<u64> = if thorough {
            self.pending.iter().map(|entry| entry.segment).collect()
        } else {
            BTreeSet::new()
        };
        let doomed: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|&id| {
                id != self.writer.id && (id < first || (thorough && !needed.contains(&id)))
            })
            .collect();
        for id in doomed {
            self.segments.remove(&id);
            let path = segment_path(self.dir(), id);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Records the position of the first undelivered record (or the end of the log).
    fn write_cursor(&self) -> Result<(), QueueError> {
        let (segment, offset) = self
            .pending
            .front()
            .map_or((self.writer.id, self.writer.size), |entry| {
                (entry.segment, entry.offset)
            });
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&segment.to_le_bytes());
        bytes.extend_from_slice(&offset.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let path = self.dir().join(CURSOR_FILE);
        let temporary = self.dir().join("cursor.tmp");
        let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
        file.write_all(&bytes).map_err(io_error(&temporary))?;
        if self.options.fsync {
            file.sync_data().map_err(io_error(&temporary))?;
        }
        std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options(dir: &Path, max_bytes: u64) -> QueueOptions {
        QueueOptions::new(dir, max_bytes)
    }

    fn payload(seq: usize, len: usize) -> Vec<u8> {
        (0..len).map(|at| (seq * 31 + at) as u8).collect()
    }

    fn all(queue: &DiskQueue) -> Vec<Record> {
        queue.peek(usize::MAX, usize::MAX).unwrap()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|item| item.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn records_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        for seq in 0..5 {
            queue.append(&payload(seq, 100), seq as u32 + 1).unwrap();
        }
        let records = queue.peek(2, usize::MAX).unwrap();
        assert_eq!(records.len(), 2);
        queue.ack(records[1].seq).unwrap();
        assert_eq!(queue.stats().records, 3);
        assert_eq!(queue.stats().samples, 3 + 4 + 5);
        drop(queue);

        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        let records = all(&queue);
        let payloads: Vec<Vec<u8>> = records
            .iter()
            .map(|record| record.payload.clone())
            .collect();
        assert_eq!(
            payloads,
            vec![payload(2, 100), payload(3, 100), payload(4, 100)]
        );
        assert_eq!(records[0].samples, 3);
        queue.ack(records[2].seq).unwrap();
        assert_eq!(queue.stats().records, 0);
        drop(queue);
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        assert!(all(&queue).is_empty());
        // Delivered segments are deleted: only the new writer's is left.
        assert_eq!(segments(dir.path()).len(), 1);
    }

    #[test]
    fn delivered_bytes_are_reclaimed_once_the_queue_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 64 << 20)).unwrap();
        for seq in 0..40 {
            queue.append(&payload(seq, 50_000), 1).unwrap();
        }
        assert!(queue.stats().bytes > 2_000_000);
        let records = queue.peek(usize::MAX, usize::MAX).unwrap();
        queue.ack(records.last().unwrap().seq).unwrap();
        assert_eq!(queue.stats().bytes, SEGMENT_HEADER);
        assert_eq!(segments(dir.path()).len(), 1);
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        let error = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap_err();
        assert!(matches!(error, QueueError::Locked { .. }), "{error}");
        drop(queue);
        DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        for seq in 0..3 {
            queue.append(&payload(seq, 50), 1).unwrap();
        }
        drop(queue);
        let segment = segments(dir.path()).pop().unwrap();
        let size = std::fs::metadata(&segment).unwrap().len();
        // The third record lost its last 7 bytes in a crash.
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(size - 7)
            .unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        let stats = queue.stats();
        assert_eq!(
            (stats.records, stats.torn_tails, stats.corrupt_records),
            (2, 1, 0)
        );
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            SEGMENT_HEADER + 2 * (RECORD_HEADER + 50)
        );
        queue.append(&payload(9, 50), 1).unwrap();
        drop(queue);
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        let payloads: Vec<Vec<u8>> = all(&queue)
            .into_iter()
            .map(|record| record.payload)
            .collect();
        assert_eq!(
            payloads,
            vec![payload(0, 50), payload(1, 50), payload(9, 50)]
        );
        assert_eq!(queue.stats().torn_tails, 0);
    }

    #[test]
    fn a_torn_record_header_is_a_torn_tail_too() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        queue.append(&payload(0, 10), 1).unwrap();
        drop(queue);
        let segment = segments(dir.path()).pop().unwrap();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&[5, 0, 0]).unwrap();
        drop(file);
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        assert_eq!(queue.stats().records, 1);
        assert_eq!(queue.stats().torn_tails, 1);
    }

    #[test]
    fn a_corrupt_middle_record_is_skipped_the_rest_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        for seq in 0..3 {
            queue.append(&payload(seq, 40), 10).unwrap();
        }
        drop(queue);
        let segment = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let second_payload = (SEGMENT_HEADER + RECORD_HEADER + 40 + RECORD_HEADER + 5) as usize;
        bytes[second_payload] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();

        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        let payloads: Vec<Vec<u8>> = all(&queue)
            .into_iter()
            .map(|record| record.payload)
            .collect();
        assert_eq!(payloads, vec![payload(0, 40), payload(2, 40)]);
        let stats = queue.stats();
        assert_eq!(
            (stats.corrupt_records, stats.records, stats.samples),
            (1, 2, 20)
        );
    }

    #[test]
    fn corruption_found_when_reading_back_is_skipped_too() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        for seq in 0..3 {
            queue.append(&payload(seq, 40), 1).unwrap();
        }
        let segment = segments(dir.path()).pop().unwrap();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        let first_payload = SEGMENT_HEADER + RECORD_HEADER;
        file.write_all_at(&[0xAA; 3], first_payload + 1).unwrap();
        let payloads: Vec<Vec<u8>> = all(&queue)
            .into_iter()
            .map(|record| record.payload)
            .collect();
        assert_eq!(payloads, vec![payload(1, 40), payload(2, 40)]);
        assert_eq!(queue.stats().corrupt_records, 1);
        assert_eq!(queue.stats().records, 2);
    }

    #[test]
    fn a_damaged_cursor_means_redelivery_not_loss() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        queue.append(&payload(0, 10), 1).unwrap();
        queue.append(&payload(1, 10), 1).unwrap();
        queue.ack(0).unwrap();
        drop(queue);
        std::fs::write(dir.path().join(CURSOR_FILE), b"garbage").unwrap();
        let queue = DiskQueue::open(options(dir.path(), 1 << 20)).unwrap();
        // The acknowledged record's segment is still there (the writer's at the time).
        assert_eq!(all(&queue).len(), 2);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(dir.path(), 20_000);
        options.segment_bytes = 4_000;
        let queue = DiskQueue::open(options.clone()).unwrap();
        let appended = 100;
        for seq in 0..appended {
            queue.append(&payload(seq, 988), 2).unwrap();
            let on_disk: u64 = segments(dir.path())
                .iter()
                .map(|path| std::fs::metadata(path).unwrap().len())
                .sum();
            assert!(on_disk <= 20_000, "{on_disk} bytes on disk after {seq}");
            assert_eq!(queue.stats().bytes, on_disk);
        }
        let stats = queue.stats();
        assert!(stats.dropped_records > 0);
        assert_eq!(stats.dropped_records + stats.records, appended as u64);
        assert_eq!(stats.dropped_samples, 2 * stats.dropped_records);
        // What is left is the newest, in order.
        let records = all(&queue);
        let first_kept = appended - records.len();
        for (at, record) in records.iter().enumerate() {
            assert_eq!(record.payload, payload(first_kept + at, 988));
        }
        let error = queue.append(&vec![0; 30_000], 1).unwrap_err();
        assert!(
            matches!(error, QueueError::RecordTooLarge { .. }),
            "{error}"
        );
        drop(queue);
        let queue = DiskQueue::open(options).unwrap();
        assert_eq!(all(&queue).len(), records.len());
    }

    #[test]
    fn concurrent_appends_with_fsync_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(dir.path(), 1 << 20);
        // Small segments: rotations happen while other threads wait for their sync.
        options.segment_bytes = 2_000;
        let queue = Arc::new(DiskQueue::open(options.clone()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for at in 0..25 {
                        queue.append(&payload(thread * 100 + at, 90), 1).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(queue);
        let queue = DiskQueue::open(options).unwrap();
        let mut payloads: Vec<Vec<u8>> = all(&queue)
            .into_iter()
            .map(|record| record.payload)
            .collect();
        payloads.sort();
        let mut expected: Vec<Vec<u8>> = (0..8)
            .flat_map(|thread| (0..25).map(move |at| payload(thread * 100 + at, 90)))
            .collect();
        expected.sort();
        assert_eq!(payloads, expected);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Deliver(usize),
        Reopen,
        TearTail(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..300).prop_map(Op::Append),
            2 => (1usize..4).prop_map(Op::Deliver),
            1 => Just(Op::Reopen),
            1 => (1u8..20).prop_map(Op::TearTail),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a model (a list of undelivered payloads): appends, deliveries, restarts and
        /// crashes that tear the last append give back exactly the records appended and not
        /// yet delivered, in order — the torn one excepted.
        #[test]
        fn the_queue_behaves_like_a_list(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut options = options(dir.path(), 1 << 20);
            options.segment_bytes = 1_000;
            options.fsync = false;
            let mut queue = DiskQueue::open(options.clone()).unwrap();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut counter = 0;
            // Whether the last operation was an append into the current segment.
            let mut last_append_len = None;
            for op in ops {
                match op {
                    Op::Append(len) => {
                        counter += 1;
                        let bytes = payload(counter, len);
                        queue.append(&bytes, 1).unwrap();
                        model.push_back(bytes);
                        last_append_len = Some(len);
                        continue;
                    }
                    Op::Deliver(count) => {
                        let records = queue.peek(count, usize::MAX).unwrap();
                        prop_assert_eq!(records.len(), count.min(model.len()));
                        for record in &records {
                            prop_assert_eq!(&record.payload, &model.pop_front().unwrap());
                        }
                        if let Some(last) = records.last() {
                            queue.ack(last.seq).unwrap();
                        }
                    }
                    Op::Reopen => {
                        drop(queue);
                        queue = DiskQueue::open(options.clone()).unwrap();
                    }
                    Op::TearTail(cut) => {
                        if let Some(len) = last_append_len {
                            drop(queue);
                            let segment = segments(dir.path()).pop().unwrap();
                            let size = std::fs::metadata(&segment).unwrap().len();
                            let cut = (cut as u64).min(len as u64 + RECORD_HEADER - 1).max(1);
                            OpenOptions::new().write(true).open(&segment).unwrap()
                                .set_len(size - cut).unwrap();
                            model.pop_back();
                            queue = DiskQueue::open(options.clone()).unwrap();
                            prop_assert_eq!(queue.stats().torn_tails, 1);
                        }
                    }
                }
                last_append_len = None;
            }
            let rest: Vec<Vec<u8>> = all(&queue).into_iter().map(|record| record.payload).collect();
            prop_assert_eq!(rest, Vec::from(model));
            prop_assert_eq!(queue.stats().corrupt_records, 0);
        }
    }
}
