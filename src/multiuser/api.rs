//! `/api`: accounts, sessions, tokens and the audit log as JSON (MULTIUSER.md, "API").
//!
//! Each route is a thin handler over one operation (`me`, `create_user`, ...), and the admin
//! and account pages ([`super::pages`]) call the same operations, so a form and a JSON request
//! mean the same thing. Errors are `{"error": "..."}`: 400 naming the field, 401 without a
//! session or token, 403 for a non-admin on an admin route or a cross-site cookie request,
//! 404 for what does not exist or is someone else's, 409 for a taken username or email, 503
//! while a store is unreachable.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::accounts::{Accounts, Actor, AdminChange, NewUser, OwnChange};
use super::sessions::SessionRecord;
use super::store::{ApiToken, AuditEvent, AuditQuery, Role, User, UserQuery};
use crate::auth::Auth;
use crate::error::AppError;
use crate::identity::{Identity, UserId};
use crate::multiuser::workspaces::{Fleet, WorkspaceView};
use crate::server::ConnInfo;
use crate::util::{iso8601, parse_time};

/// The API's state: the accounts, and authentication (for the [`Identity`] extractor).
#[derive(Clone)]
pub struct ApiState {
    pub accounts: Arc<Accounts>,
    pub auth: Arc<Auth>,
    pub app_name: AppName,
    pub fleet: Arc<Fleet>,
}

impl FromRef<ApiState> for Arc<Fleet> {
    fn from_ref(s: &ApiState) -> Arc<Fleet> {
        s.fleet.clone()
    }
}

/// `--app-name`, for the pages' titles.
#[derive(Clone)]
pub struct AppName(pub Arc<str>);

impl FromRef<ApiState> for AppName {
    fn from_ref(s: &ApiState) -> AppName {
        s.app_name.clone()
    }
}

impl FromRef<ApiState> for Arc<Auth> {
    fn from_ref(s: &ApiState) -> Arc<Auth> {
        s.auth.clone()
    }
}

impl FromRef<ApiState> for Arc<Accounts> {
    fn from_ref(s: &ApiState) -> Arc<Accounts> {
        s.accounts.clone()
    }
}

pub fn routes<S: Clone + Send + Sync + 'static>(state: ApiState) -> Router<S> {
    Router::new()
        .route("/api/users/me", get(get_me).patch(patch_me))
        .route("/api/users/me/sessions", get(get_my_sessions))
        .route("/api/users/me/sessions/{id}", delete(delete_my_session))
        .route("/api/users/me/usage", get(get_my_usage))
        .route("/api/users/me/tokens", get(get_my_tokens).post(post_my_token))
        .route("/api/users/me/tokens/{id}", delete(delete_my_token))
        .route("/api/users", get(get_users).post(post_user))
        .route("/api/users/{id}", get(get_user).patch(patch_user).delete(delete_user))
        .route("/api/users/{id}/sessions", get(get_user_sessions).delete(delete_user_sessions))
        .route("/api/audit", get(get_audit))
        .route("/api/workspaces", get(get_workspaces))
        .route("/api/users/{id}/workspace/stop", axum::routing::post(post_workspace_stop))
        .route("/api/users/{id}/workspace/start", axum::routing::post(post_workspace_start))
        .route("/api/openapi.json", get(get_openapi))
        // Not a fallback: merged into the application's router, whose fallback is VS Code.
        .route("/api", axum::routing::any(not_found))
        .route("/api/{*rest}", axum::routing::any(not_found))
        .with_state(state)
}

/// The OpenAPI description of these routes ([`super::openapi`]), for any signed-in user.
async fn get_openapi(State(auth): State<Arc<Auth>>, _: Caller) -> Response {
    let mut res =
        ([(axum::http::header::CONTENT_TYPE, "application/json")], super::openapi::document(&auth.cookie_name))
            .into_response();
    crate::headers::add_private_headers(res.headers_mut());
    res
}

async fn not_found() -> AppError {
    AppError::not_found()
}

// ---- who is asking ----

/// The caller of an API route: their identity, and the actor the audit names.
pub struct Caller {
    pub identity: Identity,
    pub actor: Actor,
    /// The store key of the session the request came with (to mark "this session").
    pub session_key: Option<String>,
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, AppError> {
        let identity = Identity::from_request_parts(parts, state).await?;
        let auth = Arc::<Auth>::from_ref(state);
        let peer = parts.extensions.get::<ConnInfo>().and_then(|c| c.peer.map(|p| p.ip()));
        let ip = auth.client_ip(peer, &parts.headers);
        if !parts.method.is_safe() {
            require_same_origin(&parts.headers, &parts.uri)?;
        }
        let session_key = if Auth::uses_bearer(&parts.headers) { None } else { identity.session.clone() };
        Ok(Caller { actor: Actor::of(&identity, ip), identity, session_key })
    }
}

/// A caller who is an admin (403 for anyone else).
pub struct AdminCaller(pub Caller);

impl<S> FromRequestParts<S> for AdminCaller
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<AdminCaller, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.identity.is_admin() {
            return Err(AppError::new(StatusCode::FORBIDDEN, "Forbidden: admins only"));
        }
        Ok(AdminCaller(caller))
    }
}

/// A request that changes something with the session cookie must come from our own pages: a
/// same-origin `Sec-Fetch-Site`, or an `Origin` naming this server. A bearer token needs no such
/// check (a browser never attaches one by itself).
pub fn require_same_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), AppError> {
    if Auth::uses_bearer(headers) {
        return Ok(());
    }
    let refused = || {
        AppError::new(
            StatusCode::FORBIDDEN,
            "Forbidden: a request that changes something needs an Origin of this server (or an API token)",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        return if site.as_bytes() == b"same-origin" { Ok(()) } else { Err(refused()) };
    }
    if !headers.contains_key("origin") {
        return Err(refused());
    }
    crate::origin::check_origin(headers, uri.authority().map(|a| a.as_str()), &[]).map_err(|_| refused())
}

// ---- bodies ----

/// A JSON body whose problems are 400s naming the field (unknown fields included), 413 past
/// the body limit, 415 without a JSON content type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<ApiJson<T>, AppError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> AppError {
    if crate::error::body_timed_out(&rejection) {
        return crate::error::body_timeout();
    }
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's words name the field: "unknown field `role`", "email: invalid type ...".
            let text = e.body_text();
            let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
            AppError::new(StatusCode::BAD_REQUEST, format!("invalid request: {detail}"))
        }
        JsonRejection::JsonSyntaxError(e) => {
            let text = e.body_text();
            let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
            AppError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => {
            AppError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "request entity too large")
        }
        other => AppError::new(StatusCode::BAD_REQUEST, other.body_text()),
    }
}

/// A field that may be absent (`None`), null (`Some(None)`) or a value.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    /// Usable as an OS account name (upper case is lowered, reserved names refused).
    #[schema(pattern = "^[a-z_][a-z0-9_-]{0,31}$")]
    pub username: String,
    /// At least 8 characters, not padded with spaces, no control characters, not the username.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminPatch {
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub password: Option<String>,
}

/// `PATCH /api/users/me`: email, and password with the current one. No role, no `active`:
/// those are unknown fields here, refused with a 400.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnPatch {
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub current_password: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// 1 to 64 characters, no control characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

// ---- views (what leaves the server: never a hash) ----

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_login_at: Option<String>,
    pub password_changed_at: String,
}

fn time(ms: i64) -> String {
    iso8601(ms.max(0) as u64)
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            role: u.role,
            active: u.active,
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
            last_login_at: u.last_login_at.map(time),
            password_changed_at: time(u.password_changed_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    /// The session this request came with.
    pub current: bool,
}

fn session_views(records: &[SessionRecord], current: Option<&str>) -> Vec<SessionView> {
    records
        .iter()
        .map(|s| SessionView {
            id: s.id.clone(),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            created_at: time(s.created_at),
            last_seen_at: time(s.last_seen_at),
            expires_at: time(s.expires_at),
            current: current == Some(s.key.as_str()),
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> TokenView {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: time(t.created_at),
            last_used_at: t.last_used_at.map(time),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub actor: Option<String>,
    pub ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<&AuditEvent> for AuditView {
    fn from(e: &AuditEvent) -> AuditView {
        AuditView {
            id: e.id.clone(),
            at: time(e.at),
            kind: e.kind.clone(),
            status: e.status.clone(),
            user_id: e.user_id.clone(),
            username: e.username.clone(),
            actor: e.actor.clone(),
            ip: e.ip.clone(),
            details: e.details.clone(),
        }
    }
}

// ---- operations (shared with the pages) ----

pub async fn me(accounts: &Accounts, caller: &Caller) -> Result<UserView, AppError> {
    Ok(UserView::from(&accounts.user(caller.identity.user.as_str()).await?))
}

pub async fn update_me(accounts: &Accounts, caller: &Caller, patch: OwnPatch) -> Result<UserView, AppError> {
    let password = match (patch.password, patch.current_password) {
        (Some(new), Some(current)) => Some((current, new)),
        (Some(_), None) => {
            return Err(AppError::new(StatusCode::BAD_REQUEST, "current_password: is required to change the password"));
        }
        (None, Some(_)) => return Err(AppError::new(StatusCode::BAD_REQUEST, "password: the new password is missing")),
        (None, None) => None,
    };
    let change = OwnChange { email: patch.email, password };
    let user = accounts.update_own(&caller.identity, change, caller.session_key.as_deref(), &caller.actor).await?;
    Ok(UserView::from(&user))
}

pub async fn sessions_of(
    accounts: &Accounts,
    user_id: &str,
    current: Option<&str>,
) -> Result<Vec<SessionView>, AppError> {
    Ok(session_views(&accounts.sessions_of(user_id).await?, current))
}

pub async fn create_user(accounts: &Accounts, caller: &Caller, body: NewUserBody) -> Result<UserView, AppError> {
    let new = NewUser {
        username: body.username,
        email: body.email.filter(|e| !e.trim().is_empty()),
        password: body.password,
        role: body.role.unwrap_or(Role::User),
    };
    Ok(UserView::from(&accounts.create(new, &caller.actor).await?))
}

pub async fn update_user(
    accounts: &Accounts,
    caller: &Caller,
    id: &str,
    patch: AdminPatch,
) -> Result<UserView, AppError> {
    let change = AdminChange { email: patch.email, role: patch.role, active: patch.active, password: patch.password };
    Ok(UserView::from(&accounts.update(id, change, &caller.actor).await?))
}

/// One page of users: `search` in username or email, `limit` (1..=200, default 50), `offset`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// A part of the username or email.
    pub search: Option<String>,
    // Read as text to name the field in the error; described as the numbers accepted.
    #[param(value_type = Option<u32>, minimum = 0, maximum = 200)]
    pub limit: Option<String>,
    #[param(value_type = Option<u32>, minimum = 0)]
    pub offset: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<UserView>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

fn number(field: &'static str, value: Option<&str>, default: u32, max: u32) -> Result<u32, AppError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| AppError::new(StatusCode::BAD_REQUEST, format!("{field}: must be a number up to {max}"))),
    }
}

pub async fn list_users(accounts: &Accounts, q: &UserListQuery) -> Result<UserPage, AppError> {
    let limit = number("limit", q.limit.as_deref(), 50, 200)?.max(1);
    let offset = number("offset", q.offset.as_deref(), 0, u32::MAX)?;
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let (users, total) = accounts.list(&UserQuery { search, limit, offset }).await?;
    Ok(UserPage { users: users.iter().map(UserView::from).collect(), total, limit, offset })
}

/// Audit filters: `user` (id), `type`, `status`, `from`/`to` (inclusive; ISO-8601 UTC or Unix
/// ms), `limit` (1..=500, default 100), `cursor` (the previous page's `next_cursor`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// A user's id.
    pub user: Option<String>,
    /// An event type (`login`, `user_created`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `success` or `failure`.
    pub status: Option<String>,
    /// Inclusive: ISO-8601 UTC (`2024-01-31T12:00:00Z`) or Unix ms.
    pub from: Option<String>,
    /// Inclusive, as `from`.
    pub to: Option<String>,
    #[param(value_type = Option<u32>, minimum = 0, maximum = 500)]
    pub limit: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last.
    pub next_cursor: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

pub fn audit_query(p: &AuditParams) -> Result<AuditQuery, AppError> {
    let bad = |field: &str, what: &str| AppError::new(StatusCode::BAD_REQUEST, format!("{field}: {what}"));
    let when = |field: &'static str, v: &Option<String>| -> Result<Option<i64>, AppError> {
        nonempty(v)
            .map(|v| {
                parse_time(&v)
                    .map(|t| t as i64)
                    .ok_or_else(|| bad(field, "must be a UTC time like 2024-01-31T12:00:00Z"))
            })
            .transpose()
    };
    let kind = nonempty(&p.kind);
    if let Some(k) = &kind
        && !super::audit::kind::ALL.contains(&k.as_str())
    {
        return Err(bad("type", &format!("must be one of {}", super::audit::kind::ALL.join(", "))));
    }
    let status = nonempty(&p.status);
    if let Some(s) = &status
        && s != "success"
        && s != "failure"
    {
        return Err(bad("status", "must be success or failure"));
    }
    let before = match nonempty(&p.cursor) {
        None => None,
        Some(c) => {
            let (at, id) = c.split_once('_').ok_or_else(|| bad("cursor", "is not one this server gave"))?;
            let at = at.parse::<i64>().map_err(|_| bad("cursor", "is not one this server gave"))?;
            Some((at, id.to_string()))
        }
    };
    Ok(AuditQuery {
        user_id: nonempty(&p.user),
        kind,
        status,
        from: when("from", &p.from)?,
        to: when("to", &p.to)?,
        before,
        limit: number("limit", p.limit.as_deref(), 100, 500)?.max(1),
    })
}

pub async fn audit_page(accounts: &Accounts, q: &AuditQuery) -> Result<AuditPage, AppError> {
    // One more than asked tells whether there is a next page.
    let mut events = accounts.query_audit(&AuditQuery { limit: q.limit + 1, ..q.clone() }).await?;
    let more = events.len() > q.limit as usize;
    events.truncate(q.limit as usize);
    let next_cursor = more.then(|| events.last().map(|e| format!("{}_{}", e.at, e.id))).flatten();
    Ok(AuditPage { events: events.iter().map(AuditView::from).collect(), next_cursor })
}

// ---- handlers ----

type Accts = State<Arc<Accounts>>;

#[utoipa::path(
    get,
    path = "/api/users/me",
    tag = "account",
    summary = "The signed-in user",
    responses((status = 200, body = UserView))
)]
pub(crate) async fn get_me(State(a): Accts, caller: Caller) -> Result<Json<UserView>, AppError> {
    Ok(Json(me(&a, &caller).await?))
}

#[utoipa::path(
    patch,
    path = "/api/users/me",
    tag = "account",
    summary = "Changes the own email, or the password (with the current one)",
    request_body = OwnPatch,
    responses((status = 200, body = UserView))
)]
pub(crate) async fn patch_me(
    State(a): Accts,
    caller: Caller,
    ApiJson(p): ApiJson<OwnPatch>,
) -> Result<Json<UserView>, AppError> {
    Ok(Json(update_me(&a, &caller, p).await?))
}

#[utoipa::path(
    get,
    path = "/api/users/me/sessions",
    tag = "account",
    summary = "The own live sessions",
    responses((status = 200, body = Vec<SessionView>))
)]
pub(crate) async fn get_my_sessions(State(a): Accts, caller: Caller) -> Result<Json<Vec<SessionView>>, AppError> {
    Ok(Json(sessions_of(&a, caller.identity.user.as_str(), caller.session_key.as_deref()).await?))
}

#[utoipa::path(
    delete,
    path = "/api/users/me/sessions/{id}",
    tag = "account",
    summary = "Revokes one of the own sessions",
    params(("id" = String, Path, description = "A session id")),
    responses((status = 204, description = "Revoked"))
)]
pub(crate) async fn delete_my_session(
    State(a): Accts,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    a.revoke_session(caller.identity.user.as_str(), &id, &caller.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub sessions: Limit,
    /// `null` until the workspace was first measured (within seconds of its first start).
    pub storage: Option<Limit>,
    /// `null` while the workspace does not run.
    pub memory: Option<Limit>,
    /// `running`, `stopped`, or `none` (never started since the server did).
    #[schema(value_type = String)]
    pub workspace: &'static str,
    /// Its storage is over the quota: its next start is refused.
    pub over_quota: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Limit {
    pub used: u64,
    pub limit: u64,
}

pub async fn usage(accounts: &Accounts, fleet: &Fleet, user_id: &str) -> Result<Usage, AppError> {
    let used = accounts.sessions_of(user_id).await?.len() as u64;
    let view = fleet.view_of(&UserId::new(user_id)).await;
    let limit = |used: Option<u64>, limit: u64| used.map(|used| Limit { used, limit });
    Ok(Usage {
        sessions: Limit { used, limit: accounts.sessions().max_per_user() as u64 },
        storage: limit(view.as_ref().and_then(|v| v.storage_bytes), fleet.storage_bytes),
        memory: limit(view.as_ref().and_then(|v| v.memory_bytes), fleet.memory_bytes),
        workspace: view.as_ref().map_or("none", |v| v.state),
        over_quota: view.is_some_and(|v| v.over_quota),
    })
}

#[utoipa::path(
    get,
    path = "/api/users/me/usage",
    tag = "account",
    summary = "Sessions, storage and memory against their limits",
    responses((status = 200, body = Usage))
)]
pub(crate) async fn get_my_usage(
    State(a): Accts,
    State(f): State<Arc<Fleet>>,
    caller: Caller,
) -> Result<Json<Usage>, AppError> {
    Ok(Json(usage(&a, &f, caller.identity.user.as_str()).await?))
}

#[utoipa::path(
    get,
    path = "/api/workspaces",
    tag = "workspaces",
    summary = "Every workspace this front has made, and every one another front of the deployment runs",
    responses((status = 200, body = Vec<WorkspaceView>))
)]
pub(crate) async fn get_workspaces(State(f): State<Arc<Fleet>>, _: AdminCaller) -> Json<Vec<WorkspaceView>> {
    Json(f.list().await)
}

/// Stops a user's workspace (204; 404 for no such user). Its processes end; the user's next
/// request starts it again.
pub async fn stop_workspace(a: &Accounts, f: &Fleet, id: &str, actor: &Actor) -> Result<(), AppError> {
    let user = a.user(id).await?;
    let user_id = UserId::new(id);
    let mut stopped = false;
    if let Some(w) = f.workspaces.made(&user_id)
        && w.is_running()
    {
        w.stop().await;
        stopped = true;
    }
    // Run by another front: its row released, that front stops it at its next heartbeat.
    if let Some(registry) = &f.registry {
        stopped |= registry.stop_elsewhere(&user_id).await.map_err(AppError::from)?;
    }
    if stopped {
        a.audit().record(actor.event(crate::multiuser::audit::kind::WORKSPACE_STOPPED, &user).detail("by", "admin"));
    }
    Ok(())
}

/// Lets a user's workspace start even over its storage quota (once), as an admin may.
pub async fn start_anyway(a: &Accounts, f: &Fleet, id: &str, actor: &Actor) -> Result<(), AppError> {
    let user = a.user(id).await?;
    let identity = Identity {
        user: UserId::new(user.id.as_str()),
        name: user.username.clone(),
        roles: vec![user.role],
        session: None,
    };
    let w = f.workspaces.get(&identity).await.map_err(|e| {
        tracing::warn!("{}'s workspace: {e}", user.username);
        AppError::new(StatusCode::SERVICE_UNAVAILABLE, "The workspace is not available").retry_after(5)
    })?;
    w.usage.lock().unwrap().start_anyway = true;
    a.audit().record(actor.event(crate::multiuser::audit::kind::QUOTA, &user).detail("start_anyway", true));
    if let Some(registry) = f.registry.clone() {
        // Started now, by this front, whose permission it is: running, it is served through
        // every front of the deployment (another front would still refuse to start it).
        tokio::spawn(async move {
            use crate::workspaces::placement::Placement;
            if let Err(e) = registry.serve(&w, std::time::Duration::from_secs(120)).await {
                tracing::warn!("Starting {}'s workspace anyway: {e}", w.name);
            }
        });
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/users/{id}/workspace/stop",
    tag = "workspaces",
    summary = "Stops the workspace of a user; their next request starts it again",
    params(("id" = String, Path, description = "A user id")),
    responses((status = 204, description = "Stopped"))
)]
pub(crate) async fn post_workspace_stop(
    State(a): Accts,
    State(f): State<Arc<Fleet>>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    stop_workspace(&a, &f, &id, &caller.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/users/{id}/workspace/start",
    tag = "workspaces",
    summary = "Starts the workspace of a user now, once even over its storage quota",
    params(("id" = String, Path, description = "A user id")),
    responses((status = 204, description = "Allowed"))
)]
pub(crate) async fn post_workspace_start(
    State(a): Accts,
    State(f): State<Arc<Fleet>>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    start_anyway(&a, &f, &id, &caller.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/users/me/tokens",
    tag = "account",
    summary = "The own API tokens (never their secrets)",
    responses((status = 200, body = Vec<TokenView>))
)]
pub(crate) async fn get_my_tokens(State(a): Accts, caller: Caller) -> Result<Json<Vec<TokenView>>, AppError> {
    let tokens = a.tokens_of(caller.identity.user.as_str()).await?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenView {
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret, shown this once: `Authorization: Bearer <token>`.
    pub token_secret: String,
}

pub async fn create_token(accounts: &Accounts, caller: &Caller, name: &str) -> Result<NewTokenView, AppError> {
    let (token, secret) = accounts.create_token(caller.identity.user.as_str(), name, &caller.actor).await?;
    Ok(NewTokenView { token: TokenView::from(&token), token_secret: secret })
}

#[utoipa::path(
    post,
    path = "/api/users/me/tokens",
    tag = "account",
    summary = "Makes an API token; its secret is in this answer only",
    request_body = NewTokenBody,
    responses((status = 201, body = NewTokenView))
)]
pub(crate) async fn post_my_token(
    State(a): Accts,
    caller: Caller,
    ApiJson(b): ApiJson<NewTokenBody>,
) -> Result<Response, AppError> {
    let view = create_token(&a, &caller, &b.name).await?;
    let mut res = (StatusCode::CREATED, Json(view)).into_response();
    crate::headers::add_private_headers(res.headers_mut());
    Ok(res)
}

#[utoipa::path(
    delete,
    path = "/api/users/me/tokens/{id}",
    tag = "account",
    summary = "Deletes one of the own API tokens",
    params(("id" = String, Path, description = "A token id")),
    responses((status = 204, description = "Deleted"))
)]
pub(crate) async fn delete_my_token(
    State(a): Accts,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    a.delete_token(caller.identity.user.as_str(), &id, &caller.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    summary = "One page of users",
    params(UserListQuery),
    responses((status = 200, body = UserPage))
)]
pub(crate) async fn get_users(
    State(a): Accts,
    _: AdminCaller,
    q: Result<Query<UserListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserPage>, AppError> {
    let Query(q) = q.map_err(|e| AppError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(list_users(&a, &q).await?))
}

#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    summary = "Creates a user",
    request_body = NewUserBody,
    responses((status = 201, body = UserView))
)]
pub(crate) async fn post_user(
    State(a): Accts,
    AdminCaller(caller): AdminCaller,
    ApiJson(b): ApiJson<NewUserBody>,
) -> Result<(StatusCode, Json<UserView>), AppError> {
    Ok((StatusCode::CREATED, Json(create_user(&a, &caller, b).await?)))
}

#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
    summary = "One user",
    params(("id" = String, Path, description = "A user id")),
    responses((status = 200, body = UserView))
)]
pub(crate) async fn get_user(
    State(a): Accts,
    _: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    Ok(Json(UserView::from(&a.user(&id).await?)))
}

#[utoipa::path(
    patch,
    path = "/api/users/{id}",
    tag = "users",
    summary = "Changes the email, role, active flag or password of a user",
    params(("id" = String, Path, description = "A user id")),
    request_body = AdminPatch,
    responses((status = 200, body = UserView))
)]
pub(crate) async fn patch_user(
    State(a): Accts,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<AdminPatch>,
) -> Result<Json<UserView>, AppError> {
    Ok(Json(update_user(&a, &caller, &id, p).await?))
}

#[utoipa::path(
    delete,
    path = "/api/users/{id}",
    tag = "users",
    summary = "Deletes a user and revokes their sessions",
    params(("id" = String, Path, description = "A user id")),
    responses((status = 204, description = "Deleted"))
)]
pub(crate) async fn delete_user(
    State(a): Accts,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    a.delete(&id, &caller.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/users/{id}/sessions",
    tag = "users",
    summary = "The live sessions of a user",
    params(("id" = String, Path, description = "A user id")),
    responses((status = 200, body = Vec<SessionView>))
)]
pub(crate) async fn get_user_sessions(
    State(a): Accts,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Vec<SessionView>>, AppError> {
    a.user(&id).await?;
    Ok(Json(sessions_of(&a, &id, caller.session_key.as_deref()).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    revoked: usize,
}

#[utoipa::path(
    delete,
    path = "/api/users/{id}/sessions",
    tag = "users",
    summary = "Revokes every session of a user",
    params(("id" = String, Path, description = "A user id")),
    responses((status = 200, body = Revoked))
)]
pub(crate) async fn delete_user_sessions(
    State(a): Accts,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, AppError> {
    Ok(Json(Revoked { revoked: a.revoke_sessions(&id, &caller.actor).await? }))
}

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    summary = "Audit events, newest first",
    params(AuditParams),
    responses((status = 200, body = AuditPage))
)]
pub(crate) async fn get_audit(
    State(a): Accts,
    _: AdminCaller,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, AppError> {
    let Query(p) = q.map_err(|e| AppError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(audit_page(&a, &audit_query(&p)?).await?))
}

/// The client address of a request, as authentication tells it (for pages' audit records).
pub fn client_ip(auth: &Auth, conn: Option<&Extension<ConnInfo>>, headers: &HeaderMap) -> Option<IpAddr> {
    auth.client_ip(conn.and_then(|c| c.peer.map(|p| p.ip())), headers)
}
