//! Blocking waits for sync callers: a thread parks, and a `Waker` that unparks it goes on the
//! same wait lists that async tasks use.

use crate::sync::thread;
use std::task::{Wake, Waker};
use std::time::Duration;

/// Wakes a parked thread.
struct Unpark(crate::sync::Thread);

impl Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// The current thread's waker, made once per thread.
#[cfg(not(loom))]
pub(crate) fn thread_waker() -> Waker {
    std::thread_local! {
        static WAKER: Waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    }
    WAKER.with(Waker::clone)
}

/// The current thread's waker (loom threads are not std threads: made per call).
#[cfg(loom)]
pub(crate) fn thread_waker() -> Waker {
    Waker::from(std::sync::Arc::new(Unpark(thread::current())))
}

/// Parks the current thread until woken (spuriously, perhaps) or until `deadline`, read on
/// `now`; returns `false`, without parking, once the deadline has passed.
pub(crate) fn park_until(deadline: Option<u64>, now: impl Fn() -> u64) -> bool {
    match deadline {
        None => {
            thread::park();
            true
        }
        Some(d) => {
            let now = now();
            if now >= d {
                return false;
            }
            park_timeout(Duration::from_nanos(d - now));
            true
        }
    }
}

#[cfg(not(loom))]
fn park_timeout(d: Duration) {
    std::thread::park_timeout(d);
}

#[cfg(loom)]
fn park_timeout(_: Duration) {
    // loom has no time: a timed park is a yield that may come back before anyone woke us.
    loom::thread::yield_now();
}
