//! `/history`: trends over hours, days and weeks from the server's store,
//! and the stored decision log with filters, paging and exports.
//!
//! Built once and driven by plain DOM events: the page fetches, parses in
//! the browser and draws; the live page's code and speed are untouched.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen_futures::spawn_local;
use web_sys::{Element, HtmlInputElement, HtmlSelectElement};

use crate::api::{DECISIONS_PATH, HISTORY_PATH, fetch_json};
use crate::components::history_view::{charts, field, log_row, text};
use crate::dom::find;

/// The page's fixed markup; `data-k` nodes are written as data arrives.
const SKELETON: &str = r#"
<section class="panel" aria-labelledby="history-h">
<header class="panel-head"><h1 id="history-h">History</h1>
<nav class="ranges" aria-label="Range">
<button type="button" data-act="1h" data-testid="range-hour">Last hour</button>
<button type="button" data-act="1d" data-testid="range-day">Last day</button>
<button type="button" data-act="7d" data-testid="range-week">Last week</button>
<form data-form="custom" class="custom"><label>From <input type="datetime-local" name="from" data-testid="custom-from" required></label>
<label>To <input type="datetime-local" name="to" data-testid="custom-to" required></label>
<button type="submit" data-testid="custom-apply">Show</button></form>
</nav></header>
<p class="muted" data-k="range" data-testid="history-range" aria-live="polite"></p>
<div class="card" data-k="charts" data-testid="history-charts"></div>
<section class="card" aria-labelledby="log-h"><h2 id="log-h">Decision log</h2>
<form data-form="log" class="filters">
<label>Tier <select name="tier" data-testid="log-tier"><option value="">all</option><option>Q2</option><option>Q3</option><option>Q4</option></select></label>
<label>Complexity <select name="complexity" data-testid="log-complexity"><option value="">all</option><option>SIMPLE</option><option>MODERATE</option><option>COMPLEX</option></select></label>
<label>Mode <select name="mode" data-testid="log-mode"><option value="">all</option><option>two-stage</option><option>simple</option><option>none</option></select></label>
<label>Query holds <input type="search" name="q" maxlength="200" data-testid="log-q"></label>
<button type="submit" data-testid="log-apply">Filter</button>
<a data-k="csv" data-testid="export-csv" download>CSV</a> <a data-k="ndjson" data-testid="export-ndjson" download>NDJSON</a>
</form>
<table class="log"><thead><tr><th>Time</th><th>Tier</th><th>Complexity</th><th>Score</th><th>Mode</th><th>Query</th></tr></thead>
<tbody data-k="rows" data-testid="log-table"></tbody></table>
<p><button type="button" data-act="newest" data-testid="log-newest">Newest</button>
<button type="button" data-act="older" data-testid="log-older" disabled>Older</button>
<span class="muted" data-k="log-note" data-testid="log-note"></span></p>
</section></section>"#;

/// What the page shows: the range asked for and the log's filters and page.
#[derive(Default)]
struct State {
    range: String,
    filters: String,
    before: Option<u64>,
    next: Option<u64>,
}

/// The `name=value&...` of a form's non-empty fields, URL-encoded.
fn form_query(form: &Element) -> String {
    let mut out = Vec::new();
    let Ok(fields) = form.query_selector_all("[name]") else {
        return String::new();
    };
    for i in 0..fields.length() {
        let Some(node) = fields.item(i) else { continue };
        let (name, value) = if let Some(s) = node.dyn_ref::<HtmlSelectElement>() {
            (s.name(), s.value())
        } else if let Some(s) = node.dyn_ref::<HtmlInputElement>() {
            (s.name(), s.value())
        } else {
            continue;
        };
        if !value.is_empty() {
            out.push(format!(
                "{name}={}",
                String::from(js_sys::encode_uri_component(&value))
            ));
        }
    }
    out.join("&")
}

fn load_history(root: Element, state: Rc<RefCell<State>>) {
    let range = state.borrow().range.clone();
    spawn_local(async move {
        let note = find(&root, "range");
        let charts_el = find(&root, "charts");
        match fetch_json(&format!("{HISTORY_PATH}?{range}")).await {
            Ok(h) => {
                let (markup, total) = charts(&h);
                if let Some(el) = charts_el {
                    el.set_inner_html(&markup);
                }
                if let Some(el) = note {
                    el.set_text_content(Some(&format!(
                        "{total} decisions, {} a step, from {} to {} (UTC)",
                        text(&field(&h, "step")),
                        text(&field(&h, "from")),
                        text(&field(&h, "to"))
                    )));
                    let _ = el.set_attribute("data-count", &total.to_string());
                }
            }
            Err(e) => {
                if let Some(el) = note {
                    el.set_text_content(Some(&format!("No history: {e}")));
                }
            }
        }
    });
}

fn load_log(root: Element, state: Rc<RefCell<State>>) {
    let (filters, before) = {
        let s = state.borrow();
        (s.filters.clone(), s.before)
    };
    for (key, format) in [("csv", "csv"), ("ndjson", "ndjson")] {
        if let Some(a) = find(&root, key) {
            let _ = a.set_attribute(
                "href",
                &format!("{DECISIONS_PATH}?format={format}&{filters}"),
            );
        }
    }
    let page = match before {
        Some(b) => format!("{DECISIONS_PATH}?limit=50&before={b}&{filters}"),
        None => format!("{DECISIONS_PATH}?limit=50&{filters}"),
    };
    spawn_local(async move {
        let result = fetch_json(&page).await;
        let (Some(rows), Some(note)) = (find(&root, "rows"), find(&root, "log-note")) else {
            return;
        };
        rows.set_inner_html("");
        let older = root.query_selector("[data-act=older]").ok().flatten();
        match result {
            Ok(p) => {
                let list = js_sys::Array::from(&field(&p, "decisions"));
                for d in list.iter() {
                    let _ = rows.append_child(&log_row(&d));
                }
                let next = field(&p, "nextBefore").as_f64().map(|n| n as u64);
                state.borrow_mut().next = next;
                if let Some(b) = older {
                    b.toggle_attribute_with_force("disabled", next.is_none())
                        .ok();
                }
                note.set_text_content(Some(&match list.length() {
                    0 => "No stored decisions match.".to_owned(),
                    n => format!("{n} shown, newest first"),
                }));
            }
            Err(e) => note.set_text_content(Some(&format!("No log: {e}"))),
        }
    });
}

/// Local `datetime-local` text as Unix ms (the server takes ms as a time).
fn local_ms(form: &Element, name: &str) -> Option<i64> {
    let input = form
        .query_selector(&format!("[name={name}]"))
        .ok()
        .flatten()?
        .dyn_into::<HtmlInputElement>()
        .ok()?;
    let ms = js_sys::Date::new(&input.value().into()).get_time();
    ms.is_finite().then_some(ms as i64)
}

fn start(root: Element) {
    root.set_inner_html(SKELETON);
    let state = Rc::new(RefCell::new(State {
        range: "from=-1d&step=5m".into(),
        ..State::default()
    }));
    load_history(root.clone(), Rc::clone(&state));
    load_log(root.clone(), Rc::clone(&state));
    let (r, s) = (root.clone(), Rc::clone(&state));
    let on_click = Closure::<dyn Fn(web_sys::Event)>::new(move |ev: web_sys::Event| {
        let Some(target) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()) else {
            return;
        };
        let Some(act) = target.closest("[data-act]").ok().flatten() else {
            return;
        };
        match act.get_attribute("data-act").as_deref() {
            Some("1h") => s.borrow_mut().range = "from=-1h&step=1m".into(),
            Some("1d") => s.borrow_mut().range = "from=-1d&step=5m".into(),
            Some("7d") => s.borrow_mut().range = "from=-7d&step=1h".into(),
            Some("older") => {
                let next = s.borrow().next;
                s.borrow_mut().before = next;
                return load_log(r.clone(), Rc::clone(&s));
            }
            Some("newest") => {
                s.borrow_mut().before = None;
                return load_log(r.clone(), Rc::clone(&s));
            }
            _ => return,
        }
        load_history(r.clone(), Rc::clone(&s));
    });
    let (r, s) = (root.clone(), state);
    let on_submit = Closure::<dyn Fn(web_sys::Event)>::new(move |ev: web_sys::Event| {
        ev.prevent_default();
        let Some(form) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()) else {
            return;
        };
        if form.get_attribute("data-form").as_deref() == Some("custom") {
            if let (Some(from), Some(to)) = (local_ms(&form, "from"), local_ms(&form, "to")) {
                s.borrow_mut().range = format!("from={from}&to={to}");
                load_history(r.clone(), Rc::clone(&s));
            }
        } else {
            {
                let mut st = s.borrow_mut();
                st.filters = form_query(&form);
                st.before = None;
            }
            load_log(r.clone(), Rc::clone(&s));
        }
    });
    let _ = root.add_event_listener_with_callback("click", on_click.as_ref().unchecked_ref());
    let _ = root.add_event_listener_with_callback("submit", on_submit.as_ref().unchecked_ref());
    // The page lives as long as the document.
    on_click.forget();
    on_submit.forget();
}

/// `/history`: the page, built into the body as plain DOM (no reactive
/// view: nothing on it changes but what the handlers write).
pub fn mount() {
    start(super::shell("history-page"));
}
