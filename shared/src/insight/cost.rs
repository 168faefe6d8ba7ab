//! What the tokens cost: prices per tier, token sums, the cost summary and
//! the saving against one Q4 answer per query.

use super::*;

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
pub type Prices = crate::PerTier<Option<Price>>;

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
        let price = prices[tier];
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
    let all_on_q4 = prices[Tier::Q4].map(|p| p.cost(baseline.prompt, baseline.completion));
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
