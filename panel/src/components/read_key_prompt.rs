//! The read-key prompt: shown when the server wants a key for reads
//! (`--read-key`); the key opens a session, never kept by the page.

use leptos::prelude::*;

/// Asks for a read key once; `unlock` gets what was typed.
#[component]
pub fn ReadKeyPrompt(
    /// Whether the server asked for a key.
    #[prop(into)]
    needs_key: Signal<bool>,
    /// Why the last key was refused, if it was.
    #[prop(into)]
    error: Signal<Option<String>>,
    /// Called with the key typed.
    unlock: Callback<String>,
) -> impl IntoView {
    let key = RwSignal::new(String::new());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        unlock.run(key.get_untracked());
    };
    view! {
        <Show when=move || needs_key.get()>
            <form class="card read-key" data-testid="read-key-form" on:submit=submit>
                <h2>"Read key needed"</h2>
                <p class="muted">
                    "This server shows its decisions to holders of a read key ("
                    <code>"--read-key"</code>
                    "). Enter one to open a session in this browser."
                </p>
                <input
                    type="password"
                    autocomplete="current-password"
                    aria-label="read key"
                    data-testid="read-key-input"
                    prop:value=move || key.get()
                    on:input=move |ev| key.set(event_target_value(&ev))
                />
                <button type="submit" data-testid="read-key-submit">"Open"</button>
                <Show when=move || error.with(Option::is_some)>
                    <p class="error" role="alert" data-testid="read-key-error">
                        {move || error.get().unwrap_or_default()}
                    </p>
                </Show>
            </form>
        </Show>
    }
}
