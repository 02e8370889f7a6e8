//! Multi-user sessions: a store trait with three backends ([`MemorySessions`], the user
//! database, [`redis::RedisSessions`]) and the policy on top ([`UserSessions`]).
//!
//! A session is today's token (256 random bits in the cookie; the store keeps only its SHA-256,
//! the *key*) with an owner, a public id (for listing and revoking; it cannot sign anyone in),
//! the client's address and user agent, and times. Expiry slides: each use moves it to
//! `last use + ttl`, but use is written at most every tenth of the ttl (and at least every
//! minute), so the hot path rarely writes.
//!
//! Validated sessions are cached in the process for [`CACHE_FOR`], so a proxied request costs
//! no round trip to Redis or the database; a revocation made by another front is therefore seen
//! within that time, and one made here at once.

pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::store::StoreError;
use crate::util::{hex, random_bytes, sha256};

/// How long a validated session is trusted without asking the store again: revocation on
/// another front takes effect within this (well under the promised second).
pub const CACHE_FOR: Duration = Duration::from_millis(500);

/// Cached sessions at most; past this the cache starts over.
const CACHE_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Public id: 128 random bits, hex.
    pub id: String,
    /// SHA-256 of the cookie token, hex.
    pub key: String,
    pub user_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Unix ms, UTC.
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

/// Where sessions live. Every method treats an expired session as absent.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    fn describe(&self) -> String;
    async fn insert(&self, record: &SessionRecord) -> Result<(), StoreError>;
    async fn get(&self, key: &str, now: i64) -> Result<Option<SessionRecord>, StoreError>;
    /// Records use: new `last_seen_at` and `expires_at`.
    async fn touch(&self, key: &str, last_seen_at: i64, expires_at: i64) -> Result<(), StoreError>;
    /// Removes the session with this key; false when there was none.
    async fn remove(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes `user_id`'s session `id`: its key, or `None` when they have none by that id.
    async fn remove_by_id(&self, user_id: &str, id: &str) -> Result<Option<String>, StoreError>;
    /// Removes all of `user_id`'s sessions; their keys.
    async fn remove_all_of(&self, user_id: &str) -> Result<Vec<String>, StoreError>;
    /// `user_id`'s live sessions, oldest first.
    async fn of_user(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError>;
    /// How many live sessions there are in all.
    async fn count(&self, now: i64) -> Result<u64, StoreError>;
    /// Drops expired sessions (where the backend does not expire them itself).
    async fn prune(&self, now: i64) -> Result<u64, StoreError>;
}

/// Sessions in a map, gone when the process exits (for one front and for tests).
#[derive(Default)]
pub struct MemorySessions {
    map: Mutex<HashMap<String, SessionRecord>>,
}

#[async_trait]
impl SessionStore for MemorySessions {
    fn describe(&self) -> String {
        "the in-memory session store".to_string()
    }
    async fn insert(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.map.lock().unwrap().insert(record.key.clone(), record.clone());
        Ok(())
    }
    async fn get(&self, key: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.map.lock().unwrap().get(key).filter(|r| r.expires_at > now).cloned())
    }
    async fn touch(&self, key: &str, last_seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
        if let Some(r) = self.map.lock().unwrap().get_mut(key) {
            r.last_seen_at = last_seen_at;
            r.expires_at = expires_at;
        }
        Ok(())
    }
    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.map.lock().unwrap().remove(key).is_some())
    }
    async fn remove_by_id(&self, user_id: &str, id: &str) -> Result<Option<String>, StoreError> {
        let mut map = self.map.lock().unwrap();
        let key = map.values().find(|r| r.user_id == user_id && r.id == id).map(|r| r.key.clone());
        if let Some(k) = &key {
            map.remove(k);
        }
        Ok(key)
    }
    async fn remove_all_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let mut map = self.map.lock().unwrap();
        let keys: Vec<String> = map.values().filter(|r| r.user_id == user_id).map(|r| r.key.clone()).collect();
        for k in &keys {
            map.remove(k);
        }
        Ok(keys)
    }
    async fn of_user(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError> {
        let mut v: Vec<SessionRecord> =
            self.map.lock().unwrap().values().filter(|r| r.user_id == user_id && r.expires_at > now).cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
    async fn count(&self, now: i64) -> Result<u64, StoreError> {
        Ok(self.map.lock().unwrap().values().filter(|r| r.expires_at > now).count() as u64)
    }
    async fn prune(&self, now: i64) -> Result<u64, StoreError> {
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|_, r| r.expires_at > now);
        Ok((before - map.len()) as u64)
    }
}

/// A new session: the cookie's token (shown once, to the browser) and its record.
pub struct NewSession {
    pub token: String,
    pub record: SessionRecord,
}

struct Cached {
    record: SessionRecord,
    at: Instant,
}

/// Session policy over a store: creation within the per-user limit, validation with sliding
/// expiry and a short cache, revocation.
pub struct UserSessions {
    store: Arc<dyn SessionStore>,
    ttl_ms: i64,
    touch_every_ms: i64,
    max_per_user: usize,
    /// By cookie token.
    cache: Mutex<HashMap<String, Cached>>,
}

impl UserSessions {
    pub fn new(store: Arc<dyn SessionStore>, ttl: Duration, max_per_user: usize) -> UserSessions {
        let ttl_ms = ttl.as_millis() as i64;
        UserSessions {
            store,
            ttl_ms,
            touch_every_ms: (ttl_ms / 10).min(60_000),
            max_per_user,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Live sessions a user may have at once.
    pub fn max_per_user(&self) -> usize {
        self.max_per_user
    }

    pub fn key_of(token: &str) -> String {
        hex(&sha256(token.as_bytes()))
    }

    /// A new session for `user_id`. When they already have the most live sessions allowed, the
    /// oldest go first; their records are returned for the audit.
    pub async fn create(
        &self,
        user_id: &str,
        ip: Option<String>,
        user_agent: Option<String>,
        now: i64,
    ) -> Result<(NewSession, Vec<SessionRecord>), StoreError> {
        let live = self.store.of_user(user_id, now).await?;
        let excess = (live.len() + 1).saturating_sub(self.max_per_user);
        let mut revoked = vec![];
        for old in live.into_iter().take(excess) {
            if self.store.remove(&old.key).await? {
                self.forget_key(&old.key);
                revoked.push(old);
            }
        }
        let token = hex(&random_bytes::<32>());
        let record = SessionRecord {
            id: hex(&random_bytes::<16>()),
            key: Self::key_of(&token),
            user_id: user_id.to_string(),
            ip,
            user_agent: user_agent.map(|ua| ua.chars().take(256).collect()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.ttl_ms,
        };
        self.store.insert(&record).await?;
        Ok((NewSession { token, record }, revoked))
    }

    /// The live session `token` names, recording its use.
    pub async fn validate(&self, token: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let cached = {
            let cache = self.cache.lock().unwrap();
            cache.get(token).filter(|c| c.at.elapsed() < CACHE_FOR).map(|c| (c.at, c.record.clone()))
        };
        // When the store last vouched for the record: a cache hit keeps its entry's time (dating
        // it anew after the touch below would let a session revoked on another front outlive
        // CACHE_FOR here); a fresh read counts from before it started.
        let vouched_at = cached.as_ref().map_or_else(Instant::now, |(at, _)| *at);
        let mut record = match cached {
            Some((_, r)) => r,
            None => match self.store.get(&Self::key_of(token), now).await? {
                Some(r) => r,
                None => {
                    self.cache.lock().unwrap().remove(token);
                    return Ok(None);
                }
            },
        };
        if record.expires_at <= now {
            self.cache.lock().unwrap().remove(token);
            return Ok(None);
        }
        if now - record.last_seen_at >= self.touch_every_ms {
            record.last_seen_at = now;
            record.expires_at = now + self.ttl_ms;
            self.store.touch(&record.key, record.last_seen_at, record.expires_at).await?;
        }
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_MAX && !cache.contains_key(token) {
            cache.clear();
        }
        cache.insert(token.to_string(), Cached { record: record.clone(), at: vouched_at });
        Ok(Some(record))
    }

    /// Revokes the session `token` names (sign-out); its record when there was one.
    pub async fn revoke_token(&self, token: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        self.cache.lock().unwrap().remove(token);
        let key = Self::key_of(token);
        let record = self.store.get(&key, now).await?;
        self.store.remove(&key).await?;
        Ok(record)
    }

    /// Revokes `user_id`'s session `id`; false when they have none by that id.
    pub async fn revoke_id(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        match self.store.remove_by_id(user_id, id).await? {
            Some(key) => {
                self.forget_key(&key);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Revokes every session of `user_id`; how many there were.
    pub async fn revoke_all(&self, user_id: &str) -> Result<usize, StoreError> {
        let keys = self.store.remove_all_of(user_id).await?;
        self.cache.lock().unwrap().retain(|_, c| c.record.user_id != user_id);
        Ok(keys.len())
    }

    pub async fn of_user(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError> {
        self.store.of_user(user_id, now).await
    }

    fn forget_key(&self, key: &str) {
        self.cache.lock().unwrap().retain(|_, c| c.record.key != key);
    }

    /// Drops expired sessions now and then, until `shutdown`.
    pub async fn maintain(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.store.prune(crate::util::now_ms() as i64).await {
                tracing::warn!("Pruning expired sessions: {e}");
            }
            let mut cache = self.cache.lock().unwrap();
            cache.retain(|_, c| c.at.elapsed() < CACHE_FOR);
        }
    }
}
