//! Soak: writers through /api/query and the ingestion endpoint, and pollers,
//! all at once against the release binary. Every accepted decision is counted
//! exactly once, every status read obeys the rules, memory stays bounded.
//! `ORCH_SOAK_SECS` sets the length (default 8 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::bench::rss_kib;
use tests::{Behavior, Client, FakeUpstream, Server, per_tier};

const TIERS: [&str; 3] = ["fast", "Q3", "powerful"];

fn check_invariants(s: &Value, last_total: u64) -> u64 {
    let tiers: Vec<&str> = s["tierUtilization"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["Q2", "Q3", "Q4"]);
    let total = s["totalDecisions"].as_u64().unwrap();
    assert!(total >= last_total, "totals never go back");
    let processed: f64 = per_tier(s, "totalProcessed").iter().sum();
    assert_eq!(processed as u64, total);
    let util = per_tier(s, "utilizationPercent");
    assert!(util.iter().all(|u| (0.0..=100.0).contains(u)));
    let d = &s["complexityDistribution"];
    let sum: u64 = ["simple", "moderate", "complex"]
        .iter()
        .map(|k| d[*k].as_u64().unwrap())
        .sum();
    if total > 0 {
        assert_eq!(sum, 100);
        assert!((util.iter().sum::<f64>() - 100.0).abs() < 1e-6);
    } else {
        assert_eq!(sum, 0);
    }
    let recent = s["recentDecisions"].as_array().unwrap();
    assert!(recent.len() <= 100);
    for r in recent {
        assert!(r["query"].as_str().unwrap().chars().count() <= 100);
        let score = r["score"].as_f64().unwrap();
        assert!((0.0..=15.0).contains(&score));
    }
    assert!(s["avgDecisionTimeMs"].as_f64().unwrap() >= 0.0);
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_counts_every_accepted_decision_exactly_once() {
    let secs: u64 = std::env::var("ORCH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let up = FakeUpstream::start(Behavior::Ok).await;
    let server = Server::start(&[
        "--upstream",
        &format!("fast={}", up.base_url),
        "--upstream",
        &format!("balanced={}", up.base_url),
        "--upstream",
        &format!("powerful={}", up.base_url),
    ]);
    let pid = server.pid();
    let empty_rss = rss_kib(pid).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let (query_writers, ingest_writers, pollers) = (4, 4, 4);
    let mut tasks = Vec::new();
    for w in 0..query_writers + ingest_writers {
        let c = Client::new(&server.base);
        let (stop, accepted, refused) = (stop.clone(), accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (code, _) = if w < query_writers {
                    let mode = if i.is_multiple_of(2) { "simple" } else { "two-stage" };
                    c.post("/api/query", &json!({"query": format!("writer {w} query {i}: design and prove"), "mode": mode}))
                        .await
                } else if i.is_multiple_of(10) {
                    // every tenth is invalid: refused, and must not count
                    c.post("/api/orchestrator/decisions", &json!({"query": " ", "tier": "Q2", "score": 1, "decisionTimeMs": 0}))
                        .await
                } else {
                    c.post(
                        "/api/orchestrator/decisions",
                        &json!({"query": format!("ingested {w}-{i}"), "tier": TIERS[(i % 3) as usize],
                                "score": (i % 151) as f64 / 10.0, "decisionTimeMs": (i % 50) as f64 / 10.0}),
                    )
                    .await
                };
                match code {
                    200 | 201 => accepted.fetch_add(1, Ordering::Relaxed),
                    422 => refused.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected status {other}"),
                };
            }
        }));
    }
    for _ in 0..pollers {
        let c = Client::new(&server.base);
        let (stop, reads) = (stop.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let (code, s) = c.get("/api/orchestrator/status").await;
                assert_eq!(code, 200);
                last = check_invariants(&s, last);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut peak_rss = empty_rss;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("no client task failed");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = Client::new(&server.base).status().await;
    check_invariants(&s, 0);
    let counted = s["totalDecisions"].as_u64().unwrap();
    let accepted = accepted.load(Ordering::Relaxed);
    assert_eq!(per_tier(&s, "activeRequests"), [0.0, 0.0, 0.0]);
    eprintln!(
        "soak: {accepted} accepted writes ({} refused) from {} writers + {pollers} pollers \
         ({} status reads) in {elapsed:.1} s; counted {counted}, lost {}; \
         RSS {:.1} MiB empty, {:.1} MiB peak",
        refused.load(Ordering::Relaxed),
        query_writers + ingest_writers,
        reads.load(Ordering::Relaxed),
        accepted as i64 - counted as i64,
        empty_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
    );
    assert_eq!(
        counted, accepted,
        "every accepted decision counted exactly once"
    );
    assert!(refused.load(Ordering::Relaxed) > 0);
    assert!(peak_rss < empty_rss + 32 * 1024, "memory stays bounded");
}
