//! The status document and the pure math behind every number in it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Complexity, CostSummary, ModelUtilization, RecordedDecision, Routing, RoutingDecision, Tier,
    TierMetrics,
};

/// How many decisions the service keeps unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 100;
/// How many of the newest decisions utilization is computed over by default.
pub const DEFAULT_WINDOW: usize = 20;
/// How many decisions `recentDecisions` lists unless `?limit=` asks for more.
pub const DEFAULT_RECENT: usize = 10;

/// Load of one tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TierUtilization {
    /// Which tier.
    pub tier: Tier,
    /// The tier's share (0..=100) of the decisions in the utilization window.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0.0, maximum = 100.0, example = 50.0)
    )]
    pub utilization_percent: f64,
    /// Requests of this tier in flight right now.
    pub active_requests: u64,
    /// Decisions routed to this tier since start.
    pub total_processed: u64,
}

/// Share of each complexity class over the buffered decisions, in whole
/// percent; sums to exactly 100 when there is any decision, else all 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComplexityDistribution {
    /// Percent of SIMPLE decisions.
    pub simple: u32,
    /// Percent of MODERATE decisions.
    pub moderate: u32,
    /// Percent of COMPLEX decisions.
    pub complex: u32,
}

/// The document `GET /api/orchestrator/status` returns (the seed's interface).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrchestratorStatus {
    /// Always three entries: Q2, Q3, Q4, in that order.
    pub tier_utilization: Vec<TierUtilization>,
    /// The newest decisions first.
    pub recent_decisions: Vec<RoutingDecision>,
    /// Complexity mix of the buffered decisions.
    pub complexity_distribution: ComplexityDistribution,
    /// Decisions since start, buffered or not.
    pub total_decisions: u64,
    /// Mean decision time of the buffered decisions; 0.0 when there are none.
    pub avg_decision_time_ms: f64,
    /// When this status was taken (RFC 3339, UTC).
    #[serde(with = "crate::decision::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub timestamp: DateTime<Utc>,
    /// Beyond the seed: which server process this is, so a restart shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// Beyond the seed: how many decisions each figure covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Windows>,
    /// Beyond the seed: how many decisions the server keeps (the most
    /// `recentDecisions`, `decisionsSince` and a stream's replay can hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, example = 100))]
    pub buffer_capacity: Option<usize>,
    /// Beyond the seed, only with `?since=SEQ`: the buffered decisions whose
    /// `seq` is greater than SEQ, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions_since: Option<Vec<RoutingDecision>>,
    /// Beyond the seed, only with `?since=SEQ`: true when `decisionsSince`
    /// cannot be complete (decisions after SEQ were already dropped from the
    /// buffer, or SEQ is beyond this instance's newest): start over from this
    /// status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<bool>,
    /// Beyond the seed: each tier's upstream calls (latency percentiles,
    /// tokens, outcomes, retries, and each upstream's circuit and health).
    /// Absent from a server without an upstream layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_metrics: Option<Vec<TierMetrics>>,
    /// Beyond the seed: each answering model's share of all answers since
    /// start (the model named in the upstream's answer), most first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_utilization: Option<Vec<ModelUtilization>>,
    /// Beyond the seed: the thresholds decisions are routed and classed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// Beyond the seed: tokens per tier since start and, with `--price`,
    /// what they cost against the same traffic all on Q4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostSummary>,
    /// Beyond the seed: whether decisions reach the embedded store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<crate::history::Persistence>,
    /// Beyond the seed, only with `--redis`: the link to Redis and whether
    /// this status covers the whole cluster or (Redis unreachable) this
    /// instance only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterInfo>,
    /// Beyond the seed, only with `--redis`: every instance of the cluster
    /// this one knows of, this one first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<crate::cluster::ClusterInstance>>,
    /// Beyond the seed: how many of the buffered decisions each mode made
    /// (the same decisions as `complexityDistribution`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_mix: Option<crate::group::ModeMix>,
    /// Beyond the seed: how two-stage routing scores queries (`--assessor`)
    /// and how often the model assessor fell back to the heuristic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessor: Option<crate::metrics::AssessorInfo>,
    /// Beyond the seed: with virtual keys, what each spent this period: the
    /// top 20 by spend, then `other` for the rest (absent without keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<crate::keys::KeySpend>>,
    /// Beyond the seed: with virtual keys, how their budgets are held and
    /// `accountingDrift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ledger: Option<crate::keys::BudgetLedger>,
    /// Beyond the seed: with virtual keys, `budgetLedger.accountingDrift`:
    /// the USD of this instance's key ledger that the shared ledger (Redis)
    /// does not hold yet (goal: 0; 0 without `--redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting_drift: Option<f64>,
    /// Routing quality, live: shadow judging against Q4 per tier (since
    /// start and over the last hour) and the implicit signals (abandoned
    /// streams, regenerations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::shadow::LiveQuality>,
}

/// The server process a status comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Unique to this process: a new one after every restart.
    #[cfg_attr(feature = "openapi", schema(example = "19a6b2c3d4e-1f2a"))]
    pub id: String,
    /// When this process started (RFC 3339, UTC): the start of every
    /// since-start figure (`totalDecisions`, `totalProcessed`).
    #[serde(with = "crate::decision::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: DateTime<Utc>,
    /// The server's version.
    #[cfg_attr(feature = "openapi", schema(example = "0.1.0"))]
    pub version: String,
}

/// How many of the newest decisions each figure of a status is computed
/// over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Windows {
    /// `utilizationPercent` covers the last this many decisions (the
    /// configured window; all of them while fewer exist).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, example = 20))]
    pub utilization: usize,
    /// `complexityDistribution` covers the last this many (all buffered).
    #[cfg_attr(feature = "openapi", schema(example = 100))]
    pub distribution: usize,
    /// `avgDecisionTimeMs` covers the last this many (all buffered).
    #[cfg_attr(feature = "openapi", schema(example = 100))]
    pub average: usize,
}

/// The all-time and right-now numbers a status needs besides the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounters {
    /// Decisions since start.
    pub total_decisions: u64,
    /// Decisions per tier since start, indexed by [`Tier::index`].
    pub total_processed: [u64; 3],
    /// Requests in flight per tier, indexed by [`Tier::index`].
    pub active_requests: [u64; 3],
}

/// Each tier's share (0..=100) of the given decisions' tiers; all 0 for none.
pub fn tier_utilization(window: impl IntoIterator<Item = Tier>) -> [f64; 3] {
    let mut counts = [0u64; 3];
    let mut n = 0u64;
    for tier in window {
        counts[tier.index()] += 1;
        n += 1;
    }
    if n == 0 {
        return [0.0; 3];
    }
    counts.map(|c| c as f64 / n as f64 * 100.0)
}

/// Whole-percent shares of each class by largest-remainder rounding, so the
/// three sum to exactly 100 whenever there is a decision; all 0 for none.
pub fn complexity_distribution(
    classes: impl IntoIterator<Item = Complexity>,
) -> ComplexityDistribution {
    let mut counts = [0u64; 3];
    for class in classes {
        counts[class as usize] += 1;
    }
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return ComplexityDistribution::default();
    }
    let mut shares = counts.map(|c| c * 100 / n);
    let remainders = counts.map(|c| c * 100 % n);
    let handed_out: u64 = shares.iter().sum();
    // Largest remainders first; ties go to the simpler class so the result is
    // deterministic.
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]).then(a.cmp(&b)));
    for &i in order.iter().take((100 - handed_out) as usize) {
        shares[i] += 1;
    }
    ComplexityDistribution {
        simple: shares[0] as u32,
        moderate: shares[1] as u32,
        complex: shares[2] as u32,
    }
}

/// The mean of the given decision times; 0.0 for none. A running mean, not
/// a sum divided at the end: it stays within the inputs' range, so finite
/// inputs give a finite mean however large they are.
pub fn mean_decision_time(times: impl IntoIterator<Item = f64>) -> f64 {
    let mut mean = 0.0f64;
    for (n, t) in times.into_iter().enumerate() {
        mean += (t - mean) / (n + 1) as f64;
    }
    mean
}

/// Builds the status from the buffered decisions (newest first), the
/// utilization window, how many recent decisions to list, and the counters.
pub fn build_status<'a, I>(
    newest_first: I,
    window: usize,
    recent: usize,
    counters: &StatusCounters,
    now: DateTime<Utc>,
) -> OrchestratorStatus
where
    I: IntoIterator<Item = &'a RecordedDecision>,
    I::IntoIter: Clone,
{
    let buffer = newest_first.into_iter();
    let buffered = buffer.clone().count();
    let mode_mix = crate::group::ModeMix::of(buffer.clone().map(|d| &d.decision));
    let utilization = tier_utilization(buffer.clone().take(window).map(|d| d.decision.tier));
    OrchestratorStatus {
        tier_utilization: Tier::ALL
            .iter()
            .map(|&tier| TierUtilization {
                tier,
                utilization_percent: utilization[tier.index()],
                active_requests: counters.active_requests[tier.index()],
                total_processed: counters.total_processed[tier.index()],
            })
            .collect(),
        recent_decisions: buffer
            .clone()
            .take(recent)
            .map(|d| d.decision.clone())
            .collect(),
        complexity_distribution: complexity_distribution(
            buffer.clone().map(|d| d.decision.complexity),
        ),
        total_decisions: counters.total_decisions,
        avg_decision_time_ms: mean_decision_time(buffer.map(|d| d.decision_time_ms)),
        timestamp: now,
        instance: None,
        windows: Some(Windows {
            utilization: window,
            distribution: buffered,
            average: buffered,
        }),
        buffer_capacity: None,
        decisions_since: None,
        resync: None,
        tier_metrics: None,
        model_utilization: None,
        routing: None,
        cost: None,
        persistence: None,
        cluster: None,
        instances: None,
        mode_mix: Some(mode_mix),
        assessor: None,
        keys: None,
        budget_ledger: None,
        accounting_drift: None,
        quality: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(i: usize, tier: Tier, score: f64, ms: f64) -> RecordedDecision {
        let d =
            RoutingDecision::new(i.to_string(), "q", tier, score, DateTime::UNIX_EPOCH).unwrap();
        RecordedDecision::new(d, ms).unwrap()
    }

    #[test]
    fn zero_state_is_all_zero() {
        let s = build_status([], 20, 10, &StatusCounters::default(), DateTime::UNIX_EPOCH);
        assert_eq!(s.tier_utilization.len(), 3);
        for (u, tier) in s.tier_utilization.iter().zip(Tier::ALL) {
            assert_eq!(u.tier, tier);
            assert_eq!(u.utilization_percent, 0.0);
            assert_eq!(u.active_requests, 0);
            assert_eq!(u.total_processed, 0);
        }
        assert!(s.recent_decisions.is_empty());
        assert_eq!(s.complexity_distribution, ComplexityDistribution::default());
        assert_eq!(s.total_decisions, 0);
        assert_eq!(s.avg_decision_time_ms, 0.0);
    }

    #[test]
    fn utilization_is_share_of_the_window_only() {
        // 25 decisions newest first: the 20 newest are 5 Q4 + 15 Q3; the 5
        // oldest (Q2) fall outside the window.
        let mut v: Vec<RecordedDecision> = (0..5).map(|i| rec(i, Tier::Q4, 8.0, 1.0)).collect();
        v.extend((5..20).map(|i| rec(i, Tier::Q3, 4.0, 1.0)));
        v.extend((20..25).map(|i| rec(i, Tier::Q2, 0.0, 1.0)));
        let s = build_status(&v, 20, 10, &StatusCounters::default(), DateTime::UNIX_EPOCH);
        let got: Vec<f64> = s
            .tier_utilization
            .iter()
            .map(|u| u.utilization_percent)
            .collect();
        assert_eq!(got, vec![0.0, 75.0, 25.0]);
        // the distribution is over all 25 buffered: 5 complex, 15 moderate, 5 simple
        assert_eq!(
            s.complexity_distribution,
            ComplexityDistribution {
                simple: 20,
                moderate: 60,
                complex: 20
            }
        );
    }

    #[test]
    fn utilization_with_fewer_decisions_than_the_window() {
        let v = [Tier::Q2, Tier::Q2, Tier::Q3];
        let u = tier_utilization(v);
        assert!((u[0] - 200.0 / 3.0).abs() < 1e-9);
        assert!((u[1] - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(u[2], 0.0);
    }

    #[test]
    fn distribution_largest_remainder() {
        use Complexity::*;
        let d = complexity_distribution([Simple, Moderate, Complex]);
        assert_eq!(d.simple + d.moderate + d.complex, 100);
        assert_eq!((d.simple, d.moderate, d.complex), (34, 33, 33));
        let d = complexity_distribution([Simple, Simple, Moderate, Complex, Complex, Complex]);
        // 33.3 / 16.7 / 50.0: the .7 remainder wins the leftover point
        assert_eq!((d.simple, d.moderate, d.complex), (33, 17, 50));
        let d = complexity_distribution([Complex]);
        assert_eq!((d.simple, d.moderate, d.complex), (0, 0, 100));
    }

    #[test]
    fn average_over_buffered() {
        assert_eq!(mean_decision_time([]), 0.0);
        assert_eq!(mean_decision_time([1.0, 2.0, 6.0]), 3.0);
        // Where a plain sum overflows to infinity, the running mean does not.
        assert_eq!(mean_decision_time([f64::MAX, f64::MAX]), f64::MAX);
        assert_eq!(mean_decision_time([1e308, 1e308, 1e308]), 1e308);
    }

    #[test]
    fn recent_lists_newest_first_up_to_limit() {
        let v: Vec<RecordedDecision> = (0..30).map(|i| rec(i, Tier::Q2, 1.0, 0.0)).collect();
        let s = build_status(&v, 20, 10, &StatusCounters::default(), DateTime::UNIX_EPOCH);
        let ids: Vec<&str> = s.recent_decisions.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
        let s = build_status(&v, 20, 50, &StatusCounters::default(), DateTime::UNIX_EPOCH);
        assert_eq!(s.recent_decisions.len(), 30);
    }

    #[test]
    fn counters_pass_through() {
        let c = StatusCounters {
            total_decisions: 1234,
            total_processed: [1000, 200, 34],
            active_requests: [1, 2, 3],
        };
        let s = build_status([], 20, 10, &c, DateTime::UNIX_EPOCH);
        assert_eq!(s.total_decisions, 1234);
        let tp: Vec<u64> = s
            .tier_utilization
            .iter()
            .map(|u| u.total_processed)
            .collect();
        let ar: Vec<u64> = s
            .tier_utilization
            .iter()
            .map(|u| u.active_requests)
            .collect();
        assert_eq!(tp, vec![1000, 200, 34]);
        assert_eq!(ar, vec![1, 2, 3]);
    }

    proptest! {
        #[test]
        fn distribution_always_sums_to_100(s in 0u64..500, m in 0u64..500, c in 0u64..500) {
            prop_assume!(s + m + c > 0);
            let classes = std::iter::repeat_n(Complexity::Simple, s as usize)
                .chain(std::iter::repeat_n(Complexity::Moderate, m as usize))
                .chain(std::iter::repeat_n(Complexity::Complex, c as usize));
            let d = complexity_distribution(classes);
            prop_assert_eq!(d.simple + d.moderate + d.complex, 100);
            // each share is within one point of its exact value
            let n = (s + m + c) as f64;
            for (share, count) in [(d.simple, s), (d.moderate, m), (d.complex, c)] {
                prop_assert!((share as f64 - count as f64 * 100.0 / n).abs() < 1.0);
            }
        }

        #[test]
        fn utilization_is_bounded(tiers in proptest::collection::vec(0usize..3, 0..40)) {
            let u = tier_utilization(tiers.iter().map(|&i| Tier::ALL[i]));
            for x in u {
                prop_assert!((0.0..=100.0).contains(&x));
            }
            if !tiers.is_empty() {
                prop_assert!((u.iter().sum::<f64>() - 100.0).abs() < 1e-9);
            }
        }
    }
}
