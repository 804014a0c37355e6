//! Shared input for the criterion benches in `benches/benches/` and the side-by-side `compare`
//! tool: a tiny deterministic PRNG, node_exporter-like series labels and values (plus, for the
//! comparison, an application's request counters that reset and classic histograms), and a
//! resident-set-size probe.
//!
//! Everything here is deterministic so that two runs bench the same bytes.

use lookout_model::{Labels, Sample};
use lookout_storage::WriteBatch;

/// Milliseconds between scrapes.
pub const SCRAPE_INTERVAL_MS: i64 = 15_000;
/// The first timestamp of generated data (2023-11-14, in ms).
pub const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;
/// Series each simulated node_exporter instance exposes.
pub const SERIES_PER_INSTANCE: usize = 200;
/// Instances per `cluster` label value, so one cluster selects exactly 1000 series.
pub const INSTANCES_PER_CLUSTER: usize = 5;
/// Series per `cluster` label value.
pub const SERIES_PER_CLUSTER: usize = SERIES_PER_INSTANCE * INSTANCES_PER_CLUSTER;
/// The `job` label of every generated series.
pub const JOB: &str = "node-exporter";
/// Labels per generated series, `__name__` included.
pub const LABELS_PER_SERIES: usize = 10;

/// xorshift64*: a tiny deterministic PRNG (no `rand` needed).
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from a seed (zero is replaced, xorshift must not start at zero).
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// How a series' value evolves from scrape to scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A monotonic integer counter.
    Counter,
    /// A float with few significant digits that wanders.
    Gauge,
    /// The same value at every scrape.
    Constant,
    /// An application's integer counter: monotonic, but back to (near) zero whenever the
    /// application on host number `host` restarts (every two to four hours, see
    /// [`rounds_since_restart`]).
    ResettingCounter { host: u32 },
    /// One series of a classic histogram (number `histogram` of host `host`): a cumulative
    /// bucket, the `_sum` or the `_count`. Buckets never exceed the next larger one, the `+Inf`
    /// bucket equals `_count`, and all of them reset with the application.
    Histogram {
        host: u32,
        histogram: u32,
        part: HistogramPart,
    },
}

/// Which series of a classic histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramPart {
    /// The `_bucket` series with `le` = `HISTOGRAM_BUCKETS[index]`, or `+Inf` past the end.
    Bucket(u8),
    /// The `_sum` series.
    Sum,
    /// The `_count` series.
    Count,
}

/// Upper bounds (seconds) of the classic histograms' finite buckets; `+Inf` follows.
pub const HISTOGRAM_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Handlers of the simulated application; one histogram per handler.
const APP_HANDLERS: [&str; 4] = [
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/write",
    "/metrics",
];
const APP_CODES: [&str; 3] = ["200", "400", "500"];
/// Series each simulated application exposes beside its host's node_exporter: 4 handlers × 3
/// codes of `http_requests_total` and, per handler, 11 buckets, `_sum` and `_count` of
/// `http_request_duration_seconds`.
pub const APP_SERIES_PER_HOST: usize =
    APP_HANDLERS.len() * (APP_CODES.len() + HISTOGRAM_BUCKETS.len() + 1 + 2);
/// Series per host in [`mixed_series`]: node_exporter's plus the application's.
pub const MIXED_SERIES_PER_HOST: usize = SERIES_PER_INSTANCE + APP_SERIES_PER_HOST;
/// The `job` label of the application's series.
pub const APP_JOB: &str = "api-server";

/// One metric family of the simulated exporter: its name, how its values move, and the two
/// family-specific labels of each of its series.
struct Family {
    names: &'static [&'static str],
    kind: ValueKind,
    dims: fn(&mut Vec<(String, String)>),
}

const CPU_MODES: [&str; 8] = [
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];
const IRQ_TYPES: [&str; 8] = ["CAL", "LOC", "MCE", "NMI", "PMI", "RES", "TLB", "SPU"];
const NET_DEVICES: [&str; 4] = ["eth0", "eth1", "lo", "docker0"];
const FILESYSTEMS: [(&str, &str); 4] = [
    ("/dev/nvme0n1p1", "/"),
    ("/dev/nvme1n1", "/var/lib/containerd"),
    ("tmpfs", "/run"),
    ("/dev/nvme0n1p15", "/boot/efi"),
];
const DISKS: [&str; 4] = ["nvme0n1", "nvme1n1", "nvme2n1", "nvme3n1"];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "ap-southeast-2", "us-west-2"];
const ENVS: [&str; 2] = ["production", "staging"];

fn cpu_modes(out: &mut Vec<(String, String)>) {
    for cpu in 0..8 {
        for mode in CPU_MODES {
            out.push((cpu.to_string(), mode.to_owned()));
        }
    }
}

fn cpu_irqs(out: &mut Vec<(String, String)>) {
    for cpu in 0..8 {
        for kind in IRQ_TYPES {
            out.push((cpu.to_string(), kind.to_owned()));
        }
    }
}

fn net_devices(out: &mut Vec<(String, String)>) {
    for device in NET_DEVICES {
        out.push((device.to_owned(), "full".to_owned()));
    }
}

fn filesystems(out: &mut Vec<(String, String)>) {
    for (device, mountpoint) in FILESYSTEMS {
        out.push((device.to_owned(), mountpoint.to_owned()));
    }
}

fn disks(out: &mut Vec<(String, String)>) {
    for device in DISKS {
        out.push((device.to_owned(), "Amazon Elastic Block Store".to_owned()));
    }
}

/// Label names of the two family-specific labels, per family (same order as `FAMILIES`).
const DIM_NAMES: [(&str, &str); 6] = [
    ("cpu", "mode"),
    ("cpu", "type"),
    ("device", "duplex"),
    ("device", "mountpoint"),
    ("device", "mountpoint"),
    ("device", "model"),
];

/// 64 + 64 + 32 + 8 + 12 + 20 = 200 series per instance.
const FAMILIES: [Family; 6] = [
    Family {
        names: &["node_cpu_seconds_total"],
        kind: ValueKind::Counter,
        dims: cpu_modes,
    },
    Family {
        names: &["node_interrupts_total"],
        kind: ValueKind::Counter,
        dims: cpu_irqs,
    },
    Family {
        names: &[
            "node_network_receive_bytes_total",
            "node_network_transmit_bytes_total",
            "node_network_receive_packets_total",
            "node_network_transmit_packets_total",
            "node_network_receive_errs_total",
            "node_network_transmit_errs_total",
            "node_network_receive_drop_total",
            "node_network_transmit_drop_total",
        ],
        kind: ValueKind::Counter,
        dims: net_devices,
    },
    Family {
        names: &["node_filesystem_avail_bytes", "node_filesystem_free_bytes"],
        kind: ValueKind::Gauge,
        dims: filesystems,
    },
    Family {
        names: &[
            "node_filesystem_size_bytes",
            "node_filesystem_files",
            "node_filesystem_readonly",
        ],
        kind: ValueKind::Constant,
        dims: filesystems,
    },
    Family {
        names: &[
            "node_disk_reads_completed_total",
            "node_disk_writes_completed_total",
            "node_disk_read_bytes_total",
            "node_disk_written_bytes_total",
            "node_disk_io_time_seconds_total",
        ],
        kind: ValueKind::Counter,
        dims: disks,
    },
];

/// One generated series: its labels and how its value moves.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    /// Ten labels, node_exporter-like.
    pub labels: Labels,
    /// Value behaviour.
    pub kind: ValueKind,
}

/// One per-instance series template: metric name, value kind and the two extra labels.
type Template = (&'static str, ValueKind, [(&'static str, String); 2]);

/// The 200 per-instance series templates.
fn instance_template() -> Vec<Template> {
    let mut out = Vec::with_capacity(SERIES_PER_INSTANCE);
    let mut dims = Vec::new();
    for (family, (dim_a, dim_b)) in FAMILIES.iter().zip(DIM_NAMES) {
        dims.clear();
        (family.dims)(&mut dims);
        for name in family.names {
            for (a, b) in &dims {
                out.push((*name, family.kind, [(dim_a, a.clone()), (dim_b, b.clone())]));
            }
        }
    }
    assert_eq!(
        out.len(),
        SERIES_PER_INSTANCE,
        "the template must have 200 series"
    );
    out
}

/// The `cluster` label value of cluster number `cluster`.
pub fn cluster_name(cluster: usize) -> String {
    let region = REGIONS[cluster % REGIONS.len()];
    let env = ENVS[(cluster / REGIONS.len()) % ENVS.len()];
    format!("k8s-{env}-{region}-{cluster:03}")
}

/// The `instance` label value of instance number `host`.
pub fn instance_name(host: usize) -> String {
    let (b, c, d) = octets(host);
    format!("10.{b}.{c}.{d}:9100")
}

fn octets(host: usize) -> (usize, usize, usize) {
    (1 + host / 250, host % 250, 2 + (host * 7) % 250)
}

/// `count` node_exporter-like series (a multiple of 200 is best: 200 per instance, five
/// instances per cluster), each with exactly ten labels: `__name__`, `instance`, `job`, `env`,
/// `region`, `cluster`, `availability_zone`, `node` and two family-specific ones (`cpu`/`mode`,
/// `device`/`mountpoint`, ...). About 250 bytes of label text per series.
pub fn node_exporter_series(count: usize) -> Vec<SeriesSpec> {
    generate_series(count, false)
}

/// `count` series of hosts that each run node_exporter (the 200 series of
/// [`node_exporter_series`]) and an application ([`APP_SERIES_PER_HOST`] more, `job`
/// [`APP_JOB`]): `http_requests_total{handler, code}` counters and classic histograms
/// `http_request_duration_seconds_bucket{handler, le}` with `_sum` and `_count`
/// (`{handler}`), all of which reset when the application restarts. Buckets have ten labels,
/// `_sum` and `_count` nine. The first 200 series of each host are those of
/// [`node_exporter_series`], with the same values.
pub fn mixed_series(count: usize) -> Vec<SeriesSpec> {
    generate_series(count, true)
}

/// One application series of a host: metric name, value kind and its own labels (two, or
/// one for `_sum`/`_count`).
type AppSeries = (String, ValueKind, Vec<(&'static str, String)>);

/// The application's series of host `host`.
fn app_template(host: usize) -> Vec<AppSeries> {
    let host_id = host as u32;
    let mut out = Vec::with_capacity(APP_SERIES_PER_HOST);
    for handler in APP_HANDLERS {
        for code in APP_CODES {
            out.push((
                "http_requests_total".to_owned(),
                ValueKind::ResettingCounter { host: host_id },
                vec![("handler", handler.to_owned()), ("code", code.to_owned())],
            ));
        }
    }
    for (histogram, handler) in APP_HANDLERS.iter().enumerate() {
        let kind = |part| ValueKind::Histogram {
            host: host_id,
            histogram: histogram as u32,
            part,
        };
        for bucket in 0..=HISTOGRAM_BUCKETS.len() {
            let le = HISTOGRAM_BUCKETS
                .get(bucket)
                .map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
            out.push((
                "http_request_duration_seconds_bucket".to_owned(),
                kind(HistogramPart::Bucket(bucket as u8)),
                vec![("handler", (*handler).to_owned()), ("le", le)],
            ));
        }
        for (suffix, part) in [("sum", HistogramPart::Sum), ("count", HistogramPart::Count)] {
            out.push((
                format!("http_request_duration_seconds_{suffix}"),
                kind(part),
                vec![("handler", (*handler).to_owned())],
            ));
        }
    }
    debug_assert_eq!(out.len(), APP_SERIES_PER_HOST);
    out
}

fn generate_series(count: usize, with_app: bool) -> Vec<SeriesSpec> {
    let template = instance_template();
    let mut out = Vec::with_capacity(count);
    let mut host = 0;
    while out.len() < count {
        let cluster = host / INSTANCES_PER_CLUSTER;
        let region = REGIONS[cluster % REGIONS.len()];
        let env = ENVS[(cluster / REGIONS.len()) % ENVS.len()];
        let zone = format!("{region}{}", ["a", "b", "c"][host % 3]);
        let (b, c, d) = octets(host);
        let node = format!("ip-10-{b}-{c}-{d}.{region}.compute.internal");
        let instance = instance_name(host);
        let cluster_label = cluster_name(cluster);
        let host_labels = |name: &str, job: &str| {
            vec![
                ("__name__", name.to_owned()),
                ("instance", instance.clone()),
                ("job", job.to_owned()),
                ("env", env.to_owned()),
                ("region", region.to_owned()),
                ("cluster", cluster_label.clone()),
                ("availability_zone", zone.clone()),
                ("node", node.clone()),
            ]
        };
        for (name, kind, dims) in &template {
            if out.len() == count {
                break;
            }
            let mut pairs = host_labels(name, JOB);
            pairs.extend(dims.iter().cloned());
            let labels = Labels::from_pairs(pairs).expect("generated labels are valid");
            debug_assert_eq!(labels.len(), LABELS_PER_SERIES);
            out.push(SeriesSpec {
                labels,
                kind: *kind,
            });
        }
        if with_app {
            for (name, kind, own) in app_template(host) {
                if out.len() == count {
                    break;
                }
                let mut pairs = host_labels(&name, APP_JOB);
                pairs.extend(own);
                let labels = Labels::from_pairs(pairs).expect("generated labels are valid");
                out.push(SeriesSpec { labels, kind });
            }
        }
        host += 1;
    }
    out
}

/// Average bytes of label text (names plus values) per series.
pub fn average_label_bytes(series: &[SeriesSpec]) -> f64 {
    let total: usize = series
        .iter()
        .flat_map(|spec| spec.labels.iter())
        .map(|label| label.name.len() + label.value.len())
        .sum();
    total as f64 / series.len().max(1) as f64
}

/// A cheap stateless mix of a series index, for per-series parameters.
fn mix(index: u64) -> u64 {
    XorShift64::new(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03).next_u64()
}

/// Scrapes since the application on `host` last restarted (0 at a restart's scrape): it
/// restarts every 480 to 959 scrapes (2 to 4 h at 15 s), at a per-host phase.
pub fn rounds_since_restart(host: u32, round: u64) -> u64 {
    let seed = mix(u64::from(host) ^ 0x5EED_0000);
    let period = 480 + seed % 480;
    (round + seed / 480 % period) % period
}

/// The value of series `index` (of kind `kind`) at scrape `round`: counters grow by a
/// per-series step with some noise, gauges wander with two decimals, constants stay put,
/// application counters and histograms restart from zero with their application.
/// Deterministic and O(1), so appenders can compute it on the fly.
pub fn value_at(kind: ValueKind, index: usize, round: u64) -> f64 {
    let seed = mix(index as u64);
    match kind {
        ValueKind::ResettingCounter { host } => {
            let step = 1 + seed % 50;
            let noise = mix(seed ^ round) % (step / 4 + 1);
            (rounds_since_restart(host, round) * step + noise) as f64
        }
        ValueKind::Histogram {
            host,
            histogram,
            part,
        } => histogram_value(host, histogram, part, round),
        ValueKind::Counter => {
            let step = 1 + seed % 5_000;
            let noise = mix(seed ^ round) % (step / 4 + 1);
            (seed % 1_000_000 + round * step + noise) as f64
        }
        ValueKind::Gauge => {
            let level = 10_000 + seed % 500_000;
            let wiggle = mix(seed ^ round) % 200;
            (level + wiggle) as f64 / 100.0
        }
        ValueKind::Constant => ((seed % 64) + 1) as f64 * 1_073_741_824.0,
    }
}

/// The value of one series of a classic histogram at scrape `round`: `count` observations
/// since the restart (a per-histogram rate per scrape plus noise, so monotonic between
/// restarts), spread over the buckets by an exponential distribution of per-histogram mean.
fn histogram_value(host: u32, histogram: u32, part: HistogramPart, round: u64) -> f64 {
    let seed = mix((u64::from(host) << 8 | u64::from(histogram)) ^ 0x4157_0000);
    let per_scrape = 5 + seed % 100;
    let noise = mix(seed ^ round) % (per_scrape / 4 + 1);
    let count = rounds_since_restart(host, round) * per_scrape + noise;
    let mean_seconds = 0.02 * (1 + seed % 16) as f64;
    match part {
        HistogramPart::Count => count as f64,
        HistogramPart::Sum => (count as f64 * mean_seconds * 1000.0).round() / 1000.0,
        HistogramPart::Bucket(bucket) => match HISTOGRAM_BUCKETS.get(usize::from(bucket)) {
            Some(bound) => (count as f64 * (1.0 - (-bound / mean_seconds).exp())).floor(),
            None => count as f64,
        },
    }
}

/// One write request per `per_batch` series, each series carrying one sample; fill the samples
/// with [`set_round`] (timestamps start at zero).
pub fn write_batches(series: &[SeriesSpec], per_batch: usize) -> Vec<WriteBatch> {
    series
        .chunks(per_batch)
        .map(|chunk| {
            let mut batch = WriteBatch::new();
            for spec in chunk {
                batch.push(spec.labels.clone(), vec![Sample::new(0, 0.0)]);
            }
            batch
        })
        .collect()
}

/// Rewrites the one sample of every series in `batches` (built by [`write_batches`] from
/// `series[first..]`) with the timestamp and value of scrape `round`.
pub fn set_round(batches: &mut [WriteBatch], series: &[SeriesSpec], first: usize, round: u64) {
    let t = BASE_TIMESTAMP_MS + round as i64 * SCRAPE_INTERVAL_MS;
    let mut index = first;
    for batch in batches {
        for entry in &mut batch.series {
            let kind = series[index].kind;
            for sample in &mut entry.samples {
                *sample = Sample::new(t, value_at(kind, index, round));
            }
            index += 1;
        }
    }
}

/// `count` chunks of `samples` samples each, like Prometheus scrapes them: 15 s apart with a
/// few ms of jitter, values a mix of ~50 % counters (monotonic integers of various step sizes),
/// ~35 % gauges (few significant digits) and ~15 % constants.
pub fn codec_chunks(count: usize, samples: usize, seed: u64) -> Vec<Vec<(i64, f64)>> {
    let mut rng = XorShift64::new(seed);
    (0..count)
        .map(|_| {
            let kind = rng.below(100);
            let start = BASE_TIMESTAMP_MS + rng.range_i64(0, SCRAPE_INTERVAL_MS - 1);
            let mut chunk = Vec::with_capacity(samples);
            let mut counter = rng.below(1 << 40) as f64;
            let step_scale = [1u64, 10, 1_000, 1_000_000][rng.below(4) as usize];
            let gauge_digits = [1.0, 10.0, 100.0][rng.below(3) as usize];
            let mut gauge = rng.below(100_000) as f64;
            let constant = [1.0, 0.0, 8.0, 16_777_216_000.0][rng.below(4) as usize];
            for i in 0..samples {
                let t = start + i as i64 * SCRAPE_INTERVAL_MS + rng.range_i64(-2, 2);
                let v = if kind < 50 {
                    // Idle counters (errors, drops) often do not move at all.
                    if rng.below(4) != 0 {
                        counter += (rng.below(100) * step_scale) as f64;
                    }
                    counter
                } else if kind < 85 {
                    gauge = (gauge + rng.range_i64(-50, 50) as f64).max(0.0);
                    gauge / gauge_digits
                } else {
                    constant
                };
                chunk.push((t, v));
            }
            chunk
        })
        .collect()
}

/// The resident set size of this process in bytes (`VmRSS` of `/proc/self/status`, the same
/// counter as the second field of `/proc/self/statm`, already in bytes), if readable.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// The peak resident set size of this process in bytes (`VmHWM`), if readable.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|kib| kib * 1024)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_have_ten_labels_and_clusters_hold_1000() {
        let series = node_exporter_series(2 * SERIES_PER_CLUSTER);
        assert!(series
            .iter()
            .all(|spec| spec.labels.len() == LABELS_PER_SERIES));
        let first = cluster_name(0);
        let in_first = series
            .iter()
            .filter(|spec| spec.labels.get("cluster") == Some(first.as_str()))
            .count();
        assert_eq!(in_first, SERIES_PER_CLUSTER);
        let mut unique: Vec<_> = series.iter().map(|spec| spec.labels.clone()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), series.len());
        let bytes = average_label_bytes(&series);
        assert!(
            (200.0..=300.0).contains(&bytes),
            "{bytes} bytes of label text per series"
        );
    }

    #[test]
    fn mixed_series_extend_node_exporter_series() {
        let hosts = 3;
        let mixed = mixed_series(hosts * MIXED_SERIES_PER_HOST);
        let plain = node_exporter_series(hosts * SERIES_PER_INSTANCE);
        let node_part: Vec<_> = mixed
            .iter()
            .filter(|spec| spec.labels.get("job") == Some(JOB))
            .map(|spec| spec.labels.clone())
            .collect();
        let plain_labels: Vec<_> = plain.iter().map(|spec| spec.labels.clone()).collect();
        assert_eq!(node_part, plain_labels);
        let mut unique: Vec<_> = mixed.iter().map(|spec| spec.labels.clone()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), mixed.len());
        let buckets = mixed
            .iter()
            .filter(|spec| {
                spec.labels.metric_name() == Some("http_request_duration_seconds_bucket")
            })
            .count();
        assert_eq!(buckets, hosts * 4 * (HISTOGRAM_BUCKETS.len() + 1));
    }

    #[test]
    fn histograms_are_cumulative_and_reset_with_their_counters() {
        let series = mixed_series(MIXED_SERIES_PER_HOST);
        let value = |name: &str, handler: &str, le: Option<&str>, round| {
            let (index, spec) = series
                .iter()
                .enumerate()
                .find(|(_, spec)| {
                    spec.labels.metric_name() == Some(name)
                        && spec.labels.get("handler") == Some(handler)
                        && spec.labels.get("le") == le
                        && spec.labels.get("code").is_none_or(|code| code == "200")
                })
                .expect("series exists");
            value_at(spec.kind, index, round)
        };
        let mut resets = 0;
        for round in 0..2000 {
            let mut previous_bucket = 0.0;
            for le in HISTOGRAM_BUCKETS.iter().map(|bound| bound.to_string()) {
                let bucket = value(
                    "http_request_duration_seconds_bucket",
                    "/metrics",
                    Some(&le),
                    round,
                );
                assert!(bucket >= previous_bucket, "buckets are cumulative");
                previous_bucket = bucket;
            }
            let infinite = value(
                "http_request_duration_seconds_bucket",
                "/metrics",
                Some("+Inf"),
                round,
            );
            let count = value(
                "http_request_duration_seconds_count",
                "/metrics",
                None,
                round,
            );
            assert!(infinite >= previous_bucket);
            assert_eq!(infinite, count);
            if round > 0 {
                let before = value(
                    "http_request_duration_seconds_count",
                    "/metrics",
                    None,
                    round - 1,
                );
                let requests_now = value("http_requests_total", "/metrics", None, round);
                let requests_before = value("http_requests_total", "/metrics", None, round - 1);
                if count < before {
                    resets += 1;
                    assert!(requests_now < requests_before, "counters reset together");
                } else {
                    assert!(requests_now >= requests_before);
                }
            }
        }
        assert!(
            (2..=5).contains(&resets),
            "{resets} restarts in 2000 scrapes"
        );
    }

    #[test]
    fn chunks_are_increasing_in_time() {
        for chunk in codec_chunks(50, 120, 7) {
            assert!(chunk.windows(2).all(|pair| pair[0].0 < pair[1].0));
        }
    }
}
