//! How many of the decisions the panel holds each router mode made.

use leptos::prelude::*;
use shared::RoutingDecision;
use shared::group::ModeMix;

/// One line of counts per mode (two-stage, simple, council, benchmark,
/// unspecified), counted by the same code as the status's `modeMix`.
#[component]
pub fn ModeMixView(
    /// The decisions held, newest first.
    #[prop(into)]
    decisions: Signal<Vec<RoutingDecision>>,
) -> impl IntoView {
    let line = move || {
        let mix = decisions.with(|d| ModeMix::of(d));
        let total = mix.total().max(1);
        let parts: Vec<String> = mix
            .named()
            .into_iter()
            .filter(|&(name, n)| n > 0 || name != "unspecified")
            .map(|(name, n)| format!("{name} {n} ({:.0}%)", n as f64 * 100.0 / total as f64))
            .collect();
        parts.join(" · ")
    };
    view! {
        <p class="mode-mix mono" data-testid="mode-mix">
            <span class="muted">"Modes of the decisions held: "</span>
            {line}
        </p>
    }
}
