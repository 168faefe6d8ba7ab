//! Black-box API tests: the real release binary on a free port, over HTTP.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Server, eventually, per_tier};

fn upstream_arg(tier: &str, up: &FakeUpstream) -> String {
    format!("{tier}={}", up.base_url)
}

#[tokio::test]
async fn zero_state_over_http() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let (code, s) = c.get("/api/orchestrator/status").await;
    assert_eq!(code, 200);
    assert_eq!(per_tier(&s, "utilizationPercent"), [0.0, 0.0, 0.0]);
    assert_eq!(per_tier(&s, "activeRequests"), [0.0, 0.0, 0.0]);
    assert_eq!(per_tier(&s, "totalProcessed"), [0.0, 0.0, 0.0]);
    assert_eq!(s["recentDecisions"], json!([]));
    assert_eq!(
        s["complexityDistribution"],
        json!({"simple": 0, "moderate": 0, "complex": 0})
    );
    assert_eq!(s["totalDecisions"], 0);
    assert_eq!(s["avgDecisionTimeMs"], 0.0);
    let (code, h) = c.get("/api/health").await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn answered_query_through_an_upstream() {
    let up = FakeUpstream::start(Behavior::Ok).await;
    let server = Server::start(&[
        "--upstream",
        &upstream_arg("fast", &up),
        "--model",
        "fast=tiny-model",
    ]);
    let c = Client::new(&server.base);
    let (code, r) = c
        .post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "simple", "max_tokens": 64}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["answer"], "echo: What is Python?");
    assert_eq!(r["model"], "tiny-model");
    assert_eq!(r["decision"]["tier"], "Q2");
    assert_eq!(r["decision"]["complexity"], "SIMPLE");
    assert_eq!(r["decision"]["score"], 0.0);
    assert!(r["decision"]["id"].is_string());
    let sent = up.last_body();
    assert_eq!(sent["model"], "tiny-model");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["messages"][0]["content"], "What is Python?");
    let s = c.status().await;
    assert_eq!(s["totalDecisions"], 1);
    assert_eq!(s["recentDecisions"][0]["id"], r["decision"]["id"]);
    assert_eq!(per_tier(&s, "activeRequests"), [0.0, 0.0, 0.0]);
}

#[tokio::test]
async fn a_slow_upstream_shows_as_active_until_it_answers() {
    let up = FakeUpstream::start(Behavior::Slow(Duration::from_millis(800))).await;
    let server = Server::start(&["--upstream", &upstream_arg("Q3", &up)]);
    let c = Client::new(&server.base);
    let c2 = c.clone();
    let pending = tokio::spawn(async move {
        c2.post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "two-stage"}),
        )
        .await
    });
    assert!(
        eventually(Duration::from_secs(2), || async {
            per_tier(&c.status().await, "activeRequests") == [0.0, 1.0, 0.0]
        })
        .await,
        "Q3 shows one request in flight"
    );
    let (code, r) = pending.await.unwrap();
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        per_tier(&c.status().await, "activeRequests"),
        [0.0, 0.0, 0.0]
    );
}

#[tokio::test]
async fn upstream_faults_are_502_within_the_timeout_and_release_the_tier() {
    let slow = FakeUpstream::start(Behavior::Slow(Duration::from_secs(10))).await;
    let failing = FakeUpstream::start(Behavior::Fail).await;
    let garbage = FakeUpstream::start(Behavior::Garbage).await;
    // Q4 points at a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("powerful=http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let server = Server::start(&[
        "--upstream",
        &upstream_arg("fast", &slow),
        "--upstream",
        &upstream_arg("balanced", &failing),
        "--upstream",
        &dead_url,
        "--upstream-timeout",
        "0.5",
    ]);
    let c = Client::new(&server.base);

    let started = Instant::now();
    let (code, r) = c
        .post("/api/query", &json!({"query": "hi", "mode": "simple"}))
        .await;
    assert_eq!(code, 502, "slow upstream: {r}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the timeout"
    );
    assert!(r["error"].as_str().unwrap().contains("Q2"));
    assert_eq!(r["decision"]["tier"], "Q2");
    assert_eq!(
        per_tier(&c.status().await, "activeRequests"),
        [0.0; 3],
        "after a timeout"
    );

    let (code, r) = c
        .post("/api/query", &json!({"query": "What is Python?"}))
        .await;
    assert_eq!(code, 502, "failing upstream: {r}");
    assert!(r["error"].as_str().unwrap().contains("500"), "{r}");
    assert_eq!(
        per_tier(&c.status().await, "activeRequests"),
        [0.0; 3],
        "after a 5xx"
    );

    let hard = "Design a distributed rate limiter, prove it is fair under concurrent load, \
                then implement it in Rust";
    let (code, r) = c.post("/api/query", &json!({"query": hard})).await;
    assert_eq!(code, 502, "unreachable upstream: {r}");
    assert_eq!(r["decision"]["tier"], "Q4");
    assert_eq!(
        per_tier(&c.status().await, "activeRequests"),
        [0.0; 3],
        "after a refused connection"
    );
    assert_eq!(
        c.status().await["totalDecisions"],
        3,
        "each decision stays recorded"
    );

    drop(server);
    let server = Server::start(&["--upstream", &upstream_arg("Q3", &garbage)]);
    let c = Client::new(&server.base);
    let (code, r) = c
        .post("/api/query", &json!({"query": "What is Python?"}))
        .await;
    assert_eq!(code, 502, "garbage upstream: {r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("not a chat completion"),
        "{r}"
    );
    let s = c.status().await;
    assert_eq!(s["totalDecisions"], 1, "the decision stays recorded");
    assert_eq!(per_tier(&s, "activeRequests"), [0.0, 0.0, 0.0]);
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_call() {
    let up = FakeUpstream::start(Behavior::Slow(Duration::from_secs(3))).await;
    let server = Server::start(&["--upstream", &upstream_arg("fast", &up)]);
    let c = Client::new(&server.base);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let res = impatient
        .post(server.url("/api/query"))
        .json(&json!({"query": "hi", "mode": "simple"}))
        .send()
        .await;
    assert!(res.is_err(), "the client gave up");
    assert!(
        eventually(Duration::from_secs(2), || async {
            per_tier(&c.status().await, "activeRequests") == [0.0, 0.0, 0.0]
        })
        .await,
        "the tier's active count returns to 0"
    );
    assert_eq!(up.hits(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        up.finished(),
        0,
        "the upstream call was cancelled, not left running"
    );
}

#[tokio::test]
async fn no_upstream_is_503_and_counted() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let (code, r) = c
        .post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "simple"}),
        )
        .await;
    assert_eq!(code, 503);
    assert!(r["error"].as_str().unwrap().contains("Q2"));
    assert_eq!(c.status().await["totalDecisions"], 1);
}

#[tokio::test]
async fn buffer_and_window_flags() {
    let server = Server::start(&["--buffer-size", "5", "--window", "3"]);
    let c = Client::new(&server.base);
    let tiers = ["Q2", "Q2", "Q2", "Q2", "Q3", "Q4", "Q4"];
    for (i, tier) in tiers.iter().enumerate() {
        let (code, _) = c
            .post(
                "/api/orchestrator/decisions",
                &json!({"query": format!("q{i}"), "tier": tier, "score": 1.0, "decisionTimeMs": i as f64}),
            )
            .await;
        assert_eq!(code, 201);
    }
    let (_, s) = c.get("/api/orchestrator/status?limit=5").await;
    let ids: Vec<&str> = s["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["query"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["q6", "q5", "q4", "q3", "q2"]);
    // window 3: Q4, Q4, Q3
    let u = per_tier(&s, "utilizationPercent");
    assert!((u[0] - 0.0).abs() < 1e-9 && (u[1] - 100.0 / 3.0).abs() < 1e-9);
    assert!((u[2] - 200.0 / 3.0).abs() < 1e-9);
    assert_eq!(per_tier(&s, "totalProcessed"), [4.0, 1.0, 2.0]);
    assert_eq!(s["totalDecisions"], 7);
    // mean of the buffered decision times 2..=6
    assert_eq!(s["avgDecisionTimeMs"], 4.0);
    let (code, _) = c.get("/api/orchestrator/status?limit=6").await;
    assert_eq!(code, 400, "limit above the buffer size");
}

#[tokio::test]
async fn truncation_over_http() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let query = "🦀".repeat(99) + "漢字";
    let (code, d) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": query, "tier": "Q2", "score": 0, "decisionTimeMs": 0}),
        )
        .await;
    assert_eq!(code, 201);
    let stored = d["query"].as_str().unwrap();
    assert_eq!(stored.chars().count(), 100);
    assert_eq!(stored, "🦀".repeat(99) + "漢");
}

#[tokio::test]
async fn concurrent_writers_over_http_lose_nothing() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let (code, _) = if i % 2 == 0 {
                        c.post(
                            "/api/orchestrator/decisions",
                            &json!({"query": format!("w{w}-{i}"), "tier": "balanced", "score": 4, "decisionTimeMs": 1}),
                        )
                        .await
                    } else {
                        c.post("/api/query", &json!({"query": format!("w{w}-{i}"), "mode": "simple"}))
                            .await
                    };
                    assert!(code == 201 || code == 503, "{code}");
                }
            })
        })
        .collect();
    let reader = {
        let c = c.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let s = c.status().await;
                let total = s["totalDecisions"].as_u64().unwrap();
                let processed: f64 = per_tier(&s, "totalProcessed").iter().sum();
                assert_eq!(processed as u64, total);
                if total > 0 {
                    let d = &s["complexityDistribution"];
                    let sum = d["simple"].as_u64().unwrap()
                        + d["moderate"].as_u64().unwrap()
                        + d["complex"].as_u64().unwrap();
                    assert_eq!(sum, 100);
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    let s = c.status().await;
    assert_eq!(s["totalDecisions"], 400);
    assert_eq!(per_tier(&s, "totalProcessed"), [200.0, 200.0, 0.0]);
}

#[tokio::test]
async fn bad_input_over_http() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let huge = vec![b'x'; 65 * 1024];
    let (code, e) = c.post_raw("/api/orchestrator/decisions", huge).await;
    assert_eq!(code, 413);
    assert!(e["error"].is_string());
    let (code, e) = c.post_raw("/api/query", "{nope").await;
    assert_eq!(code, 400);
    assert!(e["error"].is_string());
    let (code, e) = c.get("/api/definitely/not/here").await;
    assert_eq!(code, 404);
    assert!(e["error"].is_string());
    let (code, _) = c.get("/api/orchestrator/status?limit=abc").await;
    assert_eq!(code, 400);
    assert_eq!(c.status().await["totalDecisions"], 0);
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() {
    let server = Server::start(&[]);
    let (code, doc) = Client::new(&server.base).get("/api/openapi.json").await;
    assert_eq!(code, 200);
    // Every route the server answers, with its methods: no more, no less.
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut routes = vec![
        "GET /api/orchestrator/status",
        "GET /api/orchestrator/stream",
        "GET /api/orchestrator/calibrate",
        "GET /api/orchestrator/history",
        "GET /api/orchestrator/replay",
        "GET /api/orchestrator/decisions",
        "POST /api/orchestrator/decisions",
        "POST /api/query",
        "GET /api/health",
        "GET /api/openapi.json",
        "POST /api/session",
        "DELETE /api/session",
        "GET /metrics",
        "POST /v1/chat/completions",
        "GET /v1/models",
        "GET /v1/models/{model}",
    ];
    routes.sort();
    assert_eq!(documented, routes);
    // And each documented route is served (not the fallback's 404 or 405).
    let c = Client::new(&server.base);
    for route in &routes {
        let (method, path) = route.split_once(' ').unwrap();
        let url = server.url(&path.replace("{model}", "auto"));
        let req = match method {
            "GET" => c.http().get(&url),
            "POST" => c
                .http()
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
            _ => c.http().delete(&url),
        };
        let code = req.send().await.unwrap().status().as_u16();
        assert!(
            !matches!(code, 404 | 405) || path == "/api/session",
            "{route}: {code}"
        );
    }
}

#[test]
fn bad_flags_exit_with_a_message() {
    for args in [
        &["--window", "0"][..],
        &["--buffer-size", "10", "--window", "20"],
        &["--upstream", "medium=http://x"],
        &["--listen", "not-an-address"],
    ] {
        let out = std::process::Command::new(tests::server_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

/// SIGTERM with connections open, as reliability.md says: a request in
/// progress finishes with its answer, an event stream ends cleanly, an idle
/// kept-alive connection is closed, and the process exits 0 well within
/// the 10 s drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    use futures_util::StreamExt as _;
    let up = FakeUpstream::start(Behavior::Slow(Duration::from_millis(1_500))).await;
    let server = Server::start(&["--in-memory", "--upstream", &upstream_arg("fast", &up)]);
    let c = Client::new(&server.base);
    // An idle kept-alive connection.
    assert_eq!(c.get("/api/health").await.0, 200);
    // An open event stream.
    let stream = c
        .http()
        .get(server.url("/api/orchestrator/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // A request in progress (its upstream takes 1.5 s).
    let query = {
        let c = c.clone();
        tokio::spawn(async move {
            c.post("/api/query", &json!({"query": "hello", "mode": "simple"}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(9)));
    // The stream ends (a clean end of its body, not a reset).
    let mut body = stream.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            chunk.expect("the stream's body ends cleanly");
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream was ended");
    let (code, answer) = query.await.unwrap();
    assert_eq!(
        code, 200,
        "the request in progress got its answer: {answer}"
    );
    let status = exit.await.unwrap().expect("exits within the drain");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn status_json_is_the_seed_interface() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    c.post(
        "/api/orchestrator/decisions",
        &json!({"query": "x", "tier": "powerful", "score": 7, "decisionTimeMs": 3}),
    )
    .await;
    let s = c.status().await;
    // The seed's keys, in the seed's order, first; only the documented
    // additions after them. (`Value` here keeps no order: read the text.)
    let text = c.text("/api/orchestrator/status").await;
    let order = |text: &str, keys: &[&str]| {
        let at: Vec<usize> = keys
            .iter()
            .map(|k| {
                text.find(&format!("\"{k}\":"))
                    .unwrap_or_else(|| panic!("{k} in {text}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "{keys:?} in order: {text}"
        );
    };
    let decision_at = text.find("\"recentDecisions\":[{").unwrap() + 20;
    let decision = &text[decision_at..decision_at + text[decision_at..].find('}').unwrap()];
    order(
        decision,
        &[
            "id",
            "query",
            "tier",
            "complexity",
            "timestamp",
            "score",
            "seq",
            "decisionTimeMs",
            "tierName",
        ],
    );
    let top = text.replacen(decision, "", 1);
    order(
        &top,
        &[
            "tierUtilization",
            "recentDecisions",
            "complexityDistribution",
            "totalDecisions",
            "avgDecisionTimeMs",
            "timestamp",
            "instance",
            "windows",
            "bufferCapacity",
            "tierMetrics",
            "modelUtilization",
            "routing",
            "cost",
            "persistence",
            "modeMix",
            "assessor",
            "quality",
        ],
    );
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&s),
        [
            "assessor",
            "avgDecisionTimeMs",
            "bufferCapacity",
            "complexityDistribution",
            "cost",
            "instance",
            "modeMix",
            "modelUtilization",
            "persistence",
            "quality",
            "recentDecisions",
            "routing",
            "tierMetrics",
            "tierUtilization",
            "timestamp",
            "totalDecisions",
            "windows"
        ]
    );
    assert_eq!(
        keys(&s["recentDecisions"][0]),
        [
            "complexity",
            "decisionTimeMs",
            "id",
            "query",
            "score",
            "seq",
            "tier",
            "tierName",
            "timestamp"
        ],
        "no mode: the ingested decision did not say"
    );
    assert_eq!(
        keys(&s["tierUtilization"][0]),
        [
            "activeRequests",
            "tier",
            "totalProcessed",
            "utilizationPercent"
        ]
    );
    assert_eq!(s["recentDecisions"][0]["complexity"], "COMPLEX");
    assert_eq!(s["recentDecisions"][0]["tier"], "Q4");
}
