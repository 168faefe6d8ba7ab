//! The heuristic scorer: a hand-written keyword table, deterministic and
//! explainable, not a model: the same text always gets the same score, and
//! each point can be traced to a feature below. It adds up, each part capped so
//! no single feature dominates:
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

use std::sync::LazyLock;

use memchr::memmem::Finder;
use shared::Signal;

/// A score and the signals it is the sum of.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// 0..=15.
    pub score: f64,
    /// Each feature that added points (in hundredths), in the table's
    /// order; `cap at 15` takes back what lies beyond the scale.
    pub signals: Vec<Signal>,
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
    assess(query).score
}

/// The score of a query and the signals that make it; see the module docs.
pub fn assess(query: &str) -> Assessment {
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
    let phrases = &*PHRASES;
    let connectors = words.iter().filter(|w| CONNECTORS.contains(w)).count()
        + count(&phrases.step_by_step, &lower);
    let parts = (questions + list_items + connectors) as f64 * 0.75;

    let asks_for_code = count(&phrases.code_fence, query) > 0
        || words.iter().any(|w| CODE_WORDS.contains(w))
        || words
            .windows(2)
            .any(|p| p[0] == "in" && LANGUAGES.contains(&p[1]));
    let code = if asks_for_code { 2.5 } else { 0.0 };

    let constraint_hits = words.iter().filter(|w| CONSTRAINTS.contains(w)).count()
        + count(&phrases.at_least, &lower)
        + count(&phrases.at_most, &lower)
        + count(&phrases.big_o, query);
    let constraints = constraint_hits as f64 * 0.5;

    // Each part in hundredths, so the parts read cleanly and their sum is
    // the score exactly (up to the last bit of a float).
    let signals: Vec<Signal> = [
        ("length", length),
        ("demanding verbs", demanding.min(4.5)),
        ("technical vocabulary", technical.min(3.0)),
        ("several parts", parts.min(3.0)),
        ("code", code),
        ("constraints", constraints.min(1.0)),
    ]
    .into_iter()
    .map(|(name, points)| (name, hundredths(points)))
    .filter(|(_, points)| *points > 0.0)
    .map(|(name, points)| Signal::new(name, points))
    .collect();
    on_the_scale(signals)
}

/// The assessment whose score is the sum of `signals`, put on the 0..=15
/// scale: a sum beyond it gets a `cap at 15` (or `floor at 0`) signal that
/// takes back the excess, so the signals still sum to the score.
pub(crate) fn on_the_scale(mut signals: Vec<Signal>) -> Assessment {
    let total = hundredths(signals.iter().map(|s| s.weight).sum());
    let score = total.clamp(0.0, shared::MAX_SCORE);
    if total > score {
        signals.push(Signal::new("cap at 15", hundredths(score - total)));
    } else if total < score {
        signals.push(Signal::new("floor at 0", hundredths(score - total)));
    }
    Assessment { score, signals }
}

/// The phrases the heuristic counts, each searcher built once: setting one
/// up for every query cost more than searching a short query.
struct Phrases {
    step_by_step: Finder<'static>,
    code_fence: Finder<'static>,
    at_least: Finder<'static>,
    at_most: Finder<'static>,
    big_o: Finder<'static>,
}

static PHRASES: LazyLock<Phrases> = LazyLock::new(|| Phrases {
    step_by_step: Finder::new("step by step"),
    code_fence: Finder::new("```"),
    at_least: Finder::new("at least"),
    at_most: Finder::new("at most"),
    big_o: Finder::new("O("),
});

/// How often `phrase` occurs in `text`, as `text.matches(phrase).count()`
/// counts it (no overlaps).
fn count(phrase: &Finder<'_>, text: &str) -> usize {
    phrase.find_iter(text.as_bytes()).count()
}

/// `x` rounded to hundredths, the unit signals are given in.
pub(crate) fn hundredths(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
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
            assert_sums_to_score(&assess(query));
            assert!((0.0..=15.0).contains(&score), "{query}: {score}");
            assert_eq!(
                Complexity::from_score(score),
                *want,
                "{query:?} scored {score}"
            );
        }
    }

    /// The signals add up to the score, each is named and positive but
    /// for the cap, and no signal is listed twice.
    fn assert_sums_to_score(a: &Assessment) {
        let sum: f64 = a.signals.iter().map(|s| s.weight).sum();
        assert!((sum - a.score).abs() < 1e-9, "{a:?}");
        assert!(shared::insight::validate_signals(&a.signals).is_ok());
        for s in &a.signals {
            assert!(s.weight > 0.0 || s.name == "cap at 15", "{a:?}");
            assert_eq!(s.weight, hundredths(s.weight));
        }
        let mut names: Vec<&str> = a.signals.iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), a.signals.len());
    }

    #[test]
    fn signals_name_what_made_the_score() {
        let a = assess("What is Python?");
        assert_eq!(a.signals, vec![Signal::new("length", 0.2)]);
        let a = assess(
            "Design a distributed rate limiter for a multi-region API, prove that it is fair \
             under concurrent load, then implement it in Rust with tests.",
        );
        let names: Vec<&str> = a.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "length",
                "demanding verbs",
                "technical vocabulary",
                "several parts",
                "code"
            ]
        );
        assert_sums_to_score(&a);
        // Beyond the scale: the cap is a signal of its own.
        let huge = assess(
            &"Design, prove, derive, implement, optimise and analyse a distributed, \
                 concurrent, fault-tolerant consensus algorithm; then also benchmark it, \
                 finally write code in Rust that must run in O(n) without locks. "
                .repeat(20),
        );
        assert_eq!(huge.score, 15.0);
        assert_eq!(huge.signals.last().unwrap().name, "cap at 15");
        assert_sums_to_score(&huge);
    }

    proptest::proptest! {
        #[test]
        fn a_phrase_is_counted_as_a_plain_search_counts_it(q in "(cat|at|least|most|step|by|o\\(|O|\\(|`|x| ){0,24}") {
            let p = &*PHRASES;
            for phrase in [&p.step_by_step, &p.code_fence, &p.at_least, &p.at_most, &p.big_o] {
                let needle = std::str::from_utf8(phrase.needle()).unwrap();
                proptest::prop_assert_eq!(count(phrase, &q), q.matches(needle).count());
            }
        }

        /// For any text, the signals sum to the score.
        #[test]
        fn signals_sum_to_the_score_for_any_text(q in "(\\PC|\\n|[?.)] |design |prove |algorithm |then |code |must |at most |O\\(|```){0,80}") {
            assert_sums_to_score(&assess(&q));
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
}
