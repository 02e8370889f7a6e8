//! WebSockets we forward (to a proxied app, to VS Code): the client's upgrade request is
//! forwarded like any request; when the far end answers 101 both connections switch protocols
//! and their bytes are copied both ways as they are. Frames, subprotocols and extensions are the
//! two ends' business, and an idle socket stays open for as long as both ends keep it.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// A WebSocket opening handshake (`GET` with `Upgrade: websocket`) over HTTP/1.1.
pub fn is_websocket(method: &str, headers: &impl crate::headers::HeaderSource) -> bool {
    method == "GET"
        && headers
            .header_values("upgrade")
            .any(|v| v.split(|&b| b == b',').any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket")))
}

/// Waits for both sides to switch protocols, then copies bytes until both directions end. The
/// task is a lifecycle connection, so shutdown ends it. `what` names the far end in logs. Used
/// for proxied WebSockets and for VS Code's.
/// `keep` is held for as long as the splice runs (a workspace's open-window guard, say).
/// `proxied`: the port proxy's, whose bytes count in its metrics when the socket closes.
pub fn splice(
    lifecycle: &crate::lifecycle::Lifecycle,
    client: OnUpgrade,
    upstream: OnUpgrade,
    what: impl std::fmt::Display + Send + 'static,
    keep: impl Send + 'static,
    proxied: bool,
) {
    tokio::spawn(lifecycle.connection(async move {
        let _keep = keep;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!("{what}: WebSocket upgrade did not complete: {e}");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::trace!("{what}: WebSocket closed after {up} bytes up, {down} down");
                if proxied {
                    crate::metrics::proxied_bytes(up, down);
                }
            }
            Err(e) => tracing::debug!("{what}: WebSocket ended: {e}"),
        }
    }));
}
