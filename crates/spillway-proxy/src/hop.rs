//! Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection and are never forwarded.

use http::header::{self, HeaderMap, HeaderValue};

/// Each hop-by-hop field, by its bit; `te` is kept when it says `trailers`, which gRPC needs
/// end to end.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer", "te"];
const TE: u8 = 1 << 6;
/// The bit of `Upgrade`.
pub(crate) const UPGRADE: u8 = 1 << 4;
/// The bit of `Transfer-Encoding`.
pub(crate) const TRANSFER_ENCODING: u8 = 1 << 3;

/// Whether the message's transfer coding is `chunked` alone: the one coding the proxy decodes
/// and re-frames. Anything else (`gzip, chunked`, two fields) it cannot pass on faithfully.
pub(crate) fn chunked_only(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    matches!((codings.next(), codings.next()), (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The bit of a hop-by-hop field name, 0 for any other: a switch on the length first, so most
/// names cost no string comparison at all.
pub(crate) fn bit(name: &str) -> u8 {
    let i = match name.len() {
        2 => 6,
        7 => 4 + usize::from(name.as_bytes()[0] == b't'),
        10 => usize::from(name.as_bytes()[0] == b'k'),
        16 => 2,
        17 => 3,
        _ => return 0,
    };
    if name == HOP_BY_HOP[i] { 1 << i } else { 0 }
}

/// Removes the hop-by-hop fields from `headers`, and those a `Connection` field names.
pub(crate) fn strip(headers: &mut HeaderMap) {
    strip_seen(headers, scan(headers));
}

/// The bits of the hop-by-hop fields present: one pass over the names.
pub(crate) fn scan(headers: &HeaderMap) -> u8 {
    headers.keys().fold(0u8, |seen, name| seen | bit(name.as_str()))
}

/// [`strip`], given what [`scan`] found.
pub(crate) fn strip_seen(headers: &mut HeaderMap, seen: u8) {
    // Most messages carry at most `Connection`, so what follows is one or two removals.
    if seen == 0 {
        return;
    }
    if seen & 1 != 0
        && let Some(conn) = headers.remove(header::CONNECTION)
    {
        strip_named(headers, &conn);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if seen & (1 << i) != 0 && (1 << i != TE || headers.get(header::TE).is_some_and(|v| v != "trailers"))
        {
            headers.remove(*name);
        }
    }
}

/// Removes the fields a `Connection` value names (hop-by-hop too).
pub(crate) fn strip_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(connection) = connection.to_str() else { return };
    for name in connection.split(',').map(str::trim) {
        if !name.is_empty() && !name.eq_ignore_ascii_case("keep-alive") && !name.eq_ignore_ascii_case("close")
        {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    #[test]
    fn hop_bits_name_exactly_the_hop_by_hop_fields() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(bit(name), 1 << i, "{name}");
        }
        for name in ["tz", "upgrad3", "trailex", "connectiox", "keep-alivf", "x-connection-abc", "host", ""] {
            assert_eq!(bit(name), 0, "{name}");
        }
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);

        let mut grpc = HeaderMap::new();
        grpc.insert(header::TE, HeaderValue::from_static("trailers"));
        strip(&mut grpc);
        assert_eq!(grpc.get(header::TE).unwrap(), "trailers");
    }
}
