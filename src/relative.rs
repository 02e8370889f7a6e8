//! Relative URLs and redirects (spec §3.2). code-server never needs to know the public base path
//! it is served under: every link and redirect is relative to the request's own path.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// `.` followed by one `/..` per slash in the path beyond the first:
/// `/` → `.`, `/foo/` → `./..`, `/foo/bar/` → `./../..`.
pub fn relative_root(path: &str) -> String {
    let depth = path.bytes().filter(|&b| b == b'/').count();
    let mut root = String::from(".");
    for _ in 1..depth {
        root.push_str("/..");
    }
    root
}

/// Collapses runs of `/`; keeps or drops one trailing slash.
pub fn normalize(url: &str, keep_trailing_slash: bool) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if !keep_trailing_slash && out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

/// A query string as ordered key/value pairs (repeated keys stay repeated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(pub Vec<(String, String)>);

/// qs's RFC 3986 encoding: everything but `A-Z a-z 0-9 - _ . ~` is escaped.
const QS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `{...query, ...overrides}`: `Some` replaces the key in place (or appends it), `None`
    /// removes it.
    pub fn merged(&self, overrides: &[(&str, Option<&str>)]) -> Query {
        let mut out = self.0.clone();
        for (key, value) in overrides {
            match value {
                None => out.retain(|(k, _)| k != key),
                Some(v) => match out.iter().position(|(k, _)| k == key) {
                    Some(i) => {
                        out[i].1 = v.to_string();
                        let mut seen = false;
                        out.retain(|(k, _)| k != key || !std::mem::replace(&mut seen, true));
                    }
                    None => out.push((key.to_string(), v.to_string())),
                },
            }
        }
        Query(out)
    }

    /// Serialised like qs, with `%2F` turned back into `/` so paths stay readable.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, QS_ENCODE), utf8_percent_encode(v, QS_ENCODE)))
            .collect::<Vec<_>>()
            .join("&")
            .replace("%2F", "/")
    }
}

/// Characters a Location path may carry as they are (encodeurl's set); everything else,
/// including `\`, spaces, quotes and control characters, is percent-encoded.
const LOCATION_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b';')
    .remove(b'/')
    .remove(b'?')
    .remove(b':')
    .remove(b'@')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b',')
    .remove(b'#')
    .remove(b'%')
    .remove(b'[')
    .remove(b']');

/// The Location for "go to `to`" from a request at `path` with `query`: relative to the
/// request, so it can never leave the site (`to=//evil.com` becomes `./evil.com`).
pub fn location(path: &str, query: &Query, to: &str, overrides: &[(&str, Option<&str>)]) -> String {
    let target = normalize(&format!("{}/{}", relative_root(path), to), true);
    let target = utf8_percent_encode(&target, LOCATION_ENCODE).to_string();
    let q = query.merged(overrides).encode();
    if q.is_empty() { target } else { format!("{target}?{q}") }
}

/// A 302 to `location` with a short body, as Express sends.
pub fn found(location: &str) -> Response {
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("./"));
    (
        StatusCode::FOUND,
        [(header::LOCATION, value), (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
        format!("Found. Redirecting to {location}"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_roots() {
        assert_eq!(relative_root("/"), ".");
        assert_eq!(relative_root("/foo"), ".");
        assert_eq!(relative_root("/foo/"), "./..");
        assert_eq!(relative_root("/foo/bar"), "./..");
        assert_eq!(relative_root("/foo/bar/"), "./../..");
    }

    fn loc(path: &str, q: &str, to: &str, o: &[(&str, Option<&str>)]) -> String {
        location(path, &Query::parse(Some(q)), to, o)
    }

    #[test]
    fn spec_table() {
        assert_eq!(loc("/", "", "login", &[("to", None)]), "./login");
        assert_eq!(loc("/", "", "/", &[]), "./");
        assert_eq!(loc("/vscode", "", "login", &[("to", Some("/vscode"))]), "./login?to=/vscode");
        assert_eq!(loc("/vscode/", "", "login", &[("to", Some("/vscode/"))]), "./../login?to=/vscode/");
        assert_eq!(loc("/login", "to=/vscode", "/vscode", &[("to", None)]), "./vscode");
        assert_eq!(loc("/login/", "", "/", &[("to", None)]), "./../");
        assert_eq!(loc("/login", "folder=/a/b", "/", &[("to", None)]), "./?folder=/a/b");
        assert_eq!(loc("/login", "to=/x", "/", &[]), "./?to=/x");
        assert_eq!(
            loc("/logout", "to=/foo&base=.&href=http://x/", "/foo", &[("to", None), ("base", None), ("href", None)]),
            "./foo"
        );
        assert_eq!(loc("/", "folder=/x", "login", &[("to", None)]), "./login?folder=/x");
    }

    #[test]
    fn cannot_leave_the_site() {
        assert_eq!(loc("/login", "", "https://evil.com", &[]), "./https:/evil.com");
        assert_eq!(loc("/login", "", "//evil.com", &[]), "./evil.com");
        assert_eq!(loc("/login", "", "/\\evil.com", &[]), "./%5Cevil.com");
        assert_eq!(loc("/login", "", "/a\r\nSet-Cookie: x", &[]), "./a%0D%0ASet-Cookie:%20x");
        for to in ["//evil.com", "///evil.com", "\\\\evil.com", "https://evil.com", "/%2F%2Fevil.com"] {
            let l = loc("/login", "", to, &[]);
            assert!(l.starts_with("./") && !l.starts_with(".//"), "{to} -> {l}");
            assert!(HeaderValue::from_str(&l).is_ok());
        }
    }

    #[test]
    fn query_merge_and_encoding() {
        let q = Query::parse(Some("a=1&to=x&b=%20s+p&a=2"));
        assert_eq!(q.merged(&[("to", None)]).encode(), "a=1&b=%20s%20p&a=2");
        assert_eq!(q.merged(&[("a", Some("9"))]).encode(), "a=9&to=x&b=%20s%20p");
        assert_eq!(Query::default().merged(&[("to", Some(""))]).encode(), "to=");
        assert_eq!(Query::parse(Some("folder=%2Fhome%2Fu")).encode(), "folder=/home/u");
    }
}
