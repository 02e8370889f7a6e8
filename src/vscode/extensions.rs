//! `--install-extension`, `--uninstall-extension`, `--list-extensions`, `--locate-extension`:
//! run VS Code's own CLI against the same user-data and extensions directories the server uses,
//! with its output and exit status passed through (spec §4.5, vscode-server.md §6.9).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::build::Build;
use super::signing::store::TrustStore;
use super::signing::{self, Refusal, Verified};
use super::{Dirs, Options};

/// The extension commands of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    pub list: bool,
    pub install: Vec<String>,
    pub uninstall: Vec<String>,
    pub locate: Vec<String>,
    pub force: bool,
    pub show_versions: bool,
    pub category: Option<String>,
    /// `--verify-extensions`: every install must be a signed, trusted `.vsix` ([`super::signing`]).
    pub verify: bool,
}

impl Commands {
    pub fn any(&self) -> bool {
        self.list || !self.install.is_empty() || !self.uninstall.is_empty() || !self.locate.is_empty()
    }
}

/// VS Code's CLI could not be run.
#[derive(Debug, thiserror::Error)]
#[error("cannot run VS Code's CLI ({}): {}", node.display(), crate::errno::describe(source))]
pub struct CliRunError {
    node: std::path::PathBuf,
    source: std::io::Error,
}

/// Runs the extension commands on `dirs` and returns VS Code's exit status. `as_account` (a
/// user's workspace under os-user isolation) sets the command up to run as that account, with
/// its own environment, so what it installs is theirs; without it, our scrubbed environment.
pub async fn run(
    e: &Commands,
    dirs: &Dirs,
    options: &Options,
    build: &Build,
    as_account: Option<&(dyn Fn(&mut tokio::process::Command) + Sync)>,
) -> Result<i32, CliRunError> {
    let mut cmd = tokio::process::Command::new(&build.node);
    cmd.arg(build.root.join("out/server-main.js"));
    if e.list {
        cmd.arg("--list-extensions");
    }
    if e.show_versions {
        cmd.arg("--show-versions");
    }
    if let Some(c) = &e.category {
        cmd.args(["--category", c]);
    }
    for (flag, values) in [
        ("--install-extension", &e.install),
        ("--uninstall-extension", &e.uninstall),
        ("--locate-extension", &e.locate),
    ] {
        for v in values {
            cmd.arg(flag).arg(v);
        }
    }
    if e.force {
        cmd.arg("--force");
    }
    cmd.arg("--extensions-dir").arg(&dirs.extensions).arg("--user-data-dir").arg(&dirs.user_data);
    if let Some(dir) = &options.builtin_extensions_dir {
        cmd.arg("--builtin-extensions-dir").arg(dir);
    }
    cmd.arg("--accept-server-license-terms");
    match as_account {
        Some(set_up) => set_up(&mut cmd),
        None => super::scrub_env(&mut cmd),
    }
    // The CLI warns about its own deprecated APIs on stderr; that is noise for our users.
    cmd.env("NODE_NO_WARNINGS", "1").stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let status = cmd.status().await.map_err(|source| CliRunError { node: build.node.clone(), source })?;
    Ok(status.code().unwrap_or(1))
}

/// Packages that passed `--verify-extensions`, copied into a private directory of ours so that
/// VS Code installs the bytes that were checked, not a file someone may have swapped since.
/// The directory goes at drop.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// What passed, in the order given.
    pub verified: Vec<Verified>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why the installs of a verifying run do not happen.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// One refusal per package that failed; nothing is installed if any did.
    #[error("{} package(s) refused", .0.len())]
    Refused(Vec<Refusal>),
    #[error(transparent)]
    Scratch(#[from] crate::private_dir::PrivateDirError),
    #[error("cannot stage verified packages in {}: {}", path.display(), crate::errno::describe(source))]
    Stage { path: PathBuf, source: std::io::Error },
}

/// Checks every `--install-extension` of `e` against `store` (see [`signing::check`]) and, when
/// all pass, points them at staged copies under `scratch` (a private directory, made if
/// missing). Any refusal means no install at all, so a partly trusted list never half applies.
pub fn verify_installs(e: &mut Commands, store: &TrustStore, scratch: &Path) -> Result<Staged, VerifyError> {
    let mut verified = vec![];
    let mut refused = vec![];
    for arg in &e.install {
        match signing::check(arg, store) {
            Ok(v) => verified.push(v),
            Err(r) => refused.push(r),
        }
    }
    if !refused.is_empty() {
        return Err(VerifyError::Refused(refused));
    }
    crate::private_dir::ensure(scratch)?;
    let dir = scratch.join(format!("verified-extensions-{}", crate::util::random_hex(6)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| VerifyError::Stage { path: dir.clone(), source })?;
    let mut staged = Staged { dir, verified: vec![] };
    for (i, v) in verified.into_iter().enumerate() {
        // The id and version are checked names, so the file name is safe; VS Code reads
        // everything it needs from inside the package.
        let path = staged.dir.join(format!("{i}-{}-{}.vsix", v.identity.id(), v.identity.version));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            f.write_all(&v.bytes)
        };
        write().map_err(|source| VerifyError::Stage { path: path.clone(), source })?;
        e.install[i] = path.to_string_lossy().into_owned();
        staged.verified.push(v);
    }
    Ok(staged)
}
