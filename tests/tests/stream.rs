//! The event stream of the release binary, read by a plain SSE client
//! (reqwest + eventsource-stream): first event, order, coalescing, replay
//! and resync, heartbeat, the cap on streams, SIGTERM with streams open.

use std::pin::Pin;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};
use tests::{Client, Server};

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// Opens the stream (with `Last-Event-ID` if given) and checks its headers.
async fn open(server: &Server, query: &str, last_event_id: Option<&str>) -> Events {
    let mut req = reqwest::Client::new()
        .get(server.url(&format!("/api/orchestrator/stream{query}")))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-encoding").is_none());
    Box::pin(res.bytes_stream().eventsource())
}

/// The next event within `wait`; `None` if none came (or the stream ended).
async fn next(events: &mut Events, wait: Duration) -> Option<Event> {
    match tokio::time::timeout(wait, events.next()).await {
        Ok(Some(Ok(e))) => Some(e),
        Ok(Some(Err(err))) => panic!("stream error: {err}"),
        Ok(None) | Err(_) => None,
    }
}

async fn must(events: &mut Events) -> Event {
    next(events, Duration::from_secs(5))
        .await
        .expect("an event within 5 s")
}

fn json_of(e: &Event) -> Value {
    serde_json::from_str(&e.data).unwrap()
}

async fn ingest(c: &Client, i: usize) -> Value {
    let (code, d) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": format!("q{i}"), "tier": "balanced", "score": 4.5, "decisionTimeMs": 0.25}),
        )
        .await;
    assert_eq!(code, 201);
    d
}

/// The status without its `timestamp` (rebuilt each second even unchanged).
fn timeless(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("timestamp");
    v
}

#[tokio::test]
async fn first_the_status_then_each_decision_in_order() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    ingest(&c, 0).await;
    let mut events = open(&server, "", None).await;
    let first = must(&mut events).await;
    assert_eq!(first.event, "status");
    assert_eq!(first.id, "1");
    assert_eq!(timeless(json_of(&first)), timeless(c.status().await));
    for i in 1..=5 {
        let posted = ingest(&c, i).await;
        let d = must(&mut events).await;
        assert_eq!(d.event, "decision");
        assert_eq!(d.id, (i + 1).to_string());
        assert_eq!(json_of(&d), posted, "the decision as it was recorded");
        let s = must(&mut events).await;
        assert_eq!(s.event, "status");
        assert_eq!(json_of(&s)["totalDecisions"], i + 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

#[tokio::test]
async fn a_burst_arrives_whole_with_statuses_coalesced() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    let mut events = open(&server, "", None).await;
    must(&mut events).await;
    let started = Instant::now();
    let posts: Vec<_> = (0..100)
        .map(|i| {
            let c = Client::new(&server.base);
            tokio::spawn(async move { ingest(&c, i).await })
        })
        .collect();
    for p in posts {
        p.await.unwrap();
    }
    let (mut seqs, mut statuses) = (Vec::new(), Vec::new());
    while seqs.len() < 100 || statuses.last() != Some(&100) {
        let e = must(&mut events).await;
        match e.event.as_str() {
            "decision" => seqs.push(e.id.parse::<u64>().unwrap()),
            "status" => statuses.push(json_of(&e)["totalDecisions"].as_u64().unwrap()),
            other => panic!("unexpected {other}"),
        }
    }
    let spent = started.elapsed();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "each once, in order");
    assert!(statuses.windows(2).all(|w| w[0] < w[1]));
    // At most one status per 50 ms (plus the one that opens a quiet spell).
    let most = spent.as_millis() / 50 + 2;
    assert!(
        statuses.len() as u128 <= most,
        "{} statuses in {spent:?}",
        statuses.len()
    );
    drop(c);
}

#[tokio::test]
async fn replay_after_last_event_id_or_since_else_resync() {
    let server = Server::start(&["--buffer-size", "5", "--window", "5"]);
    let c = Client::new(&server.base);
    for i in 0..8 {
        ingest(&c, i).await;
    }
    // Buffered: 4..=8.
    let mut events = open(&server, "", Some("5")).await;
    assert_eq!(must(&mut events).await.event, "status");
    let ids: Vec<String> = [
        must(&mut events).await,
        must(&mut events).await,
        must(&mut events).await,
    ]
    .iter()
    .map(|e| {
        assert_eq!(e.event, "decision");
        e.id.clone()
    })
    .collect();
    assert_eq!(ids, ["6", "7", "8"]);
    assert!(
        next(&mut events, Duration::from_millis(200))
            .await
            .is_none()
    );

    let mut events = open(&server, "?since=6", None).await;
    must(&mut events).await;
    assert_eq!(must(&mut events).await.id, "7");

    for gone in ["1", "2"] {
        let mut events = open(&server, "", Some(gone)).await;
        must(&mut events).await;
        let e = must(&mut events).await;
        assert_eq!(e.event, "resync", "after {gone}: 3 is gone");
        assert_eq!(
            json_of(&e),
            json!({"after": gone.parse::<u64>().unwrap(), "oldest": 4, "newest": 8})
        );
    }
    // 3 is the last one gone: everything after it is still here.
    let mut events = open(&server, "?since=3", None).await;
    must(&mut events).await;
    assert_eq!(must(&mut events).await.id, "4");
}

#[tokio::test]
async fn a_quiet_stream_gets_a_heartbeat_comment() {
    let server = Server::start(&[]);
    // Raw bytes: comments are invisible to an SSE parser.
    let res = reqwest::Client::new()
        .get(server.url("/api/orchestrator/stream"))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let opened = Instant::now();
    let mut text = String::new();
    while !text.contains(": heartbeat") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("a heartbeat within 20 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_secs(14),
        "not before 15 s: {after:?}"
    );
    assert!(
        text.starts_with("retry: 1000\n\nid: 0\nevent: status\ndata: {"),
        "{text}"
    );
}

#[tokio::test]
async fn beyond_max_streams_a_json_503_and_health_counts_them() {
    let server = Server::start(&["--max-streams", "2"]);
    let c = Client::new(&server.base);
    let a = open(&server, "", None).await;
    let _b = open(&server, "", None).await;
    let res = reqwest::get(server.url("/api/orchestrator/stream"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--max-streams"),
        "{body}"
    );
    let (_, health) = c.get("/api/health").await;
    assert_eq!(health["streams"], json!({"open": 2, "max": 2}));
    drop(a);
    assert!(
        tests::eventually(Duration::from_secs(5), || async {
            c.get("/api/health").await.1["streams"]["open"] == 1
        })
        .await,
        "a closed stream gives its place back"
    );
    let _c = open(&server, "", None).await;
}

#[tokio::test]
async fn sigterm_ends_open_streams_cleanly_and_promptly() {
    let server = Server::start(&[]);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut events = open(&server, "", None).await;
        must(&mut events).await;
        streams.push(events);
    }
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(5))
        .expect("exits within 5 s with streams open");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait out the drain timeout: {:?}",
        started.elapsed()
    );
    for mut events in streams {
        // A clean end: no error, just no more events.
        match tokio::time::timeout(Duration::from_secs(1), events.next()).await {
            Ok(None) => {}
            other => panic!("expected a clean end, got {other:?}"),
        }
    }
}
