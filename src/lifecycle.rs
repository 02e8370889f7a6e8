//! From start-up to a clean exit: background tasks, upgraded connections, the reasons to stop,
//! and the order in which things shut down.
//!
//! [`Lifecycle`] is one `CancellationToken` (cancelled when shutdown begins) and two
//! `TaskTracker`s: one for background tasks (heartbeat, settings writer, session pruning, and
//! later the VS Code supervisor), one for upgraded connections (WebSockets), which hyper's
//! graceful shutdown cannot see once they leave HTTP. [`run`] is the whole choreography:
//!
//! 1. a stop arrives: the first SIGINT/SIGTERM, or the idle timeout;
//! 2. the listener closes and in-flight HTTP requests get [`crate::server::SHUTDOWN_GRACE`] to
//!    finish (hyper's graceful shutdown); at the same moment the token is cancelled, so
//!    WebSocket tasks close (a Close frame where we speak WebSocket, a dropped socket where we
//!    only splice bytes) and background tasks stop;
//! 3. upgraded connections and background tasks are awaited, each with a bound;
//! 4. what requests left behind is persisted: settings, then sessions.
//!
//! Nothing spawned through here outlives [`run`]. A second signal exits at once (see
//! [`first_signal`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::app::{AppState, router};
use crate::auth::session::Sessions;
use crate::server::{self, Listener};

/// After shutdown begins, an upgraded connection gets this long to finish on its own (say
/// goodbye with a Close frame) before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Background tasks get this long to stop once cancelled (the VS Code supervisor needs up to
/// its own 5 s grace to stop the child's process group).
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(8);
/// How often expired sessions are dropped and session use is written out.
pub const SESSION_MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

/// Shared by everything that spawns work that must end with the server. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    background: TaskTracker,
    connections: TaskTracker,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle::default()
    }

    /// A token cancelled when shutdown begins (a child: cancelling it stops only its holder).
    pub fn token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Resolves when shutdown begins.
    pub fn shutting_down(&self) -> WaitForCancellationFutureOwned {
        self.shutdown.clone().cancelled_owned()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Starts shutdown: every token from here is cancelled.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Spawns a background task. It gets a token and must return soon after it is cancelled;
    /// [`Lifecycle::finish`] waits for it.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = task(self.token());
        self.background.spawn(async move {
            fut.await;
            tracing::debug!("{name} stopped");
        });
    }

    /// Wraps the task serving one upgraded connection (a WebSocket, proxied or ours) so that
    /// shutdown can end it. When shutdown begins the task gets [`CLOSE_GRACE`] to end by itself
    /// (watch [`Lifecycle::shutting_down`] to send a Close frame), then it is dropped, which
    /// closes its sockets. Spawn the result, or return it from `WebSocketUpgrade::on_upgrade`:
    ///
    /// ```ignore
    /// // after the upstream answered 101 and the client's upgrade resolved:
    /// tokio::spawn(state.lifecycle.connection(splice(client, upstream)));
    /// ```
    ///
    /// (Counting the connection for the heartbeat and the idle timeout needs nothing: the server
    /// does it for every `101`, see [`crate::server::slot`].) A task that is not wrapped is still
    /// waited for at shutdown, but only until [`Lifecycle::finish`]'s bound runs out.
    pub fn connection<F>(&self, task: F) -> impl Future<Output = ()> + Send + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutting_down();
        self.connections.track_future(async move {
            // The task runs as its own task so that its every wake-up (a WebSocket's every
            // message) does not also poll the shutdown signal, whose waiter list all
            // connections share; this one only wakes when either ends.
            let mut task = tokio::spawn(task);
            // Dropped early (the runtime going away), it still takes the task with it.
            let _abort = AbortOnDrop(task.abort_handle());
            tokio::select! {
                _ = &mut task => return,
                _ = shutdown => {}
            }
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut task).await;
        })
    }

    /// A token that keeps [`Lifecycle::finish`] waiting while it is held; the heart's middleware
    /// parks one on every upgraded connection (see [`crate::server::slot`]).
    pub fn upgraded_token(&self) -> TaskTrackerToken {
        self.connections.token()
    }

    /// Upgraded connections being served now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Background tasks running now.
    pub fn background_tasks(&self) -> usize {
        self.background.len()
    }

    /// Begins shutdown (if not yet) and waits for upgraded connections, then background tasks,
    /// each within a bound; whatever is left after that is abandoned with a warning.
    pub async fn finish(&self) {
        self.begin_shutdown();
        self.connections.close();
        self.background.close();
        // Connection tasks drop themselves after CLOSE_GRACE; the margin is for their last write.
        if tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), self.connections.wait()).await.is_err() {
            tracing::warn!("{} connections did not close in time", self.connections.len());
        }
        if tokio::time::timeout(BACKGROUND_GRACE, self.background.wait()).await.is_err() {
            tracing::warn!("{} background tasks did not stop in time", self.background.len());
        }
    }
}

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM (or the caller's own stop future).
    Signal,
    /// `--idle-timeout-seconds` passed with nothing happening.
    Idle(Duration),
}

/// Serves `state` on `listener` until `signal` resolves or the idle timeout passes, then shuts
/// down in order (see the module docs). Returns why it stopped; both reasons are a clean exit.
pub async fn run(
    state: AppState,
    listener: Listener,
    tls: Option<Arc<ServerConfig>>,
    signal: impl Future<Output = ()> + Send,
) -> Stop {
    let lifecycle = state.lifecycle.clone();
    lifecycle.spawn("heartbeat", |t| state.heart.clone().run(t));
    lifecycle.spawn("settings writer", |t| state.settings.clone().run(t));
    lifecycle.spawn("session maintenance", |t| maintain_sessions(state.auth.sessions.clone(), t));

    let mut stopped = None;
    let stop = async {
        let why = tokio::select! {
            _ = signal => Stop::Signal,
            t = idle(&state) => Stop::Idle(t),
        };
        match why {
            Stop::Signal => tracing::info!("Shutting down"),
            Stop::Idle(t) => tracing::warn!("Idle timeout of {} seconds exceeded", t.as_secs()),
        }
        lifecycle.begin_shutdown();
        stopped = Some(why);
    };
    let lane = Some(crate::proxy::lane::Lane::new(state.clone()));
    server::serve(listener, router(state.clone()), lane, tls, stop).await;
    lifecycle.finish().await;

    // Requests have finished: persist what they left behind.
    if let Err(e) = state.settings.flush().await {
        tracing::warn!("{e}");
    }
    if let Err(e) = state.auth.sessions.flush().await {
        tracing::warn!("{e}");
    }
    stopped.unwrap_or(Stop::Signal)
}

/// Resolves with the timeout once the server has been idle that long; never without one.
async fn idle(state: &AppState) -> Duration {
    match state.config.idle_timeout {
        Some(t) => {
            state.heart.idle(t).await;
            t
        }
        None => std::future::pending().await,
    }
}

/// Sessions record use lazily and expire quietly: now and then drop the expired ones and write
/// the rest out ([`run`] writes them once more at the end).
async fn maintain_sessions(sessions: Sessions, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SESSION_MAINTENANCE_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = sessions.prune().await {
            tracing::warn!("{e}");
        }
        if let Err(e) = sessions.flush().await {
            tracing::warn!("{e}");
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; the second exits the process at once, whatever
/// shutdown is still waiting for. (The watcher for it is the one task that is meant to outlive a
/// graceful shutdown.)
pub async fn first_signal(mut signals: server::Signals) {
    signals.recv().await;
    tokio::spawn(async move {
        signals.recv().await;
        tracing::warn!("Second signal: exiting immediately");
        std::process::exit(0);
    });
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::auth::session::MemoryStore;
    use crate::cli::{self, Config, Environment, Parsed};
    use crate::clock::TokioClock;
    use crate::heart::Heart;
    use crate::paths::Paths;
    use crate::settings::{Settings, UpdateCache};

    fn config(home: &Path, args: &[&str]) -> Config {
        let mut argv = vec!["--auth", "none", "--bind-addr", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let argv: Vec<String> = argv.into_iter().map(String::from).collect();
        let cli = cli::parse::parse_args(&argv, home).unwrap();
        let env: Environment = [("HOME", home.to_str().unwrap())].into_iter().collect();
        let paths = Paths::from_env(&env);
        cli::resolve(&cli, &Parsed::default(), &env, home, paths, home.join("config.yaml")).unwrap()
    }

    /// State on the tokio clock, so paused-time tests drive the idle timeout.
    async fn state_and_listener(home: &Path, args: &[&str]) -> (AppState, Listener) {
        let config = config(home, args);
        std::fs::create_dir_all(&config.user_data_dir).unwrap();
        let listener = Listener::bind(&config.listen).await.unwrap();
        // VS Code starts lazily, on the first request that needs it; these tests send none.
        let build = crate::vscode::build::Build {
            root: home.join("vscode"),
            node: home.join("node"),
            version: "1.0.0".into(),
            commit: "0000000".into(),
            quality: "stable".into(),
            code_server_version: None,
        };
        let mut state = AppState::new(config, Arc::new(MemoryStore::default()), build).unwrap();
        state.heart = Arc::new(Heart::new(Arc::new(TokioClock::new()), None));
        (state, listener)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_stops_the_server_cleanly() {
        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &["--idle-timeout-seconds", "61"]).await;
        // Something a request left behind, still inside the coalescing window at the end.
        state.settings.write(Settings {
            update: Some(UpdateCache { checked: 1, version: "1.0.0".into() }),
            ..Default::default()
        });

        let start = tokio::time::Instant::now();
        let stop = run(state.clone(), listener, None, std::future::pending()).await;
        assert_eq!(stop, Stop::Idle(Duration::from_secs(61)));
        assert_eq!(start.elapsed().as_secs(), 61, "nobody came: idle N seconds after start");
        assert_eq!(state.lifecycle.background_tasks(), 0, "no task outlives the run");
        assert!(state.lifecycle.is_shutting_down());
        assert_eq!(state.settings.get().update.unwrap().version, "1.0.0");
        assert!(state.settings.path().exists(), "settings were flushed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_connection_holds_off_the_idle_timeout() {
        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &["--idle-timeout-seconds", "61"]).await;
        // A browser tab: what the server parks on an upgraded connection (see the next test).
        let tab = state.heart.connection_guard();
        let server = tokio::spawn(run(state.clone(), listener, None, std::future::pending()));

        tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        assert!(!server.is_finished(), "an open tab keeps the server up");
        assert_eq!(state.heart.health().status, "alive", "and the heart beating");

        let closed = tokio::time::Instant::now();
        drop(tab);
        assert_eq!(server.await.unwrap(), Stop::Idle(Duration::from_secs(61)));
        assert_eq!(closed.elapsed().as_secs(), 61, "the countdown starts when the tab closes");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_upgraded_connections() {
        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &[]).await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(state.clone(), listener, None, async {
            let _ = stop_rx.await;
        }));

        // One connection that says goodbye when asked, one that never ends by itself.
        let (bye_tx, bye_rx) = tokio::sync::oneshot::channel();
        let polite = state.lifecycle.shutting_down();
        let guard = state.heart.connection_guard();
        tokio::spawn(state.lifecycle.connection(async move {
            let _guard = guard;
            polite.await;
            let _ = bye_tx.send("close frame sent");
        }));
        let guard = state.heart.connection_guard();
        tokio::spawn(state.lifecycle.connection(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }));
        tokio::task::yield_now().await;
        assert_eq!(state.lifecycle.open_connections(), 2);
        assert_eq!(state.heart.open_connections(), 2);

        stop_tx.send(()).unwrap();
        assert_eq!(server.await.unwrap(), Stop::Signal);
        assert_eq!(bye_rx.await.unwrap(), "close frame sent");
        assert_eq!(state.lifecycle.open_connections(), 0, "the stubborn one was dropped");
        assert_eq!(state.heart.open_connections(), 0, "and its guard released");
        assert_eq!(state.lifecycle.background_tasks(), 0);
    }

    /// Through the real server: a WebSocket, whoever serves it, counts as an open connection for
    /// exactly as long as its socket lives, and shutdown waits for it; `/healthz`'s does not count.
    #[tokio::test]
    async fn every_upgraded_connection_is_counted_by_the_server() {
        use axum::extract::ws::WebSocketUpgrade;
        use axum::routing::get;
        use futures_util::StreamExt;

        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &[]).await;
        let addr = listener.local_addr().unwrap();
        // A handler that knows nothing of hearts or lifecycles, like a proxy's splice.
        let app = axum::Router::new()
            .route(
                "/ws",
                get(|ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} })
                }),
            )
            .merge(crate::heart::routes())
            .layer(axum::middleware::from_fn_with_state(state.clone(), crate::heart::record_activity))
            .with_state(state.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, app, None, None, async {
            let _ = stop_rx.await;
        }));

        let connect = |path: &'static str| async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp).await.unwrap().0
        };
        let settle = |what: &'static str, cond: &dyn Fn() -> bool| {
            for _ in 0..2000 {
                if cond() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("timed out waiting for {what}");
        };

        let tab = connect("/ws").await;
        let monitor = connect("/healthz").await;
        // Parked before the 101 went out, so already visible.
        assert_eq!(state.heart.open_connections(), 1, "the tab counts, the monitor does not");
        assert_eq!(state.heart.health().status, "alive");
        // Both are waited for at shutdown (the monitor twice: its handler also wraps itself).
        let lifecycle = state.lifecycle.clone();
        tokio::task::spawn_blocking(move || settle("tracking", &|| lifecycle.open_connections() == 3)).await.unwrap();

        drop(tab);
        let heart = state.heart.clone();
        tokio::task::spawn_blocking(move || settle("the tab to close", &|| heart.open_connections() == 0))
            .await
            .unwrap();

        // Shutdown: the monitor's socket gets a Close frame and everything ends.
        stop_tx.send(()).unwrap();
        state.lifecycle.begin_shutdown();
        let mut monitor = monitor;
        loop {
            match monitor.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
        drop(monitor);
        server.await.unwrap();
        state.lifecycle.finish().await;
        assert_eq!(state.lifecycle.open_connections(), 0);
    }
}
