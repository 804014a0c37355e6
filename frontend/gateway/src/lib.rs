//! Lookout's protocol decoders: pure functions from request bytes to a
//! [`lookout_storage::WriteBatch`], with every size limit applied while decoding.
//!
//! No HTTP types, no I/O and no storage calls here: listeners (in `lookout-api` and the
//! server) read the body, call a decoder, and hand the batch to a `Storage`.

pub mod remote_write;

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
