//! A lean HTTP/1.1 client on plain `http://`: an event stream (a single `GET` on a TCP
//! connection bound to a source address, then the decoded body bytes), and a kept-alive
//! client for the publishers' POSTs.
//!
//! The tool holds tens of thousands of streams on the machine it measures, so each costs one
//! socket and a small buffer rather than a general HTTP client's connection state, and a
//! delivery costs one read and a scan; a publish costs two writes and a read. `https://`
//! goes through reqwest instead.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes read from the socket per call.
const READ_SIZE: usize = 4096;
/// The longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An open event stream: the response was 2xx and its body follows.
pub struct RawStream {
    conn: Connection,
    body: Framing,
}

/// A TCP connection and the bytes read from it but not yet used.
struct Connection {
    tcp: TcpStream,
    raw: Vec<u8>,
}

/// How the response body is delimited.
#[derive(Debug)]
enum Framing {
    Chunked(Chunked),
    Length(u64),
    UntilClose,
}

/// Where requests go: the server's address and the `host` header naming it.
#[derive(Debug, Clone)]
pub struct Target {
    server: SocketAddr,
    host: String,
}

impl Target {
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
    async fn open(target: &Target, local: Option<IpAddr>) -> Result<Self, String> {
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
        let tcp = socket
            .connect(target.server)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok(Self {
            tcp,
            raw: Vec::with_capacity(READ_SIZE),
        })
    }

    async fn read_some(&mut self) -> Result<usize, String> {
        self.raw.reserve(READ_SIZE);
        self.tcp
            .read_buf(&mut self.raw)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads a response head: its status and how its body is framed.
    async fn read_head(&mut self) -> Result<(u16, Framing), String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.raw).map_err(|e| e.to_string())? {
                httparse::Status::Complete(len) => {
                    let status = response.code.unwrap_or(0);
                    let body = framing(response.headers)?;
                    self.raw.drain(..len);
                    return Ok((status, body));
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
    async fn read_whole_body(
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

/// Opens `url` (`http://host:port/path?query`) from `local` and sends the request.
/// A non-2xx answer is an error naming its status and body.
pub async fn open(
    url: &reqwest::Url,
    local: Option<IpAddr>,
    token: Option<&str>,
) -> Result<RawStream, String> {
    let target = Target::resolve(url).await?;
    let mut conn = Connection::open(&target, local).await?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n{auth}\r\n",
        path_of(url),
        target.host
    );
    conn.tcp
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (status, body) = conn.read_head().await?;
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

    /// POSTs `body` (JSON) to `path`; returns the status once the whole response is read.
    pub async fn post_json(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<u16, String> {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n{auth}\r\n",
            self.target.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        // A kept-alive connection the server has closed meanwhile fails before any answer:
        // the request was not taken, so it goes again once on a new connection.
        let reused = self.conn.is_some();
        match self.exchange(&request).await {
            Err(Failure::Unanswered(_)) if reused => {}
            Err(Failure::Unanswered(e) | Failure::Broken(e)) => return Err(e),
            Ok(status) => return Ok(status),
        }
        self.exchange(&request)
            .await
            .map_err(|(Failure::Unanswered(e) | Failure::Broken(e))| e)
    }

    /// Sends one request and reads its whole response, on the open connection or a new one.
    async fn exchange(&mut self, request: &[u8]) -> Result<u16, Failure> {
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
            let (status, framing) = conn.read_head().await.map_err(|e| {
                if conn.raw.is_empty() {
                    Failure::Unanswered(e)
                } else {
                    Failure::Broken(e)
                }
            })?;
            let close = matches!(framing, Framing::UntilClose);
            conn.read_whole_body(framing, MAX_HEAD)
                .await
                .map_err(Failure::Broken)?;
            Ok((status, close))
        }
        .await;
        match result {
            Ok((status, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(status)
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

/// Decoder state of a chunked body.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a size line.
    #[default]
    Size,
    /// This many data bytes to go.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// The last chunk was read.
    Done,
}

/// The longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 1024;

impl Chunked {
    /// Decodes what it can of `raw` into `out`; returns how many bytes of `raw` it used.
    pub fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        loop {
            let rest = &raw[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > MAX_SIZE_LINE {
                            return Err("chunk size line too long".into());
                        }
                        return Ok(at);
                    };
                    let line = String::from_utf8_lossy(&rest[..end]);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {hex:?}"))?;
                    at += end + 2;
                    self.state = if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = left.min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }

    /// Whether the last chunk has been read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(wire: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut decoder = Chunked::default();
        let mut raw = Vec::new();
        let mut out = Vec::new();
        for part in wire.chunks(piece) {
            raw.extend_from_slice(part);
            let used = decoder.decode(&raw, &mut out).expect("valid framing");
            raw.drain(..used);
        }
        (out, decoder.done())
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for piece in 1..=wire.len() {
            let (out, done) = decode_in_pieces(wire, piece);
            assert_eq!(out, b"hello, world", "pieces of {piece}");
            assert!(done);
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (out, done) = decode_in_pieces(b"3\r\nabc\r\n4\r\nde", 4);
        assert_eq!(out, b"abcde");
        assert!(!done);
    }

    #[test]
    fn bad_framing_is_an_error() {
        let mut out = Vec::new();
        assert!(Chunked::default().decode(b"zz\r\n", &mut out).is_err());
        assert!(Chunked::default().decode(b"1\r\nabc", &mut out).is_err());
        let long = vec![b'1'; MAX_SIZE_LINE + 1];
        assert!(Chunked::default().decode(&long, &mut out).is_err());
    }
}
