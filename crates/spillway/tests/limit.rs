//! Public-API tests of the concurrency limiter: order, bounds, cancellation, limits, stats.

use spillway::limit::{ConcurrencyLimiter, OwnedPermit, QueueOrder, RejectReason};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Spawns `n` waiters that record the order in which they get a permit.
async fn waiters(limiter: &ConcurrencyLimiter, n: usize, order: &Arc<std::sync::Mutex<Vec<usize>>>) {
    for i in 0..n {
        let (l, order) = (limiter.clone(), order.clone());
        tokio::spawn(async move {
            let _p = l.acquire_owned().await.unwrap();
            order.lock().unwrap().push(i);
        });
        tokio::task::yield_now().await; // enqueue in spawn order
    }
}

#[tokio::test(flavor = "current_thread")]
async fn fifo_serves_the_longest_waiter_first() {
    let limiter = ConcurrencyLimiter::builder(1).queue(10).order(QueueOrder::Fifo).build();
    let held = limiter.try_acquire_owned().unwrap();
    let order = Arc::default();
    waiters(&limiter, 4, &order).await;
    assert_eq!(limiter.stats().waiting, 4);
    drop(held);
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
}

#[tokio::test(flavor = "current_thread")]
async fn lifo_serves_the_newest_waiter_first() {
    let limiter = ConcurrencyLimiter::builder(1).queue(10).order(QueueOrder::Lifo).build();
    let held = limiter.try_acquire_owned().unwrap();
    let order = Arc::default();
    waiters(&limiter, 4, &order).await;
    drop(held);
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*order.lock().unwrap(), [3, 2, 1, 0]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_rejects_at_once_and_try_acquire_does_not_barge() {
    let limiter = ConcurrencyLimiter::builder(1).queue(2).build();
    let held = limiter.try_acquire_owned().unwrap();
    let order = Arc::default();
    waiters(&limiter, 2, &order).await;
    let err = limiter.acquire().await.unwrap_err();
    assert_eq!(err.reason(), RejectReason::QueueFull);
    drop(held);
    // The permit went to a waiter, not to a passer-by.
    assert_eq!(limiter.try_acquire().unwrap_err().reason(), RejectReason::AtCapacity);
    let s = limiter.stats();
    assert_eq!((s.rejected_queue_full, s.rejected_at_capacity, s.waiting_high_water), (1, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn waiting_times_out() {
    let limiter = ConcurrencyLimiter::builder(1).queue(4).queue_timeout(Duration::from_millis(100)).build();
    let _held = limiter.try_acquire().unwrap();
    let start = tokio::time::Instant::now();
    let err = limiter.acquire().await.unwrap_err();
    assert_eq!(err.reason(), RejectReason::Timeout);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(limiter.stats().waiting, 0);
    assert_eq!(limiter.stats().rejected_timeout, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_waiter_frees_its_place() {
    let limiter = ConcurrencyLimiter::builder(1).queue(1).build();
    let held = limiter.try_acquire_owned().unwrap();
    let l = limiter.clone();
    let cancelled = tokio::spawn(async move { l.acquire_owned().await.map(drop) });
    tokio::task::yield_now().await;
    assert_eq!(limiter.stats().waiting, 1);
    cancelled.abort();
    let _ = cancelled.await;
    assert_eq!(limiter.stats().waiting, 0);
    // Its place is free again, and the next waiter gets the permit.
    let l = limiter.clone();
    let next = tokio::spawn(async move { l.acquire_owned().await.map(drop) });
    tokio::task::yield_now().await;
    drop(held);
    assert!(next.await.unwrap().is_ok());
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_granted_waiter_dropped_before_it_runs_passes_the_permit_on() {
    let limiter = ConcurrencyLimiter::builder(1).queue(2).build();
    let held = limiter.try_acquire_owned().unwrap();
    let l = limiter.clone();
    let first = tokio::spawn(async move { l.acquire_owned().await.map(drop) });
    tokio::task::yield_now().await;
    let l = limiter.clone();
    let second = tokio::spawn(async move { l.acquire_owned().await.map(drop) });
    tokio::task::yield_now().await;
    drop(held); // grants `first`, which has not run yet
    first.abort(); // …and is dropped while holding the grant
    let _ = first.await;
    assert!(second.await.unwrap().is_ok(), "the grant was passed on");
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn raising_the_limit_serves_waiters_lowering_it_drains_first() {
    let limiter = ConcurrencyLimiter::builder(1).queue(10).build();
    let held = limiter.try_acquire_owned().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut permits = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<OwnedPermit>(10);
    for _ in 0..3 {
        let (l, tx, done) = (limiter.clone(), tx.clone(), done.clone());
        tokio::spawn(async move {
            let p = l.acquire_owned().await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
            tx.send(p).await.unwrap();
        });
    }
    tokio::task::yield_now().await;
    limiter.set_limit(3); // two more at once
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(done.load(Ordering::SeqCst), 2);
    permits.push(rx.recv().await.unwrap());
    permits.push(rx.recv().await.unwrap());
    assert_eq!(limiter.in_flight(), 3);
    limiter.set_limit(1);
    drop(held);
    permits.pop();
    tokio::task::yield_now().await;
    assert_eq!(done.load(Ordering::SeqCst), 2, "in flight (1) is not below the new limit (1)");
    permits.pop();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(done.load(Ordering::SeqCst), 3);
    assert_eq!(limiter.stats().in_flight_high_water, 3);
}

#[test]
fn retry_after_follows_the_drain_rate() {
    let clock = spillway::clock::ManualClock::new();
    let limiter = ConcurrencyLimiter::builder(1).clock(clock.clone()).build();
    drop(limiter.try_acquire().unwrap());
    assert_eq!(limiter.stats().drain_rate_per_sec, 0.0);
    // 100 permits released per second for two seconds.
    for _ in 0..200 {
        clock.advance(Duration::from_millis(10));
        drop(limiter.try_acquire().unwrap());
        limiter.stats();
    }
    let rate = limiter.stats().drain_rate_per_sec;
    assert!((80.0..=120.0).contains(&rate), "rate {rate}");
    let _held = limiter.try_acquire().unwrap();
    let retry = limiter.try_acquire().unwrap_err().retry_after();
    assert!(retry >= Duration::from_millis(7) && retry <= Duration::from_millis(13), "{retry:?}");
}

/// Eight threads, blocking waits with random holds: in flight never exceeds the limit, and every
/// request is served.
#[test]
fn threads_never_exceed_the_limit() {
    let limiter = ConcurrencyLimiter::builder(3).queue(16).build();
    let now = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let served = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (limiter, now, max, served) = (&limiter, &now, &max, &served);
            s.spawn(move || {
                for i in 0..500 {
                    let p = limiter.acquire_blocking().unwrap();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    if (i + t) % 7 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                    drop(p);
                    served.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(served.load(Ordering::SeqCst), 4000);
    assert!(max.load(Ordering::SeqCst) <= 3);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.stats().waiting, 0);
}

/// The same with async tasks on a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_never_exceed_the_limit() {
    let limiter = ConcurrencyLimiter::builder(4).queue(64).build();
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..32 {
        let (limiter, now, max) = (limiter.clone(), now.clone(), max.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..200 {
                let p = limiter.acquire().await.unwrap();
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                if (i + t) % 5 == 0 {
                    tokio::task::yield_now().await;
                }
                now.fetch_sub(1, Ordering::SeqCst);
                drop(p);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert!(max.load(Ordering::SeqCst) <= 4);
    assert_eq!(limiter.in_flight(), 0);
}

/// Adaptive LIFO: FIFO while the queue is young, newest-first once it has stood for the interval.
#[tokio::test(flavor = "current_thread")]
async fn adaptive_lifo_switches_to_lifo_when_the_queue_stands() {
    use spillway::clock::ManualClock;
    use spillway::limit::Codel;
    let clock = ManualClock::new();
    let limiter = ConcurrencyLimiter::builder(1)
        .queue(10)
        .order(QueueOrder::AdaptiveLifo)
        .codel(Codel { target: Duration::from_secs(60), interval: Duration::from_millis(100) })
        .clock(clock.clone())
        .build();
    let (tx, mut rx) = tokio::sync::mpsc::channel(10);
    let held = limiter.try_acquire_owned().unwrap();
    for i in 0..4 {
        let (l, tx) = (limiter.clone(), tx.clone());
        tokio::spawn(async move {
            let p = l.acquire_owned().await.unwrap();
            tx.send((i, p)).await.unwrap();
        });
        tokio::task::yield_now().await;
    }
    drop(held); // a young queue: the oldest goes first
    let (first, p) = rx.recv().await.unwrap();
    assert_eq!(first, 0);
    clock.advance(Duration::from_millis(150)); // now the queue has stood for 150 ms
    drop(p);
    let (second, p) = rx.recv().await.unwrap();
    assert_eq!(second, 3, "a standing queue serves the newest first");
    drop(p);
}

/// CoDel: once the queue has stood for the interval, newcomers wait only the target.
#[tokio::test(start_paused = true)]
async fn codel_shortens_waits_in_a_standing_queue() {
    use spillway::clock::ManualClock;
    use spillway::limit::Codel;
    let clock = ManualClock::new();
    let limiter = ConcurrencyLimiter::builder(1)
        .queue(10)
        .queue_timeout(Duration::from_secs(1))
        .codel(Codel::default())
        .clock(clock.clone())
        .build();
    let _held = limiter.try_acquire_owned().unwrap();
    let l = limiter.clone();
    let early = tokio::spawn(async move { l.acquire_owned().await.map(drop).map_err(|e| e.reason()) });
    tokio::task::yield_now().await;
    clock.advance(Duration::from_millis(150));
    let start = tokio::time::Instant::now();
    let late = limiter.acquire().await.map(drop).map_err(|e| e.reason());
    assert_eq!(late, Err(RejectReason::Timeout));
    assert_eq!(start.elapsed(), Duration::from_millis(5), "the CoDel target, not the 1 s timeout");
    assert!(!early.is_finished(), "the early waiter keeps its full timeout");
    assert_eq!(early.await.unwrap(), Err(RejectReason::Timeout));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

/// Deadline-aware admission: refused at once when the predicted wait is longer than the
/// caller's remaining time.
#[tokio::test(flavor = "current_thread")]
async fn a_deadline_that_cannot_be_met_is_refused_at_once() {
    let clock = spillway::clock::ManualClock::new();
    let limiter = ConcurrencyLimiter::builder(1).queue(10).clock(clock.clone()).build();
    for _ in 0..200 {
        clock.advance(Duration::from_millis(10));
        drop(limiter.try_acquire().unwrap());
        limiter.stats(); // 100 releases a second, measured
    }
    let _held = limiter.try_acquire().unwrap();
    // One waiter ahead of nobody: predicted wait 1 / 100 s = 10 ms.
    let err = limiter.acquire_within(Duration::from_millis(5)).await.unwrap_err();
    assert_eq!(err.reason(), RejectReason::DeadlineUnreachable);
    assert_eq!(limiter.stats().rejected_deadline, 1);
    assert_eq!(limiter.stats().waiting, 0, "never queued");
}
