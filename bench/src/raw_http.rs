//! A lean HTTP/1.1 client for one event stream on plain `http://`: a single `GET` on a TCP
//! connection bound to a source address, then the decoded body bytes.
//!
//! The tool holds tens of thousands of these on the machine it measures, so each costs one
//! socket and a small buffer rather than a general HTTP client's connection state, and a
//! delivery costs one read and a scan. `https://` streams go through reqwest instead.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes read from the socket per call.
const READ_SIZE: usize = 4096;
/// The longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An open event stream: the response was 2xx and its body follows.
pub struct RawStream {
    tcp: TcpStream,
    /// Bytes read from the socket and not yet decoded.
    raw: Vec<u8>,
    body: Framing,
}

/// How the response body is delimited.
#[derive(Debug)]
enum Framing {
    Chunked(Chunked),
    Length(u64),
    UntilClose,
}

/// Opens `url` (`http://host:port/path?query`) from `local` and sends the request.
/// A non-2xx answer is an error naming its status and body.
pub async fn open(
    url: &reqwest::Url,
    local: Option<IpAddr>,
    token: Option<&str>,
) -> Result<RawStream, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let server: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let socket = if server.is_ipv4() {
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
    let mut tcp = socket.connect(server).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\naccept: text/event-stream\r\n{auth}\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;

    let mut raw = Vec::with_capacity(READ_SIZE);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&raw).map_err(|e| e.to_string())? {
            httparse::Status::Complete(len) => {
                let status = response.code.unwrap_or(0);
                let body = framing(response.headers)?;
                raw.drain(..len);
                let mut stream = RawStream { tcp, raw, body };
                if !(200..300).contains(&status) {
                    let mut text = Vec::new();
                    while text.len() < MAX_HEAD && stream.read_into(&mut text).await? {}
                    return Err(format!("{status} {}", String::from_utf8_lossy(&text)));
                }
                return Ok(stream);
            }
            httparse::Status::Partial if raw.len() >= MAX_HEAD => {
                return Err("response head too long".into());
            }
            httparse::Status::Partial => {
                if read_some(&mut tcp, &mut raw).await? == 0 {
                    return Err("connection closed before the response".into());
                }
            }
        }
    }
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

async fn read_some(tcp: &mut TcpStream, raw: &mut Vec<u8>) -> Result<usize, String> {
    raw.reserve(READ_SIZE);
    tcp.read_buf(raw).await.map_err(|e| e.to_string())
}

impl RawStream {
    /// Appends the next body bytes to `out`; `false` once the body has ended.
    pub async fn read_into(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let before = out.len();
            let more = match &mut self.body {
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
            if read_some(&mut self.tcp, &mut self.raw).await? == 0 {
                return match self.body {
                    Framing::UntilClose => Ok(false),
                    _ => Err("connection closed mid-body".into()),
                };
            }
        }
    }
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
