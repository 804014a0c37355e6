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

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (libmimalloc-sys names no constant
/// for it); `purge_delay_option_is_where_mimalloc_has_it` checks the numbering.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory freed in a burst waits before it goes back to the OS: long enough that a
/// query or a write request that frees and allocates again reuses it instead of faulting
/// fresh pages in, short enough that the memory of a finished burst leaves soon.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// How often [`return_freed_memory_soon`]'s thread asks mimalloc to purge.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Freed memory goes back to the OS [`PURGE_DELAY_MS`] after it was freed, at most
/// [`PURGE_INTERVAL`] later, instead of after mimalloc v3's default 1 s delay and only when
/// some thread next allocates. mimalloc purges its arenas (program-wide) when a thread calls
/// into it, so threads that went idle after a burst (ingestion, a large query) kept what they
/// had freed: the comparison tool measured a settled RSS of 155-192 MiB at small scale, and 98
/// MiB with immediate purging (`benches/README.md`). Immediate purging, though, made every
/// batch of a large query fault its pages in again (a sixth of a `sum(rate())` over 100k
/// series was page faults); a thread that calls `mi_collect` twice a second purges what is
/// due instead. `MIMALLOC_PURGE_DELAY` in the environment still wins. (mimalloc reads its
/// options when the process loads, before `main`, so the option is set, not defaulted.)
fn return_freed_memory_soon() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: sets an integer option; mimalloc keeps options in atomics, and no pointer
        // is involved.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
    let spawned = std::thread::Builder::new()
        .name("lookout-purge".into())
        .spawn(|| loop {
            std::thread::sleep(PURGE_INTERVAL);
            #[allow(unsafe_code)]
            // SAFETY: mi_collect takes no pointer; it frees only what is no longer used.
            unsafe {
                libmimalloc_sys::mi_collect(false);
            }
        });
    if let Err(error) = spawned {
        eprintln!("lookout-server: no memory purging thread: {error}");
    }
}

fn main() -> anyhow::Result<()> {
    return_freed_memory_soon();
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
    if config.gateway_only() {
        return run_gateway_only(args, config).await;
    }
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
    let gateway_parts = gateway_parts(&config, storage.clone(), gateway_stats.clone(), options)?;
    let scrape_manager = gateway_parts.scrape_manager.clone();
    let gateway_storage = gateway_parts.storage.clone();
    let lookout_limits = gateway_parts.lookout_limits;
    let max_sample_age_ms = gateway_parts.max_sample_age_ms;
    // The query port's receiver: the same in-flight bound, counted as `api_remote_write`.
    let api_admission = Arc::new(gateway::pipeline::Admission::api(
        config.web.max_in_flight_remote_writes,
        config.gateway.retry_after_seconds,
        gateway_stats.clone(),
    ));
    let api_observed = gateway_stats.clone();
    let api_options = ApiOptions {
        remote_write_observer: Some(Arc::new(move |refusal| {
            observe_remote_write(&api_observed, gateway::Protocol::ApiRemoteWrite, refusal)
        })),
        ..gateway_parts.options.clone()
    };
    let api_storage: Arc<dyn lookout_storage::Storage> =
        Arc::new(gateway::pipeline::GatewayStore::counting_only(
            storage.clone(),
            gateway::Protocol::ApiRemoteWrite,
            gateway_stats.clone(),
        ));
    let api = lookout_api::router(api_storage, api_options)
        .layer(axum::middleware::from_fn_with_state(
            api_admission,
            gateway::pipeline::admit,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    let gateway = gateway_parts
        .router
        .into_make_service_with_connect_info::<SocketAddr>();
    let api_listener = bind(config.web.listen_address).await?;
    let gateway_listener = bind(config.gateway.listen_address).await?;
    let telnet_listener = bind(config.opentsdb.listen_address).await?;
    let management_listener = bind_management(&config).await?;
    tracing::info!(
        address = %api_listener.local_addr()?,
        gateway = %gateway_listener.local_addr()?,
        opentsdb = %telnet_listener.local_addr()?,
        management = %management_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
            .map_or("disabled".to_owned(), |address| address.to_string()),
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
    let side_servers = serve_telnet_and_management(
        (telnet_listener, management_listener),
        gateway_storage,
        lookout_limits,
        gateway::opentsdb::TelnetOptions {
            max_sample_age_ms,
            max_connections: config.opentsdb.max_connections,
        },
        gateway_stats,
        stopped,
    );
    tokio::try_join!(
        async { api_server.await.context("serving the query API") },
        async { gateway_server.await.context("serving the gateway port") },
        side_servers,
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

/// The OpenTSDB telnet listener and the management port (when enabled), as both modes run
/// them; ends once `stopped` turns true and both have stopped.
async fn serve_telnet_and_management(
    (telnet, management): (tokio::net::TcpListener, Option<tokio::net::TcpListener>),
    storage: Arc<dyn lookout_storage::Storage>,
    limits: lookout_gateway::lookout::Limits,
    telnet_options: gateway::opentsdb::TelnetOptions,
    stats: Arc<gateway::GatewayStats>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut until_stopped = stopped.clone();
    let management_router = gateway::management::router(stats.clone());
    let management = async move {
        match management {
            Some(listener) => axum::serve(listener, management_router)
                .with_graceful_shutdown(async move {
                    let _ = until_stopped.wait_for(|stop| *stop).await;
                })
                .await
                .context("serving the management port"),
            None => Ok(()),
        }
    };
    let telnet =
        gateway::opentsdb::serve_telnet(telnet, storage, limits, telnet_options, stats, stopped);
    let ((), management) = tokio::join!(telnet, management);
    management
}

/// A listener on `address`, or an error naming it.
async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))
}

/// The management port's listener, unless it is disabled.
async fn bind_management(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(address) = config.management_address()? else {
        return Ok(None);
    };
    let listener = bind(address).await.context("the management port")?;
    Ok(Some(listener))
}

/// Counts what a remote-write receiver refused as `protocol`'s.
fn observe_remote_write(
    stats: &gateway::GatewayStats,
    protocol: gateway::Protocol,
    refusal: lookout_api::RemoteWriteRefusal,
) {
    match refusal {
        lookout_api::RemoteWriteRefusal::Request(reason) => stats.refused(protocol, reason),
        lookout_api::RemoteWriteRefusal::Samples(reason, count) => {
            stats.rejected(protocol, reason, count)
        }
    }
}

/// The gateway port's pieces, shared by both modes.
struct GatewayParts {
    /// Every route of the gateway port, behind the admission middleware.
    router: axum::Router,
    /// What the gateways write through (the pipeline over the store).
    storage: Arc<dyn lookout_storage::Storage>,
    scrape_manager: Arc<scrape::ScrapeManager>,
    lookout_limits: lookout_gateway::lookout::Limits,
    /// The "too old" cut-off of the SOFALookout protocols and telnet (`None`: off).
    max_sample_age_ms: Option<i64>,
    /// The API options with the scrape targets filled in.
    options: ApiOptions,
}

/// Builds the gateway port over `storage`: SOFALookout's protocols, remote write, scrape
/// targets; starts the scrape loops and their SIGHUP reload.
fn gateway_parts(
    config: &Config,
    storage: Arc<dyn lookout_storage::Storage>,
    gateway_stats: Arc<gateway::GatewayStats>,
    options: ApiOptions,
) -> anyhow::Result<GatewayParts> {
    // What the gateway writes (its port, telnet, scrape) goes through the pipeline (common
    // tags, label limits); the query port's remote-write receiver writes as sent.
    let pipeline = Arc::new(config.pipeline()?);
    let gateway_storage: Arc<dyn lookout_storage::Storage> = Arc::new(
        gateway::pipeline::GatewayStore::new(storage.clone(), pipeline.clone()),
    );
    let remote_write_storage: Arc<dyn lookout_storage::Storage> =
        Arc::new(gateway::pipeline::GatewayStore::counting(
            storage,
            pipeline,
            gateway::Protocol::RemoteWrite,
            gateway_stats.clone(),
        ));
    let mut admission = gateway::pipeline::Admission::new(
        config.gateway.max_in_flight_requests,
        config.gateway.retry_after_seconds,
        gateway_stats.clone(),
    )
    .rate_limits(config.rate_limits())
    .route_tokens(config.tokens());
    if config.gateway.require_token_everywhere {
        admission = admission.tokens_everywhere(config.tokens());
    }
    let admission = Arc::new(admission);
    let max_sample_age_ms = config.max_sample_age_ms()?;
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
    let lookout_limits = lookout_gateway::lookout::Limits {
        decode: options.decode_limits,
        labels: config.label_limits(),
    };
    // The gateway port's receiver reports what it refuses into the gateway's counters.
    let observed_stats = gateway_stats.clone();
    let gateway_write_options = ApiOptions {
        remote_write_observer: Some(Arc::new(move |refusal| {
            observe_remote_write(&observed_stats, gateway::Protocol::RemoteWrite, refusal)
        })),
        ..options.clone()
    };
    let router = lookout_api::write_router(remote_write_storage, gateway_write_options)
        .merge(gateway::router(
            gateway_storage.clone(),
            lookout_limits,
            max_sample_age_ms,
            config.tokens(),
            gateway_stats,
        ))
        .merge(scrape::router(scrape_manager.clone()))
        .layer(axum::middleware::from_fn_with_state(
            admission,
            gateway::pipeline::admit,
        ));
    Ok(GatewayParts {
        router,
        storage: gateway_storage,
        scrape_manager,
        lookout_limits,
        max_sample_age_ms,
        options,
    })
}

/// Gateway-only mode: the gateway port (with `/metrics`, `/-/healthy`, `/-/ready`), telnet
/// and scrape, writing into the forwarding queues; no store, no query API.
async fn run_gateway_only(args: Args, config: Config) -> anyhow::Result<()> {
    let (forward_options, exporters) = config.forward_setup()?;
    let queue_dir = forward_options.queue_dir.clone();
    let forwarder = tokio::task::spawn_blocking(move || {
        lookout_relay::Forwarder::open(forward_options, exporters)
    })
    .await?
    .with_context(|| format!("opening the forwarding queues in {}", queue_dir.display()))?;
    let gateway_stats = Arc::new(gateway::GatewayStats::default());
    let options = ApiOptions {
        engine: config.engine_options()?,
        decode_limits: config.decode_limits(),
        status: StatusInfo {
            flags: config.flags(args.config_file.as_deref()),
            config: config.to_toml(),
            ..StatusInfo::default()
        },
        ..ApiOptions::default()
    };
    let storage: Arc<dyn lookout_storage::Storage> = Arc::new(forwarder.clone());
    let parts = gateway_parts(&config, storage, gateway_stats.clone(), options)?;
    let metrics_stats = gateway_stats.clone();
    let metrics_forwarder = forwarder.clone();
    let router = parts
        .router
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                let mut out = String::new();
                metrics_stats.render(&mut out);
                metrics_forwarder.render_metrics(&mut out);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    out,
                )
            }),
        )
        .route(
            "/-/healthy",
            axum::routing::get(|| async { "Lookout gateway is Healthy.\n" }),
        )
        .route(
            "/-/ready",
            axum::routing::get(|| async { "Lookout gateway is Ready.\n" }),
        );
    let gateway_listener = bind(config.gateway.listen_address).await?;
    let telnet_listener = bind(config.opentsdb.listen_address).await?;
    let management_listener = bind_management(&config).await?;
    tracing::info!(
        gateway = %gateway_listener.local_addr()?,
        opentsdb = %telnet_listener.local_addr()?,
        queue = %queue_dir.display(),
        exporters = ?config.forward_setup()?.1.iter().map(|e| e.url.as_str()).collect::<Vec<_>>(),
        "lookout-server ready (gateway-only mode)"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let deliveries = forwarder.spawn(stopped.clone());
    scrape::refresh_periodically(parts.scrape_manager.clone(), stopped.clone());
    let mut until_stopped = stopped.clone();
    let gateway_server = axum::serve(
        gateway_listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = until_stopped.wait_for(|stop| *stop).await;
    });
    let side_servers = serve_telnet_and_management(
        (telnet_listener, management_listener),
        parts.storage.clone(),
        parts.lookout_limits,
        gateway::opentsdb::TelnetOptions {
            max_sample_age_ms: parts.max_sample_age_ms,
            max_connections: config.opentsdb.max_connections,
        },
        gateway_stats,
        stopped,
    );
    tokio::try_join!(
        async { gateway_server.await.context("serving the gateway port") },
        side_servers,
    )?;
    parts.scrape_manager.shutdown().await;
    for delivery in deliveries {
        let _ = delivery.await;
    }
    tracing::info!("shutting down; undelivered batches stay queued for the next start");
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

#[cfg(test)]
mod allocator_tests {
    /// The option numbers of mimalloc v3 up to `os_tag` (18, default 100): if they hold, 15 is
    /// `purge_delay` (default 1000 ms in v3).
    #[test]
    fn purge_delay_option_is_where_mimalloc_has_it() {
        if std::env::vars().any(|(name, _)| name.starts_with("MIMALLOC_")) {
            eprintln!("SKIPPED: MIMALLOC_* options are set in the environment");
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: reads integer options.
        let (os_tag, purge_delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(18),
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!(os_tag, 100, "mimalloc's option numbering moved");
        assert!(
            purge_delay == 1000 || purge_delay == super::PURGE_DELAY_MS,
            "{purge_delay}"
        );
        super::return_freed_memory_soon();
        #[allow(unsafe_code)]
        // SAFETY: reads an integer option.
        let purge_delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(purge_delay, super::PURGE_DELAY_MS);
    }
}
