//! Orchestrator Status server: the status API, the query router that makes
//! the decisions, and the built panel, all behind one axum [`app`].
//!
//! `main.rs` only parses flags, binds, serves and shuts down; everything a
//! test needs is reachable from here without a socket.

pub mod api;
pub mod config;
pub mod error;
pub mod extract;
pub mod panel;
pub mod routing;
pub mod service;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;
use crate::service::StatusService;
use crate::upstream::Upstreams;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The decisions and counters.
    pub service: Arc<StatusService>,
    /// The tiers' upstreams.
    pub upstreams: Arc<Upstreams>,
    /// When the server started.
    pub started: Instant,
}

impl AppState {
    /// State from a service and upstreams, starting the uptime clock now.
    pub fn new(service: StatusService, upstreams: Upstreams) -> Self {
        AppState {
            service: Arc::new(service),
            upstreams: Arc::new(upstreams),
            started: Instant::now(),
        }
    }
}

/// The whole application: `/api` and the panel.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/orchestrator/status", get(api::status))
        .route("/api/orchestrator/decisions", post(api::ingest))
        .route("/api/query", post(api::query))
        .route("/api/health", get(api::health))
        .route("/api/openapi.json", get(api::openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES));
    api.fallback(fallback)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// Unknown `/api` paths are JSON 404s; everything else is the panel.
async fn fallback(method: Method, uri: Uri, headers: axum::http::HeaderMap) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::NotFound(path.to_owned()).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed(method.to_string()).into_response();
    }
    panel::serve(path, &headers)
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}
