//! Request logging without credentials: the request span shows the URI with the values of
//! `access_token` and `authorization` query parameters replaced by `REDACTED`.

use axum::body::Body;
use axum::http::{Request, Uri};

/// Query parameters whose values are never logged (compared after percent-decoding, any case).
const SECRET_PARAMS: [&str; 2] = ["access_token", "authorization"];

/// The span of one request, for `TraceLayer::make_span_with`: like tower-http's default (debug
/// level, its target, method, URI, version), with credentials in the query redacted.
pub fn make_span(req: &Request<Body>) -> tracing::Span {
    tracing::debug_span!(
        target: "tower_http::trace::make_span",
        "request",
        method = %req.method(),
        uri = %redact_uri(req.uri()),
        version = ?req.version(),
    )
}

/// `uri` as text with the values of secret query parameters replaced by `REDACTED`.
pub fn redact_uri(uri: &Uri) -> String {
    let text = uri.to_string();
    let Some((before, query)) = text.split_once('?') else {
        return text;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() && is_secret(key) => {
                format!("{key}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{before}?{}", pairs.join("&"))
}

fn is_secret(raw_key: &str) -> bool {
    let decoded = serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("{raw_key}="))
        .ok()
        .and_then(|pairs| pairs.into_iter().next())
        .map_or_else(|| raw_key.to_owned(), |(key, _)| key);
    SECRET_PARAMS
        .iter()
        .any(|secret| decoded.trim().eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(uri: &str) -> String {
        redact_uri(&uri.parse::<Uri>().expect("uri"))
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(redact("/events"), "/events");
        assert_eq!(
            redact("/events?channels=a&access_token=eyJ.x.y&x=1"),
            "/events?channels=a&access_token=REDACTED&x=1"
        );
        assert_eq!(
            redact("/sse?access%5Ftoken=abc&Authorization=Basic%20eA"),
            "/sse?access%5Ftoken=REDACTED&Authorization=REDACTED"
        );
        assert_eq!(redact("/sse?access_token="), "/sse?access_token=");
        assert_eq!(redact("/sse?token=abc"), "/sse?token=abc");
    }
}
