//! The History page's own WASM, loaded only at `/history`: the live page's
//! bundle stays as it was, and this one carries no reactive framework.

fn main() {
    console_error_panic_hook::set_once();
    panel::pages::history::mount();
}
