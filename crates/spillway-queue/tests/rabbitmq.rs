//! RabbitMQ against a real `rabbitmq-server`.
//!
//! A RabbitMQ node takes several seconds to start, and nextest runs every test in its own
//! process, so one test starts one node and runs every scenario against it, each on its own
//! queue and connections. A failure names its scenario.

#![cfg(feature = "rabbitmq")]

mod common;

use common::{id_of, payload, wait_until};

use lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use prometheus_client::registry::Registry;
use spillway_queue::rabbitmq::{RabbitConsumer, RabbitPublisher};
use spillway_queue::{FlowControl, Message, PauseOn, PublishConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: usize = 8;
const PREFETCH: u16 = 64;

async fn connect(broker: &common::Broker) -> Connection {
    Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to rabbitmq")
}

async fn declare(conn: &Connection, queue: &str) -> lapin::Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare queue");
    ch
}

/// Messages ready in `queue` (not counting deliveries unacked by a live consumer).
async fn ready(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = ch.close(200, "done".into()).await;
    q.message_count()
}

async fn publish_all(
    conn: &Connection,
    queue: &str,
    n: u32,
    config: PublishConfig,
) -> spillway_queue::PublishSnapshot {
    let ch = conn.create_channel().await.unwrap();
    let (publisher, task) = RabbitPublisher::spawn(ch, "", queue, config).await.expect("publisher");
    for id in 0..n {
        publisher.publish(payload(id)).await.expect("publish");
    }
    publisher.flush().await;
    let s = publisher.snapshot();
    drop(publisher);
    task.await.unwrap().expect("publisher task");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_scenarios() {
    let broker = common::rabbitmq().await;
    eprintln!("== slow consumer, fast producer");
    slow_consumer_stays_bounded_and_handles_every_message_exactly_once(&broker).await;
    eprintln!("== a failed message is nack'ed and redelivered");
    a_failed_message_is_given_back_and_handled_on_redelivery(&broker).await;
    eprintln!("== consumer killed mid-batch");
    a_consumer_killed_mid_batch_gets_its_messages_redelivered(&broker).await;
    eprintln!("== bounded publisher with confirms");
    publisher_bounds_unconfirmed_publishes_and_every_message_is_confirmed(&broker).await;
}

async fn slow_consumer_stays_bounded_and_handles_every_message_exactly_once(broker: &common::Broker) {
    const N: u32 = 5_000;
    const LAG_THRESHOLD: u64 = 32;
    let queue = "slow";
    let consumer_conn = connect(broker).await;
    let ch = declare(&consumer_conn, queue).await;
    let flow =
        FlowControl::builder("slow").limit(LIMIT).buffer(64).pause_on(PauseOn::Lag(LAG_THRESHOLD)).build();
    let mut registry = Registry::default();
    flow.register(&mut registry);
    let consumer = Arc::new(RabbitConsumer::start(&ch, queue, PREFETCH, flow.clone()).await.unwrap());
    let counts: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let c2 = counts.clone();
    let c = consumer.clone();
    let running = tokio::spawn(async move {
        c.run(move |m: Message| {
            let counts = c2.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                counts[id_of(&m)].fetch_add(1, Ordering::Relaxed);
                Ok::<(), ()>(())
            }
        })
        .await
    });

    let producer_conn = connect(broker).await;
    let published =
        publish_all(&producer_conn, queue, N, PublishConfig::new("fast").buffer(1024).max_unconfirmed(256))
            .await;
    assert_eq!(published.confirmed_total, u64::from(N));

    wait_until("every message processed", Duration::from_secs(40), || {
        flow.snapshot().processed_total >= u64::from(N)
    })
    .await;
    wait_until("the consumer to resume", Duration::from_secs(2), || !flow.snapshot().paused).await;
    let s = flow.snapshot();
    eprintln!("rabbitmq slow consumer: {s:?}");
    // Memory: the broker never sends more than the prefetch window unacked.
    assert!(s.peak_lag <= u64::from(PREFETCH), "peak lag {} > prefetch {PREFETCH}", s.peak_lag);
    assert!(s.peak_in_flight <= LIMIT, "{s:?}");
    assert!(s.pauses_total >= 1 && s.resumes_total >= 1, "the pause never engaged: {s:?}");
    assert_eq!((s.paused, s.lag, s.failed_total, s.processed_total), (false, 0, 0, u64::from(N)));
    for (id, n) in counts.iter().enumerate() {
        assert_eq!(n.load(Ordering::Relaxed), 1, "message {id} handled {} times", n.load(Ordering::Relaxed));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("spillway_queue_paused{consumer=\"slow\"} 0"), "{text}");
    assert!(
        text.contains(&format!("spillway_queue_resumes_total{{consumer=\"slow\"}} {}", s.resumes_total)),
        "{text}"
    );

    // Close the consumer: anything unacked would now be requeued. Nothing is.
    running.abort();
    let _ = running.await;
    consumer_conn.close(200, "done".into()).await.unwrap();
    assert_eq!(ready(&producer_conn, queue).await, 0, "messages left in the queue");

    // A second consumer gets nothing.
    let ch2 = producer_conn.create_channel().await.unwrap();
    let second_flow = FlowControl::builder("second").limit(LIMIT).build();
    let second = RabbitConsumer::start(&ch2, queue, PREFETCH, second_flow.clone()).await.unwrap();
    let got =
        tokio::time::timeout(Duration::from_secs(1), second.run(|_m: Message| async { Ok::<(), ()>(()) }))
            .await;
    assert!(got.is_err(), "the second consumer stopped: {got:?}");
    assert_eq!(second_flow.snapshot().fetched_total, 0);
    producer_conn.close(200, "done".into()).await.unwrap();
}

async fn a_failed_message_is_given_back_and_handled_on_redelivery(broker: &common::Broker) {
    const N: u32 = 200;
    let queue = "flaky";
    let conn = connect(broker).await;
    declare(&conn, queue).await;
    publish_all(&conn, queue, N, PublishConfig::new("p")).await;
    let ch = conn.create_channel().await.unwrap();
    let flow = FlowControl::builder("flaky").limit(LIMIT).build();
    let consumer = RabbitConsumer::start(&ch, queue, PREFETCH, flow.clone()).await.unwrap();
    let flaky = common::Flaky::new(N);
    let f = flaky.clone();
    let running = tokio::spawn(async move {
        consumer
            .run(move |m: Message| {
                let r = f.handle(&m);
                async move { r }
            })
            .await
    });
    flaky.finish(&flow, running).await;
    let _ = ch.close(200, "done".into()).await;
    assert_eq!(ready(&conn, queue).await, 0);
    let _ = conn.close(200, "done".into()).await;
}

async fn a_consumer_killed_mid_batch_gets_its_messages_redelivered(broker: &common::Broker) {
    const N: u32 = 300;
    let queue = "kill";
    let setup = connect(broker).await;
    declare(&setup, queue).await;
    publish_all(&setup, queue, N, PublishConfig::new("p")).await;

    let conn_a = connect(broker).await;
    let ch_a = conn_a.create_channel().await.unwrap();
    let flow_a = FlowControl::builder("a").limit(LIMIT).build();
    let consumer_a = RabbitConsumer::start(&ch_a, queue, 32, flow_a.clone()).await.unwrap();
    let in_handler_a = Arc::new(Mutex::new(Vec::new()));
    let seen = in_handler_a.clone();
    let task_a = tokio::spawn(async move {
        consumer_a
            .run(move |m: Message| {
                seen.lock().unwrap().push(id_of(&m));
                async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<(), ()>(())
                }
            })
            .await
    });
    wait_until("consumer A to fill its handlers", Duration::from_secs(10), || {
        flow_a.snapshot().in_flight == LIMIT
    })
    .await;
    task_a.abort();
    let _ = task_a.await;
    conn_a.close(200, "killed".into()).await.unwrap();
    let in_handler_a = in_handler_a.lock().unwrap().clone();
    assert_eq!(in_handler_a.len(), LIMIT);
    assert_eq!(flow_a.snapshot().processed_total, 0);

    let conn_b = connect(broker).await;
    let ch_b = conn_b.create_channel().await.unwrap();
    let flow_b = FlowControl::builder("b").limit(LIMIT).build();
    let consumer_b = RabbitConsumer::start(&ch_b, queue, 32, flow_b.clone()).await.unwrap();
    let counts: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let redelivered = Arc::new(Mutex::new(Vec::new()));
    let (c2, r2) = (counts.clone(), redelivered.clone());
    let task_b = tokio::spawn(async move {
        consumer_b
            .run(move |m: Message| {
                c2[id_of(&m)].fetch_add(1, Ordering::Relaxed);
                if m.redelivered {
                    r2.lock().unwrap().push(id_of(&m));
                }
                async { Ok::<(), ()>(()) }
            })
            .await
    });
    wait_until("consumer B to handle every id", Duration::from_secs(20), || {
        counts.iter().all(|c| c.load(Ordering::Relaxed) >= 1)
    })
    .await;
    wait_until("consumer B to finish", Duration::from_secs(5), || flow_b.snapshot().lag == 0).await;
    task_b.abort();
    let redelivered = redelivered.lock().unwrap().clone();
    for id in &in_handler_a {
        assert!(
            redelivered.contains(id),
            "message {id} was in A's handler but not redelivered to B: {redelivered:?}"
        );
    }
    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "a message was handled twice by B");
    let _ = conn_b.close(200, "done".into()).await;
    assert_eq!(ready(&setup, queue).await, 0);
    let ch = setup.create_channel().await.unwrap();
    ch.queue_purge(queue.into(), QueuePurgeOptions::default()).await.unwrap();
    let _ = setup.close(200, "done".into()).await;
}

async fn publisher_bounds_unconfirmed_publishes_and_every_message_is_confirmed(broker: &common::Broker) {
    const N: u32 = 5_000;
    const WINDOW: usize = 16;
    let queue = "published";
    let conn = connect(broker).await;
    declare(&conn, queue).await;
    let ch = conn.create_channel().await.unwrap();
    let config = PublishConfig::new("bounded").buffer(64).max_unconfirmed(WINDOW);
    let (publisher, task) = RabbitPublisher::spawn(ch, "", queue, config).await.unwrap();
    common::publish_bounded(&publisher, N, 64, WINDOW).await;
    drop(publisher);
    task.await.unwrap().unwrap();
    assert_eq!(ready(&conn, queue).await, N);
    let _ = conn.close(200, "done".into()).await;
}
