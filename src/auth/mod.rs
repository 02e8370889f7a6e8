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
    /// Multi-user mode: accounts with their own sessions and API tokens.
    Accounts(Arc<dyn Directory>),
}

/// A sign-in with a username (multi-user mode).
pub struct SignIn {
    pub username: String,
    pub password: String,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

pub enum SignInOutcome {
    /// Signed in: the new session's cookie token.
    Session { token: String },
    /// No such user, or not their password (the two cannot be told apart, by text or time).
    Incorrect,
    /// The right password for a disabled account.
    Disabled,
}

/// Accounts as authentication sees them: who a session or API token belongs to, signing in
/// and out. Implemented by [`crate::multiuser`]; kept here as a trait so authentication does
/// not depend on the stores behind it.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The identity of a live session's cookie token.
    async fn by_session(&self, token: &str) -> Result<Option<Identity>, AppError>;
    /// The identity of a personal API token (`Authorization: Bearer`).
    async fn by_bearer(&self, token: &str) -> Result<Option<Identity>, AppError>;
    async fn sign_in(&self, attempt: SignIn) -> Result<SignInOutcome, AppError>;
    /// Revokes the session `token` names (audited as a logout).
    async fn sign_out(&self, token: &str, ip: Option<IpAddr>) -> Result<(), AppError>;
    /// How many sessions are live, every user's together.
    async fn live_sessions(&self) -> Result<u64, AppError>;
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
    /// How many sessions are live (`None` while the store cannot tell), for the metrics.
    pub async fn live_sessions(&self) -> Option<u64> {
        let n = match &self.mode {
            Mode::Accounts(directory) => directory.live_sessions().await,
            Mode::None | Mode::Password(_) => self.sessions.live().await.map_err(AppError::from),
        };
        n.map_err(|e| tracing::debug!("counting sessions: {}", e.message)).ok()
    }

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
        match &self.mode {
            Mode::None => Ok(Some(Identity::owner(&self.owner_name, None))),
            Mode::Password(_) => {
                for token in self.tokens_in(headers.header_values("cookie")) {
                    if let Some(key) = self.sessions.validate(token).await? {
                        return Ok(Some(Identity::owner(&self.owner_name, Some(key))));
                    }
                }
                Ok(None)
            }
            Mode::Accounts(directory) => {
                if let Some(token) = bearer_token(headers) {
                    // A request that names a token stands or falls by it.
                    return directory.by_bearer(token).await;
                }
                for token in self.tokens_in(headers.header_values("cookie")) {
                    if let Some(identity) = directory.by_session(token).await? {
                        return Ok(Some(identity));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Whether the request authenticates with a bearer token (which needs no origin check:
    /// a browser never sends one by itself).
    pub fn uses_bearer(headers: &impl HeaderSource) -> bool {
        bearer_token(headers).is_some()
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

/// What our personal API tokens begin with. A bearer token without it is someone else's (a
/// proxied app's own), so it neither authenticates nor fails a request here.
pub const API_TOKEN_PREFIX: &str = "cs_";

/// Our token in an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &impl HeaderSource) -> Option<&str> {
    headers.header_values("authorization").find_map(our_bearer)
}

/// The token of an `Authorization` value when it is `Bearer` with one of ours. The port proxy
/// drops such a header: our token is for us, never for the app behind the proxy.
pub fn our_bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.starts_with(API_TOKEN_PREFIX)).then_some(token)
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
