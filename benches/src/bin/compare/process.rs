//! The server processes the tool starts, and the guarantee that none outlives it.
//!
//! Every server is recorded in a process-wide registry while it runs. A [`ServerProcess`]
//! stops its server when dropped (normal end, error, panic). SIGINT, SIGTERM and SIGHUP are
//! caught by a thread of their own that stops every registered server, removes the work
//! directory and exits. Servers
//! are started in a process group of their own so that a terminal's Ctrl-C reaches only this
//! tool, which then stops them in order; a start holds the registry's lock until the new PID
//! is recorded, so a signal arriving mid-start waits for it and stops it too.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procfs;

/// How long a server may take to exit after SIGTERM (it flushes its data) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// How a registered server is stopped.
#[derive(Debug, Clone)]
enum Stopper {
    /// SIGTERM, wait, SIGKILL (Lookout, started directly).
    Signal,
    /// `peers.sh stop PID` (which itself does SIGTERM, waits, SIGKILL).
    Peers(PathBuf),
}

#[derive(Debug, Clone)]
struct Registered {
    pid: u32,
    stopper: Stopper,
}

/// The servers running now.
static RUNNING: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// A directory to remove after a signal stopped the servers (the work directory).
static REMOVE_ON_SIGNAL: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Removes `dir` when a signal ends the run (a normal end removes it by dropping its guard).
pub fn remove_on_signal(dir: &Path) {
    *REMOVE_ON_SIGNAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(dir.to_owned());
}

fn running() -> MutexGuard<'static, Vec<Registered>> {
    // A panic while the lock was held leaves a usable list: keep stopping what is in it.
    RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server started by this tool; stopped when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    pid: u32,
    /// The child handle when the tool spawned the server itself (to reap it).
    child: Option<Child>,
    stopper: Stopper,
    stopped: bool,
}

impl ServerProcess {
    /// Starts `binary args...` in its own process group, output appended to `log`.
    pub fn spawn(binary: &Path, args: &[String], log: &Path) -> anyhow::Result<ServerProcess> {
        let mut registry = running();
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        registry.push(Registered {
            pid,
            stopper: Stopper::Signal,
        });
        Ok(ServerProcess {
            pid,
            child: Some(child),
            stopper: Stopper::Signal,
            stopped: false,
        })
    }

    /// `peers.sh start NAME PORT DIR` (which waits until the peer is ready and prints its
    /// PID), with `env` added to its environment.
    pub fn start_peer(
        script: &Path,
        name: &str,
        port: u16,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProcess> {
        let mut registry = running();
        let output = Command::new(script)
            .args(["start", name, &port.to_string()])
            .arg(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .process_group(0)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} start {name} failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let printed = String::from_utf8_lossy(&output.stdout);
        let pid: u32 = printed
            .trim()
            .parse()
            .with_context(|| format!("peers.sh printed {printed:?}, not a PID"))?;
        let stopper = Stopper::Peers(script.to_owned());
        registry.push(Registered {
            pid,
            stopper: stopper.clone(),
        });
        Ok(ServerProcess {
            pid,
            child: None,
            stopper,
            stopped: false,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the server is still running.
    pub fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        procfs::alive(self.pid)
    }

    /// Stops the server gracefully (it flushes), waiting for it to exit.
    pub fn stop(mut self) {
        self.stop_now();
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed) and waits for it to exit.
    pub fn kill(mut self) {
        self.stopped = true;
        let mut registry = running();
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match &mut self.child {
            Some(child) => {
                let _ = child.wait();
            }
            None => {
                // Until the process is gone, not merely a zombie: the leader of a threaded
                // program shows `Z` while its other threads still exit and hold its files (and
                // so its data directory's lock). Its new parent reaps it.
                let proc_dir = PathBuf::from(format!("/proc/{}", self.pid));
                let deadline = Instant::now() + STOP_TIMEOUT;
                while proc_dir.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        registry.retain(|registered| registered.pid != self.pid);
    }

    fn stop_now(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut registry = running();
        stop_pid(self.pid, &self.stopper);
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
        registry.retain(|registered| registered.pid != self.pid);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Stops one server and waits (at most [`STOP_TIMEOUT`], then SIGKILL) for it to exit.
fn stop_pid(pid: u32, stopper: &Stopper) {
    if !procfs::alive(pid) {
        return;
    }
    match stopper {
        Stopper::Peers(script) => {
            let timeout = STOP_TIMEOUT.as_secs().to_string();
            let stopped = Command::new(script)
                .args(["stop", &pid.to_string()])
                .env("PEERS_STOP_TIMEOUT", &timeout)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .status()
                .is_ok_and(|status| status.success());
            if stopped && !procfs::alive(pid) {
                return;
            }
            signal_and_wait(pid);
        }
        Stopper::Signal => signal_and_wait(pid),
    }
}

fn signal_and_wait(pid: u32) {
    let send = |signal: &str| {
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    send("-TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !procfs::alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("compare: server {pid} did not exit within {STOP_TIMEOUT:?}; killing it");
    send("-KILL");
}

/// Catches SIGINT, SIGTERM and SIGHUP on a thread of its own: stops every running server,
/// removes the work directory, then exits with status 130.
pub fn stop_servers_on_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the signal watcher")?;
    // Registered here, before the thread starts, so that no signal is missed.
    let mut streams = runtime.block_on(async {
        Ok::<_, std::io::Error>([
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ])
    })?;
    std::thread::Builder::new()
        .name("signal-watcher".into())
        .spawn(move || {
            runtime.block_on(async {
                let [interrupt, terminate, hangup] = &mut streams;
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                    _ = hangup.recv() => {}
                }
            });
            eprintln!("compare: signal received, stopping the servers");
            let mut registry = running();
            for registered in registry.drain(..) {
                stop_pid(registered.pid, &registered.stopper);
            }
            let leftover = REMOVE_ON_SIGNAL
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(dir) = leftover {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(130);
        })
        .context("starting the signal watcher thread")?;
    Ok(())
}
