//! The port proxy (spec §3.7, §3.8): `/proxy/<port>/…`, `/absproxy/<port>/…` and
//! `{{port}}.<proxy-domain>` hosts, forwarded to `127.0.0.1:<port>` (never anywhere else) over one
//! pooled HTTP/1.1 client.
//!
//! [`Front`] recognises proxied requests ahead of the router. Every route then takes the same two
//! steps: [`admit`] (the proxy switch, the WebSocket Origin check, the session) and [`forward`],
//! which rewrites only what a gateway must (the target URI, hop-by-hop headers, our session
//! cookie, `Location` for `/proxy`) and streams bodies both ways without buffering. A WebSocket is
//! forwarded as an upgrade and, once the upstream has answered 101, its bytes are spliced both
//! ways without re-framing.

mod chunked;
mod domain;
mod front;
pub mod lane;
mod path;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use axum::http::{Method, StatusCode, Version};
use axum::response::Response;
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::app::AppState;
use crate::cli::Config;
use crate::error::AppError;

pub use front::Front;

/// Idle upstream connections are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per port: enough for a browser's parallel requests and a busy dev
/// server, bounded so a burst does not leave hundreds of sockets open.
const POOL_MAX_IDLE_PER_PORT: usize = 64;

/// The proxy's long-lived parts, built once from the configuration.
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    domains: Vec<domain::Pattern>,
    /// `--abs-proxy-base-path` without a trailing slash: `""` or `/user/1`.
    abs_base: String,
    /// How long an upstream may stay silent before it answers (see [`Proxy::send`]).
    timeout: Duration,
    /// The express lane's idle upstream connections ([`lane`]).
    idle: Arc<lane::IdlePool>,
}

impl Proxy {
    pub fn new(config: &Config) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // The connect is covered by the proxy timeout, like the wait for the response.
        connector.set_connect_timeout(None);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Without a timer the idle timeout above is never enforced (hyper#3640).
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_PORT)
            .build(connector);
        let abs_base = match config.abs_proxy_base_path.as_deref().map(|p| p.trim().trim_end_matches('/')) {
            Some("") | None => String::new(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => format!("/{p}"),
        };
        Proxy {
            client,
            domains: config.proxy_domains.iter().map(|d| domain::Pattern::parse(d)).collect(),
            abs_base,
            timeout: config.proxy_timeout,
            idle: Arc::default(),
        }
    }

    /// Sends `req` and waits for the response head. The wait ends in a 504 once the upstream has
    /// been silent for the proxy timeout: counted from the last request-body bytes it accepted,
    /// so a long upload is never cut off while it is moving.
    async fn send(&self, req: hyper::Request<Body>, port: u16) -> Result<Response<Incoming>, AppError> {
        let (parts, body) = req.into_parts();
        let started = Instant::now();
        let progress = (!body.is_end_stream()).then(|| Arc::new(Progress::new()));
        let body = match &progress {
            Some(p) => Body::new(Tracked { inner: body, progress: p.clone(), started }),
            None => body,
        };
        let response = self.client.request(hyper::Request::from_parts(parts, body));
        tokio::pin!(response);
        let mut quiet_since = started;
        let result = loop {
            match tokio::time::timeout_at(quiet_since + self.timeout, &mut response).await {
                Ok(result) => break result,
                Err(_) => match progress.as_ref().map(|p| p.last(started)) {
                    Some(last) if last > quiet_since => quiet_since = last,
                    _ => {
                        tracing::debug!("port {port}: no response within {:?}", self.timeout);
                        return Err(AppError::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!("The server on port {port} did not answer in time"),
                        ));
                    }
                },
            }
        };
        result.map_err(|e| upstream_error(&e, port))
    }
}

/// Where a request goes once admitted.
pub struct Target {
    pub port: u16,
    /// The origin-form path and query sent upstream, exactly as it should arrive.
    pub path_and_query: PathAndQuery,
    /// `/proxy` only: a `Location` starting with `/` gets `/proxy/<port>` in front.
    pub rewrite_location: bool,
}

/// Whether a request may be proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The caller decides: a redirect to login, our own page, or 401.
    Unauthenticated,
}

/// The checks every proxied request passes, in code-server's order: `--disable-proxy` (403);
/// for a WebSocket, the Origin check (403); then the session, which `--skip-auth-preflight`
/// waives for `OPTIONS`. The session check is an in-memory lookup: nothing slow runs here.
pub async fn admit(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<Admission, AppError> {
    if state.config.disable_proxy {
        return Err(AppError::forbidden());
    }
    if ws::is_websocket(method, headers) {
        if let Err(e) = crate::origin::check_origin(headers, &state.config.trusted_origins) {
            tracing::debug!("refused a proxied WebSocket: {e}");
            return Err(AppError::forbidden());
        }
    } else if method == Method::OPTIONS && state.config.skip_auth_preflight {
        return Ok(Admission::Allowed);
    }
    if state.auth.is_authenticated(headers).await? { Ok(Admission::Allowed) } else { Ok(Admission::Unauthenticated) }
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
pub async fn forward(state: &AppState, mut req: Request, target: Target) -> Result<Response, AppError> {
    let client_upgrade = ws::is_websocket(req.method(), req.headers()).then(|| hyper::upgrade::on(&mut req));
    let upstream_req = upstream_request(req, &target, &state.auth.cookie_name, client_upgrade.is_some());
    let mut res = state.proxy.send(upstream_req, target.port).await?;
    if let Some(client_upgrade) = client_upgrade
        && res.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        ws::splice(&state.lifecycle, client_upgrade, hyper::upgrade::on(&mut res), format!("port {}", target.port));
        return Ok(res.map(Body::new));
    }
    Ok(downstream_response(res, &target))
}

/// The request as the upstream should see it: same method, headers (Host included) and body;
/// our URI; no hop-by-hop headers; no session cookie of ours.
fn upstream_request(req: Request, target: &Target, cookie_name: &str, upgrade: bool) -> hyper::Request<Body> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    // HTTP/2 carries the host in the URI; HTTP/1.1 needs it as a header.
    if !headers.contains_key(header::HOST)
        && let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, host);
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

    parts.uri = Uri::from_parts({
        let mut p = axum::http::uri::Parts::default();
        p.scheme = Some(Scheme::HTTP);
        p.authority = Some(loopback(target.port));
        p.path_and_query = Some(target.path_and_query.clone());
        p
    })
    .expect("scheme, authority and path make a URI");
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    hyper::Request::from_parts(parts, body)
}

fn loopback(port: u16) -> Authority {
    Authority::try_from(format!("127.0.0.1:{port}")).expect("an IPv4 address and a port make an authority")
}

/// The upstream's answer for the client: hop-by-hop headers dropped, `Location` rewritten for
/// `/proxy`, the body streamed as it arrives.
fn downstream_response(res: Response<Incoming>, target: &Target) -> Response {
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
fn upstream_error(e: &hyper_util::client::legacy::Error, port: u16) -> AppError {
    let refused = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused {
        tracing::debug!("port {port}: {e:?}");
        AppError::new(StatusCode::BAD_GATEWAY, format!("Nothing is listening on port {port}"))
    } else if e.is_connect() {
        tracing::warn!("port {port}: could not connect: {e:?}");
        AppError::new(StatusCode::BAD_GATEWAY, format!("Could not connect to port {port}"))
    } else {
        tracing::debug!("port {port}: {e:?}");
        AppError::new(StatusCode::BAD_GATEWAY, format!("The server on port {port} did not send a valid response"))
    }
}

/// When a request body last moved, in ms since the request started.
struct Progress(AtomicU64);

impl Progress {
    fn new() -> Progress {
        Progress(AtomicU64::new(0))
    }

    fn last(&self, started: Instant) -> Instant {
        started + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// A request body that records its progress for [`Proxy::send`]'s timeout.
struct Tracked {
    inner: Body,
    progress: Arc<Progress>,
    started: Instant,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            let ms = self.started.elapsed().as_millis() as u64;
            self.progress.0.store(ms, Ordering::Relaxed);
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
