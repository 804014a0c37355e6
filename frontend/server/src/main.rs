//! `lookout-server`: one process serving the Prometheus HTTP API (with the remote-write
//! receiver) over the embedded native store.
//!
//! With no flags it stores data under `./data` and listens on port 9090 as Prometheus does.
//! SIGINT or SIGTERM stops accepting connections, lets requests in flight finish, then flushes
//! and closes the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use lookout_api::ApiOptions;
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

/// Command-line flags, named like Prometheus' where they mean the same thing.
#[derive(Debug, Parser)]
#[command(name = "lookout-server", version, about = "Lookout metrics server")]
struct Args {
    /// Data directory of the native store.
    #[arg(
        long = "storage.tsdb.path",
        env = "LOOKOUT_DATA",
        default_value = "data"
    )]
    data_dir: PathBuf,
    /// Address of the query API and the remote-write receiver.
    #[arg(
        long = "web.listen-address",
        env = "LOOKOUT_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    listen: SocketAddr,
    /// How long to keep data, in hours (0 keeps everything).
    #[arg(long = "storage.tsdb.retention.hours", default_value_t = 15 * 24)]
    retention_hours: u64,
    /// Keep at most this many bytes of blocks (0: no size limit).
    #[arg(long = "storage.tsdb.retention.bytes", default_value_t = 0)]
    retention_bytes: u64,
    /// Sync the WAL on every write (durable against power loss) instead of once a second.
    #[arg(long = "storage.wal.fsync-always")]
    fsync_always: bool,
    /// Accept samples up to this many minutes older than the newest one (0: in order only).
    #[arg(
        long = "storage.tsdb.out-of-order-window-minutes",
        default_value_t = 60
    )]
    out_of_order_minutes: i64,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", default_value = "info")]
    log_level: tracing::Level,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let retention = (args.retention_hours > 0).then(|| args.retention_hours as i64 * 3_600_000);
    let retention_bytes = (args.retention_bytes > 0).then_some(args.retention_bytes);
    let fsync = if args.fsync_always {
        FsyncPolicy::Always
    } else {
        FsyncPolicy::Interval(lookout_tsdb::DEFAULT_FSYNC_INTERVAL)
    };
    let options = TsdbOptions::new(&args.data_dir)
        .fsync(fsync)
        .retention_ms(retention)
        .retention_bytes(retention_bytes)
        .out_of_order_window_ms(args.out_of_order_minutes * 60_000);
    let data_dir = args.data_dir.clone();
    let tsdb = tokio::task::spawn_blocking(move || Tsdb::open(options))
        .await?
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    for block in tsdb.quarantined() {
        tracing::error!(block = %block.id, error = %block.error, "a damaged block was quarantined");
    }
    let metrics_source = tsdb.clone();
    let options = ApiOptions {
        metrics: Some(Arc::new(move |out: &mut String| {
            metrics_source.render_metrics(out)
        })),
        ..ApiOptions::default()
    };
    let app = lookout_api::router(Arc::new(tsdb.clone()), options);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, data = %args.data_dir.display(), "lookout-server ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("shutting down: flushing the store");
    tokio::task::spawn_blocking(move || tsdb.close()).await??;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}
