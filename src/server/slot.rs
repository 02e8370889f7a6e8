//! Keeping things alive for exactly as long as a connection's socket.
//!
//! Once hyper hands an upgraded connection (a WebSocket) to a handler, the server loses sight of
//! it: hyper's graceful shutdown no longer waits for it, and nothing knows when it ends. But the
//! socket itself is the same object before and after the upgrade: hyper moves it into the
//! `Upgraded` stream, and it is dropped when whoever serves the upgrade is done. So every
//! connection's socket is wrapped in [`SlotIo`], and each request carries the connection's
//! [`ConnectionSlot`] in its [`super::ConnInfo`] extension; whatever a middleware parks in the slot
//! lives until the socket is dropped. The heart's middleware parks a connection guard and a
//! lifecycle token on every `101 Switching Protocols`, so every WebSocket, ours, VS Code's or a
//! proxied one, keeps the server alive and is waited for at shutdown without its handler doing
//! anything.
//!
//! The cost is one `Arc` per connection and nothing per read or write.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Things to keep until the connection this request came on is closed (in the request's
/// [`super::ConnInfo`]).
#[derive(Clone, Default)]
pub struct ConnectionSlot(Arc<Mutex<Vec<Box<dyn Any + Send>>>>);

impl ConnectionSlot {
    /// Keeps `value` until the connection's socket is dropped.
    pub fn hold(&self, value: impl Any + Send) {
        self.0.lock().unwrap().push(Box::new(value));
    }

    /// How many things are held (tests).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn release(&self) {
        // Drop outside the lock: a guard's Drop may do real work.
        let held = std::mem::take(&mut *self.0.lock().unwrap());
        drop(held);
    }
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConnectionSlot").field(&self.len()).finish()
    }
}

/// A connection's socket that releases its [`ConnectionSlot`] when dropped.
pub struct SlotIo<S> {
    inner: S,
    slot: ConnectionSlot,
}

impl<S> SlotIo<S> {
    pub fn new(inner: S, slot: ConnectionSlot) -> SlotIo<S> {
        SlotIo { inner, slot }
    }
}

impl<S> Drop for SlotIo<S> {
    fn drop(&mut self) {
        self.slot.release();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SlotIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SlotIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn held_things_live_as_long_as_the_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let slot = ConnectionSlot::default();
        let mut io = SlotIo::new(a, slot.clone());
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        slot.hold(Flag(dropped.clone()));
        io.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(io);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(slot.is_empty());
    }
}
