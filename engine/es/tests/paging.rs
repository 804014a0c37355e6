//! Raw reads page with `search_after` over a point in time (each dialect's API and
//! tie-breaker) and give exactly what a sorted scroll gives, with pages much smaller than the
//! data and the ties `search_after` must not skip or repeat: many series of one metric at the
//! same timestamps, SOFALookout's duplicate documents (same series and time, automatic ids)
//! and one sample stored in two indices after a rollover. Runs against `noida` and `osmem`.

mod support;

use std::collections::BTreeMap;

use lookout_es::{EsStats, EsStorage, ReadPaging};
use lookout_model::{Labels, Matcher, Sample, METRIC_NAME_LABEL};
use lookout_storage::{collect_series, SelectRequest, Series, Storage, WriteBatch};
use support::EsPeer;

const BASE_MS: i64 = 1_700_000_000_000;
const PAGE: usize = 7;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).expect("valid labels")
}

async fn read_all(storage: &EsStorage, matchers: Vec<Matcher>) -> Vec<Series> {
    let stream = storage
        .select(SelectRequest::new(matchers, i64::MIN, i64::MAX))
        .await
        .expect("select");
    collect_series(stream).await.expect("stream")
}

/// What one read did.
fn delta(before: EsStats, after: EsStats) -> EsStats {
    EsStats {
        search_after_pages: after.search_after_pages - before.search_after_pages,
        scroll_pages: after.scroll_pages - before.scroll_pages,
        raw_hits: after.raw_hits - before.raw_hits,
        raw_selects: after.raw_selects - before.raw_selects,
        ..EsStats::default()
    }
}

async fn search_after_equals_scroll(kind: &'static str) {
    let Some(peer) = EsPeer::start(kind) else {
        return;
    };
    let paged = EsStorage::open(
        peer.options("paging")
            .scroll_page(PAGE)
            .rollover(None, Some(1), None)
            .retention(None, 0),
    )
    .await
    .unwrap();
    let mut expected: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();

    // Five series of one metric at the same twelve timestamps: ties on (name, time).
    let mut batch = WriteBatch::new();
    for host in 0..5 {
        let series = labels(&[("__name__", "tied"), ("host", &format!("h{host}"))]);
        let samples: Vec<Sample> = (0..12)
            .map(|i| Sample::new(BASE_MS + i * 1_000, (i * 10 + host) as f64))
            .collect();
        expected.insert(series.clone(), samples.clone());
        batch.push(series, samples);
    }
    let outcome = paged.write(batch).await.unwrap();
    assert_eq!(outcome.accepted, 60, "{:?}", outcome.messages);
    let report = paged.run_maintenance().await.unwrap();
    assert!(
        report.rolled_over_to.is_some(),
        "60 documents exceed max_docs 1"
    );

    // After the rollover: four samples of h0 written again (now in both indices) and
    // three new ones of h1.
    let mut batch = WriteBatch::new();
    let h0 = labels(&[("__name__", "tied"), ("host", "h0")]);
    batch.push(
        h0,
        (0..4)
            .map(|i| Sample::new(BASE_MS + i * 1_000, (i * 10) as f64))
            .collect(),
    );
    let h1 = labels(&[("__name__", "tied"), ("host", "h1")]);
    let later: Vec<Sample> = (12..15)
        .map(|i| Sample::new(BASE_MS + i * 1_000, (i * 10 + 1) as f64))
        .collect();
    expected.get_mut(&h1).unwrap().extend(later.iter().copied());
    batch.push(h1, later);
    assert_eq!(paged.write(batch).await.unwrap().accepted, 7);

    // SOFALookout's own documents: every sample twice, with automatic ids.
    let mut bulk = String::new();
    let mut legacy = Vec::new();
    for i in 0..9 {
        let time = BASE_MS + i * 1_000;
        for _copy in 0..2 {
            bulk.push_str(&format!(
                "{{\"index\":{{}}}}\n{{\"id\":\"tied\",\"tags\":[\"host=legacy\"],\
                 \"time\":{time},\"value\":{i}}}\n"
            ));
        }
        legacy.push(Sample::new(time, i as f64));
    }
    expected.insert(labels(&[("__name__", "tied"), ("host", "legacy")]), legacy);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{}/_bulk?refresh=true",
            peer.url,
            paged.write_alias()
        ))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"], false, "{body}");
    let documents = 60 + 7 + 18;

    let expected: Vec<Series> = expected
        .into_iter()
        .map(|(labels, samples)| Series { labels, samples })
        .collect();
    let matchers = vec![Matcher::equal(METRIC_NAME_LABEL, "tied")];

    let before = paged.stats();
    assert_eq!(read_all(&paged, matchers.clone()).await, expected);
    let used = delta(before, paged.stats());
    assert_eq!(used.raw_hits, documents, "every document once: {used:?}");
    assert_eq!(used.scroll_pages, 0, "{used:?}");
    assert_eq!(
        used.search_after_pages,
        documents.div_ceil(PAGE as u64),
        "{used:?}"
    );

    for (paging, page) in [(ReadPaging::Scroll, PAGE), (ReadPaging::Scroll, 5_000)] {
        let scrolled = EsStorage::open(
            peer.options("paging")
                .scroll_page(page)
                .read_paging(paging)
                .auto_operations(false),
        )
        .await
        .unwrap();
        let before = scrolled.stats();
        assert_eq!(read_all(&scrolled, matchers.clone()).await, expected);
        let used = delta(before, scrolled.stats());
        assert_eq!(used.raw_hits, documents, "{used:?}");
        assert_eq!(used.search_after_pages, 0, "{used:?}");
        assert!(
            used.scroll_pages >= documents.div_ceil(page as u64),
            "{used:?}"
        );
    }

    // A page exactly as large as the data: the last page is full, one more (empty) ends it.
    let exact = EsStorage::open(
        peer.options("paging")
            .scroll_page(documents as usize)
            .auto_operations(false),
    )
    .await
    .unwrap();
    let before = exact.stats();
    assert_eq!(read_all(&exact, matchers).await, expected);
    let used = delta(before, exact.stats());
    assert_eq!((used.raw_hits, used.search_after_pages), (documents, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noida_search_after_equals_scroll() {
    search_after_equals_scroll("noida").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmem_search_after_equals_scroll() {
    search_after_equals_scroll("osmem").await;
}
