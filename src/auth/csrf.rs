//! Cross-site request forgery protection for the `broker_token` cookie.
//!
//! A browser attaches the cookie to requests that other sites' pages make, so a write (any
//! method but GET, HEAD and OPTIONS) authenticated by the cookie alone must show that it comes
//! from a page allowed to make it:
//! - `Content-Type: application/json`. HTML forms cannot send it, and cross-origin scripts can
//!   only after a CORS preflight that `--origin` decides.
//! - When the browser names the page's origin (`Origin`, or else the origin of `Referer`), that
//!   origin must be one of `--origin`'s list, or the server's own (same host and port as the
//!   request's `Host`). With `--origin *`, only the server's own origin passes: CORS never
//!   lets a wildcard origin use credentials, so no other page can use the cookie legitimately.
//!
//! Requests that carry `Authorization` (Bearer or Basic) are not affected: a browser never
//! adds those on its own.

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::error::ApiError;

/// An origin as compared here: scheme, host and port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// The origins whose pages may write with the cookie, besides the server's own.
#[derive(Debug, Clone, Default)]
pub struct CsrfPolicy {
    allowed: Vec<Origin>,
}

impl CsrfPolicy {
    /// The policy for an `--origin` value (`*` or a comma-separated list of origins).
    pub fn new(origin_flag: &str) -> Self {
        Self {
            allowed: origin_flag
                .split(',')
                .map(str::trim)
                .filter(|o| *o != "*")
                .filter_map(parse_origin)
                .collect(),
        }
    }

    /// Checks a request authenticated by the cookie alone.
    ///
    /// # Errors
    /// 403 for a write without a JSON content type, or from a page of an origin not allowed.
    pub fn check(&self, parts: &Parts) -> Result<(), ApiError> {
        if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        if !is_json(&parts.headers) {
            return Err(ApiError::forbidden(
                "a write authenticated by the broker_token cookie needs Content-Type: application/json",
            ));
        }
        let (name, value) = match (
            parts.headers.get(header::ORIGIN),
            parts.headers.get(header::REFERER),
        ) {
            (Some(origin), _) => ("Origin", origin),
            (None, Some(referer)) => ("Referer", referer),
            (None, None) => return Ok(()),
        };
        let text = value.to_str().unwrap_or("");
        let allowed = parse_origin(text)
            .is_some_and(|origin| self.allowed.contains(&origin) || same_origin(&origin, parts));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "cross-site request refused: the {name} '{}' may not write with the broker_token cookie",
                text.chars().take(200).collect::<String>()
            )))
        }
    }
}

/// Whether the content type is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `origin` names the server itself: the host and port the request was sent to.
fn same_origin(origin: &Origin, parts: &Parts) -> bool {
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
    let Some((host, port)) = authority.as_deref().and_then(split_host_port) else {
        return false;
    };
    host == origin.host && port.or_else(|| default_port(&origin.scheme)) == origin.effective_port()
}

impl Origin {
    fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| default_port(&self.scheme))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// The origin of an `Origin` value or a URL (`Referer`): scheme, lower-cased host and port,
/// with a default port written out dropped. `None` for `null` and anything unparsable.
fn parse_origin(text: &str) -> Option<Origin> {
    let (scheme, rest) = text.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_host_port(authority)?;
    let port = port.filter(|p| Some(*p) != default_port(&scheme));
    Some(Origin { scheme, host, port })
}

/// `host[:port]` or `[v6][:port]`, host lower-cased.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Request, StatusCode};

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder().method(method).uri("/insert");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).expect("request").into_parts().0
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");
    const HOST: (&str, &str) = ("host", "broker.example:8080");

    #[test]
    fn reads_pass_and_writes_need_json() {
        let policy = CsrfPolicy::new("*");
        assert!(policy.check(&parts("GET", &[])).is_ok());
        assert!(policy.check(&parts("HEAD", &[])).is_ok());
        let refused = policy.check(&parts("POST", &[])).expect_err("no type");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            policy
                .check(&parts("POST", &[("content-type", "text/plain")]))
                .is_err()
        );
        assert!(
            policy
                .check(&parts(
                    "DELETE",
                    &[("content-type", "application/x-www-form-urlencoded")]
                ))
                .is_err()
        );
        assert!(
            policy.check(&parts("POST", &[JSON])).is_ok(),
            "no origin sent"
        );
    }

    #[test]
    fn origins() {
        let star = CsrfPolicy::new("*");
        let own = ("origin", "http://broker.example:8080");
        assert!(star.check(&parts("POST", &[JSON, HOST, own])).is_ok());
        let evil = ("origin", "http://evil.example");
        assert!(star.check(&parts("POST", &[JSON, HOST, evil])).is_err());
        let sibling = ("origin", "http://broker.example:9999");
        assert!(
            star.check(&parts("POST", &[JSON, HOST, sibling])).is_err(),
            "another port"
        );
        assert!(
            star.check(&parts("POST", &[JSON, HOST, ("origin", "null")]))
                .is_err()
        );
        assert!(
            star.check(&parts("POST", &[JSON, ("origin", "http://x")]))
                .is_err(),
            "no host"
        );

        let list = CsrfPolicy::new("https://app.example, http://localhost:3000");
        let app = ("origin", "https://app.example:443");
        assert!(
            list.check(&parts("POST", &[JSON, HOST, app])).is_ok(),
            "listed"
        );
        assert!(
            list.check(&parts("POST", &[JSON, HOST, own])).is_ok(),
            "own origin"
        );
        assert!(list.check(&parts("POST", &[JSON, HOST, evil])).is_err());
        assert!(
            list.check(&parts(
                "POST",
                &[JSON, HOST, ("origin", "http://app.example")]
            ))
            .is_err(),
            "another scheme"
        );
    }

    #[test]
    fn referer_when_no_origin() {
        let star = CsrfPolicy::new("*");
        let own = ("referer", "http://Broker.example:8080/demo?x=1");
        assert!(star.check(&parts("POST", &[JSON, HOST, own])).is_ok());
        let evil = ("referer", "https://evil.example/page");
        assert!(star.check(&parts("POST", &[JSON, HOST, evil])).is_err());
        // Host without a port: the scheme's default.
        let host = ("host", "broker.example");
        let https = ("origin", "https://broker.example");
        assert!(star.check(&parts("POST", &[JSON, host, https])).is_ok());
        let v6 = ("host", "[::1]:8080");
        let v6_origin = ("origin", "http://[::1]:8080");
        assert!(star.check(&parts("POST", &[JSON, v6, v6_origin])).is_ok());
    }
}
