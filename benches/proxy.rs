//! Port proxy throughput against the same upstream reached directly, in one run:
//!
//! ```sh
//! cargo bench --bench proxy                  # 5 s per side and scenario
//! cargo bench --bench proxy -- --secs 10     # longer, steadier
//! cargo bench --bench proxy -- --only small  # one of small, 1m, ws, memory
//! ```
//!
//! Starts an upstream in this process (hyper: a small response, a 1 MiB response, a WebSocket
//! echo) and our release binary, logs in once, then drives both with its own keep-alive load
//! generator: small responses (32 connections), 1 MiB responses (8), WebSocket echo round
//! trips (32), direct and through `/proxy/<port>/` (authenticated) in alternating half-second
//! slices. Prints requests per second each way, their ratio, and CPU time per request (the
//! front's through the proxy; the load generator and upstream's direct); then the front's
//! resident memory with 1,000 idle proxied WebSockets open.
//!
//! Everything shares the machine's cores, so only the ratios are comparable across machines.

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const PASSWORD: &str = "bench";
const SMALL: &[u8] = b"{\"status\":\"ok\",\"message\":\"a small response from the upstream\"}\n";
const MIB: usize = 1024 * 1024;
const IDLE_SOCKETS: usize = 1000;

fn main() {
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .map(|s| s.parse().expect("--secs takes a number"))
        .unwrap_or(5);
    let measure = Duration::from_secs(secs);
    // `--only small|1m|ws|memory` runs one part (handy under a profiler).
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let wanted = move |part: &str| only.as_deref().is_none_or(|o| o == part);

    // The upstream gets its own runtime, as a dev server would be its own process.
    let upstream_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let up_port = upstream_rt.block_on(start_upstream());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let home = common::Home::new();
        home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
        // The front gets a clean environment; TOKIO_WORKER_THREADS passes through for experiments.
        let threads = std::env::var("TOKIO_WORKER_THREADS").ok();
        let env: Vec<(&str, &str)> = threads.iter().map(|t| ("TOKIO_WORKER_THREADS", t.as_str())).collect();
        let server = common::Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &env);
        let front = server.authority();
        let cookie = server.client().login(PASSWORD).await;
        let direct = format!("127.0.0.1:{up_port}");
        let prefix = format!("/proxy/{up_port}");
        println!("proxy benchmark: {secs} s per measurement, upstream on port {up_port}, front {front}");
        println!(
            "{:<24} {:>11} {:>11} {:>7}   {:>11} {:>11}",
            "", "direct /s", "proxy /s", "ratio", "front µs", "direct µs"
        );

        let pid = server.child.id();
        let scenarios: [(&str, &str, usize, Kind, &str); 3] = [
            ("small", "small responses, c=32", 32, Kind::Http, "/small"),
            ("1m", "1 MiB responses, c=8", 8, Kind::Http, "/1m"),
            ("ws", "WebSocket echo, c=32", 32, Kind::Ws, "/ws"),
        ];
        for (part, name, conns, kind, path) in scenarios {
            if !wanted(part) {
                continue;
            }
            let direct = Side { id: DIRECT, addr: direct.clone(), path: path.to_string(), cookie: None };
            let proxy =
                Side { id: PROXY, addr: front.clone(), path: format!("{prefix}{path}"), cookie: Some(cookie.clone()) };
            let c = compare(kind, direct, proxy, conns, measure, pid).await;
            println!(
                "{name:<24} {:>11.0} {:>11.0} {:>7.2}   {:>11.1} {:>11.1}",
                c.direct,
                c.proxy,
                c.proxy / c.direct,
                c.front_cpu_us,
                c.own_cpu_us
            );
        }

        if !wanted("memory") {
            return;
        }
        let before = rss_kb(pid);
        let mut sockets = Vec::with_capacity(IDLE_SOCKETS);
        for _ in 0..IDLE_SOCKETS {
            let mut ws = ws_open(&front, &format!("{prefix}/ws"), Some(&cookie)).await;
            ws.send(Message::Binary(Bytes::from_static(b"hi"))).await.unwrap();
            ws.next().await.unwrap().unwrap();
            sockets.push(ws);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kb(pid);
        println!(
            "front RSS: {:.1} MB idle before, {:.1} MB with {IDLE_SOCKETS} idle proxied WebSockets open",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
        drop(sockets);
    });
}

#[derive(Clone, Copy)]
enum Kind {
    Http,
    Ws,
}

/// What the workers are told to do; see [`compare`].
const IDLE: u8 = 0;
const DIRECT: u8 = 1;
const PROXY: u8 = 2;
const STOP: u8 = 3;

/// One side of a comparison: where its workers connect and what they ask for.
struct Side {
    id: u8,
    addr: String,
    path: String,
    cookie: Option<String>,
}

/// The result of [`compare`]: requests (or echo round trips) per second each way, and CPU time
/// (user + system) per request: the front's through the proxy, this process's (load generator
/// and upstream) direct.
struct Comparison {
    direct: f64,
    proxy: f64,
    front_cpu_us: f64,
    own_cpu_us: f64,
}

/// Drives `conns` keep-alive connections to the upstream and `conns` through the proxy, one side
/// at a time, in alternating half-second slices (`measure` in total per side, after a warm-up),
/// so a burst of other work on the machine slows both sides alike. Only requests that start and
/// end within their side's slice are counted.
async fn compare(kind: Kind, direct: Side, proxy: Side, conns: usize, measure: Duration, front_pid: u32) -> Comparison {
    const SLICE: Duration = Duration::from_millis(500);
    let (phase, _) = tokio::sync::watch::channel(IDLE);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut tasks = Vec::new();
    for side in [&direct, &proxy] {
        for _ in 0..conns {
            let (id, addr, path, cookie) = (side.id, side.addr.clone(), side.path.clone(), side.cookie.clone());
            let (rx, counts) = (phase.subscribe(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let counter = &counts[id as usize];
                match kind {
                    Kind::Http => http_worker(&addr, &path, cookie.as_deref(), id, rx, counter).await,
                    Kind::Ws => ws_worker(&addr, &path, cookie.as_deref(), id, rx, counter).await,
                }
            }));
        }
    }
    for id in [DIRECT, PROXY] {
        phase.send_replace(id);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let me = std::process::id();
    let (mut done, mut secs, mut cpu) = ([0u64; 3], [0f64; 3], [0f64; 3]);
    let rounds = (measure.as_millis() / SLICE.as_millis()).max(1);
    for _ in 0..rounds {
        for (id, pid) in [(DIRECT, me), (PROXY, front_pid)] {
            let (n0, cpu0, t0) = (counts[id as usize].load(Ordering::Relaxed), cpu_seconds(pid), Instant::now());
            phase.send_replace(id);
            tokio::time::sleep(SLICE).await;
            phase.send_replace(IDLE);
            let i = id as usize;
            done[i] += counts[i].load(Ordering::Relaxed) - n0;
            secs[i] += t0.elapsed().as_secs_f64();
            cpu[i] += cpu_seconds(pid) - cpu0;
        }
    }
    phase.send_replace(STOP);
    for t in tasks {
        t.await.unwrap();
    }
    let (d, p) = (DIRECT as usize, PROXY as usize);
    Comparison {
        direct: done[d] as f64 / secs[d],
        proxy: done[p] as f64 / secs[p],
        front_cpu_us: cpu[p] * 1e6 / done[p].max(1) as f64,
        own_cpu_us: cpu[d] * 1e6 / done[d].max(1) as f64,
    }
}

/// Waits until the phase is `side` (true) or the run is over (false).
async fn my_turn(rx: &mut tokio::sync::watch::Receiver<u8>, side: u8) -> bool {
    match rx.wait_for(|p| *p == side || *p == STOP).await {
        Ok(p) => *p == side,
        Err(_) => false,
    }
}

async fn http_worker(
    addr: &str,
    path: &str,
    cookie: Option<&str>,
    side: u8,
    mut phase: tokio::sync::watch::Receiver<u8>,
    done: &AtomicU64,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    while my_turn(&mut phase, side).await {
        let mut req = Request::get(path).header("host", addr);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        sender.ready().await.unwrap();
        let res = sender.send_request(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        if *phase.borrow() == side {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn ws_open(addr: &str, path: &str, cookie: Option<&str>) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    tokio_tungstenite::client_async(req, stream).await.expect("WebSocket handshake").0
}

async fn ws_worker(
    addr: &str,
    path: &str,
    cookie: Option<&str>,
    side: u8,
    mut phase: tokio::sync::watch::Receiver<u8>,
    done: &AtomicU64,
) {
    let mut ws = ws_open(addr, path, cookie).await;
    let msg = Message::Binary(Bytes::from_static(&[7u8; 64]));
    while my_turn(&mut phase, side).await {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
        if *phase.borrow() == side {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ws.close(None).await;
}

/// The upstream: `…/small`, `…/1m`, and a WebSocket echo on any path.
async fn start_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let big = Bytes::from(vec![b'x'; MIB]);
    tokio::spawn(async move {
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
    port
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
    Ok(Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap())
}

/// User plus system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every common configuration.
    ticks as f64 / 100.0
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
