//! Routing decisions and the validation every path that creates one shares.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::api::Mode;
use crate::{Complexity, Tier};

/// How many characters (Unicode scalar values) of a query a decision keeps.
pub const MAX_QUERY_CHARS: usize = 100;
/// The highest complexity score; the lowest is 0.
pub const MAX_SCORE: f64 = 15.0;
/// The longest decision time accepted, in ms (one hour): far beyond any real
/// router, and small enough that no sum of accepted times can overflow.
pub const MAX_DECISION_TIME_MS: f64 = 3_600_000.0;

/// Characters that show nothing on their own: Unicode's White_Space, the
/// C0/C1 controls, every Default_Ignorable_Code_Point (zero-width spaces and
/// joiners, bidi controls, variation selectors, fillers, tags) and a few
/// blank glyphs (braille blank, interlinear annotation marks). Sorted,
/// disjoint, inclusive ranges; the OpenAPI pattern is built from this table.
pub const INVISIBLE: &[(char, char)] = &[
    ('\u{0000}', '\u{0020}'),
    ('\u{007F}', '\u{00A0}'),
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{2000}', '\u{200F}'),
    ('\u{2028}', '\u{202F}'),
    ('\u{205F}', '\u{206F}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFFB}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

/// Whether `c` shows nothing on its own (see [`INVISIBLE`]).
pub fn is_invisible(c: char) -> bool {
    INVISIBLE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// A regular expression (ECMA-262 with the `u` flag, and Python's `re`) that
/// matches exactly the queries whose first 100 characters hold a visible
/// one: the OpenAPI document's `pattern` for query fields.
pub fn visible_query_pattern() -> String {
    visible_pattern(MAX_QUERY_CHARS)
}

/// A regular expression (as [`visible_query_pattern`]) matching the texts
/// whose first `within` characters hold a visible one.
pub fn visible_pattern(within: usize) -> String {
    let mut class = String::new();
    for &(lo, hi) in INVISIBLE {
        push_class_char(&mut class, lo);
        if hi != lo {
            class.push('-');
            push_class_char(&mut class, hi);
        }
    }
    format!("^[{class}]{{0,{}}}[^{class}]", within.saturating_sub(1))
}

/// BMP characters as `\uXXXX` (the same in both dialects); the few astral
/// ones literally, which both read alike.
fn push_class_char(out: &mut String, c: char) {
    use std::fmt::Write as _;
    if (c as u32) <= 0xFFFF {
        let _ = write!(out, "\\u{:04X}", c as u32);
    } else {
        out.push(c);
    }
}

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
    /// Beyond the seed: this instance's sequence number of the decision, 1,
    /// 2, 3... in the order decisions were recorded (the `id:` of its `decision`
    /// event on the stream). 0 from a server that predates it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, example = 42))]
    pub seq: u64,
    /// Beyond the seed: the router's mode; absent when a router that lives
    /// elsewhere reported the decision without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Beyond the seed: time spent deciding, in ms (finite, 0..=3600000).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0.0, maximum = 3_600_000.0, example = 0.012)
    )]
    pub decision_time_ms: Option<f64>,
    /// Beyond the seed: the tier's internal name, `fast`, `balanced` or
    /// `powerful`.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(example = "balanced", pattern = "^(fast|balanced|powerful)$")
    )]
    pub tier_name: String,
    /// Beyond the seed: the signals that made the score, each with the
    /// points it contributed; they sum to the score for the router's own
    /// decisions. Absent when none were given (simple mode assesses nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Vec<crate::insight::Signal>>,
    /// Beyond the seed: the tokens the answer took, once known (from the
    /// upstream's `usage`, or as reported by a router elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::api::Usage>,
    /// Beyond the seed: the group of a council or benchmark query; every
    /// member call (and a council's moderator call) carries the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "19a6b2c3d4e-40"))]
    pub group_id: Option<String>,
    /// Beyond the seed: on a council's moderator decision, the moderator's
    /// analysis (whose answer it agreed with, how long it took).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::group::CouncilAnalysis>,
    /// Beyond the seed: the id of the virtual key that asked (never its
    /// secret); absent for a static `--api-key` or no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "key-3f2a9c0d1e4b5a67"))]
    pub key_id: Option<String>,
    /// Beyond the seed: the team of that key, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Beyond the seed: shadow judging's verdict on this decision's answer
    /// against Q4's (only from the store, once judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::shadow::Verdict>,
}

impl RoutingDecision {
    /// Builds a decision from raw input: the query is cut to 100 characters
    /// (see [`stored_query`]) and must still show something, the score must be
    /// finite and in 0..=15 (`-0` is stored as `0`). The complexity follows
    /// from the score.
    pub fn new(
        id: String,
        query: &str,
        tier: Tier,
        score: f64,
        timestamp: DateTime<Utc>,
    ) -> Result<Self, DecisionError> {
        let query = stored_query(query)?;
        Self::from_kept(id, query, tier, score, timestamp)
    }

    /// [`RoutingDecision::new`] for a query already cut: `kept` must be what
    /// [`stored_query`] keeps of it (text of at most 100 characters holding a
    /// visible one). For fixed texts, such as the mock data's, so the panel
    /// does not carry the grapheme tables it would never use.
    pub fn from_kept(
        id: String,
        kept: &str,
        tier: Tier,
        score: f64,
        timestamp: DateTime<Utc>,
    ) -> Result<Self, DecisionError> {
        debug_assert_eq!(stored_query(kept), Ok(kept));
        validate_score(score)?;
        let score = score + 0.0; // -0.0 becomes 0.0
        Ok(RoutingDecision {
            id,
            query: kept.to_owned(),
            tier,
            complexity: Complexity::from_score(score),
            timestamp,
            score,
            seq: 0,
            mode: None,
            decision_time_ms: None,
            tier_name: tier.internal_name().to_owned(),
            signals: None,
            usage: None,
            group_id: None,
            analysis: None,
            key_id: None,
            team: None,
            verdict: None,
        })
    }

    /// The same decision with its sequence number and the router's mode.
    pub fn with_seq(mut self, seq: u64, mode: Option<Mode>) -> Self {
        self.seq = seq;
        self.mode = mode;
        self
    }
}

/// Merges two lists of decisions, each newest first (by
/// [`crate::cluster::newer`]: one instance's in `seq` order, several
/// instances' by time), into one newest first, keeping at most `keep`; where
/// both hold a decision (same id), `fresh`'s copy wins (it may have learnt
/// its token counts since). Linear, for a client holding a whole buffer: a
/// status refreshes it, and each decision a stream pushes (new, updated, or
/// another instance's) is a `fresh` of one.
pub fn merge_newest_first(
    fresh: Vec<RoutingDecision>,
    held: Vec<RoutingDecision>,
    keep: usize,
) -> Vec<RoutingDecision> {
    let mut out = Vec::with_capacity(keep.min(fresh.len() + held.len()));
    let mut fresh = fresh.into_iter().peekable();
    let mut held = held.into_iter().peekable();
    while out.len() < keep {
        let next = match (fresh.peek(), held.peek()) {
            (Some(f), Some(h)) if h.id == f.id => {
                held.next();
                fresh.next()
            }
            (Some(f), Some(h)) if crate::cluster::newer(h, f).is_gt() => held.next(),
            (Some(_), _) => fresh.next(),
            (None, _) => held.next(),
        };
        match next {
            Some(d) => out.push(d),
            None => break,
        }
    }
    out
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
    /// Pairs a decision with its validated decision time (`-0` stored as `0`).
    pub fn new(decision: RoutingDecision, decision_time_ms: f64) -> Result<Self, DecisionError> {
        validate_decision_time(decision_time_ms)?;
        let decision_time_ms = decision_time_ms + 0.0;
        Ok(RecordedDecision {
            decision: RoutingDecision {
                decision_time_ms: Some(decision_time_ms),
                ..decision
            },
            decision_time_ms,
        })
    }
}

/// Why a decision could not be built; each names the offending field.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionError {
    /// The query holds no visible character.
    EmptyQuery,
    /// The query's visible characters all lie beyond the stored first 100.
    BlankWhenCut,
    /// The score is NaN, infinite or outside 0..=15.
    Score(f64),
    /// The decision time is NaN, infinite or negative.
    DecisionTime(f64),
}

impl DecisionError {
    /// The wire name of the field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            DecisionError::EmptyQuery | DecisionError::BlankWhenCut => "query",
            DecisionError::Score(_) => "score",
            DecisionError::DecisionTime(_) => "decisionTimeMs",
        }
    }
}

impl fmt::Display for DecisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionError::EmptyQuery => f.write_str(
                "query: must contain a visible character (not only whitespace or invisible format characters)",
            ),
            DecisionError::BlankWhenCut => write!(
                f,
                "query: its first {MAX_QUERY_CHARS} characters, the part that is kept, hold nothing visible"
            ),
            DecisionError::Score(s) => {
                write!(f, "score: must be a finite number in 0..=15, got {s}")
            }
            DecisionError::DecisionTime(t) => write!(
                f,
                "decisionTimeMs: must be a finite number in 0..={MAX_DECISION_TIME_MS}, got {t}"
            ),
        }
    }
}

impl std::error::Error for DecisionError {}

/// Accepts a query whose stored part (see [`stored_query`]) shows something.
pub fn validate_query(query: &str) -> Result<(), DecisionError> {
    stored_query(query).map(drop)
}

/// The text a decision keeps of `query`: its first 100 characters, cut at a
/// grapheme boundary; refused when that text holds no visible character.
pub fn stored_query(query: &str) -> Result<&str, DecisionError> {
    let kept = truncate_query(query);
    if kept.chars().any(|c| !is_invisible(c)) {
        Ok(kept)
    } else if query.chars().any(|c| !is_invisible(c)) {
        Err(DecisionError::BlankWhenCut)
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

/// Accepts a finite decision time in 0..=3,600,000 ms.
pub fn validate_decision_time(ms: f64) -> Result<(), DecisionError> {
    if ms.is_finite() && (0.0..=MAX_DECISION_TIME_MS).contains(&ms) {
        Ok(())
    } else {
        Err(DecisionError::DecisionTime(ms))
    }
}

/// The longest prefix of `query` that ends at a grapheme boundary and holds
/// at most 100 characters: an emoji sequence or a letter with its accents is
/// kept whole or not at all. Only the boundary at the cut is examined, not
/// every grapheme of the text.
pub fn truncate_query(query: &str) -> &str {
    use unicode_segmentation::GraphemeCursor;
    let Some((cut, _)) = query.char_indices().nth(MAX_QUERY_CHARS) else {
        return query;
    };
    // The whole text is the chunk, so the cursor never asks for more context.
    let mut cursor = GraphemeCursor::new(cut, query.len(), true);
    match cursor.is_boundary(query, 0) {
        Ok(true) => &query[..cut],
        Ok(false) => match cursor.prev_boundary(query, 0) {
            Ok(Some(at)) => &query[..at],
            _ => "",
        },
        Err(_) => {
            use unicode_segmentation::UnicodeSegmentation as _;
            let mut end = 0;
            for (at, grapheme) in query.grapheme_indices(true) {
                if at + grapheme.len() > cut {
                    break;
                }
                end = at + grapheme.len();
            }
            &query[..end]
        }
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

/// A fixed time for the unit tests of this crate.
#[cfg(test)]
pub(crate) fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-08T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // a letter with a combining accent (two scalars, one grapheme).
        for unit in ["漢", "🦀", "e\u{301}", "ß"] {
            let q = unit.repeat(150);
            let cut = truncate_query(&q);
            assert_eq!(cut.chars().count(), 100, "{unit}");
            assert!(q.starts_with(cut));
        }
    }

    #[test]
    fn truncation_keeps_graphemes_whole() {
        // 99 letters then a family emoji (5 scalars): kept whole or not at all.
        let family = "👨\u{200D}👩\u{200D}👧";
        let q = format!("{}{family}", "a".repeat(99));
        assert_eq!(truncate_query(&q), "a".repeat(99));
        // A letter and its accent across the cut stay together.
        let q = format!("{}e\u{301}xyz", "a".repeat(99));
        assert_eq!(truncate_query(&q), "a".repeat(99));
        // A flag (two regional indicators) at 99..=100 is kept.
        let q = format!("{}🇫🇷tail", "a".repeat(98));
        assert_eq!(truncate_query(&q), format!("{}🇫🇷", "a".repeat(98)));
        // A grapheme longer than the limit on its own leaves nothing.
        let zalgo = format!("e{}", "\u{301}".repeat(120));
        assert_eq!(truncate_query(&zalgo), "");
    }

    #[test]
    fn invisible_and_blank_queries_are_rejected() {
        for bad in [
            "",
            " ",
            "\n\t",
            "\u{3000}",
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
            "\u{00AD}\u{034F}",
            "\u{3164}\u{115F}",
            "\u{FE0F}",
            "\u{E0041}\u{E007F}",
            "\u{0}\u{1}\u{7F}",
            "\u{202E} \u{2066}",
            "\u{2800}",
        ] {
            let err = RoutingDecision::new("1".into(), bad, Tier::Q2, 1.0, at()).unwrap_err();
            assert_eq!(err, DecisionError::EmptyQuery, "{bad:?}");
            assert!(err.to_string().starts_with("query"));
        }
        // Visible text beyond the kept 100 characters does not count.
        for bad in [
            format!("{}visible", " ".repeat(100)),
            format!("{}x", "\u{200B}".repeat(150)),
            format!("e{}", "\u{301}".repeat(120)),
        ] {
            let err = RoutingDecision::new("1".into(), &bad, Tier::Q2, 1.0, at()).unwrap_err();
            assert_eq!(err, DecisionError::BlankWhenCut);
            assert_eq!(err.field(), "query");
        }
        for good in ["x", " \u{200B}a", "🦀", "\u{301}", "ß "] {
            let d = RoutingDecision::new("1".into(), good, Tier::Q2, 1.0, at()).unwrap();
            assert_eq!(d.query, good);
        }
        let d = RoutingDecision::new(
            "1".into(),
            &format!("{}v", " ".repeat(99)),
            Tier::Q2,
            1.0,
            at(),
        )
        .unwrap();
        assert_eq!(d.query.chars().count(), 100);
    }

    #[test]
    fn merging_keeps_seq_order_prefers_fresh_copies_and_keeps_at_most_keep() {
        let d = |seq: u64, q: &str| {
            RoutingDecision::new(format!("i-{seq}"), q, Tier::Q3, 1.0, at())
                .unwrap()
                .with_seq(seq, None)
        };
        let fresh = vec![d(9, "new"), d(8, "new"), d(7, "new")];
        let held = vec![d(8, "old"), d(7, "old"), d(6, "old"), d(5, "old")];
        let merged = merge_newest_first(fresh.clone(), held.clone(), 10);
        let seqs: Vec<u64> = merged.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, [9, 8, 7, 6, 5]);
        assert!(merged[..3].iter().all(|d| d.query == "new"));
        // Held ones newer than the status (from the stream) come first.
        let merged = merge_newest_first(vec![d(6, "new")], vec![d(8, "s"), d(7, "s")], 2);
        assert_eq!(merged.iter().map(|d| d.seq).collect::<Vec<_>>(), [8, 7]);
        assert!(merge_newest_first(fresh, held, 0).is_empty());
        // Two instances' decisions interleave by time, whatever their seqs.
        let other = |seq: u64, secs: i64| {
            RoutingDecision::new(
                format!("b-{seq}"),
                "b",
                Tier::Q2,
                1.0,
                at() + chrono::Duration::seconds(secs),
            )
            .unwrap()
            .with_seq(seq, None)
        };
        let merged = merge_newest_first(vec![other(1, 5), other(100, -5)], vec![d(9, "a")], 10);
        let ids: Vec<&str> = merged.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["b-1", "i-9", "b-100"]);
    }

    proptest::proptest! {
        /// The cursor's cut equals the one found by walking every grapheme.
        #[test]
        fn the_cut_equals_a_full_grapheme_walk(q in "(\\PC|\\p{M}|\\u{200D}|\\r\\n|🇫|🇷){0,140}") {
            use unicode_segmentation::UnicodeSegmentation as _;
            let mut walked = 0;
            let mut chars = 0;
            for g in q.graphemes(true) {
                chars += g.chars().count();
                if chars > MAX_QUERY_CHARS {
                    break;
                }
                walked += g.len();
            }
            proptest::prop_assert_eq!(truncate_query(&q), &q[..walked]);
        }
    }

    #[test]
    fn the_invisible_table_is_sorted_and_disjoint() {
        for w in INVISIBLE.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
        }
        assert!(is_invisible(' ') && is_invisible('\u{200B}') && is_invisible('\u{E0FFF}'));
        assert!(!is_invisible('a') && !is_invisible('\u{21}') && !is_invisible('\u{E1000}'));
    }

    #[test]
    fn the_query_pattern_names_every_invisible_range() {
        let p = visible_query_pattern();
        assert!(p.starts_with("^[\\u0000-\\u0020\\u007F-\\u00A0"), "{p}");
        assert!(p.contains("]{0,99}[^"), "{p}");
        assert!(p.contains('\u{E0000}') && p.contains('\u{E0FFF}'));
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
    fn decision_times_must_be_finite_and_non_negative() {
        let d = RoutingDecision::new("1".into(), "q", Tier::Q2, 1.0, at()).unwrap();
        for bad in [-1.0, -0.0001, f64::NAN, f64::INFINITY, 1e308, 3_600_000.001] {
            let err = RecordedDecision::new(d.clone(), bad).unwrap_err();
            assert_eq!(err.field(), "decisionTimeMs");
        }
        assert!(RecordedDecision::new(d.clone(), 0.0).is_ok());
        assert!(RecordedDecision::new(d.clone(), MAX_DECISION_TIME_MS).is_ok());
        let zero = RecordedDecision::new(d, -0.0).unwrap();
        assert!(zero.decision_time_ms.is_sign_positive());
    }

    #[test]
    fn negative_zero_score_is_stored_as_zero() {
        let d = RoutingDecision::new("1".into(), "q", Tier::Q2, -0.0, at()).unwrap();
        assert!(d.score.is_sign_positive());
        assert_eq!(
            serde_json::to_value(&d).unwrap()["score"].to_string(),
            "0.0"
        );
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
