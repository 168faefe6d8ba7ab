//! Serves the panel Trunk built into `dist/`, embedded in the binary by
//! `build.rs` with gzip and brotli forms made at build time. Until the panel
//! is built, a plain page says how to build it.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// One embedded file.
pub struct Asset {
    /// URL path, e.g. `/index.html`.
    pub path: &'static str,
    /// The bytes as built.
    pub raw: &'static [u8],
    /// gzip, best level.
    pub gzip: &'static [u8],
    /// brotli, quality 11.
    pub brotli: &'static [u8],
    /// Strong ETag of `raw`; the compressed forms have their own.
    pub etag: &'static str,
    /// Strong ETag of `gzip`.
    pub etag_gzip: &'static str,
    /// Strong ETag of `brotli`.
    pub etag_brotli: &'static str,
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Hashes of the pages' inline scripts (Trunk's loaders), for the CSP.
const INLINE_SCRIPT_HASHES: &str = include!(concat!(env!("OUT_DIR"), "/inline_script_hashes.rs"));

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Orchestrator Status</title></head><body><h1>Orchestrator Status</h1>\
<p>The panel is not built into this binary. Build it with <code>scripts/run.sh</code> \
(or <code>trunk build --release --offline</code>, then rebuild the server). \
The API is live: <a href=\"/api/orchestrator/status\">/api/orchestrator/status</a>.</p></body></html>";

/// Whether this binary carries a built panel.
pub fn is_built() -> bool {
    find("/index.html").is_some()
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The Content-Security-Policy of the panel's pages: only our own scripts
/// (Trunk's inline loader by hash), WASM compilation, our own API.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {INLINE_SCRIPT_HASHES}; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
         base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The response for a GET of `path` outside `/api`: the file if embedded;
/// a 404 for a missing file (a name with an extension, such as an old
/// `/panel-<hash>.js` after a redeploy); else index.html (the panel routes
/// on the client).
pub fn serve(path: &str, headers: &HeaderMap) -> Response {
    let asset = match path {
        "/" => find("/index.html"),
        _ => match find(path) {
            Some(asset) => Some(asset),
            None if names_a_file(path) => {
                return ApiError::NotFound(path.to_owned()).into_response();
            }
            // The History and Keys pages are bundles of their own.
            None if path == "/history" || path.starts_with("/history/") => {
                find("/history/index.html")
            }
            None if path == "/keys" || path.starts_with("/keys/") => find("/keys/index.html"),
            None => find("/index.html"),
        },
    };
    let Some(asset) = asset else {
        return (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            NOT_BUILT,
        )
            .into_response();
    };
    let is_page = asset.path.ends_with(".html");
    let cache = if is_page || !is_hashed(asset.path) {
        HeaderValue::from_static("no-cache")
    } else {
        HeaderValue::from_static("public, max-age=31536000, immutable")
    };
    // Each encoding is its own representation with its own ETag, so a cache
    // never answers a gzip request with brotli bytes.
    let (body, encoding) = pick_encoding(asset, headers);
    let etag = match encoding {
        None => asset.etag,
        Some("gzip") => asset.etag_gzip,
        Some(_) => asset.etag_brotli,
    };
    let matches = etag
        .parse::<headers::ETag>()
        .is_ok_and(|tag| crate::api::if_none_match(headers, &tag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(asset.path)),
            )],
            body,
        )
            .into_response();
        if let Some(enc) = encoding {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        r
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, cache);
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    if is_page {
        if let Ok(csp) = HeaderValue::from_str(&content_security_policy()) {
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// Whether the path's last segment looks like a file name (`x.js`), not a
/// route of the panel (`/history`).
fn names_a_file(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty())
}

/// Trunk names built files `name-<hash>.ext`, the hash a 64-bit number in
/// hex without leading zeros (so usually 16 digits, sometimes fewer); those
/// never change content.
fn is_hashed(path: &str) -> bool {
    let stem = path.rsplit('/').next().unwrap_or(path);
    let stem = stem.split('.').next().unwrap_or(stem);
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(_, h)| {
        (12..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The smallest form the client accepts: brotli, gzip, or as built.
fn pick_encoding(asset: &Asset, headers: &HeaderMap) -> (&'static [u8], Option<&'static str>) {
    let accepted = |name: &str| {
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';').map(str::trim);
                let token = parts.next().unwrap_or("");
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                (token.eq_ignore_ascii_case(name) || token == "*") && !refused
            })
    };
    let mut best: (&'static [u8], Option<&'static str>) = (asset.raw, None);
    if accepted("br") && asset.brotli.len() < best.0.len() {
        best = (asset.brotli, Some("br"));
    }
    if accepted("gzip") && asset.gzip.len() < best.0.len() {
        best = (asset.gzip, Some("gzip"));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names() {
        assert!(is_hashed("/panel-3508bdff72988661.js"));
        assert!(is_hashed("/panel-3508bdff72988661_bg.wasm"));
        assert!(is_hashed("/style-d7b1a7878170134a.css"));
        // Leading zeros of the hash are not written.
        assert!(is_hashed("/panel-27612b0b21d767a.js"));
        assert!(is_hashed("/style-ad943ae3c500794.css"));
        assert!(!is_hashed("/panel-facade.js"));
        assert!(!is_hashed("/index.html"));
        assert!(!is_hashed("/favicon.ico"));
        assert!(!is_hashed("/panel-xyz.js"));
    }

    #[test]
    fn file_names_and_routes() {
        assert!(names_a_file("/panel-3508bdff72988661.js"));
        assert!(names_a_file("/a/b/favicon.ico"));
        assert!(!names_a_file("/history"));
        assert!(!names_a_file("/"));
        assert!(!names_a_file("/.well-known"));
        assert!(!names_a_file("/v1.2/"));
    }

    #[test]
    fn mime_types() {
        assert_eq!(content_type("/a_bg.wasm"), "application/wasm");
        assert!(content_type("/a.js").starts_with("text/javascript"));
        assert!(content_type("/index.html").starts_with("text/html"));
        assert!(content_type("/s.css").starts_with("text/css"));
    }

    #[test]
    fn encoding_negotiation() {
        let asset = Asset {
            path: "/x.js",
            raw: b"0123456789",
            gzip: b"01234",
            brotli: b"012",
            etag: "\"1\"",
            etag_gzip: "\"1-gzip\"",
            etag_brotli: "\"1-br\"",
        };
        let mut h = HeaderMap::new();
        assert_eq!(pick_encoding(&asset, &h).1, None);
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert_eq!(pick_encoding(&asset, &h).1, Some("br"));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=1.0, br;q=0"),
        );
        assert_eq!(pick_encoding(&asset, &h).1, Some("gzip"));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert_eq!(pick_encoding(&asset, &h).1, None);
    }
}
