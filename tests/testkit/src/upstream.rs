//! A stand-in for the dev server behind the port proxy, run in the test process on 127.0.0.1:0.
//! Routes are chosen by the end of the path (`/x/redirect` is `/redirect`):
//!
//! - any path: echoes the request as JSON (method, raw URI, headers in order, body length and
//!   SHA-256, trailers); `HEAD` gets the same headers without a body
//! - `/redirect?to=<location>`: 307 to that location
//! - `/status/<code>`: that status with no body (`304` also carries an ETag)
//! - `/download?size=<n>[&chunked]`: `n` bytes of [`Pattern`], with or without Content-Length
//! - `/trailers`: a chunked body followed by an `x-checksum` trailer
//! - `/sse`: an event stream; the first event at once, the second after [`Upstream::release`]
//! - `/hold`: a long poll answered after [`Upstream::release`]
//! - `/slow`: never answers
//! - any WebSocket handshake: echoes messages, picks the first offered subprotocol, and reports
//!   what it saw in `x-seen-*` response headers

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

pub struct Upstream {
    pub port: u16,
    release: Arc<Notify>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let release = Arc::new(Notify::new());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, count) = (release.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, r.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { port, release, accepted }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets `/sse` send its second event, or `/hold` answer.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

/// A port nothing listens on (bound, then closed).
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn handle(req: Request<Incoming>, release: Arc<Notify>) -> Result<Response<Body>, Infallible> {
    if req.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return Ok(websocket(req));
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // Routes are matched on the end of the path, so they work under `/absproxy/<port>` too.
    let route = match path.rsplit_once("/status/") {
        Some((_, code)) => format!("/status/{code}"),
        None => path.rsplit('/').next().map(|last| format!("/{last}")).unwrap_or_default(),
    };
    let res = match route.as_str() {
        "/redirect" => {
            let to = query.strip_prefix("to=").unwrap_or("/");
            let to = percent_encoding::percent_decode_str(to).decode_utf8().unwrap().into_owned();
            Response::builder().status(307).header("location", to).body(Body::empty()).unwrap()
        }
        "/download" => {
            let size: u64 = query.split('&').find_map(|p| p.strip_prefix("size=")).unwrap().parse().unwrap();
            let chunked = query.split('&').any(|p| p == "chunked");
            let mut b = Response::builder().header("content-type", "application/octet-stream");
            if !chunked {
                b = b.header("content-length", size.to_string());
            }
            b.body(Body::new(Pattern::new(size, !chunked))).unwrap()
        }
        "/trailers" => Response::builder()
            .header("trailer", "x-checksum")
            .body(Body::new(WithTrailers { data: Some(Bytes::from_static(b"payload")), trailer_sent: false }))
            .unwrap(),
        "/sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: one\n\n")).await;
                release.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: two\n\n")).await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "/hold" => {
            release.notified().await;
            Response::builder().body(Body::from("released")).unwrap()
        }
        "/slow" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap();
            let mut b = Response::builder().status(code).header("x-status", code.to_string());
            if code == 304 {
                b = b.header("etag", "\"v1\"");
            }
            b.body(Body::empty()).unwrap()
        }
        _ => echo(req).await,
    };
    Ok(res)
}

async fn echo(req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0u64;
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            hash.update(data);
            len += data.len() as u64;
        } else if let Some(t) = frame.trailers_ref() {
            trailers = pairs(t);
        }
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": pairs(&parts.headers),
        "body_len": len,
        "body_sha256": hex(hash.finish().as_ref()),
        "trailers": trailers,
    });
    let text = json.to_string();
    let mut b = Response::builder().header("content-type", "application/json").header("x-echo", "1");
    if parts.method == hyper::http::Method::HEAD {
        b = b.header("content-length", text.len().to_string());
        return b.body(Body::empty()).unwrap();
    }
    b.body(Body::from(text)).unwrap()
}

fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn websocket(req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let key = h.get("sec-websocket-key").unwrap().as_bytes().to_vec();
    let seen = |name: &str| h.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join(", ");
    let protocol =
        seen("sec-websocket-protocol").split(',').next().map(|p| p.trim().to_string()).filter(|p| !p.is_empty());
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(&key))
        .header("x-seen-path", req.uri().to_string())
        .header("x-seen-host", seen("host"))
        .header("x-seen-cookie", seen("cookie"))
        .header("x-seen-extensions", seen("sec-websocket-extensions"));
    if let Some(p) = &protocol {
        b = b.header("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
            if msg.is_close() || (echo && ws.send(msg).await.is_err()) {
                break;
            }
        }
    });
    b.body(Body::empty()).unwrap()
}

/// A deterministic byte stream: 64 KiB blocks of pseudo-random bytes, each starting with its
/// index, so a lost, repeated or reordered block changes the hash.
pub struct Pattern {
    block: Arc<Vec<u8>>,
    next: u64,
    remaining: u64,
    exact: bool,
}

pub const BLOCK: usize = 64 * 1024;

impl Pattern {
    pub fn new(size: u64, exact: bool) -> Pattern {
        let mut block = vec![0u8; BLOCK];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        Pattern { block: Arc::new(block), next: 0, remaining: size, exact }
    }

    /// The SHA-256 of the first `size` bytes, computed without the transport.
    pub fn sha256(size: u64) -> String {
        let mut p = Pattern::new(size, true);
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        while let Some(b) = p.next_block() {
            hash.update(&b);
        }
        hex(hash.finish().as_ref())
    }

    fn next_block(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = (self.remaining as usize).min(BLOCK);
        let mut b = self.block[..n].to_vec();
        let idx = self.next.to_le_bytes();
        let k = idx.len().min(n);
        b[..k].copy_from_slice(&idx[..k]);
        self.next += 1;
        self.remaining -= n as u64;
        Some(Bytes::from(b))
    }
}

impl hyper::body::Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.next_block().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact { SizeHint::with_exact(self.remaining) } else { SizeHint::default() }
    }
}

/// Some data, then an `x-checksum: abc` trailer.
pub struct WithTrailers {
    pub data: Option<Bytes>,
    pub trailer_sent: bool,
}

impl hyper::body::Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if !self.trailer_sent {
            self.trailer_sent = true;
            let mut t = HeaderMap::new();
            t.insert("x-checksum", HeaderValue::from_static("abc"));
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }
}
