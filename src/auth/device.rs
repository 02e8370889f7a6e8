//! Device cookies (OWASP, "Slow down online guessing attacks with device cookies"): a browser
//! that signs in successfully gets a signed token of its own, and its later login attempts are
//! rate limited by that token instead of by the address and the process-wide ceiling (see
//! [`super::limiter`]). Someone guessing passwords from elsewhere can exhaust the ceiling but
//! cannot lock out a browser that has signed in before.
//!
//! The cookie is `<id>.<mac>`: 128 random bits and their HMAC-SHA256 under a key kept in the
//! user-data-dir (mode 0600, made once), so it cannot be forged and holds nothing secret.

use std::path::Path;

use ring::hmac;

use crate::util::{hex, random_bytes};

/// How long a device cookie lasts.
pub const MAX_AGE_SECONDS: u64 = 365 * 24 * 3600;

pub struct DeviceKeys {
    key: hmac::Key,
}

impl DeviceKeys {
    /// The key at `path`, made (32 random bytes, mode 0600) if there is none yet.
    pub fn open(path: &Path) -> std::io::Result<DeviceKeys> {
        let secret = match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(_) | Err(_) => {
                let fresh = random_bytes::<32>().to_vec();
                crate::util::atomic_write(path, &fresh, 0o600)?;
                fresh
            }
        };
        Ok(DeviceKeys { key: hmac::Key::new(hmac::HMAC_SHA256, &secret) })
    }

    /// A key for tests, not kept anywhere.
    pub fn ephemeral() -> DeviceKeys {
        DeviceKeys { key: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()) }
    }

    /// A new device cookie value.
    pub fn issue(&self) -> String {
        let id = random_bytes::<16>();
        format!("{}.{}", hex(&id), hex(hmac::sign(&self.key, &id).as_ref()))
    }

    /// The id of a device cookie we issued, or `None` for anything else.
    pub fn verify(&self, value: &str) -> Option<[u8; 16]> {
        let (id_hex, mac_hex) = value.split_once('.')?;
        let id: [u8; 16] = unhex(id_hex)?.try_into().ok()?;
        let mac = unhex(mac_hex)?;
        hmac::verify(&self.key, &id, &mac).ok()?;
        Some(id)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_cookies_verify_and_nothing_else_does() {
        let keys = DeviceKeys::ephemeral();
        let cookie = keys.issue();
        let id = keys.verify(&cookie).unwrap();
        assert_eq!(hex(&id), cookie.split_once('.').unwrap().0);
        assert_ne!(keys.issue(), cookie);
        let (id_hex, mac) = cookie.split_once('.').unwrap();
        let forged = format!("{}.{mac}", id_hex.replace(&id_hex[..2], if &id_hex[..2] == "00" { "01" } else { "00" }));
        assert!(keys.verify(&forged).is_none());
        assert!(DeviceKeys::ephemeral().verify(&cookie).is_none(), "another key");
        for junk in ["", ".", "abc", "zz.zz", &format!("{id_hex}.")] {
            assert!(keys.verify(junk).is_none(), "{junk}");
        }
    }
}
