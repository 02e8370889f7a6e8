//! Sessions in Redis, shared by every front.
//!
//! Keys, under the configured prefix:
//! * `session:<key>`: the record as JSON, expiring (`PXAT`) when the session does, so Redis
//!   drops an unused session by itself;
//! * `user-sessions:<user id>`: a hash from session id to key, the per-user index. A hash has
//!   no duplicates; members whose session Redis has dropped are removed whenever the index is
//!   read, and the index itself expires with the user's longest-lived session (its expiry is only
//!   ever moved later).
//!
//! One multiplexed connection serves every request; [`Link`] replaces it after any error that
//! says the connection is gone (I/O, timeout, dropped, refused), so the store heals by itself
//! once Redis is back. While Redis is away every call fails within [`TIMEOUT`] as
//! [`StoreError::Unavailable`]. (redis' own `ConnectionManager` reconnects only on some of
//! these errors: after a timeout or a write to a closed socket it kept failing for good.)

use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::{SessionRecord, SessionStore};
use crate::multiuser::config::RedisConfig;
use crate::multiuser::store::StoreError;

/// Connecting and each command give up after this.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// After a failed attempt to connect, calls within this fail at once rather than each waiting
/// for its own attempt.
const RETRY_AFTER: Duration = Duration::from_millis(250);

pub struct RedisSessions {
    link: Link,
    prefix: String,
    address: String,
}

/// The connection, made again when it breaks.
struct Link {
    client: redis::Client,
    config: AsyncConnectionConfig,
    state: tokio::sync::Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// The live connection and its generation (so that a late failure of an old connection
    /// does not throw away its replacement).
    current: Option<(u64, MultiplexedConnection)>,
    generation: u64,
    /// The last failed attempt to connect: when, and why.
    failed: Option<(Instant, redis::RedisError)>,
}

impl Link {
    /// The live connection, connecting first if there is none.
    async fn get(&self) -> Result<(u64, MultiplexedConnection), redis::RedisError> {
        let mut state = self.state.lock().await;
        if let Some(current) = &state.current {
            return Ok(current.clone());
        }
        if let Some((at, e)) = &state.failed
            && at.elapsed() < RETRY_AFTER
        {
            return Err(e.clone());
        }
        match self.client.get_multiplexed_async_connection_with_config(&self.config).await {
            Ok(conn) => {
                state.generation += 1;
                let current = (state.generation, conn);
                state.current = Some(current.clone());
                state.failed = None;
                Ok(current)
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Forgets connection `generation` after an error that says it is gone.
    async fn broken(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.current.as_ref().is_some_and(|(g, _)| *g == generation) {
            state.current = None;
        }
    }
}

/// Whether the error says the connection (or Redis) is gone, rather than that a command failed.
fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisSessions {
    /// Connects (once, now: an unreachable server is a start-up error naming it).
    pub async fn connect(cfg: &RedisConfig) -> Result<RedisSessions, StoreError> {
        let address = cfg.address();
        let unavailable = |e: redis::RedisError| StoreError::Unavailable {
            what: format!("Redis at {address}"),
            detail: describe(&e),
        };
        let client = redis::Client::open(cfg.connection_url().expose()).map_err(unavailable)?;
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT));
        let link = Link { client, config, state: Default::default() };
        link.get().await.map_err(unavailable)?;
        Ok(RedisSessions { link, prefix: cfg.prefix.clone(), address })
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}session:{key}", self.prefix)
    }

    fn index_key(&self, user_id: &str) -> String {
        format!("{}user-sessions:{user_id}", self.prefix)
    }

    fn fail(&self, e: redis::RedisError) -> StoreError {
        if is_unavailable(&e) {
            StoreError::Unavailable { what: format!("Redis at {}", self.address), detail: describe(&e) }
        } else {
            StoreError::Other(format!("Redis at {}: {}", self.address, describe(&e)))
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let (generation, mut conn) = self.link.get().await.map_err(|e| self.fail(e))?;
        let result = cmd.query_async(&mut conn).await;
        self.settle(generation, result).await
    }

    async fn query_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let (generation, mut conn) = self.link.get().await.map_err(|e| self.fail(e))?;
        let result = pipe.query_async(&mut conn).await;
        self.settle(generation, result).await
    }

    async fn settle<T>(&self, generation: u64, result: redis::RedisResult<T>) -> Result<T, StoreError> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_unavailable(&e) {
                    self.link.broken(generation).await;
                }
                Err(self.fail(e))
            }
        }
    }

    /// The records of these keys (`None` for gone ones).
    async fn records(&self, keys: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.session_key(k));
        }
        let raw: Vec<Option<String>> = self.query(&cmd).await?;
        Ok(raw.into_iter().map(|r| r.and_then(|json| serde_json::from_str(&json).ok())).collect())
    }
}

/// Moves the expiry of `key` to `at` unless it is already later: the index lives as long as
/// its longest-lived session, whatever order sessions are added or extended in. (`GT` alone
/// would never set it: a key without expiry counts as expiring never.)
fn extend_expiry(pipe: &mut redis::Pipeline, key: &str, at: i64) {
    pipe.cmd("PEXPIREAT").arg(key).arg(at).arg("NX").ignore().cmd("PEXPIREAT").arg(key).arg(at).arg("GT").ignore();
}

/// The error's text without the command it was for.
fn describe(e: &redis::RedisError) -> String {
    e.to_string()
}

#[async_trait]
impl SessionStore for RedisSessions {
    fn describe(&self) -> String {
        format!("Redis at {}", self.address)
    }

    async fn insert(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(r).expect("session records serialise");
        let index = self.index_key(&r.user_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.session_key(&r.key))
            .arg(json)
            .arg("PXAT")
            .arg(r.expires_at)
            .ignore()
            .cmd("HSET")
            .arg(&index)
            .arg(&r.id)
            .arg(&r.key)
            .ignore();
        extend_expiry(&mut pipe, &index, r.expires_at);
        self.query_pipe::<()>(&pipe).await
    }

    async fn get(&self, key: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        let raw: Option<String> = self.query(redis::cmd("GET").arg(self.session_key(key))).await?;
        Ok(raw.and_then(|json| serde_json::from_str::<SessionRecord>(&json).ok()).filter(|r| r.expires_at > now))
    }

    async fn touch(&self, key: &str, last_seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
        let Some(mut r) = self.get(key, i64::MIN).await? else { return Ok(()) };
        r.last_seen_at = last_seen_at;
        r.expires_at = expires_at;
        let json = serde_json::to_string(&r).expect("session records serialise");
        let index = self.index_key(&r.user_id);
        let mut pipe = redis::pipe();
        // XX: a session revoked meanwhile stays revoked.
        pipe.atomic().cmd("SET").arg(self.session_key(key)).arg(json).arg("PXAT").arg(expires_at).arg("XX").ignore();
        extend_expiry(&mut pipe, &index, expires_at);
        self.query_pipe::<()>(&pipe).await
    }

    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let Some(r) = self.get(key, i64::MIN).await? else { return Ok(false) };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.session_key(key))
            .cmd("HDEL")
            .arg(self.index_key(&r.user_id))
            .arg(&r.id)
            .ignore();
        let (deleted,): (u64,) = self.query_pipe(&pipe).await?;
        Ok(deleted > 0)
    }

    async fn remove_by_id(&self, user_id: &str, id: &str) -> Result<Option<String>, StoreError> {
        let index = self.index_key(user_id);
        let key: Option<String> = self.query(redis::cmd("HGET").arg(&index).arg(id)).await?;
        let Some(key) = key else { return Ok(None) };
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(self.session_key(&key)).cmd("HDEL").arg(&index).arg(id).ignore();
        let (deleted,): (u64,) = self.query_pipe(&pipe).await?;
        Ok((deleted > 0).then_some(key))
    }

    async fn remove_all_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let index = self.index_key(user_id);
        let keys: Vec<String> = self.query(redis::cmd("HVALS").arg(&index)).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in &keys {
            pipe.cmd("DEL").arg(self.session_key(k)).ignore();
        }
        pipe.cmd("DEL").arg(&index).ignore();
        self.query_pipe::<()>(&pipe).await?;
        Ok(keys)
    }

    async fn of_user(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.index_key(user_id);
        let pairs: Vec<(String, String)> = self.query(redis::cmd("HGETALL").arg(&index)).await?;
        let keys: Vec<String> = pairs.iter().map(|(_, k)| k.clone()).collect();
        let records = self.records(&keys).await?;
        let mut live = vec![];
        let mut stale = vec![];
        for ((id, _), record) in pairs.into_iter().zip(records) {
            match record {
                Some(r) if r.user_id == user_id => {
                    // Expired by `now` but still in Redis (this front's clock may run ahead):
                    // not listed, but kept in the index until Redis drops the session, so a
                    // session another front extends meanwhile stays revocable.
                    if r.expires_at > now {
                        live.push(r);
                    }
                }
                _ => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(&index);
            for id in &stale {
                cmd.arg(id);
            }
            self.query::<()>(&cmd).await?;
        }
        live.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(live)
    }

    async fn count(&self, _now: i64) -> Result<u64, StoreError> {
        // SCAN, not KEYS: never blocks Redis. Expired keys are already gone.
        let pattern = format!("{}session:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, batch): (u64, Vec<String>) =
                self.query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000)).await?;
            n += batch.len() as u64;
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    async fn prune(&self, _now: i64) -> Result<u64, StoreError> {
        // Redis expires sessions itself; stale index members go when the index is read.
        Ok(0)
    }
}
