//! Any text and score: the decision constructor accepts exactly what the
//! rules allow, cuts on a character boundary, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{Complexity, RoutingDecision, Tier};

fuzz_target!(|input: (&str, f64, u8)| {
    let (query, score, tier) = input;
    let tier = Tier::ALL[usize::from(tier) % 3];
    match RoutingDecision::new("id".into(), query, tier, score, chrono::DateTime::UNIX_EPOCH) {
        Ok(d) => {
            assert!(query.starts_with(&d.query));
            assert!(d.query.chars().count() <= 100);
            assert!(score.is_finite() && (0.0..=15.0).contains(&score));
            assert_eq!(d.complexity, Complexity::from_score(score));
        }
        Err(e) => assert!(e.field() == "query" || e.field() == "score"),
    }
    let _ = server::routing::assess_complexity(query);
});
