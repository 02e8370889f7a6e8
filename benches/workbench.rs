//! Cold workbench load, measured in headless Chromium: from process start to the workbench
//! showing the opened folder, and the bytes transferred on the way.
//!
//! Two setups in the same run, each with a fresh HOME and a fresh browser profile:
//! * ours: `code-server` (this build, release) with password login, VS Code started lazily on
//!   the first page, static files from disk with precompressed siblings;
//! * baseline: VS Code's own server alone (`node out/server-main.js --port ...`, no login),
//!   serving its own files.
//!
//! Run: `cargo bench --bench workbench` (needs the provisioned build, e.g. after scripts/test,
//! and `npm ci --prefix tests/browser`). `RUNS=5` changes the number of loads per setup.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_code-server");

struct Load {
    ms: f64,
    bytes: u64,
    requests: u64,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = std::env::var_os("CODE_SERVER_TEST_VSCODE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap())
            .join(".cache/code-server-rs/vscode")
            .join(code_server::vscode::build::CODE_SERVER_VERSION)
    });
    assert!(
        build.join(".provisioned.json").is_file(),
        "no VS Code build at {}: run scripts/test first",
        build.display()
    );
    let playwright = root.join("tests/browser/node_modules/playwright-core/index.mjs");
    assert!(playwright.is_file(), "run `npm ci --prefix tests/browser` first");
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);

    let mut ours = vec![];
    let mut direct = vec![];
    for i in 0..runs {
        ours.push(load_ours(&build, &playwright));
        direct.push(load_direct(&build, &playwright));
        eprintln!("run {}/{runs} done", i + 1);
    }
    let median = |v: &mut Vec<Load>, f: fn(&Load) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        xs[xs.len() / 2]
    };
    let (om, ob, or) =
        (median(&mut ours, |l| l.ms), median(&mut ours, |l| l.bytes as f64), median(&mut ours, |l| l.requests as f64));
    let (dm, db, dr) = (
        median(&mut direct, |l| l.ms),
        median(&mut direct, |l| l.bytes as f64),
        median(&mut direct, |l| l.requests as f64),
    );
    println!("cold workbench load, median of {runs} (process start -> folder visible in Chromium)");
    println!("  code-server (ours):      {:>7.0} ms  {:>6.2} MB  {:>4} requests", om, ob / 1e6, or);
    println!("  VS Code server alone:    {:>7.0} ms  {:>6.2} MB  {:>4} requests", dm, db / 1e6, dr);
    println!("  ratio ours/alone:        time {:.2}  bytes {:.2}", om / dm, ob / db);
}

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn project(home: &Path) -> PathBuf {
    let p = home.join("project");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("hello.txt"), "hello\n").unwrap();
    p
}

/// Starts `cmd` and waits for a stdout line containing `marker`; returns the child and the line.
fn start(cmd: &mut Command, marker: &str) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let found = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(marker) => break Some(line),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    match found {
        Some(line) => (child, line),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not print {marker:?} in time");
        }
    }
}

fn browse(playwright: &Path, url: &str, password: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workbench.mjs"))
        .env("URL", url)
        .env("FILE", "hello.txt")
        .env("PLAYWRIGHT_CORE", playwright);
    if let Some(p) = password {
        cmd.env("PASSWORD", p);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn load_ours(build: &Path, playwright: &Path) -> Load {
    let home = tempfile::tempdir().unwrap();
    let project = project(home.path());
    std::fs::create_dir_all(home.path().join("config/code-server")).unwrap();
    std::fs::write(home.path().join("config/code-server/config.yaml"), "auth: password\npassword: bench\n").unwrap();
    let t0 = epoch_ms();
    let (child, line) = start(
        Command::new(BIN)
            .args(["--bind-addr", "127.0.0.1:0", "--vscode-dir"])
            .arg(build)
            .arg(&project)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_RUNTIME_DIR", home.path().join("run")),
        "server listening on",
    );
    let url = line.rsplit_once("listening on ").unwrap().1.trim().to_string();
    load_and_stop(playwright, &url, Some("bench"), child, t0)
}

fn load_direct(build: &Path, playwright: &Path) -> Load {
    let home = tempfile::tempdir().unwrap();
    let project = project(home.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let root = build.join("code-server/lib/vscode");
    let t0 = epoch_ms();
    let (child, _) = start(
        Command::new(build.join("node/bin/node"))
            .arg(root.join("out/server-main.js"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--without-connection-token", "--accept-server-license-terms"])
            .arg("--user-data-dir")
            .arg(home.path().join("udd"))
            .arg("--server-data-dir")
            .arg(home.path().join("sdd"))
            .env("HOME", home.path()),
        "Extension host agent listening on",
    );
    let url = format!("http://127.0.0.1:{port}/?folder={}", project.display());
    load_and_stop(playwright, &url, None, child, t0)
}

/// Loads `url` in the browser, stops the server `child` started at `t0` (ms since the epoch),
/// and says how long the workbench took to appear from that start.
fn load_and_stop(playwright: &Path, url: &str, password: Option<&str>, mut child: Child, t0: f64) -> Load {
    let r = browse(playwright, url, password);
    child.kill().unwrap();
    child.wait().unwrap();
    Load {
        ms: r["visibleAt"].as_f64().unwrap() - t0,
        bytes: r["bytes"].as_u64().unwrap(),
        requests: r["requests"].as_u64().unwrap(),
    }
}
