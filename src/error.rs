//! HTTP errors in code-server's shapes (spec §3.13): JSON `{"error": "<message>"}`, or the HTML
//! error page when the client accepts HTML. Handlers return [`AppError`]; its response carries
//! the error as an extension, and [`crate::pages::render_errors`] (which sees the request) swaps
//! in the page. 5xx bodies never carry internal details: those go to the log.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
    /// For "try again shortly" errors: a `Retry-After`, and the HTML page reloads itself.
    pub retry_after: Option<u32>,
}

impl AppError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> AppError {
        AppError { status, message: message.into(), retry_after: None }
    }

    pub fn retry_after(mut self, seconds: u32) -> AppError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn unauthorized() -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    pub fn forbidden() -> AppError {
        AppError::new(StatusCode::FORBIDDEN, "Forbidden")
    }

    pub fn not_found() -> AppError {
        AppError::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// A 500 whose cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> AppError {
        tracing::error!("{cause}");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        crate::headers::add_private_headers(res.headers_mut());
        if let Some(s) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res.extensions_mut().insert(self);
        res
    }
}

/// Whether a body could not be read because it stopped arriving (the body idle timeout of our
/// routes, see [`crate::app`]): such a request gets a 408, not a 400.
pub fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The answer to a request whose body stopped arriving.
pub fn body_timeout() -> AppError {
    AppError::new(StatusCode::REQUEST_TIMEOUT, "Request Timeout: the request body stopped arriving")
}

/// Does the client want HTML? (code-server: `Accept` contains `text/html`.)
pub fn accepts_html(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}
