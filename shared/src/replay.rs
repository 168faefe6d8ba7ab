//! What-if over the stored history (`GET /api/orchestrator/replay`): the
//! two-stage decisions of a range routed again at another Q4 threshold,
//! in one pass over the stored rows (each fed to a [`ReplayPass`] as it
//! is read, never all held).
//!
//! A decision moves into Q4 when its score reaches the threshold and it
//! went elsewhere, out of Q4 when it went to Q4 and its score is below;
//! no other move counts. A moved decision is priced with the destination
//! tier's mean tokens per answered decision over the same range (any
//! mode), against its own tokens (or its own tier's mean when it has
//! none): the only honest guess of an answer never given.

use serde::{Deserialize, Serialize};

use crate::api::Usage;
use crate::insight::{Prices, two_stage_tier};
use crate::quality::ExpectedQuality;
use crate::{PerTier, Tier};

/// What the answer says of how moved decisions are priced.
pub const PRICING: &str = "moved decisions are priced with the destination tier's mean tokens per answered decision over the same range (any mode), against their own tokens (their own tier's mean when they have none)";

/// Tokens summed per tier over a range.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    prompt: u64,
    completion: u64,
    answers: u64,
}

impl Sums {
    fn mean(&self) -> (f64, f64) {
        if self.answers == 0 {
            return (0.0, 0.0);
        }
        let n = self.answers as f64;
        (self.prompt as f64 / n, self.completion as f64 / n)
    }
}

/// The running sums of one replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayPass {
    threshold: f64,
    decisions: u64,
    q4_before: u64,
    q4_after: u64,
    to_q4: u64,
    from_q4: u64,
    /// Every decision of the range with usage, per tier (the means).
    all: PerTier<Sums>,
    /// Moved decisions per (from, to): with their own usage summed, and
    /// how many have none.
    moved: [[Sums; 3]; 3],
    moved_without_usage: [[u64; 3]; 3],
}

impl ReplayPass {
    /// A replay at Q4 threshold `threshold`.
    pub fn new(threshold: f64) -> Self {
        ReplayPass {
            threshold,
            ..ReplayPass::default()
        }
    }

    /// Any decision of the range that has usage: its tier's mean tokens.
    pub fn answered(&mut self, tier: Tier, usage: Usage) {
        let s = &mut self.all[tier];
        s.prompt += usage.prompt_tokens;
        s.completion += usage.completion_tokens;
        s.answers += 1;
    }

    /// A two-stage decision of the range: routed to `tier` before, scored
    /// `score` now (its stored score, or its prompt's score again).
    pub fn decision(&mut self, tier: Tier, score: f64, usage: Option<Usage>) {
        self.decisions += 1;
        let after = two_stage_tier(score, self.threshold);
        self.q4_before += u64::from(tier == Tier::Q4);
        let to = match (tier == Tier::Q4, after == Tier::Q4) {
            (false, true) => Tier::Q4,
            (true, false) => after,
            _ => {
                self.q4_after += u64::from(tier == Tier::Q4);
                return;
            }
        };
        self.q4_after += u64::from(to == Tier::Q4);
        if to == Tier::Q4 {
            self.to_q4 += 1;
        } else {
            self.from_q4 += 1;
        }
        let (f, t) = (tier.index(), to.index());
        match usage {
            Some(u) => {
                let s = &mut self.moved[f][t];
                s.prompt += u.prompt_tokens;
                s.completion += u.completion_tokens;
                s.answers += 1;
            }
            None => self.moved_without_usage[f][t] += 1,
        }
    }

    /// The answer's figures (its range and scorer are the caller's to fill).
    pub fn finish(&self, prices: &Prices, expected: Option<&ExpectedQuality>) -> Replay {
        let share = |n: u64| {
            if self.decisions == 0 {
                0.0
            } else {
                n as f64 / self.decisions as f64
            }
        };
        let mut prompt_delta = 0.0;
        let mut completion_delta = 0.0;
        let mut cost_delta = 0.0;
        let priced = prices.values().iter().all(Option::is_some);
        let cost = |tier: Tier, p: f64, c: f64| {
            prices[tier].map_or(0.0, |price| {
                (p * price.input_per_million + c * price.output_per_million) / 1_000_000.0
            })
        };
        for from in Tier::ALL {
            for to in Tier::ALL {
                let known = self.moved[from.index()][to.index()];
                let unknown = self.moved_without_usage[from.index()][to.index()] as f64;
                let n = known.answers as f64 + unknown;
                if n == 0.0 {
                    continue;
                }
                let (own_p, own_c) = self.all[from].mean();
                let before_p = known.prompt as f64 + unknown * own_p;
                let before_c = known.completion as f64 + unknown * own_c;
                let (dest_p, dest_c) = self.all[to].mean();
                let (after_p, after_c) = (n * dest_p, n * dest_c);
                prompt_delta += after_p - before_p;
                completion_delta += after_c - before_c;
                cost_delta += cost(to, after_p, after_c) - cost(from, before_p, before_c);
            }
        }
        let (before, after) = (share(self.q4_before), share(self.q4_after));
        let at = |s: f64| expected.and_then(|e| e.at_share(s));
        Replay {
            threshold: self.threshold,
            decisions: self.decisions,
            to_q4: self.to_q4,
            from_q4: self.from_q4,
            q4_share_before: before,
            q4_share_after: after,
            tokens_delta: prompt_delta + completion_delta,
            cost_delta_usd: priced.then_some(cost_delta),
            pricing: PRICING.to_owned(),
            gap_recovered_before: at(before),
            gap_recovered_after: at(after),
            ..Replay::default()
        }
    }
}

impl ExpectedQuality {
    /// The gap recovered at Q4 share `share` of the labelled curve,
    /// interpolated linearly between its points (by share).
    pub fn at_share(&self, share: f64) -> Option<f64> {
        let mut points: Vec<(f64, f64)> = self
            .curve
            .iter()
            .map(|p| (p.q4_share, p.gap_recovered))
            .filter(|(s, g)| s.is_finite() && g.is_finite())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        crate::quality::interpolate(&points, share)
    }
}

/// `GET /api/orchestrator/replay`'s answer; see the module docs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    /// Start of the range (inclusive), RFC 3339.
    pub from: String,
    /// End of the range (exclusive), RFC 3339.
    pub to: String,
    /// The threshold replayed.
    pub threshold: f64,
    /// `stored` (the scores as decided), or the scorer the kept prompts
    /// were scored again with (`heuristic`, `learned`).
    pub scorer: String,
    /// With `scorer`: two-stage decisions of the range whose prompt was
    /// not kept (left out).
    pub without_prompt: u64,
    /// Two-stage decisions in the range (with `scorer`: those whose prompt
    /// was kept).
    pub decisions: u64,
    /// Of them, moved into Q4 at the threshold.
    pub to_q4: u64,
    /// Moved out of Q4 (to Q3).
    pub from_q4: u64,
    /// The share on Q4 as routed (0 without decisions).
    pub q4_share_before: f64,
    /// The share on Q4 at the threshold.
    pub q4_share_after: f64,
    /// Tokens (prompt and completion) the moves add; negative: saved.
    pub tokens_delta: f64,
    /// What the moves add to the cost, USD (null unless every tier has a
    /// price).
    pub cost_delta_usd: Option<f64>,
    /// How moved decisions are priced.
    pub pricing: String,
    /// The share of the labelled data's weak-to-strong quality gap
    /// recovered at the Q4 share as routed, read off the labelled curve
    /// (null without labelled data).
    pub gap_recovered_before: Option<f64>,
    /// At the Q4 share at the threshold.
    pub gap_recovered_after: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::Price;

    fn u(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
        }
    }

    #[test]
    fn moves_shares_and_tokens_at_another_threshold() {
        let mut pass = ReplayPass::new(5.0);
        // Means: Q3 10+20 a call, Q4 30+60.
        for (tier, score, usage) in [
            (Tier::Q3, 6.0, Some(u(10, 20))), // moves in
            (Tier::Q3, 2.0, Some(u(10, 20))), // stays
            (Tier::Q4, 8.0, Some(u(30, 60))), // stays
            (Tier::Q4, 4.0, None),            // moves out, tokens unknown
        ] {
            if let Some(x) = usage {
                pass.answered(tier, x);
            }
            pass.decision(tier, score, usage);
        }
        let prices: Prices = PerTier([
            Price::new(1.0, 1.0),
            Price::new(1.0, 1.0),
            Price::new(2.0, 2.0),
        ]);
        let f = pass.finish(&prices, None);
        assert_eq!((f.decisions, f.to_q4, f.from_q4), (4, 1, 1));
        assert_eq!((f.q4_share_before, f.q4_share_after), (0.5, 0.5));
        // In: +20 prompt, +40 completion; out (at Q4's mean 30+60): -20, -40.
        assert_eq!(f.tokens_delta, 0.0);
        // In: 90 tokens at $2 - 30 at $1 (a million) = +150; out: -150.
        assert!(f.cost_delta_usd.unwrap().abs() < 1e-15, "{f:?}");
        assert!(
            pass.finish(&PerTier([None; 3]), None)
                .cost_delta_usd
                .is_none()
        );
        let f = ReplayPass::new(0.0).finish(&prices, None);
        assert_eq!((f.decisions, f.q4_share_before), (0, 0.0));
        // Only moves in: one Q3 answer of 10 + 20 tokens goes to Q4's mean.
        let mut pass = ReplayPass::new(1.0);
        pass.answered(Tier::Q3, u(10, 20));
        pass.answered(Tier::Q4, u(30, 60));
        pass.decision(Tier::Q3, 2.0, Some(u(10, 20)));
        let f = pass.finish(&prices, None);
        assert_eq!((f.to_q4, f.q4_share_after, f.tokens_delta), (1, 1.0, 60.0));
        assert!(
            (f.cost_delta_usd.unwrap() - 150.0 / 1e6).abs() < 1e-15,
            "{f:?}"
        );
    }
}
