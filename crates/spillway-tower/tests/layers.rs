//! The two classic tower pitfalls, and the layers' answers, on tower-test mocks and real tasks.

use spillway::clock::ManualClock;
use spillway::limit::{ConcurrencyLimiter, RejectReason};
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway_tower::{ConcurrencyLimitLayer, Overloaded, RateLimitLayer, Reason};
use std::convert::Infallible;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo()
-> impl Service<u32, Response = u32, Error = Infallible, Future = std::future::Ready<Result<u32, Infallible>>>
+ Clone {
    service_fn(|x: u32| std::future::ready(Ok(x)))
}

/// tower's `RateLimit` keeps one bucket per clone, so behind `Buffer` or per-request clones a
/// 5/s limit lets 1 500 requests through 300 clones. Ours shares one: exactly 5.
#[tokio::test]
async fn rate_limit_state_is_shared_by_every_clone() {
    let limiter = KeyedLimiter::with_clock(Gcra::new(Quota::per_second(5).unwrap()), 16, ManualClock::new());
    let svc = RateLimitLayer::new(limiter, |_: &u32| "everyone").layer(echo());
    let mut admitted = 0;
    for i in 0..300 {
        for _ in 0..5 {
            if svc.clone().oneshot(i).await.is_ok() {
                admitted += 1;
            }
        }
    }
    assert_eq!(admitted, 5);

    // The same through a Buffer, with concurrent callers.
    let limiter = KeyedLimiter::with_clock(Gcra::new(Quota::per_second(5).unwrap()), 16, ManualClock::new());
    let buffered = tower::buffer::Buffer::new(RateLimitLayer::new(limiter, |_: &u32| 0u8).layer(echo()), 64);
    let mut tasks = Vec::new();
    for i in 0..1500 {
        let svc = buffered.clone();
        tasks.push(tokio::spawn(async move { svc.oneshot(i).await.is_ok() }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 5);
}

/// tower's `ConcurrencyLimit` takes its permit in `poll_ready`: clones that get ready and never
/// call hold the capacity and everyone else waits forever. Ours takes it in `call`.
#[tokio::test]
async fn poll_ready_never_holds_capacity() {
    let layer = ConcurrencyLimitLayer::new(ConcurrencyLimiter::new(1));
    let svc = layer.layer(echo());
    let mut idle: Vec<_> = (0..100).map(|_| svc.clone()).collect();
    for s in &mut idle {
        s.ready().await.unwrap(); // ready, and never called
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), svc.clone().oneshot(7)).await;
    assert_eq!(answer.expect("not starved").unwrap(), 7);

    // tower's own limit, for contrast: one idle ready clone starves the rest.
    let theirs = tower::limit::ConcurrencyLimitLayer::new(1).layer(echo());
    let mut idle = theirs.clone();
    idle.ready().await.unwrap();
    let starved = tokio::time::timeout(Duration::from_millis(50), theirs.clone().oneshot(7)).await;
    assert!(starved.is_err(), "tower's ConcurrencyLimit holds a permit from poll_ready");
}

#[tokio::test]
async fn concurrency_limit_queues_then_refuses_with_retry_after() {
    let limiter = ConcurrencyLimiter::builder(1).queue(1).queue_timeout(Duration::from_millis(200)).build();
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let svc = ConcurrencyLimitLayer::new(limiter.clone()).layer(mock);
    handle.allow(10);
    let first = tokio::spawn(svc.clone().oneshot(1));
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, 1);
    // The second waits in the queue; the third finds it full.
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(limiter.stats().waiting, 1);
    let third = svc.clone().oneshot(3).await.unwrap_err();
    let overloaded = third.downcast_ref::<Overloaded>().expect("an Overloaded error");
    assert_eq!(overloaded.reason(), Reason::Concurrency(RejectReason::QueueFull));
    assert!(overloaded.retry_after() > Duration::ZERO);
    // The first completes: its permit goes to the second.
    respond.send_response(10);
    assert_eq!(first.await.unwrap().unwrap(), 10);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, 2);
    respond.send_response(20);
    assert_eq!(second.await.unwrap().unwrap(), 20);
    assert_eq!(limiter.in_flight(), 0);
}

/// A response future dropped mid-flight (a client that went away) releases its permit.
#[tokio::test]
async fn a_dropped_response_future_releases_its_permit() {
    let limiter = ConcurrencyLimiter::new(1);
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let mut svc = ConcurrencyLimitLayer::new(limiter.clone()).layer(mock);
    handle.allow(10);
    let fut = svc.ready().await.unwrap().call(1);
    assert_eq!(limiter.in_flight(), 1);
    drop(fut);
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test]
async fn rate_limited_requests_never_reach_the_inner_service() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let limiter = KeyedLimiter::with_clock(Gcra::new(Quota::per_hour(1).unwrap()), 16, ManualClock::new());
    let mut svc = RateLimitLayer::new(limiter, |req: &u32| *req % 2).layer(mock);
    handle.allow(10);
    let ok = svc.ready().await.unwrap().call(2);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, 2);
    respond.send_response(2);
    assert_eq!(ok.await.unwrap(), 2);
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    let o = err.downcast_ref::<Overloaded>().unwrap();
    assert!(o.is_rate_limited());
    assert_eq!(o.retry_after(), Duration::from_secs(3600));
    // Nothing else reached the mock.
    assert!(tokio::time::timeout(Duration::from_millis(20), handle.next_request()).await.is_err());
}

/// Sheddable work is refused first and critical work keeps its room, across clones.
#[tokio::test]
async fn load_shed_refuses_lower_classes_first() {
    use spillway::shed::{Criticality, PriorityShedder};
    use spillway_tower::LoadShedLayer;
    let shedder = PriorityShedder::new(ConcurrencyLimiter::new(10));
    let (mock, mut handle) = tower_test::mock::pair::<Criticality, ()>();
    let svc = LoadShedLayer::new(shedder, |c: &Criticality| *c).layer(mock);
    handle.allow(100);
    // Hold five sheddable requests in flight (the class's 50 % of 10).
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = svc.clone();
        held.push(s.ready().await.unwrap().call(Criticality::Sheddable));
    }
    let mut s = svc.clone();
    let err = s.ready().await.unwrap().call(Criticality::Sheddable).await.unwrap_err();
    let o = err.downcast_ref::<Overloaded>().unwrap();
    assert_eq!(o.reason(), Reason::Shed(Criticality::Sheddable));
    // Critical work still gets in, up to its 90 %.
    for _ in 0..4 {
        let mut s = svc.clone();
        held.push(s.ready().await.unwrap().call(Criticality::Critical));
    }
    let mut s = svc.clone();
    assert!(s.ready().await.unwrap().call(Criticality::Critical).await.is_err());
    let mut s = svc.clone();
    held.push(s.ready().await.unwrap().call(Criticality::CriticalPlus));
    drop(held);
    // All released: the sheddable class is admitted again.
    let mut s = svc.clone();
    let f = s.ready().await.unwrap().call(Criticality::Sheddable);
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(());
    drop(f);
}

/// The breaker layer counts the inner service's failures, opens, refuses without calling, and
/// half-opens at `retry_after`; a cancelled call counts for nothing.
#[tokio::test]
async fn breaker_layer_opens_and_recovers() {
    use spillway::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Window};
    use spillway_tower::CircuitBreakerLayer;
    let clock = ManualClock::new();
    let config = BreakerConfig {
        window: Window::Count(4),
        minimum_calls: 4,
        open_duration: Duration::from_secs(10),
        open_jitter: 0.0,
        half_open_calls: 1,
        ..BreakerConfig::default()
    };
    let layer = CircuitBreakerLayer::new(CircuitBreaker::with_clock(config, clock.clone()))
        .with_classifier(|r: &Result<u16, spillway_tower::BoxError>| matches!(r, Ok(500..) | Err(_)));
    let breaker = layer.breaker().clone();
    let (mock, mut handle) = tower_test::mock::pair::<(), u16>();
    let svc = layer.layer(mock);
    handle.allow(100);
    // A cancelled call: not counted.
    let mut s = svc.clone();
    drop(s.ready().await.unwrap().call(()));
    let _ = handle.next_request().await;
    assert_eq!(breaker.stats().calls_in_window, 0);
    for _ in 0..4 {
        let call = tokio::spawn(svc.clone().oneshot(()));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(503);
        assert_eq!(call.await.unwrap().unwrap(), 503);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let err = svc.clone().oneshot(()).await.unwrap_err();
    let o = err.downcast_ref::<Overloaded>().unwrap();
    assert_eq!((o.reason(), o.retry_after()), (Reason::BreakerOpen, Duration::from_secs(10)));
    assert!(tokio::time::timeout(Duration::from_millis(20), handle.next_request()).await.is_err());
    // Half-open at retry_after: one trial, which succeeds and closes the breaker.
    clock.advance(Duration::from_secs(10));
    let call = tokio::spawn(svc.clone().oneshot(()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(200);
    assert_eq!(call.await.unwrap().unwrap(), 200);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

/// Adaptive layer: a dropped response future releases its permit and teaches the algorithm
/// nothing; a finished one feeds it.
#[tokio::test]
async fn adaptive_layer_releases_on_cancel_and_learns_on_completion() {
    use spillway::adaptive::{AdaptiveLimiter, Aimd};
    use spillway_tower::AdaptiveLimitLayer;
    let limiter = AdaptiveLimiter::new(
        Aimd::default().with_bounds(1, 100).with_initial(10),
        ConcurrencyLimiter::new(1),
    );
    let layer = AdaptiveLimitLayer::new(limiter);
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let mut svc = layer.layer(mock);
    handle.allow(10);
    let fut = svc.ready().await.unwrap().call(1);
    assert_eq!(layer.limiter().limiter().in_flight(), 1);
    drop(fut);
    let _ = handle.next_request().await; // the cancelled request reached the mock; skip it
    assert_eq!(layer.limiter().limiter().in_flight(), 0);
    assert_eq!(layer.limiter().limit(), 10, "a cancelled call is not a sample");
    // A failed call is a drop: multiplicative decrease.
    let call = tokio::spawn(svc.clone().oneshot(2));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(std::io::Error::other("timeout"));
    assert!(call.await.unwrap().is_err());
    assert_eq!(layer.limiter().limit(), 9);
}

/// Bulkhead layer: a partition's guarantee holds against a greedy neighbour, and slots come
/// back when responses complete or are dropped.
#[tokio::test]
async fn bulkhead_layer_keeps_guarantees() {
    use spillway::shed::Bulkhead;
    use spillway_tower::BulkheadLayer;
    let (mock, mut handle) = tower_test::mock::pair::<usize, ()>();
    let svc = BulkheadLayer::new(Bulkhead::new(3, &[1, 0]), |p: &usize| *p).layer(mock);
    handle.allow(100);
    let mut greedy = Vec::new();
    for _ in 0..5 {
        let mut s = svc.clone();
        greedy.push(s.ready().await.unwrap().call(1));
    }
    // Partition 1 got the two unreserved slots; the other three calls were refused.
    let mut refused = 0;
    let mut kept = Vec::new();
    for f in greedy {
        match futures_now(f) {
            Some(Err(e)) => {
                assert!(matches!(
                    e.downcast_ref::<Overloaded>().map(|o| o.reason()),
                    Some(Reason::BulkheadFull { partition: 1 })
                ));
                refused += 1;
            }
            None => kept.push(()),
            Some(Ok(())) => unreachable!("the mock has not answered"),
        }
    }
    assert_eq!((refused, kept.len()), (3, 2));
    // Partition 0's guaranteed slot is still there.
    let mut s = svc.clone();
    let guaranteed = s.ready().await.unwrap().call(0);
    assert!(futures_now(guaranteed).is_none(), "admitted and waiting for the mock");
}

/// Polls a future once with a no-op waker: `Some(output)` if it is ready.
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
