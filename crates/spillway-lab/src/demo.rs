//! `spillway demo`: a producer twice as fast as its consumer, four ways.
//!
//! 1. **No backpressure**: a queue large enough never to fill during the run. Everything is
//!    accepted; the queue and the wait grow every second without bound.
//! 2. **Bounded queue, reject when full**: the wait is capped by `capacity / consumer rate`; the
//!    excess is refused at once, with a `retry_after` the producer could act on.
//! 3. **Bounded queue, drop oldest**: for live data (tickers, metrics) where the newest matters:
//!    the consumer always works on fresh items.
//! 4. **Producer throttled**: the producer asks a GCRA rate limiter set to the consumer's rate and
//!    sleeps out each `retry_after`: it slows down, nothing is refused and nothing waits.
//!
//! Every number printed is measured on real threads and the real clock.

use anyhow::{Context, Result};
use spillway::channel::{self, OverflowPolicy, Receiver, Sender};
use spillway::clock::{Clock, MonotonicClock};
use spillway::rate::{Gcra, Quota, RateLimit, RateLimiter};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to run.
///
/// ```
/// use spillway_lab::demo::DemoOptions;
///
/// let o = DemoOptions::default(); // the seeds' picture
/// assert_eq!((o.produce_rate, o.consume_rate, o.queue), (1000, 500, 100));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Seconds per scenario.
    pub seconds: u32,
    /// Producer attempts per second.
    pub produce_rate: u32,
    /// Items the consumer can serve per second.
    pub consume_rate: u32,
    /// Capacity of the bounded queues.
    pub queue: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { seconds: 4, produce_rate: 1000, consume_rate: 500, queue: 100 }
    }
}

/// The four contestants.
///
/// ```
/// use spillway_lab::demo::Scenario;
///
/// assert_eq!(Scenario::ALL.len(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A queue that never fills during the run.
    Unprotected,
    /// Bounded, refuse when full.
    Reject,
    /// Bounded, evict the oldest item when full.
    DropOldest,
    /// Bounded, and the producer follows a rate limiter's `retry_after`.
    Throttled,
}

impl Scenario {
    /// All of them, in the order the demo runs them.
    pub const ALL: [Scenario; 4] = [Self::Unprotected, Self::Reject, Self::DropOldest, Self::Throttled];

    fn title(self, o: &DemoOptions) -> String {
        match self {
            Self::Unprotected => {
                "1. No backpressure: an effectively unbounded queue (everything accepted)".to_string()
            }
            Self::Reject => format!("2. Bounded queue of {}, reject when full (503 + Retry-After)", o.queue),
            Self::DropOldest => {
                format!("3. Bounded queue of {}, drop the oldest when full (live data)", o.queue)
            }
            Self::Throttled => {
                format!("4. Producer throttled: GCRA at {}/s, sleeping out each retry_after", o.consume_rate)
            }
        }
    }
}

/// One second of one scenario.
///
/// ```
/// use spillway_lab::demo::{run_one, DemoOptions, Scenario};
///
/// let o = DemoOptions { seconds: 1, produce_rate: 200, consume_rate: 100, queue: 10 };
/// let s = run_one(Scenario::Reject, o, &mut |_, _| {}).unwrap();
/// let second = s.seconds[0];
/// assert!(second.refused > 0 && second.depth <= 10);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Second {
    /// Items the producer tried to send.
    pub offered: u64,
    /// Items refused (reject policy) or evicted/discarded (drop policies).
    pub refused: u64,
    /// Items the consumer finished.
    pub served: u64,
    /// Queue depth at the end of the second.
    pub depth: u64,
    /// Median time served items spent queued, in milliseconds.
    pub wait_p50_ms: f64,
    /// 99th percentile of the same.
    pub wait_p99_ms: f64,
}

/// The outcome of one scenario.
///
/// ```
/// use spillway_lab::demo::{run_one, DemoOptions, Scenario};
///
/// let o = DemoOptions { seconds: 1, produce_rate: 200, consume_rate: 100, queue: 10 };
/// let s = run_one(Scenario::Unprotected, o, &mut |_, _| {}).unwrap();
/// assert!(s.left_in_queue > 50); // accepted, not done
/// ```
#[derive(Debug, Clone)]
pub struct Summary {
    /// Which scenario.
    pub scenario: Scenario,
    /// Second by second.
    pub seconds: Vec<Second>,
    /// Items still queued when the run stopped: work accepted and not done.
    pub left_in_queue: u64,
}

/// Items carry the time they were produced.
struct Item {
    produced_at: u64,
}

struct Counters {
    offered: AtomicU64,
    refused: AtomicU64,
    served: AtomicU64,
    /// Wait samples of the current second, in nanoseconds (bounded: at most `cap` a second).
    waits: Mutex<Vec<u64>>,
    cap: usize,
}

/// Runs every scenario and prints a table for each to `out`.
pub fn run(options: DemoOptions, out: &mut impl Write) -> Result<Vec<Summary>> {
    writeln!(
        out,
        "Spillway demo: a producer at {} req/s, a consumer at {} req/s, {} s per run.\n",
        options.produce_rate, options.consume_rate, options.seconds
    )?;
    let mut summaries = Vec::new();
    for scenario in Scenario::ALL {
        writeln!(out, "{}", scenario.title(&options))?;
        writeln!(out, "  sec  offered  refused  served  queue  wait p50   wait p99")?;
        let summary = run_one(scenario, options, &mut |i, s| {
            let _ = writeln!(
                out,
                "  {:>3}  {:>7}  {:>7}  {:>6}  {:>5}  {:>6.0} ms  {:>6.0} ms",
                i + 1,
                s.offered,
                s.refused,
                s.served,
                s.depth,
                s.wait_p50_ms,
                s.wait_p99_ms
            );
        })?;
        writeln!(out, "  left in the queue when the producer stopped: {}\n", summary.left_in_queue)?;
        summaries.push(summary);
    }
    verdict(&summaries, options, out)?;
    Ok(summaries)
}

fn verdict(s: &[Summary], o: DemoOptions, out: &mut impl Write) -> Result<()> {
    let last = |sc: Scenario| s.iter().find(|x| x.scenario == sc).and_then(|x| x.seconds.last().copied());
    if let (Some(free), Some(bounded), Some(throttled)) =
        (last(Scenario::Unprotected), last(Scenario::Reject), last(Scenario::Throttled))
    {
        writeln!(
            out,
            "Without backpressure the queue grew to {} and the last requests waited {:.1} s: every \
             second adds {} more. With a bounded queue the wait stayed at {:.0} ms (a queue of {} drained \
             at {} per s) and the excess was refused at once. A producer that follows retry_after sent only what \
             could be served: its requests waited {:.0} ms.",
            free.depth,
            free.wait_p99_ms / 1000.0,
            o.produce_rate.saturating_sub(o.consume_rate),
            bounded.wait_p99_ms,
            o.queue,
            o.consume_rate,
            throttled.wait_p99_ms
        )?;
    }
    Ok(())
}

/// Runs one scenario, calling `report` after each second.
pub fn run_one(
    scenario: Scenario,
    o: DemoOptions,
    report: &mut dyn FnMut(usize, &Second),
) -> Result<Summary> {
    let clock = MonotonicClock::new();
    let capacity = match scenario {
        Scenario::Unprotected => (o.produce_rate as usize) * (o.seconds as usize + 1),
        _ => o.queue,
    };
    let policy = match scenario {
        Scenario::DropOldest => OverflowPolicy::DropOldest,
        _ => OverflowPolicy::Reject,
    };
    let (tx, rx) = channel::channel::<Item>(capacity, policy);
    let per_second_cap = 2 * o.consume_rate as usize + 16;
    let counters = Arc::new(Counters {
        offered: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        served: AtomicU64::new(0),
        waits: Mutex::new(Vec::with_capacity(per_second_cap)),
        cap: per_second_cap,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let start = clock.now();
    let end = start + u64::from(o.seconds) * 1_000_000_000;

    let consumer = {
        let (counters, stop, clock) = (counters.clone(), stop.clone(), clock.clone());
        std::thread::Builder::new()
            .name("demo-consumer".into())
            .spawn(move || consume(rx, &clock, o.consume_rate, &counters, &stop))
            .context("spawn the consumer")?
    };
    let producer = {
        let (counters, clock, tx) = (counters.clone(), clock.clone(), tx.clone());
        std::thread::Builder::new()
            .name("demo-producer".into())
            .spawn(move || produce(scenario, tx, &clock, o, end, &counters))
            .context("spawn the producer")?
    };

    let mut seconds = Vec::new();
    let mut last = (0, 0, 0);
    let mut samples = Vec::with_capacity(per_second_cap);
    for i in 0..o.seconds {
        sleep_until(&clock, start + u64::from(i + 1) * 1_000_000_000);
        let now = (
            counters.offered.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed),
            counters.served.load(Ordering::Relaxed),
        );
        samples.clear();
        std::mem::swap(&mut *counters.waits.lock().expect("waits lock"), &mut samples);
        samples.sort_unstable();
        let second = Second {
            offered: now.0 - last.0,
            refused: now.1 - last.1,
            served: now.2 - last.2,
            depth: tx.stats().depth as u64,
            wait_p50_ms: percentile(&samples, 0.50),
            wait_p99_ms: percentile(&samples, 0.99),
        };
        last = now;
        report(i as usize, &second);
        seconds.push(second);
    }
    producer.join().map_err(|_| anyhow::anyhow!("the producer panicked"))?;
    let left_in_queue = tx.stats().depth as u64;
    stop.store(true, Ordering::Relaxed);
    drop(tx);
    consumer.join().map_err(|_| anyhow::anyhow!("the consumer panicked"))?;
    Ok(Summary { scenario, seconds, left_in_queue })
}

fn produce(
    scenario: Scenario,
    tx: Sender<Item>,
    clock: &MonotonicClock,
    o: DemoOptions,
    end: u64,
    c: &Counters,
) {
    let interval = 1_000_000_000 / u64::from(o.produce_rate.max(1));
    let limiter = RateLimiter::with_clock(
        Gcra::new(
            Quota::per_second(o.consume_rate.max(1)).expect("non-zero rate").with_burst(1).expect("burst"),
        ),
        clock.clone(),
    );
    let mut next = clock.now();
    while clock.now() < end {
        if scenario == Scenario::Throttled {
            let d = limiter.check();
            if !d.allowed {
                // The producer slows down: it waits out retry_after instead of sending.
                sleep_until(clock, clock.now() + d.retry_after.as_nanos() as u64);
                next = next.max(clock.now());
                continue;
            }
        }
        c.offered.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Item { produced_at: clock.now() }) {
            Ok(channel::SendOutcome::Sent) => {}
            Ok(_) | Err(_) => {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        next += interval;
        sleep_until(clock, next);
    }
}

fn consume(rx: Receiver<Item>, clock: &MonotonicClock, rate: u32, c: &Counters, stop: &AtomicBool) {
    let service = 1_000_000_000 / u64::from(rate.max(1));
    let mut next = clock.now();
    while !stop.load(Ordering::Relaxed) {
        let Some(item) = rx.recv_timeout(Duration::from_millis(20)).ok() else {
            next = clock.now();
            continue;
        };
        let waited = clock.now().saturating_sub(item.produced_at);
        {
            let mut waits = c.waits.lock().expect("waits lock");
            if waits.len() < c.cap {
                waits.push(waited);
            }
        }
        // Serving takes 1/rate of a second.
        next = next.max(clock.now().saturating_sub(service)) + service;
        sleep_until(clock, next);
        c.served.fetch_add(1, Ordering::Relaxed);
    }
}

fn sleep_until(clock: &MonotonicClock, deadline: u64) {
    let now = clock.now();
    if deadline > now {
        std::thread::sleep(Duration::from_nanos(deadline - now));
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1e6
}
