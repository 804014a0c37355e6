//! The storage conformance kit against the native engine, with and without a WAL.

use lookout_storage::testkit::Fixture;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = TsdbOptions::new(dir.path()).fsync(FsyncPolicy::Never);
    let tsdb = Tsdb::open(options).expect("the store opens");
    Fixture::new(tsdb, dir)
}

lookout_storage::storage_conformance_tests!(fixture);

mod in_memory {
    use super::*;

    async fn fixture() -> Fixture {
        let tsdb = Tsdb::in_memory(Default::default()).expect("the store opens");
        Fixture::new(tsdb, ())
    }

    lookout_storage::storage_conformance_tests!(fixture);
}

/// Blocks of one minute: the kit's writes span minutes to hours, so most of its data is cut
/// into blocks while it runs and every read merges blocks with the head.
mod with_blocks {
    use super::*;

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = TsdbOptions::new(dir.path())
            .fsync(FsyncPolicy::Never)
            .block_duration_ms(60_000);
        let tsdb = Tsdb::open(options).expect("the store opens");
        Fixture::new(tsdb, dir)
    }

    lookout_storage::storage_conformance_tests!(fixture);
}
