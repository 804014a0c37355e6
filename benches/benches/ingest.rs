//! `ingest/<protocol>/decode`: one bench per decoder of `lookout-gateway`, each iteration one
//! request body through the decoder's public entry point (bytes in, `WriteBatch` out), the
//! way the gateway calls it once the body has been read.
//!
//! The bodies are generated here, deterministically, from the shared node_exporter-like
//! series (`lookout_benches::node_exporter_series`: ten labels each), in each protocol's
//! natural shape: 1000 series × 1 sample per request for the Prometheus protocols and
//! OpenTSDB, SDK measurement objects (a counter reports `count` and `rate`) for SOFALookout,
//! Metricbeat 6 `system` documents for `_bulk`. Before timing, each body is decoded once and
//! its sample count checked, so a decoder that refuses or skips the input cannot bench fast.
//! Path tags, grouping keys and headers are parsed outside the timed part: only the decoder
//! is measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookout_benches::{
    node_exporter_series, set_round, write_batches, SeriesSpec, ValueKind, XorShift64,
    BASE_TIMESTAMP_MS, JOB,
};
use lookout_gateway::exposition::Format;
use lookout_gateway::lookout::request::path_tags;
use lookout_gateway::lookout::{prom_push, sdk, Enrichment, Limits, Tags};
use lookout_gateway::metricbeat::decode_bulk;
use lookout_gateway::opentsdb::{decode_json, parse_telnet_line, PointWriter, TelnetCommand};
use lookout_gateway::pushgateway::{self, grouping_key};
use lookout_gateway::remote_write::MetricMetadata;
use lookout_gateway::scrape::samples::{scraped_samples, SampleRules};
use lookout_gateway::{compress_snappy_block, remote_write, remote_write2, DecodeLimits};
use lookout_model::{LabelLimits, TimestampMs, METRIC_NAME_LABEL};
use lookout_storage::WriteBatch;

/// The allocator `lookout-server` runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Series per request body.
const SERIES: usize = 1000;
/// `BASE_TIMESTAMP_MS` in seconds.
const BASE_SECONDS: i64 = BASE_TIMESTAMP_MS / 1000;
/// `BASE_TIMESTAMP_MS` as the SDK writes it (`yyyy-MM-dd'T'HH:mm:ss±HH:MM`, spec §11.5).
const SDK_TIME: &str = "2023-11-15T06:13:20+08:00";
/// `BASE_TIMESTAMP_MS` as Metricbeat writes `@timestamp`.
const BEAT_TIME: &str = "2023-11-14T22:13:20.000Z";
/// The sender's address every enrichment carries.
const CLIENT_IP: &str = "10.200.0.9";
/// Reporting step of the SOFALookout senders, seconds.
const STEP_SECONDS: f64 = 15.0;

/// One sample per series at the generator's first scrape.
fn sample_batch(series: &[SeriesSpec]) -> WriteBatch {
    let mut batches = write_batches(series, series.len());
    set_round(&mut batches, series, 0, 0);
    batches.pop().expect("one batch")
}

/// The metric name and the other labels of a series, minus the `skip`ped ones.
fn split_labels<'a>(
    labels: &'a lookout_model::Labels,
    skip: &[&str],
) -> (&'a str, Vec<(&'a str, &'a str)>) {
    let name = labels.metric_name().expect("generated series have names");
    let tags = labels
        .iter()
        .filter(|label| label.name != METRIC_NAME_LABEL && !skip.contains(&label.name.as_str()))
        .map(|label| (label.name.as_str(), label.value.as_str()))
        .collect();
    (name, tags)
}

fn is_counter(kind: ValueKind) -> bool {
    matches!(
        kind,
        ValueKind::Counter | ValueKind::ResettingCounter { .. }
    )
}

/// Indices of the series grouped by metric name (first appearance order), so that each
/// metric family is written once, as an exporter does.
fn by_family(series: &[SeriesSpec]) -> Vec<(&str, Vec<usize>)> {
    let mut families: Vec<(&str, Vec<usize>)> = Vec::new();
    for (index, spec) in series.iter().enumerate() {
        let name = spec.labels.metric_name().expect("named");
        match families.iter_mut().find(|(family, _)| *family == name) {
            Some((_, members)) => members.push(index),
            None => families.push((name, vec![index])),
        }
    }
    families
}

/// A text exposition body (0.0.4, or OpenMetrics with `# EOF`): `# HELP` and `# TYPE` per
/// family, then its samples without timestamps, the `skip`ped labels left out.
fn exposition_body(
    series: &[SeriesSpec],
    batch: &WriteBatch,
    skip: &[&str],
    format: Format,
) -> String {
    let mut out = String::new();
    for (name, members) in by_family(series) {
        let counter = is_counter(series[members[0]].kind);
        let family = match format {
            Format::OpenMetrics if counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = if counter { "counter" } else { "gauge" };
        writeln!(out, "# HELP {family} Generated {kind} of a node.").unwrap();
        writeln!(out, "# TYPE {family} {kind}").unwrap();
        for index in members {
            let (_, tags) = split_labels(&series[index].labels, skip);
            out.push_str(name);
            out.push('{');
            for (position, (key, value)) in tags.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write!(out, "{key}=\"{value}\"").unwrap();
            }
            writeln!(out, "}} {}", batch.series[index].samples[0].value).unwrap();
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A SOFALookout SDK body: one measurement object per series, joined by TAB, with the
/// SDK's `app` and `_type_` tags; counters report `count` and `rate`, gauges `value`.
/// Returns the body and the samples it holds.
fn sdk_body(series: &[SeriesSpec], batch: &WriteBatch) -> (String, usize) {
    let mut out = String::new();
    let mut samples = 0;
    for (spec, entry) in series.iter().zip(&batch.series) {
        if !out.is_empty() {
            out.push('\t');
        }
        let (name, tags) = split_labels(&spec.labels, &[]);
        let counter = is_counter(spec.kind);
        write!(
            out,
            "{{\"time\":\"{SDK_TIME}\",\"tags\":{{\"app\":\"node-agent\""
        )
        .unwrap();
        for (key, value) in tags {
            write!(out, ",\"{key}\":\"{value}\"").unwrap();
        }
        let value = entry.samples[0].value;
        if counter {
            let rate = value / STEP_SECONDS;
            write!(
                out,
                ",\"_type_\":\"c\"}},\"{name}\":{{\"count\":{},\"rate\":{rate:?}}}}}",
                value as i64
            )
            .unwrap();
            samples += 2;
        } else {
            write!(
                out,
                ",\"_type_\":\"g\"}},\"{name}\":{{\"value\":{value:?}}}}}"
            )
            .unwrap();
            samples += 1;
        }
    }
    (out, samples)
}

/// A body for `/lookout/metrics/app/<app>/step/<s>` as a non-SDK sender writes it: one object
/// per series, epoch-millisecond `time`, one `value` entry, `app` and `step` from the path.
fn lookout_metrics_body(series: &[SeriesSpec], batch: &WriteBatch) -> String {
    let mut out = String::new();
    for (spec, entry) in series.iter().zip(&batch.series) {
        if !out.is_empty() {
            out.push('\t');
        }
        let (name, tags) = split_labels(&spec.labels, &[]);
        write!(out, "{{\"time\":{BASE_TIMESTAMP_MS},\"tags\":{{").unwrap();
        for (position, (key, value)) in tags.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            write!(out, "\"{key}\":\"{value}\"").unwrap();
        }
        write!(
            out,
            "}},\"{name}\":{{\"value\":{:?}}}}}",
            entry.samples[0].value
        )
        .unwrap();
    }
    out
}

/// OpenTSDB tags of a series: the labels but `job` (eight tags, OpenTSDB's default limit),
/// values without spaces (not allowed in OpenTSDB tag values).
fn tsdb_tags(labels: &lookout_model::Labels) -> (&str, Vec<(&str, String)>) {
    let (name, tags) = split_labels(labels, &["job"]);
    let tags = tags
        .into_iter()
        .map(|(key, value)| (key, value.replace(' ', "_")))
        .collect();
    (name, tags)
}

/// An OpenTSDB `/api/put` body: a JSON array of data points, seconds timestamps.
fn opentsdb_json_body(series: &[SeriesSpec], batch: &WriteBatch) -> String {
    let points: Vec<serde_json::Value> = series
        .iter()
        .zip(&batch.series)
        .map(|(spec, entry)| {
            let (name, tags) = tsdb_tags(&spec.labels);
            let tags: serde_json::Map<String, serde_json::Value> = tags
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.into()))
                .collect();
            serde_json::json!({
                "metric": name,
                "timestamp": BASE_SECONDS,
                "value": entry.samples[0].value,
                "tags": tags,
            })
        })
        .collect();
    serde_json::to_string(&points).expect("serialisable")
}

/// OpenTSDB telnet `put` lines, as collectd's `write_tsdb` sends them.
fn opentsdb_telnet_body(series: &[SeriesSpec], batch: &WriteBatch) -> String {
    let mut out = String::new();
    for (spec, entry) in series.iter().zip(&batch.series) {
        let (name, tags) = tsdb_tags(&spec.labels);
        write!(out, "put {name} {BASE_SECONDS} {}", entry.samples[0].value).unwrap();
        for (key, value) in tags {
            write!(out, " {key}={value}").unwrap();
        }
        out.push('\n');
    }
    out
}

/// Sets `value` at the dotted `path` of a JSON object, creating the objects on the way.
fn set_path(document: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut node = document;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let object = node.as_object_mut().expect("objects on the path");
        if parts.peek().is_none() {
            object.insert(part.to_owned(), value);
            return;
        }
        node = object
            .entry(part.to_owned())
            .or_insert_with(|| serde_json::json!({}));
    }
}

/// A `_bulk` body of Metricbeat 6 `system` module documents (cpu, core, network, filesystem,
/// diskio, memory, load, process_summary) for `hosts` hosts, an `index` action before each.
/// Returns the body and the numeric leaves (samples) it holds.
fn metricbeat_body(hosts: usize) -> (String, usize) {
    let mut random = XorShift64::new(0xBEA7);
    let mut out = String::new();
    let mut samples = 0;
    let action = r#"{"index":{"_index":"metricbeat-6.8.23-2023.11.14","_type":"doc"}}"#;
    for host in 0..hosts {
        let hostname = format!("ip-10-1-{host}-2");
        let mut document = |metricset: &str,
                            fixed: &[(&str, serde_json::Value)],
                            leaves: &[&str],
                            random: &mut XorShift64| {
            let mut document = serde_json::json!({
                "@timestamp": BEAT_TIME,
                "metricset": {"name": metricset, "module": "system", "rtt": 115},
                "beat": {"name": hostname, "hostname": hostname, "version": "6.8.23"},
                "host": {"name": hostname},
            });
            for (path, value) in fixed {
                samples += usize::from(value.is_number());
                set_path(&mut document, path, value.clone());
            }
            for leaf in leaves {
                let value = random.below(1_000_000) as f64 / 1000.0;
                set_path(
                    &mut document,
                    &format!("system.{metricset}.{leaf}"),
                    value.into(),
                );
            }
            samples += leaves.len();
            out.push_str(action);
            out.push('\n');
            out.push_str(&serde_json::to_string(&document).expect("serialisable"));
            out.push('\n');
        };
        let modes = [
            "user", "system", "idle", "iowait", "irq", "nice", "softirq", "steal",
        ];
        let mut cpu: Vec<String> = vec!["cores".into(), "total.pct".into()];
        for mode in modes {
            cpu.push(format!("{mode}.pct"));
            cpu.push(format!("{mode}.norm.pct"));
        }
        let cpu: Vec<&str> = cpu.iter().map(String::as_str).collect();
        document("cpu", &[], &cpu, &mut random);
        let core: Vec<String> = modes.iter().map(|mode| format!("{mode}.pct")).collect();
        let core: Vec<&str> = core.iter().map(String::as_str).collect();
        for id in 0..8 {
            document("core", &[("system.core.id", id.into())], &core, &mut random);
        }
        for device in ["eth0", "eth1", "lo", "docker0"] {
            document(
                "network",
                &[("system.network.name", device.into())],
                &[
                    "in.bytes",
                    "in.packets",
                    "in.errors",
                    "in.dropped",
                    "out.bytes",
                    "out.packets",
                    "out.errors",
                    "out.dropped",
                ],
                &mut random,
            );
        }
        for (device, mount) in [
            ("/dev/nvme0n1p1", "/"),
            ("/dev/nvme1n1", "/var/lib/containerd"),
            ("tmpfs", "/run"),
            ("/dev/nvme0n1p15", "/boot/efi"),
        ] {
            document(
                "filesystem",
                &[
                    ("system.filesystem.device_name", device.into()),
                    ("system.filesystem.mount_point", mount.into()),
                    ("system.filesystem.type", "ext4".into()),
                ],
                &[
                    "available",
                    "free",
                    "total",
                    "used.bytes",
                    "used.pct",
                    "files",
                    "free_files",
                ],
                &mut random,
            );
        }
        for disk in ["nvme0n1", "nvme1n1", "nvme2n1", "nvme3n1"] {
            document(
                "diskio",
                &[("system.diskio.name", disk.into())],
                &[
                    "read.count",
                    "read.bytes",
                    "read.time",
                    "write.count",
                    "write.bytes",
                    "write.time",
                    "io.time",
                ],
                &mut random,
            );
        }
        document(
            "memory",
            &[],
            &[
                "total",
                "used.bytes",
                "used.pct",
                "free",
                "actual.free",
                "actual.used.bytes",
                "actual.used.pct",
                "swap.total",
                "swap.used.bytes",
                "swap.used.pct",
                "swap.free",
            ],
            &mut random,
        );
        document(
            "load",
            &[],
            &["1", "5", "15", "norm.1", "norm.5", "norm.15", "cores"],
            &mut random,
        );
        document(
            "process_summary",
            &[],
            &[
                "total", "running", "sleeping", "stopped", "zombie", "idle", "unknown",
            ],
            &mut random,
        );
    }
    (out, samples)
}

/// Metadata of every family of `series`, as remote write 2.0 carries it per series.
fn family_metadata(series: &[SeriesSpec]) -> Vec<MetricMetadata> {
    by_family(series)
        .into_iter()
        .map(|(name, members)| {
            let counter = is_counter(series[members[0]].kind);
            let unit = if name.contains("bytes") {
                "bytes"
            } else if name.contains("seconds") {
                "seconds"
            } else {
                ""
            };
            MetricMetadata {
                metric: name.to_owned(),
                kind: if counter { "counter" } else { "gauge" },
                help: format!("Generated {name} of a node."),
                unit: unit.to_owned(),
            }
        })
        .collect()
}

/// Benches one decoder: `decode` returns the samples it produced, which must be `samples`.
fn bench_decoder(
    c: &mut Criterion,
    protocol: &str,
    body: &[u8],
    samples: usize,
    decode: impl Fn(&[u8]) -> usize,
) {
    let decoded = decode(body);
    assert_eq!(
        decoded, samples,
        "{protocol}: the body decodes to {decoded} samples, {samples} expected"
    );
    eprintln!(
        "ingest/{protocol}: {} bytes, {samples} samples, {:.1} bytes/sample",
        body.len(),
        body.len() as f64 / samples as f64
    );
    let mut group = c.benchmark_group(format!("ingest/{protocol}"));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(samples as u64));
    group.bench_function("decode", |b| b.iter(|| black_box(decode(black_box(body)))));
    group.finish();
}

/// Checks, once and outside timing, what a decoder made of its body: every sample at
/// `timestamp`, every series with `labels` labels (`__name__` and enrichment included).
fn check_batch(protocol: &str, batch: &WriteBatch, timestamp: i64, labels: usize) {
    assert!(!batch.is_empty(), "{protocol}: nothing decoded");
    for series in &batch.series {
        assert_eq!(
            series.labels.len(),
            labels,
            "{protocol}: {:?}",
            series.labels
        );
        for sample in &series.samples {
            assert_eq!(
                sample.timestamp.0, timestamp,
                "{protocol}: {:?}",
                series.labels
            );
        }
    }
}

/// The SDK decoders' result: samples in the batch, none skipped, no info samples.
fn sdk_samples(decoded: lookout_gateway::lookout::Decoded) -> usize {
    assert_eq!(decoded.skipped_total(), 0, "{:?}", decoded.messages);
    decoded.batch.sample_count()
}

fn ingest(c: &mut Criterion) {
    let series = node_exporter_series(SERIES);
    let batch = sample_batch(&series);
    let limits = Limits::default();
    let decode_limits = DecodeLimits::default();
    let peer = Enrichment {
        client_ip: Some(CLIENT_IP.to_owned()),
        extra_tags: Tags::new(),
    };

    // SOFALookout SDK, `POST /datas`, plain and raw snappy.
    let (sdk_text, sdk_count) = sdk_body(&series, &batch);
    // The `Client-Ip` header (or the peer) is the only enrichment of `/datas`.
    let sdk_enrichment = &peer;
    bench_decoder(c, "lookout_sdk", sdk_text.as_bytes(), sdk_count, |body| {
        sdk_samples(sdk::decode(body, false, sdk_enrichment, &limits).expect("decodes"))
    });
    let decoded = sdk::decode(sdk_text.as_bytes(), false, sdk_enrichment, &limits).unwrap();
    // Nine tags, `app`, `ip`, `__name__`.
    check_batch("lookout_sdk", &decoded.batch, BASE_TIMESTAMP_MS, 12);
    let sdk_snappy = compress_snappy_block(sdk_text.as_bytes());
    bench_decoder(c, "lookout_sdk_snappy", &sdk_snappy, sdk_count, |body| {
        sdk_samples(sdk::decode(body, true, sdk_enrichment, &limits).expect("decodes"))
    });

    // `/lookout/metrics/app/node-agent/step/15`.
    let metrics_text = lookout_metrics_body(&series, &batch);
    let metrics_enrichment = Enrichment {
        client_ip: Some(CLIENT_IP.to_owned()),
        extra_tags: path_tags("/app/node-agent/step/15").expect("valid path"),
    };
    bench_decoder(
        c,
        "lookout_metrics",
        metrics_text.as_bytes(),
        SERIES,
        |body| {
            sdk_samples(sdk::decode(body, false, &metrics_enrichment, &limits).expect("decodes"))
        },
    );

    // SOFALookout's `/prom/metrics/job/node-exporter/app/node-agent/step/15`.
    let push_text = exposition_body(&series, &batch, &["job"], Format::Text);
    let push_enrichment = Enrichment {
        client_ip: Some(CLIENT_IP.to_owned()),
        extra_tags: path_tags(&format!("/job/{JOB}/app/node-agent/step/15")).expect("valid"),
    };
    let arrival = TimestampMs(BASE_TIMESTAMP_MS + 1_234);
    bench_decoder(c, "prometheus_push", push_text.as_bytes(), SERIES, |body| {
        sdk_samples(prom_push::decode(body, arrival, &push_enrichment, &limits).expect("decodes"))
    });

    // The Pushgateway API, `PUT /metrics/job/node-exporter`.
    let grouping = grouping_key(&format!("job/{JOB}")).expect("valid grouping key");
    bench_decoder(c, "pushgateway", push_text.as_bytes(), SERIES, |body| {
        pushgateway::decode(body, &grouping, arrival, &limits)
            .expect("decodes")
            .sample_count()
    });

    // Prometheus remote write 1.0 and 2.0.
    let rw1 = remote_write::encode(&batch);
    assert_eq!(
        remote_write::decode(&rw1, &decode_limits).unwrap().batch,
        batch
    );
    bench_decoder(c, "remote_write", &rw1, SERIES, |body| {
        let decoded = remote_write::decode(body, &decode_limits).expect("decodes");
        assert!(decoded.invalid_series.is_empty());
        decoded.batch.sample_count()
    });
    // The same request once its series are known (the receiver's usual case): the labels are
    // not built, the series go by identity.
    let cache = remote_write::KnownSeriesCache::new(SERIES * 2);
    remote_write::decode_with_cache(&rw1, &decode_limits, Some(&cache)).unwrap();
    bench_decoder(c, "remote_write_known", &rw1, SERIES, |body| {
        let decoded =
            remote_write::decode_with_cache(body, &decode_limits, Some(&cache)).expect("decodes");
        assert!(decoded.batch.series.is_empty());
        decoded.batch.sample_count()
    });
    let rw2 = remote_write2::encode(&batch, &family_metadata(&series));
    assert_eq!(
        remote_write2::decode(&rw2, &decode_limits).unwrap().batch,
        batch
    );
    bench_decoder(c, "remote_write2", &rw2, SERIES, |body| {
        let decoded = remote_write2::decode(body, &decode_limits).expect("decodes");
        assert!(decoded.invalid_series.is_empty());
        decoded.batch.sample_count()
    });

    // Metricbeat 6 `_bulk`: five hosts of `system` documents.
    let (beat_text, beat_count) = metricbeat_body(5);
    let decoded = decode_bulk(beat_text.as_bytes(), &peer, &limits).unwrap();
    // `name`, `module`, `hostname`, `version`, `ip`, `__name__`.
    check_batch("metricbeat", &decoded.decoded.batch, BASE_TIMESTAMP_MS, 6);
    bench_decoder(c, "metricbeat", beat_text.as_bytes(), beat_count, |body| {
        let bulk = decode_bulk(body, &peer, &limits).expect("decodes");
        sdk_samples(bulk.decoded)
    });

    // OpenTSDB: `/api/put` JSON array and telnet `put` lines.
    let tsdb_json = opentsdb_json_body(&series, &batch);
    let decoded = decode_json(tsdb_json.as_bytes(), &peer, &limits).unwrap();
    // Eight tags, `ip`, `__name__`.
    check_batch(
        "opentsdb_http",
        &decoded.decoded.batch,
        BASE_TIMESTAMP_MS,
        10,
    );
    bench_decoder(c, "opentsdb_http", tsdb_json.as_bytes(), SERIES, |body| {
        let put = decode_json(body, &peer, &limits).expect("decodes");
        assert!(put.errors.is_empty());
        sdk_samples(put.decoded)
    });
    let telnet = opentsdb_telnet_body(&series, &batch);
    bench_decoder(c, "opentsdb_telnet", telnet.as_bytes(), SERIES, |body| {
        // What the telnet listener does with the lines of one read.
        let text = std::str::from_utf8(body).expect("UTF-8");
        let mut writer = PointWriter::new(&peer, &limits);
        for line in text.lines() {
            match parse_telnet_line(line) {
                Ok(TelnetCommand::Put(point)) => {
                    writer.add(point).expect("within limits").expect("valid")
                }
                other => panic!("unexpected telnet line {line:?}: {other:?}"),
            }
        }
        sdk_samples(writer.finish())
    });

    // Scrape: one target's body of 1000 series, `instance` and `job` from the target.
    let target_labels: Tags = BTreeMap::from([
        ("instance".to_owned(), "10.1.0.2:9100".to_owned()),
        ("job".to_owned(), JOB.to_owned()),
    ]);
    let label_limits = LabelLimits::default();
    let rules = SampleRules {
        target_labels: &target_labels,
        honor_labels: false,
        honor_timestamps: true,
        metric_relabel_configs: &[],
        sample_limit: 0,
        label_limits: &label_limits,
    };
    let scrape_time = TimestampMs(BASE_TIMESTAMP_MS);
    for (protocol, format) in [
        ("scrape", Format::Text),
        ("scrape_openmetrics", Format::OpenMetrics),
    ] {
        let body = exposition_body(&series, &batch, &["instance", "job"], format);
        let scraped = scraped_samples(body.as_bytes(), format, &rules, scrape_time).unwrap();
        for (got, want) in scraped.samples.iter().zip(&series) {
            assert_eq!(got.labels.len(), want.labels.len(), "{protocol}");
            assert_eq!(got.sample.timestamp, scrape_time, "{protocol}");
        }
        bench_decoder(c, protocol, body.as_bytes(), SERIES, |body| {
            let scraped = scraped_samples(body, format, &rules, scrape_time).expect("parses");
            assert_eq!(scraped.duplicates, 0);
            scraped.samples.len()
        });
    }
}

criterion_group!(benches, ingest);
criterion_main!(benches);
