//! Fuzzing harnesses for the lane's heads and the chunked scanner, re-exported by
//! [`crate::fuzzing`] (which says why harnesses live in the crate). They sit here, under the
//! lane, because the parsers they drive are the lane's own and stay private to it.

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::Raw;
use super::head::{
    Framing, Hop, MAX_HEADERS, Parsed, Request, Response, parse_request, parse_response, write_request_head,
    write_response_head,
};
use crate::headers::{HeaderSource, cookie_pairs};
use crate::proxy::admission::Admitted;
use crate::proxy::chunked::{Malformed, Scanner};
use crate::proxy::pool::Owner;

const COOKIE: &str = "code-server-session";
const PORT: u16 = 3000;

fn plan(target: PathAndQuery) -> Admitted {
    Admitted { port: PORT, target, rewrite_location: true, owner: Owner::Connection(1) }
}

/// A request head as comparable values rather than offsets.
#[derive(Debug, PartialEq, Eq)]
struct RequestView<'b> {
    head_len: usize,
    method: &'b [u8],
    target: &'b [u8],
    headers: Vec<(&'b [u8], &'b [u8], Hop)>,
    content_length: u64,
    close: bool,
    trailers: bool,
    plain: bool,
}

fn view<'b>(buf: &'b [u8], r: &Request) -> RequestView<'b> {
    RequestView {
        head_len: r.head_len,
        method: &buf[r.method.clone()],
        target: &buf[r.target.clone()],
        headers: r.headers.iter().map(|h| (&buf[h.name.clone()], h.value(buf), h.hop)).collect(),
        content_length: r.content_length,
        close: r.close,
        trailers: r.trailers,
        plain: r.plain,
    }
}

fn complete(buf: &[u8]) -> Option<Request> {
    match parse_request(buf) {
        Parsed::Complete(r) => Some(r),
        Parsed::Partial | Parsed::Other => None,
    }
}

/// The express lane's request head: parsed, then written for the upstream as the lane writes
/// it, then parsed again. Asserts that the head's offsets stay inside it, that the bytes after
/// it (a body) change nothing, that what the upstream gets parses as one whole head with the
/// same method, the admitted target, the end-to-end headers in order, no hop-by-hop header,
/// neither our session cookie nor our API token, every other cookie, and (for a request the
/// lane takes) the same body length; and that admission reads the same host, cookies and
/// Origin verdict from the raw head as hyper's path does from a `HeaderMap`.
pub fn request_head(data: &[u8]) {
    let Some(req) = complete(data) else { return };
    let v = view(data, &req);
    assert!(req.head_len <= data.len());
    for r in [&req.method, &req.target].into_iter().chain(req.headers.iter().flat_map(|h| [&h.name, &h.value])) {
        assert!(r.start <= r.end && r.end <= req.head_len, "{r:?} outside the head");
    }
    let alone = complete(&data[..req.head_len]).expect("the head alone is a complete head");
    assert_eq!(view(data, &alone), v, "the body changed how the head parses");
    for h in &req.headers {
        assert_eq!(h.hop, super::head::classify(&data[h.name.clone()]));
    }

    let target = std::str::from_utf8(v.target).ok().and_then(|t| t.parse::<PathAndQuery>().ok());
    let plan = plan(target.unwrap_or_else(|| PathAndQuery::from_static("/")));
    let mut out = Vec::new();
    write_request_head(&mut out, data, &req, &plan, COOKIE);
    let again = complete(&out).unwrap_or_else(|| panic!("the upstream's head does not parse: {out:?}"));
    let w = view(&out, &again);
    assert_eq!(w.head_len, out.len(), "the upstream's head has bytes after its end");
    assert_eq!(w.method, v.method);
    assert_eq!(w.target, plan.target.as_str().as_bytes());
    assert!(!w.close, "Connection is hop-by-hop");
    assert_eq!(w.trailers, v.trailers, "`TE: trailers` is passed on, and only it");

    let ours = |name: &[u8], value: &[u8]| {
        name.eq_ignore_ascii_case(b"authorization") && crate::auth::our_bearer(value).is_some()
    };
    let end_to_end = |headers: &[(&[u8], &[u8], Hop)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        headers
            .iter()
            .filter(|(n, v, hop)| match hop {
                Hop::Keep => !ours(n, v),
                Hop::Accept | Hop::ContentLength | Hop::Location | Hop::Host => true,
                // Cookies are compared below; the one `te: trailers` the lane adds, above.
                Hop::Cookie | Hop::Te | Hop::Drop | Hop::Connection | Hop::TransferEncoding | Hop::Special => false,
            })
            .map(|(n, v, _)| (n.to_vec(), v.to_vec()))
            .collect()
    };
    assert_eq!(end_to_end(&w.headers), end_to_end(&v.headers), "end-to-end headers changed");
    for (n, value, hop) in &w.headers {
        let shown = String::from_utf8_lossy(n);
        assert!(
            !matches!(hop, Hop::Drop | Hop::Connection | Hop::TransferEncoding | Hop::Special),
            "{shown:?} forwarded"
        );
        assert!(*hop != Hop::Te || value.eq_ignore_ascii_case(b"trailers"));
        assert!(!ours(n, value), "our API token reached the upstream");
    }
    let cookies = |view: &RequestView| -> Vec<(Vec<u8>, Vec<u8>)> {
        let values = view.headers.iter().filter(|h| h.2 == Hop::Cookie).map(|h| h.1);
        cookie_pairs(values).filter(|(n, _)| *n != COOKIE.as_bytes()).map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    };
    assert!(w.headers.iter().filter(|h| h.2 == Hop::Cookie).count() <= 1, "more than one Cookie header");
    assert_eq!(cookies(&w), cookies(&v), "another cookie was lost or changed");
    let upstream_cookies = w.headers.iter().filter(|h| h.2 == Hop::Cookie).map(|h| h.1);
    assert!(cookie_pairs(upstream_cookies).all(|(n, _)| n != COOKIE.as_bytes()), "our session cookie was forwarded");
    if v.plain {
        assert!(w.plain, "a request the lane takes became one it does not");
        assert_eq!(w.content_length, v.content_length);
    }

    // Admission reads the raw head through `Raw`; hyper's path reads a `HeaderMap`.
    let raw = Raw { buf: data, req: &req };
    let mut map = HeaderMap::new();
    for (n, value, _) in &v.headers {
        let (Ok(n), Ok(value)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(value)) else { return };
        map.append(n, value);
    }
    for name in ["cookie", "accept", "host", "origin", "forwarded", "x-forwarded-host", "authorization"] {
        assert!(raw.header_values(name).eq(map.header_values(name)), "`{name}` read differently");
    }
    assert_eq!(crate::origin::request_host(&raw, None), crate::origin::request_host(&map, None));
    let trusted = ["*.example.com".to_string()];
    assert_eq!(crate::origin::check_origin(&raw, None, &trusted), crate::origin::check_origin(&map, None, &trusted));
}

/// An upstream's response head: parsed, then written for the client as the lane writes it,
/// then parsed again. Asserts that the offsets stay inside the head, that the client's head
/// parses as one whole head with the same status and reason, the framing the lane relays the
/// body with (and so the body length), no hop-by-hop header nor one the upstream's
/// `Connection` named, and `Location` under `/proxy/<port>` when it was a path.
pub fn response_head(data: &[u8]) {
    let Ok(Some(head)) = parse_response(data) else { return };
    assert!(head.len <= data.len());
    for r in std::iter::once(&head.reason).chain(head.headers.iter().flat_map(|h| [&h.name, &h.value])) {
        assert!(r.start <= r.end && r.end <= head.len, "{r:?} outside the head");
    }
    assert_eq!(head.framing(true), Some(Framing::None), "a response to HEAD has no body");
    let Some(framing) = head.framing(false) else { return };
    let close = head.close || framing == Framing::UntilClose;
    let mut out = Vec::new();
    write_response_head(&mut out, data, &head, &plan(PathAndQuery::from_static("/")), framing, close);
    if head.headers.len() + 2 > MAX_HEADERS {
        // The client's head may have two more (framing, close) than the lane's parser, which
        // reads it back here, takes; a client has no such limit.
        return;
    }
    let again: Response = match parse_response(&out) {
        Ok(Some(again)) => again,
        _ => panic!("the client's head does not parse: {:?}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(again.len, out.len(), "the client's head has bytes after its end");
    assert_eq!(again.status, head.status);
    assert_eq!(out[again.reason.clone()], data[head.reason.clone()]);
    assert_eq!(again.close, close);
    assert_eq!(again.framing(false), Some(framing), "the client would read the body differently");

    let named: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| h.hop == Hop::Connection)
        .flat_map(|h| h.value(data).split(|&b| b == b',').map(<[u8]>::trim_ascii))
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
        .collect();
    for h in &again.headers {
        let name = &out[h.name.clone()];
        let shown = String::from_utf8_lossy(name);
        match h.hop {
            Hop::Drop | Hop::Te | Hop::Special => panic!("{shown:?} forwarded"),
            // The lane's own framing and close, whatever the upstream's `Connection` named.
            Hop::TransferEncoding => assert_eq!(h.value(&out), b"chunked"),
            Hop::Connection => assert_eq!(h.value(&out), b"close"),
            _ => assert!(!named.iter().any(|n| n.eq_ignore_ascii_case(name)), "{shown:?} was named hop-by-hop"),
        }
    }
    let locations = |buf: &[u8], r: &Response| -> Vec<Vec<u8>> {
        r.headers.iter().filter(|h| h.hop == Hop::Location).map(|h| h.value(buf).to_vec()).collect()
    };
    if !named.iter().any(|n| n.eq_ignore_ascii_case(b"location")) {
        let expected: Vec<Vec<u8>> = locations(data, &head)
            .into_iter()
            .map(|l| if l.starts_with(b"/") { [format!("/proxy/{PORT}").as_bytes(), &l].concat() } else { l })
            .collect();
        assert_eq!(locations(&out, &again), expected);
    }
}

/// How a chunked body ended when fed to a scanner.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body is the first this many bytes.
    Done(usize),
    /// Not finished yet, or malformed: the relay waits for more, or gives up.
    NotDone,
    Malformed,
}

fn scan_in_pieces(body: &[u8], sizes: &mut impl Iterator<Item = usize>) -> End {
    let mut s = Scanner::default();
    let mut taken = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let piece = &rest[..sizes.next().unwrap_or(rest.len()).clamp(1, rest.len())];
        rest = &rest[piece.len()..];
        let n = match s.scan(piece) {
            Ok(n) => n,
            Err(Malformed) => return End::Malformed,
        };
        assert!(n <= piece.len(), "the scanner took more bytes than it was given");
        taken += n;
        if s.done() {
            assert_eq!(s.scan(b"0\r\n\r\n"), Ok(0), "bytes after the end were taken");
            return End::Done(taken);
        }
        assert_eq!(n, piece.len(), "an unfinished body left bytes untaken");
    }
    End::NotDone
}

/// The same rules as [`Scanner`] (CRLF line ends; a size of 1 to 15 hex digits; extensions
/// after `;`, space or tab, the size line at most 4096 bytes then; trailer lines without CR or
/// LF, 16 KiB of them in all), written as a plain parser of the whole body rather than a
/// byte-at-a-time state machine: where the body ends, or `None`.
fn reference_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 15 {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&b[i..i + digits]).ok()?, 16).ok()?;
        let cr = i + b[i..].iter().position(|&c| c == b'\r')?;
        let extension = &b[i + digits..cr];
        if let Some((first, _)) = extension.split_first()
            && (!matches!(first, b';' | b' ' | b'\t') || extension.contains(&b'\n') || cr - i + 1 > 4096)
        {
            return None;
        }
        if b.get(cr + 1) != Some(&b'\n') {
            return None;
        }
        i = cr + 2;
        if size == 0 {
            break;
        }
        let data_end = i.checked_add(usize::try_from(size).ok()?)?;
        if b.get(data_end..data_end + 2)? != b"\r\n" {
            return None;
        }
        i = data_end + 2;
    }
    let mut trailer_bytes = 0;
    loop {
        if b.get(i..i + 2)? == b"\r\n" {
            return Some(i + 2);
        }
        let line = b[i..].windows(2).position(|w| w == b"\r\n")?;
        if b[i..i + line].iter().any(|&c| c == b'\r' || c == b'\n') {
            return None;
        }
        trailer_bytes += line;
        if trailer_bytes > 16 * 1024 {
            return None;
        }
        i += line + 2;
    }
}

/// The chunked scanner. The first byte seeds the sizes the rest is fed in. Asserts that it
/// never takes more bytes than it is given, nor any after the end; that the answer does not
/// depend on how the bytes arrive (whole, byte by byte, or in the seeded pieces); and that the
/// end it finds is the one [`reference_end`] finds, so the relay stops where the client's
/// parser does.
pub fn chunked(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else { return };
    let whole = scan_in_pieces(body, &mut std::iter::empty());
    assert_eq!(scan_in_pieces(body, &mut std::iter::repeat(1)), whole, "byte by byte");
    // A small generator: the pieces should vary, and the same input always splits alike.
    let mut x = u32::from(seed) | 1;
    let mut sizes = std::iter::from_fn(|| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Some((x % 17) as usize + 1)
    });
    assert_eq!(scan_in_pieces(body, &mut sizes), whole, "in pieces from seed {seed}");
    match (&whole, reference_end(body)) {
        (End::Done(n), Some(m)) => assert_eq!(*n, m, "the scanner and the reference end the body apart"),
        (End::Done(n), None) => panic!("the scanner ends a body at {n} that the reference refuses"),
        (_, Some(m)) => panic!("the reference ends the body at {m}, the scanner says {whole:?}"),
        (_, None) => {}
    }
}
