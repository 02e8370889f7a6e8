//! The routes in front of VS Code (spec §3.10): `/` and `/vscode`, VS Code's static assets
//! (served by us, from disk), the mint-key endpoint, and everything else, HTTP and WebSocket,
//! forwarded to the server of the requesting user's workspace.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::auth::Auth;
use crate::error::AppError;
use crate::identity::Identity;
use crate::lifecycle::Lifecycle;
use crate::relative::{Query, found, location};
use crate::settings::Settings;
use crate::vscode::build::Build;
use crate::vscode::forward;
use crate::workspaces::placement::{NotPlaced, Placement, Served};
use crate::workspaces::supervisor::NotReady;
use crate::workspaces::{Workspace, Workspaces};

/// How long a request waits for VS Code to come up before getting the "starting" page.
const READY_WAIT: Duration = Duration::from_secs(20);

/// What the workbench routes need.
pub struct Workbench {
    pub workspaces: Arc<Workspaces>,
    /// Which front runs a workspace (this one, with one front).
    pub placement: Arc<dyn Placement>,
    pub lifecycle: Lifecycle,
    /// The build's `out/`, `extensions/`... for `/{quality}-{commit}/static/`.
    static_files: ServeDir,
    product_path: String,
    /// `--ignore-last-opened`.
    ignore_last_opened: bool,
    /// `--trusted-origins`.
    trusted_origins: Vec<String>,
}

impl Workbench {
    pub fn new(
        workspaces: Arc<Workspaces>,
        placement: Arc<dyn Placement>,
        lifecycle: Lifecycle,
        build: &Build,
        ignore_last_opened: bool,
        trusted_origins: Vec<String>,
    ) -> Workbench {
        let static_files =
            ServeDir::new(&build.root).precompressed_br().precompressed_gzip().append_index_html_on_directories(false);
        Workbench {
            workspaces,
            placement,
            lifecycle,
            static_files,
            product_path: build.product_path(),
            ignore_last_opened,
            trusted_origins,
        }
    }

    async fn workspace(&self, who: &Identity) -> Result<Arc<Workspace>, AppError> {
        self.workspaces.get(who).await.map_err(|e| {
            tracing::warn!("{}'s workspace: {e}", who.name);
            AppError::new(StatusCode::SERVICE_UNAVAILABLE, "Your workspace is not available").retry_after(5)
        })
    }
}

pub fn routes<S>(workbench: &Workbench) -> Router<S>
where
    Arc<Workbench>: FromRef<S>,
    Arc<Auth>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    let product = &workbench.product_path;
    Router::new()
        .route(&format!("/{product}/static/{{*path}}"), get(static_file))
        .route(&format!("/vscode/{product}/static/{{*path}}"), get(static_file))
        .route("/mint-key", post(mint_key))
        .route("/vscode/mint-key", post(mint_key))
        .fallback(forward_to_vscode)
}

/// `/{quality}-{commit}/static/...`: VS Code's web client files, from the build directory, with
/// the brotli/gzip siblings made at provisioning, cached for a year (the commit is in the URL).
async fn static_file(_: Identity, State(wb): State<Arc<Workbench>>, req: Request) -> Result<Response, AppError> {
    let path = req.uri().path();
    let rest = path.split_once("/static/").map(|(_, r)| r).unwrap_or_default();
    let uri = Uri::try_from(format!("/{rest}")).map_err(|_| AppError::not_found())?;
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let res = wb.static_files.clone().oneshot(Request::from_parts(parts, body)).await.map_err(AppError::internal)?;
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

async fn mint_key(who: Identity, State(wb): State<Arc<Workbench>>) -> Result<Response, AppError> {
    let key = wb
        .workspace(&who)
        .await?
        .mint_key()
        .await
        .map_err(|e| AppError::internal(format!("cannot keep the mint key: {}", crate::errno::describe(&e))))?;
    let mut res =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], key.to_vec()).into_response();
    crate::headers::add_private_headers(res.headers_mut());
    Ok(res)
}

/// The workbench roots; code-server sends unauthenticated visitors of these to the login page.
fn is_root(path: &str) -> bool {
    matches!(path, "/" | "/vscode" | "/vscode/")
}

/// Everything under `/` and `/vscode` that is not ours: authenticate, then forward to the
/// user's VS Code server (started on demand). Unauthenticated requests never start one.
async fn forward_to_vscode(
    State(wb): State<Arc<Workbench>>,
    State(auth): State<Arc<Auth>>,
    req: Request,
) -> Result<Response, AppError> {
    if crate::websocket::is_websocket(req.method().as_str(), req.headers()) {
        let authority = req.uri().authority().map(|a| a.as_str());
        if let Err(e) = crate::origin::check_origin(req.headers(), authority, &wb.trusted_origins) {
            tracing::debug!("WebSocket refused: {e}");
            return Err(AppError::forbidden());
        }
        let who = auth.identify(req.headers()).await?.ok_or_else(AppError::unauthorized)?;
        let workspace = wb.workspace(&who).await?;
        let stream = connect(&wb, &workspace).await?;
        let window = workspace.connection_guard();
        return forward::forward_websocket(stream, req, &auth.cookie_name, &wb.lifecycle, window)
            .await
            .map_err(unreachable);
    }

    let path = req.uri().path().to_string();
    let Some(who) = auth.identify(req.headers()).await? else {
        if is_root(&path) && matches!(*req.method(), Method::GET | Method::HEAD) {
            let query = Query::parse(req.uri().query());
            // "self": the mount path plus the trailing slash of the request's path. code-server
            // looks at the raw URL, so a query string hides the slash and adds an empty `to=`.
            let me = if path == "/" { None } else { Some(path.as_str()) };
            return Ok(found(&location(&path, &query, "login", &[("to", me)])));
        }
        return Err(AppError::unauthorized());
    };
    let workspace = wb.workspace(&who).await?;
    if is_root(&path) && req.method() == Method::GET {
        let query = Query::parse(req.uri().query());
        if let Some(location) = last_opened(&wb, &workspace, &path, &query) {
            return Ok(found(&location));
        }
        // Remember what was opened, so the next bare visit comes back to it (`?ew=true`, an
        // empty window, replaces the memory and stops the redirects).
        workspace.settings.write(Settings { query: Some(query.0.into_iter().collect()), ..Default::default() });
    }
    let stream = connect(&wb, &workspace).await?;
    forward::forward_http(stream, req, &auth.cookie_name).await.map_err(unreachable)
}

/// A connection to the workspace's server, started (here or by another front) if need be and
/// waited for (bounded). A server another front runs that refuses the connection (that front
/// just stopped or died) is looked up once more before the request fails.
async fn connect(wb: &Workbench, workspace: &Arc<Workspace>) -> Result<tokio::net::UnixStream, AppError> {
    // Running as the user's uid, the server must answer as that uid (see forward::connect).
    let owner = workspace.layout.run_as.as_ref().map(|r| r.uid);
    let served = ready(wb, workspace).await?;
    match forward::connect(&served.socket, owner).await {
        Ok(stream) => Ok(stream),
        Err(e) if served.here => Err(unreachable(e)),
        Err(e) => {
            tracing::debug!("{}'s workspace on another front: {e}; looking again", workspace.name);
            wb.placement.refused(workspace, &served).await;
            let again = ready(wb, workspace).await?;
            forward::connect(&again.socket, owner).await.map_err(unreachable)
        }
    }
}

/// Where the workspace's server answers, once it does (see [`connect`]).
async fn ready(wb: &Workbench, workspace: &Arc<Workspace>) -> Result<Served, AppError> {
    match wb.placement.serve(workspace, READY_WAIT).await {
        Ok(served) => Ok(served),
        Err(NotPlaced::Refused(why)) => Err(AppError::new(StatusCode::INSUFFICIENT_STORAGE, why)),
        Err(NotPlaced::NotReady(NotReady::Stopped)) => {
            Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down"))
        }
        Err(NotPlaced::Unavailable(e)) => {
            tracing::warn!("{}'s workspace: {e}", workspace.name);
            Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, "Your workspace is not available").retry_after(5))
        }
        Err(e) => {
            Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e}. This page reloads by itself."))
                .retry_after(2))
        }
    }
}

/// Where a bare visit to the workbench should go (spec §3.10.1): the folder or workspace opened
/// last (from `coder.json`, unless `--ignore-last-opened`), else the last path given on the
/// command line: a `.code-workspace` file as a workspace, a directory (or a path that does not
/// exist yet) as a folder, any other file as nothing.
fn last_opened(wb: &Workbench, workspace: &Workspace, path: &str, query: &Query) -> Option<String> {
    if ["folder", "workspace", "ew"].iter().any(|k| query.get(k).is_some()) {
        return None;
    }
    let here = |overrides: &[(&str, Option<&str>)]| location(path, query, path, overrides);
    if !wb.ignore_last_opened
        && let Some(last) = workspace.settings.get().query
    {
        let (folder, workspace) = (last.get("folder").map(String::as_str), last.get("workspace").map(String::as_str));
        if folder.is_some() || workspace.is_some() {
            return Some(here(&[("folder", folder), ("workspace", workspace)]));
        }
    }
    let last = workspace.layout.open.last()?;
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
