//! Every HTTP call the panel makes, each with a typed error.

use std::fmt;

use futures::future::{Either, select};
use gloo_net::http::{Request, Response};
use gloo_timers::future::TimeoutFuture;
use shared::OrchestratorStatus;
use shared::api::{ErrorBody, QueryRequest, QueryResponse};
use shared::group::GroupAnswer;

/// The one field of an error body the panel shows (the rest of
/// `ErrorBody` would cost a decoder it never uses).
#[derive(serde::Deserialize)]
struct ErrorText {
    error: String,
}
use web_sys::AbortController;

/// The status endpoint, relative to the API base.
pub const STATUS_PATH: &str = "/api/orchestrator/status";
/// The event stream, relative to the API base.
pub const STREAM_PATH: &str = "/api/orchestrator/stream";
/// The router endpoint, relative to the API base.
pub const QUERY_PATH: &str = "/api/query";
/// Opens a read session (`--read-key`), relative to the API base.
pub const SESSION_PATH: &str = "/api/session";

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The request never got an HTTP answer (server down, refused, aborted).
    Network(String),
    /// No answer within the given milliseconds; the request was aborted.
    Timeout(u32),
    /// The server answered with a non-2xx status.
    Status {
        /// The HTTP status.
        code: u16,
        /// The server's `error` text, when it sent a JSON error.
        message: Option<String>,
    },
    /// A 2xx answer whose body is not what the API promises.
    Malformed(String),
}

impl ApiError {
    /// The failure in an operator's words, for the badge: what kind
    /// (backend unreachable, timeout, HTTP status, bad JSON), then the
    /// detail in parentheses.
    pub fn reason(&self) -> String {
        match self {
            ApiError::Network(why) => format!("backend unreachable ({why})"),
            ApiError::Timeout(ms) => {
                format!("timeout (no answer within {} s)", *ms as f64 / 1000.0)
            }
            ApiError::Status {
                code,
                message: Some(m),
                ..
            } => format!("HTTP {code} ({m})"),
            ApiError::Status { code, .. } => format!("HTTP {code}"),
            ApiError::Malformed(why) => format!("bad JSON ({why})"),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Network(why) => write!(f, "network error: {why}"),
            ApiError::Timeout(ms) => write!(f, "no answer within {} s", *ms as f64 / 1000.0),
            ApiError::Status {
                code,
                message: Some(m),
                ..
            } => write!(f, "HTTP {code}: {m}"),
            ApiError::Status {
                code,
                message: None,
                ..
            } => write!(f, "HTTP {code}"),
            ApiError::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

/// What a status poll brought.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusFetch {
    /// A new status, with the ETag to send next time.
    Fresh {
        /// The status.
        status: Box<OrchestratorStatus>,
        /// Its ETag, if the server sent one.
        etag: Option<String>,
    },
    /// 304: the status the panel holds is still current.
    NotModified,
}

/// Polls the status once, listing the newest `limit` decisions. `etag`
/// makes it conditional; `controller` lets the caller abort it (on
/// unmount), and it is aborted after `timeout_ms`.
pub async fn fetch_status(
    base: &str,
    limit: usize,
    etag: Option<&str>,
    controller: &AbortController,
    timeout_ms: u32,
) -> Result<StatusFetch, ApiError> {
    let mut request = Request::get(&format!("{base}{STATUS_PATH}?limit={limit}"))
        .header("accept", "application/json")
        .abort_signal(Some(&controller.signal()));
    if let Some(tag) = etag {
        request = request.header("if-none-match", tag);
    }
    let call = async move {
        let response = request.send().await.map_err(network)?;
        if response.status() == 304 {
            return Ok(StatusFetch::NotModified);
        }
        let etag = response.headers().get("etag");
        let (status, _) = decode_text::<OrchestratorStatus>(&response).await?;
        Ok(StatusFetch::Fresh {
            status: Box::new(status),
            etag,
        })
    };
    with_timeout(call, controller, timeout_ms).await
}

/// What `POST /api/query` answered, decoded through the shared types.
#[derive(Debug)]
pub enum QueryOutcome {
    /// `simple` and `two-stage`: one tier's answer.
    One(Box<QueryResponse>),
    /// `council` and `benchmark`: every member's answer.
    Group(Box<GroupAnswer>),
    /// Any other status: its code and the server's error (with the
    /// decision, when one was recorded).
    Refused(u16, Box<ErrorBody>),
}

/// Sends a query to the router and decodes its answer as the mode asked
/// answers (a group's for council and benchmark), or its error. A 2xx
/// body that is not that answer is [`ApiError::Malformed`].
pub async fn post_query(
    base: &str,
    body: &QueryRequest,
    controller: &AbortController,
    timeout_ms: u32,
) -> Result<QueryOutcome, ApiError> {
    let group = body.mode.is_group();
    let request = Request::post(&format!("{base}{QUERY_PATH}"))
        .abort_signal(Some(&controller.signal()))
        .json(body)
        .map_err(|e| ApiError::Malformed(gloo_error(e)))?;
    let call = async move {
        let response = request.send().await.map_err(network)?;
        let code = response.status();
        let text = response.text().await.map_err(network)?;
        let malformed = |e: serde_json::Error| ApiError::Malformed(format!("HTTP {code}: {e}"));
        Ok(match code {
            200..=299 if group => {
                QueryOutcome::Group(serde_json::from_str(&text).map_err(malformed)?)
            }
            200..=299 => QueryOutcome::One(serde_json::from_str(&text).map_err(malformed)?),
            _ => QueryOutcome::Refused(code, serde_json::from_str(&text).map_err(malformed)?),
        })
    };
    with_timeout(call, controller, timeout_ms).await
}

/// Opens a read session with `key`: the server sets its cookie (which
/// the browser then sends with every poll and the event stream).
pub async fn open_session(base: &str, key: &str) -> Result<(), ApiError> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        key: &'a str,
    }
    let request = Request::post(&format!("{base}{SESSION_PATH}"))
        .json(&Body { key })
        .map_err(|e| ApiError::Malformed(gloo_error(e)))?;
    let response = request.send().await.map_err(network)?;
    if response.ok() {
        return Ok(());
    }
    let text = response.text().await.map_err(network)?;
    let body: Option<ErrorText> = serde_json::from_str(&text).ok();
    Err(ApiError::Status {
        code: response.status(),
        message: body.map(|b| b.error),
    })
}

async fn with_timeout<T>(
    call: impl Future<Output = Result<T, ApiError>>,
    controller: &AbortController,
    timeout_ms: u32,
) -> Result<T, ApiError> {
    let call = std::pin::pin!(call);
    match select(call, TimeoutFuture::new(timeout_ms)).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => {
            controller.abort();
            Err(ApiError::Timeout(timeout_ms))
        }
    }
}

/// A 2xx body decoded as `T`, with its JSON text; any other status as
/// [`ApiError::Status`] with the server's JSON error when there is one.
async fn decode_text<T: serde::de::DeserializeOwned>(
    response: &Response,
) -> Result<(T, String), ApiError> {
    let text = response.text().await.map_err(network)?;
    if !response.ok() {
        let body: Option<ErrorText> = serde_json::from_str(&text).ok();
        return Err(ApiError::Status {
            code: response.status(),
            message: body.map(|b| b.error),
        });
    }
    let value = serde_json::from_str(&text).map_err(|e| ApiError::Malformed(json_error(&e)))?;
    Ok((value, text))
}

/// Where JSON went wrong. Not serde_json's message: its Display would
/// bring float formatting into the bundle for a line nobody reads twice.
fn json_error(e: &serde_json::Error) -> String {
    format!("at line {} column {}", e.line(), e.column())
}

fn network(err: gloo_net::Error) -> ApiError {
    ApiError::Network(gloo_error(err))
}

fn gloo_error(err: gloo_net::Error) -> String {
    match err {
        gloo_net::Error::JsError(e) => e.message,
        gloo_net::Error::SerdeError(e) => json_error(&e),
        gloo_net::Error::GlooError(e) => e,
    }
}

/// What-if over the stored history, relative to the API base.
pub const REPLAY_PATH: &str = "/api/orchestrator/replay";

/// Replays the stored two-stage decisions since `from` (`-1h`, `-1d`,
/// `-7d`) at Q4 threshold `threshold`; `controller` lets the caller abort
/// it (a newer question, unmount).
pub async fn fetch_replay(
    base: &str,
    from: &str,
    threshold: f64,
    controller: &AbortController,
) -> Result<shared::replay::Replay, ApiError> {
    let request = Request::get(&format!(
        "{base}{REPLAY_PATH}?from={from}&threshold={threshold}"
    ))
    .header("accept", "application/json")
    .abort_signal(Some(&controller.signal()));
    let response = request.send().await.map_err(network)?;
    decode_text(&response).await.map(|(replay, _)| replay)
}

/// The stored trends: `GET /api/orchestrator/history`.
pub const HISTORY_PATH: &str = "/api/orchestrator/history";
/// The stored decision log: `GET /api/orchestrator/decisions`.
pub const DECISIONS_PATH: &str = "/api/orchestrator/decisions";

/// GETs `path` (with its query) and parses the JSON answer in the browser
/// (`JSON.parse`): the History page reads its few fields from the parsed
/// value, so the WASM carries no decoder for those documents. A non-2xx
/// answer is its `error` text.
pub async fn fetch_json(path: &str) -> Result<wasm_bindgen::JsValue, String> {
    let response = Request::get(path)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(gloo_error)?;
    let text = response.text().await.map_err(gloo_error)?;
    let value = js_sys::JSON::parse(&text).map_err(|_| format!("HTTP {}", response.status()))?;
    if response.ok() {
        Ok(value)
    } else {
        let error = js_sys::Reflect::get(&value, &"error".into()).ok();
        Err(error
            .and_then(|e| e.as_string())
            .unwrap_or_else(|| format!("HTTP {}", response.status())))
    }
}
