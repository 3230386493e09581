//! Concurrency limits (filled by the limit work).
