//! Routing quality on the live page, in real headless Chromium against the
//! release binary: the "Routing quality" card shows shadow judging's
//! verdicts known in advance exactly, with the interval, the expected
//! quality and the saving beside them.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tests::browser::Browser;
use tests::{Behavior, Client, FakeUpstream, Server, eventually};

async fn text_all(b: &Browser, testid: &str) -> Vec<String> {
    let v = b
        .eval(
            "return [...document.querySelectorAll(`[data-testid=\"${arguments[0]}\"]`)].map(e => e.textContent);",
            json!([testid]),
        )
        .await;
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quality_card_shows_the_verdicts_and_their_interval() {
    let fast = FakeUpstream::start_model(Behavior::Ok, "small").await;
    let big = FakeUpstream::start_model(Behavior::Judge, "big").await;
    let f = format!("fast={}", fast.base_url);
    let p = format!("powerful={}", big.base_url);
    let server = Server::start(&[
        "--upstream",
        &f,
        "--upstream",
        &p,
        "--shadow-rate",
        "1",
        "--price",
        "fast=0.1/0.4",
        "--price",
        "powerful=5/15",
    ]);
    let c = Client::new(&server.base);
    for text in [
        "verdict-better a",
        "verdict-better b",
        "verdict-tie c",
        "verdict-worse d",
    ] {
        let (code, _) = c
            .post("/api/query", &json!({"query": text, "mode": "simple"}))
            .await;
        assert_eq!(code, 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.status().await["quality"]["tiers"][0]["sinceStart"]["pairs"] == 4
        })
        .await
    );
    let b = Browser::start().await;
    b.goto(&server.base).await;
    let row = "Q2 fast: as good as Q4 on 75 % (30-95 %) of 4 judged · last hour: as good as Q4 on 75 % (30-95 %) of 4 judged";
    let shown = b
        .wait_for(Duration::from_secs(10), || async {
            text_all(&b, "quality-tier")
                .await
                .first()
                .map(String::as_str)
                == Some(row)
        })
        .await;
    assert!(shown.is_some(), "{:?}", text_all(&b, "quality-tier").await);
    let rows = text_all(&b, "quality-tier").await;
    assert_eq!(
        rows[1],
        "Q3 balanced: no pair judged · last hour: no pair judged"
    );
    let judging = b.text_of("quality-judging").await.unwrap();
    assert!(
        judging.starts_with("Shadow judging: 100.0 % of Q2 and Q3 answers"),
        "{judging}"
    );
    let expected = b.text_of("quality-expected").await.unwrap();
    assert!(
        expected.starts_with("Expected from labelled data: "),
        "{expected}"
    );
    let saved = b.text_of("quality-saved").await.unwrap();
    let headline = b.text_of("headline-cost-saved").await.unwrap();
    assert_eq!(saved, format!("Saved vs all on Q4: {headline}"));
    let implicit = text_all(&b, "quality-implicit").await;
    assert_eq!(
        implicit[0],
        "Q2 fast: abandoned 0.0 % of 0 streams · asked again 0.0 % of 4 queries"
    );
    b.eval(
        "document.querySelector('[data-testid=quality-card]').scrollIntoView(); return true;",
        json!([]),
    )
    .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/quality.png");
    b.screenshot(&shot).await;
    b.close().await;
}
