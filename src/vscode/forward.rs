//! Forwarding requests to the VS Code server over its Unix socket: method, path, query and Host
//! kept byte for byte, bodies streamed both ways, WebSocket upgrades spliced without re-framing
//! and without idle timeout (vscode-server.md §6.6–6.7).
//!
//! Each request gets its own connection, as VS Code's own `serve-web` does: connecting to a Unix
//! socket costs microseconds, and no pool can hold a connection to a child that restarted.

use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to VS Code: {0}")]
    Connect(std::io::Error),
    #[error("VS Code's connection failed: {0}")]
    Http(#[from] hyper::Error),
}

/// Connects to VS Code's socket. With `owner` (a user's server running as their uid, its socket
/// in their own directory), the process that answers must be that uid's: they could replace the
/// socket with a symlink to another user's server, and we connect as root, through it.
pub async fn connect(socket: &Path, owner: Option<u32>) -> Result<UnixStream, ForwardError> {
    let stream = UnixStream::connect(socket).await.map_err(ForwardError::Connect)?;
    if let Some(uid) = owner {
        let peer = stream.peer_cred().map_err(ForwardError::Connect)?.uid();
        if peer != uid {
            tracing::warn!("{} is served by uid {peer}, not by its workspace's uid {uid}: refused", socket.display());
            return Err(ForwardError::Connect(std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
        }
    }
    Ok(stream)
}

/// Sends `req` as HTTP/1.1 on a fresh connection to `socket` (see [`connect`] for `owner`).
pub async fn send(socket: &Path, owner: Option<u32>, req: Request<Body>) -> Result<Response<Body>, ForwardError> {
    send_on(connect(socket, owner).await?, req).await
}

/// Sends `req` as HTTP/1.1 on `stream`, a connection to a VS Code server.
async fn send_on(stream: UnixStream, req: Request<Body>) -> Result<Response<Body>, ForwardError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("VS Code connection: {e}");
        }
    });
    let res = sender.send_request(req).await?;
    Ok(res.map(Body::new))
}

/// Rewrites a browser request for the child: origin-form URI, HTTP/1.1, a Host header (HTTP/2
/// carries it in `:authority`), and without our session cookie, which VS Code has no use for.
fn prepare(mut req: Request<Body>, session_cookie: &str) -> Request<Body> {
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority().map(|a| a.as_str().to_string())
        && let Ok(v) = HeaderValue::from_str(&authority)
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    *req.uri_mut() = Uri::try_from(path_and_query).unwrap_or_else(|_| Uri::from_static("/"));
    *req.version_mut() = Version::HTTP_11;
    crate::headers::remove_cookie(req.headers_mut(), session_cookie);
    req
}

/// Forwards an ordinary HTTP request on `stream` (see [`connect`]) and streams the answer back.
pub async fn forward_http(
    stream: UnixStream,
    req: Request<Body>,
    session_cookie: &str,
) -> Result<Response<Body>, ForwardError> {
    let mut req = prepare(req, session_cookie);
    crate::headers::strip_hop_by_hop(req.headers_mut());
    let mut res = send_on(stream, req).await?;
    crate::headers::strip_hop_by_hop(res.headers_mut());
    Ok(res)
}

/// Forwards a WebSocket upgrade on `stream` (see [`connect`]): sends the handshake with its headers untouched, and if VS Code
/// answers 101, returns that answer and splices the two upgraded connections byte for byte
/// until either side closes (no re-framing, no idle timeout; a lifecycle connection, so
/// shutdown ends it). Any other answer is passed back as is.
/// `keep` is held for as long as the WebSocket is open.
pub async fn forward_websocket(
    stream: UnixStream,
    mut req: Request<Body>,
    session_cookie: &str,
    lifecycle: &crate::lifecycle::Lifecycle,
    keep: impl Send + 'static,
) -> Result<Response<Body>, ForwardError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let req = prepare(req, session_cookie);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("VS Code WebSocket connection: {e}");
        }
    });
    let (parts, _) = req.into_parts();
    let mut upstream = sender.send_request(Request::from_parts(parts, Body::empty())).await?;
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(upstream.map(Body::new));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let keep = (keep, crate::metrics::websocket(crate::metrics::Socket::Vscode));
    crate::websocket::splice(lifecycle, client_upgrade, upstream_upgrade, "VS Code", keep, false);
    let (parts, _) = upstream.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        crate::headers::strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn prepare_keeps_path_query_and_host() {
        let req = Request::get("https://ex.com:8443/a%20b/c?x=1&y=%2F")
            .header("cookie", "a=1; code-server-session=secret; b=2")
            .body(Body::empty())
            .unwrap();
        let req = prepare(req, "code-server-session");
        assert_eq!(req.uri(), "/a%20b/c?x=1&y=%2F");
        assert_eq!(req.headers()["host"], "ex.com:8443");
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
        assert_eq!(req.version(), Version::HTTP_11);
    }
}
