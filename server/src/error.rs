//! The one error type of the API: every failure becomes a JSON body with the
//! right status, and internal details stay in the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::RoutingDecision;
use shared::Tier;
pub use shared::api::ErrorBody;
use shared::api::UpstreamFailure;

/// Seconds a client told 429 (a busy tier) or 503 (no stream place) should
/// wait before trying again.
pub const RETRY_AFTER_SECS: &str = "1";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all (syntax error, empty, not UTF-8).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The body is JSON but a field is missing, mistyped or out of range.
    #[error("{0}")]
    Invalid(String),
    /// A query-string parameter is wrong.
    #[error("{0}")]
    BadParameter(String),
    /// The body is larger than the API accepts.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No route under `/api` matches.
    #[error("no API endpoint at {0}")]
    NotFound(String),
    /// A thing the request names does not exist (the message says which).
    #[error("{0}")]
    Missing(String),
    /// The path exists but not with this method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// A bearer token was required and missing or wrong.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A state-changing request whose body is not declared as JSON.
    #[error("content-type: must be application/json, got {0}")]
    UnsupportedMediaType(String),
    /// A browser request from another site tried to change state.
    #[error("cross-site requests may not change state (origin {0} is not allowed)")]
    CrossSite(String),
    /// The tier already has as many upstream calls in flight as allowed; the
    /// decision is recorded all the same.
    #[error("tier {} ({}) has {} upstream calls in flight, its limit; retry shortly", .tier, .tier.internal_name(), .limit)]
    Busy {
        /// The tier the query was routed to.
        tier: Tier,
        /// Its in-flight limit.
        limit: usize,
        /// The decision that was recorded.
        decision: Box<RoutingDecision>,
    },
    /// The chosen tier has no upstream; the decision is recorded all the same.
    #[error("no upstream configured for tier {} ({})", .tier, .tier.internal_name())]
    NoUpstream {
        /// The tier the query was routed to.
        tier: Tier,
        /// The decision that was recorded.
        decision: Box<RoutingDecision>,
    },
    /// The upstream failed, timed out, refused or answered something
    /// unusable (after any retries).
    #[error("upstream {} of tier {} ({}) {}", .failure.upstream, .tier, .tier.internal_name(), .failure.message)]
    Upstream {
        /// The tier whose upstream failed.
        tier: Tier,
        /// The last call's failure.
        failure: Box<Failure>,
        /// The decision that was recorded.
        decision: Box<RoutingDecision>,
    },
    /// Every upstream of the tier has its circuit open.
    #[error("{message}")]
    CircuitOpen {
        /// What to tell the client.
        message: String,
        /// Seconds until a probe may go through.
        retry_after_secs: u64,
        /// The decision that was recorded.
        decision: Box<RoutingDecision>,
    },
    /// `--max-streams` event streams are open already.
    #[error(
        "{0} event streams are open, the most this server keeps (--max-streams); poll GET /api/orchestrator/status instead"
    )]
    TooManyStreams(usize),
    /// `--max-exports` exports are being sent already.
    #[error(
        "{0} exports are being sent, the most this server sends at once (--max-exports); retry later"
    )]
    TooManyExports(usize),
    /// The store cannot be written: nothing is acknowledged that is not
    /// durable.
    #[error("the store cannot be written ({0}); nothing was recorded durably, retry later")]
    StoreFailing(String),
    /// History and the decision log need the store.
    #[error("no stored history: this server runs with --in-memory")]
    NoStore,
    /// A bug; the details go to the log only.
    #[error("internal server error")]
    Internal(String),
    /// A virtual key's limit or mode refused the request; nothing was
    /// recorded.
    #[error("{}", .0.message)]
    KeyRefused(Box<KeyRefusal>),
}

/// Which of a virtual key's limits refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Its budget for the period is spent.
    Budget,
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// A mode it may not use.
    Mode,
    /// Its budget cannot be checked (the shared ledger is unreachable and
    /// `--budget-fail closed`).
    Unavailable,
}

/// A virtual key's refusal: what, why, when to retry, and the headers
/// (`x-ratelimit-*`, the budget's) its answer carries.
#[derive(Debug, Clone)]
pub struct KeyRefusal {
    /// The limit.
    pub limit: Limit,
    /// What the client is told.
    pub message: String,
    /// Seconds until it may succeed.
    pub retry_after_secs: u64,
    /// Headers of the answer.
    pub headers: axum::http::HeaderMap,
}

impl KeyRefusal {
    /// A refusal by `limit`, retryable after `retry_after_secs`.
    pub fn new(limit: Limit, message: String, retry_after_secs: u64) -> Self {
        KeyRefusal {
            limit,
            message,
            retry_after_secs,
            headers: axum::http::HeaderMap::new(),
        }
    }

    /// A mode the key may not use.
    pub fn mode(mode: &str) -> Self {
        Self::new(Limit::Mode, format!("this key may not use mode {mode}"), 0)
    }
}

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CrossSite(_) => StatusCode::FORBIDDEN,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::KeyRefused(r) if r.limit == Limit::Mode => StatusCode::FORBIDDEN,
            ApiError::KeyRefused(r) if r.limit == Limit::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::KeyRefused(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoStore => StatusCode::NOT_FOUND,
            ApiError::NoUpstream { .. }
            | ApiError::StoreFailing(_)
            | ApiError::TooManyStreams(_)
            | ApiError::TooManyExports(_)
            | ApiError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream { failure, .. } => upstream_status(failure),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = self.to_string();
        let retry = match &self {
            ApiError::Busy { .. }
            | ApiError::TooManyStreams(_)
            | ApiError::TooManyExports(_)
            | ApiError::StoreFailing(_) => Some(HeaderValue::from_static(RETRY_AFTER_SECS)),
            ApiError::CircuitOpen {
                retry_after_secs, ..
            } => Some(HeaderValue::from(*retry_after_secs)),
            ApiError::KeyRefused(r) if r.limit != Limit::Mode => {
                Some(HeaderValue::from(r.retry_after_secs.max(1)))
            }
            // An upstream's 429 keeps its Retry-After (as whole seconds).
            ApiError::Upstream { failure, .. } if status == StatusCode::TOO_MANY_REQUESTS => Some(
                failure
                    .retry_after
                    .as_ref()
                    .and_then(retry_after_secs)
                    .map_or(HeaderValue::from_static(RETRY_AFTER_SECS), |s| {
                        HeaderValue::from(s.max(1))
                    }),
            ),
            _ => None,
        };
        let upstream = match &self {
            ApiError::Upstream { failure, .. } => Some(UpstreamFailure {
                name: failure.upstream.clone(),
                kind: failure.outcome,
                status: failure.status,
                message: failure.message.clone(),
                attempts: failure.attempts,
            }),
            _ => None,
        };
        let extra = match &self {
            ApiError::KeyRefused(r) => Some(r.headers.clone()),
            _ => None,
        };
        let decision = match self {
            ApiError::NoUpstream { decision, .. }
            | ApiError::Upstream { decision, .. }
            | ApiError::CircuitOpen { decision, .. }
            | ApiError::Busy { decision, .. } => Some(*decision),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                None
            }
            ApiError::MalformedJson(_)
            | ApiError::Invalid(_)
            | ApiError::BadParameter(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::NotFound(_)
            | ApiError::Missing(_)
            | ApiError::MethodNotAllowed(_)
            | ApiError::Unauthorized
            | ApiError::UnsupportedMediaType(_)
            | ApiError::CrossSite(_)
            | ApiError::StoreFailing(_)
            | ApiError::NoStore
            | ApiError::TooManyStreams(_)
            | ApiError::TooManyExports(_)
            | ApiError::KeyRefused(_) => None,
        };

        let body = ErrorBody {
            error,
            decision,
            upstream,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = retry {
            headers.insert(header::RETRY_AFTER, after);
        }
        if let Some(extra) = extra {
            headers.extend(extra);
        }
        response
    }
}

/// The status a client gets for an upstream's failure: its 429 stays a 429,
/// its other 4xx the same 4xx (the request was refused as such: a wrong
/// model, a prompt over the context window), except a refused key (401,
/// 403, 407) or a wrong URL (404, 405), which are this server's
/// configuration, so 502; everything else 502.
fn upstream_status(failure: &Failure) -> StatusCode {
    match failure.status {
        Some(401 | 403 | 404 | 405 | 407) => StatusCode::BAD_GATEWAY,
        Some(code @ 400..=499) => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// A failed call, as the client is told of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The upstream's name.
    pub upstream: String,
    /// How it ended.
    pub outcome: shared::metrics::Outcome,
    /// The HTTP status it answered, if it did.
    pub status: Option<u16>,
    /// What happened, safe to show.
    pub message: String,
    /// A 429's `Retry-After`, as sent (seconds or an HTTP date).
    pub retry_after: Option<HeaderValue>,
    /// Calls made for the query.
    pub attempts: u32,
}

/// Whole seconds of a `Retry-After`: delta-seconds, or an HTTP date in any
/// of the three forms RFC 9110 makes recipients accept (IMF-fixdate,
/// RFC 850, asctime; `httpdate` parses them); a date past is 0.
pub fn retry_after_secs(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    )
}
