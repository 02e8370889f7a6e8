//! Soak: mixed traffic against the front for a long while, watching its memory and descriptors.
//!
//! ```sh
//! cargo bench --bench soak                   # 10 minutes of traffic
//! cargo bench --bench soak -- --minutes 1    # a quick check
//! ```
//!
//! Starts our release binary on the stand-in VS Code build the tests use (password login,
//! `--trusted-proxies 127.0.0.1`, the default rate limits) and an upstream dev server (this
//! program again, in a process of its own), then runs, all at once, at a steady pace rather
//! than flat out (the machine is shared):
//!
//! * proxied HTTP: four keep-alive connections through `/proxy/<port>/` (small GETs, a 4 KiB
//!   POST every tenth request, a 1 MiB response every fiftieth; a fresh connection every 500
//!   requests) and one that opens a new connection for every request;
//! * proxied WebSockets: two loops that open one, echo five messages (64 B to 64 KiB) and
//!   close it (one in ten is dropped without the closing handshake);
//! * workbench loads: `GET /` (the redirect to the folder opened last), the page itself, the
//!   static files it references (VS Code's, from the build; our manifest, icon and service
//!   worker) and VS Code's WebSocket (opened, echoed, closed);
//! * logins: one a second with the password (the new session then proxies a request and logs
//!   out, after which it must be refused), and a wrong password every fifteen seconds from an
//!   address of its own, which stays well under the login limiter's per-client and
//!   process-wide buckets.
//!
//! After a warm-up (the first minute, a quarter of a shorter run) the load pauses for two
//! seconds at regular quiet points (every 30 s; a twelfth of a shorter run, 10 s at least) so
//! every connection has closed, and the front's resident memory (VmRSS) and open descriptors are
//! read there (given up to 5 s more when there are more descriptors than at the first quiet
//! point: a request slowed by other work on the machine may still be finishing); every 5 s under
//! load as well, for the range, and the RSS trend over the quiet points (least squares). Prints the requests done by kind, the
//! errors, and PASS/FAIL against "RSS growth from the first quiet point to the last < 5 %",
//! "no descriptor growth between them" (not counting idle pooled connections to the upstream:
//! the pool keeps them per session and closes them after 30 s unused, so each login round's
//! session leaves one for half a minute; they must stay under the pool's cap), and "errors at
//! most 0.01 % of the operations"; exits non-zero on any FAIL.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use hyper::http::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use support::helper::{Helper, MIB, SMALL};
use support::procs::{Fds, fds, rss_kb};
use support::ws;

const PASSWORD: &str = "bench";
/// How long the load pauses before a quiet-point reading.
const QUIET: Duration = Duration::from_secs(2);
/// How much longer a quiet point waits for descriptors above the first quiet point's to close.
const SETTLE: Duration = Duration::from_secs(5);
/// Readings under load, between quiet points.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The RSS growth allowed from the first quiet point after the warm-up to the last.
const MAX_GROWTH_PCT: f64 = 5.0;
/// Errors allowed, per operation.
const ERROR_TOLERANCE: f64 = 1e-4;
/// The pool's cap on idle upstream connections in all (`POOL_MAX_IDLE` in `src/proxy/pool.rs`;
/// 64 per port and session).
const POOL_CAP: usize = 1024;

fn main() {
    support::helper::dispatch();
    let minutes: f64 = support::arg("--minutes", 10.0);
    assert!(minutes > 0.0, "--minutes must be more than 0");
    let upstream = Helper::upstream();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ok = rt.block_on(run(Duration::from_secs_f64(minutes * 60.0), upstream.port));
    drop(upstream);
    if !ok {
        std::process::exit(1);
    }
}

/// The kinds of traffic, for the counters.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    Ws,
    Workbench,
    Login,
}

const KINDS: [(Kind, &str); 4] = [
    (Kind::Http, "proxied HTTP requests"),
    (Kind::Ws, "proxied WebSockets (opened, echoed 5 times, closed)"),
    (Kind::Workbench, "workbench loads (7 requests each, one a WebSocket)"),
    (Kind::Login, "login rounds (login, proxied request, logout, refused)"),
];

/// What the workers did, by [`Kind`].
#[derive(Default)]
struct Counters {
    done: [AtomicU64; 4],
    errors: [AtomicU64; 4],
    /// Wrong passwords tried (each answered with the login page and no session).
    wrong: AtomicU64,
    /// The first errors, as text.
    first_errors: Mutex<Vec<String>>,
}

impl Counters {
    fn done(&self, kind: Kind) {
        self.done[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, kind: Kind, what: String) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(what);
        }
    }

    fn total(&self, of: &[AtomicU64; 4]) -> u64 {
        of.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What the workers are told: go on, pause (closing their connections), or stop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    Pause,
    Stop,
}

/// Everything a worker needs.
#[derive(Clone)]
struct Ctx {
    front: String,
    up_port: u16,
    cookie: String,
    project: String,
    phase: watch::Receiver<Phase>,
    counters: Arc<Counters>,
}

impl Ctx {
    /// Waits out a pause; false once the run is over. `on_pause` runs first when there is one
    /// (closing the worker's connections).
    async fn go_on(&mut self, on_pause: impl FnOnce()) -> bool {
        match *self.phase.borrow_and_update() {
            Phase::Run => return true,
            Phase::Stop => return false,
            Phase::Pause => {}
        }
        on_pause();
        match self.phase.wait_for(|p| *p != Phase::Pause).await {
            Ok(p) => *p == Phase::Run,
            Err(_) => false,
        }
    }

    fn proxied(&self, path: &str) -> String {
        format!("/proxy/{}{path}", self.up_port)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.front)
    }
}

/// One reading of the front.
#[derive(Clone, Copy)]
struct Reading {
    at: Duration,
    rss_kb: u64,
    fds: Fds,
}

impl Reading {
    /// Descriptors beside the pool's idle connections to the upstream.
    fn own_fds(&self) -> usize {
        self.fds.total - self.fds.to_port
    }
}

async fn run(total: Duration, up_port: u16) -> bool {
    let home = testkit::Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let project = home.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let server = testkit::Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--trusted-proxies", "127.0.0.1"], &[]);
    let front = server.authority();
    let pid = server.child.id();
    let cookie = server.client().login(PASSWORD).await;
    let project = project.display().to_string();
    // VS Code (the stand-in) starts on the first page; before the clock does.
    let started = server.client().get_with(&format!("/?folder={project}"), &[("cookie", &cookie)]).await;
    assert_eq!(started.status, StatusCode::OK, "the first workbench page: {}", started.text());

    let warmup = (total / 4).min(Duration::from_secs(60));
    let every = (total / 12).clamp(Duration::from_secs(10), Duration::from_secs(30));
    println!(
        "soak: {:.1} min of mixed traffic through the front (pid {pid}, {front}, stand-in VS Code), upstream on port {up_port}",
        total.as_secs_f64() / 60.0
    );
    println!(
        "warm-up {} s; then a quiet point every {} s (load paused {} s), readings under load every {} s",
        warmup.as_secs(),
        every.as_secs(),
        QUIET.as_secs(),
        SAMPLE_EVERY.as_secs()
    );

    let (phase_tx, phase) = watch::channel(Phase::Run);
    let counters = Arc::new(Counters::default());
    let ctx = Ctx { front, up_port, cookie, project, phase, counters: counters.clone() };
    let mut workers = vec![];
    for _ in 0..4 {
        workers.push(tokio::spawn(http_worker(ctx.clone())));
    }
    workers.push(tokio::spawn(churn_worker(ctx.clone())));
    for i in 0..2 {
        workers.push(tokio::spawn(ws_worker(ctx.clone(), i)));
    }
    workers.push(tokio::spawn(workbench_worker(ctx.clone())));
    workers.push(tokio::spawn(login_worker(ctx.clone())));

    let read = |at: Duration| Reading { at, rss_kb: rss_kb(pid), fds: fds(pid, up_port) };
    let mut quiet: Vec<Reading> = vec![];
    let mut loaded: Vec<Reading> = vec![];
    let mut load_time = Duration::ZERO;
    let wall = Instant::now();
    while load_time < total {
        let segment = if quiet.is_empty() { warmup } else { every.min(total - load_time) };
        let end = Instant::now() + segment;
        // Readings under load count after the warm-up only.
        while Instant::now() < end {
            tokio::time::sleep(SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
            if !quiet.is_empty() && Instant::now() < end {
                loaded.push(read(load_time + segment - end.saturating_duration_since(Instant::now())));
            }
        }
        load_time += segment;
        phase_tx.send_replace(Phase::Pause);
        tokio::time::sleep(QUIET).await;
        let mut r = read(load_time);
        // A straggler (a request slowed by the machine's other work) may still hold its
        // connection: more descriptors than at the first quiet point get a few seconds more to
        // go. A leak does not.
        let settle = Instant::now();
        while quiet.first().is_some_and(|f| r.own_fds() > f.own_fds()) && settle.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(250)).await;
            r = read(load_time);
        }
        let waited = settle.elapsed();
        quiet.push(r);
        println!(
            "[{:>5} s] quiet: RSS {:>6.1} MB, fds {:>3}{} (+{} pooled to the upstream); done: {} HTTP, {} WS, {} loads, {} logins; errors {}",
            r.at.as_secs(),
            r.rss_kb as f64 / 1024.0,
            r.own_fds(),
            if waited > Duration::from_millis(100) {
                format!(" after {:.1} s more", waited.as_secs_f64())
            } else {
                String::new()
            },
            r.fds.to_port,
            counters.done[Kind::Http as usize].load(Ordering::Relaxed),
            counters.done[Kind::Ws as usize].load(Ordering::Relaxed),
            counters.done[Kind::Workbench as usize].load(Ordering::Relaxed),
            counters.done[Kind::Login as usize].load(Ordering::Relaxed),
            counters.total(&counters.errors),
        );
        phase_tx.send_replace(if load_time < total { Phase::Run } else { Phase::Stop });
    }
    phase_tx.send_replace(Phase::Stop);
    for w in workers {
        w.await.unwrap();
    }
    let took = wall.elapsed();

    println!();
    println!(
        "done by kind over {:.1} min of load ({:.1} min in all, pauses included):",
        total.as_secs_f64() / 60.0,
        took.as_secs_f64() / 60.0
    );
    for (kind, name) in KINDS {
        println!(
            "  {name:<58} {:>9}   errors {}",
            counters.done[kind as usize].load(Ordering::Relaxed),
            counters.errors[kind as usize].load(Ordering::Relaxed)
        );
    }
    println!("  (wrong passwords tried: {}, each refused without a session)", counters.wrong.load(Ordering::Relaxed));
    for e in counters.first_errors.lock().unwrap().iter() {
        println!("  error: {e}");
    }

    let (first, last) = (quiet[0], *quiet.last().unwrap());
    let growth = (last.rss_kb as f64 - first.rss_kb as f64) * 100.0 / first.rss_kb as f64;
    let (lo, hi) = loaded.iter().fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r.rss_kb), hi.max(r.rss_kb)));
    let (fd_lo, fd_hi) = loaded.iter().fold((usize::MAX, 0), |(lo, hi), r| (lo.min(r.fds.total), hi.max(r.fds.total)));
    let quiet_hi = quiet.iter().map(|r| r.rss_kb).max().unwrap();
    let pooled_hi = quiet.iter().map(|r| r.fds.to_port).max().unwrap();
    let rss_ok = growth < MAX_GROWTH_PCT;
    let fd_ok = last.own_fds() <= first.own_fds() && pooled_hi <= POOL_CAP;
    let ops = counters.total(&counters.done);
    let errors = counters.total(&counters.errors);
    let allowed = (ops as f64 * ERROR_TOLERANCE).floor() as u64;
    let errors_ok = errors <= allowed;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!();
    println!(
        "RSS    after warm-up {:.1} MB, at end {:.1} MB: growth {growth:+.2} % (highest quiet point {:.1} MB; under load {:.1}-{:.1} MB)   {} (< {MAX_GROWTH_PCT} %)",
        first.rss_kb as f64 / 1024.0,
        last.rss_kb as f64 / 1024.0,
        quiet_hi as f64 / 1024.0,
        lo as f64 / 1024.0,
        hi as f64 / 1024.0,
        verdict(rss_ok)
    );
    println!(
        "fds    after warm-up {}, at end {} (quiet points; idle pooled upstream connections beside them: {} and {}, at most {pooled_hi}, cap {POOL_CAP}; under load {fd_lo}-{fd_hi} in all)   {} (no growth)",
        first.own_fds(),
        last.own_fds(),
        first.fds.to_port,
        last.fds.to_port,
        verdict(fd_ok)
    );
    println!("errors {errors} of {ops} operations (tolerance {allowed}: 0.01 %)   {}", verdict(errors_ok));
    println!("RSS trend over the quiet points (least squares): {:+.2} MB an hour", trend_mb_per_hour(&quiet));
    println!(
        "quiet points (s: RSS MB / fds): {}",
        quiet
            .iter()
            .map(|r| format!("{}: {:.1}/{}", r.at.as_secs(), r.rss_kb as f64 / 1024.0, r.own_fds()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(server);
    rss_ok && fd_ok && errors_ok
}

/// The slope of RSS over time through the readings, in MB an hour: a leak shows as a steady
/// climb where the first and last readings alone may sit on the noise.
fn trend_mb_per_hour(readings: &[Reading]) -> f64 {
    let n = readings.len() as f64;
    let xs: Vec<f64> = readings.iter().map(|r| r.at.as_secs_f64() / 3600.0).collect();
    let ys: Vec<f64> = readings.iter().map(|r| r.rss_kb as f64 / 1024.0).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: &str) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// An answer: its status, headers, body length and the body's first 64 KiB.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    len: usize,
    text: Vec<u8>,
}

async fn request(
    sender: &mut Sender,
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Answer, String> {
    let mut req = Request::builder().method(method).uri(path).header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body)).unwrap();
    sender.ready().await.map_err(|e| format!("{method} {path}: {e}"))?;
    let res = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| format!("{method} {path}: no answer in 30 s"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (parts, mut body) = res.into_parts();
    let (mut len, mut text) = (0, vec![]);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{method} {path}: body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            len += data.len();
            if text.len() < 64 * 1024 {
                text.extend_from_slice(&data[..data.len().min(64 * 1024 - text.len())]);
            }
        }
    }
    Ok(Answer { status: parts.status, headers: parts.headers, len, text })
}

/// `Ok` when the answer has `status` (and, given, that body length).
fn expect(a: &Answer, what: &str, status: StatusCode, len: Option<usize>) -> Result<(), String> {
    if a.status != status || len.is_some_and(|l| l != a.len) {
        return Err(format!(
            "{what}: {} with {} bytes, expected {status}{}",
            a.status,
            a.len,
            match len {
                Some(l) => format!(" with {l}"),
                None => String::new(),
            }
        ));
    }
    Ok(())
}

/// The `name=value` of our session cookie in `Set-Cookie`, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all("set-cookie").iter().find_map(|v| {
        let first = v.to_str().ok()?.split(';').next()?.to_string();
        (first.starts_with("code-server-session") && !first.ends_with('=')).then_some(first)
    })
}

/// Proxied HTTP on a keep-alive connection: small GETs, a 4 KiB POST every tenth, 1 MiB
/// every fiftieth, a new connection every 500 requests.
async fn http_worker(mut ctx: Ctx) {
    let mut sender: Option<Sender> = None;
    let post = Bytes::from(vec![b'p'; 4096]);
    let mut n = 0u64;
    while ctx.go_on(|| sender = None).await {
        n += 1;
        if n.is_multiple_of(500) {
            sender = None;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(&ctx.front).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    ctx.counters.error(Kind::Http, e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let cookie = [("cookie", ctx.cookie.as_str())];
        let result = if n.is_multiple_of(50) {
            request(s, "GET", &ctx.front, &ctx.proxied("/1m"), &cookie, Bytes::new())
                .await
                .and_then(|a| expect(&a, "GET /1m", StatusCode::OK, Some(MIB)))
        } else if n % 10 == 5 {
            request(s, "POST", &ctx.front, &ctx.proxied("/small"), &cookie, post.clone())
                .await
                .and_then(|a| expect(&a, "POST /small", StatusCode::OK, Some(SMALL.len())))
        } else {
            request(s, "GET", &ctx.front, &ctx.proxied("/small"), &cookie, Bytes::new())
                .await
                .and_then(|a| expect(&a, "GET /small", StatusCode::OK, Some(SMALL.len())))
        };
        match result {
            Ok(()) => ctx.counters.done(Kind::Http),
            Err(e) => {
                ctx.counters.error(Kind::Http, e);
                sender = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Proxied HTTP with a new connection for every request.
async fn churn_worker(mut ctx: Ctx) {
    while ctx.go_on(|| ()).await {
        let result = async {
            let mut s = connect(&ctx.front).await?;
            let a =
                request(&mut s, "GET", &ctx.front, &ctx.proxied("/small"), &[("cookie", &ctx.cookie)], Bytes::new())
                    .await?;
            expect(&a, "GET /small (new connection)", StatusCode::OK, Some(SMALL.len()))
        }
        .await;
        match result {
            Ok(()) => ctx.counters.done(Kind::Http),
            Err(e) => ctx.counters.error(Kind::Http, e),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Proxied WebSockets: open, five echoes (64 B to 64 KiB), close; one in ten dropped without
/// the closing handshake.
async fn ws_worker(mut ctx: Ctx, id: u64) {
    let sizes = [64, 1024, 16 * 1024, 64 * 1024, 64];
    let mut n = id;
    while ctx.go_on(|| ()).await {
        n += 1;
        let result = tokio::time::timeout(Duration::from_secs(30), async {
            let origin = ctx.origin();
            let headers = [("Cookie", ctx.cookie.as_str()), ("Origin", origin.as_str())];
            let mut s = ws::open(&ctx.front, &ctx.proxied("/ws"), &headers).await?;
            for (i, size) in sizes.iter().enumerate() {
                let payload: Vec<u8> = (0..*size).map(|b| (b + i) as u8).collect();
                ws::echo(&mut s, &payload).await?;
            }
            if !n.is_multiple_of(10) { ws::close(s).await } else { Ok(()) }
        })
        .await;
        match result {
            Ok(Ok(())) => ctx.counters.done(Kind::Ws),
            Ok(Err(e)) => ctx.counters.error(Kind::Ws, format!("proxied WebSocket: {e}")),
            Err(_) => ctx.counters.error(Kind::Ws, "proxied WebSocket: stuck for 30 s".to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A workbench load every 250 ms, on one keep-alive connection as a browser would: the bare
/// `/` (redirected to the folder opened last), the page, the static files it references, and
/// VS Code's WebSocket.
async fn workbench_worker(mut ctx: Ctx) {
    let commit = testkit::FAKE_COMMIT;
    let mut n = 0u64;
    while ctx.go_on(|| ()).await {
        n += 1;
        let result = async {
            let mut s = connect(&ctx.front).await?;
            let (front, cookie) = (ctx.front.clone(), ctx.cookie.clone());
            let h = [("cookie", cookie.as_str()), ("accept-encoding", "br, gzip")];
            let a = request(&mut s, "GET", &front, "/", &h, Bytes::new()).await?;
            expect(&a, "GET /", StatusCode::FOUND, None)?;
            let page = format!("/?folder={}", ctx.project);
            let a = request(&mut s, "GET", &front, &page, &h, Bytes::new()).await?;
            expect(&a, "GET /?folder=", StatusCode::OK, None)?;
            for asset in [
                format!("/stable-{commit}/static/out/vs/static-probe.js"),
                "/manifest.json".to_string(),
                "/_static/src/browser/media/favicon-dark-support.svg".to_string(),
                "/_static/out/browser/serviceWorker.js".to_string(),
            ] {
                let a = request(&mut s, "GET", &front, &asset, &h, Bytes::new()).await?;
                expect(&a, &asset, StatusCode::OK, None)?;
                if a.len == 0 {
                    return Err(format!("{asset}: empty"));
                }
            }
            // The stand-in echoes the upgraded bytes as they are: our own frames come back.
            let socket =
                format!("/stable-{commit}?reconnectionToken=soak-{n}&reconnection=false&skipWebSocketFrames=false");
            let origin = ctx.origin();
            let mut w = ws::open(&front, &socket, &[("Cookie", cookie.as_str()), ("Origin", origin.as_str())])
                .await
                .map_err(|e| format!("VS Code's WebSocket: {e}"))?;
            ws::echo(&mut w, b"{\"type\":\"auth\"}").await.map_err(|e| format!("VS Code's WebSocket: {e}"))?;
            ws::close(w).await.map_err(|e| format!("VS Code's WebSocket: closing: {e}"))
        };
        match tokio::time::timeout(Duration::from_secs(30), result).await {
            Ok(Ok(())) => ctx.counters.done(Kind::Workbench),
            Ok(Err(e)) => ctx.counters.error(Kind::Workbench, e),
            Err(_) => ctx.counters.error(Kind::Workbench, "workbench load: stuck for 30 s".to_string()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A login round every second (log in, use the session on the proxy, log out, be refused), and
/// a wrong password every fifteenth round, each from an address of its own (the front believes
/// 127.0.0.1's `X-Forwarded-For`): the limiter allows 2 a minute per address and 10 a minute
/// (100 an hour) in all.
async fn login_worker(mut ctx: Ctx) {
    let mut n = 0u64;
    while ctx.go_on(|| ()).await {
        n += 1;
        let front = ctx.front.clone();
        let form = [("content-type", "application/x-www-form-urlencoded")];
        if n.is_multiple_of(15) {
            let address = format!("10.77.{}.{}", (n / 15) / 250, (n / 15) % 250 + 1);
            let result = async {
                let mut s = connect(&front).await?;
                let h = [form[0], ("x-forwarded-for", address.as_str())];
                let a = request(&mut s, "POST", &front, "/login", &h, Bytes::from_static(b"password=wrong")).await?;
                let text = String::from_utf8_lossy(&a.text).to_lowercase();
                if a.status != StatusCode::OK || session_cookie(&a.headers).is_some() || text.contains("rate limited") {
                    return Err(format!(
                        "wrong password: {} {}",
                        a.status,
                        if text.contains("rate limited") { "(rate limited)" } else { "" }
                    ));
                }
                Ok(())
            };
            match result.await {
                Ok(()) => {
                    ctx.counters.wrong.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => ctx.counters.error(Kind::Login, e),
            }
        }
        let result = async {
            let mut s = connect(&front).await?;
            let body = Bytes::from(format!("password={PASSWORD}"));
            let a = request(&mut s, "POST", &front, "/login", &form, body).await?;
            expect(&a, "login", StatusCode::FOUND, None)?;
            let cookie = session_cookie(&a.headers).ok_or("login: no session cookie")?;
            let c = [("cookie", cookie.as_str())];
            let a = request(&mut s, "GET", &front, &ctx.proxied("/small"), &c, Bytes::new()).await?;
            expect(&a, "GET /small with the new session", StatusCode::OK, Some(SMALL.len()))?;
            let h = [c[0], ("sec-fetch-site", "same-origin")];
            let a = request(&mut s, "GET", &front, "/logout", &h, Bytes::new()).await?;
            expect(&a, "logout", StatusCode::FOUND, None)?;
            let a = request(&mut s, "GET", &front, &ctx.proxied("/small"), &c, Bytes::new()).await?;
            if a.status == StatusCode::OK {
                return Err("a logged-out session still proxies".to_string());
            }
            Ok::<_, String>(())
        };
        match result.await {
            Ok(()) => ctx.counters.done(Kind::Login),
            Err(e) => ctx.counters.error(Kind::Login, e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
