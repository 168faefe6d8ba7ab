//! Live push: `GET /api/orchestrator/stream`, Server-Sent Events.
//!
//! One publisher per process turns changes of the [`StatusService`] into a
//! [`Published`] value, at most one per [`COALESCE`]: the serialised status
//! (the very snapshot `GET /api/orchestrator/status` serves, framed once as
//! an SSE event) and the frames of the buffered decisions, each serialised
//! once. It hands that value to every stream through a `watch` channel, so a
//! stream that falls behind skips straight to the newest value and nothing
//! queues up for it: its backlog is the shared buffer, read by `seq`.
//!
//! A stream sends, in order: `retry:` (how soon a browser reconnects), the
//! `status` event, then (with `Last-Event-ID` or `?since=`) the buffered
//! decisions after that `seq` as `decision` events, or a `resync` event when
//! some are gone. After that, on every change (at most once per 50 ms): the
//! new `decision` events, then the new `status`. A comment line every 15 s
//! when nothing else was sent keeps proxies and the browser from deciding the
//! stream is dead. Every `decision` event and every `status` event carries
//! `id:` = the newest `seq` it covers, so a browser's automatic reconnect
//! resumes exactly where it left off. A buffered decision that changes after
//! it was sent (its tokens become known when its answer arrives) is sent
//! again as an `update` event, without `id:`, before the next status. With
//! `--redis`, other instances' decisions arrive as `decision` events without
//! `id:` (their `seq`s are their own instances').

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use shared::{DEFAULT_RECENT, RoutingDecision};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::places::Places;
use crate::service::StatusService;

/// Streams open at once unless `--max-streams` says otherwise.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// The least time between two sends to one stream (and between two
/// publications): changes within it are coalesced into the newest.
pub const COALESCE: Duration = Duration::from_millis(50);
/// A stream silent this long gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// How soon a browser's `EventSource` reconnects after the stream drops.
const RETRY_AFTER_DROP: Duration = Duration::from_millis(1_000);

/// What every stream is sent from: one value, shared.
#[derive(Debug)]
pub struct Published {
    /// The service version it reflects.
    version: u64,
    /// The newest decision `seq` it covers.
    seq: u64,
    /// `id: <seq>`, `event: status`, `data: <the status JSON>`.
    status: Bytes,
    /// `decision` frames of the buffered decisions, oldest first, in `seq`
    /// order ending at `seq` (with gaps where a refused batch took seqs
    /// that were never published).
    decisions: Vec<(u64, Bytes)>,
    /// Counts publications: a stream that saw the one before this one sends
    /// its `updated` frames; one that skipped some learns of them from the
    /// statuses (and a replay sends the changed frames).
    number: u64,
    /// `update` frames (no `id:`) of the decisions that changed since the
    /// last publication.
    updated: Vec<Bytes>,
    /// The server is stopping: streams end after sending this.
    closed: bool,
}

impl Published {
    /// The frames of the decisions after `cursor`, or `None` when some of
    /// them are no longer buffered (or `cursor` is beyond `seq`).
    fn frames_after(&self, cursor: u64) -> Option<&[(u64, Bytes)]> {
        if cursor > self.seq {
            return None;
        }
        if cursor == self.seq {
            return Some(&[]);
        }
        let first = self.decisions.first()?.0;
        if cursor + 1 < first {
            return None;
        }
        let at = self.decisions.partition_point(|(seq, _)| *seq <= cursor);
        Some(&self.decisions[at..])
    }

    /// A `resync` event: the decisions after `cursor` cannot all be sent.
    fn resync(&self, cursor: u64) -> Bytes {
        let oldest = self.decisions.first().map_or(self.seq, |d| d.0);
        event_bytes(
            Event::default()
                .event(shared::wire::event::RESYNC)
                .data(format!(
                    "{{\"after\":{cursor},\"oldest\":{oldest},\"newest\":{}}}",
                    self.seq
                )),
        )
    }
}

/// The publisher's own state: what it last published and the decision
/// frames it keeps.
struct Ring {
    seq: u64,
    frames: VecDeque<(u64, Bytes)>,
}

/// The fan-out of status changes to every open stream.
pub struct Hub {
    service: Arc<StatusService>,
    places: Places,
    tx: watch::Sender<Arc<Published>>,
    ring: Mutex<Ring>,
    publisher_started: AtomicBool,
    closed: AtomicBool,
}

impl Hub {
    /// A hub over `service` allowing `max_streams` open streams. Its
    /// publisher starts with the first stream.
    pub fn new(service: Arc<StatusService>, max_streams: usize) -> Self {
        let (tx, _) = watch::channel(Arc::new(Published {
            version: u64::MAX,
            seq: 0,
            status: Bytes::new(),
            decisions: Vec::new(),
            number: 0,
            updated: Vec::new(),
            closed: false,
        }));
        Hub {
            service,
            places: Places::new(max_streams),
            tx,
            ring: Mutex::new(Ring {
                seq: 0,
                frames: VecDeque::new(),
            }),
            publisher_started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Streams open now and the cap.
    pub fn places(&self) -> &Places {
        &self.places
    }

    /// Opens a stream resuming after `resume` (a `seq`), if given; a 503
    /// when `--max-streams` are open.
    pub fn subscribe(self: &Arc<Self>, resume: Option<u64>) -> Result<Response, ApiError> {
        let place = self
            .places
            .try_take()
            .ok_or(ApiError::TooManyStreams(self.places.max()))?;
        if !self.publisher_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(publish_loop(Arc::clone(self)));
        }
        // New streams start from the current state, not the last publication.
        self.publish();
        let mut rx = self.tx.subscribe();
        let now = rx.borrow_and_update().clone();
        let mut stream = Stream {
            rx,
            cursor: now.seq,
            number: now.number,
            last_sent: Instant::now(),
            pending: VecDeque::from([
                event_bytes(Event::default().retry(RETRY_AFTER_DROP)),
                now.status.clone(),
            ]),
            done: now.closed,
            _place: place,
        };
        if let Some(after) = resume {
            match now.frames_after(after) {
                Some(frames) => stream.pending.extend(frames.iter().map(|f| f.1.clone())),
                None => stream.pending.push_back(now.resync(after)),
            }
        }
        let body = Body::from_stream(futures_util::StreamExt::fuse(futures_util::stream::unfold(
            stream,
            Stream::next,
        )));
        let mut response = Response::new(body);
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, EVENT_STREAM);
        h.insert(header::CACHE_CONTROL, NO_CACHE);
        h.insert("x-accel-buffering", NO);
        Ok(response)
    }

    /// Publishes the service's current state if it changed since the last
    /// publication.
    fn publish(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let snapshot = self.service.snapshot(DEFAULT_RECENT);
        if snapshot.version == self.tx.borrow().version {
            return;
        }
        let capacity = self.service.capacity();
        let (new, gap) = self.service.decisions_between(ring.seq, snapshot.seq);
        if gap {
            // Kept frames must stay contiguous with the new ones.
            ring.frames.clear();
        }
        for decision in new.into_iter().rev() {
            let sent = frame(Some(decision.seq), shared::wire::event::DECISION, &decision);
            ring.frames.push_back((decision.seq, sent));
            if ring.frames.len() > capacity {
                ring.frames.pop_front();
            }
        }
        // Decisions that changed after they were sent (their tokens became
        // known): the kept frame is replaced, and sent again as `update`.
        let mut updated = Vec::new();
        for decision in self.service.take_updated() {
            if decision.seq > ring.seq {
                continue; // new in this publication: its frame is current
            }
            let at = ring.frames.partition_point(|f| f.0 < decision.seq);
            if let Some(kept) = ring.frames.get_mut(at).filter(|f| f.0 == decision.seq) {
                kept.1 = frame(Some(decision.seq), shared::wire::event::DECISION, &decision);
            }
            updated.push(frame(None, shared::wire::event::UPDATE, &decision));
        }
        // Other instances' new decisions (with `--redis`): `decision`
        // events without `id:` (their seqs are their instances'), so a
        // resumed stream goes on from this instance's decisions.
        if let Some(cluster) = self.service.cluster() {
            for decision in cluster.take_fresh() {
                updated.push(frame(None, shared::wire::event::DECISION, &decision));
            }
        }
        ring.seq = snapshot.seq;
        let status = event_bytes(
            Event::default()
                .id(snapshot.seq.to_string())
                .event(shared::wire::event::STATUS)
                .data(std::str::from_utf8(&snapshot.body).expect("JSON is UTF-8")),
        );
        let number = self.tx.borrow().number + 1;
        self.tx.send_replace(Arc::new(Published {
            version: snapshot.version,
            seq: snapshot.seq,
            status,
            decisions: ring.frames.iter().cloned().collect(),
            number,
            updated,
            closed: false,
        }));
    }

    /// Ends every open stream (after what it was sent so far) and every
    /// stream opened from now on: the server is stopping.
    pub fn close(&self) {
        let _ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        self.tx.send_modify(|p| {
            *p = Arc::new(Published {
                version: p.version,
                seq: p.seq,
                status: p.status.clone(),
                decisions: p.decisions.clone(),
                number: p.number + 1,
                updated: Vec::new(),
                closed: true,
            })
        });
    }
}

/// Publishes each change, at most one per [`COALESCE`]: the first change
/// after a quiet spell at once, the ones crowding after it together.
async fn publish_loop(hub: Arc<Hub>) {
    let mut last = Instant::now() - COALESCE;
    loop {
        hub.service.changed().await;
        tokio::time::sleep_until(last + COALESCE).await;
        if hub.closed.load(Ordering::Acquire) {
            return;
        }
        hub.publish();
        last = Instant::now();
    }
}

/// An SSE event of `kind` carrying decision `d`, with `id: <seq>` when given.
fn frame(id: Option<u64>, kind: &str, d: &RoutingDecision) -> Bytes {
    let json = serde_json::to_string(d).expect("a decision always serialises");
    let mut event = Event::default();
    if let Some(seq) = id {
        event = event.id(seq.to_string());
    }
    event_bytes(event.event(kind).data(json))
}

/// The bytes of one event as axum frames it (a newline in its data
/// becomes another `data:` line, never the event's end). Made once per
/// publication and shared by every stream, so built here, not per stream.
fn event_bytes(event: Event) -> Bytes {
    use futures_util::FutureExt as _;
    use http_body_util::BodyExt as _;
    let body = Sse::new(futures_util::stream::iter([Ok::<_, Infallible>(event)]))
        .into_response()
        .into_body();
    // One ready event: the body is whole at its first poll.
    body.collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(http_body_util::Collected::to_bytes)
        .expect("an event renders at once")
}

const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const NO: HeaderValue = HeaderValue::from_static("no");

/// One open stream: where it is, and what it still has to send.
struct Stream {
    rx: watch::Receiver<Arc<Published>>,
    /// The newest `seq` this stream has covered.
    cursor: u64,
    /// The last publication this stream caught up with.
    number: u64,
    last_sent: Instant,
    /// Frames to send before waiting again: at most one wake-up's worth.
    pending: VecDeque<Bytes>,
    done: bool,
    /// Holds one of the `--max-streams` places until the stream ends.
    _place: OwnedSemaphorePermit,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                self.last_sent = Instant::now();
                return Some((Ok(frame), self));
            }
            if self.done {
                return None;
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        continue;
                    }
                    tokio::time::sleep_until(self.last_sent + COALESCE).await;
                    let now = self.rx.borrow_and_update().clone();
                    self.catch_up(&now);
                }
                () = tokio::time::sleep_until(self.last_sent + HEARTBEAT) => {
                    self.pending
                        .push_back(event_bytes(Event::default().comment("heartbeat")));
                }
            }
        }
    }

    /// Queues the decisions after the cursor (or a `resync`), then the
    /// status; ends after them if the server is stopping.
    fn catch_up(&mut self, now: &Published) {
        if now.closed {
            self.done = true;
        }
        if now.seq == self.cursor && now.closed {
            return;
        }
        match now.frames_after(self.cursor) {
            Some(frames) => self.pending.extend(frames.iter().map(|f| f.1.clone())),
            None => self.pending.push_back(now.resync(self.cursor)),
        }
        if now.number == self.number + 1 {
            self.pending.extend(now.updated.iter().cloned());
        }
        self.cursor = now.seq;
        self.number = now.number;
        self.pending.push_back(now.status.clone());
    }
}
