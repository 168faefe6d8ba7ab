//! A JSON body extractor whose every rejection is a JSON [`ApiError`].
//!
//! axum's own `Json` answers bad bodies in plain text; we say precisely which
//! field is wrong, in JSON. Only bodies declared `application/json` are read:
//! a browser sends other types (`text/plain`, forms) cross-site without a
//! CORS preflight, so accepting them would let any web page write here.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The most a request body may weigh.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most an ingestion request body, or a chat request, may weigh (a
/// full batch of decisions).
pub const MAX_BATCH_BODY_BYTES: usize = 4 << 20;

/// A request body decoded from JSON into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejected(&rejection, MAX_BODY_BYTES))?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Why a body could not be read, as a JSON error: over `limit` bytes, or
/// broken off.
pub fn body_rejected(
    rejection: &axum::extract::rejection::BytesRejection,
    limit: usize,
) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::MalformedJson(rejection.body_text())
    }
}

/// Accepts `application/json` with any parameters (`; charset=utf-8`), in
/// any letter case; anything else, or none, is a 415.
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(raw) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("none".into()));
    };
    let parsed = raw.to_str().ok().and_then(|v| v.parse::<mime::Mime>().ok());
    match parsed {
        Some(m)
            if m.type_() == mime::APPLICATION
                && m.subtype() == mime::JSON
                && m.suffix().is_none() =>
        {
            Ok(())
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "{:?}",
            String::from_utf8_lossy(raw.as_bytes())
                .chars()
                .take(100)
                .collect::<String>()
        ))),
    }
}

/// Decodes a JSON document: syntax problems are 400, shape problems are 422
/// and name the field (`max_tokens: invalid type ...`).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("the body is empty".into()));
    }
    // serde would also read a struct from a JSON array (`["hi"]`); the API
    // takes objects only. Syntax is checked first, so `[` alone stays a 400.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(ApiError::MalformedJson(err.to_string()));
        }
        return Err(ApiError::Invalid("body: must be a JSON object".into()));
    }
    decode_shape(bytes)
}

/// A body that is one JSON object, or an array of them (a batch): the
/// items, and whether it was an array. An item's error names it (`[3].score`).
pub fn decode_json_batch<T: DeserializeOwned>(bytes: &[u8]) -> Result<(Vec<T>, bool), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => decode_shape(bytes).map(|items| (items, true)),
        _ => decode_json(bytes).map(|one| (vec![one], false)),
    }
}

/// Decodes JSON text into `T`, naming the field of a shape error.
fn decode_shape<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let what = strip_position(&inner);
        // serde_json calls some type mismatches (a number where an enum's
        // string belongs) syntax errors; if the text parses as a JSON value
        // (valid UTF-8, numbers in range, real Unicode), it was the shape
        // that was wrong.
        let shape_error = match inner.classify() {
            serde_json::error::Category::Data => true,
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                serde_json::from_slice::<serde_json::Value>(bytes).is_ok()
            }
        };
        match shape_error {
            true => {
                if path == "." {
                    ApiError::Invalid(format!("body: {what}"))
                } else {
                    ApiError::Invalid(format!("{path}: {what}"))
                }
            }
            false => ApiError::MalformedJson(inner.to_string()),
        }
    })?;
    Ok(value)
}

/// serde_json's message without its "at line 1 column 12" suffix, which
/// means little once the field is named.
fn strip_position(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        n: Option<u64>,
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_naming_the_field() {
        let cases: [(&[u8], u16, &str); 8] = [
            (b"", 400, "empty"),
            (b"   ", 400, "empty"),
            (b"{", 400, "EOF"),
            (b"{\"name\": }", 400, "expected value"),
            (b"\xff\xfe", 400, "expected value"),
            (b"[]", 422, "body:"),
            (b"{\"name\": 3}", 422, "name:"),
            (b"{\"name\": \"x\", \"n\": -1}", 422, "n:"),
        ];
        for (body, status, needle) in cases {
            let err = decode_json::<Probe>(body).unwrap_err();
            assert_eq!(err.status().as_u16(), status, "{body:?}");
            assert!(err.to_string().contains(needle), "{body:?}: {err}");
        }
        let missing = decode_json::<Probe>(b"{}").unwrap_err();
        assert_eq!(missing.status().as_u16(), 422);
        assert!(
            missing.to_string().contains("missing field `name`"),
            "{missing}"
        );
    }

    #[test]
    fn only_json_content_types_are_read() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(v),
            );
            require_json_content_type(&h)
        };
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/ld+json",
            "json",
            "",
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
        let err = require_json_content_type(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for deep in [
            "[".repeat(100_000),
            format!("{{\"name\": \"x\", \"n\": {}", "[".repeat(100_000)),
            format!("{}{}", "{\"a\":".repeat(50_000), "1"),
        ] {
            let err = decode_json::<Probe>(deep.as_bytes()).unwrap_err();
            assert!(err.status().is_client_error(), "{err}");
        }
    }
}
