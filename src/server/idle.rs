//! Idle connections are closed. Every connection costs a file descriptor, so one that sends
//! nothing must not be kept forever, or a client opening silent connections exhausts the
//! process's descriptors and takes the whole server down.
//!
//! hyper's HTTP/1.1 server already times out a request head that has not arrived within its
//! header-read timeout, counted from when the connection is ready for the next request, so an
//! idle keep-alive connection closes after it too. HTTP/2 has nothing of the kind: a client that
//! sent its preface (or one request) and then nothing holds its connection as long as it likes,
//! and keep-alive pings only tell a dead peer from a live one. [`Activity`] counts the requests
//! in flight on a connection, a response body included; [`Activity::idle`] resolves once none has
//! been in flight for the timeout, and the connection is then shut down gracefully (a GOAWAY for
//! HTTP/2). Upgraded connections (WebSockets) have left hyper by then and are not affected.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::Frame;
use tokio::time::Instant;

/// Requests in flight on one connection, and when that last changed.
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` of the last request start or end.
    changed_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity { start: Instant::now(), in_flight: AtomicUsize::new(0), changed_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.changed_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A request has started; it ends when the returned guard drops (put it in the response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let quiet_since = self.start + Duration::from_millis(self.changed_ms.load(Ordering::Relaxed));
            tokio::time::sleep_until(quiet_since + timeout).await;
            let still = self.start + Duration::from_millis(self.changed_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && still == quiet_since {
                return;
            }
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Busy: look again a timeout from now (the end of the request moves the mark).
                self.touch();
            }
        }
    }
}

/// One request in flight (see [`Activity::begin`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
pub struct Counted {
    inner: Body,
    _in_flight: InFlight,
}

impl Counted {
    pub fn new(inner: Body, in_flight: InFlight) -> Counted {
        Counted { inner, _in_flight: in_flight }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_in_flight() {
        let a = Activity::new();
        let t = Duration::from_secs(30);
        let started = Instant::now();
        a.idle(t).await;
        assert_eq!(started.elapsed(), t, "nothing happened: idle after the timeout");

        let guard = a.begin();
        let idle = tokio::spawn({
            let a = a.clone();
            async move { a.idle(t).await }
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!idle.is_finished(), "a request in flight is not idleness");
        let ended = Instant::now();
        drop(guard);
        idle.await.unwrap();
        assert!(ended.elapsed() >= t, "the countdown starts when the last request ends");
    }
}
