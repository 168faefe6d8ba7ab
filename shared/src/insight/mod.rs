//! Routing insight: why a decision went where it went (its signals), and
//! what another Q4 threshold would have changed (shares, cost, calibration).
//!
//! The server answers `/api/orchestrator/calibrate` and the status's `cost`
//! with these functions; the panel's histogram and what-if slider run the
//! very same ones in the browser.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::api::{Mode, Usage};
use crate::{Complexity, MAX_SCORE, RoutingDecision, Tier};

mod cost;
mod whatif;
pub use cost::*;
pub use whatif::*;

/// The score from which two-stage routing sends a query to Q4 by default.
pub const DEFAULT_Q4_THRESHOLD: f64 = 7.0;
/// The most signals a decision may carry.
pub const MAX_SIGNALS: usize = 16;
/// The longest signal name, in characters.
pub const MAX_SIGNAL_NAME: usize = 32;
/// Histogram buckets: one per point of score, 0..1, 1..2, ... 14..15, and
/// the last one for exactly 15.
pub const BUCKETS: usize = 16;
/// A decision within this many points of a threshold is borderline.
pub const BORDERLINE: f64 = 0.5;
/// The thresholds the calibration curve lists: 0, 0.5, ... 15.
pub const CURVE_STEP: f64 = 0.5;
/// The most tokens one decision may report on each side (a billion: far
/// beyond any context window, and small enough that no sum overflows).
pub const MAX_DECISION_TOKENS: u64 = 1_000_000_000;
/// The largest weight (either sign) a signal may carry: far beyond the
/// 0..15 scale, and small enough that 16 of them always sum to a number.
pub const MAX_SIGNAL_WEIGHT: f64 = 1_000_000.0;
/// The highest price per million tokens accepted, in USD.
pub const MAX_PRICE: f64 = 1_000_000.0;

/// One reason for a score: a named feature and the points it added (or,
/// negative, took away). A decision's signals sum to its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signal {
    /// What was seen, at most 32 characters: `length`, `demanding verbs`...
    #[cfg_attr(
        feature = "openapi",
        schema(example = "technical vocabulary", min_length = 1, max_length = 32)
    )]
    pub name: String,
    /// Points it contributed (finite, within ±1000000).
    #[cfg_attr(
        feature = "openapi",
        schema(example = 1.5, minimum = -1_000_000.0, maximum = 1_000_000.0)
    )]
    pub weight: f64,
}

impl Signal {
    /// A signal of `weight` points.
    pub fn new(name: &str, weight: f64) -> Self {
        Signal {
            name: name.to_owned(),
            weight,
        }
    }
}

/// Why signals or token counts were refused; names the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum InsightError {
    /// More than [`MAX_SIGNALS`].
    TooManySignals(usize),
    /// A name empty, blank or over [`MAX_SIGNAL_NAME`] characters.
    SignalName(usize),
    /// A weight NaN, infinite or beyond ±[`MAX_SIGNAL_WEIGHT`].
    SignalWeight(usize),
    /// A token count over [`MAX_DECISION_TOKENS`].
    Tokens(u64),
}

impl InsightError {
    /// The wire name of the field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            InsightError::TooManySignals(_)
            | InsightError::SignalName(_)
            | InsightError::SignalWeight(_) => "signals",
            InsightError::Tokens(_) => "usage",
        }
    }
}

impl fmt::Display for InsightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsightError::TooManySignals(n) => {
                write!(f, "signals: at most {MAX_SIGNALS} allowed, got {n}")
            }
            InsightError::SignalName(i) => write!(
                f,
                "signals[{i}].name: must hold a visible character and at most {MAX_SIGNAL_NAME} characters"
            ),
            InsightError::SignalWeight(i) => write!(
                f,
                "signals[{i}].weight: must be a finite number in -{MAX_SIGNAL_WEIGHT}..={MAX_SIGNAL_WEIGHT}"
            ),
            InsightError::Tokens(n) => write!(
                f,
                "usage: token counts must be integers in 0..={MAX_DECISION_TOKENS}, got {n}"
            ),
        }
    }
}

impl std::error::Error for InsightError {}

/// Accepts at most 16 signals, each with a visible name of at most 32
/// characters and a finite weight within ±[`MAX_SIGNAL_WEIGHT`]. They need not sum to the score: a
/// router elsewhere may explain only part of it (the panel shows the rest
/// as unexplained).
pub fn validate_signals(signals: &[Signal]) -> Result<(), InsightError> {
    if signals.len() > MAX_SIGNALS {
        return Err(InsightError::TooManySignals(signals.len()));
    }
    for (i, s) in signals.iter().enumerate() {
        let visible = s.name.chars().any(|c| !crate::is_invisible(c));
        if !visible || s.name.chars().count() > MAX_SIGNAL_NAME {
            return Err(InsightError::SignalName(i));
        }
        if !(s.weight.is_finite() && s.weight.abs() <= MAX_SIGNAL_WEIGHT) {
            return Err(InsightError::SignalWeight(i));
        }
    }
    Ok(())
}

/// Accepts token counts of at most [`MAX_DECISION_TOKENS`] each.
pub fn validate_usage(usage: &Usage) -> Result<(), InsightError> {
    for n in [usage.prompt_tokens, usage.completion_tokens] {
        if n > MAX_DECISION_TOKENS {
            return Err(InsightError::Tokens(n));
        }
    }
    Ok(())
}

/// Accepts a Q4 threshold: finite, 0..=15.
pub fn valid_threshold(t: f64) -> bool {
    t.is_finite() && (0.0..=MAX_SCORE).contains(&t)
}

/// The score classes and the Q4 threshold a server routes by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Two-stage routing sends a score at or above this to Q4, below it to
    /// Q3 (`--q4-threshold`).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0.0, maximum = 15.0, example = 7.0)
    )]
    pub q4_threshold: f64,
    /// MODERATE from this score (SIMPLE below it).
    #[cfg_attr(feature = "openapi", schema(example = 3.0))]
    pub moderate_from: f64,
    /// COMPLEX from this score.
    #[cfg_attr(feature = "openapi", schema(example = 7.0))]
    pub complex_from: f64,
    /// Beyond the seed: how two-stage routing scores (`learned` or
    /// `heuristic`, `--scorer`); absent from an older server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "learned"))]
    pub scorer: Option<String>,
    /// Beyond the seed: the answer quality expected at `q4Threshold`,
    /// measured on labelled prompts; absent from an older server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_quality: Option<crate::quality::ExpectedQuality>,
}

impl Routing {
    /// The routing of a server with this Q4 threshold.
    pub fn new(q4_threshold: f64) -> Self {
        Routing {
            q4_threshold,
            moderate_from: Complexity::MODERATE_FROM,
            complex_from: Complexity::COMPLEX_FROM,
            scorer: None,
            expected_quality: None,
        }
    }

    /// The three thresholds a score is compared with: the two class ones,
    /// then the Q4 one (which may equal a class one).
    pub fn thresholds(&self) -> [f64; 3] {
        [self.moderate_from, self.complex_from, self.q4_threshold]
    }
}

impl Default for Routing {
    fn default() -> Self {
        Routing::new(DEFAULT_Q4_THRESHOLD)
    }
}

/// The tier two-stage routing picks for `score` with this Q4 threshold.
pub fn two_stage_tier(score: f64, q4_threshold: f64) -> Tier {
    if score >= q4_threshold {
        Tier::Q4
    } else {
        Tier::Q3
    }
}

/// Whether another threshold could have sent `d` elsewhere: every decision
/// except those on Q2 or made in simple mode (which never looks at the
/// score), council or benchmark mode (which ask fixed tiers). Decisions a
/// router elsewhere reported without a mode count as score-routed when they
/// went to Q3 or Q4.
pub fn score_routed(d: &RoutingDecision) -> bool {
    d.tier != Tier::Q2 && matches!(d.mode, None | Some(Mode::TwoStage))
}

/// Counts of the buffered decisions per score bucket (see [`BUCKETS`]).
pub fn histogram<'a>(decisions: impl IntoIterator<Item = &'a RoutingDecision>) -> [u64; BUCKETS] {
    let mut buckets = [0; BUCKETS];
    for d in decisions {
        buckets[bucket(d.score)] += 1;
    }
    buckets
}

/// The bucket of a valid score: its whole part, 15 for 15.
pub fn bucket(score: f64) -> usize {
    (score.max(0.0) as usize).min(BUCKETS - 1)
}

/// How many decisions lie within [`BORDERLINE`] points (inclusive) of any
/// of `thresholds`: a small change of score or threshold moves them.
pub fn borderline<'a>(
    decisions: impl IntoIterator<Item = &'a RoutingDecision>,
    thresholds: &[f64],
) -> usize {
    decisions
        .into_iter()
        .filter(|d| thresholds.iter().any(|t| (d.score - t).abs() <= BORDERLINE))
        .count()
}

#[cfg(test)]
mod tests;
