//! The embedded panel in real headless Chromium, driven through WebDriver,
//! against the real release binary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::browser::Browser;
use tests::{Client, Server};

async fn ingest(c: &Client, query: &str, tier: &str, score: f64) {
    let (code, body) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": query, "tier": tier, "score": score, "decisionTimeMs": 1.5}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
}

async fn source_text(b: &Browser) -> String {
    b.text_of("data-source").await.unwrap_or_default()
}

async fn meter(b: &Browser, tier: &str) -> f64 {
    b.eval(
        "const e = document.querySelector(`[data-testid=\"tier-${arguments[0]}\"] [role=meter]`); \
         return e ? parseFloat(e.getAttribute('aria-valuenow')) : -1;",
        json!([tier]),
    )
    .await
    .as_f64()
    .unwrap_or(-1.0)
}

/// The whole life of a panel: zero state, live updates, HTML as text, the
/// backend dying (mock badge) and coming back (live again), a screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_lifecycle_in_a_real_browser() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let c = Client::new(&server.base);
    let b = Browser::start().await;

    let opened = Instant::now();
    b.goto(&server.base).await;
    let loaded = opened.elapsed();
    let first_live = b
        .wait_for(Duration::from_secs(10), || async {
            source_text(&b).await == "Live"
        })
        .await
        .expect("the panel goes live");
    eprintln!(
        "navigation {} ms, then load event to first live data {} ms",
        loaded.as_millis(),
        first_live.as_millis()
    );

    // Zero state.
    assert_eq!(b.count("panel").await, 1);
    for tier in ["Q2", "Q3", "Q4"] {
        let row = b
            .text_of(&format!("tier-{tier}"))
            .await
            .expect("a row per tier");
        assert!(row.contains(tier) && row.contains("0.0%"), "{row}");
        assert_eq!(meter(&b, tier).await, 0.0);
    }
    assert_eq!(b.text_of("total-decisions").await.as_deref(), Some("0"));
    assert_eq!(
        b.text_of("avg-decision-time").await.as_deref(),
        Some("0.00 ms")
    );
    assert_eq!(b.count("decision").await, 0);
    assert!(b.text_of("distribution").await.unwrap().contains("SIMPLE"));

    // Decisions posted through the API show within 2 s and move the bars.
    ingest(&c, "What is Python?", "balanced", 0.2).await;
    ingest(&c, "Compare B-trees and LSM-trees", "Q3", 4.5).await;
    ingest(&c, "Prove the loop invariant holds", "powerful", 9.0).await;
    let (_, r) = c
        .post(
            "/api/query",
            &json!({"query": "hi there", "mode": "simple"}),
        )
        .await;
    assert_eq!(r["decision"]["tier"], "Q2");
    let took = b
        .wait_for(Duration::from_secs(2), || async {
            b.count("decision").await == 4
        })
        .await;
    assert!(took.is_some(), "4 decision rows within 2 s");
    assert_eq!(b.text_of("total-decisions").await.as_deref(), Some("4"));
    assert_eq!(meter(&b, "Q2").await, 25.0);
    assert_eq!(meter(&b, "Q3").await, 50.0);
    assert_eq!(meter(&b, "Q4").await, 25.0);
    let newest = b
        .eval(
            "return document.querySelector('[data-testid=decision]').textContent;",
            json!([]),
        )
        .await;
    assert!(newest.as_str().unwrap().contains("hi there"), "{newest}");

    // A query holding HTML is shown as literal text, never parsed.
    let hostile = "<img src=x onerror=\"window.__pwned=1\"><b>bold</b>";
    ingest(&c, hostile, "fast", 1.0).await;
    assert!(
        b.wait_for(Duration::from_secs(2), || async {
            b.count("decision").await == 5
        })
        .await
        .is_some()
    );
    let cell = b
        .eval(
            "const td = document.querySelector('[data-testid=decision] td.query'); \
             return {text: td.textContent, children: td.children.length, \
                     pwned: window.__pwned === 1, imgs: document.querySelectorAll('td img').length};",
            json!([]),
        )
        .await;
    assert_eq!(cell["text"], hostile);
    assert_eq!(cell["children"], 0);
    assert_eq!(cell["imgs"], 0);
    assert_eq!(cell["pwned"], false);

    // The screenshot of live data for the README.
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/panel.png");
    b.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/panel.png");
        std::fs::copy(&shot, docs).unwrap();
    }

    // The backend dies: the mock badge shows within 3 s.
    server.kill();
    let mock = b
        .wait_for(Duration::from_secs(3), || async {
            source_text(&b)
                .await
                .starts_with("Mock data: backend unreachable")
        })
        .await;
    assert!(
        mock.is_some(),
        "mock badge within 3 s, saw {:?}",
        source_text(&b).await
    );
    assert_eq!(
        b.count("tier-Q2").await,
        1,
        "mock data still renders the tiers"
    );

    // It comes back on the same port: live again within 3 s.
    let server = Server::start_on(&addr, &[]);
    let live = b
        .wait_for(Duration::from_secs(3), || async {
            source_text(&b).await == "Live"
        })
        .await;
    assert!(
        live.is_some(),
        "live again within 3 s, saw {:?}",
        source_text(&b).await
    );
    assert_eq!(
        b.text_of("total-decisions").await.as_deref(),
        Some("0"),
        "the new server's data"
    );
    drop(server);
}

/// The query form posts through the router and shows the decision and the
/// server's error (no upstream here: 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_form_shows_the_routing_result_and_the_error() {
    let server = Server::start(&[]);
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || async {
        source_text(&b).await == "Live"
    })
    .await
    .expect("live");
    // Type a query and submit it through the form, as a user would.
    b.eval(
        "const t = document.querySelector('#query-text'); \
         t.value = 'What is Python?'; t.dispatchEvent(new Event('input', {bubbles: true}));",
        json!([]),
    )
    .await;
    let enabled = b
        .wait_for(Duration::from_secs(2), || async {
            b.eval(
                "return !document.querySelector('[data-testid=query-form] button[type=submit]').disabled;",
                json!([]),
            )
            .await
                == json!(true)
        })
        .await;
    assert!(enabled.is_some(), "typing enables the Send button");
    b.eval(
        "document.querySelector('[data-testid=query-form] button[type=submit]').click();",
        json!([]),
    )
    .await;
    let shown = b
        .wait_for(Duration::from_secs(5), || async {
            b.text_of("query-result")
                .await
                .is_some_and(|t| t.contains("503"))
        })
        .await;
    let text = b.text_of("query-result").await.unwrap_or_default();
    assert!(shown.is_some(), "result shown: {text:?}");
    assert!(text.contains("Q3") && text.contains("SIMPLE"), "{text}");
    assert!(
        text.contains("no upstream configured for tier Q3"),
        "{text}"
    );
    assert!(
        b.wait_for(Duration::from_secs(2), || async {
            b.count("decision").await == 1
        })
        .await
        .is_some()
    );
}
