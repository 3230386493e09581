//! The one response future of every layer: the inner future with a guard that is completed
//! (with the result) when it finishes and dropped if it never does, a queued slow path, or a
//! refusal.

use crate::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// What a layer holds while the inner future runs: a permit to release, or an outcome to
/// report. `complete` sees the result; a guard dropped without it is a cancelled call.
pub trait Guard<T, E> {
    /// The call finished with `result`.
    fn complete(self, result: &Result<T, E>);
}

/// No guard (a rate limit only decides at the door).
impl<T, E> Guard<T, E> for () {
    fn complete(self, _: &Result<T, E>) {}
}

impl<T, E, C: spillway::clock::Clock> Guard<T, E> for spillway::limit::OwnedPermit<C> {
    fn complete(self, _: &Result<T, E>) {}
}

impl<T, E> Guard<T, E> for spillway::shed::OwnedBulkheadPermit {
    fn complete(self, _: &Result<T, E>) {}
}

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The response future of the layers in this crate.
    // pin-project-lite cannot carry docs on fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F, G, T> {
        /// Admitted: the inner future and the guard completed with its result.
        Admitted { #[pin] inner: F, guard: Option<G> },
        /// Waiting in a queue first (the concurrency layer's slow path).
        Queued { fut: Boxed<T> },
        /// Refused.
        Rejected { err: Option<Overloaded> },
    }
}

impl<F, G, T> ResponseFuture<F, G, T> {
    pub(crate) fn admitted(inner: F, guard: G) -> Self {
        Self::Admitted { inner, guard: Some(guard) }
    }

    pub(crate) fn queued(fut: Boxed<T>) -> Self {
        Self::Queued { fut }
    }

    pub(crate) fn rejected(err: Overloaded) -> Self {
        Self::Rejected { err: Some(err) }
    }
}

impl<F, G, T, E> Future for ResponseFuture<F, G, T>
where
    F: Future<Output = Result<T, E>>,
    G: Guard<T, E>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Admitted { inner, guard } => {
                let result = ready!(inner.poll(cx));
                if let Some(g) = guard.take() {
                    g.complete(&result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            Proj::Queued { fut } => fut.as_mut().poll(cx),
            Proj::Rejected { err } => Poll::Ready(Err(err.take().expect("polled after completion").into())),
        }
    }
}

impl<F, G, T> fmt::Debug for ResponseFuture<F, G, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admitted { .. } => "ResponseFuture::Admitted",
            Self::Queued { .. } => "ResponseFuture::Queued",
            Self::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}
