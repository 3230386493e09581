//! The overload lab: scenarios that show, with numbers, what backpressure does.
//!
//! - [`demo`]: the in-process demo behind `spillway demo`: the seeds' picture of a producer at
//!   1000 requests a second and a consumer at 500, run for real on threads, with and without
//!   Spillway's bounded queues and rate limits.
//! - [`sim`]: adaptive limits against a simulated server on virtual time (`spillway simulate`).
//! - [`backend`]: a real HTTP backend with no backpressure at all, the thing to protect
//!   (`spillway backend`).
//! - [`load`]: an open-loop HTTP load generator that measures goodput, rejections and latency
//!   without coordinated omission (`spillway load`).
//! - [`lab`]: contestants against the backend at rising loads, and the report of what they did
//!   (`spillway lab`).

pub mod backend;
pub mod demo;
pub mod lab;
pub mod load;
pub mod sim;
