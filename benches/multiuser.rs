//! Multi-user mode's costs, each against a baseline measured in the same run:
//!
//! ```sh
//! cargo bench --bench multiuser               # 5 s per side
//! cargo bench --bench multiuser -- --secs 10
//! ```
//!
//! 1. Proxied small requests (`/proxy/<port>/`, 32 keep-alive connections) through a
//!    multi-user front whose sessions are in Redis (a `redis-server` this program starts),
//!    against the same load through a single-user front, in rotating half-second slices:
//!    requests per second and the ratio (target ≥ 0.9).
//! 2. 50 logins at once (50 accounts, Argon2id each) while `/healthz` is asked every 5 ms on a
//!    connection of its own: its latency percentiles during the logins, next to the same
//!    measurement with nothing else going on (target p99 < 50 ms).
//! 3. Requests to a user's VS Code (the stand-in build) through a second front of the same
//!    deployment, which forwards them to the workspace the first front runs, against the same
//!    load through the first front: requests per second and the ratio (both fronts with
//!    `--rate-limit off`, which would cap them).
//!
//! Everything shares the machine's cores, so only the ratios are comparable across machines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CONNS: usize = 32;
const LOGINS: usize = 50;
const ADMIN_PASSWORD: &str = "bench-admin-password";

fn main() {
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .map(|s| s.parse().expect("--secs takes a number"))
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(Duration::from_secs(secs)));
}

async fn run(measure: Duration) {
    let upstream = testkit::upstream::Upstream::start().await;
    let redis = testkit::PrivateRedis::start().await;

    let single_home = testkit::Home::new();
    single_home.write_config("auth: password\npassword: bench\n");
    let single = testkit::Server::start(&single_home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let single_cookie = single.client().login("bench").await;

    // Two fronts of one deployment: users in one SQLite file, sessions in Redis, one base path.
    let multi_home = testkit::Home::new();
    let base = multi_home.path().join("users");
    let deployment = format!(
        "deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n    base-path: {}\n  auth:\n    database:\n      type: sqlite\n      path: {}\n",
        base.display(),
        multi_home.path().join("users.db").display()
    );
    multi_home.write_config(&deployment);
    let redis_url = redis.url();
    let multi = testkit::Server::start(
        &multi_home,
        // The per-user rate limit would cap what part 3 measures; the proxy has none anyway.
        &["--bind-addr", "127.0.0.1:0", "--trusted-proxies", "127.0.0.1", "--rate-limit", "off"],
        &[
            ("CODE_SERVER_SESSION_STORE", "redis"),
            ("CODE_SERVER_REDIS_URL", redis_url.as_str()),
            ("ADMIN_USERNAME", "boss"),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    );
    let multi_cookie = sign_in(&multi.client(), "boss", ADMIN_PASSWORD, "10.0.1.1").await;
    println!("multi-user benchmark: {} s per side; sessions in Redis at {redis_url}", measure.as_secs());

    // 1. Proxied small requests, single-user vs multi-user with Redis sessions.
    let path = format!("/proxy/{}/small", upstream.port);
    let sides = [(single.authority(), single_cookie), (multi.authority(), multi_cookie.clone())];
    let rates = compare(&sides, &path, measure).await;
    println!("{:<44} {:>10} {:>10} {:>6}", "", "single/s", "multi/s", "ratio");
    println!(
        "{:<44} {:>10.0} {:>10.0} {:>6.2}   (target >= 0.90)",
        "proxied small requests, c=32, Redis sessions",
        rates[0],
        rates[1],
        rates[1] / rates[0]
    );

    // 2. 50 concurrent logins while /healthz is watched.
    let client = multi.client();
    let origin = format!("http://{}", multi.authority());
    for i in 0..LOGINS {
        let body = format!(r#"{{"username":"user{i}","password":"password-of-user{i}"}}"#);
        let res = client
            .send(
                "POST",
                "/api/users",
                &[("cookie", &multi_cookie), ("origin", &origin), ("content-type", "application/json")],
                Body::from(body),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    }
    let addr = multi.authority();
    let quiet = watch_healthz(&addr, async { tokio::time::sleep(Duration::from_secs(3)).await }).await;
    let started = Instant::now();
    let logins = async {
        let mut tasks = vec![];
        for i in 0..LOGINS {
            let client = multi.client();
            tasks.push(tokio::spawn(async move {
                sign_in(&client, &format!("user{i}"), &format!("password-of-user{i}"), &format!("10.0.0.{i}")).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    };
    let busy = watch_healthz(&addr, logins).await;
    let took = started.elapsed();
    println!(
        "/healthz latency, idle:             p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({} samples)",
        quiet.p(50.0),
        quiet.p(99.0),
        quiet.max(),
        quiet.0.len()
    );
    println!(
        "/healthz latency, {LOGINS} logins at once: p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({} samples; the logins took {} ms)",
        busy.p(50.0),
        busy.p(99.0),
        busy.max(),
        busy.0.len(),
        took.as_millis()
    );
    println!("  (target: p99 < 50 ms during the logins)");

    // 3. A user's VS Code through the front that runs it, and forwarded by another front.
    let other_home = testkit::Home::new();
    other_home.write_config(&deployment);
    let other = testkit::Server::start(
        &other_home,
        &["--bind-addr", "127.0.0.1:0", "--rate-limit", "off"],
        &[("CODE_SERVER_SESSION_STORE", "redis"), ("CODE_SERVER_REDIS_URL", redis_url.as_str())],
    );
    let started = multi.client().get_with("/version", &[("cookie", &multi_cookie)]).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    let forwarded = other.client().get_with("/version", &[("cookie", &multi_cookie)]).await;
    assert_eq!(forwarded.status, StatusCode::OK, "{}", forwarded.text());
    assert!(!other.stdout_text().contains("Starting VS Code"), "the second front forwards, it does not start");
    let sides = [(multi.authority(), multi_cookie.clone()), (other.authority(), multi_cookie.clone())];
    let rates = compare(&sides, "/version", measure).await;
    println!("{:<44} {:>10} {:>10} {:>6}", "", "runs it/s", "other/s", "ratio");
    println!(
        "{:<44} {:>10.0} {:>10.0} {:>6.2}",
        "a user's VS Code, c=32, through either front",
        rates[0],
        rates[1],
        rates[1] / rates[0]
    );
}

/// Signs in from `address` (the front believes 127.0.0.1's X-Forwarded-For): a team's logins
/// come from many addresses, and one address gets only a couple a minute.
async fn sign_in(client: &testkit::Client, username: &str, password: &str, address: &str) -> String {
    let form = format!("username={username}&password={password}");
    let res = client.post_form("/login", &form, &[("x-forwarded-for", address)]).await;
    res.session_cookie().unwrap_or_else(|| panic!("{username} signs in: {} {}", res.status, res.text()))
}

/// Requests per second on each side, driven in turns of half a second for `measure` each.
async fn compare(sides: &[(String, String)], path: &str, measure: Duration) -> Vec<f64> {
    let (tx, rx) = tokio::sync::watch::channel(usize::MAX);
    let counts: Vec<Arc<AtomicU64>> = sides.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut workers = vec![];
    for (i, (addr, cookie)) in sides.iter().enumerate() {
        for _ in 0..CONNS {
            let (addr, cookie, path, rx, count) =
                (addr.clone(), cookie.clone(), path.to_string(), rx.clone(), counts[i].clone());
            workers.push(tokio::spawn(async move { worker(&addr, &cookie, &path, i, rx, &count).await }));
        }
    }
    // A warm-up slice each, not counted.
    for i in 0..sides.len() {
        tx.send(i).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for c in &counts {
        c.store(0, Ordering::SeqCst);
    }
    let slice = Duration::from_millis(500);
    let rounds = (measure.as_millis() / slice.as_millis()).max(1) as u32;
    let mut spent = vec![Duration::ZERO; sides.len()];
    for _ in 0..rounds {
        for (i, s) in spent.iter_mut().enumerate() {
            tx.send(i).unwrap();
            let t = Instant::now();
            tokio::time::sleep(slice).await;
            *s += t.elapsed();
        }
    }
    tx.send(usize::MAX - 1).unwrap();
    drop(tx);
    for w in workers {
        let _ = w.await;
    }
    counts.iter().zip(&spent).map(|(c, s)| c.load(Ordering::SeqCst) as f64 / s.as_secs_f64()).collect()
}

async fn worker(
    addr: &str,
    cookie: &str,
    path: &str,
    side: usize,
    mut phase: tokio::sync::watch::Receiver<usize>,
    done: &AtomicU64,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    loop {
        match phase.wait_for(|p| *p == side || *p == usize::MAX - 1).await {
            Ok(p) if *p == side => {}
            _ => return,
        }
        let req = Request::get(path).header("host", addr).header("cookie", cookie).body(Body::empty()).unwrap();
        sender.ready().await.unwrap();
        let res = sender.send_request(req).await.unwrap();
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

/// Latencies in milliseconds.
struct Samples(Vec<f64>);

impl Samples {
    fn p(&self, pct: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, v.len()) - 1]
    }

    fn max(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

/// Asks `/healthz` every 5 ms on one keep-alive connection until `during` ends.
async fn watch_healthz(addr: &str, during: impl std::future::Future<Output = ()>) -> Samples {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut samples = vec![];
    tokio::pin!(during);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tokio::select! {
            _ = &mut during => break,
            _ = tick.tick() => {
                let t = Instant::now();
                let req = Request::get("/healthz").header("host", addr).body(Body::empty()).unwrap();
                sender.ready().await.unwrap();
                let res = sender.send_request(req).await.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                res.into_body().collect().await.unwrap();
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    Samples(samples)
}
