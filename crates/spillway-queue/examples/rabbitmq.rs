//! A slow consumer and a fast producer on RabbitMQ, both bounded.
//!
//! ```sh
//! # a RabbitMQ on 127.0.0.1:5672 (e.g. the Debian package), or set AMQP_URL
//! cargo run -p spillway-queue --example rabbitmq
//! ```

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use spillway_queue::rabbitmq::{RabbitConsumer, RabbitPublisher};
use spillway_queue::{Bytes, FlowControl, Message, PauseOn, PublishConfig};
use std::time::Duration;

const MESSAGES: u64 = 2_000;
const QUEUE: &str = "spillway-example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_declare(QUEUE.into(), QueueDeclareOptions::default(), FieldTable::default()).await?;

    // The consumer: at most 8 handlers, a prefetch window of 64, pause above a lag of 32.
    let flow = FlowControl::builder("example").limit(8).pause_on(PauseOn::Lag(32)).build();
    let consumer = RabbitConsumer::start(&channel, QUEUE, 64, flow.clone()).await?;
    let consuming = tokio::spawn(async move {
        consumer
            .run(|m: Message| async move {
                tokio::time::sleep(Duration::from_millis(2)).await; // slow work
                let _ = m.payload;
                Ok::<(), std::io::Error>(())
            })
            .await
    });

    // The producer: a buffer of 256, at most 64 publishes waiting for their confirm.
    let (publisher, publishing) =
        RabbitPublisher::spawn(conn.create_channel().await?, "", QUEUE, PublishConfig::new("example"))
            .await?;
    for i in 0..MESSAGES {
        publisher.publish(Bytes::from(i.to_string())).await?;
    }
    publisher.flush().await;
    println!("published: {:?}", publisher.snapshot());

    while flow.snapshot().processed_total < MESSAGES {
        let s = flow.snapshot();
        println!(
            "processed {:>5}  lag {:>3}  in flight {}  paused {}  pauses {}",
            s.processed_total, s.lag, s.in_flight, s.paused, s.pauses_total
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("consumed: {:?}", flow.snapshot());
    consuming.abort();
    drop(publisher);
    publishing.await??;
    // Closing may race the channels lapin closes as their handles drop; nothing is left to lose.
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}
