//! Batched ingestion and the store: throughput, acknowledgement, start
//! and history queries over a million decisions.

use super::*;

/// A batch of `n` decisions as one JSON body.
pub(super) fn batch_body(n: u64) -> String {
    let batch: Vec<serde_json::Value> = (0..n)
        .map(|i| reported(i, format!("batched query {i} about storage engines")))
        .collect();
    serde_json::Value::from(batch).to_string()
}

/// `clients` tasks POST `body` (a batch of `per` decisions) back to back
/// for `secs`: decisions acknowledged per second.
pub(super) async fn drive_batches(
    base: &str,
    body: &str,
    per: u64,
    clients: usize,
    secs: u64,
) -> f64 {
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
pub(super) async fn ingest(secs: u64) {
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
pub(super) fn dir_bytes(dir: &std::path::Path) -> u64 {
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
pub(super) async fn start_timed(dir: &str) -> (Server, Duration) {
    let t = Instant::now();
    let server = Server::start(&["--data-dir", dir]);
    let c = Client::new(&server.base);
    let (code, _) = c.get(STATUS).await;
    assert_eq!(code, 200);
    (server, t.elapsed())
}

/// A store holding `n` decisions: its disk use, start-up time, the history
/// over 7 days of full per-minute rollups, and an export.
pub(super) async fn store(n: usize) {
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
