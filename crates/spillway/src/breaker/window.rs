//! The breaker's sliding windows: the last `n` outcomes, or the last `n` one-second buckets.

use super::Window;

const SECOND: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

/// Outcome counts over a sliding window, fixed in size.
#[derive(Debug)]
pub(super) struct Outcomes {
    kind: Window,
    /// Count window: one bucket per call (a ring); time window: one per second.
    buckets: Box<[Bucket]>,
    next: usize,
    totals: (u64, u64, u64),
}

impl Outcomes {
    pub(super) fn new(kind: Window) -> Self {
        let n = match kind {
            Window::Count(n) | Window::Time(n) => n.max(1) as usize,
        };
        Self { kind, buckets: vec![Bucket::default(); n].into_boxed_slice(), next: 0, totals: (0, 0, 0) }
    }

    pub(super) fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        self.next = 0;
        self.totals = (0, 0, 0);
    }

    pub(super) fn record(&mut self, now: u64, failed: bool, slow: bool) {
        let (f, s) = (u64::from(failed), u64::from(slow));
        match self.kind {
            Window::Count(_) => {
                let b = &mut self.buckets[self.next];
                self.totals.0 -= b.calls;
                self.totals.1 -= b.failures;
                self.totals.2 -= b.slow;
                *b = Bucket { epoch: 0, calls: 1, failures: f, slow: s };
                self.totals.0 += 1;
                self.totals.1 += f;
                self.totals.2 += s;
                self.next = (self.next + 1) % self.buckets.len();
            }
            Window::Time(_) => {
                let epoch = now / SECOND + 1;
                let i = (epoch % self.buckets.len() as u64) as usize;
                let b = &mut self.buckets[i];
                if b.epoch != epoch {
                    *b = Bucket { epoch, ..Bucket::default() };
                }
                b.calls += 1;
                b.failures += f;
                b.slow += s;
            }
        }
    }

    /// (calls, failures, slow calls) in the window.
    pub(super) fn totals(&self, now: u64) -> (u64, u64, u64) {
        match self.kind {
            Window::Count(_) => self.totals,
            Window::Time(n) => {
                let epoch = now / SECOND + 1;
                let oldest = epoch.saturating_sub(u64::from(n.max(1)) - 1);
                self.buckets
                    .iter()
                    .filter(|b| b.epoch >= oldest && b.epoch <= epoch)
                    .fold((0, 0, 0), |t, b| (t.0 + b.calls, t.1 + b.failures, t.2 + b.slow))
            }
        }
    }
}
