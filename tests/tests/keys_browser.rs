//! The Keys page in real headless Chromium against the release binary:
//! reached from the live page's link, signed in with the admin key (an
//! admin session), each key's spend against its budget with a burn-down,
//! a key made there (its secret shown once, and working) and one revoked
//! there (refused at once).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tests::browser::Browser;
use tests::{Behavior, Client, FakeUpstream, Server};

const ADMIN: &str = "adm-browser-key";

async fn click(b: &Browser, testid: &str) {
    b.eval(
        "document.querySelector(`[data-testid=\"${arguments[0]}\"]`).click(); return true;",
        json!([testid]),
    )
    .await;
}

async fn fill(b: &Browser, testid: &str, value: &str) {
    b.eval(
        "const e = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); e.value = arguments[1]; return true;",
        json!([testid, value]),
    )
    .await;
}

async fn chat(c: &Client, secret: &str) -> u16 {
    c.http()
        .post(format!("{}/v1/chat/completions", c.base()))
        .bearer_auth(secret)
        .json(&json!({"model": "powerful", "messages": [{"role": "user", "content": "a b c d"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_page_shows_spend_and_makes_and_revokes_keys() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let upstream = format!("powerful={}", up.base_url);
    let server = Server::start(&[
        "--in-memory",
        "--admin-key",
        ADMIN,
        "--brownout",
        "0.5",
        "--price",
        "powerful=15625/15625",
        "--upstream",
        &upstream,
    ]);
    let c = Client::new(&server.base);
    // A key that spent 3 calls of 0.140625 of its $1: 42 %.
    let res = c
        .http()
        .post(server.url("/api/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "search", "team": "search-team", "budgetUsd": 1.0, "rpm": 60}))
        .send()
        .await
        .unwrap();
    let made: serde_json::Value = res.json().await.unwrap();
    let first = made["secret"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(chat(&c, &first).await, 200);
    }

    let b = Browser::start().await;
    b.goto(&server.url("/")).await;
    let linked = b
        .wait_for(Duration::from_secs(20), || async {
            b.count("keys-link").await == 1
        })
        .await;
    assert!(linked.is_some(), "the live page links to the keys");
    click(&b, "keys-link").await;
    // Not signed in: the page asks for the admin key.
    let asked = b
        .wait_for(Duration::from_secs(20), || async {
            b.eval(
                "const f = document.querySelector('[data-testid=admin-signin]'); return !!f && !f.hidden;",
                json!([]),
            )
            .await
                == json!(true)
        })
        .await;
    assert!(asked.is_some(), "the sign-in form shows");
    fill(&b, "admin-key", "not-the-key").await;
    click(&b, "admin-signin-submit").await;
    let refused = b
        .wait_for(Duration::from_secs(5), || async {
            b.text_of("keys-note").await.as_deref() == Some("Not the admin key.")
        })
        .await;
    assert!(refused.is_some(), "a wrong key is refused");
    fill(&b, "admin-key", ADMIN).await;
    click(&b, "admin-signin-submit").await;
    let listed = b
        .wait_for(Duration::from_secs(10), || async {
            b.count("key-row").await == 1
        })
        .await;
    assert!(listed.is_some(), "signed in, the key is listed");
    let spend = b.text_of("key-spend").await.unwrap();
    assert_eq!(spend, "$0.4219 of $1 per month (42 %)");
    assert_eq!(b.text_of("key-team").await.as_deref(), Some("search-team"));
    assert_eq!(b.count("burn-down").await, 1);
    assert_eq!(
        b.text_of("key-rate").await.as_deref(),
        Some("3 / 60 req, 27 tok")
    );
    assert_eq!(b.text_of("key-brownout").await.as_deref(), Some("—"));

    // Make a key there: its secret is shown once and works.
    fill(&b, "key-name", "made in the browser").await;
    fill(&b, "key-rpm", "5").await;
    click(&b, "key-create-submit").await;
    let shown = b
        .wait_for(Duration::from_secs(10), || async {
            b.text_of("new-secret")
                .await
                .is_some_and(|t| t.contains("osk-"))
                && b.count("key-row").await == 2
        })
        .await;
    assert!(
        shown.is_some(),
        "the new key and its secret: {:?} / {:?}",
        b.text_of("keys-note").await,
        b.text_of("new-secret").await
    );
    let text = b.text_of("new-secret").await.unwrap();
    let secret = text.split_whitespace().last().unwrap().to_owned();
    assert!(secret.starts_with("osk-") && secret.len() == 47, "{text}");
    assert_eq!(chat(&c, &secret).await, 200);

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    b.screenshot(&dir.join("keys.png")).await;

    // Revoke the first there: refused at once.
    b.eval(
        "document.querySelectorAll('[data-testid=key-revoke]').forEach(e => { if (e.closest('tr').textContent.includes('search (')) e.click(); }); return true;",
        json!([]),
    )
    .await;
    let revoked = b
        .wait_for(Duration::from_secs(10), || async {
            b.eval(
                "return document.querySelectorAll('tr.revoked').length;",
                json!([]),
            )
            .await
                == json!(1)
        })
        .await;
    assert!(revoked.is_some(), "the row shows the key revoked");
    assert_eq!(chat(&c, &first).await, 401);
    assert_eq!(chat(&c, &secret).await, 200, "the other key still works");
    b.close().await;
}
