//! The express lane: plain HTTP/1.1 proxied requests (`/proxy/<port>/`, `/absproxy/<port>/`,
//! proxy-domain hosts), relayed without hyper.
//!
//! Measured with the proxy benchmark, hyper's server and pooled client together cost about
//! 39,000 instructions for a small proxied request (a relay that only copies bytes costs a
//! tenth of that), and a reverse proxy like nginx passes about 1.5 times as many small
//! requests as a hyper-based one on the same two cores. So a connection starts here: each
//! request head is parsed in place with `httparse`, checked, rewritten into the upstream's
//! buffer as it goes, and sent over a pooled connection; the response head is rewritten the
//! same way and its body relayed as it arrives (a chunked body byte for byte, see
//! [`super::chunked`]).
//!
//! Only requests whose handling is plain take this lane: HTTP/1.1, a proxy path with a valid
//! port or a proxy-domain host naming one (read from `Forwarded`, `X-Forwarded-Host` or `Host`
//! as on hyper's path), a live session (or `--auth none`, or a waived preflight), a body framed
//! by at most one `Content-Length`, and no `Transfer-Encoding`, `Expect`, `Upgrade` or
//! `Connection` option beyond `keep-alive` and `close`. At the first request that is anything
//! else (a WebSocket, a page of ours, an unauthenticated request, a chunked upload, a closed
//! port) the connection is handed to hyper with the bytes read so far, and the application
//! serves it from that request on, exactly as if the lane did not exist.
//!
//! What the upstream sees is what the hyper path sends: the same method, target, headers (in
//! the order and case the client wrote them) and body, less the hop-by-hop headers and our
//! session cookie. The client gets the upstream's status, headers and body, less hop-by-hop
//! headers, with `Location` rewritten under `/proxy`.

use std::io::Write as _;
use std::ops::Range;
use std::time::Duration;

use axum::response::IntoResponse;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ProxyState;
use super::admission::{self, Admitted, Head};
use super::{chunked, idempotent, invalid_response, pool};
use crate::error::AppError;
use crate::headers::{Cookies, HeaderSource, cookies_without};

/// Request heads longer than this go to hyper (which has its own limit).
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Upstream response heads longer than this are a 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// More headers than this and the request goes to hyper.
const MAX_HEADERS: usize = 64;
/// A request head must be complete within this of the connection being ready for it, on a new
/// connection as after a response (as on hyper's side, see `server`): a connection that sends
/// nothing is closed, not kept forever.
const HEAD_TIMEOUT: Duration = crate::server::HEADER_READ_TIMEOUT;
/// Body reads start this big and double while they come back full, up to [`MAX_RELAY_CHUNK`]:
/// a short answer costs little memory, a large download few system calls.
const RELAY_CHUNK: usize = 16 * 1024;
const MAX_RELAY_CHUNK: usize = 512 * 1024;

/// Serves a connection's proxied requests; see the module docs.
#[derive(Clone)]
pub struct Lane {
    state: ProxyState,
}

/// A connection the lane hands on: the stream and the bytes already read from it, starting
/// with the request the lane did not take.
pub type Handover<S> = (S, Vec<u8>);

impl Lane {
    pub fn new(state: ProxyState) -> Lane {
        Lane { state }
    }

    /// Serves requests on `client` until one does not qualify (handed back, with what was read)
    /// or the connection ends (`None`). Between requests, `draining` ends the connection.
    /// `local`: our port the connection came in on (a proxy-domain host naming it is ours);
    /// `id`: the connection's number (see [`crate::server::ConnInfo::id`]).
    pub async fn serve_connection<S>(
        &self,
        mut client: S,
        local: Option<u16>,
        id: u64,
        draining: &CancellationToken,
    ) -> Option<Handover<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = Conn { buf: Vec::with_capacity(4096), out: Vec::with_capacity(4096), id };
        loop {
            match self.next(&mut client, &mut conn, local, draining).await {
                // (`next` retries itself.)
                Next::Continue | Next::Retry => {}
                Next::Close => {
                    let _ = client.shutdown().await;
                    return None;
                }
                Next::Handover => return Some((client, conn.buf)),
            }
        }
    }

    /// Reads and serves one request.
    async fn next<S>(&self, client: &mut S, conn: &mut Conn, local: Option<u16>, draining: &CancellationToken) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let req = match read_request(client, &mut conn.buf, draining).await {
            Read::Request(req) => req,
            Read::Handover => return Next::Handover,
            Read::Closed => return Next::Close,
        };
        let Some(plan) = self.admit(&conn.buf, &req, local, conn.id).await else {
            return Next::Handover;
        };
        self.state.activity.heart.record_activity();
        let proxy = &self.state.proxy;
        let Some(mut upstream) = proxy.pool.take(plan.port, plan.owner) else {
            return match connect(plan.port, proxy.timeout).await {
                Some(s) => self.exchange(client, conn, &req, &plan, s, false).await,
                // Nothing sent, nothing consumed: hyper tries again and says what went wrong.
                None => Next::Handover,
            };
        };
        let mut reused = true;
        loop {
            match self.exchange(client, conn, &req, &plan, upstream, reused).await {
                Next::Retry => {}
                next => return next,
            }
            match connect(plan.port, proxy.timeout).await {
                Some(s) => (upstream, reused) = (s, false),
                // A retry holds the whole request still: hyper can take it from here.
                None => return Next::Handover,
            }
        }
    }

    /// Whether `req` takes the lane, and where it goes: what [`admission`] admits, if nothing
    /// about the request needs hyper.
    async fn admit(&self, buf: &[u8], req: &Request, local: Option<u16>, conn: u64) -> Option<Admitted> {
        if !req.plain {
            return None;
        }
        let head = Raw { buf, req };
        let route = admission::route(&self.state, &head, local)?;
        admission::admit(&self.state, &head, route, conn).await.ok()
    }

    /// Sends the request on `upstream` and relays the response. `reused`: the connection came
    /// from the pool, so a failure before any answer may just be the upstream having closed it.
    async fn exchange<S>(
        &self,
        client: &mut S,
        conn: &mut Conn,
        req: &Request,
        plan: &Admitted,
        mut upstream: TcpStream,
        reused: bool,
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let cookie_name = &self.state.auth.cookie_name;
        conn.out.clear();
        write_request_head(&mut conn.out, &conn.buf, req, plan, cookie_name);
        let in_buf = (conn.buf.len() - req.head_len).min(usize::try_from(req.content_length).unwrap_or(usize::MAX));
        conn.out.extend_from_slice(&conn.buf[req.head_len..req.head_len + in_buf]);
        let whole_body_buffered = in_buf as u64 == req.content_length;
        // A stale pooled connection fails here or with an empty answer; trying again on a fresh
        // one is safe when nothing of the body has been consumed beyond what we hold.
        let retry = reused && whole_body_buffered;
        if upstream.write_all(&conn.out).await.is_err() {
            return if retry { Next::Retry } else { self.fail(client, conn, req, invalid_response(plan.port)).await };
        }
        // The rest of the body, as the client sends it. An upstream that answers before it has
        // all of it may read the rest as another request: its connection is not reused.
        let mut remaining = req.content_length - in_buf as u64;
        let mut answered_early = false;
        let mut relay = Vec::new();
        let mut chunk = RELAY_CHUNK;
        while remaining > 0 {
            answered_early = answered_early || pool::readable(&upstream);
            relay.clear();
            let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(chunk);
            relay.reserve(want);
            match (&mut *client).take(want as u64).read_buf(&mut relay).await {
                Ok(0) | Err(_) => return Next::Close,
                Ok(n) => {
                    remaining -= n as u64;
                    if n == chunk {
                        chunk = (chunk * 2).min(MAX_RELAY_CHUNK);
                    }
                }
            }
            if upstream.write_all(&relay).await.is_err() {
                return self.fail(client, conn, req, invalid_response(plan.port)).await;
            }
        }

        // The response head, skipping interim (1xx) responses.
        let deadline = Instant::now() + self.state.proxy.timeout;
        let mut ubuf = relay;
        ubuf.clear();
        ubuf.reserve(8192);
        let head = loop {
            match read_response_head(&mut upstream, &mut ubuf, deadline).await {
                // Interim answers are the upstream's business; a 101 nobody asked for (the lane
                // takes no upgrades) is not an answer.
                Ok(head) if (100..200).contains(&head.status) && head.status != 101 => consume(&mut ubuf, head.len),
                Ok(head) if head.status == 101 => {
                    return self.fail(client, conn, req, invalid_response(plan.port)).await;
                }
                Ok(head) => break head,
                // The upstream may have acted on it before closing: only an idempotent request
                // is sent again (as browsers and nginx do).
                Err(HeadError::Closed) if retry && ubuf.is_empty() && idempotent(req.method(&conn.buf)) => {
                    return Next::Retry;
                }
                Err(HeadError::TimedOut) => {
                    let e = self.state.proxy.timed_out(plan.port);
                    return self.fail(client, conn, req, e).await;
                }
                Err(e) => {
                    tracing::debug!("port {}: {e:?}", plan.port);
                    return self.fail(client, conn, req, invalid_response(plan.port)).await;
                }
            }
        };
        let Some(framing) = head.framing(req.method(&conn.buf) == "HEAD") else {
            return self.fail(client, conn, req, invalid_response(plan.port)).await;
        };
        // The request is through: what follows in the buffer is the client's next one.
        consume(&mut conn.buf, req.head_len + in_buf);
        let close_client = req.close || framing == Framing::UntilClose;
        conn.out.clear();
        write_response_head(&mut conn.out, &ubuf, &head, plan, framing, close_client);
        let body_start = head.len;
        let reusable = relay_body(client, &mut upstream, conn, ubuf, body_start, framing).await;
        match reusable {
            Relayed::Done { upstream_clean } => {
                if upstream_clean && !head.close && !answered_early {
                    self.state.proxy.pool.put(plan.port, plan.owner, upstream);
                }
                if close_client { Next::Close } else { Next::Continue }
            }
            Relayed::Broken => Next::Close,
        }
    }

    /// Answers with `e` (as JSON, or our HTML error page for browsers, as on hyper's path) and
    /// closes the connection.
    async fn fail<S>(&self, client: &mut S, conn: &mut Conn, req: &Request, e: AppError) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let buf = &conn.buf;
        let html =
            req.headers.iter().any(|h| h.hop == Hop::Accept && h.value(buf).windows(9).any(|w| w == b"text/html"));
        let target = req.target(buf);
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        let to = crate::relative::Query::parse(query).get("to").map(str::to_string);
        let mut res = e.into_response();
        if html {
            res = crate::pages::as_page(&self.state.pages, res, path, to.as_deref());
        }
        let (parts, body) = res.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let mut out = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
        for (name, value) in parts.headers.iter().filter(|(n, _)| *n != axum::http::header::CONTENT_LENGTH) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
        if req.method(buf) != "HEAD" {
            out.extend_from_slice(&body);
        }
        let _ = client.write_all(&out).await;
        let _ = client.flush().await;
        Next::Close
    }
}

impl crate::server::Lane for Lane {
    fn serve<S>(
        &self,
        stream: S,
        local: Option<u16>,
        id: u64,
        draining: &CancellationToken,
    ) -> impl std::future::Future<Output = Option<(S, Vec<u8>)>> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.serve_connection(stream, local, id, draining)
    }
}

/// A connection's buffers, kept across its requests.
struct Conn {
    /// Bytes read from the client and not yet used.
    buf: Vec<u8>,
    /// The head being written (to the upstream, then to the client).
    out: Vec<u8>,
    /// The connection's number.
    id: u64,
}

enum Next {
    Continue,
    Close,
    Handover,
    /// The pooled connection was stale: try a fresh one.
    Retry,
}

/// What a header is to the lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// Forwarded as it is.
    Keep,
    /// Connection-specific: not forwarded.
    Drop,
    Connection,
    Te,
    Cookie,
    Accept,
    ContentLength,
    TransferEncoding,
    Location,
    /// `Host`, `Forwarded`, `X-Forwarded-Host`: read for proxy domains, forwarded as they are.
    Host,
    /// `Upgrade`, `Expect`: the request goes to hyper.
    Special,
}

fn classify(name: &[u8]) -> Hop {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 if is("te") => Hop::Te,
        6 if is("cookie") => Hop::Cookie,
        6 if is("accept") => Hop::Accept,
        6 if is("expect") => Hop::Special,
        7 if is("upgrade") => Hop::Special,
        4 if is("host") => Hop::Host,
        9 if is("forwarded") => Hop::Host,
        16 if is("x-forwarded-host") => Hop::Host,
        8 if is("location") => Hop::Location,
        10 if is("connection") => Hop::Connection,
        10 if is("keep-alive") => Hop::Drop,
        14 if is("content-length") => Hop::ContentLength,
        16 if is("proxy-connection") => Hop::Drop,
        17 if is("transfer-encoding") => Hop::TransferEncoding,
        18 if is("proxy-authenticate") => Hop::Drop,
        19 if is("proxy-authorization") => Hop::Drop,
        _ => Hop::Keep,
    }
}

/// A header of a parsed head, as offsets into the buffer it was read into.
#[derive(Debug, Clone)]
struct Header {
    name: Range<usize>,
    value: Range<usize>,
    hop: Hop,
}

impl Header {
    fn value<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.value.clone()]
    }
}

/// A request head as [`admission`] reads it, straight from the buffer.
struct Raw<'a> {
    buf: &'a [u8],
    req: &'a Request,
}

impl HeaderSource for Raw<'_> {
    fn header_values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        // The headers admission reads are told apart once, when the head is parsed.
        let hop = match name {
            "cookie" => Some(Hop::Cookie),
            "accept" => Some(Hop::Accept),
            _ => None,
        };
        self.req
            .headers
            .iter()
            .filter(move |h| match hop {
                Some(hop) => h.hop == hop,
                None => self.buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()),
            })
            .map(|h| h.value(self.buf))
    }
}

impl Head for Raw<'_> {
    fn method(&self) -> &str {
        self.req.method(self.buf)
    }
    fn target(&self) -> &str {
        self.req.target(self.buf)
    }
    fn authority(&self) -> Option<&str> {
        None
    }
}

/// A request head parsed in place.
struct Request {
    head_len: usize,
    method: Range<usize>,
    target: Range<usize>,
    headers: Vec<Header>,
    content_length: u64,
    /// The client asked to close after this exchange.
    close: bool,
    /// `TE: trailers`: passed on, as hyper's path does.
    trailers: bool,
    /// Nothing about the request needs hyper (see the module docs).
    plain: bool,
}

impl Request {
    fn method<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[self.method.clone()]).unwrap_or_default()
    }
    fn target<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[self.target.clone()]).unwrap_or_default()
    }
}

enum Read {
    Request(Request),
    Handover,
    Closed,
}

/// Reads until `buf` holds a whole request head, for at most [`HEAD_TIMEOUT`]; the server
/// draining ends the wait for a request that has not started.
async fn read_request<S: AsyncRead + Unpin>(client: &mut S, buf: &mut Vec<u8>, draining: &CancellationToken) -> Read {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        if !buf.is_empty() {
            match parse_request(buf) {
                Parsed::Complete(req) => return Read::Request(req),
                Parsed::Other => return Read::Handover,
                Parsed::Partial if buf.len() >= MAX_REQUEST_HEAD => return Read::Handover,
                Parsed::Partial => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let read = if buf.is_empty() {
            tokio::select! {
                biased;
                _ = draining.cancelled() => return Read::Closed,
                _ = tokio::time::sleep_until(deadline) => return Read::Closed,
                r = client.read_buf(buf) => r,
            }
        } else {
            match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => return Read::Closed,
            }
        };
        match read {
            Ok(0) | Err(_) => return Read::Closed,
            Ok(_) => {}
        }
    }
}

enum Parsed {
    Complete(Request),
    Partial,
    /// Not something the lane parses (HTTP/1.0, a malformed head, too many headers): hyper
    /// answers it.
    Other,
}

fn parse_request(buf: &[u8]) -> Parsed {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut raw);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::Other;
    };
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let mut req = Request {
        head_len,
        method: at(method.as_bytes()),
        target: at(target.as_bytes()),
        headers: Vec::with_capacity(parsed.headers.len()),
        content_length: 0,
        close: false,
        trailers: false,
        plain: method != "CONNECT" && target.starts_with('/'),
    };
    let mut length: Option<u64> = None;
    for h in parsed.headers.iter() {
        let hop = classify(h.name.as_bytes());
        match hop {
            Hop::Special | Hop::TransferEncoding => req.plain = false,
            Hop::ContentLength => {
                let value =
                    std::str::from_utf8(h.value).ok().map(str::trim).filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
                match value.and_then(|v| v.parse::<u64>().ok()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => req.plain = false,
                }
            }
            Hop::Connection => {
                for token in options(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        req.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // Names another header hop-by-hop; hyper's path handles that.
                        req.plain = false;
                    }
                }
            }
            Hop::Te => {
                req.trailers |= options(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            }
            _ => {}
        }
        req.headers.push(Header { name: at(h.name.as_bytes()), value: at(h.value), hop });
    }
    req.content_length = length.unwrap_or(0);
    Parsed::Complete(req)
}

/// The request as the upstream gets it (see the module docs).
fn write_request_head(out: &mut Vec<u8>, buf: &[u8], req: &Request, plan: &Admitted, cookie_name: &str) {
    out.extend_from_slice(&buf[req.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(plan.target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut cookies_done = false;
    for h in &req.headers {
        match h.hop {
            Hop::Keep | Hop::Accept | Hop::ContentLength | Hop::Location | Hop::Host => put_header(out, buf, h),
            Hop::Cookie if !cookies_done => {
                cookies_done = true;
                let values = || req.headers.iter().filter(|h| h.hop == Hop::Cookie).map(|h| h.value(buf));
                let mark = out.len();
                out.extend_from_slice(b"cookie: ");
                match cookies_without(values, cookie_name, out) {
                    Cookies::Unchanged => {
                        out.truncate(mark);
                        put_header(out, buf, h);
                    }
                    Cookies::Kept => out.extend_from_slice(b"\r\n"),
                    Cookies::None => out.truncate(mark),
                }
            }
            _ => {}
        }
    }
    if req.trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, buf: &[u8], h: &Header) {
    out.extend_from_slice(&buf[h.name.clone()]);
    out.extend_from_slice(b": ");
    out.extend_from_slice(&buf[h.value.clone()]);
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the client's connection closes after it too.
    UntilClose,
}

/// A response head parsed in place.
struct Response {
    len: usize,
    status: u16,
    reason: Range<usize>,
    headers: Vec<Header>,
    /// The upstream connection is not to be reused.
    close: bool,
    /// `Transfer-Encoding` present, and whether it ends in `chunked`.
    encoded: Option<bool>,
    /// Every `Content-Length` agreed (`Err` if not).
    length: Result<Option<u64>, ()>,
}

impl Response {
    fn framing(&self, head_request: bool) -> Option<Framing> {
        if head_request || self.status == 204 || self.status == 304 {
            return Some(Framing::None);
        }
        match (self.encoded, self.length) {
            (Some(true), _) => Some(Framing::Chunked),
            (Some(false), _) => Some(Framing::UntilClose),
            (None, Ok(Some(n))) => Some(Framing::Length(n)),
            (None, Ok(None)) => Some(Framing::UntilClose),
            (None, Err(())) => None,
        }
    }
}

#[derive(Debug)]
enum HeadError {
    Closed,
    TimedOut,
    Invalid,
    TooLong,
}

async fn read_response_head(
    upstream: &mut TcpStream,
    ubuf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Response, HeadError> {
    loop {
        if !ubuf.is_empty() {
            match parse_response(ubuf)? {
                Some(head) => return Ok(head),
                None if ubuf.len() >= MAX_RESPONSE_HEAD => return Err(HeadError::TooLong),
                None => {}
            }
        }
        if ubuf.capacity() - ubuf.len() < 1024 {
            ubuf.reserve(8192);
        }
        match tokio::time::timeout_at(deadline, upstream.read_buf(ubuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Closed),
            Ok(Ok(_)) => {}
            Err(_) => return Err(HeadError::TimedOut),
        }
    }
}

fn parse_response(ubuf: &[u8]) -> Result<Option<Response>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut raw);
    let len = match parsed.parse(ubuf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Invalid),
    };
    let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
        return Err(HeadError::Invalid);
    };
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - ubuf.as_ptr() as usize;
        start..start + s.len()
    };
    let reason = parsed.reason.map_or(0..0, |r| at(r.as_bytes()));
    let mut head = Response {
        len,
        status,
        reason,
        headers: Vec::with_capacity(parsed.headers.len()),
        close: version == 0,
        encoded: None,
        length: Ok(None),
    };
    for h in parsed.headers.iter() {
        let hop = classify(h.name.as_bytes());
        match hop {
            Hop::Connection => {
                head.close |= options(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
            }
            Hop::TransferEncoding => {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
                head.encoded = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            Hop::ContentLength => {
                let n = std::str::from_utf8(h.value).ok().map(str::trim).and_then(|v| v.parse::<u64>().ok());
                head.length = match (head.length, n) {
                    (Ok(None), Some(n)) => Ok(Some(n)),
                    (Ok(Some(l)), Some(n)) if l == n => Ok(Some(n)),
                    _ => Err(()),
                };
            }
            _ => {}
        }
        head.headers.push(Header { name: at(h.name.as_bytes()), value: at(h.value), hop });
    }
    Ok(Some(head))
}

/// The response as the client gets it (see the module docs).
fn write_response_head(
    out: &mut Vec<u8>,
    ubuf: &[u8],
    head: &Response,
    plan: &Admitted,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    // Into the buffer, not through a String: this runs for every response.
    let _ = write!(out, "{}", head.status);
    out.push(b' ');
    out.extend_from_slice(&ubuf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    // Further headers the upstream's `Connection` names are its own business too.
    let named: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| h.hop == Hop::Connection)
        .flat_map(|h| options(h.value(ubuf)))
        .filter(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive") && !t.is_empty())
        .collect();
    for h in &head.headers {
        let name = &ubuf[h.name.clone()];
        if named.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        match h.hop {
            Hop::Location if plan.rewrite_location && h.value(ubuf).starts_with(b"/") => {
                out.extend_from_slice(name);
                out.extend_from_slice(b": /proxy/");
                let _ = write!(out, "{}", plan.port);
                out.extend_from_slice(h.value(ubuf));
                out.extend_from_slice(b"\r\n");
            }
            Hop::ContentLength if framing == Framing::Chunked || framing == Framing::UntilClose => {}
            Hop::Keep | Hop::Accept | Hop::Cookie | Hop::ContentLength | Hop::Location | Hop::Host => {
                put_header(out, ubuf, h)
            }
            _ => {}
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

enum Relayed {
    /// The whole body went through; `upstream_clean`: nothing else came with it.
    Done { upstream_clean: bool },
    /// Either side failed mid-body: both connections are dropped.
    Broken,
}

/// Sends the head in `conn.out` and the body (starting at `ubuf[start..]`, then read from the
/// upstream) to the client.
async fn relay_body<S>(
    client: &mut S,
    upstream: &mut TcpStream,
    conn: &mut Conn,
    mut ubuf: Vec<u8>,
    start: usize,
    framing: Framing,
) -> Relayed
where
    S: AsyncWrite + Unpin,
{
    let mut scanner = chunked::Scanner::default();
    // How many of the bytes after the head belong to the body, and whether it is complete.
    let take = |bytes: &[u8], remaining: &mut u64, scanner: &mut chunked::Scanner| -> Result<(usize, bool), ()> {
        match framing {
            Framing::None => Ok((0, true)),
            Framing::Length(_) => {
                let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(bytes.len());
                *remaining -= n as u64;
                Ok((n, *remaining == 0))
            }
            Framing::Chunked => {
                let n = scanner.scan(bytes).map_err(|_| ())?;
                Ok((n, scanner.done()))
            }
            Framing::UntilClose => Ok((bytes.len(), false)),
        }
    };
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let Ok((n, mut complete)) = take(&ubuf[start..], &mut remaining, &mut scanner) else {
        return Relayed::Broken;
    };
    let mut clean = start + n == ubuf.len();
    conn.out.extend_from_slice(&ubuf[start..start + n]);
    if client.write_all(&conn.out).await.is_err() || client.flush().await.is_err() {
        return Relayed::Broken;
    }
    let mut chunk = RELAY_CHUNK;
    while !complete {
        ubuf.clear();
        let want = match framing {
            Framing::Length(_) => usize::try_from(remaining).unwrap_or(usize::MAX).min(chunk),
            _ => chunk,
        };
        ubuf.reserve(want);
        match (&mut *upstream).take(want as u64).read_buf(&mut ubuf).await {
            Ok(0) if framing == Framing::UntilClose => return Relayed::Done { upstream_clean: false },
            Ok(0) | Err(_) => return Relayed::Broken,
            Ok(n) if n == chunk => chunk = (chunk * 2).min(MAX_RELAY_CHUNK),
            Ok(_) => {}
        }
        let Ok((n, done)) = take(&ubuf, &mut remaining, &mut scanner) else {
            return Relayed::Broken;
        };
        complete = done;
        clean = n == ubuf.len();
        if client.write_all(&ubuf[..n]).await.is_err() || client.flush().await.is_err() {
            return Relayed::Broken;
        }
    }
    Relayed::Done { upstream_clean: clean }
}

/// The comma-separated options of a header value (`Connection`, `TE`), trimmed.
fn options(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|t| t.trim_ascii())
}

/// Drops the first `n` bytes of `buf`.
fn consume(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.drain(..n);
    }
}

async fn connect(port: u16, timeout: Duration) -> Option<TcpStream> {
    tokio::time::timeout(timeout, pool::connect(port)).await.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(port: u16, target: &str) -> Admitted {
        let owner = pool::Owner::Connection(1);
        Admitted { port, target: target.parse().unwrap(), rewrite_location: true, owner }
    }

    fn parsed(head: &str) -> Request {
        match parse_request(head.as_bytes()) {
            Parsed::Complete(r) => r,
            _ => panic!("not a complete request: {head:?}"),
        }
    }

    #[test]
    fn only_plain_requests_qualify() {
        assert!(parsed("GET /proxy/1/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").plain);
        assert!(parsed("POST /proxy/1/ HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc").plain);
        for other in [
            "GET /proxy/1/ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "POST /proxy/1/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /proxy/1/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST /proxy/1/ HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST /proxy/1/ HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET /proxy/1/ HTTP/1.1\r\nConnection: x-private\r\n\r\n",
            "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n",
            "GET http://x/proxy/1/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(!parsed(other).plain, "{other:?}");
        }
        assert!(matches!(parse_request(b"GET /proxy/1/ HTTP/1.0\r\n\r\n"), Parsed::Other));
        assert!(matches!(parse_request(b"GET /proxy/1/ HTTP/1.1\r\nHost"), Parsed::Partial));
    }

    #[test]
    fn request_heads_lose_hop_by_hop_headers_and_our_cookie_only() {
        let head = "PATCH /proxy/9/a%2F/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Mixed-Case: A b\r\n\
                    Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: x\r\n\
                    Cookie: a=1; code-server-session=tok; b=2\r\nContent-Length: 2\r\n\r\nhi";
        let req = parsed(head);
        let plan = plan(9, "/a%2F/b?x=1");
        let mut out = Vec::new();
        write_request_head(&mut out, head.as_bytes(), &req, &plan, "code-server-session");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PATCH /a%2F/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Mixed-Case: A b\r\n\
             cookie: a=1; b=2\r\nContent-Length: 2\r\nte: trailers\r\n\r\n"
        );
        let head = "GET /proxy/9/ HTTP/1.1\r\nCookie: code-server-session=tok\r\n\r\n";
        let mut out = Vec::new();
        write_request_head(&mut out, head.as_bytes(), &parsed(head), &plan, "code-server-session");
        assert_eq!(String::from_utf8(out).unwrap(), "GET /a%2F/b?x=1 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn response_heads_and_framing() {
        let raw = "HTTP/1.1 302 Found\r\nLocation: /login\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
                   Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\n\r\n";
        let head = parse_response(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(head.framing(false), Some(Framing::Chunked));
        assert_eq!(head.framing(true), Some(Framing::None));
        let plan = plan(3000, "/");
        let mut out = Vec::new();
        write_response_head(&mut out, raw.as_bytes(), &head, &plan, Framing::Chunked, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 302 Found\r\nLocation: /proxy/3000/login\r\nSet-Cookie: a=1\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let framing = |raw: &str| parse_response(raw.as_bytes()).unwrap().unwrap().framing(false);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n"),
            Some(Framing::Length(7))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"), None);
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Some(Framing::UntilClose));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n"), Some(Framing::None));
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"), Some(Framing::None));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap().close);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").unwrap().unwrap().close);
    }
}
