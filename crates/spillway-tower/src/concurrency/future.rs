use crate::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use spillway::clock::{Clock, CoarseClock};
use spillway::limit::OwnedPermit;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit): holds the permit
    /// until the inner future completes (or is dropped).
    // pin-project-lite cannot carry docs on fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F, T, C: Clock = CoarseClock> {
        /// Admitted at once.
        Admitted {
            #[pin]
            inner: F,
            permit: Option<OwnedPermit<C>>,
        },
        /// Waiting in the queue, then running.
        Queued {
            fut: Boxed<T>,
        },
        /// Refused.
        Rejected {
            err: Option<Overloaded>,
        },
    }
}

impl<F, T, C: Clock> ResponseFuture<F, T, C> {
    pub(crate) fn admitted(inner: F, permit: OwnedPermit<C>) -> Self {
        Self::Admitted { inner, permit: Some(permit) }
    }

    pub(crate) fn queued(fut: Boxed<T>) -> Self {
        Self::Queued { fut }
    }

    pub(crate) fn rejected(err: Overloaded) -> Self {
        Self::Rejected { err: Some(err) }
    }
}

impl<F, T, E, C> Future for ResponseFuture<F, T, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Clock,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Admitted { inner, permit } => {
                let out = ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(out.map_err(Into::into))
            }
            Proj::Queued { fut } => fut.as_mut().poll(cx),
            Proj::Rejected { err } => Poll::Ready(Err(err.take().expect("polled after completion").into())),
        }
    }
}

impl<F, T, C: Clock> fmt::Debug for ResponseFuture<F, T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admitted { .. } => "ResponseFuture::Admitted",
            Self::Queued { .. } => "ResponseFuture::Queued",
            Self::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}
