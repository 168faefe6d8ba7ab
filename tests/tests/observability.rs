//! Black-box tests of the upstream layer's measurements against a pool of
//! fault-injecting upstreams: failover, retries, circuit states, outcome
//! counts, latency percentiles, tokens and models, in the status, in
//! `/api/health` and in `/metrics`, all exact.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Server, closed_port, eventually, metric};

const SIMPLE: &str = r#"{"query": "What is Python?", "mode": "simple"}"#;

async fn ask(c: &Client) -> (u16, Value) {
    c.post_raw("/api/query", SIMPLE).await
}

/// The Q2 entry of `tierMetrics`.
async fn fast_metrics(c: &Client) -> Value {
    c.status().await["tierMetrics"][0].clone()
}

fn upstream<'a>(tier: &'a Value, name: &str) -> &'a Value {
    tier["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {tier}"))
}

#[tokio::test]
async fn failover_retries_and_the_circuit_cycle_are_counted_exactly() {
    let bad = FakeUpstream::start_model(Behavior::Status(503, None), "m-bad").await;
    let good = FakeUpstream::start_model(Behavior::Ok, "m-good").await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast:bad={}", bad.base_url),
        "--upstream",
        &format!("fast:good={}", good.base_url),
        "--retries",
        "1",
        "--circuit-failures",
        "3",
        "--circuit-cooldown",
        "1",
    ]);
    let c = Client::new(&server.base);
    // Every query is answered: a 503 from `bad` fails over to `good`.
    for _ in 0..12 {
        let (code, body) = ask(&c).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["upstream"], "good");
        assert_eq!(body["model"], "m-good");
    }
    // `bad` failed 3 times in a row, then its circuit opened and it got
    // nothing more: 3 calls, 3 retries, 12 answers.
    assert_eq!(bad.hits(), 3);
    assert_eq!(good.hits(), 12);
    let m = fast_metrics(&c).await;
    assert_eq!(m["requests"], 15);
    assert_eq!(m["retries"], 3);
    assert_eq!(m["outcomes"]["ok"], 12);
    assert_eq!(m["outcomes"]["http5xx"], 3);
    assert!((m["errorRate"].as_f64().unwrap() - 3.0 / 15.0).abs() < 1e-9);
    let b = upstream(&m, "bad");
    assert_eq!(b["circuit"], "open");
    assert_eq!(b["processed"], 3);
    assert_eq!(b["lastError"]["kind"], "http_5xx");
    assert!(
        b["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("fake upstream says 503"),
        "{b}"
    );
    assert_eq!(upstream(&m, "good")["circuit"], "closed");
    let (_, health) = c.get("/api/health").await;
    assert_eq!(
        health["upstreams"][0]["healthy"], true,
        "good still takes calls"
    );
    assert_eq!(health["upstreams"][0]["upstreams"][0]["circuit"], "open");
    let scrape = c.text("/metrics").await;
    let bad_labels = [("tier", "Q2"), ("upstream", "bad")];
    assert_eq!(
        metric(&scrape, "orch_upstream_circuit_state", &bad_labels),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &scrape,
            "orch_upstream_retries_total",
            &[("tier", "Q2"), ("upstream", "good")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &scrape,
            "orch_upstream_requests_total",
            &[("tier", "Q2"), ("upstream", "bad"), ("outcome", "http_5xx")]
        ),
        Some(3.0)
    );

    // `bad` recovers; after the cool-down one probe goes to it and closes
    // the circuit.
    bad.set(Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let probed = eventually(Duration::from_secs(10), || async {
        let (code, _) = ask(&c).await;
        assert_eq!(code, 200);
        bad.hits() == 4
    })
    .await;
    assert!(probed, "the half-open circuit let a probe through");
    let m = fast_metrics(&c).await;
    assert_eq!(upstream(&m, "bad")["circuit"], "closed");
    assert_eq!(upstream(&m, "bad")["consecutiveFailures"], 0);
    let scrape = c.text("/metrics").await;
    for (to, n) in [("open", 1.0), ("half-open", 1.0), ("closed", 1.0)] {
        let labels = [("tier", "Q2"), ("upstream", "bad"), ("to", to)];
        assert_eq!(
            metric(&scrape, "orch_upstream_circuit_transitions_total", &labels),
            Some(n),
            "{to}"
        );
    }
    assert_eq!(
        metric(&scrape, "orch_upstream_circuit_state", &bad_labels),
        Some(0.0)
    );
    // Models: both answered, each named as the upstream said.
    let models = c.status().await["modelUtilization"].clone();
    let names: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"m-good") && names.contains(&"m-bad"),
        "{models}"
    );
}

#[tokio::test]
async fn an_open_circuit_fails_fast_with_a_503_then_recovers_through_a_probe() {
    let up = FakeUpstream::start(Behavior::Fail).await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast:only={}", up.base_url),
        "--circuit-failures",
        "2",
        "--circuit-cooldown",
        "2",
    ]);
    let c = Client::new(&server.base);
    for _ in 0..2 {
        let (code, body) = ask(&c).await;
        assert_eq!(code, 502, "{body}");
        assert_eq!(body["upstream"]["kind"], "http_5xx");
        assert_eq!(body["upstream"]["status"], 500);
        assert_eq!(body["upstream"]["attempts"], 1, "a 500 is not retried");
    }
    let res = c.post_response("/api/query", SIMPLE).await;
    assert_eq!(res.status(), 503);
    let after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "{after}");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("circuit open"),
        "{body}"
    );
    assert!(
        body["decision"]["seq"].is_u64(),
        "the decision stays recorded"
    );
    assert_eq!(up.hits(), 2, "refused without calling the upstream");
    let m = fast_metrics(&c).await;
    assert_eq!(
        (m["shortCircuited"].as_u64(), m["requests"].as_u64()),
        (Some(1), Some(2))
    );
    let (_, health) = c.get("/api/health").await;
    assert_eq!(health["upstreams"][0]["healthy"], false);

    up.set(Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        upstream(&fast_metrics(&c).await, "only")["circuit"],
        "half-open"
    );
    let (code, body) = ask(&c).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        upstream(&fast_metrics(&c).await, "only")["circuit"],
        "closed"
    );
}

#[tokio::test]
async fn connect_errors_fail_over_and_least_in_flight_spreads_the_load() {
    let slow_a = FakeUpstream::start(Behavior::Slow(Duration::from_millis(400))).await;
    let slow_b = FakeUpstream::start(Behavior::Slow(Duration::from_millis(400))).await;
    let dead = format!("http://127.0.0.1:{}/v1", closed_port());
    let server = Server::start(&[
        "--upstream",
        &format!("fast:dead={dead}"),
        "--upstream",
        &format!("fast:a={}", slow_a.base_url),
        "--upstream",
        &format!("fast:b={}", slow_b.base_url),
        "--retries",
        "2",
    ]);
    let c = Client::new(&server.base);
    // Eight at once: each lands on the upstream with the fewest in flight,
    // so a and b end with four each; a query sent to `dead` fails over.
    let all = futures_util::future::join_all((0..8).map(|_| ask(&c))).await;
    assert!(all.iter().all(|(code, _)| *code == 200), "{all:?}");
    assert_eq!((slow_a.hits(), slow_b.hits()), (4, 4));
    let m = fast_metrics(&c).await;
    let d = upstream(&m, "dead");
    let connect_errors = d["outcomes"]["connectError"].as_u64().unwrap();
    assert!(connect_errors >= 1, "{d}");
    assert_eq!(
        m["retries"].as_u64().unwrap(),
        connect_errors,
        "each connect error was retried"
    );
    assert_eq!(m["outcomes"]["ok"], 8);
    assert_eq!(d["lastError"]["kind"], "connect_error");
}

#[tokio::test]
async fn latency_percentiles_match_what_the_upstreams_were_told_to_take() {
    let fast = FakeUpstream::start_model(Behavior::Slow(Duration::from_millis(60)), "small").await;
    let slow = FakeUpstream::start_model(Behavior::Slow(Duration::from_millis(300)), "large").await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast:f={}", fast.base_url),
        "--upstream",
        &format!("powerful:s={}", slow.base_url),
    ]);
    let c = Client::new(&server.base);
    let hard = json!({"query": tests::COMPLEX_QUERY, "mode": "two-stage"});
    for _ in 0..10 {
        assert_eq!(ask(&c).await.0, 200);
    }
    for _ in 0..4 {
        assert_eq!(c.post("/api/query", &hard).await.0, 200);
    }
    let status = c.status().await;
    let tiers = &status["tierMetrics"];
    let within = |v: &Value, lo: f64, hi: f64| {
        let x = v.as_f64().unwrap();
        assert!((lo..hi).contains(&x), "{x} not in {lo}..{hi}");
    };
    for key in ["p50", "p95", "p99"] {
        within(&tiers[0]["latencyMs"][key], 60.0, 200.0);
        within(&tiers[2]["latencyMs"][key], 300.0, 450.0);
    }
    assert_eq!(tiers[0]["latencyMs"]["samples"], 10);
    assert!(tiers[1].get("latencyMs").is_none(), "no call, no latency");
    // One token per word of "What is Python?" in, one more out.
    assert_eq!(
        (
            tiers[0]["tokensIn"].as_u64(),
            tiers[0]["tokensOut"].as_u64()
        ),
        (Some(30), Some(40))
    );
    let models = status["modelUtilization"].as_array().unwrap();
    assert_eq!(models[0]["model"], "small");
    assert!((models[0]["utilizationPercent"].as_f64().unwrap() - 1000.0 / 14.0).abs() < 1e-9);
    // The histogram agrees: all ten fast calls under 0.25 s, none under 0.05 s.
    let scrape = c.text("/metrics").await;
    let bucket = |le| {
        metric(
            &scrape,
            "orch_upstream_latency_seconds_bucket",
            &[("tier", "Q2"), ("upstream", "f"), ("le", le)],
        )
    };
    assert_eq!(
        (bucket("0.05"), bucket("0.25"), bucket("+Inf")),
        (Some(0.0), Some(10.0), Some(10.0))
    );
    assert_eq!(
        metric(
            &scrape,
            "orch_upstream_tokens_total",
            &[("tier", "Q4"), ("upstream", "s"), ("direction", "in")]
        ),
        Some(76.0),
        "19 words, 4 queries"
    );
    assert_eq!(
        metric(
            &scrape,
            "orch_decisions_total",
            &[
                ("tier", "Q4"),
                ("complexity", "complex"),
                ("mode", "two-stage")
            ]
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn keys_models_finish_reasons_and_tool_calls_pass_through() {
    let up = FakeUpstream::start_model(Behavior::Ok, "qwen-7b-instruct").await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast={}", up.base_url),
        "--upstream-key",
        "fast=sk-secret-4321",
        "--model",
        "fast=configured-name",
    ]);
    let c = Client::new(&server.base);
    let (code, body) = ask(&c).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(up.last_auth().as_deref(), Some("Bearer sk-secret-4321"));
    assert_eq!(
        body["model"], "qwen-7b-instruct",
        "the model that answered, not the configured one"
    );
    assert_eq!(body["finishReason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"promptTokens": 3, "completionTokens": 4})
    );
    assert_eq!(body["attempts"], 1);

    up.set(Behavior::ToolCalls);
    let (code, body) = ask(&c).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["answer"], Value::Null);
    assert_eq!(body["finishReason"], "tool_calls");
    assert_eq!(body["toolCalls"][0]["function"]["name"], "lookup");

    up.set(Behavior::Empty);
    let (code, body) = ask(&c).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["upstream"]["kind"], "bad_reply");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("finish_reason: length"),
        "{body}"
    );

    // The key shows nowhere.
    for path in [
        "/api/health",
        "/api/orchestrator/status",
        "/metrics",
        "/api/openapi.json",
    ] {
        assert!(!c.text(path).await.contains("sk-secret"), "{path}");
    }
}

#[tokio::test]
async fn upstream_errors_keep_their_status_class_message_and_retry_after() {
    let up = FakeUpstream::start(Behavior::Status(429, Some("7"))).await;
    let server = Server::start(&["--upstream", &format!("fast:lim={}", up.base_url)]);
    let c = Client::new(&server.base);
    let res = c.post_response("/api/query", SIMPLE).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "7");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("fake upstream says 429"),
        "{body}"
    );
    assert_eq!(
        body["upstream"]["attempts"], 1,
        "a long Retry-After on the only upstream is not waited for"
    );

    up.set(Behavior::Status(429, Some("1")));
    let (code, body) = ask(&c).await;
    assert_eq!(code, 429);
    assert_eq!(body["upstream"]["attempts"], 2, "a short one is, once");

    for (upstream_status, ours) in [
        (400, 400),
        // No chat completions endpoint there: a wrong URL is a failing
        // upstream, not the client's refused request.
        (404, 502),
        (422, 422),
        (401, 502),
        (403, 502),
        (500, 502),
        (504, 502),
    ] {
        up.set(Behavior::Status(upstream_status, None));
        let (code, body) = ask(&c).await;
        assert_eq!(code, ours, "upstream {upstream_status}: {body}");
        assert_eq!(body["upstream"]["status"], upstream_status);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("fake upstream says {upstream_status}")),
            "{body}"
        );
    }
    let m = fast_metrics(&c).await;
    assert_eq!(m["outcomes"]["http429"], 3);
    assert_eq!(m["outcomes"]["http4xx"], 4);
    assert_eq!(m["outcomes"]["badReply"], 1, "the 404");
    assert_eq!(m["outcomes"]["http5xx"], 2);
}

#[tokio::test]
async fn a_client_that_goes_away_counts_as_cancelled() {
    let up = FakeUpstream::start(Behavior::Slow(Duration::from_secs(5))).await;
    let server = Server::start(&["--upstream", &format!("fast:slow={}", up.base_url)]);
    let c = Client::new(&server.base);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let res = impatient
        .post(format!("{}/api/query", server.base))
        .header("content-type", "application/json")
        .body(SIMPLE)
        .send()
        .await;
    assert!(res.is_err() && started.elapsed() < Duration::from_secs(3));
    let counted = eventually(Duration::from_secs(5), || async {
        fast_metrics(&c).await["outcomes"]["cancelled"] == 1
    })
    .await;
    assert!(counted);
    let m = fast_metrics(&c).await;
    assert_eq!(
        (m["inFlight"].as_u64(), m["errorRate"].as_f64()),
        (Some(0), Some(0.0))
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_a_token_guards_them() {
    let up = FakeUpstream::start(Behavior::Ok).await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast:a={}", up.base_url),
        "--metrics-token",
        "scrape-me",
    ]);
    let c = Client::new(&server.base);
    // Client input never becomes a label.
    let odd = json!({"query": "label=\"injected\"} 1\nevil_metric 9", "mode": "simple"});
    assert_eq!(c.post("/api/query", &odd).await.0, 200);
    let (code, body) = c.get("/metrics").await;
    assert_eq!(code, 401, "{body}");
    let res = c
        .http()
        .get(format!("{}/metrics", server.base))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let scrape = res.text().await.unwrap();
    assert!(!scrape.contains("injected") && !scrape.contains("evil_metric"));
    for name in [
        "orch_decisions_total",
        "orch_decision_duration_seconds_bucket",
        "orch_upstream_requests_total",
        "orch_upstream_latency_seconds_bucket",
        "orch_upstream_tokens_total",
        "orch_upstream_retries_total",
        "orch_upstream_in_flight",
        "orch_tier_in_flight",
        "orch_upstream_circuit_state",
        "orch_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            scrape.lines().any(|l| l.starts_with(name)),
            "{name} missing"
        );
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install.sh --test)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
