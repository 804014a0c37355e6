//! Block write, read, delete and damage tests.

use std::fs;
use std::path::{Path, PathBuf};

use lookout_model::{Labels, MatchKind, Matcher, Sample, STALE_NAN};

use super::writer::write_block;
use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

/// Three series, 300 samples each at 1 s, values of every kind.
fn sample_data() -> Vec<(Labels, Vec<Sample>)> {
    let mut series = vec![
        (
            labels(&[("__name__", "up"), ("job", "api"), ("i", "1")]),
            0.0,
        ),
        (
            labels(&[("__name__", "up"), ("job", "api"), ("i", "2")]),
            1.0,
        ),
        (
            labels(&[("__name__", "up"), ("job", "db"), ("i", "3")]),
            2.0,
        ),
    ]
    .into_iter()
    .map(|(labels, offset)| {
        let samples = (0..300)
            .map(|t| {
                let value = match t % 50 {
                    7 => STALE_NAN,
                    8 => f64::NEG_INFINITY,
                    9 => -0.0,
                    _ => t as f64 + offset,
                };
                Sample::new(t * 1000, value)
            })
            .collect();
        (labels, samples)
    })
    .collect::<Vec<_>>();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

fn written_block(dir: &Path) -> PathBuf {
    written_block_with(dir, ChunkEncoding::Xor)
}

fn written_block_with(dir: &Path, encoding: ChunkEncoding) -> PathBuf {
    let compaction = Compaction {
        level: 1,
        sources: vec![],
    };
    let meta = write_block(
        dir,
        sample_data().into_iter().map(Ok),
        0,
        300_000,
        compaction,
        encoding,
        120,
    )
    .unwrap();
    assert_eq!(meta.stats.series, 3);
    assert_eq!(meta.stats.samples, 900);
    let chunks_per_series = match encoding {
        ChunkEncoding::Xor => 3,
        ChunkEncoding::Columnar | ChunkEncoding::ColumnarFast => 1,
    };
    assert_eq!(meta.stats.chunks, 3 * chunks_per_series);
    dir.join(&meta.id)
}

fn bits(series: &[Series]) -> Vec<(String, Vec<(i64, u64)>)> {
    series
        .iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.samples
                    .iter()
                    .map(|x| (x.timestamp.0, x.value.to_bits()))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn a_written_block_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let block = Block::open(&written_block(dir.path())).unwrap();
    let all = block
        .select(&[Matcher::equal("__name__", "up")], i64::MIN, i64::MAX)
        .unwrap();
    let expected: Vec<Series> = sample_data()
        .into_iter()
        .map(|(labels, samples)| Series { labels, samples })
        .collect();
    assert_eq!(bits(&all), bits(&expected));

    let some = block
        .select(
            &[Matcher::new(MatchKind::Regex, "job", "a.*").unwrap()],
            10_000,
            12_000,
        )
        .unwrap();
    assert_eq!(some.len(), 2);
    assert_eq!(some[0].samples.len(), 3);
    let none = block
        .select(&[Matcher::equal("job", "nope")], i64::MIN, i64::MAX)
        .unwrap();
    assert!(none.is_empty());
    let negative = block
        .select(&[Matcher::not_equal("job", "api")], i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(negative.len(), 1);
    assert_eq!(
        block
            .label_values("i", &[], i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(
        block
            .label_names(&[Matcher::equal("job", "db")], 0, 1000)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["__name__", "i", "job"]
    );
    assert!(block
        .select(&[Matcher::equal("job", "db")], 300_000, 400_000)
        .unwrap()
        .is_empty());
}

#[test]
fn a_columnar_block_reads_back_exactly_and_is_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let xor = Block::open(&written_block_with(dir.path(), ChunkEncoding::Xor)).unwrap();
    let columnar = Block::open(&written_block_with(dir.path(), ChunkEncoding::Columnar)).unwrap();
    let matchers = [Matcher::equal("__name__", "up")];
    assert_eq!(
        bits(&columnar.select(&matchers, i64::MIN, i64::MAX).unwrap()),
        bits(&xor.select(&matchers, i64::MIN, i64::MAX).unwrap())
    );
    assert_eq!(
        bits(&columnar.select(&matchers, 10_500, 12_000).unwrap()),
        bits(&xor.select(&matchers, 10_500, 12_000).unwrap())
    );
    assert!(columnar.size_bytes() < xor.size_bytes());
    let fast = Block::open(&written_block_with(dir.path(), ChunkEncoding::ColumnarFast)).unwrap();
    assert_eq!(
        bits(&fast.select(&matchers, i64::MIN, i64::MAX).unwrap()),
        bits(&xor.select(&matchers, i64::MIN, i64::MAX).unwrap())
    );
    assert!(fast.size_bytes() < xor.size_bytes());
}

#[test]
fn deletions_are_tombstoned_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_block(dir.path());
    let block = Block::open(&path).unwrap();
    assert_eq!(
        block
            .delete(&[Matcher::equal("i", "1")], 0, 99_000)
            .unwrap(),
        1
    );
    drop(block);
    let block = Block::open(&path).unwrap();
    let series = block
        .select(&[Matcher::equal("i", "1")], i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(series[0].samples.len(), 200);
    assert_eq!(series[0].samples[0].timestamp.0, 100_000);
    // Label queries see deletions: a fully deleted series is gone from them.
    let values = |block: &Block, mint, maxt| -> Vec<String> {
        block
            .label_values("i", &[], mint, maxt)
            .unwrap()
            .into_iter()
            .collect()
    };
    assert_eq!(values(&block, 0, 99_000), ["2", "3"]);
    block
        .delete(&[Matcher::equal("i", "2")], i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(values(&block, i64::MIN, i64::MAX), ["1", "3"]);
}

fn flip(path: &Path, position: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position] ^= 0x08;
    fs::write(path, bytes).unwrap();
}

fn corruption_of(path: &Path) -> (PathBuf, u64, String) {
    match Block::open(path) {
        Err(TsdbError::Corruption {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_bit_flip_in_a_chunk_file_names_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_block(dir.path());
    let chunk_file = path.join(CHUNKS_DIR).join("000001");
    let size = fs::metadata(&chunk_file).unwrap().len() as usize;
    flip(&chunk_file, size / 2);
    let (file, offset, reason) = corruption_of(&path);
    assert_eq!(file, chunk_file);
    assert!(
        offset as usize <= size / 2 && offset > 0,
        "offset {offset} of the damaged chunk"
    );
    assert!(reason.contains("chunk checksum"), "{reason}");
}

#[test]
fn a_bit_flip_in_the_index_names_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_block(dir.path());
    let index = path.join(INDEX_FILE);
    flip(&index, 10);
    let (file, offset, reason) = corruption_of(&path);
    assert_eq!(file, index);
    assert_eq!(offset, 0, "the symbols section starts the file");
    assert!(reason.contains("section 0"), "{reason}");
}

#[test]
fn a_bit_flip_in_meta_json_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_block(dir.path());
    let meta = path.join(META_FILE);
    let text = fs::read_to_string(&meta).unwrap();
    let position = text.find("\"max_time\"").unwrap() + 13;
    flip(&meta, position);
    let (file, _, _) = corruption_of(&path);
    assert_eq!(file, meta);
}

#[test]
fn meta_json_is_readable_json_with_a_footer() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_block(dir.path());
    let value: serde_json::Value =
        serde_json::from_slice(&fs::read(path.join(META_FILE)).unwrap()).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["footer"]["magic"], "LKMETA01");
    assert_eq!(value["stats"]["samples"], 900);
}
