//! `GET /api/orchestrator/status` and `/stream`: the status (served from the
//! shared snapshot, with ETag) and the live event stream, and their query
//! parameters.

use super::*;

/// The query parameters of the status endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameter; parsing is by hand for precise errors
pub(super) struct StatusParams {
    /// How many recent decisions to list: 1..=buffer size (default 10). The
    /// document served states this server's buffer size as the maximum.
    #[param(minimum = 1, maximum = 100)]
    pub(super) limit: Option<u32>,
    /// Also list, in `decisionsSince` (newest first), every buffered
    /// decision whose `seq` is greater than this; `resync` says whether some
    /// were already dropped. For clients that poll instead of streaming.
    #[param(minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    pub(super) since: Option<u64>,
}

/// The query parameters of the stream endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameter; parsing is by hand for precise errors
pub(super) struct StreamParams {
    /// For a fresh connection: replay the buffered decisions whose `seq` is
    /// greater than this, or send `resync` when some are gone.
    /// `Last-Event-ID` wins over it.
    #[param(minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    pub(super) since: Option<u64>,
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

pub(super) const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(super) const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

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
pub(super) fn parse_seq(name: &str, value: &str) -> Result<u64, ApiError> {
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
pub(super) fn parse_event_id(raw: &[u8]) -> Result<Option<u64>, ApiError> {
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
