//! The stream adapters against a real producer task, on tokio's paused clock.

use futures_core::Stream;
use spillway::rate::Quota;
use spillway::stream::{BackpressureExt, Dropped, Overflow};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

/// A channel's receiver as a stream: the hot source.
struct Feed(mpsc::Receiver<u64>);

impl Stream for Feed {
    type Item = u64;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        self.0.poll_recv(cx)
    }
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// A producer of `per_ms` items every millisecond (1..=total, in order) into a channel of
/// `capacity`; it waits when the channel is full (the source's own backpressure).
fn produce(total: u64, per_ms: u64, capacity: usize) -> Feed {
    let (tx, rx) = mpsc::channel(capacity);
    tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            for _ in 0..per_ms.min(total - n) {
                n += 1;
                if tx.send(n).await.is_err() {
                    return;
                }
            }
            sleep(Duration::from_millis(1)).await;
        }
    });
    Feed(rx)
}

#[tokio::test(start_paused = true)]
async fn a_ui_sampling_a_100k_per_second_feed_sees_each_frames_newest_value() {
    // The seeds' table: 100,000 updates a second, drawn 60 times a second.
    let mut frames = produce(100_000, 100, 1024).sample(Duration::from_millis(16));
    let (mut shown, mut last) = (0, 0);
    while let Some(v) = next(&mut frames).await {
        assert!(v > last, "frames go forward: {v} after {last}");
        last = v;
        shown += 1;
        // Drawing takes a while; the feed keeps coming meanwhile.
        sleep(Duration::from_millis(4)).await;
    }
    assert_eq!(last, 100_000, "the last value is shown");
    assert!((55..=70).contains(&shown), "{shown} frames in one second");
    assert_eq!(frames.dropped() + shown, 100_000);
}

#[tokio::test(start_paused = true)]
async fn buffer_policies_bound_the_queue_and_keep_their_promise() {
    // DropOldest: the newest are kept, in order.
    let mut newest = produce(10_000, 100, 256).buffer(32, Overflow::DropOldest);
    let mut seen = Vec::new();
    while let Some(v) = next(&mut newest).await {
        assert!(newest.len() < 32);
        seen.push(v);
        sleep(Duration::from_millis(2)).await;
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*seen.last().unwrap(), 10_000);
    assert_eq!(newest.dropped() + seen.len() as u64, 10_000);
    assert!(newest.dropped() > 0);

    // DropNewest: what is queued is never overwritten, so the first items all arrive.
    let mut oldest = produce(10_000, 100, 256).buffer(32, Overflow::DropNewest);
    let mut seen = Vec::new();
    while let Some(v) = next(&mut oldest).await {
        seen.push(v);
        sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(&seen[..32], &(1..=32).collect::<Vec<_>>()[..]);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(oldest.dropped() + seen.len() as u64, 10_000);

    // Block: everything, in order, and the producer is held back instead.
    let mut all = produce(2_000, 100, 16).buffer(8, Overflow::Block);
    let started = Instant::now();
    let mut expected = 1;
    while let Some(v) = next(&mut all).await {
        assert_eq!(v, expected);
        expected += 1;
        if v % 10 == 0 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(expected, 2_001);
    assert_eq!(all.dropped(), 0);
    // The consumer's pace (10 per ms), not the producer's (100 per ms), set the duration.
    assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn latest_gives_the_newest_and_drop_waits_for_a_fresh_one() {
    // (100 items: tokio's channels hand out at most 128 per task poll, its cooperative budget.)
    let (tx, rx) = mpsc::channel(1024);
    let mut latest = Feed(rx).on_backpressure_latest();
    for v in 1..=100 {
        tx.send(v).await.unwrap();
    }
    tokio::task::yield_now().await;
    assert_eq!(next(&mut latest).await, Some(100));
    assert_eq!(latest.dropped(), 99);
    tx.send(501).await.unwrap();
    assert_eq!(next(&mut latest).await, Some(501));

    let (tx, rx) = mpsc::channel(1024);
    let mut fresh = Feed(rx).on_backpressure_drop();
    for v in 1..=100 {
        tx.send(v).await.unwrap();
    }
    tokio::task::yield_now().await;
    tokio::spawn(async move {
        sleep(Duration::from_millis(5)).await;
        tx.send(777).await.unwrap();
    });
    let asked = Instant::now();
    assert_eq!(next(&mut fresh).await, Some(777), "the stale 100 are dropped");
    assert!(asked.elapsed() >= Duration::from_millis(5));
    assert_eq!(fresh.dropped(), 100);
    assert_eq!(next(&mut fresh).await, None);
}

#[tokio::test(start_paused = true)]
async fn throttle_paces_without_dropping() {
    let (tx, rx) = mpsc::channel(64);
    for v in 1..=25 {
        tx.send(v).await.unwrap();
    }
    drop(tx);
    // 10 a second with a burst of 5: 5 at once, then one every 100 ms.
    let quota = Quota::per_second(10).unwrap().with_burst(5).unwrap();
    let mut paced = Feed(rx).throttle(quota);
    let started = Instant::now();
    let mut got = Vec::new();
    while let Some(v) = next(&mut paced).await {
        got.push((v, started.elapsed()));
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (1..=25).collect::<Vec<_>>());
    assert!(got[4].1 < Duration::from_millis(1), "the burst passes at once");
    let last = got[24].1;
    assert!((Duration::from_millis(1990)..=Duration::from_millis(2010)).contains(&last), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn batches_fill_up_or_leave_after_max_wait() {
    let mut full = spillway::stream::iter(1..=10).batch(4, Duration::from_secs(1));
    assert_eq!(next(&mut full).await, Some(vec![1, 2, 3, 4]));
    assert_eq!(next(&mut full).await, Some(vec![5, 6, 7, 8]));
    assert_eq!(next(&mut full).await, Some(vec![9, 10]), "the end flushes the rest");
    assert_eq!(next(&mut full).await, None);

    // One item every millisecond, batches of up to 100 waiting at most 35 ms.
    let mut slow = produce(100, 1, 8).batch(100, Duration::from_millis(35));
    let mut batches = Vec::new();
    let started = Instant::now();
    while let Some(b) = next(&mut slow).await {
        batches.push((b, started.elapsed()));
    }
    let items: Vec<u64> = batches.iter().flat_map(|b| b.0.clone()).collect();
    assert_eq!(items, (1..=100).collect::<Vec<_>>(), "nothing lost or reordered");
    // Each batch left max_wait after its first item (one every ms): 36 items would not fit.
    assert!(batches.len() >= 3, "{} batches", batches.len());
    assert!(
        batches.iter().all(|b| b.0.len() <= 36),
        "{:?}",
        batches.iter().map(|b| b.0.len()).collect::<Vec<_>>()
    );
}
