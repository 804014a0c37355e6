//! The data set every target receives: [`lookout_benches::mixed_series`] (node_exporter plus an
//! application with resetting counters and classic histograms), scraped every 15 s, encoded
//! once as remote-write 1.0 requests before anything is timed.
//!
//! Layout of the requests: the series are cut into groups of [`SERIES_PER_REQUEST`]; group
//! `g` always travels over connection `g % connections`, so every series' samples arrive in
//! time order (as with Prometheus's sharded remote-write queues). Each request carries
//! [`ROUNDS_PER_REQUEST`] scrapes of its group. The requests are grouped into segments of
//! [`ROUNDS_PER_SEGMENT`] scrapes; a target receives one whole segment (all connections, in
//! parallel) before the next target gets its turn, and no connection is ever more than one
//! segment (30 min) ahead of another, well inside Prometheus's one-hour window for samples
//! older than its newest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_benches::{mixed_series, value_at, SeriesSpec, SCRAPE_INTERVAL_MS};
use lookout_model::Sample;
use lookout_storage::WriteBatch;

/// Series per remote-write request.
pub const SERIES_PER_REQUEST: usize = 250;
/// Scrapes per request: 2 minutes, so a request holds 250 × 8 = 2000 samples.
pub const ROUNDS_PER_REQUEST: u64 = 8;
/// Scrapes per segment: 30 minutes.
pub const ROUNDS_PER_SEGMENT: u64 = 120;
/// Samples are stamped this many milliseconds after their 15 s boundary, so that no sample
/// ever sits on the edge of a query window (queries use whole seconds), where Prometheus 2.42
/// (closed windows), Prometheus 3.x semantics (Lookout) and VictoriaMetrics would differ.
pub const SAMPLE_OFFSET_MS: i64 = 437;

/// The metrics whose latest samples tell whether a target has made everything queryable
/// (see [`Dataset::probe_query`]): one per label layout, so that no two of their series
/// share a label set once `__name__` is dropped.
const PROBE_METRICS: [&str; 7] = [
    "node_cpu_seconds_total",
    "node_interrupts_total",
    "node_network_receive_bytes_total",
    "node_filesystem_avail_bytes",
    "node_disk_reads_completed_total",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
];

/// A `--scale`: how many series, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// 10k series × 6 h (14.4M samples).
    Small,
    /// 100k series × 6 h (144M samples).
    Medium,
    /// 1M series × 1 h (240M samples; six hours would not fit in memory here).
    Large,
}

impl Scale {
    /// Series and hours of data.
    pub fn size(self) -> (usize, u64) {
        match self {
            Scale::Small => (10_000, 6),
            Scale::Medium => (100_000, 6),
            Scale::Large => (1_000_000, 1),
        }
    }
}

/// One segment of requests: `per_connection[c]` is what connection `c` sends, in order.
#[derive(Debug)]
pub struct Segment {
    /// Request bodies (snappy-compressed protobuf) per connection.
    pub per_connection: Vec<Vec<Vec<u8>>>,
}

/// The encoded data set and what queries need to know about it.
#[derive(Debug)]
pub struct Dataset {
    /// Series written.
    pub series: usize,
    /// Samples written (series × scrapes).
    pub samples: u64,
    /// Bytes of all request bodies.
    pub payload_bytes: u64,
    /// Timestamp of the first scrape.
    pub first_ms: i64,
    /// Timestamp of the last scrape.
    pub last_ms: i64,
    /// The segments, in time order.
    pub segments: Vec<Segment>,
    /// Series of the [`PROBE_METRICS`].
    pub probe_series: usize,
    /// An `instance` label value present in the data (the first host's).
    pub first_instance: String,
    /// A `cluster` label value present in the data (the first cluster's).
    pub first_cluster: String,
}

impl Dataset {
    /// Generates `series` series over `hours` hours, ending about now, encoded for
    /// `connections` connections, using every core.
    pub fn generate(series_count: usize, hours: f64, connections: usize) -> Dataset {
        let series = mixed_series(series_count);
        let rounds = ((hours * 3_600_000.0 / SCRAPE_INTERVAL_MS as f64).round() as u64).max(1);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        let span_ms = rounds as i64 * SCRAPE_INTERVAL_MS;
        // A whole minute, far enough back that the last scrape is in the past.
        let first_ms = (now_ms - span_ms) / 60_000 * 60_000 + SAMPLE_OFFSET_MS;
        let segment_starts: Vec<u64> = (0..rounds).step_by(ROUNDS_PER_SEGMENT as usize).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_worker = segment_starts.len().div_ceil(threads).max(1);
        let mut segments: Vec<Option<Segment>> = segment_starts.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            for (worker, slots) in segments.chunks_mut(per_worker).enumerate() {
                let series = &series;
                let starts = &segment_starts[worker * per_worker..];
                scope.spawn(move || {
                    for (slot, &start) in slots.iter_mut().zip(starts) {
                        let end = (start + ROUNDS_PER_SEGMENT).min(rounds);
                        *slot = Some(encode_segment(series, first_ms, start..end, connections));
                    }
                });
            }
        });
        let segments: Vec<Segment> = segments.into_iter().flatten().collect();
        let payload_bytes = segments
            .iter()
            .flat_map(|segment| segment.per_connection.iter().flatten())
            .map(|body| body.len() as u64)
            .sum();
        let probe_series = series
            .iter()
            .filter(|spec| {
                spec.labels
                    .metric_name()
                    .is_some_and(|name| PROBE_METRICS.contains(&name))
            })
            .count();
        let label = |name: &str| {
            series
                .first()
                .and_then(|spec| spec.labels.get(name))
                .unwrap_or_default()
                .to_owned()
        };
        Dataset {
            series: series.len(),
            samples: series.len() as u64 * rounds,
            payload_bytes,
            first_ms,
            last_ms: first_ms + (rounds as i64 - 1) * SCRAPE_INTERVAL_MS,
            segments,
            probe_series,
            first_instance: label("instance"),
            first_cluster: label("cluster"),
        }
    }

    /// An instant query that counts the [`PROBE_METRICS`] series whose last scrape is
    /// visible; evaluate it at [`Dataset::probe_time_ms`] and expect
    /// [`Dataset::probe_series`].
    pub fn probe_query(&self) -> String {
        format!(
            "count(last_over_time({{__name__=~\"{}\"}}[10s]))",
            PROBE_METRICS.join("|")
        )
    }

    /// One second after the last scrape: only the last scrape is inside the probe's window.
    pub fn probe_time_ms(&self) -> i64 {
        self.last_ms + 1000
    }
}

/// Encodes scrapes `rounds` of all series, spread over `connections`.
fn encode_segment(
    series: &[SeriesSpec],
    first_ms: i64,
    rounds: std::ops::Range<u64>,
    connections: usize,
) -> Segment {
    let mut per_connection: Vec<Vec<Vec<u8>>> = vec![Vec::new(); connections];
    let mut request_start = rounds.start;
    while request_start < rounds.end {
        let request_end = (request_start + ROUNDS_PER_REQUEST).min(rounds.end);
        for (group, chunk) in series.chunks(SERIES_PER_REQUEST).enumerate() {
            let first_index = group * SERIES_PER_REQUEST;
            let mut batch = WriteBatch::new();
            for (offset, spec) in chunk.iter().enumerate() {
                let index = first_index + offset;
                let points = (request_start..request_end)
                    .map(|round| {
                        let timestamp = first_ms + round as i64 * SCRAPE_INTERVAL_MS;
                        Sample::new(timestamp, value_at(spec.kind, index, round))
                    })
                    .collect();
                batch.push(spec.labels.clone(), points);
            }
            per_connection[group % connections].push(lookout_gateway::remote_write::encode(&batch));
        }
        request_start = request_end;
    }
    Segment { per_connection }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_gateway::{remote_write, DecodeLimits};

    #[test]
    fn every_sample_is_sent_once_in_time_order_per_series() {
        let dataset = Dataset::generate(1_000, 1.0, 3);
        assert_eq!(dataset.samples, 1_000 * 240);
        assert_eq!(dataset.segments.len(), 2);
        let mut last_seen = std::collections::HashMap::new();
        let mut total = 0u64;
        for segment in &dataset.segments {
            for bodies in &segment.per_connection {
                for body in bodies {
                    let decoded = remote_write::decode(body, &DecodeLimits::default()).unwrap();
                    for series in decoded.batch.series {
                        for sample in &series.samples {
                            let previous =
                                last_seen.insert(series.labels.clone(), sample.timestamp);
                            assert!(previous.is_none_or(|previous| previous < sample.timestamp));
                            total += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(total, dataset.samples);
        assert_eq!(last_seen.len(), 1_000);
        assert!(last_seen.values().all(|last| last.0 == dataset.last_ms));
    }
}
