//! A WebSocket client written out by hand over a plain `TcpStream`: the opening handshake, and
//! masked frames out, frames in. It holds nothing but the socket, so a benchmark can keep ten
//! thousand open without its own memory getting in the way, and it also talks to the stand-in
//! VS Code, which echoes the upgraded bytes as they are (frames included, masks and all).

use std::io::{Error, ErrorKind, Result};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;

/// Opens a WebSocket at `ws://<addr><path>` with `headers` (a cookie, an Origin); fails unless
/// the answer is `101`.
pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    // The far end sends nothing after its answer's head until spoken to.
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "closed during the handshake"));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > 16 * 1024 {
            return Err(Error::other("a handshake answer over 16 KiB"));
        }
    }
    let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 101") {
        return Err(Error::other(format!("handshake answered {:?}", String::from_utf8_lossy(status))));
    }
    Ok(stream)
}

/// Sends one final, masked frame (as a client must).
pub async fn send(stream: &mut TcpStream, opcode: u8, payload: &[u8]) -> Result<()> {
    const MASK: [u8; 4] = [0x5b, 0x1e, 0xc3, 0x07];
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    stream.write_all(&frame).await
}

/// Reads one frame: its opcode and (unmasked) payload.
pub async fn recv(stream: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => stream.read_u16().await? as u64,
        127 => stream.read_u64().await?,
        n => n as u64,
    };
    if len > 64 * 1024 * 1024 {
        return Err(Error::other("a frame over 64 MiB"));
    }
    let mask = if head[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        stream.read_exact(&mut m).await?;
        Some(m)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await?;
    if let Some(m) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
    }
    Ok((head[0] & 0x0f, payload))
}

/// Sends `payload` as a binary message and checks that the same comes back.
pub async fn echo(stream: &mut TcpStream, payload: &[u8]) -> Result<()> {
    send(stream, BINARY, payload).await?;
    let (opcode, back) = recv(stream).await?;
    if opcode != BINARY || back != payload {
        return Err(Error::other(format!("echo: opcode {opcode}, {} bytes back of {}", back.len(), payload.len())));
    }
    Ok(())
}

/// The closing handshake: a close frame (1000, normal) and the end of our half of the stream,
/// then whatever comes back until the far end closes (its close frame, or the end of the
/// stream; the stand-in VS Code, which only echoes, ends when we do).
pub async fn close(mut stream: TcpStream) -> Result<()> {
    send(&mut stream, CLOSE, &1000u16.to_be_bytes()).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 256];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
