//! The socket of an admitted connection: counted until it is closed, and failing every read
//! and write once admission has told it to close.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::{Conn, Connections};

/// A connection's place in the count (and in its address's share), given back when dropped.
/// This is all an event stream on the lean path keeps of admission: no timer, no queue entry.
#[derive(Debug)]
pub struct ConnSlot {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
}

impl ConnSlot {
    pub(super) fn new(connections: Arc<Connections>, ip: Option<IpAddr>) -> Self {
        Self { connections, ip }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.connections.release(self.ip);
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.open())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Takes the connection out of the waiting queues when its socket goes.
struct Registration {
    connections: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.forget(&self.conn);
    }
}

/// An admitted connection's socket.
pub struct Tracked<IO> {
    // Dropped in this order: the socket, then its queue entry, then its count.
    io: IO,
    registration: Registration,
    slot: ConnSlot,
    /// Runs while a write waits for the client to take bytes; `None` whenever writes go
    /// through, so a connection that is not stalled holds no timer.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a write gets once the client has taken none of its bytes for the write timeout.
fn write_stalled() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed: the client took no bytes within the write timeout",
    )
}

/// The error every read and write gets once the connection was told to close.
fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed: request too slow, idle too long, or evicted to make room",
    )
}

impl<IO> Tracked<IO> {
    /// Wraps an admitted socket.
    pub fn new(io: IO, connections: Arc<Connections>, conn: Arc<Conn>, slot: ConnSlot) -> Self {
        Self {
            io,
            registration: Registration { connections, conn },
            slot,
            stalled: None,
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The connection's shared state.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.registration.conn
    }

    /// Hands the socket over to an event stream: it leaves admission's queues for good and
    /// keeps only its count. `None` when the connection was told to close meanwhile.
    pub fn into_stream(self) -> Option<(IO, ConnSlot)> {
        let Self {
            io,
            registration,
            slot,
            stalled: _,
        } = self;
        if registration.conn.is_closed() {
            drop(io);
            drop(registration);
            drop(slot);
            return None;
        }
        registration.connections.stream_started(&registration.conn);
        drop(registration);
        Some((io, slot))
    }

    /// `Err` once told to close; otherwise registers `cx` to be woken when that happens.
    fn watch(&self, cx: &mut Context<'_>) -> io::Result<()> {
        let conn = &self.registration.conn;
        if conn.is_closed() {
            return Err(closed());
        }
        conn.waker.register(cx.waker());
        if conn.is_closed() {
            return Err(closed());
        }
        Ok(())
    }

    /// Follows a write's outcome: a write that goes through clears the stall timer, one that
    /// must wait starts it (or polls it) and fails once it has run out.
    fn track_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.registration.connections.limits().write_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(write_stalled()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Tracked<TcpStream> {
    /// Waits until more than `seen` bytes have arrived, then copies what has arrived into
    /// `buf` without consuming it. Returns the bytes copied: more than `seen`, `buf.len()` when
    /// it is full, 0 at the end of the stream, or `seen` (and the same bytes) when the client
    /// has closed its side after them, so that no more will come.
    ///
    /// # Errors
    /// The socket's, or a timed-out error once the connection was told to close.
    pub async fn peek_beyond(&self, buf: &mut [u8], seen: usize) -> io::Result<usize> {
        let fd = self.io.as_raw_fd();
        // Whether this wait has cleared the socket's readiness since it last slept: readiness
        // that is back at once with nothing new is the client's end of stream (which the
        // readiness keeps), not an arrival.
        let mut cleared = false;
        std::future::poll_fn(|cx| {
            loop {
                match self.io.poll_read_ready(cx) {
                    Poll::Pending => {
                        cleared = false;
                        return match self.watch(cx) {
                            Ok(()) => Poll::Pending,
                            Err(e) => Poll::Ready(Err(e)),
                        };
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                if self.registration.conn.is_closed() {
                    return Poll::Ready(Err(closed()));
                }
                // A peek that finds nothing new clears the readiness it was given, so the
                // next poll waits for the next arrival instead of spinning on the same bytes.
                let peeked = self.io.try_io(Interest::READABLE, || {
                    let n = recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)
                        .map_err(io::Error::from)?;
                    if n > seen || n == 0 || n == buf.len() {
                        Ok(n)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                });
                match peeked {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if cleared {
                            return Poll::Ready(Ok(seen));
                        }
                        cleared = true;
                    }
                    done => return Poll::Ready(done),
                }
            }
        })
        .await
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.registration.conn.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => match this.watch(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.registration.conn.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.registration.conn.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.track_write(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO> std::fmt::Debug for Tracked<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("conn", &self.registration.conn)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}
