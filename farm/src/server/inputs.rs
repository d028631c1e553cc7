//! `/inputs`: the stages, kernel sources and repository snapshots the farm hands to its hosts
//! by content ([`crate::inputs`]). An admin uploads a content (resumable, as artifacts are) and
//! names it; a job's host fetches the contents its job carries with the job's credential.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::artifacts::{offset_of, receive};
use super::auth::{JobAuth, Person};
use super::builds::file_stream;
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::api_types::{AddInput, Input, InputKind, InputRecord};
use crate::role::Role;

fn content_paths(
    state: &AppState,
    sha256: &str,
) -> ApiResult<(std::path::PathBuf, std::path::PathBuf)> {
    super::artifacts::content_paths(state, &format!("input-{sha256}"), sha256)
}

/// How much of an input's content the server has: `Upload-Offset` is the whole length once
/// it is stored.
#[utoipa::path(head, path = "/inputs/content/{sha256}", security(("bearer" = [])),
    params(("sha256" = String, Path)),
    responses((status = 200, description = "Stored: nothing to upload"),
        (status = 204, description = "Upload from `Upload-Offset`")))]
pub async fn offset(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(sha256): Path<String>,
) -> ApiResult<(StatusCode, HeaderMap)> {
    person.require(Role::Admin)?;
    let (stored, partial) = content_paths(&state, &sha256)?;
    Ok(offset_of(&stored, &partial).await)
}

/// Appends to the upload of an input's content, as for artifacts.
#[utoipa::path(patch, path = "/inputs/content/{sha256}", security(("bearer" = [])),
    params(("sha256" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "Appended; `Upload-Offset` is the new offset"),
        (status = 201, description = "Complete and stored"),
        (status = 409, description = "Wrong offset"),
        (status = 400, description = "The content's SHA-256 differs")))]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, HeaderMap)> {
    person.require(Role::Admin)?;
    let (stored, partial) = content_paths(&state, &sha256)?;
    receive(&stored, &partial, &sha256, &headers, body).await
}

/// Names an uploaded content as an input: jobs submitted from now on whose system uses
/// `kind` `name` carry it.
#[utoipa::path(put, path = "/inputs/{kind}/{name}", request_body = AddInput,
    params(("kind" = InputKind, Path), ("name" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Input),
        (status = 400, body = crate::api_types::ApiErrorBody),
        (status = 403, body = crate::api_types::ApiErrorBody)))]
pub async fn add(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((kind, name)): Path<(String, String)>,
    Json(request): Json<AddInput>,
) -> ApiResult<Json<Input>> {
    person.require(Role::Admin)?;
    let kind: InputKind = kind.parse().map_err(ApiError::BadRequest)?;
    crate::check_name(&name).map_err(ApiError::BadRequest)?;
    let (stored, _) = content_paths(&state, &request.sha256)?;
    let meta = tokio::fs::metadata(&stored).await.map_err(|_| {
        ApiError::BadRequest(format!(
            "the server has no content {}: upload it first (`autogentoo farm input add` does both)",
            request.sha256
        ))
    })?;
    let head = tokio::task::spawn_blocking(move || crate::inputs::head_of(&stored))
        .await
        .map_err(|e| ApiError::internal("read an input", e))?
        .map_err(|e| ApiError::internal("read an input", e))?;
    crate::inputs::check_content(kind, &head)
        .map_err(|why| ApiError::BadRequest(format!("{kind} '{name}': {why}")))?;
    let input = Input {
        kind,
        name,
        sha256: request.sha256,
        size: meta.len(),
    };
    state.store.put_input(&input, &person.name).await?;
    state
        .store
        .audit(
            &person.name,
            "input add",
            &format!("{kind}/{}", input.name),
            &input.sha256,
        )
        .await?;
    Ok(Json(input))
}

/// The inputs the farm hands out, newest first.
#[utoipa::path(get, path = "/inputs", security(("bearer" = [])),
    responses((status = 200, body = Vec<InputRecord>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> ApiResult<Json<Vec<InputRecord>>> {
    person.require(Role::Viewer)?;
    Ok(Json(state.store.inputs().await?))
}

/// The content of one of a job's inputs, for its host.
#[utoipa::path(get, path = "/jobs/{id}/inputs/{sha256}", security(("bearer" = [])),
    params(("id" = String, Path), ("sha256" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = crate::api_types::ApiErrorBody)))]
pub async fn fetch(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path((id, sha256)): Path<(String, String)>,
) -> ApiResult<Body> {
    let job = auth.for_job(&id)?;
    if !job.inputs.iter().any(|i| i.sha256 == sha256) {
        return Err(ApiError::Forbidden(format!(
            "{sha256} is not an input of job {id}"
        )));
    }
    let (stored, _) = content_paths(&state, &sha256)?;
    let file = tokio::fs::File::open(&stored)
        .await
        .map_err(|e| ApiError::internal("open an input", e))?;
    Ok(Body::from_stream(file_stream(file)))
}
