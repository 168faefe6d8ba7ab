//! Council and benchmark queries: one query asked of several tiers, their
//! answers side by side, and the pure math of a council's agreement.

use serde::{Deserialize, Serialize};

use crate::api::{Mode, Usage};
use crate::{RoutingDecision, Tier};

/// What a council's moderator made of its members' answers, kept on the
/// moderator's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CouncilAnalysis {
    /// The member whose answer the synthesis agrees with most; absent when
    /// no member answered or the moderator named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreed_with: Option<Tier>,
    /// `stated` when the moderator named that member on its `AGREED:` line,
    /// `similarity` when it did not and the member was found by word
    /// overlap with the synthesis.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "stated", pattern = "^(stated|similarity)$")
    )]
    pub basis: String,
    /// Word overlap (Jaccard, 0..=1) of the synthesis with the agreed
    /// member's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub similarity: Option<f64>,
    /// How long the moderator's call took, in ms.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, example = 812.5))]
    pub moderation_ms: f64,
    /// Members whose answer the moderator read.
    pub members_answered: u32,
    /// Members that failed (their error is in the answer's `members`).
    pub members_failed: u32,
}

/// One tier's part of a council or benchmark answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MemberAnswer {
    /// The tier asked.
    pub tier: Tier,
    /// The decision recorded for this call.
    pub decision: RoutingDecision,
    /// Its answer; absent when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How long the call took, in ms (until it failed, for a failure).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, example = 420.0))]
    pub latency_ms: f64,
    /// The tokens it took, when the upstream said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why it failed; absent when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status the failure would have had on its own (503 no
    /// upstream or circuit open, 429 busy, 502 upstream failed...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// Why its answer stopped (`stop`, `length`, `tool_calls`...), as the
    /// upstream said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The tool calls it answered with, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub tool_calls: Option<crate::api::RawJson>,
}

impl MemberAnswer {
    /// True when it answered.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// `POST /api/query` answer in `council` or `benchmark` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupAnswer {
    /// `council` or `benchmark`.
    pub mode: Mode,
    /// The `groupId` every decision of this query carries.
    pub group_id: String,
    /// Council: the moderator's synthesis (absent when it failed).
    /// Benchmark: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Council: the moderator's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Each member's answer (or failure), in tier order.
    pub members: Vec<MemberAnswer>,
    /// Council: the moderator's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderator: Option<MemberAnswer>,
    /// Council: the moderator's analysis (also on its decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CouncilAnalysis>,
}

/// How many buffered decisions each mode made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ModeMix {
    /// `simple` (including queries sent to a named tier).
    pub simple: u64,
    /// `two-stage`.
    pub two_stage: u64,
    /// `council` (members and moderators).
    pub council: u64,
    /// `benchmark`.
    pub benchmark: u64,
    /// Reported by a router elsewhere without a mode.
    pub unspecified: u64,
}

impl ModeMix {
    /// Counts the modes of `decisions`.
    pub fn of<'a>(decisions: impl IntoIterator<Item = &'a RoutingDecision>) -> ModeMix {
        let mut mix = ModeMix::default();
        for d in decisions {
            let slot = match d.mode {
                Some(Mode::Simple) => &mut mix.simple,
                Some(Mode::TwoStage) => &mut mix.two_stage,
                Some(Mode::Council) => &mut mix.council,
                Some(Mode::Benchmark) => &mut mix.benchmark,
                None => &mut mix.unspecified,
            };
            *slot += 1;
        }
        mix
    }

    /// The counts with their names, in the panel's order.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("two-stage", self.two_stage),
            ("simple", self.simple),
            ("council", self.council),
            ("benchmark", self.benchmark),
            ("unspecified", self.unspecified),
        ]
    }

    /// All decisions counted.
    pub fn total(&self) -> u64 {
        self.named().iter().map(|(_, n)| n).sum()
    }
}

/// The same decisions with each group's together: every decision of a
/// `groupId` follows the group's first (newest) one, in their order;
/// decisions without a group stay where they were.
pub fn group_together(decisions: Vec<RoutingDecision>) -> Vec<RoutingDecision> {
    let mut out: Vec<RoutingDecision> = Vec::with_capacity(decisions.len());
    let mut rest: Vec<Option<RoutingDecision>> = decisions.into_iter().map(Some).collect();
    for i in 0..rest.len() {
        let Some(d) = rest[i].take() else { continue };
        let group = d.group_id.clone();
        out.push(d);
        if let Some(g) = group {
            for slot in rest.iter_mut().skip(i + 1) {
                if slot
                    .as_ref()
                    .is_some_and(|x| x.group_id.as_ref() == Some(&g))
                {
                    out.extend(slot.take());
                }
            }
        }
    }
    out
}

/// The verdict a moderator ends with: the last non-blank line, when it reads
/// `AGREED: Q3` (or `fast`, `balanced`, `powerful`, `none`; any case, in
/// `*` or `_` emphasis, a final `.` allowed). Returns the tier it names
/// (`None` for `none`, or when the last line is no verdict) and the text
/// without that one line, trimmed. Every other line is the moderator's
/// answer and stays, even one that begins with `Agreed:`.
pub fn stated_agreement(text: &str) -> (Option<Tier>, String) {
    let trimmed = text.trim_end();
    let (head, last) = match trimmed.rfind('\n') {
        Some(at) => (&trimmed[..at], &trimmed[at + 1..]),
        None => ("", trimmed),
    };
    match verdict(last) {
        Some(agreed) => (agreed, head.trim().to_owned()),
        None => (None, text.trim().to_owned()),
    }
}

/// `Some(tier or None)` when `line` is a verdict line, else `None`.
fn verdict(line: &str) -> Option<Option<Tier>> {
    let t = line.trim().trim_matches(|c| c == '*' || c == '_');
    let (key, value) = t.split_once(':')?;
    if !key.trim().eq_ignore_ascii_case("agreed") {
        return None;
    }
    let value = value
        .trim()
        .trim_matches(|c| c == '*' || c == '_')
        .trim_end_matches('.')
        .trim();
    if value.eq_ignore_ascii_case("none") {
        return Some(None);
    }
    Tier::ALL
        .into_iter()
        .find(|t| {
            value.eq_ignore_ascii_case(t.label()) || value.eq_ignore_ascii_case(t.internal_name())
        })
        .map(Some)
}

/// Word overlap of two texts: |A ∩ B| / |A ∪ B| over their sets of
/// lowercase alphanumeric words; 0 when both are empty.
pub fn similarity(a: &str, b: &str) -> f64 {
    let words = |s: &str| {
        let mut w: Vec<String> = s
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        w.sort_unstable();
        w.dedup();
        w
    };
    let (a, b) = (words(a), words(b));
    let common = a.iter().filter(|w| b.binary_search(w).is_ok()).count();
    let union = a.len() + b.len() - common;
    if union == 0 {
        0.0
    } else {
        common as f64 / union as f64
    }
}

/// Whom the synthesis agrees with: the member the moderator named, if it
/// answered, else the answered member of highest [`similarity`] (the first
/// of equals). `answers` are the members' tiers and answers; `None` ones
/// failed. Returns the member, the basis and the similarity.
pub fn agreement(
    synthesis: &str,
    stated: Option<Tier>,
    answers: &[(Tier, Option<&str>)],
) -> (Option<Tier>, &'static str, Option<f64>) {
    let answered = || answers.iter().filter_map(|(t, a)| a.map(|a| (*t, a)));
    if let Some(tier) = stated
        && let Some((_, a)) = answered().find(|(t, _)| *t == tier)
    {
        return (Some(tier), "stated", Some(similarity(synthesis, a)));
    }
    let mut best: Option<(Tier, f64)> = None;
    for (tier, a) in answered() {
        let s = similarity(synthesis, a);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((tier, s));
        }
    }
    (best.map(|(t, _)| t), "similarity", best.map(|(_, s)| s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agreed_line_is_read_and_removed() {
        let (t, rest) = stated_agreement("Python is a language.\nAGREED: Q3");
        assert_eq!(
            (t, rest.as_str()),
            (Some(Tier::Q3), "Python is a language.")
        );
        let (t, _) = stated_agreement("x\n**Agreed: balanced.**");
        assert_eq!(t, Some(Tier::Q3));
        let (t, rest) = stated_agreement("x\nAGREED: none");
        assert_eq!((t, rest.as_str()), (None, "x"));
        let (t, rest) = stated_agreement("no such line");
        assert_eq!((t, rest.as_str()), (None, "no such line"));
        assert_eq!(stated_agreement("AGREED: Q9").0, None);
    }

    #[test]
    fn only_the_final_verdict_line_is_consumed() {
        let text = "Agreed: every member says 42, and that matters.\nSo 42.\nAGREED: Q4";
        let (t, rest) = stated_agreement(text);
        assert_eq!(t, Some(Tier::Q4));
        assert_eq!(
            rest,
            "Agreed: every member says 42, and that matters.\nSo 42."
        );
        // A last line that begins with Agreed: but names no member is answer.
        let text = "So 42.\nAgreed: every member says 42, and that matters.";
        assert_eq!(stated_agreement(text), (None, text.to_owned()));
        // A verdict-like line before the end is the moderator's text too.
        let text = "AGREED: Q2\nthen more thought";
        assert_eq!(stated_agreement(text), (None, text.to_owned()));
        assert_eq!(
            stated_agreement("x\n\n**AGREED: powerful**\n\n"),
            (Some(Tier::Q4), "x".to_owned())
        );
    }

    #[test]
    fn similarity_is_jaccard_of_words() {
        assert_eq!(similarity("a b c", "A, b! d"), 0.5);
        assert_eq!(similarity("", ""), 0.0);
        assert_eq!(similarity("same words", "words same"), 1.0);
    }

    #[test]
    fn agreement_prefers_the_stated_member_if_it_answered() {
        let answers = [
            (Tier::Q2, Some("cats are pets")),
            (Tier::Q3, None),
            (Tier::Q4, Some("dogs bark loudly")),
        ];
        let (t, basis, _) = agreement("dogs bark", Some(Tier::Q2), &answers);
        assert_eq!((t, basis), (Some(Tier::Q2), "stated"));
        let (t, basis, s) = agreement("dogs bark", None, &answers);
        assert_eq!((t, basis), (Some(Tier::Q4), "similarity"));
        assert!((s.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // A named member that failed is no agreement.
        assert_eq!(agreement("x", Some(Tier::Q3), &answers).1, "similarity");
        assert_eq!(agreement("x", None, &[(Tier::Q2, None)]).0, None);
    }

    #[test]
    fn a_groups_decisions_are_put_together() {
        let d = |id: &str, group: Option<&str>| {
            let mut d =
                RoutingDecision::new(id.into(), "q", Tier::Q2, 0.0, chrono::DateTime::UNIX_EPOCH)
                    .unwrap();
            d.group_id = group.map(str::to_owned);
            d
        };
        let ids = |v: Vec<RoutingDecision>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
        let got = group_together(vec![
            d("m", Some("g")),
            d("x", None),
            d("a", Some("g")),
            d("y", Some("h")),
            d("b", Some("g")),
            d("z", Some("h")),
        ]);
        assert_eq!(ids(got), ["m", "a", "b", "x", "y", "z"]);
        assert!(group_together(Vec::new()).is_empty());
    }

    #[test]
    fn mode_mix_counts_every_mode() {
        let d = |mode| {
            RoutingDecision::new("i".into(), "q", Tier::Q2, 0.0, chrono::DateTime::UNIX_EPOCH)
                .unwrap()
                .with_seq(1, mode)
        };
        let ds = [
            d(Some(Mode::Council)),
            d(Some(Mode::Council)),
            d(Some(Mode::Benchmark)),
            d(None),
            d(Some(Mode::Simple)),
        ];
        let mix = ModeMix::of(&ds);
        assert_eq!(
            (
                mix.council,
                mix.benchmark,
                mix.unspecified,
                mix.simple,
                mix.two_stage
            ),
            (2, 1, 1, 1, 0)
        );
        assert_eq!(mix.total(), 5);
    }
}
