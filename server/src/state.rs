//! What every handler shares ([`AppState`]) and the settings of access,
//! privacy and capacity ([`Options`]).

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderValue;

use crate::keys::{self, Keys};
use crate::places::Places;
use crate::service::StatusService;
use crate::stream::Hub;
use crate::upstream::Upstreams;
use crate::{assessor, readers, routing, stream};

/// `X-Content-Type-Options: nosniff`, on every response.
pub const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// What every handler shares: one pointer, so that the layers and
/// handlers a request passes through clone it for the price of one count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    /// The decisions and counters.
    pub service: Arc<StatusService>,
    /// The tiers' upstreams.
    pub upstreams: Arc<Upstreams>,
    /// Access and privacy settings.
    pub options: Arc<Options>,
    /// When the server started.
    pub started: Instant,
    /// One place per connection that may be open; the accept loop takes one
    /// before accepting, and a connection gives it back when it ends.
    pub connections: Arc<Places>,
    /// The open event streams and what they are sent.
    pub streams: Arc<Hub>,
    /// One place per decision-log export being sent (`--max-exports`).
    pub exports: Arc<Places>,
    /// Who may read, and their sessions (`--read-key`).
    pub readers: Arc<readers::Readers>,
    /// The virtual keys.
    pub keys: Arc<Keys>,
    /// The admin key and the Keys page's sessions.
    pub admins: Arc<readers::Readers>,
    /// Shadow judging and the live quality counts.
    pub shadow: Arc<crate::shadow::Shadow>,
}

/// Access, privacy and capacity settings of the API.
#[derive(Debug, Clone)]
pub struct Options {
    /// How two-stage routing scores queries (`--scorer`).
    pub scorer: routing::Scorer,
    /// When set, ingestion requires `Authorization: Bearer <token>`.
    pub ingest_token: Option<String>,
    /// The one browser origin granted CORS, if any.
    pub cors_origin: Option<HeaderValue>,
    /// Log each decision's query (already a placeholder when redacting).
    pub log_queries: bool,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most event streams open at once.
    pub max_streams: usize,
    /// When set, `GET /metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// When any, `/v1/*` and `POST /api/query` require one of them as
    /// `Authorization: Bearer <key>`.
    pub api_keys: Vec<String>,
    /// When any, every read needs one of them, an API key or a session.
    pub read_keys: Vec<String>,
    /// Manages virtual keys on `/api/keys`; with it the front doors need a
    /// key.
    pub admin_key: Option<String>,
    /// The council's members.
    pub council: Vec<shared::Tier>,
    /// The tier that writes a council's final answer.
    pub moderator: shared::Tier,
    /// How two-stage routing scores a query.
    pub assessor: assessor::AssessorKind,
    /// How long the model assessor may take.
    pub assessor_timeout: std::time::Duration,
    /// Most decision-log exports sent at once.
    pub max_exports: usize,
    /// How long a write to a client may wait for it to read before the
    /// connection is closed.
    pub write_timeout: std::time::Duration,
    /// Shadow judging (`--shadow-rate`, `--judge`, `--shadow-max-inflight`).
    pub shadow: crate::shadow::Settings,
    /// Keep each two-stage query's whole prompt in the store.
    pub keep_prompts: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scorer: routing::Scorer::default(),
            ingest_token: None,
            cors_origin: None,
            log_queries: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams: stream::DEFAULT_MAX_STREAMS,
            metrics_token: None,
            api_keys: Vec::new(),
            read_keys: Vec::new(),
            admin_key: None,
            council: shared::Tier::ALL.to_vec(),
            moderator: shared::Tier::Q4,
            assessor: assessor::AssessorKind::Heuristic,
            assessor_timeout: std::time::Duration::from_secs(2),
            max_exports: DEFAULT_MAX_EXPORTS,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shadow: crate::shadow::Settings::default(),
            keep_prompts: false,
        }
    }
}

/// Exports sent at once unless `--max-exports` says otherwise.
pub const DEFAULT_MAX_EXPORTS: usize = 8;

/// How long a client may leave a write unread unless `--write-timeout`
/// says otherwise.
pub const DEFAULT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections open at once unless `--max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl AppState {
    /// State from a service and upstreams with default options, starting the
    /// uptime clock now.
    pub fn new(service: StatusService, upstreams: Upstreams) -> Self {
        Self::with_options(service, upstreams, Options::default())
    }

    /// State with explicit access and privacy options, and virtual keys
    /// kept in memory (see [`Self::with_keys`]).
    pub fn with_options(service: StatusService, upstreams: Upstreams, options: Options) -> Self {
        let keys = Keys::new(None, keys::Policy::default()).expect("in memory, nothing to read");
        Self::with_keys(service, upstreams, options, keys)
    }

    /// State with explicit options and these virtual keys.
    pub fn with_keys(
        service: StatusService,
        upstreams: Upstreams,
        options: Options,
        keys: Arc<Keys>,
    ) -> Self {
        let connections = Arc::new(Places::new(options.max_connections));
        let book = Arc::new(crate::shadow::Book::new(
            options.shadow.rate,
            options.shadow.judge,
            upstreams.telemetry(),
        ));
        let service = Arc::new(
            service
                .with_telemetry(
                    Arc::clone(upstreams.telemetry()),
                    Arc::clone(upstreams.health()),
                )
                .with_quality(Arc::clone(&book)),
        );
        let upstreams = Arc::new(upstreams);
        let shadow = Arc::new(crate::shadow::Shadow::new(
            &options.shadow,
            book,
            Arc::clone(&upstreams),
            service.store().cloned(),
            *service.prices(),
        ));
        let streams = Arc::new(Hub::new(Arc::clone(&service), options.max_streams));
        let exports = Arc::new(Places::new(options.max_exports));
        let readers = Arc::new(readers::Readers::new(&options.read_keys, &options.api_keys));
        let admins = Arc::new(readers::Readers::admins(options.admin_key.as_deref()));
        AppState(Arc::new(Shared {
            service,
            upstreams,
            options: Arc::new(options),
            started: Instant::now(),
            connections,
            streams,
            exports,
            readers,
            keys,
            admins,
            shadow,
        }))
    }
}
