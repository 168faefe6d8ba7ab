//! Black-box tests of the OpenAI-compatible front door against the release
//! binary: whole and streamed answers read as OpenAI's own types
//! (`async-openai`, strict), the recorded decisions and headers, errors as
//! OpenAI error objects, streams that stall, die or are abandoned, council
//! and benchmark with a failing member, and the model assessor.

use std::time::Duration;

use async_openai::types::chat::{CreateChatCompletionResponse, CreateChatCompletionStreamResponse};
use async_openai::types::models::ListModelResponse;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Server, eventually, metric};

/// A server whose three tiers each have an upstream named by model.
struct Setup {
    server: Server,
    fast: FakeUpstream,
    balanced: FakeUpstream,
    powerful: FakeUpstream,
    c: Client,
}

async fn setup(extra: &[&str]) -> Setup {
    let fast = FakeUpstream::start_model(Behavior::Ok, "m-fast").await;
    let balanced = FakeUpstream::start_model(Behavior::Ok, "m-balanced").await;
    let powerful = FakeUpstream::start_model(Behavior::Ok, "m-powerful").await;
    let mut args = vec![
        "--in-memory".to_owned(),
        "--upstream".to_owned(),
        format!("fast={}", fast.base_url),
        "--upstream".to_owned(),
        format!("balanced={}", balanced.base_url),
        "--upstream".to_owned(),
        format!("powerful={}", powerful.base_url),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    Setup {
        server,
        fast,
        balanced,
        powerful,
        c,
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": text},
    ]})
}

async fn post(c: &Client, body: &Value) -> reqwest::Response {
    c.post_response("/v1/chat/completions", &body.to_string())
        .await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The decision with `id` among the status's newest 100.
async fn decision(c: &Client, id: &str) -> Value {
    let (_, status) = c.get("/api/orchestrator/status?limit=100").await;
    status["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("decision {id} not in {status}"))
}

/// Every data line of an SSE body, in order.
async fn data_lines(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_whole_answer_is_an_openai_completion_with_its_decision() {
    let s = setup(&[]).await;
    let r = post(&s.c, &chat("auto", "What is Python?")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-router-tier"), "Q3");
    assert_eq!(header(&r, "x-router-complexity"), "SIMPLE");
    let id = header(&r, "x-router-decision-id").to_owned();
    let score: f64 = header(&r, "x-router-score").parse().unwrap();
    let body: Value = r.json().await.unwrap();
    let typed: CreateChatCompletionResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(typed.object, "chat.completion");
    assert_eq!(typed.model, "m-balanced", "the model that answered");
    assert_eq!(
        typed.choices[0].message.content.as_deref(),
        Some("echo: What is Python?")
    );
    assert_eq!(typed.usage.unwrap().completion_tokens, 4);
    // The upstream got the conversation, with its own model, not ours.
    let sent = s.balanced.last_body();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
    assert!(sent.get("model").is_none(), "{sent}");
    assert_eq!(sent["stream"], false);
    let d = decision(&s.c, &id).await;
    assert_eq!(
        (d["mode"].as_str(), d["tier"].as_str()),
        (Some("two-stage"), Some("Q3"))
    );
    assert_eq!(d["score"].as_f64(), Some(score));
    assert_eq!(d["query"], "What is Python?");
    assert_eq!(d["usage"]["completionTokens"], 4);
    assert!(d["signals"].is_array());

    // A tier by either name: recorded like simple mode, on that tier.
    for (model, tier, answered) in [("powerful", "Q4", "m-powerful"), ("Q2", "Q2", "m-fast")] {
        let r = post(&s.c, &chat(model, "Design a system")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-router-tier"), tier);
        let id = header(&r, "x-router-decision-id").to_owned();
        let body: CreateChatCompletionResponse = r.json().await.unwrap();
        assert_eq!(body.model, answered);
        let d = decision(&s.c, &id).await;
        assert_eq!(
            (d["mode"].as_str(), d["score"].as_f64()),
            (Some("simple"), Some(0.0))
        );
        assert_eq!(d["tier"], tier);
    }
    let status = s.c.status().await;
    assert_eq!(status["totalDecisions"], 3);
}

#[tokio::test]
async fn models_are_listed_as_openai_lists_them() {
    let s = setup(&[]).await;
    let (code, body) = s.c.get("/v1/models").await;
    assert_eq!(code, 200);
    let list: ListModelResponse = serde_json::from_value(body).unwrap();
    let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "auto",
            "fast",
            "balanced",
            "powerful",
            "Q2",
            "Q3",
            "Q4",
            "council",
            "benchmark"
        ]
    );
    assert!(list.data.iter().all(|m| m.object == "model"));
    let (code, one) = s.c.get("/v1/models/council").await;
    assert_eq!((code, one["id"].as_str()), (200, Some("council")));
    let (code, err) = s.c.get("/v1/models/gpt-4").await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
}

#[tokio::test]
async fn a_stream_is_relayed_chunk_by_chunk_with_usage_when_asked() {
    let s = setup(&[]).await;
    s.balanced.set(Behavior::Paced(Duration::from_millis(30)));
    let mut body = chat("auto", "What is Python?");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&s.c, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let id = header(&r, "x-router-decision-id").to_owned();
    // Chunks come as they are written: the first word reaches the client
    // before the mock even sends the last (its chunks carry their send
    // times, `sent`, in µs).
    let mut events = r.bytes_stream();
    let mut rest = Vec::new();
    let mut first_word_at = None;
    while let Some(b) = events.next().await {
        rest.extend_from_slice(&b.unwrap());
        if first_word_at.is_none() && String::from_utf8_lossy(&rest).contains("\"sent\"") {
            first_word_at = Some(tests::unix_micros());
        }
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.starts_with("data: "));
    let last_sent = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| c["sent"].as_u64())
        .max()
        .expect("the mock's chunks say when they were sent");
    let first_word_at = first_word_at.expect("a word arrived");
    assert!(
        first_word_at < last_sent,
        "the first word arrived at {first_word_at} µs, after the last was sent at {last_sent} µs"
    );
    let lines: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*lines.last().unwrap(), "[DONE]");
    let chunks: Vec<CreateChatCompletionStreamResponse> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let content: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(content, "echo: What is Python?");
    assert!(
        chunks
            .iter()
            .all(|c| c.object == "chat.completion.chunk" && c.model == "m-balanced")
    );
    let usage = chunks.last().unwrap();
    assert!(usage.choices.is_empty());
    assert_eq!(usage.usage.as_ref().unwrap().completion_tokens, 4);
    // The decision learnt its tokens; the tier measured its first token.
    let d = decision(&s.c, &id).await;
    assert_eq!(d["usage"]["completionTokens"], 4);
    let status = s.c.status().await;
    let q3 = &status["tierMetrics"][1];
    assert_eq!(q3["ttftMs"]["samples"], 1);
    assert!(q3["ttftMs"]["p50"].as_f64().unwrap() >= 25.0, "{q3}");
    assert_eq!(q3["outcomes"]["ok"], 1);
    assert_eq!(status["tierUtilization"][1]["activeRequests"], 0);
    let m = s.c.text("/metrics").await;
    let name = s
        .balanced
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    assert_eq!(
        metric(
            &m,
            "orch_upstream_ttft_seconds_count",
            &[("tier", "Q3"), ("upstream", name)]
        ),
        Some(1.0)
    );

    // Without include_usage, no usage chunk and no usage field.
    let mut body = chat("auto", "What is Python?");
    body["stream"] = json!(true);
    let lines = data_lines(post(&s.c, &body).await).await;
    for l in &lines[..lines.len() - 1] {
        let c: Value = serde_json::from_str(l).unwrap();
        assert!(!c["choices"].as_array().unwrap().is_empty(), "{l}");
        assert!(c.get("usage").is_none(), "{l}");
    }
    // The upstream was asked for usage all the same, to count tokens.
    assert_eq!(
        s.balanced.last_body()["stream_options"]["include_usage"],
        true
    );
    drop(s.fast);
    drop(s.powerful);
    drop(s.server);
}

#[tokio::test]
async fn a_stream_that_stalls_or_dies_ends_in_an_error_event_and_releases_counts() {
    let s = setup(&["--upstream-timeout", "1", "--retries", "0"]).await;
    for (behavior, outcome) in [
        (Behavior::StallAfter(2), "timeout"),
        (Behavior::DieAfter(2), "badReply"),
    ] {
        s.fast.set(behavior);
        let mut body = chat("fast", "hello there friend");
        body["stream"] = json!(true);
        let r = post(&s.c, &body).await;
        assert_eq!(r.status(), 200);
        let lines = data_lines(r).await;
        let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["error"]["type"], "upstream_error", "{lines:?}");
        assert!(!lines.iter().any(|l| l == "[DONE]"));
        // The chunks before the failure were relayed.
        let relayed = lines[..lines.len() - 1].len();
        assert_eq!(relayed, 3, "{lines:?}");
        let status = s.c.status().await;
        assert_eq!(status["tierUtilization"][0]["activeRequests"], 0);
        assert_eq!(status["tierMetrics"][0]["inFlight"], 0);
        assert_eq!(
            status["tierMetrics"][0]["outcomes"][outcome], 1,
            "{}",
            status["tierMetrics"][0]
        );
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_and_releases_the_tier() {
    let s = setup(&[]).await;
    s.fast.set(Behavior::Paced(Duration::from_millis(300)));
    let mut body = chat("fast", "one two three four five six seven eight");
    body["stream"] = json!(true);
    let r = post(&s.c, &body).await;
    let mut events = r.bytes_stream();
    events.next().await.unwrap().unwrap();
    let status = s.c.status().await;
    assert_eq!(status["tierUtilization"][0]["activeRequests"], 1);
    drop(events);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let st = s.c.status().await;
            st["tierUtilization"][0]["activeRequests"] == 0
                && st["tierMetrics"][0]["outcomes"]["cancelled"] == 1
        })
        .await,
        "{}",
        s.c.status().await["tierMetrics"][0]
    );
    // The upstream's stream was closed too: its writer found nobody
    // reading long before its last word (eight words, 300 ms apart).
    let cut = eventually(Duration::from_millis(1_200), || async {
        s.fast.streams_cut() == 1
    })
    .await;
    assert!(cut, "the upstream's stream was not closed early");
    assert_eq!(s.fast.hits(), 1);
}

#[tokio::test]
async fn errors_are_openai_error_objects_and_bad_input_records_nothing() {
    let s = setup(&["--api-key", "k-one", "--api-key", "k-two"]).await;
    let http = reqwest::Client::new();
    let send = |key: Option<&str>, body: Value| {
        let mut req = http
            .post(s.server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    let r = send(None, chat("auto", "hi")).await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let r = send(Some("wrong"), chat("auto", "hi")).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(s.server.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(s.server.url("/api/query"))
        .header("content-type", "application/json")
        .body(r#"{"query": "hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for (body, code, param) in [
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            400,
            "model",
        ),
        (chat("gpt-7", "hi"), 404, "model"),
        (json!({"model": "auto", "messages": []}), 400, "messages"),
        (chat("auto", "   "), 400, "messages"),
        (
            json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}),
            400,
            "max_tokens",
        ),
    ] {
        let r = send(Some("k-two"), body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(e["error"]["type"].is_string());
    }
    let status = s.c.status().await;
    assert_eq!(status["totalDecisions"], 0, "nothing recorded");
    // An upstream's 4xx stays its 4xx; its decision stays recorded.
    s.fast.set(Behavior::Status(400, None));
    let r = send(Some("k-one"), chat("fast", "hi")).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "x-router-tier"), "Q2");
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fake upstream says 400")
    );
    s.fast.set(Behavior::Status(429, Some("1")));
    let r = send(Some("k-one"), chat("fast", "hi")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "1");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(s.c.status().await["totalDecisions"], 2);
    drop(s.balanced);
    drop(s.powerful);
}

#[tokio::test]
async fn a_tier_without_upstream_is_a_503_and_its_decision_stays() {
    let server = Server::start(&["--in-memory"]);
    let c = Client::new(&server.base);
    let r = c
        .post_response("/v1/chat/completions", &chat("fast", "hi").to_string())
        .await;
    assert_eq!(r.status(), 503);
    let id = header(&r, "x-router-decision-id").to_owned();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "no_upstream");
    decision(&c, &id).await;
}

/// Members by tier label.
fn members(group: &Value) -> Vec<Value> {
    group["members"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_council_with_a_failing_member_still_answers_and_records_the_group() {
    let s = setup(&["--retries", "0"]).await;
    s.balanced.set(Behavior::Fail);
    s.powerful
        .set(Behavior::Says("Python is a language.\nAGREED: Q2".into()));
    let (code, g) =
        s.c.post(
            "/api/query",
            &json!({"query": "What is Python?", "mode": "council"}),
        )
        .await;
    assert_eq!(code, 200, "{g}");
    assert_eq!(g["mode"], "council");
    let ms = members(&g);
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[0]["answer"], "echo: What is Python?");
    assert_eq!(ms[1]["errorStatus"], 502);
    assert!(ms[1]["error"].as_str().unwrap().contains("HTTP 500"));
    assert!(ms[2]["answer"].is_string());
    assert_eq!(g["answer"], "Python is a language.");
    assert_eq!(g["model"], "m-powerful");
    let a = &g["analysis"];
    assert_eq!(
        (a["agreedWith"].as_str(), a["basis"].as_str()),
        (Some("Q2"), Some("stated"))
    );
    assert_eq!(
        (a["membersAnswered"].as_u64(), a["membersFailed"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(a["moderationMs"].as_f64().unwrap() >= 0.0);
    // The moderator read the question and the answers that came.
    let prompt = s.powerful.last_body()["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.contains("What is Python?") && prompt.contains("member Q2"));
    assert!(!prompt.contains("member Q3"), "{prompt}");
    // Four decisions, one group; the moderator's carries the analysis.
    let status = s.c.status().await;
    assert_eq!(status["totalDecisions"], 4);
    assert_eq!(status["modeMix"]["council"], 4);
    let group = g["groupId"].as_str().unwrap();
    let ds: Vec<&Value> = status["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["groupId"] == group)
        .collect();
    assert_eq!(ds.len(), 4);
    assert!(ds.iter().all(|d| d["mode"] == "council"));
    let moderator = ds.iter().find(|d| d.get("analysis").is_some()).unwrap();
    assert_eq!(moderator["tier"], "Q4");
    assert_eq!(moderator["analysis"]["agreedWith"], "Q2");
    // The failure is in the counts.
    assert_eq!(status["tierMetrics"][1]["outcomes"]["http5xx"], 1);
    assert_eq!(status["tierMetrics"][2]["outcomes"]["ok"], 2);

    // The same through /v1: the synthesis is the answer, the group beside it.
    let r = post(&s.c, &chat("council", "What is Python?")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-router-tier"), "Q4");
    let group = header(&r, "x-router-group-id").to_owned();
    let body: Value = r.json().await.unwrap();
    let typed: CreateChatCompletionResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(
        typed.choices[0].message.content.as_deref(),
        Some("Python is a language.")
    );
    assert_eq!(body["council"]["groupId"], group);
    assert_eq!(body["council"]["members"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_council_without_answers_is_a_502_and_members_are_configurable() {
    let s = setup(&[
        "--retries",
        "0",
        "--council",
        "fast,balanced",
        "--moderator",
        "balanced",
    ])
    .await;
    s.fast.set(Behavior::Fail);
    s.balanced.set(Behavior::Fail);
    let r = post(&s.c, &chat("council", "hi")).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no final answer")
    );
    let status = s.c.status().await;
    // Two members recorded; no moderator call without any answer.
    assert_eq!(status["totalDecisions"], 2);
    assert_eq!(s.powerful.hits(), 0);
    // With answers, the configured moderator (balanced) writes the final
    // one: its upstream is called once more, with the moderator's prompt,
    // and the powerful tier never.
    s.fast.set(Behavior::Ok);
    s.balanced
        .set(Behavior::Says("Both say hi.\nAGREED: Q2".into()));
    let before = s.balanced.hits();
    let r = post(&s.c, &chat("council", "hi")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-router-tier"), "Q3", "the moderator's tier");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Both say hi.");
    assert_eq!(body["council"]["moderator"]["tier"], "Q3");
    assert_eq!(s.balanced.hits(), before + 2, "member, then moderator");
    let prompt = s.balanced.last_body()["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("member Q2") && prompt.contains("AGREED"),
        "{prompt}"
    );
    assert_eq!(s.powerful.hits(), 0);
}

#[tokio::test]
async fn a_benchmark_asks_every_tier_at_once_and_lists_each() {
    let s = setup(&["--retries", "0"]).await;
    s.fast.set(Behavior::Fail);
    s.powerful.set(Behavior::Slow(Duration::from_millis(200)));
    let (code, g) =
        s.c.post(
            "/api/query",
            &json!({"query": "Compare B-trees and LSM-trees", "mode": "benchmark"}),
        )
        .await;
    assert_eq!(code, 200, "{g}");
    let ms = members(&g);
    assert_eq!(
        ms.iter()
            .map(|m| m["tier"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["Q2", "Q3", "Q4"]
    );
    assert!(ms[0]["error"].is_string());
    assert_eq!(ms[1]["model"], "m-balanced");
    assert!(ms[2]["latencyMs"].as_f64().unwrap() >= 200.0);
    assert!(ms[1]["latencyMs"].as_f64().unwrap() < 200.0);
    assert_eq!(ms[2]["usage"]["completionTokens"], 5);
    assert!(g.get("moderator").is_none());
    let status = s.c.status().await;
    assert_eq!(status["totalDecisions"], 3);
    assert_eq!(status["modeMix"]["benchmark"], 3);
    assert_eq!(status["tierMetrics"][0]["outcomes"]["http5xx"], 1);

    // In parallel: with every tier 300 ms slow, the whole takes well under
    // the sum of the members' latencies.
    for up in [&s.fast, &s.balanced, &s.powerful] {
        up.set(Behavior::Slow(Duration::from_millis(300)));
    }
    let started = std::time::Instant::now();
    let (code, g) =
        s.c.post(
            "/api/query",
            &json!({"query": "Compare B-trees and LSM-trees", "mode": "benchmark"}),
        )
        .await;
    let wall = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(code, 200, "{g}");
    let sum: f64 = members(&g)
        .iter()
        .map(|m| m["latencyMs"].as_f64().unwrap())
        .sum();
    assert!(sum >= 900.0, "{sum}");
    assert!(
        wall < sum * 2.0 / 3.0,
        "{wall} ms for members taking {sum} ms in all"
    );
    s.fast.set(Behavior::Fail);
    s.balanced.set(Behavior::Ok);
    s.powerful.set(Behavior::Ok);

    // Through /v1 (streamed): one choice per tier that answered.
    let mut body = chat("benchmark", "Compare B-trees and LSM-trees");
    body["stream"] = json!(true);
    let r = post(&s.c, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-router-tier"), "Q2,Q3,Q4");
    assert_eq!(header(&r, "x-router-decision-id").split(',').count(), 3);
    let lines = data_lines(r).await;
    let chunks: Vec<CreateChatCompletionStreamResponse> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let indexes: std::collections::BTreeSet<u32> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .map(|c| c.index)
        .collect();
    assert_eq!(indexes.into_iter().collect::<Vec<_>>(), [0, 1]);
}

#[tokio::test]
async fn the_model_assessor_scores_falls_back_and_counts_why() {
    let s = setup(&["--assessor", "model", "--assessor-timeout", "0.5"]).await;
    let complex = "Design a distributed rate limiter, prove it is fair, then implement it in Rust";
    // A number: the score, and where it routes.
    s.fast.set(Behavior::Says("9".into()));
    let (code, body) =
        s.c.post("/api/query", &json!({"query": "What is Python?"}))
            .await;
    assert_eq!(code, 200, "{body}");
    let d = &body["decision"];
    assert_eq!(
        (d["score"].as_f64(), d["tier"].as_str()),
        (Some(9.0), Some("Q4"))
    );
    assert_eq!(
        d["signals"],
        json!([{"name": "model assessment", "weight": 9.0}])
    );
    let prompt = s.fast.last_body()["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.starts_with("Rate how complex") && prompt.ends_with("What is Python?"));
    // Garbage: the local scorer (`--scorer`, learned by default), counted.
    s.fast.set(Behavior::Says("quite hard, maybe 9".into()));
    let (_, body) = s.c.post("/api/query", &json!({"query": complex})).await;
    assert!(body["decision"]["signals"][0]["name"] == "base", "{body}");
    // Nothing within the timeout: the heuristic, after the wait.
    s.fast.set(Behavior::Slow(Duration::from_secs(3)));
    let (_, body) = s.c.post("/api/query", &json!({"query": complex})).await;
    let d = &body["decision"];
    assert!(d["decisionTimeMs"].as_f64().unwrap() >= 500.0, "{d}");
    assert!(d["decisionTimeMs"].as_f64().unwrap() < 2_500.0, "{d}");
    assert!(d["score"].as_f64().unwrap() >= 7.0);
    // The /v1 `auto` model uses the same assessor.
    s.fast.set(Behavior::Says("2.5".into()));
    let r = post(&s.c, &chat("auto", complex)).await;
    assert_eq!(header(&r, "x-router-score"), "2.5");
    assert_eq!(header(&r, "x-router-tier"), "Q3");
    let status = s.c.status().await;
    let a = &status["assessor"];
    assert_eq!(a["kind"], "model");
    assert_eq!(a["modelCalls"], 4);
    assert_eq!(
        (
            a["fallbacks"]["badAnswer"].as_u64(),
            a["fallbacks"]["timeout"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let m = s.c.text("/metrics").await;
    assert_eq!(
        metric(
            &m,
            "orch_assessor_fallbacks_total",
            &[("reason", "timeout")]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "orch_assessor_calls_total", &[]), Some(4.0));
    drop(s.balanced);
    drop(s.powerful);
}

/// The model assessor's calls are admitted like any call of the fast tier
/// (`--max-inflight fast=1`: one at a time, the others fall back at once,
/// counted as `busy`), kept out of the tier's own figures, and priced at
/// Q2 into the spend; a failing call falls back as `error`.
#[tokio::test]
async fn the_model_assessor_is_admitted_counted_apart_and_priced() {
    let s = setup(&[
        "--assessor",
        "model",
        "--max-inflight",
        "fast=1",
        "--price",
        "fast=1000000/1000000",
        "--price",
        "balanced=1/1",
        "--price",
        "powerful=10/10",
    ])
    .await;
    s.fast.set(Behavior::Slow(Duration::from_millis(800)));
    let query = |i: usize| {
        let c = s.c.clone();
        async move {
            c.post(
                "/api/query",
                &json!({"query": format!("What is Python, take {i}?")}),
            )
            .await
        }
    };
    let answers = futures_util::future::join_all((0..4).map(query)).await;
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
    }
    assert_eq!(
        s.fast.hits(),
        1,
        "one assessor call at a time, as --max-inflight fast=1 says"
    );
    let status = s.c.status().await;
    let a = &status["assessor"];
    assert_eq!(a["modelCalls"], 4);
    assert_eq!(a["fallbacks"]["busy"], 3, "{a}");
    assert_eq!(a["fallbacks"]["badAnswer"], 1, "{a}");
    let q2 = &status["tierMetrics"][0];
    assert_eq!(
        q2["requests"], 0,
        "assessor calls are not Q2 requests: {q2}"
    );
    assert_eq!(
        (q2["tokensIn"].as_u64(), q2["tokensOut"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(status["tierUtilization"][0]["totalProcessed"], 0);
    // Its tokens (one per word of its prompt; one more out) at Q2's price
    // (1 USD a token), in the spend.
    let cost = &status["cost"];
    let (tin, tout) = (
        cost["assessor"]["promptTokens"].as_u64().unwrap(),
        cost["assessor"]["completionTokens"].as_u64().unwrap(),
    );
    assert!(tin > 5 && tout == tin + 1, "{cost}");
    assert_eq!(
        (a["promptTokens"].as_u64(), a["completionTokens"].as_u64()),
        (Some(tin), Some(tout)),
        "the assessor's own figures"
    );
    let assessor_usd = cost["assessor"]["spentUsd"].as_f64().unwrap();
    assert!((assessor_usd - (tin + tout) as f64).abs() < 1e-6, "{cost}");
    let tiers_usd: f64 = cost["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["spentUsd"].as_f64())
        .sum();
    assert!((cost["spentUsd"].as_f64().unwrap() - tiers_usd - assessor_usd).abs() < 1e-9);
    let m = s.c.text("/metrics").await;
    assert_eq!(
        metric(&m, "orch_assessor_tokens_total", &[("direction", "in")]),
        Some(tin as f64)
    );
    assert_eq!(
        metric(&m, "orch_assessor_fallbacks_total", &[("reason", "busy")]),
        Some(3.0)
    );
    // A failing call: the local scorer, counted as `error`.
    s.fast.set(Behavior::Fail);
    let (code, body) =
        s.c.post("/api/query", &json!({"query": "What is Rust?"}))
            .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["decision"]["signals"][0]["name"], "base", "{body}");
    let status = s.c.status().await;
    assert_eq!(status["assessor"]["fallbacks"]["error"], 1);
}

/// What real upstreams answer within OpenAI's format is relayed as OpenAI
/// does: a refusal, empty content cut by length, a legacy function call,
/// every choice of `n: 2`; each read by OpenAI's own types.
#[tokio::test]
async fn every_openai_answer_shape_is_relayed() {
    let s = setup(&[]).await;
    let ask = |b: Behavior| {
        s.balanced.set(b);
        let c = s.c.clone();
        async move { post(&c, &chat("balanced", "What is Python?")).await }
    };
    let r = ask(Behavior::Refusal).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let typed: CreateChatCompletionResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(
        typed.choices[0].message.refusal.as_deref(),
        Some("I can't help with that.")
    );
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
    let r = ask(Behavior::EmptyLength).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let r = ask(Behavior::FunctionCall).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["function_call"]["name"],
        "lookup"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "function_call");
    let r = ask(Behavior::TwoChoices).await;
    assert_eq!(r.status(), 200);
    let typed: CreateChatCompletionResponse = r.json().await.unwrap();
    let texts: Vec<_> = typed
        .choices
        .iter()
        .map(|c| c.message.content.clone().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
}

/// An answer with all a strict client needs comes through as the upstream
/// wrote it, its order and its extra fields kept; one without them is
/// filled in.
#[tokio::test]
async fn a_complete_answer_is_relayed_as_written_and_another_filled_in() {
    let s = setup(&[]).await;
    let complete = r#"{"model":"m-own","object":"chat.completion","id":"chatcmpl-x","created":7,"system_fingerprint":"fp_1","choices":[{"finish_reason":"stop","message":{"content":"hi","role":"assistant"},"logprobs":null,"index":0}],"usage":{"total_tokens":3,"prompt_tokens":2,"completion_tokens":1}}"#;
    s.balanced.set(Behavior::Raw(complete.to_owned()));
    let r = post(&s.c, &chat("balanced", "What is Python?")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(header(&r, "x-router-tier"), "Q3");
    assert_eq!(r.text().await.unwrap(), complete);

    // No id, created or role, the model's name on two lines: filled in
    // and cleaned, the rest kept.
    let partial = r#"{"model":"m\nown","object":"chat.completion","system_fingerprint":"fp_1","choices":[{"finish_reason":"stop","message":{"content":"hi"},"index":0}]}"#;
    s.balanced.set(Behavior::Raw(partial.to_owned()));
    let r = post(&s.c, &chat("balanced", "What is Python?")).await;
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-router-decision-id").to_owned();
    let body: Value = r.json().await.unwrap();
    let typed: CreateChatCompletionResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(typed.id, format!("chatcmpl-{id}"));
    assert_eq!(typed.model, "m own");
    assert!(typed.created > 0);
    assert_eq!(body["system_fingerprint"], "fp_1");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(decision(&s.c, &id).await["tier"], "Q3");
}

/// A user message of an image alone is routed (on no text: the lowest
/// score), recorded by its parts' kinds, and sent upstream as it came.
#[tokio::test]
async fn a_message_of_only_an_image_is_routed() {
    let s = setup(&[]).await;
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]});
    let r = post(&s.c, &body).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let id = header(&r, "x-router-decision-id").to_owned();
    let d = decision(&s.c, &id).await;
    assert_eq!(d["query"], "[image_url]");
    assert_eq!(d["score"], 0.0);
    let sent = s.balanced.last_body();
    assert_eq!(sent["messages"][0]["content"][0]["type"], "image_url");
    // Text beside the image is what is scored and recorded.
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]});
    let r = post(&s.c, &body).await;
    let id = header(&r, "x-router-decision-id").to_owned();
    assert_eq!(
        decision(&s.c, &id).await["query"],
        "What is in this picture?"
    );
}

/// `benchmark` with tools: each member's tool calls and finish reason are
/// kept, whole and streamed.
#[tokio::test]
async fn benchmark_keeps_each_members_tool_calls() {
    let s = setup(&[]).await;
    for up in [&s.fast, &s.balanced, &s.powerful] {
        up.set(Behavior::ToolCalls);
    }
    let mut body = chat("benchmark", "Look up the weather");
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let r = post(&s.c, &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let typed: CreateChatCompletionResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(typed.choices.len(), 3);
    for c in &v["choices"].as_array().unwrap()[..] {
        assert_eq!(c["finish_reason"], "tool_calls", "{c}");
        assert_eq!(
            c["message"]["tool_calls"][0]["function"]["name"], "lookup",
            "{c}"
        );
        assert_eq!(c["message"]["content"], Value::Null, "{c}");
    }
    body["stream"] = json!(true);
    let r = post(&s.c, &body).await;
    let chunks: Vec<Value> = data_lines(r)
        .await
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect();
    for c in &chunks {
        let _: CreateChatCompletionStreamResponse = serde_json::from_value(c.clone()).unwrap();
    }
    let finishes = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"] == "tool_calls")
        .count();
    let calls = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "lookup")
        .count();
    assert_eq!((finishes, calls), (3, 3));
}

/// An upstream whose URL is wrong (404) is a failing upstream: 502, and
/// its circuit counts the failures until it opens.
#[tokio::test]
async fn a_wrong_upstream_url_is_a_failing_upstream() {
    let fake = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let wrong = format!("{}/not-here", fake.base_url);
    let server = Server::start(&[
        "--in-memory",
        "--upstream",
        &format!("balanced={wrong}"),
        "--circuit-failures",
        "2",
    ]);
    let c = Client::new(&server.base);
    for _ in 0..2 {
        let r = post(&c, &chat("balanced", "What is Python?")).await;
        assert_eq!(r.status(), 502);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "upstream_failed", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("404"),
            "{body}"
        );
    }
    let status = c.status().await;
    let up = &status["tierMetrics"][1]["upstreams"][0];
    assert_eq!(up["circuit"], "open", "{up}");
    let r = post(&c, &chat("balanced", "What is Python?")).await;
    assert_eq!(r.status(), 503, "the open circuit refuses at once");
}

/// `include_usage` promises a usage chunk before `[DONE]`: sent even when
/// the upstream sends none.
#[tokio::test]
async fn include_usage_always_gets_a_usage_chunk() {
    let s = setup(&[]).await;
    s.balanced.set(Behavior::NoStreamUsage);
    let mut body = chat("balanced", "What is Python?");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&s.c, &body).await;
    let lines = data_lines(r).await;
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&lines[lines.len() - 2]).unwrap();
    let typed: CreateChatCompletionStreamResponse = serde_json::from_value(last.clone()).unwrap();
    assert!(typed.choices.is_empty(), "{last}");
    assert!(last.as_object().unwrap().contains_key("usage"), "{last}");
    // Without include_usage: none.
    let mut body = chat("balanced", "What is Python?");
    body["stream"] = json!(true);
    let lines = data_lines(post(&s.c, &body).await).await;
    assert!(lines.iter().all(|l| !l.contains("\"usage\"")), "{lines:?}");
}

/// Everything under `/v1` answers OpenAI's error object, whatever refused.
#[tokio::test]
async fn every_v1_error_is_an_openai_error_object() {
    let s = setup(&["--api-key", "sk-test-key"]).await;
    let http = s.c.http();
    let key = ("authorization", "Bearer sk-test-key");
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            http.get(s.server.url("/v1/chat/completions"))
                .header(key.0, key.1),
            405,
        ),
        (
            http.delete(s.server.url("/v1/models")).header(key.0, key.1),
            405,
        ),
        (
            http.get(s.server.url("/v1/nothing")).header(key.0, key.1),
            404,
        ),
        (http.post(s.server.url("/v1/chat/completions")), 401),
        (
            http.post(s.server.url("/v1/chat/completions"))
                .header(key.0, key.1)
                .header("sec-fetch-site", "cross-site")
                .header("origin", "https://evil.example")
                .body(chat("auto", "hi").to_string()),
            403,
        ),
    ];
    let mut answers = Vec::new();
    for (req, want) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want);
        answers.push((want, r.json::<Value>().await.unwrap()));
    }
    for (want, body) in answers {
        let e = &body["error"];
        assert!(
            e["message"].is_string() && e["type"].is_string(),
            "{want}: {body}"
        );
        assert!(
            e.as_object().unwrap().contains_key("param"),
            "{want}: {body}"
        );
        assert!(
            e.as_object().unwrap().contains_key("code"),
            "{want}: {body}"
        );
    }
}

/// An upstream's error text reaches the client, the logs and the status
/// without its control characters, capped.
#[tokio::test]
async fn upstream_error_text_loses_its_control_characters() {
    let s = setup(&[]).await;
    s.balanced.set(Behavior::ErrorText(
        400,
        "\u{1b}[31mboom\u{1b}[0m ".repeat(10_000),
    ));
    let r = post(&s.c, &chat("balanced", "What is Python?")).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(
        !message.contains("[31m") && !text.contains("\\u001b"),
        "{message:?}"
    );
    assert!(message.contains("boom") && message.chars().count() < 1_000);
    let status = s.c.status().await.to_string();
    assert!(!status.contains("\\u001b") && !status.contains("[31m"));
}
