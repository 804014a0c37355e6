//! Differential PromQL test against the real Prometheus 2.42 (Debian's `prometheus`, from PATH;
//! skipped with a printed reason when it is missing).
//!
//! One deterministic generator makes two hours of node_exporter-like data for ten hosts:
//! counters (some with resets), gauges and classic histograms, scraped every 15 s. The same
//! samples are remote-written into a Prometheus on 127.0.0.1 and written into an in-memory
//! Lookout TSDB. A few hundred queries of our own (instant and range; every function family,
//! aggregation and operator; offsets, `@`, subqueries; errors) run on both: Prometheus through
//! its HTTP API, Lookout in-process through [`lookout_promql::Engine`]. The answers must agree:
//! result type, label sets (as sets), timestamps, and values within 1e-9 relative (NaN equals
//! NaN). A query that fails must fail on both sides with the same `errorType`. Queries that
//! differ for a known, intended reason are listed in [`KNOWN_DIFFERENCES`].
//!
//! Prometheus 2.42 selects closed windows `[t - range, t]` (and looks back over
//! `[t - 5m, t]`); Lookout follows Prometheus 3.x's left-open `(t - range, t]`. The data and
//! the queries are laid out so that no sample ever sits on a window boundary: samples are
//! stamped at whole seconds plus an odd number of milliseconds, while evaluation times, ranges,
//! offsets and steps are whole seconds. Evaluation times are 30 s past the minute and subquery
//! ranges and steps whole minutes, so no subquery step falls on its window's start either.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::time::Instant;

use lookout_model::{Labels, Sample, STALE_NAN};
use lookout_promql::{Engine, QueryError, QueryOutput, QueryValue};
use lookout_storage::{SeriesSamples, Storage, WriteBatch};
use lookout_tsdb::{HeadOptions, Tsdb};
use serde_json::Value;

use support::{free_port, prometheus_installed, start_prometheus};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_S: f64 = 86_400.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// 2024-03-01T00:00:00Z: the first scrape interval of the generated data starts here.
const BASE_MS: i64 = 1_709_251_200_000;
const SCRAPE_INTERVAL_MS: i64 = 15 * SECOND_MS;
/// Two hours of scrapes.
const SCRAPES: i64 = 480;
const HOSTS: usize = 10;
/// This host only appears after 30 minutes (scrape 120).
const LATE_HOST: usize = 8;
/// This host disappears after 90 minutes (scrape 360), with a stale marker on every series as
/// Prometheus writes when a target goes away.
const DEPARTED_HOST: usize = 9;
/// This host has a gap of ten minutes from 70 minutes on (scrapes 280 to 319) without stale
/// markers, as when a remote-write sender loses data: only the lookback bridges it.
const GAPPED_HOST: usize = 7;
/// The batch counter starts at 45 minutes.
const BATCH_FIRST_SCRAPE: i64 = 180;
/// Every remote-write request (and Lookout write) carries this much time of all series, in
/// ascending order: Prometheus refuses samples older than its head's newest minus one hour.
const WRITE_SLICE_MS: i64 = 10 * MINUTE_MS;

/// Values agree when they differ by at most this fraction of the larger magnitude.
const RELATIVE_TOLERANCE: f64 = 1e-9;
/// Mismatches printed in full; later ones get one line each.
const MISMATCHES_IN_FULL: usize = 50;

/// Names the queries use for `@` times, with their offsets from [`BASE_MS`]: five minutes after
/// the batch counter started, in the gapped host's gap, just after the departed host's stale
/// markers, after the departed host's lookback ran out, and after the last sample.
const AT_TIMES: [(&str, i64); 5] = [
    ("AT_EARLY", 50 * MINUTE_MS + 30 * SECOND_MS),
    ("AT_GAP", 80 * MINUTE_MS + 30 * SECOND_MS),
    ("AT_DEPARTURE", 90 * MINUTE_MS + 30 * SECOND_MS),
    ("AT_LATE", 100 * MINUTE_MS + 30 * SECOND_MS),
    ("AT_END", 123 * MINUTE_MS + 30 * SECOND_MS),
];

/// Instant-query times, taken in turn: mid-data, late, near the start (windows only partly
/// covered), just after the late host arrived, a few minutes after the last sample (only the
/// lookback still finds series), and just after the departed host went stale.
const INSTANT_TIMES_MS: [i64; 6] = [
    BASE_MS + HOUR_MS + MINUTE_MS + 30 * SECOND_MS,
    BASE_MS + HOUR_MS + 47 * MINUTE_MS + 30 * SECOND_MS,
    BASE_MS + 3 * MINUTE_MS + 30 * SECOND_MS,
    BASE_MS + 35 * MINUTE_MS + 30 * SECOND_MS,
    BASE_MS + 2 * HOUR_MS + 3 * MINUTE_MS + 30 * SECOND_MS,
    BASE_MS + HOUR_MS + 31 * MINUTE_MS + 30 * SECOND_MS,
];

/// Range-query windows `(start, end, step)`, taken in turn: most of the data at 3 m steps
/// (the late host arriving, the departed host leaving), the whole data and beyond both ends at
/// 10 m steps, and the departed host going stale at 1 m steps.
const RANGE_WINDOWS_MS: [(i64, i64, i64); 3] = [
    (
        BASE_MS + 25 * MINUTE_MS + 30 * SECOND_MS,
        BASE_MS + HOUR_MS + 55 * MINUTE_MS + 30 * SECOND_MS,
        3 * MINUTE_MS,
    ),
    (
        BASE_MS - 4 * MINUTE_MS - 30 * SECOND_MS,
        BASE_MS + 2 * HOUR_MS + 15 * MINUTE_MS + 30 * SECOND_MS,
        10 * MINUTE_MS,
    ),
    (
        BASE_MS + HOUR_MS + 25 * MINUTE_MS + 30 * SECOND_MS,
        BASE_MS + HOUR_MS + 40 * MINUTE_MS + 30 * SECOND_MS,
        MINUTE_MS,
    ),
];

/// A query whose answer differs from Prometheus 2.42 for a known reason. Entries that start
/// agreeing are reported so that the list stays short.
#[derive(Debug)]
struct KnownDifference {
    /// `instant` or `range`.
    kind: &'static str,
    query: &'static str,
    reason: &'static str,
}

impl KnownDifference {
    fn matches(&self, case: &Case) -> bool {
        self.kind == case.eval.kind() && with_at_times(self.query) == case.query
    }
}

const ZERO_POINT_AFTER_HALF_INTERVAL: &str =
    "Prometheus 2.51+ (prometheus#13725, 3.x semantics) limits the extrapolation of a counter \
     that starts inside the window to its zero point only after the half-interval rule; 2.42 \
     applied the zero point first and so extrapolated up to a full interval back";
const UTF8_LABEL_NAMES: &str = "Prometheus 3.x accepts any UTF-8 label name; 2.42 refuses names \
     outside [a-zA-Z_][a-zA-Z0-9_]*";
const CLASSIC_HISTOGRAM_FRACTION: &str = "Prometheus 3.x (prometheus#16095) computes \
     histogram_fraction over classic buckets; 2.42 only over native histograms (empty for floats)";
const KNOWN_DIFFERENCES: &[KnownDifference] = &[
    KnownDifference {
        kind: "instant",
        query: "increase(batch_jobs_completed_total[10m] @ AT_EARLY)",
        reason: ZERO_POINT_AFTER_HALF_INTERVAL,
    },
    KnownDifference {
        kind: "range",
        query: "rate(batch_jobs_completed_total[10m])",
        reason: ZERO_POINT_AFTER_HALF_INTERVAL,
    },
    KnownDifference {
        kind: "instant",
        query: "label_replace(up, \"invalid-label\", \"x\", \"\", \"\")",
        reason: UTF8_LABEL_NAMES,
    },
    KnownDifference {
        kind: "instant",
        query: "count_values(\"invalid-name\", up)",
        reason: UTF8_LABEL_NAMES,
    },
    KnownDifference {
        kind: "instant",
        query: "histogram_fraction(0, 0.1, rate(http_request_duration_seconds_bucket[5m]))",
        reason: CLASSIC_HISTOGRAM_FRACTION,
    },
    KnownDifference {
        kind: "range",
        query: "histogram_fraction(0, 0.1, rate(http_request_duration_seconds_bucket[5m]))",
        reason: CLASSIC_HISTOGRAM_FRACTION,
    },
];

// ---------------------------------------------------------------------------------------
// Data

/// xorshift64*: deterministic noise for the generator.
#[derive(Debug)]
struct Noise(u64);

impl Noise {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One scraped machine.
#[derive(Debug, Clone)]
struct Host {
    index: usize,
    instance: String,
    dc: &'static str,
    /// Milliseconds after each 15 s boundary at which this host is scraped: whole seconds
    /// plus 437 ms, so no sample is ever on a whole second.
    phase_ms: i64,
    /// The scrapes this host has, except those in `gap`.
    scrapes: Range<i64>,
    /// Scrapes missing without stale markers.
    gap: Range<i64>,
    /// Whether the host's series end with a stale marker one scrape after the last.
    ends_stale: bool,
    /// The scrape at which the host's `api` process restarts (its counters reset).
    api_restart: Option<i64>,
}

impl Host {
    fn new(index: usize) -> Host {
        let first = if index == LATE_HOST { 120 } else { 0 };
        let end = if index == DEPARTED_HOST { 360 } else { SCRAPES };
        Host {
            index,
            instance: format!("host-{index:02}:9100"),
            dc: if index.is_multiple_of(2) { "eu" } else { "us" },
            phase_ms: SECOND_MS * index as i64 + 437,
            scrapes: first..end,
            gap: if index == GAPPED_HOST { 280..320 } else { 0..0 },
            ends_stale: index == DEPARTED_HOST,
            api_restart: match index {
                3 => Some(200),
                6 => Some(410),
                _ => None,
            },
        }
    }

    fn time_ms(&self, scrape: i64) -> i64 {
        BASE_MS + self.phase_ms + scrape * SCRAPE_INTERVAL_MS
    }

    /// The scrapes that produce samples.
    fn scrapes(&self) -> impl Iterator<Item = i64> + '_ {
        self.scrapes
            .clone()
            .filter(|scrape| !self.gap.contains(scrape))
    }

    /// Appends the stale marker that ends each series of a host that goes away.
    fn end(&self, samples: &mut Vec<Sample>) {
        if self.ends_stale {
            samples.push(Sample::new(self.time_ms(self.scrapes.end), STALE_NAN));
        }
    }

    fn labels(&self, name: &str, job: &str, extra: &[(&str, &str)]) -> Labels {
        let mut pairs = vec![
            ("__name__", name),
            ("instance", self.instance.as_str()),
            ("job", job),
            ("dc", self.dc),
        ];
        pairs.extend_from_slice(extra);
        Labels::from_pairs(pairs).expect("generated labels are valid")
    }
}

/// A classic histogram `name_bucket{le}`, `name_sum`, `name_count` of about `per_second`
/// observations of exponentially distributed latencies around `mean_seconds`. Like the
/// counters, it starts with one to two days' worth of observations.
#[derive(Debug, Clone, Copy)]
struct Histogram<'a> {
    name: &'a str,
    /// Labels besides `instance`, `job`, `dc` and `le`.
    extra: &'a [(&'a str, &'a str)],
    /// `le` label values with their bounds, the last one `+Inf`.
    bounds: &'a [(&'a str, f64)],
    per_second: f64,
    mean_seconds: f64,
}

/// Builds every series of every host.
#[derive(Debug)]
struct Generator {
    noise: Noise,
    series: Vec<SeriesSamples>,
}

impl Generator {
    /// One series with a value per scrape of `host` from `value_at(noise, scrape)`.
    fn push(
        &mut self,
        host: &Host,
        labels: Labels,
        mut value_at: impl FnMut(&mut Noise, i64) -> f64,
    ) {
        let mut samples: Vec<Sample> = host
            .scrapes()
            .map(|scrape| Sample::new(host.time_ms(scrape), value_at(&mut self.noise, scrape)))
            .collect();
        host.end(&mut samples);
        self.series.push(SeriesSamples { labels, samples });
    }

    /// A counter growing by about `per_second`, reset to zero with `reset_probability` per
    /// scrape (never at the first one) and at `restart`. It starts at one to two days' worth of
    /// growth, as on a machine that has been up for a while.
    fn counter(
        &mut self,
        host: &Host,
        labels: Labels,
        per_second: f64,
        reset_probability: f64,
        restart: Option<i64>,
    ) {
        let mut value = per_second * DAY_S * (1.0 + self.noise.unit());
        let per_scrape = per_second * (SCRAPE_INTERVAL_MS / SECOND_MS) as f64;
        let first_scrape = host.scrapes.start;
        self.push(host, labels, |noise, scrape| {
            let random_reset = noise.unit() < reset_probability && scrape != first_scrape;
            if restart == Some(scrape) || random_reset {
                value = 0.0;
            }
            value += per_scrape * (0.5 + noise.unit());
            value
        });
    }

    /// A gauge wandering around `mean` by about `spread`; whole numbers when `integer`.
    fn gauge(&mut self, host: &Host, labels: Labels, mean: f64, spread: f64, integer: bool) {
        let mut value = mean + spread * (self.noise.unit() - 0.5);
        self.push(host, labels, |noise, _| {
            value += (mean - value) * 0.1 + spread * 0.3 * (noise.unit() - 0.5);
            if integer {
                value.round().max(0.0)
            } else {
                value
            }
        });
    }

    /// The series of a classic histogram of the host's `api` job; they reset when the `api`
    /// process restarts.
    fn histogram(&mut self, host: &Host, histogram: &Histogram<'_>) {
        let Histogram {
            name,
            extra,
            bounds,
            per_second,
            mean_seconds,
        } = *histogram;
        let job = "api";
        let restart = host.api_restart;
        let per_scrape = per_second * (SCRAPE_INTERVAL_MS / SECOND_MS) as f64;
        let mut buckets = vec![Vec::new(); bounds.len()];
        let mut sums = Vec::new();
        let mut counts = Vec::new();
        let mut count = (per_second * DAY_S * (1.0 + self.noise.unit())).round();
        let mut cumulative: Vec<f64> = bounds
            .iter()
            .map(|(_, bound)| (count * (1.0 - (-bound / mean_seconds).exp())).round())
            .collect();
        let mut sum = count * mean_seconds;
        for scrape in host.scrapes() {
            if restart == Some(scrape) {
                cumulative.fill(0.0);
                sum = 0.0;
                count = 0.0;
            }
            let observations = (per_scrape * (0.5 + self.noise.unit())).round() as usize;
            for _ in 0..observations {
                let latency = -mean_seconds * (1.0 - self.noise.unit()).ln();
                for ((_, bound), bucket) in bounds.iter().zip(cumulative.iter_mut()) {
                    if latency <= *bound {
                        *bucket += 1.0;
                    }
                }
                sum += latency;
                count += 1.0;
            }
            let time_ms = host.time_ms(scrape);
            for (bucket, value) in buckets.iter_mut().zip(&cumulative) {
                bucket.push(Sample::new(time_ms, *value));
            }
            sums.push(Sample::new(time_ms, sum));
            counts.push(Sample::new(time_ms, count));
        }
        for samples in buckets.iter_mut().chain([&mut sums, &mut counts]) {
            host.end(samples);
        }
        for ((le, _), samples) in bounds.iter().zip(buckets) {
            let mut pairs = extra.to_vec();
            pairs.push(("le", le));
            self.series.push(SeriesSamples {
                labels: host.labels(&format!("{name}_bucket"), job, &pairs),
                samples,
            });
        }
        self.series.push(SeriesSamples {
            labels: host.labels(&format!("{name}_sum"), job, extra),
            samples: sums,
        });
        self.series.push(SeriesSamples {
            labels: host.labels(&format!("{name}_count"), job, extra),
            samples: counts,
        });
    }

    fn host(&mut self, host: &Host) {
        let node = "node";
        let api = "api";
        let load = 0.8 + 0.1 * host.index as f64;
        for cpu in ["0", "1"] {
            for (mode, share) in [
                ("idle", 0.7),
                ("user", 0.15),
                ("system", 0.08),
                ("iowait", 0.02),
            ] {
                let labels = host.labels(
                    "node_cpu_seconds_total",
                    node,
                    &[("cpu", cpu), ("mode", mode)],
                );
                self.counter(host, labels, share, 0.0, None);
            }
        }
        for (device, bytes_per_second) in [("eth0", 1.2e5), ("lo", 3.0e3)] {
            for name in [
                "node_network_receive_bytes_total",
                "node_network_transmit_bytes_total",
            ] {
                let labels = host.labels(name, node, &[("device", device)]);
                self.counter(host, labels, bytes_per_second, 0.0, None);
            }
        }
        for (device, reads, written) in [("sda", 40.0, 5.0e5), ("sdb", 3.0, 1.0e4)] {
            let labels = host.labels(
                "node_disk_reads_completed_total",
                node,
                &[("device", device)],
            );
            self.counter(host, labels, reads, 0.0, None);
            let labels = host.labels("node_disk_written_bytes_total", node, &[("device", device)]);
            self.counter(host, labels, written, 0.0, None);
        }
        let labels = host.labels("node_context_switches_total", node, &[]);
        self.counter(host, labels, 2_500.0, 0.0, None);
        let labels = host.labels("node_intr_total", node, &[]);
        self.counter(host, labels, 1_800.0, 0.0, None);
        let labels = host.labels("node_forks_total", node, &[]);
        self.counter(host, labels, 3.0, 0.01, None);

        let labels = host.labels("node_load1", node, &[]);
        self.gauge(host, labels, load, 0.6, false);
        let labels = host.labels("node_load5", node, &[]);
        self.gauge(host, labels, load, 0.3, false);
        let memory_gib = if host.index.is_multiple_of(2) {
            16.0
        } else {
            8.0
        };
        let memory_total = memory_gib * GIB;
        let labels = host.labels("node_memory_MemTotal_bytes", node, &[]);
        self.push(host, labels, |_, _| memory_total);
        let labels = host.labels("node_memory_MemAvailable_bytes", node, &[]);
        self.gauge(host, labels, 0.4 * memory_total, 0.1 * memory_total, true);
        for (device, mountpoint, fstype, size) in [
            ("/dev/sda1", "/", "ext4", 50.0e9),
            ("/dev/sdb1", "/var", "xfs", 200.0e9),
            ("//nas/share", "/mnt/ünï \"cødé\" \\ dir", "cifs", 4.0e12),
        ] {
            let extra = [
                ("device", device),
                ("mountpoint", mountpoint),
                ("fstype", fstype),
            ];
            let labels = host.labels("node_filesystem_size_bytes", node, &extra);
            self.push(host, labels, |_, _| size);
            let labels = host.labels("node_filesystem_avail_bytes", node, &extra);
            self.gauge(host, labels, 0.5 * size, 0.05 * size, true);
        }
        let labels = host.labels("node_procs_running", node, &[]);
        self.gauge(host, labels, 3.0, 4.0, true);
        for sensor in ["temp1", "temp2"] {
            let extra = [("chip", "platform_coretemp_0"), ("sensor", sensor)];
            let labels = host.labels("node_hwmon_temp_celsius", node, &extra);
            self.gauge(host, labels, 55.0, 10.0, false);
        }
        // A flaky sensor that reads NaN a fifth of the time (a real NaN, not a stale marker).
        let extra = [("chip", "platform_coretemp_0"), ("sensor", "temp3")];
        let labels = host.labels("node_hwmon_temp_celsius", node, &extra);
        let mut temperature = 60.0;
        self.push(host, labels, |noise, _| {
            temperature += 2.0 * (noise.unit() - 0.5);
            if noise.unit() < 0.2 {
                f64::NAN
            } else {
                temperature
            }
        });
        let boot_time = (BASE_MS / SECOND_MS) as f64 - DAY_S * (host.index + 1) as f64 - 1_234.5;
        let labels = host.labels("node_boot_time_seconds", node, &[]);
        self.push(host, labels, |_, _| boot_time);
        let nodename = format!("host-{:02}", host.index);
        let release = if host.index < 5 {
            "6.1.0-18-amd64"
        } else {
            "6.1.0-21-amd64"
        };
        let labels = host.labels(
            "node_uname_info",
            node,
            &[("nodename", nodename.as_str()), ("release", release)],
        );
        self.push(host, labels, |_, _| 1.0);

        for job in [node, api] {
            let labels = host.labels("up", job, &[]);
            self.push(host, labels, up_value);
        }
        for (handler, per_second, mean_seconds) in
            [("/api/v1/query", 5.0, 0.08), ("/metrics", 0.2, 0.01)]
        {
            for (code, share) in [("200", 0.98), ("500", 0.02)] {
                let labels = host.labels(
                    "http_requests_total",
                    api,
                    &[("handler", handler), ("code", code)],
                );
                self.counter(host, labels, per_second * share, 0.0, host.api_restart);
            }
            self.histogram(
                host,
                &Histogram {
                    name: "http_request_duration_seconds",
                    extra: &[("handler", handler)],
                    bounds: &[
                        ("0.005", 0.005),
                        ("0.01", 0.01),
                        ("0.025", 0.025),
                        ("0.05", 0.05),
                        ("0.1", 0.1),
                        ("0.25", 0.25),
                        ("0.5", 0.5),
                        ("1", 1.0),
                        ("2.5", 2.5),
                        ("+Inf", f64::INFINITY),
                    ],
                    per_second,
                    mean_seconds,
                },
            );
        }
        self.histogram(
            host,
            &Histogram {
                name: "rpc_duration_seconds",
                extra: &[("service", "storage")],
                bounds: &[
                    ("0.001", 0.001),
                    ("0.01", 0.01),
                    ("0.1", 0.1),
                    ("1", 1.0),
                    ("10", 10.0),
                    ("+Inf", f64::INFINITY),
                ],
                per_second: 2.0,
                mean_seconds: 0.03,
            },
        );
    }
}

/// `up`: a failed scrape 3 % of the time.
fn up_value(noise: &mut Noise, _scrape: i64) -> f64 {
    if noise.unit() < 0.03 {
        0.0
    } else {
        1.0
    }
}

/// Every generated series with all its samples.
fn generate() -> Vec<SeriesSamples> {
    let mut generator = Generator {
        noise: Noise(0x9E37_79B9_7F4A_7C15),
        series: Vec::new(),
    };
    for index in 0..HOSTS {
        generator.host(&Host::new(index));
    }
    // A counter that starts from zero in the middle of the data: a batch job on host 0 that
    // completes once per scrape from 45 minutes on. Queries about Prometheus' change to the
    // zero-point limit of rate extrapolation read it (see KNOWN_DIFFERENCES).
    let batch_host = Host {
        scrapes: BATCH_FIRST_SCRAPE..SCRAPES,
        ..Host::new(0)
    };
    let labels = batch_host.labels("batch_jobs_completed_total", "batch", &[]);
    let mut completed = 0.0;
    generator.push(&batch_host, labels, |_, _| {
        completed += 1.0;
        completed
    });
    generator.series
}

/// The samples of every series in `[start_ms, start_ms + WRITE_SLICE_MS)`, one batch per slice,
/// in ascending time.
fn write_slices(series: &[SeriesSamples]) -> Vec<WriteBatch> {
    let end_ms = series
        .iter()
        .filter_map(|one| one.samples.last())
        .map(|sample| sample.timestamp.0 + 1)
        .max()
        .unwrap_or(BASE_MS);
    let mut batches = Vec::new();
    let mut slice_start_ms = BASE_MS;
    while slice_start_ms < end_ms {
        let slice = slice_start_ms..slice_start_ms + WRITE_SLICE_MS;
        let mut batch = WriteBatch::new();
        for one in series {
            let samples: Vec<Sample> = one
                .samples
                .iter()
                .filter(|sample| slice.contains(&sample.timestamp.0))
                .copied()
                .collect();
            if !samples.is_empty() {
                batch.push(one.labels.clone(), samples);
            }
        }
        batches.push(batch);
        slice_start_ms += WRITE_SLICE_MS;
    }
    batches
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Debug, Clone, Copy)]
enum Eval {
    Instant {
        time_ms: i64,
    },
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

impl Eval {
    fn kind(self) -> &'static str {
        match self {
            Eval::Instant { .. } => "instant",
            Eval::Range { .. } => "range",
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    query: String,
    eval: Eval,
}

impl Case {
    fn describe(&self) -> String {
        match self.eval {
            Eval::Instant { time_ms } => {
                format!("instant at {}: {}", relative(time_ms), self.query)
            }
            Eval::Range {
                start_ms,
                end_ms,
                step_ms,
            } => format!(
                "range {}..{} step {}s: {}",
                relative(start_ms),
                relative(end_ms),
                step_ms / SECOND_MS,
                self.query
            ),
        }
    }
}

/// A time as an offset from [`BASE_MS`], e.g. `+1h01m30s`.
fn relative(time_ms: i64) -> String {
    let offset_ms = time_ms - BASE_MS;
    let sign = if offset_ms < 0 { '-' } else { '+' };
    let seconds = offset_ms.abs() / SECOND_MS;
    format!(
        "{sign}{}h{:02}m{:02}s",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// The cases in the order they are added; instant times and range windows are taken in turn.
#[derive(Debug, Default)]
struct Plan {
    cases: Vec<Case>,
    instant_turn: usize,
    range_turn: usize,
}

impl Plan {
    /// Adds `query`, with the names of [`AT_TIMES`] replaced by their times, evaluated as
    /// `eval`.
    fn push(&mut self, query: &str, eval: Eval) {
        self.cases.push(Case {
            query: with_at_times(query),
            eval,
        });
    }

    fn instant(&mut self, query: &str) {
        let time_ms = INSTANT_TIMES_MS[self.instant_turn % INSTANT_TIMES_MS.len()];
        self.instant_turn += 1;
        self.push(query, Eval::Instant { time_ms });
    }

    fn range(&mut self, query: &str) {
        let window = RANGE_WINDOWS_MS[self.range_turn % RANGE_WINDOWS_MS.len()];
        self.range_turn += 1;
        self.range_in(query, window);
    }

    fn range_in(&mut self, query: &str, (start_ms, end_ms, step_ms): (i64, i64, i64)) {
        self.push(
            query,
            Eval::Range {
                start_ms,
                end_ms,
                step_ms,
            },
        );
    }

    fn both(&mut self, query: &str) {
        self.instant(query);
        self.range(query);
    }

    fn instants(&mut self, queries: &[&str]) {
        for query in queries {
            self.instant(query);
        }
    }

    fn boths(&mut self, queries: &[&str]) {
        for query in queries {
            self.both(query);
        }
    }
}

const COUNTERS: [&str; 5] = [
    "node_cpu_seconds_total",
    "http_requests_total",
    "node_network_receive_bytes_total",
    "node_forks_total",
    "node_disk_reads_completed_total",
];

const GAUGES: [&str; 5] = [
    "node_load1",
    "node_memory_MemAvailable_bytes",
    "node_hwmon_temp_celsius",
    "node_filesystem_avail_bytes",
    "node_procs_running",
];

const RANGES: [&str; 3] = ["1m", "5m", "20m"];

/// Every case; `metric_names` are those of the generated data.
fn plan(metric_names: &BTreeSet<&str>) -> Vec<Case> {
    let mut plan = Plan::default();
    // Both stores hold the same samples: counts and sums per metric over all the data.
    for name in metric_names {
        plan.instant(&format!("sum(count_over_time({name}[3h] @ AT_END))"));
        plan.instant(&format!("sum(sum_over_time({name}[3h] @ AT_END))"));
    }
    selectors(&mut plan);
    range_functions(&mut plan);
    instant_functions(&mut plan);
    aggregations(&mut plan);
    binary_operators(&mut plan);
    modifiers_and_subqueries(&mut plan);
    edge_cases(&mut plan);
    errors(&mut plan);
    plan.cases
}

fn selectors(plan: &mut Plan) {
    plan.boths(&[
        "up",
        "node_load1{dc=\"eu\"}",
        "node_cpu_seconds_total{mode=~\"user|system\", cpu=\"1\"}",
        "node_cpu_seconds_total{mode!=\"idle\", mode!~\"io.*\"}",
        "http_requests_total{code!~\"5..\"}",
        "{__name__=~\"node_load(1|5)\", instance=\"host-00:9100\"}",
        "node_filesystem_avail_bytes{mountpoint=~\"/|/var\", fstype!=\"xfs\"}",
        "count({__name__=~\".+\"})",
        "nonexistent_metric",
        "1",
        "-2.5",
        "Inf",
        "NaN",
    ]);
    plan.instants(&[
        "\"a string\"",
        "node_load1{instance=\"host-01:9100\"}[2m]",
        "up{job=\"api\"}[1m] offset 10m",
        "node_load1{instance=\"host-03:9100\"}[3m] @ AT_EARLY",
        "http_requests_total{code=\"500\", instance=\"host-02:9100\"}[1m]",
        "node_procs_running{instance=\"host-09:9100\"}[10m]",
        "node_procs_running{instance=\"host-09:9100\"}[10m] @ AT_LATE",
        "node_load1{instance=\"host-09:9100\"}[2m] @ AT_DEPARTURE",
        "node_load1{instance=\"host-07:9100\"}[15m] @ AT_GAP",
    ]);
}

fn range_functions(plan: &mut Plan) {
    let counter_functions = [
        "rate", "irate", "increase", "resets", "changes", "delta", "idelta",
    ];
    for (function_index, function) in counter_functions.iter().enumerate() {
        for (metric_index, metric) in COUNTERS.iter().enumerate() {
            let range = RANGES[(function_index + metric_index) % RANGES.len()];
            let query = format!("{function}({metric}[{range}])");
            if metric_index == 0 {
                plan.both(&query);
            } else {
                plan.instant(&query);
            }
        }
    }
    let gauge_functions = [
        "delta",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "present_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "absent_over_time",
    ];
    for (function_index, function) in gauge_functions.iter().enumerate() {
        for (metric_index, metric) in GAUGES.iter().enumerate() {
            let range = RANGES[(function_index + metric_index) % RANGES.len()];
            let query = format!("{function}({metric}[{range}])");
            if metric_index == function_index % GAUGES.len() {
                plan.both(&query);
            } else {
                plan.instant(&query);
            }
        }
    }
    for (index, phi) in ["0", "0.25", "0.5", "0.9", "1", "-0.5", "1.5"]
        .iter()
        .enumerate()
    {
        let metric = GAUGES[index % GAUGES.len()];
        plan.both(&format!("quantile_over_time({phi}, {metric}[10m])"));
    }
    for (index, seconds) in ["0", "600", "-300", "3600"].iter().enumerate() {
        let metric = GAUGES[index % GAUGES.len()];
        plan.both(&format!("predict_linear({metric}[10m], {seconds})"));
    }
    for (index, (smoothing, trend)) in [("0.5", "0.5"), ("0.1", "0.9"), ("0.9", "0.1")]
        .iter()
        .enumerate()
    {
        let metric = GAUGES[index % GAUGES.len()];
        plan.both(&format!(
            "holt_winters({metric}[10m], {smoothing}, {trend})"
        ));
    }
    // A counter starting from zero inside the window (see KNOWN_DIFFERENCES), and queries
    // over it that do not depend on the zero-point limit.
    plan.instants(&[
        "increase(batch_jobs_completed_total[10m] @ AT_EARLY)",
        "delta(batch_jobs_completed_total[10m] @ AT_EARLY)",
        "increase(batch_jobs_completed_total[10m] @ AT_LATE)",
        "rate(batch_jobs_completed_total[30m] @ AT_LATE)",
    ]);
    plan.range_in("rate(batch_jobs_completed_total[10m])", RANGE_WINDOWS_MS[0]);
    plan.boths(&[
        "absent_over_time(nonexistent_metric[5m])",
        "absent_over_time(node_load1{instance=\"host-09:9100\", job=\"node\"}[5m] @ AT_LATE)",
        "absent(up{instance=\"host-09:9100\"} @ AT_LATE)",
        "present_over_time(up{instance=\"host-08:9100\"}[20m])",
        "rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])",
        "increase(node_forks_total[1h])",
        "rate(node_cpu_seconds_total{mode=\"idle\"}[2m])",
        "irate(http_requests_total{code=\"500\"}[5m])",
        "deriv(node_memory_MemAvailable_bytes[30m])",
        "changes(up[30m])",
        "resets(http_requests_total[1h])",
    ]);
}

fn instant_functions(plan: &mut Plan) {
    plan.boths(&[
        // Arithmetic and rounding.
        "abs(node_hwmon_temp_celsius - 55)",
        "ceil(node_load1)",
        "floor(node_load1)",
        "round(node_load1)",
        "round(node_load1, 0.25)",
        "round(node_hwmon_temp_celsius, 5)",
        "sqrt(node_load1)",
        "sqrt(node_hwmon_temp_celsius - 55)",
        "exp(node_load1)",
        "exp(node_memory_MemAvailable_bytes)",
        "ln(node_load1)",
        "ln(node_hwmon_temp_celsius - 55)",
        "log2(node_memory_MemAvailable_bytes)",
        "log10(node_filesystem_avail_bytes)",
        "log10(node_procs_running - node_procs_running)",
        "sgn(node_hwmon_temp_celsius - 55)",
        "clamp(node_load1, 0.5, 1.5)",
        "clamp(node_load1, 2, 1)",
        "clamp_max(node_load1, 1)",
        "clamp_min(node_load1, 1)",
        // Trigonometry.
        "sin(node_load1)",
        "cos(node_load1)",
        "tan(node_load1)",
        "asin(clamp(node_load1 - 1, -1, 1))",
        "acos(clamp(node_load1 - 1, -1, 1))",
        "atan(node_hwmon_temp_celsius)",
        "sinh(node_load1)",
        "cosh(node_load1)",
        "tanh(node_load1 - 1)",
        "asinh(node_hwmon_temp_celsius - 55)",
        "acosh(node_load1 + 1)",
        "atanh(clamp(node_load1 - 1, -0.99, 0.99))",
        "asin(node_load1)",
        "deg(node_load1)",
        "rad(node_hwmon_temp_celsius)",
        "pi()",
        // Time.
        "time()",
        "minute()",
        "hour()",
        "day_of_week()",
        "day_of_month()",
        "day_of_year()",
        "days_in_month()",
        "month()",
        "year()",
        "timestamp(node_load1)",
        "timestamp(up{job=\"api\"} offset 7m)",
        "timestamp(rate(node_forks_total[5m]))",
        "hour(timestamp(node_load1))",
        "minute(node_boot_time_seconds)",
        "day_of_week(node_boot_time_seconds)",
        "day_of_month(node_boot_time_seconds)",
        "month(node_boot_time_seconds)",
        "year(node_boot_time_seconds)",
        "days_in_month(node_boot_time_seconds)",
        "day_of_year(vector(time()))",
        "time() - node_boot_time_seconds",
        // Labels.
        "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
        "label_replace(up, \"host\", \"$1\", \"instance\", \"nomatch(.*)\")",
        "label_replace(node_load1, \"dc\", \"\", \"dc\", \".*\")",
        "label_replace(rate(http_requests_total[5m]), \"class\", \"${1}xx\", \"code\", \"(.).*\")",
        "label_join(up, \"target\", \"/\", \"job\", \"instance\")",
        "label_join(node_filesystem_avail_bytes, \"fs\", \",\", \"device\", \"mountpoint\", \"fstype\")",
        "label_join(up, \"empty\", \"-\")",
        "label_join(up, \"job\", \"-\")",
        // Absence, order, type conversion.
        "absent(nonexistent_metric)",
        "absent(nonexistent_metric{job=\"node\", instance=~\"x.*\"})",
        "absent(up)",
        "absent(up{instance=\"host-09:9100\"})",
        "absent(sum(nonexistent_metric))",
        "absent(nonexistent_metric{job=\"a\", job=\"b\"})",
        "sort(node_load1)",
        "sort_desc(rate(node_cpu_seconds_total[5m]))",
        "sort(sum by (dc) (node_load1))",
        "scalar(sum(up))",
        "scalar(up)",
        "scalar(node_load1{instance=\"host-00:9100\"})",
        "vector(1)",
        "vector(time())",
        "vector(scalar(sum(node_procs_running)))",
        "node_load1 * scalar(count(up))",
        // Histograms.
        "histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.99, sum by (le, handler) (rate(http_request_duration_seconds_bucket[10m])))",
        "histogram_quantile(0, sum by (le) (rate(rpc_duration_seconds_bucket[5m])))",
        "histogram_quantile(1, sum by (le, dc) (rate(rpc_duration_seconds_bucket[5m])))",
        "histogram_quantile(-0.5, sum by (le) (rate(rpc_duration_seconds_bucket[5m])))",
        "histogram_quantile(1.5, sum by (le) (rate(rpc_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.9, sum without (instance) (increase(http_request_duration_seconds_bucket[20m])))",
        "histogram_quantile(0.75, http_request_duration_seconds_bucket)",
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket{handler=\"/metrics\"}[1m])))",
        "histogram_quantile(0.5, rate(node_load1[5m]))",
        "histogram_count(rate(http_request_duration_seconds_count[5m]))",
        "histogram_sum(rate(http_request_duration_seconds_sum[5m]))",
        "histogram_fraction(0, 0.1, rate(http_request_duration_seconds_bucket[5m]))",
    ]);
}

fn aggregations(plan: &mut Plan) {
    let inputs = [
        "rate(node_cpu_seconds_total[5m])",
        "node_load1",
        "node_filesystem_avail_bytes",
        "http_requests_total",
    ];
    let operators = [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ];
    for (operator_index, operator) in operators.iter().enumerate() {
        let input = inputs[operator_index % inputs.len()];
        plan.both(&format!("{operator}({input})"));
        plan.both(&format!("{operator} by (dc) ({input})"));
        plan.instant(&format!("{operator}({input}) without (instance, cpu)"));
    }
    plan.boths(&[
        "topk(3, node_load1)",
        "topk(2, rate(node_cpu_seconds_total[5m])) by (dc)",
        "bottomk(3, node_hwmon_temp_celsius)",
        "bottomk(1, rate(http_requests_total[5m])) without (code)",
        "topk(0, node_load1)",
        "topk(100, up)",
        "quantile(0.5, node_load1)",
        "quantile(0.9, rate(node_cpu_seconds_total[5m])) by (mode)",
        "quantile(0, node_hwmon_temp_celsius)",
        "quantile(1, node_hwmon_temp_celsius) by (sensor)",
        "quantile(-1, node_load1)",
        "quantile(2, node_load1)",
        "count_values(\"load\", round(node_load1))",
        "count_values(\"up_value\", up) by (job)",
        "count_values(\"running\", node_procs_running) without (instance)",
        "sum(node_cpu_seconds_total) by (nonexistent_label)",
        "avg without (cpu, mode) (rate(node_cpu_seconds_total[5m]))",
        "count by (__name__) ({__name__=~\"node_load.*|node_procs_running\"})",
        "group by (dc, job) (up)",
        "sum by (instance) (rate(node_network_receive_bytes_total[5m]))",
        "max by (device) (rate(node_disk_written_bytes_total[20m]))",
        "min without (sensor) (node_hwmon_temp_celsius)",
        "stddev by (mode) (rate(node_cpu_seconds_total[1m]))",
        "avg(node_memory_MemAvailable_bytes)",
        "sum(rate(http_requests_total[5m])) by (handler, code)",
        "count(up == 1) by (job)",
        "sum(sum by (dc) (node_load1))",
        "topk(1, sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m])))",
    ]);
}

fn binary_operators(plan: &mut Plan) {
    plan.boths(&[
        // Vector and vector.
        "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
        "node_memory_MemAvailable_bytes / on(instance) node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes / node_filesystem_size_bytes * 100",
        "node_filesystem_size_bytes - node_filesystem_avail_bytes",
        "node_load1 - node_load5",
        "node_load1 * node_load5",
        "node_load1 % node_load5",
        "node_load1 ^ node_load5",
        "node_load5 / (node_load1 - node_load1)",
        "rate(node_cpu_seconds_total[5m]) / on(instance) group_left sum by (instance) (rate(node_cpu_seconds_total[5m]))",
        "sum by (instance) (rate(node_cpu_seconds_total[5m])) / on(instance) group_right rate(node_cpu_seconds_total{mode=\"idle\"}[5m])",
        "node_load1 * on(instance) group_left(nodename, release) node_uname_info",
        "rate(http_requests_total[5m]) / ignoring(code) group_left sum without(code) (rate(http_requests_total[5m]))",
        "up{job=\"node\"} + ignoring(job) up{job=\"api\"}",
        // Comparisons.
        "node_load1 > 1",
        "node_load1 > bool 1",
        "node_load1 >= node_load5",
        "node_load1 < bool node_load5",
        "node_procs_running == 3",
        "node_procs_running != bool 3",
        "node_load1 <= 1",
        "up == 0",
        "up{job=\"api\"} == bool 0",
        "1 < bool 2",
        "2 == bool 2",
        "time() - node_boot_time_seconds > bool 200000",
        "0.8 < node_load1",
        // Set operators.
        "node_load1 and node_load5 > 1",
        "up{job=\"node\"} and on(instance) node_load1 > 1",
        "node_load1 or node_load5",
        "node_load1 > 1.2 or node_load1 < 0.6",
        "node_load1 unless node_load1 > 1",
        "up unless on(instance) node_load1 > 1.5",
        "rate(http_requests_total[5m]) and ignoring(code) rate(http_requests_total{code=\"500\"}[5m]) > 0.01",
        "vector(1) or up{instance=\"host-00:9100\"}",
        // Scalars.
        "2 * node_load1",
        "node_load1 - 1",
        "1 - node_load1",
        "10 / node_load1",
        "node_load1 % 0.3",
        "2 ^ node_load1",
        "node_load1 ^ 0.5",
        "-node_load1",
        "- -node_load1",
        "1 + 2 * 3",
        "2 ^ 3 ^ 2",
        "-2 ^ 2",
        "(1 + 2) * 3",
        "7 % 3",
        "1 / 0",
        "-1 / 0",
        "0 / 0",
        "5 > bool 3",
        "2 ^ 0.5",
        "node_load1 + time() - time()",
    ]);
}

fn modifiers_and_subqueries(plan: &mut Plan) {
    let queries = [
        // Offsets, negative ones included.
        "node_load1 offset 10m",
        "node_load1 offset -10m",
        "rate(node_cpu_seconds_total[5m] offset 30m)",
        "sum by (dc) (up offset 1h)",
        "node_load1 - node_load1 offset 1h",
        "max_over_time(node_load1[10m] offset -5m)",
        // @.
        "node_load1 @ AT_EARLY",
        "rate(http_requests_total[5m] @ AT_LATE)",
        "node_load1 @ AT_EARLY offset 10m",
        "node_load1 offset 10m @ AT_LATE",
        "node_load1 @ start()",
        "node_load1 @ end()",
        "sum by (mode) (rate(node_cpu_seconds_total[5m] @ end()))",
        "max_over_time(node_load1[10m] @ AT_LATE offset -5m)",
        "timestamp(node_load1 @ AT_EARLY)",
        "node_load1 / node_load1 @ start()",
        // Subqueries.
        "max_over_time(rate(node_cpu_seconds_total[5m])[30m:1m])",
        "avg_over_time(node_load1[10m:2m])",
        "min_over_time(sum by (dc) (rate(http_requests_total[5m]))[15m:5m] offset 10m)",
        "max_over_time(node_load1[30m:])",
        "rate(http_requests_total[10m:1m])",
        "deriv(avg(node_load1)[20m:1m])",
        "quantile_over_time(0.9, node_hwmon_temp_celsius[20m:1m])",
        "sum_over_time(up[10m:1m] @ AT_EARLY)",
        "count_over_time(node_load1[5m:1m])",
        "max_over_time(max_over_time(node_load1[5m])[20m:5m])",
        "last_over_time(node_procs_running[10m:1m] offset -5m)",
        "stddev_over_time(deriv(node_load1[5m])[10m:1m])",
        "holt_winters(avg(node_load1)[15m:1m], 0.3, 0.3)",
        "changes(up[30m:1m])",
        "avg_over_time(sum(node_load1)[1h:10m] @ end())",
    ];
    plan.boths(&queries);
    plan.instant("rate(node_load1[5m])[10m:2m]");
    plan.instant("node_load1[1m30s] offset 35m");
    plan.instant("node_load1[20m:5m] @ AT_EARLY");
}

/// Replaces the names of [`AT_TIMES`] with their Unix times in seconds.
fn with_at_times(query: &str) -> String {
    AT_TIMES
        .iter()
        .fold(query.to_owned(), |replaced, (name, offset_ms)| {
            let seconds = (BASE_MS + offset_ms) / SECOND_MS;
            replaced.replace(name, &seconds.to_string())
        })
}

/// NaN and infinities flowing through aggregations and operators, literals, durations,
/// matchers, label rewrites into the metric name, and the departed host in range queries.
fn edge_cases(plan: &mut Plan) {
    plan.boths(&[
        // NaN (ln of negative numbers) and infinities in aggregations.
        "sum(ln(node_hwmon_temp_celsius - 55))",
        "avg by (dc) (ln(node_hwmon_temp_celsius - 55))",
        "min(ln(node_hwmon_temp_celsius - 55))",
        "max by (sensor) (ln(node_hwmon_temp_celsius - 55))",
        "count(ln(node_hwmon_temp_celsius - 55))",
        "stddev(ln(node_hwmon_temp_celsius - 55))",
        "quantile(0.5, ln(node_hwmon_temp_celsius - 55))",
        "topk(3, ln(node_hwmon_temp_celsius - 55))",
        "bottomk(3, ln(node_hwmon_temp_celsius - 55))",
        "avg(node_load5 / (node_load1 - node_load1))",
        "sum by (dc) (1 / (node_load1 - node_load1))",
        "max(-1 / (node_load1 - node_load1))",
        "stdvar(1 / (node_load1 - node_load1))",
        "sum(node_network_receive_bytes_total)",
        "ln(node_hwmon_temp_celsius - 55) > 0",
        "ln(node_hwmon_temp_celsius - 55) == bool ln(node_hwmon_temp_celsius - 55)",
        "quantile_over_time(0.5, ln(node_hwmon_temp_celsius - 55)[10m:1m])",
        "max_over_time(ln(node_hwmon_temp_celsius - 55)[10m:1m])",
        "clamp_min(node_load1, NaN)",
        "round(node_load1, 0)",
        "quantile(NaN, node_load1)",
        "topk(-1, node_load1)",
        "topk(2 + 1, node_load1)",
        "vector(0 / 0)",
        // Literals, durations, comments.
        "0x10 + 1",
        "1e3 * 2",
        ".5 * 4",
        "-Inf",
        "rate(node_context_switches_total[1h30m])",
        "sum(up) # a comment",
        "-time()",
        "scalar(vector(1)) + 1",
        // Matchers.
        "up{instance=~\"host-0[0-3]:9100\"}",
        "up{instance=~\"host-0\"}",
        "up{instance!~\"host-0[0-4]:9100\", job!=\"\"}",
        "up{job=~\"api|\"}",
        "up{nonexistent_label=\"\"}",
        "{__name__=\"up\"}",
        "{__name__=~\"up|node_load1\", instance=\"host-01:9100\"}",
        // Rewriting the metric name.
        "label_replace(up, \"__name__\", \"renamed_$1\", \"job\", \"(.*)\")",
        "label_join(node_load1, \"__name__\", \"_\", \"job\", \"dc\")",
        "node_load1 * on(instance) group_left(job) up{job=\"api\"}",
        "node_load1 and on() vector(1)",
        "node_load1 or on(instance) node_load5",
        // The departed host over the range windows.
        "absent_over_time(up{instance=\"host-09:9100\", job=\"node\"}[5m])",
        "present_over_time(up{instance=\"host-09:9100\"}[5m])",
        "last_over_time(node_load1{instance=~\"host-0[89]:9100\"}[10m])",
        "resets(up[30m])",
        "count_over_time(node_load1{instance=~\"host-0[79]:9100\"}[10m])",
        "node_procs_running{instance=~\"host-0[79]:9100\"}",
        "rate(http_requests_total{instance=~\"host-0[79]:9100\"}[5m])",
        "timestamp(up{instance=~\"host-0[79]:9100\"})",
        "max_over_time(node_load1{instance=\"host-07:9100\"}[2m:1m])",
        "scalar(node_load1)",
        "sort_desc(node_load1)",
        // Parameters computed per step.
        "clamp(node_load1, scalar(min(node_load1)), 1)",
        "predict_linear(node_load1[10m], scalar(count(up)))",
        "round(node_load1, scalar(vector(0.1)))",
        "quantile_over_time(scalar(vector(0.5)), node_load1[5m])",
        "topk(scalar(count(up) / 8), node_load1)",
        "quantile(scalar(avg(node_load1)) - 0.5, node_hwmon_temp_celsius)",
        "histogram_quantile(scalar(vector(0.9)), sum by (le) (rate(rpc_duration_seconds_bucket[5m])))",
        "holt_winters(node_load1[10m], scalar(vector(0.4)), 0.6)",
        "absent({__name__=~\"nonexistent.*\"})",
        // Overflow: sums past the largest float, means that must not overflow.
        "sum(node_load1 * 5e307)",
        "avg(node_load1 * 5e307)",
        "avg by (dc) (node_load1 * 5e307)",
        "avg_over_time((node_load1 * 5e307)[10m:1m])",
        "sum_over_time((node_load1 * 5e307)[10m:1m])",
        "avg(node_load1 * 1e308)",
        // Formatting of values as label values.
        "count_values(\"nan\", node_hwmon_temp_celsius{sensor=\"temp3\"} * 0)",
        "count_values(\"bytes\", node_memory_MemTotal_bytes)",
        "count_values(\"boot\", node_boot_time_seconds)",
        "count_values(\"tiny\", round(node_load1, 0.1) * 1e-9)",
        "count_values(\"huge\", node_filesystem_size_bytes * 1e15)",
        // Constant series.
        "stddev_over_time(node_memory_MemTotal_bytes[10m])",
        "stddev by (mountpoint) (node_filesystem_size_bytes)",
        "deriv(node_filesystem_size_bytes[10m])",
        "predict_linear(node_boot_time_seconds[5m], 3600)",
        // Label values with quotes, backslashes and non-ASCII letters.
        "node_filesystem_avail_bytes{mountpoint=~\"/mnt/ü.*\"}",
        "label_replace(node_filesystem_size_bytes, \"share\", \"$1\", \"mountpoint\", \"/mnt/(.*)\")",
        // A histogram without its +Inf bucket.
        "histogram_quantile(0.5, rate(http_request_duration_seconds_bucket{le!=\"+Inf\"}[5m]))",
        // NaN samples in range functions.
        "changes(node_hwmon_temp_celsius{sensor=\"temp3\"}[10m])",
        "max_over_time(node_hwmon_temp_celsius{sensor=\"temp3\"}[2m])",
        "min_over_time(node_hwmon_temp_celsius{sensor=\"temp3\"}[2m])",
        "avg_over_time(node_hwmon_temp_celsius{sensor=\"temp3\"}[5m])",
        "quantile_over_time(0.5, node_hwmon_temp_celsius{sensor=\"temp3\"}[5m])",
        "deriv(node_hwmon_temp_celsius{sensor=\"temp3\"}[5m])",
        "holt_winters(node_hwmon_temp_celsius{sensor=\"temp3\"}[5m], 0.5, 0.5)",
        "delta(node_hwmon_temp_celsius{sensor=\"temp3\"}[5m])",
        "max(node_hwmon_temp_celsius) by (instance)",
        "topk(1, node_hwmon_temp_celsius) by (instance)",
    ]);
    // Two series that become one label set at steps where only one of them exists: a range
    // query merges them into one output series.
    let merged = "label_replace(up{instance=\"host-09:9100\", job=\"node\"} \
                  or up{instance=\"host-08:9100\", job=\"node\"} offset 1h, \
                  \"instance\", \"merged\", \"\", \"\")";
    plan.range_in(merged, RANGE_WINDOWS_MS[0]);
    plan.range_in(merged, RANGE_WINDOWS_MS[2]);
}

fn errors(plan: &mut Plan) {
    plan.instants(&[
        // Parse and type errors: bad_data.
        "sum(",
        "rate(node_load1)",
        "node_load1[5m] + 1",
        "node_load1{",
        "up{job=~\"(\"}",
        "unknown_function(up)",
        "topk(node_load1)",
        "histogram_quantile(node_load1)",
        "1 and 1",
        "sum(node_load1) offset 5m",
        "rate(node_load1[5m])[10m]",
        "\"a\" + 1",
        "{job=~\".*\"}",
        "quantile_over_time(\"x\", node_load1[5m])",
        "time() offset 5m",
        "label_replace(up, \"host\", \"$1\")",
        "rate(node_load1[0s])",
        "absent(node_load1[5m])",
        "predict_linear(node_load1, 100)",
        "round(node_load1[5m])",
        "1 +",
        "1 > 2",
        "node_load1 offset 1h offset 1h",
        "node_load1 @ start() @ end()",
        "sum(up) by (dc) without (job)",
        "up and bool up",
        // Evaluation errors: execution.
        "node_cpu_seconds_total + on(instance) node_cpu_seconds_total",
        "node_cpu_seconds_total * on(instance) node_boot_time_seconds",
        "node_boot_time_seconds * on(instance) group_left node_cpu_seconds_total",
        "label_replace(node_cpu_seconds_total, \"mode\", \"x\", \"\", \"\")",
        "label_replace(up, \"invalid-label\", \"x\", \"\", \"\")",
        "label_replace(up, \"x\", \"$1\", \"instance\", \"(\")",
        "holt_winters(node_load1[10m], 1.5, 0.5)",
        "holt_winters(node_load1[10m], 0.5, 0)",
        "count_values(\"invalid-name\", up)",
        "sum without (job) (up) / on(dc) sum without (job, instance) (up)",
    ]);
    plan.range("node_load1[5m]");
    plan.range("\"a string\"");
    plan.range("rate(node_load1)");
    plan.range("node_cpu_seconds_total / on(instance) node_load1");
    // Request limits: 11,000 steps are allowed, 11,001 and an end before the start are not.
    let start_ms = BASE_MS + 30 * SECOND_MS;
    plan.range_in(
        "sum(up)",
        (start_ms, start_ms + 11_000 * SECOND_MS, SECOND_MS),
    );
    plan.range_in(
        "sum(up)",
        (start_ms, start_ms + 11_001 * SECOND_MS, SECOND_MS),
    );
    plan.range_in("sum(up)", (start_ms, start_ms - MINUTE_MS, MINUTE_MS));
}

// ---------------------------------------------------------------------------------------
// Answers and their comparison

/// A point in time with its value.
#[derive(Debug, Clone, Copy)]
struct Point {
    t: i64,
    v: f64,
}

/// One answer to a query, shaped the same for both systems. Vectors and matrices are sorted
/// by their canonical label strings.
#[derive(Debug)]
enum Answer {
    Scalar(Point),
    String { t: i64, value: String },
    Vector(Vec<(String, Point)>),
    Matrix(Vec<(String, Vec<Point>)>),
    Error { error_type: String, message: String },
}

impl Answer {
    fn kind(&self) -> &'static str {
        match self {
            Answer::Scalar(_) => "scalar",
            Answer::String { .. } => "string",
            Answer::Vector(_) => "vector",
            Answer::Matrix(_) => "matrix",
            Answer::Error { .. } => "error",
        }
    }

    /// A bounded rendering for mismatch reports.
    fn summary(&self) -> String {
        const SERIES_SHOWN: usize = 4;
        const POINTS_SHOWN: usize = 6;
        let mut out = String::new();
        match self {
            Answer::Scalar(point) => {
                let _ = write!(out, "scalar {} @{}", point.v, point.t);
            }
            Answer::String { t, value } => {
                let _ = write!(out, "string {value:?} @{t}");
            }
            Answer::Vector(samples) => {
                let _ = write!(out, "vector of {}:", samples.len());
                for (labels, point) in samples.iter().take(SERIES_SHOWN) {
                    let _ = write!(out, "\n      {labels} => {} @{}", point.v, point.t);
                }
                if samples.len() > SERIES_SHOWN {
                    out.push_str("\n      ...");
                }
            }
            Answer::Matrix(series) => {
                let _ = write!(out, "matrix of {}:", series.len());
                for (labels, points) in series.iter().take(SERIES_SHOWN) {
                    let _ = write!(out, "\n      {labels} ({} points):", points.len());
                    for point in points.iter().take(POINTS_SHOWN) {
                        let _ = write!(out, " {}@{}", point.v, point.t);
                    }
                    if points.len() > POINTS_SHOWN {
                        out.push_str(" ...");
                    }
                }
                if series.len() > SERIES_SHOWN {
                    out.push_str("\n      ...");
                }
            }
            Answer::Error {
                error_type,
                message,
            } => {
                let _ = write!(out, "error {error_type}: {message}");
            }
        }
        out
    }
}

/// `{a="1", b="2"}` with names sorted: the same rendering for both systems.
fn canonical_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = pairs.into_iter().collect();
    let rendered: Vec<String> = sorted
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    format!("{{{}}}", rendered.join(", "))
}

fn lookout_labels(labels: &Labels) -> String {
    canonical_labels(
        labels
            .iter()
            .map(|label| (label.name.as_str(), label.value.as_str())),
    )
}

fn lookout_answer(result: Result<QueryOutput, QueryError>) -> Answer {
    let output = match result {
        Ok(output) => output,
        Err(error) => {
            return Answer::Error {
                error_type: error.error_type().to_owned(),
                message: error.to_string(),
            }
        }
    };
    match output.value {
        QueryValue::Scalar { t, v } => Answer::Scalar(Point { t, v }),
        QueryValue::String { t, v } => Answer::String { t, value: v },
        QueryValue::Vector(samples) => {
            let mut vector: Vec<(String, Point)> = samples
                .iter()
                .map(|sample| {
                    let point = Point {
                        t: sample.t,
                        v: sample.v,
                    };
                    (lookout_labels(&sample.labels), point)
                })
                .collect();
            vector.sort_by(|a, b| a.0.cmp(&b.0));
            Answer::Vector(vector)
        }
        QueryValue::Matrix(series) => {
            let mut matrix: Vec<(String, Vec<Point>)> = series
                .iter()
                .map(|one| {
                    let points = one
                        .points
                        .iter()
                        .map(|point| Point {
                            t: point.t,
                            v: point.v,
                        })
                        .collect();
                    (lookout_labels(&one.labels), points)
                })
                .collect();
            matrix.sort_by(|a, b| a.0.cmp(&b.0));
            Answer::Matrix(matrix)
        }
    }
}

/// Milliseconds from a Prometheus API timestamp (float seconds).
fn json_time_ms(value: &Value) -> Result<i64, String> {
    let seconds = value
        .as_f64()
        .ok_or_else(|| format!("timestamp {value} is not a number"))?;
    Ok((seconds * 1000.0).round() as i64)
}

/// A value from a Prometheus API sample value (a string, with `NaN`, `+Inf`, `-Inf`).
fn json_value(value: &Value) -> Result<f64, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("sample value {value} is not a string"))?;
    text.parse()
        .map_err(|_| format!("sample value {text:?} is not a number"))
}

/// A `[time, "value"]` pair.
fn json_point(pair: &Value) -> Result<Point, String> {
    Ok(Point {
        t: json_time_ms(&pair[0])?,
        v: json_value(&pair[1])?,
    })
}

fn json_labels(metric: &Value) -> Result<String, String> {
    let map = metric
        .as_object()
        .ok_or_else(|| format!("metric {metric} is not an object"))?;
    let mut pairs = Vec::new();
    for (name, json_value) in map {
        let value = json_value
            .as_str()
            .ok_or_else(|| format!("label value {json_value} is not a string"))?;
        pairs.push((name.as_str(), value));
    }
    Ok(canonical_labels(pairs))
}

fn prometheus_answer(body: &Value) -> Result<Answer, String> {
    if body["status"] == "error" {
        return Ok(Answer::Error {
            error_type: body["errorType"].as_str().unwrap_or("?").to_owned(),
            message: body["error"].as_str().unwrap_or("?").to_owned(),
        });
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => Ok(Answer::Scalar(json_point(result)?)),
        Some("string") => Ok(Answer::String {
            t: json_time_ms(&result[0])?,
            value: result[1].as_str().unwrap_or_default().to_owned(),
        }),
        Some("vector") => {
            let mut vector = Vec::new();
            for sample in result.as_array().ok_or("vector result is not an array")? {
                vector.push((
                    json_labels(&sample["metric"])?,
                    json_point(&sample["value"])?,
                ));
            }
            vector.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Answer::Vector(vector))
        }
        Some("matrix") => {
            let mut matrix = Vec::new();
            for series in result.as_array().ok_or("matrix result is not an array")? {
                let values = series["values"]
                    .as_array()
                    .ok_or("matrix values are not an array")?;
                let points = values.iter().map(json_point).collect::<Result<_, _>>()?;
                matrix.push((json_labels(&series["metric"])?, points));
            }
            matrix.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Answer::Matrix(matrix))
        }
        _ => Err(format!("unexpected response {body}")),
    }
}

/// Whether two values agree: NaN equals NaN, infinities equal themselves, finite values
/// within [`RELATIVE_TOLERANCE`] of the larger magnitude.
fn values_agree(ours: f64, theirs: f64) -> bool {
    if ours.is_nan() || theirs.is_nan() {
        return ours.is_nan() && theirs.is_nan();
    }
    if ours == theirs {
        return true;
    }
    if ours.is_infinite() || theirs.is_infinite() {
        return false;
    }
    (ours - theirs).abs() <= RELATIVE_TOLERANCE * ours.abs().max(theirs.abs())
}

fn points_agree(labels: &str, ours: &Point, theirs: &Point) -> Result<(), String> {
    if ours.t != theirs.t {
        return Err(format!(
            "{labels}: timestamp {} vs prometheus {}",
            ours.t, theirs.t
        ));
    }
    if !values_agree(ours.v, theirs.v) {
        return Err(format!(
            "{labels} @{}: value {} vs prometheus {}",
            ours.t, ours.v, theirs.v
        ));
    }
    Ok(())
}

/// Describes label sets found on one side only.
fn label_sets_agree<'a>(
    ours: impl Iterator<Item = &'a String>,
    theirs: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    const SHOWN: usize = 3;
    let ours: BTreeSet<&String> = ours.collect();
    let theirs: BTreeSet<&String> = theirs.collect();
    if ours == theirs {
        return Ok(());
    }
    let only_ours: Vec<&&String> = ours.difference(&theirs).take(SHOWN).collect();
    let only_theirs: Vec<&&String> = theirs.difference(&ours).take(SHOWN).collect();
    Err(format!(
        "label sets differ ({} vs prometheus {}): only ours {only_ours:?}, only prometheus {only_theirs:?}",
        ours.len(),
        theirs.len()
    ))
}

/// `Ok` when the answers agree, else the first difference found.
fn compare(ours: &Answer, theirs: &Answer) -> Result<(), String> {
    match (ours, theirs) {
        (
            Answer::Error { error_type, .. },
            Answer::Error {
                error_type: their_type,
                ..
            },
        ) => {
            if error_type == their_type {
                Ok(())
            } else {
                Err(format!("errorType {error_type} vs prometheus {their_type}"))
            }
        }
        (Answer::Scalar(point), Answer::Scalar(their_point)) => {
            points_agree("scalar", point, their_point)
        }
        (
            Answer::String { t, value },
            Answer::String {
                t: their_t,
                value: their_value,
            },
        ) => {
            if t == their_t && value == their_value {
                Ok(())
            } else {
                Err(format!(
                    "string {value:?}@{t} vs prometheus {their_value:?}@{their_t}"
                ))
            }
        }
        (Answer::Vector(samples), Answer::Vector(their_samples)) => {
            label_sets_agree(
                samples.iter().map(|(labels, _)| labels),
                their_samples.iter().map(|(labels, _)| labels),
            )?;
            if samples.len() != their_samples.len() {
                return Err(format!(
                    "{} samples vs prometheus {} (duplicate label sets)",
                    samples.len(),
                    their_samples.len()
                ));
            }
            for ((labels, point), (_, their_point)) in samples.iter().zip(their_samples) {
                points_agree(labels, point, their_point)?;
            }
            Ok(())
        }
        (Answer::Matrix(series), Answer::Matrix(their_series)) => {
            label_sets_agree(
                series.iter().map(|(labels, _)| labels),
                their_series.iter().map(|(labels, _)| labels),
            )?;
            if series.len() != their_series.len() {
                return Err(format!(
                    "{} series vs prometheus {} (duplicate label sets)",
                    series.len(),
                    their_series.len()
                ));
            }
            for ((labels, points), (_, their_points)) in series.iter().zip(their_series) {
                if points.len() != their_points.len() {
                    let times = |points: &[Point]| -> Vec<String> {
                        points.iter().map(|point| relative(point.t)).collect()
                    };
                    return Err(format!(
                        "{labels}: {} points vs prometheus {}: {:?} vs {:?}",
                        points.len(),
                        their_points.len(),
                        times(points),
                        times(their_points)
                    ));
                }
                for (point, their_point) in points.iter().zip(their_points) {
                    points_agree(labels, point, their_point)?;
                }
            }
            Ok(())
        }
        _ => Err(format!(
            "result type {} vs prometheus {}",
            ours.kind(),
            theirs.kind()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The two systems

/// Seconds with millisecond precision, as the Prometheus API takes times and steps.
fn api_seconds(millis: i64) -> String {
    format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000))
}

fn ask_prometheus(client: &reqwest::blocking::Client, base_url: &str, case: &Case) -> Answer {
    let request = match case.eval {
        Eval::Instant { time_ms } => client.post(format!("{base_url}/api/v1/query")).form(&[
            ("query", case.query.as_str()),
            ("time", &api_seconds(time_ms)),
        ]),
        Eval::Range {
            start_ms,
            end_ms,
            step_ms,
        } => client
            .post(format!("{base_url}/api/v1/query_range"))
            .form(&[
                ("query", case.query.as_str()),
                ("start", &api_seconds(start_ms)),
                ("end", &api_seconds(end_ms)),
                ("step", &api_seconds(step_ms)),
            ]),
    };
    let body: Value = request
        .send()
        .and_then(|response| response.json())
        .unwrap_or_else(|error| panic!("prometheus failed on {}: {error}", case.describe()));
    prometheus_answer(&body)
        .unwrap_or_else(|error| panic!("{}: bad prometheus answer: {error}", case.describe()))
}

fn ask_lookout(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    tsdb: &Tsdb,
    case: &Case,
) -> Answer {
    let result = match case.eval {
        Eval::Instant { time_ms } => {
            runtime.block_on(engine.instant_query(tsdb, &case.query, time_ms))
        }
        Eval::Range {
            start_ms,
            end_ms,
            step_ms,
        } => runtime.block_on(engine.range_query(tsdb, &case.query, start_ms, end_ms, step_ms)),
    };
    lookout_answer(result)
}

fn remote_write(client: &reqwest::blocking::Client, base_url: &str, batch: &WriteBatch) {
    let response = client
        .post(format!("{base_url}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(lookout_gateway::remote_write::encode(batch))
        .send()
        .expect("remote write to prometheus");
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert!(
        status.is_success(),
        "prometheus refused a remote write: {status} {text}"
    );
}

fn known_difference(case: &Case) -> Option<&'static KnownDifference> {
    KNOWN_DIFFERENCES.iter().find(|known| known.matches(case))
}

#[test]
fn promql_answers_agree_with_prometheus() {
    if !prometheus_installed() {
        println!("SKIPPED: `prometheus` is not on PATH (apt-get install prometheus; .ci/run does)");
        return;
    }
    let begun = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let _prometheus = start_prometheus(
        &client,
        dir.path(),
        port,
        "global:\n  evaluation_interval: 1m\n",
        &[
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=100y",
            "--enable-feature=promql-negative-offset",
        ],
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tsdb = Tsdb::in_memory(HeadOptions {
        max_future_ms: None,
        ..HeadOptions::default()
    })
    .unwrap();
    let series = generate();
    let samples_generated: usize = series.iter().map(|one| one.samples.len()).sum();
    let mut samples_written = 0;
    for batch in write_slices(&series) {
        remote_write(&client, &base_url, &batch);
        let outcome = runtime.block_on(tsdb.write(batch)).unwrap();
        assert_eq!(
            outcome.rejected_total(),
            0,
            "lookout rejected samples: {:?}",
            outcome.messages
        );
        samples_written += outcome.accepted;
    }
    assert_eq!(samples_written, samples_generated as u64);
    let loaded = begun.elapsed();

    let metric_names: BTreeSet<&str> = series
        .iter()
        .filter_map(|one| one.labels.metric_name())
        .collect();
    let cases = plan(&metric_names);
    for known in KNOWN_DIFFERENCES {
        assert!(
            cases.iter().any(|case| known.matches(case)),
            "KNOWN_DIFFERENCES names a query that is not run: {known:?}"
        );
    }
    // Prometheus answers over HTTP on another thread while Lookout evaluates here.
    let engine = Engine::default();
    let (theirs, ours) = std::thread::scope(|scope| {
        let prometheus_answers = scope.spawn(|| {
            cases
                .iter()
                .map(|case| ask_prometheus(&client, &base_url, case))
                .collect::<Vec<_>>()
        });
        let lookout_answers: Vec<Answer> = cases
            .iter()
            .map(|case| ask_lookout(&runtime, &engine, &tsdb, case))
            .collect();
        (prometheus_answers.join().unwrap(), lookout_answers)
    });

    let mut agreeing = 0;
    let mut both_failed = 0;
    let mut both_empty = 0;
    let mut unexpected = Vec::new();
    let mut known_still_differing = Vec::new();
    let mut known_now_agreeing = Vec::new();
    for ((case, our_answer), their_answer) in cases.iter().zip(&ours).zip(&theirs) {
        let verdict = compare(our_answer, their_answer);
        let known = known_difference(case);
        match (verdict, known) {
            (Ok(()), None) => {
                agreeing += 1;
                match our_answer {
                    Answer::Error { .. } => both_failed += 1,
                    Answer::Vector(samples) if samples.is_empty() => both_empty += 1,
                    Answer::Matrix(series) if series.is_empty() => both_empty += 1,
                    _ => {}
                }
            }
            (Ok(()), Some(known)) => {
                agreeing += 1;
                known_now_agreeing.push((case, known));
            }
            (Err(difference), Some(known)) => known_still_differing.push((case, known, difference)),
            (Err(difference), None) => {
                unexpected.push((case, difference, our_answer, their_answer))
            }
        }
    }

    for (index, (case, difference, our_answer, their_answer)) in unexpected.iter().enumerate() {
        if index < MISMATCHES_IN_FULL {
            println!(
                "MISMATCH {}\n  {difference}\n  lookout:    {}\n  prometheus: {}",
                case.describe(),
                our_answer.summary(),
                their_answer.summary()
            );
        } else {
            println!("MISMATCH {}: {difference}", case.describe());
        }
    }
    for (case, known, difference) in &known_still_differing {
        println!(
            "known difference {}: {difference} ({})",
            case.describe(),
            known.reason
        );
    }
    for (case, known) in &known_now_agreeing {
        println!(
            "NOW AGREES (remove it from KNOWN_DIFFERENCES): {} ({})",
            case.describe(),
            known.reason
        );
    }
    println!(
        "{} series, {samples_written} samples loaded in {:.1?}; {} queries ({both_failed} failing and {both_empty} empty on both sides) in {:.1?}",
        series.len(),
        loaded,
        cases.len(),
        begun.elapsed() - loaded
    );
    // Written to the process' stderr directly rather than through the test harness' captured
    // output, so that the pass rate shows in CI logs even when the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "differential: {agreeing}/{} queries agree with Prometheus 2.42",
        cases.len()
    );
    assert!(
        unexpected.is_empty(),
        "{} queries disagree with Prometheus 2.42 (see MISMATCH lines above)",
        unexpected.len()
    );
}
