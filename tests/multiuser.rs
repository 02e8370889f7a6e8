//! Multi-user mode (MULTIUSER.md, issue 13) on the embedded default: users, sessions and the
//! audit log in SQLite in the data dir, the audit also in files there. Configuration, the first
//! admin, the login page, the limiter per username, sessions and what revokes them, the API's
//! authorization and validation, the audit log, secrets, and the account actions of the command
//! line. In the test's own runtime where only the routes matter; against the real binary where
//! its log, exit status, signals, child process or a second process on the same database do.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use hyper::http::StatusCode;
use serde_json::{Value, json};
use testkit::*;

const ADMIN_PW: &str = "Admin-pass-0001";
const ADMIN_ENV: &[(&str, &str)] = &[("ADMIN_USERNAME", "admin"), ("ADMIN_PASSWORD", ADMIN_PW)];
/// code-server's hidden username field (for password managers), which single-user mode keeps.
const HIDDEN_USERNAME: &str = r#"<input class="user" type="text" autocomplete="username" name="username" hidden />"#;
const INCORRECT: &str = "Incorrect username or password";
const DISABLED: &str = "This account is disabled";

// ---- harness ----

/// A multi-user server in the test's own runtime, its first admin from the environment.
async fn multi(args: &[&str]) -> (Home, InProcess) {
    let home = Home::new();
    let s = multi_in(&home, args, ADMIN_ENV).await;
    (home, s)
}

/// These tests are about accounts: every user's VS Code runs as the server's uid, under the
/// home's data dir (tests/isolation.rs has os-user isolation).
const DIRECTORY_ISOLATION: &str = "multi-user:\n  isolation:\n    strategy: directory\n";

fn directory_isolation(home: &Home) {
    if !home.config_file().exists() {
        home.write_config(DIRECTORY_ISOLATION);
    }
}

async fn multi_in(home: &Home, args: &[&str], env: &[(&str, &str)]) -> InProcess {
    directory_isolation(home);
    let mut all = vec!["--deployment-mode", "multi"];
    all.extend_from_slice(args);
    InProcess::start(home, &all, env).await
}

/// A multi-user server as a process of its own.
fn multi_binary(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Server {
    directory_isolation(home);
    let mut all = vec!["--bind-addr", "127.0.0.1:0", "--deployment-mode", "multi"];
    all.extend_from_slice(args);
    Server::start(home, &all, env)
}

/// Runs the binary to completion with `stdin` on a pipe (how a script gives a password).
fn cli(home: &Home, args: &[&str], stdin: &str) -> Output {
    let mut child = home
        .command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let mut pipe = child.stdin.take().unwrap();
    // A process that exits without reading is not our failure here.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    let out = child.wait_with_output().expect("the binary's output");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`cli`] that must succeed; its standard output.
fn cli_ok(home: &Home, args: &[&str], stdin: &str) -> String {
    let out = cli(home, args, stdin);
    assert_eq!(out.code, Some(0), "{args:?}:\n{}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// [`cli`] that must fail with status 1; its whole output.
fn cli_fails(home: &Home, args: &[&str], stdin: &str) -> String {
    let out = cli(home, args, stdin);
    assert_eq!(out.code, Some(1), "{args:?}:\n{}\n{}", out.stdout, out.stderr);
    format!("{}\n{}", out.stdout, out.stderr)
}

/// Polls `probe` until it gives a value, without blocking the runtime.
async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..2000 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Who<'a> {
    Nobody,
    /// The session cookie (`name=value`); state-changing requests carry our own `Origin`.
    Cookie(&'a str),
    /// A personal API token (`cs_...`), as `Authorization: Bearer`.
    Token(&'a str),
}

/// One response as received: what was asked, its headers (less the login's Set-Cookie, the
/// one place a session secret belongs) and its body.
struct Seen {
    what: String,
    headers: String,
    body: String,
}

/// A client for our routes that remembers every response (for the secrets test).
struct Api {
    client: Client,
    /// `http://127.0.0.1:<port>`: this server's origin.
    origin: String,
    seen: Mutex<Vec<Seen>>,
}

impl Api {
    fn new(s: &impl Served) -> Api {
        let authority = s.authority();
        Api { client: Client::tcp(&authority), origin: format!("http://{authority}"), seen: Mutex::default() }
    }

    /// A request with exactly these headers.
    async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
        let r = self.client.send(method, path, headers, body.into()).await;
        let what = format!("{method} {path}");
        let headers = r
            .headers
            .iter()
            .filter(|(k, _)| !(what == "POST /login" && k.as_str() == "set-cookie"))
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        self.seen.lock().unwrap().push(Seen { what, headers, body: r.text() });
        r
    }

    fn auth_headers(&self, method: &str, who: Who<'_>) -> Vec<(String, String)> {
        match who {
            Who::Nobody => vec![],
            Who::Cookie(cookie) => {
                let mut h = vec![("cookie".to_string(), cookie.to_string())];
                if !matches!(method, "GET" | "HEAD") {
                    h.push(("origin".to_string(), self.origin.clone()));
                }
                h
            }
            Who::Token(token) => vec![("authorization".to_string(), format!("Bearer {token}"))],
        }
    }

    /// A request as `who`, with a JSON body when given.
    async fn call(&self, method: &str, path: &str, who: Who<'_>, body: Option<Value>) -> Resp {
        let mut owned = self.auth_headers(method, who);
        if body.is_some() {
            owned.push(("content-type".to_string(), "application/json".to_string()));
        }
        let headers: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.raw(method, path, &headers, body).await
    }

    async fn get(&self, path: &str, who: Who<'_>) -> Resp {
        self.call("GET", path, who, None).await
    }

    /// A call that must answer `status`; its JSON (`Null` for an empty body).
    async fn expect(&self, status: StatusCode, method: &str, path: &str, who: Who<'_>, body: Option<Value>) -> Value {
        let r = self.call(method, path, who, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        if r.body.is_empty() { Value::Null } else { r.json() }
    }

    /// A call that must succeed (200, 201 or 204); its JSON.
    async fn ok(&self, method: &str, path: &str, who: Who<'_>, body: Option<Value>) -> Value {
        let r = self.call(method, path, who, body).await;
        assert!(r.status.is_success(), "{method} {path}: {} {}", r.status, r.text());
        if r.body.is_empty() { Value::Null } else { r.json() }
    }

    /// A call that must fail with `status`; its `error` text.
    async fn error(&self, status: StatusCode, method: &str, path: &str, who: Who<'_>, body: Option<Value>) -> String {
        let v = self.expect(status, method, path, who, body).await;
        v["error"].as_str().unwrap_or_else(|| panic!("no error text: {v}")).to_string()
    }

    /// The login form.
    async fn login(&self, username: &str, password: &str, headers: &[(&str, &str)]) -> Resp {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("username", username)
            .append_pair("password", password)
            .finish();
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.raw("POST", "/login", &h, form).await
    }

    /// Signs in; the session cookie (`name=value`).
    async fn sign_in(&self, username: &str, password: &str) -> String {
        let r = self.login(username, password, &[]).await;
        assert_eq!(r.status, StatusCode::FOUND, "{username} cannot sign in: {}", login_error(&r).unwrap_or_default());
        r.session_cookie().expect("a session cookie")
    }

    /// Whose live session or token this is (`None`: refused with a 401).
    async fn whoami(&self, who: Who<'_>) -> Option<String> {
        let r = self.get("/api/users/me", who).await;
        match r.status {
            StatusCode::OK => Some(r.json()["username"].as_str().expect("a username").to_string()),
            StatusCode::UNAUTHORIZED => None,
            other => panic!("unexpected {other} from /api/users/me: {}", r.text()),
        }
    }

    /// An account made by `admin`; its JSON (with `id`).
    async fn create_user(&self, admin: Who<'_>, username: &str, password: &str, role: &str) -> Value {
        let body = json!({"username": username, "password": password, "role": role});
        self.expect(StatusCode::CREATED, "POST", "/api/users", admin, Some(body)).await
    }

    /// Every user an admin can list.
    async fn usernames(&self, admin: Who<'_>) -> Vec<String> {
        let page = self.ok("GET", "/api/users?limit=200", admin, None).await;
        let users = page["users"].as_array().unwrap();
        assert_eq!(page["total"].as_u64(), Some(users.len() as u64), "{page}");
        users.iter().map(|u| u["username"].as_str().unwrap().to_string()).collect()
    }

    /// Audit events for a query string, newest first (one page).
    async fn audit(&self, admin: Who<'_>, query: &str) -> Value {
        self.ok("GET", &format!("/api/audit?{query}"), admin, None).await
    }
}

/// The error shown inside the login form, if any.
fn login_error(r: &Resp) -> Option<String> {
    let page = r.text();
    let (_, rest) = page.split_once(r#"<div class="error">"#)?;
    Some(rest.split_once("</div>")?.0.trim().to_string())
}

/// The `id` of a JSON object.
fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id: {v}")).to_string()
}

/// The events of an audit page.
fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().unwrap_or_else(|| panic!("no events: {page}")).clone()
}

/// Whether `events` holds one of `kind` and `status` about `username`.
fn has_event(events: &[Value], kind: &str, status: &str, username: &str) -> bool {
    events.iter().any(|e| e["type"] == kind && e["status"] == status && e["username"] == username)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The audit file sink's files.
fn audit_files(home: &Home) -> Vec<PathBuf> {
    let dir = home.data_dir().join("audit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Every record in the audit files, by id, with the file's date (`YYYY-MM-DD`).
fn audit_file_records(home: &Home) -> Vec<(String, Value)> {
    let mut out = vec![];
    for f in audit_files(home) {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let date = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .unwrap_or_else(|| panic!("unexpected file in the audit dir: {name}"))
            .to_string();
        assert!(
            date.len() == 10
                && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() }),
            "{name} is not audit-YYYY-MM-DD.jsonl"
        );
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            out.push((date.clone(), v));
        }
    }
    out
}

/// Every file under `dir`, with its text.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()));
        }
    }
    out
}

// ---- 1. configuration ----

/// A wrong key or value in `multi-user:` stops the start with an error naming it, whichever way
/// multi-user mode was asked for; multi-user mode refuses `--auth none`, and single-user mode
/// refuses the account actions.
#[test]
fn configuration_errors_name_the_key() {
    let home = Home::new();
    let serve = ["--bind-addr", "127.0.0.1:0", "--deployment-mode", "multi"];
    for (yaml, want) in [
        ("multi-user:\n  auth:\n    session:\n      ttl: 5\n", "multi-user.auth.session.ttl"),
        ("multi-user:\n  limitz:\n    x: 1\n", "multi-user: unknown field `limitz`"),
        ("multi-user:\n  auth:\n    sesion:\n      ttl: 60\n", "multi-user.auth: unknown field `sesion`"),
        ("multi-user:\n  auth:\n    database:\n      type: mysql\n", "multi-user.auth.database.type"),
        ("multi-user:\n  limits:\n    max-sessions-per-user: 0\n", "multi-user.limits.max-sessions-per-user"),
    ] {
        home.write_config(yaml);
        let out = run(&home, &serve, &[]);
        assert_eq!(out.code, Some(1), "{yaml}:\n{}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(want), "{yaml}: wanted {want:?} in\n{}", out.stderr);
    }

    // The file's `deployment-mode` and $CODE_SERVER_DEPLOYMENT_MODE turn multi-user mode on
    // too: the same section is then read, and refused.
    let bad_ttl = "multi-user:\n  auth:\n    session:\n      ttl: 5\n";
    home.write_config(&format!("deployment-mode: multi\n{bad_ttl}"));
    let out = run(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("multi-user.auth.session.ttl"), "{}", out.stderr);
    home.write_config(&format!("auth: password\npassword: pw\n{bad_ttl}"));
    let out = run(&home, &["--bind-addr", "127.0.0.1:0"], &[("CODE_SERVER_DEPLOYMENT_MODE", "multi")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("multi-user.auth.session.ttl"), "{}", out.stderr);
    let out = run(&home, &["--bind-addr", "127.0.0.1:0"], &[("CODE_SERVER_DEPLOYMENT_MODE", "several")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("CODE_SERVER_DEPLOYMENT_MODE"), "{}", out.stderr);

    // Environment overrides are checked and named too.
    home.write_config("");
    let out = run(&home, &serve, &[("CODE_SERVER_SESSION_STORE", "disk")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("CODE_SERVER_SESSION_STORE"), "{}", out.stderr);
    let out = run(&home, &serve, &[("ADMIN_USERNAME", "admin")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("ADMIN_PASSWORD"), "{}", out.stderr);

    // Every user signs in.
    let out = run(&home, &[&serve[..], &["--auth", "none"]].concat(), ADMIN_ENV);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--auth none cannot be used with deployment-mode multi"), "{}", out.stderr);

    // Account actions are multi-user mode's.
    home.write_config("auth: password\npassword: pw\n");
    for args in [&["--list-users"][..], &["--add-user", "bob"], &["--disable-user", "bob"]] {
        let out = cli(&home, args, "bob-pass-0001\n");
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("need deployment-mode: multi"), "{args:?}: {}", out.stderr);
    }
    let out = cli(&home, &["--deployment-mode", "multi", "--admin"], "");
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--admin and --email go with --add-user"), "{}", out.stderr);
    assert!(!home.data_dir().join("users.db").exists(), "a refused start touches no database");
}

/// `CODE_SERVER_DEPLOYMENT_MODE=multi` serves multi-user mode; an existing first admin is left
/// alone by a later start with other `ADMIN_*` values.
#[tokio::test]
async fn the_environment_turns_multi_user_mode_on() {
    let home = Home::new();
    home.write_config("auth: password\npassword: single-user-pw\n");
    let env = [("CODE_SERVER_DEPLOYMENT_MODE", "multi"), ADMIN_ENV[0], ADMIN_ENV[1]];
    let s = InProcess::start(&home, &[], &env).await;
    let api = Api::new(&s);
    let page = api.client.get("/login").await.text();
    assert!(page.contains(r#"placeholder="USERNAME""#), "{page}");
    // The single-user password is not a way in.
    let r = api
        .raw("POST", "/login", &[("content-type", "application/x-www-form-urlencoded")], "password=single-user-pw")
        .await;
    assert!(r.session_cookie().is_none());
    let admin = api.sign_in("admin", ADMIN_PW).await;
    assert_eq!(api.whoami(Who::Cookie(&admin)).await.as_deref(), Some("admin"));
    s.stop().await;

    let env = [
        ("CODE_SERVER_DEPLOYMENT_MODE", "multi"),
        ("ADMIN_USERNAME", "admin"),
        ("ADMIN_PASSWORD", "Another-pass-0002"),
    ];
    let s = InProcess::start(&home, &[], &env).await;
    let api = Api::new(&s);
    assert_eq!(login_error(&api.login("admin", "Another-pass-0002", &[]).await).as_deref(), Some(INCORRECT));
    api.sign_in("admin", ADMIN_PW).await;
}

// ---- 2. the first admin ----

/// With `ADMIN_USERNAME`/`ADMIN_PASSWORD` the admin signs in with them; no password file is
/// written, and the password reaches neither the log nor VS Code's environment.
#[tokio::test]
async fn the_first_admin_from_the_environment() {
    let home = Home::new();
    let s = multi_binary(&home, &[], ADMIN_ENV);
    let api = Api::new(&s);
    let r = api.login("admin", ADMIN_PW, &[]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let cookie = r.session_cookie().expect("a session cookie");
    let me = api.ok("GET", "/api/users/me", Who::Cookie(&cookie), None).await;
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str(), me["active"].as_bool()),
        (Some("admin"), Some("admin"), Some(true))
    );
    assert!(!home.data_dir().join("admin-password").exists());

    // Every signed-in user reaches the one VS Code server (part 1); its environment has no
    // ADMIN_PASSWORD.
    let r = api.raw("GET", "/version", &[("cookie", &cookie)], Body::empty()).await;
    assert_eq!(r.text(), FAKE_COMMIT);
    let environ = std::fs::read(format!("/proc/{}/environ", vscode_pid(&s))).unwrap();
    let vars: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(vars.iter().any(|v| v.starts_with("HOME=")), "not VS Code's environment: {vars:?}");
    assert!(!vars.iter().any(|v| v.starts_with("ADMIN_PASSWORD=")), "{vars:?}");
    assert!(!vars.iter().any(|v| v.contains(ADMIN_PW)), "{vars:?}");
    let log = format!("{}\n{}", s.stdout_text(), s.stderr_text());
    assert!(!log.contains(ADMIN_PW), "{log}");

    // A password that breaks the rules stops the start, naming the variable, not the value.
    let home = Home::new();
    let serve = ["--bind-addr", "127.0.0.1:0", "--deployment-mode", "multi"];
    let out = run(&home, &serve, &[("ADMIN_USERNAME", "admin"), ("ADMIN_PASSWORD", "Tiny7")]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("ADMIN_PASSWORD"), "{}", out.stderr);
    assert!(!out.stderr.contains("Tiny7") && !out.stdout.contains("Tiny7"), "{}", out.stderr);
    let out = run(&home, &serve, &[("ADMIN_USERNAME", "Not An Admin"), ("ADMIN_PASSWORD", ADMIN_PW)]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("ADMIN_USERNAME"), "{}", out.stderr);
}

/// Without them, an empty database gets `admin` with a random password in
/// `<data dir>/admin-password` (0600), whose path the log prints; a restart makes no other.
#[tokio::test]
async fn the_generated_first_admin() {
    let home = Home::new();
    let s = multi_binary(&home, &[], &[]);
    let file = home.data_dir().join("admin-password");
    let log = format!("{}\n{}", s.stdout_text(), s.stderr_text());
    assert!(log.contains(&file.display().to_string()), "the path is not printed:\n{log}");
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().any(|l| l == "username: admin"), "{text}");
    let password = text.lines().find_map(|l| l.strip_prefix("password: ")).expect("a password line").to_string();
    assert!(password.len() >= 16, "{password:?}");
    assert!(!log.contains(&password), "the password itself is printed:\n{log}");
    let api = Api::new(&s);
    let cookie = api.sign_in("admin", &password).await;
    let me = api.ok("GET", "/api/users/me", Who::Cookie(&cookie), None).await;
    assert_eq!(me["role"], "admin");
    assert_eq!(s.stop(), Some(0));

    let s = multi_binary(&home, &[], &[]);
    let log = s.stdout_text();
    assert!(!log.contains("admin-password"), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let api = Api::new(&s);
    api.sign_in("admin", &password).await;
    assert_eq!(api.usernames(Who::Cookie(&api.sign_in("admin", &password).await)).await, ["admin"]);
}

// ---- 3. the login page ----

#[tokio::test]
async fn the_login_page_asks_for_a_username_in_multi_user_mode_only() {
    let (_home, s) = multi(&[]).await;
    let page = s.client().get("/login").await.text();
    assert!(!page.contains(HIDDEN_USERNAME), "{page}");
    // The <input> that has the placeholder: named username, and not hidden.
    let at = page.find(r#"placeholder="USERNAME""#).expect("a username field");
    let start = page[..at].rfind("<input").unwrap();
    let field = &page[start..at + page[at..].find("/>").unwrap()];
    assert!(field.contains(r#"name="username""#) && field.contains(r#"type="text""#), "{field}");
    assert!(!field.contains("hidden"), "the username field is hidden: {field}");
    assert!(page.contains("Sign in with your username and password."), "{page}");
    assert!(!page.contains("Check the config file for the password."), "{page}");

    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let s = InProcess::start(&home, &[], &[]).await;
    let page = s.client().get("/login").await.text();
    assert!(page.contains(HIDDEN_USERNAME), "{page}");
    assert!(!page.contains(r#"placeholder="USERNAME""#), "{page}");
    assert!(page.contains("Check the config file for the password."), "{page}");
}

/// The form's errors: a missing username or password, one text for an unknown user and a wrong
/// password (the very same page), and a disabled account only for its right password. JSON
/// logins work as forms do.
#[tokio::test]
async fn login_errors() {
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let carol = api.create_user(a, "carol", "Carol-pass-0001", "user").await;

    let error = async |user: &str, password: &str| {
        let r = api.login(user, password, &[]).await;
        assert!(r.session_cookie().is_none(), "{user} signed in");
        (login_error(&r).unwrap_or_else(|| panic!("no error shown: {}", r.text())), r.text())
    };
    assert_eq!(error("", "Carol-pass-0001").await.0, "Missing username");
    assert_eq!(error("   ", "Carol-pass-0001").await.0, "Missing username");
    assert_eq!(error("carol", "").await.0, "Missing password");
    let (unknown, unknown_page) = error("nobody", "Carol-pass-0001").await;
    let (wrong, wrong_page) = error("carol", "Carol-pass-0002").await;
    assert_eq!(unknown, INCORRECT);
    assert_eq!(wrong, INCORRECT);
    assert_eq!(unknown_page, wrong_page, "an unknown user and a wrong password look alike");
    // Usernames are case-blind.
    let cookie = api.sign_in(" CAROL ", "Carol-pass-0001").await;
    assert_eq!(api.whoami(Who::Cookie(&cookie)).await.as_deref(), Some("carol"));

    api.ok("PATCH", &format!("/api/users/{}", id(&carol)), a, Some(json!({"active": false}))).await;
    assert_eq!(error("carol", "Carol-pass-0001").await.0, DISABLED);
    assert_eq!(error("carol", "Carol-pass-0002").await.0, INCORRECT, "a wrong password tells nothing more");

    // JSON.
    let json_login =
        async |body: Value| api.raw("POST", "/login", &[("content-type", "application/json")], body.to_string()).await;
    let r = json_login(json!({"username": "admin", "password": ADMIN_PW})).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let cookie = r.session_cookie().expect("a session cookie");
    assert_eq!(api.whoami(Who::Cookie(&cookie)).await.as_deref(), Some("admin"));
    let r = json_login(json!({"username": "admin", "password": "Admin-pass-0002"})).await;
    assert_eq!(login_error(&r).as_deref(), Some(INCORRECT), "{}", r.text());
    let r = json_login(json!({"password": ADMIN_PW})).await;
    assert_eq!(login_error(&r).as_deref(), Some("Missing username"), "{}", r.text());
}

/// The multi-user strings come in code-server's languages where the build carries code-server's
/// translations (a code-server package with `out/node/i18n/locales`); the stand-in build carries
/// none, so there every language is English.
#[tokio::test]
async fn login_errors_in_japanese() {
    let ja = [("accept-language", "ja-JP,ja;q=0.9")];
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let r = api.login("nobody", "Some-pass-0001", &ja).await;
    assert!(r.text().contains(r#"<html lang="en">"#), "{}", r.text());
    assert_eq!(login_error(&r).as_deref(), Some(INCORRECT));
    drop(s);

    // A code-server package: lib/vscode (the stand-in), its node, and a Japanese table without
    // the multi-user keys, which are our own translations.
    let home = Home::new();
    let package = home.path().join("package");
    copy_dir(&repo_dir().join("tests/fixtures/fake-vscode"), &package.join("lib/vscode"));
    std::os::unix::fs::symlink(node_on_path(), package.join("node")).unwrap();
    let locales = package.join("out/node/i18n/locales");
    std::fs::create_dir_all(&locales).unwrap();
    std::fs::write(locales.join("ja.json"), r#"{"WELCOME": "ようこそ {{app}} へ！"}"#).unwrap();
    let s = multi_binary(&home, &["--vscode-dir", package.to_str().unwrap()], ADMIN_ENV);
    let api = Api::new(&s);
    let page = api.client.get_with("/login", &ja).await.text();
    for needle in [
        r#"<html lang="ja">"#,
        "ようこそ code-server へ！",
        r#"placeholder="ユーザー名""#,
        "ユーザー名とパスワードでログインしてください。",
    ] {
        assert!(page.contains(needle), "missing {needle}:\n{page}");
    }
    let shown = async |user: &str, password: &str| login_error(&api.login(user, password, &ja).await);
    assert_eq!(shown("", "Some-pass-0001").await.as_deref(), Some("ユーザー名がありません"));
    assert_eq!(
        shown("nobody", "Some-pass-0001").await.as_deref(),
        Some("ユーザー名またはパスワードが正しくありません")
    );
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let dave = api.create_user(Who::Cookie(&admin), "dave", "Dave-pass-0001", "user").await;
    api.ok("PATCH", &format!("/api/users/{}", id(&dave)), Who::Cookie(&admin), Some(json!({"active": false}))).await;
    assert_eq!(shown("dave", "Dave-pass-0001").await.as_deref(), Some("このアカウントは無効になっています"));
    // Without the header: English.
    assert_eq!(login_error(&api.login("dave", "Dave-pass-0001", &[]).await).as_deref(), Some(DISABLED));
}

// ---- 4. the limiter per username ----

/// Wrong passwords for one username are counted wherever they come from: from a fresh address
/// each time, the 15th in a row (2 a minute + 12 an hour) is refused, even with the right
/// password, while another username from the same addresses is not limited.
#[tokio::test]
async fn the_limiter_counts_attempts_at_one_username_from_any_address() {
    let (_home, s) = multi(&["--trusted-proxies", "127.0.0.1"]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    api.create_user(Who::Cookie(&admin), "alice", "Alice-pass-0001", "user").await;
    api.create_user(Who::Cookie(&admin), "bob", "Bob-pass-0001", "user").await;
    let attempt =
        async |user: &str, password: &str, ip: &str| api.login(user, password, &[("x-forwarded-for", ip)]).await;

    for i in 1..=14 {
        let r = attempt("alice", "Wrong-pass-0001", &format!("10.0.0.{i}")).await;
        assert_eq!(login_error(&r).as_deref(), Some(INCORRECT), "attempt {i}");
    }
    let r = attempt("alice", "Wrong-pass-0001", "10.0.0.15").await;
    assert_eq!(login_error(&r).as_deref(), Some("Login rate limited!"));
    let r = attempt(" ALICE ", "Alice-pass-0001", "10.0.1.1").await;
    assert_eq!(login_error(&r).as_deref(), Some("Login rate limited!"), "the right password, any spelling");
    assert!(r.session_cookie().is_none());

    for i in 1..=3 {
        let r = attempt("bob", "Wrong-pass-0001", &format!("10.0.0.{i}")).await;
        assert_eq!(login_error(&r).as_deref(), Some(INCORRECT), "bob from 10.0.0.{i}");
    }
    let r = attempt("bob", "Bob-pass-0001", "10.0.0.1").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
}

// ---- 5. sessions ----

#[tokio::test]
async fn a_sixth_session_revokes_the_oldest() {
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    api.create_user(Who::Cookie(&admin), "dave", "Dave-pass-0001", "user").await;
    let mut cookies = vec![];
    for _ in 0..6 {
        cookies.push(api.sign_in("dave", "Dave-pass-0001").await);
    }
    assert_eq!(api.whoami(Who::Cookie(&cookies[0])).await, None, "the oldest session is gone");
    for (i, c) in cookies.iter().enumerate().skip(1) {
        assert_eq!(api.whoami(Who::Cookie(c)).await.as_deref(), Some("dave"), "session {i}");
    }
    let listed = api.ok("GET", "/api/users/me/sessions", Who::Cookie(&cookies[5]), None).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1, "{listed:?}");
    assert_eq!(listed.iter().map(id).collect::<HashSet<_>>().len(), 5);
    let usage = api.ok("GET", "/api/users/me/usage", Who::Cookie(&cookies[5]), None).await;
    assert_eq!(
        (usage["sessions"]["used"].as_u64(), usage["sessions"]["limit"].as_u64()),
        (Some(5), Some(5)),
        "{usage}"
    );
}

/// Logout, a password change (the user's own, keeping this session; or an admin's), disabling
/// and deleting revoke sessions at once.
#[tokio::test]
async fn what_revokes_sessions() {
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let erin = api.create_user(a, "erin", "Erin-pass-0001", "user").await;
    let frank = api.create_user(a, "frank", "Frank-pass-0001", "user").await;

    // Logout.
    let c = api.sign_in("erin", "Erin-pass-0001").await;
    assert_eq!(api.whoami(Who::Cookie(&c)).await.as_deref(), Some("erin"));
    let r = api.raw("GET", "/logout", &[("cookie", &c)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(api.whoami(Who::Cookie(&c)).await, None, "a logged-out cookie still works");

    // Their own password change keeps this session only.
    let s1 = api.sign_in("erin", "Erin-pass-0001").await;
    let s2 = api.sign_in("erin", "Erin-pass-0001").await;
    let s3 = api.sign_in("erin", "Erin-pass-0001").await;
    let e = api
        .error(
            StatusCode::BAD_REQUEST,
            "PATCH",
            "/api/users/me",
            Who::Cookie(&s1),
            Some(json!({"current_password": "Erin-pass-9999", "password": "Erin-pass-0002"})),
        )
        .await;
    assert!(e.contains("current_password"), "{e}");
    assert_eq!(api.whoami(Who::Cookie(&s2)).await.as_deref(), Some("erin"), "a refused change revokes nothing");
    let body = json!({"current_password": "Erin-pass-0001", "password": "Erin-pass-0002"});
    api.ok("PATCH", "/api/users/me", Who::Cookie(&s1), Some(body)).await;
    assert_eq!(api.whoami(Who::Cookie(&s1)).await.as_deref(), Some("erin"), "the session that changed it stays");
    assert_eq!(api.whoami(Who::Cookie(&s2)).await, None);
    assert_eq!(api.whoami(Who::Cookie(&s3)).await, None);
    assert_eq!(login_error(&api.login("erin", "Erin-pass-0001", &[]).await).as_deref(), Some(INCORRECT));
    let s4 = api.sign_in("erin", "Erin-pass-0002").await;
    let listed = api.ok("GET", "/api/users/me/sessions", Who::Cookie(&s1), None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // An admin's password reset revokes them all.
    let path = format!("/api/users/{}", id(&erin));
    api.ok("PATCH", &path, a, Some(json!({"password": "Erin-pass-0003"}))).await;
    assert_eq!(api.whoami(Who::Cookie(&s1)).await, None);
    assert_eq!(api.whoami(Who::Cookie(&s4)).await, None);
    let s5 = api.sign_in("erin", "Erin-pass-0003").await;
    // As does the admin's "revoke sessions".
    let revoked = api.ok("DELETE", &format!("{path}/sessions"), a, None).await;
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    assert_eq!(api.whoami(Who::Cookie(&s5)).await, None);

    // Disabling.
    let path = format!("/api/users/{}", id(&frank));
    let f = api.sign_in("frank", "Frank-pass-0001").await;
    let changed = api.ok("PATCH", &path, a, Some(json!({"active": false}))).await;
    assert_eq!(changed["active"], false);
    assert_eq!(api.whoami(Who::Cookie(&f)).await, None);
    assert_eq!(login_error(&api.login("frank", "Frank-pass-0001", &[]).await).as_deref(), Some(DISABLED));
    assert_eq!(api.ok("GET", &format!("{path}/sessions"), a, None).await, json!([]));
    api.ok("PATCH", &path, a, Some(json!({"active": true}))).await;

    // Deleting.
    let f = api.sign_in("frank", "Frank-pass-0001").await;
    assert_eq!(api.expect(StatusCode::NO_CONTENT, "DELETE", &path, a, None).await, Value::Null);
    assert_eq!(api.whoami(Who::Cookie(&f)).await, None);
    assert_eq!(login_error(&api.login("frank", "Frank-pass-0001", &[]).await).as_deref(), Some(INCORRECT));
    api.expect(StatusCode::NOT_FOUND, "GET", &path, a, None).await;
    assert_eq!(api.usernames(a).await, ["admin", "erin"]);
}

// ---- 6. who may do what ----

#[tokio::test]
async fn the_api_authorization_matrix() {
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let aid = id(&api.ok("GET", "/api/users/me", a, None).await);
    let bid = id(&api.create_user(a, "bob", "Bob-pass-0001", "user").await);
    let cid = id(&api.create_user(a, "carol", "Carol-pass-0001", "user").await);
    let bob = api.sign_in("bob", "Bob-pass-0001").await;
    let carol = api.sign_in("carol", "Carol-pass-0001").await;
    let (b, c) = (Who::Cookie(&bob), Who::Cookie(&carol));
    let new_token = async |who: Who<'_>, name: &str| {
        let t = api.expect(StatusCode::CREATED, "POST", "/api/users/me/tokens", who, Some(json!({"name": name}))).await;
        (id(&t), t["token_secret"].as_str().expect("the secret, once").to_string())
    };
    let (_, bob_token) = new_token(b, "bob-ci").await;

    // A non-admin on every admin route: 403, with the cookie or a token, and nothing changes.
    let admin_routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/users".into(), None),
        ("POST", "/api/users".into(), Some(json!({"username": "mallory", "password": "Mallory-pass-0001"}))),
        ("GET", format!("/api/users/{cid}"), None),
        ("PATCH", format!("/api/users/{cid}"), Some(json!({"active": false}))),
        ("PATCH", format!("/api/users/{bid}"), Some(json!({"role": "admin"}))),
        ("DELETE", format!("/api/users/{cid}"), None),
        ("GET", format!("/api/users/{cid}/sessions"), None),
        ("DELETE", format!("/api/users/{cid}/sessions"), None),
        ("GET", "/api/audit".into(), None),
    ];
    for (method, path, body) in &admin_routes {
        for who in [b, Who::Token(&bob_token)] {
            api.error(StatusCode::FORBIDDEN, method, path, who, body.clone()).await;
        }
        api.error(StatusCode::UNAUTHORIZED, method, path, Who::Nobody, body.clone()).await;
    }
    assert_eq!(api.whoami(c).await.as_deref(), Some("carol"), "carol was disabled, deleted or signed out");
    assert_eq!(api.usernames(a).await, ["admin", "bob", "carol"]);
    let bob_now = api.ok("GET", &format!("/api/users/{bid}"), a, None).await;
    assert_eq!((bob_now["role"].as_str(), bob_now["active"].as_bool()), (Some("user"), Some(true)));
    api.ok("GET", &format!("/api/users/{cid}/sessions"), a, None).await;
    api.ok("GET", "/api/audit", a, None).await;

    // Another user's session or token is not found, and keeps working.
    let carol_sessions = api.ok("GET", "/api/users/me/sessions", c, None).await;
    let carol_session = id(&carol_sessions.as_array().unwrap()[0]);
    let (carol_token_id, carol_token) = new_token(c, "carol-ci").await;
    api.error(StatusCode::NOT_FOUND, "DELETE", &format!("/api/users/me/sessions/{carol_session}"), b, None).await;
    api.error(StatusCode::NOT_FOUND, "DELETE", &format!("/api/users/me/tokens/{carol_token_id}"), b, None).await;
    api.error(StatusCode::NOT_FOUND, "DELETE", "/api/users/me/sessions/0123456789abcdef0123456789abcdef", b, None)
        .await;
    assert_eq!(api.whoami(c).await.as_deref(), Some("carol"));
    assert_eq!(api.whoami(Who::Token(&carol_token)).await.as_deref(), Some("carol"));
    let bob_sessions = api.ok("GET", "/api/users/me/sessions", b, None).await;
    assert!(!bob_sessions.as_array().unwrap().iter().any(|s| id(s) == carol_session), "{bob_sessions}");
    let bob_tokens = api.ok("GET", "/api/users/me/tokens", b, None).await;
    assert!(!bob_tokens.as_array().unwrap().iter().any(|t| id(t) == carol_token_id), "{bob_tokens}");

    // Without a session: 401 everywhere; a cookie that names no session is none.
    let own_routes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/api/users/me", None),
        ("PATCH", "/api/users/me", Some(json!({"email": "x@y.io"}))),
        ("GET", "/api/users/me/sessions", None),
        ("DELETE", "/api/users/me/sessions/0123", None),
        ("GET", "/api/users/me/usage", None),
        ("GET", "/api/users/me/tokens", None),
        ("POST", "/api/users/me/tokens", Some(json!({"name": "x"}))),
        ("DELETE", "/api/users/me/tokens/0123", None),
    ];
    let forged = format!("code-server-session={}", "0".repeat(64));
    for (method, path, body) in &own_routes {
        for who in [Who::Nobody, Who::Cookie(&forged), Who::Token("cs_0000")] {
            api.error(StatusCode::UNAUTHORIZED, method, path, who, body.clone()).await;
        }
    }
    // A token that does not work fails the request even beside a working cookie.
    let r =
        api.raw("GET", "/api/users/me", &[("cookie", &bob), ("authorization", "Bearer cs_0000")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    // Role and active flag are not theirs to change: 400 naming the field, nothing changed.
    for (body, field) in [
        (json!({"role": "admin"}), "role"),
        (json!({"active": false}), "active"),
        (json!({"email": "bob@b.io", "role": "admin"}), "role"),
    ] {
        let e = api.error(StatusCode::BAD_REQUEST, "PATCH", "/api/users/me", b, Some(body)).await;
        assert!(e.contains(field), "{e}");
    }
    let bob_now = api.ok("GET", &format!("/api/users/{bid}"), a, None).await;
    assert_eq!(
        (bob_now["role"].as_str(), bob_now["active"].as_bool(), &bob_now["email"]),
        (Some("user"), Some(true), &Value::Null),
        "{bob_now}"
    );

    // Cookie requests that change something need this server's origin.
    let tokens_before = api.ok("GET", "/api/users/me/tokens", b, None).await.as_array().unwrap().len();
    let my_session = id(&api.ok("GET", "/api/users/me/sessions", b, None).await.as_array().unwrap()[0]);
    let port = api.origin.rsplit(':').next().unwrap().to_string();
    let elsewhere = format!("http://localhost.evil.example:{port}");
    for extra in [
        vec![],
        vec![("origin", "http://evil.example")],
        vec![("origin", elsewhere.as_str())],
        vec![("origin", "http://127.0.0.1:1")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site"), ("origin", api.origin.as_str())],
    ] {
        let with = |ct: bool| {
            let mut h = vec![("cookie", bob.as_str())];
            if ct {
                h.push(("content-type", "application/json"));
            }
            h.extend_from_slice(&extra);
            h
        };
        let r = api.raw("POST", "/api/users/me/tokens", &with(true), r#"{"name":"csrf"}"#).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{extra:?}: {}", r.text());
        let r = api.raw("PATCH", "/api/users/me", &with(true), r#"{"email":"evil@evil.example"}"#).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{extra:?}: {}", r.text());
        let r = api.raw("DELETE", &format!("/api/users/me/sessions/{my_session}"), &with(false), Body::empty()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{extra:?}: {}", r.text());
    }
    assert_eq!(api.ok("GET", "/api/users/me/tokens", b, None).await.as_array().unwrap().len(), tokens_before);
    assert_eq!(api.ok("GET", "/api/users/me", b, None).await["email"], Value::Null);
    assert_eq!(api.whoami(b).await.as_deref(), Some("bob"));
    // A read needs no origin; our own origin, or a same-origin fetch, may change things.
    let r =
        api.raw("GET", "/api/users/me", &[("cookie", &bob), ("origin", "http://evil.example")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let own = [("cookie", bob.as_str()), ("content-type", "application/json"), ("origin", api.origin.as_str())];
    let r = api.raw("PATCH", "/api/users/me", &own, r#"{"email":"bob@b.io"}"#).await;
    assert_eq!((r.status, r.json()["email"].as_str()), (StatusCode::OK, Some("bob@b.io")), "{}", r.text());
    let fetch = [("cookie", bob.as_str()), ("content-type", "application/json"), ("sec-fetch-site", "same-origin")];
    let r = api.raw("POST", "/api/users/me/tokens", &fetch, r#"{"name":"fetched"}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // A bearer token needs no origin, is listed without its secret, and dies when deleted.
    let (token_id, token) = new_token(b, "laptop").await;
    assert!(token.starts_with("cs_") && token.len() > 40, "{token}");
    let t = Who::Token(&token);
    assert_eq!(api.whoami(t).await.as_deref(), Some("bob"));
    let r = api
        .raw(
            "PATCH",
            "/api/users/me",
            &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
            r#"{"email":"bob2@b.io"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = api.get("/api/users/me/tokens", t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text().contains(&token) && !r.text().contains("token_secret"), "{}", r.text());
    let listed = r.json();
    let laptop = listed.as_array().unwrap().iter().find(|x| id(x) == token_id).expect("the token is listed");
    assert_eq!(laptop["name"], "laptop");
    api.expect(StatusCode::NO_CONTENT, "DELETE", &format!("/api/users/me/tokens/{token_id}"), t, None).await;
    assert_eq!(api.whoami(t).await, None, "a deleted token still works");
    api.error(StatusCode::NOT_FOUND, "DELETE", &format!("/api/users/me/tokens/{token_id}"), b, None).await;

    // The last active admin stays one.
    let me = format!("/api/users/{aid}");
    for body in [json!({"role": "user"}), json!({"active": false})] {
        let e = api.error(StatusCode::CONFLICT, "PATCH", &me, a, Some(body)).await;
        assert!(e.contains("last active admin"), "{e}");
    }
    api.error(StatusCode::CONFLICT, "DELETE", &me, a, None).await;
    let admin_now = api.ok("GET", &me, a, None).await;
    assert_eq!((admin_now["role"].as_str(), admin_now["active"].as_bool()), (Some("admin"), Some(true)));
    // With a second admin the first may step down; then the second is the last.
    api.ok("PATCH", &format!("/api/users/{cid}"), a, Some(json!({"role": "admin"}))).await;
    api.ok("PATCH", &me, a, Some(json!({"role": "user"}))).await;
    api.error(StatusCode::FORBIDDEN, "GET", "/api/users", a, None).await;
    api.error(StatusCode::CONFLICT, "PATCH", &format!("/api/users/{cid}"), c, Some(json!({"active": false}))).await;
    api.error(StatusCode::CONFLICT, "DELETE", &format!("/api/users/{cid}"), c, None).await;
}

// ---- 7. validation ----

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let headers = |ct: Option<&'static str>| -> Vec<(&str, &str)> {
        let mut h = vec![("cookie", admin.as_str()), ("origin", api.origin.as_str())];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        h
    };
    let big = format!(r#"{{"username":"dave","password":"{}"}}"#, "x".repeat(110 * 1024));
    let cases: Vec<(Option<&'static str>, String, StatusCode, Option<&str>)> = vec![
        (Some("application/json"), r#"{"username": "dave", "password": "#.into(), StatusCode::BAD_REQUEST, None),
        (Some("application/json"), "not json".into(), StatusCode::BAD_REQUEST, None),
        (
            Some("application/json"),
            r#"{"username": 5, "password": "Dave-pass-0001"}"#.into(),
            StatusCode::BAD_REQUEST,
            Some("username"),
        ),
        (
            Some("application/json"),
            r#"{"username": "dave", "password": ["Dave-pass-0001"]}"#.into(),
            StatusCode::BAD_REQUEST,
            Some("password"),
        ),
        (
            Some("application/json"),
            r#"{"username": "dave", "password": "Dave-pass-0001", "role": "root"}"#.into(),
            StatusCode::BAD_REQUEST,
            Some("role"),
        ),
        (
            Some("application/json"),
            r#"{"username": "dave", "password": "Dave-pass-0001", "is_admin": true}"#.into(),
            StatusCode::BAD_REQUEST,
            Some("is_admin"),
        ),
        (Some("application/json"), r#"{"username": "dave"}"#.into(), StatusCode::BAD_REQUEST, Some("password")),
        (
            Some("application/json"),
            r#"[{"username": "dave", "password": "Dave-pass-0001"}]"#.into(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (Some("application/json"), big, StatusCode::PAYLOAD_TOO_LARGE, None),
        (
            None,
            r#"{"username": "dave", "password": "Dave-pass-0001"}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            Some("text/plain"),
            r#"{"username": "dave", "password": "Dave-pass-0001"}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
    ];
    for (ct, body, status, field) in cases {
        let shown = body.chars().take(80).collect::<String>();
        let r = api.raw("POST", "/api/users", &headers(ct), body).await;
        assert_eq!(r.status, status, "{shown}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap_or_else(|| panic!("{shown}: no error: {}", r.text())).to_string();
        if let Some(field) = field {
            assert!(e.contains(field), "{shown}: {e}");
        }
        assert_eq!(api.usernames(a).await, ["admin"], "{shown} stored something");
    }

    // The rules, each a 400 naming the field.
    for (body, field) in [
        (json!({"username": "Bad Name", "password": "Dave-pass-0001"}), "username"),
        (json!({"username": "root", "password": "Dave-pass-0001"}), "username"),
        (json!({"username": "", "password": "Dave-pass-0001"}), "username"),
        (json!({"username": "1dave", "password": "Dave-pass-0001"}), "username"),
        (json!({"username": "x".repeat(33), "password": "Dave-pass-0001"}), "username"),
        (json!({"username": "dave", "password": "Short1"}), "password"),
        (json!({"username": "dave", "password": "DAVE"}), "password"),
        (json!({"username": "davedave", "password": "davedave"}), "password"),
        (json!({"username": "dave", "password": " Dave-pass-0001"}), "password"),
        (json!({"username": "dave", "password": "Dave-pass-0001", "email": "not-an-address"}), "email"),
    ] {
        let e = api.error(StatusCode::BAD_REQUEST, "POST", "/api/users", a, Some(body.clone())).await;
        assert!(e.starts_with(&format!("{field}:")), "{body}: {e}");
    }
    assert_eq!(api.usernames(a).await, ["admin"]);

    // Names are lower-cased, so duplicates are found whatever the case; emails too.
    let dave = api
        .expect(
            StatusCode::CREATED,
            "POST",
            "/api/users",
            a,
            Some(json!({"username": "Dave", "password": "Dave-pass-0001", "email": "Dave@X.io"})),
        )
        .await;
    assert_eq!((dave["username"].as_str(), dave["email"].as_str()), (Some("dave"), Some("dave@x.io")), "{dave}");
    for (body, field) in [
        (json!({"username": "dave", "password": "Other-pass-0001"}), "username"),
        (json!({"username": "DAVE", "password": "Other-pass-0001"}), "username"),
        (json!({"username": "dave2", "password": "Other-pass-0001", "email": "DAVE@x.IO"}), "email"),
    ] {
        let e = api.error(StatusCode::CONFLICT, "POST", "/api/users", a, Some(body.clone())).await;
        assert!(e.contains(field), "{body}: {e}");
    }
    assert_eq!(api.usernames(a).await, ["admin", "dave"]);
    let path = format!("/api/users/{}", id(&dave));
    // Taking another's email by a change is a conflict too.
    let admin_id = id(&api.ok("GET", "/api/users/me", a, None).await);
    let e = api
        .error(StatusCode::CONFLICT, "PATCH", &format!("/api/users/{admin_id}"), a, Some(json!({"email": "dave@x.io"})))
        .await;
    assert!(e.contains("email"), "{e}");

    // Changes: the same rules, nothing changed.
    for (body, field) in [
        (json!({"active": "no"}), "active"),
        (json!({"email": 5}), "email"),
        (json!({"role": "owner"}), "role"),
        (json!({"nickname": "d"}), "nickname"),
        (json!({"email": "nope"}), "email"),
        (json!({"password": "short"}), "password"),
    ] {
        let e = api.error(StatusCode::BAD_REQUEST, "PATCH", &path, a, Some(body.clone())).await;
        assert!(e.contains(field), "{body}: {e}");
    }
    let now = api.ok("GET", &path, a, None).await;
    assert_eq!(
        (now["email"].as_str(), now["role"].as_str(), now["active"].as_bool()),
        (Some("dave@x.io"), Some("user"), Some(true))
    );
    api.sign_in("dave", "Dave-pass-0001").await;
    let e = api
        .error(StatusCode::BAD_REQUEST, "PATCH", "/api/users/me", a, Some(json!({"password": "Admin-pass-0002"})))
        .await;
    assert!(e.contains("current_password"), "{e}");
    api.error(StatusCode::NOT_FOUND, "GET", "/api/users/0123456789abcdef0123456789abcdef", a, None).await;
    api.error(StatusCode::NOT_FOUND, "PATCH", "/api/users/nobody", a, Some(json!({"active": false}))).await;
    api.error(StatusCode::NOT_FOUND, "GET", "/api/nothing-here", a, None).await;

    // Query strings.
    for (query, field) in [
        ("/api/users?limit=abc", "limit"),
        ("/api/users?limit=100000", "limit"),
        ("/api/users?sort=name", "sort"),
        ("/api/audit?type=bogus", "type"),
        ("/api/audit?status=maybe", "status"),
        ("/api/audit?from=yesterday", "from"),
        ("/api/audit?to=2024-13-01T00:00:00Z", "to"),
        ("/api/audit?cursor=zzz", "cursor"),
        ("/api/audit?limit=-1", "limit"),
    ] {
        let e = api.error(StatusCode::BAD_REQUEST, "GET", query, a, None).await;
        assert!(e.contains(field), "{query}: {e}");
    }
    let e = api.error(StatusCode::BAD_REQUEST, "POST", "/api/users/me/tokens", a, Some(json!({"name": ""}))).await;
    assert!(e.contains("name"), "{e}");
}

// ---- 8. concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_of_one_name_one_wins() {
    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let race = async |one: Value, two: Value, field: &str| {
        let (r1, r2) =
            tokio::join!(api.call("POST", "/api/users", a, Some(one)), api.call("POST", "/api/users", a, Some(two)));
        let mut both = [(r1.status, r1.text()), (r2.status, r2.text())];
        both.sort_by_key(|(s, _)| s.as_u16());
        assert_eq!((both[0].0, both[1].0), (StatusCode::CREATED, StatusCode::CONFLICT), "{both:?}");
        assert!(both[1].1.contains(field), "{both:?}");
    };
    for i in 0..10 {
        let body = json!({"username": format!("racer{i}"), "password": "Racer-pass-0001"});
        race(body.clone(), body, "username").await;
    }
    for i in 0..5 {
        let email = format!("same{i}@x.io");
        let one = json!({"username": format!("mail{i}a"), "password": "Racer-pass-0001", "email": email});
        let two =
            json!({"username": format!("mail{i}b"), "password": "Racer-pass-0001", "email": email.to_uppercase()});
        race(one, two, "email").await;
    }
    let names = api.usernames(a).await;
    assert_eq!(names.len(), 16, "{names:?}");
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 16);
}

// ---- 9. the audit log ----

#[tokio::test]
async fn the_audit_log_records_filters_and_pages() {
    let (home, s) = multi(&["--trusted-proxies", "127.0.0.1"]).await;
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let alice_id = id(&api.create_user(a, "alice", "Alice-pass-0001", "user").await);
    let xff = [("x-forwarded-for", "203.0.113.7")];
    assert_eq!(login_error(&api.login("alice", "Alice-pass-0002", &xff).await).as_deref(), Some(INCORRECT));
    assert_eq!(login_error(&api.login("Ghost", "Alice-pass-0001", &xff).await).as_deref(), Some(INCORRECT));
    let r = api.login("alice", "Alice-pass-0001", &xff).await;
    let alice = r.session_cookie().expect("alice signs in");
    let r = api.raw("GET", "/logout", &[("cookie", &alice), xff[0]], Body::empty()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let erin_id = id(&api.create_user(a, "erin", "Erin-pass-0001", "user").await);
    api.ok("PATCH", &format!("/api/users/{erin_id}"), a, Some(json!({"active": false}))).await;
    api.ok("DELETE", &format!("/api/users/{erin_id}"), a, None).await;

    // Written off the request path: wait for the last.
    let all = until("the audit events", async || {
        let all = events(&api.audit(a, "limit=500").await);
        has_event(&all, "user.deleted", "success", "erin").then_some(all)
    })
    .await;
    let one = |kind: &str, status: &str, username: &str| -> Value {
        let found: Vec<&Value> =
            all.iter().filter(|e| e["type"] == kind && e["status"] == status && e["username"] == username).collect();
        assert_eq!(found.len(), 1, "{kind} {status} {username}: {all:#?}");
        found[0].clone()
    };
    let failed = one("login", "failure", "alice");
    assert_eq!(
        (failed["ip"].as_str(), failed["user_id"].as_str()),
        (Some("203.0.113.7"), Some(alice_id.as_str())),
        "{failed}"
    );
    let ghost = one("login", "failure", "ghost");
    assert_eq!((ghost["ip"].as_str(), &ghost["user_id"]), (Some("203.0.113.7"), &Value::Null), "{ghost}");
    assert_eq!(one("login", "success", "alice")["ip"], "203.0.113.7");
    assert_eq!(one("session.created", "success", "alice")["ip"], "203.0.113.7");
    assert_eq!(one("logout", "success", "alice")["ip"], "203.0.113.7");
    assert_eq!(one("session.revoked", "success", "alice")["details"]["reason"], "logout");
    for kind in ["user.created", "user.disabled", "user.deleted"] {
        let e = one(kind, "success", "erin");
        assert_eq!((e["actor"].as_str(), e["user_id"].as_str()), (Some("admin"), Some(erin_id.as_str())), "{e}");
    }
    // Newest first, each once.
    let ats: Vec<&str> = all.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");
    let ids: Vec<String> = all.iter().map(id).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());

    // Filters.
    let expect = async |query: &str, keep: &dyn Fn(&Value) -> bool| {
        let got: Vec<String> = events(&api.audit(a, query).await).iter().map(id).collect();
        let want: Vec<String> = all.iter().filter(|e| keep(e)).map(id).collect();
        assert!(!want.is_empty(), "{query}: a filter that matches nothing proves nothing");
        assert_eq!(got, want, "{query}");
    };
    expect("type=login&status=failure", &|e| e["type"] == "login" && e["status"] == "failure").await;
    expect("status=success", &|e| e["status"] == "success").await;
    expect(&format!("user={alice_id}"), &|e| e["user_id"] == alice_id.as_str()).await;
    expect(&format!("user={alice_id}&type=login"), &|e| e["user_id"] == alice_id.as_str() && e["type"] == "login")
        .await;
    expect("type=user.deleted", &|e| e["type"] == "user.deleted").await;
    // Inclusive bounds: an event exactly at `to` (and at `from`) is in.
    let at = failed["at"].as_str().unwrap().to_string();
    let same = events(&api.audit(a, &format!("from={at}&to={at}")).await);
    assert!(same.iter().any(|e| id(e) == id(&failed)), "{at}: {same:#?}");
    assert!(same.iter().all(|e| e["at"] == at.as_str()));
    expect(&format!("from={at}"), &|e| e["at"].as_str().unwrap() >= at.as_str()).await;
    expect(&format!("to={at}"), &|e| e["at"].as_str().unwrap() <= at.as_str()).await;
    expect(&format!("to={at}&type=login"), &|e| e["at"].as_str().unwrap() <= at.as_str() && e["type"] == "login").await;

    // Pages: two at a time, through all of them, each event once, in order.
    let walk = async |query: &str| {
        let mut seen = vec![];
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let q = match &cursor {
                Some(c) => format!("{query}&cursor={c}"),
                None => query.to_string(),
            };
            let page = api.audit(a, &q).await;
            let evs = events(&page);
            assert!(evs.len() <= 2, "{page}");
            seen.extend(evs.iter().map(id));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return seen,
            }
        }
        panic!("pagination does not end");
    };
    assert_eq!(walk("limit=2").await, ids);
    let logins: Vec<String> = all.iter().filter(|e| e["type"] == "login").map(id).collect();
    assert_eq!(walk("limit=2&type=login").await, logins);

    // The file sink holds the same events, each in its UTC day's file, all private.
    let dir = home.data_dir().join("audit");
    assert_eq!(mode(&dir) & 0o077, 0, "{}", dir.display());
    let records = until("the audit files", async || {
        let records = audit_file_records(&home);
        ids.iter().all(|i| records.iter().any(|(_, r)| r["id"] == i.as_str())).then_some(records)
    })
    .await;
    for f in audit_files(&home) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    for e in &all {
        let (date, r) = records.iter().find(|(_, r)| r["id"] == e["id"]).unwrap();
        assert_eq!(date.as_str(), &e["at"].as_str().unwrap()[..10], "{e}");
        for field in ["type", "status", "user_id", "username", "actor", "ip", "details"] {
            assert_eq!(r[field], e[field], "{field} of {e}");
        }
    }
}

/// What was recorded right before SIGTERM, a burst of it, is in the file after the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_audit_log() {
    let home = Home::new();
    let s = multi_binary(&home, &[], ADMIN_ENV);
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    for i in 0..3 {
        api.create_user(a, &format!("late{i}"), "Late-pass-0001", "user").await;
    }
    assert_eq!(login_error(&api.login("late0", "Late-pass-0002", &[]).await).as_deref(), Some(INCORRECT));
    let burst = (0..40).map(|i| {
        let api = &api;
        async move {
            api.expect(
                StatusCode::CREATED,
                "POST",
                "/api/users/me/tokens",
                a,
                Some(json!({"name": format!("burst{i}")})),
            )
            .await
        }
    });
    let tokens: Vec<String> = futures_util::future::join_all(burst).await.iter().map(id).collect();
    let log = s.stdout.clone();
    let errors = s.stderr.clone();
    assert_eq!(s.stop(), Some(0));
    let records: Vec<Value> = audit_file_records(&home).into_iter().map(|(_, r)| r).collect();
    for i in 0..3 {
        assert!(has_event(&records, "user.created", "success", &format!("late{i}")), "late{i}: {records:#?}");
    }
    assert!(has_event(&records, "login", "failure", "late0"), "{records:#?}");
    for t in &tokens {
        assert!(
            records.iter().any(|r| r["type"] == "token.created" && r["details"]["token"] == t.as_str()),
            "token {t} is not in the audit file"
        );
    }
    let log = format!("{}\n{}", log.lock().unwrap().join("\n"), errors.lock().unwrap().join("\n"));
    assert!(!log.contains("Audit event"), "events were left to the log:\n{log}");

    // And the database sink has them after a restart.
    let s = multi_binary(&home, &[], ADMIN_ENV);
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let stored = events(&api.audit(Who::Cookie(&admin), "type=token.created&limit=500").await);
    assert_eq!(stored.len(), tokens.len(), "{stored:#?}");
    let stored = events(&api.audit(Who::Cookie(&admin), "limit=500").await);
    assert!(has_event(&stored, "login", "failure", "late0"), "{stored:#?}");
}

/// A sink that fails is logged and retried, never dropped in silence: what it still refuses at
/// SIGTERM (after the close deadline) is printed to the log, record by record, and the other
/// sink has it.
#[tokio::test]
async fn a_failing_audit_sink_loses_nothing_at_sigterm() {
    let home = Home::new();
    let s = multi_binary(&home, &[], ADMIN_ENV);
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    until("the file sink to work", async || {
        let records = audit_file_records(&home);
        records.iter().any(|(_, r)| r["type"] == "login" && r["username"] == "admin").then_some(())
    })
    .await;
    // The audit directory becomes a file: every append fails.
    let dir = home.data_dir().join("audit");
    std::fs::rename(&dir, home.path().join("audit-moved")).unwrap();
    std::fs::write(&dir, "in the way").unwrap();
    for i in 0..3 {
        api.create_user(a, &format!("lost{i}"), "Lost-pass-0001", "user").await;
    }
    let stderr = s.stderr.clone();
    until("the failure to be logged", async || {
        stderr.lock().unwrap().iter().any(|l| l.contains("Audit file sink failed")).then_some(())
    })
    .await;
    let log = s.stdout.clone();
    assert_eq!(s.stop(), Some(0));
    let log = format!("{}\n{}", log.lock().unwrap().join("\n"), stderr.lock().unwrap().join("\n"));
    for i in 0..3 {
        let line = log
            .lines()
            .find(|l| l.contains("Audit event not written to the file sink") && l.contains(&format!("\"lost{i}\"")))
            .unwrap_or_else(|| panic!("lost{i}'s creation is nowhere:\n{log}"));
        assert!(line.contains("user.created"), "{line}");
    }
    std::fs::remove_file(&dir).unwrap();
    let s = multi_binary(&home, &[], ADMIN_ENV);
    let api = Api::new(&s);
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let stored = events(&api.audit(Who::Cookie(&admin), "type=user.created&limit=500").await);
    for i in 0..3 {
        assert!(has_event(&stored, "user.created", "success", &format!("lost{i}")), "{stored:#?}");
    }
}

// ---- 10. secrets ----

/// After logins, password changes, a token and failed logins, no password, hash, token or
/// session secret is in any response (but the login's Set-Cookie and the token's one showing),
/// the log, the log files, or the audit.
#[tokio::test]
async fn no_secret_reaches_a_response_the_log_or_the_audit() {
    use code_server::util::{hex, sha256};
    let home = Home::new();
    let s = multi_binary(&home, &["--log", "debug"], ADMIN_ENV);
    let api = Api::new(&s);
    let (p1, p2, p3, typo) = ("Grace-first-7731", "Grace-second-8842", "Grace-third-9953", "Grace-typo-1064");
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let a = Who::Cookie(&admin);
    let gid = id(&api.create_user(a, "grace", p1, "user").await);
    let g1 = api.sign_in("grace", p1).await;
    api.login("grace", typo, &[]).await;
    api.login("nobody", p1, &[]).await;
    api.raw(
        "POST",
        "/login",
        &[("content-type", "application/json")],
        json!({"username": "grace", "password": typo}).to_string(),
    )
    .await;
    let body = json!({"current_password": typo, "password": p2});
    api.error(StatusCode::BAD_REQUEST, "PATCH", "/api/users/me", Who::Cookie(&g1), Some(body)).await;
    let body = json!({"current_password": p1, "password": p2});
    api.ok("PATCH", "/api/users/me", Who::Cookie(&g1), Some(body)).await;
    api.ok("PATCH", &format!("/api/users/{gid}"), a, Some(json!({"password": p3}))).await;
    let g2 = api.sign_in("grace", p3).await;
    let created = api.call("POST", "/api/users/me/tokens", Who::Cookie(&g2), Some(json!({"name": "ci"}))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = created.json()["token_secret"].as_str().unwrap().to_string();
    assert_eq!(created.text().matches(&token).count(), 1, "the secret is shown once");
    let t = Who::Token(&token);
    for path in ["/api/users/me", "/api/users/me/tokens", "/api/users/me/sessions", "/api/users/me/usage"] {
        api.ok("GET", path, t, None).await;
    }
    for path in ["/api/users".to_string(), format!("/api/users/{gid}"), format!("/api/users/{gid}/sessions")] {
        api.ok("GET", &path, a, None).await;
    }
    let r = api.raw("GET", "/version", &[("cookie", &g2)], Body::empty()).await;
    assert_eq!(r.text(), FAKE_COMMIT);
    api.raw("GET", "/logout", &[("cookie", &g1)], Body::empty()).await;
    let audited = until("the audit of the token", async || {
        let r = api.get("/api/audit?limit=500", a).await;
        let evs = events(&r.json());
        has_event(&evs, "token.created", "success", "grace").then(|| r.text())
    })
    .await;
    let log = s.stdout.clone();
    let errors = s.stderr.clone();
    assert_eq!(s.stop(), Some(0));

    let cookie_value = |c: &str| c.split_once('=').unwrap().1.to_string();
    let mut secrets: Vec<(String, String)> = vec![
        ("the admin's password".into(), ADMIN_PW.into()),
        ("grace's first password".into(), p1.into()),
        ("grace's second password".into(), p2.into()),
        ("grace's third password".into(), p3.into()),
        ("a mistyped password".into(), typo.into()),
        ("a password hash".into(), "$argon2id$".into()),
        ("the API token".into(), token.clone()),
        ("the API token's hash".into(), hex(&sha256(token.as_bytes()))),
    ];
    for (name, c) in [("admin", &admin), ("grace 1", &g1), ("grace 2", &g2)] {
        let value = cookie_value(c);
        assert_eq!(value.len(), 64, "{c}");
        secrets.push((format!("{name}'s session cookie"), value.clone()));
        secrets.push((format!("{name}'s session key"), hex(&sha256(value.as_bytes()))));
    }
    let mut places: Vec<(String, String)> = vec![];
    for seen in api.seen.lock().unwrap().iter() {
        places.push((format!("the headers of {}", seen.what), seen.headers.clone()));
        if seen.body != created.text() {
            places.push((format!("the answer to {}", seen.what), seen.body.clone()));
        }
    }
    places.push(("GET /api/audit".into(), audited));
    places.push(("standard output".into(), log.lock().unwrap().join("\n")));
    places.push(("standard error".into(), errors.lock().unwrap().join("\n")));
    for (path, text) in
        files_under(&home.data_dir().join("coder-logs")).into_iter().chain(files_under(&home.data_dir().join("audit")))
    {
        places.push((path.display().to_string(), text));
    }
    assert!(places.iter().any(|(p, _)| p.ends_with(".jsonl")), "no audit file: {places:?}");
    for (place, text) in &places {
        for (name, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{name} is in {place}:\n{text}");
        }
    }
}

// ---- 11. the command line ----

#[tokio::test]
async fn account_actions_on_the_command_line() {
    let home = Home::new();
    home.write_config(&format!("deployment-mode: multi\n{DIRECTORY_ISOLATION}"));
    // No server running.
    let out = cli_ok(&home, &["--add-user", "bob", "--email", "b@x.io"], "Bob-pass-0001\n");
    assert!(out.contains("Created user bob (user)"), "{out}");
    let out = cli_ok(&home, &["--add-user", "carol", "--admin"], "Carol-pass-0001\n");
    assert!(out.contains("Created user carol (admin)"), "{out}");
    let list = cli_ok(&home, &["--list-users"], "");
    let line =
        |list: &str, name: &str| list.lines().find(|l| l.split_whitespace().next() == Some(name)).map(str::to_string);
    let bob = line(&list, "bob").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(bob.split_whitespace().collect::<Vec<_>>(), ["bob", "user", "active", "0", "never", "b@x.io"], "{list}");
    let carol = line(&list, "carol").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(carol.split_whitespace().take(3).collect::<Vec<_>>(), ["carol", "admin", "active"], "{list}");
    assert!(line(&list, "admin").is_none(), "no first admin is made by the command line: {list}");

    let out = cli_fails(&home, &["--disable-user", "nobody"], "");
    assert!(out.contains("no such user: nobody"), "{out}");
    let out = cli_fails(&home, &["--disable-user", "bob", "--enable-user", "bob"], "");
    assert!(out.contains("cannot be used together"), "{out}");
    let out = cli_fails(&home, &["--add-user", "dave"], "");
    assert!(out.contains("no password"), "{out}");
    let out = cli_fails(&home, &["--add-user", "dave"], "Short1\n");
    assert!(out.contains("password: must be at least 8 characters"), "{out}");
    let out = cli_fails(&home, &["--add-user", "BOB"], "Other-pass-0001\n");
    assert!(out.contains("username: already taken"), "{out}");
    let out = cli_fails(&home, &["--add-user", "Bad Name"], "Other-pass-0001\n");
    assert!(out.contains("username:"), "{out}");
    let out = cli_fails(&home, &["--remove-user", "carol"], "");
    assert!(out.contains("last active admin"), "{out}");
    assert!(!out.contains("Bob-pass-0001") && !out.contains("Other-pass-0001"));

    // A server on the same database (it makes no first admin: carol is one).
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert!(!home.data_dir().join("admin-password").exists());
    let api = Api::new(&s);
    let b1 = api.sign_in("bob", "Bob-pass-0001").await;
    assert_eq!(api.whoami(Who::Cookie(&b1)).await.as_deref(), Some("bob"));
    cli_ok(&home, &["--add-user", "eve"], "Eve-pass-0001\n");
    api.sign_in("eve", "Eve-pass-0001").await;

    let out = cli_ok(&home, &["--reset-password", "bob"], "Bob-pass-0002\n");
    assert!(out.contains("bob"), "{out}");
    until("the running server to refuse bob's session", async || {
        api.whoami(Who::Cookie(&b1)).await.is_none().then_some(())
    })
    .await;
    assert_eq!(login_error(&api.login("bob", "Bob-pass-0001", &[]).await).as_deref(), Some(INCORRECT));
    let b2 = api.sign_in("bob", "Bob-pass-0002").await;

    cli_ok(&home, &["--disable-user", "bob"], "");
    until("the running server to refuse a disabled bob", async || {
        api.whoami(Who::Cookie(&b2)).await.is_none().then_some(())
    })
    .await;
    assert_eq!(login_error(&api.login("bob", "Bob-pass-0002", &[]).await).as_deref(), Some(DISABLED));
    let list = cli_ok(&home, &["--list-users"], "");
    assert_eq!(line(&list, "bob").unwrap().split_whitespace().nth(2), Some("disabled"), "{list}");

    cli_ok(&home, &["--enable-user", "bob"], "");
    let b3 = until("bob to sign in again", async || {
        let r = api.login("bob", "Bob-pass-0002", &[]).await;
        r.session_cookie()
    })
    .await;
    let b4 = api.sign_in("bob", "Bob-pass-0002").await;
    let out = cli_ok(&home, &["--revoke-sessions", "bob"], "");
    assert!(out.contains("Revoked 2 session(s) of bob"), "{out}");
    until("the running server to refuse revoked sessions", async || {
        (api.whoami(Who::Cookie(&b3)).await.is_none() && api.whoami(Who::Cookie(&b4)).await.is_none()).then_some(())
    })
    .await;

    let b5 = api.sign_in("bob", "Bob-pass-0002").await;
    let out = cli_ok(&home, &["--remove-user", "bob"], "");
    assert!(out.contains("Removed bob"), "{out}");
    until("the running server to refuse a removed bob", async || {
        api.whoami(Who::Cookie(&b5)).await.is_none().then_some(())
    })
    .await;
    assert_eq!(login_error(&api.login("bob", "Bob-pass-0002", &[]).await).as_deref(), Some(INCORRECT));

    // The command line's actions are audited as its own.
    let carol = api.sign_in("carol", "Carol-pass-0001").await;
    let c = Who::Cookie(&carol);
    let all = until("the command line's audit", async || {
        let all = events(&api.audit(c, "limit=500").await);
        has_event(&all, "user.deleted", "success", "bob").then_some(all)
    })
    .await;
    for kind in ["user.created", "password.changed", "user.disabled", "user.enabled", "user.deleted"] {
        let e = all
            .iter()
            .find(|e| e["type"] == kind && e["username"] == "bob")
            .unwrap_or_else(|| panic!("{kind}: {all:#?}"));
        assert_eq!(e["actor"], "cli", "{e}");
    }
    assert_eq!(s.stop(), Some(0));

    let list = cli_ok(&home, &["--list-users"], "");
    assert!(line(&list, "bob").is_none(), "{list}");
    assert!(line(&list, "carol").is_some() && line(&list, "eve").is_some(), "{list}");
    // The flag does as the config file does.
    home.write_config("");
    let list = cli_ok(&home, &["--deployment-mode", "multi", "--list-users"], "");
    assert!(line(&list, "eve").is_some(), "{list}");
}

// ---- 12. single-user mode ----

/// In single-user mode `/api` is VS Code's, as in code-server; in multi-user mode it is ours:
/// JSON errors, and never forwarded.
#[tokio::test]
async fn api_is_vs_codes_in_single_user_mode() {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let s = InProcess::start(&home, &[], &[]).await;
    let c = s.client();
    let cookie = c.login("pw").await;
    let r = c.get_with("/api/users/me", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "GET", "{echo}");
    assert!(echo["url"].as_str().unwrap().ends_with("/api/users/me"), "{echo}");
    let unknown = c.get_with("/api/whatever", &[("cookie", &cookie)]).await.json();
    assert!(unknown["url"].as_str().unwrap().ends_with("/api/whatever"), "{unknown}");
    let r = c.get("/api/users/me").await;
    // Without a session it is refused as any VS Code path is (code-server's 401).
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(!home.data_dir().join("users.db").exists());
    assert!(!home.data_dir().join("audit").exists());

    let (_home, s) = multi(&[]).await;
    let api = Api::new(&s);
    let r = api.get("/api/users/me", Who::Nobody).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), json!({"error": "Unauthorized"}));
    let admin = api.sign_in("admin", ADMIN_PW).await;
    let me = api.ok("GET", "/api/users/me", Who::Cookie(&admin), None).await;
    assert_eq!(me["username"], "admin");
    assert!(me.get("method").is_none(), "{me}");
    for path in ["/api", "/api/whatever", "/api/users/me/nothing/here"] {
        let r = api.get(path, Who::Cookie(&admin)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{path}: {}", r.text());
    }
    // Everything else is still the one VS Code server's.
    let echo = api.raw("GET", "/some/vscode/path", &[("cookie", &admin)], Body::empty()).await.json();
    assert!(echo["url"].as_str().unwrap().ends_with("/some/vscode/path"), "{echo}");
}

/// A user disabled or deleted loses what they had open, not only their sessions: their
/// workspace stops (within a few seconds, however the account was changed), and with it an
/// editor or terminal WebSocket opened before.
#[tokio::test]
async fn disabling_or_deleting_a_user_cuts_their_open_websockets() {
    use std::io::{Read, Write};
    let home = Home::new();
    let s = multi_binary(&home, &[], ADMIN_ENV);
    let admin = sign_in(&s, "admin", ADMIN_PW).await;
    let origin = format!("http://{}", s.authority());
    let path = format!("/stable-{FAKE_COMMIT}?reconnectionToken=t-1&reconnection=false&skipWebSocketFrames=false");
    for (name, how) in [("gina", "disabled"), ("hank", "deleted")] {
        let password = format!("{name}-pass-0001");
        let body = json!({ "username": name, "password": password }).to_string();
        let made = api(&s, "POST", "/api/users", &admin, &body).await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
        let user = id(&made.json());
        let cookie = sign_in(&s, name, &password).await;
        // The editor's WebSocket starts their VS Code (the stand-in build echoes its bytes).
        let (head, mut ws) = ws_handshake(&s.authority(), &path, &[("Cookie", &cookie), ("Origin", &origin)]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.write_all(b"ping").unwrap();
        let mut echo = [0u8; 4];
        ws.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping");

        let changed = if how == "disabled" {
            api(&s, "PATCH", &format!("/api/users/{user}"), &admin, r#"{"active":false}"#).await
        } else {
            api(&s, "DELETE", &format!("/api/users/{user}"), &admin, "").await
        };
        assert!(changed.status.is_success(), "{}", changed.text());
        // The socket ends (EOF or a reset), well before the read timeout.
        ws.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rest = [0u8; 64];
        match ws.read(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("{n} more bytes instead of the end"),
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "the WebSocket of a user {how} stayed open: {e}"
            ),
        }
        // Audited (the audit log is written behind the request path).
        let by = format!("the account was {how}");
        until("the workspace.stopped event", async || {
            let audit = api(&s, "GET", "/api/audit?type=workspace.stopped", &admin, "").await.json();
            events(&audit).iter().any(|e| e["username"] == name && e["details"]["by"] == by).then_some(())
        })
        .await;
    }
}
