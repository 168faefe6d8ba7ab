//! A decision's signals as one bar on the score scale, with the thresholds
//! marked, and as a list of numbers. Built once, when its row is first
//! opened; names are set as text, never parsed as markup.

use shared::{MAX_SCORE, Routing, RoutingDecision};
use web_sys::Element;

use crate::dom::{SVG, element};

/// Width of the 0..=15 scale in SVG units: 20 per point.
const SCALE: f64 = 300.0;

fn x(score: f64) -> f64 {
    score.clamp(0.0, MAX_SCORE) / MAX_SCORE * SCALE
}

/// Signed points with two decimals: `+1.50`, `-2.00`.
pub fn points(w: f64) -> String {
    format!("{w:+.2}")
}

/// One rectangle of the bar (a segment, a threshold, the score's mark),
/// with its title.
fn rect(svg: &Element, class: &str, from: f64, to: f64, title: &str) {
    let (lo, hi) = if from <= to { (from, to) } else { (to, from) };
    let r = element(
        SVG,
        "rect",
        &[
            ("class", class),
            ("x", &x(lo).to_string()),
            ("y", "4"),
            ("width", &(x(hi) - x(lo)).max(1.0).to_string()),
            ("height", "16"),
        ],
        None,
    );
    let _ = r.append_child(&element(SVG, "title", &[], Some(title)));
    let _ = svg.append_child(&r);
}

/// One line of the list: swatch, name, points.
fn item(list: &Element, class: &str, name: &str, weight: f64) {
    let li = element(
        None,
        "li",
        &[
            ("data-testid", "signal"),
            ("data-name", name),
            ("data-weight", &weight.to_string()),
        ],
        None,
    );
    for (class, text) in [
        (format!("swatch {class}"), ""),
        ("signal-name".to_owned(), name),
        ("num mono".to_owned(), &points(weight)),
    ] {
        let _ = li.append_child(&element(None, "span", &[("class", &class)], Some(text)));
    }
    let _ = list.append_child(&li);
}

/// The signals of `d` stacked from 0 (each segment as wide as its points; a
/// negative one, the cap, drawn back from the end), the score marked, the
/// class thresholds and the Q4 threshold drawn; then the list.
pub fn signal_bars(d: &RoutingDecision, routing: &Routing) -> Element {
    let signals = d.signals.as_deref().unwrap_or_default();
    let score = d.score;
    let label = format!(
        "Signals of score {score:.2}: {}",
        signals
            .iter()
            .map(|s| format!("{} {}", s.name, points(s.weight)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let root = element(
        None,
        "div",
        &[
            ("class", "signals"),
            ("data-testid", "decision-signals"),
            ("data-score", &score.to_string()),
        ],
        None,
    );
    let svg = element(
        SVG,
        "svg",
        &[
            ("class", "signal-bar"),
            ("viewBox", "0 -2 300 28"),
            ("role", "img"),
            ("aria-label", &label),
            ("preserveAspectRatio", "none"),
        ],
        None,
    );
    let _ = svg.append_child(&element(SVG, "title", &[], Some(&label)));
    rect(&svg, "track", 0.0, MAX_SCORE, "0 to 15");
    let list = element(None, "ul", &[("class", "signal-list")], None);
    let mut at = 0.0;
    for (i, s) in signals.iter().enumerate() {
        let class = if s.weight < 0.0 {
            "neg".to_owned()
        } else {
            format!("s{}", i % 6)
        };
        let title = format!("{}: {} points", s.name, points(s.weight));
        rect(&svg, &format!("seg {class}"), at, at + s.weight, &title);
        at += s.weight;
        item(&list, &class, &s.name, s.weight);
    }
    // A router elsewhere may explain only part of its score.
    let unexplained = score - at;
    if unexplained.abs() >= 0.005 {
        item(&list, "rest", "not explained by the router", unexplained);
    }
    for (t, what, class) in [
        (routing.moderate_from, "MODERATE from", "mark t-class"),
        (routing.complex_from, "COMPLEX from", "mark t-class"),
        (routing.q4_threshold, "Q4 from", "mark t-q4"),
        (score, "score", "mark score"),
    ] {
        rect(&svg, class, t, t, &format!("{what} {t}"));
    }
    let sum = element(None, "li", &[("class", "sum")], None);
    let _ = sum.append_child(&element(
        None,
        "span",
        &[("class", "signal-name")],
        Some("score"),
    ));
    let _ = sum.append_child(&element(
        None,
        "span",
        &[("class", "num mono"), ("data-testid", "signal-sum")],
        Some(&format!("{score:.2}")),
    ));
    let _ = list.append_child(&sum);
    let _ = root.append_child(&svg);
    let _ = root.append_child(&list);
    if signals.is_empty() {
        let why = if d.mode == Some(shared::api::Mode::Simple) {
            "Simple mode sends every query to Q2 without assessing it."
        } else {
            "This decision came without signals."
        };
        let _ = root.append_child(&element(None, "p", &[("class", "muted")], Some(why)));
    }
    root
}
