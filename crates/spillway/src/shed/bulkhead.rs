//! Bulkheads: partitions with guaranteed shares that may borrow spare capacity.

use crate::sync::{Mutex, MutexGuard};
use std::fmt;
use std::sync::Arc;

/// A capacity split between partitions (tenants, routes, dependencies). Each partition is
/// guaranteed its share: it can always reach it, whatever the others do. Beyond it, a partition
/// may borrow capacity that nobody has a claim on: a request is admitted if the total stays
/// within capacity after setting aside the unused guarantees of the other partitions.
///
/// ```
/// use spillway::shed::Bulkhead;
///
/// // 10 slots: "api" is guaranteed 6, "batch" 2; 2 are free for either to borrow.
/// let bulkhead = Bulkhead::new(10, &[6, 2]);
/// let batch: Vec<_> = (0..4).map(|_| bulkhead.try_acquire(1).unwrap()).collect(); // 2 + 2 borrowed
/// assert!(bulkhead.try_acquire(1).is_none()); // the rest is api's guarantee
/// let api: Vec<_> = (0..6).map(|_| bulkhead.try_acquire(0).unwrap()).collect();
/// assert!(bulkhead.try_acquire(0).is_none());
/// # drop((batch, api));
/// ```
pub struct Bulkhead {
    capacity: usize,
    guaranteed: Box<[usize]>,
    state: Mutex<State>,
}

struct State {
    in_flight: Box<[usize]>,
    total: usize,
}

impl Bulkhead {
    /// `capacity` slots shared by `guaranteed.len()` partitions with those guarantees (scaled
    /// down proportionally if they add up to more than the capacity).
    pub fn new(capacity: usize, guaranteed: &[usize]) -> Self {
        let sum: usize = guaranteed.iter().sum();
        let guaranteed: Box<[usize]> = if sum > capacity {
            guaranteed.iter().map(|g| g * capacity / sum).collect()
        } else {
            guaranteed.into()
        };
        let n = guaranteed.len();
        Self { capacity, guaranteed, state: Mutex::new(State { in_flight: vec![0; n].into(), total: 0 }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `partition`, or `None` (also for an unknown partition).
    pub fn try_acquire(&self, partition: usize) -> Option<BulkheadPermit<'_>> {
        self.take(partition).then(|| BulkheadPermit { bulkhead: self, partition })
    }

    /// [`try_acquire`](Self::try_acquire) on a shared bulkhead, with a permit that owns a handle
    /// on it (for moving into a future).
    ///
    /// ```
    /// use spillway::shed::Bulkhead;
    /// use std::sync::Arc;
    ///
    /// let b = Arc::new(Bulkhead::new(2, &[1, 1]));
    /// let p = Bulkhead::try_acquire_owned(&b, 0).unwrap();
    /// assert_eq!(b.in_flight(0), 1);
    /// drop(p);
    /// assert_eq!(b.in_flight(0), 0);
    /// ```
    pub fn try_acquire_owned(this: &Arc<Self>, partition: usize) -> Option<OwnedBulkheadPermit> {
        this.take(partition).then(|| OwnedBulkheadPermit { bulkhead: this.clone(), partition })
    }

    fn release(&self, partition: usize) {
        let mut s = self.lock();
        s.in_flight[partition] -= 1;
        s.total -= 1;
    }

    fn take(&self, partition: usize) -> bool {
        let mut s = self.lock();
        let Some(&mine) = s.in_flight.get(partition) else { return false };
        let admit = mine < self.guaranteed[partition] || {
            let reserved: usize = (0..self.guaranteed.len())
                .filter(|&p| p != partition)
                .map(|p| self.guaranteed[p].saturating_sub(s.in_flight[p]))
                .sum();
            s.total + reserved < self.capacity
        };
        if !admit || s.total >= self.capacity {
            return false;
        }
        s.in_flight[partition] += 1;
        s.total += 1;
        true
    }

    /// Slots in use by `partition`.
    pub fn in_flight(&self, partition: usize) -> usize {
        self.lock().in_flight.get(partition).copied().unwrap_or(0)
    }
}

/// A slot in a [`Bulkhead`] partition, released on drop.
///
/// ```
/// use spillway::shed::Bulkhead;
///
/// let b = Bulkhead::new(1, &[1]);
/// let p = b.try_acquire(0).unwrap();
/// assert_eq!(b.in_flight(0), 1);
/// drop(p);
/// assert_eq!(b.in_flight(0), 0);
/// ```
#[must_use = "the slot is released as soon as it is dropped"]
pub struct BulkheadPermit<'a> {
    bulkhead: &'a Bulkhead,
    partition: usize,
}

impl Drop for BulkheadPermit<'_> {
    fn drop(&mut self) {
        self.bulkhead.release(self.partition);
    }
}

/// A slot in a shared [`Bulkhead`] partition, released on drop; see
/// [`Bulkhead::try_acquire_owned`].
#[must_use = "the slot is released as soon as it is dropped"]
#[derive(Debug)]
pub struct OwnedBulkheadPermit {
    bulkhead: Arc<Bulkhead>,
    partition: usize,
}

impl Drop for OwnedBulkheadPermit {
    fn drop(&mut self) {
        self.bulkhead.release(self.partition);
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("capacity", &self.capacity)
            .field("guaranteed", &self.guaranteed)
            .finish()
    }
}

impl fmt::Debug for BulkheadPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit").field("partition", &self.partition).finish()
    }
}
