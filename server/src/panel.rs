//! Serves the panel built by Trunk (issue 3 embeds it); until it is built, a
//! plain page says how to build it.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Orchestrator Status</title></head><body><h1>Orchestrator Status</h1>\
<p>The panel is not built into this binary. Build it with <code>scripts/run.sh</code> \
(or <code>trunk build --release --offline</code>, then rebuild the server). \
The API is live: <a href=\"/api/orchestrator/status\">/api/orchestrator/status</a>.</p></body></html>";

/// The panel's response for `path`.
pub fn serve(_path: &str, _headers: &HeaderMap) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        NOT_BUILT,
    )
        .into_response()
}
