//! Send a query through the router in any mode and see how it was routed
//! and answered: one tier's answer, or a council's or benchmark's side by
//! side per tier.

use leptos::prelude::*;
use shared::api::{Mode, QueryRequest};
use web_sys::AbortController;

use crate::api;
use crate::components::answer_view;

/// Generation can take long; past this the form gives up on the answer.
const QUERY_TIMEOUT_MS: u32 = 120_000;

/// A text box, a mode picker (two-stage, simple, council, benchmark) and
/// the result: the decision with the answer, each tier's answer for a
/// group, or the server's error.
#[component]
pub fn QueryForm(
    /// Prefix of the API's paths; empty for the page's own origin.
    #[prop(optional, into)]
    api_base: String,
) -> impl IntoView {
    let (text, set_text) = signal(String::new());
    let (mode, set_mode) = signal(Mode::TwoStage);
    let (pending, set_pending) = signal(false);
    let out = NodeRef::<leptos::html::Div>::new();

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if pending.get_untracked() {
            return;
        }
        let body = QueryRequest {
            query: text.get_untracked(),
            mode: mode.get_untracked(),
            max_tokens: None,
        };
        let base = api_base.clone();
        set_pending.set(true);
        leptos::task::spawn_local(async move {
            let controller = AbortController::new().expect("AbortController exists");
            let outcome = api::post_query(&base, &body, &controller, QUERY_TIMEOUT_MS).await;
            if let Some(div) = out.get_untracked() {
                answer_view::show(&div, outcome);
            }
            set_pending.set(false);
        });
    };
    let options = Mode::ALL
        .into_iter()
        .map(|m| view! { <option value=m.name() selected=m == Mode::TwoStage>{m.name()}</option> })
        .collect_view();

    view! {
        <section class="card query wide" aria-labelledby="query-h">
            <h2 id="query-h">"Route a query"</h2>
            <form on:submit=submit data-testid="query-form">
                <label for="query-text" class="sr-only">"Query"</label>
                <textarea
                    id="query-text"
                    name="query"
                    rows="2"
                    placeholder="Ask anything, e.g. What is Python?"
                    prop:value=text
                    on:input=move |ev| set_text.set(event_target_value(&ev))
                ></textarea>
                <div class="form-row">
                    <label for="query-mode">"Mode "</label>
                    <select
                        id="query-mode"
                        data-testid="query-mode"
                        on:change=move |ev| {
                            if let Some(m) = Mode::from_name(&event_target_value(&ev)) {
                                set_mode.set(m);
                            }
                        }
                    >
                        {options}
                    </select>
                    <button type="submit" disabled=move || pending.get() || text.with(|t| t.trim().is_empty())>
                        {move || if pending.get() { "Routing…" } else { "Send" }}
                    </button>
                </div>
            </form>
            <div data-testid="query-result" aria-live="polite" node_ref=out></div>
        </section>
    }
}
