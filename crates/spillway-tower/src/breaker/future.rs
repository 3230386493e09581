use super::Classify;
use crate::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use spillway::breaker::{Admission, CircuitBreaker};
use spillway::clock::{Clock, CoarseClock};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// Reports the call to the breaker exactly once: its outcome, or "cancelled" when dropped first.
struct Report<C: Clock> {
    breaker: Arc<CircuitBreaker<C>>,
    admission: Option<Admission>,
}

impl<C: Clock> Report<C> {
    fn done(&mut self, failed: Option<bool>) {
        if let Some(a) = self.admission.take() {
            self.breaker.finish(a, failed);
        }
    }
}

impl<C: Clock> Drop for Report<C> {
    fn drop(&mut self) {
        self.done(None);
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker): classifies the result
    /// and reports it to the breaker (a dropped future reports a cancelled call).
    // pin-project-lite cannot carry docs on fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F, K, C: Clock = CoarseClock> {
        /// Admitted: running the inner future.
        Admitted { #[pin] inner: F, report: Report<C>, classify: K },
        /// Refused: the breaker is open.
        Rejected { err: Option<Overloaded> },
    }
}

impl<F, K, C: Clock> ResponseFuture<F, K, C> {
    pub(crate) fn admitted(
        inner: F,
        breaker: Arc<CircuitBreaker<C>>,
        admission: Admission,
        classify: K,
    ) -> Self {
        Self::Admitted { inner, report: Report { breaker, admission: Some(admission) }, classify }
    }

    pub(crate) fn rejected(err: Overloaded) -> Self {
        Self::Rejected { err: Some(err) }
    }
}

impl<F, K, T, E, C> Future for ResponseFuture<F, K, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: Classify<T, E>,
    C: Clock,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Admitted { inner, report, classify } => {
                let result = ready!(inner.poll(cx));
                report.done(Some(classify.is_failure(&result)));
                Poll::Ready(result.map_err(Into::into))
            }
            Proj::Rejected { err } => Poll::Ready(Err(err.take().expect("polled after completion").into())),
        }
    }
}

impl<F, K, C: Clock> fmt::Debug for ResponseFuture<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admitted { .. } => "ResponseFuture::Admitted",
            Self::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}
