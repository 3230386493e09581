//! TLS listeners: HTTP/2 and HTTP/1.1 chosen by ALPN.

mod common;

use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio_rustls::rustls;

async fn over_tls(
    addr: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
) -> (http::Version, StatusCode) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    let io = TokioIo::new(tls);
    let resp = if alpn == b"h2" {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(Request::get("https://localhost/").body(Empty::<bytes::Bytes>::new()).unwrap())
            .await
            .unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(
            Request::get("/").header("host", "localhost").body(Empty::<bytes::Bytes>::new()).unwrap(),
        )
        .await
        .unwrap()
    };
    let (version, status) = (resp.version(), resp.status());
    assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"hello");
    (version, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_h2_or_http1() {
    let dir = std::env::temp_dir().join(format!("spillway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let config = format!(
        r#"
[[listeners]]
name = "tls"
listen = "127.0.0.1:0"
tls = {{ cert = "{0}/cert.pem", key = "{0}/key.pem" }}
[[upstreams]]
name = "app"
addrs = ["{{UP}}"]
[[routes]]
listener = "tls"
upstream = "app"
"#,
        dir.display()
    );
    let (up, _) = upstream().await;
    let proxy = proxy(&config, up);
    let addr = proxy.listener_addr("tls").unwrap();
    let der = cert.cert.der().clone();
    assert_eq!(over_tls(addr, der.clone(), b"h2").await, (http::Version::HTTP_2, StatusCode::OK));
    assert_eq!(over_tls(addr, der, b"http/1.1").await, (http::Version::HTTP_11, StatusCode::OK));
    stop(proxy).await;
    let _ = std::fs::remove_dir_all(dir);
}
