use crate::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    // pin-project-lite cannot carry docs on fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F> {
        /// Admitted.
        Inner {
            #[pin]
            inner: F,
        },
        /// Refused.
        Rejected {
            err: Option<Overloaded>,
        },
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
            Proj::Inner { inner } => inner.poll(cx).map_err(Into::into),
            Proj::Rejected { err } => Poll::Ready(Err(err.take().expect("polled after completion").into())),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Inner { .. } => "ResponseFuture::Inner",
            Self::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}
