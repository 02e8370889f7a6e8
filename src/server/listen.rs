//! Listening sockets: TCP from `--bind-addr`, a Unix socket from `--socket`, or an inherited
//! descriptor from `--socket-fd` (systemd socket activation).

// Unsafe code here only adopts an inherited socket descriptor; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Where to listen: `--bind-addr`, `--socket` (with `--socket-mode`), or `--socket-fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp { host: String, port: u16 },
    Socket { path: PathBuf, mode: Option<u32> },
    Fd(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Node's shape, which code-server prints: `listen EADDRINUSE: address already in use 127.0.0.1:8080`.
    #[error("listen {}: {} {addr}", crate::errno::name(source), crate::errno::message(source))]
    Tcp { addr: String, source: io::Error },
    #[error("could not resolve {host}: {}", crate::errno::describe(source))]
    Resolve { host: String, source: io::Error },
    #[error("--socket {}: {why}", path.display())]
    Socket { path: PathBuf, why: String },
    #[error("--socket-fd {fd}: {why}")]
    Fd { fd: RawFd, why: String },
}

pub enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        /// The socket file to remove at shutdown; `None` for an inherited socket, whose file
        /// belongs to whoever made it.
        owned_path: Option<PathBuf>,
    },
}

/// An accepted connection.
pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    pub async fn bind(listen: &Listen) -> Result<Listener, BindError> {
        Listener::bind_shared(listen, false).await
    }

    /// [`Listener::bind`]; with `reuse_port`, a TCP address is bound with SO_REUSEPORT, so that
    /// other processes doing the same share it (the kernel spreads new connections across them).
    pub async fn bind_shared(listen: &Listen, reuse_port: bool) -> Result<Listener, BindError> {
        match listen {
            Listen::Tcp { host, port } => bind_tcp(host, *port, reuse_port).await,
            Listen::Socket { path, mode } => bind_unix(path, *mode),
            Listen::Fd(fd) => adopt_fd(*fd),
        }
    }

    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tcp(s, addr))
            }
            Listener::Unix { listener, .. } => Ok(Accepted::Unix(listener.accept().await?.0)),
        }
    }

    /// What the start-up line prints: `http://127.0.0.1:8080/`, `https://[::1]:8443/`, or the
    /// socket path.
    pub fn describe(&self, tls: bool) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("{}://{addr}/", if tls { "https" } else { "http" }),
                Err(_) => "an unknown address".into(),
            },
            Listener::Unix { owned_path: Some(path), .. } => path.display().to_string(),
            Listener::Unix { listener, .. } => {
                match listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)) {
                    Some(p) => p.display().to_string(),
                    None => "an unnamed socket".into(),
                }
            }
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    /// Removes our socket file (at shutdown).
    pub fn remove_socket_file(&self) {
        if let Listener::Unix { owned_path: Some(p), .. } = self {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Closes the listener (removing our socket file first, so nothing new can find it) and
    /// returns the connections still queued in it. The kernel completed their handshakes on our
    /// behalf; closing the socket with them queued would reset them, and under SO_REUSEPORT no
    /// other front can take them over. Asked of the socket itself, not of tokio's readiness,
    /// which may not have seen the last arrivals yet.
    pub fn close_taking_queued(self) -> Vec<Accepted> {
        self.remove_socket_file();
        let mut queued = Vec::new();
        match self {
            Listener::Tcp(l) => {
                let Ok(l) = l.into_std() else { return queued };
                while let Ok((s, peer)) = l.accept() {
                    let _ = s.set_nodelay(true);
                    if s.set_nonblocking(true).is_ok()
                        && let Ok(s) = TcpStream::from_std(s)
                    {
                        queued.push(Accepted::Tcp(s, peer));
                    }
                }
            }
            Listener::Unix { listener, .. } => {
                let Ok(l) = listener.into_std() else { return queued };
                while let Ok((s, _)) = l.accept() {
                    if s.set_nonblocking(true).is_ok()
                        && let Ok(s) = UnixStream::from_std(s)
                    {
                        queued.push(Accepted::Unix(s));
                    }
                }
            }
        }
        queued
    }
}

async fn bind_tcp(host: &str, port: u16, reuse_port: bool) -> Result<Listener, BindError> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| BindError::Resolve { host: host.to_string(), source })?
        .collect();
    // `localhost` resolves to both families; prefer IPv4 so the printed URL is predictable.
    addrs.sort_by_key(|a| !a.is_ipv4());
    let mut last_err = None;
    for addr in addrs {
        let bound = if reuse_port { bind_reusing_port(addr) } else { TcpListener::bind(addr).await };
        match bound {
            Ok(l) => return Ok(Listener::Tcp(l)),
            Err(e) => last_err = Some((addr, e)),
        }
    }
    let (addr, source) = last_err
        .map(|(a, e)| (a.to_string(), e))
        .unwrap_or_else(|| (format!("{host}:{port}"), io::Error::new(io::ErrorKind::NotFound, "no address found")));
    Err(BindError::Tcp { addr, source })
}

/// A TCP listener with SO_REUSEPORT (and SO_REUSEADDR, as tokio's own bind sets), with
/// tokio's backlog.
fn bind_reusing_port(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn bind_unix(path: &Path, mode: Option<u32>) -> Result<Listener, BindError> {
    let fail = |why: String| BindError::Socket { path: path.to_path_buf(), why };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A stale socket from a previous run is replaced; a live one is someone else's.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail("another server is already listening on this socket".into()));
            }
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("could not remove the stale socket: {}", crate::errno::describe(&e))))?;
        }
        Ok(meta) if meta.is_dir() => return Err(fail("is a directory".into())),
        Ok(_) => return Err(fail("exists and is not a socket; refusing to replace it".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = match mode {
        Some(mode) => bind_unix_with_mode(path, mode).map_err(|e| fail(crate::errno::describe(&e)))?,
        None => UnixListener::bind(path).map_err(|e| fail(crate::errno::describe(&e)))?,
    };
    Ok(Listener::Unix { listener, owned_path: Some(path.to_path_buf()) })
}

/// A Unix socket at `path` that nobody can connect to before it has `mode`: bound under a
/// random name in the same directory, given its mode, then renamed into place. (Bound in place,
/// it would have whatever the umask gives until the `chmod`.) Replaces a socket at `path`.
pub fn bind_unix_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("socket");
    let tmp = dir.join(format!(".{name}.{}", crate::util::random_hex(6)));
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

fn adopt_fd(fd: RawFd) -> Result<Listener, BindError> {
    let fail = |why: String| BindError::Fd { fd, why };
    if fd < 0 {
        return Err(fail("not a file descriptor".into()));
    }
    // SAFETY: the descriptor was handed to us by our parent (systemd or a test) for this
    // purpose. Ownership passes to the socket; on the error paths below we give it back with
    // `into_raw_fd` so we never close a descriptor that turns out not to be our socket.
    let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
    let check = || -> io::Result<(bool, bool)> {
        let local = socket.local_addr()?;
        Ok((socket.is_listener()?, local.is_unix()))
    };
    match check() {
        Ok((true, is_unix)) => {
            let _ = socket.set_cloexec(true);
            socket.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;
            if is_unix {
                let std_listener: std::os::unix::net::UnixListener = socket.into();
                let listener = UnixListener::from_std(std_listener).map_err(|e| fail(e.to_string()))?;
                Ok(Listener::Unix { listener, owned_path: None })
            } else {
                let std_listener: std::net::TcpListener = socket.into();
                Ok(Listener::Tcp(TcpListener::from_std(std_listener).map_err(|e| fail(e.to_string()))?))
            }
        }
        Ok((false, _)) => {
            let _ = std::os::fd::IntoRawFd::into_raw_fd(socket);
            Err(fail("the socket is not listening".into()))
        }
        Err(e) => {
            let _ = std::os::fd::IntoRawFd::into_raw_fd(socket);
            Err(fail(format!("not an open socket ({})", crate::errno::describe(&e))))
        }
    }
}
