//! The panel of one instance in real headless Chromium, two release
//! binaries on a real Redis: a decision posted to instance B appears on the
//! panel streaming from instance A, the instances are listed with A marked
//! as the one the panel talks to, and a Redis outage shows as A's local
//! view, labelled.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::{Client, Redis, Server};

fn rows(b: &Browser) -> impl Future<Output = Value> + '_ {
    b.eval(
        "return [...document.querySelectorAll('[data-testid=instance-row]')] \
           .map(r => [r.dataset.state, r.dataset.current, r.textContent]);",
        Value::Null,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_posted_to_b_shows_on_the_panel_of_a() {
    let mut redis = Redis::start();
    let url = redis.url();
    let a = Server::start(&["--redis", &url]);
    let b_server = Server::start(&["--redis", &url]);
    let (ca, cb) = (Client::new(&a.base), Client::new(&b_server.base));
    let a_id = ca.status().await["instance"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_id = cb.status().await["instance"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = Browser::on_stream(&a.base).await;
    // Both instances listed, A marked as this panel's.
    let listed = browser
        .wait_for(Duration::from_secs(10), || async {
            rows(&browser).await.as_array().map(Vec::len) == Some(2)
        })
        .await;
    assert!(listed.is_some(), "{}", rows(&browser).await);
    let r = rows(&browser).await;
    assert_eq!(r[0][0], "live");
    assert_eq!(r[0][1], "true");
    assert!(
        r[0][2]
            .as_str()
            .unwrap()
            .starts_with(&format!("{a_id} (this panel's)")),
        "{r}"
    );
    assert!(r[1][2].as_str().unwrap().starts_with(&b_id), "{r}");
    assert_eq!(r[1][1], "false");

    // Posted to B, shown on A's panel: pushed, not polled.
    let (code, d) = cb
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": "asked of B <i>as text</i>", "tier": "Q4", "score": 12.5, "decisionTimeMs": 1.5}),
        )
        .await;
    assert_eq!(code, 201);
    let id = d["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with(&b_id));
    let shown = browser
        .wait_for(Duration::from_secs(5), || async {
            browser
                .eval(
                    "return !!document.querySelector(`[data-testid=decision][data-id=\"${arguments[0]}\"]`);",
                    json!([id]),
                )
                .await
                == json!(true)
        })
        .await;
    assert!(shown.is_some(), "B's decision {id} reached A's panel");
    let total = browser.text_of("total-decisions").await;
    assert_eq!(total.as_deref(), Some("1"), "the cluster's total");
    assert_eq!(
        browser.text_of("transport").await.as_deref(),
        Some("stream"),
        "it came by A's event stream"
    );

    // The screenshot for the README (two instances, one decision of B).
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/cluster.png");
    browser.screenshot(&shot).await;
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cluster.png");
        std::fs::copy(&shot, docs).unwrap();
    }

    // Redis down: A's panel says it shows A's own view.
    redis.stop();
    let banner = browser
        .wait_for(Duration::from_secs(10), || async {
            browser.text_of("cluster-banner").await.is_some_and(|t| {
                t.starts_with(&format!(
                    "Showing the local view of instance {a_id}; Redis unreachable since "
                ))
            })
        })
        .await;
    assert!(banner.is_some(), "{:?}", browser.text_of("cluster").await);
    // Back: the banner goes.
    redis.restart();
    let gone = browser
        .wait_for(Duration::from_secs(10), || async {
            browser.count("cluster-banner").await == 0
        })
        .await;
    assert!(gone.is_some(), "{:?}", browser.text_of("cluster").await);
    browser.close().await;
}
