//! The access log: one line per request with its method, path, status and
//! duration, at `info` under the target `access` (turn it off with
//! `RUST_LOG=info,access=off`). Never the query string, headers or bodies:
//! they may carry users' text or tokens.
//!
//! The router's requests are logged by [`AccessLayer`] and the status fast
//! path's directly, both through [`answered`]: it writes the line straight
//! to the sink of the [`AccessLog`] layer when the `access` target is
//! enabled (which that layer's filter decides). No tracing span or event
//! per request: the formatter is compact and the path short because the
//! general ones cost more than the fast path's whole answer.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{Method, Request, Response};
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Layer;

use crate::logwriter::BatchedWriter;

/// The tracing target of access lines.
pub const TARGET: &str = "access";

/// Paths longer than this are cut in the log (a URI may be kilobytes long).
const MAX_LOGGED_PATH: usize = 200;

/// Where access lines go; set when the [`AccessLog`] layer is made.
static SINK: OnceLock<BatchedWriter> = OnceLock::new();

/// Whether the `access` target is enabled, asked once: filters are fixed at
/// start, and asking the subscriber costs more than writing the line.
static FAST_PATH_LOGS: OnceLock<bool> = OnceLock::new();

/// Logs one request's line (the router's, through [`AccessLayer`], and the
/// status fast path's) when the `access` target is enabled; a path longer
/// than [`MAX_LOGGED_PATH`] characters is cut.
pub fn answered(method: &str, path: &str, status: u16, latency: Duration) {
    if let Some(sink) = SINK.get().filter(|_| logging()) {
        let path = match path.char_indices().nth(MAX_LOGGED_PATH) {
            Some((cut, _)) => &path[..cut],
            None => path,
        };
        LINE.with(|line| {
            let line = &mut *line.borrow_mut();
            line.start();
            line.field("method", method);
            line.field("path", path);
            line.number("status", u64::from(status));
            line.number("micros", latency.as_micros() as u64);
            line.end(sink);
        });
    }
}

/// The access log in the tracing subscriber: its filter says whether the
/// `access` target is enabled, and [`answered`] writes the lines of
/// `2026-11-29T09:30:00.123Z  INFO access: answered method=GET path=/x status=200 micros=12`
/// to its writer. Nothing is logged through tracing itself.
pub struct AccessLog;

impl AccessLog {
    /// A layer whose lines go to `writer`; give it only the `access`
    /// target.
    pub fn new(writer: BatchedWriter) -> Self {
        let _ = SINK.set(writer);
        AccessLog
    }
}

impl<S: Subscriber> Layer<S> for AccessLog {}

/// One line being built, and the formatted second it starts with.
struct Line {
    buf: String,
    second: u64,
    second_text: String,
}

impl Line {
    fn start(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != self.second {
            self.second = now.as_secs();
            self.second_text.clear();
            let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
                + chrono::TimeDelta::seconds(now.as_secs() as i64);
            let _ = write!(self.second_text, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
        }
        let millis = now.subsec_millis();
        self.buf.clear();
        self.buf.push_str(&self.second_text);
        self.buf.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.buf.push(char::from(b'0' + digit as u8));
        }
        // The level padded to five, as tracing's formatter writes it.
        self.buf.push_str("Z  INFO ");
        self.buf.push_str(TARGET);
        self.buf.push_str(": answered");
    }

    fn field(&mut self, name: &str, value: &str) {
        self.buf.push(' ');
        self.buf.push_str(name);
        self.buf.push('=');
        self.buf.push_str(value);
    }

    fn number(&mut self, name: &str, value: u64) {
        self.field(name, itoa::Buffer::new().format(value));
    }

    fn end(&mut self, sink: &BatchedWriter) {
        self.buf.push('\n');
        let _ = sink.make_writer().write_all(self.buf.as_bytes());
    }
}

thread_local! {
    static LINE: RefCell<Line> = const {
        RefCell::new(Line { buf: String::new(), second: u64::MAX, second_text: String::new() })
    };
}

/// The layer that logs every request the router handles: one line when
/// the response head is ready, written straight to the sink like the fast
/// path's. No tracing span: making one per request cost more than the line
/// (the span carried only what the line says, and no other log line shows
/// it).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLayer;

/// The layer of [`AccessLayer`].
pub fn layer() -> AccessLayer {
    AccessLayer
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access { inner }
    }
}

/// A service whose requests are logged by [`AccessLayer`].
#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for Access<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let what = logging().then(|| {
            (
                request.method().clone(),
                request.uri().path().to_owned(),
                Instant::now(),
            )
        });
        Logged {
            inner: self.inner.call(request),
            what,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way, logged once its head is ready.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        what: Option<(Method, String, Instant)>,
    }
}

impl<F, R, E> std::future::Future for Logged<F>
where
    F: std::future::Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some((method, path, started))) = (&output, this.what.take()) {
            answered(
                method.as_str(),
                &path,
                response.status().as_u16(),
                started.elapsed(),
            );
        }
        std::task::Poll::Ready(output)
    }
}

/// Whether access lines are written at all: a sink, and the `access`
/// target enabled (asked once: filters are fixed at start).
fn logging() -> bool {
    SINK.get().is_some()
        && *FAST_PATH_LOGS.get_or_init(|| tracing::enabled!(target: TARGET, tracing::Level::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_router_and_the_fast_path_write_the_same_line() {
        let sink = Sink::default();
        let (writer, flush) = BatchedWriter::new(sink.clone());
        let subscriber = tracing_subscriber::registry()
            .with(AccessLog::new(writer).with_filter(filter_fn(|m| m.target() == TARGET)));
        tracing::subscriber::with_default(subscriber, || {
            let long = format!("/{}", "p".repeat(500));
            for (method, path) in [("POST", "/api/query"), ("GET", long.as_str())] {
                answered(method, path, 503, Duration::from_micros(42));
            }
            answered(
                "GET",
                "/api/orchestrator/status",
                200,
                Duration::from_micros(7),
            );
            // A request through the router's layer: the same line, timed.
            let app =
                tower::ServiceBuilder::new()
                    .layer(layer())
                    .service_fn(|_: Request<()>| async {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(204).body(()).unwrap(),
                        )
                    });
            let request = Request::builder()
                .method(Method::DELETE)
                .uri("/api/session?x=1")
                .body(())
                .unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(tower::ServiceExt::oneshot(app, request))
                .unwrap();
        });
        drop(flush);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let rest: Vec<&str> = lines
            .iter()
            .map(|l| {
                let (at, rest) = l.split_once(' ').unwrap();
                assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
                assert_eq!(at.len(), "2026-11-29T09:30:00.123Z".len(), "{at}");
                rest
            })
            .collect();
        assert_eq!(
            rest[0],
            " INFO access: answered method=POST path=/api/query status=503 micros=42"
        );
        assert!(rest[1].contains(&format!("path=/{} status=503", "p".repeat(199))));
        assert_eq!(
            rest[2],
            " INFO access: answered method=GET path=/api/orchestrator/status status=200 micros=7"
        );
        let (head, micros) = rest[3].rsplit_once("micros=").unwrap();
        assert_eq!(
            head,
            " INFO access: answered method=DELETE path=/api/session status=204 "
        );
        assert!(micros.parse::<u64>().is_ok(), "{micros}");
    }
}
