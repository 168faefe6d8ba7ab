//! Stage 1 of two-stage routing: how complex a query is, 0..=15.
//!
//! `heuristic` (the default) is the local scorer (`--scorer`): explainable
//! features, no call, the same score for the same text. `model` asks the
//! fast tier's upstream, as the seed's stage 1 did, with the fixed prompt
//! [`PROMPT`], and reads its answer strictly: one number in 0..=15 and
//! nothing else. On a timeout (`--assessor-timeout`), a failed call or any
//! other answer, the heuristic decides, and the fallback is counted by
//! reason (`orch_assessor_fallbacks_total`, the status's `assessor`).

use std::time::{Duration, Instant};

use serde_json::json;
use shared::Signal;
use shared::Tier;
use shared::api::Usage;
use shared::insight::validate_usage;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::heuristic::Assessment;
use crate::telemetry::Telemetry;
use crate::upstream::Upstreams;

/// Which assessor scores two-stage queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AssessorKind {
    /// The explainable heuristic of [`crate::routing`].
    #[default]
    Heuristic,
    /// The fast tier's model, with the heuristic as its fallback.
    Model,
}

impl AssessorKind {
    /// The flag's value: `heuristic` or `model`.
    pub const fn name(self) -> &'static str {
        match self {
            AssessorKind::Heuristic => "heuristic",
            AssessorKind::Model => "model",
        }
    }
}

/// The prompt the model assessor sends, the query following it.
pub const PROMPT: &str = "Rate how complex the following user query is to answer well, \
on a scale from 0 (trivial, a fact or a greeting) to 15 (a hard multi-part task: \
design, proof, or substantial code). Answer with the number only, nothing else.\n\nQuery:\n";

/// The most tokens the model may answer with: a number needs a few.
const MAX_ANSWER_TOKENS: u64 = 8;

/// The name of the one signal a model's score carries.
pub const MODEL_SIGNAL: &str = "model assessment";

/// A score, the signals that sum to it, and how long it took to get.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The assessment.
    pub assessment: Assessment,
    /// Milliseconds spent assessing (the model's call included).
    pub ms: f64,
    /// When the model was asked and its answer not used: why.
    pub fallback: Option<Fallback>,
}

/// Why the model assessor's score was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// No answer within `--assessor-timeout`.
    Timeout,
    /// An answer that is not one number in 0..=15.
    BadAnswer,
    /// The call failed (no upstream, circuit open, HTTP error...).
    Error,
    /// The fast tier had `--max-inflight` calls in flight: no place.
    Busy,
}

impl Fallback {
    /// Every reason, in label order.
    pub const ALL: [Fallback; 4] = [
        Fallback::Timeout,
        Fallback::BadAnswer,
        Fallback::Error,
        Fallback::Busy,
    ];

    /// The `reason` label.
    pub const fn label(self) -> &'static str {
        match self {
            Fallback::Timeout => "timeout",
            Fallback::BadAnswer => "bad_answer",
            Fallback::Error => "error",
            Fallback::Busy => "busy",
        }
    }
}

/// The model assessor's own counters: calls asked for, fallbacks by reason
/// and the tokens its calls took (`orch_assessor_*` on `/metrics` once
/// [`Counts::registered`]; the status's `assessor`).
#[derive(Debug, Default)]
pub struct Counts {
    calls: Counter,
    fallbacks: [Counter; 4],
    /// Prompt, completion.
    tokens: [Counter; 2],
}

impl Counts {
    /// Counters at zero, registered in `telemetry`.
    pub fn registered(telemetry: &Telemetry) -> Self {
        type Labels = Vec<(&'static str, String)>;
        let calls = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_assessor_calls",
            "Complexity assessments asked of the fast tier's model (--assessor model)",
            calls.clone(),
        );
        let fallbacks = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_assessor_fallbacks",
            "Model assessments replaced by the heuristic, by reason (timeout, bad_answer, error, busy)",
            fallbacks.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        telemetry.register(
            "orch_assessor_tokens",
            "Tokens the model assessor's calls took, by direction (in: prompt, out: completion); apart from the tier's",
            tokens.clone(),
        );
        Counts {
            calls: calls.get_or_create(&Vec::new()).clone(),
            fallbacks: Fallback::ALL.map(|f| {
                fallbacks
                    .get_or_create(&vec![("reason", f.label().to_owned())])
                    .clone()
            }),
            tokens: ["in", "out"].map(|d| {
                tokens
                    .get_or_create(&vec![("direction", d.to_owned())])
                    .clone()
            }),
        }
    }

    /// Model assessments asked for, and fallbacks by reason.
    pub fn counts(&self) -> (u64, [u64; 4]) {
        (
            self.calls.get(),
            self.fallbacks.each_ref().map(Counter::get),
        )
    }
}

/// Scores `query` as `kind` says, within `timeout` for the model. The
/// model's call is admitted like any call of the fast tier (one of its
/// `--max-inflight` places, or the heuristic at once); the tokens it took
/// are handed to `spent`, to be priced into the spend.
pub async fn score(
    kind: AssessorKind,
    scorer: crate::routing::Scorer,
    upstreams: &Upstreams,
    counts: &Counts,
    query: &str,
    timeout: Duration,
    spent: impl FnOnce(Usage),
) -> Scored {
    let started = Instant::now();
    let fallback = match kind {
        AssessorKind::Heuristic => None,
        AssessorKind::Model => {
            counts.calls.inc();
            let asked = tokio::time::timeout(timeout, ask(upstreams, query)).await;
            let usage = match &asked {
                Ok(Ok((_, usage)) | Err((_, usage))) => *usage,
                Err(_) => None,
            };
            if let Some(usage) = usage {
                counts.tokens[0].inc_by(usage.prompt_tokens);
                counts.tokens[1].inc_by(usage.completion_tokens);
                spent(usage);
            }
            match asked {
                Ok(Ok((score, _))) => {
                    return Scored {
                        assessment: Assessment {
                            score,
                            signals: vec![Signal::new(MODEL_SIGNAL, score)],
                        },
                        ms: started.elapsed().as_secs_f64() * 1e3,
                        fallback: None,
                    };
                }
                Ok(Err((why, _))) => Some(why),
                Err(_) => Some(Fallback::Timeout),
            }
        }
    };
    if let Some(why) = fallback {
        counts.fallbacks[why as usize].inc();
        tracing::warn!(
            reason = why.label(),
            "model assessment not used: the heuristic decides"
        );
    }
    Scored {
        assessment: scorer.assess(query),
        ms: started.elapsed().as_secs_f64() * 1e3,
        fallback,
    }
}

/// One call to the fast tier's model, its answer read by [`parse_score`],
/// with the tokens it took (whether or not the answer was a score).
async fn ask(
    upstreams: &Upstreams,
    query: &str,
) -> Result<(f64, Option<Usage>), (Fallback, Option<Usage>)> {
    let _place = upstreams
        .try_begin(Tier::Q2)
        .map_err(|_| (Fallback::Busy, None))?;
    let mut body = serde_json::Map::new();
    body.insert(
        "messages".into(),
        json!([{"role": "user", "content": format!("{PROMPT}{query}")}]),
    );
    body.insert("max_tokens".into(), json!(MAX_ANSWER_TOKENS));
    body.insert("temperature".into(), json!(0));
    let (answer, _) = upstreams
        .assess(Tier::Q2, body)
        .await
        .map_err(|_| (Fallback::Error, None))?;
    let usage = answer.usage.filter(|u| validate_usage(u).is_ok());
    match answer.content.as_deref().and_then(parse_score) {
        Some(score) => Ok((score, usage)),
        None => Err((Fallback::BadAnswer, usage)),
    }
}

/// The score in a model's answer: the whole answer, trimmed, must be one
/// decimal number (`7`, `7.5`, `12.25`) in 0..=15; it is kept to hundredths.
/// Anything else (`7/15`, `about 7`, `seven`, `1e1`, `-1`, `16`) is `None`.
pub fn parse_score(answer: &str) -> Option<f64> {
    let t = answer.trim();
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = (1..=2).contains(&whole.len())
        && digits(whole)
        && digits(fraction)
        && (!t.contains('.') || !fraction.is_empty())
        && fraction.len() <= 6;
    if !ok {
        return None;
    }
    let x: f64 = t.parse().ok()?;
    (0.0..=shared::MAX_SCORE)
        .contains(&x)
        .then(|| (x * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_number_in_range_is_a_score() {
        for (answer, want) in [
            ("7", Some(7.0)),
            (" 12.5\n", Some(12.5)),
            ("0", Some(0.0)),
            ("15", Some(15.0)),
            ("3.333", Some(3.33)),
        ] {
            assert_eq!(parse_score(answer), want, "{answer:?}");
        }
        for bad in [
            "",
            "16",
            "-1",
            "7/15",
            "about 7",
            "seven",
            "1e1",
            "7.",
            ".5",
            "007",
            "7 8",
            "NaN",
            "inf",
            "15.01",
            "7.5 points",
        ] {
            assert_eq!(parse_score(bad), None, "{bad:?}");
        }
    }
}
