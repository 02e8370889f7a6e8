//! The express lane's body relay: a response body from the upstream to the client as it
//! arrives, in reads that grow while they come back full; a chunked body byte for byte, its end
//! found by [`chunked::Scanner`].

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::head::Framing;
use super::{Conn, MAX_RELAY_CHUNK, RELAY_CHUNK};
use crate::proxy::chunked;

pub(super) enum Relayed {
    /// The whole body went through; `upstream_clean`: nothing else came with it.
    Done { upstream_clean: bool },
    /// Either side failed mid-body: both connections are dropped.
    Broken,
}

/// Sends the head in `conn.out` and the body (starting at `ubuf[start..]`, then read from the
/// upstream) to the client.
pub(super) async fn relay_body<S>(
    client: &mut S,
    upstream: &mut TcpStream,
    conn: &mut Conn,
    mut ubuf: Vec<u8>,
    start: usize,
    framing: Framing,
) -> Relayed
where
    S: AsyncWrite + Unpin,
{
    let mut scanner = chunked::Scanner::default();
    // How many of the bytes after the head belong to the body, and whether it is complete.
    let take = |bytes: &[u8], remaining: &mut u64, scanner: &mut chunked::Scanner| -> Result<(usize, bool), ()> {
        match framing {
            Framing::None => Ok((0, true)),
            Framing::Length(_) => {
                let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(bytes.len());
                *remaining -= n as u64;
                Ok((n, *remaining == 0))
            }
            Framing::Chunked => {
                let n = scanner.scan(bytes).map_err(|_| ())?;
                Ok((n, scanner.done()))
            }
            Framing::UntilClose => Ok((bytes.len(), false)),
        }
    };
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let Ok((n, mut complete)) = take(&ubuf[start..], &mut remaining, &mut scanner) else {
        return Relayed::Broken;
    };
    let mut clean = start + n == ubuf.len();
    let mut relayed = Counted(n as u64);
    conn.out.extend_from_slice(&ubuf[start..start + n]);
    if client.write_all(&conn.out).await.is_err() || client.flush().await.is_err() {
        return Relayed::Broken;
    }
    let mut chunk = RELAY_CHUNK;
    while !complete {
        ubuf.clear();
        let want = match framing {
            Framing::Length(_) => usize::try_from(remaining).unwrap_or(usize::MAX).min(chunk),
            _ => chunk,
        };
        ubuf.reserve(want);
        match (&mut *upstream).take(want as u64).read_buf(&mut ubuf).await {
            Ok(0) if framing == Framing::UntilClose => return Relayed::Done { upstream_clean: false },
            Ok(0) | Err(_) => return Relayed::Broken,
            Ok(n) if n == chunk => chunk = (chunk * 2).min(MAX_RELAY_CHUNK),
            Ok(_) => {}
        }
        let Ok((n, done)) = take(&ubuf, &mut remaining, &mut scanner) else {
            return Relayed::Broken;
        };
        complete = done;
        clean = n == ubuf.len();
        relayed.0 += n as u64;
        if client.write_all(&ubuf[..n]).await.is_err() || client.flush().await.is_err() {
            return Relayed::Broken;
        }
    }
    Relayed::Done { upstream_clean: clean }
}

/// Body bytes relayed, added to the metrics once, when the relay ends (however it ends).
struct Counted(u64);

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::proxied_bytes(0, self.0);
    }
}
