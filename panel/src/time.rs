//! Wall-clock and duration formatting over the browser's `Date` and `Intl`
//! (chrono's clock is not wired to JS in this build, and `Date` keeps the
//! WASM small). Times follow the browser's locale and time zone.

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

/// The browser's language (e.g. `en-US`), for every date shown.
fn locale() -> String {
    web_sys::window()
        .and_then(|w| w.navigator().language())
        .unwrap_or_else(|| "en-GB".into())
}

fn options(pairs: &[(&str, &str)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    o.into()
}

/// The time of day, to the second, in the browser's locale and zone.
pub fn clock(ms: f64) -> String {
    time_of_day(
        ms,
        &[
            ("hour", "2-digit"),
            ("minute", "2-digit"),
            ("second", "2-digit"),
        ],
    )
}

/// Hours and minutes, in the browser's locale and zone.
pub fn hours_minutes(ms: f64) -> String {
    time_of_day(ms, &[("hour", "2-digit"), ("minute", "2-digit")])
}

/// The time of day with the given `Intl` fields, in the browser's locale.
fn time_of_day(ms: f64, fields: &[(&str, &str)]) -> String {
    js_sys::Date::new(&JsValue::from_f64(ms))
        .to_locale_time_string_with_options(&locale(), &options(fields))
        .into()
}

/// The date alone, in the browser's locale.
pub fn date(ms: f64) -> String {
    js_sys::Date::new(&JsValue::from_f64(ms))
        .to_locale_date_string(&locale(), &options(&[("dateStyle", "medium")]))
        .into()
}

/// Date, time to the second and UTC offset (for a hover title).
pub fn full(ms: f64) -> String {
    js_sys::Date::new(&JsValue::from_f64(ms))
        .to_locale_string(
            &locale(),
            &options(&[("dateStyle", "full"), ("timeStyle", "long")]),
        )
        .into()
}

/// Milliseconds of a UTC timestamp.
pub fn ms_of(t: &DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64
}

/// A decision time as an operator reads it: microseconds between 0 and
/// 1 ms (`12 µs`), else milliseconds with two decimals (`3.25 ms`, and
/// `0.00 ms` for none at all).
pub fn duration(ms: f64) -> String {
    if ms > 0.0 && ms < 1.0 {
        format!("{:.0} µs", ms * 1_000.0)
    } else {
        format!("{ms:.2} ms")
    }
}

/// An upstream latency as an operator reads it: `850 µs`, `12.5 ms`,
/// `340 ms`, `2.35 s`.
pub fn latency(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1_000.0)
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1_000.0)
    }
}

/// A count as an operator reads it at a glance: `950`, `12.3k`, `4.56M`.
pub fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}
