//! The HTTP error model shared by the webhook and the audit API.
//!
//! Each variant is one status code, chosen for what the caller should do next:
//! Alertmanager retries 5xx and never 4xx, so a payload that can never be accepted is
//! a 400 with its reason, and a database hiccup is a 503 (with `Retry-After`) so the
//! alert comes back. Internal errors are logged with their cause and shown as a plain
//! 500, never with internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An error an HTTP handler returns.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request can never succeed as sent; the message says why.
    #[error("{0}")]
    BadRequest(String),
    /// Credentials are missing or wrong.
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated (or not), but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// Transient trouble; try again.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        if e.is_transient() {
            HttpError::Unavailable(format!("the knowledge base is unavailable, try again: {e}"))
        } else {
            HttpError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if let HttpError::Unavailable(cause) = &self {
            tracing::warn!(%cause, "answering 503");
        }
        let mut response = (status, Json(json!({"error": self.to_string()}))).into_response();
        match self {
            HttpError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"salve\", Basic realm=\"salve\""),
                );
            }
            HttpError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
