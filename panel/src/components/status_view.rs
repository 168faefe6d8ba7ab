//! Renders a status as given; knows nothing of polling, so tests can feed it.

use leptos::prelude::*;
use shared::OrchestratorStatus;

use crate::components::complexity_distribution::ComplexityDistributionView;
use crate::components::recent_decisions::RecentDecisions;
use crate::components::source_badge::SourceBadge;
use crate::components::tier_utilization::TierUtilizationView;
use crate::hooks::DataSource;

/// The whole panel body for a status, its source, and its freshness.
#[component]
pub fn StatusView(
    /// The status to show; `None` renders an empty, waiting panel.
    #[prop(into)]
    status: Signal<Option<OrchestratorStatus>>,
    /// Where it came from.
    #[prop(into)]
    source: Signal<Option<DataSource>>,
    /// When live data last arrived (ms since the epoch).
    #[prop(into)]
    last_live_ms: Signal<Option<f64>>,
) -> impl IntoView {
    let tiers = Signal::derive(move || {
        status.with(|s| {
            s.as_ref()
                .map(|s| s.tier_utilization.clone())
                .unwrap_or_default()
        })
    });
    let decisions = Signal::derive(move || {
        status.with(|s| {
            s.as_ref()
                .map(|s| s.recent_decisions.clone())
                .unwrap_or_default()
        })
    });
    let distribution = Signal::derive(move || {
        status.with(|s| {
            s.as_ref()
                .map(|s| s.complexity_distribution)
                .unwrap_or_default()
        })
    });
    let total = move || status.with(|s| s.as_ref().map_or(0, |s| s.total_decisions));
    let avg = move || {
        status.with(|s| {
            format!(
                "{:.2} ms",
                s.as_ref().map_or(0.0, |s| s.avg_decision_time_ms)
            )
        })
    };
    let is_mock = move || matches!(source.get(), Some(DataSource::Mock { .. }));
    view! {
        <section class="panel" class:is-mock=is_mock data-testid="panel" aria-label="Orchestrator status">
            <header class="panel-head">
                <h1>"Orchestrator status"</h1>
                <SourceBadge source=source last_live_ms=last_live_ms/>
            </header>
            <div class="totals">
                <div class="stat">
                    <span class="stat-label">"Total decisions"</span>
                    <span class="stat-value mono" data-testid="total-decisions">{total}</span>
                </div>
                <div class="stat">
                    <span class="stat-label">"Average decision time"</span>
                    <span class="stat-value mono" data-testid="avg-decision-time">{avg}</span>
                </div>
            </div>
            <div class="grid">
                <TierUtilizationView tiers=tiers/>
                <ComplexityDistributionView distribution=distribution/>
                <RecentDecisions decisions=decisions/>
            </div>
        </section>
    }
}
