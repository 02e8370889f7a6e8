//! The system's names for I/O errors (`EADDRINUSE`, `EACCES`, ...), which code-server's
//! messages carry (Node prints them) and which a person searching for a message needs.

use std::io;

/// The errno name of `e`, or `"EIO"`-like text for errors without an OS code (`"ERROR"`).
pub fn name(e: &io::Error) -> &'static str {
    e.raw_os_error().and_then(name_of).unwrap_or_else(|| kind_name(e.kind()))
}

/// `"<message> (<NAME>)"`: Rust's text for the error followed by its system name, without the
/// ` (os error N)` suffix Rust adds.
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    format!("{text} ({})", name(e))
}

/// The error's text as Node words it: the system's message, first letter lower-case,
/// without Rust's ` (os error N)` suffix (`address already in use`).
pub fn message(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn name_of(code: i32) -> Option<&'static str> {
    Some(match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EDQUOT => "EDQUOT",
        _ => return None,
    })
}

fn kind_name(kind: io::ErrorKind) -> &'static str {
    use io::ErrorKind::*;
    match kind {
        NotFound => "ENOENT",
        PermissionDenied => "EACCES",
        AlreadyExists => "EEXIST",
        AddrInUse => "EADDRINUSE",
        AddrNotAvailable => "EADDRNOTAVAIL",
        ConnectionRefused => "ECONNREFUSED",
        ConnectionReset => "ECONNRESET",
        TimedOut => "ETIMEDOUT",
        InvalidInput => "EINVAL",
        IsADirectory => "EISDIR",
        NotADirectory => "ENOTDIR",
        BrokenPipe => "EPIPE",
        _ => "EIO",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_descriptions() {
        let e = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(name(&e), "EADDRINUSE");
        assert_eq!(describe(&e), "Address already in use (EADDRINUSE)");
        assert_eq!(name(&io::Error::from_raw_os_error(libc::EISDIR)), "EISDIR");
        assert_eq!(name(&io::Error::new(io::ErrorKind::PermissionDenied, "no")), "EACCES");
        assert_eq!(describe(&io::Error::new(io::ErrorKind::NotFound, "gone")), "gone (ENOENT)");
        assert_eq!(message(&e), "address already in use");
    }
}
