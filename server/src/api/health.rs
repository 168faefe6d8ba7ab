//! `GET /api/health`: liveness for everyone, the details for readers.

use super::*;

/// `GET /api/health` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok` when the server answers.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Ring buffer capacity.
    pub buffer_size: usize,
    /// Utilization window.
    pub window: usize,
    /// Which tiers have an upstream (Q2, Q3, Q4), and their calls under way.
    pub upstreams: [TierUpstream; 3],
    /// Open connections against `--max-connections`.
    pub connections: ConnectionUse,
    /// Open event streams against `--max-streams`.
    pub streams: StreamUse,
    /// Only with `--redis`: the Redis state (`cluster.redis`, at the top
    /// for checks that look at one field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<shared::cluster::RedisState>,
    /// Only with `--redis`: the link to Redis and the backlog waiting for
    /// it (the same as the status's `cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<shared::cluster::ClusterInfo>,
}

/// Event streams open now and the cap.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamUse {
    /// Open now.
    pub open: usize,
    /// `--max-streams`: past it, new streams get a 503.
    pub max: usize,
}

/// Whether a tier has an upstream, and how many calls it has under way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierUpstream {
    /// The tier.
    pub tier: Tier,
    /// True when an upstream is configured.
    pub configured: bool,
    /// `/api/query` upstream calls under way now.
    pub in_flight: usize,
    /// `--max-inflight` of the tier: past it, queries get a 429.
    pub max_in_flight: usize,
    /// True when some upstream of the tier takes calls (its circuit is not
    /// open); false when none is configured.
    pub healthy: bool,
    /// Each upstream: its circuit, calls, outcomes and last error (never
    /// its URL's credentials or its key).
    pub upstreams: Vec<shared::metrics::UpstreamMetrics>,
}

/// Connections open now and the cap.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionUse {
    /// Open now (0 when the app runs without the server's accept loop).
    pub open: usize,
    /// `--max-connections`: past it, new connections wait.
    pub max: usize,
}

/// `GET /api/health` answer: the details, or liveness alone.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum HealthAnswer {
    /// To a reader (or to everyone without `--read-key`).
    Details(Box<Health>),
    /// With `--read-key`, to a request without a key or session.
    Liveness(Liveness),
}

/// Liveness alone: `{"status": "ok"}` (nothing else, so the document
/// tells it from the details).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    /// Always `ok` when the server answers.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness and configuration summary.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "status",
    responses((status = 200, description = "The server is up: its details, or with `--read-key` and no key or session liveness alone (`{\"status\": \"ok\"}`)", body = HealthAnswer))
)]
pub async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.readers.allows(&headers) {
        return Json(Liveness { status: "ok" }).into_response();
    }
    Json(health_details(&state)).into_response()
}

pub(super) fn health_details(state: &AppState) -> Health {
    let cluster = state
        .service
        .cluster()
        .map(|c| c.info(&state.service.instance().id));
    Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        buffer_size: state.service.capacity(),
        window: state.service.window(),
        upstreams: {
            let mut metrics = state.upstreams.health().tier_metrics().into_iter();
            Tier::ALL.map(|tier| {
                let calls = state.upstreams.in_flight(tier);
                let upstreams = metrics.next().map(|m| m.upstreams).unwrap_or_default();
                TierUpstream {
                    tier,
                    configured: state.upstreams.configured(tier),
                    in_flight: calls.in_use(),
                    max_in_flight: calls.max(),
                    healthy: upstreams.iter().any(|u| u.circuit != CircuitState::Open),
                    upstreams,
                }
            })
        },
        connections: ConnectionUse {
            open: state.connections.in_use(),
            max: state.connections.max(),
        },
        streams: StreamUse {
            open: state.streams.places().in_use(),
            max: state.streams.places().max(),
        },
        redis: cluster.as_ref().map(|c| c.redis),
        cluster,
    }
}
