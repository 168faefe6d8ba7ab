//! Generation through OpenAI-compatible upstreams (llama.cpp server, Ollama,
//! vLLM, a LiteLLM proxy, OpenAI...). A tier may have several: each query
//! goes to the available one with the fewest calls in flight, and a call
//! that fails before any byte of the answer (connect error, 429, 502, 503)
//! is retried, with jittered backoff, on another one when there is one.
//! Each upstream has a circuit breaker ([`breaker`]); every call is bounded
//! by a timeout and by the size of the reply read, and each tier by the
//! number of calls it may have in flight.
//!
//! What an upstream says when it fails (status, error message) is passed
//! on, sanitised; an API key is sent as a bearer token and never shown.

pub mod breaker;
pub mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::api::{RawJson, Usage};
use shared::metrics::Outcome;
use shared::{PerTier, Tier};
use tokio::sync::OwnedSemaphorePermit;

pub use crate::error::{Failure, retry_after_secs};
use crate::places::Places;
use crate::telemetry::Telemetry;
use breaker::BreakerSettings;
pub use health::{Attempt, Ended, Health, UpstreamLabel, UpstreamState};

mod client;
mod pool;
mod wire;
pub use wire::*;

/// One upstream as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Its tier.
    pub tier: Tier,
    /// Its name, unique within the tier.
    pub name: String,
    /// Base URL of the API, e.g. `http://127.0.0.1:8081/v1`.
    pub base_url: String,
    /// The model to ask for, when the upstream needs one.
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer` when set.
    pub key: Option<String>,
}

impl std::fmt::Debug for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSpec")
            .field("tier", &self.tier)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Calls in flight per tier unless `--max-inflight` says otherwise.
pub const DEFAULT_MAX_INFLIGHT: usize = 64;

/// The most bytes of a reply read unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;
/// The most bytes of an error reply read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The longest upstream error message passed on, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// The longest wait a 429's `Retry-After` may ask for and still be retried
/// on the same upstream; longer, and the 429 goes back to the client.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// How the pool calls its upstreams.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most time one call may take.
    pub timeout: Duration,
    /// Most bytes of a reply read.
    pub max_body: usize,
    /// Most calls in flight per tier (Q2, Q3, Q4).
    pub max_inflight: PerTier<usize>,
    /// Calls after the first for a query whose call failed retryably.
    pub retries: u32,
    /// The first retry's backoff (doubling after, up to 16x); each wait is
    /// jittered down to half of it.
    pub backoff: Duration,
    /// When circuits open.
    pub breaker: BreakerSettings,
}

impl Settings {
    /// Defaults with this call timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        Settings {
            timeout,
            max_body: DEFAULT_MAX_BODY,
            max_inflight: PerTier([DEFAULT_MAX_INFLIGHT; 3]),
            retries: 1,
            backoff: Duration::from_millis(50),
            breaker: BreakerSettings::default(),
        }
    }
}

/// The upstream that took a call, and the call, still open.
struct Won<'a, T> {
    value: T,
    call: Attempt,
    member: &'a Member,
    attempts: u32,
}

/// A streamed answer under way: the upstream's response (2xx, its body
/// not read yet) and its call, in flight until this is dropped or finished.
pub struct Streaming {
    /// The response whose body carries the events.
    pub response: reqwest::Response,
    /// The call, to finish with how the stream ended.
    pub call: Attempt,
    /// The upstream's name.
    pub upstream: String,
    /// Its `--model`, for chunks that name none.
    pub model: Option<String>,
    /// Calls it took to open.
    pub attempts: u32,
    /// Most time between two chunks (`--upstream-timeout`).
    pub idle: Duration,
}

struct Member {
    spec: UpstreamSpec,
    /// `/chat/completions` under the base URL, parsed once (not per call).
    url: reqwest::Url,
    auth: Option<HeaderValue>,
    state: Arc<UpstreamState>,
}

/// The upstreams of all tiers and the client that talks to them.
pub struct Upstreams {
    client: reqwest::Client,
    /// For streams: no total timeout (a long answer may stream for
    /// minutes); the first byte and every gap between chunks are bounded.
    stream_client: reqwest::Client,
    settings: Settings,
    pools: PerTier<Vec<Member>>,
    inflight: PerTier<Arc<Places>>,
    telemetry: Arc<Telemetry>,
    health: Arc<Health>,
    /// Breaks ties between equally loaded upstreams in turn.
    turn: AtomicUsize,
    /// Held while choosing an upstream and counting the call in flight, so
    /// queries arriving together see each other's choice and spread out.
    choosing: std::sync::Mutex<()>,
}

/// A full answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The text, as sent (`""` included); `None` when the upstream sent
    /// null (with tool calls, a refusal, a legacy function call, or just
    /// a finish reason such as `length`).
    pub content: Option<String>,
    /// A refusal in place of content, as OpenAI sends one.
    pub refusal: Option<String>,
    /// A legacy `function_call`, as sent.
    pub function_call: Option<RawJson>,
    /// The model the answer names.
    pub model: Option<String>,
    /// Why it stopped.
    pub finish_reason: Option<String>,
    /// Tool calls, as sent.
    pub tool_calls: Option<RawJson>,
    /// Tokens reported.
    pub usage: Option<Usage>,
    /// The upstream that answered.
    pub upstream: String,
    /// Calls it took.
    pub attempts: u32,
    /// The reply already holds everything a strict client expects of a
    /// chat completion (a string id, `object: chat.completion`, a whole
    /// `created`, the model it names as sent, each choice's index, role
    /// and finish reason): the front door relays its bytes as they are
    /// instead of filling them in.
    pub complete: bool,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The tier has no upstream.
    #[error("no upstream configured for tier {0}")]
    NotConfigured(Tier),
    /// Every upstream of the tier has its circuit open.
    #[error("every upstream of tier {} ({}) has its circuit open after repeated failures ({}); retry in {} s", .tier, .tier.internal_name(), .names.join(", "), .retry_after_secs)]
    CircuitOpen {
        /// The tier.
        tier: Tier,
        /// Its upstreams.
        names: Vec<String>,
        /// Seconds until the first of them lets a probe through.
        retry_after_secs: u64,
    },
    /// The last call failed (after any retries).
    #[error("upstream {} {}", .0.upstream, .0.message)]
    Failed(Failure),
}

impl Upstreams {
    /// Upstreams for the given specs (in order; each tier's in its own pool)
    /// and settings, with their telemetry.
    pub fn new(specs: Vec<UpstreamSpec>, settings: Settings) -> Self {
        // No client-wide timeout: each call is bounded as a whole by
        // `--upstream-timeout` ([`Self::call`]), and a second clock per
        // request costs a timer for nothing.
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()
            .expect("a plain HTTP client always builds");
        let stream_client = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()
            .expect("a plain HTTP client always builds");
        let layout: Vec<UpstreamLabel> = specs
            .iter()
            .map(|s| UpstreamLabel {
                tier: s.tier,
                name: s.name.clone(),
                model: s.model.clone(),
            })
            .collect();
        let telemetry = Telemetry::new();
        let health = Health::new(&layout, settings.breaker, &telemetry);
        let mut pools: PerTier<Vec<Member>> = PerTier::default();
        for (spec, state) in specs.into_iter().zip(health.upstreams()) {
            let url = format!("{}/chat/completions", spec.base_url.trim_end_matches('/'));
            let url = reqwest::Url::parse(&url).expect("upstream URLs are checked when parsed");
            let auth = spec.key.as_deref().map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .expect("keys are checked to be header-safe when parsed");
                v.set_sensitive(true);
                v
            });
            pools[spec.tier].push(Member {
                spec,
                url,
                auth,
                state: Arc::clone(state),
            });
        }
        Upstreams {
            client,
            stream_client,
            inflight: settings.max_inflight.map(|n| Arc::new(Places::new(n))),
            settings,
            pools,
            telemetry,
            health,
            turn: AtomicUsize::new(0),
            choosing: std::sync::Mutex::new(()),
        }
    }

    /// No upstream at all, with default settings (for tests and tools).
    pub fn none() -> Self {
        Self::new(Vec::new(), Settings::with_timeout(Duration::from_secs(60)))
    }

    /// The registry of `/metrics` (the upstreams' series among others).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Every upstream's health and figures.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The places for `tier`'s calls: how many are under way, and its limit.
    pub fn in_flight(&self, tier: Tier) -> &Places {
        &self.inflight[tier]
    }

    /// A place for one query on `tier`, held until the permit is dropped; or
    /// the tier's limit when all places are taken.
    pub fn try_begin(&self, tier: Tier) -> Result<OwnedSemaphorePermit, usize> {
        let places = self.in_flight(tier);
        places.try_take().ok_or(places.max())
    }

    /// The specs of `tier`'s upstreams.
    pub fn specs(&self, tier: Tier) -> impl Iterator<Item = &UpstreamSpec> {
        self.pools[tier].iter().map(|m| &m.spec)
    }

    /// Whether `tier` has an upstream.
    pub fn configured(&self, tier: Tier) -> bool {
        !self.pools[tier].is_empty()
    }

    /// Has one of `tier`'s upstreams answer `query`, retrying and failing
    /// over as configured. Dropping the future cancels the call under way
    /// (the connection is closed, and the call counts as `cancelled`).
    pub async fn generate(
        &self,
        tier: Tier,
        query: &str,
        max_tokens: Option<u64>,
    ) -> Result<Answer, UpstreamError> {
        let mut body = serde_json::Map::new();
        body.insert(
            "messages".into(),
            json!([{"role": "user", "content": query}]),
        );
        if let Some(n) = max_tokens {
            body.insert("max_tokens".into(), json!(n));
        }
        self.complete(tier, body).await.map(|(answer, _)| answer)
    }

    /// Sends a chat completion request `body` (OpenAI's fields; its `model`
    /// is replaced by the upstream's `--model`, or removed) to one of
    /// `tier`'s upstreams, retrying and failing over as configured; the
    /// answer, and the reply's bytes as the upstream sent them.
    pub async fn complete(
        &self,
        tier: Tier,
        body: serde_json::Map<String, Value>,
    ) -> Result<(Answer, Vec<u8>), UpstreamError> {
        self.complete_as(tier, body, false).await
    }

    /// [`Self::complete`] for the model assessor: the same failover,
    /// retries and circuit (a failing upstream is failing whoever calls
    /// it), but counted apart from the tier's answers (the telemetry's
    /// assessor figures, not the tier's requests, latency or tokens).
    pub async fn assess(
        &self,
        tier: Tier,
        body: serde_json::Map<String, Value>,
    ) -> Result<(Answer, Vec<u8>), UpstreamError> {
        self.complete_as(tier, body, true).await
    }

    /// [`Self::complete`] for shadow judging (Q4's answer, the judge's
    /// verdict): like the assessor's, counted apart from the tier's answers.
    pub async fn shadow(
        &self,
        tier: Tier,
        body: serde_json::Map<String, Value>,
    ) -> Result<(Answer, Vec<u8>), UpstreamError> {
        self.complete_as(tier, body, true).await
    }

    async fn complete_as(
        &self,
        tier: Tier,
        mut body: serde_json::Map<String, Value>,
        assessor: bool,
    ) -> Result<(Answer, Vec<u8>), UpstreamError> {
        body.insert("stream".into(), Value::Bool(false));
        body.remove("stream_options");
        let won = self
            .failover(tier, assessor, |member| self.call(member, &body))
            .await?;
        let (answer, bytes) = won.value;
        let ended = Ended {
            model: answer.model.clone(),
            usage: answer.usage,
            error: None,
        };
        won.call.finish(Outcome::Ok, ended);
        let answer = Answer {
            // An upstream that does not name the model answered with the
            // one it was asked for.
            model: answer.model.or_else(|| won.member.spec.model.clone()),
            attempts: won.attempts,
            ..answer
        };
        Ok((answer, bytes))
    }

    /// Opens a streamed chat completion (`stream: true`, usage asked for) on
    /// one of `tier`'s upstreams, retrying and failing over until one
    /// answers 2xx; the caller reads the events. Until the stream ends, its
    /// call counts as in flight; dropping it cancels the call.
    pub async fn open_stream(
        &self,
        tier: Tier,
        mut body: serde_json::Map<String, Value>,
    ) -> Result<Streaming, UpstreamError> {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        let won = self
            .failover(tier, false, |member| self.open(member, &body))
            .await?;
        Ok(Streaming {
            response: won.value,
            call: won.call,
            upstream: won.member.spec.name.clone(),
            model: won.member.spec.model.clone(),
            attempts: won.attempts,
            idle: self.settings.timeout,
        })
    }

    /// Warns about each upstream without a `--model` whose `/models` lists
    /// several: which one answers is then the upstream's choice.
    pub async fn check_models(&self) {
        for member in self.pools.values().iter().flatten() {
            if member.spec.model.is_some() {
                continue;
            }
            let url = format!("{}/models", member.spec.base_url.trim_end_matches('/'));
            let mut request = self.client.get(&url).timeout(Duration::from_secs(5));
            if let Some(auth) = &member.auth {
                request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
            }
            let Ok(response) = request.send().await else {
                continue;
            };
            let Ok(text) = read_capped(response, MAX_ERROR_BODY).await else {
                continue;
            };
            let ids: Vec<String> = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("data").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(clean))
                .collect();
            if ids.len() > 1 {
                tracing::warn!(
                    tier = %member.spec.tier,
                    upstream = %member.spec.name,
                    models = %ids.join(", "),
                    "no --model for this upstream and it serves several: it picks the model; set --model {}:{}=MODEL",
                    member.spec.tier.internal_name(),
                    member.spec.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
