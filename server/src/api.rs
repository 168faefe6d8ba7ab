//! The HTTP handlers of `/api` (the OpenAPI document is [`crate::openapi`]).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use headers::{ETag, HeaderMapExt as _, IfNoneMatch};
use serde::{Deserialize, Serialize};
use shared::api::{MAX_TOKENS, Mode, Usage};
use shared::insight::{Calibration, CurvePoint, validate_signals, validate_usage};
use shared::metrics::CircuitState;
use shared::{DEFAULT_RECENT, DecisionError, OrchestratorStatus, RoutingDecision, Signal, Tier};

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::routing::{self, QueryRequest, QueryResponse};
use crate::state::AppState;

/// `POST /api/orchestrator/decisions` body: a decision made by a router that
/// lives elsewhere.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestRequest {
    /// The query that was routed. Its first 100 characters (cut at a
    /// grapheme boundary) are kept and must hold a visible character.
    #[schema(example = "What is Python?", min_length = 1)]
    pub query: String,
    /// The tier it was routed to, by either of its names.
    pub tier: TierName,
    /// Complexity score, finite, 0..=15.
    #[schema(example = 4.2, minimum = 0.0, maximum = 15.0)]
    pub score: f64,
    /// Time the router spent deciding, in ms; finite, 0..=3600000.
    #[schema(example = 12.5, minimum = 0.0, maximum = 3_600_000.0)]
    pub decision_time_ms: f64,
    /// The router's mode, when it has one of ours (`simple`, `two-stage`);
    /// absent or null leaves the decision without a mode.
    #[serde(default)]
    #[schema(nullable)]
    pub mode: Option<routing::Mode>,
    /// Why the router gave this score: at most 16 signals, each a name of
    /// 1 to 32 characters and the points (finite) it contributed.
    #[serde(default)]
    #[schema(nullable, max_items = 16)]
    pub signals: Option<Vec<Signal>>,
    /// The tokens the answer took, when the router knows them (each count
    /// 0..=1000000000); priced by `--price` into the status's `cost`.
    #[serde(default)]
    #[schema(nullable)]
    pub usage: Option<Usage>,
}

/// A tier as a router names it: internally (`fast`, `balanced`, `powerful`)
/// or as shown (`Q2`, `Q3`, `Q4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub enum TierName {
    /// Q2.
    #[serde(rename = "fast")]
    Fast,
    /// Q3.
    #[serde(rename = "balanced")]
    Balanced,
    /// Q4.
    #[serde(rename = "powerful")]
    Powerful,
    /// The fast tier.
    Q2,
    /// The balanced tier.
    Q3,
    /// The powerful tier.
    Q4,
}

impl From<TierName> for Tier {
    fn from(name: TierName) -> Tier {
        match name {
            TierName::Fast | TierName::Q2 => Tier::Q2,
            TierName::Balanced | TierName::Q3 => Tier::Q3,
            TierName::Powerful | TierName::Q4 => Tier::Q4,
        }
    }
}

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

/// The query parameters of the status endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameter; parsing is by hand for precise errors
struct StatusParams {
    /// How many recent decisions to list: 1..=buffer size (default 10). The
    /// document served states this server's buffer size as the maximum.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Also list, in `decisionsSince` (newest first), every buffered
    /// decision whose `seq` is greater than this; `resync` says whether some
    /// were already dropped. For clients that poll instead of streaming.
    #[param(minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    since: Option<u64>,
}

/// The query parameters of the stream endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameter; parsing is by hand for precise errors
struct StreamParams {
    /// For a fresh connection: replay the buffered decisions whose `seq` is
    /// greater than this, or send `resync` when some are gone.
    /// `Last-Event-ID` wins over it.
    #[param(minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    since: Option<u64>,
}

/// Live status of the router.
#[utoipa::path(
    get,
    path = "/api/orchestrator/status",
    tag = "status",
    params(StatusParams),
    responses(
        (status = 200, description = "The status, newest decisions first", body = OrchestratorStatus,
         headers(("ETag" = String, description = "Weak tag of the data version")),
         example = json!({
            "tierUtilization": [
                {"tier": "Q2", "utilizationPercent": 50.0, "activeRequests": 1, "totalProcessed": 153},
                {"tier": "Q3", "utilizationPercent": 35.0, "activeRequests": 0, "totalProcessed": 97},
                {"tier": "Q4", "utilizationPercent": 15.0, "activeRequests": 0, "totalProcessed": 31}
            ],
            "recentDecisions": [
                {"id": "19a6b2c3d4e-1f2a-281", "query": "What is Python?", "tier": "Q3",
                 "complexity": "SIMPLE", "timestamp": "2025-11-08T12:00:01.250Z", "score": 0.2,
                 "seq": 281, "mode": "two-stage", "decisionTimeMs": 0.012, "tierName": "balanced"}
            ],
            "complexityDistribution": {"simple": 55, "moderate": 30, "complex": 15},
            "totalDecisions": 281,
            "avgDecisionTimeMs": 0.04,
            "timestamp": "2025-11-08T12:00:02.000Z",
            "instance": {"id": "19a6b2c3d4e-1f2a", "startedAt": "2025-11-08T11:00:00.000Z", "version": "0.1.0"},
            "windows": {"utilization": 20, "distribution": 100, "average": 100},
            "bufferCapacity": 100
         })),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, description = "Bad `limit`", body = ErrorBody,
         example = json!({"error": "limit: must be an integer in 1..=100, got \"0\""})),
    )
)]
pub async fn status(State(state): State<AppState>, req: Request) -> Response {
    // The whole request, not the `HeaderMap`/`RawQuery` extractors: those copy
    // the headers and query on every poll of the hottest endpoint.
    status_response(&state, req.uri().query(), req.headers())
}

/// The status, pushed: Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/orchestrator/stream",
    tag = "status",
    params(
        StreamParams,
        ("Last-Event-ID" = Option<String>, Header,
         description = "The `id` of the last event received (digits: a `seq`): replay the buffered decisions after it, or send `resync` when some are gone or it is beyond the newest. Empty means none. Browsers send it when they reconnect."),
    ),
    responses(
        (status = 200, description = "An endless event stream. First `retry`, then a `status` event carrying the same JSON as `GET /api/orchestrator/status` (its `id` is the newest `seq` it covers); with `Last-Event-ID` or `since`, the buffered decisions after it as `decision` events (`id` = the decision's `seq`, data = the decision) or one `resync` event (data `{after, oldest, newest}`) when some are gone. Then, on every change and at most once per 50 ms, the new `decision` events, an `update` event (no `id`, data = the decision) for each buffered decision that changed since it was sent (its `usage` became known), then the new `status`. A comment line every 15 s when nothing else was sent. It ends when the server stops.",
         content_type = "text/event-stream", body = StreamEvent,
         headers(("Cache-Control" = String, description = "no-cache"),
                 ("X-Accel-Buffering" = String, description = "no: proxies must not buffer it"))),
        (status = 400, description = "Bad `since` or `Last-Event-ID`", body = ErrorBody,
         example = json!({"error": "since: must be an integer in 0..=9007199254740992, got \"x\""})),
        (status = 503, description = "`--max-streams` streams are open: poll `GET /api/orchestrator/status` instead", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn stream(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let params = StatusQuery::parse(req.uri().query(), state.service.capacity())?;
    // What a browser sends on reconnecting wins over what the page asked
    // for when it first connected.
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| parse_event_id(v.as_bytes()))
        .transpose()?
        .flatten();
    state.streams.subscribe(last_event_id.or(params.since))
}

/// One event of the stream, as an SSE parser reads it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// `status`, `decision`, `update` or `resync`.
    #[schema(pattern = "^(status|decision|update|resync)$")]
    pub event: String,
    /// JSON: an `OrchestratorStatus` (status), a `RoutingDecision`
    /// (decision, update), or `{"after", "oldest", "newest"}` (resync).
    pub data: String,
    /// The newest decision `seq` the event covers (status, decision).
    #[schema(pattern = "^[0-9]+$")]
    pub id: Option<String>,
    /// Milliseconds a client should wait before reconnecting.
    pub retry: Option<u64>,
}

/// The status endpoint's whole answer (shared by the handler and the
/// server's fast path, so both answer byte for byte the same).
pub fn status_response(state: &AppState, query: Option<&str>, headers: &HeaderMap) -> Response {
    let params = match StatusQuery::parse(query, state.service.capacity()) {
        Ok(params) => params,
        Err(err) => return err.into_response(),
    };
    let snapshot = state.service.snapshot_since(params.limit, params.since);
    let etag = snapshot.etag.clone();
    let mut response = if if_none_match(headers, &snapshot.tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(axum::body::Body::from(snapshot.body.clone()));
        r.headers_mut().insert(header::CONTENT_TYPE, JSON);
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, NO_CACHE);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, crate::state::NOSNIFF);
    response
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// The query parameters of the status and stream endpoints, read from the
/// raw query string; other parameters are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusQuery {
    /// How many recent decisions to list (default 10).
    pub limit: usize,
    /// List the decisions after this `seq` too.
    pub since: Option<u64>,
}

impl StatusQuery {
    /// Absent parameters take their defaults; a `limit` outside
    /// 1..=capacity, a `since` that is not a whole number, or either given
    /// twice, is a 400.
    pub fn parse(raw: Option<&str>, capacity: usize) -> Result<Self, ApiError> {
        let mut params = StatusQuery {
            limit: DEFAULT_RECENT,
            since: None,
        };
        let Some(raw) = raw else {
            return Ok(params);
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::BadParameter(format!("query string: {e}")))?;
        let (mut limit, mut since) = (None, None);
        for (key, value) in &pairs {
            let slot = match key.as_str() {
                "limit" => &mut limit,
                "since" => &mut since,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(ApiError::BadParameter(format!(
                    "{key}: given more than once"
                )));
            }
        }
        if let Some(value) = limit {
            params.limit = match value.parse::<usize>() {
                Ok(n) if (1..=capacity).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadParameter(format!(
                        "limit: must be an integer in 1..={capacity}, got {value:?}"
                    )));
                }
            };
        }
        if let Some(value) = since {
            params.since = Some(parse_seq("since", value)?);
        }
        Ok(params)
    }
}

/// A decision `seq`: a whole number 0..=2^53 (what a JSON client can hold).
fn parse_seq(name: &str, value: &str) -> Result<u64, ApiError> {
    match value.parse::<u64>() {
        Ok(n) if n <= MAX_SEQ => Ok(n),
        _ => Err(ApiError::BadParameter(format!(
            "{name}: must be an integer in 0..={MAX_SEQ}, got {value:?}"
        ))),
    }
}

/// `Last-Event-ID`: digits, or empty (which, as in the SSE standard, means
/// none). Ids beyond any `seq` this instance made are read as "beyond the
/// newest", which the stream answers with `resync`.
fn parse_event_id(raw: &[u8]) -> Result<Option<u64>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if !raw.iter().all(u8::is_ascii_digit) {
        return Err(ApiError::BadParameter(format!(
            "Last-Event-ID: must be the id of an event of this stream (digits), got {:?}",
            String::from_utf8_lossy(raw)
        )));
    }
    // All digits: only overflow can fail, and that is beyond every seq.
    Ok(Some(
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX),
    ))
}

/// The largest `seq` accepted as a resume point: 2^53, the largest integer
/// every JSON client reads exactly.
pub const MAX_SEQ: u64 = 1 << 53;

/// True when `If-None-Match` names `etag` (weak comparison) or is `*`; a
/// malformed header counts as absent.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &ETag) -> bool {
    headers
        .typed_get::<IfNoneMatch>()
        .is_some_and(|condition| !condition.precondition_passes(etag))
}

/// Routes a query to a tier, records the decision, and has the tier's
/// upstream answer it.
#[utoipa::path(
    post,
    path = "/api/query",
    tag = "router",
    request_body(content = QueryRequest, example = json!({"query": "What is Python?", "mode": "two-stage", "max_tokens": 100})),
    responses(
        (status = 200, description = "Routed and answered (`simple`, `two-stage`: a `QueryResponse`), or asked of several tiers (`council`, `benchmark`: a `GroupAnswer`, 200 whenever the group ran: each member's answer or error, and a council's synthesis, moderator and analysis; `X-Router-Group-Id` names the group). Every answer to a routed query (this one, and the 429, 4XX, 502 and 503 that carry a recorded decision) names the decision in its `X-Router-*` headers", body = QueryAnswer,
         headers(
            ("X-Router-Tier" = String, description = "The tier: Q2, Q3 or Q4"),
            ("X-Router-Score" = String, description = "The complexity score, as in the body (e.g. 7.25)"),
            ("X-Router-Complexity" = String, description = "SIMPLE, MODERATE or COMPLEX"),
            ("X-Router-Decision-Id" = String, description = "The decision's id"),
         ),
         example = json!({"answer": "Python is a programming language.", "model": "qwen-7b", "decision": {
            "id": "19a6b2c3d4e-7", "query": "What is Python?", "tier": "Q3", "complexity": "SIMPLE",
            "timestamp": "2025-11-08T12:00:01.250Z", "score": 0.2, "seq": 7, "mode": "two-stage",
            "decisionTimeMs": 0.012, "tierName": "balanced", "signals": [{"name": "length", "weight": 0.2}],
            "usage": {"promptTokens": 12, "completionTokens": 9}}})),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 403, description = "A cross-site browser request; nothing recorded", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json; nothing recorded", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid; nothing recorded", body = ErrorBody,
         example = json!({"error": "mode: unknown variant `fancy`, expected `simple` or `two-stage`"})),
        (status = 429, description = "The tier has as many upstream calls in flight as allowed, or the upstream answered 429 (after the retries; its Retry-After is kept); the decision stays recorded", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = "4XX", description = "The upstream refused the request with this status (a wrong model, a prompt over its context window...): its message is in `error` and `upstream`; the decision stays recorded", body = ErrorBody,
         example = json!({"error": "upstream gpu1 of tier Q3 (balanced) answered HTTP 400: This model's maximum context length is 8192 tokens", "upstream": {"name": "gpu1", "kind": "http_4xx", "status": 400, "message": "answered HTTP 400: This model's maximum context length is 8192 tokens", "attempts": 1}})),
        (status = 502, description = "The upstream failed (5xx, timeout, connect error, refused our key), answered garbage, an empty answer or a reply over the size limit, after any retries; `upstream` says which and what it said; the decision stays recorded", body = ErrorBody),
        (status = 503, description = "The tier has no upstream, or every upstream of it has its circuit open (with Retry-After until the first probe); the decision stays recorded", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds until an open circuit lets a probe through (circuit open only)")),
         example = json!({"error": "no upstream configured for tier Q2 (fast)", "decision": {
            "id": "19a6b2c3d4e-8", "query": "hi", "tier": "Q2", "complexity": "SIMPLE",
            "timestamp": "2025-11-08T12:00:01.250Z", "score": 0.0, "seq": 8, "mode": "simple",
            "decisionTimeMs": 0.0, "tierName": "fast"}})),
    )
)]
pub async fn query(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    shared::validate_query(&req.query).map_err(invalid)?;
    if let Some(n) = req.max_tokens.filter(|n| !(1..=MAX_TOKENS).contains(n)) {
        return Err(ApiError::Invalid(format!(
            "max_tokens: must be an integer in 1..={MAX_TOKENS}, got {n}"
        )));
    }
    if req.mode.is_group() {
        let outcome = crate::modes::run_group(
            &state,
            crate::modes::GroupQuery {
                mode: req.mode,
                query: &req.query,
                body: crate::modes::query_body(&req.query, req.max_tokens),
                max_tokens: req.max_tokens,
            },
        )
        .await?;
        let headers = crate::router_headers::group(&outcome.answer);
        let mut response = Json(outcome.answer).into_response();
        response.headers_mut().extend(headers);
        return Ok(response);
    }
    let route = match req.mode {
        Mode::TwoStage => crate::modes::assessed_route(&state, &req.query).await,
        mode => routing::route(
            &req.query,
            mode,
            state.service.q4_threshold(),
            state.options.scorer,
        ),
    };
    let (decision, pending) = state
        .service
        .record_pending(
            &req.query,
            route.tier,
            route.score,
            route.decision_time_ms,
            Some(req.mode),
            route.signals,
            None,
        )
        .map_err(invalid)?;
    // The commit runs while the upstream works; the answer waits for it.
    let committing = pending.commit();
    log_decision(&state, &decision, "routed");
    // Every answer to a routed query says what was decided, failed or not.
    let headers = crate::router_headers::single(&decision);
    let mut response = generate(&state, &req, decision).await.into_response();
    response.headers_mut().extend(headers);
    if let Some(committing) = committing {
        // A failing store keeps the decision in memory only (counted in the
        // status's `persistence`); the query is still answered.
        let _ = committing.await;
    }
    Ok(response)
}

/// Stage 3 of a routed query: the tier's upstream writes the answer.
async fn generate(
    state: &AppState,
    req: &QueryRequest,
    mut decision: RoutingDecision,
) -> Result<Json<QueryResponse>, ApiError> {
    let body = crate::modes::query_body(&req.query, req.max_tokens);
    let (answer, _) = crate::modes::call_tier(state, &decision, body).await?;
    crate::modes::add_usage(state, &mut decision, answer.usage);
    if answer.is_empty() {
        // Nothing to show: as OpenAI's answer it is valid (the front door
        // relays it), as an answer to a query it is not.
        return Err(ApiError::Upstream {
            tier: decision.tier,
            failure: Box::new(crate::upstream::Failure {
                upstream: answer.upstream,
                outcome: shared::metrics::Outcome::BadReply,
                status: None,
                message: format!(
                    "answered with no content and no tool calls (finish_reason: {})",
                    answer.finish_reason.as_deref().unwrap_or("none")
                ),
                retry_after: None,
                attempts: answer.attempts,
            }),
            decision: Box::new(decision),
        });
    }
    Ok(Json(QueryResponse {
        answer: answer.content.or(answer.refusal),
        model: answer.model,
        decision,
        finish_reason: answer.finish_reason,
        tool_calls: answer.tool_calls,
        upstream: Some(answer.upstream),
        usage: answer.usage,
        attempts: Some(answer.attempts),
    }))
}

/// `GET /api/orchestrator/calibrate` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalibrateResponse {
    /// The Q4 share asked for (`q4_share`), 0..=1; absent when not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.2)]
    pub asked_q4_share: Option<f64>,
    /// The threshold whose Q4 share is closest to the one asked for (of
    /// equally close ones the highest); absent when not asked or when no
    /// decision is buffered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Where the decisions come from: `buffer` (the buffered decisions).
    #[schema(example = "buffer")]
    pub source: &'static str,
    /// How many decisions were looked at.
    pub decisions: usize,
    /// How many of them a threshold could move (two-stage, or reported on
    /// Q3/Q4 without a mode); simple-mode and Q2 decisions stay where they
    /// went.
    pub score_routed: usize,
    /// The threshold this server routes by (`--q4-threshold`).
    #[schema(example = 7.0)]
    pub current_threshold: f64,
    /// The Q4 share at the current threshold, 0..=1.
    pub current_q4_share: f64,
    /// The Q4 share at every threshold 0, 0.5, ... 15 (31 points), with
    /// the quality gap each is expected to recover on the labelled data.
    pub curve: Vec<CurvePoint>,
}

/// The parameters of the calibrate endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameter; parsing is by hand for precise errors
struct CalibrateParams {
    /// The share of decisions (0..=1) to send to Q4.
    #[param(minimum = 0.0, maximum = 1.0, example = 0.2)]
    q4_share: Option<f64>,
}

/// Which Q4 threshold would have sent a given share of the buffered
/// decisions to Q4, and the share every threshold would give.
#[utoipa::path(
    get,
    path = "/api/orchestrator/calibrate",
    tag = "status",
    params(CalibrateParams),
    responses(
        (status = 200, description = "The calibration and the curve", body = CalibrateResponse,
         example = json!({"askedQ4Share": 0.2, "calibration": {"threshold": 6.25, "q4Share": 0.2, "q4Decisions": 20},
            "source": "buffer", "decisions": 100, "scoreRouted": 80, "currentThreshold": 7.0, "currentQ4Share": 0.15,
            "curve": [{"threshold": 0.0, "q4Share": 0.8}, {"threshold": 0.5, "q4Share": 0.78}]})),
        (status = 400, description = "Bad `q4_share`", body = ErrorBody,
         example = json!({"error": "q4_share: must be a number in 0..=1, got \"2\""})),
    )
)]
pub async fn calibrate(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let asked = parse_share(req.uri().query())?;
    let population = state.service.population();
    let current = state.service.q4_threshold();
    let mut body = CalibrateResponse {
        asked_q4_share: asked,
        calibration: asked.and_then(|q| population.calibrate(q)),
        source: "buffer",
        decisions: population.len(),
        score_routed: population.score_routed(),
        current_threshold: current,
        current_q4_share: population.what_if(current, &[None; 3]).q4_share(),
        curve: population.curve(),
    };
    if let Some(eq) = &state.service.routing().expected_quality {
        for point in &mut body.curve {
            point.expected_gap_recovered = eq
                .curve
                .iter()
                .find(|q| q.threshold == point.threshold)
                .map(|q| q.gap_recovered);
        }
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `q4_share`: absent, or a number in 0..=1 given once.
fn parse_share(raw: Option<&str>) -> Result<Option<f64>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadParameter(format!("query string: {e}")))?;
    let mut values = pairs
        .iter()
        .filter(|(k, _)| k == "q4_share")
        .map(|(_, v)| v);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadParameter(
            "q4_share: given more than once".into(),
        ));
    }
    match value.trim().parse::<f64>() {
        Ok(q) if q.is_finite() && (0.0..=1.0).contains(&q) => Ok(Some(q + 0.0)),
        _ => Err(ApiError::BadParameter(format!(
            "q4_share: must be a number in 0..=1, got {value:?}"
        ))),
    }
}

/// Most decisions one ingestion request may carry.
pub const MAX_BATCH: usize = 1_000;

pub use crate::extract::MAX_BATCH_BODY_BYTES;

/// Records a decision made by a router that lives elsewhere, or a batch.
#[utoipa::path(
    post,
    path = "/api/orchestrator/decisions",
    tag = "status",
    request_body(content = IngestBody, description = "One decision, or an array of 1 to 1000 recorded all or nothing",
        example = json!({"query": "Prove Fermat's little theorem", "tier": "powerful", "score": 9.5, "decisionTimeMs": 14.2})),
    responses(
        (status = 201, description = "Recorded, and committed to the store (unless --in-memory): the decision, or for an array the decisions in the order given", body = IngestAnswer),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 403, description = "A cross-site browser request; nothing recorded", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB (one decision) or 4 MiB (an array)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json; nothing recorded", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid (for an array: which item, `[3].score`), or the array is empty or holds more than 1000; nothing recorded", body = ErrorBody,
         example = json!({"error": "score: must be a finite number in 0..=15, got 16"})),
        (status = 503, description = "The store cannot be written: nothing acknowledged (retry after Retry-After)", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    crate::extract::require_json_content_type(&headers)?;
    let body =
        body.map_err(|rejection| crate::extract::body_rejected(&rejection, MAX_BATCH_BODY_BYTES))?;
    // One decision keeps the API's 64 KiB limit; only a batch may weigh more.
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array && body.len() > crate::extract::MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: crate::extract::MAX_BODY_BYTES,
        });
    }
    let (items, is_batch) = crate::extract::decode_json_batch::<IngestRequest>(&body)?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::Invalid(format!(
            "body: an array of 1 to {MAX_BATCH} decisions, got {}",
            items.len()
        )));
    }
    // Every item is checked before any is recorded: all or nothing.
    let mut drafts = Vec::with_capacity(items.len());
    for (i, req) in items.into_iter().enumerate() {
        let at = |e: String| match is_batch {
            true => ApiError::Invalid(format!("[{i}].{e}")),
            false => ApiError::Invalid(e),
        };
        if let Some(signals) = &req.signals {
            validate_signals(signals).map_err(|e| at(e.to_string()))?;
        }
        if let Some(usage) = &req.usage {
            validate_usage(usage).map_err(|e| at(e.to_string()))?;
        }
        let draft = state
            .service
            .draft(
                &req.query,
                req.tier.into(),
                req.score,
                req.decision_time_ms,
                req.mode,
                req.signals,
                req.usage,
            )
            .map_err(|e| at(e.to_string()))?;
        drafts.push(draft);
    }
    if let Some(error) = state.service.store_failing() {
        return Err(ApiError::StoreFailing(error));
    }
    // Published only once committed: a refused batch is counted nowhere.
    let decisions = state
        .service
        .record_durable(drafts)
        .await
        .map_err(|e| ApiError::StoreFailing(e.0))?;
    for d in &decisions {
        log_decision(&state, d, "ingested");
    }
    Ok(match is_batch {
        true => (StatusCode::CREATED, Json(decisions)).into_response(),
        false => (StatusCode::CREATED, Json(&decisions[0])).into_response(),
    })
}

/// `POST /api/query` answer: one tier's, or a group's.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum QueryAnswer {
    /// `simple` and `two-stage`.
    One(QueryResponse),
    /// `council` and `benchmark`.
    Group(shared::group::GroupAnswer),
}

/// `POST /api/orchestrator/decisions` body: one decision or a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum IngestBody {
    /// One decision.
    One(IngestRequest),
    /// 1 to 1000 decisions, recorded all or nothing.
    Many(Vec<IngestRequest>),
}

/// `POST /api/orchestrator/decisions` answer: as the body was.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum IngestAnswer {
    /// The decision recorded (boxed: a decision is large beside a `Vec`).
    One(Box<RoutingDecision>),
    /// The decisions recorded, in the order given.
    Many(Vec<RoutingDecision>),
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

fn health_details(state: &AppState) -> Health {
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

/// `POST /api/session` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// A `--read-key` (or an `--api-key`).
    #[schema(example = "a-read-key")]
    pub key: String,
}

/// Opens a session for a panel: a read key in (the JSON body, or as
/// `Authorization: Bearer KEY` with no body), an `HttpOnly`,
/// `SameSite=Strict` cookie out, good for reads (status, stream, history,
/// decisions) for 12 hours or until the server restarts.
#[utoipa::path(
    post,
    path = "/api/session",
    tag = "status",
    request_body(content = SessionRequest, description = "The key; or send it as `Authorization: Bearer KEY` with no body"),
    responses(
        (status = 204, description = "A session: its cookie is in `Set-Cookie`",
         headers(("Set-Cookie" = String, description = "`orch_session=...; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200`"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Not a read key or API key", body = ErrorBody),
        (status = 403, description = "Another site's page (`Sec-Fetch-Site: cross-site`) may not open a session", body = ErrorBody),
        (status = 404, description = "No `--read-key` is set: reads are open, no session is needed", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "The body is not `{\"key\": string}`", body = ErrorBody),
    )
)]
pub async fn open_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.readers.required() {
        return Err(ApiError::NotFound(
            "no session is needed: this server has no --read-key".into(),
        ));
    }
    let body =
        body.map_err(|r| crate::extract::body_rejected(&r, crate::extract::MAX_BODY_BYTES))?;
    // The key as a bearer token (a script's way) needs no body; else the
    // JSON body `{"key": ...}` (the panel's).
    let key = match crate::readers::bearer(&headers) {
        Some(key) if body.iter().all(u8::is_ascii_whitespace) => key.to_owned(),
        _ => {
            crate::extract::require_json_content_type(&headers)?;
            crate::extract::decode_json::<SessionRequest>(&body)?.key
        }
    };
    if !state.readers.is_key(&key) {
        return Err(ApiError::Unauthorized);
    }
    let token = state
        .readers
        .open_session()
        .map_err(|e| ApiError::Internal(format!("no random bytes for a session: {e}")))?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, crate::readers::set_cookie(Some(&token)))],
    )
        .into_response())
}

/// Ends the request's session (signs the panel out).
#[utoipa::path(
    delete,
    path = "/api/session",
    tag = "status",
    responses((status = 204, description = "The session, if any, is over; its cookie is cleared"))
)]
pub async fn close_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.readers.close_session(&headers);
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, crate::readers::set_cookie(None))],
    )
        .into_response()
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses(
        (status = 200, description = "Every series in the Prometheus text format 0.0.4: decisions (`orch_decisions_total` by tier, complexity, mode), decision time, upstream calls by outcome, upstream latency (classic histogram), tokens, retries, in-flight calls, circuit states, build info and `process_*`. Labels are bounded: tier, upstream (from the configuration), outcome, mode, complexity, direction, to.",
         content_type = "text/plain"),
        (status = 401, description = "`--metrics-token` is set and the bearer token is missing or wrong", body = ErrorBody),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.upstreams.telemetry().encode();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::telemetry::METRICS_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// Query text reaches the log only when asked for (and is the placeholder
/// when redacting, since the service never stores the text then).
fn log_decision(state: &AppState, d: &RoutingDecision, what: &'static str) {
    if state.options.log_queries {
        tracing::info!(id = %d.id, tier = %d.tier, score = d.score, query = %d.query, "{what}");
    } else {
        tracing::debug!(id = %d.id, tier = %d.tier, score = d.score, "{what}");
    }
}

fn invalid(err: DecisionError) -> ApiError {
    ApiError::Invalid(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_limit(raw: Option<&str>, capacity: usize) -> Result<usize, ApiError> {
        StatusQuery::parse(raw, capacity).map(|q| q.limit)
    }

    #[test]
    fn since_parsing() {
        let since = |raw| StatusQuery::parse(Some(raw), 100).map(|q| q.since);
        assert_eq!(since("").unwrap(), None);
        assert_eq!(since("since=0").unwrap(), Some(0));
        assert_eq!(since("since=42&limit=5").unwrap(), Some(42));
        assert_eq!(since("since=9007199254740992").unwrap(), Some(MAX_SEQ));
        for bad in [
            "since=-1",
            "since=",
            "since=1.5",
            "since=x",
            "since=1&since=2",
            "since=9007199254740993",
        ] {
            let err = since(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.to_string().starts_with("since: "), "{err}");
        }
    }

    #[test]
    fn limit_parsing() {
        assert_eq!(parse_limit(None, 100).unwrap(), 10);
        assert_eq!(parse_limit(Some(""), 100).unwrap(), 10);
        assert_eq!(parse_limit(Some("other=1"), 100).unwrap(), 10);
        assert_eq!(parse_limit(Some("limit=1"), 100).unwrap(), 1);
        assert_eq!(parse_limit(Some("limit=100"), 100).unwrap(), 100);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "limit=",
            "limit=1.5",
            "limit=%FF",
            "limit=1&limit=2",
            "limit=99999999999999999999999",
        ] {
            let err = parse_limit(Some(bad), 100).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn etag_matching_is_weak_and_handles_lists() {
        let tag: ETag = "W/\"a-1\"".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a-1\""));
        assert!(if_none_match(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"x\", W/\"a-1\""),
        );
        assert!(if_none_match(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"a-2\""));
        assert!(!if_none_match(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, &tag));
        // Garbage is no condition at all.
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("a-1, \""));
        assert!(!if_none_match(&h, &tag));
    }
}
