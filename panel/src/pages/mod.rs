//! The panel's pages.

pub mod history;
pub mod home;
pub mod keys;

/// The frame of a page that is a bundle of its own (History, Keys): the
/// site header with its link back to the live page, and an empty `main`
/// (marked `data-testid=testid`) appended to the body, returned for the
/// page to build into.
pub(crate) fn shell(testid: &str) -> web_sys::Element {
    use crate::dom::element;
    let body = leptos::prelude::document()
        .body()
        .expect("a page has a body");
    let header = element(None, "header", &[("class", "site")], None);
    for (tag, attrs, text) in [
        (
            "span",
            &[("class", "logo"), ("aria-hidden", "true")][..],
            "◆",
        ),
        ("span", &[("class", "site-name")], "Orchestrator Status"),
        (
            "a",
            &[
                ("class", "nav"),
                ("href", "/"),
                ("data-testid", "live-link"),
            ],
            "← Live",
        ),
    ] {
        let _ = header.append_child(&element(None, tag, attrs, Some(text)));
    }
    let main = element(None, "main", &[("data-testid", testid)], None);
    let _ = body.append_child(&header);
    let _ = body.append_child(&main);
    main
}
