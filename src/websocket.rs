//! WebSockets we forward (to a proxied app, to VS Code): the client's upgrade request is
//! forwarded like any request; when the far end answers 101 both connections switch protocols
//! and their bytes are copied both ways as they are. Frames, subprotocols and extensions are the
//! two ends' business, and an idle socket stays open for as long as both ends keep it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        match copy_both_ways(&mut client, &mut upstream).await {
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

/// Bytes read in one go. They live on the stack of the poll that reads them: an idle socket
/// holds no buffer at all, which is what lets one front hold tens of thousands of them (tokio's
/// `copy_bidirectional` keeps two 8 KiB buffers per socket for its whole life).
const CHUNK: usize = 16 * 1024;

/// One direction of a splice: what could not be written yet, and where it stands.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet taken by the writer, and how many of them were written. On the
    /// heap only while the writer is slower than the reader.
    pending: Option<(Box<[u8]>, usize)>,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader ended: shut the writer down, then this direction is done.
    eof: bool,
    done: bool,
    bytes: u64,
}

impl Direction {
    /// Moves what `from` has to `to` until `from` would block; `Ready` once `from` has ended and
    /// `to` is shut down (a half-close is passed on, the other direction goes on).
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, mut from: Pin<&mut R>, mut to: Pin<&mut W>) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if let Some((buf, written)) = &mut self.pending {
                while *written < buf.len() {
                    let n = ready!(to.as_mut().poll_write(cx, &buf[*written..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *written += n;
                    self.bytes += n as u64;
                }
                self.pending = None;
                self.unflushed = true;
            }
            if self.eof {
                ready!(to.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            match from.as_mut().poll_read(cx, &mut read) {
                Poll::Pending => {
                    // Nothing more for now: what was written must not wait in a TLS layer's buffer.
                    if self.unflushed {
                        ready!(to.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = read.filled();
            if filled.is_empty() {
                self.eof = true;
                continue;
            }
            let mut written = 0;
            while written < filled.len() {
                match to.as_mut().poll_write(cx, &filled[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        self.bytes += n as u64;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The writer will wake us: keep the rest until then.
                        self.pending = Some((filled[written..].into(), 0));
                        return Poll::Pending;
                    }
                }
            }
            self.unflushed = true;
        }
    }
}

/// Copies bytes both ways until both directions have ended, as `tokio::io::copy_bidirectional`
/// does (an end read on one side shuts the other side's writing down; an error ends both), but
/// holding a buffer only while a writer is behind. Returns the bytes copied a→b and b→a.
pub async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (Direction::default(), Direction::default());
    std::future::poll_fn(|cx| {
        if !a_to_b.done {
            let _ = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        }
        if !b_to_a.done {
            let _ = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        }
        if a_to_b.done && b_to_a.done { Poll::Ready(Ok((a_to_b.bytes, b_to_a.bytes))) } else { Poll::Pending }
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::copy_both_ways;

    /// Pipes far smaller than what crosses them, so writers fall behind and the remainder is kept.
    #[tokio::test]
    async fn everything_crosses_both_ways_through_slow_writers() {
        let (client, mut front_a) = duplex(100);
        let (mut front_b, upstream) = duplex(100);
        let splice = tokio::spawn(async move { copy_both_ways(&mut front_a, &mut front_b).await });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        // Each end sends everything, says it is done, and reads until the other end is done.
        async fn talk(end: tokio::io::DuplexStream, send: Vec<u8>) -> Vec<u8> {
            let (mut r, mut w) = tokio::io::split(end);
            let sending = async move {
                w.write_all(&send).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let (_, read) = tokio::join!(sending, r.read_to_end(&mut got));
            read.unwrap();
            got
        }
        let (got_down, got_up) = tokio::join!(talk(client, up.clone()), talk(upstream, down.clone()));
        assert_eq!(got_down, down);
        assert_eq!(got_up, up);
        assert_eq!(splice.await.unwrap().unwrap(), (up.len() as u64, down.len() as u64));
    }

    /// A half-close is passed on and the other direction keeps going: the client says it is
    /// done sending, and still gets the upstream's answer after that.
    #[tokio::test]
    async fn a_half_close_is_passed_on_and_the_other_way_goes_on() {
        let (mut client, mut front_a) = duplex(1024);
        let (mut front_b, mut upstream) = duplex(1024);
        let splice = tokio::spawn(async move { copy_both_ways(&mut front_a, &mut front_b).await });
        client.write_all(b"question").await.unwrap();
        client.shutdown().await.unwrap();
        let mut asked = Vec::new();
        upstream.read_to_end(&mut asked).await.unwrap();
        assert_eq!(asked, b"question");
        assert!(!splice.is_finished(), "the splice ended while the upstream could still answer");
        upstream.write_all(b"answer").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        assert_eq!(splice.await.unwrap().unwrap(), (8, 6));
    }

    /// A side that goes away ends the splice, with an error or with an end.
    #[tokio::test]
    async fn a_side_that_goes_away_ends_it() {
        let (client, mut front_a) = duplex(1024);
        let (mut front_b, upstream) = duplex(1024);
        let splice = tokio::spawn(async move { copy_both_ways(&mut front_a, &mut front_b).await });
        drop(client);
        drop(upstream);
        tokio::time::timeout(std::time::Duration::from_secs(10), splice).await.expect("the splice ended").unwrap().ok();
    }
}
