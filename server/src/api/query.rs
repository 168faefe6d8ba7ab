//! `POST /api/query`: the panel's front door into the pipeline.

use super::*;
use crate::keys::{Caller, Grant};
use crate::pipeline::{self, Choice};

/// Routes a query to a tier, records the decision, and has the tier's
/// upstream answer it.
#[utoipa::path(
    post,
    path = "/api/query",
    tag = "router",
    request_body(content = QueryRequest, example = json!({"query": "What is Python?", "mode": "two-stage", "max_tokens": 100})),
    responses(
        (status = 200, description = "Routed and answered (`simple`, `two-stage`: a `QueryResponse`), or asked of several tiers (`council`, `benchmark`: a `GroupAnswer`, 200 whenever the group ran: each member's answer or error, and a council's synthesis, moderator and analysis; `X-Router-Group-Id` names the group). Every answer to a routed query (this one, and the 429, 4XX, 502 and 503 that carry a recorded decision) names the decision in its `X-Router-*` headers", body = QueryAnswer,
         headers(
            ("X-Router-Tier" = String, description = "The tier: Q2, Q3 or Q4"),
            ("X-Router-Score" = String, description = "The complexity score, as in the body (e.g. 7.25)"),
            ("X-Router-Complexity" = String, description = "SIMPLE, MODERATE or COMPLEX"),
            ("X-Router-Decision-Id" = String, description = "The decision's id"),
         ),
         example = json!({"answer": "Python is a programming language.", "model": "qwen-7b", "decision": {
            "id": "19a6b2c3d4e-7", "query": "What is Python?", "tier": "Q3", "complexity": "SIMPLE",
            "timestamp": "2025-11-08T12:00:01.250Z", "score": 0.2, "seq": 7, "mode": "two-stage",
            "decisionTimeMs": 0.012, "tierName": "balanced", "signals": [{"name": "length", "weight": 0.2}],
            "usage": {"promptTokens": 12, "completionTokens": 9}}})),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 403, description = "A cross-site browser request; nothing recorded", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json; nothing recorded", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid; nothing recorded", body = ErrorBody,
         example = json!({"error": "mode: unknown variant `fancy`, expected `simple` or `two-stage`"})),
        (status = 429, description = "The tier has as many upstream calls in flight as allowed, or the upstream answered 429 (after the retries; its Retry-After is kept); the decision stays recorded", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = "4XX", description = "The upstream refused the request with this status (a wrong model, a prompt over its context window...): its message is in `error` and `upstream`; the decision stays recorded", body = ErrorBody,
         example = json!({"error": "upstream gpu1 of tier Q3 (balanced) answered HTTP 400: This model's maximum context length is 8192 tokens", "upstream": {"name": "gpu1", "kind": "http_4xx", "status": 400, "message": "answered HTTP 400: This model's maximum context length is 8192 tokens", "attempts": 1}})),
        (status = 502, description = "The upstream failed (5xx, timeout, connect error, refused our key), answered garbage, an empty answer or a reply over the size limit, after any retries; `upstream` says which and what it said; the decision stays recorded", body = ErrorBody),
        (status = 503, description = "The tier has no upstream, or every upstream of it has its circuit open (with Retry-After until the first probe); the decision stays recorded", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds until an open circuit lets a probe through (circuit open only)")),
         example = json!({"error": "no upstream configured for tier Q2 (fast)", "decision": {
            "id": "19a6b2c3d4e-8", "query": "hi", "tier": "Q2", "complexity": "SIMPLE",
            "timestamp": "2025-11-08T12:00:01.250Z", "score": 0.0, "seq": 8, "mode": "simple",
            "decisionTimeMs": 0.0, "tierName": "fast"}})),
    )
)]
pub async fn query(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    shared::validate_query(&req.query).map_err(invalid)?;
    if let Some(n) = req.max_tokens.filter(|n| !(1..=MAX_TOKENS).contains(n)) {
        return Err(ApiError::Invalid(format!(
            "max_tokens: must be an integer in 1..={MAX_TOKENS}, got {n}"
        )));
    }
    let caller = caller.map(|c| c.0).unwrap_or_default();
    let grant =
        pipeline::admit_key(&state, &caller, req.mode, req.query.len(), req.max_tokens).await?;
    let mut response = answer(&state, &req, grant.as_ref()).await?;
    if let Some(grant) = &grant {
        response.headers_mut().extend(grant.headers().clone());
    }
    Ok(response)
}

/// Routes and answers a validated, admitted query.
async fn answer(
    state: &AppState,
    req: &QueryRequest,
    grant: Option<&Grant>,
) -> Result<Response, ApiError> {
    if req.mode.is_group() {
        let outcome = pipeline::run_group(
            state,
            pipeline::GroupQuery {
                mode: req.mode,
                query: &req.query,
                body: pipeline::query_body(&req.query, req.max_tokens),
                max_tokens: req.max_tokens,
                grant,
            },
        )
        .await?;
        let headers = crate::router_headers::group(&outcome.answer);
        let mut response = Json(outcome.answer).into_response();
        response.headers_mut().extend(headers);
        return Ok(response);
    }
    let choice = match req.mode {
        Mode::TwoStage => Choice::TwoStage,
        _ => Choice::Simple,
    };
    let query = pipeline::Query {
        recorded: &req.query,
        scored: &req.query,
        choice,
        grant,
    };
    let (decision, commit) = pipeline::decide(state, query).await.map_err(invalid)?;
    // Every answer to a routed query says what was decided, failed or not.
    let headers = crate::router_headers::single(&decision);
    let mut response = generate(state, req, decision).await.into_response();
    response.headers_mut().extend(headers);
    commit.settle().await;
    Ok(response)
}

/// Stage 3 of a routed query: the tier's upstream writes the answer.
pub(super) async fn generate(
    state: &AppState,
    req: &QueryRequest,
    mut decision: RoutingDecision,
) -> Result<Json<QueryResponse>, ApiError> {
    let body = pipeline::query_body(&req.query, req.max_tokens);
    let (answer, _) = pipeline::answer(state, &mut decision, body, &req.query).await?;
    if answer.is_empty() {
        // Nothing to show: as OpenAI's answer it is valid (the front door
        // relays it), as an answer to a query it is not.
        return Err(ApiError::Upstream {
            tier: decision.tier,
            failure: Box::new(crate::upstream::Failure {
                upstream: answer.upstream,
                outcome: shared::metrics::Outcome::BadReply,
                status: None,
                message: format!(
                    "answered with no content and no tool calls (finish_reason: {})",
                    answer.finish_reason.as_deref().unwrap_or("none")
                ),
                retry_after: None,
                attempts: answer.attempts,
            }),
            decision: Box::new(decision),
        });
    }
    Ok(Json(QueryResponse {
        answer: answer.content.or(answer.refusal),
        model: answer.model,
        decision,
        finish_reason: answer.finish_reason,
        tool_calls: answer.tool_calls,
        upstream: Some(answer.upstream),
        usage: answer.usage,
        attempts: Some(answer.attempts),
    }))
}
/// `POST /api/query` answer: one tier's, or a group's.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum QueryAnswer {
    /// `simple` and `two-stage`.
    One(QueryResponse),
    /// `council` and `benchmark`.
    Group(shared::group::GroupAnswer),
}
