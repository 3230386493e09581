//! The bounded wait queue of a [`ConcurrencyLimiter`](super::ConcurrencyLimiter): a slab of
//! `capacity` slots allocated once, linked into a doubly-linked list by index, so that joining,
//! leaving from the middle (a cancelled waiter) and being granted from either end are O(1) and
//! allocate nothing. Always used under the limiter's mutex.

use std::task::Waker;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
enum State {
    Free,
    Waiting(Option<Waker>),
    Granted,
}

#[derive(Debug)]
struct Slot {
    state: State,
    /// Bumped each time the slot is freed, so a stale handle can never touch a new waiter.
    generation: u32,
    prev: u32,
    next: u32,
}

/// A waiter's handle on its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    index: u32,
    generation: u32,
}

/// What became of a waiter that leaves the queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// It was still waiting: nothing owed.
    Waiting,
    /// It had been granted a permit it never picked up: the caller must release it.
    Granted,
    /// The ticket was stale.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct WaitQueue {
    slots: Box<[Slot]>,
    head: u32,
    tail: u32,
    free: u32,
    len: usize,
    /// When the queue last went from empty to non-empty (clock nanoseconds).
    busy_since: u64,
}

impl WaitQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.min(NIL as usize - 1);
        let slots = (0..capacity)
            .map(|i| Slot {
                state: State::Free,
                generation: 0,
                prev: NIL,
                next: if i + 1 < capacity { (i + 1) as u32 } else { NIL },
            })
            .collect();
        Self { slots, head: NIL, tail: NIL, free: if capacity > 0 { 0 } else { NIL }, len: 0, busy_since: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the queue has been non-empty for longer than `interval` (CoDel's "standing
    /// queue": a queue that never drains is latency, not a buffer for bursts).
    pub(crate) fn congested(&self, now: u64, interval: u64) -> bool {
        self.len > 0 && now.saturating_sub(self.busy_since) > interval
    }

    /// Joins at the back at time `now`; `None` if full.
    pub(crate) fn push(&mut self, waker: Waker, now: u64) -> Option<Ticket> {
        let index = self.free;
        if index == NIL {
            return None;
        }
        if self.len == 0 {
            self.busy_since = now;
        }
        let tail = self.tail;
        let slot = &mut self.slots[index as usize];
        self.free = slot.next;
        slot.state = State::Waiting(Some(waker));
        slot.prev = tail;
        slot.next = NIL;
        let generation = slot.generation;
        match tail {
            NIL => self.head = index,
            t => self.slots[t as usize].next = index,
        }
        self.tail = index;
        self.len += 1;
        Some(Ticket { index, generation })
    }

    /// Refreshes a waiting ticket's waker; returns whether the ticket has been granted.
    pub(crate) fn poll(&mut self, ticket: Ticket, waker: &Waker) -> Option<bool> {
        let slot = self.slots.get_mut(ticket.index as usize)?;
        if slot.generation != ticket.generation {
            return None;
        }
        match &mut slot.state {
            State::Granted => Some(true),
            State::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *w = Some(waker.clone());
                }
                Some(false)
            }
            State::Free => None,
        }
    }

    /// Grants the front (FIFO) or back (LIFO) waiter: unlinks it, marks it granted and returns
    /// its waker to wake once the lock is released.
    pub(crate) fn grant(&mut self, lifo: bool) -> Option<Waker> {
        let index = if lifo { self.tail } else { self.head };
        if index == NIL {
            return None;
        }
        self.unlink(index);
        let slot = &mut self.slots[index as usize];
        match std::mem::replace(&mut slot.state, State::Granted) {
            State::Waiting(w) => w,
            other => unreachable!("a linked slot is waiting, found {other:?}"),
        }
    }

    /// The waiter leaves (it got its permit, timed out or was cancelled): frees its slot.
    pub(crate) fn leave(&mut self, ticket: Ticket) -> Left {
        let Some(slot) = self.slots.get(ticket.index as usize) else { return Left::Unknown };
        if slot.generation != ticket.generation {
            return Left::Unknown;
        }
        let left = match slot.state {
            State::Waiting(_) => {
                self.unlink(ticket.index);
                Left::Waiting
            }
            State::Granted => Left::Granted,
            State::Free => return Left::Unknown,
        };
        let slot = &mut self.slots[ticket.index as usize];
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        slot.next = self.free;
        slot.prev = NIL;
        self.free = ticket.index;
        left
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next) = {
            let s = &self.slots[index as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_lifo_cancel_and_reuse() {
        let w = Waker::noop();
        let mut q = WaitQueue::new(3);
        let a = q.push(w.clone(), 0).unwrap();
        let b = q.push(w.clone(), 0).unwrap();
        let c = q.push(w.clone(), 0).unwrap();
        assert!(q.push(w.clone(), 0).is_none());
        assert!(q.congested(101, 100) && !q.congested(100, 100));
        assert_eq!(q.leave(b), Left::Waiting); // cancelled from the middle
        assert_eq!(q.len(), 2);
        assert!(q.grant(false).is_some()); // a, the oldest
        assert_eq!(q.poll(a, w), Some(true));
        assert_eq!(q.poll(c, w), Some(false));
        assert!(q.grant(true).is_some()); // c, the newest
        assert_eq!(q.len(), 0);
        assert!(q.grant(false).is_none());
        assert_eq!(q.leave(a), Left::Granted);
        assert_eq!(q.leave(a), Left::Unknown); // stale
        assert_eq!(q.leave(c), Left::Granted);
        let d = q.push(w.clone(), 0).unwrap();
        assert_eq!(q.poll(b, w), None, "b's slot was reused: its old ticket is stale");
        assert_eq!(q.leave(d), Left::Waiting);
        assert!(WaitQueue::new(0).push(w.clone(), 0).is_none());
    }
}
