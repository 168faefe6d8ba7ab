//! A routed query's answer, decoded through the shared types and drawn
//! with plain DOM calls (all text set as text): one tier's answer with its
//! decision, a council's or benchmark's answers side by side per tier with
//! latency and tokens, or the server's error.

use shared::RoutingDecision;
use shared::api::Usage;
use shared::group::{GroupAnswer, MemberAnswer};
use web_sys::Element;

use crate::api::{ApiError, QueryOutcome};
use crate::dom::element;
use crate::time;

/// "Routed to Q3 (balanced) · SIMPLE · score 0.20 · decided in 12 µs ·
/// two-stage" of a decision.
fn decision_line(d: &RoutingDecision) -> Element {
    let line = format!(
        "Routed to {} ({}) · {} · score {:.2} · decided in {} · {}",
        d.tier,
        d.tier_name,
        d.complexity,
        d.score,
        d.decision_time_ms
            .map_or_else(|| "—".into(), time::duration),
        d.mode.map_or("—", |m| m.name()),
    );
    element(None, "p", &[("class", "decision-line mono")], Some(&line))
}

/// `⚠ HTTP 503: …` as an alert.
fn error_line(message: &str) -> Element {
    element(
        None,
        "p",
        &[("class", "error"), ("role", "alert")],
        Some(&format!("⚠ {message}")),
    )
}

/// "model · 420 ms · 12 in / 30 out tokens" of one call.
fn call_line(model: Option<&str>, latency_ms: f64, usage: Option<Usage>) -> String {
    let mut parts: Vec<String> = model.map(str::to_owned).into_iter().collect();
    parts.push(time::latency(latency_ms));
    if let Some(u) = usage {
        parts.push(format!(
            "{} in / {} out tokens",
            u.prompt_tokens, u.completion_tokens
        ));
    }
    parts.join(" · ")
}

/// One member's call line.
fn member_call(m: &MemberAnswer) -> String {
    call_line(m.model.as_deref(), m.latency_ms, m.usage)
}

/// One member's card: its tier, how its call went, its answer or error.
fn member_card(m: &MemberAnswer, role: &str) -> Element {
    let tier = m.tier.label();
    let ok = m.ok();
    let card = element(
        None,
        "article",
        &[
            ("class", if ok { "member" } else { "member failed" }),
            ("data-testid", role),
            ("data-tier", tier),
            ("data-ok", if ok { "true" } else { "false" }),
        ],
        None,
    );
    let title = format!("{tier} {}", m.decision.tier_name);
    let _ = card.append_child(&element(None, "h3", &[], Some(&title)));
    let _ = card.append_child(&element(
        None,
        "p",
        &[("class", "mono muted")],
        Some(&member_call(m)),
    ));
    let body = match &m.error {
        Some(e) => {
            let status = m
                .error_status
                .map_or(String::new(), |s| format!("HTTP {s}: "));
            error_line(&format!("{status}{e}"))
        }
        None => element(
            None,
            "pre",
            &[("class", "answer")],
            Some(m.answer.as_deref().unwrap_or_default()),
        ),
    };
    let _ = card.append_child(&body);
    card
}

/// A council's or benchmark's answer: the group line, a council's
/// synthesis with its analysis, and every member side by side.
fn group_view(g: &GroupAnswer) -> Element {
    let mode = g.mode.name();
    let root = element(
        None,
        "div",
        &[
            ("class", "result ok group"),
            ("data-testid", "group-answer"),
            ("data-mode", mode),
        ],
        None,
    );
    let answered = g.members.iter().filter(|m| m.ok()).count();
    let head = format!(
        "{mode} · group {} · {answered} of {} tiers answered",
        g.group_id,
        g.members.len()
    );
    let _ = root.append_child(&element(
        None,
        "p",
        &[("class", "decision-line mono")],
        Some(&head),
    ));
    if g.moderator.is_some() || g.mode == shared::api::Mode::Council {
        let agreed = match g.analysis.as_ref().and_then(|a| Some((a, a.agreed_with?))) {
            Some((a, t)) => format!(
                "agrees with {t} ({}, overlap {:.0}%)",
                a.basis,
                a.similarity.unwrap_or(0.0) * 100.0
            ),
            None => "agrees with no member".into(),
        };
        let synthesis = element(
            None,
            "section",
            &[("class", "synthesis"), ("data-testid", "synthesis")],
            None,
        );
        let title = match &g.moderator {
            Some(m) => format!("Synthesis by {} · {} · {agreed}", m.tier, member_call(m)),
            None => "No synthesis: no member answered".into(),
        };
        let _ = synthesis.append_child(&element(None, "h3", &[], Some(&title)));
        let failed = g.moderator.as_ref().and_then(|m| m.error.as_deref());
        match (&g.answer, failed) {
            (Some(a), _) => {
                let _ =
                    synthesis.append_child(&element(None, "pre", &[("class", "answer")], Some(a)));
            }
            (None, Some(e)) => {
                let _ = synthesis.append_child(&error_line(e));
            }
            (None, None) => {}
        }
        let _ = root.append_child(&synthesis);
    }
    let grid = element(
        None,
        "div",
        &[("class", "members"), ("data-testid", "members")],
        None,
    );
    for m in &g.members {
        let _ = grid.append_child(&member_card(m, "member"));
    }
    let _ = root.append_child(&grid);
    root
}

/// Replaces what `out` shows with a query's outcome.
pub fn show(out: &Element, outcome: Result<QueryOutcome, ApiError>) {
    out.set_text_content(None);
    let view = match outcome {
        Ok(QueryOutcome::Group(g)) => group_view(&g),
        Ok(QueryOutcome::One(a)) => {
            let root = element(None, "div", &[("class", "result ok")], None);
            let _ = root.append_child(&decision_line(&a.decision));
            let answer = a
                .answer
                .as_deref()
                .unwrap_or("(the model returned no text)");
            let _ = root.append_child(&element(None, "pre", &[("class", "answer")], Some(answer)));
            root
        }
        Ok(QueryOutcome::Refused(code, body)) => {
            let root = element(None, "div", &[("class", "result err")], None);
            if let Some(d) = &body.decision {
                let _ = root.append_child(&decision_line(d));
            }
            let _ = root.append_child(&error_line(&format!("HTTP {code}: {}", body.error)));
            root
        }
        Err(err) => {
            let root = element(None, "div", &[("class", "result err")], None);
            let _ = root.append_child(&error_line(&err.to_string()));
            root
        }
    };
    let _ = out.append_child(&view);
}
