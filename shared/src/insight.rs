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

/// Prices of one tier, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// USD per million prompt tokens.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, example = 0.15))]
    pub input_per_million: f64,
    /// USD per million completion tokens.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, example = 0.6))]
    pub output_per_million: f64,
}

impl Price {
    /// Accepts finite prices in 0..=[`MAX_PRICE`].
    pub fn new(input_per_million: f64, output_per_million: f64) -> Option<Self> {
        let ok = |p: f64| p.is_finite() && (0.0..=MAX_PRICE).contains(&p);
        (ok(input_per_million) && ok(output_per_million)).then_some(Price {
            input_per_million: input_per_million + 0.0,
            output_per_million: output_per_million + 0.0,
        })
    }

    /// What `prompt` and `completion` tokens cost at this price, in USD.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.input_per_million + completion as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// The price of each tier, where one is known; indexed by [`Tier::index`].
pub type Prices = [Option<Price>; 3];

/// Tokens of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Decisions that reported them.
    pub decisions: u64,
}

impl Tokens {
    /// Adds one decision's usage.
    pub fn add(&mut self, usage: &Usage) {
        self.prompt = self.prompt.saturating_add(usage.prompt_tokens);
        self.completion = self.completion.saturating_add(usage.completion_tokens);
        self.decisions += 1;
    }

    /// Adds another count (another instance's).
    pub fn merge(&mut self, other: &Tokens) {
        self.prompt = self.prompt.saturating_add(other.prompt);
        self.completion = self.completion.saturating_add(other.completion);
        self.decisions = self.decisions.saturating_add(other.decisions);
    }
}

/// The status's `cost`: tokens per tier since start, and with prices what
/// they cost, what the same tokens would have cost all on Q4, and the
/// saving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CostSummary {
    /// Always `USD`.
    #[cfg_attr(feature = "openapi", schema(example = "USD"))]
    pub currency: String,
    /// Q2, Q3, Q4.
    pub tiers: Vec<TierCost>,
    /// Spent since start; absent when a tier with tokens has no price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_usd: Option<f64>,
    /// What one Q4 answer per query would have cost (a single-tier answer's
    /// tokens at Q4; for a council or benchmark query one answer's, its Q4
    /// member's tokens when it has one); absent without a Q4 price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_on_q4_usd: Option<f64>,
    /// `allOnQ4Usd - spentUsd`, when both are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_usd: Option<f64>,
    /// The saving in percent of `allOnQ4Usd` (0 when that is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saving_percent: Option<f64>,
    /// The model assessor's calls to the fast tier (`--assessor model`):
    /// their tokens and, at Q2's price, their cost, which `spentUsd`
    /// includes; absent when it took none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessor: Option<TierCost>,
}

/// Tokens and cost of one tier since start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TierCost {
    /// Which tier.
    pub tier: Tier,
    /// Prompt tokens since start.
    pub prompt_tokens: u64,
    /// Completion tokens since start.
    pub completion_tokens: u64,
    /// Decisions that reported token counts.
    pub decisions_with_usage: u64,
    /// The tier's price (`--price`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// What its tokens cost, when priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_usd: Option<f64>,
}

/// The cost summary of these tokens at these prices, weighed against
/// `baseline`: the tokens one Q4 answer per query would have taken (each
/// single-tier answer's own tokens; for a council or benchmark query, one
/// answer's, see [`group_baseline`]), priced at Q4. A group's spend is all
/// its members' (and moderator's) tokens, so a group can cost more than
/// its baseline: a negative saving.
/// The model assessor's `assessor` tokens, taken on the fast tier, are
/// priced at Q2 into the spend, apart from the tiers' answers.
pub fn cost_summary(
    tokens: &[Tokens; 3],
    baseline: &Tokens,
    assessor: &Tokens,
    prices: &Prices,
) -> CostSummary {
    let priced = |tier: Tier, t: &Tokens| {
        let price = prices[tier.index()];
        TierCost {
            tier,
            prompt_tokens: t.prompt,
            completion_tokens: t.completion,
            decisions_with_usage: t.decisions,
            price,
            spent_usd: price.map(|p| p.cost(t.prompt, t.completion)),
        }
    };
    let tiers: Vec<TierCost> = Tier::ALL
        .iter()
        .map(|&tier| priced(tier, &tokens[tier.index()]))
        .collect();
    let assessor =
        (assessor.prompt > 0 || assessor.completion > 0).then(|| priced(Tier::Q2, assessor));
    let spent = tiers.iter().chain(&assessor).try_fold(0.0, |sum, t| {
        let used = t.prompt_tokens > 0 || t.completion_tokens > 0;
        match (t.spent_usd, used) {
            (Some(s), _) => Some(sum + s),
            (None, false) => Some(sum),
            (None, true) => None,
        }
    });
    let all_on_q4 = prices[Tier::Q4.index()].map(|p| p.cost(baseline.prompt, baseline.completion));
    let (saved, percent) = match (spent, all_on_q4) {
        (Some(s), Some(q4)) => (Some(q4 - s), Some(saving_percent(s, q4))),
        _ => (None, None),
    };
    CostSummary {
        currency: "USD".into(),
        tiers,
        spent_usd: spent,
        all_on_q4_usd: all_on_q4,
        saved_usd: saved,
        saving_percent: percent,
        assessor,
    }
}

/// The tokens one Q4 answer to a group query would take, from its members'
/// usage (`(tier, usage)` of each member that reported it): its Q4
/// member's, when it has one; else the members' mean (one answer's worth);
/// `None` when no member reported usage.
pub fn group_baseline(members: &[(Tier, Usage)]) -> Option<Usage> {
    if let Some((_, u)) = members.iter().find(|(t, _)| *t == Tier::Q4) {
        return Some(*u);
    }
    let n = members.len() as u64;
    (n > 0).then(|| Usage {
        prompt_tokens: members.iter().map(|(_, u)| u.prompt_tokens).sum::<u64>() / n,
        completion_tokens: members
            .iter()
            .map(|(_, u)| u.completion_tokens)
            .sum::<u64>()
            / n,
    })
}

/// The saving of `spent` against `all_on_q4`, in percent; 0 when the
/// latter is 0.
pub fn saving_percent(spent: f64, all_on_q4: f64) -> f64 {
    if all_on_q4 > 0.0 {
        (all_on_q4 - spent) / all_on_q4 * 100.0
    } else {
        0.0
    }
}

/// The buffered decisions as a what-if sees them: those that keep their
/// tier whatever the threshold, and the score-routed ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Population {
    /// Decisions that keep their tier, with their token counts.
    fixed: Vec<(Tier, Option<Usage>)>,
    /// Score-routed decisions with the tier they went to and their token
    /// counts. Not sorted: the panel's slider counts a few hundred at most,
    /// and leaving sorting to calibration keeps it out of the WASM.
    routed: Vec<(f64, Tier, Option<Usage>)>,
}

/// What the buffered decisions would have been at one Q4 threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhatIf {
    /// The threshold.
    pub threshold: f64,
    /// Decisions per tier, indexed by [`Tier::index`].
    pub counts: [usize; 3],
    /// All decisions.
    pub total: usize,
    /// What the decisions with token counts would have cost; `None` when
    /// one of them would land on a tier without a price.
    pub cost_usd: Option<f64>,
    /// What they would have cost all on Q4; `None` without a Q4 price.
    pub all_on_q4_usd: Option<f64>,
}

impl WhatIf {
    /// A tier's share in percent (0 when there are no decisions).
    pub fn percent(&self, tier: Tier) -> f64 {
        share(self.counts[tier.index()], self.total) * 100.0
    }

    /// Q4's share as a fraction 0..=1.
    pub fn q4_share(&self) -> f64 {
        share(self.counts[Tier::Q4.index()], self.total)
    }
}

fn share(count: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 / total as f64
    }
}

/// The threshold that sends the share of decisions closest to the one
/// asked for to Q4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    /// The threshold (0..=15): decisions scoring at least this go to Q4.
    #[cfg_attr(feature = "openapi", schema(example = 6.25))]
    pub threshold: f64,
    /// The share of the decisions it sends to Q4 (0..=1).
    #[cfg_attr(feature = "openapi", schema(example = 0.2))]
    pub q4_share: f64,
    /// How many decisions that is.
    pub q4_decisions: usize,
}

/// One point of the calibration curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CurvePoint {
    /// The Q4 threshold.
    #[cfg_attr(feature = "openapi", schema(example = 7.5))]
    pub threshold: f64,
    /// The share (0..=1) of the decisions it would send to Q4.
    #[cfg_attr(feature = "openapi", schema(example = 0.15))]
    pub q4_share: f64,
    /// Beyond the first calibrate: the share of the weak-to-strong quality
    /// gap this threshold recovers on the labelled data (the status's
    /// `routing.expectedQuality`); absent when the server measured none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = 0.35))]
    pub expected_gap_recovered: Option<f64>,
}

impl Population {
    /// The population of these decisions.
    pub fn new<'a>(decisions: impl IntoIterator<Item = &'a RoutingDecision>) -> Self {
        let mut p = Population::default();
        for d in decisions {
            if score_routed(d) {
                p.routed.push((d.score, d.tier, d.usage));
            } else {
                p.fixed.push((d.tier, d.usage));
            }
        }
        p
    }

    /// How many decisions.
    pub fn len(&self) -> usize {
        self.fixed.len() + self.routed.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many are score-routed (could move with the threshold).
    pub fn score_routed(&self) -> usize {
        self.routed.len()
    }

    /// The decisions at `threshold`: tier counts and cost.
    pub fn what_if(&self, threshold: f64, prices: &Prices) -> WhatIf {
        self.priced(threshold, prices, |score, _| {
            two_stage_tier(score, threshold)
        })
    }

    /// The decisions where they actually went: tier counts and cost
    /// (`threshold` is only reported back).
    pub fn actual(&self, threshold: f64, prices: &Prices) -> WhatIf {
        self.priced(threshold, prices, |_, tier| tier)
    }

    fn priced(
        &self,
        threshold: f64,
        prices: &Prices,
        tier_of: impl Fn(f64, Tier) -> Tier,
    ) -> WhatIf {
        let mut counts = [0; 3];
        let mut cost = Some(0.0);
        let mut add = |tier: Tier, usage: &Option<Usage>| {
            counts[tier.index()] += 1;
            if let Some(u) = usage {
                cost = match (cost, prices[tier.index()]) {
                    (Some(c), Some(p)) => Some(c + p.cost(u.prompt_tokens, u.completion_tokens)),
                    _ => None,
                };
            }
        };
        for (tier, usage) in &self.fixed {
            add(*tier, usage);
        }
        for (score, tier, usage) in &self.routed {
            add(tier_of(*score, *tier), usage);
        }
        let all_on_q4 = prices[Tier::Q4.index()].map(|p| {
            self.fixed
                .iter()
                .map(|f| &f.1)
                .chain(self.routed.iter().map(|r| &r.2))
                .flatten()
                .map(|u| p.cost(u.prompt_tokens, u.completion_tokens))
                .sum()
        });
        WhatIf {
            threshold,
            counts,
            total: self.len(),
            cost_usd: cost,
            all_on_q4_usd: all_on_q4,
        }
    }

    /// The threshold whose Q4 share is closest to `q4_share` (0..=1) among
    /// every threshold in 0..=15; of equally close ones the highest (the
    /// cheapest). Decisions with equal scores move together, so the share
    /// asked for is met within one decision when scores differ. `None`
    /// when there are no decisions.
    pub fn calibrate(&self, q4_share: f64) -> Option<Calibration> {
        if self.is_empty() {
            return None;
        }
        let target = q4_share * self.len() as f64;
        let scores = self.sorted_scores();
        let q4_count = |t: f64| scores.len() - scores.partition_point(|&s| s < t);
        // Thresholds worth trying: each distinct score (that score and all
        // above it go to Q4), and 15 when some score lies below it (nothing
        // but 15s on Q4). Ascending, so a later tie is a higher threshold.
        let mut best: Option<(f64, usize)> = None;
        let mut consider = |t: f64| {
            let n = q4_count(t);
            let better =
                best.is_none_or(|(_, b)| (n as f64 - target).abs() <= (b as f64 - target).abs());
            if better {
                best = Some((t, n));
            }
        };
        consider(0.0);
        for (i, &score) in scores.iter().enumerate() {
            if i == 0 || scores[i - 1] < score {
                consider(score);
            }
        }
        consider(MAX_SCORE);
        best.map(|(threshold, n)| Calibration {
            threshold,
            q4_share: share(n, self.len()),
            q4_decisions: n,
        })
    }

    /// The Q4 share at every threshold from 0 to 15 in steps of 0.5.
    pub fn curve(&self) -> Vec<CurvePoint> {
        let scores = self.sorted_scores();
        (0..=(MAX_SCORE / CURVE_STEP) as usize)
            .map(|i| {
                let threshold = i as f64 * CURVE_STEP;
                let n = scores.len() - scores.partition_point(|&s| s < threshold);
                CurvePoint {
                    threshold,
                    q4_share: share(n, self.len()),
                    expected_gap_recovered: None,
                }
            })
            .collect()
    }

    /// The score-routed decisions' scores, ascending: for the server's
    /// calibration over a buffer of any size.
    fn sorted_scores(&self) -> Vec<f64> {
        let mut scores: Vec<f64> = self.routed.iter().map(|r| r.0).collect();
        scores.sort_unstable_by(f64::total_cmp);
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::at;
    use proptest::prelude::*;

    fn decision(tier: Tier, score: f64, mode: Option<Mode>) -> RoutingDecision {
        RoutingDecision::new("x".into(), "q", tier, score, at())
            .unwrap()
            .with_seq(1, mode)
    }

    fn routed(scores: &[f64]) -> Vec<RoutingDecision> {
        scores
            .iter()
            .map(|&s| {
                decision(
                    two_stage_tier(s, DEFAULT_Q4_THRESHOLD),
                    s,
                    Some(Mode::TwoStage),
                )
            })
            .collect()
    }

    #[test]
    fn histogram_puts_each_score_in_its_whole_point_bucket() {
        let ds = routed(&[0.0, 0.99, 1.0, 6.5, 7.0, 14.99, 15.0]);
        let h = histogram(&ds);
        assert_eq!(h.iter().sum::<u64>(), 7);
        assert_eq!(h[0], 2);
        assert_eq!(h[1], 1);
        assert_eq!(h[6], 1);
        assert_eq!(h[7], 1);
        assert_eq!(h[14], 1);
        assert_eq!(h[15], 1);
    }

    #[test]
    fn borderline_counts_each_decision_once_within_half_a_point() {
        let ds = routed(&[2.5, 3.5, 3.51, 6.6, 7.0, 10.0, 0.0]);
        let t = Routing::default().thresholds();
        // 2.5 and 3.5 (edges included) near 3; 6.6 and 7.0 near 7 (counted
        // once though 7 is two thresholds).
        assert_eq!(borderline(&ds, &t), 4);
        assert_eq!(borderline(&ds, &Routing::new(10.0).thresholds()), 5);
    }

    #[test]
    fn what_if_moves_only_score_routed_decisions() {
        let mut ds = routed(&[2.0, 5.0, 8.0, 12.0]);
        ds.push(decision(Tier::Q2, 0.0, Some(Mode::Simple)));
        ds.push(decision(Tier::Q2, 9.0, None)); // elsewhere, to Q2: stays
        ds.push(decision(Tier::Q4, 6.0, None)); // elsewhere, to Q4: re-routed
        let p = Population::new(&ds);
        assert_eq!(p.len(), 7);
        assert_eq!(p.score_routed(), 5);
        let none = [None; 3];
        assert_eq!(p.what_if(7.0, &none).counts, [2, 3, 2]);
        assert_eq!(p.what_if(0.0, &none).counts, [2, 0, 5]);
        assert_eq!(p.what_if(15.0, &none).counts, [2, 5, 0]);
        assert_eq!(p.what_if(6.0, &none).counts, [2, 2, 3]);
        // Where they really went: the Q4 decision at 6.0 stays on Q4.
        assert_eq!(p.actual(7.0, &none).counts, [2, 2, 3]);
        let w = p.what_if(6.0, &none);
        assert!((w.percent(Tier::Q4) - 300.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn what_if_cost_prices_each_decision_at_its_new_tier() {
        let mut ds = routed(&[2.0, 8.0]);
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
        };
        for d in &mut ds {
            d.usage = Some(usage);
        }
        let prices: Prices = [
            Price::new(0.1, 0.2),
            Price::new(1.0, 2.0),
            Price::new(10.0, 20.0),
        ];
        let p = Population::new(&ds);
        // 7.0: one on Q3 (1 + 1 = 2), one on Q4 (10 + 10 = 20).
        let w = p.what_if(7.0, &prices);
        assert_eq!(w.cost_usd, Some(22.0));
        assert_eq!(w.all_on_q4_usd, Some(40.0));
        assert_eq!(p.what_if(0.0, &prices).cost_usd, Some(40.0));
        // A tier without a price makes the cost unknown, not zero.
        let partial: Prices = [None, None, Price::new(10.0, 20.0)];
        assert_eq!(p.what_if(7.0, &partial).cost_usd, None);
        assert_eq!(p.what_if(0.0, &partial).cost_usd, Some(40.0));
    }

    #[test]
    fn cost_summary_prices_tokens_and_the_all_on_q4_alternative() {
        let mut tokens = [Tokens::default(); 3];
        tokens[0].add(&Usage {
            prompt_tokens: 2_000_000,
            completion_tokens: 1_000_000,
        });
        tokens[2].add(&Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 0,
        });
        let prices: Prices = [Price::new(0.5, 1.0), None, Price::new(5.0, 15.0)];
        // Single-tier answers: the baseline is their own tokens.
        let mut baseline = tokens[0];
        baseline.merge(&tokens[2]);
        let c = cost_summary(&tokens, &baseline, &Tokens::default(), &prices);
        assert_eq!(c.tiers[0].spent_usd, Some(2.0));
        assert_eq!(c.tiers[1].spent_usd, None);
        assert_eq!(c.spent_usd, Some(7.0)); // Q3 has no tokens, so no price needed
        assert_eq!(c.all_on_q4_usd, Some(10.0 + 15.0 + 5.0));
        assert_eq!(c.saved_usd, Some(23.0));
        assert!((c.saving_percent.unwrap() - 23.0 / 30.0 * 100.0).abs() < 1e-9);
        // Without prices: token counts only.
        let bare = cost_summary(&tokens, &baseline, &Tokens::default(), &[None; 3]);
        assert_eq!(bare.tiers[0].prompt_tokens, 2_000_000);
        assert!(bare.spent_usd.is_none() && bare.all_on_q4_usd.is_none());
        assert!(bare.saving_percent.is_none());
        // Nothing spent: a 0 % saving, not NaN.
        let none = cost_summary(
            &[Tokens::default(); 3],
            &Tokens::default(),
            &Tokens::default(),
            &prices,
        );
        assert_eq!(none.saving_percent, Some(0.0));
        assert!(none.assessor.is_none());
        // The model assessor's tokens, at Q2's price, are spent too.
        let mut asked = Tokens::default();
        asked.add(&Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 0,
        });
        let with = cost_summary(&tokens, &baseline, &asked, &prices);
        assert_eq!(with.assessor.as_ref().unwrap().spent_usd, Some(0.5));
        assert_eq!(with.spent_usd, Some(7.5));
        assert_eq!(with.all_on_q4_usd, c.all_on_q4_usd);
    }

    #[test]
    fn a_group_query_is_weighed_against_one_q4_answer() {
        // One benchmark query: each tier answered the same 1M prompt
        // tokens with 1M completion tokens, at 0.1, 1 and 10 per 1M.
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
        };
        let mut tokens = [Tokens::default(); 3];
        for t in &mut tokens {
            t.add(&u);
        }
        let members = [(Tier::Q2, u), (Tier::Q3, u), (Tier::Q4, u)];
        let one = group_baseline(&members).unwrap();
        assert_eq!(one, u, "its Q4 member's tokens");
        let mut baseline = Tokens::default();
        baseline.add(&one);
        let prices: Prices = [
            Price::new(0.1, 0.1),
            Price::new(1.0, 1.0),
            Price::new(10.0, 10.0),
        ];
        let c = cost_summary(&tokens, &baseline, &Tokens::default(), &prices);
        assert!((c.spent_usd.unwrap() - 22.2).abs() < 1e-9);
        assert!((c.all_on_q4_usd.unwrap() - 20.0).abs() < 1e-9);
        assert!(
            c.saved_usd.unwrap() < 0.0,
            "it spent more than one Q4 answer"
        );
        assert!((c.saving_percent.unwrap() + 11.0).abs() < 1e-9);
        // Without a Q4 member: the members' mean.
        let small = Usage {
            prompt_tokens: 10,
            completion_tokens: 30,
        };
        let mean = group_baseline(&[(Tier::Q2, u), (Tier::Q3, small)]).unwrap();
        assert_eq!(
            (mean.prompt_tokens, mean.completion_tokens),
            (500_005, 500_015)
        );
        assert_eq!(group_baseline(&[]), None);
    }

    #[test]
    fn signals_and_usage_are_validated() {
        let ok = vec![
            Signal::new("length", 1.0),
            Signal::new("x".repeat(32).as_str(), -2.0),
        ];
        assert!(validate_signals(&ok).is_ok());
        let many = vec![Signal::new("s", 0.1); 17];
        assert_eq!(
            validate_signals(&many),
            Err(InsightError::TooManySignals(17))
        );
        for (bad, at) in [
            (vec![Signal::new("", 1.0)], 0),
            (
                vec![Signal::new("ok", 1.0), Signal::new(" \u{200B}", 1.0)],
                1,
            ),
            (vec![Signal::new(&"é".repeat(33), 1.0)], 0),
        ] {
            assert_eq!(validate_signals(&bad), Err(InsightError::SignalName(at)));
        }
        for w in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e6 + 1.0,
            -1e300,
        ] {
            let e = validate_signals(&[Signal::new("w", w)]).unwrap_err();
            assert_eq!(e, InsightError::SignalWeight(0));
            assert_eq!(e.field(), "signals");
        }
        let huge = Usage {
            prompt_tokens: MAX_DECISION_TOKENS + 1,
            completion_tokens: 0,
        };
        assert_eq!(validate_usage(&huge).unwrap_err().field(), "usage");
    }

    #[test]
    fn prices_must_be_finite_and_non_negative() {
        assert!(Price::new(-0.1, 1.0).is_none());
        assert!(Price::new(f64::NAN, 1.0).is_none());
        assert!(Price::new(1.0, f64::INFINITY).is_none());
        assert_eq!(Price::new(0.0, 2.5).unwrap().cost(0, 2_000_000), 5.0);
    }

    #[test]
    fn calibration_on_an_empty_buffer_is_none_and_the_curve_is_flat() {
        let p = Population::new(&[]);
        assert_eq!(p.calibrate(0.2), None);
        let curve = p.curve();
        assert_eq!(curve.len(), 31);
        assert_eq!(curve[30].threshold, 15.0);
        assert!(curve.iter().all(|c| c.q4_share == 0.0));
    }

    #[test]
    fn calibration_picks_the_highest_of_equally_close_thresholds() {
        // Ten distinct scores: 20 % means the top two.
        let ds = routed(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        let c = Population::new(&ds).calibrate(0.2).unwrap();
        assert_eq!(c.threshold, 9.0);
        assert_eq!(c.q4_decisions, 2);
        assert_eq!(c.q4_share, 0.2);
        // Nothing on Q4: 15 (no score reaches it).
        assert_eq!(Population::new(&ds).calibrate(0.0).unwrap().threshold, 15.0);
        // Ties move together: the closest achievable share (2.4 of 4 is
        // nearer all four than none).
        let ties = routed(&[5.0; 4]);
        let c = Population::new(&ties).calibrate(0.6).unwrap();
        assert_eq!(c.q4_decisions, 4);
        assert_eq!(c.threshold, 5.0);
    }

    fn scores() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec((0u32..=1500).prop_map(|s| f64::from(s) / 100.0), 1..120)
    }

    proptest! {
        /// With distinct scores, the calibrated threshold sends the share
        /// asked for to Q4, within one decision.
        #[test]
        fn calibration_meets_the_share_within_one_decision(
            raw in scores(), q in 0.0f64..=1.0, simple in 0usize..5,
        ) {
            let mut distinct = raw;
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            let mut ds = routed(&distinct);
            for _ in 0..simple {
                ds.push(decision(Tier::Q2, 0.0, Some(Mode::Simple)));
            }
            let p = Population::new(&ds);
            let c = p.calibrate(q).unwrap();
            let n = ds.len() as f64;
            // Reachable: at most the score-routed decisions can go to Q4.
            let target = (q * n).min(distinct.len() as f64);
            let got = p.what_if(c.threshold, &[None; 3]).counts[Tier::Q4.index()];
            prop_assert_eq!(got, c.q4_decisions);
            prop_assert!((got as f64 - target).abs() <= 1.0, "{} vs {}", got, target);
            prop_assert!(valid_threshold(c.threshold));
        }

        /// Raising the threshold never raises the Q4 share.
        #[test]
        fn a_higher_threshold_never_raises_the_q4_share(
            raw in scores(), a in 0.0f64..=15.0, b in 0.0f64..=15.0,
        ) {
            let p = Population::new(&routed(&raw));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(p.what_if(hi, &[None; 3]).q4_share() <= p.what_if(lo, &[None; 3]).q4_share());
            let curve = p.curve();
            for w in curve.windows(2) {
                prop_assert!(w[1].q4_share <= w[0].q4_share);
            }
        }

        /// Every decision lands in exactly one bucket, and the what-if
        /// counts always add up to the whole buffer.
        #[test]
        fn buckets_and_what_if_counts_cover_every_decision(raw in scores(), t in 0.0f64..=15.0) {
            let ds = routed(&raw);
            prop_assert_eq!(histogram(&ds).iter().sum::<u64>(), ds.len() as u64);
            let w = Population::new(&ds).what_if(t, &[None; 3]);
            prop_assert_eq!(w.counts.iter().sum::<usize>(), ds.len());
        }
    }
}
