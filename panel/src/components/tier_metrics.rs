//! What each tier's upstream calls cost: latency percentiles, tokens, error
//! rate, retries, each upstream's circuit as a coloured badge, and each
//! answering model's share. Rendered only when the server reports them (an
//! older server does not).

use leptos::either::Either;
use leptos::prelude::*;
use shared::metrics::{CircuitState, UpstreamMetrics};
use shared::{ModelUtilization, Tier, TierMetrics};

use crate::time;

/// The per-tier table and the per-model utilization.
#[component]
pub fn TierMetricsView(
    /// The status's `tierMetrics`, if the server sends it.
    #[prop(into)]
    metrics: Signal<Option<Vec<TierMetrics>>>,
    /// The status's `modelUtilization`, if the server sends it.
    #[prop(into)]
    models: Signal<Option<Vec<ModelUtilization>>>,
) -> impl IntoView {
    // One reactive closure renders the card from plain values; on a change
    // the same view is rebuilt in place (texts and attributes updated), and
    // one closure instead of one per cell keeps the WASM small.
    move || {
        let all = metrics.get()?;
        let rows = Tier::ALL
            .map(|tier| tier_row(tier, all.iter().find(|t| t.tier == tier).cloned()))
            .into_iter()
            .collect_view();
        let models = models.get().unwrap_or_default();
        let models = if models.is_empty() {
            Either::Left(view! { <p class="muted" data-testid="no-models">"No answer yet"</p> })
        } else {
            Either::Right(view! {
                <ul class="models" data-testid="model-utilization">
                    {models.into_iter().map(model_row).collect_view()}
                </ul>
            })
        };
        Some(view! {
            <section class="card wide" aria-labelledby="tm-h" data-testid="upstream-metrics">
                <h2 id="tm-h">"Upstream calls per tier"</h2>
                <p class="covers muted">"Latency of the last 1000 successful calls; tokens, errors and calls since start"</p>
                <div class="mono">
                    <table class="metrics">
                        <thead>
                            <tr>
                                <th scope="col">"Tier"</th>
                                <th scope="col">"p50"</th>
                                <th scope="col">"p95"</th>
                                <th scope="col">"p99"</th>
                                <th scope="col"><abbr title="time to first token of streamed answers, p50">"TTFT"</abbr></th>
                                <th scope="col">"Tokens in / out"</th>
                                <th scope="col">"Error rate"</th>
                                <th scope="col">"Calls"</th>
                                <th scope="col">"Upstreams"</th>
                            </tr>
                        </thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
                <h3 class="sub">"Models answering"</h3>
                {models}
            </section>
        })
    }
}

/// One answering model: its share, answers and median latency.
fn model_row(m: ModelUtilization) -> impl IntoView {
    let latency = m
        .latency_ms
        .map_or_else(|| "—".to_owned(), |l| time::latency(l.p50));
    let testid = format!("model-{}", m.model);
    view! {
        <li data-testid=testid>
            <code>{m.model}</code>" "
            <span class="muted">{m.tier.label()}</span>" "
            <span class="num">{format!("{:.1}%", m.utilization_percent)}</span>
            <span class="muted num">{format!(" · {} answers · p50 {latency}", time::count(m.answered))}</span>
        </li>
    }
}

/// One tier's row from its figures (dashes without them).
fn tier_row(tier: Tier, row: Option<TierMetrics>) -> impl IntoView + use<> {
    let dash = || "—".to_owned();
    let latency = row.as_ref().and_then(|r| r.latency_ms);
    let at = |q: fn(&shared::metrics::Latency) -> f64| {
        latency.map_or_else(dash, |l| time::latency(q(&l)))
    };
    let (p50, p95, p99) = (at(|l| l.p50), at(|l| l.p95), at(|l| l.p99));
    // Streamed answers only: a dash until the tier has streamed one.
    let ttft = row
        .as_ref()
        .and_then(|r| r.ttft_ms)
        .map_or_else(dash, |l| time::latency(l.p50));
    let (tokens, errors, calls) = row.as_ref().map_or_else(
        || (dash(), dash(), dash()),
        |r| {
            (
                format!(
                    "{} / {}",
                    time::count(r.tokens_in),
                    time::count(r.tokens_out)
                ),
                format!("{:.1}%", r.error_rate * 100.0),
                format!("{} ({} retried)", time::count(r.requests), r.retries),
            )
        },
    );
    let failing = row.as_ref().is_some_and(|r| r.error_rate > 0.05);
    // A tier without upstreams says so instead of showing an empty cell.
    let circuits = row.map(|r| {
        if r.upstreams.is_empty() {
            Either::Left(view! { <span class="muted">"no upstream"</span> })
        } else {
            Either::Right(
                r.upstreams
                    .iter()
                    .map(|u| circuit_badge(tier, u))
                    .collect_view(),
            )
        }
    });
    view! {
        <tr data-testid=format!("tm-{tier}")>
            <th scope="row">{tier.label()}" "<span class="muted">{tier.internal_name()}</span></th>
            <td class="num" data-testid=format!("tm-{tier}-p50")>{p50}</td>
            <td class="num" data-testid=format!("tm-{tier}-p95")>{p95}</td>
            <td class="num" data-testid=format!("tm-{tier}-p99")>{p99}</td>
            <td class="num" data-testid=format!("tm-{tier}-ttft")>{ttft}</td>
            <td class="num" data-testid=format!("tm-{tier}-tokens")>{tokens}</td>
            <td class="num" class:bad=failing data-testid=format!("tm-{tier}-errors")>{errors}</td>
            <td class="num" data-testid=format!("tm-{tier}-calls")>{calls}</td>
            <td class="circuits">{circuits}</td>
        </tr>
    }
}

/// An upstream's circuit as a coloured badge; its last error in the title.
fn circuit_badge(tier: Tier, u: &UpstreamMetrics) -> impl IntoView + use<> {
    let state = u.circuit.name();
    let mut title = format!(
        "{}: circuit {state}, {} in flight, {} calls",
        u.name, u.in_flight, u.processed
    );
    if let Some(model) = &u.model {
        title.push_str(&format!(", model {model}"));
    }
    if let Some(e) = &u.last_error {
        let ms = time::ms_of(&e.at);
        title.push_str(&format!(
            "\nlast error {} ({}): {}",
            time::clock(ms),
            e.kind.label(),
            e.message
        ));
    }
    let class = match u.circuit {
        CircuitState::Closed => "circuit closed",
        CircuitState::HalfOpen => "circuit half-open",
        CircuitState::Open => "circuit open",
    };
    view! {
        <span class=class title=title data-testid=format!("circuit-{tier}-{}", u.name) data-state=state>
            {u.name.clone()}" "{state}
        </span>
    }
}
