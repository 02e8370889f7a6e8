//! What code-server users expect from the real binary: log files, signals, versions, language,
//! error names, first-run behaviour, restarts.

use hyper::http::StatusCode;
use testkit::*;

const PASSWORD: &str = "correct-horse";

fn password_home() -> Home {
    password_home_on(Home::new())
}

/// [`password_home`] whose servers run the real VS Code build.
fn password_vscode_home() -> Home {
    password_home_on(Home::with_vscode())
}

fn password_home_on(home: Home) -> Home {
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    home
}

/// code-server mirrors its output to `<data dir>/coder-logs/code-server-std{out,err}.log`.
#[tokio::test]
async fn output_is_mirrored_to_log_files_in_the_data_dir() {
    let home = password_home();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let r = s.client().post_form("/login", "password=wrong", &[]).await;
    assert!(r.text().contains("Incorrect password"));
    let logs = home.data_dir().join("coder-logs");
    let out = logs.join("code-server-stdout.log");
    let err = logs.join("code-server-stderr.log");
    eventually("the failed login in the stderr log", || {
        std::fs::read_to_string(&err).is_ok_and(|t| t.contains("Failed login attempt"))
    })
    .await;
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(stdout.contains("HTTP server listening on http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("Using user-data-dir"), "{stdout}");
    assert!(!stdout.contains("Failed login attempt"), "warnings go to the stderr log only");
    // The same lines as on the terminal.
    let first = s.stdout.lock().unwrap().iter().find(|l| l.contains("server listening on")).cloned().unwrap();
    assert!(stdout.contains(&first));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    // A command that does not serve writes no server log.
    let other = Home::new();
    let ran = run(&other, &["--help"], &[]);
    assert_eq!(ran.code, Some(0));
    assert!(!other.data_dir().join("coder-logs").exists());
    drop(s);
}

/// Back-off is for crash loops: crashes soon after starting wait 1 s, then 2 s; a server that
/// ran healthily for 30 s is restarted at once, and the back-off starts over.
#[tokio::test]
async fn restarts_back_off_only_in_crash_loops() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let c = s.client();
    let crash_and_wait = async |n: usize| {
        assert_eq!(c.get_with("/crash", &[("cookie", &cookie)]).await.text(), "bye");
        eventually("the restart", || s.stdout_text().matches("VS Code is ready").count() > n).await;
    };
    assert_eq!(c.get_with("/version", &[("cookie", &cookie)]).await.text(), FAKE_COMMIT);
    crash_and_wait(1).await;
    crash_and_wait(2).await;
    let delays = |s: &Server| -> Vec<String> {
        s.stderr_text()
            .lines()
            .filter_map(|l| l.split("restarting in ").nth(1)?.split(". Last").next().map(str::to_string))
            .collect()
    };
    assert_eq!(delays(&s), ["1.0s", "2.0s"], "{}", s.stderr_text());
    // Healthy for longer than 30 s: its next crash is restarted at once.
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    crash_and_wait(3).await;
    assert_eq!(delays(&s), ["1.0s", "2.0s", "0.0s"], "{}", s.stderr_text());
    crash_and_wait(4).await;
    assert_eq!(delays(&s).last().map(String::as_str), Some("1.0s"), "the back-off started over");
}

/// SIGUSR1 and SIGUSR2 restart VS Code's server in place, as code-server's wrapper hotswaps:
/// the listener, sessions and proxied connections stay, and the workbench is served again.
#[tokio::test]
async fn sigusr1_and_sigusr2_restart_vscode_in_place() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let up = testkit::upstream::Upstream::start().await;
    let home = password_vscode_home();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let c = s.client();
    // Before VS Code runs there is nothing to restart, and the server carries on.
    s.signal("USR1");
    eventually("the signal to be noticed", || s.stdout_text().contains("Received SIGUSR1; hotswapping")).await;
    eventually("the note", || s.stdout_text().contains("VS Code is not running yet")).await;

    let cookie = c.login(PASSWORD).await;
    assert_eq!(c.get_with("/?ew=true", &[("cookie", &cookie)]).await.status, StatusCode::OK);
    let (mut ws, _) = ws_connect(&s, &format!("/proxy/{}/ws", up.port), &[("cookie", &cookie)]).await.unwrap();
    for (n, signal) in [(1, "USR1"), (2, "USR2")] {
        let before = vscode_pid(&s);
        s.signal(signal);
        eventually("a new VS Code", || s.stdout_text().matches("Starting VS Code").count() == n + 1).await;
        eventually("it to be ready", || s.stdout_text().matches("VS Code is ready").count() == n + 1).await;
        assert!(s.stdout_text().contains(&format!("Received SIG{signal}; hotswapping")));
        assert_ne!(vscode_pid(&s), before);
        assert_no_orphans(before, None).await;
        // Same listener, same session, the workbench served by the new server.
        let r = c.get_with("/?ew=true", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        // The proxied WebSocket never noticed.
        ws.send(Message::Text(format!("still here {n}").into())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text(format!("still here {n}").into()));
    }
    assert!(!s.stderr_text().contains("restarting in"), "a hotswap is not a crash: {}", s.stderr_text());
}

/// One product version: `--version` names the code-server release whose VS Code build runs,
/// the one the workbench's Help > About shows, with the VS Code version beside it.
#[tokio::test]
async fn one_version_in_the_cli_and_the_workbench() {
    let home = password_vscode_home();
    let out = run(&home, &["--version"], &[]);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    let (ours, vscode) = (words[0], words[4]);
    assert_eq!(words[2..4], ["with", "Code"], "{}", out.stdout);
    let json: serde_json::Value = serde_json::from_str(&run(&home, &["--version", "--json"], &[]).stdout).unwrap();
    assert_eq!(json["codeServer"], ours);
    assert_eq!(json["vscode"], vscode);

    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let cookie = s.client().login(PASSWORD).await;
    let page = s.client().get_with("/?ew=true", &[("cookie", &cookie)]).await.text();
    // What About reads: the product configuration the workbench page carries.
    assert!(page.contains(&format!("&quot;codeServerVersion&quot;:&quot;{ours}&quot;")), "About would not say {ours}");
    assert!(s.stdout_text().contains(&format!("code-server {ours} ")));
    let product: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vscode_dir().join("code-server/lib/vscode/product.json")).unwrap())
            .unwrap();
    assert_eq!(product["version"], vscode, "Code: {vscode} as About shows it");
}

/// No placeholder ships: `/security.txt` names a real contact (code-server's by default, or
/// `--security-contact`) and a future expiry; the update check's default feed is coder's
/// code-server releases.
#[tokio::test]
async fn security_txt_and_the_update_feed_have_real_defaults() {
    let home = password_home();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let text = s.client().get("/security.txt").await.text();
    assert!(text.contains("Contact: mailto:security@coder.com\n"), "{text}");
    assert!(!text.contains(".invalid"));
    let expires = text.lines().find_map(|l| l.strip_prefix("Expires: ")).unwrap();
    assert!(expires > code_server::util::iso8601(code_server::util::now_ms()).as_str(), "{expires}");
    drop(s);
    let s =
        Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--security-contact", "https://example.org/report"], &[]);
    assert!(s.client().get("/.well-known/security.txt").await.text().contains("Contact: https://example.org/report\n"));
    let bad = run(&home, &["--security-contact", "nobody"], &[]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("--security-contact must be a mailto: or https: URI"), "{}", bad.stderr);
    let help = run(&home, &["--help"], &[]).stdout;
    assert!(help.contains("coder/code-server's releases"), "{help}");
}

/// Errors carry the system's error name, as code-server's (Node's) do, so a search for the
/// message finds answers; `--vscode-option` without a flag name is refused before starting.
#[tokio::test]
async fn errors_name_the_system_error() {
    let home = password_home();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = run(&home, &["--bind-addr", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!("listen EADDRINUSE: address already in use 127.0.0.1:{port}")),
        "{}",
        out.stderr
    );

    let dir = home.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let out = run(&home, &["--i18n", dir.to_str().unwrap(), "--bind-addr", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("Failed to load custom strings from") && out.stderr.contains("EISDIR"),
        "{}",
        out.stderr
    );

    let out = run(
        &home,
        &["--cert", dir.join("missing.crt").to_str().unwrap(), "--cert-key", "k", "--bind-addr", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("ENOENT"), "{}", out.stderr);

    for bad in ["--vscode-option==x", "--vscode-option=--", "--vscode-option=--=1"] {
        let out = run(&home, &[bad, "--bind-addr", "127.0.0.1:0"], &[]);
        assert_eq!(out.code, Some(1), "{bad}");
        assert!(out.stderr.contains("--vscode-option requires a flag name"), "{bad}: {}", out.stderr);
    }
}

/// The login page speaks code-server's languages: `--locale`, else the browser's language;
/// `--i18n` still overrides, and a loaded strings file is logged as code-server logs it.
#[tokio::test]
async fn the_login_page_in_code_servers_languages() {
    let locales = vscode_dir().join("code-server/out/node/i18n/locales");
    let table = |lang: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(locales.join(format!("{lang}.json"))).unwrap()).unwrap()
    };
    let escaped = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let title = |lang: &str| escaped(&table(lang)["LOGIN_TITLE"].as_str().unwrap().replace("{{app}}", "code-server"));

    let home = password_vscode_home();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let c = s.client();
    for (accept, lang) in
        [("ja-JP,ja;q=0.9", "ja"), ("th", "th"), ("ur-PK", "ur"), ("zh-CN,zh;q=0.9", "zh-cn"), ("de, fr", "en")]
    {
        let page = c.get_with("/login", &[("accept-language", accept)]).await.text();
        assert!(page.contains(&format!("<title>{}</title>", title(lang))), "{accept}: {page}");
        assert!(page.contains(&format!("<html lang=\"{lang}\">")), "{accept}");
    }
    // Errors too: a wrong password in Japanese.
    let r = c.post_form("/login", "password=nope", &[("accept-language", "ja")]).await;
    assert!(r.text().contains(&escaped(table("ja")["INCORRECT_PASSWORD"].as_str().unwrap())), "{}", r.text());
    drop(s);

    // --locale wins over the browser; --i18n overrides every language and is logged.
    let strings = home.path().join("strings.json");
    std::fs::write(&strings, r#"{"SUBMIT": "GO {{app}}"}"#).unwrap();
    let s = Server::start(
        &home,
        &["--bind-addr", "127.0.0.1:0", "--locale", "zh-cn", "--i18n", strings.to_str().unwrap()],
        &[],
    );
    assert!(s.stdout_text().contains("Loaded custom strings"), "{}", s.stdout_text());
    let page = s.client().get_with("/login", &[("accept-language", "ja")]).await.text();
    let welcome = escaped(&table("zh-cn")["WELCOME"].as_str().unwrap().replace("{{app}}", "code-server"));
    assert!(page.contains(&welcome), "{page}");
    assert!(page.contains("value=\"GO code-server\""), "{page}");
    assert!(page.contains("欢迎来到 code-server"), "{page}");
}
