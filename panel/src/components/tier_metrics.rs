//! What each tier's upstream calls cost: latency percentiles, tokens, error
//! rate, retries, each upstream's circuit as a coloured badge, and each
//! answering model's share. Rendered only when the server reports them (an
//! older server does not).

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
    let rows = Tier::ALL
        .into_iter()
        .map(|tier| {
            let row = Memo::new(move |_| {
                metrics.with(|m| m.as_ref()?.iter().find(|t| t.tier == tier).cloned())
            });
            let cell = move |f: fn(&TierMetrics) -> String| {
                row.with(|r| r.as_ref().map_or_else(|| "—".to_owned(), f))
            };
            let pct = move |q: fn(&shared::metrics::Latency) -> f64| {
                move || {
                    row.with(|r| {
                        r.as_ref()
                            .and_then(|r| r.latency_ms)
                            .map_or_else(|| "—".to_owned(), |l| time::latency(q(&l)))
                    })
                }
            };
            let failing = move || row.with(|r| r.as_ref().is_some_and(|r| r.error_rate > 0.05));
            let circuits = move || {
                row.with(|r| {
                    r.as_ref()
                        .map(|r| r.upstreams.iter().map(|u| circuit_badge(tier, u)).collect_view())
                })
            };
            view! {
                <tr data-testid=format!("tm-{tier}")>
                    <th scope="row">{tier.label()}" "<span class="muted">{tier.internal_name()}</span></th>
                    <td class="num" data-testid=format!("tm-{tier}-p50")>{pct(|l| l.p50)}</td>
                    <td class="num" data-testid=format!("tm-{tier}-p95")>{pct(|l| l.p95)}</td>
                    <td class="num" data-testid=format!("tm-{tier}-p99")>{pct(|l| l.p99)}</td>
                    <td class="num" data-testid=format!("tm-{tier}-tokens")>
                        {move || cell(|r| format!("{} / {}", time::count(r.tokens_in), time::count(r.tokens_out)))}
                    </td>
                    <td class="num" class:bad=failing data-testid=format!("tm-{tier}-errors")>
                        {move || cell(|r| format!("{:.1}%", r.error_rate * 100.0))}
                    </td>
                    <td class="num" data-testid=format!("tm-{tier}-calls")>
                        {move || cell(|r| format!("{} ({} retried)", time::count(r.requests), r.retries))}
                    </td>
                    <td class="circuits">{circuits}</td>
                </tr>
            }
        })
        .collect_view();
    let model_rows = move || {
        models.with(|m| {
            m.clone().unwrap_or_default().into_iter().map(|m| {
                let latency = m.latency_ms.map_or_else(|| "—".to_owned(), |l| time::latency(l.p50));
                view! {
                    <li data-testid=format!("model-{}", m.model)>
                        <code>{m.model.clone()}</code>" "
                        <span class="muted">{m.tier.label()}</span>" "
                        <span class="num">{format!("{:.1}%", m.utilization_percent)}</span>
                        <span class="muted num">{format!(" · {} answers · p50 {latency}", time::count(m.answered))}</span>
                    </li>
                }
            }).collect_view()
        })
    };
    let no_models = move || models.with(|m| m.as_ref().is_none_or(Vec::is_empty));
    view! {
        <Show when=move || metrics.with(Option::is_some)>
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
                                <th scope="col">"Tokens in / out"</th>
                                <th scope="col">"Error rate"</th>
                                <th scope="col">"Calls"</th>
                                <th scope="col">"Upstreams"</th>
                            </tr>
                        </thead>
                        <tbody>{rows.clone()}</tbody>
                    </table>
                </div>
                <h3 class="sub">"Models answering"</h3>
                <Show when=move || !no_models() fallback=|| view! { <p class="muted" data-testid="no-models">"No answer yet"</p> }>
                    <ul class="models" data-testid="model-utilization">{model_rows}</ul>
                </Show>
            </section>
        </Show>
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
