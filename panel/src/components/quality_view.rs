//! The "Routing quality" card (only from a server that reports `quality`):
//! per judged tier, how often shadow judging found its answers as good as
//! Q4's, with the interval, since start and over the last hour; the
//! implicit signals of every tier; beside them the quality the labelled
//! data expects and the saving. Built with plain DOM calls, text as text.

use leptos::prelude::*;
use shared::OrchestratorStatus;
use shared::shadow::{Judged, LiveQuality, TierQuality, as_good_words};

use crate::dom::element;

/// One span's words: the as-good share, or what there is instead.
fn span_words(j: &Judged) -> String {
    let mut s = as_good_words(j).unwrap_or_else(|| "no pair judged".to_owned());
    let lost = j.judge_failures + j.q4_failures + j.dropped;
    if lost > 0 {
        s.push_str(&format!(
            " · {} without a verdict, {} Q4 failed, {} dropped",
            j.judge_failures, j.q4_failures, j.dropped
        ));
    }
    s
}

/// A share as a percentage with one decimal.
fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// The implicit signals of one tier.
fn implicit_words(t: &TierQuality) -> String {
    format!(
        "{} {}: abandoned {} of {} streams · asked again {} of {} queries",
        t.tier.label(),
        t.tier.internal_name(),
        pct(t.abandoned_rate),
        t.streams,
        pct(t.regeneration_rate),
        t.answers
    )
}

/// Fills `section` from a status's `quality`, `expected` and `saved`; hides
/// it when there is no `quality`.
fn fill(section: &web_sys::HtmlElement, q: Option<&LiveQuality>, expected: &str, saved: &str) {
    let Some(q) = q else {
        section.set_hidden(true);
        return;
    };
    section.set_hidden(false);
    section.set_text_content(None);
    let add = |parent: &web_sys::Element, tag: &str, testid: &str, text: &str| {
        let el = element(None, tag, &[("data-testid", testid)], Some(text));
        let _ = parent.append_child(&el);
    };
    let _ = section.append_child(&element(None, "h2", &[], Some("Routing quality")));
    let judging = if q.shadow_rate > 0.0 {
        format!(
            "Shadow judging: {} of Q2 and Q3 answers answered again by Q4 and judged by {} ({} under way).",
            pct(q.shadow_rate),
            q.judge.label(),
            q.in_flight
        )
    } else {
        "Shadow judging is off (--shadow-rate R judges a share R of Q2 and Q3 answers against Q4)."
            .to_owned()
    };
    add(section, "p", "quality-judging", &judging);
    let ul = element(None, "ul", &[("class", "quality")], None);
    for t in q.tiers.iter().filter(|t| t.tier != shared::Tier::Q4) {
        let row = format!(
            "{} {}: {} · last hour: {}",
            t.tier.label(),
            t.tier.internal_name(),
            span_words(&t.since_start),
            span_words(&t.last_hour)
        );
        let li = element(
            None,
            "li",
            &[
                ("data-testid", "quality-tier"),
                ("data-tier", t.tier.label()),
                ("data-pairs", &t.since_start.pairs.to_string()),
            ],
            Some(&row),
        );
        let _ = ul.append_child(&li);
    }
    let _ = section.append_child(&ul);
    add(
        section,
        "p",
        "quality-expected",
        &format!("Expected from labelled data: {expected}"),
    );
    add(
        section,
        "p",
        "quality-saved",
        &format!("Saved vs all on Q4: {saved}"),
    );
    let implicit = element(None, "ul", &[("class", "quality muted")], None);
    for t in &q.tiers {
        add(&implicit, "li", "quality-implicit", &implicit_words(t));
    }
    let _ = section.append_child(&implicit);
}

/// The routing quality card; hidden when the server reports no `quality`.
#[component]
pub fn QualityCard(
    /// The status; its `quality` fills the card.
    #[prop(into)]
    status: Signal<Option<OrchestratorStatus>>,
    /// The quality the labelled data expects at the threshold.
    #[prop(into)]
    expected: Signal<String>,
    /// The saving against all on Q4.
    #[prop(into)]
    saved: Signal<String>,
) -> impl IntoView {
    let root = NodeRef::<leptos::html::Section>::new();
    Effect::new(move |_| {
        let (expected, saved) = (expected.get(), saved.get());
        status.with(|s| {
            if let Some(section) = root.get() {
                fill(
                    &section,
                    s.as_ref().and_then(|s| s.quality.as_ref()),
                    &expected,
                    &saved,
                );
            }
        });
    });
    view! {
        <section class="card wide" data-testid="quality-card" hidden=true node_ref=root></section>
    }
}
