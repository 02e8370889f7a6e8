//! Lifecycle against the real binary: the update check (fresh, cached, forced, failing, shared,
//! through a proxy), `coder.json`, the heartbeat file, and graceful shutdown with a slow request
//! in flight and a WebSocket open. The idle timeout's timing is covered at library level
//! (`lifecycle::tests`, on tokio's paused clock) since its smallest legal value is 61 s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use hyper::http::StatusCode;
use serde_json::{Value, json};
use testkit::*;

/// A local stand-in for the releases feed: counts requests, answers what it is told, and can
/// hold answers back until the test opens its gate.
#[derive(Clone)]
struct Releases {
    addr: SocketAddr,
    shared: Arc<ReleasesState>,
}

struct ReleasesState {
    hits: AtomicUsize,
    answer: Mutex<(AxumStatus, Value)>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl Releases {
    async fn start(release: Value) -> Releases {
        let shared = Arc::new(ReleasesState {
            hits: AtomicUsize::new(0),
            answer: Mutex::new((AxumStatus::OK, release)),
            gate: tokio::sync::watch::channel(true).0,
        });
        let app = axum::Router::new().fallback(releases_handler).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Releases { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}/repos/us/code-server/releases/latest", self.addr)
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn answer(&self, status: u16, body: Value) {
        *self.shared.answer.lock().unwrap() = (AxumStatus::from_u16(status).unwrap(), body);
    }

    /// While closed, requests are counted but not answered.
    fn set_gate(&self, open: bool) {
        self.shared.gate.send_replace(open);
    }
}

async fn releases_handler(State(shared): State<Arc<ReleasesState>>, req: Request) -> Response {
    assert_eq!(req.uri().path(), "/repos/us/code-server/releases/latest");
    assert!(req.headers()["user-agent"].to_str().unwrap().starts_with("code-server/"));
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let mut gate = shared.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let (status, body) = shared.answer.lock().unwrap().clone();
    (status, axum::Json(body)).into_response()
}

/// A tiny forward proxy for plain HTTP: records each absolute-form request target, then
/// relays the request to that target's authority.
#[derive(Clone)]
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, std::convert::Infallible>(relay(req, log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn relay(req: hyper::Request<hyper::body::Incoming>, log: Arc<Mutex<Vec<String>>>) -> Response {
    if req.method() == hyper::Method::CONNECT {
        // An HTTPS tunnel request: recorded, and refused (the test needs no TLS upstream).
        log.lock().unwrap().push(format!("CONNECT {}", req.uri()));
        return AxumStatus::BAD_GATEWAY.into_response();
    }
    log.lock().unwrap().push(req.uri().to_string());
    let authority = req.uri().authority().expect("a proxy request has an absolute target").to_string();
    let (mut parts, body) = req.into_parts();
    parts.uri = parts.uri.path_and_query().unwrap().as_str().parse().unwrap();
    let upstream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let resp = send_on(upstream, hyper::Request::from_parts(parts, axum::body::Body::new(body))).await;
    let mut out = (resp.status, resp.body).into_response();
    if let Some(ct) = resp.headers.get("content-type") {
        out.headers_mut().insert("content-type", ct.clone());
    }
    out
}

fn start(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Server {
    home.write_config("auth: password\npassword: pw\n");
    let mut all = vec!["--bind-addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Server::start(home, &all, env)
}

fn coder_json(dir: &Path) -> PathBuf {
    dir.join("coder.json")
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The code-server release the server runs: its build's (here the stand-in's), which the update
/// check compares the latest with.
fn current() -> String {
    let product: Value = serde_json::from_slice(&std::fs::read(stand_in_dir().join("product.json")).unwrap()).unwrap();
    product["codeServerVersion"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_check_fresh_cached_forced_and_failing() {
    let releases = Releases::start(json!({"name": "v9.9.9", "tag_name": "v9.9.9"})).await;
    let home = Home::new();
    let s = start(&home, &["--update-url", &releases.url()], &[]);
    let c = s.client();
    assert_eq!(c.get("/update/check").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(releases.hits(), 0);
    let cookie = c.login("pw").await;
    let auth = [("cookie", cookie.as_str())];

    // Fresh: fetched once, in code-server's shape and key order.
    let r = c.get_with("/update/check", &auth).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.starts_with(r#"{"checked":"#) && text.contains(r#","latest":"9.9.9","current":""#), "{text}");
    let first = r.json();
    assert_eq!(first["current"], current());
    assert_eq!(first["isLatest"], false);
    assert_eq!(releases.hits(), 1);

    // Cached: the same answer, no request.
    let again = c.get_with("/update/check", &auth).await.json();
    assert_eq!(again, first);
    assert_eq!(releases.hits(), 1);
    // The cache lands in coder.json (user-data-dir, here the default data dir).
    let file = coder_json(&home.data_dir());
    eventually("coder.json", || read_json(&file).is_some()).await;
    assert_eq!(read_json(&file).unwrap()["update"], json!({"checked": first["checked"], "version": "9.9.9"}));

    // Forced: asks again. A newer release shows up.
    releases.answer(200, json!({"name": "", "tag_name": format!("v{}", current())}));
    let forced = c.get_with("/update/check?force=true", &auth).await.json();
    assert_eq!(releases.hits(), 2);
    assert_eq!(forced["latest"], current());
    assert_eq!(forced["isLatest"], true);
    assert!(forced["checked"].as_u64() >= first["checked"].as_u64());

    // Failing: `unknown`, logged, and the cache is kept.
    releases.answer(500, json!({"message": "boom"}));
    let failed = c.get_with("/update/check?force=true", &auth).await.json();
    assert_eq!(releases.hits(), 3);
    assert_eq!(failed["latest"], "unknown");
    assert_eq!(failed["isLatest"], true);
    assert_eq!(failed["current"], current());
    eventually("the error log", || s.stderr_text().contains("Failed to get latest version")).await;
    assert!(s.stderr_text().contains(": 500"), "{}", s.stderr_text());
    let cached = c.get_with("/update/check", &auth).await.json();
    assert_eq!(cached["latest"], current(), "the last good answer is still cached");
    assert_eq!(releases.hits(), 3);
    assert_eq!(s.stop(), Some(0));

    // The cache survives a restart.
    let s = start(&home, &["--update-url", &releases.url()], &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let after = c.get_with("/update/check", &[("cookie", &cookie)]).await.json();
    assert_eq!(after["latest"], current());
    assert_eq!(releases.hits(), 3);

    // A releases server that is not there: `unknown` too.
    drop(s);
    let s = start(&home, &["--update-url", "http://127.0.0.1:1/latest"], &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let down = c.get_with("/update/check?force=true", &[("cookie", &cookie)]).await.json();
    assert_eq!(down["latest"], "unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_one_request() {
    let releases = Releases::start(json!({"name": "v2.0.0"})).await;
    releases.set_gate(false);
    let home = Home::new();
    let s = start(&home, &[], &[("CODE_SERVER_UPDATE_URL", &releases.url())]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let checks: Vec<_> = (0..8)
        .map(|_| {
            let (c, cookie) = (c.clone(), cookie.clone());
            tokio::spawn(async move { c.get_with("/update/check", &[("cookie", &cookie)]).await.json() })
        })
        .collect();
    eventually("the upstream request", || releases.hits() == 1).await;
    // Give the other checks time to arrive while the first one is out. None can answer while
    // the one upstream request is held (there is no cache yet), so all eight are waiting on it
    // together: if each asked for itself, there would be eight requests upstream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(checks.iter().all(|c| !c.is_finished()), "the checks wait for the one request in flight");
    assert_eq!(releases.hits(), 1);
    releases.set_gate(true);
    for check in checks {
        assert_eq!(check.await.unwrap()["latest"], "2.0.0");
    }
    assert_eq!(releases.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_check_honours_the_proxy_environment() {
    let releases = Releases::start(json!({"name": "v3.0.0"})).await;
    let proxy = Proxy::start().await;
    let home = Home::new();
    let url = releases.url();

    // HTTP_PROXY: the request goes through the proxy.
    let s = start(&home, &["--update-url", &url], &[("HTTP_PROXY", &proxy.url())]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let r = c.get_with("/update/check", &[("cookie", &cookie)]).await.json();
    assert_eq!(r["latest"], "3.0.0");
    assert_eq!(proxy.seen(), vec![url.clone()]);
    assert_eq!(releases.hits(), 1);
    drop(s);

    // NO_PROXY: straight to the releases server.
    let s = start(&home, &["--update-url", &url], &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let r = c.get_with("/update/check?force=true", &[("cookie", &cookie)]).await.json();
    assert_eq!(r["latest"], "3.0.0");
    assert_eq!(proxy.seen().len(), 1, "NO_PROXY bypasses the proxy");
    assert_eq!(releases.hits(), 2);
    drop(s);

    // HTTPS_PROXY: an https feed is reached through a CONNECT tunnel (refused here).
    let https = url.replace("http://", "https://");
    let s = start(&home, &["--update-url", &https], &[("HTTPS_PROXY", &proxy.url())]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let r = c.get_with("/update/check?force=true", &[("cookie", &cookie)]).await.json();
    assert_eq!(r["latest"], "unknown");
    assert_eq!(proxy.seen()[1], format!("CONNECT {}", releases.addr));
    assert_eq!(releases.hits(), 2);
    drop(s);

    // A proxy that is not there: the check fails rather than going around it.
    let s = start(&home, &["--update-url", &url], &[("http_proxy", "http://127.0.0.1:1")]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let r = c.get_with("/update/check?force=true", &[("cookie", &cookie)]).await.json();
    assert_eq!(r["latest"], "unknown");
    assert_eq!(releases.hits(), 2);
}

#[test]
fn update_url_must_be_http() {
    let home = Home::new();
    home.write_config("auth: none\n");
    for bad in ["ftp://example.com/latest", "not a url", "file:///etc/passwd"] {
        let out = run(&home, &["--update-url", bad], &[]);
        assert_eq!(out.code, Some(1), "{bad}");
        assert!(out.stderr.contains("--update-url must be an http or https URL"), "{}", out.stderr);
    }
    let out = run(&home, &[], &[("CODE_SERVER_UPDATE_URL", "gopher://x")]);
    assert_eq!(out.code, Some(1));
    assert!(run(&home, &["--help"], &[]).stdout.contains("--update-url"));
}

/// A slow request in flight when SIGTERM arrives still completes; new connections are refused
/// meanwhile; what the request wrote to coder.json is flushed; the exit is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_slow_request_finish() {
    let releases = Releases::start(json!({"name": "v5.0.0"})).await;
    releases.set_gate(false);
    let home = Home::new();
    let s = start(&home, &["--update-url", &releases.url()], &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.get_with("/update/check", &[("cookie", &cookie)]).await }
    });
    eventually("the slow request to reach upstream", || releases.hits() == 1).await;

    s.signal("TERM");
    eventually("shutdown to begin", || s.stdout_text().contains("Shutting down")).await;
    let authority = s.authority();
    let mut refused = false;
    for _ in 0..2000 {
        if tokio::net::TcpStream::connect(&authority).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener closes once shutdown begins");

    releases.set_gate(true);
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["latest"], "5.0.0");
    let stderr = s.stderr.clone();
    // No second signal (the harness's `stop` sends one): that would mean "exit now".
    assert_eq!(s.exited().await, Some(0));
    assert_eq!(read_json(&coder_json(&home.data_dir())).unwrap()["update"]["version"], "5.0.0");
    let stderr = stderr.lock().unwrap().join("\n");
    assert!(!stderr.contains("did not"), "nothing was cut short: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_a_close_frame() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let home = Home::new();
    let s = start(&home, &[], &[]);
    let stream = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/healthz", s.authority()), stream).await.unwrap();
    ws.send(Message::Text("hi".into())).await.unwrap();
    assert!(matches!(ws.next().await.unwrap().unwrap(), Message::Text(_)));

    s.signal("TERM");
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a Close frame, got {other:?}"),
        }
    };
    let frame = close.expect("a close code");
    assert_eq!(frame.code, CloseCode::Away);
    drop(ws);
    assert_eq!(s.exited().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_file_lives_in_the_data_dir() {
    let home = Home::new();
    let udd = home.path().join("udd");
    let s = start(&home, &["--user-data-dir", udd.to_str().unwrap()], &[]);
    let c = s.client();
    let beat = home.data_dir().join("heartbeat");
    assert_eq!(c.get("/healthz").await.json()["status"], "expired");
    assert!(!beat.exists(), "/healthz is not activity");
    c.get("/login").await;
    eventually("the heartbeat file", || beat.exists()).await;
    assert_eq!(std::fs::metadata(&beat).unwrap().len(), 0);
    assert!(!udd.join("heartbeat").exists());
    assert_eq!(c.get("/healthz").await.json()["status"], "alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_settings_are_moved_aside_and_the_server_starts() {
    let releases = Releases::start(json!({"name": "v1.0.0"})).await;
    let home = Home::new();
    let udd = home.path().join("udd");
    std::fs::create_dir_all(&udd).unwrap();
    std::fs::write(coder_json(&udd), "{\"update\": {\"checked\": 1,").unwrap();
    let s = start(&home, &["--user-data-dir", udd.to_str().unwrap(), "--update-url", &releases.url()], &[]);
    eventually("the warning", || s.stderr_text().contains("Settings file")).await;
    let aside: Vec<_> = std::fs::read_dir(&udd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("coder.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(udd.join(&aside[0])).unwrap(), "{\"update\": {\"checked\": 1,");

    let c = s.client();
    let cookie = c.login("pw").await;
    assert_eq!(c.get_with("/update/check", &[("cookie", &cookie)]).await.json()["latest"], "1.0.0");
    assert_eq!(s.stop(), Some(0));
    let text = std::fs::read_to_string(coder_json(&udd)).unwrap();
    assert!(text.starts_with("{\n  \"update\": {\n    \"checked\": "), "{text}");
}

/// A request that never ends does not hold shutdown past its 10 s grace: the server says so
/// and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_requests_ten_seconds_at_most() {
    let releases = Releases::start(json!({"name": "v5.0.0"})).await;
    releases.set_gate(false);
    let home = Home::new();
    let s = start(&home, &["--update-url", &releases.url()], &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let _stuck = tokio::spawn(async move { c.get_with("/update/check", &[("cookie", &cookie)]).await });
    eventually("the request to hang upstream", || releases.hits() == 1).await;
    s.signal("TERM");
    let stderr = s.stderr.clone();
    assert_eq!(s.exited().await, Some(0));
    let stderr = stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("Some connections did not finish within 10s; closing them"), "{stderr}");
    assert!(!stderr.contains("Second signal"));
}

/// A second signal exits at once, whatever shutdown is still waiting for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let releases = Releases::start(json!({"name": "v5.0.0"})).await;
    releases.set_gate(false);
    let home = Home::new();
    let s = start(&home, &["--update-url", &releases.url()], &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let _stuck = tokio::spawn(async move { c.get_with("/update/check", &[("cookie", &cookie)]).await });
    eventually("the request to hang upstream", || releases.hits() == 1).await;
    s.signal("TERM");
    eventually("shutdown to begin", || s.stdout_text().contains("Shutting down")).await;
    s.signal("TERM");
    let stderr = s.stderr.clone();
    assert_eq!(s.exited().await, Some(0));
    let stderr = stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("Second signal: exiting immediately"), "{stderr}");
    // It did not wait for the hanging request's grace to run out.
    assert!(!stderr.contains("did not finish within"), "{stderr}");
}
