//! Sending the data set: one segment at a time, each connection on a thread of its own
//! sending its requests in order and waiting for each answer (as a remote-write shard does).

use std::time::{Duration, Instant};

use crate::data::Segment;

/// What sending one segment to one target gave.
#[derive(Debug, Default)]
pub struct SegmentOutcome {
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Requests answered with something other than 2xx, or not answered.
    pub failed_requests: u64,
    /// The first failure's status and message.
    pub first_error: Option<String>,
}

/// Sends `segment` to `url` over `segment.per_connection.len()` connections in parallel.
pub fn send_segment(
    client: &reqwest::blocking::Client,
    url: &str,
    segment: &Segment,
) -> SegmentOutcome {
    let started = Instant::now();
    let outcomes: Vec<SegmentOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = segment
            .per_connection
            .iter()
            .map(|bodies| scope.spawn(move || send_in_order(client, url, bodies)))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a sender thread panicked"))
            .collect()
    });
    let mut total = SegmentOutcome {
        elapsed: started.elapsed(),
        ..SegmentOutcome::default()
    };
    for outcome in outcomes {
        total.failed_requests += outcome.failed_requests;
        total.first_error = total.first_error.or(outcome.first_error);
    }
    total
}

fn send_in_order(
    client: &reqwest::blocking::Client,
    url: &str,
    bodies: &[Vec<u8>],
) -> SegmentOutcome {
    let mut outcome = SegmentOutcome::default();
    for body in bodies {
        let response = client
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone())
            .send();
        let failure = match response {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => {
                let status = response.status();
                let text = response.text().unwrap_or_default();
                Some(format!("{status}: {}", text.trim()))
            }
            Err(error) => Some(error.to_string()),
        };
        if let Some(message) = failure {
            outcome.failed_requests += 1;
            outcome.first_error.get_or_insert(message);
        }
    }
    outcome
}
