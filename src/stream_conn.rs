//! Lean HTTP/1.1 connections for event streams.
//!
//! An idle subscriber should cost little more than its socket. A general HTTP connection keeps
//! a read buffer and a write buffer of several KiB each for its whole life, which for a
//! long-lived event stream is most of its memory. So plain-HTTP connections are looked at
//! before the general HTTP server gets them: when the first bytes are one complete `GET` of a
//! stream route (`/events`, `/sse`, `/subscribe`) with no body, the request is answered here.
//! It still goes through the same router (authentication, CORS, errors, tracing); only the
//! response is written by this module: the status line and headers, then each body chunk
//! straight from the stream's own buffer with chunked encoding, while a 64-byte read watches
//! for the client going away. The connection closes when the response ends
//! (`connection: close`). Everything else, and anything unusual (a body, pipelined requests,
//! a head split over several packets, an upgrade), is left to the general server untouched,
//! because the bytes are only peeked at.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Response, Version, header};
use axum_server::accept::Accept;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Longest request head looked at; a longer one goes to the general server.
const MAX_HEAD: usize = 8 * 1024;
/// First look at a request head; most fit.
const PEEK_FIRST: usize = 1024;
/// Most headers looked at; more go to the general server.
const MAX_HEADERS: usize = 48;
/// How long a new connection may take to send its first bytes before the general server
/// (with its own timeouts) takes it over.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// Routes served here (after the trailing slash is trimmed, as the router does).
const STREAM_PATHS: [&str; 3] = ["/events", "/sse", "/subscribe"];

/// The router as a cloneable service, as the server runs it.
pub type Service =
    tower::util::BoxCloneSyncService<Request, axum::response::Response, std::convert::Infallible>;

/// An acceptor that sets `TCP_NODELAY` (events are small and must not wait for an ACK) and
/// serves event-stream requests itself; every other connection goes on to the general server.
#[derive(Clone)]
pub struct StreamAcceptor {
    service: Service,
}

impl StreamAcceptor {
    /// An acceptor answering stream requests with `service` (the full router).
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for StreamAcceptor {
    type Stream = TcpStream;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(TcpStream, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let router = self.service.clone();
        Box::pin(async move {
            stream.set_nodelay(true)?;
            let Some((request, head_len)) = peek_stream_request(&stream).await else {
                return Ok((stream, service));
            };
            serve(stream, request, head_len, router).await;
            // Served here: the general server has nothing left to do with it.
            Err(io::Error::other("event stream served"))
        })
    }
}

/// Waits for the first bytes and parses them as a stream request, without consuming them.
/// Returns the request and the length of its head.
async fn peek_stream_request(stream: &TcpStream) -> Option<(Request, usize)> {
    // Most heads fit the small buffer; a full one is looked at again with the large one. The
    // buffers are short-lived, but thousands of connections opening at once would otherwise
    // leave the allocator holding their pages.
    for size in [PEEK_FIRST, MAX_HEAD] {
        let mut buf = vec![0u8; size];
        let n = tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n < size {
            return parse_stream_request(&buf[..n]);
        }
    }
    None
}

/// Parses `bytes` as exactly one complete, bodiless `GET` of a stream route.
fn parse_stream_request(bytes: &[u8]) -> Option<(Request, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    // Bytes after the head would be a pipelined request or a body: not ours.
    if head_len != bytes.len() || parsed.method? != "GET" {
        return None;
    }
    let target = parsed.path?;
    let path = target.split('?').next().unwrap_or(target);
    let trimmed = path.trim_end_matches('/');
    if !STREAM_PATHS.contains(&trimmed) {
        return None;
    }
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(target)
        .version(version)
        .body(Body::empty())
        .ok()?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH && h.value.trim_ascii() != b"0" {
            return None;
        }
        if [header::TRANSFER_ENCODING, header::UPGRADE, header::EXPECT].contains(&name) {
            return None;
        }
        let value = HeaderValue::from_bytes(h.value).ok()?;
        request.headers_mut().append(name, value);
    }
    Some((request, head_len))
}

/// Consumes the request head, runs the router and writes its response.
async fn serve(mut stream: TcpStream, request: Request, head_len: usize, router: Service) {
    let mut head = vec![0u8; head_len];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let version = request.version();
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (reader, writer) = stream.split();
    if let Err(e) = respond(reader, writer, version, response).await {
        tracing::debug!(error = %e, "event stream connection ended");
    }
}

/// Writes `response` on `writer` until its body ends or the client goes away.
async fn respond<R, W>(
    mut reader: R,
    mut writer: W,
    version: Version,
    response: Response<Body>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut parts, mut body) = response.into_parts();
    // A body of known size (an error, say) is sent with its length, as the general server does.
    if let Some(size) = axum::body::HttpBody::size_hint(&body).exact()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(header::CONTENT_LENGTH, size.into());
    }
    // HTTP/1.0 has no chunked encoding: the end of the body is the end of the connection.
    let chunked =
        version == Version::HTTP_11 && !parts.headers.contains_key(header::CONTENT_LENGTH);
    writer.write_all(&response_head(&parts, chunked)).await?;
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        write_data(&mut writer, &data, chunked).await?;
                    }
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => break,
            },
            read = reader.read(&mut scratch) => match read {
                // The client closed its side or the connection broke: stop streaming.
                Ok(0) | Err(_) => return Ok(()),
                // Anything a client sends while it streams is not a request we answer.
                Ok(_) => {}
            },
        }
    }
    if chunked {
        writer.write_all(b"0\r\n\r\n").await?;
    }
    writer.flush().await?;
    writer.shutdown().await
}

/// The status line and headers, with the framing headers this writer uses.
fn response_head(parts: &axum::http::response::Parts, chunked: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = parts.status;
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Writes one body chunk, framed when `chunked`, in as few syscalls as the socket allows.
async fn write_data<W: AsyncWrite + Unpin>(
    writer: &mut W,
    data: &[u8],
    chunked: bool,
) -> io::Result<()> {
    if !chunked {
        return writer.write_all(data).await;
    }
    let size = format!("{:x}\r\n", data.len());
    let mut slices = [
        IoSlice::new(size.as_bytes()),
        IoSlice::new(data),
        IoSlice::new(b"\r\n"),
    ];
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let written = writer.write_vectored(remaining).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_complete_bodiless_stream_gets() {
        let ok = b"GET /events?channels=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n";
        let (request, len) = parse_stream_request(ok).expect("a stream request");
        assert_eq!(len, ok.len());
        assert_eq!(request.uri(), "/events?channels=a");
        assert_eq!(request.headers()["authorization"], "Bearer t");
        assert!(parse_stream_request(b"GET /subscribe/?channels=a HTTP/1.1\r\n\r\n").is_some());
        assert!(parse_stream_request(b"GET /sse HTTP/1.0\r\n\r\n").is_some());

        for other in [
            &b"GET /events HTTP/1.1\r\nHost: x\r\n"[..],
            b"POST /events HTTP/1.1\r\n\r\n",
            b"HEAD /events HTTP/1.1\r\n\r\n",
            b"GET /insert HTTP/1.1\r\n\r\n",
            b"GET /eventsx HTTP/1.1\r\n\r\n",
            b"GET /events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /events HTTP/1.1\r\n\r\nGET /events HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                parse_stream_request(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[tokio::test]
    async fn writes_chunked_and_fixed_length_responses() {
        let (client, server) = tokio::io::duplex(4096);
        let (server_read, server_write) = tokio::io::split(server);
        let body = Body::from_stream(futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"data: 1\n\n")),
            Ok(bytes::Bytes::from_static(b"")),
            Ok(bytes::Bytes::from_static(b"data: 22\n\n")),
        ]));
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .expect("response");
        let (mut client_read, _client_write) = tokio::io::split(client);
        respond(server_read, server_write, Version::HTTP_11, response)
            .await
            .expect("written");
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("content-type: text/event-stream\r\n"), "{out}");
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(
            out.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n0\r\n\r\n"),
            "{out}"
        );

        let (client, server) = tokio::io::duplex(4096);
        let (server_read, server_write) = tokio::io::split(server);
        let (mut client_read, _client_write) = tokio::io::split(client);
        let response = axum::response::IntoResponse::into_response((
            axum::http::StatusCode::UNAUTHORIZED,
            "x",
        ));
        respond(server_read, server_write, Version::HTTP_11, response)
            .await
            .expect("written");
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
        assert!(out.contains("content-length: 1\r\n"), "{out}");
        assert!(!out.contains("chunked"), "{out}");
        assert!(out.ends_with("connection: close\r\n\r\nx"), "{out}");
    }

    #[tokio::test]
    async fn stops_when_the_client_goes_away() {
        let (client, server) = tokio::io::duplex(4096);
        let (server_read, server_write) = tokio::io::split(server);
        // A stream with nothing to send, like an idle subscriber.
        let response = Response::new(Body::from_stream(futures_util::stream::pending::<
            Result<bytes::Bytes, std::convert::Infallible>,
        >()));
        let writer = tokio::spawn(respond(
            server_read,
            server_write,
            Version::HTTP_11,
            response,
        ));
        let (mut client_read, client_write) = tokio::io::split(client);
        let mut head = [0u8; 12];
        client_read.read_exact(&mut head).await.expect("head");
        assert_eq!(&head, b"HTTP/1.1 200");
        drop((client_read, client_write));
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer stops once the client is gone")
            .expect("no panic")
            .expect("a client leaving is not an error");
    }
}
