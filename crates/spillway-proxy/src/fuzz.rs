//! Entry points for fuzzing: the `fuzz/` targets (cargo-fuzz, libFuzzer) and the corpus replay
//! in `tests/fuzz.rs` call these. Each takes arbitrary bytes and must return, whatever they are:
//! a panic is a bug. Not a stable API.

use crate::config::Config;
use http::Method;

/// A config file: parsed and validated, or refused with a located error.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Config::parse(text, "fuzz.toml") {
            // The error must render (file, line, key).
            let _ = e.to_string();
        }
    }
}

/// An upstream's answer to a GET (the first byte: HEAD or GET, and how the bytes are split),
/// read as the HTTP/1.1 exchange reads it: interim answers, the head, then the body's framing.
pub fn upstream_response(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else { return };
    let method = if first & 1 == 0 { Method::GET } else { Method::HEAD };
    let step = usize::from(first >> 1).max(1);
    crate::h1::fuzz_response(wire, &method, step);
}

/// A request head (one `name: value` a line) checked for a WebSocket upgrade, and the fields an
/// upgrade needs put back.
pub fn websocket_upgrade(data: &[u8]) {
    let mut req = http::Request::get("/").version(http::Version::HTTP_11);
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            req = req.header(n, v);
        }
    }
    let Ok(req) = req.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    if crate::ws::is_upgrade(&parts) {
        crate::hop::strip(&mut parts.headers);
        crate::ws::restore_upgrade_fields(&mut parts.headers);
        assert!(parts.headers.contains_key(http::header::UPGRADE));
    }
}

/// The client address (the rate-limit key) from forwarding headers sent by a trusted peer.
pub fn client_key(data: &[u8]) {
    use spillway_tower::http::ClientIp;
    let trusted =
        ClientIp::trusting(["127.0.0.0/8".parse().expect("a CIDR"), "::1/128".parse().expect("a CIDR")]);
    let mut headers = http::HeaderMap::new();
    for (i, part) in data.split(|&b| b == b'\n').take(4).enumerate() {
        let name = if i % 2 == 0 { "x-forwarded-for" } else { "forwarded" };
        if let Ok(v) = http::HeaderValue::from_bytes(part) {
            headers.append(name, v);
        }
    }
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    if let Some(ip) = trusted.client_of(&headers, Some(&peer)) {
        let _ = spillway::rate::IpKey::from(ip);
    }
}

/// An admin request: the first line is the method, the second the target.
pub fn admin_request(data: &[u8]) {
    let mut lines = data.splitn(2, |&b| b == b'\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else { return };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), http::Uri::try_from(target)) else { return };
    let Ok(req) = http::Request::builder().method(method).uri(uri).body(()) else { return };
    crate::admin::fuzz_answer(&req);
}
