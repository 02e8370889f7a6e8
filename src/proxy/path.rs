//! `/proxy/<port>/…` and `/absproxy/<port>/…` (spec §3.7), every method, HTTP and WebSocket.
//!
//! `/proxy` strips `/proxy/<port>` (`/proxy/8080/a?q` → `/a?q`) and points upstream redirects
//! back under the prefix; `/absproxy` forwards the whole path, after `--abs-proxy-base-path`.
//! The rest of the path and the query are forwarded byte for byte: unlike code-server, runs of
//! `/` are not collapsed.

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
