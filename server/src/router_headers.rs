//! The `x-router-*` headers of a routed answer, the same on both front
//! doors (names from [`shared::wire::header`]).

use axum::http::{HeaderMap, HeaderValue};
use shared::RoutingDecision;
use shared::group::GroupAnswer;
use shared::wire::header;

/// `X-Router-Tier`, `-Score`, `-Complexity` and `-Decision-Id` of a decision.
pub fn single(d: &RoutingDecision) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(4);
    put(&mut headers, header::TIER, d.tier.label());
    put(
        &mut headers,
        header::SCORE,
        &serde_json::to_string(&d.score).unwrap_or_default(),
    );
    put(&mut headers, header::COMPLEXITY, d.complexity.label());
    put(&mut headers, header::DECISION_ID, &d.id);
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
        put(
            &mut headers,
            header::TIER,
            &join(&|d| d.tier.label().to_owned()),
        );
        put(&mut headers, header::DECISION_ID, &join(&|d| d.id.clone()));
    }
    put(&mut headers, header::GROUP_ID, &g.group_id);
    headers
}

/// Sets `name`; ids, labels and numbers are ASCII, so nothing is dropped.
fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}
