//! The editor-session registry (spec §9) and "open in an existing instance" (spec §4.7).
//!
//! Each VS Code window's extension host registers its IPC socket here (it finds us through
//! `CODE_SERVER_SESSION_SOCKET`). `code-server FILE`, run while an instance is up (or from its
//! integrated terminal), asks the registry which window should open FILE and sends the request
//! to that window's socket, then exits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};

/// One registered window: the raw entry as the extension host sent it, plus its socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub workspace: Value,
    #[serde(rename = "socketPath")]
    pub socket_path: String,
}

impl Entry {
    /// Folder paths of the entry's workspace (`workspace.folders[].uri.path`).
    fn folders(&self) -> Vec<String> {
        self.workspace["folders"]
            .as_array()
            .map(|f| f.iter().filter_map(|f| f["uri"]["path"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

/// Registered windows, most recently added last.
#[derive(Default, Clone)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Registry {
    pub fn add(&self, entry: Entry) {
        let mut entries = self.entries.lock().unwrap();
        entries.retain(|e| e.socket_path != entry.socket_path);
        entries.push(entry);
    }

    pub fn remove(&self, socket_path: &str) {
        self.entries.lock().unwrap().retain(|e| e.socket_path != socket_path);
    }

    /// The socket of the window that should open `file_path`: windows whose folder contains the
    /// file first, most recent first within each group; the first that accepts a connection
    /// wins, and the ones that refuse are forgotten.
    pub async fn socket_for(&self, file_path: &str) -> Option<String> {
        let mut candidates: Vec<Entry> = self.entries.lock().unwrap().iter().rev().cloned().collect();
        let contains =
            |e: &Entry| e.folders().iter().any(|f| file_path.starts_with(&format!("{}/", f.trim_end_matches('/'))));
        // Stable: keeps recency order within the two groups.
        candidates.sort_by_key(|e| !contains(e));
        for c in candidates {
            if UnixStream::connect(&c.socket_path).await.is_ok() {
                return Some(c.socket_path);
            }
            self.remove(&c.socket_path);
        }
        None
    }
}

fn router(registry: Registry) -> Router {
    Router::new()
        .route("/session", get(get_session))
        .route("/add-session", post(add_session))
        .route("/delete-session", post(delete_session))
        .with_state(registry)
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": msg }))).into_response()
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(rename = "filePath")]
    file_path: Option<String>,
}

async fn get_session(State(r): State<Registry>, Query(q): Query<SessionQuery>) -> Response {
    let Some(path) = q.file_path.filter(|p| !p.is_empty()) else {
        return bad_request("filePath is required");
    };
    match r.socket_for(&path).await {
        Some(socket) => Json(serde_json::json!({ "socketPath": socket })).into_response(),
        None => Json(serde_json::json!({})).into_response(),
    }
}

#[derive(Deserialize)]
struct AddBody {
    entry: Option<Entry>,
}

async fn add_session(State(r): State<Registry>, body: Option<Json<AddBody>>) -> Response {
    match body.and_then(|Json(b)| b.entry) {
        Some(entry) => {
            r.add(entry);
            "session added".into_response()
        }
        None => bad_request("entry is required"),
    }
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(rename = "socketPath")]
    socket_path: Option<String>,
}

async fn delete_session(State(r): State<Registry>, body: Option<Json<DeleteBody>>) -> Response {
    match body.and_then(|Json(b)| b.socket_path) {
        Some(p) => {
            r.remove(&p);
            "session deleted".into_response()
        }
        None => bad_request("socketPath is required"),
    }
}

/// What `code-server PATH...` asks of a running instance (spec §4.7).
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// The registry to ask: the instance's session socket.
    pub registry: PathBuf,
    /// The paths given, made absolute.
    pub paths: Vec<PathBuf>,
    /// `-r` / `--reuse-window`.
    pub reuse_window: bool,
    /// `-n` / `--new-window`.
    pub new_window: bool,
    /// Nothing but paths was typed (then an instance that is up may take them).
    pub only_paths: bool,
}

/// Serves the registry on `path` until `shutdown`. A socket file already there is replaced (a
/// newer instance with the same user-data-dir takes over, as in code-server). Failure to listen
/// is not fatal: a warning, and the server runs without the registry.
///
/// Whoever registers a window here decides where `code-server FILE` sends files, so only the
/// workspace's uid may: ours, or `account`'s (uid, gid) when its VS Code runs as another
/// account (the socket is then handed to that account). The socket is mode 0600 from the
/// moment it exists (whatever the umask), and a connection from any other uid (root aside) is
/// dropped unanswered.
pub async fn serve(
    path: PathBuf,
    account: Option<(u32, u32)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let listener = match crate::server::listen::bind_unix_with_mode(&path, 0o600) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("Could not create socket at {} ({})", path.display(), crate::errno::describe(&e));
            return;
        }
    };
    if let Some((uid, gid)) = account
        && let Err(e) = std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
    {
        tracing::warn!("Could not hand {} to uid {uid} ({})", path.display(), crate::errno::describe(&e));
        return;
    }
    tracing::info!("Session server listening on {}", path.display());
    let app = router(Registry::default());
    let allowed = account.map_or_else(crate::private_dir::current_uid, |(uid, _)| uid);
    let served = axum::serve(OwnerOnly(listener, allowed), app).with_graceful_shutdown(shutdown).await;
    if let Err(e) = served {
        tracing::warn!("Session server stopped: {e}");
    }
    let _ = std::fs::remove_file(&path);
}

/// The registry's listener: connections from uids other than this one (and root) are dropped.
struct OwnerOnly(UnixListener, u32);

impl axum::serve::Listener for OwnerOnly {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (UnixStream, Self::Addr) {
        let us = self.1;
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == us || cred.uid() == 0 => return (stream, addr),
                    Ok(cred) => tracing::warn!("Session server: refused a connection from uid {}", cred.uid()),
                    Err(e) => tracing::warn!("Session server: cannot tell who connected ({e}); refused"),
                },
                Err(e) => {
                    tracing::debug!("Session server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Why a path could not be handed to a running instance.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot reach the running instance at {}: {}", socket.display(), crate::errno::describe(source))]
    Connect { socket: PathBuf, source: std::io::Error },
    #[error("the running instance at {} did not answer: {source}", socket.display())]
    Http { socket: PathBuf, source: hyper::Error },
    #[error("the running instance at {} answered {status}: {body}", socket.display())]
    Refused { socket: PathBuf, status: StatusCode, body: String },
    #[error("No opened code-server instances found to handle {}", .0.display())]
    NoInstance(PathBuf),
    #[error("--new-window can only be used with folder paths")]
    NewWindowWithFiles,
    #[error("Please specify at least one file or folder")]
    NoPaths,
}

/// One HTTP request over a Unix socket; returns status and body.
async fn request(socket: &Path, req: Request<Body>) -> Result<(StatusCode, Vec<u8>), OpenError> {
    let http = |source| OpenError::Http { socket: socket.to_path_buf(), source };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| OpenError::Connect { socket: socket.to_path_buf(), source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(http)?;
    let status = res.status();
    let body = axum::body::to_bytes(Body::new(res.into_body()), 1 << 20).await.unwrap_or_default();
    Ok((status, body.to_vec()))
}

/// Asks a running instance's registry which window should open `file_path`.
async fn ask_registry(registry: &Path, file_path: &Path) -> Option<String> {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("filePath", &file_path.to_string_lossy())
        .finish();
    let req = Request::get(format!("/session?{q}")).header("host", "localhost").body(Body::empty()).ok()?;
    let (status, body) = request(registry, req).await.ok()?;
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    v["socketPath"].as_str().map(str::to_string)
}

/// Decides whether this run should hand its paths to a running instance instead of serving
/// (spec §4.7). Returns the window socket to use, `Ok(None)` to start normally, or an error.
///
/// Inside a code-server terminal (`$VSCODE_IPC_HOOK_CLI` set) paths go to that window. Unlike
/// code-server, this only happens when paths (or `-r`/`-n`) were given, so a new server can
/// still be started from such a terminal.
pub async fn existing_instance(config: &OpenRequest, ipc_hook: Option<&str>) -> Result<Option<String>, OpenError> {
    let wants_open = !config.paths.is_empty() || config.reuse_window || config.new_window;
    if let Some(hook) = ipc_hook.filter(|h| !h.is_empty() && wants_open) {
        return Ok(Some(hook.to_string()));
    }
    let registry = &config.registry;
    let first = config.paths.first().cloned().unwrap_or_default();
    if config.reuse_window || config.new_window {
        return match ask_registry(registry, &first).await {
            Some(s) => Ok(Some(s)),
            None => Err(OpenError::NoInstance(first)),
        };
    }
    // Only paths were typed, and an instance is listening: it may want them.
    if config.only_paths && !config.paths.is_empty() && UnixStream::connect(registry).await.is_ok() {
        return Ok(ask_registry(registry, &first).await);
    }
    Ok(None)
}

/// Asks the window behind `socket` to open the configured paths.
pub async fn open_in(socket: &str, config: &OpenRequest) -> Result<(), OpenError> {
    let (mut folders, mut files) = (vec![], vec![]);
    for p in &config.paths {
        if p.is_dir() { folders.push(p.display().to_string()) } else { files.push(p.display().to_string()) }
    }
    if config.new_window && !files.is_empty() {
        return Err(OpenError::NewWindowWithFiles);
    }
    if folders.is_empty() && files.is_empty() {
        return Err(OpenError::NoPaths);
    }
    let body = serde_json::json!({
        "type": "open",
        "folderURIs": folders,
        "fileURIs": files,
        "forceReuseWindow": config.reuse_window.then_some(true),
        "forceNewWindow": config.new_window.then_some(true),
        "gotoLineMode": true,
    });
    let req = Request::post("/")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a fixed request is valid");
    let (status, body) = request(Path::new(socket), req).await?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body).into_owned();
        return Err(OpenError::Refused { socket: PathBuf::from(socket), status, body });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(socket: &Path, folder: &str) -> Entry {
        Entry {
            workspace: serde_json::json!({ "id": "w", "folders": [{ "uri": { "path": folder } }] }),
            socket_path: socket.display().to_string(),
        }
    }

    #[tokio::test]
    async fn picks_the_window_whose_folder_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let _la = UnixListener::bind(&a).unwrap();
        let _lb = UnixListener::bind(&b).unwrap();
        let r = Registry::default();
        r.add(entry(&a, "/aaa"));
        r.add(entry(&b, "/bbb"));
        assert_eq!(r.socket_for("/aaa/file.txt").await.as_deref(), Some(a.to_str().unwrap()));
        // A plain prefix is not containment; otherwise the most recent window wins.
        assert_eq!(r.socket_for("/aaaxxx/file.txt").await.as_deref(), Some(b.to_str().unwrap()));
    }

    #[tokio::test]
    async fn dead_windows_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead.sock");
        let r = Registry::default();
        r.add(entry(&dead, "/x"));
        assert_eq!(r.socket_for("/x/y").await, None);
        assert!(r.entries.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn http_interface() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ipc.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(sock.clone(), None, async {
            let _ = rx.await;
        }));
        while UnixStream::connect(&sock).await.is_err() {
            tokio::task::yield_now().await;
        }
        let post = |path: &str, body: &str| {
            Request::post(path)
                .header("host", "localhost")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let window = dir.path().join("window.sock");
        let _w = UnixListener::bind(&window).unwrap();
        let add = format!(
            r#"{{"entry":{{"workspace":{{"id":"x","folders":[{{"uri":{{"path":"/aaa"}}}}]}},"socketPath":"{}"}}}}"#,
            window.display()
        );
        assert_eq!(
            request(&sock, post("/add-session", &add)).await.unwrap(),
            (StatusCode::OK, b"session added".to_vec())
        );
        assert_eq!(request(&sock, post("/add-session", "{}")).await.unwrap().0, StatusCode::BAD_REQUEST);
        assert_eq!(ask_registry(&sock, Path::new("/aaa/f")).await.as_deref(), Some(window.to_str().unwrap()));
        let get = Request::get("/session").header("host", "localhost").body(Body::empty()).unwrap();
        let (status, body) = request(&sock, get).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, br#"{"error":"filePath is required"}"#);
        let del = format!(r#"{{"socketPath":"{}"}}"#, window.display());
        assert_eq!(
            request(&sock, post("/delete-session", &del)).await.unwrap(),
            (StatusCode::OK, b"session deleted".to_vec())
        );
        assert_eq!(ask_registry(&sock, Path::new("/aaa/f")).await, None);
        let _ = tx.send(());
        server.await.unwrap();
        assert!(!sock.exists());
    }
}
