//! Bounded channels against crossbeam-channel (sync) and tokio mpsc (async).

use crate::harness::{Row, compare, time_batch, time_per_op};
use spillway::channel::{OverflowPolicy, SendOutcome, channel};

const ITEMS: u64 = 1_000_000;
const CAP: usize = 1024;

pub(crate) fn rows(reps: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.push(compare(
        "channel_sync_spsc",
        "crossbeam-channel bounded(1024)",
        reps,
        ours_sync,
        crossbeam_sync,
    ));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    rows.push(compare(
        "channel_async_spsc",
        "tokio mpsc bounded(1024), 2 workers",
        reps,
        || rt.block_on(ours_async()),
        || rt.block_on(tokio_async()),
    ));

    let (tx, _rx) = channel::<u64>(CAP, OverflowPolicy::DropOldest);
    let (ctx, _crx) = crossbeam_channel::bounded::<u64>(CAP);
    for i in 0..CAP as u64 {
        let _ = tx.try_send(i);
        ctx.try_send(i).expect("room");
    }
    rows.push(compare(
        "channel_drop_oldest_full",
        "crossbeam try_send on a full channel (fails)",
        reps,
        || time_per_op(ITEMS * 5, || matches!(tx.try_send(1), Ok(SendOutcome::Replaced(_)))),
        || time_per_op(ITEMS * 5, || ctx.try_send(1).is_err()),
    ));
    rows
}

fn ours_sync() -> f64 {
    let (tx, rx) = channel::<u64>(CAP, OverflowPolicy::Wait(None));
    time_batch(ITEMS, || {
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..ITEMS {
                    let _ = tx.send_blocking(i);
                }
            });
            let mut sum = 0;
            while let Some(v) = rx.recv_blocking() {
                sum += v;
            }
            assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
        });
    })
}

fn crossbeam_sync() -> f64 {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAP);
    time_batch(ITEMS, || {
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..ITEMS {
                    tx.send(i).expect("receiver alive");
                }
            });
            let mut sum = 0;
            while let Ok(v) = rx.recv() {
                sum += v;
            }
            assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
        });
    })
}

async fn ours_async() -> f64 {
    let (tx, rx) = channel::<u64>(CAP, OverflowPolicy::Wait(None));
    let clock = spillway::clock::MonotonicClock::new();
    let start = spillway::clock::Clock::now(&clock);
    let producer = tokio::spawn(async move {
        for i in 0..ITEMS {
            let _ = tx.send(i).await;
        }
    });
    let consumer = tokio::spawn(async move {
        let mut sum = 0;
        while let Some(v) = rx.recv().await {
            sum += v;
        }
        sum
    });
    producer.await.expect("producer");
    assert_eq!(consumer.await.expect("consumer"), ITEMS * (ITEMS - 1) / 2);
    (spillway::clock::Clock::now(&clock) - start) as f64 / ITEMS as f64
}

async fn tokio_async() -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
    let clock = spillway::clock::MonotonicClock::new();
    let start = spillway::clock::Clock::now(&clock);
    let producer = tokio::spawn(async move {
        for i in 0..ITEMS {
            tx.send(i).await.expect("receiver alive");
        }
    });
    let consumer = tokio::spawn(async move {
        let mut sum = 0;
        while let Some(v) = rx.recv().await {
            sum += v;
        }
        sum
    });
    producer.await.expect("producer");
    assert_eq!(consumer.await.expect("consumer"), ITEMS * (ITEMS - 1) / 2);
    (spillway::clock::Clock::now(&clock) - start) as f64 / ITEMS as f64
}
