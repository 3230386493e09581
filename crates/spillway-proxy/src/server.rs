//! Workers: one OS thread each, with a single-threaded tokio runtime and its own listening
//! socket per listener (`SO_REUSEPORT`: the kernel spreads connections), so a request never
//! crosses threads and the upstream pools need no shared lock.

use crate::Shared;
use crate::config::ListenerConfig;
use crate::deadline::{Deadlines, Guarded, Sweeper};
use crate::forward::Conn;
use crate::tcp::TcpProxy;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Binds `addr` with `SO_REUSEPORT`, so every worker can bind the same address.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds every listener once per worker; `127.0.0.1:0` picks one port shared by all workers.
pub(crate) fn bind_all(
    listeners: &[ListenerConfig],
    workers: usize,
) -> io::Result<(Vec<SocketAddr>, Vec<Vec<std::net::TcpListener>>)> {
    let listens: Vec<_> = listeners.iter().map(|l| (l.name.clone(), l.listen)).collect();
    bind_addrs(&listens, workers)
}

/// Binds each named address once per worker.
pub(crate) fn bind_addrs(
    listens: &[(String, SocketAddr)],
    workers: usize,
) -> io::Result<(Vec<SocketAddr>, Vec<Vec<std::net::TcpListener>>)> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for (name, listen) in listens {
        let first =
            bind(*listen).map_err(|e| io::Error::new(e.kind(), format!("listener {name}: {listen}: {e}")))?;
        let addr = first.local_addr()?;
        addrs.push(addr);
        per_worker[0].push(first);
        for w in per_worker.iter_mut().skip(1) {
            w.push(bind(addr)?);
        }
    }
    Ok((addrs, per_worker))
}

pub(crate) type Tls = Option<tokio_rustls::TlsAcceptor>;

/// Runs worker `worker` until `stop` turns true, then drains its connections for at most
/// `grace`.
pub(crate) fn run_worker(
    shared: Arc<Shared>,
    worker: usize,
    sockets: Vec<(std::net::TcpListener, ListenerConfig, Tls)>,
    tcp: Vec<(std::net::TcpListener, Arc<TcpProxy>)>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let sweeper = Arc::new(Sweeper::default());
        tokio::spawn(sweeper.clone().run());
        let mut loops = tokio::task::JoinSet::new();
        let streams = Streams { stop: stop.clone(), open: Arc::new(()) };
        for (socket, proxy) in tcp {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            let (mut stop, open) = (stop.clone(), streams.open.clone());
            loops.spawn(async move {
                while let Some((stream, _)) = next_connection(&listener, &mut stop).await {
                    tokio::spawn(proxy.clone().serve(stream, open.clone()));
                }
            });
        }
        for (index, (socket, config, tls)) in sockets.into_iter().enumerate() {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            let builders = Builders::new(&config);
            let (shared, sweeper, mut stop) = (shared.clone(), sweeper.clone(), stop.clone());
            let streams = streams.clone();
            // The TLS handshake and the first bytes fall under the header read timeout (zero
            // turns it off).
            let handshake =
                Some(config.header_read_timeout).filter(|t| !t.is_zero()).unwrap_or(Duration::MAX);
            loops.spawn(async move {
                while let Some((stream, peer)) = next_connection(&listener, &mut stop).await {
                    // Registered at once: the drain waits for it, and its first head is due within
                    // the header read timeout from now.
                    let deadlines = sweeper.register(config.header_read_timeout);
                    let conn = Conn {
                        shared: shared.clone(),
                        worker,
                        listener: index,
                        peer,
                        deadlines: None,
                        streams: streams.clone(),
                    };
                    let builders = builders.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        // The protocol: ALPN under TLS; on plain TCP, the HTTP/2 preface or not.
                        let h2 = match tls {
                            Some(acceptor) => {
                                let Ok(Ok(stream)) =
                                    tokio::time::timeout(handshake, acceptor.accept(stream)).await
                                else {
                                    return;
                                };
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                return builders.serve(TokioIo::new(stream), h2, conn, deadlines).await;
                            }
                            None => match tokio::time::timeout(handshake, is_h2_preface(&stream)).await {
                                Ok(Ok(h2)) => h2,
                                _ => return,
                            },
                        };
                        builders.serve(TokioIo::new(stream), h2, conn, deadlines).await;
                    });
                }
            });
        }
        stopped(&mut stop).await;
        while loops.join_next().await.is_some() {}
        // Every accept loop has ended: no connection is registered after this drain but those
        // accepted before it, which drain at their first poll.
        sweeper.drain();
        // TCP-mode connections have no requests to finish: they get the grace period to close.
        // WebSocket relays send what is queued, then close both sides with 1001.
        let streams_closed = async {
            while Arc::strong_count(&streams.open) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let drained = async { tokio::join!(sweeper.drained(), streams_closed) };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(worker, "grace period over with connections still open");
        }
        Ok(())
    })
}

/// What the worker's long-lived streams (TCP-mode connections, WebSocket relays) share with its
/// drain: the stop signal, and a count the drain waits on (one clone per open stream).
#[derive(Debug, Clone)]
pub(crate) struct Streams {
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) open: Arc<()>,
}

/// The next connection (with `TCP_NODELAY` set), or `None` once `stop` turns true.
async fn next_connection(
    listener: &tokio::net::TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                // Out of descriptors or the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = stopped(stop) => return None,
        }
    }
}

/// Whether a plain connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`): h2c by prior
/// knowledge. Peeks, so nothing is consumed. A first segment shorter than four bytes waits for
/// the next one: the peek reports "would block" so that the socket's readiness is cleared, and
/// a client that drips a byte at a time (slowloris) costs one wake-up per byte, not a poll loop.
async fn is_h2_preface(stream: &tokio::net::TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 4];
    loop {
        stream.readable().await?;
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            match rustix::net::recv(stream, &mut buf[..], rustix::net::RecvFlags::PEEK)?.0 {
                1..4 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        });
        match peeked {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(&buf == b"PRI "),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The listener's HTTP/1.1 and HTTP/2 connection settings. The protocol is chosen once per
/// connection, so each request goes straight to hyper's HTTP/1 or HTTP/2 machinery with no
/// detecting wrapper around the socket.
#[derive(Clone)]
struct Builders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(c: &ListenerConfig) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.max_buf_size(c.max_header_bytes.max(8192)).keep_alive(true).writev(false);
        // hyper's default is 100 headers, parsed into a stack array; any explicit limit makes
        // it allocate and fill a vector of that size per request, so set it only when it differs.
        if c.max_headers != 100 {
            h1.max_headers(c.max_headers);
        }
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(c.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(c.h2_max_pending_resets)
            .initial_stream_window_size(c.h2_stream_window)
            .initial_connection_window_size(c.h2_connection_window)
            .max_header_list_size(c.max_header_bytes as u32)
            .keep_alive_interval(Some(c.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(20));
        Self { h1, h2 }
    }

    /// Serves a connection; `deadlines` carry HTTP/1.1's header read timeout (kept by the
    /// worker's sweeper rather than by hyper, which would arm a timer per request) and the
    /// worker's drain, for both protocols.
    async fn serve<I>(&self, io: I, h2: bool, mut conn: Conn, deadlines: Arc<Deadlines>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        if h2 {
            // HTTP/2 has no head deadline (its streams use tokio's timers, and pings).
            deadlines.busy();
            let svc = service(Arc::new(conn));
            let _ = Guarded::new(self.h2.serve_connection(io, svc), deadlines).await;
        } else {
            conn.deadlines = Some(deadlines.clone());
            let svc = service(Arc::new(conn));
            // With upgrades: a WebSocket handshake hands the connection to its relay.
            let _ = Guarded::new(self.h1.serve_connection(io, svc).with_upgrades(), deadlines).await;
        }
    }
}

fn service(
    conn: Arc<Conn>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<crate::ProxyBody>, Infallible>> + Send + 'static,
> + Send
+ 'static {
    service_fn(move |req| crate::forward::handle(conn.clone(), req))
}

impl std::fmt::Debug for Builders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Builders")
    }
}

/// A TLS acceptor offering h2 and http/1.1 by ALPN.
pub(crate) fn tls_acceptor(c: &crate::config::TlsConfig) -> io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut &read(&c.cert)?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &read(&c.key)?[..])?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: no private key", c.key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
