//! VS Code's routes: `/`, `/vscode` and everything not ours (spec §3.10).
//!
//! Until the VS Code server is provisioned and supervised (the VS Code issue), an authenticated
//! request here gets a 503 error page saying so; authentication already behaves as it will.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::AppError;
use crate::relative::{Query, found, location};

pub fn routes() -> Router<AppState> {
    Router::new().fallback(workbench)
}

/// The workbench root routes redirect unauthenticated visitors to the login page; every other
/// path answers 401 (JSON or the HTML page).
fn is_root(path: &str) -> bool {
    matches!(path, "/" | "/vscode" | "/vscode/")
}

async fn workbench(State(state): State<AppState>, req: Request) -> Result<Response, AppError> {
    let path = req.uri().path();
    if !state.auth.is_authenticated(req.headers()).await? {
        if is_root(path) && matches!(*req.method(), Method::GET | Method::HEAD) {
            let query = Query::parse(req.uri().query());
            // "self": the mount path plus the trailing slash of the request's path. code-server
            // looks at the raw URL, so a query string hides the slash and adds an empty `to=`.
            let me = if path == "/" { None } else { Some(path) };
            return Ok(found(&location(path, &query, "login", &[("to", me)])).into_response());
        }
        return Err(AppError::unauthorized());
    }
    Err(AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "VS Code is not set up on this server yet: this build serves login, sessions and code-server's own routes only.",
    ))
}
