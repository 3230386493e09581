//! A gRPC server stream through the proxy to a slow reader: tonic on both ends, an h2c upstream.
//! HTTP/2's flow-control windows must carry the reader's pace back to the producer, so that
//! the proxy holds a bounded amount whatever the stream's length.

mod common;

use bytes::{Buf, BufMut, Bytes};
use common::{rss_bytes, stop};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

const MESSAGE: usize = 64 << 10;

/// Messages as raw bytes: no protobuf needed to move bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

type Messages = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, Status>> + Send>>;

/// The server-streaming method: `count` messages of 64 KiB, as fast as the stream is read.
struct Feed {
    count: u64,
    sent: Arc<AtomicU64>,
}

impl tonic::server::ServerStreamingService<Bytes> for Feed {
    type Response = Bytes;
    type ResponseStream = Messages;
    type Future = std::future::Ready<Result<Response<Messages>, Status>>;

    fn call(&mut self, _: Request<Bytes>) -> Self::Future {
        let (count, sent) = (self.count, self.sent.clone());
        let chunk = Bytes::from(vec![7u8; MESSAGE]);
        let stream = futures_util::stream::unfold(0u64, move |i| {
            let (chunk, sent) = (chunk.clone(), sent.clone());
            async move {
                (i < count).then(|| {
                    sent.fetch_add(1, Ordering::Relaxed);
                    (Ok(chunk), i + 1)
                })
            }
        });
        std::future::ready(Ok(Response::new(Box::pin(stream) as Messages)))
    }
}

/// An h2c gRPC upstream serving `/test.Feed/Stream`.
async fn grpc_upstream(count: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let s = sent.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let feed = Feed { count, sent: s.clone() };
                    async move {
                        Ok::<_, Infallible>(tonic::server::Grpc::new(Raw).server_streaming(feed, req).await)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_to_a_slow_reader_is_held_back_by_the_windows() {
    const COUNT: u64 = 4096; // 256 MiB
    let (up, sent) = grpc_upstream(COUNT).await;
    let config = format!(
        "[server]\nthreads = 1\nshutdown_grace = \"2s\"\n[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"grpc\"\naddrs = [\"{up}\"]\nprotocol = \"h2c\"\n\
         [[routes]]\nlistener = \"web\"\nupstream = \"grpc\"\ntimeout = \"60s\"\n"
    );
    let proxy =
        spillway_proxy::Proxy::start(spillway_proxy::Config::parse(&config, "grpc.toml").unwrap()).unwrap();
    let addr = proxy.listener_addr("web").unwrap();
    let before = rss_bytes();

    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(256 << 10)
        .http2_initial_connection_window_size(1 << 20)
        .build_http::<tonic::body::Body>();
    let mut client = tonic::client::Grpc::with_origin(http, format!("http://{addr}").parse().unwrap());
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Feed/Stream");
    let mut stream =
        client.server_streaming(Request::new(Bytes::new()), path, Raw).await.unwrap().into_inner();

    let mut read = 0u64;
    while read < 4 {
        let m = stream.message().await.unwrap().unwrap();
        assert_eq!(m.len(), MESSAGE);
        read += 1;
    }
    // The reader stops: the producer must stall at the windows, not the proxy swell.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stalled = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent.load(Ordering::Relaxed), stalled, "the producer is blocked while nobody reads");
    let ahead = (stalled - read) * MESSAGE as u64;
    // Ahead of the reader: the client's stream window, the proxy's upstream stream window (both
    // 256 KiB) and a few messages in flight, nothing more.
    assert!(ahead <= 768 << 10, "{} KiB produced ahead of the reader", ahead >> 10);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 16 << 20, "the process grew by {} MiB", grown >> 20);

    // A slow reader to the end: every message arrives.
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.len(), MESSAGE);
        read += 1;
        if read % 256 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(read, COUNT);
    stop(proxy).await;
}
