//! Durable history on the wire: the status's `persistence`, the trends of
//! `GET /api/orchestrator/history` and the page of stored decisions of
//! `GET /api/orchestrator/decisions`; and the pure math both sides share
//! (steps, bucket bounds, which minute a time falls in).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::decision::RoutingDecision;
use crate::tier::Tier;

/// The status's `persistence`: whether decisions reach the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// `ok` (every decision is committed to the store), `failing` (the store
    /// cannot be written: decisions are kept in memory only and ingestion
    /// answers 503) or `off` (`--in-memory`).
    pub state: PersistenceState,
    /// When the store started failing (only while `failing`), RFC 3339.
    /// Text, not a parsed time, so the panel carries no date parser for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub since: Option<String>,
    /// What the store said when it failed (only while `failing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Decisions recorded since start that never reached the store (made
    /// while it was failing).
    #[serde(default)]
    pub not_persisted: u64,
    /// `normal` (survives a killed process) or `full` (survives power
    /// loss); absent when `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "normal"))]
    pub sync: Option<String>,
}

/// See [`Persistence::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PersistenceState {
    /// Committing.
    Ok,
    /// Not committing; see `error`.
    Failing,
    /// No store.
    Off,
}

/// A history step, `1m`, `5m`, `1h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// One minute.
    Minute,
    /// Five minutes.
    FiveMinutes,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Step {
    /// Every step, shortest first.
    pub const ALL: [Step; 4] = [Step::Minute, Step::FiveMinutes, Step::Hour, Step::Day];

    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    /// Its length in minutes.
    pub fn minutes(self) -> i64 {
        match self {
            Step::Minute => 1,
            Step::FiveMinutes => 5,
            Step::Hour => 60,
            Step::Day => 1_440,
        }
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The points a span of `span_minutes` takes at this step (a last
    /// partial step counts as one).
    pub fn points(self, span_minutes: i64) -> i64 {
        let m = self.minutes();
        (span_minutes.max(0) + m - 1) / m
    }

    /// The shortest step that covers a span of `span_minutes` in at most
    /// [`MAX_POINTS`].
    pub fn fitting(span_minutes: i64) -> Step {
        Step::ALL
            .into_iter()
            .find(|s| s.points(span_minutes) <= MAX_POINTS)
            .unwrap_or(Step::Day)
    }
}

/// The points of `step` that cover `[from_ms, to_ms)` (`to` exclusive,
/// `from < to`): the minute the first begins, aligned to the epoch, and
/// how many. The first holds `from`, the last holds `to - 1 ms`.
pub fn aligned(from_ms: i64, to_ms: i64, step: Step) -> (i64, i64) {
    let m = step.minutes();
    let first = minute_of(from_ms).div_euclid(m);
    let last = minute_of(to_ms.max(from_ms + 1) - 1).div_euclid(m);
    (first * m, last - first + 1)
}

/// The most steps one history request's span may take (its points are one
/// more when the range is off the step's boundaries).
pub const MAX_POINTS: i64 = 1_440;

/// The minute (since the Unix epoch) a time in ms falls in.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// Upper bounds (ms, inclusive) of the decision-time buckets; one more
/// bucket counts everything above the last.
pub const DECISION_TIME_BOUNDS_MS: [f64; 7] = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1_000.0];

/// Upper bounds (ms, inclusive) of the upstream-latency buckets; one more
/// bucket counts everything above the last.
pub const LATENCY_BOUNDS_MS: [f64; 9] = [
    50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 30_000.0,
];

/// The bucket of `value` among `bounds` (`bounds.len()` for above them all).
pub fn bucket(bounds: &[f64], value: f64) -> usize {
    bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len())
}

/// `GET /api/orchestrator/history` answer: per tier, one value per point
/// of `times` in each series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The start of the first step (aligned to the step, UTC).
    #[serde(with = "crate::decision::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: DateTime<Utc>,
    /// The end of the last step (exclusive).
    #[serde(with = "crate::decision::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: DateTime<Utc>,
    /// `1m`, `5m`, `1h` or `1d`.
    #[cfg_attr(feature = "openapi", schema(example = "1h"))]
    pub step: String,
    /// The step in seconds.
    pub step_seconds: u32,
    /// The start of each step, oldest first: unix seconds.
    pub times: Vec<i64>,
    /// One series per tier, Q2, Q3, Q4.
    pub series: Vec<TierSeries>,
    /// Upper bounds (ms) of `decisionTimeBuckets`; a last bucket counts
    /// the rest.
    pub decision_time_bounds_ms: Vec<f64>,
    /// Upper bounds (ms) of `upstreamLatencyBuckets`; a last bucket counts
    /// the rest.
    pub upstream_latency_bounds_ms: Vec<f64>,
    /// Only with `--redis`: `cluster` when every instance's rollups are
    /// summed, `local` when Redis could not be read (this instance's only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<crate::cluster::ClusterView>,
    /// Only with `--redis`: the instances summed, this one first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<String>>,
    /// Beyond the history's first form: with virtual keys, what each spent
    /// per point on this instance (the 20 that spent most in the range,
    /// then `other`); absent when no key spent anything in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeySeries>>,
}

/// One virtual key's spend over time (or, as `key: "other"`, the rest's);
/// each list has one value per point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeySeries {
    /// The key's id, or `other`.
    pub key: String,
    /// USD spent.
    pub spent_usd: Vec<f64>,
    /// Requests admitted.
    pub requests: Vec<u64>,
    /// Tokens used.
    pub tokens: Vec<u64>,
}

/// One row of spend per key: `(point, key, USD, requests, tokens)`.
pub type KeyRow = (i64, String, f64, u64, u64);

/// Per-key spend rows as series of `len` points: the `top` keys by spend
/// over the range, then `other`.
pub fn key_series(rows: Vec<KeyRow>, len: usize, top: usize) -> Vec<KeySeries> {
    let mut by_key: Vec<KeySeries> = Vec::new();
    for (point, key, usd, requests, tokens) in rows {
        let Some(i) = usize::try_from(point).ok().filter(|i| *i < len) else {
            continue;
        };
        let at = match by_key.iter().position(|k| k.key == key) {
            Some(at) => at,
            None => {
                by_key.push(KeySeries {
                    key,
                    spent_usd: vec![0.0; len],
                    requests: vec![0; len],
                    tokens: vec![0; len],
                });
                by_key.len() - 1
            }
        };
        let k = &mut by_key[at];
        k.spent_usd[i] += if usd.is_finite() { usd } else { 0.0 };
        k.requests[i] += requests;
        k.tokens[i] += tokens;
    }
    let total = |k: &KeySeries| k.spent_usd.iter().sum::<f64>();
    by_key.sort_by(|a, b| {
        total(b)
            .total_cmp(&total(a))
            .then_with(|| a.key.cmp(&b.key))
    });
    if by_key.len() > top {
        let rest = by_key.split_off(top);
        let mut other = KeySeries {
            key: crate::keys::OTHER_KEYS.to_owned(),
            spent_usd: vec![0.0; len],
            requests: vec![0; len],
            tokens: vec![0; len],
        };
        for k in rest {
            for i in 0..len {
                other.spent_usd[i] += k.spent_usd[i];
                other.requests[i] += k.requests[i];
                other.tokens[i] += k.tokens[i];
            }
        }
        by_key.push(other);
    }
    by_key
}

/// One tier's measures over time; each list has one value per point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TierSeries {
    /// The tier.
    pub tier: Tier,
    /// Decisions made.
    pub decisions: Vec<u64>,
    /// Of them, SIMPLE.
    pub simple: Vec<u64>,
    /// Of them, MODERATE.
    pub moderate: Vec<u64>,
    /// Of them, COMPLEX.
    pub complex: Vec<u64>,
    /// Of them, made in `two-stage` mode.
    pub two_stage: Vec<u64>,
    /// Of them, made in `simple` mode.
    pub simple_mode: Vec<u64>,
    /// Decision time summed, ms.
    pub decision_time_ms_sum: Vec<f64>,
    /// Decisions per decision-time bucket over the whole range.
    pub decision_time_buckets: Vec<u64>,
    /// Prompt tokens of the answers.
    pub prompt_tokens: Vec<u64>,
    /// Completion tokens of the answers.
    pub completion_tokens: Vec<u64>,
    /// Upstream calls made for routed queries (after retries: one per query).
    pub upstream_calls: Vec<u64>,
    /// Of them, failed.
    pub upstream_errors: Vec<u64>,
    /// Their latency summed, ms.
    pub upstream_latency_ms_sum: Vec<f64>,
    /// Calls per latency bucket over the whole range.
    pub upstream_latency_buckets: Vec<u64>,
    /// Shadow judging's verdicts on the tier's answers per point: better
    /// than Q4's, as good (or the orders disagreed), worse (absent from an
    /// older server).
    #[serde(default)]
    pub better: Vec<u64>,
    /// See `better`.
    #[serde(default)]
    pub tie: Vec<u64>,
    /// See `better`.
    #[serde(default)]
    pub worse: Vec<u64>,
}

/// `GET /api/orchestrator/decisions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DecisionPage {
    /// Stored decisions, newest first.
    pub decisions: Vec<RoutingDecision>,
    /// `before` for the next (older) page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_series_keep_the_top_spenders_then_other() {
        let rows = vec![
            (0, "a".to_owned(), 1.0, 1, 10),
            (1, "a".to_owned(), 2.0, 1, 20),
            (1, "b".to_owned(), 0.5, 1, 5),
            (0, "c".to_owned(), 0.25, 2, 2),
            (9, "c".to_owned(), 9.0, 1, 1),
        ];
        let s = key_series(rows, 2, 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, "a");
        assert_eq!(s[0].spent_usd, [1.0, 2.0]);
        assert_eq!(s[1].key, "other");
        assert_eq!(
            s[1].spent_usd,
            [0.25, 0.5],
            "a point out of range is left out"
        );
        assert_eq!(s[1].requests, [2, 1]);
    }

    #[test]
    fn aligned_points_cover_from_and_to() {
        let day = 86_400_000;
        // 5 minutes before tomorrow 00:00:30, at one day: two points, the
        // first holding `from` (today), the second `to` (tomorrow).
        let tomorrow = 20_000 * day;
        let (from, to) = (tomorrow + 30_000 - 300_000, tomorrow + 30_000);
        let (first, n) = aligned(from, to, Step::Day);
        assert_eq!((first * 60_000, n), (tomorrow - day, 2));
        // On the boundaries, exactly the span's steps.
        assert_eq!(aligned(0, 2 * 3_600_000, Step::Minute), (0, 120));
        // Off them, one more, and the first still holds `from`.
        let (first, n) = aligned(30_000, 30_000 + 2 * 3_600_000, Step::Minute);
        assert_eq!((first, n), (0, 121));
        for (from, to, step) in [
            (1_234_567, 9_876_543_210, Step::Hour),
            (59_999, 60_001, Step::Minute),
            (day - 1, day + 1, Step::Day),
            (7, 8, Step::FiveMinutes),
        ] {
            let (first, n) = aligned(from, to, step);
            let m = step.minutes() * 60_000;
            assert!(
                first * 60_000 <= from && from < first * 60_000 + m,
                "{from}"
            );
            let end = (first + n * step.minutes()) * 60_000;
            assert!(end - m < to && to <= end, "{to}");
        }
    }

    #[test]
    fn steps_round_trip_and_fit() {
        for s in Step::ALL {
            assert_eq!(Step::parse(s.name()), Some(s));
        }
        assert_eq!(Step::parse("2m"), None);
        assert_eq!(Step::Minute.points(1_440), 1_440);
        assert_eq!(Step::Minute.points(1_441), 1_441);
        assert_eq!(Step::FiveMinutes.points(6), 2);
        assert_eq!(Step::FiveMinutes.points(0), 0);
        assert_eq!(Step::FiveMinutes.points(-3), 0);
        assert_eq!(Step::fitting(1_440), Step::Minute);
        assert_eq!(Step::fitting(1_441), Step::FiveMinutes);
        assert_eq!(Step::fitting(7 * 1_440 + 1), Step::Hour);
        assert_eq!(minute_of(-1), -1);
        assert_eq!(minute_of(119_999), 1);
    }

    #[test]
    fn buckets_are_inclusive_above() {
        assert_eq!(bucket(&DECISION_TIME_BOUNDS_MS, 0.0), 0);
        assert_eq!(bucket(&DECISION_TIME_BOUNDS_MS, 0.001), 0);
        assert_eq!(bucket(&DECISION_TIME_BOUNDS_MS, 0.5), 3);
        assert_eq!(bucket(&DECISION_TIME_BOUNDS_MS, 5e6), 7);
        assert_eq!(bucket(&LATENCY_BOUNDS_MS, 60_000.0), 9);
    }
}
