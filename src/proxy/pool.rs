//! The proxy's one pool of upstream connections: idle keep-alive TCP connections to
//! `127.0.0.1:<port>`, shared by the express lane ([`super::lane`]) and hyper's path
//! ([`super::Proxy::send`]). A connection either path finished with cleanly comes back here and
//! serves whichever path asks next. (hyper-util's pooled client keeps its own connections behind
//! request senders, so the lane could not share them; hyper's path runs one `http1` client
//! connection per exchange over a socket from here instead, see [`super::Pooled`].)
//!
//! Reused newest first, at most [`POOL_MAX_IDLE_PER_PORT`] per port, closed after
//! [`POOL_IDLE_TIMEOUT`] unused: a background task reaps them (only while the pool holds any),
//! so an idle dev server is not held open.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle upstream connections are closed after this.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per port: enough for a browser's parallel requests and a busy dev
/// server, bounded so a burst does not leave hundreds of sockets open.
pub const POOL_MAX_IDLE_PER_PORT: usize = 64;

#[derive(Default)]
pub struct IdlePool {
    ports: Mutex<HashMap<u16, Vec<Idle>>>,
    reaping: AtomicBool,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl IdlePool {
    /// An idle connection to `port` that still looks usable, if there is one.
    pub fn take(&self, port: u16) -> Option<TcpStream> {
        let mut ports = self.ports.lock().unwrap();
        let idle = ports.get_mut(&port)?;
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < POOL_IDLE_TIMEOUT && quiet(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keeps a connection that has just finished an exchange cleanly (nothing unread, both
    /// messages complete, no `close`); beyond the bound it is closed instead.
    pub fn put(self: &Arc<Self>, port: u16, stream: TcpStream) {
        {
            let mut ports = self.ports.lock().unwrap();
            let idle = ports.entry(port).or_default();
            if idle.len() >= POOL_MAX_IDLE_PER_PORT {
                return;
            }
            idle.push(Idle { stream, since: Instant::now() });
        }
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ports.lock().unwrap().values().map(Vec::len).sum()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Dials `127.0.0.1:<port>`: the only address the proxy ever connects to.
pub async fn connect(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Closes connections idle for longer than the timeout; stops once the pool is empty (the next
/// `put` starts it again) or gone.
async fn reap(pool: Weak<IdlePool>) {
    loop {
        tokio::time::sleep(POOL_IDLE_TIMEOUT / 4).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut ports = pool.ports.lock().unwrap();
        for idle in ports.values_mut() {
            idle.retain(|c| c.since.elapsed() < POOL_IDLE_TIMEOUT);
        }
        ports.retain(|_, idle| !idle.is_empty());
        if ports.is_empty() {
            // Under the lock, so a `put` either saw `true` and its connection is reaped by a
            // later round of this task, or comes after this and starts a new one.
            pool.reaping.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// An idle connection has nothing to read; if it has (the upstream closed it, or sent
/// something unasked), it is not reused. The runtime's readiness answers without a system call
/// when it knows the socket is drained; after a read that ended exactly at a body's end it
/// cannot know, and one non-blocking read tells.
fn quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (ours, the upstream's end).
    async fn pair(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let port = listener.local_addr().unwrap().port();
        let (ours, theirs) = tokio::join!(connect(port), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_bounded_reused_and_reaped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Every socket is made before the first `put` starts the reaper: with the clock paused,
        // waiting on I/O while a timer is pending would move the clock.
        let mut sevens = Vec::new();
        for _ in 0..POOL_MAX_IDLE_PER_PORT + 3 {
            sevens.push(pair(&listener).await);
        }
        let (nine, _nine_far) = pair(&listener).await;
        let (closed, closed_far) = pair(&listener).await;
        drop(closed_far);
        closed.readable().await.unwrap();

        let pool = Arc::new(IdlePool::default());
        let mut far_ends = Vec::new();
        for (ours, theirs) in sevens {
            pool.put(7, ours);
            far_ends.push(theirs);
        }
        assert_eq!(pool.len(), POOL_MAX_IDLE_PER_PORT, "bounded per port");
        assert!(pool.take(8).is_none(), "kept per port");
        // One the upstream has closed is dropped, not handed out.
        pool.put(5, closed);
        assert!(pool.take(5).is_none());
        assert_eq!(pool.len(), POOL_MAX_IDLE_PER_PORT);

        let reused = pool.take(7).unwrap();
        pool.put(7, reused);
        tokio::time::sleep(POOL_IDLE_TIMEOUT / 2).await;
        pool.put(9, nine);
        assert_eq!(pool.len(), POOL_MAX_IDLE_PER_PORT + 1);
        // The reaper closes each connection once it has been idle for the timeout, without
        // anyone asking the pool for one.
        tokio::time::sleep(POOL_IDLE_TIMEOUT / 2 + POOL_IDLE_TIMEOUT / 4).await;
        assert_eq!(pool.len(), 1, "the older ones are reaped");
        tokio::time::sleep(POOL_IDLE_TIMEOUT).await;
        assert!(pool.is_empty());
        assert!(!pool.reaping.load(Ordering::Relaxed), "the reaper stops with nothing to reap");
    }
}
