//! NATS JetStream against a real `nats-server` (started per test on its own port).

#![cfg(feature = "nats")]

mod common;

use common::{id_of, payload, wait_until};

use async_nats::jetstream::{self, stream};
use prometheus_client::registry::Registry;
use spillway_queue::nats::{NatsConsumer, NatsOptions, NatsPublisher};
use spillway_queue::{FlowControl, Message, PauseOn, PublishConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: usize = 8;
const BATCH: usize = 32;
const LAG_THRESHOLD: u64 = 64;

async fn setup(
    broker: &common::Broker,
    name: &str,
) -> (async_nats::Client, jetstream::Context, stream::Stream) {
    let client = async_nats::connect(broker.nats_url()).await.expect("connect to nats-server");
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .expect("create stream");
    (client, js, stream)
}

/// Publishes `n` ids through the bounded publisher as fast as it takes them.
async fn publish_all(
    js: &jetstream::Context,
    subject: &str,
    n: u32,
    config: PublishConfig,
) -> spillway_queue::PublishSnapshot {
    let (publisher, task) = NatsPublisher::spawn(js.clone(), subject, config);
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
async fn slow_consumer_stays_bounded_and_handles_every_message_exactly_once() {
    const N: u32 = 6_000;
    let broker = common::nats().await;
    let (_client, js, stream) = setup(&broker, "SLOW").await;

    let flow =
        FlowControl::builder("slow").limit(LIMIT).buffer(64).pause_on(PauseOn::Lag(LAG_THRESHOLD)).build();
    let mut registry = Registry::default();
    flow.register(&mut registry);
    let consumer = Arc::new(
        NatsConsumer::create(
            &stream,
            "slow",
            flow.clone(),
            NatsOptions::default().batch(BATCH).ack_wait(Duration::from_secs(30)),
        )
        .await
        .unwrap(),
    );
    let counts: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let c2 = counts.clone();
    let c = consumer.clone();
    let running = tokio::spawn(async move {
        c.run(move |m: Message| {
            let counts = c2.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await; // a slow handler
                counts[id_of(&m)].fetch_add(1, Ordering::Relaxed);
                Ok::<(), ()>(())
            }
        })
        .await
    });

    // The fast producer, concurrently with the consumer.
    let published =
        publish_all(&js, "SLOW.orders", N, PublishConfig::new("fast").buffer(1024).max_unconfirmed(256))
            .await;
    assert_eq!(published.confirmed_total, u64::from(N));

    wait_until("every message processed", Duration::from_secs(40), || {
        flow.snapshot().processed_total >= u64::from(N)
    })
    .await;
    wait_until("the consumer to resume", Duration::from_secs(2), || !flow.snapshot().paused).await;
    let s = flow.snapshot();
    eprintln!("nats slow consumer: {s:?}");
    // Memory: never more fetched-but-unfinished messages than the pause threshold plus one batch
    // (the batch already requested when the pause engaged).
    assert!(
        s.peak_lag <= LAG_THRESHOLD + BATCH as u64,
        "peak lag {} > {} + {}",
        s.peak_lag,
        LAG_THRESHOLD,
        BATCH
    );
    assert!(s.peak_in_flight <= LIMIT, "{s:?}");
    assert!(s.pauses_total >= 1 && s.resumes_total >= 1, "the pause never engaged: {s:?}");
    assert_eq!((s.paused, s.lag, s.failed_total, s.processed_total), (false, 0, 0, u64::from(N)));
    for (id, n) in counts.iter().enumerate() {
        assert_eq!(n.load(Ordering::Relaxed), 1, "message {id} handled {} times", n.load(Ordering::Relaxed));
    }

    // The same in the Prometheus text.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("spillway_queue_paused{consumer=\"slow\"} 0"), "{text}");
    assert!(
        text.contains(&format!("spillway_queue_pauses_total{{consumer=\"slow\"}} {}", s.pauses_total)),
        "{text}"
    );
    assert!(text.contains(&format!("spillway_queue_processed_total{{consumer=\"slow\"}} {N}")), "{text}");

    running.abort();
    // The server agrees: nothing pending, nothing waiting for an ack.
    let mut info_consumer: jetstream::consumer::PullConsumer = stream.get_consumer("slow").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = info_consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "server still has work: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second consumer on the same durable gets nothing.
    let second_flow = FlowControl::builder("second").limit(LIMIT).build();
    let second = NatsConsumer::create(
        &stream,
        "slow",
        second_flow.clone(),
        NatsOptions::default().expires(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let got =
        tokio::time::timeout(Duration::from_secs(1), second.run(|_m: Message| async { Ok::<(), ()>(()) }))
            .await;
    assert!(got.is_err(), "the second consumer stopped: {got:?}");
    assert_eq!(second_flow.snapshot().fetched_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_batch_gets_its_messages_redelivered() {
    const N: u32 = 300;
    let broker = common::nats().await;
    let (_client, js, stream) = setup(&broker, "KILL").await;
    publish_all(&js, "KILL.orders", N, PublishConfig::new("p")).await;
    let options = NatsOptions::default().batch(BATCH).ack_wait(Duration::from_secs(1));

    // Consumer A: its own connection; its handler never finishes in time.
    let client_a = async_nats::connect(broker.nats_url()).await.unwrap();
    let stream_a = jetstream::new(client_a.clone()).get_stream("KILL").await.unwrap();
    let flow_a = FlowControl::builder("a").limit(LIMIT).build();
    let consumer_a = NatsConsumer::create(&stream_a, "work", flow_a.clone(), options.clone()).await.unwrap();
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
    drop(client_a); // closes the connection
    let in_handler_a = in_handler_a.lock().unwrap().clone();
    assert_eq!(in_handler_a.len(), LIMIT);
    assert_eq!(flow_a.snapshot().processed_total, 0);

    // Consumer B gets everything, A's messages redelivered.
    let flow_b = FlowControl::builder("b").limit(LIMIT).build();
    let consumer_b = NatsConsumer::create(&stream, "work", flow_b.clone(), options).await.unwrap();
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
    task_b.abort();
    let redelivered = redelivered.lock().unwrap().clone();
    for id in &in_handler_a {
        assert!(
            redelivered.contains(id),
            "message {id} was in A's handler but not redelivered to B: {redelivered:?}"
        );
    }
    assert_eq!(flow_b.snapshot().failed_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_is_given_back_and_handled_on_redelivery() {
    const N: u32 = 200;
    let broker = common::nats().await;
    let (_client, js, stream) = setup(&broker, "FLAKY").await;
    publish_all(&js, "FLAKY.x", N, PublishConfig::new("p")).await;
    let flow = FlowControl::builder("flaky").limit(LIMIT).build();
    let consumer = NatsConsumer::create(&stream, "flaky", flow.clone(), NatsOptions::default().batch(BATCH))
        .await
        .unwrap();
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
    let mut info_consumer: jetstream::consumer::PullConsumer = stream.get_consumer("flaky").await.unwrap();
    let info = info_consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_bounds_unconfirmed_publishes_and_every_message_is_confirmed() {
    const N: u32 = 5_000;
    const WINDOW: usize = 16;
    let broker = common::nats().await;
    let (_client, js, mut stream) = setup(&broker, "PUB").await;
    let config = PublishConfig::new("bounded").buffer(64).max_unconfirmed(WINDOW);
    let (publisher, task) = NatsPublisher::spawn(js.clone(), "PUB.x", config);
    let mut registry = Registry::default();
    publisher.register(&mut registry);
    common::publish_bounded(&publisher, N, 64, WINDOW).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(&format!("spillway_queue_publish_confirmed_total{{publisher=\"bounded\"}} {N}")),
        "{text}"
    );
    drop(publisher);
    task.await.unwrap().unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, u64::from(N));
}

#[test]
fn a_missing_broker_fails_the_test_and_names_its_package() {
    let panic = std::panic::catch_unwind(|| {
        common::require("spillway-no-such-broker", &[], "spillway-no-such-package")
    })
    .expect_err("a missing broker must fail the test, not pass it");
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.contains("apt-get install -y spillway-no-such-package"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limit_with_a_wait_time_pause_handles_everything_once() {
    const N: u32 = 3_000;
    let broker = common::nats().await;
    let (_client, js, stream) = setup(&broker, "ADAPT").await;
    publish_all(&js, "ADAPT.x", N, PublishConfig::new("p").buffer(1024).max_unconfirmed(256)).await;
    // Vegas between 1 and 16 handlers; pause when the oldest fetched message has waited 10 ms.
    let flow = FlowControl::builder("adaptive")
        .adaptive(spillway::adaptive::Vegas::default().with_max(16).with_initial(4))
        .buffer(128)
        .pause_on(PauseOn::WaitTime(Duration::from_millis(10)))
        .build();
    let consumer = Arc::new(
        NatsConsumer::create(&stream, "adaptive", flow.clone(), NatsOptions::default().batch(64))
            .await
            .unwrap(),
    );
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
    wait_until("every message processed", Duration::from_secs(40), || {
        flow.snapshot().processed_total >= u64::from(N)
    })
    .await;
    wait_until("the consumer to resume", Duration::from_secs(2), || !flow.snapshot().paused).await;
    running.abort();
    let s = flow.snapshot();
    eprintln!("nats adaptive + wait-time pause: {s:?}");
    assert!(s.pauses_total >= 1 && s.resumes_total >= 1, "the wait-time pause never engaged: {s:?}");
    assert!(s.peak_in_flight <= 16 && (1..=16).contains(&s.limit), "{s:?}");
    // Never more than the buffer, the handlers, one batch and the two messages in between.
    assert!(s.peak_lag <= 128 + 16 + 64 + 2, "{s:?}");
    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "a message was not handled exactly once");
}
