//! Starts the real Elasticsearch stand-ins (`noida`: ES 8 dialect, `osmem`: OpenSearch) on a
//! free loopback port through `../shared/peers/peers.sh`, and stops them when dropped.
//! Tests skip with a printed reason when the script or the stand-ins are missing.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lookout_es::{EsOptions, EsStorage, RefreshPolicy};

/// A running stand-in; stopped on drop.
#[derive(Debug)]
pub struct EsPeer {
    pub kind: &'static str,
    pub url: String,
    pub port: u16,
    pid: String,
    script: PathBuf,
    _dir: tempfile::TempDir,
}

/// `../shared/peers/peers.sh` from the repository root, if present.
pub fn peers_script() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("../shared/peers/peers.sh");
    script.is_file().then_some(script)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl EsPeer {
    /// Starts `kind` (`noida` or `osmem`), or says why it cannot and returns `None`.
    pub fn start(kind: &'static str) -> Option<EsPeer> {
        let Some(script) = peers_script() else {
            eprintln!("skipping: ../shared/peers/peers.sh is absent");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        for _attempt in 0..3 {
            let port = free_port();
            let output = Command::new("bash")
                .arg(&script)
                .args(["start", kind, &port.to_string()])
                .arg(dir.path())
                .output()
                .expect("bash runs");
            if output.status.success() {
                let pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                return Some(EsPeer {
                    kind,
                    url: format!("http://127.0.0.1:{port}"),
                    port,
                    pid,
                    script,
                    _dir: dir,
                });
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("not installed") {
                eprintln!(
                    "skipping: the {kind} stand-in is not installed (peers.sh install es): {}",
                    stderr.trim()
                );
                return None;
            }
            eprintln!("{kind} did not start on port {port}, trying another: {stderr}");
        }
        panic!("{kind} is installed but did not start three times");
    }

    /// Stops the server (it can be started again with [`EsPeer::restart`]).
    pub fn stop(&mut self) {
        if self.pid.is_empty() {
            return;
        }
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", &self.pid])
            .output();
        self.pid.clear();
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let output = Command::new("bash")
            .arg(&self.script)
            .args(["start", self.kind, &self.port.to_string()])
            .arg(self._dir.path())
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{} did not restart: {}",
            self.kind,
            String::from_utf8_lossy(&output.stderr)
        );
        self.pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }

    /// Options for a store on this server: one shard, immediate refresh, short retries.
    pub fn options(&self, index: &str) -> EsOptions {
        EsOptions::new(self.url.clone())
            .index(index)
            .shards(1, 0)
            .refresh(RefreshPolicy::Immediate)
            .retry_budget(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(10))
    }

    /// Opens a store on this server.
    pub async fn open(&self, index: &str) -> EsStorage {
        EsStorage::open(self.options(index))
            .await
            .expect("the store opens")
    }
}

impl Drop for EsPeer {
    fn drop(&mut self) {
        self.stop();
    }
}
