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
//! WebSockets open.
//!
//! Everything shares the machine's cores, so only the ratios are comparable across machines.

// Unsafe code here only signals the nginx it started.
#![allow(unsafe_code)]

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
    let mut role = std::env::args().skip_while(|a| a != ROLE).skip(1);
    match role.next().as_deref() {
        Some("upstream") => return run_upstream(),
        Some("relay") => return run_relay(role.next().and_then(|p| p.parse().ok()).expect("the upstream's port")),
        _ => {}
    }
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .map(|s| s.parse().expect("--secs takes a number"))
        .unwrap_or(5);
    let measure = Duration::from_secs(secs);
    // `--only small|1m|ws|memory` runs one part (handy under a profiler).
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let wanted = move |part: &str| only.as_deref().is_none_or(|o| o == part);
    let with_nginx = !std::env::args().any(|a| a == "--no-nginx");

    // The upstream is a process of its own, as a dev server is.
    let upstream = Helper::start(&["upstream"]);
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
        let nginx = if with_nginx { Nginx::start(up_port, &prefix) } else { None };
        let relay = Helper::start(&["relay", &up_port.to_string()]);
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

/// Runs this program again in another role: `--role upstream`, or `--role relay <upstream port>`.
const ROLE: &str = "--role";

/// This program in another role, in its own process: it prints its port and serves until it is
/// killed.
struct Helper {
    child: std::process::Child,
    port: u16,
}

impl Helper {
    fn start(role: &[&str]) -> Helper {
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

/// nginx as a reverse proxy in front of the benchmark's upstream, at the same path as ours,
/// with the settings a reverse proxy for a dev server needs: upstream keep-alive, HTTP/1.1,
/// WebSocket upgrades, no buffering. One worker per core, as nginx's `auto` gives.
struct Nginx {
    master: std::process::Child,
    port: u16,
    version: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(up_port: u16, prefix: &str) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let version = std::process::Command::new(bin).arg("-v").output().ok()?;
        let version = String::from_utf8_lossy(&version.stderr).trim().rsplit('/').next().unwrap_or("").to_string();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000000;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; keepalive_requests 100000000; }}\n\
               map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n\
                 location {prefix}/ {{\n      proxy_pass http://up/;\n      proxy_http_version 1.1;\n\
                   proxy_set_header Host $host;\n      proxy_set_header Upgrade $http_upgrade;\n\
                   proxy_set_header Connection $connection_upgrade;\n      proxy_buffering off;\n\
                   proxy_read_timeout 1h;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let master = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut nginx = Nginx { master, port, version, _dir: dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && !nginx.workers().is_empty() {
                return Some(nginx);
            }
            if nginx.master.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// The worker processes (the master only supervises them).
    fn workers(&self) -> Vec<u32> {
        let pid = self.master.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master takes its workers down with it.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.master.id() as i32, libc::SIGTERM) };
        let _ = self.master.wait();
    }
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

/// The upstream: `…/small`, `…/1m`, and a WebSocket echo on any path; a runtime with a worker
/// per core.
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
