//! Upstream call metrics: outcomes by kind, latency percentiles over a
//! window of recent calls, tokens, and the wire types the status carries them
//! in (`tierMetrics`, `modelUtilization`). Pure: the server records into
//! these, the panel renders them.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Tier;

/// How many of an upstream's (or tier's, or model's) newest successful calls
/// the latency percentiles cover.
pub const LATENCY_WINDOW: usize = 1_000;

/// How one call to an upstream ended: a fixed set, so it is safe as a
/// metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A chat completion came back.
    Ok,
    /// No full answer within `--upstream-timeout`.
    Timeout,
    /// The connection could not be made or broke before an answer began.
    ConnectError,
    /// The upstream answered 5xx.
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// The upstream answered 4xx other than 429.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// The upstream answered 429 (rate limited).
    #[serde(rename = "http_429")]
    Http429,
    /// 200 but not a usable chat completion (not JSON, no choices, no
    /// content and no tool calls, or the connection broke mid-answer).
    BadReply,
    /// The reply was longer than `--max-upstream-body`.
    TooLarge,
    /// The client went away before the answer came.
    Cancelled,
}

impl Outcome {
    /// Every outcome, in the order counts are kept.
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Timeout,
        Outcome::ConnectError,
        Outcome::Http5xx,
        Outcome::Http4xx,
        Outcome::Http429,
        Outcome::BadReply,
        Outcome::TooLarge,
        Outcome::Cancelled,
    ];

    /// The label value (and wire name): `ok`, `timeout`, `connect_error`,
    /// `http_5xx`, `http_4xx`, `http_429`, `bad_reply`, `too_large`,
    /// `cancelled`.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::Http5xx => "http_5xx",
            Outcome::Http4xx => "http_4xx",
            Outcome::Http429 => "http_429",
            Outcome::BadReply => "bad_reply",
            Outcome::TooLarge => "too_large",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Its position in [`Outcome::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Counts against the upstream's error rate: everything but `ok` and a
    /// client's own cancellation.
    pub const fn is_error(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Cancelled)
    }
}

/// Calls by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OutcomeCounts {
    /// Answered.
    pub ok: u64,
    /// Timed out.
    pub timeout: u64,
    /// Could not connect, or the connection broke before an answer.
    pub connect_error: u64,
    /// Answered 5xx.
    #[serde(rename = "http5xx")]
    pub http_5xx: u64,
    /// Answered 4xx other than 429.
    #[serde(rename = "http4xx")]
    pub http_4xx: u64,
    /// Answered 429.
    #[serde(rename = "http429")]
    pub http_429: u64,
    /// Answered something that is not a usable chat completion.
    pub bad_reply: u64,
    /// Answered more than `--max-upstream-body` bytes.
    pub too_large: u64,
    /// Given up because the client went away.
    pub cancelled: u64,
}

impl OutcomeCounts {
    /// Counts from an array indexed by [`Outcome::index`].
    pub fn from_array(a: [u64; 9]) -> Self {
        OutcomeCounts {
            ok: a[0],
            timeout: a[1],
            connect_error: a[2],
            http_5xx: a[3],
            http_4xx: a[4],
            http_429: a[5],
            bad_reply: a[6],
            too_large: a[7],
            cancelled: a[8],
        }
    }

    /// The counts as an array indexed by [`Outcome::index`].
    pub fn to_array(self) -> [u64; 9] {
        [
            self.ok,
            self.timeout,
            self.connect_error,
            self.http_5xx,
            self.http_4xx,
            self.http_429,
            self.bad_reply,
            self.too_large,
            self.cancelled,
        ]
    }

    /// All calls, whatever their outcome.
    pub fn total(self) -> u64 {
        self.to_array().iter().sum()
    }

    /// Calls that count as errors (see [`Outcome::is_error`]).
    pub fn errors(self) -> u64 {
        Outcome::ALL
            .iter()
            .zip(self.to_array())
            .filter(|(o, _)| o.is_error())
            .map(|(_, n)| n)
            .sum()
    }
}

/// Errors over the calls that ended by the upstream's doing (cancelled
/// calls are neither): a fraction 0..=1, and 0 when there were none.
pub fn error_rate(counts: OutcomeCounts) -> f64 {
    let errors = counts.errors();
    let decided = counts.total() - counts.cancelled;
    if decided == 0 {
        0.0
    } else {
        errors as f64 / decided as f64
    }
}

/// The `q`-quantile (0 < q <= 1) of `sorted` by nearest rank: the smallest
/// sample with at least `q` of all samples at or below it; `None` for none.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The newest `capacity` latencies (ms), oldest dropped first.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    samples: VecDeque<f64>,
    capacity: usize,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::new(LATENCY_WINDOW)
    }
}

impl LatencyWindow {
    /// An empty window of `capacity` (at least 1) samples.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        LatencyWindow {
            samples: VecDeque::with_capacity(capacity.min(LATENCY_WINDOW)),
            capacity,
        }
    }

    /// Adds a latency; a non-finite or negative one is ignored.
    pub fn push(&mut self, ms: f64) {
        if !(ms.is_finite() && ms >= 0.0) {
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// How many samples it holds.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Exact p50, p95 and p99 (nearest rank) of the samples held; `None`
    /// when there are none.
    pub fn percentiles(&self) -> Option<Latency> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_unstable_by(f64::total_cmp);
        let at = |q| nearest_rank(&sorted, q).unwrap_or(0.0);
        Some(Latency {
            samples: sorted.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }
}

/// Latency percentiles in milliseconds over the newest successful calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Latency {
    /// How many calls they cover (at most 1000, the newest).
    pub samples: usize,
    /// Median, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Failing: calls are refused until the cool-down ends.
    Open,
    /// Cooled down: one probe call decides whether it closes or opens again.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half-open`.
    pub const fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }

    /// The value of the circuit gauge: 0 closed, 1 half-open, 2 open.
    pub const fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// The last failed call of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// How it ended.
    pub kind: Outcome,
    /// What happened (sanitised; never a key).
    pub message: String,
    /// When (RFC 3339, UTC).
    #[serde(with = "crate::decision::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: DateTime<Utc>,
}

/// One upstream of a tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UpstreamMetrics {
    /// Its name (`--upstream TIER:NAME=URL`; host:port when unnamed).
    pub name: String,
    /// The model that last answered, else the configured `--model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Calls under way now.
    pub in_flight: u64,
    /// Calls ended since start, whatever their outcome.
    pub processed: u64,
    /// Calls by outcome.
    pub outcomes: OutcomeCounts,
    /// Errors over calls (0..=1).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub error_rate: f64,
    /// Latency of its newest successful calls; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// Its circuit breaker.
    pub circuit: CircuitState,
    /// Failures in a row (5 opens the circuit by default).
    pub consecutive_failures: u32,
    /// The most recent failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// One tier's upstream calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TierMetrics {
    /// Which tier.
    pub tier: Tier,
    /// Latency of the tier's newest successful calls; absent before the
    /// first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// Prompt tokens the upstreams reported (`usage.prompt_tokens`).
    pub tokens_in: u64,
    /// Completion tokens the upstreams reported (`usage.completion_tokens`).
    pub tokens_out: u64,
    /// Upstream calls ended since start (retries included).
    pub requests: u64,
    /// Calls by outcome.
    pub outcomes: OutcomeCounts,
    /// Errors over calls (0..=1).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub error_rate: f64,
    /// Calls that were retries of a failed one.
    pub retries: u64,
    /// Queries refused at once because every upstream's circuit was open.
    pub short_circuited: u64,
    /// Upstream calls under way now.
    pub in_flight: u64,
    /// The tier's upstreams, in configuration order.
    pub upstreams: Vec<UpstreamMetrics>,
    /// Time to first token of the tier's newest streamed answers (request
    /// sent to the first content chunk); absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<Latency>,
}

/// How much of the answered traffic one model took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ModelUtilization {
    /// The model named in the upstream's answer.
    pub model: String,
    /// The tier whose upstream it answered for.
    pub tier: Tier,
    /// Answers it gave since start.
    pub answered: u64,
    /// Its share (0..=100) of all answers since start.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 100.0))]
    pub utilization_percent: f64,
    /// Prompt tokens of its answers.
    pub tokens_in: u64,
    /// Completion tokens of its answers.
    pub tokens_out: u64,
    /// Latency of its newest answers; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
}

/// Fills in each model's share of all answers (the given `utilization_percent`
/// values are overwritten); most answers first, then by tier and name.
pub fn model_shares(mut models: Vec<ModelUtilization>) -> Vec<ModelUtilization> {
    let total: u64 = models.iter().map(|m| m.answered).sum();
    for m in &mut models {
        m.utilization_percent = if total == 0 {
            0.0
        } else {
            m.answered as f64 / total as f64 * 100.0
        };
    }
    models.sort_by(|a, b| {
        b.answered
            .cmp(&a.answered)
            .then(a.tier.cmp(&b.tier))
            .then(a.model.cmp(&b.model))
    });
    models
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_on_known_sets() {
        let one_to_hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&one_to_hundred, 0.5), Some(50.0));
        assert_eq!(nearest_rank(&one_to_hundred, 0.95), Some(95.0));
        assert_eq!(nearest_rank(&one_to_hundred, 0.99), Some(99.0));
        assert_eq!(nearest_rank(&[7.0], 0.99), Some(7.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[1.0, 2.0], 0.5), Some(1.0));
    }

    #[test]
    fn window_keeps_the_newest_and_ignores_garbage() {
        let mut w = LatencyWindow::new(3);
        for ms in [100.0, f64::NAN, -1.0, f64::INFINITY, 1.0, 2.0, 3.0] {
            w.push(ms);
        }
        assert_eq!(w.len(), 3);
        let p = w.percentiles().unwrap();
        assert_eq!((p.samples, p.p50, p.p99), (3, 2.0, 3.0));
        assert!(LatencyWindow::new(5).percentiles().is_none());
    }

    #[test]
    fn error_rate_leaves_cancellations_out() {
        let c = OutcomeCounts {
            ok: 6,
            http_5xx: 2,
            timeout: 1,
            http_429: 1,
            cancelled: 10,
            ..Default::default()
        };
        assert_eq!(c.total(), 20);
        assert_eq!(c.errors(), 4);
        assert!((error_rate(c) - 0.4).abs() < 1e-12);
        assert_eq!(error_rate(OutcomeCounts::default()), 0.0);
        let only_cancelled = OutcomeCounts {
            cancelled: 3,
            ..Default::default()
        };
        assert_eq!(error_rate(only_cancelled), 0.0);
    }

    #[test]
    fn outcome_labels_are_the_fixed_set_in_index_order() {
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(
            labels,
            [
                "ok",
                "timeout",
                "connect_error",
                "http_5xx",
                "http_4xx",
                "http_429",
                "bad_reply",
                "too_large",
                "cancelled"
            ]
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
            // The wire name is the label.
            assert_eq!(
                serde_json::to_string(o).unwrap(),
                format!("\"{}\"", o.label())
            );
        }
        let mut a = [0u64; 9];
        a[Outcome::Http429.index()] = 4;
        assert_eq!(OutcomeCounts::from_array(a).http_429, 4);
        assert_eq!(OutcomeCounts::from_array(a).to_array(), a);
    }

    #[test]
    fn model_shares_sum_to_100() {
        let m = |model: &str, answered| ModelUtilization {
            model: model.into(),
            tier: Tier::Q2,
            answered,
            utilization_percent: -1.0,
            tokens_in: 0,
            tokens_out: 0,
            latency_ms: None,
        };
        let shares = model_shares(vec![m("a", 1), m("b", 3)]);
        assert_eq!(shares[0].model, "b");
        assert_eq!(shares[0].utilization_percent, 75.0);
        assert_eq!(shares[1].utilization_percent, 25.0);
        assert_eq!(model_shares(vec![m("a", 0)])[0].utilization_percent, 0.0);
    }

    proptest! {
        /// The window's percentiles equal nearest-rank over a sorted copy
        /// of the newest samples.
        #[test]
        fn percentiles_match_a_sorted_reference(
            samples in proptest::collection::vec(0.0f64..1e6, 1..2_500),
            capacity in 1usize..1_200,
        ) {
            let mut w = LatencyWindow::new(capacity);
            for &s in &samples {
                w.push(s);
            }
            let kept = &samples[samples.len().saturating_sub(capacity)..];
            let mut sorted = kept.to_vec();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let p = w.percentiles().unwrap();
            prop_assert_eq!(p.samples, kept.len());
            for (q, got) in [(0.5, p.p50), (0.95, p.p95), (0.99, p.p99)] {
                let idx = ((q * sorted.len() as f64).ceil() as usize).max(1) - 1;
                prop_assert_eq!(got, sorted[idx]);
                // At least q of the samples are at or below it, and fewer
                // than q are strictly below.
                let at_or_below = sorted.iter().filter(|&&s| s <= got).count();
                let below = sorted.iter().filter(|&&s| s < got).count();
                prop_assert!(at_or_below as f64 >= q * sorted.len() as f64);
                prop_assert!((below as f64) < q * sorted.len() as f64);
            }
        }
    }
}

/// How two-stage routing scores queries, and how often the model assessor
/// fell back to the heuristic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AssessorInfo {
    /// `heuristic` or `model` (`--assessor`).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "model", pattern = "^(heuristic|model)$")
    )]
    pub kind: String,
    /// Assessments asked of the fast tier's model since start.
    pub model_calls: u64,
    /// Of those, the ones the heuristic replaced, by reason.
    pub fallbacks: AssessorFallbacks,
    /// Prompt tokens its calls took since start (restored ones included;
    /// priced into the spend as `cost.assessor`); apart from Q2's own.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens its calls took since start.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// Model assessments replaced by the heuristic, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AssessorFallbacks {
    /// No answer within `--assessor-timeout`.
    pub timeout: u64,
    /// An answer that was not one number in 0..=15.
    pub bad_answer: u64,
    /// The call failed (no upstream, circuit open, an HTTP error).
    pub error: u64,
    /// The fast tier had `--max-inflight` calls in flight: not asked.
    #[serde(default)]
    pub busy: u64,
}
