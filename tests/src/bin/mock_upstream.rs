//! The upstream of the router benchmarks: an OpenAI-compatible server that
//! answers at once, in a process of its own.
//!
//! `mock_upstream [CHUNKS] [INTERVAL_MS] [DELAY_MS]` prints `listening on
//! http://ADDR` like the real server. A whole answer is a fixed completion
//! with usage, sent DELAY_MS after the request (default 0); a streamed one (`"stream": true`) is CHUNKS content chunks (default 20),
//! INTERVAL_MS apart (default 10), each carrying `"sent"`: the Unix time in
//! µs it was written, then a usage chunk and `[DONE]`.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const ANSWER: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":"mock-1","choices":[{"index":0,"message":{"role":"assistant","content":"Python is a programming language."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}"#;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let chunks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let interval = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(10));
    let delay = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(0));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| async move {
            let streamed = serde_json::from_slice::<Value>(&body)
                .map(|v| v["stream"] == json!(true))
                .unwrap_or(false);
            if streamed {
                stream(chunks, interval)
            } else {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                ([(CONTENT_TYPE, "application/json")], ANSWER).into_response()
            }
        }),
    );
    tests::serve_printing_address(app).await;
}

fn stream(chunks: usize, interval: Duration) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
        let chunk = |delta: Value| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
                   "model": "mock-1", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
        };
        for i in 0..chunks {
            tokio::time::sleep(interval).await;
            let mut c = chunk(json!({"content": format!("w{i} ")}));
            c["sent"] = json!(tests::unix_micros());
            if tx.send(Ok(event(c))).await.is_err() {
                return;
            }
        }
        let mut last = chunk(json!({}));
        last["choices"] = json!([]);
        last["usage"] =
            json!({"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks});
        let _ = tx.send(Ok(event(last))).await;
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    let body = Body::from_stream(tests::tokio_stream_of(rx));
    ([(CONTENT_TYPE, "text/event-stream")], body).into_response()
}
