//! Privacy and access, black-box: redaction, the ingestion token, CORS,
//! security headers, and slow or idle connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::{Behavior, Client, FakeUpstream, Server};

const SECRET: &str = "Design a distributed vault for my secret launch codes, prove it is safe, then implement it in Rust";

#[tokio::test]
async fn redaction_hides_query_text_everywhere_and_routing_still_works() {
    let up = FakeUpstream::start(Behavior::Ok).await;
    let log = std::env::temp_dir().join(format!("orch-redact-{}.log", std::process::id()));
    let server = Server::start_with(
        &[
            "--upstream",
            &format!("powerful={}", up.base_url),
            "--log-queries",
        ],
        &[("ORCH_REDACT_QUERIES", "true")],
        Some(&log),
    );
    let c = Client::new(&server.base);
    let (code, r) = c.post("/api/query", &json!({"query": SECRET})).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["decision"]["tier"], "Q4", "routing still sees the text");
    assert_eq!(
        up.last_body()["messages"][0]["content"],
        SECRET,
        "the model still gets it"
    );
    let (code, d) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": "another secret", "tier": "Q2", "score": 1, "decisionTimeMs": 1}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, e) = c
        .post(
            "/api/query",
            &json!({"query": "secret but no upstream", "mode": "simple"}),
        )
        .await;
    assert_eq!(code, 503);
    // The answer is the model's (the test double echoes the prompt); the
    // server's own fields must not carry the text.
    let r = json!({"decision": r["decision"], "model": r["model"]});
    let status = c.status().await;
    let placeholders: Vec<&str> = status["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["query"].as_str().unwrap())
        .collect();
    assert_eq!(placeholders.len(), 3);
    assert!(
        placeholders.iter().all(|q| q.starts_with("[redacted #")),
        "{placeholders:?}"
    );
    let unique: std::collections::HashSet<&str> = placeholders.iter().copied().collect();
    assert_eq!(unique.len(), 3, "placeholders still tell decisions apart");
    // A graceful stop flushes the log writer's queue.
    assert!(server.terminate(Duration::from_secs(5)).is_some());
    let logged = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    for text in [
        &r.to_string(),
        &d.to_string(),
        &e.to_string(),
        &status.to_string(),
        &logged,
    ] {
        assert!(!text.contains("secret"), "query text leaked: {text}");
    }
    assert!(
        logged.contains("[redacted #"),
        "the log names decisions by placeholder"
    );
}

#[tokio::test]
async fn logs_carry_no_query_text_unless_asked() {
    let log = std::env::temp_dir().join(format!("orch-nolog-{}.log", std::process::id()));
    let server = Server::start_with(&[], &[], Some(&log));
    let c = Client::new(&server.base);
    c.post(
        "/api/query",
        &json!({"query": "my private question", "mode": "simple"}),
    )
    .await;
    c.post(
        "/api/orchestrator/decisions",
        &json!({"query": "another private one", "tier": "Q3", "score": 4, "decisionTimeMs": 1}),
    )
    .await;
    assert!(server.terminate(Duration::from_secs(5)).is_some());
    let logged = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        logged.contains("routed"),
        "debug logs were written: {logged}"
    );
    assert!(!logged.contains("private"), "{logged}");
}

#[tokio::test]
async fn ingestion_token_is_required_when_set() {
    let server = Server::start_with(&[], &[("ORCH_INGEST_TOKEN", "s3cret-token")], None);
    let c = Client::new(&server.base);
    let body = json!({"query": "q", "tier": "Q2", "score": 1, "decisionTimeMs": 1});
    let post = |auth: Option<&'static str>, body: String| {
        let mut req = c
            .http()
            .post(server.url("/api/orchestrator/decisions"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-toke"),
        Some("Basic s3cret-token"),
        Some("s3cret-token"),
    ] {
        let res = post(auth, body.to_string()).await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let e: serde_json::Value = res.json().await.unwrap();
        assert!(e["error"].is_string());
    }
    // A bad body without the token is refused before it is read.
    let res = post(None, "{not json".into()).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(c.status().await["totalDecisions"], 0, "nothing recorded");
    let res = post(Some("Bearer s3cret-token"), body.to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = post(Some("bearer s3cret-token"), body.to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "the scheme is case-insensitive");
    assert_eq!(c.status().await["totalDecisions"], 2);
    // the other endpoints are not gated
    let (code, _) = c
        .post("/api/query", &json!({"query": "hi", "mode": "simple"}))
        .await;
    assert_eq!(code, 503);
}

/// The `Access-Control-Allow-Origin` a status GET from `origin` gets.
async fn granted_origin(http: &reqwest::Client, server: &Server, origin: &str) -> Option<String> {
    let res = http
        .get(server.url("/api/orchestrator/status"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    res.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_only_for_the_named_origin() {
    let http = reqwest::Client::new();
    let server = Server::start(&[]);
    assert_eq!(
        granted_origin(&http, &server, "https://evil.example").await,
        None
    );
    assert_eq!(
        granted_origin(&http, &server, "https://ops.example.com").await,
        None
    );
    drop(server);

    let server = Server::start(&["--cors-origin", "https://ops.example.com"]);
    assert_eq!(
        granted_origin(&http, &server, "https://ops.example.com")
            .await
            .as_deref(),
        Some("https://ops.example.com")
    );
    assert_eq!(
        granted_origin(&http, &server, "https://evil.example").await,
        None
    );
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            server.url("/api/orchestrator/decisions"),
        )
        .header("origin", "https://ops.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    // A page on the granted origin may read what the router decided.
    let routed = http
        .post(server.url("/api/query"))
        .header("origin", "https://ops.example.com")
        .header("content-type", "application/json")
        .body(r#"{"query": "What is Python?"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        routed.status(),
        503,
        "no upstream; the decision is recorded"
    );
    let exposed = routed.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "etag",
        "x-router-tier",
        "x-router-score",
        "x-router-complexity",
        "x-router-decision-id",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
}

/// Every header docs/reliability.md promises: nosniff on every response
/// (pages, assets, API answers, errors, the fast path, 304s), and on the
/// panel's pages a strict CSP, `X-Frame-Options: DENY` and
/// `Referrer-Policy: no-referrer`; API answers are never cached unchecked.
#[tokio::test]
async fn security_headers_on_every_response() {
    let server = Server::start(&[]);
    let http = reqwest::Client::new();
    let index = Client::new(&server.base).text("/").await;
    let asset = index
        .split('"')
        .find(|s| s.starts_with("/panel-") && s.ends_with(".js"))
        .expect("index.html names the panel's script")
        .to_owned();
    let etag = http
        .get(server.url("/api/orchestrator/status"))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .clone();
    let mut responses = Vec::new();
    for path in [
        "/",
        "/some/route",
        asset.as_str(),
        "/missing-0123456789abcdef.js",
        "/api/orchestrator/status",
        "/api/orchestrator/status?limit=0",
        "/api/nope",
        "/api/health",
        "/api/openapi.json",
    ] {
        responses.push((
            path.to_owned(),
            http.get(server.url(path)).send().await.unwrap(),
        ));
    }
    let not_modified = http
        .get(server.url("/api/orchestrator/status"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    responses.push(("304".into(), not_modified));
    let posted = http
        .post(server.url("/api/orchestrator/decisions"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 415);
    responses.push(("415".into(), posted));
    for (what, res) in &responses {
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{what}");
    }
    for (what, res) in &responses[..2] {
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "'wasm-unsafe-eval'",
            "object-src 'none'",
            "connect-src 'self'",
            "base-uri 'self'",
        ] {
            assert!(csp.contains(part), "{what}: {part} missing from {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
        assert_eq!(h["cache-control"], "no-cache", "{what}");
    }
    assert_eq!(
        responses[4].1.headers()["cache-control"],
        "no-cache",
        "the status"
    );
    assert_eq!(
        responses[2].1.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
}

/// Hundreds of connections that never finish their request head do not
/// starve the status endpoint, and are closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_do_not_starve_the_status() {
    let server = Server::start(&["--header-read-timeout", "2"]);
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        if i % 2 == 0 {
            // slowloris: half a request head
            s.write_all(b"GET /api/orchestrator/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
        } // else: connected and silent
        slow.push(s);
    }
    let c = Client::new(&server.base);
    for _ in 0..20 {
        let started = Instant::now();
        let (code, _) = c.get("/api/orchestrator/status").await;
        assert_eq!(code, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered while 300 sockets hang"
        );
    }
    // After the header timeout the server has closed them all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut closed = 0;
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        // a 408 or a plain close: either way the read ends
        match s.read(&mut buf) {
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, 300, "every stalled connection was closed");
}

/// With `--read-key`, the prompts a key-guarded front door took are
/// readable only with a read key, an API key or a session: every read of
/// decisions, status, stream, history, calibration, health details and
/// `/metrics`; health stays open with liveness alone.
#[tokio::test]
async fn read_keys_guard_every_read_of_decisions() {
    let up = FakeUpstream::start(Behavior::Ok).await;
    let server = Server::start(&[
        "--upstream",
        &format!("powerful={}", up.base_url),
        "--api-key",
        "ak-front-door",
        "--read-key",
        "rk-reader",
    ]);
    let c = Client::new(&server.base);
    let http = c.http();
    let (code, _) = c
        .post_with(
            "/api/query",
            json!({"query": SECRET}).to_string(),
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer ak-front-door"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    let reads = [
        "/api/orchestrator/status",
        "/api/orchestrator/status?limit=100",
        "/api/orchestrator/stream",
        "/api/orchestrator/decisions",
        "/api/orchestrator/decisions?format=ndjson&q=vault",
        "/api/orchestrator/decisions?format=csv",
        "/api/orchestrator/history",
        "/api/orchestrator/calibrate",
        "/metrics",
    ];
    for path in reads {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("vault"), "{path}: {text}");
        let r = http
            .get(server.url(path))
            .header("authorization", "Bearer rk-wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong key");
    }
    // Health: liveness only, details with a key.
    let (code, h) = c.get("/api/health").await;
    assert_eq!((code, h), (200, json!({"status": "ok"})));
    let h: serde_json::Value = http
        .get(server.url("/api/health"))
        .header("authorization", "Bearer rk-reader")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(h["upstreams"].is_array(), "{h}");
    // A read key or an API key reads.
    for key in ["rk-reader", "ak-front-door"] {
        for path in reads.iter().filter(|p| !p.ends_with("stream")) {
            let r = http
                .get(server.url(path))
                .header("authorization", format!("Bearer {key}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} with {key}");
        }
    }
    // A session, as the panel opens one: a wrong key is refused; the
    // cookie reads the status and the stream; signing out ends it.
    let (code, _) = c.post("/api/session", &json!({"key": "nope"})).await;
    assert_eq!(code, 401);
    let r = http
        .post(server.url("/api/session"))
        .json(&json!({"key": "rk-reader"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_session = |path: &str| {
        http.get(server.url(path))
            .header("cookie", session.as_str())
            .send()
    };
    let r = with_session("/api/orchestrator/status").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("vault"));
    let r = with_session("/api/orchestrator/stream").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    drop(r);
    // A script opens one with the key as a bearer token, no body.
    let r = http
        .post(server.url("/api/session"))
        .header("authorization", "Bearer rk-reader")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().contains_key("set-cookie"));
    // Another site's page cannot open a session.
    let r = http
        .post(server.url("/api/session"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .json(&json!({"key": "rk-reader"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .delete(server.url("/api/session"))
        .header("cookie", session.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = with_session("/api/orchestrator/status").await.unwrap();
    assert_eq!(r.status(), 401, "signed out");
}

/// Without `--read-key`, reads stay open and no session is needed.
#[tokio::test]
async fn without_read_keys_reads_are_open() {
    let server = Server::start(&["--in-memory"]);
    let c = Client::new(&server.base);
    assert_eq!(c.get("/api/orchestrator/status").await.0, 200);
    assert!(c.get("/api/health").await.1["upstreams"].is_array());
    let (code, body) = c.post("/api/session", &json!({"key": "x"})).await;
    assert_eq!(code, 404, "{body}");
}
