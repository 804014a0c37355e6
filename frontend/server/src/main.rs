//! `lookout-server`: one process serving the Prometheus HTTP API (with the remote-write
//! receiver) and SOFALookout's push protocols over the embedded native store, or over an
//! Elasticsearch cluster in SOFALookout's layout (`--storage es --es-url URL`).
//!
//! With no flags it stores data under `./data`, serves the query API on port 9090 as
//! Prometheus does and the gateway port 7200 (remote write at `/api/v1/write`, SOFALookout's
//! `/datas`, `/lookout/metrics/...` and `/prom/metrics/...`: the `gateway` module). Settings
//! come from a TOML file (`--config.file`, see the `config` module) and flags, flags winning.
//! Scrape targets come from `--scrape.config-file` and `--scrape.sofalookout-dir` (the
//! `scrape` module); SIGHUP reloads them. SIGINT or SIGTERM stops accepting connections, lets
//! requests in flight finish, stops the scrape loops, then flushes and closes the store.

mod config;
mod gateway;
mod scrape;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use lookout_api::{ApiOptions, StatusInfo};
use lookout_tsdb::{FsyncPolicy, Tsdb, TsdbOptions};

use config::{Args, Config};

/// mimalloc instead of the system allocator: the select and query paths allocate per series,
/// and glibc's malloc kept the memory of finished queries resident (measured with the
/// comparison tool, `benches/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args)?;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_max_level(config.log_level()?)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args, config))
}

/// The store the process serves from.
enum Backend {
    /// The embedded native store.
    Native(Tsdb),
    /// An Elasticsearch cluster, with the task running rollover and retention (if any).
    Elasticsearch(lookout_es::EsStorage, Option<tokio::task::JoinHandle<()>>),
}

async fn open_native(config: &Config) -> anyhow::Result<Tsdb> {
    let storage = &config.storage;
    let retention =
        (storage.retention_hours > 0).then(|| storage.retention_hours as i64 * 3_600_000);
    let retention_bytes = (storage.retention_bytes > 0).then_some(storage.retention_bytes);
    let fsync = if storage.wal_fsync_always {
        FsyncPolicy::Always
    } else {
        FsyncPolicy::Interval(lookout_tsdb::DEFAULT_FSYNC_INTERVAL)
    };
    let options = TsdbOptions::new(&storage.path)
        .background_maintenance(true)
        .fsync(fsync)
        .retention_ms(retention)
        .retention_bytes(retention_bytes)
        .out_of_order_window_ms(storage.out_of_order_window_minutes * 60_000)
        .persist_head_on_close(storage.persist_head_on_shutdown)
        .max_series(config.max_active_series());
    let data_dir = storage.path.clone();
    let tsdb = tokio::task::spawn_blocking(move || Tsdb::open(options))
        .await?
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    for block in tsdb.quarantined() {
        tracing::error!(block = %block.id, error = %block.error, "a damaged block was quarantined");
    }
    Ok(tsdb)
}

async fn open_backend(config: &Config) -> anyhow::Result<Backend> {
    if config.storage.backend != "es" {
        return Ok(Backend::Native(open_native(config).await?));
    }
    let es = &config.storage.es;
    let storage = lookout_es::EsStorage::open(es.options()?)
        .await
        .with_context(|| format!("opening the Elasticsearch store at {}", es.url))?;
    let maintenance = es.maintenance.then(|| storage.spawn_maintenance());
    tracing::info!(url = %es.url, alias = storage.write_alias(), reads = storage.read_pattern(),
        maintenance = es.maintenance, "using Elasticsearch");
    Ok(Backend::Elasticsearch(storage, maintenance))
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let backend = open_backend(&config).await?;
    let data_dir = config.storage.path.clone();
    let native = match &backend {
        Backend::Native(tsdb) => Some(tsdb.clone()),
        Backend::Elasticsearch(..) => None,
    };
    let metrics_source = native.clone();
    let es_metrics = match &backend {
        Backend::Elasticsearch(es, _) => Some(es.clone()),
        Backend::Native(_) => None,
    };
    let gateway_stats = Arc::new(gateway::GatewayStats::default());
    let gateway_metrics = gateway_stats.clone();
    let options = ApiOptions {
        metrics: Some(Arc::new(move |out: &mut String| {
            if let Some(tsdb) = &metrics_source {
                tsdb.render_metrics(out);
            }
            if let Some(es) = &es_metrics {
                es.render_metrics(out);
            }
            gateway_metrics.render(out);
        })),
        engine: config.engine_options()?,
        decode_limits: config.decode_limits(),
        admin: native
            .as_ref()
            .filter(|_| config.web.enable_admin_api)
            .map(|tsdb| Arc::new(store::TsdbAdmin::new(tsdb.clone(), &data_dir)) as _),
        status: StatusInfo {
            flags: config.flags(args.config_file.as_deref()),
            config: config.to_toml(),
            storage_retention: config.retention_text(),
            store: native
                .as_ref()
                .map(|tsdb| Arc::new(store::TsdbStatus(tsdb.clone())) as _),
        },
        ..ApiOptions::default()
    };
    let storage: Arc<dyn lookout_storage::Storage> = match &backend {
        Backend::Native(tsdb) => Arc::new(tsdb.clone()),
        Backend::Elasticsearch(es, _) => Arc::new(es.clone()),
    };
    // What the gateway writes (its port, telnet, scrape) goes through the pipeline (common
    // tags, label limits); the query port's remote-write receiver writes as sent.
    let pipeline = Arc::new(config.pipeline()?);
    let gateway_storage: Arc<dyn lookout_storage::Storage> = Arc::new(
        gateway::pipeline::GatewayStore::new(storage.clone(), pipeline.clone()),
    );
    let remote_write_storage: Arc<dyn lookout_storage::Storage> =
        Arc::new(gateway::pipeline::GatewayStore::counting(
            storage.clone(),
            pipeline,
            gateway::Protocol::RemoteWrite,
            gateway_stats.clone(),
        ));
    let admission = if config.gateway.require_token_everywhere {
        gateway::pipeline::Admission::require_tokens(
            config.gateway.max_in_flight_requests,
            config.gateway.retry_after_seconds,
            gateway_stats.clone(),
            config.tokens(),
        )
    } else {
        gateway::pipeline::Admission::new(
            config.gateway.max_in_flight_requests,
            config.gateway.retry_after_seconds,
            gateway_stats.clone(),
        )
    };
    let scrape_manager = scrape::ScrapeManager::start(
        scrape::ScrapeSources {
            config_file: config.scrape.config_file.clone(),
            sofalookout_dir: config.scrape.sofalookout_dir.clone(),
        },
        gateway_storage.clone(),
        gateway_stats.clone(),
        options.decode_limits.max_body_bytes,
    )?;
    scrape::reload_on_hangup(scrape_manager.clone())?;
    let options = ApiOptions {
        targets: Some(scrape_manager.clone()),
        ..options
    };
    let api = lookout_api::router(storage.clone(), options.clone());
    let lookout_limits = lookout_gateway::lookout::Limits {
        decode: options.decode_limits,
        labels: config.label_limits(),
    };
    // The gateway port's receiver reports what it refuses into the gateway's counters.
    let observed_stats = gateway_stats.clone();
    let gateway_write_options = ApiOptions {
        remote_write_observer: Some(Arc::new(move |refusal| {
            let protocol = gateway::Protocol::RemoteWrite;
            match refusal {
                lookout_api::RemoteWriteRefusal::Request(reason) => {
                    observed_stats.refused(protocol, reason)
                }
                lookout_api::RemoteWriteRefusal::Samples(reason, count) => {
                    observed_stats.rejected(protocol, reason, count)
                }
            }
        })),
        ..options
    };
    let gateway = lookout_api::write_router(remote_write_storage, gateway_write_options)
        .merge(gateway::router(
            gateway_storage.clone(),
            lookout_limits,
            config.tokens(),
            gateway_stats.clone(),
        ))
        .merge(scrape::router(scrape_manager.clone()))
        .layer(axum::middleware::from_fn_with_state(
            admission,
            gateway::pipeline::admit,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    let api_listener = tokio::net::TcpListener::bind(config.web.listen_address)
        .await
        .with_context(|| format!("listening on {}", config.web.listen_address))?;
    let gateway_listener = tokio::net::TcpListener::bind(config.gateway.listen_address)
        .await
        .with_context(|| format!("listening on {}", config.gateway.listen_address))?;
    let telnet_listener = tokio::net::TcpListener::bind(config.opentsdb.listen_address)
        .await
        .with_context(|| format!("listening on {}", config.opentsdb.listen_address))?;
    tracing::info!(
        address = %api_listener.local_addr()?,
        gateway = %gateway_listener.local_addr()?,
        opentsdb = %telnet_listener.local_addr()?,
        data = %data_dir.display(),
        storage = %config.storage.backend,
        "lookout-server ready"
    );
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    scrape::refresh_periodically(scrape_manager.clone(), stopped.clone());
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let api_server =
        axum::serve(api_listener, api).with_graceful_shutdown(until_stopped(stopped.clone()));
    let gateway_server = axum::serve(gateway_listener, gateway)
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    let telnet_server = gateway::opentsdb::serve_telnet(
        telnet_listener,
        gateway_storage,
        lookout_limits,
        gateway_stats,
        stopped,
    );
    tokio::try_join!(
        async { api_server.await.context("serving the query API") },
        async { gateway_server.await.context("serving the gateway port") },
        async {
            telnet_server.await;
            Ok(())
        },
    )?;
    scrape_manager.shutdown().await;
    match backend {
        Backend::Native(tsdb) => {
            tracing::info!("shutting down: flushing the store");
            tokio::task::spawn_blocking(move || tsdb.close()).await??;
        }
        Backend::Elasticsearch(_, maintenance) => {
            if let Some(task) = maintenance {
                task.abort();
            }
            tracing::info!("shutting down");
        }
    }
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
