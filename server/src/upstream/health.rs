//! Each upstream's health and figures, beside the client that calls it:
//! its circuit breaker, the calls in flight, outcomes, latency, tokens,
//! retries and the models that answered, kept twice over for two readers:
//! exact figures for the status (`tierMetrics`, `modelUtilization`: latency
//! percentiles over the newest 1000 successful calls) and Prometheus series
//! registered in [`crate::telemetry`] (counters and classic histograms that
//! add up across instances). Model names, which come from upstream answers,
//! reach the status only, at most [`MAX_MODELS`] per upstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use chrono::Utc;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use shared::api::Usage;
use shared::metrics::{
    CircuitState, LastError, LatencyWindow, ModelUtilization, Outcome, OutcomeCounts, TierMetrics,
    UpstreamMetrics, error_rate, model_shares,
};
use shared::{PerTier, Tier};

use super::breaker::{Admission, Breaker, BreakerSettings, Transition, Verdict};
use crate::changes::Changes;
use crate::telemetry::Telemetry;

/// Distinct answering models tracked per upstream; answers naming others
/// count under [`OTHER_MODELS`].
pub const MAX_MODELS: usize = 16;
/// Where the answers of models past [`MAX_MODELS`] are counted.
pub const OTHER_MODELS: &str = "(other)";
/// The longest model name kept (longer ones are cut).
const MAX_MODEL_CHARS: usize = 128;

/// Upstream latency buckets, seconds: 5 ms to 2 min, so `histogram_quantile`
/// is meaningful from a local model to a slow powerful one.
const LATENCY_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0,
];

/// One upstream as configured: where it sits and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLabel {
    /// Its tier.
    pub tier: Tier,
    /// Its name, unique within the tier.
    pub name: String,
    /// The configured `--model`, if any.
    pub model: Option<String>,
}

type Labels = Vec<(&'static str, String)>;

/// Every upstream's health and figures, and each tier's.
pub struct Health {
    upstreams: Vec<Arc<UpstreamState>>,
    tiers: PerTier<TierState>,
    changes: Changes,
}

struct TierState {
    latency: Mutex<LatencyWindow>,
    ttft: Mutex<LatencyWindow>,
    short_circuited: AtomicU64,
    short_circuited_total: Counter,
}

/// One upstream's health and numbers; shared by the pool that calls it.
pub struct UpstreamState {
    /// Where it sits and what it is called.
    pub label: UpstreamLabel,
    in_flight: AtomicU64,
    breaker: Mutex<Breaker>,
    stats: Mutex<Stats>,
    requests: [Counter; 9],
    latency: Histogram,
    ttft: Histogram,
    tokens: [Counter; 2],
    retries: Counter,
    transitions: [Counter; 3],
}

#[derive(Default)]
struct Stats {
    outcomes: [u64; 9],
    latency: LatencyWindow,
    tokens_in: u64,
    tokens_out: u64,
    retries: u64,
    last_error: Option<LastError>,
    last_model: Option<String>,
    models: Vec<ModelStats>,
}

struct ModelStats {
    name: String,
    answered: u64,
    tokens_in: u64,
    tokens_out: u64,
    latency: LatencyWindow,
}

/// How an attempt ended, as the pool reports it.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// The model the answer named (answers only).
    pub model: Option<String>,
    /// Tokens the answer reported.
    pub usage: Option<Usage>,
    /// What went wrong (failures only; already sanitised).
    pub error: Option<String>,
}

impl Health {
    /// The health of these upstreams (their order is kept), with every
    /// series registered at zero in `telemetry`.
    pub fn new(
        layout: &[UpstreamLabel],
        breaker: BreakerSettings,
        telemetry: &Arc<Telemetry>,
    ) -> Arc<Self> {
        let requests = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_upstream_requests",
            "Upstream calls by how they ended (ok, timeout, connect_error, http_5xx, http_4xx, http_429, bad_reply, too_large, cancelled)",
            requests.clone(),
        );
        let latency = Family::<Labels, Histogram, _>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        telemetry.register(
            "orch_upstream_latency_seconds",
            "Latency of successful upstream calls, request sent to answer read",
            latency.clone(),
        );
        let ttft = Family::<Labels, Histogram, _>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        telemetry.register(
            "orch_upstream_ttft_seconds",
            "Time to first token of streamed answers, request sent to the first content chunk",
            ttft.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_upstream_tokens",
            "Tokens the upstreams reported, by direction (in: prompt, out: completion)",
            tokens.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_upstream_retries",
            "Upstream calls that retried a failed one",
            retries.clone(),
        );
        let transitions = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_upstream_circuit_transitions",
            "Circuit breaker state changes, by the state entered",
            transitions.clone(),
        );
        let short = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_short_circuited",
            "Queries refused at once because every upstream of the tier had its circuit open",
            short.clone(),
        );

        let upstreams: Vec<Arc<UpstreamState>> = layout
            .iter()
            .map(|label| {
                let base: Labels = vec![
                    ("tier", label.tier.to_string()),
                    ("upstream", label.name.clone()),
                ];
                let with = |key: &'static str, value: &str| {
                    let mut l = base.clone();
                    l.push((key, value.to_owned()));
                    l
                };
                Arc::new(UpstreamState {
                    label: label.clone(),
                    in_flight: AtomicU64::new(0),
                    breaker: Mutex::new(Breaker::new(breaker)),
                    stats: Mutex::new(Stats::default()),
                    requests: Outcome::ALL
                        .map(|o| requests.get_or_create(&with("outcome", o.label())).clone()),
                    latency: latency.get_or_create(&base).clone(),
                    ttft: ttft.get_or_create(&base).clone(),
                    tokens: ["in", "out"]
                        .map(|d| tokens.get_or_create(&with("direction", d)).clone()),
                    retries: retries.get_or_create(&base).clone(),
                    transitions: [
                        CircuitState::Closed,
                        CircuitState::HalfOpen,
                        CircuitState::Open,
                    ]
                    .map(|s| transitions.get_or_create(&with("to", s.name())).clone()),
                })
            })
            .collect();
        let tiers = PerTier::from_fn(|tier| TierState {
            latency: Mutex::new(LatencyWindow::default()),
            ttft: Mutex::new(LatencyWindow::default()),
            short_circuited: AtomicU64::new(0),
            short_circuited_total: short
                .get_or_create(&vec![("tier", tier.to_string())])
                .clone(),
        });
        let health = Arc::new(Health {
            upstreams,
            tiers,
            changes: Changes::default(),
        });
        telemetry.register_collector(Box::new(Gauges(Arc::downgrade(&health))));
        health
    }

    /// The upstreams, in configuration order.
    pub fn upstreams(&self) -> &[Arc<UpstreamState>] {
        &self.upstreams
    }

    /// Counts a query refused because every upstream of `tier` is open.
    pub fn short_circuited(&self, tier: Tier) {
        let t = &self.tiers[tier];
        t.short_circuited.fetch_add(1, Ordering::Relaxed);
        t.short_circuited_total.inc();
        self.changes.bump();
    }

    /// What changed here that a status could show.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Starts an admitted call of `upstream`: in flight until the guard
    /// ends; `retry` when it retries a failed call of the same query.
    pub fn begin(
        self: &Arc<Self>,
        upstream: &Arc<UpstreamState>,
        admission: Admission,
        retry: bool,
        assessor: bool,
    ) -> Attempt {
        upstream.in_flight.fetch_add(1, Ordering::AcqRel);
        if retry && !assessor {
            upstream.retries.inc();
            upstream.lock().retries += 1;
        }
        self.changes.bump();
        Attempt {
            health: Arc::clone(self),
            upstream: Arc::clone(upstream),
            admission,
            started: Instant::now(),
            open: true,
            assessor,
        }
    }

    /// Each tier's figures, Q2, Q3, Q4.
    pub fn tier_metrics(&self) -> Vec<TierMetrics> {
        let now = Instant::now();
        Tier::ALL
            .iter()
            .map(|&tier| {
                let t = &self.tiers[tier];
                let mut outcomes = [0u64; 9];
                let (mut tokens_in, mut tokens_out, mut retries, mut in_flight) = (0, 0, 0, 0);
                let upstreams: Vec<UpstreamMetrics> = self
                    .upstreams
                    .iter()
                    .filter(|u| u.label.tier == tier)
                    .map(|u| {
                        // One read of the upstream, so the tier's sums equal
                        // the sums of what its upstreams show.
                        let (m, [tin, tout, tries]) = u.read(now);
                        for (sum, n) in outcomes.iter_mut().zip(m.outcomes.to_array()) {
                            *sum += n;
                        }
                        tokens_in += tin;
                        tokens_out += tout;
                        retries += tries;
                        in_flight += m.in_flight;
                        m
                    })
                    .collect();
                let outcomes = OutcomeCounts::from_array(outcomes);
                TierMetrics {
                    tier,
                    latency_ms: lock(&t.latency).percentiles(),
                    tokens_in,
                    tokens_out,
                    requests: outcomes.total(),
                    outcomes,
                    error_rate: error_rate(outcomes),
                    retries,
                    short_circuited: t.short_circuited.load(Ordering::Relaxed),
                    in_flight,
                    upstreams,
                    ttft_ms: lock(&t.ttft).percentiles(),
                }
            })
            .collect()
    }

    /// Each answering model's share of all answers, most first.
    pub fn model_utilization(&self) -> Vec<ModelUtilization> {
        let mut all: Vec<ModelUtilization> = Vec::new();
        for u in &self.upstreams {
            for m in &u.lock().models {
                // The same model behind two upstreams of a tier is one model.
                match all
                    .iter_mut()
                    .find(|a| a.tier == u.label.tier && a.model == m.name)
                {
                    Some(a) => {
                        a.answered += m.answered;
                        a.tokens_in += m.tokens_in;
                        a.tokens_out += m.tokens_out;
                        // Latency stays the first upstream's: windows of two
                        // upstreams do not merge exactly.
                    }
                    None => all.push(ModelUtilization {
                        model: m.name.clone(),
                        tier: u.label.tier,
                        answered: m.answered,
                        utilization_percent: 0.0,
                        tokens_in: m.tokens_in,
                        tokens_out: m.tokens_out,
                        latency_ms: m.latency.percentiles(),
                    }),
                }
            }
        }
        model_shares(all)
    }
}

impl UpstreamState {
    fn lock(&self) -> MutexGuard<'_, Stats> {
        lock(&self.stats)
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        lock(&self.breaker)
    }

    /// Calls under way now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether its breaker would let a call through now.
    pub fn available(&self, now: Instant) -> bool {
        self.breaker().would_admit(now)
    }

    /// When its open circuit lets a probe through, if it is open.
    pub fn open_until(&self) -> Option<Instant> {
        self.breaker().open_until()
    }

    /// Takes a place with its breaker (the probe's, when half-open); `None`
    /// while its circuit is open.
    pub fn admit(&self, health: &Health, now: Instant) -> Option<Admission> {
        let (admission, change) = self.breaker().admit(now);
        if let Some(change) = change {
            self.changed_state(health, change);
        }
        admission
    }

    fn changed_state(&self, health: &Health, change: Transition) {
        let index = match change.to {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        };
        self.transitions[index].inc();
        let l = &self.label;
        match change.to {
            CircuitState::Open => {
                tracing::warn!(tier = %l.tier, upstream = %l.name, from = change.from.name(), "circuit opened: calls refused until the cool-down ends")
            }
            CircuitState::HalfOpen => {
                tracing::info!(tier = %l.tier, upstream = %l.name, "circuit half-open: one probe call goes through")
            }
            CircuitState::Closed => {
                tracing::info!(tier = %l.tier, upstream = %l.name, from = change.from.name(), "circuit closed: the upstream answers again")
            }
        }
        health.changes.bump();
    }

    /// Its figures now, and its tokens in, tokens out and retries, all from
    /// one read.
    fn read(&self, now: Instant) -> (UpstreamMetrics, [u64; 3]) {
        let (circuit, consecutive_failures) = {
            let b = self.breaker();
            (b.state(now), b.consecutive_failures())
        };
        let s = self.lock();
        let outcomes = OutcomeCounts::from_array(s.outcomes);
        let metrics = UpstreamMetrics {
            name: self.label.name.clone(),
            model: s.last_model.clone().or_else(|| self.label.model.clone()),
            in_flight: self.in_flight(),
            processed: outcomes.total(),
            outcomes,
            error_rate: error_rate(outcomes),
            latency_ms: s.latency.percentiles(),
            circuit,
            consecutive_failures,
            last_error: s.last_error.clone(),
        };
        (metrics, [s.tokens_in, s.tokens_out, s.retries])
    }
}

/// One call under way; counted as `cancelled` if dropped unfinished (the
/// client went away and the future was dropped).
#[must_use = "a call counts as in flight only while its attempt lives"]
pub struct Attempt {
    health: Arc<Health>,
    upstream: Arc<UpstreamState>,
    admission: Admission,
    started: Instant,
    open: bool,
    /// The model assessor's call: its upstream's health counts it, the
    /// tier's answers (requests, latency, tokens, models) do not.
    assessor: bool,
}

impl Attempt {
    /// Milliseconds since the call began.
    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1_000.0
    }

    /// Records that the first content token of a streamed answer arrived
    /// now (call it once per call).
    pub fn first_token(&self) {
        let ms = self.elapsed_ms();
        self.upstream.ttft.observe(ms / 1_000.0);
        lock(&self.health.tiers[self.upstream.label.tier].ttft).push(ms);
    }

    /// Records how the call ended.
    pub fn finish(mut self, outcome: Outcome, ended: Ended) {
        self.close(outcome, ended);
    }

    fn close(&mut self, outcome: Outcome, ended: Ended) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        let u = &self.upstream;
        let ms = self.elapsed_ms();
        if self.assessor {
            // Its tokens are the assessor's to count (`assessor::Counts`).
            self.settle(outcome);
            return;
        }
        u.requests[outcome.index()].inc();
        {
            let mut s = u.lock();
            s.outcomes[outcome.index()] += 1;
            if outcome == Outcome::Ok {
                s.latency.push(ms);
                let (tin, tout) = ended
                    .usage
                    .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
                s.tokens_in += tin;
                s.tokens_out += tout;
                u.tokens[0].inc_by(tin);
                u.tokens[1].inc_by(tout);
                u.latency.observe(ms / 1_000.0);
                let name = ended
                    .model
                    .as_deref()
                    .map(clean_model)
                    .or_else(|| u.label.model.clone());
                if let Some(name) = name {
                    s.record_model(&name, ms, tin, tout);
                    s.last_model = Some(name);
                }
            } else if outcome != Outcome::Cancelled {
                s.last_error = Some(LastError {
                    kind: outcome,
                    message: ended.error.unwrap_or_else(|| outcome.label().to_owned()),
                    at: Utc::now(),
                });
            }
        }
        if outcome == Outcome::Ok {
            lock(&self.health.tiers[u.label.tier].latency).push(ms);
        }
        self.settle(outcome);
    }

    /// The call's verdict on its upstream's health, and its end.
    fn settle(&self, outcome: Outcome) {
        let u = &self.upstream;
        let change = u
            .breaker()
            .record(self.admission, verdict(outcome), Instant::now());
        if let Some(change) = change {
            u.changed_state(&self.health, change);
        }
        u.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.health.changes.bump();
    }
}

/// What a call's outcome says of its upstream's health.
fn verdict(outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Ok | Outcome::Http4xx => Verdict::Success,
        Outcome::Timeout | Outcome::ConnectError | Outcome::Http5xx | Outcome::BadReply => {
            Verdict::Failure
        }
        Outcome::Http429 | Outcome::TooLarge | Outcome::Cancelled => Verdict::Neutral,
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.close(Outcome::Cancelled, Ended::default());
    }
}

impl Stats {
    fn record_model(&mut self, name: &str, ms: f64, tokens_in: u64, tokens_out: u64) {
        let index = match self.models.iter().position(|m| m.name == name) {
            Some(i) => i,
            None if self.models.len() < MAX_MODELS - 1 || name == OTHER_MODELS => {
                self.models.push(ModelStats::new(name));
                self.models.len() - 1
            }
            None => match self.models.iter().position(|m| m.name == OTHER_MODELS) {
                Some(i) => i,
                None => {
                    self.models.push(ModelStats::new(OTHER_MODELS));
                    self.models.len() - 1
                }
            },
        };
        let m = &mut self.models[index];
        m.answered += 1;
        m.tokens_in += tokens_in;
        m.tokens_out += tokens_out;
        m.latency.push(ms);
    }
}

impl ModelStats {
    fn new(name: &str) -> Self {
        ModelStats {
            name: name.to_owned(),
            answered: 0,
            tokens_in: 0,
            tokens_out: 0,
            latency: LatencyWindow::default(),
        }
    }
}

/// A model name as an upstream gave it, made safe to show: no control
/// characters, at most 128 characters, never empty.
fn clean_model(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MODEL_CHARS)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        "(unnamed)".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No critical section here can panic midway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The values read at scrape time: in-flight calls and circuit states.
struct Gauges(Weak<Health>);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauges")
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(t) = self.0.upgrade() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(0i64).metric_type();
        let now = Instant::now();
        let labels = |u: &UpstreamState| {
            [
                ("tier", u.label.tier.to_string()),
                ("upstream", u.label.name.clone()),
            ]
        };
        let mut family = encoder.encode_descriptor(
            "orch_upstream_in_flight",
            "Upstream calls under way",
            None,
            gauge,
        )?;
        for u in &t.upstreams {
            ConstGauge::new(u.in_flight() as i64).encode(family.encode_family(&labels(u))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "orch_upstream_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            None,
            gauge,
        )?;
        for u in &t.upstreams {
            let state = u.breaker().state(now);
            ConstGauge::new(state.gauge()).encode(family.encode_family(&labels(u))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "orch_tier_in_flight",
            "Upstream calls under way per tier",
            None,
            gauge,
        )?;
        for tier in Tier::ALL {
            let n: u64 = t
                .upstreams
                .iter()
                .filter(|u| u.label.tier == tier)
                .map(|u| u.in_flight())
                .sum();
            ConstGauge::new(n as i64)
                .encode(family.encode_family(&[("tier", tier.to_string())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Complexity;
    use shared::api::Mode;

    fn layout() -> Vec<UpstreamLabel> {
        let u = |tier, name: &str| UpstreamLabel {
            tier,
            name: name.into(),
            model: Some("configured".into()),
        };
        vec![u(Tier::Q2, "a"), u(Tier::Q2, "b"), u(Tier::Q4, "big")]
    }

    fn call(t: &Arc<Health>, i: usize, outcome: Outcome, model: Option<&str>) {
        let u = &t.upstreams()[i];
        let admission = u.admit(t, Instant::now()).expect("admitted");
        t.begin(u, admission, false, false).finish(
            outcome,
            Ended {
                model: model.map(str::to_owned),
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                }),
                error: (outcome != Outcome::Ok).then(|| "boom".to_owned()),
            },
        );
    }

    #[test]
    fn outcomes_tokens_and_models_add_up_per_upstream_and_tier() {
        let t = Health::new(&layout(), BreakerSettings::default(), &Telemetry::new());
        call(&t, 0, Outcome::Ok, Some("m-7b"));
        call(&t, 0, Outcome::Ok, Some("m-7b"));
        call(&t, 1, Outcome::Http5xx, None);
        call(&t, 1, Outcome::Ok, None);
        let dropped = t.begin(&t.upstreams()[2], Admission { probe: false }, true, false);
        assert_eq!(t.tier_metrics()[2].in_flight, 1);
        drop(dropped);
        let tiers = t.tier_metrics();
        let fast = &tiers[0];
        assert_eq!(fast.requests, 4);
        assert_eq!(fast.outcomes.ok, 3);
        assert_eq!(fast.outcomes.http_5xx, 1);
        assert_eq!(fast.tokens_in, 30, "tokens of answers only");
        assert_eq!(fast.latency_ms.unwrap().samples, 3);
        assert!((fast.error_rate - 0.25).abs() < 1e-12);
        assert_eq!(
            fast.upstreams[1].last_error.as_ref().unwrap().message,
            "boom"
        );
        assert_eq!(fast.upstreams[0].model.as_deref(), Some("m-7b"));
        assert_eq!(fast.upstreams[1].model.as_deref(), Some("configured"));
        let big = &tiers[2];
        assert_eq!(
            (big.outcomes.cancelled, big.retries, big.in_flight),
            (1, 1, 0)
        );
        assert_eq!(big.error_rate, 0.0);
        let models = t.model_utilization();
        assert_eq!(models[0].model, "m-7b");
        assert!((models[0].utilization_percent - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(models[1].model, "configured");
    }

    #[test]
    fn the_exposition_has_bounded_labels_and_every_series_from_the_start() {
        let t = Telemetry::new();
        let _health = Health::new(&layout(), BreakerSettings::default(), &t);
        let _assessor = crate::assessor::Counts::registered(&t);
        t.record_decision(Tier::Q3, Complexity::Moderate, Some(Mode::TwoStage), 0.02);
        let text = t.encode();
        assert!(text.contains(
            "orch_decisions_total{tier=\"Q3\",complexity=\"moderate\",mode=\"two-stage\"} 1\n"
        ));
        assert_eq!(text.matches("orch_decisions_total{").count(), 3 * 3 * 5);
        assert!(text.contains("orch_upstream_ttft_seconds_count{tier=\"Q2\",upstream=\"a\"} 0"));
        assert!(text.contains("orch_assessor_fallbacks_total{reason=\"bad_answer\"} 0"));
        assert_eq!(text.matches("orch_upstream_requests_total{").count(), 3 * 9);
        assert!(text.contains("orch_upstream_circuit_state{tier=\"Q2\",upstream=\"a\"} 0"));
        assert!(text.contains("orch_build_info{version="));
        assert!(text.contains("process_resident_memory_bytes "));
        // Only the fixed label names appear.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(labels) = line
                .split_once('{')
                .map(|(_, r)| r.split_once('}').unwrap().0)
            {
                for pair in labels.split("\",") {
                    let key = pair.split_once('=').unwrap().0;
                    assert!(
                        [
                            "tier",
                            "upstream",
                            "outcome",
                            "mode",
                            "complexity",
                            "direction",
                            "to",
                            "reason",
                            "le",
                            "version"
                        ]
                        .contains(&key),
                        "{key} in {line}"
                    );
                }
            }
        }
    }

    #[test]
    fn model_names_are_bounded_and_cleaned() {
        let t = Health::new(&layout(), BreakerSettings::default(), &Telemetry::new());
        for i in 0..40 {
            call(&t, 0, Outcome::Ok, Some(&format!("model-{i}\n")));
        }
        let models = t.model_utilization();
        assert_eq!(models.len(), MAX_MODELS);
        let other = models.iter().find(|m| m.model == OTHER_MODELS).unwrap();
        assert_eq!(other.answered, 40 - (MAX_MODELS as u64 - 1));
        assert!(models.iter().all(|m| !m.model.contains('\n')));
        assert_eq!(clean_model(" \u{7} "), "(unnamed)");
        assert_eq!(clean_model(&"x".repeat(500)).len(), 128);
    }
}
