//! The error of an authentication step: an [`ApiError`], or a `429` that tells the client when
//! to retry (`Retry-After`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::store::StoreError;

/// Why credentials were not accepted; rendered as `{"error": "..."}` with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// Status and message.
    pub error: ApiError,
    /// Seconds after which a retry may succeed (sent as `Retry-After`), for 429.
    pub retry_after: Option<u64>,
}

impl AuthError {
    /// 429 with `Retry-After: secs` (at least 1).
    pub fn throttled(secs: u64, message: impl Into<String>) -> Self {
        Self {
            error: ApiError::new(StatusCode::TOO_MANY_REQUESTS, message),
            retry_after: Some(secs.max(1)),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.error.status
    }
}

impl From<ApiError> for AuthError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(error: StoreError) -> Self {
        ApiError::from(error).into()
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AuthError {}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
