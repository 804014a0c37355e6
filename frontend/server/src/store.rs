//! What the API learns about the native store beyond the `Storage` trait: head figures and
//! WAL replay for the status endpoints, snapshots and tombstone cleaning for the admin ones.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use lookout_api::{Admin, AdminError, HeadStatus, StoreStatus, WalReplayStatus};
use lookout_tsdb::Tsdb;

/// Status figures of the native store.
pub struct TsdbStatus(pub Tsdb);

impl StoreStatus for TsdbStatus {
    fn head(&self) -> HeadStatus {
        let stats = self.0.head().stats();
        HeadStatus {
            num_series: stats.series,
            chunk_count: stats.chunks,
            min_time: stats.min_time,
            max_time: stats.max_time,
        }
    }

    fn wal_replay(&self) -> WalReplayStatus {
        // Replay finishes before the server listens: the current segment is the last one.
        let segments = &self.0.replay_report().segments;
        let first = segments.first().map_or(0, |segment| *segment as i64);
        let last = segments.last().map_or(0, |segment| *segment as i64);
        WalReplayStatus {
            min: first,
            max: last,
            current: last,
        }
    }

    fn corruption_count(&self) -> i64 {
        let wal_damage = i64::from(self.0.replay_report().corruption.is_some());
        self.0.quarantined().len() as i64 + wal_damage
    }
}

/// The admin endpoints over the native store; snapshots go to `<data>/snapshots/<name>`.
pub struct TsdbAdmin {
    tsdb: Tsdb,
    snapshots: PathBuf,
}

impl TsdbAdmin {
    pub fn new(tsdb: Tsdb, data_dir: &Path) -> TsdbAdmin {
        TsdbAdmin {
            tsdb,
            snapshots: data_dir.join("snapshots"),
        }
    }
}

impl Admin for TsdbAdmin {
    fn snapshot(&self, skip_head: bool) -> Result<String, AdminError> {
        // Prometheus' naming: UTC time, then 16 random hex digits.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!("{}-{random:016x}", compact_utc_now());
        let destination = self.snapshots.join(&name);
        self.tsdb
            .snapshot(&destination, !skip_head)
            .map_err(|error| AdminError(error.to_string()))?;
        tracing::info!(snapshot = %destination.display(), skip_head, "snapshot written");
        Ok(name)
    }

    fn clean_tombstones(&self) -> Result<(), AdminError> {
        let rewritten = self
            .tsdb
            .clean_tombstones()
            .map_err(|error| AdminError(error.to_string()))?;
        tracing::info!(blocks = rewritten, "tombstones cleaned");
        Ok(())
    }
}

/// `20060102T150405Z` for now.
fn compact_utc_now() -> String {
    let whole_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(whole_seconds);
    lookout_api::format_rfc3339(time).replace(['-', ':'], "")
}
