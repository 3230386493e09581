//! The layers in front of a real tonic server on 127.0.0.1:0: refusals reach the gRPC client as
//! RESOURCE_EXHAUSTED (quota) and UNAVAILABLE (overload) with a retry pushback.

use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway_tower::http::OverloadResponseLayer;
use spillway_tower::{ConcurrencyLimitLayer, RateLimitLayer};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tower::ServiceBuilder;

/// The message, written by hand (no protoc needed).
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

/// `demo.Echo/Say`, answering after `delay`.
#[derive(Clone)]
struct Echo {
    delay: Duration,
}

struct Say(Duration);

impl UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        let delay = self.0;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
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
        let delay = self.delay;
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Msg, Msg>::default());
            Ok(grpc.unary(Say(delay), req).await)
        })
    }
}

impl NamedService for Echo {
    const NAME: &'static str = "demo.Echo";
}

async fn say(addr: std::net::SocketAddr) -> Result<String, tonic::Status> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/demo.Echo/Say");
    let reply = client
        .unary(
            tonic::Request::new(Msg { text: "hi".into() }),
            path,
            tonic_prost::ProstCodec::<Msg, Msg>::default(),
        )
        .await?;
    Ok(reply.into_inner().text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_quota_and_overload_statuses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let quota = Quota::per_minute(4).unwrap();
    let layers = ServiceBuilder::new()
        .layer(OverloadResponseLayer)
        .layer(RateLimitLayer::new(
            KeyedLimiter::new(Gcra::new(quota), 64),
            |_: &http::Request<tonic::body::Body>| (),
        ))
        .layer(ConcurrencyLimitLayer::new(ConcurrencyLimiter::new(1)));
    let server = tonic::transport::Server::builder()
        .layer(layers)
        .add_service(Echo { delay: Duration::from_millis(1_000) })
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    // Two at once against a concurrency limit of 1: one answer, one UNAVAILABLE.
    let (a, b) = tokio::join!(say(addr), say(addr));
    let statuses = [&a, &b];
    assert!(statuses.iter().any(|r| r.as_ref().is_ok_and(|t| t == "hi")), "{a:?} {b:?}");
    let unavailable = statuses.iter().find_map(|r| r.as_ref().err()).expect("one refused");
    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    assert!(unavailable.metadata().get("grpc-retry-pushback-ms").is_some());

    // The quota (4 a minute; 2 used): two more pass, then RESOURCE_EXHAUSTED.
    assert_eq!(say(addr).await.unwrap(), "hi");
    assert_eq!(say(addr).await.unwrap(), "hi");
    let exhausted = say(addr).await.unwrap_err();
    assert_eq!(exhausted.code(), tonic::Code::ResourceExhausted);
    let pushback: u64 =
        exhausted.metadata().get("grpc-retry-pushback-ms").unwrap().to_str().unwrap().parse().unwrap();
    assert!(pushback >= 1_000, "{pushback}");
}
