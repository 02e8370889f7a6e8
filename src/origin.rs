//! The request's public host and the WebSocket Origin check (spec §3.14), shared by VS Code's
//! WebSocket forwarding and the port proxy.
//!
//! Unlike code-server we compare ports after filling in the scheme's default, so
//! `Host: ex.com:443` matches `Origin: https://ex.com` (code-server#6166).

use crate::headers::HeaderSource;

/// The host the browser addressed, lower-cased, port included when given: `Forwarded: host=`
/// first, then the first `X-Forwarded-Host`, then `Host`, then (HTTP/2, which has no `Host`
/// header) the request's `:authority`.
pub fn request_host(headers: &impl HeaderSource, authority: Option<&str>) -> Option<String> {
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::to_string);
    let forwarded = headers.header_values("forwarded").filter_map(|v| std::str::from_utf8(v).ok()).find_map(|v| {
        v.split([';', ',']).find_map(|param| {
            let (k, val) = param.split_once('=')?;
            k.trim().eq_ignore_ascii_case("host").then(|| val.trim().trim_matches('"').to_string())
        })
    });
    let x_forwarded = || {
        headers
            .header_values("x-forwarded-host")
            .next()
            .and_then(text)
            .and_then(|v| v.split(',').next().map(|h| h.trim().to_string()))
    };
    let host = || headers.header_values("host").next().and_then(text).map(|h| h.trim().to_string());
    forwarded
        .or_else(x_forwarded)
        .or_else(host)
        .filter(|h| !h.is_empty())
        .or_else(|| authority.filter(|a| !a.is_empty()).map(str::to_string))
        .map(|h| h.to_ascii_lowercase())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("malformed Origin header")]
    Malformed,
    #[error("no host headers found (are you behind a reverse proxy that does not forward the host?)")]
    NoHost,
    #[error("Origin {origin} does not match host {host}")]
    Mismatch { origin: String, host: String },
}

/// Allows requests without `Origin` (non-browser clients), origins in `trusted` (exact
/// `host[:port]`, `*`, or `*.domain`), and origins naming the host the request was sent to.
pub fn check_origin(
    headers: &impl HeaderSource,
    authority: Option<&str>,
    trusted: &[String],
) -> Result<(), OriginError> {
    let Some(origin) = headers.header_values("origin").next() else {
        return Ok(());
    };
    let url = std::str::from_utf8(origin).ok().and_then(|o| url::Url::parse(o).ok()).ok_or(OriginError::Malformed)?;
    let origin_host = url.host_str().filter(|h| !h.is_empty()).ok_or(OriginError::Malformed)?.to_ascii_lowercase();
    let origin_port = url.port_or_known_default().ok_or(OriginError::Malformed)?;
    // `host[:port]` as the browser shows it: the port only when it is not the default.
    let origin_authority = match url.port() {
        Some(p) => format!("{origin_host}:{p}"),
        None => origin_host.clone(),
    };
    if trusted.iter().any(|t| trusted_matches(t, &origin_authority)) {
        return Ok(());
    }
    let host = request_host(headers, authority).ok_or(OriginError::NoHost)?;
    let (host_name, host_port) = split_host_port(&host);
    let host_port = host_port.unwrap_or(if url.scheme() == "https" || url.scheme() == "wss" { 443 } else { 80 });
    // The URL keeps an IPv6 address's brackets (`[::1]`), the split host does not.
    let origin_name = origin_host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&origin_host);
    if host_name == origin_name && host_port == origin_port {
        Ok(())
    } else {
        Err(OriginError::Mismatch { origin: origin_authority, host })
    }
}

fn trusted_matches(pattern: &str, authority: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    if pattern == "*" || pattern == authority {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(domain) => authority == domain || authority.ends_with(&format!(".{domain}")),
        None => false,
    }
}

/// `ex.com:8080` → (`ex.com`, 8080); `[::1]:80` → (`::1`, 80); `ex.com` → (`ex.com`, None).
pub fn split_host_port(host: &str) -> (String, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, after)) = rest.split_once(']')
    {
        return (h.to_string(), after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), Some(port)),
            Err(_) => (host.to_string(), None),
        },
        _ => (host.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderMap;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn check(pairs: &[(&str, &str)], trusted: &[&str]) -> Result<(), OriginError> {
        let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
        check_origin(&headers(pairs), None, &trusted)
    }

    #[test]
    fn same_host_and_no_origin_pass() {
        assert!(check(&[("host", "localhost:8080")], &[]).is_ok());
        assert!(check(&[("host", "localhost:8080"), ("origin", "http://localhost:8080")], &[]).is_ok());
        assert!(check(&[("host", "Ex.com"), ("origin", "https://ex.com")], &[]).is_ok());
        // IPv6 (found by the `origin` fuzz target): the Origin's brackets are no mismatch.
        assert!(check(&[("host", "[::1]:8080"), ("origin", "http://[::1]:8080")], &[]).is_ok());
        assert!(check(&[("host", "[::1]"), ("origin", "http://[::1]")], &[]).is_ok());
        assert!(check(&[("host", "[::1]:8080"), ("origin", "http://[::2]:8080")], &[]).is_err());
    }

    #[test]
    fn default_ports_are_normalised() {
        assert!(check(&[("host", "ex.com:443"), ("origin", "https://ex.com")], &[]).is_ok());
        assert!(check(&[("host", "ex.com:80"), ("origin", "http://ex.com")], &[]).is_ok());
        assert!(check(&[("host", "ex.com:8080"), ("origin", "https://ex.com")], &[]).is_err());
        assert!(check(&[("host", "ex.com:443"), ("origin", "http://ex.com")], &[]).is_err());
    }

    #[test]
    fn mismatches_and_malformed_origins_fail() {
        assert!(matches!(
            check(&[("host", "localhost:8080"), ("origin", "http://evil.com")], &[]),
            Err(OriginError::Mismatch { .. })
        ));
        assert_eq!(check(&[("host", "x"), ("origin", "test.org")], &[]), Err(OriginError::Malformed));
        assert_eq!(check(&[("host", "x"), ("origin", "localhost:8080")], &[]), Err(OriginError::Malformed));
        assert_eq!(check(&[("origin", "http://a.com")], &[]), Err(OriginError::NoHost));
    }

    #[test]
    fn forwarded_headers_name_the_host() {
        let h =
            [("host", "127.0.0.1:8080"), ("x-forwarded-host", "ide.ex.com, proxy"), ("origin", "https://ide.ex.com")];
        assert!(check(&h, &[]).is_ok());
        let h = [("host", "127.0.0.1:8080"), ("forwarded", "for=1.2.3.4;host=\"ide.ex.com\";proto=https")];
        assert_eq!(request_host(&headers(&h), None).as_deref(), Some("ide.ex.com"));
        // HTTP/2: the authority when no header names the host.
        assert_eq!(request_host(&headers(&[]), Some("3000.Ex.com")).as_deref(), Some("3000.ex.com"));
        assert_eq!(request_host(&headers(&[("host", "a.com")]), Some("b.com")).as_deref(), Some("a.com"));
    }

    #[test]
    fn trusted_origins() {
        let o = [("host", "localhost:8080"), ("origin", "https://app.example.com")];
        assert!(check(&o, &["app.example.com"]).is_ok());
        assert!(check(&o, &["*"]).is_ok());
        assert!(check(&o, &["*.example.com"]).is_ok());
        assert!(check(&[("host", "x"), ("origin", "https://example.com")], &["*.example.com"]).is_ok());
        assert!(check(&[("host", "x"), ("origin", "https://example.com.evil.com")], &["*.example.com"]).is_err());
        assert!(check(&[("host", "x"), ("origin", "https://a.com:8443")], &["a.com:8443"]).is_ok());
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("ex.com:8080"), ("ex.com".into(), Some(8080)));
        assert_eq!(split_host_port("[::1]:80"), ("::1".into(), Some(80)));
        assert_eq!(split_host_port("ex.com"), ("ex.com".into(), None));
    }
}
