//! Reruns every number of docs/performance.md. Needs the release server
//! (scripts/build.sh) and wrk / Chromium (scripts/install.sh --test).
//!
//! ```text
//! bench floor [SECS]   status endpoint vs a bare axum handler of the same bytes (wrk -t2 -c64)
//! bench idle           bytes per minute of one idle panel, without and with If-None-Match
//! bench memory [N]     resident memory of the server before and after N decisions
//! bench panel [SECS]   panel poll cost in Chromium (response to painted DOM), first live data
//! bench pixel [SECS]   decision to pixel over the stream in Chromium, 10 decisions/s
//! bench slider [N]     what-if slider moves (default 120) with 100 decisions buffered in
//!                      Chromium: input to DOM patched, to layout done, to the next frame
//! bench streams [N]    N idle stream clients (default 10,000): server RSS, CPU at 1 change/s,
//!                      status throughput with them connected vs the bare handler
//! bench stream-idle    bytes per minute of one idle panel on the stream vs 304 polling
//! bench ingest [SECS]  batched ingestion (batches of 100, 8 clients): persistence on
//!                      (--sync normal, full) vs --in-memory; single-decision latency under load
//! bench store [N]      N decisions (default 1,000,000) stored: disk use, start-up time,
//!                      history over 7 days at 1 h steps (p50/p95), an export's rate
//! bench openai [SECS]  the OpenAI front door against a mock upstream that answers at once:
//!                      latency added at 1,000 requests/s, most requests/s, chunk forwarding
//! bench all            all of the above
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tests::bench::{cpu_seconds, exchange_bytes, parse_wrk, percentile, poll_request, rss_kib};
use tests::browser::Browser;
use tests::{Client, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod cluster;
mod panel;
mod store;
mod streams;

use cluster::*;
use panel::*;
use store::*;
use streams::*;

const STATUS: &str = "/api/orchestrator/status";
const TIERS: [&str; 3] = ["fast", "balanced", "powerful"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let num = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    println!("machine: {}", machine());
    match what {
        "floor" => floor(num(1, 10)).await,
        "idle" => idle().await,
        "memory" => memory(num(1, 1_000_000)).await,
        "panel" => panel(num(1, 20)).await,
        "pixel" => pixel(num(1, 15)).await,
        "slider" => slider(num(1, 120) as usize).await,
        "streams" => streams(num(1, 10_000) as usize).await,
        "stream-idle" => stream_idle().await,
        "ingest" => ingest(num(1, 10)).await,
        "store" => store(num(1, 1_000_000) as usize).await,
        "cluster" => cluster(num(1, 10)).await,
        "openai" => tests::front_door::run(num(1, 5)).await,
        "shadow" => tests::front_door::shadow(num(1, 5)).await,
        "all" => {
            floor(10).await;
            idle().await;
            memory(1_000_000).await;
            panel(20).await;
            pixel(15).await;
            slider(120).await;
            streams(10_000).await;
            stream_idle().await;
            ingest(10).await;
            store(1_000_000).await;
            cluster(10).await;
            tests::front_door::run(5).await;
            tests::front_door::shadow(5).await;
        }
        other => {
            eprintln!(
                "unknown benchmark {other:?}: floor, idle, memory, panel, pixel, slider, streams, stream-idle, ingest, store, cluster, openai, shadow or all"
            );
            std::process::exit(2);
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

async fn fill(c: &Client, n: usize) {
    for i in 0..n {
        let (code, _) = c
            .post(
                "/api/orchestrator/decisions",
                &reported(
                    i as u64,
                    format!("Compare B-trees and LSM-trees for workload {i}"),
                ),
            )
            .await;
        assert_eq!(code, 201);
    }
}

/// Decision `n` as a router elsewhere reports it: with the signals behind
/// its score and the tokens its answer took, as the panel's insight needs.
fn reported(n: u64, query: String) -> serde_json::Value {
    let score = (n % 16) as f64 * 0.9;
    json!({"query": query, "tier": TIERS[(n % 3) as usize], "score": score, "decisionTimeMs": 0.5,
           "signals": [{"name": "length", "weight": score * 0.4},
                       {"name": "technical vocabulary", "weight": score * 0.6}],
           "usage": {"promptTokens": 200 + n % 100, "completionTokens": 400 + n % 300}})
}

/// Records about `per_sec` decisions per second until `stop`, each posted at
/// its tick without waiting for the one before (as routers elsewhere
/// report): the rate holds whatever a commit takes. Returns the count
/// posted.
fn writer(base: String, per_sec: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let c = Client::new(&base);
        if per_sec == 0 {
            return 0;
        }
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_sec));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut posts = tokio::task::JoinSet::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let c = c.clone();
            posts.spawn(async move {
                c.post(
                    "/api/orchestrator/decisions",
                    &reported(n, format!("writer {n}")),
                )
                .await;
            });
            n += 1;
            // Finished ones are reaped as we go; at most 64 in flight.
            while posts.len() >= 64 {
                posts.join_next().await;
            }
            while posts.try_join_next().is_some() {}
        }
        while posts.join_next().await.is_some() {}
        n
    })
}

fn wrk(url: &str, secs: u64) -> tests::bench::WrkReport {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{secs}s"), "--latency", url])
        .output()
        .expect("wrk runs (scripts/install.sh --test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"))
}

/// (a) the real status endpoint, 100 decisions buffered, a writer at about
/// 1,000 decisions/s, the access log on (a line per request, written to a
/// file); (b) a bare axum handler returning the same bytes.
async fn floor(secs: u64) {
    let access_log =
        std::env::temp_dir().join(format!("orch-bench-access-{}.log", std::process::id()));
    // ORCH_BENCH_LOG=warn measures the same without the access log.
    let filter = std::env::var("ORCH_BENCH_LOG").unwrap_or_else(|_| "info".into());
    let server = Server::start_with(&[], &[("RUST_LOG", &filter)], Some(&access_log));
    let c = Client::new(&server.base);
    fill(&c, 100).await;
    let (bare, body_file, body) = bare_twin(&c, &server).await;

    // Alternate the two, several rounds, so drift on a shared machine hits
    // both alike; the writer runs only while (a) is measured.
    let rate = std::env::var("ORCH_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000u64);
    let rounds = 5;
    let (a_runs, b_runs, write_rates) = floor_rounds(
        &server,
        &bare,
        std::slice::from_ref(&server.base),
        rate,
        false,
        secs,
        rounds,
    )
    .await;
    std::fs::remove_file(&body_file).ok();
    let logged = std::fs::metadata(&access_log).map_or(0, |m| m.len());
    std::fs::remove_file(&access_log).ok();

    let med = |runs: &[tests::bench::WrkReport], f: fn(&tests::bench::WrkReport) -> f64| {
        percentile(&runs.iter().map(f).collect::<Vec<_>>(), 50.0)
    };
    println!(
        "\n## floor: wrk -t2 -c64 -d{secs}s, {rounds} alternating rounds, body {} bytes, medians",
        body.len()
    );
    println!("| handler | requests/s | p50 ms | p99 ms | errors |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let errors = |runs: &[tests::bench::WrkReport]| runs.iter().map(|r| r.errors).sum::<u64>();
    let (a_rps, b_rps) = (med(&a_runs, |r| r.rps), med(&b_runs, |r| r.rps));
    println!(
        "| (a) status endpoint, 100 buffered, writer {:.0} decisions/s | {a_rps:.0} | {:.3} | {:.3} | {} |",
        percentile(&write_rates, 50.0),
        med(&a_runs, |r| r.p50_ms),
        med(&a_runs, |r| r.p99_ms),
        errors(&a_runs)
    );
    println!(
        "| (b) bare axum handler, same bytes | {b_rps:.0} | {:.3} | {:.3} | {} |",
        med(&b_runs, |r| r.p50_ms),
        med(&b_runs, |r| r.p99_ms),
        errors(&b_runs)
    );
    // Each round's a and b ran back to back: their ratio is the figure least
    // moved by drift on a shared machine; its median over the rounds is it.
    let ratios: Vec<f64> = a_runs
        .iter()
        .zip(&b_runs)
        .map(|(a, b)| a.rps / b.rps)
        .collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "a/b throughput ratio: {:.3}, median of the rounds' ratios (rounds: {}; ratio of medians {:.3})",
        percentile(&ratios, 50.0),
        shown.join(", "),
        a_rps / b_rps
    );
    println!(
        "(a) logged with RUST_LOG={filter}: {:.0} MiB written",
        logged as f64 / (1 << 20) as f64
    );
}

/// `rounds` alternating rounds of wrk: against `bare`, then against
/// `server`'s status while writers post about `rate` decisions/s in all to
/// `write_to` (shared out evenly). When the writers load other processes
/// (`throughout`: other instances of a cluster on the same machine), they
/// run through the bare handler's runs too, so both share the machine with
/// them alike; when they load `server` itself, only through its runs. The
/// runs of each and the decision rate `server`'s status counted during its
/// runs.
async fn floor_rounds(
    server: &Server,
    bare: &Server,
    write_to: &[String],
    rate: u64,
    throughout: bool,
    secs: u64,
    rounds: usize,
) -> (
    Vec<tests::bench::WrkReport>,
    Vec<tests::bench::WrkReport>,
    Vec<f64>,
) {
    let c = Client::new(&server.base);
    let start_writers = || {
        let stop = Arc::new(AtomicBool::new(false));
        let per = rate / write_to.len() as u64;
        let writers: Vec<_> = write_to
            .iter()
            .map(|base| writer(base.clone(), per, Arc::clone(&stop)))
            .collect();
        (stop, writers)
    };
    let stop_writers = |(stop, writers): (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<u64>>)| async move {
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
    };
    let mut all_along = throughout.then(start_writers);
    let (mut a_runs, mut b_runs, mut write_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        b_runs.push(wrk(&bare.url(STATUS), secs));
        let these = (!throughout).then(start_writers);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let before = total(&c).await;
        a_runs.push(wrk(&server.url(STATUS), secs));
        write_rates.push((total(&c).await - before) as f64 / started.elapsed().as_secs_f64());
        if let Some(w) = these {
            stop_writers(w).await;
        }
    }
    if let Some(w) = all_along.take() {
        stop_writers(w).await;
    }
    (a_runs, b_runs, write_rates)
}

/// The bare axum handler (`src/bin/bare.rs`) serving the bytes `server`'s
/// status endpoint serves now, from a temp file; both warmed up with wrk.
async fn bare_twin(c: &Client, server: &Server) -> (Server, PathBuf, bytes::Bytes) {
    let body = c
        .http()
        .get(server.url(STATUS))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let body_file = std::env::temp_dir().join(format!(
        "orch-bench-body-{}-{}.json",
        std::process::id(),
        server.addr.port()
    ));
    std::fs::write(&body_file, &body).unwrap();
    let bare_bin = std::env::current_exe().unwrap().with_file_name("bare");
    let bare = Server::spawn(&bare_bin, &[body_file.to_str().unwrap()]);
    wrk(&bare.url(STATUS), 2);
    wrk(&server.url(STATUS), 2);
    (bare, body_file, body)
}

/// The ETag of `server`'s status now.
async fn status_etag(c: &Client, server: &Server) -> String {
    c.http()
        .get(server.url(STATUS))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn total(c: &Client) -> u64 {
    c.status().await["totalDecisions"].as_u64().unwrap()
}

/// One idle panel polls once a second: bytes a minute over the wire, with
/// and without the conditional GET.
async fn idle() {
    println!(
        "\n## idle panel: 60 polls (one minute), bytes over the wire (both ways / server to browser)"
    );
    println!("| state | without If-None-Match | with If-None-Match | saved |");
    println!("| --- | ---: | ---: | ---: |");
    for (label, n) in [
        ("zero state", 0usize),
        ("10 decisions listed", 10),
        ("100 buffered", 100),
    ] {
        let server = Server::start(&[]);
        let c = Client::new(&server.base);
        fill(&c, n).await;
        let host = server.addr.to_string();
        let etag = status_etag(&c, &server).await;
        // (up, down) per minute
        let (mut plain, mut conditional) = ((0usize, 0usize), (0usize, 0usize));
        for _ in 0..60 {
            let (code, sent, got) =
                exchange_bytes(server.addr, &poll_request(&host, None)).unwrap();
            assert_eq!(code, 200);
            plain = (plain.0 + sent, plain.1 + got);
            let (code, sent, got) =
                exchange_bytes(server.addr, &poll_request(&host, Some(&etag))).unwrap();
            assert_eq!(code, 304);
            conditional = (conditional.0 + sent, conditional.1 + got);
        }
        let both = |(u, d): (usize, usize)| u + d;
        println!(
            "| {label} | {} / {} B/min | {} / {} B/min | {:.0}% / {:.0}% |",
            both(plain),
            plain.1,
            both(conditional),
            conditional.1,
            100.0 * (1.0 - both(conditional) as f64 / both(plain) as f64),
            100.0 * (1.0 - conditional.1 as f64 / plain.1 as f64)
        );
    }
}

/// Resident memory of the empty server and after `n` decisions.
async fn memory(n: u64) {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    fill(&c, 10).await; // warm the allocator and the client paths
    let empty = rss_kib(server.pid()).unwrap();
    let started = Instant::now();
    let workers = 16u64;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(workers as usize) {
                    let (code, _) = c
                        .post(
                            "/api/orchestrator/decisions",
                            &json!({"query": format!("decision {i} {}", "x".repeat((i % 120) as usize)),
                                    "tier": TIERS[(i % 3) as usize],
                                    "score": (i % 16) as f64 * 0.9, "decisionTimeMs": 0.5}),
                        )
                        .await;
                    assert_eq!(code, 201);
                }
            })
        })
        .collect();
    let mut peak = empty;
    for t in tasks {
        while !t.is_finished() {
            peak = peak.max(rss_kib(server.pid()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        t.await.unwrap();
    }
    let after = rss_kib(server.pid()).unwrap();
    peak = peak.max(after);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(total(&c).await, n + 10);
    println!(
        "\n## memory: {n} decisions over HTTP in {secs:.1} s ({:.0}/s, 16 clients)",
        n as f64 / secs
    );
    println!(
        "RSS empty {:.2} MiB, after {:.2} MiB, peak {:.2} MiB, growth {:.2} MiB",
        empty as f64 / 1024.0,
        after as f64 / 1024.0,
        peak as f64 / 1024.0,
        (after as f64 - empty as f64) / 1024.0
    );
}
