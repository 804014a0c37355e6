//! WAL records and their framing; the byte layout is specified in `docs/format/wal.md`.
//!
//! A frame is `type: u8 | payload length: u32 LE | crc32 (IEEE) of type, length and payload:
//! u32 LE | payload`. Type 0 never starts a valid frame, so zero-filled tails are recognised.

use lookout_model::{Label, Labels};

use crate::encoding::{put_string, put_uvarint, put_varint, DecodeError, Decoder};

/// Size of a frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 9;

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// New series: reference and labels.
    Series = 1,
    /// Float samples of known series.
    Samples = 2,
    /// Deleted time ranges of series.
    Tombstones = 3,
    /// Marks a closed segment's end; payload: uvarint offset of this frame. Lets replay tell a
    /// segment that lost its tail from one that was closed.
    SegmentEnd = 4,
}

impl RecordType {
    fn from_byte(byte: u8) -> Option<RecordType> {
        match byte {
            1 => Some(RecordType::Series),
            2 => Some(RecordType::Samples),
            3 => Some(RecordType::Tombstones),
            4 => Some(RecordType::SegmentEnd),
            _ => None,
        }
    }
}

/// A series announced in the WAL.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesEntry {
    /// The head's reference for the series.
    pub id: u32,
    /// Its labels.
    pub labels: Labels,
}

/// One sample of a series announced earlier.
#[derive(Debug, Clone, Copy)]
pub struct SampleEntry {
    /// Series reference.
    pub id: u32,
    /// Timestamp in milliseconds.
    pub t: i64,
    /// Value, bit-exact.
    pub v: f64,
}

impl PartialEq for SampleEntry {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.t == other.t && self.v.to_bits() == other.v.to_bits()
    }
}

/// A deleted range `[mint, maxt]` of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneEntry {
    /// Series reference.
    pub id: u32,
    /// Inclusive start.
    pub mint: i64,
    /// Inclusive end.
    pub maxt: i64,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// New series.
    Series(Vec<SeriesEntry>),
    /// Samples.
    Samples(Vec<SampleEntry>),
    /// Deletions.
    Tombstones(Vec<TombstoneEntry>),
}

/// Starts a frame of `record_type`, returning the offset to pass to [`finish_frame`].
fn start_frame(out: &mut Vec<u8>, record_type: RecordType) -> usize {
    let start = out.len();
    out.push(record_type as u8);
    out.extend_from_slice(&[0; FRAME_HEADER_LEN - 1]);
    start
}

/// Fills in length and checksum of the frame started at `start`.
fn finish_frame(out: &mut [u8], start: usize) {
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    let len = u32::try_from(payload_len).expect("a WAL record is smaller than 4 GiB");
    out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
    let crc = frame_crc(&out[start..start + 5], &out[start + FRAME_HEADER_LEN..]);
    out[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32 over the type and length bytes and the payload, so a damaged type or length is
/// caught like damaged data.
fn frame_crc(type_and_len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(type_and_len);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends a framed series record. Layout per entry: `id uvarint | label count uvarint |
/// (name string, value string)*` where a string is a uvarint length and UTF-8 bytes.
pub fn encode_series<'a>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (u32, &'a [(&'a str, &'a str)])>,
) {
    let start = start_frame(out, RecordType::Series);
    for (id, labels) in entries {
        put_uvarint(out, u64::from(id));
        put_uvarint(out, labels.len() as u64);
        for (name, value) in labels {
            put_string(out, name);
            put_string(out, value);
        }
    }
    finish_frame(out, start);
}

/// Appends a framed samples record. Layout: `base time varint`, then per sample
/// `id uvarint | t - base varint | value u64 LE`.
pub fn encode_samples(out: &mut Vec<u8>, samples: &[SampleEntry]) {
    let Some(first) = samples.first() else {
        return;
    };
    let start = start_frame(out, RecordType::Samples);
    put_varint(out, first.t);
    for sample in samples {
        put_uvarint(out, u64::from(sample.id));
        put_varint(out, sample.t.wrapping_sub(first.t));
        out.extend_from_slice(&sample.v.to_bits().to_le_bytes());
    }
    finish_frame(out, start);
}

/// Appends a framed tombstones record. Layout per entry: `id uvarint | mint varint | maxt
/// varint`.
pub fn encode_tombstones(out: &mut Vec<u8>, tombstones: &[TombstoneEntry]) {
    if tombstones.is_empty() {
        return;
    }
    let start = start_frame(out, RecordType::Tombstones);
    for tombstone in tombstones {
        put_uvarint(out, u64::from(tombstone.id));
        put_varint(out, tombstone.mint);
        put_varint(out, tombstone.maxt);
    }
    finish_frame(out, start);
}

/// Appends the end marker of a segment whose frames end at `offset` (bytes from the start of
/// the file, header included).
pub fn encode_segment_end(out: &mut Vec<u8>, offset: u64) {
    let start = start_frame(out, RecordType::SegmentEnd);
    put_uvarint(out, offset);
    finish_frame(out, start);
}

/// Re-encodes a decoded record (used by checkpoints).
pub fn encode_record(out: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Series(entries) => {
            let owned: Vec<(u32, Vec<(&str, &str)>)> = entries
                .iter()
                .map(|entry| {
                    let pairs = entry
                        .labels
                        .iter()
                        .map(|label| (label.name.as_str(), label.value.as_str()))
                        .collect();
                    (entry.id, pairs)
                })
                .collect();
            encode_series(out, owned.iter().map(|(id, pairs)| (*id, pairs.as_slice())));
        }
        Record::Samples(samples) => encode_samples(out, samples),
        Record::Tombstones(tombstones) => encode_tombstones(out, tombstones),
    }
}

/// How a frame failed to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside a frame, or only zeros follow: what an interrupted append leaves.
    Torn { offset: usize, reason: &'static str },
    /// A complete frame is damaged.
    Corrupt { offset: usize, reason: String },
    /// Internal: the end marker was read (never returned by the iterator).
    End,
}

impl FrameError {
    /// Offset of the frame that failed.
    pub fn offset(&self) -> usize {
        match self {
            FrameError::Torn { offset, .. } | FrameError::Corrupt { offset, .. } => *offset,
            FrameError::End => 0,
        }
    }

    /// A description for logs and errors.
    pub fn reason(&self) -> String {
        match self {
            FrameError::Torn { reason, .. } => format!("torn record: {reason}"),
            FrameError::Corrupt { reason, .. } => reason.clone(),
            FrameError::End => "end of segment".into(),
        }
    }
}

/// Iterates the frames of a buffer, decoding each record.
#[derive(Debug)]
pub struct FrameReader<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
    end_marker: Option<usize>,
}

impl<'a> FrameReader<'a> {
    /// Reads frames from `bytes`, whose first frame starts at `start`.
    pub fn new(bytes: &'a [u8], start: usize) -> FrameReader<'a> {
        FrameReader {
            bytes,
            position: start,
            failed: false,
            end_marker: None,
        }
    }

    /// Offset of the segment end marker, once the reader has passed it.
    pub fn end_marker(&self) -> Option<usize> {
        self.end_marker
    }

    fn next_frame(&mut self) -> Result<(usize, Record), FrameError> {
        let offset = self.position;
        let rest = &self.bytes[offset..];
        if rest.iter().all(|byte| *byte == 0) {
            return Err(FrameError::Torn {
                offset,
                reason: "zero-filled tail",
            });
        }
        if rest.len() < FRAME_HEADER_LEN {
            return Err(FrameError::Torn {
                offset,
                reason: "incomplete frame header",
            });
        }
        let record_type = RecordType::from_byte(rest[0]).ok_or_else(|| FrameError::Corrupt {
            offset,
            reason: format!("unknown record type {}", rest[0]),
        })?;
        let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[5..9].try_into().expect("4 bytes"));
        let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Err(FrameError::Torn {
                offset,
                reason: "frame extends past the end of the file",
            });
        };
        if frame_crc(&rest[..5], payload) != crc {
            let reaches_end = FRAME_HEADER_LEN + len == rest.len();
            return Err(if reaches_end {
                FrameError::Torn {
                    offset,
                    reason: "checksum mismatch in the last frame",
                }
            } else {
                FrameError::Corrupt {
                    offset,
                    reason: "checksum mismatch".into(),
                }
            });
        }
        if record_type == RecordType::SegmentEnd {
            let mut decoder = Decoder::new(payload);
            let marked = decoder.uvarint().ok();
            if marked != Some(offset as u64) || !decoder.is_empty() {
                return Err(FrameError::Corrupt {
                    offset,
                    reason: "segment end marker does not match its position".into(),
                });
            }
            if FRAME_HEADER_LEN + len != rest.len() {
                return Err(FrameError::Corrupt {
                    offset: offset + FRAME_HEADER_LEN + len,
                    reason: "data after the segment end marker".into(),
                });
            }
            self.end_marker = Some(offset);
            self.position = self.bytes.len();
            return Err(FrameError::End);
        }
        let record = decode_payload(record_type, payload).map_err(|error| FrameError::Corrupt {
            offset,
            reason: format!("undecodable {record_type:?} record: {error}"),
        })?;
        self.position = offset + FRAME_HEADER_LEN + len;
        Ok((offset, record))
    }
}

impl Iterator for FrameReader<'_> {
    /// The frame's offset and record, or why reading stopped.
    type Item = Result<(usize, Record), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let result = self.next_frame();
        self.failed = result.is_err();
        match result {
            Err(FrameError::End) => None,
            other => Some(other),
        }
    }
}

fn decode_payload(record_type: RecordType, payload: &[u8]) -> Result<Record, DecodeError> {
    let mut decoder = Decoder::new(payload);
    match record_type {
        RecordType::Series => {
            let mut entries = Vec::new();
            while !decoder.is_empty() {
                let id = decoder.uvarint_u32()?;
                let count = decoder.uvarint()?;
                let mut labels = Vec::with_capacity(count.min(256) as usize);
                for _ in 0..count {
                    let name = decoder.string()?;
                    let value = decoder.string()?;
                    labels.push(Label::new(name, value));
                }
                let labels = Labels::from_vec(labels).map_err(|_| DecodeError {
                    offset: decoder.position(),
                    reason: "duplicate label name in series record",
                })?;
                entries.push(SeriesEntry { id, labels });
            }
            Ok(Record::Series(entries))
        }
        RecordType::Samples => {
            let base = decoder.varint()?;
            let mut samples = Vec::with_capacity(payload.len() / 10);
            while !decoder.is_empty() {
                let id = decoder.uvarint_u32()?;
                let t = base.wrapping_add(decoder.varint()?);
                let v = f64::from_bits(decoder.u64_le()?);
                samples.push(SampleEntry { id, t, v });
            }
            Ok(Record::Samples(samples))
        }
        RecordType::SegmentEnd => Err(DecodeError {
            offset: 0,
            reason: "segment end marker is not a record",
        }),
        RecordType::Tombstones => {
            let mut tombstones = Vec::new();
            while !decoder.is_empty() {
                let id = decoder.uvarint_u32()?;
                let mint = decoder.varint()?;
                let maxt = decoder.varint()?;
                tombstones.push(TombstoneEntry { id, mint, maxt });
            }
            Ok(Record::Tombstones(tombstones))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_strategy() -> impl Strategy<Value = SampleEntry> {
        (any::<u32>(), any::<i64>(), any::<u64>()).prop_map(|(id, t, bits)| SampleEntry {
            id,
            t,
            v: f64::from_bits(bits),
        })
    }

    fn series_strategy() -> impl Strategy<Value = SeriesEntry> {
        (
            any::<u32>(),
            prop::collection::btree_map("[a-z_]{1,8}", ".{1,8}", 0..6),
        )
            .prop_map(|(id, map)| SeriesEntry {
                id,
                labels: Labels::from_pairs(map).unwrap(),
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(
            series in prop::collection::vec(series_strategy(), 1..5),
            samples in prop::collection::vec(sample_strategy(), 1..50),
            tombstones in prop::collection::vec((any::<u32>(), any::<i64>(), any::<i64>()), 1..5),
        ) {
            let tombstones: Vec<TombstoneEntry> = tombstones.into_iter()
                .map(|(id, mint, maxt)| TombstoneEntry { id, mint, maxt }).collect();
            let records = vec![
                Record::Series(series),
                Record::Samples(samples),
                Record::Tombstones(tombstones),
            ];
            let mut out = Vec::new();
            for record in &records {
                encode_record(&mut out, record);
            }
            let decoded: Vec<Record> = FrameReader::new(&out, 0).map(|r| r.unwrap().1).collect();
            prop_assert_eq!(decoded, records);
        }

        /// Any truncation is reported as torn; nothing panics.
        #[test]
        fn truncation_is_torn(samples in prop::collection::vec(sample_strategy(), 1..20), cut in 1usize..200) {
            let mut out = Vec::new();
            encode_samples(&mut out, &samples);
            let first_frame_end = out.len();
            encode_samples(&mut out, &samples);
            let cut = out.len() - 1 - cut % (out.len() - 1);
            prop_assume!(cut != first_frame_end);
            let results: Vec<_> = FrameReader::new(&out[..cut], 0).collect();
            let last = results.last().unwrap();
            prop_assert!(matches!(last, Err(FrameError::Torn { .. })), "{:?}", last);
        }

        /// Arbitrary bytes never panic the reader.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            for result in FrameReader::new(&bytes, 0) {
                let _ = result;
            }
        }
    }

    #[test]
    fn a_bit_flip_in_the_middle_is_corruption_at_that_frame() {
        let samples = [SampleEntry {
            id: 1,
            t: 5,
            v: 1.0,
        }];
        let mut out = Vec::new();
        encode_samples(&mut out, &samples);
        let second = out.len();
        encode_samples(&mut out, &samples);
        encode_samples(&mut out, &samples);
        out[second + FRAME_HEADER_LEN + 2] ^= 0x10;
        let results: Vec<_> = FrameReader::new(&out, 0).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(
            results[1],
            Err(FrameError::Corrupt {
                offset: second,
                reason: "checksum mismatch".into()
            })
        );
    }
}
