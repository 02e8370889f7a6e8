//! Finding a VS Code server ("reh-web") build and the Node runtime to run it with.
//!
//! Layouts we accept for `--vscode-dir` / `$CODE_SERVER_VSCODE_DIR`:
//! * an openvscode-server release: `node`, `out/server-main.js` and `product.json` at the top;
//! * code-server's patched VS Code: `lib/vscode/` inside a code-server package, or that
//!   `lib/vscode` directory itself (Node found or provisioned separately);
//! * what we provision: `<dir>/code-server/lib/vscode` with `<dir>/node/bin/node`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The code-server release whose patched VS Code we provision (VS Code 1.139.1).
pub const CODE_SERVER_VERSION: &str = "4.139.1";
/// Node major version that build needs (its `engines.node`).
pub const NODE_MAJOR: u32 = 24;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no VS Code server build at {0}: expected out/server-main.js and product.json (an openvscode-server release or code-server's lib/vscode)"
    )]
    NotABuild(PathBuf),
    #[error("cannot read {path}: {why}")]
    Product { path: PathBuf, why: String },
    #[error(
        "no Node.js {NODE_MAJOR} found for the VS Code build at {0}: put one in the build directory as `node`, on PATH, or run `code-server --provision-vscode`"
    )]
    NoNode(PathBuf),
}

/// A VS Code server build ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The directory holding `out/server-main.js`, `product.json`, `package.json`.
    pub root: PathBuf,
    pub node: PathBuf,
    /// VS Code's version (`product.json` / `package.json`), e.g. `1.139.1`.
    pub version: String,
    pub commit: String,
    /// `stable`, `insider`, ...
    pub quality: String,
    /// Set for code-server's patched build: it understands code-server's options (auth,
    /// disable-* flags, app-name, ...), serves relative URLs and registers editor sessions.
    pub code_server_version: Option<String>,
}

#[derive(Deserialize)]
struct Product {
    version: Option<String>,
    commit: Option<String>,
    quality: Option<String>,
    #[serde(rename = "codeServerVersion")]
    code_server_version: Option<String>,
}

#[derive(Deserialize)]
struct Package {
    version: Option<String>,
}

impl Build {
    /// code-server's login-page translations, when this is code-server's build
    /// (`<package>/lib/vscode` → `<package>/out/node/i18n/locales`).
    pub fn login_locales(&self) -> Option<PathBuf> {
        self.code_server_version.as_ref()?;
        let dir = self.root.parent()?.parent()?.join("out/node/i18n/locales");
        dir.is_dir().then_some(dir)
    }

    /// The URL segment VS Code serves its assets under: `<quality>-<commit>`.
    pub fn product_path(&self) -> String {
        format!("{}-{}", self.quality, self.commit)
    }

    /// Reads the build at `dir` (any accepted layout). `extra_node` is a provisioned runtime
    /// to fall back on when the layout has none.
    pub fn locate(dir: &Path, extra_node: Option<&Path>) -> Result<Build, BuildError> {
        let (root, bundled_node) = if dir.join("code-server/lib/vscode/out/server-main.js").is_file() {
            (dir.join("code-server/lib/vscode"), Some(dir.join("node/bin/node")))
        } else if dir.join("lib/vscode/out/server-main.js").is_file() {
            (dir.join("lib/vscode"), Some(dir.join("node")))
        } else if dir.join("out/server-main.js").is_file() {
            (dir.to_path_buf(), Some(dir.join("node")))
        } else {
            return Err(BuildError::NotABuild(dir.to_path_buf()));
        };
        let product_path = root.join("product.json");
        let product: Product = read_json(&product_path)?;
        let package: Option<Package> = read_json(&root.join("package.json")).ok();
        let node = bundled_node
            .filter(|n| n.is_file())
            .or_else(|| extra_node.filter(|n| n.is_file()).map(Path::to_path_buf))
            .or_else(node_on_path)
            .ok_or_else(|| BuildError::NoNode(root.clone()))?;
        let missing = |what: &str| BuildError::Product { path: product_path.clone(), why: format!("no {what}") };
        Ok(Build {
            version: product.version.or(package.and_then(|p| p.version)).ok_or_else(|| missing("version"))?,
            commit: product.commit.ok_or_else(|| missing("commit"))?,
            quality: product.quality.unwrap_or_else(|| "stable".into()),
            code_server_version: product.code_server_version,
            node,
            root,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BuildError> {
    let err = |why: String| BuildError::Product { path: path.to_path_buf(), why };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
}

/// `node` on PATH, if it is the major version the build needs.
fn node_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let node = std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file())?;
    let out = std::process::Command::new(&node).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version.trim().trim_start_matches('v').split('.').next()?.parse().ok()?;
    (major == NODE_MAJOR).then_some(node)
}

/// Where we provision builds: `<data dir>/vscode/<code-server version>`.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vscode").join(CODE_SERVER_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_version_is_the_pinned_builds() {
        assert_eq!(crate::version::VERSION, CODE_SERVER_VERSION);
    }

    fn fake_build(root: &Path, product: &str) {
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(root.join("out/server-main.js"), "").unwrap();
        std::fs::write(root.join("product.json"), product).unwrap();
    }

    #[test]
    fn openvscode_layout() {
        let d = tempfile::tempdir().unwrap();
        fake_build(d.path(), r#"{"version":"1.90.0","commit":"abc","quality":"stable"}"#);
        std::fs::write(d.path().join("node"), "").unwrap();
        let b = Build::locate(d.path(), None).unwrap();
        assert_eq!(b.root, d.path());
        assert_eq!(b.node, d.path().join("node"));
        assert_eq!(b.product_path(), "stable-abc");
        assert_eq!(b.code_server_version, None);
    }

    #[test]
    fn code_server_layouts() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("code-server/lib/vscode");
        fake_build(
            &root,
            r#"{"version":"1.139.1","commit":"c0ffee","quality":"stable","codeServerVersion":"4.139.1"}"#,
        );
        std::fs::create_dir_all(d.path().join("node/bin")).unwrap();
        std::fs::write(d.path().join("node/bin/node"), "").unwrap();
        let b = Build::locate(d.path(), None).unwrap();
        assert_eq!(b.root, root);
        assert_eq!(b.node, d.path().join("node/bin/node"));
        assert_eq!(b.code_server_version.as_deref(), Some("4.139.1"));
        // code-server's lib/vscode itself, with a separately provisioned node.
        let b = Build::locate(&root, Some(&d.path().join("node/bin/node"))).unwrap();
        assert_eq!(b.root, root);
    }

    #[test]
    fn not_a_build() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(Build::locate(d.path(), None), Err(BuildError::NotABuild(_))));
    }
}
