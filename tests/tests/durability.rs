//! The embedded store, black-box against the release binary: decisions
//! acknowledged before a `kill -9` are all there after the restart, totals
//! and sequence numbers go on, the status comes back equal, and the store's
//! faults (a dir that cannot be used, a full disk, a corrupt database, a
//! second server) are refused or survived as documented.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Client, Server, eventually};

fn decision(i: usize) -> Value {
    let tiers = ["fast", "balanced", "powerful"];
    json!({
        "query": format!("crash query {i}"),
        "tier": tiers[i % 3],
        "score": (i % 16) as f64 * 0.9,
        "decisionTimeMs": 0.25,
        "usage": {"promptTokens": i % 50, "completionTokens": 7},
    })
}

/// Every stored decision's seq, from the NDJSON export.
async fn stored_seqs(c: &Client) -> Vec<u64> {
    let text = c.text("/api/orchestrator/decisions?format=ndjson").await;
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn integrity(dir: &Path) -> String {
    let conn = rusqlite::Connection::open(dir.join("orchestrator.db")).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Writers ingest single decisions and batches as fast as they can; the
/// server is killed with SIGKILL mid-flight, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_write_load_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("ORCH_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut last_seq = 0;
    for cycle in 0..cycles {
        let server = Server::start(&["--data-dir", &path]);
        let c = Client::new(&server.base);
        // What came back: totals equal the rows, nothing acknowledged lost,
        // the sequence goes on.
        let status = c.status().await;
        let seqs = stored_seqs(&c).await;
        let stored: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(stored.len(), seqs.len(), "no seq stored twice");
        let missing: Vec<_> = acked.difference(&stored).take(5).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: acknowledged but lost: {missing:?}"
        );
        assert_eq!(
            status["totalDecisions"].as_u64().unwrap(),
            stored.len() as u64,
            "cycle {cycle}: totals equal the stored decisions"
        );
        let newest = stored.iter().next_back().copied().unwrap_or(0);
        assert!(newest >= last_seq, "cycle {cycle}: seq went back");
        if let Some(d) = status["recentDecisions"].get(0) {
            assert_eq!(
                d["seq"].as_u64().unwrap(),
                newest,
                "the buffer ends at the newest"
            );
        }
        // Load, then SIGKILL while requests are in flight.
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let c = Client::new(&server.base);
            let stop = Arc::clone(&stop);
            writers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut i = w * 1_000_000 + cycle * 10_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = if w % 2 == 0 {
                        decision(i)
                    } else {
                        Value::Array((0..25).map(|k| decision(i * 100 + k)).collect())
                    };
                    let res = c
                        .http()
                        .post(format!("{}/api/orchestrator/decisions", c.base()))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    let Ok(res) = res else { break };
                    if res.status() != 201 {
                        continue;
                    }
                    let Ok(v) = res.json::<Value>().await else {
                        break;
                    };
                    match v.as_array() {
                        Some(list) => got.extend(list.iter().map(|d| d["seq"].as_u64().unwrap())),
                        None => got.push(v["seq"].as_u64().unwrap()),
                    }
                }
                got
            }));
        }
        tokio::time::sleep(Duration::from_millis(150 + (cycle as u64 * 37) % 200)).await;
        let _ = Command::new("kill")
            .args(["-9", &server.pid().to_string()])
            .status();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let got = w.await.unwrap();
            last_seq = last_seq.max(got.iter().copied().max().unwrap_or(0));
            acked.extend(got);
        }
        server.kill();
        assert_eq!(integrity(dir.path()), "ok", "cycle {cycle}");
    }
    assert!(
        acked.len() > cycles * 10,
        "the load really ran: {} acknowledged",
        acked.len()
    );
    // A last start: new decisions continue the sequence.
    let server = Server::start(&["--data-dir", &path]);
    let c = Client::new(&server.base);
    let (code, d) = c.post("/api/orchestrator/decisions", &decision(1)).await;
    assert_eq!(code, 201);
    assert!(d["seq"].as_u64().unwrap() > last_seq);
}

/// The status after a restart (clean or killed) equals the one before,
/// but for the time, the instance's start and the requests in flight.
#[tokio::test]
async fn the_status_after_a_restart_equals_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let args = [
        "--data-dir",
        path,
        "--buffer-size",
        "100",
        "--price",
        "powerful=5/15",
    ];
    let comparable = |mut s: Value| {
        s.as_object_mut().unwrap().remove("timestamp");
        s["instance"].as_object_mut().unwrap().remove("startedAt");
        for t in s["tierUtilization"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("activeRequests");
        }
        s
    };
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    let batch: Vec<Value> = (0..150).map(decision).collect();
    assert_eq!(
        c.post("/api/orchestrator/decisions", &json!(batch)).await.0,
        201
    );
    let mut one = decision(7);
    one["signals"] = json!([{"name": "length", "weight": 1.5}, {"name": "code", "weight": 4.8}]);
    one["mode"] = json!("two-stage");
    assert_eq!(c.post("/api/orchestrator/decisions", &one).await.0, 201);
    let before = comparable(c.status().await);
    assert_eq!(before["totalDecisions"], 151);
    assert_eq!(before["recentDecisions"].as_array().unwrap().len(), 100);
    // A clean stop, then a kill -9: the same status both times.
    assert!(server.terminate(Duration::from_secs(10)).is_some());
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    assert_eq!(comparable(c.status().await), before);
    let _ = Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status();
    server.kill();
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    assert_eq!(comparable(c.status().await), before);
    let (_, d) = c.post("/api/orchestrator/decisions", &decision(1)).await;
    assert_eq!(d["seq"], 152, "the sequence goes on");
}

/// Runs the server binary expecting it to refuse to start: its exit code
/// and what it printed.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(tests::server_bin())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A size-limited file system of its own (tmpfs), unmounted on drop.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(options: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mount -t tmpfs needs root (CI and the dev machines run as root)"
        );
        Mount(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the file system up with one file.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_dir_that_cannot_be_used_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // Not a directory.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, text) = refused(&["--data-dir", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(file.to_str().unwrap()) && !text.contains("listening"),
        "{text}"
    );
    // Read-only.
    let ro = Mount::new("size=1m,ro");
    let (code, text) = refused(&["--data-dir", ro.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains(ro.path().to_str().unwrap()), "{text}");
    // Full.
    let full = Mount::new("size=256k");
    full.fill();
    let (code, text) = refused(&["--data-dir", full.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains(full.path().to_str().unwrap()), "{text}");
    assert!(text.contains("not writable"), "{text}");
    // Missing is fine: created.
    let missing = dir.path().join("new/deeper");
    let server = Server::start(&["--data-dir", missing.to_str().unwrap()]);
    assert!(missing.join("orchestrator.db").exists());
    drop(server);
}

#[test]
fn a_corrupt_database_or_a_second_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let server = Server::start(&["--data-dir", path]);
    let (code, text) = refused(&["--data-dir", path]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("another server") && text.contains(path),
        "{text}"
    );
    drop(server);
    let db = dir.path().join("orchestrator.db");
    for f in ["orchestrator.db-wal", "orchestrator.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    let (code, text) = refused(&["--data-dir", path]);
    assert_ne!(code, 0, "{text}");
    let shown = db.to_str().unwrap();
    assert!(
        text.contains("corrupt") && text.contains(&format!("mv {shown} {shown}.corrupt")),
        "{text}"
    );
}

/// The disk fills while the server runs: ingestion answers 503 with
/// Retry-After and acknowledges nothing, queries go on in memory, the status
/// says so; freeing the space resumes everything.
#[tokio::test]
async fn a_full_disk_while_running_is_survived_and_recovered() {
    let disk = Mount::new("size=8m");
    let server = Server::start(&["--data-dir", disk.path().to_str().unwrap()]);
    let c = Client::new(&server.base);
    assert_eq!(
        c.post("/api/orchestrator/decisions", &decision(1)).await.0,
        201
    );
    disk.fill();
    // Rows until the database needs a page it cannot get.
    let big: Vec<Value> = (0..1000).map(decision).collect();
    let mut refused = None;
    for _ in 0..200 {
        let res = c
            .post_response("/api/orchestrator/decisions", &json!(big).to_string())
            .await;
        if res.status() == 503 {
            refused = Some(res);
            break;
        }
        assert_eq!(res.status(), 201);
    }
    let res = refused.expect("a full disk turns ingestion into 503s");
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("store"), "{body}");
    let s = c.status().await;
    assert_eq!(s["persistence"]["state"], "failing", "{}", s["persistence"]);
    assert!(s["persistence"]["since"].is_string() && s["persistence"]["error"].is_string());
    // While failing: ingestion is refused at once, recording nothing.
    let total = s["totalDecisions"].as_u64().unwrap();
    let (code, _) = c.post("/api/orchestrator/decisions", &decision(2)).await;
    assert_eq!(code, 503);
    assert_eq!(c.status().await["totalDecisions"].as_u64().unwrap(), total);
    // Queries are still routed (no upstream here: a 503 that keeps its
    // decision), counted as not persisted.
    let (code, q) = c
        .post("/api/query", &json!({"query": "still routed?"}))
        .await;
    assert_eq!(code, 503, "{q}");
    assert!(q["decision"]["seq"].is_u64());
    let s = c.status().await;
    assert_eq!(s["totalDecisions"].as_u64().unwrap(), total + 1);
    assert!(s["persistence"]["notPersisted"].as_u64().unwrap() >= 1);
    // Space again: the writer's probe notices, ingestion resumes.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let resumed = eventually(Duration::from_secs(10), || async {
        c.status().await["persistence"]["state"] == "ok"
    })
    .await;
    assert!(resumed, "the store recovers once there is space");
    let (code, d) = c.post("/api/orchestrator/decisions", &decision(3)).await;
    assert_eq!(code, 201, "{d}");
}

/// The sum of every `orch_decisions_total` series in a scrape.
fn decisions_metric(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("orch_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A batch the full disk refused (503, "nothing recorded") is counted
/// nowhere: not in the status, its recent decisions, `/metrics`, the store
/// or the stream; the client's retry once there is space counts once; and
/// the status after a restart equals the one before, refused write and all.
#[tokio::test]
async fn a_refused_batch_is_counted_nowhere() {
    let disk = Mount::new("size=8m");
    let args = ["--data-dir", disk.path().to_str().unwrap()];
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    assert_eq!(
        c.post("/api/orchestrator/decisions", &decision(1)).await.0,
        201
    );
    disk.fill();
    let big: Vec<Value> = (0..1000).map(decision).collect();
    let mut refused = false;
    for _ in 0..200 {
        let before = c.status().await;
        let scraped = decisions_metric(&c.text("/metrics").await);
        let (code, body) = c.post("/api/orchestrator/decisions", &json!(big)).await;
        if code == 503 {
            let after = c.status().await;
            assert_eq!(after["totalDecisions"], before["totalDecisions"], "{body}");
            assert_eq!(after["tierUtilization"], before["tierUtilization"]);
            assert_eq!(after["recentDecisions"], before["recentDecisions"]);
            assert_eq!(after["cost"], before["cost"]);
            assert_eq!(after["persistence"]["notPersisted"], 0, "refused, not kept");
            assert_eq!(decisions_metric(&c.text("/metrics").await), scraped);
            refused = true;
            break;
        }
        assert_eq!(code, 201, "{body}");
    }
    assert!(refused, "a full disk turns ingestion into 503s");
    let acknowledged = c.status().await["totalDecisions"].as_u64().unwrap();
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let resumed = eventually(Duration::from_secs(10), || async {
        c.status().await["persistence"]["state"] == "ok"
    })
    .await;
    assert!(resumed, "the store recovers once there is space");
    // A few more after the refused one: the buffer now spans its gap.
    for i in 0..5 {
        assert_eq!(
            c.post("/api/orchestrator/decisions", &decision(i)).await.0,
            201
        );
    }
    let before = c.status().await;
    assert_eq!(before["totalDecisions"].as_u64().unwrap(), acknowledged + 5);
    assert_eq!(stored_seqs(&c).await.len() as u64, acknowledged + 5);
    assert_eq!(
        decisions_metric(&c.text("/metrics").await),
        (acknowledged + 5) as f64
    );
    let comparable = |mut s: Value| {
        s.as_object_mut().unwrap().remove("timestamp");
        s["instance"].as_object_mut().unwrap().remove("startedAt");
        s
    };
    assert!(server.terminate(Duration::from_secs(10)).is_some());
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    assert_eq!(comparable(c.status().await), comparable(before));
    // The client retries the refused batch: counted once.
    let (code, got) = c.post("/api/orchestrator/decisions", &json!(big)).await;
    assert_eq!(code, 201, "{got}");
    let after = c.status().await;
    assert_eq!(
        after["totalDecisions"].as_u64().unwrap(),
        acknowledged + 1_005
    );
    assert_eq!(stored_seqs(&c).await.len() as u64, acknowledged + 1_005);
}
