//! `spillway lab`: contestants (no protection, Spillway's limits, HAProxy) against the same
//! backend at rising offered loads, and what they measured, as a table, JSON and an HTML report.
//!
//! - [`results`]: what a lab run measured ([`LabResults`], one [`Run`] per contestant and load).
//! - [`report`]: the summary table for the terminal and the self-contained HTML page with SVG
//!   charts.
//! - [`run`]: running a scenario end to end (backend, contestant, load, sampling).
//! - [`queue`]: the message-queue scenario: a slow NATS JetStream consumer under a fast
//!   producer, without and with flow control.
//! - [`soak`]: the proxy under steady key and WebSocket churn for a set time; memory and
//!   descriptors must stay flat.

pub mod queue;
pub mod report;
pub mod results;
pub mod run;
pub mod soak;
pub use results::{LabResults, Run, Sample};
