//! Account passwords: the rules a new one must meet, Argon2id hashing with OWASP's parameters,
//! and verification on the blocking pool, a few at a time (the same bound as the single-user
//! checker: one per core), so logins cannot starve the runtime.
//!
//! A login for a username that does not exist verifies against [`Passwords::dummy_hash`], a
//! hash made at start with the same parameters, so it costs what a wrong password costs and
//! usernames cannot be told apart by timing.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

pub const MIN_LENGTH: usize = 8;
/// Bytes; past this a password is not a password (and hashing it is a cost anyone could impose).
pub const MAX_LENGTH: usize = 1024;

/// A password that breaks a rule, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRule {
    #[error("password: must be at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("password: must be at most {MAX_LENGTH} bytes")]
    TooLong,
    #[error("password: must not be the username")]
    IsUsername,
    #[error("password: must not begin or end with spaces")]
    Padded,
    #[error("password: must not contain control characters")]
    ControlCharacters,
}

/// Checks a new password against the rules.
pub fn check_rules(password: &str, username: &str) -> Result<(), PasswordRule> {
    if password.len() > MAX_LENGTH {
        return Err(PasswordRule::TooLong);
    }
    if password.chars().count() < MIN_LENGTH {
        return Err(PasswordRule::TooShort);
    }
    if password.trim() != password {
        return Err(PasswordRule::Padded);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordRule::ControlCharacters);
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(PasswordRule::IsUsername);
    }
    Ok(())
}

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid"))
}

fn hash_now(password: &str) -> String {
    let salt = SaltString::encode_b64(&crate::util::random_bytes::<16>()).expect("16 bytes encode");
    hasher().hash_password(password.as_bytes(), &salt).expect("argon2 hashes any input").to_string()
}

/// Verifies with the parameters the hash names (a hash made with other parameters, or by
/// another tool, still verifies).
fn verify_now(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &hash).is_ok()
}

impl Passwords {
    pub fn new() -> Passwords {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Passwords { permits: Arc::new(Semaphore::new(cores)), dummy: hash_now(&crate::util::random_hex(16)).into() }
    }

    /// A hash to verify against when there is no user: same parameters, matches nothing.
    pub fn dummy_hash(&self) -> &str {
        &self.dummy
    }

    pub async fn hash(&self, password: &str) -> String {
        let _permit = self.permits.acquire().await.expect("never closed");
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_now(&password)).await.expect("hashing does not panic")
    }

    pub async fn verify(&self, password: &str, phc: &str) -> bool {
        let _permit = self.permits.acquire().await.expect("never closed");
        let (password, phc) = (password.to_string(), phc.to_string());
        tokio::task::spawn_blocking(move || verify_now(&password, &phc)).await.unwrap_or(false)
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_what_is_wrong() {
        assert_eq!(check_rules("short", "bob"), Err(PasswordRule::TooShort));
        assert_eq!(check_rules(&"x".repeat(MAX_LENGTH + 1), "bob"), Err(PasswordRule::TooLong));
        assert_eq!(check_rules("aliceALICE", "alicealice"), Err(PasswordRule::IsUsername));
        assert_eq!(check_rules(" padded password", "bob"), Err(PasswordRule::Padded));
        assert_eq!(check_rules("tab\there!", "bob"), Err(PasswordRule::ControlCharacters));
        assert_eq!(check_rules("correct horse", "bob"), Ok(()));
        assert_eq!(check_rules("ünïcödé!", "bob"), Ok(()), "eight characters, more bytes");
        assert!(PasswordRule::TooShort.to_string().starts_with("password: "));
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let p = Passwords::new();
        let h = p.hash("correct horse").await;
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(p.verify("correct horse", &h).await);
        assert!(!p.verify("correct horsE", &h).await);
        assert_ne!(p.hash("correct horse").await, h, "salted");
        assert!(!p.verify("anything", p.dummy_hash()).await);
        assert!(p.dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }
}
