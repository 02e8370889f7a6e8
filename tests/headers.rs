//! `--security-headers`: what each preset puts on our pages, VS Code's responses and proxied
//! ones (through the real binary on the stand-in build), and, in headless Chromium with the real
//! workbench open (tests/browser/headers.mjs), that the workbench, a webview and our pages work
//! under `balanced` and `strict` with nothing refused by a policy.

use std::path::Path;
use std::process::Command;

use testkit::upstream::Upstream;
use testkit::*;

async fn server(preset: Option<&str>) -> (Home, InProcess, String) {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let args: Vec<&str> = preset.map(|p| vec!["--security-headers", p]).unwrap_or_default();
    let s = InProcess::start(&home, &args, &[]).await;
    let cookie = s.client().login("pw").await;
    (home, s, cookie)
}

#[tokio::test]
async fn presets_on_our_pages_vscode_and_the_proxy() {
    let upstream = Upstream::start().await;
    for preset in [None, Some("balanced"), Some("strict"), Some("off")] {
        let (_home, s, cookie) = server(preset).await;
        let c = s.client();
        let login = c.get("/login").await;
        let forwarded = c.get_with("/static-probe", &[("cookie", &cookie)]).await;
        let proxied = c.get_with(&format!("/proxy/{}/x", upstream.port), &[("cookie", &cookie)]).await;
        let json = c.get("/update/check").await;
        let has = |r: &Resp, h: &str| r.header(h).is_some();
        let name = preset.unwrap_or("default");
        match preset {
            None | Some("balanced") | Some("strict") => {
                let csp = login.header("content-security-policy").unwrap_or_else(|| panic!("{name}: CSP"));
                assert!(csp.contains("frame-ancestors 'self'") && csp.contains("object-src 'none'"), "{csp}");
                for h in ["permissions-policy", "cross-origin-opener-policy", "cross-origin-resource-policy"] {
                    assert!(has(&login, h), "{name}: {h} on the login page");
                }
                assert_eq!(login.header("x-content-type-options"), Some("nosniff"));
                assert!(!has(&json, "content-security-policy"), "{name}: CSP is for HTML");
                assert!(has(&json, "x-content-type-options"), "{name}: JSON is ours too");
            }
            _ => {
                for h in ["content-security-policy", "permissions-policy", "x-content-type-options", "x-frame-options"]
                {
                    assert!(!has(&login, h), "off: no {h}");
                }
            }
        }
        // VS Code's answers: hardened only under strict; proxied ones never.
        assert_eq!(has(&forwarded, "x-frame-options"), preset == Some("strict"), "{name}: VS Code's response");
        assert_eq!(has(&forwarded, "x-content-type-options"), preset == Some("strict"), "{name}");
        for h in ["content-security-policy", "x-frame-options", "permissions-policy", "strict-transport-security"] {
            assert!(!has(&proxied, h), "{name}: the proxied app's response is its own ({h})");
        }
        // No TLS here: no HSTS anywhere.
        assert!(!has(&login, "strict-transport-security") && !has(&forwarded, "strict-transport-security"));
    }
}

#[test]
fn hsts_under_tls() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (preset, expected) in [("balanced", "max-age=31536000"), ("strict", "max-age=31536000; includeSubDomains")] {
        let home = Home::new();
        home.write_config("auth: password\npassword: pw\ncert: true\n");
        let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--security-headers", preset], &[]);
        let hsts = rt.block_on(async {
            let res = https_get(&s, &home, "/login").await;
            res.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_string())
        });
        assert_eq!(hsts.as_deref(), Some(expected), "{preset}");
    }
}

/// GET over TLS, trusting the server's self-signed certificate.
async fn https_get(s: &Server, home: &Home, path: &str) -> hyper::Response<hyper::body::Incoming> {
    let cert = home.data_dir().join("localhost.crt");
    let stream = tls_connect(&s.authority(), &cert, &[b"http/1.1"]).await;
    let req = hyper::Request::get(path).header("host", "localhost").body(axum::body::Body::empty()).unwrap();
    stream_on(stream, req).await
}

fn browser_run(preset: &str, expect_csp: bool) {
    let home = Home::with_vscode();
    home.write_config("auth: password\npassword: headers-pw\n");
    let project = home.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("notes.md"), "# Preview under the policy\n\nSome *text*.\n").unwrap();
    let server = Server::start(
        &home,
        &["--bind-addr", "127.0.0.1:0", "--security-headers", preset, project.to_str().unwrap()],
        &[],
    );
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let shot = match std::env::var_os("CS_LOOK_DIR") {
        Some(d) => Path::new(&d).join(format!("headers-{preset}.png")),
        None => home.path().join("shot.png"),
    };
    let out = Command::new("node")
        .arg(browser_dir.join("headers.mjs"))
        .current_dir(&browser_dir)
        .env("CS_URL", &server.address)
        .env("CS_PASSWORD", "headers-pw")
        .env("CS_FILE", "notes.md")
        .env("CS_EXPECT_CSP", if expect_csp { "1" } else { "0" })
        .env("CS_SHOT", &shot)
        .output()
        .expect("run node (tests/browser: npm ci first)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{preset}: {log}\nserver:\n{}{}", server.stdout_text(), server.stderr_text());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.len() > 15_000, "{preset}: the screenshot is not blank");
}

#[test]
fn the_workbench_works_under_balanced_and_strict_in_chromium() {
    browser_run("balanced", true);
    browser_run("strict", true);
}
