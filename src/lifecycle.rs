//! From start-up to a clean exit: background tasks, upgraded connections, the reasons to stop,
//! and the order in which things shut down.
//!
//! [`Lifecycle`] is one `CancellationToken` (cancelled when shutdown begins) and two
//! `TaskTracker`s: one for background tasks (heartbeat, settings writer, session pruning, and
//! later the VS Code supervisor), one for upgraded connections (WebSockets), which hyper's
//! graceful shutdown cannot see once they leave HTTP. `crate::app::run` is the whole
//! choreography:
//!
//! 1. a stop arrives: the first SIGINT/SIGTERM, or the idle timeout;
//! 2. the listener closes and in-flight HTTP requests get [`crate::server::SHUTDOWN_GRACE`] to
//!    finish (hyper's graceful shutdown); at the same moment the token is cancelled, so
//!    WebSocket tasks close (a Close frame where we speak WebSocket, a dropped socket where we
//!    only splice bytes) and background tasks stop;
//! 3. upgraded connections and background tasks are awaited, each with a bound;
//! 4. what requests left behind is persisted: settings, then sessions.
//!
//! Nothing spawned through here outlives it. A second signal exits at once (see
//! [`first_signal`]).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::server;

/// After shutdown begins, an upgraded connection gets this long to finish on its own (say
/// goodbye with a Close frame) before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Background tasks get this long to stop once cancelled (the VS Code supervisor needs up to
/// its own 5 s grace to stop the child's process group).
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(8);

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

    /// [`Lifecycle::spawn`], returning the task's handle (to wait for it to stop).
    pub fn spawn_handle<F, Fut>(&self, name: &'static str, task: F) -> tokio::task::JoinHandle<()>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = task(self.token());
        self.background.spawn(async move {
            fut.await;
            tracing::debug!("{name} stopped");
        })
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
