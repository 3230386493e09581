//! The overload lab: scenarios that show, with numbers, what backpressure does.
//!
//! Today it holds the in-process demo behind `spillway demo`: the seeds' picture of a producer
//! at 1000 requests a second and a consumer at 500, run for real on threads, with and without
//! Spillway's bounded queues and rate limits.

pub mod demo;
pub mod sim;
