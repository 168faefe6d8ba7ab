//! The router behind the OpenAI API: `POST /v1/chat/completions` (whole
//! answers and `stream: true`) and `GET /v1/models`, so any OpenAI client
//! library, agent framework or IDE plugin can point at it unchanged.
//!
//! The request's `model` chooses the routing: `auto` (two-stage on the last
//! user message), a tier by either name (`fast` .. `powerful`, `Q2` .. `Q4`:
//! recorded like simple mode, with that tier), `council` or `benchmark`.
//! Every request records its decision(s) exactly as `POST /api/query` does
//! (same validation, same buffer, same store) and says what was decided in
//! `X-Router-*` headers. The rest of the body (temperature, tools...) goes
//! to the upstream as sent, with the upstream's own `--model`.
//!
//! A stream is relayed event by event as it arrives: nothing is buffered.
//! A client that goes away drops the relay, which closes the upstream's
//! connection and releases the tier's counts. An upstream that stalls
//! (`--upstream-timeout` between two chunks) or breaks mid-stream ends the
//! stream with an OpenAI error event (`data: {"error": {...}}`), which
//! clients raise as an API error.

use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};
use shared::api::{MAX_TOKENS, Mode, Usage};
use shared::metrics::Outcome;
use shared::{RoutingDecision, Tier};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::modes::{self, Body, GroupQuery};
use crate::service::ActiveGuard;
use crate::state::AppState;
use crate::upstream::Streaming;
use crate::upstream::{Attempt, Ended};

/// The models `GET /v1/models` lists, each a way of routing.
pub const MODELS: [&str; 9] = [
    "auto",
    "fast",
    "balanced",
    "powerful",
    "Q2",
    "Q3",
    "Q4",
    "council",
    "benchmark",
];

/// How a request's `model` routes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Two-stage on the last user message.
    Auto,
    /// That tier, recorded like simple mode.
    Tier(Tier),
    /// Council or benchmark.
    Group(Mode),
}

impl Route {
    /// The route a model name asks for.
    pub fn of(model: &str) -> Option<Route> {
        match model {
            "auto" => Some(Route::Auto),
            "council" => Some(Route::Group(Mode::Council)),
            "benchmark" => Some(Route::Group(Mode::Benchmark)),
            other => Tier::from_name(other).map(Route::Tier),
        }
    }
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    /// Boxed: errors travel in `Result`s, and a header map is large.
    headers: Box<HeaderMap>,
}

impl OpenAiError {
    /// A 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_owned()),
            code: None,
            headers: Box::default(),
        }
    }

    fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    /// The error object, as a stream's error event carries it too.
    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        let param = match &err {
            ApiError::Invalid(m) | ApiError::MalformedJson(m) => m
                .split_once(':')
                .map(|(p, _)| p.to_owned())
                .filter(|p| !p.contains(' ')),
            _ => None,
        };
        let (kind, code) = match &err {
            ApiError::MalformedJson(_)
            | ApiError::Invalid(_)
            | ApiError::BadParameter(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UnsupportedMediaType(_) => ("invalid_request_error", None),
            ApiError::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::CrossSite(_) => ("permission_error", None),
            ApiError::NotFound(_) | ApiError::NoStore => ("not_found_error", None),
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", None),
            ApiError::Busy { .. } => ("rate_limit_error", Some("tier_busy")),
            ApiError::NoUpstream { .. } => ("server_error", Some("no_upstream")),
            ApiError::CircuitOpen { .. } => ("server_error", Some("circuit_open")),
            ApiError::Upstream { .. } => match err.status().as_u16() {
                429 => ("rate_limit_error", Some("upstream_rate_limited")),
                400..=499 => ("invalid_request_error", Some("upstream_refused")),
                _ => ("upstream_error", Some("upstream_failed")),
            },
            ApiError::TooManyStreams(_)
            | ApiError::TooManyExports(_)
            | ApiError::StoreFailing(_) => ("server_error", Some("unavailable")),
            ApiError::Internal(_) => ("server_error", None),
        };
        // OpenAI answers a body it cannot use with 400, never 422.
        let status = match err.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        // The plain error's headers (Retry-After, WWW-Authenticate) stay.
        let mut headers = HeaderMap::new();
        let plain = err.into_response();
        for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = plain.headers().get(&name) {
                headers.insert(name, v.clone());
            }
        }
        OpenAiError {
            status,
            message,
            kind,
            param,
            code,
            headers: Box::new(headers),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().extend(*self.headers);
        response
    }
}

/// Under `/v1`, every error is OpenAI's error object, whoever made it (a
/// method not allowed, a body too large, another site's browser, a panic):
/// an answer of ours in the plain `{"error": "..."}` shape is rewritten,
/// its status and headers kept.
pub async fn error_objects(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let under_v1 = {
        let path = req.uri().path();
        path == "/v1" || path.starts_with("/v1/")
    };
    let response = next.run(req).await;
    if !under_v1 || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Our own error bodies are small; anything larger is not one of them.
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return (parts.status, "").into_response();
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_object) => {
            return Response::from_parts(parts, HttpBody::from(bytes));
        }
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_string) => {
            o["error"].as_str().unwrap_or_default().to_owned()
        }
        // A framework's plain-text rejection, or nothing at all.
        _ => match crate::upstream::clean(&String::from_utf8_lossy(&bytes)) {
            text if text.is_empty() => parts
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_owned(),
            text => text,
        },
    };
    let (kind, code) = match parts.status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("not_found_error", None),
        429 => ("rate_limit_error", None),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    let error = OpenAiError {
        status: parts.status,
        message,
        kind,
        param: None,
        code,
        headers: Box::default(),
    };
    let body = serde_json::to_vec(&error.body()).expect("a JSON value serialises");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, HttpBody::from(body))
}

/// The 404 of a model this router does not serve.
fn unknown_model(model: &str) -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "The model `{}` does not exist; this router serves {}",
            model.chars().take(100).collect::<String>(),
            MODELS.join(", ")
        ),
        kind: "invalid_request_error",
        param: Some("model".into()),
        code: Some("model_not_found"),
        headers: Box::default(),
    }
}

/// The 404 of a `/v1` path that does not exist, OpenAI-style.
pub fn not_found(path: &str) -> Response {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no endpoint at {path}"),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        headers: Box::default(),
    }
    .into_response()
}

/// A chat completion request, checked.
#[derive(Debug)]
pub struct ChatRequest {
    /// How it is routed.
    pub route: Route,
    /// The text recorded: the last user message's text, or when it has
    /// none but other parts (an image only), their kinds (`[image_url]`).
    pub query: String,
    /// The text scored: the last user message's text parts.
    pub text: String,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `max_tokens` (or `max_completion_tokens`).
    pub max_tokens: Option<u64>,
    /// The body to send upstream, as the client sent it.
    pub body: Body,
}

/// Checks a request body the way OpenAI does: 400 with the `param` at
/// fault, 404 for a model this router does not serve.
pub fn parse_request(bytes: &[u8]) -> Result<ChatRequest, OpenAiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| OpenAiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(OpenAiError::invalid(
            "body",
            "the body must be a JSON object",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) => m.as_str(),
        None | Some(Value::Null) => {
            return Err(OpenAiError::invalid(
                "model",
                "you must provide a model parameter",
            ));
        }
        Some(_) => return Err(OpenAiError::invalid("model", "model: must be a string")),
    };
    let route = Route::of(model).ok_or_else(|| unknown_model(model))?;
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Err(OpenAiError::invalid(
            "messages",
            "messages: must be an array of messages",
        ));
    };
    if messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "messages: must hold at least one message",
        ));
    }
    let mut query = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            OpenAiError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}]: must be an object with a string role"),
            )
        })?;
        if role == "user" {
            query = Some(message_text(&m["content"], i)?);
        }
    }
    let (text, others) = query.ok_or_else(|| {
        OpenAiError::invalid(
            "messages",
            "messages: must hold a user message (its text is what is routed)",
        )
    })?;
    // A message of images (or audio, files) and no visible text is routed
    // on its text (none: the lowest score) and recorded by its parts'
    // kinds; the parts go to the upstream as sent.
    let query = match shared::validate_query(&text) {
        Err(_) if !others.is_empty() => format!("[{}]", others.join(", ")),
        _ => text.clone(),
    };
    shared::validate_query(&query).map_err(|e| {
        OpenAiError::invalid(
            "messages",
            format!(
                "messages: the last user message's text {}",
                e.to_string().trim_start_matches("query: ")
            ),
        )
    })?;
    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match whole(v) {
                Some(n) if (1..=MAX_TOKENS).contains(&n) => max_tokens = Some(n),
                _ => {
                    return Err(OpenAiError::invalid(
                        key,
                        format!("{key}: must be an integer in 1..={MAX_TOKENS}, got {v}"),
                    ));
                }
            },
        }
    }
    let flag = |v: Option<&Value>, name: &str| match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(OpenAiError::invalid(
            name,
            format!("{name}: must be a boolean"),
        )),
    };
    let stream = flag(body.get("stream"), "stream")?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => flag(o.get("include_usage"), "stream_options.include_usage")?,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "stream_options",
                "stream_options: must be an object",
            ));
        }
    };
    Ok(ChatRequest {
        route,
        query,
        text,
        stream,
        include_usage,
        max_tokens,
        body,
    })
}

/// The text of message `i`'s content: a string, or the `text` of its
/// `text` parts joined by newlines (other parts, images say, carry none);
/// and the types of its other parts, each once. Each part must be an
/// object with a string `type`, and a text part a string `text`, as OpenAI
/// requires.
fn message_text(content: &Value, i: usize) -> Result<(String, Vec<String>), OpenAiError> {
    match content {
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            let mut others: Vec<String> = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => match part.get("text").and_then(Value::as_str) {
                        Some(text) => texts.push(text),
                        None => {
                            return Err(OpenAiError::invalid(
                                &format!("{at}.text"),
                                format!("{at}.text: a text part needs its text as a string"),
                            ));
                        }
                    },
                    Some(kind) => {
                        // A type is the client's text: kept short and plain.
                        let kind = crate::upstream::clean(kind);
                        let kind: String = kind.chars().take(32).collect();
                        if !kind.is_empty() && !others.contains(&kind) {
                            others.push(kind);
                        }
                    }
                    None => {
                        return Err(OpenAiError::invalid(
                            &format!("{at}.type"),
                            format!("{at}: must be an object with a string type"),
                        ));
                    }
                }
            }
            Ok((texts.join("\n"), others))
        }
        _ => Err(OpenAiError::invalid(
            &format!("messages[{i}].content"),
            format!("messages[{i}].content: must be text or an array of content parts"),
        )),
    }
}

/// The request body's schema for the OpenAPI document: every rule
/// [`parse_request`] enforces but one, which a schema cannot say (the
/// last user message's text must show a visible character within its
/// first 100 characters).
pub fn request_schema() -> Value {
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let tokens = json!({"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS});
    let part = json!({"anyOf": [
        {"type": "object", "required": ["type", "text"],
         "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
        {"type": "object", "required": ["type"],
         "properties": {"type": {"type": "string", "not": {"const": "text"}}}},
    ]});
    let user = json!({"type": "object", "required": ["role", "content"], "properties": {
        "role": {"const": "user"},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": part}]},
    }});
    let other = json!({"type": "object", "required": ["role"],
                       "properties": {"role": {"type": "string", "not": {"const": "user"}}}});
    json!({
        "type": "object",
        "description": "An OpenAI chat completion request. `model` chooses the routing. The last user message's text (its first 100 characters) must show a visible character: that text is what is routed and recorded. Other fields go to the upstream as sent.",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "enum": MODELS},
            "messages": {
                "type": "array", "minItems": 1, "items": {"anyOf": [user, other]},
                "contains": {"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}},
            },
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
            "stream": nullable("boolean"),
            "stream_options": {"type": ["object", "null"],
                               "properties": {"include_usage": nullable("boolean")}},
        },
        "example": {"model": "auto", "messages": [{"role": "user", "content": "What is Python?"}]},
    })
}

/// A JSON integer (or a whole float) that fits.
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|x| x.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(x))
            .map(|x| x as u64)
    })
}

/// Routes a chat completion and answers it, whole or streamed.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = Object, description = "An OpenAI chat completion request. `model` chooses the routing: `auto`, `fast`/`balanced`/`powerful`/`Q2`/`Q3`/`Q4`, `council` or `benchmark`. The last user message is what is routed and recorded. Other fields go to the upstream as sent.",
        example = json!({"model": "auto", "messages": [{"role": "user", "content": "What is Python?"}]})),
    responses(
        (status = 200, description = "A `chat.completion` (its `model` is the model that answered; `council` adds `council`, `benchmark` one choice per tier that answered and `benchmark`, both as `POST /api/query` answers them), or with `stream: true` a `text/event-stream` of `chat.completion.chunk` events ending in `data: [DONE]` (a usage chunk before it with `stream_options.include_usage`; an error event instead when the upstream stalls or breaks mid-stream). The `X-Router-*` headers say what was decided (for a group: `X-Router-Group-Id`, and the tiers and decision ids as lists for a benchmark).",
         content_type = "application/json", body = Object,
         headers(
            ("X-Router-Tier" = String, description = "The tier: Q2, Q3 or Q4 (a benchmark: Q2,Q3,Q4)"),
            ("X-Router-Score" = String, description = "The complexity score"),
            ("X-Router-Complexity" = String, description = "SIMPLE, MODERATE or COMPLEX"),
            ("X-Router-Decision-Id" = String, description = "The decision's id (a benchmark: each one, comma-separated)"),
            ("X-Router-Group-Id" = String, description = "Council and benchmark: the group's id"),
         )),
        (status = 400, description = "OpenAI `invalid_request_error`: the body, `messages`, `max_tokens`, `stream`... (`param` names it); nothing recorded", body = Object),
        (status = 401, description = "`--api-key` is set and the bearer key is missing or wrong (`code`: `invalid_api_key`)", body = Object),
        (status = 403, description = "A cross-site browser request; nothing recorded", body = Object),
        (status = 404, description = "A model this router does not serve (`code`: `model_not_found`); nothing recorded", body = Object),
        (status = 413, description = "Body over 4 MiB", body = Object),
        (status = 415, description = "Content-Type is not application/json", body = Object),
        (status = 429, description = "The tier is busy or its upstream rate-limited the call (`rate_limit_error`, Retry-After); the decision stays recorded", body = Object),
        (status = "4XX", description = "The upstream refused the request (a prompt over its context window...); the decision stays recorded", body = Object),
        (status = 502, description = "The upstream failed, or no council member (or moderator) / no benchmark tier answered; the decisions stay recorded", body = Object),
        (status = 503, description = "The tier has no upstream or every upstream's circuit is open; the decision stays recorded", body = Object),
    ),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match chat(&state, &headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn chat(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    crate::extract::require_json_content_type(headers)?;
    let body =
        body.map_err(|r| crate::extract::body_rejected(&r, crate::extract::MAX_BATCH_BODY_BYTES))?;
    let req = parse_request(&body)?;
    match req.route {
        Route::Group(mode) => group(state, req, mode).await,
        Route::Auto | Route::Tier(_) => single(state, req).await,
    }
}

/// One tier answers: chosen by two-stage routing, or named.
async fn single(state: &AppState, req: ChatRequest) -> Result<Response, OpenAiError> {
    let route = match req.route {
        Route::Tier(tier) => crate::routing::Route {
            tier,
            score: 0.0,
            decision_time_ms: 0.0,
            signals: None,
        },
        _ => modes::assessed_route(state, &req.text).await,
    };
    let mode = match req.route {
        Route::Tier(_) => Mode::Simple,
        _ => Mode::TwoStage,
    };
    let (mut decision, pending) = state
        .service
        .record_pending(
            &req.query,
            route.tier,
            route.score,
            route.decision_time_ms,
            Some(mode),
            route.signals,
            None,
        )
        .map_err(|e| OpenAiError::invalid("messages", e.to_string()))?;
    let committing = pending.commit();
    let routed = crate::router_headers::single(&decision);
    let result = if req.stream {
        stream_single(state, &decision, req).await
    } else {
        whole_single(state, &mut decision, req).await
    };
    if let Some(committing) = committing {
        let _ = committing.await;
    }
    let mut response = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response.headers_mut().extend(routed);
    Ok(response)
}

async fn whole_single(
    state: &AppState,
    decision: &mut RoutingDecision,
    req: ChatRequest,
) -> Result<Response, OpenAiError> {
    let (answer, bytes) = modes::call_tier(state, decision, req.body).await?;
    modes::add_usage(state, decision, answer.usage);
    let mut completion: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    let model = answer
        .model
        .unwrap_or_else(|| decision.tier.internal_name().to_owned());
    normalize(&mut completion, "chat.completion", &decision.id, &model);
    Ok(axum::Json(completion).into_response())
}

/// Fills in what a strict client needs and an upstream may leave out (id,
/// object, created, each choice's index, a message's role), and names the
/// model that answered.
fn normalize(v: &mut Value, object: &str, id: &str, model: &str) {
    let Value::Object(o) = v else {
        *v = json!({});
        return normalize(v, object, id, model);
    };
    if !o.get("id").is_some_and(Value::is_string) {
        o.insert("id".into(), json!(format!("chatcmpl-{id}")));
    }
    o.insert("object".into(), json!(object));
    if !o.get("created").is_some_and(Value::is_u64) {
        o.insert("created".into(), json!(chrono::Utc::now().timestamp()));
    }
    o.insert("model".into(), json!(model));
    let choices = o.entry("choices").or_insert_with(|| json!([]));
    if let Value::Array(choices) = choices {
        for (i, c) in choices.iter_mut().enumerate() {
            if let Value::Object(c) = c {
                c.entry("index").or_insert(json!(i));
                let inner = if object == "chat.completion" {
                    "message"
                } else {
                    "delta"
                };
                if let Some(Value::Object(m)) = c.get_mut(inner)
                    && inner == "message"
                {
                    m.entry("role").or_insert(json!("assistant"));
                }
                if object == "chat.completion" {
                    c.entry("finish_reason").or_insert(json!("stop"));
                }
            }
        }
    }
}

/// Opens the upstream stream (errors before its first byte are ordinary
/// error answers) and relays it.
async fn stream_single(
    state: &AppState,
    decision: &RoutingDecision,
    req: ChatRequest,
) -> Result<Response, OpenAiError> {
    let tier = decision.tier;
    if !state.upstreams.configured(tier) {
        return Err(ApiError::NoUpstream {
            tier,
            decision: Box::new(decision.clone()),
        }
        .into());
    }
    let place = state
        .upstreams
        .try_begin(tier)
        .map_err(|limit| ApiError::Busy {
            tier,
            limit,
            decision: Box::new(decision.clone()),
        })?;
    let active = state.service.begin(tier);
    let started = Instant::now();
    let streaming = state
        .upstreams
        .open_stream(tier, req.body)
        .await
        .map_err(|e| modes::failed(state, decision, e, started))?;
    let relay = Relay::new(
        state.clone(),
        decision.clone(),
        streaming,
        req.include_usage,
        started,
        Hold {
            _active: active,
            _place: place,
        },
    );
    Ok(sse_response(relay.into_stream()))
}

/// What a stream holds until it ends: the tier's active count and place.
struct Hold {
    _active: ActiveGuard,
    _place: OwnedSemaphorePermit,
}

type Events = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// Relays one upstream stream to the client, event by event.
struct Relay {
    state: AppState,
    decision: RoutingDecision,
    events: Events,
    call: Option<Attempt>,
    upstream: String,
    idle: Duration,
    include_usage: bool,
    waiting_first_token: bool,
    model: Option<String>,
    usage: Option<Usage>,
    /// The client asked for usage and a chunk carrying it went out.
    usage_sent: bool,
    started: Instant,
    done: bool,
    /// `[DONE]`, held back while a usage chunk of our own goes first.
    last: Option<Event>,
    _hold: Hold,
}

impl Relay {
    fn new(
        state: AppState,
        decision: RoutingDecision,
        s: Streaming,
        include_usage: bool,
        started: Instant,
        hold: Hold,
    ) -> Relay {
        Relay {
            state,
            decision,
            events: Box::pin(s.response.bytes_stream().eventsource()),
            call: Some(s.call),
            upstream: s.upstream,
            idle: s.idle,
            include_usage,
            waiting_first_token: true,
            model: s.model,
            usage: None,
            usage_sent: false,
            started,
            done: false,
            last: None,
            _hold: hold,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(self, |mut relay| async move {
            let bytes = relay.next().await?;
            Some((Ok(bytes), relay))
        })
    }

    /// The next bytes for the client; `None` once the stream has ended.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return self.last.take();
        }
        loop {
            let event = match tokio::time::timeout(self.idle, self.events.next()).await {
                Err(_) => {
                    let msg = format!(
                        "upstream {} sent nothing for {:?} mid-stream (--upstream-timeout)",
                        self.upstream, self.idle
                    );
                    return Some(self.fail(Outcome::Timeout, msg));
                }
                Ok(None) => {
                    let msg = format!(
                        "upstream {} closed the stream before it ended (no [DONE])",
                        self.upstream
                    );
                    return Some(self.fail(Outcome::BadReply, msg));
                }
                Ok(Some(Err(e))) => {
                    let msg = format!("upstream {} broke the stream: {e}", self.upstream);
                    return Some(self.fail(Outcome::BadReply, msg));
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                self.finish();
                let done = Event::default().data(DONE);
                if self.include_usage && !self.usage_sent {
                    // Promised by include_usage, whether or not the upstream
                    // sent one: its counts if it said them, else null.
                    self.last = Some(done);
                    return Some(sse_data(&self.usage_chunk()));
                }
                return Some(done);
            }
            let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
                let msg = format!(
                    "upstream {} sent an event that is not a chat completion chunk",
                    self.upstream
                );
                return Some(self.fail(Outcome::BadReply, msg));
            };
            if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
                let said = crate::upstream::error_message(&json!({ "error": error }).to_string());
                let msg = format!("upstream {} failed mid-stream: {said}", self.upstream);
                return Some(self.fail(Outcome::BadReply, msg));
            }
            if let Some(model) = chunk.get("model").and_then(Value::as_str)
                && !model.is_empty()
            {
                self.model = Some(crate::upstream::clean(model));
            }
            let usage = chunk.get("usage").filter(|u| !u.is_null()).map(|u| Usage {
                prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            });
            if usage.is_some() {
                self.usage = usage;
            }
            let choices = chunk["choices"].as_array().map_or(0, Vec::len);
            if choices == 0 && usage.is_some() && !self.include_usage {
                continue;
            }
            if !self.include_usage
                && let Value::Object(o) = &mut chunk
            {
                o.remove("usage");
            }
            if self.include_usage && usage.is_some() {
                self.usage_sent = true;
            }
            if self.waiting_first_token && has_token(&chunk) {
                self.waiting_first_token = false;
                if let Some(call) = &self.call {
                    call.first_token();
                }
            }
            let model = self
                .model
                .clone()
                .unwrap_or_else(|| self.decision.tier.internal_name().to_owned());
            normalize(
                &mut chunk,
                "chat.completion.chunk",
                &self.decision.id,
                &model,
            );
            return Some(sse_data(&chunk));
        }
    }

    /// The last chunk `include_usage` promises, when the upstream sent none.
    fn usage_chunk(&self) -> Value {
        let usage = self.usage.map(|u| {
            json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                   "total_tokens": u.prompt_tokens + u.completion_tokens})
        });
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| self.decision.tier.internal_name().to_owned());
        let mut chunk = json!({"choices": [], "usage": usage});
        normalize(
            &mut chunk,
            "chat.completion.chunk",
            &self.decision.id,
            &model,
        );
        chunk
    }

    /// The stream ended as it should: the call and its tokens are counted.
    fn finish(&mut self) {
        self.done = true;
        if let Some(call) = self.call.take() {
            call.finish(
                Outcome::Ok,
                Ended {
                    model: self.model.clone(),
                    usage: self.usage,
                    error: None,
                },
            );
        }
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.state.service.add_call(self.decision.tier, ms, true);
        let usage = self.usage;
        modes::add_usage(&self.state, &mut self.decision, usage);
    }

    /// The stream broke: counted as `outcome`, and the client gets an
    /// error event (and no `[DONE]`).
    fn fail(&mut self, outcome: Outcome, message: String) -> Event {
        self.done = true;
        tracing::warn!(tier = %self.decision.tier, id = %self.decision.id, error = %message, "stream failed");
        if let Some(call) = self.call.take() {
            call.finish(
                outcome,
                Ended {
                    error: Some(message.clone()),
                    ..Ended::default()
                },
            );
        }
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.state.service.add_call(self.decision.tier, ms, false);
        let code = match outcome {
            Outcome::Timeout => "upstream_timeout",
            _ => "upstream_stream_broken",
        };
        sse_data(&json!({"error": {
            "message": message, "type": "upstream_error", "param": null, "code": code,
        }}))
    }
}

/// Whether a chunk carries the answer's first content: text or a tool call.
fn has_token(chunk: &Value) -> bool {
    chunk["choices"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            let d = &c["delta"];
            d["content"].as_str().is_some_and(|s| !s.is_empty())
                || d["tool_calls"].as_array().is_some_and(|t| !t.is_empty())
        })
    })
}

/// The data that ends an OpenAI stream.
const DONE: &str = "[DONE]";

/// One `data:` event of JSON (axum frames it: a newline in the data could
/// never end the event early).
fn sse_data(v: &Value) -> Event {
    Event::default().data(serde_json::to_string(v).expect("a JSON value serialises"))
}

fn sse_response(
    stream: impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static,
) -> Response {
    let mut response = Sse::new(stream).into_response();
    // Proxies (nginx) would buffer the stream otherwise.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Council or benchmark: every member asked, the answer assembled.
async fn group(state: &AppState, req: ChatRequest, mode: Mode) -> Result<Response, OpenAiError> {
    let mut body = req.body.clone();
    body.remove("stream");
    body.remove("stream_options");
    let outcome = modes::run_group(
        state,
        GroupQuery {
            mode,
            query: &req.query,
            body,
            max_tokens: req.max_tokens,
        },
    )
    .await?;
    let g = &outcome.answer;
    let headers = crate::router_headers::group(g);
    let answers: Vec<Choice> = match mode {
        Mode::Council => g
            .answer
            .iter()
            .map(|a| Choice {
                text: a.clone(),
                model: g.model.clone().unwrap_or_else(|| "council".into()),
                finish_reason: "stop".into(),
                tool_calls: None,
            })
            .collect(),
        // Each member's answer as it came: its finish reason, and its tool
        // calls (with no text, content null as OpenAI sends it).
        _ => g
            .members
            .iter()
            .filter(|m| m.ok())
            .map(|m| Choice {
                text: m.answer.clone().unwrap_or_default(),
                model: m
                    .model
                    .clone()
                    .unwrap_or_else(|| m.tier.internal_name().to_owned()),
                finish_reason: m.finish_reason.clone().unwrap_or_else(|| "stop".into()),
                tool_calls: m.tool_calls.clone(),
            })
            .collect(),
    };
    if answers.is_empty() {
        let why: Vec<String> = g
            .members
            .iter()
            .chain(&g.moderator)
            .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.tier)))
            .collect();
        let what = match mode {
            Mode::Council => "the council wrote no final answer",
            _ => "no tier of the benchmark answered",
        };
        let err = OpenAiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("{what} ({})", why.join("; ")),
            kind: "upstream_error",
            param: None,
            code: Some("upstream_failed"),
            headers: Box::default(),
        };
        return Ok(err.with_headers(headers).into_response());
    }
    let model = answers
        .iter()
        .map(|c| c.model.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let id = format!("chatcmpl-{}", g.group_id);
    let created = chrono::Utc::now().timestamp();
    let usage = outcome.usage.map(|u| {
        json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
               "total_tokens": u.prompt_tokens + u.completion_tokens})
    });
    let extension = serde_json::to_value(g).expect("a group answer serialises");
    let mut response = if req.stream {
        let mut events: Vec<Event> = Vec::new();
        for (i, c) in answers.iter().enumerate() {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": i, "delta": delta, "finish_reason": finish}]})
            };
            events.push(sse_data(&chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )));
            if !c.text.is_empty() {
                events.push(sse_data(&chunk(json!({"content": c.text}), Value::Null)));
            }
            if let Some(calls) = c.indexed_tool_calls() {
                events.push(sse_data(&chunk(json!({"tool_calls": calls}), Value::Null)));
            }
            events.push(sse_data(&chunk(json!({}), json!(c.finish_reason))));
        }
        if req.include_usage {
            let mut last = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                                  "model": model, "choices": [], "usage": usage});
            last[mode.name()] = extension;
            events.push(sse_data(&last));
        }
        events.push(Event::default().data(DONE));
        sse_response(futures_util::stream::iter(events.into_iter().map(Ok)))
    } else {
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = json!({"role": "assistant", "content": c.text});
                if let Some(calls) = &c.tool_calls {
                    message["tool_calls"] =
                        serde_json::from_str(calls.get()).unwrap_or(Value::Null);
                    if c.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                json!({"index": i, "message": message, "finish_reason": c.finish_reason})
            })
            .collect();
        let mut completion = json!({"id": id, "object": "chat.completion", "created": created,
                                    "model": model, "choices": choices});
        if let Some(usage) = usage {
            completion["usage"] = usage;
        }
        completion[mode.name()] = extension;
        axum::Json(completion).into_response()
    };
    response.headers_mut().extend(headers);
    Ok(response)
}

/// One choice of a group's answer.
struct Choice {
    text: String,
    model: String,
    finish_reason: String,
    tool_calls: Option<shared::api::RawJson>,
}

impl Choice {
    /// The tool calls as a streamed delta carries them: each with its
    /// `index`.
    fn indexed_tool_calls(&self) -> Option<Value> {
        let calls: Value = serde_json::from_str(self.tool_calls.as_ref()?.get()).ok()?;
        let Value::Array(calls) = calls else {
            return None;
        };
        Some(Value::Array(
            calls
                .into_iter()
                .enumerate()
                .map(|(i, mut c)| {
                    if let Value::Object(o) = &mut c {
                        o.entry("index").or_insert(json!(i));
                    }
                    c
                })
                .collect(),
        ))
    }
}

/// The models this router serves: one per way of routing.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "`{\"object\": \"list\", \"data\": [{\"id\", \"object\": \"model\", \"created\", \"owned_by\"}]}`: auto, fast, balanced, powerful, Q2, Q3, Q4, council, benchmark", body = Object),
        (status = 401, description = "`--api-key` is set and the bearer key is missing or wrong", body = Object),
    ),
)]
pub async fn models(State(state): State<AppState>) -> Response {
    let created = state.service.instance().started_at.timestamp();
    let data: Vec<Value> = MODELS.iter().map(|id| model_json(id, created)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// One model of [`models`].
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "A model of `GET /v1/models`")),
    responses(
        (status = 200, description = "The model", body = Object),
        (status = 404, description = "Not a model of this router (`model_not_found`)", body = Object),
    ),
)]
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if Route::of(&id).is_none() {
        return unknown_model(&id).into_response();
    }
    let created = state.service.instance().started_at.timestamp();
    axum::Json(model_json(&id, created)).into_response()
}

fn model_json(id: &str, created: i64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "orchestrator-status"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ChatRequest, OpenAiError> {
        parse_request(v.to_string().as_bytes())
    }

    #[test]
    fn the_model_chooses_the_route() {
        let m = |model: &str| Route::of(model);
        assert_eq!(m("auto"), Some(Route::Auto));
        assert_eq!(m("fast"), Some(Route::Tier(Tier::Q2)));
        assert_eq!(m("Q4"), Some(Route::Tier(Tier::Q4)));
        assert_eq!(m("council"), Some(Route::Group(Mode::Council)));
        assert_eq!(m("benchmark"), Some(Route::Group(Mode::Benchmark)));
        assert_eq!(m("gpt-4o"), None);
        for id in MODELS {
            assert!(m(id).is_some(), "{id}");
        }
    }

    #[test]
    fn requests_are_checked_as_openai_does() {
        let ok = parse(json!({"model": "auto", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "Python?"}]},
        ], "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}))
        .unwrap();
        assert_eq!(ok.query, "What is\nPython?");
        assert_eq!(
            (ok.stream, ok.include_usage, ok.max_tokens),
            (true, true, Some(5))
        );
        let param = |v: Value| {
            let e = parse(v).unwrap_err();
            (e.status.as_u16(), e.param.unwrap_or_default())
        };
        let msgs = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(param(json!({"messages": msgs})), (400, "model".into()));
        assert_eq!(
            param(json!({"model": "gpt-9", "messages": msgs})),
            (404, "model".into())
        );
        assert_eq!(param(json!({"model": "auto"})), (400, "messages".into()));
        assert_eq!(
            param(json!({"model": "auto", "messages": []})),
            (400, "messages".into())
        );
        assert_eq!(
            param(json!({"model": "auto", "messages": [{"role": "system", "content": "x"}]})),
            (400, "messages".into())
        );
        assert_eq!(
            param(
                json!({"model": "auto", "messages": [{"role": "user", "content": " \u{200b} "}]})
            ),
            (400, "messages".into())
        );
        assert_eq!(
            param(json!({"model": "auto", "messages": [{"content": "x"}]})),
            (400, "messages[0].role".into())
        );
        assert_eq!(
            param(
                json!({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
            ),
            (400, "messages[0].content[0].text".into())
        );
        assert_eq!(
            param(json!({"model": "auto", "messages": [{"role": "user", "content": ["hi"]}]})),
            (400, "messages[0].content[0].type".into())
        );
        assert_eq!(
            param(json!({"model": "auto", "messages": [{"role": "user", "content": null}]})),
            (400, "messages[0].content".into())
        );
        assert_eq!(
            param(json!({"model": "auto", "messages": msgs, "max_tokens": 0})),
            (400, "max_tokens".into())
        );
        assert_eq!(
            param(json!({"model": "auto", "messages": msgs, "stream": "yes"})),
            (400, "stream".into())
        );
        assert_eq!(
            parse_request(b"[1]").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_request(b"{").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn normalizing_fills_what_strict_clients_need() {
        let mut v = json!({"choices": [{"message": {"content": "hi"}}]});
        normalize(&mut v, "chat.completion", "i-1", "m");
        assert_eq!(v["id"], "chatcmpl-i-1");
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].is_u64());
        assert_eq!(v["model"], "m");
        assert_eq!(v["choices"][0]["index"], 0);
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
}
