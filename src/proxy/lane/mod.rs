//! The express lane: plain HTTP/1.1 proxied requests (`/proxy/<port>/`, `/absproxy/<port>/`,
//! proxy-domain hosts), relayed without hyper.
//!
//! hyper's server and client are most of what a small proxied request costs (a relay that only
//! copies bytes costs far less; `cargo bench --bench proxy` measures both, and README's "Port
//! proxy" has the figures). So a connection starts here: each
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

// Harnesses for `fuzz/`, public only through `crate::fuzzing` (which says why they are here).
pub(crate) mod fuzzing;
mod head;
mod relay;

use std::time::Duration;

use axum::response::IntoResponse;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ProxyState;
use super::admission::{self, Admitted, Head};
use super::{idempotent, invalid_response, pool};
use crate::error::AppError;
use crate::headers::HeaderSource;
use head::{Framing, HeadError, Hop, MAX_REQUEST_HEAD, Parsed, Request, consume, parse_request, read_response_head};
use head::{write_request_head, write_response_head};
use relay::{Relayed, relay_body};

/// A request head must be complete within this of the connection being ready for it, on a new
/// connection as after a response (as on hyper's side, see `server`): a connection that sends
/// nothing is closed, not kept forever.
const HEAD_TIMEOUT: Duration = crate::server::HEADER_READ_TIMEOUT;
/// Body reads start this big and double while they come back full, up to [`MAX_RELAY_CHUNK`]:
/// a short answer costs little memory, a large download few system calls.
pub(super) const RELAY_CHUNK: usize = 16 * 1024;
pub(super) const MAX_RELAY_CHUNK: usize = 512 * 1024;

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
        let mut conn =
            Conn { buf: Vec::with_capacity(4096), out: Vec::with_capacity(4096), id, started: Instant::now() };
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
        conn.started = Instant::now();
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
        crate::metrics::proxied_bytes(req.content_length, 0);

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
        answered(head.status, conn.started);
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
        answered(e.status.as_u16(), conn.started);
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
pub(super) struct Conn {
    /// Bytes read from the client and not yet used.
    pub(super) buf: Vec<u8>,
    /// The head being written (to the upstream, then to the client).
    pub(super) out: Vec<u8>,
    /// The connection's number.
    pub(super) id: u64,
    /// When the request being served was read (for the latency metric).
    pub(super) started: Instant,
}

enum Next {
    Continue,
    Close,
    Handover,
    /// The pooled connection was stale: try a fresh one.
    Retry,
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

/// A request the lane answered, counted in the metrics (once: a retry or a handover to hyper
/// counts nothing here).
fn answered(status: u16, started: Instant) {
    crate::metrics::proxied(crate::metrics::ProxyPath::Lane);
    crate::metrics::request(crate::metrics::Route::Proxy, status, started.elapsed());
}

async fn connect(port: u16, timeout: Duration) -> Option<TcpStream> {
    tokio::time::timeout(timeout, pool::connect(port)).await.ok()?.ok()
}
