//! The floor of the front door benchmark: a bare axum handler that passes
//! each chat completion to one upstream with reqwest and hands back its
//! bytes: no parsing, routing, recording or middleware. What it adds over
//! the upstream is the cost of the extra HTTP hop on this machine.
//!
//! `bare_proxy UPSTREAM_URL` (the upstream's `/v1/chat/completions`) prints
//! `listening on http://ADDR` like the real server.

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;

#[tokio::main]
async fn main() {
    let upstream = std::env::args()
        .nth(1)
        .expect("usage: bare_proxy UPSTREAM_URL");
    let upstream = reqwest::Url::parse(&upstream).expect("a valid upstream URL");
    let client = reqwest::Client::new();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| {
            let (client, upstream) = (client.clone(), upstream.clone());
            async move {
                let sent = client
                    .post(upstream)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await;
                let answer = match sent {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(bytes) => ([(CONTENT_TYPE, "application/json")], bytes).into_response(),
                    Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            }
        }),
    );
    tests::serve_printing_address(app).await;
}
