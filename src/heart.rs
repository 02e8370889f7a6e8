//! Activity heartbeat and `/healthz` (spec §5.1, §3.11).
//!
//! Every request except `/healthz` records activity. A beat is recorded at most once a minute;
//! the server is `alive` while the last beat is under a minute old. Recording is one atomic load
//! on the hot path (and a store once a minute).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::app::AppState;
use crate::util::now_ms;

/// A beat is "recent" for this long.
pub const BEAT_INTERVAL_MS: u64 = 60_000;

#[derive(Debug, Default)]
pub struct Heart {
    /// Unix ms of the last beat; 0 before the first.
    last_beat: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: &'static str,
    pub last_heartbeat: u64,
}

impl Heart {
    /// Records activity at `now` (ms); beats when the last beat is a minute old.
    pub fn beat_at(&self, now: u64) {
        let last = self.last_beat.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= BEAT_INTERVAL_MS {
            // Losing a race to another request is fine: either one's time is a valid beat.
            let _ = self.last_beat.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub fn health_at(&self, now: u64) -> Health {
        let last = self.last_beat.load(Ordering::Relaxed);
        let alive = last != 0 && now.saturating_sub(last) < BEAT_INTERVAL_MS;
        Health { status: if alive { "alive" } else { "expired" }, last_heartbeat: last }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/healthz/", get(healthz))
}

/// Middleware: every request but `/healthz` counts as activity. (code-server compares the raw
/// URL, so `/healthz?x` counts; we compare the path.)
pub async fn record_activity(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/healthz" && path != "/healthz/" {
        state.heart.beat_at(now_ms());
    }
    next.run(req).await
}

/// `GET /healthz`: JSON health; as a WebSocket, one health event per message received.
/// No authentication and no origin check, as in code-server.
async fn healthz(State(state): State<AppState>, ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| health_socket(socket, state)).into_response(),
        Err(_) => axum::Json(state.heart.health_at(now_ms())).into_response(),
    }
}

async fn health_socket(mut socket: WebSocket, state: AppState) {
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => {}
        }
        let h = state.heart.health_at(now_ms());
        let event = serde_json::json!({ "event": "health", "status": h.status, "lastHeartbeat": h.last_heartbeat });
        if socket.send(Message::Text(event.to_string().into())).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_within_a_minute_of_a_beat() {
        let h = Heart::default();
        assert_eq!(h.health_at(1_000_000), Health { status: "expired", last_heartbeat: 0 });
        h.beat_at(1_000_000);
        assert_eq!(h.health_at(1_059_999).status, "alive");
        assert_eq!(h.health_at(1_060_000).status, "expired");
        // Beats are throttled: activity 30 s later does not move the beat.
        h.beat_at(1_030_000);
        assert_eq!(h.health_at(1_030_000).last_heartbeat, 1_000_000);
        h.beat_at(1_060_000);
        assert_eq!(h.health_at(1_060_000), Health { status: "alive", last_heartbeat: 1_060_000 });
    }
}
