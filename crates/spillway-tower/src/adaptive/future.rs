use crate::breaker::Classify;
use crate::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use spillway::adaptive::{AdaptiveLimiter, Admission, LimitAlgorithm};
use spillway::clock::{Clock, CoarseClock};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// Releases the permit exactly once, with the call's outcome or (when dropped first) none.
struct Report<A: LimitAlgorithm, C: Clock> {
    limiter: Arc<AdaptiveLimiter<A, C>>,
    admission: Option<Admission<C>>,
}

impl<A: LimitAlgorithm, C: Clock> Report<A, C> {
    fn done(&mut self, dropped: Option<bool>) {
        if let Some(a) = self.admission.take() {
            self.limiter.finish(a, dropped);
        }
    }
}

impl<A: LimitAlgorithm, C: Clock> Drop for Report<A, C> {
    fn drop(&mut self) {
        self.done(None);
    }
}

pin_project! {
    /// The response future of [`AdaptiveLimit`](super::AdaptiveLimit): reports the call's
    /// latency and outcome to the algorithm when it completes.
    // pin-project-lite cannot carry docs on fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F, A: LimitAlgorithm, K, C: Clock = CoarseClock> {
        /// Admitted: running the inner future.
        Admitted { #[pin] inner: F, report: Report<A, C>, classify: K },
        /// Refused at the limit.
        Rejected { err: Option<Overloaded> },
    }
}

impl<F, A: LimitAlgorithm, K, C: Clock> ResponseFuture<F, A, K, C> {
    pub(crate) fn admitted(
        inner: F,
        limiter: Arc<AdaptiveLimiter<A, C>>,
        admission: Admission<C>,
        classify: K,
    ) -> Self {
        Self::Admitted { inner, report: Report { limiter, admission: Some(admission) }, classify }
    }
}

impl<F, A, K, T, E, C> Future for ResponseFuture<F, A, K, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    A: LimitAlgorithm,
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

impl<F, A: LimitAlgorithm, K, C: Clock> fmt::Debug for ResponseFuture<F, A, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admitted { .. } => "ResponseFuture::Admitted",
            Self::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}
