//! Routing quality on the live page, in real headless Chromium against the
//! release binary: the "Routing quality" card shows shadow judging's
//! verdicts known in advance exactly, with the interval, the expected
//! quality and the saving beside them.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tests::browser::Browser;
use tests::{Behavior, Client, FakeUpstream, Server, eventually, shadow_judging};

/// The what-if replay line's state: off, loading, ready or failed.
async fn ready(b: &Browser) -> serde_json::Value {
    b.eval(
        "const e = document.querySelector('[data-testid=whatif-replay]'); return e ? e.dataset.state : null;",
        json!([]),
    )
    .await
}

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
    let server = shadow_judging(
        &fast.base_url,
        &big.base_url,
        &["--price", "fast=0.1/0.4", "--price", "powerful=5/15"],
    );
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
    let row = "Q2 fast: as good as Q4 on 75 % (30-95 %) of 4 judged · last hour: as good as Q4 on 75 % (30-95 %) of 4 judged · 0 without a verdict, 0 Q4 failed, 0 dropped · abandoned 0.0 % of 0 streams · asked again 0.0 % of 4 queries";
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
        "Q3 balanced: no pair judged · last hour: no pair judged · 0 without a verdict, 0 Q4 failed, 0 dropped · abandoned 0.0 % of 0 streams · asked again 0.0 % of 0 queries"
    );
    assert_eq!(
        rows[2],
        "Q4 powerful: abandoned 0.0 % of 0 streams · asked again 0.0 % of 0 queries"
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
    b.eval(
        "document.querySelector('[data-testid=quality-card]').scrollIntoView(); return true;",
        json!([]),
    )
    .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/quality.png");
    b.screenshot(&shot).await;
    b.close().await;
}

/// The what-if's range choice: the stored decisions of the last day,
/// replayed by the server at the slider's threshold, as the replay API
/// answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_what_if_replays_a_stored_range_at_the_sliders_threshold() {
    let server = Server::start(&[
        "--price",
        "balanced=1/3",
        "--price",
        "powerful=5/15",
        "--price",
        "fast=0.1/0.4",
    ]);
    let c = Client::new(&server.base);
    let batch: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            let score = (i * 37 % 151) as f64 / 10.0;
            json!({"query": format!("stored question {i}"), "tier": if score >= 7.0 { "Q4" } else { "Q3" },
                   "score": score, "decisionTimeMs": 0.4, "mode": "two-stage",
                   "usage": {"promptTokens": 10 + i % 9, "completionTokens": 30 + i % 17}})
        })
        .collect();
    let (code, _) = c.post("/api/orchestrator/decisions", &json!(batch)).await;
    assert_eq!(code, 201);
    let b = Browser::start().await;
    b.goto(&server.base).await;
    assert!(
        b.wait_for(Duration::from_secs(10), || async {
            b.count("whatif-range").await == 1
        })
        .await
        .is_some()
    );
    assert_eq!(ready(&b).await, "off", "the buffer needs no replay");
    b.eval(
        "const s = document.querySelector('[data-testid=whatif-range]'); s.value = '-1d'; \
         s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
        json!([]),
    )
    .await;
    for threshold in [None, Some(4.5)] {
        if let Some(t) = threshold {
            b.eval(
                "const s = document.querySelector('[data-testid=whatif-slider]'); s.value = arguments[0]; \
                 s.dispatchEvent(new Event('input', {bubbles: true})); return true;",
                json!([t.to_string()]),
            )
            .await;
        }
        let t = match threshold {
            Some(t) => t,
            None => c.status().await["routing"]["q4Threshold"].as_f64().unwrap(),
        };
        let (_, want) = c
            .get(&format!("/api/orchestrator/replay?from=-1d&threshold={t}"))
            .await;
        let words = format!(
            "{} two-stage decisions; at {}, {} move to Q4 and {} leave it",
            want["decisions"],
            if t.fract() == 0.0 {
                format!("{t:.1}")
            } else {
                t.to_string()
            },
            want["toQ4"],
            want["fromQ4"]
        );
        let shown = b
            .wait_for(Duration::from_secs(10), || async {
                ready(&b).await == "ready"
                    && b.text_of("whatif-replay")
                        .await
                        .is_some_and(|s| s.contains(&words))
            })
            .await;
        assert!(
            shown.is_some(),
            "{words}: {:?}",
            b.text_of("whatif-replay").await
        );
    }
    let text = b.text_of("whatif-replay").await.unwrap();
    assert!(
        text.starts_with("Stored, last day: 300 two-stage decisions"),
        "{text}"
    );
    assert!(
        text.contains("cost +$") || text.contains("cost -$"),
        "{text}"
    );
    b.eval(
        "document.querySelector('[data-testid=routing-insight]').scrollIntoView(); return true;",
        json!([]),
    )
    .await;
    let shot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/whatif-range.png");
    b.screenshot(&shot).await;
    b.close().await;
}
