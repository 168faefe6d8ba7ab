//! The accept loop: hyper with the bounds axum's own `serve` does not set,
//! so slow, idle or too many clients cannot pile up and starve the endpoints.
//!
//! - At most `max_connections` are open at once; beyond it the loop stops
//!   accepting and new connections wait in the kernel's backlog, while the
//!   open ones keep being served.
//! - A connection must show which protocol it speaks within the header
//!   timeout: one that says nothing, or sends part of the HTTP/2 preface and
//!   stops, is closed ([`SniffDeadline`]).
//! - HTTP/1 must deliver a request head within `header_read_timeout`, a
//!   clock that also runs while a kept-alive connection sits idle.
//! - Any connection, HTTP/2 included, with no request in flight for that
//!   long is shut down gracefully ([`Activity`]).
//! - A write the client leaves unread for `write_timeout` (an export or an
//!   event stream nobody reads) fails, which closes the connection and
//!   drops its response, with whatever place it held ([`SniffDeadline`]).
//!
//! Accept errors (out of file descriptors, say) back off instead of spinning.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::Response;
use futures_util::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Sleep;

use crate::app::app;
use crate::state::AppState;
use crate::{access, api};

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the app on `listener` until `shutdown` resolves, then lets open
/// connections finish (up to 10 s). At most `state.connections.max()` are open
/// at once; `timeout` bounds sending a request head, showing the protocol,
/// and sitting idle.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let places = Arc::clone(&state.connections);
    let streams = Arc::clone(&state.streams);
    let write_timeout = state.options.write_timeout;
    let service = FastPath::new(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(timeout))
        .keep_alive_timeout(timeout);
    let (stop, stopping) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        // A free place first: beyond the cap, new connections wait in the
        // backlog rather than being accepted and starved.
        let place = tokio::select! {
            place = places.take() => place,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            service.clone(),
            builder.clone(),
            (timeout, write_timeout),
            stopping.clone(),
            place,
        ));
    }
    drop(listener);
    // Event streams never end on their own: end them first, so the graceful
    // shutdown below can finish the connections that carry them.
    streams.close();
    let _ = stop.send(());
    // Every connection holds its place until it ends.
    tokio::select! {
        () = places.all_free() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("connections still open after {DRAIN:?}; closing"),
    }
}

/// Serves one connection until it ends, is idle too long, or the server
/// stops (then gracefully: requests in progress finish).
async fn connection(
    stream: TcpStream,
    service: FastPath,
    builder: Builder<TokioExecutor>,
    (timeout, write_timeout): (Duration, Duration),
    mut stopping: watch::Receiver<()>,
    _place: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(SniffDeadline::new(stream, timeout).with_write_timeout(write_timeout));
    let service = TowerToHyperService::new(Tracked {
        inner: service,
        activity: Arc::clone(&activity),
    });
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            _ = stopping.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(timeout), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// How many requests a connection has in flight, and how many it has
/// finished: two counters per request, no clock; the idle watcher samples
/// them.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    finished: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ActivityGuard(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `idle` (sampled every
    /// quarter of it, so within `idle * 1.25`).
    async fn idle_for(&self, idle: Duration) {
        let step = idle / 4;
        let mut quiet = Duration::ZERO;
        let mut seen = self.finished.load(Ordering::Acquire);
        loop {
            tokio::time::sleep(step).await;
            let finished = self.finished.load(Ordering::Acquire);
            if finished != seen || self.in_flight.load(Ordering::Acquire) > 0 {
                seen = finished;
                quiet = Duration::ZERO;
            } else {
                quiet += step;
                if quiet >= idle {
                    return;
                }
            }
        }
    }
}

/// One request in flight on a connection; its drop ends it.
struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service that counts its requests in flight on the connection's
/// [`Activity`] until each response head is ready (a streamed body is not
/// cut by an idle close: the graceful shutdown lets it finish).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let guard = self.activity.begin();
        TrackedFuture {
            inner: self.inner.call(req),
            _guard: guard,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future holding its place in the connection's activity.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        _guard: ActivityGuard,
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// The first bytes an HTTP/2 client sends.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A socket whose reads fail with `TimedOut` if the protocol is not clear
/// by the deadline: the bytes so far are all a prefix of the HTTP/2 preface
/// (nothing at all included). Once a byte differs (HTTP/1) or the whole
/// preface arrived (HTTP/2), it is a plain socket and hyper's own clocks
/// take over. Its writes fail with `TimedOut` once one has waited for the
/// client to read for the write timeout.
pub struct SniffDeadline {
    io: TcpStream,
    /// `None` once the protocol is clear.
    deadline: Option<Pin<Box<Sleep>>>,
    matched: usize,
    write_timeout: Option<Duration>,
    /// Armed while a write waits for the client.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl SniffDeadline {
    /// Wraps `io`, giving it `timeout` to show its protocol.
    pub fn new(io: TcpStream, timeout: Duration) -> Self {
        SniffDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            matched: 0,
            write_timeout: None,
            write_stall: None,
        }
    }

    /// Fails a write that waits longer than `timeout` for the client.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = Some(timeout);
        self
    }

    fn observe(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if H2_PREFACE.get(self.matched) == Some(&b) {
                self.matched += 1;
            } else {
                self.deadline = None;
                return;
            }
        }
        if self.matched == H2_PREFACE.len() {
            self.deadline = None;
        }
    }

    /// Passes a write's outcome on; a pending one arms the stall clock
    /// (once), and fails when it has run out. Any progress disarms it.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Poll::Pending = polled else {
            self.write_stall = None;
            return polled;
        };
        let Some(timeout) = self.write_timeout else {
            return Poll::Pending;
        };
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for SniffDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.is_none() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.observe(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no recognisable request within the header timeout",
                ))),
                _ => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for SniffDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.stalled(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.stalled(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.stalled(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const STATUS_PATH: &str = "/api/orchestrator/status";

/// The service connections see. The plain status poll, which every open
/// dashboard sends each second, is answered straight from the shared
/// snapshot by the same function the router's handler calls, skipping
/// routing and middleware; every other request goes through the router.
#[derive(Clone)]
pub struct FastPath {
    app: Router,
    /// `None` when CORS is configured: the CORS layer must see every request.
    fast: Option<AppState>,
}

impl FastPath {
    /// The router of `state`, with the status fast path unless CORS is on.
    pub fn new(state: AppState) -> Self {
        Self::with_router(state.clone(), app(state))
    }

    /// The fast path of `state` in front of any router (a test puts one
    /// there that answers nothing right, to see which requests skip it).
    /// Off with CORS (its layer must see every request) or read keys
    /// (every read is checked).
    pub fn with_router(state: AppState, router: Router) -> Self {
        let fast =
            (state.options.cors_origin.is_none() && !state.readers.required()).then_some(state);
        FastPath { app: router, fast }
    }
}

impl<B> tower::Service<Request<B>> for FastPath
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        <Router as tower::Service<Request<Body>>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(state) = &self.fast {
            // Only the plain poll: anything with a query string (and its
            // possible errors) takes the router.
            if req.method() == Method::GET
                && req.uri().path() == STATUS_PATH
                && req.uri().query().is_none()
            {
                let started = Instant::now();
                let response = api::status_response(state, None, req.headers());
                access::answered(
                    "GET",
                    STATUS_PATH,
                    response.status().as_u16(),
                    started.elapsed(),
                );
                return Either::Left(std::future::ready(Ok(response)));
            }
        }
        Either::Right(tower::Service::call(&mut self.app, req.map(Body::new)))
    }
}
