//! A tonic gRPC service behind Spillway's layers: refusals reach clients as RESOURCE_EXHAUSTED
//! (quota) or UNAVAILABLE (overload) with `grpc-retry-pushback-ms`.
//!
//! `cargo run --release -p spillway-tower --example tonic` serves `demo.Echo/Say` on
//! 127.0.0.1:50051 (`ADDR` changes it). The message type is written by hand with
//! `prost::Message`, so no protoc is needed; `tests/tonic.rs` has a client. Under open-loop
//! load, `spillway load --grpc --url http://127.0.0.1:50051/demo.Echo/Say --rate 1000 --duration 5
//! --deadline-ms 1000` shows the quota's RESOURCE_EXHAUSTED answers (counted as 429) with their
//! pushback; `tests/examples_under_load.rs` runs exactly that.

use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway_tower::http::OverloadResponseLayer;
use spillway_tower::{BoxError, ConcurrencyLimitLayer, RateLimitLayer};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tower::ServiceBuilder;

/// The request and reply.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

/// `demo.Echo`: echoes after 20 ms of "work".
#[derive(Clone)]
struct Echo;

struct Say;

impl UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(tonic::Response::new(req.into_inner()))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            Ok(Grpc::new(tonic_prost::ProstCodec::<Msg, Msg>::default()).unary(Say, req).await)
        })
    }
}

impl NamedService for Echo {
    const NAME: &'static str = "demo.Echo";
}

/// Serves `demo.Echo` behind the layers on `listener` until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener) -> Result<(), BoxError> {
    let layers = ServiceBuilder::new()
        .layer(OverloadResponseLayer)
        .layer(RateLimitLayer::new(
            KeyedLimiter::new(Gcra::new(Quota::per_second(100)?.with_burst(20)?), 1024),
            |_: &http::Request<tonic::body::Body>| (),
        ))
        .layer(ConcurrencyLimitLayer::new(
            ConcurrencyLimiter::builder(16).queue(16).queue_timeout(Duration::from_millis(50)).build(),
        ));
    tonic::transport::Server::builder()
        .layer(layers)
        .add_service(Echo)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("gRPC demo.Echo on {}", listener.local_addr()?);
    serve(listener).await
}
