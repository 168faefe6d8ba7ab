//! Routing insight: the score histogram of the buffered decisions with the
//! thresholds drawn, and a what-if slider on the Q4 threshold that
//! recomputes, here in the browser with the shared crate's code, the tier
//! shares and the cost those decisions would have had.
//!
//! The card's shape never changes, so it is built once (from this file's
//! own markup: no data is ever parsed as HTML) and then patched by key:
//! each bar, line and cell is rewritten only when its value changed.

use leptos::prelude::*;
use shared::insight::{BUCKETS, Calibration, Population, Prices, WhatIf, borderline, histogram};
use shared::quality::QualityPoint;
use shared::{MAX_SCORE, Routing, RoutingDecision, Tier};
use wasm_bindgen::JsCast;

use crate::dom::{Put, patch};
use crate::hooks::{ReplayRange, ReplayState};

/// Width of one histogram bucket in SVG units.
const BAR_W: f64 = 20.0;
/// Height of the histogram's plot area in SVG units.
const PLOT_H: f64 = 100.0;

/// USD, with more decimals for small sums: `$12.35`, `$0.0123`.
pub fn usd(x: f64) -> String {
    if x.abs() >= 1.0 || x == 0.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

/// The x of a score on the histogram (bucket 15 holds only 15).
fn hist_x(t: f64) -> f64 {
    t / MAX_SCORE * (BUCKETS - 1) as f64 * BAR_W
}

/// What the insight card shows, computed once per change of its inputs.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    counts: [u64; BUCKETS],
    borderline: usize,
    routing: Routing,
    threshold: f64,
    what_if: WhatIf,
    actual: WhatIf,
    /// The last calibration asked for, in words (empty before one).
    calibrated: String,
    /// The range chosen, and what its replay says.
    range: ReplayRange,
    replay: ReplayState,
}

/// The threshold lines: class, what they mark, where.
const LINES: [(&str, &str); 4] = [
    ("t-class", "MODERATE from "),
    ("t-class", "COMPLEX from "),
    ("t-q4", "Q4 from (the server's) "),
    ("t-whatif", "What-if Q4 from "),
];

/// The card's fixed markup; every `data-k` node is filled by [`puts`].
fn skeleton() -> String {
    let mut bars = String::new();
    for i in 0..BUCKETS {
        bars += &format!(
            r#"<rect class="hist-bar" data-k="bar{i}" data-testid="hist-bar-{i}" x="{}" width="{}" y="{PLOT_H}" height="0"><title data-k="bar{i}-t"></title></rect>"#,
            i as f64 * BAR_W + 2.0,
            BAR_W - 4.0
        );
    }
    for (j, (class, _)) in LINES.iter().enumerate() {
        bars += &format!(
            r#"<line class="{class}" data-k="line{j}" y1="0" y2="{PLOT_H}"><title data-k="line{j}-t"></title></line>"#
        );
    }
    for i in (0..=BUCKETS).step_by(3) {
        bars += &format!(
            r#"<text class="tick" x="{}" y="112">{i}</text>"#,
            i as f64 * BAR_W
        );
    }
    let mut rows = String::new();
    for tier in Tier::ALL {
        rows += &format!(
            r#"<tr><th scope="row">{tier}</th><td class="num mono" data-k="share-{tier}" data-testid="whatif-share-{tier}"></td><td class="num mono muted" data-k="count-{tier}"></td><td class="num mono muted" data-k="actual-{tier}" data-testid="actual-share-{tier}"></td></tr>"#
        );
    }
    format!(
        r#"<h2 id="insight-h">Routing insight</h2>
<div class="insight-grid">
<figure class="histogram">
<svg viewBox="-6 -4 332 122" role="img" aria-labelledby="hist-title" data-testid="score-histogram"><title id="hist-title" data-k="hist-title"></title>{bars}<line class="axis" x1="0" x2="320" y1="100" y2="100"></line></svg>
<figcaption class="muted">Scores of the buffered decisions. <span data-k="borderline" data-testid="borderline-count"></span> borderline (within 0.5 of a threshold).</figcaption>
</figure>
<div class="whatif">
<label for="whatif-slider">What if Q4 started at <strong class="mono" data-k="threshold" data-testid="whatif-threshold"></strong></label>
<input id="whatif-slider" data-k="slider" data-testid="whatif-slider" type="range" min="0" max="15" step="0.5" list="whatif-marks" aria-describedby="whatif-note">
<datalist id="whatif-marks"><option data-k="server-mark" data-testid="server-threshold-mark" label="server"></option></datalist>
<p class="covers"><label>Range <select id="whatif-range" data-testid="whatif-range"><option value="">buffered decisions</option><option value="-1h">last hour (stored)</option><option value="-1d">last day (stored)</option><option value="-7d">last week (stored)</option></select></label></p>
<p class="covers" data-k="replay" data-testid="whatif-replay" aria-live="polite"></p>
<p id="whatif-note" class="covers">Server's threshold: <span class="mono" data-k="server" data-testid="server-threshold"></span>. Simple-mode and Q2 decisions stay where they went. <button class="link" data-testid="whatif-reset" data-reset="1">Reset</button></p>
<p class="covers calibrate"><label>Send <input id="calibrate-share" data-testid="calibrate-share" type="number" min="0" max="100" step="1" value="20"> % of them to Q4:</label> <button class="link" data-testid="calibrate-run" data-calibrate="1">find the threshold</button> <span data-k="calibrated" data-testid="calibrate-result" aria-live="polite"></span></p>
<table class="shares"><thead><tr><th scope="col">Tier</th><th scope="col" class="num">What-if</th><th scope="col" class="num">Decisions</th><th scope="col" class="num">As routed</th></tr></thead><tbody>{rows}</tbody></table>
<p class="covers" data-k="cost" data-testid="whatif-cost"></p>
<figure class="quality-curve">
<svg viewBox="-24 -4 134 118" role="img" aria-labelledby="quality-title" data-testid="quality-curve"><title id="quality-title">Expected share of the quality gap recovered against the share of labelled prompts sent to Q4, as the Q4 threshold falls from 15 to 0</title><rect class="track" x="0" y="0" width="100" height="100"></rect><line class="axis" x1="0" x2="100" y1="100" y2="0"></line><polyline class="qcurve" data-k="qcurve" points=""></polyline><circle class="qmark" data-k="qmark" data-testid="quality-marker" r="3" cx="0" cy="100"></circle><text class="tick" x="0" y="112">0</text><text class="tick" x="86" y="112">Q4 100%</text><text class="tick" x="-12" y="4">100%</text><text class="tick qlabel" x="4" y="9">quality gap recovered</text></svg>
<figcaption class="covers" data-k="quality" data-testid="whatif-quality"></figcaption>
</figure>
</div>
</div>"#
    )
}

/// Every value of the card for `m`, by key.
fn puts(m: &Model) -> Vec<(String, Put)> {
    let mut v = Vec::new();
    let top = m.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    for (i, &n) in m.counts.iter().enumerate() {
        let h = n as f64 / top * PLOT_H;
        let range = if i + 1 == BUCKETS {
            "15".to_owned()
        } else {
            format!("{i}–{}", i + 1)
        };
        v.push((format!("bar{i}"), Put::Attr("data-count", n.to_string())));
        v.push((format!("bar{i}"), Put::Attr("y", (PLOT_H - h).to_string())));
        v.push((format!("bar{i}"), Put::Attr("height", h.to_string())));
        v.push((
            format!("bar{i}-t"),
            Put::Text(format!("score {range}: {n} decisions")),
        ));
    }
    let r = &m.routing;
    let at = [r.moderate_from, r.complex_from, r.q4_threshold, m.threshold];
    for (j, ((_, what), t)) in LINES.iter().zip(at).enumerate() {
        let x = hist_x(t).to_string();
        v.push((format!("line{j}"), Put::Attr("x1", x.clone())));
        v.push((format!("line{j}"), Put::Attr("x2", x)));
        v.push((format!("line{j}-t"), Put::Text(format!("{what}{t}"))));
    }
    v.push((
        "hist-title".into(),
        Put::Text(format!(
            "Score histogram of {} buffered decisions in 16 one-point buckets, with the class thresholds {} and {} and the Q4 threshold {}",
            m.counts.iter().sum::<u64>(),
            r.moderate_from,
            r.complex_from,
            r.q4_threshold
        )),
    ));
    v.push(("borderline".into(), Put::Text(m.borderline.to_string())));
    v.push(("threshold".into(), Put::Text(score_text(m.threshold))));
    v.push(("slider".into(), Put::Value(m.threshold.to_string())));
    v.push(("server".into(), Put::Text(score_text(r.q4_threshold))));
    // The server's threshold as a tick on the slider itself.
    v.push((
        "server-mark".into(),
        Put::Attr("value", r.q4_threshold.to_string()),
    ));
    v.push(("calibrated".into(), Put::Text(m.calibrated.clone())));
    let state = match &m.replay {
        ReplayState::Off => "off",
        ReplayState::Loading => "loading",
        ReplayState::Ready(_) => "ready",
        ReplayState::Failed(_) => "failed",
    };
    v.push(("replay".into(), Put::Attr("data-state", state.to_owned())));
    v.push(("replay".into(), Put::Text(replay_text(m.range, &m.replay))));
    for tier in Tier::ALL {
        let n = m.what_if.counts[tier].to_string();
        v.push((format!("share-{tier}"), Put::Attr("data-count", n.clone())));
        v.push((
            format!("share-{tier}"),
            Put::Text(format!("{:.1}%", m.what_if.percent(tier))),
        ));
        v.push((format!("count-{tier}"), Put::Text(n)));
        v.push((
            format!("actual-{tier}"),
            Put::Text(format!("{:.1}%", m.actual.percent(tier))),
        ));
    }
    let cost = m
        .what_if
        .cost_usd
        .map_or_else(String::new, |c| c.to_string());
    v.push(("cost".into(), Put::Attr("data-value", cost)));
    v.push(("cost".into(), Put::Text(cost_text(m))));
    let points = r.expected_quality.as_ref().map_or_else(String::new, |eq| {
        eq.curve
            .iter()
            .map(|p| {
                let (x, y) = chart_xy(p);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    v.push(("qcurve".into(), Put::Attr("points", points)));
    let (cx, cy) = quality_point(m.threshold, r).map_or((0.0, 100.0), |p| chart_xy(&p));
    v.push(("qmark".into(), Put::Attr("cx", format!("{cx:.1}"))));
    v.push(("qmark".into(), Put::Attr("cy", format!("{cy:.1}"))));
    v.push(("quality".into(), Put::Text(quality_text(m.threshold, r))));
    v
}

/// The quality expected at `threshold` on the server's labelled data (see
/// [`quality_point`]): "at 7.0: 34 % on Q4, 42 % of the quality gap
/// recovered on the labelled data".
pub fn quality_text(threshold: f64, r: &Routing) -> String {
    let Some(eq) = r.expected_quality.as_ref() else {
        return "Expected quality: not measured by this server".to_owned();
    };
    let Some(p) = quality_point(threshold, r) else {
        return "Expected quality: no curve from this server".to_owned();
    };
    format!(
        "at {}: {:.0} % on Q4, {:.0} % of the quality gap recovered on the labelled data ({}, {} prompts)",
        score_text(p.threshold),
        p.q4_share * 100.0,
        p.gap_recovered * 100.0,
        eq.source.name,
        eq.source.prompts
    )
}

/// The expected quality at `threshold`: the server's exact figures at its
/// own threshold, else the curve's point nearest (the slider moves in its
/// steps).
fn quality_point(threshold: f64, r: &Routing) -> Option<QualityPoint> {
    let eq = r.expected_quality.as_ref()?;
    if threshold == r.q4_threshold {
        Some(QualityPoint {
            threshold,
            q4_share: eq.q4_share,
            gap_recovered: eq.gap_recovered,
        })
    } else {
        eq.point_near(threshold)
    }
}

/// Where a point of the quality curve is drawn: x the Q4 share, y the gap
/// recovered (up), both in percent of the 100-unit plot.
fn chart_xy(p: &QualityPoint) -> (f64, f64) {
    (
        p.q4_share * 100.0,
        100.0 - p.gap_recovered.clamp(-0.1, 1.1) * 100.0,
    )
}

/// A threshold as an operator writes it: `7.0`, `6.5`, `4.25`.
pub fn score_text(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.1}")
    } else {
        t.to_string()
    }
}

/// What the replay of a stored range says, in words.
fn replay_text(range: ReplayRange, state: &ReplayState) -> String {
    let span = match range {
        ReplayRange::Buffer => return String::new(),
        ReplayRange::Hour => "last hour",
        ReplayRange::Day => "last day",
        ReplayRange::Week => "last week",
    };
    let r = match state {
        ReplayState::Off => return String::new(),
        ReplayState::Loading => return format!("Replaying the stored decisions of the {span}…"),
        ReplayState::Failed(why) => return format!("No replay of the {span}: {why}"),
        ReplayState::Ready(r) => r,
    };
    let signed = |x: f64| {
        if x >= 0.0 {
            format!("+{}", usd(x))
        } else {
            format!("-{}", usd(-x))
        }
    };
    let mut s = format!(
        "Stored, {span}: {} two-stage decisions; at {}, {} move to Q4 and {} leave it: Q4 share {:.1} % → {:.1} %; tokens {:+.0}",
        r.decisions,
        score_text(r.threshold),
        r.to_q4,
        r.from_q4,
        r.q4_share_before * 100.0,
        r.q4_share_after * 100.0,
        r.tokens_delta
    );
    if let Some(c) = r.cost_delta_usd {
        s += &format!(", cost {}", signed(c));
    }
    if let (Some(b), Some(a)) = (r.gap_recovered_before, r.gap_recovered_after) {
        s += &format!(
            "; expected {:.0} % → {:.0} % of the quality gap recovered",
            b * 100.0,
            a * 100.0
        );
    }
    s + " (moved decisions priced at the destination tier's mean tokens)."
}

/// What the calibration found, in words.
fn calibrated_text(asked_percent: f64, c: Option<Calibration>, total: usize) -> String {
    match c {
        Some(c) => format!(
            "threshold {} sends {:.1}% ({} of {total}; {asked_percent}% asked)",
            score_text(c.threshold),
            c.q4_share * 100.0,
            c.q4_decisions
        ),
        None => "no decisions to calibrate on".to_owned(),
    }
}

/// The what-if cost against the cost as routed and all on Q4.
fn cost_text(m: &Model) -> String {
    match (m.what_if.cost_usd, m.actual.cost_usd) {
        (Some(c), Some(was)) => {
            let mut s = format!("Cost {} at this threshold, {} as routed", usd(c), usd(was));
            if let Some(q4) = m.what_if.all_on_q4_usd {
                s += &format!(", {} all on Q4", usd(q4));
            }
            s
        }
        _ => "Cost: needs a --price for every tier these decisions would use".to_owned(),
    }
}

/// Finds, with the server's own calibration code, the threshold that sends
/// the share asked for (percent, in the card's number field) of the held
/// decisions to Q4, and moves the what-if there.
fn calibrate(
    button: &web_sys::Element,
    population: Memo<Population>,
    chosen: RwSignal<Option<f64>>,
    calibrated: RwSignal<String>,
) {
    let asked = button
        .closest(".insight")
        .ok()
        .flatten()
        .and_then(|card| card.query_selector("#calibrate-share").ok().flatten())
        .and_then(|e| e.dyn_into::<web_sys::HtmlInputElement>().ok())
        .map(|input| input.value_as_number());
    let Some(percent) = asked.filter(|p| (0.0..=100.0).contains(p)) else {
        calibrated.set("give a share from 0 to 100 %".to_owned());
        return;
    };
    let (found, total) = population.with_untracked(|p| (p.calibrate(percent / 100.0), p.len()));
    if let Some(c) = found {
        chosen.set(Some(c.threshold));
    }
    calibrated.set(calibrated_text(percent, found, total));
}

/// The histogram, the borderline count and the what-if slider.
#[component]
pub fn RoutingInsight(
    /// The buffered decisions, newest first.
    #[prop(into)]
    decisions: Signal<Vec<RoutingDecision>>,
    /// The thresholds the server routes by.
    #[prop(into)]
    routing: Signal<Routing>,
    /// Each tier's price, where the server has one.
    #[prop(into)]
    prices: Signal<Prices>,
    /// The range and threshold to replay (set here, replayed by the hook).
    ask: RwSignal<(ReplayRange, f64)>,
    /// What the replay says.
    #[prop(into)]
    replay: Signal<ReplayState>,
) -> impl IntoView {
    let population = Memo::new(move |_| decisions.with(|d| Population::new(d)));
    // `None` follows the server's threshold until the operator moves it.
    let chosen = RwSignal::new(None::<f64>);
    let calibrated = RwSignal::new(String::new());
    let model = Memo::new(move |_| {
        let routing = routing.get();
        let prices = prices.get();
        let threshold = chosen.get().unwrap_or(routing.q4_threshold);
        let (counts, near) =
            decisions.with(|d| (histogram(d), borderline(d, &routing.thresholds())));
        population.with(|p| Model {
            counts,
            borderline: near,
            threshold,
            what_if: p.what_if(threshold, &prices),
            actual: p.actual(routing.q4_threshold, &prices),
            routing,
            calibrated: calibrated.get(),
            range: ask.with(|a| a.0),
            replay: replay.get(),
        })
    });
    // The stored range follows the slider.
    Effect::new(move |_| {
        let t = model.with(|m| m.threshold);
        if ask.with_untracked(|a| a.1) != t {
            ask.update(|a| a.1 = t);
        }
    });
    let root = NodeRef::<leptos::html::Section>::new();
    Effect::new(move |_| {
        let m = model.get();
        let Some(section) = root.get() else {
            return;
        };
        if section.child_element_count() == 0 {
            section.set_inner_html(&skeleton());
        }
        patch(&section, puts(&m));
    });
    // Events bubble up to the card: the slider's moves, the reset, the
    // calibration.
    let on_change = move |ev: leptos::ev::Event| {
        if let Some(select) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlSelectElement>().ok())
            .filter(|s| s.id() == "whatif-range")
        {
            ask.update(|a| a.0 = ReplayRange::of(&select.value()));
        }
    };
    let on_input = move |ev: leptos::ev::Event| {
        let Some(input) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            .filter(|i| i.id() == "whatif-slider")
        else {
            return;
        };
        let t = input.value_as_number();
        if shared::insight::valid_threshold(t) {
            chosen.set(Some(t));
            if let Some(perf) = window().performance() {
                let _ = perf.mark("whatif-input");
            }
        }
    };
    let on_click = move |ev: leptos::ev::MouseEvent| {
        let Some(target) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        if target.has_attribute("data-reset") {
            chosen.set(None);
        } else if target.has_attribute("data-calibrate") {
            calibrate(&target, population, chosen, calibrated);
        }
    };
    view! {
        <section
            class="card wide insight"
            aria-labelledby="insight-h"
            data-testid="routing-insight"
            node_ref=root
            on:input=on_input
            on:change=on_change
            on:click=on_click
        ></section>
    }
}
