//! Authorization errors as RFC 6750 describes them: a `WWW-Authenticate: Bearer` challenge
//! with its `error` code and the hub's protected resource metadata URL (`resource_metadata`,
//! RFC 9728 section 5.1), and Broker's usual `{"error": "..."}` body.

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

impl BearerError {
    /// The response; its challenge names `resource_metadata`, the URL of the hub's protected
    /// resource metadata ([`super::metadata::url`]).
    pub fn respond(self, resource_metadata: &str) -> Response {
        let (status, message, error) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "authorization required".to_owned(),
                None,
            ),
            Self::InvalidToken(why) => (StatusCode::UNAUTHORIZED, why, Some("invalid_token")),
            Self::InsufficientScope(why) => {
                (StatusCode::FORBIDDEN, why, Some("insufficient_scope"))
            }
            Self::InvalidRequest(why) => (StatusCode::BAD_REQUEST, why, Some("invalid_request")),
            Self::Other(error) => return error.into_response(),
        };
        // A URL holds no `"` or `\`; one that did would break out of the quoted string.
        let metadata = resource_metadata.replace(['"', '\\'], "");
        let challenge = match error {
            None => format!("Bearer realm=\"mercure\", resource_metadata=\"{metadata}\""),
            Some(code) => format!(
                "Bearer realm=\"mercure\", error=\"{code}\", resource_metadata=\"{metadata}\""
            ),
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
