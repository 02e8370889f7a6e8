//! `/login` and `/logout` (spec §3.4, §3.5).

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::error::AppError;
use crate::origin::request_host;
use crate::pages::{LoginError, Pages};
use crate::relative::{Query, found, location};
use crate::server::ConnInfo;

use super::limiter::ClientKey;
use super::{Auth, Mode, SignIn, SignInOutcome};

pub fn routes<S>() -> Router<S>
where
    Arc<Auth>: FromRef<S>,
    Arc<Pages>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/login", any(login))
        .route("/login/", any(login))
        .route("/login/{*rest}", any(login))
        .route("/logout", any(logout))
        .route("/logout/", any(logout))
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    /// Multi-user mode only (code-server's page has a hidden one for password managers).
    username: Option<String>,
    password: Option<String>,
    base: Option<String>,
    href: Option<String>,
}

async fn login(
    State(auth): State<Arc<Auth>>,
    State(pages): State<Arc<Pages>>,
    conn: Option<Extension<ConnInfo>>,
    req: Request,
) -> Result<Response, AppError> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let lang = header_str(req.headers(), "accept-language");
    let lang = Some(lang.as_str()).filter(|l| !l.is_empty());

    if matches!(auth.mode, Mode::None) {
        return Ok(found(&location(&path, &query, "/", &[])));
    }
    if auth.is_authenticated(req.headers()).await? {
        let to = query.get("to").filter(|t| !t.is_empty()).unwrap_or("/").to_string();
        return Ok(found(&location(&path, &query, &to, &[("to", None)])));
    }
    match *req.method() {
        Method::GET | Method::HEAD => return Ok(login_page(&pages, &path, lang, None)),
        Method::POST => {}
        _ => {
            let mut res = AppError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return Ok(res);
        }
    }

    let headers = req.headers().clone();
    let authority = req.uri().authority().map(|a| a.to_string());
    let peer = conn.and_then(|Extension(c)| c.peer.map(|p| p.ip()));
    let client = auth.client_ip(peer, &headers);
    let form = read_form(req).await?;

    // Taken before the password is checked, as code-server checks first: a limited client is
    // refused even with the right password, and concurrent attempts cannot overtake the count.
    // A browser that signed in before is counted by its device cookie instead.
    let device = auth.device_in(&headers);
    let key = device.map_or_else(|| ClientKey::from_ip(client), ClientKey::Device);
    let Some(attempt) = auth.limiter.begin(key) else {
        crate::metrics::login(crate::metrics::Login::RateLimited);
        return Ok(login_page(&pages, &path, lang, Some(LoginError::RateLimited)));
    };
    let password = form.password.as_deref().unwrap_or("");
    let username = form.username.as_deref().unwrap_or("").trim();
    let log_failure = || {
        crate::metrics::login(crate::metrics::Login::Failure);
        tracing::warn!(
            xForwardedFor = header_str(&headers, "x-forwarded-for"),
            remoteAddress = peer.map(|p| p.to_string()).unwrap_or_default(),
            userAgent = header_str(&headers, "user-agent"),
            timestamp = crate::util::now_ms() / 1000,
            "Failed login attempt"
        )
    };
    let accounts = match &auth.mode {
        Mode::Accounts(directory) => Some(directory),
        _ => None,
    };
    if accounts.is_some() && username.is_empty() {
        attempt.refund();
        return Ok(login_page(&pages, &path, lang, Some(LoginError::MissingUsername)));
    }
    if password.trim().is_empty() {
        attempt.refund();
        return Ok(login_page(&pages, &path, lang, Some(LoginError::MissingPassword)));
    }
    let token = match &auth.mode {
        Mode::Password(checker) => {
            if !checker.verify(password).await {
                // The attempt's tokens stay spent.
                drop(attempt);
                log_failure();
                return Ok(login_page(&pages, &path, lang, Some(LoginError::IncorrectPassword)));
            }
            attempt.refund();
            auth.sessions.create().await?.token
        }
        Mode::Accounts(directory) => {
            // One username's attempts are counted wherever they come from.
            let Some(account_attempt) = auth.limiter.begin(ClientKey::account(username)) else {
                attempt.refund();
                crate::metrics::login(crate::metrics::Login::RateLimited);
                return Ok(login_page(&pages, &path, lang, Some(LoginError::RateLimited)));
            };
            let sign_in = SignIn {
                username: username.to_string(),
                password: password.to_string(),
                ip: client,
                user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
            };
            match directory.sign_in(sign_in).await? {
                SignInOutcome::Session { token } => {
                    attempt.refund();
                    account_attempt.refund();
                    token
                }
                SignInOutcome::Incorrect => {
                    log_failure();
                    return Ok(login_page(&pages, &path, lang, Some(LoginError::IncorrectCredentials)));
                }
                SignInOutcome::Disabled => {
                    crate::metrics::login(crate::metrics::Login::Failure);
                    return Ok(login_page(&pages, &path, lang, Some(LoginError::AccountDisabled)));
                }
            }
        }
        Mode::None => unreachable!("handled above"),
    };
    crate::metrics::login(crate::metrics::Login::Success);

    let base = query.get("base").or(form.base.as_deref());
    let href = query.get("href").or(form.href.as_deref());
    let host = request_host(&headers, authority.as_deref());
    let scope = CookieScope::for_request(host.as_deref(), base, href, &auth.cookie_domains);
    let to = query.get("to").filter(|t| !t.is_empty()).unwrap_or("/").to_string();
    let mut res = found(&location(&path, &query, &to, &[("to", None)]));
    res.headers_mut().append(header::SET_COOKIE, scope.set_cookie(&auth.cookie_name, &token, auth.secure_cookies));
    res.headers_mut().append(
        header::SET_COOKIE,
        scope.device_cookie(&auth.device_cookie_name, &auth.devices.issue(), auth.secure_cookies),
    );
    Ok(res)
}

/// `GET /logout`: revokes the session, clears the cookie, and goes to `to` (default `/`). A
/// link followed from another site only gets a page asking to confirm (code-server's logout is
/// a GET, so any page could otherwise sign a visitor out).
async fn logout(
    State(auth): State<Arc<Auth>>,
    State(pages): State<Arc<Pages>>,
    conn: Option<Extension<ConnInfo>>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, AppError> {
    let path = uri.path();
    let query = Query::parse(uri.query());
    if matches!(auth.mode, Mode::None) {
        return Ok(found(&location(path, &query, "/", &[])));
    }
    if method != Method::GET && method != Method::HEAD {
        // code-server lets other methods fall through to VS Code, which needs a session.
        return Err(AppError::unauthorized());
    }
    let authority = uri.authority().map(|a| a.as_str());
    if !same_origin(&headers, authority) {
        let confirm = match uri.query() {
            Some(q) => format!("{}/logout?{q}", crate::relative::relative_root(path)),
            None => format!("{}/logout", crate::relative::relative_root(path)),
        };
        let mut res = Html(pages.logout_confirm(path, &confirm)).into_response();
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(res);
    }
    let client = auth.client_ip(conn.and_then(|Extension(c)| c.peer.map(|p| p.ip())), &headers);
    for token in auth.session_tokens(&headers) {
        match &auth.mode {
            Mode::Accounts(directory) => directory.sign_out(token, client).await?,
            _ => auth.sessions.revoke(token).await?,
        }
    }
    let host = request_host(&headers, authority);
    let scope = CookieScope::for_request(host.as_deref(), query.get("base"), query.get("href"), &auth.cookie_domains);
    let to = query.get("to").filter(|t| !t.is_empty()).unwrap_or("/").to_string();
    let mut res = found(&location(path, &query, &to, &[("to", None), ("base", None), ("href", None)]));
    res.headers_mut().append(header::SET_COOKIE, scope.clear_cookie(&auth.cookie_name, auth.secure_cookies));
    Ok(res)
}

/// Whether a request comes from our own pages (or was typed in): `Sec-Fetch-Site` says so in
/// every current browser; without it, an `Origin` or `Referer` naming another host says no.
fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    if headers.contains_key(header::ORIGIN) {
        return crate::origin::check_origin(headers, authority, &[]).is_ok();
    }
    match headers.get(header::REFERER).and_then(|r| r.to_str().ok()) {
        Some(referer) => {
            let mut as_origin = HeaderMap::new();
            for name in [header::HOST, header::FORWARDED, axum::http::HeaderName::from_static("x-forwarded-host")] {
                if let Some(v) = headers.get(&name) {
                    as_origin.insert(name, v.clone());
                }
            }
            let Some(origin) = url::Url::parse(referer).ok().map(|u| u.origin().ascii_serialization()) else {
                return false;
            };
            let Ok(origin) = HeaderValue::from_str(&origin) else { return false };
            as_origin.insert(header::ORIGIN, origin);
            crate::origin::check_origin(&as_origin, authority, &[]).is_ok()
        }
        None => true,
    }
}

fn login_page(pages: &Pages, path: &str, accept_language: Option<&str>, error: Option<LoginError>) -> Response {
    let mut res = Html(pages.login(path, error, accept_language)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn header_str(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Reads the login body as JSON or a form (100 kB limit, code-server's error statuses). A body
/// of any other type is treated as empty, which ends in "Missing password".
async fn read_form(req: Request) -> Result<LoginForm, AppError> {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let rejection = |e: &(dyn std::error::Error + 'static), status: StatusCode| match status {
        _ if crate::error::body_timed_out(e) => crate::error::body_timeout(),
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(status, "request entity too large"),
        _ => AppError::new(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    if content_type.starts_with("application/json") {
        Json::<LoginForm>::from_request(req, &()).await.map(|Json(f)| f).map_err(|r| rejection(&r, r.status()))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Form::<LoginForm>::from_request(req, &()).await.map(|Form(f)| f).map_err(|r| rejection(&r, r.status()))
    } else {
        axum::body::Bytes::from_request(req, &()).await.map_err(|r| rejection(&r, r.status()))?;
        Ok(LoginForm::default())
    }
}

/// The cookie's Path and Domain. code-server (`getCookieOptions`) takes both from `base`
/// resolved against `href`, which come from the request, so a login link could scope the
/// session cookie to any domain, or inject attributes. Ours:
/// * `Domain` comes only from the host the request was sent to: that host when it is a name
///   with a dot (not an IP address, not `localhost`-like), widened to the highest configured
///   proxy domain it falls under (so `{{port}}.<domain>` hosts share the login);
/// * `Path` is code-server's (the path of `base` resolved against `href`, trailing slashes
///   removed, which is how a path prefix added by a reverse proxy is learnt), but only when
///   `href` names the host the request was sent to and the path is made of plain URL
///   characters; otherwise `/`. No `;`, `,` or space can reach `Set-Cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieScope {
    pub path: String,
    pub domain: Option<String>,
}

impl CookieScope {
    /// `host`: the request's host (see [`crate::origin::request_host`]); `cookie_domains`: the
    /// fixed parts of the configured proxy domains (`example.com` for `{{port}}.example.com`).
    pub fn for_request(
        host: Option<&str>,
        base: Option<&str>,
        href: Option<&str>,
        cookie_domains: &[String],
    ) -> CookieScope {
        let name = host.map(|h| crate::origin::split_host_port(h).0);
        let domain = name.as_deref().filter(|n| is_cookie_domain(n)).map(|n| {
            let under = |d: &&String| n == d.as_str() || n.ends_with(&format!(".{d}"));
            cookie_domains.iter().filter(under).min_by_key(|d| d.len()).cloned().unwrap_or_else(|| n.to_string())
        });
        let path = href
            .filter(|h| !h.is_empty())
            .and_then(|h| url::Url::parse(h).ok())
            .filter(|u| u.host_str().map(str::to_ascii_lowercase) == name)
            .and_then(|u| u.join(base.filter(|b| !b.is_empty()).unwrap_or("/")).ok())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty() && p.bytes().all(is_path_byte))
            .unwrap_or_else(|| "/".to_string());
        CookieScope { path, domain }
    }

    fn attributes(&self, secure: bool) -> String {
        let domain = self.domain.as_ref().map(|d| format!("; Domain={d}")).unwrap_or_default();
        let secure = if secure { "; Secure" } else { "" };
        format!("{domain}; Path={}; HttpOnly{secure}; SameSite=Lax", self.path)
    }

    pub fn set_cookie(&self, name: &str, value: &str, secure: bool) -> HeaderValue {
        HeaderValue::from_str(&format!("{name}={value}{}", self.attributes(secure))).expect("cookie is ASCII")
    }

    pub fn clear_cookie(&self, name: &str, secure: bool) -> HeaderValue {
        let attrs = self.attributes(secure);
        let (before_http_only, rest) = attrs.split_once("; HttpOnly").expect("attributes contain HttpOnly");
        HeaderValue::from_str(&format!(
            "{name}={before_http_only}; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly{rest}"
        ))
        .expect("cookie is ASCII")
    }

    /// The device cookie (see [`super::device`]): this host only, a year, sent only with
    /// requests from our own pages.
    pub fn device_cookie(&self, name: &str, value: &str, secure: bool) -> HeaderValue {
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={}; Max-Age={}; HttpOnly{secure}; SameSite=Strict",
            self.path,
            super::device::MAX_AGE_SECONDS
        ))
        .expect("cookie is ASCII")
    }
}

/// A host name a cookie may name as its Domain: has a dot, is not an IP address, not
/// `localhost`-like, and holds only name characters.
fn is_cookie_domain(name: &str) -> bool {
    name.contains('.')
        && !name.ends_with(".localhost")
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// RFC 3986 path characters, less `;` and `,` (attribute separators in `Set-Cookie`).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+=:@%/".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(base: Option<&str>, href: Option<&str>, host: Option<&str>) -> CookieScope {
        CookieScope::for_request(host, base, href, &["example.com".to_string()])
    }

    #[test]
    fn scope_follows_code_server_for_the_host_asked() {
        let s = scope(Some("."), Some("https://ex.com/ide/login"), Some("ex.com"));
        assert_eq!(s, CookieScope { path: "/ide".into(), domain: Some("ex.com".into()) });
        let s = scope(Some("."), Some("http://127.0.0.1:8080/login"), Some("127.0.0.1:8080"));
        assert_eq!(s, CookieScope { path: "/".into(), domain: None });
        assert_eq!(scope(None, None, Some("localhost:8080")).domain, None);
        assert_eq!(scope(None, None, Some("dev.localhost")).domain, None);
        assert_eq!(scope(None, None, Some("[::1]:8080")).domain, None);
        assert_eq!(scope(None, None, Some("code.other.org:8443")).domain, Some("code.other.org".into()));
        assert_eq!(scope(Some("./.."), Some("http://a.b/x/y/login/"), Some("a.b")).path, "/x/y");
        assert_eq!(scope(Some("/"), Some("not a url"), Some("a.b")).path, "/");
    }

    #[test]
    fn scope_never_comes_from_a_foreign_href() {
        // A login link naming another domain, or a parent domain: the host asked decides.
        let s = scope(Some("."), Some("https://evil.org/x/login"), Some("code.other.org"));
        assert_eq!(s, CookieScope { path: "/".into(), domain: Some("code.other.org".into()) });
        let s = scope(Some("."), Some("https://other.org/login"), Some("code.other.org"));
        assert_eq!(s.domain.as_deref(), Some("code.other.org"));
        // Attribute separators never pass.
        let s = scope(Some("./x;Domain=evil.org,y"), Some("https://a.b/login"), Some("a.b"));
        assert_eq!(s.path, "/");
        assert_eq!(scope(Some("."), Some("https://a.b/a%20b;c/login"), Some("a.b")).path, "/");
        assert_eq!(scope(None, None, Some("a.b;Domain=evil.org")).domain, None);
        // Proxy-domain hosts share the login with their base domain.
        assert_eq!(scope(None, None, Some("3000.example.com")).domain.as_deref(), Some("example.com"));
        assert_eq!(scope(None, None, Some("example.com")).domain.as_deref(), Some("example.com"));
        assert_eq!(scope(None, None, Some("notexample.com")).domain.as_deref(), Some("notexample.com"));
    }

    #[test]
    fn cookie_strings() {
        let s = CookieScope { path: "/ide".into(), domain: Some("ex.com".into()) };
        assert_eq!(
            s.set_cookie("code-server-session", "abc", true),
            "code-server-session=abc; Domain=ex.com; Path=/ide; HttpOnly; Secure; SameSite=Lax"
        );
        let s = CookieScope { path: "/".into(), domain: None };
        assert_eq!(
            s.clear_cookie("code-server-session", false),
            "code-server-session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
        );
    }
}
