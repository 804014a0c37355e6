//! Lookout's protocol decoders: pure functions from request bytes to a
//! [`lookout_storage::WriteBatch`], with every size limit applied while decoding.
//!
//! No HTTP types, no I/O and no storage calls here: listeners (in `lookout-api` and the
//! server) read the body, call a decoder, and hand the batch to a `Storage`.
//!
//! Modules: [`remote_write`] (Prometheus remote write 1.0), [`remote_write2`] (remote write
//! 2.0, symbols table and per-series metadata), [`lookout`] (SOFALookout's SDK,
//! `/lookout/metrics` and Prometheus push protocols), [`exposition`] (the Prometheus text
//! format, line by line), [`opentsdb`] (OpenTSDB's `/api/put` JSON and telnet `put` lines),
//! [`pushgateway`] (the Pushgateway API's grouping keys, bodies and groups), [`metricbeat`]
//! (Elasticsearch `_bulk` bodies of Metricbeat 6 documents), [`scrape`] (pull: scrape
//! configuration, relabelling, targets, scraped bodies to samples and staleness),
//! [`pipeline`] (what every protocol shares after decoding: common tags).

pub mod exposition;
pub mod lookout;
pub mod metricbeat;
pub mod opentsdb;
pub mod pipeline;
pub mod pushgateway;
pub mod remote_write;
pub mod remote_write2;
pub mod scrape;

/// Size limits every decoder applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted body, compressed, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted body after decompression, in bytes.
    pub max_decompressed_bytes: usize,
    /// Most series in one request.
    pub max_series_per_request: usize,
}

impl Default for DecodeLimits {
    /// 32 MiB compressed, 256 MiB decompressed, 1M series per request.
    fn default() -> Self {
        DecodeLimits {
            max_body_bytes: 32 << 20,
            max_decompressed_bytes: 256 << 20,
            max_series_per_request: 1_000_000,
        }
    }
}

/// Why a raw (block format) snappy body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnappyError {
    /// Not snappy block format.
    Invalid(String),
    /// The header announces more than the limit; nothing was decompressed.
    TooLarge { size: usize, limit: usize },
}

/// Decompresses a raw snappy block, refusing before any work when the announced size is
/// above `max_decompressed_bytes`.
/// Raw (block format) snappy compression, as remote write bodies use.
pub fn compress_snappy_block(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("compressing into memory cannot fail")
}

pub(crate) fn decompress_snappy_block(
    body: &[u8],
    max_decompressed_bytes: usize,
) -> Result<Vec<u8>, SnappyError> {
    let size =
        snap::raw::decompress_len(body).map_err(|error| SnappyError::Invalid(error.to_string()))?;
    if size > max_decompressed_bytes {
        return Err(SnappyError::TooLarge {
            size,
            limit: max_decompressed_bytes,
        });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|error| SnappyError::Invalid(error.to_string()))
}
