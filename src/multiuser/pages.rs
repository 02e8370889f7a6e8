//! The admin page (`/admin`, `/admin/audit`) and a user's own page (`/account`): server-rendered
//! with code-server's login look, plain HTML forms, no front-end build. Every action calls the
//! same operation as its `/api` route ([`super::api`]); a form POST passes the same same-origin
//! check a cookie API request does, and answers with a redirect (303) so a reload does not
//! repeat it.

use std::sync::Arc;

use crate::multiuser::workspaces::Fleet;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::accounts::Accounts;
use super::api::{self, AdminPatch, ApiState, AppName, AuditParams, Caller, NewUserBody, OwnPatch, UserListQuery};
use super::audit::kind;
use super::store::Role;
use crate::auth::Auth;
use crate::error::AppError;
use crate::relative::{Query as RelQuery, found, location, relative_root};

const CSS: &str = include_str!("../../templates/admin/admin.css");

pub fn routes<S: Clone + Send + Sync + 'static>(state: ApiState) -> Router<S> {
    Router::new()
        .route("/admin", get(users_page))
        .route("/admin/", get(users_page))
        .route("/admin/admin.css", get(css))
        .route("/admin/audit", get(audit_page))
        .route("/admin/users", post(create_user))
        .route("/admin/users/{id}/active", post(set_active))
        .route("/admin/users/{id}/revoke", post(revoke_sessions))
        .route("/admin/users/{id}/workspace/stop", post(stop_workspace))
        .route("/admin/users/{id}/workspace/start", post(start_workspace))
        .route("/admin/users/{id}/password", post(reset_password))
        .route("/admin/users/{id}/delete", get(confirm_delete).post(delete_user))
        .route("/account", get(account_page))
        .route("/account/", get(account_page))
        .route("/account/password", post(change_password))
        .route("/account/email", post(change_email))
        .route("/account/sessions/{id}/revoke", post(revoke_own_session))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/{id}/delete", post(delete_token))
        .with_state(state)
}

/// The signed-in caller of a page; without a session, the login page (which comes back here).
struct PageCaller {
    caller: Caller,
    /// `--app-name`, for titles.
    app_name: String,
    /// The relative way to the root from this page (`.`, `../..`).
    root: String,
    /// The users' workspaces (the admin page shows them).
    fleet: Arc<Fleet>,
}

impl<S> FromRequestParts<S> for PageCaller
where
    Arc<Auth>: FromRef<S>,
    AppName: FromRef<S>,
    Arc<Fleet>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PageCaller, Response> {
        let path = parts.uri.path().to_string();
        match Caller::from_request_parts(parts, state).await {
            Ok(caller) => {
                let AppName(app_name) = AppName::from_ref(state);
                let fleet = Arc::<Fleet>::from_ref(state);
                Ok(PageCaller { caller, app_name: app_name.to_string(), root: relative_root(&path), fleet })
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                let to = if path.starts_with("/account") { "/account" } else { "/admin" };
                Err(found(&location(&path, &RelQuery::parse(None), "/login", &[("to", Some(to))])))
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

/// What every page's frame shows (head, navigation, notice, error): see admin/nav.html.
struct Frame {
    app_name: String,
    root: String,
    me: String,
    is_admin: bool,
    notice: Option<String>,
    error: Option<String>,
}

impl PageCaller {
    fn frame(&self, notice: Option<String>, error: Option<String>) -> Frame {
        Frame {
            app_name: self.app_name.clone(),
            root: self.root.clone(),
            me: self.caller.identity.name.clone(),
            is_admin: self.caller.identity.is_admin(),
            notice,
            error,
        }
    }
}

/// A [`PageCaller`] who is an admin.
struct AdminPage(PageCaller);

impl<S> FromRequestParts<S> for AdminPage
where
    Arc<Auth>: FromRef<S>,
    AppName: FromRef<S>,
    Arc<Fleet>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<AdminPage, Response> {
        let page = PageCaller::from_request_parts(parts, state).await?;
        if !page.caller.identity.is_admin() {
            return Err(AppError::new(StatusCode::FORBIDDEN, "Forbidden: admins only").into_response());
        }
        Ok(AdminPage(page))
    }
}

fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, Html(body)).into_response();
    crate::headers::add_private_headers(res.headers_mut());
    res
}

/// After a form: back to `to` (under the root) with a notice code.
fn done(root: &str, to: &str, notice: &str) -> Response {
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, format!("{root}{to}?notice={notice}"))]).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Notices by code: the query can only pick one of these texts, never inject its own.
fn notice_text(code: Option<&str>) -> Option<String> {
    Some(
        match code? {
            "created" => "User created.",
            "disabled" => "User disabled; their sessions are revoked.",
            "enabled" => "User enabled.",
            "revoked" => "Sessions revoked.",
            "password" => "Password changed; the user's sessions are revoked.",
            "deleted" => "User deleted.",
            "own-password" => "Password changed; your other sessions are signed out.",
            "email" => "Email saved.",
            "session" => "Session revoked.",
            "token-deleted" => "Token deleted.",
            "workspace-stopped" => "Workspace stopped; it starts again on the user's next visit.",
            "workspace-allowed" => "The workspace may start once over its storage quota.",
            _ => return None,
        }
        .to_string(),
    )
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, AppError> {
    f.map(|Form(v)| v).map_err(|e| {
        if crate::error::body_timed_out(&e) {
            crate::error::body_timeout()
        } else {
            AppError::new(StatusCode::BAD_REQUEST, e.body_text())
        }
    })
}

/// The pages' stylesheet. Open without a session, as code-server's own `_static` styles are:
/// the login page uses it too, and it holds nothing but CSS.
async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], CSS).into_response()
}

// ---- /admin ----

struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    role: &'static str,
    state: &'static str,
    last_login: String,
    sessions: usize,
    toggle_value: &'static str,
    toggle_label: &'static str,
    /// Their workspace: `running`, `stopped` or `none`, and what it uses.
    workspace: &'static str,
    workspace_detail: String,
    over_quota: bool,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersTemplate {
    frame: Frame,
    /// Directory isolation: the page says it is no security boundary.
    shared_account: bool,
    search: String,
    users: Vec<UserRow>,
    shown: usize,
    total: u64,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct UsersParams {
    search: Option<String>,
    offset: Option<String>,
    notice: Option<String>,
}

const PAGE: u32 = 50;

async fn render_users(
    accounts: &Accounts,
    page: &PageCaller,
    params: &UsersParams,
    error: Option<&AppError>,
) -> Result<Response, AppError> {
    let query =
        UserListQuery { search: params.search.clone(), limit: Some(PAGE.to_string()), offset: params.offset.clone() };
    let listed = api::list_users(accounts, &query).await?;
    let mut users = vec![];
    // The workspaces of the whole deployment, asked once for the page.
    let workspaces = page.fleet.list().await;
    for u in &listed.users {
        let sessions = accounts.sessions_of(&u.id).await?.len();
        let view = workspaces.iter().find(|w| w.user_id == u.id);
        let mb = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{} MB", b / 1_000_000));
        let workspace_detail = view.map_or(String::new(), |v| {
            let since = v.started_at.map_or(String::new(), |t| format!("started {}, ", crate::util::iso8601(t)));
            let front = v.front.as_ref().map_or(String::new(), |f| format!(" (on front {f})"));
            format!(
                "{since}last active {}; memory {}, storage {}{front}",
                crate::util::iso8601(v.last_activity_at),
                mb(v.memory_bytes),
                mb(v.storage_bytes)
            )
        });
        users.push(UserRow {
            workspace: view.map_or("none", |v| v.state),
            over_quota: view.is_some_and(|v| v.over_quota),
            workspace_detail,
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            role: u.role.as_str(),
            state: if u.active { "active" } else { "disabled" },
            last_login: u.last_login_at.clone().unwrap_or_else(|| "never".into()),
            sessions,
            toggle_value: if u.active { "false" } else { "true" },
            toggle_label: if u.active { "Disable" } else { "Enable" },
        });
    }
    let search = params.search.clone().unwrap_or_default();
    let link = |offset: u32| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("search", &search)
            .append_pair("offset", &offset.to_string())
            .finish();
        format!("{}/admin?{q}", page.root)
    };
    let shown_to = listed.offset as u64 + users.len() as u64;
    let template = UsersTemplate {
        shared_account: page.fleet.isolation == crate::multiuser::config::Isolation::Directory,
        frame: page.frame(notice_text(params.notice.as_deref()), error.map(|e| e.message.clone())),
        shown: users.len(),
        users,
        total: listed.total,
        prev: (listed.offset > 0).then(|| link(listed.offset.saturating_sub(PAGE))),
        next: (shown_to < listed.total).then(|| link(listed.offset + PAGE)),
        search,
    };
    let status = error.map_or(StatusCode::OK, |e| e.status);
    Ok(html(status, template.render().map_err(AppError::internal)?))
}

/// An operation's refusal shown on the page it came from; outages and bugs stay errors (the
/// error page, which reloads itself while a store is down).
fn shown_on_page(e: &AppError) -> bool {
    e.status.is_client_error()
}

async fn users_page(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Query(params): Query<UsersParams>,
) -> Result<Response, AppError> {
    render_users(&a, &page, &params, None).await
}

#[derive(Debug, Deserialize)]
struct CreateForm {
    username: String,
    #[serde(default)]
    email: String,
    password: String,
    #[serde(default)]
    role: String,
}

async fn create_user(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    f: Result<Form<CreateForm>, FormRejection>,
) -> Result<Response, AppError> {
    let f = form(f)?;
    let role = match f.role.as_str() {
        "" | "user" => Role::User,
        "admin" => Role::Admin,
        _ => return Err(AppError::new(StatusCode::BAD_REQUEST, "role: must be admin or user")),
    };
    let body = NewUserBody {
        username: f.username,
        password: f.password,
        email: Some(f.email).filter(|e| !e.trim().is_empty()),
        role: Some(role),
    };
    admin_outcome(&a, &page, api::create_user(&a, &page.caller, body).await, "created").await
}

/// Runs an admin's change to user `id` and returns to the list (or shows why not).
async fn admin_change(
    a: &Accounts,
    page: &PageCaller,
    id: &str,
    patch: AdminPatch,
    notice: &str,
) -> Result<Response, AppError> {
    admin_outcome(a, page, api::update_user(a, &page.caller, id, patch).await, notice).await
}

/// Back to the list with a notice, or the list with why not.
async fn admin_outcome<T>(
    a: &Accounts,
    page: &PageCaller,
    outcome: Result<T, AppError>,
    notice: &str,
) -> Result<Response, AppError> {
    match outcome {
        Ok(_) => Ok(done(&page.root, "/admin", notice)),
        Err(e) if shown_on_page(&e) => render_users(a, page, &UsersParams::default(), Some(&e)).await,
        Err(e) => Err(e),
    }
}

#[derive(Debug, Deserialize)]
struct ActiveForm {
    active: String,
}

async fn set_active(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
    f: Result<Form<ActiveForm>, FormRejection>,
) -> Result<Response, AppError> {
    let active = match form(f)?.active.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(AppError::new(StatusCode::BAD_REQUEST, "active: must be true or false")),
    };
    let notice = if active { "enabled" } else { "disabled" };
    admin_change(&a, &page, &id, AdminPatch { active: Some(active), ..AdminPatch::default() }, notice).await
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    password: String,
}

async fn reset_password(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
    f: Result<Form<PasswordForm>, FormRejection>,
) -> Result<Response, AppError> {
    let password = form(f)?.password;
    admin_change(&a, &page, &id, AdminPatch { password: Some(password), ..AdminPatch::default() }, "password").await
}

async fn revoke_sessions(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let outcome = a.revoke_sessions(&id, &page.caller.actor).await.map_err(AppError::from);
    admin_outcome(&a, &page, outcome, "revoked").await
}

async fn stop_workspace(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let outcome = api::stop_workspace(&a, &page.fleet, &id, &page.caller.actor).await;
    admin_outcome(&a, &page, outcome, "workspace-stopped").await
}

async fn start_workspace(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let outcome = api::start_anyway(&a, &page.fleet, &id, &page.caller.actor).await;
    admin_outcome(&a, &page, outcome, "workspace-allowed").await
}

#[derive(Template)]
#[template(path = "admin/confirm.html")]
struct ConfirmTemplate {
    frame: Frame,
    id: String,
    username: String,
}

async fn confirm_delete(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let user = a.user(&id).await?;
    let template = ConfirmTemplate { frame: page.frame(None, None), id: user.id, username: user.username };
    Ok(html(StatusCode::OK, template.render().map_err(AppError::internal)?))
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    confirm: String,
}

async fn delete_user(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Path(id): Path<String>,
    f: Result<Form<DeleteForm>, FormRejection>,
) -> Result<Response, AppError> {
    let confirm = form(f)?.confirm;
    let user = a.user(&id).await?;
    // The confirmation names the account, so a stale or forged form cannot delete another.
    if confirm != user.username {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "confirm: does not name this user"));
    }
    let outcome = a.delete(&id, &page.caller.actor).await.map_err(AppError::from);
    admin_outcome(&a, &page, outcome, "deleted").await
}

// ---- /admin/audit ----

struct EventRow {
    at: String,
    kind: String,
    status: String,
    username: String,
    actor: String,
    ip: String,
    details: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditTemplate {
    frame: Frame,
    username: String,
    kinds: Vec<(&'static str, bool)>,
    status: String,
    from: String,
    to: String,
    events: Vec<EventRow>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuditForm {
    username: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

async fn audit_page(
    State(a): State<Arc<Accounts>>,
    AdminPage(page): AdminPage,
    Query(f): Query<AuditForm>,
) -> Result<Response, AppError> {
    let username = f.username.clone().unwrap_or_default().trim().to_ascii_lowercase();
    // The page filters by name; the API by id. A deleted user's events keep their name only.
    let user_id = if username.is_empty() {
        None
    } else {
        match a.user_by_name(&username).await {
            Ok(u) => Some(u.id),
            Err(super::accounts::AccountError::NotFound) => Some(format!("unknown:{username}")),
            Err(e) => return Err(e.into()),
        }
    };
    let params = AuditParams {
        user: user_id,
        kind: f.kind.clone(),
        status: f.status.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
        limit: Some("100".into()),
        cursor: f.cursor.clone(),
    };
    let (events, next, error) = match api::audit_query(&params) {
        Ok(q) => {
            let listed = api::audit_page(&a, &q).await?;
            (listed.events, listed.next_cursor, None)
        }
        Err(e) if shown_on_page(&e) => (vec![], None, Some(e)),
        Err(e) => return Err(e),
    };
    let kind_selected = f.kind.clone().unwrap_or_default();
    let next = next.map(|cursor| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("username", &username)
            .append_pair("type", &kind_selected)
            .append_pair("status", f.status.as_deref().unwrap_or(""))
            .append_pair("from", f.from.as_deref().unwrap_or(""))
            .append_pair("to", f.to.as_deref().unwrap_or(""))
            .append_pair("cursor", &cursor)
            .finish();
        format!("{}/admin/audit?{q}", page.root)
    });
    let template = AuditTemplate {
        frame: page.frame(None, error.as_ref().map(|e| e.message.clone())),
        username,
        kinds: kind::ALL.iter().map(|k| (*k, *k == kind_selected)).collect(),
        status: f.status.clone().unwrap_or_default(),
        from: f.from.clone().unwrap_or_default(),
        to: f.to.clone().unwrap_or_default(),
        events: events
            .into_iter()
            .map(|e| EventRow {
                at: e.at,
                kind: e.kind,
                status: e.status,
                username: e.username.unwrap_or_default(),
                actor: e.actor.unwrap_or_default(),
                ip: e.ip.unwrap_or_default(),
                details: match &e.details {
                    serde_json::Value::Object(m) if m.is_empty() => String::new(),
                    d => d.to_string(),
                },
            })
            .collect(),
        next,
    };
    let status = error.map_or(StatusCode::OK, |e| e.status);
    Ok(html(status, template.render().map_err(AppError::internal)?))
}

// ---- /account ----

#[derive(Template)]
#[template(path = "admin/account.html")]
struct AccountTemplate {
    frame: Frame,
    username: String,
    role: &'static str,
    email: Option<String>,
    sessions: Vec<api::SessionView>,
    tokens: Vec<api::TokenView>,
    new_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AccountParams {
    notice: Option<String>,
}

async fn render_account(
    a: &Accounts,
    page: &PageCaller,
    notice: Option<&str>,
    error: Option<&AppError>,
    new_token: Option<String>,
) -> Result<Response, AppError> {
    let me = api::me(a, &page.caller).await?;
    let sessions = api::sessions_of(a, &me.id, page.caller.session_key.as_deref()).await?;
    let tokens = a.tokens_of(&me.id).await?.iter().map(api::TokenView::from).collect();
    let template = AccountTemplate {
        frame: page.frame(notice_text(notice), error.map(|e| e.message.clone())),
        username: me.username,
        role: me.role.as_str(),
        email: me.email,
        sessions,
        tokens,
        new_token,
    };
    let status = error.map_or(StatusCode::OK, |e| e.status);
    Ok(html(status, template.render().map_err(AppError::internal)?))
}

async fn account_page(
    State(a): State<Arc<Accounts>>,
    page: PageCaller,
    Query(p): Query<AccountParams>,
) -> Result<Response, AppError> {
    render_account(&a, &page, p.notice.as_deref(), None, None).await
}

/// Shows an operation's outcome on the account page.
async fn account_outcome<T>(
    a: &Accounts,
    page: &PageCaller,
    outcome: Result<T, AppError>,
    notice: &str,
) -> Result<Response, AppError> {
    match outcome {
        Ok(_) => Ok(done(&page.root, "/account", notice)),
        Err(e) if shown_on_page(&e) => render_account(a, page, None, Some(&e), None).await,
        Err(e) => Err(e),
    }
}

#[derive(Debug, Deserialize)]
struct OwnPasswordForm {
    current_password: String,
    password: String,
}

async fn change_password(
    State(a): State<Arc<Accounts>>,
    page: PageCaller,
    f: Result<Form<OwnPasswordForm>, FormRejection>,
) -> Result<Response, AppError> {
    let f = form(f)?;
    let patch = OwnPatch { password: Some(f.password), current_password: Some(f.current_password), email: None };
    let outcome = api::update_me(&a, &page.caller, patch).await;
    account_outcome(&a, &page, outcome, "own-password").await
}

#[derive(Debug, Deserialize)]
struct EmailForm {
    email: String,
}

async fn change_email(
    State(a): State<Arc<Accounts>>,
    page: PageCaller,
    f: Result<Form<EmailForm>, FormRejection>,
) -> Result<Response, AppError> {
    let email = form(f)?.email;
    let email = Some(Some(email).filter(|e| !e.trim().is_empty()));
    let outcome = api::update_me(&a, &page.caller, OwnPatch { email, ..OwnPatch::default() }).await;
    account_outcome(&a, &page, outcome, "email").await
}

async fn revoke_own_session(
    State(a): State<Arc<Accounts>>,
    page: PageCaller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let outcome =
        a.revoke_session(page.caller.identity.user.as_str(), &id, &page.caller.actor).await.map_err(AppError::from);
    account_outcome(&a, &page, outcome, "session").await
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    name: String,
}

async fn create_token(
    State(a): State<Arc<Accounts>>,
    page: PageCaller,
    f: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, AppError> {
    let name = form(f)?.name;
    match api::create_token(&a, &page.caller, &name).await {
        // Rendered, not redirected: the secret is shown this once and never again.
        Ok(created) => render_account(&a, &page, None, None, Some(created.token_secret)).await,
        Err(e) if shown_on_page(&e) => render_account(&a, &page, None, Some(&e), None).await,
        Err(e) => Err(e),
    }
}

async fn delete_token(
    State(a): State<Arc<Accounts>>,
    page: PageCaller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let outcome =
        a.delete_token(page.caller.identity.user.as_str(), &id, &page.caller.actor).await.map_err(AppError::from);
    account_outcome(&a, &page, outcome, "token-deleted").await
}
