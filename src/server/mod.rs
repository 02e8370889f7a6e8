//! Serving the Router: our own accept loop over TCP or Unix listeners, optional TLS sniffed on
//! the same port (a plain-HTTP request to a TLS port gets code-server's redirect), HTTP/1.1 and
//! HTTP/2 (ALPN under TLS, prior knowledge without), WebSocket upgrades, graceful shutdown.

pub mod listen;
pub mod rewind;
pub mod slot;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::proxy::lane::Lane;
pub use listen::{Accepted, BindError, Listener};
use rewind::Rewind;
pub use slot::ConnectionSlot;
use slot::SlotIo;

/// Facts about the connection a request came in on, available to handlers as an extension (one
/// extension, not several: each insert into a request's extensions is an allocation).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer; `None` on a Unix socket.
    pub peer: Option<SocketAddr>,
    /// Our end of a TCP connection (the port proxy uses it to refuse proxying to itself).
    pub local: Option<SocketAddr>,
    pub tls: bool,
    /// Things kept until the socket closes (see [`slot`]).
    pub slot: ConnectionSlot,
}

/// How long in-flight requests get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A client must send its first byte and finish the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`serve`] serves: the application (see [`crate::app::router`]) or, in tests, a Router.
pub trait App:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<A> App for A where
    A: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, removes our
/// socket file, gives in-flight requests [`SHUTDOWN_GRACE`] to finish, and closes whatever is
/// left. Returns only when every connection task has ended.
///
/// With a [`Lane`], HTTP/1.1 connections start in the port proxy's express lane and reach the
/// app from the first request the lane does not take (see [`crate::proxy::lane`]).
///
/// Upgraded connections (WebSockets) leave hyper once upgraded, so neither the grace period nor
/// the forced close reaches them. They are counted and waited for through their connection's
/// [`ConnectionSlot`]; to be ended promptly at shutdown, whoever serves one runs it under
/// [`crate::lifecycle::Lifecycle::connection`].
pub async fn serve<A: App>(
    listener: Listener,
    app: A,
    lane: Option<Lane>,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    // Every connection task, so none outlives this function: aborted after the grace period.
    // (Aborting costs nothing while they run; a cancellation token would be polled at every
    // wake-up of every connection.)
    let mut tasks = JoinSet::new();
    let shared =
        Arc::new(Shared { app, lane, acceptor: tls.map(TlsAcceptor::from), draining: CancellationToken::new() });
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A connection holds its watcher from the start, so the grace period below waits for
        // requests in the express lane too.
        let (shared, watcher) = (shared.clone(), graceful.watcher());
        match accepted {
            Accepted::Tcp(s, peer) => {
                let local = s.local_addr().ok();
                tasks.spawn(handle(s, Some(peer), local, shared, watcher));
            }
            Accepted::Unix(s) => {
                tasks.spawn(handle(s, None, None, shared, watcher));
            }
        }
        // Forget the connections that have ended.
        while tasks.try_join_next().is_some() {}
    }
    listener.remove_socket_file();
    drop(listener);
    shared.draining.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("Some connections did not finish within {}s; closing them", SHUTDOWN_GRACE.as_secs());
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// What every connection of a [`serve`] shares.
struct Shared<A> {
    app: A,
    lane: Option<Lane>,
    acceptor: Option<TlsAcceptor>,
    /// Cancelled when shutdown starts: the lane closes its idle connections.
    draining: CancellationToken,
}

async fn handle<S, A: App>(
    mut stream: S,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    shared: Arc<Shared<A>>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(acceptor) = &shared.acceptor else {
        lane_then_app(stream, peer, local, false, &shared, watcher).await;
        return;
    };
    // TLS and plain HTTP share the port: a TLS ClientHello starts with 0x16.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    let stream = Rewind::new(first.to_vec(), stream);
    if first[0] != 0x16 {
        serve_redirect(stream, watcher).await;
        return;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
            serve_app(tls, peer, local, true, shared.app.clone(), watcher).await
        }
        Ok(Ok(tls)) => lane_then_app(tls, peer, local, true, &shared, watcher).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// An HTTP/1.1 connection (or one that may turn out to be HTTP/2 with prior knowledge): the
/// express lane first, then the app with whatever the lane has read.
async fn lane_then_app<S, A: App>(
    stream: S,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    tls: bool,
    shared: &Shared<A>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(lane) = &shared.lane else {
        serve_app(stream, peer, local, tls, shared.app.clone(), watcher).await;
        return;
    };
    if let Some((stream, read)) = lane.serve(stream, local.map(|a| a.port()), &shared.draining).await {
        serve_app(Rewind::new(read, stream), peer, local, tls, shared.app.clone(), watcher).await;
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    b.http2().timer(TokioTimer::new());
    b
}

async fn serve_app<S, A: App>(
    stream: S,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    tls: bool,
    app: A,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The socket outlives hyper's view of it when the connection is upgraded; the slot lets
    // middleware keep things (a heart guard) for exactly as long as the socket lives.
    let slot = ConnectionSlot::default();
    let io = SlotIo::new(stream, slot.clone());
    let info = ConnInfo { peer, local, tls, slot };
    let svc = app.map_request(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(info.clone());
        req
    });
    let builder = builder();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::trace!("connection ended with an error: {e}");
    }
}

/// A plain-HTTP request on a TLS port: `302 https://<Host><url>`, as code-server answers.
async fn serve_redirect<S>(stream: S, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty());
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let res = match host.and_then(|h| HeaderValue::from_str(&format!("https://{h}{path}")).ok()) {
            Some(location) => Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .body(Body::from("Redirecting to HTTPS"))
                .expect("valid response"),
            None => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Body::from("This server only speaks HTTPS"))
                .expect("valid response"),
        };
        Ok::<_, std::convert::Infallible>(res)
    });
    let builder = builder();
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let _ = watcher.watch(conn.into_owned()).await;
}

/// SIGINT and SIGTERM, the two ways to ask for a shutdown.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches SIGINT and SIGTERM from now on. Install before printing the listening line: a
    /// supervisor may signal as soon as it sees it, and an uncaught SIGTERM kills the process
    /// without a clean shutdown.
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
