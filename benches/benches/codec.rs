//! `codec/xor/encode` and `codec/xor/decode`: the chunk codec on node_exporter-like chunks
//! (120 samples, 15 s apart with jitter; counters, gauges and constants); `codec/columnar/*`:
//! the compacted blocks' encoding on chunks of 480 such samples (2 h).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookout_benches::codec_chunks;
use lookout_tsdb::chunk::{columnar, XorAppender, XorChunk, MAX_SAMPLES_PER_CHUNK};

/// Chunks per iteration: 1000 × 120 = 120k samples.
const CHUNKS: usize = 1000;

fn encode(chunks: &[Vec<(i64, f64)>]) -> Vec<XorChunk> {
    chunks
        .iter()
        .map(|samples| {
            let mut appender = XorAppender::new();
            for &(t, v) in samples {
                appender.append(t, v);
            }
            appender.finish()
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let chunks = codec_chunks(CHUNKS, MAX_SAMPLES_PER_CHUNK, 0x5EED);
    let samples: usize = chunks.iter().map(Vec::len).sum();
    let encoded = encode(&chunks);
    let encoded_bytes: usize = encoded.iter().map(|chunk| chunk.bytes().len()).sum();
    // Check the round trip once, outside timing, so a broken codec cannot bench fast.
    for (chunk, original) in encoded.iter().zip(&chunks) {
        let decoded: Vec<(i64, f64)> = chunk.iter().collect();
        assert_eq!(decoded.len(), original.len());
        for (got, want) in decoded.iter().zip(original) {
            assert!(got.0 == want.0 && got.1.to_bits() == want.1.to_bits());
        }
    }
    eprintln!(
        "codec/xor: {CHUNKS} chunks, {samples} samples, {encoded_bytes} bytes encoded \
         ({:.2} bytes/sample)",
        encoded_bytes as f64 / samples as f64
    );

    let mut group = c.benchmark_group("codec/xor");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(samples as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            for samples in black_box(&chunks) {
                let mut appender = XorAppender::new();
                for &(t, v) in samples {
                    appender.append(t, v);
                }
                black_box(appender.finish());
            }
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            let mut last_t = 0;
            for chunk in black_box(&encoded) {
                for (t, v) in chunk.iter() {
                    sum += v;
                    last_t = t;
                }
            }
            black_box((sum, last_t))
        })
    });
    group.finish();
}

/// Samples per columnar chunk here: one series over a 2 h block at 15 s.
const COLUMNAR_SAMPLES: usize = 480;
/// Columnar chunks per iteration: 250 × 480 = 120k samples, as the Gorilla group.
const COLUMNAR_CHUNKS: usize = 250;

fn columnar_codec(c: &mut Criterion) {
    let chunks = codec_chunks(COLUMNAR_CHUNKS, COLUMNAR_SAMPLES, 0x5EED);
    let samples: usize = chunks.iter().map(Vec::len).sum();
    let encoded: Vec<Vec<u8>> = chunks.iter().map(|chunk| columnar::encode(chunk)).collect();
    for (bytes, original) in encoded.iter().zip(&chunks) {
        let decoded = columnar::decode(bytes).expect("a chunk just encoded");
        assert_eq!(decoded.len(), original.len());
        for (got, want) in decoded.iter().zip(original) {
            assert!(got.0 == want.0 && got.1.to_bits() == want.1.to_bits());
        }
    }
    let encoded_bytes: usize = encoded.iter().map(Vec::len).sum();
    eprintln!(
        "codec/columnar: {COLUMNAR_CHUNKS} chunks, {samples} samples, {encoded_bytes} bytes \
         encoded ({:.2} bytes/sample)",
        encoded_bytes as f64 / samples as f64
    );
    let mut group = c.benchmark_group("codec/columnar");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(samples as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            for chunk in black_box(&chunks) {
                black_box(columnar::encode(chunk));
            }
        })
    });
    group.bench_function("encode_fast", |b| {
        b.iter(|| {
            for chunk in black_box(&chunks) {
                black_box(columnar::encode_fast(chunk));
            }
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            for bytes in black_box(&encoded) {
                black_box(columnar::decode(bytes).expect("valid"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec, columnar_codec);
criterion_main!(benches);
