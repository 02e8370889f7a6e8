//! VS Code in the browser: the build, its supervised server, and the routes in front of it
//! (spec §3.10): `/` and `/vscode`, VS Code's static assets (served by us, from disk), the
//! mint-key endpoint, and everything else, HTTP and WebSocket, forwarded to the child.

pub mod build;
pub mod extensions;
pub mod first_run;
pub mod forward;
pub mod provision;
pub mod supervisor;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::app::AppState;
use crate::auth::Authenticated;
use crate::cli::{AuthMode, CliError, Config};
use crate::error::AppError;
use crate::lifecycle::Lifecycle;
use crate::relative::{Query, found, location};
use crate::settings::Settings;
use build::Build;
use supervisor::{Launch, NotReady, Supervisor};

/// How long a request waits for VS Code to come up before getting the "starting" page.
const READY_WAIT: Duration = Duration::from_secs(20);

/// VS Code as the rest of the server sees it.
pub struct VsCode {
    pub supervisor: Arc<Supervisor>,
    /// Runs the supervisor as a background task and the WebSocket tunnels as connections, so
    /// shutdown stops them.
    lifecycle: Lifecycle,
    mint_key_file: PathBuf,
    mint_key: tokio::sync::OnceCell<[u8; 32]>,
    static_files: ServeDir,
}

impl VsCode {
    pub fn new(config: &Config, build: Build, lifecycle: Lifecycle) -> Result<VsCode, CliError> {
        let runtime_dir = config.paths.runtime.clone();
        // code-server's patched build takes the GitHub token as `--github-auth`.
        let private_args = match (&config.github_auth, &build.code_server_version) {
            (Some(token), Some(_)) => vec![crate::cli::Secret::new(format!("--github-auth={}", token.expose()))],
            _ => vec![],
        };
        let launch = Launch {
            args: server_args(config, &build)?,
            env: child_env(config, &build),
            runtime_dir,
            build,
            private_args,
        };
        let static_files = ServeDir::new(&launch.build.root)
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(false);
        Ok(VsCode {
            supervisor: Arc::new(Supervisor::new(launch)),
            lifecycle,
            mint_key_file: config.user_data_dir.join("serve-web-key-half"),
            mint_key: tokio::sync::OnceCell::new(),
            static_files,
        })
    }

    pub fn build(&self) -> &Build {
        self.supervisor.build()
    }

    /// Starts VS Code if nobody has yet, and waits (bounded) until it accepts connections.
    async fn socket(&self) -> Result<PathBuf, AppError> {
        if self.supervisor.claim_start() {
            let supervisor = self.supervisor.clone();
            self.lifecycle.spawn("vscode supervisor", |token| async move { supervisor.run(token).await });
        }
        match self.supervisor.ready(READY_WAIT).await {
            Ok((socket, _)) => Ok(socket),
            Err(NotReady::Stopped) => {
                Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down"))
            }
            Err(e) => Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e}. This page reloads by itself."))
                .retry_after(2)),
        }
    }

    /// The 32 bytes the web client mixes into its secret-storage key (spec §3.10.3): random
    /// once, kept in the user-data-dir with mode 0600, the same for the life of the process.
    async fn mint_key(&self) -> Result<[u8; 32], AppError> {
        self.mint_key
            .get_or_try_init(|| async {
                let path = self.mint_key_file.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
                    match std::fs::read(&path) {
                        Ok(bytes) if bytes.len() == 32 => Ok(bytes.try_into().expect("32 bytes")),
                        Ok(_) | Err(_) => {
                            let key = crate::util::random_bytes::<32>();
                            crate::util::atomic_write(&path, &key, 0o600)?;
                            Ok(key)
                        }
                    }
                })
                .await
                .map_err(AppError::internal)?
                .map_err(|e| AppError::internal(format!("cannot keep the mint key: {}", crate::errno::describe(&e))))
            })
            .await
            .copied()
    }
}

/// Restarts VS Code's server in place on SIGUSR1 or SIGUSR2, as code-server's wrapper does,
/// until `stop`.
pub async fn hotswap_on_signals(
    mut signals: crate::server::HotswapSignals,
    supervisor: Arc<Supervisor>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let name = tokio::select! {
            name = signals.recv() => name,
            _ = stop.cancelled() => return,
        };
        tracing::info!("Received {name}; hotswapping");
        if !supervisor.hotswap() {
            tracing::info!("VS Code is not running yet; it starts on the next request that needs it");
        }
    }
}

/// The child's command line after `--socket-path` (vscode-server.md §6; spec §4.2).
fn server_args(config: &Config, build: &Build) -> Result<Vec<OsString>, CliError> {
    let mut args: Vec<OsString> = vec![];
    let mut flag = |name: &str| args.push(format!("--{name}").into());
    flag("without-connection-token");
    flag("accept-server-license-terms");
    let args_with = |args: &mut Vec<OsString>, name: &str, value: OsString| {
        args.push(format!("--{name}").into());
        args.push(value);
    };
    args_with(&mut args, "user-data-dir", config.user_data_dir.clone().into());
    args_with(&mut args, "extensions-dir", config.extensions_dir.clone().into());
    if let Some(dir) = &config.builtin_extensions_dir {
        args_with(&mut args, "builtin-extensions-dir", dir.clone().into());
    }
    // VS Code strips this prefix when present, so `/vscode/...` and `/...` both reach it while
    // its page URLs stay relative to what the browser asked for.
    args_with(&mut args, "server-base-path", "/vscode".into());
    args_with(&mut args, "log", config.log_level.as_str().into());
    for (on, name) in
        [(config.disable_telemetry, "disable-telemetry"), (config.disable_workspace_trust, "disable-workspace-trust")]
    {
        if on {
            args.push(format!("--{name}").into());
        }
    }
    if let Some(locale) = &config.locale {
        args_with(&mut args, "locale", locale.into());
    }
    for id in &config.enable_proposed_api {
        args_with(&mut args, "enable-proposed-api", id.into());
    }
    // Options only code-server's patched build understands.
    if build.code_server_version.is_some() {
        let auth = if config.auth == AuthMode::None { "none" } else { "password" };
        args_with(&mut args, "auth", auth.into());
        args_with(&mut args, "app-name", config.app_name.clone().into());
        for (on, name) in [
            (config.disable_update_check, "disable-update-check"),
            (config.disable_file_downloads, "disable-file-downloads"),
            (config.disable_file_uploads, "disable-file-uploads"),
            (config.disable_getting_started_override, "disable-getting-started-override"),
        ] {
            if on {
                args.push(format!("--{name}").into());
            }
        }
        for d in &config.link_protection_trusted_domains {
            args_with(&mut args, "link-protection-trusted-domains", d.into());
        }
        if let Some(t) = &config.reconnection_grace_time {
            args_with(&mut args, "reconnection-grace-time", t.into());
        }
    }
    // --vscode-option / $VSCODE_OPTIONS: `flag=value` or a bare `flag`, leading `--` optional.
    for opt in &config.vscode_options {
        let opt = opt.trim_start_matches("--");
        let name = opt.split('=').next().unwrap_or_default();
        if name.is_empty() {
            return Err(CliError::new("--vscode-option requires a flag name"));
        }
        args.push(format!("--{opt}").into());
    }
    Ok(args)
}

/// Secrets never reach VS Code's processes; neither do the variables of an outer VS Code (we may
/// run inside a VS Code terminal), except the proxy template we mean to pass on.
pub(crate) fn scrub_env(cmd: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (matches!(key, "PASSWORD" | "HASHED_PASSWORD" | "GITHUB_TOKEN")
                || (key.starts_with("VSCODE_") && key != "VSCODE_PROXY_URI"))
        {
            cmd.env_remove(key);
        }
    }
}

/// What the child's environment gets besides ours: where the session registry is, and the Node
/// VS Code runs on as `NODE_EXEC_PATH` (as code-server's wrapper sets it). Terminals inherit
/// it, and `code-server FILE` typed into one runs VS Code's remote CLI
/// (`bin/remote-cli/code-server`), which starts with `$NODE_EXEC_PATH` and would otherwise look
/// for `<package>/lib/node`, which only code-server's own install has.
fn child_env(config: &Config, build: &Build) -> Vec<(String, String)> {
    let socket = crate::session_socket::socket_path(config);
    vec![
        ("CODE_SERVER_SESSION_SOCKET".into(), socket.display().to_string()),
        ("NODE_EXEC_PATH".into(), build.node.display().to_string()),
    ]
}

pub fn routes(state: &AppState) -> Router<AppState> {
    let product = state.vscode.build().product_path();
    Router::new()
        .route(&format!("/{product}/static/{{*path}}"), get(static_file))
        .route(&format!("/vscode/{product}/static/{{*path}}"), get(static_file))
        .route("/mint-key", post(mint_key))
        .route("/vscode/mint-key", post(mint_key))
        .fallback(workbench)
}

/// `/{quality}-{commit}/static/...`: VS Code's web client files, from the build directory, with
/// the brotli/gzip siblings made at provisioning, cached for a year (the commit is in the URL).
async fn static_file(_: Authenticated, State(state): State<AppState>, req: Request) -> Result<Response, AppError> {
    let path = req.uri().path();
    let rest = path.split_once("/static/").map(|(_, r)| r).unwrap_or_default();
    let uri = Uri::try_from(format!("/{rest}")).map_err(|_| AppError::not_found())?;
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let res = state
        .vscode
        .static_files
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await
        .map_err(AppError::internal)?;
    if res.status() == StatusCode::NOT_FOUND {
        return Err(AppError::not_found());
    }
    let mut res = res.map(Body::new);
    if res.status().is_success() || res.status() == StatusCode::NOT_MODIFIED {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    }
    Ok(res)
}

async fn mint_key(_: Authenticated, State(state): State<AppState>) -> Result<Response, AppError> {
    let key = state.vscode.mint_key().await?;
    let mut res =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], key.to_vec()).into_response();
    crate::headers::add_private_headers(res.headers_mut());
    Ok(res)
}

/// The workbench roots; code-server sends unauthenticated visitors of these to the login page.
fn is_root(path: &str) -> bool {
    matches!(path, "/" | "/vscode" | "/vscode/")
}

/// Everything under `/` and `/vscode` that is not ours: authenticate, then forward.
async fn workbench(State(state): State<AppState>, req: Request) -> Result<Response, AppError> {
    if crate::proxy::ws::is_websocket(req.method().as_str(), req.headers()) {
        let authority = req.uri().authority().map(|a| a.as_str());
        if let Err(e) = crate::origin::check_origin(req.headers(), authority, &state.config.trusted_origins) {
            tracing::debug!("WebSocket refused: {e}");
            return Err(AppError::forbidden());
        }
        if !state.auth.is_authenticated(req.headers()).await? {
            return Err(AppError::unauthorized());
        }
        let socket = state.vscode.socket().await?;
        return forward::forward_websocket(&socket, req, &state.auth.cookie_name, &state.lifecycle)
            .await
            .map_err(unreachable);
    }

    let path = req.uri().path().to_string();
    if !state.auth.is_authenticated(req.headers()).await? {
        if is_root(&path) && matches!(*req.method(), Method::GET | Method::HEAD) {
            let query = Query::parse(req.uri().query());
            // "self": the mount path plus the trailing slash of the request's path. code-server
            // looks at the raw URL, so a query string hides the slash and adds an empty `to=`.
            let me = if path == "/" { None } else { Some(path.as_str()) };
            return Ok(found(&location(&path, &query, "login", &[("to", me)])));
        }
        return Err(AppError::unauthorized());
    }
    if is_root(&path) && req.method() == Method::GET {
        let query = Query::parse(req.uri().query());
        if let Some(location) = last_opened(&state, &path, &query) {
            return Ok(found(&location));
        }
        // Remember what was opened, so the next bare visit comes back to it (`?ew=true`, an
        // empty window, replaces the memory and stops the redirects).
        state.settings.write(Settings { query: Some(query.0.into_iter().collect()), ..Default::default() });
    }
    let socket = state.vscode.socket().await?;
    forward::forward_http(&socket, req, &state.auth.cookie_name).await.map_err(unreachable)
}

/// Where a bare visit to the workbench should go (spec §3.10.1): the folder or workspace opened
/// last (from `coder.json`, unless `--ignore-last-opened`), else the last path given on the
/// command line: a `.code-workspace` file as a workspace, a directory (or a path that does not
/// exist yet) as a folder, any other file as nothing.
fn last_opened(state: &AppState, path: &str, query: &Query) -> Option<String> {
    if ["folder", "workspace", "ew"].iter().any(|k| query.get(k).is_some()) {
        return None;
    }
    let here = |overrides: &[(&str, Option<&str>)]| location(path, query, path, overrides);
    if !state.config.ignore_last_opened
        && let Some(last) = state.settings.get().query
    {
        let (folder, workspace) = (last.get("folder").map(String::as_str), last.get("workspace").map(String::as_str));
        if folder.is_some() || workspace.is_some() {
            return Some(here(&[("folder", folder), ("workspace", workspace)]));
        }
    }
    let last = state.config.paths_to_open.last()?;
    let text = last.to_string_lossy();
    if last.is_file() {
        return (last.extension().is_some_and(|e| e == "code-workspace")).then(|| here(&[("workspace", Some(&text))]));
    }
    Some(here(&[("folder", Some(&text))]))
}

fn unreachable(e: forward::ForwardError) -> AppError {
    tracing::warn!("{e}");
    AppError::new(StatusCode::BAD_GATEWAY, "VS Code is not reachable right now. Reload the page in a moment.")
        .retry_after(2)
}
