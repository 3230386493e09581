//! WebSocket relays: an HTTP/1.1 upgrade passed to the upstream, then each message carried
//! through a bounded queue per direction whose policy decides what a slow reader costs.
//!
//! Per connection, four loops run in one task: for each direction, a reader that takes messages
//! from one side into the queue, and a writer that sends them from the queue to the other side.
//! The queue is a `spillway::channel` with the route's policy:
//!
//! | policy | a full queue | the fast side |
//! | --- | --- | --- |
//! | `block` | the reader stops reading | is held back by TCP; nothing lost, order kept |
//! | `drop_oldest` | evicts the oldest message | never waits; counted in `websocket_dropped_messages` |
//! | `drop_newest` | drops the new message | never waits; counted |
//! | `disconnect` | the slow side is closed with 1008 and a reason | keeps its connection to the proxy until then |
//!
//! With `max_lag`, a message that has waited that long for its reader closes the reader with
//! 1008 (`slow consumer: lagging`), whatever the policy: a reader that stopped reading is found
//! even when its queue never fills. A side that does not take its close frame within a second is
//! dropped. When the worker stops, each side gets what is queued for it, then a close with 1001.
//!
//! A message (or frame) over `max_message` closes its sender with 1009. Extensions are not
//! negotiated (`Sec-WebSocket-Extensions` is not forwarded): each message is relayed as read.
//! With `flow_control`, the proxy tells the upstream `{"event":"flow.pause","reason":"buffer full"}`
//! when the client's queue passes 3/4 of its capacity and `{"event":"flow.resume"}` when it falls
//! under 1/4.

use crate::config::{WebSocketConfig, WsPolicy};
use crate::metrics::WsMetrics;
use crate::server::{Streams, stopped};
use crate::upstream::OpenGuard;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use spillway::channel::{OverflowPolicy, Receiver, SendError, SendOutcome, Sender, channel};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as Limits};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Whether `parts` asks to upgrade to WebSocket (RFC 6455 §4.1), read before hop-by-hop fields
/// are stripped.
pub(crate) fn is_upgrade(parts: &Parts) -> bool {
    let has = |name, token: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    parts.method == http::Method::GET
        && parts.version == http::Version::HTTP_11
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// Puts back the fields an upgrade needs after the hop-by-hop strip, without extensions.
pub(crate) fn restore_upgrade_fields(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
}

/// The client's side of the upgrade, taken from the request before it is answered.
pub(crate) fn take_client(parts: &mut Parts) -> Option<OnUpgrade> {
    parts.extensions.remove::<OnUpgrade>()
}

/// One of a route's `max_connections`, counted in its `websocket_connections` gauge from
/// before the upgrade is passed on until the relay ends.
pub(crate) struct Slot(Gauge);

impl Slot {
    pub(crate) fn take(open: &Gauge, max: usize) -> Option<Self> {
        let slot = Self(open.clone());
        // `inc` answers the count before it: one atomic step, no race between check and count.
        (open.inc() < max as i64).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the relay of one connection needs.
pub(crate) struct Relay {
    pub(crate) slot: Slot,
    pub(crate) client: OnUpgrade,
    pub(crate) upstream: (TcpStream, BytesMut, OpenGuard),
    pub(crate) config: WebSocketConfig,
    pub(crate) metrics: WsMetrics,
    pub(crate) streams: Streams,
}

/// How far along its close a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Open,
    /// Its reader stops; its writer sends what is queued, then its close frame.
    Draining,
    /// Its reader stops; its writer sends its close frame without what is still queued.
    Done,
}

/// One side's state, shared by the loop that reads it and the loop that writes it.
struct Side {
    /// The close frame to send this side when its writer ends.
    close: Mutex<Option<CloseFrame>>,
    phase: watch::Sender<Phase>,
}

impl Side {
    fn new() -> Self {
        Self { close: Mutex::new(None), phase: watch::Sender::new(Phase::Open) }
    }

    /// Sets the close frame (the first one set wins) and moves the side on to `phase`.
    fn close_with(&self, code: CloseCode, reason: &'static str, phase: Phase) {
        self.close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(CloseFrame { code, reason: reason.into() });
        self.advance(phase);
    }

    fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|p| (*p < phase).then(|| *p = phase).is_some());
    }

    async fn reached(&self, phase: Phase) {
        let _ = self.phase.subscribe().wait_for(|p| *p >= phase).await;
    }
}

/// How long a side gets to take its close frame before its connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A queued message, with the time by which it must be on its way (`max_lag`).
type Queued = (Message, Option<Instant>);

impl Relay {
    /// Runs the relay until both sides are closed. When the worker stops, each side is sent
    /// what is queued for it, then a close with 1001.
    pub(crate) async fn run(self) {
        let Streams { mut stop, open: _open } = self.streams;
        let Ok(client) = self.client.await else { return };
        let (upstream, read, _open) = self.upstream;
        let limits = Limits::default()
            .max_message_size(Some(self.config.max_message))
            .max_frame_size(Some(self.config.max_message));
        let client = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(limits)).await;
        let upstream =
            WebSocketStream::from_partially_read(upstream, read.to_vec(), Role::Client, Some(limits)).await;
        let (client_tx, client_rx) = client.split();
        let (upstream_tx, upstream_rx) = upstream.split();
        let policy = match self.config.policy {
            WsPolicy::Block => OverflowPolicy::Wait(None),
            WsPolicy::DropOldest => OverflowPolicy::DropOldest,
            WsPolicy::DropNewest => OverflowPolicy::DropNewest,
            WsPolicy::Disconnect => OverflowPolicy::Reject,
        };
        let (to_upstream, for_upstream) = channel(self.config.queue, policy);
        let (to_client, for_client) = channel(self.config.queue, policy);
        let (client_side, upstream_side) = (Side::new(), Side::new());
        let flow = Flow::new(&self.config, &to_upstream);
        let (m, lag) = (&self.metrics, self.config.max_lag);
        let client_reader = async {
            read_side(client_rx, to_upstream, &client_side, &upstream_side, m, None, lag).await;
            if let Some(f) = &flow {
                f.stop();
            }
        };
        let shutdown = async {
            tokio::select! {
                () = stopped(&mut stop) => {
                    for side in [&client_side, &upstream_side] {
                        side.close_with(CloseCode::Away, "going away", Phase::Draining);
                    }
                }
                ((), ()) = async { tokio::join!(client_side.reached(Phase::Done), upstream_side.reached(Phase::Done)) } => {}
            }
        };
        tokio::join!(
            client_reader,
            write_side(for_upstream, upstream_tx, &upstream_side, m, None),
            read_side(upstream_rx, to_client, &upstream_side, &client_side, m, flow.as_ref(), lag),
            write_side(for_client, client_tx, &client_side, m, flow.as_ref()),
            shutdown,
        );
        drop(self.slot);
    }
}

/// Application-level flow control towards the upstream.
struct Flow {
    paused: AtomicBool,
    high: usize,
    low: usize,
    /// Pause and resume join the upstream's queue, in turn. Taken away when the client's
    /// reader ends, so that the queue can close.
    to_upstream: Mutex<Option<Sender<Queued>>>,
}

impl Flow {
    fn new(config: &WebSocketConfig, to_upstream: &Sender<Queued>) -> Option<Self> {
        config.flow_control.then(|| Self {
            paused: AtomicBool::new(false),
            high: (config.queue * 3 / 4).max(1),
            low: config.queue / 4,
            to_upstream: Mutex::new(Some(to_upstream.clone())),
        })
    }

    /// After the client's queue changed to `depth`.
    fn update(&self, depth: usize, m: &WsMetrics) {
        let event = if depth >= self.high && !self.paused.swap(true, Ordering::AcqRel) {
            r#"{"event":"flow.pause","reason":"buffer full"}"#
        } else if depth <= self.low && self.paused.swap(false, Ordering::AcqRel) {
            r#"{"event":"flow.resume"}"#
        } else {
            return;
        };
        if let Some(tx) = &*self.to_upstream.lock().unwrap_or_else(|e| e.into_inner())
            && let Ok(SendOutcome::Sent) = tx.try_send((Message::text(event), None))
        {
            m.queued.inc();
        }
    }

    fn stop(&self) {
        self.to_upstream.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Reads `from` into `queue` until it closes; `me` is the side read, `peer` the side written.
async fn read_side<S>(
    mut from: S,
    queue: Sender<Queued>,
    me: &Side,
    peer: &Side,
    m: &WsMetrics,
    flow: Option<&Flow>,
    max_lag: Option<Duration>,
) where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let msg = tokio::select! {
            msg = from.next() => msg,
            // This side is closing (by the proxy, or its writer finished): stop reading it.
            () = me.reached(Phase::Draining) => None,
        };
        let msg = match msg {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => msg,
            // Pings are answered by the library; pongs need no relay.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                // Passed on as the peer's close.
                *peer.close.lock().unwrap_or_else(|e| e.into_inner()) = frame;
                break;
            }
            Some(Err(WsError::Capacity(_))) => {
                m.too_big.inc();
                me.close_with(CloseCode::Size, "message too big", Phase::Done);
                peer.close_with(CloseCode::Away, "peer closed", Phase::Open);
                break;
            }
            // A reset or a protocol error: the peer is told the other side went away.
            Some(Err(_)) | None => {
                peer.close_with(CloseCode::Away, "peer closed", Phase::Open);
                break;
            }
        };
        match queue.send((msg, max_lag.map(|lag| Instant::now() + lag))).await {
            Ok(SendOutcome::Sent) => {
                m.queued.inc();
            }
            Ok(SendOutcome::Replaced(_) | SendOutcome::Dropped(_)) => {
                m.dropped.inc();
            }
            Err(SendError::Full(_)) => {
                // Disconnect: the peer does not keep up.
                m.slow_consumer.inc();
                peer.close_with(CloseCode::Policy, "slow consumer: queue full", Phase::Done);
                me.close_with(CloseCode::Away, "peer closed", Phase::Open);
                break;
            }
            // The peer's writer is gone.
            Err(_) => break,
        }
        if let Some(f) = flow {
            f.update(queue.len(), m);
        }
    }
    // Dropping the queue's sender lets the peer's writer finish what is queued.
}

/// Sends what `queue` holds to `to`, then this side's close frame.
async fn write_side<K>(queue: Receiver<Queued>, mut to: K, me: &Side, m: &WsMetrics, flow: Option<&Flow>)
where
    K: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let next = tokio::select! {
            next = queue.recv() => next,
            () = me.reached(Phase::Done) => None,
        };
        let Some((msg, due)) = next else { break };
        m.queued.dec();
        if let Some(f) = flow {
            f.update(queue.len(), m);
        }
        let sent = match due {
            None => Some(to.send(msg).await),
            Some(due) if due > Instant::now() => tokio::time::timeout_at(due, to.send(msg)).await.ok(),
            Some(_) => None,
        };
        match sent {
            Some(Ok(())) => {}
            Some(Err(_)) => break,
            // The message waited `max_lag`: this side does not keep up.
            None => {
                m.lagging.inc();
                me.close_with(CloseCode::Policy, "slow consumer: lagging", Phase::Done);
                break;
            }
        }
    }
    // What is still queued is dropped with the queue: count it out of the gauge.
    let left = queue.len() as i64;
    m.queued.dec_by(left);
    drop(queue);
    // Whoever reads this side stops too.
    me.advance(Phase::Done);
    let frame = me.close.lock().unwrap_or_else(|e| e.into_inner()).take();
    // A side that does not read gets no longer than CLOSE_TIMEOUT for its close frame.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = to.send(Message::Close(frame)).await;
        let _ = to.close().await;
    })
    .await;
}
