//! Handler tests: the whole app driven in-process with `oneshot`, no socket.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use server::service::{NewDecision, StatusService};
use server::upstream::Upstreams;
use server::{AppState, app};
use tower::ServiceExt;

fn test_app(capacity: usize, window: usize) -> Router {
    app(AppState::new(
        StatusService::new(capacity, window),
        Upstreams::none(),
    ))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn status(app: &Router, query: &str) -> Value {
    let (code, body) = send(app, get(&format!("/api/orchestrator/status{query}"))).await;
    assert_eq!(code, StatusCode::OK);
    body
}

async fn ingest(app: &Router, body: Value) -> (StatusCode, Value) {
    send(app, post("/api/orchestrator/decisions", body.to_string())).await
}

#[tokio::test]
async fn zero_state() {
    let app = test_app(100, 20);
    let s = status(&app, "").await;
    assert_eq!(
        s["tierUtilization"],
        json!([
            {"tier": "Q2", "utilizationPercent": 0.0, "activeRequests": 0, "totalProcessed": 0},
            {"tier": "Q3", "utilizationPercent": 0.0, "activeRequests": 0, "totalProcessed": 0},
            {"tier": "Q4", "utilizationPercent": 0.0, "activeRequests": 0, "totalProcessed": 0},
        ])
    );
    assert_eq!(s["recentDecisions"], json!([]));
    assert_eq!(
        s["complexityDistribution"],
        json!({"simple": 0, "moderate": 0, "complex": 0})
    );
    assert_eq!(s["totalDecisions"], 0);
    assert_eq!(s["avgDecisionTimeMs"], 0.0);
    assert!(s["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn query_without_upstream_is_503_naming_the_tier_and_still_recorded() {
    let app = test_app(100, 20);
    let (code, body) = send(
        &app,
        post(
            "/api/query",
            r#"{"query": "What is Python?", "mode": "simple", "max_tokens": 100}"#,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("Q2"), "{body}");
    assert_eq!(body["decision"]["tier"], "Q2");
    assert_eq!(body["decision"]["tierName"], "fast");
    assert_eq!(body["decision"]["score"], 0.0);
    assert_eq!(body["decision"]["decisionTimeMs"], 0.0);
    let s = status(&app, "").await;
    assert_eq!(s["totalDecisions"], 1);
    assert_eq!(s["recentDecisions"][0]["query"], "What is Python?");
    assert_eq!(s["recentDecisions"][0]["complexity"], "SIMPLE");
    assert_eq!(s["tierUtilization"][0]["utilizationPercent"], 100.0);
    assert_eq!(s["tierUtilization"][0]["activeRequests"], 0);
}

#[tokio::test]
async fn two_stage_routes_by_score() {
    let app = test_app(100, 20);
    let (_, easy) = send(
        &app,
        post(
            "/api/query",
            r#"{"query": "What is Python?", "mode": "two-stage"}"#,
        ),
    )
    .await;
    assert_eq!(easy["decision"]["tier"], "Q3");
    assert_eq!(easy["decision"]["complexity"], "SIMPLE");
    let hard = json!({
        "query": "Design a distributed rate limiter, prove it is fair under concurrent load, then implement it in Rust",
        "mode": "two-stage"
    });
    let (code, hard) = send(&app, post("/api/query", hard.to_string())).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hard["decision"]["tier"], "Q4");
    assert_eq!(hard["decision"]["complexity"], "COMPLEX");
}

#[tokio::test]
async fn ingestion_accepts_both_namings_and_counts_all_time() {
    let app = test_app(3, 2);
    for (i, tier) in ["fast", "Q3", "powerful", "balanced", "Q2"]
        .iter()
        .enumerate()
    {
        let (code, d) = ingest(
            &app,
            json!({"query": format!("q{i}"), "tier": tier, "score": i as f64 * 3.0, "decisionTimeMs": 2.0}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{d}");
        assert!(["Q2", "Q3", "Q4"].contains(&d["tier"].as_str().unwrap()));
    }
    let s = status(&app, "?limit=3").await;
    // capacity 3: the newest three only; window 2: Q2 and Q3 at 50 % each
    let q: Vec<&str> = s["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["query"].as_str().unwrap())
        .collect();
    assert_eq!(q, ["q4", "q3", "q2"]);
    assert_eq!(s["tierUtilization"][0]["utilizationPercent"], 50.0);
    assert_eq!(s["tierUtilization"][1]["utilizationPercent"], 50.0);
    assert_eq!(s["tierUtilization"][2]["utilizationPercent"], 0.0);
    assert_eq!(s["totalDecisions"], 5);
    let processed: Vec<u64> = s["tierUtilization"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["totalProcessed"].as_u64().unwrap())
        .collect();
    assert_eq!(processed, [2, 2, 1]);
    // scores 6, 9, 12 are MODERATE, COMPLEX, COMPLEX: 33.3 / 66.7 by largest remainder
    assert_eq!(
        s["complexityDistribution"],
        json!({"simple": 0, "moderate": 33, "complex": 67})
    );
    assert_eq!(s["avgDecisionTimeMs"], 2.0);
}

/// Each bad request gets the right 4xx and a JSON error, and changes nothing.
#[tokio::test]
async fn bad_requests_are_json_errors_and_record_nothing() {
    let app = test_app(100, 20);
    let huge = format!(r#"{{"query": "{}"}}"#, "x".repeat(70 * 1024));
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("broken JSON", "/api/query", "{\"query\": ".into(), 400),
        ("empty body", "/api/query", "".into(), 400),
        ("array body", "/api/query", "[]".into(), 422),
        ("missing query", "/api/query", "{}".into(), 422),
        (
            "blank query",
            "/api/query",
            r#"{"query": "   "}"#.into(),
            422,
        ),
        (
            "query not a string",
            "/api/query",
            r#"{"query": 5}"#.into(),
            422,
        ),
        (
            "unknown mode",
            "/api/query",
            r#"{"query": "a", "mode": "fancy"}"#.into(),
            422,
        ),
        (
            "zero max_tokens",
            "/api/query",
            r#"{"query": "a", "max_tokens": 0}"#.into(),
            422,
        ),
        (
            "negative max_tokens",
            "/api/query",
            r#"{"query": "a", "max_tokens": -5}"#.into(),
            422,
        ),
        (
            "fractional max_tokens",
            "/api/query",
            r#"{"query": "a", "max_tokens": 1.5}"#.into(),
            422,
        ),
        (
            "string max_tokens",
            "/api/query",
            r#"{"query": "a", "max_tokens": "10"}"#.into(),
            422,
        ),
        ("body over 64 KiB", "/api/query", huge.clone(), 413),
        ("ingest huge", "/api/orchestrator/decisions", huge, 413),
        (
            "ingest missing tier",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "score": 1, "decisionTimeMs": 1}"#.into(),
            422,
        ),
        (
            "ingest unknown tier",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q5", "score": 1, "decisionTimeMs": 1}"#.into(),
            422,
        ),
        (
            "ingest score > 15",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": 15.01, "decisionTimeMs": 1}"#.into(),
            422,
        ),
        (
            "ingest score < 0",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": -1, "decisionTimeMs": 1}"#.into(),
            422,
        ),
        (
            "ingest score null",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": null, "decisionTimeMs": 1}"#.into(),
            422,
        ),
        (
            "ingest score string",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": "3", "decisionTimeMs": 1}"#.into(),
            422,
        ),
        (
            "ingest score 1e999",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": 1e999, "decisionTimeMs": 1}"#.into(),
            400,
        ),
        (
            "ingest negative time",
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": 1, "decisionTimeMs": -0.5}"#.into(),
            422,
        ),
        (
            "ingest blank query",
            "/api/orchestrator/decisions",
            r#"{"query": "\n", "tier": "Q2", "score": 1, "decisionTimeMs": 1}"#.into(),
            422,
        ),
    ];
    for (what, uri, body, want) in cases {
        let (code, json) = send(&app, post(uri, body)).await;
        assert_eq!(code.as_u16(), want, "{what}: {json}");
        assert!(json["error"].is_string(), "{what}: {json}");
    }
    for raw in [&b"\xff\xfe"[..], b"{\"query\": \"\xff\"}"] {
        let (code, json) = send(&app, post("/api/query", raw.to_vec())).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "non-UTF-8 {raw:?}: {json}");
        assert!(json["error"].is_string());
    }
    let s = status(&app, "").await;
    assert_eq!(s["totalDecisions"], 0, "nothing was recorded");
}

#[tokio::test]
async fn field_errors_name_the_field() {
    let app = test_app(100, 20);
    for (body, field) in [
        (
            json!({"query": "a", "tier": "Q5", "score": 1, "decisionTimeMs": 1}),
            "tier",
        ),
        (
            json!({"query": "a", "tier": "Q2", "score": 16, "decisionTimeMs": 1}),
            "score",
        ),
        (
            json!({"query": "a", "tier": "Q2", "score": 1, "decisionTimeMs": -1}),
            "decisionTimeMs",
        ),
        (
            json!({"query": " ", "tier": "Q2", "score": 1, "decisionTimeMs": 1}),
            "query",
        ),
        (
            json!({"query": "a", "tier": "Q2", "score": "x", "decisionTimeMs": 1}),
            "score",
        ),
    ] {
        let (_, e) = ingest(&app, body.clone()).await;
        assert!(
            e["error"].as_str().unwrap().starts_with(field),
            "{body} -> {e}"
        );
    }
}

#[tokio::test]
async fn bad_limits_are_400() {
    let app = test_app(100, 20);
    for q in ["limit=0", "limit=101", "limit=-1", "limit=x", "limit="] {
        let (code, e) = send(&app, get(&format!("/api/orchestrator/status?{q}"))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{q}");
        assert!(e["error"].as_str().unwrap().contains("limit"));
    }
    for i in 0..30 {
        ingest(
            &app,
            json!({"query": format!("q{i}"), "tier": "Q2", "score": 1, "decisionTimeMs": 0}),
        )
        .await;
    }
    assert_eq!(
        status(&app, "").await["recentDecisions"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        status(&app, "?limit=25").await["recentDecisions"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
    assert_eq!(
        status(&app, "?limit=100").await["recentDecisions"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
}

#[tokio::test]
async fn unknown_api_paths_and_methods_are_json() {
    let app = test_app(100, 20);
    let (code, e) = send(&app, get("/api/nope")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("/api/nope"));
    let (code, _) = send(&app, get("/api")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, e) = send(&app, get("/api/query")).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(e["error"].is_string());
    let (code, _) = send(&app, post("/api/orchestrator/status", "{}")).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn conditional_get_gives_304_until_something_changes() {
    let app = test_app(100, 20);
    let res = app
        .clone()
        .oneshot(get("/api/orchestrator/status"))
        .await
        .unwrap();
    let etag = res.headers()[header::ETAG].clone();
    assert!(etag.to_str().unwrap().starts_with("W/\""));
    assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let conditional = || {
        Request::get("/api/orchestrator/status")
            .header(header::IF_NONE_MATCH, etag.clone())
            .body(Body::empty())
            .unwrap()
    };
    let res = app.clone().oneshot(conditional()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    ingest(
        &app,
        json!({"query": "a", "tier": "Q2", "score": 1, "decisionTimeMs": 0}),
    )
    .await;
    let res = app.clone().oneshot(conditional()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_and_openapi() {
    let app = test_app(100, 20);
    let (code, h) = send(&app, get("/api/health")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["bufferSize"], 100);
    assert_eq!(h["connections"], json!({"open": 0, "max": 10_000}));
    for (i, tier) in ["Q2", "Q3", "Q4"].into_iter().enumerate() {
        let u = &h["upstreams"][i];
        assert_eq!(u["tier"], tier);
        assert_eq!((&u["inFlight"], &u["maxInFlight"]), (&json!(0), &json!(64)));
    }
    let (code, doc) = send(&app, get("/api/openapi.json")).await;
    assert_eq!(code, StatusCode::OK);
    for path in [
        "/api/orchestrator/status",
        "/api/orchestrator/decisions",
        "/api/query",
        "/api/health",
        "/api/openapi.json",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"]["OrchestratorStatus"].is_object());
}

#[tokio::test]
async fn non_api_paths_serve_html() {
    let app = test_app(100, 20);
    for path in ["/", "/some/page"] {
        let res = app.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

/// The server's fast path for status polls answers exactly as the router's
/// handler does: same status, headers and body. The fast side has a router
/// behind it that answers every request 418, so a plain poll answered right
/// there can only have come from the fast path, and everything else is
/// seen to go to the router. (Content-Length is left out: hyper writes it
/// from the body on the wire.)
#[tokio::test]
async fn fast_path_answers_exactly_like_the_router() {
    use server::serve::FastPath;
    let state = AppState::new(StatusService::new(100, 20), Upstreams::none());
    let router = app(state.clone());
    let teapot = axum::Router::new().fallback(|| async { StatusCode::IM_A_TEAPOT });
    let fast = FastPath::with_router(state.clone(), teapot);
    for i in 0..12 {
        state
            .service
            .record(NewDecision::new(
                &format!("q{i}"),
                shared::Tier::Q3,
                4.0,
                1.0,
            ))
            .unwrap();
    }
    let etag = router
        .clone()
        .oneshot(get("/api/orchestrator/status"))
        .await
        .unwrap()
        .headers()[header::ETAG]
        .clone();
    for not_fast in [
        get("/api/orchestrator/status?limit=3"),
        get("/api/orchestrator/status?limit=0"),
        get("/api/health"),
        Request::post("/api/orchestrator/status")
            .body(Body::empty())
            .unwrap(),
    ] {
        let what = not_fast.uri().to_string();
        let res = fast.clone().oneshot(not_fast).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::IM_A_TEAPOT,
            "{what} goes to the router"
        );
    }
    let requests = || {
        vec![
            get("/api/orchestrator/status"),
            Request::get("/api/orchestrator/status")
                .header(header::IF_NONE_MATCH, etag.clone())
                .body(Body::empty())
                .unwrap(),
            Request::get("/api/orchestrator/status")
                .header(header::IF_NONE_MATCH, "W/\"other\", garbage")
                .body(Body::empty())
                .unwrap(),
        ]
    };
    for (a, b) in requests().into_iter().zip(requests()) {
        let what = a.uri().to_string();
        let ra = router.clone().oneshot(a).await.unwrap();
        let rb = fast.clone().oneshot(b).await.unwrap();
        assert_eq!(ra.status(), rb.status(), "{what}");
        let mut ha: Vec<_> = ra
            .headers()
            .iter()
            .filter(|(k, _)| *k != header::DATE && *k != header::CONTENT_LENGTH)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut hb: Vec<_> = rb
            .headers()
            .iter()
            .filter(|(k, _)| *k != header::DATE && *k != header::CONTENT_LENGTH)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ha.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        hb.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        assert_eq!(ha, hb, "{what}");
        let ba = ra.into_body().collect().await.unwrap().to_bytes();
        let bb = rb.into_body().collect().await.unwrap().to_bytes();
        // Equal ETags (compared above) name the same data; bodies built per
        // call differ only in their clock fields.
        let strip = |b: &[u8]| -> Value {
            let mut v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("timestamp");
                o.remove("uptimeSeconds");
            }
            v
        };
        assert_eq!(strip(&ba), strip(&bb), "{what}");
    }
}

/// Odd but valid Unicode is recorded as given (cut to 100 scalars, never
/// split); only blank queries are refused.
#[tokio::test]
async fn odd_unicode_queries() {
    let app = test_app(100, 20);
    let accepted = [
        "\u{202e}gnitirw tfel-ot-thgir",    // RTL override
        "zero\u{200b}width\u{feff}joiners", // zero-width space, BOM
        "nul \u{0} inside",                 // NUL, escaped in JSON
        "e\u{301}\u{301}\u{301} combining",
        "👩‍👩‍👧‍👦 family emoji",
        "\u{10ffff} last scalar",
    ];
    for q in accepted {
        let (code, d) = ingest(
            &app,
            json!({"query": q, "tier": "Q2", "score": 1, "decisionTimeMs": 0}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{q:?}: {d}");
        assert_eq!(d["query"], q);
    }
    let long: String = "👩‍👩‍👧‍👦".repeat(60);
    let (_, d) = ingest(
        &app,
        json!({"query": long, "tier": "Q2", "score": 1, "decisionTimeMs": 0}),
    )
    .await;
    // Seven scalars each: 14 whole families fit in 100 characters, the 15th
    // would be split, so the cut stops at 98.
    let kept = d["query"].as_str().unwrap();
    assert_eq!(kept, "👩‍👩‍👧‍👦".repeat(14));
    assert!(long.starts_with(kept));
    for blank in ["\u{2003}\u{2003}", "\t\r\n", "\u{85}"] {
        let (code, _) = ingest(
            &app,
            json!({"query": blank, "tier": "Q2", "score": 1, "decisionTimeMs": 0}),
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{blank:?}");
    }
    // a lone surrogate is no Unicode text: not a JSON document we accept
    let (code, _) = send(
        &app,
        post(
            "/api/orchestrator/decisions",
            r#"{"query": "\ud800", "tier": "Q2", "score": 1, "decisionTimeMs": 0}"#,
        ),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status(&app, "?limit=100").await["totalDecisions"],
        accepted.len() + 1
    );
}

/// Hostile query strings and bodies on every endpoint: a JSON 4xx, never a
/// panic, never a change.
#[tokio::test]
async fn hostile_requests_change_nothing() {
    let app = test_app(100, 20);
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested_obj = format!(
        r#"{{"query": "a", "tier": "Q2", "score": 1, "decisionTimeMs": 0, "x": {}}}"#,
        "[".repeat(5_000)
    );
    let cases: Vec<(&str, String, u16)> = vec![
        ("/api/query", nested.clone(), 422),
        ("/api/orchestrator/decisions", nested, 422),
        ("/api/orchestrator/decisions", nested_obj, 400),
        (
            "/api/query",
            r#"{"query": "a", "query": "b", "mode": "simple"}"#.into(),
            422,
        ),
        ("/api/query", r#"{"query": ["a"]}"#.into(), 422),
        ("/api/query", r#"{"query": {"$ne": 1}}"#.into(), 422),
        ("/api/query", r#"{"query": "a", "mode": 3}"#.into(), 422),
        (
            "/api/query",
            r#"{"query": "a", "max_tokens": 1e30}"#.into(),
            422,
        ),
        (
            "/api/query",
            r#"{"query": "a", "max_tokens": 18446744073709551616}"#.into(),
            422,
        ),
        (
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": true, "decisionTimeMs": 0}"#.into(),
            422,
        ),
        (
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": 2, "score": 1, "decisionTimeMs": 0}"#.into(),
            422,
        ),
        (
            "/api/orchestrator/decisions",
            r#"{"query": "a", "tier": "Q2", "score": 1, "decisionTimeMs": 1e309}"#.into(),
            400,
        ),
        ("/api/orchestrator/decisions", "null".into(), 422),
        (
            "/api/orchestrator/decisions",
            "\"just a string\"".into(),
            422,
        ),
        ("/api/orchestrator/decisions", "{}{}".into(), 422),
        ("/api/orchestrator/decisions", "\u{feff}{}".into(), 400),
    ];
    for (uri, body, want) in cases {
        let shown: String = body.chars().take(60).collect();
        let (code, e) = send(&app, post(uri, body)).await;
        assert_eq!(code.as_u16(), want, "{uri} {shown}: {e}");
        assert!(e["error"].is_string(), "{uri} {shown}");
    }
    for q in [
        "limit=%00",
        "limit=1;DROP%20TABLE",
        "limit=%FF%FE",
        "limit=0x10",
        "limit=+5",
        "limit=5%20",
        "limit=1e1",
        "limit=١٠",
    ] {
        let (code, e) = send(&app, get(&format!("/api/orchestrator/status?{q}"))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{q}: {e}");
        assert!(e["error"].is_string());
    }
    let long = format!("/api/orchestrator/status?{}", "a=b&".repeat(5_000));
    let (code, _) = send(&app, get(&long)).await;
    assert_eq!(code, StatusCode::OK, "unknown parameters are ignored");
    assert_eq!(status(&app, "").await["totalDecisions"], 0);
}

#[tokio::test]
async fn routing_insight_headers_threshold_and_calibration() {
    let app = server::app(AppState::new(
        StatusService::new(100, 20).with_routing(
            shared::Routing::new(9.0),
            shared::PerTier([None, None, shared::insight::Price::new(5.0, 15.0)]),
        ),
        Upstreams::none(),
    ));
    let query = "Design a distributed cache, prove it consistent, then implement it in Rust";
    let res = app
        .clone()
        .oneshot(post("/api/query", json!({"query": query}).to_string()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let h = res.headers().clone();
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let d = &body["decision"];
    assert_eq!(h["x-router-decision-id"], d["id"].as_str().unwrap());
    assert_eq!(h["x-router-tier"], d["tier"].as_str().unwrap());
    let score: f64 = h["x-router-score"].to_str().unwrap().parse().unwrap();
    assert_eq!(score, d["score"].as_f64().unwrap());
    // Routed by the configured threshold, not the class.
    let want = if score >= 9.0 { "Q4" } else { "Q3" };
    assert_eq!(d["tier"], want);
    let sum: f64 = d["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["weight"].as_f64().unwrap())
        .sum();
    assert!((sum - score).abs() < 1e-9, "{d}");

    let s = status(&app, "").await;
    assert_eq!(s["routing"]["q4Threshold"], 9.0);
    assert_eq!(
        s["cost"]["tiers"][2]["price"],
        json!({"inputPerMillion": 5.0, "outputPerMillion": 15.0})
    );

    let (code, cal) = send(&app, get("/api/orchestrator/calibrate?q4_share=1")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(cal["calibration"]["q4Decisions"], 1);
    assert_eq!(cal["calibration"]["threshold"], d["score"]);
    for bad in [
        "q4_share=1.5",
        "q4_share=-1",
        "q4_share=abc",
        "q4_share=1&q4_share=0",
    ] {
        let (code, err) = send(&app, get(&format!("/api/orchestrator/calibrate?{bad}"))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            err["error"].as_str().unwrap().starts_with("q4_share"),
            "{err}"
        );
    }
}
