//! Port proxy throughput against the same upstream reached directly, in one run:
//!
//! ```sh
//! cargo bench --bench proxy                  # 5 s per side and scenario
//! cargo bench --bench proxy -- --secs 10     # longer, steadier
//! cargo bench --bench proxy -- --only small  # one of small, 1m, ws, memory
//! cargo bench --bench proxy -- --no-nginx    # without the reference proxy
//! ```
//!
//! Starts an upstream (hyper: a small response, a 1 MiB response, a WebSocket echo), our
//! release binary, a bare byte relay (each connection copied to a connection to the upstream,
//! no HTTP at all: the floor for any proxy on this machine) and, when it is installed, nginx as
//! a reference reverse proxy to the same upstream. The upstream and the relay are this program
//! again, each in a process of its own, as a dev server is. Logs in once, then drives each side
//! with its own keep-alive load generator: small responses (32 connections), 1 MiB responses
//! (8), WebSocket echo round trips (32), direct, through our `/proxy/<port>/` (authenticated),
//! through the relay and through nginx, in rotating half-second slices. Prints requests per
//! second, the ratios to direct, and CPU time per request (each proxy's; the load generator and
//! upstream's together for direct); then our resident memory with 1,000 idle proxied
//! WebSockets open (`benches/scale.rs` holds 10,000, next to nginx).
//!
//! Everything shares the machine's cores, so only the ratios are comparable across machines.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::helper::Helper;
use support::nginx::{Capacity, Nginx};
use support::procs::{cpu_seconds, rss_kb};

const PASSWORD: &str = "bench";
const IDLE_SOCKETS: usize = 1000;

fn main() {
    support::helper::dispatch();
    let secs: u64 = support::arg("--secs", 5);
    let measure = Duration::from_secs(secs);
    // `--only small|1m|ws|memory` runs one part (handy under a profiler).
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let wanted = move |part: &str| only.as_deref().is_none_or(|o| o == part);
    let with_nginx = !std::env::args().any(|a| a == "--no-nginx");

    // The upstream is a process of its own, as a dev server is.
    let upstream = Helper::upstream();
    let up_port = upstream.port;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let home = testkit::Home::new();
        home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
        // The front gets a clean environment; TOKIO_WORKER_THREADS passes through for experiments.
        let threads = std::env::var("TOKIO_WORKER_THREADS").ok();
        let env: Vec<(&str, &str)> = threads.iter().map(|t| ("TOKIO_WORKER_THREADS", t.as_str())).collect();
        let server = testkit::Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &env);
        let front = server.authority();
        let cookie = server.client().login(PASSWORD).await;
        let prefix = format!("/proxy/{up_port}");
        // nginx, when installed, as the reference reverse proxy: the same upstream, the same
        // load, in the same run.
        let nginx = if with_nginx { Nginx::start(up_port, &prefix, Capacity::default()) } else { None };
        let relay = Helper::relay(up_port);
        println!("proxy benchmark: {secs} s per measurement, upstream on port {up_port}, front {front}");
        println!("bare relay (copies bytes, no HTTP) on port {}", relay.port);
        match &nginx {
            Some(n) => println!("nginx {} as the reference proxy on port {}", n.version, n.port),
            None if with_nginx => println!("nginx not found: no reference proxy (apt install nginx-light)"),
            None => {}
        }
        println!(
            "{:<24} {:>9} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6}   {:>7} {:>7} {:>7} {:>7}",
            "",
            "direct/s",
            "ours/s",
            "ratio",
            "relay/s",
            "ratio",
            "nginx/s",
            "ratio",
            "ours µs",
            "relay",
            "nginx",
            "direct"
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
            let mut sides = vec![
                Side {
                    addr: format!("127.0.0.1:{up_port}"),
                    path: path.to_string(),
                    cookie: None,
                    pids: vec![std::process::id(), upstream.child.id()],
                },
                Side { addr: front.clone(), path: format!("{prefix}{path}"), cookie: Some(cookie.clone()), pids: vec![pid] },
                // Transparent: the upstream's own paths, no session.
                Side {
                    addr: format!("127.0.0.1:{}", relay.port),
                    path: path.to_string(),
                    cookie: None,
                    pids: vec![relay.child.id()],
                },
            ];
            if let Some(n) = &nginx {
                sides.push(Side {
                    addr: format!("127.0.0.1:{}", n.port),
                    path: format!("{prefix}{path}"),
                    cookie: Some(cookie.clone()),
                    pids: n.workers(),
                });
            }
            let r = compare(kind, &sides, conns, measure).await;
            let (nginx_rate, nginx_ratio, nginx_cpu) = match r.get(3) {
                Some(n) => (format!("{:.0}", n.rate), format!("{:.2}", n.rate / r[0].rate), format!("{:.1}", n.cpu_us)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "{name:<24} {:>9.0} {:>9.0} {:>6.2} {:>9.0} {:>6.2} {nginx_rate:>9} {nginx_ratio:>6}   {:>7.1} {:>7.1} {nginx_cpu:>7} {:>7.1}",
                r[0].rate,
                r[1].rate,
                r[1].rate / r[0].rate,
                r[2].rate,
                r[2].rate / r[0].rate,
                r[1].cpu_us,
                r[2].cpu_us,
                r[0].cpu_us
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

/// What the workers are told to do: nothing, the side with this index, or stop; see [`compare`].
const IDLE: usize = usize::MAX;
const STOP: usize = usize::MAX - 1;

/// One side of a comparison: where its workers connect, what they ask for, and whose CPU time
/// it costs (the load generator and upstream's for the direct side; the proxy's otherwise).
struct Side {
    addr: String,
    path: String,
    cookie: Option<String>,
    pids: Vec<u32>,
}

/// What [`compare`] measured for one side: requests (or echo round trips) per second, and CPU
/// time (user + system) per request of the side's processes.
struct Measured {
    rate: f64,
    cpu_us: f64,
}

/// Drives `conns` keep-alive connections per side, one side at a time, in rotating half-second
/// slices (`measure` in total per side, after a warm-up), so a burst of other work on the
/// machine slows every side alike. Only requests that start and end within their side's slice
/// are counted.
async fn compare(kind: Kind, sides: &[Side], conns: usize, measure: Duration) -> Vec<Measured> {
    const SLICE: Duration = Duration::from_millis(500);
    let (phase, _) = tokio::sync::watch::channel(IDLE);
    let counts: Arc<Vec<AtomicU64>> = Arc::new(sides.iter().map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for (id, side) in sides.iter().enumerate() {
        for _ in 0..conns {
            let (addr, path, cookie) = (side.addr.clone(), side.path.clone(), side.cookie.clone());
            let (rx, counts) = (phase.subscribe(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let counter = &counts[id];
                match kind {
                    Kind::Http => http_worker(&addr, &path, cookie.as_deref(), id, rx, counter).await,
                    Kind::Ws => ws_worker(&addr, &path, cookie.as_deref(), id, rx, counter).await,
                }
            }));
        }
    }
    for id in 0..sides.len() {
        phase.send_replace(id);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (mut done, mut secs, mut cpu) = (vec![0u64; sides.len()], vec![0f64; sides.len()], vec![0f64; sides.len()]);
    let rounds = (measure.as_millis() / SLICE.as_millis()).max(1);
    for _ in 0..rounds {
        for (id, side) in sides.iter().enumerate() {
            let cpu_now = || side.pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
            let (n0, cpu0, t0) = (counts[id].load(Ordering::Relaxed), cpu_now(), Instant::now());
            phase.send_replace(id);
            tokio::time::sleep(SLICE).await;
            phase.send_replace(IDLE);
            done[id] += counts[id].load(Ordering::Relaxed) - n0;
            secs[id] += t0.elapsed().as_secs_f64();
            cpu[id] += cpu_now() - cpu0;
        }
    }
    phase.send_replace(STOP);
    for t in tasks {
        t.await.unwrap();
    }
    (0..sides.len())
        .map(|i| Measured { rate: done[i] as f64 / secs[i], cpu_us: cpu[i] * 1e6 / done[i].max(1) as f64 })
        .collect()
}

/// Waits until the phase is `side` (true) or the run is over (false).
async fn my_turn(rx: &mut tokio::sync::watch::Receiver<usize>, side: usize) -> bool {
    match rx.wait_for(|p| *p == side || *p == STOP).await {
        Ok(p) => *p == side,
        Err(_) => false,
    }
}

async fn http_worker(
    addr: &str,
    path: &str,
    cookie: Option<&str>,
    side: usize,
    mut phase: tokio::sync::watch::Receiver<usize>,
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
    side: usize,
    mut phase: tokio::sync::watch::Receiver<usize>,
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
