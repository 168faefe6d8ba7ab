//! The OrchestratorStatusPanel: the live feed wired to its view.

use leptos::prelude::*;

use crate::components::read_key_prompt::ReadKeyPrompt;
use crate::components::status_view::StatusView;
use crate::hooks::{PollConfig, ReplayRange, use_orchestrator_status, use_replay};

/// Follows the server's event stream (polling while it is down) and renders
/// it, labelled live, stale or mock.
#[component]
pub fn OrchestratorStatusPanel(
    /// Prefix of the API's paths; empty for the page's own origin.
    #[prop(optional, into)]
    api_base: String,
    /// Poll interval in ms (default 1000).
    #[prop(optional)]
    interval_ms: Option<u32>,
    /// Per-poll timeout in ms (default 2000).
    #[prop(optional)]
    timeout_ms: Option<u32>,
) -> impl IntoView {
    let defaults = PollConfig::default();
    let ask = RwSignal::new((ReplayRange::Buffer, 0.0));
    let replay = use_replay(api_base.clone(), ask.into());
    let feed = use_orchestrator_status(PollConfig {
        api_base,
        interval_ms: interval_ms.unwrap_or(defaults.interval_ms),
        timeout_ms: timeout_ms.unwrap_or(defaults.timeout_ms),
        ..defaults
    });
    view! {
        <ReadKeyPrompt needs_key=feed.needs_key error=feed.key_error unlock=feed.unlock/>
        <StatusView
            status=feed.status
            decisions=feed.decisions
            source=feed.source
            last_live_ms=feed.last_live_ms
            ask=ask
            replay=replay
        />
    }
}
