//! The History page's charts and decision log rows, drawn from the parsed
//! JSON of `/api/orchestrator/history` and `/api/orchestrator/decisions`.
//!
//! Charts are SVG markup this file writes itself (numbers only: nothing
//! from the server is ever parsed as markup); log rows are elements whose
//! text is set as text.

use wasm_bindgen::JsValue;
use web_sys::Element;

use crate::dom::element;
use crate::time;

/// Every chart's viewBox is 600 x 120 (written as text in the markup).
const W: f64 = 600.0;
const H: f64 = 120.0;

/// Field `k` of a parsed JSON object.
pub fn field(v: &JsValue, k: &str) -> JsValue {
    js_sys::Reflect::get(v, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

/// A parsed JSON array of numbers (missing ones as 0).
pub fn numbers(v: &JsValue) -> Vec<f64> {
    if !js_sys::Array::is_array(v) {
        return Vec::new();
    }
    js_sys::Array::from(v)
        .iter()
        .map(|x| x.as_f64().unwrap_or(0.0))
        .collect()
}

/// Text of a parsed JSON value ("" when it is not a string).
pub fn text(v: &JsValue) -> String {
    v.as_string().unwrap_or_default()
}

/// One stacked area chart: `layers` (class, per-point values) stacked as
/// shares of each point's sum; points with no data are left empty.
fn stacked(title: &str, testid: &str, layers: &[(&str, Vec<f64>)], n: usize) -> String {
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            layers
                .iter()
                .map(|(_, v)| v.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    // Each step is a column as wide as the step (a stepped area): sparse
    // data shows where it is, dense data reads as an area.
    let step = W / n.max(1) as f64;
    let mut below = vec![0.0f64; n];
    let mut paths = String::new();
    let mut legend = String::new();
    for (class, values) in layers {
        let mut d = String::new();
        let mut top = below.clone();
        for i in 0..n {
            if totals[i] <= 0.0 {
                continue;
            }
            top[i] = below[i] + values[i] / totals[i];
            d += &format!(
                "M{:.1} {:.1}H{:.1}V{:.1}H{:.1}Z",
                i as f64 * step,
                H - top[i] * H,
                (i + 1) as f64 * step,
                H - below[i] * H,
                i as f64 * step
            );
        }
        let sum = values.iter().sum::<f64>() as u64;
        paths += &format!(
            r#"<path class="{class}" d="{d}" data-testid="{testid}-{class}" data-count="{sum}"><title>{class}: {sum}</title></path>"#
        );
        legend += &format!(r#"<span class="key {class}">{class} {sum}</span> "#);
        below = top;
    }
    format!(
        r#"<svg viewBox="0 0 600 120" preserveAspectRatio="none" role="img" class="trend" data-testid="{testid}"><title>{title}</title>{paths}</svg><p class="legend muted">{legend}</p>"#
    )
}

/// Every chart of a history answer, as markup, and its decisions in all.
pub fn charts(h: &JsValue) -> (String, u64) {
    let times = numbers(&field(h, "times"));
    let n = times.len();
    let series: Vec<JsValue> = js_sys::Array::from(&field(h, "series")).iter().collect();
    let of =
        |key: &str| -> Vec<Vec<f64>> { series.iter().map(|s| numbers(&field(s, key))).collect() };
    let sum_tiers = |per: &[Vec<f64>]| -> Vec<f64> {
        (0..n)
            .map(|i| per.iter().map(|v| v.get(i).copied().unwrap_or(0.0)).sum())
            .collect()
    };
    let decisions = of("decisions");
    let tier_mix: Vec<(&str, Vec<f64>)> = ["Q2", "Q3", "Q4"]
        .into_iter()
        .zip(decisions.iter().cloned())
        .collect();
    let complexity: Vec<(&str, Vec<f64>)> = ["simple", "moderate", "complex"]
        .into_iter()
        .map(|k| (k, sum_tiers(&of(k))))
        .collect();
    let volume = sum_tiers(&decisions);
    let total: f64 = volume.iter().sum();
    let peak = volume.iter().copied().fold(0.0, f64::max).max(1.0);
    let bar = W / n.max(1) as f64;
    let mut bars = String::new();
    for (i, v) in volume.iter().enumerate() {
        if *v > 0.0 {
            let h = v / peak * H;
            bars += &format!(
                r#"<rect x="{:.1}" y="{:.1}" width="{:.2}" height="{h:.1}"><title>{}</title></rect>"#,
                i as f64 * bar,
                H - h,
                bar.max(0.5),
                *v as u64
            );
        }
    }
    let counts: Vec<String> = volume.iter().map(|v| (*v as u64).to_string()).collect();
    let axis = match (times.first(), times.last()) {
        (Some(a), Some(b)) => format!(
            r#"<p class="axis muted"><span>{} {}</span><span>{} {}</span></p>"#,
            time::date(a * 1e3),
            time::hours_minutes(a * 1e3),
            time::date(b * 1e3),
            time::hours_minutes(b * 1e3)
        ),
        _ => String::new(),
    };
    let markup = format!(
        r#"<h3>Tier mix</h3>{tiers}{axis}<h3>Complexity mix</h3>{mix}{axis}<h3>Decision volume <span class="muted">(peak {peak} a step)</span></h3><svg viewBox="0 0 600 120" preserveAspectRatio="none" role="img" class="trend volume" data-testid="volume-chart" data-counts="{counts}"><title>Decisions per step</title>{bars}</svg>{axis}"#,
        peak = peak as u64,
        tiers = stacked("Share of each tier per step", "tier-mix", &tier_mix, n),
        mix = stacked(
            "Share of each complexity per step",
            "complexity-mix",
            &complexity,
            n
        ),
        counts = counts.join(","),
    );
    (markup, total as u64)
}

/// One row of the decision log.
pub fn log_row(d: &JsValue) -> Element {
    let seq = (field(d, "seq").as_f64().unwrap_or(0.0) as u64).to_string();
    let row = element(
        None,
        "tr",
        &[("data-testid", "log-row"), ("data-seq", &seq)],
        None,
    );
    let when = text(&field(d, "timestamp"));
    let ms = js_sys::Date::parse(&when);
    let score = field(d, "score").as_f64().unwrap_or(0.0);
    let mode = text(&field(d, "mode"));
    let cells = [
        format!("{} {}", time::date(ms), time::clock(ms)),
        text(&field(d, "tier")),
        text(&field(d, "complexity")),
        format!("{score:.2}"),
        if mode.is_empty() { "—".into() } else { mode },
        text(&field(d, "query")),
    ];
    for c in cells {
        let _ = row.append_child(&element(None, "td", &[], Some(&c)));
    }
    row
}
