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

use crate::error::ApiError;
use crate::keys::{Caller, Grant};
use crate::pipeline::{self, Admitted, Body, Choice, GroupQuery};
use crate::state::AppState;
use crate::upstream::Streaming;
use crate::upstream::{Attempt, Ended};

mod errors;
mod group;
mod relay;
mod request;
pub use errors::*;
use group::*;
use relay::*;
pub use request::*;

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
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let caller = caller.map(|c| c.0).unwrap_or_default();
    match chat(&state, &caller, &headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn chat(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    crate::extract::require_json_content_type(headers)?;
    let body =
        body.map_err(|r| crate::extract::body_rejected(&r, crate::extract::MAX_BATCH_BODY_BYTES))?;
    let req = parse_request(&body)?;
    let mode = match req.route {
        Route::Group(mode) => mode,
        Route::Auto => Mode::TwoStage,
        Route::Tier(_) => Mode::Simple,
    };
    let grant = pipeline::admit_key(state, caller, mode, req.text.len(), req.max_tokens).await?;
    let answered = match req.route {
        Route::Group(mode) => group(state, req, mode, grant.as_ref()).await,
        Route::Auto | Route::Tier(_) => single(state, req, grant.as_ref()).await,
    };
    let mut response = answered.unwrap_or_else(IntoResponse::into_response);
    if let Some(grant) = &grant {
        response.headers_mut().extend(grant.headers().clone());
    }
    Ok(response)
}

/// One tier answers: chosen by two-stage routing, or named.
async fn single(
    state: &AppState,
    req: ChatRequest,
    grant: Option<&Grant>,
) -> Result<Response, OpenAiError> {
    let choice = match req.route {
        Route::Tier(tier) => Choice::Tier(tier),
        _ => Choice::TwoStage,
    };
    let query = pipeline::Query {
        recorded: &req.query,
        scored: &req.text,
        choice,
        grant,
    };
    let (mut decision, commit) = pipeline::decide(state, query)
        .await
        .map_err(|e| OpenAiError::invalid("messages", e.to_string()))?;
    let routed = crate::router_headers::single(&decision);
    let result = if req.stream {
        stream_single(state, &decision, req).await
    } else {
        whole_single(state, &mut decision, req).await
    };
    commit.settle().await;
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
    let (answer, bytes) = pipeline::answer(state, decision, req.body, &req.text).await?;
    if answer.complete {
        // Nothing to fill in: the reply as it came, parsed once.
        let json = HeaderValue::from_static("application/json");
        return Ok(([(header::CONTENT_TYPE, json)], bytes).into_response());
    }
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
mod tests;
