//! Deterministic mock status for the panel's fallback when the API is down.

use chrono::{DateTime, Duration, Utc};

use crate::api::Mode;
use crate::insight::DEFAULT_Q4_THRESHOLD;
use crate::{
    DEFAULT_WINDOW, OrchestratorStatus, RecordedDecision, RoutingDecision, StatusCounters,
    build_status,
};

const SAMPLE_QUERIES: [&str; 8] = [
    "What is Python?",
    "Summarise this paragraph in one sentence",
    "Explain the difference between TCP and UDP",
    "Write a function that merges two sorted lists",
    "Compare B-trees and LSM-trees for a write-heavy workload",
    "Design a rate limiter for a distributed API and prove it is fair",
    "Translate 'good morning' into French",
    "Derive the time complexity of quicksort and implement it in Rust",
];

/// How many decisions a mock status is built from.
const MOCK_DECISIONS: usize = 40;

/// A plausible status computed by the same math as the live one, from a seed:
/// the same seed and time always give the same status. The decisions follow
/// the router's rules: `simple` ones go to Q2 with score 0 and no decision
/// time, `two-stage` ones to Q3 or Q4 by score (never Q2). The panel makes
/// one per page and keeps it, so fake numbers never tick as if alive.
pub fn mock_status(seed: u64, now: DateTime<Utc>) -> OrchestratorStatus {
    let mut rng = SplitMix64(seed);
    let mut counters = StatusCounters::default();
    let decisions: Vec<RecordedDecision> = (0..MOCK_DECISIONS)
        .map(|i| {
            let mode = if rng.next().is_multiple_of(3) {
                Mode::Simple
            } else {
                Mode::TwoStage
            };
            let (score, ms) = match mode {
                Mode::Simple | Mode::Council | Mode::Benchmark => (0.0, 0.0),
                // tenths of a point, 0.0..=15.0; hundredths of a ms
                Mode::TwoStage => (
                    (rng.next() % 151) as f64 / 10.0,
                    (rng.next() % 40 + 1) as f64 / 100.0,
                ),
            };
            let tier = mode.tier_for(score, DEFAULT_Q4_THRESHOLD);
            let query = SAMPLE_QUERIES[(rng.next() % SAMPLE_QUERIES.len() as u64) as usize];
            let at = now - Duration::milliseconds(i as i64 * 1_500 + (rng.next() % 900) as i64);
            let seq = (MOCK_DECISIONS - i) as u64;
            let id = format!("mock-{seed}-{seq}");
            let decision = RoutingDecision::from_kept(id, query, tier, score, at)
                .expect("mock scores and queries are valid by construction")
                .with_seq(seq, Some(mode));
            counters.total_processed[tier.index()] += 1;
            RecordedDecision::new(decision, ms).expect("mock times are valid by construction")
        })
        .collect();
    for (i, total) in counters.total_processed.iter_mut().enumerate() {
        counters.active_requests[i] = rng.next() % 4;
        // Two-stage never reaches Q2, so Q2's all-time count comes from
        // simple-mode decisions only, as the buffered ones do.
        *total += 100 + seed % 50 + i as u64 * 7;
    }
    counters.total_decisions = counters.total_processed.iter().sum();
    // All of them listed: the panel's histogram and what-if cover its buffer.
    build_status(&decisions, DEFAULT_WINDOW, MOCK_DECISIONS, &counters, now)
}

/// A tiny, well-mixed PRNG; good enough for believable fake numbers.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tier;

    #[test]
    fn mock_is_deterministic_and_obeys_the_rules() {
        let now = DateTime::UNIX_EPOCH + Duration::days(20_000);
        let a = mock_status(7, now);
        assert_eq!(a, mock_status(7, now));
        assert_ne!(a, mock_status(8, now));
        assert_eq!(a.tier_utilization.len(), 3);
        assert_eq!(a.recent_decisions.len(), MOCK_DECISIONS);
        let d = a.complexity_distribution;
        assert_eq!(d.simple + d.moderate + d.complex, 100);
        let processed: u64 = a.tier_utilization.iter().map(|t| t.total_processed).sum();
        assert_eq!(processed, a.total_decisions);
        let util: f64 = a
            .tier_utilization
            .iter()
            .map(|t| t.utilization_percent)
            .sum();
        assert!((util - 100.0).abs() < 1e-9);
        assert!(
            a.recent_decisions
                .windows(2)
                .all(|w| w[0].timestamp >= w[1].timestamp && w[0].seq > w[1].seq),
            "newest first"
        );
    }

    #[test]
    fn mock_decisions_follow_the_routing_rules() {
        for seed in 0..200 {
            let s = mock_status(seed, DateTime::UNIX_EPOCH);
            for d in &s.recent_decisions {
                match d.mode {
                    Some(Mode::TwoStage) => {
                        assert_ne!(d.tier, Tier::Q2, "two-stage never routes to Q2: {d:?}");
                        assert_eq!(
                            d.tier,
                            Mode::TwoStage.tier_for(d.score, DEFAULT_Q4_THRESHOLD)
                        );
                    }
                    Some(Mode::Simple) => {
                        assert_eq!(
                            (d.tier, d.score, d.decision_time_ms),
                            (Tier::Q2, 0.0, Some(0.0))
                        );
                    }
                    Some(other) => panic!("the mock makes no {} decisions", other.name()),
                    None => panic!("every mock decision has a mode"),
                }
                assert_eq!(d.tier_name, d.tier.internal_name());
            }
        }
    }
}
