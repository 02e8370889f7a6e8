//! Signed extensions (`--verify-extensions`): a `.vsix` is installed only with a detached
//! signature, `<package>.vsix.sig`, made by a key the operator trusts for its publisher.
//!
//! The signature file is JSON (see README, "Signed extensions"):
//!
//! ```json
//! {"format": "code-server-extension-signature/1", "publisher": "acme", "extension": "acme.hello",
//!  "version": "1.2.3", "sha256": "<hex SHA-256 of the .vsix>", "algorithm": "ed25519",
//!  "signature": "<base64>"}
//! ```
//!
//! and what is signed is [`message`]: those fields, one per line, so the signature binds the
//! publisher, the extension id and the version to the package's digest. The package's own
//! manifest must name the same extension, so a publisher's key cannot vouch for someone else's
//! extension, and the signed data cannot be moved to another package.

pub mod keys;
pub mod store;
pub mod vsix;

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;

use keys::PublicKey;
use store::{StoreError, TrustStore};
use vsix::{Identity, VsixError};

/// The first line of the signed message and the `format` of the file.
pub const FORMAT: &str = "code-server-extension-signature/1";

/// How a signature was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`openssl dgst -sha256 -sign`).
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsaPssSha256,
    /// ECDSA on P-256 with SHA-256, the signature DER-encoded as openssl writes it.
    EcdsaP256Sha256,
    /// Ed25519 (pure, over the message itself).
    Ed25519,
}

impl Algorithm {
    pub const NAMES: &[&str] = &["rsa-pkcs1-sha256", "rsa-pss-sha256", "ecdsa-p256-sha256", "ed25519"];

    pub fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "rsa-pkcs1-sha256" => Algorithm::RsaPkcs1Sha256,
            "rsa-pss-sha256" => Algorithm::RsaPssSha256,
            "ecdsa-p256-sha256" => Algorithm::EcdsaP256Sha256,
            "ed25519" => Algorithm::Ed25519,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            Algorithm::RsaPssSha256 => "rsa-pss-sha256",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Publisher and extension names as the marketplace and `vsce` allow them: a letter or digit,
/// then letters, digits and hyphens. Nothing else may reach a file name or the signed lines.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.len() <= 128
}

/// A version as it may appear in a signed line: semver's characters, no spaces or newlines.
fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// The bytes a signature is over:
///
/// ```text
/// code-server-extension-signature/1
/// publisher=<publisher>
/// extension=<publisher>.<name>
/// version=<version>
/// sha256=<lowercase hex SHA-256 of the .vsix>
/// ```
///
/// each line ending in `\n`. Every value is checked to hold no newline or `=`, so the lines
/// cannot be confused.
pub fn message(publisher: &str, extension: &str, version: &str, sha256: &[u8; 32]) -> Vec<u8> {
    format!(
        "{FORMAT}\npublisher={publisher}\nextension={extension}\nversion={version}\nsha256={}\n",
        crate::util::hex(sha256)
    )
    .into_bytes()
}

/// A parsed signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub publisher: String,
    /// `publisher.name`.
    pub extension: String,
    pub version: String,
    pub sha256: [u8; 32],
    pub algorithm: Algorithm,
    pub signature: Vec<u8>,
}

/// Why a signature file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFileError {
    #[error(
        "it is not JSON with the fields format, publisher, extension, version, sha256, algorithm and signature ({0})"
    )]
    Json(String),
    #[error("its format is {0:?}, not {FORMAT:?}")]
    Format(String),
    #[error("its publisher {0:?} is not a publisher name (letters, digits and hyphens)")]
    Publisher(String),
    #[error("its extension {0:?} is not <publisher>.<name> of its publisher")]
    Extension(String),
    #[error("its version {0:?} is not a version")]
    Version(String),
    #[error("its sha256 is not 64 hexadecimal digits")]
    Digest,
    #[error("its algorithm {0:?} is not one of {names}", names = Algorithm::NAMES.join(", "))]
    Algorithm(String),
    #[error("its signature is not base64")]
    Base64,
}

impl Signature {
    pub fn parse(json: &[u8]) -> Result<Signature, SignatureFileError> {
        // Other fields are ignored: they are not signed, so nothing may depend on them.
        #[derive(serde::Deserialize)]
        struct File {
            format: String,
            publisher: String,
            extension: String,
            version: String,
            sha256: String,
            algorithm: String,
            signature: String,
        }
        let f: File = serde_json::from_slice(json).map_err(|e| SignatureFileError::Json(e.to_string()))?;
        if f.format != FORMAT {
            return Err(SignatureFileError::Format(f.format));
        }
        if !valid_name(&f.publisher) {
            return Err(SignatureFileError::Publisher(f.publisher));
        }
        let of_publisher = f
            .extension
            .split_once('.')
            .is_some_and(|(p, name)| p.eq_ignore_ascii_case(&f.publisher) && valid_name(name));
        if !of_publisher {
            return Err(SignatureFileError::Extension(f.extension));
        }
        if !valid_version(&f.version) {
            return Err(SignatureFileError::Version(f.version));
        }
        let sha256 = parse_hex32(&f.sha256).ok_or(SignatureFileError::Digest)?;
        let algorithm = Algorithm::parse(&f.algorithm).ok_or(SignatureFileError::Algorithm(f.algorithm))?;
        // `openssl base64` wraps its output; the line breaks are not part of the signature.
        let compact: String = f.signature.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let signature = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(SignatureFileError::Base64)?;
        Ok(Signature {
            publisher: f.publisher,
            extension: f.extension,
            version: f.version,
            sha256,
            algorithm,
            signature,
        })
    }

    /// The bytes this signature must be over.
    pub fn message(&self) -> Vec<u8> {
        message(&self.publisher, &self.extension, &self.version, &self.sha256)
    }

    /// `publisher.name@version`, as signed.
    fn signed_for(&self) -> String {
        format!("{}@{}", self.extension, self.version)
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Where the signature of `package` is looked for: next to it, `.sig` appended.
pub fn signature_path(package: &Path) -> PathBuf {
    let mut name = package.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Why a package is not installed in enforcing mode; each says which check failed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "refusing to install {0}: --verify-extensions installs only signed .vsix files, and {0} names an extension of the marketplace, which cannot be verified (download its .vsix with a signature, or install without --verify-extensions)"
    )]
    Marketplace(String),
    #[error("refusing to install {}: cannot read it: {}", path.display(), crate::errno::describe(source))]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("refusing to install {}: it is not a VS Code extension package: {why}", path.display())]
    NotAPackage { path: PathBuf, why: VsixError },
    #[error("refusing to install {}: it is not signed (there is no {})", path.display(), sig.display())]
    Unsigned { path: PathBuf, sig: PathBuf },
    #[error("refusing to install {}: cannot read its signature {}: {}", path.display(), sig.display(), crate::errno::describe(source))]
    SignatureUnreadable { path: PathBuf, sig: PathBuf, source: std::io::Error },
    #[error("refusing to install {}: its signature {} is malformed: {why}", path.display(), sig.display())]
    SignatureMalformed { path: PathBuf, sig: PathBuf, why: SignatureFileError },
    #[error("refusing to install {}: extension id mismatch: the signature is for {signed}, but the package is {actual}", path.display())]
    IdMismatch { path: PathBuf, signed: String, actual: String },
    #[error(
        "refusing to install {}: publisher {publisher} is not trusted (trust its key with --trust-publisher KEYFILE)",
        path.display()
    )]
    Untrusted { path: PathBuf, publisher: String },
    #[error(
        "refusing to install {}: digest mismatch: the package was changed after it was signed (its SHA-256 is {actual}, the signature's {signed})",
        path.display()
    )]
    DigestMismatch { path: PathBuf, actual: String, signed: String },
    #[error(
        "refusing to install {}: bad signature: no trusted key of publisher {publisher} verifies its {algorithm} signature{}",
        path.display(),
        if *no_key_of_kind { " (none of its trusted keys is of that kind)" } else { "" }
    )]
    BadSignature { path: PathBuf, publisher: String, algorithm: Algorithm, no_key_of_kind: bool },
    #[error("refusing to install {}: {source}", path.display())]
    Store { path: PathBuf, source: StoreError },
}

/// A package that passed: its bytes as read and checked (install these, not the file again,
/// which could have changed since) and who it is.
#[derive(Debug)]
pub struct Verified {
    pub bytes: Vec<u8>,
    pub identity: Identity,
    pub key: PublicKey,
}

/// Checks one `--install-extension` argument against the trust store. `arg` is what VS Code's
/// CLI takes: a path ending in `.vsix` (as VS Code tells them apart), else a marketplace id.
pub fn check(arg: &str, store: &TrustStore) -> Result<Verified, Refusal> {
    if !arg.to_ascii_lowercase().ends_with(".vsix") {
        return Err(Refusal::Marketplace(arg.to_string()));
    }
    let path = PathBuf::from(arg);
    let bytes = std::fs::read(&path).map_err(|source| Refusal::Unreadable { path: path.clone(), source })?;
    let identity = vsix::identity(&bytes).map_err(|why| Refusal::NotAPackage { path: path.clone(), why })?;
    let sig_path = signature_path(&path);
    let sig_bytes = match std::fs::read(&sig_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Refusal::Unsigned { path, sig: sig_path });
        }
        Err(source) => return Err(Refusal::SignatureUnreadable { path, sig: sig_path, source }),
    };
    let sig = Signature::parse(&sig_bytes).map_err(|why| Refusal::SignatureMalformed {
        path: path.clone(),
        sig: sig_path,
        why,
    })?;
    // Ids are case-insensitive in VS Code; versions are not.
    if !sig.extension.eq_ignore_ascii_case(&identity.id()) || sig.version != identity.version {
        return Err(Refusal::IdMismatch { path, signed: sig.signed_for(), actual: identity.to_string() });
    }
    let keys = store.keys_of(&sig.publisher).map_err(|source| Refusal::Store { path: path.clone(), source })?;
    if keys.is_empty() {
        return Err(Refusal::Untrusted { path, publisher: sig.publisher });
    }
    let actual = crate::util::sha256(&bytes);
    if actual != sig.sha256 {
        let hex = crate::util::hex;
        return Err(Refusal::DigestMismatch { path, actual: hex(&actual), signed: hex(&sig.sha256) });
    }
    let message = sig.message();
    match keys.iter().find(|k| k.verifies(sig.algorithm, &message, &sig.signature)) {
        Some(key) => Ok(Verified { bytes, identity, key: key.clone() }),
        None => Err(Refusal::BadSignature {
            path,
            no_key_of_kind: !keys.iter().any(|k| k.fits(sig.algorithm)),
            publisher: sig.publisher,
            algorithm: sig.algorithm,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(over: &[(&str, &str)]) -> Vec<u8> {
        let mut v = serde_json::json!({
            "format": FORMAT, "publisher": "acme", "extension": "acme.hello", "version": "1.2.3",
            "sha256": "ab".repeat(32), "algorithm": "ed25519", "signature": "AAEC\nAw==",
        });
        for (k, val) in over {
            v[*k] = serde_json::Value::String(val.to_string());
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn the_signed_message() {
        let sig = Signature::parse(&file(&[])).unwrap();
        assert_eq!(sig.signature, vec![0, 1, 2, 3]);
        let expected = format!(
            "code-server-extension-signature/1\npublisher=acme\nextension=acme.hello\nversion=1.2.3\nsha256={}\n",
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(sig.message()).unwrap(), expected);
        // Upper-case hex reads the same, and the message is always lower case.
        assert_eq!(Signature::parse(&file(&[("sha256", &"AB".repeat(32))])).unwrap().message(), sig.message());
    }

    #[test]
    fn malformed_files() {
        let err = |over: &[(&str, &str)]| Signature::parse(&file(over)).unwrap_err();
        assert!(matches!(err(&[("format", "v2")]), SignatureFileError::Format(_)));
        assert!(matches!(err(&[("publisher", "ac/me")]), SignatureFileError::Publisher(_)));
        assert!(matches!(err(&[("extension", "other.hello")]), SignatureFileError::Extension(_)));
        assert!(matches!(err(&[("extension", "acme.hel\nlo")]), SignatureFileError::Extension(_)));
        assert!(matches!(err(&[("version", "1.0\nsha256=00")]), SignatureFileError::Version(_)));
        assert_eq!(err(&[("sha256", "abc")]), SignatureFileError::Digest);
        assert_eq!(err(&[("sha256", &"zz".repeat(32))]), SignatureFileError::Digest);
        assert!(matches!(err(&[("algorithm", "rsa-sha1")]), SignatureFileError::Algorithm(_)));
        assert_eq!(err(&[("signature", "!!")]), SignatureFileError::Base64);
        assert!(matches!(Signature::parse(b"{}"), Err(SignatureFileError::Json(_))));
    }

    #[test]
    fn names() {
        for ok in ["acme", "ms-python", "A1", "x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-acme", "ac.me", "ac/me", "../x", "a b", &"a".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn signature_sits_next_to_the_package() {
        assert_eq!(signature_path(Path::new("/x/a.vsix")), Path::new("/x/a.vsix.sig"));
    }
}
