//! The newest routing decisions, one keyed row each.

use leptos::prelude::*;
use shared::api::Mode;
use shared::{Complexity, Routing, RoutingDecision};

use crate::components::mode_mix::ModeMixView;
use crate::components::signal_bars::signal_bars;
use crate::time;
use wasm_bindgen::JsCast;

/// How many decisions the table shows.
pub const SHOWN: usize = 10;

/// A table of the newest decisions. Rows are keyed by decision id, so a new
/// decision adds one row and leaves the others alone; each opens to show the
/// signals behind its score. Queries are rendered as text, never as HTML.
#[component]
pub fn RecentDecisions(
    /// The newest decisions first.
    #[prop(into)]
    decisions: Signal<Vec<RoutingDecision>>,
    /// The thresholds to mark on a decision's signals.
    #[prop(into)]
    routing: Signal<Routing>,
) -> impl IntoView {
    // A council's or benchmark's calls stay together, under its newest.
    let shown = move || {
        decisions.with(|d| shared::group::group_together(d.iter().take(SHOWN).cloned().collect()))
    };
    let empty = move || decisions.with(Vec::is_empty);
    view! {
        <section class="card wide" aria-labelledby="decisions-h">
            <h2 id="decisions-h">"Recent decisions"</h2>
            <ModeMixView decisions=decisions/>
            <table class="decisions">
                <thead>
                    <tr>
                        <th scope="col">"Time "<span class="sr-only">"(open a row for its signals)"</span></th>
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
                        {decision_rows(d, routing)}
                    </For>
                </tbody>
            </table>
            <Show when=empty>
                <p class="muted">"No decisions yet. Send a query to see it routed."</p>
            </Show>
        </section>
    }
}

/// The mode, and for a council's or benchmark's call the last characters
/// of its group, which tell groups apart at a glance.
fn mode_cell(d: &RoutingDecision) -> String {
    let mode = d.mode.map_or("—", Mode::name);
    match d.group_id.as_deref() {
        Some(g) => format!(
            "{mode} #{}",
            g.get(g.len().saturating_sub(4)..).unwrap_or(g)
        ),
        None => mode.to_owned(),
    }
}

/// A decision's row, and below it, while open, its signals. Opening and
/// closing touch three attributes directly, at once in the click: nothing
/// else on the page depends on it.
fn decision_rows(d: RoutingDecision, routing: Signal<Routing>) -> impl IntoView {
    let cell = NodeRef::<leptos::html::Td>::new();
    let panel_id = format!("signals-{}", d.id);
    let details = d.clone();
    let detail_id = panel_id.clone();
    let toggle = move |ev: leptos::ev::MouseEvent| {
        let (Some(td), Some(button)) = (
            cell.get_untracked(),
            ev.current_target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok()),
        ) else {
            return;
        };
        // Drawn the first time it opens; a decision never changes.
        if td.child_element_count() == 0 {
            let _ = td.append_child(&signal_bars(&details, &routing.get_untracked()));
        }
        let open = button.get_attribute("aria-expanded").as_deref() != Some("true");
        let _ = button.set_attribute("aria-expanded", if open { "true" } else { "false" });
        if let Some(row) = td.parent_element() {
            if open {
                let _ = row.remove_attribute("hidden");
            } else {
                let _ = row.set_attribute("hidden", "");
            }
        }
    };
    view! {
        <tr
            data-testid="decision"
            data-seq=d.seq
            data-id=d.id.clone()
            class=match d.complexity {
                Complexity::Simple => "c-simple",
                Complexity::Moderate => "c-moderate",
                Complexity::Complex => "c-complex",
            }
        >
            <td class="mono">
                <button
                    class="expand"
                    data-testid="decision-expand"
                    aria-expanded="false"
                    aria-controls=panel_id
                    title="Why this tier: the signals behind the score"
                    on:click=toggle
                >
                    <span class="sr-only">"Signals of "</span>
                    <time datetime=d.timestamp.to_rfc3339() title=time::full(time::ms_of(&d.timestamp))>
                        {time::clock(time::ms_of(&d.timestamp))}
                    </time>
                </button>
            </td>
            <td class="mono">{d.tier.label()}</td>
            <td>{d.complexity.label()}</td>
            <td class="num mono">{format!("{:.2}", d.score)}</td>
            <td data-testid="decision-mode" data-group=d.group_id.clone() title=d.group_id.clone()>
                {mode_cell(&d)}
            </td>
            <td class="num mono" data-testid="decision-time">
                {d.decision_time_ms.map_or_else(|| "—".to_owned(), time::duration)}
            </td>
            <td class="query" title=d.query.clone()>{d.query.clone()}</td>
        </tr>
        <tr class="detail" id=detail_id hidden="">
            <td colspan="7" node_ref=cell></td>
        </tr>
    }
}
