//! `/login` and `/logout` (spec §3.4, §3.5).

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;

use crate::app::AppState;
use crate::cli::AuthMode;
use crate::error::AppError;
use crate::pages::LoginError;
use crate::relative::{Query, found, location};
use crate::server::ConnInfo;

use super::limiter::ClientKey;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", any(login))
        .route("/login/", any(login))
        .route("/login/{*rest}", any(login))
        .route("/logout", any(logout))
        .route("/logout/", any(logout))
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    password: Option<String>,
    base: Option<String>,
    href: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    req: Request,
) -> Result<Response, AppError> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let auth = &state.auth;

    if auth.mode == AuthMode::None {
        return Ok(found(&location(&path, &query, "/", &[])));
    }
    if auth.is_authenticated(req.headers()).await? {
        let to = query.get("to").filter(|t| !t.is_empty()).unwrap_or("/").to_string();
        return Ok(found(&location(&path, &query, &to, &[("to", None)])));
    }
    match *req.method() {
        Method::GET | Method::HEAD => return Ok(login_page(&state, &path, None)),
        Method::POST => {}
        _ => {
            let mut res = AppError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return Ok(res);
        }
    }

    let headers = req.headers().clone();
    let peer = conn.and_then(|Extension(c)| c.peer.map(|p| p.ip()));
    let client = auth.client_ip(peer, &headers);
    let form = read_form(req).await?;

    // Checked before the password, as in code-server: a limited client is refused even with the
    // right password.
    let key = ClientKey::from_ip(client);
    if !auth.limiter.allows(key) {
        return Ok(login_page(&state, &path, Some(LoginError::RateLimited)));
    }
    let password = form.password.as_deref().unwrap_or("");
    if password.trim().is_empty() {
        return Ok(login_page(&state, &path, Some(LoginError::MissingPassword)));
    }
    let checker = auth.checker.as_ref().expect("password mode has a checker");
    if !checker.verify(password).await {
        auth.limiter.record_failure(key);
        tracing::warn!(
            xForwardedFor = header_str(&headers, "x-forwarded-for"),
            remoteAddress = peer.map(|p| p.to_string()).unwrap_or_default(),
            userAgent = header_str(&headers, "user-agent"),
            timestamp = crate::util::now_ms() / 1000,
            "Failed login attempt"
        );
        return Ok(login_page(&state, &path, Some(LoginError::IncorrectPassword)));
    }

    let session = auth.sessions.create().await?;
    let base = query.get("base").or(form.base.as_deref());
    let href = query.get("href").or(form.href.as_deref());
    let scope = CookieScope::from_request(base, href, &headers);
    let cookie = scope.set_cookie(&auth.cookie_name, &session.token, auth.secure_cookies);
    let to = query.get("to").filter(|t| !t.is_empty()).unwrap_or("/").to_string();
    let mut res = found(&location(&path, &query, &to, &[("to", None)]));
    res.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(res)
}

/// `GET /logout`: revokes the session, clears the cookie, and goes to `to` (default `/`).
async fn logout(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, AppError> {
    let path = uri.path();
    let query = Query::parse(uri.query());
    let auth = &state.auth;
    if auth.mode == AuthMode::None {
        return Ok(found(&location(path, &query, "/", &[])));
    }
    if method != Method::GET && method != Method::HEAD {
        // code-server lets other methods fall through to VS Code, which needs a session.
        return Err(AppError::unauthorized());
    }
    for token in auth.session_tokens(&headers) {
        auth.sessions.revoke(token).await?;
    }
    let scope = CookieScope::from_request(query.get("base"), query.get("href"), &headers);
    let to = query.get("to").filter(|t| !t.is_empty()).unwrap_or("/").to_string();
    let mut res = found(&location(path, &query, &to, &[("to", None), ("base", None), ("href", None)]));
    res.headers_mut().append(header::SET_COOKIE, scope.clear_cookie(&auth.cookie_name, auth.secure_cookies));
    Ok(res)
}

fn login_page(state: &AppState, path: &str, error: Option<LoginError>) -> Response {
    let mut res = Html(state.pages.login(path, error)).into_response();
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
    let rejection = |status: StatusCode| match status {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(status, "request entity too large"),
        _ => AppError::new(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    if content_type.starts_with("application/json") {
        Json::<LoginForm>::from_request(req, &()).await.map(|Json(f)| f).map_err(|r| rejection(r.status()))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Form::<LoginForm>::from_request(req, &()).await.map(|Form(f)| f).map_err(|r| rejection(r.status()))
    } else {
        axum::body::Bytes::from_request(req, &()).await.map_err(|r| rejection(r.status()))?;
        Ok(LoginForm::default())
    }
}

/// The cookie's Path and Domain (code-server's `getCookieOptions`): the page's public URL is
/// `base` resolved against `href`; Path is its path without trailing slashes, Domain its host
/// unless that is an IP address, `localhost`-like, or has no dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieScope {
    pub path: String,
    pub domain: Option<String>,
}

impl CookieScope {
    pub fn from_request(base: Option<&str>, href: Option<&str>, headers: &HeaderMap) -> CookieScope {
        let fallback_href;
        let href = match href.filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
                fallback_href = format!("http://{host}");
                &fallback_href
            }
        };
        let base = base.filter(|b| !b.is_empty()).unwrap_or("/");
        let Some(url) = url::Url::parse(href).ok().and_then(|u| u.join(base).ok()) else {
            return CookieScope { path: "/".into(), domain: None };
        };
        let trimmed = url.path().trim_end_matches('/');
        // Anything that could break out of the attribute falls back to the whole site.
        let path = if trimmed.is_empty() || trimmed.contains([';', ',', ' ']) { "/" } else { trimmed };
        let domain = match url.host() {
            Some(url::Host::Domain(d))
                if d.contains('.')
                    && !d.ends_with(".localhost")
                    && !d.chars().all(|c| c.is_ascii_digit() || c == '.') =>
            {
                Some(d.to_string())
            }
            _ => None,
        };
        CookieScope { path: path.to_string(), domain }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(base: Option<&str>, href: Option<&str>, host: Option<&str>) -> CookieScope {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, host.parse().unwrap());
        }
        CookieScope::from_request(base, href, &h)
    }

    #[test]
    fn scope_follows_code_server() {
        let s = scope(Some("."), Some("https://ex.com/ide/login"), None);
        assert_eq!(s, CookieScope { path: "/ide".into(), domain: Some("ex.com".into()) });
        let s = scope(Some("."), Some("http://127.0.0.1:8080/login"), None);
        assert_eq!(s, CookieScope { path: "/".into(), domain: None });
        assert_eq!(scope(None, None, Some("localhost:8080")).domain, None);
        assert_eq!(scope(None, None, Some("dev.localhost")).domain, None);
        assert_eq!(scope(None, None, Some("[::1]:8080")).domain, None);
        assert_eq!(scope(None, None, Some("code.example.com:8443")).domain, Some("code.example.com".into()));
        assert_eq!(scope(Some("./.."), Some("http://a.b/x/y/login/"), None).path, "/x/y");
        assert_eq!(scope(Some("/"), Some("not a url"), None).path, "/");
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
