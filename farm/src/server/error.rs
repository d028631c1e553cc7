//! The API's one error type: each kind maps to its status code once, and renders as
//! `{"error": "…"}`. What went wrong inside (a database error, say) is logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api_types::ApiErrorBody;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credential, or one that is not (or no longer) good.
    #[error("{0}")]
    Unauthorized(String),
    /// A good credential that may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request contradicts what the server holds (a lost lease, a used key).
    #[error("{0}")]
    Conflict(String),
    /// Something of ours failed; the cause is logged.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An internal failure: logged with its cause, answered without it.
    pub fn internal(what: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {cause}");
        Self::Internal(format!("the server could not {what}; its log says why"))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal("use its database", error)
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(error: crate::queue::QueueError) -> Self {
        Self::internal("use its queue", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: self.to_string(),
        };
        let status = self.status();
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // The challenge HTTP asks for; Portage (urllib, wget) sends a binhost's credential
            // only when challenged for Basic.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(
                    "Basic realm=\"autogentoo\", charset=\"UTF-8\"",
                ),
            );
        }
        response
    }
}
