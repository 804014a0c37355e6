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
