//! A bounded lock-free MPMC ring: the storage under [`super::Sender`] / [`super::Receiver`].
//!
//! The algorithm is Dmitry Vyukov's bounded MPMC queue, as crossbeam's `ArrayQueue` also uses it:
//! each slot carries a *stamp* that says whose turn it is. Positions (`head`, `tail`) are a lap
//! number and an index packed into one `usize`: `lap · one_lap + index`, with `one_lap` the next
//! power of two above the capacity.
//!
//! - slot `i` is free for the push at position `p` when its stamp equals `p`;
//! - after the push writes, the stamp becomes `p + 1`: full for the pop at position `p`;
//! - after the pop reads, the stamp becomes `p + one_lap`: free for the push one lap later.
//!
//! A push claims its position with a compare-and-swap on `tail`, then owns the slot until it
//! publishes the stamp; a pop likewise on `head`. Nothing else touches a slot's value.
//!
//! This is the only `unsafe` in the core: the slot values are `MaybeUninit<T>` behind an
//! `UnsafeCell`, and the stamps are the proof of exclusive access. `tests/loom_channel.rs` model
//! checks it.
#![allow(unsafe_code)]

use crate::sync::{AtomicU64, AtomicUsize, Ordering, Padded, UnsafeCell, fence, spin_loop};
use std::mem::MaybeUninit;

/// Waits a little longer each time (1, 2, 4 … 64 spins) while another thread finishes its half
/// of an operation: retrying at once only steals back the cache line it is writing.
#[inline]
fn pause(step: &mut u32) {
    #[cfg(not(loom))]
    for _ in 0..(1u32 << (*step).min(6)) {
        spin_loop();
    }
    #[cfg(loom)]
    spin_loop();
    *step += 1;
}

struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

pub(crate) struct Ring<T> {
    head: Padded<AtomicUsize>,
    tail: Padded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    /// Values evicted from each slot by [`Ring::push_or_replace`]. Only the slot's owner of the
    /// moment writes an entry, so a plain load and store suffice: no contended read-modify-write.
    /// Kept apart from the slots so that channels that never evict keep 16-byte slots.
    evicted: Box<[AtomicU64]>,
    one_lap: usize,
}

// SAFETY: the ring moves `T`s between threads (hence `T: Send`) and hands each value to exactly
// one thread: a slot's value is only accessed by the thread that won the CAS on its position,
// and the stamp's release/acquire pair orders that access with the next owner's.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; `&Ring` only gives access to values through push/pop, one owner at a time.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring of exactly `capacity` slots (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let slots = (0..capacity)
            .map(|i| Slot { stamp: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        Self {
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            slots,
            evicted: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            one_lap: (capacity + 1).next_power_of_two(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The position after `pos`.
    #[inline]
    fn next(&self, pos: usize) -> usize {
        let index = pos & (self.one_lap - 1);
        if index + 1 < self.slots.len() {
            pos + 1
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Appends `value`, or hands it back if the ring is full. Returns whether this push started
    /// a new pass around the ring (the caller samples the depth then: once a lap, at no cost on
    /// the other pushes).
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<bool, T> {
        self.push_with(value, false).map(|(_, new_lap)| new_lap)
    }

    /// Appends `value`; when the ring is full, evicts the oldest value in the same step and
    /// returns it.
    #[inline]
    pub(crate) fn push_or_replace(&self, value: T) -> Option<T> {
        match self.push_with(value, true) {
            Ok((evicted, _)) => evicted,
            Err(_) => unreachable!("a replacing push never reports full"),
        }
    }

    /// The push loop. When the ring is full it hands `value` back, or, with `replace`, evicts:
    ///
    /// when full, the slot at `tail` holds the oldest value (position `tail − one_lap`, which is
    /// then `head`). Winning the CAS on `head` claims that slot as a pop would; no push can claim
    /// `tail` meanwhile, because the slot's stamp still says "full". So the evictor swaps the
    /// value in place, marks the slot full for the pop at `tail` and moves `tail` on: one CAS
    /// for what would otherwise be a failed push, a pop and a push.
    #[inline(always)]
    fn push_with(&self, value: T, replace: bool) -> Result<(Option<T>, bool), T> {
        let mut step = 0;
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let index = tail & (self.one_lap - 1);
            let slot = &self.slots[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                match self.tail.compare_exchange_weak(
                    tail,
                    self.next(tail),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS on `tail` at a slot whose stamp is `tail` makes
                        // this thread the slot's only owner; the slot is empty (its last value, if
                        // any, was read by the pop that set the stamp to `tail`).
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok((None, index == 0));
                    }
                    Err(t) => {
                        pause(&mut step);
                        tail = t;
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // The slot still holds the value from one lap ago: full, unless a pop is under way.
                if replace {
                    let head = tail.wrapping_sub(self.one_lap);
                    if self
                        .head
                        .compare_exchange_weak(head, self.next(head), Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                    {
                        // SAFETY: winning the CAS on `head` at a slot whose stamp is `head + 1`
                        // makes this thread its only owner (as in `pop`), and the slot holds an
                        // initialised value; no push can take it while its stamp is `head + 1`.
                        let old = slot.value.with_mut(|p| unsafe {
                            std::mem::replace(&mut *p, MaybeUninit::new(value)).assume_init()
                        });
                        let evicted = &self.evicted[index];
                        evicted.store(evicted.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                        slot.stamp.store(tail + 1, Ordering::Release);
                        // Release suffices: the number of values did not change, so no receiver
                        // can be deciding to sleep on an empty ring, and no push moved `tail`.
                        self.tail.store(self.next(tail), Ordering::Release);
                        return Ok((Some(old), false));
                    }
                    // A pop moved `head`: there may be room now.
                } else {
                    fence(Ordering::SeqCst);
                    let head = self.head.load(Ordering::Relaxed);
                    if head.wrapping_add(self.one_lap) == tail {
                        return Err(value);
                    }
                }
                pause(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                // Another push claimed this position and has not published it yet.
                pause(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Values evicted by [`push_or_replace`](Self::push_or_replace) so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }

    /// Removes the oldest value, or `None` if the ring is empty.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<T> {
        let mut step = 0;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[head & (self.one_lap - 1)];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head + 1 {
                match self.head.compare_exchange_weak(
                    head,
                    self.next(head),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS on `head` at a slot whose stamp is `head + 1`
                        // makes this thread its only owner, and the push that set that stamp
                        // wrote an initialised value (release/acquire on the stamp).
                        let value = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
                        slot.stamp.store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Some(value);
                    }
                    Err(h) => {
                        pause(&mut step);
                        head = h;
                    }
                }
            } else if stamp == head {
                // Nothing pushed here yet: empty, unless a push is under way.
                fence(Ordering::SeqCst);
                let tail = self.tail.load(Ordering::Relaxed);
                if tail == head {
                    return None;
                }
                pause(&mut step);
                head = self.head.load(Ordering::Relaxed);
            } else {
                pause(&mut step);
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Values pushed and not yet popped (a consistent snapshot of head and tail).
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                return self.distance(head, tail);
            }
        }
    }

    /// Values between positions `head` and `tail`.
    #[inline]
    pub(crate) fn distance(&self, head: usize, tail: usize) -> usize {
        let mask = self.one_lap - 1;
        let (h, t) = (head & mask, tail & mask);
        if h < t {
            t - h
        } else if h > t {
            self.slots.len() - h + t
        } else if tail == head {
            0
        } else {
            self.slots.len()
        }
    }

    /// How many values have passed position 0 to reach `pos`: laps × capacity + index.
    pub(crate) fn count(&self, pos: usize) -> u64 {
        let laps = (pos / self.one_lap) as u64;
        laps * self.slots.len() as u64 + (pos & (self.one_lap - 1)) as u64
    }

    /// Total pushes and pops so far (wrapping after 2⁶⁴ / one_lap laps).
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.count(self.tail.load(Ordering::SeqCst)), self.count(self.head.load(Ordering::SeqCst)))
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_full_empty_and_wraparound() {
        let r = Ring::new(3);
        for lap in 0..5 {
            assert!(r.push(lap * 10).is_ok());
            assert!(r.push(lap * 10 + 1).is_ok());
            assert!(r.push(lap * 10 + 2).is_ok());
            assert_eq!(r.push(99), Err(99));
            assert_eq!(r.len(), 3);
            assert_eq!(r.pop(), Some(lap * 10));
            assert_eq!(r.pop(), Some(lap * 10 + 1));
            assert_eq!(r.pop(), Some(lap * 10 + 2));
            assert_eq!(r.pop(), None);
            assert_eq!(r.len(), 0);
        }
        assert_eq!(r.totals(), (15, 15));
    }

    #[test]
    fn replace_evicts_the_oldest_in_order() {
        let r = Ring::new(3);
        for i in 0..3 {
            assert_eq!(r.push_or_replace(i), None);
        }
        for i in 3..10 {
            assert_eq!(r.push_or_replace(i), Some(i - 3));
            assert_eq!(r.len(), 3);
        }
        assert_eq!(r.evicted(), 7);
        assert_eq!((r.pop(), r.pop(), r.pop(), r.pop()), (Some(7), Some(8), Some(9), None));
        assert_eq!(r.totals(), (10, 10)); // pops include the 7 evictions
    }

    #[test]
    fn drops_what_it_holds() {
        let marker = std::sync::Arc::new(());
        let r = Ring::new(4);
        r.push(marker.clone()).unwrap();
        r.push(marker.clone()).unwrap();
        drop(r);
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    }

    #[test]
    fn mpmc_every_value_exactly_once() {
        let r = std::sync::Arc::new(Ring::new(64));
        let per = 50_000u64;
        let sum = std::sync::atomic::AtomicU64::new(0);
        let got = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for p in 0..2 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..per {
                        let mut v = p * per + i;
                        while let Err(back) = r.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..2 {
                s.spawn(|| {
                    while got.load(std::sync::atomic::Ordering::Relaxed) < 2 * per {
                        if let Some(v) = r.pop() {
                            sum.fetch_add(v, std::sync::atomic::Ordering::Relaxed);
                            got.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        let n = 2 * per;
        assert_eq!(sum.into_inner(), n * (n - 1) / 2);
    }
}
