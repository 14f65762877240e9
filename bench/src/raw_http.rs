//! A lean HTTP/1.1 client on plain `http://`: an event stream (a single `GET` on a TCP
//! connection bound to a source address, then the decoded body bytes); the connection and
//! response reading that [`crate::raw_client`] shares.
//!
//! The tool holds tens of thousands of streams on the machine it measures, so each costs one
//! socket and a small buffer rather than a general HTTP client's connection state, and a
//! delivery costs one read and a scan; a publish costs two writes and a read. `https://`
//! goes through reqwest instead.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::chunked::Chunked;

/// Bytes read from the socket per call, unless a stream asks for more.
const READ_SIZE: usize = 4096;
/// The longest response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// An open event stream: the response was 2xx and its body follows.
pub struct RawStream {
    conn: Connection,
    body: Framing,
}

/// A TCP connection and the bytes read from it but not yet used.
pub(crate) struct Connection {
    pub(crate) tcp: TcpStream,
    pub(crate) raw: Vec<u8>,
    /// Spare room made before each read.
    read_size: usize,
}

/// How an event stream's connection is made.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// `SO_RCVBUF` set before connecting (a small one makes a reader that stops reading stall
    /// the server's writes early); `None` leaves the kernel's default.
    pub recv_buffer: Option<u32>,
    /// Bytes read per call (large bodies read faster in large reads).
    pub read_size: usize,
    /// Sent as `Last-Event-ID`.
    pub last_event_id: Option<String>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            recv_buffer: None,
            read_size: READ_SIZE,
            last_event_id: None,
        }
    }
}

/// How the response body is delimited.
#[derive(Debug)]
pub(crate) enum Framing {
    Chunked(Chunked),
    Length(u64),
    UntilClose,
}

/// Where requests go: the server's address and the `host` header naming it.
#[derive(Debug, Clone)]
pub struct Target {
    server: SocketAddr,
    pub(crate) host: String,
}

impl Target {
    /// The server at `server`.
    #[cfg(test)]
    pub fn at(server: SocketAddr) -> Self {
        Self {
            server,
            host: server.to_string(),
        }
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Resolves the host of `url` (`http://host:port/...`).
    pub async fn resolve(url: &reqwest::Url) -> Result<Self, String> {
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let server = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        Ok(Self {
            server,
            host: format!("{host}:{port}"),
        })
    }
}

/// The path and query of `url`, as the request line names them.
fn path_of(url: &reqwest::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

impl Connection {
    /// Connects to `target` from `local`.
    pub(crate) async fn open(target: &Target, local: Option<IpAddr>) -> Result<Self, String> {
        Self::open_with(target, local, None, READ_SIZE).await
    }

    /// Connects to `target` from `local`, with a receive buffer of `recv_buffer` bytes.
    async fn open_with(
        target: &Target,
        local: Option<IpAddr>,
        recv_buffer: Option<u32>,
        read_size: usize,
    ) -> Result<Self, String> {
        let socket = if target.server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        if let Some(ip) = local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("cannot bind {ip}: {e}"))?;
        }
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(|e| format!("cannot set SO_RCVBUF: {e}"))?;
        }
        let tcp = socket
            .connect(target.server)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok(Self {
            tcp,
            raw: Vec::with_capacity(read_size),
            read_size,
        })
    }

    async fn read_some(&mut self) -> Result<usize, String> {
        self.raw.reserve(self.read_size);
        self.tcp
            .read_buf(&mut self.raw)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads a response head: its status, how its body is framed, and its `retry-after`.
    pub(crate) async fn read_head(&mut self) -> Result<(u16, Framing, Option<String>), String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.raw).map_err(|e| e.to_string())? {
                httparse::Status::Complete(len) => {
                    let status = response.code.unwrap_or(0);
                    let body = framing(response.headers)?;
                    let retry_after = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned());
                    self.raw.drain(..len);
                    return Ok((status, body, retry_after));
                }
                httparse::Status::Partial if self.raw.len() >= MAX_HEAD => {
                    return Err("response head too long".into());
                }
                httparse::Status::Partial => {
                    if self.read_some().await? == 0 {
                        return Err("connection closed before the response".into());
                    }
                }
            }
        }
    }

    /// Appends the next body bytes to `out`; `false` once the body has ended.
    async fn read_body(&mut self, body: &mut Framing, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let before = out.len();
            let more = match body {
                Framing::Chunked(state) => {
                    let used = state.decode(&self.raw, out)?;
                    self.raw.drain(..used);
                    !state.done()
                }
                Framing::Length(left) => {
                    let take = self
                        .raw
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&self.raw[..take]);
                    self.raw.drain(..take);
                    *left -= take as u64;
                    *left > 0
                }
                Framing::UntilClose => {
                    out.append(&mut self.raw);
                    true
                }
            };
            if !more {
                return Ok(false);
            }
            if out.len() > before {
                return Ok(true);
            }
            if self.read_some().await? == 0 {
                return match body {
                    Framing::UntilClose => Ok(false),
                    _ => Err("connection closed mid-body".into()),
                };
            }
        }
    }

    /// Reads a whole body (up to `limit` bytes are kept).
    pub(crate) async fn read_whole_body(
        &mut self,
        mut body: Framing,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while self.read_body(&mut body, &mut out).await? {
            if out.len() > limit {
                out.truncate(limit);
            }
        }
        Ok(out)
    }
}

/// Opens `url` (`http://host:port/path?query`) from `local` and sends the request, with a
/// connection made as `options` asks. A non-2xx answer is an error naming its status and body.
pub async fn open_with(
    url: &reqwest::Url,
    local: Option<IpAddr>,
    token: Option<&str>,
    options: &StreamOptions,
) -> Result<RawStream, String> {
    let target = Target::resolve(url).await?;
    let mut conn =
        Connection::open_with(&target, local, options.recv_buffer, options.read_size).await?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let resume = options
        .last_event_id
        .as_ref()
        .map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n{auth}{resume}\r\n",
        path_of(url),
        target.host
    );
    conn.tcp
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (status, body, _) = conn.read_head().await?;
    if !(200..300).contains(&status) {
        let text = conn.read_whole_body(body, MAX_HEAD).await?;
        return Err(format!("{status} {}", String::from_utf8_lossy(&text)));
    }
    Ok(RawStream { conn, body })
}

/// The body framing named by the response headers.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, String> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        return Ok(Framing::Chunked(Chunked::default()));
    }
    match value("content-length") {
        Some(n) => n
            .parse()
            .map(Framing::Length)
            .map_err(|_| format!("bad content-length {n:?}")),
        None => Ok(Framing::UntilClose),
    }
}

impl RawStream {
    /// Appends the next body bytes to `out`; `false` once the body has ended.
    pub async fn read_into(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        self.conn.read_body(&mut self.body, out).await
    }

    /// Sets the socket's receive buffer and the size of each read (a stalled reader that
    /// resumes reads faster with room).
    pub fn set_recv_buffer(&mut self, bytes: usize) -> Result<(), String> {
        self.conn.read_size = self.conn.read_size.max(bytes);
        socket2::SockRef::from(&self.conn.tcp)
            .set_recv_buffer_size(bytes)
            .map_err(|e| format!("cannot set SO_RCVBUF: {e}"))
    }
}
