//! Renders a status as given; knows nothing of transports, so tests can feed
//! it.

use leptos::prelude::*;
use shared::history::PersistenceState;
use shared::insight::Prices;
use shared::{OrchestratorStatus, RoutingDecision, Tier};

use crate::components::announcer::Announcer;
use crate::components::cluster_view::ClusterCard;
use crate::components::complexity_distribution::ComplexityDistributionView;
use crate::components::quality_view::QualityCard;
use crate::components::recent_decisions::RecentDecisions;
use crate::components::routing_insight::{self, RoutingInsight, usd};
use crate::components::source_badge::SourceBadge;
use crate::components::tier_metrics::TierMetricsView;
use crate::components::tier_utilization::TierUtilizationView;
use crate::hooks::DataSource;
use crate::time;

/// "last N decisions", or what an older server (no `windows`) lets us say.
fn covers(n: Option<usize>) -> String {
    match n {
        Some(1) => "last decision".into(),
        Some(n) => format!("last {n} decisions"),
        None => "recent decisions".into(),
    }
}

/// The whole panel body for a status, its decisions, its source, and its
/// freshness.
#[component]
pub fn StatusView(
    /// The status to show; `None` renders a waiting panel with no numbers.
    #[prop(into)]
    status: Signal<Option<OrchestratorStatus>>,
    /// The newest decisions, newest first.
    #[prop(into)]
    decisions: Signal<Vec<RoutingDecision>>,
    /// Where it came from.
    #[prop(into)]
    source: Signal<Option<DataSource>>,
    /// When live data last arrived (ms since the epoch).
    #[prop(into)]
    last_live_ms: Signal<Option<f64>>,
    /// The what-if's stored range and threshold to replay (none asked
    /// unless given).
    #[prop(optional)]
    ask: RwSignal<(crate::hooks::ReplayRange, f64)>,
    /// What the replay says (nothing unless given).
    #[prop(optional, into)]
    replay: Signal<crate::hooks::ReplayState>,
) -> impl IntoView {
    let tiers = Signal::derive(move || {
        status.with(|s| {
            s.as_ref()
                .map(|s| s.tier_utilization.clone())
                .unwrap_or_default()
        })
    });
    let distribution =
        Signal::derive(move || status.with(|s| s.as_ref().map(|s| s.complexity_distribution)));
    let windows = Memo::new(move |_| status.with(|s| s.as_ref().and_then(|s| s.windows)));
    let has_status = move || status.with(Option::is_some);
    // Before the first answer: a dash, never a zero that looks real.
    let total = move || {
        status.with(|s| {
            s.as_ref()
                .map_or_else(|| "—".to_owned(), |s| s.total_decisions.to_string())
        })
    };
    let avg = move || {
        status.with(|s| {
            s.as_ref().map_or_else(
                || "—".to_owned(),
                |s| time::duration(s.avg_decision_time_ms),
            )
        })
    };
    let started = Memo::new(move |_| {
        status.with(|s| {
            s.as_ref()
                .and_then(|s| s.instance.as_ref())
                .map(|i| time::ms_of(&i.started_at))
        })
    });
    let since_start = move || match started.get() {
        Some(ms) => format!(
            "since start {}, {}",
            time::hours_minutes(ms),
            time::date(ms)
        ),
        None => "since start".to_owned(),
    };
    let since_start_title = move || started.get().map(time::full);
    // An older server says nothing of its thresholds: the seed's.
    let routing = Memo::new(move |_| {
        status.with(|s| {
            s.as_ref()
                .and_then(|s| s.routing.clone())
                .unwrap_or_default()
        })
    });
    let prices = Memo::new(move |_| {
        status.with(|s| {
            let mut prices: Prices = shared::PerTier([None; 3]);
            if let Some(cost) = s.as_ref().and_then(|s| s.cost.as_ref()) {
                for t in &cost.tiers {
                    prices[t.tier] = t.price;
                }
            }
            prices
        })
    });
    let q4_share = move || {
        status.with(|s| match s {
            Some(s) if s.total_decisions > 0 => {
                let q4 = s.tier_utilization.iter().find(|t| t.tier == Tier::Q4);
                let n = q4.map_or(0, |t| t.total_processed);
                format!("{:.1}%", n as f64 / s.total_decisions as f64 * 100.0)
            }
            Some(_) => "0.0%".to_owned(),
            None => "—".to_owned(),
        })
    };
    let saved = move || {
        status.with(|s| {
            let cost = s.as_ref().and_then(|s| s.cost.as_ref());
            match cost.and_then(|c| c.saved_usd.zip(c.saving_percent)) {
                Some((usd_saved, pct)) => format!("{} ({pct:.1}%)", usd(usd_saved)),
                None => "—".to_owned(),
            }
        })
    };
    // A saving never stands alone: beside it, the quality it comes with.
    let saved_quality = move || {
        routing.with(|r| {
            let q = routing_insight::quality_text(r.q4_threshold, r);
            if r.expected_quality.is_some() {
                format!("expected quality {q}")
            } else {
                q
            }
        })
    };
    let saved_covers = move || {
        status.with(|s| match s.as_ref().and_then(|s| s.cost.as_ref()) {
            Some(c) if c.saved_usd.is_some() => format!(
                "spent {} vs {} all on Q4, since start",
                usd(c.spent_usd.unwrap_or(0.0)),
                usd(c.all_on_q4_usd.unwrap_or(0.0))
            ),
            Some(c) => {
                let tokens: u64 = c
                    .tiers
                    .iter()
                    .map(|t| t.prompt_tokens + t.completion_tokens)
                    .sum();
                format!(
                    "{} tokens since start; prices (--price) make this a sum",
                    time::count(tokens)
                )
            }
            None => "this server reports no cost".to_owned(),
        })
    };
    // While fewer decisions exist than the window holds, say both.
    let utilization_covers = move || match windows.get() {
        Some(w) if w.distribution < w.utilization => {
            format!(
                "{} (window {})",
                covers(Some(w.distribution)),
                w.utilization
            )
        }
        w => covers(w.map(|w| w.utilization)),
    };
    let avg_covers = move || format!("mean of the {}", covers(windows.get().map(|w| w.average)));
    let state = move || match source.get() {
        None => "connecting",
        Some(DataSource::Live(_)) => "live",
        Some(DataSource::Stale { .. }) => "stale",
        Some(DataSource::Mock { .. }) => "mock",
    };
    let is_mock = move || matches!(source.get(), Some(DataSource::Mock { .. }));
    let is_stale = move || matches!(source.get(), Some(DataSource::Stale { .. }));
    let instance = move || {
        status.with(|s| {
            s.as_ref().and_then(|s| s.instance.clone()).map(|i| {
                let ms = time::ms_of(&i.started_at);
                view! {
                    <span data-testid="instance">
                        "Instance "<code>{i.id}</code>" · started "
                        <time datetime=i.started_at.to_rfc3339() title=time::full(ms)>
                            {format!("{}, {}", time::clock(ms), time::date(ms))}
                        </time>
                        " · v"{i.version}
                    </span>
                }
            })
        })
    };
    // The store is failing: say so, and what it means, until it recovers.
    let persistence = move || {
        status.with(|s| {
            let p = s.as_ref()?.persistence.as_ref()?;
            (p.state == PersistenceState::Failing).then(|| {
                format!(
                    "The store is failing since {}: new decisions are kept in memory only ({} not persisted) and ingestion is refused. {}",
                    p.since.as_deref().unwrap_or("?"),
                    p.not_persisted,
                    p.error.as_deref().unwrap_or("")
                )
            })
        })
    };
    // Live tiers without an upstream: queries routed there answer 503 and
    // nothing on screen would say why. (Mock data and an older server that
    // reports no upstreams say nothing.)
    let unconfigured = move || {
        if !matches!(source.get(), Some(DataSource::Live(_))) {
            return None;
        }
        status.with(|s| {
            let metrics = s.as_ref()?.tier_metrics.as_ref()?;
            let missing: Vec<String> = metrics
                .iter()
                .filter(|m| m.upstreams.is_empty())
                .map(|m| format!("{} ({})", m.tier.label(), m.tier.internal_name()))
                .collect();
            (!missing.is_empty()).then(|| missing.join(", "))
        })
    };
    view! {
        <section
            class="panel"
            class:is-mock=is_mock
            class:is-stale=is_stale
            data-testid="panel"
            data-state=state
            aria-labelledby="panel-h"
            aria-busy=move || (!has_status()).to_string()
        >
            <header class="panel-head">
                <h1 id="panel-h">"Orchestrator status"</h1>
                <SourceBadge source=source last_live_ms=last_live_ms/>
            </header>
            <p class="banner" role="alert" data-testid="persistence-banner" hidden=move || persistence().is_none()>
                {persistence}
            </p>
            <p class="banner hint" data-testid="setup-hint" hidden=move || unconfigured().is_none()>
                "No upstream for "{move || unconfigured().unwrap_or_default()}
                ": queries routed there are recorded but answer 503, as no model is there to write the answer. Give each tier an OpenAI-compatible server (llama.cpp, Ollama, vLLM) with "
                <code>"--upstream fast=http://127.0.0.1:8081/v1"</code>
                " (likewise balanced, powerful), or let your own router report what it decided to "
                <code>"POST /api/orchestrator/decisions"</code>
                ": this panel shows those decisions live."
            </p>
            <ClusterCard status=status/>
            <div class="data">
                <div class="totals">
                    <div class="stat">
                        <span class="stat-label">"Total decisions"</span>
                        <span class="stat-value mono" data-testid="total-decisions">{total}</span>
                        <span class="stat-covers" data-testid="total-covers" title=since_start_title>
                            {since_start}
                        </span>
                    </div>
                    <div class="stat headline">
                        <span class="stat-label">"Traffic on Q4"</span>
                        <span class="stat-value mono" data-testid="headline-q4-share">{q4_share}</span>
                        <span class="stat-covers">"of all decisions since start"</span>
                    </div>
                    <div class="stat headline">
                        <span class="stat-label">"Saved vs all on Q4"</span>
                        <span class="stat-value mono" data-testid="headline-cost-saved">{saved}</span>
                        <span class="stat-covers" data-testid="headline-cost-covers">{saved_covers}</span>
                        <span class="stat-covers" data-testid="headline-quality">{saved_quality}</span>
                    </div>
                    <div class="stat">
                        <span class="stat-label">"Average decision time"</span>
                        <span class="stat-value mono" data-testid="avg-decision-time">{avg}</span>
                        <span class="stat-covers" data-testid="avg-covers">{avg_covers}</span>
                    </div>
                </div>
                <div class="grid">
                    <TierUtilizationView tiers=tiers covers=Signal::derive(utilization_covers)/>
                    <ComplexityDistributionView
                        distribution=distribution
                        covers=Signal::derive(move || covers(windows.get().map(|w| w.distribution)))
                    />
                    <RecentDecisions decisions=decisions routing=Signal::from(routing)/>
                    <RoutingInsight
                        decisions=decisions
                        routing=Signal::from(routing)
                        prices=Signal::from(prices)
                        ask=ask
                        replay=replay
                    />
                    <QualityCard
                        status=status
                        expected=Signal::derive(move || routing.with(|r| routing_insight::quality_text(r.q4_threshold, r)))
                        saved=Signal::derive(saved)
                    />
                    <TierMetricsView
                        metrics=Signal::derive(move || status.with(|s| s.as_ref().and_then(|s| s.tier_metrics.clone())))
                        models=Signal::derive(move || status.with(|s| s.as_ref().and_then(|s| s.model_utilization.clone())))
                    />
                </div>
            </div>
            <Announcer decisions=decisions source=source/>
            <footer class="panel-foot muted">{instance}</footer>
        </section>
    }
}
