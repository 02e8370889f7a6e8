//! Server-side sessions. The cookie carries a random 256-bit token; the store keeps only the
//! token's SHA-256, so a leaked store file holds no usable cookie. Sessions slide: each use
//! pushes the expiry out, and a session unused for the timeout is gone. Each session records a
//! fingerprint of the password it was made with, so changing the password revokes them all.
//!
//! Backends sit behind [`SessionStore`]: [`MemoryStore`] for tests, [`FileStore`] (the default,
//! persisted in the user-data-dir so a restart keeps people logged in); Redis and PostgreSQL
//! can implement the same trait for multi-user mode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::util::{hex, now_ms, random_bytes, sha256};

/// The store key of a session: hex SHA-256 of the cookie token.
pub type SessionKey = String;

/// A predicate over stored sessions, for [`SessionStore::retain`].
pub type Keep = Box<dyn Fn(&str, &SessionRecord) -> bool + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Unix ms.
    pub created: u64,
    /// Unix ms of the last authenticated request (updated at most once a minute).
    pub last_seen: u64,
    /// [`crate::auth::password::PasswordMethod::fingerprint`] salted with the key.
    pub password_fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store I/O failed for {}: {}", path.display(), crate::errno::describe(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<StoreError> for crate::error::AppError {
    fn from(e: StoreError) -> crate::error::AppError {
        crate::error::AppError::internal(e)
    }
}

/// Where session records live. Implementations must be cheap on `get`: it runs on every
/// authenticated request, including every proxied one.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert(&self, key: SessionKey, record: SessionRecord) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Records use; may be persisted lazily (see [`SessionStore::flush`]).
    async fn touch(&self, key: &str, now_ms: u64) -> Result<(), StoreError>;
    async fn remove(&self, key: &str) -> Result<(), StoreError>;
    /// Drops every record for which `keep` is false; returns how many were dropped.
    async fn retain(&self, keep: Keep) -> Result<usize, StoreError>;
    /// Every session's key and `last_seen`.
    async fn ages(&self) -> Result<Vec<(SessionKey, u64)>, StoreError>;
    /// Persists lazily recorded changes. Called periodically and at shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}

/// Sessions in a map, gone when the process exits.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<SessionKey, SessionRecord>>,
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, key: SessionKey, record: SessionRecord) -> Result<(), StoreError> {
        self.map.lock().unwrap().insert(key, record);
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.map.lock().unwrap().get(key).cloned())
    }
    async fn touch(&self, key: &str, now_ms: u64) -> Result<(), StoreError> {
        if let Some(r) = self.map.lock().unwrap().get_mut(key) {
            r.last_seen = now_ms;
        }
        Ok(())
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    async fn retain(&self, keep: Keep) -> Result<usize, StoreError> {
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|k, r| keep(k, r));
        Ok(before - map.len())
    }
    async fn ages(&self) -> Result<Vec<(SessionKey, u64)>, StoreError> {
        Ok(self.map.lock().unwrap().iter().map(|(k, r)| (k.clone(), r.last_seen)).collect())
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Default, Serialize, Deserialize)]
struct FileContents {
    version: u32,
    sessions: HashMap<SessionKey, SessionRecord>,
}

/// Sessions held in memory and persisted to one JSON file (mode 0600) with atomic replaces.
/// Creations and revocations are written before the call returns; `touch` only marks the
/// store dirty, and [`SessionStore::flush`] writes it (periodically and at shutdown).
///
/// Writes are coalesced: each change gets a version number, and a caller waiting for the file
/// to hold its change returns as soon as any write has covered it, so a burst of logins is a
/// few writes, not one per login.
pub struct FileStore {
    path: PathBuf,
    state: Mutex<FileState>,
    /// Held while writing; holds the version the file has. Serialises writers, so an older
    /// snapshot never lands after a newer one.
    written: tokio::sync::Mutex<u64>,
    /// Times the file was written (tests and observability).
    writes: std::sync::atomic::AtomicU64,
}

struct FileState {
    sessions: HashMap<SessionKey, SessionRecord>,
    /// The version of `sessions`: one more at every change.
    version: u64,
}

impl FileStore {
    /// Loads the store. A corrupt file is moved aside (never silently lost) and the store starts
    /// empty; a missing file is an empty store.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        let sessions = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<FileContents>(&bytes) {
                Ok(c) => c.sessions,
                Err(e) => {
                    let aside = path.with_extension(format!("corrupt-{}", now_ms()));
                    std::fs::rename(path, &aside).map_err(io)?;
                    tracing::warn!(
                        "Session store {} was unreadable ({e}); moved it to {} and started empty",
                        path.display(),
                        aside.display()
                    );
                    HashMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(io(e)),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        Ok(FileStore {
            path: path.to_path_buf(),
            state: Mutex::new(FileState { sessions, version: 0 }),
            written: tokio::sync::Mutex::new(0),
            writes: Default::default(),
        })
    }

    /// Applies `change` and returns its version.
    fn change(&self, change: impl FnOnce(&mut HashMap<SessionKey, SessionRecord>) -> bool) -> Option<u64> {
        let mut st = self.state.lock().unwrap();
        if change(&mut st.sessions) {
            st.version += 1;
            Some(st.version)
        } else {
            None
        }
    }

    /// Returns once the file holds version `version` or later.
    async fn persist(&self, version: u64) -> Result<(), StoreError> {
        let mut written = self.written.lock().await;
        if *written >= version {
            // Another caller's write covered ours while we waited.
            return Ok(());
        }
        let (bytes, snapshot) = {
            let st = self.state.lock().unwrap();
            let bytes = serde_json::to_vec(&FileContents { version: 1, sessions: st.sessions.clone() })
                .expect("session records serialise");
            (bytes, st.version)
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || crate::util::atomic_write(&path, &bytes, 0o600))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result.map_err(|source| StoreError::Io { path: self.path.clone(), source })?;
        *written = snapshot;
        Ok(())
    }

    /// How many times the file has been written.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl SessionStore for FileStore {
    async fn insert(&self, key: SessionKey, record: SessionRecord) -> Result<(), StoreError> {
        let version = self.change(|s| {
            s.insert(key, record);
            true
        });
        self.persist(version.expect("an insert is a change")).await
    }
    async fn get(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.state.lock().unwrap().sessions.get(key).cloned())
    }
    async fn touch(&self, key: &str, now_ms: u64) -> Result<(), StoreError> {
        // Written lazily, by the next write or flush.
        self.change(|s| s.get_mut(key).map(|r| r.last_seen = now_ms).is_some());
        Ok(())
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self.change(|s| s.remove(key).is_some()) {
            Some(version) => self.persist(version).await,
            None => Ok(()),
        }
    }
    async fn retain(&self, keep: Keep) -> Result<usize, StoreError> {
        let mut dropped = 0;
        let version = self.change(|s| {
            let before = s.len();
            s.retain(|k, r| keep(k, r));
            dropped = before - s.len();
            dropped > 0
        });
        if let Some(version) = version {
            self.persist(version).await?;
        }
        Ok(dropped)
    }
    async fn ages(&self) -> Result<Vec<(SessionKey, u64)>, StoreError> {
        Ok(self.state.lock().unwrap().sessions.iter().map(|(k, r)| (k.clone(), r.last_seen)).collect())
    }
    async fn flush(&self) -> Result<(), StoreError> {
        let version = self.state.lock().unwrap().version;
        self.persist(version).await
    }
}

/// A new session's cookie token and the key it is stored under.
pub struct NewSession {
    pub token: String,
    pub key: SessionKey,
}

/// Session policy on top of a store: creation, validation with sliding expiry and password
/// fingerprints, revocation.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    timeout_ms: u64,
    touch_every_ms: u64,
    fingerprint: Arc<dyn Fn(&str) -> String + Send + Sync>,
    derived: Arc<Mutex<HashMap<String, Arc<Derived>>>>,
}

/// What a cookie token derives to: its store key and the current password's fingerprint for
/// that key. Both are SHA-256 digests, together most of the cost of checking a session (see
/// `benches/proxy.rs` for what a proxied request costs), and both are pure functions of the token for the life of the process, so [`Sessions::validate`] keeps
/// them by token. This holds no session state: whether the session exists, its expiry and its
/// revocation are read from the store on every request.
struct Derived {
    key: SessionKey,
    fingerprint: String,
}

/// Tokens whose derivations are kept. Only tokens of sessions found in the store are added, so
/// made-up cookies cannot fill it; past this many (far more than one person's browsers) it
/// starts over.
const DERIVED_MAX: usize = 256;

/// Record use at most this often, so the hot path rarely writes anything; and at least ten
/// times per timeout, so a session in use never expires however short the timeout.
const TOUCH_EVERY_MS: u64 = 60_000;
/// Sessions kept at most: a new login beyond this revokes the least recently used one, so the
/// store (rewritten at each change) cannot grow without bound.
pub const MAX_SESSIONS: usize = 100;

impl Sessions {
    /// `fingerprint(key)` must give the current password's fingerprint salted with `key`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        timeout: Duration,
        fingerprint: Arc<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Sessions {
        let timeout_ms = timeout.as_millis() as u64;
        let touch_every_ms = (timeout_ms / 10).min(TOUCH_EVERY_MS);
        Sessions { store, timeout_ms, touch_every_ms, fingerprint, derived: Default::default() }
    }

    pub fn key_of(token: &str) -> SessionKey {
        hex(&sha256(token.as_bytes()))
    }

    pub async fn create(&self) -> Result<NewSession, StoreError> {
        // Room for one more: the least recently used go.
        let mut ages = self.store.ages().await?;
        if ages.len() >= MAX_SESSIONS {
            ages.sort_by_key(|(_, last_seen)| *last_seen);
            let excess = ages.len() + 1 - MAX_SESSIONS;
            let oldest: std::collections::HashSet<SessionKey> = ages.into_iter().take(excess).map(|(k, _)| k).collect();
            let revoked = self.store.retain(Box::new(move |k, _| !oldest.contains(k))).await?;
            self.derived.lock().unwrap().clear();
            tracing::info!("Revoked the {revoked} least recently used session(s) to keep at most {MAX_SESSIONS}");
        }
        let token = hex(&random_bytes::<32>());
        let key = Self::key_of(&token);
        let now = now_ms();
        let record = SessionRecord { created: now, last_seen: now, password_fingerprint: (self.fingerprint)(&key) };
        self.store.insert(key.clone(), record).await?;
        Ok(NewSession { token, key })
    }

    /// The store key of the live session `token` names, if it does; records the use. Invalid
    /// sessions are removed.
    pub async fn validate(&self, token: &str) -> Result<Option<SessionKey>, StoreError> {
        // Tokens are 64 hex characters; anything else cannot be ours.
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let known = self.derived.lock().unwrap().get(token).cloned();
        let key = match &known {
            Some(d) => d.key.clone(),
            None => Self::key_of(token),
        };
        let Some(record) = self.store.get(&key).await? else {
            self.derived.lock().unwrap().remove(token);
            return Ok(None);
        };
        let derived = match known {
            Some(d) => d,
            None => {
                let d = Arc::new(Derived { fingerprint: (self.fingerprint)(&key), key });
                let mut memo = self.derived.lock().unwrap();
                if memo.len() >= DERIVED_MAX {
                    memo.clear();
                }
                memo.insert(token.to_string(), d.clone());
                d
            }
        };
        let now = now_ms();
        if !fresh(self.timeout_ms, &record, now) || record.password_fingerprint != derived.fingerprint {
            self.derived.lock().unwrap().remove(token);
            self.store.remove(&derived.key).await?;
            return Ok(None);
        }
        if now.saturating_sub(record.last_seen) >= self.touch_every_ms {
            self.store.touch(&derived.key, now).await?;
        }
        Ok(Some(derived.key.clone()))
    }

    pub async fn revoke(&self, token: &str) -> Result<(), StoreError> {
        self.derived.lock().unwrap().remove(token);
        self.store.remove(&Self::key_of(token)).await
    }

    /// Drops expired sessions and those made with another password. Run at start-up and
    /// periodically.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let (timeout_ms, fingerprint) = (self.timeout_ms, self.fingerprint.clone());
        self.store.retain(Box::new(move |k, r| valid(timeout_ms, &*fingerprint, k, r, now))).await
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// How many sessions are unexpired (for the metrics; one revoked by a password change
    /// counts until the next maintenance drops it).
    pub async fn live(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let ages = self.store.ages().await?;
        Ok(ages.iter().filter(|(_, last_seen)| now.saturating_sub(*last_seen) < self.timeout_ms).count() as u64)
    }

    /// Sessions record use lazily and expire quietly: now and then (every
    /// [`MAINTENANCE_EVERY`]) drop the expired ones and write the rest out, until `shutdown`.
    pub async fn maintain(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.prune().await {
                tracing::warn!("{e}");
            }
            if let Err(e) = self.flush().await {
                tracing::warn!("{e}");
            }
        }
    }
}

/// How often expired sessions are dropped and session use is written out.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

fn valid(
    timeout_ms: u64,
    fingerprint: &(dyn Fn(&str) -> String + Send + Sync),
    key: &str,
    r: &SessionRecord,
    now: u64,
) -> bool {
    fresh(timeout_ms, r, now) && r.password_fingerprint == fingerprint(key)
}

/// Used within the timeout.
fn fresh(timeout_ms: u64, r: &SessionRecord, now: u64) -> bool {
    now.saturating_sub(r.last_seen) < timeout_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(store: Arc<dyn SessionStore>, password: &'static str, timeout: Duration) -> Sessions {
        Sessions::new(store, timeout, Arc::new(move |key: &str| format!("{password}:{key}")))
    }

    #[tokio::test]
    async fn create_validate_revoke() {
        let s = sessions(Arc::new(MemoryStore::default()), "pw", Duration::from_secs(60));
        let new = s.create().await.unwrap();
        assert_eq!(new.token.len(), 64);
        assert!(s.validate(&new.token).await.unwrap().is_some());
        assert!(s.validate(&hex(&random_bytes::<32>())).await.unwrap().is_none());
        assert!(s.validate("short").await.unwrap().is_none());
        s.revoke(&new.token).await.unwrap();
        assert!(s.validate(&new.token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn derivations_are_kept_only_for_stored_sessions() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        let s = sessions(store.clone(), "pw", Duration::from_secs(60));
        for _ in 0..3 {
            assert!(s.validate(&hex(&random_bytes::<32>())).await.unwrap().is_none());
        }
        assert_eq!(s.derived.lock().unwrap().len(), 0, "made-up tokens are not kept");
        let token = s.create().await.unwrap().token;
        assert!(s.validate(&token).await.unwrap().is_some());
        assert!(s.validate(&token).await.unwrap().is_some());
        assert_eq!(s.derived.lock().unwrap().len(), 1);
        // Removed from the store behind the memo's back (another process, a prune): refused.
        store.remove(&Sessions::key_of(&token)).await.unwrap();
        assert!(s.validate(&token).await.unwrap().is_none());
        assert_eq!(s.derived.lock().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn password_change_revokes() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        let old = sessions(store.clone(), "old", Duration::from_secs(60));
        let token = old.create().await.unwrap().token;
        let new = sessions(store.clone(), "new", Duration::from_secs(60));
        assert!(new.validate(&token).await.unwrap().is_none());
        assert!(old.validate(&token).await.unwrap().is_none(), "the stale session was removed");
    }

    #[tokio::test]
    async fn expiry_slides() {
        let store = Arc::new(MemoryStore::default());
        let s = sessions(store.clone(), "pw", Duration::from_secs(3600));
        let new = s.create().await.unwrap();
        // Pretend the session was last used 59 minutes ago: still valid, and the use is recorded.
        store.touch(&new.key, now_ms() - 59 * 60_000).await.unwrap();
        assert!(s.validate(&new.token).await.unwrap().is_some());
        assert!(store.get(&new.key).await.unwrap().unwrap().last_seen > now_ms() - 5_000);
        // Unused for longer than the timeout: gone.
        store.touch(&new.key, now_ms() - 61 * 60_000).await.unwrap();
        assert!(s.validate(&new.token).await.unwrap().is_none());
        assert!(store.get(&new.key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn logins_are_capped_and_their_writes_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(&dir.path().join("sessions.json")).unwrap());
        let s = sessions(store.clone(), "pw", Duration::from_secs(600));
        let first = s.create().await.unwrap().token;
        // Many logins at once: far fewer writes than logins.
        let logins: Vec<_> = (0..60).map(|_| s.create()).collect();
        let tokens: Vec<String> =
            futures_util::future::join_all(logins).await.into_iter().map(|n| n.unwrap().token).collect();
        assert!(store.writes() < 40, "{} writes for 61 logins", store.writes());
        for t in &tokens {
            assert!(s.validate(t).await.unwrap().is_some());
        }
        // Past the cap, the least recently used go, and only those.
        store.touch(&Sessions::key_of(&first), 1).await.unwrap();
        for _ in 0..MAX_SESSIONS {
            s.create().await.unwrap();
        }
        assert_eq!(store.ages().await.unwrap().len(), MAX_SESSIONS);
        assert!(s.validate(&first).await.unwrap().is_none(), "the least recently used went first");
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("sessions.json")).unwrap()).unwrap();
        assert_eq!(on_disk["sessions"].as_object().unwrap().len(), MAX_SESSIONS);
    }

    #[tokio::test]
    async fn use_is_recorded_often_enough_for_short_timeouts() {
        let store = Arc::new(MemoryStore::default());
        let s = sessions(store.clone(), "pw", Duration::from_secs(10));
        let new = s.create().await.unwrap();
        // Used 1.5 s ago: recorded now (a tenth of the timeout), not a minute later.
        store.touch(&new.key, now_ms() - 1_500).await.unwrap();
        assert!(s.validate(&new.token).await.unwrap().is_some());
        assert!(store.get(&new.key).await.unwrap().unwrap().last_seen > now_ms() - 1_000);
    }

    #[tokio::test]
    async fn file_store_survives_reopen_and_corruption() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let token = {
            let s = sessions(Arc::new(FileStore::open(&path).unwrap()), "pw", Duration::from_secs(60));
            s.create().await.unwrap().token
        };
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&token), "only hashes are stored");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let s = sessions(Arc::new(FileStore::open(&path).unwrap()), "pw", Duration::from_secs(60));
        assert!(s.validate(&token).await.unwrap().is_some());

        std::fs::write(&path, b"{not json").unwrap();
        let s = sessions(Arc::new(FileStore::open(&path).unwrap()), "pw", Duration::from_secs(60));
        assert!(s.validate(&token).await.unwrap().is_none());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"{not json");
    }
}
