//! Model-based property test of the concurrency limiter and its wait queue: random sequences
//! of acquisitions, releases, limit changes, queued waiters and cancellations.

use proptest::prelude::*;
use spillway::limit::{ConcurrencyLimiter, Permit, QueueOrder, RejectReason};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Clone)]
enum Op {
    TryAcquire,
    Release(usize),
    SetLimit(usize),
    Enqueue,
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::TryAcquire),
        3 => any::<usize>().prop_map(Op::Release),
        1 => (1usize..6).prop_map(Op::SetLimit),
        3 => Just(Op::Enqueue),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

type Wait<'a> = Pin<Box<dyn Future<Output = Result<Permit<'a>, spillway::limit::Rejected>> + 'a>>;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn limiter_matches_its_model(
        limit in 1usize..5,
        queue in 0usize..5,
        lifo in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let order = if lifo { QueueOrder::Lifo } else { QueueOrder::Fifo };
        let limiter = ConcurrencyLimiter::builder(limit).queue(queue).order(order).build();
        let mut cx = Context::from_waker(Waker::noop());
        let mut held: Vec<Permit<'_>> = Vec::new();
        // Waiters in the order they joined, with their join number.
        let mut waiting: Vec<(usize, Wait<'_>)> = Vec::new();
        let mut joined = 0usize;
        let mut current_limit = limit;

        for op in ops {
            let before = limiter.in_flight();
            match op {
                Op::TryAcquire => match limiter.try_acquire() {
                    Ok(p) => {
                        prop_assert!(waiting.is_empty(), "try_acquire barged past waiters");
                        prop_assert!(before < current_limit);
                        held.push(p);
                    }
                    Err(e) => {
                        prop_assert_eq!(e.reason(), RejectReason::AtCapacity);
                        prop_assert!(before >= current_limit || !waiting.is_empty());
                    }
                },
                Op::Release(i) => {
                    if !held.is_empty() {
                        let i = i % held.len();
                        drop(held.swap_remove(i));
                    }
                }
                Op::SetLimit(n) => {
                    limiter.set_limit(n);
                    current_limit = n;
                }
                Op::Enqueue => {
                    let mut fut: Wait<'_> = Box::pin(limiter.acquire());
                    match fut.as_mut().poll(&mut cx) {
                        Poll::Ready(Ok(p)) => {
                            prop_assert!(waiting.is_empty() && before < current_limit);
                            held.push(p);
                        }
                        Poll::Ready(Err(e)) => {
                            let full = waiting.len() >= queue;
                            prop_assert!(full, "refused ({:?}) with {} of {} queued", e.reason(), waiting.len(), queue);
                        }
                        Poll::Pending => {
                            waiting.push((joined, fut));
                            joined += 1;
                        }
                    }
                }
                Op::Cancel(i) => {
                    if !waiting.is_empty() {
                        let i = i % waiting.len();
                        drop(waiting.remove(i)); // a waiter leaves, granted or not
                    }
                }
            }
            // Let every waiter look at its state; the granted ones must be a prefix (FIFO) or a
            // suffix (LIFO) of the queue.
            let mut granted = Vec::new();
            let mut still = Vec::new();
            for (n, mut fut) in waiting.drain(..) {
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(Ok(p)) => {
                        held.push(p);
                        granted.push(n);
                    }
                    Poll::Ready(Err(e)) => prop_assert!(false, "a queued waiter failed: {e}"),
                    Poll::Pending => still.push((n, fut)),
                }
            }
            if let (Some(&g), Some((s, _))) = (granted.iter().max(), still.first()) {
                if !lifo {
                    prop_assert!(g < *s, "FIFO granted {g} before {s}");
                }
            }
            if let (Some(&g), Some((s, _))) = (granted.iter().min(), still.last()) {
                if lifo {
                    prop_assert!(g > *s, "LIFO granted {g} before {s}");
                }
            }
            waiting = still;

            let after = limiter.in_flight();
            prop_assert_eq!(after, held.len());
            // Above the limit only if a lowered limit is still draining, and never growing.
            prop_assert!(after <= current_limit || after <= before, "{after} in flight, limit {current_limit}");
            prop_assert!(waiting.len() <= queue);
            let stats = limiter.stats();
            prop_assert_eq!(stats.waiting, waiting.len());
            // Nobody waits while a permit is free.
            prop_assert!(waiting.is_empty() || after >= current_limit);
        }
        drop(waiting);
        drop(held);
        prop_assert_eq!(limiter.in_flight(), 0);
        prop_assert_eq!(limiter.stats().waiting, 0);
    }
}
