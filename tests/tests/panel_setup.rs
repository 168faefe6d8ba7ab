//! What a newcomer and an operator see first, in headless Chromium against
//! the release binary: the missing piece of a setup named on the page (a
//! tier with no upstream), the read-key prompt of a server run with
//! `--read-key`, and the README's picture of routed traffic.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tests::browser::Browser;
use tests::{Behavior, Client, FakeUpstream, Server};

async fn live(b: &Browser) -> bool {
    b.text_of("data-source").await.as_deref() == Some("Live")
}

async fn hint_shown(b: &Browser) -> bool {
    b.eval(
        "const e = document.querySelector('[data-testid=setup-hint]'); return !!e && !e.hidden;",
        json!([]),
    )
    .await
        == json!(true)
}

/// No upstream configured: the page says which tiers have none, the flag
/// that adds one, and that an outside router can post its decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_without_upstream_is_named_on_the_page() {
    let server = Server::start(&["--in-memory"]);
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || live(&b))
        .await
        .expect("the panel goes live");
    assert!(hint_shown(&b).await, "the setup hint is shown");
    let hint = b.text_of("setup-hint").await.unwrap();
    for part in [
        "Q2 (fast)",
        "Q3 (balanced)",
        "Q4 (powerful)",
        "--upstream fast=",
        "POST /api/orchestrator/decisions",
    ] {
        assert!(hint.contains(part), "{part} in {hint}");
    }
    // A newcomer's first view, to look at.
    let shot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/first-run.png");
    b.screenshot(&shot).await;
    b.close().await;

    // Every tier served: no hint.
    let up = FakeUpstream::start(Behavior::Ok).await;
    let mut args = vec!["--in-memory".to_owned()];
    for tier in ["fast", "balanced", "powerful"] {
        args.extend(["--upstream".into(), format!("{tier}={}", up.base_url)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || live(&b))
        .await
        .expect("the panel goes live");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !hint_shown(&b).await,
        "no hint when every tier has an upstream"
    );
    b.close().await;
}

/// With `--read-key`, the panel asks for a key once: a wrong one is
/// refused on the page, the right one opens a session and the panel goes
/// live, on the event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_asks_for_a_read_key_once() {
    let server = Server::start(&["--in-memory", "--read-key", "rk-panel"]);
    let c = Client::new(&server.base);
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || async {
        b.count("read-key-form").await == 1
    })
    .await
    .expect("the prompt is shown");
    assert!(!live(&b).await);
    let type_key = |key: &'static str| {
        b.eval(
            "const i = document.querySelector('[data-testid=read-key-input]'); \
             i.value = arguments[0]; i.dispatchEvent(new Event('input', {bubbles: true})); \
             document.querySelector('[data-testid=read-key-submit]').click(); return true;",
            json!([key]),
        )
    };
    type_key("rk-wrong").await;
    b.wait_for(Duration::from_secs(5), || async {
        b.text_of("read-key-error")
            .await
            .is_some_and(|t| t.contains("not a read key"))
    })
    .await
    .expect("a wrong key is refused on the page");
    type_key("rk-panel").await;
    b.wait_for(Duration::from_secs(10), || live(&b))
        .await
        .expect("the panel goes live with the key");
    assert_eq!(b.count("read-key-form").await, 0, "the prompt is gone");
    // Live on the stream (the session cookie reached the EventSource).
    let (code, _) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": "After the key", "tier": "Q3", "score": 4.0, "decisionTimeMs": 1.0}),
        )
        .await;
    assert_eq!(code, 201);
    b.wait_for(Duration::from_secs(5), || async {
        b.count("decision").await == 1
    })
    .await
    .expect("a new decision shows");
    assert!(live(&b).await);
    // The key itself is kept nowhere the page's scripts can read.
    let kept = b
        .eval(
            "return document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage);",
            json!([]),
        )
        .await;
    assert!(!kept.as_str().unwrap().contains("rk-panel"), "{kept}");
    b.close().await;
}

/// The README's picture: routed traffic of real-looking queries on a
/// server whose three tiers answer, with prices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_picture_shows_routed_traffic() {
    let fast = FakeUpstream::start_model(Behavior::Ok, "qwen2.5-1.5b-instruct").await;
    let balanced = FakeUpstream::start_model(Behavior::Ok, "llama-3.1-8b-instruct").await;
    let powerful = FakeUpstream::start_model(Behavior::Ok, "qwen2.5-72b-instruct").await;
    let server = Server::start(&[
        "--in-memory",
        "--upstream",
        &format!("fast={}", fast.base_url),
        "--upstream",
        &format!("balanced={}", balanced.base_url),
        "--upstream",
        &format!("powerful={}", powerful.base_url),
        "--price",
        "fast=0.1/0.2",
        "--price",
        "balanced=0.5/1.5",
        "--price",
        "powerful=5/15",
    ]);
    let c = Client::new(&server.base);
    let queries = [
        ("What is the capital of Australia?", "two-stage"),
        ("Translate 'good morning' into Spanish", "simple"),
        (
            "Summarise the causes of the 2008 financial crisis in three bullet points",
            "two-stage",
        ),
        (
            "Write a SQL query that returns the top 5 customers by revenue last quarter",
            "two-stage",
        ),
        (
            "Design a rate limiter for a distributed API gateway, explain the trade-offs and implement it in Rust",
            "two-stage",
        ),
        ("Is 97 a prime number?", "two-stage"),
        ("Explain the difference between TCP and UDP", "two-stage"),
        (
            "Prove that the square root of 2 is irrational, step by step",
            "two-stage",
        ),
        (
            "Refactor this Python function to be async and add error handling and tests",
            "two-stage",
        ),
        ("What time zone is Tokyo in?", "simple"),
        (
            "Compare B-trees and LSM-trees for a write-heavy workload and recommend one",
            "two-stage",
        ),
        ("Give me three name ideas for a coffee shop", "two-stage"),
    ];
    for (query, mode) in queries {
        let (code, body) = c
            .post("/api/query", &json!({"query": query, "mode": mode}))
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || live(&b))
        .await
        .expect("the panel goes live");
    b.wait_for(Duration::from_secs(5), || async {
        b.count("decision").await >= queries.len().min(10)
    })
    .await
    .expect("the decisions show");
    assert!(!hint_shown(&b).await);
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/readme.png");
    b.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/panel.png");
        std::fs::copy(&shot, docs).unwrap();
    }
    b.close().await;
}
