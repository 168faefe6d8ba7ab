//! The accept loop: hyper with timeouts axum's own `serve` does not set, so
//! slow or idle clients cannot pile up and starve the endpoints.
//!
//! Each connection must deliver a request head within `header_read_timeout`,
//! and that clock also runs while a kept-alive connection sits idle, so a
//! slowloris or a forgotten socket is closed instead of held forever. Accept
//! errors (out of file descriptors, say) back off instead of spinning.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

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
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::{AppState, api, app};

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the app on `listener` until `shutdown` resolves, then lets open
/// connections finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let service = FastPath::new(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_read_timeout))
        .keep_alive_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
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
        let service = TowerToHyperService::new(service.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The protocol sniffing that picks HTTP/1 or HTTP/2 waits for the
            // first bytes with no clock of its own: a client that connects and
            // says nothing gets the header timeout here instead.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("connections still open after {DRAIN:?}; closing"),
    }
}

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
        let fast = state.options.cors_origin.is_none().then(|| state.clone());
        FastPath {
            app: app(state),
            fast,
        }
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
                && req.uri().path() == "/api/orchestrator/status"
                && req.uri().query().is_none()
            {
                let response = api::status_response(state, req.uri().query(), req.headers());
                return Either::Left(std::future::ready(Ok(response)));
            }
        }
        Either::Right(tower::Service::call(&mut self.app, req.map(Body::new)))
    }
}
