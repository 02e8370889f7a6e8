//! The domain proxy (spec §3.8): with `--proxy-domain example.com`, a request for
//! `3000.example.com` goes to port 3000 with its path untouched. Patterns may place `{{port}}`
//! and `{{host}}` anywhere (`code-{{port}}.example.com`, `{{port}}-{{host}}`).
//!
//! Differences from code-server, on purpose:
//! - a Host with a port (`3000.example.com:8443`) also matches, compared without its port
//!   (code-server#5311);
//! - `OPTIONS` under `--skip-auth-preflight` is proxied without a session, as on `/proxy`
//!   (code-server lets it fall through to its own routes);
//! - over HTTP/2, which has no `Host` header, the request's `:authority` names the host;
//! - `/robots.txt` and `/security.txt` belong to the proxied app like every other path
//!   (code-server answers them itself, shadowing the app's).

use super::Proxy;
use super::admission::Head;
use super::parse_port;
use crate::error::AppError;
use crate::origin::request_host;

/// A normalised `--proxy-domain` (always containing `{{port}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// One or more digits: the port.
    Port,
    /// One or more characters of anything.
    Host,
}

impl Pattern {
    pub fn parse(domain: &str) -> Pattern {
        let mut parts = Vec::new();
        let mut rest = domain;
        while !rest.is_empty() {
            let next = [("{{port}}", Part::Port), ("{{host}}", Part::Host)]
                .into_iter()
                .filter_map(|(token, part)| rest.find(token).map(|i| (i, token.len(), part)))
                .min_by_key(|(i, _, _)| *i);
            match next {
                Some((i, len, part)) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    parts.push(part);
                    rest = &rest[i + len..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
            }
        }
        Pattern(parts)
    }

    /// The port's digits when `host` (lower case) matches the whole pattern.
    pub fn port_in<'a>(&self, host: &'a str) -> Option<&'a str> {
        match_parts(&self.0, host, None).flatten()
    }
}

/// Backtracking match, greedy like the regex code-server builds (`{{port}}` → `(\d+)`,
/// `{{host}}` → `.+`). `Some(port)` on a match; the port is the first `{{port}}`.
fn match_parts<'a>(parts: &[Part], s: &'a str, port: Option<&'a str>) -> Option<Option<&'a str>> {
    let Some((part, rest)) = parts.split_first() else {
        return s.is_empty().then_some(port);
    };
    match part {
        Part::Literal(lit) => match_parts(rest, s.strip_prefix(lit.as_str())?, port),
        Part::Port => {
            let digits = s.bytes().take_while(u8::is_ascii_digit).count();
            (1..=digits).rev().find_map(|n| match_parts(rest, &s[n..], port.or(Some(&s[..n]))))
        }
        Part::Host => {
            (1..=s.len()).rev().filter(|&n| s.is_char_boundary(n)).find_map(|n| match_parts(rest, &s[n..], port))
        }
    }
}

/// The port a request's host names under one of `domains`, if any: the host as sent first,
/// then without its port.
fn port_for<'a>(domains: &[Pattern], host: &'a str) -> Option<&'a str> {
    let by_pattern = |h: &'a str| domains.iter().find_map(|p| p.port_in(h));
    by_pattern(host).or_else(|| {
        let (name, port) = host.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        by_pattern(name)
    })
}

/// For a request whose host is under a proxy domain: the port it names, or why that is not a
/// port. `None` for every other host, and for our own port `local` (proxying it to ourselves
/// with the same Host would loop forever).
pub fn port_of(proxy: &Proxy, head: &impl Head, local: Option<u16>) -> Option<Result<u16, AppError>> {
    let host = request_host(head, head.authority())?;
    let port = parse_port(port_for(&proxy.domains, &host)?);
    match port {
        Ok(p) if Some(p) == local => None,
        port => Some(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(domain: &str, host: &str) -> Option<String> {
        Pattern::parse(domain).port_in(host).map(str::to_string)
    }

    #[test]
    fn templates() {
        assert_eq!(port("{{port}}.coder.com", "3000.coder.com").as_deref(), Some("3000"));
        assert_eq!(port("{{port}}.coder.com", "3000.coder.com.evil"), None);
        assert_eq!(port("{{port}}.coder.com", "x3000.coder.com"), None);
        assert_eq!(port("{{port}}.coder.com", "3000xcoder.com"), None, "the dot is literal");
        assert_eq!(port("{{port}}.coder.com", ".coder.com"), None);
        assert_eq!(port("code-{{port}}.x.tld", "code-8080.x.tld").as_deref(), Some("8080"));
        assert_eq!(port("{{port}}-{{host}}", "8080-dev.example.com").as_deref(), Some("8080"));
        assert_eq!(port("{{host}}-{{port}}.ex.com", "a-b-12.ex.com").as_deref(), Some("12"));
        assert_eq!(port("{{port}}-{{host}}", "8080-"), None);
        assert_eq!(port("{{port}}.{{host}}.ex.com", "1.2.3.ex.com").as_deref(), Some("1"));
    }

    #[test]
    fn host_with_a_port_matches_without_it() {
        let domains = [Pattern::parse("{{port}}.coder.com")];
        assert_eq!(port_for(&domains, "3000.coder.com:8443"), Some("3000"));
        assert_eq!(port_for(&domains, "3000.coder.com"), Some("3000"));
        assert_eq!(port_for(&domains, "coder.com:3000"), None);
        assert_eq!(port_for(&domains, "[::1]:3000"), None);
    }
}
