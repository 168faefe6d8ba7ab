//! The one error type of the API: every failure becomes a JSON body with the
//! right status, and internal details stay in the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::RoutingDecision;
use shared::Tier;
pub use shared::api::ErrorBody;

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
    /// The upstream failed, timed out or answered something unusable.
    #[error("upstream for tier {tier} failed: {message}")]
    Upstream {
        /// The tier whose upstream failed.
        tier: Tier,
        /// What went wrong, safe to show.
        message: String,
        /// The decision that was recorded.
        decision: Box<RoutingDecision>,
    },
    /// `--max-streams` event streams are open already.
    #[error(
        "{0} event streams are open, the most this server keeps (--max-streams); poll GET /api/orchestrator/status instead"
    )]
    TooManyStreams(usize),
    /// A bug; the details go to the log only.
    #[error("internal server error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CrossSite(_) => StatusCode::FORBIDDEN,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoUpstream { .. } | ApiError::TooManyStreams(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = self.to_string();
        let retry = matches!(self, ApiError::Busy { .. } | ApiError::TooManyStreams(_));
        let decision = match self {
            ApiError::NoUpstream { decision, .. }
            | ApiError::Upstream { decision, .. }
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
            | ApiError::MethodNotAllowed(_)
            | ApiError::Unauthorized
            | ApiError::UnsupportedMediaType(_)
            | ApiError::CrossSite(_)
            | ApiError::TooManyStreams(_) => None,
        };
        let mut response = (status, Json(ErrorBody { error, decision })).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if retry {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
