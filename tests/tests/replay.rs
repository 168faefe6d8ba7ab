//! What-if over the stored history, black-box against the release binary:
//! `GET /api/orchestrator/replay` equals a direct recomputation over the
//! exported decisions for ranges of 10 minutes to 7 days, with and without
//! prices; kept prompts scored again (`scorer=`) equal the scorer's own
//! scores (`server eval --scores-out`); the prompts' retention; 400 on bad
//! parameters, 404 with `--in-memory`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Client, Server, server_bin};

const PRICES: [&str; 6] = [
    "--price",
    "fast=0.1/0.4",
    "--price",
    "balanced=1/3",
    "--price",
    "powerful=5/15",
];

/// Per tier, USD per million prompt and completion tokens, as [`PRICES`].
const PRICE: [(f64, f64); 3] = [(0.1, 0.4), (1.0, 3.0), (5.0, 15.0)];

fn tier_index(t: &str) -> usize {
    ["Q2", "Q3", "Q4"].iter().position(|x| *x == t).unwrap()
}

/// A decision to ingest: a two-stage one on Q3 or Q4 by its score, or a
/// simple one on Q2; most with usage.
fn decision(i: usize) -> Value {
    let score = (i * 37 % 151) as f64 / 10.0;
    let two_stage = !i.is_multiple_of(5);
    let tier = if !two_stage {
        "Q2"
    } else if score >= 7.0 {
        "Q4"
    } else {
        "Q3"
    };
    let mut d = json!({
        "query": format!("question {i}"),
        "tier": tier,
        "score": if two_stage { score } else { 0.0 },
        "decisionTimeMs": 0.5,
        "mode": if two_stage { "two-stage" } else { "simple" },
    });
    if i % 7 != 3 {
        d["usage"] = json!({"promptTokens": 10 + i % 13, "completionTokens": 20 + (i * 3) % 41});
    }
    d
}

/// The store's decisions moved back in time: the `n`-th of every 6 by
/// `n` x 26 hours, over a week, so ranges from 10 minutes to 7 days hold
/// different decisions.
fn spread_over_a_week(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("orchestrator.db")).unwrap();
    conn.execute(
        "UPDATE decisions SET ts = ts - (seq % 6) * 26 * 3600000 - (seq % 5) * 240000",
        [],
    )
    .unwrap();
}

/// The replay recomputed from exported decisions, as the document says.
fn recompute(all: &[Value], from_ms: i64, to_ms: i64, threshold: f64, priced: bool) -> Value {
    let ms = |d: &Value| {
        chrono::DateTime::parse_from_rfc3339(d["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let in_range: Vec<&Value> = all
        .iter()
        .filter(|d| (from_ms..to_ms).contains(&ms(d)))
        .collect();
    let usage = |d: &Value| {
        d.get("usage").filter(|u| !u.is_null()).map(|u| {
            (
                u["promptTokens"].as_f64().unwrap(),
                u["completionTokens"].as_f64().unwrap(),
            )
        })
    };
    let mut sums = [(0.0, 0.0, 0.0); 3];
    for d in &in_range {
        if let Some((p, c)) = usage(d) {
            let s = &mut sums[tier_index(d["tier"].as_str().unwrap())];
            s.0 += p;
            s.1 += c;
            s.2 += 1.0;
        }
    }
    let mean = |t: usize| {
        let s = sums[t];
        if s.2 == 0.0 {
            (0.0, 0.0)
        } else {
            (s.0 / s.2, s.1 / s.2)
        }
    };
    let cost = |t: usize, p: f64, c: f64| (p * PRICE[t].0 + c * PRICE[t].1) / 1e6;
    let (mut n, mut q4_before, mut q4_after, mut to_q4, mut from_q4) = (0, 0, 0, 0, 0);
    let (mut dp, mut dc, mut dcost) = (0.0, 0.0, 0.0);
    for d in in_range.iter().filter(|d| d["mode"] == "two-stage") {
        n += 1;
        let before = tier_index(d["tier"].as_str().unwrap());
        let after = if d["score"].as_f64().unwrap() >= threshold {
            2
        } else {
            1
        };
        q4_before += usize::from(before == 2);
        let to = match (before == 2, after == 2) {
            (false, true) => 2,
            (true, false) => after,
            _ => {
                q4_after += usize::from(before == 2);
                continue;
            }
        };
        q4_after += usize::from(to == 2);
        if to == 2 {
            to_q4 += 1;
        } else {
            from_q4 += 1;
        }
        let (own_p, own_c) = usage(d).unwrap_or_else(|| mean(before));
        let (dest_p, dest_c) = mean(to);
        dp += dest_p - own_p;
        dc += dest_c - own_c;
        dcost += cost(to, dest_p, dest_c) - cost(before, own_p, own_c);
    }
    let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    json!({
        "decisions": n, "toQ4": to_q4, "fromQ4": from_q4,
        "q4ShareBefore": share(q4_before), "q4ShareAfter": share(q4_after),
        "tokensDelta": dp + dc,
        "costDeltaUsd": if priced { json!(dcost) } else { Value::Null },
    })
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

async fn check_ranges(c: &Client, priced: bool) {
    let all: Vec<Value> = c
        .text("/api/orchestrator/decisions?format=ndjson")
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(all.len(), 600);
    let now = tests::unix_micros() as i64 / 1_000;
    let h = 3_600_000;
    // (from, to) as given, and in ms for the recomputation.
    let ranges: Vec<(String, String, i64, i64)> = vec![
        ("-10m".into(), "now".into(), now - 600_000, now),
        ("-1h".into(), "now".into(), now - h, now),
        ("-1d".into(), "now".into(), now - 24 * h, now),
        (
            (now - 100 * h).to_string(),
            (now - 30 * h).to_string(),
            now - 100 * h,
            now - 30 * h,
        ),
        ("-7d".into(), "now".into(), now - 168 * h, now),
    ];
    let mut sizes = Vec::new();
    for (from, to, from_ms, to_ms) in ranges {
        for threshold in [3.0, 7.0, 11.5] {
            let (code, r) = c
                .get(&format!(
                    "/api/orchestrator/replay?from={from}&to={to}&threshold={threshold}"
                ))
                .await;
            assert_eq!(code, 200, "{r}");
            // The answer's own bounds, for the recomputation (`now` moved on).
            let ms = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            };
            let (f, t) = if from.starts_with('-') {
                (ms("from"), ms("to"))
            } else {
                (from_ms, to_ms)
            };
            let want = recompute(&all, f, t, threshold, priced);
            for (k, v) in want.as_object().unwrap() {
                assert!(
                    close(&r[k], v),
                    "{from}..{to} at {threshold}: {k} is {} not {v}",
                    r[k]
                );
            }
            assert_eq!(r["scorer"], "stored");
            assert_eq!(r["threshold"], threshold);
            assert!(r["pricing"].as_str().unwrap().contains("mean tokens"));
            for k in ["gapRecoveredBefore", "gapRecoveredAfter"] {
                assert!(r[k].as_f64().is_some(), "{k}: {r}");
            }
            if threshold == 7.0 {
                sizes.push(want["decisions"].as_u64().unwrap());
            }
        }
    }
    // The ranges hold different decisions: the week all of them.
    assert!(sizes.windows(2).any(|w| w[0] != w[1]), "{sizes:?}");
    eprintln!("two-stage decisions per range (10m, 1h, 1d, -100h..-30h, 7d): {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_equals_a_recomputation_over_the_export_with_and_without_prices() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data-dir", &data]);
    let c = Client::new(&server.base);
    for chunk in (0..600).collect::<Vec<_>>().chunks(200) {
        let batch: Vec<Value> = chunk.iter().map(|i| decision(*i)).collect();
        let (code, got) = c.post("/api/orchestrator/decisions", &json!(batch)).await;
        assert_eq!(code, 201, "{got}");
    }
    server.terminate(Duration::from_secs(10)).expect("stops");
    spread_over_a_week(dir.path());
    let server = Server::start(&["--data-dir", &data]);
    check_ranges(&Client::new(&server.base), false).await;
    server.terminate(Duration::from_secs(10)).expect("stops");
    let mut args = vec!["--data-dir", data.as_str()];
    args.extend_from_slice(&PRICES);
    let server = Server::start(&args);
    check_ranges(&Client::new(&server.base), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_prompts_are_scored_again_by_the_scorer_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data-dir", &data, "--keep-prompts"]);
    let c = Client::new(&server.base);
    let prompts: Vec<String> = (0..40)
        .map(|i| match i % 4 {
            0 => format!("What is {i} plus {i}?"),
            1 => format!("Design a distributed, fault-tolerant cache for {i} regions and prove its consistency"),
            2 => format!("Write a Rust function that parses {i} CSV files concurrently, with tests"),
            _ => format!("Explain step by step why the sky is blue, case {i}"),
        })
        .collect();
    for p in &prompts {
        let (code, _) = c
            .post("/api/query", &json!({"query": p, "mode": "two-stage"}))
            .await;
        assert_eq!(code, 503, "no upstream: recorded, prompt kept");
    }
    // The heuristic's own scores of the same texts, from `server eval`.
    let labelled = dir.path().join("prompts.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| json!({"prompt": p, "weak": 0, "strong": 1}).to_string())
        .collect();
    std::fs::write(&labelled, lines.join("\n") + "\n").unwrap();
    let scores = dir.path().join("scores.jsonl");
    let out = std::process::Command::new(server_bin())
        .args([
            "eval",
            "--data",
            labelled.to_str().unwrap(),
            "--scorer",
            "heuristic",
            "--format",
            "json",
            "--scores-out",
        ])
        .arg(&scores)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let heuristic: Vec<f64> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["score"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let (_, page) = c.get("/api/orchestrator/decisions?limit=100").await;
    let stored: Vec<(String, f64)> = page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["tier"].as_str().unwrap().to_owned(),
                d["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(stored.len(), 40);
    for threshold in [2.0, 4.5, 7.0] {
        let get = |scorer: &'static str| {
            let c = &c;
            async move {
                let q = if scorer.is_empty() {
                    String::new()
                } else {
                    format!("&scorer={scorer}")
                };
                let (code, r) = c
                    .get(&format!(
                        "/api/orchestrator/replay?from=-1h&threshold={threshold}{q}"
                    ))
                    .await;
                assert_eq!(code, 200, "{r}");
                r
            }
        };
        // The default scorer (learned) scores them as they were scored.
        let (plain, learned) = (get("").await, get("learned").await);
        assert_eq!(learned["scorer"], "learned");
        assert_eq!(learned["withoutPrompt"], 0);
        for k in ["decisions", "toQ4", "fromQ4", "q4ShareAfter"] {
            assert_eq!(plain[k], learned[k], "{k} at {threshold}");
        }
        // The heuristic: its moves, from its own scores (newest first in
        // the page, oldest first in the file).
        let r = get("heuristic").await;
        let mut to_q4 = 0;
        let mut from_q4 = 0;
        for ((tier, _), score) in stored.iter().rev().zip(&heuristic) {
            match (tier == "Q4", *score >= threshold) {
                (false, true) => to_q4 += 1,
                (true, false) => from_q4 += 1,
                _ => {}
            }
        }
        assert_eq!(
            (r["toQ4"].as_u64(), r["fromQ4"].as_u64()),
            (Some(to_q4), Some(from_q4)),
            "{r}"
        );
        assert_eq!(r["decisions"], 40);
    }
    // Past --prompt-retention, the prompts go (the decisions stay).
    server.terminate(Duration::from_secs(10)).expect("stops");
    let conn = rusqlite::Connection::open(dir.path().join("orchestrator.db")).unwrap();
    let kept: i64 = conn
        .query_row("SELECT count(*) FROM prompts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 40);
    conn.execute(
        "UPDATE prompts SET ts = ts - 2 * 3600000 WHERE seq % 2 = 0",
        [],
    )
    .unwrap();
    drop(conn);
    let server = Server::start(&[
        "--data-dir",
        &data,
        "--keep-prompts",
        "--prompt-retention",
        "1h",
    ]);
    let c = Client::new(&server.base);
    assert!(
        tests::eventually(Duration::from_secs(10), || async {
            let (_, r) = c
                .get("/api/orchestrator/replay?from=-1h&threshold=7&scorer=heuristic")
                .await;
            r["withoutPrompt"] == 20 && r["decisions"] == 20
        })
        .await
    );
}

#[tokio::test]
async fn bad_parameters_are_400_and_no_store_is_404() {
    let server = Server::start(&["--keep-prompts"]);
    let c = Client::new(&server.base);
    for q in [
        "",
        "threshold=",
        "threshold=abc",
        "threshold=-1",
        "threshold=15.5",
        "threshold=NaN",
        "threshold=inf",
        "threshold=5&scorer=oracle",
        "threshold=5&from=yesterday",
        "threshold=5&from=now&to=-1h",
        "threshold=5&threshold=6",
    ] {
        let (code, body) = c.get(&format!("/api/orchestrator/replay?{q}")).await;
        assert_eq!(code, 400, "{q}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{q}: {body}"
        );
    }
    let (code, _) = c.get("/api/orchestrator/replay?threshold=15").await;
    assert_eq!(code, 200);
    // The document offers `scorer` only where prompts are kept.
    let scorer_documented = |doc: &Value| {
        doc["paths"]["/api/orchestrator/replay"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "scorer")
    };
    assert!(scorer_documented(&c.get("/api/openapi.json").await.1));
    // Scoring again without kept prompts is a 400; no store at all a 404.
    let plain = Server::start(&[]);
    assert!(!scorer_documented(
        &Client::new(&plain.base).get("/api/openapi.json").await.1
    ));
    let (code, body) = Client::new(&plain.base)
        .get("/api/orchestrator/replay?threshold=5&scorer=learned")
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--keep-prompts"));
    let memory = Server::start(&["--in-memory"]);
    let (code, body) = Client::new(&memory.base)
        .get("/api/orchestrator/replay?threshold=5")
        .await;
    assert_eq!(code, 404, "{body}");
    // --keep-prompts keeps text, --redact-queries none: refused at start.
    let out = std::process::Command::new(server_bin())
        .args([
            "--keep-prompts",
            "--redact-queries",
            "--in-memory",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redact-queries"));
}
