//! `/keys`, `/tokens`, `/audit`: what admins do. Each change is written to the audit log.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Person;
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::api_types::{AuditEntry, Key, KeyRequest, Token, TokenRequest};
use crate::role::Role;

/// Makes a one-time enrollment key for a build host; its secret is in this answer only.
#[utoipa::path(post, path = "/keys", request_body = KeyRequest, security(("bearer" = [])),
    responses((status = 201, body = Key), (status = 403, body = crate::api_types::ApiErrorBody)))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(request): Json<KeyRequest>,
) -> ApiResult<(StatusCode, Json<Key>)> {
    person.require(Role::Admin)?;
    if request.expires_in == 0 || request.expires_in > 30 * 24 * 3600 {
        return Err(ApiError::BadRequest(
            "a key expires after 1 second to 30 days".into(),
        ));
    }
    let ms = i64::try_from(request.expires_in * 1000).unwrap_or(i64::MAX);
    let (id, secret, expires_at) = state.store.create_key(ms, &person.name).await?;
    state
        .store
        .audit(
            &person.name,
            "key create",
            &id,
            &format!("expires_at={expires_at}"),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Key {
            id,
            secret,
            expires_at,
        }),
    ))
}

/// Makes an API token; its secret is in this answer only.
#[utoipa::path(post, path = "/tokens", request_body = TokenRequest, security(("bearer" = [])),
    responses((status = 201, body = Token), (status = 409, body = crate::api_types::ApiErrorBody)))]
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(request): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Json<Token>)> {
    person.require(Role::Admin)?;
    crate::check_name(&request.name).map_err(ApiError::BadRequest)?;
    let token = state
        .store
        .create_token(&request.name, request.role, &person.name)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a token named '{}' exists", request.name)))?;
    state
        .store
        .audit(
            &person.name,
            "token create",
            &request.name,
            request.role.as_str(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// The API tokens, without their secrets.
#[utoipa::path(get, path = "/tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<Token>)))]
pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> ApiResult<Json<Vec<Token>>> {
    person.require(Role::Admin)?;
    Ok(Json(state.store.tokens().await?))
}

/// Revokes an API token.
#[utoipa::path(post, path = "/tokens/{name}/revoke", params(("name" = String, Path)),
    security(("bearer" = [])), responses((status = 204), (status = 404, body = crate::api_types::ApiErrorBody)))]
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    person.require(Role::Admin)?;
    if !state.store.revoke_token(&name).await? {
        return Err(ApiError::NotFound(format!("no token '{name}' in use")));
    }
    state
        .store
        .audit(&person.name, "token revoke", &name, "")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// At most this many (100 when not given).
    limit: Option<i64>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditEntry>)))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    person.require(Role::Admin)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(state.store.audit_log(limit).await?))
}
