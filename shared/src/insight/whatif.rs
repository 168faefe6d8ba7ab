//! What another Q4 threshold would have changed over a population of
//! decisions: shares, cost, and the calibration curve.

use super::*;

/// The buffered decisions as a what-if sees them: those that keep their
/// tier whatever the threshold, and the score-routed ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Population {
    /// Decisions that keep their tier, with their token counts.
    pub(super) fixed: Vec<(Tier, Option<Usage>)>,
    /// Score-routed decisions with the tier they went to and their token
    /// counts. Not sorted: the panel's slider counts a few hundred at most,
    /// and leaving sorting to calibration keeps it out of the WASM.
    pub(super) routed: Vec<(f64, Tier, Option<Usage>)>,
}

/// What the buffered decisions would have been at one Q4 threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhatIf {
    /// The threshold.
    pub threshold: f64,
    /// Decisions per tier, indexed by [`Tier::index`].
    pub counts: crate::PerTier<usize>,
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
        share(self.counts[tier], self.total) * 100.0
    }

    /// Q4's share as a fraction 0..=1.
    pub fn q4_share(&self) -> f64 {
        share(self.counts[Tier::Q4], self.total)
    }
}

pub(super) fn share(count: usize, total: usize) -> f64 {
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

    pub(super) fn priced(
        &self,
        threshold: f64,
        prices: &Prices,
        tier_of: impl Fn(f64, Tier) -> Tier,
    ) -> WhatIf {
        let mut counts = crate::PerTier([0; 3]);
        let mut cost = Some(0.0);
        let mut add = |tier: Tier, usage: &Option<Usage>| {
            counts[tier] += 1;
            if let Some(u) = usage {
                cost = match (cost, prices[tier]) {
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
        let all_on_q4 = prices[Tier::Q4].map(|p| {
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
    pub(super) fn sorted_scores(&self) -> Vec<f64> {
        let mut scores: Vec<f64> = self.routed.iter().map(|r| r.0).collect();
        scores.sort_unstable_by(f64::total_cmp);
        scores
    }
}
