//! The one decision about a proxied request, made alike for hyper's path ([`super::front`]) and
//! the express lane ([`super::lane`]): whether it is for the port proxy at all ([`route`]), and
//! whether it may pass and where it goes ([`admit`]). Both read the request through [`Head`],
//! so they see the same method, target, host and cookies; the lane takes only what this admits
//! and hands everything else to hyper, which answers it from the same decision.

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

use super::ProxyState;
use super::path::{self, Kind};
use super::pool::Owner;
use super::{domain, parse_port};
use crate::error::AppError;
use crate::headers::HeaderSource;
use crate::relative::{Query, location};
use crate::websocket as ws;

/// What admission reads of a request.
pub trait Head: HeaderSource {
    fn method(&self) -> &str;
    /// The request target as it arrived, in origin form (`/proxy/3000/a?b`).
    fn target(&self) -> &str;
    /// HTTP/2's `:authority`, for a request without a `Host` header.
    fn authority(&self) -> Option<&str>;
}

/// A request hyper has parsed.
pub struct Parts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl HeaderSource for Parts<'_> {
    fn header_values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.header_values(name)
    }
}

impl Head for Parts<'_> {
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn target(&self) -> &str {
        self.uri.path_and_query().map_or("/", PathAndQuery::as_str)
    }
    fn authority(&self) -> Option<&str> {
        self.uri.authority().map(|a| a.as_str())
    }
}

/// Which kind of proxied request this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A proxy-domain host; the port, or why it is not one.
    Domain(Result<u16, AppError>),
    /// `/proxy/<port>/…` or `/absproxy/<port>/…`.
    Path(Kind),
}

/// Whether `head` is for the port proxy: a proxy-domain host (whatever the path; not our own
/// port, which would loop), else a `/proxy` or `/absproxy` path. `local`: the port the request
/// came in on.
pub fn route(state: &ProxyState, head: &impl Head, local: Option<u16>) -> Option<Route> {
    if !state.proxy.domains.is_empty()
        && let Some(port) = domain::port_of(&state.proxy, head, local)
    {
        return Some(Route::Domain(port));
    }
    path::kind(split_target(head.target()).0).map(Route::Path)
}

/// The path and query of a request target; a `#fragment` (which browsers never send) is
/// dropped, as hyper drops it from the URI.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// A request that may pass, and where it goes.
#[derive(Debug)]
pub struct Admitted {
    pub port: u16,
    /// The origin-form target the upstream gets, exactly as it should arrive.
    pub target: PathAndQuery,
    /// `/proxy` only: a `Location` starting with `/` gets `/proxy/<port>` in front.
    pub rewrite_location: bool,
    /// Whose pooled upstream connections it may use.
    pub owner: Owner,
}

/// Why a request may not pass.
#[derive(Debug)]
pub enum Refusal {
    /// Answered with this error (JSON, or the HTML page for browsers).
    Error(AppError),
    /// Not logged in, at a page a browser opens: a redirect here (the login page, relative).
    Login(String),
    /// A proxy-domain host's login page and assets, for someone not logged in: the router's.
    Router,
}

impl From<AppError> for Refusal {
    fn from(e: AppError) -> Refusal {
        Refusal::Error(e)
    }
}

/// The checks every proxied request passes, in code-server's order: `--disable-proxy` (403);
/// for a WebSocket, the Origin check (403); then the session, which `--skip-auth-preflight`
/// waives for `OPTIONS`; then the port and the target. The session check is an in-memory
/// lookup; in multi-user mode the port's owner is read from the kernel's socket table (see
/// [`super::ports`]). `conn`: the client connection's number.
pub async fn admit(state: &ProxyState, head: &impl Head, route: Route, conn: u64) -> Result<Admitted, Refusal> {
    let config = &state.proxy;
    if config.disabled {
        return Err(AppError::forbidden().into());
    }
    let method = head.method();
    let websocket = ws::is_websocket(method, head);
    if websocket && let Err(e) = crate::origin::check_origin(head, head.authority(), &config.trusted_origins) {
        tracing::debug!("refused a proxied WebSocket: {e}");
        return Err(AppError::forbidden().into());
    }
    let waived = !websocket && method == "OPTIONS" && config.skip_auth_preflight;
    let (path, query) = split_target(head.target());
    let who = if waived {
        None
    } else {
        match state.auth.identify(head).await? {
            Some(identity) => Some(identity),
            None => return Err(unauthenticated(head, &route, path, query)),
        }
    };
    let owner = who.as_ref().map_or(Owner::Connection(conn), |w| Owner::of(w.session.as_deref(), conn));
    let (port, target, rewrite_location) = match route {
        Route::Domain(port) => {
            (port?, head.target().split_once('#').map_or(head.target(), |(t, _)| t).to_string(), false)
        }
        Route::Path(kind) => {
            let (port, rest) = path::split(kind, path);
            let port = parse_port(port)?;
            (port, path::upstream_target(kind, path, rest, query, &state.proxy.abs_base), kind == Kind::Strip)
        }
    };
    let target = PathAndQuery::try_from(target).map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "Bad Request"))?;
    // Whose port it is (multi-user mode). A waived preflight carries no identity and reaches
    // no port of anyone's there.
    if let Some(gate) = &config.gate {
        match &who {
            Some(who) => gate.check(who, port).await?,
            None => return Err(AppError::forbidden().into()),
        }
    }
    Ok(Admitted { port, target, rewrite_location, owner })
}

/// Someone not logged in: the proxy's root (or, on a proxy domain, any page a browser opens)
/// sends them to log in and back; anything else is an API call or an asset, which gets 401.
fn unauthenticated(head: &impl Head, route: &Route, path: &str, query: Option<&str>) -> Refusal {
    let read = matches!(head.method(), "GET" | "HEAD");
    match route {
        Route::Path(kind) => {
            let root = path::split(*kind, path).1.is_none_or(str::is_empty);
            if root && read {
                return Refusal::Login(location(path, &Query::parse(query), "login", &[("to", Some(path))]));
            }
        }
        Route::Domain(_) => {
            let html = head.header_values("accept").any(|v| v.windows(9).any(|w| w == b"text/html"));
            if (read && path.starts_with("/_static/")) || (html && (path == "/login" || path.starts_with("/login/"))) {
                return Refusal::Router;
            }
            if html {
                let me = (path != "/").then_some(path);
                return Refusal::Login(location(path, &Query::parse(query), "login", &[("to", me)]));
            }
        }
    }
    Refusal::Error(AppError::unauthorized())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_lose_their_fragment() {
        assert_eq!(split_target("/proxy/1/a?b=1#frag"), ("/proxy/1/a", Some("b=1")));
        assert_eq!(split_target("/proxy/1/a#x?y"), ("/proxy/1/a", None));
        assert_eq!(split_target("/a"), ("/a", None));
    }
}
