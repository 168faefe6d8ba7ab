//! The badge that says where the numbers come from, impossible to miss.

use leptos::prelude::*;

use crate::hooks::DataSource;
use crate::time;

/// "Live", or "Mock data: backend unreachable (reason)", with the time live
/// data last arrived so stale numbers never look fresh.
#[component]
pub fn SourceBadge(
    /// Where the data on screen comes from; `None` before the first poll.
    #[prop(into)]
    source: Signal<Option<DataSource>>,
    /// When live data last arrived (ms since the epoch).
    #[prop(into)]
    last_live_ms: Signal<Option<f64>>,
) -> impl IntoView {
    let class = move || match source.get() {
        Some(DataSource::Live) => "badge live",
        Some(DataSource::Mock { .. }) => "badge mock",
        None => "badge connecting",
    };
    let text = move || match source.get() {
        Some(DataSource::Live) => "Live".to_owned(),
        Some(DataSource::Mock { reason }) => {
            format!("Mock data: backend unreachable ({reason})")
        }
        None => "Connecting…".to_owned(),
    };
    let icon = move || match source.get() {
        Some(DataSource::Live) => "●",
        Some(DataSource::Mock { .. }) => "⚠",
        None => "…",
    };
    let updated = move || match last_live_ms.get() {
        Some(ms) => format!("Last live update {}", time::clock(ms)),
        None => "No live data yet".to_owned(),
    };
    view! {
        <div class="source">
            <span class=class role="status" aria-live="polite">
                <span aria-hidden="true">{icon}" "</span>
                <span data-testid="data-source">{text}</span>
            </span>
            <span class="updated" data-testid="last-updated">{updated}</span>
        </div>
    }
}
