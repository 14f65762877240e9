//! Following a connection's requests: when each head arrives, when its body has been read,
//! when its response has ended. That is what tells a waiting connection from a busy one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use super::{Conn, Connections};

/// A connection's service (the router), reporting its requests to admission.
#[derive(Clone)]
pub struct TrackService<S> {
    inner: S,
    connections: Arc<Connections>,
    conn: Arc<Conn>,
}

impl<S> TrackService<S> {
    /// Wraps the service of the connection `conn`.
    pub fn new(inner: S, connections: Arc<Connections>, conn: Arc<Conn>) -> Self {
        Self {
            inner,
            connections,
            conn,
        }
    }
}

/// Reports the end of a request's body, or of its response, when dropped.
struct Ends {
    connections: Arc<Connections>,
    conn: Arc<Conn>,
    body: bool,
}

impl Drop for Ends {
    fn drop(&mut self) {
        if self.body {
            self.connections.body_ended(&self.conn);
        } else {
            self.connections.response_ended(&self.conn);
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<Request<B>> for TrackService<S>
where
    S: tower::Service<Request<RequestBody<B>>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
    B: Body,
{
    type Response = Response<ResponseBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let has_body = !request.body().is_end_stream();
        self.connections.request_started(&self.conn, has_body);
        let ends = |body| Ends {
            connections: self.connections.clone(),
            conn: self.conn.clone(),
            body,
        };
        let response_end = ends(false);
        let body_end = has_body.then(|| ends(true));
        let request = request.map(|inner| RequestBody {
            inner,
            end: body_end,
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            // Dropped with the future if the response never comes.
            let response = response.await?;
            Ok(response.map(|inner| ResponseBody {
                inner,
                end: Some(response_end),
            }))
        })
    }
}

/// A request body that reports when it has been read to its end, or dropped.
pub struct RequestBody<B> {
    inner: B,
    end: Option<Ends>,
}

/// A response body that reports when it has been sent to its end, or dropped.
pub struct ResponseBody<B> {
    inner: B,
    end: Option<Ends>,
}

/// What polling a body for its next frame gives.
type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// Polls `inner` for a frame, dropping `end` once it is over.
fn poll_frame_until_end<B: Body + Unpin>(
    inner: &mut B,
    end: &mut Option<Ends>,
    cx: &mut Context<'_>,
) -> Polled<B> {
    let polled = Pin::new(&mut *inner).poll_frame(cx);
    match &polled {
        Poll::Ready(None | Some(Err(_))) => *end = None,
        Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => *end = None,
        _ => {}
    }
    polled
}

impl<B> Body for RequestBody<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<B> {
        let this = self.get_mut();
        poll_frame_until_end(&mut this.inner, &mut this.end, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<B> {
        let this = self.get_mut();
        poll_frame_until_end(&mut this.inner, &mut this.end, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
