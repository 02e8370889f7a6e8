//! `--install-extension`, `--uninstall-extension`, `--list-extensions`, `--locate-extension`:
//! run VS Code's own CLI against the same user-data and extensions directories the server uses,
//! with its output and exit status passed through (spec §4.5, vscode-server.md §6.9).

use std::process::Stdio;

use super::build::Build;
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

/// Runs the extension commands on `dirs` and returns VS Code's exit status.
pub async fn run(e: &Commands, dirs: &Dirs, options: &Options, build: &Build) -> Result<i32, CliRunError> {
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
    super::scrub_env(&mut cmd);
    // The CLI warns about its own deprecated APIs on stderr; that is noise for our users.
    cmd.env("NODE_NO_WARNINGS", "1").stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let status = cmd.status().await.map_err(|source| CliRunError { node: build.node.clone(), source })?;
    Ok(status.code().unwrap_or(1))
}
