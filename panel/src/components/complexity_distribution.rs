//! The complexity mix of the buffered decisions, as bars.

use leptos::prelude::*;
use shared::ComplexityDistribution;

use crate::components::ascii_bar::AsciiBar;

/// Reads one class's share out of a distribution.
type Pick = fn(&ComplexityDistribution) -> u32;

/// SIMPLE / MODERATE / COMPLEX shares.
#[component]
pub fn ComplexityDistributionView(
    /// The status's `complexityDistribution`.
    /// `None` before the first status: dashes, not zeros.
    #[prop(into)]
    distribution: Signal<Option<ComplexityDistribution>>,
    /// Which decisions the shares cover ("last 100 decisions").
    #[prop(into)]
    covers: Signal<String>,
) -> impl IntoView {
    let classes: [(&'static str, Pick); 3] = [
        ("SIMPLE", |d| d.simple),
        ("MODERATE", |d| d.moderate),
        ("COMPLEX", |d| d.complex),
    ];
    let rows = classes
        .into_iter()
        .map(|(name, pick)| {
            let share = Signal::derive(move || {
                distribution.with(|d| d.as_ref().map_or(0.0, |d| f64::from(pick(d))))
            });
            let text = move || {
                distribution.with(|d| {
                    d.as_ref()
                        .map_or_else(|| "  —".to_owned(), |d| format!("{:3}%", pick(d)))
                })
            };
            view! {
                <div class="row">
                    <span class="class-label">{name}</span>
                    <AsciiBar percent=share label=format!("{name} share")/>
                    <span class="num pct">{text}</span>
                </div>
            }
        })
        .collect_view();
    view! {
        <section class="card" aria-labelledby="dist-h">
            <h2 id="dist-h">"Complexity mix"</h2>
            <p class="covers muted" data-testid="distribution-covers">{covers}</p>
            <div class="mono" data-testid="distribution">{rows}</div>
        </section>
    }
}
