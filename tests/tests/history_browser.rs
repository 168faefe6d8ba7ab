//! The History page in real headless Chromium against the release binary:
//! reached from the live page's link, its charts hold the counts the test
//! ingested, the decision log filters and pages like the API, the exports
//! link with the filters, and a failing store shows on the live page.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::{Client, Server};

fn decision(i: usize) -> Value {
    let tiers = ["Q2", "Q3", "Q4"];
    json!({
        "query": format!("history row {i} <b>not markup</b>"),
        "tier": tiers[i % 3],
        "score": (i % 16) as f64 * 0.9,
        "decisionTimeMs": 0.5,
        "mode": if i.is_multiple_of(2) { "two-stage" } else { "simple" },
    })
}

async fn attr(b: &Browser, testid: &str, name: &str) -> Value {
    b.eval(
        "const e = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); \
         return e ? e.getAttribute(arguments[1]) : null;",
        json!([testid, name]),
    )
    .await
}

async fn click(b: &Browser, testid: &str) {
    b.eval(
        "document.querySelector(`[data-testid=\"${arguments[0]}\"]`).click(); return true;",
        json!([testid]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_page_charts_and_pages_what_was_stored() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let batch: Vec<Value> = (0..120).map(decision).collect();
    assert_eq!(
        c.post("/api/orchestrator/decisions", &json!(batch)).await.0,
        201
    );
    let b = Browser::start().await;
    // From the live page, by its link.
    b.goto(&server.url("/")).await;
    let linked = b
        .wait_for(Duration::from_secs(20), || async {
            b.count("history-link").await == 1
        })
        .await;
    assert!(linked.is_some(), "the live page links to the history");
    click(&b, "history-link").await;
    let drawn = b
        .wait_for(Duration::from_secs(20), || async {
            attr(&b, "history-range", "data-count").await == json!("120")
        })
        .await;
    assert!(drawn.is_some(), "{:?}", b.text_of("history-range").await);
    let path = b.eval("return location.pathname;", Value::Null).await;
    assert_eq!(path, "/history");
    // The charts: 40 decisions on each tier, the volume sums to 120.
    for tier in ["Q2", "Q3", "Q4"] {
        assert_eq!(
            attr(&b, &format!("tier-mix-{tier}"), "data-count").await,
            json!("40")
        );
    }
    let counts = attr(&b, "volume-chart", "data-counts").await;
    let sum: u64 = counts
        .as_str()
        .unwrap()
        .split(',')
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, 120);
    let simple = (0..120).filter(|i| (i % 16) as f64 * 0.9 < 3.0).count();
    assert_eq!(
        attr(&b, "complexity-mix-simple", "data-count").await,
        json!(simple.to_string())
    );
    // Other ranges redraw the same decisions.
    click(&b, "range-week").await;
    let week = b
        .wait_for(Duration::from_secs(10), || async {
            b.text_of("history-range")
                .await
                .is_some_and(|t| t.contains("1h a step"))
        })
        .await;
    assert!(week.is_some(), "{:?}", b.text_of("history-range").await);
    assert_eq!(attr(&b, "history-range", "data-count").await, json!("120"));
    // The log: 50 a page, newest first, text shown as text.
    let rows = || async { b.count("log-row").await };
    assert!(
        b.wait_for(Duration::from_secs(10), || async { rows().await == 50 })
            .await
            .is_some()
    );
    assert_eq!(attr(&b, "log-row", "data-seq").await, json!("120"));
    let first = b.text_of("log-row").await.unwrap();
    assert!(
        first.contains("history row 119 <b>not markup</b>"),
        "{first}"
    );
    click(&b, "log-older").await;
    assert!(
        b.wait_for(Duration::from_secs(10), || async {
            attr(&b, "log-row", "data-seq").await == json!("70")
        })
        .await
        .is_some()
    );
    // Filter: Q4 and two-stage: i % 3 == 2 and i even, 20 of them.
    b.eval(
        "const f = document.querySelector('[data-form=log]'); \
         f.querySelector('[name=tier]').value = 'Q4'; \
         f.querySelector('[name=mode]').value = 'two-stage'; \
         f.requestSubmit(); return true;",
        Value::Null,
    )
    .await;
    assert!(
        b.wait_for(Duration::from_secs(10), || async { rows().await == 20 })
            .await
            .is_some()
    );
    assert_eq!(
        b.eval(
            "return document.querySelector('[data-testid=log-older]').disabled;",
            Value::Null
        )
        .await,
        json!(true)
    );
    let csv = attr(&b, "export-csv", "href").await;
    assert_eq!(
        csv,
        json!("/api/orchestrator/decisions?format=csv&tier=Q4&mode=two-stage")
    );
    // The export the link names holds the same 20.
    let text = c.text(csv.as_str().unwrap()).await;
    assert_eq!(text.lines().count(), 21, "a header and 20 rows");
    // The screenshot for the README.
    click(&b, "range-hour").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/history.png");
    b.screenshot(&shot).await;
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/history.png");
        std::fs::copy(&shot, docs).unwrap();
    }
    b.close().await;
}
