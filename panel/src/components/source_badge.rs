//! The badge that says where the numbers come from, impossible to miss.

use leptos::prelude::*;

use crate::hooks::{DataSource, Transport};
use crate::time;

/// "Live" (and by which transport), "Stale since HH:MM:SS (reason)", or
/// "Mock data: reason", with the time live data last arrived so stale
/// numbers never look fresh.
#[component]
pub fn SourceBadge(
    /// Where the data on screen comes from; `None` before the first answer.
    #[prop(into)]
    source: Signal<Option<DataSource>>,
    /// When live data last arrived (ms since the epoch).
    #[prop(into)]
    last_live_ms: Signal<Option<f64>>,
) -> impl IntoView {
    let class = move || match source.get() {
        Some(DataSource::Live(_)) => "badge live",
        Some(DataSource::Stale { .. }) => "badge stale",
        Some(DataSource::Mock { .. }) => "badge mock",
        None => "badge connecting",
    };
    let text = move || match source.get() {
        Some(DataSource::Live(_)) => "Live".to_owned(),
        Some(DataSource::Stale { since_ms, reason }) => {
            format!("Stale since {} ({reason})", time::clock(since_ms))
        }
        Some(DataSource::Mock { reason }) => format!("Mock data: {reason}"),
        None => "Connecting…".to_owned(),
    };
    let icon = move || match source.get() {
        Some(DataSource::Live(_)) => "●",
        Some(DataSource::Stale { .. }) => "◐",
        Some(DataSource::Mock { .. }) => "⚠",
        None => "…",
    };
    let transport = move || match source.get() {
        Some(DataSource::Live(Transport::Stream)) => "stream",
        Some(DataSource::Live(Transport::Polling)) => "polling",
        _ => "",
    };
    let transport_title = move || match source.get() {
        Some(DataSource::Live(Transport::Stream)) => "Pushed by the server as it happens",
        Some(DataSource::Live(Transport::Polling)) => {
            "The stream is unavailable: asking the server every second"
        }
        _ => "",
    };
    let updated = move || match last_live_ms.get() {
        Some(ms) => format!("Last live update {}", time::clock(ms)),
        None => "No live data yet".to_owned(),
    };
    let updated_title = move || last_live_ms.get().map(time::full);
    view! {
        <div class="source">
            <span class=class role="status" aria-live="polite">
                <span aria-hidden="true">{icon}" "</span>
                <span data-testid="data-source">{text}</span>
                " "
                <span class="transport" data-testid="transport" title=transport_title>{transport}</span>
            </span>
            <span class="updated" data-testid="last-updated" title=updated_title>{updated}</span>
        </div>
    }
}
