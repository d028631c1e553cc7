//! `/builds`: the build database, as `autogentoo builds list|show|log` show it locally, with
//! the events of a running build as a stream and the results' files for download.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Person;
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::api_types::{KeepRequest, PublishRequest};
use crate::role::Role;

fn db_error(error: autogentoo_db::DbError) -> ApiError {
    match error {
        autogentoo_db::DbError::NoBuild { .. } => ApiError::NotFound(error.to_string()),
        other => ApiError::internal("read the build database", other),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only the builds of this system.
    system: Option<String>,
    /// At most this many (50 when not given).
    limit: Option<i64>,
}

/// The recorded builds, newest first.
#[utoipa::path(get, path = "/builds", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, description = "The builds, as `builds list --json`", body = Object)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    person.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(50).clamp(1, 10_000);
    let builds = state
        .db(move |db| db.list(query.system.as_deref(), limit))
        .await?
        .map_err(db_error)?;
    Ok(Json(serde_json::to_value(builds).unwrap_or_default()))
}

/// One build with its steps and artifacts.
#[utoipa::path(get, path = "/builds/{system}/{number}", security(("bearer" = [])),
    params(("system" = String, Path), ("number" = i64, Path)),
    responses((status = 200, description = "As `builds show --json`", body = Object),
        (status = 404, body = crate::api_types::ApiErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((system, number)): Path<(String, i64)>,
) -> ApiResult<Json<serde_json::Value>> {
    person.require(Role::Viewer)?;
    let detail = state
        .db(move |db| db.get(&system, number))
        .await?
        .map_err(db_error)?;
    Ok(Json(serde_json::to_value(detail).unwrap_or_default()))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LogQuery {
    /// Only this step's log.
    step: Option<String>,
}

/// The logs of a build's steps, in step order: `[[step, text], …]`.
#[utoipa::path(get, path = "/builds/{system}/{number}/log", security(("bearer" = [])),
    params(("system" = String, Path), ("number" = i64, Path), LogQuery),
    responses((status = 200, body = Vec<(String, String)>)))]
pub async fn log(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((system, number)): Path<(String, i64)>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Json<Vec<(String, String)>>> {
    person.require(Role::Viewer)?;
    let logs = state
        .db(move |db| db.logs(&system, number, query.step.as_deref()))
        .await?
        .map_err(db_error)?;
    Ok(Json(logs))
}

/// The pipeline's events of a farm build as it runs (server-sent events, one JSON event
/// each, as `build --json` prints them); the stream ends when the build does.
#[utoipa::path(get, path = "/builds/{system}/{number}/events", security(("bearer" = [])),
    params(("system" = String, Path), ("number" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((system, number)): Path<(String, i64)>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    person.require(Role::Viewer)?;
    let job = state
        .store
        .job_of_build(&system, number)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "build {number} of '{system}' is not a farm build: it has no events to follow"
            ))
        })?;
    Ok(Sse::new(event_stream(state, job.id)).keep_alive(KeepAlive::default()))
}

/// A job's events from the first, then as they come, until the job has ended and all are
/// sent.
pub fn event_stream(
    state: Arc<AppState>,
    job: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let wake = state.events.subscribe();
    futures_util::stream::unfold(
        (state, job, wake, 0i64, Vec::<(i64, String)>::new(), false),
        |(state, job, mut wake, mut seq, mut pending, mut done)| async move {
            loop {
                if let Some((n, body)) = pending.pop() {
                    seq = n;
                    let event = Event::default().id(n.to_string()).data(body);
                    return Some((Ok(event), (state, job, wake, seq, pending, done)));
                }
                if done {
                    return None;
                }
                // Whether it ended is read before its events: none can come after.
                let ended = match state.store.job(&job).await {
                    Ok(Some(j)) => {
                        matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled")
                    }
                    _ => true,
                };
                match state.store.events_after(&job, seq).await {
                    Ok(mut events) if !events.is_empty() => {
                        events.reverse();
                        pending = events;
                        continue;
                    }
                    Ok(_) if ended => done = true,
                    Ok(_) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), wake.recv()).await;
                    }
                    Err(error) => {
                        tracing::error!("cannot read the events of job {job}: {error}");
                        return None;
                    }
                }
            }
        },
    )
}

/// A file of a build's results, by its name in `builds show`.
#[utoipa::path(get, path = "/builds/{system}/{number}/artifacts/{name}", security(("bearer" = [])),
    params(("system" = String, Path), ("number" = i64, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
pub async fn artifact(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((system, number, name)): Path<(String, i64, String)>,
) -> ApiResult<Body> {
    person.require(Role::Viewer)?;
    let detail = state
        .db(move |db| db.get(&system, number))
        .await?
        .map_err(db_error)?;
    let found = detail
        .artifacts
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("the build has no artifact named '{name}'")))?;
    let file = tokio::fs::File::open(&found.path)
        .await
        .map_err(|e| ApiError::internal("open an artifact", e))?;
    Ok(Body::from_stream(file_stream(file)))
}

/// A file as a body stream, in 64 KiB chunks.
pub fn file_stream(file: tokio::fs::File) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Keeps a build from purges (`keep: false` lets it go again).
#[utoipa::path(post, path = "/builds/{system}/{number}/keep", request_body = KeepRequest,
    params(("system" = String, Path), ("number" = i64, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::api_types::ApiErrorBody)))]
pub async fn keep(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((system, number)): Path<(String, i64)>,
    Json(request): Json<KeepRequest>,
) -> ApiResult<axum::http::StatusCode> {
    person.require(Role::Operator)?;
    let target = format!("{system} {number}");
    state
        .db(move |db| db.keep(&system, number, request.keep))
        .await?
        .map_err(db_error)?;
    let action = if request.keep { "keep" } else { "release" };
    state.store.audit(&person.name, action, &target, "").await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Publishes a build that succeeded: `published/SYSTEM` (or `SYSTEM@TAG`) in the server's
/// directory points at its results, atomically.
#[utoipa::path(post, path = "/builds/{system}/{number}/publish", request_body = PublishRequest,
    params(("system" = String, Path), ("number" = i64, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The publication", body = Object),
        (status = 409, body = crate::api_types::ApiErrorBody)))]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((system, number)): Path<(String, i64)>,
    Json(request): Json<PublishRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    person.require(Role::Operator)?;
    if let Some(tag) = &request.tag {
        autogentoo_core::names::check(tag).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let published = state.data_dir.join("published");
    let by = person.name.clone();
    let tag = request.tag.clone();
    let target = format!("{system} {number}");
    let publication = state
        .db(move |db| db.publish(&system, number, tag.as_deref(), &by, &published))
        .await?
        .map_err(|error| match error {
            autogentoo_db::DbError::NotPublishable { .. } => ApiError::Conflict(error.to_string()),
            other => db_error(other),
        })?;
    let detail = request.tag.unwrap_or_default();
    state
        .store
        .audit(&person.name, "publish", &target, &detail)
        .await?;
    Ok(Json(serde_json::to_value(publication).unwrap_or_default()))
}
