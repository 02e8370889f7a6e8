//! Who a `.vsix` says it is: `publisher`, `name` and `version` of its `extension/package.json`,
//! the manifest VS Code installs it by. A `.vsix` is a zip.

use std::fmt;
use std::io::{Cursor, Read};

/// The manifest VS Code reads; larger ones are not manifests but an attempt to exhaust memory.
const MANIFEST: &str = "extension/package.json";
const MANIFEST_LIMIT: u64 = 1 << 20;

/// An extension's identity: VS Code's id is `publisher.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub publisher: String,
    pub name: String,
    pub version: String,
}

impl Identity {
    pub fn id(&self) -> String {
        format!("{}.{}", self.publisher, self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.publisher, self.name, self.version)
    }
}

/// Why a file is not an extension package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VsixError {
    #[error("it is not a zip archive ({0})")]
    NotZip(String),
    // Two entries of one name could be read one way by us and the other by VS Code.
    #[error("its zip directory names a file twice")]
    DuplicateNames,
    #[error("it has no {MANIFEST}")]
    NoManifest,
    #[error("its {MANIFEST} cannot be read: {0}")]
    Unreadable(String),
    #[error("its {MANIFEST} is larger than 1 MiB")]
    TooLarge,
    #[error("its {MANIFEST} is not valid JSON: {0}")]
    Json(String),
    #[error("its {MANIFEST} has no \"{0}\"")]
    Missing(&'static str),
}

/// The identity in `package`'s manifest.
pub fn identity(package: &[u8]) -> Result<Identity, VsixError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(package)).map_err(|e| VsixError::NotZip(e.to_string()))?;
    if zip.has_duplicate_names() {
        return Err(VsixError::DuplicateNames);
    }
    let entry = match zip.by_name(MANIFEST) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Err(VsixError::NoManifest),
        Err(e) => return Err(VsixError::Unreadable(e.to_string())),
    };
    let mut text = Vec::new();
    entry.take(MANIFEST_LIMIT + 1).read_to_end(&mut text).map_err(|e| VsixError::Unreadable(e.to_string()))?;
    if text.len() as u64 > MANIFEST_LIMIT {
        return Err(VsixError::TooLarge);
    }
    // VS Code tolerates a byte-order mark in manifests; so do we.
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&text);
    let manifest: serde_json::Value = serde_json::from_slice(text).map_err(|e| VsixError::Json(e.to_string()))?;
    let field = |key: &'static str| {
        manifest.get(key).and_then(|v| v.as_str()).map(str::to_string).ok_or(VsixError::Missing(key))
    };
    Ok(Identity { publisher: field("publisher")?, name: field("name")?, version: field("version")? })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn reads_the_manifest() {
        let manifest = r#"{"publisher": "acme", "name": "hello", "version": "1.2.3"}"#;
        let id = identity(&zip(&[("extension/package.json", manifest)])).unwrap();
        assert_eq!(id.to_string(), "acme.hello@1.2.3");
        assert_eq!(id.id(), "acme.hello");
    }

    #[test]
    fn what_is_not_a_package() {
        assert!(matches!(identity(b"nope"), Err(VsixError::NotZip(_))));
        assert_eq!(identity(&zip(&[("package.json", "{}")])), Err(VsixError::NoManifest));
        assert!(matches!(identity(&zip(&[("extension/package.json", "{")])), Err(VsixError::Json(_))));
        let no_version = r#"{"publisher": "acme", "name": "hello"}"#;
        assert_eq!(identity(&zip(&[("extension/package.json", no_version)])), Err(VsixError::Missing("version")));
        let big =
            format!(r#"{{"publisher": "acme", "name": "hello", "version": "1", "x": "{}"}}"#, "a".repeat(1 << 20));
        assert_eq!(identity(&zip(&[("extension/package.json", &big)])), Err(VsixError::TooLarge));
    }
}
