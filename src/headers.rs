//! Header surgery shared by everything that forwards requests (the port proxy, VS Code):
//! hop-by-hop headers and our session cookie stay with us. Also the one reading of `Cookie`
//! headers, so authentication and the cookie filter can never disagree about a cookie's name.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The headers every response of our own carries (pages, JSON, errors; never proxied or
/// forwarded ones): no MIME sniffing, no referrer to other sites, no framing by other sites.
/// Headers a handler set on purpose stay.
pub fn add_own_headers(h: &mut HeaderMap) {
    h.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("same-origin"));
    h.entry(header::X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("SAMEORIGIN"));
}

/// `--security-headers`: how much hardening our responses carry (README, "Security headers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Balanced, and the same headers on VS Code's responses; HSTS with subdomains.
    Strict,
    /// Our pages: CSP, `Permissions-Policy`, COOP/CORP and the basics; HSTS under TLS on
    /// everything. VS Code's responses as VS Code sends them.
    #[default]
    Balanced,
    /// None of it: code-server's own headers only.
    Off,
}

impl Preset {
    pub const NAMES: &'static [&'static str] = &["strict", "balanced", "off"];

    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "strict" => Some(Preset::Strict),
            "balanced" => Some(Preset::Balanced),
            "off" => Some(Preset::Off),
            _ => None,
        }
    }
}

/// Our pages' policy, beneath each template's own `<meta>` policy (a page obeys both): scripts
/// and styles from us only (the login page's one inline script, which tells us its public
/// address, is why `'unsafe-inline'` stays for scripts), no plugins, forms to us only, never
/// framed by another site.
const OWN_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; \
     img-src 'self' data:; font-src 'self' data:; manifest-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'";
/// Powerful features our pages never use. (Not on VS Code's responses: the workbench uses the
/// clipboard, and extensions may want more.)
const OWN_PERMISSIONS: &str =
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), hid=(), bluetooth=()";

/// The security headers of one of our own responses, by `preset` (`tls`: we serve HTTPS).
/// Runs after the handler: what a handler set on purpose stays.
pub fn secure_own(h: &mut HeaderMap, preset: Preset, tls: bool) {
    if preset == Preset::Off {
        // What `add_own_headers` put there on the way (error pages, JSON errors) goes too.
        for name in [header::X_CONTENT_TYPE_OPTIONS, header::REFERRER_POLICY, header::X_FRAME_OPTIONS] {
            h.remove(name);
        }
        return;
    }
    add_own_headers(h);
    let html = h.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if html {
        h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(OWN_CSP));
    }
    h.entry(HeaderName::from_static("permissions-policy")).or_insert(HeaderValue::from_static(OWN_PERMISSIONS));
    h.entry(HeaderName::from_static("cross-origin-opener-policy")).or_insert(HeaderValue::from_static("same-origin"));
    h.entry(HeaderName::from_static("cross-origin-resource-policy")).or_insert(HeaderValue::from_static("same-origin"));
    add_hsts(h, preset, tls);
}

/// The security headers of a response forwarded from VS Code, by `preset`: HSTS under TLS;
/// with `strict` also no sniffing, no referrer to other sites and no framing by other sites
/// (VS Code's webviews are frames of the same origin, so they still work).
pub fn secure_forwarded(h: &mut HeaderMap, preset: Preset, tls: bool) {
    if preset == Preset::Strict {
        add_own_headers(h);
    }
    add_hsts(h, preset, tls);
}

fn add_hsts(h: &mut HeaderMap, preset: Preset, tls: bool) {
    let value = match (preset, tls) {
        (Preset::Strict, true) => "max-age=31536000; includeSubDomains",
        (Preset::Balanced, true) => "max-age=31536000",
        _ => return,
    };
    h.entry(header::STRICT_TRANSPORT_SECURITY).or_insert(HeaderValue::from_static(value));
}

/// [`add_own_headers`], and not to be stored by any cache (a response that depends on who asks).
pub fn add_private_headers(h: &mut HeaderMap) {
    add_own_headers(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Where a request's header values come from: hyper's `HeaderMap`, or the express lane's raw
/// head. Whatever reads headers to decide about a request (its host, its session, its Origin)
/// reads them through this, so both paths decide alike.
pub trait HeaderSource {
    /// The values of every header named `name` (given in lower case), in order.
    fn header_values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a;

    /// The first value of `name`, when it is text.
    fn first_str<'a>(&'a self, name: &'static str) -> Option<&'a str> {
        self.header_values(name).next().and_then(|v| std::str::from_utf8(v).ok())
    }
}

impl HeaderSource for HeaderMap {
    fn header_values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

/// The `(name, value)` of every cookie in `Cookie` header values, in order: pairs split at `;`
/// and `=`, name and value trimmed of spaces and tabs only (RFC 6265's whitespace). A name with
/// any other character around it (`\u{a0}code-server-session`) is another cookie's name, for
/// authentication and for [`cookies_without`] alike.
pub fn cookie_pairs<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    values.flat_map(|v| v.split(|&b| b == b';')).filter_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        Some((ows_trim(&pair[..eq]), ows_trim(&pair[eq + 1..])))
    })
}

/// The name of one `name=value` cookie pair (as [`cookie_pairs`] reads it).
fn cookie_name(pair: &[u8]) -> &[u8] {
    ows_trim(pair.split(|&b| b == b'=').next().unwrap_or_default())
}

fn ows_trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`:
/// we answered the client's `100-continue` ourselves when the upstream started reading.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers, including any the `Connection` header names. This runs twice on
/// every proxied request, so the usual case (`Connection: keep-alive` and nothing else) costs
/// a scan of the names and a few removals, and allocates nothing.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Any header may be made hop-by-hop by naming it in `Connection`; the fixed ones and
    // `close` need no name built.
    let listed: Vec<HeaderName> = connection_options(headers)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| t.eq_ignore_ascii_case(h.as_str())))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a message's `Connection` header asks to close the connection after it.
pub fn says_close(headers: &HeaderMap) -> bool {
    connection_options(headers).any(|t| t.eq_ignore_ascii_case("close"))
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Removes every cookie named `name` from the `Cookie` header(s); the rest are forwarded as they
/// came, in one header (HTTP/1.1 allows only one). No cookie left → no header.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let mut kept = Vec::new();
    match cookies_without(|| headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()), name, &mut kept) {
        Cookies::Unchanged => {}
        Cookies::Kept => {
            headers.insert(header::COOKIE, HeaderValue::from_bytes(&kept).expect("made of a valid header's bytes"));
        }
        Cookies::None => {
            headers.remove(header::COOKIE);
        }
    }
}

/// What [`cookies_without`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cookies {
    /// One header and no cookie named so: forward the header as it is.
    Unchanged,
    /// The value to send instead is in the output.
    Kept,
    /// No cookie is left: send no `Cookie` header.
    None,
}

/// The `Cookie` header to forward, for the header values `values()` gives, without the cookies
/// named `name`: written to `out` when it differs from the one header received.
pub fn cookies_without<'a, I: Iterator<Item = &'a [u8]>>(
    values: impl Fn() -> I,
    name: &str,
    out: &mut Vec<u8>,
) -> Cookies {
    let mut all = values();
    let (Some(first), more) = (all.next(), all.next().is_some()) else {
        return Cookies::None;
    };
    if !more && !contains(first, name.as_bytes()) {
        return Cookies::Unchanged;
    }
    let start = out.len();
    for value in values() {
        for pair in value.split(|&b| b == b';') {
            let pair = ows_trim(pair);
            if pair.is_empty() || cookie_name(pair) == name.as_bytes() {
                continue;
            }
            if out.len() > start {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
    }
    if out.len() > start { Cookies::Kept } else { Cookies::None }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn connection_names_more_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "Keep-Alive, X-Private , close"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("expect", "100-continue"),
            ("trailer", "x-sum"),
            ("host", "example.com"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["host", "trailer", "x-kept"]);
    }

    #[test]
    fn close_is_found_among_the_options() {
        let mut h = HeaderMap::new();
        assert!(!says_close(&h));
        h.append(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        assert!(!says_close(&h));
        h.append(header::CONNECTION, "Upgrade , CLOSE".parse().unwrap());
        assert!(says_close(&h));
    }

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

    #[test]
    fn cookie_names_are_trimmed_of_spaces_and_tabs_only() {
        let values = ["a=1;\t b = 2 ; code-server-session=t", "\u{a0}code-server-session=u"];
        let pairs: Vec<(&[u8], &[u8])> = cookie_pairs(values.iter().map(|v| v.as_bytes())).collect();
        assert_eq!(
            pairs,
            [
                (&b"a"[..], &b"1"[..]),
                (b"b", b"2"),
                (b"code-server-session", b"t"),
                ("\u{a0}code-server-session".as_bytes(), b"u")
            ]
        );
        // The filter agrees: the look-alike is not ours and stays.
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_bytes("\u{a0}code-server-session=u; x=1".as_bytes()).unwrap());
        remove_cookie(&mut h, "code-server-session");
        assert_eq!(h["cookie"].as_bytes(), "\u{a0}code-server-session=u; x=1".as_bytes());
    }
}
