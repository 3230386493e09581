//! Model-based property test of the channel: random `try_send` / `try_recv` sequences under each
//! overflow policy against a `VecDeque`, with the accounting identities checked after every step.

use proptest::prelude::*;
use spillway::channel::{OverflowPolicy, SendError, SendOutcome, TryRecvError, channel};
use std::collections::VecDeque;
use std::time::Duration;

fn policy() -> impl Strategy<Value = OverflowPolicy> {
    prop_oneof![
        Just(OverflowPolicy::Reject),
        Just(OverflowPolicy::DropOldest),
        Just(OverflowPolicy::DropNewest),
        Just(OverflowPolicy::Wait(Some(Duration::from_millis(1)))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn channel_matches_a_bounded_deque(
        capacity in 1usize..8,
        policy in policy(),
        ops in prop::collection::vec(prop_oneof![3 => Just(true), 2 => Just(false)], 1..200),
    ) {
        let (tx, rx) = channel::<u32>(capacity, policy);
        let mut model: VecDeque<u32> = VecDeque::new();
        let (mut offered, mut evicted, mut dropped, mut rejected, mut received) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for (i, send) in ops.into_iter().enumerate() {
            let v = i as u32;
            if send {
                offered += 1;
                let got = tx.try_send(v);
                if model.len() < capacity {
                    model.push_back(v);
                    prop_assert_eq!(got, Ok(SendOutcome::Sent));
                } else {
                    match policy {
                        OverflowPolicy::DropOldest => {
                            let old = model.pop_front().unwrap();
                            model.push_back(v);
                            evicted += 1;
                            prop_assert_eq!(got, Ok(SendOutcome::Replaced(old)));
                        }
                        OverflowPolicy::DropNewest => {
                            dropped += 1;
                            prop_assert_eq!(got, Ok(SendOutcome::Dropped(v)));
                        }
                        _ => {
                            rejected += 1;
                            prop_assert_eq!(got, Err(SendError::Full(v)));
                        }
                    }
                }
            } else {
                match model.pop_front() {
                    Some(m) => {
                        received += 1;
                        prop_assert_eq!(rx.try_recv(), Ok(m));
                    }
                    None => prop_assert_eq!(rx.try_recv(), Err(TryRecvError::Empty)),
                }
            }
            let s = tx.stats();
            prop_assert!(s.depth <= capacity);
            prop_assert_eq!(s.depth, model.len());
            prop_assert!(s.high_water >= s.depth && s.high_water <= capacity);
            prop_assert_eq!((s.evicted, s.dropped_newest, s.rejected, s.received), (evicted, dropped, rejected, received));
            prop_assert_eq!(s.sent, s.received + s.evicted + s.depth as u64);
            prop_assert_eq!(offered, s.sent + s.rejected + s.dropped_newest);
        }
        // Closing: the receiver drains what is left, then sees the end.
        drop(tx);
        for m in model {
            prop_assert_eq!(rx.try_recv(), Ok(m));
        }
        prop_assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }
}
