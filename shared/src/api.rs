//! Request and response bodies of the router's endpoints, shared so the panel
//! decodes exactly what the server encodes.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{RoutingDecision, Tier};

/// The largest `max_tokens` a query may ask for.
pub const MAX_TOKENS: u64 = 1 << 20;

/// How the router picks a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Everything to the fast tier; no assessment.
    Simple,
    /// Assess complexity, then balanced (< 7) or powerful (>= 7).
    #[default]
    TwoStage,
    /// Every council member (all three tiers by default) answers in
    /// parallel, then the moderator tier writes the final answer from theirs.
    Council,
    /// The same query to every tier at once, each answer measured.
    Benchmark,
}

impl Mode {
    /// The tier this mode sends a query of `score` to: `simple` always the
    /// fast tier (Q2); `two-stage` the balanced tier (Q3) below
    /// `q4_threshold` points, the powerful one (Q4) from it, and never Q2.
    /// Council and benchmark send a query to several tiers; their score
    /// only explains it, so like `simple` they answer the fast tier here.
    pub fn tier_for(self, score: f64, q4_threshold: f64) -> Tier {
        match self {
            Mode::Simple | Mode::Council | Mode::Benchmark => Tier::Q2,
            Mode::TwoStage => crate::insight::two_stage_tier(score, q4_threshold),
        }
    }

    /// Every mode, in the order the panel offers them.
    pub const ALL: [Mode; 4] = [Mode::TwoStage, Mode::Simple, Mode::Council, Mode::Benchmark];

    /// The wire name: `simple`, `two-stage`, `council` or `benchmark`.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::TwoStage => "two-stage",
            Mode::Council => "council",
            Mode::Benchmark => "benchmark",
        }
    }

    /// The mode of that wire name.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// True for the modes that ask several tiers (council, benchmark).
    pub const fn is_group(self) -> bool {
        matches!(self, Mode::Council | Mode::Benchmark)
    }
}

/// `POST /api/query` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryRequest {
    /// The user's query, routed whole. Its first 100 characters (cut at a
    /// grapheme boundary) are recorded and must hold a visible character.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "What is Python?", min_length = 1)
    )]
    pub query: String,
    /// `simple`, `two-stage` (the default; `null` also means the default),
    /// `council` or `benchmark`.
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub mode: Mode,
    /// Most tokens the answer may have: 1..=1048576 when given.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(example = 256, minimum = 1, maximum = 1_048_576)
    )]
    pub max_tokens: Option<u64>,
}

/// `POST /api/query` success body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryResponse {
    /// The model's answer; null only when it answered with tool calls
    /// instead (see `toolCalls`).
    pub answer: Option<String>,
    /// The model that answered, as the upstream's answer names it (else the
    /// configured `--model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How the query was routed: the recorded decision, as the status and
    /// the stream show it.
    pub decision: RoutingDecision,
    /// Beyond the first version: why the model stopped (`stop`, `length`,
    /// `tool_calls`, `content_filter`...), as the upstream said.
    #[serde(
        default,
        rename = "finishReason",
        skip_serializing_if = "Option::is_none"
    )]
    pub finish_reason: Option<String>,
    /// Beyond the first version: the tool calls of the answer, as the
    /// upstream sent them (OpenAI's `message.tool_calls`).
    #[serde(default, rename = "toolCalls", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub tool_calls: Option<RawJson>,
    /// Beyond the first version: the upstream that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Beyond the first version: the token counts the upstream reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Beyond the first version: upstream calls it took (1 without retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// JSON passed through as it came, never decoded into a tree (which would
/// cost the panel's WASM a JSON value type it does not otherwise need).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Tokens of one answer, as the upstream reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    #[serde(deserialize_with = "whole_count")]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(deserialize_with = "whole_count")]
    pub completion_tokens: u64,
}

/// What an upstream said when a query failed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UpstreamFailure {
    /// The upstream's name.
    pub name: String,
    /// How the call ended.
    pub kind: crate::metrics::Outcome,
    /// The HTTP status it answered, when it answered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its error message (control characters removed, at most 500
    /// characters, any configured key masked).
    pub message: String,
    /// Upstream calls made for the query (retries included).
    pub attempts: u32,
}

/// The JSON body of every API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, for a human.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "score: must be a finite number in 0..=15, got 16")
    )]
    pub error: String,
    /// For `/api/query` failures after routing: the decision that was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<RoutingDecision>,
    /// For `/api/query` failures at an upstream: which one, and what it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamFailure>,
}

/// A non-negative whole number, written as JSON Schema counts integers:
/// `256` or `256.0` alike (but not `256.5`); `null` is none.
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Whole;
    impl<'de> serde::de::Visitor<'de> for Whole {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
            u64::try_from(n)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Self::Value, E> {
            // Below 2^53 every whole f64 is exact.
            if x.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&x) {
                Ok(Some(x as u64))
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(x), &self))
            }
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Whole)
        }
    }
    d.deserialize_option(Whole)
}

/// A count as JSON Schema's `integer` has it: `4580.0` is 4580.
fn whole_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole_number(d)?.ok_or_else(|| serde::de::Error::custom("expected a whole number, got null"))
}

/// An explicit `null` reads as the field's default, as an absent field does.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_is_any_json_integer() {
        let read = |json: &str| serde_json::from_str::<QueryRequest>(json).map(|r| r.max_tokens);
        assert_eq!(read(r#"{"query": "q"}"#).unwrap(), None);
        assert_eq!(read(r#"{"query": "q", "max_tokens": null}"#).unwrap(), None);
        assert_eq!(
            read(r#"{"query": "q", "max_tokens": 256}"#).unwrap(),
            Some(256)
        );
        assert_eq!(
            read(r#"{"query": "q", "max_tokens": 256.0}"#).unwrap(),
            Some(256)
        );
        assert_eq!(
            read(r#"{"query": "q", "max_tokens": 2.56e2}"#).unwrap(),
            Some(256)
        );
        for bad in ["256.5", "-1", "-1.0", "\"256\"", "true", "1e300"] {
            let json = format!(r#"{{"query": "q", "max_tokens": {bad}}}"#);
            assert!(read(&json).is_err(), "{bad}");
        }
    }
}
