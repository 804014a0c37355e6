//! The cold-chunk encoding used by compacted blocks: columns of integers, zstd-compressed.
//!
//! Gorilla chunks are built for appending one sample at a time. Data that compaction rewrites
//! is complete, so it can be laid out for the compressor instead: timestamps as
//! delta-of-deltas, values as exact scaled decimals (most metrics are integers or have a few
//! decimal digits) with deltas, each a varint, and the whole chunk through zstd. Byte layout:
//! `docs/format/chunk.md`, section "Columnar (encoding 2)".

use crate::encoding::{put_uvarint, put_varint, Decoder};

/// Values are stored as raw `f64` bits, each XORed with the previous one.
const VALUES_RAW: u8 = 0;
/// Values are `integer / 10^exponent`, stored as an exponent byte and integer deltas.
const VALUES_DECIMAL: u8 = 1;
/// As [`VALUES_DECIMAL`] with delta-of-deltas (steady counters become zeros).
const VALUES_DECIMAL_DOD: u8 = 2;
/// As [`VALUES_DECIMAL`] with the zigzagged deltas as fixed-width integers split into byte
/// planes (all low bytes, then all second bytes, ...): noisy values compress better. Read,
/// no longer written ([`VALUES_DECIMAL_OFFSET_PLANES`] replaced it).
const VALUES_DECIMAL_PLANES: u8 = 3;
/// The first integer, then the deltas minus their minimum as unsigned byte planes, each plane
/// above the first compressed in a zstd frame of its own: a noisy counter's deltas lie in a
/// narrow band above its typical step, so its high plane holds a few small values, and zstd
/// gives each plane a Huffman table fitted to it instead of one for both.
const VALUES_DECIMAL_OFFSET_PLANES: u8 = 4;
/// Largest decimal exponent tried.
const MAX_EXPONENT: u8 = 6;
/// Integers must stay exact in an f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
/// zstd level of [`encode`]: compaction is off the write path, and decompression speed
/// hardly depends on it.
const ZSTD_LEVEL: i32 = 9;
/// zstd level of [`encode_fast`]: about twice as fast as [`ZSTD_LEVEL`] for about 1 % more
/// bytes on node_exporter-like data (`cargo bench -p lookout-benches --bench codec`).
const ZSTD_LEVEL_FAST: i32 = 3;
/// Refuse to inflate a chunk beyond this (a damaged length must not exhaust memory).
const MAX_DECODED_BYTES: usize = 64 << 20;

/// Why a columnar chunk could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnarError {
    /// zstd rejected the data.
    #[error("zstd: {0}")]
    Decompress(String),
    /// The decompressed columns are malformed.
    #[error("malformed columns at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
}

fn decimal_exponent(samples: &[(i64, f64)]) -> Option<u8> {
    (0..=MAX_EXPONENT).find(|&exponent| {
        let scale = 10f64.powi(i32::from(exponent));
        samples.iter().all(|&(_, value)| {
            let scaled = (value * scale).round();
            // Check exactly what the decoder will compute (this also rules out -0.0).
            scaled.abs() < MAX_EXACT
                && ((scaled as i64) as f64 / scale).to_bits() == value.to_bits()
        })
    })
}

/// Encodes samples (strictly increasing timestamps, at least one), compressing hard.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    encode_at(samples, ZSTD_LEVEL)
}

/// As [`encode`], compressing faster (where a stop or a restart waits for it); the same
/// format, read by [`decode`].
pub fn encode_fast(samples: &[(i64, f64)]) -> Vec<u8> {
    encode_at(samples, ZSTD_LEVEL_FAST)
}

fn encode_at(samples: &[(i64, f64)], level: i32) -> Vec<u8> {
    debug_assert!(!samples.is_empty());
    debug_assert!(samples.windows(2).all(|pair| pair[0].0 < pair[1].0));
    let mut columns = Vec::with_capacity(samples.len() * 3);
    put_uvarint(&mut columns, samples.len() as u64);
    let mut previous_t = 0i64;
    let mut previous_delta = 0i64;
    for (index, &(t, _)) in samples.iter().enumerate() {
        match index {
            0 => put_varint(&mut columns, t),
            _ => {
                let delta = t.wrapping_sub(previous_t);
                put_varint(&mut columns, delta.wrapping_sub(previous_delta));
                previous_delta = delta;
            }
        }
        previous_t = t;
    }
    match decimal_exponent(samples) {
        Some(exponent) => {
            // Three layouts of the same integers; keep whichever compresses smallest.
            let scale = 10f64.powi(i32::from(exponent));
            let integers: Vec<i64> = samples
                .iter()
                .map(|&(_, value)| (value * scale).round() as i64)
                .collect();
            let deltas: Vec<i64> = integers
                .iter()
                .scan(0i64, |previous, integer| {
                    let delta = integer.wrapping_sub(*previous);
                    *previous = *integer;
                    Some(delta)
                })
                .collect();
            let mut best: Option<Vec<u8>> = None;
            for mode in [
                VALUES_DECIMAL,
                VALUES_DECIMAL_DOD,
                VALUES_DECIMAL_OFFSET_PLANES,
            ] {
                let mut candidate = columns.clone();
                candidate.push(mode);
                candidate.push(exponent);
                let compressed = match mode {
                    VALUES_DECIMAL => {
                        deltas
                            .iter()
                            .for_each(|delta| put_varint(&mut candidate, *delta));
                        compress(&candidate, level)
                    }
                    VALUES_DECIMAL_DOD => {
                        let mut previous = 0i64;
                        for delta in &deltas {
                            put_varint(&mut candidate, delta.wrapping_sub(previous));
                            previous = *delta;
                        }
                        compress(&candidate, level)
                    }
                    _ => offset_planes(candidate, &integers, level),
                };
                if best
                    .as_ref()
                    .is_none_or(|best| compressed.len() < best.len())
                {
                    best = Some(compressed);
                }
            }
            return best.expect("three candidates");
        }
        None => {
            columns.push(VALUES_RAW);
            let mut previous = 0u64;
            for &(_, value) in samples {
                columns.extend_from_slice(&(value.to_bits() ^ previous).to_le_bytes());
                previous = value.to_bits();
            }
        }
    }
    compress(&columns, level)
}

/// Layout [`VALUES_DECIMAL_OFFSET_PLANES`] after `columns` (which ends with its mode and
/// exponent bytes) and compresses it: `columns` and the low plane in one frame, each further
/// plane in a frame of its own.
fn offset_planes(mut columns: Vec<u8>, integers: &[i64], level: i32) -> Vec<u8> {
    let first = integers[0];
    let deltas: Vec<i64> = integers
        .windows(2)
        .map(|pair| pair[1].wrapping_sub(pair[0]))
        .collect();
    let base = deltas.iter().copied().min().unwrap_or(0);
    let offsets: Vec<u64> = deltas
        .iter()
        .map(|delta| delta.wrapping_sub(base) as u64)
        .collect();
    let width = offsets
        .iter()
        .map(|value| 8 - value.leading_zeros() as usize / 8)
        .max()
        .unwrap_or(0)
        .max(1);
    put_varint(&mut columns, first);
    put_varint(&mut columns, base);
    columns.push(width as u8);
    columns.extend(offsets.iter().map(|value| *value as u8));
    let mut compressed = compress(&columns, level);
    let mut plane = Vec::with_capacity(offsets.len());
    for shift in 1..width {
        plane.clear();
        plane.extend(offsets.iter().map(|value| (value >> (8 * shift)) as u8));
        compressed.extend(compress(&plane, level));
    }
    compressed
}

thread_local! {
    /// One compression context per thread: creating one for a level-9 compression allocates
    /// and clears megabytes of tables, more than compressing a chunk costs.
    static COMPRESSOR: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, i32)>> =
        const { std::cell::RefCell::new(None) };
    /// One decompression context per thread, for the same reason.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(data: &[u8], level: i32) -> Vec<u8> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (compressor, current) = match &mut *slot {
            Some(entry) => entry,
            empty => empty.insert((
                zstd::bulk::Compressor::new(level).expect("a zstd context"),
                level,
            )),
        };
        if *current != level {
            compressor
                .set_compression_level(level)
                .expect("a valid zstd level");
            *current = level;
        }
        compressor
            .compress(data)
            .expect("compressing into memory cannot fail")
    })
}

/// The sum of the sizes the frames of `bytes` declare, at most `MAX_DECODED_BYTES`.
fn decompressed_size(mut bytes: &[u8]) -> Result<usize, ColumnarError> {
    let mut total = 0u64;
    loop {
        match zstd::zstd_safe::get_frame_content_size(bytes) {
            Ok(Some(size)) => total = total.saturating_add(size),
            Ok(None) => {
                return Err(ColumnarError::Decompress(
                    "frame does not declare its size".to_owned(),
                ))
            }
            Err(_) => return Err(ColumnarError::Decompress("not a zstd frame".to_owned())),
        }
        if total > MAX_DECODED_BYTES as u64 {
            return Err(ColumnarError::Decompress(format!(
                "frames declare {total} bytes, more than the {MAX_DECODED_BYTES} allowed"
            )));
        }
        let frame = zstd::zstd_safe::find_frame_compressed_size(bytes)
            .map_err(|_| ColumnarError::Decompress("truncated zstd frame".to_owned()))?;
        if frame == 0 || frame > bytes.len() {
            return Err(ColumnarError::Decompress("truncated zstd frame".to_owned()));
        }
        bytes = &bytes[frame..];
        if bytes.is_empty() {
            return Ok(total as usize);
        }
    }
}

/// Decompresses the chunk's zstd frames, one after the other, into a buffer of exactly their
/// declared size (each frame header carries it; `zstd::bulk::decompress` would reserve the
/// whole `MAX_DECODED_BYTES` instead).
fn decompress_into(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ColumnarError> {
    let size = decompressed_size(bytes)?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|error| ColumnarError::Decompress(error.to_string()))?,
            );
        }
        out.clear();
        out.reserve(size);
        let written = slot
            .as_mut()
            .expect("just set")
            .decompress_to_buffer(bytes, out)
            .map_err(|error| ColumnarError::Decompress(error.to_string()))?;
        if written != size {
            return Err(ColumnarError::Decompress(format!(
                "frames declare {size} bytes and hold {written}"
            )));
        }
        Ok(())
    })
}

/// `10^exponent` for a decimal mode's exponent byte read just before `offset`.
fn decimal_scale(exponent: u8, offset: usize) -> Result<f64, ColumnarError> {
    if exponent > MAX_EXPONENT {
        return Err(ColumnarError::Malformed {
            offset,
            reason: "decimal exponent out of range",
        });
    }
    Ok(10f64.powi(i32::from(exponent)))
}

/// A byte-plane layout's width byte: 1 to 8 planes.
fn plane_width(decoder: &mut Decoder<'_>) -> Result<usize, ColumnarError> {
    let width = decoder.bytes(1).map_err(|error| ColumnarError::Malformed {
        offset: error.offset,
        reason: error.reason,
    })?[0] as usize;
    if !(1..=8).contains(&width) {
        return Err(ColumnarError::Malformed {
            offset: decoder.position(),
            reason: "byte plane width out of range",
        });
    }
    Ok(width)
}

/// Decodes a chunk written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>, ColumnarError> {
    let mut samples = Vec::new();
    decode_into(bytes, &mut samples, i64::MIN, i64::MAX, |t, v| (t, v))?;
    Ok(samples)
}

/// Buffers a decode reuses from chunk to chunk: a read decodes thousands of chunks, and
/// fresh buffers for each cost page faults once the allocator has given freed pages back.
#[derive(Default)]
struct Scratch {
    /// The decompressed columns.
    columns: Vec<u8>,
    /// Every timestamp of the chunk.
    times: Vec<i64>,
    /// Integer deltas of the offset-plane layout.
    deltas: Vec<i64>,
    /// The values of the samples in the range.
    values: Vec<f64>,
}

impl Scratch {
    /// Drops buffers grown past what is worth keeping.
    fn trim(&mut self) {
        if self.columns.capacity() > SCRATCH_KEEP_BYTES {
            self.columns = Vec::new();
        }
        for buffer in [&mut self.times, &mut self.deltas] {
            if buffer.capacity() * 8 > SCRATCH_KEEP_BYTES {
                *buffer = Vec::new();
            }
        }
        if self.values.capacity() * 8 > SCRATCH_KEEP_BYTES {
            self.values = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Buffers larger than this are not kept between chunks.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

/// Decodes a chunk written by [`encode`] straight into `out`: every sample from `mint` to
/// `maxt` (inclusive), in time order, each made into an item by `make`. Samples outside the
/// range are not converted at all: a query over an hour of a six-hour chunk pays for the
/// hour's values only. Nothing is appended when the chunk is malformed.
pub fn decode_into<T>(
    bytes: &[u8],
    out: &mut Vec<T>,
    mint: i64,
    maxt: i64,
    make: impl Fn(i64, f64) -> T,
) -> Result<(), ColumnarError> {
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let scratch = &mut *scratch;
        let result = decompress_into(bytes, &mut scratch.columns)
            .and_then(|()| decode_columns(scratch, mint..=maxt))
            .map(|wanted| {
                // Both sides have a known length, so the extend writes without checks.
                out.extend(
                    scratch.times[wanted]
                        .iter()
                        .zip(&scratch.values)
                        .map(|(&t, &v)| make(t, v)),
                );
            });
        scratch.trim();
        result
    })
}

fn malformed(error: crate::encoding::DecodeError) -> ColumnarError {
    ColumnarError::Malformed {
        offset: error.offset,
        reason: error.reason,
    }
}

/// Reads `count` delta-of-delta timestamps into `times`. Regular scrapes make every code
/// after the first delta a one-byte varint; when all of them are, they are read in one tight
/// loop.
fn decode_times(
    decoder: &mut Decoder<'_>,
    count: usize,
    times: &mut Vec<i64>,
) -> Result<(), ColumnarError> {
    let decreasing = |decoder: &Decoder<'_>| ColumnarError::Malformed {
        offset: decoder.position(),
        reason: "timestamps do not increase",
    };
    times.clear();
    times.resize(count, 0);
    let (mut t, mut delta) = (decoder.varint().map_err(malformed)?, 0i64);
    times[0] = t;
    let mut filled = 1;
    if count > 1 {
        // The first code is the first delta itself, rarely one byte.
        delta = decoder.varint().map_err(malformed)?;
        let next = t.wrapping_add(delta);
        if next <= t {
            return Err(decreasing(decoder));
        }
        t = next;
        times[1] = t;
        filled = 2;
        let codes = count - 2;
        let rest = decoder.remaining();
        if rest.len() >= codes && rest[..codes].iter().all(|byte| byte & 0x80 == 0) {
            let mut increasing = true;
            for (slot, &byte) in times[2..].iter_mut().zip(&rest[..codes]) {
                delta = delta.wrapping_add(i64::from(byte >> 1) ^ -i64::from(byte & 1));
                let next = t.wrapping_add(delta);
                increasing &= next > t;
                t = next;
                *slot = t;
            }
            decoder.bytes(codes).map_err(malformed)?;
            return if increasing {
                Ok(())
            } else {
                Err(decreasing(decoder))
            };
        }
    }
    for slot in &mut times[filled..] {
        delta = delta.wrapping_add(decoder.varint().map_err(malformed)?);
        let next = t.wrapping_add(delta);
        if next <= t {
            return Err(decreasing(decoder));
        }
        t = next;
        *slot = t;
    }
    Ok(())
}

/// Fills `values` with the samples `wanted` of offset-plane integers: `integer` is the
/// first sample's, and plane `k` of `planes` holds byte `k` of each following delta minus
/// `base`.
fn offset_plane_values(
    planes: &[&[u8]],
    base: i64,
    mut integer: i64,
    wanted: std::ops::Range<usize>,
    scale: Option<f64>,
    deltas: &mut Vec<i64>,
    values: &mut Vec<f64>,
) {
    // The deltas the range needs, a plane at a time (loops without dependencies).
    let needed = wanted.end.saturating_sub(1);
    deltas.clear();
    deltas.extend(
        planes[0][..needed]
            .iter()
            .map(|&byte| base.wrapping_add(i64::from(byte))),
    );
    for (plane, bytes) in planes.iter().enumerate().skip(1) {
        let shift = 8 * plane as u32;
        for (delta, &byte) in deltas.iter_mut().zip(&bytes[..needed]) {
            *delta = delta.wrapping_add((u64::from(byte) << shift) as i64);
        }
    }
    integer = deltas[..wanted.start.min(needed)]
        .iter()
        .fold(integer, |sum, &delta| sum.wrapping_add(delta));
    values.clear();
    values.reserve(wanted.len());
    match scale {
        None => accumulate(deltas, integer, wanted, values, |integer| integer as f64),
        Some(scale) => accumulate(deltas, integer, wanted, values, |integer| {
            integer as f64 / scale
        }),
    }
}

/// Pushes to `values` the value of each integer from position `wanted.start` (which is
/// `integer`) on, adding `deltas[i]` to step from position `i` to `i + 1`.
#[inline(always)]
fn accumulate(
    deltas: &[i64],
    mut integer: i64,
    wanted: std::ops::Range<usize>,
    values: &mut Vec<f64>,
    value_of: impl Fn(i64) -> f64,
) {
    let steps = &deltas[wanted.start.min(deltas.len())..];
    values.push(value_of(integer));
    values.extend(steps.iter().take(wanted.len() - 1).map(|&delta| {
        integer = integer.wrapping_add(delta);
        value_of(integer)
    }));
}

/// Decodes the columns in `scratch.columns`: every timestamp into `scratch.times`, and the
/// values of the samples in `range` into `scratch.values`. Returns the positions of those
/// samples. Everything is checked before anything is returned.
fn decode_columns(
    scratch: &mut Scratch,
    range: std::ops::RangeInclusive<i64>,
) -> Result<std::ops::Range<usize>, ColumnarError> {
    let Scratch {
        columns,
        times,
        deltas,
        values,
    } = scratch;
    let columns = &columns[..];
    let mut decoder = Decoder::new(columns);
    let count = decoder.uvarint().map_err(malformed)?;
    // Every sample takes at least one byte per column: a larger count is damage.
    if count == 0 || count > columns.len() as u64 {
        return Err(ColumnarError::Malformed {
            offset: 0,
            reason: "implausible sample count",
        });
    }
    let count = count as usize;
    decode_times(&mut decoder, count, times)?;
    let wanted =
        times.partition_point(|t| t < range.start())..times.partition_point(|t| t <= range.end());
    let mode = decoder.bytes(1).map_err(malformed)?[0];
    values.clear();
    values.reserve(wanted.len());
    match mode {
        VALUES_DECIMAL_OFFSET_PLANES => {
            let exponent = decoder.bytes(1).map_err(malformed)?[0];
            let scale = decimal_scale(exponent, decoder.position())?;
            let integer = decoder.varint().map_err(malformed)?;
            let base = decoder.varint().map_err(malformed)?;
            let width = plane_width(&mut decoder)?;
            let planes = decoder.bytes((count - 1) * width).map_err(malformed)?;
            finish(&decoder)?;
            if !wanted.is_empty() {
                let mut split: [&[u8]; 8] = [&[]; 8];
                for (plane, slot) in split.iter_mut().enumerate().take(width) {
                    *slot = &planes[plane * (count - 1)..(plane + 1) * (count - 1)];
                }
                let scale = (exponent != 0).then_some(scale);
                let wanted = wanted.clone();
                offset_plane_values(
                    &split[..width],
                    base,
                    integer,
                    wanted,
                    scale,
                    deltas,
                    values,
                );
            }
        }
        VALUES_DECIMAL | VALUES_DECIMAL_DOD => {
            let exponent = decoder.bytes(1).map_err(malformed)?[0];
            let scale = decimal_scale(exponent, decoder.position())?;
            let (mut integer, mut delta) = (0i64, 0i64);
            for index in 0..count {
                let code = decoder.varint().map_err(malformed)?;
                if mode == VALUES_DECIMAL {
                    delta = code;
                } else {
                    delta = delta.wrapping_add(code);
                }
                integer = integer.wrapping_add(delta);
                if wanted.contains(&index) {
                    values.push(integer as f64 / scale);
                }
            }
            finish(&decoder)?;
        }
        VALUES_DECIMAL_PLANES => {
            let exponent = decoder.bytes(1).map_err(malformed)?[0];
            let scale = decimal_scale(exponent, decoder.position())?;
            let width = plane_width(&mut decoder)?;
            let planes = decoder.bytes(count * width).map_err(malformed)?;
            finish(&decoder)?;
            let mut integer = 0i64;
            for index in 0..wanted.end {
                let mut zigzagged = 0u64;
                for plane in 0..width {
                    zigzagged |= u64::from(planes[plane * count + index]) << (8 * plane);
                }
                integer = integer.wrapping_add(crate::encoding::unzigzag(zigzagged));
                if index >= wanted.start {
                    values.push(integer as f64 / scale);
                }
            }
        }
        VALUES_RAW => {
            let raw = decoder.bytes(count * 8).map_err(malformed)?;
            finish(&decoder)?;
            let mut previous = 0u64;
            for (index, word) in raw.chunks_exact(8).take(wanted.end).enumerate() {
                let bits = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ previous;
                if index >= wanted.start {
                    values.push(f64::from_bits(bits));
                }
                previous = bits;
            }
        }
        _ => {
            return Err(ColumnarError::Malformed {
                offset: decoder.position(),
                reason: "unknown value mode",
            })
        }
    }
    Ok(wanted)
}

/// Refuses bytes after the last column.
fn finish(decoder: &Decoder<'_>) -> Result<(), ColumnarError> {
    if decoder.is_empty() {
        Ok(())
    } else {
        Err(ColumnarError::Malformed {
            offset: decoder.position(),
            reason: "trailing bytes",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|(t, v)| (*t, v.to_bits())).collect()
    }

    fn round_trip(samples: &[(i64, f64)]) {
        let encoded = encode(samples);
        assert_eq!(bits(&decode(&encoded).unwrap()), bits(samples));
    }

    #[test]
    fn negative_zero_alone_survives() {
        round_trip(&[(1, -0.0), (2, 1.0)]);
        round_trip(&[(1, -1.5), (2, -0.0)]);
    }

    #[test]
    fn special_values_fall_back_to_raw_bits() {
        round_trip(&[
            (1, f64::NAN),
            (2, f64::from_bits(0x7ff0_0000_0000_0002)),
            (3, -0.0),
            (4, f64::INFINITY),
        ]);
        round_trip(&[(i64::MIN, 1.0), (-1, 2.0), (i64::MAX, 3.0)]);
        round_trip(&[(5, 0.1), (6, 0.2), (7, 0.30000000000000004)]);
    }

    #[test]
    fn scaled_decimals_use_integer_deltas_and_compress_well() {
        let counter: Vec<(i64, f64)> = (0..1000)
            .map(|i| (i * 15_000 + (i % 3), (i * 37) as f64))
            .collect();
        round_trip(&counter);
        assert!(
            encode(&counter).len() < 1000,
            "{} bytes",
            encode(&counter).len()
        );
        let gauge: Vec<(i64, f64)> = (0..1000)
            .map(|i| (i * 15_000, ((i * 7919) % 1000) as f64 / 100.0))
            .collect();
        round_trip(&gauge);
        let constant: Vec<(i64, f64)> = (0..1000).map(|i| (i * 15_000, 1.0)).collect();
        assert!(
            encode(&constant).len() < 40,
            "{} bytes",
            encode(&constant).len()
        );
    }

    /// A noisy counter: a steady step plus up to a quarter step of noise at each scrape.
    fn noisy_counter(step: u64, count: u64) -> Vec<(i64, f64)> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..count)
            .map(|round| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = state % (step / 4 + 1);
                (
                    round as i64 * 15_000,
                    (1_000_000 + round * step + noise) as f64,
                )
            })
            .collect()
    }

    /// The byte-plane layout written before [`VALUES_DECIMAL_OFFSET_PLANES`]: zigzagged
    /// deltas from zero, all planes in one frame.
    fn encode_zigzag_planes(samples: &[(i64, f64)]) -> Vec<u8> {
        let mut columns = Vec::new();
        put_uvarint(&mut columns, samples.len() as u64);
        let (mut previous_t, mut previous_delta) = (0i64, 0i64);
        for (index, &(t, _)) in samples.iter().enumerate() {
            if index == 0 {
                put_varint(&mut columns, t);
            } else {
                let delta = t - previous_t;
                put_varint(&mut columns, delta - previous_delta);
                previous_delta = delta;
            }
            previous_t = t;
        }
        columns.extend([VALUES_DECIMAL_PLANES, 0]);
        let mut previous = 0i64;
        let zigzagged: Vec<u64> = samples
            .iter()
            .map(|&(_, value)| {
                let integer = value as i64;
                let delta = integer - previous;
                previous = integer;
                crate::encoding::zigzag(delta)
            })
            .collect();
        let width = zigzagged
            .iter()
            .map(|value| 8 - value.leading_zeros() as usize / 8)
            .max()
            .unwrap()
            .max(1);
        columns.push(width as u8);
        for plane in 0..width {
            columns.extend(zigzagged.iter().map(|value| (value >> (8 * plane)) as u8));
        }
        compress(&columns, ZSTD_LEVEL)
    }

    #[test]
    fn noisy_counters_take_offset_planes_in_several_frames_and_old_planes_still_read() {
        for step in [40, 2_000, 20_000] {
            let counter = noisy_counter(step, 1440);
            round_trip(&counter);
            let old = encode_zigzag_planes(&counter);
            assert_eq!(bits(&decode(&old).unwrap()), bits(&counter), "mode 3 reads");
            let new = encode(&counter);
            if step >= 2_000 {
                // Two planes: the high one in a frame of its own, and at least 5 % smaller.
                let first = zstd::zstd_safe::find_frame_compressed_size(&new).unwrap();
                assert!(first < new.len(), "step {step}: one frame");
                assert!(
                    (new.len() as f64) < old.len() as f64 * 0.95,
                    "step {step}: {} bytes against {} for the old layout",
                    new.len(),
                    old.len()
                );
            }
        }
        // A truncated second frame is an error, not a panic.
        let new = encode(&noisy_counter(20_000, 1440));
        assert!(decode(&new[..new.len() - 3]).is_err());
        // One sample alone: empty planes.
        round_trip(&[(5, 7.0)]);
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let encoded = encode(&[(1, 1.5), (2, 2.5)]);
        let noisy = encode(&noisy_counter(20_000, 300));
        for encoded in [&encoded, &noisy] {
            for position in 0..encoded.len() {
                let mut damaged = encoded.clone();
                damaged[position] ^= 0x40;
                let _ = decode(&damaged);
                // What a damaged chunk appends: nothing.
                let mut out = vec![(0, 0.0)];
                if decode_into(&damaged, &mut out, i64::MIN, i64::MAX, |t, v| (t, v)).is_err() {
                    assert_eq!(out.len(), 1, "damage at {position}");
                }
            }
        }
        assert!(decode(&encoded[..encoded.len() - 1]).is_err());
        assert!(decode(b"").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_samples_round_trip(
            deltas in prop::collection::vec(1i64..1_000_000, 1..300),
            start in any::<i32>(),
            values in prop::collection::vec(any::<u64>(), 300),
            decimals in any::<bool>(),
        ) {
            let mut t = i64::from(start);
            let samples: Vec<(i64, f64)> = deltas.iter().zip(&values).map(|(delta, bits)| {
                t += delta;
                let value = if decimals { (*bits % 100_000) as f64 / 100.0 } else { f64::from_bits(*bits) };
                (t, value)
            }).collect();
            let decoded = decode(&encode(&samples)).unwrap();
            prop_assert_eq!(bits(&decoded), bits(&samples));
        }

        #[test]
        fn integers_with_deltas_of_any_width_round_trip(
            deltas in prop::collection::vec(any::<i64>(), 1..200),
            shift in 0u32..64,
            start in any::<i64>(),
        ) {
            // Deltas of every width, both signs, wrapping near the exact-integer limit.
            let mut integer = start >> 11;
            let samples: Vec<(i64, f64)> = deltas.iter().enumerate().map(|(index, delta)| {
                integer = (integer + (delta >> shift.max(11))).clamp(-(1 << 52), 1 << 52);
                (index as i64, integer as f64)
            }).collect();
            let decoded = decode(&encode(&samples)).unwrap();
            prop_assert_eq!(bits(&decoded), bits(&samples));
        }

        #[test]
        fn a_time_range_decodes_what_filtering_the_whole_chunk_keeps(
            jitter in prop::collection::vec(0i64..40, 1..400),
            regular in any::<bool>(),
            kind in 0u8..4,
            values in prop::collection::vec(any::<u64>(), 400),
            from in 0usize..420,
            len in 0usize..420,
        ) {
            // Regular scrapes take the one-byte timestamp path, jittered ones the general.
            let mut t = 1_000_000i64;
            let samples: Vec<(i64, f64)> = jitter.iter().zip(&values).map(|(jitter, bits)| {
                t += if regular { 15_000 } else { 15_000 + jitter * 1_000 };
                let value = match kind {
                    0 => f64::from_bits(*bits),
                    1 => (*bits % 100_000) as f64 / 100.0,
                    2 => (*bits >> 20) as f64,
                    _ => (t / 1_000 + (*bits % 5) as i64) as f64,
                };
                (t, value)
            }).collect();
            let first = samples[0].0;
            let (mint, maxt) = (first + from as i64 * 15_000 - 7_000, first + (from + len) as i64 * 15_000);
            let expected: Vec<(i64, f64)> = samples
                .iter()
                .copied()
                .filter(|(t, _)| (mint..=maxt).contains(t))
                .collect();
            let mut encodings = vec![encode(&samples)];
            if kind >= 2 {
                // The layout no longer written, for integers.
                encodings.push(encode_zigzag_planes(&samples));
            }
            for bytes in encodings {
                let mut ranged = Vec::new();
                decode_into(&bytes, &mut ranged, mint, maxt, |t, v| (t, v)).unwrap();
                prop_assert_eq!(bits(&ranged), bits(&expected));
            }
        }
    }
}
