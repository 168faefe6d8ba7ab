//! The Orchestrator Status panel: a Leptos CSR app (WASM) that shows, live,
//! how the router sends queries to its tiers. It polls the server's status
//! endpoint, degrades to clearly labelled mock data from `shared` when the API
//! is unreachable, and lets a user send queries of their own.

pub mod api;
pub mod components;
pub mod dom;
pub mod hooks;
pub mod pages;
pub mod time;

use leptos::prelude::*;

/// The application: one page, the HomePage.
#[component]
pub fn App() -> impl IntoView {
    view! { <pages::home::HomePage/> }
}
