//! Authorization errors as RFC 6750 describes them: a `WWW-Authenticate: Bearer` challenge
//! with its `error` code, and Broker's usual `{"error": "..."}` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Why a Mercure request was not authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    /// No token, and the operation needs one: 401 with a challenge carrying no error code.
    Missing,
    /// A token that failed validation: 401, `error="invalid_token"`.
    InvalidToken(String),
    /// A valid token that does not allow the operation: 403, `error="insufficient_scope"`.
    InsufficientScope(String),
    /// A malformed token presentation: 400, `error="invalid_request"`.
    InvalidRequest(String),
    /// Any other error (400 for a bad request, 503, ...), without a challenge.
    Other(ApiError),
}

impl From<ApiError> for BearerError {
    fn from(error: ApiError) -> Self {
        Self::Other(error)
    }
}

impl From<crate::store::StoreError> for BearerError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Other(error.into())
    }
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let (status, message, challenge) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "authorization required".to_owned(),
                "Bearer realm=\"mercure\"".to_owned(),
            ),
            Self::InvalidToken(why) => (
                StatusCode::UNAUTHORIZED,
                why,
                "Bearer realm=\"mercure\", error=\"invalid_token\"".to_owned(),
            ),
            Self::InsufficientScope(why) => (
                StatusCode::FORBIDDEN,
                why,
                "Bearer realm=\"mercure\", error=\"insufficient_scope\"".to_owned(),
            ),
            Self::InvalidRequest(why) => (
                StatusCode::BAD_REQUEST,
                why,
                "Bearer realm=\"mercure\", error=\"invalid_request\"".to_owned(),
            ),
            Self::Other(error) => return error.into_response(),
        };
        let mut response = ApiError::new(status, message).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
