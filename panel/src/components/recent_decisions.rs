//! The newest routing decisions, one keyed row each.

use leptos::prelude::*;
use shared::RoutingDecision;

use crate::time;

/// How many decisions the table shows.
pub const SHOWN: usize = 10;

/// A table of the newest decisions. Rows are keyed by decision id, so a poll
/// that brings one new decision adds one row and leaves the others alone.
/// Queries are rendered as text, never as HTML.
#[component]
pub fn RecentDecisions(
    /// The status's `recentDecisions`, newest first.
    #[prop(into)]
    decisions: Signal<Vec<RoutingDecision>>,
) -> impl IntoView {
    let shown = move || decisions.with(|d| d.iter().take(SHOWN).cloned().collect::<Vec<_>>());
    let empty = move || decisions.with(Vec::is_empty);
    view! {
        <section class="card wide" aria-labelledby="decisions-h">
            <h2 id="decisions-h">"Recent decisions"</h2>
            <table class="decisions">
                <thead>
                    <tr>
                        <th scope="col">"Time"</th>
                        <th scope="col">"Tier"</th>
                        <th scope="col">"Complexity"</th>
                        <th scope="col" class="num">"Score"</th>
                        <th scope="col">"Query"</th>
                    </tr>
                </thead>
                <tbody>
                    <For each=shown key=|d| d.id.clone() let:d>
                        <tr data-testid="decision" class=format!("c-{}", d.complexity.label().to_lowercase())>
                            <td class="mono">{time::clock_of(&d.timestamp)}</td>
                            <td class="mono">{d.tier.label()}</td>
                            <td>{d.complexity.label()}</td>
                            <td class="num mono">{format!("{:.2}", d.score)}</td>
                            <td class="query" title=d.query.clone()>{d.query.clone()}</td>
                        </tr>
                    </For>
                </tbody>
            </table>
            <Show when=empty>
                <p class="muted">"No decisions yet. Send a query to see it routed."</p>
            </Show>
        </section>
    }
}
