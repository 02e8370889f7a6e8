//! VS Code behind our binary: forwarding, the supervisor, static assets, the workbench routes,
//! the extension CLI and opening files in a running instance.
//!
//! Exact-byte forwarding cases use a stand-in server (tests/fixtures/fake-vscode) that echoes what
//! reaches it; everything a user sees runs against the real provisioned VS Code build.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use axum::body::Body;
use hyper::http::StatusCode;
use testkit::*;

/// A password server on the stand-in build that notes every connection it accepts in the
/// returned log file (which does not exist until something reaches it).
fn logged_fake_server(home: &Home, extra: &[&str]) -> (Server, PathBuf) {
    let log = home.path().join("fake.log");
    home.write_config("auth: password\npassword: pw\n");
    let build = fake_build(home);
    let mut args = vec!["--bind-addr", "127.0.0.1:0", "--vscode-dir", build.to_str().unwrap()];
    args.extend_from_slice(extra);
    let s = Server::start(home, &args, &[("FAKE_VSCODE_LOG", log.to_str().unwrap())]);
    (s, log)
}

#[tokio::test]
async fn forwarding_keeps_method_path_query_and_host() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let c = s.client();
    let cookies = format!("a=1; {cookie}; z=%20two");
    let r = c
        .get_with(
            "/some/p%20ath/?a=1&b=%2F&a=2&c",
            &[
                ("cookie", &cookies),
                ("host", "Example.TEST:9999"),
                ("x-custom", "kept"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "dropped"),
                ("accept-language", "fr"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["url"], "/some/p%20ath/?a=1&b=%2F&a=2&c");
    assert_eq!(echo["headers"]["host"], "Example.TEST:9999");
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert_eq!(echo["headers"]["accept-language"], "fr");
    assert_eq!(echo["headers"]["cookie"], "a=1; z=%20two", "our session cookie stays with us");
    assert!(echo["headers"]["x-hop"].is_null(), "headers named by Connection are hop-by-hop");

    // /vscode/... reaches the child as sent (it strips its own base path).
    let r = c.get_with("/vscode/x?y=1", &[("cookie", &cookie)]).await;
    assert_eq!(r.json()["url"], "/vscode/x?y=1");
    // Other methods, with their bodies streamed.
    let body = vec![7u8; 5 * 1024 * 1024 + 3];
    let r = c.send("POST", "/upload", &[("cookie", &cookie)], Body::from(body.clone())).await;
    let echo = r.json();
    assert_eq!(echo["bytes"], body.len());
    assert_eq!(echo["sha256"], code_server::util::hex(&code_server::util::sha256(&body)));
}

#[tokio::test]
async fn websocket_upgrades_are_checked_then_spliced() {
    let home = Home::new();
    let (s, log) = logged_fake_server(&home, &["--trusted-origins", "*.trusted.test"]);
    let a = s.authority();
    let path = format!("/stable-{FAKE_COMMIT}?reconnectionToken=abc-123&reconnection=false&skipWebSocketFrames=false");

    // Refused before anything reaches VS Code: no session, then a foreign Origin.
    let (head, _) = ws_handshake(&a, &path, &[]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let cookie = s.client().login("pw").await;
    let (head, _) = ws_handshake(&a, &path, &[("Cookie", &cookie), ("Origin", "http://evil.test")]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(!log.exists(), "nothing reached VS Code");

    // Our own origin, then a trusted one: 101 from the child, query byte for byte, and the
    // bytes spliced both ways untouched (whatever they are: no re-framing).
    for origin in [format!("http://{a}"), "https://ide.trusted.test".to_string()] {
        let (head, mut ws) = ws_handshake(&a, &path, &[("Cookie", &cookie), ("Origin", &origin)]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("x-upgrade-url: {}", path.to_ascii_lowercase())), "{head}");
        let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        ws.write_all(&payload).unwrap();
        let mut back = vec![0u8; payload.len()];
        ws.read_exact(&mut back).unwrap();
        assert_eq!(back, payload);
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("connection"));
}

#[tokio::test]
async fn unauthenticated_requests_never_reach_vscode() {
    let home = Home::new();
    let (s, log) = logged_fake_server(&home, &[]);
    let c = s.client();
    assert_eq!(c.get("/").await.status, StatusCode::FOUND);
    assert_eq!(c.get("/anything?x=1").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.send("POST", "/upload", &[], Body::from("data")).await.status, StatusCode::UNAUTHORIZED);
    let r = c.get(&format!("/stable-{FAKE_COMMIT}/static/out/vs/static-probe.js")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!log.exists(), "VS Code was not even started for unauthenticated requests");
    assert!(!s.stdout_text().contains("Starting VS Code"));
}

#[tokio::test]
async fn static_assets_are_served_by_the_front() {
    let home = Home::new();
    let (s, log) = logged_fake_server(&home, &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    for prefix in ["", "/vscode"] {
        let r = c
            .get_with(&format!("{prefix}/stable-{FAKE_COMMIT}/static/out/vs/static-probe.js"), &[("cookie", &cookie)])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
        assert!(r.header("content-type").unwrap().contains("javascript"));
        assert!(r.text().contains("static file served by the front"));
    }
    for bad in [
        format!("/stable-{FAKE_COMMIT}/static/../product.json"),
        format!("/stable-{FAKE_COMMIT}/static/%2e%2e/product.json"),
        format!("/stable-{FAKE_COMMIT}/static/out/"),
        format!("/stable-{FAKE_COMMIT}/static/out/missing.js"),
    ] {
        let r = c.get_with(&bad, &[("cookie", &cookie)]).await;
        assert!(matches!(r.status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST), "{bad}: {}", r.status);
    }
    assert!(!log.exists(), "static files never touch VS Code");
}

#[tokio::test]
async fn options_and_a_clean_environment_reach_the_child() {
    let home = Home::new();
    home.write_config("auth: password\npassword: from-file\n");
    let build = fake_build(&home);
    let s = Server::start(
        &home,
        &[
            "--bind-addr",
            "127.0.0.1:0",
            "--vscode-dir",
            build.to_str().unwrap(),
            "--app-name",
            "Dev Box",
            "--disable-update-check",
            "--disable-file-downloads",
            "--disable-workspace-trust",
            "--locale",
            "fr",
            "--link-protection-trusted-domains",
            "example.com",
            // A value starting with "-" must use the = form (code-server's parser rule).
            "--vscode-option=--enable-smoke-test-driver=false",
            "--proxy-domain",
            "dev.test",
        ],
        &[
            ("PASSWORD", "from-env"),
            ("GITHUB_TOKEN", "ghp_secret"),
            ("VSCODE_OPTIONS", "agents=true"),
            ("VSCODE_IPC_HOOK_CLI", "/outer/vscode.sock"),
            ("VSCODE_DEV", "1"),
            ("EXTENSIONS_GALLERY", "{}"),
        ],
    );
    let c = s.client();
    let cookie = c.login("from-env").await;
    let argv: Vec<String> = serde_json::from_value(c.get_with("/argv", &[("cookie", &cookie)]).await.json()).unwrap();
    let joined = argv.join(" ");
    for expected in [
        "--without-connection-token",
        "--accept-server-license-terms",
        "--server-base-path /vscode",
        "--auth password",
        "--app-name Dev Box",
        "--disable-update-check",
        "--disable-file-downloads",
        "--disable-workspace-trust",
        "--locale fr",
        "--link-protection-trusted-domains example.com",
        "--enable-smoke-test-driver=false",
        "--agents=true",
        &format!("--user-data-dir {}", home.data_dir().display()),
        &format!("--extensions-dir {}", home.data_dir().join("extensions").display()),
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in {joined}");
    }
    // The GitHub token reaches VS Code's argument parser, but through a pipe: neither the
    // process's command line (world-readable) nor its environment (inherited by terminals).
    assert!(argv.iter().any(|a| a == "--github-auth=ghp_secret"), "{joined}");
    assert!(!joined.contains("from-env"));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vscode_pid(&s))).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("ghp_secret"));
    let environ = std::fs::read(format!("/proc/{}/environ", vscode_pid(&s))).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("ghp_secret"));
    let env = c.get_with("/env", &[("cookie", &cookie)]).await.json();
    assert_eq!(env["PASSWORD"], serde_json::Value::Null);
    assert_eq!(env["HASHED_PASSWORD"], serde_json::Value::Null);
    assert_eq!(env["GITHUB_TOKEN"], serde_json::Value::Null);
    assert_eq!(env["VSCODE_IPC_HOOK_CLI"], serde_json::Value::Null, "an outer VS Code's variables are dropped");
    assert_eq!(env["VSCODE_PROXY_URI"], "//{{port}}.dev.test");
    assert_eq!(env["EXTENSIONS_GALLERY"], "{}");
    assert_eq!(env["CODE_SERVER_SESSION_SOCKET"], home.data_dir().join("code-server-ipc.sock").to_str().unwrap());
}

#[tokio::test]
async fn the_supervisor_restarts_a_crashed_server() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let c = s.client();
    assert_eq!(c.get_with("/version", &[("cookie", &cookie)]).await.text(), FAKE_COMMIT);
    assert_eq!(c.get_with("/crash", &[("cookie", &cookie)]).await.text(), "bye");
    eventually("the exit to be logged", || s.stderr_text().contains("VS Code server exited")).await;
    assert!(s.stderr_text().contains("exit status: 3"), "{}", s.stderr_text());
    // The next request waits for the restarted child instead of failing.
    let r = c.get_with("/version", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), FAKE_COMMIT);
    assert_eq!(s.stdout_text().matches("Starting VS Code").count(), 2);
}

#[tokio::test]
async fn real_workbench_routes() {
    let home = Home::with_vscode();
    home.write_config("auth: password\npassword: pw\n");
    let project = home.path().join("my project");
    std::fs::create_dir_all(&project).unwrap();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", project.to_str().unwrap()], &[]);
    let c = s.client();
    let cookie = c.login("pw").await;
    let get = |p: String| {
        let (c, cookie) = (c.clone(), cookie.clone());
        async move { c.get_with(&p, &[("cookie", &cookie), ("accept-encoding", "br, gzip")]).await }
    };

    // A bare visit goes to the folder given on the command line.
    let r = get("/".into()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let folder = project.to_str().unwrap().replace(' ', "%20");
    assert_eq!(r.header("location"), Some(format!("./?folder={folder}").as_str()));
    let r = get(format!("/?folder={folder}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.header("content-security-policy").is_some());
    let html = r.text();
    let commit = s.stdout_text().split("(commit ").nth(1).unwrap()[..40].to_string();
    assert!(html.contains(&format!("stable-{commit}/static/")), "workbench assets are relative");
    assert!(html.contains("./_static/src/browser/media/pwa-icon-192.png"), "our assets, relative");
    assert!(html.contains("&quot;logoutEndpoint&quot;:&quot;./logout&quot;") || html.contains("./logout"));

    // It was remembered: next time, even without command-line paths, the same folder.
    eventually("coder.json", || {
        std::fs::read_to_string(home.data_dir().join("coder.json")).is_ok_and(|t| t.contains("my project"))
    })
    .await;
    let again = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let r = again.client().get_with("/", &[("cookie", &again.client().login("pw").await)]).await;
    assert_eq!(
        r.header("location"),
        Some(format!("./?folder={folder}").as_str()),
        "remembered, not on the command line"
    );
    drop(again);
    let r = get("/vscode".into()).await;
    assert_eq!(r.header("location"), Some(format!("./vscode?folder={folder}").as_str()));
    let r = get("/vscode/".into()).await;
    assert_eq!(r.header("location"), Some(format!("./../vscode/?folder={folder}").as_str()));
    let r = get(format!("/vscode/?folder={folder}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("./../_static/src/browser/media/pwa-icon-192.png"), "relative to /vscode/");
    // ?ew=true opens an empty window and stops the redirect.
    assert_eq!(get("/?ew=true".into()).await.status, StatusCode::OK);
    eventually("coder.json to forget the folder", || {
        std::fs::read_to_string(home.data_dir().join("coder.json")).is_ok_and(|t| !t.contains("my project"))
    })
    .await;
    assert_eq!(
        get("/".into()).await.header("location"),
        Some(format!("./?folder={folder}").as_str()),
        "positional again"
    );

    // Static files come precompressed from the build, with long-lived caching.
    let r = get(format!("/stable-{commit}/static/out/nls.messages.js")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let plain = c.get_with(&format!("/stable-{commit}/static/out/nls.messages.js"), &[("cookie", &cookie)]).await;
    assert!(plain.header("content-encoding").is_none());
    assert!(plain.body.len() > r.body.len());

    // The mint key: 32 bytes, the same each time, kept 0600.
    let k1 = c.send("POST", "/mint-key", &[("cookie", &cookie)], Body::empty()).await.body;
    let k2 = c.send("POST", "/vscode/mint-key", &[("cookie", &cookie)], Body::empty()).await.body;
    assert_eq!(k1.len(), 32);
    assert_eq!(k1, k2);
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(home.data_dir().join("serve-web-key-half")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // SIGTERM stops VS Code's whole process group and exits 0.
    let pgid = vscode_pid(&s);
    assert_eq!(s.stop(), Some(0));
    assert_no_orphans(pgid, None).await;
}

#[tokio::test]
async fn ignore_last_opened() {
    let home = Home::new();
    home.write_config("auth: none\n");
    std::fs::create_dir_all(home.data_dir()).unwrap();
    std::fs::write(home.data_dir().join("coder.json"), r#"{"query":{"folder":"/remembered"}}"#).unwrap();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert_eq!(s.client().get("/").await.header("location"), Some("./?folder=/remembered"));
    drop(s);
    let ws = home.path().join("w.code-workspace");
    std::fs::write(&ws, "{}").unwrap();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "-e", ws.to_str().unwrap()], &[]);
    let expected = format!("./?workspace={}", ws.display());
    assert_eq!(s.client().get("/").await.header("location"), Some(expected.as_str()));
}

fn make_vsix(dir: &Path) -> PathBuf {
    let out = dir.join("hello-fixture.vsix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_vsix.py");
    let status = std::process::Command::new("python3").arg(script).arg(&out).status().unwrap();
    assert!(status.success());
    out
}

#[test]
fn extension_cli() {
    let home = Home::with_vscode();
    home.write_config("auth: none\n");
    let vsix = make_vsix(home.path());
    let out = run(&home, &["--install-extension", vsix.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("was successfully installed"), "{}", out.stdout);
    assert!(
        home.data_dir()
            .join("extensions")
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with("code-server-tests.hello-fixture-1.2.3") })
    );

    let out = run(&home, &["--list-extensions", "--show-versions"], &[]);
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout.trim(), "code-server-tests.hello-fixture@1.2.3");
    let out = run(&home, &["--locate-extension", "code-server-tests.hello-fixture"], &[]);
    assert!(out.stdout.contains(home.data_dir().join("extensions").to_str().unwrap()), "{}", out.stdout);

    // A gallery install with no gallery: VS Code's error and exit status pass through, the
    // same status VS Code's own CLI gives when run by hand on the same directories.
    let out = run(&home, &["--install-extension", "no.such-extension"], &[("EXTENSIONS_GALLERY", "{}")]);
    let vscode = vscode_dir().join("code-server/lib/vscode");
    let direct = std::process::Command::new(vscode_dir().join("node/bin/node"))
        .arg(vscode.join("out/server-main.js"))
        .args(["--install-extension", "no.such-extension", "--accept-server-license-terms"])
        .arg("--extensions-dir")
        .arg(home.data_dir().join("extensions"))
        .arg("--user-data-dir")
        .arg(home.data_dir())
        .env("EXTENSIONS_GALLERY", "{}")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_ne!(direct.status.code(), Some(0));
    assert_eq!(out.code, direct.status.code(), "{}{}", out.stdout, out.stderr);

    let out = run(&home, &["--uninstall-extension", "code-server-tests.hello-fixture"], &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let out = run(&home, &["--list-extensions"], &[]);
    assert_eq!(out.stdout.trim(), "");
    assert!(!out.stdout.contains("listening"), "extension commands never serve");
}

/// `code-server FILE` while an instance runs: the registry names the window, and the binary
/// sends it the open request and exits. (The window here is a stand-in socket; the browser test
/// does it with a real window.)
#[tokio::test]
async fn open_in_an_existing_instance() {
    let home = Home::new();
    home.write_config("auth: none\n");
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let registry = home.data_dir().join("code-server-ipc.sock");
    // The registry starts with the server, just after the "listening" line.
    let line = format!("Session server listening on {}", registry.display());
    eventually("the session server", || s.stdout_text().contains(&line)).await;

    // A window: accepts one request and records it.
    let window = home.path().join("window.sock");
    let listener = std::os::unix::net::UnixListener::bind(&window).unwrap();
    let project = home.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    let add = serde_json::json!({"entry": {"workspace": {"id": "w", "folders": [{"uri": {"path": project}}]}, "socketPath": window}});
    let r = Client::unix(&registry)
        .send("POST", "/add-session", &[("content-type", "application/json")], Body::from(add.to_string()))
        .await;
    assert_eq!(r.text(), "session added");

    let file = project.join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    // The registry first probes the window with a bare connection; the open request follows.
    let received = std::thread::spawn(move || {
        loop {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
                        return body.to_string();
                    }
                }
            }
        }
    });
    let out = run(&home, &[file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("listening"), "it handed the file over instead of serving");
    let body: serde_json::Value = serde_json::from_str(&received.join().unwrap()).unwrap();
    assert_eq!(body["type"], "open");
    assert_eq!(body["fileURIs"], serde_json::json!([file]));
    assert_eq!(body["folderURIs"], serde_json::json!([]));

    // -r with no window for the path: code-server's error.
    std::fs::remove_file(&window).unwrap();
    let out = run(&home, &["-r", file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("No opened code-server instances found to handle"), "{}", out.stderr);
    drop(s);
}

/// While VS Code starts, a request waits for it up to 20 s and then gets a 503 page that reloads
/// itself (JSON clients a 503 with Retry-After); `/healthz` never waits meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_gets_the_starting_page_and_healthz_never_waits() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[("FAKE_VSCODE_READY_AFTER_MS", "30000")]).await;
    let c = s.client();
    let page = {
        let (c, cookie) = (c.clone(), cookie.clone());
        tokio::spawn(async move { c.get_with("/", &[("cookie", &cookie), ("accept", "text/html")]).await })
    };
    let api = {
        let (c, cookie) = (c.clone(), cookie.clone());
        tokio::spawn(async move { c.get_with("/anything", &[("cookie", &cookie)]).await })
    };
    eventually("VS Code to be starting", || s.stdout_text().contains("Starting VS Code")).await;
    // Meanwhile /healthz answers every time, well before the page's wait is over.
    for _ in 0..5 {
        assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
    }
    assert!(!page.is_finished(), "the page is still waiting for VS Code");
    let r = page.await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("2"));
    let html = r.text();
    assert!(
        html.contains(r#"http-equiv="refresh" content="2""#) && html.contains("VS Code is still starting"),
        "{html}"
    );
    let json = api.await.unwrap();
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json.header("retry-after"), Some("2"));
    assert!(json.json()["error"].as_str().unwrap().contains("still starting"));
}

/// Hop-by-hop headers of VS Code's answers stay with us, including those its `Connection`
/// names; the rest arrive.
#[tokio::test]
async fn hop_by_hop_headers_of_vscode_answers_are_not_forwarded() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let r = s.client().get_with("/hop", &[("cookie", &cookie)]).await;
    assert_eq!(r.text(), "hop");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for gone in ["x-hop-private", "keep-alive", "proxy-authenticate", "upgrade"] {
        assert_eq!(r.header(gone), None, "{gone}");
    }
    assert_ne!(r.header("connection"), Some("keep-alive, x-hop-private"));
}
