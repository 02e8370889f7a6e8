//! `/proxy/<port>/…` and `/absproxy/<port>/…` (spec §3.7), every method, HTTP and WebSocket.
//!
//! `/proxy` strips `/proxy/<port>` (`/proxy/8080/a?q` → `/a?q`) and points upstream redirects
//! back under the prefix; `/absproxy` forwards the whole path, after `--abs-proxy-base-path`.
//! The rest of the path and the query are forwarded byte for byte: unlike code-server, runs of
//! `/` are not collapsed.

use axum::extract::Request;
use axum::http::Method;
use axum::http::uri::PathAndQuery;
use axum::response::{IntoResponse, Response};

use super::{Admission, Target, admit, forward, parse_port};
use crate::app::AppState;
use crate::error::AppError;
use crate::relative::{Query, found, location};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/proxy`: the upstream sees the path after the port.
    Strip,
    /// `/absproxy`: the upstream sees the whole path.
    Keep,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Strip => "/proxy/",
            Kind::Keep => "/absproxy/",
        }
    }
}

/// `/proxy/<port>`, `/proxy/<port>/…` and the same under `/absproxy`, for any non-empty port
/// segment (a bad one is answered with 400, as code-server does).
pub fn kind(path: &str) -> Option<Kind> {
    [Kind::Strip, Kind::Keep]
        .into_iter()
        .find(|k| path.strip_prefix(k.prefix()).is_some_and(|after| !after.is_empty() && !after.starts_with('/')))
}

/// Admits and forwards one request under `/proxy` or `/absproxy`. The raw path is used, so
/// nothing in it (`//`, percent-escapes) is normalised away.
pub async fn handle(state: &AppState, req: Request, kind: Kind) -> Result<Response, AppError> {
    let path = req.uri().path();
    let (port, rest) = split(kind, path);

    if admit(state, req.method(), req.headers()).await? == Admission::Unauthenticated {
        // The proxy's root sends people to log in and back; anything deeper is an API call or
        // an asset, which gets a plain 401.
        let root = rest.is_none_or(str::is_empty);
        if root && matches!(*req.method(), Method::GET | Method::HEAD) {
            let query = Query::parse(req.uri().query());
            return Ok(found(&location(path, &query, "login", &[("to", Some(path))])).into_response());
        }
        return Err(AppError::unauthorized());
    }

    let port = parse_port(port)?;
    let upstream_path = upstream_target(kind, path, rest, req.uri().query(), &state.proxy.abs_base);
    let path_and_query = PathAndQuery::try_from(upstream_path)
        .map_err(|_| AppError::new(axum::http::StatusCode::BAD_REQUEST, "Bad Request"))?;
    forward(state, req, Target { port, path_and_query, rewrite_location: kind == Kind::Strip }).await
}

/// The port segment of a path [`kind`] recognised, and what follows its `/` if there is one:
/// `/proxy/8080/a/b` → `("8080", Some("a/b"))`, `/proxy/8080` → `("8080", None)`.
pub fn split(kind: Kind, path: &str) -> (&str, Option<&str>) {
    let after = path.strip_prefix(kind.prefix()).unwrap_or_default();
    match after.split_once('/') {
        Some((port, rest)) => (port, Some(rest)),
        None => (after, None),
    }
}

/// The origin-form target the upstream gets for `path` (split into `rest` by [`split`]) and
/// `query`; `abs_base` is `--abs-proxy-base-path` without its trailing slash.
pub fn upstream_target(kind: Kind, path: &str, rest: Option<&str>, query: Option<&str>, abs_base: &str) -> String {
    match kind {
        Kind::Strip => join(&["/", rest.unwrap_or_default()], query),
        Kind::Keep => join(&[abs_base, path], query),
    }
}

fn join(parts: &[&str], query: Option<&str>) -> String {
    let mut out =
        String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + query.map_or(0, |q| q.len() + 1));
    for p in parts {
        out.push_str(p);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind("/proxy/8080"), Some(Kind::Strip));
        assert_eq!(kind("/proxy/8080/"), Some(Kind::Strip));
        assert_eq!(kind("/proxy/abc/x"), Some(Kind::Strip));
        assert_eq!(kind("/absproxy/1/a"), Some(Kind::Keep));
        for other in ["/proxy", "/proxy/", "/proxy//x", "/proxyx/1", "/x/proxy/1", "/absproxy/"] {
            assert_eq!(kind(other), None, "{other}");
        }
    }

    #[test]
    fn joins_keep_bytes() {
        assert_eq!(join(&["/", "a//b%2F"], Some("x=1&&y=//z")), "/a//b%2F?x=1&&y=//z");
        assert_eq!(join(&["", "/absproxy/1/"], None), "/absproxy/1/");
        assert_eq!(join(&["/", ""], Some("")), "/?");
    }
}
