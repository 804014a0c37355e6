//! Gorilla-style XOR chunk codec: delta-of-delta timestamps and XOR-compressed `f64` values.
//!
//! A chunk holds up to [`MAX_ENCODABLE_SAMPLES`] `(timestamp ms, value)` samples with strictly
//! increasing timestamps. The byte format (version 1) is specified in `docs/format/chunk.md`;
//! the short version:
//!
//! ```text
//! byte 0      format version (1)
//! bytes 1..3  sample count, u16 big-endian
//! bytes 3..   MSB-first bit stream:
//!   sample 0: zigzag LEB128 varint t0, 64 raw value bits
//!   sample 1: LEB128 varint (t1 - t0) as u64, XOR-encoded value
//!   sample n: delta-of-delta code, XOR-encoded value
//! ```
//!
//! Values round-trip bit-exactly (NaN payloads, the Prometheus stale marker, `-0.0`, ±Inf).
//! Timestamp arithmetic is wrapping (mod 2^64), so the whole `i64` range is supported.

mod bitstream;
pub mod columnar;

use std::iter::FusedIterator;

use bitstream::{BitReader, BitWriter};

/// The head cuts a new chunk once the open one holds this many samples.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// Hard limit of the codec: the header stores the sample count as a `u16`.
pub const MAX_ENCODABLE_SAMPLES: usize = u16::MAX as usize;

/// Version byte written at offset 0 of every chunk produced by this module.
pub const FORMAT_VERSION: u8 = 1;

/// Length of the fixed chunk header (version byte + u16 sample count).
pub const HEADER_LEN: usize = 3;

/// The bytes of a chunk holding no samples.
const EMPTY_CHUNK: [u8; HEADER_LEN] = [FORMAT_VERSION, 0, 0];

/// Upper bound of the bits one append writes: 4 + 64 timestamp bits and 13 + 64 value bits,
/// or for the first sample 24 header bits, a 10-byte varint and 64 value bits.
const MAX_SAMPLE_BITS: u32 = 168;

/// Buffer size allocated by the first append.
const INITIAL_CAPACITY: usize = 128;

/// Smallest possible encoding of one sample: a 1-byte varint and 8 value bytes.
const MIN_FIRST_SAMPLE_BYTES: usize = 1 + 8;

/// Payload widths of the delta-of-delta buckets with prefixes `10`, `110` and `1110`:
/// `7 * class` bits, so every class-`c` code is `8c + 1` bits long, which the decoder
/// exploits to compute lengths with plain arithmetic.
const DOD_BITS_1: u32 = 7;
const DOD_BITS_2: u32 = 14;
const DOD_BITS_3: u32 = 21;
const _: () = assert!(DOD_BITS_2 == 2 * DOD_BITS_1 && DOD_BITS_3 == 3 * DOD_BITS_1);

/// Delta-of-delta class (number of leading one bits, capped at 4) for each value of the
/// top 4 bits of a timestamp code, 4 bits per entry: 0xxx -> 0, 10xx -> 1, 110x -> 2,
/// 1110 -> 3, 1111 -> 4.
const DOD_CLASS_BY_TOP4: u64 = 0x4322_1111_0000_0000;
/// Header lengths of the value codes by their first two bits (00, 01, 10, 11).
const VALUE_HEADER_LEN_PACKED: u32 = 1 | 1 << 8 | 2 << 16 | 13 << 24;

/// Window field (`lead << 6 | (sig - 1)`) in force before any window is defined: no
/// leading zeros, 64 meaningful bits.
const INITIAL_WINDOW_FIELD: u64 = 63;
/// Multiplier replicating a window field into 16-bit lanes 0, 1 and 2.
const WINDOW_LANES: u64 = 0x0000_0001_0001_0001;

/// Largest leading-zero count that fits the 5-bit field of a new XOR window.
const MAX_LEADING: u32 = 31;

/// Errors decoding a chunk. Decoding never panics on arbitrary bytes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Fewer bytes than the fixed header.
    #[error("chunk header truncated: {len} bytes, need {HEADER_LEN}")]
    HeaderTooShort {
        /// Length of the input.
        len: usize,
    },
    /// The version byte is not one this decoder understands.
    #[error("unsupported chunk format version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The data ended before sample `sample` (0-based) was complete.
    #[error("chunk data truncated in sample {sample}")]
    Truncated {
        /// Index of the sample being decoded.
        sample: usize,
    },
    /// A varint was longer than 10 bytes or overflowed 64 bits.
    #[error("malformed varint in sample {sample}")]
    BadVarint {
        /// Index of the sample being decoded.
        sample: usize,
    },
    /// An XOR value code opened a window wider than 64 bits (leading zeros plus meaningful
    /// bits above 64).
    #[error("invalid XOR value window in sample {sample}")]
    BadValueWindow {
        /// Index of the sample being decoded.
        sample: usize,
    },
    /// A decoded timestamp was not greater than the previous one.
    #[error("timestamp of sample {sample} is not greater than the previous one")]
    NotIncreasing {
        /// Index of the sample being decoded.
        sample: usize,
    },
}

/// Reasons a sample failed to decode, before the sample index is attached.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Varint,
    Window,
    NotIncreasing,
}

#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline(always)]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The 64 bits of `w` starting `s` bits (`0..=63`) below its top. Written with u64 shifts:
/// a u128 shift compiles to `shld` plus fix-ups, which is much slower on some CPUs.
#[inline(always)]
fn bits_at(w: u128, s: u32) -> u64 {
    debug_assert!(s < 64);
    let (hi, lo) = ((w >> 64) as u64, w as u64);
    (hi << (s & 63)) | ((lo >> 1) >> (63 - (s & 63)))
}

/// Reads and validates the header, returning the sample count.
fn parse_header(bytes: &[u8]) -> Result<usize, ChunkError> {
    let [version, hi, lo, ..] = *bytes else {
        return Err(ChunkError::HeaderTooShort { len: bytes.len() });
    };
    if version != FORMAT_VERSION {
        return Err(ChunkError::UnsupportedVersion { version });
    }
    let count = u16::from_be_bytes([hi, lo]) as usize;
    if count > 0 && bytes.len() < HEADER_LEN + MIN_FIRST_SAMPLE_BYTES {
        return Err(ChunkError::Truncated { sample: 0 });
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// Encoder for one open chunk.
///
/// Timestamps are `i64` milliseconds and must be strictly increasing (checked with
/// `debug_assert!`; in release builds a violation produces a chunk whose iterator stops with
/// [`ChunkError::NotIncreasing`] at that sample). At most [`MAX_ENCODABLE_SAMPLES`] samples
/// fit; appending more panics (see [`XorAppender::is_full`]).
#[derive(Debug, Clone, Default)]
pub struct XorAppender {
    /// Header + bit stream. Empty until the first append (then [`EMPTY_CHUNK`] stands in).
    w: BitWriter,
    count: u16,
    first_t: i64,
    t: i64,
    /// Previous timestamp delta, as a wrapping u64.
    delta: u64,
    /// Previous value bits.
    v: u64,
    /// Current XOR window: leading zeros (at most 31) and trailing zeros; it covers
    /// `64 - lead - trail` meaningful bits. The initial (0, 0) covers all 64 bits.
    lead: u32,
    trail: u32,
}

impl XorAppender {
    /// Creates an empty appender. Does not allocate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one sample. `t` must be greater than the previous timestamp.
    ///
    /// # Panics
    /// If the chunk already holds [`MAX_ENCODABLE_SAMPLES`] samples.
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        if !self.w.has_room(MAX_SAMPLE_BITS) {
            self.grow();
        }
        match self.count {
            0 => self.append_first(t, bits),
            1 => self.append_second(t, bits),
            n => {
                assert!(
                    n < u16::MAX,
                    "XOR chunk is full ({MAX_ENCODABLE_SAMPLES} samples)"
                );
                debug_assert!(t > self.t, "timestamps must strictly increase");
                let delta = t.wrapping_sub(self.t) as u64;
                let dod = delta.wrapping_sub(self.delta) as i64;
                let (prefix, prefix_len, payload, len) = self.value_code(bits);
                // `mag < 2^(k-1)` iff `dod` fits a k-bit two's complement field.
                let mag = (dod ^ (dod >> 63)) as u64;
                if mag < 1 << (DOD_BITS_3 - 1) {
                    // Class c (0..=3): prefix of c ones and a zero, then a 7c-bit payload.
                    let class = u32::from(dod != 0)
                        + u32::from(mag >= 1 << (DOD_BITS_1 - 1))
                        + u32::from(mag >= 1 << (DOD_BITS_2 - 1));
                    let payload_bits = DOD_BITS_1 * class;
                    let ones = (1u64 << class) - 1; // c one bits
                    let dcode =
                        (ones << (payload_bits + 1)) | (dod as u64 & ((1u64 << payload_bits) - 1));
                    let dlen = 8 * class + 1;
                    // One store for the whole sample: at most 25 + 13 head bits + 64.
                    self.w.put(
                        (dcode << prefix_len) | prefix,
                        dlen + prefix_len,
                        payload,
                        len,
                    );
                } else {
                    self.w.put(0b1111, 4, dod as u64, 64);
                    self.w.put(prefix, prefix_len, payload, len);
                }
                self.delta = delta;
            }
        }
        self.t = t;
        self.v = bits;
        self.count += 1;
        // The header's count is written by `sync_header`/`finish`, not here: touching the
        // buffer's first cache line on every append costs a quarter of the head's ingest rate.
    }

    /// Writes the current sample count into the header, making [`XorAppender::bytes`] a
    /// complete chunk.
    pub fn sync_header(&mut self) {
        if self.count > 0 {
            self.w.committed_bytes_mut()[1..HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        }
    }

    /// Grows the buffer. Sizes it for a whole chunk of [`MAX_SAMPLES_PER_CHUNK`] samples,
    /// projected from the bytes per sample so far, so a typical chunk needs one or two
    /// allocations; [`XorAppender::finish`] trims the excess.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let n = usize::from(self.count);
        let target = if n == 0 {
            INITIAL_CAPACITY
        } else if n < MAX_SAMPLES_PER_CHUNK {
            let used = self.w.bytes().len();
            let projected = used * MAX_SAMPLES_PER_CHUNK / n;
            projected + projected / 8 + 40
        } else {
            0
        };
        self.w.grow(MAX_SAMPLE_BITS, target);
    }

    #[cold]
    fn append_first(&mut self, t: i64, bits: u64) {
        // Version and a zero count (patched by `append`).
        self.w.put(u64::from(FORMAT_VERSION) << 16, 24, 0, 0);
        self.write_varint(zigzag(t));
        self.w.put(0, 0, bits, 64);
        self.first_t = t;
    }

    #[cold]
    fn append_second(&mut self, t: i64, bits: u64) {
        debug_assert!(t > self.t, "timestamps must strictly increase");
        let delta = t.wrapping_sub(self.t) as u64;
        self.write_varint(delta);
        let (prefix, prefix_len, payload, len) = self.value_code(bits);
        self.w.put(prefix, prefix_len, payload, len);
        self.delta = delta;
    }

    /// Writes `v` as an LEB128 varint (1 to 10 whole bytes in the bit stream).
    fn write_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.w.put((v & 0x7f) | 0x80, 8, 0, 0);
            v >>= 7;
        }
        self.w.put(v, 8, 0, 0);
    }

    /// The XOR code for the next value as `(prefix, prefix_len, payload, payload_len)`
    /// (prefix 1, 2 or 13 bits; payload 0 to 64 bits), updating the window.
    #[inline(always)]
    fn value_code(&mut self, bits: u64) -> (u64, u32, u64, u32) {
        let x = bits ^ self.v;
        if x == 0 {
            return (0, 1, 0, 0);
        }
        let lead = x.leading_zeros().min(MAX_LEADING);
        let trail = x.trailing_zeros();
        let sig = 64 - lead - trail;
        let old_sig = 64 - self.lead - self.trail;
        // Reuse the current window if it covers the meaningful bits and costs no more than
        // opening a new one (2 + old sig bits vs. 13 + new sig bits): all three differences
        // non-negative. Computed arithmetically and applied below by a shift instead of a
        // branch, because the outcome is data dependent and mispredicts often.
        let d = (lead as i32 - self.lead as i32)
            | (trail as i32 - self.trail as i32)
            | (sig as i32 + 11 - old_sig as i32);
        // 1: open a new window.
        let new_window = (d as u32) >> 31;
        // Both candidates packed as `prefix | prefix_len << 13 | trail << 17 | sig << 23`.
        let reuse = 0b10 | 2 << 13 | self.trail << 17 | old_sig << 23;
        let fresh = ((0b11 << 11) | (lead << 6) | (sig - 1)) | 13 << 13 | trail << 17 | sig << 23;
        let both = u64::from(reuse) | u64::from(fresh) << 32;
        let c = (both >> (new_window * 32)) as u32;
        let (trail, sig) = ((c >> 17) & 0x3f, c >> 23);
        self.trail = trail;
        self.lead = 64 - sig - trail;
        (u64::from(c & 0x1fff), (c >> 13) & 0xf, x >> trail, sig)
    }

    /// Number of samples appended.
    #[inline]
    pub fn num_samples(&self) -> usize {
        self.count as usize
    }

    /// True once [`MAX_ENCODABLE_SAMPLES`] samples are stored; further appends panic.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.count == u16::MAX
    }

    /// Timestamp of the first sample.
    #[inline]
    pub fn first_t(&self) -> Option<i64> {
        (self.count > 0).then_some(self.first_t)
    }

    /// Timestamp of the last sample.
    #[inline]
    pub fn last_t(&self) -> Option<i64> {
        (self.count > 0).then_some(self.t)
    }

    /// Value of the last sample (bit-exact).
    #[inline]
    pub fn last_value(&self) -> Option<f64> {
        (self.count > 0).then(|| f64::from_bits(self.v))
    }

    /// Encoded bytes so far. The header's sample count is only current after
    /// [`XorAppender::sync_header`] (or in [`XorAppender::finish`]'s chunk); to read an open
    /// appender use [`XorAppender::iter`], which knows the count.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        if self.count == 0 {
            &EMPTY_CHUNK
        } else {
            self.w.bytes()
        }
    }

    /// Bytes of heap this appender owns (capacity of its buffer).
    #[inline]
    pub fn heap_bytes(&self) -> usize {
        self.w.capacity()
    }

    /// Iterates over the samples appended so far.
    pub fn iter(&self) -> XorIter<'_> {
        XorIter::from_parts(self.bytes(), self.count as usize)
    }

    /// Finishes the chunk: returns the immutable chunk with its buffer shrunk to fit.
    pub fn finish(mut self) -> XorChunk {
        self.sync_header();
        let count = self.count;
        let data = if count == 0 {
            Box::from(EMPTY_CHUNK)
        } else {
            self.w.into_boxed_slice()
        };
        XorChunk { data, count }
    }
}

// ---------------------------------------------------------------------------------------------
// Immutable chunk
// ---------------------------------------------------------------------------------------------

/// An immutable encoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorChunk {
    data: Box<[u8]>,
    count: u16,
}

impl XorChunk {
    /// Wraps encoded bytes. Validates the header only (cheap); decoding errors in the body
    /// surface from the iterator ([`XorIter::err`]).
    pub fn from_bytes(bytes: Box<[u8]>) -> Result<Self, ChunkError> {
        let count = parse_header(&bytes)? as u16;
        Ok(Self { data: bytes, count })
    }

    /// The encoded bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Number of samples according to the header.
    #[inline]
    pub fn num_samples(&self) -> usize {
        self.count as usize
    }

    /// Iterates over the samples.
    #[inline]
    pub fn iter(&self) -> XorIter<'_> {
        XorIter::from_parts(&self.data, self.count as usize)
    }

    /// Bytes of heap this chunk owns.
    #[inline]
    pub fn heap_bytes(&self) -> usize {
        self.data.len()
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = (i64, f64);
    type IntoIter = XorIter<'a>;

    fn into_iter(self) -> XorIter<'a> {
        self.iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Iterator over `(timestamp ms, value)` of an encoded chunk. Works on any byte slice
/// (owned, borrowed from an appender, or memory mapped).
///
/// Iteration stops early on corrupt or truncated input; [`XorIter::err`] then tells why. The
/// iterator is fused.
#[derive(Debug, Clone)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    /// Samples to decode according to the header.
    total: usize,
    /// Samples decoded so far.
    idx: usize,
    /// Set once `next` has returned `None` (end of data or error).
    done: bool,
    t: i64,
    delta: u64,
    v: u64,
    /// Current XOR window as the 11-bit field `lead << 6 | (sig - 1)`, replicated into the
    /// 16-bit lanes 0, 1 and 2 (see `decode_value_head`).
    win_rep: u64,
    err: Option<ChunkError>,
}

impl<'a> XorIter<'a> {
    /// Starts iterating over the chunk in `bytes` (trailing bytes after the chunk are
    /// ignored). Fails if the header is invalid.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let count = parse_header(bytes)?;
        Ok(Self::from_parts(bytes, count))
    }

    /// `bytes` must have a valid header announcing `count` samples.
    fn from_parts(bytes: &'a [u8], count: usize) -> Self {
        Self {
            r: BitReader::new(bytes.get(HEADER_LEN..).unwrap_or_default()),
            total: count,
            idx: 0,
            done: false,
            t: 0,
            delta: 0,
            v: 0,
            win_rep: INITIAL_WINDOW_FIELD * WINDOW_LANES,
            err: None,
        }
    }

    /// Advances to the first sample with `t >= target` and returns it, or `None` if there
    /// is none (or decoding failed; see [`XorIter::err`]).
    ///
    /// Seeking works like a cursor that never moves backwards: if the sample most recently
    /// returned by `next` or `seek` already has `t >= target`, it is returned again and the
    /// iterator does not advance. After `seek` returns a sample, `next` yields the one after
    /// it. Skipped samples cost about as much as `next` (the XOR chain of values has to be
    /// followed; there is nothing more to decode).
    pub fn seek(&mut self, target: i64) -> Option<(i64, f64)> {
        if self.idx > 0 && !self.done && self.t >= target {
            return Some((self.t, f64::from_bits(self.v)));
        }
        while self.advance() {
            if self.t >= target {
                return Some((self.t, f64::from_bits(self.v)));
            }
        }
        None
    }

    /// The error that stopped iteration early, if any (corrupt or truncated bytes).
    pub fn err(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }

    /// Decodes the next sample into `self.t`/`self.v`. Returns false at the end or on error.
    #[inline(always)]
    fn advance(&mut self) -> bool {
        let idx = self.idx;
        if idx >= self.total {
            self.done = true;
            return false;
        }
        let res = if idx >= 2 {
            self.decode_next()
        } else if idx == 0 {
            self.decode_first()
        } else {
            self.decode_second()
        };
        if res.is_err() || self.r.overrun() {
            self.fail(res.err());
            return false;
        }
        self.idx = idx + 1;
        true
    }

    #[cold]
    #[inline(never)]
    fn fail(&mut self, fault: Option<Fault>) {
        let sample = self.idx;
        // Running out of data takes precedence: garbage decoded from padding is not a
        // separate corruption.
        self.err = Some(match fault {
            _ if self.r.overrun() => ChunkError::Truncated { sample },
            Some(Fault::Varint) => ChunkError::BadVarint { sample },
            Some(Fault::Window) => ChunkError::BadValueWindow { sample },
            Some(Fault::NotIncreasing) => ChunkError::NotIncreasing { sample },
            None => ChunkError::Truncated { sample },
        });
        self.total = self.idx;
        self.done = true;
    }

    fn read_varint(&mut self) -> Result<u64, Fault> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.r.read_bits(8);
            if i == 9 && b > 1 {
                return Err(Fault::Varint);
            }
            v |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Fault::Varint)
    }

    #[cold]
    fn decode_first(&mut self) -> Result<(), Fault> {
        self.t = unzigzag(self.read_varint()?);
        self.v = self.r.read_bits(64);
        Ok(())
    }

    #[cold]
    fn decode_second(&mut self) -> Result<(), Fault> {
        let delta = self.read_varint()?;
        let t = self.t.wrapping_add(delta as i64);
        if t <= self.t {
            return Err(Fault::NotIncreasing);
        }
        self.t = t;
        self.delta = delta;
        let (w, off) = self.r.window(self.r.pos());
        self.decode_value(w, off)
    }

    #[inline(always)]
    fn decode_next(&mut self) -> Result<(), Fault> {
        // One 16-byte window serves the whole sample unless the timestamp needs the 64-bit
        // class: offset (<= 7) + timestamp code (<= 25) + value header (<= 13) + 64 <= 128.
        let (w, off) = self.r.window(self.r.pos());
        // At least 57 valid bits: enough for the timestamp code (<= 25) and the value header
        // (13) that follows it.
        let head = ((w >> 64) as u64) << off;
        // Class = number of leading ones (0..=4), looked up from the top 4 bits in a packed
        // integer (shorter latency than a table load or `bsr` without `lzcnt`).
        let class = ((DOD_CLASS_BY_TOP4 >> ((head >> 60) * 4)) & 0xf) as u32;
        if class >= 4 {
            return self.decode_next_wide_dod();
        }
        // Class c has a (c + 1)-bit prefix and a 7c-bit payload: 8c + 1 bits in all.
        let dlen = 8 * class + 1;
        let sar = 64 - DOD_BITS_1 * class; // 64 for class 0: wraps, result masked below
        let keep = -i64::from(class != 0);
        let dod = ((head << (class + 1)) as i64).wrapping_shr(sar) & keep;
        if let Err(fault) = self.apply_dod(dod) {
            self.r.skip(dlen); // so that `fail` can tell truncation from corruption
            return Err(fault);
        }
        self.decode_value_head(head << dlen, w, off + dlen, dlen)
    }

    #[cold]
    #[inline(never)]
    fn decode_next_wide_dod(&mut self) -> Result<(), Fault> {
        self.r.skip(4);
        let dod = self.r.read_bits(64) as i64;
        self.apply_dod(dod)?;
        let (w, off) = self.r.window(self.r.pos());
        self.decode_value(w, off)
    }

    #[inline(always)]
    fn apply_dod(&mut self, dod: i64) -> Result<(), Fault> {
        let delta = self.delta.wrapping_add(dod as u64);
        let t = self.t.wrapping_add(delta as i64);
        if t <= self.t {
            return Err(Fault::NotIncreasing);
        }
        self.t = t;
        self.delta = delta;
        Ok(())
    }

    /// Decodes one XOR value code that starts at the current position, `off` bits into the
    /// window `w` (`off <= 51`, so the header and 64 payload bits are inside `w`).
    #[inline(always)]
    fn decode_value(&mut self, w: u128, off: u32) -> Result<(), Fault> {
        let head = bits_at(w, off);
        self.decode_value_head(head, w, off, 0)
    }

    /// Like [`Self::decode_value`], with `head` holding at least the 13 header bits of the
    /// code at its top, and the code starting `pre` bits after the current position.
    #[inline(always)]
    fn decode_value_head(&mut self, head: u64, w: u128, off: u32, pre: u32) -> Result<(), Fault> {
        debug_assert!(off <= 51);
        // Control bits: 0x unchanged, 10 reuse the window, 11 new window (the 11 bits that
        // follow are the window field `lead << 6 | (sig - 1)`).
        let ctrl = (head >> 62) as u32;
        let lane = ctrl * 16;
        let rep = self.win_rep;
        // Branch-free selection by `ctrl` (data dependent, so a branch would mispredict
        // often): the candidates sit in 16-bit lanes of a u64 indexed by `ctrl`. LLVM keeps
        // this as a shift, whereas two-way selects tend to be turned back into branches.
        // Code length by ctrl: 1, 1, 2 + sig = 3 + field sig, 13 + sig = 14 + field sig.
        let lens = (1 | 1 << 16 | 3 << 32 | 14 << 48)
            + (rep & (0x3f << 32))
            + ((head >> 3) & (0x3f << 48));
        let len = ((lens >> lane) & 0xffff) as u32;
        // Window field by ctrl: the current window in lanes 0..=2, the new one in lane 3.
        let wins = rep | ((head >> 3) & (0x7ff << 48));
        let win = ((wins >> lane) & 0x7ff) as u32;
        let trail = 63i32 - (win >> 6) as i32 - (win & 0x3f) as i32;
        if trail < 0 {
            // Only a new window can be invalid (lead + sig > 64). Skip its header so that
            // `fail` can tell truncation from corruption.
            self.r.skip(pre + 13);
            return Err(Fault::Window);
        }
        self.win_rep = u64::from(win) * WINDOW_LANES;
        let hdr = (VALUE_HEADER_LEN_PACKED >> (ctrl * 8)) & 0xff;
        // Payload bits, 0 for an unchanged value; the payload starts at off + hdr, which is
        // at most 7 + 25 + 13 < 64.
        let n = len - hdr;
        let payload = bits_at(w, off + hdr);
        // For n == 0 the shift wraps to 0 and `keep` (all ones iff ctrl >= 2) clears it.
        let keep = ((u64::from(ctrl) << 62) as i64 >> 63) as u64;
        let x = payload.wrapping_shr(64 - n) & keep;
        self.r.skip(pre + len);
        self.v ^= x << trail;
        Ok(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.advance() {
            Some((self.t, f64::from_bits(self.v)))
        } else {
            None
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.total - self.idx))
    }
}

impl FusedIterator for XorIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn encode(samples: &[(i64, f64)]) -> XorChunk {
        let mut app = XorAppender::new();
        for &(t, v) in samples {
            app.append(t, v);
        }
        app.finish()
    }

    fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    /// Decodes `bytes` fully, asserting that no error occurred.
    fn decode_ok(bytes: &[u8]) -> Vec<(i64, u64)> {
        let mut it = XorIter::new(bytes).expect("valid header");
        let out: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(it.err(), None);
        assert_eq!(it.next(), None, "fused");
        out
    }

    fn assert_round_trip(samples: &[(i64, f64)]) {
        let chunk = encode(samples);
        assert_eq!(chunk.num_samples(), samples.len());
        assert_eq!(decode_ok(chunk.bytes()), bits(samples));
        let reparsed = XorChunk::from_bytes(chunk.bytes().into()).unwrap();
        assert_eq!(reparsed, chunk);
        let via_iter: Vec<_> = reparsed.iter().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(via_iter, bits(samples));
    }

    fn special_values() -> Vec<f64> {
        vec![
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(STALE_NAN),
            f64::from_bits(0x7ff8_0000_dead_beef),
            f64::from_bits(0xfff0_0000_0000_0001), // negative signalling NaN
            f64::from_bits(1),                     // smallest subnormal
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1.0,
            -1.0,
        ]
    }

    /// Realistic scrape data: 15 s interval with a few ms of jitter.
    fn realistic(n: usize, seed: u64, counter: bool) -> Vec<(i64, f64)> {
        let mut x = seed | 1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::with_capacity(n);
        let mut value = if counter { 1000.0 } else { 0.5 };
        for i in 0..n {
            let jitter = (rnd() % 11) as i64 - 5;
            let t = 1_700_000_000_000 + i as i64 * 15_000 + jitter;
            if counter {
                value += (rnd() % 50) as f64;
            } else {
                value =
                    ((value + ((rnd() % 201) as f64 - 100.0) / 1000.0) * 1000.0).round() / 1000.0;
            }
            out.push((t, value));
        }
        out
    }

    // ---- unit tests ----------------------------------------------------------------------

    #[test]
    fn empty_chunk() {
        let app = XorAppender::new();
        assert_eq!(app.bytes(), &[FORMAT_VERSION, 0, 0]);
        assert_eq!(app.num_samples(), 0);
        assert_eq!(app.first_t(), None);
        assert_eq!(app.last_t(), None);
        assert_eq!(app.last_value(), None);
        assert_eq!(app.heap_bytes(), 0);
        assert_eq!(app.iter().count(), 0);
        assert!(decode_ok(app.bytes()).is_empty());
        let chunk = XorAppender::default().finish();
        assert_eq!(chunk.bytes(), &[FORMAT_VERSION, 0, 0]);
        assert_eq!(chunk.num_samples(), 0);
        assert_eq!(chunk.iter().next(), None);
        assert_eq!(XorChunk::from_bytes(chunk.bytes().into()), Ok(chunk));
        let mut it = XorIter::new(&EMPTY_CHUNK).unwrap();
        assert_eq!(it.seek(i64::MIN), None);
        assert_eq!(it.err(), None);
    }

    #[test]
    fn single_sample_each_special_value() {
        for v in special_values() {
            for t in [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX] {
                assert_round_trip(&[(t, v)]);
            }
        }
    }

    #[test]
    fn special_values_bit_exact_in_sequence() {
        let vals = special_values();
        let mut samples = Vec::new();
        let mut t = -5_000;
        for (i, &a) in vals.iter().enumerate() {
            for &b in &vals[i..] {
                samples.push((t, a));
                samples.push((t + 1, b));
                samples.push((t + 2, b));
                t += 1000;
            }
        }
        assert_round_trip(&samples);
    }

    #[test]
    fn accessors_track_appends() {
        let mut app = XorAppender::new();
        app.append(10, 1.5);
        app.append(20, f64::from_bits(STALE_NAN));
        assert_eq!(app.num_samples(), 2);
        assert_eq!(app.first_t(), Some(10));
        assert_eq!(app.last_t(), Some(20));
        assert_eq!(app.last_value().map(f64::to_bits), Some(STALE_NAN));
        assert!(app.heap_bytes() >= app.bytes().len());
        assert!(!app.is_full());
        let chunk = app.finish();
        assert_eq!(chunk.heap_bytes(), chunk.bytes().len());
    }

    #[test]
    fn extreme_timestamps() {
        assert_round_trip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        assert_round_trip(&[
            (i64::MIN, 1.0),
            (i64::MIN + 1, 2.0),
            (i64::MAX - 1, 3.0),
            (i64::MAX, 4.0),
        ]);
        assert_round_trip(&[(-3, 1.0), (-2, 1.0), (-1, 1.0), (0, 1.0), (1, 1.0)]);
        assert_round_trip(&[(i64::MIN, 0.0), (0, 0.0), (i64::MAX, 0.0)]);
        assert_round_trip(&[
            (i64::MIN, 0.0),
            (-1, 0.0),
            (i64::MAX - 1, 0.0),
            (i64::MAX, 0.0),
        ]);
    }

    #[test]
    fn dod_bucket_boundaries() {
        let mut dods = vec![0i64];
        for bits in [DOD_BITS_1, DOD_BITS_2, DOD_BITS_3] {
            let half = 1i64 << (bits - 1);
            dods.extend([half - 1, half, -half, -half - 1]);
        }
        dods.extend([1 << 40, -(1 << 40)]);
        for &dod in &dods {
            // delta0 large enough that delta0 + dod stays positive.
            let delta0 = 1i64 << 41;
            let samples = [
                (0, 1.0),
                (delta0, 2.0),
                (2 * delta0 + dod, 3.0),
                (3 * delta0 + 2 * dod, 4.0),
            ];
            assert_round_trip(&samples);
        }
    }

    #[test]
    fn dod_bucket_sizes_are_as_documented() {
        // (dod, bits for the timestamp code); the unchanged value adds 1 bit.
        let cases = [
            (0i64, 1u32),
            (1, 9),
            (-64, 9),
            (63, 9),
            (64, 17),
            (-8192, 17),
            (8192, 25),
            (-(1 << 20), 25),
            ((1 << 20) - 1, 25),
            (1 << 20, 68),
            (-(1 << 20) - 1, 68),
            (-(1 << 40), 68),
        ];
        for (dod, want) in cases {
            let mut app = XorAppender::new();
            app.append(0, 7.0);
            app.append(1 << 41, 7.0);
            let before = app.w.bit_len();
            app.append((2 << 41) + dod, 7.0);
            assert_eq!(app.w.bit_len() - before, want as usize + 1, "dod {dod}");
        }
    }

    #[test]
    fn value_code_sizes_are_as_documented() {
        let mut app = XorAppender::new();
        app.append(0, 1.0);
        let mut t = 0;
        let mut step = |app: &mut XorAppender, v: f64| {
            t += 1000;
            let before = app.w.bit_len();
            app.append(t, v);
            app.w.bit_len() - before - 1 // minus the dod-0 bit (or varint for sample 1)
        };
        // Sample 1 carries a 16-bit varint delta (1000) instead of a 1-bit dod.
        assert_eq!(step(&mut app, 1.0) - 15, 1); // unchanged: '0'
        assert_eq!(step(&mut app, 1.5), 13 + 1); // new window: 1 meaningful bit
        assert_eq!(step(&mut app, 1.0), 2 + 1); // same window reused
        assert_eq!(step(&mut app, 1.0), 1);
        // Leading zeros are clamped to 31, so a lowest-bit change costs 33 meaningful bits.
        assert_eq!(
            step(&mut app, f64::from_bits(1.0f64.to_bits() ^ 1)),
            13 + 33
        );
        // Whole-word XOR: 64 meaningful bits, stored as 63 in the 6-bit field.
        assert_eq!(
            step(&mut app, f64::from_bits(!(1.0f64.to_bits() ^ 1))),
            13 + 64
        );
    }

    #[test]
    fn golden_bytes() {
        // Worked example from docs/format/chunk.md.
        let chunk = encode(&[(1000, 1.0), (16_000, 1.0), (31_002, 1.5)]);
        assert_eq!(
            chunk.bytes(),
            &[
                0x01, 0x00, 0x03, // version 1, 3 samples
                0xD0, 0x0F, // zigzag(1000) = 2000 as varint
                0x3F, 0xF0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1.0
                0x98, 0x75, // delta 15000 as varint
                // s1 value: 0 | s2 dod +2: 10 0000010 | s2 value: 11 01100 000000 1 (24 bits)
                0x40, 0xB6, 0x01,
            ]
        );
        assert_eq!(
            decode_ok(chunk.bytes()),
            bits(&[(1000, 1.0), (16_000, 1.0), (31_002, 1.5)])
        );
    }

    #[test]
    fn prefix_of_open_appender_decodes() {
        let samples = realistic(300, 7, false);
        let mut app = XorAppender::new();
        for (i, &(t, v)) in samples.iter().enumerate() {
            app.append(t, v);
            let through_iter: Vec<(i64, u64)> = app.iter().map(|(t, v)| (t, v.to_bits())).collect();
            assert_eq!(through_iter, bits(&samples[..=i]));
            app.sync_header();
            assert_eq!(decode_ok(app.bytes()), bits(&samples[..=i]));
        }
    }

    #[test]
    fn seek_semantics() {
        let samples = [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)];
        let chunk = encode(&samples);
        // Before the first sample.
        assert_eq!(chunk.iter().seek(i64::MIN), Some((10, 1.0)));
        assert_eq!(chunk.iter().seek(5), Some((10, 1.0)));
        // Exact hit.
        assert_eq!(chunk.iter().seek(30), Some((30, 3.0)));
        // Between samples.
        assert_eq!(chunk.iter().seek(21), Some((30, 3.0)));
        // Last and past the end.
        assert_eq!(chunk.iter().seek(40), Some((40, 4.0)));
        assert_eq!(chunk.iter().seek(41), None);
        assert_eq!(chunk.iter().seek(i64::MAX), None);

        // Cursor behaviour: never moves backwards, re-returns the current sample.
        let mut it = chunk.iter();
        assert_eq!(it.seek(15), Some((20, 2.0)));
        assert_eq!(it.seek(15), Some((20, 2.0)));
        assert_eq!(it.seek(20), Some((20, 2.0)));
        assert_eq!(it.next(), Some((30, 3.0)));
        assert_eq!(it.seek(0), Some((30, 3.0)));
        assert_eq!(it.seek(31), Some((40, 4.0)));
        assert_eq!(it.next(), None);
        assert_eq!(it.seek(0), None);
        assert_eq!(it.err(), None);

        let mut it = chunk.iter();
        assert_eq!(it.seek(100), None);
        assert_eq!(it.next(), None);
        assert_eq!(it.seek(0), None);
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            XorIter::new(&[]).err(),
            Some(ChunkError::HeaderTooShort { len: 0 })
        );
        assert_eq!(
            XorIter::new(&[1, 0]).err(),
            Some(ChunkError::HeaderTooShort { len: 2 })
        );
        assert_eq!(
            XorIter::new(&[2, 0, 0]).err(),
            Some(ChunkError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            XorChunk::from_bytes(Box::new([1, 0, 1, 0])),
            Err(ChunkError::Truncated { sample: 0 })
        );
        // Trailing bytes after an empty chunk are ignored.
        assert!(XorChunk::from_bytes(Box::new([1, 0, 0, 0xff])).is_ok());
    }

    #[test]
    fn corrupt_streams_report_specific_errors() {
        let one = 1.0f64.to_bits().to_be_bytes();
        // Second timestamp equal to the first: delta varint 0.
        let mut bytes = vec![FORMAT_VERSION, 0, 2, 0x00];
        bytes.extend_from_slice(&one);
        bytes.extend_from_slice(&[0x00, 0x00]);
        let mut it = XorIter::new(&bytes).unwrap();
        assert_eq!(it.next(), Some((0, 1.0)));
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), Some(&ChunkError::NotIncreasing { sample: 1 }));

        // An 11-byte varint.
        let mut bytes = vec![FORMAT_VERSION, 0, 1];
        bytes.extend_from_slice(&[0xff; 11]);
        bytes.extend_from_slice(&one);
        let mut it = XorIter::new(&bytes).unwrap();
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), Some(&ChunkError::BadVarint { sample: 0 }));

        // A 10-byte varint overflowing 64 bits.
        let mut bytes = vec![FORMAT_VERSION, 0, 1];
        bytes.extend_from_slice(&[0xff; 9]);
        bytes.push(0x02);
        bytes.extend_from_slice(&one);
        let mut it = XorIter::new(&bytes).unwrap();
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), Some(&ChunkError::BadVarint { sample: 0 }));

        // A new window with 31 leading zeros and 64 meaningful bits.
        let mut bytes = vec![FORMAT_VERSION, 0, 2, 0x00];
        bytes.extend_from_slice(&one);
        bytes.extend_from_slice(&[0x01, 0xff, 0xf8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut it = XorIter::new(&bytes).unwrap();
        assert_eq!(it.next(), Some((0, 1.0)));
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), Some(&ChunkError::BadValueWindow { sample: 1 }));
        assert_eq!(it.seek(i64::MIN), None);
    }

    #[test]
    fn reuse_before_any_window_uses_the_full_word() {
        // '10' right after the first sample reuses the initial window: 64 meaningful bits.
        let mut bytes = vec![FORMAT_VERSION, 0, 2, 0x00];
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.push(0x05); // delta 5
        let v = f64::from_bits(0xdead_beef_0000_0001);
        let code = (0b10u128 << 64 | u128::from(v.to_bits())) << (128 - 66);
        bytes.extend_from_slice(&code.to_be_bytes()[..9]);
        let mut it = XorIter::new(&bytes).unwrap();
        assert_eq!(it.next().map(|(t, v)| (t, v.to_bits())), Some((0, 0)));
        assert_eq!(
            it.next().map(|(t, v)| (t, v.to_bits())),
            Some((5, v.to_bits()))
        );
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), None);
    }

    #[test]
    fn truncation_at_every_length() {
        let samples = realistic(120, 3, true);
        let chunk = encode(&samples);
        let full = chunk.bytes();
        for len in 0..full.len() {
            let cut = &full[..len];
            match XorIter::new(cut) {
                Err(e) => assert!(
                    matches!(
                        e,
                        ChunkError::HeaderTooShort { .. } | ChunkError::Truncated { sample: 0 }
                    ),
                    "len {len}: {e:?}"
                ),
                Ok(mut it) => {
                    let got: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
                    assert!(got.len() < samples.len(), "len {len}");
                    assert_eq!(got, bits(&samples[..got.len()]), "len {len}");
                    assert_eq!(
                        it.err(),
                        Some(&ChunkError::Truncated { sample: got.len() }),
                        "len {len}"
                    );
                    assert_eq!(it.next(), None);
                    assert_eq!(it.seek(i64::MIN), None);
                }
            }
        }
    }

    #[test]
    fn count_larger_than_data_reports_truncation() {
        let chunk = encode(&realistic(10, 1, false));
        let mut bytes = chunk.bytes().to_vec();
        bytes[1..3].copy_from_slice(&500u16.to_be_bytes());
        let mut it = XorIter::new(&bytes).unwrap();
        let n = it.by_ref().count();
        assert!((10..500).contains(&n));
        assert!(it.err().is_some());
    }

    #[test]
    fn max_samples_round_trip() {
        let mut samples = realistic(MAX_ENCODABLE_SAMPLES, 11, false);
        // Mix in irregular gaps and special values.
        for (i, s) in samples.iter_mut().enumerate() {
            if i % 1000 == 999 {
                s.1 = f64::from_bits(STALE_NAN);
            }
        }
        let mut app = XorAppender::new();
        for &(t, v) in &samples {
            assert!(!app.is_full());
            app.append(t, v);
        }
        assert!(app.is_full());
        assert_eq!(app.num_samples(), u16::MAX as usize);
        let chunk = app.finish();
        assert_eq!(decode_ok(chunk.bytes()), bits(&samples));
    }

    #[test]
    #[should_panic(expected = "full")]
    fn append_past_capacity_panics() {
        let mut app = XorAppender::new();
        for i in 0..=MAX_ENCODABLE_SAMPLES as i64 {
            app.append(i, 0.0);
        }
    }

    #[test]
    fn realistic_compression_ratio() {
        for counter in [false, true] {
            let samples = realistic(MAX_SAMPLES_PER_CHUNK, 5, counter);
            let chunk = encode(&samples);
            let per_sample = chunk.bytes().len() as f64 / samples.len() as f64;
            // Gauges with 3 decimals have near-random mantissas; counters compress well.
            let limit = if counter { 3.0 } else { 9.0 };
            assert!(
                per_sample < limit,
                "counter={counter}: {per_sample} bytes/sample"
            );
            assert_eq!(decode_ok(chunk.bytes()), bits(&samples));
        }
    }

    #[test]
    fn iterator_works_on_borrowed_slice_with_trailing_bytes() {
        let samples = realistic(50, 9, true);
        let chunk = encode(&samples);
        let mut buf = chunk.bytes().to_vec();
        buf.extend_from_slice(&[0xAA; 17]);
        assert_eq!(decode_ok(&buf), bits(&samples));
    }

    // ---- property tests ------------------------------------------------------------------

    fn timestamps_strategy(max_len: usize) -> impl Strategy<Value = Vec<i64>> {
        let start = prop_oneof![
            any::<i64>(),
            -10_000_000_000_000i64..10_000_000_000_000,
            Just(i64::MIN),
            Just(-1i64),
        ];
        // None = repeat the previous delta (dod 0).
        let delta = prop_oneof![
            3 => Just(None),
            2 => Just(Some(1u64)),
            4 => (14_990u64..15_010).prop_map(Some),
            2 => (1u64..100_000).prop_map(Some),
            1 => (1u64..=1 << 32).prop_map(Some),
            1 => ((1u64 << 32)..(1 << 45)).prop_map(Some),
            1 => (1u64..=u64::MAX).prop_map(Some),
        ];
        (start, proptest::collection::vec(delta, 0..max_len)).prop_map(|(start, deltas)| {
            let mut ts = vec![start];
            let mut t = start as i128;
            let mut prev = 15_000u64;
            for d in deltas {
                let d = d.unwrap_or(prev);
                prev = d;
                t += d as i128;
                if t > i64::MAX as i128 {
                    break;
                }
                ts.push(t as i64);
            }
            ts
        })
    }

    fn value_strategy() -> impl Strategy<Value = Option<u64>> {
        // None = repeat the previous value.
        prop_oneof![
            2 => Just(None),
            3 => any::<u64>().prop_map(Some),
            2 => proptest::sample::select(special_values()).prop_map(|v| Some(v.to_bits())),
            2 => (0u32..1_000_000).prop_map(|n| Some((n as f64).to_bits())),
            2 => (-1000i32..1000).prop_map(|n| Some((n as f64 / 100.0).to_bits())),
            1 => (0x7ff0_0000_0000_0001u64..=0x7fff_ffff_ffff_ffff).prop_map(Some),
        ]
    }

    fn samples_strategy(max_len: usize) -> impl Strategy<Value = Vec<(i64, f64)>> {
        (
            timestamps_strategy(max_len),
            proptest::collection::vec(value_strategy(), max_len + 1),
        )
            .prop_map(|(ts, vals)| {
                let mut prev = 0u64;
                ts.into_iter()
                    .zip(vals)
                    .map(|(t, v)| {
                        prev = v.unwrap_or(prev);
                        (t, f64::from_bits(prev))
                    })
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_round_trip(samples in samples_strategy(400)) {
            assert_round_trip(&samples);
        }

        #[test]
        fn prop_open_appender_prefixes(samples in samples_strategy(60)) {
            let mut app = XorAppender::new();
            for (i, &(t, v)) in samples.iter().enumerate() {
                app.append(t, v);
                let through_iter: Vec<(i64, u64)> = app.iter().map(|(t, v)| (t, v.to_bits())).collect();
                prop_assert_eq!(through_iter, bits(&samples[..=i]));
                app.sync_header();
                prop_assert_eq!(decode_ok(app.bytes()), bits(&samples[..=i]));
                prop_assert_eq!(app.last_t(), Some(t));
                prop_assert_eq!(app.last_value().map(f64::to_bits), Some(v.to_bits()));
            }
        }

        #[test]
        fn prop_seek_matches_model(
            samples in samples_strategy(200),
            ops in proptest::collection::vec(prop_oneof![
                Just(None),
                any::<i64>().prop_map(Some),
                (0usize..256).prop_map(|i| Some(-(i as i64) - 1)), // index-relative, see below
            ], 0..40),
        ) {
            let chunk = encode(&samples);
            let mut it = chunk.iter();
            // Model: `next` = index of the next sample to yield; `cur` = last returned index.
            let mut next = 0usize;
            let mut cur: Option<usize> = None;
            for op in ops {
                match op {
                    None => {
                        let want = (next < samples.len()).then(|| samples[next]);
                        cur = want.map(|_| next);
                        next = (next + 1).min(samples.len());
                        prop_assert_eq!(it.next().map(|(t, v)| (t, v.to_bits())), want.map(|(t, v)| (t, v.to_bits())));
                    }
                    Some(raw) => {
                        // Negative small values pick a target near an existing sample.
                        let target = if (-256..0).contains(&raw) && !samples.is_empty() {
                            let i = ((-raw - 1) as usize) % samples.len();
                            let off = (-raw - 1) % 3 - 1;
                            samples[i].0.saturating_add(off)
                        } else {
                            raw
                        };
                        let want = match cur {
                            Some(c) if samples[c].0 >= target => Some(c),
                            _ => {
                                let found = (next..samples.len()).find(|&i| samples[i].0 >= target);
                                next = found.map_or(samples.len(), |i| i + 1);
                                found
                            }
                        };
                        cur = want;
                        prop_assert_eq!(
                            it.seek(target).map(|(t, v)| (t, v.to_bits())),
                            want.map(|i| (samples[i].0, samples[i].1.to_bits()))
                        );
                    }
                }
            }
            prop_assert_eq!(it.err(), None);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            check_no_panic(&bytes);
        }

        #[test]
        fn prop_random_body_with_valid_header(
            count in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut bytes = vec![FORMAT_VERSION];
            bytes.extend_from_slice(&count.to_be_bytes());
            bytes.extend_from_slice(&body);
            check_no_panic(&bytes);
        }

        #[test]
        fn prop_bit_flips_never_panic(
            samples in samples_strategy(150),
            flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4),
        ) {
            let chunk = encode(&samples);
            let mut bytes = chunk.bytes().to_vec();
            for (i, bit) in flips {
                let i = i % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            check_no_panic(&bytes);
        }

        #[test]
        fn prop_truncation_yields_prefix_and_error(samples in samples_strategy(150), cut in any::<usize>()) {
            prop_assume!(!samples.is_empty());
            let chunk = encode(&samples);
            let full = chunk.bytes();
            let len = cut % full.len();
            match XorIter::new(&full[..len]) {
                Err(e) => prop_assert!(len < HEADER_LEN + MIN_FIRST_SAMPLE_BYTES, "{:?}", e),
                Ok(mut it) => {
                    let got: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
                    prop_assert!(got.len() < samples.len());
                    prop_assert_eq!(&got[..], &bits(&samples[..got.len()])[..]);
                    prop_assert_eq!(it.err(), Some(&ChunkError::Truncated { sample: got.len() }));
                }
            }
        }
    }

    fn check_no_panic(bytes: &[u8]) {
        let Ok(mut it) = XorIter::new(bytes) else {
            assert!(XorChunk::from_bytes(bytes.into()).is_err());
            return;
        };
        let announced = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
        let mut prev = None;
        let mut n = 0;
        for (t, _) in it.by_ref() {
            if let Some(p) = prev {
                assert!(t > p, "decoder must only yield increasing timestamps");
            }
            prev = Some(t);
            n += 1;
        }
        assert!(n <= announced);
        assert_eq!(n < announced, it.err().is_some());
        let mut it2 = XorIter::new(bytes).unwrap();
        let _ = it2.seek(0);
        let _ = it2.seek(i64::MAX);
        let _ = it2.next();
    }

    // ---- ad-hoc throughput measurement ---------------------------------------------------

    /// Ad-hoc release timing, not a benchmark harness. Run with
    /// `cargo test --release -p lookout-tsdb -- --ignored --nocapture chunk::tests::throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        use std::hint::black_box;
        use std::time::Instant;

        const CHUNKS: usize = 4_000; // 480k samples; the encoded data stays in cache
        const ROUNDS: usize = 40;
        for kind in ["gauge", "counter"] {
            let inputs: Vec<_> = (0..CHUNKS)
                .map(|c| realistic(MAX_SAMPLES_PER_CHUNK, c as u64 * 2 + 1, kind == "counter"))
                .collect();
            let total = (CHUNKS * MAX_SAMPLES_PER_CHUNK) as f64;
            let (mut enc, mut dec, mut seek) = (Vec::new(), Vec::new(), Vec::new());
            let mut bytes = 0;
            for _ in 0..ROUNDS {
                let start = Instant::now();
                let chunks: Vec<XorChunk> = inputs
                    .iter()
                    .map(|samples| {
                        let mut app = XorAppender::new();
                        for &(t, v) in samples {
                            app.append(t, v);
                        }
                        black_box(app.finish())
                    })
                    .collect();
                enc.push(total / start.elapsed().as_secs_f64() / 1e6);

                let start = Instant::now();
                let mut acc = 0u64;
                for chunk in &chunks {
                    for (t, v) in chunk.iter() {
                        acc = acc.wrapping_add(t as u64 ^ v.to_bits());
                    }
                }
                black_box(acc);
                dec.push(total / start.elapsed().as_secs_f64() / 1e6);

                // Seek to the last sample: skips 119 of 120.
                let start = Instant::now();
                for chunk in &chunks {
                    black_box(chunk.iter().seek(1_700_000_000_000 + 119 * 15_000 - 10));
                }
                seek.push(total / start.elapsed().as_secs_f64() / 1e6);
                bytes = chunks.iter().map(|c| c.bytes().len()).sum::<usize>();
            }
            let stats = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                (v[v.len() - 1], v[v.len() / 2])
            };
            let ((eb, em), (db, dm), (sb, sm)) =
                (stats(&mut enc), stats(&mut dec), stats(&mut seek));
            println!(
                "{kind:>7}: encode {eb:.1} M samples/s (median {em:.1}), decode {db:.1} (median \
                 {dm:.1}), seek {sb:.1} (median {sm:.1}), {:.2} bytes/sample",
                bytes as f64 / total
            );
        }
    }
}
