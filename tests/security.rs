//! What an attacker on the network or another local user tries, against the real binary:
//! silent connections, smuggling through the shared upstream pool, squatted directories, raced
//! and locked login limiters, foreign cookie scopes, cross-site logout.

// The tests set limits and users in child processes before exec.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use hyper::http::StatusCode;
use testkit::upstream;
use testkit::*;
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
        assert!(
            early_answer(&s, port, &cookie, &body, via_hyper).await.contains("path=/early"),
            "via hyper: {via_hyper}"
        );
        let before = connections.load(std::sync::atomic::Ordering::SeqCst);
        // The same session, on a new connection to us: a fresh upstream connection.
        let r = proxied(&s, "GET", &format!("/proxy/{port}/after"), &cookie, axum::body::Body::empty(), false).await;
        assert_eq!(r.text(), "path=/after", "via hyper: {via_hyper}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), before + 1, "via hyper: {via_hyper}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// POSTs `body` to the hasty upstream's `/early` on a new connection, chunked (which the lane
/// hands to hyper) or with a length, and returns the raw answer. We answer before the body is
/// all sent and then close the connection, so the client reads while it writes: hyper's client
/// would report the closed connection (a broken pipe) instead of the answer it already has.
async fn early_answer(s: &Server, port: u16, cookie: &str, body: &[u8], chunked: bool) -> String {
    let sock = TcpStream::connect(s.authority()).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let framing =
        if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {}", body.len()) };
    let head = format!("POST /proxy/{port}/early HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n{framing}\r\n\r\n");
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        if chunked {
            for c in body.chunks(64 * 1024) {
                wr.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
                wr.write_all(c).await?;
                wr.write_all(b"\r\n").await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
        } else {
            wr.write_all(&body).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&out).contains("path=") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
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

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

const NOBODY: u32 = 65534;

/// Runs `script` with `sh -c` as the unprivileged `nobody`; returns (success, output).
fn as_nobody(script: &str) -> (bool, String) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(NOBODY)
        .gid(NOBODY)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Without `$XDG_RUNTIME_DIR` the runtime directory is `$TMPDIR/$USER/code-server`: another
/// local user who makes it first (with a preload script of their own in it) must not get it
/// used. The server refuses to start and says which directory and why.
#[tokio::test]
async fn a_squatted_runtime_directory_is_refused() {
    if !is_root() {
        eprintln!("SKIPPED: acting as another local user needs root");
        return;
    }
    // A world-writable sticky directory, as /tmp is.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let squat = tmp.path().join("victim/code-server");
    let (ok, out) = as_nobody(&format!(
        "mkdir -p {0} && chmod 777 {0} {0}/.. && echo 'require(\"child_process\").execSync(\"touch /tmp/pwned\")' > {0}/preload.cjs",
        squat.display()
    ));
    assert!(ok, "{out}");

    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let mut cmd = home.command();
    cmd.env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", tmp.path())
        .env("USER", "victim")
        .args(["--bind-addr", "127.0.0.1:0"]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "must not start:\n{stderr}");
    assert!(stderr.contains("refusing to use") && stderr.contains("victim"), "{stderr}");
    assert!(stderr.contains(&format!("uid {NOBODY}")), "names the owner: {stderr}");

    // The same place, made by nobody else: used, and ours alone.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let mut cmd = home.command();
    cmd.env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", tmp.path())
        .env("USER", "victim")
        .args(["--bind-addr", "127.0.0.1:0"]);
    let s = Server::start_command(&mut cmd);
    let runtime = tmp.path().join("victim/code-server");
    assert_eq!(mode(&runtime), 0o700);
    assert_eq!(mode(runtime.parent().unwrap()), 0o700);
    drop(s);
}

/// With umask 000 every directory and socket we make is still ours alone, and another local
/// user can neither reach the session registry (which decides where `code-server FILE` opens
/// files) nor, if its directory is opened up by mistake, talk to it.
#[tokio::test]
async fn directories_and_sockets_are_private_whatever_the_umask() {
    let home = Home::new();
    let mut cmd = home.command();
    cmd.env("PASSWORD", PASSWORD).args(["--bind-addr", "127.0.0.1:0"]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let s = Server::start_command(&mut cmd);
    eventually("the session server", || s.stdout_text().contains("Session server listening on")).await;
    let data = home.data_dir();
    let socket = data.join("code-server-ipc.sock");
    assert_eq!(mode(&socket) & 0o777, 0o600, "the registry's socket");
    assert_eq!(mode(&data), 0o700, "the user-data-dir");
    assert_eq!(mode(&home.config_dir()), 0o700, "the config dir");
    assert_eq!(mode(&home.path().join("run/code-server")), 0o700, "the runtime dir");
    // VS Code's own socket, once it runs.
    let cookie = s.client().login(PASSWORD).await;
    let r = s.client().get_with("/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let vscode_sockets: Vec<_> = std::fs::read_dir(home.path().join("run/code-server"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
        .collect();
    assert_eq!(vscode_sockets.len(), 1);
    assert_eq!(mode(&vscode_sockets[0].path()) & 0o777, 0o600, "VS Code's socket");

    if !is_root() {
        eprintln!("SKIPPED (the rest): acting as another local user needs root");
        return;
    }
    let register = format!(
        r#"python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
b=b"{{\"entry\":{{\"socketPath\":\"/tmp/evil.sock\"}}}}"
s.sendall(b"POST /add-session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(b) + b)
print(s.recv(4096))' {}"#,
        socket.display()
    );
    let (ok, out) = as_nobody(&register);
    assert!(!ok && out.contains("Permission denied"), "nobody reached the registry: {out}");
    // Opened up by hand: the registry itself still refuses another uid.
    for dir in [home.path(), &home.path().join("data"), &data] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (_, out) = as_nobody(&register);
    assert!(!out.contains("session added"), "nobody registered a window: {out}");
    eventually("the refusal in the log", || {
        s.stderr_text().contains(&format!("refused a connection from uid {NOBODY}"))
    })
    .await;
}

fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::encode_b64(b"a fixed test salt").unwrap();
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

fn login_answer(r: &Resp) -> &'static str {
    let text = r.text();
    if r.status == StatusCode::FOUND {
        "signed in"
    } else if text.contains("Login rate limited!") {
        "limited"
    } else if text.contains("Incorrect password") {
        "incorrect"
    } else {
        panic!("unexpected login answer {}: {text}", r.status)
    }
}

/// Many wrong passwords at the same moment from one address: the limiter counts each before
/// verifying it, so no more than its 14 are ever checked, and the right password right after
/// is refused like any other.
#[tokio::test]
async fn the_login_limiter_cannot_be_raced() {
    let home = Home::new();
    home.write_config(&format!("auth: password\nhashed-password: \"{}\"\n", argon2_hash(PASSWORD)));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let c = s.client();
    let attempts: Vec<_> = (0..200).map(|_| c.post_form("/login", "password=wrong", &[])).collect();
    let answers: Vec<Resp> = futures_util::future::join_all(attempts).await;
    let mut incorrect = answers.iter().filter(|r| login_answer(r) == "incorrect").count();
    assert!((1..=14).contains(&incorrect), "{incorrect} wrong passwords were verified");
    // On until the limit, one at a time: 14 in all.
    while login_answer(&c.post_form("/login", "password=wrong", &[]).await) == "incorrect" {
        incorrect += 1;
    }
    assert_eq!(incorrect, 14);
    // A burst right after, the right password among the wrong ones: nothing gets through.
    let burst: Vec<_> = (0..50)
        .map(|i| c.post_form("/login", if i == 25 { "password=correct-horse" } else { "password=wrong" }, &[]))
        .collect();
    for r in futures_util::future::join_all(burst).await {
        assert_eq!(login_answer(&r), "limited");
    }
    assert_eq!(s.stderr_text().matches("Failed login attempt").count(), 14);
}

/// Someone guessing from many addresses exhausts the process-wide ceiling, and then even the
/// owner's right password is refused from a new browser; but a browser that has signed in
/// before carries a device cookie, and passes. A forged device cookie does not.
#[tokio::test]
async fn guessing_from_many_addresses_does_not_lock_out_a_known_browser() {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--trusted-proxies", "127.0.0.1"], &[]);
    let c = s.client();
    let owner = c.post_form("/login", &format!("password={PASSWORD}"), &[("x-forwarded-for", "192.0.2.1")]).await;
    assert_eq!(login_answer(&owner), "signed in");
    let device =
        owner.set_cookies().into_iter().find(|c| c.starts_with("code-server-device=")).expect("a device cookie");
    assert!(
        device.contains("HttpOnly") && device.contains("SameSite=Strict") && device.contains("Max-Age="),
        "{device}"
    );
    let device = device.split(';').next().unwrap().to_string();

    for addr in 1..=8 {
        for _ in 0..14 {
            let xff = format!("10.0.0.{addr}");
            c.post_form("/login", "password=guess", &[("x-forwarded-for", &xff)]).await;
        }
    }
    let stranger = c.post_form("/login", &format!("password={PASSWORD}"), &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(login_answer(&stranger), "limited", "the ceiling still holds for unknown browsers");
    let known = c
        .post_form(
            "/login",
            &format!("password={PASSWORD}"),
            &[("x-forwarded-for", "198.51.100.7"), ("cookie", &device)],
        )
        .await;
    assert_eq!(login_answer(&known), "signed in", "the owner's browser is not locked out");
    let (name, value) = device.split_once('=').unwrap();
    // The id's last hex digit changed (never to itself), the signature kept.
    let last = if value.as_bytes()[31] == b'0' { '1' } else { '0' };
    let forged = format!("{name}={}{last}.{}", &value[..31], value.split_once('.').unwrap().1);
    let r = c.post_form("/login", &format!("password={PASSWORD}"), &[("cookie", &forged)]).await;
    assert_eq!(login_answer(&r), "limited", "a forged device cookie counts for nothing");
}

/// With `--trusted-proxies`, an `X-Forwarded-For` whose right-most entry (the proxy's) does not
/// parse stops the walk there: the attacker-written entries to its left cannot give each
/// attempt a new address.
#[tokio::test]
async fn an_unparseable_forwarded_entry_does_not_let_the_sender_choose_an_address() {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--trusted-proxies", "127.0.0.1"], &[]);
    let c = s.client();
    let mut answers = Vec::new();
    for i in 0..16 {
        let xff = format!("10.9.9.{i}, unknown");
        answers.push(login_answer(&c.post_form("/login", "password=guess", &[("x-forwarded-for", &xff)]).await));
    }
    assert_eq!(answers.iter().filter(|a| **a == "incorrect").count(), 14, "{answers:?}");
    assert_eq!(answers[14], "limited");
}

/// `POST /login?href=…&base=…` cannot scope the session cookie to another domain, a parent
/// domain, or inject attributes.
#[tokio::test]
async fn the_cookie_scope_does_not_come_from_the_query() {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let c = s.client();
    let cases = [
        ("127.0.0.1", "/login?href=https%3A%2F%2Fevil.org%2F&base=.", None),
        ("code.example.com", "/login?href=https%3A%2F%2Fexample.com%2F&base=.", Some("code.example.com")),
        (
            "code.example.com",
            "/login?href=https%3A%2F%2Fcode.example.com%2F&base=%2Fx%3B%20Domain%3Devil.org",
            Some("code.example.com"),
        ),
        (
            "code.example.com",
            "/login?href=https%3A%2F%2Fcode.example.com%2Fa%2Cb%2Flogin&base=.",
            Some("code.example.com"),
        ),
    ];
    for (host, path, domain) in cases {
        let r = c.post_form(path, &format!("password={PASSWORD}"), &[("host", host)]).await;
        let set = r.set_cookies().into_iter().find(|c| c.starts_with("code-server-session=")).unwrap();
        let attrs: Vec<&str> = set.split("; ").skip(1).collect();
        let expected: Vec<String> = domain
            .map(|d| format!("Domain={d}"))
            .into_iter()
            .chain(["Path=/".to_string(), "HttpOnly".into(), "SameSite=Lax".into()])
            .collect();
        assert_eq!(attrs, expected, "{host} {path}: {set}");
    }
}

/// code-server's logout is a GET: from another site it only asks, from our own pages (or typed
/// in) it signs out.
#[tokio::test]
async fn logout_from_another_site_only_asks() {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let c = s.client();
    let cookie = c.login(PASSWORD).await;
    for foreign in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "https://evil.org")],
        vec![("referer", "https://evil.org/page")],
    ] {
        let mut headers = foreign.clone();
        headers.push(("cookie", &cookie));
        let r = c.get_with("/logout?to=/x", &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{foreign:?}");
        assert!(
            r.text().contains("Sign out of code-server?") && r.text().contains(r#"href="./logout?to=/x""#),
            "{}",
            r.text()
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.set_cookies().is_empty());
        assert!(c.authenticated(&cookie).await, "{foreign:?} signed the session out");
    }
    let authority = s.authority();
    let referer = format!("http://{authority}/?folder=/x");
    for ours in [vec![("sec-fetch-site", "same-origin")], vec![("referer", referer.as_str())]] {
        let cookie = c.login(PASSWORD).await;
        let mut headers = ours.clone();
        headers.push(("cookie", &cookie));
        let r = c.get_with("/logout?to=/x", &headers).await;
        assert_eq!(r.status, StatusCode::FOUND, "{ours:?}");
        assert!(!c.authenticated(&cookie).await, "{ours:?}");
    }
}

/// Logins do not grow the session file without bound, and a short `--session-timeout` does not
/// end a session that is in use.
#[tokio::test]
async fn sessions_are_capped_and_short_timeouts_slide() {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--session-timeout", "4"], &[]);
    let c = s.client();
    let first = c.login(PASSWORD).await;
    // In use every half second for eight seconds: twice the timeout.
    for _ in 0..16 {
        assert!(c.authenticated(&first).await, "a session in use expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut last = String::new();
    for _ in 0..105 {
        last = c.login(PASSWORD).await;
    }
    let file = home.data_dir().join("code-server-sessions.json");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["sessions"].as_object().unwrap().len(), 100);
    assert!(!c.authenticated(&first).await, "the least recently used session went");
    assert!(c.authenticated(&last).await);
}

/// Our responses that depend on who asks are never cached, and carry the headers our pages
/// carry: the mint key, the update check, and error pages and JSON errors (ours and the proxy's).
#[tokio::test]
async fn our_private_responses_are_not_cached_nor_framed() {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\ndisable-update-check: true\n"));
    let s = Server::start(
        &home,
        &[
            "--bind-addr",
            "127.0.0.1:0",
            "--update-url",
            &format!("http://127.0.0.1:{}/latest", upstream::closed_port().await),
        ],
        &[],
    );
    let c = s.client();
    let cookie = c.login(PASSWORD).await;
    let closed = upstream::closed_port().await;
    let responses = [
        ("mint key", c.send("POST", "/mint-key", &[("cookie", &cookie)], axum::body::Body::empty()).await),
        ("update check", c.get_with("/update/check", &[("cookie", &cookie)]).await),
        ("error page", c.get_with("/nothing/here", &[("accept", "text/html")]).await),
        ("JSON error", c.get("/nothing/here").await),
        (
            "proxy error page",
            c.get_with(&format!("/proxy/{closed}/"), &[("cookie", &cookie), ("accept", "text/html")]).await,
        ),
        ("proxy JSON error", c.get_with(&format!("/proxy/{closed}/"), &[("cookie", &cookie)]).await),
    ];
    for (what, r) in responses {
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}: {:?}", r.headers);
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
        assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"), "{what}");
    }
}
