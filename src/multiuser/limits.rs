//! Multi-user mode's limits on each workspace, enforced off the request path by one task:
//!
//! * **memory**: every [`SAMPLE_EVERY`] the resident memory of each running workspace's
//!   processes is summed (under os-user isolation every process of the user's uid, detached
//!   ones too; otherwise the server and its descendants). At 85 % of the limit a warning; above
//!   it the largest process other than the server itself (an extension host, a language
//!   server, a runaway build) is killed, logged with its command line and audited, and the
//!   workspace keeps serving;
//! * **storage**: the workspace's directory is walked every [`MEASURE_EVERY`] and when it
//!   stops. At 90 % of the quota a warning; above it an audit event, and its next start is
//!   refused with a page that says why ([`crate::workspaces::Workspace::start_refused`]) until
//!   an admin raises the quota (configuration) or starts it anyway (API, admin page).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::multiuser::audit::{Audit, Event, kind};
use crate::workspaces::{Workspace, Workspaces};

pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
pub const MEASURE_EVERY: Duration = Duration::from_secs(300);

pub struct Limits {
    pub memory_bytes: u64,
    pub storage_bytes: u64,
}

/// One process, as sampled.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    rss: u64,
}

/// Watches every workspace until `stop`.
pub async fn enforce(workspaces: Arc<Workspaces>, limits: Limits, audit: Audit, stop: CancellationToken) {
    let limits = Arc::new(limits);
    let mut measured: HashMap<String, Instant> = HashMap::new();
    let mut was_running: HashMap<String, bool> = HashMap::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        for w in workspaces.all() {
            let id = w.user.to_string();
            let running = w.is_running();
            // Measured when due, and once more when it has just stopped.
            let stopped_now = was_running.insert(id.clone(), running) == Some(true) && !running;
            let due = measured.get(&id).is_none_or(|at| at.elapsed() >= MEASURE_EVERY);
            if due || stopped_now {
                measured.insert(id, Instant::now());
                measure_storage(&w, &limits, &audit).await;
            }
            if running {
                sample_memory(&w, &limits, &audit).await;
            } else {
                w.usage.lock().unwrap().memory = None;
            }
        }
        publish(&workspaces);
    }
}

/// The totals for `/metrics`.
fn publish(workspaces: &Workspaces) {
    let (mut running, mut over, mut memory, mut max, mut storage) = (0, 0, 0, 0, 0);
    for w in workspaces.all() {
        let usage = w.usage.lock().unwrap().clone();
        if w.is_running() {
            running += 1;
            let m = usage.memory.unwrap_or(0);
            memory += m;
            max = max.max(m);
        }
        over += u64::from(usage.over_quota);
        storage += usage.storage.map_or(0, |(b, _)| b);
    }
    crate::metrics::workspaces(running, over, memory, max, storage);
}

/// Walks the workspace's directory (on the blocking pool) and records what it found.
pub async fn measure_storage(w: &Workspace, limits: &Limits, audit: &Audit) {
    let root = w.layout.front_dir.clone();
    let Ok(bytes) = tokio::task::spawn_blocking(move || disk_use(&root)).await else { return };
    let over = bytes > limits.storage_bytes;
    let was_over = {
        let mut usage = w.usage.lock().unwrap();
        let was = usage.over_quota;
        usage.storage = Some((bytes, crate::util::now_ms() as i64));
        usage.over_quota = over;
        was
    };
    let (mb, quota_mb) = (bytes / 1_000_000, limits.storage_bytes / 1_000_000);
    if over && !was_over {
        tracing::warn!("{}'s workspace uses {mb} MB, over its {quota_mb} MB quota: its next start is refused", w.name);
        audit.record(
            Event::new(kind::QUOTA, false)
                .user(w.user.as_str(), &w.name)
                .detail("used_bytes", bytes)
                .detail("quota_bytes", limits.storage_bytes),
        );
    } else if !over && bytes * 10 >= limits.storage_bytes * 9 {
        tracing::warn!("{}'s workspace uses {mb} MB of its {quota_mb} MB quota", w.name);
    }
}

/// Sums the workspace's resident memory; over the limit, kills its largest process.
async fn sample_memory(w: &Arc<Workspace>, limits: &Limits, audit: &Audit) {
    let (uid, main) = (w.layout.run_as.as_ref().map(|r| r.uid), w.supervisor().pid());
    let Ok(procs) = tokio::task::spawn_blocking(move || processes(uid, main)).await else { return };
    let total: u64 = procs.iter().map(|p| p.rss).sum();
    w.usage.lock().unwrap().memory = Some(total);
    let (mb, limit_mb) = (total / 1_000_000, limits.memory_bytes / 1_000_000);
    if total <= limits.memory_bytes {
        if total * 100 >= limits.memory_bytes * 85 {
            tracing::warn!("{}'s workspace uses {mb} MB of its {limit_mb} MB memory limit", w.name);
        }
        return;
    }
    // The largest process, the server itself only when nothing else is left.
    let victim = procs.iter().filter(|p| Some(p.pid) != main).max_by_key(|p| p.rss).or_else(|| procs.first()).cloned();
    let Some(victim) = victim else { return };
    let command = command_line(victim.pid);
    // SAFETY: a signal to a pid we just read; at worst it has exited (ESRCH).
    #[allow(unsafe_code)]
    let killed = unsafe { libc::kill(victim.pid, libc::SIGKILL) } == 0;
    tracing::warn!(
        "{}'s workspace uses {mb} MB, over its {limit_mb} MB memory limit: {} process {} ({} MB): {command}",
        w.name,
        if killed { "killed" } else { "could not kill" },
        victim.pid,
        victim.rss / 1_000_000
    );
    audit.record(
        Event::new(kind::MEMORY, killed)
            .user(w.user.as_str(), &w.name)
            .detail("used_bytes", total)
            .detail("limit_bytes", limits.memory_bytes)
            .detail("pid", victim.pid)
            .detail("process_bytes", victim.rss)
            .detail("command", command),
    );
}

/// The workspace's processes: every process of `uid`, or else `main` and its descendants.
fn processes(uid: Option<u32>, main: Option<i32>) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    let mut all = vec![];
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        let real_uid = field("Uid:").split_whitespace().next().and_then(|u| u.parse::<u32>().ok());
        let ppid = field("PPid:").parse::<i32>().unwrap_or(0);
        let rss_kb = field("VmRSS:").split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        all.push((pid, ppid, real_uid, rss_kb * 1024));
    }
    match (uid, main) {
        (Some(uid), _) => {
            all.into_iter().filter(|(_, _, u, _)| *u == Some(uid)).map(|(pid, _, _, rss)| Proc { pid, rss }).collect()
        }
        (None, Some(main)) => {
            let mut tree = vec![main];
            let mut grew = true;
            while grew {
                grew = false;
                for (pid, ppid, _, _) in &all {
                    if tree.contains(ppid) && !tree.contains(pid) {
                        tree.push(*pid);
                        grew = true;
                    }
                }
            }
            all.into_iter().filter(|(pid, ..)| tree.contains(pid)).map(|(pid, _, _, rss)| Proc { pid, rss }).collect()
        }
        (None, None) => vec![],
    }
}

fn command_line(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: Vec<String> =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let mut line = text.join(" ");
    line.truncate(line.floor_char_boundary(500));
    line
}

/// Bytes in files under `root` (allocated blocks, as `du` counts), symlinks not followed.
fn disk_use(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_use_counts_files_below_and_not_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("a/usr")).unwrap();
        let used = disk_use(dir.path());
        assert!((300_000..400_000).contains(&used), "{used}");
    }

    #[test]
    fn a_process_tree_is_found_from_its_root() {
        let me = std::process::id() as i32;
        let tree = processes(None, Some(me));
        assert!(tree.iter().any(|p| p.pid == me && p.rss > 0), "{tree:?}");
    }
}
