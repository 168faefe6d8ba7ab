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
use shared::Tier;
use shared::api::{RawJson, Usage};
use shared::metrics::Outcome;
use tokio::sync::OwnedSemaphorePermit;

pub use crate::error::{Failure, retry_after_secs};
use crate::places::Places;
use crate::telemetry::Telemetry;
use breaker::BreakerSettings;
pub use health::{Attempt, Ended, Health, UpstreamLabel, UpstreamState};

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
    pub max_inflight: [usize; 3],
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
            max_inflight: [DEFAULT_MAX_INFLIGHT; 3],
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
    pools: [Vec<Member>; 3],
    inflight: [Arc<Places>; 3],
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

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    function_call: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl Upstreams {
    /// Upstreams for the given specs (in order; each tier's in its own pool)
    /// and settings, with their telemetry.
    pub fn new(specs: Vec<UpstreamSpec>, settings: Settings) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .timeout(settings.timeout)
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
        let mut pools: [Vec<Member>; 3] = Default::default();
        for (spec, state) in specs.into_iter().zip(health.upstreams()) {
            let url = format!("{}/chat/completions", spec.base_url.trim_end_matches('/'));
            let url = reqwest::Url::parse(&url).expect("upstream URLs are checked when parsed");
            let auth = spec.key.as_deref().map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .expect("keys are checked to be header-safe when parsed");
                v.set_sensitive(true);
                v
            });
            pools[spec.tier.index()].push(Member {
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
        &self.inflight[tier.index()]
    }

    /// A place for one query on `tier`, held until the permit is dropped; or
    /// the tier's limit when all places are taken.
    pub fn try_begin(&self, tier: Tier) -> Result<OwnedSemaphorePermit, usize> {
        let places = self.in_flight(tier);
        places.try_take().ok_or(places.max())
    }

    /// The specs of `tier`'s upstreams.
    pub fn specs(&self, tier: Tier) -> impl Iterator<Item = &UpstreamSpec> {
        self.pools[tier.index()].iter().map(|m| &m.spec)
    }

    /// Whether `tier` has an upstream.
    pub fn configured(&self, tier: Tier) -> bool {
        !self.pools[tier.index()].is_empty()
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

    /// Tries `exchange` on the available upstreams of `tier` until one
    /// succeeds or a failure may not be retried; each try counts as a call
    /// (failures are recorded here, the winner's call is handed back open).
    async fn failover<'a, T, Fut>(
        &'a self,
        tier: Tier,
        assessor: bool,
        exchange: impl Fn(&'a Member) -> Fut,
    ) -> Result<Won<'a, T>, UpstreamError>
    where
        Fut: Future<Output = Result<T, Failure>>,
    {
        let pool = &self.pools[tier.index()];
        if pool.is_empty() {
            return Err(UpstreamError::NotConfigured(tier));
        }
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<Failure> = None;
        for attempt in 0..=self.settings.retries {
            if let Some(failed) = &last {
                let wait = self.backoff(attempt);
                // A 429 on the only upstream left: wait as it asked, if briefly.
                let wait = match (&failed.retry_after, self.only_left(pool, &tried)) {
                    (Some(after), true) => match retry_after_secs(after) {
                        Some(s) if Duration::from_secs(s) <= MAX_RETRY_WAIT => {
                            wait.max(Duration::from_secs(s))
                        }
                        Some(_) => break,
                        None => wait,
                    },
                    _ => wait,
                };
                tokio::time::sleep(wait).await;
            }
            let chosen = {
                let _one = self
                    .choosing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.pick(pool, &tried).map(|(index, admission)| {
                    let call =
                        self.health
                            .begin(&pool[index].state, admission, attempt > 0, assessor);
                    (index, call)
                })
            };
            let Some((index, call)) = chosen else {
                if last.is_some() {
                    break;
                }
                self.health.short_circuited(tier);
                return Err(self.circuit_open(tier, pool));
            };
            let member = &pool[index];
            if let Some(failed) = &last {
                tracing::warn!(%tier, from = %failed.upstream, to = %member.spec.name, attempt = attempt + 1, reason = failed.outcome.label(), "retrying upstream call");
            }
            let attempts = attempt + 1;
            match exchange(member).await {
                Ok(value) => {
                    return Ok(Won {
                        value,
                        call,
                        member,
                        attempts,
                    });
                }
                Err(failure) => {
                    let ended = Ended {
                        error: Some(failure.message.clone()),
                        ..Ended::default()
                    };
                    call.finish(failure.outcome, ended);
                    let retryable = failure.retryable();
                    tried.push(index);
                    last = Some(Failure {
                        attempts,
                        ..failure
                    });
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(UpstreamError::Failed(
            last.expect("at least one call was made"),
        ))
    }

    /// The jittered wait before call `attempt` (1 = the first retry).
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self.settings.backoff * 2u32.pow(attempt.saturating_sub(1).min(4));
        full.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// True when the next pick can only be an upstream already tried.
    fn only_left(&self, pool: &[Member], tried: &[usize]) -> bool {
        let now = Instant::now();
        !(0..pool.len()).any(|i| !tried.contains(&i) && pool[i].state.available(now))
    }

    /// The available upstream with the fewest calls in flight, preferring
    /// ones not tried yet for this query; ties go round in turn.
    fn pick(&self, pool: &[Member], tried: &[usize]) -> Option<(usize, breaker::Admission)> {
        let now = Instant::now();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..pool.len()).map(|k| (start + k) % pool.len()).collect();
        // Stable: among equals the rotation's order stays.
        order.sort_by_key(|&i| (tried.contains(&i), pool[i].state.in_flight()));
        order.into_iter().find_map(|i| {
            pool[i]
                .state
                .admit(&self.health, now)
                .map(|admission| (i, admission))
        })
    }

    fn circuit_open(&self, tier: Tier, pool: &[Member]) -> UpstreamError {
        let now = Instant::now();
        let soonest = pool
            .iter()
            .filter_map(|m| m.state.open_until())
            .min()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        UpstreamError::CircuitOpen {
            tier,
            names: pool.iter().map(|m| m.spec.name.clone()).collect(),
            retry_after_secs: soonest.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// `body` with `member`'s `--model` (or without a model: the router's
    /// own model names mean nothing upstream).
    fn with_model(
        &self,
        member: &Member,
        body: &serde_json::Map<String, Value>,
    ) -> serde_json::Map<String, Value> {
        let mut body = body.clone();
        match &member.spec.model {
            Some(model) => body.insert("model".into(), json!(model)),
            None => body.remove("model"),
        };
        body
    }

    /// Sends `request` (with `member`'s key) and turns anything but a 2xx
    /// into the failure it is, with the upstream's own message.
    async fn send(
        &self,
        member: &Member,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let fail = |outcome, status: Option<u16>, message: String| Failure {
            upstream: member.spec.name.clone(),
            outcome,
            status,
            message: self.mask(member, &message),
            retry_after: None,
            attempts: 1,
        };
        if let Some(auth) = &member.auth {
            request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                fail(Outcome::Timeout, None, self.timed_out())
            } else {
                // Without the URL: it may carry credentials.
                fail(
                    Outcome::ConnectError,
                    None,
                    format!("unreachable: {}", e.without_url()),
                )
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = status.as_u16();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .cloned();
        let outcome = match code {
            429 => Outcome::Http429,
            // No chat completions endpoint there: a wrong URL is a failing
            // upstream (its circuit counts it), not a refused request.
            404 | 405 => Outcome::BadReply,
            400..=499 => Outcome::Http4xx,
            500..=599 => Outcome::Http5xx,
            _ => Outcome::BadReply,
        };
        let text = read_capped(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let said = error_message(&text);
        let hint = match code {
            404 | 405 => " (no chat completions endpoint at this URL: check --upstream)",
            _ => "",
        };
        let message = if said.is_empty() {
            format!("answered HTTP {code}{hint}")
        } else {
            format!("answered HTTP {code}{hint}: {said}")
        };
        Err(Failure {
            retry_after: retry_after.filter(|_| code == 429),
            ..fail(outcome, Some(code), message)
        })
    }

    /// Opens one stream on one upstream: its 2xx response within the
    /// timeout.
    async fn open(
        &self,
        member: &Member,
        body: &serde_json::Map<String, Value>,
    ) -> Result<reqwest::Response, Failure> {
        let request = self
            .stream_client
            .post(member.url.clone())
            .json(&self.with_model(member, body));
        match tokio::time::timeout(self.settings.timeout, self.send(member, request)).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                upstream: member.spec.name.clone(),
                outcome: Outcome::Timeout,
                status: None,
                message: self.timed_out(),
                retry_after: None,
                attempts: 1,
            }),
        }
    }

    /// One call to one upstream, bounded by the timeout: the answer and the
    /// reply's bytes.
    async fn call(
        &self,
        member: &Member,
        body: &serde_json::Map<String, Value>,
    ) -> Result<(Answer, Vec<u8>), Failure> {
        let fail = |outcome, message: String| Failure {
            upstream: member.spec.name.clone(),
            outcome,
            status: None,
            message: self.mask(member, &message),
            retry_after: None,
            attempts: 1,
        };
        // The client's own timeout covers connect + send + body; the outer
        // one also bounds anything the client does not.
        let call = async {
            let request = self
                .client
                .post(member.url.clone())
                .json(&self.with_model(member, body));
            let response = self.send(member, request).await?;
            let bytes = read_body(response, self.settings.max_body)
                .await
                .map_err(|e| match e {
                    BodyError::TooLarge => fail(
                        Outcome::TooLarge,
                        format!(
                            "sent a reply larger than {} bytes (--max-upstream-body)",
                            self.settings.max_body
                        ),
                    ),
                    BodyError::Timeout => fail(Outcome::Timeout, self.timed_out()),
                    BodyError::Broken(why) => fail(
                        Outcome::BadReply,
                        format!("connection broke mid-answer: {why}"),
                    ),
                })?;
            parse_completion(&bytes)
                .map(|answer| {
                    let answer = Answer {
                        upstream: member.spec.name.clone(),
                        ..answer
                    };
                    (answer, bytes)
                })
                .map_err(|why| fail(Outcome::BadReply, why))
        };
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(fail(Outcome::Timeout, self.timed_out())),
        }
    }

    fn timed_out(&self) -> String {
        format!(
            "gave no full answer within {:?} (--upstream-timeout)",
            self.settings.timeout
        )
    }

    /// The message with the upstream's key masked, should it echo it.
    fn mask(&self, member: &Member, message: &str) -> String {
        match &member.spec.key {
            Some(key) if key.len() >= 4 => message.replace(key.as_str(), "***"),
            _ => message.to_owned(),
        }
    }

    /// Warns about each upstream without a `--model` whose `/models` lists
    /// several: which one answers is then the upstream's choice.
    pub async fn check_models(&self) {
        for member in self.pools.iter().flatten() {
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

impl Failure {
    /// Failed before any byte of an answer in a way another try may fix: a
    /// connect error, 429, 502 or 503.
    pub fn retryable(&self) -> bool {
        matches!(self.outcome, Outcome::ConnectError | Outcome::Http429)
            || matches!(self.status, Some(502 | 503))
    }
}

fn parse_completion(bytes: &[u8]) -> Result<Answer, String> {
    let completion: Completion = serde_json::from_slice(bytes)
        .map_err(|e| format!("answered something that is not a chat completion: {e}"))?;
    let usage = completion.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens.unwrap_or(0),
        completion_tokens: u.completion_tokens.unwrap_or(0),
    });
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("answered a chat completion without choices")?;
    // Kept as sent; only an empty list or null counts as none.
    let kept = |raw: Option<Box<serde_json::value::RawValue>>| {
        raw.filter(|calls| !matches!(calls.get().trim(), "[]" | "null" | "{}"))
            .map(RawJson)
    };
    // Whatever OpenAI's own answers hold is an answer here: null content
    // with a refusal, tool calls or a legacy function call, and empty or
    // null content with a finish reason (`length`, `content_filter`). The
    // front door relays it as sent; `/api/query` needs something to show
    // and refuses an answer with none ([`Answer::is_empty`]).
    Ok(Answer {
        content: choice.message.content,
        refusal: choice.message.refusal.map(|r| clean_text(&r)),
        function_call: kept(choice.message.function_call),
        tool_calls: kept(choice.message.tool_calls),
        model: completion
            .model
            .map(|m| clean(&m))
            .filter(|m| !m.is_empty()),
        finish_reason: choice.finish_reason.map(|r| clean(&r)),
        usage,
        upstream: String::new(),
        attempts: 1,
    })
}

/// The message an upstream's error body carries: OpenAI's
/// `{"error": {"message"}}`, `{"error": "..."}`, `{"detail"}` or
/// `{"message"}`, else the text itself; cleaned and capped.
pub fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        v.pointer("/error/message")
            .and_then(text)
            .or_else(|| v.get("error").filter(|e| e.is_string()).and_then(text))
            .or_else(|| v.get("detail").and_then(text))
            .or_else(|| v.get("message").and_then(text))
    });
    clean(from_json.as_deref().unwrap_or(body))
}

/// Control characters become spaces, runs of whitespace one space, and the
/// text is cut to [`MAX_MESSAGE_CHARS`] characters (with an ellipsis).
/// Terminal escape sequences go whole (`ESC[31m`), and so do control
/// characters written as JSON escapes (`\u001b`), which is how they come
/// in an error body too long to parse as JSON.
pub fn clean(text: &str) -> String {
    let text = without_escapes(text);
    let joined = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// A model's text with its control characters removed but for newlines
/// and tabs (terminal escapes and the like never reach a client, a log or
/// the panel); not cut.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

impl Answer {
    /// Whether it holds nothing to show: no content (null), no refusal, no
    /// tool or function call. `/api/query` refuses such an answer; the
    /// front door relays it as OpenAI would.
    pub fn is_empty(&self) -> bool {
        self.content.is_none()
            && self.refusal.is_none()
            && self.tool_calls.is_none()
            && self.function_call.is_none()
    }
}

/// `text` without terminal escape sequences (ESC, and with `[` its
/// parameters and final letter) and without control characters written as
/// JSON `\uXXXX` escapes.
fn without_escapes(text: &str) -> String {
    /// The control character a `\uXXXX` escape at the start of `s` writes.
    fn escaped_control(s: &str) -> Option<char> {
        let hex = s.strip_prefix("\\u")?.get(..4)?;
        let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
        c.is_control().then_some(c)
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (control, len) = match escaped_control(rest) {
            Some(c) => (Some(c), 6),
            None => (c.is_control().then_some(c), c.len_utf8()),
        };
        rest = &rest[len..];
        match control {
            Some('\u{1b}') => {
                // A CSI sequence: `[`, parameters, one final letter.
                if let Some(csi) = rest.strip_prefix('[') {
                    let end = csi
                        .find(|c: char| ('@'..='~').contains(&c))
                        .map_or(csi.len(), |at| at + 1);
                    rest = &csi[end..];
                }
            }
            Some(_) => out.push(' '),
            None => out.push(c),
        }
    }
    out
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken(String),
}

/// The reply's body, refused as soon as it is known to exceed `limit` (by
/// its Content-Length, or while it streams in).
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Broken(e.without_url().to_string())),
        }
    }
}

/// At most `limit` bytes of a reply as text (the rest unread).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<String, ()> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| ())? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_usual_shapes() {
        assert_eq!(
            error_message(
                r#"{"error": {"message": "The model `x` does not exist", "type": "invalid_request_error"}}"#
            ),
            "The model `x` does not exist"
        );
        assert_eq!(error_message(r#"{"error": "bad key"}"#), "bad key");
        assert_eq!(error_message(r#"{"detail": "Not Found"}"#), "Not Found");
        assert_eq!(error_message(r#"{"message": "overloaded"}"#), "overloaded");
        assert_eq!(
            error_message("model crashed\n\tbadly"),
            "model crashed badly"
        );
        assert_eq!(error_message(""), "");
        let long = error_message(&"é".repeat(2_000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(clean("a\u{0}b\u{1b}[31mc"), "a bc");
    }

    #[test]
    fn completions_keep_model_finish_reason_usage_and_tool_calls() {
        let a = parse_completion(br#"{"model": "qwen-7b-instruct", "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}"#).unwrap();
        assert_eq!(a.content.as_deref(), Some("hi"));
        assert_eq!(a.model.as_deref(), Some("qwen-7b-instruct"));
        assert_eq!(a.finish_reason.as_deref(), Some("length"));
        assert_eq!(
            a.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 1
            })
        );
        let tools = parse_completion(br#"{"choices": [{"message": {"content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}"#).unwrap();
        assert!(tools.content.is_none());
        assert!(
            tools
                .tool_calls
                .unwrap()
                .get()
                .starts_with(r#"[{"id": "c1""#)
        );
        // As OpenAI answers them: kept, for the front door to relay.
        let empty = parse_completion(
            br#"{"choices": [{"message": {"content": null}, "finish_reason": "length"}]}"#,
        )
        .unwrap();
        assert!(empty.is_empty() && empty.finish_reason.as_deref() == Some("length"));
        let cut = parse_completion(
            br#"{"choices": [{"message": {"content": ""}, "finish_reason": "length"}]}"#,
        )
        .unwrap();
        assert_eq!(cut.content.as_deref(), Some(""));
        assert!(!cut.is_empty());
        let refused = parse_completion(
            br#"{"choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]}"#,
        )
        .unwrap();
        assert_eq!(refused.refusal.as_deref(), Some("I can't help with that."));
        let legacy = parse_completion(
            br#"{"choices": [{"message": {"content": null, "function_call": {"name": "f", "arguments": "{}"}}, "finish_reason": "function_call"}]}"#,
        )
        .unwrap();
        assert!(legacy.function_call.is_some() && !legacy.is_empty());
        assert!(parse_completion(br#"{"choices": []}"#).is_err());
        assert!(parse_completion(b"<html>").is_err());
    }

    #[test]
    fn control_characters_never_reach_a_message() {
        let red = "\u{1b}[31mred\u{1b}[0m alert\u{7}\u{9b}";
        assert_eq!(clean(red), "red alert");
        // 100 KB of escapes as JSON writes them, cut before its end: not
        // JSON any more, read as text.
        let body = format!(
            r#"{{"error": {{"message": "{}"}}}}"#,
            "\\u001b[31mx".repeat(10_000)
        );
        let cut = &body[..MAX_ERROR_BODY];
        let said = error_message(cut);
        assert!(!said.chars().any(char::is_control), "{said:?}");
        assert!(
            !said.contains("\\u001b") && !said.contains("[31m"),
            "{said:?}"
        );
        assert!(said.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert_eq!(clean("tab\there \\u0007bell"), "tab here bell");
        assert_eq!(clean_text("a\u{1b}b\nc\td"), "ab\nc\td");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(retry_after_secs(&HeaderValue::from_static("7")), Some(7));
        assert_eq!(retry_after_secs(&HeaderValue::from_static("soon")), None);
        assert_eq!(
            retry_after_secs(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(0),
            "a date in the past means now"
        );
        // The two obsolete forms recipients must accept too (RFC 9110).
        for past in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(
                retry_after_secs(&HeaderValue::from_static(past)),
                Some(0),
                "{past}"
            );
        }
        let soon = httpdate::fmt_http_date(
            std::time::SystemTime::now() + std::time::Duration::from_secs(120),
        );
        let secs = retry_after_secs(&HeaderValue::from_str(&soon).unwrap()).unwrap();
        assert!((110..=120).contains(&secs), "{secs}");
    }

    #[test]
    fn only_connect_errors_429_502_and_503_are_retried() {
        let f = |outcome, status| Failure {
            upstream: "a".into(),
            outcome,
            status,
            message: String::new(),
            retry_after: None,
            attempts: 1,
        };
        assert!(f(Outcome::ConnectError, None).retryable());
        assert!(f(Outcome::Http429, Some(429)).retryable());
        assert!(f(Outcome::Http5xx, Some(502)).retryable());
        assert!(f(Outcome::Http5xx, Some(503)).retryable());
        assert!(!f(Outcome::Http5xx, Some(500)).retryable());
        assert!(!f(Outcome::Http5xx, Some(504)).retryable());
        assert!(!f(Outcome::Timeout, None).retryable());
        assert!(!f(Outcome::Http4xx, Some(400)).retryable());
        assert!(!f(Outcome::BadReply, None).retryable());
    }
}
