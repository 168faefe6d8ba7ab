//! The router's front door measured (`bench openai`): the latency
//! `/v1/chat/completions` adds over its upstream at a fixed rate, the most
//! requests per second through it against the upstream's own, and how soon
//! each streamed chunk reaches the client. The upstream is
//! `mock_upstream`, a process of its own that answers at once; every load
//! goes to it straight, through `bare_proxy` (an axum handler that only
//! passes the request on with reqwest: the floor of one more HTTP hop on
//! this machine) and through the router, side by side in one run. The
//! routers log as an operator runs them (`RUST_LOG=info`: the access log,
//! to a file).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::bench::{cpu_seconds, percentile};
use crate::{Server, unix_micros};

/// A binary of this package next to the running one.
fn sibling(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .expect("the running binary has a path")
        .with_file_name(name)
}

fn body(stream: bool) -> String {
    body_of("auto", stream)
}

fn body_of(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": "What is Python?"}]})
    .to_string()
}

/// Requests at `rate` per second for `secs`, each on a task of its own (a
/// slow answer never holds back the next request), timed from its send to
/// its last byte. Timing from when it was due would add the load
/// generator's own timer lag (tokio's timers tick in milliseconds).
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    secs: u64,
    model: &'static str,
) -> (Vec<f64>, u64) {
    let n = rate * secs;
    let start = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due).await;
        let (client, url) = (client.clone(), url.to_owned());
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body_of(model, false))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200);
            let ok = match ok {
                Some(r) => r.bytes().await.is_ok(),
                None => false,
            };
            (sent.elapsed().as_secs_f64() * 1e6, ok)
        }));
    }
    let mut latencies = Vec::with_capacity(n as usize);
    let mut failed = 0;
    for c in calls {
        let (us, ok) = c.await.expect("a call task");
        latencies.push(us);
        failed += u64::from(!ok);
    }
    (latencies, failed)
}

/// Completed requests per second of `clients` back-to-back callers.
async fn closed_loop(client: &reqwest::Client, url: &str, clients: usize, secs: u64) -> f64 {
    let end = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < end {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body(false))
                        .send()
                        .await;
                    if let Ok(r) = r
                        && r.status() == 200
                        && r.bytes().await.is_ok()
                    {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.expect("a worker");
    }
    total as f64 / secs as f64
}

/// Per chunk, µs from the mock writing it to this client reading it, over
/// `streams` streams, `parallel` at a time.
async fn chunk_delays(
    client: &reqwest::Client,
    url: &str,
    streams: usize,
    parallel: usize,
) -> Vec<f64> {
    let mut delays = Vec::new();
    for _ in 0..streams.div_ceil(parallel) {
        let batch: Vec<_> = (0..parallel)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_owned());
                tokio::spawn(async move {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body(true))
                        .send()
                        .await
                        .expect("a stream opens");
                    let mut bytes = r.bytes_stream();
                    let mut pending = Vec::new();
                    let mut out = Vec::new();
                    while let Some(Ok(b)) = bytes.next().await {
                        let now = unix_micros();
                        pending.extend_from_slice(&b);
                        while let Some(at) = pending.windows(2).position(|w| w == b"\n\n") {
                            let event: Vec<u8> = pending.drain(..at + 2).collect();
                            let data = String::from_utf8_lossy(&event);
                            let Some(json) = data.trim().strip_prefix("data: ") else {
                                continue;
                            };
                            if let Ok(v) = serde_json::from_str::<Value>(json)
                                && let Some(sent) = v["sent"].as_u64()
                            {
                                out.push(now.saturating_sub(sent) as f64);
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        for t in batch {
            delays.extend(t.await.expect("a stream task"));
        }
    }
    delays
}

fn summary(us: &[f64]) -> String {
    format!(
        "p50 {:.0} µs, p99 {:.0} µs (n = {})",
        percentile(us, 50.0),
        percentile(us, 99.0),
        us.len()
    )
}

/// A router in front of `upstream` (an OpenAI base URL) on every tier,
/// logging at info into `log`, with `extra` flags.
fn router(upstream: &str, log: &std::path::Path, extra: &[&str]) -> Server {
    let mut args: Vec<String> = ["fast", "balanced", "powerful"]
        .iter()
        .flat_map(|t| ["--upstream".to_owned(), format!("{t}={upstream}")])
        .collect();
    args.extend(["--retries", "0", "--max-inflight", "100000"].map(String::from));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&args, &[("RUST_LOG", "info")], Some(log))
}

/// Each target's latency at `rate` requests/s: `rounds` alternating rounds
/// of `secs`, after a warm-up second each.
async fn latencies(
    client: &reqwest::Client,
    targets: &[(&str, String)],
    rate: u64,
    rounds: usize,
    secs: u64,
) -> Vec<Vec<f64>> {
    latencies_of(client, targets, rate, rounds, secs, "auto").await
}

/// [`latencies`] of requests for `model`.
async fn latencies_of(
    client: &reqwest::Client,
    targets: &[(&str, String)],
    rate: u64,
    rounds: usize,
    secs: u64,
    model: &'static str,
) -> Vec<Vec<f64>> {
    for (_, url) in targets {
        open_loop(client, url, rate, 1, model).await;
    }
    let mut lat = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, (name, url)) in targets.iter().enumerate() {
            let (l, failed) = open_loop(client, url, rate, secs, model).await;
            assert_eq!(failed, 0, "{name}: {failed} requests failed");
            lat[i].extend(l);
        }
    }
    lat
}

/// p50 and p99 of `measured` less those of `base`, in µs.
fn delta(measured: &[f64], base: &[f64]) -> (f64, f64) {
    (
        percentile(measured, 50.0) - percentile(base, 50.0),
        percentile(measured, 99.0) - percentile(base, 99.0),
    )
}

/// `p50 +X µs, p99 +Y µs` of `measured` over `base`.
fn shift(measured: &[f64], base: &[f64]) -> String {
    let (d50, d99) = delta(measured, base);
    format!("p50 {d50:+.0} µs, p99 {d99:+.0} µs")
}

/// [`shift`] with each figure as a share of its bound (100 µs, 1 ms).
fn added(measured: &[f64], base: &[f64]) -> String {
    let (d50, d99) = delta(measured, base);
    format!(
        "p50 {d50:+.0} µs ({:.2} of the 100 µs bound), p99 {d99:+.0} µs ({:.2} of the 1 ms bound)",
        d50 / 100.0,
        d99 / 1_000.0
    )
}

/// One line per target: its latency summary.
fn rows(targets: &[(&str, String)], lat: &[Vec<f64>]) {
    for ((name, _), l) in targets.iter().zip(lat) {
        println!("  {name}: {}", summary(l));
    }
}

/// LiteLLM's master key in the comparison.
const LITELLM_KEY: &str = "sk-bench";

/// LiteLLM's proxy (as the tests install it) in front of the same mock, and
/// the router beside it, at a rate LiteLLM keeps up with.
async fn litellm(
    client: &reqwest::Client,
    mock: &Server,
    router: &Server,
    rounds: usize,
    secs: u64,
) {
    let config = format!(
        "model_list:\n- model_name: auto\n  litellm_params:\n    model: openai/mock-1\n    api_base: {}\n    api_key: unused\n\
         router_settings:\n  num_retries: 0\nlitellm_settings:\n  num_retries: 0\n",
        mock.url("/v1")
    );
    let proxy = crate::litellm::start(&config, LITELLM_KEY).await;
    let completions = "/v1/chat/completions";
    let targets = [
        ("straight to the mock", mock.url(completions)),
        ("router, --in-memory", router.url(completions)),
        (
            "LiteLLM proxy 1.108.7",
            format!("{}/chat/completions", proxy.base_url),
        ),
    ];
    let rate = 100;
    let lat = latencies(client, &targets, rate, rounds, secs).await;
    println!(
        "beside LiteLLM's proxy, in front of the same mock, at {rate} requests/s ({rounds} alternating rounds of {secs} s):"
    );
    rows(&targets, &lat);
    println!("  added by the router: {}", added(&lat[1], &lat[0]));
    println!("  added by LiteLLM: {}", shift(&lat[2], &lat[0]));
}

/// The whole benchmark; `secs` per round.
pub async fn run(secs: u64) {
    let logs = tempfile::tempdir().expect("a temp dir");
    let mock = Server::spawn(&sibling("mock_upstream"), &[]);
    let upstream = mock.url("/v1");
    let bare = Server::spawn(&sibling("bare_proxy"), &[&mock.url("/v1/chat/completions")]);
    let memory = router(&upstream, &logs.path().join("memory.log"), &["--in-memory"]);
    let stored = router(&upstream, &logs.path().join("stored.log"), &[]);
    // Every request carries LiteLLM's key; the mock and the router (without
    // --api-key) take no notice of it.
    let auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {LITELLM_KEY}"))
        .expect("a header value");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .default_headers(
            [(reqwest::header::AUTHORIZATION, auth)]
                .into_iter()
                .collect(),
        )
        .build()
        .expect("a client");
    let completions = "/v1/chat/completions";
    let targets = [
        ("straight to the mock", mock.url(completions)),
        ("bare proxy (axum + reqwest)", bare.url(completions)),
        ("router, --in-memory", memory.url(completions)),
        ("router, store on", stored.url(completions)),
    ];
    let rounds = 3;
    let lat = latencies(&client, &targets, 1_000, rounds, secs).await;
    println!(
        "front door at 1,000 requests/s of non-streaming completions to a mock that answers at once ({rounds} alternating rounds of {secs} s, latency from send to last byte):"
    );
    rows(&targets, &lat);
    for (by, i) in [
        ("the bare proxy (one more HTTP hop)", 1),
        ("the router (--in-memory)", 2),
        ("the router (store on)", 3),
    ] {
        println!("  added by {by}: {}", added(&lat[i], &lat[0]));
    }
    println!(
        "  the router's own share (--in-memory over the bare proxy): {}",
        shift(&lat[2], &lat[1])
    );

    // The store's commit overlaps the upstream call: with an upstream that
    // takes longer than a commit group, it should add nothing.
    let slow = Server::spawn(&sibling("mock_upstream"), &["20", "10", "20"]);
    let slow_memory = router(
        &slow.url("/v1"),
        &logs.path().join("slow-memory.log"),
        &["--in-memory"],
    );
    let slow_stored = router(&slow.url("/v1"), &logs.path().join("slow-stored.log"), &[]);
    let slow_targets = [
        ("straight to the mock", slow.url(completions)),
        ("router, --in-memory", slow_memory.url(completions)),
        ("router, store on", slow_stored.url(completions)),
    ];
    let lat = latencies(&client, &slow_targets, 1_000, rounds, secs).await;
    println!("the same with a mock that answers after 20 ms:");
    rows(&slow_targets, &lat);
    for (by, i) in [
        ("the router (--in-memory)", 1),
        ("the router (store on)", 2),
    ] {
        println!("  added by {by}: {}", added(&lat[i], &lat[0]));
    }
    println!(
        "  the store's own share (store on over --in-memory): {}",
        shift(&lat[2], &lat[1])
    );
    drop((slow_memory, slow_stored, slow));

    let clients = 32;
    let mut rps = vec![Vec::new(); 3];
    // CPU per request: each process's user + system time over its rounds
    // (from /proc), divided by the requests it answered in them.
    let processes = [&mock, &bare, &memory];
    let mut cpu = [0.0f64; 3];
    let mut answered = [0.0f64; 3];
    for _ in 0..rounds {
        for (i, (_, url)) in targets[..3].iter().enumerate() {
            let pid = processes[i].pid();
            let before = cpu_seconds(pid).expect("/proc of a live process");
            let rate = closed_loop(&client, url, clients, secs).await;
            cpu[i] += cpu_seconds(pid).expect("/proc of a live process") - before;
            answered[i] += rate * secs as f64;
            rps[i].push(rate);
        }
    }
    let per = |i: usize| cpu[i] / answered[i] * 1e6;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratios = |of: usize, to: usize| {
        rps[of]
            .iter()
            .zip(&rps[to])
            .map(|(a, b)| format!("{:.3}", a / b))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (m, b, r) = (mean(&rps[0]), mean(&rps[1]), mean(&rps[2]));
    println!(
        "most requests/s ({clients} clients back to back, {rounds} alternating rounds of {secs} s): mock {m:.0}/s, bare proxy {b:.0}/s, router (--in-memory) {r:.0}/s"
    );
    println!(
        "  router / bare proxy {:.3} (bound >= 0.8; rounds {}); router / mock {:.3} (rounds {}); bare proxy / mock {:.3}",
        r / b,
        ratios(2, 1),
        r / m,
        ratios(2, 0),
        b / m,
    );
    println!(
        "CPU per request under that load (user + system, /proc): mock {:.1} µs, bare proxy {:.1} µs, router (--in-memory) {:.1} µs; router / bare proxy {:.2} (bound <= 1.5)",
        per(0),
        per(1),
        per(2),
        per(2) / per(1)
    );

    let direct = chunk_delays(&client, &targets[0].1, 64, 8).await;
    let routed = chunk_delays(&client, &targets[2].1, 64, 8).await;
    println!(
        "streamed chunks (20 per stream, 10 ms apart, 8 streams at once, 64 streams), from the mock writing each to the client reading it:"
    );
    println!("  straight: {}", summary(&direct));
    println!("  through the router: {}", summary(&routed));
    let (_, d99) = delta(&routed, &direct);
    println!(
        "  forwarding added: {} ({:.2} of the 1 ms bound)",
        shift(&routed, &direct),
        d99 / 1_000.0
    );

    litellm(&client, &mock, &memory, rounds, secs).await;
}

/// Shadow judging off the request path (`bench shadow`): the latency of
/// `/v1/chat/completions` (model `fast`, so every answer is a Q2 answer and
/// every one is sampled at rate 1) with `--shadow-rate 1` beside
/// `--shadow-rate 0`, side by side in one run, in front of a mock that
/// answers after 2 ms (so that Q4's answers and the judge's are under way
/// while users are answered). The mock's replies are no verdicts: every
/// pair ends as a judge failure after all three shadow calls, the work is
/// the same.
pub async fn shadow(secs: u64) {
    let logs = tempfile::tempdir().expect("a temp dir");
    let mock = Server::spawn(&sibling("mock_upstream"), &["20", "0", "2"]);
    let upstream = mock.url("/v1");
    let off = router(&upstream, &logs.path().join("off.log"), &["--in-memory"]);
    let on = router(
        &upstream,
        &logs.path().join("on.log"),
        &["--in-memory", "--shadow-rate", "1"],
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("a client");
    let completions = "/v1/chat/completions";
    let targets = [
        ("straight to the mock", mock.url(completions)),
        ("router, --shadow-rate 0", off.url(completions)),
        ("router, --shadow-rate 1", on.url(completions)),
    ];
    let rounds = 5;
    // With CPU to spare, and with none (2 cores: the mock, both routers and
    // this load share them, and rate 1 triples the upstream calls).
    for rate in [200, 500] {
        let lat = latencies_of(&client, &targets, rate, rounds, secs, "fast").await;
        println!(
            "shadow judging at {rate} requests/s of model \"fast\" to a mock that answers after 2 ms ({rounds} alternating rounds of {secs} s):"
        );
        rows(&targets, &lat);
        let (p50, p99) = (
            percentile(&lat[2], 50.0) / percentile(&lat[1], 50.0),
            percentile(&lat[2], 99.0) / percentile(&lat[1], 99.0),
        );
        println!(
            "  --shadow-rate 1 over --shadow-rate 0: p50 {p50:.3}x, p99 {p99:.3}x (bound: within 1.05)"
        );
    }
    let status: Value = client
        .get(on.url("/api/orchestrator/status"))
        .send()
        .await
        .expect("the status")
        .json()
        .await
        .expect("JSON");
    let s = &status["quality"]["tiers"][0]["sinceStart"];
    println!(
        "  shadow samples of the rate-1 router: {} judged or failed, {} dropped at --shadow-max-inflight 4, {} Q4 failures",
        s["judgeFailures"].as_u64().unwrap_or(0) + s["pairs"].as_u64().unwrap_or(0),
        s["dropped"],
        s["q4Failures"]
    );
}
