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

mod calibrate;
mod health;
mod ingest;
mod keys;
mod query;
mod session;
mod status;
pub use calibrate::*;
pub use health::*;
pub use ingest::*;
pub use keys::*;
pub use query::*;
pub use session::*;
pub use status::*;

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

fn invalid(err: DecisionError) -> ApiError {
    ApiError::Invalid(err.to_string())
}

#[cfg(test)]
mod tests;
