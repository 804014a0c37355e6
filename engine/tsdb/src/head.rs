//! The head: every recent series in memory, sharded by label hash.
//!
//! Appends for a batch are grouped by shard; each shard is locked once, its series looked up or
//! created (labels interned, postings added), samples appended into the open Gorilla chunk (cut
//! at [`HeadOptions::chunk_samples`]), and the records for the WAL framed and handed to the
//! log's buffer before the lock is released, so the log holds every series' samples in the
//! order the head applied them. The caller then waits for the group commit outside all locks.
//!
//! Series references ([`SeriesRef`]) encode the shard in their low bits, so the reference a
//! series had before a restart is valid after replay and WAL records need no translation.

mod chunk_files;
mod series;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use lookout_model::{Label, LabelLimits, Labels, Matcher, Sample, SeriesIdentity};
use lookout_storage::{RejectReason, Series, WriteBatch, WriteOutcome};
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;

use crate::chunk::MAX_SAMPLES_PER_CHUNK;
use crate::error::{Result, TsdbError};
use crate::index::MemIndex;
use crate::symbols::{Symbol, SymbolTable};
use crate::wal::record::{
    encode_samples, encode_series, encode_tombstones, SampleEntry, TombstoneEntry,
};
use crate::wal::{Ticket, Wal};
use series::{AppendResult, MemSeries};

/// Number of shards. Part of the on-disk contract: a reference's low bits are its shard.
pub const SHARD_COUNT: usize = 16;
const SHARD_BITS: u32 = SHARD_COUNT.trailing_zeros();

/// Series from which a listing builds its labels on two cores (a thread costs tens of
/// microseconds; ten thousand label sets take milliseconds).
pub(crate) const PARALLEL_LABELS: usize = 4096;

/// The first series of a label name or value, and whether it has more: almost always the
/// first one is live, and copying a value's whole postings list under the index lock cost
/// more than the check (label values of `instance` over 100k series). The others are looked
/// at only when the first is not live.
#[derive(Debug, Default)]
struct Candidates {
    first: Option<u32>,
    more: bool,
}

impl Candidates {
    fn of(series: &RoaringBitmap) -> Candidates {
        Candidates {
            first: series.min(),
            more: series.len() > 1,
        }
    }
}

/// Identifies a series in the head (and in the WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesRef(pub u32);

impl SeriesRef {
    fn new(shard: usize, local: usize) -> Option<SeriesRef> {
        let local = u32::try_from(local).ok()?;
        let id = local
            .checked_mul(SHARD_COUNT as u32)?
            .checked_add(shard as u32)?;
        Some(SeriesRef(id))
    }

    fn shard(self) -> usize {
        (self.0 as usize) & (SHARD_COUNT - 1)
    }

    fn local(self) -> usize {
        (self.0 >> SHARD_BITS) as usize
    }
}

/// Hasher for keys that are already good hashes: uses the key's bits as they are.
#[derive(Debug, Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        // The low bits chose the shard; rotate so the table sees different bits.
        self.0.rotate_right(SHARD_BITS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn shard_of(hash: u64) -> usize {
    (hash as usize) & (SHARD_COUNT - 1)
}

/// Options of the head, validated at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadOptions {
    /// Limits every written series must satisfy.
    pub label_limits: LabelLimits,
    /// Samples per chunk before it is cut (Prometheus uses 120).
    pub chunk_samples: usize,
    /// How far behind the newest sample of the head a sample may be and still be accepted
    /// out of order, in ms (1 h by default); 0 accepts none. Older ones are rejected with
    /// [`RejectReason::OutOfWindow`].
    pub out_of_order_window_ms: i64,
    /// Samples more than this many ms ahead of the wall clock are refused as
    /// [`RejectReason::OutOfBounds`] (1 day by default; `None` accepts any). One sample stamped
    /// far in the future (seconds sent as milliseconds, a broken clock) would otherwise move
    /// the head's newest time there, and with it block cuts, the out-of-order window and
    /// retention, which would refuse or delete everything else.
    pub max_future_ms: Option<i64>,
    /// The cardinality budget: most series the head may hold (`None`: no limit). When it is
    /// full, a sample of a series the head does not hold is refused as
    /// [`RejectReason::SeriesLimit`], while samples of series it holds are stored as usual.
    /// Series leave the head when their samples are cut into a block and they receive no
    /// more, which frees room. WAL replay is not limited: what was accepted stays.
    pub max_series: Option<u64>,
}

/// Default limit on how far ahead of the wall clock a sample may be: one day.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 24 * 3_600_000;

/// Default out-of-order window: one hour.
pub const DEFAULT_OUT_OF_ORDER_WINDOW_MS: i64 = 3_600_000;

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            label_limits: LabelLimits::default(),
            chunk_samples: MAX_SAMPLES_PER_CHUNK,
            out_of_order_window_ms: DEFAULT_OUT_OF_ORDER_WINDOW_MS,
            max_future_ms: Some(DEFAULT_MAX_FUTURE_MS),
            max_series: None,
        }
    }
}

impl HeadOptions {
    /// Checks the options once, at open.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_samples == 0 || self.chunk_samples > usize::from(u16::MAX) {
            return Err(TsdbError::InvalidOptions {
                reason: format!(
                    "chunk_samples must be in 1..=65535, got {}",
                    self.chunk_samples
                ),
            });
        }
        if self.max_series == Some(0) {
            return Err(TsdbError::InvalidOptions {
                reason: "max_series must be at least 1 (None for no limit)".to_owned(),
            });
        }
        if self.out_of_order_window_ms < 0 {
            return Err(TsdbError::InvalidOptions {
                reason: format!(
                    "the out-of-order window must not be negative, got {} ms",
                    self.out_of_order_window_ms
                ),
            });
        }
        Ok(())
    }
}

/// Slots of one slab segment.
const SLAB_SEGMENT: usize = 256;

/// Series stored inline in fixed-size segments: no pointer to chase per lookup (one cache miss
/// fewer than boxing each series) and no large copies when the shard grows.
#[derive(Debug, Default)]
struct SeriesSlab {
    segments: Vec<Box<[Option<MemSeries>]>>,
    /// One past the highest index ever used.
    len: usize,
}

impl SeriesSlab {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Option<&MemSeries> {
        self.segments.get(index / SLAB_SEGMENT)?[index % SLAB_SEGMENT].as_ref()
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut MemSeries> {
        self.segments.get_mut(index / SLAB_SEGMENT)?[index % SLAB_SEGMENT].as_mut()
    }

    fn insert(&mut self, index: usize, series: MemSeries) {
        while self.segments.len() <= index / SLAB_SEGMENT {
            self.segments
                .push((0..SLAB_SEGMENT).map(|_| None).collect());
        }
        self.segments[index / SLAB_SEGMENT][index % SLAB_SEGMENT] = Some(series);
        self.len = self.len.max(index + 1);
    }

    /// Makes sure `index` is never handed out to a new series.
    fn reserve(&mut self, index: usize) {
        self.len = self.len.max(index + 1);
    }

    fn take(&mut self, index: usize) -> Option<MemSeries> {
        self.segments.get_mut(index / SLAB_SEGMENT)?[index % SLAB_SEGMENT].take()
    }

    fn iter(&self) -> impl Iterator<Item = &MemSeries> {
        self.segments
            .iter()
            .flat_map(|segment| segment.iter().flatten())
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// First series with each hash.
    by_hash: HashMap<u64, u32, BuildHasherDefault<PrehashedKey>>,
    /// Further series whose labels hash like an earlier one (practically never used).
    collisions: HashMap<u64, Vec<u32>, BuildHasherDefault<PrehashedKey>>,
    /// Series by local index; `None` where a series was removed (indices are not reused).
    series: SeriesSlab,
}

impl Shard {
    fn get(&self, local: usize) -> Option<&MemSeries> {
        self.series.get(local)
    }

    fn get_mut(&mut self, local: usize) -> Option<&mut MemSeries> {
        self.series.get_mut(local)
    }

    /// The series with these labels. Identity is the stable hash plus the secret-seeded
    /// [`Labels::identity_hash`] (`check`), both computed once when the labels were built:
    /// comparing the strings themselves costs dozens of cache misses per sample, while a false
    /// match needs both hashes to collide.
    fn find(&self, identity: &SeriesIdentity) -> Option<u32> {
        let first = *self.by_hash.get(&identity.hash)?;
        let equal = |local: u32| {
            self.get(local as usize).is_some_and(|series| {
                series.check == identity.check && series.labels.len() == identity.len as usize
            })
        };
        if equal(first) {
            return Some(first);
        }
        self.collisions
            .get(&identity.hash)?
            .iter()
            .copied()
            .find(|local| equal(*local))
    }

    fn insert(&mut self, local: usize, series: MemSeries) {
        let hash = series.hash;
        self.series.insert(local, series);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(local as u32);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(hash).or_default().push(local as u32);
            }
        }
    }

    fn remove(&mut self, local: usize) -> Option<MemSeries> {
        let series = self.series.take(local)?;
        let hash = series.hash;
        let local = local as u32;
        if self.by_hash.get(&hash) == Some(&local) {
            self.by_hash.remove(&hash);
            if let Some(mut others) = self.collisions.remove(&hash) {
                let promoted = others.remove(0);
                self.by_hash.insert(hash, promoted);
                if !others.is_empty() {
                    self.collisions.insert(hash, others);
                }
            }
        } else if let Some(others) = self.collisions.get_mut(&hash) {
            others.retain(|other| *other != local);
            if others.is_empty() {
                self.collisions.remove(&hash);
            }
        }
        Some(series)
    }
}

/// Two interned label sets (sorted by name) compared as their [`Labels`] compare; equal
/// symbols are equal strings, so only the first differing label needs its text.
fn interned_cmp(
    a: &[(Symbol, Symbol)],
    b: &[(Symbol, Symbol)],
    reader: &crate::symbols::SymbolReader<'_>,
) -> std::cmp::Ordering {
    for (left, right) in a.iter().zip(b) {
        if left == right {
            continue;
        }
        let order = reader
            .resolve(left.0)
            .cmp(reader.resolve(right.0))
            .then_with(|| reader.resolve(left.1).cmp(reader.resolve(right.1)));
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// The labels of an interned label set (sorted by name).
fn interned_labels(
    labels: &[(Symbol, Symbol)],
    reader: &crate::symbols::SymbolReader<'_>,
) -> Labels {
    Labels::from_sorted_iter_unchecked(
        labels
            .iter()
            .map(|(name, value)| Label::new(reader.resolve(*name), reader.resolve(*value))),
    )
}

/// Counters of the head, for self-metrics and tests.
#[derive(Debug, Default)]
pub struct HeadCounters {
    /// Samples stored.
    pub samples_appended: AtomicU64,
    /// Series created.
    pub series_created: AtomicU64,
    /// Series removed (deleted or truncated away).
    pub series_removed: AtomicU64,
    /// WAL samples whose series reference was unknown during replay.
    pub replay_unknown_refs: AtomicU64,
    /// Samples refused, by reason, in the order of [`RejectReason::ALL`].
    pub rejected: [AtomicU64; RejectReason::ALL.len()],
}

/// A snapshot of the head's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Live series.
    pub series: u64,
    /// Chunks, open ones included.
    pub chunks: u64,
    /// Distinct interned strings.
    pub symbols: u64,
    /// Oldest sample time (ms), `i64::MAX` when empty.
    pub min_time: i64,
    /// Newest sample time (ms), `i64::MIN` when empty.
    pub max_time: i64,
    /// Estimated heap bytes of series and chunks (excluding symbols and index).
    pub series_heap_bytes: u64,
    /// Estimated heap bytes of the index postings.
    pub index_heap_bytes: u64,
    /// Full chunks kept in memory-mapped head chunk files rather than on the heap.
    pub mapped_chunks: u64,
    /// Head chunk files in use.
    pub chunk_files: u64,
}

/// The in-memory part of the engine.
#[derive(Debug)]
pub struct Head {
    shards: Box<[RwLock<Shard>]>,
    symbols: SymbolTable,
    index: RwLock<MemIndex>,
    wal: Option<Wal>,
    /// Where full chunks go when the store has a directory.
    chunk_files: Option<chunk_files::HeadChunkFiles>,
    options: HeadOptions,
    min_time: AtomicI64,
    max_time: AtomicI64,
    /// Samples older than this are refused ([`RejectReason::OutOfBounds`]): their time range
    /// was already written to a block.
    min_valid_time: AtomicI64,
    /// WAL references replayed under a different live reference (same labels).
    aliases: Mutex<HashMap<u32, SeriesRef>>,
    /// Series held, kept beside the index's count so that appends to different shards can
    /// reserve room under [`HeadOptions::max_series`] without a shared lock.
    live_series: AtomicU64,
    counters: HeadCounters,
}

impl Head {
    /// An empty head that logs to `wal` when given.
    pub fn new(options: HeadOptions, wal: Option<Wal>) -> Result<Head> {
        options.validate()?;
        Ok(Head {
            shards: (0..SHARD_COUNT)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            symbols: SymbolTable::new(),
            index: RwLock::new(MemIndex::new()),
            wal,
            chunk_files: None,
            options,
            min_time: AtomicI64::new(i64::MAX),
            min_valid_time: AtomicI64::new(i64::MIN),
            max_time: AtomicI64::new(i64::MIN),
            aliases: Mutex::new(HashMap::new()),
            live_series: AtomicU64::new(0),
            counters: HeadCounters::default(),
        })
    }

    /// Attaches the log after replay (replay must not log what it reads).
    pub(crate) fn set_wal(&mut self, wal: Wal) {
        self.wal = Some(wal);
    }

    /// Moves full chunks to memory-mapped files under `dir` from now on (replay included).
    pub(crate) fn use_chunk_files(&mut self, dir: &std::path::Path) -> Result<()> {
        self.chunk_files = Some(chunk_files::HeadChunkFiles::open(dir)?);
        Ok(())
    }

    /// Writes the series' newly full chunks to the head chunk files. A failure leaves them on
    /// the heap (correct, only bigger) and is logged.
    fn offload(&self, series: &mut MemSeries) {
        let Some(files) = &self.chunk_files else {
            return;
        };
        if series.has_heap_chunks() {
            if let Err(error) = series.offload(files) {
                tracing::warn!(%error, "could not move a full chunk to a head chunk file; it stays in memory");
            }
        }
    }

    /// The attached log.
    pub fn wal(&self) -> Option<&Wal> {
        self.wal.as_ref()
    }

    /// Counters.
    pub fn counters(&self) -> &HeadCounters {
        &self.counters
    }

    /// Options in force.
    pub fn options(&self) -> &HeadOptions {
        &self.options
    }

    /// Oldest and newest sample time, if any sample was ever appended.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min_time = self.min_time.load(Ordering::Acquire);
        let max_time = self.max_time.load(Ordering::Acquire);
        (min_time <= max_time).then_some((min_time, max_time))
    }

    /// Refuses samples older than `t` from now on (never moves back).
    pub fn set_min_valid_time(&self, t: i64) {
        self.min_valid_time.fetch_max(t, Ordering::AcqRel);
    }

    /// The oldest time an append may still use.
    pub fn min_valid_time(&self) -> i64 {
        self.min_valid_time.load(Ordering::Acquire)
    }

    fn note_time(&self, t: i64) {
        self.min_time.fetch_min(t, Ordering::AcqRel);
        self.max_time.fetch_max(t, Ordering::AcqRel);
    }

    /// Appends a batch: validates labels, applies every sample in order and logs it. Returns
    /// once the WAL holds every accepted sample.
    pub fn append(&self, batch: &WriteBatch) -> Result<WriteOutcome> {
        let mut outcome = WriteOutcome::default();
        let mut per_shard: Vec<Vec<Entry>> = vec![Vec::new(); SHARD_COUNT];
        for (position, series) in batch.series.iter().enumerate() {
            if !series.samples.is_empty() {
                per_shard[shard_of(series.labels.stable_hash())].push(Entry::Labeled(position));
            }
        }
        for (position, series) in batch.known.iter().enumerate() {
            if !series.samples.is_empty() {
                per_shard[shard_of(series.identity.hash)].push(Entry::Known(position));
            }
        }
        let mut last_ticket: Option<Ticket> = None;
        let future_limit = match self.options.max_future_ms {
            Some(millis) => wall_clock_ms().saturating_add(millis),
            None => i64::MAX,
        };
        let mut appended_min = i64::MAX;
        let mut appended_max = i64::MIN;
        let mut wal_buffer = Vec::new();
        let mut wal_samples: Vec<SampleEntry> = Vec::new();
        let mut refusals: Vec<(RejectReason, i64, Refusal)> = Vec::new();
        for (shard_index, entries) in per_shard.iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            wal_buffer.clear();
            wal_samples.clear();
            let mut created: Vec<(SeriesRef, &Labels)> = Vec::new();
            let mut shard = self.shards[shard_index].write();
            for &entry in entries {
                let (identity, labels, samples) = match entry {
                    Entry::Labeled(position) => {
                        let input = &batch.series[position];
                        (input.labels.identity(), Some(&input.labels), &input.samples)
                    }
                    Entry::Known(position) => {
                        let input = &batch.known[position];
                        (input.identity, None, &input.samples)
                    }
                };
                let series_ref = match (shard.find(&identity), labels) {
                    (Some(local), _) => SeriesRef::new(shard_index, local as usize),
                    (None, None) => {
                        if let Entry::Known(position) = entry {
                            outcome.unresolved.push(position);
                        }
                        continue;
                    }
                    (None, Some(labels)) => {
                        // Labels are validated once, when the series is created.
                        if let Err(error) = labels.validate(&self.options.label_limits) {
                            outcome.reject(
                                RejectReason::InvalidLabels,
                                samples.len() as u64,
                                || format!("{error}"),
                            );
                            continue;
                        }
                        if !self.reserve_series() {
                            let budget = self.options.max_series.unwrap_or(u64::MAX);
                            outcome.reject(RejectReason::SeriesLimit, samples.len() as u64, || {
                                format!(
                                    "{labels}: new series refused, the cardinality budget of \
                                     {budget} active series is full"
                                )
                            });
                            continue;
                        }
                        let local = shard.series.len();
                        let series_ref = SeriesRef::new(shard_index, local);
                        match series_ref {
                            Some(series_ref) => {
                                self.create_series(&mut shard, series_ref, labels, identity.check);
                                created.push((series_ref, labels));
                            }
                            None => {
                                self.live_series.fetch_sub(1, Ordering::AcqRel);
                            }
                        }
                        series_ref
                    }
                };
                let Some(series_ref) = series_ref else {
                    outcome.reject(RejectReason::SeriesLimit, samples.len() as u64, || {
                        "the head's series references are exhausted".to_owned()
                    });
                    continue;
                };
                let series = shard
                    .get_mut(series_ref.local())
                    .expect("a found or created series is present");
                let min_valid_time = self.min_valid_time.load(Ordering::Acquire);
                let window = self.options.out_of_order_window_ms;
                let window_start = self.max_time.load(Ordering::Acquire).saturating_sub(window);
                // Refusals are counted at once and, while the outcome has room for messages,
                // kept to be described once the series is no longer borrowed.
                let room = outcome.message_room();
                let mut refuse = |reason: RejectReason, t: i64, why: Refusal| {
                    outcome.count_rejected(reason, 1);
                    if refusals.len() < room {
                        refusals.push((reason, t, why));
                    }
                };
                let mut appended = 0;
                for sample in samples {
                    let t = sample.timestamp.0;
                    if t > future_limit {
                        refuse(
                            RejectReason::OutOfBounds,
                            t,
                            Refusal::Future {
                                ahead: t.saturating_sub(future_limit),
                            },
                        );
                        continue;
                    }
                    let mut result = if t >= min_valid_time {
                        series.append(t, sample.value, self.options.chunk_samples)
                    } else {
                        AppendResult::OutOfOrder
                    };
                    if result == AppendResult::OutOfOrder {
                        if window > 0 && t >= window_start {
                            result = series.insert_out_of_order(t, sample.value);
                        } else if window > 0 {
                            refuse(
                                RejectReason::OutOfWindow,
                                t,
                                Refusal::OutOfWindow { window },
                            );
                            continue;
                        } else if t < min_valid_time {
                            refuse(
                                RejectReason::OutOfBounds,
                                t,
                                Refusal::InBlock { min_valid_time },
                            );
                            continue;
                        } else {
                            refuse(RejectReason::OutOfOrder, t, Refusal::OlderThanNewest);
                            continue;
                        }
                    }
                    match result {
                        AppendResult::Appended => {
                            appended += 1;
                            appended_min = appended_min.min(t);
                            appended_max = appended_max.max(t);
                            if self.wal.is_some() {
                                wal_samples.push(SampleEntry {
                                    id: series_ref.0,
                                    t,
                                    v: sample.value,
                                });
                            }
                        }
                        AppendResult::Duplicate => appended += 1,
                        AppendResult::Conflict => refuse(
                            RejectReason::DuplicateSampleForTimestamp,
                            t,
                            Refusal::Conflict,
                        ),
                        AppendResult::OutOfOrder => {
                            refuse(RejectReason::OutOfOrder, t, Refusal::OlderThanNewest)
                        }
                    }
                }
                outcome.accepted += appended;
                self.offload(series);
                if !refusals.is_empty() {
                    let named = match labels {
                        Some(labels) => labels.clone(),
                        None => interned_labels(
                            &shard
                                .get(series_ref.local())
                                .expect("a found series is present")
                                .labels,
                            &self.symbols.reader(),
                        ),
                    };
                    for (reason, t, why) in refusals.drain(..) {
                        outcome.add_message(reason, || format!("{named} at {t}: {why}"));
                    }
                }
            }
            if let Some(wal) = &self.wal {
                if !created.is_empty() {
                    let pairs: Vec<(u32, Vec<(&str, &str)>)> = created
                        .iter()
                        .map(|(series_ref, labels)| {
                            let pairs = labels
                                .iter()
                                .map(|label| (label.name.as_str(), label.value.as_str()))
                                .collect();
                            (series_ref.0, pairs)
                        })
                        .collect();
                    encode_series(
                        &mut wal_buffer,
                        pairs.iter().map(|(id, pairs)| (*id, pairs.as_slice())),
                    );
                }
                encode_samples(&mut wal_buffer, &wal_samples);
                if !wal_buffer.is_empty() {
                    last_ticket = Some(wal.log(&wal_buffer));
                }
            }
            drop(shard);
        }
        if appended_min <= appended_max {
            self.note_time(appended_min);
            self.note_time(appended_max);
        }
        if let (Some(wal), Some(ticket)) = (&self.wal, last_ticket) {
            wal.wait(ticket)?;
        }
        self.counters
            .samples_appended
            .fetch_add(outcome.accepted, Ordering::Relaxed);
        for (reason, count) in &outcome.rejected {
            if let Some(position) = RejectReason::ALL.iter().position(|known| known == reason) {
                self.counters.rejected[position].fetch_add(*count, Ordering::Relaxed);
            }
        }
        Ok(outcome)
    }

    /// Takes room for one new series under [`HeadOptions::max_series`]; false when the
    /// budget is full. The room is counted in `live_series` at once, so appends racing on
    /// other shards cannot overshoot the budget.
    fn reserve_series(&self) -> bool {
        let budget = self.options.max_series.unwrap_or(u64::MAX);
        self.live_series
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < budget).then_some(live + 1)
            })
            .is_ok()
    }

    /// Interns the labels, stores the series at `series_ref` and indexes it. The caller has
    /// counted it in `live_series`.
    fn create_series(&self, shard: &mut Shard, series_ref: SeriesRef, labels: &Labels, check: u64) {
        let mut pairs: Vec<(Symbol, Symbol)> = Vec::with_capacity(labels.len());
        let mut shared: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(labels.len());
        for label in labels.iter() {
            let (name, name_text) = self.symbols.intern_shared(&label.name);
            let (value, value_text) = self.symbols.intern_shared(&label.value);
            pairs.push((name, value));
            shared.push((name_text, value_text));
        }
        shard.insert(
            series_ref.local(),
            MemSeries::new(pairs.into_boxed_slice(), labels.stable_hash(), check),
        );
        self.index.write().add(
            series_ref.0,
            shared.iter().map(|(name, value)| (name, value)),
        );
        self.counters.series_created.fetch_add(1, Ordering::Relaxed);
    }

    fn remove_series(&self, shard: &mut Shard, series_ref: SeriesRef) {
        let Some(series) = shard.remove(series_ref.local()) else {
            return;
        };
        let reader = self.symbols.reader();
        let shared: Vec<(&Arc<str>, &Arc<str>)> = series
            .labels
            .iter()
            .map(|(name, value)| (reader.resolve_shared(*name), reader.resolve_shared(*value)))
            .collect();
        self.index.write().remove(series_ref.0, shared);
        self.live_series.fetch_sub(1, Ordering::AcqRel);
        self.counters.series_removed.fetch_add(1, Ordering::Relaxed);
    }

    /// References of the series matching every matcher, in reference order.
    pub fn postings(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        let index = self.index.read();
        let bitmap = if matchers.is_empty() {
            index.all().clone()
        } else {
            index.postings_for_matchers(matchers)
        };
        bitmap.into_iter().map(SeriesRef).collect()
    }

    /// Labels of the given series that have samples in `[mint, maxt]`, sorted by labels.
    /// The series are sorted on their interned labels first (equal symbols need no string
    /// compare), then their labels are built.
    pub fn sorted_labels(
        &self,
        refs: &[SeriesRef],
        mint: i64,
        maxt: i64,
    ) -> Vec<(Labels, SeriesRef)> {
        let mut live = Vec::with_capacity(refs.len());
        for &series_ref in refs {
            let shard = self.shards[series_ref.shard()].read();
            let Some(series) = shard.get(series_ref.local()) else {
                continue;
            };
            // Cheap even for wide ranges (chunk bounds settle it), and it leaves out series
            // that were created by a refused sample and hold none.
            if series.has_samples_in(mint, maxt) {
                live.push((series.labels.clone(), series_ref));
            }
        }
        // No shard lock is held from here: appends take a shard's lock, then the symbols'.
        // The symbols' read lock is held for the sort (new symbols wait for it: about 1 ms per
        // 3000 series), then taken again for every batch of labels built.
        {
            let reader = self.symbols.reader();
            live.sort_unstable_by(|a, b| interned_cmp(&a.0, &b.0, &reader));
        }
        // Building the labels is most of the work: a long list is split across the cores.
        type Listed = (Box<[(Symbol, Symbol)]>, SeriesRef);
        let build =
            |part: &[Listed]| {
                let mut out = Vec::with_capacity(part.len());
                for batch in part.chunks(1024) {
                    let reader = self.symbols.reader();
                    out.extend(batch.iter().map(|(labels, series_ref)| {
                        (interned_labels(labels, &reader), *series_ref)
                    }));
                }
                out
            };
        if live.len() < PARALLEL_LABELS {
            return build(&live);
        }
        let (first, second) = live.split_at(live.len() / 2);
        let (mut out, second) = lookout_storage::join(|| build(first), || build(second));
        out.extend(second);
        out
    }

    /// Samples of one series in `[mint, maxt]` appended to `out`; `false` if the series is
    /// gone.
    pub fn read_samples(
        &self,
        series_ref: SeriesRef,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> bool {
        let shard = self.shards[series_ref.shard()].read();
        match shard.get(series_ref.local()) {
            Some(series) => {
                series.read_range(mint, maxt, out);
                true
            }
            None => false,
        }
    }

    /// Every matching series with its samples in `[mint, maxt]`, sorted by labels.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Series> {
        self.select_iter(matchers, mint, maxt).collect()
    }

    /// As [`Head::select`], reading each series' samples only when the iterator gets to it:
    /// what block writes stream, so that memory holds every label set but the samples of one
    /// series at a time, not every sample of the range.
    pub fn select_iter(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = Series> + '_ {
        let refs = self.postings(matchers);
        self.sorted_labels(&refs, mint, maxt)
            .into_iter()
            .filter_map(move |(labels, series_ref)| {
                let mut samples = Vec::new();
                self.read_samples(series_ref, mint, maxt, &mut samples);
                (!samples.is_empty()).then_some(Series { labels, samples })
            })
    }

    /// Whether `[mint, maxt]` includes every sample of the head: then, without matchers, the
    /// index alone answers label queries.
    fn covers(&self, mint: i64, maxt: i64) -> bool {
        match self.time_range() {
            Some((min_time, max_time)) => mint <= min_time && maxt >= max_time,
            None => true,
        }
    }

    /// Sorted label names of matching series with samples in `[mint, maxt]`.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: Option<usize>,
    ) -> Vec<String> {
        let mut names = Vec::new();
        self.add_label_names(matchers, mint, maxt, &mut names);
        if let Some(limit) = limit {
            names.truncate(limit);
        }
        names
    }

    /// Adds to `known` (sorted, distinct) the label names of matching series with samples in
    /// `[mint, maxt]` that it lacks; names it holds are not looked at.
    pub(crate) fn add_label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        known: &mut Vec<String>,
    ) {
        // Without matchers over the whole head, the index is the answer.
        let covered = matchers.is_empty() && self.covers(mint, maxt);
        // Under the index lock: each missing name with the series that have it. Series are
        // looked at once the lock is released (appends take the locks the other way).
        let name_series = |index: &MemIndex, name: &str| {
            let mut series = RoaringBitmap::new();
            for (_, postings) in index.values_with_postings(name) {
                series |= postings;
            }
            series
        };
        let missing: Vec<(Arc<str>, Candidates)> = {
            let index = self.index.read();
            let candidates = (!matchers.is_empty()).then(|| index.postings_for_matchers(matchers));
            let names = index
                .names_with_values()
                .into_iter()
                .map(|(name, values)| (name.as_bytes(), (name, values)));
            crate::index::missing_from(known, names)
                .into_iter()
                .map(|(_, (name, values))| {
                    let candidates = match &candidates {
                        _ if covered => Candidates::default(),
                        Some(candidates) => {
                            Candidates::of(&(name_series(&index, name) & candidates))
                        }
                        // Any series of the name will do first: the first value's.
                        None => match values.values().next() {
                            Some(postings) => Candidates {
                                first: postings.min(),
                                more: values.len() > 1 || postings.len() > 1,
                            },
                            None => Candidates::default(),
                        },
                    };
                    (Arc::clone(name), candidates)
                })
                .collect()
        };
        self.add_live(known, missing, covered, (mint, maxt), matchers, name_series);
    }

    /// Sorted values of `name` over matching series with samples in `[mint, maxt]`.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: Option<usize>,
    ) -> Vec<String> {
        let mut values = Vec::new();
        self.add_label_values(name, matchers, mint, maxt, &mut values);
        if let Some(limit) = limit {
            values.truncate(limit);
        }
        values
    }

    /// Adds to `known` (sorted, distinct) the values of `name` over matching series with
    /// samples in `[mint, maxt]` that it lacks; values it holds are not looked at. Per
    /// missing value, the first series with a sample in the range settles it.
    pub(crate) fn add_label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        known: &mut Vec<String>,
    ) {
        // Without matchers over the whole head, the index is the answer.
        let covered = matchers.is_empty() && self.covers(mint, maxt);
        // Under the index lock: each missing value with its matching series. Series are
        // looked at once the lock is released (appends take the locks the other way).
        let missing: Vec<(Arc<str>, Candidates)> = {
            let index = self.index.read();
            let candidates = (!matchers.is_empty()).then(|| index.postings_for_matchers(matchers));
            let values = index
                .values_with_postings(name)
                .map(|(value, postings)| (value.as_bytes(), (value, postings)));
            crate::index::missing_from(known, values)
                .into_iter()
                .map(|(_, (value, postings))| {
                    let candidates = match &candidates {
                        _ if covered => Candidates::default(),
                        Some(candidates) => Candidates::of(&(postings & candidates)),
                        None => Candidates::of(postings),
                    };
                    (Arc::clone(value), candidates)
                })
                .collect()
        };
        let value_series = |index: &MemIndex, value: &str| {
            index
                .value_postings(name, value)
                .cloned()
                .unwrap_or_default()
        };
        self.add_live(
            known,
            missing,
            covered,
            (mint, maxt),
            matchers,
            value_series,
        );
    }

    /// Adds to `known` (sorted, distinct) the names or values of `missing` that some of their
    /// series holds a sample in `[mint, maxt]` for (all of them when `covered`). Each is
    /// checked against its first series; only when that one is not live are all its series
    /// (`series_of` under the index lock, narrowed by `matchers`) looked at.
    fn add_live(
        &self,
        known: &mut Vec<String>,
        missing: Vec<(Arc<str>, Candidates)>,
        covered: bool,
        (mint, maxt): (i64, i64),
        matchers: &[Matcher],
        series_of: impl Fn(&MemIndex, &str) -> RoaringBitmap,
    ) {
        let mut dead = RoaringBitmap::new();
        let mut added = Vec::new();
        let mut unsure = Vec::new();
        for (key, candidates) in missing {
            if covered || self.any_live(candidates.first.into_iter(), mint, maxt, &mut dead) {
                added.push(key.to_string());
            } else if candidates.more {
                unsure.push(key);
            }
        }
        if !unsure.is_empty() {
            let unsure: Vec<(Arc<str>, RoaringBitmap)> = {
                let index = self.index.read();
                let candidates =
                    (!matchers.is_empty()).then(|| index.postings_for_matchers(matchers));
                unsure
                    .into_iter()
                    .map(|key| {
                        let mut series = series_of(&index, &key);
                        if let Some(candidates) = &candidates {
                            series &= candidates;
                        }
                        (key, series)
                    })
                    .collect()
            };
            for (key, series) in unsure {
                if self.any_live(series.iter(), mint, maxt, &mut dead) {
                    added.push(key.to_string());
                }
            }
            added.sort_unstable();
        }
        crate::index::insert_sorted(known, added);
    }

    /// Whether some series of `series` has a sample in `[mint, maxt]`. Series found without
    /// one are added to `dead` and not looked at again.
    fn any_live(
        &self,
        series: impl Iterator<Item = u32>,
        mint: i64,
        maxt: i64,
        dead: &mut RoaringBitmap,
    ) -> bool {
        for id in series {
            if dead.contains(id) {
                continue;
            }
            let series_ref = SeriesRef(id);
            let live = self.shards[series_ref.shard()]
                .read()
                .get(series_ref.local())
                .is_some_and(|series| series.has_samples_in(mint, maxt));
            if live {
                return true;
            }
            dead.insert(id);
        }
        false
    }

    /// Deletes samples in `[mint, maxt]` of matching series, logging tombstones. Series left
    /// without samples are removed.
    pub fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64> {
        let refs = self.postings(matchers);
        let mut by_shard: Vec<Vec<SeriesRef>> = vec![Vec::new(); SHARD_COUNT];
        for series_ref in refs {
            by_shard[series_ref.shard()].push(series_ref);
        }
        let mut touched = 0;
        let mut last_ticket = None;
        for (shard_index, refs) in by_shard.iter().enumerate() {
            if refs.is_empty() {
                continue;
            }
            let mut tombstones = Vec::new();
            let mut shard = self.shards[shard_index].write();
            for &series_ref in refs {
                if self.delete_in_shard(&mut shard, series_ref, mint, maxt, true) {
                    touched += 1;
                    tombstones.push(TombstoneEntry {
                        id: series_ref.0,
                        mint,
                        maxt,
                    });
                }
            }
            if let Some(wal) = &self.wal {
                let mut buffer = Vec::new();
                encode_tombstones(&mut buffer, &tombstones);
                if !buffer.is_empty() {
                    last_ticket = Some(wal.log(&buffer));
                }
            }
        }
        if let (Some(wal), Some(ticket)) = (&self.wal, last_ticket) {
            wal.wait(ticket)?;
        }
        Ok(touched)
    }

    /// Applies one deletion; `true` if the series had samples in the range. A series left
    /// empty is removed when `remove_if_empty` is set.
    fn delete_in_shard(
        &self,
        shard: &mut Shard,
        series_ref: SeriesRef,
        mint: i64,
        maxt: i64,
        remove_if_empty: bool,
    ) -> bool {
        let chunk_samples = self.options.chunk_samples;
        let Some(series) = shard.get_mut(series_ref.local()) else {
            return false;
        };
        if !series.has_samples_in(mint, maxt) {
            return false;
        }
        series.retain(|t| t < mint || t > maxt, chunk_samples);
        if remove_if_empty && series.is_empty() {
            self.remove_series(shard, series_ref);
        }
        true
    }

    /// Drops every sample older than `mint` and the series left empty. Not logged: the WAL
    /// checkpoint that follows drops the same samples.
    pub fn truncate(&self, mint: i64) -> u64 {
        let mut removed = 0;
        let mut oldest_left = i64::MAX;
        for (shard_index, lock) in self.shards.iter().enumerate() {
            let mut shard = lock.write();
            for local in 0..shard.series.len() {
                let Some(series) = shard.get_mut(local) else {
                    continue;
                };
                series.truncate_before(mint, self.options.chunk_samples);
                if let Some((series_min, _)) = series.time_range() {
                    oldest_left = oldest_left.min(series_min);
                }
                if series.is_empty() {
                    let series_ref =
                        SeriesRef::new(shard_index, local).expect("existing reference");
                    self.remove_series(&mut shard, series_ref);
                    removed += 1;
                }
            }
        }
        if let Some(files) = &self.chunk_files {
            files.collect_garbage();
        }
        // The oldest remaining sample, so the next block cut starts where data is (a sample
        // appended meanwhile lowers it again through `note_time`).
        self.min_time.fetch_max(oldest_left, Ordering::AcqRel);
        removed
    }

    /// Removes the samples of series `labels` at the given timestamps (not logged: used after
    /// replay for samples that blocks already hold). Returns how many were removed.
    pub(crate) fn remove_timestamps(&self, labels: &Labels, times: &BTreeSet<i64>) -> usize {
        let shard_index = shard_of(labels.stable_hash());
        let mut shard = self.shards[shard_index].write();
        let Some(local) = shard.find(&labels.identity()) else {
            return 0;
        };
        let chunk_samples = self.options.chunk_samples;
        let series = shard
            .get_mut(local as usize)
            .expect("found series is present");
        let mut before = Vec::new();
        let count_before = series.read_range(i64::MIN, i64::MAX, &mut before);
        series.retain(|t| !times.contains(&t), chunk_samples);
        let mut after = Vec::new();
        let count_after = series.read_range(i64::MIN, i64::MAX, &mut after);
        if series.is_empty() {
            let series_ref =
                SeriesRef::new(shard_index, local as usize).expect("existing reference");
            self.remove_series(&mut shard, series_ref);
        }
        count_before - count_after
    }

    /// Whether WAL reference `id` still names a live series (directly or as a replay alias).
    pub fn is_live_ref(&self, id: u32) -> bool {
        let series_ref = SeriesRef(id);
        if self.shards[series_ref.shard()]
            .read()
            .get(series_ref.local())
            .is_some()
        {
            return true;
        }
        let alias = self.aliases.lock().get(&id).copied();
        alias.is_some_and(|target| {
            self.shards[target.shard()]
                .read()
                .get(target.local())
                .is_some()
        })
    }

    /// Replay: recreates a series at its logged reference (or aliases the reference to an
    /// existing series with the same labels).
    pub(crate) fn replay_series(&self, id: u32, labels: &Labels) {
        // A logged reference is never given to a new series, even when it is aliased or
        // removed: later WAL records and checkpoints must not mistake one for the other.
        let logged = SeriesRef(id);
        self.shards[logged.shard()]
            .write()
            .series
            .reserve(logged.local());
        let shard_index = shard_of(labels.stable_hash());
        let mut shard = self.shards[shard_index].write();
        let check = labels.identity_hash();
        if let Some(local) = shard.find(&labels.identity()) {
            let existing = SeriesRef::new(shard_index, local as usize).expect("existing reference");
            if existing.0 != id {
                self.aliases.lock().insert(id, existing);
            }
            return;
        }
        let fits = logged.shard() == shard_index && shard.get(logged.local()).is_none();
        let series_ref = if fits {
            logged
        } else {
            let fresh = SeriesRef::new(shard_index, shard.series.len()).expect("reference space");
            self.aliases.lock().insert(id, fresh);
            fresh
        };
        // Replay restores what was accepted, whatever the budget is now.
        self.live_series.fetch_add(1, Ordering::AcqRel);
        self.create_series(&mut shard, series_ref, labels, check);
    }

    fn resolve_replayed(&self, id: u32) -> SeriesRef {
        self.aliases
            .lock()
            .get(&id)
            .copied()
            .unwrap_or(SeriesRef(id))
    }

    /// Replay: appends logged samples without logging them again.
    pub(crate) fn replay_samples(&self, samples: &[SampleEntry]) {
        let aliases_empty = self.aliases.lock().is_empty();
        for sample in samples {
            let series_ref = if aliases_empty {
                SeriesRef(sample.id)
            } else {
                self.resolve_replayed(sample.id)
            };
            let mut shard = self.shards[series_ref.shard()].write();
            let Some(series) = shard.get_mut(series_ref.local()) else {
                self.counters
                    .replay_unknown_refs
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // Logged samples were accepted once: out-of-order ones are taken whatever the
            // window is now.
            let mut result = series.append(sample.t, sample.v, self.options.chunk_samples);
            if result == AppendResult::OutOfOrder {
                result = series.insert_out_of_order(sample.t, sample.v);
            }
            if result == AppendResult::Appended {
                self.counters
                    .samples_appended
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.offload(series);
            drop(shard);
            self.note_time(sample.t);
        }
    }

    /// Replay: applies logged deletions. Series left empty stay until
    /// [`Head::remove_empty_series`]: a checkpoint drops samples older than its cut-off, so a
    /// series that kept such samples live may look empty mid-replay and still receive samples
    /// from later records.
    pub(crate) fn replay_tombstones(&self, tombstones: &[TombstoneEntry]) {
        for tombstone in tombstones {
            let series_ref = self.resolve_replayed(tombstone.id);
            let mut shard = self.shards[series_ref.shard()].write();
            self.delete_in_shard(
                &mut shard,
                series_ref,
                tombstone.mint,
                tombstone.maxt,
                false,
            );
        }
    }

    /// Removes every series without samples (after replay).
    pub(crate) fn remove_empty_series(&self) -> u64 {
        let mut removed = 0;
        for (shard_index, lock) in self.shards.iter().enumerate() {
            let mut shard = lock.write();
            for local in 0..shard.series.len() {
                if shard.get(local).is_some_and(MemSeries::is_empty) {
                    let series_ref =
                        SeriesRef::new(shard_index, local).expect("existing reference");
                    self.remove_series(&mut shard, series_ref);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Number of live series (cheap: the index's count).
    pub fn series_count(&self) -> u64 {
        self.index.read().series_count()
    }

    /// Size figures.
    pub fn stats(&self) -> HeadStats {
        let mut stats = HeadStats {
            min_time: self.min_time.load(Ordering::Acquire),
            max_time: self.max_time.load(Ordering::Acquire),
            symbols: self.symbols.len() as u64,
            ..HeadStats::default()
        };
        for lock in self.shards.iter() {
            let shard = lock.read();
            for series in shard.series.iter() {
                stats.series += 1;
                stats.chunks += series.chunk_count() as u64;
                stats.mapped_chunks += series.mapped_chunk_count() as u64;
                stats.series_heap_bytes += series.heap_bytes() as u64;
            }
        }
        stats.index_heap_bytes = self.index.read().heap_bytes() as u64;
        stats.chunk_files = self
            .chunk_files
            .as_ref()
            .map_or(0, |files| files.file_count() as u64);
        stats
    }
}

/// One series of a batch being appended: its position in [`WriteBatch::series`] or in
/// [`WriteBatch::known`].
#[derive(Debug, Clone, Copy)]
enum Entry {
    Labeled(usize),
    Known(usize),
}

/// Why a sample was refused, described once the series is named.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Future { ahead: i64 },
    OutOfWindow { window: i64 },
    InBlock { min_valid_time: i64 },
    OlderThanNewest,
    Conflict,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Future { ahead } => write!(f, "more than {ahead} ms ahead of the clock"),
            Refusal::OutOfWindow { window } => {
                write!(f, "older than the {window} ms out-of-order window")
            }
            Refusal::InBlock { min_valid_time } => {
                write!(f, "before {min_valid_time}, which is already in a block")
            }
            Refusal::OlderThanNewest => f.write_str("older than the newest sample"),
            Refusal::Conflict => f.write_str("a different value is stored"),
        }
    }
}
