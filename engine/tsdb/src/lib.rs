//! Lookout's native time-series engine.
//!
//! What it owns: the Gorilla chunk codec ([`chunk`]), the in-memory head with its sharded
//! series and inverted index ([`head`], [`index`], [`symbols`]), and the write-ahead log
//! ([`wal`]), tied together by [`Tsdb`], which implements [`lookout_storage::Storage`].
//! On-disk formats are specified in `docs/format/`.
//!
//! It depends on `lookout-model` and `lookout-storage` only; nothing of HTTP, PromQL or the
//! gateways belongs here, and no other engine type leaks through the `Storage` trait.

pub mod block;
pub mod chunk;
pub mod compact;
mod db;
pub mod encoding;
mod error;
pub mod head;
pub mod index;
mod mmap;
pub mod read_only;
pub mod symbols;
pub mod verify;
pub mod wal;

pub use db::{TruncateReport, Tsdb, TsdbOptions, DEFAULT_FSYNC_INTERVAL};
pub use error::{Result, TsdbError};
pub use head::{
    Head, HeadOptions, HeadStats, SeriesRef, DEFAULT_MAX_FUTURE_MS, DEFAULT_OUT_OF_ORDER_WINDOW_MS,
};
pub use read_only::ReadOnlyStore;
pub use wal::{FsyncPolicy, ReplayReport, WalCorruption, WalOptions};
