//! RabbitMQ: a consumer under [`FlowControl`] with a `basic.qos` prefetch window, and a
//! publisher with publisher confirms whose unconfirmed publishes are bounded.
//!
//! The prefetch (`basic.qos`) is the broker's bound: it sends at most `prefetch` deliveries
//! this channel has not acked. A delivery is acked after its handler returns `Ok`; on `Err` it
//! is nack'ed with `requeue` and the broker delivers it again (bound the retries with a quorum
//! queue's `x-delivery-limit` or a dead-letter exchange). Deliveries not acked when the
//! connection closes are requeued by the broker at once.
//!
//! **Pausing stops taking deliveries from the consumer stream.** Nothing taken means nothing
//! finished and nothing acked, so the prefetch window fills and the broker stops sending: the
//! process holds at most `prefetch` messages, whatever the queue holds. The alternative,
//! `basic.cancel` and a new `basic.consume` on resume, was not needed: the broker still delivers
//! (up to the prefetch) whatever it sent before the cancel arrived, so a cancel bounds memory no
//! better than the window does, and it costs a round trip and a new consumer tag at every pause
//! while the lag flaps around the threshold.
//!
//! ```no_run
//! use spillway_queue::rabbitmq::RabbitConsumer;
//! use spillway_queue::{FlowControl, Message, PauseOn};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = lapin::Connection::connect("amqp://127.0.0.1:5672/%2f", lapin::ConnectionProperties::default()).await?;
//! let channel = conn.create_channel().await?;
//! let flow = FlowControl::builder("orders").limit(8).pause_on(PauseOn::Lag(32)).build();
//! let consumer = RabbitConsumer::start(&channel, "orders", 64, flow).await?;
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
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use spillway::channel::Sender;
use std::fmt;
use std::future::Future;
use tokio::sync::Mutex;

/// A RabbitMQ consumer (manual acks, `basic.qos` prefetch) driven by a [`FlowControl`].
pub struct RabbitConsumer {
    // A mutex only so that `run` can take `&self`; one `run` at a time uses the stream.
    consumer: Mutex<lapin::Consumer>,
    flow: FlowControl,
    prefetch: u16,
}

impl RabbitConsumer {
    /// Sets the channel's prefetch to `prefetch` (`basic.qos`, per consumer) and starts consuming
    /// `queue` with manual acks.
    pub async fn start(
        channel: &Channel,
        queue: &str,
        prefetch: u16,
        flow: FlowControl,
    ) -> Result<Self, Error> {
        let prefetch = prefetch.max(1);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| Error::broker("rabbitmq: basic.qos", e))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions { no_ack: false, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker("rabbitmq: basic.consume", e))?;
        Ok(Self { consumer: Mutex::new(consumer), flow, prefetch })
    }

    /// The flow control (metrics, pause state).
    pub fn flow(&self) -> &FlowControl {
        &self.flow
    }

    /// The prefetch window: the most deliveries the broker sends without an ack.
    pub fn prefetch(&self) -> u16 {
        self.prefetch
    }

    /// Takes and handles deliveries until the consumer is cancelled (then everything taken is
    /// finished and it returns `Ok`) or an ack or the connection fails. Each delivery is acked
    /// after `handler` returns `Ok`, nack'ed with requeue on `Err`.
    pub async fn run<H, F, E>(&self, handler: H) -> Result<(), Error>
    where
        H: Fn(Message) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        consume::run(&self.flow, |tx| self.fetch(tx), handler).await
    }

    async fn fetch(&self, tx: Sender<(RabbitDelivery, Fetched)>) -> Result<(), Error> {
        let mut consumer = self.consumer.lock().await;
        loop {
            // The pause: no delivery is taken while paused, so the prefetch window fills.
            self.flow.ready().await;
            let Some(delivery) = consumer.next().await else { return Ok(()) };
            let mut delivery = delivery.map_err(|e| Error::broker("rabbitmq: delivery", e))?;
            let payload = Bytes::from(std::mem::take(&mut delivery.data));
            let fetched = self.flow.on_fetched(payload.len());
            let d = RabbitDelivery { payload, redelivered: delivery.redelivered, acker: delivery.acker };
            if tx.send((d, fetched)).await.is_err() {
                return Err(Error::closed("rabbitmq: dispatcher"));
            }
        }
    }
}

impl fmt::Debug for RabbitConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConsumer").field("flow", &self.flow).field("prefetch", &self.prefetch).finish()
    }
}

struct RabbitDelivery {
    payload: Bytes,
    redelivered: bool,
    acker: lapin::Acker,
}

impl Delivery for RabbitDelivery {
    fn message(&self) -> Message {
        Message { payload: self.payload.clone(), redelivered: self.redelivered }
    }

    async fn settle(self, ok: bool) -> Result<(), Error> {
        let r = if ok {
            self.acker.ack(BasicAckOptions::default()).await
        } else {
            self.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await
        };
        r.map(drop).map_err(|e| Error::broker("rabbitmq: ack", e))
    }
}

/// Publishes to one exchange and routing key through a bounded [`Publisher`], with publisher
/// confirms.
#[derive(Debug)]
pub struct RabbitPublisher;

impl RabbitPublisher {
    /// Turns on publisher confirms on `channel` (`confirm.select`) and starts a publisher to
    /// `exchange` / `routing_key` (persistent messages), with at most `config`'s
    /// `max_unconfirmed` confirms outstanding. A nack counts as failed.
    pub async fn spawn(
        channel: Channel,
        exchange: &str,
        routing_key: &str,
        config: PublishConfig,
    ) -> Result<(Publisher, tokio::task::JoinHandle<Result<(), Error>>), Error> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| Error::broker("rabbitmq: confirm.select", e))?;
        let exchange = lapin::types::ShortString::from(exchange);
        let routing_key = lapin::types::ShortString::from(routing_key);
        Ok(Publisher::spawn(config, move |payload: Bytes| {
            let channel = channel.clone();
            let (exchange, routing_key) = (exchange.clone(), routing_key.clone());
            async move {
                let confirm = channel
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .map_err(|e| Error::broker("rabbitmq: basic.publish", e))?;
                Ok(async move {
                    match confirm.await {
                        Ok(Confirmation::Ack(_)) => Ok(true),
                        Ok(_) => Ok(false),
                        Err(e) => Err(Error::broker("rabbitmq: confirm", e)),
                    }
                })
            }
        }))
    }
}
