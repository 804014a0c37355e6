//! The systems compared: how each one is found, started on loopback with a data directory of
//! its own, reached, flushed and stopped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::ServerProcess;

/// How long a starting server may take to answer its readiness endpoint (a cold start of a
/// large data set replays a lot).
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// One of the compared systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// `lookout-server` from the release build.
    Lookout,
    /// Prometheus (Debian package), through `peers.sh`.
    Prometheus,
    /// VictoriaMetrics single-node (Debian package), through `peers.sh`.
    VictoriaMetrics,
}

impl TargetKind {
    /// The name used in flags, tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Lookout => "lookout",
            TargetKind::Prometheus => "prometheus",
            TargetKind::VictoriaMetrics => "victoria-metrics",
        }
    }

    /// The program `peers.sh` runs for a peer.
    fn peer_program(self) -> Option<&'static str> {
        match self {
            TargetKind::Lookout => None,
            TargetKind::Prometheus => Some("prometheus"),
            TargetKind::VictoriaMetrics => Some("victoria-metrics"),
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `lookout-server` binary.
    pub lookout: PathBuf,
    /// `peers.sh`.
    pub peers_script: PathBuf,
}

impl Programs {
    /// Why `kind` cannot run here, if it cannot.
    pub fn missing(&self, kind: TargetKind) -> Option<String> {
        match kind.peer_program() {
            None if !self.lookout.is_file() => Some(format!(
                "{} does not exist (cargo build --release -p lookout-server)",
                self.lookout.display()
            )),
            None => None,
            Some(_) if !self.peers_script.is_file() => Some(format!(
                "{} does not exist (use --peers-script)",
                self.peers_script.display()
            )),
            Some(program) if !on_path(program) => Some(format!(
                "`{program}` is not installed ({} install)",
                self.peers_script.display()
            )),
            Some(_) => None,
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One compared system with its own directory; at most one server process at a time.
#[derive(Debug)]
pub struct Target {
    /// Which system.
    pub kind: TargetKind,
    /// Its directory (configuration, log, data).
    dir: PathBuf,
    port: u16,
    server: Option<ServerProcess>,
}

impl Target {
    /// A target that will live in `dir` (created, must be fresh).
    pub fn new(kind: TargetKind, dir: PathBuf) -> anyhow::Result<Target> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Target {
            kind,
            dir,
            port: 0,
            server: None,
        })
    }

    /// The query API's base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where remote-write requests go.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url())
    }

    /// The directory the server keeps its data in (all three use `<dir>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(ServerProcess::pid)
    }

    /// Starts the server (on a new free port) and waits until it answers as ready.
    pub fn start(
        &mut self,
        programs: &Programs,
        client: &reqwest::blocking::Client,
    ) -> anyhow::Result<()> {
        if self.server.is_some() {
            bail!("{} is already running", self.kind.name());
        }
        self.port = free_port()?;
        let timeout = READY_TIMEOUT.as_secs().to_string();
        let server = match self.kind {
            TargetKind::Lookout => {
                let args = vec![
                    "--storage.tsdb.path".to_owned(),
                    self.data_dir().display().to_string(),
                    "--web.listen-address".to_owned(),
                    format!("127.0.0.1:{}", self.port),
                    "--gateway.listen-address".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                    // Loopback only, and never the default 4242 another server may hold.
                    "--opentsdb.listen-address".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                    // Not the gateway port - 1000, which another process may hold.
                    "--management.listen-address".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                ];
                let mut server =
                    ServerProcess::spawn(&programs.lookout, &args, &self.dir.join("lookout.log"))?;
                wait_ready(client, &format!("{}/-/ready", self.base_url()), &mut server)
                    .with_context(|| format!("see {}", self.dir.join("lookout.log").display()))?;
                server
            }
            // No scrape targets (the list "," is empty): a self-scrape would put samples at
            // "now" into Prometheus's head, and it would then refuse the data set's older
            // samples as out of bounds.
            TargetKind::Prometheus => ServerProcess::start_peer(
                &programs.peers_script,
                "prometheus",
                self.port,
                &self.dir,
                &[
                    ("PROM_SCRAPE_TARGETS", ","),
                    ("PEERS_READY_TIMEOUT", &timeout),
                ],
            )?,
            TargetKind::VictoriaMetrics => ServerProcess::start_peer(
                &programs.peers_script,
                "victoria-metrics",
                self.port,
                &self.dir,
                &[("PEERS_READY_TIMEOUT", &timeout)],
            )?,
        };
        self.server = Some(server);
        Ok(())
    }

    /// Asks the server to make everything it holds durable and searchable where it has an
    /// endpoint for that (VictoriaMetrics' `/internal/force_flush`); the others write every
    /// acknowledged sample to their WAL and need nothing.
    pub fn flush(&self, client: &reqwest::blocking::Client) -> anyhow::Result<()> {
        if self.kind == TargetKind::VictoriaMetrics {
            client
                .get(format!("{}/internal/force_flush", self.base_url()))
                .send()?
                .error_for_status()?;
        }
        Ok(())
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
    }

    /// Stops the server gracefully (each flushes what it flushes at shutdown).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// Polls `url` until it answers 2xx; fails if the server exits or [`READY_TIMEOUT`] passes.
fn wait_ready(
    client: &reqwest::blocking::Client,
    url: &str,
    server: &mut ServerProcess,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .is_ok_and(|response| response.status().is_success())
        {
            return Ok(());
        }
        if !server.alive() {
            bail!("the server exited before it was ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} not ready within {READY_TIMEOUT:?}")
}

/// The repository root of this source tree (the parent of `benches/`).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}
