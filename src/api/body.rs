//! The JSON request body extractor: every failure becomes a JSON error with the right status
//! (415 not JSON, 413 over `--max-body`, 408 not received within `--body-timeout`, 400
//! malformed or invalid).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body deserialized into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Err(e) = check_content_type(&req) {
            drain(req.into_body()).await;
            return Err(e);
        }
        let limit = usize::try_from(state.config.max_body).unwrap_or(usize::MAX);
        let too_large = || {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared.filter(|&len| len > state.config.max_body) {
            if len <= state.config.max_body.saturating_add(DRAIN_MAX as u64) {
                drain(req.into_body()).await;
            }
            return Err(too_large());
        }
        let timeout = state.config.body_timeout();
        let bytes = tokio::time::timeout(timeout, read_limited(req.into_body(), limit))
            .await
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    format!("request body not received within {} s", timeout.as_secs()),
                )
            })?
            .map_err(|e| match e {
                ReadError::TooLarge => too_large(),
                ReadError::Io(e) => ApiError::bad_request(format!("cannot read request body: {e}")),
            })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty: expected a JSON object",
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_data() {
                ApiError::bad_request(format!("invalid request: {e}"))
            } else {
                ApiError::bad_request(format!("malformed JSON: {e}"))
            }
        })
    }
}

/// 415 when the request declares a content type that is not JSON. A missing type is accepted
/// as JSON, for hand-written clients.
fn check_content_type(req: &Request) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type: application/json, got '{essence}'"),
        ))
    }
}

enum ReadError {
    TooLarge,
    Io(axum::Error),
}

/// How much of a refused body is still read (and thrown away) before the answer, and for how
/// long. A server that answers before the client has sent its whole body and then closes
/// the connection makes the kernel reset it, and the client may see that reset instead of
/// the error; reading a modest remainder first lets the client receive the JSON error.
const DRAIN_MAX: usize = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards up to [`DRAIN_MAX`] bytes of `body` for at most [`DRAIN_TIME`].
async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, bytes::Bytes::len);
            if read > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// Reads the whole body if it is at most `limit` bytes; a larger one is drained and refused.
async fn read_limited(mut body: Body, limit: usize) -> Result<bytes::Bytes, ReadError> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                ReadError::TooLarge
            } else {
                ReadError::Io(e)
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body).await;
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
