//! Whatever accepted decisions went in, the serialised status decodes as the
//! seed's `OrchestratorStatus` and every number in it is a finite JSON number.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::Value;
use shared::{
    MAX_DECISION_TIME_MS, OrchestratorStatus, RecordedDecision, RoutingDecision, StatusCounters,
    Tier, build_status,
};

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..=15.0f64,
        Just(-0.0),
        Just(0.0),
        Just(15.0),
        Just(f64::MIN_POSITIVE),
        Just(2.999_999_999_999_999_6),
    ]
}

fn decision_time() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..=MAX_DECISION_TIME_MS,
        Just(MAX_DECISION_TIME_MS),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
    ]
}

fn decision() -> impl Strategy<Value = (String, usize, f64, f64)> {
    (any::<String>(), 0usize..3, score(), decision_time())
}

/// Every number in `v` is finite and nothing is null (the seed's interface
/// has no nullable field).
fn assert_all_finite(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::Number(n) => {
            let x = n.as_f64().expect("a JSON number reads as f64");
            assert!(x.is_finite(), "{x} at {at}");
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_all_finite(item, &format!("{at}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                assert_all_finite(item, &format!("{at}.{k}"));
            }
        }
        Value::Bool(_) | Value::String(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_accepted_decisions_give_a_decodable_finite_status(
        input in proptest::collection::vec(decision(), 0..120),
        window in 1usize..=120,
        recent in 1usize..=120,
        totals in any::<[u32; 3]>(),
        active in any::<[u16; 3]>(),
    ) {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let recorded: Vec<RecordedDecision> = input
            .iter()
            .enumerate()
            .filter_map(|(i, (q, t, s, ms))| {
                let d = RoutingDecision::new(i.to_string(), q, Tier::ALL[*t], *s, at).ok()?;
                RecordedDecision::new(d, *ms).ok()
            })
            .collect();
        // Scores and times are always in range here, so only blank queries
        // were refused.
        prop_assert!(recorded.len() <= input.len());
        let counters = StatusCounters {
            total_decisions: totals.iter().map(|&t| u64::from(t)).sum(),
            total_processed: totals.map(u64::from),
            active_requests: active.map(u64::from),
        };
        let status = build_status(recorded.iter().rev(), window, recent, &counters, at);
        let text = serde_json::to_string(&status).unwrap();
        prop_assert!(!text.contains("-0.0"), "negative zero on the wire: {}", text);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_all_finite(&value, "$");
        let back: OrchestratorStatus = serde_json::from_str(&text).unwrap();
        prop_assert!(back.avg_decision_time_ms.is_finite());
        prop_assert!((0.0..=MAX_DECISION_TIME_MS).contains(&back.avg_decision_time_ms));
        for t in &back.tier_utilization {
            prop_assert!((0.0..=100.0).contains(&t.utilization_percent));
        }
        for d in &back.recent_decisions {
            prop_assert!(d.query.chars().count() <= 100);
            prop_assert!(d.query.chars().any(|c| !shared::is_invisible(c)));
        }
    }

    /// The reproduction of the hardening issue, generalised: the largest
    /// accepted decision times, as many as a buffer holds.
    #[test]
    fn the_largest_accepted_times_average_finitely(n in 1usize..=1000) {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let d = RoutingDecision::new("1".into(), "q", Tier::Q2, 1.0, at).unwrap();
        let all: Vec<RecordedDecision> = (0..n)
            .map(|_| RecordedDecision::new(d.clone(), MAX_DECISION_TIME_MS).unwrap())
            .collect();
        let s = build_status(all.iter(), 20, 10, &StatusCounters::default(), at);
        prop_assert!((s.avg_decision_time_ms - MAX_DECISION_TIME_MS).abs() < 1e-6);
    }
}
