//! The one SQL implementation of [`UserStore`] and [`SessionStore`], expanded for each sqlx
//! backend by [`sql_store!`]. The statements are plain SQL both SQLite and PostgreSQL accept
//! (`$1` placeholders, `LIKE … ESCAPE`, BIGINT times, lower-cased unique columns); what differs
//! (connecting, migrations, error codes) stays in the backend's module.

use super::StoreError;

/// Columns of `users`, in the order [`user_from_row`](sql_store) reads them.
pub const USER_COLUMNS: &str = "id, username, email, password_hash, role, active, created_at, updated_at, last_login_at, password_changed_at, \
     os_uid";
pub const SESSION_COLUMNS: &str = "id, token_hash, user_id, ip, user_agent, created_at, last_seen_at, expires_at";
pub const TOKEN_COLUMNS: &str = "id, user_id, name, token_hash, created_at, last_used_at";
pub const AUDIT_COLUMNS: &str = "id, at, event_type, status, user_id, username, actor, ip, details";
pub const REGISTRY_COLUMNS: &str = "user_id, front_id, host, address, pgid, started_at, last_activity_at";

/// `%text%` for `LIKE … ESCAPE '\'`, with the pattern characters in `text` taken literally.
pub fn contains_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Maps a driver error: unique violations name their field, lost connections are
/// [`StoreError::Unavailable`], the rest is [`StoreError::Other`].
pub fn map_error(what: &str, e: sqlx::Error, unavailable_code: impl Fn(&str) -> bool) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // SQLite names the column (`users.email`), PostgreSQL the constraint (`users_email_key`).
            let text = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
            if text.contains("email") {
                StoreError::Conflict("email")
            } else if text.contains("username") {
                StoreError::Conflict("username")
            } else {
                // A random id or token hash that collided: not the client's fault to fix.
                StoreError::Other(format!("{what}: {e}"))
            }
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| unavailable_code(&c)) => {
            StoreError::Unavailable { what: what.to_string(), detail: db.message().to_string() }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable { what: what.to_string(), detail: e.to_string() },
        _ => StoreError::Other(format!("{what}: {e}")),
    }
}

/// Implements [`UserStore`](super::UserStore) and
/// [`SessionStore`](crate::multiuser::sessions::SessionStore) for `$store`, a struct with a
/// `pool: sqlx::Pool<$db>` field and a `fn fail(&self, sqlx::Error) -> StoreError`.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        use sqlx::Row as _;

        use $crate::multiuser::sessions::{SessionRecord, SessionStore};
        use $crate::multiuser::store::sql::{
            AUDIT_COLUMNS, REGISTRY_COLUMNS, SESSION_COLUMNS, TOKEN_COLUMNS, USER_COLUMNS, contains_pattern,
        };
        use $crate::multiuser::store::{
            ApiToken, AuditEvent, AuditQuery, FrontRecord, Role, StoreError, User, UserChange, UserQuery, UserStore,
            WorkspaceRecord,
        };

        type Row = <$db as sqlx::Database>::Row;

        fn user_from_row(row: &Row) -> Result<User, sqlx::Error> {
            let role: String = row.try_get(4)?;
            Ok(User {
                id: row.try_get(0)?,
                username: row.try_get(1)?,
                email: row.try_get(2)?,
                password_hash: row.try_get(3)?,
                role: Role::parse(&role).unwrap_or(Role::User),
                active: row.try_get(5)?,
                created_at: row.try_get(6)?,
                updated_at: row.try_get(7)?,
                last_login_at: row.try_get(8)?,
                password_changed_at: row.try_get(9)?,
                os_uid: row.try_get::<Option<i64>, _>(10)?.and_then(|u| u32::try_from(u).ok()),
            })
        }

        fn session_from_row(row: &Row) -> Result<SessionRecord, sqlx::Error> {
            Ok(SessionRecord {
                id: row.try_get(0)?,
                key: row.try_get(1)?,
                user_id: row.try_get(2)?,
                ip: row.try_get(3)?,
                user_agent: row.try_get(4)?,
                created_at: row.try_get(5)?,
                last_seen_at: row.try_get(6)?,
                expires_at: row.try_get(7)?,
            })
        }

        fn registry_from_row(row: &Row) -> Result<WorkspaceRecord, sqlx::Error> {
            Ok(WorkspaceRecord {
                user_id: row.try_get(0)?,
                front_id: row.try_get(1)?,
                host: row.try_get(2)?,
                address: row.try_get(3)?,
                pgid: row.try_get::<Option<i64>, _>(4)?.and_then(|p| i32::try_from(p).ok()),
                started_at: row.try_get(5)?,
                last_activity_at: row.try_get(6)?,
            })
        }

        fn token_from_row(row: &Row) -> Result<ApiToken, sqlx::Error> {
            Ok(ApiToken {
                id: row.try_get(0)?,
                user_id: row.try_get(1)?,
                name: row.try_get(2)?,
                token_hash: row.try_get(3)?,
                created_at: row.try_get(4)?,
                last_used_at: row.try_get(5)?,
            })
        }

        fn audit_from_row(row: &Row) -> Result<AuditEvent, sqlx::Error> {
            let details: String = row.try_get(8)?;
            Ok(AuditEvent {
                id: row.try_get(0)?,
                at: row.try_get(1)?,
                kind: row.try_get(2)?,
                status: row.try_get(3)?,
                user_id: row.try_get(4)?,
                username: row.try_get(5)?,
                actor: row.try_get(6)?,
                ip: row.try_get(7)?,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            })
        }

        #[async_trait::async_trait]
        impl UserStore for $store {
            fn describe(&self) -> String {
                self.what.clone()
            }

            async fn create_user(&self, u: &User) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO users (id, username, email, password_hash, role, active, created_at, updated_at, \
                     last_login_at, password_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&u.id)
                .bind(&u.username)
                .bind(&u.email)
                .bind(&u.password_hash)
                .bind(u.role.as_str())
                .bind(u.active)
                .bind(u.created_at)
                .bind(u.updated_at)
                .bind(u.last_login_at)
                .bind(u.password_changed_at)
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                row.map(|r| user_from_row(&r)).transpose().map_err(|e| self.fail(e))
            }

            async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                row.map(|r| user_from_row(&r)).transpose().map_err(|e| self.fail(e))
            }

            async fn list_users(&self, q: &UserQuery) -> Result<(Vec<User>, u64), StoreError> {
                let pattern = contains_pattern(&q.search.clone().unwrap_or_default().to_lowercase());
                let filter = "WHERE username LIKE $1 ESCAPE '\\' OR COALESCE(email, '') LIKE $1 ESCAPE '\\'";
                let sql = format!("SELECT {USER_COLUMNS} FROM users {filter} ORDER BY username LIMIT $2 OFFSET $3");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&pattern)
                    .bind(i64::from(q.limit))
                    .bind(i64::from(q.offset))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>().map_err(|e| self.fail(e))?;
                let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM users {filter}")))
                    .bind(&pattern)
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| self.fail(e))?;
                Ok((users, total as u64))
            }

            async fn count_users(&self) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| self.fail(e))?;
                Ok(n as u64)
            }

            async fn count_active_admins(&self) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM users WHERE role = 'admin' AND active")
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| self.fail(e))?;
                Ok(n as u64)
            }

            async fn update_user(&self, id: &str, c: &UserChange, now: i64) -> Result<User, StoreError> {
                // One statement: COALESCE keeps what the change leaves alone. `$2` says whether
                // the email changes at all (it may change to NULL).
                let sql = format!(
                    "UPDATE users SET \
                     email = CASE WHEN $2 THEN $3 ELSE email END, \
                     role = COALESCE($4, role), \
                     active = COALESCE($5, active), \
                     password_hash = COALESCE($6, password_hash), \
                     password_changed_at = CASE WHEN $6 IS NULL THEN password_changed_at ELSE $8 END, \
                     last_login_at = COALESCE($7, last_login_at), \
                     updated_at = CASE WHEN $9 THEN $8 ELSE updated_at END \
                     WHERE id = $1 RETURNING {USER_COLUMNS}"
                );
                let profile_change =
                    c.email.is_some() || c.role.is_some() || c.active.is_some() || c.password_hash.is_some();
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(c.email.is_some())
                    .bind(c.email.clone().flatten())
                    .bind(c.role.map(Role::as_str))
                    .bind(c.active)
                    .bind(c.password_hash.clone())
                    .bind(c.last_login_at)
                    .bind(now)
                    .bind(profile_change)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                match row {
                    Some(r) => user_from_row(&r).map_err(|e| self.fail(e)),
                    None => Err(StoreError::NotFound),
                }
            }

            async fn delete_user(&self, id: &str) -> Result<(), StoreError> {
                // Tokens and sessions go with it (ON DELETE CASCADE).
                let done = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            }

            async fn allocate_os_uid(
                &self,
                user_id: &str,
                range: (u32, u32),
                taken: &(dyn Fn(u32) -> bool + Send + Sync),
                now: i64,
            ) -> Result<u32, StoreError> {
                let (lo, hi) = (i64::from(range.0), i64::from(range.1));
                loop {
                    let user = self.user_by_id(user_id).await?.ok_or(StoreError::NotFound)?;
                    if let Some(uid) = user.os_uid {
                        return Ok(uid);
                    }
                    let row = sqlx::query("SELECT MAX(uid) FROM os_uids WHERE uid BETWEEN $1 AND $2")
                        .bind(lo)
                        .bind(hi)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| self.fail(e))?;
                    let last: Option<i64> = row.try_get(0).map_err(|e| self.fail(e))?;
                    let mut candidate = last.map_or(lo, |l| l + 1);
                    while candidate <= hi && taken(candidate as u32) {
                        candidate += 1;
                    }
                    if candidate > hi {
                        return Err(StoreError::Conflict("uid"));
                    }
                    // Whoever inserts the uid first has it; a loser looks again.
                    let won = sqlx::query(
                        "INSERT INTO os_uids (uid, user_id, allocated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(candidate)
                    .bind(user_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?
                    .rows_affected()
                        == 1;
                    if !won {
                        continue;
                    }
                    // Another front may have given the user one meanwhile: then theirs stands
                    // (the next loop reads it) and this one is simply never used.
                    sqlx::query("UPDATE users SET os_uid = $1 WHERE id = $2 AND os_uid IS NULL")
                        .bind(candidate)
                        .bind(user_id)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| self.fail(e))?;
                }
            }

            async fn set_os_uid(&self, user_id: &str, uid: u32) -> Result<u32, StoreError> {
                sqlx::query("UPDATE users SET os_uid = $1 WHERE id = $2 AND os_uid IS NULL")
                    .bind(i64::from(uid))
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                let user = self.user_by_id(user_id).await?.ok_or(StoreError::NotFound)?;
                user.os_uid.ok_or(StoreError::NotFound)
            }

            async fn create_token(&self, t: &ApiToken) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&t.id)
                .bind(&t.user_id)
                .bind(&t.name)
                .bind(&t.token_hash)
                .bind(t.created_at)
                .bind(t.last_used_at)
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn tokens_of(&self, user_id: &str) -> Result<Vec<ApiToken>, StoreError> {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                rows.iter().map(token_from_row).collect::<Result<Vec<_>, _>>().map_err(|e| self.fail(e))
            }

            async fn use_token(&self, token_hash: &str, now: i64) -> Result<Option<ApiToken>, StoreError> {
                let sql =
                    format!("UPDATE api_tokens SET last_used_at = $2 WHERE token_hash = $1 RETURNING {TOKEN_COLUMNS}");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(token_hash)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                row.map(|r| token_from_row(&r)).transpose().map_err(|e| self.fail(e))
            }

            async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND id = $2")
                    .bind(user_id)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(|e| self.fail(e))?;
                for ev in events {
                    // A retried batch may hold events already written: the id makes it idempotent.
                    sqlx::query(
                        "INSERT INTO audit_events (id, at, event_type, status, user_id, username, actor, ip, details) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&ev.id)
                    .bind(ev.at)
                    .bind(&ev.kind)
                    .bind(&ev.status)
                    .bind(&ev.user_id)
                    .bind(&ev.username)
                    .bind(&ev.actor)
                    .bind(&ev.ip)
                    .bind(ev.details.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
                }
                tx.commit().await.map_err(|e| self.fail(e))
            }

            async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
                // Each filter is a fixed clause with its own placeholder; a NULL parameter turns
                // it off, so the statement text never depends on the input.
                let sql = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE \
                     ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR event_type = $2) AND \
                     ($3 IS NULL OR status = $3) AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at <= $5) AND \
                     ($6 IS NULL OR at < $6 OR (at = $6 AND id < $7)) \
                     ORDER BY at DESC, id DESC LIMIT $8"
                );
                let (before_at, before_id) = match &q.before {
                    Some((at, id)) => (Some(*at), Some(id.clone())),
                    None => (None, None),
                };
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(q.user_id.clone())
                    .bind(q.kind.clone())
                    .bind(q.status.clone())
                    .bind(q.from)
                    .bind(q.to)
                    .bind(before_at)
                    .bind(before_id.unwrap_or_default())
                    .bind(i64::from(q.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                rows.iter().map(audit_from_row).collect::<Result<Vec<_>, _>>().map_err(|e| self.fail(e))
            }

            fn sessions(&self) -> std::sync::Arc<dyn SessionStore> {
                std::sync::Arc::new(self.clone())
            }

            async fn register_front(&self, f: &FrontRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO fronts (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                )
                .bind(&f.id)
                .bind(&f.host)
                .bind(i64::from(f.pid))
                .bind(f.started_at)
                .bind(f.heartbeat_at)
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn heartbeat_front(&self, front_id: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE fronts SET heartbeat_at = $2 WHERE id = $1")
                    .bind(front_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn expire_front(&self, front_id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE fronts SET heartbeat_at = 0 WHERE id = $1")
                    .bind(front_id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn retire_front(&self, front_id: &str) -> Result<(), StoreError> {
                // Its rows go with it (ON DELETE CASCADE).
                sqlx::query("DELETE FROM fronts WHERE id = $1")
                    .bind(front_id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn reclaim_fronts(&self, stale_before: i64) -> Result<Vec<WorkspaceRecord>, StoreError> {
                let mut tx = self.pool.begin().await.map_err(|e| self.fail(e))?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM workspace_registry WHERE front_id IN \
                     (SELECT id FROM fronts WHERE heartbeat_at < $1) RETURNING {REGISTRY_COLUMNS}"
                )))
                .bind(stale_before)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
                let rows: Vec<WorkspaceRecord> =
                    rows.iter().map(registry_from_row).collect::<Result<_, _>>().map_err(|e| self.fail(e))?;
                // A front whose rows were taken goes too, even if it heartbeated in between: its
                // next heartbeat must find no row, so that it learns it lost them.
                let mut taken: Vec<&str> = rows.iter().map(|r| r.front_id.as_str()).collect();
                taken.sort_unstable();
                taken.dedup();
                for id in taken {
                    sqlx::query("DELETE FROM fronts WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.fail(e))?;
                }
                sqlx::query("DELETE FROM fronts WHERE heartbeat_at < $1")
                    .bind(stale_before)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
                tx.commit().await.map_err(|e| self.fail(e))?;
                Ok(rows)
            }

            async fn claim_workspace(&self, c: &WorkspaceRecord) -> Result<WorkspaceRecord, StoreError> {
                // The primary key decides: the first insert stands, the others change nothing.
                sqlx::query(
                    "INSERT INTO workspace_registry \
                     (user_id, front_id, host, state, address, pgid, started_at, last_activity_at) \
                     VALUES ($1, $2, $3, 'starting', NULL, NULL, $4, $5) ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(&c.user_id)
                .bind(&c.front_id)
                .bind(&c.host)
                .bind(c.started_at)
                .bind(c.last_activity_at)
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                // The row can be gone again by now (released, or its front reclaimed): then
                // there is nothing standing, which the caller treats as a lost claim.
                self.workspace_of(&c.user_id).await?.map(|(r, _)| r).ok_or(StoreError::NotFound)
            }

            async fn workspace_of(&self, user_id: &str) -> Result<Option<(WorkspaceRecord, FrontRecord)>, StoreError> {
                let columns = REGISTRY_COLUMNS.split(", ").map(|c| format!("w.{c}")).collect::<Vec<_>>().join(", ");
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns}, f.id, f.host, f.pid, f.started_at, f.heartbeat_at FROM workspace_registry w \
                     JOIN fronts f ON f.id = w.front_id WHERE w.user_id = $1"
                )))
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                let front = |r: &Row| -> Result<FrontRecord, sqlx::Error> {
                    Ok(FrontRecord {
                        id: r.try_get(7)?,
                        host: r.try_get(8)?,
                        pid: u32::try_from(r.try_get::<i64, _>(9)?).unwrap_or(0),
                        started_at: r.try_get(10)?,
                        heartbeat_at: r.try_get(11)?,
                    })
                };
                row.map(|r| Ok((registry_from_row(&r)?, front(&r)?))).transpose().map_err(|e| self.fail(e))
            }

            async fn workspace_running(
                &self,
                user_id: &str,
                front_id: &str,
                address: &str,
                pgid: Option<i32>,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE workspace_registry SET state = 'running', address = $3, pgid = $4 \
                     WHERE user_id = $1 AND front_id = $2",
                )
                .bind(user_id)
                .bind(front_id)
                .bind(address)
                .bind(pgid.map(i64::from))
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn touch_workspaces(&self, user_ids: &[String], now: i64) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(|e| self.fail(e))?;
                for id in user_ids {
                    sqlx::query(
                        "UPDATE workspace_registry SET last_activity_at = $2 \
                         WHERE user_id = $1 AND last_activity_at < $2",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
                }
                tx.commit().await.map_err(|e| self.fail(e))
            }

            async fn workspaces_of_front(&self, front_id: &str) -> Result<Vec<WorkspaceRecord>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {REGISTRY_COLUMNS} FROM workspace_registry WHERE front_id = $1 ORDER BY user_id"
                )))
                .bind(front_id)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                rows.iter().map(registry_from_row).collect::<Result<_, _>>().map_err(|e| self.fail(e))
            }

            async fn all_workspaces(&self) -> Result<Vec<WorkspaceRecord>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {REGISTRY_COLUMNS} FROM workspace_registry ORDER BY user_id"
                )))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                rows.iter().map(registry_from_row).collect::<Result<_, _>>().map_err(|e| self.fail(e))
            }

            async fn release_workspace(&self, user_id: &str, front_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM workspace_registry WHERE user_id = $1 AND front_id = $2")
                    .bind(user_id)
                    .bind(front_id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }

        #[async_trait::async_trait]
        impl SessionStore for $store {
            fn describe(&self) -> String {
                self.what.clone()
            }

            async fn insert(&self, r: &SessionRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO sessions (id, token_hash, user_id, ip, user_agent, created_at, last_seen_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&r.id)
                .bind(&r.key)
                .bind(&r.user_id)
                .bind(&r.ip)
                .bind(&r.user_agent)
                .bind(r.created_at)
                .bind(r.last_seen_at)
                .bind(r.expires_at)
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn get(&self, key: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1 AND expires_at > $2");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(key)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                row.map(|r| session_from_row(&r)).transpose().map_err(|e| self.fail(e))
            }

            async fn touch(&self, key: &str, last_seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE token_hash = $1")
                    .bind(key)
                    .bind(last_seen_at)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(())
            }

            async fn remove(&self, key: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(key)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn remove_by_id(&self, user_id: &str, id: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2 RETURNING token_hash")
                    .bind(user_id)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                row.map(|r| r.try_get(0)).transpose().map_err(|e| self.fail(e))
            }

            async fn remove_all_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query("DELETE FROM sessions WHERE user_id = $1 RETURNING token_hash")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>().map_err(|e| self.fail(e))
            }

            async fn of_user(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError> {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND expires_at > $2 \
                     ORDER BY created_at, id"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(user_id)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                rows.iter().map(session_from_row).collect::<Result<Vec<_>, _>>().map_err(|e| self.fail(e))
            }

            async fn count(&self, now: i64) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| self.fail(e))?;
                Ok(n as u64)
            }

            async fn prune(&self, now: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use sql_store;
