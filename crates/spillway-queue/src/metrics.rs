//! Counters as plain atomics, snapshots, and prometheus-client collectors.
//!
//! The values live in atomics updated on the message path; a registered collector reads them at
//! scrape time, so nothing is counted twice. Names start with `spillway_queue_`; the only label
//! is the name the user gave the consumer or publisher.

use crate::flow::FlowControl;
use crate::publish::PublishStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct ConsumerCounters {
    pub(crate) pauses_total: AtomicU64,
    pub(crate) resumes_total: AtomicU64,
    pub(crate) fetched_total: AtomicU64,
    pub(crate) processed_total: AtomicU64,
    pub(crate) failed_total: AtomicU64,
    pub(crate) lag: AtomicU64,
    pub(crate) lag_bytes: AtomicU64,
    pub(crate) peak_lag: AtomicU64,
    pub(crate) peak_lag_bytes: AtomicU64,
}

/// A consumer's metrics at one moment ([`FlowControl::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerSnapshot {
    /// Whether the consumer is paused now.
    pub paused: bool,
    /// Times it paused.
    pub pauses_total: u64,
    /// Times it resumed.
    pub resumes_total: u64,
    /// Messages in the handler now.
    pub in_flight: usize,
    /// The most messages ever in the handler at once.
    pub peak_in_flight: usize,
    /// The current concurrency limit.
    pub limit: usize,
    /// Messages fetched from the broker.
    pub fetched_total: u64,
    /// Messages handled successfully and acked.
    pub processed_total: u64,
    /// Messages whose handler (or ack) failed.
    pub failed_total: u64,
    /// Processing lag: messages fetched and not yet finished (the consumer's memory, in messages).
    pub lag: u64,
    /// The payload bytes of those messages.
    pub lag_bytes: u64,
    /// The highest lag seen.
    pub peak_lag: u64,
    /// The highest `lag_bytes` seen.
    pub peak_lag_bytes: u64,
    /// How long the message now waiting for a handler has waited.
    pub wait_time: Duration,
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let mut m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m.encode_family(&labels)?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    v: u64,
) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let mut m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m.encode_family(&labels)?)
}

#[derive(Debug)]
struct ConsumerCollector(FlowControl);

impl Collector for ConsumerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        let l: &[(&str, &str)] = &[("consumer", self.0.name())];
        gauge(&mut e, "spillway_queue_paused", "1 while the consumer is paused", l, u64::from(s.paused))?;
        counter(&mut e, "spillway_queue_pauses", "Times the consumer paused", l, s.pauses_total)?;
        counter(&mut e, "spillway_queue_resumes", "Times the consumer resumed", l, s.resumes_total)?;
        gauge(&mut e, "spillway_queue_in_flight", "Messages in the handler", l, s.in_flight as u64)?;
        gauge(&mut e, "spillway_queue_limit", "The handler concurrency limit", l, s.limit as u64)?;
        counter(&mut e, "spillway_queue_fetched", "Messages fetched from the broker", l, s.fetched_total)?;
        counter(&mut e, "spillway_queue_processed", "Messages handled and acked", l, s.processed_total)?;
        counter(&mut e, "spillway_queue_failed", "Messages whose handler or ack failed", l, s.failed_total)?;
        gauge(&mut e, "spillway_queue_lag", "Messages fetched and not yet finished", l, s.lag)?;
        gauge(
            &mut e,
            "spillway_queue_lag_bytes",
            "Payload bytes fetched and not yet finished",
            l,
            s.lag_bytes,
        )?;
        let wait = ConstGauge::new(s.wait_time.as_secs_f64());
        let mut m = e.encode_descriptor(
            "spillway_queue_wait_seconds",
            "How long the message now waiting for a handler has waited",
            None,
            wait.metric_type(),
        )?;
        wait.encode(m.encode_family(&l)?)
    }
}

impl FlowControl {
    /// Registers this consumer's metrics (`spillway_queue_paused`, `_pauses_total`,
    /// `_resumes_total`, `_in_flight`, `_limit`, `_fetched_total`, `_processed_total`,
    /// `_failed_total`, `_lag`, `_lag_bytes`, `_wait_seconds`), labelled `consumer="<name>"`.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use spillway_queue::FlowControl;
    ///
    /// let mut registry = Registry::default();
    /// FlowControl::builder("orders").build().register(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("spillway_queue_pauses_total{consumer=\"orders\"} 0"));
    /// ```
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ConsumerCollector(self.clone())));
    }
}

#[derive(Debug)]
struct PublisherCollector(std::sync::Arc<PublishStats>);

impl Collector for PublisherCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        let l: &[(&str, &str)] = &[("publisher", self.0.name())];
        gauge(
            &mut e,
            "spillway_queue_publish_buffered",
            "Messages waiting in the publish buffer",
            l,
            s.buffered,
        )?;
        gauge(
            &mut e,
            "spillway_queue_publish_unconfirmed",
            "Messages sent and not yet confirmed",
            l,
            s.unconfirmed,
        )?;
        counter(
            &mut e,
            "spillway_queue_published",
            "Messages accepted into the publish buffer",
            l,
            s.published_total,
        )?;
        counter(
            &mut e,
            "spillway_queue_publish_confirmed",
            "Messages the broker confirmed",
            l,
            s.confirmed_total,
        )?;
        counter(
            &mut e,
            "spillway_queue_publish_failed",
            "Messages refused (nack) or lost",
            l,
            s.failed_total,
        )?;
        counter(
            &mut e,
            "spillway_queue_publish_rejected",
            "try_publish calls refused: buffer full",
            l,
            s.rejected_total,
        )
    }
}

impl crate::publish::Publisher {
    /// Registers this publisher's metrics (`spillway_queue_publish_buffered`, `_unconfirmed`,
    /// `spillway_queue_published_total`, `spillway_queue_publish_confirmed_total`, `_failed_total`,
    /// `_rejected_total`), labelled `publisher="<name>"`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(PublisherCollector(self.stats_handle())));
    }
}
