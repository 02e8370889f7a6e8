//! The user database behind one trait: accounts, API tokens, the audit log and (with
//! `session.store: database`) sessions. [`sqlite`] is the embedded default; [`postgres`] serves
//! several fronts. Both are one implementation ([`sql`]) over sqlx with each backend's own
//! migrations and dialect; callers see [`StoreError`], never a driver error.

pub mod postgres;
mod sql;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

pub use crate::identity::Role;

use super::sessions::SessionStore;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique value is taken: the field's name (`username`, `email`).
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The server cannot be reached (or timed out): a 503 to the client, retried by itself.
    #[error("{what} is unavailable: {detail}")]
    Unavailable { what: String, detail: String },
    /// Anything else: a bug or a broken database, logged and a 500.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// An account. `password_hash` is the Argon2id PHC string; it never leaves the server (the
/// API's views are built without it, see [`super::api`]).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub role: Role,
    pub active: bool,
    /// Unix ms, UTC.
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
    pub password_changed_at: i64,
    /// The uid the user's VS Code runs as (os-user isolation), once allocated.
    pub os_uid: Option<u32>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// `Some(None)` clears the email.
    pub email: Option<Option<String>>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub password_hash: Option<String>,
    pub last_login_at: Option<i64>,
}

/// A page of users, for the admin's list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// Matches part of the username or email (case-insensitive).
    pub search: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// A personal API token; only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub name: String,
    #[serde(skip)]
    pub token_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub id: String,
    /// Unix ms, UTC.
    pub at: i64,
    /// `login`, `logout`, `session.revoked`, `user.created`, ... (see [`super::audit`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// `success` or `failure`.
    pub status: String,
    /// The user the event is about.
    pub user_id: Option<String>,
    pub username: Option<String>,
    /// Who did it, when not the user themself (an admin, or `cli`).
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// More, as a JSON object.
    pub details: serde_json::Value,
}

/// Which audit records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Inclusive bounds, Unix ms.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Records strictly older than this `(at, id)`: the previous page's last.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// A front process of the deployment (several fronts, one database): it heartbeats its row,
/// and one whose heartbeat lapsed is taken for dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontRecord {
    /// Random per process start.
    pub id: String,
    /// The host it runs on (its hostname and PID namespace).
    pub host: String,
    pub pid: u32,
    /// Unix ms.
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// Where one user's workspace runs: their row of the shared workspace registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    pub user_id: String,
    /// The front that started it and owns it.
    pub front_id: String,
    /// That front's host (only there are its process groups ours to end).
    pub host: String,
    /// `None` while starting; then `unix:/path` of its VS Code server's socket.
    pub address: Option<String>,
    /// Its process group on that host, once running.
    pub pgid: Option<i32>,
    /// Unix ms.
    pub started_at: i64,
    /// The latest request any front forwarded to it (fronts write it now and then).
    pub last_activity_at: i64,
}

impl WorkspaceRecord {
    /// `starting` until it has an address, then `running`.
    pub fn state(&self) -> &'static str {
        if self.address.is_some() { "running" } else { "starting" }
    }
}

/// The user database.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// `postgres at host:5432/db` or `SQLite at /path`: for messages.
    fn describe(&self) -> String;
    /// Creates `user`; [`StoreError::Conflict`] when the username or email is taken.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// The users on one page (by username) and how many match in all.
    async fn list_users(&self, query: &UserQuery) -> Result<(Vec<User>, u64), StoreError>;
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// Active users with the admin role (the last of them cannot be removed or demoted).
    async fn count_active_admins(&self) -> Result<u64, StoreError>;
    /// The changed user; [`StoreError::NotFound`] when there is none.
    async fn update_user(&self, id: &str, change: &UserChange, now: i64) -> Result<User, StoreError>;
    /// Deletes the user with their tokens and stored sessions.
    async fn delete_user(&self, id: &str) -> Result<(), StoreError>;
    /// Gives the user a uid of `range` that no user ever had and `taken` (a system account's)
    /// does not claim, unless they have one: theirs either way. Fronts racing for the same uid
    /// cannot both win it (it is the key of `os_uids`); [`StoreError::Conflict`]`("uid")` when
    /// the range is used up.
    async fn allocate_os_uid(
        &self,
        user_id: &str,
        range: (u32, u32),
        taken: &(dyn Fn(u32) -> bool + Send + Sync),
        now: i64,
    ) -> Result<u32, StoreError>;
    /// Records `uid` (a system account's) as the user's, unless they have one: theirs either way.
    async fn set_os_uid(&self, user_id: &str, uid: u32) -> Result<u32, StoreError>;

    async fn create_token(&self, token: &ApiToken) -> Result<(), StoreError>;
    async fn tokens_of(&self, user_id: &str) -> Result<Vec<ApiToken>, StoreError>;
    /// The token with this hash, recording its use.
    async fn use_token(&self, token_hash: &str, now: i64) -> Result<Option<ApiToken>, StoreError>;
    /// Deletes `user_id`'s token `id`; false when they have none by that id.
    async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool, StoreError>;

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// Records this front (again, if it was taken for dead).
    async fn register_front(&self, front: &FrontRecord) -> Result<(), StoreError>;
    /// Renews the front's heartbeat; false when its row is gone (it was taken for dead and its
    /// workspaces reclaimed: whatever it still runs is no longer its to serve).
    async fn heartbeat_front(&self, front_id: &str, now: i64) -> Result<bool, StoreError>;
    /// Takes the front for dead at once (its process is seen gone): the next
    /// [`UserStore::reclaim_fronts`] reclaims it whatever its last heartbeat.
    async fn expire_front(&self, front_id: &str) -> Result<(), StoreError>;
    /// Removes the front and its workspaces' rows (a clean shutdown, after they stopped).
    async fn retire_front(&self, front_id: &str) -> Result<(), StoreError>;
    /// Removes the fronts whose heartbeat is older than `stale_before` and returns their
    /// workspaces' rows, now free for any front to start again.
    async fn reclaim_fronts(&self, stale_before: i64) -> Result<Vec<WorkspaceRecord>, StoreError>;
    /// Claims the user's workspace for `claim.front_id` unless a front has it; returns the row
    /// that stands, so the caller starts it when that row is its own and forwards otherwise.
    /// Of any number of concurrent claims, from any fronts, exactly one wins.
    /// [`StoreError::NotFound`] when the row that stood is already gone again (released or
    /// reclaimed in between): the caller claims again.
    async fn claim_workspace(&self, claim: &WorkspaceRecord) -> Result<WorkspaceRecord, StoreError>;
    /// The user's row, with the front that has it.
    async fn workspace_of(&self, user_id: &str) -> Result<Option<(WorkspaceRecord, FrontRecord)>, StoreError>;
    /// Marks the front's claimed workspace running at `address`; false when the claim is gone.
    async fn workspace_running(
        &self,
        user_id: &str,
        front_id: &str,
        address: &str,
        pgid: Option<i32>,
    ) -> Result<bool, StoreError>;
    /// Records activity on these users' workspaces (never moves it back).
    async fn touch_workspaces(&self, user_ids: &[String], now: i64) -> Result<(), StoreError>;
    /// The rows a front has.
    async fn workspaces_of_front(&self, front_id: &str) -> Result<Vec<WorkspaceRecord>, StoreError>;
    /// Every front's rows (the admin's view of the deployment).
    async fn all_workspaces(&self) -> Result<Vec<WorkspaceRecord>, StoreError>;
    /// Gives up the front's claim (its workspace stopped); false when it had none.
    async fn release_workspace(&self, user_id: &str, front_id: &str) -> Result<bool, StoreError>;

    /// This database as a session store.
    fn sessions(&self) -> std::sync::Arc<dyn SessionStore>;
    /// Closes the pool (at shutdown, after the last write).
    async fn close(&self);
}

/// Opens the configured database and runs its migrations.
pub async fn open(db: &super::config::Database) -> Result<std::sync::Arc<dyn UserStore>, StoreError> {
    Ok(match db {
        super::config::Database::Sqlite { path } => sqlite::open(path).await?,
        super::config::Database::Postgres(pg) => postgres::open(pg).await?,
    })
}
