//! One in-memory series: its interned labels, closed chunks and the open chunk.

use lookout_model::Sample;

use super::chunk_files::{HeadChunkFiles, MappedChunk};
use crate::chunk::{XorAppender, XorChunk, XorIter};
use crate::error::Result;
use crate::symbols::Symbol;

/// An encoded chunk of no samples (format version 1, count 0).
static EMPTY_CHUNK: [u8; 3] = [1, 0, 0];

/// Where a full chunk's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum ChunkBytes {
    /// On the heap (in-memory stores, and chunks not yet written to a head chunk file).
    Heap(XorChunk),
    /// In a memory-mapped head chunk file.
    Mapped(MappedChunk),
}

impl ChunkBytes {
    fn iter(&self) -> XorIter<'_> {
        match self {
            ChunkBytes::Heap(chunk) => chunk.iter(),
            // Bytes we wrote ourselves a moment ago; a failure here is a broken invariant,
            // and an empty iterator the safe answer in release builds.
            ChunkBytes::Mapped(mapped) => XorIter::new(mapped.bytes()).unwrap_or_else(|error| {
                debug_assert!(false, "head chunk file damaged: {error}");
                XorIter::new(&EMPTY_CHUNK).expect("an empty chunk is valid")
            }),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ChunkBytes::Heap(chunk) => chunk.heap_bytes(),
            ChunkBytes::Mapped(_) => 0,
        }
    }
}

/// A closed or the open chunk of a series.
#[derive(Debug, Clone, Copy)]
enum ChunkRef<'a> {
    Closed(&'a ChunkBytes),
    Open(&'a XorAppender),
}

impl<'a> ChunkRef<'a> {
    fn iter(self) -> XorIter<'a> {
        match self {
            ChunkRef::Closed(chunk) => chunk.iter(),
            ChunkRef::Open(open) => open.iter(),
        }
    }
}

/// A full chunk with its time range.
#[derive(Debug, Clone)]
pub(crate) struct ClosedChunk {
    pub(crate) chunk: ChunkBytes,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
}

/// What happened to one appended sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendResult {
    /// Stored.
    Appended,
    /// Identical to the newest sample: nothing to do.
    Duplicate,
    /// Same timestamp as the newest sample, different value.
    Conflict,
    /// Older than the newest sample.
    OutOfOrder,
}

/// A series in the head.
#[derive(Debug)]
pub(crate) struct MemSeries {
    /// Label pairs sorted by name, as symbols.
    pub(crate) labels: Box<[(Symbol, Symbol)]>,
    pub(crate) hash: u64,
    /// Seeded second hash of the labels, for identity checks without string compares.
    pub(crate) check: u64,
    closed: Vec<ClosedChunk>,
    open: XorAppender,
    /// Newest in-order sample: timestamp and value bits.
    last: Option<(i64, u64)>,
    /// Samples accepted out of order (older than `last`), sorted by time, as (t, value bits).
    /// They stay here until a block cut or truncation takes them. Boxed so the common case,
    /// none, costs 8 bytes per series instead of 24.
    #[allow(clippy::box_collection)]
    out_of_order: Option<Box<Vec<(i64, u64)>>>,
}

impl MemSeries {
    pub(crate) fn new(labels: Box<[(Symbol, Symbol)]>, hash: u64, check: u64) -> MemSeries {
        MemSeries {
            labels,
            hash,
            check,
            closed: Vec::new(),
            open: XorAppender::new(),
            last: None,
            out_of_order: None,
        }
    }

    /// Stores a sample older than the newest in-order one. Duplicates are checked against
    /// both the in-order chunks and earlier out-of-order samples.
    pub(crate) fn insert_out_of_order(&mut self, t: i64, v: f64) -> AppendResult {
        let bits = v.to_bits();
        if let Some(existing) = self.in_order_value_at(t) {
            return if existing == bits {
                AppendResult::Duplicate
            } else {
                AppendResult::Conflict
            };
        }
        let buffer = self.out_of_order.get_or_insert_with(Default::default);
        match buffer.binary_search_by_key(&t, |(time, _)| *time) {
            Ok(position) if buffer[position].1 == bits => AppendResult::Duplicate,
            Ok(_) => AppendResult::Conflict,
            Err(position) => {
                buffer.insert(position, (t, bits));
                AppendResult::Appended
            }
        }
    }

    /// The value bits of the in-order sample at exactly `t`, if any.
    fn in_order_value_at(&self, t: i64) -> Option<u64> {
        for (chunk, chunk_min, chunk_max) in self.chunks() {
            if (chunk_min..=chunk_max).contains(&t) {
                return chunk
                    .iter()
                    .seek(t)
                    .filter(|(found, _)| *found == t)
                    .map(|(_, v)| v.to_bits());
            }
        }
        None
    }

    fn out_of_order_samples(&self) -> &[(i64, u64)] {
        self.out_of_order
            .as_deref()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Appends one sample, cutting the open chunk when it holds `chunk_samples`.
    pub(crate) fn append(&mut self, t: i64, v: f64, chunk_samples: usize) -> AppendResult {
        if let Some((last_t, last_bits)) = self.last {
            if t == last_t {
                return if v.to_bits() == last_bits {
                    AppendResult::Duplicate
                } else {
                    AppendResult::Conflict
                };
            }
            if t < last_t {
                return AppendResult::OutOfOrder;
            }
        }
        if self.open.num_samples() >= chunk_samples {
            self.cut_open_chunk();
        }
        self.open.append(t, v);
        self.last = Some((t, v.to_bits()));
        AppendResult::Appended
    }

    fn cut_open_chunk(&mut self) {
        let (Some(min_t), Some(max_t)) = (self.open.first_t(), self.open.last_t()) else {
            return;
        };
        let full = std::mem::take(&mut self.open);
        self.closed.push(ClosedChunk {
            chunk: ChunkBytes::Heap(full.finish()),
            min_t,
            max_t,
        });
    }

    /// Oldest and newest timestamp, if the series has samples.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        let in_order = self.last.and_then(|(max_t, _)| {
            let min_t = self
                .closed
                .first()
                .map(|chunk| chunk.min_t)
                .or_else(|| self.open.first_t())?;
            Some((min_t, max_t))
        });
        let out_of_order = self.out_of_order_samples();
        let late = out_of_order
            .first()
            .zip(out_of_order.last())
            .map(|(first, last)| (first.0, last.0));
        match (in_order, late) {
            (Some((min_a, max_a)), Some((min_b, max_b))) => {
                Some((min_a.min(min_b), max_a.max(max_b)))
            }
            (range, None) | (None, range) => range,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.last.is_none() && self.out_of_order_samples().is_empty()
    }

    /// An iterator over every chunk with its time range, oldest first.
    /// Every chunk, oldest first, with its time range; the iterator is only built (which
    /// decodes the chunk's first sample) for chunks a caller asks for.
    fn chunks(&self) -> impl Iterator<Item = (ChunkRef<'_>, i64, i64)> {
        let open = match (self.open.first_t(), self.open.last_t()) {
            (Some(min_t), Some(max_t)) => Some((ChunkRef::Open(&self.open), min_t, max_t)),
            _ => None,
        };
        self.closed
            .iter()
            .map(|closed| (ChunkRef::Closed(&closed.chunk), closed.min_t, closed.max_t))
            .chain(open)
    }

    /// Appends the samples in `[mint, maxt]` to `out`; returns how many.
    pub(crate) fn read_range(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> usize {
        let before = out.len();
        // Room for what the range probably holds (chunks wholly inside count in full, partly
        // covered ones in proportion to the time covered), so that `out` is not regrown and
        // copied chunk after chunk.
        let expected: usize = self
            .chunks()
            .filter(|(_, chunk_min, chunk_max)| *chunk_max >= mint && *chunk_min <= maxt)
            .map(|(chunk, chunk_min, chunk_max)| {
                let count = chunk.iter().size_hint().1.unwrap_or(0);
                if chunk_min >= mint && chunk_max <= maxt {
                    return count;
                }
                // In f64: the times may span the whole i64 axis.
                let span = (chunk_max as f64 - chunk_min as f64).max(1.0);
                let covered = (chunk_max.min(maxt) as f64 - chunk_min.max(mint) as f64).max(0.0);
                ((count as f64 * covered / span) as usize + 1).min(count)
            })
            .sum();
        out.reserve(expected);
        for (chunk, chunk_min, chunk_max) in self.chunks() {
            if chunk_max < mint || chunk_min > maxt {
                continue;
            }
            let mut iter = chunk.iter();
            let Some((t, v)) = iter.seek(mint) else {
                continue;
            };
            if t > maxt {
                continue;
            }
            out.push(Sample::new(t, v));
            for (t, v) in iter.by_ref() {
                if t > maxt {
                    break;
                }
                out.push(Sample::new(t, v));
            }
        }
        let late = self.out_of_order_samples();
        let start = late.partition_point(|(t, _)| *t < mint);
        let end = late.partition_point(|(t, _)| *t <= maxt);
        if start < end {
            // Both runs are sorted and never share a timestamp: merge them.
            let in_order = out.split_off(before);
            let mut late = late[start..end]
                .iter()
                .map(|(t, bits)| Sample::new(*t, f64::from_bits(*bits)))
                .peekable();
            for sample in in_order {
                while let Some(earlier) = late.next_if(|late| late.timestamp < sample.timestamp) {
                    out.push(earlier);
                }
                out.push(sample);
            }
            out.extend(late);
        }
        out.len() - before
    }

    /// Whether any sample lies in `[mint, maxt]`.
    pub(crate) fn has_samples_in(&self, mint: i64, maxt: i64) -> bool {
        let late = self.out_of_order_samples();
        if late
            .get(late.partition_point(|(t, _)| *t < mint))
            .is_some_and(|(t, _)| *t <= maxt)
        {
            return true;
        }
        for (chunk, chunk_min, chunk_max) in self.chunks() {
            if chunk_max < mint || chunk_min > maxt {
                continue;
            }
            // The first and last timestamps are samples: either inside the range settles it.
            if (mint..=maxt).contains(&chunk_min) || (mint..=maxt).contains(&chunk_max) {
                return true;
            }
            // The range lies strictly inside the chunk: look.
            if chunk.iter().seek(mint).is_some_and(|(t, _)| t <= maxt) {
                return true;
            }
        }
        false
    }

    /// Keeps only samples for which `keep` is true, re-encoding the chunks. The newest
    /// remaining sample becomes the reference for in-order appends.
    pub(crate) fn retain(&mut self, keep: impl Fn(i64) -> bool, chunk_samples: usize) {
        let mut samples = Vec::new();
        self.read_range(i64::MIN, i64::MAX, &mut samples);
        let before = samples.len();
        samples.retain(|sample| keep(sample.timestamp.0));
        if samples.len() == before {
            return;
        }
        self.closed.clear();
        self.open = XorAppender::new();
        self.last = None;
        self.out_of_order = None;
        for sample in samples {
            self.append(sample.timestamp.0, sample.value, chunk_samples);
        }
    }

    /// Drops samples older than `mint`: whole chunks first, then a rewrite of the one
    /// straddling `mint`.
    pub(crate) fn truncate_before(&mut self, mint: i64, chunk_samples: usize) {
        if let Some(late) = self.out_of_order.as_mut() {
            late.retain(|(t, _)| *t >= mint);
            if late.is_empty() {
                self.out_of_order = None;
            }
        }
        self.closed.retain(|chunk| chunk.max_t >= mint);
        // The list grew by doubling while the series filled the head's hours; a truncation
        // (after each block cut) leaves it half empty for good unless it gives room back
        // (at 100k series, tens of MB).
        if self.closed.capacity() > 2 * self.closed.len() + 4 {
            self.closed
                .shrink_to(self.closed.len() + self.closed.len() / 4 + 2);
        }
        if self.open.last_t().is_some_and(|max_t| max_t < mint) {
            self.open = XorAppender::new();
            if self.closed.is_empty() {
                self.last = None;
            }
        }
        if self.time_range().is_some_and(|(min_t, _)| min_t < mint) {
            self.retain(|t| t >= mint, chunk_samples);
        }
    }

    /// Whether the newest full chunk still sits on the heap (then [`MemSeries::offload`]
    /// has work: chunks are offloaded newest first, as they are cut).
    pub(crate) fn has_heap_chunks(&self) -> bool {
        self.closed
            .last()
            .is_some_and(|closed| matches!(closed.chunk, ChunkBytes::Heap(_)))
    }

    /// Moves full chunks from the heap into head chunk files.
    pub(crate) fn offload(&mut self, files: &HeadChunkFiles) -> Result<()> {
        for closed in self.closed.iter_mut().rev() {
            let ChunkBytes::Heap(chunk) = &closed.chunk else {
                // Chunks are offloaded as they are cut: the older ones already are.
                break;
            };
            closed.chunk = ChunkBytes::Mapped(files.write(chunk.bytes())?);
        }
        Ok(())
    }

    /// Number of full chunks in head chunk files.
    pub(crate) fn mapped_chunk_count(&self) -> usize {
        self.closed
            .iter()
            .filter(|closed| matches!(closed.chunk, ChunkBytes::Mapped(_)))
            .count()
    }

    /// Number of chunks, the open one included.
    pub(crate) fn chunk_count(&self) -> usize {
        self.closed.len() + usize::from(self.open.num_samples() > 0)
    }

    /// Heap bytes owned by this series (chunks and label symbols).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<MemSeries>()
            + self.labels.len() * std::mem::size_of::<(Symbol, Symbol)>()
            + self.closed.capacity() * std::mem::size_of::<ClosedChunk>()
            + self
                .closed
                .iter()
                .map(|closed| closed.chunk.heap_bytes())
                .sum::<usize>()
            + self.open.heap_bytes()
            + self
                .out_of_order
                .as_ref()
                .map_or(0, |late| late.capacity() * 16 + 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> MemSeries {
        MemSeries::new(Box::new([]), 0, 0)
    }

    #[test]
    fn appends_cut_chunks_and_reject_out_of_order() {
        let mut s = series();
        for t in 0..250 {
            assert_eq!(s.append(t * 10, t as f64, 120), AppendResult::Appended);
        }
        assert_eq!(s.chunk_count(), 3);
        assert_eq!(s.append(2490, 249.0, 120), AppendResult::Duplicate);
        assert_eq!(s.append(2490, 1.0, 120), AppendResult::Conflict);
        assert_eq!(s.append(5, 1.0, 120), AppendResult::OutOfOrder);
        let mut out = Vec::new();
        assert_eq!(s.read_range(1195, 1215, &mut out), 2);
        assert_eq!(out, [Sample::new(1200, 120.0), Sample::new(1210, 121.0)]);
        assert!(s.has_samples_in(1195, 1201));
        assert!(!s.has_samples_in(1191, 1199));
        assert_eq!(s.time_range(), Some((0, 2490)));
    }

    #[test]
    fn out_of_order_samples_merge_into_reads_and_check_duplicates() {
        let mut s = series();
        for t in [10, 20, 30, 40, 50] {
            s.append(t, t as f64, 2);
        }
        assert_eq!(s.append(25, 1.0, 2), AppendResult::OutOfOrder);
        assert_eq!(s.insert_out_of_order(25, 1.0), AppendResult::Appended);
        assert_eq!(s.insert_out_of_order(5, 1.0), AppendResult::Appended);
        assert_eq!(s.insert_out_of_order(25, 1.0), AppendResult::Duplicate);
        assert_eq!(s.insert_out_of_order(25, 2.0), AppendResult::Conflict);
        assert_eq!(s.insert_out_of_order(30, 30.0), AppendResult::Duplicate);
        assert_eq!(s.insert_out_of_order(30, 1.0), AppendResult::Conflict);
        let mut out = Vec::new();
        s.read_range(i64::MIN, i64::MAX, &mut out);
        let times: Vec<i64> = out.iter().map(|sample| sample.timestamp.0).collect();
        assert_eq!(times, [5, 10, 20, 25, 30, 40, 50]);
        out.clear();
        s.read_range(21, 35, &mut out);
        assert_eq!(out, [Sample::new(25, 1.0), Sample::new(30, 30.0)]);
        assert_eq!(s.time_range(), Some((5, 50)));
        assert!(s.has_samples_in(1, 6));
        s.truncate_before(8, 2);
        assert_eq!(s.time_range(), Some((10, 50)));
        s.retain(|t| t != 25, 2);
        out.clear();
        s.read_range(i64::MIN, i64::MAX, &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn retain_and_truncate_rewrite_chunks() {
        let mut s = series();
        for t in 0..300 {
            s.append(t, t as f64, 120);
        }
        s.retain(|t| !(100..=199).contains(&t), 120);
        let mut out = Vec::new();
        s.read_range(i64::MIN, i64::MAX, &mut out);
        assert_eq!(out.len(), 200);
        assert!(out
            .iter()
            .all(|sample| !(100..=199).contains(&sample.timestamp.0)));
        s.truncate_before(250, 120);
        out.clear();
        s.read_range(i64::MIN, i64::MAX, &mut out);
        assert_eq!(out.first().unwrap().timestamp.0, 250);
        assert_eq!(out.len(), 50);
        s.truncate_before(1000, 120);
        assert!(s.is_empty());
    }
}
