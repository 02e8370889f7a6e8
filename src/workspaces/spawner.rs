//! Starting a VS Code server: behind [`Spawner`], so the supervisor does not care where the
//! server runs. Today that is [`LocalSpawner`], a child process of ours in its own process group;
//! a Kubernetes spawner (a pod per user, see docs/kubernetes.md) would sit behind the same trait.

// Unsafe code here only sets up the child between fork and exec; every block says why it is sound.
#![allow(unsafe_code)]

use std::path::Path;
use std::process::Stdio;

use super::supervisor::Launch;

/// Starts a VS Code server for `launch`, listening on `socket`. The child must be in a process
/// group of its own (the supervisor stops the whole group) and have its stdout and stderr piped
/// (the supervisor reads the readiness line from them).
pub trait Spawner: Send + Sync + 'static {
    fn spawn(&self, launch: &Launch, socket: &Path) -> std::io::Result<tokio::process::Child>;
}

/// Runs VS Code's server as our child, with the same uid, on this machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalSpawner;

/// Preloaded into VS Code's main process (`node --require`). Two jobs:
/// * our death must take VS Code's helpers (extension hosts, the pty host) with it. The kernel
///   tells the main process with SIGTERM (`PR_SET_PDEATHSIG`); the helpers would survive it, so
///   the main process passes it on to its whole process group, and SIGKILLs the group if it
///   has not gone two seconds later. A check of the parent pid catches the rare death that
///   arrives without the signal;
/// * private arguments (see [`Launch::private_args`]) arrive NUL-separated on fd 3 when
///   `CODE_SERVER_PRIVATE_ARGS_FD` says so, and are appended to `process.argv` before VS Code
///   parses it.
const PRELOAD: &str = r#"// Written by code-server: see src/vscode/supervisor.rs.
const fs = require("fs");
const group = -process.pid;
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  try { process.kill(group, "SIGTERM"); } catch {}
  setTimeout(() => { try { process.kill(group, "SIGKILL"); } catch {} }, 2000);
};
process.on("SIGTERM", stop);
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) stop(); }, 1000).unref();
if (process.env.CODE_SERVER_PRIVATE_ARGS_FD === "3") {
  delete process.env.CODE_SERVER_PRIVATE_ARGS_FD;
  let text = "";
  try { text = fs.readFileSync(3, "utf8"); fs.closeSync(3); } catch {}
  for (const arg of text.split("\0")) if (arg) process.argv.push(arg);
}
"#;

impl Spawner for LocalSpawner {
    fn spawn(&self, l: &Launch, socket: &Path) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&l.build.node);
        // Nothing secret is in it; another uid running it must be able to read it.
        let mode = if l.run_as.is_some() { 0o644 } else { 0o600 };
        crate::util::atomic_write(&l.preload, PRELOAD.as_bytes(), mode)?;
        cmd.arg("--require").arg(&l.preload);
        let private = PrivateArgs::new(&l.private_args)?;
        if private.is_some() {
            cmd.env("CODE_SERVER_PRIVATE_ARGS_FD", "3");
        }
        cmd.arg(l.build.root.join("out/server-main.js"))
            .arg("--socket-path")
            .arg(socket)
            .args(&l.args)
            .current_dir(&l.build.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        match &l.run_as {
            Some(_) => clear_env_for_account(&mut cmd),
            None => crate::vscode::scrub_env(&mut cmd),
        }
        for (k, v) in &l.env {
            cmd.env(k, v);
        }
        let parent = std::process::id() as libc::pid_t;
        let pipe = private.as_ref().map(|p| p.read_fd);
        let become_ = l.run_as.as_ref().map(|r| (r.uid, r.gid, r.groups.clone()));
        // SAFETY: only async-signal-safe calls between fork and exec (prctl, getppid, raise,
        // dup2, fcntl, set*id); the groups were allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some((uid, gid, groups)) = &become_ {
                    super::run_as::RunAs::become_in_child(*uid, *gid, groups)?;
                }
                // Die with us, even if we are SIGKILLed: the kernel sends SIGTERM, which lets
                // VS Code take its own children down.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // We may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGTERM);
                }
                if let Some(fd) = pipe {
                    if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0);
                    } else if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        drop(private);
        child
    }
}

/// Another account gets none of our environment (an operator's tokens, our configuration):
/// only what a session needs; the caller adds who they are (`HOME`, `USER`, `SHELL`...).
pub fn clear_env_for_account(cmd: &mut tokio::process::Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| PASSED_TO_ACCOUNTS.contains(&k) || k.starts_with("LC_")) {
            cmd.env(k, v);
        }
    }
}

/// Runs `cmd` as `r` (a user's account): their uid, gid and groups, their environment.
pub fn run_as_account(cmd: &mut tokio::process::Command, r: &super::run_as::RunAs) {
    clear_env_for_account(cmd);
    cmd.env("HOME", &r.home).env("USER", &r.name).env("LOGNAME", &r.name).env("SHELL", &r.shell);
    let (uid, gid, groups) = (r.uid, r.gid, r.groups.clone());
    // SAFETY: only set*id calls between fork and exec; the groups were allocated before.
    unsafe {
        cmd.pre_exec(move || super::run_as::RunAs::become_in_child(uid, gid, &groups));
    }
}

/// Of our environment, what a user's server gets (with `LC_*`), besides what the workspace
/// sets itself (`HOME`, `USER`, `SHELL`...).
const PASSED_TO_ACCOUNTS: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ", "TERM", "VSCODE_PROXY_URI"];

/// A pipe already holding the private arguments, which the child reads as fd 3.
struct PrivateArgs {
    read_fd: libc::c_int,
}

impl PrivateArgs {
    fn new(args: &[crate::secret::Secret]) -> std::io::Result<Option<PrivateArgs>> {
        if args.is_empty() {
            return Ok(None);
        }
        let mut data = Vec::new();
        for a in args {
            data.extend_from_slice(a.expose().as_bytes());
            data.push(0);
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: plain syscalls on descriptors we own; the payload is far below the pipe's
        // capacity, so the write cannot block.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fds[1], data.as_ptr().cast(), data.len());
            libc::close(fds[1]);
            if written != data.len() as isize {
                libc::close(fds[0]);
                return Err(std::io::Error::other("could not pass private arguments to VS Code"));
            }
        }
        Ok(Some(PrivateArgs { read_fd: fds[0] }))
    }
}

impl Drop for PrivateArgs {
    fn drop(&mut self) {
        // SAFETY: our own descriptor; the child has its copy.
        unsafe { libc::close(self.read_fd) };
    }
}
