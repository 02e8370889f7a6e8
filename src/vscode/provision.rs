//! Provisioning a VS Code server build from the npm registry (DESIGN.md, "VS Code server build").
//!
//! Into `<target>` (by default `<data dir>/vscode/<code-server version>`):
//! * `code-server/`: the `code-server` package at the pinned version; its `lib/vscode` is a
//!   patched VS Code server that understands code-server's options;
//! * `node/`: the Node runtime from `node-linux-<arch>` (the build needs Node 24, whose
//!   headers there also let native modules compile without downloading anything);
//! * `npm/`: npm, which installs the build's dependencies.
//!
//! Every tarball is checked against the registry's `dist.integrity`. The work happens in a
//! staging directory renamed into place at the end, under a file lock, so an interrupted or
//! failed run leaves no half build: the next run removes stale staging directories and starts
//! again. Static assets get brotli and gzip siblings once, here, so serving never compresses.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use super::build::{Build, CODE_SERVER_VERSION};

pub const NODE_VERSION: &str = "24.21.0";
pub const NPM_VERSION: &str = "11.21.2";
const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org/";
/// Marks a finished build; a directory without it is not trusted.
const MARKER: &str = ".provisioned.json";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "cannot build VS Code's native modules: missing {0}. Install them first (Debian/Ubuntu: apt-get install python3 make g++ libkrb5-dev)"
    )]
    MissingTools(String),
    #[error("{what}: {why}")]
    Failed { what: String, why: String },
    #[error("{name}@{version}: the download does not match the registry's integrity {expected}")]
    Integrity { name: String, version: String, expected: String },
}

fn failed(what: impl Into<String>, why: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Failed { what: what.into(), why: why.to_string() }
}

/// The npm registry, configured the way npm itself is: `$npm_config_registry` /
/// `$NPM_CONFIG_REGISTRY`, else `registry=` in `~/.npmrc`, else the public registry.
pub fn registry() -> String {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    registry_from(|k| std::env::var(k).ok(), home.as_deref())
}

/// [`registry`] for the environment `var` gives and the home directory `home`.
fn registry_from(var: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> String {
    let from_env = ["npm_config_registry", "NPM_CONFIG_REGISTRY"].iter().find_map(|k| var(k));
    let from_npmrc = || {
        let text = std::fs::read_to_string(home?.join(".npmrc")).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "registry").then(|| v.trim().to_string())
        })
    };
    let mut url = from_env.filter(|r| !r.is_empty()).or_else(from_npmrc).unwrap_or_else(|| DEFAULT_REGISTRY.into());
    if !url.ends_with('/') {
        url.push('/');
    }
    url
}

/// Tools the native modules need, checked before anything is downloaded.
pub fn missing_build_tools() -> Vec<&'static str> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let mut missing = vec![];
    for tool in ["python3", "make", "g++"] {
        if !on_path(tool) {
            missing.push(tool);
        }
    }
    // The kerberos module compiles against the Kerberos development headers.
    if !Path::new("/usr/include/krb5.h").exists() && !on_path("krb5-config") {
        missing.push("libkrb5-dev");
    }
    missing
}

fn node_package() -> String {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "x64",
    };
    format!("node-linux-{arch}")
}

/// Where provisioning is, for whoever shows it (the page a browser sees while it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What is being done now, in words.
    pub step: String,
    /// Of the whole provisioning, 0–100.
    pub percent: u8,
}

/// Tells the watchers of a [`Status`] how provisioning goes. Cheap to clone.
#[derive(Clone)]
pub struct Reporter(Arc<watch::Sender<Status>>);

impl Reporter {
    /// A reporter and a receiver of what it reports.
    pub fn new() -> (Reporter, watch::Receiver<Status>) {
        let (tx, rx) = watch::channel(Status { step: "Checking the VS Code build".into(), percent: 0 });
        (Reporter(Arc::new(tx)), rx)
    }

    /// A reporter nobody watches.
    pub fn none() -> Reporter {
        Reporter::new().0
    }

    fn set(&self, step: &str, percent: u8) {
        self.0.send_if_modified(|s| {
            let changed = s.step != step || s.percent != percent;
            if changed {
                *s = Status { step: step.to_string(), percent: percent.min(100) };
            }
            changed
        });
    }
}

/// The share of the whole run each step takes, in percent: (start, end).
const SPAN_CODE_SERVER: (u8, u8) = (0, 25);
const SPAN_NODE: (u8, u8) = (25, 35);
const SPAN_NPM: (u8, u8) = (35, 38);
const SPAN_INSTALL: (u8, u8) = (38, 75);
const SPAN_INSTALL_EXTENSIONS: (u8, u8) = (75, 85);
const SPAN_COMPRESS: (u8, u8) = (85, 99);

/// Makes sure a complete build is at `target`, provisioning it if needed; `report` hears how
/// it goes.
pub async fn ensure(target: &Path, report: &Reporter) -> Result<Build, ProvisionError> {
    if let Some(build) = existing(target) {
        return Ok(build);
    }
    let missing = missing_build_tools();
    if !missing.is_empty() {
        return Err(ProvisionError::MissingTools(missing.join(", ")));
    }
    let parent = target.parent().ok_or_else(|| failed("provisioning", "the target has no parent directory"))?;
    locked(parent, || async {
        match existing(target) {
            Some(build) => Ok(build),
            None => provision(target, parent, report).await,
        }
    })
    .await
}

/// A Node runtime for a build that brings none (code-server's own `lib/vscode`):
/// `<data dir>/vscode/node-<version>/bin/node`, downloaded once.
pub async fn ensure_node(data_dir: &Path, report: &Reporter) -> Result<PathBuf, ProvisionError> {
    let node = node_path(data_dir);
    let target = node.parent().and_then(Path::parent).expect("node_path has two parents").to_path_buf();
    let parent = data_dir.join("vscode");
    if node.is_file() {
        return Ok(node);
    }
    locked(&parent, || async {
        if node.is_file() {
            return Ok(node.clone());
        }
        tracing::info!("Provisioning Node {NODE_VERSION} for the VS Code build into {}", target.display());
        let staging = parent.join(format!(".staging-node-{}", crate::util::random_hex(4)));
        std::fs::create_dir_all(&staging).map_err(|e| failed(format!("creating {}", staging.display()), e))?;
        let result = async {
            let client = crate::net::download_client().map_err(|e| failed("starting the HTTP client", e))?;
            let node_dir = staging.join("node");
            fetch_package(&client, &registry(), &node_package(), NODE_VERSION, &node_dir, report, (0, 99)).await?;
            std::fs::rename(staging.join("node"), &target)
                .map_err(|e| failed(format!("moving Node to {}", target.display()), e))
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result.map(|()| node.clone())
    })
    .await
}

/// Where [`ensure_node`] puts Node: `<data dir>/vscode/node-<version>/bin/node`.
pub fn node_path(data_dir: &Path) -> PathBuf {
    data_dir.join("vscode").join(format!("node-{NODE_VERSION}")).join("bin/node")
}

/// Runs `work` holding `<dir>/.provision.lock`: one provisioner at a time (several test
/// processes, or two starts, may race here).
async fn locked<T, F, Fut>(dir: &Path, work: F) -> Result<T, ProvisionError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProvisionError>>,
{
    std::fs::create_dir_all(dir).map_err(|e| failed(format!("creating {}", dir.display()), e))?;
    let lock_path = dir.join(".provision.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| failed(format!("locking {}", lock_path.display()), e))?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|_| lock))
        .await
        .map_err(|e| failed("locking", e))?
        .map_err(|e| failed(format!("locking {}", lock_path.display()), e))?;
    let result = work().await;
    drop(lock);
    result
}

/// A finished build at `target`, if there is one (nothing to provision).
pub fn existing(target: &Path) -> Option<Build> {
    if !target.join(MARKER).is_file() {
        return None;
    }
    Build::locate(target, None).ok()
}

async fn provision(target: &Path, parent: &Path, report: &Reporter) -> Result<Build, ProvisionError> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("build");
    // Leftovers of interrupted runs.
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!(".staging-{name}-")) {
                tracing::info!("Removing an unfinished earlier attempt: {}", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let staging = parent.join(format!(".staging-{name}-{}", crate::util::random_hex(4)));
    tracing::info!(
        "Provisioning VS Code (code-server {CODE_SERVER_VERSION}, Node {NODE_VERSION}) into {}",
        target.display()
    );
    let result = provision_into(&staging, report).await;
    let result = result.and_then(|()| {
        if target.exists() {
            // An unmarked (incomplete) directory from an older, less careful run.
            std::fs::remove_dir_all(target).map_err(|e| failed(format!("replacing {}", target.display()), e))?;
        }
        std::fs::rename(&staging, target).map_err(|e| failed(format!("moving the build to {}", target.display()), e))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let build = Build::locate(target, None).map_err(|e| failed("reading the new build", e))?;
    tracing::info!("VS Code {} is ready in {}", build.version, target.display());
    Ok(build)
}

async fn provision_into(staging: &Path, report: &Reporter) -> Result<(), ProvisionError> {
    std::fs::create_dir_all(staging).map_err(|e| failed(format!("creating {}", staging.display()), e))?;
    let client = crate::net::download_client().map_err(|e| failed("starting the HTTP client", e))?;
    let registry = registry();
    let node_pkg = node_package();
    for (pkg, version, dir, span) in [
        ("code-server", CODE_SERVER_VERSION, "code-server", SPAN_CODE_SERVER),
        (node_pkg.as_str(), NODE_VERSION, "node", SPAN_NODE),
        ("npm", NPM_VERSION, "npm", SPAN_NPM),
    ] {
        fetch_package(&client, &registry, pkg, version, &staging.join(dir), report, span).await?;
    }
    let node_dir = staging.join("node");
    let vscode = staging.join("code-server/lib/vscode");
    npm_install(&node_dir, &staging.join("npm"), &vscode, report, SPAN_INSTALL).await?;
    npm_install(&node_dir, &staging.join("npm"), &vscode.join("extensions"), report, SPAN_INSTALL_EXTENSIONS).await?;
    link_cli_scripts(&vscode)?;
    let root = vscode.clone();
    let reporter = report.clone();
    let (files, saved) = tokio::task::spawn_blocking(move || precompress(&root, &reporter))
        .await
        .map_err(|e| failed("compressing static files", e))??;
    tracing::info!("Precompressed {files} static files (brotli and gzip; {} MB smaller over the wire)", saved >> 20);
    let marker = serde_json::json!({
        "codeServer": CODE_SERVER_VERSION,
        "node": NODE_VERSION,
        "npm": NPM_VERSION,
        "registry": registry,
        "provisionedAt": crate::util::iso8601(crate::util::now_ms()),
    });
    std::fs::write(staging.join(MARKER), serde_json::to_vec_pretty(&marker).expect("json"))
        .map_err(|e| failed("writing the build marker", e))
}

#[derive(serde::Deserialize)]
struct Manifest {
    dist: Dist,
}

#[derive(serde::Deserialize)]
struct Dist {
    tarball: String,
    integrity: Option<String>,
    shasum: Option<String>,
}

/// Downloads `name@version`, checks its integrity, and unpacks the tarball's `package/` into `dest`.
async fn fetch_package(
    client: &reqwest::Client,
    registry: &str,
    name: &str,
    version: &str,
    dest: &Path,
    report: &Reporter,
    span: (u8, u8),
) -> Result<(), ProvisionError> {
    let what = format!("{name}@{version}");
    let manifest_url = format!("{registry}{name}/{version}");
    let manifest: Manifest = async {
        client.get(&manifest_url).header("accept", "application/json").send().await?.error_for_status()?.json().await
    }
    .await
    .map_err(|e| failed(format!("fetching {manifest_url}"), crate::net::error_chain(&e)))?;
    let dist = manifest.dist;

    let tmp = dest.with_extension("tgz");
    let (sha512, sha1) = download(client, &dist.tarball, &tmp, &what, report, span).await?;
    let ok = match (&dist.integrity, &dist.shasum) {
        (Some(integrity), _) => integrity.split_whitespace().any(|i| match i.split_once('-') {
            Some(("sha512", b64)) => base64::engine::general_purpose::STANDARD.encode(&sha512) == b64,
            _ => false,
        }),
        (None, Some(shasum)) => crate::util::hex(&sha1) == shasum.to_ascii_lowercase(),
        (None, None) => false,
    };
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        return Err(ProvisionError::Integrity {
            name: name.into(),
            version: version.into(),
            expected: dist.integrity.or(dist.shasum).unwrap_or_else(|| "(none published)".into()),
        });
    }
    let dest = dest.to_path_buf();
    let label = what.clone();
    tokio::task::spawn_blocking(move || unpack(&tmp, &dest).map_err(|e| failed(format!("unpacking {label}"), e)))
        .await
        .map_err(|e| failed(format!("unpacking {what}"), e))?
}

/// Streams `url` into `path`, returning its SHA-512 and SHA-1, with progress.
async fn download(
    client: &reqwest::Client,
    url: &str,
    path: &Path,
    label: &str,
    report: &Reporter,
    span: (u8, u8),
) -> Result<(Vec<u8>, Vec<u8>), ProvisionError> {
    let fail = |e: &dyn std::error::Error| failed(format!("downloading {url}"), crate::net::error_chain(e));
    let mut res = client.get(url).send().await.and_then(|r| r.error_for_status()).map_err(|e| fail(&e))?;
    let mut progress = Progress::new(format!("Downloading {label}"), res.content_length(), report.clone(), span);
    let mut file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut sha512 = ring::digest::Context::new(&ring::digest::SHA512);
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    while let Some(chunk) = res.chunk().await.map_err(|e| fail(&e))? {
        sha512.update(&chunk);
        sha1.update(&chunk);
        file.write_all(&chunk).map_err(|e| fail(&e))?;
        progress.advance(chunk.len() as u64);
    }
    file.sync_all().map_err(|e| fail(&e))?;
    progress.finish();
    Ok((sha512.finish().as_ref().to_vec(), sha1.finish().as_ref().to_vec()))
}

/// Unpacks an npm tarball (its files sit under `package/`) into `dest`. The tar crate's
/// unpacking refuses entries that would land outside the directory.
fn unpack(tgz: &Path, dest: &Path) -> std::io::Result<()> {
    let scratch = dest.with_extension("unpack");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let file = std::fs::File::open(tgz)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    archive.set_preserve_permissions(true);
    archive.unpack(&scratch)?;
    std::fs::rename(scratch.join("package"), dest)?;
    std::fs::remove_dir_all(&scratch)?;
    std::fs::remove_file(tgz)
}

/// `npm install --omit=dev` in `dir` with our Node first on PATH. Native modules build
/// against the Node headers in `node_dir`, so node-gyp downloads nothing.
async fn npm_install(
    node_dir: &Path,
    npm_dir: &Path,
    dir: &Path,
    report: &Reporter,
    span: (u8, u8),
) -> Result<(), ProvisionError> {
    let what = format!("npm install in {}", dir.display());
    let path = std::env::join_paths(
        std::iter::once(node_dir.join("bin"))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .map_err(|e| failed(&what, e))?;
    tracing::info!(
        "Installing dependencies of {} (npm; native modules compile, this takes a few minutes)",
        dir.display()
    );
    let mut cmd = tokio::process::Command::new(node_dir.join("bin/node"));
    super::scrub_env(&mut cmd);
    let mut child = cmd
        .arg(npm_dir.join("bin/npm-cli.js"))
        .args(["install", "--omit=dev", "--no-audit", "--no-fund", "--no-update-notifier", "--foreground-scripts"])
        .current_dir(dir)
        .env("PATH", path)
        .env("npm_config_nodedir", node_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(&what, e))?;
    let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let mut readers = vec![];
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tail = tail.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!("npm: {line}");
                let mut t = tail.lock().unwrap();
                t.push_back(line);
                if t.len() > 40 {
                    t.pop_front();
                }
            }
        }));
    }
    let started = Instant::now();
    // How long it takes is not known in advance: the share creeps towards its end, a point
    // every few seconds, and never reaches it before npm is done.
    let step = if dir.ends_with("extensions") {
        "Installing the built-in extensions' dependencies"
    } else {
        "Installing VS Code's dependencies"
    };
    report.set(step, span.0);
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    ticker.tick().await;
    let mut logged = 0;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(|e| failed(&what, e))?,
            _ = ticker.tick() => {
                let secs = started.elapsed().as_secs();
                let width = u64::from(span.1 - span.0);
                let share = width * secs / (secs + 60);
                report.set(&format!("{step} ({secs}s)"), span.0 + share as u8);
                if secs / 30 > logged {
                    logged = secs / 30;
                    tracing::info!("  still installing ({secs}s)");
                }
            }
        }
    };
    for r in readers {
        let _ = r.await;
    }
    if !status.success() {
        let tail: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
        return Err(failed(what, format!("{status}; last output:\n{}", tail.join("\n"))));
    }
    Ok(())
}

/// code-server's postinstall links the terminal's `code-server` command and the browser helper.
fn link_cli_scripts(vscode: &Path) -> Result<(), ProvisionError> {
    for (dir, target, link) in
        [("bin/remote-cli", "code-linux.sh", "code-server"), ("bin/helpers", "browser-linux.sh", "browser.sh")]
    {
        let link_path = vscode.join(dir).join(link);
        if vscode.join(dir).join(target).is_file() && std::fs::symlink_metadata(&link_path).is_err() {
            std::os::unix::fs::symlink(target, &link_path)
                .map_err(|e| failed(format!("linking {}", link_path.display()), e))?;
        }
    }
    Ok(())
}

/// File types worth compressing.
fn compressible(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("js" | "mjs" | "css" | "html" | "json" | "svg" | "map" | "txt" | "wasm" | "ttf" | "md" | "xml")
    )
}

/// Writes `.br` and `.gz` siblings for the static files VS Code's web client loads (`out/`,
/// `extensions/` without their node_modules, `resources/`). Two threads share the work.
/// Returns how many files were compressed and how many bytes brotli saves.
pub fn precompress(root: &Path, report: &Reporter) -> Result<(usize, u64), ProvisionError> {
    let mut files = vec![];
    for top in ["out", "extensions", "resources"] {
        collect(&root.join(top), &mut files);
    }
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let progress = std::sync::Mutex::new(Progress::new(
        "Compressing static files".into(),
        Some(total),
        report.clone(),
        SPAN_COMPRESS,
    ));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let saved = std::sync::atomic::AtomicU64::new(0);
    let errors = std::sync::Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    match compress_file(f) {
                        Ok((len, br)) => {
                            saved.fetch_add(len.saturating_sub(br), std::sync::atomic::Ordering::Relaxed);
                            progress.lock().unwrap().advance(len);
                        }
                        Err(e) => errors.lock().unwrap().push(format!("{}: {e}", f.display())),
                    }
                }
            });
        }
    });
    progress.into_inner().unwrap().finish();
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(failed("compressing static files", e));
    }
    Ok((files.len(), saved.into_inner()))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if e.file_name() != "node_modules" {
                collect(&path, out);
            }
        } else if ft.is_file() && compressible(&path) && e.metadata().is_ok_and(|m| m.len() >= 512) {
            out.push(path);
        }
    }
}

/// Returns (original size, brotli size).
fn compress_file(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut data = vec![];
    std::fs::File::open(path)?.read_to_end(&mut data)?;
    let mut br = vec![];
    {
        // Quality 9 with a 4 MiB window: within a few percent of 11 at a fraction of the time.
        let mut w = brotli::CompressorWriter::new(&mut br, 64 * 1024, 9, 22);
        w.write_all(&data)?;
    }
    let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::best());
    gz.write_all(&data)?;
    let gz = gz.finish()?;
    let sibling = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    std::fs::write(sibling(".br"), &br)?;
    std::fs::write(sibling(".gz"), &gz)?;
    Ok((data.len() as u64, br.len() as u64))
}

/// Progress of a long step: a bar on a terminal, a log line every few seconds otherwise, and
/// its share of the whole run (`span`) told to the [`Reporter`].
struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    tty: bool,
    last: Instant,
    report: Reporter,
    span: (u8, u8),
}

impl Progress {
    fn new(label: String, total: Option<u64>, report: Reporter, span: (u8, u8)) -> Progress {
        let tty = std::io::stderr().is_terminal();
        if !tty {
            tracing::info!("{label}{}", total.map(|t| format!(" ({:.1} MB)", t as f64 / 1e6)).unwrap_or_default());
        }
        report.set(&label, span.0);
        Progress { label, total, done: 0, tty, last: Instant::now(), report, span }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(t) = self.total.filter(|t| *t > 0) {
            let share = u64::from(self.span.1 - self.span.0) * self.done.min(t) / t;
            self.report.set(&self.label, self.span.0 + share as u8);
        }
        let every = if self.tty { Duration::from_millis(100) } else { Duration::from_secs(5) };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let mb = |b: u64| b as f64 / 1e6;
        let (pct, of) = match self.total {
            Some(t) if t > 0 => ((self.done * 100 / t).min(100), format!("/{:.1}", mb(t))),
            _ => (0, String::new()),
        };
        if self.tty {
            let filled = (pct / 4) as usize;
            eprint!(
                "\r{} [{}{}] {pct:>3}% {:.1}{of} MB ",
                self.label,
                "#".repeat(filled),
                " ".repeat(25 - filled),
                mb(self.done)
            );
            let _ = std::io::stderr().flush();
        } else {
            tracing::info!("  {} {pct}% ({:.1}{of} MB)", self.label, mb(self.done));
        }
    }

    fn finish(&mut self) {
        if let Some(t) = self.total {
            self.done = self.done.max(t);
        }
        if self.tty {
            self.draw();
            eprintln!();
        } else {
            tracing::info!("  {} done", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precompress_writes_siblings_that_decompress() {
        let d = tempfile::tempdir().unwrap();
        let js = d.path().join("out/vs/a.js");
        std::fs::create_dir_all(js.parent().unwrap()).unwrap();
        let body = "console.log('hello');\n".repeat(200);
        std::fs::write(&js, &body).unwrap();
        std::fs::write(d.path().join("out/tiny.js"), "1").unwrap();
        std::fs::create_dir_all(d.path().join("extensions/x/node_modules")).unwrap();
        std::fs::write(d.path().join("extensions/x/node_modules/dep.js"), body.as_bytes()).unwrap();
        let (n, saved) = precompress(d.path(), &Reporter::none()).unwrap();
        assert_eq!(n, 1, "small files and extension node_modules are skipped");
        assert!(saved > 0);
        let mut out = String::new();
        brotli::Decompressor::new(std::fs::File::open(d.path().join("out/vs/a.js.br")).unwrap(), 4096)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let mut out = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(d.path().join("out/vs/a.js.gz")).unwrap())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn registry_is_found_as_npm_finds_it() {
        let home = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        assert_eq!(registry_from(none, Some(home.path())), DEFAULT_REGISTRY);
        assert_eq!(registry_from(none, None), DEFAULT_REGISTRY);
        std::fs::write(home.path().join(".npmrc"), "fund=false\nregistry = https://npm.example.org\n").unwrap();
        assert_eq!(registry_from(none, Some(home.path())), "https://npm.example.org/", "from ~/.npmrc, with a slash");
        let env = |k: &str| (k == "NPM_CONFIG_REGISTRY").then(|| "http://mirror:4873/".to_string());
        assert_eq!(registry_from(env, Some(home.path())), "http://mirror:4873/", "the environment wins");
        let empty = |k: &str| (k == "npm_config_registry").then(String::new);
        assert_eq!(registry_from(empty, Some(home.path())), "https://npm.example.org/", "an empty one is not set");
    }
}
