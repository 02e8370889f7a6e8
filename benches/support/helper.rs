//! The benchmark program again, in another role and a process of its own, as a dev server is:
//! the upstream (a small response, a 1 MiB response, a WebSocket echo) or a bare relay.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The upstream's small response (63 bytes).
pub const SMALL: &[u8] = b"{\"status\":\"ok\",\"message\":\"a small response from the upstream\"}\n";
pub const MIB: usize = 1024 * 1024;

/// Runs this program again in another role: `--role upstream`, or `--role relay <upstream port>`.
const ROLE: &str = "--role";

/// If this process was started as a helper, serves that role until it is killed and never
/// returns; otherwise returns at once. The first thing a benchmark's `main` does.
pub fn dispatch() {
    let mut role = std::env::args().skip_while(|a| a != ROLE).skip(1);
    match role.next().as_deref() {
        Some("upstream") => run_upstream(),
        Some("relay") => run_relay(role.next().and_then(|p| p.parse().ok()).expect("the upstream's port")),
        _ => return,
    }
    std::process::exit(0);
}

/// This program in another role, in its own process: it prints its port and serves until it is
/// killed (at drop). It inherits this process's limits (open files, say).
pub struct Helper {
    pub child: std::process::Child,
    pub port: u16,
}

impl Helper {
    pub fn start(role: &[&str]) -> Helper {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg(ROLE)
            .args(role)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        Helper { child, port: line.trim().parse().expect("a helper prints its port") }
    }

    /// The upstream: `…/small`, `…/1m`, and a WebSocket echo on any path.
    pub fn upstream() -> Helper {
        Helper::start(&["upstream"])
    }

    /// A bare relay to `127.0.0.1:<up_port>`.
    pub fn relay(up_port: u16) -> Helper {
        Helper::start(&["relay", &up_port.to_string()])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bare relay: a runtime like the front's (a worker per core), and per accepted connection
/// a connection to the upstream and `copy_bidirectional` between them.
fn run_relay(up_port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        loop {
            let Ok((mut client, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", up_port)).await else { return };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
}

/// The upstream: `…/small`, `…/1m`, and a WebSocket echo on any path; a runtime with a worker
/// per core. Request bodies are read and dropped.
fn run_upstream() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let big = Bytes::from(vec![b'x'; MIB]);
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let big = big.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| upstream(req, big.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

async fn upstream(req: Request<hyper::body::Incoming>, big: Bytes) -> Result<Response<Body>, Infallible> {
    if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = derive_accept_key(key.as_bytes());
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() || ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Body::empty())
            .unwrap());
    }
    let body = if req.uri().path().ends_with("/1m") { big } else { Bytes::from_static(SMALL) };
    // A body left unread would cost the connection its keep-alive (the benchmarks' GETs have none).
    if req.method() != hyper::Method::GET {
        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
    }
    Ok(Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap())
}
