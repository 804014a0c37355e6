//! The storage conformance kit against both Elasticsearch dialects: `noida` (Elasticsearch 8)
//! and `osmem` (OpenSearch), each started fresh for every case.

mod support;

use lookout_storage::testkit::Fixture;
use support::EsPeer;

/// A fixture on a fresh server of `kind`, or `None` (the case is skipped) when it is missing.
async fn fixture_on(kind: &'static str) -> Option<Fixture> {
    let peer = EsPeer::start(kind)?;
    let storage = peer.open("kit").await;
    Some(Fixture::new(storage, peer))
}

mod noida {
    use super::*;

    async fn fixture() -> Option<Fixture> {
        fixture_on("noida").await
    }

    lookout_storage::storage_conformance_tests!(fixture);
}

mod osmem {
    use super::*;

    async fn fixture() -> Option<Fixture> {
        fixture_on("osmem").await
    }

    lookout_storage::storage_conformance_tests!(fixture);
}
