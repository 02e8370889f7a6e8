//! Base directories (spec §10): XDG config, data and runtime dirs for code-server.

use std::path::PathBuf;

use crate::environment::Environment;

/// Where code-server keeps its files when no flag says otherwise.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/code-server` or `~/.config/code-server`.
    pub config: PathBuf,
    /// `$XDG_DATA_HOME/code-server` or `~/.local/share/code-server`: heartbeat, certificates,
    /// and the default user-data-dir.
    pub data: PathBuf,
    /// `$XDG_RUNTIME_DIR/code-server`, else `<tmp>/<user>/code-server`: private sockets.
    pub runtime: PathBuf,
}

impl Paths {
    pub fn from_env(env: &Environment) -> Paths {
        let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        let xdg = |var: &str, fallback: &str| {
            env.get(var)
                .filter(|v| v.starts_with('/'))
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(fallback))
                .join("code-server")
        };
        let runtime = match env.get("XDG_RUNTIME_DIR").filter(|v| v.starts_with('/')) {
            Some(dir) => PathBuf::from(dir).join("code-server"),
            None => {
                let user = env.get("USER").unwrap_or("user");
                std::env::temp_dir().join(user).join("code-server")
            }
        };
        Paths { config: xdg("XDG_CONFIG_HOME", ".config"), data: xdg("XDG_DATA_HOME", ".local/share"), runtime }
    }
}
