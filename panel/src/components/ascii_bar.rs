//! A percentage as a monospace bar of block characters.

use leptos::prelude::*;

/// How many characters a full bar has.
pub const BAR_WIDTH: usize = 20;

/// The bar's text for `percent` (clamped to 0..=100 for drawing only).
pub fn bar_text(percent: f64, width: usize) -> String {
    let p = if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let filled = ((p / 100.0) * width as f64).round() as usize;
    let mut s = "█".repeat(filled);
    s.push_str(&"░".repeat(width - filled));
    s
}

/// A bar with `role="meter"`, so the value is read out, not only drawn.
#[component]
pub fn AsciiBar(
    /// The value, 0..=100.
    #[prop(into)]
    percent: Signal<f64>,
    /// What the bar measures, for screen readers.
    #[prop(into)]
    label: String,
) -> impl IntoView {
    view! {
        <span
            class="bar"
            role="meter"
            aria-label=label
            aria-valuemin="0"
            aria-valuemax="100"
            aria-valuenow=move || format!("{:.1}", percent.get())
        >
            {move || bar_text(percent.get(), BAR_WIDTH)}
        </span>
    }
}
