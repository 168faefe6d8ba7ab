//! The floor of the status benchmark: a bare axum handler serving a fixed
//! body (the bytes of a real status) at the status path, no middleware.
//!
//! `bare BODY_FILE` prints `listening on http://ADDR` like the real server.

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: bare BODY_FILE");
    let body = Bytes::from(std::fs::read(&path).expect("the body file is readable"));
    let app = Router::new().route(
        "/api/orchestrator/status",
        get(move || {
            let body = body.clone();
            async move { ([(CONTENT_TYPE, "application/json")], body) }
        }),
    );
    tests::serve_printing_address(app).await;
}
