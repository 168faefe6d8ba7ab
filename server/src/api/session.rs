//! `POST` and `DELETE /api/session`: a read or API key turned into a
//! same-site cookie, and ended.

use super::*;

/// `POST /api/session` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// A `--read-key` (or an `--api-key`).
    #[schema(example = "a-read-key")]
    pub key: String,
}

/// Opens a session for a panel: a read key in (the JSON body, or as
/// `Authorization: Bearer KEY` with no body), an `HttpOnly`,
/// `SameSite=Strict` cookie out, good for reads (status, stream, history,
/// decisions) for 12 hours or until the server restarts.
#[utoipa::path(
    post,
    path = "/api/session",
    tag = "status",
    request_body(content = SessionRequest, description = "The key; or send it as `Authorization: Bearer KEY` with no body"),
    responses(
        (status = 204, description = "A session: its cookie is in `Set-Cookie`",
         headers(("Set-Cookie" = String, description = "`orch_session=...; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200`"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Not a read key or API key", body = ErrorBody),
        (status = 403, description = "Another site's page (`Sec-Fetch-Site: cross-site`) may not open a session", body = ErrorBody),
        (status = 404, description = "No `--read-key` is set: reads are open, no session is needed", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "The body is not `{\"key\": string}`", body = ErrorBody),
    )
)]
pub async fn open_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.readers.required() {
        return Err(ApiError::NotFound(
            "no session is needed: this server has no --read-key".into(),
        ));
    }
    open(&state.readers, &headers, body)
}

/// A session of `readers` for a client that shows one of their keys (as
/// `Authorization: Bearer KEY` with no body, or `{"key": ...}`).
fn open(
    readers: &crate::readers::Readers,
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|r| crate::extract::body_rejected(&r, crate::extract::MAX_BODY_BYTES))?;
    // The key as a bearer token (a script's way) needs no body; else the
    // JSON body `{"key": ...}` (the panel's).
    let key = match crate::readers::bearer(headers) {
        Some(key) if body.iter().all(u8::is_ascii_whitespace) => key.to_owned(),
        _ => {
            crate::extract::require_json_content_type(headers)?;
            crate::extract::decode_json::<SessionRequest>(&body)?.key
        }
    };
    if !readers.is_key(&key) {
        return Err(ApiError::Unauthorized);
    }
    let token = readers
        .open_session()
        .map_err(|e| ApiError::Internal(format!("no random bytes for a session: {e}")))?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, readers.set_cookie(Some(&token)))],
    )
        .into_response())
}

/// Ends the request's session (signs the panel out).
#[utoipa::path(
    delete,
    path = "/api/session",
    tag = "status",
    responses((status = 204, description = "The session, if any, is over; its cookie is cleared"))
)]
pub async fn close_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    close(&state.readers, &headers)
}

fn close(readers: &crate::readers::Readers, headers: &HeaderMap) -> Response {
    readers.close_session(headers);
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, readers.set_cookie(None))],
    )
        .into_response()
}

/// Opens an admin session for the Keys page: the `--admin-key` in, an
/// `HttpOnly`, `SameSite=Strict` cookie (`orch_admin`) out, good for
/// `/api/keys` for 12 hours or until the server restarts.
#[utoipa::path(
    post,
    path = "/api/admin/session",
    tag = "keys",
    request_body(content = SessionRequest, description = "The admin key; or send it as `Authorization: Bearer KEY` with no body"),
    responses(
        (status = 204, description = "A session: its cookie is in `Set-Cookie`",
         headers(("Set-Cookie" = String, description = "`orch_admin=...; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200`"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Not the admin key", body = ErrorBody),
        (status = 403, description = "Another site's page may not open a session", body = ErrorBody),
        (status = 404, description = "No `--admin-key` is set", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "The body is not `{\"key\": string}`", body = ErrorBody),
    )
)]
pub async fn open_admin_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if state.options.admin_key.is_none() {
        return Err(ApiError::NotFound(
            "no admin session: this server has no --admin-key".into(),
        ));
    }
    open(&state.admins, &headers, body)
}

/// Ends the request's admin session.
#[utoipa::path(
    delete,
    path = "/api/admin/session",
    tag = "keys",
    responses((status = 204, description = "The admin session, if any, is over; its cookie is cleared"))
)]
pub async fn close_admin_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    close(&state.admins, &headers)
}
