//! What a lab run measured: the input of the summary table, `results.json` and `report.html`.

use crate::load::LoadReport;
use serde::{Deserialize, Serialize};

/// A whole lab run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabResults {
    /// The scenario's name (`overload`, `quick`, `demo`).
    pub scenario: String,
    /// The backend: workers.
    pub pool: usize,
    /// The backend: service time of one request, in milliseconds.
    pub service_ms: u64,
    /// Requests a second the backend can serve (`pool × 1000 / service_ms`).
    pub capacity_per_s: f64,
    /// The clients' per-request deadline, in milliseconds.
    pub deadline_ms: u64,
    /// Seconds per run.
    pub seconds: u64,
    /// One entry per contestant and offered load, in the order run.
    pub runs: Vec<Run>,
    /// The message-queue scenario, when it ran (it needs `nats-server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<super::queue::QueueResults>,
}

/// One contestant at one offered load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `unprotected`, `static`, `gradient2`, `vegas`, `aimd`, `gradient`, `slo`, `haproxy`, or
    /// the name of an external target.
    pub contestant: String,
    /// Offered load as a multiple of capacity (4.0 = four times what the backend can serve).
    pub load_multiple: f64,
    /// The load generator's report (totals, latency, per-second series).
    pub load: LoadReport,
    /// Sampled once a second while the load ran.
    pub samples: Vec<Sample>,
}

/// One second of server-side state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub second: u64,
    /// Requests waiting in the backend's own queue.
    pub backend_waiting: u64,
    /// The backend's resident memory, in bytes.
    pub backend_rss_bytes: u64,
    /// Requests waiting in the proxy's queue (0 when there is no proxy).
    pub proxy_queue: u64,
    /// The proxy's current concurrency limit (0 when there is none).
    pub proxy_limit: u64,
}

impl Run {
    /// Goodput (answers ok within the deadline) as a fraction of the backend's capacity.
    pub fn goodput_fraction(&self, capacity_per_s: f64) -> f64 {
        if capacity_per_s > 0.0 { self.load.goodput_per_s / capacity_per_s } else { 0.0 }
    }

    /// The highest backend queue seen.
    pub fn max_backend_waiting(&self) -> u64 {
        self.samples.iter().map(|s| s.backend_waiting).max().unwrap_or(0)
    }

    /// The backend's memory at the end of the run, in bytes.
    pub fn final_backend_rss(&self) -> u64 {
        self.samples.last().map_or(0, |s| s.backend_rss_bytes)
    }
}
