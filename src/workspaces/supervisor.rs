//! One VS Code server child: started (through a [`Spawner`]) on a private Unix socket in its own
//! process group, watched for readiness, restarted with back-off when it dies, stopped as a
//! group, and started again when asked after a stop.
//!
//! Started lazily by the first request that needs VS Code (as code-server loads VS Code on the
//! first request to its router), so a server nobody opens costs no Node process.

// Unsafe code here only signals the child's process group; every block says why it is sound.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::spawner::Spawner;
use crate::lifecycle::Lifecycle;
use crate::vscode::build::Build;

/// VS Code prints this once it accepts connections; the source says not to change it.
const READY_LINE: &str = "Extension host agent listening on";
/// How long a start may take before we give up on it (slow disks, first run).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// After SIGTERM, how long the group has before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Restarts after a crash wait this long, doubling up to [`MAX_BACKOFF`] while the crashes go
/// on; a child that had run healthily for [`HEALTHY_RUN`] is restarted at once and the back-off
/// starts over. Back-off is for crash loops only.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Lines of output kept for error reports.
const RECENT_LINES: usize = 100;

/// Where the child is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started yet (nobody asked for VS Code).
    Idle,
    Starting,
    /// Accepting connections on `socket`; `generation` counts starts.
    Ready {
        socket: PathBuf,
        generation: u64,
    },
    /// Exited or failed to start; restarting after a back-off.
    Down {
        reason: String,
    },
    Stopped,
}

/// What we need to launch the child, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub build: Build,
    /// Arguments after `out/server-main.js`, except `--socket-path` (ours to choose).
    pub args: Vec<OsString>,
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
    /// Private directory for the socket (mode 0700; the account's, with `run_as`).
    pub runtime_dir: PathBuf,
    /// Where the preload script is written (see [`super::spawner`]).
    pub preload: PathBuf,
    /// As whom the server runs; `None`: as we do.
    pub run_as: Option<super::run_as::RunAs>,
    /// Arguments that carry secrets (`--github-auth=...`). They reach VS Code through a pipe
    /// read by a preload script, never through its command line (world-readable in `ps`) or its
    /// environment (inherited by every terminal and extension).
    pub private_args: Vec<crate::secret::Secret>,
}

pub struct Supervisor {
    launch: Launch,
    spawner: Arc<dyn Spawner>,
    /// Runs the watch as a background task, so shutdown stops it.
    lifecycle: Lifecycle,
    state: watch::Sender<State>,
    recent: Mutex<VecDeque<String>>,
    /// The running watch (its stop token and task), if any. Starts and stops take turns under
    /// this lock, so two watches never run at once.
    running: tokio::sync::Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    generation: AtomicU64,
    /// The current child's process group, for stopping it from any task.
    pgid: Mutex<Option<i32>>,
    /// The last child's pid (and group), for reports and tests.
    last_pid: std::sync::atomic::AtomicI32,
    /// Wakes the running child's watch to restart it (SIGUSR1, see [`Supervisor::hotswap`]).
    restart: tokio::sync::Notify,
}

/// How one life of the child ended.
struct Ended {
    reason: String,
    /// How long it had been ready when it ended (`None`: it never was).
    healthy_for: Option<Duration>,
    /// Restarted on request, not after a failure.
    requested: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("VS Code is still starting")]
    Starting,
    #[error("VS Code is restarting: {0}")]
    Down(String),
    #[error("the server is shutting down")]
    Stopped,
}

impl Supervisor {
    pub fn new(launch: Launch, spawner: Arc<dyn Spawner>, lifecycle: Lifecycle) -> Supervisor {
        Supervisor {
            launch,
            spawner,
            lifecycle,
            state: watch::Sender::new(State::Idle),
            recent: Mutex::new(VecDeque::new()),
            running: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            pgid: Mutex::new(None),
            last_pid: std::sync::atomic::AtomicI32::new(0),
            restart: tokio::sync::Notify::new(),
        }
    }

    /// Restarts VS Code's server in place (code-server's "hotswap" on SIGUSR1/SIGUSR2): the
    /// child's group is stopped and a new one started at once; our listener, sessions and proxied
    /// connections stay, and browser tabs reconnect to the new server. Returns false when VS Code
    /// has not been started yet (it starts on the next request that needs it).
    pub fn hotswap(&self) -> bool {
        if !self.is_running() {
            return false;
        }
        self.restart.notify_one();
        true
    }

    /// The last child started (its pid, which is also its process group).
    pub fn pid(&self) -> Option<i32> {
        Some(self.last_pid.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }

    /// Whether a watch is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.running.try_lock().map_or(true, |r| r.as_ref().is_some_and(|(t, h)| !t.is_cancelled() && !h.is_finished()))
    }

    /// Starts the watch unless it runs; returns at once.
    pub async fn ensure_started(self: &Arc<Self>) {
        let mut running = self.running.lock().await;
        if running.as_ref().is_some_and(|(t, h)| !t.is_cancelled() && !h.is_finished()) {
            return;
        }
        if self.lifecycle.is_shutting_down() {
            return;
        }
        let token = self.lifecycle.token();
        let me = self.clone();
        let watch = token.clone();
        let handle = self.lifecycle.spawn_handle("vscode supervisor", move |_| async move { me.run(watch).await });
        *running = Some((token, handle));
    }

    /// Stops the child's whole group and the watch, and waits for both; a later
    /// [`Supervisor::ready`] starts a new one.
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        if let Some((token, handle)) = running.take() {
            token.cancel();
            let _ = handle.await;
        }
        self.state.send_replace(State::Idle);
    }

    pub fn build(&self) -> &Build {
        &self.launch.build
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// The last lines VS Code printed (for error reports).
    pub fn recent_output(&self) -> Vec<String> {
        self.recent.lock().unwrap().iter().cloned().collect()
    }

    /// Starts the child unless it runs, and waits (at most `wait`) for it to accept
    /// connections; returns its socket.
    pub async fn ready(self: &Arc<Self>, wait: Duration) -> Result<(PathBuf, u64), NotReady> {
        self.ensure_started().await;
        self.wait_ready(wait).await
    }

    /// Waits (at most `wait`) for the child to accept connections; returns its socket.
    pub async fn wait_ready(&self, wait: Duration) -> Result<(PathBuf, u64), NotReady> {
        let mut rx = self.state.subscribe();
        let result = tokio::time::timeout(wait, async {
            loop {
                match &*rx.borrow_and_update() {
                    State::Ready { socket, generation } => return Ok((socket.clone(), *generation)),
                    State::Stopped => return Err(NotReady::Stopped),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(NotReady::Stopped);
                }
            }
        })
        .await;
        match result {
            Ok(r) => r,
            Err(_) => match self.state() {
                State::Down { reason } => Err(NotReady::Down(reason)),
                _ => Err(NotReady::Starting),
            },
        }
    }

    /// Supervises the child until `cancel`, then stops its process group.
    async fn run(&self, cancel: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let ended = self.run_once(&cancel).await;
            if cancel.is_cancelled() {
                break;
            }
            let reason = ended.reason;
            crate::metrics::vscode_ended(ended.requested);
            let delay = if ended.requested {
                tracing::info!("Restarting VS Code");
                Duration::ZERO
            } else {
                // A child that ran healthily for a while crashed once: restart it at once.
                let delay = if ended.healthy_for.is_some_and(|h| h >= HEALTHY_RUN) {
                    backoff = FIRST_BACKOFF;
                    Duration::ZERO
                } else {
                    let d = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    d
                };
                let tail = self.recent_output();
                let tail = tail[tail.len().saturating_sub(5)..].join("\n    ");
                tracing::warn!(
                    "VS Code server {reason}; restarting in {:.1}s. Last output:\n    {tail}",
                    delay.as_secs_f64()
                );
                delay
            };
            self.state.send_replace(State::Down { reason });
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.state.send_replace(State::Stopped);
    }

    /// One life of the child. Returns why it ended (unless cancelled, which stops it).
    async fn run_once(&self, cancel: &CancellationToken) -> Ended {
        let failed = |reason: String| Ended { reason, healthy_for: None, requested: false };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.state.send_replace(State::Starting);
        // The private directory for our sockets and the preload script, checked again (tmp
        // cleaners may have removed it since; someone else may have made it in its place).
        let dir = &self.launch.runtime_dir;
        let checked = match &self.launch.run_as {
            None => crate::private_dir::ensure(dir),
            Some(r) => crate::private_dir::ensure_owned_by(dir, r.uid, r.gid),
        };
        if let Err(e) = checked {
            return failed(format!("could not be started: {e}"));
        }
        let socket = dir.join(format!("vscode-{}-{generation}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let mut child = match self.spawner.spawn(&self.launch, &socket) {
            Ok(c) => c,
            Err(e) => return failed(format!("could not be started ({})", crate::errno::describe(&e))),
        };
        let pgid = child.id().map(|p| p as i32);
        *self.pgid.lock().unwrap() = pgid;
        self.last_pid.store(pgid.unwrap_or(0), Ordering::Relaxed);
        tracing::info!("Starting VS Code {} (pid {})", self.launch.build.version, pgid.unwrap_or(0));
        crate::metrics::vscode(crate::metrics::Vscode::Start);

        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return failed("started without output pipes".into());
        };
        let output = async {
            tokio::join!(
                self.read_output(Box::new(stdout), "stdout", ready_tx.clone()),
                self.read_output(Box::new(stderr), "stderr", ready_tx),
            )
        };
        tokio::pin!(output);

        let deadline = tokio::time::sleep(START_TIMEOUT);
        tokio::pin!(deadline);
        let (mut ready, mut output_done) = (false, false);
        let mut ready_since = None;
        enum Event {
            Cancelled,
            Restart,
            Exited(String),
            ReadyLine,
            TimedOut,
            OutputClosed,
        }
        let mut requested = false;
        let reason = loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => Event::Cancelled,
                _ = self.restart.notified() => Event::Restart,
                status = child.wait() => Event::Exited(match status {
                    Ok(s) => format!("exited ({s})"),
                    Err(e) => format!("could not be waited for ({e})"),
                }),
                Some(()) = ready_rx.recv(), if !ready => Event::ReadyLine,
                _ = &mut deadline, if !ready => Event::TimedOut,
                _ = &mut output, if !output_done => Event::OutputClosed,
            };
            match event {
                Event::Cancelled => {
                    self.stop_group(&mut child).await;
                    let _ = std::fs::remove_file(&socket);
                    return failed("stopped".into());
                }
                Event::Restart => {
                    requested = true;
                    break "restarted on request".to_string();
                }
                Event::Exited(reason) => break reason,
                Event::ReadyLine => {
                    ready = true;
                    // VS Code made it with whatever the umask gives; the directory is ours
                    // alone anyway, the socket now too. Not in a directory of another account's:
                    // they could put a symlink there, and a chmod by root follows it.
                    if self.launch.run_as.is_none() {
                        let _ = std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600));
                    }
                    match probe_version(&socket, self.launch.run_as.as_ref().map(|r| r.uid)).await {
                        Ok(commit) => {
                            tracing::info!("VS Code is ready (commit {commit})");
                            ready_since = Some(Instant::now());
                            self.state.send_replace(State::Ready { socket: socket.clone(), generation });
                        }
                        Err(e) => break format!("answered its readiness probe with an error ({e})"),
                    }
                }
                Event::TimedOut => break format!("did not start within {}s", START_TIMEOUT.as_secs()),
                Event::OutputClosed => output_done = true,
            }
        };
        // Whatever the child left running in its group (extension hosts, terminals) goes too.
        self.stop_group(&mut child).await;
        let _ = std::fs::remove_file(&socket);
        Ended { reason, healthy_for: ready_since.map(|t: Instant| t.elapsed()), requested }
    }

    /// Logs each line at debug, keeps the recent ones, and reports the readiness line.
    async fn read_output(
        &self,
        pipe: Box<dyn AsyncRead + Unpin + Send>,
        stream: &'static str,
        ready: tokio::sync::mpsc::Sender<()>,
    ) {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim().is_empty() {
                continue;
            }
            tracing::debug!("vscode {stream}: {line}");
            if line.contains(READY_LINE) {
                let _ = ready.try_send(());
            }
            let mut recent = self.recent.lock().unwrap();
            recent.push_back(line);
            if recent.len() > RECENT_LINES {
                recent.pop_front();
            }
        }
    }

    /// SIGTERM to the whole group, SIGKILL after [`STOP_GRACE`].
    async fn stop_group(&self, child: &mut tokio::process::Child) {
        let Some(pgid) = self.pgid.lock().unwrap().take() else { return };
        // SAFETY: plain syscalls on a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let exited = tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok();
        if !exited {
            tracing::warn!("VS Code did not stop within {}s; killing it", STOP_GRACE.as_secs());
        }
        // Stragglers in the group (the main process may be gone already).
        // SAFETY: a plain syscall on a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait().await;
    }
}

/// `GET /version` over the socket: VS Code answers with its commit once its server module is up.
async fn probe_version(socket: &Path, owner: Option<u32>) -> Result<String, ProbeError> {
    let req = axum::http::Request::get("/version").header("host", "localhost").body(axum::body::Body::empty());
    let res = crate::vscode::forward::send(socket, owner, req.expect("a fixed request is valid")).await?;
    if !res.status().is_success() {
        return Err(ProbeError::Status(res.status()));
    }
    let body = axum::body::to_bytes(res.into_body(), 1024).await.map_err(ProbeError::Body)?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// Why the readiness probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Forward(#[from] crate::vscode::forward::ForwardError),
    #[error("status {0}")]
    Status(axum::http::StatusCode),
    #[error("reading the answer: {0}")]
    Body(axum::Error),
}
