//! A routed query's answer, read from the JSON as the browser parsed it
//! and drawn with plain DOM calls (all text set as text): one tier's answer
//! with its decision, a council's or benchmark's answers side by side per
//! tier with latency and tokens, or the server's error.

use wasm_bindgen::JsValue;
use web_sys::Element;

use crate::api::ApiError;
use crate::components::history_view::{field, text};
use crate::dom::element;
use crate::time;

/// A number of a parsed JSON value, if it is one.
fn number(v: &JsValue) -> Option<f64> {
    v.as_f64()
}

/// "Routed to Q3 (balanced) · SIMPLE · score 0.20 · decided in 12 µs ·
/// two-stage" of a parsed decision.
fn decision_line(d: &JsValue) -> Element {
    let line = format!(
        "Routed to {} ({}) · {} · score {:.2} · decided in {} · {}",
        text(&field(d, "tier")),
        text(&field(d, "tierName")),
        text(&field(d, "complexity")),
        number(&field(d, "score")).unwrap_or(0.0),
        number(&field(d, "decisionTimeMs")).map_or_else(|| "—".into(), time::duration),
        field(d, "mode").as_string().unwrap_or_else(|| "—".into()),
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
fn call_line(m: &JsValue) -> String {
    let mut parts = Vec::new();
    if let Some(model) = field(m, "model").as_string() {
        parts.push(model);
    }
    if let Some(ms) = number(&field(m, "latencyMs")) {
        parts.push(time::latency(ms));
    }
    let usage = field(m, "usage");
    if usage.is_object() {
        parts.push(format!(
            "{} in / {} out tokens",
            number(&field(&usage, "promptTokens")).unwrap_or(0.0),
            number(&field(&usage, "completionTokens")).unwrap_or(0.0)
        ));
    }
    parts.join(" · ")
}

/// One member's card: its tier, how its call went, its answer or error.
fn member_card(m: &JsValue, role: &str) -> Element {
    let tier = text(&field(m, "tier"));
    let failed = field(m, "error").as_string();
    let card = element(
        None,
        "article",
        &[
            (
                "class",
                if failed.is_some() {
                    "member failed"
                } else {
                    "member"
                },
            ),
            ("data-testid", role),
            ("data-tier", &tier),
            ("data-ok", if failed.is_some() { "false" } else { "true" }),
        ],
        None,
    );
    let name = text(&field(&field(m, "decision"), "tierName"));
    let _ = card.append_child(&element(None, "h3", &[], Some(&format!("{tier} {name}"))));
    let _ = card.append_child(&element(
        None,
        "p",
        &[("class", "mono muted")],
        Some(&call_line(m)),
    ));
    let body = match &failed {
        Some(e) => {
            let status =
                number(&field(m, "errorStatus")).map_or(String::new(), |s| format!("HTTP {s}: "));
            error_line(&format!("{status}{e}"))
        }
        None => element(
            None,
            "pre",
            &[("class", "answer")],
            Some(&text(&field(m, "answer"))),
        ),
    };
    let _ = card.append_child(&body);
    card
}

/// A council's or benchmark's answer: the group line, a council's
/// synthesis with its analysis, and every member side by side.
fn group_view(g: &JsValue) -> Element {
    let mode = text(&field(g, "mode"));
    let root = element(
        None,
        "div",
        &[
            ("class", "result ok group"),
            ("data-testid", "group-answer"),
            ("data-mode", &mode),
        ],
        None,
    );
    let members: Vec<JsValue> = js_sys::Array::from(&field(g, "members")).iter().collect();
    let answered = members
        .iter()
        .filter(|m| field(m, "error").is_undefined())
        .count();
    let head = format!(
        "{mode} · group {} · {answered} of {} tiers answered",
        text(&field(g, "groupId")),
        members.len()
    );
    let _ = root.append_child(&element(
        None,
        "p",
        &[("class", "decision-line mono")],
        Some(&head),
    ));
    let moderator = field(g, "moderator");
    if moderator.is_object() || mode == "council" {
        let analysis = field(g, "analysis");
        let agreed = match field(&analysis, "agreedWith").as_string() {
            Some(t) => format!(
                "agrees with {t} ({}, overlap {:.0}%)",
                text(&field(&analysis, "basis")),
                number(&field(&analysis, "similarity")).unwrap_or(0.0) * 100.0
            ),
            None => "agrees with no member".into(),
        };
        let synthesis = element(
            None,
            "section",
            &[("class", "synthesis"), ("data-testid", "synthesis")],
            None,
        );
        let title = if moderator.is_object() {
            format!(
                "Synthesis by {} · {} · {agreed}",
                text(&field(&moderator, "tier")),
                call_line(&moderator)
            )
        } else {
            "No synthesis: no member answered".into()
        };
        let _ = synthesis.append_child(&element(None, "h3", &[], Some(&title)));
        match (
            field(g, "answer").as_string(),
            field(&moderator, "error").as_string(),
        ) {
            (Some(a), _) => {
                let _ =
                    synthesis.append_child(&element(None, "pre", &[("class", "answer")], Some(&a)));
            }
            (None, Some(e)) => {
                let _ = synthesis.append_child(&error_line(&e));
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
    for m in &members {
        let _ = grid.append_child(&member_card(m, "member"));
    }
    let _ = root.append_child(&grid);
    root
}

/// Replaces what `out` shows with a query's outcome.
pub fn show(out: &Element, outcome: Result<(u16, JsValue), ApiError>) {
    out.set_text_content(None);
    let view = match outcome {
        Ok((code, v))
            if (200..300).contains(&code) && js_sys::Array::is_array(&field(&v, "members")) =>
        {
            group_view(&v)
        }
        Ok((code, v)) if (200..300).contains(&code) => {
            let root = element(None, "div", &[("class", "result ok")], None);
            let _ = root.append_child(&decision_line(&field(&v, "decision")));
            let answer = field(&v, "answer")
                .as_string()
                .unwrap_or_else(|| "(the model returned no text)".into());
            let _ = root.append_child(&element(None, "pre", &[("class", "answer")], Some(&answer)));
            root
        }
        Ok((code, v)) => {
            let root = element(None, "div", &[("class", "result err")], None);
            let decision = field(&v, "decision");
            if decision.is_object() {
                let _ = root.append_child(&decision_line(&decision));
            }
            let message = field(&v, "error").as_string().unwrap_or_default();
            let _ = root.append_child(&error_line(&format!("HTTP {code}: {message}")));
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
