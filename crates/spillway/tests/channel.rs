//! Public-API tests of the channel under real threads and tasks.

use spillway::channel::{OverflowPolicy, RecvTimeoutError, SendError, SendOutcome, channel};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Four producers and four consumers on threads: every item arrives exactly once.
#[test]
fn mpmc_threads_deliver_every_item_once() {
    let (tx, rx) = channel::<u64>(16, OverflowPolicy::Wait(None));
    let per = 20_000u64;
    let sum = AtomicU64::new(0);
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        for p in 0..4 {
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..per {
                    assert_eq!(tx.send_blocking(p * per + i).unwrap(), SendOutcome::Sent);
                }
            });
        }
        drop(tx);
        for _ in 0..4 {
            let rx = rx.clone();
            let (sum, count) = (&sum, &count);
            s.spawn(move || {
                while let Some(v) = rx.recv_blocking() {
                    sum.fetch_add(v, Ordering::Relaxed);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let n = 4 * per;
    assert_eq!(count.into_inner(), n);
    assert_eq!(sum.into_inner(), n * (n - 1) / 2);
    let s = rx.stats();
    assert_eq!((s.sent, s.received, s.depth), (n, n, 0));
    assert_eq!(s.high_water, 16, "a 16-slot channel under 4 fast producers fills up");
}

/// The same with tasks on a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mpmc_tasks_deliver_every_item_once() {
    let (tx, rx) = channel::<u64>(8, OverflowPolicy::Wait(None));
    let per = 10_000u64;
    let mut producers = Vec::new();
    for p in 0..4 {
        let tx = tx.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..per {
                tx.send(p * per + i).await.unwrap();
            }
        }));
    }
    drop(tx);
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let rx = rx.clone();
        consumers.push(tokio::spawn(async move {
            let (mut sum, mut n) = (0u64, 0u64);
            while let Some(v) = rx.recv().await {
                sum += v;
                n += 1;
            }
            (sum, n)
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let (mut sum, mut n) = (0, 0);
    for c in consumers {
        let (s, k) = c.await.unwrap();
        sum += s;
        n += k;
    }
    let total = 4 * per;
    assert_eq!((n, sum), (total, total * (total - 1) / 2));
}

#[test]
fn close_both_ways() {
    let (tx, rx) = channel::<u8>(4, OverflowPolicy::Reject);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    drop(tx);
    assert!(!tx2.is_closed());
    tx2.try_send(2).unwrap();
    drop(tx2);
    assert_eq!(rx.recv_blocking(), Some(1));
    assert_eq!(rx.recv_blocking(), Some(2));
    assert_eq!(rx.recv_blocking(), None);

    let (tx, rx) = channel::<u8>(4, OverflowPolicy::Wait(None));
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.try_send(3), Err(SendError::Closed(3)));
    assert_eq!(tx.send_blocking(4), Err(SendError::Closed(4)));
}

/// A sender blocked on a full channel is released by the receivers going away.
#[test]
fn blocked_sender_wakes_when_receivers_leave() {
    let (tx, rx) = channel::<u8>(1, OverflowPolicy::Wait(None));
    tx.try_send(1).unwrap();
    let t = std::thread::spawn(move || tx.send_blocking(2));
    std::thread::sleep(Duration::from_millis(30));
    drop(rx);
    assert_eq!(t.join().unwrap(), Err(SendError::Closed(2)));
}

/// A blocked sender gets in as soon as a receiver takes an item, and its wait is counted.
#[test]
fn blocked_sender_is_woken_by_a_receive() {
    let (tx, rx) = channel::<u8>(1, OverflowPolicy::Wait(Some(Duration::from_secs(10))));
    tx.try_send(1).unwrap();
    let tx2 = tx.clone();
    let ready = Arc::new(std::sync::Barrier::new(2));
    let r = ready.clone();
    let t = std::thread::spawn(move || {
        r.wait();
        tx2.send_blocking(2)
    });
    ready.wait();
    std::thread::sleep(Duration::from_millis(50)); // the sender is blocked by now
    assert_eq!(rx.recv_blocking(), Some(1));
    assert_eq!(t.join().unwrap(), Ok(SendOutcome::Sent));
    assert_eq!(rx.recv_blocking(), Some(2));
    let s = tx.stats();
    assert_eq!(s.send_waits, 1);
    assert!(s.send_wait >= Duration::from_millis(10), "{s:?}");
}

#[test]
fn recv_timeout_times_out_then_receives() {
    let (tx, rx) = channel::<u8>(1, OverflowPolicy::Reject);
    assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout));
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.try_send(9).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(9));
    t.join().unwrap();
}

#[tokio::test(start_paused = true)]
async fn async_send_times_out_and_hands_the_item_back() {
    let (tx, _rx) = channel::<&str>(1, OverflowPolicy::Wait(Some(Duration::from_millis(250))));
    tx.send("a").await.unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(tx.send("b").await, Err(SendError::Timeout("b")));
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let s = tx.stats();
    assert_eq!((s.rejected, s.send_waits), (1, 1));
}

/// Dropping a pending `recv` future loses nothing: the item goes to the next receive.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_recv_future_loses_nothing() {
    let (tx, rx) = channel::<u32>(4, OverflowPolicy::Reject);
    let rx = Arc::new(rx);
    for round in 0..100 {
        let r = rx.clone();
        let pending = tokio::spawn(async move { r.recv().await });
        tokio::task::yield_now().await; // now parked in recv
        pending.abort();
        let _ = pending.await;
        tx.try_send(round).unwrap();
        assert_eq!(rx.recv().await, Some(round));
    }
}

/// An async receiver parked on an empty channel is woken by a sync sender on another thread.
#[tokio::test(flavor = "current_thread")]
async fn sync_sender_wakes_async_receiver() {
    let (tx, rx) = channel::<u32>(4, OverflowPolicy::Reject);
    let t = std::thread::spawn(move || {
        for i in 0..1000 {
            while tx.try_send(i).is_err() {
                std::thread::yield_now();
            }
        }
    });
    let mut expected = 0;
    while let Some(v) = rx.recv().await {
        assert_eq!(v, expected);
        expected += 1;
    }
    assert_eq!(expected, 1000);
    t.join().unwrap();
}
