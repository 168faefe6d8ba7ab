//! The access log: one line per request with its method, path, status and
//! duration, at `info` under the target `access` (turn it off with
//! `RUST_LOG=info,access=off`). Never the query string, headers or bodies:
//! they may carry users' text or tokens.
//!
//! The router's requests are logged by tower-http's trace layer; the status
//! fast path, which skips the router, logs the same line through the same two
//! functions.

use std::time::Duration;

use axum::http::{Method, Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

/// The tracing target of access lines.
pub const TARGET: &str = "access";

/// Paths longer than this are cut in the log (a URI may be kilobytes long).
const MAX_LOGGED_PATH: usize = 200;

/// The span an access line is logged in: the request's method and path.
pub fn span(method: &Method, path: &str) -> Span {
    let path = match path.char_indices().nth(MAX_LOGGED_PATH) {
        Some((cut, _)) => &path[..cut],
        None => path,
    };
    tracing::info_span!(target: TARGET, "request", method = %method, path = %path)
}

/// Logs the answer's status and how long it took (in the request's span).
pub fn answered(status: u16, latency: Duration) {
    tracing::info!(target: TARGET, status, micros = latency.as_micros() as u64, "answered");
}

/// The trace layer that logs every request the router handles.
pub fn layer()
-> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, AccessSpan, (), AccessLine, (), (), ()> {
    TraceLayer::new_for_http()
        .make_span_with(AccessSpan)
        .on_request(())
        .on_response(AccessLine)
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Makes the span of [`span`] for each request.
#[derive(Debug, Clone, Copy)]
pub struct AccessSpan;

impl<B> MakeSpan<B> for AccessSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        span(request.method(), request.uri().path())
    }
}

/// Logs the line of [`answered`] once the response head is ready.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine;

impl<B> OnResponse<B> for AccessLine {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        answered(response.status().as_u16(), latency);
    }
}
