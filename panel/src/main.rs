//! Mounts the panel's [`panel::App`] on the page body; nothing else.

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(panel::App);
}
