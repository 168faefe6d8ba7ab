//! What a screen reader hears: a polite summary of new decisions, at most
//! one every ten seconds, however fast they come.

use std::cell::Cell;

use leptos::prelude::*;
use shared::RoutingDecision;

use crate::hooks::DataSource;
use crate::time;

/// The least time between two announcements.
const EVERY_MS: f64 = 10_000.0;

/// A visually hidden live region summarising new decisions.
#[component]
pub fn Announcer(
    /// The newest decisions, newest first.
    #[prop(into)]
    decisions: Signal<Vec<RoutingDecision>>,
    /// Mock data is never announced as news.
    #[prop(into)]
    source: Signal<Option<DataSource>>,
) -> impl IntoView {
    let (text, set_text) = signal(String::new());
    let last_seq = Cell::new(None::<u64>);
    let last_at = Cell::new(f64::NEG_INFINITY);
    Effect::new(move |_| {
        let newest = decisions.with(|d| d.first().cloned());
        let live = matches!(source.get(), Some(DataSource::Live(_)));
        let (Some(newest), true) = (newest, live) else {
            return;
        };
        let Some(seen) = last_seq.get() else {
            // What was there on arrival is not news.
            last_seq.set(Some(newest.seq));
            return;
        };
        let now = time::now_ms();
        if newest.seq <= seen || now - last_at.get() < EVERY_MS {
            return;
        }
        let n = newest.seq - seen;
        last_seq.set(Some(newest.seq));
        last_at.set(now);
        set_text.set(format!(
            "{n} new decision{}; the newest routed to {} ({})",
            if n == 1 { "" } else { "s" },
            newest.tier,
            newest.complexity.label()
        ));
    });
    view! {
        <p class="sr-only" role="status" aria-live="polite" data-testid="announcer">{text}</p>
    }
}
