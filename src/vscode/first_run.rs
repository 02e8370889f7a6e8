//! What the server answers while VS Code is provisioned on a first run (which takes minutes):
//! the port is already ours, so a browser opening the URL gets a page with the step and how
//! far along it is, reloading itself until the server proper takes over; API clients get a 503
//! with the same in words and `Retry-After`; `/healthz` answers as usual. Our own assets serve
//! the page's styles.

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::provision::Status;
use crate::error::{AppError, accepts_html};
use crate::relative::relative_root;

/// How often the page reloads itself, in seconds.
const REFRESH: u32 = 2;

#[derive(Clone)]
struct FirstRun {
    progress: watch::Receiver<Status>,
    app_name: String,
}

/// The application served until the build is ready.
pub fn app(progress: watch::Receiver<Status>, app_name: &str) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/", get(healthz))
        .merge(crate::assets::static_routes())
        .fallback(page)
        .with_state(FirstRun { progress, app_name: app_name.to_string() })
}

/// Alive, but nothing has happened yet (code-server's shape).
async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "expired", "lastHeartbeat": 0 })).into_response()
}

async fn page(State(first): State<FirstRun>, req: Request) -> Response {
    let status = first.progress.borrow().clone();
    if !accepts_html(req.headers()) {
        let message = format!("VS Code is being set up: {} ({}%)", status.step, status.percent);
        return AppError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(REFRESH).into_response();
    }
    let html = render(&first.app_name, &relative_root(req.uri().path()), &status, REFRESH);
    let mut res = (StatusCode::SERVICE_UNAVAILABLE, Html(html)).into_response();
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(REFRESH));
    crate::headers::add_private_headers(res.headers_mut());
    res
}

#[derive(Template)]
#[template(path = "provisioning.html")]
struct ProvisioningTemplate<'a> {
    app_name: &'a str,
    root: &'a str,
    step: &'a str,
    percent: u8,
    refresh: u32,
}

/// The page shown while VS Code is provisioned.
fn render(app_name: &str, root: &str, status: &Status, refresh: u32) -> String {
    ProvisioningTemplate { app_name, root, step: &status.step, percent: status.percent, refresh }
        .render()
        .expect("the provisioning template renders")
}
