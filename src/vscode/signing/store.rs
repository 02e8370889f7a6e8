//! The trust store: `<data dir>/trusted-publishers/<publisher>.pem`, each file the publisher's
//! trusted public keys as PEM `PUBLIC KEY` blocks (more than one while a publisher rotates its
//! key). The directory is private (0700, checked as every directory we keep secrets in, since
//! whoever can write there decides what gets installed) and its files are 0600.
//!
//! Publisher names are compared without regard to case, as VS Code compares extension ids, so
//! files are named in lower case.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::keys::{KeyError, PublicKey};
use super::valid_name;
use crate::private_dir::{self, PrivateDirError};

/// The trust-store actions of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustCommand {
    /// `--trust-publisher KEYFILE [--publisher NAME]`: without a name, the key file's name up to
    /// its first dot is the publisher (`acme.pem` is acme's).
    Trust { key_file: PathBuf, publisher: Option<String> },
    /// `--list-trusted-publishers`.
    List,
    /// `--untrust-publisher NAME`.
    Untrust(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Dir(#[from] PrivateDirError),
    #[error("cannot read {}: {}", path.display(), crate::errno::describe(source))]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {}", path.display(), crate::errno::describe(source))]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot use the key file {}: {why}", path.display())]
    Key { path: PathBuf, why: KeyError },
    #[error("the trusted key file {} is not a regular file of ours; remove it", path.display())]
    NotAFile { path: PathBuf },
    #[error("{0:?} is not a publisher name (a letter or digit, then letters, digits and hyphens)")]
    BadPublisher(String),
    #[error(
        "cannot tell the publisher from the file name of {}: name the file <publisher>.pem or give --publisher NAME",
        path.display()
    )]
    NoPublisher { path: PathBuf },
    #[error("publisher {0} is not trusted")]
    NotTrusted(String),
}

/// The trust store of one data directory.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    pub fn new(data_dir: &Path) -> TrustStore {
        TrustStore { dir: data_dir.join("trusted-publishers") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_of(&self, publisher: &str) -> PathBuf {
        self.dir.join(format!("{}.pem", publisher.to_ascii_lowercase()))
    }

    /// The store's directory, checked to be ours alone; `None` when there is none yet.
    fn existing_dir(&self) -> Result<Option<&Path>, StoreError> {
        match std::fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => {
                private_dir::ensure(&self.dir)?;
                Ok(Some(&self.dir))
            }
        }
    }

    /// The keys trusted for `publisher`; none when it is not trusted.
    pub fn keys_of(&self, publisher: &str) -> Result<Vec<PublicKey>, StoreError> {
        if !valid_name(publisher) || self.existing_dir()?.is_none() {
            return Ok(vec![]);
        }
        read_keys(&self.file_of(publisher))
    }

    /// Every trusted publisher (sorted) with its keys.
    pub fn list(&self) -> Result<Vec<(String, Vec<PublicKey>)>, StoreError> {
        let Some(dir) = self.existing_dir()? else { return Ok(vec![]) };
        let read_err = |source| StoreError::Read { path: dir.to_path_buf(), source };
        let mut out = vec![];
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            // Only what --trust-publisher writes counts; anything else there is not a key.
            let Some(publisher) = name.to_str().and_then(|n| n.strip_suffix(".pem")).filter(|p| valid_name(p)) else {
                continue;
            };
            let keys = read_keys(&entry.path())?;
            if !keys.is_empty() {
                out.push((publisher.to_string(), keys));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Adds `keys` for `publisher`; returns those that were not trusted already.
    pub fn add(&self, publisher: &str, keys: Vec<PublicKey>) -> Result<Vec<PublicKey>, StoreError> {
        if !valid_name(publisher) {
            return Err(StoreError::BadPublisher(publisher.to_string()));
        }
        private_dir::ensure(&self.dir)?;
        let path = self.file_of(publisher);
        let mut all = read_keys(&path)?;
        let new: Vec<PublicKey> = keys.into_iter().filter(|k| !all.contains(k)).collect();
        if !new.is_empty() {
            all.extend(new.iter().cloned());
            let text: String = all.iter().map(PublicKey::to_pem).collect();
            crate::util::atomic_write(&path, text.as_bytes(), 0o600)
                .map_err(|source| StoreError::Write { path: path.clone(), source })?;
        }
        Ok(new)
    }

    /// Stops trusting `publisher`; returns how many keys it had.
    pub fn remove(&self, publisher: &str) -> Result<usize, StoreError> {
        let keys = self.keys_of(publisher)?;
        if keys.is_empty() {
            return Err(StoreError::NotTrusted(publisher.to_string()));
        }
        let path = self.file_of(publisher);
        std::fs::remove_file(&path).map_err(|source| StoreError::Write { path, source })?;
        Ok(keys.len())
    }
}

/// The keys in one store file; none when it does not exist.
fn read_keys(path: &Path) -> Result<Vec<PublicKey>, StoreError> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => return Err(StoreError::Read { path: path.to_path_buf(), source }),
        Ok(m) => m,
    };
    // The directory is ours alone, but a symlink there could still point at a file others
    // write; and only the owner (or root) may have put a key in.
    if !meta.is_file() || (meta.uid() != private_dir::current_uid() && meta.uid() != 0) {
        return Err(StoreError::NotAFile { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(|source| StoreError::Read { path: path.to_path_buf(), source })?;
    PublicKey::parse_file(&bytes).map_err(|why| StoreError::Key { path: path.to_path_buf(), why })
}

/// Runs one trust-store action; returns what to print.
pub fn run(store: &TrustStore, command: &TrustCommand) -> Result<String, StoreError> {
    match command {
        TrustCommand::Trust { key_file, publisher } => {
            let publisher = match publisher {
                Some(p) => p.clone(),
                None => key_file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next())
                    .filter(|p| valid_name(p))
                    .ok_or_else(|| StoreError::NoPublisher { path: key_file.clone() })?
                    .to_string(),
            };
            if !valid_name(&publisher) {
                return Err(StoreError::BadPublisher(publisher));
            }
            let bytes =
                std::fs::read(key_file).map_err(|source| StoreError::Read { path: key_file.clone(), source })?;
            let keys = PublicKey::parse_file(&bytes).map_err(|why| StoreError::Key { path: key_file.clone(), why })?;
            let publisher = publisher.to_ascii_lowercase();
            let added = store.add(&publisher, keys.clone())?;
            let mut out = String::new();
            for k in &keys {
                let what = if added.contains(k) { "Trusted" } else { "Already trusted" };
                out.push_str(&format!("{what}: publisher {publisher}, {} key {}\n", k.kind(), k.fingerprint()));
            }
            Ok(out)
        }
        TrustCommand::List => {
            let all = store.list()?;
            if all.is_empty() {
                return Ok(format!(
                    "No trusted publishers ({}); add one with --trust-publisher KEYFILE\n",
                    store.dir().display()
                ));
            }
            let mut out = format!("{:<32}  {:<10}  {}\n", "PUBLISHER", "ALGORITHM", "FINGERPRINT");
            for (publisher, keys) in all {
                for k in keys {
                    out.push_str(&format!("{publisher:<32}  {:<10}  {}\n", k.kind().to_string(), k.fingerprint()));
                }
            }
            Ok(out)
        }
        TrustCommand::Untrust(publisher) => {
            let n = store.remove(publisher)?;
            let keys = if n == 1 { "key" } else { "keys" };
            Ok(format!("No longer trusting publisher {} ({n} {keys} removed)\n", publisher.to_ascii_lowercase()))
        }
    }
}
