//! Authentication: password checking, the session cookie, the session store, the login limiter,
//! and the `/login` and `/logout` routes.

pub mod limiter;
pub mod login;
pub mod password;
pub mod session;

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::cli::AuthMode;
use crate::error::AppError;
use limiter::LoginLimiter;
use password::PasswordChecker;
use session::Sessions;

pub use login::routes;

/// Everything authentication needs at request time.
pub struct Auth {
    pub mode: AuthMode,
    /// `Some` when `mode` is `Password`.
    pub checker: Option<PasswordChecker>,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    /// `code-server-session`, or `code-server-session-<suffix>`.
    pub cookie_name: String,
    /// Add `Secure` to cookies (we serve TLS).
    pub secure_cookies: bool,
    pub trusted_proxies: Vec<IpAddr>,
}

impl Auth {
    pub fn cookie_name_for(suffix: Option<&str>) -> String {
        match suffix {
            Some(s) => format!("code-server-session-{s}"),
            None => "code-server-session".to_string(),
        }
    }

    /// The values of every cookie named like our session cookie (a browser may send several,
    /// set at different paths).
    pub fn session_tokens<'a>(&'a self, headers: &'a HeaderMap) -> impl Iterator<Item = &'a str> + 'a {
        self.tokens_in(cookie_values(headers))
    }

    /// [`Auth::session_tokens`] among `Cookie` header values.
    fn tokens_in<'a>(&self, cookie_headers: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
        cookie_pairs(cookie_headers).filter(|(n, _)| *n == self.cookie_name).map(|(_, v)| v.trim())
    }

    /// True when auth is off or the request carries a live session.
    pub async fn is_authenticated(&self, headers: &HeaderMap) -> Result<bool, AppError> {
        self.is_authenticated_by(cookie_values(headers)).await
    }

    /// [`Auth::is_authenticated`] for a request whose `Cookie` header values are `cookie_headers`.
    pub async fn is_authenticated_by<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a str>,
    ) -> Result<bool, AppError> {
        if self.mode == AuthMode::None {
            return Ok(true);
        }
        for token in self.tokens_in(cookie_headers) {
            if self.sessions.validate(token).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The client's address: the peer, or, when the peer is one of `--trusted-proxies`, the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        Some(forwarded.into_iter().rev().find(|ip| !self.trusted_proxies.contains(ip)).unwrap_or(peer))
    }
}

/// `(name, value)` pairs of every `Cookie` header, in order.
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_pairs(cookie_values(headers))
}

/// The `Cookie` header values that are text.
fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(axum::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok())
}

/// `(name, value)` pairs of `Cookie` header values, in order.
pub fn cookie_pairs<'a>(values: impl Iterator<Item = &'a str>) -> impl Iterator<Item = (&'a str, &'a str)> {
    values.flat_map(|v| v.split(';')).filter_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        Some((n.trim(), v))
    })
}

/// Extractor for routes that need a session: rejects with 401 (JSON or the HTML page).
pub struct Authenticated;

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if state.auth.is_authenticated(&parts.headers).await? {
            Ok(Authenticated)
        } else {
            Err(AppError::unauthorized())
        }
    }
}
