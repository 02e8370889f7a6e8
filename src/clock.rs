//! Where time comes from, so the heartbeat, idle timeout and update cache can be tested without
//! waiting for minutes or days.
//!
//! Production uses [`SystemClock`] (wall-clock milliseconds: `/healthz` and `coder.json` report
//! Unix times). Timed loops sleep with tokio and re-read the clock when they wake, so a test can
//! drive them with [`TokioClock`] under tokio's paused time (`tokio::time::advance`), and pure
//! logic can be driven by a [`ManualClock`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of "now" in Unix milliseconds.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::util::now_ms()
    }
}

/// Wall-clock time as of creation, advanced by tokio's clock: under `#[tokio::test(start_paused =
/// true)]` it moves only with `tokio::time::advance` or auto-advance, in step with `sleep`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock { base_ms: crate::util::now_ms(), base: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(start_ms))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
