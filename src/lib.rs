//! code-server in Rust: one binary that fronts VS Code's own server with code-server's flags,
//! config file, routes, cookies and pages. See DESIGN.md in the shared folder for the map.

pub mod app;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod environment;
pub mod errno;
pub mod error;
// Only for `fuzz/` and its corpus test; see the module.
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod heart;
pub mod i18n;
pub mod identity;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod multiuser;
pub mod net;
pub mod origin;
pub mod pages;
pub mod paths;
pub mod private_dir;
pub mod proxy;
pub mod ratelimit;
pub mod relative;
pub mod scrape;
pub mod secret;
pub mod server;
pub mod session_socket;
pub mod settings;
pub mod update;
pub mod util;
pub mod version;
pub mod vscode;
pub mod websocket;
pub mod workbench;
pub mod workspaces;
