//! What a load run measured: totals, latency percentiles and a per-second series, serialisable
//! (`--json`) and printable as a table.

use super::profile::Profile;
use super::{LoadOptions, RetryMode};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// Counts over the whole run (or one second of it).
///
/// `offered = sent + deferred + dropped_by_client`; every sent request ends as exactly one of
/// `ok`, a rejection, `late` or `errors` (a retried request ends as its retry's outcome).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests the profile scheduled.
    pub offered: u64,
    /// Requests sent (first attempts).
    pub sent: u64,
    /// Answered 2xx within the deadline.
    pub ok: u64,
    /// Answered 429 within the deadline.
    pub rejected_429: u64,
    /// Answered 503 within the deadline.
    pub rejected_503: u64,
    /// Answered 504 within the deadline.
    pub rejected_504: u64,
    /// Answered with any other non-2xx status within the deadline.
    pub rejected_other: u64,
    /// Not answered within the deadline: abandoned, their connection closed.
    pub late: u64,
    /// Connect or I/O errors before the deadline.
    pub errors: u64,
    /// Answers that carried a `Retry-After` header.
    pub with_retry_after: u64,
    /// Not sent because the client was pausing as a `Retry-After` asked (`honour` mode).
    pub deferred: u64,
    /// Not sent because every connection of the pool was busy: the generator, not the target,
    /// was the limit for these.
    pub dropped_by_client: u64,
    /// Extra attempts made by the `budget` retry mode.
    pub retries: u64,
}

impl Counts {
    /// Every rejection, whatever its status.
    pub fn rejected(&self) -> u64 {
        self.rejected_429 + self.rejected_503 + self.rejected_504 + self.rejected_other
    }

    pub(crate) fn add(&mut self, o: &Counts) {
        self.offered += o.offered;
        self.sent += o.sent;
        self.ok += o.ok;
        self.rejected_429 += o.rejected_429;
        self.rejected_503 += o.rejected_503;
        self.rejected_504 += o.rejected_504;
        self.rejected_other += o.rejected_other;
        self.late += o.late;
        self.errors += o.errors;
        self.with_retry_after += o.with_retry_after;
        self.deferred += o.deferred;
        self.dropped_by_client += o.dropped_by_client;
        self.retries += o.retries;
    }
}

/// Latency percentiles in milliseconds, measured from each request's **intended** send time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Answers measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run (requests are attributed to the second of their intended send time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    /// Seconds since the start (0-based).
    pub second: u64,
    /// Counts for requests due in this second.
    #[serde(flatten)]
    pub counts: Counts,
    /// Median latency of this second's ok answers, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
}

/// The whole run.
///
/// ```
/// use spillway_lab::load::LoadReport;
///
/// let r = LoadReport::default();
/// let json = serde_json::to_string(&r).unwrap();
/// let back: LoadReport = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.totals, r.totals);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The target.
    pub url: String,
    /// The rate profile.
    pub profile: Profile,
    /// Peak offered rate, requests a second.
    pub rate: f64,
    /// Length of the run, in seconds.
    pub duration_s: f64,
    /// Per-request deadline, in milliseconds.
    pub deadline_ms: u64,
    /// Connection cap.
    pub connections: usize,
    /// Client behaviour on rejections.
    pub retry_mode: RetryMode,
    /// Generator threads.
    pub threads: usize,
    /// Totals.
    pub totals: Counts,
    /// `ok` per second of the run.
    pub goodput_per_s: f64,
    /// Latency of ok answers.
    pub ok_latency: Latency,
    /// Latency of rejections (any non-2xx answer).
    pub rejection_latency: Latency,
    /// The furthest behind its intended time a request was handed to a connection, in
    /// milliseconds: large values mean the generator itself could not keep up.
    pub max_send_lag_ms: f64,
    /// Connections opened during the run.
    pub connections_opened: u64,
    /// Second by second.
    pub series: Vec<SecondReport>,
}

impl LoadReport {
    pub(crate) fn header(o: &LoadOptions) -> Self {
        Self {
            url: o.url.clone(),
            profile: o.profile,
            rate: o.rate,
            duration_s: o.duration.as_secs_f64(),
            deadline_ms: o.deadline.as_millis() as u64,
            connections: o.connections,
            retry_mode: o.retry_mode,
            threads: o.threads.max(1),
            ..Self::default()
        }
    }

    /// Writes the report as one line of JSON (totals, latency and the series).
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)
    }

    /// Prints the summary table (and the series) for people.
    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        let t = &self.totals;
        writeln!(
            out,
            "{} {} at peak {}/s for {} s, deadline {} ms, {} connections max, retry mode {}",
            self.url,
            self.profile,
            self.rate,
            self.duration_s,
            self.deadline_ms,
            self.connections,
            self.retry_mode
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "  sec     sent       ok  rejected     late   errors  deferred  dropped    p50 ms    p99 ms"
        )?;
        for s in &self.series {
            let c = &s.counts;
            writeln!(
                out,
                "  {:>3} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9.1} {:>9.1}",
                s.second + 1,
                c.sent,
                c.ok,
                c.rejected(),
                c.late,
                c.errors,
                c.deferred,
                c.dropped_by_client,
                s.p50_ms,
                s.p99_ms
            )?;
        }
        writeln!(out)?;
        let row = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "  {k:<28} {v}");
        row(out, "offered", t.offered.to_string())?;
        row(out, "sent", t.sent.to_string())?;
        row(out, "ok", t.ok.to_string())?;
        row(
            out,
            "rejected",
            format!(
                "{} (429: {}, 503: {}, 504: {}, other: {})",
                t.rejected(),
                t.rejected_429,
                t.rejected_503,
                t.rejected_504,
                t.rejected_other
            ),
        )?;
        row(out, "late (abandoned)", t.late.to_string())?;
        row(out, "errors", t.errors.to_string())?;
        row(out, "with Retry-After", t.with_retry_after.to_string())?;
        if self.retry_mode == RetryMode::Honour {
            row(out, "deferred (client paused)", t.deferred.to_string())?;
        }
        if self.retry_mode == RetryMode::Budget {
            row(out, "retries", t.retries.to_string())?;
        }
        row(out, "dropped by client", t.dropped_by_client.to_string())?;
        row(out, "goodput", format!("{:.1}/s", self.goodput_per_s))?;
        let l = &self.ok_latency;
        row(
            out,
            "ok latency",
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ),
        )?;
        row(out, "rejection latency", format!("p99 {:.1} ms", self.rejection_latency.p99_ms))?;
        row(out, "max send lag", format!("{:.1} ms", self.max_send_lag_ms))?;
        if t.dropped_by_client > 0 || self.max_send_lag_ms > 10.0 {
            writeln!(
                out,
                "\n  note: the generator was a limit (dropped by client or sending late): raise --connections \
                 or --threads, or lower --rate"
            )?;
        }
        Ok(())
    }
}
