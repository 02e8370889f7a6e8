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
