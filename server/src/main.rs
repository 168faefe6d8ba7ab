//! Starts the server: flags, bind, serve, graceful shutdown.

use std::io::Write;

/// mimalloc: requests allocate on one thread and the store's writer frees
/// on another; glibc's arenas serialise those frees on a lock, mimalloc
/// hands them back without one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use server::config::Config;
use server::logwriter::BatchedWriter;
use server::service::StatusService;
use server::upstream::breaker::BreakerSettings;
use server::upstream::{Settings, Upstreams};
use server::{AppState, Options};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = server::eval::run(&args) {
        std::process::exit(code);
    }
    let config = Config::parse();
    if let Err(msg) = config.validate() {
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
    let (threshold, expected) = match server::eval::expected(
        config.quality_data.as_deref(),
        config.scorer,
        config.q4_threshold,
        config.quality_target,
    ) {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("error: --quality-data: {msg}");
            std::process::exit(2);
        }
    };
    // Lines are gathered in memory and written by a thread of their own
    // (server::logwriter): logging costs a request a copy, never a write.
    let (writer, _flush_on_exit) = BatchedWriter::new(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let is_access = |m: &tracing::Metadata<'_>| m.target() == server::access::TARGET;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer.clone())
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter_fn(move |m| !is_access(m))),
        )
        .with(server::access::AccessLog::new(writer).with_filter(filter_fn(is_access)))
        .init();

    // Each connection is a file descriptor: raise the soft limit (often
    // 1024) toward the hard one so --max-connections can be reached, with
    // room for the listener, upstream sockets and the log.
    let wanted = config.max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            max_connections = config.max_connections,
            open_files_limit = got,
            "the open-files limit is below what --max-connections needs; past it, accepting waits"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not raise the open-files limit"),
    }

    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound socket has an address");
    tracing::info!(
        scorer = config.scorer.name(),
        q4_threshold = threshold,
        expected_gap_recovered = expected.gap_recovered,
        expected_q4_share = expected.q4_share,
        labelled = %expected.source.name,
        "two-stage routing: the quality expected at the threshold, on labelled prompts"
    );
    let routing = shared::Routing {
        scorer: Some(config.scorer.name().to_owned()),
        expected_quality: Some(expected),
        ..shared::Routing::new(threshold)
    };
    let mut service = StatusService::new(config.buffer_size, config.window)
        .with_redaction(config.redact_queries)
        .with_routing(routing, config.prices())
        .with_assessor(config.assessor);
    if !config.in_memory {
        let settings = server::store::Settings {
            dir: config.data_dir.clone(),
            sync: config.sync,
            keep_decisions: config.keep_decisions,
            keep_rollups: config.keep_rollups,
        };
        let started = std::time::Instant::now();
        match server::store::Store::open(&settings, config.buffer_size) {
            Ok((store, restored)) => {
                tracing::info!(
                    dir = %config.data_dir.display(),
                    sync = ?config.sync,
                    decisions = restored.per_tier.iter().sum::<u64>(),
                    seq = restored.seq,
                    ms = started.elapsed().as_millis() as u64,
                    "store opened"
                );
                service = service.with_store(store, restored);
            }
            Err(err) => {
                eprintln!("error: {err}");
                std::process::exit(1);
            }
        }
    }
    let cluster = config.redis.as_ref().map(|url| {
        let settings = server::cluster::Settings {
            url: url.clone(),
            name: config.cluster.clone(),
            backlog: config.redis_backlog,
            address: addr.to_string(),
        };
        match server::cluster::Cluster::new(settings, config.buffer_size) {
            Ok(c) => std::sync::Arc::new(c),
            Err(err) => {
                eprintln!("error: {err}");
                std::process::exit(2);
            }
        }
    });
    if let Some(cluster) = &cluster {
        if let Some(store) = service.store() {
            store.track_changes();
        }
        service = service.with_cluster(std::sync::Arc::clone(cluster));
    }
    let state = AppState::with_options(
        service,
        Upstreams::new(
            config.specs(),
            Settings {
                max_body: config.max_upstream_body,
                max_inflight: config.max_inflight(),
                retries: config.retries,
                breaker: BreakerSettings {
                    failures: config.circuit_failures,
                    open_for: config.circuit_cooldown,
                },
                ..Settings::with_timeout(config.upstream_timeout)
            },
        ),
        Options {
            scorer: config.scorer,
            ingest_token: config.ingest_token(),
            cors_origin: config
                .cors_origin
                .as_deref()
                .and_then(|o| axum::http::HeaderValue::from_str(o).ok()),
            log_queries: config.log_queries,
            max_connections: config.max_connections,
            max_streams: config.max_streams,
            metrics_token: config.metrics_token(),
            api_keys: config.api_keys.clone(),
            read_keys: config.read_keys.clone(),
            council: config.council.clone(),
            moderator: config.moderator,
            assessor: config.assessor,
            assessor_timeout: config.assessor_timeout,
            max_exports: config.max_exports,
            write_timeout: config.write_timeout,
        },
    );
    let service_store = state.service.store().cloned();
    let service = std::sync::Arc::clone(&state.service);
    if let Some(cluster) = &cluster {
        cluster.register_metrics(state.upstreams.telemetry());
        cluster.start(service.clone());
        tracing::info!(cluster = %config.cluster, backlog = config.redis_backlog, "sharing one status through redis");
    }
    for tier in shared::Tier::ALL {
        if !state.upstreams.configured(tier) {
            tracing::info!(%tier, "tier has no upstream: its queries get 503");
        }
        for spec in state.upstreams.specs(tier) {
            // Never the key; the URL as given (user info in it is the
            // operator's own choice to log).
            tracing::info!(%tier, upstream = %spec.name, url = %spec.base_url, model = ?spec.model, key = spec.key.is_some(), "tier upstream");
        }
    }
    // Which model answers is the upstream's choice when --model is not
    // given and it serves several: say so once, without delaying start.
    let upstreams = std::sync::Arc::clone(&state.upstreams);
    tokio::spawn(async move { upstreams.check_models().await });
    // Scripts and tests read this line to learn the port when given port 0.
    println!("listening on http://{addr}");
    if server::panel::is_built() {
        println!("panel: open http://{addr}/ in a browser");
    } else {
        println!("panel: not built into this binary (scripts/run.sh builds it); the API is up");
    }
    let _ = std::io::stdout().flush();
    tracing::info!(
        %addr,
        buffer = config.buffer_size,
        window = config.window,
        redact = config.redact_queries,
        ingest_token = config.ingest_token.is_some(),
        cors = ?config.cors_origin,
        max_connections = config.max_connections,
        max_streams = config.max_streams,
        max_exports = config.max_exports,
        write_timeout = ?config.write_timeout,
        max_inflight = ?config.max_inflight(),
        max_upstream_body = config.max_upstream_body,
        retries = config.retries,
        circuit_failures = config.circuit_failures,
        circuit_cooldown = ?config.circuit_cooldown,
        metrics_token = config.metrics_token.is_some(),
        api_keys = config.api_keys.len(),
        read_keys = config.read_keys.len(),
        council = ?config.council,
        moderator = %config.moderator,
        assessor = config.assessor.name(),
        "serving"
    );

    server::serve::serve(
        listener,
        state,
        config.header_read_timeout,
        shutdown_signal(),
    )
    .await;
    if let Some(cluster) = &cluster {
        cluster.close(&*service).await;
    }
    if let Some(store) = service_store {
        store.close().await;
    }
    tracing::info!("stopped");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
