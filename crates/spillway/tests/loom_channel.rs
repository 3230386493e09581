//! Loom model checks of the channel's lock-free ring and its wake-ups.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release -p spillway --test loom_channel`
#![cfg(loom)]

use loom::thread;
use spillway::channel::{OverflowPolicy, SendOutcome, channel};

/// Two senders race for the last slot: exactly one gets in, and it is what comes out.
#[test]
fn racing_senders_on_the_last_slot() {
    loom::model(|| {
        let (tx, rx) = channel::<u8>(1, OverflowPolicy::Reject);
        let tx2 = tx.clone();
        let t = thread::spawn(move || tx2.try_send(2).is_ok());
        let mine = tx.try_send(1).is_ok();
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs);
        assert_eq!(rx.try_recv().unwrap(), if mine { 1 } else { 2 });
        assert!(rx.try_recv().is_err());
    });
}

/// A sender and a receiver race on a one-slot ring that wraps around: nothing lost or doubled.
#[test]
fn send_and_receive_race_across_the_wrap() {
    loom::model(|| {
        let (tx, rx) = channel::<u8>(1, OverflowPolicy::Reject);
        let _ = tx.try_send(1).unwrap();
        let t = thread::spawn(move || tx.try_send(2).is_ok());
        let first = rx.try_recv().ok();
        let sent = t.join().unwrap();
        let second = rx.try_recv().ok();
        assert_eq!(first, Some(1));
        assert_eq!(second, sent.then_some(2));
    });
}

/// Drop-oldest racing a receiver: every item is received, evicted (handed back) or still
/// queued, exactly once.
#[test]
fn drop_oldest_racing_a_receiver() {
    loom::model(|| {
        let (tx, rx) = channel::<u8>(1, OverflowPolicy::DropOldest);
        let _ = tx.try_send(0).unwrap();
        let t = thread::spawn(move || match tx.try_send(1).unwrap() {
            SendOutcome::Replaced(old) => vec![old],
            _ => vec![],
        });
        let mut seen: Vec<u8> = rx.try_recv().ok().into_iter().collect();
        seen.extend(t.join().unwrap());
        seen.extend(rx.try_recv().ok());
        seen.sort();
        assert_eq!(seen, [0, 1]);
    });
}

/// A receiver that parks on an empty channel is always woken by the send (no lost wake-up).
#[test]
fn blocking_receive_is_woken() {
    loom::model(|| {
        let (tx, rx) = channel::<u8>(1, OverflowPolicy::Wait(None));
        let t = thread::spawn(move || tx.send_blocking(7).is_ok());
        assert_eq!(rx.recv_blocking(), Some(7));
        assert!(t.join().unwrap());
    });
}
