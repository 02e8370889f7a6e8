//! Header surgery shared by everything that forwards requests (the port proxy, VS Code):
//! hop-by-hop headers and our session cookie stay with us.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`:
/// we answered the client's `100-continue` ourselves when the upstream started reading.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
    )
}

/// Removes hop-by-hop headers, including any the `Connection` header names. Most messages carry
/// none or one or two of them, so the names are scanned once before anything is removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok());
    let present = headers.keys().filter(|k| is_hop_by_hop(k)).cloned();
    let doomed: Vec<HeaderName> = named.chain(present).collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes every cookie named `name` from the `Cookie` header(s); the rest are forwarded as they
/// came, in one header (HTTP/1.1 allows only one). No cookie left → no header.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), more) = (values.next(), values.next().is_some()) else {
        return;
    };
    if !more && !contains(first.as_bytes(), name.as_bytes()) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii_start();
            let pair_name = pair.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
            if pair.is_empty() || pair_name == name.as_bytes() {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        headers.insert(header::COOKIE, HeaderValue::from_bytes(&kept).expect("made of a valid header's bytes"));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn remove_cookie_keeps_the_others() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1;code-server-session=x; b=%20two".parse().unwrap());
        h.append("cookie", "code-server-session=y".parse().unwrap());
        remove_cookie(&mut h, "code-server-session");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=%20two");
        let mut h = HeaderMap::new();
        h.append("cookie", "code-server-session=x".parse().unwrap());
        remove_cookie(&mut h, "code-server-session");
        assert!(h.get("cookie").is_none());
        // A similarly named cookie stays.
        let mut h = HeaderMap::new();
        h.append("cookie", "code-server-session-dev=x".parse().unwrap());
        remove_cookie(&mut h, "code-server-session");
        assert_eq!(h["cookie"], "code-server-session-dev=x");
    }
}
