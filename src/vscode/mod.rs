//! VS Code's server as a build: finding or provisioning one, the options it is started with,
//! talking to it over its socket, and its extension CLI. Who runs which server is
//! [`crate::workspaces`]; the routes in front of it are [`crate::workbench`].

pub mod build;
pub mod extensions;
pub mod first_run;
pub mod forward;
pub mod provision;
pub mod signing;

use std::ffi::OsString;
use std::path::PathBuf;

use build::Build;

use crate::logging::LogLevel;
use crate::secret::Secret;

/// What every VS Code server of this deployment is started with (code-server's options it
/// passes on), besides each one's own directories.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--auth password` (the build shows a sign-out command).
    pub auth_password: bool,
    pub app_name: String,
    pub log_level: LogLevel,
    pub builtin_extensions_dir: Option<PathBuf>,
    pub disable_telemetry: bool,
    pub disable_workspace_trust: bool,
    pub disable_update_check: bool,
    pub disable_file_downloads: bool,
    pub disable_file_uploads: bool,
    pub disable_getting_started_override: bool,
    pub locale: Option<String>,
    pub enable_proposed_api: Vec<String>,
    pub link_protection_trusted_domains: Vec<String>,
    pub reconnection_grace_time: Option<String>,
    /// `--vscode-option` and `$VSCODE_OPTIONS`: `flag=value` or `flag`, each with a name
    /// (checked when the command line is read).
    pub vscode_options: Vec<String>,
    /// `$GITHUB_TOKEN` / `github-auth`, passed as `--github-auth` through a pipe.
    pub github_auth: Option<Secret>,
}

/// One server's own directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub user_data: PathBuf,
    pub extensions: PathBuf,
}

/// The child's command line after `--socket-path` (vscode-server.md §6; spec §4.2).
pub fn server_args(options: &Options, build: &Build, dirs: &Dirs) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![];
    let mut flag = |name: &str| args.push(format!("--{name}").into());
    flag("without-connection-token");
    flag("accept-server-license-terms");
    let args_with = |args: &mut Vec<OsString>, name: &str, value: OsString| {
        args.push(format!("--{name}").into());
        args.push(value);
    };
    args_with(&mut args, "user-data-dir", dirs.user_data.clone().into());
    args_with(&mut args, "extensions-dir", dirs.extensions.clone().into());
    if let Some(dir) = &options.builtin_extensions_dir {
        args_with(&mut args, "builtin-extensions-dir", dir.clone().into());
    }
    // VS Code strips this prefix when present, so `/vscode/...` and `/...` both reach it while
    // its page URLs stay relative to what the browser asked for.
    args_with(&mut args, "server-base-path", "/vscode".into());
    args_with(&mut args, "log", options.log_level.as_str().into());
    for (on, name) in
        [(options.disable_telemetry, "disable-telemetry"), (options.disable_workspace_trust, "disable-workspace-trust")]
    {
        if on {
            args.push(format!("--{name}").into());
        }
    }
    if let Some(locale) = &options.locale {
        args_with(&mut args, "locale", locale.into());
    }
    for id in &options.enable_proposed_api {
        args_with(&mut args, "enable-proposed-api", id.into());
    }
    // Options only code-server's patched build understands.
    if build.code_server_version.is_some() {
        let auth = if options.auth_password { "password" } else { "none" };
        args_with(&mut args, "auth", auth.into());
        args_with(&mut args, "app-name", options.app_name.clone().into());
        for (on, name) in [
            (options.disable_update_check, "disable-update-check"),
            (options.disable_file_downloads, "disable-file-downloads"),
            (options.disable_file_uploads, "disable-file-uploads"),
            (options.disable_getting_started_override, "disable-getting-started-override"),
        ] {
            if on {
                args.push(format!("--{name}").into());
            }
        }
        for d in &options.link_protection_trusted_domains {
            args_with(&mut args, "link-protection-trusted-domains", d.into());
        }
        if let Some(t) = &options.reconnection_grace_time {
            args_with(&mut args, "reconnection-grace-time", t.into());
        }
    }
    // --vscode-option / $VSCODE_OPTIONS: `flag=value` or a bare `flag`, leading `--` optional.
    for opt in &options.vscode_options {
        args.push(format!("--{}", opt.trim_start_matches("--")).into());
    }
    args
}

/// Arguments that carry secrets: code-server's patched build takes the GitHub token as
/// `--github-auth`.
pub fn private_args(options: &Options, build: &Build) -> Vec<Secret> {
    match (&options.github_auth, &build.code_server_version) {
        (Some(token), Some(_)) => vec![Secret::new(format!("--github-auth={}", token.expose()))],
        _ => vec![],
    }
}

/// Secrets never reach VS Code's processes; neither do the variables of an outer VS Code (we may
/// run inside a VS Code terminal), except the proxy template we mean to pass on.
pub fn scrub_env(cmd: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (matches!(key, "PASSWORD" | "HASHED_PASSWORD" | "GITHUB_TOKEN")
                || (key.starts_with("VSCODE_") && key != "VSCODE_PROXY_URI"))
        {
            cmd.env_remove(key);
        }
    }
}
