//! Mounts the panel's [`panel::App`] on the page body, with a panic hook
//! that writes a panic's message to the console.

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(panel::App);
}
