//! Layer overhead: our concurrency layer against tower's own, around a service that answers at
//! once; each operation is `poll_ready` + `call` + one poll of the response future.

use crate::harness::{Row, compare, time_per_op};
use spillway::breaker::{BreakerConfig, CircuitBreaker};
use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway::shed::{Criticality, PriorityShedder};
use spillway_tower::{CircuitBreakerLayer, ConcurrencyLimitLayer, LoadShedLayer, RateLimitLayer};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tower::{Layer, Service, ServiceBuilder, service_fn};

const ITERS: u64 = 2_000_000;

fn one_request<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, x: u64) -> bool {
    if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let fut = pin!(svc.call(x));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

pub(crate) fn rows(reps: usize) -> Vec<Row> {
    let echo = || service_fn(|x: u64| std::future::ready(Ok::<_, std::convert::Infallible>(x)));
    let mut ours = ConcurrencyLimitLayer::new(ConcurrencyLimiter::new(1_000)).layer(echo());
    let mut theirs = tower::limit::ConcurrencyLimitLayer::new(1_000).layer(echo());
    let mut cx = Context::from_waker(Waker::noop());
    let mut cx2 = Context::from_waker(Waker::noop());
    let mut rows = vec![compare(
        "tower_concurrency_layer",
        "tower ConcurrencyLimit, poll_ready + call + poll",
        reps,
        || time_per_op(ITERS, || assert!(one_request(&mut ours, &mut cx, 1))),
        || time_per_op(ITERS, || assert!(one_request(&mut theirs, &mut cx2, 1))),
    )];

    // The full stack (rate, shed, breaker, concurrency) over the bare service: the anchor is the
    // bare service, so ours − anchor is the stack's cost per request (target: under 1 µs).
    let quota = Quota::per_second(1_000_000_000).expect("quota");
    let mut stack = ServiceBuilder::new()
        .layer(RateLimitLayer::new(KeyedLimiter::new(Gcra::new(quota), 1024), |x: &u64| *x))
        .layer(LoadShedLayer::new(PriorityShedder::new(ConcurrencyLimiter::new(1_000)), |_: &u64| {
            Criticality::Critical
        }))
        .layer(CircuitBreakerLayer::new(CircuitBreaker::new(BreakerConfig::default())))
        .layer(ConcurrencyLimitLayer::new(ConcurrencyLimiter::new(1_000)))
        .service(echo());
    let mut bare = echo();
    rows.push(compare(
        "tower_full_stack",
        "the bare service (difference = stack overhead)",
        reps,
        || time_per_op(ITERS, || assert!(one_request(&mut stack, &mut cx, 1))),
        || time_per_op(ITERS, || assert!(one_request(&mut bare, &mut cx2, 1))),
    ));
    rows
}
