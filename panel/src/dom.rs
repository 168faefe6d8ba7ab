//! Writing into DOM nodes the panel built itself, by key, only when the
//! value changed: for charts whose shape is fixed and whose numbers move
//! (the histogram, the what-if table), where one small patch loop is far
//! lighter in the WASM than a reactive binding per attribute.

use wasm_bindgen::JsCast;
use web_sys::{Element, HtmlInputElement};

/// What to write into the node whose `data-k` is the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Put {
    /// Its text.
    Text(String),
    /// One attribute.
    Attr(&'static str, String),
    /// An input's value.
    Value(String),
}

/// Writes each `(key, put)` under `root`, touching only nodes whose value
/// differs: the browser redraws what changed and nothing else.
pub fn patch(root: &Element, puts: Vec<(String, Put)>) {
    for (key, put) in puts {
        let Some(el) = find(root, &key) else {
            continue;
        };
        match put {
            Put::Text(t) => {
                if el.text_content().as_deref() != Some(t.as_str()) {
                    el.set_text_content(Some(&t));
                }
            }
            Put::Attr(name, v) => {
                if el.get_attribute(name).as_deref() != Some(v.as_str()) {
                    let _ = el.set_attribute(name, &v);
                }
            }
            Put::Value(v) => {
                if let Some(input) = el.dyn_ref::<HtmlInputElement>()
                    && input.value() != v
                {
                    input.set_value(&v);
                }
            }
        }
    }
}

/// The node under `root` whose `data-k` is `key`.
pub fn find(root: &Element, key: &str) -> Option<Element> {
    root.query_selector(&format!("[data-k=\"{key}\"]"))
        .ok()
        .flatten()
}

/// A new element in `ns` (None for HTML) with these attributes and, when
/// given, this text, set as text (never parsed as markup).
pub fn element(ns: Option<&str>, tag: &str, attrs: &[(&str, &str)], text: Option<&str>) -> Element {
    let doc = leptos::prelude::document();
    let el = match ns {
        Some(ns) => doc.create_element_ns(Some(ns), tag),
        None => doc.create_element(tag),
    }
    .expect("the tag is a valid name");
    for (name, value) in attrs {
        let _ = el.set_attribute(name, value);
    }
    if text.is_some() {
        el.set_text_content(text);
    }
    el
}

/// The SVG namespace.
pub const SVG: Option<&str> = Some("http://www.w3.org/2000/svg");
