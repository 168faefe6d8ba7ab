//! Virtual keys, black-box against the release binary: the admin API and
//! its refusals, keys on both front doors, attribution, budgets exactly at
//! the limit, brownout, requests and tokens per minute with OpenAI's
//! headers, `server keys` on a running and a stopped server, restart and
//! kill -9, and secrets nowhere.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Server, eventually, server_bin};

const ADMIN: &str = "adm-test-key";

/// $1/64 a token at the powerful tier: a four-word query (the test double
/// counts 4 prompt tokens and 5 completion tokens, `echo:` and the words)
/// costs $9/64 = 0.140625, exactly, so sums of calls are exact too.
const EXACT_PRICE: &str = "powerful=15625/15625";

/// A server with `ADMIN` as its admin key, the balanced and powerful
/// tiers answered by `up`, and `extra` flags (`--in-memory` unless they
/// name a data dir).
fn keyed(up: &FakeUpstream, extra: &[&str]) -> Server {
    let balanced = format!("balanced={}", up.base_url);
    let powerful = format!("powerful={}", up.base_url);
    let mut args = vec![
        "--admin-key",
        ADMIN,
        "--upstream",
        &balanced,
        "--upstream",
        &powerful,
    ];
    if !extra.iter().any(|a| a.starts_with("--data-dir")) {
        args.push("--in-memory");
    }
    args.extend_from_slice(extra);
    Server::start(&args)
}

async fn admin(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = c
        .http()
        .request(method, format!("{}{path}", c.base()))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let code = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    (code, body, headers)
}

async fn create(c: &Client, body: Value) -> (String, Value) {
    let (code, created, _) = admin(c, reqwest::Method::POST, "/api/keys", Some(body)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["id"], created["key"]["id"], "{created}");
    (
        created["secret"].as_str().unwrap().to_owned(),
        created["key"].clone(),
    )
}

/// A chat completion with `key`: status, headers, body.
async fn chat(
    c: &Client,
    key: &str,
    model: &str,
    text: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = c
        .http()
        .post(format!("{}/v1/chat/completions", c.base()))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    let headers = res.headers().clone();
    (code, headers, res.json().await.unwrap_or(Value::Null))
}

async fn query(c: &Client, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = c
        .http()
        .post(format!("{}/api/query", c.base()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    let headers = res.headers().clone();
    (code, headers, res.json().await.unwrap_or(Value::Null))
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn spent(c: &Client, id: &str) -> f64 {
    let (code, key, _) = admin(c, reqwest::Method::GET, &format!("/api/keys/{id}"), None).await;
    assert_eq!(code, 200, "{key}");
    key["usage"]["spentUsd"].as_f64().unwrap()
}

#[tokio::test]
async fn the_admin_api_makes_lists_changes_and_revokes_keys() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let server = keyed(&up, &[]);
    let c = Client::new(&server.base);

    // Only the admin key manages keys; nothing is made by a refused call.
    for (auth, want) in [(None, 401), (Some("wrong"), 401)] {
        let mut req = c
            .http()
            .post(server.url("/api/keys"))
            .json(&json!({"name": "x"}));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), want);
    }
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x", "budgetUsd": -1}),
        json!({"name": "x", "rpm": 0}),
        json!({"name": "x", "period": "year"}),
        json!({"name": "x", "modes": []}),
        json!({"name": "x", "expiresAt": "tomorrow"}),
        json!({"name": "x", "secret": "mine"}),
    ] {
        let (code, body, _) =
            admin(&c, reqwest::Method::POST, "/api/keys", Some(bad.clone())).await;
        assert!(code == 422 || code == 400, "{bad} -> {code} {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (_, list, _) = admin(&c, reqwest::Method::GET, "/api/keys", None).await;
    assert_eq!(list["keys"], json!([]), "refused calls made nothing");

    let (secret, key) = create(
        &c,
        json!({"name": "search", "team": "search-team", "rpm": 100}),
    )
    .await;
    let id = key["id"].as_str().unwrap();
    let body = secret.strip_prefix("osk-").expect("osk- prefix");
    assert_eq!(body.len(), 43, "32 bytes in base64url without padding");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(key["prefix"], &secret[..8]);
    let (_, again, _) = admin(&c, reqwest::Method::GET, &format!("/api/keys/{id}"), None).await;
    assert_eq!(again["id"], id, "the key is found by the id made");
    assert_eq!(key["team"], "search-team");
    assert_eq!(key["period"], "month");
    let (_, list, _) = admin(&c, reqwest::Method::GET, "/api/keys", None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(body), "the list shows no secret");

    // Without a key the front doors refuse; with it they answer, and the
    // decision names the key and team.
    let (code, _, e) = chat(&c, "osk-not-a-key", "auto", "hello").await;
    assert_eq!(code, 401);
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let (code, _) = c.post("/api/query", &json!({"query": "hello"})).await;
    assert_eq!(code, 401);
    let (code, _, r) = chat(&c, &secret, "auto", "hello there").await;
    assert_eq!(code, 200, "{r}");
    let (code, _, r) = query(&c, &secret, json!({"query": "hello again"})).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["decision"]["keyId"], id);
    assert_eq!(r["decision"]["team"], "search-team");
    let status = c.status().await;
    assert_eq!(status["recentDecisions"][0]["keyId"], id);
    // The admin key works on the front doors too, attributed to no key.
    let (code, _, r) = query(&c, ADMIN, json!({"query": "from the admin"})).await;
    assert_eq!(code, 200, "{r}");
    assert!(r["decision"].get("keyId").is_none(), "{r}");

    // PATCH: present fields set, null clears, absent stays.
    let (code, k, _) = admin(
        &c,
        reqwest::Method::PATCH,
        &format!("/api/keys/{id}"),
        Some(json!({"rpm": null, "budgetUsd": 5, "name": "search v2"})),
    )
    .await;
    assert_eq!(code, 200, "{k}");
    assert_eq!(k["rpm"], Value::Null);
    assert_eq!(k["budgetUsd"], 5.0);
    assert_eq!(k["name"], "search v2");
    assert_eq!(k["team"], "search-team");
    assert_eq!(k["usage"]["requests"], 2, "the spend stays across a change");
    let (code, _, _) = admin(
        &c,
        reqwest::Method::PATCH,
        "/api/keys/key-0000000000000000",
        Some(json!({"rpm": 1})),
    )
    .await;
    assert_eq!(code, 404);

    // A mode the key may not use: 403, nothing recorded.
    let (code, k, _) = admin(
        &c,
        reqwest::Method::PATCH,
        &format!("/api/keys/{id}"),
        Some(json!({"modes": ["two-stage"]})),
    )
    .await;
    assert_eq!(code, 200, "{k}");
    let before = c.status().await["totalDecisions"].clone();
    let (code, _, e) = query(&c, &secret, json!({"query": "hi", "mode": "simple"})).await;
    assert_eq!(code, 403, "{e}");
    let (code, _, e) = chat(&c, &secret, "council", "hi").await;
    assert_eq!(code, 403, "{e}");
    assert_eq!(e["error"]["code"], "mode_not_allowed");
    assert_eq!(
        c.status().await["totalDecisions"],
        before,
        "nothing recorded"
    );

    // Revoked: refused at once.
    let (code, k, _) = admin(
        &c,
        reqwest::Method::DELETE,
        &format!("/api/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(k["revokedAt"].is_string());
    let (code, _, _) = chat(&c, &secret, "auto", "hello there").await;
    assert_eq!(code, 401);

    // An expired key is refused too.
    let (old, _) = create(
        &c,
        json!({"name": "old", "expiresAt": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(chat(&c, &old, "auto", "hi").await.0, 401);
}

#[tokio::test]
async fn the_status_and_metrics_show_spend_per_key_bounded() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let server = keyed(&up, &["--metrics-keys", "2", "--price", EXACT_PRICE]);
    let c = Client::new(&server.base);
    assert!(c.status().await.get("keys").is_none(), "no keys, no field");
    let mut ids = Vec::new();
    for (name, calls) in [("one", 1), ("three", 3), ("two", 2), ("none", 0)] {
        let (secret, key) = create(&c, json!({"name": name, "team": "t"})).await;
        for _ in 0..calls {
            assert_eq!(chat(&c, &secret, "powerful", "a b c d").await.0, 200);
        }
        ids.push(key["id"].as_str().unwrap().to_owned());
    }
    let call = 9.0 / 64.0;
    let status = c.status().await;
    let keys = status["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "all four fit in the top 20: {keys:?}");
    assert_eq!(keys[0]["key"], ids[1]);
    assert_eq!(keys[0]["name"], "three");
    assert_eq!(keys[0]["spentUsd"], 3.0 * call);
    assert_eq!(keys[0]["requests"], 3);
    assert_eq!(keys[3]["spentUsd"], 0.0);
    // /metrics names the top 2 and sums the rest as other.
    let text = c.text("/metrics").await;
    let spend = |key: &str| tests::metric(&text, "orch_key_spend_usd", &[("key", key)]);
    assert_eq!(spend(&ids[1]), Some(3.0 * call));
    assert_eq!(spend(&ids[2]), Some(2.0 * call));
    assert_eq!(spend("other"), Some(call));
    assert_eq!(
        spend(&ids[0]),
        None,
        "a key past the top 2 has no label of its own"
    );
    assert_eq!(
        tests::metric(&text, "orch_key_requests", &[("key", "other")]),
        Some(1.0)
    );
    // With an admin key the document lists the key API, and it is served.
    let (_, doc) = c.get("/api/openapi.json").await;
    for (path, method) in [("/api/keys", "post"), ("/api/keys/{id}", "patch")] {
        assert!(
            doc["paths"][path][method]["security"].is_array(),
            "{path} {method}"
        );
    }
}

#[tokio::test]
async fn without_an_admin_key_there_is_no_key_api() {
    let server = Server::start(&["--in-memory"]);
    let res = reqwest::Client::new()
        .get(server.url("/api/keys"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

#[tokio::test]
async fn a_budget_refuses_exactly_at_the_limit_and_survives_restart_and_kill_9() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let args = |up: &FakeUpstream| {
        vec![
            "--data-dir".to_owned(),
            data.clone(),
            "--admin-key".into(),
            ADMIN.into(),
            "--price".into(),
            EXACT_PRICE.into(),
            "--upstream".into(),
            format!("powerful={}", up.base_url),
        ]
    };
    let start = |up: &FakeUpstream| {
        let a = args(up);
        Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let server = start(&up);
    let c = Client::new(&server.base);
    let (secret, key) = create(
        &c,
        json!({"name": "capped", "budgetUsd": 1.0, "period": "day"}),
    )
    .await;
    let id = key["id"].as_str().unwrap().to_owned();
    let call = 9.0 / 64.0;
    // 6 calls spend 0.84375: every one admitted below the budget, and each
    // answer says what was left before it.
    for i in 0..6 {
        let (code, h, r) = chat(&c, &secret, "powerful", "a b c d").await;
        assert_eq!(code, 200, "call {i}: {r}");
        let left: f64 = header(&h, "x-router-budget-remaining-usd")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (left - (1.0 - call * i as f64)).abs() < 1e-6,
            "call {i}: {left}"
        );
    }
    assert_eq!(spent(&c, &id).await, 6.0 * call);

    // Restart: the spend is the ledger's.
    drop(c);
    assert!(server.terminate(Duration::from_secs(10)).is_some());
    let server = start(&up);
    let c = Client::new(&server.base);
    assert_eq!(spent(&c, &id).await, 6.0 * call);
    // The 7th is under the budget (0.84375 < 1): admitted.
    let (code, _, r) = chat(&c, &secret, "powerful", "a b c d").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(spent(&c, &id).await, 7.0 * call);

    // kill -9: what was answered is spent still.
    server.kill();
    let server = start(&up);
    let c = Client::new(&server.base);
    assert_eq!(spent(&c, &id).await, 7.0 * call);
    // The 8th is still under it (0.984375): admitted, and it takes the
    // spend past the budget (1.125), so the 9th is refused.
    let (code, _, r) = chat(&c, &secret, "powerful", "a b c d").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(spent(&c, &id).await, 8.0 * call);
    let res = c
        .http()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&json!({"model": "powerful", "messages": [{"role": "user", "content": "a b c d"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry: i64 = header(res.headers(), "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let to_midnight = 86_400 - unix % 86_400;
    assert!(
        (retry - to_midnight).abs() <= 2,
        "reset at UTC midnight: {retry} vs {to_midnight}"
    );
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["type"], "insufficient_quota");
    assert_eq!(e["error"]["code"], "budget_exceeded");
    // Refused on the other door too, and nothing recorded or spent.
    let before = c.status().await["totalDecisions"].clone();
    let (code, _, e) = query(&c, &secret, json!({"query": "a b c d"})).await;
    assert_eq!(code, 429, "{e}");
    assert_eq!(c.status().await["totalDecisions"], before);
    assert_eq!(spent(&c, &id).await, 8.0 * call);
    // The history keeps the key's spend per minute, across the restarts.
    let (code, h) = c.get("/api/orchestrator/history?from=-1h&step=1m").await;
    assert_eq!(code, 200, "{h}");
    let series = &h["keys"][0];
    assert_eq!(series["key"], id.as_str());
    let sum = |name: &str| -> f64 {
        series[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum()
    };
    assert!((sum("spentUsd") - 8.0 * call).abs() < 1e-9, "{series}");
    assert_eq!(sum("requests"), 8.0);
    assert_eq!(sum("tokens"), 72.0);
    // A bigger budget lets it through again.
    let (code, _, _) = admin(
        &c,
        reqwest::Method::PATCH,
        &format!("/api/keys/{id}"),
        Some(json!({"budgetUsd": 2.0})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(chat(&c, &secret, "powerful", "a b c d").await.0, 200);
}

#[tokio::test]
async fn brownout_moves_a_key_to_q3_as_it_nears_its_budget() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let server = keyed(
        &up,
        &[
            "--brownout",
            "0.8",
            "--price",
            "powerful=15625/15625",
            "--price",
            "balanced=15625/15625",
        ],
    );
    let c = Client::new(&server.base);
    // Scores 8.9: Q4 at the configured threshold (7), Q3 once the key's
    // threshold passes 8.9 (a brownout level of 0.24).
    let hard = "Design a distributed cache and analyse its trade-offs";
    let (secret, key) = create(&c, json!({"name": "b", "budgetUsd": 8.0})).await;
    let id = key["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    let mut last_level = 0.0;
    loop {
        let (code, h, r) = query(&c, &secret, json!({"query": hard})).await;
        if code == 429 {
            assert_eq!(header(&h, "x-router-brownout"), Some("1.00"));
            break;
        }
        assert_eq!(code, 200, "{r}");
        let level: f64 = header(&h, "x-router-brownout").unwrap().parse().unwrap();
        assert!(
            level >= last_level,
            "the level only rises: {level} after {last_level}"
        );
        last_level = level;
        let score = r["decision"]["score"].as_f64().unwrap();
        let tier = r["decision"]["tier"].as_str().unwrap().to_owned();
        // The key's threshold: 7 at 0, 15 at 1.
        let threshold = 7.0 + 8.0 * level;
        let want = if score >= threshold { "Q4" } else { "Q3" };
        // The header is rounded to 2 places: only judge clear cases.
        if (score - threshold).abs() > 0.1 {
            assert_eq!(tier, want, "score {score} at level {level}");
        }
        seen.push((level, tier));
        assert!(seen.len() < 500, "the budget is reached");
    }
    assert_eq!(
        seen[0],
        (0.0, "Q4".to_owned()),
        "a hard query goes to Q4 first"
    );
    let share = |pick: &dyn Fn(f64) -> bool| {
        let picked: Vec<_> = seen.iter().filter(|(l, _)| pick(*l)).collect();
        let q4 = picked.iter().filter(|(_, t)| t == "Q4").count();
        (q4 as f64 / picked.len().max(1) as f64, picked.len())
    };
    eprintln!(
        "figures: Q4 share below 80 % of the budget {:?}, in brownout {:?} (share, calls); level:tier {:?}",
        share(&|l| l == 0.0),
        share(&|l| l > 0.0),
        seen.iter()
            .map(|(l, t)| format!("{l}:{t}"))
            .collect::<Vec<_>>()
    );
    let q3_in_brownout = seen.iter().filter(|(l, t)| *l > 0.0 && t == "Q3").count();
    assert!(q3_in_brownout > 0, "brownout moved traffic to Q3: {seen:?}");
    assert!(
        seen.iter().all(|(l, t)| t == "Q4" || *l > 0.0),
        "Q3 only in brownout"
    );
    // Refused exactly at the budget: the spend before the last admitted
    // call was under it, and it is at or over it now.
    let total = spent(&c, &id).await;
    let call = (2 * hard.split_whitespace().count() + 1) as f64 / 64.0;
    assert!(total >= 8.0 && total < 8.0 + call, "{total}");
    // model "powerful" is honoured in brownout without --brownout-force.
    let (code, _, _) = admin(
        &c,
        reqwest::Method::PATCH,
        &format!("/api/keys/{id}"),
        Some(json!({"budgetUsd": total + 0.5})),
    )
    .await;
    assert_eq!(code, 200);
    let (code, h, r) = chat(&c, &secret, "powerful", "hi").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(header(&h, "x-router-tier"), Some("Q4"));
}

#[tokio::test]
async fn brownout_force_answers_powerful_with_q3() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let server = keyed(
        &up,
        &[
            "--brownout",
            "0.5",
            "--brownout-force",
            "--price",
            "powerful=15625/15625",
        ],
    );
    let c = Client::new(&server.base);
    let (secret, _) = create(&c, json!({"name": "f", "budgetUsd": 0.2})).await;
    // 0.140625 a call: the second sees a brownout level of 0.40625.
    let (_, h, _) = chat(&c, &secret, "powerful", "a b c d").await;
    assert_eq!(header(&h, "x-router-tier"), Some("Q4"));
    let (_, h, _) = chat(&c, &secret, "powerful", "a b c d").await;
    assert_eq!(
        header(&h, "x-router-tier"),
        Some("Q3"),
        "forced to Q3 in brownout"
    );
    assert!(
        header(&h, "x-router-brownout")
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn requests_and_tokens_per_minute_answer_openais_429() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let server = keyed(&up, &[]);
    let c = Client::new(&server.base);
    let (rpm_key, _) = create(&c, json!({"name": "rpm", "rpm": 3})).await;
    for left in [2, 1, 0] {
        let (code, h, _) = chat(&c, &rpm_key, "auto", "hi").await;
        assert_eq!(code, 200);
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            header(&h, "x-ratelimit-remaining-requests"),
            Some(left.to_string().as_str())
        );
        assert!(
            header(&h, "x-ratelimit-reset-requests")
                .unwrap()
                .ends_with('s')
        );
    }
    let before = c.status().await["totalDecisions"].clone();
    let (code, h, e) = chat(&c, &rpm_key, "auto", "hi").await;
    assert_eq!(code, 429, "{e}");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), Some("0"));
    let retry: u64 = header(&h, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        c.status().await["totalDecisions"],
        before,
        "refused: nothing recorded"
    );

    // Tokens: the test double answers 1 + words tokens; 10 a minute.
    let (tpm_key, _) = create(&c, json!({"name": "tpm", "tpm": 10})).await;
    let (code, h, _) = chat(
        &c,
        &tpm_key,
        "auto",
        "one two three four five six seven eight nine",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), Some("10"));
    let (code, h, e) = chat(&c, &tpm_key, "auto", "more").await;
    assert_eq!(code, 429, "{e}");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert_eq!(e["error"]["type"], "tokens");
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), Some("0"));
}

#[tokio::test]
async fn the_official_python_client_sees_rate_limit_errors() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let server = keyed(&up, &["--price", EXACT_PRICE]);
    let c = Client::new(&server.base);
    let (rpm, _) = create(&c, json!({"name": "rpm", "rpm": 1})).await;
    let (tpm, _) = create(&c, json!({"name": "tpm", "tpm": 2})).await;
    let (budget, _) = create(&c, json!({"name": "budget", "budgetUsd": 0.05})).await;
    let (ok, out) = tests::run_python(
        "tests/python/key_limits.py",
        &[
            ("ROUTER_BASE_URL", server.url("/v1")),
            ("KEY_RPM", rpm),
            ("KEY_TPM", tpm),
            ("KEY_BUDGET", budget),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.trim_end().ends_with("3 passed, 0 failed"), "{out}");
}

fn keys_cli(data: &str, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(server_bin())
        .arg("keys")
        .args(args)
        .args(["--data-dir", data])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.success(),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_cli_manages_keys_of_a_stopped_and_a_running_server() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    // A stopped server: the key is there when it starts.
    let (ok, made, err) = keys_cli(
        &data,
        &[
            "create",
            "--name",
            "batch job",
            "--team",
            "etl",
            "--rpm",
            "50",
        ],
    );
    assert!(ok, "{err}");
    let first = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(made["key"]["team"], "etl");
    let server = keyed(&up, &["--data-dir", &data]);
    let c = Client::new(&server.base);
    assert_eq!(chat(&c, &first, "auto", "hi").await.0, 200);

    // A running one: a key made or revoked by the CLI counts within 1 s.
    let (ok, made, err) = keys_cli(&data, &["create", "--name", "second"]);
    assert!(ok, "{err}");
    let second = made["secret"].as_str().unwrap().to_owned();
    let second_id = made["key"]["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(1), || async {
            chat(&c, &second, "auto", "hi").await.0 == 200
        })
        .await,
        "a new key works within 1 s"
    );
    let (ok, _, err) = keys_cli(&data, &["revoke", &second_id]);
    assert!(ok, "{err}");
    assert!(
        eventually(Duration::from_secs(1), || async {
            chat(&c, &second, "auto", "hi").await.0 == 401
        })
        .await,
        "a revoked key is refused within 1 s"
    );
    let (ok, _, err) = keys_cli(&data, &["revoke", &second_id]);
    assert!(!ok && err.contains("no key"), "{err}");
    let (ok, list, _) = keys_cli(&data, &["list"]);
    assert!(ok);
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&second[4..]), "no secret listed");
    // The admin API sees the CLI's keys.
    let (_, list, _) = admin(&c, reqwest::Method::GET, "/api/keys", None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn secrets_appear_nowhere() {
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let failing = FakeUpstream::start_model(Behavior::Fail, "m").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data").display().to_string();
    let server = Server::start_with(
        &[
            "--data-dir",
            &data,
            "--admin-key",
            ADMIN,
            "--log-queries",
            "--retries",
            "0",
            "--upstream",
            &format!("balanced={}", up.base_url),
            "--upstream",
            &format!("powerful={}", failing.base_url),
        ],
        &[],
        Some(&log),
    );
    let c = Client::new(&server.base);
    let (secret, key) = create(&c, json!({"name": "s", "rpm": 2, "budgetUsd": 10})).await;
    let id = key["id"].as_str().unwrap().to_owned();
    let mut seen = String::new();
    for model in ["auto", "powerful", "balanced", "council"] {
        let (_, h, body) = chat(&c, &secret, model, "hello").await;
        seen.push_str(&format!("{h:?}{body}"));
    }
    let (_, h, body) = query(&c, &secret, json!({"query": "hello"})).await;
    seen.push_str(&format!("{h:?}{body}"));
    // A wrong secret's refusal does not echo it.
    let wrong = format!("{secret}x");
    let (_, h, body) = chat(&c, &wrong, "auto", "hello").await;
    seen.push_str(&format!("{h:?}{body}"));
    admin(
        &c,
        reqwest::Method::DELETE,
        &format!("/api/keys/{id}"),
        None,
    )
    .await;
    let (_, h, body) = chat(&c, &secret, "auto", "hello").await;
    seen.push_str(&format!("{h:?}{body}"));
    for path in [
        "/api/orchestrator/status",
        "/api/orchestrator/decisions",
        "/api/orchestrator/decisions?format=ndjson",
        "/api/orchestrator/decisions?format=csv",
        "/api/orchestrator/history?from=-1h",
        "/api/health",
        "/metrics",
        "/api/keys",
    ] {
        let res = c
            .http()
            .get(server.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        seen.push_str(&res.text().await.unwrap());
    }
    assert!(seen.contains(&id), "the key id is attributed");
    drop(c);
    server.terminate(Duration::from_secs(10));
    seen.push_str(&std::fs::read_to_string(&log).unwrap());
    let db = std::fs::read(dir.path().join("data/orchestrator.db")).unwrap();
    seen.push_str(&String::from_utf8_lossy(&db));
    let body = &secret[4..];
    assert!(!seen.contains(body), "the secret leaked");
    assert!(!seen.contains(ADMIN), "the admin key leaked");
}
