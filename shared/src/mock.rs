//! Deterministic mock status for the panel's fallback when the API is down.

use chrono::{DateTime, Duration, Utc};

use crate::{
    DEFAULT_RECENT, DEFAULT_WINDOW, OrchestratorStatus, RecordedDecision, RoutingDecision,
    StatusCounters, Tier, build_status,
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
/// the same seed and time always give the same status; a new seed (say, the
/// poll count) moves the numbers so the fallback visibly lives.
pub fn mock_status(seed: u64, now: DateTime<Utc>) -> OrchestratorStatus {
    let mut rng = SplitMix64(seed);
    let mut counters = StatusCounters::default();
    let decisions: Vec<RecordedDecision> = (0..MOCK_DECISIONS)
        .map(|i| {
            // tenths of a point, 0.0..=15.0
            let score = (rng.next() % 151) as f64 / 10.0;
            let tier = if score < 3.0 {
                Tier::Q2
            } else if score < 7.0 {
                Tier::Q3
            } else {
                Tier::Q4
            };
            let query = SAMPLE_QUERIES[(rng.next() % SAMPLE_QUERIES.len() as u64) as usize];
            let at = now - Duration::milliseconds(i as i64 * 1_500 + (rng.next() % 900) as i64);
            let id = format!("mock-{seed}-{i}");
            let decision = RoutingDecision::new(id, query, tier, score, at)
                .expect("mock scores and queries are valid by construction");
            let ms = (rng.next() % 4_000) as f64 / 100.0;
            counters.total_processed[tier.index()] += 1;
            RecordedDecision::new(decision, ms).expect("mock times are valid by construction")
        })
        .collect();
    for (i, total) in counters.total_processed.iter_mut().enumerate() {
        *total += 100 + seed % 50 + i as u64 * 7;
        counters.active_requests[i] = rng.next() % 4;
    }
    counters.total_decisions = counters.total_processed.iter().sum();
    build_status(&decisions, DEFAULT_WINDOW, DEFAULT_RECENT, &counters, now)
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

    #[test]
    fn mock_is_deterministic_and_obeys_the_rules() {
        let now = DateTime::UNIX_EPOCH + Duration::days(20_000);
        let a = mock_status(7, now);
        assert_eq!(a, mock_status(7, now));
        assert_ne!(a, mock_status(8, now));
        assert_eq!(a.tier_utilization.len(), 3);
        assert_eq!(a.recent_decisions.len(), DEFAULT_RECENT);
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
                .all(|w| w[0].timestamp >= w[1].timestamp),
            "newest first"
        );
    }
}
