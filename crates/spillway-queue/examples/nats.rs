//! A slow consumer and a fast producer on NATS JetStream, both bounded.
//!
//! ```sh
//! nats-server -js &                      # or set NATS_URL to your server
//! cargo run -p spillway-queue --example nats
//! ```

use async_nats::jetstream::{self, stream};
use spillway_queue::nats::{NatsConsumer, NatsOptions, NatsPublisher};
use spillway_queue::{Bytes, FlowControl, Message, PauseOn, PublishConfig};
use std::time::Duration;

const MESSAGES: u64 = 2_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&url).await?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: "SPILLWAY_EXAMPLE".into(),
            subjects: vec!["spillway.example.>".into()],
            ..Default::default()
        })
        .await?;

    // The consumer: at most 8 handlers, pull batches of 32, pause above a lag of 64.
    let flow = FlowControl::builder("example").limit(8).pause_on(PauseOn::Lag(64)).build();
    let consumer =
        NatsConsumer::create(&stream, "example", flow.clone(), NatsOptions::default().batch(32)).await?;
    let consuming = tokio::spawn(async move {
        consumer
            .run(|m: Message| async move {
                tokio::time::sleep(Duration::from_millis(2)).await; // slow work
                let _ = m.payload;
                Ok::<(), std::io::Error>(())
            })
            .await
    });

    // The producer: a buffer of 256, at most 64 publishes waiting for their JetStream ack.
    let (publisher, publishing) =
        NatsPublisher::spawn(js, "spillway.example.orders", PublishConfig::new("example"));
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
    Ok(())
}
