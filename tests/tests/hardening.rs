//! Hardening, black-box against the release binary: each request here once
//! broke the status or wrote where it should not. Every one must now get its
//! named status code with a JSON error, and change nothing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Server, per_tier};

const INGEST: &str = "/api/orchestrator/decisions";

fn decision(query: &str, tier: &str, score: f64, ms: f64) -> Value {
    json!({"query": query, "tier": tier, "score": score, "decisionTimeMs": ms})
}

/// Every number in the status is finite and nothing is null: what every
/// panel needs to decode it.
fn assert_decodable(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::Number(n) => assert!(
            n.as_f64().is_some_and(f64::is_finite),
            "{n} at {at} is not finite"
        ),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_decodable(item, &format!("{at}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                assert_decodable(item, &format!("{at}.{k}"));
            }
        }
        Value::Bool(_) | Value::String(_) => {}
    }
}

async fn total(c: &Client) -> u64 {
    c.status().await["totalDecisions"].as_u64().unwrap()
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error: {body}"))
}

/// The issue's reproduction: two decisions with `decisionTimeMs: 1e308`
/// used to make `avgDecisionTimeMs` null and drop every panel to mock data.
#[tokio::test]
async fn huge_decision_times_never_break_the_status() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    for ms in [
        "1e308",
        "1.7976931348623157e308",
        "3600000.001",
        "-1",
        "1e400",
    ] {
        let body = format!(r#"{{"query": "q", "tier": "Q2", "score": 1, "decisionTimeMs": {ms}}}"#);
        let (code, r) = c.post_raw(INGEST, body).await;
        assert!(
            code == 422 || (code == 400 && ms == "1e400"),
            "{ms}: {code} {r}"
        );
        if code == 422 {
            assert!(error_of(&r).starts_with("decisionTimeMs"), "{r}");
        }
    }
    assert_eq!(total(&c).await, 0, "nothing recorded");

    // The largest accepted times, many of them: the mean stays exact.
    for _ in 0..50 {
        let (code, r) = c
            .post(INGEST, &decision("q", "Q4", 15.0, 3_600_000.0))
            .await;
        assert_eq!(code, 201, "{r}");
    }
    let s = c.status().await;
    assert_decodable(&s, "$");
    assert_eq!(s["avgDecisionTimeMs"], 3_600_000.0);

    // -0 is stored as 0.
    let (code, r) = c
        .post_raw(
            INGEST,
            r#"{"query": "neg zero", "tier": "Q2", "score": -0.0, "decisionTimeMs": -0.0}"#,
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let raw = c.text("/api/orchestrator/status?limit=100").await;
    assert!(!has_negative_zero(&raw), "negative zero on the wire: {raw}");
}

/// Whether a JSON text holds the number -0 (`-0`, `-0.0`, `-0e5`...): a
/// `-` where a value starts whose digits are all zero. Text such as a
/// date's `-06` does not count.
fn has_negative_zero(json: &str) -> bool {
    json.match_indices('-').any(|(i, _)| {
        let starts_value = json[..i].trim_end().ends_with([':', ',', '[']);
        let number: String = json[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
            .collect();
        let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
        starts_value && !mantissa.is_empty() && mantissa.chars().all(|c| matches!(c, '0' | '.'))
    })
}

#[test]
fn negative_zero_is_found_as_a_number_only() {
    for z in [
        r#"{"a":-0}"#,
        r#"{"a": -0.0}"#,
        "[1,-0e3]",
        r#"{"a":[-0.00]}"#,
    ] {
        assert!(has_negative_zero(z), "{z}");
    }
    for ok in [
        r#"{"t":"2026-12-06T16:21:29.504Z"}"#,
        r#"{"id":"fb3-0eaf-51"}"#,
        r#"{"a":-0.5,"b":0.0,"c":-10}"#,
    ] {
        assert!(!has_negative_zero(ok), "{ok}");
    }
}

/// A browser posts `text/plain` (and forms) cross-site without a CORS
/// preflight: only `application/json` bodies are read.
#[tokio::test]
async fn only_json_bodies_are_accepted() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let ingest = decision("from a web page", "Q4", 9.0, 1.0).to_string();
    let query = json!({"query": "spend tokens", "mode": "simple"}).to_string();
    for path_body in [(INGEST, &ingest), ("/api/query", &query)] {
        let (path, body) = path_body;
        for ct in [
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonp"),
            None,
        ] {
            let headers: Vec<(&str, &str)> = ct.iter().map(|v| ("content-type", *v)).collect();
            let (code, r) = c.post_with(path, body.clone(), &headers).await;
            assert_eq!(code, 415, "{path} {ct:?}: {r}");
            assert!(error_of(&r).starts_with("content-type"), "{r}");
        }
    }
    assert_eq!(total(&c).await, 0, "nothing recorded");
    let (code, r) = c
        .post_with(
            INGEST,
            ingest,
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
    assert_eq!(code, 201, "{r}");
}

/// `Sec-Fetch-Site: cross-site` writes are refused unless the origin is the
/// one granted; curl-like clients and the same origin pass.
#[tokio::test]
async fn cross_site_writes_are_refused() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let body = decision("cross", "Q3", 4.0, 1.0).to_string();
    let json_ct = ("content-type", "application/json");
    for path in [INGEST, "/api/query"] {
        let (code, r) = c
            .post_with(
                path,
                body.clone(),
                &[
                    json_ct,
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.example"),
                ],
            )
            .await;
        assert_eq!(code, 403, "{path}: {r}");
        assert!(error_of(&r).contains("cross-site"), "{r}");
        // No origin at all changes nothing.
        let (code, _) = c
            .post_with(
                path,
                body.clone(),
                &[json_ct, ("sec-fetch-site", "cross-site")],
            )
            .await;
        assert_eq!(code, 403);
    }
    assert_eq!(total(&c).await, 0);
    let own = server.base.clone();
    for site in [
        vec![json_ct],
        vec![json_ct, ("sec-fetch-site", "same-origin"), ("origin", &own)],
        vec![json_ct, ("sec-fetch-site", "none")],
    ] {
        let (code, r) = c.post_with(INGEST, body.clone(), &site).await;
        assert_eq!(code, 201, "{site:?}: {r}");
    }
    drop(server);

    let granted = "https://ops.example";
    let server = Server::start(&["--cors-origin", granted]);
    let c = Client::new(&server.base);
    let (code, r) = c
        .post_with(
            INGEST,
            body.clone(),
            &[
                json_ct,
                ("sec-fetch-site", "cross-site"),
                ("origin", granted),
            ],
        )
        .await;
    assert_eq!(code, 201, "the granted origin writes: {r}");
    let (code, _) = c
        .post_with(
            INGEST,
            body,
            &[
                json_ct,
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://ops.example.evil"),
            ],
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(total(&c).await, 1);
}

/// The stored text (the first 100 characters) must show something; the cut
/// never splits a grapheme.
#[tokio::test]
async fn blank_and_invisible_queries_are_refused_and_graphemes_kept_whole() {
    let up = FakeUpstream::start(Behavior::Ok).await;
    let server = Server::start(&["--upstream", &format!("fast={}", up.base_url)]);
    let c = Client::new(&server.base);
    let blank = [
        "".to_owned(),
        "   ".to_owned(),
        "\u{200B}".to_owned(),
        "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}".to_owned(),
        "\u{00AD}\u{034F}\u{180E}".to_owned(),
        "\u{3164}\u{FFA0}".to_owned(),
        "\u{E0041}\u{E0042}".to_owned(),
        "\u{202E}\u{2066}\u{2069}".to_owned(),
        format!("{}visible after the cut", " ".repeat(100)),
        format!("{}x", "\u{200B}".repeat(100)),
    ];
    for q in &blank {
        let (code, r) = c.post(INGEST, &decision(q, "Q2", 1.0, 1.0)).await;
        assert_eq!(code, 422, "{q:?}: {r}");
        assert!(error_of(&r).starts_with("query"), "{r}");
        let (code, r) = c
            .post("/api/query", &json!({"query": q, "mode": "simple"}))
            .await;
        assert_eq!(code, 422, "{q:?}: {r}");
    }
    assert_eq!(total(&c).await, 0);
    assert_eq!(up.hits(), 0, "no upstream call for a refused query");

    let family = "👨\u{200D}👩\u{200D}👧\u{200D}👦";
    for (q, kept) in [
        (format!("{}{family}", "a".repeat(99)), "a".repeat(99)),
        (format!("{}e\u{301}z", "b".repeat(99)), "b".repeat(99)),
        (family.repeat(20), family.repeat(14)),
        (
            format!("{}🇫🇷🇩🇪", "c".repeat(97)),
            format!("{}🇫🇷", "c".repeat(97)),
        ),
    ] {
        let (code, r) = c.post(INGEST, &decision(&q, "Q2", 1.0, 1.0)).await;
        assert_eq!(code, 201, "{r}");
        assert_eq!(r["query"], kept.as_str());
    }
}

/// A client that sends part of the HTTP/2 preface, or nothing, and stops is
/// closed after the header timeout; the status keeps answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_protocol_detection_is_closed() {
    let server = Server::start(&["--header-read-timeout", "1"]);
    let c = Client::new(&server.base);
    let stalls: Vec<(&str, TcpStream)> = ["PRI * HTTP/2.0\r\n", "PRI", ""]
        .into_iter()
        .map(|prefix| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(prefix.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            (prefix, s)
        })
        .collect();
    assert_eq!(c.get("/api/orchestrator/status").await.0, 200);
    let started = Instant::now();
    for (prefix, mut s) in stalls {
        let mut buf = [0u8; 64];
        let read = s.read(&mut buf);
        let closed = matches!(read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "{prefix:?} still open: {read:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{prefix:?} was held {:?}",
            started.elapsed()
        );
    }
}

/// An HTTP/2 connection with nothing in flight is closed after the idle
/// timeout (its keep-alive pings alone no longer hold it open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server = Server::start(&["--header-read-timeout", "1"]);
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake");
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(format!("{}/api/orchestrator/status", server.base))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"tierUtilization\""));
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");
}

/// Plain HTTP/1.1 over one kept-alive socket: the status.
fn get_on(s: &mut TcpStream, path: &str) -> Option<u16> {
    fetch_on(s, path).map(|(code, _)| code)
}

/// Plain HTTP/1.1 over one kept-alive socket: status and body.
fn fetch_on(s: &mut TcpStream, path: &str) -> Option<(u16, Vec<u8>)> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body))
}

/// Past `--max-connections`, new connections wait; the ones already open
/// keep being served; once the flood goes, the waiting ones are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_waits_and_open_clients_keep_answering() {
    let server = Server::start(&["--max-connections", "8", "--header-read-timeout", "30"]);
    let mut open = TcpStream::connect(server.addr).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(get_on(&mut open, "/api/orchestrator/status"), Some(200));
    let flood: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(server.addr).expect("the backlog takes it"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(
            get_on(&mut open, "/api/orchestrator/status"),
            Some(200),
            "the open client keeps answering"
        );
    }
    let (code, health) = fetch_on(&mut open, "/api/health").unwrap();
    assert_eq!(code, 200);
    let health: Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(
        health["connections"],
        json!({"open": 8, "max": 8}),
        "health shows the cap reached"
    );
    let mut late = TcpStream::connect(server.addr).unwrap();
    late.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert_eq!(
        get_on(&mut late, "/api/health"),
        None,
        "no place for it yet"
    );
    drop(flood);
    let mut late = TcpStream::connect(server.addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        get_on(&mut late, "/api/health"),
        Some(200),
        "served once places free up"
    );
}

/// Upstream replies are read up to `--max-upstream-body`; beyond, a 502.
#[tokio::test]
async fn oversized_upstream_replies_are_refused() {
    let huge = FakeUpstream::start(Behavior::Huge(64 * 1024)).await;
    let small = FakeUpstream::start(Behavior::Huge(1024)).await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast={}", huge.base_url),
        "--upstream",
        &format!("balanced={}", small.base_url),
        "--max-upstream-body",
        "16KiB",
    ]);
    let c = Client::new(&server.base);
    let (code, r) = c
        .post("/api/query", &json!({"query": "hi", "mode": "simple"}))
        .await;
    assert_eq!(code, 502, "{r}");
    assert!(error_of(&r).contains("larger than 16384 bytes"), "{r}");
    assert_eq!(r["decision"]["tier"], "Q2", "the decision stays recorded");
    let (code, r) = c
        .post("/api/query", &json!({"query": "What is Python?"}))
        .await;
    assert_eq!(code, 200, "{r}");
    let s = c.status().await;
    assert_eq!(s["totalDecisions"], 2);
    assert_eq!(per_tier(&s, "activeRequests"), [0.0, 0.0, 0.0]);
}

/// More concurrent queries than `--max-inflight` allows: the excess get a
/// 429 with Retry-After, each still recorded as a decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_inflight_limit_get_429() {
    let up = FakeUpstream::start(Behavior::Slow(Duration::from_millis(1500))).await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast={}", up.base_url),
        "--max-inflight",
        "fast=2",
    ]);
    let c = Client::new(&server.base);
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let http = c.http().clone();
            let url = format!("{}/api/query", server.base);
            tokio::spawn(async move {
                let res = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(json!({"query": format!("q{i}"), "mode": "simple"}).to_string())
                    .send()
                    .await
                    .unwrap();
                let code = res.status().as_u16();
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: Value = res.json().await.unwrap();
                (code, retry, body)
            })
        })
        .collect();
    // While the two admitted calls work (1.5 s), health shows the tier full.
    let full = tests::eventually(Duration::from_millis(1_200), || async {
        c.get("/api/health").await.1["upstreams"][0]["inFlight"] == 2
    })
    .await;
    assert!(full, "health shows 2 of 2 calls under way");
    let (_, health) = c.get("/api/health").await;
    assert_eq!(health["upstreams"][0]["maxInFlight"], 2);
    assert_eq!(health["upstreams"][1]["maxInFlight"], 64);
    let mut codes = Vec::new();
    for call in calls {
        let (code, retry, body) = call.await.unwrap();
        if code == 429 {
            assert_eq!(retry.as_deref(), Some("1"));
            assert!(error_of(&body).contains("in flight"), "{body}");
            assert_eq!(body["decision"]["tier"], "Q2");
        }
        codes.push(code);
    }
    codes.sort();
    assert_eq!(codes, [200, 200, 429, 429, 429, 429]);
    assert_eq!(up.hits(), 2, "the refused ones never reached the upstream");
    let s = c.status().await;
    assert_eq!(s["totalDecisions"], 6, "every decision is recorded");
    assert_eq!(per_tier(&s, "activeRequests"), [0.0, 0.0, 0.0]);
    assert_eq!(c.get("/api/health").await.1["upstreams"][0]["inFlight"], 0);
}

/// A token from a file often ends in a newline: it is trimmed, as the
/// presented one is.
#[tokio::test]
async fn the_configured_ingest_token_is_trimmed() {
    let server = Server::start_with(&[], &[("ORCH_INGEST_TOKEN", " s3cret\n")], None);
    let c = Client::new(&server.base);
    let body = decision("q", "Q2", 1.0, 1.0).to_string();
    let json_ct = ("content-type", "application/json");
    let (code, r) = c
        .post_with(
            INGEST,
            body.clone(),
            &[json_ct, ("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(code, 201, "{r}");
    for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer", "s3cret"] {
        let (code, _) = c
            .post_with(INGEST, body.clone(), &[json_ct, ("authorization", wrong)])
            .await;
        assert_eq!(code, 401, "{wrong:?}");
    }
}

/// One access line per request, with method, path, status and duration;
/// never the query string or a body.
#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_no_user_text() {
    let log = std::env::temp_dir().join(format!("orch-access-{}.log", std::process::id()));
    let server = Server::start_with(&[], &[("RUST_LOG", "warn,access=info")], Some(&log));
    let c = Client::new(&server.base);
    let mut sent = 0;
    for path in [
        "/api/orchestrator/status",
        "/api/orchestrator/status?limit=7&secret=q1",
        "/api/health",
        "/api/nope",
        "/",
    ] {
        c.get(path).await;
        sent += 1;
    }
    c.post(
        "/api/query",
        &json!({"query": "private words", "mode": "simple"}),
    )
    .await;
    c.post_with(INGEST, "private body", &[("content-type", "text/plain")])
        .await;
    sent += 2;
    assert!(server.terminate(Duration::from_secs(5)).is_some());
    let logged = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<&str> = logged.lines().filter(|l| l.contains("answered")).collect();
    assert_eq!(lines.len(), sent, "{logged}");
    for needle in [
        "method=GET path=/api/orchestrator/status",
        "status=200",
        "path=/api/nope",
        "status=404",
        "method=POST path=/api/query",
        "status=503",
        "status=415",
        "micros=",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle}: {logged}"
        );
    }
    for secret in ["limit=7", "secret=", "private"] {
        assert!(!logged.contains(secret), "{secret} leaked: {logged}");
    }
    let statuses: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("status=").nth(1)?.split(' ').next())
        .collect();
    assert!(statuses.len() >= 4, "{statuses:?}");
}
