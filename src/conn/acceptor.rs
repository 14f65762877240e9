//! The acceptor that admits every new connection before anything else reads from it.

use std::future::Ready;
use std::io;
use std::sync::Arc;

use axum_server::accept::Accept;
use futures_util::future::Either;
use tokio::net::TcpStream;

use super::{Connections, Refusal, TrackService, Tracked};

/// Admits each accepted connection ([`Connections::admit`]), then hands it, wrapped in
/// [`Tracked`] with its service in [`TrackService`], to the `inner` acceptor (the lean stream
/// path on a plain listener, the TLS handshake on a TLS one). Also sets `TCP_NODELAY`: events
/// are small and must not wait for an ACK.
#[derive(Clone)]
pub struct AdmitAcceptor<A> {
    connections: Arc<Connections>,
    inner: A,
    /// Whether a refused connection gets a plain-HTTP 503 (not on a TLS listener).
    answer_refusals: bool,
}

impl<A> AdmitAcceptor<A> {
    /// Admission for a plain-HTTP listener, refusals answered with a 503.
    pub fn plain(connections: Arc<Connections>, inner: A) -> Self {
        Self {
            connections,
            inner,
            answer_refusals: true,
        }
    }

    /// Admission before the TLS handshake: refused connections are just closed.
    pub fn under_tls(connections: Arc<Connections>, inner: A) -> Self {
        Self {
            connections,
            inner,
            answer_refusals: false,
        }
    }
}

impl<A, S> Accept<TcpStream, S> for AdmitAcceptor<A>
where
    A: Accept<Tracked<TcpStream>, TrackService<S>>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Either<A::Future, Ready<io::Result<(A::Stream, A::Service)>>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        // Refused or admitted, this runs once per accepted socket in its own task: the accept
        // loop never waits for it.
        let admitted = stream
            .peer_addr()
            .map_err(|_| None)
            .and_then(|peer| self.connections.admit(peer).map_err(Some));
        match admitted {
            Ok((conn, slot)) => {
                let _ = stream.set_nodelay(true);
                let service = TrackService::new(service, self.connections.clone(), conn.clone());
                let stream = Tracked::new(stream, self.connections.clone(), conn, slot);
                Either::Left(self.inner.accept(stream, service))
            }
            Err(refusal) => {
                if let (Some(refusal), true) = (refusal, self.answer_refusals) {
                    answer(&stream, refusal);
                }
                Either::Right(std::future::ready(Err(io::Error::other(
                    "connection refused by admission",
                ))))
            }
        }
    }
}

/// Writes a 503 on a refused connection if the socket takes it at once (a new socket's send
/// buffer is empty), and reads whatever the client has sent already, so that closing it
/// sends a FIN after the answer rather than a reset.
fn answer(stream: &TcpStream, refusal: Refusal) {
    let message = match refusal {
        Refusal::PerIp => "too many connections from your address",
        Refusal::Full => "the server has no room for another connection",
    };
    let body = format!("{{\"error\":\"{message}\"}}");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
    let mut scratch = [0u8; 1024];
    for _ in 0..8 {
        if !matches!(stream.try_read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
}
