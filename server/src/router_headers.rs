//! The `x-router-*` headers of a routed answer, the same on both front
//! doors (names from [`shared::wire::header`]).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use shared::RoutingDecision;
use shared::group::GroupAnswer;
use shared::wire::header;

/// `X-Router-Tier`, `-Score`, `-Complexity` and `-Decision-Id` of a decision.
pub fn single(d: &RoutingDecision) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(4);
    put(&mut headers, TIER, d.tier.label());
    put(
        &mut headers,
        SCORE,
        &serde_json::to_string(&d.score).unwrap_or_default(),
    );
    put(&mut headers, COMPLEXITY, d.complexity.label());
    put(&mut headers, DECISION_ID, &d.id);
    headers
}

/// What a group decided: its id; a council's moderator (its tier and
/// decision), else every member's tier and decision id, comma-separated.
pub fn group(g: &GroupAnswer) -> HeaderMap {
    let mut headers = match g.moderator.as_ref() {
        Some(m) => single(&m.decision),
        None => match g.members.first() {
            Some(first) => single(&first.decision),
            None => HeaderMap::new(),
        },
    };
    if g.moderator.is_none() {
        let join = |f: &dyn Fn(&RoutingDecision) -> String| {
            g.members
                .iter()
                .map(|m| f(&m.decision))
                .collect::<Vec<_>>()
                .join(",")
        };
        put(&mut headers, TIER, &join(&|d| d.tier.label().to_owned()));
        put(&mut headers, DECISION_ID, &join(&|d| d.id.clone()));
    }
    put(&mut headers, GROUP_ID, &g.group_id);
    headers
}

/// Sets `name` (checked once, at compile time: a `&str` name is checked
/// again on every insert); ids, labels and numbers are ASCII, so nothing
/// is dropped.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

const TIER: HeaderName = HeaderName::from_static(header::TIER);
const SCORE: HeaderName = HeaderName::from_static(header::SCORE);
const COMPLEXITY: HeaderName = HeaderName::from_static(header::COMPLEXITY);
const DECISION_ID: HeaderName = HeaderName::from_static(header::DECISION_ID);
const GROUP_ID: HeaderName = HeaderName::from_static(header::GROUP_ID);
