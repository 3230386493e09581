//! # spillway-queue: backpressure for message-queue consumers and producers
//!
//! A consumer that takes messages faster than it finishes them moves the broker's queue into
//! its own memory: the infinite-buffer outage, one process later. This crate keeps a consumer
//! and a producer bounded, whatever the broker holds:
//!
//! - **Consumer flow control** ([`FlowControl`], broker-independent): a concurrency limit over
//!   the handler (fixed, or adaptive with any `spillway::adaptive` algorithm fed by the
//!   handler's latency); a bounded local buffer between fetching and handling; pause and resume
//!   with hysteresis on the processing lag (fetched, not finished) or the wait time of the
//!   oldest fetched message: pause above the threshold, resume below half of it.
//! - **Producer backpressure** ([`Publisher`]): a bounded publish buffer (`publish` waits when
//!   full, `try_publish` hands the message back) in front of a bounded window of publishes the
//!   broker has not confirmed yet.
//! - **Adapters**: NATS JetStream pull consumers and publish acks (feature `nats`, module
//!   [`nats`]); RabbitMQ `basic.qos` prefetch and publisher confirms (feature `rabbitmq`,
//!   module [`rabbitmq`]). Messages are acked only after the handler returns `Ok`.
//! - **Metrics**: plain atomics with [`FlowControl::snapshot`] / [`Publisher::snapshot`], and
//!   `register(&mut prometheus_client::registry::Registry)` (`spillway_queue_*`, labelled only
//!   with the name you give).
//!
//! The flow control on its own, with no broker (what an adapter does for each message):
//!
//! ```
//! use spillway_queue::{FlowControl, PauseOn};
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap().block_on(async {
//! let flow = FlowControl::builder("thumbnails").limit(4).pause_on(PauseOn::Lag(16)).build();
//!
//! let mut handlers = Vec::new();
//! for _batch in 0..10 {
//!     flow.ready().await; // waits while paused: no new batch is pulled
//!     for _ in 0..8 {
//!         let fetched = flow.on_fetched(1024); // a 1 KiB message arrived
//!         let ticket = flow.admit(fetched).await; // waits for one of the 4 handler slots
//!         handlers.push(tokio::spawn(async move {
//!             tokio::time::sleep(Duration::from_millis(1)).await; // the handler's work
//!             ticket.success(); // after the ack
//!         }));
//!     }
//! }
//! for h in handlers {
//!     h.await.unwrap();
//! }
//! let s = flow.snapshot();
//! assert_eq!((s.processed_total, s.lag, s.in_flight, s.paused), (80, 0, 0, false));
//! assert!(s.peak_in_flight <= 4);
//! assert!(s.peak_lag <= 16 + 8); // the threshold plus one batch
//! # });
//! ```

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
mod consume;
mod flow;
mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
mod publish;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

pub use bytes::Bytes;
pub use flow::{Fetched, FlowBuilder, FlowControl, PauseOn, Ticket};
pub use metrics::ConsumerSnapshot;
pub use publish::{PublishConfig, PublishError, PublishSnapshot, Publisher};

/// A message as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The payload (a reference-counted handle: cloning it copies nothing).
    pub payload: Bytes,
    /// The broker delivered it before (to this or another consumer) without an ack.
    pub redelivered: bool,
}

impl Message {
    /// A first delivery of `payload`: for testing a handler without a broker.
    ///
    /// ```
    /// let m = spillway_queue::Message::new("hello");
    /// assert_eq!((&m.payload[..], m.redelivered), (&b"hello"[..], false));
    /// ```
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self { payload: payload.into(), redelivered: false }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A broker or task failure that stops a consumer or publisher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker client failed; `context` says doing what.
    #[error("{context}: {source}")]
    Broker {
        /// What was being done.
        context: &'static str,
        /// The client's error.
        source: BoxError,
    },
    /// The connection, channel or stream closed.
    #[error("{0}: closed")]
    Closed(&'static str),
    /// A handler task panicked.
    #[error("handler task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    #[cfg(any(feature = "nats", feature = "rabbitmq"))]
    pub(crate) fn broker(context: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Broker { context, source: source.into() }
    }

    #[cfg(any(test, feature = "rabbitmq"))]
    pub(crate) fn closed(what: &'static str) -> Self {
        Self::Closed(what)
    }

    #[cfg(any(feature = "nats", feature = "rabbitmq"))]
    pub(crate) fn task(e: tokio::task::JoinError) -> Self {
        Self::Task(e)
    }
}
