//! Routing insight, black-box against the release binary: the `X-Router-*`
//! headers, the signals and token counts on decisions, the Q4 threshold and
//! the cost in the status, and `GET /api/orchestrator/calibrate`.

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Server};

fn signals_sum(d: &Value) -> f64 {
    d["signals"]
        .as_array()
        .unwrap_or_else(|| panic!("signals in {d}"))
        .iter()
        .map(|s| s["weight"].as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn routed_answers_name_their_decision_in_headers_and_carry_signals_and_tokens() {
    let up = FakeUpstream::start_model(Behavior::Ok, "qwen-7b").await;
    let server = Server::start(&["--upstream", &format!("balanced={}", up.base_url)]);
    let c = Client::new(&server.base);
    let query = "Compare two sorting algorithms for nearly sorted input";
    let res = c
        .post_response("/api/query", &json!({"query": query}).to_string())
        .await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    let body: Value = res.json().await.unwrap();
    let d = &body["decision"];
    assert_eq!(headers["x-router-tier"], d["tier"].as_str().unwrap());
    assert_eq!(headers["x-router-tier"], "Q3");
    assert_eq!(
        headers["x-router-complexity"],
        d["complexity"].as_str().unwrap()
    );
    assert_eq!(headers["x-router-decision-id"], d["id"].as_str().unwrap());
    let score: f64 = headers["x-router-score"].to_str().unwrap().parse().unwrap();
    assert_eq!(score, d["score"].as_f64().unwrap());
    // The signals sum to the score and name what was seen.
    assert!((signals_sum(d) - score).abs() < 1e-9, "{d}");
    let names: Vec<&str> = d["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"demanding verbs") && names.contains(&"technical vocabulary"),
        "{names:?}"
    );
    // The answer's tokens reach the decision and the tier's totals.
    let words = query.split_whitespace().count() as u64;
    assert_eq!(
        d["usage"],
        json!({"promptTokens": words, "completionTokens": words + 1})
    );
    let status = c.status().await;
    assert_eq!(status["recentDecisions"][0]["usage"], d["usage"]);
    assert_eq!(status["recentDecisions"][0]["signals"], d["signals"]);
    let q3 = &status["cost"]["tiers"][1];
    assert_eq!(
        (q3["tier"].as_str(), q3["promptTokens"].as_u64()),
        (Some("Q3"), Some(words))
    );
    assert_eq!(q3["completionTokens"], words + 1);
    assert_eq!(q3["decisionsWithUsage"], 1);
    // Without prices: token counts only.
    assert!(
        status["cost"].get("spentUsd").is_none(),
        "{}",
        status["cost"]
    );

    // A failed generation still names the recorded decision.
    let res = c
        .post_response(
            "/api/query",
            &json!({"query": "hi", "mode": "simple"}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 503, "no fast upstream");
    assert_eq!(res.headers()["x-router-tier"], "Q2");
    assert_eq!(res.headers()["x-router-score"], "0.0");
    assert_eq!(res.headers()["x-router-complexity"], "SIMPLE");
    let id = res.headers()["x-router-decision-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["decision"]["id"], id);
    assert!(
        body["decision"].get("signals").is_none(),
        "simple mode assesses nothing"
    );
    // Refused input names nothing: no decision was made.
    let res = c
        .post_response("/api/query", &json!({"query": "  "}).to_string())
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.headers().get("x-router-tier").is_none());
}

#[tokio::test]
async fn the_q4_threshold_is_configuration_and_is_shown() {
    // The heuristic scores COMPLEX_QUERY between 7 and 12.5.
    let server = Server::start(&["--q4-threshold", "12.5", "--scorer", "heuristic"]);
    let c = Client::new(&server.base);
    let status = c.status().await;
    let mut routing = status["routing"].clone();
    let expected = routing
        .as_object_mut()
        .unwrap()
        .remove("expectedQuality")
        .expect("the quality expected at the threshold");
    assert_eq!(
        routing,
        json!({"q4Threshold": 12.5, "moderateFrom": 3.0, "complexFrom": 7.0, "scorer": "heuristic"})
    );
    // At 12.5 the heuristic sends few labelled prompts to Q4.
    assert_eq!(expected["curve"][25]["threshold"], 12.5);
    assert_eq!(expected["q4Share"], expected["curve"][25]["q4Share"]);
    assert!(expected["q4Share"].as_f64().unwrap() < 0.05, "{expected}");
    // COMPLEX by class, but below the threshold: Q3.
    let (code, body) = c
        .post("/api/query", &json!({"query": tests::COMPLEX_QUERY}))
        .await;
    assert_eq!(code, 503, "{body}");
    let d = &body["decision"];
    let score = d["score"].as_f64().unwrap();
    assert!((7.0..12.5).contains(&score), "{score}");
    assert_eq!(
        (d["complexity"].as_str(), d["tier"].as_str()),
        (Some("COMPLEX"), Some("Q3"))
    );
    // The default: 7.
    let default = Server::start(&[]);
    let status = Client::new(&default.base).status().await;
    assert_eq!(status["routing"]["q4Threshold"], 7.0);
    let (_, body) = Client::new(&default.base)
        .post("/api/query", &json!({"query": tests::COMPLEX_QUERY}))
        .await;
    assert_eq!(body["decision"]["tier"], "Q4");
}

#[test]
fn bad_thresholds_and_prices_exit_with_a_message() {
    for args in [
        &["--q4-threshold", "15.01"][..],
        &["--q4-threshold=-0.5"],
        &["--q4-threshold", "seven"],
        &["--price", "fast=1"],
        &["--price", "fast=-1/2"],
        &["--price", "medium=1/2"],
        &["--price", "fast=1/2", "--price", "Q2=3/4"],
    ] {
        let out = std::process::Command::new(tests::server_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("threshold") || said.contains("price"),
            "{args:?}: {said}"
        );
    }
}

#[tokio::test]
async fn ingested_signals_and_tokens_are_validated_kept_and_priced() {
    let server = Server::start(&[
        "--price",
        "fast=0.2/0.8",
        "--price",
        "balanced=1/3",
        "--price",
        "powerful=10/30",
    ]);
    let c = Client::new(&server.base);
    let good = json!({
        "query": "route me", "tier": "powerful", "score": 8.5, "decisionTimeMs": 2.0,
        "signals": [{"name": "embedding distance", "weight": 6.0}, {"name": "keywords", "weight": 2.5}],
        "usage": {"promptTokens": 2000000, "completionTokens": 1000000},
    });
    let (code, d) = c.post("/api/orchestrator/decisions", &good).await;
    assert_eq!(code, 201, "{d}");
    assert_eq!(d["signals"], good["signals"]);
    assert_eq!(d["usage"], good["usage"]);
    let cheap = json!({
        "query": "hello", "tier": "fast", "score": 0.5, "decisionTimeMs": 0.1,
        "usage": {"promptTokens": 1000000, "completionTokens": 1000000},
    });
    assert_eq!(c.post("/api/orchestrator/decisions", &cheap).await.0, 201);
    // Signals need not explain the whole score; absent ones stay absent.
    let partial = json!({
        "query": "partly explained", "tier": "balanced", "score": 5.0, "decisionTimeMs": 0.1,
        "signals": [{"name": "length", "weight": 1.0}],
    });
    assert_eq!(c.post("/api/orchestrator/decisions", &partial).await.0, 201);

    let status = c.status().await;
    let cost = &status["cost"];
    // Q4: 2 M in at $10 + 1 M out at $30 = $50; Q2: $0.2 + $0.8 = $1.
    let spent = 50.0 + 1.0;
    let all_q4 = 50.0 + 10.0 + 30.0;
    assert_eq!(cost["currency"], "USD");
    assert!(
        (cost["spentUsd"].as_f64().unwrap() - spent).abs() < 1e-9,
        "{cost}"
    );
    assert!((cost["allOnQ4Usd"].as_f64().unwrap() - all_q4).abs() < 1e-9);
    assert!((cost["savedUsd"].as_f64().unwrap() - (all_q4 - spent)).abs() < 1e-9);
    let pct = (all_q4 - spent) / all_q4 * 100.0;
    assert!((cost["savingPercent"].as_f64().unwrap() - pct).abs() < 1e-9);
    assert_eq!(
        cost["tiers"][2]["price"],
        json!({"inputPerMillion": 10.0, "outputPerMillion": 30.0})
    );
    assert_eq!(cost["tiers"][1]["decisionsWithUsage"], 0);

    // Refused, with the field named, and nothing recorded.
    let before = status["totalDecisions"].clone();
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("s{i}"), "weight": 0.1}))
        .collect();
    for (bad, field) in [
        (json!({"signals": many}), "signals"),
        (
            json!({"signals": [{"name": "x".repeat(33), "weight": 1.0}]}),
            "signals[0].name",
        ),
        (
            json!({"signals": [{"name": " \u{200B}", "weight": 1.0}]}),
            "signals[0].name",
        ),
        (
            json!({"signals": [{"name": "ok", "weight": 1.0}, {"name": "", "weight": 1.0}]}),
            "signals[1].name",
        ),
        (json!({"signals": [{"name": "no weight"}]}), "weight"),
        (
            json!({"signals": [{"name": "text", "weight": "1"}]}),
            "weight",
        ),
        (
            json!({"usage": {"promptTokens": 1_000_000_001u64, "completionTokens": 0}}),
            "usage",
        ),
        (
            json!({"usage": {"promptTokens": -1, "completionTokens": 0}}),
            "promptTokens",
        ),
    ] {
        let mut body = good.clone();
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (code, err) = c.post("/api/orchestrator/decisions", &body).await;
        assert_eq!(code, 422, "{bad}: {err}");
        let msg = err["error"].as_str().unwrap();
        assert!(msg.contains(field), "{field} in {msg}");
    }
    // A weight beyond any float is not JSON we accept.
    let (code, err) = c
        .post_raw(
            "/api/orchestrator/decisions",
            r#"{"query":"q","tier":"Q2","score":1,"decisionTimeMs":1,"signals":[{"name":"n","weight":1e400}]}"#,
        )
        .await;
    assert!(code == 400 || code == 422, "{code} {err}");
    assert_eq!(c.status().await["totalDecisions"], before);
}

#[tokio::test]
async fn calibrate_answers_the_threshold_for_a_share_and_the_whole_curve() {
    let server = Server::start(&["--q4-threshold", "8"]);
    let c = Client::new(&server.base);
    // Empty: no calibration, a flat curve.
    let (code, cal) = c.get("/api/orchestrator/calibrate?q4_share=0.2").await;
    assert_eq!(code, 200, "{cal}");
    assert!(cal.get("calibration").is_none(), "{cal}");
    assert_eq!(cal["decisions"], 0);
    assert_eq!(cal["curve"].as_array().unwrap().len(), 31);
    assert!(
        cal["curve"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["q4Share"] == 0.0)
    );

    // Twenty two-stage decisions scoring 0.5, 1.0, ... 10.0, and five
    // simple ones that no threshold moves.
    for i in 1..=20 {
        let score = f64::from(i) * 0.5;
        let tier = if score >= 8.0 { "Q4" } else { "Q3" };
        let body = json!({"query": format!("q{i}"), "tier": tier, "score": score, "decisionTimeMs": 1, "mode": "two-stage"});
        assert_eq!(c.post("/api/orchestrator/decisions", &body).await.0, 201);
    }
    for i in 0..5 {
        let body = json!({"query": format!("s{i}"), "tier": "fast", "score": 0, "decisionTimeMs": 0, "mode": "simple"});
        assert_eq!(c.post("/api/orchestrator/decisions", &body).await.0, 201);
    }
    let q4_at = |t: f64| (1..=20).filter(|i| f64::from(*i) * 0.5 >= t).count();
    for share in [0.0f64, 0.2, 0.25, 0.5, 0.8, 1.0] {
        let (code, cal) = c
            .get(&format!("/api/orchestrator/calibrate?q4_share={share}"))
            .await;
        assert_eq!(code, 200, "{cal}");
        assert_eq!(
            (cal["decisions"].as_u64(), cal["scoreRouted"].as_u64()),
            (Some(25), Some(20))
        );
        assert_eq!(cal["askedQ4Share"], share);
        let t = cal["calibration"]["threshold"].as_f64().unwrap();
        let n = q4_at(t);
        assert_eq!(cal["calibration"]["q4Decisions"], n, "{cal}");
        assert_eq!(cal["calibration"]["q4Share"], n as f64 / 25.0);
        // Within one decision of the share asked for, as far as the 20
        // movable decisions reach.
        let target = (share * 25.0).min(20.0);
        assert!((n as f64 - target).abs() <= 1.0, "{share}: {n} at {t}");
    }
    let (_, cal) = c.get("/api/orchestrator/calibrate").await;
    assert!(cal.get("calibration").is_none() && cal.get("askedQ4Share").is_none());
    assert_eq!(cal["currentThreshold"], 8.0);
    assert_eq!(cal["currentQ4Share"], q4_at(8.0) as f64 / 25.0);
    let curve = cal["curve"].as_array().unwrap();
    for (i, point) in curve.iter().enumerate() {
        let t = i as f64 * 0.5;
        assert_eq!(point["threshold"], t);
        assert_eq!(point["q4Share"], q4_at(t) as f64 / 25.0, "{point}");
    }

    for bad in ["2", "-0.1", "x", "NaN", "inf", "0.2&q4_share=0.3", ""] {
        let (code, err) = c
            .get(&format!("/api/orchestrator/calibrate?q4_share={bad}"))
            .await;
        assert_eq!(code, 400, "{bad}: {err}");
        assert!(
            err["error"].as_str().unwrap().starts_with("q4_share"),
            "{err}"
        );
    }
}
