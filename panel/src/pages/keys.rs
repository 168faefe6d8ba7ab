//! `/keys`: the virtual keys, for the admin: each key's spend against its
//! budget with a burn-down line over the period and when it runs out at
//! this rate, its brownout, its requests and tokens in the last minute
//! against its limits; making keys (the secret shown once) and revoking
//! them. Signs in with the admin key (an admin session, as the live page's
//! read key opens a read session).
//!
//! A bundle of its own, plain DOM like History; every answer is decoded
//! through the shared types (`shared::keys`).

use std::rc::Rc;

use chrono::{DateTime, Utc};
use gloo_net::http::{Request, Response};
use shared::keys::{CreatedKey, KeyList, KeyView, NewKey, Period};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen_futures::spawn_local;
use web_sys::{Element, HtmlInputElement, HtmlSelectElement};

use crate::dom::{SVG, element, find};

const KEYS_PATH: &str = "/api/keys";
const SESSION_PATH: &str = "/api/admin/session";
/// How often the table is read again.
const REFRESH_MS: u32 = 5_000;

const SKELETON: &str = r#"
<section class="panel" aria-labelledby="keys-h">
<header class="panel-head"><h1 id="keys-h">Keys</h1></header>
<p class="muted" data-k="note" data-testid="keys-note" aria-live="polite"></p>
<form data-form="signin" class="card" data-testid="admin-signin" hidden>
<label>Admin key <input type="password" name="key" autocomplete="off" data-testid="admin-key" required></label>
<button type="submit" data-testid="admin-signin-submit">Sign in</button>
</form>
<section class="card" data-k="manage" hidden>
<table class="log keys"><thead><tr><th>Key</th><th>Team</th><th>Spend this period</th><th>Burn-down</th><th>Runs out</th><th>Brownout</th><th>Last minute</th><th></th></tr></thead>
<tbody data-k="rows" data-testid="keys-table"></tbody></table>
<form data-form="create" class="filters" data-testid="key-create">
<label>Name <input name="name" required maxlength="100" data-testid="key-name"></label>
<label>Team <input name="team" maxlength="100" data-testid="key-team"></label>
<label>Budget USD <input name="budgetUsd" type="number" min="0" step="any" data-testid="key-budget"></label>
<label>Period <select name="period" data-testid="key-period"><option>month</option><option>week</option><option>day</option></select></label>
<label>RPM <input name="rpm" type="number" min="1" step="1" data-testid="key-rpm"></label>
<label>TPM <input name="tpm" type="number" min="1" step="1" data-testid="key-tpm"></label>
<button type="submit" data-testid="key-create-submit">Make key</button>
</form>
<p data-k="secret" data-testid="new-secret" hidden></p>
</section></section>"#;

/// A request to the key API, the admin session's cookie riding along.
fn send(method: &str, path: &str, body: Option<String>) -> Result<Request, String> {
    let builder = match method {
        "POST" => Request::post(path),
        "DELETE" => Request::delete(path),
        _ => Request::get(path),
    }
    .header("accept", "application/json");
    match body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(b)
            .map_err(|e| e.to_string()),
        None => builder.build().map_err(|e| e.to_string()),
    }
}

/// The answer's body as `T`, or its error text.
async fn decode<T: serde::de::DeserializeOwned>(res: Response) -> Result<T, (u16, String)> {
    let code = res.status();
    let text = res.text().await.map_err(|e| (code, e.to_string()))?;
    if res.ok() {
        return serde_json::from_str(&text).map_err(|e| (code, format!("bad JSON ({e})")));
    }
    let error = serde_json::from_str::<shared::api::ErrorBody>(&text)
        .map(|b| b.error)
        .unwrap_or_else(|_| format!("HTTP {code}"));
    Err((code, error))
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The burn-down of a key with a budget: what is left over the period, as
/// spent so far (solid) and at this rate to the end (dashed).
fn burn_down(k: &KeyView, budget: f64) -> Element {
    let (w, h) = (160.0, 36.0);
    let svg = element(
        SVG,
        "svg",
        &[
            ("viewBox", "0 0 160 36"),
            ("class", "burn"),
            ("role", "img"),
            ("data-testid", "burn-down"),
        ],
        None,
    );
    let u = &k.usage;
    let (Some(start), Some(end)) = (time(&u.period_start), time(&u.period_end)) else {
        return svg;
    };
    let span = (end - start).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| ((t - start).num_milliseconds() as f64 / span * w).clamp(0.0, w);
    let y = |left: f64| h - (left / budget.max(1e-12)).clamp(0.0, 1.0) * h;
    let now = crate::time::now_utc();
    let left = (budget - u.spent_usd).max(0.0);
    let solid = format!("M0,{:.1} L{:.1},{:.1}", y(budget), x(now), y(left));
    let elapsed = (now - start).num_milliseconds().max(1) as f64;
    let rate = u.spent_usd / elapsed;
    let (tx, tleft) = match u.projected_exhaustion.as_deref().and_then(time) {
        Some(at) => (x(at), 0.0),
        None => (w, (budget - rate * span).max(0.0)),
    };
    let dashed = format!("M{:.1},{:.1} L{tx:.1},{:.1}", x(now), y(left), y(tleft));
    for (d, class) in [(solid, "spent"), (dashed, "projected")] {
        let _ = svg.append_child(&element(SVG, "path", &[("d", &d), ("class", class)], None));
    }
    let title = format!(
        "${left:.4} of ${budget} left; {}",
        match &u.projected_exhaustion {
            Some(t) => format!("runs out {t} at this rate"),
            None => "lasts the period at this rate".into(),
        }
    );
    let _ = svg.append_child(&element(SVG, "title", &[], Some(&title)));
    svg
}

fn cell(row: &Element, text: &str, testid: &str) -> Element {
    let td = element(None, "td", &[("data-testid", testid)], Some(text));
    let _ = row.append_child(&td);
    td
}

fn limit(used: u64, limit: Option<impl Into<u64>>) -> String {
    match limit {
        Some(l) => format!("{used} / {}", l.into()),
        None => used.to_string(),
    }
}

/// One key's row.
fn row(k: &KeyView) -> Element {
    let tr = element(
        None,
        "tr",
        &[("data-testid", "key-row"), ("data-key", &k.id)],
        None,
    );
    if k.revoked_at.is_some() {
        let _ = tr.set_attribute("class", "revoked");
    }
    cell(
        &tr,
        &format!("{} ({}, {})", k.name, k.id, k.prefix),
        "key-label",
    );
    cell(&tr, k.team.as_deref().unwrap_or("—"), "key-team");
    let u = &k.usage;
    let spend = match k.budget_usd {
        Some(b) => format!(
            "${:.4} of ${b} per {} ({:.0} %)",
            u.spent_usd,
            k.period.name(),
            u.spent_usd / b.max(1e-12) * 100.0
        ),
        None => format!("${:.4} (no budget)", u.spent_usd),
    };
    cell(&tr, &spend, "key-spend");
    let chart = cell(&tr, "", "key-burn");
    if let Some(b) = k.budget_usd {
        let _ = chart.append_child(&burn_down(k, b));
    }
    cell(
        &tr,
        u.projected_exhaustion.as_deref().unwrap_or("—"),
        "key-exhaustion",
    );
    cell(
        &tr,
        &if u.brownout > 0.0 {
            format!("{:.0} %", u.brownout * 100.0)
        } else {
            "—".into()
        },
        "key-brownout",
    );
    cell(
        &tr,
        &format!(
            "{} req, {} tok",
            limit(u.requests_last_minute, k.rpm),
            limit(u.tokens_last_minute, k.tpm)
        ),
        "key-rate",
    );
    let action = cell(&tr, "", "key-action");
    match &k.revoked_at {
        Some(at) => action.set_text_content(Some(&format!("revoked {at}"))),
        None => {
            let _ = action.append_child(&element(
                None,
                "button",
                &[
                    ("type", "button"),
                    ("data-act", "revoke"),
                    ("data-id", &k.id),
                    ("data-testid", "key-revoke"),
                ],
                Some("Revoke"),
            ));
        }
    }
    tr
}

fn show(root: &Element, key: &str, visible: bool) {
    if let Some(el) = find(root, key).or_else(|| {
        root.query_selector(&format!("[data-form={key}]"))
            .ok()
            .flatten()
    }) {
        let _ = el.toggle_attribute_with_force("hidden", !visible);
    }
}

fn note(root: &Element, text: &str) {
    if let Some(el) = find(root, "note") {
        el.set_text_content(Some(text));
    }
}

/// Reads the keys and draws them; asks to sign in on a 401.
fn load(root: Rc<Element>) {
    spawn_local(async move {
        let answer = match send("GET", KEYS_PATH, None) {
            Ok(req) => match req.send().await {
                Ok(res) => decode::<KeyList>(res).await,
                Err(e) => Err((0, e.to_string())),
            },
            Err(e) => Err((0, e)),
        };
        match answer {
            Ok(list) => {
                show(&root, "signin", false);
                show(&root, "manage", true);
                if let Some(rows) = find(&root, "rows") {
                    rows.set_inner_html("");
                    for k in &list.keys {
                        let _ = rows.append_child(&row(k));
                    }
                }
                let live = list.keys.iter().filter(|k| k.revoked_at.is_none()).count();
                note(
                    &root,
                    &format!(
                        "{live} keys in use, {} revoked; spend is this period's, every instance's",
                        list.keys.len() - live
                    ),
                );
            }
            Err((401, _)) => {
                show(&root, "manage", false);
                show(&root, "signin", true);
                note(
                    &root,
                    "Sign in with the admin key (--admin-key) to see and manage keys.",
                );
            }
            Err((404, _)) => {
                show(&root, "signin", false);
                note(
                    &root,
                    "This server has no --admin-key: it manages no virtual keys.",
                );
            }
            Err((_, e)) => note(&root, &format!("Keys cannot be read: {e}")),
        }
    });
}

fn input(form: &Element, name: &str) -> String {
    form.query_selector(&format!("[name={name}]"))
        .ok()
        .flatten()
        .and_then(|n| {
            n.dyn_ref::<HtmlInputElement>()
                .map(HtmlInputElement::value)
                .or_else(|| {
                    n.dyn_ref::<HtmlSelectElement>()
                        .map(HtmlSelectElement::value)
                })
        })
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn new_key(form: &Element) -> NewKey {
    let opt = |s: String| (!s.is_empty()).then_some(s);
    NewKey {
        name: input(form, "name"),
        team: opt(input(form, "team")),
        budget_usd: input(form, "budgetUsd").parse().ok(),
        period: Period::from_name(&input(form, "period")),
        rpm: input(form, "rpm").parse().ok(),
        tpm: input(form, "tpm").parse().ok(),
        ..NewKey::default()
    }
}

fn submit(root: Rc<Element>, form: Element) {
    let which = form.get_attribute("data-form").unwrap_or_default();
    spawn_local(async move {
        let (path, body) = if which == "signin" {
            let key = input(&form, "key");
            (SESSION_PATH, serde_json::json!({ "key": key }).to_string())
        } else {
            let new = new_key(&form);
            (KEYS_PATH, serde_json::to_string(&new).unwrap_or_default())
        };
        let res = match send("POST", path, Some(body)) {
            Ok(req) => req.send().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match (which.as_str(), res) {
            ("signin", Ok(r)) if r.ok() => load(root),
            ("signin", Ok(_)) => note(&root, "Not the admin key."),
            (_, Ok(r)) => match decode::<CreatedKey>(r).await {
                Ok(created) => {
                    if let Some(el) = find(&root, "secret") {
                        el.set_text_content(Some(&format!(
                            "Key {} made. Its secret, shown this once: {}",
                            created.key.id, created.secret
                        )));
                        let _ = el.toggle_attribute_with_force("hidden", false);
                    }
                    load(root);
                }
                Err((_, e)) => note(&root, &format!("Not made: {e}")),
            },
            (_, Err(e)) => note(&root, &format!("No answer: {e}")),
        }
    });
}

fn revoke(root: Rc<Element>, id: String) {
    spawn_local(async move {
        let res = match send("DELETE", &format!("{KEYS_PATH}/{id}"), None) {
            Ok(req) => req.send().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match res {
            Ok(r) if r.ok() => load(root),
            Ok(r) => note(&root, &format!("Not revoked: HTTP {}", r.status())),
            Err(e) => note(&root, &format!("Not revoked: {e}")),
        }
    });
}

fn start(root: Element) {
    root.set_inner_html(SKELETON);
    let root = Rc::new(root);
    load(Rc::clone(&root));
    let r = Rc::clone(&root);
    let on_submit = Closure::<dyn Fn(web_sys::Event)>::new(move |ev: web_sys::Event| {
        ev.prevent_default();
        if let Some(form) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()) {
            submit(Rc::clone(&r), form);
        }
    });
    let r = Rc::clone(&root);
    let on_click = Closure::<dyn Fn(web_sys::Event)>::new(move |ev: web_sys::Event| {
        let Some(target) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()) else {
            return;
        };
        if target.get_attribute("data-act").as_deref() == Some("revoke")
            && let Some(id) = target.get_attribute("data-id")
        {
            revoke(Rc::clone(&r), id);
        }
    });
    let _ = root.add_event_listener_with_callback("submit", on_submit.as_ref().unchecked_ref());
    let _ = root.add_event_listener_with_callback("click", on_click.as_ref().unchecked_ref());
    // The page lives as long as the document.
    on_submit.forget();
    on_click.forget();
    let r = Rc::clone(&root);
    gloo_timers::callback::Interval::new(REFRESH_MS, move || {
        let manage_shown = find(&r, "manage").is_some_and(|m| !m.has_attribute("hidden"));
        if manage_shown {
            load(Rc::clone(&r));
        }
    })
    .forget();
}

/// `/keys`: the page, built into the body as plain DOM.
pub fn mount() {
    start(super::shell("keys-page"));
}
