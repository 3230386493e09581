//! NATS JetStream: a pull consumer under [`FlowControl`], and a publisher whose unacknowledged
//! publishes are bounded.
//!
//! The consumer is durable with an explicit ack policy and a `max_ack_pending`; it pulls batches
//! of `batch` messages. **Pausing stops pulling new batches**: the server then holds the
//! messages, and this process holds at most the batch in progress, the local buffer and the
//! handlers. A message is acked after its handler returns `Ok`; on `Err` it is nak'ed and the
//! server redelivers it (bound the retries with the consumer's `max_deliver`). A message whose
//! consumer dies before the ack is redelivered after `ack_wait`.
//!
//! ```no_run
//! use spillway_queue::nats::{NatsConsumer, NatsOptions};
//! use spillway_queue::{FlowControl, Message, PauseOn};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let stream = js
//!     .get_or_create_stream(async_nats::jetstream::stream::Config {
//!         name: "ORDERS".into(),
//!         subjects: vec!["orders.>".into()],
//!         ..Default::default()
//!     })
//!     .await?;
//! let flow = FlowControl::builder("orders").limit(8).pause_on(PauseOn::Lag(64)).build();
//! let consumer = NatsConsumer::create(&stream, "billing", flow, NatsOptions::default().batch(32)).await?;
//! consumer
//!     .run(|m: Message| async move {
//!         println!("{} bytes", m.payload.len());
//!         Ok::<(), std::io::Error>(())
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

use crate::consume::{self, Delivery};
use crate::flow::{Fetched, FlowControl};
use crate::publish::{PublishConfig, Publisher};
use crate::{Error, Message};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use spillway::channel::Sender;
use std::future::{Future, IntoFuture};
use std::time::Duration;

/// How the JetStream consumer pulls.
#[derive(Debug, Clone)]
#[must_use]
pub struct NatsOptions {
    batch: usize,
    max_ack_pending: Option<i64>,
    ack_wait: Duration,
    expires: Duration,
}

impl Default for NatsOptions {
    /// Batches of 32, `max_ack_pending` = local buffer + limit + batch, `ack_wait` 30 s, pull
    /// requests that expire after 1 s when the stream is idle.
    fn default() -> Self {
        Self {
            batch: 32,
            max_ack_pending: None,
            ack_wait: Duration::from_secs(30),
            expires: Duration::from_secs(1),
        }
    }
}

impl NatsOptions {
    /// Messages per pull request (at least 1).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The server-side bound on delivered, unacked messages for this consumer.
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = Some(n.max(1));
        self
    }

    /// How long the server waits for an ack before redelivering.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How long one pull request waits for its batch to fill.
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = expires;
        self
    }
}

/// A JetStream pull consumer driven by a [`FlowControl`].
#[derive(Debug)]
pub struct NatsConsumer {
    consumer: PullConsumer,
    flow: FlowControl,
    options: NatsOptions,
}

impl NatsConsumer {
    /// Creates (or binds to) the durable pull consumer `durable` on `stream` with an explicit ack
    /// policy, `ack_wait` and `max_ack_pending` from `options`.
    pub async fn create(
        stream: &jetstream::stream::Stream,
        durable: &str,
        flow: FlowControl,
        options: NatsOptions,
    ) -> Result<Self, Error> {
        let max_ack_pending =
            options.max_ack_pending.unwrap_or((flow.buffer() + flow.snapshot().limit + options.batch) as i64);
        let config = pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_ack_pending,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(durable, config)
            .await
            .map_err(|e| Error::broker("nats: create consumer", e))?;
        Ok(Self { consumer, flow, options })
    }

    /// Drives an existing pull consumer (its ack policy must be explicit).
    pub fn new(consumer: PullConsumer, flow: FlowControl, options: NatsOptions) -> Self {
        Self { consumer, flow, options }
    }

    /// The flow control (metrics, pause state).
    pub fn flow(&self) -> &FlowControl {
        &self.flow
    }

    /// Pulls and handles messages until a pull or an ack fails (it never ends on its own: drop
    /// or abort it to stop; messages fetched and not acked are then redelivered after
    /// `ack_wait`). Each message is acked after `handler` returns `Ok`, nak'ed on `Err`.
    pub async fn run<H, F, E>(&self, handler: H) -> Result<(), Error>
    where
        H: Fn(Message) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        consume::run(&self.flow, |tx| self.fetch(tx), handler).await
    }

    async fn fetch(&self, tx: Sender<(NatsDelivery, Fetched)>) -> Result<(), Error> {
        loop {
            // The pause: no new pull request while paused.
            self.flow.ready().await;
            let mut batch = self
                .consumer
                .batch()
                .max_messages(self.options.batch)
                .expires(self.options.expires)
                .messages()
                .await
                .map_err(|e| Error::broker("nats: pull", e))?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| Error::broker("nats: batch", e))?;
                let fetched = self.flow.on_fetched(message.payload.len());
                if tx.send((NatsDelivery(message), fetched)).await.is_err() {
                    return Ok(()); // the dispatcher stopped
                }
            }
        }
    }
}

struct NatsDelivery(jetstream::Message);

impl Delivery for NatsDelivery {
    fn message(&self) -> Message {
        let redelivered = self.0.info().map(|i| i.delivered > 1).unwrap_or(false);
        Message { payload: self.0.payload.clone(), redelivered }
    }

    async fn settle(self, ok: bool) -> Result<(), Error> {
        let kind = if ok { AckKind::Ack } else { AckKind::Nak(None) };
        self.0.ack_with(kind).await.map_err(|e| Error::broker("nats: ack", e))
    }
}

/// Publishes to one JetStream subject through a bounded [`Publisher`].
#[derive(Debug)]
pub struct NatsPublisher;

impl NatsPublisher {
    /// Starts a publisher to `subject`: each message is published and its JetStream ack awaited,
    /// with at most `config`'s `max_unconfirmed` acks outstanding.
    pub fn spawn(
        js: jetstream::Context,
        subject: impl Into<String>,
        config: PublishConfig,
    ) -> (Publisher, tokio::task::JoinHandle<Result<(), Error>>) {
        let subject: async_nats::Subject = subject.into().into();
        Publisher::spawn(config, move |payload: Bytes| {
            let js = js.clone();
            let subject = subject.clone();
            async move {
                let ack =
                    js.publish(subject, payload).await.map_err(|e| Error::broker("nats: publish", e))?;
                Ok(async move {
                    ack.into_future().await.map(|_| true).map_err(|e| Error::broker("nats: publish ack", e))
                })
            }
        })
    }
}
