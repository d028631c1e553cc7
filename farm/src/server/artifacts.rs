//! `/jobs/{id}/artifacts/{sha256}`: a job's host uploads its results by content. An upload
//! resumes where it stopped (`HEAD` says how much the server has, `PATCH` appends at that
//! offset), and a file enters the store only when its SHA-256 is the one it was sent under.
//! The server keeps one copy of each content, whichever builds made it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::JobAuth;
use super::error::{ApiError, ApiResult};
use super::jobs::artifacts_ok;
use super::AppState;
use crate::api_types::{UPLOAD_LENGTH as LENGTH, UPLOAD_OFFSET as OFFSET};
use crate::secret::hex;

/// Where content `sha256` is kept (artifacts and inputs alike: one copy of each content),
/// and where its upload called `upload` grows until it is complete.
pub fn content_paths(
    state: &AppState,
    upload: &str,
    sha256: &str,
) -> ApiResult<(std::path::PathBuf, std::path::PathBuf)> {
    if !artifacts_ok(sha256) {
        return Err(ApiError::BadRequest(format!(
            "`{sha256}` is not a SHA-256 in lowercase hex"
        )));
    }
    Ok((
        state.data_dir.join("artifacts").join(sha256),
        state.data_dir.join("uploads").join(upload),
    ))
}

fn paths(
    state: &AppState,
    job: &str,
    sha256: &str,
) -> ApiResult<(std::path::PathBuf, std::path::PathBuf)> {
    content_paths(state, &format!("{job}-{sha256}"), sha256)
}

/// How much of an artifact the server has: `Upload-Offset` is the whole length once it is
/// stored.
#[utoipa::path(head, path = "/jobs/{id}/artifacts/{sha256}", security(("bearer" = [])),
    params(("id" = String, Path), ("sha256" = String, Path)),
    responses((status = 200, description = "Stored: nothing to upload"),
        (status = 204, description = "Upload from `Upload-Offset`")))]
pub async fn offset(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path((id, sha256)): Path<(String, String)>,
) -> ApiResult<(StatusCode, HeaderMap)> {
    auth.for_job(&id)?;
    let (stored, partial) = paths(&state, &id, &sha256)?;
    Ok(offset_of(&stored, &partial).await)
}

/// How much of a content upload to `stored` the server has (in `partial` while incomplete).
pub async fn offset_of(
    stored: &std::path::Path,
    partial: &std::path::Path,
) -> (StatusCode, HeaderMap) {
    let mut headers = HeaderMap::new();
    if let Ok(meta) = tokio::fs::metadata(stored).await {
        headers.insert(OFFSET, HeaderValue::from(meta.len()));
        return (StatusCode::OK, headers);
    }
    let have = tokio::fs::metadata(partial).await.map_or(0, |m| m.len());
    headers.insert(OFFSET, HeaderValue::from(have));
    (StatusCode::NO_CONTENT, headers)
}

/// Appends to an artifact's upload at `Upload-Offset` (which must be what `HEAD` said), of a
/// file `Upload-Length` long; the last part stores it, once its SHA-256 is checked.
#[utoipa::path(patch, path = "/jobs/{id}/artifacts/{sha256}", security(("bearer" = [])),
    params(("id" = String, Path), ("sha256" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "Appended; `Upload-Offset` is the new offset"),
        (status = 201, description = "Complete and stored"),
        (status = 409, description = "Wrong offset"),
        (status = 400, description = "The content's SHA-256 differs")))]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path((id, sha256)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, HeaderMap)> {
    auth.for_job(&id)?;
    let (stored, partial) = paths(&state, &id, &sha256)?;
    receive(&stored, &partial, &sha256, &headers, body).await
}

/// Appends `body` to the upload of content `sha256` in `partial`; the last part moves it to
/// `stored` once its SHA-256 is checked (a wrong one drops the whole upload).
pub async fn receive(
    stored: &std::path::Path,
    partial: &std::path::Path,
    sha256: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, HeaderMap)> {
    let number = |name: &str| -> ApiResult<u64> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::BadRequest(format!("the {name} header is missing")))
    };
    let (offset, length) = (number(OFFSET)?, number(LENGTH)?);
    let mut answer = HeaderMap::new();
    if tokio::fs::metadata(stored).await.is_ok() {
        answer.insert(OFFSET, HeaderValue::from(length));
        return Ok((StatusCode::CREATED, answer));
    }
    let have = tokio::fs::metadata(partial).await.map_or(0, |m| m.len());
    if offset != have {
        answer.insert(OFFSET, HeaderValue::from(have));
        return Err(ApiError::Conflict(format!(
            "the upload of {sha256} is at {have} bytes, not {offset}; resume from there"
        )));
    }
    if offset + body.len() as u64 > length {
        return Err(ApiError::BadRequest(format!(
            "{} more bytes at {offset} go past the upload's length {length}",
            body.len()
        )));
    }
    let io = |e| ApiError::internal("keep an upload", e);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .await
        .map_err(io)?;
    file.write_all(&body).await.map_err(io)?;
    file.flush().await.map_err(io)?;
    let now = offset + body.len() as u64;
    answer.insert(OFFSET, HeaderValue::from(now));
    if now < length {
        return Ok((StatusCode::NO_CONTENT, answer));
    }
    file.sync_all().await.map_err(io)?;
    drop(file);
    let check = partial.to_owned();
    let got = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut hasher = Sha256::new();
        std::io::copy(&mut std::fs::File::open(check)?, &mut hasher)?;
        Ok(hex(&hasher.finalize()))
    })
    .await
    .map_err(|e| ApiError::internal("check an upload", e))?
    .map_err(io)?;
    if got != sha256 {
        let _ = tokio::fs::remove_file(partial).await;
        return Err(ApiError::BadRequest(format!(
            "the uploaded content has SHA-256 {got}, not {sha256}; it was dropped"
        )));
    }
    tokio::fs::rename(partial, stored).await.map_err(io)?;
    Ok((StatusCode::CREATED, answer))
}
