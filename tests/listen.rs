//! Listening: Unix sockets, inherited descriptors, TLS (self-signed and user certificates,
//! plain-HTTP redirect, HTTP/2 by ALPN), shutdown.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use axum::body::Body;
use hyper::Request;
use hyper::http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::*;

#[tokio::test]
async fn unix_socket_with_mode_and_cleanup() {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let sock = home.path().join("cs.sock");
    let s = Server::start(&home, &["--socket", sock.to_str().unwrap(), "--socket-mode", "660"], &[]);
    assert_eq!(s.address, sock.display().to_string());
    assert!(s.stdout_text().contains(&format!("HTTP server listening on {}", sock.display())));
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let c = Client::unix(&sock);
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
    let cookie = c.login("pw").await;
    assert!(c.authenticated(&cookie).await);

    assert_eq!(s.stop(), Some(0));
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn stale_socket_is_replaced_but_other_files_are_not() {
    let home = Home::new();
    home.write_config("auth: none\n");
    let sock = home.path().join("stale.sock");
    // A socket file nobody listens on, as a crashed run leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let s = Server::start(&home, &["--socket", sock.to_str().unwrap()], &[]);
    assert_eq!(Client::unix(&sock).get("/healthz").await.status, StatusCode::OK);

    // While it runs, a second server on the same socket refuses instead of stealing it.
    let out = run(&home, &["--socket", sock.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("another server is already listening"), "{}", out.stderr);
    drop(s);

    let file = home.path().join("precious.txt");
    std::fs::write(&file, "data").unwrap();
    let out = run(&home, &["--socket", file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("exists and is not a socket"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data", "nothing is lost");
}

/// systemd-style socket activation: the listening socket is inherited as a descriptor.
#[tokio::test]
async fn socket_fd_tcp_and_unix() {
    let home = Home::new();
    home.write_config("auth: none\n");

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    socket2::SockRef::from(&tcp).set_cloexec(false).unwrap();
    let fd = tcp.as_raw_fd().to_string();
    let s = Server::start(&home, &["--socket-fd", &fd], &[]);
    drop(tcp);
    assert_eq!(s.address, format!("http://{addr}/"));
    assert_eq!(Client::tcp(&addr.to_string()).get("/healthz").await.status, StatusCode::OK);
    drop(s);

    let path = home.path().join("activated.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    socket2::SockRef::from(&unix).set_cloexec(false).unwrap();
    let fd = unix.as_raw_fd().to_string();
    let s = Server::start(&home, &["--socket-fd", &fd], &[]);
    drop(unix);
    assert_eq!(Client::unix(&path).get("/healthz").await.status, StatusCode::OK);
    assert_eq!(s.stop(), Some(0));
    assert!(path.exists(), "an inherited socket's file belongs to whoever made it");

    // A descriptor that is not a listening socket is a clear error.
    let out = run(&home, &["--socket-fd", "0"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("--socket-fd 0:"), "{}", out.stderr);
}

async fn https_request(authority: &str, cert: &std::path::Path, req: Request<Body>) -> Resp {
    send_on(tls_connect(authority, cert, &[b"http/1.1"]).await, req).await
}

#[tokio::test]
async fn self_signed_certificate_is_made_once_and_reused() {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\ncert: true\n");
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert!(s.address.starts_with("https://127.0.0.1:"), "{}", s.address);
    let crt = home.data_dir().join("localhost.crt");
    let key = home.data_dir().join("localhost.key");
    // The start-up lines after "listening" may still be on their way.
    let line = format!("  - Using certificate for HTTPS: {}", crt.display());
    eventually("the certificate's line", || s.stdout_text().contains(&line)).await;
    assert!(s.stdout_text().contains("HTTPS server listening on https://127.0.0.1:"));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let first = std::fs::read(&crt).unwrap();

    // HTTPS works, and the login cookie is Secure.
    let authority = s.authority();
    let login = Request::post("/login")
        .header("host", &authority)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("password=pw"))
        .unwrap();
    let r = https_request(&authority, &crt, login).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let set = &r.set_cookies()[0];
    assert!(set.contains("; HttpOnly; Secure; SameSite=Lax"), "{set}");

    // Plain HTTP on the same port is redirected to https, URL kept.
    let r = Client::tcp(&authority).get("/login?to=/x").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some(format!("https://{authority}/login?to=/x").as_str()));
    drop(s);

    // The next start reuses the pair instead of making a new one.
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert_eq!(std::fs::read(&crt).unwrap(), first);
    let r = https_request(&s.authority(), &crt, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);

    // --cert-host names the files and the certificate.
    drop(s);
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--cert-host", "dev.example.com"], &[]);
    let named = home.data_dir().join("dev_example_com.crt");
    assert!(home.data_dir().join("dev_example_com.key").exists());
    // The certificate is for that name (its DER holds it), and is the one the server presents.
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(&named).unwrap();
    assert!(der.as_ref().windows(15).any(|w| w == b"dev.example.com"), "the name is in the certificate");
    assert!(!der.as_ref().windows(9).any(|w| w == b"localhost"), "and not the default one");
    let tls = tls_connect(&s.authority(), &named, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(), der.as_ref());
    drop(s);
}

#[tokio::test]
async fn user_certificate_and_http2() {
    let home = Home::new();
    home.write_config("auth: none\n");
    // Make a certificate with the library's own generator, then hand it over as user files.
    let (crt, key) = code_server::server::tls::self_signed("localhost", &home.path().join("mine")).unwrap();
    let s = Server::start(
        &home,
        &["--bind-addr", "127.0.0.1:0", "--cert", crt.to_str().unwrap(), "--cert-key", key.to_str().unwrap()],
        &[],
    );
    let line = format!("Using certificate for HTTPS: {}", crt.display());
    eventually("the certificate's line", || s.stdout_text().contains(&line)).await;

    // ALPN offers h2; a request over HTTP/2 is served.
    let tls = tls_connect(&s.authority(), &crt, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("https://{}/healthz", s.authority())).body(Body::empty()).unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let r = collect(res).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "expired", "a fresh server has seen no activity");

    // A missing key file is a clear start-up error.
    let out = run(&home, &["--cert", crt.to_str().unwrap(), "--cert-key", "/nonexistent/key.pem"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("could not read the certificate key /nonexistent/key.pem"), "{}", out.stderr);
}

#[tokio::test]
async fn sigint_and_sigterm_exit_cleanly() {
    for signal in ["INT", "TERM"] {
        let home = Home::new();
        home.write_config("auth: none\n");
        let mut s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
        s.signal(signal);
        // wait_exit also reads the output to its end: "Shutting down" is written just before exit.
        assert_eq!(s.wait_exit().await, Some(0), "SIG{signal}");
        assert!(s.stdout_text().contains("Shutting down"), "SIG{signal}");
        assert!(!s.stderr_text().contains("Second signal"), "one signal, one clean shutdown");
    }
}
