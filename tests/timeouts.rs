//! A body that stops arriving on one of our own routes is given up after the body idle timeout
//! (the request head's own 30 s): the client gets an answer and the connection is closed,
//! rather than the request holding a task and a socket for ever.

use std::time::Duration;

use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_stalled_body_on_our_route_is_answered_and_closed() {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let s = InProcess::start(&home, &[], &[]).await;
    let mut conn = TcpStream::connect(s.authority()).await.unwrap();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\npassword=p",
        s.authority()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // Then nothing more. The harness' bound is generous: the server's is 30 s.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed the connection");
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    assert_eq!(status, 408, "a timed-out body is a 408: {text}");
}

#[tokio::test]
async fn a_stalled_body_on_the_api_is_a_408_and_stores_nothing() {
    let home = Home::new();
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let env = [("ADMIN_USERNAME", "boss"), ("ADMIN_PASSWORD", "boss-password-1")];
    let s = InProcess::start(&home, &[], &env).await;
    let cookie = s.client().post_form("/login", "username=boss&password=boss-password-1", &[]).await;
    let cookie = cookie.session_cookie().expect("signed in");
    let mut conn = TcpStream::connect(s.authority()).await.unwrap();
    let head = format!(
        "POST /api/users HTTP/1.1\r\nHost: {a}\r\nOrigin: http://{a}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"username\":\"ada\",",
        a = s.authority()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed the connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let users = s.client().get_with("/api/users", &[("cookie", &cookie)]).await.json();
    assert_eq!(users["total"], 1, "nothing stored: {users}");
}
