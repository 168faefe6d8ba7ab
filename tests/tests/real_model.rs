//! A real model behind the router: llama.cpp's OpenAI-compatible server
//! with Gemma 3 270M (a base model, installed by the README's test
//! command) answers the fast and the powerful tier and judges shadow
//! pairs. Its verdicts mean nothing; the plumbing is what is checked:
//! the users' answers are the model's own text, whole and streamed, and
//! every sampled pair is judged or counted as a failure, none lost.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{Client, eventually, metric, shadow_judging};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_model_answers_and_judges_and_nothing_is_lost() {
    let llama = tests::llama::start().await;
    let server = shadow_judging(
        &llama.base_url,
        &llama.base_url,
        &["--upstream-timeout", "120"],
    );
    let c = Client::new(&server.base);
    let questions = [
        "The capital of France is",
        "Water boils at",
        "One, two, three,",
    ];
    for (i, q) in questions.iter().enumerate() {
        let stream = i == 2;
        let res = c
            .http()
            .post(format!("{}/v1/chat/completions", c.base()))
            .json(&json!({"model": "fast", "stream": stream, "max_tokens": 12,
                          "messages": [{"role": "user", "content": q}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{q}");
        let body = res.text().await.unwrap();
        let text = if stream {
            assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
            body.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| {
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect::<String>()
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        // The model's own words, not a stand-in's.
        assert!(!text.trim().is_empty(), "{q}: {body}");
        assert!(!text.starts_with("echo:"), "{text}");
        eprintln!("{q:?} -> {text:?}");
    }
    // Every sample ends judged or counted: Q4's answer, then two judgings,
    // one request at a time on one model.
    let settled = eventually(Duration::from_secs(300), || async {
        let s = &c.status().await["quality"]["tiers"][0]["sinceStart"];
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        n("pairs") + n("judgeFailures") + n("q4Failures") + n("dropped") == 3
    })
    .await;
    let status = c.status().await;
    assert!(settled, "{}", status["quality"]);
    let q = &status["quality"]["tiers"][0];
    let s = &q["sinceStart"];
    assert_eq!(s["dropped"], 0, "{q}");
    assert_eq!(s["q4Failures"], 0, "the real Q4 answered each: {q}");
    assert_eq!(status["quality"]["inFlight"], 0);
    assert!(
        q["shadowTokens"].as_u64().unwrap() > 0,
        "real usage counted: {q}"
    );
    eprintln!(
        "real model: {} pairs ({} better, {} tie, {} worse), {} judge failures; shadow tokens {}",
        s["pairs"], s["better"], s["tie"], s["worse"], s["judgeFailures"], q["shadowTokens"]
    );
    // The shadow calls stay out of the decisions and the tiers' figures.
    assert_eq!(status["totalDecisions"], 3);
    assert_eq!(status["tierUtilization"][2]["totalProcessed"], 0);
    let text = c.text("/metrics").await;
    let judged: f64 = ["better", "tie", "worse"]
        .iter()
        .map(|v| {
            metric(
                &text,
                "orch_shadow_verdicts_total",
                &[("tier", "Q2"), ("verdict", v)],
            )
            .unwrap()
        })
        .sum();
    assert_eq!(judged, s["pairs"].as_f64().unwrap());
    // Each verdict is stored with its decision.
    let (_, page) = c.get("/api/orchestrator/decisions?limit=10").await;
    let with_verdict = page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["verdict"].is_string())
        .count();
    assert_eq!(with_verdict as u64, s["pairs"].as_u64().unwrap());
}
