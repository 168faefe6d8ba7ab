//! Wall-clock helpers over the browser's `Date` (chrono's clock is not wired
//! to JS in this build, and `Date` keeps the WASM small).

use chrono::{DateTime, Utc};
use wasm_bindgen::JsValue;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Now, as a chrono UTC time.
pub fn now_utc() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(now_ms() as i64).unwrap_or_default()
}

/// `HH:MM:SS` in the user's local time.
pub fn clock(ms: f64) -> String {
    js_sys::Date::new(&JsValue::from_f64(ms))
        .to_locale_time_string("en-GB")
        .into()
}

/// `HH:MM:SS` local time of a UTC timestamp.
pub fn clock_of(t: &DateTime<Utc>) -> String {
    clock(t.timestamp_millis() as f64)
}
