//! The routes of the whole application, and the middleware that guards
//! them: tokens, keys, readers, other sites' browsers, panics.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;
use crate::state::{AppState, NOSNIFF};
use crate::{access, api, extract, history, keys, openai, openapi, panel, readers};

/// The whole application: `/api` and the panel.
pub fn app(state: AppState) -> Router {
    // Everything that changes state refuses other sites' browsers first,
    // then asks for its token or key (one middleware each: a layer costs a
    // request a clone of everything below it).
    let ingest = Router::new()
        .route("/api/orchestrator/decisions", post(api::ingest))
        .route_layer(DefaultBodyLimit::max(api::MAX_BATCH_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard_ingest));
    // The router's front doors: the panel's query endpoint and the OpenAI
    // API, behind `--api-key` when one is set.
    let keyed = Router::new()
        .route("/api/query", post(api::query))
        .route(
            "/v1/chat/completions",
            post(openai::chat_completions).layer(DefaultBodyLimit::max(api::MAX_BATCH_BODY_BYTES)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard_front_door,
        ));
    let writes = Router::new().merge(ingest).merge(keyed);
    let models = Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{model}", get(openai::model))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    // Virtual keys: the admin's, other sites' browsers refused.
    let admin = Router::new()
        .route("/api/keys", get(api::list_keys).post(api::create_key))
        .route(
            "/api/keys/{id}",
            get(api::get_key)
                .patch(api::patch_key)
                .delete(api::revoke_key),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_cross_site,
        ));
    // Reads of what was decided: behind `--read-key` when one is set.
    let reads = Router::new()
        .route("/api/orchestrator/status", get(api::status))
        .route("/api/orchestrator/stream", get(api::stream))
        .route("/api/orchestrator/calibrate", get(api::calibrate))
        .route("/api/orchestrator/history", get(history::history))
        .route("/api/orchestrator/replay", get(crate::replay::replay))
        .route("/api/orchestrator/decisions", get(history::decisions))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.readers),
            require_reader,
        ));
    let session = Router::new()
        .route(
            "/api/session",
            post(api::open_session).delete(api::close_session),
        )
        .route(
            "/api/admin/session",
            post(api::open_admin_session).delete(api::close_admin_session),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_cross_site,
        ));
    let api = Router::new()
        .merge(reads)
        .merge(writes)
        .merge(models)
        .merge(admin)
        .merge(session)
        .route("/api/health", get(api::health))
        .route("/api/openapi.json", get(openapi::openapi))
        .merge(
            Router::new()
                .route("/metrics", get(api::metrics))
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    require_metrics_reader,
                )),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES));
    let router = api
        .fallback(fallback)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(openai::ErrorObjects)
        .layer(access::layer())
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            NOSNIFF,
        ));
    // No CORS grant at all unless an origin is named.
    let router = match state.options.cors_origin.clone() {
        Some(origin) => router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list([origin]))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    header::IF_NONE_MATCH,
                ])
                // A page on the granted origin may read what was decided.
                .expose_headers(
                    std::iter::once(header::ETAG)
                        .chain(shared::wire::header::ALL.map(HeaderName::from_static))
                        .collect::<Vec<_>>(),
                )
                .max_age(std::time::Duration::from_secs(600)),
        ),
        None => router,
    };
    router.with_state(state)
}

/// Ingestion: other sites' browsers refused, then with `--ingest-token`
/// only `Authorization: Bearer <token>` gets through, compared in constant
/// time; before the body is even read.
async fn guard_ingest(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(refused) = cross_site_refused(&state, &req) {
        return refused;
    }
    match &state.options.ingest_token {
        Some(token) if !bearer_matches(req.headers(), token) => {
            ApiError::Unauthorized.into_response()
        }
        _ => next.run(req).await,
    }
}

/// The front doors: other sites' browsers refused, then the key: a virtual
/// key (its entry goes with the request, as [`keys::Caller`]), an
/// `--api-key` or the `--admin-key`.
async fn guard_front_door(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(refused) = cross_site_refused(&state, &req) {
        return refused;
    }
    match front_door_caller(&state, &req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refused) => *refused,
    }
}

/// With `--read-key`, only a read key, an API key or a session reads.
async fn require_reader(
    State(readers): State<Arc<readers::Readers>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if readers.allows(req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// `/metrics`: with `--metrics-token` that token, with `--read-key` any
/// reader; with both, either; with neither, everyone.
async fn require_metrics_reader(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let token = state.options.metrics_token.as_deref();
    let allowed = match (token, state.readers.required()) {
        (None, false) => true,
        (Some(t), false) => bearer_matches(req.headers(), t),
        (None, true) => state.readers.allows(req.headers()),
        (Some(t), true) => bearer_matches(req.headers(), t) || state.readers.allows(req.headers()),
    };
    if allowed {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// `/v1/models`: the front doors' keys.
async fn require_api_key(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match front_door_caller(&state, &req) {
        Ok(_) => next.run(req).await,
        Err(refused) => *refused,
    }
}

/// Who calls a front door, or its 401. A usable virtual key is always
/// let in; without one, a key is needed when `--api-key` or `--admin-key`
/// is set or any virtual key exists (made by `server keys`): one of those
/// static keys (each compared in constant time). `/v1` answers OpenAI's
/// 401.
fn front_door_caller(
    state: &AppState,
    req: &axum::extract::Request,
) -> Result<keys::Caller, Box<Response>> {
    let headers = req.headers();
    let token = readers::bearer(headers);
    if let Some(entry) = token
        .filter(|t| t.starts_with(shared::keys::SECRET_PREFIX))
        .and_then(|t| state.keys.find(t))
    {
        return Ok(keys::Caller(Some(entry)));
    }
    let options = &state.options;
    let required =
        !options.api_keys.is_empty() || options.admin_key.is_some() || !state.keys.is_empty();
    let known = || {
        options
            .api_keys
            .iter()
            .chain(&options.admin_key)
            .fold(false, |hit, k| hit | bearer_matches(headers, k))
    };
    if !required || known() {
        return Ok(keys::Caller(None));
    }
    Err(Box::new(if req.uri().path().starts_with("/v1/") {
        openai::OpenAiError::from(ApiError::Unauthorized).into_response()
    } else {
        ApiError::Unauthorized.into_response()
    }))
}

/// `/api/keys`: only the `--admin-key` (compared in constant time) or an
/// admin session (the Keys page's); 404 without an admin key, as if there
/// were no such API.
async fn require_admin(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if state.options.admin_key.is_none() {
        return ApiError::NotFound(req.uri().path().to_owned()).into_response();
    }
    if state.admins.allows(req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// True when `Authorization: Bearer <token>` carries exactly `token`.
fn bearer_matches(headers: &axum::http::HeaderMap, token: &str) -> bool {
    readers::bearer(headers).is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
}

/// A browser marks a request another site's page makes with
/// `Sec-Fetch-Site: cross-site`; such a request may not change state unless
/// it comes from the one origin `--cors-origin` names. Clients that send no
/// such header (curl, other routers) and the panel (same origin) pass.
async fn refuse_cross_site(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match cross_site_refused(&state, &req) {
        None => next.run(req).await,
        Some(refused) => refused,
    }
}

/// The 403 of [`refuse_cross_site`], if `req` earns it.
fn cross_site_refused(state: &AppState, req: &axum::extract::Request) -> Option<Response> {
    let headers = req.headers();
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        let origin = headers.get(header::ORIGIN);
        let granted = matches!(
            (origin, &state.options.cors_origin),
            (Some(o), Some(allowed)) if o == allowed
        );
        if !granted {
            let shown = origin
                .map(|o| format!("{:?}", String::from_utf8_lossy(o.as_bytes())))
                .unwrap_or_else(|| "(none)".into());
            return Some(ApiError::CrossSite(shown).into_response());
        }
    }
    None
}

/// Unknown `/api` paths are JSON 404s; everything else is the panel.
async fn fallback(method: Method, uri: Uri, headers: axum::http::HeaderMap) -> Response {
    let path = uri.path();
    if path == "/v1" || path.starts_with("/v1/") {
        return openai::not_found(path);
    }
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
