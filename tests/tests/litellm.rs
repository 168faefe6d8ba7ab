//! The router against a real OpenAI-compatible server: LiteLLM's proxy
//! (installed into .tools/venv by `scripts/install.sh --test`), offline, with
//! `mock_response` models, including its own fault models, behind a master
//! key.

use std::time::Duration;

use serde_json::{Value, json};
use tests::litellm::LiteLlm;
use tests::{Client, Server, eventually};

const KEY: &str = "sk-orch-test-master-key";

/// LiteLLM with a mock model that answers and three that fail as LiteLLM's
/// own fault models do, behind [`KEY`].
async fn start_litellm() -> LiteLlm {
    tests::litellm::start(
        "model_list:\n\
         - model_name: fast-model\n  litellm_params:\n    model: openai/fast-model\n    api_key: unused\n    mock_response: \"Hello from LiteLLM\"\n\
         - model_name: rate-limited\n  litellm_params:\n    model: openai/rate-limited\n    api_key: unused\n    mock_response: \"litellm.RateLimitError\"\n\
         - model_name: crashing\n  litellm_params:\n    model: openai/crashing\n    api_key: unused\n    mock_response: \"litellm.InternalServerError\"\n\
         - model_name: small-context\n  litellm_params:\n    model: openai/small-context\n    api_key: unused\n    mock_response: \"litellm.ContextWindowExceededError\"\n\
         router_settings:\n  num_retries: 0\n\
         litellm_settings:\n  num_retries: 0\n",
        KEY,
    )
    .await
}

/// `--upstream TIER:litellm=URL` for every tier, then `rest`.
fn every_tier_on(url: &str, rest: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for tier in ["fast", "balanced", "powerful"] {
        args.push("--upstream".to_owned());
        args.push(format!("{tier}:litellm={url}"));
    }
    args.extend(rest.iter().map(|a| (*a).to_owned()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn the_router_talks_to_a_real_litellm_proxy() {
    let proxy = start_litellm().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let url = &proxy.base_url;
    let keys = format!("fast={KEY},balanced={KEY},powerful={KEY}");
    let args = every_tier_on(
        url,
        &[
            "--model",
            "fast=fast-model",
            "--model",
            "balanced=rate-limited",
            "--model",
            "powerful=crashing",
            "--circuit-failures",
            "2",
        ],
    );
    let server = Server::start_with(
        &strs(&args),
        &[("ORCH_UPSTREAM_KEYS", &keys)],
        Some(log.path()),
    );
    let c = Client::new(&server.base);
    let hard = json!({"query": tests::COMPLEX_QUERY});

    // Answered, with the key from the environment, as LiteLLM reports it.
    let (code, r) = c
        .post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "simple"}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["answer"], "Hello from LiteLLM");
    assert_eq!(r["model"], "fast-model");
    assert_eq!(r["finishReason"], "stop");
    assert!(r["usage"]["completionTokens"].as_u64().unwrap() > 0, "{r}");

    // LiteLLM's rate-limit fault: a 429 stays a 429, with Retry-After and
    // LiteLLM's own message.
    let res = c
        .post_response("/api/query", r#"{"query": "What is Python?"}"#)
        .await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let r: Value = res.json().await.unwrap();
    assert!(
        r["error"].as_str().unwrap().contains("RateLimitError"),
        "{r}"
    );
    assert_eq!(r["upstream"]["attempts"], 2, "a 429 is retried once");

    // LiteLLM's internal-error fault: 502 with its message, not retried;
    // after two in a row the circuit opens and the next query fails fast.
    for _ in 0..2 {
        let (code, r) = c.post("/api/query", &hard).await;
        assert_eq!(code, 502, "{r}");
        assert_eq!(r["upstream"]["status"], 500);
        assert!(
            r["error"].as_str().unwrap().contains("InternalServerError"),
            "{r}"
        );
    }
    let (code, r) = c.post("/api/query", &hard).await;
    assert_eq!(code, 503, "{r}");
    assert!(r["error"].as_str().unwrap().contains("circuit open"), "{r}");

    let s = c.status().await;
    let t = &s["tierMetrics"];
    assert_eq!(t[0]["outcomes"]["ok"], 1);
    assert_eq!(t[1]["outcomes"]["http429"], 2);
    assert_eq!(t[1]["retries"], 1);
    assert_eq!(t[2]["outcomes"]["http5xx"], 2);
    assert_eq!(t[2]["upstreams"][0]["circuit"], "open");
    assert_eq!(t[2]["shortCircuited"], 1);
    assert_eq!(s["modelUtilization"][0]["model"], "fast-model");
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(!logged.contains(KEY), "the key is never logged");

    // Without --model, LiteLLM (which serves several) picks nothing: the
    // router warned at start, and LiteLLM's refusal reaches the client as
    // the 4xx it is. A wrong model name gets LiteLLM's message too.
    let log = tempfile::NamedTempFile::new().unwrap();
    let args = every_tier_on(
        url,
        &[
            "--model",
            "balanced=no-such-model",
            "--model",
            "powerful=small-context",
        ],
    );
    let server = Server::start_with(
        &strs(&args),
        &[("ORCH_UPSTREAM_KEYS", &keys)],
        Some(log.path()),
    );
    let c = Client::new(&server.base);
    let (code, r) = c
        .post("/api/query", &json!({"query": "What is Python?"}))
        .await;
    assert_eq!(code, 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("no-such-model"),
        "{r}"
    );
    let (code, r) = c
        .post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "simple"}),
        )
        .await;
    assert!((400..500).contains(&code), "{code} {r}");
    assert!(
        r["upstream"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{r}"
    );
    let warned = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(log.path())
            .unwrap()
            .contains("no --model for this upstream and it serves several")
    })
    .await;
    assert!(warned, "{}", std::fs::read_to_string(log.path()).unwrap());

    // A key LiteLLM does not know: refused, never a 200.
    let server = Server::start(&[
        "--upstream",
        &format!("fast={url}"),
        "--model",
        "fast=fast-model",
        "--upstream-key",
        "fast=sk-wrong-key",
    ]);
    let c = Client::new(&server.base);
    let (code, r) = c
        .post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "simple"}),
        )
        .await;
    assert_ne!(code, 200, "{r}");
    assert!(r["upstream"]["status"].is_u64(), "{r}");
}
