//! Real PostgreSQL and Redis servers for the tests, on 127.0.0.1.
//!
//! Tests ask for a place of their own on a server shared by the run: [`postgres_database`] makes
//! a fresh database (`t_<random>`) and [`redis_prefix`] a fresh key prefix (`t<random>:`).
//! nextest runs every test in a process of its own, so "shared by the run" cannot be a global of
//! the test process:
//!
//! * `scripts/test` starts one PostgreSQL and one Redis for the whole run (the `test-services`
//!   binary of this crate) and exports [`POSTGRES_URL_VAR`] and [`REDIS_URL_VAR`]; every test
//!   process uses those servers.
//! * Without them (a plain `cargo nextest run`), the first test of a process that needs a server
//!   starts a private one for that process, and it stops when the process ends.
//!
//! A test that stops and restarts a server (an outage) owns one: [`PrivatePostgres`],
//! [`PrivateRedis`].
//!
//! Each server runs under a small `sh` supervisor ([`SUPERVISOR`]) in its own process group,
//! whose standard input is a pipe from the process that owns the server. The supervisor starts
//! and stops the server when told to, and when the pipe closes (the owner dropped it, exited,
//! crashed or was killed, even with SIGKILL) it stops the server and removes its directory. So no
//! server outlives its owner, whichever way the owner ends, and no directory is left behind. (A
//! parent-death signal would do less: it follows the *thread* that spawned the child, and tests
//! run on threads that end before their process does.)

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

/// The admin URL of a PostgreSQL server the test processes share
/// (`postgres://postgres@127.0.0.1:PORT/postgres`, trust authentication); set by `scripts/test`.
pub const POSTGRES_URL_VAR: &str = "CODE_SERVER_TEST_POSTGRES_URL";
/// The URL of a Redis server the test processes share (`redis://127.0.0.1:PORT`).
pub const REDIS_URL_VAR: &str = "CODE_SERVER_TEST_REDIS_URL";

/// How long a server may take to accept connections (a loaded two-core machine is slow).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a server may take to stop before its supervisor's process group is killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A fresh, empty database on the run's PostgreSQL server; its URL
/// (`postgres://postgres@127.0.0.1:PORT/t_<random>`).
pub async fn postgres_database() -> String {
    static PRIVATE: tokio::sync::OnceCell<PrivatePostgres> = tokio::sync::OnceCell::const_new();
    let admin = match shared_url(POSTGRES_URL_VAR) {
        Some(url) => url,
        None => PRIVATE.get_or_init(PrivatePostgres::start).await.admin_url(),
    };
    create_database(&admin).await
}

/// The run's Redis server and a key prefix no other test uses: `(redis://127.0.0.1:PORT,
/// t<random>:)`.
pub fn redis_prefix() -> (String, String) {
    static PRIVATE: std::sync::OnceLock<PrivateRedis> = std::sync::OnceLock::new();
    let url = match shared_url(REDIS_URL_VAR) {
        Some(url) => url,
        None => PRIVATE.get_or_init(|| PrivateRedis::start_blocking().unwrap_or_else(|e| panic!("{e}"))).url(),
    };
    (url, format!("t{}:", code_server::util::random_hex(8)))
}

fn shared_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

/// Creates `t_<random>` on the server `admin_url` names (a URL to a database of it with the right
/// to create databases); the new database's URL.
pub async fn create_database(admin_url: &str) -> String {
    let name = format!("t_{}", code_server::util::random_hex(8));
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {}: {e}", redact(admin_url)));
    // The name is ours: lower-case hex after `t_`, nothing to quote.
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|e| panic!("creating database {name} on {}: {e}", redact(admin_url)));
    let _ = conn.close().await;
    let mut url = url::Url::parse(admin_url).expect("a PostgreSQL URL");
    url.set_path(&name);
    url.to_string()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(an unreadable URL)".to_string(),
    }
}

/// A PostgreSQL server a test owns: it may stop it and start it again, on the same port with the
/// same data, to see what the product does while its database is away. Removed at drop.
pub struct PrivatePostgres {
    supervisor: Arc<Mutex<Supervisor>>,
    port: u16,
    dir: PathBuf,
}

impl PrivatePostgres {
    /// A new cluster (`initdb`) served on a free port of 127.0.0.1, accepting connections. Panics
    /// with the reason (naming the binary when PostgreSQL is not installed).
    pub async fn start() -> PrivatePostgres {
        PrivatePostgres::try_start().await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_start() -> Result<PrivatePostgres, String> {
        let (supervisor, dir) = blocking(prepare_postgres).await?;
        let supervisor = Arc::new(Mutex::new(supervisor));
        let mut last = String::new();
        // The port is free when we pick it, but something may take it before the server binds.
        for _ in 0..3 {
            let port = free_port()?;
            let mut pg = PrivatePostgres { supervisor: supervisor.clone(), port, dir: dir.clone() };
            match pg.run().await {
                Ok(()) => return Ok(pg),
                Err(Failure { port_taken: true, message }) => last = message,
                Err(Failure { message, .. }) => return Err(message),
            }
            // Forget the port; the supervisor (and the data) stay.
            pg.port = 0;
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL to the `postgres` database (trust authentication, no password).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh database on this server; its URL.
    pub async fn create_database(&self) -> String {
        create_database(&self.admin_url()).await
    }

    /// Stops the server (a fast shutdown: connections are cut); its data stay.
    pub async fn stop(&mut self) {
        let supervisor = self.supervisor.clone();
        blocking(move || supervisor.lock().unwrap().stop()).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the stopped server again, on the same port with the same data, and waits until it
    /// accepts connections.
    pub async fn start_again(&mut self) {
        if let Err(e) = self.run().await {
            panic!("{}", e.message);
        }
    }

    /// Starts the server on `self.port` and waits until it answers a query.
    async fn run(&mut self) -> Result<(), Failure> {
        let supervisor = self.supervisor.clone();
        let port = self.port;
        let log_from = blocking(move || supervisor.lock().unwrap().start(&["-p", &port.to_string()]))
            .await
            .map_err(Failure::other)?;
        let url = self.admin_url();
        let deadline = Instant::now() + READY_WITHIN;
        let mut last_error = String::from("no answer yet");
        loop {
            if self.supervisor.lock().unwrap().server_exited() {
                return Err(self.failure(log_from, "exited while starting"));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                match ping_postgres(&url).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = e,
                }
            }
            if Instant::now() > deadline {
                return Err(self.failure(log_from, &format!("did not accept connections ({last_error})")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failure(&self, log_from: u64, what: &str) -> Failure {
        let log = self.supervisor.lock().unwrap().log_since(log_from);
        Failure {
            port_taken: log.contains("Address already in use"),
            message: format!("PostgreSQL (data in {}, port {}) {what}; its log:\n{log}", self.dir.display(), self.port),
        }
    }
}

async fn ping_postgres(url: &str) -> Result<(), String> {
    let mut conn = sqlx::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
    let result = conn.execute("SELECT 1").await.map(drop).map_err(|e| e.to_string());
    let _ = conn.close().await;
    result
}

/// Makes a cluster in a new directory and the supervisor that will serve it.
fn prepare_postgres() -> Result<(Supervisor, PathBuf), String> {
    let bin = postgres_bin_dir()?;
    // initdb and postgres refuse to run as root: then they run as the `postgres` user.
    let user = if running_as_root() {
        Some(os_user("postgres").map_err(|e| format!("running as root, PostgreSQL needs its own OS user: {e}"))?)
    } else {
        None
    };
    let dir = private_dir("code-server-test-pg-", user)?;
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["--auth=trust", "-U", "postgres", "--no-sync", "--locale=C", "--encoding=UTF8"])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C");
    if let Some((uid, gid)) = user {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb.output().map_err(|e| format!("running {}: {e}", bin.join("initdb").display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "{} failed ({}):\n{}{}",
            bin.join("initdb").display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut server: Vec<OsString> = vec![bin.join("postgres").into(), "-D".into(), data.into(), "-k".into()];
    server.push(dir.clone().into());
    for setting in [
        "listen_addresses=127.0.0.1",
        // Durability buys nothing in a throw-away cluster.
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        // Several clusters may run at once (one per test process without shared servers).
        "shared_buffers=16MB",
        "max_connections=300",
        "log_min_messages=warning",
    ] {
        server.push("-c".into());
        server.push(setting.into());
    }
    let supervisor = Supervisor::spawn(&dir, user, "INT", &server)?;
    Ok((supervisor, dir))
}

/// Where `initdb` and `postgres` are: the newest `/usr/lib/postgresql/<version>/bin` (Debian),
/// else the directory on PATH that has both.
fn postgres_bin_dir() -> Result<PathBuf, String> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| has_both(d)).ok_or_else(|| {
        "PostgreSQL's `initdb` and `postgres` binaries were found neither in /usr/lib/postgresql/*/bin nor on \
         PATH: install PostgreSQL (Debian: `apt-get install postgresql`, as .ci/run does)"
            .to_string()
    })
}

/// A Redis server a test owns: it may stop it and start it again, on the same port with the
/// same data (saved at the stop), to see what the product does while Redis is away. Removed at
/// drop.
pub struct PrivateRedis {
    supervisor: Arc<Mutex<Supervisor>>,
    port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    /// A new, empty Redis on a free port of 127.0.0.1, answering PING. Panics with the reason
    /// (naming the binary when Redis is not installed).
    pub async fn start() -> PrivateRedis {
        blocking(PrivateRedis::start_blocking).await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn start_blocking() -> Result<PrivateRedis, String> {
        let bin = redis_bin()?;
        let dir = private_dir("code-server-test-redis-", None)?;
        let server: Vec<OsString> = vec![
            bin.into(),
            "--bind".into(),
            "127.0.0.1".into(),
            // No snapshots of its own and no append-only file: only the one [`stop`] asks for.
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.clone().into(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            "".into(),
        ];
        let supervisor = Arc::new(Mutex::new(Supervisor::spawn(&dir, None, "TERM", &server)?));
        let mut last = String::new();
        for _ in 0..3 {
            let mut redis = PrivateRedis { supervisor: supervisor.clone(), port: free_port()?, dir: dir.clone() };
            match redis.run() {
                Ok(()) => return Ok(redis),
                Err(Failure { port_taken: true, message }) => last = message,
                Err(Failure { message, .. }) => return Err(message),
            }
            redis.port = 0;
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Saves the data set and stops the server.
    pub async fn stop(&mut self) {
        let port = self.port;
        let supervisor = self.supervisor.clone();
        blocking(move || {
            redis_command(port, "SAVE").and_then(|reply| match reply.as_str() {
                "+OK" => Ok(()),
                other => Err(format!("Redis on port {port} answered SAVE with {other}")),
            })?;
            supervisor.lock().unwrap().stop()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the stopped server again, on the same port with the data saved at the stop, and
    /// waits until it answers PING.
    pub async fn start_again(&mut self) {
        let supervisor = self.supervisor.clone();
        let (port, dir) = (self.port, self.dir.clone());
        // A second handle on the same supervisor, for the blocking thread.
        blocking(move || PrivateRedis { supervisor, port, dir }.run().map_err(|f| f.message))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server on `self.port` and waits until it answers PING.
    fn run(&self) -> Result<(), Failure> {
        let log_from =
            self.supervisor.lock().unwrap().start(&["--port", &self.port.to_string()]).map_err(Failure::other)?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if self.supervisor.lock().unwrap().server_exited() {
                return Err(self.failure(log_from, "exited while starting"));
            }
            let last_error = match redis_command(self.port, "PING") {
                Ok(reply) if reply == "+PONG" => return Ok(()),
                // `-LOADING ...` while it reads its data back.
                Ok(reply) => reply,
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(self.failure(log_from, &format!("did not answer PING ({last_error})")));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn failure(&self, log_from: u64, what: &str) -> Failure {
        let log = self.supervisor.lock().unwrap().log_since(log_from);
        Failure {
            port_taken: log.contains("Address already in use"),
            message: format!("Redis (in {}, port {}) {what}; its log:\n{log}", self.dir.display(), self.port),
        }
    }
}

/// `redis-server` on PATH, or in /usr/bin or /usr/local/bin.
fn redis_bin() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "`redis-server` was found neither on PATH nor in /usr/bin or /usr/local/bin: install Redis \
             (Debian: `apt-get install redis-server`, as .ci/run does)"
                .to_string()
        })
}

/// Sends one inline command to the Redis on `port` and reads the first line of its reply.
fn redis_command(port: u16, command: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&(std::net::Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    stream.write_all(format!("{command}\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_string())
}

/// Why a server did not start; `port_taken` when another process had its port.
struct Failure {
    port_taken: bool,
    message: String,
}

impl Failure {
    fn other(message: String) -> Failure {
        Failure { port_taken: false, message }
    }
}

/// The supervisor: `$1` the directory to remove at the end, `$2` the signal that stops the
/// server, `$3` its log file, then the server's command. It reads commands on its standard
/// input: `start ARGS` (the server with ARGS appended; answers `started PID`) and `stop` (waits
/// for the server to exit; answers `stopped`). At end of input it stops the server and removes
/// the directory.
const SUPERVISOR: &str = r#"
set -f
dir=$1 sig=$2 log=$3
shift 3
pid=
stop_server() {
  if [ -n "$pid" ]; then
    kill -s "$sig" "$pid" 2>/dev/null
    wait "$pid"
    pid=
  fi
}
while read -r cmd args; do
  case $cmd in
    start) stop_server; "$@" $args </dev/null >>"$log" 2>&1 & pid=$!; echo "started $pid" ;;
    stop) stop_server; echo stopped ;;
  esac
done
stop_server
rm -rf "$dir"
"#;

struct Supervisor {
    child: Child,
    /// Its standard input: closing it stops the server and removes the directory.
    commands: Option<ChildStdin>,
    replies: BufReader<ChildStdout>,
    log: PathBuf,
    /// The server's process while it runs.
    server: Option<u32>,
}

impl Supervisor {
    /// Starts the supervisor of the server `command` (run as `user`, or as we are), which keeps
    /// its log and data in `dir` and removes `dir` when it ends.
    fn spawn(
        dir: &Path,
        user: Option<(u32, u32)>,
        stop_signal: &str,
        command: &[OsString],
    ) -> Result<Supervisor, String> {
        let log = dir.join("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(SUPERVISOR)
            .arg("test-service-supervisor")
            .arg(dir)
            .arg(stop_signal)
            .arg(&log)
            .args(command)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Not the test's own output: nextest would wait for it to close.
            .stderr(log_file)
            // Out of the test's process group: a signal to the group (Ctrl-C, nextest's timeout)
            // ends the test, and the closed pipe then ends the server in order.
            .process_group(0);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", log.display()))?;
            sh.uid(uid).gid(gid);
        }
        let mut child = sh.spawn().map_err(|e| format!("starting /bin/sh: {e}"))?;
        let commands = child.stdin.take();
        let replies = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Supervisor { child, commands, replies, log, server: None })
    }

    /// Starts the server with `args` appended; the length of the log before it, to read what
    /// this start logged.
    fn start(&mut self, args: &[&str]) -> Result<u64, String> {
        let log_from = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let reply = self.ask(&format!("start {}", args.join(" ")))?;
        let pid = reply.strip_prefix("started ").and_then(|p| p.parse().ok());
        self.server = Some(pid.ok_or_else(|| format!("the supervisor answered {reply:?} to start"))?);
        Ok(log_from)
    }

    /// Stops the server and waits until it has exited.
    fn stop(&mut self) -> Result<(), String> {
        let reply = self.ask("stop")?;
        self.server = None;
        if reply == "stopped" { Ok(()) } else { Err(format!("the supervisor answered {reply:?} to stop")) }
    }

    fn ask(&mut self, command: &str) -> Result<String, String> {
        let commands = self.commands.as_mut().expect("the supervisor's input is open");
        writeln!(commands, "{command}").map_err(|e| format!("the server's supervisor is gone: {e}"))?;
        let mut reply = String::new();
        match self.replies.read_line(&mut reply) {
            Ok(n) if n > 0 => Ok(reply.trim_end().to_string()),
            Ok(_) => Err(format!("the server's supervisor exited; the log:\n{}", self.log_since(0))),
            Err(e) => Err(format!("reading from the server's supervisor: {e}")),
        }
    }

    /// Whether the server it started has exited (it stays a zombie until the supervisor waits).
    fn server_exited(&self) -> bool {
        let Some(pid) = self.server else { return true };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // pid (comm) state ...: the state follows the last ')'.
            Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    /// The log from byte `from` on.
    fn log_since(&self, from: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            use std::io::Seek;
            let _ = f.seek(std::io::SeekFrom::Start(from));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Supervisor {
    /// Closes its input (it stops the server and removes the directory) and waits for it, for
    /// [`STOP_WITHIN`] at most; then kills its process group, server included.
    fn drop(&mut self) {
        drop(self.commands.take());
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// A new directory for a server's data, log and socket, owned by `user` when given; every
/// directory above it must let that user through (the system temporary directory usually does,
/// a home directory may not: then `/tmp`).
fn private_dir(prefix: &str, user: Option<(u32, u32)>) -> Result<PathBuf, String> {
    let mut base = std::env::temp_dir();
    if let Some((uid, gid)) = user
        && !traversable(&base, uid, gid)
    {
        base = PathBuf::from("/tmp");
        if !traversable(&base, uid, gid) {
            return Err(format!("no temporary directory that uid {uid} can reach (tried $TMPDIR and /tmp)"));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| format!("creating a directory in {}: {e}", base.display()))?
        // Its supervisor removes it, even when this process is killed.
        .keep();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(dir)
}

/// Whether `uid` (in group `gid`) may pass through `dir` and every directory above it.
fn traversable(dir: &Path, uid: u32, gid: u32) -> bool {
    dir.ancestors().all(|d| match std::fs::metadata(d) {
        Ok(m) => {
            let mode = m.mode();
            (m.uid() == uid && mode & 0o100 != 0) || (m.gid() == gid && mode & 0o010 != 0) || mode & 0o001 != 0
        }
        Err(_) => false,
    })
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `(uid, gid)` of the OS user `name`, from /etc/passwd.
fn os_user(name: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("reading /etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| format!("there is no `{name}` user in /etc/passwd"))
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("binding 127.0.0.1:0: {e}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking task")
}
