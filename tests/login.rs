//! Login, sessions, logout and code-server's own routes: in the test's own runtime where only
//! the routes matter, against the real binary where its log lines, restarts or exits do.

use axum::body::Body;
use hyper::http::StatusCode;
use testkit::*;

fn start(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut all = vec!["--bind-addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Server::start(home, &all, env)
}

/// A password server in the test's own runtime.
async fn password_server(args: &[&str]) -> (Home, InProcess) {
    let home = Home::new();
    home.write_config("auth: password\npassword: correct-horse\n");
    let s = InProcess::start(&home, args, &[]).await;
    (home, s)
}

/// A password server as a process of its own.
fn password_binary(args: &[&str]) -> (Home, Server) {
    let home = Home::new();
    home.write_config("auth: password\npassword: correct-horse\n");
    let s = start(&home, args, &[]);
    (home, s)
}

#[tokio::test]
async fn login_page_has_code_server_structure() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let r = c.get("/login").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    for needle in [
        "<title>code-server login</title>",
        r#"<h1 class="main">Welcome to code-server</h1>"#,
        "Please log in below. Check the config file for the password.",
        r#"<form class="login-form" method="post">"#,
        r#"<input id="base" type="hidden" name="base" value="." />"#,
        r#"name="password""#,
        "required",
        r#"placeholder="PASSWORD""#,
        r#"value="SUBMIT""#,
        r#"href="./_static/src/browser/pages/global.css""#,
        r#"href="./_static/src/browser/pages/login.css""#,
        r#"href="./manifest.json""#,
        "style-src 'self'; script-src 'self' 'unsafe-inline'; manifest-src 'self'; img-src 'self' data:; font-src 'self' data:;",
        r#"<meta id="coder-options" data-settings="{&#34;base&#34;:&#34;.&#34;"#,
    ] {
        assert!(page.contains(needle), "missing {needle}\n{page}");
    }
    assert!(!page.contains("class=\"error\""));
    // Deeper paths get a deeper relative root.
    let page = c.get("/login/").await.text();
    assert!(page.contains(r#"value="./..""#) && page.contains(r#"href="./../_static/src/browser/pages/login.css""#));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn branding_and_custom_strings_are_escaped() {
    let home = Home::new();
    home.write_config("auth: password\npassword: x\n");
    std::fs::write(home.path().join("strings.json"), r#"{"LOGIN_BELOW": "Sign in to {{app}} <b>now</b>."}"#).unwrap();
    let s = start(&home, &["--app-name", "My <IDE>", "--i18n", "strings.json"], &[]);
    let page = s.client().get("/login").await.text();
    assert!(
        page.contains("<title>My &#60;IDE&#62; login</title>") || page.contains("<title>My &lt;IDE&gt; login</title>"),
        "{page}"
    );
    assert!(page.contains("Welcome to My &"), "{page}");
    assert!(page.contains("Sign in to My &"), "{page}");
    assert!(!page.contains("<b>now</b>"));
    drop(s);
    let s = start(&home, &["-w", "Hello there"], &[]);
    assert!(s.client().get("/login").await.text().contains(r#"<h1 class="main">Hello there</h1>"#));
}

#[tokio::test]
async fn every_login_outcome() {
    // The failed-login line is the binary's log.
    let (_home, s) = password_binary(&[]);
    let c = s.client();

    let r = c.post_form("/login", "password=", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(r#"<div class="error">Missing password</div>"#), "{}", r.text());
    let r = c.post_form("/login", "base=.", &[]).await;
    assert!(r.text().contains("Missing password"));

    let r = c.post_form("/login", "password=wrong-battery", &[("user-agent", "test-agent/1.0")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(r#"<div class="error">Incorrect password</div>"#));
    assert!(r.session_cookie().is_none());
    eventually("the failed-login log line", || s.stderr_text().contains("Failed login attempt")).await;
    let log = s.stderr_text();
    let line = log.lines().find(|l| l.contains("Failed login attempt")).unwrap();
    assert!(line.contains("] warn  Failed login attempt {"), "{line}");
    assert!(line.contains(r#""remoteAddress":"127.0.0.1""#), "{line}");
    assert!(line.contains(r#""userAgent":"test-agent/1.0""#), "{line}");
    assert!(line.contains(r#""timestamp":"#), "{line}");
    assert!(
        !log.contains("wrong-battery") && !s.stdout_text().contains("wrong-battery"),
        "the password is never logged"
    );

    // JSON bodies work too.
    let r = c
        .send("POST", "/login", &[("content-type", "application/json")], Body::from(r#"{"password":"correct-horse"}"#))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("./"));
    let cookie = r.session_cookie().unwrap();
    let token = cookie.split_once('=').unwrap().1;
    assert_eq!(token.len(), 64, "a 256-bit token, hex");
    assert!(!token.contains("argon") && !token.contains("correct"));

    // Already logged in: /login bounces to `to`.
    let r = c.get_with("/login?to=/vscode&x=1", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("./vscode?x=1"));

    // A malformed JSON body is a 400 in code-server's shape.
    let r = c.send("POST", "/login", &[("content-type", "application/json")], Body::from("{oops")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn rate_limit_sequence() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    // Successful logins never count.
    for _ in 0..20 {
        c.login("correct-horse").await;
    }
    for i in 1..=14 {
        let r = c.post_form("/login", "password=nope", &[]).await;
        assert!(r.text().contains("Incorrect password"), "attempt {i}");
    }
    // The 15th is refused even with the right password.
    let r = c.post_form("/login", "password=correct-horse", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(r#"<div class="error">Login rate limited!</div>"#), "{}", r.text());
    assert!(r.session_cookie().is_none());
}

#[tokio::test]
async fn rate_limit_is_per_client_behind_a_trusted_proxy() {
    let (_home, s) = password_server(&["--trusted-proxies", "127.0.0.1"]).await;
    let c = s.client();
    for _ in 0..14 {
        let r = c.post_form("/login", "password=nope", &[("x-forwarded-for", "203.0.113.7")]).await;
        assert!(r.text().contains("Incorrect password"));
    }
    let r = c.post_form("/login", "password=nope", &[("x-forwarded-for", "203.0.113.7")]).await;
    assert!(r.text().contains("Login rate limited!"));
    // The owner, at another address, is not locked out by the attacker.
    let r = c.post_form("/login", "password=correct-horse", &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_the_proxy_is_trusted() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    for i in 0..14 {
        c.post_form("/login", "password=nope", &[("x-forwarded-for", &format!("203.0.113.{i}"))]).await;
    }
    let r = c.post_form("/login", "password=nope", &[("x-forwarded-for", "198.51.100.1")]).await;
    assert!(r.text().contains("Login rate limited!"), "a spoofed header must not reset the limit");
}

#[tokio::test]
async fn cookie_attributes() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let r = c.post_form("/login", "password=correct-horse&base=.&href=http%3A%2F%2F127.0.0.1%2Flogin", &[]).await;
    let set = &r.set_cookies()[0];
    let attrs: Vec<&str> = set.split("; ").collect();
    assert!(attrs[0].starts_with("code-server-session="));
    assert_eq!(&attrs[1..], &["Path=/", "HttpOnly", "SameSite=Lax"], "{set}");

    // Behind a proxy at https://ex.com/ide/ that forwards the host: Path and Domain follow the
    // public URL.
    let href = "password=correct-horse&base=.&href=https%3A%2F%2Fex.com%2Fide%2Flogin";
    let r = c.post_form("/login?to=/x", href, &[("x-forwarded-host", "ex.com")]).await;
    let set = &r.set_cookies()[0];
    assert!(set.contains("; Domain=ex.com; Path=/ide; HttpOnly; SameSite=Lax"), "{set}");
    assert_eq!(r.header("location"), Some("./x"));
    // The same href sent to another host (a login link from elsewhere) scopes nothing.
    let r = c.post_form("/login?to=/x", href, &[]).await;
    let set = &r.set_cookies()[0];
    assert_eq!(&set.split("; ").collect::<Vec<_>>()[1..], &["Path=/", "HttpOnly", "SameSite=Lax"], "{set}");
    drop(s);

    let (_home, s) = password_server(&["--cookie-suffix", "dev box"]).await;
    let cookie = s.client().login("correct-horse").await;
    assert!(cookie.starts_with("code-server-session-dev-box="), "{cookie}");
    // The suffixed cookie authenticates; the plain name does not.
    let token = cookie.split_once('=').unwrap().1;
    let c = s.client();
    assert!(c.authenticated(&cookie).await);
    let plain = format!("code-server-session={token}");
    assert!(!c.authenticated(&plain).await);
}

#[tokio::test]
async fn logout_revokes_the_session() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let cookie = c.login("correct-horse").await;
    assert!(c.authenticated(&cookie).await);

    let r = c.get_with("/logout?to=/foo&base=.&href=http%3A%2F%2F127.0.0.1%2F&keep=1", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("./foo?keep=1"));
    let cleared = &r.set_cookies()[0];
    assert!(
        cleared.starts_with("code-server-session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly"),
        "{cleared}"
    );
    // The old cookie no longer authenticates, even if the browser kept it.
    let r = c.get_with("/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("./login"));
    let r = c.get_with("/anything", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn restart_keeps_sessions_and_password_change_revokes_them() {
    let home = Home::new();
    home.write_config("auth: password\npassword: first-password\n");
    let s = start(&home, &[], &[]);
    let cookie = s.client().login("first-password").await;
    assert_eq!(s.stop(), Some(0));

    let s = start(&home, &[], &[]);
    assert!(s.client().authenticated(&cookie).await, "still logged in after a restart");
    assert_eq!(s.stop(), Some(0));

    home.write_config("auth: password\npassword: second-password\n");
    let s = start(&home, &[], &[]);
    let c = s.client();
    let r = c.get_with("/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::FOUND, "a new password revokes old sessions");
    assert!(c.post_form("/login", "password=first-password", &[]).await.text().contains("Incorrect password"));
    c.login("second-password").await;
    // The store never holds the token itself.
    let store = std::fs::read_to_string(home.data_dir().join("code-server-sessions.json")).unwrap();
    assert!(!store.contains(cookie.split_once('=').unwrap().1));
}

#[tokio::test]
async fn redirect_targets_follow_the_spec_table() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let loc = |r: &Resp| r.header("location").map(str::to_string);
    let cases: &[(&str, &str, &str)] = &[
        ("GET", "/", "./login"),
        ("GET", "/vscode", "./login?to=/vscode"),
        ("GET", "/vscode/", "./../login?to=/vscode/"),
        // code-server adds an empty `to=` here (its "self" looks at the raw URL); we don't.
        ("GET", "/?folder=/x", "./login?folder=/x"),
    ];
    for (method, path, expected) in cases {
        let r = c.send(method, path, &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::FOUND, "{method} {path}");
        assert_eq!(loc(&r).as_deref(), Some(*expected), "{method} {path}");
    }
    let good = "password=correct-horse";
    for (path, expected) in [
        ("/login?to=/vscode", "./vscode"),
        ("/login", "./"),
        ("/login/", "./../"),
        ("/login?folder=/a/b", "./?folder=/a/b"),
        ("/login?to=//evil.com", "./evil.com"),
        ("/login?to=https://evil.com/x", "./https:/evil.com/x"),
        ("/login?to=/%5C%5Cevil.com", "./%5C%5Cevil.com"),
    ] {
        let r = c.post_form(path, good, &[]).await;
        assert_eq!(r.status, StatusCode::FOUND, "{path}");
        assert_eq!(loc(&r).as_deref(), Some(expected), "{path}");
    }
    drop(s);

    let home = Home::new();
    home.write_config("auth: none\n");
    let s = start(&home, &[], &[]);
    let c = s.client();
    let r = c.get("/login?to=/x").await;
    assert_eq!(loc(&r).as_deref(), Some("./?to=/x"));
    let r = c.post_form("/login/", "password=x", &[]).await;
    assert_eq!(loc(&r).as_deref(), Some("./../"));
    assert!(c.authenticated("").await, "auth none: everyone is in");
}

#[tokio::test]
async fn error_shapes() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let r = c.get("/some/deep/path").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), serde_json::json!({"error": "Unauthorized"}));

    let r = c.get_with("/some/deep/path?to=/home", &[("accept", "text/html,application/xhtml+xml")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    for needle in [
        "<title>401 - code-server</title>",
        r#"<h2 class="header">401</h2>"#,
        r#"<div class="body">Unauthorized</div>"#,
        r#"href="./../../home""#,
        r#"href="./../../_static/src/browser/pages/error.css""#,
    ] {
        assert!(page.contains(needle), "missing {needle}\n{page}");
    }

    let cookie = c.login("correct-horse").await;
    let r = c.send("POST", "/mint-key", &[("accept", "text/html")], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("<title>401 - code-server</title>"));
    let r = c.send("GET", "/mint-key", &[("cookie", &cookie)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // Bodies over 100 kB on our own routes.
    let big = format!("password={}", "x".repeat(200 * 1024));
    let r = c.post_form("/login", &big, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].is_string());

    let r = c.send("DELETE", "/login", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn static_files_and_traversal() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let r = c.get("/_static/src/browser/pages/global.css").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=0"));
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(
        r.body,
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/static/src/browser/pages/global.css")).unwrap()
    );
    let r = c.get_with("/_static/src/browser/pages/global.css", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    let r = c.send("HEAD", "/_static/src/browser/media/pwa-icon-192.png", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("image/png"));
    let r = c.get("/_static/out/browser/serviceWorker.js").await;
    assert_eq!(r.header("service-worker-allowed"), Some("/"));
    let r = c.send("POST", "/_static/src/browser/pages/global.css", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    for path in [
        "/_static/../Cargo.toml",
        "/_static/%2e%2e/Cargo.toml",
        "/_static/src/..%2f..%2fCargo.toml",
        "/_static/src/%2e%2e/%2e%2e/src/main.rs",
        "/_static/..%5c..%5cCargo.toml",
        "/_static/src/browser",
        "/_static/src/browser/",
        "/_static/",
        "/_static/nope.css",
        "/_static//etc/passwd",
    ] {
        let r = c.get(path).await;
        assert!(r.status == StatusCode::NOT_FOUND || r.status == StatusCode::BAD_REQUEST, "{path}: {}", r.status);
        if r.status == StatusCode::NOT_FOUND {
            assert_eq!(r.json(), serde_json::json!({"error": "Not Found"}), "{path}");
        }
        assert!(!r.text().contains('/') || r.text().contains("Not Found"), "{path} leaks: {}", r.text());
    }
}

#[tokio::test]
async fn public_files_and_manifest() {
    let home = Home::new();
    home.write_config("auth: password\npassword: x\n");
    let s = start(&home, &["--app-name", "Dev Box"], &[]);
    let c = s.client();
    let r = c.get("/robots.txt").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "User-agent: *\nDisallow: /\n");
    for p in ["/security.txt", "/.well-known/security.txt"] {
        let r = c.get(p).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.text().contains("Contact: "));
    }
    let r = c.get("/manifest.json").await;
    assert_eq!(r.header("content-type"), Some("application/manifest+json"));
    let m = r.json();
    assert_eq!(m["name"], "Dev Box");
    assert_eq!(m["short_name"], "Dev Box");
    assert_eq!(m["start_url"], ".");
    assert_eq!(m["display"], "fullscreen");
    assert_eq!(m["icons"][0]["src"], "./_static/src/browser/media/pwa-icon-192.png");
    assert_eq!(m["icons"][3]["purpose"], "maskable");
    assert!(r.text().contains("\n  \"name\""), "pretty-printed");
    let m = c.get("/vscode/manifest.json").await.json();
    assert_eq!(m["icons"][1]["src"], "./../_static/src/browser/media/pwa-icon-512.png");
    // Every icon the manifest names exists.
    for i in 0..4 {
        let src = m["icons"][i]["src"].as_str().unwrap().trim_start_matches("./..");
        assert_eq!(c.get(src).await.status, StatusCode::OK, "{src}");
    }
}

#[tokio::test]
async fn healthz_and_its_websocket() {
    let (_home, s) = password_server(&[]).await;
    let c = s.client();
    let h = c.get("/healthz").await.json();
    assert_eq!(h, serde_json::json!({"status": "expired", "lastHeartbeat": 0}));
    assert_eq!(c.get("/healthz/").await.json()["status"], "expired", "/healthz is not activity");
    c.get("/login").await;
    let r = c.get("/healthz").await;
    assert_eq!(r.text().find("status"), Some(2), "status comes first");
    let h = r.json();
    assert_eq!(h["status"], "alive");
    assert!(h["lastHeartbeat"].as_u64().unwrap() > 0);

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let stream = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/healthz", s.authority()), stream).await.unwrap();
    ws.send(Message::Text("ping".into())).await.unwrap();
    let reply = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["event"], "health");
    assert_eq!(v["status"], "alive");
}

/// Argon2 runs on the blocking pool behind a semaphore: a login storm does not stall others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_storm_does_not_stall_other_requests() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    // code-server's own parameters (m=64 MiB, t=3, p=4).
    let params = argon2::Params::new(65536, 3, 4, None).unwrap();
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let phc =
        hasher.hash_password(b"right", &SaltString::encode_b64(b"storm-salt-bytes").unwrap()).unwrap().to_string();
    let home = Home::new();
    home.write_config(&format!("auth: password\nhashed-password: '{phc}'\n"));
    let s = start(&home, &["--trusted-proxies", "127.0.0.1"], &[]);
    let c = s.client();
    assert!(s.stdout_text().contains("Using hashed-password from"));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut logins = Vec::new();
    for i in 0..30 {
        let (c, done) = (c.clone(), done.clone());
        logins.push(tokio::spawn(async move {
            // Distinct client addresses so the limiter lets every attempt reach argon2.
            let xff = format!("10.9.{}.{}", i / 200, i % 200 + 1);
            let r = c.post_form("/login", "password=wrong", &[("x-forwarded-for", &xff)]).await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r
        }));
    }
    // Give the storm a head start, then ask for cheap pages: they answer while logins are
    // still queued behind argon2.
    tokio::task::yield_now().await;
    for _ in 0..5 {
        assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
        assert_eq!(c.get("/_static/src/browser/pages/login.css").await.status, StatusCode::OK);
    }
    let finished_when_others_answered = done.load(std::sync::atomic::Ordering::SeqCst);
    // Each is refused as a wrong password; on a machine loaded enough that the queue outlasts
    // our routes' 60 s deadline, the last ones get its 408 instead (never a hang).
    let mut refused = 0;
    for l in logins {
        let r = l.await.unwrap();
        if r.text().contains("Incorrect password") {
            refused += 1;
        } else {
            assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{}", r.text());
        }
    }
    assert!(refused >= 10, "only {refused} logins were checked within the deadline");
    // Each wrong password costs argon2 at code-server's parameters, two at a time at most on
    // these cores: cheap pages answered while all but the first few logins were still queued.
    assert!(finished_when_others_answered <= 10, "{finished_when_others_answered} logins had to finish first");
    // The right password still works.
    c.login("right").await;
}

/// Use recorded lazily is written out at shutdown; a session file that cannot be read is moved
/// aside (never lost) and the server starts with none.
#[tokio::test]
async fn sessions_are_written_at_shutdown_and_a_corrupt_file_is_kept_aside() {
    let home = Home::new();
    home.write_config("auth: password\npassword: correct-horse\n");
    let file = home.data_dir().join("code-server-sessions.json");
    let last_seen = || -> Vec<(u64, u64)> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        v["sessions"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| (r["created"].as_u64().unwrap(), r["last_seen"].as_u64().unwrap()))
            .collect()
    };
    let s = start(&home, &["--session-timeout", "20"], &[]);
    let c = s.client();
    let cookie = c.login("correct-horse").await;
    let [(created, seen)] = last_seen()[..] else { panic!("one session") };
    assert_eq!(created, seen);
    // Used a few seconds later: recorded in memory (a tenth of the timeout has passed).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(c.authenticated(&cookie).await);
    assert_eq!(last_seen()[0].1, seen, "not written on the request's path");
    assert_eq!(s.stop(), Some(0));
    assert!(last_seen()[0].1 >= seen + 2000, "written at shutdown");

    std::fs::write(&file, b"{ this is not json").unwrap();
    let s = start(&home, &[], &[]);
    let aside: Vec<_> = std::fs::read_dir(home.data_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("code-server-sessions.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"{ this is not json");
    assert!(s.stderr_text().contains("was unreadable"), "{}", s.stderr_text());
    assert!(!s.client().authenticated(&cookie).await, "the old session is gone");
    s.client().login("correct-horse").await;
}
