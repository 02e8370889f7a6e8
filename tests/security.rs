//! What an attacker on the network or another local user tries, against the real binary:
//! silent connections, smuggling through the shared upstream pool, squatted directories, raced
//! and locked login limiters, foreign cookie scopes, cross-site logout.

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::upstream;
use common::*;
use hyper::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct-horse";

/// Waits (at most `limit`) for the server to close `stream`, in the background from now; the
/// task answers how long that took.
fn closed_by_server<S>(mut stream: S, limit: Duration) -> tokio::task::JoinHandle<Result<Duration, String>>
where
    S: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move { wait_closed(&mut stream, limit).await })
}

async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return Err(format!("still open after {limit:?}")),
        }
    }
}

/// Connections that send nothing (before their first byte, after a TLS handshake, after the
/// HTTP/2 preface, idle after a proxied keep-alive request) are closed within the header
/// timeout, and more of them than the process has descriptors for only delay `/healthz`
/// until they are closed: the server does not stop answering.
#[tokio::test]
async fn silent_connections_are_closed_and_cannot_exhaust_descriptors() {
    const LIMIT: u64 = 96;
    let up = upstream::Upstream::start().await;
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let mut cmd = home.command();
    cmd.args(["--bind-addr", "127.0.0.1:0"]);
    // SAFETY: setrlimit is async-signal-safe. Soft and hard limit both, so raising the soft
    // limit at start cannot lift it.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: LIMIT, rlim_max: LIMIT };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let s = Server::start_command(&mut cmd);
    let cookie = s.client().login(PASSWORD).await;
    let authority = s.authority();

    // A TLS server too, for a connection silent after its handshake.
    let tls_home = Home::new();
    tls_home.write_config("auth: password\npassword: pw\ncert: true\n");
    let tls = Server::start(&tls_home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let limit = Duration::from_secs(90);
    let cert = tls_home.data_dir().join("localhost.crt");
    let tls_conn = closed_by_server(tls_connect(&tls.authority(), &cert, &[b"http/1.1"]).await, limit);
    let h2_tls = closed_by_server(tls_connect(&tls.authority(), &cert, &[b"h2"]).await, limit);

    // Idle keep-alive after a request the express lane served.
    let mut kept = TcpStream::connect(&authority).await.unwrap();
    let req = format!("GET /proxy/{}/x HTTP/1.1\r\nHost: {authority}\r\nCookie: {cookie}\r\n\r\n", up.port);
    kept.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1024];
        let n = kept.read(&mut b).await.unwrap();
        assert!(n > 0, "closed before answering");
        head.extend_from_slice(&b[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let kept = closed_by_server(kept, limit);
    // HTTP/2 with prior knowledge: the preface, then nothing.
    let mut h2 = TcpStream::connect(&authority).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let h2 = closed_by_server(h2, limit);
    let first_silent = closed_by_server(TcpStream::connect(&authority).await.unwrap(), limit);
    let mut silent = Vec::new();
    for _ in 0..LIMIT + 20 {
        silent.push(TcpStream::connect(&authority).await.unwrap());
    }

    // More connections than the server has descriptors: /healthz waits in the kernel's queue
    // until the silent ones are closed, then is answered.
    let asked = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(120), s.client().get("/healthz")).await;
    let waited = asked.elapsed();
    let health = health.expect("/healthz was never answered");
    assert_eq!(health.status, StatusCode::OK);

    for (what, r) in [
        ("idle keep-alive after a lane request", kept),
        ("HTTP/2 after its preface", h2),
        ("TLS after its handshake", tls_conn),
        ("HTTP/2 over TLS with no request", h2_tls),
        ("TCP before its first byte", first_silent),
    ] {
        let took = r.await.unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(took >= Duration::from_secs(5), "{what}: closed after {took:?}, before any timeout could pass");
    }
    let accept_failures = s.stderr_text().matches("accept failed").count();
    assert!(
        (1..=3).contains(&accept_failures),
        "accept failures are reported once per episode, not per retry ({accept_failures}):\n{}",
        s.stderr_text()
    );
    assert!(s.stderr_text().contains("EMFILE"), "{}", s.stderr_text());
    drop(silent);
    eprintln!("/healthz answered after {waited:?} behind {} silent connections", LIMIT + 20);
}

/// An upstream that answers before reading request bodies: each request gets `path=<its path>`
/// at once and its body is left in the stream, to be read as the next request. A `/secret`
/// request has its own body read and is answered 300 ms late, so the next request sent on that
/// connection, whoever sends it, reads the answer to `/secret`. Counts connections.
async fn hasty_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut b = [0u8; 65536];
                        match sock.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("?").to_string();
                    if path.starts_with("/secret") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        while buf.len() < length {
                            let mut b = [0u8; 65536];
                            match sock.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&b[..n]),
                            }
                        }
                        buf.drain(..length);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let body = format!("path={path}");
                    let res = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if sock.write_all(res.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, count)
}

/// One request on a new connection; `force_hyper` adds a header that makes the express lane
/// hand the request to hyper's path.
async fn proxied(
    s: &Server,
    method: &str,
    path: &str,
    cookie: &str,
    body: axum::body::Body,
    force_hyper: bool,
) -> Resp {
    let mut headers = vec![("cookie", cookie)];
    if force_hyper {
        headers.push(("connection", "keep-alive, x-private"));
    }
    s.client().send(method, path, &headers, body).await
}

/// A proxied app that answers before reading a request body turns the body into a second
/// request on its connection; pooled connections never pass to another session, so another
/// client can never read that second answer, whichever path each request takes.
#[tokio::test]
async fn a_smuggled_answer_never_reaches_another_session() {
    let (port, _) = hasty_upstream().await;
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let alice = s.client().login(PASSWORD).await;
    let mallory = s.client().login(PASSWORD).await;
    for (mallory_via_hyper, alice_via_hyper) in [(false, false), (true, true), (false, true), (true, false)] {
        let smuggled = "GET /secret HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = proxied(&s, "POST", &format!("/proxy/{port}/a"), &mallory, smuggled.into(), mallory_via_hyper).await;
        assert_eq!(r.text(), "path=/a");
        let r =
            proxied(&s, "GET", &format!("/proxy/{port}/b"), &alice, axum::body::Body::empty(), alice_via_hyper).await;
        assert_eq!(
            r.text(),
            "path=/b",
            "alice read another session's answer (mallory via hyper: {mallory_via_hyper}, alice: {alice_via_hyper})"
        );
        // Let the smuggled answer go out before the next round.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// An upstream connection whose response began before the request body was all sent is not
/// reused, not even by the same session (whose next request would read the answer to the
/// request the body held).
#[tokio::test]
async fn a_connection_answered_before_its_body_was_sent_is_not_reused() {
    let (port, connections) = hasty_upstream().await;
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let cookie = s.client().login(PASSWORD).await;
    // More than loopback sockets buffer, so the upstream answers while most of it is still to
    // be sent.
    let filler = 32 << 20;
    let mut body = format!("GET /secret HTTP/1.1\r\nHost: x\r\nContent-Length: {filler}\r\n\r\n").into_bytes();
    body.resize(body.len() + filler, b'.');
    for via_hyper in [true, false] {
        let upload = if via_hyper {
            // Chunked: the lane hands it to hyper.
            let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> =
                body.chunks(64 * 1024).map(|c| Ok(axum::body::Bytes::copy_from_slice(c))).collect();
            axum::body::Body::from_stream(futures_util::stream::iter(chunks))
        } else {
            axum::body::Body::from(body.clone())
        };
        let r = proxied(&s, "POST", &format!("/proxy/{port}/early"), &cookie, upload, false).await;
        assert_eq!(r.text(), "path=/early");
        let before = connections.load(std::sync::atomic::Ordering::SeqCst);
        // The same session, on a new connection to us: a fresh upstream connection.
        let r = proxied(&s, "GET", &format!("/proxy/{port}/after"), &cookie, axum::body::Body::empty(), false).await;
        assert_eq!(r.text(), "path=/after", "via hyper: {via_hyper}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), before + 1, "via hyper: {via_hyper}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// Sends raw bytes as one request on a new connection and returns the raw answer.
async fn raw(authority: &str, request: &[u8]) -> String {
    let mut sock = TcpStream::connect(authority).await.unwrap();
    sock.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The express lane and hyper's path make one decision: a `#fragment` never reaches the app, a
/// cookie name with non-ASCII whitespace is not our session (neither to authentication nor to
/// the cookie filter), and over HTTP/2 the `:authority` names the proxy-domain host.
#[tokio::test]
async fn the_lane_and_hyper_decide_alike() {
    let up = upstream::Upstream::start().await;
    let p = up.port;
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--proxy-domain", "{{port}}.example.test"], &[]);
    let cookie = s.client().login(PASSWORD).await;
    let token = cookie.split_once('=').unwrap().1.to_string();
    let a = s.authority();
    for hyper_path in ["", "Connection: keep-alive, x-private\r\n"] {
        let answer = raw(
            &a,
            format!("GET /proxy/{p}/frag?q=1#fragment HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n{hyper_path}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""uri":"/frag?q=1""#), "{hyper_path:?}: {answer}");

        // A look-alike of our cookie is somebody else's cookie: it opens nothing.
        let mut req = format!("GET /proxy/{p}/deep HTTP/1.1\r\nHost: h\r\n{hyper_path}Connection: close\r\nCookie: ")
            .into_bytes();
        req.extend_from_slice("\u{a0}code-server-session=".as_bytes());
        req.extend_from_slice(token.as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        let answer = raw(&a, &req).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{hyper_path:?}: {answer}");
    }

    // HTTP/2 (prior knowledge) names the host in :authority, not in a Host header.
    let tcp = TcpStream::connect(&a).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{p}.example.test/h2?x=1"))
        .header("cookie", &cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let r = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["uri"], "/h2?x=1", "{}", r.text());
}
