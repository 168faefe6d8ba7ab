//! The panel in headless Chromium with council and benchmark queries: the
//! form offers all four modes, a group's answers are shown side by side
//! per tier with latency and tokens, the decisions held are counted by
//! mode, and a group's decisions sit together in the table.

use std::time::Duration;

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::{Behavior, FakeUpstream, Server};

/// Types `text`, picks `mode` and sends the form.
async fn send(b: &Browser, text: &str, mode: &str) {
    b.eval(
        "const t = document.querySelector('#query-text'); \
         t.value = arguments[0]; t.dispatchEvent(new Event('input', {bubbles: true})); \
         const m = document.querySelector('[data-testid=query-mode]'); \
         m.value = arguments[1]; m.dispatchEvent(new Event('change', {bubbles: true})); \
         setTimeout(() => document.querySelector('[data-testid=query-form] button[type=submit]').click(), 50);",
        json!([text, mode]),
    )
    .await;
}

/// Each member card's tier, ok flag and text.
async fn cards(b: &Browser) -> Value {
    b.eval(
        "return [...document.querySelectorAll('[data-testid=member]')].map(c => \
           [c.dataset.tier, c.dataset.ok, c.textContent]);",
        json!([]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn council_and_benchmark_answers_are_shown_side_by_side() {
    let fast = FakeUpstream::start_model(Behavior::Ok, "m-fast").await;
    let balanced = FakeUpstream::start_model(Behavior::Fail, "m-balanced").await;
    let powerful = FakeUpstream::start_model(
        Behavior::Says("Python is a language.\nAGREED: Q2".into()),
        "m-powerful",
    )
    .await;
    let server = Server::start(&[
        "--retries",
        "0",
        "--upstream",
        &format!("fast={}", fast.base_url),
        "--upstream",
        &format!("balanced={}", balanced.base_url),
        "--upstream",
        &format!("powerful={}", powerful.base_url),
    ]);
    let b = Browser::on_stream(&server.base).await;
    let modes = b
        .eval(
            "return [...document.querySelectorAll('[data-testid=query-mode] option')].map(o => o.value);",
            json!([]),
        )
        .await;
    assert_eq!(
        modes,
        json!(["two-stage", "simple", "council", "benchmark"])
    );

    send(&b, "What is Python?", "council").await;
    let shown = b
        .wait_for(Duration::from_secs(10), || async {
            b.count("member").await == 3 && b.count("synthesis").await == 1
        })
        .await;
    assert!(shown.is_some(), "{:?}", b.text_of("query-result").await);
    let c = cards(&b).await;
    assert_eq!(c[0][0], "Q2");
    assert_eq!(c[0][1], "true");
    let q2 = c[0][2].as_str().unwrap();
    assert!(
        q2.contains("m-fast") && q2.contains("echo: What is Python?") && q2.contains("out tokens"),
        "{q2}"
    );
    assert!(q2.contains(" ms"), "latency shown: {q2}");
    assert_eq!(c[1][1], "false");
    assert!(c[1][2].as_str().unwrap().contains("HTTP 502"), "{c}");
    let synthesis = b.text_of("synthesis").await.unwrap();
    assert!(
        synthesis.contains("Python is a language.") && synthesis.contains("agrees with Q2"),
        "{synthesis}"
    );
    assert!(!synthesis.contains("AGREED"), "{synthesis}");

    // Four decisions of one group, together in the table, counted as council.
    let together = b
        .wait_for(Duration::from_secs(5), || async {
            b.count("decision").await == 4
        })
        .await;
    assert!(together.is_some());
    let groups = b
        .eval(
            "return [...document.querySelectorAll('[data-testid=decision-mode]')].map(c => c.dataset.group);",
            json!([]),
        )
        .await;
    let groups = groups.as_array().unwrap();
    assert!(
        groups.iter().all(|g| g == &groups[0] && g.is_string()),
        "{groups:?}"
    );
    let mix = b.text_of("mode-mix").await.unwrap();
    assert!(mix.contains("council 4 (100%)"), "{mix}");

    send(&b, "Compare B-trees and LSM-trees", "benchmark").await;
    let shown = b
        .wait_for(Duration::from_secs(10), || async {
            b.eval(
                "const g = document.querySelector('[data-testid=group-answer]'); return g && g.dataset.mode;",
                json!([]),
            )
            .await
                == json!("benchmark")
        })
        .await;
    assert!(shown.is_some());
    let c = cards(&b).await;
    let tiers: Vec<&str> = c
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[0].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["Q2", "Q3", "Q4"]);
    assert_eq!(b.count("synthesis").await, 0);
    let mixed = b
        .wait_for(Duration::from_secs(5), || async {
            b.text_of("mode-mix")
                .await
                .is_some_and(|m| m.contains("benchmark 3"))
        })
        .await;
    assert!(mixed.is_some(), "{:?}", b.text_of("mode-mix").await);
    // The screenshot for the README.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shot = root.join("target/screenshots/modes.png");
    b.screenshot(&shot).await;
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&shot, root.join("docs/modes.png")).unwrap();
    }
    b.close().await;
}
