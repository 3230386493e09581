//! The upstream side of HTTP/1.1 for requests without a body, run in the request's own task.
//!
//! Most proxied requests carry no body (GET, HEAD, DELETE, ...). For them the proxy writes the
//! request head to a pooled connection, parses the answer's head with `httparse`, and passes
//! the answer's body to the client straight from the socket, as the client reads it: no
//! connection task, no channel between tasks, no timer. Requests with a body go through
//! hyper's client (`upstream.rs`), which writes the body while it watches for an early answer.
//!
//! What this side holds the upstream's answer to (RFC 9112):
//! - a head of at most [`MAX_HEAD`] bytes and [`MAX_FIELDS`] fields, without obs-fold;
//! - 1xx interim answers are skipped; 101 is refused (the proxy never asks to switch);
//! - framing as in §6.3: no body after HEAD, 204 and 304; `Transfer-Encoding` ending in
//!   `chunked` is decoded (each line at most [`MAX_LINE`] bytes and ending in CRLF; trailers
//!   read, capped at [`MAX_HEAD`], and dropped); other codings, or no framing at all, run until
//!   the upstream closes; otherwise `Content-Length`;
//! - `Transfer-Encoding` beside `Content-Length`, and `Content-Length`s that differ, are
//!   refused (502): either could smuggle a second answer onto the connection;
//! - a connection is reused only after an HTTP/1.1 answer without `Connection: close`, read to
//!   its end with nothing left over;
//! - hop-by-hop fields, and those `Connection` names, are dropped as the head is parsed.

use crate::hop;
use crate::upstream::{OpenGuard, Upstream};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, request};
use http_body::{Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most bytes an answer's head (and, apart, its trailers) may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most fields an answer's head may have.
pub(crate) const MAX_FIELDS: usize = 100;
/// The longest chunk-size or trailer line.
pub(crate) const MAX_LINE: usize = 4096;
/// Reads of a head ask for at least this much room.
const READ_ROOM: usize = 8 * 1024;
/// Reads of a body not already read with its head ask for this much: fewer, larger frames
/// for large bodies (the client's side buffers a bounded number of them).
const BODY_READ_ROOM: usize = 32 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Nothing of an answer arrived: the upstream had closed the connection (a reused one may
    /// be retried).
    #[error("the upstream closed the connection before answering: {0}")]
    Stale(io::Error),
    #[error("upstream i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection mid-answer")]
    Truncated,
    #[error("malformed upstream answer: {0}")]
    Malformed(&'static str),
}

/// A connection to an HTTP/1.1 upstream, idle between exchanges.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request head being written; its allocation serves every request on the connection.
    out: Vec<u8>,
    _open: OpenGuard,
}

impl Conn {
    pub(crate) fn new(io: TcpStream, open: OpenGuard) -> Self {
        Self { io, buf: BytesMut::with_capacity(READ_ROOM), out: Vec::with_capacity(512), _open: open }
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it nor
    /// sent anything unasked since the last answer.
    pub(crate) fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends the head of a bodiless request and reads the answer's head, with the framing
    /// of its body, which [`Conn::body`] then reads.
    pub(crate) async fn exchange(&mut self, req: &request::Parts) -> Result<Response<Framing>, Error> {
        match self.round_trip(req, false).await? {
            Parsed::Final(head, framing) => Ok(head.map(|()| framing)),
            _ => Err(Error::Malformed("unrequested protocol switch")),
        }
    }

    /// Sends an upgrade request (WebSocket): the upstream either switches protocols (101; the
    /// connection is then the caller's, see [`Conn::into_parts`]) or answers as usual.
    pub(crate) async fn upgrade(&mut self, req: &request::Parts) -> Result<Upgrade, Error> {
        match self.round_trip(req, true).await? {
            Parsed::Switched(head) => Ok(Upgrade::Switched(head)),
            Parsed::Final(head, framing) => Ok(Upgrade::Answered(head.map(|()| framing))),
            _ => Err(Error::Malformed("no answer")),
        }
    }

    /// The socket, the bytes already read past the answer's head, and the open-connection
    /// count, for a connection that switched protocols.
    pub(crate) fn into_parts(self) -> (TcpStream, BytesMut, OpenGuard) {
        (self.io, self.buf, self._open)
    }

    /// Writes `req`'s head and reads up to a final (or, if `upgrade`, switching) answer.
    async fn round_trip(&mut self, req: &request::Parts, upgrade: bool) -> Result<Parsed, Error> {
        write_head(&mut self.out, req);
        self.io.write_all(&self.out).await.map_err(Error::Stale)?;
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, &req.method, upgrade)? {
                    Parsed::Interim => continue,
                    Parsed::Partial if self.buf.len() >= MAX_HEAD => {
                        return Err(Error::Malformed("head over 64 KiB"));
                    }
                    Parsed::Partial => {}
                    done => return Ok(done),
                }
            }
            self.buf.reserve(READ_ROOM);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) if !answered => return Err(Error::Stale(io::ErrorKind::UnexpectedEof.into())),
                Ok(0) => return Err(Error::Truncated),
                Ok(_) => answered = true,
                Err(e) if !answered => return Err(Error::Stale(e)),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// The answer's body, read from this connection, which goes back to `upstream`'s pool for
    /// `worker` after a clean end.
    pub(crate) fn body(self, framing: Framing, upstream: Arc<Upstream>, worker: usize) -> Body {
        Body::new(self, framing, Some((upstream, worker)))
    }
}

/// The upstream's answer to an upgrade request.
#[derive(Debug)]
pub(crate) enum Upgrade {
    /// 101: the connection now speaks the new protocol.
    Switched(Response<()>),
    /// Any other answer, with its body's framing.
    Answered(Response<Framing>),
}

/// How an answer's body is delimited, and whether its connection may be reused after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    decoder: Decoder,
    reusable: bool,
}

/// For [`crate::fuzz`]: reads `wire` as an answer to `method`, fed `step` bytes at a time, as
/// the exchange reads it (interim answers, the head, then the body by its framing), until it is
/// over, fails, or the bytes run out. Data never comes out of nothing, and a body read whole
/// leaves nothing owed.
pub(crate) fn fuzz_response(wire: &[u8], method: &Method, step: usize) {
    let mut pieces = wire.chunks(step.max(1));
    let mut buf = BytesMut::new();
    let mut framing = loop {
        match parse_head(&mut buf, method, false) {
            Ok(Parsed::Final(_, framing)) => break framing,
            Ok(Parsed::Interim) => {}
            Ok(Parsed::Partial) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
            Ok(Parsed::Switched(_)) | Err(_) => return,
        }
    };
    let mut taken = 0usize;
    loop {
        if framing.decoder.skip_framing(&mut buf).is_err() {
            return;
        }
        while let Some(data) = framing.decoder.take_data(&mut buf) {
            taken += data.len();
            if framing.decoder.skip_framing(&mut buf).is_err() {
                return;
            }
        }
        if framing.decoder == Decoder::Done {
            break;
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => break,
        }
    }
    assert!(taken <= wire.len(), "more body than bytes");
}

/// Writes `req`'s head in origin form into `out`.
fn write_head(out: &mut Vec<u8>, req: &request::Parts) {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A 1xx answer was consumed; the real one follows.
    Interim,
    /// The answer's head and its body's framing.
    Final(Response<()>, Framing),
    /// 101 to an upgrade request.
    Switched(Response<()>),
}

/// Parses (and consumes) one answer head at the front of `buf`.
fn parse_head(buf: &mut BytesMut, method: &Method, upgrade: bool) -> Result<Parsed, Error> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Malformed("over 100 header fields")),
        Err(_) => return Err(Error::Malformed("invalid head")),
    };
    let status =
        StatusCode::from_u16(resp.code.unwrap_or(0)).map_err(|_| Error::Malformed("invalid status"))?;
    let switched = upgrade && status == StatusCode::SWITCHING_PROTOCOLS;
    if status.is_informational() && !switched {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Malformed("unrequested protocol switch"));
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let http11 = resp.version == Some(1);
    // Where each name and value sits in the head, so that the values can share its bytes.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_FIELDS];
    let count = resp.headers.len();
    for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
        let (n, v) = (h.name.as_ptr() as usize - base, h.value.as_ptr() as usize - base);
        // The head is under MAX_HEAD (plus one read), far inside u32.
        *span = (n as u32, (n + h.name.len()) as u32, v as u32, (v + h.value.len()) as u32);
    }
    let head = buf.split_to(len).freeze();

    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut close = !http11;
    // Connection values that name further hop-by-hop fields (rare; no allocation without).
    let mut named = Vec::new();
    for &(n0, n1, v0, v1) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| Error::Malformed("invalid field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| Error::Malformed("invalid field value"))?;
        if name == header::CONTENT_LENGTH {
            for n in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let n = content_length(n).ok_or(Error::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Malformed("differing Content-Lengths"));
                }
                length = Some(n);
            }
        } else if hop::bit(name.as_str()) != 0 {
            // Read here, never kept: no hop-by-hop field is forwarded.
            if name == header::TRANSFER_ENCODING {
                let last = value.as_bytes().rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name == header::CONNECTION {
                let mut tokens = value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii);
                close |= tokens.clone().any(|t| t.eq_ignore_ascii_case(b"close"));
                if tokens.any(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
                {
                    named.push(value);
                }
            }
            continue;
        }
        headers.append(name, value);
    }
    for connection in &named {
        hop::strip_named(&mut headers, connection);
    }
    let decoder = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Decoder::Length(0)
    } else if let Some(chunked) = chunked {
        if length.is_some() {
            return Err(Error::Malformed("both Transfer-Encoding and Content-Length"));
        }
        if chunked { Decoder::Chunked(Chunk::Size) } else { Decoder::Eof }
    } else {
        length.map_or(Decoder::Eof, Decoder::Length)
    };
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if switched {
        return Ok(Parsed::Switched(resp));
    }
    Ok(Parsed::Final(resp, Framing { decoder, reusable: !close && decoder != Decoder::Eof }))
}

/// A Content-Length value: digits only, and fitting in a u64.
fn content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Where a body's framing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// The body runs until the upstream closes.
    Eof,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer lines are next; this many bytes of them were read so far.
    Trailers(usize),
}

impl Decoder {
    /// Consumes framing at the front of `buf` until data is next, more bytes are needed, or
    /// the body is over. On an error nothing is consumed, so it is met again.
    fn skip_framing(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        loop {
            *self = match *self {
                Decoder::Length(0) => Decoder::Done,
                Decoder::Chunked(Chunk::Size) => {
                    let Some(end) = line_end(buf)? else { return Ok(()) };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    Decoder::Chunked(if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) })
                }
                Decoder::Chunked(Chunk::DataEnd) => match buf.get(..2) {
                    None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(()),
                    Some(b"\r\n") => {
                        buf.advance(2);
                        Decoder::Chunked(Chunk::Size)
                    }
                    _ => return Err(Error::Malformed("chunk data not followed by CRLF")),
                },
                Decoder::Chunked(Chunk::Trailers(seen)) => {
                    let Some(end) = line_end(buf)? else { return Ok(()) };
                    let seen = seen + end + 2;
                    if seen > MAX_HEAD {
                        return Err(Error::Malformed("trailers over 64 KiB"));
                    }
                    buf.advance(end + 2);
                    if end == 0 { Decoder::Done } else { Decoder::Chunked(Chunk::Trailers(seen)) }
                }
                _ => return Ok(()),
            };
        }
    }

    /// The data at the front of `buf`, if data is what comes next.
    fn take_data(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        if buf.is_empty() {
            return None;
        }
        let n = match self {
            Decoder::Length(left) | Decoder::Chunked(Chunk::Data(left)) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                n as usize
            }
            Decoder::Eof => buf.len(),
            _ => return None,
        };
        if *self == Decoder::Chunked(Chunk::Data(0)) {
            *self = Decoder::Chunked(Chunk::DataEnd);
        }
        Some(buf.split_to(n).freeze())
    }
}

/// The index of the CR ending the line at the front of `buf`, once it is all there.
fn line_end(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(lf) = buf.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE + 2 {
            Err(Error::Malformed("chunk line too long"))
        } else {
            Ok(None)
        };
    };
    match lf.checked_sub(1) {
        Some(cr) if buf[cr] == b'\r' => Ok(Some(cr)),
        _ => Err(Error::Malformed("bare LF in chunked framing")),
    }
}

/// A chunk-size line without its CRLF: hex digits, then nothing or an extension (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 || !matches!(line.get(digits), None | Some(b';' | b' ' | b'\t')) {
        return Err(Error::Malformed("invalid chunk size"));
    }
    // At most 16 hex digits: no overflow.
    Ok(line[..digits].iter().fold(0u64, |n, &b| n << 4 | u64::from((b as char).to_digit(16).unwrap_or(0))))
}

/// An answer's body, read from its connection as the client reads it.
#[derive(Debug)]
pub(crate) struct Body {
    /// Until the body ends (or fails).
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    /// Where the connection goes back after a clean end.
    pool: Option<(Arc<Upstream>, usize)>,
}

impl Body {
    fn new(conn: Conn, framing: Framing, pool: Option<(Arc<Upstream>, usize)>) -> Self {
        let mut body = Body { conn: Some(conn), decoder: framing.decoder, reusable: framing.reusable, pool };
        body.settle();
        body
    }

    /// Consumes the framing already read; at the end, gives the connection back.
    fn settle(&mut self) {
        if let Some(conn) = &mut self.conn {
            // An error stays in the buffer and is met by the next poll.
            let _ = self.decoder.skip_framing(&mut conn.buf);
        }
        if self.decoder == Decoder::Done
            && let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
            && let Some((upstream, worker)) = &self.pool
        {
            upstream.give_back(*worker, conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = &mut this.conn else { return Poll::Ready(None) };
            if let Err(e) = this.decoder.skip_framing(&mut conn.buf) {
                return this.fail(e);
            }
            if let Some(data) = this.decoder.take_data(&mut conn.buf) {
                // The end is seen with the last data, so that the connection is free at once.
                this.settle();
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.decoder == Decoder::Done {
                this.settle();
                return Poll::Ready(None);
            }
            conn.buf.reserve(BODY_READ_ROOM);
            match conn.io.try_read_buf(&mut conn.buf) {
                Ok(0) if this.decoder == Decoder::Eof => {
                    this.decoder = Decoder::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = ready!(conn.io.poll_read_ready(cx)) {
                        return this.fail(Error::Io(e));
                    }
                }
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder == Decoder::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn parse(head: &str, method: Method) -> Result<Parsed, Error> {
        parse_head(&mut BytesMut::from(head), &method, false)
    }

    fn framing(head: &str) -> Result<(Decoder, bool), Error> {
        match parse(head, Method::GET)? {
            Parsed::Final(_, f) => Ok((f.decoder, f.reusable)),
            other => panic!("{other:?}"),
        }
    }

    fn malformed(head: &str) -> &'static str {
        match framing(head) {
            Err(Error::Malformed(why)) => why,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap(),
            (Decoder::Length(5), true)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n").unwrap().0, Decoder::Length(5));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap(),
            (Decoder::Chunked(Chunk::Size), true)
        );
        // A coding other than chunked last: the body runs to the close, no reuse.
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap(),
            (Decoder::Eof, false)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n").unwrap(), (Decoder::Eof, false));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n").unwrap(), (Decoder::Length(0), true));
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").unwrap().0,
            Decoder::Length(0)
        );
        let Parsed::Final(_, f) =
            parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD).unwrap()
        else {
            panic!()
        };
        assert_eq!(f.decoder, Decoder::Length(0));
        // No reuse after Connection: close or an HTTP/1.0 answer.
        assert!(!framing("HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 1\r\n\r\n").unwrap().1);
        assert!(!framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap().1);
    }

    #[test]
    fn hop_by_hop_fields_are_dropped_with_those_connection_names() {
        let head = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
                    X-Secret: 1\r\nTransfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n";
        let Parsed::Final(resp, f) = parse(head, Method::GET).unwrap() else { panic!() };
        assert_eq!(resp.headers().keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);
        assert_eq!(f, Framing { decoder: Decoder::Chunked(Chunk::Size), reusable: true });
    }

    #[test]
    fn smuggling_shapes_and_oversize_heads_are_refused() {
        assert_eq!(
            malformed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "both Transfer-Encoding and Content-Length"
        );
        assert_eq!(
            malformed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            "differing Content-Lengths"
        );
        assert_eq!(malformed("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"), "differing Content-Lengths");
        assert_eq!(malformed("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"), "invalid Content-Length");
        assert_eq!(
            malformed("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            "invalid Content-Length"
        );
        assert_eq!(malformed("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), "invalid head");
        assert_eq!(malformed("HTTP/1.1 101 Switching Protocols\r\n\r\n"), "unrequested protocol switch");
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(malformed(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), "over 100 header fields");
    }

    #[test]
    fn interim_answers_are_skipped_and_values_share_the_head() {
        let mut buf =
            BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: b\r\n\r\nrest");
        assert!(matches!(parse_head(&mut buf, &Method::GET, false).unwrap(), Parsed::Interim));
        let Parsed::Final(resp, ..) = parse_head(&mut buf, &Method::GET, false).unwrap() else { panic!() };
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["x-a"], "b");
        assert_eq!(&buf[..], b"rest");
        assert!(matches!(parse("HTTP/1.1 200 OK\r\nX-A: b\r\n", Method::GET).unwrap(), Parsed::Partial));
    }

    /// Feeds `wire` to a decoder in pieces of `step` bytes; returns the data and what is left.
    fn decode(mut d: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                d.skip_framing(&mut buf)?;
                match d.take_data(&mut buf) {
                    Some(data) => out.extend_from_slice(&data),
                    None => break,
                }
            }
        }
        assert_eq!(d, Decoder::Done, "{:?}", String::from_utf8_lossy(wire));
        Ok((out, buf.to_vec()))
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: dropped\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, left) = decode(Decoder::Chunked(Chunk::Size), wire, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(left, b"NEXT");
        }
        let (data, left) = decode(Decoder::Length(3), b"abcdef", 2).unwrap();
        assert_eq!((&data[..], &left[..]), (&b"abc"[..], &b"def"[..]));
    }

    #[test]
    fn broken_chunked_framing_is_refused() {
        let chunked = Decoder::Chunked(Chunk::Size);
        for (wire, why) in [
            (&b"5\r\nhelloX\r\n0\r\n\r\n"[..], "chunk data not followed by CRLF"),
            (b"5\nhello\r\n0\r\n\r\n", "bare LF in chunked framing"),
            (b"zz\r\n", "invalid chunk size"),
            (b"5x\r\nhello\r\n", "invalid chunk size"),
            (b"11111111111111111\r\n", "invalid chunk size"),
        ] {
            match decode(chunked, wire, wire.len()) {
                Err(Error::Malformed(w)) => assert_eq!(w, why, "{:?}", String::from_utf8_lossy(wire)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(wire)),
            }
        }
        let long = format!("5;{}\r\n", "e".repeat(MAX_LINE));
        assert!(matches!(decode(chunked, long.as_bytes(), 64), Err(Error::Malformed("chunk line too long"))));
        let trailers = format!("0\r\n{}\r\n", "x-t: 1\r\n".repeat(MAX_HEAD / 8 + 1));
        assert!(matches!(
            decode(chunked, trailers.as_bytes(), 4096),
            Err(Error::Malformed("trailers over 64 KiB"))
        ));
    }

    /// An upstream on a real socket that answers each request with the next of `answers`.
    async fn upstream(answers: Vec<&'static [u8]>) -> (Conn, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut heads = Vec::new();
            for answer in answers {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap() == 0 {
                        return heads;
                    }
                    head.push(b[0]);
                }
                heads.push(String::from_utf8(head).unwrap());
                s.write_all(answer).await.unwrap();
            }
            heads
        });
        let io = TcpStream::connect(addr).await.unwrap();
        (Conn::new(io, OpenGuard::new(Arc::new(AtomicUsize::new(1)))), server)
    }

    async fn fetch(mut conn: Conn, req: request::Parts) -> Result<Response<Body>, Error> {
        let head = conn.exchange(&req).await?;
        Ok(head.map(|framing| Body::new(conn, framing, None)))
    }

    fn get(path: &str) -> request::Parts {
        let (mut parts, ()) = http::Request::get(path).body(()).unwrap().into_parts();
        parts.headers.insert(header::HOST, HeaderValue::from_static("app"));
        parts
    }

    #[tokio::test]
    async fn an_exchange_writes_origin_form_and_streams_the_body() {
        let (conn, server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"])
                .await;
        let resp = fetch(conn, get("/a?b=1")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"abc");
        assert_eq!(server.await.unwrap(), ["GET /a?b=1 HTTP/1.1\r\nhost: app\r\n\r\n"]);
    }

    #[tokio::test]
    async fn a_close_delimited_body_ends_at_the_close_and_a_cut_one_fails() {
        let (conn, _server) = upstream(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"]).await;
        let resp = fetch(conn, get("/")).await.unwrap();
        assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"all of it");

        let (conn, _server) = upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
        let resp = fetch(conn, get("/")).await.unwrap();
        assert!(matches!(resp.into_body().collect().await, Err(Error::Truncated)));

        // Closed before any answer: stale, which a reused connection may retry.
        let (conn, _server) = upstream(vec![]).await;
        assert!(matches!(fetch(conn, get("/")).await, Err(Error::Stale(_))));
    }
}
