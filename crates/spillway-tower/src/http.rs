//! Rejections as answers: the one place where an [`Overloaded`] becomes an HTTP response.
//!
//! | reason | HTTP | gRPC (`grpc-status`) |
//! | --- | --- | --- |
//! | rate limited | 429 + `RateLimit`, `RateLimit-Policy` | 8 `RESOURCE_EXHAUSTED` |
//! | at capacity, queue full, shed, bulkhead full, breaker open, deadline unreachable | 503 | 14 `UNAVAILABLE` |
//! | waited the whole queue timeout | 504 | 14 `UNAVAILABLE` |
//!
//! Every answer carries `Retry-After` (whole seconds, rounded up, at least 1); gRPC answers are
//! trailers-only (status 200, `grpc-status` in the headers, empty body) with
//! `grpc-retry-pushback-ms`.

use crate::{BoxError, Overloaded, Reason};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use spillway::limit::RejectReason;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// The response for a refused request (`grpc`: the request was gRPC).
///
/// ```
/// use spillway_tower::http::rejection_response;
/// # use spillway_tower::Overloaded;
/// # fn demo(o: &Overloaded) {
/// let resp: http::Response<String> = rejection_response(o, false);
/// assert!(resp.headers().contains_key(http::header::RETRY_AFTER));
/// # }
/// ```
pub fn rejection_response<B: Default>(err: &Overloaded, grpc: bool) -> Response<B> {
    let retry_secs = err.retry_after().as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = Response::new(B::default());
    let headers = resp.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_secs));
    if let Reason::RateLimited { limit, reset } = err.reason() {
        let reset = reset.as_secs_f64().ceil() as u64;
        headers.insert(
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&format!("\"default\";q={limit}")).expect("a valid header value"),
        );
        headers.insert(
            HeaderName::from_static("ratelimit"),
            HeaderValue::from_str(&format!("\"default\";r=0;t={reset}")).expect("a valid header value"),
        );
    }
    if grpc {
        let code = if err.is_rate_limited() { "8" } else { "14" };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(HeaderName::from_static("grpc-status"), HeaderValue::from_static(code));
        headers.insert(HeaderName::from_static("grpc-message"), HeaderValue::from_static("overloaded"));
        headers.insert(
            HeaderName::from_static("grpc-retry-pushback-ms"),
            HeaderValue::from(err.retry_after().as_millis().min(u128::from(u64::MAX)) as u64),
        );
        return resp;
    }
    *resp.status_mut() = match err.reason() {
        Reason::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Reason::Concurrency(RejectReason::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    resp
}

/// Whether a request is gRPC (by its content type).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Turns [`Overloaded`] errors from the layers below into responses (other errors pass
/// through): put it outermost, so that axum or hyper see an answer, not an error.
///
/// ```
/// use spillway::rate::{Gcra, KeyedLimiter, Quota};
/// use spillway_tower::{RateLimitLayer, http::OverloadResponseLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let svc = ServiceBuilder::new()
///     .layer(OverloadResponseLayer)
///     .layer(RateLimitLayer::new(KeyedLimiter::new(Gcra::new(Quota::per_hour(1).unwrap()), 64), |_: &http::Request<String>| ()))
///     .service_fn(|_req: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi"))) });
/// assert_eq!(svc.clone().oneshot(http::Request::new(String::new())).await.unwrap().status(), 200);
/// let refused = svc.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.headers()["retry-after"], "3600");
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OverloadResponseLayer;

impl<S> Layer<S> for OverloadResponseLayer {
    type Service = OverloadResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadResponse { inner }
    }
}

/// See [`OverloadResponseLayer`].
#[derive(Debug, Clone)]
pub struct OverloadResponse<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for OverloadResponse<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let grpc = is_grpc(&req);
        ResponseFuture { inner: self.inner.call(req), grpc }
    }
}

pin_project! {
    /// The response future of [`OverloadResponse`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    ResB: Default,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)).map_err(Into::into) {
            Err(e) => match e.downcast_ref::<Overloaded>() {
                Some(o) => Ok(rejection_response(o, *this.grpc)),
                None => Err(e),
            },
            ok => ok,
        })
    }
}
