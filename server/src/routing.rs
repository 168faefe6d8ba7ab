//! The query router: which tier a query goes to, and why.
//!
//! `simple` mode sends everything to the fast tier, as the seed did.
//! `two-stage` mode scores the text with [`assess_complexity`] (stage 1) and
//! sends it to the balanced tier below 7 points and to the powerful tier from 7
//! on (stage 2).
//!
//! The assessor is a deterministic, explainable heuristic, not a model: the
//! same text always gets the same score, and each point can be traced to a
//! feature below. It adds up, each part capped so no single feature dominates:
//!
//! | feature | why it signals effort | points |
//! | --- | --- | --- |
//! | length: one point per 15 words | long prompts carry more context to reason over | <= 3 |
//! | demanding verbs (design, prove, derive, implement, optimise, analyse, compare, refactor, debug, trade-off...) | they ask for synthesis, not recall | 1.5 each, <= 4.5 |
//! | technical vocabulary (algorithm, distributed, concurrency, theorem, invariant, latency, consensus...) | specialist domains need the larger models | 0.75 each, <= 3 |
//! | several parts (more than one `?`, list items, "then", "also", "finally", "step by step") | every extra part is another task | 0.75 each, <= 3 |
//! | code (code fences, "code", "function", "program", "in rust"...) | generating working code is costly to get right | 2.5 |
//! | hard constraints ("must", "without", "at least", "at most", "guarantee", "O(") | constraints must be checked, not just met loosely | 0.5 each, <= 1 |
//!
//! The total is capped at 15. "What is Python?" scores 0.2 (SIMPLE); "Design
//! a distributed rate limiter, prove it is fair, then implement it in Rust"
//! scores well above 7 (COMPLEX).

use shared::Tier;
pub use shared::api::{Mode, QueryRequest, QueryResponse};
use std::time::Instant;

/// A chosen tier before it is recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Where the query goes.
    pub tier: Tier,
    /// Its complexity score.
    pub score: f64,
    /// How long choosing took, in milliseconds.
    pub decision_time_ms: f64,
}

/// Picks the tier for `query` in `mode`.
pub fn route(query: &str, mode: Mode) -> Route {
    match mode {
        Mode::Simple => Route {
            tier: Tier::Q2,
            score: 0.0,
            decision_time_ms: 0.0,
        },
        Mode::TwoStage => {
            let started = Instant::now();
            let score = assess_complexity(query);
            Route {
                tier: mode.tier_for(score),
                score,
                decision_time_ms: started.elapsed().as_secs_f64() * 1_000.0,
            }
        }
    }
}

const DEMANDING: &[&str] = &[
    "design",
    "architect",
    "prove",
    "proof",
    "derive",
    "implement",
    "optimi",
    "analy",
    "evaluat",
    "compar",
    "refactor",
    "debug",
    "formali",
    "benchmark",
    "justif",
    "trade-off",
    "tradeoff",
];

const TECHNICAL: &[&str] = &[
    "algorithm",
    "complexity",
    "distributed",
    "concurren",
    "consisten",
    "theorem",
    "lemma",
    "invariant",
    "latency",
    "throughput",
    "scalab",
    "database",
    "protocol",
    "compiler",
    "kernel",
    "cryptograph",
    "consensus",
    "asymptotic",
    "lock-free",
    "fault-toleran",
    "transaction",
    "parallel",
    "memory",
    "security",
];

const CONNECTORS: &[&str] = &["then", "also", "additionally", "finally", "furthermore"];
const CODE_WORDS: &[&str] = &["code", "function", "program", "script", "snippet", "api"];
const LANGUAGES: &[&str] = &["rust", "python", "java", "c++", "go", "typescript", "sql"];
const CONSTRAINTS: &[&str] = &["must", "without", "guarantee"];

/// The complexity score (0..=15) of a query; see the module docs.
pub fn assess_complexity(query: &str) -> f64 {
    let lower = query.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '+'))
        .filter(|w| !w.is_empty())
        .collect();

    let length = (words.len() as f64 / 15.0).min(3.0);
    let demanding = distinct_stems(&words, DEMANDING) as f64 * 1.5;
    let technical = distinct_stems(&words, TECHNICAL) as f64 * 0.75;

    let questions = query.matches('?').count().saturating_sub(1);
    let list_items = query
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("- ")
                || t.starts_with("* ")
                || t.split_once(['.', ')'])
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .count();
    let connectors = words.iter().filter(|w| CONNECTORS.contains(w)).count()
        + lower.matches("step by step").count();
    let parts = (questions + list_items + connectors) as f64 * 0.75;

    let asks_for_code = query.contains("```")
        || words.iter().any(|w| CODE_WORDS.contains(w))
        || words
            .windows(2)
            .any(|p| p[0] == "in" && LANGUAGES.contains(&p[1]));
    let code = if asks_for_code { 2.5 } else { 0.0 };

    let constraint_hits = words.iter().filter(|w| CONSTRAINTS.contains(w)).count()
        + lower.matches("at least").count()
        + lower.matches("at most").count()
        + query.matches("O(").count();
    let constraints = constraint_hits as f64 * 0.5;

    let total = length
        + demanding.min(4.5)
        + technical.min(3.0)
        + parts.min(3.0)
        + code
        + constraints.min(1.0);
    // Round to hundredths so the score reads cleanly; capped at the scale's top.
    ((total * 100.0).round() / 100.0).min(shared::MAX_SCORE)
}

/// How many of `stems` some word starts with (each stem counted once).
fn distinct_stems(words: &[&str], stems: &[&str]) -> usize {
    stems
        .iter()
        .filter(|stem| words.iter().any(|w| w.starts_with(*stem)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Complexity;

    #[test]
    fn example_queries_score_from_trivial_to_demanding() {
        let table: &[(&str, Complexity)] = &[
            ("What is Python?", Complexity::Simple),
            ("hi", Complexity::Simple),
            ("Translate 'good morning' into French", Complexity::Simple),
            (
                "Explain the difference between TCP and UDP",
                Complexity::Simple,
            ),
            (
                "Compare B-trees and LSM-trees for a write-heavy database and explain the trade-offs",
                Complexity::Moderate,
            ),
            (
                "Write a function in Python that parses a CSV file and returns the rows as dictionaries",
                Complexity::Moderate,
            ),
            (
                "Analyse the latency of this service. Then suggest how to improve throughput?",
                Complexity::Moderate,
            ),
            (
                "Design a distributed rate limiter for a multi-region API, prove that it is fair \
                 under concurrent load, then implement it in Rust with tests.",
                Complexity::Complex,
            ),
            (
                "1. Derive the asymptotic complexity of the algorithm below.\n\
                 2. Prove the loop invariant holds.\n\
                 3. Implement an optimised version that must run in O(n log n) without extra memory.",
                Complexity::Complex,
            ),
        ];
        for (query, want) in table {
            let score = assess_complexity(query);
            assert!((0.0..=15.0).contains(&score), "{query}: {score}");
            assert_eq!(
                Complexity::from_score(score),
                *want,
                "{query:?} scored {score}"
            );
        }
    }

    #[test]
    fn what_is_python_is_trivial() {
        assert!(assess_complexity("What is Python?") < 1.0);
    }

    #[test]
    fn assessment_is_deterministic_and_capped() {
        let q = "Design, prove, derive, implement, optimise and analyse a distributed, \
                 concurrent, fault-tolerant consensus algorithm; then also benchmark it, \
                 finally write code in Rust that must run in O(n) without locks. "
            .repeat(20);
        assert_eq!(assess_complexity(&q), assess_complexity(&q));
        assert_eq!(assess_complexity(&q), 15.0);
        assert_eq!(assess_complexity(""), 0.0);
    }

    #[test]
    fn simple_mode_is_fast_with_zero_score_and_time() {
        let r = route(
            "Design a distributed system and prove it correct",
            Mode::Simple,
        );
        assert_eq!(
            r,
            Route {
                tier: Tier::Q2,
                score: 0.0,
                decision_time_ms: 0.0
            }
        );
    }

    #[test]
    fn two_stage_goes_to_balanced_or_powerful_by_the_threshold() {
        let easy = route("What is Python?", Mode::TwoStage);
        assert_eq!(easy.tier, Tier::Q3);
        assert!(easy.decision_time_ms >= 0.0);
        let hard = route(
            "Design a distributed rate limiter, prove it is fair under concurrent load, \
             then implement it in Rust with tests",
            Mode::TwoStage,
        );
        assert_eq!(hard.tier, Tier::Q4);
        assert!(hard.score >= 7.0);
    }
}
