//! The broker-independent consumer loop: a fetcher (the adapter's) feeds a bounded local buffer;
//! one dispatcher admits each message to the handler through the flow control's limit and
//! finishes it (ack or nack) when the handler returns.

use crate::flow::{Fetched, FlowControl};
use crate::{Error, Message};
use spillway::channel::{OverflowPolicy, Receiver, Sender, channel};
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinSet;

/// A message with a way to settle it with its broker.
pub(crate) trait Delivery: Send + 'static {
    /// The handler's view: the payload (a cheap `Bytes` handle) and metadata.
    fn message(&self) -> Message;
    /// Acks (`ok`) or gives the message back for redelivery (`!ok`).
    fn settle(self, ok: bool) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Runs `fetch` (which pushes fetched messages into the sender it is given, calling
/// [`FlowControl::ready`] before each pull) and the dispatcher side by side, until either fails
/// or the fetcher ends and everything fetched is finished.
pub(crate) async fn run<D, FF, H, F, E>(
    flow: &FlowControl,
    fetch: impl FnOnce(Sender<(D, Fetched)>) -> FF,
    handler: H,
) -> Result<(), Error>
where
    D: Delivery,
    FF: Future<Output = Result<(), Error>>,
    H: Fn(Message) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let (tx, rx) = channel(flow.buffer(), OverflowPolicy::Wait(None));
    let fetch = fetch(tx);
    let dispatch = dispatch(flow, rx, Arc::new(handler));
    tokio::pin!(fetch, dispatch);
    tokio::select! {
        // The dispatcher ends first only when an ack failed: stop fetching (the fetcher may be
        // waiting for a delivery that never comes).
        dispatched = &mut dispatch => dispatched,
        // The source ended (or failed) and dropped its sender: finish what was fetched.
        fetched = &mut fetch => {
            let dispatched = dispatch.await;
            dispatched.and(fetched)
        }
    }
}

async fn dispatch<D, H, F, E>(
    flow: &FlowControl,
    rx: Receiver<(D, Fetched)>,
    handler: Arc<H>,
) -> Result<(), Error>
where
    D: Delivery,
    H: Fn(Message) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    // Holds at most `limit` running handlers plus the finished ones not yet reaped (reaped as
    // they finish), so it is bounded by the limit.
    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
    loop {
        tokio::select! {
            // A finished handler: a failed ack stops the consumer at once, even while no new
            // message arrives.
            Some(done) = tasks.join_next(), if !tasks.is_empty() => done.map_err(Error::task)??,
            item = rx.recv() => {
                let Some((delivery, fetched)) = item else { break };
                let ticket = flow.admit(fetched).await;
                let handler = handler.clone();
                tasks.spawn(async move {
                    let ok = handler(delivery.message()).await.is_ok();
                    match delivery.settle(ok).await {
                        Ok(()) if ok => ticket.success(),
                        Ok(()) => ticket.failure(),
                        Err(e) => {
                            ticket.failure();
                            return Err(e);
                        }
                    }
                    Ok(())
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(Error::task)??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PauseOn;
    use bytes::Bytes;
    use std::sync::Mutex;
    use std::time::Duration;

    /// An in-memory broker: messages with ids; settles are recorded.
    struct Mem {
        id: u32,
        log: Arc<Mutex<Vec<(u32, bool)>>>,
    }

    impl Delivery for Mem {
        fn message(&self) -> Message {
            Message { payload: Bytes::copy_from_slice(&self.id.to_be_bytes()), redelivered: false }
        }
        async fn settle(self, ok: bool) -> Result<(), Error> {
            self.log.lock().unwrap().push((self.id, ok));
            Ok(())
        }
    }

    /// Settling fails: the broker connection is gone.
    struct Broken;

    impl Delivery for Broken {
        fn message(&self) -> Message {
            Message::new(Bytes::new())
        }
        async fn settle(self, _ok: bool) -> Result<(), Error> {
            Err(Error::closed("test broker"))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_ack_stops_the_run_even_if_the_source_never_ends() {
        let flow = FlowControl::builder("broken").limit(1).build();
        let f2 = flow.clone();
        let fetch = move |tx: Sender<(Broken, Fetched)>| async move {
            let fetched = f2.on_fetched(0);
            let _ = tx.send((Broken, fetched)).await;
            std::future::pending::<()>().await; // a source that never delivers again
            Ok(())
        };
        let run = run(&flow, fetch, |_m: Message| async { Ok::<(), ()>(()) });
        let outcome = tokio::time::timeout(Duration::from_secs(5), run).await.expect("the run stopped");
        assert!(matches!(outcome, Err(Error::Closed(_))), "{outcome:?}");
        // The pending source's token was never created; the failed message was counted.
        let s = flow.snapshot();
        assert_eq!((s.failed_total, s.lag), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_handler_pauses_a_fast_source_and_every_message_settles_once() {
        let flow = FlowControl::builder("mem").limit(4).buffer(16).pause_on(PauseOn::Lag(12)).build();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        let f2 = flow.clone();
        let fetch = move |tx: Sender<(Mem, Fetched)>| async move {
            let mut id = 0;
            while id < 400 {
                f2.ready().await;
                // A "batch" of 8.
                for _ in 0..8 {
                    let fetched = f2.on_fetched(4);
                    tx.send((Mem { id, log: l2.clone() }, fetched))
                        .await
                        .map_err(|_| Error::closed("buffer"))?;
                    id += 1;
                }
            }
            Ok(())
        };
        run(&flow, fetch, |m: Message| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            // Every 50th message fails once.
            if u32::from_be_bytes(m.payload[..4].try_into().unwrap()) % 50 == 7 {
                Err("boom")
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
        let s = flow.snapshot();
        assert!(s.pauses_total >= 1 && s.resumes_total >= 1, "{s:?}");
        assert!(s.peak_lag <= 12 + 8, "lag {} above threshold + batch", s.peak_lag);
        assert!(s.peak_in_flight <= 4);
        assert_eq!((s.processed_total, s.failed_total, s.lag, s.in_flight, s.paused), (392, 8, 0, 0, false));
        let mut ids: Vec<u32> = log.lock().unwrap().iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..400).collect::<Vec<_>>());
    }
}
