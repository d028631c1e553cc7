//! Who is asking: a person with an API token (and a role), a build host with its credential,
//! or a job's host with that job's credential. Each is an extractor: a handler that takes one
//! refuses any other caller before it runs.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::api_types::Job;
use crate::role::Role;

/// The secret of `Authorization: Bearer SECRET`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    authorization(parts)?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header is not `Bearer …`".into()))
}

fn authorization(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "no credential: send `Authorization: Bearer TOKEN` (an API token from \
                 `autogentoo farm token create`)"
                    .into(),
            )
        })
}

/// The secret of `Authorization: Bearer SECRET`, or the password of `Authorization: Basic …`
/// (the user name is not looked at): Portage can send only the latter to a binhost.
fn bearer_or_basic(parts: &Parts) -> Result<String, ApiError> {
    use base64::Engine as _;
    let value = authorization(parts)?;
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return bearer(parts).map(str::to_owned);
    };
    let malformed = || {
        ApiError::Unauthorized(
            "the Authorization header's Basic credential is not base64 of `USER:TOKEN`".into(),
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (_, secret) = text.split_once(':').ok_or_else(malformed)?;
    Ok(secret.to_owned())
}

/// A person, by API token.
pub struct Person {
    pub name: String,
    pub role: Role,
}

impl Person {
    /// Refuses a person whose role is below `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "'{}' is a {}; this needs the {needed} role",
                self.name, self.role
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Person {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts)?;
        match state.store.person(secret).await? {
            Some((name, role)) => Ok(Self { name, role }),
            None => Err(ApiError::Unauthorized(
                "the API token is not known, or was revoked".into(),
            )),
        }
    }
}

/// A build host, by its own credential.
pub struct HostAuth {
    pub name: String,
}

impl FromRequestParts<Arc<AppState>> for HostAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts)?;
        match state.store.host_of(secret).await? {
            Some(name) => Ok(Self { name }),
            None => Err(ApiError::Unauthorized(
                "the host credential is not known, or the host was revoked".into(),
            )),
        }
    }
}

/// A job's host, by the job's credential: good for that job's current attempt only.
pub struct JobAuth {
    pub job: Job,
}

impl JobAuth {
    /// Refuses a credential of another job than `id`.
    pub fn for_job(&self, id: &str) -> Result<&Job, ApiError> {
        if self.job.id == id {
            Ok(&self.job)
        } else {
            Err(ApiError::Forbidden(format!(
                "this credential is for job {}, not {id}",
                self.job.id
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for JobAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts)?;
        match state.store.job_of_secret(secret).await? {
            Some(job) => Ok(Self { job }),
            None => Err(ApiError::Unauthorized(
                "the job credential is not known, its job ended, or its lease was lost".into(),
            )),
        }
    }
}

/// Whoever may read the binhost: a person with a token (any role), or a build host; by Bearer
/// or, for Portage, by HTTP Basic.
pub struct Reader;

impl FromRequestParts<Arc<AppState>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer_or_basic(parts)?;
        if state.store.person(&secret).await?.is_some()
            || state.store.host_of(&secret).await?.is_some()
        {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized(
                "neither an API token nor a host credential that is known and not revoked".into(),
            ))
        }
    }
}
