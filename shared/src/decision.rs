//! Routing decisions and the validation every path that creates one shares.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::{Complexity, Tier};

/// How many characters (Unicode scalar values) of a query a decision keeps.
pub const MAX_QUERY_CHARS: usize = 100;
/// The highest complexity score; the lowest is 0.
pub const MAX_SCORE: f64 = 15.0;

/// One routing decision, exactly as the seed's `recentDecisions` items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RoutingDecision {
    /// Unique id of the decision.
    #[cfg_attr(feature = "openapi", schema(example = "19a6b2c3d4e-42"))]
    pub id: String,
    /// The query, cut to its first 100 characters.
    #[cfg_attr(feature = "openapi", schema(example = "What is Python?"))]
    pub query: String,
    /// The tier the query was routed to.
    pub tier: Tier,
    /// The class of `score`.
    pub complexity: Complexity,
    /// When the decision was made (RFC 3339, UTC).
    #[serde(with = "crate::decision::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub timestamp: DateTime<Utc>,
    /// Complexity score, 0..=15.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0.0, maximum = 15.0, example = 4.5)
    )]
    pub score: f64,
}

impl RoutingDecision {
    /// Builds a decision from raw input: the query must hold a non-whitespace
    /// character (it is cut to 100 characters), the score must be finite and in
    /// 0..=15. The complexity follows from the score.
    pub fn new(
        id: String,
        query: &str,
        tier: Tier,
        score: f64,
        timestamp: DateTime<Utc>,
    ) -> Result<Self, DecisionError> {
        validate_query(query)?;
        validate_score(score)?;
        Ok(RoutingDecision {
            id,
            query: truncate_query(query).to_owned(),
            tier,
            complexity: Complexity::from_score(score),
            timestamp,
            score,
        })
    }
}

/// A decision as the service keeps it: the wire decision plus how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    /// The decision as it goes on the wire.
    pub decision: RoutingDecision,
    /// How long the router took to decide, in milliseconds (finite, >= 0).
    pub decision_time_ms: f64,
}

impl RecordedDecision {
    /// Pairs a decision with its validated decision time.
    pub fn new(decision: RoutingDecision, decision_time_ms: f64) -> Result<Self, DecisionError> {
        validate_decision_time(decision_time_ms)?;
        Ok(RecordedDecision {
            decision,
            decision_time_ms,
        })
    }
}

/// Why a decision could not be built; each names the offending field.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionError {
    /// The query is empty or only whitespace.
    EmptyQuery,
    /// The score is NaN, infinite or outside 0..=15.
    Score(f64),
    /// The decision time is NaN, infinite or negative.
    DecisionTime(f64),
}

impl DecisionError {
    /// The wire name of the field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            DecisionError::EmptyQuery => "query",
            DecisionError::Score(_) => "score",
            DecisionError::DecisionTime(_) => "decisionTimeMs",
        }
    }
}

impl fmt::Display for DecisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionError::EmptyQuery => {
                f.write_str("query: must contain at least one non-whitespace character")
            }
            DecisionError::Score(s) => {
                write!(f, "score: must be a finite number in 0..=15, got {s}")
            }
            DecisionError::DecisionTime(t) => {
                write!(f, "decisionTimeMs: must be a finite number >= 0, got {t}")
            }
        }
    }
}

impl std::error::Error for DecisionError {}

/// Accepts a query holding at least one non-whitespace character.
pub fn validate_query(query: &str) -> Result<(), DecisionError> {
    if query.chars().any(|c| !c.is_whitespace()) {
        Ok(())
    } else {
        Err(DecisionError::EmptyQuery)
    }
}

/// Accepts a finite score in 0..=15; never clamps.
pub fn validate_score(score: f64) -> Result<(), DecisionError> {
    if score.is_finite() && (0.0..=MAX_SCORE).contains(&score) {
        Ok(())
    } else {
        Err(DecisionError::Score(score))
    }
}

/// Accepts a finite decision time >= 0.
pub fn validate_decision_time(ms: f64) -> Result<(), DecisionError> {
    if ms.is_finite() && ms >= 0.0 {
        Ok(())
    } else {
        Err(DecisionError::DecisionTime(ms))
    }
}

/// The first 100 characters of `query`, never splitting a character.
pub fn truncate_query(query: &str) -> &str {
    match query.char_indices().nth(MAX_QUERY_CHARS) {
        Some((end, _)) => &query[..end],
        None => query,
    }
}

/// RFC 3339 UTC with millisecond precision and a `Z`, the same on every path.
pub(crate) mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-11-08T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn truncation_keeps_100_scalar_values() {
        let long = "x".repeat(250);
        assert_eq!(truncate_query(&long).chars().count(), 100);
        let short = "What is Python?";
        assert_eq!(truncate_query(short), short);
        let exact = "y".repeat(100);
        assert_eq!(truncate_query(&exact), exact);
    }

    #[test]
    fn truncation_never_splits_a_character() {
        // Multi-byte scalars straddling the cut: 3-byte CJK, 4-byte emoji, and
        // combining marks (each a scalar of its own).
        for unit in ["漢", "🦀", "e\u{301}", "ß"] {
            let q = unit.repeat(150);
            let cut = truncate_query(&q);
            assert_eq!(cut.chars().count(), 100, "{unit}");
            assert!(q.starts_with(cut));
        }
    }

    #[test]
    fn scores_outside_range_are_rejected_not_clamped() {
        for bad in [
            -0.001,
            15.0001,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            let err = RoutingDecision::new("1".into(), "q", Tier::Q2, bad, at()).unwrap_err();
            assert_eq!(err.field(), "score");
        }
        for good in [0.0, 2.9, 3.0, 7.0, 15.0] {
            let d = RoutingDecision::new("1".into(), "q", Tier::Q2, good, at()).unwrap();
            assert_eq!(d.score, good);
            assert_eq!(d.complexity, Complexity::from_score(good));
        }
    }

    #[test]
    fn blank_queries_are_rejected() {
        for bad in ["", " ", "\n\t", "\u{3000}"] {
            let err = RoutingDecision::new("1".into(), bad, Tier::Q2, 1.0, at()).unwrap_err();
            assert_eq!(err, DecisionError::EmptyQuery);
            assert!(err.to_string().starts_with("query"));
        }
    }

    #[test]
    fn decision_times_must_be_finite_and_non_negative() {
        let d = RoutingDecision::new("1".into(), "q", Tier::Q2, 1.0, at()).unwrap();
        for bad in [-1.0, -0.0001, f64::NAN, f64::INFINITY] {
            let err = RecordedDecision::new(d.clone(), bad).unwrap_err();
            assert_eq!(err.field(), "decisionTimeMs");
        }
        assert!(RecordedDecision::new(d, 0.0).is_ok());
    }

    #[test]
    fn timestamp_round_trips_as_rfc3339_utc() {
        let d = RoutingDecision::new("1".into(), "q", Tier::Q2, 1.0, at()).unwrap();
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["timestamp"], "2025-11-08T12:00:00.000Z");
        let back: RoutingDecision = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
    }
}
