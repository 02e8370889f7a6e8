//! Authentication: password checking, the session cookie, the session store, the login limiter,
//! and the `/login` and `/logout` routes.

pub mod device;
pub mod limiter;
pub mod login;
pub mod password;
pub mod session;

use std::net::IpAddr;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::error::AppError;
use crate::headers::{HeaderSource, cookie_pairs};
use crate::identity::Identity;
use device::DeviceKeys;
use limiter::LoginLimiter;
use password::PasswordChecker;
use session::Sessions;

pub use login::routes;

/// How requests are authenticated.
pub enum Mode {
    /// `--auth none`: everyone is let in.
    None,
    /// `--auth password`, with the configured password's checker.
    Password(PasswordChecker),
}

/// Everything authentication needs at request time.
pub struct Auth {
    pub mode: Mode,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    /// `code-server-session`, or `code-server-session-<suffix>`.
    pub cookie_name: String,
    /// `code-server-device`, or `code-server-device-<suffix>` (see [`device`]).
    pub device_cookie_name: String,
    pub devices: DeviceKeys,
    /// The fixed parts of the proxy domains (`example.com` for `{{port}}.example.com`): a login
    /// on a host under one scopes the cookie to it (see [`login::CookieScope`]).
    pub cookie_domains: Vec<String>,
    /// Add `Secure` to cookies (we serve TLS).
    pub secure_cookies: bool,
    pub trusted_proxies: Vec<IpAddr>,
    /// The single user's name (the OS account we run as).
    pub owner_name: String,
}

impl Auth {
    pub fn cookie_name_for(suffix: Option<&str>) -> String {
        match suffix {
            Some(s) => format!("code-server-session-{s}"),
            None => "code-server-session".to_string(),
        }
    }

    pub fn device_cookie_name_for(suffix: Option<&str>) -> String {
        match suffix {
            Some(s) => format!("code-server-device-{s}"),
            None => "code-server-device".to_string(),
        }
    }

    /// The fixed domain of each proxy-domain pattern that ends in one (`{{port}}.example.com`
    /// → `example.com`); patterns with `{{host}}` at the end have none.
    pub fn cookie_domains_of(proxy_domains: &[String]) -> Vec<String> {
        proxy_domains
            .iter()
            .filter_map(|d| d.rsplit_once("}}").map(|(_, rest)| rest.trim_start_matches('.').to_string()))
            .filter(|d| d.contains('.') && !d.contains('{'))
            .collect()
    }

    /// The id of the request's device cookie, when it carries one we issued.
    pub fn device_in(&self, headers: &impl HeaderSource) -> Option<[u8; 16]> {
        cookie_pairs(headers.header_values("cookie"))
            .filter(|(n, _)| *n == self.device_cookie_name.as_bytes())
            .find_map(|(_, v)| self.devices.verify(std::str::from_utf8(v).ok()?))
    }

    /// The values of every cookie named like our session cookie (a browser may send several,
    /// set at different paths).
    pub fn session_tokens<'a>(&'a self, headers: &'a impl HeaderSource) -> impl Iterator<Item = &'a str> + 'a {
        self.tokens_in(headers.header_values("cookie"))
    }

    /// [`Auth::session_tokens`] among `Cookie` header values.
    fn tokens_in<'a>(
        &'a self,
        cookie_headers: impl Iterator<Item = &'a [u8]> + 'a,
    ) -> impl Iterator<Item = &'a str> + 'a {
        cookie_pairs(cookie_headers)
            .filter(|(n, _)| *n == self.cookie_name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// True when auth is off or the request carries a live session.
    pub async fn is_authenticated(&self, headers: &impl HeaderSource) -> Result<bool, AppError> {
        Ok(self.identify(headers).await?.is_some())
    }

    /// Who the request is from: anyone when auth is off, else the holder of a live session;
    /// `None` when it carries none.
    pub async fn identify(&self, headers: &impl HeaderSource) -> Result<Option<Identity>, AppError> {
        if matches!(self.mode, Mode::None) {
            return Ok(Some(Identity::owner(&self.owner_name, None)));
        }
        for token in self.tokens_in(headers.header_values("cookie")) {
            if let Some(key) = self.sessions.validate(token).await? {
                return Ok(Some(Identity::owner(&self.owner_name, Some(key))));
            }
        }
        Ok(None)
    }

    /// The client's address: the peer, or, when the peer is one of `--trusted-proxies`, the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Entries are read
    /// from the right, as each proxy appends its own; at one that does not parse, the chain can
    /// no longer be trusted (everything left of it was written by whoever sent it), and the
    /// last trusted proxy seen is the client.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.into_iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
                return Some(client);
            };
            client = ip;
            if !self.trusted_proxies.contains(&ip) {
                return Some(ip);
            }
        }
        Some(client)
    }
}

/// The extractor for every route that needs a session: the request's [`Identity`], or a 401
/// (JSON, or the HTML page via [`crate::pages::render_errors`]).
impl<S> FromRequestParts<S> for Identity
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Identity, AppError> {
        let auth = Arc::<Auth>::from_ref(state);
        auth.identify(&parts.headers).await?.ok_or_else(AppError::unauthorized)
    }
}
