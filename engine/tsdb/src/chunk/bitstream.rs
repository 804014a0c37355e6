//! MSB-first bit writer and reader used by the XOR chunk codec.
//!
//! Bits are packed most-significant-bit first: the first bit written lands in bit 7 (value
//! 0x80) of the first byte. Unused low bits of the final byte are always zero.
//!
//! Both sides are built for whole samples: the writer emits one sample (in the common case)
//! with a single 16-byte store, and the reader decodes one from a single 16-byte load,
//! keeping the hot paths short and free of data-dependent branches.

/// Appends bits to a byte vector.
///
/// The vector is kept longer than the stream (zero-filled slack) so every write is a plain
/// 16-byte store at an in-bounds offset. All bits written so far are always present in
/// `buf` — a partially used last byte included, its unused low bits zero — so
/// [`BitWriter::bytes`] is the complete stream at any time and never needs a flush.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    /// Stream bytes followed by zeroed slack (`len >= committed + 16` before each write).
    buf: Vec<u8>,
    /// Number of complete bytes.
    committed: usize,
    /// Bits used in `buf[committed]`, `0..=7`.
    nacc: u32,
}

impl BitWriter {
    /// The stream written so far (last byte possibly partial, zero padded).
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.committed + (self.nacc > 0) as usize]
    }

    /// Mutable access to complete bytes already written (used to patch the header).
    #[inline]
    pub(crate) fn committed_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.committed]
    }

    /// Number of bits written.
    #[cfg(test)]
    pub(crate) fn bit_len(&self) -> usize {
        self.committed * 8 + self.nacc as usize
    }

    /// Heap capacity in bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// True if the next `max_bits` bits can be written without growing.
    #[inline(always)]
    pub(crate) fn has_room(&self, max_bits: u32) -> bool {
        // The last write stores 16 bytes starting at or before the final byte.
        self.buf.len() >= self.committed + (max_bits as usize).div_ceil(8) + 16
    }

    /// Grows the buffer so that the next `max_bits` bits fit, to at least `target_len` bytes
    /// and by at least half its size (amortized O(1) appends whatever the hint).
    #[cold]
    #[inline(never)]
    pub(crate) fn grow(&mut self, max_bits: u32, target_len: usize) {
        let needed = self.committed + (max_bits as usize).div_ceil(8) + 16;
        let len = self.buf.len();
        let new_len = needed.max(target_len).max(len + len / 2);
        self.buf.resize(new_len, 0);
    }

    /// Writes `head_len` bits of `head` (`0..=56`) followed by `len` bits of `payload`
    /// (`0..=64`), most significant first. Bits above the given lengths must be zero. Room for
    /// the bits must have been made (see [`BitWriter::has_room`]).
    ///
    /// Branch free: the pending partial byte, `head` and `payload` are laid out in a 128-bit
    /// window (as two u64 halves) that is stored at `committed` in one go.
    #[inline(always)]
    pub(crate) fn put(&mut self, head: u64, head_len: u32, payload: u64, len: u32) {
        debug_assert!(head_len <= 56 && len <= 64);
        debug_assert!(
            head_len == 64 || head >> head_len == 0,
            "head wider than {head_len}"
        );
        debug_assert!(len == 64 || payload >> len == 0, "payload wider than {len}");
        let at = self.committed;
        // Bit offset of the payload in the window, <= 63.
        let s = self.nacc + head_len;
        // The partial byte: its top `nacc` bits are used, the rest are zero.
        let pending = u64::from(self.buf[at]) << 56;
        // Left-aligned payload; `len == 0` (payload 0) wraps to a harmless shift by 0.
        let aligned = payload.wrapping_shl(64 - len);
        // `s == 0` implies `head_len == 0` and `head == 0`, so the wrap is harmless too.
        let hi = pending | head.wrapping_shl(64 - s) | (aligned >> s);
        let lo = (aligned << 1) << (63 - s); // aligned << (64 - s), 0 for s == 0
        let mut window = [0u8; 16];
        window[..8].copy_from_slice(&hi.to_be_bytes());
        window[8..].copy_from_slice(&lo.to_be_bytes());
        self.buf[at..at + 16].copy_from_slice(&window);
        let total = s + len;
        self.committed = at + (total >> 3) as usize;
        self.nacc = total & 7;
    }

    /// Consumes the writer, returning exactly the stream bytes (capacity shrunk to fit).
    pub(crate) fn into_boxed_slice(self) -> Box<[u8]> {
        let len = self.committed + (self.nacc > 0) as usize;
        let mut buf = self.buf;
        buf.truncate(len);
        buf.into_boxed_slice()
    }
}

/// Random-access bit reader over a byte slice.
///
/// The only state is the bit position, so decoding one field is "load the 16 bytes around
/// the position, shift, mask" with no loop-carried bit buffer; this keeps the dependency
/// chain from one sample to the next short.
///
/// Reading past the end of the slice yields zero bits instead of failing; callers check
/// [`BitReader::overrun`] at convenient points (once per sample) to detect truncation. This
/// keeps the per-field hot path free of bounds checks on the stream length.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Bit position of the next unread bit. May run past the end of the data (virtual zero
    /// padding), but only by a bounded amount because callers stop after an overrun.
    pos: usize,
    /// Number of bits in `data`.
    bit_len: usize,
}

impl<'a> BitReader<'a> {
    #[inline]
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            bit_len: data.len().saturating_mul(8),
        }
    }

    /// Current bit position.
    #[inline(always)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves the position forward by `n` bits.
    #[inline(always)]
    pub(crate) fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }

    /// The 128 stream bits starting at byte `pos / 8`, and the bit offset `pos % 8` of `pos`
    /// within them. At least `128 - 7 = 121` bits from `pos` on are therefore available.
    #[inline(always)]
    pub(crate) fn window(&self, pos: usize) -> (u128, u32) {
        let at = pos >> 3;
        let word = match self.data.get(at..at + 16) {
            Some(bytes) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(bytes);
                u128::from_be_bytes(b)
            }
            None => self.tail_window(at),
        };
        (word, (pos & 7) as u32)
    }

    /// The 16 bytes at `at`, zero padded past the end of the data.
    #[cold]
    #[inline(never)]
    fn tail_window(&self, at: usize) -> u128 {
        let mut b = [0u8; 16];
        if let Some(rest) = self.data.get(at..) {
            let n = rest.len().min(16);
            b[..n].copy_from_slice(&rest[..n]);
        }
        u128::from_be_bytes(b)
    }

    /// Reads `n` bits, `1 <= n <= 64`.
    #[inline(always)]
    pub(crate) fn read_bits(&mut self, n: u32) -> u64 {
        debug_assert!((1..=64).contains(&n));
        let (w, off) = self.window(self.pos);
        self.pos += n as usize;
        ((w << off) >> (128 - n)) as u64
    }

    /// True if more bits were consumed than the data holds, i.e. padding was read as data.
    #[inline(always)]
    pub(crate) fn overrun(&self) -> bool {
        self.pos > self.bit_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn low_mask(n: u32) -> u64 {
        if n == 0 {
            0
        } else {
            u64::MAX >> (64 - n)
        }
    }

    #[test]
    fn writer_reader_round_trip_mixed_widths() {
        let mut w = BitWriter::default();
        let mut expected = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..3000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let hl = (i * 7 + (x >> 58) as u32) % 57;
            let pl = (i * 13 + (x >> 50) as u32) % 65;
            let head = x.rotate_left(17) & low_mask(hl);
            let payload = x & low_mask(pl);
            if !w.has_room(hl + pl) {
                w.grow(hl + pl, 0);
            }
            w.put(head, hl, payload, pl);
            expected.push((head, hl));
            expected.push((payload, pl));
        }
        assert_eq!(
            w.bit_len(),
            expected.iter().map(|e| e.1 as usize).sum::<usize>()
        );
        let bytes = w.bytes().to_vec();
        let mut r = BitReader::new(&bytes);
        for (v, n) in expected {
            let got = if n == 0 { 0 } else { r.read_bits(n) };
            assert_eq!(got, v, "width {n}");
        }
        assert!(!r.overrun());
        // Reading further yields zeros and flags the overrun.
        assert_eq!(r.read_bits(64), 0);
        assert_eq!(r.read_bits(8), 0);
        assert!(r.overrun());
        assert_eq!(&*w.into_boxed_slice(), &bytes[..]);
    }

    #[test]
    fn writer_keeps_partial_byte_visible() {
        let mut w = BitWriter::default();
        assert_eq!(w.bytes(), &[] as &[u8]);
        w.grow(128, 0);
        w.put(0b1, 1, 0, 0);
        assert_eq!(w.bytes(), &[0x80]);
        w.put(0, 0, 0b01, 2);
        assert_eq!(w.bytes(), &[0xA0]);
        w.put(0xFF, 8, 0xFF, 8);
        assert_eq!(w.bytes(), &[0xBF, 0xFF, 0xE0]);
        w.put(0, 0, 0, 0);
        assert_eq!(w.bytes(), &[0xBF, 0xFF, 0xE0]);
        w.put(0, 0, u64::MAX, 64);
        assert_eq!(w.bytes().len(), 11);
        assert_eq!(w.bytes()[10], 0xE0);
    }

    #[test]
    fn reader_on_empty_and_short_input() {
        let mut r = BitReader::new(&[]);
        assert_eq!(r.read_bits(8), 0);
        assert!(r.overrun());
        let mut r = BitReader::new(&[0xAB]);
        assert_eq!(r.read_bits(8), 0xAB);
        assert!(!r.overrun());
        assert_eq!(r.read_bits(64), 0);
        assert!(r.overrun());
    }
}
