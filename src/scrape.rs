//! `/metrics` served: on the main listener to the metrics token or an admin, and on the
//! `--metrics-addr` listener (only `/metrics` there; open on loopback, else the token too). The
//! counters themselves are [`crate::metrics`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::error::AppError;
use crate::identity::Identity;
use crate::secret::Secret;

/// Who may read `/metrics` on the main listener, besides an admin.
#[derive(Clone)]
pub struct Access {
    pub auth: Arc<Auth>,
    /// `--metrics-token`.
    pub token: Option<Secret>,
}

impl axum::extract::FromRef<Access> for Arc<Auth> {
    fn from_ref(access: &Access) -> Arc<Auth> {
        access.auth.clone()
    }
}

/// `/metrics` on the main listener: for the metrics token, else for an admin.
pub fn routes<S: Clone + Send + Sync + 'static>(auth: Arc<Auth>, token: Option<Secret>) -> Router<S> {
    Router::new().route("/metrics", routing::get(scrape)).with_state(Access { auth, token })
}

async fn scrape(State(access): State<Access>, req: Request) -> Result<Response, AppError> {
    let (mut parts, _) = req.into_parts();
    // The token first: a scraper has no session, and `Bearer cs_...` would be read as an API
    // token by the identity check.
    if !has_token(&parts.headers, access.token.as_ref()) {
        let identity = Identity::from_request_parts(&mut parts, &access).await?;
        if !identity.is_admin() {
            return Err(AppError::new(StatusCode::FORBIDDEN, "Metrics are for admins"));
        }
    }
    Ok(exposition(&access.auth).await)
}

/// Whether the request carries `Authorization: Bearer <token>` with this token, compared in
/// constant time (over digests, so not even the length is told).
fn has_token(headers: &HeaderMap, token: Option<&Secret>) -> bool {
    use subtle::ConstantTimeEq;
    let Some(token) = token else { return false };
    let want = ring::digest::digest(&ring::digest::SHA256, token.expose().as_bytes());
    headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        let Ok(v) = v.to_str() else { return false };
        let Some((scheme, given)) = v.trim().split_once(' ') else { return false };
        let given = ring::digest::digest(&ring::digest::SHA256, given.trim().as_bytes());
        scheme.eq_ignore_ascii_case("bearer") && bool::from(given.as_ref().ct_eq(want.as_ref()))
    })
}

/// The metrics, with the figures only a store can give counted now.
async fn exposition(auth: &Auth) -> Response {
    if let Some(n) = auth.live_sessions().await {
        crate::metrics::sessions_active(n);
    }
    let mut res = crate::metrics::get().render().into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Why `--metrics-addr` cannot be used as given.
pub fn check_dedicated(addr: SocketAddr, token: Option<&Secret>) -> Result<(), String> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--metrics-addr {addr} is not a loopback address: set a metrics token (metrics-token in the config file or $CODE_SERVER_METRICS_TOKEN), which scrapers then present"
        ));
    }
    Ok(())
}

/// The `--metrics-addr` listener: `/metrics` only, until `cancel`. Open to anyone who reaches it
/// on a loopback address; on any other, only with the metrics token ([`check_dedicated`] makes
/// sure there is one).
pub async fn serve_dedicated(
    listener: tokio::net::TcpListener,
    auth: Arc<Auth>,
    token: Option<Secret>,
    cancel: CancellationToken,
) {
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let token = if loopback { None } else { token };
    let app = Router::new()
        .route("/metrics", routing::get(dedicated))
        .fallback(|| async { AppError::new(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(Access { auth, token });
    crate::server::serve(
        crate::server::Listener::Tcp(listener),
        app,
        None::<crate::server::NoLane>,
        None,
        cancel.cancelled_owned(),
    )
    .await;
}

async fn dedicated(State(access): State<Access>, headers: HeaderMap) -> Result<Response, AppError> {
    if access.token.is_some() && !has_token(&headers, access.token.as_ref()) {
        return Err(AppError::unauthorized());
    }
    Ok(exposition(&access.auth).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_a_bearer_token() {
        let token = Secret::new("s3cret-metrics-token");
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            has_token(&h, Some(&token))
        };
        assert!(with("Bearer s3cret-metrics-token"));
        assert!(with("bearer  s3cret-metrics-token "));
        assert!(!with("Bearer s3cret-metrics-toke"));
        assert!(!with("Basic s3cret-metrics-token"));
        assert!(!has_token(&HeaderMap::new(), Some(&token)));
        assert!(!has_token(&HeaderMap::new(), None));
    }

    #[test]
    fn a_public_dedicated_listener_needs_a_token() {
        let token = Secret::new("t");
        assert!(check_dedicated("127.0.0.1:9100".parse().unwrap(), None).is_ok());
        assert!(check_dedicated("[::1]:9100".parse().unwrap(), None).is_ok());
        assert!(check_dedicated("0.0.0.0:9100".parse().unwrap(), None).is_err());
        assert!(check_dedicated("10.0.0.5:9100".parse().unwrap(), Some(&token)).is_ok());
    }
}
