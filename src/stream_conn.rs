//! Lean HTTP/1.1 connections for event streams.
//!
//! An idle subscriber should cost little more than its socket. A general HTTP connection keeps
//! a read buffer and a write buffer of several KiB each for its whole life, which for a
//! long-lived event stream is most of its memory. So plain-HTTP connections are looked at
//! before the general HTTP server gets them: when the first bytes are one complete `GET` of a
//! stream route (`/events`, `/sse`, `/subscribe`, `/.well-known/mercure`) with no body, the request is answered here.
//! It still goes through the same router (authentication, CORS, errors, tracing); only the
//! response is written by this module: the status line and headers, then each body chunk
//! straight from the stream's own buffer with chunked encoding, while a 64-byte read watches
//! for the client going away. The connection closes when the response ends
//! (`connection: close`). Everything else, and anything unusual (a body, pipelined requests,
//! an upgrade, a head longer than 8 KiB), is left to the general server untouched, because
//! the bytes are only peeked at. Every plain connection's head is waited for here, so a client
//! that sends part of a request and then nothing holds no HTTP connection buffers.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Response, Version, header};
use axum_server::accept::Accept;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::conn::{ConnSlot, Tracked};

/// Longest request head looked at; a longer one goes to the general server.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// First look at a request head; most fit.
const PEEK_FIRST: usize = 1024;
/// Most headers looked at; more go to the general server.
const MAX_HEADERS: usize = 48;
/// How long a stream's write may wait for its client before the connection is closed, unless
/// configured otherwise.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Routes served here (after the trailing slash is trimmed, as the router does).
const STREAM_PATHS: [&str; 4] = ["/events", "/sse", "/subscribe", "/.well-known/mercure"];

/// The router as a cloneable service, as the server runs it.
pub type Service =
    tower::util::BoxCloneSyncService<Request, axum::response::Response, std::convert::Infallible>;

/// An acceptor, behind admission ([`crate::conn::AdmitAcceptor`]), that serves event-stream
/// requests itself; every other connection goes on to the general server. Admission's header
/// timeout and eviction close a connection still waiting for its first bytes here too.
///
/// A stream is served in a task of its own, apart from the general server's connection task:
/// that task is sized for any HTTP connection, and an idle subscriber should cost only what a
/// stream needs. [`StreamAcceptor::streams`] tracks those tasks for shutdown.
#[derive(Clone)]
pub struct StreamAcceptor {
    service: Service,
    streams: TaskTracker,
    write_timeout: Duration,
    /// The runtime streams are served on, when not the accepting one.
    runtime: Option<Handle>,
}

impl StreamAcceptor {
    /// An acceptor answering stream requests with `service` (the full router).
    pub fn new(service: Service) -> Self {
        Self {
            service,
            streams: TaskTracker::new(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            runtime: None,
        }
    }

    /// Serves streams on `runtime` (`None`: the runtime that accepted them). The sockets stay
    /// registered with the accepting runtime's I/O driver, which only wakes a stream when its
    /// client goes or its socket drains; moving them to the stream runtime's driver cost about
    /// 400 bytes per idle stream (two registrations' worth, in two threads' heaps).
    pub fn on_runtime(mut self, runtime: Option<Handle>) -> Self {
        self.runtime = runtime;
        self
    }

    /// Closes a stream whose client takes none of its bytes for `timeout` (`--write-timeout`).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The tasks serving streams, to wait for at shutdown.
    pub fn streams(&self) -> TaskTracker {
        self.streams.clone()
    }

    /// Serves the stream `request` (already parsed, its head `head_len` bytes still to be read
    /// from `io`) on `io` in a task of its own, as for a plain connection: the TLS path's lean
    /// streams.
    pub(crate) fn spawn<IO>(&self, io: IO, slot: ConnSlot, request: Request, head_len: usize)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let start = StreamStart {
            io,
            slot,
            request,
            head_len,
            router: self.service.clone(),
            write_timeout: self.write_timeout,
        };
        spawn_stream(&self.streams, self.runtime.as_ref(), start);
    }
}

/// What a stream task starts from.
struct StreamStart<IO> {
    io: IO,
    slot: ConnSlot,
    request: Request,
    head_len: usize,
    router: Service,
    write_timeout: Duration,
}

/// Spawns the task serving `start` on `runtime` (else the current one), tracked by `streams`.
fn spawn_stream<IO>(streams: &TaskTracker, runtime: Option<&Handle>, start: StreamStart<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let StreamStart {
        io,
        slot,
        request,
        head_len,
        router,
        write_timeout,
    } = start;
    let task = serve(io, slot, Box::new(request), head_len, router, write_timeout);
    match runtime {
        None => {
            streams.spawn(task);
        }
        Some(runtime) => {
            streams.spawn_on(task, runtime);
        }
    }
}

impl<S: Send + 'static> Accept<Tracked<TcpStream>, S> for StreamAcceptor {
    type Stream = Tracked<TcpStream>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Tracked<TcpStream>, S)>> + Send>>;

    fn accept(&self, stream: Tracked<TcpStream>, service: S) -> Self::Future {
        let router = self.service.clone();
        let streams = self.streams.clone();
        let write_timeout = self.write_timeout;
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let Some((mut request, head_len)) = peek_stream_request(&stream).await? else {
                return Ok((stream, service));
            };
            // The general server gives handlers the peer address; so does this path.
            if let Ok(peer) = stream.get_ref().peer_addr() {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            let Some((stream, slot)) = stream.into_stream() else {
                return Err(io::Error::other("connection closed by admission"));
            };
            spawn_stream(
                &streams,
                runtime.as_ref(),
                StreamStart {
                    io: stream,
                    slot,
                    request,
                    head_len,
                    router,
                    write_timeout,
                },
            );
            // Served apart: the general server has nothing left to do with it.
            Err(io::Error::other("event stream served apart"))
        })
    }
}

/// Waits for a complete request head and parses it as a stream request, without consuming
/// it. Returns the request and the length of its head, or `None` for anything else (another
/// request, bytes that are not HTTP/1, a head longer than [`MAX_HEAD`], or the client closing).
///
/// A head that arrives in pieces is waited for here, with no buffer held between pieces: a
/// connection that sends part of a request and then nothing (a slow or hostile client) costs
/// this small future rather than the general server's connection buffers, until admission's
/// header timeout closes it.
///
/// # Errors
/// When the connection fails or admission closes it before its head is complete (header
/// timeout, eviction).
async fn peek_stream_request(stream: &Tracked<TcpStream>) -> io::Result<Option<(Request, usize)>> {
    let mut seen = 0;
    let mut size = PEEK_FIRST;
    loop {
        // Most heads fit the small buffer; a full one is looked at again with the large one.
        // The buffers are short-lived, but thousands of connections opening at once would
        // otherwise leave the allocator holding their pages.
        let mut buf = vec![0u8; size];
        let n = stream.peek_beyond(&mut buf, seen).await?;
        let bytes = &buf[..n];
        // Nothing more will come (the client closed its side), or the head is complete.
        if n <= seen || !head_pending(bytes) {
            return Ok(parse_stream_request(bytes));
        }
        if n == size {
            if size == MAX_HEAD {
                return Ok(None);
            }
            size = MAX_HEAD;
        }
        seen = n;
    }
}

/// Whether `bytes` are the valid beginning of an HTTP/1 request head that is not complete yet.
pub(crate) fn head_pending(bytes: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    matches!(
        httparse::Request::new(&mut headers).parse(bytes),
        Ok(httparse::Status::Partial)
    )
}

/// Parses `bytes` as exactly one complete, bodiless `GET` of a stream route. Public only for
/// the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn parse_stream_request(bytes: &[u8]) -> Option<(Request, usize)> {
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
///
/// While the response streams, this future holds only the socket and a [`BodyWriter`]: the
/// request, the router's future and the response head live in a box that is gone by then.
///
/// `slot` keeps the connection counted (and its address's share taken) until it closes.
async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(
    mut stream: IO,
    slot: ConnSlot,
    request: Box<Request>,
    head_len: usize,
    router: Service,
    write_timeout: Duration,
) {
    let _slot = slot;
    let started = Box::pin(async {
        let mut head = vec![0u8; head_len];
        stream.read_exact(&mut head).await.ok()?;
        let version = request.version();
        let response = match router.oneshot(*request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (head, body, chunked) = response_parts(response, version);
        stream.write_all(&head).await.ok()?;
        Some((body, chunked))
    })
    .await;
    let Some((body, chunked)) = started else {
        return;
    };
    if let Err(e) = BodyWriter::new(&mut stream, body, chunked, write_timeout).await {
        tracing::debug!(error = %e, "event stream connection ended");
    }
}

/// The response head to write, the body, and whether the body goes chunked.
fn response_parts(response: Response<Body>, version: Version) -> (Vec<u8>, Body, bool) {
    let (mut parts, body) = response.into_parts();
    // A body of known size (an error, say) is sent with its length, as the general server does.
    if let Some(size) = axum::body::HttpBody::size_hint(&body).exact()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(header::CONTENT_LENGTH, size.into());
    }
    // HTTP/1.0 has no chunked encoding: the end of the body is the end of the connection.
    let chunked =
        version == Version::HTTP_11 && !parts.headers.contains_key(header::CONTENT_LENGTH);
    (response_head(&parts, chunked), body, chunked)
}

/// Writes `response` on `io` until its body ends or the client goes away.
#[cfg(test)]
async fn respond<IO>(io: &mut IO, version: Version, response: Response<Body>) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (head, body, chunked) = response_parts(response, version);
    io.write_all(&head).await?;
    BodyWriter::new(io, body, chunked, DEFAULT_WRITE_TIMEOUT).await
}

/// Reads a client may make while its stream is idle before the writer yields.
const READS_PER_POLL: usize = 16;
/// Bytes after which a write takes no more of the body's ready frames.
const MAX_WRITE: usize = crate::stream::MAX_WRITE;
/// Frames joined into one write (one chunk when chunked) at most.
const MAX_FRAMES: usize = 256;
/// Buffers handed to one vectored write at most.
const MAX_SLICES: usize = 64;

/// Writes a response body straight from the body's own buffers, joining the frames that are
/// ready into one vectored write (one chunk, framed, when chunked) without copying them,
/// while watching the client's side of the connection for its going away.
///
/// Hand-written rather than an `async fn` so an idle stream's state is just these fields:
/// the connection's largest per-subscriber cost after the socket itself.
struct BodyWriter<'a, IO> {
    io: &'a mut IO,
    body: Body,
    chunked: bool,
    /// The chunk-size line of the chunk being written, and how much of it is left.
    size_line: [u8; 20],
    size_at: u8,
    size_end: u8,
    /// The first frame of the write not yet written.
    data: Bytes,
    /// The write's other frames, in order (allocated only while a write has several).
    more: VecDeque<Bytes>,
    /// How many bytes of the chunk's closing CRLF are left.
    crlf_left: u8,
    /// The body has no more frames.
    body_done: bool,
    /// Everything is queued, the terminator too when chunked.
    ended: bool,
    /// How long a write may make no progress.
    write_timeout: Duration,
    /// Armed while a write waits for the client to take bytes: a client that takes none for
    /// `write_timeout` is cut off, and resumes with `Last-Event-ID`. Boxed and only while
    /// waiting, so an idle stream pays one pointer for it.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, IO: AsyncRead + AsyncWrite + Unpin> BodyWriter<'a, IO> {
    fn new(io: &'a mut IO, body: Body, chunked: bool, write_timeout: Duration) -> Self {
        Self {
            io,
            body,
            chunked,
            size_line: [0; 20],
            size_at: 0,
            size_end: 0,
            data: Bytes::new(),
            more: VecDeque::new(),
            crlf_left: 0,
            body_done: false,
            ended: false,
            write_timeout,
            stall: None,
        }
    }

    /// Frames the write gathered in `data` and `more`, `len` bytes in all (the last chunk,
    /// `0`, when empty and chunked).
    fn frame(&mut self, len: usize) {
        if self.chunked {
            self.size_at = 0;
            self.size_end = chunk_size_line(len, &mut self.size_line);
            self.crlf_left = 2;
        }
    }

    fn pending(&self) -> bool {
        self.size_at < self.size_end || !self.data.is_empty() || self.crlf_left > 0
    }

    /// Marks `n` written bytes done, in order: size line, frames, CRLF.
    fn advance(&mut self, mut n: usize) {
        let size_left = usize::from(self.size_end - self.size_at);
        let from_size = n.min(size_left);
        self.size_at += from_size as u8;
        n -= from_size;
        while n > 0 && !self.data.is_empty() {
            let from_data = n.min(self.data.len());
            self.data.advance(from_data);
            n -= from_data;
            if self.data.is_empty() {
                self.next_frame();
            }
        }
        self.crlf_left -= n.min(usize::from(self.crlf_left)) as u8;
    }

    /// Moves the next gathered frame to `data`, giving `more`'s buffer back once it is empty.
    fn next_frame(&mut self) {
        self.data = self.more.pop_front().unwrap_or_default();
        if self.more.is_empty() && self.more.capacity() > 0 {
            self.more = VecDeque::new();
        }
    }

    /// Takes the body's frames that are ready, up to one write's worth: how many bytes were
    /// taken, or the body's error.
    fn gather(&mut self, cx: &mut Context<'_>) -> Result<usize, io::Error> {
        let (mut len, mut taken) = (0, 0);
        while !self.body_done && len < MAX_WRITE && taken < MAX_FRAMES {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    len += data.len();
                    taken += 1;
                    if self.data.is_empty() {
                        self.data = data;
                    } else {
                        self.more.push_back(data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e)),
                Poll::Ready(None) => {
                    self.body_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        Ok(len)
    }

    /// Writes what is pending with one vectored write: `Ready(n)` for the bytes taken.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let crlf = b"\r\n";
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        slices[0] =
            IoSlice::new(&self.size_line[usize::from(self.size_at)..usize::from(self.size_end)]);
        slices[1] = IoSlice::new(&self.data);
        let mut used = 2;
        for frame in self.more.iter().take(MAX_SLICES - 3) {
            slices[used] = IoSlice::new(frame);
            used += 1;
        }
        if used - 2 == self.more.len() {
            slices[used] = IoSlice::new(&crlf[2 - usize::from(self.crlf_left)..]);
            used += 1;
        }
        Pin::new(&mut *self.io).poll_write_vectored(cx, &slices[..used])
    }

    /// A write waits for the client: arms the stall timer (or polls it), and fails once it has
    /// run out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no bytes for the write timeout",
            )));
        }
        Poll::Pending
    }

    /// Whether the client has gone: reads (and ignores) what it sends until none is waiting.
    fn client_gone(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut scratch = [0u8; 64];
        for _ in 0..READS_PER_POLL {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *self.io).poll_read(cx, &mut buf) {
                // The client closed its side or the connection broke: stop streaming.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(true),
                Poll::Ready(Err(_)) => return Poll::Ready(true),
                // Anything a client sends while it streams is not a request we answer.
                Poll::Ready(Ok(())) => {}
                Poll::Pending => return Poll::Ready(false),
            }
        }
        // A client that keeps sending: come back to it after others have run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for BodyWriter<'_, IO> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.client_gone(cx) {
            Poll::Ready(true) => return Poll::Ready(Ok(())),
            Poll::Ready(false) => {}
            Poll::Pending => return Poll::Pending,
        }
        loop {
            if this.pending() {
                match this.poll_write_pending(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        this.advance(n);
                        this.stall = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return this.stalled(cx),
                }
                continue;
            }
            if this.ended {
                ready!(Pin::new(&mut *this.io).poll_flush(cx))?;
                return Pin::new(&mut *this.io).poll_shutdown(cx);
            }
            let len = this.gather(cx)?;
            if len > 0 {
                this.frame(len);
            } else if this.body_done {
                this.ended = true;
                this.frame(0);
            } else {
                // Nothing to send: what the connection still holds (a TLS record the socket
                // did not take whole) goes out, and the stream waits for its next event.
                return match Pin::new(&mut *this.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        this.stall = None;
                        Poll::Pending
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => this.stalled(cx),
                };
            }
        }
    }
}

/// Writes a chunk's size line (`n` in hex, then CRLF) at the start of `line` and returns its
/// length: at most 16 digits and CRLF, so it always fits. Written by hand because it runs
/// once per write to every subscriber, where the formatting machinery is a measurable cost.
fn chunk_size_line(n: usize, line: &mut [u8; 20]) -> u8 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, byte) in line[..digits].iter_mut().rev().enumerate() {
        *byte = HEX[(n >> (4 * i)) & 0xf];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    // `digits` is at most 16.
    (digits + 2) as u8
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn an_idle_streams_writer_state_stays_small() {
        // Every idle subscriber holds one of these: it is most of what a stream costs after
        // its socket.
        let size = std::mem::size_of::<BodyWriter<'static, TcpStream>>();
        assert!(size <= 160, "{size} bytes");
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            3000,
            65535,
            1 << 40,
            usize::MAX,
        ] {
            let mut line = [0u8; 20];
            let len = usize::from(chunk_size_line(n, &mut line));
            assert_eq!(&line[..len], format!("{n:x}\r\n").as_bytes(), "{n}");
        }
    }

    #[tokio::test]
    async fn writes_chunked_and_fixed_length_responses() {
        let (client, mut server) = tokio::io::duplex(4096);
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
        respond(&mut server, Version::HTTP_11, response)
            .await
            .expect("written");
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("content-type: text/event-stream\r\n"), "{out}");
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        // Frames that are ready together go out as one chunk.
        assert!(
            out.ends_with("\r\n\r\n13\r\ndata: 1\n\ndata: 22\n\n\r\n0\r\n\r\n"),
            "{out}"
        );

        let (client, mut server) = tokio::io::duplex(4096);
        let (mut client_read, _client_write) = tokio::io::split(client);
        let response = axum::response::IntoResponse::into_response((
            axum::http::StatusCode::UNAUTHORIZED,
            "x",
        ));
        respond(&mut server, Version::HTTP_11, response)
            .await
            .expect("written");
        let mut out = String::new();
        client_read.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
        assert!(out.contains("content-length: 1\r\n"), "{out}");
        assert!(!out.contains("chunked"), "{out}");
        assert!(out.ends_with("connection: close\r\n\r\nx"), "{out}");
    }

    /// A connection that takes at most `step` bytes per write, across the buffers of a
    /// vectored write, and records them.
    struct Trickle {
        step: usize,
        out: Vec<u8>,
        writes: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            // A client that sends nothing and stays.
            Poll::Pending
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            let mut left = this.step;
            for buf in bufs {
                let n = left.min(buf.len());
                this.out.extend_from_slice(&buf[..n]);
                left -= n;
            }
            Poll::Ready(Ok(this.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn ready_frames_are_joined_into_one_chunk_however_the_writes_split_them() {
        let frames: Vec<String> = (0..300)
            .map(|i| format!("id: {i}\ndata: {i}\n\n"))
            .collect();
        let joined: String = frames.concat();
        for step in [1, 7, 64, 100_000] {
            let body = Body::from_stream(futures_util::stream::iter(
                frames
                    .clone()
                    .into_iter()
                    .map(|f| Ok::<_, std::convert::Infallible>(Bytes::from(f))),
            ));
            let mut io = Trickle {
                step,
                out: Vec::new(),
                writes: 0,
            };
            BodyWriter::new(&mut io, body, true, DEFAULT_WRITE_TIMEOUT)
                .await
                .expect("written");
            // At most MAX_FRAMES frames per chunk: 256, then the other 44.
            let first: String = frames[..MAX_FRAMES].concat();
            let second: String = frames[MAX_FRAMES..].concat();
            let expected = format!(
                "{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
                first.len(),
                second.len()
            );
            assert_eq!(String::from_utf8_lossy(&io.out), expected, "step {step}");
            assert_eq!(first.len() + second.len(), joined.len());
            if step == 100_000 {
                // No more than MAX_SLICES buffers per write: 256 frames take 5 writes.
                assert_eq!(io.writes, 5 + 1 + 1, "step {step}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_cut_off_after_the_write_timeout() {
        let (client, mut server) = tokio::io::duplex(1024);
        // An endless body, like a busy stream.
        let body = Body::from_stream(futures_util::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(&[b'x'; 512]))
        }));
        let response = Response::new(body);
        let (head, body, chunked) = response_parts(response, Version::HTTP_11);
        let (mut client_read, _client_write) = tokio::io::split(client);
        let mut first = [0u8; 12];
        let writer = tokio::spawn(async move {
            server.write_all(&head).await?;
            BodyWriter::new(&mut server, body, chunked, Duration::from_secs(30)).await
        });
        client_read.read_exact(&mut first).await.expect("head");
        // The client stops reading; the paused clock jumps to the timeout.
        let started = tokio::time::Instant::now();
        let err = writer
            .await
            .expect("no panic")
            .expect_err("a stalled client is cut off");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn stops_when_the_client_goes_away() {
        let (client, mut server) = tokio::io::duplex(4096);
        // A stream with nothing to send, like an idle subscriber.
        let response = Response::new(Body::from_stream(futures_util::stream::pending::<
            Result<bytes::Bytes, std::convert::Infallible>,
        >()));
        let writer =
            tokio::spawn(async move { respond(&mut server, Version::HTTP_11, response).await });
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
