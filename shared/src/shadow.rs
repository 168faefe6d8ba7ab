//! Routing quality, live: shadow judging of real traffic and the implicit
//! signals (abandoned streams, regenerations), as the status's `quality`.
//!
//! A sampled answer of Q2 or Q3 is compared with Q4's answer to the same
//! messages by a judge model, twice with the answers' order swapped (a
//! judge prefers one position): two agreeing picks give `better` or
//! `worse`, disagreeing ones `tie`. "As good as Q4" is `tie` + `better`,
//! with a Wilson 95 % interval. The pure parts live here: the fixed judge
//! prompt, reading a pick, the verdict, the interval, and the counts both
//! the server and an instance's cluster record carry.

use serde::{Deserialize, Serialize};

use crate::{PerTier, Tier};

/// The judge's instructions (the system message), fixed and documented so
/// that verdicts of different routers and days compare.
pub const JUDGE_SYSTEM: &str = "You are an impartial judge. You compare two answers to the same \
user question and decide which one answers it better: more correct, more helpful, more complete, \
clearer. Ignore the answers' length and order, and who wrote them. Reply with the verdict only: \
[[A]] if answer A is better, [[B]] if answer B is better, [[C]] if they are equally good.";

/// The judge's question (the user message): the user's question and the two
/// answers, A first.
pub fn judge_prompt(question: &str, a: &str, b: &str) -> String {
    format!(
        "[User question]\n{question}\n\n[Answer A]\n{a}\n[End of answer A]\n\n[Answer B]\n{b}\n\
         [End of answer B]\n\nWhich answer is better? Reply with [[A]], [[B]] or [[C]] (a tie)."
    )
}

/// Most tokens a judge's reply may take: the verdict is a few tokens.
pub const JUDGE_MAX_TOKENS: u64 = 16;

/// One judging's pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Answer A is better.
    A,
    /// Answer B is better.
    B,
    /// Equally good.
    Tie,
}

/// The pick a judge's reply states: exactly one of `[[A]]`, `[[B]]`, `[[C]]`
/// (case and surrounding text do not matter); `None` when it states none or
/// several different ones (not a verdict).
pub fn read_pick(reply: &str) -> Option<Pick> {
    let upper = reply.to_ascii_uppercase();
    let found: Vec<Pick> = [("[[A]]", Pick::A), ("[[B]]", Pick::B), ("[[C]]", Pick::Tie)]
        .into_iter()
        .filter(|(mark, _)| upper.contains(mark))
        .map(|(_, pick)| pick)
        .collect();
    match found[..] {
        [pick] => Some(pick),
        _ => None,
    }
}

/// How a judged tier's answer compares with Q4's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Better than Q4's, in both orders.
    Better,
    /// As good as Q4's, or the two orders disagree.
    Tie,
    /// Worse than Q4's, in both orders.
    Worse,
}

impl Verdict {
    /// Every verdict, in the order the counts list them.
    pub const ALL: [Verdict; 3] = [Verdict::Better, Verdict::Tie, Verdict::Worse];

    /// Its name on the wire and in metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Tie => "tie",
            Verdict::Worse => "worse",
        }
    }

    /// Its name read back.
    pub fn from_label(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.label() == s)
    }
}

/// The verdict of two judgings: `first` with the tier's answer as A and
/// Q4's as B, `swapped` with the order reversed. Agreeing picks give
/// `better` or `worse`; anything else (disagreement, or a tie either way
/// that the other order does not repeat) gives `tie`.
pub fn verdict(first: Pick, swapped: Pick) -> Verdict {
    match (first, swapped) {
        (Pick::A, Pick::B) => Verdict::Better,
        (Pick::B, Pick::A) => Verdict::Worse,
        _ => Verdict::Tie,
    }
}

/// Why a judging gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeFailure {
    /// The reply stated no pick, or several.
    Garbage,
    /// The judge did not answer in time.
    Timeout,
    /// The judge's upstream failed (or there is none).
    Error,
    /// The judge refused (a refusal in place of content).
    Refusal,
}

impl JudgeFailure {
    /// Every reason, in the order the counts list them.
    pub const ALL: [JudgeFailure; 4] = [
        JudgeFailure::Garbage,
        JudgeFailure::Timeout,
        JudgeFailure::Error,
        JudgeFailure::Refusal,
    ];

    /// Its name on the wire and in metric labels.
    pub fn label(self) -> &'static str {
        match self {
            JudgeFailure::Garbage => "garbage",
            JudgeFailure::Timeout => "timeout",
            JudgeFailure::Error => "error",
            JudgeFailure::Refusal => "refusal",
        }
    }

    /// Its position in [`JudgeFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The Wilson score interval (95 %) of `successes` out of `n`; `None` for
/// no trials. Unlike the normal approximation it stays within 0..=1 and is
/// honest for small `n` and shares near 0 or 1.
pub fn wilson(successes: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = n as f64;
    let p = successes.min(n as u64) as f64 / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let margin = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    Some((
        ((centre - margin) / denom).clamp(0.0, 1.0),
        ((centre + margin) / denom).clamp(0.0, 1.0),
    ))
}

/// What shadow judging counted for one tier over some span: the raw counts
/// an instance keeps and publishes, summed across instances.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeCounts {
    /// Verdicts per [`Verdict::ALL`].
    pub verdicts: [u64; 3],
    /// Samples dropped at `--shadow-max-inflight`.
    pub dropped: u64,
    /// Judgings that gave no verdict, per [`JudgeFailure::ALL`].
    pub judge_failures: [u64; 4],
    /// Q4 calls that failed (no pair to judge).
    pub q4_failures: u64,
}

impl JudgeCounts {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &JudgeCounts) {
        for (a, b) in self.verdicts.iter_mut().zip(other.verdicts) {
            *a += b;
        }
        for (a, b) in self.judge_failures.iter_mut().zip(other.judge_failures) {
            *a += b;
        }
        self.dropped += other.dropped;
        self.q4_failures += other.q4_failures;
    }

    /// The counts as the status shows them.
    pub fn judged(&self) -> Judged {
        let [better, tie, worse] = self.verdicts;
        let pairs = better + tie + worse;
        let as_good = better + tie;
        let interval = wilson(as_good, pairs);
        Judged {
            pairs,
            better,
            tie,
            worse,
            as_good: (pairs > 0).then(|| as_good as f64 / pairs as f64),
            as_good_lower: interval.map(|i| i.0),
            as_good_upper: interval.map(|i| i.1),
            dropped: self.dropped,
            judge_failures: self.judge_failures.iter().sum(),
            q4_failures: self.q4_failures,
        }
    }
}

/// Shadow judging's figures for one tier over one span, as the status
/// shows them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    /// Pairs judged (each a verdict): `better + tie + worse`.
    pub pairs: u64,
    /// The tier's answer was better than Q4's in both orders.
    pub better: u64,
    /// As good, or the two orders disagreed.
    pub tie: u64,
    /// Worse in both orders.
    pub worse: u64,
    /// `(tie + better) / pairs`: the share as good as Q4 (absent without
    /// pairs, as the status never holds a null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_good: Option<f64>,
    /// The Wilson 95 % interval's lower end of `asGood` (absent without pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_good_lower: Option<f64>,
    /// Its upper end (absent without pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_good_upper: Option<f64>,
    /// Samples dropped at `--shadow-max-inflight` (never queued).
    pub dropped: u64,
    /// Pairs whose judge gave no verdict (by reason in `/metrics`).
    pub judge_failures: u64,
    /// Samples whose Q4 call failed: no pair.
    pub q4_failures: u64,
}

/// The implicit signals of one tier, counted since start: no judge needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImplicitCounts {
    /// Streamed answers begun.
    pub streams: u64,
    /// Of them, abandoned by the client before the end.
    pub abandoned: u64,
    /// Single-tier queries answered or streamed.
    pub answers: u64,
    /// Of them, asked again with the same text by the same key within 60 s.
    pub regenerations: u64,
}

impl ImplicitCounts {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &ImplicitCounts) {
        self.streams += other.streams;
        self.abandoned += other.abandoned;
        self.answers += other.answers;
        self.regenerations += other.regenerations;
    }
}

/// Everything an instance counts for the live quality of one tier; what an
/// instance publishes to the cluster, summed there.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierCounts {
    /// Shadow judging since start.
    pub since_start: JudgeCounts,
    /// Shadow judging over the last hour.
    pub last_hour: JudgeCounts,
    /// The implicit signals since start.
    pub implicit: ImplicitCounts,
    /// The shadow calls' (Q4's and the judge's) prompt and completion tokens.
    pub shadow_tokens: [u64; 2],
    /// Their cost at the configured prices, USD.
    pub shadow_cost_usd: f64,
}

impl TierCounts {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &TierCounts) {
        self.since_start.merge(&other.since_start);
        self.last_hour.merge(&other.last_hour);
        self.implicit.merge(&other.implicit);
        self.shadow_tokens[0] += other.shadow_tokens[0];
        self.shadow_tokens[1] += other.shadow_tokens[1];
        self.shadow_cost_usd += other.shadow_cost_usd;
    }
}

/// The status's `quality`: routing quality, live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LiveQuality {
    /// The share of Q2 and Q3 answers judged (`--shadow-rate`; 0: off).
    pub shadow_rate: f64,
    /// The tier whose upstreams judge (`--judge`).
    pub judge: Tier,
    /// Shadow samples under way now (at most `--shadow-max-inflight`).
    pub in_flight: u64,
    /// Per tier, Q2, Q3, Q4 (Q4 is never judged: its pairs stay 0). Judge
    /// failures by reason are in `/metrics`
    /// (`orch_shadow_judge_failures_total{reason}`).
    pub tiers: Vec<TierQuality>,
}

/// One tier's live quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TierQuality {
    /// The tier.
    pub tier: Tier,
    /// Shadow judging since start.
    pub since_start: Judged,
    /// Shadow judging over the last hour.
    pub last_hour: Judged,
    /// Streamed answers begun since start.
    pub streams: u64,
    /// Of them, abandoned by the client before the end.
    pub abandoned: u64,
    /// `abandoned / streams` (0 without streams).
    pub abandoned_rate: f64,
    /// Single-tier queries answered since start.
    pub answers: u64,
    /// Of them, asked again (same text, same key) within 60 s.
    pub regenerations: u64,
    /// `regenerations / answers` (0 without answers).
    pub regeneration_rate: f64,
    /// The shadow calls' (Q4's and the judge's) tokens, prompt and
    /// completion, kept apart from the tier's own (by direction in
    /// `/metrics`: `orch_shadow_tokens_total`).
    pub shadow_tokens: u64,
    /// Their cost, USD (0 without prices).
    pub shadow_cost_usd: f64,
}

/// The status's `quality` from the summed counts.
pub fn live_quality(
    shadow_rate: f64,
    judge: Tier,
    in_flight: u64,
    counts: &PerTier<TierCounts>,
) -> LiveQuality {
    let rate = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part.min(whole) as f64 / whole as f64
        }
    };
    LiveQuality {
        shadow_rate,
        judge,
        in_flight,
        tiers: counts
            .iter()
            .map(|(tier, c)| TierQuality {
                tier,
                since_start: c.since_start.judged(),
                last_hour: c.last_hour.judged(),
                streams: c.implicit.streams,
                abandoned: c.implicit.abandoned,
                abandoned_rate: rate(c.implicit.abandoned, c.implicit.streams),
                answers: c.implicit.answers,
                regenerations: c.implicit.regenerations,
                regeneration_rate: rate(c.implicit.regenerations, c.implicit.answers),
                shadow_tokens: c.shadow_tokens[0] + c.shadow_tokens[1],
                shadow_cost_usd: if c.shadow_cost_usd.is_finite() {
                    c.shadow_cost_usd
                } else {
                    0.0
                },
            })
            .collect(),
    }
}

/// "as good as Q4 on 93 % (89-96 %) of 212 judged", or `None` without pairs.
pub fn as_good_words(j: &Judged) -> Option<String> {
    let (share, lo, hi) = (j.as_good?, j.as_good_lower?, j.as_good_upper?);
    Some(format!(
        "as good as Q4 on {:.0} % ({:.0}-{:.0} %) of {} judged",
        share * 100.0,
        lo * 100.0,
        hi * 100.0,
        j.pairs
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_is_one_mark_and_only_one() {
        assert_eq!(read_pick("[[A]]"), Some(Pick::A));
        assert_eq!(read_pick("Verdict: [[b]]."), Some(Pick::B));
        assert_eq!(read_pick("[[C]]"), Some(Pick::Tie));
        assert_eq!(read_pick("[[A]] then [[A]]"), Some(Pick::A));
        assert_eq!(read_pick("[[A]] or [[B]]"), None);
        assert_eq!(read_pick("A is better"), None);
        assert_eq!(read_pick(""), None);
    }

    #[test]
    fn agreeing_orders_give_a_verdict_and_disagreeing_ones_a_tie() {
        assert_eq!(verdict(Pick::A, Pick::B), Verdict::Better);
        assert_eq!(verdict(Pick::B, Pick::A), Verdict::Worse);
        assert_eq!(verdict(Pick::A, Pick::A), Verdict::Tie);
        assert_eq!(verdict(Pick::B, Pick::B), Verdict::Tie);
        assert_eq!(verdict(Pick::Tie, Pick::Tie), Verdict::Tie);
        assert_eq!(verdict(Pick::A, Pick::Tie), Verdict::Tie);
        assert_eq!(verdict(Pick::Tie, Pick::A), Verdict::Tie);
    }

    #[test]
    fn wilson_matches_the_textbook_figures() {
        assert_eq!(wilson(0, 0), None);
        // 8 of 10: 0.4902 .. 0.9433 (Wilson 1927; as in every table).
        let (lo, hi) = wilson(8, 10).unwrap();
        assert!(
            (lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 5).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.4345).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson(5, 5).unwrap();
        assert!((lo - 0.5655).abs() < 1e-4 && hi == 1.0, "{lo} {hi}");
    }

    #[test]
    fn counts_sum_and_show_as_shares() {
        let mut a = JudgeCounts {
            verdicts: [1, 2, 1],
            dropped: 1,
            judge_failures: [1, 0, 0, 1],
            q4_failures: 0,
        };
        a.merge(&JudgeCounts {
            verdicts: [0, 1, 1],
            q4_failures: 2,
            ..JudgeCounts::default()
        });
        let j = a.judged();
        assert_eq!((j.pairs, j.better, j.tie, j.worse), (6, 1, 3, 2));
        assert_eq!(j.as_good, Some(4.0 / 6.0));
        assert_eq!((j.judge_failures, j.q4_failures, j.dropped), (2, 2, 1));
        let (lo, hi) = wilson(4, 6).unwrap();
        assert_eq!((j.as_good_lower, j.as_good_upper), (Some(lo), Some(hi)));
        assert_eq!(JudgeCounts::default().judged().as_good, None);
        assert_eq!(
            as_good_words(
                &JudgeCounts {
                    verdicts: [0, 8, 2],
                    ..JudgeCounts::default()
                }
                .judged()
            )
            .unwrap(),
            "as good as Q4 on 80 % (49-94 %) of 10 judged"
        );
    }

    #[test]
    fn the_status_lists_every_tier_with_its_rates() {
        let mut counts = PerTier::<TierCounts>::default();
        counts[Tier::Q2].implicit = ImplicitCounts {
            streams: 4,
            abandoned: 1,
            answers: 10,
            regenerations: 2,
        };
        counts[Tier::Q3].since_start.judge_failures = [1, 2, 0, 0];
        let q = live_quality(0.5, Tier::Q4, 1, &counts);
        assert_eq!(q.tiers.len(), 3);
        assert_eq!(q.tiers[0].abandoned_rate, 0.25);
        assert_eq!(q.tiers[0].regeneration_rate, 0.2);
        assert_eq!(q.tiers[2].abandoned_rate, 0.0);
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(json["tiers"][1]["sinceStart"]["judgeFailures"], 3);
        assert_eq!(
            json["tiers"][0]["sinceStart"]["asGood"],
            serde_json::Value::Null
        );
    }
}
