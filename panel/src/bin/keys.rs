//! The Keys page's own WASM, loaded only at `/keys`: the live page's
//! bundle stays as it was.

fn main() {
    console_error_panic_hook::set_once();
    panel::pages::keys::mount();
}
