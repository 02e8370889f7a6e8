//! Serving the Router: our own accept loop over TCP or Unix listeners, optional TLS sniffed on
//! the same port (a plain-HTTP request to a TLS port gets code-server's redirect), HTTP/1.1 and
//! HTTP/2 (ALPN under TLS, prior knowledge without), WebSocket upgrades, graceful shutdown.

// Unsafe code here only raises the open-files limit; every block says why it is sound.
#![allow(unsafe_code)]

pub mod idle;
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
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

pub use listen::{Accepted, BindError, Listener};
use rewind::Rewind;
pub use slot::ConnectionSlot;
use slot::SlotIo;

/// Facts about the connection a request came in on, available to handlers as an extension (one
/// extension, not several: each insert into a request's extensions is an allocation).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connection's number, unique for the life of the process (the port proxy keeps
    /// upstream connections of requests without a session per client connection).
    pub id: u64,
    /// The TCP peer; `None` on a Unix socket.
    pub peer: Option<SocketAddr>,
    /// Our end of a TCP connection (the port proxy uses it to refuse proxying to itself).
    pub local: Option<SocketAddr>,
    pub tls: bool,
    /// Things kept until the socket closes (see [`slot`]).
    pub slot: ConnectionSlot,
}

/// At shutdown, how long the last connections accepted get to send their first request before
/// idle connections are closed.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
/// How long in-flight requests get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A client must send its first byte and finish the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request head must arrive within this of the connection being ready for it: on a new
/// connection, and on a keep-alive connection after its last response (hyper's default, which
/// the express lane follows too). An HTTP/2 connection with no request in flight for this long
/// is closed the same way (see [`idle`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 keep-alive: a ping after this much silence, and the connection closed when its answer
/// does not come within as long again.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// After a graceful close of an idle connection (a GOAWAY), how long the client gets to let go
/// before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Accept failures (out of descriptors, mostly) back off from this, doubling up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A first reader of plain HTTP/1.1 connections (the port proxy's express lane): serves the
/// requests it can take and, at the first it cannot, hands the connection back with the bytes
/// it has read (`None` when the connection ended in its hands).
pub trait Lane: Send + Sync + 'static {
    fn serve<S>(
        &self,
        stream: S,
        local: Option<u16>,
        id: u64,
        draining: &CancellationToken,
    ) -> impl Future<Output = Option<(S, Vec<u8>)>> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send;
}

/// No lane: every connection goes straight to the application.
pub enum NoLane {}

impl Lane for NoLane {
    async fn serve<S>(&self, _: S, _: Option<u16>, _: u64, _: &CancellationToken) -> Option<(S, Vec<u8>)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match *self {}
    }
}

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
/// socket file, serves what was still queued, gives in-flight requests [`SHUTDOWN_GRACE`] to
/// finish, and closes whatever is left. Returns only when every connection task has ended.
///
/// With a [`Lane`], HTTP/1.1 connections start in the port proxy's express lane and reach the
/// app from the first request the lane does not take (see [`crate::proxy::lane`]).
///
/// Upgraded connections (WebSockets) leave hyper once upgraded, so neither the grace period nor
/// the forced close reaches them. They are counted and waited for through their connection's
/// [`ConnectionSlot`]; to be ended promptly at shutdown, whoever serves one runs it under
/// [`crate::lifecycle::Lifecycle::connection`].
pub async fn serve<A: App, L: Lane>(
    listener: Listener,
    app: A,
    lane: Option<L>,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection task, so none outlives this function: waited for during the grace
    // period, aborted after it. (Aborting costs nothing while they run; a cancellation token
    // would be polled at every wake-up of every connection.)
    let mut tasks = JoinSet::new();
    let shared =
        Arc::new(Shared { app, lane, acceptor: tls.map(TlsAcceptor::from), draining: CancellationToken::new() });
    accept_until(&listener, &shared, &mut tasks, shutdown).await;
    for accepted in listener.close_taking_queued() {
        start(accepted, &shared, &mut tasks);
    }
    // The connections accepted last may not have sent their first request yet (or we not
    // read it): closing them as idle now would lose it. They get a moment first.
    let _ = tokio::time::timeout(FIRST_REQUEST_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    drain(&shared, tasks, SHUTDOWN_GRACE).await;
}

/// Serves `app` on `listener` until `until` resolves, then stops accepting and gives requests
/// in flight a moment; the listener stays bound for what comes next. (The first run serves its
/// progress page this way while VS Code is provisioned, then the server proper takes over.)
pub async fn serve_meanwhile<A: App>(
    listener: &Listener,
    app: A,
    tls: Option<Arc<ServerConfig>>,
    until: impl Future<Output = ()>,
) {
    let mut tasks = JoinSet::new();
    let shared = Arc::new(Shared {
        app,
        lane: None::<NoLane>,
        acceptor: tls.map(TlsAcceptor::from),
        draining: CancellationToken::new(),
    });
    accept_until(listener, &shared, &mut tasks, until).await;
    drain(&shared, tasks, CLOSE_GRACE).await;
}

/// Accepts connections and starts serving each, until `stop` resolves.
async fn accept_until<A: App, L: Lane>(
    listener: &Listener,
    shared: &Arc<Shared<A, L>>,
    tasks: &mut JoinSet<()>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        let accepted = match accepted {
            Ok(a) => {
                if !backoff.is_zero() {
                    tracing::info!("Accepting connections again");
                    backoff = Duration::ZERO;
                }
                a
            }
            Err(e) => {
                // Out of descriptors and the like: the connection stays queued in the kernel.
                // Back off instead of spinning, and say so once, not at every retry.
                if backoff.is_zero() {
                    tracing::warn!("accept failed: {e} ({}); retrying with back-off", crate::errno::name(&e));
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                // Idle connections closing meanwhile give descriptors back.
                while tasks.try_join_next().is_some() {}
                continue;
            }
        };
        start(accepted, shared, tasks);
        // Forget the connections that have ended.
        while tasks.try_join_next().is_some() {}
    }
}

/// Serves an accepted connection in a task of its own.
fn start<A: App, L: Lane>(accepted: Accepted, shared: &Arc<Shared<A, L>>, tasks: &mut JoinSet<()>) {
    let shared = shared.clone();
    match accepted {
        Accepted::Tcp(s, peer) => {
            let local = s.local_addr().ok();
            tasks.spawn(handle(s, Some(peer), local, shared));
        }
        Accepted::Unix(s) => {
            tasks.spawn(handle(s, None, None, shared));
        }
    }
}

/// Connections finish what they are doing and close (the express lane's and hyper's idle ones
/// at once), within `grace`; whatever is left then is closed.
async fn drain<A: App, L: Lane>(shared: &Shared<A, L>, mut tasks: JoinSet<()>, grace: Duration) {
    shared.draining.cancel();
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("Some connections did not finish within {}s; closing them", grace.as_secs());
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// What every connection of a [`serve`] shares.
struct Shared<A, L> {
    app: A,
    lane: Option<L>,
    acceptor: Option<TlsAcceptor>,
    /// Cancelled when shutdown starts: connections finish their requests and close.
    draining: CancellationToken,
}

/// Numbers the connections.
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn handle<S, A: App, L: Lane>(
    mut stream: S,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    shared: Arc<Shared<A, L>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = crate::metrics::connection();
    let conn = Conn { id, peer, local };
    let Some(acceptor) = &shared.acceptor else {
        lane_then_app(stream, conn, false, &shared).await;
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
        serve_redirect(stream, &shared.draining).await;
        return;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => serve_app(tls, conn, true, &shared).await,
        Ok(Ok(tls)) => lane_then_app(tls, conn, true, &shared).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// An HTTP/1.1 connection (or one that may turn out to be HTTP/2 with prior knowledge): the
/// express lane first, then the app with whatever the lane has read.
async fn lane_then_app<S, A: App, L: Lane>(stream: S, conn: Conn, tls: bool, shared: &Shared<A, L>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(lane) = &shared.lane else {
        serve_app(stream, conn, tls, shared).await;
        return;
    };
    if let Some((stream, read)) = lane.serve(stream, conn.local.map(|a| a.port()), conn.id, &shared.draining).await {
        serve_app(Rewind::new(read, stream), conn, tls, shared).await;
    }
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy)]
struct Conn {
    id: u64,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    b.http2().timer(TokioTimer::new()).keep_alive_interval(H2_KEEP_ALIVE).keep_alive_timeout(H2_KEEP_ALIVE);
    b
}

async fn serve_app<S, A: App, L: Lane>(stream: S, conn: Conn, tls: bool, shared: &Shared<A, L>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The socket outlives hyper's view of it when the connection is upgraded; the slot lets
    // middleware keep things (a heart guard) for exactly as long as the socket lives.
    let slot = ConnectionSlot::default();
    let io = SlotIo::new(stream, slot.clone());
    let info = ConnInfo { id: conn.id, peer: conn.peer, local: conn.local, tls, slot };
    let activity = idle::Activity::new();
    let counter = activity.clone();
    let app = shared.app.clone();
    let svc = tower::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(info.clone());
        let in_flight = counter.begin();
        let response = app.clone().oneshot(req);
        async move {
            let res = response.await?;
            Ok::<_, Infallible>(res.map(|body| Body::new(idle::Counted::new(body, in_flight))))
        }
    });
    let builder = builder();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    watch(conn, &activity, &shared.draining).await;
}

/// Drives a connection until it ends; closes it gracefully when the server drains or when it
/// has been idle for [`HEADER_READ_TIMEOUT`], and drops it if the client has not let go
/// [`CLOSE_GRACE`] after an idle close.
async fn watch<C>(conn: C, activity: &idle::Activity, draining: &CancellationToken)
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Closable,
{
    tokio::pin!(conn);
    let mut closing = false;
    let mut give_up = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!("connection ended with an error: {e}");
                }
                return;
            }
            _ = draining.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().close();
            }
            _ = activity.idle(HEADER_READ_TIMEOUT), if !closing => {
                tracing::trace!("closing an idle connection");
                closing = true;
                give_up = Some(Instant::now() + CLOSE_GRACE);
                conn.as_mut().close();
            }
            _ = tokio::time::sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => return,
        }
    }
}

/// A hyper connection that can be asked to finish its requests and close.
trait Closable {
    fn close(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> Closable for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, Body>,
{
    fn close(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Closable for auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, Body>,
{
    fn close(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// A plain-HTTP request on a TLS port: `302 https://<Host><url>`, as code-server answers.
async fn serve_redirect<S>(stream: S, draining: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = idle::Activity::new();
    let counter = activity.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = counter.begin();
        async move {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty());
            let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let res = match host.and_then(|h| HeaderValue::from_str(&format!("https://{h}{path}")).ok()) {
                Some(location) => Response::builder()
                    .status(StatusCode::FOUND)
                    .header(header::LOCATION, location)
                    .body(Body::from("Redirecting to HTTPS")),
                None => Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(Body::from("This server only speaks HTTPS")),
            }
            .expect("valid response");
            Ok::<_, Infallible>(res.map(|body| Body::new(idle::Counted::new(body, in_flight))))
        }
    });
    let builder = builder();
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    watch(conn, &activity, draining).await;
}

/// Raises the soft limit on open files to the hard limit, as servers do: every connection is a
/// descriptor, and the default soft limit (often 1024) is reached long before the machine's
/// capacity. Returns the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// SIGUSR1 and SIGUSR2: code-server's signals to restart the server in place ("hotswap").
pub struct HotswapSignals {
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl HotswapSignals {
    /// Catches SIGUSR1 and SIGUSR2 from now on (uncaught, either would kill the process).
    pub fn install() -> std::io::Result<HotswapSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(HotswapSignals { usr1: signal(SignalKind::user_defined1())?, usr2: signal(SignalKind::user_defined2())? })
    }

    /// Resolves with the signal's name on the next SIGUSR1 or SIGUSR2.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.usr1.recv() => "SIGUSR1",
            _ = self.usr2.recv() => "SIGUSR2",
        }
    }
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
