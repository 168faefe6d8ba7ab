//! Starting the server from its configuration: [`build`] checks the flags,
//! opens the store, joins the cluster and binds, and returns a [`Server`]
//! that [`Server::serve`]s until shut down. `main.rs` only parses flags and
//! calls these, so a start is testable without a process.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::logwriter::{BatchedWriter, FlushOnDrop};
use crate::service::StatusService;
use crate::state::{AppState, Options};
use crate::upstream::breaker::BreakerSettings;
use crate::upstream::{self, Upstreams};
use crate::{access, eval, panel, store};

/// Why the server could not start; [`StartError::exit_code`] is the
/// process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag, or flags together, make no sense.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The virtual keys cannot be read from the store.
    #[error("the virtual keys cannot be read: {0}")]
    Keys(#[from] crate::keys::KeyError),
    /// `--quality-data` cannot be read or measured.
    #[error("--quality-data: {0}")]
    QualityData(String),
    /// The listening address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// `--listen`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store cannot be opened.
    #[error("{0}")]
    Store(#[from] store::OpenError),
    /// The cluster's settings are refused.
    #[error("{0}")]
    Cluster(String),
}

impl StartError {
    /// 2 for what the flags say, 1 for what the machine refuses.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_)
            | StartError::Keys(_)
            | StartError::QualityData(_)
            | StartError::Cluster(_) => 2,
            StartError::Listen { .. } | StartError::Store(_) => 1,
        }
    }
}

/// The server, bound and ready to serve.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    cluster: Option<Arc<Cluster>>,
    header_read_timeout: std::time::Duration,
}

/// Logs go to standard error, gathered in memory and written by a thread
/// of their own ([`crate::logwriter`]): logging costs a request a copy,
/// never a write. Keep the guard until the end: it writes what is left.
pub fn init_logging() -> FlushOnDrop {
    let (writer, flush_on_exit) = BatchedWriter::new(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let is_access = |m: &tracing::Metadata<'_>| m.target() == access::TARGET;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer.clone())
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter_fn(move |m| !is_access(m))),
        )
        .with(access::AccessLog::new(writer).with_filter(filter_fn(is_access)))
        .init();
    flush_on_exit
}

/// Checks `config`, opens what it names and binds its address.
pub async fn build(config: &Config) -> Result<Server, StartError> {
    config.validate()?;
    let (threshold, expected) = eval::expected(
        config.quality_data.as_deref(),
        config.scorer,
        config.q4_threshold,
        config.quality_target,
    )
    .map_err(StartError::QualityData)?;
    raise_open_files_limit(config.max_connections);
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Listen {
                address: config.listen.clone(),
                source,
            })?;
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
        service = open_store(config, service)?;
    }
    let cluster = match &config.redis {
        Some(url) => {
            let settings = cluster::Settings {
                url: url.clone(),
                name: config.cluster.clone(),
                backlog: config.redis_backlog,
                address: addr.to_string(),
            };
            let cluster =
                Cluster::new(settings, config.buffer_size).map_err(StartError::Cluster)?;
            Some(Arc::new(cluster))
        }
        None => None,
    };
    if let Some(cluster) = &cluster {
        if let Some(store) = service.store() {
            store.track_changes();
        }
        service = service.with_cluster(Arc::clone(cluster));
    }
    let keys = crate::keys::Keys::new(
        service.store().cloned(),
        crate::keys::Policy {
            prices: config.prices(),
            brownout: config.brownout,
            brownout_force: config.brownout_force,
            shared: config
                .redis
                .as_ref()
                .map(|url| crate::keys::ledger::Shared {
                    url: url.clone(),
                    cluster: config.cluster.clone(),
                    instance: service.instance().id,
                    fail_open: config.budget_fail == crate::keys::ledger::BudgetFail::Open,
                }),
        },
    )?;
    keys.watch();
    keys.start_sync();
    let service = service.with_keys(Arc::clone(&keys));
    let state = AppState::with_keys(service, upstreams(config), options(config), keys);
    state
        .keys
        .register_metrics(state.upstreams.telemetry(), config.metrics_keys);
    if let Some(cluster) = &cluster {
        cluster.register_metrics(state.upstreams.telemetry());
        cluster.start(state.service.clone());
        tracing::info!(cluster = %config.cluster, backlog = config.redis_backlog, "sharing one status through redis");
    }
    log_upstreams(&state.upstreams);
    // Which model answers is the upstream's choice when --model is not
    // given and it serves several: say so once, without delaying start.
    let upstreams = Arc::clone(&state.upstreams);
    tokio::spawn(async move { upstreams.check_models().await });
    log_settings(config, addr);
    Ok(Server {
        listener,
        addr,
        state,
        cluster,
        header_read_timeout: config.header_read_timeout,
    })
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Says where it listens on standard output (scripts and tests read
    /// this line to learn the port when given port 0), serves until
    /// `shutdown` resolves, then leaves the cluster and closes the store.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let addr = self.addr;
        println!("listening on http://{addr}");
        if panel::is_built() {
            println!("panel: open http://{addr}/ in a browser");
        } else {
            println!("panel: not built into this binary (scripts/run.sh builds it); the API is up");
        }
        let _ = std::io::stdout().flush();
        let service = Arc::clone(&self.state.service);
        crate::serve::serve(
            self.listener,
            self.state,
            self.header_read_timeout,
            shutdown,
        )
        .await;
        if let Some(cluster) = &self.cluster {
            cluster.close(&*service).await;
        }
        if let Some(store) = service.store() {
            store.close().await;
        }
        tracing::info!("stopped");
    }
}

/// Resolves at Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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

/// Each connection is a file descriptor: raises the soft limit (often
/// 1024) toward the hard one so --max-connections can be reached, with
/// room for the listener, upstream sockets and the log.
fn raise_open_files_limit(max_connections: usize) {
    let wanted = max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            max_connections,
            open_files_limit = got,
            "the open-files limit is below what --max-connections needs; past it, accepting waits"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not raise the open-files limit"),
    }
}

fn open_store(config: &Config, service: StatusService) -> Result<StatusService, StartError> {
    let settings = store::Settings {
        dir: config.data_dir.clone(),
        sync: config.sync,
        keep_decisions: config.keep_decisions,
        keep_rollups: config.keep_rollups,
        keep_prompts: config.prompt_retention,
    };
    let started = std::time::Instant::now();
    let (store, restored) = store::Store::open(&settings, config.buffer_size)?;
    tracing::info!(
        dir = %config.data_dir.display(),
        sync = ?config.sync,
        decisions = restored.per_tier.iter().sum::<u64>(),
        seq = restored.seq,
        ms = started.elapsed().as_millis() as u64,
        "store opened"
    );
    Ok(service.with_store(store, restored))
}

fn upstreams(config: &Config) -> Upstreams {
    Upstreams::new(
        config.specs(),
        upstream::Settings {
            max_body: config.max_upstream_body,
            max_inflight: config.max_inflight(),
            retries: config.retries,
            breaker: BreakerSettings {
                failures: config.circuit_failures,
                open_for: config.circuit_cooldown,
            },
            ..upstream::Settings::with_timeout(config.upstream_timeout)
        },
    )
}

fn options(config: &Config) -> Options {
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
        admin_key: config.admin_key.clone(),
        council: config.council.clone(),
        moderator: config.moderator,
        assessor: config.assessor,
        assessor_timeout: config.assessor_timeout,
        max_exports: config.max_exports,
        write_timeout: config.write_timeout,
        keep_prompts: config.keep_prompts,
        shadow: crate::shadow::Settings {
            rate: config.shadow_rate,
            judge: config.judge,
            max_inflight: config.shadow_max_inflight,
        },
    }
}

fn log_upstreams(upstreams: &Upstreams) {
    for tier in shared::Tier::ALL {
        if !upstreams.configured(tier) {
            tracing::info!(%tier, "tier has no upstream: its queries get 503");
        }
        for spec in upstreams.specs(tier) {
            // Never the key; the URL as given (user info in it is the
            // operator's own choice to log).
            tracing::info!(%tier, upstream = %spec.name, url = %spec.base_url, model = ?spec.model, key = spec.key.is_some(), "tier upstream");
        }
    }
}

fn log_settings(config: &Config, addr: SocketAddr) {
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
        admin_key = config.admin_key.is_some(),
        brownout = ?config.brownout,
        council = ?config.council,
        moderator = %config.moderator,
        assessor = config.assessor.name(),
        "serving"
    );
}
