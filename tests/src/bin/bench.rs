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
        }
        other => {
            eprintln!(
                "unknown benchmark {other:?}: floor, idle, memory, panel, pixel, slider, streams, stream-idle, ingest, store, cluster, openai or all"
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

/// The panel in headless Chromium while 10 new decisions arrive every
/// second (all 10 rows change each poll): response-to-paint per poll, first
/// live data after navigation, and the download size.
/// Raw and gzipped (-9) bytes of the WASM and JS files directly in `dir`.
fn bundle_size(dir: &std::path::Path) -> (usize, usize) {
    let (mut raw, mut gz) = (0usize, 0usize);
    for entry in std::fs::read_dir(dir).expect("dist/ exists (scripts/build.sh)") {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().to_string();
        if name.ends_with(".wasm") || name.ends_with(".js") {
            raw += std::fs::metadata(&path).unwrap().len() as usize;
            let out = Command::new("gzip")
                .args(["-9c"])
                .arg(&path)
                .output()
                .unwrap();
            gz += out.stdout.len();
        }
    }
    (raw, gz)
}

async fn panel(secs: u64) {
    let server = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(server.base.clone(), 10, Arc::clone(&stop));
    let b = Browser::start().await;
    b.goto(&server.base).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let marks = b
        .eval(
            "const r = performance.getEntriesByName('status-response').map(e => e.startTime); \
             const p = performance.getEntriesByName('status-painted').map(e => e.startTime); \
             return {response: r, painted: p};",
            json!([]),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let response: Vec<f64> = marks["response"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let painted: Vec<f64> = marks["painted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let deltas: Vec<f64> = response.iter().zip(&painted).map(|(r, p)| p - r).collect();
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let (raw, gz) = bundle_size(&dist);
    let (history_raw, history_gz) = bundle_size(&dist.join("history"));
    println!("\n## panel: {secs} s in headless Chromium, 10 new decisions a second");
    println!(
        "polls with new data: {}; response to painted frame: median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        deltas.len(),
        percentile(&deltas, 50.0),
        percentile(&deltas, 95.0),
        percentile(&deltas, 100.0)
    );
    println!(
        "navigation start to first live data painted: {:.0} ms",
        painted.first().copied().unwrap_or(f64::NAN)
    );
    println!(
        "live page (/), WASM + JS: {:.1} KiB raw, {:.1} KiB gzipped (-9)",
        raw as f64 / 1024.0,
        gz as f64 / 1024.0
    );
    println!(
        "History page (/history, its own bundle), WASM + JS: {:.1} KiB raw, {:.1} KiB gzipped (-9)",
        history_raw as f64 / 1024.0,
        history_gz as f64 / 1024.0
    );
}

/// Decision to pixel: the panel on the stream in headless Chromium while 10
/// decisions a second arrive; for each, the time from the decision's own
/// timestamp (taken by the server as it records it) to the panel's
/// `decision-painted:<seq>` Performance mark (set on the animation frame
/// after the row is in the DOM). Same machine, same clock.
async fn pixel(secs: u64) {
    let server = Server::start(&["--buffer-size", "1000"]);
    let latencies = decision_to_pixel(&server, &server, secs).await;
    print_pixel(
        &format!(
            "pixel: decision to painted frame over the stream, {secs} s in headless Chromium, 10 decisions/s"
        ),
        &latencies,
    );
}

/// A `## title` and the decision-to-pixel latencies' summary.
fn print_pixel(title: &str, latencies: &[f64]) {
    println!("\n## {title}");
    println!(
        "decisions painted and matched {}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(latencies, 50.0),
        percentile(latencies, 95.0),
        percentile(latencies, 100.0)
    );
}

/// A panel on `shown_on`, a writer posting 10 decisions/s to `written_to`
/// for `secs`: each decision's time from being recorded (its timestamp) to
/// the frame that painted it (the panel's `decision-painted:SEQ` mark), in
/// ms. With two instances, the panel's instance must make no decisions of
/// its own (seqs are per instance).
async fn decision_to_pixel(shown_on: &Server, written_to: &Server, secs: u64) -> Vec<f64> {
    let c = Client::new(&written_to.base);
    let b = Browser::on_stream(&shown_on.base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(written_to.base.clone(), 10, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let marks = b
        .eval(
            "return performance.getEntriesByType('mark') \
               .filter(m => m.name.startsWith('decision-painted:')) \
               .map(m => [Number(m.name.split(':')[1]), performance.timeOrigin + m.startTime]);",
            json!([]),
        )
        .await;
    let (_, status) = c.get("/api/orchestrator/status?limit=1000").await;
    let decided: std::collections::HashMap<u64, f64> = status["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["id"]
                .as_str()
                .is_some_and(|id| id.starts_with(status["instance"]["id"].as_str().unwrap_or("?")))
        })
        .map(|d| {
            let at = chrono::DateTime::parse_from_rfc3339(d["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_micros() as f64
                / 1_000.0;
            (d["seq"].as_u64().unwrap(), at)
        })
        .collect();
    b.close().await;
    marks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| Some(m[1].as_f64()? - decided.get(&m[0].as_u64()?)?))
        .collect()
}

/// The what-if slider in headless Chromium with 100 decisions buffered (with
/// signals and token counts, every tier priced): `moves` moves, each timed
/// in the page from the `input` event to the threshold label patched (the
/// shared crate's what-if over the buffer, the histogram line and table
/// rewritten), to a forced layout after it, and to the next animation frame.
async fn slider(moves: usize) {
    let server = Server::start(&tests::PRICE_ARGS);
    let c = Client::new(&server.base);
    for n in 0..100u64 {
        let score = ((n * 37) % 151) as f64 / 10.0;
        let tier = if n % 5 == 0 {
            "fast"
        } else if score >= 7.0 {
            "powerful"
        } else {
            "balanced"
        };
        let mode = if n % 5 == 0 { "simple" } else { "two-stage" };
        let (code, _) = c
            .post(
                "/api/orchestrator/decisions",
                &json!({"query": format!("decision {n}"), "tier": tier, "score": score,
                        "decisionTimeMs": 0.5, "mode": mode,
                        "signals": [{"name": "length", "weight": score / 2.0}, {"name": "technical vocabulary", "weight": score / 2.0}],
                        "usage": {"promptTokens": 1000 + n * 10, "completionTokens": 500 + n * 5}}),
            )
            .await;
        assert_eq!(code, 201);
    }
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || async {
        b.eval(
            "return [...document.querySelectorAll('.hist-bar')].reduce((n, e) => n + Number(e.dataset.count), 0);",
            json!([]),
        )
        .await
            == 100
    })
    .await
    .expect("the histogram holds the 100 decisions");
    // Up and down the scale, every position differing from the last.
    let positions: Vec<f64> = (0..moves)
        .map(|i| {
            let step = i % 60;
            let k = if step <= 30 { step } else { 60 - step };
            k as f64 * 0.5
        })
        .collect();
    let timings = b
        .eval(
            "const s = document.querySelector('[data-testid=whatif-slider]'); \
             const label = document.querySelector('[data-testid=whatif-threshold]'); \
             const once = v => new Promise(resolve => { \
               const t0 = performance.now(); \
               const seen = new MutationObserver(() => { \
                 if (label.textContent !== v.toFixed(1)) return; \
                 seen.disconnect(); \
                 const dom = performance.now(); \
                 document.body.offsetHeight; \
                 const layout = performance.now(); \
                 requestAnimationFrame(() => resolve([dom - t0, layout - t0, performance.now() - t0])); \
               }); \
               seen.observe(label, {childList: true, characterData: true, subtree: true}); \
               s.value = String(v); \
               s.dispatchEvent(new Event('input', {bubbles: true})); \
             }); \
             return (async () => { const out = []; let last = Number(s.value); \
               for (const v of arguments[0]) { if (v === last) continue; last = v; \
                 out.push(await once(v)); await new Promise(r => setTimeout(r, 30)); } \
               return out; })();",
            json!([positions]),
        )
        .await;
    let rows = timings.as_array().expect("timings");
    let column = |i: usize| -> Vec<f64> { rows.iter().filter_map(|r| r[i].as_f64()).collect() };
    let (dom, layout, frame) = (column(0), column(1), column(2));
    println!("\n## slider: what-if moves in headless Chromium, 100 decisions buffered");
    for (what, v) in [
        ("input to DOM patched", &dom),
        ("input to layout done", &layout),
        ("input to next animation frame", &frame),
    ] {
        println!(
            "{what}: {} moves, median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            v.len(),
            percentile(v, 50.0),
            percentile(v, 95.0),
            percentile(v, 100.0)
        );
    }
    let within = frame.iter().filter(|ms| **ms <= 1000.0 / 60.0).count();
    println!(
        "moves painted in the frame after the input (<= 16.7 ms): {within} of {} ({:.1}%)",
        frame.len(),
        within as f64 / frame.len().max(1) as f64 * 100.0
    );
    b.close().await;
}

/// One idle stream client: opens the stream, reads its opening frames,
/// then reads and counts until the server ends it.
async fn stream_client(
    addr: std::net::SocketAddr,
    received: Arc<std::sync::atomic::AtomicU64>,
    opened: tokio::sync::mpsc::Sender<()>,
) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let req = format!(
        "GET /api/orchestrator/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    let mut announced = false;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::Relaxed);
                if !announced {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(13).any(|w| w == b"event: status") {
                        announced = true;
                        seen = Vec::new();
                        let _ = opened.send(()).await;
                    }
                }
            }
        }
    }
}

/// N idle stream clients (our own load program, this process; the server
/// is another): the server's memory with them open, its CPU while the
/// status changes once a second (each change pushed to every client), and
/// the status endpoint's throughput with them connected against the bare
/// handler's (wrk, a third process).
async fn streams(n: usize) {
    let wanted = n as u64 + 1_024;
    let got = rlimit::increase_nofile_limit(wanted).unwrap_or(0);
    assert!(got >= wanted, "open-files limit {got} < {wanted}");
    let max = n.to_string();
    let conns = (n + 512).to_string();
    let server = Server::start(&["--max-streams", &max, "--max-connections", &conns]);
    let c = Client::new(&server.base);
    fill(&c, 100).await;
    let rss_before = rss_kib(server.pid()).unwrap();

    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        if i % 1000 == 0 {
            eprintln!(
                "opening stream {i} of {n} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
        // At most 256 connecting at once: the listen backlog stays short.
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        let (received, tx) = (Arc::clone(&received), tx.clone());
        let (ptx, mut prx) = tokio::sync::mpsc::channel::<()>(1);
        clients.push(tokio::spawn(stream_client(server.addr, received, ptx)));
        tokio::spawn(async move {
            if prx.recv().await.is_some() {
                let _ = tx.send(());
            }
            drop(permit);
            // Keep the receiver alive: the client may announce once only.
            std::future::pending::<()>().await;
        });
    }
    drop(tx);
    for i in 0..n {
        if tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            panic!("only {i} of {n} streams opened");
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let (_, health) = c.get("/api/health").await;
    assert_eq!(
        health["streams"]["open"].as_u64(),
        Some(n as u64),
        "{health}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open = rss_kib(server.pid()).unwrap();

    // Idle: no change at all for 10 s.
    let cpu0 = cpu_seconds(server.pid()).unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_seconds(server.pid()).unwrap() - cpu0) / t0.elapsed().as_secs_f64();

    // One status change a second (a decision each), 30 s.
    let bytes0 = received.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds(server.pid()).unwrap();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(server.base.clone(), 1, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let changes = w.await.unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let busy_cpu = (cpu_seconds(server.pid()).unwrap() - cpu0) / wall;
    let pushed = received.load(Ordering::Relaxed) - bytes0;
    let rss_busy = rss_kib(server.pid()).unwrap();

    // Throughput of the status endpoint with every stream connected, against
    // the bare handler of the same bytes, three alternating rounds.
    let (bare, body_file, _) = bare_twin(&c, &server).await;
    let mut ratios = Vec::new();
    let (mut a_rps, mut b_rps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let b = wrk(&bare.url(STATUS), 5);
        let a = wrk(&server.url(STATUS), 5);
        ratios.push(a.rps / b.rps);
        a_rps.push(a.rps);
        b_rps.push(b.rps);
    }
    std::fs::remove_file(&body_file).ok();
    let (_, health) = c.get("/api/health").await;
    let still_open = health["streams"]["open"].as_u64().unwrap_or(0);

    println!("\n## streams: {n} idle stream clients (this process), server another, wrk a third");
    println!("opened in {connect_secs:.1} s; still open after everything: {still_open}");
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB with {n} streams open, {:.1} MiB after 30 s of pushes ({:.1} KiB per stream)",
        rss_before as f64 / 1024.0,
        rss_open as f64 / 1024.0,
        rss_busy as f64 / 1024.0,
        (rss_open as f64 - rss_before as f64) / n as f64
    );
    println!(
        "server CPU: {:.1} % of one core idle; {:.1} % at 1 status change per second ({changes} changes in {wall:.1} s, {:.1} MiB pushed, {:.0} B per stream per change)",
        idle_cpu * 100.0,
        busy_cpu * 100.0,
        pushed as f64 / (1 << 20) as f64,
        pushed as f64 / n as f64 / changes.max(1) as f64
    );
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "status throughput with {n} streams open / bare handler: {:.3} (median of rounds {}; {:.0} vs {:.0} requests/s)",
        percentile(&ratios, 50.0),
        shown.join(", "),
        percentile(&a_rps, 50.0),
        percentile(&b_rps, 50.0)
    );
    for client in clients {
        client.abort();
    }
}

/// One idle panel for a minute: on the stream (heartbeats only) against
/// polling with If-None-Match (a 304 a second). Bytes over the wire as the
/// server writes them (the stream's request is sent once, before the minute).
async fn stream_idle() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    fill(&c, 10).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /api/orchestrator/stream HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut opening = Vec::new();
    // Chunked: each event ends "\n\n" and its chunk "\r\n".
    while !(opening.ends_with(b"\n\n\r\n") && opening.windows(13).any(|w| w == b"event: status")) {
        let n = s.read(&mut buf).await.unwrap();
        opening.extend_from_slice(&buf[..n]);
    }
    let started = Instant::now();
    let mut minute = 0usize;
    while let Ok(Ok(n)) = tokio::time::timeout(
        Duration::from_secs(60).saturating_sub(started.elapsed()),
        s.read(&mut buf),
    )
    .await
    {
        if n == 0 {
            break;
        }
        minute += n;
    }
    let host = server.addr.to_string();
    let etag = status_etag(&c, &server).await;
    let (mut up, mut down) = (0usize, 0usize);
    for _ in 0..60 {
        let (code, sent, got) =
            exchange_bytes(server.addr, &poll_request(&host, Some(&etag))).unwrap();
        assert_eq!(code, 304);
        up += sent;
        down += got;
    }
    println!("\n## stream-idle: one idle panel for a minute, 10 decisions listed");
    println!("| transport | server to browser | browser to server | total |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| stream (heartbeats only; {} B request and {} B opening once) | {minute} B/min | 0 B/min | {minute} B/min |",
        req.len(),
        opening.len()
    );
    println!(
        "| polling, 304 a second | {down} B/min | {up} B/min | {} B/min |",
        up + down
    );
    println!(
        "stream / polling: {:.4} of the bytes ({:.0}x fewer)",
        minute as f64 / (up + down) as f64,
        (up + down) as f64 / minute.max(1) as f64
    );
}

/// A batch of `n` decisions as one JSON body.
fn batch_body(n: u64) -> String {
    let batch: Vec<serde_json::Value> = (0..n)
        .map(|i| reported(i, format!("batched query {i} about storage engines")))
        .collect();
    serde_json::Value::from(batch).to_string()
}

/// `clients` tasks POST `body` (a batch of `per` decisions) back to back
/// for `secs`: decisions acknowledged per second.
async fn drive_batches(base: &str, body: &str, per: u64, clients: usize, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let c = Client::new(base);
            let body = body.to_owned();
            tokio::spawn(async move {
                let mut acked = 0u64;
                let url = format!("{}/api/orchestrator/decisions", c.base());
                while Instant::now() < deadline {
                    // The answer is read whole but not decoded: the client's
                    // CPU goes to sending, as a router's would.
                    let res = c
                        .http()
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 201);
                    res.bytes().await.unwrap();
                    acked += per;
                }
                acked
            })
        })
        .collect();
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    acked as f64 / started.elapsed().as_secs_f64()
}

/// Batched ingestion with the store on and off, and one decision's latency
/// while others load the store.
async fn ingest(secs: u64) {
    const CLIENTS: usize = 32;
    let body = batch_body(100);
    // The three servers side by side, measured in alternating rounds so
    // drift on a shared machine hits them alike; each round's ratios are
    // of runs back to back, and the figures are their medians.
    let servers = [
        ("--in-memory", Server::start(&["--in-memory"])),
        ("store, --sync normal (default)", Server::start(&[])),
        ("store, --sync full", Server::start(&["--sync", "full"])),
    ];
    for (_, server) in &servers {
        drive_batches(&server.base, &body, 100, CLIENTS, 1).await;
    }
    let rounds = 3;
    let mut rates = vec![Vec::new(); servers.len()];
    for _ in 0..rounds {
        for (k, (_, server)) in servers.iter().enumerate() {
            rates[k].push(drive_batches(&server.base, &body, 100, CLIENTS, secs).await);
        }
    }
    drop(servers);
    println!(
        "\n## ingest: batches of 100, {CLIENTS} clients, {rounds} alternating rounds of {secs} s, medians"
    );
    println!(
        "| server | decisions/s acknowledged | vs --in-memory (median of the rounds' ratios) |"
    );
    println!("| --- | ---: | ---: |");
    let labels = [
        "--in-memory",
        "store, --sync normal (default)",
        "store, --sync full",
    ];
    for (k, label) in labels.iter().enumerate() {
        let ratios: Vec<f64> = rates[k].iter().zip(&rates[0]).map(|(a, b)| a / b).collect();
        println!(
            "| {label} | {:.0} | {:.2} (rounds {}) |",
            percentile(&rates[k], 50.0),
            percentile(&ratios, 50.0),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Single decisions: 32 clients each posting one at a time, while 2 more
    // post batches of 100: every single decision's time to its 201.
    let server = Server::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let load: Vec<_> = (0..2)
        .map(|_| {
            let base = server.base.clone();
            let body = body.clone();
            tokio::spawn(async move { drive_batches(&base, &body, 100, 1, secs).await })
        })
        .collect();
    let singles: Vec<_> = (0..32)
        .map(|k| {
            let c = Client::new(&server.base);
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let body = reported(n, format!("single {k}-{n}")).to_string();
                    let t = Instant::now();
                    let (code, _) = c.post_raw("/api/orchestrator/decisions", body).await;
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(code, 201);
                    n += 1;
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for s in singles {
        times.extend(s.await.unwrap());
    }
    let mut batched = 0.0;
    for l in load {
        batched += l.await.unwrap();
    }
    println!(
        "\nsingle decisions, 32 clients one at a time beside 2 batch clients ({batched:.0} decisions/s), --sync normal: \
         {} acknowledged, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 100.0)
    );
}

/// Bytes under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A server on `dir`: how long from spawn to its first status answered.
async fn start_timed(dir: &str) -> (Server, Duration) {
    let t = Instant::now();
    let server = Server::start(&["--data-dir", dir]);
    let c = Client::new(&server.base);
    let (code, _) = c.get(STATUS).await;
    assert_eq!(code, 200);
    (server, t.elapsed())
}

/// A store holding `n` decisions: its disk use, start-up time, the history
/// over 7 days of full per-minute rollups, and an export.
async fn store(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let (server, empty_start) = start_timed(&path).await;
    let body = batch_body(1_000);
    let started = Instant::now();
    let per = 1_000usize;
    let rounds = n.div_ceil(per);
    let c = Client::new(&server.base);
    let mut left = rounds;
    while left > 0 {
        let k = left.min(4);
        let posts: Vec<_> = (0..k)
            .map(|_| {
                let c = Client::new(&server.base);
                let body = body.clone();
                tokio::spawn(async move {
                    let (code, _) = c.post_raw("/api/orchestrator/decisions", body).await;
                    assert_eq!(code, 201);
                })
            })
            .collect();
        for p in posts {
            p.await.unwrap();
        }
        left -= k;
    }
    let fill_rate = (rounds * per) as f64 / started.elapsed().as_secs_f64();
    let total = c.status().await["totalDecisions"].as_u64().unwrap();
    assert!(server.terminate(Duration::from_secs(30)).is_some());
    let bytes = dir_bytes(dir.path());

    // Seven days of rollups for every tier, per minute and per hour,
    // copied from the periods just written (doubling the span each pass).
    {
        let conn = rusqlite::Connection::open(dir.path().join("orchestrator.db")).unwrap();
        for (table, per) in [("rollups", 1i64), ("rollups_hour", 60)] {
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.seed; CREATE TEMP TABLE seed AS SELECT * FROM {table};"
            ))
            .unwrap();
            let mut span = per;
            while span < 7 * 1_440 {
                conn.execute_batch(&format!(
                    "DELETE FROM seed; INSERT INTO seed SELECT * FROM {table};
                     UPDATE seed SET minute = minute - {span};
                     INSERT OR IGNORE INTO {table} SELECT * FROM seed;"
                ))
                .unwrap();
                span *= 2;
            }
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let rollups: i64 = rusqlite::Connection::open(dir.path().join("orchestrator.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM rollups", [], |r| r.get(0))
        .unwrap();

    let (server, full_start) = start_timed(&path).await;
    let c = Client::new(&server.base);
    assert_eq!(c.status().await["totalDecisions"].as_u64().unwrap(), total);
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let (code, h) = c.get("/api/orchestrator/history?from=-7d&step=1h").await;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(code, 200);
        assert_eq!(h["times"].as_array().unwrap().len(), 168);
    }
    let t = Instant::now();
    let exported = c
        .text("/api/orchestrator/decisions?format=ndjson&limit=1000&before=500000")
        .await;
    let page_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut stream = c
        .http()
        .get(server.url("/api/orchestrator/decisions?format=csv"))
        .send()
        .await
        .unwrap();
    let mut csv_bytes = 0usize;
    while let Some(chunk) = stream.chunk().await.unwrap() {
        csv_bytes += chunk.len();
    }
    let csv_secs = t.elapsed().as_secs_f64();
    let rss = rss_kib(server.pid()).unwrap_or(0);
    println!("\n## store: {total} decisions stored through the API (batches of 1,000, 4 clients)");
    println!("| measure | value | target | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| filling rate | {fill_rate:.0} decisions/s | | |");
    println!(
        "| disk use (database + WAL) | {:.1} MiB, {:.1} MiB per million decisions | reported | |",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / (total as f64 / 1e6)
    );
    println!(
        "| start-up, empty store (spawn to first status) | {:.0} ms | | |",
        empty_start.as_secs_f64() * 1e3
    );
    println!(
        "| start-up, {total} decisions and {rollups} rollup rows | {:.0} ms | < 1000 ms | {:.2} |",
        full_start.as_secs_f64() * 1e3,
        full_start.as_secs_f64()
    );
    println!(
        "| history, 7 days at 1 h (168 points from {rollups} rows), 200 requests | p50 {:.2} ms, p95 {:.2} ms | p95 <= 20 ms | {:.2} |",
        percentile(&times, 50.0),
        percentile(&times, 95.0),
        percentile(&times, 95.0) / 20.0
    );
    println!(
        "| a page of 1,000 deep in the log (NDJSON, {} bytes) | {page_ms:.1} ms | | |",
        exported.len()
    );
    println!(
        "| CSV export of all {total} | {:.1} s, {:.1} MiB, {:.0} decisions/s; server RSS after {:.1} MiB | | |",
        csv_secs,
        csv_bytes as f64 / 1048576.0,
        total as f64 / csv_secs,
        rss as f64 / 1024.0
    );
}

/// This instance's own decisions (its line in `instances`) and the
/// aggregate its status shows.
async fn own_and_shown(c: &Client) -> (u64, u64) {
    let s = c.status().await;
    let own = s["instances"][0]["totalDecisions"].as_u64().unwrap();
    (own, s["totalDecisions"].as_u64().unwrap())
}

/// Three instances (store on) on one real Redis: batched ingestion spread
/// over them (decisions/s in total, the aggregate exact at the end, Redis
/// commands per decision from `INFO commandstats`); the status endpoint of
/// one of them against the bare handler while the other two write; and
/// a decision made on one to the pixel on another's panel.
async fn cluster(secs: u64) {
    const CLIENTS: usize = 12;
    let redis = tests::Redis::start();
    let url = redis.url();
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(&["--redis", &url, "--buffer-size", "1000"]))
        .collect();
    let clients: Vec<Client> = nodes.iter().map(|n| Client::new(&n.base)).collect();
    let body = batch_body(100);
    for n in &nodes {
        drive_batches(&n.base, &body, 100, 2, 1).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let mut before = 0;
    for c in &clients {
        before += own_and_shown(c).await.0;
    }
    let load: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (base, body) = (n.base.clone(), body.clone());
            tokio::spawn(async move { drive_batches(&base, &body, 100, CLIENTS / 3, secs).await })
        })
        .collect();
    let mut rate = 0.0;
    for l in load {
        rate += l.await.unwrap();
    }
    let ended = Instant::now();
    let mut own = 0;
    for c in &clients {
        own += own_and_shown(c).await.0;
    }
    // Exact on every instance: how long after the load it took.
    let mut exact_after = None;
    while ended.elapsed() < Duration::from_secs(30) {
        let mut all = true;
        for c in &clients {
            all &= own_and_shown(c).await.1 == own;
        }
        if all {
            exact_after = Some(ended.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commands = redis.commands();
    let decisions = own - before;
    println!(
        "\n## cluster: three instances (store on) on one Redis, batches of 100, {CLIENTS} clients spread over them, {secs} s"
    );
    println!(
        "decisions/s acknowledged in total: {rate:.0}; {decisions} decisions; aggregate exact on every instance: {}",
        match exact_after {
            Some(t) => format!("yes, {} ms after the load ended", t.as_millis()),
            None => "NO, not within 30 s".into(),
        }
    );
    println!(
        "Redis commands during the load and until exact: {commands} = {:.5} per decision",
        commands as f64 / decisions as f64
    );
    let stats = redis.cli(&["INFO", "commandstats"]);
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        println!("  {line}");
    }

    // The status endpoint of node 0 against the bare handler, the other two
    // writing 500 decisions/s each (their decisions reach node 0 through
    // Redis and change its status), through both handlers' runs: they are
    // other processes on the same two cores.
    let (bare, body_file, status_body) = bare_twin(&clients[0], &nodes[0]).await;
    let writers = [nodes[1].base.clone(), nodes[2].base.clone()];
    let rounds = 5;
    let (a_runs, b_runs, write_rates) =
        floor_rounds(&nodes[0], &bare, &writers, 1_000, true, secs, rounds).await;
    std::fs::remove_file(&body_file).ok();
    let ratios: Vec<f64> = a_runs
        .iter()
        .zip(&b_runs)
        .map(|(a, b)| a.rps / b.rps)
        .collect();
    let rps = |runs: &[tests::bench::WrkReport]| {
        percentile(&runs.iter().map(|r| r.rps).collect::<Vec<_>>(), 50.0)
    };
    println!(
        "\n## cluster floor: node 0's status ({} bytes) with wrk -t2 -c64 -d{secs}s, {rounds} alternating rounds, the others writing (node 0 saw {:.0} decisions/s)",
        status_body.len(),
        percentile(&write_rates, 50.0)
    );
    println!(
        "status {:.0} requests/s, bare {:.0}: ratio {:.3}, median of the rounds' ratios ({})",
        rps(&a_runs),
        rps(&b_runs),
        percentile(&ratios, 50.0),
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(nodes);

    // Cross-instance push: a panel on a fresh instance A, decisions posted to B.
    let a = Server::start(&["--redis", &url, "--in-memory"]);
    let b = Server::start(&["--redis", &url, "--in-memory", "--buffer-size", "1000"]);
    let latencies = decision_to_pixel(&a, &b, secs).await;
    print_pixel(
        &format!(
            "cluster pixel: decision on B to painted frame on A's panel, {secs} s, 10 decisions/s"
        ),
        &latencies,
    );
}
