//! The query router: which tier a query goes to, and why.
//!
//! `simple` mode sends everything to the fast tier, as the seed did.
//! `two-stage` mode scores the text with the configured [`Scorer`] (stage 1)
//! and sends it to the balanced tier below the Q4 threshold (7 by default)
//! and to the powerful tier from it on (stage 2). The default scorer is the
//! learned one ([`crate::scorer`]); the heuristic is [`crate::heuristic`].

pub use crate::heuristic::{Assessment, assess, assess_complexity};
pub use shared::api::{Mode, QueryRequest, QueryResponse};
use shared::{Signal, Tier};
use std::time::Instant;

/// A chosen tier before it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Where the query goes.
    pub tier: Tier,
    /// Its complexity score.
    pub score: f64,
    /// How long choosing took, in milliseconds.
    pub decision_time_ms: f64,
    /// Why: the signals that sum to the score (none in simple mode).
    pub signals: Option<Vec<Signal>>,
}

/// Picks the tier for `query` in `mode`; two-stage sends a score at or
/// above `q4_threshold` to Q4.
pub fn route(query: &str, mode: Mode, q4_threshold: f64, scorer: Scorer) -> Route {
    match mode {
        Mode::Simple => Route {
            tier: Tier::Q2,
            score: 0.0,
            decision_time_ms: 0.0,
            signals: None,
        },
        // Council and benchmark ask fixed tiers: the score only explains
        // the query (the caller picks each member's tier).
        Mode::TwoStage | Mode::Council | Mode::Benchmark => {
            let started = Instant::now();
            let Assessment { score, signals } = scorer.assess(query);
            Route {
                tier: mode.tier_for(score, q4_threshold),
                score,
                decision_time_ms: started.elapsed().as_secs_f64() * 1_000.0,
                signals: Some(signals),
            }
        }
    }
}

/// Which scorer two-stage routing uses (`--scorer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scorer {
    /// The linear model trained on labelled prompts and embedded in the
    /// binary ([`crate::scorer`]).
    #[default]
    Learned,
    /// The hand-written keyword table of this module.
    Heuristic,
}

impl Scorer {
    /// The score of `query` and the signals that make it.
    pub fn assess(self, query: &str) -> Assessment {
        match self {
            Scorer::Learned => crate::scorer::embedded().assess(query),
            Scorer::Heuristic => assess(query),
        }
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scorer::Learned => "learned",
            Scorer::Heuristic => "heuristic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_mode_is_fast_with_zero_score_and_time() {
        let r = route(
            "Design a distributed system and prove it correct",
            Mode::Simple,
            7.0,
            Scorer::Heuristic,
        );
        assert_eq!(
            r,
            Route {
                tier: Tier::Q2,
                score: 0.0,
                decision_time_ms: 0.0,
                signals: None,
            }
        );
    }

    #[test]
    fn two_stage_goes_to_balanced_or_powerful_by_the_threshold() {
        let easy = route("What is Python?", Mode::TwoStage, 7.0, Scorer::Heuristic);
        assert_eq!(easy.tier, Tier::Q3);
        assert!(easy.decision_time_ms >= 0.0);
        let demanding = "Design a distributed rate limiter, prove it is fair under concurrent \
             load, then implement it in Rust with tests";
        let hard = route(demanding, Mode::TwoStage, 7.0, Scorer::Heuristic);
        assert_eq!(hard.tier, Tier::Q4);
        assert!(hard.score >= 7.0);
        // The threshold is the server's to set: the same query to Q3 at 14.
        let strict = route(demanding, Mode::TwoStage, 14.0, Scorer::Heuristic);
        assert_eq!((strict.tier, strict.score), (Tier::Q3, hard.score));
    }
}
