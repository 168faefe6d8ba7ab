//! Send a query through the router and see how it was routed.

use leptos::prelude::*;
use shared::RoutingDecision;
use shared::api::{Mode, QueryRequest, QueryResponse};
use web_sys::AbortController;

use crate::api::{self, ApiError};
use crate::time;

/// Generation can take long; past this the form gives up on the answer.
const QUERY_TIMEOUT_MS: u32 = 120_000;

/// A text box, a mode picker and the routing result (tier, complexity,
/// score, decision time) with the answer or the server's error.
#[component]
pub fn QueryForm(
    /// Prefix of the API's paths; empty for the page's own origin.
    #[prop(optional, into)]
    api_base: String,
) -> impl IntoView {
    let (text, set_text) = signal(String::new());
    let (mode, set_mode) = signal(Mode::TwoStage);
    let (pending, set_pending) = signal(false);
    let (result, set_result) = signal(None::<Result<QueryResponse, ApiError>>);

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
            set_result.set(Some(outcome));
            set_pending.set(false);
        });
    };

    view! {
        <section class="card query" aria-labelledby="query-h">
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
                        on:change=move |ev| {
                            set_mode.set(if event_target_value(&ev) == "simple" { Mode::Simple } else { Mode::TwoStage })
                        }
                    >
                        <option value="two-stage" selected=true>"two-stage"</option>
                        <option value="simple">"simple"</option>
                    </select>
                    <button type="submit" disabled=move || pending.get() || text.with(|t| t.trim().is_empty())>
                        {move || if pending.get() { "Routing…" } else { "Send" }}
                    </button>
                </div>
            </form>
            <div data-testid="query-result" aria-live="polite">
                {move || result.get().map(render_result)}
            </div>
        </section>
    }
}

fn render_result(result: Result<QueryResponse, ApiError>) -> AnyView {
    match result {
        Ok(r) => view! {
            <div class="result ok">
                {decision_line(&r.decision)}
                <pre class="answer">{r.answer.unwrap_or_else(|| "(the model returned no text)".into())}</pre>
            </div>
        }
        .into_any(),
        Err(err) => {
            let decision = match &err {
                ApiError::Status { decision: Some(d), .. } => Some(decision_line(d)),
                _ => None,
            };
            view! {
                <div class="result err">
                    {decision}
                    <p class="error" role="alert">"⚠ "{err.to_string()}</p>
                </div>
            }
            .into_any()
        }
    }
}

fn decision_line(d: &RoutingDecision) -> impl IntoView {
    view! {
        <p class="decision-line mono">
            "Routed to "<strong>{format!("{} ({})", d.tier, d.tier.internal_name())}</strong>
            " · "{d.complexity.label()}
            " · score "{format!("{:.2}", d.score)}
            " · decided in "{d.decision_time_ms.map_or_else(|| "—".into(), time::duration)}
            " · "{d.mode.map_or("—", Mode::name)}
        </p>
    }
}
