//! The event stream, driven in-process: what a stream is sent first, in what
//! order, how changes are coalesced, replay and resync, heartbeats, the cap
//! on open streams, and ending on shutdown.

use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{Request, StatusCode, header};
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::Value;
use server::service::{NewDecision, StatusService};
use server::upstream::Upstreams;
use server::{AppState, Options, app};
use shared::Tier;
use tokio::time::Instant;
use tower::ServiceExt as _;

fn state(capacity: usize, max_streams: usize) -> AppState {
    AppState::with_options(
        StatusService::new(capacity, 20),
        Upstreams::none(),
        Options {
            max_streams,
            ..Options::default()
        },
    )
}

/// One parsed event: its `event`, `id` and `data` (comments kept as
/// `event == ":"`, a lone `retry:` as `event == "retry"`).
#[derive(Debug, Clone)]
struct Event {
    event: String,
    id: Option<String>,
    data: String,
    at: Instant,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads an SSE body event by event.
struct Reader {
    body: BodyDataStream,
    buf: String,
}

impl Reader {
    async fn open(state: &AppState, uri: &str, last_event_id: Option<&str>) -> Reader {
        let mut req = Request::get(uri);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = app(state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h["x-accel-buffering"], "no");
        assert!(h.get(header::CONTENT_ENCODING).is_none());
        let mut reader = Reader {
            body: res.into_body().into_data_stream(),
            buf: String::new(),
        };
        let first = reader.next().await.expect("the stream opens with retry");
        assert_eq!(
            (first.event.as_str(), first.data.as_str()),
            ("retry", "1000")
        );
        reader
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = Event {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                    at: Instant::now(),
                };
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line.starts_with(':') {
                        e.event = ":".into();
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => e.event = value.into(),
                        "id" => e.id = Some(value.into()),
                        "data" => e.data.push_str(value),
                        "retry" => {
                            e.event = "retry".into();
                            e.data = value.into();
                        }
                        other => panic!("unexpected field {other:?} in {block:?}"),
                    }
                }
                return Some(e);
            }
            let chunk = self.body.next().await?.unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event within `wait`, else `None`.
    async fn within(&mut self, wait: Duration) -> Option<Event> {
        tokio::time::timeout(wait, self.next()).await.ok().flatten()
    }
}

/// A response's body as JSON.
async fn json_body(res: axum::response::Response) -> Value {
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

async fn status_body(state: &AppState) -> String {
    let res = app(state.clone())
        .oneshot(
            Request::get("/api/orchestrator/status")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn record(state: &AppState, n: usize) {
    for i in 0..n {
        state
            .service
            .record(NewDecision::new(
                &format!("q{i}"),
                Tier::ALL[i % 3],
                4.0,
                0.5,
            ))
            .unwrap();
    }
}

#[tokio::test]
async fn the_first_event_is_the_status_the_endpoint_serves() {
    let state = state(100, 10);
    record(&state, 3);
    let mut r = Reader::open(&state, "/api/orchestrator/stream", None).await;
    let first = r.next().await.unwrap();
    assert_eq!(first.event, "status");
    assert_eq!(first.id.as_deref(), Some("3"), "the newest seq it covers");
    assert_eq!(first.data, status_body(&state).await, "byte for byte");
    // Nothing else until something changes.
    assert!(r.within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn each_decision_comes_in_order_then_the_status_covering_it() {
    let state = state(100, 10);
    let mut r = Reader::open(&state, "/api/orchestrator/stream", None).await;
    assert_eq!(r.next().await.unwrap().event, "status");
    let mut seen = Vec::new();
    for i in 0..5u64 {
        let d = state
            .service
            .record(NewDecision::new(&format!("d{i}"), Tier::Q4, 9.0, 1.5))
            .unwrap();
        let e = r.next().await.unwrap();
        assert_eq!(e.event, "decision");
        assert_eq!(e.id, Some(d.seq.to_string()));
        assert_eq!(e.json(), serde_json::to_value(&d).unwrap());
        let s = r.next().await.unwrap();
        assert_eq!(s.event, "status");
        assert_eq!(s.id, Some(d.seq.to_string()));
        assert_eq!(s.json()["recentDecisions"][0]["seq"], d.seq);
        seen.push(d.seq);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_decision_whose_tokens_arrive_later_is_sent_again_as_an_update() {
    let state = state(100, 10);
    let mut r = Reader::open(&state, "/api/orchestrator/stream", None).await;
    assert_eq!(r.next().await.unwrap().event, "status");
    let d = state
        .service
        .record(NewDecision::new("slow answer", Tier::Q3, 5.0, 0.5))
        .unwrap();
    assert_eq!(r.next().await.unwrap().event, "decision");
    assert_eq!(r.next().await.unwrap().event, "status");
    let usage = shared::api::Usage {
        prompt_tokens: 120,
        completion_tokens: 480,
    };
    state.service.add_usage(d.seq, Tier::Q3, usage);
    let e = r.next().await.unwrap();
    assert_eq!(e.event, "update");
    assert_eq!(e.id, None, "an update leaves the resume point alone");
    assert_eq!(e.json()["seq"], d.seq);
    assert_eq!(
        e.json()["usage"],
        serde_json::json!({"promptTokens": 120, "completionTokens": 480})
    );
    let s = r.next().await.unwrap();
    assert_eq!(s.event, "status");
    assert_eq!(s.json()["recentDecisions"][0]["usage"]["promptTokens"], 120);
    // A replay sends the decision as it is now.
    let mut again = Reader::open(&state, "/api/orchestrator/stream?since=0", None).await;
    assert_eq!(again.next().await.unwrap().event, "status");
    let replayed = again.next().await.unwrap();
    assert_eq!(replayed.event, "decision");
    assert_eq!(replayed.json()["usage"]["completionTokens"], 480);
    // A decision gone from the buffer sends nothing; the totals still count.
    let small = self::state(1, 10);
    let mut r = Reader::open(&small, "/api/orchestrator/stream", None).await;
    assert_eq!(r.next().await.unwrap().event, "status");
    let first = small
        .service
        .record(NewDecision::new("a", Tier::Q4, 9.0, 0.5))
        .unwrap();
    small
        .service
        .record(NewDecision::new("b", Tier::Q4, 9.0, 0.5))
        .unwrap();
    small.service.add_usage(first.seq, Tier::Q4, usage);
    loop {
        let e = r.within(Duration::from_millis(300)).await;
        let Some(e) = e else { break };
        assert_ne!(e.event, "update", "{e:?}");
    }
    let status = small.service.status(10);
    assert_eq!(status.cost.unwrap().tiers[2].prompt_tokens, 120);
}

#[tokio::test]
async fn a_burst_is_coalesced_to_one_status_per_50_ms_and_no_decision_is_lost() {
    let state = state(1000, 10);
    let mut r = Reader::open(&state, "/api/orchestrator/stream", None).await;
    assert_eq!(r.next().await.unwrap().event, "status");
    // 300 decisions as fast as they come, from another task.
    let writer = {
        let state = state.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                record(&state, 1);
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut decisions = Vec::new();
    let mut statuses: Vec<Event> = Vec::new();
    while decisions.len() < 300
        || statuses
            .last()
            .is_none_or(|s| s.id.as_deref() != Some("300"))
    {
        let e = r
            .within(Duration::from_secs(5))
            .await
            .expect("events keep coming");
        match e.event.as_str() {
            "decision" => decisions.push(e.json()["seq"].as_u64().unwrap()),
            "status" => statuses.push(e),
            other => panic!("unexpected {other}"),
        }
    }
    writer.await.unwrap();
    assert_eq!(
        decisions,
        (1..=300).collect::<Vec<u64>>(),
        "every one, in order"
    );
    assert!(
        statuses.len() < 300 / 2,
        "coalesced: {} statuses for 300 changes",
        statuses.len()
    );
    for pair in statuses.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(45), "statuses {gap:?} apart");
    }
}

#[tokio::test]
async fn last_event_id_and_since_replay_what_is_buffered() {
    let state = state(10, 10);
    record(&state, 8);
    // Reconnecting browser: Last-Event-ID.
    let mut r = Reader::open(&state, "/api/orchestrator/stream", Some("5")).await;
    assert_eq!(r.next().await.unwrap().event, "status");
    let replayed: Vec<String> = [
        r.next().await.unwrap(),
        r.next().await.unwrap(),
        r.next().await.unwrap(),
    ]
    .into_iter()
    .map(|e| {
        assert_eq!(e.event, "decision");
        e.id.unwrap()
    })
    .collect();
    assert_eq!(replayed, ["6", "7", "8"]);
    assert!(r.within(Duration::from_millis(150)).await.is_none());
    // Fresh connection: ?since=; Last-Event-ID wins when both are given.
    let mut r = Reader::open(&state, "/api/orchestrator/stream?since=7", None).await;
    r.next().await.unwrap();
    assert_eq!(r.next().await.unwrap().id.as_deref(), Some("8"));
    let mut r = Reader::open(&state, "/api/orchestrator/stream?since=0", Some("8")).await;
    r.next().await.unwrap();
    assert!(
        r.within(Duration::from_millis(150)).await.is_none(),
        "nothing after 8"
    );
}

#[tokio::test]
async fn resync_when_the_decisions_are_gone_or_never_were() {
    let state = state(5, 10);
    record(&state, 12); // 1..=7 dropped
    for (resume, label) in [
        ("3", "evicted"),
        ("99", "beyond the newest"),
        ("99999999999999999999999", "beyond any seq"),
    ] {
        let mut r = Reader::open(&state, "/api/orchestrator/stream", Some(resume)).await;
        assert_eq!(r.next().await.unwrap().event, "status");
        let e = r.next().await.unwrap();
        assert_eq!(e.event, "resync", "{label}");
        assert_eq!(e.id, None);
        let data = e.json();
        assert_eq!(data["after"], resume.parse::<u64>().unwrap_or(u64::MAX));
        assert_eq!(
            (data["oldest"].as_u64(), data["newest"].as_u64()),
            (Some(8), Some(12))
        );
    }
    // The oldest buffered one minus one is still complete.
    let mut r = Reader::open(&state, "/api/orchestrator/stream", Some("7")).await;
    r.next().await.unwrap();
    assert_eq!(r.next().await.unwrap().id.as_deref(), Some("8"));
}

#[tokio::test]
async fn a_stream_that_is_not_read_holds_no_backlog_and_resyncs() {
    let state = state(100, 10);
    let mut r = Reader::open(&state, "/api/orchestrator/stream", None).await;
    r.next().await.unwrap();
    // 1000 decisions while this stream reads nothing, each published.
    for _ in 0..20 {
        record(&state, 50);
        tokio::time::sleep(Duration::from_millis(55)).await;
    }
    // It skips to the newest: a resync (900 are gone), then the status.
    let mut events = Vec::new();
    while let Some(e) = r.within(Duration::from_millis(300)).await {
        events.push(e);
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(kinds.contains(&"resync"), "{kinds:?}");
    assert_eq!(events.last().unwrap().event, "status");
    assert_eq!(events.last().unwrap().id.as_deref(), Some("1000"));
    assert!(
        events.len() <= 110,
        "at most the buffer, not the backlog: {}",
        events.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_quiet_stream_gets_a_heartbeat_every_15_s() {
    let state = state(100, 10);
    let mut r = Reader::open(&state, "/api/orchestrator/stream", None).await;
    let opened = r.next().await.unwrap().at;
    for n in 1..=3u32 {
        let e = r.next().await.unwrap();
        assert_eq!(e.event, ":", "a comment");
        assert_eq!(e.at - opened, Duration::from_secs(15) * n);
    }
}

#[tokio::test]
async fn beyond_max_streams_a_503_until_one_closes() {
    let state = state(100, 2);
    let a = Reader::open(&state, "/api/orchestrator/stream", None).await;
    let _b = Reader::open(&state, "/api/orchestrator/stream", None).await;
    let res = app(state.clone())
        .oneshot(
            Request::get("/api/orchestrator/stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = json_body(res).await;
    assert!(
        body["error"].as_str().unwrap().contains("--max-streams"),
        "{body}"
    );
    assert_eq!(state.streams.places().in_use(), 2);
    drop(a);
    assert_eq!(state.streams.places().in_use(), 1);
    let _c = Reader::open(&state, "/api/orchestrator/stream", None).await;
}

#[tokio::test]
async fn bad_resume_points_are_json_400s() {
    let state = state(100, 10);
    for (uri, id) in [
        ("/api/orchestrator/stream?since=-1", None),
        ("/api/orchestrator/stream?since=abc", None),
        ("/api/orchestrator/stream?since=1&since=2", None),
        ("/api/orchestrator/stream", Some("x1")),
        ("/api/orchestrator/stream", Some("-1")),
        ("/api/orchestrator/stream", Some("1.5")),
    ] {
        let mut req = Request::get(uri);
        if let Some(id) = id {
            req = req.header("last-event-id", id);
        }
        let res = app(state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri} {id:?}");
        let body: Value = json_body(res).await;
        assert!(body["error"].is_string());
    }
    assert_eq!(state.streams.places().in_use(), 0, "no place taken");
}

#[tokio::test]
async fn closing_ends_every_stream_after_what_it_was_sent() {
    let state = state(100, 10);
    let mut a = Reader::open(&state, "/api/orchestrator/stream", None).await;
    a.next().await.unwrap();
    state.streams.close();
    assert!(a.within(Duration::from_secs(1)).await.is_none());
    assert!(a.body.next().await.is_none(), "ended, not hanging");
    // Opened after: the status, then the end.
    let mut b = Reader::open(&state, "/api/orchestrator/stream", None).await;
    assert_eq!(b.next().await.unwrap().event, "status");
    assert!(b.within(Duration::from_secs(1)).await.is_none());
    tokio::task::yield_now().await;
    assert_eq!(state.streams.places().in_use(), 0);
}

#[tokio::test]
async fn delta_polling_lists_only_newer_decisions_and_keeps_etags() {
    let state = state(5, 10);
    record(&state, 4);
    let get = |uri: &str, tag: Option<&str>| {
        let mut req = Request::get(uri);
        if let Some(tag) = tag {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        app(state.clone()).oneshot(req.body(Body::empty()).unwrap())
    };
    let res = get("/api/orchestrator/status?since=2", None).await.unwrap();
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    let body: Value = json_body(res).await;
    let seqs: Vec<u64> = body["decisionsSince"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 3], "newest first, only after 2");
    assert_eq!(body["resync"], false);
    assert_eq!(body["recentDecisions"].as_array().unwrap().len(), 4);
    // Unchanged: 304; another `since` is another body, another tag.
    let res = get("/api/orchestrator/status?since=2", Some(&etag))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = get("/api/orchestrator/status?since=3", Some(&etag))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A change: 200 again.
    record(&state, 1);
    let res = get("/api/orchestrator/status?since=2", Some(&etag))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Dropped from the buffer (capacity 5 holds 1..=5 still; add 3 more).
    record(&state, 3);
    let res = get("/api/orchestrator/status?since=1", None).await.unwrap();
    let body: Value = json_body(res).await;
    assert_eq!(body["resync"], true);
    assert_eq!(body["decisionsSince"].as_array().unwrap().len(), 5);
    // Without `since`, neither field.
    let body: Value = serde_json::from_str(&status_body(&state).await).unwrap();
    assert!(body.get("decisionsSince").is_none() && body.get("resync").is_none());
    assert_eq!(body["bufferCapacity"], 5);
    assert_eq!(
        body["windows"],
        serde_json::json!({"utilization": 20, "distribution": 5, "average": 5})
    );
    assert!(body["instance"]["id"].is_string() && body["instance"]["startedAt"].is_string());
}
