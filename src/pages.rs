//! The HTML pages we render: the login page and the error page (spec §3.4, §3.13). Templates
//! live in `templates/`; askama checks them at compile time and escapes every value.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::error::{AppError, accepts_html};
use crate::i18n::Strings;
use crate::relative::{Query, normalize, relative_root};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate<'a> {
    lang: &'a str,
    title: String,
    root: &'a str,
    options_json: String,
    welcome: String,
    login_below: String,
    password_hint: String,
    placeholder: String,
    /// Multi-user mode: the username field's placeholder (the field is shown).
    username_placeholder: Option<String>,
    submit: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate<'a> {
    lang: &'a str,
    app_name: &'a str,
    root: &'a str,
    status: u16,
    message: &'a str,
    home: String,
    reload_after: Option<u32>,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutTemplate<'a> {
    lang: &'a str,
    app_name: &'a str,
    root: &'a str,
    question: String,
    explanation: String,
    button: String,
    confirm: &'a str,
}

/// Everything the pages need from the configuration, computed once.
#[derive(Debug, Clone)]
pub struct Pages {
    strings: Strings,
    welcome_text: Option<String>,
    password_hint_key: &'static str,
}

/// Where the login page says the password is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordHint {
    /// In the config file (also without a password, under `--auth none`).
    ConfigFile,
    /// `$PASSWORD`.
    EnvPassword,
    /// `$HASHED_PASSWORD`.
    EnvHashedPassword,
    /// Multi-user mode: each user's own username and password.
    Accounts,
}

/// A login-page error, by i18n key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    RateLimited,
    MissingPassword,
    IncorrectPassword,
    MissingUsername,
    IncorrectCredentials,
    AccountDisabled,
}

impl LoginError {
    fn key(self) -> &'static str {
        match self {
            LoginError::RateLimited => "LOGIN_RATE_LIMIT",
            LoginError::MissingPassword => "MISS_PASSWORD",
            LoginError::IncorrectPassword => "INCORRECT_PASSWORD",
            LoginError::MissingUsername => "MISS_USERNAME",
            LoginError::IncorrectCredentials => "INCORRECT_CREDENTIALS",
            LoginError::AccountDisabled => "ACCOUNT_DISABLED",
        }
    }
}

impl Pages {
    /// `welcome_text`: `--welcome-text`; `hint`: where the login page says the password is.
    pub fn new(strings: Strings, welcome_text: Option<String>, hint: PasswordHint) -> Pages {
        let password_hint_key = match hint {
            PasswordHint::EnvPassword => "LOGIN_USING_ENV_PASSWORD",
            PasswordHint::EnvHashedPassword => "LOGIN_USING_HASHED_PASSWORD",
            PasswordHint::ConfigFile => "LOGIN_PASSWORD",
            PasswordHint::Accounts => "LOGIN_ACCOUNT",
        };
        Pages { strings, welcome_text, password_hint_key }
    }

    pub fn app_name(&self) -> &str {
        self.strings.app_name()
    }

    /// The login page for a request at `path`, with an optional error inside the form, in the
    /// language `--locale` names or else the browser's (`accept_language`).
    pub fn login(&self, path: &str, error: Option<LoginError>, accept_language: Option<&str>) -> String {
        let root = relative_root(path);
        let s = self.strings.for_request(accept_language);
        let options = serde_json::json!({
            "base": root,
            "csStaticBase": format!("{root}/_static"),
            "codeServerVersion": crate::version::VERSION,
        });
        LoginTemplate {
            lang: s.code,
            title: s.get("LOGIN_TITLE"),
            root: &root,
            options_json: options.to_string(),
            welcome: self.welcome_text.clone().unwrap_or_else(|| s.get("WELCOME")),
            login_below: s.get("LOGIN_BELOW"),
            password_hint: s.get(self.password_hint_key),
            placeholder: s.get("PASSWORD_PLACEHOLDER"),
            username_placeholder: (self.password_hint_key == "LOGIN_ACCOUNT").then(|| s.get("USERNAME_PLACEHOLDER")),
            submit: s.get("SUBMIT"),
            error: error.map(|e| s.get(e.key())),
        }
        .render()
        .expect("the login template renders")
    }

    /// The page that asks before signing out, for a logout link followed from another site;
    /// `confirm` is the (relative) URL that signs out.
    pub fn logout_confirm(&self, path: &str, confirm: &str) -> String {
        let s = &self.strings;
        LogoutTemplate {
            lang: &s.lang,
            app_name: s.app_name(),
            root: &relative_root(path),
            question: s.get("LOGOUT_QUESTION"),
            explanation: s.get("LOGOUT_EXPLANATION"),
            button: s.get("LOGOUT_BUTTON"),
            confirm,
        }
        .render()
        .expect("the logout template renders")
    }

    /// The error page. "go home" leads to the relative root plus the request's `to` (if any);
    /// being relative, it cannot lead off-site.
    pub fn error(&self, err: &AppError, path: &str, to: Option<&str>) -> String {
        let (status, message) = (err.status, err.message.as_str());
        let root = relative_root(path);
        let home = normalize(&format!("{root}/{}", to.unwrap_or("/")), true);
        ErrorTemplate {
            lang: &self.strings.lang,
            app_name: self.strings.app_name(),
            root: &root,
            status: status.as_u16(),
            message,
            home,
            reload_after: err.retry_after,
        }
        .render()
        .expect("the error template renders")
    }
}

/// Middleware: turns [`AppError`] responses into the HTML error page for HTML clients.
pub async fn render_errors(State(pages): State<Arc<Pages>>, req: Request, next: Next) -> Response {
    let html = accepts_html(req.headers());
    let path = req.uri().path().to_string();
    let to = Query::parse(req.uri().query()).get("to").map(str::to_string);
    let res = next.run(req).await;
    if !html {
        return res;
    }
    as_page(&pages, res, &path, to.as_deref())
}

/// Swaps the body of an [`AppError`] response for the HTML error page of a request at `path`
/// (with `to` from its query); other responses pass unchanged. Used by [`render_errors`] and by
/// the port proxy, which answers outside the router's layers.
pub fn as_page(pages: &Pages, res: Response, path: &str, to: Option<&str>) -> Response {
    let Some(err) = res.extensions().get::<AppError>().cloned() else {
        return res;
    };
    let page = pages.error(&err, path, to);
    let (mut parts, _body) = res.into_parts();
    let mut out = (err.status, Html(page)).into_response();
    // Keep headers a handler added on purpose (Allow, Set-Cookie), replace the body's own (its
    // type, length and any compression: the page goes out uncompressed).
    for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_ENCODING] {
        parts.headers.remove(&name);
    }
    for (name, value) in parts.headers.iter() {
        out.headers_mut().append(name.clone(), value.clone());
    }
    crate::headers::add_private_headers(out.headers_mut());
    out
}
