//! The lean client's requests: a kept-alive connection for the publishers' POSTs (reconnecting
//! when the server closes it), or a one-off request on a connection of its own (probes).

use std::net::IpAddr;

use tokio::io::AsyncWriteExt;

use crate::raw_http::{Connection, Framing, MAX_HEAD, Target};

/// A whole response: its status and (the first 16 KiB of) its body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, cut at 16 KiB.
    pub body: Vec<u8>,
    /// The `retry-after` header, if any.
    pub retry_after: Option<String>,
}

/// A kept-alive connection for requests with JSON bodies, one at a time, reconnecting when
/// the server closes it: the publishers' client, as lean as the streams'.
pub struct RawClient {
    target: Target,
    local: Option<IpAddr>,
    conn: Option<Connection>,
}

impl RawClient {
    /// A client connected to the server of `url` (it reconnects when the server closes).
    pub async fn connect(url: &reqwest::Url, local: Option<IpAddr>) -> Result<Self, String> {
        let target = Target::resolve(url).await?;
        let conn = Connection::open(&target, local).await?;
        Ok(Self {
            target,
            local,
            conn: Some(conn),
        })
    }

    /// A client that connects at its first request (which is then not sent twice): with a
    /// `connection: close` header, a one-off request on a connection of its own.
    pub fn lazy(target: Target, local: Option<IpAddr>) -> Self {
        Self {
            target,
            local,
            conn: None,
        }
    }

    /// The source address it connects from.
    pub fn local(&self) -> Option<IpAddr> {
        self.local
    }

    /// POSTs `body` (JSON) to `path`; returns the response once it is read whole.
    pub async fn post_json(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<Response, String> {
        self.post(path, token, "application/json", body).await
    }

    /// POSTs `body` of `content_type` to `path`; returns the response once it is read whole.
    pub async fn post(
        &mut self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, String> {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let headers = format!("content-type: {content_type}\r\n{auth}");
        self.request("POST", path, &headers, Some(body)).await
    }

    /// Sends `method path` with `headers` (each line ending in CRLF) and a body when given;
    /// returns the response once it is read whole.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        let length = body.map_or(String::new(), |b| {
            format!("content-length: {}\r\n", b.len())
        });
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{headers}{length}\r\n",
            self.target.host,
        )
        .into_bytes();
        request.extend_from_slice(body.unwrap_or_default());
        // A kept-alive connection the server has closed meanwhile fails before any answer:
        // the request was not taken, so it goes again once on a new connection.
        let reused = self.conn.is_some();
        match self.exchange(&request).await {
            Err(Failure::Unanswered(_)) if reused => {}
            Err(Failure::Unanswered(e) | Failure::Broken(e)) => return Err(e),
            Ok(response) => return Ok(response),
        }
        self.exchange(&request)
            .await
            .map_err(|(Failure::Unanswered(e) | Failure::Broken(e))| e)
    }

    /// Sends one request and reads its whole response, on the open connection or a new one.
    async fn exchange(&mut self, request: &[u8]) -> Result<Response, Failure> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(
                Connection::open(&self.target, self.local)
                    .await
                    .map_err(Failure::Broken)?,
            ),
        };
        let result = async {
            conn.tcp
                .write_all(request)
                .await
                .map_err(|e| Failure::Unanswered(e.to_string()))?;
            let (status, framing, retry_after) = conn.read_head().await.map_err(|e| {
                if conn.raw.is_empty() {
                    Failure::Unanswered(e)
                } else {
                    Failure::Broken(e)
                }
            })?;
            let close = matches!(framing, Framing::UntilClose);
            let body = conn
                .read_whole_body(framing, MAX_HEAD)
                .await
                .map_err(Failure::Broken)?;
            Ok((
                Response {
                    status,
                    body,
                    retry_after,
                },
                close,
            ))
        }
        .await;
        match result {
            Ok((response, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Why an exchange failed.
enum Failure {
    /// Nothing came back: the server did not take the request.
    Unanswered(String),
    /// The connection broke mid-answer, or could not be made.
    Broken(String),
}
