//! Real senders delivering into the `lookout-server` binary, read back through the query API:
//! netdata's OpenTSDB exporters (`POST /api/put` with JSON arrays on the gateway port, and
//! telnet `put` lines) and rsyslog's Elasticsearch output (`omelasticsearch`, `POST /_bulk`
//! with ES6 action lines and Metricbeat-6-shaped documents), and vmagent scraping a real
//! node_exporter and remote-writing to both remote-write receivers. Each is configured as in
//! ../shared/peers (the configuration is written here, so the test does not need that
//! directory) and skipped with a printed reason when its program is not on PATH
//! (`peers.sh install`: victoria-metrics, prometheus-node-exporter; `peers.sh install extras`:
//! netdata, rsyslog-elasticsearch).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{instant_query, log_tail, on_path, poll, wait_ready, KilledGroup, LookoutServer};

/// How long a sender may take to deliver something queryable (both send every second).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn label<'a>(series: &'a Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or("")
}

/// The sample times (seconds) of a range-vector result's series, oldest first.
fn sample_times(series: &Value) -> Vec<f64> {
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_f64().unwrap())
        .collect()
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

/// The value of `name` in the server's own `/metrics` text, if it has that line.
fn self_metric(client: &reqwest::blocking::Client, server: &LookoutServer, name: &str) -> f64 {
    let text = client
        .get(format!("{}/metrics", server.api()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |number| number.parse().unwrap())
}

/// The non-zero lines of the server's self-metric `counter` for `protocol` (by reason).
fn nonzero(
    client: &reqwest::blocking::Client,
    server: &LookoutServer,
    counter: &str,
    protocol: &str,
) -> Vec<String> {
    let prefix = format!("{counter}{{protocol=\"{protocol}\",");
    client
        .get(format!("{}/metrics", server.api()))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .filter(|line| line.starts_with(&prefix) && !line.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

fn start_lookout(dir: &Path) -> (LookoutServer, reqwest::blocking::Client) {
    let client = reqwest::blocking::Client::new();
    let server = LookoutServer::start(&dir.join("data"), &[]);
    wait_ready(&client, &format!("{}/datas", server.gateway()));
    (server, client)
}

/// netdata.conf and exporting.conf as ../shared/peers/peers.sh writes them (web UI, health,
/// ML, cloud and every external plugin off; the `system.*` charts every second), with the
/// OpenTSDB HTTP exporter pointed at `port` and its telnet exporter (`NETDATA_TELNET_PORT` in
/// peers.sh) at `telnet_port`, with the prefix `netdata_telnet` to tell the two apart.
fn write_netdata_config(dir: &Path, port: u16, telnet_port: u16) {
    for sub in ["cache", "lib", "log", "run"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let base = dir.display();
    let mut netdata = format!(
        "[global]\n    run as user = root\n    update every = 1\n    memory mode = ram\n    history = 600\n\
         [directories]\n    config = {base}\n    cache = {base}/cache\n    lib = {base}/lib\n\
         \x20   log = {base}/log\n    run = {base}/run\n\
         [logs]\n    debug log = none\n    error log = {base}/log/error.log\n    access log = none\n\
         [web]\n    mode = none\n[health]\n    enabled = no\n[ml]\n    enabled = no\n\
         [cloud]\n    enabled = no\n[plugins]\n    proc = yes\n"
    );
    for plugin in [
        "tc",
        "idlejitter",
        "apps",
        "python.d",
        "charts.d",
        "go.d",
        "node.d",
        "ebpf",
        "perf",
        "slabinfo",
        "fping",
        "ioping",
        "cgroups",
        "diskspace",
        "statsd",
        "timex",
        "checks",
        "nfacct",
        "cups",
        "freeipmi",
    ] {
        netdata.push_str(&format!("    {plugin} = no\n"));
    }
    std::fs::write(dir.join("netdata.conf"), netdata).unwrap();
    std::fs::write(
        dir.join("exporting.conf"),
        format!(
            "[exporting:global]\n    enabled = yes\n    update every = 1\n\
             [opentsdb:http:lookout]\n    enabled = yes\n    destination = 127.0.0.1:{port}\n\
             \x20   data source = average\n    prefix = netdata\n    update every = 1\n\
             \x20   send charts matching = system.*\n\
             [opentsdb:lookout_telnet]\n    enabled = yes\n    destination = 127.0.0.1:{telnet_port}\n\
             \x20   data source = average\n    prefix = netdata_telnet\n    update every = 1\n\
             \x20   send charts matching = system.cpu\n"
        ),
    )
    .unwrap();
}

/// netdata's OpenTSDB HTTP exporter POSTs JSON arrays of data points
/// (`{"metric":"netdata.system.cpu.user","timestamp":<s>,"value":..,"tags":{"host":..,
/// "_is_ephemeral":"false",..}}`) to `/api/put`; they must be stored under the metric name as
/// sent, with the tag keys normalised (`_x` → `m__x`) and the peer's `ip` added. Its telnet
/// exporter's `put` lines, to the telnet listener, the same.
#[test]
fn netdata_opentsdb_exporters_are_real_senders() {
    if !on_path("netdata", "-v") {
        println!(
            "SKIPPED: netdata not found on PATH (peers.sh install extras, or apt-get install netdata-core)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_lookout(dir.path());
    let netdata_dir = dir.path().join("netdata");
    write_netdata_config(&netdata_dir, server.gateway_port, server.telnet_port);
    let error_log = netdata_dir.join("log/error.log");
    let mut netdata = KilledGroup::spawn(
        Command::new("netdata")
            .arg("-D")
            .arg("-c")
            .arg(netdata_dir.join("netdata.conf"))
            .arg("-P")
            .arg(netdata_dir.join("run/netdata.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();

    // netdata's CPU chart is in percent: its dimensions add up to 100 once a full interval
    // has been collected (the first exports may still be all zeros).
    let cpu = r#"sum by (host) ({__name__=~"netdata\\.system\\.cpu\\..+"})"#;
    let total = poll(DELIVERY_TIMEOUT, || {
        assert!(
            netdata.exited().is_none(),
            "netdata exited; its log:\n{}",
            log_tail(&error_log, 30)
        );
        let result = instant_query(&client, &server.api(), cpu);
        let total = value(result.first()?);
        (95.0..=105.0).contains(&total).then_some(total)
    });
    assert!(
        total.is_some(),
        "no complete netdata.system.cpu.* export within {DELIVERY_TIMEOUT:?}: {:?}; netdata's log:\n{}",
        instant_query(&client, &server.api(), cpu),
        log_tail(&error_log, 30)
    );

    // The telnet exporter's `put` lines: the same tags.
    let telnet = poll(DELIVERY_TIMEOUT, || {
        let result = instant_query(&client, &server.api(), "netdata_telnet.system.cpu.user");
        (!result.is_empty()).then_some(result)
    })
    .expect("no netdata_telnet.system.cpu.user from netdata's telnet exporter");
    let keys: BTreeSet<&str> = telnet[0]["metric"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "__name__",
            "host",
            "ip",
            "m__has_unstable_connection",
            "m__is_ephemeral"
        ]),
        "{telnet:?}"
    );

    let all = instant_query(&client, &server.api(), r#"{__name__=~"netdata\\..+"}"#);
    let names: BTreeSet<&str> = all.iter().map(|series| label(series, "__name__")).collect();
    for expected in [
        "netdata.system.cpu.user",
        "netdata.system.cpu.idle",
        "netdata.system.processes.running",
        "netdata.system.uptime.uptime",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let now = now_seconds();
    for series in &all {
        let keys: BTreeSet<&str> = series["metric"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // netdata 1.37 tags every point with host, _is_ephemeral and _has_unstable_connection.
        assert_eq!(
            keys,
            BTreeSet::from([
                "__name__",
                "host",
                "ip",
                "m__has_unstable_connection",
                "m__is_ephemeral"
            ]),
            "{series}"
        );
        assert_eq!(label(series, "ip"), "127.0.0.1", "{series}");
        assert_eq!(label(series, "m__is_ephemeral"), "false", "{series}");
        if !hostname.is_empty() {
            assert_eq!(label(series, "host"), hostname, "{series}");
        }
    }
    // Seconds read as seconds: the newest points are from the last few seconds.
    let raw = instant_query(&client, &server.api(), r#"{__name__=~"netdata\\..+"}[1m]"#);
    assert!(raw.len() >= all.len(), "{raw:?}");
    for series in &raw {
        let newest = sample_times(series).last().copied().unwrap();
        assert!(
            now - newest < 30.0 && newest <= now + 1.0,
            "{series} at {now}"
        );
    }
    assert!(
        self_metric(
            &client,
            &server,
            r#"lookout_gateway_samples_accepted_total{protocol="opentsdb_http"}"#
        ) >= all.len() as f64
    );
    // Every POST was taken, including the empty arrays netdata sends before its first values,
    // and every data point of both exporters stored.
    for protocol in ["opentsdb_http", "opentsdb_telnet"] {
        for counter in [
            "lookout_gateway_requests_refused_total",
            "lookout_gateway_samples_rejected_total",
        ] {
            assert_eq!(
                nonzero(&client, &server, counter, protocol),
                Vec::<String>::new()
            );
        }
    }
    // Stop the sender before the receiver.
    drop(netdata);
}

/// rsyslog.conf as ../shared/peers/peers.sh writes it for `rsyslog-es` (impstats every
/// second, as Metricbeat-6-shaped documents, to `/_bulk` with `"_type":"doc"`), plus a TCP
/// syslog input on `syslog_port` whose log records go to the same receiver with rsyslog's
/// default JSON template, their refusals to `es-errors.json`.
fn write_rsyslog_config(dir: &Path, gateway_port: u16, syslog_port: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let base = dir.display();
    let document = r#"{\"@timestamp\":\"%timereported:::date-rfc3339%\",\"beat\":{\"name\":\"peers\",\"hostname\":\"peers\",\"version\":\"6.8.23\"},\"host\":{\"name\":\"peers\"},\"metricset\":{\"module\":\"rsyslog\",\"name\":\"impstats\",\"rtt\":1},\"rsyslog\":%msg%}"#;
    let config = format!(
        "global(workDirectory=\"{base}\")\n\
         module(load=\"impstats\" interval=\"1\" format=\"json\" resetCounters=\"off\" ruleset=\"stats\")\n\
         module(load=\"omelasticsearch\")\n\
         module(load=\"imtcp\")\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{syslog_port}\" ruleset=\"logs\")\n\
         template(name=\"mbdoc\" type=\"string\" string=\"{document}\")\n\
         template(name=\"idx\" type=\"string\" string=\"metricbeat-6.8.23-%timereported:::date-year%.%timereported:::date-month%.%timereported:::date-day%\")\n\
         ruleset(name=\"stats\") {{\n  action(type=\"omelasticsearch\" server=\"127.0.0.1\" serverport=\"{gateway_port}\" \
         template=\"mbdoc\" searchIndex=\"idx\" dynSearchIndex=\"on\" searchType=\"doc\" bulkmode=\"on\" \
         queue.type=\"linkedlist\" queue.size=\"10000\" queue.dequeuebatchsize=\"100\")\n}}\n\
         ruleset(name=\"logs\") {{\n  action(type=\"omelasticsearch\" server=\"127.0.0.1\" serverport=\"{gateway_port}\" \
         searchIndex=\"system\" searchType=\"events\" bulkmode=\"on\" errorfile=\"{base}/es-errors.json\" \
         queue.type=\"linkedlist\")\n}}\n"
    );
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, config).unwrap();
    path
}

/// rsyslog's omelasticsearch POSTs `/_bulk` bodies (`Content-Type: application/json`, ES6
/// action lines with `"_type":"doc"`) of Metricbeat-6-shaped impstats documents: they must be
/// flattened as spec §3.5 says (numeric leaves of `rsyslog` named by their dotted path; tags
/// from `metricset` then `beat`, `rtt` dropped, `beat.name` over `metricset.name`; strings
/// ignored). Log records (no `@timestamp`) are not metric documents: Lookout must say so per
/// item, as Elasticsearch does for a document it cannot index, so rsyslog files them in its
/// error file instead of counting them as stored.
#[test]
fn rsyslog_omelasticsearch_is_a_real_bulk_sender() {
    if !on_path("rsyslogd", "-v") {
        println!(
            "SKIPPED: rsyslogd not found on PATH (peers.sh install extras: apt-get install rsyslog-elasticsearch)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_lookout(dir.path());
    let rsyslog_dir = dir.path().join("rsyslog");
    let syslog_port = support::free_port();
    let config = write_rsyslog_config(&rsyslog_dir, server.gateway_port, syslog_port);
    let log = rsyslog_dir.join("rsyslogd.log");
    let check = Command::new("rsyslogd")
        .arg("-N1")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    if !check.status.success() && String::from_utf8_lossy(&check.stderr).contains("omelasticsearch")
    {
        println!("SKIPPED: rsyslog's omelasticsearch module is missing (apt-get install rsyslog-elasticsearch)");
        return;
    }
    assert!(
        check.status.success(),
        "rsyslogd -N1 refused the configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut rsyslog = KilledGroup::spawn(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(rsyslog_dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut alive = || {
        assert!(
            rsyslog.exited().is_none(),
            "rsyslogd exited; its output:\n{}",
            log_tail(&log, 30)
        );
    };

    // impstats of omelasticsearch itself, delivered through Lookout: `submitted` counts the
    // documents it has sent.
    let success = r#"rsyslog.submitted > 0"#;
    let delivered = poll(DELIVERY_TIMEOUT, || {
        alive();
        let result = instant_query(&client, &server.api(), success);
        (!result.is_empty()).then_some(result)
    });
    assert!(
        delivered.is_some(),
        "rsyslog's stats did not arrive within {DELIVERY_TIMEOUT:?}; rsyslogd's output:\n{}",
        log_tail(&log, 30)
    );
    let all = instant_query(&client, &server.api(), r#"{module="rsyslog"}"#);
    let names: BTreeSet<&str> = all.iter().map(|series| label(series, "__name__")).collect();
    for expected in [
        "rsyslog.submitted",
        "rsyslog.response.success",
        "rsyslog.failed.http",
        "rsyslog.processed",
        "rsyslog.enqueued",
        "rsyslog.maxrss",
        "rsyslog.utime",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    // Nothing but numeric leaves of the documents' objects: no `rtt`, no `host.name`.
    for name in &names {
        assert!(name.starts_with("rsyslog."), "{name}");
    }
    let now = now_seconds();
    for series in &all {
        let metric = series["metric"].as_object().unwrap();
        let labels: Vec<(&str, &str)> = metric
            .iter()
            .filter(|(key, _)| key.as_str() != "__name__")
            .map(|(key, value)| (key.as_str(), value.as_str().unwrap()))
            .collect();
        assert_eq!(
            labels,
            [
                ("hostname", "peers"),
                ("ip", "127.0.0.1"),
                ("module", "rsyslog"),
                ("name", "peers"),
                ("version", "6.8.23"),
            ],
            "{series}"
        );
    }
    // `@timestamp` floored to 10 s.
    let raw = instant_query(&client, &server.api(), r#"{module="rsyslog"}[1m]"#);
    assert!(raw.len() >= all.len(), "{raw:?}");
    for series in &raw {
        for time in sample_times(series) {
            assert_eq!(time % 10.0, 0.0, "{series}");
            assert!(now - time < 70.0 && time <= now, "{series} at {now}");
        }
    }
    let maxrss = instant_query(&client, &server.api(), "rsyslog.maxrss");
    assert!(value(&maxrss[0]) > 0.0, "{maxrss:?}");
    let http_failures = instant_query(&client, &server.api(), "rsyslog.failed.http");
    assert_eq!(value(&http_failures[0]), 0.0, "{http_failures:?}");

    // Log records: rsyslog's default template has no @timestamp.
    let sent = 3;
    {
        use std::io::Write;
        let mut syslog = std::net::TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
        for number in 0..sent {
            writeln!(syslog, "<13>1 - - lookout-test - - - log record {number}").unwrap();
        }
    }
    let errors_path = rsyslog_dir.join("es-errors.json");
    let refused = poll(DELIVERY_TIMEOUT, || {
        alive();
        let errors = std::fs::read_to_string(&errors_path).ok()?;
        (errors.matches("mapper_parsing_exception").count() >= sent).then_some(errors)
    });
    assert!(
        refused.is_some(),
        "rsyslog did not file {sent} refused log records within {DELIVERY_TIMEOUT:?}: {:?}; rsyslogd's output:\n{}",
        std::fs::read_to_string(&errors_path),
        log_tail(&log, 30)
    );
    assert!(
        self_metric(
            &client,
            &server,
            r#"lookout_gateway_samples_rejected_total{protocol="metricbeat",reason="invalid_time"}"#
        ) >= sent as f64
    );
    assert_eq!(
        nonzero(
            &client,
            &server,
            "lookout_gateway_requests_refused_total",
            "metricbeat"
        ),
        Vec::<String>::new()
    );
    // The records added no series.
    let after = instant_query(&client, &server.api(), r#"{__name__=~".+"}"#);
    assert!(
        after
            .iter()
            .all(|series| label(series, "module") == "rsyslog"),
        "{after:?}"
    );
    drop(rsyslog);
}

/// A per-URL relabelling file for vmagent (`-remoteWrite.urlRelabelConfig`) that adds
/// `via="<via>"` to everything sent to that URL, so the two receivers' series can be told apart.
fn write_via_relabel(dir: &Path, via: &str) -> std::path::PathBuf {
    let path = dir.join(format!("relabel-{via}.yml"));
    std::fs::write(
        &path,
        format!("- target_label: via\n  replacement: {via}\n"),
    )
    .unwrap();
    path
}

/// The series `selector` selects, each as its labels without `via` (canonical JSON).
fn series_without_via(
    client: &reqwest::blocking::Client,
    server: &LookoutServer,
    selector: &str,
) -> BTreeSet<String> {
    instant_query(client, &server.api(), selector)
        .iter()
        .map(|series| {
            let mut labels = series["metric"].as_object().unwrap().clone();
            labels.remove("via");
            Value::Object(labels).to_string()
        })
        .collect()
}

/// vmagent (VictoriaMetrics' agent; Debian's `victoria-metrics` package) scrapes a real
/// node_exporter every second and remote-writes what it scrapes (Prometheus remote write 1.0,
/// snappy protobuf) to both of Lookout's receivers at once, as ../shared/peers/peers.sh
/// configures it: the gateway port's `/api/v1/write` (protocol `remote_write`) and the query
/// port's (`api_remote_write`), each URL tagging its copy with `via`. Both copies must be
/// queryable with the target's labels, hold the same series, and nothing may be refused on
/// either side (Lookout's rejection counters, vmagent's own request and drop counters).
#[test]
fn vmagent_scrapes_node_exporter_and_remote_writes_into_lookout() {
    if !on_path("vmagent", "-version") {
        println!(
            "SKIPPED: vmagent not found on PATH (apt-get install victoria-metrics; .ci/run does)"
        );
        return;
    }
    let Some(node_exporter) = support::node_exporter_binary() else {
        println!("SKIPPED: prometheus-node-exporter (or node_exporter) is not on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_lookout(dir.path());
    let textfile_dir = dir.path().join("textfile");
    std::fs::create_dir(&textfile_dir).unwrap();
    std::fs::write(
        textfile_dir.join("probe.prom"),
        "vmagent_probe{kind=\"a b\"} 42\n",
    )
    .unwrap();
    let (_exporter, exporter_port) =
        support::start_node_exporter(&client, node_exporter, &textfile_dir);

    let vm_dir = dir.path().join("vmagent");
    std::fs::create_dir(&vm_dir).unwrap();
    let scrape = vm_dir.join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    \
             static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n        \
             labels: {{env: test}}\n"
        ),
    )
    .unwrap();
    let help = Command::new("vmagent").arg("-help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout) + String::from_utf8_lossy(&help.stderr);
    let vm_port = support::free_port();
    let log = vm_dir.join("vmagent.log");
    let mut command = Command::new("vmagent");
    command
        .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg(format!("-promscrape.config={}", scrape.display()))
        .arg(format!(
            "-remoteWrite.url={}/api/v1/write",
            server.gateway()
        ))
        .arg(format!(
            "-remoteWrite.urlRelabelConfig={}",
            write_via_relabel(&vm_dir, "gateway").display()
        ))
        .arg(format!("-remoteWrite.url={}/api/v1/write", server.api()))
        .arg(format!(
            "-remoteWrite.urlRelabelConfig={}",
            write_via_relabel(&vm_dir, "api").display()
        ))
        .arg(format!(
            "-remoteWrite.tmpDataPath={}",
            vm_dir.join("remotewrite").display()
        ))
        .arg("-remoteWrite.flushInterval=1s")
        .arg("-remoteWrite.showURL");
    // vmagent 1.88+ may switch to VictoriaMetrics' own zstd protocol; keep it on Prometheus'
    // (older versions, Debian 12's 1.79 included, only speak Prometheus' and lack the flag).
    if help.contains("remoteWrite.forcePromProto") {
        command
            .arg("-remoteWrite.forcePromProto=true")
            .arg("-remoteWrite.forcePromProto=true");
    }
    let mut vmagent = KilledGroup::spawn(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    let vmagent_url = format!("http://127.0.0.1:{vm_port}");
    assert!(
        support::became_ready(&client, &format!("{vmagent_url}/health")),
        "vmagent not ready; its log:\n{}",
        log_tail(&log, 30)
    );
    let mut alive = || {
        assert!(
            vmagent.exited().is_none(),
            "vmagent exited; its log:\n{}",
            log_tail(&log, 30)
        );
    };

    // `up` and node_exporter's series arrive through both receivers.
    let instance = format!("127.0.0.1:{exporter_port}");
    for via in ["gateway", "api"] {
        let up = format!(r#"up{{job="node",via="{via}"}} == 1"#);
        let arrived = poll(DELIVERY_TIMEOUT, || {
            alive();
            let result = instant_query(&client, &server.api(), &up);
            (!result.is_empty()).then_some(result)
        });
        let Some(result) = arrived else {
            panic!(
                "{up} did not arrive within {DELIVERY_TIMEOUT:?}: {:?}; vmagent's log:\n{}",
                instant_query(&client, &server.api(), r#"{job="node"}"#).len(),
                log_tail(&log, 30)
            );
        };
        assert_eq!(result.len(), 1, "{result:?}");
        assert_eq!(
            result[0]["metric"],
            serde_json::json!({"__name__": "up", "env": "test", "instance": instance,
                "job": "node", "via": via})
        );
        // A scrape may be sent in more than one request: wait for the rest of it too.
        let arrived = |expr: &str| {
            poll(DELIVERY_TIMEOUT, || {
                let result = instant_query(&client, &server.api(), expr);
                (!result.is_empty()).then_some(result)
            })
            .unwrap_or_else(|| panic!("{expr}: nothing within {DELIVERY_TIMEOUT:?}"))
        };
        let cpu = arrived(&format!(
            r#"node_cpu_seconds_total{{job="node",via="{via}",mode="idle"}}"#
        ));
        for series in &cpu {
            assert_eq!(label(series, "instance"), instance, "{series}");
            assert_eq!(label(series, "env"), "test", "{series}");
            assert!(value(series) > 0.0, "{series}");
        }
        // The textfile probe: its label value as it is, the target's labels added.
        let probe = arrived(&format!(r#"vmagent_probe{{via="{via}"}}"#));
        assert_eq!(
            probe
                .iter()
                .map(|series| (series["metric"].clone(), value(series)))
                .collect::<Vec<_>>(),
            [(
                serde_json::json!({"__name__": "vmagent_probe", "env": "test",
                    "instance": instance, "job": "node", "kind": "a b", "via": via}),
                42.0
            )]
        );
    }

    // Scrape timestamps kept: the newest samples are from the last seconds.
    let now = now_seconds();
    let recent = instant_query(&client, &server.api(), r#"up{job="node"}[1m]"#);
    assert_eq!(recent.len(), 2, "{recent:?}");
    for series in &recent {
        let newest = sample_times(series).last().copied().unwrap();
        assert!(
            now - newest < 30.0 && newest <= now + 1.0,
            "{series} at {now}"
        );
    }

    // Both copies hold the same series (a series node_exporter adds between two scrapes may
    // reach one receiver a flush before the other: wait until they agree).
    let selector = |via: &str| format!(r#"{{job="node",via="{via}"}}"#);
    let agreed = poll(DELIVERY_TIMEOUT, || {
        alive();
        let gateway = series_without_via(&client, &server, &selector("gateway"));
        let api = series_without_via(&client, &server, &selector("api"));
        (gateway == api).then_some(gateway)
    });
    let Some(series) = agreed else {
        let gateway = series_without_via(&client, &server, &selector("gateway"));
        let api = series_without_via(&client, &server, &selector("api"));
        panic!(
            "the receivers hold different series\nonly via the gateway: {:#?}\nonly via the API: {:#?}",
            gateway.difference(&api).collect::<Vec<_>>(),
            api.difference(&gateway).collect::<Vec<_>>()
        );
    };
    // node_exporter exports hundreds of series; vmagent adds `up` and the scrape_* series.
    assert!(
        series.len() > 100,
        "only {} series: {series:#?}",
        series.len()
    );
    for name in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "node_exporter_build_info",
        "node_load1",
    ] {
        let needle = format!("\"__name__\":\"{name}\"");
        assert!(
            series.iter().any(|labels| labels.contains(&needle)),
            "{name} missing"
        );
    }

    // Nothing refused by Lookout, on either port.
    for protocol in ["remote_write", "api_remote_write"] {
        let accepted = self_metric(
            &client,
            &server,
            &format!(r#"lookout_gateway_samples_accepted_total{{protocol="{protocol}"}}"#),
        );
        assert!(
            accepted >= series.len() as f64,
            "{protocol}: {accepted} samples accepted"
        );
        for counter in [
            "lookout_gateway_requests_refused_total",
            "lookout_gateway_samples_rejected_total",
        ] {
            assert_eq!(
                nonzero(&client, &server, counter, protocol),
                Vec::<String>::new()
            );
        }
    }
    // Nor by vmagent's account: requests to both URLs answered 2xx, none otherwise, nothing
    // dropped, retried or failed.
    let vm_metrics = client
        .get(format!("{vmagent_url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let counter_value = |line: &str| -> f64 { line.rsplit_once(' ').unwrap().1.parse().unwrap() };
    let requests: Vec<&str> = vm_metrics
        .lines()
        .filter(|line| line.starts_with("vmagent_remotewrite_requests_total{"))
        .collect();
    for url in [server.gateway(), server.api()] {
        // vmagent numbers its URLs: `url="1:http://..."`.
        let url = format!(":{url}/api/v1/write\"");
        let answered: f64 = requests
            .iter()
            .filter(|line| line.contains(&url) && line.contains("status_code=\"2"))
            .map(|line| counter_value(line))
            .sum();
        assert!(answered > 0.0, "no 2xx answer for {url}: {requests:#?}");
    }
    for line in &requests {
        assert!(
            line.contains("status_code=\"2") || counter_value(line) == 0.0,
            "a remote-write request was not answered 2xx: {line}"
        );
    }
    for counter in [
        "vmagent_remotewrite_packets_dropped_total{",
        "vmagent_remotewrite_retries_count_total{",
        "vmagent_remotewrite_errors_total{",
    ] {
        let lines: Vec<&str> = vm_metrics
            .lines()
            .filter(|line| line.starts_with(counter))
            .collect();
        assert_eq!(lines.len(), 2, "{counter}: {lines:?}");
        for line in lines {
            assert_eq!(counter_value(line), 0.0, "{line}");
        }
    }
    // Stop the sender before the receiver.
    drop(vmagent);
}
