//! Bodies, streamed frame by frame through hyper's bounded buffers, never collected whole.
//!
//! - [`ProxyBody`]: what a client receives: the upstream's body (holding the request's permits
//!   and its pooled connection until the last frame), or a short answer of our own.
//! - [`UpstreamBody`]: what the upstream receives: the client's body, cut off at the byte cap.

use crate::forward::Conn;
use crate::policy::Admitted;
use crate::upstream::{BoxError, Reply};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// A response body for the client.
pub struct ProxyBody {
    kind: Kind,
    /// The HTTP/1.1 connection to mark idle once this body is done with.
    conn: Option<Arc<Conn>>,
}

enum Kind {
    Full(Option<Bytes>),
    /// The upstream's answer, and the request's admission (permits, bulkhead slot), released
    /// with its last frame.
    Upstream {
        body: Reply,
        admitted: Option<Admitted>,
    },
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            Kind::Full(_) => "ProxyBody::Full",
            Kind::Upstream { .. } => "ProxyBody::Upstream",
        })
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl ProxyBody {
    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Full(None), conn: None }
    }

    /// A short static body.
    pub fn text(s: &'static str) -> Self {
        Self { kind: Kind::Full(Some(Bytes::from_static(s.as_bytes()))), conn: None }
    }

    /// Owned bytes.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        Self { kind: Kind::Full(Some(b.into())), conn: None }
    }

    /// The upstream's body; `admitted` is released when it ends (or is dropped half-read).
    pub(crate) fn upstream(body: Reply, admitted: Admitted) -> Self {
        Self { kind: Kind::Upstream { body, admitted: Some(admitted) }, conn: None }
    }

    /// Marks `conn` idle (its next head due) when this body is dropped.
    pub(crate) fn on_drop(&mut self, conn: Arc<Conn>) {
        self.conn = Some(conn);
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(d) = self.conn.as_ref().and_then(|c| c.deadlines.as_ref()) {
            d.idle();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, admitted } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) || body.is_end_stream() {
                    drop(admitted.take());
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// The request body sent upstream: the client's, refused past `remaining` bytes.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Option<Incoming>,
    remaining: u64,
}

/// The client's body passed the route's cap.
#[derive(Debug, thiserror::Error)]
#[error("request body over the cap")]
pub(crate) struct TooLarge;

/// The client's body failed to arrive whole (malformed framing, a cut connection): the
/// client's fault, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub(crate) struct BadBody(pub(crate) hyper::Error);

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, cap: u64) -> Self {
        Self { inner: Some(inner), remaining: cap }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let len = data.len() as u64;
            if len > self.remaining {
                self.inner = None;
                return Poll::Ready(Some(Err(Box::new(TooLarge))));
            }
            self.remaining -= len;
        }
        // (Coerced, not `into()`: that would box the box, and hide the type from a downcast.)
        Poll::Ready(frame.map(|f| f.map_err(|e| -> Self::Error { Box::new(BadBody(e)) })))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
