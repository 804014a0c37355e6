//! Real senders delivering into the `lookout-server` binary, read back through the query API:
//! netdata's OpenTSDB exporters (`POST /api/put` with JSON arrays on the gateway port, and
//! telnet `put` lines) and rsyslog's Elasticsearch output (`omelasticsearch`, `POST /_bulk`
//! with ES6 action lines and Metricbeat-6-shaped documents). Each is configured as in
//! ../shared/peers (the configuration is written here, so the test does not need that
//! directory) and skipped with a printed reason when its program is not on PATH
//! (`peers.sh install extras`: netdata, rsyslog-elasticsearch).

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
