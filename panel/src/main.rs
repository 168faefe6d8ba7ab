//! Mounts the panel's [`panel::App`] on the page body; nothing else.

fn main() {
    // No panic hook on the live page: even a minimal one costs about 1 KiB
    // of the 200 KiB budget. A panic still stops the page, shown in the
    // console as "unreachable" with its stack; the History page, which has
    // room, keeps console_error_panic_hook's full message.
    leptos::mount::mount_to_body(panel::App);
}
