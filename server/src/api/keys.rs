//! `/api/keys`: the admin makes, lists, changes and revokes virtual keys
//! (behind `--admin-key`; see [`crate::keys`]).

use axum::extract::Path;
use shared::keys::{CreatedKey, KeyList, KeyPatch, KeyView, NewKey};

use super::*;
use crate::keys::{KeyError, Keys};

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(m) => ApiError::Invalid(m),
            KeyError::NotFound(id) => ApiError::Missing(format!("no key {id}")),
            KeyError::Store(m) => ApiError::StoreFailing(m),
        }
    }
}

/// Runs a key change off the async threads (it commits to the store).
async fn change<T: Send + 'static>(
    keys: &std::sync::Arc<Keys>,
    f: impl FnOnce(&Keys) -> Result<T, KeyError> + Send + 'static,
) -> Result<T, ApiError> {
    let keys = std::sync::Arc::clone(keys);
    tokio::task::spawn_blocking(move || f(&keys))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Makes a virtual key. Its secret is in this answer only: the store keeps
/// a SHA-256 of it.
#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    request_body(content = NewKey, example = json!({"name": "search team", "team": "search", "budgetUsd": 25.0, "period": "month", "rpm": 600, "tpm": 200000})),
    responses(
        (status = 201, description = "The key and its secret (`osk-` and 32 random bytes, base64url), shown once", body = CreatedKey),
        (status = 401, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No `--admin-key` is set", body = ErrorBody),
        (status = 422, description = "A field is wrong; nothing made", body = ErrorBody),
        (status = 503, description = "The store cannot be written; nothing made", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewKey>,
) -> Result<Response, ApiError> {
    let created = change(&state.keys, move |k| k.create(new)).await?;
    tracing::info!(key = %created.key.id, name = %created.key.name, "virtual key made");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Every virtual key (never a secret), with its spend this period.
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "keys",
    responses(
        (status = 200, description = "Every key, newest first", body = KeyList),
        (status = 401, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No `--admin-key` is set", body = ErrorBody),
    )
)]
pub async fn list_keys(State(state): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: state.keys.list(),
    })
}

/// One virtual key.
#[utoipa::path(
    get,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 401, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such key, or no `--admin-key`", body = ErrorBody),
    )
)]
pub async fn get_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    state
        .keys
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::Missing(format!("no key {id}")))
}

/// Changes a virtual key's settings: a field present is set (`null` clears
/// it), a field absent stays. Its spend this period stays.
#[utoipa::path(
    patch,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body(content = KeyPatch, example = json!({"budgetUsd": 50.0, "rpm": null})),
    responses(
        (status = 200, description = "The key as it is now", body = KeyView),
        (status = 401, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such key, or no `--admin-key`", body = ErrorBody),
        (status = 422, description = "A field is wrong; nothing changed", body = ErrorBody),
    )
)]
pub async fn patch_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<KeyPatch>,
) -> Result<Json<KeyView>, ApiError> {
    let view = change(&state.keys, move |k| k.patch(&id, patch)).await?;
    tracing::info!(key = %view.id, "virtual key changed");
    Ok(Json(view))
}

/// Revokes a virtual key: refused at once (on another instance of the
/// same data dir within half a second).
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key, revoked", body = KeyView),
        (status = 401, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such key, or no `--admin-key`", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let view = change(&state.keys, move |k| k.revoke(&id)).await?;
    tracing::info!(key = %view.id, "virtual key revoked");
    Ok(Json(view))
}
