//! Parked senders or receivers, sync or async: a list of wakers behind a lock that is only
//! taken when somebody actually waits.
//!
//! Lost wake-ups are ruled out Dekker-style: a waiter registers (incrementing `count`, SeqCst)
//! and then re-checks the ring (whose positions are updated with SeqCst CAS); the other side
//! updates the ring and then reads `count` (SeqCst). One of the two sees the other.

use crate::sync::{AtomicUsize, Mutex, Ordering};
use std::collections::VecDeque;
use std::task::Waker;

#[derive(Debug, Default)]
pub(crate) struct Waiters {
    count: AtomicUsize,
    list: Mutex<List>,
}

#[derive(Debug, Default)]
struct List {
    next_key: u64,
    /// Grows to the largest number of simultaneous waiters, then is reused.
    entries: VecDeque<(u64, Waker)>,
}

impl Waiters {
    /// Registers (or refreshes) a waiter; `key` remembers its entry between polls.
    pub(crate) fn register(&self, key: &mut Option<u64>, waker: &Waker) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = *key {
            if let Some(entry) = list.entries.iter_mut().find(|(x, _)| *x == k) {
                if !entry.1.will_wake(waker) {
                    entry.1 = waker.clone();
                }
                return;
            }
        }
        let k = list.next_key;
        list.next_key += 1;
        list.entries.push_back((k, waker.clone()));
        self.count.store(list.entries.len(), Ordering::SeqCst);
        crate::sync::dekker_fence();
        *key = Some(k);
    }

    /// Removes a waiter. Returns `false` if it had already been picked by a notify (so the
    /// wake-up was spent on it).
    pub(crate) fn unregister(&self, key: &mut Option<u64>) -> bool {
        let Some(k) = key.take() else { return false };
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        match list.entries.iter().position(|(x, _)| *x == k) {
            Some(i) => {
                list.entries.remove(i);
                self.count.store(list.entries.len(), Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Wakes the longest waiter, if any. Costs one atomic load when nobody waits.
    #[inline]
    pub(crate) fn notify_one(&self) {
        crate::sync::dekker_fence();
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waker = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            let w = list.entries.pop_front();
            self.count.store(list.entries.len(), Ordering::SeqCst);
            w
        };
        if let Some((_, w)) = waker {
            w.wake();
        }
    }

    /// Wakes every waiter (on close).
    pub(crate) fn notify_all(&self) {
        let drained: Vec<(u64, Waker)> = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            self.count.store(0, Ordering::SeqCst);
            list.entries.drain(..).collect()
        };
        for (_, w) in drained {
            w.wake();
        }
    }
}
