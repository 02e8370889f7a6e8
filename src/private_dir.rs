//! Directories we keep code, sockets or secrets in (the runtime dir with VS Code's socket and the
//! preload script we make node `--require`, the user-data-dir with sessions, keys and the
//! session registry's socket, the config and data dirs) must be ours alone. Otherwise another
//! local user who creates the directory first, say `/tmp/<user>/code-server` in the
//! world-writable `/tmp`, swaps a file we later load and runs code as us.
//!
//! [`ensure`] creates a missing directory (and missing parents) with mode 0700 and then checks
//! what is there, whoever made it: a real directory (not a symlink), owned by our uid, with no
//! access for group or others; and every directory above it owned by us or root and not
//! writable by others unless sticky (as `/tmp` is), so nobody can rename it away and put their
//! own in its place. A directory of ours with a wider mode (made by code-server, or by hand) is
//! narrowed to 0700; anything else is refused with an error that names the path and the reason.

// Unsafe code here only reads our uid; every block says why it is sound.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error("cannot create {}: {}", path.display(), crate::errno::describe(source))]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot use {}: {}", path.display(), crate::errno::describe(source))]
    Inspect { path: PathBuf, source: io::Error },
    #[error(
        "refusing to use {}: {why}. Another user could replace what we keep there; remove it or choose another location",
        path.display()
    )]
    Unsafe { path: PathBuf, why: Why },
}

/// What makes a directory unsafe to keep our things in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    #[error("it is a symbolic link")]
    Symlink,
    #[error("it is not a directory")]
    NotADirectory,
    #[error("it is owned by uid {owner}, not by us (uid {us})")]
    NotOurs { owner: u32, us: u32 },
    #[error("it is owned by uid {0}, who could replace what is inside")]
    AncestorNotOurs(u32),
    #[error("others may write in it (mode {0:o}) and it is not sticky")]
    OthersMayWrite(u32),
    #[error("{0}")]
    Unreadable(String),
    #[error("it changed while being checked")]
    Changed,
}

/// Creates `dir` if missing and makes sure it is ours alone (see the module docs). Returns
/// whether its mode had to be narrowed.
pub fn ensure(dir: &Path) -> Result<bool, PrivateDirError> {
    ensure_for(dir, None)
}

/// [`ensure`] for a directory that belongs to another account, `(uid, gid)` (a user's VS Code
/// runs as it): made by us and handed over, it must be that uid's alone, and everything above
/// it ours or root's. Only the server running as root can hand directories over.
pub fn ensure_owned_by(dir: &Path, uid: u32, gid: u32) -> Result<bool, PrivateDirError> {
    ensure_for(dir, Some((uid, gid)))
}

fn ensure_for(dir: &Path, owner: Option<(u32, u32)>) -> Result<bool, PrivateDirError> {
    let us = current_uid();
    let uid = owner.map_or(us, |(uid, _)| uid);
    if let Err(source) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        return Err(PrivateDirError::Create { path: dir.to_path_buf(), source });
    }
    let unsafe_because = |why: Why| PrivateDirError::Unsafe { path: dir.to_path_buf(), why };
    let mut meta = lstat(dir)?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_because(Why::Symlink));
    }
    if !meta.is_dir() {
        return Err(unsafe_because(Why::NotADirectory));
    }
    // Everything above it, as written and as resolved: ours or root's, so nobody else can
    // swap the directory between the check and the hand-over.
    let canonical =
        fs::canonicalize(dir).map_err(|source| PrivateDirError::Inspect { path: dir.to_path_buf(), source })?;
    for path in [absolute(dir), canonical] {
        for ancestor in path.ancestors().skip(1) {
            check_ancestor(ancestor, us)
                .map_err(|why| PrivateDirError::Unsafe { path: ancestor.to_path_buf(), why })?;
        }
    }
    if let Some((uid, gid)) = owner
        && meta.uid() == us
        && us != uid
    {
        // Ours (just made, or made before the user had a uid): theirs from now on.
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
            .map_err(|source| PrivateDirError::Inspect { path: dir.to_path_buf(), source })?;
        meta = lstat(dir)?;
    }
    if meta.uid() != uid {
        return Err(unsafe_because(Why::NotOurs { owner: meta.uid(), us: uid }));
    }
    let narrowed = meta.mode() & 0o077 != 0;
    if narrowed {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| PrivateDirError::Inspect { path: dir.to_path_buf(), source })?;
    }
    // Checked after the change too: nothing may have come between.
    let after = lstat(dir)?;
    if after.ino() != meta.ino() || after.dev() != meta.dev() || after.mode() & 0o077 != 0 {
        return Err(unsafe_because(Why::Changed));
    }
    Ok(narrowed)
}

/// [`ensure`], logging when a directory's mode was narrowed. `what` says what it holds.
pub fn ensure_logged(dir: &Path, what: &str) -> Result<(), PrivateDirError> {
    if ensure(dir)? {
        tracing::info!("Restricted {} to its owner (mode 0700): it holds {what}", dir.display());
    }
    Ok(())
}

fn lstat(path: &Path) -> Result<fs::Metadata, PrivateDirError> {
    fs::symlink_metadata(path).map_err(|source| PrivateDirError::Inspect { path: path.to_path_buf(), source })
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// A directory above ours: owned by us or root, and if others may write in it, sticky (so they
/// cannot rename or delete our entries). A symlink on the way is judged by its own owner; its
/// target is checked through the resolved path.
fn check_ancestor(path: &Path, uid: u32) -> Result<(), Why> {
    let meta = fs::symlink_metadata(path).map_err(|e| Why::Unreadable(crate::errno::describe(&e)))?;
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(Why::AncestorNotOurs(meta.uid()));
    }
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let others_write = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if others_write && !sticky {
        return Err(Why::OthersMayWrite(meta.mode() & 0o7777));
    }
    Ok(())
}

/// Our effective uid.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_narrows_and_refuses() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/code-server");
        assert!(!ensure(&dir).unwrap(), "made 0700, nothing to narrow");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);

        let loose = root.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure(&loose).unwrap(), "narrowed");
        assert_eq!(fs::metadata(&loose).unwrap().mode() & 0o777, 0o700);

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&loose, &link).unwrap();
        assert!(matches!(ensure(&link), Err(PrivateDirError::Unsafe { .. })));

        // Under a directory anyone may write in, without the sticky bit: refused.
        let open = root.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure(&open.join("code-server")).unwrap_err().to_string();
        assert!(err.contains("not sticky"), "{err}");
        // With the sticky bit, as /tmp: fine.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure(&open.join("code-server")).unwrap();
    }
}
