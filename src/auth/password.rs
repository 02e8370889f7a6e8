//! Password checking: plain text, argon2 PHC hashes of every variant, and code-server's legacy
//! SHA-256 hex form (spec §2.6). Comparisons are constant-time; argon2 runs on the blocking pool
//! behind a semaphore sized to the cores, so a storm of logins cannot stall the async workers.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::secret::Secret;
use crate::util::{hex, sha256};

/// Where the password in use came from: decides a start-up line and the login page's hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    EnvPassword,
    EnvHashedPassword,
    ConfigPassword,
    ConfigHashedPassword,
}

/// The configured password material, before it is turned into a checker.
#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub password: Option<Secret>,
    pub hashed_password: Option<Secret>,
    pub source: PasswordSource,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("hashed-password is not a valid argon2 hash: {0}")]
    BadArgon2Hash(#[from] argon2::password_hash::Error),
    #[error("hashed-password is not a valid argon2 hash: the salt or the hash is missing")]
    IncompleteArgon2Hash,
}

/// How the configured password is checked.
#[derive(Debug, Clone)]
pub enum PasswordMethod {
    PlainText(Secret),
    /// A PHC string (`$argon2i$…`, `$argon2d$…`, `$argon2id$…`), validated at start-up.
    Argon2(Secret),
    /// Lowercase hex SHA-256 of the password, compared case-sensitively like code-server.
    Sha256(Secret),
}

impl PasswordMethod {
    /// code-server's `getPasswordMethod`: a hash containing `$argon` is argon2, any other hash is
    /// legacy SHA-256, no hash means plain text.
    pub fn from_config(cfg: &PasswordConfig) -> Result<PasswordMethod, PasswordError> {
        match (&cfg.hashed_password, &cfg.password) {
            (Some(h), _) if h.expose().contains("$argon") => {
                let s = h.expose().trim();
                validate_argon2(s)?;
                Ok(PasswordMethod::Argon2(Secret::new(s)))
            }
            (Some(h), _) => Ok(PasswordMethod::Sha256(Secret::new(h.expose().trim()))),
            (None, Some(p)) => Ok(PasswordMethod::PlainText(p.clone())),
            (None, None) => Ok(PasswordMethod::PlainText(Secret::new(""))),
        }
    }

    /// A stable digest of the configured secret, mixed with a per-session salt: sessions store
    /// it so that a changed password invalidates every session made under the old one.
    pub fn fingerprint(&self, salt: &[u8]) -> String {
        let (kind, secret) = match self {
            PasswordMethod::PlainText(s) => ("plain", s),
            PasswordMethod::Argon2(s) => ("argon2", s),
            PasswordMethod::Sha256(s) => ("sha256", s),
        };
        let mut material = Vec::with_capacity(64 + secret.expose().len());
        material.extend_from_slice(b"code-server password fingerprint v1\0");
        material.extend_from_slice(salt);
        material.push(0);
        material.extend_from_slice(kind.as_bytes());
        material.push(0);
        material.extend_from_slice(secret.expose().as_bytes());
        hex(&sha256(&material))
    }

    fn verify_now(&self, candidate: &str) -> bool {
        match self {
            // Hash both sides so the comparison takes the same time whatever the lengths.
            PasswordMethod::PlainText(p) => {
                bool::from(sha256(candidate.as_bytes()).ct_eq(&sha256(p.expose().as_bytes())))
            }
            PasswordMethod::Sha256(h) => {
                let computed = hex(&sha256(candidate.as_bytes()));
                bool::from(sha256(computed.as_bytes()).ct_eq(&sha256(h.expose().as_bytes())))
            }
            PasswordMethod::Argon2(phc) => match PasswordHash::new(phc.expose()) {
                // The algorithm, version and parameters all come from the hash itself.
                Ok(hash) => Argon2::default().verify_password(candidate.as_bytes(), &hash).is_ok(),
                Err(_) => false,
            },
        }
    }

    fn is_expensive(&self) -> bool {
        matches!(self, PasswordMethod::Argon2(_))
    }
}

/// A PHC string we can verify against: a known argon2 variant, valid parameters, a salt and an
/// output. Caught at start-up instead of failing every login.
fn validate_argon2(phc: &str) -> Result<(), PasswordError> {
    let hash = PasswordHash::new(phc)?;
    argon2::Algorithm::try_from(hash.algorithm)?;
    argon2::Params::try_from(&hash)?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::IncompleteArgon2Hash);
    }
    Ok(())
}

/// Checks submitted passwords without blocking the async runtime.
#[derive(Debug, Clone)]
pub struct PasswordChecker {
    method: Arc<PasswordMethod>,
    permits: Arc<Semaphore>,
}

impl PasswordChecker {
    pub fn new(method: PasswordMethod) -> PasswordChecker {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        PasswordChecker { method: Arc::new(method), permits: Arc::new(Semaphore::new(cores)) }
    }

    pub fn method(&self) -> &PasswordMethod {
        &self.method
    }

    /// True when `candidate` is the password. A candidate with surrounding whitespace (a paste
    /// with a trailing newline) is also tried trimmed; code-server only ever tries it trimmed,
    /// which makes a configured password with surrounding spaces impossible to enter.
    pub async fn verify(&self, candidate: &str) -> bool {
        let mut tries = vec![candidate.to_string()];
        if candidate.trim() != candidate {
            tries.push(candidate.trim().to_string());
        }
        if !self.method.is_expensive() {
            return tries.iter().any(|c| self.method.verify_now(c));
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let method = self.method.clone();
        tokio::task::spawn_blocking(move || tries.iter().any(|c| method.verify_now(c))).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGON2I_PASSWORD: &str =
        "$argon2i$v=19$m=4096,t=3,p=1$0qR/o+0t00hsbJFQCKSfdQ$oFcM4rL6o+B7oxpuA4qlXubypbBPsf+8L531U7P9HYY";
    const ARGON2I_PASSWORD123: &str =
        "$argon2i$v=19$m=4096,t=3,p=1$EAoczTxVki21JDfIZpTUxg$rkXgyrW4RDGoDYrxBFD4H2DlSMEhP4h+Api1hXnGnFY";
    const SHA256_PASSWORD123: &str = "ef92b778bafe771e89245b89ecbc08a44a4e166c06659911881f383d4473e94f";

    fn method(hashed: Option<&str>, plain: Option<&str>) -> Result<PasswordMethod, PasswordError> {
        PasswordMethod::from_config(&PasswordConfig {
            password: plain.map(Secret::new),
            hashed_password: hashed.map(Secret::new),
            source: PasswordSource::ConfigPassword,
        })
    }

    #[tokio::test]
    async fn upstream_vectors_verify() {
        let c = PasswordChecker::new(method(Some(ARGON2I_PASSWORD), None).unwrap());
        assert!(c.verify("password").await);
        assert!(!c.verify("test").await);
        let c = PasswordChecker::new(method(Some(ARGON2I_PASSWORD123), None).unwrap());
        assert!(c.verify("password123").await);
        let c = PasswordChecker::new(method(Some(SHA256_PASSWORD123), None).unwrap());
        assert!(c.verify("password123").await);
        assert!(!c.verify("password124").await);
        let c = PasswordChecker::new(method(Some(&SHA256_PASSWORD123.to_uppercase()), None).unwrap());
        assert!(!c.verify("password123").await, "legacy hashes compare case-sensitively");
    }

    #[tokio::test]
    async fn every_argon2_variant_verifies() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        for alg in [argon2::Algorithm::Argon2i, argon2::Algorithm::Argon2d, argon2::Algorithm::Argon2id] {
            let params = argon2::Params::new(8192, 2, 1, None).unwrap();
            let hasher = Argon2::new(alg, argon2::Version::V0x13, params);
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let phc = hasher.hash_password(b"s3cret", &salt).unwrap().to_string();
            let c = PasswordChecker::new(method(Some(&phc), None).unwrap());
            assert!(c.verify("s3cret").await, "{phc}");
            assert!(!c.verify("s3cre").await, "{phc}");
        }
    }

    #[tokio::test]
    async fn plain_text_and_whitespace() {
        let c = PasswordChecker::new(method(None, Some("hunter2")).unwrap());
        assert!(c.verify("hunter2").await);
        assert!(c.verify("hunter2\n").await);
        assert!(!c.verify("hunter").await);
        let spaced = PasswordChecker::new(method(None, Some(" spaced ")).unwrap());
        assert!(spaced.verify(" spaced ").await);
    }

    #[test]
    fn bad_argon2_hash_is_a_startup_error() {
        assert!(method(Some("$argon2id$nonsense"), None).is_err());
    }

    #[test]
    fn fingerprints_change_with_the_password_and_salt() {
        let a = method(None, Some("one")).unwrap();
        let b = method(None, Some("two")).unwrap();
        assert_ne!(a.fingerprint(b"s"), b.fingerprint(b"s"));
        assert_ne!(a.fingerprint(b"s"), a.fingerprint(b"t"));
        assert_eq!(a.fingerprint(b"s"), method(None, Some("one")).unwrap().fingerprint(b"s"));
    }
}
