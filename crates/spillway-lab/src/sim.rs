//! A deterministic simulation of overload on virtual time: adaptive limits proven before any
//! network is involved.
//!
//! The simulated server has `workers` workers and a FIFO queue with no limit (no backpressure of
//! its own), service times drawn from a seeded shifted-exponential distribution, so its capacity
//! is `C = workers / mean service time`. Clients arrive open-loop (Poisson) at a multiple of `C`
//! and give up after a deadline; the server never notices and serves abandoned requests anyway.
//! In front of it sits a concurrency limit set by the controller under test, which is never
//! told `workers`: a request that finds in-flight at the limit is rejected at once.
//!
//! Goodput is answers within the deadline, as a fraction of `C`.

use spillway::adaptive::{Aimd, Gradient, Gradient2, LimitAlgorithm, Sample, Slo, Vegas, Windowed};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

const SEC: u64 = 1_000_000_000;

/// One simulated run.
///
/// ```
/// use spillway_lab::sim::{Controller, Scenario};
///
/// let report = Scenario { load: 2.0, seconds: 5, ..Scenario::default() }.run(Controller::Vegas);
/// assert!(report.goodput > 0.9);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Workers in the server.
    pub workers: usize,
    /// Mean service time.
    pub service: Duration,
    /// Offered load as a multiple of capacity.
    pub load: f64,
    /// Virtual seconds simulated.
    pub seconds: u64,
    /// The clients' deadline.
    pub deadline: Duration,
    /// Halve the workers at this second, if set.
    pub halve_at: Option<u64>,
    /// The fraction of requests that are critical: they may fill the whole limit, while the
    /// rest (sheddable) may fill only `sheddable_share` of it, as with a
    /// [`PriorityShedder`](spillway::shed::PriorityShedder).
    pub critical: f64,
    /// The share of the limit sheddable requests may fill when some traffic is critical.
    pub sheddable_share: f64,
    /// Requests that may wait at the limit for a slot (the limiter's bounded queue; default 0).
    /// A small queue absorbs bursts for AIMD and the SLO controller but feeds Vegas latency that
    /// it reads as a queue at the server: with 8 slots and 5 ms, one seed rejects 5 % at 0.8x.
    pub queue: usize,
    /// How long they may wait.
    pub queue_timeout: Duration,
    /// The random seed.
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            workers: 32,
            service: Duration::from_millis(10),
            load: 1.0,
            seconds: 20,
            deadline: Duration::from_millis(200),
            halve_at: None,
            critical: 0.0,
            sheddable_share: 0.8,
            queue: 0,
            queue_timeout: Duration::from_millis(5),
            seed: 7,
        }
    }
}

/// The contestants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// No limit at all.
    Unprotected,
    /// A fixed limit equal to the worker count: the oracle a human would have to find.
    StaticOracle,
    /// [`Aimd`] with default parameters and the clients' deadline as its timeout.
    Aimd,
    /// [`Vegas`] with default parameters, fed means of 200-request windows ([`Windowed`]).
    Vegas,
    /// [`Gradient2`] with default parameters, fed means of 200-request windows.
    Gradient2,
    /// [`Gradient`] (Envoy-style) with default parameters.
    Gradient,
    /// [`Slo`] with a p99 target of twice the unloaded p99.
    Slo,
}

impl Controller {
    /// All contestants, in the order the table lists them.
    pub const ALL: [Controller; 7] = [
        Self::Unprotected,
        Self::StaticOracle,
        Self::Aimd,
        Self::Vegas,
        Self::Gradient2,
        Self::Gradient,
        Self::Slo,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unprotected => "unprotected",
            Self::StaticOracle => "static (= workers)",
            Self::Aimd => "aimd",
            Self::Vegas => "vegas",
            Self::Gradient2 => "gradient2",
            Self::Gradient => "gradient (envoy-style)",
            Self::Slo => "slo (p99 target)",
        }
    }
}

/// What a run measured: requests arriving after the first quarter (warm-up) and at least one
/// deadline before the end, so that every measured request's fate is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Answers within the deadline per second, as a fraction of capacity.
    pub goodput: f64,
    /// Median latency of admitted requests, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of admitted requests, milliseconds.
    pub p99_ms: f64,
    /// Fraction of arrivals rejected at the limit.
    pub rejected: f64,
    /// Admitted requests that completed within the measured part of the run.
    pub completed: usize,
    /// The limit at the end.
    pub final_limit: usize,
    /// Goodput per 100 ms window over the whole run, as a fraction of the capacity of the moment.
    pub windows: Vec<f64>,
    /// Fraction of critical requests answered within the deadline (1 if there were none).
    pub critical_success: f64,
    /// Fraction of critical requests refused at the limit.
    pub critical_rejected: f64,
}

impl Report {
    /// Goodput windows from second `at` on.
    pub fn windows_after(&self, at: u64) -> &[f64] {
        let first = (at * SEC / WINDOW.as_nanos() as u64) as usize;
        &self.windows[first.min(self.windows.len())..]
    }

    /// Mean goodput of the 20 windows starting 20 windows after second `at`: what the controller
    /// has settled to within 20 control windows of a change at `at`.
    pub fn settled_after(&self, at: u64) -> f64 {
        let w: Vec<f64> = self.windows_after(at).iter().skip(20).take(20).copied().collect();
        if w.is_empty() { 0.0 } else { w.iter().sum::<f64>() / w.len() as f64 }
    }
}

/// The duration of one control window in the report.
pub const WINDOW: Duration = Duration::from_millis(100);

/// A small, seeded generator (splitmix64): the same seed gives the same run everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.next().ln()
    }
}

struct Req {
    arrival: u64,
    in_flight: usize,
    critical: bool,
}

impl Scenario {
    /// Mean service time in nanoseconds, split as half fixed, half exponential.
    fn service_ns(&self, rng: &mut Rng) -> u64 {
        let mean = self.service.as_nanos() as f64;
        (mean * 0.5 + rng.exp(mean * 0.5)) as u64
    }

    /// The unloaded 99th percentile of service time, in milliseconds.
    pub fn unloaded_p99_ms(&self) -> f64 {
        let mean = self.service.as_secs_f64() * 1e3;
        mean * 0.5 + mean * 0.5 * 100f64.ln()
    }

    /// Requests per second the server can serve (with all its workers).
    pub fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }

    fn algorithm(&self, c: Controller) -> Option<Box<dyn LimitAlgorithm>> {
        Some(match c {
            Controller::Unprotected | Controller::StaticOracle => return None,
            Controller::Aimd => Box::new(Aimd::default().with_timeout(self.deadline)),
            Controller::Vegas => Box::new(Windowed::new(Vegas::default(), 200)),
            Controller::Gradient2 => Box::new(Windowed::new(Gradient2::default(), 200)),
            Controller::Gradient => Box::new(Gradient::default()),
            Controller::Slo => {
                Box::new(Slo::new(Duration::from_secs_f64(2.0 * self.unloaded_p99_ms() / 1e3)))
            }
        })
    }

    /// Runs `controller` through this scenario.
    pub fn run(&self, controller: Controller) -> Report {
        let mut rng = Rng(self.seed);
        let mut algorithm = self.algorithm(controller);
        let mut limit = match controller {
            Controller::Unprotected => usize::MAX,
            Controller::StaticOracle => self.workers,
            _ => algorithm.as_ref().map_or(usize::MAX, |a| a.limit()),
        };
        let end = self.seconds * SEC;
        let warmup = end / 4;
        let deadline = self.deadline.as_nanos() as u64;
        // Arrivals measured: after the warm-up, and early enough that their fate is known by the
        // end (the run keeps serving admitted work after its last arrival).
        let measure_end = end.saturating_sub(deadline).max(warmup + 1);
        let measured_at = |t: u64| t >= warmup && t < measure_end;
        let arrival_gap = SEC as f64 / (self.capacity() * self.load);
        let window = WINDOW.as_nanos() as u64;

        let mut workers = self.workers;
        let mut busy = 0usize;
        let mut queue: VecDeque<Req> = VecDeque::new();
        let mut completions: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let mut running: Vec<Option<Req>> = Vec::new();
        let mut free_ids: Vec<u64> = Vec::new();
        let mut in_flight = 0usize;
        let mut waiting: VecDeque<(u64, bool)> = VecDeque::with_capacity(self.queue);
        let queue_timeout = self.queue_timeout.as_nanos() as u64;

        let mut next_arrival = rng.exp(arrival_gap) as u64;
        let (mut arrivals, mut rejected, mut good) = (0u64, 0u64, 0u64);
        let (mut critical_arrivals, mut critical_good, mut critical_rejected) = (0u64, 0u64, 0u64);
        let mut latencies: Vec<u64> = Vec::new();
        let mut good_windows = vec![0u64; (end / window) as usize + 1];

        let start_service = |req: Req,
                             now: u64,
                             rng: &mut Rng,
                             running: &mut Vec<Option<Req>>,
                             free_ids: &mut Vec<u64>,
                             completions: &mut BinaryHeap<Reverse<(u64, u64)>>| {
            let id = match free_ids.pop() {
                Some(id) => {
                    running[id as usize] = Some(req);
                    id
                }
                None => {
                    running.push(Some(req));
                    running.len() as u64 - 1
                }
            };
            completions.push(Reverse((now + self.service_ns(rng), id)));
        };

        loop {
            let next_completion = completions.peek().map(|Reverse((t, _))| *t);
            let arrival_due = next_arrival < end && next_completion.is_none_or(|c| next_arrival <= c);
            if arrival_due {
                let now = next_arrival;
                next_arrival = now + rng.exp(arrival_gap).max(1.0) as u64;
                if let Some(h) = self.halve_at
                    && now >= h * SEC
                    && workers == self.workers
                {
                    workers = (self.workers / 2).max(1);
                }
                let measured = measured_at(now);
                arrivals += u64::from(measured);
                let critical = self.critical > 0.0 && rng.next() < self.critical;
                critical_arrivals += u64::from(measured && critical);
                let ceiling = if critical || self.critical <= 0.0 || limit == usize::MAX {
                    limit
                } else {
                    (limit as f64 * self.sheddable_share).ceil() as usize
                };
                if in_flight >= ceiling || waiting.iter().any(|&(_, c)| c == critical) {
                    // At the limit: wait in the limiter's bounded queue, or be refused.
                    if waiting.len() < self.queue {
                        waiting.push_back((now, critical));
                    } else {
                        rejected += u64::from(measured);
                        critical_rejected += u64::from(measured && critical);
                    }
                    continue;
                }
                in_flight += 1;
                let req = Req { arrival: now, in_flight, critical };
                if busy < workers {
                    busy += 1;
                    start_service(req, now, &mut rng, &mut running, &mut free_ids, &mut completions);
                } else {
                    queue.push_back(req);
                }
            } else if let Some(Reverse((now, id))) = completions.pop() {
                let req = running[id as usize].take().expect("a running request");
                free_ids.push(id);
                busy -= 1;
                in_flight -= 1;
                let latency = now - req.arrival;
                let in_time = latency <= deadline;
                if in_time {
                    good_windows[(now / window).min(end / window) as usize] += 1;
                }
                if measured_at(req.arrival) {
                    good += u64::from(in_time);
                    critical_good += u64::from(in_time && req.critical);
                    latencies.push(latency);
                }
                if let Some(a) = algorithm.as_mut() {
                    let sample = Sample {
                        latency: Duration::from_nanos(latency),
                        in_flight: req.in_flight,
                        dropped: !in_time,
                    };
                    limit = a.on_sample(sample);
                }
                // Freed room goes to the limiter's waiters, oldest first within what each class
                // may fill; those that waited longer than the queue timeout are refused.
                let mut i = 0;
                while i < waiting.len() && in_flight < limit {
                    let (arrived, critical) = waiting[i];
                    if now - arrived > queue_timeout {
                        waiting.remove(i);
                        rejected += u64::from(measured_at(arrived));
                        critical_rejected += u64::from(measured_at(arrived) && critical);
                        continue;
                    }
                    let ceiling = if critical || self.critical <= 0.0 || limit == usize::MAX {
                        limit
                    } else {
                        (limit as f64 * self.sheddable_share).ceil() as usize
                    };
                    if in_flight >= ceiling {
                        i += 1;
                        continue;
                    }
                    waiting.remove(i);
                    in_flight += 1;
                    // Admitted work joins the back of the server's own queue.
                    queue.push_back(Req { arrival: arrived, in_flight, critical });
                }
                while busy < workers {
                    let Some(next) = queue.pop_front() else { break };
                    busy += 1;
                    start_service(next, now, &mut rng, &mut running, &mut free_ids, &mut completions);
                }
            } else {
                break;
            }
        }

        latencies.sort_unstable();
        let q = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |&l| l as f64 / 1e6)
        };
        let measured_secs = (measure_end - warmup) as f64 / 1e9;
        let capacity_at = |w: usize| {
            let t = w as u64 * window;
            let workers = match self.halve_at {
                Some(h) if t >= h * SEC => (self.workers / 2).max(1),
                _ => self.workers,
            };
            workers as f64 / self.service.as_secs_f64() * WINDOW.as_secs_f64()
        };
        let windows = good_windows
            .iter()
            .take((end / window) as usize)
            .enumerate()
            .map(|(w, &g)| g as f64 / capacity_at(w))
            .collect();
        let mean_capacity = match self.halve_at {
            Some(h) if h * SEC > warmup => {
                let full = (h * SEC).min(measure_end).saturating_sub(warmup) as f64 / 1e9;
                (full * self.capacity() + (measured_secs - full) * self.capacity() / 2.0) / measured_secs
            }
            Some(_) => self.capacity() / 2.0,
            None => self.capacity(),
        };
        Report {
            goodput: good as f64 / measured_secs / mean_capacity,
            p50_ms: q(0.50),
            p99_ms: q(0.99),
            rejected: if arrivals == 0 { 0.0 } else { rejected as f64 / arrivals as f64 },
            completed: latencies.len(),
            critical_rejected: critical_rejected as f64 / critical_arrivals.max(1) as f64,
            critical_success: if critical_arrivals == 0 {
                1.0
            } else {
                critical_good as f64 / critical_arrivals as f64
            },
            final_limit: if limit == usize::MAX { 0 } else { limit },
            windows,
        }
    }
}

/// Prints the table of every controller at each load, and the capacity-halving run.
pub fn print_tables(base: Scenario, loads: &[f64], out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Simulated server: {} workers, mean service {:?} (unloaded p99 {:.1} ms), capacity C = {:.0} req/s, \
         client deadline {:?}, {} s per run, seed {}. Goodput = answers within the deadline / C.",
        base.workers,
        base.service,
        base.unloaded_p99_ms(),
        base.capacity(),
        base.deadline,
        base.seconds,
        base.seed
    )?;
    for &load in loads {
        writeln!(out, "\noffered load {load}x C")?;
        writeln!(
            out,
            "  {:<24} {:>8} {:>9} {:>9} {:>9} {:>6}",
            "controller", "goodput", "p50 ms", "p99 ms", "rejected", "limit"
        )?;
        for c in Controller::ALL {
            let r = Scenario { load, ..base }.run(c);
            let ms = |v: f64| if r.completed == 0 { "-".to_string() } else { format!("{v:.1}") };
            writeln!(
                out,
                "  {:<24} {:>7.1}% {:>9} {:>9} {:>8.1}% {:>6}",
                c.name(),
                r.goodput * 100.0,
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.rejected * 100.0,
                if r.final_limit == 0 { "-".to_string() } else { r.final_limit.to_string() }
            )?;
        }
    }
    for (critical, label) in [(0.04, "0.2x C (4 % of requests)"), (0.2, "1.0x C (20 % of requests)")] {
        writeln!(
            out,
            "\n5x load, critical work at {label}; sheddable requests may fill {:.0} % of the limit",
            base.sheddable_share * 100.0
        )?;
        writeln!(
            out,
            "  {:<24} {:>8} {:>18} {:>17}",
            "controller", "goodput", "critical answered", "critical refused"
        )?;
        for c in Controller::ALL.into_iter().filter(|&c| c != Controller::Unprotected) {
            let r = Scenario { load: 5.0, critical, ..base }.run(c);
            writeln!(
                out,
                "  {:<24} {:>7.1}% {:>17.2}% {:>16.2}%",
                c.name(),
                r.goodput * 100.0,
                r.critical_success * 100.0,
                r.critical_rejected * 100.0
            )?;
        }
    }
    let halve = base.seconds / 2;
    writeln!(
        out,
        "\ncapacity halves at {halve} s under 2x load: goodput of the new C in 100 ms windows after the change"
    )?;
    for c in Controller::ALL {
        let r = Scenario { load: 2.0, halve_at: Some(halve), ..base }.run(c);
        let settled = r.settled_after(halve);
        let after: Vec<String> =
            r.windows_after(halve).iter().take(30).step_by(3).map(|g| format!("{:.0}", g * 100.0)).collect();
        writeln!(
            out,
            "  {:<24} windows 20-40 after: {:>5.1}%   every 3rd window: [{}]",
            c.name(),
            settled * 100.0,
            after.join(" ")
        )?;
    }
    Ok(())
}
