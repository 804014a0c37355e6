//! Writes a block directory from series sorted by labels (format: `docs/format/block.md` and
//! `docs/format/index.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lookout_model::{Labels, Sample};
use roaring::RoaringBitmap;

use super::footer::append_footer;
use super::{
    BlockMeta, BlockStats, ChunkEncoding, Compaction, CHUNKS_DIR, CHUNKS_MAGIC,
    CHUNK_ENCODING_COLUMNAR, CHUNK_ENCODING_XOR, FORMAT_VERSION, INDEX_FILE, INDEX_MAGIC,
    META_FILE, SECTION_COUNT, TOMBSTONES_FILE, TOMBSTONES_MAGIC,
};
use crate::chunk::{columnar, XorAppender};
use crate::encoding::{put_string, put_uvarint, put_varint};
use crate::error::{Result, TsdbError};
use crate::wal::sync_dir;

/// Most samples in one columnar chunk (about 34 h at 15 s): bounds what one read decodes.
pub const COLUMNAR_CHUNK_SAMPLES: usize = 8192;

/// Largest chunk segment file before a new one is started.
const CHUNK_FILE_BYTES: u64 = 512 << 20;

/// Where one chunk is: file number in the high 32 bits, byte offset in the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// First sample time.
    pub min_t: i64,
    /// Last sample time.
    pub max_t: i64,
    /// File and offset.
    pub reference: u64,
}

struct ChunkFiles {
    dir: PathBuf,
    number: u32,
    writer: Option<(PathBuf, BufWriter<File>, crc32fast::Hasher)>,
    size: u64,
}

impl ChunkFiles {
    fn path_of(dir: &Path, number: u32) -> PathBuf {
        dir.join(format!("{number:06}"))
    }

    fn open_next(&mut self) -> Result<()> {
        self.finish_current()?;
        self.number += 1;
        let path = ChunkFiles::path_of(&self.dir, self.number);
        let file = File::create(&path).map_err(|error| TsdbError::io(&path, error))?;
        self.writer = Some((path, BufWriter::new(file), crc32fast::Hasher::new()));
        self.size = 0;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let (path, writer, hasher) = self.writer.as_mut().expect("a chunk file is open");
        writer
            .write_all(bytes)
            .map_err(|error| TsdbError::io(&*path, error))?;
        hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Appends one chunk entry and returns its reference.
    fn append(&mut self, encoding: u8, data: &[u8]) -> Result<u64> {
        if self.writer.is_none() || self.size + data.len() as u64 + 9 > CHUNK_FILE_BYTES {
            self.open_next()?;
        }
        let reference = (u64::from(self.number) << 32) | self.size;
        let len = u32::try_from(data.len()).expect("a chunk is smaller than 4 GiB");
        let mut entry = Vec::with_capacity(data.len() + 9);
        entry.extend_from_slice(&len.to_le_bytes());
        entry.push(encoding);
        entry.extend_from_slice(data);
        let crc = crc32fast::hash(&entry[4..]);
        entry.extend_from_slice(&crc.to_le_bytes());
        self.write(&entry)?;
        Ok(reference)
    }

    fn finish_current(&mut self) -> Result<()> {
        let Some((path, mut writer, hasher)) = self.writer.take() else {
            return Ok(());
        };
        let crc = hasher.finalize();
        let mut footer = Vec::with_capacity(16);
        footer.extend_from_slice(CHUNKS_MAGIC);
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        footer.extend_from_slice(&crc.to_le_bytes());
        writer
            .write_all(&footer)
            .map_err(|error| TsdbError::io(&path, error))?;
        let file = writer
            .into_inner()
            .map_err(|error| TsdbError::io(&path, error.into_error()))?;
        file.sync_all().map_err(|error| TsdbError::io(&path, error))
    }
}

/// A new, unique, time-sortable block id: creation time in ms and 32 random bits, in hex.
pub fn new_block_id() -> String {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let random = std::collections::hash_map::RandomState::new().hash_one(now) as u32;
    format!("{now:012x}{random:08x}")
}

/// Writes a block of `series` (sorted by labels, each label set once, samples in time order
/// and inside `[min_time, max_time)`) into `blocks_dir/<id>`, atomically. Series without
/// samples are skipped. The series are consumed one at a time, so memory holds one series'
/// samples plus every series' labels and chunk references. An `Err` item aborts the write
/// and removes the temporary directory.
pub fn write_block(
    blocks_dir: &Path,
    series: impl IntoIterator<Item = Result<(Labels, Vec<Sample>)>>,
    min_time: i64,
    max_time: i64,
    compaction: Compaction,
    encoding: ChunkEncoding,
    chunk_samples: usize,
) -> Result<BlockMeta> {
    let id = new_block_id();
    let temporary = blocks_dir.join(format!("{id}.tmp"));
    let result = write_block_files(
        &temporary,
        &id,
        series,
        (min_time, max_time),
        compaction,
        encoding,
        chunk_samples,
    );
    let meta = match result {
        Ok(meta) => meta,
        Err(error) => {
            let _ = fs::remove_dir_all(&temporary);
            return Err(error);
        }
    };
    let final_dir = blocks_dir.join(&id);
    fs::rename(&temporary, &final_dir).map_err(|error| TsdbError::io(&temporary, error))?;
    sync_dir(blocks_dir)?;
    Ok(meta)
}

fn write_block_files(
    temporary: &Path,
    id: &str,
    series: impl IntoIterator<Item = Result<(Labels, Vec<Sample>)>>,
    (min_time, max_time): (i64, i64),
    compaction: Compaction,
    encoding: ChunkEncoding,
    chunk_samples: usize,
) -> Result<BlockMeta> {
    let chunks_dir = temporary.join(CHUNKS_DIR);
    fs::create_dir_all(&chunks_dir).map_err(|error| TsdbError::io(&chunks_dir, error))?;
    let mut chunk_files = ChunkFiles {
        dir: chunks_dir.clone(),
        number: 0,
        writer: None,
        size: 0,
    };
    let mut stats = BlockStats::default();
    let mut entries: Vec<(Labels, Vec<ChunkMeta>)> = Vec::new();
    let mut previous: Option<Labels> = None;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_chunk = match encoding {
        ChunkEncoding::Xor => chunk_samples,
        ChunkEncoding::Columnar | ChunkEncoding::ColumnarFast => COLUMNAR_CHUNK_SAMPLES,
    };
    let mut series = series.into_iter();
    loop {
        // A batch of series is read in order, encoded on every core, then written in order.
        let mut batch: Vec<(Labels, Vec<Sample>)> = Vec::with_capacity(ENCODE_BATCH_SERIES);
        let mut batch_samples = 0;
        for item in series.by_ref() {
            let (labels, samples) = item?;
            if samples.is_empty() {
                continue;
            }
            debug_assert!(
                previous.as_ref().is_none_or(|p| *p < labels),
                "series sorted and unique"
            );
            debug_assert!(samples
                .iter()
                .all(|s| (min_time..max_time).contains(&s.timestamp.0)));
            previous = Some(labels.clone());
            batch_samples += samples.len();
            batch.push((labels, samples));
            if batch.len() == ENCODE_BATCH_SERIES || batch_samples >= ENCODE_BATCH_SAMPLES {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let encoded = encode_batch(&batch, encoding, per_chunk, workers);
        for ((labels, samples), chunks) in batch.into_iter().zip(encoded) {
            let mut metas = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let reference = chunk_files.append(chunk.encoding, &chunk.bytes)?;
                metas.push(ChunkMeta {
                    min_t: chunk.min_t,
                    max_t: chunk.max_t,
                    reference,
                });
            }
            stats.series += 1;
            stats.samples += samples.len() as u64;
            stats.chunks += metas.len() as u64;
            entries.push((labels, metas));
        }
    }
    chunk_files.finish_current()?;
    sync_dir(&chunks_dir)?;

    write_file(&temporary.join(INDEX_FILE), &encode_index(&entries))?;
    let mut tombstones = Vec::new();
    put_uvarint(&mut tombstones, 0);
    append_footer(&mut tombstones, TOMBSTONES_MAGIC, FORMAT_VERSION);
    write_file(&temporary.join(TOMBSTONES_FILE), &tombstones)?;
    let meta = BlockMeta {
        version: FORMAT_VERSION,
        id: id.to_owned(),
        min_time,
        max_time,
        stats,
        compaction,
    };
    write_file(&temporary.join(META_FILE), &meta.encode())?;
    sync_dir(temporary)?;
    Ok(meta)
}

/// Series encoded together (one batch per round of the encoding threads).
const ENCODE_BATCH_SERIES: usize = 1024;
/// A batch also ends once it holds this many samples, bounding the memory it takes.
const ENCODE_BATCH_SAMPLES: usize = 1 << 20;

/// One encoded chunk, before it has a place in a file.
struct EncodedChunk {
    encoding: u8,
    bytes: Vec<u8>,
    min_t: i64,
    max_t: i64,
}

/// Encodes the chunks of every series of `batch`, splitting the series over `workers`
/// threads; the result is in the batch's order.
fn encode_batch(
    batch: &[(Labels, Vec<Sample>)],
    encoding: ChunkEncoding,
    per_chunk: usize,
    workers: usize,
) -> Vec<Vec<EncodedChunk>> {
    let encode_series = |samples: &[Sample]| -> Vec<EncodedChunk> {
        samples
            .chunks(per_chunk)
            .map(|group| {
                let (encoding, bytes) = match encoding {
                    ChunkEncoding::Xor => {
                        let mut appender = XorAppender::new();
                        for sample in group {
                            appender.append(sample.timestamp.0, sample.value);
                        }
                        (CHUNK_ENCODING_XOR, appender.finish().bytes().to_vec())
                    }
                    ChunkEncoding::Columnar | ChunkEncoding::ColumnarFast => {
                        let pairs: Vec<(i64, f64)> =
                            group.iter().map(|s| (s.timestamp.0, s.value)).collect();
                        let bytes = if encoding == ChunkEncoding::Columnar {
                            columnar::encode(&pairs)
                        } else {
                            columnar::encode_fast(&pairs)
                        };
                        (CHUNK_ENCODING_COLUMNAR, bytes)
                    }
                };
                EncodedChunk {
                    encoding,
                    bytes,
                    min_t: group[0].timestamp.0,
                    max_t: group[group.len() - 1].timestamp.0,
                }
            })
            .collect()
    };
    let samples: usize = batch.iter().map(|(_, samples)| samples.len()).sum();
    // Small batches are not worth a thread.
    if workers <= 1 || samples < 4096 {
        return batch
            .iter()
            .map(|(_, samples)| encode_series(samples))
            .collect();
    }
    let share = batch.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(share)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, samples)| encode_series(samples))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("chunk encoding does not panic"))
            .collect()
    })
}

/// Writes `bytes` to a new file and syncs it.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|error| TsdbError::io(path, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| TsdbError::io(path, error))
}

/// Builds the index file's bytes for series in label order (series id = position).
fn encode_index(entries: &[(Labels, Vec<ChunkMeta>)]) -> Vec<u8> {
    let mut symbol_set: BTreeSet<&str> = BTreeSet::new();
    for (labels, _) in entries {
        for label in labels.iter() {
            symbol_set.insert(&label.name);
            symbol_set.insert(&label.value);
        }
    }
    let symbols: Vec<&str> = symbol_set.into_iter().collect();
    let symbol_ref = |text: &str| {
        symbols
            .binary_search(&text)
            .expect("every string was collected") as u64
    };

    let mut out = Vec::new();
    let mut sections: Vec<(u64, u64)> = Vec::with_capacity(SECTION_COUNT);
    let begin = |out: &Vec<u8>| out.len() as u64;

    // Symbols.
    let start = begin(&out);
    out.extend_from_slice(&(symbols.len() as u32).to_le_bytes());
    for symbol in &symbols {
        put_string(&mut out, symbol);
    }
    sections.push((start, out.len() as u64 - start));

    // Series, and the postings they feed.
    let start = begin(&out);
    let mut offsets = Vec::with_capacity(entries.len());
    let mut postings: BTreeMap<(&str, &str), RoaringBitmap> = BTreeMap::new();
    for (id, (labels, metas)) in entries.iter().enumerate() {
        offsets.push(out.len() as u64 - start);
        put_uvarint(&mut out, labels.len() as u64);
        for label in labels.iter() {
            put_uvarint(&mut out, symbol_ref(&label.name));
            put_uvarint(&mut out, symbol_ref(&label.value));
            postings
                .entry((&label.name, &label.value))
                .or_default()
                .insert(id as u32);
        }
        put_uvarint(&mut out, metas.len() as u64);
        for meta in metas {
            put_varint(&mut out, meta.min_t);
            put_uvarint(&mut out, meta.max_t.wrapping_sub(meta.min_t) as u64);
            put_uvarint(&mut out, meta.reference);
        }
    }
    sections.push((start, out.len() as u64 - start));

    // Series offsets.
    let start = begin(&out);
    out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for offset in &offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    sections.push((start, out.len() as u64 - start));

    // Postings, then the table that finds them.
    let start = begin(&out);
    let mut table = Vec::with_capacity(postings.len());
    for ((name, value), bitmap) in &postings {
        let offset = out.len() as u64 - start;
        bitmap
            .serialize_into(&mut out)
            .expect("writing to a Vec cannot fail");
        table.push((
            symbol_ref(name),
            symbol_ref(value),
            offset,
            out.len() as u64 - start - offset,
        ));
    }
    sections.push((start, out.len() as u64 - start));

    let start = begin(&out);
    out.extend_from_slice(&(table.len() as u32).to_le_bytes());
    for (name, value, offset, len) in table {
        put_uvarint(&mut out, name);
        put_uvarint(&mut out, value);
        put_uvarint(&mut out, offset);
        put_uvarint(&mut out, len);
    }
    sections.push((start, out.len() as u64 - start));

    // Table of contents: offset, length and crc32 of each section.
    for (offset, len) in &sections {
        let crc = crc32fast::hash(&out[*offset as usize..(*offset + *len) as usize]);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
    }
    append_footer(&mut out, INDEX_MAGIC, FORMAT_VERSION);
    out
}
