//! The accounts service: every operation on users, their sessions and API tokens, with the
//! rules and the audit, in one place. The API, the admin and account pages, the CLI and
//! authentication all call it, so an action means the same wherever it comes from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;

use super::audit::{Audit, Event, kind};
use super::config::FirstAdmin;
use super::passwords::{Passwords, check_rules};
use super::sessions::{CACHE_FOR, SessionRecord, UserSessions};
use super::store::{ApiToken, AuditEvent, AuditQuery, Role, StoreError, User, UserChange, UserQuery, UserStore};
use crate::auth::{API_TOKEN_PREFIX, Directory, SignIn, SignInOutcome};
use crate::error::AppError;
use crate::identity::{Identity, UserId};
use crate::util::{hex, now_ms, random_bytes, sha256};

/// Longest username: what `useradd` accepts on Debian.
pub const MAX_USERNAME: usize = 32;
/// Names that are never an account: they are system accounts everywhere, or mean something to
/// us (`cli` is the audit's actor for the command line).
const RESERVED_NAMES: &[&str] = &["root", "cli", "daemon", "nobody", "bin", "sys"];

/// Why an account operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    /// Bad input: the field and what is wrong with it.
    Invalid {
        field: &'static str,
        message: String,
    },
    NotFound,
    /// A unique value is taken.
    Conflict(&'static str),
    /// The change would leave no active admin.
    LastAdmin,
    /// The current password given for a change is not the user's.
    WrongPassword,
    /// The user database or session store cannot be reached.
    Unavailable(String),
    /// A bug or a broken database (logged, never sent).
    Internal(String),
}

impl AccountError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> AccountError {
        AccountError::Invalid { field, message: message.into() }
    }
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountError::Invalid { field, message } => write!(f, "{field}: {message}"),
            AccountError::NotFound => f.write_str("no such user"),
            AccountError::Conflict(field) => write!(f, "{field}: already taken"),
            AccountError::LastAdmin => f.write_str("the last active admin cannot be removed, disabled or demoted"),
            AccountError::WrongPassword => f.write_str("current_password: incorrect"),
            AccountError::Unavailable(what) => write!(f, "{what}"),
            AccountError::Internal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AccountError {}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> AccountError {
        match e {
            StoreError::NotFound => AccountError::NotFound,
            StoreError::Conflict(field) => AccountError::Conflict(field),
            StoreError::Unavailable { .. } => AccountError::Unavailable(e.to_string()),
            StoreError::Other(e) => AccountError::Internal(e),
        }
    }
}

/// How long a client is told to wait when a store is down.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// An outage as the client sees it: a 503 without the server's address or the driver's words
/// (those go to the log, once per request).
pub fn unavailable(detail: &str) -> AppError {
    tracing::warn!("{detail}");
    AppError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: the user database is unreachable, retrying")
        .retry_after(RETRY_AFTER_SECONDS)
}

impl From<AccountError> for AppError {
    fn from(e: AccountError) -> AppError {
        match &e {
            AccountError::Invalid { .. } | AccountError::WrongPassword => {
                AppError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            AccountError::NotFound => AppError::new(StatusCode::NOT_FOUND, "Not Found"),
            AccountError::Conflict(_) | AccountError::LastAdmin => AppError::new(StatusCode::CONFLICT, e.to_string()),
            AccountError::Unavailable(detail) => unavailable(detail),
            AccountError::Internal(detail) => AppError::internal(detail),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        AccountError::from(e).into()
    }
}

/// Who is acting, for the audit: a signed-in user (from a request) or the command line.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `None` for the command line.
    pub user: Option<(String, String)>,
    pub ip: Option<IpAddr>,
}

impl Actor {
    pub fn cli() -> Actor {
        Actor { user: None, ip: None }
    }

    pub fn of(identity: &Identity, ip: Option<IpAddr>) -> Actor {
        Actor { user: Some((identity.user.to_string(), identity.name.clone())), ip }
    }

    fn name(&self) -> &str {
        self.user.as_ref().map_or("cli", |(_, name)| name.as_str())
    }

    fn is(&self, user_id: &str) -> bool {
        self.user.as_ref().is_some_and(|(id, _)| id == user_id)
    }

    fn ip(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }

    /// An event about `user` done by this actor.
    pub fn event(&self, kind: &'static str, user: &User) -> Event {
        let actor = (!self.is(&user.id)).then(|| self.name().to_string());
        Event::new(kind, true).user(&user.id, &user.username).actor(actor.as_deref()).ip(self.ip().as_deref())
    }
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub password: String,
    pub role: Role,
}

/// A change an admin makes to an account; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct AdminChange {
    pub email: Option<Option<String>>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub password: Option<String>,
}

/// A change a user makes to their own account: never their role or whether they are active.
#[derive(Debug, Clone, Default)]
pub struct OwnChange {
    pub email: Option<Option<String>>,
    /// The new password, with the current one.
    pub password: Option<(String, String)>,
}

/// The accounts service. Cheap to share; caches users for [`CACHE_FOR`] so a request does not
/// cost a database round trip, which bounds how long a disable takes to hold on other fronts.
pub struct Accounts {
    store: Arc<dyn UserStore>,
    sessions: Arc<UserSessions>,
    passwords: Passwords,
    audit: Audit,
    users: Mutex<HashMap<String, (User, Instant)>>,
}

fn now() -> i64 {
    now_ms() as i64
}

/// Checks (and normalises to lower case) a username: usable as an OS account name.
pub fn check_username(name: &str) -> Result<String, AccountError> {
    let name = name.trim().to_ascii_lowercase();
    let invalid = |m: &str| Err(AccountError::invalid("username", m));
    if name.is_empty() {
        return invalid("is required");
    }
    if name.len() > MAX_USERNAME {
        return invalid(&format!("must be at most {MAX_USERNAME} characters"));
    }
    let mut bytes = name.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_') {
        return invalid("must begin with a letter or an underscore");
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return invalid("may contain only letters a-z, digits, '_' and '-'");
    }
    if RESERVED_NAMES.contains(&name.as_str()) {
        return invalid("is reserved");
    }
    Ok(name)
}

/// Checks (and normalises to lower case) an email address. Deliberately loose: one `@`, a dot
/// in the domain, no spaces; whether it receives mail is not ours to say.
pub fn check_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_ascii_lowercase();
    let invalid = || Err(AccountError::invalid("email", "must be an address like name@example.com"));
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid();
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(email)
        }
        _ => invalid(),
    }
}

fn check_password(password: &str, username: &str) -> Result<(), AccountError> {
    check_rules(password, username).map_err(|rule| {
        let text = rule.to_string();
        AccountError::invalid("password", text.trim_start_matches("password: "))
    })
}

fn check_token_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AccountError::invalid("name", "must be 1 to 64 characters"));
    }
    Ok(name.to_string())
}

impl Accounts {
    pub fn new(store: Arc<dyn UserStore>, sessions: Arc<UserSessions>, audit: Audit) -> Accounts {
        Accounts { store, sessions, passwords: Passwords::new(), audit, users: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    pub fn sessions(&self) -> &Arc<UserSessions> {
        &self.sessions
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// A user by id, from the cache when it is fresh.
    async fn cached_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        if let Some((user, at)) = self.users.lock().unwrap().get(id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(Some(user.clone()));
        }
        let user = self.store.user_by_id(id).await?;
        let mut users = self.users.lock().unwrap();
        if users.len() > 10_000 {
            users.clear();
        }
        match &user {
            Some(u) => users.insert(id.to_string(), (u.clone(), Instant::now())),
            None => users.remove(id),
        };
        Ok(user)
    }

    fn forget_user(&self, id: &str) {
        self.users.lock().unwrap().remove(id);
    }

    fn identity(user: &User, session: Option<String>) -> Identity {
        Identity { user: UserId::new(user.id.as_str()), name: user.username.clone(), roles: vec![user.role], session }
    }

    pub async fn user(&self, id: &str) -> Result<User, AccountError> {
        self.store.user_by_id(id).await?.ok_or(AccountError::NotFound)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<User, AccountError> {
        let name = name.trim().to_ascii_lowercase();
        self.store.user_by_name(&name).await?.ok_or(AccountError::NotFound)
    }

    pub async fn list(&self, query: &UserQuery) -> Result<(Vec<User>, u64), AccountError> {
        Ok(self.store.list_users(query).await?)
    }

    /// Creates an account.
    pub async fn create(&self, new: NewUser, actor: &Actor) -> Result<User, AccountError> {
        let username = check_username(&new.username)?;
        let email = new.email.as_deref().map(check_email).transpose()?;
        check_password(&new.password, &username)?;
        let at = now();
        let user = User {
            id: hex(&random_bytes::<16>()),
            username,
            email,
            password_hash: self.passwords.hash(&new.password).await,
            role: new.role,
            active: true,
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
            os_uid: None,
        };
        self.store.create_user(&user).await?;
        self.audit.record(actor.event(kind::USER_CREATED, &user).detail("role", user.role.as_str()));
        Ok(user)
    }

    /// Refuses a change that would leave the server without an active admin.
    async fn keep_an_admin(&self, user: &User, stays_admin: bool) -> Result<(), AccountError> {
        if user.role == Role::Admin && user.active && !stays_admin && self.store.count_active_admins().await? <= 1 {
            return Err(AccountError::LastAdmin);
        }
        Ok(())
    }

    /// An admin's change to an account. Disabling it or setting its password revokes its
    /// sessions.
    pub async fn update(&self, id: &str, change: AdminChange, actor: &Actor) -> Result<User, AccountError> {
        let user = self.user(id).await?;
        let email = match &change.email {
            Some(Some(e)) => Some(Some(check_email(e)?)),
            Some(None) => Some(None),
            None => None,
        };
        if let Some(p) = &change.password {
            check_password(p, &user.username)?;
        }
        let role = change.role.unwrap_or(user.role);
        let active = change.active.unwrap_or(user.active);
        self.keep_an_admin(&user, role == Role::Admin && active).await?;
        let password_hash = match &change.password {
            Some(p) => Some(self.passwords.hash(p).await),
            None => None,
        };
        let store_change = UserChange {
            email,
            role: change.role,
            active: change.active,
            password_hash: password_hash.clone(),
            last_login_at: None,
        };
        let updated = self.store.update_user(id, &store_change, now()).await?;
        self.forget_user(id);
        let mut revoke = None;
        if change.active == Some(false) && user.active {
            self.audit.record(actor.event(kind::USER_DISABLED, &updated));
            revoke = Some("user disabled");
        }
        if change.active == Some(true) && !user.active {
            self.audit.record(actor.event(kind::USER_ENABLED, &updated));
        }
        if password_hash.is_some() {
            self.audit.record(actor.event(kind::PASSWORD_CHANGED, &updated));
            revoke = Some("password changed");
        }
        let mut changed = vec![];
        if store_change.email.is_some() && updated.email != user.email {
            changed.push("email");
        }
        if updated.role != user.role {
            changed.push("role");
        }
        if !changed.is_empty() {
            self.audit.record(
                actor
                    .event(kind::USER_CHANGED, &updated)
                    .detail("fields", changed)
                    .detail("role", updated.role.as_str()),
            );
        }
        if let Some(reason) = revoke {
            self.revoke_all_for(&updated, reason, actor).await?;
        }
        Ok(updated)
    }

    /// A user's change to their own account: email, and password with the current one (which
    /// revokes their other sessions, keeping `keep_session`).
    pub async fn update_own(
        &self,
        identity: &Identity,
        change: OwnChange,
        keep_session: Option<&str>,
        actor: &Actor,
    ) -> Result<User, AccountError> {
        let user = self.user(identity.user.as_str()).await?;
        let email = match &change.email {
            Some(Some(e)) => Some(Some(check_email(e)?)),
            Some(None) => Some(None),
            None => None,
        };
        let mut password_hash = None;
        if let Some((current, new)) = &change.password {
            check_password(new, &user.username)?;
            if !self.passwords.verify(current, &user.password_hash).await {
                self.audit.record(
                    Event::new(kind::PASSWORD_CHANGED, false)
                        .user(&user.id, &user.username)
                        .ip(actor.ip().as_deref())
                        .detail("reason", "incorrect current password"),
                );
                return Err(AccountError::WrongPassword);
            }
            password_hash = Some(self.passwords.hash(new).await);
        }
        let store_change = UserChange { email, password_hash: password_hash.clone(), ..UserChange::default() };
        let updated = self.store.update_user(&user.id, &store_change, now()).await?;
        self.forget_user(&user.id);
        if store_change.email.is_some() && updated.email != user.email {
            self.audit.record(actor.event(kind::USER_CHANGED, &updated).detail("fields", vec!["email"]));
        }
        if password_hash.is_some() {
            self.audit.record(actor.event(kind::PASSWORD_CHANGED, &updated));
            let at = now();
            for s in self.sessions.of_user(&user.id, at).await? {
                if Some(s.key.as_str()) != keep_session && self.sessions.revoke_id(&user.id, &s.id).await? {
                    self.audit_revoked(&updated, &s, "password changed", actor);
                }
            }
        }
        Ok(updated)
    }

    /// Deletes an account with its sessions and tokens.
    pub async fn delete(&self, id: &str, actor: &Actor) -> Result<User, AccountError> {
        let user = self.user(id).await?;
        self.keep_an_admin(&user, false).await?;
        // Sessions first: with Redis they are not in the database's cascade.
        self.revoke_all_for(&user, "user deleted", actor).await?;
        self.store.delete_user(id).await?;
        self.forget_user(id);
        self.audit.record(actor.event(kind::USER_DELETED, &user));
        Ok(user)
    }

    fn audit_revoked(&self, user: &User, s: &SessionRecord, reason: &str, actor: &Actor) {
        self.audit
            .record(actor.event(kind::SESSION_REVOKED, user).detail("session", s.id.as_str()).detail("reason", reason));
    }

    async fn revoke_all_for(&self, user: &User, reason: &str, actor: &Actor) -> Result<usize, AccountError> {
        let live = self.sessions.of_user(&user.id, now()).await?;
        let n = self.sessions.revoke_all(&user.id).await?;
        for s in &live {
            self.audit_revoked(user, s, reason, actor);
        }
        Ok(n)
    }

    /// Revokes every session of the user `id` (an admin's action, or the CLI's).
    pub async fn revoke_sessions(&self, id: &str, actor: &Actor) -> Result<usize, AccountError> {
        let user = self.user(id).await?;
        self.revoke_all_for(&user, "revoked", actor).await
    }

    /// `user_id`'s live sessions, oldest first.
    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, AccountError> {
        Ok(self.sessions.of_user(user_id, now()).await?)
    }

    /// Revokes `user_id`'s session `session_id`; [`AccountError::NotFound`] when it is not theirs.
    pub async fn revoke_session(&self, user_id: &str, session_id: &str, actor: &Actor) -> Result<(), AccountError> {
        let user = self.user(user_id).await?;
        let record = self.sessions.of_user(user_id, now()).await?.into_iter().find(|s| s.id == session_id);
        match record {
            Some(s) if self.sessions.revoke_id(user_id, session_id).await? => {
                self.audit_revoked(&user, &s, "revoked", actor);
                Ok(())
            }
            _ => Err(AccountError::NotFound),
        }
    }

    /// A new personal API token for `user_id`: its record and the secret, shown this once.
    pub async fn create_token(
        &self,
        user_id: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(ApiToken, String), AccountError> {
        let user = self.user(user_id).await?;
        let name = check_token_name(name)?;
        let secret = format!("{API_TOKEN_PREFIX}{}", hex(&random_bytes::<32>()));
        let token = ApiToken {
            id: hex(&random_bytes::<16>()),
            user_id: user.id.clone(),
            name,
            token_hash: hex(&sha256(secret.as_bytes())),
            created_at: now(),
            last_used_at: None,
        };
        self.store.create_token(&token).await?;
        self.audit.record(actor.event(kind::TOKEN_CREATED, &user).detail("token", token.id.as_str()));
        Ok((token, secret))
    }

    pub async fn tokens_of(&self, user_id: &str) -> Result<Vec<ApiToken>, AccountError> {
        Ok(self.store.tokens_of(user_id).await?)
    }

    pub async fn delete_token(&self, user_id: &str, token_id: &str, actor: &Actor) -> Result<(), AccountError> {
        let user = self.user(user_id).await?;
        if !self.store.delete_token(user_id, token_id).await? {
            return Err(AccountError::NotFound);
        }
        self.audit.record(actor.event(kind::TOKEN_REVOKED, &user).detail("token", token_id));
        Ok(())
    }

    pub async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, AccountError> {
        Ok(self.audit.query(query).await?)
    }

    /// The first admin: `ADMIN_USERNAME`/`ADMIN_PASSWORD` when set (created when missing, left
    /// alone when it exists); else, in an empty database, `admin` with a random password written
    /// to a 0600 file in `data_dir`, whose path is returned to be printed.
    pub async fn ensure_first_admin(
        &self,
        first: Option<&FirstAdmin>,
        data_dir: &Path,
    ) -> Result<Option<PathBuf>, AccountError> {
        if let Some(first) = first {
            let username =
                check_username(&first.username).map_err(|e| AccountError::invalid("ADMIN_USERNAME", e.to_string()))?;
            if self.store.user_by_name(&username).await?.is_some() {
                return Ok(None);
            }
            check_password(first.password.expose(), &username)
                .map_err(|e| AccountError::invalid("ADMIN_PASSWORD", e.to_string()))?;
            let new = NewUser {
                username,
                email: first.email.clone(),
                password: first.password.expose().to_string(),
                role: Role::Admin,
            };
            match self.create(new, &Actor::cli()).await {
                Ok(_) | Err(AccountError::Conflict(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let password = crate::util::random_hex(12);
        let path = data_dir.join("admin-password");
        let text = format!("username: admin\npassword: {password}\n");
        crate::util::atomic_write(&path, text.as_bytes(), 0o600).map_err(|e| {
            AccountError::Internal(format!("cannot write {}: {}", path.display(), crate::errno::describe(&e)))
        })?;
        let new = NewUser { username: "admin".into(), email: None, password, role: Role::Admin };
        match self.create(new, &Actor::cli()).await {
            Ok(_) => Ok(Some(path)),
            // Another front created the first admin at the same moment.
            Err(AccountError::Conflict(_)) => {
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn session_identity(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        let Some(record) = self.sessions.validate(token, now()).await? else {
            return Ok(None);
        };
        match self.cached_user(&record.user_id).await? {
            Some(user) if user.active => Ok(Some(Self::identity(&user, Some(record.key)))),
            _ => Ok(None),
        }
    }

    async fn bearer_identity(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        let hash = hex(&sha256(token.as_bytes()));
        let Some(api_token) = self.store.use_token(&hash, now()).await? else {
            return Ok(None);
        };
        match self.cached_user(&api_token.user_id).await? {
            // The token's own id keys its upstream pool, as a session's key does.
            Some(user) if user.active => Ok(Some(Self::identity(&user, Some(hash)))),
            _ => Ok(None),
        }
    }

    async fn try_sign_in(&self, attempt: &SignIn) -> Result<SignInOutcome, AccountError> {
        let username = attempt.username.trim().to_ascii_lowercase();
        let ip = attempt.ip.map(|ip| ip.to_string());
        let user = if username.is_empty() { None } else { self.store.user_by_name(&username).await? };
        // Unknown names verify against the dummy hash: the same cost as a wrong password.
        let hash = user.as_ref().map_or(self.passwords.dummy_hash(), |u| u.password_hash.as_str());
        let correct = self.passwords.verify(&attempt.password, hash).await;
        let user_id = user.as_ref().map(|u| u.id.clone());
        let failure = |reason: &str| {
            let mut event = Event::new(kind::LOGIN, false).ip(ip.as_deref()).detail("reason", reason);
            event.username = Some(username.chars().take(64).collect());
            event.user_id = user_id.clone();
            self.audit.record(event);
        };
        let user = match user {
            Some(u) if correct => u,
            _ => {
                failure("incorrect username or password");
                return Ok(SignInOutcome::Incorrect);
            }
        };
        if !user.active {
            failure("account disabled");
            return Ok(SignInOutcome::Disabled);
        }
        let at = now();
        let (new, revoked) = self.sessions.create(&user.id, ip.clone(), attempt.user_agent.clone(), at).await?;
        let actor = Actor { user: Some((user.id.clone(), user.username.clone())), ip: attempt.ip };
        for old in &revoked {
            self.audit_revoked(&user, old, "session limit", &actor);
        }
        self.store.update_user(&user.id, &UserChange { last_login_at: Some(at), ..UserChange::default() }, at).await?;
        self.audit.record(Event::new(kind::LOGIN, true).user(&user.id, &user.username).ip(ip.as_deref()));
        self.audit.record(
            Event::new(kind::SESSION_CREATED, true)
                .user(&user.id, &user.username)
                .ip(ip.as_deref())
                .detail("session", new.record.id.as_str()),
        );
        Ok(SignInOutcome::Session { token: new.token })
    }
}

#[async_trait::async_trait]
impl Directory for Accounts {
    async fn by_session(&self, token: &str) -> Result<Option<Identity>, AppError> {
        Ok(self.session_identity(token).await?)
    }

    async fn by_bearer(&self, token: &str) -> Result<Option<Identity>, AppError> {
        Ok(self.bearer_identity(token).await?)
    }

    async fn sign_in(&self, attempt: SignIn) -> Result<SignInOutcome, AppError> {
        Ok(self.try_sign_in(&attempt).await?)
    }

    async fn sign_out(&self, token: &str, ip: Option<IpAddr>) -> Result<(), AppError> {
        let Some(record) = self.sessions.revoke_token(token, now()).await? else {
            return Ok(());
        };
        if let Some(user) = self.cached_user(&record.user_id).await? {
            let ip = ip.map(|ip| ip.to_string());
            self.audit.record(Event::new(kind::LOGOUT, true).user(&user.id, &user.username).ip(ip.as_deref()));
            self.audit.record(
                Event::new(kind::SESSION_REVOKED, true)
                    .user(&user.id, &user.username)
                    .ip(ip.as_deref())
                    .detail("session", record.id.as_str())
                    .detail("reason", "logout"),
            );
        }
        Ok(())
    }

    async fn live_sessions(&self) -> Result<u64, AppError> {
        Ok(self.sessions.store().count(now()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_os_account_names() {
        assert_eq!(check_username("  Alice ").unwrap(), "alice");
        assert_eq!(check_username("_svc-1").unwrap(), "_svc-1");
        for bad in ["", "1abc", "-x", "a b", "ä", "root", "a.b", &"x".repeat(33)] {
            let e = check_username(bad).unwrap_err();
            assert!(e.to_string().starts_with("username: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn emails_are_loosely_checked_and_lower_cased() {
        assert_eq!(check_email("Bob@Example.COM").unwrap(), "bob@example.com");
        for bad in ["bob", "bob@", "@x.y", "a@b", "a b@c.d", "a@b@c.d", "a@.b", "a@b."] {
            assert!(check_email(bad).unwrap_err().to_string().starts_with("email: "), "{bad}");
        }
    }

    #[test]
    fn password_errors_name_the_field_and_the_rule() {
        let e = check_password("short", "alice").unwrap_err();
        assert_eq!(e.to_string(), "password: must be at least 8 characters");
    }
}
