//! The port proxy (spec §3.7, §3.8): `/proxy/<port>/…`, `/absproxy/<port>/…` and
//! `{{port}}.<proxy-domain>` hosts, forwarded to `127.0.0.1:<port>` (never anywhere else) over one
//! pool of HTTP/1.1 connections ([`pool`]).
//!
//! [`Front`] recognises proxied requests ahead of the router. Every route then takes the same two
//! steps: [`admission::admit`] (the proxy switch, the WebSocket Origin check, the session, the
//! port and target), shared with the express lane, and [`forward`], which rewrites only what a
//! gateway must (the target URI, hop-by-hop headers, our session cookie, `Location` for
//! `/proxy`) and streams bodies both ways without buffering. A WebSocket is forwarded as an
//! upgrade and, once the upstream has answered 101, its bytes are spliced both ways without
//! re-framing.

pub mod admission;
mod chunked;
mod domain;
mod front;
pub mod lane;
mod path;
mod pool;
pub mod ports;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::uri::Uri;
use axum::http::{StatusCode, Version};
use axum::response::Response;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::auth::Auth;
use crate::error::AppError;
use crate::heart::routes::HeartState;
use crate::pages::Pages;
use admission::Admitted;
use pool::Owner;

pub use front::Front;

/// What the proxy is configured with.
#[derive(Clone, Default)]
pub struct ProxyOptions {
    /// `--proxy-domain`s, normalised (each with `{{port}}`).
    pub domains: Vec<String>,
    /// `--abs-proxy-base-path`.
    pub abs_base_path: Option<String>,
    /// `--proxy-timeout`.
    pub timeout: Duration,
    /// `--disable-proxy`.
    pub disabled: bool,
    /// `--trusted-origins`: other origins that may open proxied WebSockets.
    pub trusted_origins: Vec<String>,
    /// `--skip-auth-preflight`.
    pub skip_auth_preflight: bool,
    /// Multi-user mode: who may reach which port ([`ports`]); `None`: whoever is signed in.
    pub gate: Option<Arc<dyn ports::PortGate>>,
}

/// Everything a proxied request touches: the proxy, who may pass, activity, and error pages.
#[derive(Clone)]
pub struct ProxyState {
    pub proxy: Arc<Proxy>,
    pub auth: Arc<Auth>,
    pub activity: HeartState,
    pub pages: Arc<Pages>,
}

/// The proxy's long-lived parts, built once from the configuration.
pub struct Proxy {
    domains: Vec<domain::Pattern>,
    disabled: bool,
    trusted_origins: Vec<String>,
    skip_auth_preflight: bool,
    /// `--abs-proxy-base-path` without a trailing slash: `""` or `/user/1`.
    abs_base: String,
    /// How long an upstream may stay silent before it answers (see [`Proxy::send`]).
    timeout: Duration,
    /// The one pool of upstream connections, shared with the express lane ([`pool`]).
    pool: Arc<pool::IdlePool>,
    gate: Option<Arc<dyn ports::PortGate>>,
}

impl Proxy {
    pub fn new(options: ProxyOptions) -> Proxy {
        let abs_base = match options.abs_base_path.as_deref().map(|p| p.trim().trim_end_matches('/')) {
            Some("") | None => String::new(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => format!("/{p}"),
        };
        Proxy {
            domains: options.domains.iter().map(|d| domain::Pattern::parse(d)).collect(),
            disabled: options.disabled,
            trusted_origins: options.trusted_origins,
            skip_auth_preflight: options.skip_auth_preflight,
            abs_base,
            timeout: options.timeout,
            pool: Arc::default(),
            gate: options.gate,
        }
    }

    /// Sends `req` and waits for the response head. The wait ends in a 504 once the upstream has
    /// been silent for the proxy timeout: counted from the last request-body bytes it accepted,
    /// so a long upload is never cut off while it is moving.
    async fn send(
        &self,
        req: hyper::Request<Body>,
        port: u16,
        owner: Owner,
        upgrade: bool,
    ) -> Result<Response<Pooled>, AppError> {
        let (parts, body) = req.into_parts();
        let started = Instant::now();
        let progress = (!body.is_end_stream()).then(|| Arc::new(Progress::new()));
        let body = match &progress {
            Some(p) => Body::new(Tracked { inner: body, progress: p.clone(), started, bytes: 0 }),
            None => body,
        };
        let response = self.exchange(hyper::Request::from_parts(parts, body), port, owner, upgrade, progress.clone());
        tokio::pin!(response);
        let mut quiet_since = started;
        let result = loop {
            match tokio::time::timeout_at(quiet_since + self.timeout, &mut response).await {
                Ok(result) => break result,
                Err(_) => match progress.as_ref().map(|p| p.last(started)) {
                    Some(last) if last > quiet_since => quiet_since = last,
                    _ => return Err(self.timed_out(port)),
                },
            }
        };
        result.map_err(|e| upstream_error(e, port))
    }

    /// The 504 for an upstream silent for the proxy timeout (both paths).
    fn timed_out(&self, port: u16) -> AppError {
        tracing::debug!("port {port}: no response within {:?}", self.timeout);
        AppError::new(StatusCode::GATEWAY_TIMEOUT, format!("The server on port {port} did not answer in time"))
    }

    /// One exchange over HTTP/1.1 on a pooled connection, or a new one. A pooled connection the
    /// upstream has just closed fails the request before any answer: it is sent again on a new
    /// connection when it was not written at all, or when it has no body and an idempotent
    /// method (as browsers and the express lane do).
    async fn exchange(
        &self,
        req: hyper::Request<Body>,
        port: u16,
        owner: Owner,
        upgrade: bool,
        progress: Option<Arc<Progress>>,
    ) -> Result<Response<Pooled>, Failed> {
        let (mut stream, mut reused) = match self.pool.take(port, owner) {
            Some(stream) => (stream, true),
            None => (pool::connect(port).await.map_err(Failed::Connect)?, false),
        };
        let mut replay = if reused { replayable(&req) } else { None };
        let mut req = req;
        loop {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(Failed::Exchange)?;
            let (sent, mut conn) = if upgrade {
                // The connection becomes the WebSocket's: it runs on its own until the splice
                // takes it.
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!("port {port}: upstream connection: {e}");
                    }
                });
                (sender.try_send_request(req).await, Conn::Gone)
            } else {
                // Driven here until the head arrives, then by the body (see [`Pooled`]).
                let mut conn = Conn::Running(conn);
                let sent = sender.try_send_request(req);
                tokio::pin!(sent);
                let sent = std::future::poll_fn(|cx| {
                    conn.poll(cx, port);
                    sent.as_mut().poll(cx)
                })
                .await;
                (sent, conn)
            };
            // No more requests on it: hyper can finish once this exchange has.
            drop(sender);
            match sent {
                Ok(res) => {
                    let framed = res.headers().contains_key(header::CONTENT_LENGTH)
                        || res.headers().contains_key(header::TRANSFER_ENCODING)
                        || res.body().is_end_stream();
                    // An upstream that answers before it has our whole request body may read the
                    // rest as another request: its answer must never reach anyone.
                    let body_sent = progress.as_ref().is_none_or(|p| p.finished());
                    let keep = !upgrade
                        && body_sent
                        && res.version() == Version::HTTP_11
                        && res.status() != StatusCode::SWITCHING_PROTOCOLS
                        && framed
                        && !crate::headers::says_close(res.headers());
                    if !keep {
                        conn.forget_pool();
                    }
                    let back = keep.then(|| (self.pool.clone(), owner));
                    return Ok(res.map(|inner| Pooled::new(inner, conn, port, back)));
                }
                Err(mut e) => {
                    let unsent = e.take_message();
                    let e = e.into_error();
                    let again = match unsent {
                        Some(req) => Some(req),
                        None if e.is_incomplete_message() => replay.take(),
                        None => None,
                    };
                    match again {
                        Some(again) if reused => {
                            tracing::debug!("port {port}: a pooled connection had closed ({e}); trying a new one");
                            req = again;
                            stream = pool::connect(port).await.map_err(Failed::Connect)?;
                            (reused, replay) = (false, None);
                        }
                        _ => return Err(Failed::Exchange(e)),
                    }
                }
            }
        }
    }
}

/// Methods that mean the same sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

/// A copy of a request that can be sent again: no body, and an [`idempotent`] method.
fn replayable(req: &hyper::Request<Body>) -> Option<hyper::Request<Body>> {
    if !idempotent(req.method().as_str()) || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = hyper::Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

type UpstreamConn = hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Body>;

/// hyper's side of one upstream connection, driven by whoever waits on it.
enum Conn {
    Running(UpstreamConn),
    /// Done with its exchange and idle: it may go back to the pool.
    Finished(UpstreamConn),
    /// Failed, dropped, or not ours (an upgrade).
    Gone,
}

impl Conn {
    fn poll(&mut self, cx: &mut Context<'_>, port: u16) {
        if let Conn::Running(conn) = self {
            match conn.poll_without_shutdown(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => {
                    if let Conn::Running(conn) = std::mem::replace(self, Conn::Gone) {
                        *self = Conn::Finished(conn);
                    }
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!("port {port}: upstream connection: {e}");
                    *self = Conn::Gone;
                }
            }
        }
    }

    /// Not to be reused: a finished connection is closed now. A running one keeps running, as
    /// its body still needs it.
    fn forget_pool(&mut self) {
        if matches!(self, Conn::Finished(_)) {
            *self = Conn::Gone;
        }
    }
}

/// An upstream response body that drives its connection as it is read, and puts the connection
/// back in the pool (for the same owner) when it has been read to its end, before the client
/// can see that end (so the client's next request finds it there). `back` is only given when
/// the response kept the connection alive with a framed body, after the whole request body.
pub struct Pooled {
    inner: Incoming,
    conn: Conn,
    port: u16,
    back: Option<(Arc<pool::IdlePool>, Owner)>,
    /// Bytes relayed so far, added to the metrics once, at the end.
    bytes: u64,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        crate::metrics::proxied_bytes(0, self.bytes);
    }
}

impl Pooled {
    fn new(inner: Incoming, conn: Conn, port: u16, back: Option<(Arc<pool::IdlePool>, Owner)>) -> Pooled {
        let mut body = Pooled { inner, conn, port, back, bytes: 0 };
        // HEAD, 204, 304 or an empty body: nothing will be read, and hyper has usually finished
        // already (one more poll tells).
        if body.inner.is_end_stream() {
            body.release(&mut Context::from_waker(Waker::noop()));
        }
        body
    }

    /// The body has ended: a finished connection goes back to the pool, unless hyper read more
    /// than the response. One still running (hyper has not finished the exchange) is not
    /// reused.
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some((pool, owner)) = self.back.take() else { return };
        let port = self.port;
        self.conn.poll(cx, port);
        if let Conn::Finished(conn) = std::mem::replace(&mut self.conn, Conn::Gone) {
            let parts = conn.into_parts();
            if parts.read_buf.is_empty() {
                pool.put(port, owner, parts.io.into_inner());
            }
        }
    }
}

impl HttpBody for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let port = self.port;
        self.conn.poll(cx, port);
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        match &polled {
            Poll::Ready(None) => self.release(cx),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(cx),
            // A broken body leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why an exchange failed.
enum Failed {
    Connect(std::io::Error),
    Exchange(hyper::Error),
}

/// `1`–`65535`, digits only; anything else is code-server's `400 Invalid port`.
pub fn parse_port(segment: &str) -> Result<u16, AppError> {
    let invalid = || AppError::new(StatusCode::BAD_REQUEST, "Invalid port");
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    segment.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(invalid)
}

/// Sends an admitted request to `127.0.0.1:<port>` and streams the answer back. A WebSocket
/// upgrade that the upstream accepts is spliced in the background once both sides switch.
pub async fn forward(state: &ProxyState, mut req: Request, target: Admitted) -> Result<Response, AppError> {
    let client_upgrade =
        crate::websocket::is_websocket(req.method().as_str(), req.headers()).then(|| hyper::upgrade::on(&mut req));
    let upstream_req = upstream_request(req, &target, &state.auth.cookie_name, client_upgrade.is_some());
    crate::metrics::proxied(crate::metrics::ProxyPath::Hyper);
    let mut res = state.proxy.send(upstream_req, target.port, target.owner, client_upgrade.is_some()).await?;
    if let Some(client_upgrade) = client_upgrade
        && res.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        crate::websocket::splice(
            &state.activity.lifecycle,
            client_upgrade,
            hyper::upgrade::on(&mut res),
            format!("port {}", target.port),
            crate::metrics::websocket(crate::metrics::Socket::Proxy),
            true,
        );
        return Ok(res.map(Body::new));
    }
    Ok(downstream_response(res, &target))
}

/// The request as the upstream should see it: same method, headers (Host included) and body;
/// our URI; no hop-by-hop headers; no session cookie of ours.
fn upstream_request(req: Request, target: &Admitted, cookie_name: &str, upgrade: bool) -> hyper::Request<Body> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    // HTTP/2 carries the host in the URI; HTTP/1.1 needs it as a header. A request with
    // neither (HTTP/1.0 may omit it) names the upstream, as an HTTP client would.
    if !headers.contains_key(header::HOST) {
        let host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => HeaderValue::from_str(&format!("127.0.0.1:{}", target.port)).ok(),
        };
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
    }
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    let upgrade_to = headers.get(header::UPGRADE).cloned();
    crate::headers::strip_hop_by_hop(headers);
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(protocol)) = (upgrade, upgrade_to) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    // A body of unknown length goes on chunked whatever the method (hyper would otherwise send
    // a GET's streamed body as empty).
    if !headers.contains_key(header::CONTENT_LENGTH) && !body.is_end_stream() {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    crate::headers::remove_cookie(headers, cookie_name);
    remove_our_bearer(headers);

    // Origin form: the request line carries the path only (the connection says where to).
    parts.uri = Uri::from(target.target.clone());
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    hyper::Request::from_parts(parts, body)
}

/// Drops `Authorization: Bearer cs_...` (our API token is for us, never for the app behind the
/// proxy); any other `Authorization` passes.
fn remove_our_bearer(headers: &mut axum::http::HeaderMap) {
    if !headers.get_all(header::AUTHORIZATION).iter().any(|v| crate::auth::our_bearer(v.as_bytes()).is_some()) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| crate::auth::our_bearer(v.as_bytes()).is_none())
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for v in kept {
        headers.append(header::AUTHORIZATION, v);
    }
}

/// The upstream's answer for the client: hop-by-hop headers dropped, `Location` rewritten for
/// `/proxy`, the body streamed as it arrives.
fn downstream_response(res: Response<Pooled>, target: &Admitted) -> Response {
    let (mut parts, body) = res.into_parts();
    crate::headers::strip_hop_by_hop(&mut parts.headers);
    if target.rewrite_location
        && let Some(location) = parts.headers.get(header::LOCATION)
        && location.as_bytes().starts_with(b"/")
    {
        let mut rewritten = format!("/proxy/{}", target.port).into_bytes();
        rewritten.extend_from_slice(location.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&rewritten) {
            parts.headers.insert(header::LOCATION, value);
        }
    }
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, Body::new(body))
}

/// A failed exchange, in words a person running a dev server understands; the cause goes to
/// the log only.
fn upstream_error(e: Failed, port: u16) -> AppError {
    match e {
        Failed::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::debug!("port {port}: {e}");
            AppError::new(StatusCode::BAD_GATEWAY, format!("Nothing is listening on port {port}"))
        }
        Failed::Connect(e) => {
            tracing::warn!("port {port}: could not connect: {e}");
            AppError::new(StatusCode::BAD_GATEWAY, format!("Could not connect to port {port}"))
        }
        Failed::Exchange(e) => {
            tracing::debug!("port {port}: {e:?}");
            invalid_response(port)
        }
    }
}

/// The 502 for an upstream that answered with something other than an HTTP response (both paths).
fn invalid_response(port: u16) -> AppError {
    AppError::new(StatusCode::BAD_GATEWAY, format!("The server on port {port} did not send a valid response"))
}

/// When a request body last moved, in ms since the request started, and whether it has all
/// been handed to the upstream connection.
struct Progress {
    last_ms: AtomicU64,
    finished: AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress { last_ms: AtomicU64::new(0), finished: AtomicBool::new(false) }
    }

    fn last(&self, started: Instant) -> Instant {
        started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

/// A request body that records its progress for [`Proxy::send`]'s timeout.
struct Tracked {
    inner: Body,
    progress: Arc<Progress>,
    started: Instant,
    /// Bytes sent so far, added to the metrics once, at the end.
    bytes: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        crate::metrics::proxied_bytes(self.bytes, 0);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                let ms = self.started.elapsed().as_millis() as u64;
                self.progress.last_ms.store(ms, Ordering::Relaxed);
                if self.inner.is_end_stream() {
                    self.progress.finished.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => self.progress.finished.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn cookie_after(values: &[&str], name: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, v.parse().unwrap());
        }
        crate::headers::remove_cookie(&mut h, name);
        assert!(h.get_all(header::COOKIE).iter().count() <= 1);
        h.get(header::COOKIE).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn our_bearer_token_is_removed_and_the_apps_kept() {
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, "Bearer cs_0123".parse().unwrap());
        h.append(header::AUTHORIZATION, "Bearer app".parse().unwrap());
        remove_our_bearer(&mut h);
        let left: Vec<_> = h.get_all(header::AUTHORIZATION).iter().map(|v| v.to_str().unwrap().to_string()).collect();
        assert_eq!(left, ["Bearer app"]);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer  cs_x".parse().unwrap());
        remove_our_bearer(&mut h);
        assert!(h.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn session_cookie_is_removed_and_the_rest_kept() {
        let name = "code-server-session";
        assert_eq!(cookie_after(&["a=1;b=%20x"], name).as_deref(), Some("a=1;b=%20x"), "untouched");
        assert_eq!(cookie_after(&["a=1; code-server-session=tok; b=\"q\""], name).as_deref(), Some("a=1; b=\"q\""));
        assert_eq!(cookie_after(&["code-server-session=tok"], name), None);
        assert_eq!(
            cookie_after(&["code-server-session-x=1; code-server-session=t"], name).as_deref(),
            Some("code-server-session-x=1")
        );
        assert_eq!(cookie_after(&["a=1", "code-server-session=t", "b=2"], name).as_deref(), Some("a=1; b=2"));
        assert_eq!(
            cookie_after(&["a=1; code-server-session-dev=t"], "code-server-session-dev").as_deref(),
            Some("a=1")
        );
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("8080"), Ok(8080));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in ["", "0", "65536", "+80", "80a", "abc", "-1", "99999999999"] {
            assert_eq!(parse_port(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
