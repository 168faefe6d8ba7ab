//! The HomePage: header, query form, live status panel.

use leptos::prelude::*;

use crate::components::orchestrator_status_panel::OrchestratorStatusPanel;
use crate::components::query_form::QueryForm;

/// `/`: everything an operator watches.
#[component]
pub fn HomePage() -> impl IntoView {
    view! {
        <header class="site">
            <span class="logo" aria-hidden="true">"◆"</span>
            <span class="site-name">"Orchestrator Status"</span>
            <span class="muted">"how queries are routed to Q2 · Q3 · Q4, live"</span>
            <a class="nav" href="/history" data-testid="history-link">"History →"</a>
            <a class="nav" href="/keys" data-testid="keys-link">"Keys →"</a>
        </header>
        <main>
            // The panel holds the page's h1; the form's h2 follows it.
            <OrchestratorStatusPanel/>
            <QueryForm/>
        </main>
    }
}
