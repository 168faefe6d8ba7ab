//! Any text and score: the decision constructor accepts exactly what the
//! rules allow, keeps a visible text cut at a grapheme boundary (the same cut
//! as a walk over every grapheme), stores no -0, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{Complexity, RoutingDecision, Tier};
use unicode_segmentation::UnicodeSegmentation as _;

fuzz_target!(|input: (&str, f64, u8)| {
    let (query, score, tier) = input;
    let tier = Tier::ALL[usize::from(tier) % 3];
    match RoutingDecision::new("id".into(), query, tier, score, chrono::DateTime::UNIX_EPOCH) {
        Ok(d) => {
            assert!(query.starts_with(&d.query));
            assert!(d.query.chars().count() <= 100);
            assert!(d.query.chars().any(|c| !shared::is_invisible(c)));
            let mut walked = 0;
            let mut chars = 0;
            for g in query.graphemes(true) {
                chars += g.chars().count();
                if chars > 100 {
                    break;
                }
                walked += g.len();
            }
            assert_eq!(d.query, &query[..walked]);
            assert!(score.is_finite() && (0.0..=15.0).contains(&score));
            assert!(d.score.is_sign_positive());
            assert_eq!(d.complexity, Complexity::from_score(score));
        }
        Err(e) => assert!(e.field() == "query" || e.field() == "score"),
    }
    let _ = server::routing::assess_complexity(query);
});
