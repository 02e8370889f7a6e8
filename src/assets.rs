//! Our own static assets under `/_static/` (spec §3.9), `/robots.txt`, `/security.txt` and the
//! PWA manifest (§3.10.2). All without authentication, as in code-server.
//!
//! Unlike code-server, `/_static` serves only the files in `static/` (embedded in the binary),
//! not the whole install tree, and a missing file is `Not Found` without any path in the body.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use rust_embed::RustEmbed;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::error::AppError;
use crate::relative::relative_root;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// What the public files say about this server.
#[derive(Debug, Clone)]
pub struct Site {
    /// `--app-name`, the manifest's name.
    pub app_name: String,
    /// `--security-contact`, the `Contact:` of `/security.txt`.
    pub security_contact: String,
}

pub fn routes<S>() -> Router<S>
where
    Arc<Site>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .merge(static_routes())
        .route("/robots.txt", read_only(get(|| text_file("src/browser/robots.txt"))))
        .route("/security.txt", read_only(get(security_txt)))
        .route("/.well-known/security.txt", read_only(get(security_txt)))
        .route("/manifest.json", read_only(get(manifest)))
        .route("/vscode/manifest.json", read_only(get(manifest)))
}

/// `/_static/…` alone, for any router (the first run's progress page uses it too).
pub fn static_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/_static/{*path}", read_only(get(static_file)))
        .route("/_static", read_only(get(not_found)))
        .route("/_static/", read_only(get(not_found)))
}

/// GET and HEAD only; anything else is 405 with `Allow: GET, HEAD`.
fn read_only<S: Clone + Send + Sync + 'static>(route: MethodRouter<S>) -> MethodRouter<S> {
    route.fallback(|| async {
        let mut res = AppError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
        res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        res
    })
}

async fn not_found() -> AppError {
    AppError::not_found()
}

async fn static_file(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    // The embedded table cannot be escaped, but refuse traversal explicitly all the same.
    if path.split('/').any(|seg| seg == ".." || seg == ".") || path.contains('\\') {
        return Err(AppError::not_found());
    }
    let file = Assets::get(&path).ok_or_else(AppError::not_found)?;
    let etag = format!("\"{}\"", crate::util::hex(&file.metadata.sha256_hash()[..16]));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header");
    let mut res = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii() == etag.as_bytes()))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = file.data.into_owned().into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
        res
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=0"));
    if path.ends_with("serviceWorker.js") {
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    Ok(res)
}

/// RFC 9116: who to tell about a vulnerability (`--security-contact`), valid for a year from now.
async fn security_txt(State(site): State<Arc<Site>>) -> Response {
    let expires = crate::util::iso8601(crate::util::now_ms() + 365 * 24 * 3600 * 1000);
    let body = format!(
        "# Security contact for this server (RFC 9116).\n# Set it with --security-contact (or security-contact: in config.yaml).\nContact: {}\nExpires: {expires}\nPreferred-Languages: en\n",
        site.security_contact
    );
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
}

async fn text_file(path: &'static str) -> Response {
    match Assets::get(path) {
        Some(f) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], f.data.into_owned())
                .into_response()
        }
        None => AppError::not_found().into_response(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The PWA manifest, icons relative to the request so it works under any base path.
async fn manifest(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    let root = relative_root(uri.path());
    let icon = |name: &str, size: u32, purpose: &str| {
        serde_json::json!({
            "src": format!("{root}/_static/src/browser/media/{name}-{size}.png"),
            "type": "image/png",
            "sizes": format!("{size}x{size}"),
            "purpose": purpose,
        })
    };
    let name = &site.app_name;
    let body = serde_json::json!({
        "name": name,
        "short_name": name,
        "start_url": ".",
        "display": "fullscreen",
        "display_override": ["window-controls-overlay"],
        "description": "Run Code on a remote server.",
        "icons": [
            icon("pwa-icon", 192, "any"),
            icon("pwa-icon", 512, "any"),
            icon("pwa-icon-maskable", 192, "maskable"),
            icon("pwa-icon-maskable", 512, "maskable"),
        ],
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/manifest+json"))],
        serde_json::to_string_pretty(&body).expect("manifest serialises"),
    )
        .into_response()
}
