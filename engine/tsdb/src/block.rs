//! Immutable blocks: one directory per time range, memory-mapped for reading.
//!
//! ```text
//! blocks/<id>/meta.json      versioned metadata ending with a checksummed footer member
//! blocks/<id>/chunks/000001  chunk segment files (crc32 per chunk, footer)
//! blocks/<id>/index          symbols, series with chunk references, roaring postings, TOC, footer
//! blocks/<id>/tombstones     deleted ranges per series, footer
//! ```
//!
//! Formats: `docs/format/block.md` and `docs/format/index.md`. A block is written under
//! `<id>.tmp` and renamed into place once every file is synced ([`writer::write_block`]).
//! [`Block::open`] verifies every footer checksum, so a damaged file is found at open, named
//! with its offset, and the block can be set aside while the others keep serving.

mod footer;
pub mod writer;

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use lookout_model::{Label, Labels, Matcher, Sample};
use lookout_storage::Series;
use memmap2::Mmap;
use parking_lot::RwLock;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::chunk::{columnar, XorIter};
use crate::encoding::{put_uvarint, put_varint, Decoder};
use crate::error::{Result, TsdbError};
use crate::index::{postings_for_matchers, PostingsIndex};
use crate::mmap::{map_file, release_pages};
use footer::{append_footer, verify_footer, FOOTER_LEN};

/// Version of every block file format written by this code.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const META_FILE: &str = "meta.json";
pub(crate) const INDEX_FILE: &str = "index";
pub(crate) const TOMBSTONES_FILE: &str = "tombstones";
pub(crate) const CHUNKS_DIR: &str = "chunks";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"LKINDEX1";
pub(crate) const CHUNKS_MAGIC: &[u8; 8] = b"LKCHUNK1";
pub(crate) const TOMBSTONES_MAGIC: &[u8; 8] = b"LKTOMB01";
const META_MAGIC: &str = "LKMETA01";
pub(crate) const CHUNK_ENCODING_XOR: u8 = 1;
pub(crate) const CHUNK_ENCODING_COLUMNAR: u8 = 2;

/// How a block's chunks are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEncoding {
    /// Gorilla chunks of the head's size (blocks cut from the head).
    Xor,
    /// Columnar zstd chunks of up to [`writer::COLUMNAR_CHUNK_SAMPLES`] samples (compacted,
    /// cold blocks).
    Columnar,
    /// The same format compressed faster (the head written into blocks at close, where a
    /// stop waits for it).
    ColumnarFast,
}

/// Sections of the index: symbols, series, series offsets, postings, postings table.
pub(crate) const SECTION_COUNT: usize = 5;
const TOC_ENTRY_LEN: usize = 20;

/// Counts of a block's contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    /// Series.
    pub series: u64,
    /// Samples.
    pub samples: u64,
    /// Chunks.
    pub chunks: u64,
}

/// How a block came to be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// 1 for a block cut from the head, one more for each compaction.
    pub level: u32,
    /// Ids of the level-1 blocks whose data it holds.
    pub sources: Vec<String>,
}

/// The contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Format version of the block.
    pub version: u32,
    /// The block id (its directory name).
    pub id: String,
    /// Inclusive start of the time range, ms.
    pub min_time: i64,
    /// Exclusive end of the time range, ms.
    pub max_time: i64,
    /// Counts.
    pub stats: BlockStats,
    /// Origin.
    pub compaction: Compaction,
}

#[derive(Debug, Serialize, Deserialize)]
struct MetaFooter {
    magic: String,
    version: u32,
    crc32: u32,
}

#[derive(Debug, Deserialize)]
struct MetaFile {
    #[serde(flatten)]
    meta: BlockMeta,
    footer: MetaFooter,
}

const META_FOOTER_KEY: &[u8] = b",\"footer\":";

impl BlockMeta {
    /// JSON whose last member, `footer`, carries magic, version and the crc32 of every byte
    /// before `,"footer":`.
    pub fn encode(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("metadata serialises");
        let closing = json
            .iter()
            .rposition(|byte| *byte == b'}')
            .expect("a JSON object");
        json.truncate(closing);
        while json.last().is_some_and(u8::is_ascii_whitespace) {
            json.pop();
        }
        let crc = crc32fast::hash(&json);
        let footer = MetaFooter {
            magic: META_MAGIC.to_owned(),
            version: FORMAT_VERSION,
            crc32: crc,
        };
        json.extend_from_slice(META_FOOTER_KEY);
        json.extend_from_slice(&serde_json::to_vec(&footer).expect("footer serialises"));
        json.extend_from_slice(b"\n}\n");
        json
    }

    /// Parses and verifies `meta.json`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<BlockMeta> {
        let corruption = |offset: usize, reason: String| TsdbError::Corruption {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        let footer_at = bytes
            .windows(META_FOOTER_KEY.len())
            .rposition(|window| window == META_FOOTER_KEY)
            .ok_or_else(|| corruption(0, "no footer member".into()))?;
        let parsed: MetaFile = serde_json::from_slice(bytes).map_err(|error| {
            corruption(error.column(), format!("not valid block metadata: {error}"))
        })?;
        if parsed.footer.magic != META_MAGIC || parsed.footer.version != FORMAT_VERSION {
            return Err(corruption(
                footer_at,
                format!(
                    "footer magic {:?} version {} is not {META_MAGIC} version {FORMAT_VERSION}",
                    parsed.footer.magic, parsed.footer.version
                ),
            ));
        }
        if crc32fast::hash(&bytes[..footer_at]) != parsed.footer.crc32 {
            return Err(corruption(0, "checksum does not match the footer".into()));
        }
        if parsed.meta.version != FORMAT_VERSION {
            return Err(corruption(
                0,
                format!("block version {} is not supported", parsed.meta.version),
            ));
        }
        Ok(parsed.meta)
    }
}

/// A postings table entry: value symbol, postings offset and length.
type PostingsEntry = (u32, usize, usize);
/// Where a postings list is: offset in the postings section and length.
type PostingsAt = (usize, usize);

/// A memory-mapped, verified index file.
#[derive(Debug)]
struct IndexReader {
    path: PathBuf,
    map: Mmap,
    /// Byte ranges of the symbols.
    symbols: Vec<(usize, usize)>,
    series: (usize, usize),
    series_offsets: (usize, usize),
    series_count: u32,
    postings: (usize, usize),
    symbols_section_len: usize,
    table_section_len: usize,
    /// Label name -> (value symbol, postings offset, length), values in sorted order.
    table: HashMap<String, Vec<PostingsEntry>>,
}

impl IndexReader {
    fn open(path: &Path) -> Result<IndexReader> {
        let map = map_file(path)?;
        let corruption = |offset: usize, reason: &str| TsdbError::Corruption {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason: reason.to_owned(),
        };
        let body = match verify_footer(path, &map, INDEX_MAGIC, FORMAT_VERSION) {
            Ok(body) => body,
            Err(error) => return Err(locate_index_damage(path, &map).unwrap_or(error)),
        };
        release_pages(&map);
        if body.len() < SECTION_COUNT * TOC_ENTRY_LEN {
            return Err(corruption(0, "index too short for its table of contents"));
        }
        let toc_at = body.len() - SECTION_COUNT * TOC_ENTRY_LEN;
        let mut sections = [(0usize, 0usize); SECTION_COUNT];
        for (number, section) in sections.iter_mut().enumerate() {
            let entry = &body[toc_at + number * TOC_ENTRY_LEN..];
            let offset = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes")) as usize;
            let len = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes")) as usize;
            if offset.checked_add(len).is_none_or(|end| end > toc_at) {
                return Err(corruption(
                    toc_at + number * TOC_ENTRY_LEN,
                    "section out of bounds",
                ));
            }
            *section = (offset, offset + len);
        }
        let decode_error =
            |section: (usize, usize), error: crate::encoding::DecodeError| TsdbError::Corruption {
                file: path.to_path_buf(),
                offset: (section.0 + error.offset) as u64,
                reason: error.reason.to_owned(),
            };

        let symbols_section = sections[0];
        let bytes = &body[symbols_section.0..symbols_section.1];
        let count = read_u32(bytes)
            .ok_or_else(|| corruption(symbols_section.0, "truncated symbol count"))?;
        let mut decoder = Decoder::new(&bytes[4..]);
        let mut symbols = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let text = decoder
                .string()
                .map_err(|error| decode_error((symbols_section.0 + 4, 0), error))?;
            let start = symbols_section.0 + 4 + decoder.position() - text.len();
            symbols.push((start, start + text.len()));
        }

        let offsets_section = sections[2];
        let series_count = read_u32(&body[offsets_section.0..offsets_section.1])
            .ok_or_else(|| corruption(offsets_section.0, "truncated series count"))?;
        if offsets_section.1 - offsets_section.0 != 4 + series_count as usize * 8 {
            return Err(corruption(
                offsets_section.0,
                "series offsets do not match the series count",
            ));
        }

        let table_section = sections[4];
        let bytes = &body[table_section.0..table_section.1];
        let count =
            read_u32(bytes).ok_or_else(|| corruption(table_section.0, "truncated table count"))?;
        let mut decoder = Decoder::new(&bytes[4..]);
        let mut table: HashMap<String, Vec<PostingsEntry>> = HashMap::new();
        let postings_len = sections[3].1 - sections[3].0;
        for _ in 0..count {
            let mut next = || {
                decoder
                    .uvarint()
                    .map_err(|error| decode_error((table_section.0 + 4, 0), error))
            };
            let (name, value, offset, len) = (next()?, next()?, next()? as usize, next()? as usize);
            if name as usize >= symbols.len() || value as usize >= symbols.len() {
                return Err(corruption(
                    table_section.0,
                    "postings table names an unknown symbol",
                ));
            }
            if offset.checked_add(len).is_none_or(|end| end > postings_len) {
                return Err(corruption(table_section.0, "postings entry out of bounds"));
            }
            let (start, end) = symbols[name as usize];
            let name = std::str::from_utf8(&map[start..end])
                .map_err(|_| corruption(start, "symbol is not UTF-8"))?;
            table
                .entry(name.to_owned())
                .or_default()
                .push((value as u32, offset, len));
        }
        Ok(IndexReader {
            path: path.to_path_buf(),
            symbols,
            series: sections[1],
            series_offsets: (offsets_section.0 + 4, offsets_section.1),
            series_count,
            postings: sections[3],
            symbols_section_len: sections[0].1 - sections[0].0,
            table_section_len: sections[4].1 - sections[4].0,
            table,
            map,
        })
    }

    fn symbol_bytes(&self, symbol: u64) -> Result<&[u8]> {
        let (start, end) = *self
            .symbols
            .get(symbol as usize)
            .ok_or_else(|| self.corruption(0, "unknown symbol"))?;
        Ok(&self.map[start..end])
    }

    fn symbol(&self, symbol: u64) -> Result<&str> {
        let (start, end) = *self
            .symbols
            .get(symbol as usize)
            .ok_or_else(|| self.corruption(0, "unknown symbol"))?;
        std::str::from_utf8(&self.map[start..end])
            .map_err(|_| self.corruption(start, "symbol is not UTF-8"))
    }

    fn corruption(&self, offset: usize, reason: &str) -> TsdbError {
        TsdbError::Corruption {
            file: self.path.clone(),
            offset: offset as u64,
            reason: reason.to_owned(),
        }
    }

    /// Labels and chunk metas of series `id`.
    fn series(&self, id: u32) -> Result<(Labels, Vec<writer::ChunkMeta>)> {
        let (labels, metas) = self.series_entry(id, true)?;
        Ok((labels.unwrap_or_else(Labels::empty), metas))
    }

    /// Chunk metas of series `id`, without building its labels.
    fn chunk_metas(&self, id: u32) -> Result<Vec<writer::ChunkMeta>> {
        Ok(self.series_entry(id, false)?.1)
    }

    /// The label pairs of series `id` as bytes borrowed from the index, into `pairs` (cleared
    /// first): enough to compare a series with others without building its labels or
    /// checking its strings' UTF-8 (byte order is string order).
    fn label_pairs<'a>(&'a self, id: u32, pairs: &mut Vec<(&'a [u8], &'a [u8])>) -> Result<()> {
        pairs.clear();
        let start = self.series_start(id)?;
        let mut decoder = Decoder::new(&self.map[start..self.series.1]);
        let wrap = |error: crate::encoding::DecodeError| {
            self.corruption(start + error.offset, error.reason)
        };
        let count = decoder.uvarint().map_err(wrap)?;
        for _ in 0..count {
            let name = self.symbol_bytes(decoder.uvarint().map_err(wrap)?)?;
            let value = self.symbol_bytes(decoder.uvarint().map_err(wrap)?)?;
            pairs.push((name, value));
        }
        Ok(())
    }

    /// Labels from pairs read by [`IndexReader::label_pairs`].
    fn labels_from_pairs(&self, pairs: &[(&[u8], &[u8])]) -> Result<Labels> {
        // Written from valid label sets: names strictly ascending, values never empty.
        let valid = pairs.iter().all(|(_, value)| !value.is_empty())
            && pairs.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !valid {
            return Err(self.corruption(self.series.0, "series labels out of order"));
        }
        let text = |bytes| {
            std::str::from_utf8(bytes).map_err(|_| self.corruption(0, "symbol is not UTF-8"))
        };
        let labels = pairs
            .iter()
            .map(|(name, value)| Ok(Label::new(text(name)?, text(value)?)))
            .collect::<Result<Vec<Label>>>()?;
        Ok(Labels::from_sorted_unchecked(labels))
    }

    /// Where the index entry of series `id` starts.
    fn series_start(&self, id: u32) -> Result<usize> {
        if id >= self.series_count {
            return Err(self.corruption(self.series_offsets.0, "series id out of range"));
        }
        let at = self.series_offsets.0 + id as usize * 8;
        let offset = u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8 bytes")) as usize;
        let start = self.series.0 + offset;
        if start >= self.series.1 {
            return Err(self.corruption(at, "series offset out of bounds"));
        }
        Ok(start)
    }

    /// The values of label `name` as bytes, sorted, each with where its postings are stored.
    fn values_with_postings(&self, name: &str) -> Result<Vec<(&[u8], PostingsAt)>> {
        let Some(values) = self.table.get(name) else {
            return Ok(Vec::new());
        };
        values
            .iter()
            .map(|&(value, offset, len)| Ok((self.symbol_bytes(u64::from(value))?, (offset, len))))
            .collect()
    }

    /// A symbol read as bytes, as text.
    fn text(&self, bytes: &[u8]) -> Result<String> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.corruption(0, "symbol is not UTF-8"))
    }

    /// The postings list stored `len` bytes at `offset` of the postings section.
    fn postings_at(&self, offset: usize, len: usize) -> Result<RoaringBitmap> {
        let start = self.postings.0 + offset;
        RoaringBitmap::deserialize_from(&self.map[start..start + len])
            .map_err(|error| self.corruption(start, &format!("unreadable postings: {error}")))
    }

    /// Decodes the index entry of series `id`; its labels only when `with_labels`.
    fn series_entry(
        &self,
        id: u32,
        with_labels: bool,
    ) -> Result<(Option<Labels>, Vec<writer::ChunkMeta>)> {
        let start = self.series_start(id)?;
        let mut decoder = Decoder::new(&self.map[start..self.series.1]);
        let wrap = |error: crate::encoding::DecodeError| {
            self.corruption(start + error.offset, error.reason)
        };
        let count = decoder.uvarint().map_err(wrap)?;
        let mut labels = Vec::with_capacity(if with_labels {
            count.min(64) as usize
        } else {
            0
        });
        for _ in 0..count {
            let name = decoder.uvarint().map_err(wrap)?;
            let value = decoder.uvarint().map_err(wrap)?;
            if with_labels {
                labels.push(Label::new(self.symbol(name)?, self.symbol(value)?));
            }
        }
        let chunks = decoder.uvarint().map_err(wrap)?;
        let mut metas = Vec::with_capacity(chunks.min(1 << 16) as usize);
        for _ in 0..chunks {
            let min_t = decoder.varint().map_err(wrap)?;
            let span = decoder.uvarint().map_err(wrap)?;
            let reference = decoder.uvarint().map_err(wrap)?;
            metas.push(writer::ChunkMeta {
                min_t,
                max_t: min_t.wrapping_add(span as i64),
                reference,
            });
        }
        if !with_labels {
            return Ok((None, metas));
        }
        // Written from valid label sets: names strictly ascending, values never empty.
        let valid = labels.iter().all(|label| !label.value.is_empty())
            && labels.windows(2).all(|pair| pair[0].name < pair[1].name);
        if !valid {
            return Err(self.corruption(start, "series labels out of order"));
        }
        Ok((Some(Labels::from_sorted_unchecked(labels)), metas))
    }
}

impl PostingsIndex for IndexReader {
    fn all_series(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.series_count);
        all
    }

    fn sorted_values(&self, name: &str) -> Vec<&str> {
        self.table
            .get(name)
            .map(|values| {
                values
                    .iter()
                    .filter_map(|(value, _, _)| self.symbol(u64::from(*value)).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn with_postings(&self, name: &str, value: &str, visit: &mut dyn FnMut(&RoaringBitmap)) {
        let Some(values) = self.table.get(name) else {
            return;
        };
        let found = values.binary_search_by(|(symbol, _, _)| {
            self.symbol(u64::from(*symbol))
                .unwrap_or_default()
                .cmp(value)
        });
        let Ok(position) = found else {
            return;
        };
        let (_, offset, len) = values[position];
        match self.postings_at(offset, len) {
            Ok(bitmap) => visit(&bitmap),
            Err(error) => tracing::error!(%error, "unreadable postings"),
        }
    }
}

/// `labels` compared with a label set given as (name, value) byte pairs in name order, as
/// [`Labels`] compare (label by label, name then value).
fn labels_cmp(labels: &Labels, pairs: &[(&[u8], &[u8])]) -> Ordering {
    for (label, (name, value)) in labels.iter().zip(pairs) {
        let (known_name, known_value) = (label.name.as_bytes(), label.value.as_bytes());
        // Most labels of neighbouring series are equal: test that first, it is cheaper.
        if known_name != *name || known_value != *value {
            return known_name.cmp(name).then_with(|| known_value.cmp(value));
        }
    }
    labels.len().cmp(&pairs.len())
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// After a failed whole-file checksum: the first section whose own checksum fails.
fn locate_index_damage(path: &Path, bytes: &[u8]) -> Option<TsdbError> {
    let body = bytes.get(..bytes.len().checked_sub(FOOTER_LEN)?)?;
    let toc_at = body.len().checked_sub(SECTION_COUNT * TOC_ENTRY_LEN)?;
    for number in 0..SECTION_COUNT {
        let entry = &body[toc_at + number * TOC_ENTRY_LEN..];
        let offset = u64::from_le_bytes(entry[..8].try_into().ok()?) as usize;
        let len = u64::from_le_bytes(entry[8..16].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(entry[16..20].try_into().ok()?);
        let Some(section) = body.get(offset..offset.checked_add(len)?) else {
            return Some(TsdbError::Corruption {
                file: path.to_path_buf(),
                offset: (toc_at + number * TOC_ENTRY_LEN) as u64,
                reason: "table of contents is damaged".into(),
            });
        };
        if crc32fast::hash(section) != crc {
            return Some(TsdbError::Corruption {
                file: path.to_path_buf(),
                offset: offset as u64,
                reason: format!("checksum of index section {number} does not match"),
            });
        }
    }
    None
}

/// Verifies a chunk file; on a bad checksum, names the first damaged chunk's offset.
fn verify_chunk_file(path: &Path, map: &Mmap) -> Result<()> {
    let error = match verify_footer(path, map, CHUNKS_MAGIC, FORMAT_VERSION) {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let body = &map[..map.len().saturating_sub(FOOTER_LEN)];
    let mut offset = 0;
    while offset + 9 <= body.len() {
        let len =
            u32::from_le_bytes(body[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let Some(entry) = body.get(offset + 4..offset + 5 + len + 4) else {
            break;
        };
        let crc = u32::from_le_bytes(entry[entry.len() - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&entry[..entry.len() - 4]) != crc {
            return Err(TsdbError::Corruption {
                file: path.to_path_buf(),
                offset: offset as u64,
                reason: "chunk checksum mismatch".into(),
            });
        }
        offset += 9 + len;
    }
    Err(error)
}

/// What a tool needs to know about one chunk of a block: its range, encoding, size on disk
/// and sample count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// First sample time.
    pub min_t: i64,
    /// Last sample time.
    pub max_t: i64,
    /// The encoding byte: 1 XOR, 2 columnar.
    pub encoding: u8,
    /// Bytes of the chunk entry in its file (length, encoding byte, data and checksum).
    pub bytes: u64,
    /// Samples in the chunk (deleted ranges not subtracted).
    pub samples: u64,
}

/// Sizes of the parts of a block's index file, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IndexSizes {
    /// The whole file.
    pub total: u64,
    /// Section 0: symbols.
    pub symbols: u64,
    /// Section 1: series with their chunk references.
    pub series: u64,
    /// Section 2: series offsets.
    pub series_offsets: u64,
    /// Section 3: postings bitmaps.
    pub postings: u64,
    /// Section 4: the postings table.
    pub postings_table: u64,
}

/// An open block.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    chunks: Vec<Mmap>,
    tombstones: RwLock<HashMap<u32, Vec<(i64, i64)>>>,
    size_bytes: u64,
}

impl Block {
    /// Opens and verifies the block in `dir`: every file's footer and checksum.
    pub fn open(dir: &Path) -> Result<Block> {
        let meta_path = dir.join(META_FILE);
        let meta_bytes = fs::read(&meta_path).map_err(|error| TsdbError::io(&meta_path, error))?;
        let meta = BlockMeta::decode(&meta_path, &meta_bytes)?;
        let index = IndexReader::open(&dir.join(INDEX_FILE))?;
        let chunks_dir = dir.join(CHUNKS_DIR);
        let mut numbers: Vec<u32> = fs::read_dir(&chunks_dir)
            .map_err(|error| TsdbError::io(&chunks_dir, error))?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        numbers.sort_unstable();
        let mut chunks = Vec::with_capacity(numbers.len());
        for (position, number) in numbers.iter().enumerate() {
            let path = chunks_dir.join(format!("{number:06}"));
            if *number as usize != position + 1 {
                return Err(TsdbError::Corruption {
                    file: path,
                    offset: 0,
                    reason: "chunk files are not numbered 1, 2, ...".into(),
                });
            }
            let map = map_file(&path)?;
            verify_chunk_file(&path, &map)?;
            release_pages(&map);
            chunks.push(map);
        }
        let tombstones_path = dir.join(TOMBSTONES_FILE);
        let tombstones = read_tombstones(&tombstones_path)?;
        let size_bytes = meta_bytes.len() as u64
            + index.map.len() as u64
            + chunks.iter().map(|map| map.len() as u64).sum::<u64>()
            + fs::metadata(&tombstones_path).map(|m| m.len()).unwrap_or(0);
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            tombstones: RwLock::new(tombstones),
            size_bytes,
        })
    }

    /// The block's metadata.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The block's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of series in the index (deleted ones included).
    pub fn series_count(&self) -> u32 {
        self.index.series_count
    }

    /// Labels of series `id` (0-based, in label order) and facts about each of its chunks.
    /// Reads the chunk headers (and decodes columnar chunks to count their samples).
    pub fn series_chunks(&self, id: u32) -> Result<(Labels, Vec<ChunkInfo>)> {
        let (labels, metas) = self.index.series(id)?;
        let mut infos = Vec::with_capacity(metas.len());
        for meta in metas {
            let (encoding, bytes) = self.chunk_entry(meta.reference)?;
            let corruption = |reason: String| TsdbError::Corruption {
                file: self.chunk_path(meta.reference),
                offset: meta.reference & 0xffff_ffff,
                reason,
            };
            let samples = match encoding {
                CHUNK_ENCODING_XOR => bytes
                    .get(1..3)
                    .map(|count| u64::from(u16::from_be_bytes([count[0], count[1]])))
                    .ok_or_else(|| corruption("chunk shorter than its header".into()))?,
                CHUNK_ENCODING_COLUMNAR => columnar::decode(bytes)
                    .map_err(|error| corruption(error.to_string()))?
                    .len() as u64,
                _ => return Err(corruption("unknown chunk encoding".into())),
            };
            infos.push(ChunkInfo {
                min_t: meta.min_t,
                max_t: meta.max_t,
                encoding,
                bytes: bytes.len() as u64 + 9,
                samples,
            });
        }
        Ok((labels, infos))
    }

    /// Sizes of the index file and its sections.
    pub fn index_sizes(&self) -> IndexSizes {
        let index = &self.index;
        let len = |(start, end): (usize, usize)| (end - start) as u64;
        IndexSizes {
            total: index.map.len() as u64,
            symbols: index.symbols_section_len as u64,
            series: len(index.series),
            series_offsets: len(index.series_offsets) + 4,
            postings: len(index.postings),
            postings_table: index.table_section_len as u64,
        }
    }

    /// Matching series with their samples in `[mint, maxt]` (deleted ranges removed), in
    /// label order, decoded one at a time (for reads too large to hold at once).
    pub fn select_iter<'a>(
        &'a self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = Result<Series>> + 'a {
        let ids = if self.overlaps(mint, maxt) {
            postings_for_matchers(&self.index, matchers)
        } else {
            RoaringBitmap::new()
        };
        ids.into_iter()
            .filter_map(move |id| self.read_series(id, mint, maxt).transpose())
    }

    fn chunk_path(&self, reference: u64) -> PathBuf {
        self.dir
            .join(CHUNKS_DIR)
            .join(format!("{:06}", reference >> 32))
    }

    /// The encoding byte and data of the chunk entry at `reference`, checksum verified.
    fn chunk_entry(&self, reference: u64) -> Result<(u8, &[u8])> {
        let file = (reference >> 32) as usize;
        let offset = (reference & 0xffff_ffff) as usize;
        let corruption = |reason: &str| TsdbError::Corruption {
            file: self.chunk_path(reference),
            offset: offset as u64,
            reason: reason.to_owned(),
        };
        let map = file
            .checked_sub(1)
            .and_then(|index| self.chunks.get(index))
            .ok_or_else(|| corruption("chunk reference names a missing file"))?;
        let len = map
            .get(offset..offset + 4)
            .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corruption("chunk reference out of bounds"))?;
        let entry = map
            .get(offset + 4..offset + 4 + 1 + len + 4)
            .ok_or_else(|| corruption("chunk runs past the end of its file"))?;
        let (body, crc) = entry.split_at(entry.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(corruption("chunk checksum mismatch"));
        }
        Ok((body[0], &body[1..]))
    }

    /// Whether the block's time range overlaps `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_time <= maxt && mint < self.meta.max_time
    }

    /// Matching series with their samples in `[mint, maxt]` (deleted ranges removed), sorted
    /// by labels.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>> {
        let mut out = Vec::new();
        if !self.overlaps(mint, maxt) {
            return Ok(out);
        }
        for id in postings_for_matchers(&self.index, matchers) {
            if let Some(series) = self.read_series(id, mint, maxt)? {
                out.push(series);
            }
        }
        Ok(out)
    }

    /// Every series with all its samples (deleted ranges removed), in label order, decoded one
    /// at a time: the input of compaction.
    pub fn series_iter(&self) -> impl Iterator<Item = Result<Series>> + '_ {
        (0..self.index.series_count)
            .filter_map(move |id| self.read_series(id, i64::MIN, i64::MAX).transpose())
    }

    /// Bytes of the block's files on disk.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Whether any deletion is recorded for this block.
    pub fn has_tombstones(&self) -> bool {
        !self.tombstones.read().is_empty()
    }

    /// The level-1 blocks whose data this block holds (itself, for a level-1 block).
    pub fn effective_sources(&self) -> Vec<String> {
        if self.meta.compaction.level <= 1 || self.meta.compaction.sources.is_empty() {
            vec![self.meta.id.clone()]
        } else {
            self.meta.compaction.sources.clone()
        }
    }

    fn read_series(&self, id: u32, mint: i64, maxt: i64) -> Result<Option<Series>> {
        let (labels, metas) = self.index.series(id)?;
        let mut samples = Vec::new();
        self.read_chunks_into(id, &metas, mint, maxt, &mut samples)?;
        Ok((!samples.is_empty()).then_some(Series { labels, samples }))
    }

    /// Matching series with a chunk overlapping `[mint, maxt]`, in label order, with their ids
    /// for [`Block::read_samples`]: the plan of a read that merges several sources and decodes
    /// later, possibly on other threads. A series listed here may still have no sample in the
    /// range (a chunk straddling an edge, or deletions).
    pub(crate) fn matching_series(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(Labels, u32)>> {
        let mut out = Vec::new();
        if !self.overlaps(mint, maxt) {
            return Ok(out);
        }
        for id in postings_for_matchers(&self.index, matchers) {
            let (labels, metas) = self.index.series(id)?;
            if metas
                .iter()
                .any(|meta| meta.max_t >= mint && meta.min_t <= maxt)
            {
                out.push((labels, id));
            }
        }
        Ok(out)
    }

    /// Appends the samples of series `id` (from [`Block::matching_series`]) in `[mint, maxt]`,
    /// deleted ranges removed, to `out`.
    pub(crate) fn read_samples(
        &self,
        id: u32,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<()> {
        let metas = self.index.chunk_metas(id)?;
        self.read_chunks_into(id, &metas, mint, maxt, out)
    }

    fn read_chunks_into(
        &self,
        id: u32,
        metas: &[writer::ChunkMeta],
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<()> {
        let tombstones = self.tombstones.read();
        let deleted = tombstones.get(&id).map(Vec::as_slice).unwrap_or_default();
        let keep = |t: i64| {
            deleted.is_empty() || !deleted.iter().any(|(from, to)| (*from..=*to).contains(&t))
        };
        let overlapping = || {
            metas
                .iter()
                .filter(|meta| meta.max_t >= mint && meta.min_t <= maxt)
        };
        // Each chunk is looked up (and its checksum verified) once.
        let chunks: Vec<(&writer::ChunkMeta, u8, &[u8])> = overlapping()
            .map(|meta| {
                self.chunk_entry(meta.reference)
                    .map(|(encoding, data)| (meta, encoding, data))
            })
            .collect::<Result<_>>()?;
        // Room for the chunks' samples (Gorilla chunks carry their count in the header), so
        // that `out` is not regrown and copied chunk after chunk.
        let expected: usize = chunks
            .iter()
            .filter(|(_, encoding, _)| *encoding == CHUNK_ENCODING_XOR)
            .filter_map(|(_, _, bytes)| bytes.get(1..3))
            .map(|count| usize::from(u16::from_be_bytes([count[0], count[1]])))
            .sum();
        out.reserve(expected);
        for (meta, encoding, data) in chunks {
            let corruption = |reason: String| TsdbError::Corruption {
                file: self.chunk_path(meta.reference),
                offset: meta.reference & 0xffff_ffff,
                reason,
            };
            match encoding {
                CHUNK_ENCODING_XOR => {
                    let mut iter =
                        XorIter::new(data).map_err(|error| corruption(error.to_string()))?;
                    let Some(first) = iter.seek(mint) else {
                        if let Some(error) = iter.err() {
                            return Err(corruption(error.to_string()));
                        }
                        continue;
                    };
                    for (t, v) in std::iter::once(first).chain(iter.by_ref()) {
                        if t > maxt {
                            break;
                        }
                        if keep(t) {
                            out.push(Sample::new(t, v));
                        }
                    }
                    if let Some(error) = iter.err() {
                        return Err(corruption(error.to_string()));
                    }
                }
                CHUNK_ENCODING_COLUMNAR => {
                    let before = out.len();
                    columnar::decode_into(data, out, mint, maxt, Sample::new)
                        .map_err(|error| corruption(error.to_string()))?;
                    if !deleted.is_empty() {
                        let decoded = out.split_off(before);
                        out.extend(
                            decoded
                                .into_iter()
                                .filter(|sample| keep(sample.timestamp.0)),
                        );
                    }
                }
                _ => return Err(corruption("unknown chunk encoding".into())),
            }
        }
        Ok(())
    }

    /// Adds to `known` (sorted, distinct) the label sets of matching series with samples in
    /// `[mint, maxt]` (tombstones applied) that it lacks. Series are walked in label order and
    /// compared with `known` on labels borrowed from the index, so a series `known` already
    /// holds costs neither a liveness check nor owned labels.
    pub(crate) fn add_live_labels(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        known: &mut Vec<Labels>,
    ) -> Result<()> {
        if !self.overlaps(mint, maxt) {
            return Ok(());
        }
        let covered = self.covered_by(mint, maxt);
        let mut pairs = Vec::new();
        let mut position = 0;
        let mut added = Vec::new();
        for id in postings_for_matchers(&self.index, matchers) {
            self.index.label_pairs(id, &mut pairs)?;
            let mut order = Ordering::Greater;
            while let Some(labels) = known.get(position) {
                order = labels_cmp(labels, &pairs);
                if order != Ordering::Less {
                    break;
                }
                position += 1;
            }
            if order == Ordering::Equal || !(covered || self.series_is_live(id, mint, maxt)?) {
                continue;
            }
            added.push(self.index.labels_from_pairs(&pairs)?);
        }
        crate::index::insert_sorted(known, added);
        Ok(())
    }

    /// Whether series `id` has a sample in `[mint, maxt]` (tombstones applied).
    fn series_is_live(&self, id: u32, mint: i64, maxt: i64) -> Result<bool> {
        if self.has_tombstones() && self.tombstones.read().contains_key(&id) {
            return Ok(self.read_series(id, mint, maxt)?.is_some());
        }
        // Only the chunk bounds matter: the labels are not built.
        let metas = self.index.chunk_metas(id)?;
        self.chunks_live(&metas, mint, maxt)
    }

    /// Whether any of the chunks holds a sample in `[mint, maxt]`.
    fn chunks_live(&self, metas: &[writer::ChunkMeta], mint: i64, maxt: i64) -> Result<bool> {
        for meta in metas
            .iter()
            .filter(|meta| meta.max_t >= mint && meta.min_t <= maxt)
        {
            // A chunk's first and last timestamps are samples: either one inside the range
            // settles it without decoding.
            if (mint..=maxt).contains(&meta.min_t) || (mint..=maxt).contains(&meta.max_t) {
                return Ok(true);
            }
            if self
                .first_time_from(meta.reference, mint)?
                .is_some_and(|t| t <= maxt)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The time of the chunk's first sample at or after `mint`.
    fn first_time_from(&self, reference: u64, mint: i64) -> Result<Option<i64>> {
        let (encoding, data) = self.chunk_entry(reference)?;
        let corruption = |reason: String| TsdbError::Corruption {
            file: self.chunk_path(reference),
            offset: reference & 0xffff_ffff,
            reason,
        };
        match encoding {
            CHUNK_ENCODING_XOR => {
                let mut iter = XorIter::new(data).map_err(|error| corruption(error.to_string()))?;
                let found = iter.seek(mint).map(|(t, _)| t);
                match iter.err() {
                    Some(error) if found.is_none() => Err(corruption(error.to_string())),
                    _ => Ok(found),
                }
            }
            CHUNK_ENCODING_COLUMNAR => Ok(columnar::decode(data)
                .map_err(|error| corruption(error.to_string()))?
                .into_iter()
                .map(|(t, _)| t)
                .find(|t| *t >= mint)),
            _ => Err(corruption("unknown chunk encoding".into())),
        }
    }

    /// Whether the whole block is inside `[mint, maxt]` with nothing deleted: then every
    /// series of the block has a sample in the range (a block holds only series with samples
    /// in its own range), and the index alone answers which are live.
    pub(crate) fn covered_by(&self, mint: i64, maxt: i64) -> bool {
        mint <= self.meta.min_time && maxt >= self.meta.max_time - 1 && !self.has_tombstones()
    }

    /// Whether some series of `series` has a sample in `[mint, maxt]` (tombstones applied).
    /// Series found without one are added to `dead` and not looked at again.
    fn any_live(
        &self,
        series: &RoaringBitmap,
        (mint, maxt): (i64, i64),
        covered: bool,
        dead: &mut RoaringBitmap,
    ) -> Result<bool> {
        if covered {
            return Ok(!series.is_empty());
        }
        for id in series {
            if dead.contains(id) {
                continue;
            }
            if self.series_is_live(id, mint, maxt)? {
                return Ok(true);
            }
            dead.insert(id);
        }
        Ok(false)
    }

    /// The series matching `matchers`, or `None` for every series (no matchers).
    fn candidates(&self, matchers: &[Matcher]) -> Option<RoaringBitmap> {
        (!matchers.is_empty()).then(|| postings_for_matchers(&self.index, matchers))
    }

    /// Label names of matching series with samples in `[mint, maxt]`.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<BTreeSet<String>> {
        let mut names = Vec::new();
        self.add_label_names(matchers, mint, maxt, &mut names)?;
        Ok(names.into_iter().collect())
    }

    /// Adds to `known` (sorted, distinct) the label names of matching series with samples in
    /// `[mint, maxt]` that it lacks. Per missing name, the postings of its values are searched
    /// for one live series; none is checked when the block lies inside the range.
    pub(crate) fn add_label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        known: &mut Vec<String>,
    ) -> Result<()> {
        if !self.overlaps(mint, maxt) {
            return Ok(());
        }
        let covered = self.covered_by(mint, maxt);
        let candidates = self.candidates(matchers);
        let mut names: Vec<(&[u8], &Vec<PostingsEntry>)> = self
            .index
            .table
            .iter()
            .map(|(name, values)| (name.as_bytes(), values))
            .collect();
        names.sort_unstable_by_key(|(name, _)| *name);
        let mut dead = RoaringBitmap::new();
        let mut added = Vec::new();
        for (name, values) in crate::index::missing_from(known, names) {
            if covered && candidates.is_none() {
                added.push(self.index.text(name)?);
                continue;
            }
            for &(_, offset, len) in values {
                let mut series = self.index.postings_at(offset, len)?;
                if let Some(candidates) = &candidates {
                    series &= candidates;
                }
                if self.any_live(&series, (mint, maxt), covered, &mut dead)? {
                    added.push(self.index.text(name)?);
                    break;
                }
            }
        }
        crate::index::insert_sorted(known, added);
        Ok(())
    }

    /// Values of `name` over matching series with samples in `[mint, maxt]`.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<BTreeSet<String>> {
        let mut values = Vec::new();
        self.add_label_values(name, matchers, mint, maxt, &mut values)?;
        Ok(values.into_iter().collect())
    }

    /// Adds to `known` (sorted, distinct) the values of `name` over matching series with
    /// samples in `[mint, maxt]` that it lacks. Per missing value, its postings are searched
    /// for one live series; none is checked when the block lies inside the range, so that
    /// with no matchers only the index's sorted value list is read.
    pub(crate) fn add_label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        known: &mut Vec<String>,
    ) -> Result<()> {
        if !self.overlaps(mint, maxt) {
            return Ok(());
        }
        let covered = self.covered_by(mint, maxt);
        let candidates = self.candidates(matchers);
        let values = self.index.values_with_postings(name)?;
        let mut dead = RoaringBitmap::new();
        let mut added = Vec::new();
        for (value, (offset, len)) in crate::index::missing_from(known, values) {
            let live = if covered && candidates.is_none() {
                true
            } else {
                let mut series = self.index.postings_at(offset, len)?;
                if let Some(candidates) = &candidates {
                    series &= candidates;
                }
                self.any_live(&series, (mint, maxt), covered, &mut dead)?
            };
            if live {
                added.push(self.index.text(value)?);
            }
        }
        crate::index::insert_sorted(known, added);
        Ok(())
    }

    /// Records deletion of `[mint, maxt]` for matching series in the tombstones file
    /// (rewritten atomically). Returns how many series were affected.
    pub fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64> {
        if !self.overlaps(mint, maxt) {
            return Ok(0);
        }
        let ids = postings_for_matchers(&self.index, matchers);
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tombstones = self.tombstones.write();
        let mut updated = tombstones.clone();
        for id in &ids {
            updated.entry(id).or_default().push((mint, maxt));
        }
        write_tombstones(&self.dir, &updated)?;
        *tombstones = updated;
        Ok(ids.len())
    }
}

/// Checks every file of the block in `dir` on its own, so that each damaged file is named:
/// `meta.json`, the index (footer, section checksums, structure), every entry of every chunk
/// file and its footer, the tombstones. If all pass, every series is read and every chunk
/// decoded. Returns the problems found and the bytes read.
pub(crate) fn verify_block_dir(dir: &Path) -> (Vec<TsdbError>, u64) {
    let mut problems = Vec::new();
    let mut bytes_read = 0u64;
    let meta_path = dir.join(META_FILE);
    match fs::read(&meta_path) {
        Ok(bytes) => {
            bytes_read += bytes.len() as u64;
            if let Err(error) = BlockMeta::decode(&meta_path, &bytes) {
                problems.push(error);
            }
        }
        Err(error) => problems.push(TsdbError::io(&meta_path, error)),
    }
    let index_path = dir.join(INDEX_FILE);
    match IndexReader::open(&index_path) {
        Ok(index) => bytes_read += index.map.len() as u64,
        Err(error) => problems.push(error),
    }
    let chunks_dir = dir.join(CHUNKS_DIR);
    match fs::read_dir(&chunks_dir) {
        Ok(entries) => {
            let mut numbers: Vec<u32> = entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            numbers.sort_unstable();
            for (position, number) in numbers.iter().enumerate() {
                let path = chunks_dir.join(format!("{number:06}"));
                if *number as usize != position + 1 {
                    problems.push(TsdbError::Corruption {
                        file: path.clone(),
                        offset: 0,
                        reason: "chunk files are not numbered 1, 2, ...".into(),
                    });
                }
                match map_file(&path) {
                    Ok(map) => {
                        bytes_read += map.len() as u64;
                        problems.extend(verify_every_chunk(&path, &map));
                    }
                    Err(error) => problems.push(error),
                }
            }
        }
        Err(error) => problems.push(TsdbError::io(&chunks_dir, error)),
    }
    let tombstones_path = dir.join(TOMBSTONES_FILE);
    match read_tombstones(&tombstones_path) {
        Ok(_) => bytes_read += fs::metadata(&tombstones_path).map_or(0, |m| m.len()),
        Err(error) => problems.push(error),
    }
    if problems.is_empty() {
        match Block::open(dir) {
            Ok(block) => {
                for id in 0..block.series_count() {
                    if let Err(error) = block.read_series(id, i64::MIN, i64::MAX) {
                        problems.push(error);
                    }
                }
            }
            Err(error) => problems.push(error),
        }
    }
    (problems, bytes_read)
}

/// Every chunk entry whose checksum fails, then the footer if it fails while the entries
/// pass.
fn verify_every_chunk(path: &Path, map: &[u8]) -> Vec<TsdbError> {
    let mut problems = Vec::new();
    let footer = verify_footer(path, map, CHUNKS_MAGIC, FORMAT_VERSION).err();
    let body = &map[..map.len().saturating_sub(FOOTER_LEN)];
    let mut offset = 0;
    while offset < body.len() {
        let corruption = |reason: &str| TsdbError::Corruption {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason: reason.to_owned(),
        };
        let Some(len) = body.get(offset..offset + 4) else {
            problems.push(corruption("truncated chunk entry header"));
            break;
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(entry) = body.get(offset + 4..offset + 4 + 1 + len + 4) else {
            problems.push(corruption(
                "chunk entry runs past the end of the file (damaged length)",
            ));
            break;
        };
        let (data, crc) = entry.split_at(entry.len() - 4);
        if crc32fast::hash(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            problems.push(corruption("chunk checksum mismatch"));
        }
        offset += 9 + len;
    }
    if problems.is_empty() {
        problems.extend(footer);
    }
    problems
}

fn read_tombstones(path: &Path) -> Result<HashMap<u32, Vec<(i64, i64)>>> {
    let bytes = fs::read(path).map_err(|error| TsdbError::io(path, error))?;
    let body = verify_footer(path, &bytes, TOMBSTONES_MAGIC, FORMAT_VERSION)?;
    let wrap = |error: crate::encoding::DecodeError| TsdbError::Corruption {
        file: path.to_path_buf(),
        offset: error.offset as u64,
        reason: error.reason.to_owned(),
    };
    let mut decoder = Decoder::new(body);
    let count = decoder.uvarint().map_err(wrap)?;
    let mut tombstones: HashMap<u32, Vec<(i64, i64)>> = HashMap::new();
    for _ in 0..count {
        let id = decoder.uvarint_u32().map_err(wrap)?;
        let mint = decoder.varint().map_err(wrap)?;
        let maxt = decoder.varint().map_err(wrap)?;
        tombstones.entry(id).or_default().push((mint, maxt));
    }
    Ok(tombstones)
}

fn write_tombstones(dir: &Path, tombstones: &HashMap<u32, Vec<(i64, i64)>>) -> Result<()> {
    let mut entries: Vec<(u32, i64, i64)> = tombstones
        .iter()
        .flat_map(|(id, ranges)| ranges.iter().map(move |(mint, maxt)| (*id, *mint, *maxt)))
        .collect();
    entries.sort_unstable();
    let mut out = Vec::new();
    put_uvarint(&mut out, entries.len() as u64);
    for (id, mint, maxt) in entries {
        put_uvarint(&mut out, u64::from(id));
        put_varint(&mut out, mint);
        put_varint(&mut out, maxt);
    }
    append_footer(&mut out, TOMBSTONES_MAGIC, FORMAT_VERSION);
    let temporary = dir.join(format!("{TOMBSTONES_FILE}.tmp"));
    writer::write_file(&temporary, &out)?;
    let path = dir.join(TOMBSTONES_FILE);
    fs::rename(&temporary, &path).map_err(|error| TsdbError::io(&temporary, error))?;
    crate::wal::sync_dir(dir)
}

#[cfg(test)]
mod tests;
