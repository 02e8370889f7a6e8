//! The shared workspace registry (several fronts, one deployment; MULTIUSER.md, "Scale"): which
//! front runs each user's workspace, kept in the user database, so that any front serves any
//! user.
//!
//! * **One start wins.** A front that needs a user's workspace claims its row; the user id is
//!   the row's primary key, so of any number of fronts claiming at once exactly one inserts it.
//!   That front starts the workspace and writes its address (`unix:/path` of its VS Code
//!   server's socket) into the row; every other front forwards there, waiting while the row
//!   says `starting`. A front serves a workspace only while it holds the row: a row gone (an
//!   admin stopped the workspace through another front, or this front was taken for dead)
//!   stops the workspace here.
//! * **Liveness.** Every front heartbeats its row every [`HEARTBEAT_EVERY`]. A front whose
//!   heartbeat is older than [`FRONT_STALE_AFTER`], or whose process is seen gone on this host,
//!   is taken for dead: its rows are reclaimed (what is left of its workspaces on this host is
//!   ended) and the user's next request starts the workspace on a live front. A front that
//!   learns it was taken for dead stops what it ran and registers again. After the database
//!   was unreachable, every heartbeat has lapsed: no front is taken for dead by its heartbeat
//!   until the others have had [`FRONT_STALE_AFTER`] to heartbeat again.
//! * **Activity.** Requests forwarded to another front's workspace are recorded in its row;
//!   the front that runs it reads them back, so its idle reaper counts them.
//! * **Handover.** At SIGTERM a front stops its workspaces and then removes its rows
//!   ([`Registry::retire`]): the users' next requests start them on another front.
//!
//! The session registry socket (`code-server FILE` in a user's terminal) is served by the front
//! that holds the user's row, and only while it does.
//!
//! Addresses are Unix sockets, so fronts forward to workspaces on their own host; a workspace on
//! another host needs a network address, which the Kubernetes spawner of `docs/kubernetes.md`
//! would give (a pod's service).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identity::UserId;
use crate::lifecycle::Lifecycle;
use crate::multiuser::config::Isolation;
use crate::multiuser::store::{FrontRecord, StoreError, UserStore, WorkspaceRecord};
use crate::workspaces::placement::{NotPlaced, Placement, Served};
use crate::workspaces::supervisor::NotReady;
use crate::workspaces::{Workspace, Workspaces};

/// How often a front heartbeats, reads its rows back and reclaims dead fronts' rows.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
/// A front that has not heartbeated for this long is taken for dead.
pub const FRONT_STALE_AFTER: Duration = Duration::from_secs(30);
/// How often a request waiting for a workspace another front is starting looks again.
const STARTING_POLL: Duration = Duration::from_millis(200);
/// How long a front forwards to where another front's workspace was found without asking the
/// registry again. A workspace that moved meanwhile refuses the connection, and the refusal
/// makes the next request ask ([`Placement::refused`]).
const LOCATED_FOR: Duration = Duration::from_secs(1);
/// A row held for a workspace that does not run is given up after this (the claim and the
/// start are not one step; a start in progress is never mistaken for a stop).
const RELEASE_AFTER: Duration = Duration::from_secs(5);

/// This front's view of the registry.
pub struct Registry {
    store: Arc<dyn UserStore>,
    /// This front's row (its heartbeat aside).
    me: FrontRecord,
    isolation: Isolation,
    lifecycle: Lifecycle,
    /// The users whose rows this front holds.
    held: Mutex<HashMap<UserId, Held>>,
    /// When this front last could not reach the database. Every front's heartbeat stops during
    /// an outage, so for [`FRONT_STALE_AFTER`] after it a lapsed heartbeat proves nothing: the
    /// other fronts are given that long to heartbeat again before any is taken for dead.
    unreachable_at: Mutex<Option<Instant>>,
    /// Where other fronts' workspaces were found lately (see [`LOCATED_FOR`]).
    located: Mutex<HashMap<UserId, (PathBuf, Instant)>>,
    /// Rows of ours that nobody here held at the last heartbeat.
    orphans: Mutex<std::collections::HashSet<UserId>>,
}

/// A row this front holds.
struct Held {
    since: Instant,
    /// The address written into the row.
    published: Option<PathBuf>,
    /// Stops the user's session registry socket.
    session_registry: CancellationToken,
}

fn unavailable(e: StoreError) -> NotPlaced {
    NotPlaced::Unavailable(e.to_string())
}

fn now_ms() -> i64 {
    crate::util::now_ms() as i64
}

/// The address a row gives for a socket on this host.
fn unix_address(socket: &Path) -> String {
    format!("unix:{}", socket.display())
}

/// This host as the registry names it: its name, as the kernel has it, and the PID namespace
/// we run in. Fronts in different PID namespaces (containers sharing a hostname) cannot see
/// each other's processes, so they are told apart as hosts: none takes another's pid for gone.
fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    match std::fs::read_link("/proc/self/ns/pid") {
        Ok(ns) => format!("{name} ({})", ns.display()),
        Err(_) => name,
    }
}

/// Whether a live process has this pid here (a zombie, killed and not yet reaped, is not).
fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last parenthesis (comm may hold any).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|s| !matches!(s, 'Z' | 'X')),
        Err(_) => false,
    }
}

/// Ends what is left of a reclaimed VS Code server's process group on this host, if that group
/// still is one (its leader runs VS Code's server: a pid taken by something else since is left
/// alone).
#[allow(unsafe_code)]
fn end_group(pgid: i32) {
    let cmdline = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap_or_default();
    if pgid > 1 && cmdline.windows(b"server-main.js".len()).any(|w| w == b"server-main.js") {
        // SAFETY: a plain kill(2) of a process group we checked is a VS Code server's.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

impl Registry {
    /// This front's view (a fresh id per process start); [`Registry::register`] enters it.
    pub fn new(store: Arc<dyn UserStore>, isolation: Isolation, lifecycle: Lifecycle) -> Registry {
        let now = now_ms();
        let me = FrontRecord {
            id: crate::util::random_hex(12),
            host: host(),
            pid: std::process::id(),
            started_at: now,
            heartbeat_at: now,
        };
        Registry {
            store,
            me,
            isolation,
            lifecycle,
            held: Mutex::default(),
            unreachable_at: Mutex::default(),
            located: Mutex::default(),
            orphans: Mutex::default(),
        }
    }

    /// Enters this front into the registry (before it serves; again whenever it finds itself
    /// taken for dead).
    pub async fn register(&self) -> Result<(), StoreError> {
        self.store.register_front(&FrontRecord { heartbeat_at: now_ms(), ..self.me.clone() }).await?;
        tracing::info!("Front {} on {} is in the workspace registry", self.me.id, self.me.host);
        Ok(())
    }

    fn holds(&self, user: &UserId) -> bool {
        self.held.lock().unwrap().contains_key(user)
    }

    /// Takes the workspace on as this front's: serves its session registry.
    fn hold(&self, w: &Workspace) {
        let mut held = self.held.lock().unwrap();
        if let Some(h) = held.get_mut(&w.user) {
            h.since = Instant::now();
            return;
        }
        let stop = CancellationToken::new();
        let (path, account) = (w.layout.session_socket.clone(), w.layout.run_as.as_ref().map(|r| (r.uid, r.gid)));
        let done = stop.clone();
        self.lifecycle.spawn("session registry", move |t| {
            crate::session_socket::serve(path, account, async move {
                tokio::select! {
                    _ = t.cancelled() => {}
                    _ = done.cancelled() => {}
                }
            })
        });
        held.insert(w.user.clone(), Held { since: Instant::now(), published: None, session_registry: stop });
    }

    /// No longer this front's (its row was given up or taken).
    fn let_go(&self, user: &UserId) {
        if let Some(h) = self.held.lock().unwrap().remove(user) {
            h.session_registry.cancel();
        }
    }

    /// Gives the row up.
    async fn release(&self, user: &UserId) -> Result<(), StoreError> {
        self.let_go(user);
        self.store.release_workspace(user.as_str(), &self.me.id).await.map(drop)
    }

    /// Writes the running server's address into our row unless it is there already; false
    /// when the row is no longer ours.
    async fn publish(&self, w: &Workspace, socket: &Path) -> Result<bool, StoreError> {
        let known = self.held.lock().unwrap().get(&w.user).and_then(|h| h.published.clone());
        if known.as_deref() == Some(socket) {
            return Ok(true);
        }
        let pgid = w.supervisor().pid();
        if !self.store.workspace_running(w.user.as_str(), &self.me.id, &unix_address(socket), pgid).await? {
            return Ok(false);
        }
        if let Some(h) = self.held.lock().unwrap().get_mut(&w.user) {
            h.published = Some(socket.to_path_buf());
        }
        Ok(true)
    }

    /// Heartbeats older than this are lapsed; while the database was away lately, none is (see
    /// [`Registry::unreachable_at`]): only fronts taken for dead by name (heartbeat 0) are.
    fn stale_before(&self) -> i64 {
        let recovering = self.unreachable_at.lock().unwrap().is_some_and(|t| t.elapsed() < FRONT_STALE_AFTER);
        if recovering { 1 } else { now_ms() - FRONT_STALE_AFTER.as_millis() as i64 }
    }

    /// Whether `front` is to be taken for dead: no heartbeat for [`FRONT_STALE_AFTER`], or,
    /// on this host, its process gone.
    fn is_dead(&self, front: &FrontRecord) -> bool {
        front.heartbeat_at < self.stale_before() || (front.host == self.me.host && !process_exists(front.pid))
    }

    /// Reclaims the rows of dead fronts; ends what is left of their workspaces on this host.
    async fn reclaim(&self) -> Result<(), StoreError> {
        let rows = self.store.reclaim_fronts(self.stale_before()).await?;
        for row in rows {
            tracing::info!(
                "Reclaimed user {}'s workspace from front {}, which stopped answering",
                row.user_id,
                row.front_id
            );
            if row.host != self.me.host {
                continue;
            }
            self.end_leftovers(&row).await;
        }
        Ok(())
    }

    /// A dead front's workspace on this host: its VS Code server's group (which normally
    /// follows its front), and under os-user isolation everything of the user's uid.
    async fn end_leftovers(&self, row: &WorkspaceRecord) {
        if let Some(pgid) = row.pgid {
            end_group(pgid);
        }
        if self.isolation != Isolation::OsUser {
            return;
        }
        if let Ok(Some(user)) = self.store.user_by_id(&row.user_id).await
            && let Some(uid) = user.os_uid.filter(|u| *u != 0)
        {
            match tokio::task::spawn_blocking(move || crate::workspaces::run_as::kill_all_of(uid)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("Could not end uid {uid}'s processes: {e}"),
                Err(e) => tracing::warn!("Could not end uid {uid}'s processes: {e}"),
            }
        }
    }

    /// Starts the workspace here, its row being ours; `None` when the row was taken meanwhile.
    async fn start_here(&self, w: &Arc<Workspace>, deadline: Instant) -> Result<Option<Served>, NotPlaced> {
        self.hold(w);
        if let Some(why) = w.start_refused() {
            self.release(&w.user).await.map_err(unavailable)?;
            return Err(NotPlaced::Refused(why));
        }
        // A start that outlasts the wait goes on; the row says `starting` meanwhile.
        let socket = w.ready(deadline.saturating_duration_since(Instant::now())).await?;
        if !self.publish(w, &socket).await.map_err(unavailable)? {
            tracing::warn!("{}'s workspace was taken over by another front; stopping it here", w.name);
            self.let_go(&w.user);
            w.stop().await;
            return Ok(None);
        }
        Ok(Some(Served { socket, here: true }))
    }

    /// Another front's row: where to forward, or `None` to look again (it is starting, or it
    /// was reclaimed just now).
    fn elsewhere(
        &self,
        w: &Workspace,
        row: &WorkspaceRecord,
        front: &FrontRecord,
    ) -> Result<Option<Served>, NotPlaced> {
        let Some(address) = &row.address else { return Ok(None) };
        let socket = match address.strip_prefix("unix:") {
            Some(path) if front.host == self.me.host => PathBuf::from(path),
            _ => {
                return Err(NotPlaced::Unreachable(format!(
                    "Your workspace runs on {} ({address}), which this front cannot reach",
                    front.host
                )));
            }
        };
        w.mark_used();
        self.located.lock().unwrap().insert(w.user.clone(), (socket.clone(), Instant::now()));
        Ok(Some(Served { socket, here: false }))
    }

    /// Where `user`'s workspace was found on another front within [`LOCATED_FOR`].
    fn located_lately(&self, user: &UserId) -> Option<PathBuf> {
        let mut located = self.located.lock().unwrap();
        match located.get(user) {
            Some((socket, at)) if at.elapsed() < LOCATED_FOR => Some(socket.clone()),
            Some(_) => {
                located.remove(user);
                None
            }
            None => None,
        }
    }

    /// The heartbeat and everything that goes with it, every [`HEARTBEAT_EVERY`] until `stop`.
    pub async fn maintain(self: Arc<Self>, workspaces: Arc<Workspaces>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        let mut last = crate::util::now_ms();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let now = crate::util::now_ms();
            if let Err(e) = self.tick(&workspaces, last).await {
                // The database is away: everything waits for the next tick.
                tracing::debug!("Workspace registry: {e}");
                *self.unreachable_at.lock().unwrap() = Some(Instant::now());
                continue;
            }
            last = now;
        }
    }

    async fn tick(&self, workspaces: &Workspaces, since: u64) -> Result<(), StoreError> {
        let now = now_ms();
        if !self.store.heartbeat_front(&self.me.id, now).await? {
            tracing::warn!(
                "This front was taken for dead (no heartbeat for {}s); stopping the workspaces it ran",
                FRONT_STALE_AFTER.as_secs()
            );
            let held: Vec<UserId> = self.held.lock().unwrap().keys().cloned().collect();
            for user in held {
                self.let_go(&user);
                if let Some(w) = workspaces.made(&user) {
                    w.stop().await;
                }
            }
            self.register().await?;
        }

        // Requests forwarded from here to other fronts' workspaces.
        let forwarded: Vec<String> = workspaces
            .all()
            .iter()
            .filter(|w| !self.holds(&w.user) && w.last_activity() > since)
            .map(|w| w.user.to_string())
            .collect();
        if !forwarded.is_empty() {
            self.store.touch_workspaces(&forwarded, now).await?;
        }

        // Our rows, as the registry has them (what we hold is seen first: a claim made after
        // this is held by then, or not among the rows).
        let held: Vec<(UserId, Instant)> =
            self.held.lock().unwrap().iter().map(|(u, h)| (u.clone(), h.since)).collect();
        let rows = self.store.workspaces_of_front(&self.me.id).await?;
        let mut ours: HashMap<UserId, WorkspaceRecord> =
            rows.into_iter().map(|r| (UserId::new(r.user_id.as_str()), r)).collect();
        for (user, since) in held {
            let w = workspaces.made(&user);
            let Some(row) = ours.remove(&user) else {
                // Given up by someone else (an admin's stop through another front).
                tracing::info!("{user}'s workspace was released through another front; stopping it here");
                self.let_go(&user);
                if let Some(w) = w {
                    w.stop().await;
                }
                continue;
            };
            let Some(w) = w else { continue };
            w.used_at(u64::try_from(row.last_activity_at).unwrap_or(0));
            if !w.is_running() {
                if since.elapsed() >= RELEASE_AFTER {
                    // Stopped here (idle, by an admin, a closed account): anyone may start it.
                    self.release(&user).await?;
                }
                continue;
            }
            // Restarted after a crash: its new socket.
            if let crate::workspaces::supervisor::State::Ready { socket, .. } = w.supervisor().state() {
                self.publish(&w, &socket).await?;
            }
        }
        // Rows of ours nobody here holds, at two heartbeats in a row (a claim being taken on
        // just now is held by the next): a claim whose request went away before it started.
        let seen_before = std::mem::take(&mut *self.orphans.lock().unwrap());
        for user in ours.into_keys().filter(|u| !self.holds(u)) {
            if seen_before.contains(&user) {
                self.store.release_workspace(user.as_str(), &self.me.id).await?;
            } else {
                self.orphans.lock().unwrap().insert(user);
            }
        }

        self.reclaim().await
    }

    /// Stops the user's workspace wherever it runs: here (the caller stops the local one), or
    /// on another front, by releasing its row (that front stops it at its next heartbeat).
    /// Whether another front had it.
    pub async fn stop_elsewhere(&self, user: &UserId) -> Result<bool, StoreError> {
        match self.store.workspace_of(user.as_str()).await? {
            Some((row, _)) if row.front_id != self.me.id => {
                self.store.release_workspace(user.as_str(), &row.front_id).await
            }
            _ => Ok(false),
        }
    }

    /// The rows other fronts hold, with their users' names (the admin's view).
    pub async fn held_by_others(&self) -> Result<Vec<(WorkspaceRecord, String)>, StoreError> {
        let mut out = Vec::new();
        for row in self.store.all_workspaces().await? {
            if row.front_id == self.me.id {
                continue;
            }
            let name = self.store.user_by_id(&row.user_id).await?.map_or_else(|| row.user_id.clone(), |u| u.username);
            out.push((row, name));
        }
        Ok(out)
    }

    /// At shutdown, after this front's workspaces stopped: its row and its workspaces' rows go,
    /// so the users' next requests start them on another front at once.
    pub async fn retire(&self) {
        let held: Vec<UserId> = self.held.lock().unwrap().keys().cloned().collect();
        for user in held {
            self.let_go(&user);
        }
        match self.store.retire_front(&self.me.id).await {
            Ok(()) => tracing::info!("Front {} left the workspace registry", self.me.id),
            Err(e) => tracing::warn!(
                "Could not leave the workspace registry ({e}); other fronts reclaim this front's workspaces in {}s",
                FRONT_STALE_AFTER.as_secs()
            ),
        }
    }
}

#[async_trait::async_trait]
impl Placement for Registry {
    async fn serve(&self, w: &Arc<Workspace>, wait: Duration) -> Result<Served, NotPlaced> {
        let deadline = Instant::now() + wait;
        // Ours and running: no database on this path.
        if self.holds(&w.user) && w.is_running() {
            let socket = w.ready(wait).await?;
            self.publish(w, &socket).await.map_err(unavailable)?;
            return Ok(Served { socket, here: true });
        }
        if let Some(socket) = self.located_lately(&w.user) {
            w.mark_used();
            return Ok(Served { socket, here: false });
        }
        let mut looked = 0;
        loop {
            if looked > 0 {
                if Instant::now() >= deadline {
                    return Err(NotReady::Starting.into());
                }
                // Once more at once (the row changed under us), then at a steady pace.
                if looked > 1 {
                    tokio::time::sleep(STARTING_POLL).await;
                }
            }
            looked += 1;
            match self.store.workspace_of(w.user.as_str()).await.map_err(unavailable)? {
                Some((row, front)) if row.front_id != self.me.id => {
                    if self.is_dead(&front) {
                        self.store.expire_front(&front.id).await.map_err(unavailable)?;
                        self.reclaim().await.map_err(unavailable)?;
                        continue;
                    }
                    if let Some(served) = self.elsewhere(w, &row, &front)? {
                        return Ok(served);
                    }
                }
                _ => {
                    let now = now_ms();
                    let claim = WorkspaceRecord {
                        user_id: w.user.to_string(),
                        front_id: self.me.id.clone(),
                        host: self.me.host.clone(),
                        address: None,
                        pgid: None,
                        started_at: now,
                        last_activity_at: now,
                    };
                    match self.store.claim_workspace(&claim).await {
                        Ok(row) if row.front_id == self.me.id => {
                            if let Some(served) = self.start_here(w, deadline).await? {
                                return Ok(served);
                            }
                            continue;
                        }
                        // Another front won: forward to it (looked up again at once).
                        Ok(_) | Err(StoreError::NotFound) => continue,
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
    }

    async fn refused(&self, w: &Workspace, served: &Served) {
        self.located.lock().unwrap().remove(&w.user);
        // Its front may have just died (seen at once on this host) or stopped it; or its server
        // is restarting, and its front publishes the new socket at its next heartbeat.
        if let Ok(Some((row, front))) = self.store.workspace_of(w.user.as_str()).await
            && row.address.as_deref() == Some(unix_address(&served.socket).as_str())
            && self.is_dead(&front)
        {
            let _ = self.store.expire_front(&front.id).await;
            let _ = self.reclaim().await;
            return;
        }
        tokio::time::sleep(STARTING_POLL).await;
    }
}
