//! The one decision pipeline behind every front door: route -> record ->
//! admit -> call -> account.
//!
//! - [`decide`] routes a query (the configured scorer, or the model
//!   assessor, for two-stage; a named tier; simple mode) and records its
//!   decision, starting the store's commit ([`Commit`]).
//! - [`admit`] takes the tier's in-flight place and counts it active while
//!   the upstream works: the only admission, for whole and streamed answers.
//! - [`answer`] admits, calls and accounts (the call into the rollups, the
//!   answer's tokens into the decision and its tier); [`open_stream`] admits
//!   and opens a stream, whose relay accounts as it ends ([`add_usage`]).
//! - [`group`] runs council and benchmark queries through the same steps.
//!
//! `POST /api/query` ([`crate::api`]) and `/v1/chat/completions`
//! ([`crate::openai`]) only translate their wire into these calls and back,
//! so a decision is routed, recorded, counted and answered the same on
//! either door.

use std::time::Instant;

use serde_json::{Value, json};
use shared::api::{Mode, Usage};
use shared::group::{CouncilAnalysis, GroupAnswer, MemberAnswer, agreement, stated_agreement};
use shared::insight::validate_usage;
use shared::{DecisionError, RoutingDecision, Tier};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::keys::{Caller, Grant};
use crate::routing::{self, Route};
use crate::service::{ActiveGuard, NewDecision};
use crate::state::AppState;
use crate::store::Committing;
use crate::upstream::{Answer, Streaming, UpstreamError};

mod group;
pub use group::*;

/// How a door asks for a query to be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Everything to the fast tier, as the seed did.
    Simple,
    /// Scored (stage 1: the scorer or the model assessor), then the tier by
    /// the Q4 threshold (stage 2).
    TwoStage,
    /// The tier the client named, recorded like simple mode.
    Tier(Tier),
}

/// A query as a door hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// What is recorded as the decision's query.
    pub recorded: &'a str,
    /// What is scored (the front door: the last user message's text).
    pub scored: &'a str,
    /// How it is routed.
    pub choice: Choice,
    /// What the caller's virtual key was granted ([`admit_key`]).
    pub grant: Option<&'a Grant>,
}

/// Admits a request of `caller` in `mode` by its virtual key's limits
/// (nothing to admit without one): before anything is recorded, so a
/// refused request changes no state. Its budget is reserved by an estimate
/// of its cost: `prompt_chars` of text (about 4 a token) and `max_tokens`
/// (or [`ESTIMATED_ANSWER_TOKENS`]) at the dearest tier's price. The grant
/// says how it is routed (brownout) and what its answer's headers say; the
/// reservation is given back when it is dropped.
pub async fn admit_key(
    state: &AppState,
    caller: &Caller,
    mode: Mode,
    prompt_chars: usize,
    max_tokens: Option<u64>,
) -> Result<Option<Grant>, ApiError> {
    let Some(entry) = &caller.0 else {
        return Ok(None);
    };
    let prices = state.service.prices();
    let dearest = |f: fn(&shared::insight::Price) -> f64| {
        prices.values().iter().flatten().map(f).fold(0.0, f64::max)
    };
    let answer = max_tokens.unwrap_or(ESTIMATED_ANSWER_TOKENS) as f64;
    let est = (prompt_chars as f64 / 4.0 * dearest(|p| p.input_per_million)
        + answer * dearest(|p| p.output_per_million))
        / 1_000_000.0;
    state
        .keys
        .admit(entry, mode, est)
        .await
        .map(Some)
        .map_err(ApiError::KeyRefused)
}

/// The answer's tokens a reservation counts on when `max_tokens` is not
/// given.
pub const ESTIMATED_ANSWER_TOKENS: u64 = 512;

/// The store's commit of a decision, under way while the upstream works.
#[must_use = "await the commit before the answer is complete"]
pub struct Commit(Option<Committing>);

impl Commit {
    /// Waits for the commit. A failing store keeps the decision in memory
    /// only (counted in the status's `persistence`); the query is still
    /// answered, so the outcome is not the caller's concern.
    pub async fn settle(self) {
        if let Some(committing) = self.0 {
            let _ = committing.await;
        }
    }
}

/// Routes `q` and records its decision; the commit runs while the caller
/// has the upstream answer. Nothing is recorded when the query cannot be.
pub async fn decide(
    state: &AppState,
    q: Query<'_>,
) -> Result<(RoutingDecision, Commit), DecisionError> {
    let (route, mode) = match q.choice {
        Choice::Simple => (
            routing::route(q.scored, Mode::Simple, 0.0, state.options.scorer),
            Mode::Simple,
        ),
        Choice::TwoStage => {
            let base = state.service.q4_threshold();
            let threshold = q.grant.map_or(base, |g| g.threshold(base));
            (
                assessed_route(state, q.scored, threshold).await,
                Mode::TwoStage,
            )
        }
        Choice::Tier(tier) => (
            Route {
                tier: q.grant.map_or(tier, |g| g.named_tier(tier)),
                score: 0.0,
                decision_time_ms: 0.0,
                signals: None,
            },
            Mode::Simple,
        ),
    };
    let (decision, pending) = state.service.record_pending(NewDecision {
        mode: Some(mode),
        signals: route.signals,
        key: q.grant.map(|g| g.key.clone()),
        ..NewDecision::new(q.recorded, route.tier, route.score, route.decision_time_ms)
    })?;
    let commit = Commit(pending.commit());
    if mode == Mode::TwoStage
        && state.options.keep_prompts
        && let Some(store) = state.service.store()
    {
        store.keep_prompt(
            decision.seq,
            decision.timestamp.timestamp_millis(),
            q.scored,
        );
    }
    // The implicit signals: a query routed, and perhaps asked again.
    let key = q.grant.map_or("", |g| g.key.0.as_str());
    state.shadow.book().asked(key, q.scored, decision.tier);
    log_decision(state, &decision, "routed");
    Ok((decision, commit))
}

/// Query text reaches the log only when asked for (and is the placeholder
/// when redacting, since the service never stores the text then).
pub fn log_decision(state: &AppState, d: &RoutingDecision, what: &'static str) {
    if state.options.log_queries {
        tracing::info!(id = %d.id, tier = %d.tier, score = d.score, query = %d.query, "{what}");
    } else {
        tracing::debug!(id = %d.id, tier = %d.tier, score = d.score, "{what}");
    }
}

/// What a call holds while its upstream works: the tier's in-flight place
/// (`--max-inflight`) and its active count, released however the call ends
/// (including its future being dropped, or a stream's client going away).
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    _active: ActiveGuard,
}

/// Admits a call for `decision`'s tier: 503 without an upstream, 429 at
/// the tier's in-flight limit. An error carries the decision, which stays
/// recorded.
pub fn admit(state: &AppState, decision: &RoutingDecision) -> Result<Admitted, ApiError> {
    let tier = decision.tier;
    if !state.upstreams.configured(tier) {
        return Err(ApiError::NoUpstream {
            tier,
            decision: Box::new(decision.clone()),
        });
    }
    let place = state
        .upstreams
        .try_begin(tier)
        .map_err(|limit| ApiError::Busy {
            tier,
            limit,
            decision: Box::new(decision.clone()),
        })?;
    Ok(Admitted {
        _place: place,
        _active: state.service.begin(tier),
    })
}

/// Has `decision`'s tier answer `body` and accounts for it: the call in
/// the rollups, the answer's tokens in the decision and its tier's totals.
/// A sampled answer goes on to shadow judging (`question`: the user's
/// question as the judge sees it), without waiting for it.
pub async fn answer(
    state: &AppState,
    decision: &mut RoutingDecision,
    body: Body,
    question: &str,
) -> Result<(Answer, Vec<u8>), ApiError> {
    let sample = shadow_sample(state, decision, &body, question);
    let (answer, bytes) = call(state, decision, body).await?;
    if let Some(charged) = add_usage(state, decision, answer.usage) {
        // The key's spend is durable before the answer is given.
        let _ = charged.await;
    }
    if let (Some(sample), Some(text)) = (sample, &answer.content) {
        state.shadow.submit(decision, sample, text.clone());
    }
    Ok((answer, bytes))
}

/// What shadow judging keeps of a request whose answer it samples.
pub fn shadow_sample(
    state: &AppState,
    decision: &RoutingDecision,
    body: &Body,
    question: &str,
) -> Option<crate::shadow::Sample> {
    state
        .shadow
        .samples(decision)
        .then(|| crate::shadow::Sample {
            body: body.clone(),
            question: question.to_owned(),
        })
}

/// Admits and makes the call for `decision` (recorded or not yet: a
/// council's moderator is recorded with its analysis once it answered);
/// the call is counted in the rollups, the tokens are the caller's.
pub async fn call(
    state: &AppState,
    decision: &RoutingDecision,
    body: Body,
) -> Result<(Answer, Vec<u8>), ApiError> {
    let _admitted = admit(state, decision)?;
    let tier = decision.tier;
    let started = Instant::now();
    match state.upstreams.complete(tier, body).await {
        Ok((answer, bytes)) => {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            // Debug, not info: the access log already has a line per
            // request, and this one cost about 5 % of a routed query's time
            // in the router (docs/performance.md, front door).
            tracing::debug!(%tier, id = %decision.id, upstream = %answer.upstream, attempts = answer.attempts, ms = ms as u64, "answered");
            state.service.add_call(tier, ms, true);
            Ok((answer, bytes))
        }
        Err(err) => Err(failed(state, decision, err, started)),
    }
}

/// A stream opened for a decision: the upstream's events, what the call
/// holds until the stream ends, and when it began.
pub struct Opened {
    /// The upstream's stream.
    pub streaming: Streaming,
    /// Released when the relay ends.
    pub admitted: Admitted,
    /// When the call began.
    pub started: Instant,
}

/// Admits and opens `decision`'s tier's stream for `body`; errors before
/// its first byte are ordinary error answers. The relay accounts for the
/// answer as it ends ([`add_usage`]).
pub async fn open_stream(
    state: &AppState,
    decision: &RoutingDecision,
    body: Body,
) -> Result<Opened, ApiError> {
    let admitted = admit(state, decision)?;
    let started = Instant::now();
    let streaming = state
        .upstreams
        .open_stream(decision.tier, body)
        .await
        .map_err(|e| failed(state, decision, e, started))?;
    Ok(Opened {
        streaming,
        admitted,
        started,
    })
}

/// A chat completion request body (OpenAI's fields).
pub type Body = serde_json::Map<String, Value>;

/// The body of a plain query: one user message, and `max_tokens` if given.
pub fn query_body(query: &str, max_tokens: Option<u64>) -> Body {
    let mut body = Body::new();
    body.insert(
        "messages".into(),
        json!([{"role": "user", "content": query}]),
    );
    if let Some(n) = max_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    body
}

/// Counts the tokens an answer took into the decision and its tier's
/// totals, and charges the decision's virtual key (what resolves once
/// that charge is committed, with a store). Counts beyond any context
/// window are the upstream's garbage: they would skew the cost, so they
/// are left out of it.
#[must_use = "await the key's charge before the answer is acknowledged"]
pub fn add_usage(
    state: &AppState,
    decision: &mut RoutingDecision,
    usage: Option<Usage>,
) -> Option<Committing> {
    let mut charged = None;
    if let Some(usage) = usage.filter(|u| validate_usage(u).is_ok()) {
        match decision.group_id {
            Some(_) => state
                .service
                .add_member_usage(decision.seq, decision.tier, usage),
            None => state.service.add_usage(decision.seq, decision.tier, usage),
        }
        if let Some(key) = &decision.key_id {
            charged = state.keys.charge(key, decision.tier, usage);
        }
        decision.usage = Some(usage);
    }
    charged
}

/// The API error of a failed upstream exchange for `decision`, counted.
pub fn failed(
    state: &AppState,
    decision: &RoutingDecision,
    err: UpstreamError,
    started: Instant,
) -> ApiError {
    let tier = decision.tier;
    let message = err.to_string();
    tracing::warn!(%tier, id = %decision.id, error = %message, "upstream failed");
    if matches!(err, UpstreamError::Failed(_)) {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        state.service.add_call(tier, ms, false);
    }
    let decision = Box::new(decision.clone());
    match err {
        UpstreamError::NotConfigured(tier) => ApiError::NoUpstream { tier, decision },
        UpstreamError::CircuitOpen {
            retry_after_secs, ..
        } => ApiError::CircuitOpen {
            message,
            retry_after_secs,
            decision,
        },
        UpstreamError::Failed(failure) => ApiError::Upstream {
            tier,
            failure: Box::new(failure),
            decision,
        },
    }
}

/// Two-stage routing of `query` with the configured assessor (stage 1)
/// and `threshold` (stage 2); the decision time is the assessment's.
async fn assessed_route(state: &AppState, query: &str, threshold: f64) -> Route {
    let scored = crate::assessor::score(
        state.options.assessor,
        state.options.scorer,
        &state.upstreams,
        state.service.assessor_counts(),
        query,
        state.options.assessor_timeout,
        |usage| state.service.add_assessor_usage(usage),
    )
    .await;
    Route {
        tier: Mode::TwoStage.tier_for(scored.assessment.score, threshold),
        score: scored.assessment.score,
        decision_time_ms: scored.ms,
        signals: Some(scored.assessment.signals),
    }
}

/// The decision of one member of a group (or its moderator) in `mode`,
/// scored as the query was, for the key granted `grant`.
fn new_decision<'a>(
    query: &'a str,
    tier: Tier,
    route: &Route,
    mode: Mode,
    grant: Option<&Grant>,
) -> NewDecision<'a> {
    NewDecision {
        mode: Some(mode),
        signals: route.signals.clone(),
        key: grant.map(|g| g.key.clone()),
        ..NewDecision::new(query, tier, route.score, route.decision_time_ms)
    }
}
