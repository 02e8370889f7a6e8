//! Fuzzing harnesses, one per target in `fuzz/` (README, "Fuzzing"): each takes the fuzzer's
//! bytes, runs one parser on them and asserts what must hold of the answer, so a broken
//! property is a crash like a panic is.
//!
//! They live in the crate rather than in `fuzz/` for two reasons. The parsers they drive stay
//! private (the lane's heads and the chunked scanner are reached from inside, see
//! [`crate::proxy::lane`]), so this module is the only surface fuzzing adds, hidden from the
//! docs. And the seed corpus runs through them as an ordinary unit test on stable Rust
//! (`the_corpus_holds`, below), so every seed and every crash input kept as one is checked
//! by `scripts/test` too, without cargo-fuzz.

use std::path::Path;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::auth::Auth;
use crate::cli::{self, AuthMode, Deployment, config_file, parse};
use crate::environment::Environment;
use crate::headers::{Cookies, HeaderSource, cookie_pairs, cookies_without, remove_cookie};
use crate::origin::{OriginError, check_origin, request_host, split_host_port};
use crate::relative::{Query, found, location, normalize, relative_root};
use crate::server::listen::Listen;

pub use crate::proxy::lane::fuzzing::{chunked, request_head, response_head};

/// A harness: it panics when the input breaks what it checks.
pub type Harness = fn(&[u8]);

/// Every harness, by the name of its target in `fuzz/fuzz_targets` and its corpus directory.
pub const TARGETS: &[(&str, Harness)] = &[
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked", chunked),
    ("cookies", cookies),
    ("origin", origin),
    ("config", config),
    ("relative_redirect", relative_redirect),
];

/// `Cookie` header values (one per line) after a first byte that picks our cookie's name.
/// Asserts that the pairs authentication reads are trimmed and split where they should be,
/// and that the filter the proxies forward through removes exactly the cookies authentication
/// would take for ours: every other pair survives, in order, in one valid header, and the
/// header-map variant agrees with the raw one.
pub fn cookies(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let name = match pick % 3 {
        0 => Auth::cookie_name_for(None),
        1 => Auth::cookie_name_for(Some("dev")),
        _ => "a".to_string(),
    };
    let values: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    for (n, v) in cookie_pairs(values.iter().copied()) {
        assert!(!n.contains(&b'=') && !n.contains(&b';') && !v.contains(&b';'), "{n:?}={v:?} split wrongly");
        for part in [n, v] {
            assert!(!part.first().is_some_and(ows) && !part.last().is_some_and(ows), "{part:?} not trimmed");
        }
    }
    let others = |values: &[&[u8]]| -> Vec<(Vec<u8>, Vec<u8>)> {
        cookie_pairs(values.iter().copied())
            .filter(|(n, _)| *n != name.as_bytes())
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    };
    // The filter appends to what is already in its output.
    let mut out = b"cookie: ".to_vec();
    let verdict = cookies_without(|| values.iter().copied(), &name, &mut out);
    assert!(out.starts_with(b"cookie: "), "the filter overwrote its output");
    let kept = &out[b"cookie: ".len()..];
    match verdict {
        Cookies::Unchanged => {
            assert_eq!(values.len(), 1, "several headers cannot go on unchanged");
            assert!(kept.is_empty());
            assert!(cookie_pairs(values.iter().copied()).all(|(n, _)| n != name.as_bytes()), "ours went on");
        }
        Cookies::Kept => {
            assert!(!kept.is_empty());
            assert!(cookie_pairs(std::iter::once(kept)).all(|(n, _)| n != name.as_bytes()), "ours went on");
            assert_eq!(others(&[kept]), others(&values), "another cookie was lost or changed");
        }
        Cookies::None => {
            assert!(kept.is_empty());
            assert!(others(&values).is_empty(), "a cookie of someone else's was dropped");
        }
    }
    // hyper's path: the same filter over a `HeaderMap`, which must stay a valid header.
    let mut map = HeaderMap::new();
    for v in &values {
        let Ok(v) = HeaderValue::from_bytes(v) else { return };
        map.append(header::COOKIE, v);
    }
    remove_cookie(&mut map, &name);
    let after: Vec<&[u8]> = map.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    match verdict {
        Cookies::Unchanged => assert_eq!(after, values),
        Cookies::Kept => assert_eq!(after, [kept]),
        Cookies::None => assert!(after.is_empty()),
    }
}

/// Headers as the lane holds them: a list of raw name/value pairs.
struct Lines(Vec<(Vec<u8>, Vec<u8>)>);

impl HeaderSource for Lines {
    fn header_values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.as_slice())
    }
}

/// Request headers, one `name: value` per line, plus `trusted=PATTERN` lines (the
/// `--trusted-origins`) and an `authority=HOST` line (HTTP/2's `:authority`). Asserts that the
/// host is lower case and never empty, that a `HeaderMap` of the same headers gets the same
/// host and verdict, that no `Origin` passes and a trusted `*` passes every well-formed one,
/// that a request whose `Host` is its `Origin`'s own host and port always passes (IPv6
/// included) and one naming another host does not, and that `host:port` splits back.
pub fn origin(data: &[u8]) {
    let mut headers = Lines(vec![]);
    let mut trusted = vec![];
    let mut authority = None;
    for line in data.split(|&b| b == b'\n') {
        if let Some(t) = line.strip_prefix(b"trusted=") {
            trusted.push(String::from_utf8_lossy(t).into_owned());
        } else if let Some(a) = line.strip_prefix(b"authority=") {
            authority = std::str::from_utf8(a).ok();
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            headers.0.push((line[..colon].to_vec(), line[colon + 1..].trim_ascii().to_vec()));
        }
    }
    let host = request_host(&headers, authority);
    if let Some(h) = &host {
        assert!(!h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()), "host {h:?}");
    }
    let verdict = check_origin(&headers, authority, &trusted);
    if let Err(OriginError::Mismatch { host: h, .. }) = &verdict {
        assert_eq!(Some(h), host.as_ref());
    }
    let mut map = HeaderMap::new();
    let mut all_valid = true;
    for (n, v) in &headers.0 {
        match (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => all_valid = false,
        }
    }
    if all_valid {
        assert_eq!(request_host(&map, authority), host);
        assert_eq!(check_origin(&map, authority, &trusted), verdict);
    }
    let Some(origin) = headers.header_values("origin").next() else {
        assert_eq!(verdict, Ok(()), "a request without Origin is refused");
        return;
    };
    let Ok(origin) = std::str::from_utf8(origin) else {
        assert_eq!(verdict, Err(OriginError::Malformed));
        return;
    };
    // Browsers send these schemes; the check knows their default ports.
    if let Ok(url) = url::Url::parse(origin)
        && matches!(url.scheme(), "http" | "https" | "ws" | "wss")
        && let Some(name) = url.host_str().filter(|h| !h.is_empty())
        && url.port_or_known_default().is_some()
    {
        assert_eq!(check_origin(&headers, authority, &["*".to_string()]), Ok(()), "`*` refused {origin:?}");
        let own = match url.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.to_string(),
        };
        let only = |host: &str| Lines(vec![(b"origin".to_vec(), origin.into()), (b"host".to_vec(), host.into())]);
        assert_eq!(check_origin(&only(&own), None, &[]), Ok(()), "{origin:?} refused on its own host");
        if name != "other.invalid" {
            let verdict = check_origin(&only("other.invalid"), None, &[]);
            assert!(matches!(verdict, Err(OriginError::Mismatch { .. })), "{origin:?} passed on another host");
        }
    }
    for (_, v) in &headers.0 {
        let Ok(v) = std::str::from_utf8(v) else { continue };
        let (name, port) = split_host_port(v);
        if let Some(p) = port {
            let back = if name.contains(':') { format!("[{name}]:{p}") } else { format!("{name}:{p}") };
            assert_eq!(split_host_port(&back), (name, Some(p)), "{v:?}");
        }
    }
}

/// `config.yaml`, the command line and the environment, as three sections split by a 0xFF
/// byte (never in UTF-8 text): the file's text, one argument per line, `NAME=value` lines.
/// Asserts that secrets cannot come from the command line, that the bind address and
/// durations read back what they print, and that a configuration that resolves keeps its
/// invariants: a password whenever one is needed, the secrets' and only the secrets' variables
/// taken out of the children's environment, normalised proxy domains and cookie suffix,
/// positive timeouts, well-formed URLs and metrics token.
pub fn config(data: &[u8]) {
    let mut sections = data.split(|&b| b == 0xff).map(std::str::from_utf8);
    let mut next = || sections.next().unwrap_or(Ok(""));
    let (Ok(yaml), Ok(args), Ok(env_text)) = (next(), next(), next()) else { return };
    let argv: Vec<String> = args.lines().map(str::to_string).collect();
    let mut env: Environment = [("HOME", "/home/fuzz")].into_iter().collect();
    for (k, v) in env_text.lines().filter_map(|l| l.split_once('=')) {
        env.set(k, v);
    }
    let cwd = Path::new("/work");

    for word in argv.iter().map(String::as_str).chain(env_text.lines()) {
        if let Ok((host, port)) = cli::parse_bind_addr(word) {
            let back = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            assert_eq!(cli::parse_bind_addr(&back).ok(), Some((host, port)), "{word:?}");
        }
        if let Some(d) = cli::parse_duration(word) {
            assert_eq!(cli::parse_duration(&d.as_secs().to_string()), Some(d), "{word:?}");
        }
    }
    let (Ok(args), Ok(file)) = (parse::parse_args(&argv, cwd), config_file::parse_text(yaml, cwd)) else { return };
    for secret in ["password", "hashed-password", "github-auth"] {
        assert!(args.get(secret).is_none(), "--{secret} taken from the command line");
    }
    let paths = crate::paths::Paths::from_env(&env);
    let Ok(c) = cli::resolve(&args, &file, &env, cwd, paths, cwd.join("config.yaml")) else { return };

    match (&c.deployment, c.auth) {
        (Deployment::Single, AuthMode::Password) => assert!(c.password.is_some(), "a password mode without one"),
        (Deployment::Multi(_), AuthMode::None) => panic!("multi-user mode without authentication"),
        _ => {}
    }
    for var in ["PASSWORD", "HASHED_PASSWORD", "GITHUB_TOKEN", "CODE_SERVER_METRICS_TOKEN"] {
        if env.get(var).is_some() {
            assert!(c.env_changes.remove.contains(&var), "${var} is left for the children");
        }
    }
    for var in &c.env_changes.remove {
        assert!(env.get(var).is_some(), "${var} removed but not set");
    }
    if let Some(s) = &c.cookie_suffix {
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "cookie suffix {s:?}");
    }
    for d in &c.proxy_domains {
        assert!(d.contains("{{port}}") && !d.starts_with("*.") && *d == d.to_ascii_lowercase(), "domain {d:?}");
    }
    assert_eq!(cli::normalize_proxy_domains(&c.proxy_domains).ok().as_ref(), Some(&c.proxy_domains), "not normalised");
    assert!(!c.session_timeout.is_zero() && !c.proxy_timeout.is_zero());
    assert!(c.idle_timeout.is_none_or(|t| t.as_secs() > 60));
    let contact = url::Url::parse(&c.security_contact).expect("a checked security contact");
    assert!(matches!(contact.scheme(), "mailto" | "https"));
    if let Some(u) = &c.update_url {
        let u = url::Url::parse(u).expect("a checked update URL");
        assert!(matches!(u.scheme(), "http" | "https") && u.has_host());
    }
    if let Some(t) = &c.metrics_token {
        assert!(t.expose().len() >= 16 && !t.expose().contains(char::is_whitespace));
    }
    if let Listen::Socket { mode: Some(m), .. } = &c.listen {
        assert!(*m <= 0o7777);
    }
    for o in &c.vscode_options {
        assert!(!o.trim_start_matches("--").split('=').next().unwrap_or_default().is_empty(), "option {o:?}");
    }
}

/// A request path, its query, a redirect target and query overrides (`key=value` sets, a bare
/// `key` removes), one per line, as the login and logout redirects take them. Asserts that the
/// Location is a relative reference starting `./` with no `//` in its path, a valid header
/// value, and resolves (as a browser resolves it, by the URL standard) to the same origin as
/// the request; that the query survives encoding and the overrides are applied; and that
/// `normalize` is idempotent.
pub fn relative_redirect(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or_default();
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let query = Query::parse(lines.next());
    let to = lines.next().unwrap_or_default();
    let overrides: Vec<(&str, Option<&str>)> =
        lines.map(|l| l.split_once('=').map_or((l, None), |(k, v)| (k, Some(v)))).collect();

    assert_eq!(Query::parse(Some(&query.encode())), query, "the query does not survive encoding");
    let merged = query.merged(&overrides);
    for (i, (key, value)) in overrides.iter().enumerate() {
        if overrides[i + 1..].iter().any(|(k, _)| k == key) {
            continue;
        }
        let count = merged.0.iter().filter(|(k, _)| k == key).count();
        assert_eq!((count, merged.get(key)), (usize::from(value.is_some()), *value), "override of {key:?}");
    }
    for keep in [true, false] {
        let once = normalize(to, keep);
        assert_eq!(normalize(&once, keep), once);
    }
    assert_eq!(relative_root(&path).matches("..").count(), path.matches('/').count().saturating_sub(1));

    let loc = location(&path, &query, to, &overrides);
    assert!(loc.starts_with("./"), "{loc:?}");
    let loc_path = loc.split_once('?').map_or(loc.as_str(), |(p, _)| p);
    assert!(!loc_path.contains("//"), "{loc:?}");
    assert!(matches!(url::Url::parse(&loc), Err(url::ParseError::RelativeUrlWithoutBase)), "{loc:?} is absolute");
    assert!(HeaderValue::from_str(&loc).is_ok(), "{loc:?} is no header value");
    for base in ["https://ide.example.com:8443", "http://127.0.0.1:8080/some/base"] {
        let Ok(here) = url::Url::parse(&format!("{base}{path}")) else { continue };
        let there = here.join(&loc).unwrap_or_else(|e| panic!("{loc:?} does not resolve from {here}: {e}"));
        assert_eq!(there.origin(), here.origin(), "{loc:?} from {here} leaves for {there}");
    }
    let res = found(&loc);
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()[header::LOCATION], loc.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `fuzz/corpus/<target>/` (the seeds, and crash inputs kept as regression
    /// cases) holds, and every target in `fuzz/fuzz_targets` has a harness and seeds.
    #[test]
    fn the_corpus_holds() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut targets: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
            .expect("fuzz/fuzz_targets")
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        targets.sort();
        let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        names.sort();
        assert_eq!(targets, names, "fuzz/fuzz_targets and TARGETS differ");
        for (name, harness) in TARGETS {
            let mut files: Vec<_> = std::fs::read_dir(fuzz.join("corpus").join(name))
                .unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "fuzz/corpus/{name} has no seeds");
            for file in files {
                let data = std::fs::read(&file).unwrap();
                if std::panic::catch_unwind(|| harness(&data)).is_err() {
                    panic!("{} fails (its panic is above)", file.display());
                }
            }
        }
    }
}
