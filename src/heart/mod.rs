//! Activity heartbeat, `/healthz`, and the idle timeout (spec §5, §3.11).
//!
//! Every request except `/healthz` records activity. A *beat* is recorded at most once a
//! [window](Heart::window) (a minute); the server is `alive` while the last beat is younger than
//! that. Each beat touches `<data dir>/heartbeat`, but never on the request's path: the request
//! only flips an atomic and wakes [`Heart::run`], the background task that writes the file.
//!
//! Long-lived connections count too, as in code-server (whose timer re-beats while its HTTP
//! server has open connections). Every upgraded connection (a WebSocket to VS Code, a proxied
//! WebSocket) holds a [`ConnectionGuard`] for as long as its socket lives: [`record_activity`]
//! parks one on the connection whenever a response is `101 Switching Protocols` (see
//! [`crate::server::slot`]), so the modules that serve WebSockets need do nothing for it. While
//! any guard is held, [`Heart::run`] beats again each time the last beat is about to expire,
//! `/healthz` says `alive`, and [`Heart::idle`] never resolves. So an open browser tab keeps the
//! server alive and the heartbeat file fresh, and closing it starts the idle countdown. Other
//! long-lived work that is not an upgrade (a long streaming response, say) can hold a guard of
//! its own from [`Heart::connection_guard`]. Idle keep-alive HTTP connections do not count
//! (code-server counts every TCP connection): a monitor polling `/healthz` over keep-alive must
//! not keep an idle server up.
//!
//! Hot-path cost of a request: one clock read, one relaxed atomic load (a store at most once a
//! second for the idle clock and once a minute for the beat), and one uncontended `Arc` clone
//! (the connection's slot).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};

pub mod routes;

/// A beat is "recent" for this long (code-server's `HEARTBEAT_INTERVAL`).
pub const BEAT_INTERVAL_MS: u64 = 60_000;

/// The idle clock is kept to this resolution, so a busy server stores it at most once a second.
const ACTIVITY_RESOLUTION_MS: u64 = 1_000;

#[derive(Debug)]
pub struct Heart {
    clock: Arc<dyn Clock>,
    /// How long a beat keeps the server `alive`; [`BEAT_INTERVAL_MS`] outside tests.
    window_ms: u64,
    /// Unix ms of the last beat; 0 before the first.
    last_beat: AtomicU64,
    /// Unix ms of the last activity (to [`ACTIVITY_RESOLUTION_MS`]), or of start-up: the idle
    /// timeout counts from here.
    last_activity: AtomicU64,
    /// Live [`ConnectionGuard`]s.
    open: AtomicUsize,
    /// Wakes [`Heart::run`] to write the file after a beat.
    beat_wanted: Notify,
    /// Wakes [`Heart::idle`] when the last connection closes.
    connections_changed: Notify,
    /// `<data dir>/heartbeat`; `None` keeps the heart in memory only.
    file: Option<PathBuf>,
    /// Times the file was written (observability and tests).
    file_writes: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: &'static str,
    pub last_heartbeat: u64,
}

impl Default for Heart {
    /// The wall clock, a one-minute window, and no file.
    fn default() -> Self {
        Heart::new(Arc::new(SystemClock), None)
    }
}

impl Heart {
    /// A heart reading time from `clock` that touches `file` (if any) on each beat.
    pub fn new(clock: Arc<dyn Clock>, file: Option<PathBuf>) -> Heart {
        let now = clock.now_ms();
        Heart {
            clock,
            window_ms: BEAT_INTERVAL_MS,
            last_beat: AtomicU64::new(0),
            last_activity: AtomicU64::new(now),
            open: AtomicUsize::new(0),
            beat_wanted: Notify::new(),
            connections_changed: Notify::new(),
            file,
            file_writes: AtomicU64::new(0),
        }
    }

    /// Replaces the one-minute beat window (for tests of the re-beat loop).
    pub fn with_window(mut self, window: Duration) -> Heart {
        self.window_ms = window.as_millis().max(1) as u64;
        self
    }

    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Records activity now. Cheap enough for every request.
    pub fn record_activity(&self) {
        self.record_activity_at(self.clock.now_ms());
    }

    /// Records activity at `now` (Unix ms): moves the idle clock and beats if the last beat is a
    /// window old. Returns whether this was a beat.
    pub fn record_activity_at(&self, now: u64) -> bool {
        if now.saturating_sub(self.last_activity.load(Ordering::Relaxed)) >= ACTIVITY_RESOLUTION_MS {
            self.last_activity.fetch_max(now, Ordering::Relaxed);
        }
        let beat = self.beat_at(now);
        if beat {
            self.beat_wanted.notify_one();
        }
        beat
    }

    /// Beats at `now` unless the last beat is younger than the window. Does not touch the file
    /// (that is [`Heart::run`]'s job). Returns whether this was a beat.
    pub fn beat_at(&self, now: u64) -> bool {
        let last = self.last_beat.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.window_ms {
            return false;
        }
        // Losing a race to another request is fine: that one's time is an equally good beat.
        self.last_beat.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    pub fn health(&self) -> Health {
        self.health_at(self.clock.now_ms())
    }

    /// `alive` iff the last beat is younger than the window, or a long-lived connection is open
    /// (those are re-beaten as the window ends; counting them here keeps `/healthz` from
    /// flickering to `expired` in the instant before the re-beat).
    pub fn health_at(&self, now: u64) -> Health {
        let last = self.last_beat.load(Ordering::Relaxed);
        let alive = (last != 0 && now.saturating_sub(last) < self.window_ms) || self.open_connections() > 0;
        Health { status: if alive { "alive" } else { "expired" }, last_heartbeat: last }
    }

    /// Marks a long-lived connection as open until the guard drops. Creating and dropping the
    /// guard both count as activity.
    pub fn connection_guard(self: &Arc<Self>) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.record_activity();
        ConnectionGuard { heart: self.clone() }
    }

    /// Long-lived connections open right now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// How many times the heartbeat file has been written.
    pub fn file_writes(&self) -> u64 {
        self.file_writes.load(Ordering::Relaxed)
    }

    /// The background half of the heart, run until `shutdown`: writes the file after each beat,
    /// and while connections are open beats again whenever the last beat would expire.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // The beat whose expiry was already dealt with, so an expired heart sleeps until the
        // next beat instead of spinning.
        let mut handled = 0;
        loop {
            let last = self.last_beat.load(Ordering::Relaxed);
            let expires_in = (last != 0 && last != handled)
                .then(|| Duration::from_millis((last + self.window_ms).saturating_sub(self.clock.now_ms())));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.beat_wanted.notified() => self.touch_file().await,
                _ = sleep_for(expires_in) => {
                    handled = last;
                    if self.open_connections() > 0 {
                        self.last_beat.fetch_max(self.clock.now_ms(), Ordering::Relaxed);
                        self.touch_file().await;
                    }
                }
            }
        }
    }

    /// Resolves once nothing has happened for `timeout`: no request, and no open connection.
    pub async fn idle(&self, timeout: Duration) {
        let timeout_ms = timeout.as_millis() as u64;
        loop {
            // Listen before looking, so a connection closing in between is not missed.
            let changed = self.connections_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open_connections() > 0 {
                changed.await;
                continue;
            }
            let idle_for = self.clock.now_ms().saturating_sub(self.last_activity.load(Ordering::Relaxed));
            if idle_for >= timeout_ms {
                return;
            }
            // Activity in the meantime just moves the deadline; the loop re-reads it.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(timeout_ms - idle_for)) => {}
                _ = changed => {}
            }
        }
    }

    async fn touch_file(&self) {
        let Some(path) = self.file.clone() else { return };
        let written = tokio::task::spawn_blocking(move || write_empty(&path)).await;
        match written {
            Ok(Ok(())) => {
                self.file_writes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => tracing::warn!("Failed to write heartbeat file: {}", crate::errno::describe(&e)),
            Err(e) => tracing::warn!("Failed to write heartbeat file: {e}"),
        }
    }
}

/// Keeps a long-lived connection counted by its [`Heart`]; see [`Heart::connection_guard`].
#[derive(Debug)]
pub struct ConnectionGuard {
    heart: Arc<Heart>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // The idle countdown starts when the last connection closes, not when it opened.
        let now = self.heart.clock.now_ms();
        self.heart.last_activity.fetch_max(now, Ordering::Relaxed);
        self.heart.record_activity_at(now);
        if self.heart.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.heart.connections_changed.notify_waiters();
        }
    }
}

async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// code-server writes the heartbeat file empty each time; its mtime is the signal.
fn write_empty(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    std::fs::write(path, b"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, TokioClock};

    const T0: u64 = 1_000_000;

    #[test]
    fn alive_within_a_minute_of_a_beat() {
        let h = Heart::default();
        assert_eq!(h.health_at(T0), Health { status: "expired", last_heartbeat: 0 });
        assert!(h.record_activity_at(T0));
        assert_eq!(h.health_at(T0 + 59_999).status, "alive");
        assert_eq!(h.health_at(T0 + 60_000).status, "expired");
        // Beats are throttled: activity 30 s later does not move the beat.
        assert!(!h.record_activity_at(T0 + 30_000));
        assert_eq!(h.health_at(T0 + 30_000).last_heartbeat, T0);
        assert!(!h.record_activity_at(T0 + 59_999));
        assert!(h.record_activity_at(T0 + 60_000));
        assert_eq!(h.health_at(T0 + 60_000), Health { status: "alive", last_heartbeat: T0 + 60_000 });
    }

    #[test]
    fn the_injected_clock_drives_health() {
        let clock = Arc::new(ManualClock::new(T0));
        let h = Heart::new(clock.clone(), None);
        assert_eq!(h.health().status, "expired");
        h.record_activity();
        clock.advance(59_999);
        h.record_activity();
        assert_eq!(h.health(), Health { status: "alive", last_heartbeat: T0 });
        clock.advance(1);
        assert_eq!(h.health(), Health { status: "expired", last_heartbeat: T0 });
        h.record_activity();
        assert_eq!(h.health(), Health { status: "alive", last_heartbeat: T0 + 60_000 });
    }

    #[test]
    fn guards_count_connections() {
        let h = Arc::new(Heart::new(Arc::new(ManualClock::new(T0)), None));
        let a = h.connection_guard();
        let b = h.connection_guard();
        assert_eq!(h.open_connections(), 2);
        assert_eq!(h.health().status, "alive", "opening a connection is activity");
        drop(a);
        assert_eq!(h.open_connections(), 1);
        drop(b);
        assert_eq!(h.open_connections(), 0);
    }

    /// Waits until `cond` holds, letting the heart's task and its file write (on a blocking
    /// thread) finish, without moving the paused clock.
    async fn settle(mut cond: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn the_file_is_touched_at_most_once_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data/heartbeat");
        let h = Arc::new(Heart::new(Arc::new(TokioClock::new()), Some(file.clone())));
        let token = CancellationToken::new();
        let task = tokio::spawn(h.clone().run(token.clone()));

        h.record_activity();
        settle(|| h.file_writes() == 1).await;
        assert!(file.exists(), "the data dir is created and the file written");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
        // A minute of steady traffic: no more writes.
        for _ in 0..59 {
            tokio::time::advance(Duration::from_secs(1)).await;
            h.record_activity();
        }
        tokio::task::yield_now().await;
        assert_eq!(h.file_writes(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        h.record_activity();
        settle(|| h.file_writes() == 2).await;
        assert_eq!(h.health().status, "alive");

        // Nobody around for an hour: the beat expires and nothing is written.
        tokio::time::advance(Duration::from_secs(3600)).await;
        tokio::task::yield_now().await;
        assert_eq!(h.file_writes(), 2);
        assert_eq!(h.health().status, "expired");

        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_connection_keeps_the_heart_beating() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(Heart::new(Arc::new(TokioClock::new()), Some(dir.path().join("heartbeat"))));
        let token = CancellationToken::new();
        let task = tokio::spawn(h.clone().run(token.clone()));

        let guard = h.connection_guard();
        settle(|| h.file_writes() == 1).await;
        // An hour with a tab open and no requests: alive throughout, a beat every minute.
        for minute in 1..=60 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert_eq!(h.health().status, "alive", "minute {minute}");
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        settle(|| h.file_writes() == 61).await;

        drop(guard);
        let writes = h.file_writes();
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(h.health().status, "expired");
        assert_eq!(h.file_writes(), writes);

        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_activity_and_waits_for_connections() {
        let h = Arc::new(Heart::new(Arc::new(TokioClock::new()), None));
        let timeout = Duration::from_secs(61);
        let start = tokio::time::Instant::now();
        // Nobody ever comes: idle N seconds after start.
        h.idle(timeout).await;
        assert_eq!(start.elapsed().as_secs(), 61);

        // Activity pushes the deadline.
        h.record_activity();
        let start = tokio::time::Instant::now();
        let idle = tokio::spawn({
            let h = h.clone();
            async move { h.idle(timeout).await }
        });
        tokio::time::sleep(Duration::from_secs(50)).await;
        h.record_activity();
        idle.await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 50 + 61);

        // An open connection holds it off indefinitely; closing it starts the countdown.
        let guard = h.connection_guard();
        let start = tokio::time::Instant::now();
        let idle = tokio::spawn({
            let h = h.clone();
            async move { h.idle(timeout).await }
        });
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        assert!(!idle.is_finished());
        drop(guard);
        idle.await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 24 * 3600 + 61);
    }
}
