//! The proxy's one pool of upstream connections: idle keep-alive TCP connections to
//! `127.0.0.1:<port>`, shared by the express lane ([`super::lane`]) and hyper's path
//! ([`super::Proxy::send`]). A connection either path finished with cleanly comes back here and
//! serves whichever path asks next. (hyper-util's pooled client keeps its own connections behind
//! request senders, so the lane could not share them; hyper's path runs one `http1` client
//! connection per exchange over a socket from here instead, see [`super::Idles`].)
//!
//! Connections are kept per port *and per owner* ([`Owner`]: the session a request came with,
//! or its client connection when there is no session), and never handed to another owner: an
//! upstream that answers before reading a request body would otherwise make the next user of
//! the connection read the answer to whatever that body held, a response for another client.
//!
//! Reused newest first, at most [`POOL_MAX_IDLE_PER_PORT`] per port and owner and
//! [`POOL_MAX_IDLE`] in all, closed after [`POOL_IDLE_TIMEOUT`] unused: a background task reaps
//! them (only while the pool holds any), so an idle dev server is not held open.

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
/// Idle connections kept per port and owner: enough for a browser's parallel requests and a
/// busy dev server, bounded so a burst does not leave hundreds of sockets open.
pub const POOL_MAX_IDLE_PER_PORT: usize = 64;
/// Idle connections kept in all.
pub const POOL_MAX_IDLE: usize = 1024;

/// Whose requests a pooled connection carried, and so whose it may carry again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A session, by the first 64 bits of its store key.
    Session(u64),
    /// A client connection, by its number (requests without a session: `--auth none`, waived
    /// preflights).
    Connection(u64),
}

impl Owner {
    /// The owner for a request from `session` (a store key, hex) on connection `conn`.
    pub fn of(session: Option<&str>, conn: u64) -> Owner {
        match session.and_then(|k| k.get(..16)).and_then(|h| u64::from_str_radix(h, 16).ok()) {
            Some(id) => Owner::Session(id),
            None => Owner::Connection(conn),
        }
    }
}

type Key = (u16, Owner);

#[derive(Default)]
pub struct IdlePool {
    ports: Mutex<Idles>,
    reaping: AtomicBool,
}

#[derive(Default)]
struct Idles {
    by_key: HashMap<Key, Vec<Idle>>,
    total: usize,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl IdlePool {
    /// An idle connection to `port` that `owner` used before and that still looks usable, if
    /// there is one.
    pub fn take(&self, port: u16, owner: Owner) -> Option<TcpStream> {
        let mut pooled = self.ports.lock().unwrap();
        let Idles { by_key, total } = &mut *pooled;
        let idle = by_key.get_mut(&(port, owner))?;
        while let Some(c) = idle.pop() {
            *total -= 1;
            if c.since.elapsed() < POOL_IDLE_TIMEOUT && quiet(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keeps a connection that has just finished an exchange for `owner` cleanly (nothing
    /// unread, both messages complete, the request body sent before the response began, no
    /// `close`); beyond the bounds it is closed instead.
    pub fn put(self: &Arc<Self>, port: u16, owner: Owner, stream: TcpStream) {
        {
            let mut pooled = self.ports.lock().unwrap();
            if pooled.total >= POOL_MAX_IDLE {
                return;
            }
            let idle = pooled.by_key.entry((port, owner)).or_default();
            if idle.len() >= POOL_MAX_IDLE_PER_PORT {
                return;
            }
            idle.push(Idle { stream, since: Instant::now() });
            pooled.total += 1;
        }
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let pooled = self.ports.lock().unwrap();
        assert_eq!(pooled.total, pooled.by_key.values().map(Vec::len).sum::<usize>());
        pooled.total
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
        let mut pooled = pool.ports.lock().unwrap();
        let Idles { by_key, total } = &mut *pooled;
        for idle in by_key.values_mut() {
            let before = idle.len();
            idle.retain(|c| c.since.elapsed() < POOL_IDLE_TIMEOUT);
            *total -= before - idle.len();
        }
        by_key.retain(|_, idle| !idle.is_empty());
        if by_key.is_empty() {
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

/// Whether the upstream has sent something (or closed) that nobody has read yet: while a
/// request body is still going out, that is an answer that came too early. Reads nothing.
pub fn readable(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut probe = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut probe);
    matches!(stream.poll_peek(&mut cx, &mut buf), Poll::Ready(_))
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
        let a = Owner::of(Some("00000000000000aa"), 1);
        let mut far_ends = Vec::new();
        for (ours, theirs) in sevens {
            pool.put(7, a, ours);
            far_ends.push(theirs);
        }
        assert_eq!(pool.len(), POOL_MAX_IDLE_PER_PORT, "bounded per port");
        assert!(pool.take(8, a).is_none(), "kept per port");
        assert!(pool.take(7, Owner::of(Some("00000000000000bb"), 1)).is_none(), "kept per owner");
        assert!(pool.take(7, Owner::Connection(1)).is_none(), "kept per owner");
        // One the upstream has closed is dropped, not handed out.
        pool.put(5, a, closed);
        assert!(pool.take(5, a).is_none());
        assert_eq!(pool.len(), POOL_MAX_IDLE_PER_PORT);

        let reused = pool.take(7, a).unwrap();
        pool.put(7, a, reused);
        tokio::time::sleep(POOL_IDLE_TIMEOUT / 2).await;
        pool.put(9, a, nine);
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
