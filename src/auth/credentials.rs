//! Finding the credentials a request carries.

use axum::http::{HeaderMap, header};
use base64::Engine;

use super::COOKIE_NAME;
use crate::error::ApiError;

/// Credentials found on a request, by where they were found.
pub enum Credentials {
    /// `Authorization: Bearer <jwt>`.
    Bearer(String),
    /// The `broker_token` cookie: a browser may attach it to other sites' requests.
    Cookie(String),
    /// `?access_token=<jwt>` (SSE endpoints only).
    Query(String),
    /// `Authorization: Basic`: username and password.
    Basic(String, String),
}

/// Finds credentials: `Authorization` header, then the cookie, then (if `query` is given)
/// `access_token`.
///
/// # Errors
/// 401 for a malformed `Authorization` header or an unsupported scheme.
pub fn find(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Credentials>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok(Some(Credentials::Bearer(rest.to_owned())))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            Ok(Some(Credentials::Basic(user.to_owned(), pass.to_owned())))
        } else {
            Err(ApiError::unauthorized(
                "unsupported Authorization scheme: use Bearer or Basic",
            ))
        };
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == COOKIE_NAME
                && !value.is_empty()
            {
                return Ok(Some(Credentials::Cookie(value.to_owned())));
            }
        }
    }
    if let Some(query) = query {
        for (name, value) in form_pairs(query) {
            if name == "access_token" && !value.is_empty() {
                return Ok(Some(Credentials::Query(value)));
            }
        }
    }
    Ok(None)
}

/// Decodes `a=b&c=d` query pairs.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}
