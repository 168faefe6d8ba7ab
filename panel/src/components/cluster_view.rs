//! The cluster (only from a server run with `--redis`): whose view the
//! status is, every instance with its state, and which one this panel is
//! talking to. Read from the status JSON as the browser parsed it (the
//! WASM carries no decoder for these fields) and built with plain DOM
//! calls, all text set as text.

use leptos::prelude::*;
use wasm_bindgen::JsValue;

use crate::components::history_view::{field, text};
use crate::dom::element;

/// `HH:MM:SS` (UTC) of an RFC 3339 time, as the server writes it.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

/// A whole number of a parsed JSON value (0 when it is not one).
fn count(v: &JsValue) -> u64 {
    v.as_f64().map_or(0, |n| n as u64)
}

/// Fills `section` from a status's `cluster` and `instances`; hides it
/// when there are none.
fn fill(section: &web_sys::HtmlElement, json: Option<&str>) {
    let status = json.and_then(|j| js_sys::JSON::parse(j).ok());
    let (c, list) = match &status {
        Some(s) => (field(s, "cluster"), field(s, "instances")),
        None => (JsValue::UNDEFINED, JsValue::UNDEFINED),
    };
    if !c.is_object() || !js_sys::Array::is_array(&list) {
        section.set_hidden(true);
        return;
    }
    section.set_hidden(false);
    section.set_text_content(None);
    let list: Vec<JsValue> = js_sys::Array::from(&list).iter().collect();
    let head = format!(
        "Cluster {} · {} instances",
        text(&field(&c, "name")),
        list.len()
    );
    let _ = section.append_child(&element(None, "h2", &[], Some(&head)));
    let label = text(&field(&c, "label"));
    if !label.is_empty() {
        let overflowed = count(&field(&c, "overflowed"));
        let text = format!(
            "Showing the {label}. {} decisions wait{}.",
            count(&field(&c, "backlog")),
            if overflowed > 0 {
                format!(", {overflowed} overflowed")
            } else {
                String::new()
            }
        );
        let banner = element(
            None,
            "p",
            &[
                ("class", "banner"),
                ("role", "alert"),
                ("data-testid", "cluster-banner"),
            ],
            Some(&text),
        );
        let _ = section.append_child(&banner);
    }
    let ul = element(
        None,
        "ul",
        &[("class", "instances"), ("data-testid", "instances")],
        None,
    );
    for i in &list {
        let state = text(&field(i, "state"));
        let current = field(i, "current").as_bool() == Some(true);
        let mut row = text(&field(i, "id"));
        if current {
            row.push_str(" (this panel's)");
        }
        for (key, after) in [
            ("address", ""),
            ("state", ""),
            ("activeRequests", " in flight"),
            ("totalDecisions", " decisions"),
        ] {
            let v = field(i, key);
            row.push_str(" · ");
            row.push_str(&v.as_string().unwrap_or_else(|| count(&v).to_string()));
            row.push_str(after);
        }
        row.push_str(" · heartbeat ");
        row.push_str(clock(&text(&field(i, "lastHeartbeat"))));
        row.push_str(" UTC");
        let li = element(
            None,
            "li",
            &[
                ("data-testid", "instance-row"),
                ("data-state", &state),
                ("data-current", if current { "true" } else { "false" }),
            ],
            Some(&row),
        );
        let _ = ul.append_child(&li);
    }
    let _ = section.append_child(&ul);
}

/// The cluster card; hidden when the server is not in a cluster.
#[component]
pub fn ClusterCard(
    /// The status's JSON when it has the cluster's fields.
    #[prop(into)]
    json: Signal<Option<String>>,
) -> impl IntoView {
    let root = NodeRef::<leptos::html::Section>::new();
    Effect::new(move |_| {
        json.with(|j| {
            if let Some(section) = root.get() {
                fill(&section, j.as_deref());
            }
        });
    });
    view! {
        <section class="card wide cluster" data-testid="cluster" hidden=true node_ref=root></section>
    }
}
