//! TLS connections: the handshake, then the lean stream path or the general server.
//!
//! Every TLS connection is admitted like a plain one ([`crate::conn::AdmitAcceptor`]), then its
//! handshake is done here with rustls, under admission's header timeout. After it:
//!
//! - a connection that chose HTTP/2 (ALPN `h2`) goes to the general server at once;
//! - otherwise its first request head is read (decrypted): when it is one complete `GET` of a
//!   stream route, as on the plain lean path ([`crate::stream_conn`]), the stream is served in
//!   a task of its own, with no HTTP buffers and no plaintext kept between writes. Over TLS 1.3
//!   rustls hands over the connection's traffic keys and the stream keeps only the socket and
//!   its sending key ([`SealedTls`]): each write is sealed into one record and written at once,
//!   and only what a full socket did not take waits. Over TLS 1.2 it keeps the rustls
//!   connection ([`LeanTls`]), which adds rustls's 4 KiB receive buffer and its state;
//! - anything else goes to the general server, with the bytes already read handed back first
//!   ([`TlsConn`]).
//!
//! A TLS-ALPN-01 validation handshake (ACME, `acme-tls/1`) is closed once it is complete.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsConfig;
use rustls::crypto::cipher::{MessageEncrypter, OutboundChunks, OutboundPlainMessage};
use rustls::{ContentType, ProtocolVersion, ServerConnection, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::conn::Tracked;
use crate::stream_conn::{self, StreamAcceptor};

/// The ALPN name of ACME's TLS-ALPN-01 validation handshakes.
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Bytes read per call while a request head arrives.
const HEAD_READ: usize = 1024;

/// An acceptor, behind admission, that does the TLS handshake and serves event-stream
/// requests on the lean path; every other connection goes on to the general server.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: RustlsConfig,
    streams: StreamAcceptor,
}

impl TlsAcceptor {
    /// Handshakes with `config` (read at each new connection, so a reloaded configuration
    /// applies to new connections) and serves lean streams with `streams`.
    pub fn new(config: RustlsConfig, streams: StreamAcceptor) -> Self {
        Self { config, streams }
    }
}

impl<S: Send + 'static> Accept<Tracked<TcpStream>, S> for TlsAcceptor {
    type Stream = TlsConn;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(TlsConn, S)>> + Send>>;

    fn accept(&self, stream: Tracked<TcpStream>, service: S) -> Self::Future {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.get_inner());
        let streams = self.streams.clone();
        Box::pin(async move {
            // Admission closes the socket (every read fails) at the header timeout, so a
            // handshake that stalls ends then.
            let peer = stream.get_ref().peer_addr().ok();
            let mut tls = acceptor.accept(stream).await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            match alpn.as_deref() {
                Some(ACME_TLS_ALPN) => {
                    return Err(io::Error::other("ACME validation handshake done"));
                }
                Some(b"h2") => return Ok((TlsConn::new(tls, Vec::new()), service)),
                _ => {}
            }
            let head = read_head(&mut tls).await?;
            let Some((mut request, head_len)) = stream_conn::parse_stream_request(&head) else {
                return Ok((TlsConn::new(tls, head), service));
            };
            debug_assert_eq!(head_len, head.len());
            drop(head);
            if let Some(peer) = peer {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            // Records rustls still has to send (session tickets) go before the stream's own.
            tokio::io::AsyncWriteExt::flush(&mut tls).await?;
            let (tracked, connection) = tls.into_inner();
            let Some((tcp, slot)) = tracked.into_stream() else {
                return Err(io::Error::other("connection closed by admission"));
            };
            if SealedTls::applies(&connection) {
                let io = SealedTls::new(tcp, connection)?;
                streams.spawn(io, slot, request, 0);
            } else {
                let io = LeanTls {
                    tcp,
                    tls: Box::new(connection),
                };
                streams.spawn(io, slot, request, 0);
            }
            Err(io::Error::other("event stream served apart"))
        })
    }
}

/// Reads a connection's first request head (decrypted): until it is complete, is not a valid
/// beginning of an HTTP/1 head, fills [`stream_conn::MAX_HEAD`], or the client stops sending.
/// The bytes read, which may hold more than the head.
///
/// # Errors
/// When the connection fails or admission closes it first.
async fn read_head(tls: &mut TlsStream<Tracked<TcpStream>>) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; HEAD_READ];
    loop {
        let room = HEAD_READ.min(stream_conn::MAX_HEAD - head.len());
        let n = tls.read(&mut chunk[..room]).await?;
        head.extend_from_slice(&chunk[..n]);
        if n == 0 || head.len() >= stream_conn::MAX_HEAD || !stream_conn::head_pending(&head) {
            return Ok(head);
        }
    }
}

/// A TLS connection for the general server: the bytes of the first request head read by the
/// acceptor come first, then the rest of the decrypted connection.
pub struct TlsConn {
    tls: TlsStream<Tracked<TcpStream>>,
    /// Read but not yet handed on; emptied (and freed) once handed on.
    prefix: Vec<u8>,
    at: usize,
}

impl TlsConn {
    fn new(tls: TlsStream<Tracked<TcpStream>>, prefix: Vec<u8>) -> Self {
        Self { tls, prefix, at: 0 }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// A lean event stream's TLS connection: the socket and the rustls state (boxed, so the
/// stream's task stays small). Plaintext is never kept: a write is encrypted into rustls's
/// outgoing queue and written to the socket at once; what the socket does not take waits
/// there, and the next write waits for it to drain (so a stalled client holds at most one
/// write's worth, and the stream's write timeout applies as on plain HTTP).
pub struct LeanTls {
    tcp: TcpStream,
    tls: Box<ServerConnection>,
}

/// The socket as a non-blocking `std::io` reader and writer, for rustls.
struct SyncTcp<'a>(&'a TcpStream);

impl Read for SyncTcp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SyncTcp<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LeanTls {
    /// Writes rustls's outgoing records until none are left; `Pending` while the socket is
    /// full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SyncTcp(&self.tcp)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for LeanTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.tls.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            ready!(this.tcp.poll_read_ready(cx))?;
            match this.tls.read_tls(&mut SyncTcp(&this.tcp)) {
                // The end of the socket: the reader reports it next (a clean close or not).
                Ok(_) => {
                    let processed = this.tls.process_new_packets();
                    // An alert or a key update to answer goes out if the socket takes it now.
                    if this.tls.wants_write() {
                        let _ = this.tls.write_tls(&mut SyncTcp(&this.tcp));
                    }
                    if let Err(e) = processed {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
                // The readiness was stale; it is cleared, and the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for LeanTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        // The slices go into one record (or as few as their size needs).
        let n = this.tls.writer().write_vectored(bufs)?;
        // Written now if the socket takes it; otherwise it waits for the next call.
        match this.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Buffers of one vectored write sealed into one record at most (a stream's write is its
/// chunk's size line, the frames that were ready, and the closing CRLF).
const SLICES_PER_RECORD: usize = 64;

/// Largest plaintext of one TLS record.
const MAX_FRAGMENT: usize = 16 * 1024;
/// Bytes of what a client sends during a stream read and discarded per call.
const DISCARD_READ: usize = 64;
/// Discarding reads per poll before the stream yields to others.
const DISCARDS_PER_POLL: usize = 16;

/// A lean event stream's TLS 1.3 connection once rustls has handed over its traffic keys: the
/// socket, the sending key and its record count. Nothing else is kept while the stream is idle.
///
/// Writes seal their bytes into one record (up to 16 KiB) and write it at once; a remainder the
/// socket did not take waits in `pending`, and the next write or flush waits for it. Reads never
/// yield data: a client has nothing to say on an event stream, so its bytes (a key update, a
/// ping) are discarded, and the end of its connection reads as the end of file. The server
/// never updates its key: the stream ends at the cipher's confidentiality limit (millions of
/// records), and the client resumes with `Last-Event-ID`.
pub struct SealedTls {
    tcp: TcpStream,
    encrypter: Box<dyn MessageEncrypter>,
    seq: u64,
    limit: u64,
    /// A sealed record, or its rest, that the socket has not taken yet; empty (no allocation)
    /// otherwise.
    pending: Vec<u8>,
    at: usize,
}

impl SealedTls {
    /// Whether `connection` can be handed over: TLS 1.3, nothing left for rustls to send.
    fn applies(connection: &ServerConnection) -> bool {
        connection.protocol_version() == Some(ProtocolVersion::TLSv1_3)
            && matches!(
                connection.negotiated_cipher_suite(),
                Some(SupportedCipherSuite::Tls13(_))
            )
            && !connection.wants_write()
    }

    /// Takes the sending key of `connection` (see [`SealedTls::applies`]).
    ///
    /// # Errors
    /// When rustls does not hand over the keys.
    fn new(tcp: TcpStream, connection: ServerConnection) -> io::Result<Self> {
        let Some(SupportedCipherSuite::Tls13(suite)) = connection.negotiated_cipher_suite() else {
            return Err(io::Error::other("not a TLS 1.3 connection"));
        };
        let secrets = connection
            .dangerous_extract_secrets()
            .map_err(io::Error::other)?;
        let (seq, secret) = secrets.tx;
        let (key, iv) = match secret {
            rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
            _ => return Err(io::Error::other("an unknown cipher")),
        };
        Ok(Self {
            tcp,
            encrypter: suite.aead_alg.encrypter(key, iv),
            seq,
            limit: suite.common.confidentiality_limit,
            pending: Vec::new(),
            at: 0,
        })
    }

    /// Seals `chunks` as one record of `typ`.
    fn seal(&mut self, typ: ContentType, chunks: OutboundChunks<'_>) -> io::Result<Vec<u8>> {
        if self.seq >= self.limit {
            return Err(io::Error::other(
                "the stream's TLS key has sealed as many records as it may",
            ));
        }
        let message = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: chunks,
        };
        let record = self
            .encrypter
            .encrypt(message, self.seq)
            .map_err(io::Error::other)?;
        self.seq += 1;
        Ok(record.encode())
    }

    /// Writes `record` now as far as the socket takes it; keeps the rest in `pending`.
    fn send(&mut self, record: Vec<u8>) -> io::Result<()> {
        let written = match self.tcp.try_write(&record) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < record.len() {
            self.pending = record;
            self.at = written;
        }
        Ok(())
    }

    /// Writes what waits in `pending`; `Pending` while the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.pending.len() {
            match self.tcp.try_write(&self.pending[self.at..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SealedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut scratch = [0u8; DISCARD_READ];
        for _ in 0..DISCARDS_PER_POLL {
            ready!(this.tcp.poll_read_ready(cx))?;
            match this.tcp.try_read(&mut scratch) {
                // The end of the client's side: read as the end of file.
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                // Stale readiness, now cleared: the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // A client that keeps sending: come back to it after others have run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl AsyncWrite for SealedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        // Up to one record's worth of the slices, in order.
        let mut taken = 0;
        let mut slices: [&[u8]; SLICES_PER_RECORD] = [&[]; SLICES_PER_RECORD];
        let mut count = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            if taken == MAX_FRAGMENT || count == slices.len() {
                break;
            }
            let part = &buf[..buf.len().min(MAX_FRAGMENT - taken)];
            slices[count] = part;
            count += 1;
            taken += part.len();
        }
        if taken == 0 {
            return Poll::Ready(Ok(0));
        }
        let record = this.seal(
            ContentType::ApplicationData,
            OutboundChunks::new(&slices[..count]),
        )?;
        this.send(record)?;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.seq < this.limit {
            // close_notify (a warning-level alert), once: `limit` marks it sent.
            let alert = this.seal(ContentType::Alert, OutboundChunks::Single(&[1, 0]))?;
            this.limit = this.seq;
            this.send(alert)?;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
