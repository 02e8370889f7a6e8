//! Who runs which VS Code server. A [`Workspace`] is one user's server and everything that is
//! theirs around it: their user-data and extensions directories, `coder.json`, the mint key, the
//! session registry `code-server FILE` talks to. [`Workspaces`] maps a user to theirs: started on
//! demand, one start at a time, restarted on crash or on request, stopped when idle and started
//! again on the next visit. Single-user mode is the registry with one entry, the owner's.
//!
//! Starting a server goes through a [`spawner::Spawner`] (a local child process today); which
//! front of a deployment starts it is the [`placement::Placement`]'s to say.

pub mod placement;
pub mod run_as;
pub mod spawner;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spawner::Spawner;
use supervisor::{Launch, NotReady, Supervisor};
use tokio_util::sync::CancellationToken;

use crate::identity::{Identity, UserId};
use crate::lifecycle::Lifecycle;
use crate::settings::SettingsStore;
use crate::vscode::build::Build;
use crate::vscode::{Dirs, Options};

/// Where a workspace keeps its things.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dirs: Dirs,
    /// The session registry's socket (`<user-data-dir>/code-server-ipc.sock`, or
    /// `--session-socket`).
    pub session_socket: PathBuf,
    /// The private directory for the server's socket (and, in single-user mode, the preload
    /// script).
    pub runtime_dir: PathBuf,
    /// Where the front keeps the workspace's own files (`coder.json`, the mint key): the
    /// user-data-dir in single-user mode; in multi-user mode a directory of the server's that
    /// the user cannot write in (so a user's symlink never makes us write elsewhere).
    pub front_dir: PathBuf,
    /// What a bare visit opens when nothing was opened before (the command line's paths; a
    /// user's `workspaces` directory).
    pub open: Vec<PathBuf>,
    /// As whom the server runs; `None`: as we do.
    pub run_as: Option<run_as::RunAs>,
}

/// One user's VS Code server and what is theirs around it.
pub struct Workspace {
    pub user: UserId,
    /// The user's name, for the log (the id where none was given).
    pub name: String,
    pub layout: Layout,
    /// `coder.json` in the user-data-dir.
    pub settings: Arc<SettingsStore>,
    supervisor: Arc<Supervisor>,
    mint_key: tokio::sync::OnceCell<[u8; 32]>,
    /// Unix ms of the last request that needed the server.
    last_used: AtomicU64,
    /// WebSockets open to the server (workbench windows).
    open: Arc<AtomicUsize>,
    /// What it uses, as last measured (multi-user mode's limits, the admin's view).
    pub usage: Mutex<Usage>,
    /// Unix ms when the running server was started (0: not running).
    started_at: AtomicU64,
}

/// A workspace's use of storage and memory, measured off the request path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes under the workspace's directories, and when that was measured (Unix ms).
    pub storage: Option<(u64, i64)>,
    /// Resident bytes of its processes at the last sample.
    pub memory: Option<u64>,
    /// Storage is over its quota: the next start is refused unless `start_anyway`.
    pub over_quota: bool,
    /// An admin let it start over its quota (once).
    pub start_anyway: bool,
}

impl Workspace {
    /// A workspace for `user` (nothing runs until it is needed). `options` and `build` are the
    /// deployment's; `layout` is the user's.
    pub fn new(
        user: UserId,
        layout: Layout,
        options: &Options,
        build: Build,
        spawner: Arc<dyn Spawner>,
        lifecycle: Lifecycle,
    ) -> Workspace {
        // A preload script another uid must read cannot stay in our private runtime dir.
        let preload = match &layout.run_as {
            None => layout.runtime_dir.join("preload.cjs"),
            Some(_) => layout.front_dir.join("preload.cjs"),
        };
        let launch = Launch {
            args: crate::vscode::server_args(options, &build, &layout.dirs),
            env: child_env(&layout, &build),
            runtime_dir: layout.runtime_dir.clone(),
            preload,
            run_as: layout.run_as.clone(),
            private_args: crate::vscode::private_args(options, &build),
            build,
        };
        Workspace {
            name: user.to_string(),
            user,
            settings: Arc::new(SettingsStore::open_in(&layout.front_dir)),
            layout,
            supervisor: Arc::new(Supervisor::new(launch, spawner, lifecycle)),
            mint_key: tokio::sync::OnceCell::new(),
            last_used: AtomicU64::new(crate::util::now_ms()),
            open: Arc::default(),
            usage: Mutex::default(),
            started_at: AtomicU64::new(0),
        }
    }

    /// Names the workspace's user in the log.
    pub fn named(mut self, name: &str) -> Workspace {
        self.name = name.to_string();
        self
    }

    pub fn build(&self) -> &Build {
        self.supervisor.build()
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// Starts the server unless it runs, and waits (at most `wait`) until it accepts
    /// connections; returns its socket.
    pub async fn ready(&self, wait: Duration) -> Result<PathBuf, NotReady> {
        // A request waiting for the server is using it: the idle reaper must not stop a server
        // that is slower to start than the idle timeout while someone waits for it.
        let _waiting = self.connection_guard();
        self.last_used.fetch_max(crate::util::now_ms(), Ordering::Relaxed);
        let ready = self.supervisor.ready(wait).await.map(|(socket, _)| socket);
        let now = crate::util::now_ms();
        self.last_used.fetch_max(now, Ordering::Relaxed);
        if ready.is_ok() {
            let _ = self.started_at.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        ready
    }

    /// Counts a request another front's workspace served for this user (forwarded by us): the
    /// registry tells that front, whose idle reaper counts it.
    pub fn mark_used(&self) {
        self.last_used.fetch_max(crate::util::now_ms(), Ordering::Relaxed);
    }

    /// Counts use seen elsewhere (another front forwarded a request here) at `at` (Unix ms).
    pub fn used_at(&self, at: u64) {
        self.last_used.fetch_max(at, Ordering::Relaxed);
    }

    /// Why the server may not start now (storage over its quota), unless it runs already or
    /// an admin let it.
    pub fn start_refused(&self) -> Option<String> {
        let usage = self.usage.lock().unwrap();
        if self.is_running() || !usage.over_quota || usage.start_anyway {
            return None;
        }
        let used = usage.storage.map_or(0, |(b, _)| b);
        Some(format!(
            "Your workspace uses {} MB, more than its storage quota allows, so it cannot start. Ask an admin to \
             raise the quota or to start it anyway, then remove files you no longer need.",
            used / 1_000_000
        ))
    }

    /// Unix ms when the running server started; `None` when it does not run.
    pub fn started_at(&self) -> Option<u64> {
        Some(self.started_at.load(Ordering::Relaxed)).filter(|t| *t > 0 && self.is_running())
    }

    /// Unix ms of the last request or open connection that needed the server.
    pub fn last_activity(&self) -> u64 {
        if self.open.load(Ordering::Relaxed) > 0 {
            return crate::util::now_ms();
        }
        self.last_used.load(Ordering::Relaxed)
    }

    /// Restarts the server in place, if it runs.
    pub fn hotswap(&self) -> bool {
        self.supervisor.hotswap()
    }

    /// Stops the server (its whole process group; running as an account of its own, every
    /// process of that account, detached or not); the next request starts it again.
    pub async fn stop(&self) {
        self.supervisor.stop().await;
        self.started_at.store(0, Ordering::Relaxed);
        self.usage.lock().unwrap().start_anyway = false;
        self.end_session().await;
    }

    /// Under os-user isolation, ends whatever of the user's still runs (a `nohup`ed job, a
    /// daemon started in the terminal): their workspace is their whole session.
    pub async fn end_session(&self) {
        if let Some(r) = &self.layout.run_as {
            let uid = r.uid;
            match tokio::task::spawn_blocking(move || run_as::kill_all_of(uid)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("Could not end uid {uid}'s processes: {e}"),
                Err(e) => tracing::warn!("Could not end uid {uid}'s processes: {e}"),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.supervisor.is_running()
    }

    /// Counts an open WebSocket to the server until the guard drops: the workspace is not idle
    /// while one is open.
    pub fn connection_guard(&self) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.open.clone())
    }

    /// How long nothing has needed the server (no request, no open WebSocket).
    pub fn idle_for(&self) -> Duration {
        if self.open.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(crate::util::now_ms().saturating_sub(self.last_used.load(Ordering::Relaxed)))
    }

    /// The 32 bytes the web client mixes into its secret-storage key (spec §3.10.3): random
    /// once, kept in the user-data-dir with mode 0600, the same for the life of the process.
    pub async fn mint_key(&self) -> std::io::Result<[u8; 32]> {
        let path = self.layout.front_dir.join("serve-web-key-half");
        self.mint_key
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
                    match std::fs::read(&path) {
                        Ok(bytes) if bytes.len() == 32 => Ok(bytes.try_into().expect("32 bytes")),
                        Ok(_) | Err(_) => {
                            let key = crate::util::random_bytes::<32>();
                            crate::util::atomic_write(&path, &key, 0o600)?;
                            Ok(key)
                        }
                    }
                })
                .await
                .map_err(std::io::Error::other)?
            })
            .await
            .copied()
    }
}

/// See [`Workspace::connection_guard`].
pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the child's environment gets besides ours: where its session registry is, and the Node
/// VS Code runs on as `NODE_EXEC_PATH` (as code-server's wrapper sets it). Terminals inherit
/// it, and `code-server FILE` typed into one runs VS Code's remote CLI
/// (`bin/remote-cli/code-server`), which starts with `$NODE_EXEC_PATH` and would otherwise look
/// for `<package>/lib/node`, which only code-server's own install has.
///
/// Running as a user's account, the child's environment is only this (see
/// [`spawner::LocalSpawner`]): who they are, where their home and shell are, and the few of ours
/// a terminal needs.
fn child_env(layout: &Layout, build: &Build) -> Vec<(String, String)> {
    let mut env = vec![
        ("CODE_SERVER_SESSION_SOCKET".into(), layout.session_socket.display().to_string()),
        ("NODE_EXEC_PATH".into(), build.node.display().to_string()),
    ];
    if let Some(r) = &layout.run_as {
        env.extend([
            ("HOME".into(), r.home.display().to_string()),
            ("USER".into(), r.name.clone()),
            ("LOGNAME".into(), r.name.clone()),
            ("SHELL".into(), r.shell.display().to_string()),
        ]);
    }
    env
}

/// A user's workspace could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    #[error("there is no workspace for {0}")]
    Unknown(UserId),
    /// The user database could not be asked (it answers again by itself).
    #[error("{0}")]
    Unavailable(String),
    /// The workspace cannot be set up (a uid, a directory); the message says why.
    #[error("{0}")]
    Setup(String),
}

/// Makes a workspace for a user seen for the first time (multi-user mode).
pub type Factory = Box<dyn Fn(Identity) -> Making + Send + Sync>;

/// A workspace being made.
pub type Making = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Workspace, WorkspaceError>> + Send>>;

/// The registry: a user's workspace, made on first need, once.
pub struct Workspaces {
    entries: Mutex<BTreeMap<UserId, Arc<tokio::sync::OnceCell<Arc<Workspace>>>>>,
    make: Option<Factory>,
}

impl Workspaces {
    fn with(entries: Vec<Arc<Workspace>>, make: Option<Factory>) -> Workspaces {
        let entries =
            entries.into_iter().map(|w| (w.user.clone(), Arc::new(tokio::sync::OnceCell::new_with(Some(w))))).collect();
        Workspaces { entries: Mutex::new(entries), make }
    }

    /// Single-user mode: the owner's workspace, and no other.
    pub fn single(owner: Workspace) -> Workspaces {
        Workspaces::with(vec![Arc::new(owner)], None)
    }

    /// A registry that makes each user's workspace with `make` when first needed.
    pub fn with_factory(make: Factory) -> Workspaces {
        Workspaces::with(vec![], Some(make))
    }

    /// `who`'s workspace, made if need be (concurrent first requests make it once).
    pub async fn get(&self, who: &Identity) -> Result<Arc<Workspace>, WorkspaceError> {
        let cell = {
            let mut entries = self.entries.lock().unwrap();
            match entries.get(&who.user) {
                Some(cell) => cell.clone(),
                None if self.make.is_none() => return Err(WorkspaceError::Unknown(who.user.clone())),
                None => entries.entry(who.user.clone()).or_default().clone(),
            }
        };
        let make = || async {
            let make = self.make.as_ref().ok_or_else(|| WorkspaceError::Unknown(who.user.clone()))?;
            make(who.clone()).await.map(Arc::new)
        };
        cell.get_or_try_init(make).await.cloned()
    }

    /// The workspace of `user` if it was made.
    pub fn made(&self, user: &UserId) -> Option<Arc<Workspace>> {
        self.entries.lock().unwrap().get(user).and_then(|c| c.get().cloned())
    }

    /// Every workspace made so far.
    pub fn all(&self) -> Vec<Arc<Workspace>> {
        self.entries.lock().unwrap().values().filter_map(|c| c.get().cloned()).collect()
    }

    /// Restarts every running server in place; returns how many were.
    pub fn hotswap_all(&self) -> usize {
        self.all().iter().filter(|w| w.hotswap()).count()
    }

    /// Stops the servers nothing has needed for `idle`, now and then, until `stop`.
    pub async fn stop_idle(self: Arc<Self>, idle: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            for w in self.all() {
                if w.is_running() && w.idle_for() >= idle {
                    tracing::info!("Stopping {}'s VS Code: idle for {}s", w.name, w.idle_for().as_secs());
                    w.stop().await;
                }
            }
        }
    }
}

/// Restarts every VS Code server in place on SIGUSR1 or SIGUSR2, as code-server's wrapper does,
/// until `stop`.
pub async fn hotswap_on_signals(
    mut signals: crate::server::HotswapSignals,
    workspaces: Arc<Workspaces>,
    stop: CancellationToken,
) {
    loop {
        let name = tokio::select! {
            name = signals.recv() => name,
            _ = stop.cancelled() => return,
        };
        tracing::info!("Received {name}; hotswapping");
        if workspaces.hotswap_all() == 0 {
            tracing::info!("VS Code is not running yet; it starts on the next request that needs it");
        }
    }
}

/// The default session registry socket of a user-data-dir.
pub fn session_socket_in(user_data_dir: &Path) -> PathBuf {
    user_data_dir.join("code-server-ipc.sock")
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// The stand-in VS Code of the tests (`tests/fixtures/fake-vscode`), run on the `node` on
    /// PATH.
    fn fake_build() -> Option<Build> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-vscode");
        let path = std::env::var_os("PATH")?;
        let node = std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file())?;
        Some(Build {
            root,
            node,
            version: "1.0.0-fake".into(),
            commit: "fa4ecafe00000000000000000000000000000000".into(),
            quality: "stable".into(),
            code_server_version: None,
        })
    }

    fn workspace(dir: &Path, build: Build, lifecycle: &Lifecycle) -> Workspace {
        let layout = Layout {
            dirs: Dirs { user_data: dir.join("data"), extensions: dir.join("data/extensions") },
            session_socket: dir.join("data/ipc.sock"),
            runtime_dir: dir.join("run"),
            front_dir: dir.join("data"),
            open: vec![],
            run_as: None,
        };
        Workspace::new(
            UserId::owner(),
            layout,
            &Options::default(),
            build,
            Arc::new(spawner::LocalSpawner),
            lifecycle.clone(),
        )
    }

    fn group_alive(pgid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(-pgid, 0) == 0 }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_workspace_is_stopped_and_comes_back() {
        let build = fake_build().expect("the workspace tests need node on PATH");
        let dir = tempfile::tempdir().unwrap();
        let lifecycle = Lifecycle::new();
        let registry = Arc::new(Workspaces::single(workspace(dir.path(), build, &lifecycle)));
        let w = registry.made(&UserId::owner()).unwrap();
        assert!(!w.is_running(), "nothing runs until it is needed");
        w.ready(Duration::from_secs(30)).await.unwrap();
        let pgid = w.supervisor().pid().unwrap();
        assert!(group_alive(pgid));

        let reaper = tokio::spawn(registry.clone().stop_idle(Duration::from_millis(300), lifecycle.token()));
        // In use (a WebSocket open): not stopped.
        let guard = w.connection_guard();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(w.is_running() && group_alive(pgid), "an open window keeps it");
        drop(guard);
        for _ in 0..100 {
            if !w.is_running() && !group_alive(pgid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!w.is_running() && !group_alive(pgid), "idle past the timeout: stopped, its processes gone");
        // The next visit starts it again.
        w.ready(Duration::from_secs(30)).await.unwrap();
        assert!(w.is_running());
        assert_ne!(w.supervisor().pid(), Some(pgid));
        lifecycle.begin_shutdown();
        reaper.await.unwrap();
        lifecycle.finish().await;
        assert!(!group_alive(w.supervisor().pid().unwrap_or(pgid)));
    }

    #[test]
    fn a_single_registry_knows_only_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let build = fake_build().expect("the workspace tests need node on PATH");
        let registry = Workspaces::single(workspace(dir.path(), build, &Lifecycle::new()));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(registry.get(&Identity::owner("me", None))).is_ok());
        let someone = Identity { user: UserId::new("someone"), ..Identity::owner("someone", None) };
        assert_eq!(rt.block_on(registry.get(&someone)).err(), Some(WorkspaceError::Unknown(UserId::new("someone"))));
    }
}
