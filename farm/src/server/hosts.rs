//! `/hosts`: build hosts join with a one-time key, say they are alive, and ask for work;
//! admins list and revoke them.

use std::sync::Arc;
use std::time::Duration;

use autogentoo_db::Outcome;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth::{HostAuth, Person};
use super::error::{ApiError, ApiResult};
use super::jobs::begin_build;
use super::AppState;
use crate::api_types::{
    Capabilities, EnrollRequest, Enrolled, Host, Lease, LeaseRequest, Liveness,
};
use crate::queue::{queue_of, queue_of_job};
use crate::role::Role;
use crate::store::{now_ms, EnrollRefused};

/// How long a job for an arch waits for a native host before one that emulates it may take it.
const NATIVE_FIRST: Duration = Duration::from_secs(30);

fn liveness(state: &AppState) -> Liveness {
    Liveness {
        heartbeat_ms: state.queue.heartbeat.as_millis() as u64,
        dead_after_ms: state.queue.dead_after.as_millis() as u64,
    }
}

/// Enrolls a build host with a one-time key; the host's credential is in this answer only.
#[utoipa::path(post, path = "/hosts/enroll", request_body = EnrollRequest,
    responses((status = 201, body = Enrolled), (status = 401, body = crate::api_types::ApiErrorBody),
        (status = 409, body = crate::api_types::ApiErrorBody)))]
pub async fn enroll(
    State(state): State<Arc<AppState>>,
    Json(request): Json<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<Enrolled>)> {
    crate::check_name(&request.name).map_err(ApiError::BadRequest)?;
    match state.store.enroll(&request.key, &request.name).await? {
        Ok((key_id, secret)) => {
            state
                .store
                .audit(
                    &request.name,
                    "host enroll",
                    &request.name,
                    &format!("key={key_id}"),
                )
                .await?;
            Ok((
                StatusCode::CREATED,
                Json(Enrolled {
                    host: request.name,
                    secret,
                }),
            ))
        }
        Err(refused @ EnrollRefused::NameTaken(_)) => Err(ApiError::Conflict(refused.to_string())),
        Err(refused) => Err(ApiError::Unauthorized(refused.to_string())),
    }
}

/// A host (re)starts: the jobs it held go back to the queue, since it no longer runs them.
#[utoipa::path(post, path = "/hosts/hello", security(("bearer" = [])),
    responses((status = 200, body = Liveness)))]
pub async fn hello(
    State(state): State<Arc<AppState>>,
    host: HostAuth,
) -> ApiResult<Json<Liveness>> {
    for job in state.store.running_jobs_of(&host.name).await? {
        state
            .queue
            .abandon(
                &host.name,
                &queue_of_job(&job),
                std::slice::from_ref(&job.id),
            )
            .await?;
    }
    state.store.release_requeued().await?;
    state.work.notify_waiters();
    Ok(Json(liveness(&state)))
}

/// The host is alive, and can build this.
#[utoipa::path(post, path = "/hosts/heartbeat", request_body = Capabilities, security(("bearer" = [])),
    responses((status = 200, body = Liveness)))]
pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    host: HostAuth,
    Json(caps): Json<Capabilities>,
) -> ApiResult<Json<Liveness>> {
    state.store.touch_host(&host.name, &caps).await?;
    state.queue.heartbeat(&host.name, &queues_of(&caps)).await?;
    Ok(Json(liveness(&state)))
}

fn queues_of(caps: &Capabilities) -> Vec<String> {
    caps.arches
        .iter()
        .flat_map(|a| queues_of_arch(caps, &a.arch))
        .collect()
}

/// The queues a host with `caps` takes `arch`'s jobs from: those pinned to one of its backends
/// first, then those any host can build.
fn queues_of_arch(caps: &Capabilities, arch: &str) -> Vec<String> {
    caps.backends
        .iter()
        .map(|backend| queue_of(arch, Some(backend)))
        .chain(std::iter::once(queue_of(arch, None)))
        .collect()
}

/// Gives the host a job it can run: of an arch it runs natively first; of one it runs through
/// qemu-user only when no native host is alive, or the job waited long. When none waits, the
/// request waits up to its `wait_ms` (at most 30 s) for one to be submitted or given back.
#[utoipa::path(post, path = "/hosts/lease", request_body = LeaseRequest, security(("bearer" = [])),
    responses((status = 200, body = Lease), (status = 204, description = "No work now")))]
pub async fn lease(
    State(state): State<Arc<AppState>>,
    host: HostAuth,
    Json(request): Json<LeaseRequest>,
) -> ApiResult<Result<Json<Lease>, StatusCode>> {
    let caps = request.capabilities;
    state.store.touch_host(&host.name, &caps).await?;
    state.queue.heartbeat(&host.name, &queues_of(&caps)).await?;
    if caps.free_slots == 0 {
        return Ok(Err(StatusCode::NO_CONTENT));
    }
    let wait = Duration::from_millis(request.wait_ms.min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Listening before looking: work that comes in between still wakes this request.
        let work = state.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        if let Some(lease) = next_job(&state, &host.name, &caps).await? {
            return Ok(Ok(Json(lease)));
        }
        if tokio::time::timeout_at(deadline, work).await.is_err() {
            return Ok(Err(StatusCode::NO_CONTENT));
        }
        // Revoked while it waited: it gets nothing more.
        if !state.store.host_active(&host.name).await? {
            return Err(ApiError::Unauthorized(
                "the host credential is not known, or the host was revoked".into(),
            ));
        }
    }
}

/// The longest a lease request waits for work.
const MAX_WAIT_MS: u64 = 30_000;

/// Claims the next job `host` can run, and hands it over: its build recorded, its credential
/// made.
async fn next_job(
    state: &Arc<AppState>,
    host: &str,
    caps: &Capabilities,
) -> ApiResult<Option<Lease>> {
    let mut arches = caps.arches.clone();
    arches.sort_by_key(|a| !a.native);
    let alive_since = now_ms() - state.queue.dead_after.as_millis() as i64;
    let queues = arches.iter().flat_map(|arch| {
        queues_of_arch(caps, &arch.arch)
            .into_iter()
            .map(move |queue| (arch, queue))
    });
    for (arch, queue) in queues {
        if !arch.native
            && state
                .store
                .native_host_alive(&arch.arch, alive_since)
                .await?
        {
            let (_, waited) = state.queue.waiting(&queue).await?;
            if waited.is_none_or(|w| w < NATIVE_FIRST) {
                continue;
            }
        }
        let Some((id, attempt)) = state.queue.claim(host, &queue).await? else {
            continue;
        };
        let Some(job) = state.store.job(&id).await? else {
            tracing::warn!("job {id} of the queue is not in farm_jobs; dropping it");
            state
                .queue
                .complete(host, &queue, &id, attempt, false)
                .await?;
            continue;
        };
        if !matches!(job.state.as_str(), "queued" | "running") {
            // Cancelled as the queue handed it out.
            state
                .queue
                .complete(host, &queue, &id, attempt, false)
                .await?;
            continue;
        }
        let leased = async {
            let number = begin_build(state, &job, host).await?;
            let secret = state.store.lease_job(&id, host, attempt, number).await?;
            Ok::<_, ApiError>((number, secret))
        }
        .await;
        let secret = match leased {
            Ok((_, Some(secret))) => secret,
            Ok((number, None)) => {
                // Cancelled in between: its record ends as the cancel left the job.
                let system = job.system.clone();
                state
                    .db(move |db| db.end_remote(&system, number, Outcome::Interrupted, "cancelled"))
                    .await?
                    .map_err(|e| ApiError::internal("end a cancelled build's record", e))?;
                continue;
            }
            Err(error) => {
                // Not handed out after all: back to the queue, not held by a host that never
                // heard of it.
                let ids = std::slice::from_ref(&id);
                if let Err(again) = state.queue.abandon(host, &queue, ids).await {
                    tracing::error!("cannot give job {id} back to the queue: {again}");
                }
                return Err(error);
            }
        };
        let job = state.store.job(&id).await?.unwrap_or(job);
        tracing::info!(
            "job {id} ({}) to host '{host}', attempt {attempt}",
            job.system
        );
        return Ok(Some(Lease {
            job,
            secret,
            liveness: liveness(state),
        }));
    }
    Ok(None)
}

/// The enrolled hosts.
#[utoipa::path(get, path = "/hosts", security(("bearer" = [])),
    responses((status = 200, body = Vec<Host>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> ApiResult<Json<Vec<Host>>> {
    person.require(Role::Viewer)?;
    Ok(Json(state.store.hosts().await?))
}

/// Revokes a host: its credential and its jobs' credentials stop working, and its jobs go back
/// to the queue.
#[utoipa::path(post, path = "/hosts/{name}/revoke", params(("name" = String, Path)),
    security(("bearer" = [])), responses((status = 204), (status = 404, body = crate::api_types::ApiErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    person.require(Role::Admin)?;
    if !state.store.revoke_host(&name).await? {
        return Err(ApiError::NotFound(format!(
            "no enrolled host '{name}' in use"
        )));
    }
    for job in state.store.running_jobs_of(&name).await? {
        state
            .queue
            .abandon(&name, &queue_of_job(&job), std::slice::from_ref(&job.id))
            .await?;
    }
    state.store.release_requeued().await?;
    state.work.notify_waiters();
    state
        .store
        .audit(&person.name, "host revoke", &name, "")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every heartbeat interval: the jobs of hosts not heard from go back to the queue.
pub async fn requeue_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.queue.heartbeat);
    loop {
        tick.tick().await;
        match state.queue.requeue_orphans().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("{n} jobs of silent hosts went back to the queue");
                state.work.notify_waiters();
            }
            Err(error) => tracing::error!("cannot requeue the jobs of silent hosts: {error}"),
        }
        if let Err(error) = state.store.release_requeued().await {
            tracing::error!("cannot release requeued jobs: {error}");
        }
    }
}
