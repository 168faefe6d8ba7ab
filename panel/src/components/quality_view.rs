//! The "Routing quality" card (only from a server that reports `quality`):
//! per judged tier, how often shadow judging found its answers as good as
//! Q4's, with the interval, since start and over the last hour; the
//! implicit signals of every tier; beside them the quality the labelled
//! data expects and the saving. Built with plain DOM calls, text as text.

use leptos::prelude::*;
use shared::OrchestratorStatus;
use shared::shadow::{Judged, LiveQuality, TierQuality, as_good_words};

use crate::dom::element;

/// One span's words: the as-good share, or that there is none.
fn span_words(j: &Judged) -> String {
    as_good_words(j).unwrap_or_else(|| "no pair judged".to_owned())
}

/// A tier's row: shadow judging (Q2, Q3) and the implicit signals.
fn row(t: &TierQuality) -> String {
    let mut s = format!("{} {}: ", t.tier.label(), t.tier.internal_name());
    if t.tier != shared::Tier::Q4 {
        let j = &t.since_start;
        s += &format!(
            "{} · last hour: {} · {} without a verdict, {} Q4 failed, {} dropped · ",
            span_words(j),
            span_words(&t.last_hour),
            j.judge_failures,
            j.q4_failures,
            j.dropped
        );
    }
    s + &format!(
        "abandoned {:.1} % of {} streams · asked again {:.1} % of {} queries",
        t.abandoned_rate * 100.0,
        t.streams,
        t.regeneration_rate * 100.0,
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
            "Shadow judging: {:.1} % of Q2 and Q3 answers answered again by Q4 and judged by {} ({} under way).",
            q.shadow_rate * 100.0,
            q.judge.label(),
            q.in_flight
        )
    } else {
        "Shadow judging is off (--shadow-rate R judges a share R of Q2 and Q3 answers against Q4)."
            .to_owned()
    };
    add(section, "p", "quality-judging", &judging);
    let ul = element(None, "ul", &[("class", "quality")], None);
    for t in &q.tiers {
        let li = element(
            None,
            "li",
            &[
                ("data-testid", "quality-tier"),
                ("data-tier", t.tier.label()),
            ],
            Some(&row(t)),
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
