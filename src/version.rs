//! Who we are: the product version and the commit we were built from.

/// Our version: the code-server release whose VS Code build we provision and run, so that
/// `--version` and the workbench's Help > About (which shows the build's `codeServerVersion`)
/// name the same product. A test keeps it equal to the pinned build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit we were built from, when the build set `CODE_SERVER_COMMIT`.
pub fn commit() -> &'static str {
    option_env!("CODE_SERVER_COMMIT").unwrap_or("development")
}
