//! The test harness, shared by every test and benchmark: runs the real `code-server` binary in
//! its own temporary HOME/XDG directories, on 127.0.0.1:0 (or a Unix socket), on the stand-in
//! or the real VS Code build, and talks to it with a small hyper client over TCP, Unix sockets
//! or TLS; [`upstream`] is the stand-in dev server behind the port proxy; [`services`] runs real
//! PostgreSQL and Redis servers.

pub mod services;
pub mod upstream;

pub use services::{PrivatePostgres, PrivateRedis, postgres_database, redis_prefix};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::Request;
use hyper::http::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// The binary under test: next to the test's own executable's directory (`target/<profile>/`),
/// as cargo builds it for integration tests and benchmarks.
pub static BIN: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
    let exe = std::env::current_exe().expect("the test's executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("code-server");
    assert!(bin.is_file(), "{} is missing: build the binary first (cargo test/bench does)", bin.display());
    bin
});

/// A private HOME with XDG config and data dirs, removed at drop.
pub struct Home {
    pub dir: tempfile::TempDir,
    /// Its servers run the real, provisioned VS Code build ([`vscode_dir`]), or a copy every
    /// account can read ([`shared_vscode_dir`]), rather than the stand-in ([`stand_in_dir`]).
    vscode: Vscode,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Vscode {
    StandIn,
    Real,
    Shared,
}

impl Default for Home {
    fn default() -> Home {
        Home::new()
    }
}

impl Home {
    /// A home whose servers run the stand-in VS Code: for everything that does not need the
    /// real one, and needs no provisioning.
    pub fn new() -> Home {
        Home { dir: tempfile::tempdir().expect("temp dir"), vscode: Vscode::StandIn }
    }

    /// A home whose servers run the real VS Code build, shared by every test: for what a person
    /// sees of VS Code itself.
    pub fn with_vscode() -> Home {
        Home { vscode: Vscode::Real, ..Home::new() }
    }
    /// A home whose servers run the real build from where other accounts can read it (users'
    /// VS Code servers under os-user isolation).
    pub fn with_shared_vscode() -> Home {
        Home { vscode: Vscode::Shared, ..Home::new() }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_dir(&self) -> PathBuf {
        self.path().join("config/code-server")
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("config.yaml")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data/code-server")
    }
    /// Writes config.yaml before the first start.
    pub fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.config_dir()).unwrap();
        std::fs::write(self.config_file(), text).unwrap();
    }
    /// A command for the binary with only this home's environment and its VS Code build.
    pub fn command(&self) -> Command {
        let build = match self.vscode {
            Vscode::StandIn => stand_in_dir(),
            Vscode::Real => vscode_dir(),
            Vscode::Shared => shared_vscode_dir(),
        };
        let mut c = Command::new(&*BIN);
        c.env_clear()
            .env("CODE_SERVER_VSCODE_DIR", build)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.path().join("run"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(self.path());
        c
    }
}

/// The `node` on PATH (the stand-in VS Code runs on any Node).
pub fn node_on_path() -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file()).expect("node on PATH")
}

/// The repository (this crate is `tests/testkit` in it).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where a browser test keeps its screenshots: `$CS_LOOK_DIR` when set (to look at them
/// afterwards), else `fallback`; made if need be.
pub fn shots_dir(fallback: PathBuf) -> PathBuf {
    let dir = std::env::var_os("CS_LOOK_DIR").map_or(fallback, PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Playwright script of `tests/browser` (`admin.mjs`, ...), to be run with node there; the
/// caller adds its environment and runs it with [`run_browser`].
pub fn browser_script(name: &str) -> Command {
    let dir = repo_dir().join("tests/browser");
    let mut c = Command::new("node");
    c.arg(dir.join(name)).current_dir(dir);
    c
}

/// Runs a [`browser_script`]: whether it succeeded, and everything it printed.
pub fn run_browser(script: &mut Command) -> (bool, String) {
    let output = script.output().expect("run node (tests/browser: npm ci first)");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), log)
}

/// The stand-in VS Code build (`tests/fixtures/fake-vscode` with the `node` on PATH): what tests
/// run on when they do not need the real build, so they need no provisioning. Made once, next to
/// the binary under test, named by its contents (test processes share it; a changed fixture
/// gets a new one), and put in place with a rename so no process sees half of it.
pub fn stand_in_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let src = repo_dir().join("tests/fixtures/fake-vscode");
        let node = node_on_path();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(node.as_os_str().as_encoded_bytes());
        for f in ["product.json", "out/server-main.js", "out/vs/static-probe.js"] {
            digest.update(&std::fs::read(src.join(f)).unwrap());
        }
        let tag: String = digest.finish().as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
        let dir = BIN.parent().unwrap().join(format!("stand-in-vscode-{tag}"));
        if !dir.join("node").exists() {
            let staging = tempfile::Builder::new().prefix(".stand-in").tempdir_in(BIN.parent().unwrap()).unwrap();
            copy_dir(&src, staging.path());
            std::os::unix::fs::symlink(&node, staging.path().join("node")).unwrap();
            // Another process may have put its copy in place first: theirs is the same.
            let staged = staging.keep();
            if std::fs::rename(&staged, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&staged);
            }
        }
        dir
    })
    .clone()
}

/// The VS Code build all tests share, outside the repository: `$CODE_SERVER_TEST_VSCODE_DIR`, or
/// `~/.cache/code-server-rs/vscode/<version>`. Provisioned on first use (the binary locks, so
/// parallel test processes wait for one download); `.ci/run` provisions it up front.
pub fn vscode_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("CODE_SERVER_TEST_VSCODE_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/code-server-rs/vscode")
                .join(code_server::vscode::build::CODE_SERVER_VERSION),
        };
        let scratch = tempfile::tempdir().expect("temp dir");
        let out = Command::new(&*BIN)
            .args(["--provision-vscode", "--vscode-dir"])
            .arg(&dir)
            .env("XDG_CONFIG_HOME", scratch.path())
            .env("XDG_DATA_HOME", scratch.path())
            .output()
            .expect("run the provisioner");
        assert!(
            out.status.success(),
            "provisioning VS Code into {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// The real build where every account can read and run it: [`vscode_dir`] itself if it is
/// there already, else (a provisioned build under root's 0700 home is not) a copy made once per
/// machine in the temp dir, as hard links where the file system allows (files keep their
/// modes), put in place with a rename.
pub fn shared_vscode_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let src = vscode_dir();
        let reachable = src.ancestors().skip(1).all(|d| {
            std::fs::metadata(d)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o001 != 0)
                .unwrap_or(true)
        });
        if reachable {
            return src;
        }
        let dir = std::env::temp_dir()
            .join(format!("code-server-rs-test-vscode-{}", code_server::vscode::build::CODE_SERVER_VERSION));
        if !dir.join(".provisioned.json").exists() {
            let staging = std::env::temp_dir().join(format!(".code-server-rs-test-vscode-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            let copied = Command::new("cp").arg("-al").arg(&src).arg(&staging).status().is_ok_and(|s| s.success())
                || Command::new("cp").arg("-a").arg(&src).arg(&staging).status().is_ok_and(|s| s.success());
            assert!(copied, "copying {} to {}", src.display(), staging.display());
            std::fs::set_permissions(&staging, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            // Another process may have put its copy in place first: theirs is the same.
            if std::fs::rename(&staging, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        dir
    })
    .clone()
}

/// The stand-in VS Code build (`tests/fixtures/fake-vscode`): it answers the routes its
/// source lists; `/crash` makes it exit.
pub const FAKE_COMMIT: &str = "fa4ecafe00000000000000000000000000000000";

/// A copy of the stand-in build in `home`, run with the provisioned Node.
pub fn fake_build(home: &Home) -> PathBuf {
    let dir = home.path().join("fake-vscode");
    let src = repo_dir().join("tests/fixtures/fake-vscode");
    copy_dir(&src, &dir);
    std::os::unix::fs::symlink(node_on_path(), dir.join("node")).unwrap();
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A password server on the stand-in build; returns the server and a logged-in cookie.
pub async fn fake_server(home: &Home, args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    home.write_config("auth: password\npassword: pw\n");
    let build = fake_build(home);
    let mut all = vec!["--bind-addr", "127.0.0.1:0", "--vscode-dir", build.to_str().unwrap()];
    all.extend_from_slice(args);
    let s = Server::start(home, &all, env);
    let cookie = s.client().login("pw").await;
    (s, cookie)
}

/// The output of a run that ended.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion (for --help, --version, errors).
pub fn run(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = home.command().args(args).envs(env.iter().copied()).output().expect("run binary");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running server. SIGTERM at drop.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>/`, `https://...`, or the socket path, from the start-up line.
    pub address: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The threads copying stdout and stderr: a line written just before exiting has landed
    /// once they have read to the end.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts with `args` (add `--bind-addr 127.0.0.1:0` yourself unless using a socket).
    pub fn start(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_command(home.command().args(args).envs(env.iter().copied()))
    }

    pub fn start_command(cmd: &mut Command) -> Server {
        let mut server = Server::spawn_only(cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = server.stdout.lock().unwrap().iter().find_map(|l| listening_address(l));
            if let Some(address) = found {
                server.address = address;
                // The start-up lines that follow "listening" (authentication, certificate,
                // session server) come a moment later: let them land before the test reads.
                let mut seen = server.stdout.lock().unwrap().len();
                let settle = Instant::now() + Duration::from_secs(2);
                while Instant::now() < settle {
                    std::thread::sleep(Duration::from_millis(50));
                    let now = server.stdout.lock().unwrap().len();
                    if now == seen
                        && server.stdout.lock().unwrap().iter().any(|l| l.contains("Session server listening"))
                    {
                        break;
                    }
                    seen = now;
                }
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "code-server exited ({status}) before listening.\nstdout:\n{}\nstderr:\n{}",
                    server.stdout_text(),
                    server.stderr_text()
                );
            }
            assert!(Instant::now() < deadline, "code-server did not start listening in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns with captured output, without waiting for anything (killed at drop).
    pub fn spawn_only(cmd: &mut Command) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn code-server");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for (pipe, sink) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, stdout.clone()),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            }));
        }
        Server { child, address: String::new(), stdout, stderr, readers }
    }

    /// After the process exited: waits (a few seconds at most, as a grandchild may still hold
    /// a pipe open) until everything it wrote has been read.
    fn drain_output(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.readers.iter().all(|r| r.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `127.0.0.1:<port>` for TCP servers.
    pub fn authority(&self) -> String {
        let rest = self.address.split("://").nth(1).expect("a TCP server");
        rest.trim_end_matches('/').to_string()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain_output();
                return status.code();
            }
            assert!(Instant::now() < deadline, "code-server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself (no signal sent); its exit code.
    pub async fn exited(mut self) -> Option<i32> {
        self.wait_exit().await
    }

    /// Waits (30 s at most) for the process to exit and for all it wrote to be read; its exit
    /// code. The output stays readable afterwards.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..3000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && !self.readers.iter().all(|r| r.is_finished()) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("code-server did not exit");
    }

    /// A client for this server (TCP).
    pub fn client(&self) -> Client {
        Client::tcp(&self.authority())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn listening_address(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" server listening on ")?;
    Some(rest.trim().to_string())
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `name=value` of our session cookie from Set-Cookie, if any.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            let first = c.split(';').next()?.to_string();
            (first.starts_with("code-server-session") && !first.ends_with('=')).then_some(first)
        })
    }
}

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Clone)]
pub struct Client {
    pub target: Target,
    /// Host header to send (defaults to the TCP authority, or `localhost`).
    pub host: String,
}

impl Client {
    pub fn tcp(authority: &str) -> Client {
        Client { target: Target::Tcp(authority.to_string()), host: authority.to_string() }
    }
    pub fn unix(path: &Path) -> Client {
        Client { target: Target::Unix(path.to_path_buf()), host: "localhost".into() }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], Body::empty()).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, headers, Body::empty()).await
    }

    /// POSTs a urlencoded form.
    pub async fn post_form(&self, path: &str, form: &str, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.send("POST", path, &h, Body::from(form.to_string())).await
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Resp {
        collect(self.stream(method, path, headers, body).await).await
    }

    /// Sends a request and returns the response as soon as its head arrives, body unread.
    pub async fn stream(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> hyper::Response<hyper::body::Incoming> {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", &self.host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).unwrap();
        match &self.target {
            Target::Tcp(a) => stream_on(tokio::net::TcpStream::connect(a).await.expect("connect"), req).await,
            Target::Unix(p) => stream_on(tokio::net::UnixStream::connect(p).await.expect("connect"), req).await,
        }
    }

    /// Does `cookie` (`name=value`, or empty) authenticate? Asks `POST /mint-key`, which needs
    /// a session and nothing else (it does not start VS Code).
    pub async fn authenticated(&self, cookie: &str) -> bool {
        let headers: &[(&str, &str)] = if cookie.is_empty() { &[] } else { &[("cookie", cookie)] };
        let r = self.send("POST", "/mint-key", headers, Body::empty()).await;
        match r.status {
            StatusCode::OK => {
                assert_eq!(r.body.len(), 32);
                true
            }
            StatusCode::UNAUTHORIZED => false,
            other => panic!("unexpected {other} from /mint-key: {}", r.text()),
        }
    }

    /// Logs in with `password`; returns the `name=value` cookie.
    pub async fn login(&self, password: &str) -> String {
        let r = self.post_form("/login", &format!("password={password}"), &[]).await;
        assert_eq!(r.status, StatusCode::FOUND, "login failed: {}", r.text());
        r.session_cookie().expect("a session cookie")
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send_on<S>(stream: S, req: Request<Body>) -> Resp
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    collect(stream_on(stream, req).await).await
}

/// One HTTP/1.1 request on a fresh connection; the body is left to the caller.
pub async fn stream_on<S>(stream: S, req: Request<Body>) -> hyper::Response<hyper::body::Incoming>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("request")
}

pub async fn collect(res: hyper::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX).await.expect("body").to_vec();
    Resp { status: parts.status, headers: parts.headers, body }
}

/// Parses the `password:` line of a generated config file.
pub fn config_password(home: &Home) -> String {
    let text = std::fs::read_to_string(home.config_file()).unwrap();
    text.lines().find_map(|l| l.strip_prefix("password: ")).expect("a password line").to_string()
}

/// Polls `cond` until it holds, without blocking the runtime (for async tests).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Process groups and working directories of everything alive, from /proc.
pub fn processes() -> Vec<(u32, i32, Option<PathBuf>)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may contain spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let pgrp = fields.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
        out.push((pid, pgrp, std::fs::read_link(e.path().join("cwd")).ok()));
    }
    out
}

/// The pid of the VS Code server from our start-up log.
pub fn vscode_pid(s: &Server) -> i32 {
    let out = s.stdout_text();
    let line = out.lines().rfind(|l| l.contains("Starting VS Code")).expect("VS Code was started");
    line.rsplit_once("(pid ").unwrap().1.trim_end_matches(')').parse().unwrap()
}

/// Waits until no process is left in `pgid` or working in `cwd`.
pub async fn assert_no_orphans(pgid: i32, cwd: Option<&Path>) {
    eventually("VS Code's processes to be gone", || {
        !processes().iter().any(|(_, g, dir)| *g == pgid || (cwd.is_some() && dir.as_deref() == cwd))
    })
    .await;
}

/// Trusts exactly one certificate (the one the server made or was given).
#[derive(Debug)]
pub struct Pinned(CertificateDer<'static>, Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unexpected certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

pub async fn tls_connect(
    authority: &str,
    cert: &std::path::Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let der = CertificateDer::from_pem_file(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(der, provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Opens a WebSocket through our server; `Err(status)` when the handshake is refused.
pub async fn ws_connect(
    s: &impl Served,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, hyper::http::Response<Option<Vec<u8>>>),
    StatusCode,
> {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}{path}",
        s.authority()
    ))
    .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(hyper::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let stream = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Ok(pair) => Ok(pair),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// A server a test talks to: the binary's process or the application in process.
pub trait Served {
    /// `127.0.0.1:<port>`.
    fn authority(&self) -> String;
}

impl Served for Server {
    fn authority(&self) -> String {
        Server::authority(self)
    }
}

impl Served for InProcess {
    fn authority(&self) -> String {
        InProcess::authority(self)
    }
}

/// The application started in the test's own runtime (no process of its own), on the stand-in
/// VS Code build, on 127.0.0.1:0, with the home's environment: for routes that need neither
/// VS Code nor the binary's process (its log lines, signals, exit codes).
pub struct InProcess {
    /// `http://127.0.0.1:<port>/`.
    pub address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<code_server::app::Stop>>,
}

impl InProcess {
    /// Serves the configuration `args` and the home's `config.yaml` (and `env` on top of the
    /// home's own variables) give.
    pub async fn start(home: &Home, args: &[&str], env: &[(&str, &str)]) -> InProcess {
        use code_server::cli::{self, Command};
        let mut environment: code_server::environment::Environment = [
            ("HOME", home.path().to_path_buf()),
            ("XDG_CONFIG_HOME", home.path().join("config")),
            ("XDG_DATA_HOME", home.path().join("data")),
            ("XDG_RUNTIME_DIR", home.path().join("run")),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.display().to_string()))
        .collect();
        for (k, v) in env {
            environment.set(k, v);
        }
        let mut argv: Vec<String> = vec!["--bind-addr".into(), "127.0.0.1:0".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let loaded = cli::load(&argv, &environment, home.path()).expect("a valid configuration");
        let Command::Serve(config) = loaded.command else { panic!("{argv:?} does not serve") };
        for dir in [&config.user_data_dir, &config.paths.data, &config.paths.runtime] {
            code_server::private_dir::ensure(dir).unwrap();
        }
        let build = code_server::vscode::build::Build::locate(&stand_in_dir(), None).expect("the stand-in build");
        let state = match config.deployment.multi() {
            Some(multi) => {
                let accounts = code_server::multiuser::open(multi).await.expect("the user database");
                accounts
                    .ensure_first_admin(multi.first_admin.as_ref(), &config.paths.data)
                    .await
                    .expect("the first admin");
                code_server::app::AppState::multi(*config, build, accounts).expect("the application")
            }
            None => code_server::app::AppState::with_file_store(*config, build).expect("the application"),
        };
        let listener = code_server::server::Listener::bind(&state.config.listen).await.expect("a port");
        let address = format!("http://{}/", listener.local_addr().expect("a TCP listener"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(code_server::app::run(state, listener, None, async {
            let _ = rx.await;
        }));
        InProcess { address, stop: Some(tx), task: Some(task) }
    }

    /// `127.0.0.1:<port>`.
    pub fn authority(&self) -> String {
        self.address.trim_start_matches("http://").trim_end_matches('/').to_string()
    }

    pub fn client(&self) -> Client {
        Client::tcp(&self.authority())
    }

    /// Shuts down as a signal would, and waits for the whole shutdown.
    pub async fn stop(mut self) -> code_server::app::Stop {
        let _ = self.stop.take().expect("running").send(());
        self.task.take().expect("running").await.expect("the server task")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Multi-user mode: signs `username` in through the login form; their session cookie.
pub async fn sign_in(s: &Server, username: &str, password: &str) -> String {
    let res = s.client().post_form("/login", &format!("username={username}&password={password}"), &[]).await;
    assert_eq!(res.status, 302, "{username} signs in: {}", res.text());
    res.session_cookie().expect("a session cookie")
}

/// Multi-user mode: a JSON API request with `cookie`, from this server's own origin.
pub async fn api(s: &Server, method: &str, path: &str, cookie: &str, body: &str) -> Resp {
    let origin = format!("http://{}", s.authority());
    s.client()
        .send(
            method,
            path,
            &[("cookie", cookie), ("origin", &origin), ("content-type", "application/json")],
            Body::from(body.to_string()),
        )
        .await
}

/// A raw WebSocket opening handshake on a fresh blocking connection: the response head as
/// text, and the connection (its bytes are the server's business after a 101).
pub fn ws_handshake(authority: &str, path: &str, extra: &[(&str, &str)]) -> (String, std::net::TcpStream) {
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if std::io::Read::read(&mut s, &mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), s)
}
