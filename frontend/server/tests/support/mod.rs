//! Helpers the integration tests share: `lookout-server` and a real Prometheus (from PATH)
//! on loopback, free ports, child processes stopped on drop, readiness waits.

// Each test binary includes this module and uses a subset of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a peer may take to answer its readiness endpoint.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a peer may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether a `prometheus` binary is on PATH. When it is not, tests print
/// `SKIPPED: <reason>` and return.
pub fn prometheus_installed() -> bool {
    Command::new("prometheus").arg("--version").output().is_ok()
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that gets SIGTERM (then SIGKILL after 15 s) when dropped.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `url` answers 2xx within 30 s, polling every 100 ms.
pub fn became_ready(client: &reqwest::blocking::Client, url: &str) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .is_ok_and(|response| response.status().is_success())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Waits until `url` answers 2xx; panics after 30 s.
pub fn wait_ready(client: &reqwest::blocking::Client, url: &str) {
    assert!(
        became_ready(client, url),
        "{url} not ready within {READY_TIMEOUT:?}"
    );
}

/// Starts `prometheus` on `127.0.0.1:port` with `config` as its `prometheus.yml`, its TSDB and
/// its log under `dir`, plus `extra_flags`, and waits until `/-/ready` answers. A Prometheus
/// that does not become ready fails the test with the tail of its log.
pub fn start_prometheus(
    client: &reqwest::blocking::Client,
    dir: &Path,
    port: u16,
    config: &str,
    extra_flags: &[&str],
) -> Killed {
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let log_path = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra_flags)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let prometheus = Killed(child);
    if !became_ready(client, &format!("http://127.0.0.1:{port}/-/ready")) {
        let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = log_text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        panic!(
            "prometheus on port {port} not ready within {READY_TIMEOUT:?}; log tail:\n{}",
            tail.join("\n")
        );
    }
    prometheus
}

/// The node_exporter binary on PATH: Debian names it `prometheus-node-exporter`. When there is
/// none, tests print `SKIPPED: <reason>` and return.
pub fn node_exporter_binary() -> Option<&'static str> {
    ["prometheus-node-exporter", "node_exporter"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok())
}

/// Starts node_exporter `binary` on a free loopback port (as ../shared/peers/peers.sh does:
/// systemd collector off, `textfile_dir` for the textfile collector) and waits until its
/// `/metrics` answers; returns the process and its port.
pub fn start_node_exporter(
    client: &reqwest::blocking::Client,
    binary: &str,
    textfile_dir: &Path,
) -> (Killed, u16) {
    let port = free_port();
    let exporter = Killed(
        Command::new(binary)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--no-collector.systemd")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(client, &format!("http://127.0.0.1:{port}/metrics"));
    (exporter, port)
}

/// A `lookout-server` started on a data directory with every listener on its own free
/// loopback port.
#[derive(Debug)]
pub struct LookoutServer {
    /// The process, stopped when dropped.
    pub process: Killed,
    /// The query API port (Prometheus' 9090).
    pub api_port: u16,
    /// The gateway port (7200).
    pub gateway_port: u16,
    /// The OpenTSDB telnet port (4242).
    pub telnet_port: u16,
    /// The management port (6200).
    pub management_port: u16,
}

impl LookoutServer {
    /// Starts the server on `data` with `extra` flags; waits until the API is ready. Ports
    /// are picked free; if another process takes one first (the server then exits at
    /// start-up), it starts again on new ones, up to three times.
    pub fn start(data: &Path, extra: &[&str]) -> LookoutServer {
        let client = reqwest::blocking::Client::new();
        for _ in 0..3 {
            let mut server =
                LookoutServer::spawn(data, (free_port(), free_port(), free_port()), extra);
            let ready = poll(READY_TIMEOUT, || {
                if let Ok(Some(status)) = server.process.0.try_wait() {
                    return Some(Err(status));
                }
                let url = format!("{}/-/ready", server.api());
                client
                    .get(url)
                    .send()
                    .is_ok_and(|response| response.status().is_success())
                    .then_some(Ok(()))
            });
            match ready {
                Some(Ok(())) => return server,
                Some(Err(status)) => {
                    eprintln!("lookout-server exited at start-up ({status}); new ports");
                }
                None => panic!("lookout-server not ready within {READY_TIMEOUT:?}"),
            }
        }
        panic!("lookout-server exited at start-up three times");
    }

    /// [`LookoutServer::start`] on given `(api, gateway, telnet)` ports, e.g. those of a
    /// server stopped before, to restart it where its senders expect it.
    pub fn start_on(data: &Path, ports: (u16, u16, u16), extra: &[&str]) -> LookoutServer {
        let server = LookoutServer::spawn(data, ports, extra);
        wait_ready(
            &reqwest::blocking::Client::new(),
            &format!("{}/-/ready", server.api()),
        );
        server
    }

    /// A gateway-only server (`--mode gateway` plus `extra`, which names the exporters) on
    /// `(gateway, telnet)` ports, its queue under `data`; waits until the gateway port is
    /// ready. Its `api_port` is 0: gateway-only mode serves no query API.
    pub fn start_gateway_only(data: &Path, ports: (u16, u16), extra: &[&str]) -> LookoutServer {
        let mut args = vec!["--mode", "gateway"];
        args.extend_from_slice(extra);
        let mut server = LookoutServer::spawn(data, (free_port(), ports.0, ports.1), &args);
        server.api_port = 0;
        wait_ready(
            &reqwest::blocking::Client::new(),
            &format!("{}/-/ready", server.gateway()),
        );
        server
    }

    fn spawn(data: &Path, ports: (u16, u16, u16), extra: &[&str]) -> LookoutServer {
        let (api_port, gateway_port, telnet_port) = ports;
        let management_port = free_port();
        let process = Killed(
            Command::new(env!("CARGO_BIN_EXE_lookout-server"))
                .arg("--storage.tsdb.path")
                .arg(data)
                .arg("--web.listen-address")
                .arg(format!("127.0.0.1:{api_port}"))
                .arg("--gateway.listen-address")
                .arg(format!("127.0.0.1:{gateway_port}"))
                .arg("--opentsdb.listen-address")
                .arg(format!("127.0.0.1:{telnet_port}"))
                .arg("--management.listen-address")
                .arg(format!("127.0.0.1:{management_port}"))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        LookoutServer {
            process,
            api_port,
            gateway_port,
            telnet_port,
            management_port,
        }
    }

    /// `http://127.0.0.1:<api port>`.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// `http://127.0.0.1:<gateway port>`.
    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// `http://127.0.0.1:<management port>`.
    pub fn management(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }
}

/// Whether `program` can be run from PATH (probed with `probe_arg`, whose exit status does not
/// matter). When it cannot, tests print `SKIPPED: <reason>` and return.
pub fn on_path(program: &str, probe_arg: &str) -> bool {
    Command::new(program)
        .arg(probe_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A child started in its own process group; on drop the whole group gets SIGTERM, then
/// SIGKILL after 15 s, so helpers the program forked (netdata's plugins) stop with it.
#[derive(Debug)]
pub struct KilledGroup(Child);

impl KilledGroup {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> std::io::Result<KilledGroup> {
        use std::os::unix::process::CommandExt;
        command.process_group(0).spawn().map(KilledGroup)
    }

    /// Whether the leader has exited (its status, if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for KilledGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever of the group is still there (the leader, or children it left behind).
        signal("-KILL");
        let _ = self.0.wait();
    }
}

/// Calls `check` every 250 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The result vector of the instant query `expr` at the server's "now"; panics unless the
/// API answers `success`.
pub fn instant_query(
    client: &reqwest::blocking::Client,
    api: &str,
    expr: &str,
) -> Vec<serde_json::Value> {
    let answer: serde_json::Value = client
        .get(format!("{api}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The last `lines` lines of the text file at `path` (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
