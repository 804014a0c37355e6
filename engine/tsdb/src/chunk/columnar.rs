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
/// planes (all low bytes, then all second bytes, ...): noisy values compress better.
const VALUES_DECIMAL_PLANES: u8 = 3;
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
            for mode in [VALUES_DECIMAL, VALUES_DECIMAL_DOD, VALUES_DECIMAL_PLANES] {
                let mut candidate = columns.clone();
                candidate.push(mode);
                candidate.push(exponent);
                match mode {
                    VALUES_DECIMAL => deltas
                        .iter()
                        .for_each(|delta| put_varint(&mut candidate, *delta)),
                    VALUES_DECIMAL_DOD => {
                        let mut previous = 0i64;
                        for delta in &deltas {
                            put_varint(&mut candidate, delta.wrapping_sub(previous));
                            previous = *delta;
                        }
                    }
                    _ => {
                        let zigzagged: Vec<u64> = deltas
                            .iter()
                            .map(|delta| crate::encoding::zigzag(*delta))
                            .collect();
                        let width = zigzagged
                            .iter()
                            .map(|value| 8 - value.leading_zeros() as usize / 8)
                            .max()
                            .unwrap_or(0)
                            .max(1);
                        candidate.push(width as u8);
                        for plane in 0..width {
                            candidate
                                .extend(zigzagged.iter().map(|value| (value >> (8 * plane)) as u8));
                        }
                    }
                }
                let compressed = compress(&candidate, level);
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

/// Decompresses one zstd frame into a buffer of exactly its declared size (the frame header
/// carries it; `zstd::bulk::decompress` would reserve the whole `MAX_DECODED_BYTES` instead).
fn decompress(bytes: &[u8]) -> Result<Vec<u8>, ColumnarError> {
    let size = match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if size <= MAX_DECODED_BYTES as u64 => size as usize,
        Ok(Some(size)) => {
            return Err(ColumnarError::Decompress(format!(
                "frame declares {size} bytes, more than the {MAX_DECODED_BYTES} allowed"
            )))
        }
        Ok(None) => {
            return Err(ColumnarError::Decompress(
                "frame does not declare its size".to_owned(),
            ))
        }
        Err(_) => return Err(ColumnarError::Decompress("not a zstd frame".to_owned())),
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|error| ColumnarError::Decompress(error.to_string()))?,
            );
        }
        let mut out = Vec::with_capacity(size);
        slot.as_mut()
            .expect("just set")
            .decompress_to_buffer(bytes, &mut out)
            .map_err(|error| ColumnarError::Decompress(error.to_string()))?;
        Ok(out)
    })
}

/// Decodes a chunk written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>, ColumnarError> {
    let columns = decompress(bytes)?;
    let mut decoder = Decoder::new(&columns);
    let malformed = |error: crate::encoding::DecodeError| ColumnarError::Malformed {
        offset: error.offset,
        reason: error.reason,
    };
    let count = decoder.uvarint().map_err(malformed)?;
    // Every sample takes at least one byte per column: a larger count is damage.
    if count == 0 || count > columns.len() as u64 {
        return Err(ColumnarError::Malformed {
            offset: 0,
            reason: "implausible sample count",
        });
    }
    let count = count as usize;
    let mut times = Vec::with_capacity(count);
    let mut t = 0i64;
    let mut delta = 0i64;
    for index in 0..count {
        let code = decoder.varint().map_err(malformed)?;
        if index == 0 {
            t = code;
        } else {
            delta = delta.wrapping_add(code);
            let next = t.wrapping_add(delta);
            if next <= t {
                return Err(ColumnarError::Malformed {
                    offset: decoder.position(),
                    reason: "timestamps do not increase",
                });
            }
            t = next;
        }
        times.push(t);
    }
    let mode = decoder.bytes(1).map_err(malformed)?[0];
    let mut samples = Vec::with_capacity(count);
    match mode {
        VALUES_DECIMAL | VALUES_DECIMAL_DOD | VALUES_DECIMAL_PLANES => {
            let exponent = decoder.bytes(1).map_err(malformed)?[0];
            if exponent > MAX_EXPONENT {
                return Err(ColumnarError::Malformed {
                    offset: decoder.position(),
                    reason: "decimal exponent out of range",
                });
            }
            let scale = 10f64.powi(i32::from(exponent));
            let deltas: Vec<i64> = match mode {
                VALUES_DECIMAL => (0..count)
                    .map(|_| decoder.varint())
                    .collect::<Result<_, _>>()
                    .map_err(malformed)?,
                VALUES_DECIMAL_DOD => {
                    let mut delta = 0i64;
                    let mut deltas = Vec::with_capacity(count);
                    for _ in 0..count {
                        delta = delta.wrapping_add(decoder.varint().map_err(malformed)?);
                        deltas.push(delta);
                    }
                    deltas
                }
                _ => {
                    let width = decoder.bytes(1).map_err(malformed)?[0] as usize;
                    if !(1..=8).contains(&width) {
                        return Err(ColumnarError::Malformed {
                            offset: decoder.position(),
                            reason: "byte plane width out of range",
                        });
                    }
                    let mut zigzagged = vec![0u64; count];
                    for plane in 0..width {
                        let bytes = decoder.bytes(count).map_err(malformed)?;
                        for (value, byte) in zigzagged.iter_mut().zip(bytes) {
                            *value |= u64::from(*byte) << (8 * plane);
                        }
                    }
                    zigzagged
                        .into_iter()
                        .map(crate::encoding::unzigzag)
                        .collect()
                }
            };
            let mut integer = 0i64;
            for (t, delta) in times.into_iter().zip(deltas) {
                integer = integer.wrapping_add(delta);
                samples.push((t, integer as f64 / scale));
            }
        }
        VALUES_RAW => {
            let mut previous = 0u64;
            for t in times {
                let bits = decoder.u64_le().map_err(malformed)? ^ previous;
                samples.push((t, f64::from_bits(bits)));
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
    if !decoder.is_empty() {
        return Err(ColumnarError::Malformed {
            offset: decoder.position(),
            reason: "trailing bytes",
        });
    }
    Ok(samples)
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

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let encoded = encode(&[(1, 1.5), (2, 2.5)]);
        for position in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[position] ^= 0x40;
            let _ = decode(&damaged);
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
    }
}
