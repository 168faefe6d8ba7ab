//! The access log: one line per request with its method, path, status and
//! duration, at `info` under the target `access` (turn it off with
//! `RUST_LOG=info,access=off`). Never the query string, headers or bodies:
//! they may carry users' text or tokens.
//!
//! The router's requests are logged by [`AccessLayer`] and the status fast
//! path's by [`answered_fast`]: both write the line straight to the sink of
//! the [`AccessLog`] layer when the `access` target is enabled (which that
//! layer's filter decides), and that layer writes the same line for
//! `access` events logged through tracing ([`span`], [`answered`]). The
//! formatter is compact and the path short because the general ones cost
//! more than the fast path's whole answer.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{Method, Request, Response};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::logwriter::BatchedWriter;

/// The tracing target of access lines.
pub const TARGET: &str = "access";

/// Paths longer than this are cut in the log (a URI may be kilobytes long).
const MAX_LOGGED_PATH: usize = 200;

/// The span an access line is logged in: the request's method and path.
pub fn span(method: &Method, path: &str) -> Span {
    let path = match path.char_indices().nth(MAX_LOGGED_PATH) {
        Some((cut, _)) => &path[..cut],
        None => path,
    };
    tracing::info_span!(target: TARGET, "request", method = %method, path = %path)
}

/// Logs the answer's status and how long it took (in the request's span).
pub fn answered(status: u16, latency: Duration) {
    tracing::info!(target: TARGET, status, micros = latency.as_micros() as u64, "answered");
}

/// Where access lines go; set when the [`AccessLog`] layer is made.
static SINK: OnceLock<BatchedWriter> = OnceLock::new();

/// Whether the `access` target is enabled, asked once: filters are fixed at
/// start, and asking the subscriber costs more than writing the line.
static FAST_PATH_LOGS: OnceLock<bool> = OnceLock::new();

/// Logs the status fast path's request, the same line the layer writes for
/// the router's, when the `access` target is enabled.
pub fn answered_fast(method: &str, path: &str, status: u16, latency: Duration) {
    if let Some(sink) = SINK.get().filter(|_| logging()) {
        LINE.with(|line| {
            let line = &mut *line.borrow_mut();
            line.start(&tracing::Level::INFO);
            line.field("method", method);
            line.field("path", path);
            line.number("status", u64::from(status));
            line.number("micros", latency.as_micros() as u64);
            line.end(sink);
        });
    }
}

/// Writes access events as lines of
/// `2026-11-29T09:30:00.123Z  INFO access: answered method=GET path=/x status=200 micros=12`
/// taking method and path from the event or its `access` span.
pub struct AccessLog {
    writer: BatchedWriter,
}

impl AccessLog {
    /// A layer writing to `writer` (the fast path writes there too); give
    /// it only the `access` target.
    pub fn new(writer: BatchedWriter) -> Self {
        let _ = SINK.set(writer.clone());
        AccessLog { writer }
    }
}

/// The fields an access span carried, already formatted.
struct SpanFields(String);

/// One line being built, and the formatted second it starts with.
struct Line {
    buf: String,
    second: u64,
    second_text: String,
}

impl Line {
    fn start(&mut self, level: &tracing::Level) {
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
        self.buf.push_str("Z ");
        let level = level.as_str();
        for _ in level.len()..5 {
            self.buf.push(' ');
        }
        self.buf.push_str(level);
        self.buf.push(' ');
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

/// Appends ` name=value` for each field but the message.
struct Fields<'a>(&'a mut Line);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" {
            self.0.field(field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.number(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() != "message" {
            let _ = write!(self.0.buf, " {}={value:?}", field.name());
        }
    }
}

thread_local! {
    static LINE: RefCell<Line> = const {
        RefCell::new(Line { buf: String::new(), second: u64::MAX, second_text: String::new() })
    };
}

impl<S> Layer<S> for AccessLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut line = Line {
            buf: String::new(),
            second: 0,
            second_text: String::new(),
        };
        attrs.record(&mut Fields(&mut line));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(line.buf));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        LINE.with(|line| {
            let line = &mut *line.borrow_mut();
            line.start(event.metadata().level());
            if let Some(span) = ctx.event_span(event)
                && let Some(fields) = span.extensions().get::<SpanFields>()
            {
                line.buf.push_str(&fields.0);
            }
            event.record(&mut Fields(line));
            line.end(&self.writer);
        });
    }
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
            let path = request.uri().path();
            let path = match path.char_indices().nth(MAX_LOGGED_PATH) {
                Some((cut, _)) => &path[..cut],
                None => path,
            };
            (request.method().clone(), path.to_owned(), Instant::now())
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
            answered_fast(
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
            for (method, path) in [(Method::POST, "/api/query"), (Method::GET, long.as_str())] {
                let request = span(&method, path);
                let _in = request.enter();
                answered(503, Duration::from_micros(42));
            }
            answered_fast(
                "GET",
                "/api/orchestrator/status",
                200,
                Duration::from_micros(7),
            );
        });
        drop(flush);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
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
    }
}
