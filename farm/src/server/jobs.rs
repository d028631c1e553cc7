//! `/jobs`: builds submitted to the farm, and what their hosts report while they run them.

use std::sync::Arc;

use autogentoo_core::site_config::SiteConfig;
use autogentoo_db::{BuildDetail, Outcome, RemoteStart};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{JobAuth, Person};
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::api_types::{Job, JobResult, SubmitRequest, Submitted};
use crate::queue::{queue_of, queue_of_job};
use crate::role::Role;
use crate::secret;
use crate::store::NewJob;

/// Submits a build of a system of the server's site config. The same build (system, site
/// config, inputs and backend) submitted again is the same job, and nothing new is queued;
/// unless that job failed: then it is built again, as a new job.
#[utoipa::path(post, path = "/jobs", request_body = SubmitRequest, security(("bearer" = [])),
    responses((status = 201, description = "Queued", body = Submitted),
        (status = 200, description = "Submitted before: that job", body = Submitted),
        (status = 403, body = crate::api_types::ApiErrorBody)))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(request): Json<SubmitRequest>,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    person.require(Role::Operator)?;
    if let Some(backend) = &request.backend {
        crate::check_name(backend).map_err(ApiError::BadRequest)?;
    }
    let config_file = state.config_file.clone();
    let sites = state.data_dir.join("sites");
    let system = request.system.clone();
    let site = tokio::task::spawn_blocking(move || snapshot_site(&config_file, &sites, &system))
        .await
        .map_err(|e| ApiError::internal("snapshot the site config", e))??;
    let (hash, arch) = (site.hash, site.arch);
    let inputs = crate::inputs::for_job(&site.uses, &state.store.inputs().await?);
    let backend = request.backend.as_deref();
    // The same system, site config, inputs (snapshot, stages) and backend: the same build.
    let mut identity = format!("{}\0{hash}", request.system);
    for input in &inputs {
        identity.push_str(&format!("\0{}:{}:{}", input.kind, input.name, input.sha256));
    }
    if let Some(backend) = backend {
        identity.push_str(&format!("\0{backend}"));
    }
    let key = secret::sha256(&identity);
    let id = ulid::Ulid::generate().to_string();
    let new = NewJob {
        id: &id,
        system: &request.system,
        arch: &arch,
        backend,
        config_hash: &hash,
        idempotency_key: &key,
        submitted_by: &person.name,
        inputs: &inputs,
    };
    let mut inserted = state.store.insert_job(&new).await?;
    if inserted.is_none() {
        let job = state.store.job_by_key(&key).await?.ok_or_else(|| {
            ApiError::internal("find the job submitted before", "no job with its key")
        })?;
        // A build that failed or was cancelled is built again when submitted again; one
        // queued, running or done is that job.
        let again = matches!(job.state.as_str(), "failed" | "cancelled");
        if !(again && state.store.retire_failed(&job.id).await?) {
            return Ok((
                StatusCode::OK,
                Json(Submitted {
                    job,
                    existing: true,
                }),
            ));
        }
        inserted = state.store.insert_job(&new).await?;
    }
    let Some(job) = inserted else {
        return Err(ApiError::Conflict(format!(
            "{} was submitted by someone else at the same time; submit it again",
            request.system
        )));
    };
    // The queue's own key is this job's: a failed build submitted again is a new task.
    let queue_key = format!("{key}#{id}");
    if let Err(error) = state
        .queue
        .push(&id, &queue_of(&arch, backend), &queue_key)
        .await
    {
        state.store.delete_job(&id).await?;
        return Err(error.into());
    }
    // One job wakes one waiting host; if that one cannot run it, the others find it when
    // their requests come back.
    state.work.notify_one();
    state
        .store
        .audit(&person.name, "submit", &request.system, &id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Submitted {
            job,
            existing: false,
        }),
    ))
}

/// A site config snapshot, for a job of one of its systems.
struct SiteSnapshot {
    hash: String,
    /// The system's arch.
    arch: String,
    /// The inputs the system names ([`crate::inputs::used_by`]).
    uses: Vec<(crate::api_types::InputKind, String)>,
}

/// Packs the site config's directory, keeps the snapshot as `sites/HASH.tar`, and returns its
/// hash with what the system needs.
fn snapshot_site(
    config_file: &std::path::Path,
    sites: &std::path::Path,
    system: &str,
) -> ApiResult<SiteSnapshot> {
    let config =
        SiteConfig::load(config_file).map_err(|e| ApiError::internal("read its site config", e))?;
    let found = config
        .system(system)
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    let arch = found.arch(&config.build).to_owned();
    let uses = crate::inputs::used_by(&config, found);
    let dir = config_file.parent().unwrap_or(std::path::Path::new("."));
    let (hash, bytes) =
        crate::site::pack(dir).map_err(|e| ApiError::internal("snapshot the site config", e))?;
    let path = sites.join(format!("{hash}.tar"));
    if !path.exists() {
        let partial = sites.join(format!(".{hash}.{}.partial", secret::random_hex(4)));
        std::fs::write(&partial, &bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| ApiError::internal("keep the site config snapshot", e))?;
    }
    Ok(SiteSnapshot { hash, arch, uses })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct JobsQuery {
    /// At most this many (50 when not given).
    limit: Option<i64>,
}

/// The jobs, newest first.
#[utoipa::path(get, path = "/jobs", params(JobsQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<Job>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(query): Query<JobsQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    person.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(50).clamp(1, 10_000);
    Ok(Json(state.store.jobs(limit).await?))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 404, body = crate::api_types::ApiErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    person.require(Role::Viewer)?;
    let job = state.store.job(&id).await?;
    job.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// Appends the pipeline's events (one JSON object per line) of a job its host runs.
#[utoipa::path(post, path = "/jobs/{id}/events", params(("id" = String, Path)),
    request_body(content = String, content_type = "application/x-ndjson"),
    security(("bearer" = [])), responses((status = 204)))]
pub async fn post_events(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path(id): Path<String>,
    body: String,
) -> ApiResult<StatusCode> {
    let job = auth.for_job(&id)?;
    require_lease(&state, job).await?;
    let mut lines = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| ApiError::BadRequest(format!("an event is not JSON: {e}")))?;
        lines.push(line.to_owned());
    }
    state.store.append_events(&id, job.attempt, &lines).await?;
    let _ = state.events.send(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a host whose lease on `job` was lost (it missed its heartbeats, and the job went
/// back to the queue).
pub async fn require_lease(state: &AppState, job: &Job) -> ApiResult<()> {
    let host = job.host.as_deref().unwrap_or_default();
    if state.queue.holds(host, &queue_of_job(job), &job.id).await? {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "host '{host}' no longer holds job {}: it missed its heartbeats and the job went \
             back to the queue; this is refused",
            job.id
        )))
    }
}

/// Whether the host still holds the job's lease: 204 while it does. A host asks every
/// heartbeat interval while it builds, so that a job cancelled or given to another host stops
/// even when its build prints nothing for a long time.
#[utoipa::path(get, path = "/jobs/{id}/lease", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 204, description = "The lease holds"),
        (status = 401, body = crate::api_types::ApiErrorBody),
        (status = 409, body = crate::api_types::ApiErrorBody)))]
pub async fn lease(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let job = auth.for_job(&id)?;
    require_lease(&state, job).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a job with its host's record of the build. Refused unless the host still holds the
/// job's lease, and unless every artifact of the record was uploaded. The build is recorded
/// once: a second result for the same job is refused.
#[utoipa::path(post, path = "/jobs/{id}/result", params(("id" = String, Path)),
    request_body = JobResult, security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 409, body = crate::api_types::ApiErrorBody)))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path(id): Path<String>,
    Json(result): Json<JobResult>,
) -> ApiResult<Json<Job>> {
    let job = auth.for_job(&id)?.clone();
    let record: BuildDetail = serde_json::from_value(result.record)
        .map_err(|e| ApiError::BadRequest(format!("the build record does not parse: {e}")))?;
    if record.build.outcome == Outcome::Running {
        return Err(ApiError::BadRequest(
            "the record says the build is still running; report it when it has ended".into(),
        ));
    }
    if record.build.system != job.system {
        return Err(ApiError::BadRequest(format!(
            "the record is of system '{}', the job builds '{}'",
            record.build.system, job.system
        )));
    }
    let store = state.data_dir.join("artifacts");
    for artifact in &record.artifacts {
        if !artifacts_ok(&artifact.sha256) || !store.join(&artifact.sha256).is_file() {
            return Err(ApiError::BadRequest(format!(
                "artifact '{}' ({}) was not uploaded; upload it to /jobs/{id}/artifacts/SHA256 first",
                artifact.name, artifact.sha256
            )));
        }
    }
    require_lease(&state, &job).await?;
    let host = job.host.clone().unwrap_or_default();
    let succeeded = record.build.outcome == Outcome::Succeeded;
    if !state
        .queue
        .complete(&host, &queue_of_job(&job), &id, job.attempt, succeeded)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "host '{host}' lost job {id} before its result came; the result is refused"
        )));
    }
    let number = job.build_number.unwrap_or_default();
    let out = state.data_dir.join("out");
    let system = job.system.clone();
    let kept = tokio::task::spawn_blocking(move || {
        keep_artifacts(&store, &out.join(&system).join(number.to_string()), &record)?;
        Ok::<_, std::io::Error>(record)
    })
    .await
    .map_err(|e| ApiError::internal("keep a build's results", e))?
    .map_err(|e| ApiError::internal("keep a build's results", e))?;
    let error = kept.build.error.clone();
    let logs = result.logs;
    let system = job.system.clone();
    state
        .db(move |db| db.finish_remote(&system, number, &kept, &logs))
        .await?
        .map_err(|e| ApiError::internal("record a farm build", e))?;
    let ended = if succeeded { "succeeded" } else { "failed" };
    state.store.end_job(&id, ended, error.as_deref()).await?;
    let _ = state.events.send(id.clone());
    let job = state.store.job(&id).await?.unwrap_or(job);
    Ok(Json(job))
}

/// Cancels a job: a waiting one leaves the queue; a running one's host is told its lease is
/// gone the next time it reports, and stops the build. Its build record ends as interrupted.
#[utoipa::path(post, path = "/jobs/{id}/cancel", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 404, body = crate::api_types::ApiErrorBody),
        (status = 409, body = crate::api_types::ApiErrorBody)))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    person.require(Role::Operator)?;
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let why = format!("cancelled by {}", person.name);
    if !matches!(job.state.as_str(), "queued" | "running")
        || !state.store.cancel_job(&id, &why).await?
    {
        return Err(ApiError::Conflict(format!(
            "job {id} ({}) has ended: it is {}",
            job.system, job.state
        )));
    }
    state.queue.cancel(&id).await?;
    if let Some(number) = job.build_number {
        let (system, error) = (job.system.clone(), why.clone());
        state
            .db(move |db| db.end_remote(&system, number, Outcome::Interrupted, &error))
            .await?
            .map_err(|e| ApiError::internal("end a cancelled build's record", e))?;
    }
    let _ = state.events.send(id.clone());
    state
        .store
        .audit(&person.name, "job cancel", &job.system, &id)
        .await?;
    let job = state.store.job(&id).await?.unwrap_or(job);
    Ok(Json(job))
}

/// A SHA-256 in hex, and nothing else (it names a file).
pub fn artifacts_ok(sha256: &str) -> bool {
    sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Links each artifact from the store into the build's results directory.
fn keep_artifacts(
    store: &std::path::Path,
    dir: &std::path::Path,
    record: &BuildDetail,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for artifact in &record.artifacts {
        let name = std::path::Path::new(&artifact.name);
        if name.components().count() != 1 || name.file_name().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("artifact name '{}' is not a plain file name", artifact.name),
            ));
        }
        let target = dir.join(name);
        let _ = std::fs::remove_file(&target);
        std::fs::hard_link(store.join(&artifact.sha256), &target)?;
    }
    Ok(())
}

/// The site config snapshot a job builds with (a tar; its SHA-256 is the job's
/// `config_hash`).
#[utoipa::path(get, path = "/jobs/{id}/site", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>)))]
pub async fn site(
    State(state): State<Arc<AppState>>,
    auth: JobAuth,
    Path(id): Path<String>,
) -> ApiResult<Bytes> {
    let job = auth.for_job(&id)?;
    let path = state
        .data_dir
        .join("sites")
        .join(format!("{}.tar", job.config_hash));
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal("read a site config snapshot", e))?;
    Ok(Bytes::from(bytes))
}

/// Records the build of a job a host takes: a new build, or the job's build again.
pub async fn begin_build(state: &AppState, job: &Job, host: &str) -> ApiResult<i64> {
    let system = job.system.clone();
    let host = host.to_owned();
    let by = job.submitted_by.clone();
    let hash = job.config_hash.clone();
    let out = state.data_dir.join("out");
    let number = job.build_number;
    state
        .db(move |db| {
            db.begin_remote(
                &RemoteStart {
                    system: &system,
                    host: &host,
                    started_by: &by,
                    config_hash: &hash,
                    out_root: &out,
                },
                number,
            )
        })
        .await?
        .map_err(|e| ApiError::internal("record a farm build", e))
}
