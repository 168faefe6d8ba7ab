//! One monospace row per tier: bar, share, in flight, processed.

use leptos::prelude::*;
use shared::{Tier, TierUtilization};

use crate::components::ascii_bar::AsciiBar;

/// Rows for Q2, Q3 and Q4; each updates in place when its numbers change.
#[component]
pub fn TierUtilizationView(
    /// The status's `tierUtilization` (Q2, Q3, Q4).
    #[prop(into)]
    tiers: Signal<Vec<TierUtilization>>,
    /// Which decisions the shares cover ("last 20 decisions").
    #[prop(into)]
    covers: Signal<String>,
) -> impl IntoView {
    let rows = Tier::ALL
        .into_iter()
        .map(|tier| {
            let row =
                Memo::new(move |_| tiers.with(|all| all.iter().find(|t| t.tier == tier).cloned()));
            let percent = Signal::derive(move || {
                row.with(|r| r.as_ref().map_or(0.0, |r| r.utilization_percent))
            });
            // No status yet: dashes, never zeros that look real.
            let shown = move |f: fn(&TierUtilization) -> String| {
                row.with(|r| r.as_ref().map_or_else(|| "—".to_owned(), f))
            };
            let active = move || shown(|r| r.active_requests.to_string());
            let processed = move || shown(|r| r.total_processed.to_string());
            let pct = move || shown(|r| format!("{:5.1}%", r.utilization_percent));
            view! {
                <div class="row tier" data-testid=format!("tier-{tier}")>
                    <span class="tier-label">{tier.label()}</span>
                    <span class="tier-name">{tier.internal_name()}</span>
                    <AsciiBar percent=percent label=format!("{tier} utilization")/>
                    <span class="num pct">{pct}</span>
                    <span class="num">"active "{active}</span>
                    <span class="num">"processed "{processed}</span>
                </div>
            }
        })
        .collect_view();
    view! {
        <section class="card" aria-labelledby="tiers-h">
            <h2 id="tiers-h">"Tier utilization"</h2>
            <p class="covers muted" data-testid="utilization-covers">{covers}</p>
            <div class="mono">{rows}</div>
        </section>
    }
}
