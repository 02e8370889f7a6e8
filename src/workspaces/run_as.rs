//! As whom a workspace's VS Code server runs (os-user isolation): a uid and gid that are not
//! root, the account's supplementary groups, its home, and a shell. The uid is a system
//! account's where one of the user's name exists and the configuration allows it, else one
//! allocated from the configured range (see the user store) with no account behind it.
//!
//! The switch itself happens in the child between fork and exec ([`RunAs::become_in_child`]);
//! everything it needs is prepared here, before the fork.

// Unsafe code here only calls libc's account lookups and, in the child, set*id; every block
// says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A uid and gid to run as, never 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (a system account's; none for an allocated uid).
    pub groups: Vec<u32>,
    /// `$USER` and `$LOGNAME`.
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// A system account, from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl RunAs {
    /// Runs as the system account `account`, with its groups and home.
    pub fn account(account: &Account) -> RunAs {
        RunAs {
            uid: account.uid,
            gid: account.gid,
            groups: groups_of(&account.name, account.gid),
            name: account.name.clone(),
            home: account.home.clone(),
            shell: if account.shell.as_os_str().is_empty() { default_shell() } else { account.shell.clone() },
        }
    }

    /// Runs as an allocated uid (its own gid, no other groups) whose home is `home`.
    pub fn allocated(uid: u32, name: &str, home: PathBuf) -> RunAs {
        RunAs { uid, gid: uid, groups: vec![], name: name.to_string(), home, shell: default_shell() }
    }

    /// In the child, between fork and exec: drops to the uid and gid, with only the account's
    /// supplementary groups. Leaving uid 0 for good clears every capability (no
    /// `SECBIT_KEEP_CAPS` is set), and the check afterwards makes sure root cannot be had back.
    ///
    /// # Safety
    /// Only async-signal-safe calls; `groups` was allocated before the fork.
    pub unsafe fn become_in_child(uid: u32, gid: u32, groups: &[libc::gid_t]) -> std::io::Result<()> {
        let fail = || Err(std::io::Error::last_os_error());
        // SAFETY: plain syscalls on values prepared before the fork.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return fail();
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return fail();
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return fail();
            }
            if libc::setuid(0) == 0 || libc::getuid() != uid || libc::geteuid() != uid {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        Ok(())
    }
}

/// Ends every process of `uid` (a user's whole session, whatever it detached): a helper run
/// as that uid sends SIGKILL to all it may signal, which is exactly the uid's processes (the
/// kernel spares the sender). Only for uids that are a workspace's alone.
pub fn kill_all_of(uid: u32) -> std::io::Result<()> {
    if uid == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
    }
    // The shell's own `kill` (every /bin/sh has one), so no procps is needed.
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "kill -9 -1"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only set*id calls between fork and exec (see `become_in_child`).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || RunAs::become_in_child(uid, uid, &[]));
    }
    // `kill -1` reports failure when there was nothing left to signal: that is success here.
    cmd.status().map(drop)
}

fn default_shell() -> PathBuf {
    ["/bin/bash", "/bin/sh"].iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| "/bin/sh".into())
}

/// The system account named `name`, if there is one.
pub fn system_account(name: &str) -> Option<Account> {
    let name = CString::new(name).ok()?;
    lookup(|pwd, buf, len, result| {
        // SAFETY: every pointer is to our own, live storage of the given size.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result) }
    })
}

/// Whether a system account has `uid` (an allocated uid must never be one).
pub fn uid_has_account(uid: u32) -> bool {
    lookup(|pwd, buf, len, result| {
        // SAFETY: every pointer is to our own, live storage of the given size.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })
    .is_some()
}

fn lookup(
    get: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
) -> Option<Account> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed passwd is a valid value for getpw*_r to fill in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = get(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: getpw*_r points these into `buf`, NUL-terminated.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        return Some(Account {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(text(pwd.pw_dir)),
            shell: PathBuf::from(text(pwd.pw_shell)),
        });
    }
}

/// The groups `name` belongs to (its primary group `gid` included).
fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(name) else { return vec![gid] };
    let mut n: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` holds `count` entries; getgrouplist writes at most that many.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count <= n || n > 65_536 {
            return vec![gid];
        }
        n = count;
    }
}

/// Why another uid could not use a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is mode {mode:04o}, owned by uid {owner}: other accounts cannot {need} it", path.display())]
pub struct NotReachable {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: u32,
    pub need: &'static str,
}

/// Whether accounts other than ours can reach `path` (every directory on the way enterable by
/// others) and, for a file, read and (`exec`) run it. Used for the VS Code build and the
/// base path before any user's server starts as another uid.
pub fn reachable_by_others(path: &Path, exec: bool) -> Result<(), NotReachable> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let refuse = |p: &Path, meta: &std::fs::Metadata, need| NotReachable {
        path: p.to_path_buf(),
        mode: meta.mode() & 0o7777,
        owner: meta.uid(),
        need,
    };
    for dir in path.ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.mode() & 0o001 == 0
        {
            return Err(refuse(dir, &meta, "enter"));
        }
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        let need = if meta.is_dir() {
            0o001
        } else if exec {
            0o005
        } else {
            0o004
        };
        if meta.mode() & need != need {
            return Err(refuse(
                &path,
                &meta,
                if meta.is_dir() {
                    "enter"
                } else if exec {
                    "run"
                } else {
                    "read"
                },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_looked_up_by_name_and_uid() {
        let root = system_account("root").expect("root is in the password database");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(uid_has_account(0));
        assert_eq!(system_account("no-such-user-here-at-all"), None);
        assert!(!uid_has_account(4_000_000_000));
        let me = RunAs::account(&root);
        assert!(me.groups.contains(&0), "the primary group is among the groups: {:?}", me.groups);
    }

    #[test]
    fn reachability_names_the_directory_in_the_way() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let file = inner.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(reachable_by_others(&file, false), Ok(()));
        let err = reachable_by_others(&file, true).unwrap_err();
        assert_eq!((err.path.clone(), err.need), (std::fs::canonicalize(&file).unwrap(), "run"));
        std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = reachable_by_others(&file, false).unwrap_err();
        assert_eq!(err.path, std::fs::canonicalize(dir.path().join("a")).unwrap());
        assert!(err.to_string().contains("mode 0700") && err.to_string().contains("cannot enter"), "{err}");
    }
}
