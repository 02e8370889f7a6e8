//! The heart's HTTP side: `/healthz` (JSON or a WebSocket of health events), the middleware
//! that records activity, and the guard parked on every upgraded connection (see the module
//! docs of [`super`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Heart;
use crate::lifecycle::Lifecycle;
use crate::server::{ConnInfo, ConnectionSlot};

/// What the heart's routes and middleware need.
#[derive(Clone)]
pub struct HeartState {
    pub heart: Arc<Heart>,
    /// Upgraded connections are tracked here for shutdown.
    pub lifecycle: Lifecycle,
}

pub fn routes<S>() -> Router<S>
where
    HeartState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/healthz", get(healthz)).route("/healthz/", get(healthz))
}

/// Middleware: every request but `/healthz` counts as activity. (code-server compares the raw
/// URL, so `/healthz?x` counts; we compare the path.)
///
/// A request that upgrades (`101`) leaves a connection guard and a lifecycle token on its
/// connection ([`ConnectionSlot`]), released when the upgraded socket is dropped: so every
/// WebSocket counts as an open connection and is waited for at shutdown, whoever serves it.
/// The `/healthz` socket is a monitor's: waited for, but not counted.
pub async fn record_activity(State(state): State<HeartState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let counts = path != "/healthz" && path != "/healthz/";
    if counts {
        state.heart.record_activity();
    }
    let slot = req.extensions().get::<ConnInfo>().map(|c| c.slot.clone());
    let res = next.run(req).await;
    keep_upgraded(&state, &res, slot, counts);
    res
}

/// After a `101 Switching Protocols`, parks a connection guard (the socket counts as activity and
/// keeps the server from going idle; not for monitors' `/healthz` sockets) and a lifecycle token
/// (shutdown waits for it) in the connection's slot: both live exactly as long as the socket.
pub fn keep_upgraded(state: &HeartState, res: &Response, slot: Option<ConnectionSlot>, counts: bool) {
    if res.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(slot) = slot
    {
        if counts {
            slot.hold(state.heart.connection_guard());
        }
        slot.hold(state.lifecycle.upgraded_token());
    }
}

/// `GET /healthz`: JSON health; as a WebSocket, one health event per message received.
/// No authentication and no origin check, as in code-server. The health socket is a monitor's,
/// so it neither counts as activity nor keeps the server from going idle.
async fn healthz(State(state): State<HeartState>, ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    match ws {
        Ok(ws) => {
            let lifecycle = state.lifecycle.clone();
            ws.on_upgrade(move |socket| lifecycle.connection(health_socket(socket, state))).into_response()
        }
        Err(_) => axum::Json(state.heart.health()).into_response(),
    }
}

async fn health_socket(mut socket: WebSocket, state: HeartState) {
    let shutdown = state.lifecycle.shutting_down();
    tokio::pin!(shutdown);
    loop {
        let msg = tokio::select! {
            msg = socket.recv() => msg,
            _ = &mut shutdown => {
                let bye = CloseFrame { code: close_code::AWAY, reason: "server is shutting down".into() };
                let _ = socket.send(Message::Close(Some(bye))).await;
                return;
            }
        };
        match msg {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => {}
        }
        let h = state.heart.health();
        let event = serde_json::json!({ "event": "health", "status": h.status, "lastHeartbeat": h.last_heartbeat });
        if socket.send(Message::Text(event.to_string().into())).await.is_err() {
            return;
        }
    }
}
