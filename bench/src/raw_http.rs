//! A lean HTTP/1.1 client: an event stream (a single `GET` on a TCP connection bound to a
//! source address, then the decoded body bytes); the connection and response reading that
//! [`crate::raw_client`] shares.
//!
//! The tool holds tens of thousands of streams on the machine it measures, so each costs one
//! socket and a small buffer rather than a general HTTP client's connection state, and a
//! delivery costs one read and a scan; a publish costs two writes and a read. `https://` takes
//! the same path over rustls (tokio-rustls, no HTTP client state) once `--tls-ca` has named the
//! certificates to trust ([`trust_pem_file`]); without it, `https://` goes through reqwest.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::chunked::Chunked;

/// Bytes read from the socket per call, unless a stream asks for more.
const READ_SIZE: usize = 4096;
/// The longest response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// The certificates `--tls-ca` trusts (as read) and the lean client's TLS settings.
static TRUSTED: OnceLock<(Vec<u8>, Arc<rustls::ClientConfig>)> = OnceLock::new();
/// Whether `https://` streams and publishers use the lean client.
static LEAN_TLS: AtomicBool = AtomicBool::new(false);

/// Trusts the PEM certificates in `path` for `https://`, in the lean client and (through
/// [`trusted_pem`]) reqwest; with `lean`, `https://` streams and publishers use the lean
/// client from then on.
pub fn trust_pem_file(path: &std::path::Path, lean: bool) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The lean client speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let _ = TRUSTED.set((pem, Arc::new(config)));
    LEAN_TLS.store(lean, Ordering::Relaxed);
    Ok(())
}

/// The PEM certificates `--tls-ca` trusts, if given.
pub fn trusted_pem() -> Option<&'static [u8]> {
    TRUSTED.get().map(|(pem, _)| pem.as_slice())
}

/// Whether `https://` streams and publishers use the lean client (`--tls-ca` without `--h2`).
pub fn tls_ready() -> bool {
    LEAN_TLS.load(Ordering::Relaxed)
}

/// A connection's socket: plain, or TLS over it.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open event stream: the response was 2xx and its body follows.
pub struct RawStream {
    conn: Connection,
    body: Framing,
}

/// A connection and the bytes read from it but not yet used.
pub(crate) struct Connection {
    pub(crate) tcp: Io,
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
    /// The name the server's certificate is checked against, for `https://`.
    tls: Option<ServerName<'static>>,
}

impl Target {
    /// The server at `server`.
    #[cfg(test)]
    pub fn at(server: SocketAddr) -> Self {
        Self {
            server,
            host: server.to_string(),
            tls: None,
        }
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Resolves the host of `url` (`http://host:port/...` or `https://`).
    pub async fn resolve(url: &reqwest::Url) -> Result<Self, String> {
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let server = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let tls = match url.scheme() {
            "https" => Some(
                ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{host} is not a TLS server name: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            server,
            host: format!("{host}:{port}"),
            tls,
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
        let tcp = match &target.tls {
            None => Io::Plain(tcp),
            Some(name) => {
                let (_, config) = TRUSTED
                    .get()
                    .ok_or("https:// with the lean client needs --tls-ca")?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Io::Tls(Box::new(tls))
            }
        };
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
        socket2::SockRef::from(self.conn.tcp.tcp())
            .set_recv_buffer_size(bytes)
            .map_err(|e| format!("cannot set SO_RCVBUF: {e}"))
    }
}
