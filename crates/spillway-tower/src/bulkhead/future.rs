use crate::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use spillway::shed::OwnedBulkheadPermit;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pin_project! {
    /// The response future of [`Bulkhead`](super::Bulkhead): holds the partition's slot until
    /// the inner future completes (or is dropped).
    // pin-project-lite cannot carry docs on fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F> {
        /// Admitted: the inner future and the slot.
        Admitted { #[pin] inner: F, permit: Option<OwnedBulkheadPermit> },
        /// Refused.
        Rejected { err: Option<Overloaded> },
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Admitted { inner, permit } => {
                let out = ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(out.map_err(Into::into))
            }
            Proj::Rejected { err } => Poll::Ready(Err(err.take().expect("polled after completion").into())),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admitted { .. } => "ResponseFuture::Admitted",
            Self::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}
