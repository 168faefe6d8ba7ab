//! Request and response bodies of the router's endpoints, shared so the panel
//! decodes exactly what the server encodes.

use serde::{Deserialize, Deserializer, Serialize};

use crate::RoutingDecision;

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
}

impl Mode {
    /// The wire name: `simple` or `two-stage`.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::TwoStage => "two-stage",
        }
    }
}

/// `POST /api/query` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryRequest {
    /// The user's query; at least one non-whitespace character.
    #[cfg_attr(feature = "openapi", schema(example = "What is Python?"))]
    pub query: String,
    /// `simple` or `two-stage` (the default; `null` also means the default).
    #[serde(default, deserialize_with = "null_as_default")]
    pub mode: Mode,
    /// Most tokens the answer may have; a positive integer when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = 256, minimum = 1))]
    pub max_tokens: Option<u64>,
}

/// `POST /api/query` success body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryResponse {
    /// The model's answer; null when the upstream answered without content.
    pub answer: Option<String>,
    /// The model the upstream was asked for, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How the query was routed.
    pub decision: QueryDecision,
}

/// A routing decision as `/api/query` reports it: the status's decision plus
/// the internal tier name, the mode and how long deciding took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueryDecision {
    /// The recorded decision (id, query, tier, complexity, timestamp, score).
    #[serde(flatten)]
    pub decision: RoutingDecision,
    /// `fast`, `balanced` or `powerful`.
    #[cfg_attr(feature = "openapi", schema(example = "balanced"))]
    pub tier_name: String,
    /// The router's mode.
    pub mode: Mode,
    /// Time spent deciding, in milliseconds.
    pub decision_time_ms: f64,
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
    pub decision: Option<QueryDecision>,
}

/// An explicit `null` reads as the field's default, as an absent field does.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
