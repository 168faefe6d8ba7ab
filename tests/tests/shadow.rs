//! Routing quality, live, black-box against the release binary: shadow
//! judging with a Q4 and a judge whose verdicts are known in advance (the
//! counts, the as-good share and its Wilson interval in the status,
//! `/metrics`, the store, its export and the history equal the expected
//! values exactly); the implicit signals; a judge that hangs and a Q4 that
//! fails leave the users' answers and the memory alone.

use std::time::Duration;

use serde_json::{Value, json};
use tests::bench::rss_kib;
use tests::{Behavior, Client, FakeUpstream, Server, eventually, metric, shadow_judging};

/// $1/64 a token at the powerful tier: every shadow cost is exact.
const EXACT_PRICE: &str = "powerful=15625/15625";

/// A chat completion of `model`, whole or streamed; its status and text.
async fn chat(c: &Client, model: &str, text: &str, stream: bool) -> (u16, String) {
    let res = c
        .http()
        .post(format!("{}/v1/chat/completions", c.base()))
        .json(&json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    let body = res.text().await.unwrap();
    if !stream {
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        return (
            code,
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let mut text = String::new();
    for line in body.lines() {
        if let Some(data) = line.strip_prefix("data: ")
            && let Ok(v) = serde_json::from_str::<Value>(data)
            && let Some(piece) = v["choices"][0]["delta"]["content"].as_str()
        {
            text.push_str(piece);
        }
    }
    (code, text)
}

fn quality(status: &Value, tier: usize) -> Value {
    status["quality"]["tiers"][tier].clone()
}

/// Every sample of Q2 accounted for: judged, failed or dropped.
fn settled(status: &Value, samples: u64) -> bool {
    let q = quality(status, 0);
    let s = &q["sinceStart"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    status["quality"]["inFlight"] == 0
        && n("pairs") + n("judgeFailures") + n("q4Failures") + n("dropped") == samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_known_in_advance_show_exactly_everywhere() {
    let fast = FakeUpstream::start_model(Behavior::Ok, "small-model").await;
    let big = FakeUpstream::start_model(Behavior::Judge, "big-model").await;
    let server = shadow_judging(&fast.base_url, &big.base_url, &["--price", EXACT_PRICE]);
    let c = Client::new(&server.base);
    // (query, door, expected verdict): every door and both answer shapes.
    let cases: [(&str, &str, Option<&str>); 12] = [
        ("verdict-better one", "whole", Some("better")),
        ("verdict-better two", "stream", Some("better")),
        ("verdict-better three", "query", Some("better")),
        ("q4-fail one", "whole", None),
        ("verdict-worse one", "whole", Some("worse")),
        ("verdict-worse two", "stream", Some("worse")),
        ("verdict-tie one", "query", Some("tie")),
        ("verdict-tie two", "whole", Some("tie")),
        ("verdict-disagree one", "stream", Some("tie")),
        ("verdict-garbage one", "whole", None),
        ("verdict-refuse one", "query", None),
        ("judge-fail one", "whole", None),
    ];
    for (i, (text, door, _)) in cases.iter().enumerate() {
        let (code, answer) = match *door {
            "query" => {
                let (code, v) = c
                    .post("/api/query", &json!({"query": text, "mode": "simple"}))
                    .await;
                (code, v["answer"].as_str().unwrap_or_default().to_owned())
            }
            door => chat(&c, "fast", text, door == "stream").await,
        };
        assert_eq!(code, 200, "{text}");
        assert_eq!(
            answer,
            format!("echo: {text}"),
            "the user's answer is the tier's"
        );
        // One sample at a time: the judge's failures never run together
        // into an open circuit.
        assert!(
            eventually(Duration::from_secs(10), || async {
                settled(&c.status().await, i as u64 + 1)
            })
            .await,
            "sample {i} settled: {}",
            c.status().await["quality"]
        );
    }
    let status = c.status().await;
    let q = quality(&status, 0);
    let (lo, hi) = wilson(6, 8);
    for span in ["sinceStart", "lastHour"] {
        let s = &q[span];
        assert_eq!(
            (&s["pairs"], &s["better"], &s["tie"], &s["worse"]),
            (&json!(8), &json!(3), &json!(3), &json!(2)),
            "{span}: {s}"
        );
        assert_eq!(s["asGood"], json!(0.75), "{span}");
        assert!(
            (s["asGoodLower"].as_f64().unwrap() - lo).abs() < 1e-12,
            "{s}"
        );
        assert!(
            (s["asGoodUpper"].as_f64().unwrap() - hi).abs() < 1e-12,
            "{s}"
        );
        assert_eq!(s["judgeFailures"], 3, "{span}");
        assert_eq!(s["q4Failures"], 1, "{span}");
        assert_eq!(s["dropped"], 0, "{span}");
    }
    assert_eq!(status["quality"]["judge"], "Q4");
    assert_eq!(status["quality"]["shadowRate"], 1.0);
    assert_eq!(
        quality(&status, 1)["sinceStart"]["pairs"],
        0,
        "Q3 answered nothing"
    );
    // The shadow calls' tokens and cost are kept apart, at Q4's price.
    let tokens = q["shadowTokens"].as_u64().unwrap();
    assert!(tokens > 0, "{q}");
    assert_eq!(q["shadowCostUsd"].as_f64().unwrap(), tokens as f64 / 64.0);
    let q4 = &status["tierUtilization"][2];
    assert_eq!(
        q4["totalProcessed"], 0,
        "shadow calls are no decisions: {q4}"
    );
    assert_eq!(q4["activeRequests"], 0);
    assert_eq!(status["totalDecisions"], 12);
    let q4_cost = &status["cost"]["tiers"][2];
    assert_eq!(q4_cost["tier"], "Q4");
    assert_eq!(
        (&q4_cost["promptTokens"], &q4_cost["spentUsd"]),
        (&json!(0), &json!(0.0)),
        "the tier's own tokens and cost leave shadow calls out: {q4_cost}"
    );

    // /metrics says the same.
    let text = c.text("/metrics").await;
    let m = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(-1.0);
    for (verdict, n) in [("better", 3.0), ("tie", 3.0), ("worse", 2.0)] {
        assert_eq!(
            m(
                "orch_shadow_verdicts_total",
                &[("tier", "Q2"), ("verdict", verdict)]
            ),
            n,
            "{verdict}"
        );
    }
    for (reason, n) in [
        ("garbage", 1.0),
        ("refusal", 1.0),
        ("error", 1.0),
        ("timeout", 0.0),
    ] {
        assert_eq!(
            m("orch_shadow_judge_failures_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    assert_eq!(m("orch_shadow_q4_failures_total", &[]), 1.0);
    assert_eq!(m("orch_shadow_dropped_total", &[]), 0.0);
    assert_eq!(
        m("orch_shadow_tokens_total", &[("direction", "in")])
            + m("orch_shadow_tokens_total", &[("direction", "out")]),
        tokens as f64
    );
    assert_eq!(
        m("orch_shadow_cost_usd_total", &[("tier", "Q2")]),
        tokens as f64 / 64.0
    );

    // The store keeps each verdict with its decision: the log, the export
    // and the history's rollups.
    let expected = |query: &str| {
        cases
            .iter()
            .find(|(t, _, _)| *t == query)
            .and_then(|(_, _, v)| *v)
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, page) = c.get("/api/orchestrator/decisions?limit=50").await;
            page["decisions"].as_array().is_some_and(|ds| {
                ds.len() == 12
                    && ds
                        .iter()
                        .all(|d| d["verdict"].as_str() == expected(d["query"].as_str().unwrap()))
            })
        })
        .await,
        "{}",
        c.get("/api/orchestrator/decisions?limit=50").await.1
    );
    let csv = c.text("/api/orchestrator/decisions?format=csv").await;
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header = r.headers().unwrap().clone();
    let (qi, vi) = (
        header.iter().position(|h| h == "query").unwrap(),
        header.iter().position(|h| h == "verdict").unwrap(),
    );
    let mut rows = 0;
    for row in r.records() {
        let row = row.unwrap();
        assert_eq!(
            Some(&row[vi]).filter(|v| !v.is_empty()),
            expected(&row[qi]),
            "{row:?}"
        );
        rows += 1;
    }
    assert_eq!(rows, 12);
    let (code, h) = c.get("/api/orchestrator/history?from=-1h&step=1m").await;
    assert_eq!(code, 200, "{h}");
    let sum = |k: &str| -> u64 {
        h["series"][0][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("better"), sum("tie"), sum("worse")),
        (3, 3, 2),
        "the Q2 rollups"
    );
}

/// A stream the client leaves before its end and a query asked again
/// within a minute count per tier; nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_streams_and_regenerations_count_per_tier() {
    let fast =
        FakeUpstream::start_model(Behavior::Paced(Duration::from_millis(150)), "small").await;
    let f = format!("fast={}", fast.base_url);
    let server = Server::start(&["--upstream", &f, "--in-memory"]);
    let c = Client::new(&server.base);
    // Whole, streamed to the end, then one left after its first chunk.
    assert_eq!(chat(&c, "fast", "one two three", false).await.0, 200);
    assert_eq!(chat(&c, "fast", "four five", true).await.0, 200);
    let mut res = c
        .http()
        .post(format!("{}/v1/chat/completions", c.base()))
        .json(&json!({"model": "fast", "stream": true,
                      "messages": [{"role": "user", "content": "six seven eight nine"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap();
    assert!(first.is_some());
    drop(res);
    assert!(
        eventually(Duration::from_secs(5), || async {
            quality(&c.status().await, 0)["abandoned"] == 1
        })
        .await,
        "{}",
        c.status().await["quality"]
    );
    // The same text again (no key: the same anonymous caller), and a text
    // that differs by one character.
    assert_eq!(chat(&c, "fast", "one two three", false).await.0, 200);
    assert_eq!(chat(&c, "fast", "one two three!", false).await.0, 200);
    let q = quality(&c.status().await, 0);
    assert_eq!(q["streams"], 2, "{q}");
    assert_eq!(q["abandoned"], 1);
    assert_eq!(q["abandonedRate"], 0.5);
    assert_eq!(q["answers"], 5);
    assert_eq!(q["regenerations"], 1);
    assert_eq!(q["regenerationRate"], 0.2);
    let text = c.text("/metrics").await;
    assert_eq!(
        metric(&text, "orch_streams_abandoned_total", &[("tier", "Q2")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "orch_regenerations_total", &[("tier", "Q2")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "orch_streams_total", &[("tier", "Q2")]),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "orch_single_tier_queries_total", &[("tier", "Q2")]),
        Some(5.0)
    );
}

/// A judge that never answers: the users' answers come as before, samples
/// beyond `--shadow-max-inflight` are dropped and counted, the judge's
/// timeouts are counted, and the memory stays bounded over 10,000 sampled
/// queries. Then a Q4 that fails: counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_judge_or_a_failing_q4_leaves_answers_and_memory_alone() {
    let fast = FakeUpstream::start(Behavior::Ok).await;
    let big = FakeUpstream::start(Behavior::Judge).await;
    let server = shadow_judging(
        &fast.base_url,
        &big.base_url,
        &[
            "--shadow-max-inflight",
            "2",
            "--upstream-timeout",
            "1",
            "--in-memory",
        ],
    );
    let c = Client::new(&server.base);
    let send = |n: usize, prefix: &'static str| {
        let c = Client::new(&server.base);
        async move {
            let mut ok = 0;
            for i in 0..n {
                let text = format!("{prefix} {i}");
                let (code, v) = c
                    .post("/api/query", &json!({"query": text, "mode": "simple"}))
                    .await;
                ok += usize::from(code == 200 && v["answer"] == format!("echo: {text}"));
            }
            ok
        }
    };
    // Warm up, then 10,000 sampled queries from 8 clients.
    assert_eq!(send(200, "judge-hang warm").await, 200);
    let before = rss_kib(server.pid()).unwrap();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(send(1_250, "judge-hang")))
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(ok, 10_000, "every user answer came, unchanged");
    let after = rss_kib(server.pid()).unwrap();
    let status = c.status().await;
    let s = quality(&status, 0)["sinceStart"].clone();
    eprintln!(
        "10,000 sampled queries with a hanging judge in {took:?}: RSS {before} -> {after} KiB \
         ({:+} KiB); dropped {}, judge failures so far {}",
        after as i64 - before as i64,
        s["dropped"],
        s["judgeFailures"]
    );
    assert!(s["dropped"].as_u64().unwrap() > 9_000, "{s}");
    assert!(status["quality"]["inFlight"].as_u64().unwrap() <= 2);
    assert!(
        after < before + 64 * 1024,
        "RSS bounded: {before} -> {after} KiB"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            settled(&c.status().await, 10_200)
        })
        .await
    );
    let status = c.status().await;
    let text = c.text("/metrics").await;
    let timeouts = metric(
        &text,
        "orch_shadow_judge_failures_total",
        &[("reason", "timeout")],
    );
    assert!(
        timeouts.is_some_and(|n| n >= 1.0),
        "the hanging judge timed out: {timeouts:?}"
    );
    assert_eq!(quality(&status, 0)["sinceStart"]["pairs"], 0);
    // A Q4 that fails: every sample is a Q4 failure, answers unchanged.
    big.set(Behavior::Fail);
    let failed_before = quality(&status, 0)["sinceStart"]["q4Failures"]
        .as_u64()
        .unwrap();
    assert_eq!(send(20, "plain").await, 20);
    assert!(
        eventually(Duration::from_secs(10), || async {
            settled(&c.status().await, 10_220)
        })
        .await
    );
    let s = quality(&c.status().await, 0)["sinceStart"].clone();
    let failed = s["q4Failures"].as_u64().unwrap() - failed_before;
    let dropped = s["dropped"].as_u64().unwrap();
    assert!((1..=20).contains(&failed), "{s}");
    eprintln!(
        "a failing Q4: {failed} of 20 samples counted as Q4 failures, the rest dropped ({dropped} in all)"
    );
}

/// The Wilson 95 % interval, computed here from its textbook formula.
fn wilson(k: u64, n: u64) -> (f64, f64) {
    let z = 1.959_963_984_540_054_f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let c = p + z * z / (2.0 * n);
    let m = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    let d = 1.0 + z * z / n;
    ((c - m) / d, (c + m) / d)
}
