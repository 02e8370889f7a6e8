//! Several fronts, one deployment (issue 16): two or three real fronts (the binary) share users
//! in the tests' own PostgreSQL, sessions in their own Redis, one base path on this host, and
//! the workspace registry in the database. A workspace started through one front is served
//! through every other, once; a killed front's users get their workspace back through another;
//! fronts share one port with `reuse-port` and one restarts without losing a request.
//!
//! The fronts run the stand-in VS Code build, which echoes what reaches it, except in the
//! Chromium test, where a person uses the real workbench through two fronts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::*;

const ADMIN: (&str, &str) = ("ADMIN_USERNAME", "boss");
const ADMIN_PW: (&str, &str) = ("ADMIN_PASSWORD", "boss-password-1");
const FAKE_COMMIT: &str = "fa4ecafe00000000000000000000000000000000";

/// One deployment: its database, its sessions' place in Redis, and the users' base path.
struct Deployment {
    config: String,
    base: tempfile::TempDir,
}

impl Deployment {
    async fn new() -> Deployment {
        Deployment::on(&postgres_database().await)
    }

    /// A deployment whose users are in the database at `db`.
    fn on(db: &str) -> Deployment {
        let (redis, prefix) = redis_prefix();
        let base = tempfile::tempdir().unwrap();
        let config = format!(
            "deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n    base-path: {}\n  auth:\n    database:\n      url: {db}\n    session:\n      store: redis\n      redis:\n        url: {redis}\n        prefix: \"{prefix}\"\n",
            base.path().display()
        );
        Deployment { config, base }
    }

    /// A front of it: a process of its own with a home of its own.
    fn front(&self, args: &[&str]) -> (Home, Server) {
        self.front_in(Home::new(), args)
    }

    /// A front in `home` (which says which VS Code build it runs).
    fn front_in(&self, home: Home, args: &[&str]) -> (Home, Server) {
        home.write_config(&self.config);
        let mut all = vec!["--bind-addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let server = Server::start(&home, &all, &[ADMIN, ADMIN_PW]);
        (home, server)
    }

    /// A user's directory under the base path.
    fn user_dir(&self, id: &str) -> PathBuf {
        self.base.path().join(id)
    }
}

/// Creates a user through `s` (as the admin) and signs them in there; `(id, cookie)`.
async fn user(s: &Server, admin: &str, name: &str) -> (String, String) {
    let password = format!("{name}-password-1");
    let body = serde_json::json!({ "username": name, "password": password }).to_string();
    let made = api(s, "POST", "/api/users", admin, &body).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_string();
    (id, sign_in(s, name, &password).await)
}

/// The arguments the user's VS Code server was started with, through `s` (starting it if
/// need be); `None` while it is not served.
async fn served_argv(s: &Server, cookie: &str) -> Option<Vec<String>> {
    let res = s.client().get_with("/argv", &[("cookie", cookie)]).await;
    if res.status != 200 {
        return None;
    }
    let argv: Value = res.json();
    Some(argv.as_array()?.iter().filter_map(|a| a.as_str().map(str::to_string)).collect())
}

fn user_data_dir(argv: &[String]) -> Option<&str> {
    argv.iter().position(|a| a == "--user-data-dir").and_then(|i| argv.get(i + 1)).map(String::as_str)
}

/// How many times the front's log says it started a VS Code server.
fn starts(s: &Server) -> usize {
    s.stdout_text().lines().filter(|l| l.contains("Starting VS Code")).count()
}

/// The VS Code servers alive with this user-data-dir (whoever started them).
fn servers_of(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.to_string_lossy().into_owned();
    processes()
        .into_iter()
        .filter(|(pid, _, _)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline);
            text.contains("server-main.js") && text.contains(&needle)
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

/// A WebSocket through `s` to the user's VS Code (the stand-in echoes its bytes): opens, and
/// one message goes there and back.
fn websocket_round_trip(s: &Server, cookie: &str) {
    use std::io::{Read, Write};
    let origin = format!("http://{}", s.authority());
    let path = format!("/stable-{FAKE_COMMIT}?reconnectionToken=t-1&reconnection=false&skipWebSocketFrames=false");
    let (head, mut ws) = ws_handshake(&s.authority(), &path, &[("Cookie", cookie), ("Origin", &origin)]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    ws.write_all(b"through the other front").unwrap();
    let mut echo = [0u8; 23];
    ws.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"through the other front");
}

#[tokio::test]
async fn a_workspace_started_through_one_front_is_served_through_the_others() {
    let d = Deployment::new().await;
    let (_ha, a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let (_hc, c) = d.front(&[]);
    let admin = sign_in(&a, "boss", "boss-password-1").await;
    let (ada, cookie) = user(&a, &admin, "ada").await;

    // Started through A.
    let argv = served_argv(&a, &cookie).await.expect("ada's workspace through A");
    let data = d.user_dir(&ada).join("data");
    assert_eq!(user_data_dir(&argv), Some(data.to_str().unwrap()), "{argv:?}");
    assert_eq!(starts(&a), 1);

    // The same cookie on B and C: the same server (HTTP and WebSocket), not a second one.
    for front in [&b, &c] {
        assert_eq!(served_argv(front, &cookie).await.as_ref(), Some(&argv), "served through another front");
        websocket_round_trip(front, &cookie);
        let page = front.client().get_with("/some/vscode/path", &[("cookie", &cookie)]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.json()["url"].as_str().unwrap().ends_with("/some/vscode/path"), "{}", page.text());
    }
    assert_eq!((starts(&a), starts(&b), starts(&c)), (1, 0, 0), "started once, by A");
    assert_eq!(servers_of(&data).len(), 1, "one VS Code server for ada");

    // Someone else's cookie through B is theirs, not ada's: bea's workspace starts on B.
    let (bea, bea_cookie) = user(&b, &admin, "bea").await;
    let argv = served_argv(&b, &bea_cookie).await.expect("bea's workspace through B");
    assert_eq!(user_data_dir(&argv), Some(d.user_dir(&bea).join("data").to_str().unwrap()));
    assert_eq!(starts(&b), 1);

    // The admin sees it through any front: through C, running on another front; her usage too.
    let listed = api(&c, "GET", "/api/workspaces", &admin, "").await.json();
    let ada_row = listed.as_array().unwrap().iter().find(|w| w["username"] == "ada").cloned();
    let ada_row = ada_row.unwrap_or_else(|| panic!("ada's workspace in {listed}"));
    assert_eq!(ada_row["state"], "running", "{listed}");
    assert!(ada_row["front"].is_string() && ada_row["started_at"].is_u64(), "{listed}");
    let usage = c.client().get_with("/api/users/me/usage", &[("cookie", &cookie)]).await.json();
    assert_eq!(usage["workspace"], "running", "{usage}");
    let through_a = api(&a, "GET", "/api/workspaces", &admin, "").await.json();
    let on_a = through_a.as_array().unwrap().iter().find(|w| w["username"] == "ada").cloned().unwrap();
    assert!(on_a["state"] == "running" && on_a["front"].is_null(), "A runs it itself: {on_a}");

    // An admin's stop through C reaches A, which runs ada's workspace.
    let stopped = api(&c, "POST", &format!("/api/users/{ada}/workspace/stop"), &admin, "").await;
    assert_eq!(stopped.status, 204, "{}", stopped.text());
    eventually("A to stop ada's workspace", || servers_of(&data).is_empty()).await;
}

#[tokio::test]
async fn two_fronts_asked_at_once_start_one_workspace() {
    let d = Deployment::new().await;
    let (_ha, a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let admin = sign_in(&a, "boss", "boss-password-1").await;
    let (id, cookie) = user(&a, &admin, "cleo").await;
    let (a, b) = (Arc::new(a), Arc::new(b));

    // Twenty first requests at the same moment, half to each front.
    let go = Arc::new(tokio::sync::Barrier::new(20));
    let mut asked = Vec::new();
    for i in 0..20 {
        let (front, cookie, go) = (if i % 2 == 0 { a.clone() } else { b.clone() }, cookie.clone(), go.clone());
        asked.push(tokio::spawn(async move {
            go.wait().await;
            served_argv(&front, &cookie).await
        }));
    }
    let mut answers = Vec::new();
    for task in asked {
        answers.push(task.await.unwrap().expect("every request is served"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "one server answered them all");
    assert_eq!(starts(&a) + starts(&b), 1, "exactly one start\nA:\n{}\nB:\n{}", a.stdout_text(), b.stdout_text());
    assert_eq!(servers_of(&d.user_dir(&id).join("data")).len(), 1);
}

#[tokio::test]
async fn a_killed_fronts_users_get_their_workspace_through_another() {
    let d = Deployment::new().await;
    let (_ha, mut a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let admin = sign_in(&b, "boss", "boss-password-1").await;
    let (id, cookie) = user(&b, &admin, "dora").await;
    let argv = served_argv(&a, &cookie).await.expect("dora's workspace through A");
    let data = d.user_dir(&id).join("data");
    let group = vscode_pid(&a);
    // Her work, in her workspace.
    let notes = d.user_dir(&id).join("workspaces/notes.txt");
    std::fs::write(&notes, "keep me").unwrap();

    a.signal("KILL");
    let killed = Instant::now();
    a.child.wait().unwrap();
    let served = loop {
        if let Some(argv) = served_argv(&b, &cookie).await {
            break argv;
        }
        assert!(killed.elapsed() < Duration::from_secs(35), "no workspace through B within 35 s:\n{}", b.stdout_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("dora's workspace served through B {:?} after A was killed", killed.elapsed());
    assert_eq!(user_data_dir(&served), user_data_dir(&argv), "the same workspace, her directories");
    assert_eq!(starts(&b), 1, "started again, by B");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me", "files intact");
    assert_no_orphans(group, None).await;
    assert_eq!(servers_of(&data).len(), 1, "only B's server is left");
    websocket_round_trip(&b, &cookie);
}

/// A front that stops answering but whose process is still there (here: stopped with SIGSTOP)
/// is taken for dead when its heartbeat lapses; meanwhile its workspace still serves through
/// the others. When it wakes up, it learns it lost its workspaces and runs none of them.
#[tokio::test]
async fn a_silent_front_is_taken_for_dead_when_its_heartbeat_lapses() {
    let d = Deployment::new().await;
    let (_ha, a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let admin = sign_in(&b, "boss", "boss-password-1").await;
    let (id, cookie) = user(&b, &admin, "fern").await;
    served_argv(&a, &cookie).await.expect("fern's workspace through A");
    let data = d.user_dir(&id).join("data");
    let group = vscode_pid(&a);

    a.signal("STOP");
    let silent = Instant::now();
    // Its VS Code server still runs, and B forwards to it.
    assert!(served_argv(&b, &cookie).await.is_some(), "served through B while A is silent");
    assert_eq!(starts(&b), 0);
    // Then A's heartbeat lapses (30 s): B ends A's server and starts one of its own.
    while starts(&b) == 0 {
        assert!(silent.elapsed() < Duration::from_secs(45), "A was never taken for dead:\n{}", b.stdout_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
        served_argv(&b, &cookie).await;
    }
    let taken = silent.elapsed();
    eprintln!("A taken for dead {taken:?} after it went silent");
    assert!(taken >= Duration::from_secs(27), "not before the heartbeat lapsed: {taken:?}");
    assert!(served_argv(&b, &cookie).await.is_some());
    assert_no_orphans(group, None).await;

    // Woken up, A gives up what it had; one server for fern remains, B's.
    a.signal("CONT");
    let woke = Instant::now();
    while !format!("{}{}", a.stdout_text(), a.stderr_text()).contains("taken for dead") {
        assert!(woke.elapsed() < Duration::from_secs(20), "A never learnt:\n{}\n{}", a.stdout_text(), a.stderr_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(servers_of(&data).len(), 1, "one server for fern\nA:\n{}", a.stdout_text());
    let through_a = served_argv(&a, &cookie).await.expect("A forwards to B's now");
    assert_eq!(user_data_dir(&through_a), Some(data.to_str().unwrap()));
    assert_eq!(starts(&b), 1);
}

/// The storage quota holds on every front, also on one that never ran the workspace and has
/// not measured it yet: its first start there is refused with the page.
#[tokio::test]
async fn the_storage_quota_holds_whichever_front_is_asked() {
    let mut d = Deployment::new().await;
    d.config.push_str("  limits:\n    storage-quota-mb: 1\n");
    let (_ha, a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let admin = sign_in(&a, "boss", "boss-password-1").await;
    let (id, cookie) = user(&a, &admin, "ivy").await;
    // Her files fill more than her quota while no workspace of hers runs anywhere.
    let folder = d.user_dir(&id).join("workspaces");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(&folder).unwrap();
    std::fs::write(folder.join("big.bin"), vec![7u8; 2_000_000]).unwrap();
    for front in [&b, &a] {
        let page = front.client().get_with("/argv", &[("cookie", &cookie), ("accept", "text/html")]).await;
        assert_eq!(page.status, 507, "{}", page.text());
        assert!(page.text().contains("storage quota"), "{}", page.text());
    }
    assert_eq!(starts(&a) + starts(&b), 0, "started nowhere");

    // An admin starts it anyway through A: it runs (on A), and B serves it too.
    let path = format!("/api/users/{id}/workspace/start");
    assert_eq!(api(&a, "POST", &path, &admin, "").await.status, 204);
    let mut served = None;
    for _ in 0..100 {
        served = served_argv(&b, &cookie).await;
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served.is_some(), "served through B once started anyway through A");
    assert_eq!((starts(&a), starts(&b)), (1, 0));
}

/// While the database is away no front heartbeats; once it is back, none is taken for dead for
/// that (its workspaces keep running where they ran), and forwarding works again by itself.
#[tokio::test]
async fn a_database_outage_longer_than_the_heartbeat_bound_takes_no_front_for_dead() {
    let mut pg = PrivatePostgres::start().await;
    let d = Deployment::on(&pg.create_database().await);
    let (_ha, a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let admin = sign_in(&b, "boss", "boss-password-1").await;
    let (_, cookie) = user(&b, &admin, "hugo").await;
    served_argv(&a, &cookie).await.expect("hugo's workspace through A");
    let group = vscode_pid(&a);

    pg.stop().await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(b.client().get_with("/argv", &[("cookie", &cookie)]).await.status, 503, "B cannot tell where it runs");
    pg.start_again().await;
    let back = Instant::now();
    let served = loop {
        if let Some(argv) = served_argv(&b, &cookie).await {
            break argv;
        }
        assert!(back.elapsed() < Duration::from_secs(30), "never served again:\n{}", b.stdout_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(user_data_dir(&served).is_some());
    // Past the bound again: still A's server, never reclaimed, never started twice.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(served_argv(&b, &cookie).await.is_some());
    assert_eq!((starts(&a), starts(&b)), (1, 0), "B:\n{}", b.stdout_text());
    assert!(processes().iter().any(|(_, g, _)| *g == group), "A's server still runs");
}

#[tokio::test]
async fn a_front_stopped_with_sigterm_hands_its_users_over() {
    let d = Deployment::new().await;
    let (_ha, a) = d.front(&[]);
    let (_hb, b) = d.front(&[]);
    let admin = sign_in(&a, "boss", "boss-password-1").await;
    let (id, cookie) = user(&a, &admin, "edna").await;
    served_argv(&a, &cookie).await.expect("edna's workspace through A");
    let group = vscode_pid(&a);

    assert_eq!(a.stop(), Some(0));
    assert_no_orphans(group, None).await;
    // At once, not after a heartbeat lapsed: A cleared its rows on the way out.
    let argv = served_argv(&b, &cookie).await.expect("edna's workspace through B, at the first request");
    assert_eq!(user_data_dir(&argv), Some(d.user_dir(&id).join("data").to_str().unwrap()));
    assert_eq!(starts(&b), 1);
}

/// `GET /login` on `authority` on a connection of its own; which front answered (by its
/// `--app-name`), or what went wrong (a refused or reset connection, a short answer).
async fn which_front(authority: &str) -> Result<&'static str, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET /login HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer in 30 s".to_string())?
        .map_err(|e| format!("read: {e} after {} bytes", answer.len()))?;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {:?}", text.lines().next().unwrap_or("(nothing)")));
    }
    ["front-one", "front-two"].into_iter().find(|n| text.contains(n)).ok_or_else(|| "neither front".to_string())
}

#[tokio::test]
async fn fronts_share_a_port_and_one_restarts_without_losing_a_request() {
    let d = Deployment::new().await;
    let (_h1, one) = d.front(&["--reuse-port", "--app-name", "front-one"]);
    let authority = one.authority();
    let bind = ["--bind-addr", authority.as_str(), "--reuse-port"];
    let (h2, two) = d.front(&[&bind[..], &["--app-name", "front-two"]].concat());
    assert_eq!(two.authority(), authority, "both on one port");

    // 1,000 requests, each on a connection of its own, spread across both.
    let mut count = std::collections::HashMap::new();
    for _ in 0..1000 {
        *count.entry(which_front(&authority).await.unwrap()).or_insert(0) += 1;
    }
    eprintln!("1,000 requests: {count:?}");
    assert!(count.get("front-one").is_some_and(|n| *n > 50), "{count:?}");
    assert!(count.get("front-two").is_some_and(|n| *n > 50), "{count:?}");

    // Under load from sixteen clients, front two stops (SIGTERM) and starts again.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (stop, served, failed, authority) = (stop.clone(), served.clone(), failed.clone(), authority.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match which_front(&authority).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failed.lock().unwrap().push(e);
                        0
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = served.load(Ordering::Relaxed);
    assert_eq!(tokio::task::spawn_blocking(move || two.stop()).await.unwrap(), Some(0));
    let during = served.load(Ordering::Relaxed);
    let two = Server::start(&h2, &[&bind[..], &["--app-name", "front-two"]].concat(), &[ADMIN, ADMIN_PW]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let total = served.load(Ordering::Relaxed);
    eprintln!("restart under load: {before} served before the stop, {during} by its end, {total} in all");
    assert!(during > before, "requests went on during the stop");
    assert_eq!(failed.lock().unwrap().as_slice(), &[] as &[String], "no request lost");
    // The restarted front takes its share again.
    let mut again = std::collections::HashSet::new();
    for _ in 0..200 {
        again.insert(which_front(&authority).await.unwrap());
    }
    assert!(again.contains("front-two"), "the restarted front serves again");
    drop((one, two));
}

/// As a person sees it, in Chromium on the real workbench (tests/browser/fronts.mjs): signed
/// in through front A, a terminal there; the same browser through front B gets the same
/// workspace (the session cookie, the folder, a terminal of the same server); front A is
/// SIGKILLed and the next load through B gets the workspace back with its files.
#[test]
fn the_workbench_through_two_fronts_in_chromium() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(Deployment::new());
    let (_ha, mut a) = d.front_in(Home::with_vscode(), &[]);
    let (_hb, b) = d.front_in(Home::with_vscode(), &[]);
    let id = rt.block_on(async {
        let admin = sign_in(&a, "boss", "boss-password-1").await;
        user(&a, &admin, "gwen").await.0
    });
    let shots = shots_dir(d.base.path().join("shots"));
    let folder = d.user_dir(&id).join("workspaces");
    let (ok, log) = run_browser(
        browser_script("fronts.mjs")
            .env("CS_URL_A", &a.address)
            .env("CS_URL_B", &b.address)
            .env("CS_USER", "gwen")
            .env("CS_PASSWORD", "gwen-password-1")
            .env("CS_FOLDER", &folder)
            .env("CS_KILL_A", format!("kill -9 {}", a.child.id()))
            .env("CS_SHOTS", &shots),
    );
    assert!(
        ok,
        "the browser run failed:\n{log}\nA:\n{}\n{}\nB:\n{}\n{}",
        a.stdout_text(),
        a.stderr_text(),
        b.stdout_text(),
        b.stderr_text()
    );
    let _ = a.child.wait();
    // A ran the workspace until it was killed; B forwarded to it, then started it again.
    assert_eq!((starts(&a), starts(&b)), (1, 1), "A:\n{}\nB:\n{}", a.stdout_text(), b.stdout_text());
    for (file, text) in [("through-a.txt", "typed through front A"), ("through-b.txt", "typed through front B")] {
        assert_eq!(std::fs::read_to_string(folder.join(file)).unwrap().trim(), text);
    }
    for name in ["through-a", "through-b", "after-a-killed"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}.png looks blank ({} bytes)", png.len());
    }
}

/// `reuse-port` only where fronts share the registry, and only on a TCP address; refused before
/// anything listens, with a message that says why.
#[test]
fn reuse_port_is_refused_where_it_cannot_work() {
    let home = Home::new();
    let out = run(&home, &["--bind-addr", "127.0.0.1:0", "--reuse-port"], &[]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{text}");
    assert!(text.contains("--reuse-port needs deployment-mode: multi"), "{text}");
    assert!(!text.contains("listening on"), "{text}");

    let home = Home::new();
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let socket = home.path().join("cs.sock");
    let out = run(&home, &["--socket", socket.to_str().unwrap(), "--reuse-port"], &[ADMIN, ADMIN_PW]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{text}");
    assert!(text.contains("--reuse-port applies to --bind-addr"), "{text}");
}
