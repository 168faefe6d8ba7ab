//! The newest routing decisions, one keyed row each.

use leptos::prelude::*;
use shared::RoutingDecision;
use shared::api::Mode;

use crate::time;

/// How many decisions the table shows.
pub const SHOWN: usize = 10;

/// A table of the newest decisions. Rows are keyed by decision id, so a new
/// decision adds one row and leaves the others alone. Queries are rendered
/// as text, never as HTML.
#[component]
pub fn RecentDecisions(
    /// The newest decisions first.
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
                        <th scope="col">"Mode"</th>
                        <th scope="col" class="num">"Decided in"</th>
                        <th scope="col">"Query"</th>
                    </tr>
                </thead>
                <tbody>
                    <For each=shown key=|d| d.id.clone() let:d>
                        <tr
                            data-testid="decision"
                            data-seq=d.seq
                            class=format!("c-{}", d.complexity.label().to_lowercase())
                        >
                            <td class="mono">
                                <time datetime=d.timestamp.to_rfc3339() title=time::full(time::ms_of(&d.timestamp))>
                                    {time::clock(time::ms_of(&d.timestamp))}
                                </time>
                            </td>
                            <td class="mono">{d.tier.label()}</td>
                            <td>{d.complexity.label()}</td>
                            <td class="num mono">{format!("{:.2}", d.score)}</td>
                            <td data-testid="decision-mode">{d.mode.map_or("—", Mode::name)}</td>
                            <td class="num mono" data-testid="decision-time">
                                {d.decision_time_ms.map_or_else(|| "—".to_owned(), time::duration)}
                            </td>
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
