//! Each user's own workspace (multi-user mode): where it lives under the base path, as whom its
//! VS Code runs, and the registry's factory that makes it on the user's first request.
//!
//! ```text
//! base-path/                 root (the server's uid), 0711: others may pass, not list
//!   <user id>/               the server's, 0711: coder.json, the mint key, the preload
//!                            script, the session registry's socket (handed to the user)
//!     data/                  VS Code's user-data-dir       } the user's uid, 0700
//!     extensions/            their extensions              }
//!     workspaces/            the folder a first visit opens}
//!     home/                  $HOME of an allocated uid     }
//!     run/                   their server's socket         }
//! ```
//!
//! What the server writes for itself stays in a directory the user cannot write in, so no
//! symlink of theirs can ever point a write of ours elsewhere. With `directory` isolation
//! everything is the server's own uid's, and users are not kept apart.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::identity::{Identity, UserId};
use crate::lifecycle::Lifecycle;
use crate::multiuser::accounts::Accounts;
use crate::multiuser::config::{Isolation, MultiUserConfig};
use crate::multiuser::store::{StoreError, WorkspaceRecord};
use crate::vscode::build::Build;
use crate::vscode::{Dirs, Options};
use crate::workspaces::run_as::{self, RunAs};
use crate::workspaces::spawner::LocalSpawner;
use crate::workspaces::{Factory, Layout, Workspace, WorkspaceError};

/// Below this a system account is the operating system's (daemons, `nobody` aside), never a
/// person's: a user of that name does not get to run as it.
const FIRST_PERSONAL_UID: u32 = 1000;

/// What every user's workspace is made from.
pub struct UserWorkspaces {
    pub base: PathBuf,
    pub isolation: Isolation,
    pub uid_range: (u32, u32),
    pub system_accounts: bool,
    pub options: Options,
    pub build: Build,
    pub lifecycle: Lifecycle,
    pub accounts: Arc<Accounts>,
    /// `limits`: the storage quota is checked before a workspace's first start on this front.
    pub limits: crate::multiuser::limits::Limits,
}

impl UserWorkspaces {
    pub fn new(
        cfg: &MultiUserConfig,
        options: Options,
        build: Build,
        lifecycle: Lifecycle,
        accounts: Arc<Accounts>,
    ) -> Self {
        UserWorkspaces {
            base: cfg.base_path.clone(),
            isolation: cfg.isolation,
            uid_range: cfg.uid_range,
            system_accounts: cfg.system_accounts,
            options,
            build,
            lifecycle,
            accounts,
            limits: crate::multiuser::limits::Limits {
                memory_bytes: cfg.memory_limit_mb * 1_000_000,
                storage_bytes: cfg.storage_quota_mb * 1_000_000,
            },
        }
    }

    /// What must hold before anyone signs in: os-user isolation needs root, a base path and a
    /// VS Code build the users' accounts can reach. The error names the path in the way.
    pub fn check(&self) -> Result<(), String> {
        if self.isolation == Isolation::Directory {
            tracing::warn!(
                "multi-user.isolation.strategy is directory: every user's VS Code runs as this server's uid \
                 and users can read and change each other's files. This is no security boundary; use os-user \
                 (run as root) to keep users apart"
            );
            return Ok(());
        }
        if crate::private_dir::current_uid() != 0 {
            return Err("multi-user.isolation.strategy os-user needs the server to run as root (it starts each \
                        user's VS Code as their own uid); run as root, or choose directory isolation"
                .into());
        }
        let unreachable = |what: &str, e: run_as::NotReachable| {
            format!(
                "{what} must be usable by the users' accounts, but {e}. Give others read and enter access \
                 (chmod o+rX) or move it (for VS Code: provision it with --vscode-dir in a directory like \
                 /opt/code-server/vscode)"
            )
        };
        let vscode = self.build.root.join("out/server-main.js");
        run_as::reachable_by_others(&vscode, false)
            .map_err(|e| unreachable(&format!("VS Code's build at {}", self.build.root.display()), e))?;
        run_as::reachable_by_others(&self.build.node, true)
            .map_err(|e| unreachable(&format!("VS Code's node at {}", self.build.node.display()), e))?;
        // Made on the first user's first visit; what exists of it now must let them through.
        run_as::reachable_by_others(&self.base, false)
            .map_err(|e| unreachable(&format!("multi-user.isolation.base-path {}", self.base.display()), e))?;
        Ok(())
    }

    /// The registry's factory.
    pub fn factory(self: Arc<Self>) -> Factory {
        Box::new(move |who: Identity| {
            let this = self.clone();
            Box::pin(async move { this.make(who).await })
        })
    }

    /// The user's layout, as whom their server runs, and their directories made: what a
    /// workspace is made from, and what the extension CLI runs in (`--for-user`).
    pub async fn layout_for(&self, who: &Identity) -> Result<Layout, WorkspaceError> {
        let root = self.base.join(who.user.as_str());
        let run_as = match self.isolation {
            Isolation::Directory => None,
            Isolation::OsUser => Some(self.run_as(who, &root).await?),
        };
        let layout = layout(&root, run_as);
        let prepared = layout.clone();
        let base = self.base.clone();
        tokio::task::spawn_blocking(move || prepare(&base, &prepared))
            .await
            .map_err(|e| WorkspaceError::Setup(e.to_string()))?
            .map_err(|e| WorkspaceError::Setup(format!("{}'s directories: {e}", who.name)))?;
        Ok(layout)
    }

    async fn make(&self, who: Identity) -> Result<Workspace, WorkspaceError> {
        let layout = self.layout_for(&who).await?;
        let root = layout.front_dir.clone();
        if let Some(r) = &layout.run_as {
            tracing::info!("{}'s VS Code runs as uid {} in {}", who.name, r.uid, root.display());
        }
        let workspace = Workspace::new(
            UserId::new(who.user.as_str()),
            layout,
            &self.options,
            self.build.clone(),
            Arc::new(LocalSpawner),
            self.lifecycle.clone(),
        )
        .named(&who.name);
        // Its storage is known before it can first start here: a front that just started, or
        // that never ran it (another front did), would otherwise start a workspace over its
        // quota before the limits task measured it.
        crate::multiuser::limits::measure_storage(&workspace, &self.limits, self.accounts.audit()).await;
        let settings = workspace.settings.clone();
        self.lifecycle.spawn("settings writer", |t| settings.run(t));
        // Its session registry is served by the front that runs it (see multiuser::registry).
        Ok(workspace)
    }

    /// The user's uid: theirs if they have one; else their system account's (where allowed);
    /// else a new one from the range.
    async fn run_as(&self, who: &Identity, root: &Path) -> Result<RunAs, WorkspaceError> {
        let store = self.accounts.store();
        let failed = |e: StoreError| match e {
            StoreError::Unavailable { .. } => WorkspaceError::Unavailable(e.to_string()),
            StoreError::Conflict(_) => WorkspaceError::Setup(format!(
                "no uid is left in multi-user.isolation.uid-range {}-{}",
                self.uid_range.0, self.uid_range.1
            )),
            e => WorkspaceError::Setup(e.to_string()),
        };
        let user = store
            .user_by_id(who.user.as_str())
            .await
            .map_err(failed)?
            .ok_or_else(|| WorkspaceError::Setup(format!("{} is no longer a user", who.name)))?;
        let account = if self.system_accounts { run_as::system_account(&user.username) } else { None }
            .filter(|a| a.uid >= FIRST_PERSONAL_UID);
        let uid = match (user.os_uid, &account) {
            (Some(uid), _) => uid,
            (None, Some(a)) => store.set_os_uid(&user.id, a.uid).await.map_err(failed)?,
            (None, None) => {
                let taken = |uid: u32| run_as::uid_has_account(uid);
                store
                    .allocate_os_uid(&user.id, self.uid_range, &taken, crate::util::now_ms() as i64)
                    .await
                    .map_err(failed)?
            }
        };
        if uid == 0 {
            return Err(WorkspaceError::Setup(format!("{} would run as root; refused", who.name)));
        }
        Ok(match account {
            Some(a) if a.uid == uid => RunAs::account(&a),
            _ => RunAs::allocated(uid, &user.username, root.join("home")),
        })
    }
}

/// A user's layout under `root` (`base-path/<user id>`).
fn layout(root: &Path, run_as: Option<RunAs>) -> Layout {
    Layout {
        dirs: Dirs { user_data: root.join("data"), extensions: root.join("extensions") },
        session_socket: root.join("code-server-ipc.sock"),
        runtime_dir: root.join("run"),
        front_dir: root.to_path_buf(),
        open: vec![root.join("workspaces")],
        run_as,
    }
}

/// Creates what the layout needs, each directory with its owner and mode (see the module
/// docs); existing ones are checked (and a user's handed to them if it was still ours).
fn prepare(base: &Path, layout: &Layout) -> Result<(), String> {
    prepare_shared_dir(base)?;
    let root = &layout.front_dir;
    let private = |dir: &Path| -> Result<(), String> {
        match &layout.run_as {
            Some(r) => crate::private_dir::ensure_owned_by(dir, r.uid, r.gid).map(drop),
            None => crate::private_dir::ensure(dir).map(drop),
        }
        .map_err(|e| e.to_string())
    };
    match &layout.run_as {
        // Ours; others pass through to their own directories inside.
        Some(_) => prepare_shared_dir(root)?,
        None => crate::private_dir::ensure(root).map(drop).map_err(|e| e.to_string())?,
    }
    let home = layout.run_as.as_ref().map(|r| r.home.clone()).filter(|h| h.starts_with(root));
    for dir in [&layout.dirs.user_data, &layout.dirs.extensions, &layout.runtime_dir]
        .into_iter()
        .chain(&layout.open)
        .chain(home.as_ref())
    {
        private(dir)?;
    }
    Ok(())
}

/// A directory of ours that other accounts may pass through but not list or change: mode
/// 0711, owned by us, not a symlink.
fn prepare_shared_dir(dir: &Path) -> Result<(), String> {
    let describe = |e: std::io::Error| format!("{}: {}", dir.display(), crate::errno::describe(&e));
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(dir).map_err(describe)?;
    let meta = std::fs::symlink_metadata(dir).map_err(describe)?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != crate::private_dir::current_uid() {
        return Err(format!("{} belongs to uid {}, not to this server", dir.display(), meta.uid()));
    }
    if meta.mode() & 0o7777 != 0o711 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(describe)?;
    }
    Ok(())
}

/// Multi-user mode's port proxy rule: with os-user isolation a user reaches a port only when
/// every socket listening on it (where the proxy dials) is their uid's; with directory
/// isolation every process is the server's, so whose port it is cannot be told, and only
/// admins may use the proxy. A refusal is a 403 that says why, and an audit event.
pub struct PortOwnership {
    pub workspaces: Arc<crate::workspaces::Workspaces>,
    pub isolation: Isolation,
    pub audit: crate::multiuser::audit::Audit,
}

#[async_trait::async_trait]
impl crate::proxy::ports::PortGate for PortOwnership {
    async fn check(&self, who: &Identity, port: u16) -> Result<(), crate::error::AppError> {
        use crate::error::AppError;
        use axum::http::StatusCode;
        let refuse = |why: &'static str, message: String| {
            self.audit.record(
                crate::multiuser::audit::Event::new(crate::multiuser::audit::kind::PROXY_REFUSED, false)
                    .user(who.user.as_str(), &who.name)
                    .detail("port", port)
                    .detail("reason", why),
            );
            Err(AppError::new(StatusCode::FORBIDDEN, message))
        };
        let uid = match self.isolation {
            Isolation::Directory if who.is_admin() => return Ok(()),
            Isolation::Directory => {
                return refuse(
                    "directory isolation",
                    "The port proxy is for admins only on this server: with directory isolation every \
                     user's programs run as one account, so whose port it is cannot be told"
                        .into(),
                );
            }
            Isolation::OsUser => {
                let workspace = self.workspaces.get(who).await.map_err(|e| {
                    tracing::warn!("{}'s workspace: {e}", who.name);
                    AppError::new(StatusCode::SERVICE_UNAVAILABLE, "Your workspace is not available").retry_after(5)
                })?;
                match &workspace.layout.run_as {
                    Some(r) => r.uid,
                    None => return refuse("no uid", "Your workspace has no account of its own".into()),
                }
            }
        };
        let listeners = tokio::task::spawn_blocking(move || crate::proxy::ports::listeners(port))
            .await
            .map_err(AppError::internal)?
            .map_err(|e| AppError::internal(format!("reading the socket table: {e}")))?;
        // Nothing listening: the dial fails as it would anywhere (502).
        if listeners.iter().all(|owner| *owner == uid) {
            return Ok(());
        }
        refuse(
            "not the owner",
            format!("Port {port} is not yours: the proxy reaches only ports that your own programs listen on"),
        )
    }
}

/// The workspaces as the API and the admin page see them, with the limits they run under.
pub struct Fleet {
    pub workspaces: Arc<crate::workspaces::Workspaces>,
    /// Which front runs which workspace (an admin's stop reaches the front that runs it).
    pub registry: Option<Arc<crate::multiuser::registry::Registry>>,
    pub isolation: Isolation,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
}

/// One workspace, for a person to read.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    pub user_id: String,
    pub username: String,
    /// `running` or `stopped`.
    #[schema(value_type = String)]
    pub state: &'static str,
    /// Unix ms; `null` when stopped.
    pub started_at: Option<u64>,
    pub last_activity_at: u64,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
    pub over_quota: bool,
    /// The front that runs it, when another front of the deployment does (then memory is
    /// that front's to sample, and `null` here).
    pub front: Option<String>,
}

impl Fleet {
    pub fn view(w: &Workspace) -> WorkspaceView {
        let usage = w.usage.lock().unwrap().clone();
        let running = w.is_running();
        WorkspaceView {
            user_id: w.user.to_string(),
            username: w.name.clone(),
            state: if running { "running" } else { "stopped" },
            started_at: w.started_at(),
            last_activity_at: w.last_activity(),
            memory_bytes: usage.memory.filter(|_| running),
            storage_bytes: usage.storage.map(|(b, _)| b),
            over_quota: usage.over_quota,
            front: None,
        }
    }

    /// `local` (this front's view, if it made the workspace) with what another front's row
    /// says of it: running there, or starting.
    fn merged(local: Option<WorkspaceView>, row: &WorkspaceRecord, username: &str) -> WorkspaceView {
        let mut view = local.unwrap_or_else(|| WorkspaceView {
            user_id: row.user_id.clone(),
            username: username.to_string(),
            state: "stopped",
            started_at: None,
            last_activity_at: 0,
            memory_bytes: None,
            storage_bytes: None,
            over_quota: false,
            front: None,
        });
        if view.state == "running" {
            return view;
        }
        view.state = row.state();
        view.started_at = Some(u64::try_from(row.started_at).unwrap_or(0));
        view.last_activity_at = view.last_activity_at.max(u64::try_from(row.last_activity_at).unwrap_or(0));
        view.memory_bytes = None;
        view.front = Some(row.front_id.clone());
        view
    }

    /// What the other fronts run; nothing when the registry cannot be asked (the view is then
    /// this front's alone).
    async fn elsewhere(&self) -> Vec<(WorkspaceRecord, String)> {
        let Some(registry) = &self.registry else { return vec![] };
        registry.held_by_others().await.unwrap_or_else(|e| {
            tracing::debug!("The workspace registry: {e}");
            vec![]
        })
    }

    /// One user's workspace, wherever it runs; `None` when none was made and none runs.
    pub async fn view_of(&self, user: &UserId) -> Option<WorkspaceView> {
        let local = self.workspaces.made(user).map(|w| Fleet::view(&w));
        if local.as_ref().is_some_and(|v| v.state == "running") {
            return local;
        }
        match self.elsewhere().await.into_iter().find(|(row, _)| row.user_id == user.as_str()) {
            Some((row, name)) => Some(Fleet::merged(local, &row, &name)),
            None => local,
        }
    }

    /// Every workspace this front made since it started, and every one another front runs, by
    /// username.
    pub async fn list(&self) -> Vec<WorkspaceView> {
        let mut all: Vec<WorkspaceView> = self.workspaces.all().iter().map(|w| Fleet::view(w)).collect();
        for (row, name) in self.elsewhere().await {
            match all.iter().position(|v| v.user_id == row.user_id) {
                Some(i) => {
                    let local = all.swap_remove(i);
                    all.push(Fleet::merged(Some(local), &row, &name));
                }
                None => all.push(Fleet::merged(None, &row, &name)),
            }
        }
        all.sort_by(|a, b| a.username.cmp(&b.username));
        all
    }
}

/// How often running workspaces are checked against their accounts.
pub const ACCOUNT_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Stops the workspace of a user who was disabled or deleted, until `stop`: their sessions
/// are refused at once, but a terminal or editor WebSocket opened before stays open for as
/// long as its VS Code server runs. Checked against the user database itself, so a change
/// made anywhere (the API, the admin page, the command line, another front) is seen. A store
/// that cannot be read stops nothing.
pub async fn stop_for_closed_accounts(
    workspaces: Arc<crate::workspaces::Workspaces>,
    accounts: Arc<Accounts>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(ACCOUNT_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        for w in workspaces.all() {
            if !w.is_running() {
                continue;
            }
            let why = match accounts.store().user_by_id(w.user.as_str()).await {
                Ok(Some(user)) if user.active => continue,
                Ok(Some(_)) => "the account was disabled",
                Ok(None) => "the account was deleted",
                Err(_) => continue,
            };
            tracing::info!("Stopping {}'s VS Code: {why}", w.name);
            w.stop().await;
            accounts.audit().record(
                crate::multiuser::audit::Event::new(crate::multiuser::audit::kind::WORKSPACE_STOPPED, true)
                    .user(w.user.as_str(), &w.name)
                    .detail("by", why),
            );
        }
    }
}
