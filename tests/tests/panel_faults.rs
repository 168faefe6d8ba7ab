//! The panel in headless Chromium while its API misbehaves: slower than the
//! poll timeout, malformed JSON, HTTP 500, flapping up and down, gone from
//! page load. A fault-injecting proxy stands between the browser and the
//! real server and refuses the event stream (as a server past `--max-streams`
//! does, so the panel polls). The page counts its own status requests in
//! flight: at the proxy, a request the browser aborted stays counted until
//! its dropped connection is noticed, which races the next poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tests::Server;
use tests::browser::Browser;

const OK: u8 = 0;
const SLOW: u8 = 1;
const MALFORMED: u8 = 2;
const FAIL: u8 = 3;
/// Every API answer breaks off mid-body: to the browser, a network error.
const GONE: u8 = 4;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    mode: Arc<AtomicU8>,
}

/// Wraps the page's `fetch` so that it counts the status requests it has
/// out (from the call until the answer's head or the abort), keeps the most
/// it ever had at once, and logs each start and end (ms, count out before).
const COUNT_IN_FLIGHT: &str = r#"
if (window.__statusMax === undefined) {
  const fetch = window.fetch.bind(window);
  window.__statusOut = 0;
  window.__statusMax = 0;
  window.__statusCalls = 0;
  window.__statusLog = [];
  window.fetch = (input, init) => {
    const url = typeof input === 'string' ? input : input.url;
    if (!url.includes('/api/orchestrator/status')) return fetch(input, init);
    window.__statusCalls += 1;
    window.__statusLog.push(['start', Math.round(performance.now()), window.__statusOut]);
    window.__statusOut += 1;
    window.__statusMax = Math.max(window.__statusMax, window.__statusOut);
    const done = (r) => {
      window.__statusOut -= 1;
      window.__statusLog.push(['done', Math.round(performance.now()), String(r.status || r)]);
    };
    const call = fetch(input, init);
    call.then(done, done);
    return call;
  };
}
return true;
"#;

async fn forward(p: &Proxy, path: &str, headers: &HeaderMap) -> Response {
    let mut req = p.http.get(format!("{}{path}", p.upstream));
    if let Some(tag) = headers.get(header::IF_NONE_MATCH) {
        req = req.header(header::IF_NONE_MATCH, tag.clone());
    }
    let res = req.send().await.unwrap();
    let mut out = Response::builder().status(res.status().as_u16());
    for name in [header::CONTENT_TYPE, header::ETAG, header::CACHE_CONTROL] {
        if let Some(v) = res.headers().get(name.as_str()) {
            out = out.header(name, HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
    }
    out.body(Body::from(res.bytes().await.unwrap())).unwrap()
}

async fn handle(State(p): State<Proxy>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let mode = p.mode.load(Ordering::SeqCst);
    if mode == GONE && path.starts_with("/api/") {
        let broken = futures_util::stream::once(async {
            Err::<bytes::Bytes, _>(std::io::Error::other("connection lost"))
        });
        return Response::new(Body::from_stream(broken));
    }
    if path.starts_with("/api/orchestrator/stream") {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\": \"streams refused by the proxy\"}",
        )
            .into_response();
    }
    if !path.starts_with("/api/orchestrator/status") {
        return forward(&p, &path, req.headers()).await;
    }
    match mode {
        SLOW => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            forward(&p, &path, req.headers()).await
        }
        MALFORMED => (
            [(header::CONTENT_TYPE, "application/json")],
            "{\"tierUtilization\": [ oops",
        )
            .into_response(),
        FAIL => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\": \"injected failure\"}",
        )
            .into_response(),
        _ => forward(&p, &path, req.headers()).await,
    }
}

async fn badge(b: &Browser) -> String {
    b.text_of("data-source").await.unwrap_or_default()
}

async fn wait_badge(b: &Browser, within: Duration, pred: impl Fn(&str) -> bool) -> String {
    let found = b.wait_for(within, || async { pred(&badge(b).await) }).await;
    let now = badge(b).await;
    assert!(found.is_some(), "badge still {now:?} after {within:?}");
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_survives_a_misbehaving_api() {
    let server = Server::start(&[]);
    let proxy = Proxy {
        upstream: server.base.clone(),
        http: reqwest::Client::new(),
        mode: Arc::new(AtomicU8::new(OK)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(handle).with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let set = |m: u8| proxy.mode.store(m, Ordering::SeqCst);
    let is_live = |t: &str| t == "Live";
    let is_stale = |t: &str| t.starts_with("Stale since ");
    let is_mock = |t: &str| t.starts_with("Mock data: ");

    // Gone from page load: mock data at once, saying why, never ticking.
    set(GONE);
    let b = Browser::start().await;
    b.goto(&format!("http://{addr}/")).await;
    let text = wait_badge(&b, Duration::from_secs(5), is_mock).await;
    assert!(
        text.starts_with("Mock data: backend unreachable ("),
        "{text}"
    );
    let snapshot = "return [...document.querySelectorAll('[data-testid=panel] .data')].map(e => e.textContent).join();";
    let first = b.eval(snapshot, json!([])).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        b.eval(snapshot, json!([])).await,
        first,
        "mock numbers do not tick"
    );
    // Mock decisions follow the router: two-stage never reaches Q2.
    let rows = b
        .eval(
            "return [...document.querySelectorAll('[data-testid=decision]')].map(r =>              [r.children[1].textContent, r.querySelector('[data-testid=decision-mode]').textContent]);",
            json!([]),
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 10);
    for row in rows {
        assert!(row[1] != "two-stage" || row[0] != "Q2", "{row}");
    }

    b.eval(COUNT_IN_FLIGHT, json!([])).await;
    set(OK);
    let text = wait_badge(&b, Duration::from_secs(5), is_live).await;
    assert_eq!(text, "Live");
    assert_eq!(
        b.text_of("transport").await.as_deref(),
        Some("polling"),
        "the stream is refused"
    );

    // Slower than the 2 s poll timeout: aborted, labelled stale, no pile-up.
    set(SLOW);
    let text = wait_badge(&b, Duration::from_secs(4), is_stale).await;
    assert!(text.ends_with("(timeout (no answer within 2 s))"), "{text}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // still responsive while the API hangs
    let started = Instant::now();
    assert_eq!(b.count("tier-Q2").await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the page is not frozen"
    );
    set(OK);
    wait_badge(&b, Duration::from_secs(4), is_live).await;

    // Malformed JSON.
    set(MALFORMED);
    let text = wait_badge(&b, Duration::from_secs(3), is_stale).await;
    assert!(text.contains("(bad JSON ("), "{text}");
    set(OK);
    wait_badge(&b, Duration::from_secs(3), is_live).await;

    // HTTP 500.
    set(FAIL);
    let text = wait_badge(&b, Duration::from_secs(3), is_stale).await;
    assert!(text.contains("(HTTP 500 (injected failure))"), "{text}");
    set(OK);
    wait_badge(&b, Duration::from_secs(3), is_live).await;

    // Flapping: every observation is either live or labelled stale.
    let started = Instant::now();
    let (mut saw_live, mut saw_stale) = (false, false);
    while started.elapsed() < Duration::from_secs(6) {
        let phase = (started.elapsed().as_millis() / 700) % 2;
        set(if phase == 0 { FAIL } else { OK });
        let text = badge(&b).await;
        assert!(
            is_live(&text) || is_stale(&text),
            "unlabelled state {text:?}"
        );
        saw_live |= is_live(&text);
        saw_stale |= is_stale(&text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_live && saw_stale, "the flapping showed both states");
    set(OK);
    wait_badge(&b, Duration::from_secs(3), is_live).await;
    let rows = b
        .eval(
            "return document.querySelectorAll('[data-testid^=tier-]').length;",
            json!([]),
        )
        .await;
    assert_eq!(rows, 3);

    // 30 s without live data: stale gives way to mock data.
    set(FAIL);
    let went_stale = Instant::now();
    wait_badge(&b, Duration::from_secs(3), is_stale).await;
    let text = wait_badge(&b, Duration::from_secs(40), is_mock).await;
    let after = went_stale.elapsed();
    assert!(
        after >= Duration::from_secs(29),
        "not before 30 s: {after:?}"
    );
    assert!(text.starts_with("Mock data: HTTP 500"), "{text}");
    set(OK);
    wait_badge(&b, Duration::from_secs(3), is_live).await;

    let (calls, most) = (
        b.eval("return window.__statusCalls;", json!([])).await,
        b.eval("return window.__statusMax;", json!([])).await,
    );
    assert!(calls.as_u64().unwrap() > 20, "the page polled: {calls}");
    let log = b.eval("return window.__statusLog;", json!([])).await;
    assert_eq!(
        most, 1,
        "never more than one status request in flight; the page's log: {log}"
    );
    b.close().await;
}
