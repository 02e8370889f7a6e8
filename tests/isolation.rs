//! Multi-user mode, os-user isolation, through the real binary running as root: each user's
//! VS Code runs as their own uid in their own directories, the port proxy reaches only a user's
//! own ports, an idle workspace stops and comes back. (tests/isolation_browser.rs does what a
//! person does in the real workbench.) Skipped, saying so, when the tests do not run as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::*;

const ADMIN: (&str, &str) = ("ADMIN_USERNAME", "boss");
const ADMIN_PW: (&str, &str) = ("ADMIN_PASSWORD", "boss-password-1");

fn as_root() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        println!("skipped: os-user isolation needs the tests to run as root");
    }
    root
}

/// A home whose base path other accounts can pass through, and a config for os-user isolation
/// with a uid range of this test's own.
fn isolated_home(home: Home, extra: &str) -> (Home, PathBuf, (u32, u32)) {
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let base = home.path().join("users");
    let first = 400_000 + (rand_u32() % 50_000) * 10;
    let range = (first, first + 9);
    home.write_config(&format!(
        "deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: os-user\n    base-path: {}\n    uid-range: \"{}-{}\"\n{extra}",
        base.display(),
        range.0,
        range.1
    ));
    (home, base, range)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    u32::from_le_bytes(b)
}

fn start(home: &Home) -> Server {
    Server::start(home, &["--bind-addr", "127.0.0.1:0"], &[ADMIN, ADMIN_PW])
}

/// Creates a user (as the admin) and signs them in: (id, cookie).
async fn user(s: &Server, admin: &str, name: &str) -> (String, String) {
    let pw = format!("{name}-password-1");
    let made = api(s, "POST", "/api/users", admin, &format!(r#"{{"username":"{name}","password":"{pw}"}}"#)).await;
    assert_eq!(made.status, 201, "{}", made.text());
    (made.json()["id"].as_str().unwrap().to_string(), sign_in(s, name, &pw).await)
}

/// Opens the user's workbench (their VS Code starts), following the first visit's redirect to
/// their folder.
async fn open_workbench(s: &Server, cookie: &str) {
    let first = s.client().get_with("/", &[("cookie", cookie)]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let to = first.header("location").unwrap().to_string();
    assert!(to.contains("workspaces"), "a first visit opens the user's own folder: {to}");
    let page = s.client().get_with(&format!("/{}", to.trim_start_matches("./")), &[("cookie", cookie)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
}

/// The pids of the VS Code servers started so far (from the log).
fn vscode_pids(s: &Server) -> Vec<i32> {
    s.stdout_text()
        .lines()
        .filter_map(|l| l.split_once("Starting VS Code ")?.1.split_once("(pid ")?.1.split_once(')')?.0.parse().ok())
        .collect()
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
}

fn environ(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// The pid of `user`'s VS Code (the one whose environment names them), waiting a little for
/// the log line that names it to be read.
fn pid_of(s: &Server, user: &str) -> i32 {
    for _ in 0..200 {
        if let Some(pid) = vscode_pids(s).into_iter().rev().find(|p| environ(*p).contains(&format!("USER={user}"))) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no VS Code of {user} among {:?}", vscode_pids(s));
}

/// The pids of `uid`'s processes that still run (zombies, dead but not yet reaped by whoever
/// inherited them, do not count).
fn live_processes_of(uid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let live = status_field(*pid, "State").is_some_and(|s| !s.starts_with('Z'));
            live && status_field(*pid, "Uid").is_some_and(|u| u.split('\t').next() == Some(&uid.to_string()))
        })
        .collect()
}

fn owner_and_mode(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.mode() & 0o7777)
}

#[tokio::test]
async fn each_user_runs_as_their_own_uid_in_their_own_directories() {
    if !as_root() {
        return;
    }
    let (home, base, range) = isolated_home(Home::new(), "");
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (ada_id, ada) = user(&s, &admin, "ada").await;
    let (bob_id, bob) = user(&s, &admin, "bob").await;
    open_workbench(&s, &ada).await;
    open_workbench(&s, &bob).await;

    let ada_uid = owner_and_mode(&base.join(&ada_id).join("data")).0;
    let bob_uid = owner_and_mode(&base.join(&bob_id).join("data")).0;
    assert_ne!(ada_uid, bob_uid);
    for uid in [ada_uid, bob_uid] {
        assert!((range.0..=range.1).contains(&uid), "{uid} is from the range {range:?}");
    }
    for (id, uid) in [(&ada_id, ada_uid), (&bob_id, bob_uid)] {
        let root = base.join(id);
        assert_eq!(owner_and_mode(&root), (0, 0o711), "the user's root is the server's: others pass, not list");
        for dir in ["data", "extensions", "workspaces", "home", "run"] {
            assert_eq!(owner_and_mode(&root.join(dir)), (uid, 0o700), "{dir}");
        }
        // What the front writes for itself is not the user's to replace.
        assert_eq!(owner_and_mode(&root.join("code-server-ipc.sock")).0, uid, "the session socket is handed over");
    }

    for (name, uid, id) in [("ada", ada_uid, &ada_id), ("bob", bob_uid, &bob_id)] {
        let pid = pid_of(&s, name);
        assert_eq!(status_field(pid, "Uid").unwrap(), format!("{uid}\t{uid}\t{uid}\t{uid}"), "{name}'s VS Code");
        assert_eq!(status_field(pid, "Gid").unwrap(), format!("{uid}\t{uid}\t{uid}\t{uid}"));
        assert_eq!(status_field(pid, "Groups").unwrap(), "", "no supplementary groups");
        for caps in ["CapEff", "CapPrm", "CapInh"] {
            assert_eq!(status_field(pid, caps).unwrap(), "0000000000000000", "{caps}: no capabilities");
        }
        let env = environ(pid);
        let home_dir = base.join(id).join("home");
        assert!(env.contains(&format!("HOME={}", home_dir.display())), "{env:?}");
        assert!(env.iter().all(|v| !v.starts_with("ADMIN_") && !v.starts_with("XDG_")), "nothing of ours: {env:?}");
    }

    // One user's files are not the other's: as ada's uid, bob's folder cannot be read.
    let secret = base.join(&bob_id).join("workspaces/secret.txt");
    std::fs::write(&secret, "bob's\n").unwrap();
    let out = as_uid(ada_uid).args(["cat"]).arg(&secret).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    let out = as_uid(ada_uid).args(["ls"]).arg(&base).output().unwrap();
    assert!(!out.status.success(), "nor the list of users: {out:?}");

    // Her server's socket is in her own directory: swapped for a symlink to bob's server, it
    // leads nowhere (we check who answers), never into bob's workspace.
    let mine = s.client().get_with("/argv", &[("cookie", &ada)]).await;
    assert!(mine.text().contains(&ada_id) && !mine.text().contains(&bob_id), "{}", mine.text());
    let socket_in = |id: &str| {
        std::fs::read_dir(base.join(id).join("run"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "sock"))
            .unwrap()
    };
    let (ada_socket, bob_socket) = (socket_in(&ada_id), socket_in(&bob_id));
    let swapped = as_uid(ada_uid).arg("ln").arg("-sfn").arg(&bob_socket).arg(&ada_socket).status().unwrap();
    assert!(swapped.success());
    let hijack = s.client().get_with("/argv", &[("cookie", &ada)]).await;
    assert!(!hijack.text().contains(&bob_id), "ada reached bob's server: {}", hijack.text());
    assert_eq!(hijack.status, 502, "{}", hijack.text());

    // The uid stays the user's across restarts of the server.
    drop(s);
    let s = start(&home);
    let ada = sign_in(&s, "ada", "ada-password-1").await;
    open_workbench(&s, &ada).await;
    let pid = pid_of(&s, "ada");
    assert_eq!(status_field(pid, "Uid").unwrap().split('\t').next().unwrap(), ada_uid.to_string());
}

/// The audit events of `kind` matching `pred`, once there is one (the audit is written off the
/// request path, a moment later).
async fn audited(
    s: &Server,
    admin: &str,
    kind: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = s.client().get_with(&format!("/api/audit?type={kind}"), &[("cookie", admin)]).await.json();
        let found: Vec<_> = last["events"].as_array().into_iter().flatten().filter(|e| pred(e)).cloned().collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} event as expected: {last}");
}

/// A command run as `uid` (and gid), without groups.
fn as_uid(uid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"]);
    c
}

/// A web server run as `uid` on 127.0.0.1, answering `text`: (process, port).
fn web_server_as(uid: u32, text: &str) -> (KillOnDrop, u16) {
    let script = format!(
        "const s = require('http').createServer((q, r) => r.end({text:?})); \
         s.listen(0, '127.0.0.1', () => console.log(s.address().port));"
    );
    let mut child = as_uid(uid).arg(node_on_path()).args(["-e", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    (KillOnDrop(child), line.trim().parse().unwrap_or_else(|_| panic!("a port, not {line:?}")))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_port_proxy_reaches_only_your_own_ports() {
    if !as_root() {
        return;
    }
    let (home, base, _) = isolated_home(Home::new(), "");
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (ada_id, ada) = user(&s, &admin, "ada").await;
    let (bob_id, bob) = user(&s, &admin, "bob").await;
    open_workbench(&s, &ada).await;
    open_workbench(&s, &bob).await;
    let ada_uid = owner_and_mode(&base.join(&ada_id).join("data")).0;
    let bob_uid = owner_and_mode(&base.join(&bob_id).join("data")).0;

    let (_a, ada_port) = web_server_as(ada_uid, "ada's dev server");
    let (_b, bob_port) = web_server_as(bob_uid, "bob's dev server");
    let get = |cookie: &str, path: String| {
        let (c, cookie) = (s.client(), cookie.to_string());
        async move { c.get_with(&path, &[("cookie", &cookie)]).await }
    };
    for route in ["proxy", "absproxy"] {
        let mine = get(&ada, format!("/{route}/{ada_port}/")).await;
        assert_eq!((mine.status.as_u16(), mine.text().as_str()), (200, "ada's dev server"), "{route}");
        let theirs = get(&bob, format!("/{route}/{ada_port}/")).await;
        assert_eq!(theirs.status, 403, "{route}: bob may not reach ada's port");
        assert!(theirs.text().contains(&format!("Port {ada_port} is not yours")), "{}", theirs.text());
        assert!(!theirs.text().contains("ada's dev server"));
        let own = get(&bob, format!("/{route}/{bob_port}/")).await;
        assert_eq!((own.status.as_u16(), own.text().as_str()), (200, "bob's dev server"));
        assert_eq!(get(&ada, format!("/{route}/{bob_port}/")).await.status, 403);
    }
    // The server's own ports (root's) are nobody's, not even an admin's own to reach.
    let root_port = s.authority().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert_eq!(get(&ada, format!("/proxy/{root_port}/")).await.status, 403);
    assert_eq!(get(&admin, format!("/proxy/{root_port}/")).await.status, 403);
    // Nothing listening: the usual 502.
    let closed = upstream::closed_port().await;
    assert_eq!(get(&ada, format!("/proxy/{closed}/")).await.status, 502);

    // Every refusal is audited, with the user and the port.
    audited(&s, &admin, "proxy.refused", |e| {
        e["username"] == "bob" && e["details"]["port"] == ada_port && e["status"] == "failure"
    })
    .await;
}

#[tokio::test]
async fn an_idle_workspace_stops_and_comes_back_with_its_files() {
    if !as_root() {
        return;
    }
    // 0.05 minutes: three seconds.
    let (home, base, _) = isolated_home(Home::new(), "  limits:\n    idle-timeout-minutes: 0.05\n");
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (ada_id, ada) = user(&s, &admin, "ada").await;
    open_workbench(&s, &ada).await;
    let first = pid_of(&s, "ada");
    let root = base.join(&ada_id);
    let uid = owner_and_mode(&root.join("data")).0;
    // Her work and her settings, written as her.
    let wrote = as_uid(uid)
        .args(["sh", "-c"])
        .arg(format!(
            "echo kept > {0}/workspaces/notes.txt && mkdir -p {0}/data/User && echo '{{\"editor.fontSize\": 17}}' > {0}/data/User/settings.json",
            root.display()
        ))
        .status()
        .unwrap();
    assert!(wrote.success());
    // And a job she left running, detached from everything (as `nohup cmd &` in a terminal).
    let detached = as_uid(uid).args(["setsid", "-f", "sleep", "1000"]).status().unwrap();
    assert!(detached.success());

    eventually("the idle workspace to stop", || !Path::new(&format!("/proc/{first}")).exists()).await;
    eventually("the log to say why", || s.stdout_text().contains("Stopping ada's VS Code: idle")).await;
    // Nothing of hers runs any more.
    eventually("her processes to end", || live_processes_of(uid).is_empty()).await;

    // The next visit starts it again, as her, with her files and settings.
    open_workbench(&s, &ada).await;
    let second = pid_of(&s, "ada");
    assert_ne!(second, first);
    assert_eq!(status_field(second, "Uid").unwrap().split('\t').next().unwrap(), uid.to_string());
    assert_eq!(std::fs::read_to_string(root.join("workspaces/notes.txt")).unwrap(), "kept\n");
    assert!(std::fs::read_to_string(root.join("data/User/settings.json")).unwrap().contains("17"));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn a_build_other_accounts_cannot_reach_is_refused_naming_it() {
    if !as_root() {
        return;
    }
    let (home, _, _) = isolated_home(Home::new(), "");
    // A build inside a private directory (as one provisioned under root's 0700 home would be).
    let private = home.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let build = private.join("vscode");
    std::fs::rename(fake_build(&home), &build).unwrap();
    let out = run(
        &home,
        &["--bind-addr", "127.0.0.1:0"],
        &[ADMIN, ADMIN_PW, ("CODE_SERVER_VSCODE_DIR", build.to_str().unwrap())],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains(&private.display().to_string()) && text.contains("mode 0700"), "{text}");
    assert!(text.contains("--vscode-dir"), "says what to do: {text}");
}

/// Two users side by side in Chromium on the real workbench (tests/browser/isolation.mjs): in
/// A's terminal `id -u` is A's uid and B's file cannot be read; `code-server notes.txt` opens
/// in A's window only; a dev server A starts is A's through the proxy and 403 for B, and B's
/// own works for B. The screenshots are kept in `$CS_LOOK_DIR` when it is set.
#[test]
fn two_users_side_by_side_in_chromium() {
    if !as_root() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (home, base, _) = isolated_home(Home::with_shared_vscode(), "");
    let s = start(&home);
    let (ada_id, bob_id) = rt.block_on(async {
        let admin = sign_in(&s, "boss", "boss-password-1").await;
        let (ada_id, _) = user(&s, &admin, "ada").await;
        let (bob_id, _) = user(&s, &admin, "bob").await;
        (ada_id, bob_id)
    });
    let ports: Vec<u16> = rt.block_on(async { vec![upstream::closed_port().await, upstream::closed_port().await] });
    let shots = shots_dir(home.path().join("shots"));
    let (ok, log) = run_browser(
        browser_script("isolation.mjs")
            .env("CS_URL", &s.address)
            .env("CS_A", "ada")
            .env("CS_A_PASSWORD", "ada-password-1")
            .env("CS_B", "bob")
            .env("CS_B_PASSWORD", "bob-password-1")
            .env("CS_B_SECRET", base.join(&bob_id).join("workspaces/secret.txt"))
            .env("CS_A_FOLDER", base.join(&ada_id).join("workspaces"))
            .env("CS_PORT_A", ports[0].to_string())
            .env("CS_PORT_B", ports[1].to_string())
            .env("CS_SHOTS", &shots),
    );
    assert!(ok, "the browser run failed:\n{log}\nserver stdout:\n{}\nstderr:\n{}", s.stdout_text(), s.stderr_text());
    // The uid A's terminal printed is A's, the owner of A's directories, and not B's.
    let ada_uid = owner_and_mode(&base.join(&ada_id).join("data")).0;
    let bob_uid = owner_and_mode(&base.join(&bob_id).join("data")).0;
    assert!(log.contains(&format!("A: uid={ada_uid}")), "{log}");
    assert_ne!(ada_uid, bob_uid);
    // What A's terminal wrote is A's.
    assert_eq!(owner_and_mode(&base.join(&ada_id).join("workspaces/uid.txt")).0, ada_uid);
    let terminal = std::fs::read_to_string(shots.join("a-terminal.txt")).unwrap();
    assert!(terminal.contains("Permission denied"), "{terminal}");
    for name in ["a-workbench", "b-refused"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}.png looks blank ({} bytes)", png.len());
    }
}

#[tokio::test]
async fn a_process_over_the_memory_limit_is_killed_and_the_workspace_keeps_serving() {
    if !as_root() {
        return;
    }
    let (home, base, _) = isolated_home(Home::new(), "  limits:\n    memory-limit-mb: 300\n");
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (ada_id, ada) = user(&s, &admin, "ada").await;
    open_workbench(&s, &ada).await;
    let server = pid_of(&s, "ada");
    let uid = owner_and_mode(&base.join(&ada_id).join("data")).0;
    // A runaway in her workspace: it grows to about 600 MB and stays.
    let hog = "const a = []; setInterval(() => { if (a.length < 12) a.push(Buffer.alloc(50e6, 1)); }, 100);";
    let mut runaway = KillOnDrop(as_uid(uid).arg(node_on_path()).args(["-e", hog]).spawn().unwrap());
    let pid = runaway.0.id() as i32;

    // Sampled every ten seconds: killed at the first sample over the limit.
    for _ in 0..400 {
        if runaway.0.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(runaway.0.try_wait().unwrap().is_some(), "the runaway was not stopped");
    // Logged (just after the kill), with its command line.
    let logged = || {
        let log = s.stdout_text() + &s.stderr_text();
        log.contains(&format!("killed process {pid}")) && log.contains("Buffer.alloc")
    };
    eventually("the kill to be logged with the command line", logged).await;
    // The workspace keeps serving, the same server.
    assert!(Path::new(&format!("/proc/{server}")).exists(), "the server itself was spared");
    let page = s.client().get_with("/version", &[("cookie", &ada)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    // Audited, with the command line.
    audited(&s, &admin, "memory", |e| {
        e["username"] == "ada"
            && e["details"]["pid"] == pid
            && e["details"]["command"].as_str().is_some_and(|c| c.contains("Buffer.alloc"))
    })
    .await;
    // Her usage says what she uses now, against the limit.
    let usage = s.client().get_with("/api/users/me/usage", &[("cookie", &ada)]).await.json();
    assert_eq!(usage["workspace"], "running");
    assert_eq!(usage["memory"]["limit"], 300_000_000);
    // And /metrics has the totals (no per-user labels).
    let metrics = s.client().get_with("/metrics", &[("cookie", &admin)]).await.text();
    assert!(metrics.contains("code_server_workspaces_running 1"), "{metrics}");
    let memory = metrics.lines().find_map(|l| l.strip_prefix("code_server_workspaces_memory_bytes ")).unwrap();
    assert!(memory.trim().parse::<u64>().unwrap() > 10_000_000, "{memory}");
}

#[tokio::test]
async fn storage_over_the_quota_refuses_the_next_start_until_an_admin_allows_it() {
    if !as_root() {
        return;
    }
    let extra = "  limits:\n    storage-quota-mb: 2\n    idle-timeout-minutes: 0.05\n";
    let (home, base, _) = isolated_home(Home::new(), extra);
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (ada_id, ada) = user(&s, &admin, "ada").await;
    open_workbench(&s, &ada).await;
    let uid = owner_and_mode(&base.join(&ada_id).join("data")).0;
    let made = as_uid(uid)
        .args(["sh", "-c"])
        .arg(format!("head -c 3000000 /dev/urandom > {}/workspaces/big.bin", base.join(&ada_id).display()))
        .status()
        .unwrap();
    assert!(made.success());

    // Stopped when idle, measured as it stops: over the quota, so it does not start again.
    let usage = || {
        let (c, ada) = (s.client(), ada.clone());
        async move { c.get_with("/api/users/me/usage", &[("cookie", &ada)]).await.json() }
    };
    // (The periodic measurement may see it over the quota while it still runs; what counts is
    // that it is over once stopped.)
    let mut over = serde_json::Value::Null;
    for _ in 0..600 {
        over = usage().await;
        if over["over_quota"] == true && over["workspace"] == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(over["over_quota"], true, "{over}");
    assert_eq!(over["workspace"], "stopped", "{over}");
    assert!(over["storage"]["used"].as_u64().unwrap() > over["storage"]["limit"].as_u64().unwrap(), "{over}");
    let refused = s.client().get_with("/version", &[("cookie", &ada), ("accept", "text/html")]).await;
    assert_eq!(refused.status, 507, "{}", refused.text());
    assert!(refused.text().contains("storage quota"), "{}", refused.text());
    let events = audited(&s, &admin, "quota", |e| e["username"] == "ada" && e["status"] == "failure").await;
    assert!(events[0]["details"]["used_bytes"].as_u64().unwrap() > 2_000_000, "{events:?}");

    // The admin's view, and what a user may not do with it.
    let list = s.client().get_with("/api/workspaces", &[("cookie", &admin)]).await;
    assert_eq!(list.status, 200);
    let ada_ws = list.json().as_array().unwrap().iter().find(|w| w["username"] == "ada").cloned().unwrap();
    assert_eq!((ada_ws["state"].as_str(), ada_ws["over_quota"].as_bool()), (Some("stopped"), Some(true)));
    assert_eq!(s.client().get_with("/api/workspaces", &[("cookie", &ada)]).await.status, 403);
    let path = format!("/api/users/{ada_id}/workspace/start");
    assert_eq!(api(&s, "POST", &path, &ada, "").await.status, 403, "not for her to lift");

    // Started anyway by the admin: it runs again.
    assert_eq!(api(&s, "POST", &path, &admin, "").await.status, 204);
    let page = s.client().get_with("/version", &[("cookie", &ada)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    // And the admin can stop it.
    let stop = api(&s, "POST", &format!("/api/users/{ada_id}/workspace/stop"), &admin, "").await;
    assert_eq!(stop.status, 204);
    let usage = usage().await;
    assert_eq!(usage["workspace"], "stopped", "{usage}");
    assert_eq!(api(&s, "POST", "/api/users/nobody/workspace/stop", &admin, "").await.status, 404);
}

/// `--install-extension` for a user from the command line (an admin on the server): it lands in
/// that user's own extensions directory, installed as their uid, and their list shows it; the
/// server's own extensions are untouched.
#[tokio::test]
async fn the_extension_cli_installs_into_a_users_workspace_as_them() {
    if !as_root() {
        return;
    }
    let (home, base, _) = isolated_home(Home::with_shared_vscode(), "");
    // Ada exists (made by the running server's admin), then the server stops.
    let ada_id = {
        let s = start(&home);
        let admin = sign_in(&s, "boss", "boss-password-1").await;
        user(&s, &admin, "ada").await.0
    };
    let packages = home.path().join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    std::fs::set_permissions(&packages, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vsix = packages.join("hello.vsix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_vsix.py");
    assert!(Command::new("python3").arg(script).arg(&vsix).status().unwrap().success());
    std::fs::set_permissions(&vsix, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = run(&home, &["--for-user", "ada", "--install-extension", vsix.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let extensions = base.join(&ada_id).join("extensions");
    let uid = owner_and_mode(&base.join(&ada_id).join("data")).0;
    let installed: Vec<_> = std::fs::read_dir(&extensions)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("code-server-tests.hello-fixture"))
        .collect();
    assert_eq!(installed.len(), 1, "in her extensions directory");
    assert_eq!(owner_and_mode(&installed[0].path()).0, uid, "installed as her");
    let list = run(&home, &["--for-user", "ada", "--list-extensions"], &[]);
    assert!(list.stdout.contains("code-server-tests.hello-fixture"), "{}{}", list.stdout, list.stderr);
    let own = run(&home, &["--list-extensions"], &[]);
    assert!(!own.stdout.contains("hello-fixture"), "the server's own extensions are untouched: {}", own.stdout);

    let nobody = run(&home, &["--for-user", "nobody-here", "--list-extensions"], &[]);
    assert_eq!(nobody.code, Some(1));
    assert!(nobody.stderr.contains("--for-user nobody-here"), "{}", nobody.stderr);
    let alone = run(&home, &["--for-user", "ada"], &[]);
    assert!(alone.stderr.contains("--for-user goes with the extension commands"), "{}", alone.stderr);
}

/// With directory isolation every process is the server's, so whose port it is cannot be
/// told: the port proxy is for admins only, and says why to everyone else.
#[tokio::test]
async fn under_directory_isolation_the_port_proxy_is_for_admins_only() {
    let home = Home::new();
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (_, ada) = user(&s, &admin, "ada").await;
    let up = upstream::Upstream::start().await;
    let path = format!("/proxy/{}/", up.port);
    let refused = s.client().get_with(&path, &[("cookie", &ada)]).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("for admins only"), "{}", refused.text());
    let admins = s.client().get_with(&path, &[("cookie", &admin)]).await;
    assert_eq!(admins.status, 200, "{}", admins.text());
    audited(&s, &admin, "proxy.refused", |e| e["username"] == "ada").await;
}

/// With `system-accounts: true` a user named like a system account runs as that account: its
/// uid, its groups, its home.
#[tokio::test]
async fn a_user_with_a_system_account_runs_as_it() {
    if !as_root() {
        return;
    }
    let name = format!("cs{}", rand_u32() % 1_000_000);
    let made = Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", &name]).status().unwrap();
    assert!(made.success(), "useradd {name}");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("pkill").args(["-KILL", "-u", &self.0]).status();
            let _ = Command::new("userdel").args(["--remove", &self.0]).status();
        }
    }
    let _remove = Remove(name.clone());
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, &name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let (home, _, _) = isolated_home(Home::new(), "    system-accounts: true\n");
    let s = start(&home);
    let admin = sign_in(&s, "boss", "boss-password-1").await;
    let (_, cookie) = user(&s, &admin, &name).await;
    open_workbench(&s, &cookie).await;
    let pid = pid_of(&s, &name);
    assert_eq!(status_field(pid, "Uid").unwrap(), format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(status_field(pid, "Gid").unwrap(), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    assert!(status_field(pid, "Groups").unwrap().split_whitespace().any(|g| g == gid), "its groups");
    assert!(environ(pid).contains(&format!("HOME=/home/{name}")), "its own home: {:?}", environ(pid));
}

/// Two fronts of one deployment (one SQLite file, one base path) under os-user isolation: a
/// job the user left running, detached from their VS Code, is ended when the front that ran
/// their workspace is SIGKILLed and another front takes the workspace over; the new workspace
/// runs as them again, with their files.
#[tokio::test]
async fn a_killed_fronts_user_processes_are_ended_when_another_front_takes_over() {
    if !as_root() {
        return;
    }
    let (home, base, _) = isolated_home(Home::new(), "");
    let users_db = home.data_dir().join("users.db");
    let shared = format!(
        "{}  auth:\n    database:\n      type: sqlite\n      path: {}\n",
        std::fs::read_to_string(home.config_file()).unwrap(),
        users_db.display()
    );
    home.write_config(&shared);
    let mut a = start(&home);
    let other = Home::new();
    other.write_config(&shared);
    let b = start(&other);
    let admin = sign_in(&a, "boss", "boss-password-1").await;
    let (ada_id, ada) = user(&a, &admin, "ada").await;
    open_workbench(&a, &ada).await;
    let first = pid_of(&a, "ada");
    let root = base.join(&ada_id);
    let uid = owner_and_mode(&root.join("data")).0;
    assert!(
        as_uid(uid)
            .args(["sh", "-c"])
            .arg(format!("echo kept > {}/workspaces/notes.txt", root.display()))
            .status()
            .unwrap()
            .success()
    );
    // A job of hers, detached from everything (as `nohup cmd &` in a terminal).
    assert!(as_uid(uid).args(["setsid", "-f", "sleep", "1001"]).status().unwrap().success());
    let job = || {
        live_processes_of(uid)
            .into_iter()
            .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default().starts_with(b"sleep\x001001"))
    };
    eventually("her job to run", || job().is_some()).await;

    a.signal("KILL");
    a.child.wait().unwrap();
    // Through B, the same session: her workspace again, as her, and her job is gone.
    open_workbench(&b, &ada).await;
    let second = pid_of(&b, "ada");
    assert_ne!(second, first);
    assert_eq!(status_field(second, "Uid").unwrap().split('\t').next().unwrap(), uid.to_string());
    eventually("her job to be ended", || job().is_none()).await;
    assert!(
        !Path::new(&format!("/proc/{first}")).exists()
            || status_field(first, "State").is_some_and(|s| s.starts_with('Z'))
    );
    assert_eq!(std::fs::read_to_string(root.join("workspaces/notes.txt")).unwrap(), "kept\n");
}
